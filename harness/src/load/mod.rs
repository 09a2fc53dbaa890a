//! `towntwin load PROFILE.ron`: QA's load test of the core as deployed.
//!
//! The core runs as its own process (`towntwin core`, the command a town runs) against the embedded broker,
//! itself a child process (`towntwin broker`), or against `--broker` on loopback. The twin's traffic is
//! generated and given its intended send instants before anything is sent ([`profile::schedule`]); a
//! reference core in this process takes the same traffic first, to know which events must be accepted and
//! which work orders must come of them. Then the traffic leaves open loop ([`drive`]): each event at its
//! intended instant whether or not the system keeps up, the lateness of each send in its own histogram.
//! Latency runs from an event's intended instant to the arrival of its work order's notice on MQTT, in an
//! HdrHistogram, so a stalled system cannot hide its delay (no coordinated omission). Faults (kill -9, a
//! frozen core, a broker restart) are injected on schedule. Afterwards the core is stopped cleanly and its
//! store is read: every event and every work order is accounted for ([`account`]), and `report.md`,
//! `summary.json`, the HDR interval log and plots are written. The run fails (exit 1) when the SLO is missed,
//! and is declared invalid (exit 3) when the generator could not keep to its schedule.

pub mod account;
pub mod knee;
pub mod lean;
pub mod procs;
pub mod profile;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use towntwin_core::event::EventType;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::service::Core;
use towntwin_core::store::Reader;
use towntwin_sim::{Message, Twin, TwinOptions};

use crate::broker::Endpoint;
use crate::mqtt::Publisher;
use crate::percentiles::Recorder;
use crate::setup::{CoreFiles, Setup};
use crate::transport::{self, OrdersFeed};
use crate::{DataFault, UsageFault};
use procs::{Proc, Usage};
use profile::{Fault, Loaded, Profile, secs};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub profile: PathBuf,
    /// `mqtt://host:port` on loopback; `None`: start the embedded broker as a child process.
    pub broker: Option<String>,
    pub out: Option<PathBuf>,
}

/// What happened to one injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRun {
    pub fault: String,
    /// Seconds from the start of the load when it was injected, and when it ended (the process back up).
    pub started: f64,
    pub ended: f64,
    /// From the fault's start until the core had caught up with the traffic again (everything it would
    /// accept that was due a second earlier); `None`: it never did before the run ended.
    pub recovery_seconds: Option<f64>,
    pub error: Option<String>,
}

