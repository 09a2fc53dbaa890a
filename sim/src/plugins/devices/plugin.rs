//! The devices feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{Data, EventType, Fault, FaultKind, Heartbeat, Recovered};
use towntwin_contracts::time::{DAY, HOUR, MINUTE, Millis};
use towntwin_contracts::truth::IncidentKind;

use crate::plugins::messages::{Answers, Asks};
use crate::plugins::{Feature, day_start};
use crate::world::{Agenda, Clock, Ctx, Dev, Health, Outbox, Params, Record, Registry, at_hours, uniform};

pub struct DevicesPlugin;

impl Plugin for DevicesPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<DeviceAction>>()
            .init_resource::<Agenda<Dev>>()
            .add_systems(Startup, schedule_heartbeats.in_set(Feature::Devices))
            .add_systems(Update, (take_asks, answer, plan_day.run_if(day_start), act, tick).chain().in_set(Feature::Devices));
    }
}

/// Devices a drill sends dark now.
fn take_asks(clock: Res<Clock>, mut asks: ResMut<Asks>, mut agenda: ResMut<Agenda<DeviceAction>>) {
    for (dev, hours) in asks.dark.drain(..) {
        agenda.push(clock.now, DeviceAction::Offline { dev, hours });
    }
}

#[derive(Debug, Clone)]
pub enum DeviceAction {
    Offline { dev: Dev, hours: f64 },
    Online { dev: Dev },
    Stuck { dev: Dev, days: f64 },
    Unstuck { dev: Dev },
    ReplaceBattery { dev: Dev },
}

/// The ground-truth incident of a stuck sensor.
#[derive(Component, Debug, Clone)]
pub struct StuckIncident(pub usize);

fn plan_day(ctx: Ctx, mut agenda: ResMut<Agenda<DeviceAction>>, mut devices: Query<&mut Health>, mut rec: Record) {
    let Ctx { clock, params, reg } = &ctx;
    let Record { truth, outbox } = &mut rec;
    let cfg = &params.scenario.devices;
    let begin = clock.day_begin();
    let mut rng = params.rng("devices.day", 0, clock.day);
    let p_off = (cfg.offline_per_device_year / 365.0).min(1.0);
    let p_stuck = (cfg.stuck_per_sensor_year / 365.0).min(1.0);
    for (i, d) in reg.devices.iter().enumerate() {
        if rng.random_bool(p_off) {
            agenda.push(at_hours(&mut rng, begin, 0.0, 24.0), DeviceAction::Offline { dev: i as Dev, hours: uniform(&mut rng, cfg.offline_hours) });
        }
        if d.kind.is_sensor() && rng.random_bool(p_stuck) {
            agenda.push(at_hours(&mut rng, begin, 0.0, 24.0), DeviceAction::Stuck { dev: i as Dev, days: uniform(&mut rng, cfg.stuck_days) });
        }
        // Batteries drain a day's worth.
        if let Ok(mut h) = devices.get_mut(reg.entity[i])
            && let Some(drain) = h.battery.map(|_| h.drain_per_day)
            && let Some(b) = h.battery.as_mut()
        {
            *b = (*b - drain).max(0.0);
            if *b < 10.0 && !h.low_battery {
                h.low_battery = true;
                let at = clock.now;
                let replace = uniform(&mut rng, cfg.battery_replace_days);
                agenda.push(at + (replace * DAY as f64) as Millis, DeviceAction::ReplaceBattery { dev: i as Dev });
                h.battery_incident = Some(truth.open(IncidentKind::DeviceLowBattery, &d.area, d.id.to_string(), at, !installed(params, reg, i as Dev)));
                if h.online {
                    outbox.emit(at, i as Dev, EventType::DeviceFault, None, Data::Fault(Fault { fault: FaultKind::LowBattery }));
                }
            }
        }
    }
}

