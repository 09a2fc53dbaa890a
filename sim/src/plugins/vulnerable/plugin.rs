//! The vulnerable feature's plugin and systems; its parameters are in [`super`].

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{Data, Direction, DoorOpen, EventType, WaterReading};
use towntwin_contracts::time::{DAY, HOUR, Local, Millis};
use towntwin_contracts::town::Vulnerability;
use towntwin_contracts::truth::IncidentKind;

use crate::plugins::messages::{Answers, Asks, GateAction};
use crate::plugins::{Feature, day_start};
use crate::setup::{Flats, Members};
use crate::world::{
    Age, Agenda, Clock, Ctx, Health, Household, Outbox, Params, Presence, Record, Registry, Resident, State, TownData, Vulnerable, at_hours, in_order, poisson,
    uniform,
};

pub struct VulnerablePlugin;

impl Plugin for VulnerablePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<VulnAction>>()
            .add_systems(Startup, mark_register.in_set(Feature::Vulnerable))
            .add_systems(Update, (take_asks, answer, plan_day.run_if(day_start), act, water_readings).chain().in_set(Feature::Vulnerable));
    }
}

/// Residents a drill has taken ill at home now.
fn take_asks(clock: Res<Clock>, mut asks: ResMut<Asks>, mut agenda: ResMut<Agenda<VulnAction>>) {
    for who in asks.taken_ill.drain(..) {
        agenda.push(clock.now, VulnAction::Emergency(who));
    }
}

#[derive(Debug, Clone, Copy)]
pub enum VulnAction {
    Emergency(Entity),
    Found(Entity),
    Discharged(Entity),
    TripStart(Entity),
    TripEnd(Entity),
    Door(Entity),
}

/// Marks one member of each registered flat as the registered resident.
fn mark_register(
    mut commands: Commands,
    town: Res<TownData>,
    flats: Res<Flats>,
    reg: Res<Registry>,
    members: Query<&Members>,
    mut residents: Query<&mut Resident>,
) {
    let estate_index = |id: &str| reg.estate_ids.iter().position(|e| e == id);
    for (i, entry) in town.0.register.iter().enumerate() {
        let Some(e) = estate_index(&entry.estate) else { continue };
        let Some(&flat) = flats.by_place.get(&(e as u16, entry.building, entry.room)) else { continue };
        let Ok(Members(list)) = members.get(flat) else { continue };
        let Some(&who) = list.first() else { continue };
        if let Ok(mut r) = residents.get_mut(who) {
            r.pid = entry.person.0;
            r.age = match entry.category {
                Vulnerability::LoneElderly => Age::Senior,
                Vulnerability::ChildInDifficulty => Age::Child,
                Vulnerability::Disabled => r.age,
            };
        }
        let water = reg.by_id.get(&entry.water_meter).copied();
        let door = reg.by_id.get(&entry.door_sensor).copied();
        commands.entity(who).insert(Vulnerable { reg: i, water, door, incident: None });
    }
}

fn plan_day(clock: Res<Clock>, params: Res<Params>, people: Query<(Entity, &Vulnerable, &Presence)>, mut agenda: ResMut<Agenda<VulnAction>>) {
    let cfg = &params.scenario.vulnerable;
    let begin = clock.day_begin();
    for (who, v, p) in in_order(people, |x| x.1.reg) {
        let mut rng = params.rng("vulnerable.day", v.reg as u64, clock.day);
        if p.state != State::Normal {
            continue;
        }
        if rng.random_bool((cfg.emergencies_per_year / 365.0).min(1.0)) {
            agenda.push(at_hours(&mut rng, begin, 6.0, 22.0), VulnAction::Emergency(who));
        } else if rng.random_bool((cfg.trips_per_year / 365.0).min(1.0)) {
            agenda.push(at_hours(&mut rng, begin, 8.0, 16.0), VulnAction::TripStart(who));
        }
        for _ in 0..poisson(&mut rng, cfg.door_opens_per_day) {
            agenda.push(at_hours(&mut rng, begin, 7.0, 21.0), VulnAction::Door(who));
        }
    }
}

/// Where registered residents' actions are scheduled: their own agenda, and the asks of the residents
/// feature for the passes they make.
#[derive(SystemParam)]
struct Plans<'w> {
    own: ResMut<'w, Agenda<VulnAction>>,
    asks: ResMut<'w, Asks>,
}

