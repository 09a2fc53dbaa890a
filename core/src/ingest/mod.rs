//! The core as an MQTT service: subscribes to the town's topics with a persistent session at QoS 1 (on the
//! lean connection of [`crate::wire`]), ingests in batches, and acknowledges a batch, in one write, only
//! after its effects are committed: killed mid-batch, the broker redelivers and the event log's dedup keeps
//! it exactly-once. Rejected messages go to `deadletter/{reason}/{original topic}`; every work-order
//! transition is published on `orders/{area}/{order id}/{action}`, on a second connection of its own
//! (client id `<core's>-out`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Publish, QoS};
use tokio::sync::watch;

use crate::notices::Link;
use crate::orders::Notice;
use crate::service::Core;

mod batch;

use batch::{Batches, Gathered, Item};

/// Wait between reconnects while the broker is away: short, so that after a broker restart the core has
/// subscribed again before the devices (whose firmware backs off from a second) return.
const RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub host: String,
    pub port: u16,
    /// Other nodes of the same broker cluster (one whose sessions every node shares, as nats-server's with
    /// JetStream): after a connection to one fails or breaks, the next is tried, in turn.
    pub also: Vec<(String, u16)>,
    /// Fixed, so the broker keeps the session (and unacknowledged messages) across restarts.
    pub client_id: String,
    /// Topic filter this instance owns (`town/#`, or `town/E012/#` for a shard; under the town's root for a
    /// named town: `jinqiao/town/#`).
    pub filter: String,
    /// The town's topic root and source prefix: what decoding accepts, and where orders and dead letters
    /// are published.
    pub ns: crate::event::Namespace,
    /// At most this many messages a batch. rumqttd lets a subscriber have 100 unacknowledged QoS 1
    /// messages at once and the core acknowledges after committing, so a batch of 100 would leave the broker
    /// idle while the core commits; 34 keeps three batches in the window, one arriving while another commits
    /// (the ingest benchmark measured 100, 50, 34 and 25).
    pub batch_max: usize,
    /// How long to wait for more messages before processing a partial batch.
    pub batch_wait: Duration,
    /// How long a batch may gather at most, from its first message: at low rates a large `batch_max` would
    /// otherwise hold each batch open for as long as messages keep coming within `batch_wait` of each other
    /// (300 messages at 3,500 a second: 86 ms, the smoke profile's p99 went from 9 to 41 ms).
    pub batch_linger: Duration,
    /// Threads that decode batches ahead of the writer (1: the writer decodes them itself); see
    /// [`Batches`].
    pub partitions: usize,
    /// Whether to publish work-order transitions on `orders/...`.
    pub publish_orders: bool,
    /// Username and password for the broker (`towntwin town credentials` writes the core's); None:
    /// anonymous.
    pub login: Option<(String, String)>,
}

impl IngestConfig {
    /// The subscribing connection's settings, for [`crate::wire::connect`].
    pub fn connect(&self) -> crate::wire::Connect {
        self.connect_to(0)
    }

    /// The settings for the `i`-th of the broker's nodes (counting round: `host:port`, then `also`).
    pub fn connect_to(&self, i: usize) -> crate::wire::Connect {
        let k = i % (1 + self.also.len());
        let (host, port) = if k == 0 { (self.host.clone(), self.port) } else { self.also[k - 1].clone() };
        crate::wire::Connect { host, port, client_id: self.client_id.clone(), login: self.login.clone() }
    }

    /// Serves the town `ns` (its events' filter, its orders' and dead letters' root).
    pub fn for_town(mut self, ns: crate::event::Namespace) -> IngestConfig {
        self.filter = ns.events_filter();
        self.ns = ns;
        self
    }

