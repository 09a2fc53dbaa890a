//! The safety feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{Data, ElecAlarm, ElecAlarmKind, EventType, FlatRef, ManholeAlarm, SmokeAlarm};
use towntwin_contracts::time::MINUTE;
use towntwin_contracts::town::DeviceKind;
use towntwin_contracts::truth::IncidentKind;

use crate::plugins::messages::{Applied, Asks, InjectEffect};
use crate::plugins::{Feature, day_start};
use crate::world::{Agenda, Clock, Dev, GroundTruth, Health, Outbox, Params, Registry, at_hours, poisson};

pub struct SafetyPlugin;

impl Plugin for SafetyPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<SafetyAction>>().add_systems(Update, (take_asks, plan_day.run_if(day_start), act).chain().in_set(Feature::Safety));
    }
}

#[derive(Debug, Clone)]
pub enum SafetyAction {
    Smoke { dev: Dev, obscuration_pct: f32 },
    Elec { dev: Dev, alarm: ElecAlarmKind, room: u16 },
    Manhole { dev: Dev },
}

/// Fires a drill sets: a ground-truth fire whose building's smoke detectors sound within 1-3 minutes.
fn take_asks(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut asks: ResMut<Asks>,
    mut agenda: ResMut<Agenda<SafetyAction>>,
    mut truth: ResMut<GroundTruth>,
    mut applied: ResMut<Applied>,
) {
    for fire in asks.fire.drain(..) {
        let mut rng = params.rng("drill", fire.inject as u64, 0);
        let i = truth.instant(IncidentKind::Fire, &fire.area, fire.flat.to_string(), clock.now, false);
        for &d in reg.in_building(fire.estate, fire.flat.building, DeviceKind::Smoke) {
            let delay = rng.random_range(1..=3) * MINUTE;
            agenda.push(clock.now + delay, SafetyAction::Smoke { dev: d, obscuration_pct: rng.random_range(12.0..30.0) });
        }
        applied.0.push(InjectEffect { inject: fire.inject, at: clock.now, what: format!("fire in {} {}", fire.area, fire.flat), incidents: vec![i] });
    }
}

fn plan_day(clock: Res<Clock>, params: Res<Params>, reg: Res<Registry>, mut agenda: ResMut<Agenda<SafetyAction>>, mut truth: ResMut<GroundTruth>) {
    let cfg = &params.scenario.safety;
    let begin = clock.day_begin();
    let mut rng = params.rng("safety.day", 0, clock.day);
    for (ei, buildings) in reg.buildings.iter().enumerate() {
        let area = &reg.estate_ids[ei];
        for &(no, floors, _) in buildings {
            for _ in 0..poisson(&mut rng, cfg.fires_per_building_year / 365.0) {
                let t = at_hours(&mut rng, begin, 0.0, 24.0);
                let room = rng.random_range(1..=floors.max(1)) as u16 * 100 + 1;
                truth.instant(IncidentKind::Fire, area, format!("B{no:02}-{room}"), t, false);
                for &d in reg.in_building(ei as u16, no, DeviceKind::Smoke) {
                    let delay = rng.random_range(1..6) * MINUTE;
                    agenda.push(t + delay, SafetyAction::Smoke { dev: d, obscuration_pct: rng.random_range(8.0..30.0) });
                }
            }
        }
    }
    for (i, d) in reg.devices.iter().enumerate() {
        let dev = i as Dev;
        match d.kind {
            DeviceKind::Smoke => {
                for _ in 0..poisson(&mut rng, cfg.smoke_nuisance_per_detector_year / 365.0) {
                    let t = at_hours(&mut rng, begin, 6.0, 22.0);
                    agenda.push(t, SafetyAction::Smoke { dev, obscuration_pct: rng.random_range(3.0..8.0) });
                }
            }
            DeviceKind::ElecFire => {
                for _ in 0..poisson(&mut rng, cfg.electrical_faults_per_monitor_year / 365.0) {
                    let t = at_hours(&mut rng, begin, 0.0, 24.0);
                    let alarm = if rng.random_bool(0.6) { ElecAlarmKind::ResidualCurrent } else { ElecAlarmKind::Overload };
                    let floors = reg.buildings[d.estate as usize].iter().find(|b| Some(b.0) == d.building).map_or(1, |b| b.1);
                    let room = rng.random_range(1..=floors.max(1)) as u16 * 100 + rng.random_range(1..=2);
                    truth.instant(IncidentKind::ElectricalFault, &d.area, format!("B{:02}-{room}", d.building.unwrap_or(0)), t, false);
                    agenda.push(t, SafetyAction::Elec { dev, alarm, room });
                }
            }
            DeviceKind::Manhole => {
                for _ in 0..poisson(&mut rng, cfg.manhole_alarms_per_sensor_year / 365.0) {
                    let t = at_hours(&mut rng, begin, 0.0, 24.0);
                    if rng.random_bool(cfg.manhole_real_share.get()) {
                        truth.instant(IncidentKind::ManholeDisplaced, &d.area, d.id.to_string(), t, false);
                    }
                    agenda.push(t, SafetyAction::Manhole { dev });
                }
            }
            _ => {}
        }
    }
}

fn act(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut agenda: ResMut<Agenda<SafetyAction>>,
    health: Query<&Health>,
    mut outbox: ResMut<Outbox>,
) {
    let mut rng = params.rng("safety.act", 0, clock.tick as u32);
    let senses = |d: Dev| health.get(reg.entity[d as usize]).is_ok_and(Health::senses);
    for (t, a) in agenda.due(clock.now) {
        match a {
            SafetyAction::Smoke { dev, obscuration_pct } if senses(dev) => {
                let building = reg.devices[dev as usize].building.unwrap_or(0);
                outbox.emit(t, dev, EventType::SmokeAlarm, None, Data::Smoke(SmokeAlarm { building, obscuration_pct }));
            }
            SafetyAction::Elec { dev, alarm, room } if senses(dev) => {
                let building = reg.devices[dev as usize].building.unwrap_or(0);
                let amps = if alarm == ElecAlarmKind::Overload { rng.random_range(32.0..63.0) } else { rng.random_range(0.03..0.3) };
                let subject = FlatRef { building, room };
                outbox.emit(t, dev, EventType::ElecAlarm, Some(subject), Data::ElecAlarm(ElecAlarm { building, room, alarm, amps }));
            }
            SafetyAction::Manhole { dev } if senses(dev) => {
                outbox.emit(t, dev, EventType::ManholeAlarm, None, Data::Manhole(ManholeAlarm { tilt_deg: rng.random_range(8.0..60.0) }));
            }
            _ => {}
        }
    }
}
