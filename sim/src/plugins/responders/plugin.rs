//! The responders feature's plugin and systems; its parameters are in [`super`].

use std::collections::{BTreeMap, HashMap};

use bevy::prelude::*;
use rand::Rng as _;
use serde::Serialize;
use towntwin_contracts::orders::{Action, Notice, Role, State};
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
pub struct RuleTargets(pub HashMap<String, Detects>);

/// The answers a resolution of the order in `n` gives: for each kind the rule is about that a response can
/// end, the incident going on that the order is about (`Detects::is_about`, the one rule for it; the
/// oldest, if several), ended with the kind's probability.
fn answers_for(n: &Notice, now: Millis, params: &Params, truth: &mut GroundTruth, targets: &RuleTargets) -> Vec<Answer> {
    let Some(detects) = targets.0.get(&n.rule) else { return Vec::new() };
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
        ResponderStats { by_crew }
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

/// Who holds an order now.
#[derive(Debug, Clone)]
struct Held {
    team: (Role, Unit),
    /// Queued (and when it becomes ready), or being worked by a member.
    queued_ready: Option<Millis>,
}

#[derive(Resource, Debug, Default)]
struct Desk {
    committee_of: HashMap<String, String>,
    /// How many units each crew of [`Responders::crews`] has (committees, estates, 1 for the town's).
    units: [u64; 11],
    teams: BTreeMap<(Role, Unit), Team>,
    held: HashMap<u64, Held>,
    /// Dispatch number per order: scheduled steps of an older dispatch are void.
    dispatch: HashMap<u64, u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct Job {
    order: u64,
    dispatch: u32,
    step: Step,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Start,
    Finish,
    Verify,
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
    let name = match role {
        Role::Committee => "cadre",
        Role::CityManagement => "city-management",
        Role::FireSafety => "fire-safety",
        Role::TaskForce => "task-force",
        Role::CivilAffairs => "civil-affairs",
        Role::PublicSecurity => "public-security",
        Role::MarketSupervision => "market-supervision",
        r => r.name(),
    };
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

impl Desk {
    /// The crew an order goes to: its first assignee, at its estate (or committee) when it has one.
    fn team_for(&self, n: &Notice) -> Option<(Role, Unit)> {
        let role = *n.assignee.first()?;
        let estate = self.committee_of.contains_key(&n.area);
        let unit = match scope_of(role) {
            Scope::Committee if estate => Unit::Committee(self.committee_of[&n.area].clone()),
            Scope::Estate if estate => Unit::Estate(n.area.clone()),
            _ => Unit::Town,
        };
        Some((role, unit))
    }

    /// Takes `order` from whoever holds it; returns their role, whether a member was working it, and, if it
    /// was still waiting in the queue, since which tick.
    fn release(&mut self, order: u64) -> Option<(Role, bool, Option<Millis>)> {
        let held = self.held.remove(&order)?;
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
    let latest: BTreeMap<u64, Notice> = notices.into_iter().map(|n| (n.event.order, n)).collect();
    if !cfg.enabled {
        return;
    }
    let desk = &mut *desk;
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
                let Some(key) = desk.team_for(&n) else { continue };
                if stand_down.0.contains(&principal(key.0, &key.1)) {
                    // A drill's trainee plays this crew: the order is theirs to work.
                    continue;
                }
                let (name, crew) = crew_of(cfg, key.0);
                let mut rng = params.rng("responders.notice", order, d);
                let ready = n.event.at.max(now) + minutes(&mut rng, &crew.notice_minutes);
                let team = desk.teams.entry(key.clone()).or_insert_with(|| Team { busy: 0, queue: BTreeMap::new() });
                team.queue.insert((ready, order), (d, n.event.at, now));
                let s = stats.by_crew.entry(name.into()).or_default();
                s.dispatched += 1;
                s.queue_joined += 1;
                s.max_queue = s.max_queue.max(team.queue.len() as u64);
                desk.held.insert(order, Held { team: key, queued_ready: Some(ready) });
            }
            State::Resolved => {
                // Resolved by someone else (a trainee, the API), or by the crew: whoever held it is free again.
                withdraw(desk.release(order), cfg, now, &mut stats);
                let d = desk.dispatch.get(&order).copied().unwrap_or(0);
                let mut rng = params.rng("responders.verify", order, d);
                agenda.push(now + minutes(&mut rng, &cfg.verify_minutes), Job { order, dispatch: d, step: Step::Verify });
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
            if desk.dispatch.get(&job.order) != Some(&job.dispatch) {
                continue;
            }
            let held = desk.held.get(&job.order).cloned();
            match job.step {
                Step::Start | Step::Finish => {
                    let Some(Held { team, queued_ready: None }) = held else { continue };
                    let (name, crew) = crew_of(cfg, team.0);
                    let who = principal(team.0, &team.1);
                    if let Step::Start = job.step {
                        acts.0.push(Act { at: now, order: job.order, principal: who, action: Action::Start });
                        let mut rng = params.rng("responders.work", job.order, job.dispatch);
                        let work = minutes(&mut rng, &crew.work_minutes);
                        stats.by_crew.entry(name.into()).or_default().work_drawn_minutes += (work / MINUTE) as u64;
                        agenda.push(now + work, Job { step: Step::Finish, ..job });
                        continue;
                    }
                    let mut rng = params.rng("responders.outcome", job.order, job.dispatch);
                    let s = stats.by_crew.entry(name.into()).or_default();
                    let action = if rng.random_bool(crew.fail_share.get()) {
                        s.failed += 1;
                        Action::Fail { reason: "could not be fixed on site".into() }
                    } else {
                        s.resolved += 1;
                        Action::Resolve
                    };
                    acts.0.push(Act { at: now, order: job.order, principal: who, action });
                    desk.release(job.order);
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
                desk.held.insert(order, Held { team: key.clone(), queued_ready: None });
                acts.0.push(Act { at: now, order, principal: principal(key.0, &key.1), action: Action::Accept });
                let s = stats.by_crew.entry(name.into()).or_default();
                s.accepted += 1;
                s.wait_minutes += ((now - dispatched_at).max(0) / MINUTE) as u64;
                s.queue_left += 1;
                s.queue_left_minutes += ((now - joined) / MINUTE) as u64;
                let mut rng = params.rng("responders.travel", order, d);
                agenda.push(now + minutes(&mut rng, &crew.travel_minutes), Job { order, dispatch: d, step: Step::Start });
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

/// Counts an order taken from a crew ([`Desk::release`]): a withdrawal if a member was working it, and a
/// departure from the waiting line if it was still queued.
fn withdraw(released: Option<(Role, bool, Option<Millis>)>, cfg: &Responders, now: Millis, stats: &mut ResponderStats) {
    let Some((role, working, joined)) = released else { return };
    let s = stats.by_crew.entry(crew_of(cfg, role).0.into()).or_default();
    if working {
        s.withdrawn += 1;
    }
    if let Some(j) = joined {
        s.queue_left += 1;
        s.queue_left_minutes += ((now - j) / MINUTE) as u64;
    }
}
