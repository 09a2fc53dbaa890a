//! The platform itself, as a lever: which estates it covers (its devices installed, its register kept, its
//! QR code posted), whether the road cameras' fences are on, how residents use the QR code, and what it
//! all costs. The town before the platform (`estates: Nothing, road_cameras: false`) is the same town with
//! the same incidents but for those deploying the platform changes by itself ([`changed_by_deployment`]):
//! only what can find them differs, so a comparison of before and after is paired.
//!
//! There is no plugin: the emitter leaves out the events of devices that are not installed (they are
//! still simulated, so every random draw is the same whatever is deployed), and the hotline feature files
//! a share of residents' reports by QR code in the estates it covers.
//!
//! The costs are a planner's, not the twin's: they turn what a run measured (devices installed, staff
//! hours, hours problems went on) into yuan. The source gives one estate's system cost (443,000 yuan once,
//! before move-in) and the remediation later spent at comparable estates without it (nearly 2,000,000
//! yuan); every unit price below is an assumption of this baseline, chosen so that a resettlement estate of
//! the generated town's median size costs about what the source's did (see the planners' platform page).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;
use towntwin_contracts::town::{DeviceKind, Town};
use towntwin_contracts::truth::IncidentKind;

use crate::params::Probability;

/// Where the platform is deployed, and what residents do with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Platform {
    pub estates: Deployed,
    /// The road cameras' electronic fences (15 kinds of violation).
    pub road_cameras: bool,
    /// In a covered estate, the share of residents' reports (each call that would go to 12345) filed by
    /// the estate's QR code (高行家园码) instead: the resident reports through the platform, not as a
    /// complaint to the city's hotline.
    pub qr_share: Probability,
    /// Points (积分激励): in a covered estate, the chance each week that a household charging its e-bike
    /// upstairs or by flying wire takes to the piles for good, for the points they earn.
    pub points_switch_per_week: Probability,
    /// Points for sorting right: in a covered estate, the chance each week that a household with a sorting
    /// kiosk takes to sorting carefully for good (`garbage.careful_missort_factor`), for the points.
    pub points_sorting_per_week: Probability,
    /// Shared parking spaces (车位共享): the estates' spaces opened to others off-peak through the platform
    /// absorb this share of the illegal parking on the roads (fence violation 1), in proportion to the
    /// estates the platform covers.
    pub shared_parking: Probability,
}

/// Whether an incident of `kind` about `subject` is one that deploying the platform changes by itself, before
/// any response: illegal parking on the roads (fence violation 1, which shared parking absorbs), the
/// e-bikes the elevator detectors turn back from the lifts (and so the charging upstairs they prevent), and
/// wrong sorts (points for sorting right change them from the first week on).
/// Everything else happens alike whatever is deployed until a response changes the town; a comparison of
/// variants on common random numbers leaves these out of "the same incidents".
pub fn changed_by_deployment(kind: IncidentKind, subject: &str) -> bool {
    match kind {
        IncidentKind::FenceViolation => subject.ends_with("/1"),
        IncidentKind::EbikeElevator | IncidentKind::EbikeIndoorCharging | IncidentKind::GarbageMissort => true,
        _ => false,
    }
}

/// Which estates the platform covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub enum Deployed {
    /// Every estate (the town today).
    #[default]
    All,
    /// None: the town before the platform. Problems are found by residents' calls and patrols only.
    Nothing,
    /// These estates only, by id: a pilot (the source's first were Xinjiayuan and Heyun Jiayuan).
    Estates(Vec<String>),
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            estates: Deployed::All,
            road_cameras: true,
            qr_share: Probability::ZERO,
            points_switch_per_week: Probability::ZERO,
            points_sorting_per_week: Probability::ZERO,
            shared_parking: Probability::ZERO,
        }
    }
}

impl Platform {
    /// Whether the platform covers estate `id`.
    pub fn covers(&self, id: &str) -> bool {
        match &self.estates {
            Deployed::All => true,
            Deployed::Nothing => false,
            Deployed::Estates(list) => list.iter().any(|e| e == id),
        }
    }

    /// The estates covered, as the town's `covered` field takes them (`None`: every estate).
    pub fn covered(&self) -> Option<Vec<String>> {
        match &self.estates {
            Deployed::All => None,
            Deployed::Nothing => Some(Vec::new()),
            Deployed::Estates(list) => Some(list.clone()),
        }
    }

    /// Whether a device of `kind` in `estate` (`None`: on a road) is installed.
    pub fn installed(&self, kind: DeviceKind, estate: Option<&str>) -> bool {
        match estate {
            Some(e) => self.covers(e),
            None => kind != DeviceKind::Camera || self.road_cameras,
        }
    }

    /// The section's checks beyond its types (estate ids are checked against the town when it is loaded,
    /// see [`Platform::check_town`]).
    pub(crate) fn check(&self, p: &mut Problems) {
        if let Deployed::Estates(list) = &self.estates {
            p.check(!list.is_empty(), || "platform.estates".into(), || "expected at least one estate (the town before the platform is `Nothing`)".into());
            let mut seen = std::collections::BTreeSet::new();
            for (i, e) in list.iter().enumerate() {
                p.check(seen.insert(e), || format!("platform.estates[{i}]"), || format!("`{e}` is named twice"));
            }
        }
    }

    /// Every estate the section names is one of `town`'s.
    pub fn check_town(&self, town: &Town, p: &mut Problems) {
        if let Deployed::Estates(list) = &self.estates {
            for (i, e) in list.iter().enumerate() {
                p.check(
                    town.estates.iter().any(|x| x.id == *e),
                    || format!("platform.estates[{i}]"),
                    || format!("`{e}` is not an estate of the town `{}`", town.name),
                );
            }
        }
    }
}

