//! Drill scripts (`scenarios/drills/*.ron`): an HSEEP master scenario events list (MSEL) as data. A script
//! names the trainees and the principals they play, the exercise's objectives, and the injects: when each
//! starts (at a drill minute, a delay after another inject started or was handled, or when the controller
//! fires it), what it makes happen in the twin, and what the trainees are expected to do about it, by when,
//! for how many points.
//!
//! Everything a script names is checked against the town before a drill starts: estates, flats, registered
//! residents and devices exist; a fire's building has smoke detectors to sound; new faces move only into a
//! rented flat; the start conditions refer to injects of the script and have no cycle; each expectation's
//! trainee can see the order the inject makes (the inject's area is inside the trainee's scope). Every
//! problem is reported at once, with the file, the field and what was expected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use towntwin_core::event::FlatRef;
use towntwin_core::load::{DataErrors, Problems, read_ron};
use towntwin_core::principal::{Principal, Scope};
use towntwin_core::town::{DeviceKind, Tenure, Town};
use towntwin_core::truth::IncidentKind;

use crate::setup::{CoreFiles, Setup};

/// A drill script as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The town's background: a scenario file, relative to this one.
    pub scenario: String,
    /// The core's rules, relative to this file (default: the shipped `assets/rules.ron`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    /// The core's escalation policy, relative to this file (default: `scenarios/policies/standard.ron`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The drill's minute 0 in the town's local time, `YYYY-MM-DDTHH:MM`, inside the scenario's days.
    pub start: String,
    /// How long the drill lasts, in drill minutes (town minutes).
    pub minutes: u32,
    /// Who plays: a name for the after-action report and the principal they log in as.
    pub trainees: Vec<Trainee>,
    pub objectives: Vec<Objective>,
    pub injects: Vec<Inject>,
    /// Who evaluates which objectives (HSEEP's evaluators, each with the exercise evaluation guide of
    /// their objectives): each signs in with their own token and records observations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluators: Vec<Evaluator>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluator {
    /// A name of letters, digits, '-' or '_': the evaluator signs in as `town/evaluator-<name>`.
    pub name: String,
    /// The objectives they evaluate (their EEG).
    pub objectives: Vec<String>,
}

impl Evaluator {
    /// The principal the evaluator signs in as: it sees the whole town and acts on no order.
    pub fn principal(&self) -> Principal {
        Principal::town(&format!("evaluator-{}", self.name))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trainee {
    pub name: String,
    /// `estate:E012/property`, `committee:C02/cadre`, `town/dispatcher` ... (the API's principals).
    pub principal: String,
}

/// An exercise objective, rated P/S/M/U in the after-action report from the expectations that serve it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub id: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    pub id: String,
    /// What the controller's panel and the report call it.
    pub title: String,
    pub start: Start,
    pub what: What,
    #[serde(default)]
    pub expect: Vec<Expect>,
}

/// When an inject starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Start {
    /// At this drill minute.
    At { minute: f64 },
    /// This many minutes after another inject started.
    AfterStarted { inject: String, minutes: f64 },
    /// This many minutes after the order another inject made was resolved.
    AfterHandled { inject: String, minutes: f64 },
    /// When the controller fires it.
    Manual,
}

impl Start {
    /// The inject this one waits for, if any.
    pub fn after(&self) -> Option<&str> {
        match self {
            Start::AfterStarted { inject, .. } | Start::AfterHandled { inject, .. } => Some(inject),
            Start::At { .. } | Start::Manual => None,
        }
    }
}

/// What an inject makes happen in the twin (the twin makes it real: the detectors and people react to it).
pub use towntwin_sim::Inject as What;

/// What a trainee is expected to do about an inject's order, within how long of the inject's start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The trainee, by name.
    pub by: String,
    pub action: Expected,
    pub within_minutes: f64,
    pub points: u32,
    /// The objective this serves.
    pub objective: String,
    /// The loop it is to be done in (`loop: Some(Large)`): a department's report counts at the large loop
    /// only once the order has gone up, not the report it made at the medium loop. Any loop when absent.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub in_loop: Option<towntwin_core::orders::Loop>,
}

