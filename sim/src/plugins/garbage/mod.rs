//! Household waste at smart sorting kiosks: drops in the fixed morning and evening windows (定时定点),
//! wrong sorting by tenure (and by habit: a household persuaded, or won over by points, sorts carefully for a
//! while), kiosk fill, overflow when a kiosk fills before its collection, and collections.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use towntwin_contracts::time::HhMm;

use crate::params::{Probability, hm, prob, rate};

#[cfg(feature = "twin")]
pub mod plugin;

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
    /// Bags dumped beside a kiosk outside the fixed times (定时定点), per kiosk a day (0, the baseline: none).
    /// They stay until the next collection clears them or a response does.
    pub dumping_per_kiosk_day: f64,
    /// Probability the kiosk's camera sees bags dumped beside it (video capture).
    pub dumping_seen: Probability,
    /// A household that sorts carefully (persuaded by a visit after the kiosks flagged its wrong sorts, or
    /// won over by the platform's points) sorts wrongly this share as often as its tenure does; it stays careful
    /// until the response's drawn relapse (`response.effects.garbage.missort`), for good when won by points.
    pub careful_missort_factor: Probability,
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
            dumping_per_kiosk_day: 0.0,
            dumping_seen: prob(0.8),
            careful_missort_factor: prob(0.25),
        }
    }
}

impl Garbage {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        rate(p, "garbage.drops_per_household_day", self.drops_per_household_day);
        rate(p, "garbage.dumping_per_kiosk_day", self.dumping_per_kiosk_day);
        p.check(self.bin_capacity_drops >= 1, || "garbage.bin_capacity_drops".into(), || "expected at least 1".into());
    }
}
