//! The responders feature's plugin and systems; its parameters are in [`super`].

use std::collections::{BTreeMap, HashMap};

use bevy::prelude::*;
use rand::Rng as _;
use rustc_hash::FxHashMap;
use serde::Serialize;
use towntwin_contracts::orders::{Action, Loop, Notice, Role, State, WhistleWhen};
use towntwin_contracts::principal::Principal;
use towntwin_contracts::time::{Local, MINUTE, Millis};

use crate::plugins::Feature;
use crate::scenario::{Calendar, Crew, Responders};
use crate::world::{Agenda, Clock, GroundTruth, Params, TownData};
use towntwin_contracts::truth::Detects;

use crate::plugins::messages::{Answer, Answers, StandDown};

pub struct RespondersPlugin;

impl Plugin for RespondersPlugin {
    fn build(&self, app: &mut App) {
        let (committee_of, units) = {
            let town = &app.world().resource::<TownData>().0;
            let committee_of: HashMap<String, String> = town.estates.iter().map(|e| (e.id.clone(), e.committee.clone())).collect();
            let committees = committee_of.values().collect::<std::collections::BTreeSet<_>>().len() as u64;
            // Crews of one unit each: a committee's cadres, an estate's property staff or owners' volunteers,
            // the town's departments.
            let units = Role::ALL.map(|r| match scope_of(r) {
                Scope::Committee => committees,
                Scope::Estate => town.estates.len() as u64,
                Scope::Town => 1,
            });
            (committee_of, units)
        };
        app.init_resource::<Inbox>()
            .init_resource::<Acts>()
            .init_resource::<Answers>()
            .init_resource::<RuleTargets>()
            .init_resource::<ResponderStats>()
            .init_resource::<Agenda<Job>>()
            .insert_resource(Desk { committee_of, units, ..Desk::default() })
            .add_systems(Update, respond.in_set(Feature::Responders));
    }
}

/// Notices from the core, delivered by the harness before a tick.
#[derive(Resource, Debug, Default)]
pub struct Inbox(pub Vec<Notice>);

/// What each rule's orders are about, as the core's rule set says (`detects`): the incident kinds, and
/// whether an order names its incident's subject (a flat, a device) or only its area. The harness sets it
/// from the rules it runs the core with; without it no resolution changes the town.
#[derive(Resource, Debug, Default, Clone)]
pub struct RuleTargets {
    pub detects: HashMap<String, Detects>,
    /// When the committees blow the whistle on an order of their estates still in the small loop, per rule
    /// (the policy's `whistle`). None: they never do.
    pub whistle: HashMap<String, WhistleWhen>,
}

/// The answers a resolution of the order in `n` gives: for each kind the rule is about that a response can
/// end, the incident going on that the order is about (`Detects::is_about`, the one rule for it; the
/// oldest, if several), ended with the kind's probability.
fn answers_for(n: &Notice, now: Millis, params: &Params, truth: &mut GroundTruth, targets: &RuleTargets) -> Vec<Answer> {
    let Some(detects) = targets.detects.get(&n.rule) else { return Vec::new() };
    let mut out = Vec::new();
    for (ki, &kind) in detects.kinds.iter().enumerate() {
        let Some(effect) = params.scenario.response.effects.get(&kind) else { continue };
        let incident = truth.open_in(&n.area, kind).find(|&i| detects.is_about(&n.sighting(), &truth.incidents[i].span(), now));
        let habit = crate::scenario::HABITS.contains(&kind);
        if incident.is_none() && !habit {
            continue;
        }
        let mut rng = params.rng("response.ends", n.event.order, ki as u32);
        if !rng.random_bool(effect.ends.get()) {
            continue;
        }
        let resume_at = effect.resumes_after_days.as_ref().map(|d| now + (d.sample(&mut rng).max(0.0) * towntwin_contracts::time::DAY as f64) as Millis);
        if let Some(i) = incident {
            truth.end_by_response(i, now, n.event.order);
        }
        out.push(Answer { kind, incident, area: n.area.clone(), subject: n.subject.clone(), resume_at });
    }
    out
}

