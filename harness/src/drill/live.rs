//! `towntwin drill FILE`: a drill run live. The embedded broker, the core (its HTTP API and console where
//! the trainees work, taking only this exercise's events) and the twin with the whole town's background
//! traffic, every event marked with the exercise's id. The town runs at full speed up to the drill's
//! minute 0 (the warm-up: queues, habits and open orders as they would be at that hour), then at `--speed`
//! times the wall clock. The twin's own crews stand down where a trainee plays them.
//!
//! The loop is the [runner's](crate::runner) with the drill's hooks ([`super::hooks`]) and the controller's
//! [`Throttle`] ([`super::panel`]): pause, resume, step, speed, fire an inject now, skip one, stop. When
//! the script's minutes are up (or the controller stops it) the core is stopped and the after-action
//! report is scored from its store ([`super::aar`]). How late each event and each inject went out against
//! the pace is measured and reported.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use towntwin_core::ingest::IngestConfig;
use towntwin_core::principal::Principal;
use towntwin_core::server::CoreConfig;
use towntwin_core::time::{DAY, MINUTE, Millis};
use towntwin_sim::RuleTargets;
use towntwin_sim::{Twin, TwinOptions};

use super::aar::{self, InjectLog, Lateness, Log, town_time};
use super::hooks::{DrillHooks, Plan};
use super::panel::{Control, InjectView, Panel, router};
use super::script::{Drill, What};
use crate::mqtt::{Mode, Publisher};
use crate::runner::link::{CoreLink, OverNetwork};
use crate::runner::pace::{Speed, Throttle};
use crate::runner::{self, Drive, Driven, TwinSide};
use crate::setup::{CoreInputs, Setup};
use crate::{DataFault, UsageFault};

/// What `towntwin drill FILE` is asked to do.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub file: PathBuf,
    /// Town minutes per wall minute once the drill starts.
    pub speed: f64,
    /// Results folder (default `results/drills/<name>-<unix time>`); its name is the exercise id.
    pub out: Option<PathBuf>,
    /// Where the core serves its API and console.
    pub http: SocketAddr,
    /// Where the controller's panel listens.
    pub control: SocketAddr,
    /// Hold at minute 0 until the controller starts the drill (default: start when the warm-up is done).
    pub wait_for_start: bool,
    pub threads: Option<usize>,
    /// Scripted trainees (`--play`): `Some(empty)` plays every trainee, `Some(names)` those named.
    pub play: Option<Vec<String>>,
}

/// The fastest pace a drill takes: a town day in 24 wall seconds.
pub const MAX_SPEED: f64 = 3600.0;
/// The slowest: a town minute in ten wall minutes.
pub const MIN_SPEED: f64 = 0.1;

pub(super) fn speed_ok(speed: f64) -> bool {
    speed.is_finite() && (MIN_SPEED..=MAX_SPEED).contains(&speed)
}

/// A finished drill.
pub struct Finished {
    pub out: PathBuf,
    pub aar: aar::Aar,
}

/// What the order an inject makes names within its area: the resident (or her flat), the flat, the device;
/// any for a fire (its order names the detector that sounded).
pub(super) fn subjects_of(what: &What, town: &towntwin_core::town::Town) -> Vec<String> {
    match what {
        What::Incapacitate { resident, .. } => {
            let flat = town.register.iter().find(|r| r.id == *resident).map(|r| format!("B{:02}-{}", r.building, r.room));
            std::iter::once(resident.clone()).chain(flat).collect()
        }
        What::NewFaces { flat, .. } => vec![flat.parse::<towntwin_core::event::FlatRef>().map_or_else(|_| flat.clone(), |f| f.to_string())],
        What::DeviceDark { device, .. } => vec![device.clone()],
        What::EbikeInElevator { flat, .. } | What::IndoorCharging { flat, .. } => {
            vec![flat.parse::<towntwin_core::event::FlatRef>().map_or_else(|_| flat.clone(), |f| f.to_string())]
        }
        What::DumpedBags { kiosk, .. } => vec![kiosk.clone()],
        What::FenceViolation { camera, code } => vec![format!("{camera}/{code}")],
        // Illegal works: the noise order names the building's monitor that heard them, a spot check's the
        // flat.
        What::IllegalWorks { estate, flat } => {
            let f = flat.parse::<towntwin_core::event::FlatRef>().ok();
            let monitors = town.estates.iter().filter(|e| e.id == *estate).flat_map(|e| &e.devices);
            let heard = monitors.filter(|d| d.kind == towntwin_core::town::DeviceKind::Noise && d.building == f.map(|f| f.building)).map(|d| d.id.clone());
            heard.chain(f.map(|f| f.to_string())).collect()
        }
        // A fire's order names the detector that sounded: any fire order in the area.
        What::Fire { .. } => Vec::new(),
    }
}

