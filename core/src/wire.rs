//! The core's subscribing connection, lean: MQTT 3.1.1 packets (rumqttc's codec) over a plain TCP stream,
//! so that a batch's acknowledgements leave in one write.
//!
//! rumqttc's event loop writes and flushes each request on its own: with manual acknowledgements (the core
//! acknowledges only what it has committed) every PUBACK was a system call and a TCP segment, which at
//! 40,000 events a second was a third of the core's CPU (perf, recorded in results/PERFORMANCE.md). Here the reader parses
//! every complete packet a read returns, and the writer encodes a whole batch's PUBACKs into one buffer.
//! Each connection has a generation: an acknowledgement is written only on the connection its message came
//! on (a packet id means nothing on another).

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{ConnectReturnCode, Packet, Publish, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT from the broker: {0:?}")]
    Codec(rumqttc::mqttbytes::Error),
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("the broker closed the connection")]
    Closed,
    #[error("the broker sent {0} before CONNACK")]
    Unexpected(&'static str),
    #[error("no CONNACK within {0:?}")]
    Timeout(Duration),
}

impl From<rumqttc::mqttbytes::Error> for WireError {
    fn from(e: rumqttc::mqttbytes::Error) -> Self {
        WireError::Codec(e)
    }
}

/// The read half of a connection, with its buffer.
pub struct Reader {
    half: OwnedReadHalf,
    buf: BytesMut,
    max: usize,
    /// Packets that came in the same read as the CONNACK, handed out first.
    early: Vec<Packet>,
    /// Bytes of an oversized PUBLISH still to come and be thrown away as they arrive.
    skip: usize,
}

/// The payload that stands for a PUBLISH larger than the client's packet limit, which the reader skipped
/// without reading it into memory: this prefix, then the packet's size in decimal. No JSON starts with a
/// NUL byte, so no event is mistaken for it; the decoder rejects it as `oversized` with that size
/// ([`oversized_stub`]).
pub const OVERSIZED_STUB: &[u8] = b"\0towntwin-oversized:";

/// The size of the skipped PUBLISH a payload stands for, if it is such a stub.
pub fn oversized_stub(payload: &[u8]) -> Option<usize> {
    std::str::from_utf8(payload.strip_prefix(OVERSIZED_STUB)?).ok()?.parse().ok()
}

/// What the buffer's next packet is, from its fixed header: its type and flags byte, the header's length
/// and the remaining length. `None` while the header is not all in.
fn fixed_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((buf[0], 2 + i, len));
        }
    }
    // A fifth length byte: malformed, left for the codec to refuse.
    Some((buf[0], 5, usize::MAX))
}

