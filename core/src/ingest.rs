//! The core as an MQTT service: subscribes to the town's topics with a persistent session at QoS 1 and
//! manual acknowledgements, ingests in batches, and acknowledges a batch only after its effects are
//! committed: killed mid-batch, the broker redelivers and the event log's dedup keeps it exactly-once.
//! Rejected messages go to `deadletter/{reason}/{original topic}`; every work-order transition is published
//! on `orders/{area}/{order id}/{action}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, Publish, QoS};
use tokio::sync::watch;

use crate::orders::{Notice, WATERMARK_TOPIC};
use crate::service::Core;
use crate::time::Millis;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub host: String,
    pub port: u16,
    /// Fixed, so the broker keeps the session (and unacknowledged messages) across restarts.
    pub client_id: String,
    /// Topic filter this instance owns (`town/#`, or `town/E012/#` for a shard).
    pub filter: String,
    /// At most this many messages a batch. rumqttd lets a subscriber have 100 unacknowledged QoS 1
    /// messages at once, and the core acknowledges after committing, so a batch cannot usefully be larger:
    /// waiting for a 101st would wait for nothing.
    pub batch_max: usize,
    /// How long to wait for more messages before processing a partial batch.
    pub batch_wait: Duration,
    /// Whether to publish work-order transitions on `orders/...`.
    pub publish_orders: bool,
}

impl IngestConfig {
    pub fn new(host: &str, port: u16) -> IngestConfig {
        IngestConfig {
            host: host.to_string(),
            port,
            client_id: "towntwin-core".into(),
            filter: "town/#".into(),
            batch_max: 34,
            batch_wait: Duration::from_millis(1),
            publish_orders: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("MQTT client: {0}")]
    Client(#[from] rumqttc::ClientError),
    #[error("a batch could not be committed (not acknowledged; a restart resumes from the store): {0}")]
    Commit(#[from] crate::service::CoreError),
}

/// Counters a running service exposes.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub received: std::sync::atomic::AtomicU64,
    pub batches: std::sync::atomic::AtomicU64,
    pub dead_lettered: std::sync::atomic::AtomicU64,
}

fn options(cfg: &IngestConfig) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1_000)
        .set_request_channel_capacity(50_000);
    let (client, mut el) = AsyncClient::new(o, 50_000);
    let mut n = NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(30);
    el.set_network_options(n);
    (client, el)
}

/// Publishes work-order notices and the watermark on the core's own connection, so that everything the core
/// publishes reaches an `orders/#` subscriber in the order the core committed it. Cheap to clone; the API
/// holds one to publish the transitions its callers make.
#[derive(Clone)]
pub struct OrdersOut {
    client: AsyncClient,
}

impl OrdersOut {
    /// Publishes each notice on `orders/{area}/{id}/{action}` (QoS 1); call it while still holding the core,
    /// so notices from the API and from ingest cannot overtake each other.
    pub fn publish(&self, notices: &[Notice]) {
        for n in notices {
            let body = serde_json::to_vec(n).unwrap_or_default();
            if self.client.try_publish(n.topic(), QoS::AtLeastOnce, false, body).is_err() {
                tracing::warn!("could not queue work-order notice {} {}", n.event.order, n.event.action);
            }
        }
    }

    /// Publishes `{"now": ms}` on [`WATERMARK_TOPIC`].
    pub fn watermark(&self, now: Millis) {
        let body = format!("{{\"now\":{now}}}");
        let _ = self.client.try_publish(WATERMARK_TOPIC, QoS::AtLeastOnce, false, body.into_bytes());
    }
}

/// The core's MQTT connection, made but not yet served.
pub struct Link {
    client: AsyncClient,
    el: EventLoop,
}

impl Link {
    pub fn new(cfg: &IngestConfig) -> Link {
        let (client, el) = options(cfg);
        Link { client, el }
    }

    /// A handle that publishes on this connection (for the API).
    pub fn orders_out(&self) -> OrdersOut {
        OrdersOut { client: self.client.clone() }
    }
}

/// Runs until `stop` turns true; each batch is committed through `core` before it is acknowledged.
pub async fn serve(core: Arc<Mutex<Core>>, cfg: IngestConfig, counters: Arc<IngestCounters>, stop: watch::Receiver<bool>) -> Result<(), IngestError> {
    let link = Link::new(&cfg);
    serve_on(link, core, cfg, counters, stop).await
}

/// [`serve`] on a link made beforehand (so its [`OrdersOut`] can be handed to the API first).
pub async fn serve_on(link: Link, core: Arc<Mutex<Core>>, cfg: IngestConfig, counters: Arc<IngestCounters>, mut stop: watch::Receiver<bool>) -> Result<(), IngestError> {
    use std::sync::atomic::Ordering::Relaxed;
    let Link { client, mut el } = link;
    let out = OrdersOut { client: client.clone() };
    client.subscribe(cfg.filter.clone(), QoS::AtLeastOnce).await?;
    let mut batch: Vec<Publish> = Vec::with_capacity(cfg.batch_max);
    loop {
        // Wait for the first message of a batch (or the stop signal).
        if batch.is_empty() {
            tokio::select! {
                _ = stop.changed() => if *stop.borrow() { break },
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => batch.push(p),
                    Ok(Event::Incoming(Packet::ConnAck(c))) if !c.session_present => {
                        // A new session: (re)subscribe so the broker knows the filter.
                        let _ = client.try_subscribe(cfg.filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("core ingest connection: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
            if batch.is_empty() {
                continue;
            }
        }
        // Take what else is already there, briefly.
        while batch.len() < cfg.batch_max {
            match tokio::time::timeout(cfg.batch_wait, el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => batch.push(p),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!("core ingest connection: {e}");
                    break;
                }
                Err(_) => break,
            }
        }
        counters.received.fetch_add(batch.len() as u64, Relaxed);
        let payloads: Vec<&[u8]> = batch.iter().map(|p| &p.payload[..]).collect();
        let outcome = {
            let mut core = core.lock().unwrap_or_else(|e| e.into_inner());
            core.ingest(&payloads).inspect(|o| {
                // Published while the core is held, so the API's notices cannot overtake these.
                if cfg.publish_orders {
                    let notices: Vec<Notice> =
                        o.transitions.iter().zip(&o.causes).map(|(t, c)| Notice { cause: Some(c.clone()), ..core.orders.notice(t) }).collect();
                    out.publish(&notices);
                    if let Some(now) = o.clock {
                        out.watermark(now);
                    }
                }
            })
        };
        match outcome {
            Ok(o) => {
                for (i, r) in &o.rejected {
                    tracing::info!("dead letter ({}) from {}: {}", r.code, batch[*i].topic, r.detail);
                    let topic = format!("deadletter/{}/{}", r.code, batch[*i].topic);
                    let _ = client.try_publish(topic, QoS::AtLeastOnce, false, batch[*i].payload.to_vec());
                    counters.dead_lettered.fetch_add(1, Relaxed);
                }
                // Committed: now the broker may forget them.
                for p in &batch {
                    let _ = client.try_ack(p);
                }
                counters.batches.fetch_add(1, Relaxed);
            }
            Err(e) => {
                // Not committed, not acknowledged. The engine may have moved on in memory, so the only safe
                // course is the one a crash takes: stop, and let a restart rebuild from the store while the
                // broker redelivers the batch.
                tracing::error!("core could not commit a batch of {}: {e}", batch.len());
                return Err(IngestError::Commit(e));
            }
        }
        batch.clear();
    }
    let _ = client.disconnect().await;
    // Let the disconnect and the last acks go out.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while el.poll().await.is_ok() {}
    })
    .await;
    Ok(())
}
