//! The after-action report: each inject scored from what the core recorded, against the script.
//!
//! A drill leaves two records in its folder: the core's store (`core.db`: every order, every transition
//! with who made it and when, and in the audit log every order a principal opened) and the controller's
//! log (`drill-log.json`: the script, when each inject took effect in the town, what the controller did,
//! and how late the twin kept to the wall clock). The report is a function of those two alone, so
//! `towntwin drill --replay DIR` rebuilds it from a finished drill's folder.
//!
//! For each inject: the order it made is the first order about it (a rule that detects what the inject
//! does, in the inject's area, about its resident, flat or device, made at or after the inject took
//! effect). Each expectation is met when its
//! trainee did the action (opened the order, accepted it, started work on it, resolved it) within its
//! minutes of the inject's start; times are the core's event time, to the minute of the twin's clock.
//! Each objective is rated as HSEEP does, from the share of its points earned: P (performed without
//! challenges, all of them), S (with some challenges, at least half), M (major challenges, some), U (unable
//! to be performed, none). An expectation that was not due within the drill (its inject never started, was
//! skipped, or its deadline came after the end) and was not done is left out: not exercised (`-`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use towntwin_core::orders::{Loop, Order, OrderEvent};
use towntwin_core::time::{MINUTE, Millis};
use towntwin_core::truth::{Detects, IncidentKind, MatchBy, Sighting, Span};
use towntwin_core::web::html::esc;
use towntwin_core::web::i18n::Lang;

use super::script::{Expected, Script, Start};
use crate::plots::{color, e, plot};

/// A sentence of the report in `lang`: its English and its Chinese template, each naming the same locals.
macro_rules! say {
    ($lang:expr, $en:literal, $zh:literal) => {
        match $lang {
            Lang::En => format!($en),
            Lang::Zh => format!($zh),
        }
    };
}

mod page;

pub use page::*;

/// How an inject went, as the controller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its start condition never came (or the controller never fired it).
    NotStarted,
    Started,
    /// The controller skipped it.
    Skipped,
}

impl Status {
    /// As the report and the controller's panel show it.
    pub fn label(self, lang: Lang) -> &'static str {
        match self {
            Status::NotStarted => lang.t("not started"),
            Status::Started => lang.t("took effect"),
            Status::Skipped => lang.t("skipped"),
        }
    }
}

/// One inject in the controller's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InjectLog {
    pub id: String,
    pub status: Status,
    /// Town time its start condition came (or the controller fired it).
    pub due_at: Option<Millis>,
    /// Town time it took effect in the twin (its first effect).
    pub started_at: Option<Millis>,
    /// What it made happen, with town times.
    pub effects: Vec<(Millis, String)>,
    /// How late (ms) the twin's traffic reached the inject's town time, against the wall time the pace
    /// scheduled for it; `None` at full speed (warm-up) or when it never started.
    pub lateness_ms: Option<f64>,
    /// The rules whose orders are about this inject (those that detect what it does).
    pub rules: Vec<String>,
    /// The inject's area: the area of its order.
    pub area: String,
    /// What its order names within the area (the resident, the flat, the device); empty: any (a fire's
    /// order names the detector that sounded first).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Fired by the controller from the catalogue, not in the script.
    #[serde(default)]
    pub adhoc: bool,
}

impl InjectLog {
    /// The log of an inject that has not started: the rules (of `rules`, each with the kinds it detects)
    /// whose orders are about it, its area, and what its order names in `town`.
    pub fn new(inj: &super::script::Inject, area: String, rules: &[(String, Vec<IncidentKind>)], town: &towntwin_core::town::Town, adhoc: bool) -> InjectLog {
        let kind = kind_of(&inj.what);
        InjectLog {
            id: inj.id.clone(),
            status: Status::NotStarted,
            due_at: None,
            started_at: None,
            effects: Vec::new(),
            lateness_ms: None,
            rules: rules.iter().filter(|(_, kinds)| kinds.contains(&kind)).map(|(r, _)| r.clone()).collect(),
            area,
            subjects: super::live::subjects_of(&inj.what, town),
            adhoc,
        }
    }

    /// Whether an order of `rule`, seen as `o`, is about this inject by the one rule for it
    /// (`Detects::is_about`): the inject's incident is of `kind`, in its area, about one of its subjects
    /// (any, for an order that names only the area), going on from the inject's start.
    pub fn is_about(&self, kind: IncidentKind, rule: &str, o: &Sighting<'_>) -> bool {
        let Some(start) = self.started_at else { return false };
        if !self.rules.iter().any(|r| r == rule) {
            return false;
        }
        let by = if self.subjects.is_empty() { MatchBy::Area } else { MatchBy::Subject };
        let detects = Detects { kinds: vec![kind], by };
        let subjects: &[String] = if self.subjects.is_empty() { std::slice::from_ref(&self.area) } else { &self.subjects };
        // Going on for the drill's whole length: `now` is the order's own last sighting.
        subjects.iter().any(|s| detects.is_about(o, &Span { kind, area: &self.area, subject: s, start, end: None }, o.last_seen))
    }
}

