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
mod faults;
pub mod generator;
mod judge;
pub mod knee;
pub mod lean;
pub mod merge;
pub mod procs;
pub mod profile;
pub mod reference;
pub mod report;
mod send;
pub mod slice;
mod summary;

pub use self::send::{Sink, drive};
pub use self::summary::{Check, FaultRun, Millis, Sample, Summary, UsageAt};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use towntwin_core::event::EventType;
use towntwin_core::store::Reader;
use towntwin_sim::{Message, Twin, TwinOptions};

use crate::broker::Endpoint;
use crate::percentiles::Recorder;
use crate::setup::{CoreFiles, Setup};
use crate::transport::{self, OrdersFeed};
use crate::{DataFault, UsageFault};
use faults::{inject, sample};
use procs::Proc;
use profile::{Fault, Loaded, secs};
use reference::{Ids, Traffic};
use send::{Gen, ToBroker};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub profile: PathBuf,
    /// `mqtt://host:port` on loopback; `None`: start the embedded broker as a child process.
    pub broker: Option<String>,
    pub out: Option<PathBuf>,
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
            // A cluster's nodes (`mqtt://a,b,c`), each of them on loopback.
            for ep in crate::broker::parse_nodes(url).map_err(|e| UsageFault(format!("--broker: {e:#}")))? {
                let loopback =
                    std::net::ToSocketAddrs::to_socket_addrs(&(ep.host.as_str(), ep.port)).map(|mut a| a.all(|a| a.ip().is_loopback())).unwrap_or(false);
                if !loopback {
                    return Err(UsageFault(format!("--broker {url}: a load test targets loopback only (127.0.0.1, localhost)")).into());
                }
            }
            Ok(crate::broker::reach(url).map_err(|e| UsageFault(format!("--broker: {e:#}")))?)
        }
        None => Ok(Endpoint { host: "127.0.0.1".into(), port: 0, embedded: true, credentials: None, others: Vec::new() }),
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

/// A profile's traffic, scheduled before anything is sent: the same for the same profile and binary on any
/// machine (so that generators on several machines agree on it, and a merge regenerates it).
pub(crate) struct Prepared {
    pub town: towntwin_core::town::Town,
    pub town_file: PathBuf,
    pub rules: towntwin_core::rules::RuleSet,
    pub policy: towntwin_core::orders::Policy,
    pub msgs: Vec<Message>,
    /// Each message's intended send instant, seconds from the load's start.
    pub offsets: Vec<f64>,
    /// Each message's key in the core's event log (`source id`).
    pub keys: Vec<String>,
    pub by_id: HashMap<String, usize>,
    /// The event time of the last clock tick (the core's watermark passing it: everything taken).
    pub last_tick: Option<i64>,
}

impl Prepared {
    /// BLAKE3 over every event in schedule order (topic, QoS, key, intended instant) and the town's devices
    /// in the order that numbers them for the generators' slices: what generators and their merge compare.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for ((m, k), w) in self.msgs.iter().zip(&self.keys).zip(&self.offsets) {
            h.update(&m.topic);
            h.update(&[m.qos]);
            h.update(k.as_bytes());
            h.update(&w.to_le_bytes());
        }
        for d in self.town.estates.iter().flat_map(|e| &e.devices).chain(self.town.roads.iter().flat_map(|r| &r.devices)) {
            h.update(d.id.as_bytes());
            h.update(b"\n");
        }
        h.finalize().to_hex().to_string()
    }

    /// BLAKE3 over the rules' and the policy's files: the reference core's inputs, which the merge must
    /// share with the core the generators ran against.
    pub fn inputs_digest(loaded: &Loaded) -> Result<String> {
        let mut h = blake3::Hasher::new();
        for f in [&loaded.rules, &loaded.policy] {
            h.update(&std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?);
            h.update(b"\0");
        }
        Ok(h.finalize().to_hex().to_string())
    }
}

/// Loads the profile's scenario, town, rules and policy and generates and schedules its traffic.
pub(crate) fn prepare(loaded: &Loaded) -> Result<Prepared> {
    let prof = &loaded.profile;
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
    // The core under test runs as its own process over the town file, which covers every estate: a
    // scenario that deploys the platform in some estates only would have it and the reference core disagree.
    if town.covered.is_some() {
        return Err(DataFault(towntwin_core::load::DataErrors(vec![towntwin_core::load::DataError {
            file: loaded.scenario.clone(),
            line: None,
            col: None,
            field: Some("platform.estates".into()),
            message: "a load test runs the platform in every estate (`All`): deployment in some estates is for `run` and `experiment`".into(),
        }]))
        .into());
    }
    let town = Arc::unwrap_or_clone(town);
    let (rules, policy) = core.map(|c| (c.rules, c.policy)).ok_or_else(|| anyhow!("a load test's core inputs were not loaded"))?;

    // The traffic and its schedule.
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
    Ok(Prepared { town, town_file, rules, policy, msgs, offsets, keys, by_id, last_tick })
}

