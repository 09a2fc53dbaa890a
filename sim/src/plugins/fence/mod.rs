//! Road electronic fences: the 15 kinds of street violation on the town's main roads, with rates by road
//! (traffic) and hour (each kind's diurnal profile), camera recall and false recognitions.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use crate::params::{Probability, prob, rate};

#[cfg(feature = "twin")]
pub mod plugin;

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

impl Fence {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        rate(p, "fence.violations_per_camera_day", self.violations_per_camera_day);
        rate(p, "fence.false_per_camera_day", self.false_per_camera_day);
    }
}
