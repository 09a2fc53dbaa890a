//! Ground truth: the kinds of incident the twin records as they really happen, so that a run can score the
//! core's work orders against them. A rule says in `assets/rules.ron` which kinds it is meant to catch
//! ([`Detects`]); an unknown kind there is a located error when the rules load.

use serde::{Deserialize, Serialize};

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
    /// A job of the synthetic kind (`synthetic` in a scenario): Poisson arrivals at a constant rate, each
    /// reported at once through the 12345 line, for checking a crew against queueing theory.
    Synthetic,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 18] = [
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
        IncidentKind::Synthetic,
    ];

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
            IncidentKind::Synthetic => "synthetic.job",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for k in IncidentKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<IncidentKind>(&json).unwrap(), k);
        }
    }
}
