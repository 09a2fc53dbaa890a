//! `towntwin run`: loads a scenario and its town, starts (or reaches) a broker, runs the twin and
//! publishes its traffic, drives the core through one [`CoreLink`], then writes and prints the run's
//! summary. [`options`] says what a run is asked to do, [`summary`] what it reports; this module is the
//! run loop.

pub mod options;
pub mod summary;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use towntwin_core::server::CoreConfig;
use towntwin_core::service::Core;
use towntwin_core::store::Location;
use towntwin_core::time::Millis;
use towntwin_core::town::Town;
use towntwin_sim::RuleTargets;
use towntwin_sim::{Scenario, Twin, TwinOptions};

pub use self::options::{BrokerChoice, RunOptions, Speed, asset, default_scenario};
pub use self::summary::{NetworkReport, Summary, render};
use crate::broker::Endpoint;
use crate::mqtt::{Counters, Mode, Observer, Publisher};
use crate::runner::link::{CoreLink, InProcess, NoCore, OverNetwork};
use crate::runner::pace::Throttle;
use crate::runner::{self, Drive, Hooks, TwinSide};
use crate::setup::{CoreFiles, Setup};
use crate::{DataFault, ceiling};

/// The scenario of `opts` (with `--days` and `--seed`), its town and, with a core, its rules and policy.
pub fn setup(opts: &RunOptions) -> Result<Setup> {
    let core = opts.core.then(|| CoreFiles { rules: opts.rules.clone(), policy: opts.policy.clone() });
    let change = |s: &mut Scenario| {
        s.days = opts.days.unwrap_or(s.days);
        s.seed = opts.seed.unwrap_or(s.seed);
    };
    Ok(Setup::load_one(&opts.scenario, core.as_ref(), change).map_err(DataFault)?)
}

/// Runs a scenario end to end and writes its results.
pub fn run(opts: &RunOptions) -> Result<Summary> {
    let setup = setup(opts)?;
    let targets = setup.rule_targets();
    let Setup { scenario, start, town, core: core_inputs, .. } = setup;
    let town = Arc::unwrap_or_clone(town);
    let core_inputs = core_inputs.map(|c| (c.rules, c.policy));
    let out_dir = opts.out.clone().unwrap_or_else(|| crate::results::stamped(&format!("{}-{}", scenario.name, scenario.seed)));
    let db: Location = opts.db.clone().unwrap_or_else(|| out_dir.join("core.db").into());
    // A store given outside the folder must not exist either: a run starts from an empty store.
    let also: Vec<&Path> = db.as_path().filter(|_| opts.core).into_iter().collect();
    crate::results::refuse_used(&out_dir, "a run", &also)?;
    if opts.core && db.as_path().is_none() {
        // Nor may a PostgreSQL schema hold events already.
        if let Ok(r) = towntwin_core::store::Reader::open(&db)
            && r.last_seq().unwrap_or(0) > 0
        {
            return Err(crate::UsageFault(format!("{db} already holds a run's events: a run starts from an empty store (name another schema)")).into());
        }
    }
    // The broker before the results folder: a run that cannot start leaves nothing behind.
    let ep = opts.broker.endpoint_with(opts.credentials.as_deref())?;
    crate::results::create(&out_dir)?;
    let wall = Instant::now();
    let bar = progress_bar(opts.progress, scenario.days as u64 * 1440);

    let rt = crate::runtime()?;
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
                    ..towntwin_core::ingest::IngestConfig::new(&ep.host, ep.port).for_town(opts.ns.clone())
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
                let mut core = Core::open(rules, policy, &town, Some(&db)).with_context(|| format!("cannot open the core's store {db}"))?;
                core.engine.set_namespace(opts.ns.clone());
                drive(opts, &scenario, start, town, targets, ep.as_ref(), &bar, InProcess::new(core)?, lockstep).await
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

/// The run's hooks: the progress bar, moved on every simulated hour.
struct Progress(ProgressBar);

impl Hooks for Progress {
    fn after(&mut self, twin: &Twin, _end: Millis) {
        let (done, total) = twin.progress();
        if done % 60 == 0 || done == total {
            self.0.set_position(done);
            self.0.set_message(towntwin_core::time::rfc3339(twin.now())[..16].replace('T', " "));
        }
    }
}

/// What a run gathered.
struct Ended {
    twin: runner::TwinReport,
    network: Option<NetworkReport>,
    ceiling: Option<ceiling::Ceiling>,
    core: Option<crate::runner::link::CoreOutcome>,
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
        Some(ep) if opts.observe => Some(Observer::start(ep, &opts.ns.events_filter(), opts.validate).await?),
        _ => None,
    };
    let mut publisher = match ep {
        Some(ep) => Some(Publisher::connect(ep, opts.connections, &town, Duration::from_secs(120)).await?),
        None => None,
    };
    let (scenario, threads, progress, ns) = (scenario.clone(), opts.threads, Progress(bar.clone()), opts.ns.clone());
    // A core in this process takes each event typed as well as its payload.
    let typed_too = core.takes_typed();
    let make = move || {
        let mut twin = Twin::new(&scenario, start, town, TwinOptions { threads, typed_too, ..TwinOptions::default() });
        twin.set_rule_targets(targets);
        twin.set_namespace(ns);
        TwinSide::new(twin, start, typed_too, progress)
    };
    let publish_started = Instant::now();
    // Each event goes out at its simulated time, scaled by --speed.
    let throttle = Throttle::new(opts.speed);
    let driven = runner::drive(
        make,
        &mut core,
        Drive { threaded: true, lockstep, publisher: publisher.as_mut(), throttle: (opts.speed != Speed::Max).then_some(&throttle) },
    )
    .await?;
    let report = driven.twin;
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
