//! Ground truth: the kinds of incident the twin records as they really happen, so that a run can score the
//! core's work orders against them. A rule says in `assets/rules.ron` which kinds it is meant to catch
//! ([`Detects`]); an unknown kind there is a located error when the rules load.

use serde::{Deserialize, Serialize};

use crate::time::{HOUR, Millis};

/// What really happened in the town (written to `ground_truth.jsonl`, and named in `assets/rules.ron`, by
/// the names of [`IncidentKind::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IncidentKind {
    GroupRental,
    RenovationLegal,
    RenovationIllegal,
    VulnerableEmergency,
    VulnerableTrip,
    EbikeElevator,
    EbikeIndoorCharging,
    EbikeFlyingWire,
    Fire,
    ElectricalFault,
    ManholeDisplaced,
    FenceViolation,
    BinOverflow,
    DeviceOffline,
    DeviceLowBattery,
    DeviceStuck,
    GarbageMissort,
    /// Bags dumped beside a kiosk outside the fixed times and places (定时定点), until cleared.
    GarbageDumping,
    /// A job of the synthetic kind (`synthetic` in a scenario): Poisson arrivals at a constant rate, each
    /// reported at once through the 12345 line, for checking a crew against queueing theory.
    Synthetic,
    /// Construction waste left outside a smart construction-waste box (装修垃圾乱堆), until cleared.
    ConstructionDumping,
    /// Something in a flat or its building that needs the property manager's repair (物业报修: a leak, a
    /// corridor light, a door closer), until repaired.
    RepairNeeded,
    /// A resident's question for the estate (fees, rules, a rental discussion), until answered.
    ResidentQuestion,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 22] = [
        IncidentKind::GroupRental,
        IncidentKind::RenovationLegal,
        IncidentKind::RenovationIllegal,
        IncidentKind::VulnerableEmergency,
        IncidentKind::VulnerableTrip,
        IncidentKind::EbikeElevator,
        IncidentKind::EbikeIndoorCharging,
        IncidentKind::EbikeFlyingWire,
        IncidentKind::Fire,
        IncidentKind::ElectricalFault,
        IncidentKind::ManholeDisplaced,
        IncidentKind::FenceViolation,
        IncidentKind::BinOverflow,
        IncidentKind::DeviceOffline,
        IncidentKind::DeviceLowBattery,
        IncidentKind::DeviceStuck,
        IncidentKind::GarbageMissort,
        IncidentKind::GarbageDumping,
        IncidentKind::Synthetic,
        IncidentKind::ConstructionDumping,
        IncidentKind::RepairNeeded,
        IncidentKind::ResidentQuestion,
    ];

    /// The source's application scenario a problem of this kind belongs to (`None`: the devices' own
    /// faults, benign kinds and the synthetic job).
    pub fn scenario(self) -> Option<&'static str> {
        use IncidentKind::*;
        Some(match self {
            GroupRental => "group rentals",
            RenovationIllegal => "illegal renovation",
            VulnerableEmergency => "vulnerable residents",
            EbikeElevator | EbikeIndoorCharging | EbikeFlyingWire => "vehicles and charging",
            BinOverflow | GarbageMissort | GarbageDumping => "garbage",
            ConstructionDumping => "construction waste",
            RepairNeeded | ResidentQuestion => "repairs and questions",
            FenceViolation => "road fences",
            Fire | ElectricalFault | ManholeDisplaced => "safety",
            RenovationLegal | VulnerableTrip | DeviceOffline | DeviceLowBattery | DeviceStuck | Synthetic => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::GroupRental => "group_rental",
            IncidentKind::RenovationLegal => "renovation.legal",
            IncidentKind::RenovationIllegal => "renovation.illegal",
            IncidentKind::VulnerableEmergency => "vulnerable.emergency",
            IncidentKind::VulnerableTrip => "vulnerable.trip",
            IncidentKind::EbikeElevator => "ebike.elevator",
            IncidentKind::EbikeIndoorCharging => "ebike.indoor_charging",
            IncidentKind::EbikeFlyingWire => "ebike.flying_wire",
            IncidentKind::Fire => "fire",
            IncidentKind::ElectricalFault => "electrical.fault",
            IncidentKind::ManholeDisplaced => "manhole.displaced",
            IncidentKind::FenceViolation => "fence.violation",
            IncidentKind::BinOverflow => "bin.overflow",
            IncidentKind::DeviceOffline => "device.offline",
            IncidentKind::DeviceLowBattery => "device.low_battery",
            IncidentKind::DeviceStuck => "device.stuck",
            IncidentKind::GarbageMissort => "garbage.missort",
            IncidentKind::GarbageDumping => "garbage.dumping",
            IncidentKind::Synthetic => "synthetic.job",
            IncidentKind::ConstructionDumping => "construction.dumping",
            IncidentKind::RepairNeeded => "repair.needed",
            IncidentKind::ResidentQuestion => "resident.question",
        }
    }
}

