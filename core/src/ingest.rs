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
    /// messages at once and the core acknowledges after committing, so a batch of 100 would leave the broker
    /// idle while the core commits; 34 keeps three batches in the window, one arriving while another commits
    /// (the ingest benchmark measured 100, 50, 34 and 25).
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
    /// To the task that publishes them in order, waiting for room on the connection: a burst of notices
    /// (an escalation storm) can neither be dropped nor crowd out the acknowledgements.
    tx: tokio::sync::mpsc::UnboundedSender<(String, Vec<u8>)>,
}

impl OrdersOut {
    /// Publishes each notice on `orders/{area}/{id}/{action}` (QoS 1); call it while still holding the core,
    /// so notices from the API and from ingest cannot overtake each other.
    pub fn publish(&self, notices: &[Notice]) {
        for n in notices {
            let body = serde_json::to_vec(n).unwrap_or_default();
            if self.tx.send((n.topic(), body)).is_err() {
                tracing::warn!("the core's connection is closed: work-order notice {} {} not published", n.event.order, n.event.action);
            }
        }
    }

    /// Publishes `{"now": ms}` on [`WATERMARK_TOPIC`].
    pub fn watermark(&self, now: Millis) {
        let body = format!("{{\"now\":{now}}}");
        let _ = self.tx.send((WATERMARK_TOPIC.to_string(), body.into_bytes()));
    }
}

/// The core's MQTT connection, made but not yet served.
pub struct Link {
    client: AsyncClient,
    el: EventLoop,
    out: OrdersOut,
    out_rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Link {
    pub fn new(cfg: &IngestConfig) -> Link {
        let (client, el) = options(cfg);
        let (tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
        Link { client, el, out: OrdersOut { tx }, out_rx }
    }

    /// A handle that publishes on this connection (for the API).
    pub fn orders_out(&self) -> OrdersOut {
        self.out.clone()
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
    let Link { client, mut el, out, mut out_rx } = link;
    let publisher = {
        let client = client.clone();
        AbortOnDrop(tokio::spawn(async move {
            while let Some((topic, body)) = out_rx.recv().await {
                if client.publish(topic, QoS::AtLeastOnce, false, body).await.is_err() {
                    break;
                }
            }
        }))
    };
    client.subscribe(cfg.filter.clone(), QoS::AtLeastOnce).await?;
    // The connection is polled on its own task, so acknowledging and publishing (which wait for room on
    // the connection) never wait on the loop that would make that room.
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Publish>(10_000);
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let network = {
        let (client, filter, closing) = (client.clone(), cfg.filter.clone(), closing.clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if in_tx.send(p).await.is_err() {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(c))) if !c.session_present => {
                        // A new session: (re)subscribe so the broker knows the filter.
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => break,
                    Err(_) if closing.load(Relaxed) => break,
                    Err(e) => {
                        tracing::warn!("core ingest connection: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }))
    };
    let mut batch: Vec<Publish> = Vec::with_capacity(cfg.batch_max);
    loop {
        // Wait for the first message of a batch (or the stop signal).
        tokio::select! {
            _ = stop.changed() => if *stop.borrow() { break },
            p = in_rx.recv() => match p {
                Some(p) => batch.push(p),
                None => break,
            },
        }
        if batch.is_empty() {
            continue;
        }
        // Take what else is already there, briefly.
        while batch.len() < cfg.batch_max {
            match tokio::time::timeout(cfg.batch_wait, in_rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                Ok(None) | Err(_) => break,
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
                    client.ack(p).await?;
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
    // Let the last notices go out, then disconnect.
    drop(out);
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while !publisher.0.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    drop(publisher);
    closing.store(true, Relaxed);
    let _ = client.disconnect().await;
    // Let the disconnect and the last acks go out.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while !network.0.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    drop(network);
    Ok(())
}

/// A task that ends with its owner, on every way out of [`serve_on`].
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