/// Until the core's watermark (heard on the orders feed) passes `want`, or `limit` after `from` (the
/// traffic's last intended send, or now if that is past); then whatever comes in the next half second
/// (notices published with the last batch). Returns what was heard and, when the watermark came, how long
/// after `from` it came.
async fn drain(feed: &mut OrdersFeed, want: Option<i64>, from: Instant, limit: Duration) -> (Vec<Heard>, Option<f64>) {
    let mut heard = Vec::new();
    let mut watermark = i64::MIN;
    let drain_start = from.max(Instant::now());
    let deadline = tokio::time::Instant::from_std(drain_start + limit);
    let mut drained = None;
    loop {
        if want.is_some_and(|t| watermark >= t) {
            drained = Some(drain_start.elapsed().as_secs_f64());
            break;
        }
        match tokio::time::timeout_at(deadline, next_heard(feed)).await {
            Ok(Some(Heard::Watermark(w))) => watermark = watermark.max(w),
            Ok(Some(h)) => heard.push(h),
            Ok(None) | Err(_) => break,
        }
    }
    let quiet = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(h)) = tokio::time::timeout_at(quiet, next_heard(feed)).await {
        if !matches!(h, Heard::Watermark(_)) {
            heard.push(h);
        }
    }
    (heard, drained)
}

/// Runs a checked profile into `out` (which holds no run).
fn run_loaded(loaded: &Loaded, ep: Endpoint, out: &std::path::Path) -> Result<Summary> {
    let prof = &loaded.profile;
    let external = !ep.embedded;
    let Prepared { town, town_file, rules, policy, msgs, offsets, keys, by_id, last_tick } = prepare(loaded)?;
    eprintln!("load: {} events over {:.0} s; the reference core takes them ...", msgs.len(), offsets.last().copied().unwrap_or(0.0));
    let reference = reference::reference(&rules, &policy, &town, &msgs)?;

    // The broker and the core, each in its own process.
    let db = procs::db_path(out);
    let (broker_proc, ep) = if external {
        (None, ep)
    } else {
        let (p, ep) = procs::start_broker()?;
        (Some(p), ep)
    };
    // On a cluster the generator publishes to the first node and the core subscribes on the second (failing
    // over to the next ones), ordering its input by minutes as a core on a cluster must.
    let cluster = !ep.others.is_empty();
    let url = if cluster { ep.starting_at(1).to_string() } else { format!("mqtt://{}:{}", ep.host, ep.port) };
    let client_id = format!("towntwin-core-load-{}", std::process::id());
    let batch_max = prof.batch_max.or(if external { cluster.then_some(crate::nats::CLUSTER_BATCH_MAX) } else { Some(profile::EMBEDDED_BATCH_MAX) });
    let tuning = [("partitions", prof.partitions), ("batch-max", batch_max)];
    let mut core_flags: Vec<String> = tuning.iter().filter_map(|(f, v)| v.map(|v| format!("--{f} {v}"))).collect();
    let mut args = procs::core_args(&url, &db, &town_file, &loaded.rules, &loaded.policy, &client_id, &tuning);
    if cluster {
        args.extend(["--order".into(), "minutes".into()]);
        core_flags.push("--order minutes".into());
    }
    let core_proc = Proc::start("core", args, procs::core_ready, Duration::from_secs(60))?;
    let procs = Arc::new(Mutex::new(Procs { core: core_proc, broker: broker_proc }));

    let rt = crate::runtime()?;
    let measured = rt.block_on(async {
        let mut feed = OrdersFeed::start(&ep, "towntwin-load-orders").await?;
        let mut publisher = Gen::connect(&ep, prof, &town, None).await?;
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
        let want = if sending.is_ok() { last_tick } else { None };
        let (heard, drained) = drain(&mut feed, want, Instant::now(), secs(prof.limits.drain_seconds)).await;
        let acked = publisher.counters().pubacks();
        let _ = publisher.flush(Duration::from_secs(2)).await;
        let churn = publisher.counters().churn();
        publisher.close().await;
        feed.close().await;
        stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
        let faults = faults.join().map_err(|_| anyhow!("the fault thread panicked"))?;
        let samples = sampler.join().map_err(|_| anyhow!("the sampler thread panicked"))?;
        let cut = msgs.get(sent.saturating_sub(1)).map_or(i64::MIN, |x| x.time);
        Ok::<_, anyhow::Error>(Measured {
            sending,
            sent: (0..sent).collect(),
            cut,
            sent_until,
            lag,
            latency: judge::Latency::of_heard(&heard, t0, &offsets, &by_id, |_| true),
            drained,
            acked,
            churn,
            faults,
            samples,
            connection_count,
            connect_seconds,
            generators: Vec::new(),
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
    let broker = if ep.embedded { format!("{ep} (embedded rumqttd, own process)") } else { ep.to_string() };
    let store = towntwin_core::store::Location::Sqlite(db.clone());
    let summary =
        judge::judge(loaded, &broker, out, &store, &msgs, &offsets, &keys, &reference, measured, procs::core_stop_counts(&lines), starts, &core_flags)?;
    report::write(out, &summary, loaded)?;
    Ok(summary)
}

/// What the run measured, before it is judged.
struct Measured {
    sending: Result<()>,
    /// The messages sent (indices, ascending).
    sent: Vec<usize>,
    /// Orders are expected from events up to this event time (a cut-short run expects less).
    cut: i64,
    sent_until: f64,
    lag: Recorder,
    latency: judge::Latency,
    drained: Option<f64>,
    acked: u64,
    churn: crate::mqtt::Churn,
    faults: Vec<FaultRun>,
    samples: Vec<Sample>,
    connection_count: usize,
    connect_seconds: f64,
    /// One generator of several each: what it sent and measured.
    generators: Vec<summary::GeneratorLine>,
}
