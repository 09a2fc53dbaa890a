//! What an experiment file (`scenarios/experiments/*.ron`) says, and the plan it resolves to: every
//! variant's scenario, rules and policy loaded and checked before anything runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use towntwin_core::load::{DataErrors, Problems, read_ron};
use towntwin_core::orders::{Policy, Role};
use towntwin_core::rules::RuleSet;
use towntwin_core::time::Millis;
use towntwin_core::town::Town;
use towntwin_sim::Scenario;

use crate::setup::{CoreFiles, CoreInputs, Setup, Towns};

/// An experiment: variants of the town's policy, staffing and rules, run on common random numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The scenario every variant starts from, relative to this file's folder.
    pub scenario: String,
    /// Rule set, relative to this file (default: the repository's `assets/rules.ron`).
    #[serde(default)]
    pub rules: Option<String>,
    /// Simulated days per replication, warm-up included.
    pub days: u32,
    /// Days at the start of each replication that no KPI counts (the backlog filling from empty).
    pub warmup_days: u32,
    /// Decides every replication's seed: replication k has the same seed in every variant.
    pub seed: u64,
    pub replications: Replications,
    /// The closing time the town promises residents, for the "closed within" KPI (hours).
    #[serde(default = "default_sla_hours")]
    pub sla_hours: u32,
    pub variants: Vec<Variant>,
    /// The source's claims held against two variants: the town before the platform and with it (the report
    /// then has a calibration table; `before` should be the first variant, so that differences are paired
    /// against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<super::calibrate::Calibration>,
}

fn default_sla_hours() -> u32 {
    24
}

/// How many replications per variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Replications {
    /// Exactly this many.
    Fixed(u32),
    /// Add replications until every headline KPI's 95% half-width is within `relative_half_width` of its
    /// mean in every variant, from `min` up to `max`.
    Precision { relative_half_width: f64, min: u32, max: u32 },
}

/// One variant: what differs from the experiment's scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Another scenario file (a what-if over the baseline), relative to the experiment file.
    #[serde(default)]
    pub scenario: Option<String>,
    /// The escalation policy, relative to the experiment file.
    pub policy: String,
    #[serde(default)]
    pub rules: Option<String>,
    /// Headcount multipliers per crew (`{"city_management": 0.7}`), or `"all"` for every crew; rounded,
    /// and never below one member.
    #[serde(default)]
    pub staff: BTreeMap<String, f64>,
}

/// A variant ready to run.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub description: String,
    pub scenario: Scenario,
    pub start: Millis,
    pub town: Arc<Town>,
    pub rules: RuleSet,
    pub policy: Policy,
}

/// An experiment with every file it names loaded and checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: PathBuf,
    pub spec: Experiment,
    pub variants: Vec<Resolved>,
    /// BLAKE3 of the experiment and every file its variants read: replications from another plan are
    /// never merged with these.
    pub fingerprint: String,
}

impl Plan {
    /// Reads and checks an experiment file and everything it names; every problem found is reported at
    /// once, naming its file and field.
    pub fn load(file: &Path) -> Result<Plan, DataErrors> {
        let spec: Experiment = read_ron(file)?;
        Plan::resolve(file, spec)
    }

