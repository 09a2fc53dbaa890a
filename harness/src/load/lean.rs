//! The load generator's lean publisher: one connection, MQTT encoded straight into a buffer and written once
//! per timer wake, over the core's own [`towntwin_core::wire`].
//!
//! rumqttc's event loop writes and flushes every publish on its own: at 50,000 events a second that was a
//! system call and a TCP segment per event, about 0.55 of a core on this 2-core machine, taken from the
//! broker and the core under test. [`drive`](super::drive) wakes once a millisecond at most and sends what is
//! due; here those publishes leave in one write. Used for one connection without broker faults (the knee
//! search, steady and ramped load); reconnects, sessions and storms are the rumqttc publisher's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use towntwin_core::wire::{self, Writer};
use towntwin_sim::Message;

use crate::broker::Endpoint;
use crate::mqtt::Counters;

/// Flush once this much is queued, even if more is due.
const FLUSH_AT: usize = 64 * 1024;

pub struct Lean {
    writer: Writer,
    reader: tokio::task::JoinHandle<()>,
    /// Set by [`Lean::close`]: the connection's end is expected.
    closing: Arc<std::sync::atomic::AtomicBool>,
    next_pkid: u16,
    pub counters: Arc<Counters>,
    pub published: u64,
    pub published_qos1: u64,
    pub connect_time: Duration,
}

impl Lean {
    /// Connects (as the twin's gateway when the broker has logins) and starts counting acknowledgements.
    pub async fn connect(ep: &Endpoint, timeout: Duration, tag: &str) -> Result<Lean> {
        let cfg = wire::Connect {
            host: ep.host.clone(),
            port: ep.port,
            client_id: format!("towntwin-{tag}{}-lean", std::process::id()),
            login: ep.login(crate::credentials::GATEWAY)?,
        };
        let started = Instant::now();
        // A keep-alive longer than any drain (rumqttd refuses none at all): the load writes all the time,
        // and this connection is closed once the drain is over.
        let (mut reader, writer, _) =
            wire::connect(&cfg, Duration::from_secs(600), timeout).await.map_err(|e| anyhow!("the load's connection to {ep}: {e}"))?;
        let counters = Counters::new();
        counters.connected.fetch_add(1, Ordering::Relaxed);
        counters.live.fetch_add(1, Ordering::Relaxed);
        let (c, closing) = (counters.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let closed = closing.clone();
        let reader = tokio::spawn(async move {
            let mut packets = Vec::new();
            loop {
                packets.clear();
                if let Err(e) = reader.read(&mut packets).await {
                    if !closed.load(Ordering::Relaxed) {
                        tracing::warn!("the load's connection: {e}");
                    }
                    c.live.fetch_sub(1, Ordering::Relaxed);
                    c.drops.fetch_add(1, Ordering::Relaxed);
                    c.bump_errors();
                    break;
                }
                for p in &packets {
                    if matches!(p, rumqttc::Packet::PubAck(_)) {
                        c.bump_pubacks();
                    }
                }
            }
        });
        Ok(Lean { writer, reader, closing, next_pkid: 0, counters, published: 0, published_qos1: 0, connect_time: started.elapsed() })
    }

    /// Queues one message (written by [`Lean::flush`], or here once enough is queued).
    pub async fn send(&mut self, msg: &Message) -> Result<()> {
        let pkid = if msg.qos > 0 {
            // Packet ids cycle through all 65,535; an id comes round again only after that many QoS 1
            // publishes, long after the broker acknowledged it, unless the broker stopped acknowledging.
            if self.published_qos1.saturating_sub(self.counters.pubacks()) >= 60_000 {
                bail!("the broker has not acknowledged 60,000 QoS 1 publishes: packet ids would be reused");
            }
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            self.published_qos1 += 1;
            Some(self.next_pkid)
        } else {
            None
        };
        self.writer.queue_publish(msg.topic(), &msg.payload, pkid).map_err(|e| anyhow!("publish {}: {e}", msg.topic()))?;
        self.published += 1;
        if self.writer.queued() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.writer.flush().await.map_err(|e| anyhow!("the load's connection: {e}"))
    }

    /// Waits until every QoS 1 publish is acknowledged (at most `timeout`); returns how many were not.
    pub async fn wait_acked(&self, timeout: Duration) -> u64 {
        let want = self.published_qos1;
        self.counters.wait_until(Instant::now() + timeout, |c| c.pubacks() >= want).await;
        want.saturating_sub(self.counters.pubacks())
    }

    pub async fn close(self) {
        self.closing.store(true, Ordering::Relaxed);
        self.writer.close().await;
        let mut reader = self.reader;
        if tokio::time::timeout(Duration::from_millis(500), &mut reader).await.is_err() {
            reader.abort();
        }
    }
}