/// The controller's log of a drill (`drill-log.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Log {
    pub script: Script,
    pub exercise: String,
    /// Trainee name -> principal.
    pub principals: BTreeMap<String, String>,
    /// Town time of drill minute 0.
    pub drill_start: Millis,
    /// Town time the drill ended, and why.
    pub ended_at: Millis,
    pub ended_by: String,
    pub injects: Vec<InjectLog>,
    /// What the controller did: (town time, wall seconds since the drill began, what).
    pub control: Vec<(Millis, f64, String)>,
    /// Lateness of every event of the drill's paced part against its scheduled wall time, ms.
    pub event_lateness: Option<Lateness>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lateness {
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What the core recorded, as far as the report needs it.
pub struct Recorded {
    pub orders: Vec<Order>,
    pub history: HashMap<u64, Vec<OrderEvent>>,
    /// (event time, principal, order) of every order opened.
    pub views: Vec<(Millis, String, u64)>,
    /// The evaluators' observations, in the order they were recorded.
    pub observations: Vec<Observation>,
}

/// HSEEP's two kinds of observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservationKind {
    Strength,
    /// An area for improvement.
    Improvement,
}

/// An evaluator's observation, kept in the core's audit log (`observe`, by the evaluator's principal, at
/// the core's event time): its target `objective O1` or `objective O1 inject I2`, its outcome the JSON of
/// [`Noted`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observation {
    /// Town time.
    pub at: Millis,
    /// The evaluator's name (their principal is `town/evaluator-<name>`).
    pub evaluator: String,
    pub objective: String,
    pub inject: Option<String>,
    pub kind: ObservationKind,
    pub text: String,
    #[serde(default)]
    pub corrective_action: Option<String>,
}

/// What an observation says, as the audit entry's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noted {
    pub kind: ObservationKind,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrective_action: Option<String>,
}

/// The audit entry's target for an observation.
pub fn observation_target(objective: &str, inject: Option<&str>) -> String {
    match inject {
        Some(i) => format!("objective {objective} inject {i}"),
        None => format!("objective {objective}"),
    }
}

impl Observation {
    /// An observation from its audit entry, if it is one.
    fn of(e: &towntwin_core::audit::Entry) -> Option<Observation> {
        if e.what != "observe" {
            return None;
        }
        let evaluator = e.actor.split_once("/evaluator-").map(|(_, n)| n.to_string())?;
        let rest = e.target.strip_prefix("objective ")?;
        let (objective, inject) = match rest.split_once(" inject ") {
            Some((o, i)) => (o.to_string(), Some(i.to_string())),
            None => (rest.to_string(), None),
        };
        let n: Noted = serde_json::from_str(&e.outcome).ok()?;
        Some(Observation { at: e.at, evaluator, objective, inject, kind: n.kind, text: n.text, corrective_action: n.corrective_action })
    }
}

impl Recorded {
    /// Reads the core's store at `db` (a finished drill's).
    pub fn read(db: &Path) -> Result<Recorded> {
        let store = towntwin_core::store::Reader::open(db).with_context(|| format!("cannot open the drill's store {}", db.display()))?;
        let orders = store.orders().with_context(|| format!("cannot read {}", db.display()))?;
        let mut history: HashMap<u64, Vec<OrderEvent>> = orders.iter().map(|o| (o.id, Vec::new())).collect();
        for e in store.history()? {
            history.entry(e.order).or_default().push(e);
        }
        let audit = store.audit_entries()?;
        let views = audit
            .iter()
            .filter(|s| s.entry.what == "view" && s.entry.outcome == "seen")
            .filter_map(|s| s.entry.target.strip_prefix("order ").and_then(|n| n.parse().ok()).map(|n| (s.entry.at, s.entry.actor.clone(), n)))
            .collect();
        let observations = audit.iter().filter_map(|s| Observation::of(&s.entry)).collect();
        Ok(Recorded { orders, history, views, observations })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aar {
    pub drill: String,
    pub exercise: String,
    pub description: String,
    /// Town times.
    pub start: String,
    pub end: String,
    pub ended_by: String,
    pub minutes: f64,
    pub trainees: BTreeMap<String, String>,
    pub injects: Vec<InjectScore>,
    pub objectives: Vec<ObjectiveScore>,
    pub earned: u32,
    pub possible: u32,
    pub timeline: Vec<Moment>,
    pub inject_lateness_ms: BTreeMap<String, f64>,
    pub event_lateness: Option<Lateness>,
    /// Evaluator name -> the objectives they evaluate.
    #[serde(default)]
    pub evaluators: BTreeMap<String, Vec<String>>,
    /// The evaluators' observations, as the core's audit log kept them.
    #[serde(default)]
    pub observations: Vec<Observation>,
    /// The hotwash's agenda: per objective, its strengths and areas for improvement.
    #[serde(default)]
    pub hotwash: Vec<Hotwash>,
    /// The improvement plan (HSEEP's IP): a row per area for improvement.
    #[serde(default)]
    pub improvement_plan: Vec<Improvement>,
}

/// What the hotwash (the talk straight after the drill) goes through for one objective.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hotwash {
    pub objective: String,
    pub text: String,
    pub rating: String,
    pub strengths: Vec<String>,
    pub improvements: Vec<String>,
}

/// A row of the improvement plan: an area for improvement and what is to be done about it, by whom, by when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Improvement {
    /// The objective (the capability exercised), by id.
    pub objective: String,
    pub capability: String,
    /// The area for improvement: what was seen.
    pub observation: String,
    pub corrective_action: String,
    /// The organisation to act: the trainee's principal, or the principals the objective's tasks name.
    pub owner: String,
    /// Local date it is due: 30 days after the drill.
    pub due: String,
    /// Where it came from: an evaluator's observation, or an expectation not met.
    pub source: String,
}

