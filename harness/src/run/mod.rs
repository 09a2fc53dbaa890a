//! `towntwin run`: loads a scenario and its town, starts (or reaches) a broker, runs the twin and
//! publishes its traffic, drives the core through one [`CoreLink`], then writes and prints the run's
//! summary. [`options`] says what a run is asked to do, [`summary`] what it reports; this module is the
//! run loop.

pub mod options;
pub mod summary;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use towntwin_core::event::EventType;
use towntwin_core::orders::{Notice, Policy};
use towntwin_core::rules::RuleSet;
use towntwin_core::server::CoreConfig;
use towntwin_core::service::Core;
use towntwin_core::town::Town;
use towntwin_sim::plugins::responders::{Act, ResponderStats, RuleTargets};
use towntwin_sim::world::Incident;
use towntwin_sim::{Message, Scenario, Stats, Twin, TwinOptions};

pub use self::options::{BrokerChoice, RunOptions, Speed, asset, default_scenario, stamped_dir};
pub use self::summary::{NetworkReport, Summary, render};
use crate::broker::Endpoint;
use crate::core_link::{CoreLink, InProcess, NoCore, OverNetwork};
use crate::mqtt::{Counters, Mode, Observer, Publisher};
use crate::{DataFault, UsageFault, ceiling};

/// What the twin thread hands back when it ends.
pub(crate) struct TwinReport {
    pub stats: Stats,
    pub digest: String,
    pub incidents: Vec<Incident>,
    pub busy: Duration,
    pub end: i64,
    pub responders: ResponderStats,
}

/// Loads the scenario (applying `--days`/`--seed`) and its town; data errors become [`DataFault`]. Also
/// returns the town's file (for a core started as a process of its own).
pub fn load(opts: &RunOptions) -> Result<(Scenario, i64, Town, std::path::PathBuf)> {
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
    Ok((scenario, loaded.start, town, loaded.town_file))
}

/// Runs a scenario end to end and writes its results.
pub fn run(opts: &RunOptions) -> Result<Summary> {
    let (scenario, start, town, _) = load(opts)?;
    let core_inputs = if opts.core {
        let rules = RuleSet::load(&opts.rules).map_err(DataFault)?;
        let policy = Policy::load_for(&opts.policy, &rules).map_err(DataFault)?;
        crate::detect::check_staffed(&policy, &rules, &scenario.responders, &opts.policy).map_err(DataFault)?;
        Some((rules, policy))
    } else {
        None
    };
    let targets = core_inputs.as_ref().map(|(rules, _)| crate::detect::rule_targets(rules)).unwrap_or_default();
    let out_dir = opts.out.clone().unwrap_or_else(|| stamped_dir(&format!("{}-{}", scenario.name, scenario.seed)));
    let db = opts.db.clone().unwrap_or_else(|| out_dir.join("core.db"));
    refuse_earlier_run(&out_dir, opts.core.then_some(db.as_path()))?;
    // The broker before the results folder: a run that cannot start leaves nothing behind.
    let ep = opts.broker.endpoint_with(opts.credentials.as_deref())?;
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create the results folder {}", out_dir.display()))?;
    let wall = Instant::now();
    let bar = progress_bar(opts.progress, scenario.days as u64 * 1440);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let lockstep = scenario.responders.enabled && opts.core;
    let ended = rt.block_on(async {
        let Some((rules, policy)) = core_inputs else {
            return drive(opts, &scenario, start, town, targets, ep.as_ref(), &bar, NoCore, false).await;
        };
        // Over many publisher connections a broker keeps each connection's order but not the order between
        // them: the clock tick closing a minute can reach the core before that minute's events from other
        // connections, so the lockstep with the responders (and the work orders) would depend on timing.
        // With `estate`/`device` the core is fed in-process, in the twin's order.
        match &ep {
            Some(ep) if !opts.in_process && opts.connections == Mode::One => {
                let ingest = towntwin_core::ingest::IngestConfig {
                    login: ep.login(crate::credentials::CORE)?,
                    ..towntwin_core::ingest::IngestConfig::new(&ep.host, ep.port)
                };
                let cfg = CoreConfig::new(town.clone(), rules, policy, Some(db.clone()), ingest);
                let core = OverNetwork::start(cfg, ep, lockstep).await?;
                drive(opts, &scenario, start, town, targets, Some(ep), &bar, core, lockstep).await
            }
            _ => {
                if ep.is_some() && !opts.in_process {
                    tracing::warn!(
                        "the core is fed in-process with --connections {:?}: across many connections the broker does not keep the twin's order",
                        opts.connections
                    );
                }
                let core = Core::open(rules, policy, &town, Some(&db)).with_context(|| format!("cannot open the core's store {}", db.display()))?;
                drive(opts, &scenario, start, town, targets, ep.as_ref(), &bar, InProcess::new(core), lockstep).await
            }
        }
    });
    bar.finish_and_clear();
    let Ended { twin, network, ceiling, core } = ended?;
    let summary = summary::summarise(summary::Parts {
        opts,
        scenario: &scenario,
        out: &out_dir,
        twin: &twin,
        network,
        ceiling,
        core: core.as_ref(),
        wall: wall.elapsed(),
    });
    summary::write_results(&out_dir, &summary, &twin.incidents)?;
    Ok(summary)
}

