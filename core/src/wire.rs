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
}

impl Reader {
    /// Waits for bytes, then parses every complete packet in hand into `out` (at least one, unless the
    /// connection ends with an error).
    pub async fn read(&mut self, out: &mut Vec<Packet>) -> Result<(), WireError> {
        out.append(&mut self.early);
        loop {
            loop {
                match Packet::read(&mut self.buf, self.max) {
                    Ok(p) => out.push(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if !out.is_empty() {
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
    let max = crate::limits::CLIENT_MAX_PACKET;
    let stream = tokio::time::timeout(timeout, TcpStream::connect((cfg.host.as_str(), cfg.port))).await.map_err(|_| WireError::Timeout(timeout))??;
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut reader = Reader { half: r, buf: BytesMut::with_capacity(256 * 1024), max, early: Vec::new() };
    let mut writer = Writer { half: w, buf: BytesMut::with_capacity(16 * 1024), max };
    let mut c = rumqttc::Connect::new(cfg.client_id.clone());
    c.keep_alive = keep_alive.as_secs().min(u16::MAX as u64) as u16;
    c.clean_session = false;
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
        let mut r = Reader { half: r, buf: BytesMut::new(), max: 1 << 20, early: Vec::new() };
        let mut got = Vec::new();
        while got.len() < 2 {
            r.read(&mut got).await.unwrap();
        }
        let Packet::Publish(p) = &got[0] else { panic!("{:?}", got[0]) };
        assert_eq!((p.topic.as_str(), &p.payload[..], p.qos), ("town/E001/gate/x/gate.pass", &b"{}"[..], QoS::AtMostOnce));
        let Packet::Publish(p) = &got[1] else { panic!("{:?}", got[1]) };
        assert_eq!((p.topic.as_str(), p.payload.len(), p.qos, p.pkid), ("town/E002/smoke/y/smoke.alarm", 300, QoS::AtLeastOnce, 513));
    }
}
