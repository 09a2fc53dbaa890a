//! The statistics planners' experiments report: a mean with its 95% confidence interval over independent
//! replications (Student t), the paired difference of two variants run on common random numbers, and the
//! MSER-5 truncation point for removing a warm-up from a time series.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A mean over replications with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub sd: f64,
    /// Half-width of the interval: t(1 - a/2, n - 1) * sd / sqrt(n). NaN with fewer than 2 values.
    pub half_width: f64,
    pub level: f64,
}

impl Interval {
    /// The `level` (0.95) interval for the mean of `xs`, independent replications.
    pub fn of(xs: &[f64], level: f64) -> Interval {
        let n = xs.len();
        let mean = if n > 0 { xs.iter().sum::<f64>() / n as f64 } else { f64::NAN };
        if n < 2 {
            return Interval { n, mean, sd: f64::NAN, half_width: f64::NAN, level };
        }
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).map_or(f64::NAN, |d| d.inverse_cdf(1.0 - (1.0 - level) / 2.0));
        Interval { n, mean, sd, half_width: t * sd / (n as f64).sqrt(), level }
    }

    pub fn low(&self) -> f64 {
        self.mean - self.half_width
    }

    pub fn high(&self) -> f64 {
        self.mean + self.half_width
    }

    /// Whether the interval holds 0: for a difference, "no difference detected".
    pub fn holds_zero(&self) -> bool {
        self.low() <= 0.0 && 0.0 <= self.high()
    }

    /// Half-width relative to the mean (the precision a replication count is chosen for).
    pub fn relative_precision(&self) -> f64 {
        self.half_width / self.mean.abs()
    }
}

/// The paired difference `b - a` over replications that share their random numbers (replication k of
/// each variant sees the same incidents): the interval of the per-replication differences.
pub fn paired_difference(a: &[f64], b: &[f64], level: f64) -> Option<Interval> {
    (a.len() == b.len()).then(|| Interval::of(&a.iter().zip(b).map(|(x, y)| y - x).collect::<Vec<_>>(), level))
}

/// MSER-5 (White 1997): batch the series in means of 5, and truncate the first d batches where d
/// minimises the marginal standard error of what remains, sum((y - mean)^2) / (n - d)^2, over the first
/// half. Returns how many original observations to drop (a multiple of 5).
pub fn mser5(series: &[f64]) -> usize {
    let batches: Vec<f64> = series.chunks_exact(5).map(|c| c.iter().sum::<f64>() / 5.0).collect();
    let n = batches.len();
    if n < 4 {
        return 0;
    }
    let (mut best, mut best_d) = (f64::INFINITY, 0);
    for d in 0..=n / 2 {
        let rest = &batches[d..];
        let m = rest.iter().sum::<f64>() / rest.len() as f64;
        let se = rest.iter().map(|y| (y - m).powi(2)).sum::<f64>() / (rest.len() as f64).powi(2);
        if se < best {
            (best, best_d) = (se, d);
        }
    }
    best_d * 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_matches_a_hand_computed_case() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample variance 32/7, sd 2.13809; t(0.975, 7) = 2.364624;
        // half-width 2.364624 * 2.13809 / sqrt(8) = 1.787485.
        let i = Interval::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], 0.95);
        assert_eq!(i.n, 8);
        assert!((i.mean - 5.0).abs() < 1e-12);
        assert!((i.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert!((i.half_width - 1.787485).abs() < 1e-5, "{}", i.half_width);
        assert!(!i.holds_zero());
        assert!(Interval::of(&[1.0], 0.95).half_width.is_nan(), "one replication has no interval");
    }

    #[test]
    fn a_paired_difference_removes_what_the_variants_share() {
        // The replications differ a lot from each other, the variants by about 1 in each: unpaired the
        // intervals overlap, paired the difference is clearly not 0.
        let a = [10.0, 20.0, 30.0, 40.0, 50.0];
        let b = [11.0, 21.2, 30.9, 41.1, 50.8];
        let (ia, ib) = (Interval::of(&a, 0.95), Interval::of(&b, 0.95));
        assert!(ia.high() > ib.low(), "unpaired, the intervals overlap");
        let d = paired_difference(&a, &b, 0.95).unwrap();
        assert!((d.mean - 1.0).abs() < 1e-9 && !d.holds_zero(), "{d:?}");
        let same = paired_difference(&a, &[10.1, 19.9, 30.0, 40.2, 49.8], 0.95).unwrap();
        assert!(same.holds_zero(), "no difference detected: {same:?}");
        assert!(paired_difference(&a, &b[..3], 0.95).is_none());
    }

    #[test]
    fn mser5_cuts_a_warm_up_and_leaves_a_steady_series_alone() {
        // A backlog that climbs for 50 observations and then wanders about 100.
        let mut series: Vec<f64> = (0..50).map(|i| 2.0 * i as f64).collect();
        series.extend((0..200).map(|i| 100.0 + ((i * 37) % 11) as f64 - 5.0));
        let cut = mser5(&series);
        assert!((45..=125).contains(&cut), "the whole climb and at most half the series: {cut}");
        let steady: Vec<f64> = (0..200).map(|i| 100.0 + ((i * 37) % 11) as f64 - 5.0).collect();
        assert!(mser5(&steady) <= steady.len() / 4, "a steady series keeps most of itself: {}", mser5(&steady));
    }
}
