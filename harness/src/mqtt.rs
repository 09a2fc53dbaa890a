//! MQTT clients for the twin's traffic: publishers in three connection modes (one connection in all, one
//! per estate gateway, one per device) and an observer that subscribes to the town's topics and counts
//! what the broker delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use towntwin_core::event::{EventType, TOWN_AREA};
use towntwin_core::town::Town;
use towntwin_sim as sim;

use crate::broker::Endpoint;

/// How the twin's devices connect to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all(serialize = "lowercase"))]
pub enum Mode {
    /// One connection for the whole town.
    One,
    /// One connection per estate gateway (and per road, and one for the clock).
    Estate,
    /// One connection per device (9,749 and one for the clock).
    Device,
}

/// Counters shared with the event-loop tasks, and a signal that one of them moved: waiting code waits on
/// the signal (with a deadline), never on a timer.
#[derive(Debug, Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub subscribed: AtomicU64,
    pub pubacks: AtomicU64,
    pub errors: AtomicU64,
    pub received: AtomicU64,
    pub received_by_type: Vec<AtomicU64>,
    pub invalid: AtomicU64,
    /// Connections the broker refused (a login it does not accept, say).
    pub refused: AtomicU64,
    /// Requests carried over a reconnect and sent again (see [`spawn_loop`]), and the QoS 1 publishes among them.
    pub resent: AtomicU64,
    pub resent_qos1: AtomicU64,
    /// Reconnects the broker answered with the session it kept (`session_present`).
    pub resumed: AtomicU64,
    /// Publishes rumqttc parked because their packet id was still in flight (its single collision slot).
    pub collisions: AtomicU64,
    /// QoS 1 publishes handed to the connection and not yet acknowledged, summed over the connections
    /// (the client's in-flight window and what it holds for the next connection).
    pub outstanding: AtomicU64,
    /// Connections up now (a CONNACK and no error since).
    pub live: AtomicU64,
    /// Connections lost (errors after a CONNACK).
    pub drops: AtomicU64,
    /// After [`Publisher::storm`]: the next reconnect of each connection waits a random delay up to this many
    /// milliseconds (0: the usual back-off).
    storm_ms: AtomicU64,
    changed: Notify,
}

/// What a publisher's connections went through, for a load report.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct Churn {
    /// Connections lost after a CONNACK.
    pub drops: u64,
    /// Reconnects that found the session the broker kept.
    pub resumed: u64,
    /// Requests carried over a reconnect and sent again, and the QoS 1 publishes among them.
    pub resent: u64,
    pub resent_qos1: u64,
    /// Publishes parked in rumqttc's collision slot.
    pub collisions: u64,
    /// QoS 1 acknowledgements (a publish sent again after a reconnect may be acknowledged twice).
    pub pubacks: u64,
}

impl Counters {
    pub fn churn(&self) -> Churn {
        let g = Counters::get;
        Churn {
            drops: g(&self.drops),
            resumed: g(&self.resumed),
            resent: g(&self.resent),
            resent_qos1: g(&self.resent_qos1),
            collisions: g(&self.collisions),
            pubacks: g(&self.pubacks),
        }
    }

    pub fn new() -> Arc<Counters> {
        Arc::new(Counters { received_by_type: EventType::ALL.iter().map(|_| AtomicU64::new(0)).collect(), ..Default::default() })
    }

    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    pub fn pubacks(&self) -> u64 {
        Counters::get(&self.pubacks)
    }

    pub fn invalid(&self) -> u64 {
        Counters::get(&self.invalid)
    }

    fn bump(&self, a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub fn bump_pubacks(&self) {
        self.bump(&self.pubacks);
    }

    pub fn bump_errors(&self) {
        self.bump(&self.errors);
    }

    /// Waits until `done` holds, or `deadline`; returns whether it holds.
    pub async fn wait_until(&self, deadline: Instant, done: impl Fn(&Counters) -> bool) -> bool {
        loop {
            // Registered before the check, so a change between the check and the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                return done(self);
            }
        }
    }
}

fn qos(q: u8) -> QoS {
    if q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }
}

/// A client's options (see [`crate::transport::options`]); `persistent`: the broker keeps its session
/// across a reconnect (per-device connections, as devices have).
fn options(id: &str, user: &str, ep: &Endpoint, inflight: u16, capacity: usize, persistent: bool) -> Result<MqttOptions> {
    crate::transport::options(
        ep,
        id,
        user,
        crate::transport::Client { keep_alive: Duration::from_secs(60), inflight: Some(inflight), capacity: Some(capacity), persistent },
    )
}

