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

impl Plugin for FencePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<FenceAction>>().add_systems(Update, (plan_day.run_if(day_start), act).chain().in_set(Feature::Fence));
    }
}

#[derive(Debug, Clone)]
pub struct FenceAction {
    pub camera: Dev,
    pub road: usize,
    pub code: u8,
    pub real: bool,
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
    for (ri, road) in town.0.roads.iter().enumerate() {
        let cams = &reg.cameras_by_road[ri];
        if cams.is_empty() {
            continue;
        }
        let mut rng = params.rng("fence.day", ri as u64, clock.day);
        let per_hour = cfg.violations_per_camera_day * cams.len() as f64 * road.traffic as f64 / 24.0;
        for hour in 0..24u32 {
            for v in &VIOLATIONS {
                for _ in 0..poisson(&mut rng, per_hour * v.share * v.profile.weight(hour)) {
                    let t = begin + hour as i64 * HOUR + rng.random_range(0..3_600) * 1_000;
                    let camera = cams[rng.random_range(0..cams.len())];
                    truth.instant(IncidentKind::FenceViolation, &road.id, format!("{}/{}", reg.devices[camera as usize].id, v.code), t, false);
                    agenda.push(t, FenceAction { camera, road: ri, code: v.code, real: true });
                }
            }
            for _ in 0..poisson(&mut rng, cfg.false_per_camera_day * cams.len() as f64 / 24.0) {
                let t = begin + hour as i64 * HOUR + rng.random_range(0..3_600) * 1_000;
                let camera = cams[rng.random_range(0..cams.len())];
                let code = VIOLATIONS[rng.random_range(0..VIOLATIONS.len())].code;
                agenda.push(t, FenceAction { camera, road: ri, code, real: false });
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
        if !seen {
            continue;
        }
        let v = &VIOLATIONS[(a.code - 1) as usize];
        let road = town.0.roads[a.road].id.clone();
        let data = FenceViolation { road, code: a.code, violation: v.name.to_string(), confidence };
        outbox.emit(t, a.camera, EventType::FenceViolation, None, Data::Fence(data));
    }
}
