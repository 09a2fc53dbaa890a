//! The renovation feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{ConstructionDrop, Data, Dumping, EventType, FlatRef, NoiseAlarm};
use towntwin_contracts::time::{DAY, Local, Millis};
use towntwin_contracts::town::DeviceKind;
use towntwin_contracts::truth::IncidentKind;

use crate::plugins::messages::Answers;
use crate::plugins::{Feature, day_start};
use crate::setup::Flats;
use crate::world::{Agenda, Clock, Ctx, Dev, GroundTruth, Health, Household, Outbox, Params, Registry, at_hours, flat_key, in_order, poisson, uniform};

pub struct RenovationPlugin;

impl Plugin for RenovationPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<RenoAction>>()
            .init_resource::<Piles>()
            .add_systems(Startup, seed_renovations.in_set(Feature::Renovation))
            .add_systems(Update, (take_asks, answer, end_and_start.run_if(day_start), plan_day.run_if(day_start), act).chain().in_set(Feature::Renovation));
    }
}

/// A renovation under way in one flat.
#[derive(Component, Debug, Clone)]
pub struct Renovation {
    pub estate: u16,
    pub building: u16,
    pub flat: FlatRef,
    pub legal: bool,
    pub until: Millis,
    pub incident: usize,
}

#[derive(Debug, Clone)]
pub enum RenoAction {
    /// A load of construction waste, dropped into a box or left outside it.
    Waste {
        estate: u16,
        flat: FlatRef,
        weight_kg: u32,
        outside: bool,
    },
    Noise {
        estate: u16,
        building: u16,
        db: u16,
        seconds: u32,
    },
    /// The property's own rounds clear the pile outside a box (if no order has).
    Clear {
        incident: usize,
    },
    /// Works a drill started, loud enough for every noise monitor of the building that is up to hear.
    Loud {
        estate: u16,
        building: u16,
        db: u16,
        seconds: u32,
    },
}

/// Illegal works a drill starts now: a renovation of 30 days (or until an order ends it), loud within the
/// half hour; drawn from the inject's own stream.
fn take_asks(
    mut commands: Commands,
    ctx: Ctx,
    mut asks: ResMut<crate::plugins::messages::Asks>,
    households: Query<&Household>,
    mut truth: ResMut<GroundTruth>,
    mut agenda: ResMut<Agenda<RenoAction>>,
    mut applied: ResMut<crate::plugins::messages::Applied>,
) {
    let now = ctx.clock.now;
    for a in asks.works.drain(..) {
        let Ok(h) = households.get(a.home) else { continue };
        let mut rng = ctx.params.rng("drill", a.inject as u64, 0);
        let incident = truth.open(IncidentKind::RenovationIllegal, &a.area, h.label(), now, false);
        commands.spawn(Renovation { estate: h.estate, building: h.building, flat: h.flat, legal: false, until: now + 30 * DAY, incident });
        let loud = now + rng.random_range(5..=30) * towntwin_contracts::time::MINUTE;
        agenda.push(loud, RenoAction::Loud { estate: h.estate, building: h.building, db: rng.random_range(82..95), seconds: rng.random_range(900..2400) });
        applied.0.push(crate::plugins::messages::InjectEffect {
            inject: a.inject,
            at: now,
            what: format!("illegal works start in {} {}", a.area, a.flat),
            incidents: vec![incident],
        });
    }
}

/// Per box (device index), the incident of the pile left outside it, while one may be there.
#[derive(Resource, Debug, Default)]
pub struct Piles(std::collections::HashMap<Dev, usize>);

fn start(commands: &mut Commands, truth: &mut GroundTruth, ctx: &Ctx, rng: &mut crate::rng::Rng, h: &Household, at: Millis, days_left: f64) {
    let Ctx { params, reg, .. } = ctx;
    let legal = !rng.random_bool(params.scenario.renovation.illegal_share.get());
    let kind = if legal { IncidentKind::RenovationLegal } else { IncidentKind::RenovationIllegal };
    let incident = truth.open(kind, &reg.estate_ids[h.estate as usize], h.label(), at, legal);
    commands.spawn(Renovation { estate: h.estate, building: h.building, flat: h.flat, legal, until: at + (days_left * DAY as f64) as Millis, incident });
}

