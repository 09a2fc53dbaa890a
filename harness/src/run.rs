//! `towntwin run`: loads a scenario and its town, starts (or reaches) a broker, runs the twin and
//! publishes its traffic, then writes and prints the run's summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use towntwin_core::event::EventType;
use towntwin_core::town::Town;
use towntwin_sim::world::Incident;
use towntwin_sim::{Message, Scenario, Stats, Twin, TwinOptions};

use crate::broker::{self, Endpoint};
use crate::mqtt::{Counters, Mode, Observer, Publisher};
use crate::{DataFault, ceiling, detect};
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use std::sync::{Arc, Mutex};
use towntwin_core::ingest::{self, IngestConfig, IngestCounters};
use towntwin_core::orders::Notice;
use towntwin_core::service::{Core, CoreError, CoreStats};
use towntwin_sim::plugins::responders::{Act, ResponderStats};

use crate::responders::{HttpActor, OrdersWatch, ResponderReport};

/// How fast simulated time runs against the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the machine goes.
    Max,
    /// A multiple of real time: 1 for drills, 60, 3600, ...
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(Speed::Times(x)),
            _ => Err(format!("`{s}` is not a speed: expected `max` or a positive multiple of real time such as 1, 60 or 3600")),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Times(x) => write!(f, "{x}x"),
        }
    }
}

/// Which broker a run talks to.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerChoice {
    /// Start rumqttd in this process.
    Embedded,
    /// An external broker, `mqtt://host:port`.
    External(String),
    /// No network at all: generate, encode and digest only.
    None,
}

impl BrokerChoice {
    /// Where to connect: the external broker once it answers, the embedded one once started, or none.
    pub fn endpoint(&self) -> Result<Option<Endpoint>> {
        Ok(match self {
            BrokerChoice::Embedded => Some(broker::start_embedded()?),
            BrokerChoice::External(url) => Some(broker::reach(url)?),
            BrokerChoice::None => None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: PathBuf,
    pub days: Option<u32>,
    pub seed: Option<u64>,
    pub speed: Speed,
    pub broker: BrokerChoice,
    pub connections: Mode,
    pub out: Option<PathBuf>,
    pub threads: Option<usize>,
    /// Subscribe to `town/#` and count what the broker delivers.
    pub observe: bool,
    /// Check every delivered payload is a valid CloudEvent (costs CPU on the observer).
    pub validate: bool,
    /// Measure the broker's raw ceiling for messages of the run's mean size, in the same run.
    pub ceiling: bool,
    pub progress: bool,
    /// Run the rules and work-order core on the twin's stream: over MQTT when there is a broker, in-process
    /// without one (or with `in_process`).
    pub core: bool,
    /// Feed the core the twin's messages directly, even when a broker carries them.
    pub in_process: bool,
    pub rules: PathBuf,
    pub policy: PathBuf,
    /// The core's SQLite file (default: `core.db` in the results folder).
    pub db: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            scenario: default_scenario(),
            days: None,
            seed: None,
            speed: Speed::Max,
            broker: BrokerChoice::Embedded,
            connections: Mode::One,
            out: None,
            threads: None,
            observe: true,
            validate: false,
            ceiling: false,
            progress: true,
            core: true,
            in_process: false,
            rules: asset("assets/rules.ron"),
            policy: asset("scenarios/policies/standard.ron"),
            db: None,
        }
    }
}

/// A file of the source tree: under the current folder, or else where this binary was built from.
pub fn asset(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    if built.exists() { built } else { here }
}

/// `scenarios/baseline.ron` under the current folder, or else in the source tree this binary was built from.
pub fn default_scenario() -> PathBuf {
    asset("scenarios/baseline.ron")
}

/// What the broker side saw.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkReport {
    pub broker: String,
    pub connections_mode: Mode,
    pub connections: usize,
    pub connect_seconds: f64,
    pub published: u64,
    pub published_qos1: u64,
    pub qos1_acknowledged: u64,
    /// Delivered to the `town/#` observer (None when not observing).
    pub observed: Option<u64>,
    pub observed_invalid: Option<u64>,
    pub publish_seconds: f64,
    pub events_per_second: f64,
}