/// One sample of the run's resources and progress (every 200 ms).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t: f64,
    /// Events in the core's log (accepted) so far.
    pub accepted: u64,
    /// The generator's device connections up.
    pub connections: u64,
    pub core: Option<UsageAt>,
    pub broker: Option<UsageAt>,
    pub generator: Option<UsageAt>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct UsageAt {
    /// Share of one core since the previous sample (1.0 = one core busy).
    pub cpu: f64,
    pub rss_mb: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Millis {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Millis {
    /// A recorder of microseconds, in milliseconds (p99.9 beside the usual percentiles).
    fn of(r: &Recorder) -> Millis {
        let h = r.histogram();
        if h.is_empty() {
            return Millis::default();
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        Millis { count: h.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: h.max() as f64 / 1000.0 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub profile: String,
    pub broker: String,
    pub connections: crate::mqtt::Mode,
    /// How many connections the generator made, and how long until the broker had accepted them all.
    pub connection_count: usize,
    pub connect_seconds: f64,
    pub seconds: f64,
    /// Whether the generator kept to its schedule; an invalid run is not a result.
    pub valid: bool,
    pub invalid_reason: Option<String>,
    pub sent: u64,
    pub broker_acknowledged: u64,
    /// The generator's connections: drops, resumed sessions, requests sent again, collisions.
    pub publishers: crate::mqtt::Churn,
    /// Events the core under load refused, by reason (the core's `rejects` table): an event refused here
    /// that the reference core accepted is counted lost.
    pub core_refused: std::collections::BTreeMap<String, u64>,
    pub accepted: u64,
    pub expected_work_orders: u64,
    pub work_orders: u64,
    /// QoS 1 events and work orders lost.
    pub lost: u64,
    pub lost_qos0: u64,
    pub duplicated: u64,
    pub late: u64,
    /// Redeliveries the core's dedup dropped (after a kill -9 the broker sends again what was not
    /// acknowledged), from its last clean stop.
    pub redelivered_dropped: Option<u64>,
    pub latency_ms: Millis,
    pub generator_lag_ms: Millis,
    pub offered_per_second: f64,
    pub sent_per_second: f64,
    pub core_per_second: f64,
    /// Seconds after the last send until the core had taken everything (`None`: not within the limit).
    pub drain_seconds: Option<f64>,
    pub faults: Vec<FaultRun>,
    pub core_starts: u32,
    /// The flags `towntwin core` ran with beyond broker, store and inputs (`--partitions`, `--batch-max`).
    pub core_flags: Vec<String>,
    pub core_cpu_max: f64,
    pub core_rss_max_mb: f64,
    pub broker_cpu_max: Option<f64>,
    pub broker_rss_max_mb: Option<f64>,
    pub generator_cpu_max: f64,
    pub checks: Vec<Check>,
    pub slo_pass: bool,
    pub events: account::Events,
    pub orders: account::Orders,
    pub out_dir: String,
}

/// Sends item `i` at `t0 + offsets[i]` seconds, open loop: a send that blocks delays the ones after it
/// only until they can go, never their intended instants, which are fixed beforehand. Records each send's
/// lateness (actual minus intended, microseconds) in `lag`. Stops (with an error) once sending is `give_up`
/// behind schedule: the run is then invalid, and bounded in time.
pub async fn drive(offsets: &[f64], t0: Instant, sink: &mut impl Sink, lag: &mut Recorder, give_up: Duration) -> Result<()> {
    for (i, &w) in offsets.iter().enumerate() {
        let due = t0 + secs(w);
        if due > Instant::now() {
            sink.flush().await?;
            // Pacing to the schedule: never early (a timer wakes on the next millisecond, so a send may be up
            // to a millisecond late, which the lag histogram shows and the latency includes).
            tokio::time::sleep_until(due.into()).await;
        }
        let late = Instant::now().saturating_duration_since(due);
        lag.record(late.as_micros() as i64);
        if late > give_up {
            anyhow::bail!("the generator fell {late:?} behind its schedule at event {i} of {}: stopped", offsets.len());
        }
        sink.send(i).await?;
    }
    sink.flush().await
}

/// Where [`drive`] sends item `i` (the publisher, or a test's stalling consumer).
pub trait Sink {
    fn send(&mut self, i: usize) -> impl std::future::Future<Output = Result<()>>;
    /// Called before the driver waits for the next item's instant: what was queued goes out now.
    fn flush(&mut self) -> impl std::future::Future<Output = Result<()>> {
        async { Ok(()) }
    }
}

/// The load's publisher: rumqttc clients in any connection mode, or the lean one for one connection.
enum Gen {
    Clients(Publisher),
    Lean(lean::Lean),
}

impl Gen {
    /// The lean publisher when the profile has one connection and no fault that drops it.
    async fn connect(ep: &Endpoint, prof: &Profile, town: &towntwin_core::town::Town) -> Result<Gen> {
        let drops = prof.faults.iter().any(|f| matches!(f, Fault::RestartBroker { .. } | Fault::ReconnectStorm { .. }));
        let timeout = Duration::from_secs(60);
        Ok(if prof.connections == crate::mqtt::Mode::One && !drops {
            Gen::Lean(lean::Lean::connect(ep, timeout).await?)
        } else {
            Gen::Clients(Publisher::connect(ep, prof.connections, town, timeout).await?)
        })
    }

    fn counters(&self) -> &Arc<crate::mqtt::Counters> {
        match self {
            Gen::Clients(p) => &p.counters,
            Gen::Lean(l) => &l.counters,
        }
    }

    fn connections(&self) -> usize {
        match self {
            Gen::Clients(p) => p.connections(),
            Gen::Lean(_) => 1,
        }
    }

    fn connect_time(&self) -> Duration {
        match self {
            Gen::Clients(p) => p.connect_time,
            Gen::Lean(l) => l.connect_time,
        }
    }

    fn storm_handle(&self) -> crate::mqtt::Storm {
        match self {
            Gen::Clients(p) => p.storm_handle(),
            Gen::Lean(l) => crate::mqtt::Storm::none(l.counters.clone()),
        }
    }

    fn published(&self) -> u64 {
        match self {
            Gen::Clients(p) => p.published,
            Gen::Lean(l) => l.published,
        }
    }

    async fn flush(&mut self, timeout: Duration) -> u64 {
        match self {
            Gen::Clients(p) => p.flush(timeout).await,
            Gen::Lean(l) => {
                if let Err(e) = l.flush().await {
                    tracing::warn!("{e:#}");
                }
                l.wait_acked(timeout).await
            }
        }
    }

    async fn close(self) {
        match self {
            Gen::Clients(p) => p.close().await,
            Gen::Lean(l) => l.close().await,
        }
    }
}

struct ToBroker<'a> {
    publisher: &'a mut Gen,
    msgs: &'a [Message],
}

impl Sink for ToBroker<'_> {
    async fn send(&mut self, i: usize) -> Result<()> {
        match self.publisher {
            Gen::Clients(p) => p.publish(self.msgs[i].clone()).await,
            Gen::Lean(l) => l.send(&self.msgs[i]).await,
        }
    }

    async fn flush(&mut self) -> Result<()> {
        match self.publisher {
            Gen::Clients(_) => Ok(()),
            Gen::Lean(l) => l.flush().await,
        }
    }
}

/// The twin's traffic as an endless stream (ten years at most), minute by minute.
struct Traffic {
    twin: Twin,
    buf: std::vec::IntoIter<Message>,
}

impl Iterator for Traffic {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.buf.next() {
                return Some(m);
            }
            if self.twin.finished() {
                return None;
            }
            self.buf = self.twin.step().into_iter();
        }
    }
}

#[derive(serde::Deserialize)]
struct Ids<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
}

