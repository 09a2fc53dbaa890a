//! Scenarios: what a run simulates (town, dates, seed) and every behavioural rate, as RON.
//! Every section has built-in baseline defaults, so a what-if file states only what it changes.
//!
//! This module is the file's shape and its loading. Each section belongs to the feature that reads it
//! (`crate::plugins::<feature>`): the feature defines the section's type, its baseline defaults and its
//! checks, and [`Scenario::validate`] asks each one in turn. The section types are re-exported here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::{DataErrors, Problems, read_ron};
use towntwin_contracts::time::{Millis, parse_local_date};

pub use crate::params::Probability;
pub use crate::plugins::devices::Devices;
pub use crate::plugins::fence::Fence;
pub use crate::plugins::garbage::Garbage;
pub use crate::plugins::hotline::{Hotline, Patience, Patrols, REQUESTS, Requests, Synthetic};
pub use crate::plugins::platform::{Capital, Costs, Deployed, INSTANT, Platform, changed_by_deployment};
pub use crate::plugins::renovation::Renovation;
pub use crate::plugins::rental::GroupRental;
pub use crate::plugins::residents::{ByAge, Residents, Visitors};
pub use crate::plugins::responders::{ANSWERABLE, Calendar, Crew, Days, Effect, HABITS, Responders, Response, Shift};
pub use crate::plugins::safety::Safety;
pub use crate::plugins::vehicles::Vehicles;
pub use crate::plugins::vulnerable::VulnerableResidents;

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
    #[serde(default)]
    pub patrols: Patrols,
    /// Residents' repair requests and questions, and how they reach the estate.
    #[serde(default)]
    pub requests: Requests,
    /// Where the platform is deployed (every estate when left out) and what residents do with it.
    #[serde(default)]
    pub platform: Platform,
    /// What the platform and the problems it leaves cost (for a planner's totals; no effect on the run).
    #[serde(default)]
    pub costs: Costs,
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
        self.residents.check(&mut p);
        self.vulnerable.check(&mut p);
        self.garbage.check(&mut p);
        self.renovation.check(&mut p);
        self.group_rental.check(&mut p);
        self.vehicles.check(&mut p);
        self.fence.check(&mut p);
        self.safety.check(&mut p);
        self.devices.check(&mut p);
        self.responders.check(&mut p);
        self.synthetic.check(&mut p);
        self.hotline.check(&mut p);
        self.requests.check(&mut p);
        self.response.check(&mut p);
        self.platform.check(&mut p);
        self.costs.check(&mut p);
        p.finish()?;
        Ok(start)
    }
}