impl std::str::FromStr for IncidentKind {
    type Err = String;
    fn from_str(s: &str) -> Result<IncidentKind, String> {
        IncidentKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = IncidentKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("`{s}` is not an incident kind; expected one of {}", names.join(", "))
        })
    }
}

impl Serialize for IncidentKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IncidentKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<IncidentKind, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a work order is matched to an incident of a kind it is meant to catch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchBy {
    #[default]
    /// Same area and same subject (flat, device, person, camera/code), overlapping in time.
    Subject,
    /// Same area, overlapping in time (a building's noise alarm about some flat's renovation).
    Area,
}

/// Which ground-truth kinds a rule is meant to catch, and how its orders are matched to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detects {
    pub kinds: Vec<IncidentKind>,
    pub by: MatchBy,
}

/// How far apart in time a work order's sightings and an incident may be for the order to be about it: a
/// condition seen a little before an incident is recorded as begun (a detector ahead of the ground truth's
/// minute), or a little after it ended (the last alarms of a fire put out).
pub const ABOUT_GRACE: Millis = HOUR;

/// Where and when a work order saw its condition: from the order, or from a notice of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting<'a> {
    pub area: &'a str,
    /// What the order is about within its area (a flat, a device, a person), as its rule keys it.
    pub subject: &'a str,
    pub first_seen: Millis,
    pub last_seen: Millis,
}

/// Where and when an incident went on; `end` is `None` while it goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span<'a> {
    pub kind: IncidentKind,
    pub area: &'a str,
    pub subject: &'a str,
    pub start: Millis,
    pub end: Option<Millis>,
}

impl Detects {
    /// The one rule for "this order is about that incident", used alike by detection scoring, by the town
    /// when a resolved order's response ends what it was about, and by a drill's scoring: an order of a rule
    /// that detects `self` is about an incident when the rule catches the incident's kind, both are in the
    /// same area (and name the same subject, for a rule matched by subject), and the order's sightings
    /// overlap the incident's span within [`ABOUT_GRACE`] on either side. An incident still going on is
    /// taken as going on until `now`.
    pub fn is_about(&self, o: &Sighting<'_>, i: &Span<'_>, now: Millis) -> bool {
        let end = i.end.unwrap_or(now);
        self.kinds.contains(&i.kind)
            && o.area == i.area
            && (self.by == MatchBy::Area || o.subject == i.subject)
            && o.first_seen <= end + ABOUT_GRACE
            && o.last_seen >= i.start - ABOUT_GRACE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_about_an_incident_of_its_kinds_place_and_time() {
        let by_subject = Detects { kinds: vec![IncidentKind::GroupRental], by: MatchBy::Subject };
        let by_area = Detects { kinds: vec![IncidentKind::Fire], by: MatchBy::Area };
        let rental = Span { kind: IncidentKind::GroupRental, area: "E001", subject: "B01-101", start: 10 * HOUR, end: Some(20 * HOUR) };
        let seen = |subject, first: Millis, last: Millis| Sighting { area: "E001", subject, first_seen: first, last_seen: last };
        // Inside, and at the edges of the grace on either side; one minute beyond is not about it.
        assert!(by_subject.is_about(&seen("B01-101", 12 * HOUR, 13 * HOUR), &rental, 30 * HOUR));
        assert!(by_subject.is_about(&seen("B01-101", 21 * HOUR, 22 * HOUR), &rental, 30 * HOUR));
        assert!(!by_subject.is_about(&seen("B01-101", 21 * HOUR + 1, 22 * HOUR), &rental, 30 * HOUR));
        assert!(by_subject.is_about(&seen("B01-101", 8 * HOUR, 9 * HOUR), &rental, 30 * HOUR));
        assert!(!by_subject.is_about(&seen("B01-101", 8 * HOUR, 9 * HOUR - 1), &rental, 30 * HOUR));
        // Another flat, another area, another kind: not about it.
        assert!(!by_subject.is_about(&seen("B01-102", 12 * HOUR, 13 * HOUR), &rental, 30 * HOUR));
        assert!(!by_subject.is_about(&Sighting { area: "E002", ..seen("B01-101", 12 * HOUR, 13 * HOUR) }, &rental, 30 * HOUR));
        assert!(!by_area.is_about(&seen("B01-101", 12 * HOUR, 13 * HOUR), &rental, 30 * HOUR));
        // Matched by area, the subject does not matter (a fire's order names the detector that sounded).
        let fire = Span { kind: IncidentKind::Fire, area: "E001", subject: "B01-101", start: 10 * HOUR, end: None };
        assert!(by_area.is_about(&seen("E001-smoke-0007", 10 * HOUR, 10 * HOUR), &fire, 11 * HOUR));
        // Going on: until now.
        assert!(by_area.is_about(&seen("x", 40 * HOUR, 40 * HOUR), &fire, 40 * HOUR));
        assert!(!by_area.is_about(&seen("x", 40 * HOUR, 40 * HOUR), &fire, 38 * HOUR));
    }

    #[test]
    fn names_round_trip_through_serde() {
        for k in IncidentKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<IncidentKind>(&json).unwrap(), k);
        }
    }
}