/// The steps of handling an order that are scored: the order's own (notice, accept, start, resolve) and the
/// loops' (a failed visit that the estate cannot settle, the committee's whistle, a department's report
/// on site on a joint visit, an escalation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expected {
    /// First opened the order (its detail page or the API's `GET /orders/{id}`).
    Notice,
    Accept,
    /// Someone is on site and working on it (the order's `start`: in progress).
    Start,
    Resolve,
    /// Reported back from site that it could not be settled there (the order's `fail`): the policy moves
    /// it on, or the committee whistles.
    Fail,
    /// The committee blows the whistle (居村吹哨): the order goes to the departments at once.
    Whistle,
    /// A department reports its part of a joint visit done on site (部门报到): the trainee's own part, by
    /// the role its principal plays (`town/housing` reports for housing).
    Report,
    /// Sent on to the next loop (the order's `escalate`).
    Escalate,
}

impl Expected {
    /// The name of the order's transition that does it (`None` for a notice: an audited view).
    pub fn action(self) -> Option<&'static str> {
        match self {
            Expected::Notice => None,
            Expected::Accept => Some("accept"),
            Expected::Start => Some("start"),
            Expected::Resolve => Some("resolve"),
            Expected::Fail => Some("fail"),
            Expected::Whistle => Some("whistle"),
            Expected::Report => Some("report"),
            Expected::Escalate => Some("escalate"),
        }
    }
}

/// A script checked against its town: the script, where its inputs are, and the order its injects can be
/// resolved in.
#[derive(Debug, Clone)]
pub struct Drill {
    pub script: Script,
    pub file: PathBuf,
    pub scenario_file: PathBuf,
    /// The core's rules and policy files.
    pub core: CoreFiles,
    pub town: Town,
    /// The trainees' principals, by trainee name.
    pub principals: BTreeMap<String, Principal>,
    /// Inject indices, each after the one it waits for.
    pub order: Vec<usize>,
    /// Each inject's area (estate or road id): the area of the order it makes.
    pub areas: Vec<String>,
    /// The drill's minute 0, from the start of the scenario's first day.
    pub offset: towntwin_core::time::Millis,
    /// The incident kinds the drill's rules make orders about.
    pub detected: HashSet<IncidentKind>,
}

/// An inject the controller fires during a drill, from the catalogue of what the twin can make real: as a
/// script's inject, but fired at once (no start condition), its expectations optional.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdHoc {
    pub id: String,
    pub title: String,
    pub what: What,
    #[serde(default)]
    pub expect: Vec<Expect>,
}

impl AdHoc {
    pub fn into_inject(self) -> Inject {
        Inject { id: self.id, title: self.title, start: Start::Manual, what: self.what, expect: self.expect }
    }
}

impl Drill {
    /// Checks an ad-hoc inject as a script's inject is checked: an id not used by `taken`, a target the
    /// twin can make real, a rule to make an order about it (when something is expected), and expectations
    /// of the script's trainees, within their scope, for the script's objectives. Returns its area.
    pub fn check_adhoc<'t>(&self, inj: &Inject, taken: impl IntoIterator<Item = &'t str>) -> Result<String, DataErrors> {
        let mut p = Problems::new(Path::new("the ad-hoc inject"));
        let taken: HashSet<&str> = taken.into_iter().collect();
        let chars = !inj.id.is_empty() && inj.id.len() <= 32 && inj.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        p.check(chars, || "id".into(), || format!("`{}`: expected 1 to 32 letters, digits, '-' or '_'", inj.id));
        p.check(
            !taken.contains(inj.id.as_str()),
            || "id".into(),
            || format!("`{}` is an inject of this drill already: give the new one an id of its own", inj.id),
        );
        p.check(
            !inj.title.trim().is_empty() && inj.title.chars().count() <= 200,
            || "title".into(),
            || "expected a title of 1 to 200 characters (the panel and the report call the inject by it)".into(),
        );
        let ids: HashMap<&str, usize> = self.script.injects.iter().enumerate().map(|(i, x)| (x.id.as_str(), i)).collect();
        let checker = Checker::new(&self.town, &self.principals, &self.script.trainees, &self.script.objectives, &self.detected, self.script.minutes);
        let area = checker.inject(&mut p, "", inj, &ids);
        p.finish()?;
        Ok(area.unwrap_or_default())
    }
}

