//! `towntwin drill FILE`: a drill run live. The embedded broker, the core (its HTTP API and console where
//! the trainees work, taking only this exercise's events) and the twin with the whole town's background
//! traffic, every event marked with the exercise's id. The town runs at full speed up to the drill's
//! minute 0 (the warm-up: queues, habits and open orders as they would be at that hour), then at `--speed`
//! times the wall clock. The twin's own crews stand down where a trainee plays them.
//!
//! Before each tick the controller's panel is read: pause, resume, speed, fire an inject now, skip one,
//! stop. Injects whose start condition has come are handed to the twin, which makes them real at that
//! tick. The core's notices (in lockstep, as `towntwin run` does) tell which order each inject made and
//! when it was resolved (for `AfterHandled`). When the script's minutes are up (or the controller stops
//! it) the core is stopped and the after-action report is scored from its store ([`super::aar`]).
//!
//! Pacing: each event goes out at its town time scaled to the wall clock from an anchor (set when the drill
//! starts, on resume and on a change of speed). How late each event and each inject went out against that
//! schedule is measured and reported.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use towntwin_core::event::EventType;
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::{Notice, Policy, State as OrderState};
use towntwin_core::principal::Principal;
use towntwin_core::rules::RuleSet;
use towntwin_core::server::CoreConfig;
use towntwin_core::time::{DAY, MINUTE, Millis};
use towntwin_core::truth::IncidentKind;
use towntwin_sim::plugins::drill::Effect;
use towntwin_sim::plugins::responders::{Act, RuleTargets};
use towntwin_sim::{Message, Twin, TwinOptions};

use super::aar::{self, InjectLog, Lateness, Log, Status, town_time};
use super::script::{Drill, Start, What};
use crate::core_link::{CoreLink, OverNetwork};
use crate::mqtt::{Mode, Publisher};
use crate::percentiles::Recorder;
use crate::run::asset;
use crate::{DataFault, UsageFault};

/// A line on stdout for the trainer; a closed stdout (the reader went away) stops nothing.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

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
}

/// The fastest pace a drill takes: a town day in 24 wall seconds.
pub const MAX_SPEED: f64 = 3600.0;
/// The slowest: a town minute in ten wall minutes.
pub const MIN_SPEED: f64 = 0.1;

fn speed_ok(speed: f64) -> bool {
    speed.is_finite() && (MIN_SPEED..=MAX_SPEED).contains(&speed)
}

/// A finished drill.
pub struct Finished {
    pub out: PathBuf,
    pub aar: aar::Aar,
}

/// The incident kind each inject makes, whose rules' orders are about it.
fn kind_of(what: &What) -> IncidentKind {
    match what {
        What::Incapacitate { .. } => IncidentKind::VulnerableEmergency,
        What::Fire { .. } => IncidentKind::Fire,
        What::NewFaces { .. } => IncidentKind::GroupRental,
        What::DeviceDark { .. } => IncidentKind::DeviceOffline,
    }
}

/// What the order an inject makes names within its area: the resident (or her flat), the flat, the device;
/// any for a fire (its order names the detector that sounded).
fn subjects_of(what: &What, town: &towntwin_core::town::Town) -> Vec<String> {
    match what {
        What::Incapacitate { resident, .. } => {
            let flat = town.register.iter().find(|r| r.id == *resident).map(|r| format!("B{:02}-{}", r.building, r.room));
            std::iter::once(resident.clone()).chain(flat).collect()
        }
        What::NewFaces { flat, .. } => vec![flat.parse::<towntwin_core::event::FlatRef>().map_or_else(|_| flat.clone(), |f| f.to_string())],
        What::DeviceDark { device, .. } => vec![device.clone()],
        What::Fire { .. } => Vec::new(),
    }
}

