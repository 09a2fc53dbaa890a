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

mod observe;
mod poll;

pub use observe::{Observer, Storm};
use poll::{Polled, failover, options, qos, spawn_loop};

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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
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

impl std::ops::AddAssign<&Churn> for Churn {
    /// Another publisher's counts added (a load's generators together).
    fn add_assign(&mut self, o: &Churn) {
        self.drops += o.drops;
        self.resumed += o.resumed;
        self.resent += o.resent;
        self.resent_qos1 += o.resent_qos1;
        self.collisions += o.collisions;
        self.pubacks += o.pubacks;
    }
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
        Publisher::connect_some(ep, mode, town, timeout, "", &|_| true).await
    }

    /// [`Publisher::connect`] for one generator of several: with a connection per device, only those whose
    /// key (a device's id, `twin`, `12345`) `keep` keeps (with one connection, or one per estate, every
    /// generator opens them all: each estate's gateway carries devices of every slice); client ids marked
    /// with `tag`, so that generators on machines whose process ids collide do not take each other's
    /// sessions.
    pub async fn connect_some(ep: &Endpoint, mode: Mode, town: &Town, timeout: Duration, tag: &str, keep: &dyn Fn(&str) -> bool) -> Result<Publisher> {
        let all: Vec<String> = match mode {
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
        let keys: Vec<String> = all.into_iter().filter(|k| mode != Mode::Device || keep(k)).collect();
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
            // On a cluster, the connections spread over its nodes in turn, each failing over to the next.
            let node = ep.starting_at(i);
            let id = format!("towntwin-{tag}{pid}-{k}");
            let make = |e: &Endpoint| options(&id, &user, e, inflight, capacity, mode == Mode::Device);
            let (client, el) = AsyncClient::new(make(&node)?, capacity);
            let platform = mode != Mode::Device || user == CLOCK || user == crate::credentials::HOTLINE;
            tasks.push(spawn_loop(el, counters.clone(), None, None, platform, failover(&node, make)?));
            clients.push(client);
            route.insert(k, i);
        }
        // The estates' other report lines (the QR code, the patrol) go through the hotline's connection: the
        // platform's own, like the 12345 line.
        if let Some(&h) = route.get(towntwin_core::event::HOTLINE_DEVICE) {
            for line in [towntwin_core::event::Line::Qr, towntwin_core::event::Line::Patrol] {
                route.insert(line.device().to_string(), h);
            }
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
