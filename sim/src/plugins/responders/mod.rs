//! Responders: the people who work the core's orders. Committee cadres (a crew per neighbourhood
//! committee), property staff (a crew per estate), the town's city-management squads, the maintenance
//! contractor, the fire-safety office and the task force (town-wide crews), and the dispatchers who verify a
//! resolution with the resident and close the order or reopen it.
//!
//! They learn of orders only from the core's notices (the harness delivers them to [`Inbox`] before each
//! tick) and act only through the core's interfaces: each tick's actions are left in [`Acts`] for the
//! harness, which applies them through the HTTP API or, in-process, through the core library. A crew takes
//! an order once a member is free and on duty and has noticed it, travels, works, and resolves or fails on
//! site; a re-dispatch (escalation, failure, reopening) takes the order away from whoever had it.
//!
//! Every draw comes from a stream keyed by order and dispatch, so what a responder does to one order never
//! depends on the order in which others arrive. Actions are stamped with the tick's start, which is the
//! core's event time when the harness applies them (it has just had the clock tick closing the last minute).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use towntwin_contracts::orders::Role;
use towntwin_contracts::time::{HhMm, parse_local_date};
use towntwin_contracts::truth::IncidentKind;

use crate::dist::Dist;
use crate::params::{Probability, hm, prob};

#[cfg(feature = "twin")]
pub mod plugin;

mod calendar;

pub use calendar::Calendar;

/// Which days a shift works: every day, working days or rest days, by the scenario's [`Calendar`]
/// (Monday to Friday, with its holidays off and its make-up working weekends on).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Days {
    #[default]
    Every,
    Weekdays,
    Weekend,
}

/// One shift of a crew: on which days, between which local hours, and how many staff (per unit of the
/// crew's scope). Shifts add up where they overlap. A shift past midnight (`("22:00", "07:00")`) belongs to
/// the day it starts on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    #[serde(default)]
    pub days: Days,
    /// Local hours on duty (`Some(("08:30", "17:30"))`); `None` round the clock.
    pub hours: Option<(HhMm, HhMm)>,
    pub headcount: u32,
}

/// One kind of responder: its shifts, and how long each step of a work order takes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Crew {
    /// Who is on duty when, per unit of the crew's scope (see [`Responders`]). Off duty, nobody accepts new
    /// orders; work already started is finished. No shifts: the crew does not exist in this town.
    pub shifts: Vec<Shift>,
    /// Minutes from dispatch until a free member of the crew notices the order (a [`Dist`]).
    pub notice_minutes: Dist,
    /// Minutes from accepting to arriving on site.
    pub travel_minutes: Dist,
    /// Minutes on site until resolved (or failed).
    pub work_minutes: Dist,
    /// Share of orders that fail on site (the policy may escalate them).
    pub fail_share: Probability,
    /// Per incident kind, the share of visits to that kind of problem that fail on site, in place of
    /// `fail_share` (an estate's staff cannot end a group rental that needs the housing office and the
    /// police). Only where the problem is going on: a visit to a false alarm fails by `fail_share`. An
    /// order about several kinds going on fails by the highest of theirs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fail_share_by_kind: BTreeMap<IncidentKind, Probability>,
    /// What an hour of one member's time costs (yuan), on duty whether busy or not.
    pub cost_per_hour: f64,
}

impl Crew {
    /// Staff on duty (per unit) at local day `day` (days since 1970-01-01), minute of the day `minute`.
    pub fn staff_at(&self, day: i64, minute: u32, calendar: &Calendar) -> u32 {
        self.shifts
            .iter()
            .filter(|sh| match sh.hours {
                None => calendar.matches(sh.days, day),
                Some((a, b)) => {
                    let (a, b) = (a.minutes(), b.minutes());
                    if a < b {
                        (a..b).contains(&minute) && calendar.matches(sh.days, day)
                    } else {
                        (minute >= a && calendar.matches(sh.days, day)) || (minute < b && calendar.matches(sh.days, day - 1))
                    }
                }
            })
            .map(|sh| sh.headcount)
            .sum()
    }

    /// Every shift's headcount times `factor`, rounded, and at least 1 where it was at least 1.
    pub fn scale(&mut self, factor: f64) {
        for sh in &mut self.shifts {
            if sh.headcount > 0 {
                sh.headcount = ((sh.headcount as f64 * factor).round() as u32).max(1);
            }
        }
    }
}