/// The controller's panel: what the controller asked for, and where the drill stands.
#[derive(Debug, Default)]
struct Panel {
    started: bool,
    paused: bool,
    stop: bool,
    speed: f64,
    fire: Vec<usize>,
    skip: Vec<usize>,
    /// Town time of the tick about to run.
    town: Millis,
    /// Wall time the drill began (minute 0), for the log.
    began: Option<Instant>,
    injects: Vec<InjectView>,
    log: Vec<(Millis, f64, String)>,
}

#[derive(Debug, Clone, Serialize)]
struct InjectView {
    id: String,
    title: String,
    status: Status,
    started_at: Option<String>,
    order: Option<u64>,
    resolved: bool,
}

impl Panel {
    /// Logs what the controller did; the caller prints it once the panel is unlocked.
    fn note(&mut self, what: String) -> String {
        let wall = self.began.map_or(0.0, |b| b.elapsed().as_secs_f64());
        self.log.push((self.town, wall, what.clone()));
        format!("drill: controller: {what}")
    }
}

struct Control {
    panel: Mutex<Panel>,
    /// Wakes the twin's thread (waiting for start, or paused).
    wake: Condvar,
    /// Wakes the publisher's pacing (a pause, a resume, a new speed or a stop takes effect mid-tick).
    changed: tokio::sync::Notify,
    token: String,
    ids: Vec<String>,
    drill_start: Millis,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, Panel> {
        // A panic while holding the panel leaves plain data behind: keep going with it.
        self.panel.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pace of the drill's paced part: wall time `wall` is town time `town`, and `speed` town seconds pass
/// a wall second.
#[derive(Debug, Clone, Copy)]
struct Pace {
    wall: Instant,
    town: Millis,
    speed: f64,
}

impl Pace {
    fn due(&self, t: Millis) -> Instant {
        // Speeds are bounded ([`MIN_SPEED`]): a drill's span scaled stays far inside `Duration` and `Instant`.
        let secs = ((t - self.town).max(0) as f64 / 1000.0) / self.speed;
        self.wall.checked_add(Duration::from_secs_f64(secs.min(1e9))).unwrap_or(self.wall)
    }
}

/// One tick, from the twin's thread to the publisher and the core.
struct Tick {
    msgs: Vec<Message>,
    acts: Vec<Act>,
    /// The tick's town time, when it is part of the drill (paced); `None` in the warm-up (full speed).
    paced: Option<Millis>,
    /// (inject, town time) of injects that took effect this tick.
    started: Vec<(usize, Millis)>,
}

/// Where each inject stands, kept by the twin's thread.
struct Plan {
    logs: Vec<InjectLog>,
    /// The order each inject made, and when it was resolved.
    orders: Vec<Option<u64>>,
    resolved_at: Vec<Option<Millis>>,
}

/// Runs the drill of `opts` to its end and writes its folder: the core's store, `drill-log.json`,
/// `aar.json`, `aar.html` and the timeline plot.
pub fn run(opts: &DrillOptions) -> Result<Finished> {
    if !speed_ok(opts.speed) {
        bail!(UsageFault(format!("--speed {}: expected town minutes per wall minute, from {MIN_SPEED} to {MAX_SPEED}", opts.speed)));
    }
    let d = super::script::load(&opts.file).map_err(DataFault)?;
    let loaded = towntwin_sim::Scenario::load(&d.scenario_file).map_err(DataFault)?;
    let mut scenario = loaded.scenario;
    let start = loaded.start;
    let drill_start = start + d.offset;
    let drill_end = drill_start + d.script.minutes as Millis * MINUTE;
    scenario.days = ((drill_end - start + DAY - 1) / DAY).max(1) as u32;
    scenario.validate(&loaded.file).map_err(DataFault)?;
    let rules_file = asset("assets/rules.ron");
    let policy_file = asset("scenarios/policies/standard.ron");
    let rules = RuleSet::load(&rules_file).map_err(DataFault)?;
    let policy = Policy::load_for(&policy_file, &rules).map_err(DataFault)?;
    crate::detect::check_staffed(&policy, &rules, &scenario.responders, &policy_file).map_err(DataFault)?;
    let targets = crate::detect::rule_targets(&rules);

    let out = opts.out.clone().unwrap_or_else(|| crate::run::stamped_dir(&format!("drills/{}", d.script.name)));
    for f in ["drill-log.json", "core.db"] {
        if out.join(f).exists() {
            bail!(UsageFault(format!("{} already holds a drill ({f}): give another --out, or remove the folder to run again", out.display())));
        }
    }
    let exercise = out.file_name().and_then(|n| n.to_str()).unwrap_or("drill").to_string();
    let ep = crate::broker::start_embedded()?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create the drill's folder {}", out.display()))?;
    let db = out.join("core.db");

    let logs: Vec<InjectLog> = d
        .script
        .injects
        .iter()
        .zip(&d.areas)
        .map(|(inj, area)| {
            let kind = kind_of(&inj.what);
            InjectLog {
                id: inj.id.clone(),
                status: Status::NotStarted,
                due_at: None,
                started_at: None,
                effects: Vec::new(),
                lateness_ms: None,
                rules: rules.rules.iter().filter(|r| r.detects.kinds.contains(&kind)).map(|r| r.id.clone()).collect(),
                area: area.clone(),
                subjects: subjects_of(&inj.what, &d.town),
            }
        })
        .collect();
    let control = Arc::new(Control {
        panel: Mutex::new(Panel {
            speed: opts.speed,
            started: !opts.wait_for_start,
            town: start,
            injects: d
                .script
                .injects
                .iter()
                .map(|i| InjectView { id: i.id.clone(), title: i.title.clone(), status: Status::NotStarted, started_at: None, order: None, resolved: false })
                .collect(),
            ..Panel::default()
        }),
        wake: Condvar::new(),
        changed: tokio::sync::Notify::new(),
        token: String::new(),
        ids: d.script.injects.iter().map(|i| i.id.clone()).collect(),
        drill_start,
    });

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (ended, ended_by, ended_at, lateness, inject_lateness) = rt.block_on(async {
        let ingest = IngestConfig { login: ep.login(crate::credentials::CORE)?, ..IngestConfig::new(&ep.host, ep.port) };
        let mut cfg = CoreConfig::new(d.town.clone(), rules.clone(), policy, Some(db.clone()), ingest);
        cfg.http = Some(opts.http);
        cfg.exercise = Some(exercise.clone());
        let core = OverNetwork::start(cfg, &ep, true).await?;
        let console = core.http_addr().ok_or_else(|| anyhow!("the core's HTTP API did not start"))?;
        // Tokens: each trainee's principal, and the controller's (who sees the whole town).
        let (tokens, controller_token) = {
            let mut c = core.core().lock().map_err(|_| anyhow!("the core's lock was poisoned"))?;
            let mut tokens = BTreeMap::new();
            for (name, p) in &d.principals {
                tokens.insert(name.clone(), (p.clone(), c.issue_token(p)?));
            }
            (tokens, c.issue_token(&Principal::town("controller"))?)
        };
        let control = {
            let mut c = Arc::try_unwrap(control).map_err(|_| anyhow!("the controller's panel is shared too early"))?;
            c.token = controller_token.clone();
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
        say!("drill: folder {}", out.display());
        say!("drill: warming up: the town runs at full speed from {} to the drill's minute 0 at {}", town_time(start), town_time(drill_start));

        // Ctrl-C ends the drill as the controller's stop does: the report is still written.
        let interrupt = {
            let control = control.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    let line = {
                        let mut p = control.lock();
                        p.stop = true;
                        p.note("stop (interrupted)".into())
                    };
                    say!("{line}");
                    control.wake.notify_all();
                    control.changed.notify_one();
                }
            })
        };
        let result = drive(&d, &scenario, start, drill_start, drill_end, targets, &ep, core, control.clone(), logs, opts.threads, &exercise).await;
        panel_task.abort();
        interrupt.abort();
        result
    })?;

