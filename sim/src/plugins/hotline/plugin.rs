//! The hotline feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{Data, EventType, FlatRef, HotlineCall, Line};
use towntwin_contracts::time::{DAY, HOUR, LOCAL_OFFSET, Millis};

use crate::plugins::Feature;
use crate::setup::Flats;
use crate::world::{Agenda, Clock, GroundTruth, HOTLINE_BASE, Household, Incident, Outbox, Params, Registry, at_hours, line_device, poisson, uniform};

pub struct HotlinePlugin;

impl Plugin for HotlinePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<Call>>()
            .init_resource::<Agenda<Round>>()
            .init_resource::<Agenda<Request>>()
            .init_resource::<Jobs>()
            .add_systems(Update, (synthetic, requests, call, patrol).chain().in_set(Feature::Hotline));
    }
}

/// The `n`th call about incident `incident`, whose draws come from the streams of `id` ([`identity`]).
#[derive(Debug, Clone, Copy)]
pub struct Call {
    incident: usize,
    id: u64,
    n: u32,
}

/// The `n`th patrol round that finds incident `incident` (draws from the streams of `id`).
#[derive(Debug, Clone, Copy)]
pub struct Round {
    incident: usize,
    id: u64,
    n: u32,
}

/// The synthetic job stream: the next arrival and how many so far (see `scenario::Synthetic`).
#[derive(Resource, Debug, Default)]
pub struct Jobs {
    next: Option<Millis>,
    n: u64,
}

/// Synthetic jobs arriving in this tick, each reported through the 12345 line at its arrival instant.
/// Exponential gaps are drawn in milliseconds from one stream, job by job.
fn synthetic(clock: Res<Clock>, params: Res<Params>, reg: Res<Registry>, mut jobs: ResMut<Jobs>, mut truth: ResMut<GroundTruth>, mut outbox: ResMut<Outbox>) {
    let rate = params.scenario.synthetic.per_hour;
    if rate <= 0.0 || reg.estate_ids.is_empty() {
        return;
    }
    let gap = |n: u64| {
        let u: f64 = params.rng("synthetic.gap", n, 0).random_range(f64::MIN_POSITIVE..1.0);
        (-u.ln() / rate * HOUR as f64).round() as Millis
    };
    let mut next = jobs.next.unwrap_or_else(|| clock.now + gap(0));
    let area = reg.estate_ids[0].clone();
    while next < clock.now + Clock::TICK {
        jobs.n += 1;
        let about = format!("J{:07}", jobs.n);
        truth.open(towntwin_contracts::truth::IncidentKind::Synthetic, &area, about.clone(), next, false);
        let call = HotlineCall { category: towntwin_contracts::truth::IncidentKind::Synthetic, about };
        outbox.emit(next, HOTLINE_BASE, EventType::HotlineCall, None, Data::Hotline(call));
        next += gap(jobs.n);
    }
    jobs.next = Some(next);
}

/// What happens to a resident's request (see `scenario::Requests`).
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// Filed by the estate's QR code.
    Qr { incident: usize, estate: usize },
    /// Seen to by the property's own channels, if no order has.
    Done { incident: usize },
}

