//! Group-rented flats (群租): a rented flat let by the bed to many occupants, whose faces, registered to
//! the flat at the gates, keep changing. Too many distinct faces for one flat is the signal.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use crate::params::{Probability, prob, rate};

#[cfg(feature = "twin")]
pub mod plugin;

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

impl GroupRental {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        rate(p, "group_rental.new_per_week", self.new_per_week);
        rate(p, "group_rental.churn_per_week", self.churn_per_week);
        p.check(
            self.occupants.0 >= 2 && self.occupants.0 <= self.occupants.1 && self.occupants.1 <= 60,
            || "group_rental.occupants".into(),
            || format!("expected (low, high) with 2 <= low <= high <= 60, got {:?}", self.occupants),
        );
    }
}
