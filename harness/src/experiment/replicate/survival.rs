//! The Kaplan-Meier estimate for right-censored times (orders still open at the end of a run).

/// The Kaplan-Meier estimate of a survival function from (time, observed) pairs; `observed = false` is a
/// time censored there (still open at the end, or cancelled).
pub struct KaplanMeier {
    /// (time, S(t) just after t), at each observed time, increasing.
    steps: Vec<(f64, f64)>,
}

impl KaplanMeier {
    pub fn new(xs: &[(f64, bool)]) -> KaplanMeier {
        let mut v: Vec<(f64, bool)> = xs.iter().copied().filter(|(t, _)| t.is_finite()).collect();
        // At a tie, events before censorings (the usual convention).
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut at_risk = v.len() as f64;
        let mut s = 1.0;
        let mut steps = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let t = v[i].0;
            let (mut d, mut n) = (0.0, 0.0);
            while i < v.len() && v[i].0 == t {
                if v[i].1 {
                    d += 1.0;
                }
                n += 1.0;
                i += 1;
            }
            if d > 0.0 {
                s *= 1.0 - d / at_risk;
                steps.push((t, s));
            }
            at_risk -= n;
        }
        KaplanMeier { steps }
    }

    /// S(t): the share still open after `t`.
    pub fn survival(&self, t: f64) -> f64 {
        self.steps.iter().take_while(|(x, _)| *x <= t).last().map_or(1.0, |s| s.1)
    }

    /// The smallest time by which a share `q` has closed, if the estimate gets that far.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.steps.iter().find(|(_, s)| *s <= 1.0 - q + 1e-12).map(|s| s.0)
    }

    /// The area under S up to `horizon`: the mean time, with every time cut at the horizon.
    pub fn restricted_mean(&self, horizon: f64) -> f64 {
        let (mut area, mut last_t, mut last_s) = (0.0, 0.0, 1.0);
        for &(t, s) in &self.steps {
            if t >= horizon {
                break;
            }
            area += last_s * (t - last_t);
            last_t = t;
            last_s = s;
        }
        area + last_s * (horizon - last_t)
    }
}