    pub fn new(host: &str, port: u16) -> IngestConfig {
        IngestConfig {
            host: host.to_string(),
            port,
            also: Vec::new(),
            client_id: "towntwin-core".into(),
            filter: "town/#".into(),
            ns: crate::event::Namespace::default(),
            batch_max: 34,
            batch_wait: Duration::from_millis(1),
            batch_linger: Duration::from_millis(4),
            partitions: 1,
            publish_orders: true,
            login: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("MQTT client: {0}")]
    Client(#[from] rumqttc::ClientError),
    #[error("a batch could not be committed (not acknowledged; a restart resumes from the store): {0}")]
    Commit(#[from] crate::service::CoreError),
    #[error("the core's lock was poisoned by a panic; stopped so that a restart rebuilds it from the store")]
    Poisoned,
}

/// Counters a running service exposes.
#[derive(Debug)]
pub struct IngestCounters {
    /// Messages committed and acknowledged.
    pub received: std::sync::atomic::AtomicU64,
    pub batches: std::sync::atomic::AtomicU64,
    pub dead_lettered: std::sync::atomic::AtomicU64,
    /// Messages read from the subscribing connection (committed or not yet).
    pub arrived: std::sync::atomic::AtomicU64,
    /// Whether the subscribing connection is up and subscribed (its SUBACK, or a resumed session).
    pub connected: std::sync::atomic::AtomicBool,
    /// Connections made by the subscribing side.
    pub connects: std::sync::atomic::AtomicU64,
    /// Whether the ingest loop runs.
    pub running: std::sync::atomic::AtomicBool,
    /// Wall-clock seconds to decode, apply and commit each batch (a measurement: nothing decides on it).
    pub batch_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for IngestCounters {
    fn default() -> Self {
        IngestCounters {
            received: Default::default(),
            batches: Default::default(),
            dead_lettered: Default::default(),
            arrived: Default::default(),
            connected: Default::default(),
            connects: Default::default(),
            running: Default::default(),
            batch_seconds: prometheus_client::metrics::histogram::Histogram::new(crate::metrics::batch_buckets()),
        }
    }
}

/// Sets a flag while alive and clears it when dropped (however the task ends).
struct Flag(Arc<Progress>, fn(&IngestCounters) -> &std::sync::atomic::AtomicBool);

impl Drop for Flag {
    fn drop(&mut self) {
        (self.1)(&self.0.counters).store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a running ingest reports as it goes: counters, and the received count as a signal to wait on.
#[derive(Debug)]
pub struct Progress {
    pub counters: Arc<IngestCounters>,
    /// The number of messages received so far, updated after each batch is committed and acknowledged.
    pub received: watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { counters: Arc::default(), received: watch::channel(0).0 }
    }
}

/// Runs until `stop` turns true; each batch is committed through `core` before it is acknowledged.
/// `subscribed` is told once the broker has acknowledged the subscription (its SUBACK), so that a caller
/// can hold back publishing until the core is listening.
pub async fn serve_on(
    link: Link,
    core: Arc<Mutex<Core>>,
    cfg: IngestConfig,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) -> Result<(), IngestError> {
    use std::sync::atomic::Ordering::Relaxed;
    progress.counters.running.store(true, Relaxed);
    let _running = Flag(progress.clone(), |c| &c.running);
    let counters = &progress.counters;
    let Link { client, mut el, out, mut out_rx } = link;
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The publishing connection (notices, watermarks, dead letters), polled on its own task.
    let mut out_network = {
        let (closing, cfg) = (closing.clone(), cfg.clone());
        AbortOnDrop(tokio::spawn(async move {
            let mut node = 0;
            loop {
                match el.poll().await {
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => break,
                    Err(_) if closing.load(Relaxed) => break,
                    Err(e) => {
                        tracing::warn!("core publishing connection: {e}");
                        if !cfg.also.is_empty() {
                            // The next node of the cluster (the session is the cluster's).
                            node += 1;
                            el.mqtt_options = crate::notices::mqtt_options(&cfg.connect_to(node));
                        }
                        // Back-off before reconnecting, so a broker that is down is not hammered.
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }))
    };
    let mut publisher = {
        let client = client.clone();
        AbortOnDrop(tokio::spawn(async move {
            while let Some((topic, body)) = out_rx.recv().await {
                if client.publish(topic, QoS::AtLeastOnce, false, body).await.is_err() {
                    break;
                }
            }
        }))
    };
    // The subscribing connection ([`crate::wire`]): its reader on one task, its writer (acknowledgements,
    // pings) on another. Neither ever waits on the batch loop: incoming messages go into an unbounded queue,
    // whose size is bounded by the broker's window of unacknowledged messages for this client (rumqttd: 100;
    // mosquitto: `max_inflight_messages`). Each CONNACK is queued too, in order with the messages: from there
    // on the core may have missed QoS 0 messages ([`Core::feed_broke`]).
    let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Option<Publish>)>();
    let (write_tx, mut write_rx) = tokio::sync::mpsc::unbounded_channel::<ToWriter>();
    // On a cluster, telemetry (QoS 0) also comes on a connection of its own with a clean session: nats-server
    // 2.15.1, resuming the core's session on another node after a node's death, sometimes restored its QoS 1
    // delivery and not its QoS 0 one, for good (in about half of the districts run with a node killed, a
    // town's core got no telemetry after the failover; reconnecting or subscribing again did not bring it
    // back). A clean session restores nothing: each connect subscribes afresh. While both work, each
    // telemetry message comes twice and the second is dropped as a duplicate.
    let telemetry = (!cfg.also.is_empty()).then(|| AbortOnDrop(tokio::spawn(telemetry(cfg.clone(), closing.clone(), in_tx.clone()))));
    let network = {
        let (cfg, closing, write_tx, progress) = (cfg.clone(), closing.clone(), write_tx.clone(), progress.clone());
        let mut subscribed = Some(subscribed);
        AbortOnDrop(tokio::spawn(async move {
            let _connected = Flag(progress.clone(), |c| &c.connected);
            let c = &progress.counters;
            let mut generation = 0u64;
            // The node connected to: after a failed or broken connection, the next one of the cluster.
            let mut node = 0usize;
            while !closing.load(Relaxed) {
                let to = cfg.connect_to(node);
                let (mut reader, mut writer, session_present) = match crate::wire::connect(&to, KEEP_ALIVE, CONNECT_TIMEOUT).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("core ingest connection to {}:{}: {e}", to.host, to.port);
                        node += 1;
                        // Back-off before reconnecting, so a broker that is down is not hammered.
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                };
                generation += 1;
                c.connects.fetch_add(1, Relaxed);
                if session_present {
                    // Ready: the broker resumed a session that holds the subscription. (It sends what it
                    // queued at once: the SUBACK of a repeated subscribe would come only behind that backlog.)
                    c.connected.store(true, Relaxed);
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                } else if let Err(e) = writer.send(&[crate::wire::subscribe(&cfg.filter)]).await {
                    tracing::warn!("core ingest: cannot subscribe to {}: {e}", cfg.filter);
                    continue;
                }
                if in_tx.send((generation, None)).is_err() || write_tx.send(ToWriter::Connection(generation, writer)).is_err() {
                    break;
                }
                let mut packets = Vec::new();
                loop {
                    packets.clear();
                    match tokio::time::timeout(KEEP_ALIVE * 3 / 2, reader.read(&mut packets)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            if !closing.load(Relaxed) {
                                tracing::warn!("core ingest connection: {e}");
                            }
                            break;
                        }
                        Err(_) => {
                            tracing::warn!("core ingest connection: nothing from the broker in {:?}, not even a ping reply", KEEP_ALIVE * 3 / 2);
                            break;
                        }
                    }
                    for p in packets.drain(..) {
                        let p = match p {
                            rumqttc::Packet::Publish(p) => p,
                            rumqttc::Packet::SubAck(_) => {
                                c.connected.store(true, Relaxed);
                                if let Some(s) = subscribed.take() {
                                    let _ = s.send(());
                                }
                                continue;
                            }
                            _ => continue,
                        };
                        c.arrived.fetch_add(1, Relaxed);
                        if in_tx.send((generation, Some(p))).is_err() {
                            return;
                        }
                    }
                }
                c.connected.store(false, Relaxed);
                node += 1;
                if !closing.load(Relaxed) {
                    // Back-off before reconnecting.
                    tokio::time::sleep(RETRY).await;
                }
            }
        }))
    };
    // Acknowledgements go out on the writer task, a batch in one write, only on the connection their messages
    // came on; it pings the broker when it has written nothing for half the keep-alive.
    let mut acker = AbortOnDrop(tokio::spawn(async move {
        let mut current: Option<(u64, crate::wire::Writer)> = None;
        let mut last_write = tokio::time::Instant::now();
        let mut ping = tokio::time::interval(KEEP_ALIVE / 4);
        loop {
            tokio::select! {
                cmd = write_rx.recv() => match cmd {
                    Some(ToWriter::Connection(g, w)) => {
                        current = Some((g, w));
                        last_write = tokio::time::Instant::now();
                    }
                    Some(ToWriter::Ack(g, ids)) => {
                        if let Some((cg, w)) = current.as_mut()
                            && *cg == g
                        {
                            if let Err(e) = w.ack(&ids).await {
                                tracing::warn!("core ingest: acknowledgements not sent: {e}");
                                current = None;
                            }
                            last_write = tokio::time::Instant::now();
                        }
                    }
                    None => break,
                },
                _ = ping.tick() => {
                    if last_write.elapsed() >= KEEP_ALIVE / 2
                        && let Some((_, w)) = current.as_mut()
                    {
                        if w.send(&[rumqttc::Packet::PingReq]).await.is_err() {
                            current = None;
                        }
                        last_write = tokio::time::Instant::now();
                    }
                }
            }
        }
        if let Some((_, w)) = current {
            w.close().await;
        }
    }));
    // Batches are gathered on a task of their own and, with partitions, decoded on the partitions' threads
    // while the one before is applied; the loop below applies and commits them in the order they came.
    let devices = {
        let Ok(core) = core.lock() else { return Err(IngestError::Poisoned) };
        Arc::new(core.engine.devices().clone())
    };
    let mut batches = Batches::start(in_rx, &cfg, devices);
    let mut received = 0u64;
    let result: Result<(), IngestError> = loop {
        let item = tokio::select! {
            _ = stop.changed() => if *stop.borrow() { break Ok(()) } else { continue },
            item = batches.next() => match item {
                Some(item) => item,
                None => break Ok(()),
            },
        };
        let Gathered { batch, generations, decoded, then_broke } = match item {
            Item::Broke => {
                // A (re)connect: what follows may come after a gap; recorded before any of it is ingested.
                let Ok(mut core) = core.lock() else { break Err(IngestError::Poisoned) };
                if let Err(e) = core.feed_broke() {
                    break Err(IngestError::Commit(e));
                }
                continue;
            }
            Item::Batch(g) => g,
        };
        let payloads: Vec<&[u8]> = batch.iter().map(|p| &p.payload[..]).collect();
        let topics: Vec<&str> = batch.iter().map(|p| p.topic.as_str()).collect();
        let qos0: Vec<bool> = batch.iter().map(|p| p.qos == QoS::AtMostOnce).collect();
        let took = std::time::Instant::now();
        let outcome = {
            // A poisoned lock means a thread panicked while it held the core: its state in memory can no
            // longer be trusted, so the service stops and a restart rebuilds it from the store.
            let Ok(mut core) = core.lock() else { break Err(IngestError::Poisoned) };
            let outcome = match decoded {
                Some(decoded) => core.ingest_decoded(&payloads, &qos0, decoded),
                None => core.ingest_delivered(&topics, &payloads, &qos0),
            };
            outcome.inspect(|o| {
                // Published while the core is held, so the API's notices cannot overtake these.
                if cfg.publish_orders {
                    let notices: Vec<Notice> =
                        o.transitions.iter().zip(&o.causes).map(|(t, c)| Notice { cause: Some(c.to_string()), ..core.orders.notice(t) }).collect();
                    out.publish(&notices);
                    if let Some(now) = o.clock {
                        out.watermark(now);
                    }
                }
            })
        };
        match outcome {
            Ok(o) => {
                counters.batch_seconds.observe(took.elapsed().as_secs_f64());
                for (i, r) in &o.rejected {
                    tracing::info!("dead letter ({}) from {}: {}", r.code, batch[*i].topic, r.detail);
                    let topic = format!("{}deadletter/{}/{}", cfg.ns.prefix(), r.code, batch[*i].topic);
                    // An oversized message is dead-lettered as a stub: its size and why, not itself (one the
                    // connection skipped unread carries only its size).
                    let skipped = crate::wire::oversized_stub(&batch[*i].payload);
                    let body = if batch[*i].payload.len() > crate::limits::MAX_EVENT_BYTES || skipped.is_some() {
                        let bytes = skipped.unwrap_or(batch[*i].payload.len());
                        serde_json::json!({ "reason": r.code, "detail": r.detail, "bytes": bytes }).to_string().into_bytes()
                    } else {
                        batch[*i].payload.to_vec()
                    };
                    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, body) {
                        tracing::warn!("dead letter from {} not published: {e}", batch[*i].topic);
                    }
                    counters.dead_lettered.fetch_add(1, Relaxed);
                }
                // Committed: now the broker may forget them, in one write per connection they came on.
                let mut from = 0;
                while from < batch.len() {
                    let g = generations[from];
                    let to = generations[from..].iter().position(|&x| x != g).map_or(batch.len(), |n| from + n);
                    let ids: Vec<u16> = batch[from..to].iter().filter(|p| crate::wire::needs_ack(p)).map(|p| p.pkid).collect();
                    if !ids.is_empty() {
                        let _ = write_tx.send(ToWriter::Ack(g, ids));
                    }
                    from = to;
                }
                counters.batches.fetch_add(1, Relaxed);
                // Committed and acknowledged: counted only now, so a batch in hand shows as lag.
                counters.received.fetch_add(batch.len() as u64, Relaxed);
                received += batch.len() as u64;
                progress.received.send_replace(received);
            }
            Err(e) => {
                // Not committed, not acknowledged. The engine may have moved on in memory, so the only safe
                // course is the one a crash takes: stop, and let a restart rebuild from the store while the
                // broker redelivers the batch.
                tracing::error!("core could not commit a batch of {}: {e}", batch.len());
                break Err(IngestError::Commit(e));
            }
        }
        if then_broke {
            let Ok(mut core) = core.lock() else { break Err(IngestError::Poisoned) };
            if let Err(e) = core.feed_broke() {
                break Err(IngestError::Commit(e));
            }
        }
    };
    drop(batches);
    // Let the last acknowledgements go out and disconnect the subscribing connection; let the last notices
    // go out (the publisher ends when its queue is empty and closed) and disconnect the publishing one; each
    // step bounded, so a dead broker cannot hold us.
    closing.store(true, Relaxed);
    drop(write_tx);
    let _ = tokio::time::timeout(SHUTDOWN_STEP, &mut acker.0).await;
    network.0.abort();
    if let Some(t) = telemetry {
        t.0.abort();
    }
    drop(out);
    let _ = tokio::time::timeout(SHUTDOWN_STEP, &mut publisher.0).await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(SHUTDOWN_STEP, &mut out_network.0).await;
    result
}

/// The generations of the telemetry connection's messages start here (they need no acknowledgement: no
/// writer has such a generation).
const TELEMETRY_GENERATIONS: u64 = 1 << 62;

/// The telemetry connection of a core on a cluster: a clean session on a node of its own (the one after the
/// subscribing connection's first), subscribed at QoS 0 to the town's telemetry types, each message handed
/// on as the subscribing connection's are; each break and each (re)connect a break of the feed (QoS 0 may
/// have been lost meanwhile).
async fn telemetry(cfg: IngestConfig, closing: Arc<std::sync::atomic::AtomicBool>, in_tx: tokio::sync::mpsc::UnboundedSender<Incoming>) {
    use std::sync::atomic::Ordering::Relaxed;
    let filters: Vec<String> =
        crate::event::EventType::ALL.iter().filter(|t| t.qos() == 0).map(|t| cfg.ns.topic(&format!("town/+/+/+/{}", t.as_str()))).collect();
    let mut node = 1usize;
    let mut generation = TELEMETRY_GENERATIONS;
    while !closing.load(Relaxed) {
        let mut to = cfg.connect_to(node);
        to.client_id = format!("{}-qos0", cfg.client_id);
        node += 1;
        let (mut reader, mut writer, _) = match crate::wire::connect_with(&to, KEEP_ALIVE, CONNECT_TIMEOUT, true).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("core telemetry connection to {}:{}: {e}", to.host, to.port);
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if let Err(e) = writer.send(&[crate::wire::subscribe_qos0(&filters)]).await {
            tracing::warn!("core telemetry connection: cannot subscribe: {e}");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        generation += 1;
        if in_tx.send((generation, None)).is_err() {
            return;
        }
        let mut packets = Vec::new();
        let mut ping = tokio::time::interval(KEEP_ALIVE / 4);
        ping.tick().await;
        let mut heard = tokio::time::Instant::now();
        loop {
            packets.clear();
            tokio::select! {
                read = reader.read(&mut packets) => {
                    if let Err(e) = read {
                        if !closing.load(Relaxed) {
                            tracing::warn!("core telemetry connection: {e}");
                        }
                        break;
                    }
                    heard = tokio::time::Instant::now();
                }
                _ = ping.tick() => {
                    if heard.elapsed() > KEEP_ALIVE * 3 / 2 {
                        tracing::warn!("core telemetry connection: nothing from the broker in {:?}, not even a ping reply", KEEP_ALIVE * 3 / 2);
                        break;
                    }
                    if writer.send(&[rumqttc::Packet::PingReq]).await.is_err() {
                        break;
                    }
                    continue;
                }
            }
            for p in packets.drain(..) {
                if let rumqttc::Packet::Publish(p) = p
                    && in_tx.send((generation, Some(p))).is_err()
                {
                    return;
                }
            }
        }
        // Telemetry may be lost from the moment the connection broke, not only from the reconnect.
        if closing.load(Relaxed) || in_tx.send((generation, None)).is_err() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// What arrives from the subscribing connection: a message (with its connection's generation), or `None`
/// for a (re)connect.
type Incoming = (u64, Option<Publish>);

/// What the subscribing connection's writer task is told.
enum ToWriter {
    /// A new connection, and its generation.
    Connection(u64, crate::wire::Writer),
    /// Acknowledge these packet ids on the connection of this generation.
    Ack(u64, Vec<u16>),
}

/// The subscribing connection's keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each step of a shutdown may take.
const SHUTDOWN_STEP: Duration = Duration::from_millis(500);

/// A task that ends with its owner, on every way out of [`serve_on`].
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