/// Residents' repair requests and questions: each day's new ones (per estate, Poisson, each a household's
/// flat drawn at random, between 07:00 and 22:00), filed by QR in a covered estate with the section's
/// share, and seen to by the property's own channels after the drawn days if no order has.
#[allow(clippy::too_many_arguments)]
fn requests(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    flats: Res<Flats>,
    households: Query<&Household>,
    mut truth: ResMut<GroundTruth>,
    mut outbox: ResMut<Outbox>,
    mut agenda: ResMut<Agenda<Request>>,
) {
    use towntwin_contracts::truth::IncidentKind;
    let cfg = &params.scenario.requests;
    if clock.day_start && (cfg.repairs_per_household_year > 0.0 || cfg.questions_per_household_year > 0.0) {
        let begin = clock.day_begin();
        for (ei, list) in flats.by_estate.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let area = &reg.estate_ids[ei];
            let covered = params.scenario.platform.covers(area);
            let mut rng = params.rng("requests.day", ei as u64, clock.day);
            for (kind, per_year, days) in [
                (IncidentKind::RepairNeeded, cfg.repairs_per_household_year, cfg.repair_fixed_days),
                (IncidentKind::ResidentQuestion, cfg.questions_per_household_year, cfg.question_answered_days),
            ] {
                for _ in 0..poisson(&mut rng, per_year / 365.0 * list.len() as f64) {
                    let flat = list[rng.random_range(0..list.len())];
                    let at = at_hours(&mut rng, begin, 7.0, 22.0);
                    let done = at + (uniform(&mut rng, days) * DAY as f64) as Millis;
                    let qr = rng.random_bool(cfg.qr_share.get());
                    let qr_at = at + (rng.random_range(0.0..=1.0) * cfg.qr_within_hours * HOUR as f64) as Millis;
                    let Ok(h) = households.get(flat) else { continue };
                    let incident = truth.open(kind, area, h.label(), at, false);
                    agenda.push(done, Request::Done { incident });
                    if covered && qr {
                        agenda.push(qr_at, Request::Qr { incident, estate: ei });
                    }
                }
            }
        }
    }
    for (t, r) in agenda.due(clock.now) {
        match r {
            Request::Qr { incident, estate } => {
                let inc = &truth.incidents[incident];
                if inc.end_ms.is_some_and(|e| e <= t) {
                    continue;
                }
                report(&mut outbox, t, Line::Qr, estate, inc);
                truth.incidents[incident].reports.push((t, Line::Qr));
            }
            Request::Done { incident } => {
                if truth.incidents[incident].end_ms.is_none() {
                    truth.close(incident, t);
                }
            }
        }
    }
}

