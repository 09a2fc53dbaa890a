//! The hotline feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{Data, EventType, FlatRef, HotlineCall};
use towntwin_contracts::time::{HOUR, Millis};

use crate::plugins::Feature;
use crate::world::{Agenda, Clock, GroundTruth, HOTLINE_BASE, Incident, Outbox, Params, Registry};

pub struct HotlinePlugin;

impl Plugin for HotlinePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<Call>>().init_resource::<Jobs>().add_systems(Update, (synthetic, call).chain().in_set(Feature::Hotline));
    }
}

/// The `n`th call about incident `incident`, whose draws come from the streams of `id` ([`identity`]).
#[derive(Debug, Clone, Copy)]
pub struct Call {
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
        let about = inc.subject.clone();
        outbox.emit(
            t,
            HOTLINE_BASE + estate as u32,
            EventType::HotlineCall,
            about.parse::<FlatRef>().ok(),
            Data::Hotline(HotlineCall { category: inc.kind, about }),
        );
        let again = lines.get(&inc.kind).and_then(|p| p.again_after_hours.as_ref());
        truth.incidents[c.incident].calls.push(t);
        if let Some(again) = again {
            let n = c.n + 1;
            agenda.push(t + gap(&params, again, c.id, n), Call { n, ..c });
        }
    }
}