/// One action a responder takes, for the harness to apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Act {
    pub at: Millis,
    pub order: u64,
    /// The acting principal, as the API takes it (`estate:E012/property`, `town/task-force`, ...).
    pub principal: Principal,
    pub action: Action,
}

/// This tick's actions, taken by the harness after the tick.
#[derive(Resource, Debug, Default)]
pub struct Acts(pub Vec<Act>);

/// Counts per crew (and `dispatcher`), for the run's summary.
#[derive(Resource, Debug, Clone, Default, Serialize)]
pub struct ResponderStats {
    pub by_crew: BTreeMap<String, CrewStats>,
    /// When a resolution first ended an incident going on, if one has: of the incidents a comparison of
    /// variants holds equal until then, so not the kinds deploying the platform changes by itself
    /// ([`crate::scenario::changed_by_deployment`]: a persuaded household's sorting is one). A habit broken
    /// between its incidents (a flying wire answered while nothing charges on it) is not seen here.
    pub first_answer_ms: Option<Millis>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CrewStats {
    /// Dispatches that reached the crew.
    pub dispatched: u64,
    pub accepted: u64,
    pub resolved: u64,
    pub failed: u64,
    /// Dispatches taken away before the crew finished (escalated, cancelled, re-dispatched).
    pub withdrawn: u64,
    /// Minutes from dispatch to acceptance, summed over accepted orders (mean = this / accepted).
    pub wait_minutes: u64,
    /// The longest queue the crew (any one of its units) had.
    pub max_queue: u64,
    /// Member-minutes spent on orders (from accepting to resolving, failing or losing the order), counted a
    /// minute at a time, so work still under way at the end counts too.
    pub busy_minutes: u64,
    /// Minutes of on-site work drawn for the orders the crew started, each in full as it would be worked
    /// (whole minutes). With no travel and no order taken away midway, the busy minutes match it but for
    /// work under way at the edges of a window: the M/M/c check holds them to that, so that no work is
    /// lost or added on the way. An order withdrawn midway counts here in full and in the busy minutes
    /// only as far as it got.
    #[serde(default)]
    pub work_drawn_minutes: u64,
    /// Member-minutes on duty (paid), all units of the crew together.
    pub duty_minutes: u64,
    /// What the duty minutes cost at the crew's `cost_per_hour` (yuan).
    pub cost_yuan: f64,
    pub verified: u64,
    pub reopened: u64,
    /// Whistles blown (居村吹哨): a committee's, on orders of its estates the estate could not settle.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub whistles: u64,
    /// The crew's waiting line (dispatched, not yet accepted), for Little's law: orders that joined it,
    /// orders that left it (accepted or taken away), the minutes those spent in it, and its length summed
    /// over every minute (its area). A tick counts an order from the minute it joined to the minute it left.
    pub queue_joined: u64,
    pub queue_left: u64,
    pub queue_left_minutes: u64,
    pub queue_area_minutes: u64,
}

impl CrewStats {
    /// What was counted after `earlier` (a copy of these counts taken then), for a measured window after a
    /// warm-up. `max_queue` stays the whole run's.
    pub fn since(&self, earlier: &CrewStats) -> CrewStats {
        CrewStats {
            dispatched: self.dispatched - earlier.dispatched,
            accepted: self.accepted - earlier.accepted,
            resolved: self.resolved - earlier.resolved,
            failed: self.failed - earlier.failed,
            withdrawn: self.withdrawn - earlier.withdrawn,
            wait_minutes: self.wait_minutes - earlier.wait_minutes,
            max_queue: self.max_queue,
            busy_minutes: self.busy_minutes - earlier.busy_minutes,
            work_drawn_minutes: self.work_drawn_minutes - earlier.work_drawn_minutes,
            duty_minutes: self.duty_minutes - earlier.duty_minutes,
            cost_yuan: self.cost_yuan - earlier.cost_yuan,
            verified: self.verified - earlier.verified,
            reopened: self.reopened - earlier.reopened,
            whistles: self.whistles - earlier.whistles,
            queue_joined: self.queue_joined - earlier.queue_joined,
            queue_left: self.queue_left - earlier.queue_left,
            queue_left_minutes: self.queue_left_minutes - earlier.queue_left_minutes,
            queue_area_minutes: self.queue_area_minutes - earlier.queue_area_minutes,
        }
    }
}

impl ResponderStats {
    /// Every crew's [`CrewStats::since`] `earlier`.
    pub fn since(&self, earlier: &ResponderStats) -> ResponderStats {
        let by_crew = self.by_crew.iter().map(|(k, v)| (k.clone(), v.since(earlier.by_crew.get(k).unwrap_or(&CrewStats::default())))).collect();
        ResponderStats { by_crew, first_answer_ms: self.first_answer_ms }
    }
}

/// A crew, by role and the unit it serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Unit {
    Committee(String),
    Estate(String),
    Town,
}

