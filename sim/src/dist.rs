//! Distributions as data: the scenario says how a duration or a delay is drawn, in the units of the field
//! that holds it (minutes, hours, days). Written in RON as
//!
//! ```ron
//! Fixed(10.0)
//! Uniform(5.0, 45.0)                          // [lo, hi)
//! Triangular(min: 5.0, mode: 10.0, max: 40.0)
//! Exponential(mean: 20.0)
//! LogNormal(mean: 20.0, sd: 15.0)             // the mean and standard deviation of the value itself
//! Empirical([(5.0, 1.0), (10.0, 3.0), (30.0, 1.0)])   // (value, weight) pairs
//! ```
//!
//! Each is checked when the scenario loads ([`Dist::check`]); a draw never fails and is never negative.

use rand::Rng as _;
use rand_distr::Distribution as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Dist {
    /// Always this value.
    Fixed(f64),
    /// Uniform on `[lo, hi)` (`lo` when `hi <= lo`).
    Uniform(f64, f64),
    Triangular {
        min: f64,
        mode: f64,
        max: f64,
    },
    /// Exponential with this mean (the textbook queue's service time).
    Exponential {
        mean: f64,
    },
    /// Log-normal with this mean and standard deviation (of the value, not of its logarithm).
    LogNormal {
        mean: f64,
        sd: f64,
    },
    /// One of these values, with these relative weights (an empirical table).
    Empirical(Vec<(f64, f64)>),
}

impl Dist {
    /// What is wrong with the parameters, if anything (for the scenario's located errors).
    pub fn check(&self) -> Result<(), String> {
        let finite = |xs: &[f64]| xs.iter().all(|x| x.is_finite() && *x >= 0.0);
        match self {
            Dist::Fixed(x) if finite(&[*x]) => Ok(()),
            Dist::Fixed(x) => Err(format!("Fixed({x}): expected a finite value >= 0")),
            Dist::Uniform(lo, hi) if finite(&[*lo, *hi]) && lo <= hi => Ok(()),
            Dist::Uniform(lo, hi) => Err(format!("Uniform({lo}, {hi}): expected 0 <= lo <= hi")),
            Dist::Triangular { min, mode, max } if finite(&[*min, *mode, *max]) && min <= mode && mode <= max && min < max => Ok(()),
            Dist::Triangular { min, mode, max } => {
                Err(format!("Triangular(min: {min}, mode: {mode}, max: {max}): expected 0 <= min <= mode <= max, min < max"))
            }
            Dist::Exponential { mean } if finite(&[*mean]) && *mean > 0.0 => Ok(()),
            Dist::Exponential { mean } => Err(format!("Exponential(mean: {mean}): expected a mean > 0")),
            Dist::LogNormal { mean, sd } if finite(&[*mean, *sd]) && *mean > 0.0 && *sd > 0.0 => Ok(()),
            Dist::LogNormal { mean, sd } => Err(format!("LogNormal(mean: {mean}, sd: {sd}): expected mean > 0 and sd > 0")),
            Dist::Empirical(t) if t.is_empty() => Err("Empirical([]): expected at least one (value, weight)".into()),
            Dist::Empirical(t) => {
                if let Some((v, w)) = t.iter().find(|(v, w)| !finite(&[*v, *w])) {
                    return Err(format!("Empirical: ({v}, {w}): expected a value >= 0 and a weight >= 0"));
                }
                if t.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
                    return Err("Empirical: the weights sum to 0".into());
                }
                Ok(())
            }
        }
    }

    /// The mean of a draw.
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Fixed(x) => *x,
            Dist::Uniform(lo, hi) => {
                if hi > lo {
                    (lo + hi) / 2.0
                } else {
                    *lo
                }
            }
            Dist::Triangular { min, mode, max } => (min + mode + max) / 3.0,
            Dist::Exponential { mean } | Dist::LogNormal { mean, .. } => *mean,
            Dist::Empirical(t) => {
                let w: f64 = t.iter().map(|(_, w)| w).sum();
                t.iter().map(|(v, w)| v * w).sum::<f64>() / w
            }
        }
    }

    /// One draw (a parameter set [`Dist::check`] refuses gives a plain fallback, never a panic).
    pub fn sample(&self, rng: &mut crate::rng::Rng) -> f64 {
        let x = match self {
            Dist::Fixed(x) => *x,
            // As the twin has always drawn its uniform ranges, so that existing runs keep their streams.
            Dist::Uniform(lo, hi) => {
                if hi > lo {
                    rng.random_range(*lo..*hi)
                } else {
                    *lo
                }
            }
            Dist::Triangular { min, mode, max } => rand_distr::Triangular::new(*min, *max, *mode).map_or(*mode, |d| d.sample(rng)),
            Dist::Exponential { mean } => rand_distr::Exp::new(1.0 / mean).map_or(*mean, |d| d.sample(rng)),
            Dist::LogNormal { mean, sd } => {
                // The value's mean m and sd s: sigma^2 = ln(1 + s^2/m^2), mu = ln(m) - sigma^2/2.
                let sigma2 = (1.0 + (sd * sd) / (mean * mean)).ln();
                rand_distr::LogNormal::new(mean.ln() - sigma2 / 2.0, sigma2.sqrt()).map_or(*mean, |d| d.sample(rng))
            }
            Dist::Empirical(t) => match rand::distr::weighted::WeightedIndex::new(t.iter().map(|(_, w)| *w)) {
                Ok(d) => t[d.sample(rng)].0,
                Err(_) => self.mean(),
            },
        };
        if x.is_finite() { x.max(0.0) } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn mean_of(d: &Dist, n: usize) -> f64 {
        let mut rng = crate::rng::Rng::seed_from_u64(7);
        (0..n).map(|_| d.sample(&mut rng)).sum::<f64>() / n as f64
    }

    #[test]
    fn each_kind_reads_from_ron_checks_its_parameters_and_draws_its_mean() {
        let kinds = [
            "Fixed(10.0)",
            "Uniform(5.0, 45.0)",
            "Triangular(min: 5.0, mode: 10.0, max: 40.0)",
            "Exponential(mean: 20.0)",
            "LogNormal(mean: 20.0, sd: 15.0)",
            "Empirical([(5.0, 1.0), (10.0, 3.0), (30.0, 1.0)])",
        ];
        for text in kinds {
            let d: Dist = ron::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            d.check().unwrap();
            let (want, got) = (d.mean(), mean_of(&d, 200_000));
            assert!((got - want).abs() / want < 0.02, "{text}: drew a mean of {got}, expected {want}");
        }
        for bad in [
            "Fixed(-1.0)",
            "Uniform(45.0, 5.0)",
            "Triangular(min: 5.0, mode: 50.0, max: 40.0)",
            "Exponential(mean: 0.0)",
            "LogNormal(mean: 20.0, sd: 0.0)",
            "Empirical([])",
            "Empirical([(1.0, 0.0)])",
        ] {
            let d: Dist = ron::from_str(bad).unwrap();
            assert!(d.check().is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn uniform_draws_as_the_twin_always_did() {
        let mut a = crate::rng::Rng::seed_from_u64(3);
        let mut b = crate::rng::Rng::seed_from_u64(3);
        for _ in 0..100 {
            assert_eq!(Dist::Uniform(5.0, 45.0).sample(&mut a), crate::world::uniform(&mut b, (5.0, 45.0)));
        }
    }
}
