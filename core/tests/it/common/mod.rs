//! A tiny town the core's tests share.
#![allow(dead_code)]

use towntwin_core::event::PersonId;
use towntwin_core::town::{Building, Committee, Device, DeviceKind, Estate, EstateKind, Registered, Road, Totals, Town, Vulnerability};

fn dev(id: &str, kind: DeviceKind, building: Option<u16>, room: Option<u16>) -> Device {
    Device { id: id.into(), kind, building, elevator: None, room }
}

/// One estate of two buildings, two gates, one kiosk, one registered resident; one road with a camera.
pub fn town() -> Town {
    let flats = |n: usize| vec!["O2"; n].join(" ").parse().expect("valid flat tokens");
    let estate = Estate {
        id: "E001".into(),
        name: "Test".into(),
        kind: EstateKind::Resettlement,
        committee: "C01".into(),
        pos: (0.0, 0.0),
        built: 2020,
        buildings: vec![
            Building { no: 1, floors: 2, flats_per_floor: 2, elevators: 0, flats: flats(4) },
            Building { no: 2, floors: 6, flats_per_floor: 4, elevators: 0, flats: flats(24) },
        ],
        devices: vec![
            dev("E001-gate-01", DeviceKind::Gate, None, None),
            dev("E001-gate-02", DeviceKind::Gate, None, None),
            dev("E001-bin-001", DeviceKind::SortingBin, None, None),
            dev("E001-water-001", DeviceKind::WaterMeter, Some(1), Some(101)),
            dev("E001-door-001", DeviceKind::DoorSensor, Some(1), Some(101)),
        ],
    };
    let road =
        Road { id: "R01".into(), name: "Road".into(), length_km: 1.0, traffic: 1.0, devices: vec![dev("R01-camera-001", DeviceKind::Camera, None, None)] };
    let register = vec![Registered {
        id: "V0001".into(),
        person: PersonId(9_000_001),
        estate: "E001".into(),
        building: 1,
        room: 101,
        category: Vulnerability::LoneElderly,
        water_meter: "E001-water-001".into(),
        door_sensor: "E001-door-001".into(),
    }];
    Town {
        name: "t".into(),
        generator_seed: 0,
        declared: Totals { estates: 1, committees: 1, residents: 56, gates: 2, sensors: 3, cameras: 1, min_resettlement_share: 0.0 },
        committees: vec![Committee { id: "C01".into(), name: "c".into() }],
        estates: vec![estate],
        roads: vec![road],
        register,
        covered: None,
    }
}
