//! The building blocks of the scenario file's sections: probabilities, the built-in defaults' literals,
//! and the checks every section uses. A leaf: the sections (each in its feature) and the file
//! ([`crate::scenario`]) use it; it uses neither.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;
use towntwin_contracts::time::HhMm;

/// A probability or a share, in 0..=1. A scenario file writes it as a bare number; anything outside
/// 0..=1 (or NaN) is refused when the file is read, with the field's place.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Probability(f64);

impl Probability {
    pub const ZERO: Probability = Probability(0.0);

    /// `p`, if it is in 0..=1.
    pub fn new(p: f64) -> Result<Probability, String> {
        if (0.0..=1.0).contains(&p) { Ok(Probability(p)) } else { Err(format!("expected a probability in 0..=1, got {p}")) }
    }

    pub const fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Probability, D::Error> {
        Probability::new(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A probability for the built-in defaults, which are in range.
pub(crate) const fn prob(v: f64) -> Probability {
    assert!(v >= 0.0 && v <= 1.0, "a built-in probability out of 0..=1");
    Probability(v)
}

/// A local time for the built-in defaults.
pub(crate) const fn hm(h: u16, m: u16) -> HhMm {
    match HhMm::new(h, m) {
        Some(t) => t,
        None => panic!("a built-in time out of range"),
    }
}

/// Checks a rate: finite and at least 0.
pub(crate) fn rate(p: &mut Problems, field: &str, v: f64) {
    p.check(v.is_finite() && v >= 0.0, || field.to_string(), || format!("expected a rate >= 0, got {v}"));
}

/// Checks a range of a uniform draw: `0 < low <= high`, both finite.
pub(crate) fn range(p: &mut Problems, field: &str, (a, b): (f64, f64)) {
    p.check(
        a.is_finite() && b.is_finite() && a > 0.0 && a <= b,
        || field.to_string(),
        || format!("expected a range (low, high) with 0 < low <= high, got ({a}, {b})"),
    );
}

/// A range of days that a time in the run is drawn from: as [`range`], and at most ten years, so an
/// instant a draw gives always fits in event time.
pub(crate) fn days_range(p: &mut Problems, field: &str, (a, b): (f64, f64)) {
    range(p, field, (a, b));
    p.check(b <= 3650.0, || field.to_string(), || format!("expected at most 3650 days, got {b}"));
}