fn identity(i: &Incident) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(format!("{}|{}|{}|{}", i.kind, i.area, i.subject, i.start_ms).as_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

fn hours(h: f64) -> Millis {
    (h.max(0.0) * HOUR as f64) as Millis
}

/// The time from call `n - 1` to call `n` about the incident of `id` (at least six minutes).
fn gap(params: &Params, again: &crate::dist::Dist, id: u64, n: u32) -> Millis {
    hours(again.sample(&mut params.rng("hotline.again", id, n))).max(HOUR / 10)
}

#[allow(clippy::too_many_arguments)]
fn call(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut truth: ResMut<GroundTruth>,
    mut outbox: ResMut<Outbox>,
    mut agenda: ResMut<Agenda<Call>>,
    mut seen: Local<usize>,
) {
    let lines = &params.scenario.hotline.patience;
    // Incidents that began since the last tick: does anyone call, and when first.
    for i in *seen..truth.incidents.len() {
        let inc = &truth.incidents[i];
        let Some(p) = lines.get(&inc.kind).filter(|_| !inc.benign) else { continue };
        let id = identity(inc);
        let mut rng = params.rng("hotline.first", id, 0);
        if !rng.random_bool(p.call_share.get()) {
            continue;
        }
        let mut at = inc.start_ms + hours(p.first_call_hours.sample(&mut rng));
        // An incident already going on when the run starts: calls before the start are not replayed.
        let mut n = 0;
        while at < clock.now {
            let Some(again) = &p.again_after_hours else { break };
            n += 1;
            at += gap(&params, again, id, n);
        }
        if at >= clock.now {
            agenda.push(at, Call { incident: i, id, n });
        }
    }
    *seen = truth.incidents.len();
    for (t, c) in agenda.due(clock.now) {
        let inc = &truth.incidents[c.incident];
        if inc.end_ms.is_some_and(|e| e <= t) {
            continue;
        }
        let Some(estate) = reg.estate_ids.iter().position(|e| *e == inc.area) else { continue };
        // Where the platform covers the estate, some residents report by its QR code instead of calling.
        let platform = &params.scenario.platform;
        let qr = platform.qr_share.get() > 0.0 && platform.covers(&inc.area) && params.rng("hotline.qr", c.id, c.n).random_bool(platform.qr_share.get());
        let line = if qr { Line::Qr } else { Line::Hotline };
        report(&mut outbox, t, line, estate, inc);
        let again = lines.get(&inc.kind).and_then(|p| p.again_after_hours.as_ref());
        match line {
            Line::Hotline => truth.incidents[c.incident].calls.push(t),
            _ => truth.incidents[c.incident].reports.push((t, line)),
        }
        if let Some(again) = again {
            let n = c.n + 1;
            agenda.push(t + gap(&params, again, c.id, n), Call { n, ..c });
        }
    }
}

/// Files a report about `inc` on `line` of estate number `estate`.
fn report(outbox: &mut Outbox, t: Millis, line: Line, estate: usize, inc: &Incident) {
    let about = inc.subject.to_string();
    outbox.emit(t, line_device(line, estate), EventType::HotlineCall, about.parse::<FlatRef>().ok(), Data::Hotline(HotlineCall { category: inc.kind, about }));
}

/// Rounds from incident `id`'s round number `n` (0: the first after it began) to the round that finds it:
/// each round finds it with probability `p`, so the rounds missed before are geometric.
fn rounds_missed(params: &Params, p: f64, id: u64, n: u32) -> i64 {
    if p >= 1.0 {
        return 0;
    }
    let u: f64 = params.rng("patrol.find", id, n).random_range(f64::MIN_POSITIVE..1.0);
    (u.ln() / (1.0 - p).ln()).floor().min(10_000.0) as i64
}

/// The first patrol round at or after `t`: the local time `round` of its day, or of the next.
fn next_round(t: Millis, round: Millis) -> Millis {
    let local = t + LOCAL_OFFSET;
    let at = local - local.rem_euclid(DAY) + round - LOCAL_OFFSET;
    if at >= t { at } else { at + DAY }
}

/// The patrols: each incident of a patrolled kind is found at a round drawn when it begins, filed on the
/// estate's patrol line, and found again on later rounds while it goes on.
fn patrol(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut truth: ResMut<GroundTruth>,
    mut outbox: ResMut<Outbox>,
    mut agenda: ResMut<Agenda<Round>>,
    mut seen: Local<usize>,
) {
    let patrols = &params.scenario.patrols;
    if patrols.finds.is_empty() {
        return;
    }
    let round = patrols.round().millis();
    for i in *seen..truth.incidents.len() {
        let inc = &truth.incidents[i];
        let Some(p) = patrols.finds.get(&inc.kind).map(|p| p.get()).filter(|&p| p > 0.0 && !inc.benign) else { continue };
        let id = identity(inc);
        let mut at = next_round(inc.start_ms, round) + rounds_missed(&params, p, id, 0) * DAY;
        let mut n = 0;
        // An incident going on when the run starts: rounds before the start are not replayed.
        while at < clock.now {
            n += 1;
            at += (1 + rounds_missed(&params, p, id, n)) * DAY;
        }
        agenda.push(at, Round { incident: i, id, n });
    }
    *seen = truth.incidents.len();
    for (t, r) in agenda.due(clock.now) {
        let inc = &truth.incidents[r.incident];
        if inc.end_ms.is_some_and(|e| e <= t) {
            continue;
        }
        let Some(estate) = reg.estate_ids.iter().position(|e| *e == inc.area) else { continue };
        report(&mut outbox, t, Line::Patrol, estate, inc);
        let p = patrols.finds.get(&inc.kind).map_or(1.0, |p| p.get());
        truth.incidents[r.incident].reports.push((t, Line::Patrol));
        let n = r.n + 1;
        agenda.push(t + (1 + rounds_missed(&params, p, r.id, n)) * DAY, Round { n, ..r });
    }
}