    pub fn resolve(file: &Path, spec: Experiment) -> Result<Plan, DataErrors> {
        let mut p = Problems::new(file);
        p.check(!spec.name.trim().is_empty(), || "name".into(), || "expected a name".into());
        p.check(spec.days >= 1 && spec.days <= 3660, || "days".into(), || format!("expected 1..=3660 days, got {}", spec.days));
        p.check(
            spec.warmup_days < spec.days,
            || "warmup_days".into(),
            || format!("expected fewer warm-up days than days ({}), got {}", spec.days, spec.warmup_days),
        );
        p.check(spec.sla_hours >= 1, || "sla_hours".into(), || "expected at least 1 hour".into());
        match spec.replications {
            Replications::Fixed(n) => {
                p.check((2..=10_000).contains(&n), || "replications".into(), || format!("expected 2..=10000 replications (an interval needs two), got {n}"))
            }
            Replications::Precision { relative_half_width: r, min, max } => {
                p.check(
                    r.is_finite() && r > 0.0 && r < 1.0,
                    || "replications.relative_half_width".into(),
                    || format!("expected a precision 0 < P < 1 (0.05 for 5%), got {r}"),
                );
                p.check(min >= 2, || "replications.min".into(), || format!("expected at least 2, got {min}"));
                p.check(max >= min && max <= 10_000, || "replications.max".into(), || format!("expected min ({min}) <= max <= 10000, got {max}"));
            }
        }
        p.check(!spec.variants.is_empty(), || "variants".into(), || "expected at least one variant".into());
        let mut names = std::collections::BTreeSet::new();
        for (i, v) in spec.variants.iter().enumerate() {
            let ok = !v.name.is_empty() && v.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            p.check(ok, || format!("variants[{i}].name"), || format!("expected letters, digits, '-' or '_' (it names a folder), got {:?}", v.name));
            p.check(names.insert(v.name.clone()), || format!("variants[{i}].name"), || format!("{:?} is used by an earlier variant", v.name));
            for (crew, f) in &v.staff {
                p.check(
                    crew == "all" || Role::ALL.iter().any(|r| r.name() == crew),
                    || format!("variants[{i}].staff.{crew}"),
                    || format!("unknown crew; expected one of {} or \"all\"", Role::ALL.map(Role::name).join(", ")),
                );
                p.check(
                    f.is_finite() && *f > 0.0 && *f <= 100.0,
                    || format!("variants[{i}].staff.{crew}"),
                    || format!("expected a multiplier 0 < x <= 100, got {f}"),
                );
            }
        }
        if let Some(c) = &spec.calibration {
            for (field, name) in [("before", &c.before), ("after", &c.after)] {
                p.check(
                    spec.variants.iter().any(|v| v.name == *name),
                    || format!("calibration.{field}"),
                    || format!("{name:?} is not one of the variants ({})", spec.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")),
                );
            }
            p.check(c.before != c.after, || "calibration.after".into(), || "expected another variant than `before`".into());
            p.check(
                spec.variants.first().is_some_and(|v| v.name == c.before),
                || "calibration.before".into(),
                || "expected the first variant: differences are paired against the first".into(),
            );
        }
        p.finish()?;

        let dir = file.parent().unwrap_or(Path::new("."));
        let mut errors = Vec::new();
        let mut hasher = blake3::Hasher::new();
        hasher.update(ron::to_string(&spec).unwrap_or_default().as_bytes());
        let read = |path: &Path, hasher: &mut blake3::Hasher| {
            if let Ok(bytes) = std::fs::read(path) {
                hasher.update(path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
                hasher.update(&bytes);
            }
        };
        let default_rules = spec.rules.as_ref().map(|r| dir.join(r)).unwrap_or_else(|| CoreFiles::standard().rules);
        let mut towns = Towns::new();
        let mut hashed_towns = std::collections::BTreeSet::new();
        let mut variants = Vec::new();
        for (i, v) in spec.variants.iter().enumerate() {
            let scenario_file = dir.join(v.scenario.as_deref().unwrap_or(&spec.scenario));
            let rules_file = v.rules.as_ref().map(|r| dir.join(r)).unwrap_or_else(|| default_rules.clone());
            let policy_file = dir.join(&v.policy);
            for f in [&scenario_file, &rules_file, &policy_file] {
                read(f, &mut hasher);
            }
            let staff = |scenario: &mut towntwin_sim::Scenario| {
                scenario.days = spec.days;
                scenario.seed = spec.seed;
                for (crew, f) in &v.staff {
                    let names: Vec<&str> = if crew == "all" { Role::ALL.map(Role::name).to_vec() } else { vec![crew.as_str()] };
                    for name in names {
                        if let Some(c) = scenario.responders.crew_mut(name) {
                            c.scale(*f);
                        }
                    }
                }
            };
            let files = CoreFiles { rules: rules_file, policy: policy_file };
            let setup = match Setup::load(&scenario_file, Some(&files), staff, &mut towns) {
                Ok(setup) => setup,
                Err(e) => {
                    errors.extend(e.0.into_iter().map(|mut d| {
                        d.field = Some(match d.field {
                            Some(f) => format!("variants[{i}] -> {f}"),
                            None => format!("variants[{i}]"),
                        });
                        d
                    }));
                    continue;
                }
            };
            if hashed_towns.insert(setup.town_file.clone()) {
                read(&setup.town_file, &mut hasher);
            }
            let Some(CoreInputs { rules, policy, .. }) = setup.core else { continue };
            // A rule file that extends another: the files it is built on are part of the plan too.
            for base in &rules.bases {
                read(base, &mut hasher);
            }
            variants.push(Resolved {
                name: v.name.clone(),
                description: v.description.clone(),
                start: setup.start,
                scenario: setup.scenario,
                town: setup.town,
                rules,
                policy,
            });
        }
        if !errors.is_empty() {
            return Err(DataErrors(errors));
        }
        Ok(Plan { file: file.to_path_buf(), spec, variants, fingerprint: hasher.finalize().to_hex()[..16].to_string() })
    }

    /// How many replications to run first: all of them, or the precision rule's minimum.
    pub fn first_round(&self) -> u32 {
        match self.spec.replications {
            Replications::Fixed(n) => n,
            Replications::Precision { min, .. } => min,
        }
    }

    /// The seed of replication `k` (0-based), the same in every variant: common random numbers.
    pub fn seed_of(&self, k: u32) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(b"towntwin experiment replication");
        h.update(&self.spec.seed.to_le_bytes());
        h.update(&k.to_le_bytes());
        u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or([0; 8]))
    }

    /// Minutes of the measured window (after the warm-up).
    pub fn window_start(&self, v: &Resolved) -> Millis {
        v.start + self.spec.warmup_days as Millis * towntwin_core::time::DAY
    }
}
