//! Residents' daily routines: commutes, school runs, market trips and weekend outings, each an out pass and
//! an in pass at an estate gate, by face or card. Gate passes are the data the absence and group-rental
//! rules stand on, so their diurnal and weekly shape matters.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use crate::params::{Probability, prob, range};

#[cfg(feature = "twin")]
pub mod plugin;

/// One value per age band: mean outings a day (each outing an out pass and an in pass), or shares.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ByAge<T = f64> {
    pub child: T,
    pub adult: T,
    pub senior: T,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Residents {
    /// Shares of children, working-age adults and seniors (60+).
    pub age_mix: ByAge<Probability>,
    pub outings_weekday: ByAge,
    pub outings_weekend: ByAge,
    /// Share of passes by card rather than face.
    pub card_share: Probability,
    /// Share of passes with no recognition at all (walking through behind a neighbour).
    pub tailgate_share: Probability,
    /// Visitors whose faces are registered to the flat they visit (relatives, carers, a domestic helper):
    /// what makes a large family look like a group rental to a rule that counts faces.
    pub visitors: Visitors,
}

/// Visits to households: each is one visitor in at a gate and out again a few hours later, by face, under
/// the host's flat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Visitors {
    /// Visits per household per week (Poisson).
    pub per_household_week: f64,
    /// How many regular visitors a household has (drawn once per household, uniform in the range).
    pub regulars: (u32, u32),
    /// Share of visits by one of the regulars; the rest are one-off visitors, each a new face.
    pub regular_share: Probability,
    /// Local hour of arrival (uniform range) and hours of the stay.
    pub arrive_hours: (f64, f64),
    pub stay_hours: (f64, f64),
}

impl Default for Visitors {
    fn default() -> Self {
        Visitors { per_household_week: 1.0, regulars: (0, 2), regular_share: prob(0.85), arrive_hours: (9.0, 20.0), stay_hours: (0.5, 4.0) }
    }
}

impl Default for Residents {
    fn default() -> Self {
        Residents {
            age_mix: ByAge { child: prob(0.15), adult: prob(0.60), senior: prob(0.25) },
            outings_weekday: ByAge { child: 1.0, adult: 1.4, senior: 1.2 },
            outings_weekend: ByAge { child: 1.1, adult: 1.2, senior: 1.0 },
            card_share: prob(0.08),
            tailgate_share: prob(0.04),
            visitors: Visitors::default(),
        }
    }
}

impl Residents {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        let mix = self.age_mix.child.get() + self.age_mix.adult.get() + self.age_mix.senior.get();
        p.check((mix - 1.0).abs() < 1e-6, || "residents.age_mix".into(), || format!("shares must sum to 1, they sum to {mix}"));
        for (sec, by) in [("outings_weekday", self.outings_weekday), ("outings_weekend", self.outings_weekend)] {
            for (n, v) in [("child", by.child), ("adult", by.adult), ("senior", by.senior)] {
                p.check(v.is_finite() && (0.0..=10.0).contains(&v), || format!("residents.{sec}.{n}"), || format!("expected 0..=10 outings a day, got {v}"));
            }
        }
        let vi = &self.visitors;
        p.check(
            vi.per_household_week.is_finite() && (0.0..=50.0).contains(&vi.per_household_week),
            || "residents.visitors.per_household_week".into(),
            || format!("expected 0..=50 visits a week, got {}", vi.per_household_week),
        );
        p.check(
            vi.regulars.0 <= vi.regulars.1 && vi.regulars.1 <= 20,
            || "residents.visitors.regulars".into(),
            || format!("expected (low, high) with low <= high <= 20, got {:?}", vi.regulars),
        );
        p.check(
            vi.arrive_hours.0.is_finite()
                && vi.arrive_hours.1.is_finite()
                && 0.0 <= vi.arrive_hours.0
                && vi.arrive_hours.0 <= vi.arrive_hours.1
                && vi.arrive_hours.1 < 24.0,
            || "residents.visitors.arrive_hours".into(),
            || format!("expected local hours (low, high) with 0 <= low <= high < 24, got {:?}", vi.arrive_hours),
        );
        range(p, "residents.visitors.stay_hours", vi.stay_hours);
    }
}