/// One kind of inject the twin can make real, for the controller's catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct Kind {
    pub name: &'static str,
    /// What it makes happen in the town.
    pub does: &'static str,
    /// An example, as a script writes it.
    pub example: &'static str,
}

/// Every kind of inject the twin can make real (the drill scripts' `what`).
pub const CATALOGUE: [Kind; 9] = [
    Kind {
        name: "Incapacitate",
        does: "a registered vulnerable resident taken ill at home (once home and well); a neighbour calls 12345 after the minutes given",
        example: r#"Incapacitate(resident: "V0001", call_after_minutes: Some(5.0))"#,
    },
    Kind {
        name: "Fire",
        does: "a fire in a flat; its building's smoke detectors sound within 1-3 minutes",
        example: r#"Fire(estate: "E001", flat: "B16-101")"#,
    },
    Kind {
        name: "NewFaces",
        does: "people new to the gates move into a rented flat and come in over 10 minutes",
        example: r#"NewFaces(estate: "E001", flat: "B01-105", people: 9)"#,
    },
    Kind { name: "DeviceDark", does: "a device goes dark for the hours given", example: r#"DeviceDark(device: "E001-gate-02", hours: 6.0)"# },
    Kind {
        name: "IllegalWorks",
        does: "works without a permit start in a flat, heard by its building's noise monitor",
        example: r#"IllegalWorks(estate: "E040", flat: "B18-203")"#,
    },
    Kind {
        name: "EbikeInElevator",
        does: "a household carries an e-bike up in a lift; the lift's detector sees it",
        example: r#"EbikeInElevator(estate: "E040", flat: "B13-103")"#,
    },
    Kind {
        name: "IndoorCharging",
        does: "a household charges an e-bike at home; the building's electrical-fire monitor sees the load",
        example: r#"IndoorCharging(estate: "E040", flat: "B13-103")"#,
    },
    Kind {
        name: "DumpedBags",
        does: "bags dumped beside a sorting kiosk outside the fixed times; its camera sees them (the platform's rules)",
        example: r#"DumpedBags(kiosk: "E040-bin-001", bags: 3)"#,
    },
    Kind {
        name: "FenceViolation",
        does: "a street-order violation at a road camera, by its code (1 illegal parking, 2 non-motor vehicle in the motor lane, ...)",
        example: r#"FenceViolation(camera: "R01-camera-003", code: 1)"#,
    },
];

/// Loads and checks a drill script; the scenario it names and that scenario's town are loaded too.
pub fn load(file: &Path) -> Result<Drill, DataErrors> {
    let script: Script = read_ron(file)?;
    load_script(file, script)
}

/// Checks `script` as if read from `file` (its scenario, rules and policy are relative to that file).
pub fn load_script(file: &Path, script: Script) -> Result<Drill, DataErrors> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let scenario_file = dir.join(&script.scenario);
    let standard = CoreFiles::standard();
    let core = CoreFiles {
        rules: script.rules.as_ref().map_or(standard.rules, |r| dir.join(r)),
        policy: script.policy.as_ref().map_or(standard.policy, |p| dir.join(p)),
    };
    // The rules and policy are loaded here too, so that a bad one is reported by `--check`.
    let setup = Setup::load_one(&scenario_file, Some(&core), |_| {})?;
    // The incident kinds the core's rules make orders about.
    let detected: HashSet<IncidentKind> = setup.core.iter().flat_map(|c| c.rules.rules.iter().flat_map(|r| r.detects.kinds.iter().copied())).collect();
    let town = Arc::unwrap_or_clone(setup.town);
    check(file, script, scenario_file, core, &setup.scenario, town, &detected)
}

