//! The vehicles feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{ChargingEnd, ChargingStart, Data, ElecAlarm, ElecAlarmKind, ElevatorEbike, EventType, Vehicle};
use towntwin_contracts::time::{HOUR, MINUTE};
use towntwin_contracts::town::DeviceKind;
use towntwin_contracts::truth::IncidentKind;

use crate::generate::pick;
use crate::plugins::messages::Answers;
use crate::plugins::{Feature, day_start};
use crate::setup::Flats;
use crate::world::{Agenda, Clock, Ctx, Dev, Health, Household, Params, Record, Registry, at_hours, in_order, poisson, uniform};

pub struct VehiclesPlugin;

impl Plugin for VehiclesPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<VehicleAction>>()
            .init_resource::<Agenda<Relapse>>()
            .init_resource::<Sessions>()
            .init_resource::<Ports>()
            .add_systems(Startup, assign_vehicles.in_set(Feature::Vehicles))
            .add_systems(Update, (take_asks, answer, points.run_if(day_start), plan_day.run_if(day_start), act).chain().in_set(Feature::Vehicles));
    }
}

/// A drill's e-bikes: carried up in a lift (one with a detector, if the building has one) or charged at
/// home now; the devices that are up see them. Drawn from the inject's own stream.
fn take_asks(
    ctx: Ctx,
    mut asks: ResMut<crate::plugins::messages::Asks>,
    households: Query<&Household>,
    health: Query<&Health>,
    mut rec: Record,
    mut applied: ResMut<crate::plugins::messages::Applied>,
) {
    let Ctx { clock, params, reg } = &ctx;
    let Record { truth, outbox } = &mut rec;
    let now = clock.now;
    let senses = |d: Dev| health.get(reg.entity[d as usize]).is_ok_and(Health::senses);
    for (a, lift) in asks.ebikes.drain(..) {
        let Ok(h) = households.get(a.home) else { continue };
        let mut rng = params.rng("drill", a.inject as u64, 0);
        let (what, incident) = if lift {
            let watched: Vec<u8> = (1..=h.elevators).filter(|el| reg.detector.contains_key(&(h.estate, h.building, *el))).collect();
            let el = if watched.is_empty() { 1 } else { watched[rng.random_range(0..watched.len())] };
            let i = truth.instant(IncidentKind::EbikeElevator, &a.area, h.label(), now, false);
            if let Some(&det) = reg.detector.get(&(h.estate, h.building, el))
                && senses(det)
            {
                let data = ElevatorEbike { building: h.building, elevator: el, confidence: rng.random_range(0.85..0.99) };
                outbox.emit(now, det, EventType::ElevatorEbike, Some(h.flat), Data::ElevatorEbike(data));
            }
            (format!("an e-bike from {} {} carried up lift {el} of building {}", a.area, a.flat, h.building), i)
        } else {
            let i = truth.open(IncidentKind::EbikeIndoorCharging, &a.area, h.label(), now, false);
            truth.close(i, now + (uniform(&mut rng, (3.0, 7.0)) * HOUR as f64) as i64);
            if let Some(&m) = reg.in_building(h.estate, h.building, DeviceKind::ElecFire).first()
                && senses(m)
            {
                let data = ElecAlarm { building: h.building, room: h.room, alarm: ElecAlarmKind::EbikeCharging, amps: rng.random_range(1.5..3.5) };
                outbox.emit(now, m, EventType::ElecAlarm, Some(h.flat), Data::ElecAlarm(data));
            }
            (format!("an e-bike charging at home in {} {}", a.area, a.flat), i)
        };
        applied.0.push(crate::plugins::messages::InjectEffect { inject: a.inject, at: now, what, incidents: vec![incident] });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Habit {
    Pile,
    Upstairs,
    FlyingWire,
}

#[derive(Component, Debug, Clone)]
pub struct Ebike(pub Habit);

#[derive(Component, Debug, Clone)]
pub struct Ev;

#[derive(Resource, Debug, Default)]
pub struct Sessions(pub u64);

/// Ports in use per pile (by device index), when piles have a number of ports (`vehicles.pile_ports`).
#[derive(Resource, Debug, Default)]
pub struct Ports(Vec<u32>);

/// Points (the platform's `points_switch_per_week`): at the start of each week of the run, each household
/// of a covered estate that charges upstairs or by flying wire takes to the piles with that chance, drawn
/// from a stream keyed by the household and the week (the same household switches in every variant that
/// has points).
fn points(clock: Res<Clock>, params: Res<Params>, reg: Res<Registry>, mut ebikes: Query<(&Household, &mut Ebike)>) {
    let platform = &params.scenario.platform;
    let p = platform.points_switch_per_week.get();
    if p <= 0.0 || !clock.day.is_multiple_of(7) || clock.day == 0 {
        return;
    }
    let week = clock.day / 7;
    for (h, mut e) in &mut ebikes {
        if e.0 != Habit::Pile
            && platform.covers(&reg.estate_ids[h.estate as usize])
            && params.rng("vehicles.points", crate::world::flat_key(h.estate, h.flat), week).random_bool(p)
        {
            e.0 = Habit::Pile;
        }
    }
}

#[derive(Debug, Clone)]
pub enum VehicleAction {
    Ebike { flat: Entity },
    Ev { flat: Entity },
    End { pile: Dev, session: String, vehicle: Vehicle, wh: u32, minutes: u32 },
    FalseDetection { detector: Dev },
}

fn assign_vehicles(mut commands: Commands, params: Res<Params>, flats: Res<Flats>) {
    let cfg = &params.scenario.vehicles;
    for (ei, list) in flats.by_estate.iter().enumerate() {
        let mut rng = params.rng("vehicles.own", ei as u64, 0);
        for &flat in list {
            if rng.random_bool(cfg.ebike_household_share.get()) {
                let habit = [Habit::Pile, Habit::Upstairs, Habit::FlyingWire]
                    [pick(&mut rng, &[cfg.ebike_pile.get(), cfg.ebike_upstairs.get(), cfg.ebike_flying_wire.get()])];
                commands.entity(flat).insert(Ebike(habit));
            }
            if rng.random_bool(cfg.ev_household_share.get()) {
                commands.entity(flat).insert(Ev);
            }
        }
    }
}

fn plan_day(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    ebikes: Query<(Entity, &Household), With<Ebike>>,
    evs: Query<(Entity, &Household), With<Ev>>,
    mut agenda: ResMut<Agenda<VehicleAction>>,
) {
    let cfg = &params.scenario.vehicles;
    let begin = clock.day_begin();
    let mut rngs: Vec<_> = (0..reg.estate_ids.len()).map(|e| params.rng("vehicles.day", e as u64, clock.day)).collect();
    for (flat, h) in in_order(ebikes, |x| x.1.key()) {
        let rng = &mut rngs[h.estate as usize];
        if rng.random_bool(1.0 / cfg.ebike_charge_every_days) {
            agenda.push(at_hours(rng, begin, 17.5, 23.0), VehicleAction::Ebike { flat });
        }
    }
    for (flat, h) in in_order(evs, |x| x.1.key()) {
        let rng = &mut rngs[h.estate as usize];
        if rng.random_bool(1.0 / cfg.ev_charge_every_days) {
            let t = if rng.random_bool(0.7) { at_hours(rng, begin, 18.0, 23.0) } else { at_hours(rng, begin, 9.0, 17.0) };
            agenda.push(t, VehicleAction::Ev { flat });
        }
    }
    let mut rng = params.rng("vehicles.false", 0, clock.day);
    for (i, d) in reg.devices.iter().enumerate() {
        if d.kind == DeviceKind::EbikeDetector {
            for _ in 0..poisson(&mut rng, cfg.detector_false_per_day) {
                agenda.push(at_hours(&mut rng, begin, 7.0, 22.0), VehicleAction::FalseDetection { detector: i as Dev });
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn act(
    ctx: Ctx,
    mut agenda: ResMut<Agenda<VehicleAction>>,
    mut sessions: ResMut<Sessions>,
    mut ports: ResMut<Ports>,
    households: Query<(&Household, Option<&Ebike>)>,
    health: Query<&Health>,
    mut rec: Record,
) {
    let Ctx { clock, params, reg } = &ctx;
    let Record { truth, outbox } = &mut rec;
    let cfg = &params.scenario.vehicles;
    let mut rng = params.rng("vehicles.act", 0, clock.tick as u32);
    let senses = |d: Dev| health.get(reg.entity[d as usize]).is_ok_and(Health::senses);
    for (t, a) in agenda.due(clock.now) {
        // Where the vehicle ends up charging: a pile, or indoors / by flying wire.
        let (flat, vehicle, mut at_pile) = match a {
            VehicleAction::Ebike { flat } => (flat, Vehicle::Ebike, false),
            VehicleAction::Ev { flat } => (flat, Vehicle::Ev, true),
            VehicleAction::End { pile, session, vehicle, wh, minutes } => {
                if let Some(n) = ports.0.get_mut(pile as usize) {
                    *n = n.saturating_sub(1);
                }
                if health.get(reg.entity[pile as usize]).is_ok_and(Health::reports) {
                    outbox.emit(t, pile, EventType::ChargingEnd, None, Data::ChargingEnd(ChargingEnd { session, vehicle, wh, minutes }));
                }
                continue;
            }
            VehicleAction::FalseDetection { detector } => {
                let d = &reg.devices[detector as usize];
                if senses(detector) {
                    let data = ElevatorEbike { building: d.building.unwrap_or(0), elevator: d.elevator.unwrap_or(1), confidence: rng.random_range(0.55..0.8) };
                    outbox.emit(t, detector, EventType::ElevatorEbike, None, Data::ElevatorEbike(data));
                }
                continue;
            }
        };
        let Ok((h, ebike)) = households.get(flat) else { continue };
        let area = &reg.estate_ids[h.estate as usize];
        let elec = reg.in_building(h.estate, h.building, DeviceKind::ElecFire).first().copied();
        let mut flying = false;
        if vehicle == Vehicle::Ebike {
            match ebike.map(|e| e.0) {
                Some(Habit::Pile) | None => at_pile = true,
                Some(Habit::FlyingWire) => flying = true,
                Some(Habit::Upstairs) => {
                    if h.elevators > 0 {
                        let el = rng.random_range(1..=h.elevators);
                        truth.instant(IncidentKind::EbikeElevator, area, h.label(), t, false);
                        if let Some(&det) = reg.detector.get(&(h.estate, h.building, el))
                            && senses(det)
                            && rng.random_bool(cfg.detector_recall.get())
                        {
                            let data = ElevatorEbike { building: h.building, elevator: el, confidence: rng.random_range(0.85..0.99) };
                            outbox.emit(t, det, EventType::ElevatorEbike, Some(h.flat), Data::ElevatorEbike(data));
                            // The car is held; some riders give up and use a pile. A detector the platform has
                            // not installed holds nothing (the draw is made all the same, so that the stream
                            // is the same whatever is deployed).
                            let gives_up = rng.random_bool(cfg.blocked_to_pile.get());
                            at_pile = gives_up && params.scenario.platform.installed(DeviceKind::EbikeDetector, Some(area));
                        }
                    }
                }
            }
        }
        let mut off_pile = !at_pile;
        if at_pile {
            let piles = reg.of(h.estate, DeviceKind::ChargingPile);
            if piles.is_empty() {
                continue;
            }
            let mut pile = piles[rng.random_range(0..piles.len())];
            if let Some(cap) = cfg.pile_ports {
                if ports.0.len() < reg.devices.len() {
                    ports.0.resize(reg.devices.len(), 0);
                }
                // The chosen pile, or the next of the estate's with a free port.
                let start = piles.iter().position(|&p| p == pile).unwrap_or(0);
                match (0..piles.len()).map(|i| piles[(start + i) % piles.len()]).find(|&p| ports.0[p as usize] < cap) {
                    Some(free) => {
                        pile = free;
                        ports.0[pile as usize] += 1;
                    }
                    None if vehicle == Vehicle::Ebike => {
                        // Every port taken: upstairs, a flying wire, or no charge tonight.
                        let f = cfg.no_free_pile;
                        let u: f64 = rng.random();
                        if u >= f.upstairs.get() + f.flying_wire.get() {
                            continue;
                        }
                        flying = u >= f.upstairs.get();
                        off_pile = true;
                    }
                    None => continue,
                }
            }
            if !off_pile {
                sessions.0 += 1;
                let session = format!("S{:08}", sessions.0);
                let (hours, wh) = match vehicle {
                    Vehicle::Ebike => (uniform(&mut rng, (3.0, 6.0)), rng.random_range(300..900)),
                    Vehicle::Ev => (uniform(&mut rng, (3.0, 8.0)), rng.random_range(8_000..40_000)),
                };
                if health.get(reg.entity[pile as usize]).is_ok_and(Health::reports) {
                    let data = ChargingStart { session: session.clone(), vehicle, flat: h.flat };
                    outbox.emit(t, pile, EventType::ChargingStart, Some(h.flat), Data::ChargingStart(data));
                }
                let minutes = (hours * 60.0) as u32;
                agenda.push(t + minutes as i64 * MINUTE, VehicleAction::End { pile, session, vehicle, wh, minutes });
            }
        }
        if off_pile {
            // Charging indoors (carried up by stairs or elevator) or from a window by flying wire.
            let kind = if flying { IncidentKind::EbikeFlyingWire } else { IncidentKind::EbikeIndoorCharging };
            let i = truth.open(kind, area, h.label(), t, false);
            truth.close(i, t + (uniform(&mut rng, (3.0, 7.0)) * HOUR as f64) as i64);
            let recall = if flying { cfg.signature_recall_flying_wire } else { cfg.signature_recall_indoor }.get();
            if let Some(m) = elec
                && senses(m)
                && rng.random_bool(recall)
            {
                let data = ElecAlarm { building: h.building, room: h.room, alarm: ElecAlarmKind::EbikeCharging, amps: rng.random_range(1.5..3.5) };
                outbox.emit(t, m, EventType::ElecAlarm, Some(h.flat), Data::ElecAlarm(data));
            }
        }
    }
}

/// A household going back to its old charging habit.
#[derive(Debug, Clone, Copy)]
pub struct Relapse {
    flat: Entity,
    habit: Habit,
}

/// A household whose indoor or flying-wire charging (or e-bike in the elevator) a response ended charges
/// at a pile from now on, and goes back to its habit after the drawn time, if ever. An answer about a kind
/// the household's habit does not produce changes nothing.
fn answer(
    answers: Res<Answers>,
    clock: Res<Clock>,
    reg: Res<Registry>,
    mut ebikes: Query<(Entity, &Household, &mut Ebike)>,
    mut relapses: ResMut<Agenda<Relapse>>,
    mut by_label: Local<Option<std::collections::HashMap<(String, String), Entity>>>,
) {
    for (_, r) in relapses.due(clock.now) {
        if let Ok((_, _, mut e)) = ebikes.get_mut(r.flat) {
            e.0 = r.habit;
        }
    }
    for a in answers.0.iter().filter(|a| crate::scenario::HABITS.contains(&a.kind)) {
        let index = by_label.get_or_insert_with(|| ebikes.iter().map(|(e, h, _)| (h.place(&reg), e)).collect());
        let Some(&flat) = index.get(&(a.area.clone(), a.subject.clone())) else { continue };
        let Ok((_, _, mut e)) = ebikes.get_mut(flat) else { continue };
        let produces = match e.0 {
            Habit::Pile => false,
            Habit::FlyingWire => a.kind == IncidentKind::EbikeFlyingWire,
            Habit::Upstairs => matches!(a.kind, IncidentKind::EbikeIndoorCharging | IncidentKind::EbikeElevator),
        };
        if !produces {
            continue;
        }
        let habit = e.0;
        e.0 = Habit::Pile;
        if let Some(at) = a.resume_at {
            relapses.push(at, Relapse { flat, habit });
        }
    }
}