#[derive(Debug)]
struct Team {
    /// Members working an order (they finish it even after their shift).
    busy: u32,
    /// Waiting orders by when they are noticed: (ready at, order) -> (dispatch number, dispatched at, the
    /// tick it joined the queue).
    queue: BTreeMap<(Millis, u64), (u32, Millis, Millis)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Who holds an order now (one crew; on a joint visit, each party).
#[derive(Debug, Clone)]
struct Held {
    team: (Role, Unit),
    /// Queued (and when it becomes ready), or being worked by a member.
    queued_ready: Option<Millis>,
}

/// The maps by order number are looked up only, never walked (their order decides nothing): the Fx hash,
/// not SipHash, on every notice's and job's path.
#[derive(Resource, Debug, Default)]
struct Desk {
    committee_of: HashMap<String, String>,
    /// How many units each crew of [`Responders::crews`] has (committees, estates, 1 for the town's).
    units: [u64; 11],
    teams: BTreeMap<(Role, Unit), Team>,
    held: FxHashMap<u64, Vec<Held>>,
    /// Dispatch number per order: scheduled steps of an older dispatch are void.
    dispatch: FxHashMap<u64, u32>,
    /// Each open order as its notices tell it, for joint visits and the committees' whistle.
    track: FxHashMap<u64, Track>,
    /// Lives counted per order (see [`Track::life`]).
    lives: FxHashMap<u64, u32>,
}

/// An open order as the responders know it from its notices.
#[derive(Debug, Clone)]
struct Track {
    rule: String,
    area: String,
    /// What and when the order saw (its sighting), from its latest notice.
    subject: String,
    first_seen: Millis,
    last_seen: Millis,
    level: Loop,
    state: State,
    /// Failed visits while it was in the small loop.
    small_fails: u32,
    /// This dispatch of a joint visit: a party has accepted it, or started on site (the others follow
    /// without acting on the order's state again).
    accepted: bool,
    started: bool,
    /// This dispatch is a joint visit, led by `lead` (whose draws keep the order's own streams).
    joint: bool,
    lead: Option<Role>,
    /// A committee's whistle is due or blown: it whistles once.
    whistle: bool,
    /// When the responders first saw the order (its creation, or a reopening after it was closed).
    since: Millis,
    /// Which of the order's lives this is (a closed order reopened starts a new one): a whistle job of an
    /// earlier life is void.
    life: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Job {
    order: u64,
    dispatch: u32,
    /// The party whose step this is (on a joint visit, each has its own).
    role: Role,
    step: Step,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Start,
    Finish,
    Verify,
    /// The estate's committee whistles, if the order is still in the small loop.
    Whistle,
}

/// Where a role's crews sit: one per committee, one per estate, or one for the town.
enum Scope {
    Committee,
    Estate,
    Town,
}

fn scope_of(role: Role) -> Scope {
    match role {
        Role::Committee => Scope::Committee,
        Role::Property | Role::Owners => Scope::Estate,
        _ => Scope::Town,
    }
}

fn crew_of(r: &Responders, role: Role) -> (&'static str, &Crew) {
    (role.name(), r.crew(role))
}

fn principal(role: Role, unit: &Unit) -> Principal {
    let name = role.actor();
    match unit {
        Unit::Committee(c) => Principal::committee(c, name),
        Unit::Estate(e) => Principal::estate(e, name),
        Unit::Town => Principal::town(name),
    }
}

/// Staff of `crew` on duty (per unit) at `now`.
fn staff(crew: &Crew, now: Millis, calendar: &Calendar) -> u32 {
    let l = Local::of(now);
    crew.staff_at(l.day, l.hour * 60 + l.minute, calendar)
}

/// A drawn duration in whole minutes, rounded to the nearest: a step happens at the tick of the minute it
/// falls in, so a duration kept to the millisecond would be cut down to its whole minutes (on average half a
/// minute short, which biased the M/M/c check); rounded, the mean is kept (for an exponential of mean m, off
/// by about 1/(12 m) minutes).
fn minutes(rng: &mut crate::rng::Rng, dist: &crate::dist::Dist) -> Millis {
    dist.sample(rng).round().max(0.0) as Millis * MINUTE
}

/// What [`Desk::release`] took from one crew: its role, whether a member was working the order, and, if it
/// was still waiting in the queue, since which tick.
type Released = (Role, bool, Option<Millis>);

impl Desk {
    /// The crew of `role` for an order in `area`: at its estate (or committee) when it has one.
    fn team_of(&self, role: Role, area: &str) -> (Role, Unit) {
        let estate = self.committee_of.contains_key(area);
        let unit = match scope_of(role) {
            Scope::Committee if estate => Unit::Committee(self.committee_of[area].clone()),
            Scope::Estate if estate => Unit::Estate(area.to_string()),
            _ => Unit::Town,
        };
        (role, unit)
    }