/// The run's summary, written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run: String,
    pub scenario: String,
    pub seed: u64,
    pub start_date: String,
    pub days: u32,
    pub speed: String,
    pub threads: Option<usize>,
    pub events_total: u64,
    pub bytes_total: u64,
    pub events_by_type: BTreeMap<String, u64>,
    pub events_by_hour: BTreeMap<String, [u64; 24]>,
    pub stream_digest: String,
    pub ground_truth_incidents: u64,
    pub ground_truth_by_kind: BTreeMap<String, u64>,
    pub wall_seconds: f64,
    /// Seconds spent in the twin itself (stepping, encoding, digest), without waiting on the network.
    pub twin_seconds: f64,
    pub network: Option<NetworkReport>,
    pub ceiling: Option<ceiling::Ceiling>,
    /// How the core got the stream (`mqtt`, `in-process`); None when run without it.
    pub core_mode: Option<String>,
    pub work_orders_total: u64,
    pub work_orders_by_rule: BTreeMap<String, u64>,
    pub work_orders_by_loop: BTreeMap<String, u64>,
    pub work_orders_by_state: BTreeMap<String, u64>,
    /// Hours from creation to closing, over the orders closed in the run.
    pub close_hours: Option<Closure>,
    pub responders: Option<ResponderReport>,
    pub detection: BTreeMap<String, detect::RuleScore>,
    pub core_stats: Option<CoreStats>,
    pub out_dir: String,
}

/// How long closed orders took, creation to closing.
#[derive(Debug, Clone, Serialize)]
pub struct Closure {
    pub closed: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

fn closure(orders: &[towntwin_core::orders::Order]) -> Option<Closure> {
    let mut h: Vec<f64> = orders
        .iter()
        .filter(|o| o.state == towntwin_core::orders::State::Closed)
        .map(|o| (o.updated_at - o.created_at) as f64 / towntwin_core::time::HOUR as f64)
        .collect();
    if h.is_empty() {
        return None;
    }
    h.sort_by(f64::total_cmp);
    let q = |p: f64| h[((h.len() - 1) as f64 * p).round() as usize];
    Some(Closure { closed: h.len() as u64, mean: h.iter().sum::<f64>() / h.len() as f64, p50: q(0.5), p90: q(0.9), max: h[h.len() - 1] })
}

/// What the twin thread hands back when it ends.
struct TwinReport {
    stats: Stats,
    digest: String,
    incidents: Vec<Incident>,
    busy: Duration,
    end: i64,
    responders: ResponderStats,
}

/// The core fed in-process with the twin's messages, tick by tick.
pub struct InProcessCore {
    pub core: Core,
    /// Responders' actions the core applied, and refused.
    pub applied: u64,
    pub refused: u64,
}

impl InProcessCore {
    pub fn open(opts: &RunOptions, town: &Town, out_dir: &Path) -> Result<InProcessCore> {
        let rules = RuleSet::load(&opts.rules).map_err(DataFault)?;
        let policy = Policy::load(&opts.policy).map_err(DataFault)?;
        let db = opts.db.clone().unwrap_or_else(|| out_dir.join("core.db"));
        let core = Core::open(rules, policy, town, Some(&db)).with_context(|| format!("cannot open the core's store {}", db.display()))?;
        Ok(InProcessCore { core, applied: 0, refused: 0 })
    }

