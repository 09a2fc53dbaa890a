//! Fire and electrical safety, and street furniture: real fires set off a building's smoke detectors,
//! cooking sets off nuisance alarms, electrical-fire monitors catch residual-current and overload faults,
//! and manhole-cover sensors report tilted or missing covers.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use crate::params::{Probability, prob, rate};

#[cfg(feature = "twin")]
pub mod plugin;

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

impl Safety {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        rate(p, "safety.fires_per_building_year", self.fires_per_building_year);
        rate(p, "safety.smoke_nuisance_per_detector_year", self.smoke_nuisance_per_detector_year);
        rate(p, "safety.electrical_faults_per_monitor_year", self.electrical_faults_per_monitor_year);
        rate(p, "safety.manhole_alarms_per_sensor_year", self.manhole_alarms_per_sensor_year);
    }
}