/// What the reference core made of the traffic: the events it accepted and the work orders it made.
struct Reference {
    accepted: HashSet<String>,
    orders: Vec<account::OrderKey>,
}

fn reference(rules: &RuleSet, policy: &Policy, town: &towntwin_core::town::Town, msgs: &[Message], keys: &[String]) -> Result<Reference> {
    let mut core = Core::open(rules.clone(), policy.clone(), town, None).map_err(|e| anyhow!("the reference core: {e}"))?;
    let mut accepted = HashSet::with_capacity(msgs.len());
    for (chunk, ks) in msgs.chunks(34).zip(keys.chunks(34)) {
        let topics: Vec<&str> = chunk.iter().map(|m| m.topic()).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|m| &m.payload[..]).collect();
        let o = core.ingest_on(&topics, &payloads).map_err(|e| anyhow!("the reference core: {e}"))?;
        let refused: HashSet<usize> = o.rejected.iter().map(|(i, _)| *i).collect();
        for (i, k) in ks.iter().enumerate() {
            if !refused.contains(&i) {
                accepted.insert(k.clone());
            }
        }
    }
    let orders = core.orders.orders.iter().map(|o| (o.rule.clone(), o.key.clone(), o.created_at)).collect();
    Ok(Reference { accepted, orders })
}

/// What the load test keeps of the `orders/#` subscription, stamped on arrival.
enum Heard {
    Created { order: u64, cause: String, at: Instant },
    Watermark(i64),
}

impl Heard {
    /// An order's creation with its cause, or a watermark; nothing else matters to the load test.
    fn of((at, h): (Instant, transport::Heard)) -> Option<Heard> {
        match h {
            transport::Heard::Watermark(w) => Some(Heard::Watermark(w)),
            transport::Heard::Notice(n) if n.event.action == "create" => Some(Heard::Created { order: n.event.order, cause: n.cause?, at }),
            transport::Heard::Lost(e) => {
                tracing::debug!("load: {e}");
                None
            }
            _ => None,
        }
    }
}

/// The next thing heard that the load test keeps.
async fn next_heard(feed: &mut OrdersFeed) -> Option<Heard> {
    loop {
        if let Some(h) = Heard::of(feed.recv().await?) {
            return Some(h);
        }
    }
}

/// The processes this run started.
struct Procs {
    core: Proc,
    broker: Option<Proc>,
}

/// The accepted count in the core's store, read alongside the running core (WAL lets a reader in).
fn accepted_in(db: &std::path::Path, reader: &mut Option<Reader>) -> Option<u64> {
    if reader.is_none() {
        *reader = Reader::open(db).ok();
    }
    reader.as_ref()?.last_seq().ok()
}

