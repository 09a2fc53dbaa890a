//! The fence feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{Data, EventType, FenceViolation};
use towntwin_contracts::time::HOUR;
use towntwin_contracts::truth::IncidentKind;
use towntwin_contracts::violations::VIOLATIONS;

use crate::plugins::{Feature, day_start};
use crate::world::{Agenda, Clock, Dev, GroundTruth, Health, Outbox, Params, Registry, TownData, poisson};

pub struct FencePlugin;

/// The fence code of illegal parking, which shared parking spaces absorb.
const PARKING: u8 = 1;

impl Plugin for FencePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<FenceAction>>().add_systems(Update, (take_asks, plan_day.run_if(day_start), act).chain().in_set(Feature::Fence));
    }
}

/// A drill's street-order violation at a camera now: an incident, seen by the camera if it is up (drawn
/// from the inject's own stream).
fn take_asks(
    ctx: crate::world::Ctx,
    town: Res<TownData>,
    mut asks: ResMut<crate::plugins::messages::Asks>,
    health: Query<&Health>,
    mut rec: crate::world::Record,
    mut applied: ResMut<crate::plugins::messages::Applied>,
) {
    let crate::world::Ctx { clock, params, reg } = &ctx;
    let crate::world::Record { truth, outbox } = &mut rec;
    for (inject, camera, code) in asks.fence.drain(..) {
        let Some(road) = reg.cameras_by_road.iter().position(|c| c.contains(&camera)) else { continue };
        let Some(v) = VIOLATIONS.iter().find(|v| v.code == code) else { continue };
        let mut rng = params.rng("drill", inject as u64, 0);
        let road = town.0.roads[road].id.clone();
        let cam = &reg.devices[camera as usize];
        let i = truth.instant(IncidentKind::FenceViolation, &road, format!("{}/{code}", cam.id), clock.now, false);
        if health.get(reg.entity[camera as usize]).is_ok_and(Health::senses) {
            let data = FenceViolation { road: road.clone(), code, violation: v.name.to_string(), confidence: rng.random_range(0.85..0.99) };
            outbox.emit(clock.now, camera, EventType::FenceViolation, None, Data::Fence(data));
        }
        let what = format!("{} at {} on {road}", v.name.replace('_', " "), cam.id);
        applied.0.push(crate::plugins::messages::InjectEffect { inject, at: clock.now, what, incidents: vec![i] });
    }
}

#[derive(Debug, Clone)]
pub struct FenceAction {
    pub camera: Dev,
    pub road: usize,
    pub code: u8,
    pub real: bool,
    /// Illegal parking that shared parking absorbed: it takes the camera's draws like any other, so the
    /// others' stay as they were, and is neither an incident nor an event.
    pub absorbed: bool,
}

fn plan_day(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    town: Res<TownData>,
    mut agenda: ResMut<Agenda<FenceAction>>,
    mut truth: ResMut<GroundTruth>,
) {
    let cfg = &params.scenario.fence;
    let begin = clock.day_begin();
    // Shared parking absorbs a share of the illegal parking, in proportion to the estates covered; whether
    // a violation is absorbed comes from a stream of its own, so the other draws stay as they were.
    let platform = &params.scenario.platform;
    let covered = reg.estate_ids.iter().filter(|e| platform.covers(e)).count() as f64 / reg.estate_ids.len().max(1) as f64;
    let absorbed = platform.shared_parking.get() * covered;
    for (ri, road) in town.0.roads.iter().enumerate() {
        let cams = &reg.cameras_by_road[ri];
        if cams.is_empty() {
            continue;
        }
        let mut rng = params.rng("fence.day", ri as u64, clock.day);
        let mut shared = (absorbed > 0.0).then(|| params.rng("fence.shared_parking", ri as u64, clock.day));
        let per_hour = cfg.violations_per_camera_day * cams.len() as f64 * road.traffic as f64 / 24.0;
        for hour in 0..24u32 {
            for v in &VIOLATIONS {
                for _ in 0..poisson(&mut rng, per_hour * v.share * v.profile.weight(hour)) {
                    let t = begin + hour as i64 * HOUR + rng.random_range(0..3_600) * 1_000;
                    let camera = cams[rng.random_range(0..cams.len())];
                    let absorbed = v.code == PARKING && shared.as_mut().is_some_and(|r| r.random_bool(absorbed));
                    if !absorbed {
                        truth.instant(IncidentKind::FenceViolation, &road.id, format!("{}/{}", reg.devices[camera as usize].id, v.code), t, false);
                    }
                    agenda.push(t, FenceAction { camera, road: ri, code: v.code, real: true, absorbed });
                }
            }
            for _ in 0..poisson(&mut rng, cfg.false_per_camera_day * cams.len() as f64 / 24.0) {
                let t = begin + hour as i64 * HOUR + rng.random_range(0..3_600) * 1_000;
                let camera = cams[rng.random_range(0..cams.len())];
                let code = VIOLATIONS[rng.random_range(0..VIOLATIONS.len())].code;
                agenda.push(t, FenceAction { camera, road: ri, code, real: false, absorbed: false });
            }
        }
    }
}

fn act(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    town: Res<TownData>,
    mut agenda: ResMut<Agenda<FenceAction>>,
    health: Query<&Health>,
    mut outbox: ResMut<Outbox>,
) {
    let recall = params.scenario.fence.recall.get();
    let mut rng = params.rng("fence.act", 0, clock.tick as u32);
    for (t, a) in agenda.due(clock.now) {
        if !health.get(reg.entity[a.camera as usize]).is_ok_and(Health::senses) {
            continue;
        }
        let (seen, confidence) = if a.real { (rng.random_bool(recall), rng.random_range(0.8..0.99)) } else { (true, rng.random_range(0.6..0.85)) };
        if !seen || a.absorbed {
            continue;
        }
        let v = &VIOLATIONS[(a.code - 1) as usize];
        let road = town.0.roads[a.road].id.clone();
        let data = FenceViolation { road, code: a.code, violation: v.name.to_string(), confidence };
        outbox.emit(t, a.camera, EventType::FenceViolation, None, Data::Fence(data));
    }
}