/// The people who work the core's orders, a crew per [`Role`]: committee cadres (per committee),
/// property staff and owners' volunteers (per estate), the town's departments and the task force
/// (town-wide), and the dispatchers who verify a resolution with the resident and close the order, or reopen
/// it. A what-if file may give any field of any crew alone (`responders: (city_management: (shifts: [...]))`):
/// the rest keep that crew's baseline values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "RespondersPatch")]
pub struct Responders {
    /// False: nobody acts on the orders (they escalate on their deadlines).
    pub enabled: bool,
    /// Per neighbourhood committee.
    pub committee: Crew,
    /// Per estate.
    pub property: Crew,
    /// The town's city-management (城管) squads.
    pub city_management: Crew,
    /// The device maintenance contractor.
    pub maintenance: Crew,
    /// The town's fire-safety office.
    pub fire_safety: Crew,
    /// The town task force.
    pub task_force: Crew,
    /// Owners' committee (业委会) volunteers, per estate.
    pub owners: Crew,
    /// The housing office (房管).
    pub housing: Crew,
    /// Civil affairs (民政).
    pub civil_affairs: Crew,
    /// The police station (派出所).
    pub public_security: Crew,
    /// Market supervision (市场监管).
    pub market_supervision: Crew,
    /// Minutes from resolution until the dispatcher has checked with the resident.
    pub verify_minutes: Dist,
    /// Share of resolutions the resident disputes: the order is reopened instead of verified.
    pub reopen_share: Probability,
}

/// A field a patch was given, written plainly in the file (`hours: None`).
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// What a scenario file says of one crew: any of its fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CrewPatch {
    #[serde(deserialize_with = "given")]
    shifts: Option<Vec<Shift>>,
    #[serde(deserialize_with = "given")]
    notice_minutes: Option<Dist>,
    #[serde(deserialize_with = "given")]
    travel_minutes: Option<Dist>,
    #[serde(deserialize_with = "given")]
    work_minutes: Option<Dist>,
    #[serde(deserialize_with = "given")]
    fail_share: Option<Probability>,
    #[serde(deserialize_with = "given")]
    fail_share_by_kind: Option<BTreeMap<IncidentKind, Probability>>,
    #[serde(deserialize_with = "given")]
    cost_per_hour: Option<f64>,
}

impl CrewPatch {
    fn over(self, base: Crew) -> Crew {
        Crew {
            shifts: self.shifts.unwrap_or(base.shifts),
            notice_minutes: self.notice_minutes.unwrap_or(base.notice_minutes),
            travel_minutes: self.travel_minutes.unwrap_or(base.travel_minutes),
            work_minutes: self.work_minutes.unwrap_or(base.work_minutes),
            fail_share: self.fail_share.unwrap_or(base.fail_share),
            fail_share_by_kind: self.fail_share_by_kind.unwrap_or(base.fail_share_by_kind),
            cost_per_hour: self.cost_per_hour.unwrap_or(base.cost_per_hour),
        }
    }
}

/// What a scenario file says of the responders: any of their fields, each over the baseline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RespondersPatch {
    #[serde(deserialize_with = "given")]
    enabled: Option<bool>,
    committee: CrewPatch,
    property: CrewPatch,
    city_management: CrewPatch,
    maintenance: CrewPatch,
    fire_safety: CrewPatch,
    task_force: CrewPatch,
    owners: CrewPatch,
    housing: CrewPatch,
    civil_affairs: CrewPatch,
    public_security: CrewPatch,
    market_supervision: CrewPatch,
    #[serde(deserialize_with = "given")]
    verify_minutes: Option<Dist>,
    #[serde(deserialize_with = "given")]
    reopen_share: Option<Probability>,
}

impl From<RespondersPatch> for Responders {
    fn from(p: RespondersPatch) -> Responders {
        let d = Responders::default();
        Responders {
            enabled: p.enabled.unwrap_or(d.enabled),
            committee: p.committee.over(d.committee),
            property: p.property.over(d.property),
            city_management: p.city_management.over(d.city_management),
            maintenance: p.maintenance.over(d.maintenance),
            fire_safety: p.fire_safety.over(d.fire_safety),
            task_force: p.task_force.over(d.task_force),
            owners: p.owners.over(d.owners),
            housing: p.housing.over(d.housing),
            civil_affairs: p.civil_affairs.over(d.civil_affairs),
            public_security: p.public_security.over(d.public_security),
            market_supervision: p.market_supervision.over(d.market_supervision),
            verify_minutes: p.verify_minutes.unwrap_or(d.verify_minutes),
            reopen_share: p.reopen_share.unwrap_or(d.reopen_share),
        }
    }
}