/// Refuses what cannot run before anything starts: a RestartBroker fault on a broker this command did not
/// start, a broker off loopback or out of reach. Returns the broker's endpoint (`port` 0: start the
/// embedded one).
fn check_broker(loaded: &Loaded, broker: Option<&str>) -> Result<Endpoint> {
    if let Some(url) = broker
        && loaded.profile.faults.iter().any(|f| matches!(f, Fault::RestartBroker { .. }))
    {
        return Err(UsageFault(format!(
            "{}: a RestartBroker fault needs the broker this command starts; it cannot restart --broker {url}",
            loaded.file.display()
        ))
        .into());
    }
    match broker {
        Some(url) => {
            let ep = crate::broker::parse_url(url).map_err(|e| UsageFault(format!("--broker: {e:#}")))?;
            let loopback = std::net::ToSocketAddrs::to_socket_addrs(&(ep.host.as_str(), ep.port)).map(|mut a| a.all(|a| a.ip().is_loopback())).unwrap_or(false);
            if !loopback {
                return Err(UsageFault(format!("--broker {url}: a load test targets loopback only (127.0.0.1, localhost)")).into());
            }
            Ok(crate::broker::reach(url).map_err(|e| UsageFault(format!("--broker: {e:#}")))?)
        }
        None => Ok(Endpoint { host: "127.0.0.1".into(), port: 0, embedded: true, credentials: None }),
    }
}

/// Runs a load profile and writes its report; the summary says whether the SLO held.
pub fn run(opts: &LoadOptions) -> Result<Summary> {
    let loaded = profile::load(&opts.profile).map_err(DataFault)?;
    let ep = check_broker(&loaded, opts.broker.as_deref())?;
    let out = opts.out.clone().unwrap_or_else(|| crate::results::stamped(&format!("load/{}", loaded.profile.name)));
    crate::results::claim(&out, "a load run")?;
    run_loaded(&loaded, ep, &out)
}

