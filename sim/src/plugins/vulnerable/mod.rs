//! Registered vulnerable residents (lone elderly, disabled, children in difficulty): real emergencies at
//! home (they stop passing gates, their water use stops) and benign absences (a trip to family, which also
//! stops gate passes and water). Both must exist, or a 48-hour absence rule cannot be judged.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use crate::params::{Probability, prob, range, rate};

#[cfg(feature = "twin")]
pub mod plugin;

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

impl VulnerableResidents {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        rate(p, "vulnerable.emergencies_per_year", self.emergencies_per_year);
        rate(p, "vulnerable.trips_per_year", self.trips_per_year);
        rate(p, "vulnerable.door_opens_per_day", self.door_opens_per_day);
        rate(p, "vulnerable.litres_per_waking_hour", self.litres_per_waking_hour);
        range(p, "vulnerable.found_after_hours", self.found_after_hours);
        range(p, "vulnerable.hospital_days", self.hospital_days);
        range(p, "vulnerable.trip_days", self.trip_days);
    }
}