/// Runs the drill of `opts` to its end and writes its folder: the core's store, `drill-log.json`,
/// and the after-action report ([`aar::report`]).
pub fn run(opts: &DrillOptions) -> Result<Finished> {
    if !speed_ok(opts.speed) {
        bail!(UsageFault(format!("--speed {}: expected town minutes per wall minute, from {MIN_SPEED} to {MAX_SPEED}", opts.speed)));
    }
    let d = super::script::load(&opts.file).map_err(DataFault)?;
    if let Some(names) = &opts.play {
        let unknown: Vec<&str> = names.iter().filter(|n| !d.principals.contains_key(*n)).map(String::as_str).collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = d.principals.keys().map(String::as_str).collect();
            bail!(UsageFault(format!("--play={}: not a trainee of {} (its trainees: {})", unknown.join(","), d.script.name, known.join(", "))));
        }
        if opts.wait_for_start {
            bail!(UsageFault("--play and --wait-for-start: a played drill starts when its warm-up is done".into()));
        }
    }
    // The town runs the days the drill needs: from the scenario's start to the drill's end.
    let end_offset = d.offset + d.script.minutes as Millis * MINUTE;
    let setup = Setup::load_one(&d.scenario_file, Some(&d.core), |s| s.days = ((end_offset + DAY - 1) / DAY).max(1) as u32).map_err(DataFault)?;
    let targets = setup.rule_targets();
    let Setup { scenario, start, core, .. } = setup;
    let CoreInputs { rules, policy, .. } = core.ok_or_else(|| anyhow!("the drill's rules and policy were not loaded"))?;
    let (drill_start, drill_end) = (start + d.offset, start + end_offset);

    let out = opts.out.clone().unwrap_or_else(|| crate::results::stamped(&format!("drills/{}", d.script.name)));
    crate::results::refuse_used(&out, "a drill", &[])?;
    let exercise = out.file_name().and_then(|n| n.to_str()).unwrap_or("drill").to_string();
    let ep = crate::broker::start_embedded()?;
    crate::results::create(&out)?;
    let db = out.join("core.db");

    // Each rule and the incident kinds it detects: which rules' orders are about an inject.
    let rule_kinds: Vec<(String, Vec<towntwin_core::truth::IncidentKind>)> = rules.rules.iter().map(|r| (r.id.clone(), r.detects.kinds.clone())).collect();
    let logs: Vec<InjectLog> =
        d.script.injects.iter().zip(&d.areas).map(|(inj, area)| InjectLog::new(inj, area.clone(), &rule_kinds, &d.town, false)).collect();
    let control = Arc::new(Control {
        panel: Mutex::new(Panel {
            started: !opts.wait_for_start,
            fire: Vec::new(),
            skip: Vec::new(),
            town: start,
            began: None,
            injects: d.script.injects.iter().map(|i| InjectView::new(i, false)).collect(),
            log: Vec::new(),
            adhoc: Vec::new(),
            adhoc_fired: Vec::new(),
            observations: Vec::new(),
        }),
        throttle: Throttle::new(Speed::Times(opts.speed)),
        wake: Condvar::new(),
        token: String::new(),
        drill_start,
        drill: d.clone(),
        rules: rule_kinds,
        core: None,
    });

    let rt = crate::runtime()?;
    let (driven, control_log) = rt.block_on(async {
        let ingest = IngestConfig { login: ep.login(crate::credentials::CORE)?, ..IngestConfig::new(&ep.host, ep.port) };
        let mut cfg = CoreConfig::new(d.town.clone(), rules.clone(), policy, Some(db.clone()), ingest);
        cfg.http = Some(opts.http);
        cfg.exercise = Some(exercise.clone());
        let core = OverNetwork::start(cfg, &ep, true).await?;
        let console = core.http_addr().ok_or_else(|| anyhow!("the core's HTTP API did not start"))?;
        // Tokens: each trainee's principal, and the controller's (who sees the whole town).
        let (tokens, controller_token, evaluator_tokens) = {
            let mut c = core.core().lock().map_err(|_| anyhow!("the core's lock was poisoned"))?;
            let mut tokens = BTreeMap::new();
            for (name, p) in &d.principals {
                tokens.insert(name.clone(), (p.clone(), c.issue_token(p)?));
            }
            let mut evaluators = Vec::new();
            for e in &d.script.evaluators {
                evaluators.push((e.clone(), c.issue_token(&e.principal())?));
            }
            (tokens, c.issue_token(&Principal::town("controller"))?, evaluators)
        };
        let control = {
            let mut c = Arc::try_unwrap(control).map_err(|_| anyhow!("the controller's panel is shared too early"))?;
            c.token = controller_token.clone();
            c.core = Some(Arc::downgrade(core.core()));
            Arc::new(c)
        };
        let listener = tokio::net::TcpListener::bind(opts.control).await.with_context(|| format!("cannot serve the controller's panel on {}", opts.control))?;
        let control_addr = listener.local_addr()?;
        let app = router(control.clone());
        let panel_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("the controller's panel stopped: {e}");
            }
        });

        say!("drill: {} ({} minutes from {}), exercise {exercise}", d.script.name, d.script.minutes, d.script.start);
        say!("drill: console (the core's API) on http://{console}");
        say!("drill: controller on http://{control_addr}/drill (Authorization: Bearer {controller_token})");
        say!("drill: controller's panel (a page) on http://{control_addr}/drill/panel");
        for (name, (p, t)) in &tokens {
            say!("drill: trainee {name} ({p}) token {t}");
        }
        for (e, t) in &evaluator_tokens {
            say!("drill: evaluator {} ({}, evaluates {}) token {t}", e.name, e.principal(), e.objectives.join(", "));
        }
        if !evaluator_tokens.is_empty() {
            say!("drill: evaluators' guides on http://{control_addr}/drill/evaluate");
        }
        say!("drill: folder {}", out.display());
        say!("drill: warming up: the town runs at full speed from {} to the drill's minute 0 at {}", town_time(start), town_time(drill_start));

        // Ctrl-C ends the drill as the controller's stop does: the report is still written.
        let interrupt = {
            let control = control.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    control.throttle.set(|t| t.stopped = true);
                    let line = control.lock().note("stop (interrupted)".into());
                    say!("{line}");
                    control.wake.notify_all();
                }
            })
        };
        let player = opts.play.as_ref().map(|names| {
            let names = (!names.is_empty()).then_some(names.as_slice());
            for name in names.map_or_else(|| tokens.keys().cloned().collect(), <[String]>::to_vec) {
                say!("drill: trainee {name} is played by the script (--play)");
            }
            super::play::Player::new(&d, tokio::runtime::Handle::current(), format!("http://{console}"), &tokens, names, drill_start)
        });
        let hooks = DrillHooks {
            player,
            d: d.clone(),
            plan: Plan { orders: vec![None; logs.len()], resolved_at: vec![None; logs.len()], logs },
            control: control.clone(),
            trainees: d.principals.values().cloned().collect(),
            drill_start,
            drill_end,
        };
        let result = drive(&d, scenario, start, targets, &ep, core, &control, hooks, opts.threads, &exercise).await;
        panel_task.abort();
        interrupt.abort();
        result.map(|driven| (driven, control.lock().log.clone()))
    })?;

    let principals: BTreeMap<String, String> = d.principals.iter().map(|(n, p)| (n.clone(), p.to_string())).collect();
    // The script as run: with the ad-hoc injects the controller fired, after its own.
    let script = driven.hooks.d.script.clone();
    let mut injects = driven.hooks.plan.logs;
    for (i, l) in driven.lateness.marks {
        injects[i].lateness_ms = Some(l);
    }
    let event_lateness = driven.lateness.events.summary(1000.0).map(|s| Lateness { events: s.count, p50_ms: s.p50, p99_ms: s.p99, max_ms: s.max });
    let ended_by = driven.twin.stopped_by.unwrap_or_else(|| "the end of the script".into());
    let log = Log { script, exercise, principals, drill_start, ended_at: driven.twin.end, ended_by, injects, control: control_log, event_lateness };
    std::fs::write(out.join("drill-log.json"), serde_json::to_string_pretty(&log)?)
        .with_context(|| format!("cannot write {}", out.join("drill-log.json").display()))?;
    let recorded = aar::Recorded::read(&db)?;
    let report = aar::report(&out, &log, &recorded)?;
    Ok(Finished { out, aar: report })
}