fn act(
    mut commands: Commands,
    ctx: Ctx,
    mut agenda: ResMut<Agenda<DeviceAction>>,
    mut devices: Query<&mut Health>,
    stuck: Query<&StuckIncident>,
    mut rec: Record,
) {
    let Ctx { clock, params, reg } = &ctx;
    let Record { truth, outbox } = &mut rec;
    let mut rng = params.rng("devices.act", 0, clock.tick as u32);
    for (t, a) in agenda.due(clock.now) {
        match a {
            DeviceAction::Offline { dev, hours } => {
                let Ok(mut h) = devices.get_mut(reg.entity[dev as usize]) else { continue };
                if !h.online {
                    continue;
                }
                h.online = false;
                h.down_since = t;
                h.until = t + (hours * HOUR as f64) as Millis;
                agenda.push(h.until, DeviceAction::Online { dev });
                let d = &reg.devices[dev as usize];
                h.incident = Some(truth.open(IncidentKind::DeviceOffline, &d.area, d.id.to_string(), t, !installed(params, reg, dev)));
            }
            DeviceAction::Online { dev } => {
                let Ok(mut h) = devices.get_mut(reg.entity[dev as usize]) else { continue };
                // Only the return the device's outage is due for (a repair may have brought it forward).
                if h.online || t != h.until {
                    continue;
                }
                h.online = true;
                if let Some(i) = h.incident.take() {
                    truth.close(i, t);
                }
                let down_minutes = ((t - h.down_since) / MINUTE) as u32;
                outbox.emit(t, dev, EventType::DeviceRecovered, None, Data::Recovered(Recovered { down_minutes }));
            }
            DeviceAction::Unstuck { dev } => {
                let entity = reg.entity[dev as usize];
                let Ok(mut h) = devices.get_mut(entity) else { continue };
                if !h.stuck {
                    continue;
                }
                h.stuck = false;
                if let Ok(StuckIncident(i)) = stuck.get(entity) {
                    truth.close(*i, t);
                }
                commands.entity(entity).remove::<StuckIncident>();
            }
            DeviceAction::ReplaceBattery { dev } => {
                let Ok(mut h) = devices.get_mut(reg.entity[dev as usize]) else { continue };
                if !h.low_battery {
                    continue;
                }
                h.low_battery = false;
                h.battery = Some(100.0);
                if let Some(i) = h.battery_incident.take() {
                    truth.close(i, t);
                }
                if h.online {
                    outbox.emit(t, dev, EventType::DeviceRecovered, None, Data::Recovered(Recovered { down_minutes: 0 }));
                }
            }
            DeviceAction::Stuck { dev, days } => {
                let entity = reg.entity[dev as usize];
                let Ok(mut h) = devices.get_mut(entity) else { continue };
                if h.stuck {
                    continue;
                }
                h.stuck = true;
                let d = &reg.devices[dev as usize];
                let i = truth.open(IncidentKind::DeviceStuck, &d.area, d.id.to_string(), t, !installed(params, reg, dev));
                commands.entity(entity).insert(StuckIncident(i));
                agenda.push(t + (days * DAY as f64) as Millis, DeviceAction::Unstuck { dev });
                if h.online && rng.random_bool(params.scenario.devices.stuck_self_report.get()) {
                    outbox.emit(t, dev, EventType::DeviceFault, None, Data::Fault(Fault { fault: FaultKind::Stuck }));
                }
            }
        }
    }
}

/// Heartbeats due in this tick, from a per-minute calendar, so a tick costs what it emits rather than a
/// pass over every device.
fn tick(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut beats: ResMut<Agenda<Dev>>,
    mut devices: Query<&mut Health>,
    mut outbox: ResMut<Outbox>,
) {
    let cfg = &params.scenario.devices;
    let due = beats.due(clock.now);
    // The next beats, put on the calendar together (each minute's bucket made at its size).
    let mut next = Vec::with_capacity(due.len());
    for (t, dev) in due {
        let Ok(mut h) = devices.get_mut(reg.entity[dev as usize]) else { continue };
        let d = &reg.devices[dev as usize];
        let interval = if d.kind.battery_powered() { cfg.heartbeat_minutes_battery } else { cfg.heartbeat_minutes_mains } as Millis * MINUTE;
        h.next_heartbeat = t + interval;
        next.push((h.next_heartbeat, dev));
        // A flat battery is a dead device until replaced.
        if h.online && h.battery.is_none_or(|b| b > 0.0) {
            let rssi_dbm = -60 - ((dev as i64 * 7 + t / MINUTE) % 40) as i16;
            let battery_pct = h.battery.map(|b| b.round() as u8);
            outbox.emit(t, dev, EventType::DeviceHeartbeat, None, Data::Heartbeat(Heartbeat { battery_pct, rssi_dbm }));
        }
    }
    beats.push_all(next);
}

/// Puts every device's first heartbeat on the calendar.
fn schedule_heartbeats(reg: Res<Registry>, devices: Query<&Health>, mut beats: ResMut<Agenda<Dev>>) {
    let first = reg.entity.iter().enumerate().filter_map(|(i, e)| Some((devices.get(*e).ok()?.next_heartbeat, i as Dev)));
    beats.push_all(first.collect());
}

/// A device a response reached is repaired now: back online, unstuck, or with a new battery.
fn answer(answers: Res<Answers>, clock: Res<Clock>, reg: Res<Registry>, mut devices: Query<&mut Health>, mut agenda: ResMut<Agenda<DeviceAction>>) {
    for a in answers.0.iter().filter(|a| a.incident.is_some()) {
        let Some(&dev) = reg.by_id.get(&a.subject) else { continue };
        match a.kind {
            IncidentKind::DeviceOffline => {
                if let Ok(mut h) = devices.get_mut(reg.entity[dev as usize])
                    && !h.online
                {
                    h.until = clock.now;
                    agenda.push(clock.now, DeviceAction::Online { dev });
                }
            }
            IncidentKind::DeviceStuck => agenda.push(clock.now, DeviceAction::Unstuck { dev }),
            IncidentKind::DeviceLowBattery => agenda.push(clock.now, DeviceAction::ReplaceBattery { dev }),
            _ => {}
        }
    }
}

/// Whether device `dev` is installed (the scenario's `platform`): the faults of one that is not are no
/// real problem (benign in the ground truth), though it is simulated like any other so that every draw is
/// the same whatever is deployed.
fn installed(params: &Params, reg: &Registry, dev: Dev) -> bool {
    let d = &reg.devices[dev as usize];
    params.scenario.platform.installed(d.kind, (d.estate != u16::MAX).then(|| reg.estate_ids[d.estate as usize].as_str()))
}
