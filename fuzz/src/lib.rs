//! What the fuzz targets share: the real data files (loaded once per process) and a tiny valid town for
//! running fuzzed rule sets and policies fast.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use towntwin_core::event::PersonId;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::town::{Building, Committee, Device, DeviceKind, Estate, EstateKind, Registered, Road, Totals, Town, Vulnerability};

/// A repository file, from this crate's folder (`fuzz/`).
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The real town, `assets/town.ron` (validated).
pub fn town() -> &'static Town {
    static T: OnceLock<Town> = OnceLock::new();
    T.get_or_init(|| Town::load(&repo_file("assets/town.ron")).unwrap_or_else(|e| panic!("{e}")))
}

/// The real rule set, `assets/rules.ron` (validated).
pub fn rules() -> &'static RuleSet {
    static R: OnceLock<RuleSet> = OnceLock::new();
    R.get_or_init(|| RuleSet::load(&repo_file("assets/rules.ron")).unwrap_or_else(|e| panic!("{e}")))
}

/// The standard escalation policy, `scenarios/policies/standard.ron` (validated).
pub fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| Policy::load(&repo_file("scenarios/policies/standard.ron")).unwrap_or_else(|e| panic!("{e}")))
}

fn dev(id: &str, kind: DeviceKind, building: Option<u16>, elevator: Option<u8>, room: Option<u16>) -> Device {
    Device { id: id.into(), kind, building, elevator, room }
}

/// A town of one estate (one building of 2 x 2 flats, one device of each estate kind), one road with a
/// camera and one registered resident: small enough to build an engine over per fuzz input. It passes
/// [`Town::validate`].
pub fn tiny_town() -> &'static Town {
    static T: OnceLock<Town> = OnceLock::new();
    T.get_or_init(|| {
        let building = Building { no: 1, floors: 2, flats_per_floor: 2, elevators: 1, flats: "O2 R1 U3 V0".parse().expect("flats") };
        let b = Some(1);
        let devices = vec![
            dev("E001-gate-01", DeviceKind::Gate, None, None, None),
            dev("E001-bin-01", DeviceKind::SortingBin, None, None, None),
            dev("E001-cwbox-01", DeviceKind::ConstructionBox, None, None, None),
            dev("E001-ebike-01", DeviceKind::EbikeDetector, b, Some(1), None),
            dev("E001-pile-01", DeviceKind::ChargingPile, None, None, None),
            dev("E001-smoke-01", DeviceKind::Smoke, b, None, None),
            dev("E001-elecfire-01", DeviceKind::ElecFire, b, None, None),
            dev("E001-water-01", DeviceKind::WaterMeter, b, None, Some(102)),
            dev("E001-door-01", DeviceKind::DoorSensor, b, None, Some(102)),
            dev("E001-noise-01", DeviceKind::Noise, b, None, None),
            dev("E001-manhole-01", DeviceKind::Manhole, None, None, None),
        ];
        let town = Town {
            name: "tiny".into(),
            generator_seed: 0,
            declared: Totals { estates: 1, committees: 1, residents: 6, gates: 1, sensors: 10, cameras: 1, min_resettlement_share: 1.0 },
            committees: vec![Committee { id: "C01".into(), name: "c".into() }],
            estates: vec![Estate {
                id: "E001".into(),
                name: "e".into(),
                kind: EstateKind::Resettlement,
                committee: "C01".into(),
                pos: (0.0, 0.0),
                built: 2000,
                buildings: vec![building],
                devices,
            }],
            roads: vec![Road {
                id: "R01".into(),
                name: "r".into(),
                length_km: 1.0,
                traffic: 1.0,
                devices: vec![dev("R01-camera-01", DeviceKind::Camera, None, None, None)],
            }],
            register: vec![Registered {
                id: "V0001".into(),
                person: PersonId(1),
                estate: "E001".into(),
                building: 1,
                room: 102,
                category: Vulnerability::LoneElderly,
                water_meter: "E001-water-01".into(),
                door_sensor: "E001-door-01".into(),
            }],
            covered: None,
        };
        town.validate(Path::new("tiny-town")).unwrap_or_else(|e| panic!("{e}"));
        town
    })
}