    /// One tick: the responders' actions first (the core's event time is the tick's start), then the
    /// tick's events; returns the notices they caused, as the networked core would publish them.
    pub fn tick(&mut self, acts: Vec<Act>, msgs: &[Message]) -> Result<Vec<Notice>> {
        let mut transitions = Vec::new();
        for a in acts {
            match self.core.act(a.order, &a.principal, a.action) {
                Ok((_, t)) => {
                    self.applied += 1;
                    transitions.extend(t);
                }
                Err(CoreError::Illegal(_)) => self.refused += 1,
                Err(e) => return Err(e.into()),
            }
        }
        let payloads: Vec<&[u8]> = msgs.iter().map(|m| &m.payload[..]).collect();
        transitions.extend(self.core.ingest(&payloads)?.transitions);
        Ok(transitions.iter().map(|t| self.core.orders.notice(t)).collect())
    }
}

/// Loads the scenario (applying `--days`/`--seed`) and its town; data errors become [`DataFault`].
pub fn load(opts: &RunOptions) -> Result<(Scenario, i64, Town)> {
    let loaded = Scenario::load(&opts.scenario).map_err(DataFault)?;
    let mut scenario = loaded.scenario;
    if let Some(d) = opts.days {
        scenario.days = d;
    }
    if let Some(s) = opts.seed {
        scenario.seed = s;
    }
    scenario.validate(&loaded.file).map_err(DataFault)?;
    let town = Town::load(&loaded.town_file).map_err(DataFault)?;
    Ok((scenario, loaded.start, town))
}

/// Runs a scenario end to end and writes its results.
pub fn run(opts: &RunOptions) -> Result<Summary> {
    let (scenario, start, town) = load(opts)?;
    // The broker before the results folder: a run that cannot start leaves nothing behind.
    let ep = opts.broker.endpoint()?;
    let out_dir = opts.out.clone().unwrap_or_else(|| stamped_dir(&format!("{}-{}", scenario.name, scenario.seed)));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create the results folder {}", out_dir.display()))?;
    let mut core = if opts.core { Some(InProcessCore::open(opts, &town, &out_dir)?) } else { None };
    let mut mqtt_core = false;
    let wall = Instant::now();
    let total_ticks = scenario.days as u64 * 1440;
    let bar = progress_bar(opts.progress, total_ticks);

    let (report, network, ceiling) = match ep {
        None => {
            let mut failed = None;
            let report = twin_loop(&scenario, start, town, opts.threads, &bar, |msgs, acts| match core.as_mut().map(|c| c.tick(acts, &msgs)) {
                Some(Err(e)) => {
                    failed = Some(e);
                    None
                }
                Some(Ok(notices)) => Some(notices),
                None => Some(Vec::new()),
            });
            if let Some(e) = failed {
                return Err(e.context("the core failed"));
            }
            (report, None, None)
        }
        Some(ep) => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            // Over many publisher connections a broker keeps each connection's order but not the order
            // between them: the clock tick closing a minute can reach the core before that minute's events
            // from other connections, so the lockstep with the responders (and the work orders) would depend
            // on timing. With `estate`/`device` the core is fed in-process, in the twin's order.
            let over_mqtt = core.is_some() && !opts.in_process && opts.connections == Mode::One;
            if core.is_some() && !opts.in_process && !over_mqtt {
                tracing::warn!(
                    "the core is fed in-process with --connections {:?}: across many connections the broker does not keep the twin's order",
                    opts.connections
                );
            }
            let shared = if over_mqtt { core.take().map(|c| Arc::new(Mutex::new(c.core))) } else { None };
            let (report, net, ceiling, acted) = rt.block_on(networked(opts, &scenario, start, town, &ep, &bar, core.as_mut(), shared.clone()))?;
            // The API's server task may still hold the core for a moment after its graceful shutdown.
            rt.shutdown_timeout(Duration::from_secs(5));
            if let Some(arc) = shared {
                let c = Arc::try_unwrap(arc).map_err(|_| anyhow::anyhow!("the core service did not stop"))?;
                let (applied, refused) = acted.unwrap_or_default();
                core = Some(InProcessCore { core: c.into_inner().unwrap_or_else(|e| e.into_inner()), applied, refused });
                mqtt_core = true;
            }
            (report, net, ceiling)
        }
    };
    bar.finish_and_clear();

    let mode = if mqtt_core { "mqtt" } else { "in-process" };
    let summary = summarise(opts, &scenario, &out_dir, &report, network, ceiling, core.as_ref().map(|c| (c, mode)), wall.elapsed());
    write_results(&out_dir, &summary, &report.incidents)?;
    Ok(summary)
}

/// `results/<name>-<unix time>`: the default results folder of a run or a benchmark.
pub fn stamped_dir(name: &str) -> PathBuf {
    // The wall clock only names the folder; it decides nothing in the run.
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("results").join(format!("{name}-{stamp}"))
}

fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} simulated {msg} [{bar:30}] {percent}% {elapsed_precise} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Steps the twin to the end on this thread, passing each tick's messages and responders' actions to
/// `sink`, which returns the notices for the responders' next tick (`None` stops the run).
fn twin_loop(
    scenario: &Scenario,
    start: i64,
    town: Town,
    threads: Option<usize>,
    bar: &ProgressBar,
    mut sink: impl FnMut(Vec<Message>, Vec<Act>) -> Option<Vec<Notice>>,
) -> TwinReport {
    let mut twin = Twin::new(scenario, start, town, TwinOptions { threads, ..TwinOptions::default() });
    let mut busy = Duration::ZERO;
    loop {
        let t0 = Instant::now();
        let msgs = twin.step();
        busy += t0.elapsed();
        let (done, total) = twin.progress();
        if done % 60 == 0 || done == total {
            bar.set_position(done);
            bar.set_message(towntwin_core::time::rfc3339(twin.clock().now)[..16].replace('T', " "));
        }
        let acts = twin.take_acts();
        match sink(msgs, acts) {
            Some(notices) => twin.deliver(notices),
            None => break,
        }
        if twin.finished() {
            break;
        }
    }
    let end = twin.clock().now + towntwin_sim::world::Clock::TICK;
    TwinReport {
        stats: twin.stats().clone(),
        digest: twin.digest(),
        incidents: twin.truth().incidents.clone(),
        busy,
        end,
        responders: twin.responder_stats().clone(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn networked(
    opts: &RunOptions,
    scenario: &Scenario,
    start: i64,
    town: Town,
    ep: &Endpoint,
    bar: &ProgressBar,
    mut core: Option<&mut InProcessCore>,
    service: Option<Arc<Mutex<Core>>>,
) -> Result<(TwinReport, Option<NetworkReport>, Option<ceiling::Ceiling>, Option<(u64, u64)>)> {
    // The core subscribes before the twin publishes, so it misses nothing.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let counters = Arc::new(IngestCounters::default());
    let mut actor = None;
    let ingest = match service.clone() {
        Some(c) => {
            let cfg = IngestConfig { client_id: format!("towntwin-core-{}", std::process::id()), ..IngestConfig::new(&ep.host, ep.port) };
            let link = ingest::Link::new(&cfg);
            // The core's HTTP API, for the responders (and anyone else) while the run lasts.
            let api = towntwin_core::api::Api::new(c.clone(), &town).with_orders_out(link.orders_out());
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("cannot open a port for the core's HTTP API")?;
            let addr = listener.local_addr()?;
            tracing::info!("core HTTP API on http://{addr}");
            let mut stop_api = stop_rx.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, api.router()).with_graceful_shutdown(async move { while stop_api.changed().await.is_ok() && !*stop_api.borrow() {} }).await;
            });
            actor = Some(HttpActor::new(addr)?);
            Some(tokio::spawn(ingest::serve_on(link, c, cfg, counters.clone(), stop_rx)))
        }
        None => None,
    };
    if ingest.is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Lockstep with the core when responders work its orders: each minute waits for the last one's notices.
    let lockstep = scenario.responders.enabled && (core.is_some() || service.is_some());
    let mut watch = if lockstep && service.is_some() { Some(OrdersWatch::start(ep).await?) } else { None };
    let observer = if opts.observe { Some(Observer::start(ep, "town/#", opts.validate).await?) } else { None };
    let mut publisher = Publisher::connect(ep, opts.connections, &town, Duration::from_secs(120)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<Message>, Vec<Act>)>(if lockstep { 1 } else { 256 });
    let (reply_tx, reply_rx) = std::sync::mpsc::channel::<Vec<Notice>>();
    let (scenario_c, threads, bar_c) = (scenario.clone(), opts.threads, bar.clone());
    let twin = std::thread::Builder::new().name("twin".into()).spawn(move || {
        twin_loop(&scenario_c, start, town, threads, &bar_c, |msgs, acts| {
            tx.blocking_send((msgs, acts)).ok()?;
            if lockstep { reply_rx.recv().ok() } else { Some(Vec::new()) }
        })
    })?;

    let publish_started = Instant::now();
    let pace = match opts.speed {
        Speed::Max => None,
        Speed::Times(x) => Some((tokio::time::Instant::now(), start, x)),
    };
    while let Some((batch, acts)) = rx.recv().await {
        let mut notices = Vec::new();
        if let Some(c) = core.as_deref_mut() {
            notices = c.tick(acts, &batch)?;
        } else if let Some(a) = actor.as_mut() {
            a.apply(acts).await?;
        }
        let closing = batch.iter().rev().find(|m| m.ty == EventType::ClockTick).map(|m| m.time);
        for m in batch {
            if let Some((wall0, sim0, x)) = pace {
                let due = wall0 + Duration::from_secs_f64(((m.time - sim0).max(0) as f64 / 1000.0) / x);
                tokio::time::sleep_until(due).await;
            }
            publisher.publish(m).await?;
        }
        if lockstep {
            if let (Some(w), Some(t)) = (watch.as_mut(), closing) {
                notices = w.until(t, Duration::from_secs(120)).await?;
            }
            if reply_tx.send(notices).is_err() {
                break;
            }
        }
    }
    drop(reply_tx);
    if let Some(w) = watch {
        w.close().await;
    }
    let report = twin.join().map_err(|_| anyhow::anyhow!("the twin thread panicked"))?;
    let all_acked = publisher.flush(Duration::from_secs(120)).await;
    let publish_seconds = publish_started.elapsed().as_secs_f64();
    let (observed, invalid) = match observer {
        Some(o) => {
            let got = o.wait_for(publisher.published, Duration::from_secs(3), Duration::from_secs(120)).await;
            let invalid = opts.validate.then(|| Counters::get(&o.counters.invalid));
            o.close().await;
            (Some(got), invalid)
        }
        None => (None, None),
    };
    if !all_acked {
        tracing::warn!("not every QoS 1 publish was acknowledged within 120 s");
    }
    if let Some(task) = ingest {
        // Wait until the core has taken every QoS 1 event (QoS 0 telemetry may be shed), then for quiet.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let mut last = u64::MAX;
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let got = counters.received.load(std::sync::atomic::Ordering::Relaxed);
            let done = got >= publisher.published;
            if done || tokio::time::Instant::now() > deadline {
                break;
            }
            if got != last {
                last = got;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() > Duration::from_secs(5) && got >= publisher.published_qos1 {
                break;
            } else if quiet_since.elapsed() > Duration::from_secs(30) {
                tracing::warn!("the core received {got} of {} messages and nothing more for 30 s", publisher.published);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("core ingest ended with: {e}"),
            Err(e) => tracing::warn!("core ingest task failed: {e}"),
        }
    }
    let net = NetworkReport {
        broker: ep.to_string(),
        connections_mode: opts.connections,
        connections: publisher.connections(),
        connect_seconds: publisher.connect_time.as_secs_f64(),
        published: publisher.published,
        published_qos1: publisher.published_qos1,
        qos1_acknowledged: Counters::get(&publisher.counters.pubacks),
        observed,
        observed_invalid: invalid,
        publish_seconds,
        events_per_second: publisher.published as f64 / publish_seconds.max(1e-9),
    };
    publisher.close().await;
    let ceiling = if opts.ceiling {
        let size = (report.stats.bytes / report.stats.total.max(1)) as usize;
        Some(ceiling::measure(ep, 200_000, size).await?)
    } else {
        None
    };
    let acted = actor.map(|a| (a.applied, a.refused));
    Ok((report, Some(net), ceiling, acted))
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    opts: &RunOptions,
    s: &Scenario,
    out: &Path,
    r: &TwinReport,
    network: Option<NetworkReport>,
    ceiling: Option<ceiling::Ceiling>,
    core: Option<(&InProcessCore, &str)>,
    wall: Duration,
) -> Summary {
    let mode = core.map(|c| c.1.to_string());
    let responders = core.filter(|_| s.responders.enabled).map(|(c, m)| ResponderReport {
        via: if m == "mqtt" { "http".into() } else { "in-process".into() },
        actions_applied: c.applied,
        actions_refused: c.refused,
        stats: r.responders.clone(),
    });
    let core = core.map(|c| &c.0.core);
    let orders: &[towntwin_core::orders::Order] = core.map_or(&[], |c| &c.orders.orders);
    let mut by_rule = BTreeMap::new();
    let mut by_loop = BTreeMap::new();
    let mut by_state = BTreeMap::new();
    for o in orders {
        *by_state.entry(o.state.as_str().to_string()).or_insert(0) += 1;
        *by_rule.entry(o.rule.clone()).or_insert(0) += 1;
        *by_loop.entry(format!("{:?}", o.level)).or_insert(0) += 1;
    }
    let mut by_kind = BTreeMap::new();
    for i in &r.incidents {
        *by_kind.entry(i.kind.to_string()).or_insert(0) += 1;
    }
    Summary {
        run: out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        scenario: s.name.clone(),
        seed: s.seed,
        start_date: s.start_date.clone(),
        days: s.days,
        speed: opts.speed.to_string(),
        threads: opts.threads,
        events_total: r.stats.total,
        bytes_total: r.stats.bytes,
        events_by_type: EventType::ALL.iter().map(|t| (t.as_str().to_string(), r.stats.by_type(*t))).collect(),
        events_by_hour: EventType::ALL.iter().map(|t| (t.as_str().to_string(), r.stats.by_type_hour[*t as usize])).collect(),
        stream_digest: r.digest.clone(),
        ground_truth_incidents: r.incidents.len() as u64,
        ground_truth_by_kind: by_kind,
        wall_seconds: wall.as_secs_f64(),
        twin_seconds: r.busy.as_secs_f64(),
        network,
        ceiling,
        core_mode: mode,
        work_orders_total: orders.len() as u64,
        work_orders_by_rule: by_rule,
        work_orders_by_loop: by_loop,
        work_orders_by_state: by_state,
        close_hours: closure(orders),
        responders,
        detection: if core.is_some() { detect::score(orders, &r.incidents, r.end) } else { BTreeMap::new() },
        core_stats: core.map(|c| c.stats.clone()),
        out_dir: out.display().to_string(),
    }
}

fn write_results(out: &Path, summary: &Summary, incidents: &[Incident]) -> Result<()> {
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(summary)?).with_context(|| format!("cannot write {}", path.display()))?;
    let path = out.join("ground_truth.jsonl");
    let mut text = String::with_capacity(incidents.len() * 160);
    for i in incidents {
        text.push_str(&serde_json::to_string(i)?);
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The summary as tables for a terminal.
pub fn render(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "towntwin run `{}`: scenario {}, seed {}, {} day(s) from {}, speed {}", s.run, s.scenario, s.seed, s.days, s.start_date, s.speed);
    let _ = writeln!(o, "\nEvents by type                  total   per day  qos");
    let days = s.days.max(1) as u64;
    for t in EventType::ALL {
        let n = s.events_by_type.get(t.as_str()).copied().unwrap_or(0);
        let _ = writeln!(o, "  {:<24} {:>12} {:>9} {:>4}", t.as_str(), n, n / days, t.qos());
    }
    let _ = writeln!(o, "  {:<24} {:>12} {:>9}", "all", s.events_total, s.events_total / days);
    let _ = writeln!(o, "\nEvents by local hour (all days)   all events   gate.pass");
    let gate = s.events_by_hour.get("gate.pass");
    let max_gate = gate.map_or(1, |g| *g.iter().max().unwrap_or(&1)).max(1);
    for h in 0..24 {
        let all: u64 = s.events_by_hour.values().map(|v| v[h]).sum();
        let g = gate.map_or(0, |v| v[h]);
        let bar = "#".repeat((g * 30 / max_gate) as usize);
        let _ = writeln!(o, "  {h:02}:00 {all:>14} {g:>11}  {bar}");
    }
    let _ = writeln!(o, "\nGround-truth incidents            count");
    for (k, n) in &s.ground_truth_by_kind {
        let _ = writeln!(o, "  {k:<28} {n:>10}");
    }
    let _ = writeln!(o, "  {:<28} {:>10}", "all", s.ground_truth_incidents);
    let _ = writeln!(o, "\nStream digest (BLAKE3): {}", s.stream_digest);
    let _ = writeln!(o, "Twin time {:.2} s, wall time {:.2} s", s.twin_seconds, s.wall_seconds);
    if let Some(n) = &s.network {
        let _ = writeln!(
            o,
            "Broker {} over {} connection(s) ({:?} mode, connected in {:.2} s): published {}, QoS 1 acknowledged {}/{}, {:.0} events/s",
            n.broker, n.connections, n.connections_mode, n.connect_seconds, n.published, n.qos1_acknowledged, n.published_qos1, n.events_per_second
        );
        if let Some(obs) = n.observed {
            let _ = writeln!(o, "Observer on town/# received {obs} of {} ({} invalid)", n.published, n.observed_invalid.map_or("unchecked".into(), |x| x.to_string()));
        }
    }
    if s.core_mode.is_some() {
        let _ = writeln!(o, "\nWork orders by rule ({} in all, core {}; by loop: {:?})", s.work_orders_total, s.core_mode.as_deref().unwrap_or("-"), s.work_orders_by_loop);
        let _ = writeln!(o, "  {:<24} {:>7} {:>10} {:>9} {:>7} {:>12} {:>12}", "rule", "orders", "incidents", "detected", "recall", "false alarms", "delay p50 m");
        let mut rules: Vec<&String> = s.work_orders_by_rule.keys().chain(s.detection.keys()).collect();
        rules.sort();
        rules.dedup();
        for r in rules {
            let n = s.work_orders_by_rule.get(r).copied().unwrap_or(0);
            match s.detection.get(r) {
                Some(d) => {
                    let _ = writeln!(
                        o,
                        "  {:<24} {:>7} {:>10} {:>9} {:>7} {:>12} {:>12}",
                        r,
                        n,
                        d.incidents,
                        d.detected,
                        d.recall.map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
                        d.false_alarms,
                        d.delay_p50_min.map_or("-".into(), |x| format!("{x:.0}"))
                    );
                }
                None => {
                    let _ = writeln!(o, "  {r:<24} {n:>7}");
                }
            }
        }
        if !s.work_orders_by_state.is_empty() {
            let _ = writeln!(o, "Work orders by state at the end: {:?}", s.work_orders_by_state);
        }
        if let Some(c) = &s.close_hours {
            let _ = writeln!(o, "Closed {}: hours from creation to closing mean {:.1}, p50 {:.1}, p90 {:.1}, max {:.1}", c.closed, c.mean, c.p50, c.p90, c.max);
        }
        if let Some(r) = &s.responders {
            let _ = writeln!(o, "\nResponders (actions via {}: {} applied, {} refused by the core)", r.via, r.actions_applied, r.actions_refused);
            let _ = writeln!(o, "  {:<16} {:>10} {:>9} {:>9} {:>7} {:>10} {:>11} {:>10}", "crew", "dispatched", "accepted", "resolved", "failed", "withdrawn", "wait mean m", "max queue");
            for (name, c) in &r.stats.by_crew {
                if name == "dispatcher" {
                    continue;
                }
                let wait = if c.accepted > 0 { format!("{:.0}", c.wait_minutes as f64 / c.accepted as f64) } else { "-".into() };
                let _ = writeln!(o, "  {:<16} {:>10} {:>9} {:>9} {:>7} {:>10} {:>11} {:>10}", name, c.dispatched, c.accepted, c.resolved, c.failed, c.withdrawn, wait, c.max_queue);
            }
            if let Some(d) = r.stats.by_crew.get("dispatcher") {
                let _ = writeln!(o, "  dispatchers: {} verified and closed, {} reopened", d.verified, d.reopened);
            }
        }
        if let Some(cs) = &s.core_stats {
            let _ = writeln!(o, "Core: {} events accepted, {} duplicates, rejected {:?}", cs.accepted, cs.duplicates, cs.rejected);
        }
    }
    if let Some(c) = &s.ceiling {
        let _ = writeln!(o, "Broker raw ceiling, {} B QoS 0 messages, one publisher and one subscriber: {:.0} msg/s delivered", c.payload_bytes, c.delivered_per_second);
    }
    let _ = writeln!(o, "Results: {}/summary.json, ground_truth.jsonl", s.out_dir);
    o
}