/// The improvement plan's columns, as `improvement-plan.csv` has them.
pub const IMPROVEMENT_PLAN_COLUMNS: [&str; 7] = ["Objective", "Capability", "Area for improvement", "Corrective action", "Owner", "Due", "Source"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InjectScore {
    pub id: String,
    pub title: String,
    pub status: Status,
    /// Drill minute it took effect.
    pub started_minute: Option<f64>,
    pub order: Option<u64>,
    pub order_rule: Option<String>,
    /// Minutes from the inject's start to its order.
    pub order_after_minutes: Option<f64>,
    pub expectations: Vec<ExpectationScore>,
    /// Fired by the controller from the catalogue, not in the script.
    #[serde(default)]
    pub adhoc: bool,
    /// Why it did not start (its condition never came, the controller never fired or skipped it), or why
    /// it made no order; `None` when it started and made one.
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpectationScore {
    pub by: String,
    pub action: Expected,
    /// The loop it was to be done in, where the script names one.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub in_loop: Option<Loop>,
    pub within_minutes: f64,
    pub points: u32,
    pub objective: String,
    /// Minutes from the inject's start until the trainee did it, if they did.
    pub done_after_minutes: Option<f64>,
    pub met: bool,
    pub earned: u32,
    /// Whether it was due within the drill (its inject started and its deadline came before the end), or
    /// done anyway. One that was not is left out of the points possible: it was not exercised.
    pub exercised: bool,
    /// Why it was not met: done late, done by someone else, nobody acted, nothing to act on, not due.
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectiveScore {
    pub id: String,
    pub text: String,
    pub earned: u32,
    pub possible: u32,
    /// HSEEP: P, S, M or U.
    pub rating: String,
}

/// One line of the timeline, in drill minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moment {
    pub minute: f64,
    pub what: String,
}

/// Town (local) time to the minute: `2026-03-02 08:05`.
pub fn town_time(t: Millis) -> String {
    let l = towntwin_core::time::Local::of(t);
    format!("{} {:02}:{:02}", l.date_string(), l.hour, l.minute)
}

fn minutes_between(from: Millis, to: Millis) -> f64 {
    (to - from) as f64 / MINUTE as f64
}

/// The order an inject made: the first about it ([`InjectLog::is_about`]); or, when the core added the
/// inject's alarm to an order about the same thing that was open already, that order.
pub fn order_of<'a>(inj: &InjectLog, kind: IncidentKind, orders: &'a [Order]) -> Option<&'a Order> {
    let start = inj.started_at?;
    // Of the orders about it, one made from the inject's minute on; else the first seen before.
    orders.iter().filter(|o| inj.is_about(kind, &o.rule, &o.sighting())).min_by_key(|o| (o.created_at < start - MINUTE, o.created_at, o.id))
}

/// The incident kind each inject makes, whose rules' orders are about it.
pub fn kind_of(what: &super::script::What) -> IncidentKind {
    match what {
        super::script::What::Incapacitate { .. } => IncidentKind::VulnerableEmergency,
        super::script::What::Fire { .. } => IncidentKind::Fire,
        super::script::What::NewFaces { .. } => IncidentKind::GroupRental,
        super::script::What::DeviceDark { .. } => IncidentKind::DeviceOffline,
        super::script::What::IllegalWorks { .. } => IncidentKind::RenovationIllegal,
        super::script::What::EbikeInElevator { .. } => IncidentKind::EbikeElevator,
        super::script::What::IndoorCharging { .. } => IncidentKind::EbikeIndoorCharging,
        super::script::What::DumpedBags { .. } => IncidentKind::GarbageDumping,
        super::script::What::FenceViolation { .. } => IncidentKind::FenceViolation,
    }
}

/// HSEEP's rating from the points an objective earned.
pub fn rating(earned: u32, possible: u32) -> &'static str {
    match (earned, possible) {
        // Nothing of it was due within the drill: not exercised.
        (_, 0) => "-",
        (e, p) if e >= p => "P",
        (e, p) if 2 * e >= p => "S",
        (0, _) => "U",
        _ => "M",
    }
}

