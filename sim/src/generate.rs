//! The deterministic town generator behind `towntwin town generate --seed S`, whose output is the
//! checked-in `assets/town.ron`. It reproduces the source's totals exactly (82 estates, 39 committees,
//! 583 gates, 8,113 IoT sensors, 1,053 road cameras) and about 200,000 residents.
//!
//! The split of the 8,113 sensors across kinds is a modelling choice (the source gives only the total);
//! [`SENSOR_SPLIT`] states it and the book's realism table (docs/src/assumptions.md) gives the reasoning.

use rand::Rng as _;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, LogNormal};
use towntwin_contracts::event::PersonId;
use towntwin_contracts::town::{Building, Committee, Device, DeviceKind, Estate, EstateKind, Registered, Road, Tenure, Totals, Town, Vulnerability};

use crate::rng::stream;

/// How the 8,113 IoT sensors split across kinds.
pub const SENSOR_SPLIT: [(DeviceKind, u32); 10] = [
    (DeviceKind::Smoke, 1_640),
    (DeviceKind::ChargingPile, 1_300),
    (DeviceKind::EbikeDetector, 1_200),
    (DeviceKind::WaterMeter, 1_000),
    (DeviceKind::DoorSensor, 1_000),
    (DeviceKind::ElecFire, 760),
    (DeviceKind::SortingBin, 738),
    (DeviceKind::ConstructionBox, 164),
    (DeviceKind::Noise, 164),
    (DeviceKind::Manhole, 147),
];

/// Main roads of the Gaohang area with cameras; lengths in km inside the town, relative traffic.
const ROADS: [(&str, f32, f32); 14] = [
    ("Yanggao North Road", 4.2, 1.6),
    ("Zhangyang North Road", 3.8, 1.4),
    ("Jufeng Road", 4.0, 1.3),
    ("Dongjing Road", 3.1, 1.0),
    ("Gaoxiang Road", 3.6, 1.1),
    ("Zhouhai Road", 2.9, 1.0),
    ("Huadong Road", 2.4, 0.8),
    ("Laiyang Road", 2.2, 0.8),
    ("Donglu Road", 2.0, 0.7),
    ("Shenjiang Road", 3.3, 1.2),
    ("Boxing Road", 1.8, 0.7),
    ("Jingao Road", 2.6, 0.9),
    ("Hangjin Road", 1.6, 0.6),
    ("Gangcheng Road", 3.0, 1.1),
];

const NAME_HEADS: [&str; 24] = [
    "Gao", "Hang", "Xin", "He", "Yun", "Ju", "Feng", "Dong", "Jing", "Hua", "Lin", "Yang", "Qing", "An", "Kang", "Fu", "Rui", "Jin", "Mei", "Song", "Zhu",
    "Lan", "Ning", "Tai",
];
const NAME_TAILS: [&str; 7] = ["Jiayuan", "Xincun", "Huayuan", "Mingyuan", "Yayuan", "Lijing", "Yuan"];

/// Resettlement estates are over 70% of 82 in the source; we make 62 of them (75.6%).
const RESETTLEMENT_ESTATES: usize = 62;
/// Households the generator aims at; with the household-size mix this gives about 200,000 residents.
const TARGET_RESIDENTS: f64 = 200_000.0;