/// A run never reports another run's results: a folder that already holds a run's summary, or a core
/// store that already exists, is refused (exit 2) before anything is started or written.
fn refuse_earlier_run(out: &Path, db: Option<&Path>) -> Result<()> {
    let summary = out.join("summary.json");
    if summary.exists() {
        return Err(UsageFault(format!(
            "the results folder {} already holds a run ({}): give another --out, or remove the folder to run again",
            out.display(),
            summary.display()
        ))
        .into());
    }
    if let Some(db) = db
        && db.exists()
    {
        return Err(UsageFault(format!(
            "the core's store {} already exists and a run starts from an empty store: give another --out or --db, or remove it",
            db.display()
        ))
        .into());
    }
    Ok(())
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
    targets: RuleTargets,
    threads: Option<usize>,
    bar: &ProgressBar,
    mut sink: impl FnMut(Vec<Message>, Vec<Act>) -> Option<Vec<Notice>>,
) -> TwinReport {
    let mut twin = Twin::new(scenario, start, town, TwinOptions { threads, ..TwinOptions::default() });
    twin.set_rule_targets(targets);
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

/// What a run gathered.
struct Ended {
    twin: TwinReport,
    network: Option<NetworkReport>,
    ceiling: Option<ceiling::Ceiling>,
    core: Option<crate::core_link::CoreOutcome>,
}

/// Runs the twin on its own thread and, tick by tick: the responders' actions to the core, the tick's
/// events to the broker (if any) and the core, and in lockstep the core's notices back to the responders
/// before the twin steps again. Then waits for the broker and the core to take everything.
#[allow(clippy::too_many_arguments)]
async fn drive<C: CoreLink>(
    opts: &RunOptions,
    scenario: &Scenario,
    start: i64,
    town: Town,
    targets: RuleTargets,
    ep: Option<&Endpoint>,
    bar: &ProgressBar,
    mut core: C,
    lockstep: bool,
) -> Result<Ended> {
    let observer = match ep {
        Some(ep) if opts.observe => Some(Observer::start(ep, "town/#", opts.validate).await?),
        _ => None,
    };
    let mut publisher = match ep {
        Some(ep) => Some(Publisher::connect(ep, opts.connections, &town, Duration::from_secs(120)).await?),
        None => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<Message>, Vec<Act>)>(if lockstep { 1 } else { 256 });
    let (reply_tx, reply_rx) = std::sync::mpsc::channel::<Vec<Notice>>();
    let (scenario_c, threads, bar_c) = (scenario.clone(), opts.threads, bar.clone());
    let twin = std::thread::Builder::new().name("twin".into()).spawn(move || {
        twin_loop(&scenario_c, start, town, targets, threads, &bar_c, |msgs, acts| {
            tx.blocking_send((msgs, acts)).ok()?;
            if lockstep { reply_rx.recv().ok() } else { Some(Vec::new()) }
        })
    })?;

    let publish_started = Instant::now();
    let pace = match opts.speed {
        Speed::Max => None,
        Speed::Times(x) => Some((tokio::time::Instant::now(), start, x)),
    };
    let mut failed = None;
    while let Some((batch, acts)) = rx.recv().await {
        let step = async {
            core.act(acts).await?;
            let closing = batch.iter().rev().find(|m| m.ty == EventType::ClockTick).map(|m| m.time);
            if let Some(p) = publisher.as_mut() {
                for m in &batch {
                    if let Some((wall0, sim0, x)) = pace {
                        // Pacing by --speed: each event goes out at its simulated time, scaled.
                        let due = wall0 + Duration::from_secs_f64(((m.time - sim0).max(0) as f64 / 1000.0) / x);
                        tokio::time::sleep_until(due).await;
                    }
                    p.publish(m.clone()).await?;
                }
            }
            core.events(&batch).await?;
            core.notices(closing).await
        };
        match step.await {
            Ok(notices) => {
                if lockstep && reply_tx.send(notices).is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // The twin ends when its channel closes.
    drop(rx);
    drop(reply_tx);
    let report = twin.join().map_err(|_| anyhow!("the twin thread panicked"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let Some(publisher) = publisher else {
        let core = core.finish(report.stats.total, report.stats.total).await?;
        return Ok(Ended { twin: report, network: None, ceiling: None, core });
    };
    let ep = ep.ok_or_else(|| anyhow!("a publisher without a broker"))?;
    let unacknowledged = publisher.flush(Duration::from_secs(120)).await;
    let publish_seconds = publish_started.elapsed().as_secs_f64();
    let (observed, invalid) = match observer {
        Some(o) => {
            let got = o.wait_for(publisher.published, Duration::from_secs(3), Duration::from_secs(120)).await;
            let invalid = opts.validate.then(|| o.counters.invalid());
            o.close().await;
            (Some(got), invalid)
        }
        None => (None, None),
    };
    if unacknowledged > 0 {
        tracing::warn!("{unacknowledged} QoS 1 publishes were not acknowledged within 120 s");
    }
    let core = core.finish(publisher.published, publisher.published_qos1).await?;
    let network = NetworkReport {
        broker: ep.to_string(),
        connections_mode: opts.connections,
        connections: publisher.connections(),
        connect_seconds: publisher.connect_time.as_secs_f64(),
        published: publisher.published,
        published_qos1: publisher.published_qos1,
        qos1_acknowledged: publisher.counters.pubacks(),
        qos1_unacknowledged: unacknowledged,
        resent_after_reconnect: Counters::get(&publisher.counters.resent),
        reconnects: Counters::get(&publisher.counters.connected).saturating_sub(publisher.connections() as u64),
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
    Ok(Ended { twin: report, network: Some(network), ceiling, core })
}
