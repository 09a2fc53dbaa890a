//! The town registry: estates, committees, buildings, flats, devices, roads and the vulnerable-resident
//! register, as the platform knows them. The twin animates it; the core checks devices against it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::event::PersonId;
use crate::load::{DataErrors, Problems, read_ron};

/// The whole town as written in `assets/town.ron`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Town {
    pub name: String,
    /// The seed `towntwin town generate` used; informational.
    pub generator_seed: u64,
    /// The totals this file claims; loading checks the contents against them.
    pub declared: Totals,
    pub committees: Vec<Committee>,
    pub estates: Vec<Estate>,
    pub roads: Vec<Road>,
    pub register: Vec<Registered>,
    /// The estates the platform covers (its devices installed, its register kept, its sampling drawn
    /// from); `None`, as in a town file, is every estate. A run sets it from its scenario's `platform`
    /// section (the town before the platform covers none; a pilot covers a few).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered: Option<Vec<String>>,
}

/// Totals a town file declares about itself (the source's figures for Gaohang).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub estates: u32,
    pub committees: u32,
    /// Residents, checked within 5%: the source says "about 200,000".
    pub residents: u32,
    pub gates: u32,
    pub sensors: u32,
    pub cameras: u32,
    /// Least share of estates that are resettlement estates (the source: "over 70%").
    pub min_resettlement_share: f32,
}

impl Totals {
    /// The figures the source gives for Gaohang.
    pub const GAOHANG: Totals =
        Totals { estates: 82, committees: 39, residents: 200_000, gates: 583, sensors: 8_113, cameras: 1_053, min_resettlement_share: 0.70 };
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Committee {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum EstateKind {
    /// 动迁安置: resettlement housing, many rented flats.
    Resettlement,
    /// 商品房: commercial housing.
    Commercial,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Estate {
    pub id: String,
    pub name: String,
    pub kind: EstateKind,
    pub committee: String,
    /// Position on the town map, kilometres east and north of the town's south-west corner.
    pub pos: (f32, f32),
    pub built: u16,
    pub buildings: Vec<Building>,
    pub devices: Vec<Device>,
}

/// One residential building. `flats` holds one token per flat, floor by floor from the first,
/// `flats_per_floor` to a floor: a tenure letter and the household size, e.g. `O3 R2 U4 V0`.
/// O = owner-occupied, R = registered tenants, U = rented without registration, V = vacant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Building {
    pub no: u16,
    pub floors: u8,
    pub flats_per_floor: u8,
    pub elevators: u8,
    /// Parsed when the file is read; loading checks that there are `floors x flats_per_floor` of them.
    pub flats: Flats,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum Tenure {
    Owner,
    RegisteredTenant,
    UnregisteredOccupant,
    Vacant,
}

impl Tenure {
    pub fn letter(self) -> char {
        match self {
            Tenure::Owner => 'O',
            Tenure::RegisteredTenant => 'R',
            Tenure::UnregisteredOccupant => 'U',
            Tenure::Vacant => 'V',
        }
    }
    pub fn from_letter(c: char) -> Option<Tenure> {
        Some(match c {
            'O' => Tenure::Owner,
            'R' => Tenure::RegisteredTenant,
            'U' => Tenure::UnregisteredOccupant,
            'V' => Tenure::Vacant,
            _ => return None,
        })
    }
}

/// Who lives in one flat: a `flats` token such as `O3` (owner-occupied, three people) or `V0` (vacant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    pub tenure: Tenure,
    pub household: u8,
}

/// A building's flats in file order (floor by floor from the first), parsed once when the town is read from
/// its text form `"O3 R2 U4 V0 ..."`, which is also how it is written back. A bad token is refused there,
/// with the file, line and field; nothing downstream parses the text again. Made only by parsing, so every
/// household size is one digit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Flats(Vec<Occupancy>);

impl Flats {
    pub fn as_slice(&self) -> &[Occupancy] {
        &self.0
    }
}

impl std::ops::Deref for Flats {
    type Target = [Occupancy];
    fn deref(&self) -> &[Occupancy] {
        &self.0
    }
}

impl std::str::FromStr for Flats {
    type Err = String;
    /// Errors say which token is wrong and what was expected.
    fn from_str(s: &str) -> Result<Flats, String> {
        let mut out = Vec::with_capacity(s.len() / 3 + 1);
        for (i, tok) in s.split_whitespace().enumerate() {
            let mut chars = tok.chars();
            let (Some(t), Some(d), None) = (chars.next(), chars.next(), chars.next()) else {
                return Err(format!("flat token {} `{tok}`: expected a tenure letter (O, R, U, V) and one digit", i + 1));
            };
            let tenure = Tenure::from_letter(t).ok_or_else(|| format!("flat token {} `{tok}`: tenure `{t}` is not one of O, R, U, V", i + 1))?;
            let household = d.to_digit(10).ok_or_else(|| format!("flat token {} `{tok}`: household size `{d}` is not a digit", i + 1))? as u8;
            if (tenure == Tenure::Vacant) != (household == 0) {
                return Err(format!("flat token {} `{tok}`: a vacant flat has 0 people and an occupied one at least 1", i + 1));
            }
            out.push(Occupancy { tenure, household });
        }
        Ok(Flats(out))
    }
}

impl TryFrom<String> for Flats {
    type Error = String;
    fn try_from(s: String) -> Result<Flats, String> {
        s.parse()
    }
}

impl std::fmt::Display for Flats {
    /// The text form: tokens separated by single spaces.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(' ')?;
            }
            f.write_char(o.tenure.letter())?;
            f.write_char(char::from(b'0' + o.household))?;
        }
        Ok(())
    }
}