/// Generates the town from `seed`. Same seed, same town, byte for byte once written.
pub fn generate(seed: u64) -> Town {
    let totals = Totals::GAOHANG;
    let n_estates = totals.estates as usize;
    let mut rng = stream(seed, "town.layout", 0);

    // Names: the three pilot estates the source names, then unique generated ones.
    let mut names = vec!["Xinjiayuan".to_string(), "Heyun Jiayuan".to_string(), "Xinyun Jiayuan".to_string()];
    let mut pool: Vec<String> = NAME_HEADS
        .iter()
        .flat_map(|a| NAME_HEADS.iter().map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
        .flat_map(|(a, b)| NAME_TAILS.iter().map(move |t| format!("{a}{} {t}", b.to_lowercase())))
        .collect();
    pool.shuffle(&mut rng);
    names.extend(pool.into_iter().take(n_estates - names.len()));

    // Kinds: the pilots are resettlement estates; 20 of the others are commercial.
    let mut kinds = vec![EstateKind::Resettlement; n_estates];
    let mut others: Vec<usize> = (3..n_estates).collect();
    others.shuffle(&mut rng);
    for &i in others.iter().take(n_estates - RESETTLEMENT_ESTATES) {
        kinds[i] = EstateKind::Commercial;
    }

    // Committees: 39, holding 2 or 3 estates each (35 x 2 + 4 x 3 = 82), estates sorted west to east so
    // that a committee's estates are neighbours.
    let positions: Vec<(f32, f32)> =
        (0..n_estates).map(|_| ((rng.random::<f32>() * 6.0 * 100.0).round() / 100.0, (rng.random::<f32>() * 4.5 * 100.0).round() / 100.0)).collect();
    let mut by_x: Vec<usize> = (0..n_estates).collect();
    by_x.sort_by(|&a, &b| positions[a].0.total_cmp(&positions[b].0).then(a.cmp(&b)));
    let mut committee_of = vec![0usize; n_estates];
    let mut k = 0;
    for c in 0..totals.committees as usize {
        let size = if c < 4 { 3 } else { 2 };
        for _ in 0..size {
            committee_of[by_x[k]] = c;
            k += 1;
        }
    }
    let committees: Vec<Committee> = (0..totals.committees as usize)
        .map(|c| {
            let first = (0..n_estates).find(|&e| committee_of[e] == c).unwrap_or(0);
            let head = names[first].split(' ').next().unwrap_or("Gaohang");
            Committee { id: format!("C{:02}", c + 1), name: format!("{head} Neighbourhood Committee") }
        })
        .collect();

    // Sizes: lognormal weights, scaled so occupied flats x mean household size is about 200,000.
    let size_dist = LogNormal::new(0.0, 0.45).expect("valid lognormal");
    let weights: Vec<f64> = (0..n_estates).map(|_| size_dist.sample(&mut rng)).collect();
    let wsum: f64 = weights.iter().sum();
    let flats_total = TARGET_RESIDENTS / 2.5 / 0.94;

    let mut estates: Vec<Estate> = (0..n_estates)
        .map(|i| {
            let mut er = stream(seed, "town.estate", i as u64);
            let kind = kinds[i];
            let target_flats = (weights[i] / wsum * flats_total).round().max(120.0) as u32;
            let buildings = make_buildings(&mut er, kind, target_flats);
            let built = match kind {
                EstateKind::Resettlement => er.random_range(2006..=2023),
                EstateKind::Commercial => er.random_range(1998..=2020),
            };
            Estate {
                id: format!("E{:03}", i + 1),
                name: names[i].clone(),
                kind,
                committee: committees[committee_of[i]].id.clone(),
                pos: positions[i],
                built,
                buildings,
                devices: Vec::new(),
            }
        })
        .collect();

    place_devices(seed, &mut estates, totals);
    let register = make_register(seed, &mut estates);
    let roads = make_roads(totals.cameras);

    Town { name: "Gaohang, Pudong, Shanghai".into(), generator_seed: seed, declared: totals, committees, estates, roads, register, covered: None }
}

fn make_buildings(rng: &mut crate::rng::Rng, kind: EstateKind, target_flats: u32) -> Vec<Building> {
    let (vacant, owner, registered) = match kind {
        EstateKind::Resettlement => (0.06, 0.55, 0.32),
        EstateKind::Commercial => (0.07, 0.78, 0.18),
    };
    let mut out = Vec::new();
    let mut flats = 0u32;
    while flats < target_flats {
        let (floors, per_floor): (u8, u8) = match kind {
            EstateKind::Resettlement => {
                let f = *[6u8, 11, 14, 18].get(pick(rng, &[0.15, 0.30, 0.30, 0.25])).unwrap_or(&11);
                (f, if rng.random_bool(0.5) { 4 } else { 6 })
            }
            EstateKind::Commercial => {
                let f = *[6u8, 11, 18, 24].get(pick(rng, &[0.2, 0.3, 0.3, 0.2])).unwrap_or(&11);
                (f, if rng.random_bool(0.6) { 2 } else { 4 })
            }
        };
        // The last building is cut to the floors still needed, so estates land near their target.
        let remaining = target_flats - flats;
        let floors = (floors as u32).min(remaining.div_ceil(per_floor as u32)).max(1) as u8;
        let elevators = match floors {
            0..=7 => 0,
            8..=18 => 2,
            _ => 3,
        };
        let n = floors as u32 * per_floor as u32;
        let mut s = String::with_capacity(n as usize * 3);
        for j in 0..n {
            if j > 0 {
                s.push(' ');
            }
            let x: f64 = rng.random();
            let tenure = if x < vacant {
                Tenure::Vacant
            } else if x < vacant + (1.0 - vacant) * owner {
                Tenure::Owner
            } else if x < vacant + (1.0 - vacant) * (owner + registered) {
                Tenure::RegisteredTenant
            } else {
                Tenure::UnregisteredOccupant
            };
            let size = match tenure {
                Tenure::Vacant => 0,
                Tenure::Owner => 1 + pick(rng, &[0.20, 0.34, 0.26, 0.12, 0.06, 0.02]),
                _ => 1 + pick(rng, &[0.30, 0.30, 0.20, 0.12, 0.05, 0.03]),
            };
            s.push(tenure.letter());
            s.push(char::from(b'0' + size as u8));
        }
        let parsed = s.parse().expect("the generator writes only valid flat tokens");
        out.push(Building { no: out.len() as u16 + 1, floors, flats_per_floor: per_floor, elevators, flats: parsed });
        flats += n;
    }
    out
}

/// Index drawn with the given weights (which need not sum to 1).
pub fn pick(rng: &mut crate::rng::Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// Splits `total` across `weights` by largest remainder, giving each at least `min` and at most `cap[i]`.
pub fn apportion(total: u32, weights: &[f64], min: u32, cap: Option<&[u32]>) -> Vec<u32> {
    let n = weights.len();
    let capped = |i: usize| cap.map_or(u32::MAX, |c| c[i]);
    let mut out: Vec<u32> = (0..n).map(|i| min.min(capped(i))).collect();
    let mut left = total.saturating_sub(out.iter().sum());
    // Repeat: split what is left by weight among those under their cap.
    while left > 0 {
        let open: Vec<usize> = (0..n).filter(|&i| out[i] < capped(i) && weights[i] > 0.0).collect();
        if open.is_empty() {
            break;
        }
        let wsum: f64 = open.iter().map(|&i| weights[i]).sum();
        let mut shares: Vec<(usize, u32, f64)> = open
            .iter()
            .map(|&i| {
                let exact = weights[i] / wsum * left as f64;
                let room = capped(i) - out[i];
                let whole = (exact.floor() as u32).min(room);
                (i, whole, exact - exact.floor())
            })
            .collect();
        let given: u32 = shares.iter().map(|s| s.1).sum();
        for (i, whole, _) in &shares {
            out[*i] += whole;
        }
        left -= given;
        shares.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        for (i, _, _) in shares {
            if left == 0 {
                break;
            }
            if out[i] < capped(i) {
                out[i] += 1;
                left -= 1;
            }
        }
    }
    out
}

fn place_devices(seed: u64, estates: &mut [Estate], totals: Totals) {
    let households: Vec<f64> = estates.iter().map(|e| e.buildings.iter().flat_map(|b| b.flats.iter()).filter(|f| f.household > 0).count() as f64).collect();
    let buildings: Vec<f64> = estates.iter().map(|e| e.buildings.len() as f64).collect();
    let elevators: Vec<u32> = estates.iter().map(|e| e.buildings.iter().map(|b| b.elevators as u32).sum()).collect();
    let ones = vec![1.0; estates.len()];

    let gate_w: Vec<f64> = households.iter().map(|h| h.sqrt()).collect();
    let gates = apportion(totals.gates, &gate_w, 3, None);
    for (e, n) in estates.iter_mut().zip(&gates) {
        for j in 0..*n {
            e.devices.push(Device { id: format!("{}-gate-{:02}", e.id, j + 1), kind: DeviceKind::Gate, building: None, elevator: None, room: None });
        }
    }

    let elevator_w: Vec<f64> = elevators.iter().map(|&x| x as f64).collect();
    for (kind, total) in SENSOR_SPLIT {
        // Water meters and door sensors follow the register, made afterwards.
        if matches!(kind, DeviceKind::WaterMeter | DeviceKind::DoorSensor) {
            continue;
        }
        let counts = match kind {
            DeviceKind::EbikeDetector => apportion(total, &elevator_w, 0, Some(&elevators)),
            DeviceKind::Smoke | DeviceKind::ElecFire | DeviceKind::Noise => apportion(total, &buildings, 1, None),
            DeviceKind::ConstructionBox => apportion(total, &ones, 1, None),
            _ => apportion(total, &households, 1, None),
        };
        for (ei, (e, n)) in estates.iter_mut().zip(&counts).enumerate() {
            let mut rng = stream(seed, kind.slug(), ei as u64);
            let slots: Vec<(u16, Option<u8>)> = match kind {
                DeviceKind::EbikeDetector => e.buildings.iter().flat_map(|b| (1..=b.elevators).map(move |l| (b.no, Some(l)))).collect(),
                _ => e.buildings.iter().map(|b| (b.no, None)).collect(),
            };
            for j in 0..*n as usize {
                let (building, elevator) = match kind {
                    DeviceKind::EbikeDetector => (Some(slots[j % slots.len()].0), slots[j % slots.len()].1),
                    // Building-bound kinds spread round the buildings, starting at a random one.
                    DeviceKind::Smoke | DeviceKind::ElecFire | DeviceKind::Noise => {
                        let start = rng.random_range(0..slots.len());
                        (Some(slots[(start + j) % slots.len()].0), None)
                    }
                    _ => (None, None),
                };
                e.devices.push(Device { id: format!("{}-{}-{:03}", e.id, kind.slug(), j + 1), kind, building, elevator, room: None });
            }
        }
    }
}

fn make_register(seed: u64, estates: &mut [Estate]) -> Vec<Registered> {
    let total = SENSOR_SPLIT.iter().find(|(k, _)| *k == DeviceKind::WaterMeter).map_or(0, |x| x.1);
    // Older resettlement estates house more lone elderly.
    let w: Vec<f64> = estates
        .iter()
        .map(|e| {
            let hh = e.buildings.iter().flat_map(|b| b.flats.iter()).filter(|f| f.household > 0).count() as f64;
            let age = (2026.0 - e.built as f64).max(1.0);
            let kind = if e.kind == EstateKind::Resettlement { 1.3 } else { 0.8 };
            hh * kind * (0.5 + age / 20.0)
        })
        .collect();
    let counts = apportion(total, &w, 1, None);
    let mut register = Vec::new();
    for (ei, e) in estates.iter_mut().enumerate() {
        let mut rng = stream(seed, "town.register", ei as u64);
        // Candidates: occupied flats; lone elderly live alone, others in any household.
        let flats: Vec<(u16, u16, u8)> = e.buildings.iter().flat_map(|b| b.rooms().map(move |f| (b.no, f.room, f.household))).filter(|f| f.2 > 0).collect();
        let mut singles: Vec<&(u16, u16, u8)> = flats.iter().filter(|f| f.2 == 1).collect();
        let mut families: Vec<&(u16, u16, u8)> = flats.iter().filter(|f| f.2 > 1).collect();
        singles.shuffle(&mut rng);
        families.shuffle(&mut rng);
        for j in 0..counts[ei] as usize {
            let category = match pick(&mut rng, &[0.70, 0.25, 0.05]) {
                0 => Vulnerability::LoneElderly,
                1 => Vulnerability::Disabled,
                _ => Vulnerability::ChildInDifficulty,
            };
            let from = if category == Vulnerability::LoneElderly || families.is_empty() { &mut singles } else { &mut families };
            let Some(&&(building, room, _)) = from.pop().as_ref() else { break };
            let wm = format!("{}-water-{:03}", e.id, j + 1);
            let ds = format!("{}-door-{:03}", e.id, j + 1);
            e.devices.push(Device { id: wm.clone(), kind: DeviceKind::WaterMeter, building: Some(building), elevator: None, room: Some(room) });
            e.devices.push(Device { id: ds.clone(), kind: DeviceKind::DoorSensor, building: Some(building), elevator: None, room: Some(room) });
            register.push(Registered {
                id: format!("V{:04}", register.len() + 1),
                // Registered residents' faces get ids of their own range, P9000001 upwards.
                person: PersonId(9_000_001 + register.len() as u32),
                estate: e.id.clone(),
                building,
                room,
                category,
                water_meter: wm,
                door_sensor: ds,
            });
        }
    }
    register
}

fn make_roads(cameras: u32) -> Vec<Road> {
    let w: Vec<f64> = ROADS.iter().map(|r| (r.1 * r.2) as f64).collect();
    let counts = apportion(cameras, &w, 1, None);
    ROADS
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(i, ((name, len, traffic), n))| {
            let id = format!("R{:02}", i + 1);
            let devices = (0..n)
                .map(|j| Device { id: format!("{id}-camera-{:03}", j + 1), kind: DeviceKind::Camera, building: None, elevator: None, room: None })
                .collect();
            Road { id, name: name.to_string(), length_km: *len, traffic: *traffic, devices }
        })
        .collect()
}

/// A cut-down town for tests and quick demos: the first `estates` estates and `roads` roads of the full
/// town, with the register and committees that belong to them, and totals declared to match.
pub fn small(seed: u64, estates: usize, roads: usize) -> Town {
    let mut town = generate(seed);
    town.estates.truncate(estates);
    town.roads.truncate(roads);
    let kept: std::collections::HashSet<String> = town.estates.iter().map(|e| e.id.clone()).collect();
    town.register.retain(|r| kept.contains(&r.estate));
    let used: std::collections::HashSet<String> = town.estates.iter().map(|e| e.committee.clone()).collect();
    town.committees.retain(|c| used.contains(&c.id));
    let c = town.census();
    town.declared = Totals {
        estates: c.estates,
        committees: c.committees,
        residents: c.residents,
        gates: c.gates,
        sensors: c.sensors,
        cameras: c.cameras,
        min_resettlement_share: 0.0,
    };
    town
}

/// Writes a town as RON, one building, device or register entry per line.
pub fn to_ron(town: &Town) -> String {
    let cfg = ron::ser::PrettyConfig::new().depth_limit(4).struct_names(false).separate_tuple_members(false);
    let body = ron::ser::to_string_pretty(town, cfg).unwrap_or_default();
    format!(
        "// The town of Gaohang, written by `towntwin town generate --seed {}`. Do not edit by hand: change the\n\
         // generator and regenerate. Flats: tenure letter (O owner, R registered tenant, U unregistered, V vacant)\n\
         // and household size, floor by floor.\n{body}\n",
        town.generator_seed
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn apportion_hits_the_total_within_caps() {
        let v = apportion(10, &[1.0, 1.0, 1.0], 0, None);
        assert_eq!(v.iter().sum::<u32>(), 10);
        let v = apportion(10, &[1.0, 100.0, 1.0], 0, Some(&[10, 2, 10]));
        assert_eq!(v, vec![4, 2, 4]);
        assert_eq!(SENSOR_SPLIT.iter().map(|s| s.1).sum::<u32>(), Totals::GAOHANG.sensors);
    }

    #[test]
    fn generated_town_meets_the_source_totals_and_validates() {
        let town = generate(1);
        town.validate(Path::new("generated")).expect("valid town");
        let c = town.census();
        assert_eq!((c.estates, c.committees, c.gates, c.sensors, c.cameras), (82, 39, 583, 8_113, 1_053));
        assert!(c.resettlement_estates as f32 / 82.0 > 0.70);
        assert!((190_000..=210_000).contains(&c.residents), "{}", c.residents);
        assert_eq!(generate(1), town, "same seed, same town");
        assert_ne!(generate(2), town);
    }
}