    let principals: BTreeMap<String, String> = d.principals.iter().map(|(n, p)| (n.clone(), p.to_string())).collect();
    let mut injects = ended.logs;
    for (i, l) in inject_lateness {
        injects[i].lateness_ms = Some(l);
    }
    let log =
        Log { script: d.script.clone(), exercise, principals, drill_start, ended_at, ended_by, injects, control: ended.control, event_lateness: lateness };
    std::fs::write(out.join("drill-log.json"), serde_json::to_string_pretty(&log)?)
        .with_context(|| format!("cannot write {}", out.join("drill-log.json").display()))?;
    let recorded = aar::Recorded::read(&db)?;
    let report = aar::score(&log, &recorded);
    aar::write(&out, &report)?;
    Ok(Finished { out, aar: report })
}

/// What the twin's thread hands back.
struct Ended {
    logs: Vec<InjectLog>,
    control: Vec<(Millis, f64, String)>,
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
    let report = aar::score(&log, &recorded);
    aar::write(dir, &report)?;
    Ok(report)
}

type Driven = (Ended, String, Millis, Option<Lateness>, Vec<(usize, f64)>);

/// The twin on its own thread, in lockstep with the core; this task publishes each tick at its pace.
#[allow(clippy::too_many_arguments)]
async fn drive(
    d: &Drill,
    scenario: &towntwin_sim::Scenario,
    start: Millis,
    drill_start: Millis,
    drill_end: Millis,
    targets: RuleTargets,
    ep: &crate::broker::Endpoint,
    mut core: OverNetwork,
    control: Arc<Control>,
    logs: Vec<InjectLog>,
    threads: Option<usize>,
    exercise: &str,
) -> Result<Driven> {
    let mut publisher = Publisher::connect(ep, Mode::One, &d.town, Duration::from_secs(120)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Tick>(1);
    let (reply_tx, reply_rx) = std::sync::mpsc::channel::<Vec<Notice>>();
    let (d2, scenario, control2, exercise) = (d.clone(), scenario.clone(), control.clone(), exercise.to_string());
    let twin = std::thread::Builder::new().name("twin".into()).spawn(move || {
        let stand_down: HashSet<Principal> = d2.principals.values().cloned().collect();
        let mut twin = Twin::new(&scenario, start, d2.town.clone(), TwinOptions { threads, ..TwinOptions::default() });
        twin.set_rule_targets(targets);
        twin.mark_exercise(&exercise);
        let plan = Plan { orders: vec![None; logs.len()], resolved_at: vec![None; logs.len()], logs };
        twin_loop(&d2, twin, plan, (drill_start, drill_end), &control2, &stand_down, |tick| {
            tx.blocking_send(tick).ok()?;
            reply_rx.recv().ok()
        })
    })?;
    let mut lateness = Recorder::new();
    let mut inject_lateness = Vec::new();
    let mut failed = None;
    let mut pace: Option<Pace> = None;
    while let Some(tick) = rx.recv().await {
        let step = async {
            core.act(tick.acts).await?;
            if tick.paced.is_some() {
                for &(i, t) in &tick.started {
                    let late = keep_pace(&control, &mut pace, t).await;
                    inject_lateness.push((i, late.as_secs_f64() * 1000.0));
                }
            } else {
                pace = None;
            }
            let closing = tick.msgs.iter().rev().find(|m| m.ty == EventType::ClockTick).map(|m| m.time);
            for m in &tick.msgs {
                if tick.paced.is_some() {
                    let late = keep_pace(&control, &mut pace, m.time).await;
                    lateness.record(late.as_micros() as i64);
                }
                publisher.publish(m.clone()).await?;
            }
            core.events(&tick.msgs).await?;
            core.notices(closing).await
        };
        match step.await {
            Ok(notices) => {
                if reply_tx.send(notices).is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(rx);
    drop(reply_tx);
    let (ended, ended_by, ended_at) = twin.join().map_err(|_| anyhow!("the twin thread panicked"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let unacknowledged = publisher.flush(Duration::from_secs(120)).await;
    if unacknowledged > 0 {
        tracing::warn!("{unacknowledged} QoS 1 publishes were not acknowledged within 120 s");
    }
    let (published, qos1) = (publisher.published, publisher.published_qos1);
    publisher.close().await;
    // The core is stopped (its store closed) before the report reads it.
    drop(core.finish(published, qos1).await?);
    let lateness = lateness.summary(1000.0).map(|s| Lateness { events: s.count, p50_ms: s.p50, p99_ms: s.p99, max_ms: s.max });
    Ok((ended, ended_by, ended_at, lateness, inject_lateness))
}

/// Waits until town time `t` is due at the controller's pace, and returns how late it came. The pace is
/// anchored at the first paced event, and again after a pause or a change of speed (so either takes effect
/// at once, mid-tick); after a stop the rest goes out at once.
async fn keep_pace(control: &Control, pace: &mut Option<Pace>, t: Millis) -> Duration {
    loop {
        let (paused, stop, speed) = {
            let p = control.lock();
            (p.paused, p.stop, p.speed)
        };
        if stop {
            return Duration::ZERO;
        }
        if paused {
            control.changed.notified().await;
            *pace = None;
            continue;
        }
        let current = *pace.get_or_insert(Pace { wall: Instant::now(), town: t, speed });
        if current.speed != speed {
            *pace = Some(Pace { wall: Instant::now(), town: t, speed });
            continue;
        }
        let due = current.due(t);
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => return Instant::now().saturating_duration_since(due),
            () = control.changed.notified() => {}
        }
    }
}

/// When inject `i` is due (town time), if its start condition has come.
fn due(d: &Drill, plan: &Plan, drill_start: Millis, i: usize) -> Option<Millis> {
    let index = |id: &str| d.script.injects.iter().position(|x| x.id == id);
    let m = |minutes: f64| (minutes * MINUTE as f64).round() as Millis;
    match &d.script.injects[i].start {
        Start::At { minute } => Some(drill_start + m(*minute)),
        Start::AfterStarted { inject, minutes } => index(inject).and_then(|j| plan.logs[j].started_at).map(|t| t + m(*minutes)),
        Start::AfterHandled { inject, minutes } => index(inject).and_then(|j| plan.resolved_at[j]).map(|t| t + m(*minutes)),
        Start::Manual => None,
    }
}

/// Steps the twin to the drill's end (or the controller's stop): the warm-up at full speed, then the drill
/// at the controller's pace, injects handed to the twin as their start conditions come.
fn twin_loop(
    d: &Drill,
    mut twin: Twin,
    mut plan: Plan,
    (drill_start, drill_end): (Millis, Millis),
    control: &Control,
    trainees: &HashSet<Principal>,
    mut sink: impl FnMut(Tick) -> Option<Vec<Notice>>,
) -> (Ended, String, Millis) {
    let start = twin.clock().now;
    let mut k: i64 = 0;
    let ended_by = loop {
        let upcoming = start + k * MINUTE;
        if upcoming >= drill_end {
            break "the end of the script".to_string();
        }
        if control.lock().stop {
            break "the controller".to_string();
        }
        if upcoming >= drill_start {
            let waiting = {
                let p = control.lock();
                p.began.is_none() && !p.started
            };
            if waiting {
                say!("drill: minute 0 reached; waiting for the controller to start the drill (POST /drill/start)");
            }
            let mut p = control.lock();
            p.town = upcoming;
            while !p.started && !p.stop {
                p = control.wake.wait_timeout(p, Duration::from_millis(200)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
            while p.paused && !p.stop {
                p = control.wake.wait_timeout(p, Duration::from_millis(200)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
            if p.stop {
                break "the controller".to_string();
            }
            let first = p.began.is_none();
            if first {
                p.began = Some(Instant::now());
            }
            let (fire, skip, speed) = (std::mem::take(&mut p.fire), std::mem::take(&mut p.skip), p.speed);
            drop(p);
            if first {
                // The trainees take over their crews' new orders from minute 0; the warm-up ran as the town does.
                twin.stand_down(trainees.clone());
                say!("drill: minute 0 at town time {}; pace x{speed}", town_time(upcoming));
            }
            for i in skip {
                if plan.logs[i].status == Status::NotStarted {
                    plan.logs[i].status = Status::Skipped;
                    plan.logs[i].due_at = Some(upcoming);
                }
            }
            for &i in &d.order {
                let now_due = fire.contains(&i) || due(d, &plan, drill_start, i).is_some_and(|t| t <= upcoming);
                if plan.logs[i].status == Status::NotStarted && now_due {
                    plan.logs[i].status = Status::Started;
                    plan.logs[i].due_at = Some(upcoming);
                    twin.inject(i as u32, d.script.injects[i].what.clone());
                    say!("drill: minute {}: {} due: {}", (upcoming - drill_start) / MINUTE, d.script.injects[i].id, d.script.injects[i].title);
                }
            }
        }
        let msgs = twin.step();
        let acts = twin.take_acts();
        let mut started = Vec::new();
        for Effect { inject, at, what, .. } in twin.take_applied() {
            let log = &mut plan.logs[inject as usize];
            if log.started_at.is_none() {
                log.started_at = Some(at);
                started.push((inject as usize, at));
            }
            log.effects.push((at, what));
        }
        let Some(notices) = sink(Tick { msgs, acts, paced: (upcoming >= drill_start).then_some(upcoming), started }) else {
            break "a failure of the publisher or the core".to_string();
        };
        track_orders(&mut plan, &notices);
        twin.deliver(notices);
        update_panel(control, &plan, upcoming + MINUTE);
        k += 1;
    };
    let ended_at = start + k * MINUTE;
    let control_log = control.lock().log.clone();
    (Ended { logs: plan.logs, control: control_log }, ended_by, ended_at)
}

/// Which order each started inject made (the first about it: its rules, its area), and when it was resolved.
fn track_orders(plan: &mut Plan, notices: &[Notice]) {
    for n in notices {
        for (i, log) in plan.logs.iter_mut().enumerate() {
            if plan.orders[i].is_none() && n.event.to == OrderState::Created && log.is_about(&n.rule, &n.area, &n.subject, n.event.at) {
                plan.orders[i] = Some(n.event.order);
                log.effects.push((n.event.at, format!("order {} made ({})", n.event.order, n.rule)));
                say!("drill: {}: order {} made ({})", log.id, n.event.order, n.rule);
            }
            if plan.resolved_at[i].is_none() && n.event.to == OrderState::Resolved && plan.orders[i] == Some(n.event.order) {
                plan.resolved_at[i] = Some(n.event.at);
            }
        }
    }
}

fn update_panel(control: &Control, plan: &Plan, town: Millis) {
    let mut p = control.lock();
    p.town = town;
    for (i, v) in p.injects.iter_mut().enumerate() {
        v.status = plan.logs[i].status;
        v.started_at = plan.logs[i].started_at.map(town_time);
        v.order = plan.orders[i];
        v.resolved = plan.resolved_at[i].is_some();
    }
}

// The controller's panel over HTTP.

#[derive(Serialize)]
struct PanelStatus {
    town: String,
    minute: f64,
    started: bool,
    paused: bool,
    stopping: bool,
    speed: f64,
    injects: Vec<InjectView>,
    log: Vec<(Millis, f64, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeedBody {
    speed: f64,
}

struct PanelError(StatusCode, String);

impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/drill", get(status))
        .route("/drill/panel", get(panel_page))
        .route("/drill/panel/status", get(panel_status))
        .route("/drill/panel/login", post(panel_login))
        .route("/drill/panel/htmx.min.js", get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")], HTMX) }))
        .route("/drill/{command}", post(command))
        .route("/drill/injects/{id}/{command}", post(inject_command))
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .with_state(control)
}

/// The controller's token: as a bearer token, or in the panel page's cookie.
fn authorised(c: &Control, headers: &HeaderMap) -> Result<(), PanelError> {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let cookie = headers.get_all(axum::http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == PANEL_COOKIE).then_some(v)
    });
    if bearer.is_none() && cookie.is_some() {
        // The panel page's cookie: only from the panel's own pages (every port of 127.0.0.1 is one site).
        let origin = headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok());
        if let (Some(o), Some(h)) = (origin, host)
            && o.strip_prefix("http://") != Some(h)
        {
            return Err(PanelError(StatusCode::FORBIDDEN, format!("a request from {o} cannot use the controller's panel")));
        }
    }
    let token = bearer.or(cookie);
    if token == Some(c.token.as_str()) && !c.token.is_empty() {
        Ok(())
    } else {
        Err(PanelError(StatusCode::UNAUTHORIZED, "the controller's panel needs Authorization: Bearer <the controller's token, printed at start>".into()))
    }
}

async fn status(State(c): State<Arc<Control>>, headers: HeaderMap) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let p = c.lock();
    let s = PanelStatus {
        town: town_time(p.town),
        minute: (p.town - c.drill_start) as f64 / MINUTE as f64,
        started: p.started,
        paused: p.paused,
        stopping: p.stop,
        speed: p.speed,
        injects: p.injects.clone(),
        log: p.log.clone(),
    };
    Ok(axum::Json(s).into_response())
}

async fn command(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    UrlPath(command): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let mut p = c.lock();
    let line = match command.as_str() {
        "start" => {
            p.started = true;
            p.note("start".into())
        }
        "pause" => {
            p.paused = true;
            p.note("pause".into())
        }
        "resume" => {
            p.paused = false;
            p.note("resume".into())
        }
        "stop" => {
            p.stop = true;
            p.note("stop".into())
        }
        "speed" => {
            // JSON from a script, or the panel page's form.
            let speed = serde_json::from_slice::<SpeedBody>(&body)
                .map(|b| b.speed)
                .ok()
                .or_else(|| std::str::from_utf8(&body).ok().and_then(|s| s.strip_prefix("speed=")).and_then(|v| v.trim().parse().ok()));
            let Some(speed) = speed else {
                return Err(PanelError(StatusCode::BAD_REQUEST, "expected a body {\"speed\": <town minutes per wall minute>}".into()));
            };
            if !speed_ok(speed) {
                return Err(PanelError(StatusCode::BAD_REQUEST, format!("`speed`: expected {MIN_SPEED} to {MAX_SPEED}, got {speed}")));
            }
            p.speed = speed;
            p.note(format!("speed x{speed}"))
        }
        other => return Err(PanelError(StatusCode::NOT_FOUND, format!("no command `{other}`: start, pause, resume, speed, stop"))),
    };
    drop(p);
    say!("{line}");
    c.wake.notify_all();
    c.changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn inject_command(State(c): State<Arc<Control>>, headers: HeaderMap, UrlPath((id, command)): UrlPath<(String, String)>) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let i = c.ids.iter().position(|x| *x == id).ok_or_else(|| PanelError(StatusCode::NOT_FOUND, format!("no inject `{id}` in this drill")))?;
    let mut p = c.lock();
    if p.injects[i].status != Status::NotStarted || p.fire.contains(&i) || p.skip.contains(&i) {
        return Err(PanelError(StatusCode::CONFLICT, format!("inject {id} has started or been skipped already")));
    }
    match command.as_str() {
        "fire" => p.fire.push(i),
        "skip" => p.skip.push(i),
        other => return Err(PanelError(StatusCode::NOT_FOUND, format!("no inject command `{other}`: fire, skip"))),
    }
    let line = p.note(format!("{command} {id}"));
    drop(p);
    say!("{line}");
    c.wake.notify_all();
    c.changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

// The controller's panel as a page: the same commands, as buttons.

static HTMX: &[u8] = include_bytes!("../../../assets/console/htmx.min.js");
const PANEL_COOKIE: &str = "towntwin_controller";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn panel_html(body: &str) -> axum::response::Html<String> {
    axum::response::Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Drill controller</title><script src=/drill/panel/htmx.min.js></script>\
         <style>body{{font-family:sans-serif;margin:1em 2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}th{{background:#eee}}\
         button{{margin-right:.4em}}</style></head><body><h1>Drill controller</h1>{body}</body></html>"
    ))
}

async fn panel_page(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if authorised(&c, &headers).is_err() {
        return panel_html(
            "<form method=post action=/drill/panel/login><label>Controller's token <input id=token name=token type=password size=70></label> <button id=signin>Sign in</button></form>",
        )
        .into_response();
    }
    panel_html(
        "<p><button hx-post=/drill/start hx-swap=none>Start</button><button hx-post=/drill/pause hx-swap=none>Pause</button>\
         <button hx-post=/drill/resume hx-swap=none>Resume</button><button hx-post=/drill/stop hx-swap=none hx-confirm=\"End the drill now?\">Stop</button>\
         <form hx-post=/drill/speed hx-swap=none style=display:inline><input name=speed size=5 placeholder=1> <button>Set speed</button></form></p>\
         <div id=status hx-get=/drill/panel/status hx-trigger=\"load, every 1s\"></div>",
    )
    .into_response()
}

#[derive(Deserialize)]
struct PanelLogin {
    token: String,
}

async fn panel_login(State(c): State<Arc<Control>>, axum::extract::Form(f): axum::extract::Form<PanelLogin>) -> Response {
    if c.token.is_empty() || f.token.trim() != c.token {
        return (StatusCode::UNAUTHORIZED, panel_html("<p>That is not the controller's token. <a href=/drill/panel>Try again</a></p>")).into_response();
    }
    let cookie = format!("{PANEL_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/drill", c.token);
    ([(axum::http::header::SET_COOKIE, cookie)], axum::response::Redirect::to("/drill/panel")).into_response()
}

async fn panel_status(State(c): State<Arc<Control>>, headers: HeaderMap) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let p = c.lock();
    let state = if p.stop {
        "stopping"
    } else if !p.started {
        "waiting for start"
    } else if p.paused {
        "paused"
    } else {
        "running"
    };
    let mut h = format!(
        "<p>Town time <b>{}</b>, drill minute <b>{:.0}</b>, {state}, pace x{}.</p><table><tr><th>inject</th><th>state</th><th>started</th><th>order</th><th></th></tr>",
        town_time(p.town),
        (p.town - c.drill_start) as f64 / MINUTE as f64,
        p.speed
    );
    for v in &p.injects {
        let buttons = if v.status == Status::NotStarted {
            format!(
                "<button hx-post=\"/drill/injects/{id}/fire\" hx-swap=none>Fire now</button><button hx-post=\"/drill/injects/{id}/skip\" hx-swap=none>Skip</button>",
                id = esc(&v.id)
            )
        } else {
            String::new()
        };
        let order = v.order.map_or_else(String::new, |o| format!("{o}{}", if v.resolved { " (resolved)" } else { "" }));
        h.push_str(&format!(
            "<tr><td><b>{}</b>: {}</td><td>{:?}</td><td>{}</td><td>{order}</td><td>{buttons}</td></tr>",
            esc(&v.id),
            esc(&v.title),
            v.status,
            v.started_at.as_deref().unwrap_or("")
        ));
    }
    h.push_str("</table><h2>Log</h2><ul>");
    for (t, wall, what) in p.log.iter().rev().take(20) {
        h.push_str(&format!("<li>{} (wall {wall:.0} s): {}</li>", town_time(*t), esc(what)));
    }
    h.push_str("</ul>");
    Ok(axum::response::Html(h).into_response())
}