impl From<Flats> for String {
    fn from(f: Flats) -> String {
        f.to_string()
    }
}

/// One flat of a building, with its room number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flat {
    /// Room number as residents say it: floor * 100 + position (1102 = 11th floor, 2nd flat).
    pub room: u16,
    pub tenure: Tenure,
    pub household: u8,
}

impl Building {
    /// Every flat with its room number, floor by floor. A loaded town has `floors x flats_per_floor` of
    /// them ([`Town::validate`] checks it).
    pub fn rooms(&self) -> impl ExactSizeIterator<Item = Flat> + '_ {
        let per_floor = self.flats_per_floor.max(1) as usize;
        self.flats.iter().enumerate().map(move |(i, o)| {
            let (floor, pos) = (i / per_floor + 1, i % per_floor + 1);
            Flat { room: (floor * 100 + pos) as u16, tenure: o.tenure, household: o.household }
        })
    }
}

/// Every kind of device the platform connects. Adding a scenario adds a kind here and a rule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// Face-recognition access gate (智能门禁), with card reader.
    Gate,
    /// Road camera with electronic-fence recognition.
    Camera,
    /// Smart household-waste sorting kiosk (生活垃圾分类智能投放柜).
    SortingBin,
    /// Smart construction-waste box (建筑垃圾智能投放箱).
    ConstructionBox,
    /// Elevator e-bike detector (梯控).
    EbikeDetector,
    /// Shared charging pile for e-bikes and EVs.
    ChargingPile,
    /// Smoke detector.
    Smoke,
    /// Electrical-fire monitor on a building's distribution board; recognises e-bike charging loads.
    ElecFire,
    /// Smart water meter in a registered vulnerable resident's flat.
    WaterMeter,
    /// Door sensor in a registered vulnerable resident's flat.
    DoorSensor,
    /// Noise monitor in a building's stairwell.
    Noise,
    /// Manhole-cover tilt sensor.
    Manhole,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 12] = [
        DeviceKind::Gate,
        DeviceKind::Camera,
        DeviceKind::SortingBin,
        DeviceKind::ConstructionBox,
        DeviceKind::EbikeDetector,
        DeviceKind::ChargingPile,
        DeviceKind::Smoke,
        DeviceKind::ElecFire,
        DeviceKind::WaterMeter,
        DeviceKind::DoorSensor,
        DeviceKind::Noise,
        DeviceKind::Manhole,
    ];

    /// The topic segment and id infix for this kind.
    pub fn slug(self) -> &'static str {
        match self {
            DeviceKind::Gate => "gate",
            DeviceKind::Camera => "camera",
            DeviceKind::SortingBin => "bin",
            DeviceKind::ConstructionBox => "cwbox",
            DeviceKind::EbikeDetector => "ebike",
            DeviceKind::ChargingPile => "pile",
            DeviceKind::Smoke => "smoke",
            DeviceKind::ElecFire => "elecfire",
            DeviceKind::WaterMeter => "water",
            DeviceKind::DoorSensor => "door",
            DeviceKind::Noise => "noise",
            DeviceKind::Manhole => "manhole",
        }
    }

    /// Gates and cameras are counted apart from the "IoT sensing devices" in the source.
    pub fn is_sensor(self) -> bool {
        !matches!(self, DeviceKind::Gate | DeviceKind::Camera)
    }

    /// Battery-powered devices report rarely and can run low.
    pub fn battery_powered(self) -> bool {
        matches!(self, DeviceKind::Smoke | DeviceKind::WaterMeter | DeviceKind::DoorSensor | DeviceKind::Noise | DeviceKind::Manhole)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    pub kind: DeviceKind,
    /// Building number inside the estate, for devices that sit in a building.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<u16>,
    /// Elevator number inside the building, for e-bike detectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevator: Option<u8>,
    /// Room number, for devices inside a flat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Road {
    pub id: String,
    pub name: String,
    pub length_km: f32,
    /// Relative traffic, 1.0 = a typical main road; scales violation rates.
    pub traffic: f32,
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum Vulnerability {
    LoneElderly,
    Disabled,
    ChildInDifficulty,
}

/// One entry of the vulnerable-resident register (独居老人, 残疾人, 困境儿童).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    pub id: String,
    /// The face/card id the gates know this resident by.
    pub person: PersonId,
    pub estate: String,
    pub building: u16,
    pub room: u16,
    pub category: Vulnerability,
    pub water_meter: String,
    pub door_sensor: String,
}

