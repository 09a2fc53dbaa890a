//! Scenarios: what a run simulates (town, dates, seed) and every behavioural rate, as RON.
//! Every section has built-in baseline defaults, so a what-if file states only what it changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dist::Dist;
use serde::{Deserialize, Serialize};
use towntwin_contracts::load::{DataErrors, Problems, read_ron};
use towntwin_contracts::orders::Role;
use towntwin_contracts::time::{HhMm, Millis, parse_local_date};
use towntwin_contracts::truth::IncidentKind;

/// A probability or a share, in 0..=1. A scenario file writes it as a bare number; anything outside
/// 0..=1 (or NaN) is refused when the file is read, with the field's place.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Probability(f64);

impl Probability {
    pub const ZERO: Probability = Probability(0.0);

    /// `p`, if it is in 0..=1.
    pub fn new(p: f64) -> Result<Probability, String> {
        if (0.0..=1.0).contains(&p) { Ok(Probability(p)) } else { Err(format!("expected a probability in 0..=1, got {p}")) }
    }

    pub const fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Probability, D::Error> {
        Probability::new(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A probability for the built-in defaults, which are in range.
const fn prob(v: f64) -> Probability {
    assert!(v >= 0.0 && v <= 1.0, "a built-in probability out of 0..=1");
    Probability(v)
}

/// A local time for the built-in defaults.
const fn hm(h: u16, m: u16) -> HhMm {
    match HhMm::new(h, m) {
        Some(t) => t,
        None => panic!("a built-in time out of range"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Decides every random draw of the run.
    pub seed: u64,
    /// First simulated day, local date `YYYY-MM-DD`; the run starts at local midnight.
    pub start_date: String,
    pub days: u32,
    /// The town file, relative to this scenario file's folder.
    pub town: String,
    #[serde(default)]
    pub residents: Residents,
    #[serde(default)]
    pub vulnerable: VulnerableResidents,
    #[serde(default)]
    pub garbage: Garbage,
    #[serde(default)]
    pub renovation: Renovation,
    #[serde(default)]
    pub group_rental: GroupRental,
    #[serde(default)]
    pub vehicles: Vehicles,
    #[serde(default)]
    pub fence: Fence,
    #[serde(default)]
    pub safety: Safety,
    #[serde(default)]
    pub devices: Devices,
    /// Working days and holidays, for shifts that work only on one or the other.
    #[serde(default)]
    pub calendar: Calendar,
    #[serde(default)]
    pub responders: Responders,
    #[serde(default)]
    pub response: Response,
    #[serde(default)]
    pub hotline: Hotline,
    #[serde(default)]
    pub synthetic: Synthetic,
}

/// A synthetic kind of job for checking a crew against queueing theory: jobs arrive as a Poisson process at
/// `per_hour` (exponential gaps in continuous time, not per minute), each an incident of kind
/// `synthetic.job` in the first estate that is reported at once through the 12345 line, so the core's
/// hotline rule opens one order per job (every job has its own subject: no repeats merge). Off (0) unless a
/// scenario sets it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Synthetic {
    pub per_hour: f64,
}

/// One value per age band: mean outings a day (each outing an out pass and an in pass), or shares.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ByAge<T = f64> {
    pub child: T,
    pub adult: T,
    pub senior: T,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Residents {
    /// Shares of children, working-age adults and seniors (60+).
    pub age_mix: ByAge<Probability>,
    pub outings_weekday: ByAge,
    pub outings_weekend: ByAge,
    /// Share of passes by card rather than face.
    pub card_share: Probability,
    /// Share of passes with no recognition at all (walking through behind a neighbour).
    pub tailgate_share: Probability,
    /// Visitors whose faces are registered to the flat they visit (relatives, carers, a domestic helper):
    /// what makes a large family look like a group rental to a rule that counts faces.
    pub visitors: Visitors,
}

/// Visits to households: each is one visitor in at a gate and out again a few hours later, by face, under
/// the host's flat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Visitors {
    /// Visits per household per week (Poisson).
    pub per_household_week: f64,
    /// How many regular visitors a household has (drawn once per household, uniform in the range).
    pub regulars: (u32, u32),
    /// Share of visits by one of the regulars; the rest are one-off visitors, each a new face.
    pub regular_share: Probability,
    /// Local hour of arrival (uniform range) and hours of the stay.
    pub arrive_hours: (f64, f64),
    pub stay_hours: (f64, f64),
}

impl Default for Visitors {
    fn default() -> Self {
        Visitors { per_household_week: 1.0, regulars: (0, 2), regular_share: prob(0.85), arrive_hours: (9.0, 20.0), stay_hours: (0.5, 4.0) }
    }
}

impl Default for Residents {
    fn default() -> Self {
        Residents {
            age_mix: ByAge { child: prob(0.15), adult: prob(0.60), senior: prob(0.25) },
            outings_weekday: ByAge { child: 1.0, adult: 1.4, senior: 1.2 },
            outings_weekend: ByAge { child: 1.1, adult: 1.2, senior: 1.0 },
            card_share: prob(0.08),
            tailgate_share: prob(0.04),
            visitors: Visitors::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VulnerableResidents {
    /// Probability that a registered resident goes out at all on a given day.
    pub outing_prob: Probability,
    /// Real emergencies at home (illness, a fall) per registered resident per year.
    pub emergencies_per_year: f64,
    /// When nobody acts, hours until family or a neighbour finds the resident (uniform range).
    pub found_after_hours: (f64, f64),
    /// Days in hospital after being found (uniform range).
    pub hospital_days: (f64, f64),
    /// Benign absences (a trip to family) per registered resident per year.
    pub trips_per_year: f64,
    pub trip_days: (f64, f64),
    /// Door openings a day while at home, besides going out and in.
    pub door_opens_per_day: f64,
    /// Litres of water an hour while awake at home.
    pub litres_per_waking_hour: f64,
}

impl Default for VulnerableResidents {
    fn default() -> Self {
        VulnerableResidents {
            outing_prob: prob(0.85),
            emergencies_per_year: 0.3,
            found_after_hours: (12.0, 96.0),
            hospital_days: (2.0, 10.0),
            trips_per_year: 6.0,
            trip_days: (1.0, 6.0),
            door_opens_per_day: 3.0,
            litres_per_waking_hour: 12.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Garbage {
    pub drops_per_household_day: f64,
    /// Share of drops in the morning window (06:30-09:00); the rest fall in the evening (18:00-21:00).
    pub morning_share: Probability,
    /// Probability a drop is wrongly sorted, by tenure.
    pub missort_owner: Probability,
    pub missort_tenant: Probability,
    pub missort_unregistered: Probability,
    /// Probability the kiosk's camera flags a wrong sort; and flags a right one wrongly.
    pub missort_recall: Probability,
    pub missort_false_flag: Probability,
    /// Drops a kiosk holds before it overflows.
    pub bin_capacity_drops: u32,
    /// Collection times, local `HH:MM`.
    pub collections: Vec<HhMm>,
    /// Probability a scheduled collection is missed.
    pub collection_miss_prob: Probability,
}

impl Default for Garbage {
    fn default() -> Self {
        Garbage {
            drops_per_household_day: 1.1,
            morning_share: prob(0.55),
            missort_owner: prob(0.04),
            missort_tenant: prob(0.10),
            missort_unregistered: prob(0.18),
            missort_recall: prob(0.85),
            missort_false_flag: prob(0.01),
            bin_capacity_drops: 80,
            collections: vec![hm(9, 30), hm(21, 30)],
            collection_miss_prob: prob(0.03),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Renovation {
    pub starts_per_1000_flats_year: f64,
    /// Share of renovations that are illegal (undeclared, or structural changes).
    pub illegal_share: Probability,
    pub duration_days: (f64, f64),
    pub waste_drops_per_week: f64,
    pub noise_episodes_per_workday: f64,
    /// Share of noise episodes in forbidden hours (weekends, 12:00-14:00, after 18:00), legal and illegal.
    pub forbidden_hours_share_legal: Probability,
    pub forbidden_hours_share_illegal: Probability,
    /// Probability a building's noise monitor, where there is one, hears an episode.
    pub noise_recall: Probability,
}

impl Default for Renovation {
    fn default() -> Self {
        Renovation {
            starts_per_1000_flats_year: 35.0,
            illegal_share: prob(0.3),
            duration_days: (30.0, 90.0),
            waste_drops_per_week: 3.0,
            noise_episodes_per_workday: 2.0,
            forbidden_hours_share_legal: prob(0.03),
            forbidden_hours_share_illegal: prob(0.35),
            noise_recall: prob(0.7),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupRental {
    /// Share of rented flats (registered or not) that are group-rented at the start.
    pub share_of_rented: Probability,
    /// New group rentals a week, town-wide.
    pub new_per_week: f64,
    /// Occupants of a group-rented flat (uniform integer range).
    pub occupants: (u32, u32),
    /// Occupants replaced by new faces per flat per week.
    pub churn_per_week: f64,
}

impl Default for GroupRental {
    fn default() -> Self {
        GroupRental { share_of_rented: prob(0.006), new_per_week: 1.0, occupants: (5, 12), churn_per_week: 1.0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Vehicles {
    pub ebike_household_share: Probability,
    pub ev_household_share: Probability,
    pub ebike_charge_every_days: f64,
    pub ev_charge_every_days: f64,
    /// Habits of e-bike households: charge at a pile, carry it upstairs, or hang a flying wire.
    pub ebike_pile: Probability,
    pub ebike_upstairs: Probability,
    pub ebike_flying_wire: Probability,
    /// Elevator detector recall, and false detections (strollers, wheelchairs) per detector a day.
    pub detector_recall: Probability,
    pub detector_false_per_day: f64,
    /// Share of blocked riders who then go to a pile (the rest take the stairs).
    pub blocked_to_pile: Probability,
    /// Electrical-fire monitor recall for an e-bike charging signature indoors, and by flying wire.
    pub signature_recall_indoor: Probability,
    pub signature_recall_flying_wire: Probability,
}

impl Default for Vehicles {
    fn default() -> Self {
        Vehicles {
            ebike_household_share: prob(0.45),
            ev_household_share: prob(0.10),
            ebike_charge_every_days: 2.0,
            ev_charge_every_days: 3.0,
            ebike_pile: prob(0.94),
            ebike_upstairs: prob(0.05),
            ebike_flying_wire: prob(0.01),
            detector_recall: prob(0.95),
            detector_false_per_day: 0.01,
            blocked_to_pile: prob(0.6),
            signature_recall_indoor: prob(0.8),
            signature_recall_flying_wire: prob(0.6),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Fence {
    /// Real violations per camera a day on a road of traffic 1.0.
    pub violations_per_camera_day: f64,
    pub recall: Probability,
    pub false_per_camera_day: f64,
}

impl Default for Fence {
    fn default() -> Self {
        Fence { violations_per_camera_day: 3.0, recall: prob(0.9), false_per_camera_day: 0.15 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    pub fires_per_building_year: f64,
    /// Nuisance smoke alarms (cooking, steam) per detector a year.
    pub smoke_nuisance_per_detector_year: f64,
    /// Real residual-current or overload faults per electrical-fire monitor a year.
    pub electrical_faults_per_monitor_year: f64,
    /// Manhole-cover alarms per sensor a year, and the share that are real displacements.
    pub manhole_alarms_per_sensor_year: f64,
    pub manhole_real_share: Probability,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            fires_per_building_year: 0.004,
            smoke_nuisance_per_detector_year: 0.5,
            electrical_faults_per_monitor_year: 2.0,
            manhole_alarms_per_sensor_year: 1.0,
            manhole_real_share: prob(0.9),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Devices {
    pub heartbeat_minutes_mains: u32,
    pub heartbeat_minutes_battery: u32,
    pub offline_per_device_year: f64,
    pub offline_hours: (f64, f64),
    /// Sensors only: stuck at one reading.
    pub stuck_per_sensor_year: f64,
    pub stuck_days: (f64, f64),
    /// Probability a stuck sensor's self-test notices and reports it.
    pub stuck_self_report: Probability,
    /// Battery life in days (uniform range), and days until a low battery is replaced.
    pub battery_days: (f64, f64),
    pub battery_replace_days: (f64, f64),
}

impl Default for Devices {
    fn default() -> Self {
        Devices {
            heartbeat_minutes_mains: 30,
            heartbeat_minutes_battery: 360,
            offline_per_device_year: 1.5,
            offline_hours: (1.0, 36.0),
            stuck_per_sensor_year: 0.2,
            stuck_days: (2.0, 10.0),
            stuck_self_report: prob(0.5),
            battery_days: (400.0, 1500.0),
            battery_replace_days: (2.0, 10.0),
        }
    }
}

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

/// Working days: Monday to Friday, except the holidays, plus the make-up working days (调休) that fall on a
/// weekend. Written as local dates `YYYY-MM-DD`; a date that does not parse is refused as the file is read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "CalendarFile", into = "CalendarFile")]
pub struct Calendar {
    holidays: std::collections::BTreeSet<i64>,
    working_weekends: std::collections::BTreeSet<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CalendarFile {
    holidays: Vec<String>,
    working_weekends: Vec<String>,
}

impl TryFrom<CalendarFile> for Calendar {
    type Error = String;
    fn try_from(f: CalendarFile) -> Result<Calendar, String> {
        let days = |field: &str, dates: &[String]| -> Result<std::collections::BTreeSet<i64>, String> {
            dates
                .iter()
                .enumerate()
                .map(|(i, d)| parse_local_date(d).map(|t| towntwin_contracts::time::Local::of(t).day).map_err(|e| format!("{field}[{i}]: {e}")))
                .collect()
        };
        Ok(Calendar { holidays: days("holidays", &f.holidays)?, working_weekends: days("working_weekends", &f.working_weekends)? })
    }
}

impl From<Calendar> for CalendarFile {
    fn from(c: Calendar) -> CalendarFile {
        let date = |d: &i64| towntwin_contracts::time::Local::of(*d * towntwin_contracts::time::DAY - towntwin_contracts::time::LOCAL_OFFSET).date_string();
        CalendarFile { holidays: c.holidays.iter().map(date).collect(), working_weekends: c.working_weekends.iter().map(date).collect() }
    }
}

impl Calendar {
    /// Whether local day `day` (days since 1970-01-01) is a working day.
    pub fn is_working_day(&self, day: i64) -> bool {
        // 1970-01-01 was a Thursday (Monday = 0).
        let weekend = (day + 3).rem_euclid(7) >= 5;
        (!weekend && !self.holidays.contains(&day)) || self.working_weekends.contains(&day)
    }

    fn matches(&self, days: Days, day: i64) -> bool {
        match days {
            Days::Every => true,
            Days::Weekdays => self.is_working_day(day),
            Days::Weekend => !self.is_working_day(day),
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
    Crew { shifts: shifts.to_vec(), notice_minutes: notice, travel_minutes: travel, work_minutes: work, fail_share: prob(fail_share), cost_per_hour }
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
    /// For habits (e-bike charging indoors or by flying wire, e-bikes in the elevator): days until the
    /// household goes back to it after the response ended it (a [`Dist`]); `None`: never.
    #[serde(default)]
    pub resumes_after_days: Option<Dist>,
}

/// Residents and the 12345 citizens' hotline: per incident kind, the share of incidents someone calls about
/// at all, how long after the start the first call comes (their patience, a [`Dist`] in hours), and how
/// often they call again while it goes on (`None`: once). A call made after the incident ended is not
/// made. Kinds not listed are never called about (a fire goes to 119, a dead sensor to nobody).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Hotline {
    pub patience: BTreeMap<IncidentKind, Patience>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Patience {
    pub call_share: Probability,
    pub first_call_hours: Dist,
    #[serde(default)]
    pub again_after_hours: Option<Dist>,
}

impl Default for Hotline {
    fn default() -> Self {
        let p = |share: f64, mean: f64, sd: f64, again: Option<Dist>| Patience {
            call_share: prob(share),
            first_call_hours: Dist::LogNormal { mean, sd },
            again_after_hours: again,
        };
        Hotline {
            patience: BTreeMap::from([
                (IncidentKind::GroupRental, p(0.5, 96.0, 72.0, Some(Dist::LogNormal { mean: 168.0, sd: 96.0 }))),
                (IncidentKind::RenovationIllegal, p(0.4, 48.0, 36.0, Some(Dist::LogNormal { mean: 96.0, sd: 48.0 }))),
                (IncidentKind::EbikeFlyingWire, p(0.2, 2.0, 1.5, None)),
                (IncidentKind::BinOverflow, p(0.2, 5.0, 4.0, None)),
                (IncidentKind::VulnerableEmergency, p(0.3, 30.0, 18.0, None)),
            ]),
        }
    }
}

/// The kinds a response can end in the twin, and of those the habits that can resume.
pub const ANSWERABLE: [IncidentKind; 11] = [
    IncidentKind::GroupRental,
    IncidentKind::RenovationIllegal,
    IncidentKind::VulnerableEmergency,
    IncidentKind::BinOverflow,
    IncidentKind::DeviceOffline,
    IncidentKind::DeviceStuck,
    IncidentKind::DeviceLowBattery,
    IncidentKind::EbikeIndoorCharging,
    IncidentKind::EbikeFlyingWire,
    IncidentKind::EbikeElevator,
    IncidentKind::Synthetic,
];
pub const HABITS: [IncidentKind; 3] = [IncidentKind::EbikeIndoorCharging, IncidentKind::EbikeFlyingWire, IncidentKind::EbikeElevator];

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
            ]),
        }
    }
}

/// A scenario with its file's place, ready to run.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub scenario: Scenario,
    pub file: PathBuf,
    pub town_file: PathBuf,
    pub start: Millis,
}

impl Scenario {
    /// Reads and validates a scenario file; the town path is resolved against the file's folder.
    pub fn load(file: &Path) -> Result<Loaded, DataErrors> {
        let scenario: Scenario = read_ron(file)?;
        let start = scenario.validate(file)?;
        let town_file = file.parent().unwrap_or(Path::new(".")).join(&scenario.town);
        Ok(Loaded { scenario, file: file.to_path_buf(), town_file, start })
    }

    /// Checks what the types do not: the start date, ranges of rates, counts and durations, shares that must
    /// sum to 1, shifts that start when they end. (Probabilities and `HH:MM` times are checked as the file is
    /// read.) Returns the start instant.
    pub fn validate(&self, file: &Path) -> Result<Millis, DataErrors> {
        let mut p = Problems::new(file);
        let start = match parse_local_date(&self.start_date) {
            Ok(t) => t,
            Err(e) => {
                p.push("start_date", e);
                0
            }
        };
        p.check(self.days >= 1 && self.days <= 3660, || "days".into(), || format!("expected 1..=3660 days, got {}", self.days));
        let rate = |p: &mut Problems, field: &str, v: f64| {
            p.check(v.is_finite() && v >= 0.0, || field.to_string(), || format!("expected a rate >= 0, got {v}"));
        };
        let range = |p: &mut Problems, field: &str, (a, b): (f64, f64)| {
            p.check(
                a.is_finite() && b.is_finite() && a > 0.0 && a <= b,
                || field.to_string(),
                || format!("expected a range (low, high) with 0 < low <= high, got ({a}, {b})"),
            );
        };
        let r = &self.residents;
        let mix = r.age_mix.child.get() + r.age_mix.adult.get() + r.age_mix.senior.get();
        p.check((mix - 1.0).abs() < 1e-6, || "residents.age_mix".into(), || format!("shares must sum to 1, they sum to {mix}"));
        for (sec, by) in [("outings_weekday", r.outings_weekday), ("outings_weekend", r.outings_weekend)] {
            for (n, v) in [("child", by.child), ("adult", by.adult), ("senior", by.senior)] {
                p.check(v.is_finite() && (0.0..=10.0).contains(&v), || format!("residents.{sec}.{n}"), || format!("expected 0..=10 outings a day, got {v}"));
            }
        }
        let vi = &r.visitors;
        p.check(
            vi.per_household_week.is_finite() && (0.0..=50.0).contains(&vi.per_household_week),
            || "residents.visitors.per_household_week".into(),
            || format!("expected 0..=50 visits a week, got {}", vi.per_household_week),
        );
        p.check(
            vi.regulars.0 <= vi.regulars.1 && vi.regulars.1 <= 20,
            || "residents.visitors.regulars".into(),
            || format!("expected (low, high) with low <= high <= 20, got {:?}", vi.regulars),
        );
        p.check(
            vi.arrive_hours.0.is_finite()
                && vi.arrive_hours.1.is_finite()
                && 0.0 <= vi.arrive_hours.0
                && vi.arrive_hours.0 <= vi.arrive_hours.1
                && vi.arrive_hours.1 < 24.0,
            || "residents.visitors.arrive_hours".into(),
            || format!("expected local hours (low, high) with 0 <= low <= high < 24, got {:?}", vi.arrive_hours),
        );
        range(&mut p, "residents.visitors.stay_hours", vi.stay_hours);
        let v = &self.vulnerable;
        rate(&mut p, "vulnerable.emergencies_per_year", v.emergencies_per_year);
        rate(&mut p, "vulnerable.trips_per_year", v.trips_per_year);
        rate(&mut p, "vulnerable.door_opens_per_day", v.door_opens_per_day);
        rate(&mut p, "vulnerable.litres_per_waking_hour", v.litres_per_waking_hour);
        range(&mut p, "vulnerable.found_after_hours", v.found_after_hours);
        range(&mut p, "vulnerable.hospital_days", v.hospital_days);
        range(&mut p, "vulnerable.trip_days", v.trip_days);
        let g = &self.garbage;
        rate(&mut p, "garbage.drops_per_household_day", g.drops_per_household_day);
        p.check(g.bin_capacity_drops >= 1, || "garbage.bin_capacity_drops".into(), || "expected at least 1".into());
        let rn = &self.renovation;
        rate(&mut p, "renovation.starts_per_1000_flats_year", rn.starts_per_1000_flats_year);
        range(&mut p, "renovation.duration_days", rn.duration_days);
        rate(&mut p, "renovation.waste_drops_per_week", rn.waste_drops_per_week);
        rate(&mut p, "renovation.noise_episodes_per_workday", rn.noise_episodes_per_workday);
        let gr = &self.group_rental;
        rate(&mut p, "group_rental.new_per_week", gr.new_per_week);
        rate(&mut p, "group_rental.churn_per_week", gr.churn_per_week);
        p.check(
            gr.occupants.0 >= 2 && gr.occupants.0 <= gr.occupants.1 && gr.occupants.1 <= 60,
            || "group_rental.occupants".into(),
            || format!("expected (low, high) with 2 <= low <= high <= 60, got {:?}", gr.occupants),
        );
        let ve = &self.vehicles;
        let habits = ve.ebike_pile.get() + ve.ebike_upstairs.get() + ve.ebike_flying_wire.get();
        p.check(
            (habits - 1.0).abs() < 1e-6,
            || "vehicles.ebike_pile".into(),
            || format!("ebike_pile + ebike_upstairs + ebike_flying_wire must sum to 1, they sum to {habits}"),
        );
        for (n, x) in [("ebike_charge_every_days", ve.ebike_charge_every_days), ("ev_charge_every_days", ve.ev_charge_every_days)] {
            p.check(x.is_finite() && x >= 1.0, || format!("vehicles.{n}"), || format!("expected at least 1 day, got {x}"));
        }
        rate(&mut p, "vehicles.detector_false_per_day", ve.detector_false_per_day);
        rate(&mut p, "fence.violations_per_camera_day", self.fence.violations_per_camera_day);
        rate(&mut p, "fence.false_per_camera_day", self.fence.false_per_camera_day);
        let s = &self.safety;
        rate(&mut p, "safety.fires_per_building_year", s.fires_per_building_year);
        rate(&mut p, "safety.smoke_nuisance_per_detector_year", s.smoke_nuisance_per_detector_year);
        rate(&mut p, "safety.electrical_faults_per_monitor_year", s.electrical_faults_per_monitor_year);
        rate(&mut p, "safety.manhole_alarms_per_sensor_year", s.manhole_alarms_per_sensor_year);
        let d = &self.devices;
        for (n, m) in [("heartbeat_minutes_mains", d.heartbeat_minutes_mains), ("heartbeat_minutes_battery", d.heartbeat_minutes_battery)] {
            p.check((1..=1440).contains(&m), || format!("devices.{n}"), || format!("expected 1..=1440 minutes, got {m}"));
        }
        rate(&mut p, "devices.offline_per_device_year", d.offline_per_device_year);
        rate(&mut p, "devices.stuck_per_sensor_year", d.stuck_per_sensor_year);
        range(&mut p, "devices.offline_hours", d.offline_hours);
        range(&mut p, "devices.stuck_days", d.stuck_days);
        range(&mut p, "devices.battery_days", d.battery_days);
        range(&mut p, "devices.battery_replace_days", d.battery_replace_days);
        let r = &self.responders;
        for (n, c) in r.crews() {
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
        if let Err(e) = r.verify_minutes.check() {
            p.push("responders.verify_minutes", e);
        }
        let sy = self.synthetic.per_hour;
        p.check(sy.is_finite() && (0.0..=100_000.0).contains(&sy), || "synthetic.per_hour".into(), || format!("expected 0..=100000 jobs an hour, got {sy}"));
        for (kind, pt) in &self.hotline.patience {
            for (f, d) in [("first_call_hours", Some(&pt.first_call_hours)), ("again_after_hours", pt.again_after_hours.as_ref())] {
                if let Some(d) = d
                    && let Err(msg) = d.check()
                {
                    p.push(format!("hotline.patience.{kind}.{f}"), msg);
                }
            }
            if let Some(again) = &pt.again_after_hours {
                p.check(
                    again.mean() >= 0.1,
                    || format!("hotline.patience.{kind}.again_after_hours"),
                    || "expected a mean of at least 0.1 hours between calls".into(),
                );
            }
        }
        for (kind, e) in &self.response.effects {
            p.check(
                ANSWERABLE.contains(kind),
                || format!("response.effects.{kind}"),
                || {
                    let names: Vec<&str> = ANSWERABLE.iter().map(|k| k.as_str()).collect();
                    format!("no response can end a {kind} in the twin; kinds a response can end: {}", names.join(", "))
                },
            );
            if let Some(d) = &e.resumes_after_days {
                p.check(HABITS.contains(kind), || format!("response.effects.{kind}.resumes_after_days"), || "only habits (the e-bike kinds) resume".into());
                if let Err(msg) = d.check() {
                    p.push(format!("response.effects.{kind}.resumes_after_days"), msg);
                }
            }
        }
        p.finish()?;
        Ok(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use towntwin_contracts::time::Local;

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
