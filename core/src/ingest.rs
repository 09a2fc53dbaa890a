//! The core as an MQTT service: subscribes to the town's topics with a persistent session at QoS 1 and
//! manual acknowledgements, ingests in batches, and acknowledges a batch only after its effects are
//! committed: killed mid-batch, the broker redelivers and the event log's dedup keeps it exactly-once.
//! Rejected messages go to `deadletter/{reason}/{original topic}`; every work-order transition is published
//! on `orders/{area}/{order id}/{action}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, Publish, QoS};
use serde::Serialize;
use tokio::sync::watch;

use crate::orders::OrderEvent;
use crate::service::Core;

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
            batch_max: 100,
            batch_wait: Duration::from_millis(1),
            publish_orders: true,
        }
    }
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

#[derive(Serialize)]
struct Published<'a> {
    #[serde(flatten)]
    event: &'a OrderEvent,
    area: &'a str,
    rule: &'a str,
}

/// Runs until `stop` turns true; each batch is committed through `core` before it is acknowledged.
pub async fn serve(core: Arc<Mutex<Core>>, cfg: IngestConfig, counters: Arc<IngestCounters>, mut stop: watch::Receiver<bool>) -> Result<(), rumqttc::ClientError> {
    use std::sync::atomic::Ordering::Relaxed;
    let (client, mut el) = options(&cfg);
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
            let out = core.ingest(&payloads);
            out.map(|o| {
                let areas: Vec<(String, String)> = o
                    .transitions
                    .iter()
                    .map(|t| core.orders.get(t.order).map(|w| (w.area.clone(), w.rule.clone())).unwrap_or_default())
                    .collect();
                (o, areas)
            })
        };
        match outcome {
            Ok((o, areas)) => {
                for (i, r) in &o.rejected {
                    tracing::info!("dead letter ({}) from {}: {}", r.code, batch[*i].topic, r.detail);
                    let topic = format!("deadletter/{}/{}", r.code, batch[*i].topic);
                    let _ = client.try_publish(topic, QoS::AtLeastOnce, false, batch[*i].payload.to_vec());
                    counters.dead_lettered.fetch_add(1, Relaxed);
                }
                if cfg.publish_orders {
                    for (t, (area, rule)) in o.transitions.iter().zip(&areas) {
                        let body = serde_json::to_vec(&Published { event: t, area, rule }).unwrap_or_default();
                        let _ = client.try_publish(format!("orders/{area}/{}/{}", t.order, t.action), QoS::AtLeastOnce, false, body);
                    }
                }
                // Committed: now the broker may forget them.
                for p in &batch {
                    let _ = client.try_ack(p);
                }
                counters.batches.fetch_add(1, Relaxed);
            }
            Err(e) => {
                // Not committed, not acknowledged: the broker will redeliver after a reconnect.
                tracing::error!("core could not commit a batch of {}: {e}", batch.len());
                tokio::time::sleep(Duration::from_millis(500)).await;
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