/// Runs a checked profile into `out` (which holds no run).
fn run_loaded(loaded: &Loaded, ep: Endpoint, out: &std::path::Path) -> Result<Summary> {
    let prof = &loaded.profile;
    let external = !ep.embedded;
    let files = CoreFiles { rules: loaded.rules.clone(), policy: loaded.policy.clone() };
    // The town's own crews stay home in a load test (the core is driven by traffic alone), and the town
    // runs as long as it may: the profile's schedule takes what it needs of it.
    let setup = Setup::load_one(&loaded.scenario, Some(&files), |s| {
        s.seed = prof.seed.unwrap_or(s.seed);
        s.responders.enabled = false;
        s.days = 3_660;
    })
    .map_err(DataFault)?;
    let Setup { scenario, start, town, town_file, core, .. } = setup;
    let town = Arc::unwrap_or_clone(town);
    let (rules, policy) = core.map(|c| (c.rules, c.policy)).ok_or_else(|| anyhow!("a load test's core inputs were not loaded"))?;

    // The traffic and its schedule, and what the reference core makes of it.
    eprintln!("load: {} ({} s); generating the traffic ...", prof.name, loaded.seconds());
    let traffic = Traffic { twin: Twin::new(&scenario, start, town.clone(), TwinOptions::default()), buf: Vec::new().into_iter() };
    let plan = profile::schedule(&loaded.segments, traffic, |m| m.time, prof.limits.max_events);
    let (msgs, offsets): (Vec<Message>, Vec<f64>) = plan.into_iter().unzip();
    if msgs.is_empty() {
        return Err(UsageFault(format!("{}: the profile offers no events", loaded.file.display())).into());
    }
    let mut keys = Vec::with_capacity(msgs.len());
    let mut by_id: HashMap<String, usize> = HashMap::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let ids: Ids = serde_json::from_slice(&m.payload).context("the twin sent an event without id and source")?;
        keys.push(format!("{} {}", ids.source, ids.id));
        by_id.insert(ids.id.into_owned(), i);
    }
    let last_tick = msgs.iter().rev().find(|m| m.ty == EventType::ClockTick).map(|m| m.time);
    eprintln!("load: {} events over {:.0} s; the reference core takes them ...", msgs.len(), offsets.last().copied().unwrap_or(0.0));
    let reference = reference(&rules, &policy, &town, &msgs, &keys)?;

    // The broker and the core, each in its own process.
    let db = procs::db_path(out);
    let (broker_proc, ep) = if external {
        (None, ep)
    } else {
        let (p, ep) = procs::start_broker()?;
        (Some(p), ep)
    };
    let url = format!("mqtt://{}:{}", ep.host, ep.port);
    let client_id = format!("towntwin-core-load-{}", std::process::id());
    let batch_max = prof.batch_max.or(if external { None } else { Some(profile::EMBEDDED_BATCH_MAX) });
    let tuning = [("partitions", prof.partitions), ("batch-max", batch_max)];
    let core_flags: Vec<String> = tuning.iter().filter_map(|(f, v)| v.map(|v| format!("--{f} {v}"))).collect();
    let core_proc = Proc::start(
        "core",
        procs::core_args(&url, &db, &town_file, &loaded.rules, &loaded.policy, &client_id, &tuning),
        procs::core_ready,
        Duration::from_secs(60),
    )?;
    let procs = Arc::new(Mutex::new(Procs { core: core_proc, broker: broker_proc }));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let measured = rt.block_on(async {
        let mut feed = OrdersFeed::start(&ep, "towntwin-load-orders").await?;
        let mut publisher = Gen::connect(&ep, prof, &town).await?;
        let t0 = Instant::now() + Duration::from_millis(300);

        let (connection_count, connect_seconds) = (publisher.connections(), publisher.connect_time().as_secs_f64());
        eprintln!("load: {connection_count} connection(s) accepted in {connect_seconds:.2} s; sending ...");
        // Faults on their own thread, on schedule.
        let faults = {
            let (procs, faults, storm, rt) = (procs.clone(), prof.faults.clone(), publisher.storm_handle(), tokio::runtime::Handle::current());
            std::thread::Builder::new().name("faults".into()).spawn(move || inject(&procs, &faults, t0, &storm, &rt))?
        };
        // Samples of progress and resources.
        let stop_sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (procs, stop, db, counters) = (procs.clone(), stop_sampling.clone(), db.clone(), publisher.counters().clone());
            std::thread::Builder::new().name("sampler".into()).spawn(move || sample(&procs, &db, t0, &stop, &counters))?
        };

        let mut lag = Recorder::new();
        let give_up = secs(30.0f64.max(prof.slo.generator_lag_p99_ms / 1000.0 * 20.0));
        let sending = drive(&offsets, t0, &mut ToBroker { publisher: &mut publisher, msgs: &msgs }, &mut lag, give_up).await;
        let sent_until = t0.elapsed().as_secs_f64();
        let sent = if sending.is_ok() { msgs.len() } else { publisher.published() as usize };

        // Drain: until the core's watermark passes the last clock tick sent, or the limit.
        let mut heard = Vec::new();
        let mut watermark = i64::MIN;
        let deadline = tokio::time::Instant::now() + secs(prof.limits.drain_seconds);
        let drain_start = Instant::now();
        let want = if sending.is_ok() { last_tick } else { None };
        let mut drained = None;
        loop {
            if want.is_some_and(|t| watermark >= t) {
                drained = Some(drain_start.elapsed().as_secs_f64());
                break;
            }
            match tokio::time::timeout_at(deadline, next_heard(&mut feed)).await {
                Ok(Some(Heard::Watermark(w))) => watermark = watermark.max(w),
                Ok(Some(h)) => heard.push(h),
                Ok(None) | Err(_) => break,
            }
        }
        // Notices published with the last batch, and any after it.
        let quiet = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(h)) = tokio::time::timeout_at(quiet, next_heard(&mut feed)).await {
            if !matches!(h, Heard::Watermark(_)) {
                heard.push(h);
            }
        }
        let acked = publisher.counters().pubacks();
        let _ = publisher.flush(Duration::from_secs(2)).await;
        let churn = publisher.counters().churn();
        publisher.close().await;
        feed.close().await;
        stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
        let faults = faults.join().map_err(|_| anyhow!("the fault thread panicked"))?;
        let samples = sampler.join().map_err(|_| anyhow!("the sampler thread panicked"))?;
        Ok::<_, anyhow::Error>(Measured {
            sending,
            sent,
            sent_until,
            lag,
            heard,
            drained,
            acked,
            churn,
            faults,
            samples,
            t0,
            connection_count,
            connect_seconds,
        })
    })?;
    // The core stops cleanly (it prints its counters), then the broker.
    let (core_stopped, lines, starts) = {
        let mut p = procs.lock().map_err(|_| anyhow!("the process table was poisoned"))?;
        let ok = p.core.stop(Duration::from_secs(20));
        if let Some(b) = p.broker.as_mut() {
            b.stop(Duration::from_secs(5));
        }
        let lines = p.core.lines.lock().map(|l| l.clone()).unwrap_or_default();
        (ok, lines, p.core.starts)
    };
    if !core_stopped {
        tracing::warn!("the core did not stop cleanly at the end of the load");
    }
    let summary = judge(loaded, &ep, out, &db, &msgs, &offsets, &keys, &by_id, &reference, measured, procs::core_stop_counts(&lines), starts, &core_flags)?;
    report::write(out, &summary, loaded)?;
    Ok(summary)
}