/// A shift for the built-in defaults.
const fn shift(days: Days, hours: Option<(HhMm, HhMm)>, headcount: u32) -> Shift {
    Shift { days, hours, headcount }
}

fn crew(shifts: &[Shift], notice: Dist, travel: Dist, work: Dist, fail_share: f64, cost_per_hour: f64) -> Crew {
    Crew {
        shifts: shifts.to_vec(),
        notice_minutes: notice,
        travel_minutes: travel,
        work_minutes: work,
        fail_share: prob(fail_share),
        fail_share_by_kind: BTreeMap::new(),
        cost_per_hour,
    }
}

fn tri(min: f64, mode: f64, max: f64) -> Dist {
    Dist::Triangular { min, mode, max }
}

impl Default for Responders {
    fn default() -> Self {
        use Days::*;
        let u = Dist::Uniform;
        Responders {
            enabled: true,
            committee: crew(
                &[shift(Weekdays, Some((hm(8, 30), hm(17, 30))), 2), shift(Weekend, Some((hm(9, 0), hm(17, 0))), 1)],
                u(5.0, 45.0),
                u(5.0, 20.0),
                u(15.0, 60.0),
                0.05,
                55.0,
            ),
            property: crew(&[shift(Every, None, 2)], u(5.0, 30.0), u(3.0, 10.0), u(15.0, 60.0), 0.08, 40.0),
            city_management: crew(
                &[shift(Every, Some((hm(7, 0), hm(22, 0))), 80), shift(Every, Some((hm(22, 0), hm(7, 0))), 20)],
                u(5.0, 30.0),
                u(5.0, 15.0),
                u(5.0, 15.0),
                0.05,
                65.0,
            ),
            maintenance: crew(&[shift(Weekdays, Some((hm(8, 0), hm(18, 0))), 6)], u(30.0, 120.0), u(20.0, 60.0), u(30.0, 120.0), 0.1, 80.0),
            fire_safety: crew(&[shift(Every, None, 4)], u(2.0, 10.0), u(5.0, 15.0), u(20.0, 60.0), 0.05, 70.0),
            task_force: crew(&[shift(Every, None, 8)], u(5.0, 20.0), u(10.0, 30.0), u(30.0, 120.0), 0.0, 90.0),
            owners: crew(&[], tri(30.0, 120.0, 480.0), u(3.0, 10.0), u(15.0, 45.0), 0.2, 0.0),
            housing: crew(&[shift(Weekdays, Some((hm(8, 30), hm(17, 30))), 6)], u(15.0, 60.0), u(10.0, 30.0), u(30.0, 90.0), 0.1, 60.0),
            civil_affairs: crew(&[shift(Weekdays, Some((hm(8, 30), hm(17, 30))), 4)], u(10.0, 45.0), u(10.0, 30.0), u(30.0, 90.0), 0.05, 55.0),
            public_security: crew(&[shift(Every, None, 10)], u(5.0, 20.0), u(5.0, 15.0), u(15.0, 45.0), 0.05, 75.0),
            market_supervision: crew(&[], u(15.0, 60.0), u(10.0, 30.0), u(20.0, 60.0), 0.1, 60.0),
            verify_minutes: Dist::Uniform(30.0, 240.0),
            reopen_share: prob(0.05),
        }
    }
}