/// An expected action as the report names it: `Accept`, 受理; the English lower-cased in sentences.
pub fn expected_name(lang: Lang, x: Expected) -> String {
    match (lang, x.action()) {
        (Lang::En, _) => format!("{x:?}"),
        (Lang::Zh, None) => "查看".into(),
        (Lang::Zh, Some(a)) => lang.action(a).into(),
    }
}

/// Scores the drill of `log` from what the core recorded, its sentences in `lang`.
pub fn score(log: &Log, rec: &Recorded, lang: Lang) -> Aar {
    let s = &log.script;
    let minute = |t: Millis| minutes_between(log.drill_start, t);
    let mut timeline = Vec::new();
    let mut injects = Vec::new();
    let orders: Vec<Option<&Order>> = s.injects.iter().zip(&log.injects).map(|(inj, il)| order_of(il, kind_of(&inj.what), &rec.orders)).collect();
    for (i, (inj, il)) in s.injects.iter().zip(&log.injects).enumerate() {
        let order = orders[i];
        let (id, title) = (&inj.id, &inj.title);
        if let Some(t) = il.started_at {
            timeline.push(Moment { minute: minute(t), what: say!(lang, "{id} starts: {title}", "{id} 生效：{title}") });
        }
        // What the inject made happen in the twin, as the twin said it (the order it made is in the
        // order's own history below).
        let made = order.map(|o| format!("order {} made ({})", o.id, o.rule));
        for (t, what) in il.effects.iter().filter(|(_, w)| Some(w) != made.as_ref()) {
            timeline.push(Moment { minute: minute(*t), what: format!("{id}: {what}") });
        }
        if il.status == Status::Skipped {
            timeline
                .push(Moment {
                    minute: minute(il.due_at.unwrap_or(log.ended_at)), what: say!(lang, "{id} skipped by the controller", "{id} 被导调员跳过")
                });
        }
        let history = order.and_then(|o| rec.history.get(&o.id)).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(o) = order {
            for (k, ev) in history.iter().enumerate() {
                let (n, rule, action, actor) = (o.id, &o.rule, lang.action(&ev.action), &ev.actor);
                let from = taken_in(history, k);
                let (taken, level) = (lang.level(from), lang.level(ev.level));
                let mut what = say!(lang, "order {n} ({rule}, {taken} loop): {action} by {actor}", "工单 {n}（{rule}，{taken}）：{actor} {action}");
                if from != ev.level {
                    what += &say!(lang, ", up to the {level} loop", "，升至{level}");
                }
                timeline.push(Moment { minute: minute(ev.at), what });
            }
        }
        let expectations = inj
            .expect
            .iter()
            .map(|x| {
                let principal = log.principals.get(&x.by).cloned().unwrap_or_default();
                let in_loop = |l: Loop| x.in_loop.is_none_or(|want| want == l);
                let done = match (order, il.started_at) {
                    (Some(o), Some(start)) => {
                        let at = match x.action.action() {
                            None => rec.views.iter().filter(|v| v.2 == o.id && v.1 == principal && in_loop(loop_at(history, v.0))).map(|v| v.0).min(),
                            Some(name) => {
                                // On a joint visit a party's resolve is its report.
                                let taken =
                                    history.iter().enumerate().filter(|(k, ev)| is_step(ev, name) && ev.actor == principal && in_loop(taken_in(history, *k)));
                                taken.map(|(_, ev)| ev.at).min()
                            }
                        };
                        at.map(|t| minutes_between(start, t).max(0.0))
                    }
                    _ => None,
                };
                let met = done.is_some_and(|m| m <= x.within_minutes);
                let due = il.started_at.map(|s| s + (x.within_minutes * MINUTE as f64) as Millis);
                let exercised = done.is_some() || due.is_some_and(|d| d <= log.ended_at);
                let why = (!met).then(|| {
                    let views: Vec<Millis> =
                        order.map(|o| rec.views.iter().filter(|v| v.2 == o.id && v.1 == principal).map(|v| v.0).collect()).unwrap_or_default();
                    let ctx = Unmet { log, order, history, views: &views, principal: &principal, done, due, lang };
                    ctx.why(x)
                });
                ExpectationScore {
                    by: x.by.clone(),
                    action: x.action,
                    in_loop: x.in_loop,
                    within_minutes: x.within_minutes,
                    points: x.points,
                    objective: x.objective.clone(),
                    done_after_minutes: done,
                    met,
                    earned: if met { x.points } else { 0 },
                    exercised,
                    why,
                }
            })
            .collect();
        injects.push(InjectScore {
            id: inj.id.clone(),
            title: inj.title.clone(),
            status: il.status,
            started_minute: il.started_at.map(minute),
            order: order.map(|o| o.id),
            order_rule: order.map(|o| o.rule.clone()),
            order_after_minutes: order.zip(il.started_at).map(|(o, t)| minutes_between(t, o.created_at)),
            expectations,
            adhoc: il.adhoc,
            why: match (il.started_at, order) {
                (None, _) => Some(why_not_started(log, rec, &orders, i, 0, lang)),
                (Some(_), None) => {
                    let rules = if il.rules.is_empty() { say!(lang, "none in this core's rules", "本平台的规则中没有") } else { il.rules.join(", ") };
                    Some(say!(
                        lang,
                        "it took effect, but no order about it was made by the end (rules that would: {rules})",
                        "已在镇里发生，但到演练结束没有生成关于它的工单（会生成的规则：{rules}）"
                    ))
                }
                (Some(_), Some(_)) => None,
            },
        });
    }
    for (t, wall, what) in &log.control {
        let what = if lang == Lang::Zh { command_zh(what) } else { what.clone() };
        timeline
            .push(Moment { minute: minute(*t), what: say!(lang, "controller: {what} (wall {wall:.0} s)", "导调员：{what}（现实第 {wall:.0} 秒）") });
    }
    timeline.sort_by(|a, b| a.minute.total_cmp(&b.minute));
    let objectives: Vec<ObjectiveScore> = s
        .objectives
        .iter()
        .map(|ob| {
            let serving = injects.iter().flat_map(|i| &i.expectations).filter(|x| x.objective == ob.id);
            let (earned, possible) = serving.filter(|x| x.exercised).fold((0, 0), |(e, p), x| (e + x.earned, p + x.points));
            ObjectiveScore { id: ob.id.clone(), text: ob.text.clone(), earned, possible, rating: rating(earned, possible).into() }
        })
        .collect();
    let earned = objectives.iter().map(|o| o.earned).sum();
    let possible = objectives.iter().map(|o| o.possible).sum();
    let (hotwash, improvement_plan) = debrief(log, rec, &injects, &objectives, lang);
    Aar {
        drill: s.name.clone(),
        exercise: log.exercise.clone(),
        description: s.description.clone(),
        start: town_time(log.drill_start),
        end: town_time(log.ended_at),
        ended_by: log.ended_by.clone(),
        minutes: minute(log.ended_at),
        trainees: log.principals.clone(),
        injects,
        objectives,
        earned,
        possible,
        timeline,
        inject_lateness_ms: log.injects.iter().filter_map(|i| i.lateness_ms.map(|l| (i.id.clone(), l))).collect(),
        event_lateness: log.event_lateness.clone(),
        evaluators: s.evaluators.iter().map(|e| (e.name.clone(), e.objectives.clone())).collect(),
        observations: rec.observations.clone(),
        hotwash,
        improvement_plan,
    }
}