    /// The crews an order goes to: its first assignee, or on a joint visit every one.
    fn teams_for(&self, n: &Notice) -> Vec<(Role, Unit)> {
        let go = if n.joint { n.assignee.len() } else { 1 };
        n.assignee.iter().take(go).map(|r| self.team_of(*r, &n.area)).collect()
    }

    /// Takes `order` from every crew that holds it.
    fn release(&mut self, order: u64) -> Vec<Released> {
        let held = self.held.remove(&order).unwrap_or_default();
        held.into_iter().filter_map(|h| self.free(order, h)).collect()
    }

    /// Takes `order` from the crew of `role` only (a party of a joint visit that has reported).
    fn release_one(&mut self, order: u64, role: Role) -> Option<Released> {
        let list = self.held.get_mut(&order)?;
        let i = list.iter().position(|h| h.team.0 == role)?;
        let h = list.remove(i);
        if list.is_empty() {
            self.held.remove(&order);
        }
        self.free(order, h)
    }

    fn free(&mut self, order: u64, held: Held) -> Option<Released> {
        let team = self.teams.get_mut(&held.team)?;
        let mut joined = None;
        match held.queued_ready {
            Some(ready) => {
                joined = team.queue.remove(&(ready, order)).map(|(_, _, j)| j);
            }
            None => team.busy -= 1,
        }
        Some((held.team.0, held.queued_ready.is_none(), joined))
    }