impl Responders {
    /// Each crew with its field name.
    pub fn crews(&self) -> [(&'static str, &Crew); 11] {
        Role::ALL.map(|r| (r.name(), self.crew(r)))
    }

    /// The crew that plays `role`.
    pub fn crew(&self, role: Role) -> &Crew {
        match role {
            Role::Committee => &self.committee,
            Role::Property => &self.property,
            Role::CityManagement => &self.city_management,
            Role::Maintenance => &self.maintenance,
            Role::FireSafety => &self.fire_safety,
            Role::TaskForce => &self.task_force,
            Role::Owners => &self.owners,
            Role::Housing => &self.housing,
            Role::CivilAffairs => &self.civil_affairs,
            Role::PublicSecurity => &self.public_security,
            Role::MarketSupervision => &self.market_supervision,
        }
    }

    /// The crew of that field name, to change (an experiment's staffing variant).
    pub fn crew_mut(&mut self, name: &str) -> Option<&mut Crew> {
        let role = Role::ALL.into_iter().find(|r| r.name() == name)?;
        Some(match role {
            Role::Committee => &mut self.committee,
            Role::Property => &mut self.property,
            Role::CityManagement => &mut self.city_management,
            Role::Maintenance => &mut self.maintenance,
            Role::FireSafety => &mut self.fire_safety,
            Role::TaskForce => &mut self.task_force,
            Role::Owners => &mut self.owners,
            Role::Housing => &mut self.housing,
            Role::CivilAffairs => &mut self.civil_affairs,
            Role::PublicSecurity => &mut self.public_security,
            Role::MarketSupervision => &mut self.market_supervision,
        })
    }
}

/// What a resolved work order does in the town: per incident kind, how likely the visit ends the incident
/// (the group rental is cleared, the illegal works stop, the lone elderly resident is found, the kiosk is
/// emptied, the device is repaired, the e-bike is charged at a pile from now on); otherwise the occupants
/// were only warned or the fix did not hold, and the incident goes on until a later order or its own end.
/// A kind not listed is not changed by any response. The twin's devices see the change (faces, noise and
/// indoor charging stop, passes resume) and the ground truth records that the response ended it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Response {
    pub effects: BTreeMap<IncidentKind, Effect>,
}

/// One incident kind's answer to a resolution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Effect {
    /// Probability that the resolution ends the incident.
    pub ends: Probability,
    /// For habits (e-bike charging indoors or by flying wire, e-bikes in the elevator, wrong sorting): days until the
    /// household goes back to it after the response ended it (a [`Dist`]); `None`: never.
    #[serde(default)]
    pub resumes_after_days: Option<Dist>,
}

/// The kinds a response can end in the twin, and of those the habits that can resume.
pub const ANSWERABLE: [IncidentKind; 16] = [
    IncidentKind::GroupRental,
    IncidentKind::RenovationIllegal,
    IncidentKind::VulnerableEmergency,
    IncidentKind::BinOverflow,
    IncidentKind::GarbageDumping,
    IncidentKind::DeviceOffline,
    IncidentKind::DeviceStuck,
    IncidentKind::DeviceLowBattery,
    IncidentKind::EbikeIndoorCharging,
    IncidentKind::EbikeFlyingWire,
    IncidentKind::EbikeElevator,
    IncidentKind::Synthetic,
    IncidentKind::GarbageMissort,
    IncidentKind::ConstructionDumping,
    IncidentKind::RepairNeeded,
    IncidentKind::ResidentQuestion,
];
pub const HABITS: [IncidentKind; 4] =
    [IncidentKind::EbikeIndoorCharging, IncidentKind::EbikeFlyingWire, IncidentKind::EbikeElevator, IncidentKind::GarbageMissort];

impl Default for Response {
    fn default() -> Self {
        let e = |ends: f64, resumes: Option<Dist>| Effect { ends: prob(ends), resumes_after_days: resumes };
        let relapse = || Some(Dist::LogNormal { mean: 30.0, sd: 20.0 });
        Response {
            effects: BTreeMap::from([
                (IncidentKind::GroupRental, e(0.6, None)),
                (IncidentKind::RenovationIllegal, e(0.8, None)),
                (IncidentKind::VulnerableEmergency, e(1.0, None)),
                (IncidentKind::BinOverflow, e(1.0, None)),
                (IncidentKind::DeviceOffline, e(0.9, None)),
                (IncidentKind::DeviceStuck, e(0.9, None)),
                (IncidentKind::DeviceLowBattery, e(1.0, None)),
                (IncidentKind::EbikeIndoorCharging, e(0.7, relapse())),
                (IncidentKind::EbikeFlyingWire, e(0.7, relapse())),
                (IncidentKind::EbikeElevator, e(0.5, relapse())),
                // A visit persuades about half the households the kiosks flagged; the habit comes back
                // after about two months.
                (IncidentKind::GarbageMissort, e(0.5, Some(Dist::LogNormal { mean: 60.0, sd: 40.0 }))),
                (IncidentKind::ConstructionDumping, e(1.0, None)),
                (IncidentKind::RepairNeeded, e(0.9, None)),
                (IncidentKind::ResidentQuestion, e(1.0, None)),
            ]),
        }
    }
}