/// Checks `script` (read from `file`) against its scenario, town and the kinds its rules detect.
fn check(
    file: &Path,
    script: Script,
    scenario_file: PathBuf,
    core: CoreFiles,
    scenario: &towntwin_sim::Scenario,
    town: Town,
    detected: &HashSet<IncidentKind>,
) -> Result<Drill, DataErrors> {
    let mut p = Problems::new(file);
    let mut drill_offset = 0;
    let ok_name = !script.name.is_empty() && script.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    p.check(ok_name, || "name".into(), || format!("expected letters, digits, '-' or '_' (it names a folder), got {:?}", script.name));
    p.check(script.minutes > 0 && script.minutes <= 7 * 24 * 60, || "minutes".into(), || format!("expected 1 to 10080 drill minutes, got {}", script.minutes));
    match start_minute(&script.start) {
        None => p.push("start", format!("expected a local time YYYY-MM-DDTHH:MM, got {:?}", script.start)),
        Some((date, minute)) => {
            let first = towntwin_core::time::parse_local_date(&scenario.start_date);
            let day = towntwin_core::time::parse_local_date(&date);
            match (first, day) {
                (Ok(first), Ok(day)) => {
                    let offset = (day - first) + minute * towntwin_core::time::MINUTE;
                    drill_offset = offset;
                    let end = scenario.days as i64 * towntwin_core::time::DAY;
                    let last = offset + script.minutes as i64 * towntwin_core::time::MINUTE;
                    p.check(
                        offset >= 0 && last <= end,
                        || "start".into(),
                        || {
                            format!(
                                "the drill ({} minutes from {}) must lie inside the scenario's {} day(s) from {}",
                                script.minutes, script.start, scenario.days, scenario.start_date
                            )
                        },
                    );
                }
                _ => p.push("start", format!("expected a local time YYYY-MM-DDTHH:MM, got {:?}", script.start)),
            }
        }
    }

    // Trainees and their principals.
    let committees: HashSet<&str> = town.committees.iter().map(|c| c.id.as_str()).collect();
    let estates: HashMap<&str, usize> = town.estates.iter().enumerate().map(|(i, e)| (e.id.as_str(), i)).collect();
    let mut principals = BTreeMap::new();
    p.check(!script.trainees.is_empty(), || "trainees".into(), || "expected at least one trainee".into());
    for (i, t) in script.trainees.iter().enumerate() {
        if principals.contains_key(&t.name) {
            p.push(format!("trainees[{i}].name"), format!("`{}` is named twice; trainees are told apart by name", t.name));
            continue;
        }
        match t.principal.parse::<Principal>() {
            Err(e) => p.push(format!("trainees[{i}].principal"), e.to_string()),
            Ok(pr) => {
                match &pr.scope {
                    Scope::Committee(c) if !committees.contains(c.as_str()) => {
                        p.push(format!("trainees[{i}].principal"), format!("committee {c} is not one of the town's ({} committees)", committees.len()))
                    }
                    Scope::Estate(e) if !estates.contains_key(e.as_str()) => {
                        p.push(format!("trainees[{i}].principal"), format!("estate {e} is not one of the town's ({} estates)", estates.len()))
                    }
                    _ => {}
                }
                principals.insert(t.name.clone(), pr);
            }
        }
    }

    // Objectives.
    let mut objectives = HashSet::new();
    for (i, o) in script.objectives.iter().enumerate() {
        p.check(objectives.insert(o.id.as_str()), || format!("objectives[{i}].id"), || format!("`{}` is used twice", o.id));
    }

    // Evaluators: each named once, for the script's objectives.
    let mut evaluators = HashSet::new();
    for (i, e) in script.evaluators.iter().enumerate() {
        let ok = !e.name.is_empty() && e.name.len() <= 40 && e.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        p.check(ok, || format!("evaluators[{i}].name"), || format!("`{}`: expected 1 to 40 letters, digits, '-' or '_'", e.name));
        p.check(evaluators.insert(e.name.as_str()), || format!("evaluators[{i}].name"), || format!("`{}` is named twice", e.name));
        p.check(!e.objectives.is_empty(), || format!("evaluators[{i}].objectives"), || "expected at least one objective to evaluate".into());
        for (k, o) in e.objectives.iter().enumerate() {
            p.check(
                objectives.contains(o.as_str()),
                || format!("evaluators[{i}].objectives[{k}]"),
                || format!("`{o}` is not an objective of this script ({})", script.objectives.iter().map(|o| o.id.as_str()).collect::<Vec<_>>().join(", ")),
            );
        }
    }

    // Injects: ids, targets, expectations.
    let checker = Checker::new(&town, &principals, &script.trainees, &script.objectives, detected, script.minutes);
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, inj) in script.injects.iter().enumerate() {
        let chars = inj.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let ok = !inj.id.is_empty() && chars && ids.insert(inj.id.as_str(), i).is_none();
        p.check(ok, || format!("injects[{i}].id"), || format!("`{}`: expected an id of letters, digits, '-' or '_', used once", inj.id));
    }
    p.check(!script.injects.is_empty(), || "injects".into(), || "expected at least one inject".into());
    let areas: Vec<String> =
        script.injects.iter().enumerate().map(|(i, inj)| checker.inject(&mut p, &format!("injects[{i}]."), inj, &ids).unwrap_or_default()).collect();
    drop(checker);

    // Start conditions: no cycle; an order in which each inject comes after the one it waits for.
    let order = match topo_order(&script.injects, &ids) {
        Ok(order) => order,
        Err(cycle) => {
            let path: Vec<&str> = cycle.iter().map(|&i| script.injects[i].id.as_str()).collect();
            p.push(format!("injects[{}].start", cycle[0]), format!("start conditions form a cycle: {}", path.join(" waits for ")));
            Vec::new()
        }
    };
    p.finish()?;
    Ok(Drill { script, file: file.to_path_buf(), scenario_file, core, town, principals, order, areas, offset: drill_offset, detected: detected.clone() })
}

