//! The residents feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use rand_distr::{Distribution, Normal};
use towntwin_contracts::event::{Data, Direction, DoorOpen, EventType, GatePass, Method, PersonId};
use towntwin_contracts::time::{Local, Millis};
use towntwin_contracts::town::DeviceKind;

use crate::plugins::messages::{Asks, GateAction};
use crate::plugins::{Feature, day_start};
use crate::rng::Rng;
use crate::world::{Age, Agenda, Clock, Dev, Health, Outbox, Params, Presence, Registry, Resident, State, Vulnerable, in_order, uniform};

pub struct ResidentsPlugin;

impl Plugin for ResidentsPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<GateAction>>()
            .init_resource::<Agenda<VisitorPass>>()
            .init_resource::<OneOffVisitors>()
            .add_systems(Update, (take_asks, (plan_outings, plan_visits).run_if(day_start), pass_gates, visitors_pass).chain().in_set(Feature::Residents));
    }
}

/// Passes other features ask for.
fn take_asks(mut asks: ResMut<Asks>, mut agenda: ResMut<Agenda<GateAction>>) {
    for (t, pass) in asks.passes.drain(..) {
        agenda.push(t, pass);
    }
}

fn normal(rng: &mut Rng, mean: f64, sd: f64, lo: f64, hi: f64) -> f64 {
    Normal::new(mean, sd).map(|n| n.sample(rng)).unwrap_or(mean).clamp(lo, hi)
}

/// Leave and return hours of one outing.
fn outing(rng: &mut Rng, age: Age, weekend: bool, first: bool) -> (f64, f64) {
    match (age, weekend, first) {
        (Age::Adult, false, true) => {
            let leave = normal(rng, 7.8, 0.6, 5.5, 10.5);
            (leave, normal(rng, 18.3, 1.0, leave + 3.0, 23.5))
        }
        (Age::Child, false, true) => {
            let leave = normal(rng, 7.2, 0.25, 6.3, 8.2);
            (leave, normal(rng, 16.3, 0.7, leave + 4.0, 19.0))
        }
        (Age::Senior, _, _) => {
            let leave = if rng.random_bool(0.6) { normal(rng, 8.0, 1.2, 5.5, 11.0) } else { normal(rng, 15.0, 1.5, 12.0, 19.0) };
            (leave, leave + uniform(rng, (0.5, 2.5)))
        }
        _ => {
            let leave = uniform(rng, (8.5, 20.5));
            (leave, (leave + uniform(rng, (0.5, 4.0))).min(23.9))
        }
    }
}

fn plan_outings(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    residents: Query<(Entity, &Resident, &Presence, Option<&Vulnerable>)>,
    mut agenda: ResMut<Agenda<GateAction>>,
) {
    let cfg = &params.scenario.residents;
    let weekend = Local::of(clock.now).is_weekend();
    let begin = clock.day_begin();
    let mut rngs: Vec<Rng> = (0..reg.estate_ids.len()).map(|e| params.rng("residents.routine", e as u64, clock.day)).collect();
    let mut planned = Vec::new();
    for (who, r, presence, vulnerable) in in_order(residents, |x| x.1.pid) {
        if presence.state != State::Normal {
            continue;
        }
        let rng = &mut rngs[r.estate as usize];
        let outings = if vulnerable.is_some() {
            rng.random_bool(params.scenario.vulnerable.outing_prob.get()) as u32
        } else {
            let by = if weekend { cfg.outings_weekend } else { cfg.outings_weekday };
            let mean = match r.age {
                Age::Child => by.child,
                Age::Adult => by.adult,
                Age::Senior => by.senior,
            };
            // A routine: most people go out about as often every day, so this is tighter than Poisson.
            let base = mean.floor();
            base as u32 + rng.random_bool(mean - base) as u32
        };
        let mut last_back = 0.0;
        for k in 0..outings {
            let (leave, back) = outing(rng, r.age, weekend, k == 0);
            if leave < last_back {
                continue;
            }
            last_back = back;
            let at = |h: f64| begin + (h * 3_600.0) as Millis * 1_000;
            planned.push((at(leave), GateAction::draw(rng, &params, &reg, r, who, Direction::Out, false)));
            planned.push((at(back), GateAction::draw(rng, &params, &reg, r, who, Direction::In, false)));
        }
    }
    agenda.push_all(planned);
}

