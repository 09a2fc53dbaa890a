//! E-bikes and EVs: charging at shared piles, e-bikes carried into elevators to charge upstairs (the
//! elevator's detector holds the car), charging indoors and by flying wire (飞线充电), which the building's
//! electrical-fire monitor can recognise by the charger's load signature.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use crate::params::{Probability, prob, rate};

#[cfg(feature = "twin")]
pub mod plugin;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Vehicles {
    pub ebike_household_share: Probability,
    pub ev_household_share: Probability,
    pub ebike_charge_every_days: f64,
    pub ev_charge_every_days: f64,
    /// Habits of e-bike households: charge at a pile, carry it upstairs, or hang a flying wire.
    pub ebike_pile: Probability,
    pub ebike_upstairs: Probability,
    pub ebike_flying_wire: Probability,
    /// Elevator detector recall, and false detections (strollers, wheelchairs) per detector a day.
    pub detector_recall: Probability,
    pub detector_false_per_day: f64,
    /// Share of blocked riders who then go to a pile (the rest take the stairs).
    pub blocked_to_pile: Probability,
    /// Electrical-fire monitor recall for an e-bike charging signature indoors, and by flying wire.
    pub signature_recall_indoor: Probability,
    pub signature_recall_flying_wire: Probability,
    /// Ports per shared charging pile, each charging one vehicle at a time; `None` (the baseline): a pile is
    /// never full.
    pub pile_ports: Option<u32>,
    /// An e-bike household that finds every port of its estate's piles taken: the share that charges
    /// upstairs instead, and by flying wire (the rest go without that night).
    pub no_free_pile: NoFreePile,
}

/// What an e-bike rider does when the estate's piles are full.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NoFreePile {
    pub upstairs: Probability,
    pub flying_wire: Probability,
}

impl Default for NoFreePile {
    fn default() -> Self {
        NoFreePile { upstairs: prob(0.2), flying_wire: prob(0.1) }
    }
}

impl Default for Vehicles {
    fn default() -> Self {
        Vehicles {
            ebike_household_share: prob(0.45),
            ev_household_share: prob(0.10),
            ebike_charge_every_days: 2.0,
            ev_charge_every_days: 3.0,
            ebike_pile: prob(0.94),
            ebike_upstairs: prob(0.05),
            ebike_flying_wire: prob(0.01),
            detector_recall: prob(0.95),
            detector_false_per_day: 0.01,
            blocked_to_pile: prob(0.6),
            signature_recall_indoor: prob(0.8),
            signature_recall_flying_wire: prob(0.6),
            pile_ports: None,
            no_free_pile: NoFreePile::default(),
        }
    }
}

impl Vehicles {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        let habits = self.ebike_pile.get() + self.ebike_upstairs.get() + self.ebike_flying_wire.get();
        p.check(
            (habits - 1.0).abs() < 1e-6,
            || "vehicles.ebike_pile".into(),
            || format!("ebike_pile + ebike_upstairs + ebike_flying_wire must sum to 1, they sum to {habits}"),
        );
        for (n, x) in [("ebike_charge_every_days", self.ebike_charge_every_days), ("ev_charge_every_days", self.ev_charge_every_days)] {
            p.check(x.is_finite() && x >= 1.0, || format!("vehicles.{n}"), || format!("expected at least 1 day, got {x}"));
        }
        rate(p, "vehicles.detector_false_per_day", self.detector_false_per_day);
        if let Some(n) = self.pile_ports {
            p.check((1..=100).contains(&n), || "vehicles.pile_ports".into(), || format!("expected 1..=100 ports a pile, got {n}"));
        }
        let f = self.no_free_pile;
        p.check(
            f.upstairs.get() + f.flying_wire.get() <= 1.0 + 1e-9,
            || "vehicles.no_free_pile".into(),
            || format!("upstairs + flying_wire must be at most 1, they are {}", f.upstairs.get() + f.flying_wire.get()),
        );
    }
}