fn act(
    ctx: Ctx,
    town: Res<TownData>,
    mut plans: Plans,
    mut people: Query<(&Resident, &mut Presence, &mut Vulnerable)>,
    households: Query<&Household>,
    health: Query<&Health>,
    mut rec: Record,
) {
    let Ctx { clock, params, reg } = &ctx;
    let Plans { own: agenda, asks } = &mut plans;
    let Record { truth, outbox } = &mut rec;
    let cfg = &params.scenario.vulnerable;
    for (t, a) in agenda.due(clock.now) {
        let who = match a {
            VulnAction::Emergency(w)
            | VulnAction::Found(w)
            | VulnAction::Discharged(w)
            | VulnAction::TripStart(w)
            | VulnAction::TripEnd(w)
            | VulnAction::Door(w) => w,
        };
        let Ok((r, mut p, mut v)) = people.get_mut(who) else { continue };
        let entry = &town.0.register[v.reg];
        let mut rng = params.rng("vulnerable.act", v.reg as u64, (t / 1000) as u32);
        match a {
            VulnAction::Emergency(_) if p.state == State::Normal && p.inside => {
                p.state = State::Emergency;
                v.incident = Some(truth.open(IncidentKind::VulnerableEmergency, &entry.estate, entry.id.clone(), t, false));
                let after = uniform(&mut rng, cfg.found_after_hours);
                agenda.push(t + (after * HOUR as f64) as Millis, VulnAction::Found(who));
            }
            VulnAction::Found(_) if p.state == State::Emergency => {
                // Taken to hospital by ambulance: out of the estate, through no gate's camera.
                p.state = State::Hospital;
                p.inside = false;
                if let Some(i) = v.incident.take() {
                    truth.close(i, t);
                }
                let days = uniform(&mut rng, cfg.hospital_days);
                agenda.push(t + (days * DAY as f64) as Millis, VulnAction::Discharged(who));
            }
            VulnAction::Discharged(_) if p.state == State::Hospital => {
                p.state = State::Normal;
                asks.passes.push((t, GateAction::draw(&mut rng, params, reg, r, who, Direction::In, true)));
            }
            VulnAction::TripStart(_) if p.state == State::Normal && p.inside => {
                p.state = State::Trip;
                v.incident = Some(truth.open(IncidentKind::VulnerableTrip, &entry.estate, entry.id.clone(), t, true));
                asks.passes.push((t, GateAction::draw(&mut rng, params, reg, r, who, Direction::Out, true)));
                let days = uniform(&mut rng, cfg.trip_days);
                agenda.push(t + (days * DAY as f64) as Millis, VulnAction::TripEnd(who));
            }
            VulnAction::TripEnd(_) if p.state == State::Trip => {
                p.state = State::Normal;
                if let Some(i) = v.incident.take() {
                    truth.close(i, t);
                }
                asks.passes.push((t, GateAction::draw(&mut rng, params, reg, r, who, Direction::In, true)));
            }
            VulnAction::Door(_) if p.state == State::Normal && p.inside => {
                if let (Some(door), Ok(flat)) = (v.door, households.get(r.flat))
                    && health.get(reg.entity[door as usize]).is_ok_and(Health::senses)
                {
                    outbox.emit(t, door, EventType::DoorOpen, Some(flat.flat), Data::Door(DoorOpen { flat: flat.flat }));
                }
            }
            _ => {}
        }
    }
}

/// Each hour on the hour, every registered flat's water meter reports the litres of the past hour.
fn water_readings(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    people: Query<(&Resident, &Presence, &Vulnerable)>,
    households: Query<&Household>,
    health: Query<&Health>,
    mut outbox: ResMut<Outbox>,
) {
    if clock.now.rem_euclid(HOUR) != 0 {
        return;
    }
    let cfg = &params.scenario.vulnerable;
    let hour = Local::of(clock.now - 1).hour;
    let waking = (7..22).contains(&hour);
    for (r, p, v) in in_order(people, |x| x.2.reg) {
        let Some(meter) = v.water else { continue };
        let Ok(h) = health.get(reg.entity[meter as usize]) else { continue };
        let Ok(flat) = households.get(r.flat) else { continue };
        if !h.reports() {
            continue;
        }
        let mut rng = params.rng("vulnerable.water", v.reg as u64, (clock.now / HOUR) as u32);
        let active = p.inside && p.state == State::Normal;
        let mean = match (active, waking) {
            (true, true) => cfg.litres_per_waking_hour,
            (true, false) => 0.3,
            // Others in the household still use water.
            (false, true) if flat.size > 1 => cfg.litres_per_waking_hour * 0.6,
            _ => 0.0,
        };
        let litres = if h.stuck { 0 } else { poisson(&mut rng, mean) };
        outbox.emit(clock.now, meter, EventType::WaterReading, Some(flat.flat), Data::Water(WaterReading { flat: flat.flat, litres }));
    }
}

/// A lone elderly resident in an emergency whom a response reached is found now (taken to hospital), not
/// when a neighbour would have noticed.
fn answer(answers: Res<Answers>, clock: Res<Clock>, people: Query<(Entity, &Vulnerable)>, mut agenda: ResMut<Agenda<VulnAction>>) {
    for a in answers.0.iter().filter(|a| a.kind == IncidentKind::VulnerableEmergency) {
        if let Some(i) = a.incident
            && let Some((who, _)) = people.iter().find(|(_, v)| v.incident == Some(i))
        {
            agenda.push(clock.now, VulnAction::Found(who));
        }
    }
}