/// What an inject is checked against: the town's places and devices, the script's trainees and
/// objectives, and the incident kinds the drill's rules make orders about.
struct Checker<'a> {
    town: &'a Town,
    estates: HashMap<&'a str, usize>,
    devices: HashMap<&'a str, (Option<usize>, DeviceKind)>,
    road_of: HashMap<&'a str, &'a str>,
    registered: HashMap<&'a str, &'a towntwin_core::town::Registered>,
    register_flats: HashSet<(&'a str, u16, u16)>,
    committee_of: HashMap<&'a str, &'a str>,
    principals: &'a BTreeMap<String, Principal>,
    trainees: &'a [Trainee],
    objectives: HashSet<&'a str>,
    detected: &'a HashSet<IncidentKind>,
    minutes: u32,
}

impl<'a> Checker<'a> {
    fn new(
        town: &'a Town,
        principals: &'a BTreeMap<String, Principal>,
        trainees: &'a [Trainee],
        objectives: &'a [Objective],
        detected: &'a HashSet<IncidentKind>,
        minutes: u32,
    ) -> Checker<'a> {
        Checker {
            town,
            estates: town.estates.iter().enumerate().map(|(i, e)| (e.id.as_str(), i)).collect(),
            devices: town
                .estates
                .iter()
                .enumerate()
                .flat_map(|(i, e)| e.devices.iter().map(move |d| (d.id.as_str(), (Some(i), d.kind))))
                .chain(town.roads.iter().flat_map(|r| r.devices.iter().map(|d| (d.id.as_str(), (None, d.kind)))))
                .collect(),
            road_of: town.roads.iter().flat_map(|r| r.devices.iter().map(move |d| (d.id.as_str(), r.id.as_str()))).collect(),
            registered: town.register.iter().map(|r| (r.id.as_str(), r)).collect(),
            register_flats: town.register.iter().map(|r| (r.estate.as_str(), r.building, r.room)).collect(),
            committee_of: town.estates.iter().map(|e| (e.id.as_str(), e.committee.as_str())).collect(),
            principals,
            trainees,
            objectives: objectives.iter().map(|o| o.id.as_str()).collect(),
            detected,
            minutes,
        }
    }

    /// Checks one inject (its fields named with `prefix`, `injects[2].`), given the ids of the script's
    /// injects; returns its area (the area of the order it makes), when its target is known.
    fn inject(&self, p: &mut Problems, prefix: &str, inj: &Inject, ids: &HashMap<&str, usize>) -> Option<String> {
        let f = |name: &str| format!("{prefix}{name}");
        // Where the inject happens: the area of the order it makes (None when a target is unknown).
        let area: Option<String> = match &inj.what {
            What::Incapacitate { resident, call_after_minutes } => match self.registered.get(resident.as_str()) {
                Some(r) => {
                    if let Some(m) = call_after_minutes {
                        p.check(m.is_finite() && *m >= 0.0, || f("what.call_after_minutes"), || format!("expected minutes >= 0, got {m}"));
                    }
                    Some(r.estate.clone())
                }
                None => {
                    p.push(f("what.resident"), format!("`{resident}` is not in the town's register of vulnerable residents (V0001 ...)"));
                    None
                }
            },
            What::Fire { estate, flat } | What::NewFaces { estate, flat, .. } => {
                let flat_ok = match (self.estates.get(estate.as_str()), flat.parse::<FlatRef>()) {
                    (None, _) => {
                        p.push(f("what.estate"), format!("`{estate}` is not one of the town's estates"));
                        None
                    }
                    (Some(_), Err(e)) => {
                        p.push(f("what.flat"), e);
                        None
                    }
                    (Some(&e), Ok(fr)) => {
                        let building = self.town.estates[e].buildings.iter().find(|b| b.no == fr.building);
                        match building.and_then(|b| b.rooms().find(|r| r.room == fr.room)) {
                            None => {
                                p.push(f("what.flat"), format!("{estate} has no flat {fr}"));
                                None
                            }
                            Some(r) => Some((e, fr, r)),
                        }
                    }
                };
                if let Some((e, fr, room)) = flat_ok {
                    match &inj.what {
                        What::Fire { .. } => {
                            let sounds = self.town.estates[e].devices.iter().any(|d| d.kind == DeviceKind::Smoke && d.building == Some(fr.building));
                            p.check(sounds, || f("what.flat"), || format!("building {} of {estate} has no smoke detector: nothing would sound", fr.building));
                        }
                        What::NewFaces { people, .. } => {
                            let rented = matches!(room.tenure, Tenure::RegisteredTenant | Tenure::UnregisteredOccupant);
                            p.check(
                                rented,
                                || f("what.flat"),
                                || format!("{estate} {fr} is {:?}: new faces move into a rented flat (tenure R or U in the town file)", room.tenure),
                            );
                            p.check(
                                !self.register_flats.contains(&(estate.as_str(), fr.building, fr.room)),
                                || f("what.flat"),
                                || format!("{estate} {fr} is a registered vulnerable resident's home"),
                            );
                            p.check((1..=30).contains(people), || f("what.people"), || format!("expected 1 to 30 people, got {people}"));
                        }
                        _ => {}
                    }
                }
                self.estates.contains_key(estate.as_str()).then(|| estate.clone())
            }
            What::IllegalWorks { estate, flat } | What::EbikeInElevator { estate, flat } | What::IndoorCharging { estate, flat } => {
                match (self.estates.get(estate.as_str()), flat.parse::<FlatRef>()) {
                    (None, _) => p.push(f("what.estate"), format!("`{estate}` is not one of the town's estates")),
                    (Some(_), Err(e)) => p.push(f("what.flat"), e),
                    (Some(&e), Ok(fr)) => {
                        let est = &self.town.estates[e];
                        let building = est.buildings.iter().find(|b| b.no == fr.building);
                        let room = building.and_then(|b| b.rooms().find(|r| r.room == fr.room));
                        let in_building = |kind: DeviceKind| est.devices.iter().any(|d| d.kind == kind && d.building == Some(fr.building));
                        match (building, room) {
                            (Some(b), Some(r)) => {
                                let lived_in = !matches!(r.tenure, Tenure::Vacant);
                                p.check(lived_in, || f("what.flat"), || format!("{estate} {fr} is vacant: nobody there to do it"));
                                let (ok, why) = match &inj.what {
                                    What::IllegalWorks { .. } => (in_building(DeviceKind::Noise), "no noise monitor: nothing would hear the works"),
                                    What::EbikeInElevator { .. } => (
                                        b.elevators > 0 && in_building(DeviceKind::EbikeDetector),
                                        "no lift with an e-bike detector: nothing would see the e-bike",
                                    ),
                                    _ => (in_building(DeviceKind::ElecFire), "no electrical-fire monitor: nothing would see the charging load"),
                                };
                                p.check(ok, || f("what.flat"), || format!("building {} of {estate} has {why}", fr.building));
                            }
                            _ => p.push(f("what.flat"), format!("{estate} has no flat {fr}")),
                        }
                    }
                }
                self.estates.contains_key(estate.as_str()).then(|| estate.clone())
            }
            What::DumpedBags { kiosk, bags } => {
                p.check((1..=12).contains(bags), || f("what.bags"), || format!("expected 1 to 12 bags, got {bags}"));
                match self.devices.get(kiosk.as_str()) {
                    Some((Some(e), DeviceKind::SortingBin)) => Some(self.town.estates[*e].id.clone()),
                    Some((_, kind)) => {
                        p.push(f("what.kiosk"), format!("`{kiosk}` is a {kind:?}, not a sorting kiosk (E012-bin-01 ...)"));
                        None
                    }
                    None => {
                        p.push(f("what.kiosk"), format!("`{kiosk}` is not one of the town's devices (a sorting kiosk: E012-bin-01 ...)"));
                        None
                    }
                }
            }
            What::FenceViolation { camera, code } => {
                let known = towntwin_core::violations::VIOLATIONS.iter().any(|v| v.code == *code);
                p.check(known, || f("what.code"), || format!("expected a violation code 1 to 15 (1: illegal parking ...), got {code}"));
                match self.devices.get(camera.as_str()) {
                    Some((None, DeviceKind::Camera)) => self.road_of.get(camera.as_str()).map(|r| r.to_string()),
                    Some((_, kind)) => {
                        p.push(f("what.camera"), format!("`{camera}` is a {kind:?}, not a road camera (R01-camera-001 ...)"));
                        None
                    }
                    None => {
                        p.push(f("what.camera"), format!("`{camera}` is not one of the town's devices (a road camera: R01-camera-001 ...)"));
                        None
                    }
                }
            }
            What::DeviceDark { device, hours } => {
                p.check(hours.is_finite() && *hours > 0.0 && *hours <= 24.0 * 30.0, || f("what.hours"), || format!("expected 0 < hours <= 720, got {hours}"));
                match self.devices.get(device.as_str()) {
                    None => {
                        p.push(f("what.device"), format!("`{device}` is not one of the town's devices (E012-gate-01, R01-camera-001 ...)"));
                        None
                    }
                    Some((Some(e), _)) => Some(self.town.estates[*e].id.clone()),
                    Some((None, _)) => self.road_of.get(device.as_str()).map(|r| r.to_string()),
                }
            }
        };
        // Something has to make an order about it.
        let kind = crate::drill::aar::kind_of(&inj.what);
        if !inj.expect.is_empty() {
            p.check(
                self.detected.contains(&kind),
                || f("what"),
                || {
                    format!(
                        "no rule of this drill's rules detects {} (`{}`): nothing would make an order to act on; name rules that do (`rules:`)",
                        kind.as_str(),
                        kind_name(&inj.what)
                    )
                },
            );
        }
        match &inj.start {
            Start::At { minute } => {
                let ok = minute.is_finite() && *minute >= 0.0 && *minute < self.minutes as f64;
                p.check(ok, || f("start.minute"), || format!("expected a drill minute 0 <= m < {}, got {minute}", self.minutes));
            }
            Start::AfterStarted { inject, minutes } | Start::AfterHandled { inject, minutes } => {
                p.check(ids.contains_key(inject.as_str()), || f("start.inject"), || format!("`{inject}` is not an inject of this script"));
                p.check(minutes.is_finite() && *minutes >= 0.0, || f("start.minutes"), || format!("expected minutes >= 0, got {minutes}"));
            }
            Start::Manual => {}
        }
        for (k, e) in inj.expect.iter().enumerate() {
            let g = |name: &str| format!("{prefix}expect[{k}].{name}");
            p.check(self.objectives.contains(e.objective.as_str()), || g("objective"), || format!("`{}` is not an objective of this script", e.objective));
            p.check(
                e.within_minutes.is_finite() && e.within_minutes > 0.0,
                || g("within_minutes"),
                || format!("expected minutes > 0, got {}", e.within_minutes),
            );
            // Steps that cannot be taken in the loop named: the whistle is the estate's (it sends the order
            // up), and nothing is above the large loop to escalate to.
            use towntwin_core::orders::Loop;
            match (e.action, e.in_loop) {
                (Expected::Whistle, Some(l)) if l != Loop::Small => {
                    p.push(g("loop"), format!("the committee whistles in the small loop (the estate's), not the {} loop", l.as_str()))
                }
                (Expected::Escalate, Some(Loop::Large)) => p.push(g("loop"), "nothing is above the large loop to escalate to".to_string()),
                _ => {}
            }
            if e.action == Expected::Report {
                let plays = self.principals.get(&e.by).map(|p: &Principal| p.role());
                p.check(
                    !matches!(plays, Some(None)),
                    || g("action"),
                    || {
                        format!(
                            "{} reports a joint visit's part for the role its principal plays, and {} plays none (name it for a role: town/housing, town/public-security, committee:C25/cadre ...)",
                            e.by,
                            self.principals.get(&e.by).map(|p| p.to_string()).unwrap_or_default()
                        )
                    },
                );
            }
            match (self.principals.get(&e.by), &area) {
                (None, _) => {
                    if !self.trainees.iter().any(|t| t.name == e.by) {
                        p.push(g("by"), format!("`{}` is not a trainee of this script", e.by));
                    }
                }
                (Some(pr), Some(area)) => {
                    let committee = self.committee_of.get(area.as_str()).copied();
                    p.check(
                        pr.scope.reaches(area, committee),
                        || g("by"),
                        || format!("{} plays {pr}, whose scope does not reach {area} where this inject's order is made", e.by),
                    );
                }
                (Some(_), None) => {}
            }
        }
        area
    }
}

