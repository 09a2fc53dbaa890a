//! Builds the world from the town registry: device entities with their health, the registry's lookups,
//! one entity per occupied flat (its household) and one per resident.

use std::collections::HashMap;

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{FlatRef, SmolStr};
use towntwin_contracts::town::{DeviceKind, Town};

use crate::generate::pick;
use crate::rng::stream;
use crate::world::{Age, Dev, DeviceInfo, Health, Household, Params, Presence, Registry, Resident, State};

/// Household entities of each estate, and the household entity of each (estate, building, room).
#[derive(Resource, Debug, Default)]
pub struct Flats {
    pub by_estate: Vec<Vec<Entity>>,
    pub by_place: HashMap<(u16, u16, u16), Entity>,
}

/// The residents living in a flat.
#[derive(Component, Debug, Clone, Default)]
pub struct Members(pub Vec<Entity>);

/// The next free person id (faces and cards registered to newcomers get new ids).
#[derive(Resource, Debug, Default)]
pub struct NextPid(pub u32);

impl NextPid {
    pub fn take(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

/// Spawns devices, households and residents.
pub fn populate(world: &mut World, town: &Town, start: i64) {
    let params = world.resource::<Params>().clone();
    let seed = params.seed;
    let dev_cfg = &params.scenario.devices;
    let mut reg = Registry::default();

    let areas = town
        .estates
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i as u16, &e.devices))
        .chain(town.roads.iter().map(|r| (r.id.as_str(), u16::MAX, &r.devices)));
    for (area, estate, devices) in areas {
        for d in devices {
            let idx = reg.devices.len() as Dev;
            let mut rng = stream(seed, "device.init", idx as u64);
            let interval = if d.kind.battery_powered() { dev_cfg.heartbeat_minutes_battery } else { dev_cfg.heartbeat_minutes_mains };
            let interval_ms = interval as i64 * 60_000;
            let battery = d.kind.battery_powered().then(|| rng.random_range(15.0..100.0f32));
            let health = Health {
                online: true,
                stuck: false,
                battery,
                drain_per_day: match battery {
                    Some(_) => (100.0 / crate::world::uniform(&mut params.rng("devices.battery", idx as u64, 0), dev_cfg.battery_days)) as f32,
                    None => 0.0,
                },
                low_battery: false,
                // Heartbeats are spread over the interval so the town does not beat in step.
                next_heartbeat: start + rng.random_range(0..interval_ms / 1000) * 1000,
                down_since: 0,
                until: 0,
                incident: None,
                battery_incident: None,
            };
            let entity = world.spawn(health).id();
            reg.entity.push(entity);
            reg.by_id.insert(d.id.clone(), idx);
            if estate != u16::MAX {
                reg.by_estate_kind.entry((estate, d.kind)).or_default().push(idx);
                if let Some(b) = d.building {
                    reg.by_building_kind.entry((estate, b, d.kind)).or_default().push(idx);
                    if let (DeviceKind::EbikeDetector, Some(el)) = (d.kind, d.elevator) {
                        reg.detector.insert((estate, b, el), idx);
                    }
                }
            }
            reg.devices.push(DeviceInfo {
                id: SmolStr::new(&d.id),
                kind: d.kind,
                area: SmolStr::new(area),
                estate,
                building: d.building,
                elevator: d.elevator,
            });
        }
    }
    reg.cameras_by_road = town.roads.iter().map(|r| r.devices.iter().filter_map(|d| reg.by_id.get(&d.id).copied()).collect()).collect();
    reg.estate_ids = town.estates.iter().map(|e| e.id.clone()).collect();
    reg.buildings = town.estates.iter().map(|e| e.buildings.iter().map(|b| (b.no, b.floors, b.elevators)).collect()).collect();

    let mix = params.scenario.residents.age_mix;
    let mut flats = Flats::default();
    let mut pid = NextPid::default();
    for (ei, e) in town.estates.iter().enumerate() {
        let ei16 = ei as u16;
        let mut rng = stream(seed, "residents.init", ei as u64);
        let gates = reg.of(ei16, DeviceKind::Gate).to_vec();
        let bins = reg.of(ei16, DeviceKind::SortingBin).to_vec();
        let mut estate_flats = Vec::new();
        let mut n_household = 0usize;
        for b in &e.buildings {
            for f in b.rooms() {
                if f.household == 0 {
                    continue;
                }
                // Households use the kiosk nearest them: here, kiosks in turn by flat order.
                let bin = (!bins.is_empty()).then(|| bins[n_household % bins.len()]);
                n_household += 1;
                let flat = world
                    .spawn(Household {
                        estate: ei16,
                        building: b.no,
                        room: f.room,
                        tenure: f.tenure,
                        size: f.household,
                        flat: FlatRef { building: b.no, room: f.room },
                        bin,
                        elevators: b.elevators,
                    })
                    .id();
                let mut members = Vec::with_capacity(f.household as usize);
                for _ in 0..f.household {
                    let age = if f.household == 1 {
                        if rng.random_bool(0.45) { Age::Senior } else { Age::Adult }
                    } else {
                        [Age::Child, Age::Adult, Age::Senior][pick(&mut rng, &[mix.child.get(), mix.adult.get(), mix.senior.get()])]
                    };
                    let usual_gate = (!gates.is_empty()).then(|| gates[rng.random_range(0..gates.len())]);
                    let r = world
                        .spawn((
                            Resident { pid: pid.take(), age, flat, home: FlatRef { building: b.no, room: f.room }, estate: ei16, usual_gate },
                            Presence { inside: true, state: State::Normal },
                        ))
                        .id();
                    members.push(r);
                }
                world.entity_mut(flat).insert(Members(members));
                flats.by_place.insert((ei16, b.no, f.room), flat);
                estate_flats.push(flat);
            }
        }
        flats.by_estate.push(estate_flats);
    }
    world.insert_resource(reg);
    world.insert_resource(flats);
    world.insert_resource(pid);
}