impl Reader {
    /// Waits for bytes, then parses every complete packet in hand onto `out` (at least one, unless the
    /// connection ends with an error).
    ///
    /// A PUBLISH larger than the packet limit (a broker with no size limit of its own, such as mosquitto by
    /// default, delivers whatever a publisher sent) is not read into memory and does not end the
    /// connection: its topic and packet id are kept, its bytes thrown away as they arrive, and it comes out
    /// as a PUBLISH whose payload is an [`OVERSIZED_STUB`], so the core acknowledges it (it is not sent
    /// again) and dead-letters a stub. Refusing it instead dropped the connection, and the broker sent it
    /// again on every reconnect: one such message stopped the town for good.
    pub async fn read(&mut self, out: &mut Vec<Packet>) -> Result<(), WireError> {
        let start = out.len();
        out.append(&mut self.early);
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                let _ = self.buf.split_to(n);
                self.skip -= n;
            }
            while self.skip == 0 {
                match self.oversized()? {
                    Next::Skipped(p) => {
                        out.push(p);
                        continue;
                    }
                    // An oversized PUBLISH whose topic is not all in yet: the codec would refuse it.
                    Next::More => break,
                    Next::Other => {}
                }
                match Packet::read(&mut self.buf, self.max) {
                    Ok(p) => out.push(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if out.len() > start {
                return Ok(());
            }
            if self.buf.capacity() - self.buf.len() < 64 * 1024 {
                self.buf.reserve(256 * 1024);
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Whether the buffer's next packet is a PUBLISH over the limit: if its topic and packet id are in, its
    /// stand-in, with the rest of it (in the buffer now and still to come) set to be skipped.
    fn oversized(&mut self) -> Result<Next, WireError> {
        let Some((first, header, len)) = fixed_header(&self.buf) else { return Ok(Next::Other) };
        if first >> 4 != 3 || len == usize::MAX || header + len <= self.max {
            return Ok(Next::Other);
        }
        let qos = (first >> 1) & 3;
        let var = &self.buf[header..];
        let Some(topic_len) = var.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else { return Ok(Next::More) };
        let id_len = if qos > 0 { 2 } else { 0 };
        if var.len() < 2 + topic_len + id_len {
            return Ok(Next::More);
        }
        let topic = std::str::from_utf8(&var[2..2 + topic_len]).map_err(|_| WireError::Codec(rumqttc::mqttbytes::Error::TopicNotUtf8))?.to_string();
        let qos = rumqttc::mqttbytes::qos(qos).map_err(WireError::Codec)?;
        let pkid = if id_len > 0 { u16::from_be_bytes([var[2 + topic_len], var[3 + topic_len]]) } else { 0 };
        let total = header + len;
        let mut payload = OVERSIZED_STUB.to_vec();
        payload.extend_from_slice(total.to_string().as_bytes());
        let mut p = Publish::new(topic, qos, payload);
        p.pkid = pkid;
        let n = total.min(self.buf.len());
        let _ = self.buf.split_to(n);
        self.skip = total - n;
        Ok(Next::Skipped(Packet::Publish(p)))
    }
}

/// What [`Reader::oversized`] found at the head of the buffer.
enum Next {
    /// Not an oversized PUBLISH: for the codec.
    Other,
    /// An oversized PUBLISH whose topic and packet id are still to come.
    More,
    /// An oversized PUBLISH's stand-in.
    Skipped(Packet),
}

/// The write half of a connection.
pub struct Writer {
    half: OwnedWriteHalf,
    buf: BytesMut,
    max: usize,
}

impl Writer {
    /// Writes what is queued and then the packets, in one system call (or as few as the socket takes).
    pub async fn send(&mut self, packets: &[Packet]) -> Result<(), WireError> {
        for p in packets {
            p.write(&mut self.buf, self.max)?;
        }
        self.flush().await
    }

    /// PUBACKs for these packet ids, in one write.
    pub async fn ack(&mut self, pkids: &[u16]) -> Result<(), WireError> {
        for &id in pkids {
            Packet::PubAck(rumqttc::PubAck::new(id)).write(&mut self.buf, self.max)?;
        }
        self.flush().await
    }

    /// Queues a PUBLISH (packet id 0 at QoS 0) without writing it: a publisher that sends many messages
    /// at once writes them with one [`Writer::flush`]. Encoded here, from borrowed topic and payload.
    pub fn queue_publish(&mut self, topic: &str, payload: &[u8], pkid: Option<u16>) -> Result<(), WireError> {
        let len = 2 + topic.len() + if pkid.is_some() { 2 } else { 0 } + payload.len();
        if len > self.max || topic.len() > u16::MAX as usize {
            return Err(WireError::Codec(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(len)));
        }
        self.buf.reserve(len + 5);
        self.buf.extend_from_slice(&[if pkid.is_some() { 0x32 } else { 0x30 }]);
        let mut rest = len;
        loop {
            let mut byte = (rest % 128) as u8;
            rest /= 128;
            if rest > 0 {
                byte |= 0x80;
            }
            self.buf.extend_from_slice(&[byte]);
            if rest == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(topic.as_bytes());
        if let Some(id) = pkid {
            self.buf.extend_from_slice(&id.to_be_bytes());
        }
        self.buf.extend_from_slice(payload);
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Writes what is queued.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        if !self.buf.is_empty() {
            let r = self.half.write_all(&self.buf).await;
            self.buf.clear();
            r?;
        }
        Ok(())
    }

    /// Sends DISCONNECT and closes the write side.
    pub async fn close(mut self) {
        let _ = self.send(&[Packet::Disconnect]).await;
        let _ = self.half.shutdown().await;
    }
}

/// Where and as whom a lean connection connects.
#[derive(Debug, Clone)]
pub struct Connect {
    pub host: String,
    pub port: u16,
    /// Fixed across restarts for a persistent session.
    pub client_id: String,
    /// Username and password; `None`: anonymous.
    pub login: Option<(String, String)>,
}

/// Connects, logs in with a persistent session (the client id of `cfg`) and returns the two halves and
/// whether the broker kept the session.
pub async fn connect(cfg: &Connect, keep_alive: Duration, timeout: Duration) -> Result<(Reader, Writer, bool), WireError> {
    connect_with(cfg, keep_alive, timeout, false).await
}

/// [`connect`], with a clean session (the broker keeps nothing for the client) when `clean`.
pub async fn connect_with(cfg: &Connect, keep_alive: Duration, timeout: Duration, clean: bool) -> Result<(Reader, Writer, bool), WireError> {
    let max = crate::limits::CLIENT_MAX_PACKET;
    let stream = tokio::time::timeout(timeout, TcpStream::connect((cfg.host.as_str(), cfg.port))).await.map_err(|_| WireError::Timeout(timeout))??;
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut reader = Reader { half: r, buf: BytesMut::with_capacity(256 * 1024), max, early: Vec::new(), skip: 0 };
    let mut writer = Writer { half: w, buf: BytesMut::with_capacity(16 * 1024), max };
    let mut c = rumqttc::Connect::new(cfg.client_id.clone());
    c.keep_alive = keep_alive.as_secs().min(u16::MAX as u64) as u16;
    c.clean_session = clean;
    if let Some((u, p)) = &cfg.login {
        c.login = Some(rumqttc::Login::new(u.clone(), p.clone()));
    }
    writer.send(&[Packet::Connect(c)]).await?;
    let mut got = Vec::new();
    tokio::time::timeout(timeout, reader.read(&mut got)).await.map_err(|_| WireError::Timeout(timeout))??;
    let mut rest = got.into_iter();
    match rest.next() {
        Some(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => {
            // What came with the CONNACK (a resumed session's backlog) is handed out by the first read.
            reader.early = rest.collect();
            Ok((reader, writer, a.session_present))
        }
        Some(Packet::ConnAck(a)) => Err(WireError::Refused(a.code)),
        Some(_) => Err(WireError::Unexpected("another packet")),
        None => Err(WireError::Closed),
    }
}

/// A SUBSCRIBE of `filter` at QoS 1 (packet id 1).
pub fn subscribe(filter: &str) -> Packet {
    let mut s = rumqttc::Subscribe::new(filter, QoS::AtLeastOnce);
    s.pkid = 1;
    Packet::Subscribe(s)
}

/// A SUBSCRIBE of each of `filters` at QoS 0 (packet id 2).
pub fn subscribe_qos0(filters: &[String]) -> Packet {
    let mut s = rumqttc::Subscribe::new_many(filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtMostOnce)));
    s.pkid = 2;
    Packet::Subscribe(s)
}

/// Whether a publish needs an acknowledgement.
pub fn needs_ack(p: &Publish) -> bool {
    p.qos != QoS::AtMostOnce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_queued_publish_reads_back_as_rumqttcs_codec_reads_it() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (_, w) = a.unwrap().into_split();
        let (r, _) = b.unwrap().0.into_split();
        let mut w = Writer { half: w, buf: BytesMut::new(), max: 1 << 20 };
        let big = vec![7u8; 300];
        w.queue_publish("town/E001/gate/x/gate.pass", b"{}", None).unwrap();
        w.queue_publish("town/E002/smoke/y/smoke.alarm", &big, Some(513)).unwrap();
        assert!(w.queue_publish("t", &vec![0u8; 2 << 20], None).is_err(), "over the packet limit");
        w.flush().await.unwrap();
        assert_eq!(w.queued(), 0);
        let mut r = Reader { half: r, buf: BytesMut::new(), max: 1 << 20, early: Vec::new(), skip: 0 };
        let mut got = Vec::new();
        while got.len() < 2 {
            r.read(&mut got).await.unwrap();
        }
        let Packet::Publish(p) = &got[0] else { panic!("{:?}", got[0]) };
        assert_eq!((p.topic.as_str(), &p.payload[..], p.qos), ("town/E001/gate/x/gate.pass", &b"{}"[..], QoS::AtMostOnce));
        let Packet::Publish(p) = &got[1] else { panic!("{:?}", got[1]) };
        assert_eq!((p.topic.as_str(), p.payload.len(), p.qos, p.pkid), ("town/E002/smoke/y/smoke.alarm", 300, QoS::AtLeastOnce, 513));
    }

    #[tokio::test]
    async fn a_publish_over_the_limit_is_skipped_as_it_arrives_and_the_next_one_read() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (_, w) = a.unwrap().into_split();
        let (r, _) = b.unwrap().0.into_split();
        // Two million bytes at QoS 1 (a writer with no limit), then an ordinary event, then another big one
        // at QoS 0.
        let mut w = Writer { half: w, buf: BytesMut::new(), max: usize::MAX >> 8 };
        let topic = "town/E001/gate/E001-gate-01/gate.pass";
        let sender = tokio::spawn(async move {
            // The first in two writes apart: its fixed header and half its topic's length, then the rest.
            w.queue_publish(topic, &vec![b'x'; 2_000_000], Some(7)).unwrap();
            let first = w.buf.split();
            w.half.write_all(&first[..5]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            w.half.write_all(&first[5..]).await.unwrap();
            w.queue_publish(topic, b"{}", Some(8)).unwrap();
            w.queue_publish("town/E002/x/y/z", &vec![b'y'; 3_000_000], None).unwrap();
            w.queue_publish(topic, b"{\"a\":1}", None).unwrap();
            w.flush().await.unwrap();
            w
        });
        let mut r = Reader { half: r, buf: BytesMut::new(), max: 1 << 20, early: Vec::new(), skip: 0 };
        let mut got = Vec::new();
        let mut most = 0;
        while got.len() < 4 {
            r.read(&mut got).await.unwrap();
            most = most.max(r.buf.capacity());
        }
        let _w = sender.await.unwrap();
        let publishes: Vec<&Publish> = got.iter().map(|p| if let Packet::Publish(p) = p { p } else { panic!("{p:?}") }).collect();
        let size = 2 + topic.len() + 2 + 2_000_000;
        assert_eq!((publishes[0].topic.as_str(), publishes[0].pkid, publishes[0].qos), (topic, 7, QoS::AtLeastOnce));
        assert_eq!(oversized_stub(&publishes[0].payload), Some(size + 4), "the packet's size, its fixed header included");
        assert_eq!((publishes[1].pkid, &publishes[1].payload[..]), (8, &b"{}"[..]));
        assert_eq!((publishes[2].topic.as_str(), publishes[2].qos), ("town/E002/x/y/z", QoS::AtMostOnce));
        assert!(oversized_stub(&publishes[2].payload).is_some());
        assert_eq!(&publishes[3].payload[..], b"{\"a\":1}");
        assert!(most < 1 << 20, "the reader held {most} bytes: it must not read a skipped publish into memory");
        assert_eq!(oversized_stub(b"{\"a\":1}"), None);
    }
}
