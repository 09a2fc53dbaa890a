//! Renovations, declared and illegal: construction waste at the estate's smart boxes (and left outside
//! them, seen by the box's camera, until an order or the property's rounds clear it) and noise in the
//! stairwell, which illegal works make more often in forbidden hours. The core's daily sample draws
//! households to check; the twin knows which renovations are illegal.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use crate::params::{Probability, prob, range, rate};

#[cfg(feature = "twin")]
pub mod plugin;

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
    /// Share of a renovation's loads of construction waste left outside the estate's smart box instead of
    /// dropped into it (装修垃圾乱堆), for declared and for illegal works (0, the baseline: none).
    pub dumped_outside_legal: Probability,
    pub dumped_outside_illegal: Probability,
    /// Probability the box's camera sees a load left outside it.
    pub dumping_seen: Probability,
    /// Days until the property's own rounds clear a pile left outside a box, if no order has (uniform).
    pub dumping_cleared_days: (f64, f64),
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
            dumped_outside_legal: Probability::ZERO,
            dumped_outside_illegal: Probability::ZERO,
            dumping_seen: prob(0.8),
            dumping_cleared_days: (2.0, 7.0),
        }
    }
}

impl Renovation {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        rate(p, "renovation.starts_per_1000_flats_year", self.starts_per_1000_flats_year);
        range(p, "renovation.duration_days", self.duration_days);
        rate(p, "renovation.waste_drops_per_week", self.waste_drops_per_week);
        rate(p, "renovation.noise_episodes_per_workday", self.noise_episodes_per_workday);
        crate::params::days_range(p, "renovation.dumping_cleared_days", self.dumping_cleared_days);
    }
}