/// A controller's command as the panel logs it (`pause`, `speed x60`, `fire I2`, `fire ad-hoc X1: title`,
/// `stop (interrupted)`), in Chinese; anything else as logged.
fn command_zh(what: &str) -> String {
    let (head, rest) = what.split_once(' ').unwrap_or((what, ""));
    match (head, rest) {
        ("start", "") => "开始演练".into(),
        ("pause", "") => "暂停".into(),
        ("resume", "") => "继续".into(),
        ("step", "") => "前进一分钟".into(),
        ("stop", "") => "终止演练".into(),
        ("stop", "(interrupted)") => "终止演练（中断）".into(),
        ("speed", r) => format!("倍速改为 {r}"),
        ("fire", r) => match r.strip_prefix("ad-hoc ") {
            Some(adhoc) => format!("发出临时注入 {adhoc}"),
            None => format!("发出注入 {r}"),
        },
        ("skip", r) => format!("跳过注入 {r}"),
        _ => what.into(),
    }
}

/// The hotwash's agenda and the improvement plan: strengths are the evaluators' and the expectations met in
/// time; areas for improvement the evaluators' and the expectations exercised and not met, each of which
/// becomes a row of the plan, owned by the trainee's principal (an evaluator's, by the principals the
/// objective's tasks name, unless they named an action), due 30 days after the drill.
fn debrief(log: &Log, rec: &Recorded, injects: &[InjectScore], objectives: &[ObjectiveScore], lang: Lang) -> (Vec<Hotwash>, Vec<Improvement>) {
    let due = towntwin_core::time::Local::of(log.ended_at + 30 * towntwin_core::time::DAY).date_string();
    let minute = |t: Millis| minutes_between(log.drill_start, t);
    let mut hotwash = Vec::new();
    let mut plan = Vec::new();
    for ob in objectives {
        let (mut strengths, mut improvements) = (Vec::new(), Vec::new());
        let tasks: Vec<(&InjectScore, &ExpectationScore)> =
            injects.iter().flat_map(|i| i.expectations.iter().filter(|x| x.objective == ob.id).map(move |x| (i, x))).collect();
        let mut owners: Vec<String> = tasks.iter().filter_map(|(_, x)| log.principals.get(&x.by).cloned()).collect();
        owners.sort();
        owners.dedup();
        for (i, x) in &tasks {
            let (by, id, title, within) = (&x.by, &i.id, &i.title, x.within_minutes);
            let action = expected_name(lang, x.action);
            if x.met {
                let took = x.done_after_minutes.unwrap_or(0.0);
                strengths.push(say!(
                    lang,
                    "{by} {action} on {id} in {took:.0} of {within:.0} min",
                    "{by} 在 {id} 中完成“{action}”，用时 {took:.0} 分钟（时限 {within:.0} 分钟）"
                ));
            } else if x.exercised {
                let why = x.why.clone().unwrap_or_else(|| say!(lang, "not met", "未达成"));
                improvements.push(say!(lang, "{by} {action} on {id}: {why}", "{by} 在 {id} 中的“{action}”：{why}"));
                let act = action.to_lowercase();
                let rule = match (&i.order_rule, lang) {
                    (Some(r), Lang::En) => r.clone(),
                    (Some(r), Lang::Zh) => format!(" {r} "),
                    (None, _) => say!(lang, "such", "此类"),
                };
                plan.push(Improvement {
                    objective: ob.id.clone(),
                    capability: ob.text.clone(),
                    observation: say!(
                        lang,
                        "{by} did not {act} within {within:.0} min of {id} ({title}): {why}",
                        "{by} 未在 {id}（{title}）开始后 {within:.0} 分钟内完成“{action}”：{why}"
                    ),
                    corrective_action: say!(
                        lang,
                        "Rehearse: {by} to {act} {rule} orders within {within:.0} min of the alarm (a drill of its own, then again in this one)",
                        "复训：{by} 在告警后 {within:.0} 分钟内对{rule}工单完成“{action}”（先单项演练，再纳入本演练复演）"
                    ),
                    owner: log.principals.get(&x.by).cloned().unwrap_or_else(|| x.by.clone()),
                    due: due.clone(),
                    source: say!(lang, "expectation of {id}", "{id} 的预期行动"),
                });
            }
        }
        for o in rec.observations.iter().filter(|o| o.objective == ob.id) {
            let (objective, evaluator, at, text) = (&o.objective, &o.evaluator, minute(o.at), &o.text);
            let about = o.inject.as_deref().map(|i| say!(lang, " on {i}", "{i}，")).unwrap_or_default();
            let line = say!(
                lang,
                "{objective}{about} (evaluator {evaluator}, minute {at:.0}): {text}",
                "{objective}（{about}评估员 {evaluator}，第 {at:.0} 分钟）：{text}"
            );
            match o.kind {
                ObservationKind::Strength => strengths.push(line),
                ObservationKind::Improvement => {
                    improvements.push(line);
                    plan.push(Improvement {
                        objective: ob.id.clone(),
                        capability: ob.text.clone(),
                        observation: match (lang, o.inject.as_deref()) {
                            (Lang::Zh, Some(i)) => format!("{text}（{i}）"),
                            _ => format!("{text}{about}"),
                        },
                        corrective_action: o.corrective_action.clone().unwrap_or_else(|| say!(lang, "to be agreed at the hotwash", "待复盘会商定")),
                        owner: if owners.is_empty() { say!(lang, "to be named at the hotwash", "待复盘会指定") } else { owners.join(", ") },
                        due: due.clone(),
                        source: say!(lang, "evaluator {evaluator} at minute {at:.0}", "评估员 {evaluator}，第 {at:.0} 分钟"),
                    });
                }
            }
        }
        hotwash.push(Hotwash { objective: ob.id.clone(), text: ob.text.clone(), rating: ob.rating.clone(), strengths, improvements });
    }
    (hotwash, plan)
}