impl Responders {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        for (n, c) in self.crews() {
            p.check(c.shifts.len() <= 100, || format!("responders.{n}.shifts"), || format!("expected at most 100 shifts, got {}", c.shifts.len()));
            for (i, sh) in c.shifts.iter().enumerate() {
                p.check(
                    sh.headcount <= 10_000,
                    || format!("responders.{n}.shifts[{i}].headcount"),
                    || format!("expected 0..=10000 staff, got {}", sh.headcount),
                );
                if let Some((a, b)) = sh.hours {
                    p.check(a != b, || format!("responders.{n}.shifts[{i}].hours"), || "start and end are the same: use None for round the clock".into());
                }
            }
            p.check(
                c.cost_per_hour.is_finite() && c.cost_per_hour >= 0.0,
                || format!("responders.{n}.cost_per_hour"),
                || format!("expected yuan per hour >= 0, got {}", c.cost_per_hour),
            );
            for (f, d) in [("notice_minutes", &c.notice_minutes), ("travel_minutes", &c.travel_minutes), ("work_minutes", &c.work_minutes)] {
                if let Err(e) = d.check() {
                    p.push(format!("responders.{n}.{f}"), e);
                }
            }
        }
        if let Err(e) = self.verify_minutes.check() {
            p.push("responders.verify_minutes", e);
        }
    }
}

impl Response {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        for (kind, e) in &self.effects {
            p.check(
                ANSWERABLE.contains(kind),
                || format!("response.effects.{kind}"),
                || {
                    let names: Vec<&str> = ANSWERABLE.iter().map(|k| k.as_str()).collect();
                    format!("no response can end a {kind} in the twin; kinds a response can end: {}", names.join(", "))
                },
            );
            if let Some(d) = &e.resumes_after_days {
                p.check(
                    HABITS.contains(kind),
                    || format!("response.effects.{kind}.resumes_after_days"),
                    || "only habits (the e-bike kinds and wrong sorting) resume".into(),
                );
                if let Err(msg) = d.check() {
                    p.push(format!("response.effects.{kind}.resumes_after_days"), msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::hm;
    use towntwin_contracts::time::{Local, parse_local_date};

    fn day(date: &str) -> i64 {
        Local::of(parse_local_date(date).unwrap()).day
    }

    #[test]
    fn shifts_follow_the_calendar_and_cross_midnight() {
        let cal: Calendar = ron::from_str(r#"(holidays: ["2026-04-06"], working_weekends: ["2026-04-11"])"#).unwrap();
        // 2026-04-03 is a Friday; 04-04/05 a weekend; 04-06 a Monday holiday; 04-11 a Saturday worked.
        for (date, working) in
            [("2026-04-03", true), ("2026-04-04", false), ("2026-04-05", false), ("2026-04-06", false), ("2026-04-07", true), ("2026-04-11", true)]
        {
            assert_eq!(cal.is_working_day(day(date)), working, "{date}");
        }
        let crew = Crew {
            shifts: vec![
                Shift { days: Days::Weekdays, hours: Some((hm(8, 30), hm(17, 30))), headcount: 3 },
                Shift { days: Days::Weekend, hours: Some((hm(9, 0), hm(17, 0))), headcount: 1 },
                Shift { days: Days::Weekdays, hours: Some((hm(22, 0), hm(7, 0))), headcount: 2 },
                Shift { days: Days::Every, hours: None, headcount: 10 },
            ],
            ..Responders::default().housing
        };
        let at = |date: &str, h: u32, m: u32| crew.staff_at(day(date), h * 60 + m, &cal);
        assert_eq!(at("2026-04-03", 8, 29), 10);
        assert_eq!(at("2026-04-03", 8, 30), 13);
        assert_eq!(at("2026-04-03", 17, 30), 10);
        // Friday's night shift runs into Saturday morning; Saturday's own night has none.
        assert_eq!(at("2026-04-03", 23, 0), 12);
        assert_eq!(at("2026-04-04", 6, 59), 12);
        assert_eq!(at("2026-04-04", 7, 0), 10);
        assert_eq!(at("2026-04-04", 12, 0), 11);
        assert_eq!(at("2026-04-05", 3, 0), 10);
        // Sunday night before a Monday holiday: no night shift; the holiday works the weekend shift.
        assert_eq!(at("2026-04-06", 12, 0), 11);
        assert_eq!(at("2026-04-11", 12, 0), 13);
        let mut cut = crew.clone();
        cut.scale(0.7);
        assert_eq!(cut.shifts.iter().map(|s| s.headcount).collect::<Vec<_>>(), [2, 1, 1, 7]);
        // Dates are written back as they were given.
        let back = ron::to_string(&cal).unwrap();
        assert!(back.contains("2026-04-06") && back.contains("2026-04-11"), "{back}");
    }
}