/// What the run measured, before it is judged.
struct Measured {
    sending: Result<()>,
    sent: usize,
    sent_until: f64,
    lag: Recorder,
    heard: Vec<Heard>,
    drained: Option<f64>,
    acked: u64,
    churn: crate::mqtt::Churn,
    faults: Vec<FaultRun>,
    samples: Vec<Sample>,
    t0: Instant,
    connection_count: usize,
    connect_seconds: f64,
}

fn inject(procs: &Mutex<Procs>, faults: &[Fault], t0: Instant, storm: &crate::mqtt::Storm, rt: &tokio::runtime::Handle) -> Vec<FaultRun> {
    let mut order: Vec<&Fault> = faults.iter().collect();
    order.sort_by(|a, b| a.at().total_cmp(&b.at()));
    let mut runs = Vec::new();
    for f in order {
        let due = t0 + secs(f.at());
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            // The fault's own schedule.
            std::thread::sleep(d);
        }
        let started = t0.elapsed().as_secs_f64();
        let result = (|| -> Result<()> {
            match f {
                Fault::KillCore { down, .. } => {
                    procs.lock().map_err(|_| anyhow!("poisoned"))?.core.kill()?;
                    // Down for the fault's length.
                    std::thread::sleep(secs(*down));
                    procs.lock().map_err(|_| anyhow!("poisoned"))?.core.restart(Duration::from_secs(60))
                }
                Fault::StallCore { seconds, .. } => {
                    procs.lock().map_err(|_| anyhow!("poisoned"))?.core.signal(procs::Signal::SIGSTOP)?;
                    // Frozen for the fault's length.
                    std::thread::sleep(secs(*seconds));
                    procs.lock().map_err(|_| anyhow!("poisoned"))?.core.signal(procs::Signal::SIGCONT)
                }
                Fault::ReconnectStorm { within, .. } => {
                    let drops = crate::mqtt::Counters::get(&storm.counters().drops);
                    storm.start(secs(*within));
                    let limit = secs(within + 60.0);
                    if !rt.block_on(storm.wait_reconnected(drops, limit)) {
                        anyhow::bail!(
                            "{} of {} connections were up {limit:?} after the storm began",
                            crate::mqtt::Counters::get(&storm.counters().live),
                            storm.total()
                        );
                    }
                    Ok(())
                }
                Fault::RestartBroker { down, .. } => {
                    let mut p = procs.lock().map_err(|_| anyhow!("poisoned"))?;
                    p.broker.as_mut().ok_or_else(|| anyhow!("no broker started by this run"))?.kill()?;
                    drop(p);
                    // Down for the fault's length.
                    std::thread::sleep(secs(*down));
                    let mut p = procs.lock().map_err(|_| anyhow!("poisoned"))?;
                    p.broker.as_mut().ok_or_else(|| anyhow!("no broker"))?.restart(Duration::from_secs(30))
                }
            }
        })();
        let ended = t0.elapsed().as_secs_f64();
        if let Err(e) = &result {
            tracing::error!("fault {} at {started:.1} s: {e:#}", f.name());
        }
        runs.push(FaultRun {
            fault: format!("{} at {} s for {} s", f.name(), f.at(), f.length()),
            started,
            ended,
            recovery_seconds: None,
            error: result.err().map(|e| format!("{e:#}")),
        });
    }
    runs
}