/// Whether `ev` is the step `name` (an [`Expected::action`]): on a joint visit a party's resolve is its
/// report.
fn is_step(ev: &OrderEvent, name: &str) -> bool {
    ev.action == name || (name == "resolve" && ev.action == "report")
}

/// The loop the `k`th step of an order's history was taken in: the loop the order was in before it (an
/// escalation or a whistle is recorded in the loop it went to).
fn taken_in(history: &[OrderEvent], k: usize) -> Loop {
    history.get(k.saturating_sub(1)).map_or(Loop::Small, |e| e.level)
}

/// The loop an order was in at `t`: a step at the same time as `t` is taken to come after it (a trainee
/// opens the order, then acts on it, in the same minute).
fn loop_at(history: &[OrderEvent], t: Millis) -> Loop {
    let before = history.iter().take_while(|e| e.at < t).last().or(history.first());
    before.map_or(Loop::Small, |e| e.level)
}

/// When an order was first resolved (by a resolve, or its joint visit's last report).
fn resolved_at(rec: &Recorded, order: u64) -> Option<Millis> {
    rec.history.get(&order)?.iter().filter(|e| e.to == towntwin_core::orders::State::Resolved).map(|e| e.at).min()
}

/// Where an order was left: its state, loop and assignees.
fn left(o: &Order, lang: Lang) -> String {
    let (state, level) = (lang.state(o.state), lang.level(o.level));
    let who: Vec<&str> = o.assignee.iter().map(|r| lang.role(*r)).collect();
    let who = who.join(if lang == Lang::Zh { "、" } else { ", " });
    match (lang, who.is_empty()) {
        (Lang::En, true) => format!("{state} in the {level} loop"),
        (Lang::En, false) => format!("{state} in the {level} loop, assigned to {who}"),
        (Lang::Zh, true) => format!("{level}，{state}"),
        (Lang::Zh, false) => format!("{level}，{state}，派往{who}"),
    }
}