fn network(el: &mut EventLoop) {
    crate::transport::tune(el, 30);
}

/// QoS 1 publishes among requests.
fn qos1_in(requests: &std::collections::VecDeque<rumqttc::Request>) -> u64 {
    requests.iter().filter(|r| matches!(r, rumqttc::Request::Publish(p) if p.qos != QoS::AtMostOnce)).count() as u64
}

/// An event loop's task, and the flag that tells it a disconnect is on purpose.
struct Polled {
    task: JoinHandle<()>,
    closing: Arc<AtomicBool>,
}

impl Polled {
    /// Disconnects `client` and waits (briefly) for the loop to see it out, so the DISCONNECT is sent.
    async fn close(self, client: &AsyncClient) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = client.try_disconnect();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_millis(500), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Polls an event loop until it is closed, counting connections, acks and errors; optionally counting
/// and checking received publishes.
/// With `resubscribe`, a subscriber's client and filter: after a reconnect to a broker that kept no
/// session for it (a restarted broker), the filter is subscribed again. `platform`: the platform's own
/// services (the clock, the hotline, observers) retry every 300 ms; devices back off as firmware does.
fn spawn_loop(mut el: EventLoop, counters: Arc<Counters>, validate: Option<bool>, resubscribe: Option<(AsyncClient, String)>, platform: bool) -> Polled {
    network(&mut el);
    let closing = Arc::new(AtomicBool::new(false));
    let closed = closing.clone();
    // Back-off between reconnects as device firmware does it: a random delay in [d/2, d], d doubling from
    // 1 s to 5 s while the broker stays away, drawn from a stream seeded by the client id (so a run's
    // reconnects are the same each time it is repeated). The core retries every 100 ms, the platform's
    // services every 300 ms, so that (most often) after a broker restart the core has subscribed again and the
    // clock ticks before the devices return: a broker that kept no session drops what arrives for a
    // subscription not yet made, and a clock minutes behind the devices (at a run's speed-up) makes the core
    // refuse their events as ahead of its window.
    let mut rng = {
        use rand::SeedableRng as _;
        let id = el.mqtt_options.client_id();
        rand::rngs::StdRng::seed_from_u64(u64::from_le_bytes(blake3::hash(id.as_bytes()).as_bytes()[..8].try_into().unwrap_or_default()))
    };
    let task = tokio::spawn(async move {
        let mut up = false;
        let first = Duration::from_millis(if platform { 300 } else { 1_000 });
        let mut backoff = first;
        // What the client had not yet had acknowledged when its connection broke: rumqttc moves it into
        // `pending` and, if the next CONNACK says the broker kept no session (a restarted broker, a clean
        // session), clears it: the in-flight publishes and every request still queued in its channel would
        // be lost without a word. Taken out here and put back after the CONNACK, it is sent again either way
        // (at least once: the core drops what it already has by source and id).
        let mut carried: std::collections::VecDeque<rumqttc::Request> = std::collections::VecDeque::new();
        // rumqttc sends its `pending` list without regard to its in-flight window, and a packet id that is
        // still in use goes to a single collision slot (a second one overwrites it): so no more than the
        // window is handed back at once, and the rest follows one for each acknowledgement.
        let mut overflow: std::collections::VecDeque<rumqttc::Request> = std::collections::VecDeque::new();
        let window = el.mqtt_options.inflight() as usize;
        let mut outstanding = 0u64;
        loop {
            let polled = el.poll().await;
            let now_outstanding = el.state.inflight() as u64 + qos1_in(&el.pending) + qos1_in(&carried) + qos1_in(&overflow);
            if now_outstanding != outstanding {
                if now_outstanding > outstanding {
                    counters.outstanding.fetch_add(now_outstanding - outstanding, Ordering::Relaxed);
                } else {
                    counters.outstanding.fetch_sub(outstanding - now_outstanding, Ordering::Relaxed);
                }
                outstanding = now_outstanding;
            }
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    tracing::debug!(
                        client = el.mqtt_options.client_id(),
                        session_present = c.session_present,
                        carried = carried.len(),
                        overflow = overflow.len(),
                        "connack"
                    );
                    if c.session_present {
                        counters.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    if !carried.is_empty() || !overflow.is_empty() {
                        counters.resent.fetch_add((carried.len() + overflow.len()) as u64, Ordering::Relaxed);
                        counters.resent_qos1.fetch_add(qos1_in(&carried) + qos1_in(&overflow), Ordering::Relaxed);
                        tracing::info!("sending {} requests again after a reconnect (session kept: {})", carried.len(), c.session_present);
                        carried.extend(std::mem::take(&mut el.pending));
                        carried.extend(std::mem::take(&mut overflow));
                        for r in carried.iter_mut() {
                            // Fresh packet ids, given in order, for a new session and a resumed one alike. On a
                            // resumed session the old ids would be the right ones for MQTT, but rumqttc hands
                            // out the same small range (1 to the in-flight window) to new publishes meanwhile,
                            // so an old id still waiting here collides with a new one in flight, and rumqttc
                            // keeps one collision at a time (a second overwrites the first: a QoS 1 publish
                            // lost, seen in reconnect storms of 9,751 device connections). A fresh id makes
                            // the broker take it as a new publish: at worst delivered twice, which the core's
                            // dedup drops.
                            if let rumqttc::Request::Publish(p) = r {
                                p.pkid = 0;
                            }
                        }
                        let rest = carried.split_off(carried.len().min(window));
                        el.pending = std::mem::take(&mut carried);
                        overflow = rest;
                    }
                    if !up {
                        up = true;
                        counters.live.fetch_add(1, Ordering::Relaxed);
                    }
                    backoff = first;
                    // The first connection's subscription is made by whoever started this loop.
                    let again = Counters::get(&counters.connected) > 0;
                    if again
                        && !c.session_present
                        && let Some((client, filter)) = &resubscribe
                        && let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce)
                    {
                        tracing::warn!("cannot subscribe to {filter} again after a reconnect: {e}");
                    }
                    counters.bump(&counters.connected);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => counters.bump(&counters.subscribed),
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    tracing::debug!(client = el.mqtt_options.client_id(), pkid = a.pkid, "puback");
                    if let Some(r) = overflow.pop_front() {
                        el.pending.push_back(r);
                    }
                    counters.bump(&counters.pubacks)
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if closed.load(Ordering::Relaxed) => break,
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) if pkid != 0 => {
                    tracing::debug!(client = el.mqtt_options.client_id(), pkid, "publish qos1");
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::AwaitAck(pkid))) => {
                    tracing::debug!(client = el.mqtt_options.client_id(), pkid, "collision");
                    counters.collisions.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(check) = validate {
                        let ty = p.topic.rsplit('/').next().and_then(EventType::parse);
                        if let Some(ty) = ty {
                            counters.received_by_type[ty as usize].fetch_add(1, Ordering::Relaxed);
                        }
                        if check && (ty.is_none() || crate::cloudevents::check(&p.payload).is_err()) {
                            counters.invalid.fetch_add(1, Ordering::Relaxed);
                        }
                        counters.bump(&counters.received);
                    }
                }
                Ok(_) => {}
                Err(_) if closed.load(Ordering::Relaxed) => break,
                Err(e) => {
                    tracing::debug!(client = el.mqtt_options.client_id(), error = %e, pending = el.pending.len(), pending_qos1 = qos1_in(&el.pending), collision = el.state.collision.is_some(), "connection error");
                    if let rumqttc::ConnectionError::ConnectionRefused(code) = e {
                        tracing::warn!("the broker refused a connection: {code:?}");
                        counters.bump(&counters.refused);
                    }
                    carried.extend(std::mem::take(&mut el.pending));
                    if std::mem::take(&mut up) {
                        counters.live.fetch_sub(1, Ordering::Relaxed);
                        counters.drops.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.bump(&counters.errors);
                    // Back-off before the event loop reconnects, so a broker that is down is not hammered:
                    // jittered, growing while it stays away, or spread over a storm's window.
                    let storm = Counters::get(&counters.storm_ms);
                    let wait = if storm > 0 && !platform {
                        Duration::from_millis(rand::Rng::random_range(&mut rng, 0..=storm))
                    } else if platform {
                        first
                    } else {
                        let w = backoff.mul_f64(rand::Rng::random_range(&mut rng, 0.5..=1.0));
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        w
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    });
    Polled { task, closing }
}

/// Publishes the twin's messages over one or many connections.
pub struct Publisher {
    clients: Vec<AsyncClient>,
    route: HashMap<String, usize>,
    mode: Mode,
    tasks: Vec<Polled>,
    pub counters: Arc<Counters>,
    pub published: u64,
    pub published_qos1: u64,
    /// Time from the first connection attempt until every client had its CONNACK.
    pub connect_time: Duration,
}

impl Publisher {
    /// Connects every client the mode needs and waits for all CONNACKs (at most `timeout`).
    pub async fn connect(ep: &Endpoint, mode: Mode, town: &Town, timeout: Duration) -> Result<Publisher> {
        let keys: Vec<String> = match mode {
            Mode::One => vec!["town".into()],
            Mode::Estate => town.estates.iter().map(|e| e.id.clone()).chain(town.roads.iter().map(|r| r.id.clone())).chain([TOWN_AREA.to_string()]).collect(),
            Mode::Device => town
                .estates
                .iter()
                .flat_map(|e| &e.devices)
                .chain(town.roads.iter().flat_map(|r| &r.devices))
                .map(|d| d.id.clone())
                .chain(["twin".to_string(), towntwin_core::event::HOTLINE_DEVICE.to_string()])
                .collect(),
        };
        let (inflight, capacity) = match mode {
            Mode::One => (1_000, 20_000),
            Mode::Estate => (200, 2_000),
            Mode::Device => (20, 64),
        };
        let counters = Counters::new();
        let started = Instant::now();
        let mut clients = Vec::with_capacity(keys.len());
        let mut tasks = Vec::with_capacity(keys.len());
        let mut route = HashMap::with_capacity(keys.len());
        let pid = std::process::id();
        for (i, k) in keys.into_iter().enumerate() {
            use crate::credentials::{CLOCK, GATEWAY, gateway_of};
            // Who this connection logs in as (with credentials): the gateway, an area's gateway or the
            // device itself; the clock on its own.
            let user = match mode {
                Mode::One => GATEWAY.to_string(),
                Mode::Estate if k == TOWN_AREA => CLOCK.to_string(),
                Mode::Estate => gateway_of(&k),
                Mode::Device if k == "twin" => CLOCK.to_string(),
                Mode::Device if k == towntwin_core::event::HOTLINE_DEVICE => crate::credentials::HOTLINE.to_string(),
                Mode::Device => k.clone(),
            };
            let (client, el) = AsyncClient::new(options(&format!("towntwin-{pid}-{k}"), &user, ep, inflight, capacity, mode == Mode::Device)?, capacity);
            let platform = mode != Mode::Device || user == CLOCK || user == crate::credentials::HOTLINE;
            tasks.push(spawn_loop(el, counters.clone(), None, None, platform));
            clients.push(client);
            route.insert(k, i);
        }
        let n = clients.len() as u64;
        counters.wait_until(Instant::now() + timeout, |c| Counters::get(&c.connected) >= n || Counters::get(&c.refused) > 0).await;
        let (got, refused) = (Counters::get(&counters.connected), Counters::get(&counters.refused));
        if got < n {
            for t in &tasks {
                t.task.abort();
            }
            if refused > 0 {
                bail!("{ep} refused {refused} of {n} connections (not authorised: check --credentials against the broker's password file)");
            }
            bail!("only {got} of {n} connections to {ep} were accepted within {timeout:?}");
        }
        Ok(Publisher { clients, route, mode, tasks, counters, published: 0, published_qos1: 0, connect_time: started.elapsed() })
    }

    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// What can drop every device connection at once from another thread (see [`Storm::start`]). The
    /// clock and the hotline are the platform's own, not devices behind an uplink: they stay up (a clock
    /// that stalls for a storm's seconds at a run's speed-up would put the devices' events minutes ahead of
    /// the core's clock, and the core refuses those as out of its window).
    pub fn storm_handle(&self) -> Storm {
        let platform: Vec<usize> = ["twin", towntwin_core::event::HOTLINE_DEVICE].iter().filter_map(|k| self.route.get(*k).copied()).collect();
        let devices = match self.mode {
            Mode::Device => self.clients.iter().enumerate().filter(|(i, _)| !platform.contains(i)).map(|(_, c)| c.clone()).collect(),
            _ => self.clients.clone(),
        };
        Storm { clients: devices, total: self.clients.len() as u64, counters: self.counters.clone() }
    }

    fn client_for(&self, topic: &str) -> usize {
        let key = match self.mode {
            Mode::One => return 0,
            Mode::Estate => topic.split('/').nth(1),
            Mode::Device => topic.split('/').nth(3),
        };
        key.and_then(|k| self.route.get(k)).copied().unwrap_or(0)
    }

    pub async fn publish(&mut self, msg: sim::Message) -> Result<()> {
        let topic = msg.topic().to_string();
        let c = self.client_for(&topic);
        if msg.qos > 0 {
            self.published_qos1 += 1;
            tracing::debug!(client = c, topic, "qos1 handed to client");
        }
        self.clients[c].publish_bytes(topic, qos(msg.qos), false, msg.payload).await?;
        self.published += 1;
        Ok(())
    }

    /// Waits until every QoS 1 publish is acknowledged (at most `timeout`): as many acknowledgements as
    /// publishes, and none outstanding on any connection (an acknowledgement lost with a connection makes
    /// the publish be sent, and acknowledged, again). Returns how many were not acknowledged.
    pub async fn flush(&self, timeout: Duration) -> u64 {
        let want = self.published_qos1;
        self.counters.wait_until(Instant::now() + timeout, |c| c.pubacks() >= want && Counters::get(&c.outstanding) == 0).await;
        want.saturating_sub(self.counters.pubacks()).max(Counters::get(&self.counters.outstanding))
    }

    pub async fn close(self) {
        for (c, t) in self.clients.iter().zip(self.tasks) {
            t.close(c).await;
        }
    }
}

/// A reconnect storm: every connection of a publisher is dropped at once and comes back after a random delay
/// within a window, resuming its session (the publishers' sessions are persistent), as a town's devices do
/// after their uplink flaps.
#[derive(Clone)]
pub struct Storm {
    /// The connections a storm drops.
    clients: Vec<AsyncClient>,
    /// All the publisher's connections.
    total: u64,
    counters: Arc<Counters>,
}

impl Storm {
    /// A publisher without device connections to drop (one connection of its own: the lean publisher).
    pub fn none(counters: Arc<Counters>) -> Storm {
        Storm { clients: Vec::new(), total: 1, counters }
    }

    /// Drops every device connection (DISCONNECT; the broker keeps the sessions); each reconnects within
    /// `within`.
    pub fn start(&self, within: Duration) {
        self.counters.storm_ms.store(within.as_millis().max(1) as u64, Ordering::Relaxed);
        for c in &self.clients {
            let _ = c.try_disconnect();
        }
    }

    /// Waits until every connection is up again (at most `limit`); then back to the usual back-off.
    pub async fn wait_reconnected(&self, since_drops: u64, limit: Duration) -> bool {
        let (n, total) = (self.clients.len() as u64, self.total);
        let ok = self.counters.wait_until(Instant::now() + limit, |c| Counters::get(&c.drops) >= since_drops + n && Counters::get(&c.live) >= total).await;
        self.counters.storm_ms.store(0, Ordering::Relaxed);
        ok
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The connections a storm drops.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// All the publisher's connections.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// Subscribes to a filter and counts (and optionally validates) what arrives.
pub struct Observer {
    client: AsyncClient,
    task: Polled,
    pub counters: Arc<Counters>,
}

impl Observer {
    /// Connects and subscribes; returns once the broker has acknowledged the subscription (its SUBACK).
    pub async fn start(ep: &Endpoint, filter: &str, validate: bool) -> Result<Observer> {
        let counters = Counters::new();
        let id = format!("towntwin-observer-{}-{}", std::process::id(), filter.len());
        let (client, el) = AsyncClient::new(options(&id, crate::credentials::OBSERVER, ep, 1_000, 1_000, false)?, 1_000);
        let task = spawn_loop(el, counters.clone(), Some(validate), Some((client.clone(), filter.to_string())), true);
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        if !counters.wait_until(Instant::now() + Duration::from_secs(10), |c| Counters::get(&c.subscribed) > 0 || Counters::get(&c.refused) > 0).await
            || Counters::get(&counters.refused) > 0
        {
            task.task.abort();
            if Counters::get(&counters.refused) > 0 {
                bail!("{ep} refused the observer's connection (not authorised: check --credentials)");
            }
            bail!("the observer's subscription to {filter} on {ep} was not acknowledged within 10 s");
        }
        Ok(Observer { client, task, counters })
    }

    pub fn received(&self) -> u64 {
        Counters::get(&self.counters.received)
    }

    /// Waits until `expected` messages arrived, or nothing arrived for `quiet`, or `limit`; returns the count.
    pub async fn wait_for(&self, expected: u64, quiet: Duration, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let before = self.received();
            let until = deadline.min(Instant::now() + quiet);
            let done = self.counters.wait_until(until, |c| Counters::get(&c.received) >= expected || Counters::get(&c.received) != before).await;
            let now = self.received();
            if now >= expected || !done || Instant::now() >= deadline {
                return now;
            }
        }
    }

    pub async fn close(self) {
        self.task.close(&self.client).await;
    }
}
