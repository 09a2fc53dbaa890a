//! Percentiles, in one place: every distribution the harness reports (closure times, detection delays,
//! ingest latency) goes through an HdrHistogram with three significant digits, so a p99 means the same
//! thing in every table.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A distribution's summary, in the unit it was recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Collects non-negative integer samples (milliseconds, microseconds: the caller's unit).
#[derive(Debug, Clone)]
pub struct Recorder(Histogram<u64>);

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        // Three significant digits, growing as needed: no sample is ever out of range.
        Recorder(Histogram::new(3).expect("3 significant digits is a valid HdrHistogram precision"))
    }

    /// Records one sample; negative ones count as 0. The histogram grows to take any value (a value it
    /// could not grow to, past 2^63, is recorded as its largest).
    pub fn record(&mut self, v: i64) {
        let v = v.max(0) as u64;
        if self.0.record(v).is_err() {
            self.0.saturating_record(v);
        }
    }

    /// A recorder holding `h`'s samples.
    pub fn from_histogram(h: Histogram<u64>) -> Recorder {
        Recorder(h)
    }

    /// Adds another histogram's samples (a generator's, say): the merged percentiles are those of every
    /// sample, never an average of percentiles.
    pub fn add(&mut self, other: &Histogram<u64>) {
        if self.0.add(other).is_err() {
            for v in other.iter_recorded() {
                let _ = self.0.record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// The histogram itself (for interval logs and percentile spectra).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.0
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The summary scaled by `1 / per` (e.g. `per` = 3,600,000 turns milliseconds into hours); `None`
    /// when nothing was recorded.
    pub fn summary(&self, per: f64) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        let q = |x: f64| self.0.value_at_quantile(x) as f64 / per;
        Some(Percentiles { count: self.0.len(), mean: self.0.mean() / per, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: self.0.max() as f64 / per })
    }
}

impl FromIterator<i64> for Recorder {
    fn from_iter<I: IntoIterator<Item = i64>>(it: I) -> Recorder {
        let mut r = Recorder::new();
        for v in it {
            r.record(v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let r: Recorder = (1..=1000).collect();
        let p = r.summary(1.0).unwrap();
        assert_eq!(p.count, 1000);
        assert!((p.mean - 500.5).abs() < 0.5, "{p:?}");
        assert!((p.p50 - 500.0).abs() <= 1.0 && (p.p90 - 900.0).abs() <= 1.0 && (p.p99 - 990.0).abs() <= 1.0, "{p:?}");
        assert_eq!(p.max, 1000.0);
        assert!(Recorder::new().summary(1.0).is_none());
        let hours = [3_600_000i64, 7_200_000].into_iter().collect::<Recorder>().summary(3_600_000.0).unwrap();
        assert!((hours.max - 2.0).abs() < 0.01, "{hours:?}");
    }
}