/// Why inject `i` of `log` did not take effect: following what it waited for, back to the start condition
/// that never came.
fn why_not_started(log: &Log, rec: &Recorded, orders: &[Option<&Order>], i: usize, depth: usize, lang: Lang) -> String {
    let s = &log.script;
    let il = &log.injects[i];
    let minute = |t: Millis| minutes_between(log.drill_start, t);
    let end = minute(log.ended_at);
    if il.adhoc && il.due_at.is_none() && il.status == Status::NotStarted {
        return say!(lang, "fired by the controller as the drill ended: it never took effect", "导调员在演练结束时才发出：未能生效");
    }
    if il.status == Status::Skipped {
        let at = minute(il.due_at.unwrap_or(log.ended_at));
        return say!(lang, "skipped by the controller at minute {at:.0}", "导调员在第 {at:.0} 分钟跳过了该注入");
    }
    if let Some(due) = il.due_at {
        let hint = match &s.injects[i].what {
            super::script::What::Incapacitate { resident, .. } => {
                say!(lang, " ({resident} is taken ill once she is home and well, and she was not)", "（{resident} 须在家且身体如常时才会发病，当时并非如此）")
            }
            _ => String::new(),
        };
        let due = minute(due);
        return say!(
            lang,
            "due at minute {due:.0}, but it had not taken effect in the town when the drill ended at minute {end:.0}{hint}",
            "应于第 {due:.0} 分钟发生，但到演练结束（第 {end:.0} 分钟）仍未在镇里生效{hint}"
        );
    }
    let index = |id: &str| s.injects.iter().position(|x| x.id == id).filter(|&j| j < log.injects.len() && j < orders.len());
    let earlier = |j: usize| if depth < 8 { why_not_started(log, rec, orders, j, depth + 1, lang) } else { say!(lang, "(and so on)", "（依此类推）") };
    match s.injects.get(i).map(|x| &x.start) {
        None => say!(lang, "it is not in the script", "剧本中没有该注入"),
        Some(Start::At { minute: m }) => {
            say!(lang, "its minute {m} came after the drill ended at minute {end:.0}", "计划于第 {m} 分钟注入，晚于演练结束（第 {end:.0} 分钟）")
        }
        Some(Start::Manual) => say!(lang, "the controller never fired it", "导调员始终未发出该注入"),
        Some(Start::AfterStarted { inject, minutes }) => match index(inject) {
            None => say!(lang, "it waits for {inject}, which is not in the script", "需等 {inject}，而剧本中没有 {inject}"),
            Some(j) => match log.injects[j].started_at {
                None => {
                    let e = earlier(j);
                    say!(lang, "it waits for {inject} to start, which never did: {e}", "需等 {inject} 开始，而 {inject} 始终未开始：{e}")
                }
                Some(t) => {
                    let (t, d) = (minute(t), minute(t) + minutes);
                    say!(
                        lang,
                        "due {minutes} min after {inject} started at minute {t:.0}: minute {d:.0}, after the drill ended at minute {end:.0}",
                        "应在 {inject} 开始（第 {t:.0} 分钟）后 {minutes} 分钟，即第 {d:.0} 分钟，晚于演练结束（第 {end:.0} 分钟）"
                    )
                }
            },
        },
        Some(Start::AfterHandled { inject, minutes }) => match index(inject) {
            None => say!(lang, "it waits for {inject}, which is not in the script", "需等 {inject}，而剧本中没有 {inject}"),
            Some(j) => match (log.injects[j].started_at, orders[j]) {
                (None, _) => {
                    let e = earlier(j);
                    say!(
                        lang,
                        "it waits for {inject}'s order to be resolved, and {inject} never started: {e}",
                        "需等 {inject} 的工单办结，而 {inject} 始终未开始：{e}"
                    )
                }
                (Some(_), None) => {
                    say!(lang, "it waits for {inject}'s order to be resolved, and {inject} made no order", "需等 {inject} 的工单办结，而 {inject} 没有生成工单")
                }
                (Some(_), Some(o)) => {
                    let n = o.id;
                    match resolved_at(rec, o.id) {
                        None => {
                            let left = left(o, lang);
                            say!(
                                lang,
                                "it waits for {inject}'s order {n} to be resolved, and nobody resolved it: it was left {left}",
                                "需等 {inject} 的工单 {n} 办结，但无人办结：工单停在{left}"
                            )
                        }
                        Some(t) => {
                            let (t, d) = (minute(t), minute(t) + minutes);
                            say!(
                                lang,
                                "due {minutes} min after {inject}'s order {n} was resolved at minute {t:.0}: minute {d:.0}, after the drill ended at minute {end:.0}",
                                "应在 {inject} 的工单 {n} 办结（第 {t:.0} 分钟）后 {minutes} 分钟，即第 {d:.0} 分钟，晚于演练结束（第 {end:.0} 分钟）"
                            )
                        }
                    }
                }
            },
        },
    }
}