/// Renovations already under way when the run starts: the steady state of starts times durations.
fn seed_renovations(mut commands: Commands, ctx: Ctx, flats: Res<Flats>, households: Query<&Household>, mut truth: ResMut<GroundTruth>) {
    let Ctx { clock, params, .. } = &ctx;
    let cfg = &params.scenario.renovation;
    let mean_days = (cfg.duration_days.0 + cfg.duration_days.1) / 2.0;
    let p_active = (cfg.starts_per_1000_flats_year / 1000.0 / 365.0 * mean_days).min(1.0);
    for (ei, list) in flats.by_estate.iter().enumerate() {
        let mut rng = params.rng("renovation.seed", ei as u64, 0);
        for &flat in list {
            if rng.random_bool(p_active) {
                let Ok(h) = households.get(flat) else { continue };
                let total = uniform(&mut rng, cfg.duration_days);
                let done = rng.random_range(0.0..total);
                let began = clock.start - (done * DAY as f64) as Millis;
                start(&mut commands, &mut truth, &ctx, &mut rng, h, began, total);
            }
        }
    }
}

fn end_and_start(
    mut commands: Commands,
    ctx: Ctx,
    flats: Res<Flats>,
    households: Query<&Household>,
    works: Query<(Entity, &Renovation)>,
    mut truth: ResMut<GroundTruth>,
) {
    let Ctx { clock, params, .. } = &ctx;
    for (e, r) in &works {
        if r.until <= clock.now {
            truth.close(r.incident, r.until);
            commands.entity(e).despawn();
        }
    }
    let cfg = &params.scenario.renovation;
    for (ei, list) in flats.by_estate.iter().enumerate() {
        let mut rng = params.rng("renovation.start", ei as u64, clock.day);
        for _ in 0..poisson(&mut rng, cfg.starts_per_1000_flats_year / 1000.0 / 365.0 * list.len() as f64) {
            let Ok(h) = households.get(list[rng.random_range(0..list.len())]) else { continue };
            let at = at_hours(&mut rng, clock.day_begin(), 8.0, 12.0);
            let days = uniform(&mut rng, cfg.duration_days);
            start(&mut commands, &mut truth, &ctx, &mut rng, h, at, days);
        }
    }
}