    fn holding(&self, order: u64, role: Role) -> Option<&Held> {
        self.held.get(&order)?.iter().find(|h| h.team.0 == role)
    }
}

/// The stream a party's draws come from: the order's dispatch for its lead (as before joint visits), a
/// stream of its own for each other party of a joint visit.
fn part(dispatch: u32, role: Role, lead: bool) -> u32 {
    if lead { dispatch } else { dispatch | (1 + role as u32) << 24 }
}

#[allow(clippy::too_many_arguments)]
fn respond(
    clock: Res<Clock>,
    params: Res<Params>,
    mut inbox: ResMut<Inbox>,
    mut acts: ResMut<Acts>,
    mut desk: ResMut<Desk>,
    mut agenda: ResMut<Agenda<Job>>,
    mut stats: ResMut<ResponderStats>,
    (mut answers, mut truth, targets, stand_down): (ResMut<Answers>, ResMut<GroundTruth>, Res<RuleTargets>, Res<StandDown>),
) {
    let cfg = &params.scenario.responders;
    let calendar = &params.scenario.calendar;
    let now = clock.now;
    // The last notice of each order says where it stands; orders in id order.
    let notices = std::mem::take(&mut inbox.0);
    answers.0.clear();
    // The town answers every resolution, whoever resolved the order (a crew, a trainee, the API).
    for n in notices.iter().filter(|n| n.event.to == State::Resolved) {
        let found = answers_for(n, now, &params, &mut truth, &targets);
        answers.0.extend(found);
    }
    if stats.first_answer_ms.is_none() && answers.0.iter().any(|a| a.incident.is_some() && !crate::scenario::changed_by_deployment(a.kind, &a.subject)) {
        stats.first_answer_ms = Some(now);
    }
    if !cfg.enabled {
        return;
    }
    let desk = &mut *desk;
    for n in &notices {
        track(desk, n, now, &params, &targets, &mut agenda);
    }
    let latest: BTreeMap<u64, Notice> = notices.into_iter().map(|n| (n.event.order, n)).collect();
    // Paid time: every member of every unit on duty this minute (a tick is a minute); busy time: every
    // member working an order this minute, on duty or finishing after hours (so busy can pass 100%).
    for ((name, crew), units) in cfg.crews().into_iter().zip(desk.units) {
        let members = units * staff(crew, now, calendar) as u64;
        if members > 0 {
            let s = stats.by_crew.entry(name.into()).or_default();
            s.duty_minutes += members;
            s.cost_yuan += members as f64 * crew.cost_per_hour / 60.0;
        }
    }
    for (key, team) in &desk.teams {
        if team.busy > 0 {
            stats.by_crew.entry(key.0.name().into()).or_default().busy_minutes += team.busy as u64;
        }
    }
    for (order, n) in latest {
        match n.event.to {
            State::Dispatched => {
                withdraw(desk.release(order), cfg, now, &mut stats);
                let d = desk.dispatch.entry(order).or_insert(0);
                *d += 1;
                let d = *d;
                if let Some(t) = desk.track.get_mut(&order) {
                    (t.accepted, t.started, t.joint, t.lead) = (false, false, n.joint, n.assignee.first().copied());
                }
                for (i, key) in desk.teams_for(&n).into_iter().enumerate() {
                    if stand_down.0.contains(&principal(key.0, &key.1)) {
                        // A drill's trainee plays this crew: the order (or its part of a joint visit) is theirs.
                        continue;
                    }
                    let (name, crew) = crew_of(cfg, key.0);
                    let mut rng = params.rng("responders.notice", order, part(d, key.0, i == 0));
                    let ready = n.event.at.max(now) + minutes(&mut rng, &crew.notice_minutes);
                    let team = desk.teams.entry(key.clone()).or_insert_with(|| Team { busy: 0, queue: BTreeMap::new() });
                    team.queue.insert((ready, order), (d, n.event.at, now));
                    let s = stats.by_crew.entry(name.into()).or_default();
                    s.dispatched += 1;
                    s.queue_joined += 1;
                    s.max_queue = s.max_queue.max(team.queue.len() as u64);
                    desk.held.entry(order).or_default().push(Held { team: key, queued_ready: Some(ready) });
                }
            }
            State::Resolved => {
                // Resolved by someone else (a trainee, the API), or by the crew: whoever held it is free again.
                withdraw(desk.release(order), cfg, now, &mut stats);
                let d = desk.dispatch.get(&order).copied().unwrap_or(0);
                let mut rng = params.rng("responders.verify", order, d);
                agenda.push(now + minutes(&mut rng, &cfg.verify_minutes), Job { order, dispatch: d, role: Role::Committee, step: Step::Verify });
            }
            State::Closed | State::Cancelled | State::Returned => {
                withdraw(desk.release(order), cfg, now, &mut stats);
                *desk.dispatch.entry(order).or_insert(0) += 1;
            }
            // Accepted, in progress, verified: the responders' own doing (or a trainee's, whom they leave be).
            _ => {}
        }
    }
    // Again while a step of no duration (a travel or a job of zero minutes) falls due within this minute:
    // a zero time takes no tick (the M/M/c check relies on it; the baseline has no zero times).
    loop {
        // Steps of work under way.
        let due = agenda.due(now);
        let stepped = !due.is_empty();
        let mut took = false;
        for (_, job) in due {
            if let Step::Whistle = job.step {
                whistle(desk, job, now, cfg, calendar, &stand_down, &mut acts, &mut agenda, &mut stats);
                continue;
            }
            if desk.dispatch.get(&job.order) != Some(&job.dispatch) {
                continue;
            }
            let (joint, lead) = desk.track.get(&job.order).map_or((false, None), |t| (t.joint, t.lead));
            let stream = part(job.dispatch, job.role, lead.is_none_or(|l| l == job.role));
            match job.step {
                Step::Start | Step::Finish => {
                    let Some(Held { team, queued_ready: None }) = desk.holding(job.order, job.role).cloned() else { continue };
                    let (name, crew) = crew_of(cfg, team.0);
                    let who = principal(team.0, &team.1);
                    if let Step::Start = job.step {
                        let first = desk.track.get_mut(&job.order).is_none_or(|t| !std::mem::replace(&mut t.started, true));
                        if !joint || first {
                            acts.0.push(Act { at: now, order: job.order, principal: who, action: Action::Start });
                        }
                        let mut rng = params.rng("responders.work", job.order, stream);
                        let work = minutes(&mut rng, &crew.work_minutes);
                        stats.by_crew.entry(name.into()).or_default().work_drawn_minutes += (work / MINUTE) as u64;
                        agenda.push(now + work, Job { step: Step::Finish, ..job });
                        continue;
                    }
                    let mut rng = params.rng("responders.outcome", job.order, stream);
                    let fail_share = desk.track.get(&job.order).map_or(crew.fail_share.get(), |t| fail_share(crew, t, &targets, &truth, now));
                    let s = stats.by_crew.entry(name.into()).or_default();
                    if rng.random_bool(fail_share) {
                        s.failed += 1;
                        acts.0.push(Act { at: now, order: job.order, principal: who, action: Action::Fail { reason: "could not be fixed on site".into() } });
                        // The whole visit goes back: the other parties stop too.
                        desk.release_one(job.order, job.role);
                        withdraw(desk.release(job.order), cfg, now, &mut stats);
                    } else if joint {
                        s.resolved += 1;
                        acts.0.push(Act { at: now, order: job.order, principal: who, action: Action::Report { role: job.role } });
                        desk.release_one(job.order, job.role);
                    } else {
                        s.resolved += 1;
                        acts.0.push(Act { at: now, order: job.order, principal: who, action: Action::Resolve });
                        desk.release(job.order);
                    }
                }
                Step::Verify => {
                    let mut rng = params.rng("responders.reopen", job.order, job.dispatch);
                    let s = stats.by_crew.entry("dispatcher".into()).or_default();
                    let who = Principal::town("dispatcher");
                    if rng.random_bool(cfg.reopen_share.get()) {
                        s.reopened += 1;
                        acts.0.push(Act {
                            at: now,
                            order: job.order,
                            principal: who,
                            action: Action::Reopen { reason: "the resident reports the problem persists".into() },
                        });
                    } else {
                        s.verified += 1;
                        acts.0.push(Act { at: now, order: job.order, principal: who.clone(), action: Action::Verify });
                        acts.0.push(Act { at: now, order: job.order, principal: who, action: Action::Close });
                    }
                }
                Step::Whistle => {}
            }
        }
        // Free members on duty take the orders they have noticed, oldest notice first.
        for (key, team) in desk.teams.iter_mut() {
            if team.queue.is_empty() {
                continue;
            }
            let (name, crew) = crew_of(cfg, key.0);
            let on_duty = staff(crew, now, calendar);
            while team.busy < on_duty {
                let Some(entry) = team.queue.first_entry() else { break };
                let &(ready, order) = entry.key();
                if ready > now {
                    break;
                }
                let (d, dispatched_at, joined) = entry.remove();
                team.busy += 1;
                took = true;
                if let Some(h) = desk.held.get_mut(&order).and_then(|l| l.iter_mut().find(|h| h.team == *key)) {
                    h.queued_ready = None;
                }
                // On a joint visit the first party to take it accepts the order; the others join it.
                let (joint, lead, first) =
                    desk.track.get_mut(&order).map_or((false, None, true), |t| (t.joint, t.lead, !std::mem::replace(&mut t.accepted, true)));
                if !joint || first {
                    acts.0.push(Act { at: now, order, principal: principal(key.0, &key.1), action: Action::Accept });
                }
                let s = stats.by_crew.entry(name.into()).or_default();
                s.accepted += 1;
                s.wait_minutes += ((now - dispatched_at).max(0) / MINUTE) as u64;
                s.queue_left += 1;
                s.queue_left_minutes += ((now - joined) / MINUTE) as u64;
                let stream = part(d, key.0, lead.is_none_or(|l| l == key.0));
                let mut rng = params.rng("responders.travel", order, stream);
                agenda.push(now + minutes(&mut rng, &crew.travel_minutes), Job { order, dispatch: d, role: key.0, step: Step::Start });
            }
        }
        if !stepped && !took {
            break;
        }
    }
    // The waiting lines' area: every order still queued at the end of this minute.
    for (key, team) in &desk.teams {
        if !team.queue.is_empty() {
            stats.by_crew.entry(crew_of(cfg, key.0).0.into()).or_default().queue_area_minutes += team.queue.len() as u64;
        }
    }
}

/// The share of visits by `crew` to the order `t` that fail: the highest of the crew's shares for the kinds
/// of problem going on that the order is about (`Detects::is_about`, as a resolution's answer finds them),
/// else its `fail_share`. A false alarm is no problem the estate cannot settle.
fn fail_share(crew: &Crew, t: &Track, targets: &RuleTargets, truth: &GroundTruth, now: Millis) -> f64 {
    let Some(detects) = targets.detects.get(&t.rule) else { return crew.fail_share.get() };
    let seen = towntwin_contracts::truth::Sighting { area: &t.area, subject: &t.subject, first_seen: t.first_seen, last_seen: t.last_seen };
    detects
        .kinds
        .iter()
        .filter_map(|k| crew.fail_share_by_kind.get(k).map(|p| (k, p.get())))
        .filter(|(k, _)| truth.open_in(&t.area, **k).any(|i| detects.is_about(&seen, &truth.incidents[i].span(), now)))
        .map(|(_, p)| p)
        .reduce(f64::max)
        .unwrap_or(crew.fail_share.get())
}

/// Follows one notice: the order's loop and state, its failed visits in the small loop, and the committee's
/// whistle when the policy's rule for it is met (drawn to fall after the committee has noticed).
fn track(desk: &mut Desk, n: &Notice, now: Millis, params: &Params, targets: &RuleTargets, agenda: &mut Agenda<Job>) {
    let id = n.event.order;
    if !n.event.to.is_open() {
        desk.track.remove(&id);
        return;
    }
    let life = match desk.track.contains_key(&id) {
        true => 0,
        false => {
            let l = desk.lives.entry(id).or_insert(0);
            *l += 1;
            *l
        }
    };
    let t = desk.track.entry(id).or_insert_with(|| Track {
        rule: n.rule.clone(),
        area: n.area.clone(),
        subject: n.subject.clone(),
        first_seen: n.first_seen,
        last_seen: n.last_seen,
        level: n.event.level,
        state: n.event.to,
        small_fails: 0,
        accepted: false,
        started: false,
        joint: n.joint,
        lead: n.assignee.first().copied(),
        whistle: false,
        since: n.event.at,
        life,
    });
    if n.event.action == "fail" && t.level == Loop::Small {
        t.small_fails += 1;
    }
    (t.level, t.state, t.first_seen, t.last_seen) = (n.event.level, n.event.to, n.first_seen, n.last_seen);
    // Whoever accepted or started it (a trainee, the API), the visit's other parties do not again.
    match n.event.to {
        State::Accepted => t.accepted = true,
        State::InProgress => (t.accepted, t.started) = (true, true),
        _ => {}
    }
    if t.whistle || t.level != Loop::Small || !desk.committee_of.contains_key(&t.area) {
        return;
    }
    let noticed = || {
        let mut rng = params.rng("responders.whistle", id, t.small_fails);
        now + minutes(&mut rng, &params.scenario.responders.committee.notice_minutes)
    };
    let due = match targets.whistle.get(&t.rule) {
        Some(WhistleWhen::AtOnce) => Some(noticed()),
        Some(WhistleWhen::AfterFails(k)) if t.small_fails >= *k => Some(noticed()),
        Some(WhistleWhen::AfterHours(h)) => Some((t.since + *h as Millis * towntwin_contracts::time::HOUR).max(now)),
        _ => None,
    };
    if let Some(at) = due {
        t.whistle = true;
        agenda.push(at, Job { order: id, dispatch: t.life, role: Role::Committee, step: Step::Whistle });
    }
}

/// The estate's committee whistles on an order still in the small loop, when a cadre is on duty (until then
/// the whistle waits); not where a drill's trainee plays the committee, nor once the order has left the loop
/// or been resolved.
#[allow(clippy::too_many_arguments)]
fn whistle(
    desk: &mut Desk,
    job: Job,
    now: Millis,
    cfg: &Responders,
    calendar: &Calendar,
    stand_down: &StandDown,
    acts: &mut Acts,
    agenda: &mut Agenda<Job>,
    stats: &mut ResponderStats,
) {
    let Some(t) = desk.track.get_mut(&job.order) else { return };
    if t.life != job.dispatch {
        return;
    }
    if t.level == Loop::Small && matches!(t.state, State::Resolved | State::Verified) {
        // Settled in the estate after all, for now: if it is reopened, the committee's rule is looked at again.
        t.whistle = false;
        return;
    }
    if t.state == State::Created {
        // Still being relayed by the operations centres: nothing to whistle on yet.
        agenda.push(now + MINUTE, job);
        return;
    }
    if t.level != Loop::Small || !matches!(t.state, State::Dispatched | State::Accepted | State::InProgress | State::Returned) {
        return;
    }
    let Some(committee) = desk.committee_of.get(&t.area) else { return };
    let who = principal(Role::Committee, &Unit::Committee(committee.clone()));
    if stand_down.0.contains(&who) {
        return;
    }
    // Off duty, or the order already acted on this minute (resolved, say): the whistle waits a minute.
    if staff(&cfg.committee, now, calendar) == 0 || acts.0.iter().any(|a| a.order == job.order) {
        agenda.push(now + MINUTE, job);
        return;
    }
    stats.by_crew.entry(Role::Committee.name().into()).or_default().whistles += 1;
    acts.0.push(Act {
        at: now,
        order: job.order,
        principal: who,
        action: Action::Whistle { reason: "the estate cannot settle it: the committee whistles (居村吹哨)".into() },
    });
    // The order leaves the estate's crews now: none of them acts on it again this minute (an accept after
    // the whistle would take the departments' order).
    withdraw(desk.release(job.order), cfg, now, stats);
}

/// Counts an order taken from its crews ([`Desk::release`]): for each, a withdrawal if a member was working
/// it, and a departure from the waiting line if it was still queued.
fn withdraw(released: Vec<Released>, cfg: &Responders, now: Millis, stats: &mut ResponderStats) {
    for (role, working, joined) in released {
        let s = stats.by_crew.entry(crew_of(cfg, role).0.into()).or_default();
        if working {
            s.withdrawn += 1;
        }
        if let Some(j) = joined {
            s.queue_left += 1;
            s.queue_left_minutes += ((now - j) / MINUTE) as u64;
        }
    }
}
