//! Device health: heartbeats (mains-powered devices often, battery devices rarely), going offline and
//! coming back, sensors stuck at one reading, batteries running low and being replaced.

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_core::event::{Data, EventType, Fault, FaultKind, Heartbeat, Recovered};
use towntwin_core::time::{DAY, HOUR, MINUTE, Millis};

use super::{Feature, day_start};
use crate::world::{Agenda, Clock, Dev, GroundTruth, Health, Outbox, Params, Registry, at_hours, uniform};

pub struct DevicesPlugin;

impl Plugin for DevicesPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<DeviceAction>>()
            .add_systems(Update, (plan_day.run_if(day_start), act, tick).chain().in_set(Feature::Devices));
    }
}

#[derive(Debug, Clone)]
pub enum DeviceAction {
    Offline { dev: Dev, hours: f64 },
    Stuck { dev: Dev, days: f64 },
}

/// When a stuck sensor frees itself (kept apart from `Health::until`, which is for being offline).
#[derive(Component, Debug, Clone)]
pub struct StuckUntil(pub Millis, pub usize);

fn plan_day(clock: Res<Clock>, params: Res<Params>, reg: Res<Registry>, mut agenda: ResMut<Agenda<DeviceAction>>, mut devices: Query<&mut Health>) {
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
        // Batteries drain a day's worth; each device's life is drawn from its own stream.
        if let Ok(mut h) = devices.get_mut(reg.entity[i])
            && let Some(b) = h.battery.as_mut()
        {
            let life = uniform(&mut params.rng("devices.battery", i as u64, 0), cfg.battery_days);
            *b = (*b - (100.0 / life) as f32).max(0.0);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn act(
    mut commands: Commands,
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut agenda: ResMut<Agenda<DeviceAction>>,
    mut devices: Query<&mut Health>,
    mut truth: ResMut<GroundTruth>,
    mut outbox: ResMut<Outbox>,
) {
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
                let d = &reg.devices[dev as usize];
                h.incident = Some(truth.open("device.offline", &d.area, d.id.clone(), t, false));
            }
            DeviceAction::Stuck { dev, days } => {
                let entity = reg.entity[dev as usize];
                let Ok(mut h) = devices.get_mut(entity) else { continue };
                if h.stuck {
                    continue;
                }
                h.stuck = true;
                let d = &reg.devices[dev as usize];
                let i = truth.open("device.stuck", &d.area, d.id.clone(), t, false);
                commands.entity(entity).insert(StuckUntil(t + (days * DAY as f64) as Millis, i));
                if h.online && rng.random_bool(params.scenario.devices.stuck_self_report) {
                    outbox.emit(t, dev, EventType::DeviceFault, None, Data::Fault(Fault { fault: FaultKind::Stuck }));
                }
            }
        }
    }
}

fn tick(
    mut commands: Commands,
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut devices: Query<(Entity, &mut Health, Option<&StuckUntil>)>,
    mut truth: ResMut<GroundTruth>,
    mut outbox: ResMut<Outbox>,
) {
    let cfg = &params.scenario.devices;
    let now = clock.now;
    let end = now + Clock::TICK;
    for (entity, mut h, stuck) in &mut devices {
        let dev = h.dev;
        let d = &reg.devices[dev as usize];
        if !h.online && h.until < end {
            let t = h.until.max(now);
            h.online = true;
            if let Some(i) = h.incident.take() {
                truth.close(i, t);
            }
            let down_minutes = ((t - h.down_since) / MINUTE) as u32;
            outbox.emit(t, dev, EventType::DeviceRecovered, None, Data::Recovered(Recovered { down_minutes }));
        }
        if let Some(&StuckUntil(until, i)) = stuck
            && until < end
        {
            h.stuck = false;
            truth.close(i, until.max(now));
            commands.entity(entity).remove::<StuckUntil>();
        }
        if let Some(b) = h.battery {
            if b < 10.0 && !h.low_battery {
                h.low_battery = true;
                let mut rng = params.rng("devices.replace", dev as u64, clock.day);
                h.replace_at = now + (uniform(&mut rng, cfg.battery_replace_days) * DAY as f64) as Millis;
                h.battery_incident = Some(truth.open("device.low_battery", &d.area, d.id.clone(), now, false));
                if h.online {
                    outbox.emit(now, dev, EventType::DeviceFault, None, Data::Fault(Fault { fault: FaultKind::LowBattery }));
                }
            } else if h.low_battery && h.replace_at < end {
                h.low_battery = false;
                h.battery = Some(100.0);
                if let Some(i) = h.battery_incident.take() {
                    truth.close(i, now);
                }
                if h.online {
                    outbox.emit(now, dev, EventType::DeviceRecovered, None, Data::Recovered(Recovered { down_minutes: 0 }));
                }
            }
        }
        // A flat battery is a dead device until replaced.
        let alive = h.online && h.battery.is_none_or(|b| b > 0.0);
        let interval = if d.kind.battery_powered() { cfg.heartbeat_minutes_battery } else { cfg.heartbeat_minutes_mains } as Millis * MINUTE;
        while h.next_heartbeat < end {
            let t = h.next_heartbeat;
            h.next_heartbeat += interval;
            if alive && t >= now {
                let rssi_dbm = -60 - ((dev as i64 * 7 + t / MINUTE) % 40) as i16;
                let battery_pct = h.battery.map(|b| b.round() as u8);
                outbox.emit(t, dev, EventType::DeviceHeartbeat, None, Data::Heartbeat(Heartbeat { battery_pct, rssi_dbm }));
            }
        }
    }
}