/// What the platform and the problems it leaves cost, in yuan (assumptions, see the module's note).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Costs {
    /// Bought and installed, per device, by kind.
    pub device_yuan: BTreeMap<DeviceKind, f64>,
    /// Per covered estate, once: its network, its micro-brain (微脑) and integration.
    pub estate_yuan: f64,
    /// The town's platform (middle brain, 中脑), once, if any estate is covered.
    pub town_yuan: f64,
    /// Years the capital is spread over (straight line).
    pub lifetime_years: f64,
    /// Upkeep per year, as a share of the capital.
    pub upkeep_share_per_year: f64,
    /// What an hour of a real problem going on costs the town later (repairs, remediation, disputes), by
    /// kind; kinds not listed cost nothing. Not for the kinds the twin makes over as soon as they happen
    /// ([`INSTANT`]): they go on for no hours.
    pub remediation_yuan_per_hour: BTreeMap<IncidentKind, f64>,
}

impl Default for Costs {
    fn default() -> Self {
        use DeviceKind::*;
        Costs {
            device_yuan: BTreeMap::from([
                (Gate, 12_000.0),
                (Camera, 12_000.0),
                (SortingBin, 15_000.0),
                (ConstructionBox, 15_000.0),
                (EbikeDetector, 4_000.0),
                (ChargingPile, 2_000.0),
                (Smoke, 300.0),
                (ElecFire, 2_500.0),
                (WaterMeter, 600.0),
                (DoorSensor, 200.0),
                (Noise, 2_000.0),
                (Manhole, 1_500.0),
            ]),
            estate_yuan: 40_000.0,
            town_yuan: 3_000_000.0,
            lifetime_years: 8.0,
            upkeep_share_per_year: 0.08,
            remediation_yuan_per_hour: BTreeMap::from([
                (IncidentKind::GroupRental, 2.0),
                (IncidentKind::RenovationIllegal, 6.0),
                (IncidentKind::EbikeFlyingWire, 3.0),
                (IncidentKind::EbikeIndoorCharging, 3.0),
                (IncidentKind::BinOverflow, 1.0),
                (IncidentKind::VulnerableEmergency, 50.0),
                (IncidentKind::ConstructionDumping, 2.0),
                (IncidentKind::RepairNeeded, 0.5),
            ]),
        }
    }
}

/// The incident kinds the twin makes over as soon as they happen (a violation, a wrong sort, a fire put
/// out by 119): they have no hours to cost.
pub const INSTANT: [IncidentKind; 6] = [
    IncidentKind::EbikeElevator,
    IncidentKind::ElectricalFault,
    IncidentKind::FenceViolation,
    IncidentKind::Fire,
    IncidentKind::GarbageMissort,
    IncidentKind::ManholeDisplaced,
];

/// The platform's capital as a run deploys it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Capital {
    /// Spent once: the devices installed, the covered estates' own systems and the town's platform.
    pub once_yuan: f64,
    /// Of that, the covered estates' devices and systems (not the road cameras, not the town's platform).
    pub estates_yuan: f64,
    /// That, spread over the lifetime, plus upkeep, per day.
    pub per_day_yuan: f64,
    pub estates_covered: u32,
    pub devices_installed: u32,
}

impl Costs {
    /// The capital of `platform` deployed over `town`.
    pub fn capital(&self, platform: &Platform, town: &Town) -> Capital {
        let mut c = Capital::default();
        for e in town.estates.iter().filter(|e| platform.covers(&e.id)) {
            c.estates_covered += 1;
            c.estates_yuan += self.estate_yuan;
            for d in &e.devices {
                c.devices_installed += 1;
                c.estates_yuan += self.device_yuan.get(&d.kind).copied().unwrap_or(0.0);
            }
        }
        c.once_yuan = c.estates_yuan;
        for d in town.roads.iter().flat_map(|r| &r.devices).filter(|d| platform.installed(d.kind, None)) {
            c.devices_installed += 1;
            c.once_yuan += self.device_yuan.get(&d.kind).copied().unwrap_or(0.0);
        }
        // The town's platform is built once anything is deployed (an estate covered, or the road fences).
        if c.estates_covered > 0 || c.devices_installed > 0 {
            c.once_yuan += self.town_yuan;
        }
        c.per_day_yuan = c.once_yuan * (1.0 / self.lifetime_years + self.upkeep_share_per_year) / 365.0;
        c
    }

    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        let money = |p: &mut Problems, field: String, v: f64| {
            p.check(v.is_finite() && (0.0..=1e12).contains(&v), || field, || format!("expected yuan in 0..=1e12, got {v}"));
        };
        for (k, v) in &self.device_yuan {
            money(p, format!("costs.device_yuan.{k:?}"), *v);
        }
        for (k, v) in &self.remediation_yuan_per_hour {
            money(p, format!("costs.remediation_yuan_per_hour.{k}"), *v);
            p.check(
                !INSTANT.contains(k),
                || format!("costs.remediation_yuan_per_hour.{k}"),
                || format!("a {k} is over as soon as it happens in the twin: it goes on for no hours, so an hourly rate would cost nothing"),
            );
        }
        money(p, "costs.estate_yuan".into(), self.estate_yuan);
        money(p, "costs.town_yuan".into(), self.town_yuan);
        let l = self.lifetime_years;
        p.check(l.is_finite() && (0.5..=50.0).contains(&l), || "costs.lifetime_years".into(), || format!("expected 0.5..=50 years, got {l}"));
        let u = self.upkeep_share_per_year;
        p.check(u.is_finite() && (0.0..=1.0).contains(&u), || "costs.upkeep_share_per_year".into(), || format!("expected a share 0..=1, got {u}"));
    }
}