/// Rebuilds the after-action report of a finished drill from its folder (`drill-log.json` and the core's
/// store), and writes it again.
pub fn replay(dir: &std::path::Path) -> Result<aar::Aar> {
    let file = dir.join("drill-log.json");
    let text = std::fs::read_to_string(&file).with_context(|| format!("{} is not a drill's folder: cannot read {}", dir.display(), file.display()))?;
    let log: Log = serde_json::from_str(&text).map_err(|e| UsageFault(format!("{}: not a drill log: {e}", file.display())))?;
    let db = dir.join("core.db");
    if !db.exists() {
        bail!(UsageFault(format!("{} has no core.db: the drill's store is needed to score it", dir.display())));
    }
    let recorded = aar::Recorded::read(&db)?;
    let report = aar::report(dir, &log, &recorded)?;
    Ok(report)
}

/// The twin on its own thread, in lockstep with the core, and its events published at the controller's
/// pace from minute 0.
#[allow(clippy::too_many_arguments)]
async fn drive(
    d: &Drill,
    scenario: towntwin_sim::Scenario,
    start: Millis,
    targets: RuleTargets,
    ep: &crate::broker::Endpoint,
    mut core: OverNetwork,
    control: &Control,
    hooks: DrillHooks,
    threads: Option<usize>,
    exercise: &str,
) -> Result<Driven<DrillHooks>> {
    let mut publisher = Publisher::connect(ep, Mode::One, &d.town, Duration::from_secs(120)).await?;
    let (town, exercise) = (d.town.clone(), exercise.to_string());
    let make = move || {
        let mut twin = Twin::new(&scenario, start, town, TwinOptions { threads, ..TwinOptions::default() });
        twin.set_rule_targets(targets);
        twin.mark_exercise(&exercise);
        TwinSide::new(twin, start, false, hooks)
    };
    let driven =
        runner::drive(make, &mut core, Drive { threaded: true, lockstep: true, publisher: Some(&mut publisher), throttle: Some(&control.throttle) }).await?;
    let unacknowledged = publisher.flush(Duration::from_secs(120)).await;
    if unacknowledged > 0 {
        tracing::warn!("{unacknowledged} QoS 1 publishes were not acknowledged within 120 s");
    }
    let (published, qos1) = (publisher.published, publisher.published_qos1);
    publisher.close().await;
    // The core is stopped (its store closed) before the report reads it.
    drop(core.finish(published, qos1).await?);
    Ok(driven)
}