/// What the report knows about an expectation that was not met.
struct Unmet<'a> {
    log: &'a Log,
    order: Option<&'a Order>,
    history: &'a [OrderEvent],
    /// When the trainee opened the order.
    views: &'a [Millis],
    principal: &'a str,
    /// Minutes after the inject's start it was done, if it was.
    done: Option<f64>,
    /// Its deadline, town time.
    due: Option<Millis>,
    lang: Lang,
}

impl Unmet<'_> {
    fn why(&self, x: &super::script::Expect) -> String {
        let lang = self.lang;
        let minute = |t: Millis| minutes_between(self.log.drill_start, t);
        let what = expected_name(lang, x.action).to_lowercase();
        let (by, within) = (&x.by, x.within_minutes);
        let Some(o) = self.order else {
            return match self.due {
                None => say!(lang, "its inject did not start: nothing to act on", "对应情景未开始，无工单可处置"),
                Some(_) => say!(lang, "no order about its inject was made: nothing to act on", "对应情景没有生成工单，无工单可处置"),
            };
        };
        let n = o.id;
        if let Some(m) = self.done {
            let late = m - within;
            return say!(
                lang,
                "done {m:.0} min after the inject started: {late:.0} min past its {within} min",
                "在情景开始后 {m:.0} 分钟完成：超出 {within} 分钟的时限 {late:.0} 分钟"
            );
        }
        let due = self.due.unwrap_or(self.log.ended_at);
        if due > self.log.ended_at {
            let (due, end) = (minute(due), minute(self.log.ended_at));
            return say!(
                lang,
                "due at minute {due:.0}, after the drill ended at minute {end:.0}: not exercised",
                "应于第 {due:.0} 分钟完成，晚于演练结束（第 {end:.0} 分钟）：未演练到"
            );
        }
        // Done, but in another loop?
        if let Some(want) = x.in_loop {
            let elsewhere = match x.action.action() {
                Some(name) => self
                    .history
                    .iter()
                    .enumerate()
                    .find(|(k, e)| is_step(e, name) && e.actor == self.principal && taken_in(self.history, *k) != want)
                    .map(|(k, e)| (taken_in(self.history, k), e.at)),
                None => self.views.iter().map(|&t| (loop_at(self.history, t), t)).find(|(l, _)| *l != want),
            };
            if let Some((got, at)) = elsewhere {
                let (got, want, at) = (lang.level(got), lang.level(want), minute(at));
                return say!(
                    lang,
                    "{by} did {what} order {n}, at minute {at:.0}, but in the {got} loop, not the {want} loop",
                    "{by} 在第 {at:.0} 分钟对工单 {n} 执行了“{what}”，但当时处于{got}，而非{want}"
                );
            }
        }
        // Done by someone else (in the loop it was expected in)? Not a part of a joint visit: each party
        // reports its own, and nobody else's stands for it.
        let own_part = x.action == Expected::Report || (x.action == Expected::Resolve && o.joint);
        let other = x.action.action().filter(|_| !own_part).and_then(|name| {
            let in_loop = |k: usize| x.in_loop.is_none_or(|l| l == taken_in(self.history, k));
            self.history.iter().enumerate().find(|(k, e)| is_step(e, name) && e.actor != self.principal && in_loop(*k))
        });
        if let Some((_, e)) = other {
            let (actor, at) = (&e.actor, minute(e.at));
            return say!(
                lang,
                "{by} did not {what} order {n}: {actor} did, at minute {at:.0}",
                "{by} 未对工单 {n} 执行“{what}”：是 {actor} 在第 {at:.0} 分钟执行的"
            );
        }
        let left = left(o, self.lang);
        if x.action == Expected::Notice {
            return say!(lang, "{by} never opened order {n}; it was left {left}", "{by} 始终未打开工单 {n}；工单停在{left}");
        }
        let acted = self.history.iter().filter(|e| e.actor == self.principal).count();
        let did = if acted == 0 {
            say!(lang, "{by} did nothing on it", "{by} 未做任何处置")
        } else {
            say!(lang, "{by} acted on it {acted} time(s), but not this", "{by} 处置了 {acted} 次，但没有这一项")
        };
        say!(lang, "nobody did it: order {n} was left {left}; {did}", "无人完成：工单 {n} 停在{left}；{did}")
    }
}

#[cfg(test)]
mod tests {
    use super::{command_zh, rating};

    #[test]
    fn the_controllers_commands_read_in_chinese() {
        let said =
            ["start", "pause", "speed x60", "fire I2", "fire ad-hoc X1: A gate goes dark", "skip I3", "stop (interrupted)", "something new"].map(command_zh);
        assert_eq!(
            said,
            ["开始演练", "暂停", "倍速改为 x60", "发出注入 I2", "发出临时注入 X1: A gate goes dark", "跳过注入 I3", "终止演练（中断）", "something new"]
        );
    }

    #[test]
    fn ratings_follow_the_share_of_points_earned() {
        assert_eq!(
            [rating(20, 20), rating(30, 20), rating(10, 20), rating(9, 20), rating(1, 20), rating(0, 20), rating(0, 0)],
            ["P", "P", "S", "M", "M", "U", "-"]
        );
    }
}