/// Counts of what a town holds, computed from its contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Census {
    pub estates: u32,
    pub resettlement_estates: u32,
    pub committees: u32,
    pub buildings: u32,
    pub flats: u32,
    pub households: u32,
    pub residents: u32,
    pub elevators: u32,
    pub gates: u32,
    pub sensors: u32,
    pub cameras: u32,
    pub registered_vulnerable: u32,
    pub devices_by_kind: Vec<(DeviceKind, u32)>,
}

impl Town {
    /// Loads and validates a town file.
    pub fn load(file: &Path) -> Result<Town, DataErrors> {
        let town: Town = read_ron(file)?;
        town.validate(file)?;
        Ok(town)
    }

    /// Whether the platform covers estate `id` (see [`Town::covered`]).
    pub fn covers(&self, id: &str) -> bool {
        self.covered.as_ref().is_none_or(|c| c.iter().any(|e| e == id))
    }

    /// Counts what the town holds.
    pub fn census(&self) -> Census {
        let mut c = Census {
            estates: self.estates.len() as u32,
            committees: self.committees.len() as u32,
            registered_vulnerable: self.register.len() as u32,
            ..Census::default()
        };
        let mut by_kind: HashMap<DeviceKind, u32> = HashMap::new();
        for e in &self.estates {
            if e.kind == EstateKind::Resettlement {
                c.resettlement_estates += 1;
            }
            for b in &e.buildings {
                c.buildings += 1;
                c.elevators += b.elevators as u32;
                for f in b.flats.iter() {
                    c.flats += 1;
                    if f.household > 0 {
                        c.households += 1;
                        c.residents += f.household as u32;
                    }
                }
            }
        }
        for d in self.estates.iter().flat_map(|e| &e.devices).chain(self.roads.iter().flat_map(|r| &r.devices)) {
            *by_kind.entry(d.kind).or_default() += 1;
            match d.kind {
                DeviceKind::Gate => c.gates += 1,
                DeviceKind::Camera => c.cameras += 1,
                _ => c.sensors += 1,
            }
        }
        c.devices_by_kind = DeviceKind::ALL.iter().map(|k| (*k, by_kind.get(k).copied().unwrap_or(0))).collect();
        c
    }