fn sample(procs: &Mutex<Procs>, db: &std::path::Path, t0: Instant, stop: &std::sync::atomic::AtomicBool, counters: &crate::mqtt::Counters) -> Vec<Sample> {
    let mut conn = None;
    let mut out = Vec::new();
    // CPU is the change in CPU seconds over the wall time between two readings, measured on its own clock:
    // the samples' `t` stays 0 until the load starts (t0 is a moment ahead), and a difference of two such
    // zeros made a 10-core generator out of 10 ms of CPU.
    let mut last: HashMap<u32, (Instant, Usage)> = HashMap::new();
    let me = std::process::id();
    let mut accepted = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = t0.elapsed().as_secs_f64();
        let (core, broker) = match procs.lock() {
            Ok(p) => (p.core.pid(), p.broker.as_ref().map(Proc::pid)),
            Err(_) => break,
        };
        let mut at = |pid: u32| -> Option<UsageAt> {
            let (u, now) = (procs::usage(pid)?, Instant::now());
            let prev = last.insert(pid, (now, u));
            let cpu = prev.map_or(0.0, |(pt, pu)| ((u.cpu_seconds - pu.cpu_seconds) / now.duration_since(pt).as_secs_f64().max(0.05)).max(0.0));
            Some(UsageAt { cpu, rss_mb: u.rss_mb })
        };
        let (c, b, g) = (at(core), broker.and_then(&mut at), at(me));
        accepted = accepted_in(db, &mut conn).unwrap_or(accepted).max(accepted);
        if t >= 0.0 {
            out.push(Sample { t, accepted, connections: crate::mqtt::Counters::get(&counters.live), core: c, broker: b, generator: g });
        }
        // The sampling period.
        std::thread::sleep(Duration::from_millis(200));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn judge(
    loaded: &Loaded,
    ep: &Endpoint,
    out: &std::path::Path,
    db: &std::path::Path,
    msgs: &[Message],
    offsets: &[f64],
    keys: &[String],
    by_id: &HashMap<String, usize>,
    reference: &Reference,
    m: Measured,
    stop_counts: Option<(u64, u64)>,
    core_starts: u32,
    core_flags: &[String],
) -> Result<Summary> {
    let prof = &loaded.profile;
    let store = Reader::open(db).with_context(|| format!("cannot read the core's store {}", db.display()))?;
    let logged = store.event_ids()?;
    let made: Vec<(u64, account::OrderKey)> = store.orders()?.into_iter().map(|o| (o.id, (o.rule, o.key, o.created_at))).collect();
    let refused = store.rejects()?;
    let sent: Vec<account::Sent> = msgs[..m.sent].iter().zip(keys).map(|(msg, k)| account::Sent { key: k.clone(), qos: msg.qos }).collect();
    let expected: HashSet<String> = keys[..m.sent].iter().filter(|k| reference.accepted.contains(*k)).cloned().collect();
    let events = account::events(&sent, &expected, &logged);

    // Latency from each creation's cause's intended send to the notice's arrival.
    let mut hist = Recorder::new();
    let mut per_second: Vec<Recorder> = Vec::new();
    let mut latency_by_order = HashMap::new();
    for h in &m.heard {
        if let Heard::Created { order, cause, at } = h
            && let Some(&i) = by_id.get(cause)
        {
            let intended = m.t0 + secs(offsets[i]);
            let us = at.saturating_duration_since(intended).as_micros().max(1) as i64;
            hist.record(us);
            latency_by_order.entry(*order).or_insert(us as f64 / 1000.0);
            let s = at.saturating_duration_since(m.t0).as_secs() as usize;
            if per_second.len() <= s {
                per_second.resize_with(s + 1, Recorder::new);
            }
            per_second[s].record(us);
        }
    }
    // Orders are expected from the events sent (a cut-short run expects less).
    let cut = msgs.get(m.sent.saturating_sub(1)).map_or(i64::MIN, |x| x.time);
    let expected_orders: Vec<account::OrderKey> = reference.orders.iter().filter(|k| k.2 <= cut).cloned().collect();
    let orders = account::orders(&expected_orders, &made, &latency_by_order, prof.slo.late_ms);
    let latency = Millis::of(&hist);
    let lag = Millis::of(&m.lag);

    // Recovery: from a fault's start until the core's log holds everything due a second earlier that it
    // will ever hold.
    let logged_set: HashSet<&str> = logged.iter().map(String::as_str).collect();
    let mut due_logged: Vec<f64> = offsets[..m.sent].iter().zip(keys).filter(|(_, k)| logged_set.contains(k.as_str())).map(|(w, _)| *w).collect();
    due_logged.sort_by(f64::total_cmp);
    let caught_up = |s: &Sample| {
        let due = due_logged.partition_point(|&w| w <= s.t - 1.0) as u64;
        s.accepted >= due
    };
    let mut faults = m.faults;
    for f in &mut faults {
        f.recovery_seconds = m.samples.iter().filter(|s| s.t >= f.ended).find(|s| caught_up(s)).map(|s| s.t - f.started);
    }

    let valid_lag = lag.p99 <= prof.slo.generator_lag_p99_ms;
    let invalid_reason = match (&m.sending, valid_lag) {
        (Err(e), _) => Some(format!("{e:#}")),
        (Ok(()), false) => Some(format!(
            "the generator's lag p99 was {:.1} ms, over the {} ms it may be: the offered load was not applied",
            lag.p99, prof.slo.generator_lag_p99_ms
        )),
        _ => None,
    };
    let slo = &prof.slo;
    let mut checks = Vec::new();
    let mut check = |what: &str, target: String, measured: String, pass: bool| checks.push(Check { what: what.into(), target, measured, pass });
    check("work-order latency p99", format!("<= {} ms", slo.p99_ms), format!("{:.1} ms", latency.p99), latency.count > 0 && latency.p99 <= slo.p99_ms);
    if let Some(t) = slo.p999_ms {
        check("work-order latency p99.9", format!("<= {t} ms"), format!("{:.1} ms", latency.p999), latency.count > 0 && latency.p999 <= t);
    }
    let lost = events.lost_qos1 + orders.lost;
    check("lost (QoS 1 events + work orders)", format!("<= {}", slo.lost), format!("{} + {}", events.lost_qos1, orders.lost), lost <= slo.lost);
    let duplicated = events.duplicated + orders.duplicated;
    check(
        "duplicated (events + work orders)",
        format!("<= {}", slo.duplicated),
        format!("{} + {}", events.duplicated, orders.duplicated),
        duplicated <= slo.duplicated,
    );
    if let Some(t) = slo.lost_qos0 {
        check("lost QoS 0 events", format!("<= {t}"), events.lost_qos0.to_string(), events.lost_qos0 <= t);
    }
    if let Some(t) = slo.late {
        check(&format!("work orders later than {} ms", slo.late_ms), format!("<= {t}"), orders.late.to_string(), orders.late <= t);
    }
    if let Some(t) = slo.recovery_s {
        for f in &faults {
            let ok = f.error.is_none() && f.recovery_seconds.is_some_and(|r| r <= t);
            check(&format!("recovery after {}", f.fault), format!("<= {t} s"), f.recovery_seconds.map_or("never".into(), |r| format!("{r:.1} s")), ok);
        }
    }
    check("drained", format!("within {} s", prof.limits.drain_seconds), m.drained.map_or("no".into(), |d| format!("{d:.1} s")), m.drained.is_some());
    let slo_pass = checks.iter().all(|c| c.pass);
    let max_of = |f: &dyn Fn(&Sample) -> Option<f64>| m.samples.iter().filter_map(f).fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
    let load_secs = loaded.seconds();
    let first_accept = m.samples.first().map_or(0, |s| s.accepted);
    let accepted_by_end = m.samples.iter().rev().find(|s| s.t <= m.sent_until).map_or(0, |s| s.accepted);
    let summary = Summary {
        profile: prof.name.clone(),
        broker: if ep.embedded { format!("{} (embedded rumqttd, own process)", ep) } else { ep.to_string() },
        connections: prof.connections,
        connection_count: m.connection_count,
        connect_seconds: m.connect_seconds,
        seconds: load_secs,
        valid: invalid_reason.is_none(),
        invalid_reason,
        sent: m.sent as u64,
        broker_acknowledged: m.acked,
        publishers: m.churn,
        core_refused: refused,
        accepted: events.accepted,
        expected_work_orders: orders.expected,
        work_orders: orders.made,
        lost,
        lost_qos0: events.lost_qos0,
        duplicated,
        late: orders.late,
        redelivered_dropped: stop_counts.map(|c| c.1),
        latency_ms: latency,
        generator_lag_ms: lag,
        offered_per_second: msgs.len() as f64 / load_secs.max(1e-9),
        sent_per_second: m.sent as f64 / m.sent_until.max(1e-9),
        core_per_second: accepted_by_end.saturating_sub(first_accept) as f64 / m.sent_until.max(1e-9),
        drain_seconds: m.drained,
        faults,
        core_starts,
        core_flags: core_flags.to_vec(),
        core_cpu_max: max_of(&|s| s.core.map(|u| u.cpu)).unwrap_or(0.0),
        core_rss_max_mb: max_of(&|s| s.core.map(|u| u.rss_mb)).unwrap_or(0.0),
        broker_cpu_max: max_of(&|s| s.broker.map(|u| u.cpu)),
        broker_rss_max_mb: max_of(&|s| s.broker.map(|u| u.rss_mb)),
        generator_cpu_max: max_of(&|s| s.generator.map(|u| u.cpu)).unwrap_or(0.0),
        checks,
        slo_pass,
        events,
        orders,
        out_dir: out.display().to_string(),
    };
    report::write_series(out, &hist, &per_second, &m.samples, &summary)?;
    Ok(summary)
}
