//! What every command that runs the town stands on, loaded and checked in one place: the scenario (with
//! the command's changes applied: days, seed, staffing), its town, and the core's rules and escalation
//! policy, checked against the scenario's crews (a rule routed to a crew with no shifts would never be
//! worked). `run`, `load`, `drill` and each experiment variant load through [`Setup::load`]; every problem
//! in every file is reported at once, with its file and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use towntwin_core::load::DataErrors;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::time::Millis;
use towntwin_core::town::Town;
use towntwin_sim::Scenario;

/// A file of the source tree: under the current folder, or else where this binary was built from.
pub fn asset(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    if built.exists() { built } else { here }
}

/// `scenarios/baseline.ron` under the current folder, or else in the source tree this binary was built from.
pub fn default_scenario() -> PathBuf {
    asset("scenarios/baseline.ron")
}

/// The core's inputs, as files.
#[derive(Debug, Clone)]
pub struct CoreFiles {
    pub rules: PathBuf,
    pub policy: PathBuf,
}

impl CoreFiles {
    /// The shipped rules (`assets/rules.ron`) and the standard policy.
    pub fn standard() -> CoreFiles {
        CoreFiles { rules: asset("assets/rules.ron"), policy: asset("scenarios/policies/standard.ron") }
    }
}

/// The core's inputs, loaded and checked.
#[derive(Debug, Clone)]
pub struct CoreInputs {
    pub rules: RuleSet,
    pub policy: Policy,
    pub files: CoreFiles,
}

/// Towns already loaded, by file: an experiment's variants share one town.
pub type Towns = BTreeMap<PathBuf, Arc<Town>>;

/// A scenario, its town and (for a run with a core) the core's inputs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub scenario: Scenario,
    pub scenario_file: PathBuf,
    /// The start of the scenario's first day.
    pub start: Millis,
    pub town: Arc<Town>,
    pub town_file: PathBuf,
    pub core: Option<CoreInputs>,
}

impl Setup {
    /// Loads `scenario_file`, applies `change` to the scenario and validates the result, loads its town
    /// (from `towns` when it is there) and, with `core`, the rules and the policy, then checks that every
    /// rule's route reaches a crew with shifts.
    pub fn load(scenario_file: &Path, core: Option<&CoreFiles>, change: impl FnOnce(&mut Scenario), towns: &mut Towns) -> Result<Setup, DataErrors> {
        let mut errors = Vec::new();
        let loaded = Scenario::load(scenario_file).map_err(|e| errors.extend(e.0)).ok();
        let inputs = core.and_then(|files| {
            let rules = RuleSet::load(&files.rules).map_err(|e| errors.extend(e.0)).ok()?;
            let policy = Policy::load_for(&files.policy, &rules).map_err(|e| errors.extend(e.0)).ok()?;
            Some(CoreInputs { rules, policy, files: files.clone() })
        });
        let Some(loaded) = loaded else { return Err(DataErrors(errors)) };
        let town = match towns.get(&loaded.town_file) {
            Some(t) => Some(t.clone()),
            None => match Town::load(&loaded.town_file) {
                Ok(t) => {
                    let t = Arc::new(t);
                    towns.insert(loaded.town_file.clone(), t.clone());
                    Some(t)
                }
                Err(e) => {
                    errors.extend(e.0);
                    None
                }
            },
        };
        let mut scenario = loaded.scenario;
        change(&mut scenario);
        if let Err(e) = scenario.validate(&loaded.file) {
            errors.extend(e.0);
        }
        if let Some(c) = &inputs
            && let Err(e) = crate::detect::check_staffed(&c.policy, &c.rules, &scenario.responders, &c.files.policy)
        {
            errors.extend(e.0);
        }
        // The platform's estates are the town's, and the core covers what the scenario deploys.
        let town = town.map(|town| {
            let mut p = towntwin_core::load::Problems::new(&loaded.file);
            scenario.platform.check_town(&town, &mut p);
            if let Err(e) = p.finish() {
                errors.extend(e.0);
            }
            match scenario.platform.covered() {
                None => town,
                covered => Arc::new(Town { covered, ..(*town).clone() }),
            }
        });
        match town {
            Some(town) if errors.is_empty() && (core.is_none() || inputs.is_some()) => {
                Ok(Setup { scenario, scenario_file: loaded.file, start: loaded.start, town, town_file: loaded.town_file, core: inputs })
            }
            _ => Err(DataErrors(errors)),
        }
    }

    /// [`Setup::load`] with a town of its own.
    pub fn load_one(scenario_file: &Path, core: Option<&CoreFiles>, change: impl FnOnce(&mut Scenario)) -> Result<Setup, DataErrors> {
        Setup::load(scenario_file, core, change, &mut Towns::new())
    }

    /// The rule targets the twin's responders answer for (none without a core).
    pub fn rule_targets(&self) -> towntwin_sim::RuleTargets {
        self.core.as_ref().map(|c| crate::detect::rule_targets(&c.rules, &c.policy)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_in_every_file_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join("s.ron");
        std::fs::write(&scenario, "(name: \"x\", seed: 1, start_date: \"2026-03-02\", days: 1, town: \"missing-town.ron\")").unwrap();
        let rules = dir.path().join("rules.ron");
        std::fs::write(&rules, "(version: 1, rules: [oops])").unwrap();
        let files = CoreFiles { rules, policy: asset("scenarios/policies/standard.ron") };
        let e = Setup::load_one(&scenario, Some(&files), |_| {}).unwrap_err().to_string();
        assert!(e.contains("missing-town.ron"), "the town: {e}");
        assert!(e.contains("rules.ron"), "the rules: {e}");
        // A change the scenario's checks refuse is reported against the scenario's file.
        let e = Setup::load_one(&default_scenario(), None, |s| s.days = 0).unwrap_err().to_string();
        assert!(e.contains("baseline.ron") && e.contains("days"), "{e}");
        let ok = Setup::load_one(&default_scenario(), Some(&CoreFiles::standard()), |s| s.days = 2).unwrap();
        assert_eq!(ok.scenario.days, 2);
        assert!(ok.core.is_some() && !ok.rule_targets().detects.is_empty());
    }
}