/// The inject kind's name as a script writes it.
fn kind_name(what: &What) -> &'static str {
    match what {
        What::Incapacitate { .. } => "Incapacitate",
        What::Fire { .. } => "Fire",
        What::NewFaces { .. } => "NewFaces",
        What::DeviceDark { .. } => "DeviceDark",
        What::IllegalWorks { .. } => "IllegalWorks",
        What::EbikeInElevator { .. } => "EbikeInElevator",
        What::IndoorCharging { .. } => "IndoorCharging",
        What::DumpedBags { .. } => "DumpedBags",
        What::FenceViolation { .. } => "FenceViolation",
    }
}

/// `YYYY-MM-DDTHH:MM` as (date, minute of the day).
fn start_minute(s: &str) -> Option<(String, i64)> {
    let (date, time) = s.split_once('T')?;
    let (h, m) = time.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) && h.to_string().len() <= 2 && time.len() == 5).then(|| (date.to_string(), h * 60 + m))
}

/// The injects in an order where each comes after the one it waits for, or the injects of a cycle (each
/// waiting for the next, the first repeated at the end).
fn topo_order(injects: &[Inject], ids: &HashMap<&str, usize>) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let parent = |i: usize| injects[i].start.after().and_then(|a| ids.get(a).copied());
    let mut marks = vec![Mark::New; injects.len()];
    let mut order = Vec::with_capacity(injects.len());
    for first in 0..injects.len() {
        // Follow the chain of what each waits for (one parent each: a chain, not a tree).
        let mut chain = Vec::new();
        let mut at = Some(first);
        while let Some(i) = at {
            match marks[i] {
                Mark::Done => break,
                Mark::Open => {
                    let from = chain.iter().position(|&c| c == i).unwrap_or(0);
                    let mut cycle: Vec<usize> = chain[from..].to_vec();
                    cycle.push(i);
                    return Err(cycle);
                }
                Mark::New => {
                    marks[i] = Mark::Open;
                    chain.push(i);
                    at = parent(i);
                }
            }
        }
        for &i in chain.iter().rev() {
            marks[i] = Mark::Done;
            order.push(i);
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_the_catalogue_has_an_example_a_script_can_use() {
        let names: HashSet<&str> = CATALOGUE.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), CATALOGUE.len());
        for k in &CATALOGUE {
            let what: What = ron::from_str(k.example).unwrap_or_else(|e| panic!("{}: {e}", k.example));
            assert_eq!(kind_name(&what), k.name);
        }
    }
}