fn plan_day(clock: Res<Clock>, params: Res<Params>, works: Query<&Renovation>, mut agenda: ResMut<Agenda<RenoAction>>) {
    let cfg = &params.scenario.renovation;
    let begin = clock.day_begin();
    let weekend = Local::of(clock.now).is_weekend();
    let mut rng = params.rng("renovation.day", 0, clock.day);
    for r in in_order(works, |r| flat_key(r.estate, r.flat)) {
        if r.until <= begin {
            continue;
        }
        // Whether a load is left outside comes from a stream of its own, so the other draws are the same
        // whether anyone dumps or not.
        let outside = if r.legal { cfg.dumped_outside_legal } else { cfg.dumped_outside_illegal }.get();
        let mut outside_rng = (outside > 0.0).then(|| params.rng("renovation.outside", flat_key(r.estate, r.flat), clock.day));
        for _ in 0..poisson(&mut rng, cfg.waste_drops_per_week / 7.0) {
            let t = at_hours(&mut rng, begin, 8.0, 17.0);
            let outside = outside_rng.as_mut().is_some_and(|o| o.random_bool(outside));
            agenda.push(t, RenoAction::Waste { estate: r.estate, flat: r.flat, weight_kg: rng.random_range(20..300), outside });
        }
        // Legal works keep to workday hours; illegal ones spill into weekends and forbidden hours.
        let episodes = if weekend && r.legal { 0.1 } else { 1.0 } * cfg.noise_episodes_per_workday;
        let forbidden_share = if r.legal { cfg.forbidden_hours_share_legal } else { cfg.forbidden_hours_share_illegal }.get();
        for _ in 0..poisson(&mut rng, episodes) {
            let t = if weekend || rng.random_bool(forbidden_share) {
                match rng.random_range(0..3) {
                    0 => at_hours(&mut rng, begin, 12.0, 14.0),
                    1 => at_hours(&mut rng, begin, 18.0, 22.0),
                    _ => at_hours(&mut rng, begin, 8.0, 18.0),
                }
            } else if rng.random_bool(0.5) {
                at_hours(&mut rng, begin, 8.0, 12.0)
            } else {
                at_hours(&mut rng, begin, 14.0, 18.0)
            };
            let db = rng.random_range(70..95);
            agenda.push(t, RenoAction::Noise { estate: r.estate, building: r.building, db, seconds: rng.random_range(60..1800) });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn act(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut agenda: ResMut<Agenda<RenoAction>>,
    health: Query<&Health>,
    mut outbox: ResMut<Outbox>,
    mut truth: ResMut<GroundTruth>,
    mut piles: ResMut<Piles>,
) {
    let cfg = &params.scenario.renovation;
    let recall = cfg.noise_recall.get();
    let mut rng = params.rng("renovation.act", 0, clock.tick as u32);
    let senses = |d: Dev| health.get(reg.entity[d as usize]).is_ok_and(Health::senses);
    for (t, a) in agenda.due(clock.now) {
        match a {
            RenoAction::Waste { estate, flat, weight_kg, outside } => {
                let boxes = reg.of(estate, DeviceKind::ConstructionBox);
                if boxes.is_empty() {
                    continue;
                }
                let b = boxes[rng.random_range(0..boxes.len())];
                if outside {
                    // A pile outside the box: a new incident unless one is still there (an order or the
                    // property's rounds end it), seen by the box's camera.
                    let d = &reg.devices[b as usize];
                    if piles.0.get(&b).is_none_or(|&i| truth.incidents[i].end_ms.is_some()) {
                        let i = truth.open(IncidentKind::ConstructionDumping, &d.area, d.id.to_string(), t, false);
                        piles.0.insert(b, i);
                        let mut r = params.rng("renovation.cleared", b as u64, clock.tick as u32);
                        agenda.push(t + (uniform(&mut r, cfg.dumping_cleared_days) * DAY as f64) as Millis, RenoAction::Clear { incident: i });
                    }
                    if senses(b) && params.rng("renovation.dumping_seen", b as u64, clock.tick as u32).random_bool(cfg.dumping_seen.get()) {
                        outbox.emit(t, b, EventType::ConstructionDumping, None, Data::Dumping(Dumping { bags: (weight_kg / 25).clamp(1, 12) as u16 }));
                    }
                    continue;
                }
                if health.get(reg.entity[b as usize]).is_ok_and(Health::reports) {
                    outbox.emit(t, b, EventType::ConstructionDrop, Some(flat), Data::ConstructionDrop(ConstructionDrop { flat, weight_kg }));
                }
            }
            RenoAction::Noise { estate, building, db, seconds } => {
                for &m in reg.in_building(estate, building, DeviceKind::Noise) {
                    if senses(m) && rng.random_bool(recall) {
                        outbox.emit(t, m, EventType::NoiseAlarm, None, Data::Noise(NoiseAlarm { building, db, seconds }));
                    }
                }
            }
            RenoAction::Loud { estate, building, db, seconds } => {
                for &m in reg.in_building(estate, building, DeviceKind::Noise) {
                    if senses(m) {
                        outbox.emit(t, m, EventType::NoiseAlarm, None, Data::Noise(NoiseAlarm { building, db, seconds }));
                    }
                }
            }
            RenoAction::Clear { incident } => {
                if truth.incidents[incident].end_ms.is_none() {
                    truth.close(incident, t);
                }
            }
        }
    }
}

/// Illegal works a response ended stop at once: no more waste drops or noise from them.
fn answer(mut commands: Commands, answers: Res<Answers>, works: Query<(Entity, &Renovation)>) {
    for a in answers.0.iter().filter(|a| a.kind == IncidentKind::RenovationIllegal) {
        if let Some(i) = a.incident
            && let Some((e, _)) = works.iter().find(|(_, r)| r.incident == i)
        {
            commands.entity(e).despawn();
        }
    }
}