    /// Checks totals against `declared`, and every reference: committees, buildings, rooms, devices.
    pub fn validate(&self, file: &Path) -> Result<(), DataErrors> {
        let mut p = Problems::new(file);
        let d = self.declared;
        let committee_ids: HashSet<&str> = self.committees.iter().map(|c| c.id.as_str()).collect();
        let mut seen_ids: HashSet<&str> = HashSet::new();
        for (i, c) in self.committees.iter().enumerate() {
            p.check(seen_ids.insert(&c.id), || format!("committees[{i}].id"), || format!("duplicate id `{}`", c.id));
        }
        // Per estate: buildings, flats, devices and their places.
        let mut flats_by_estate: HashMap<&str, HashMap<(u16, u16), Flat>> = HashMap::new();
        let mut devices_by_id: HashMap<&str, (&str, &Device)> = HashMap::new();
        for (ei, e) in self.estates.iter().enumerate() {
            p.check(seen_ids.insert(&e.id), || format!("estates[{ei}].id"), || format!("duplicate id `{}`", e.id));
            p.check(
                committee_ids.contains(e.committee.as_str()),
                || format!("estates[{ei}].committee"),
                || format!("`{}` is not one of the committees' ids", e.committee),
            );
            let mut flats = HashMap::new();
            let mut building_nos = HashSet::new();
            for (bi, b) in e.buildings.iter().enumerate() {
                p.check(building_nos.insert(b.no), || format!("estates[{ei}].buildings[{bi}].no"), || format!("duplicate building number {}", b.no));
                p.check(b.floors >= 1, || format!("estates[{ei}].buildings[{bi}].floors"), || "expected at least 1 floor".into());
                p.check(b.flats_per_floor >= 1, || format!("estates[{ei}].buildings[{bi}].flats_per_floor"), || "expected at least 1 flat per floor".into());
                p.check(
                    b.floors <= 7 || b.elevators >= 1,
                    || format!("estates[{ei}].buildings[{bi}].elevators"),
                    || format!("a building of {} floors needs at least 1 elevator", b.floors),
                );
                let expected = b.floors as usize * b.flats_per_floor as usize;
                p.check(
                    b.flats.len() == expected,
                    || format!("estates[{ei}].buildings[{bi}].flats"),
                    || format!("{} flat tokens, expected floors x flats_per_floor = {} x {} = {expected}", b.flats.len(), b.floors, b.flats_per_floor),
                );
                for f in b.rooms() {
                    flats.insert((b.no, f.room), f);
                }
            }
            for (di, dev) in e.devices.iter().enumerate() {
                let at = || format!("estates[{ei}].devices[{di}]");
                p.check(devices_by_id.insert(&dev.id, (&e.id, dev)).is_none(), || format!("{}.id", at()), || format!("duplicate device id `{}`", dev.id));
                p.check(dev.kind != DeviceKind::Camera, || format!("{}.kind", at()), || "cameras belong to roads, not estates".into());
                if let Some(bno) = dev.building {
                    match e.buildings.iter().find(|b| b.no == bno) {
                        None => p.push(format!("{}.building", at()), format!("estate `{}` has no building {bno}", e.id)),
                        Some(b) => {
                            if let Some(el) = dev.elevator {
                                p.check(
                                    el >= 1 && el <= b.elevators,
                                    || format!("{}.elevator", at()),
                                    || format!("building {bno} has elevators 1..={}, not {el}", b.elevators),
                                );
                            }
                            if let Some(room) = dev.room {
                                p.check(flats.contains_key(&(bno, room)), || format!("{}.room", at()), || format!("building {bno} has no room {room}"));
                            }
                        }
                    }
                }
                let needs_building = matches!(
                    dev.kind,
                    DeviceKind::EbikeDetector | DeviceKind::ElecFire | DeviceKind::WaterMeter | DeviceKind::DoorSensor | DeviceKind::Noise | DeviceKind::Smoke
                );
                p.check(!needs_building || dev.building.is_some(), || format!("{}.building", at()), || format!("a {:?} must name its building", dev.kind));
                p.check(
                    dev.kind != DeviceKind::EbikeDetector || dev.elevator.is_some(),
                    || format!("{}.elevator", at()),
                    || "an EbikeDetector must name its elevator".into(),
                );
            }
            flats_by_estate.insert(&e.id, flats);
        }
        for (ri, r) in self.roads.iter().enumerate() {
            p.check(seen_ids.insert(&r.id), || format!("roads[{ri}].id"), || format!("duplicate id `{}`", r.id));
            p.check(r.length_km > 0.0 && r.traffic > 0.0, || format!("roads[{ri}]"), || "expected positive length_km and traffic".into());
            for (di, dev) in r.devices.iter().enumerate() {
                p.check(
                    devices_by_id.insert(&dev.id, (&r.id, dev)).is_none(),
                    || format!("roads[{ri}].devices[{di}].id"),
                    || format!("duplicate device id `{}`", dev.id),
                );
                p.check(
                    dev.kind == DeviceKind::Camera,
                    || format!("roads[{ri}].devices[{di}].kind"),
                    || format!("roads hold cameras only, found {:?}", dev.kind),
                );
            }
        }
        let mut persons = HashSet::new();
        for (i, r) in self.register.iter().enumerate() {
            p.check(seen_ids.insert(&r.id), || format!("register[{i}].id"), || format!("duplicate id `{}`", r.id));
            p.check(persons.insert(r.person), || format!("register[{i}].person"), || format!("person {} is registered twice", r.person));
            match flats_by_estate.get(r.estate.as_str()) {
                None => p.push(format!("register[{i}].estate"), format!("`{}` is not an estate id", r.estate)),
                Some(flats) => match flats.get(&(r.building, r.room)) {
                    None => p.push(format!("register[{i}].room"), format!("estate `{}` has no building {} room {}", r.estate, r.building, r.room)),
                    Some(f) => p.check(f.household > 0, || format!("register[{i}].room"), || format!("building {} room {} is vacant", r.building, r.room)),
                },
            }
            for (field, id, kind) in [("water_meter", &r.water_meter, DeviceKind::WaterMeter), ("door_sensor", &r.door_sensor, DeviceKind::DoorSensor)] {
                match devices_by_id.get(id.as_str()) {
                    Some((estate, dev)) if *estate == r.estate && dev.kind == kind && dev.room == Some(r.room) && dev.building == Some(r.building) => {}
                    Some(_) => p.push(
                        format!("register[{i}].{field}"),
                        format!("`{id}` is not a {kind:?} in building {} room {} of `{}`", r.building, r.room, r.estate),
                    ),
                    None => p.push(format!("register[{i}].{field}"), format!("no device `{id}`")),
                }
            }
        }
        if let Some(covered) = &self.covered {
            let ids: HashSet<&str> = self.estates.iter().map(|e| e.id.as_str()).collect();
            for (i, id) in covered.iter().enumerate() {
                p.check(ids.contains(id.as_str()), || format!("covered[{i}]"), || format!("`{id}` is not an estate id"));
            }
        }
        // Totals, once references are known to be sound.
        let c = self.census();
        let total = |p: &mut Problems, field: &str, got: u32, want: u32| {
            p.check(got == want, || format!("declared.{field}"), || format!("the file holds {got}, it declares {want}"));
        };
        total(&mut p, "estates", c.estates, d.estates);
        total(&mut p, "committees", c.committees, d.committees);
        total(&mut p, "gates", c.gates, d.gates);
        total(&mut p, "sensors", c.sensors, d.sensors);
        total(&mut p, "cameras", c.cameras, d.cameras);
        let lo = (d.residents as f64 * 0.95) as u32;
        let hi = (d.residents as f64 * 1.05) as u32;
        p.check(
            (lo..=hi).contains(&c.residents),
            || "declared.residents".into(),
            || format!("the flats hold {} residents, expected within 5% of {}", c.residents, d.residents),
        );
        let share = if c.estates == 0 { 0.0 } else { c.resettlement_estates as f32 / c.estates as f32 };
        p.check(
            share >= d.min_resettlement_share,
            || "declared.min_resettlement_share".into(),
            || format!("{:.1}% of estates are resettlement estates, expected at least {:.1}%", share * 100.0, d.min_resettlement_share * 100.0),
        );
        p.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_ron;

    #[test]
    fn flats_are_parsed_when_read_and_written_back_as_read() {
        let b: Building = parse_ron(Path::new("x.ron"), r#"(no: 1, floors: 2, flats_per_floor: 2, elevators: 0, flats: "O3 V0 R1 U2")"#).unwrap();
        let rooms: Vec<(u16, Tenure, u8)> = b.rooms().map(|f| (f.room, f.tenure, f.household)).collect();
        assert_eq!(rooms, [(101, Tenure::Owner, 3), (102, Tenure::Vacant, 0), (201, Tenure::RegisteredTenant, 1), (202, Tenure::UnregisteredOccupant, 2)]);
        assert_eq!(b.flats.len(), 4);
        assert_eq!(b.flats.to_string(), "O3 V0 R1 U2");
        assert_eq!(ron::to_string(&b.flats).unwrap(), r#""O3 V0 R1 U2""#);
    }

    #[test]
    fn a_bad_flat_token_is_a_located_load_error() {
        for (flats, says) in [("O3 X1", "tenure `X`"), ("O3 V2", "vacant flat"), ("O3 R", "one digit"), ("O3 Rx", "not a digit")] {
            let text = format!("(no: 1, floors: 1, flats_per_floor: 2, elevators: 0,\n flats: \"{flats}\")");
            let e = parse_ron::<Building>(Path::new("x.ron"), &text).unwrap_err();
            assert_eq!((e.field.as_deref(), e.line), (Some("flats"), Some(2)), "{e}");
            assert!(e.message.contains("flat token 2") && e.message.contains(says), "{e}");
        }
    }
}