fn pass_gates(
    clock: Res<Clock>,
    reg: Res<Registry>,
    mut agenda: ResMut<Agenda<GateAction>>,
    mut residents: Query<(&Resident, &mut Presence, Option<&Vulnerable>)>,
    health: Query<&Health>,
    mut outbox: ResMut<Outbox>,
) {
    let due = agenda.due(clock.now);
    // The minute's residents read ahead, each independent of the others, so that the processor fetches them
    // from memory together: one by one in the loop below each was a cache miss (some 200,000 residents,
    // in no order a minute's passes follow).
    let mut any = false;
    for (_, a) in &due {
        any |= residents.get(a.who).is_ok_and(|(_, p, _)| p.inside);
    }
    std::hint::black_box(any);
    for (t, a) in due {
        let Ok((r, mut presence, vulnerable)) = residents.get_mut(a.who) else { continue };
        if !a.forced && presence.state != State::Normal {
            continue;
        }
        let going_out = a.direction == Direction::Out;
        if presence.inside != going_out {
            continue;
        }
        presence.inside = !going_out;
        let flat = r.home;
        let reports = |d: Dev| health.get(reg.entity[d as usize]).is_ok_and(Health::reports);
        if let Some(door) = vulnerable.and_then(|v| v.door)
            && health.get(reg.entity[door as usize]).is_ok_and(Health::senses)
        {
            outbox.emit(t, door, EventType::DoorOpen, Some(flat), Data::Door(DoorOpen { flat }));
        }
        if let Some(gate) = a.gate
            && a.recognised
            && reports(gate)
        {
            let data = GatePass { person: PersonId(r.pid), flat, method: a.method, direction: a.direction };
            outbox.emit(t, gate, EventType::GatePass, Some(flat), Data::GatePass(data));
        }
    }
}

/// Person ids of visitors, apart from residents' (which count up from 0), and per estate, so that one
/// estate's visitors never depend on another's: the regulars of the estate's `h`-th household at
/// `REGULAR_BASE + (estate << 21) + 32 h + k`, its one-off visitors at `ONE_OFF_BASE + (estate << 20) + n`.
pub const REGULAR_BASE: u32 = 0x4000_0000;
pub const ONE_OFF_BASE: u32 = 0x6000_0000;

/// One-off visitors so far per estate (each a new face).
#[derive(Resource, Debug, Default)]
pub struct OneOffVisitors(Vec<u32>);

/// A visitor passing an estate gate under the flat they visit.
#[derive(Debug, Clone)]
pub struct VisitorPass {
    gate: Dev,
    person: u32,
    flat: towntwin_contracts::event::FlatRef,
    direction: Direction,
    recognised: bool,
}

/// The day's visits: per estate, each household in a fixed order draws its visits; a visit is by one of the
/// household's regulars (their number drawn once per household from its own stream) or by a new face.
fn plan_visits(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    flats: Res<crate::setup::Flats>,
    households: Query<&crate::world::Household>,
    mut one_off: ResMut<OneOffVisitors>,
    mut agenda: ResMut<Agenda<VisitorPass>>,
) {
    let cfg = &params.scenario.residents.visitors;
    if cfg.per_household_week <= 0.0 {
        return;
    }
    let begin = clock.day_begin();
    one_off.0.resize(flats.by_estate.len(), 0);
    for (ei, list) in flats.by_estate.iter().enumerate() {
        let mut rng = params.rng("residents.visits", ei as u64, clock.day);
        let gates = reg.of(ei as u16, DeviceKind::Gate);
        // Ids stay apart per estate (of the first 256): up to 2^16 households of 32 regulars, 2^20 one-off
        // visitors.
        let estate = (ei as u32) & 0xFF;
        for (household, &flat) in list.iter().enumerate().take(1 << 16) {
            let household = household as u32;
            let Ok(h) = households.get(flat) else { continue };
            let visits = crate::world::poisson(&mut rng, cfg.per_household_week / 7.0);
            if visits == 0 || gates.is_empty() {
                continue;
            }
            let regulars = {
                let mut r = params.rng("residents.regulars", ei as u64, household);
                r.random_range(cfg.regulars.0..=cfg.regulars.1)
            };
            for _ in 0..visits {
                let person = if regulars > 0 && rng.random_bool(cfg.regular_share.get()) {
                    REGULAR_BASE + (estate << 21) + 32 * household + rng.random_range(0..regulars)
                } else {
                    let n = &mut one_off.0[ei];
                    *n = (*n + 1) & 0xF_FFFF;
                    ONE_OFF_BASE + (estate << 20) + *n
                };
                let arrive = uniform(&mut rng, cfg.arrive_hours);
                let leave = (arrive + uniform(&mut rng, cfg.stay_hours)).min(23.99);
                let gate = gates[rng.random_range(0..gates.len())];
                let tailgate = params.scenario.residents.tailgate_share.get();
                for (hour, direction) in [(arrive, Direction::In), (leave, Direction::Out)] {
                    let at = begin + (hour * 3_600.0) as Millis * 1_000;
                    agenda.push(at, VisitorPass { gate, person, flat: h.flat, direction, recognised: !rng.random_bool(tailgate) });
                }
            }
        }
    }
}

fn visitors_pass(clock: Res<Clock>, reg: Res<Registry>, mut agenda: ResMut<Agenda<VisitorPass>>, health: Query<&Health>, mut outbox: ResMut<Outbox>) {
    for (t, v) in agenda.due(clock.now) {
        if !v.recognised || !health.get(reg.entity[v.gate as usize]).is_ok_and(Health::reports) {
            continue;
        }
        let data = GatePass { person: PersonId(v.person), flat: v.flat, method: Method::Face, direction: v.direction };
        outbox.emit(t, v.gate, EventType::GatePass, Some(v.flat), Data::GatePass(data));
    }
}
