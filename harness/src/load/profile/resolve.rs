//! A profile file read and resolved into timed segments, with every problem named by its field; and the
//! schedule that spreads a stream's events over the segments.

use super::*;

/// A checked profile, with its files resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: PathBuf,
    pub profile: Profile,
    pub scenario: PathBuf,
    pub rules: PathBuf,
    pub policy: PathBuf,
    pub segments: Vec<Segment>,
}

impl Loaded {
    /// Seconds of load the profile asks for.
    pub fn seconds(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.start + s.seconds)
    }
}

/// Reads and checks a profile; every problem is reported at once.
pub fn load(file: &Path) -> Result<Loaded, DataErrors> {
    let profile: Profile = read_ron(file)?;
    resolve(file, profile)
}

pub fn resolve(file: &Path, profile: Profile) -> Result<Loaded, DataErrors> {
    let mut p = Problems::new(file);
    let ok_name = !profile.name.is_empty() && profile.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    p.check(ok_name, || "name".into(), || format!("expected letters, digits, '-' or '_' (it names a folder), got {:?}", profile.name));
    p.check(!profile.phases.is_empty(), || "phases".into(), || "expected at least one phase".into());
    let check_rate = |p: &mut Problems, field: String, r: Rate| {
        let (ok, what) = match r {
            Rate::Town(x) => (x.is_finite() && x > 0.0 && x <= MAX_TOWN_MULTIPLE, format!("a multiple of town time 0 < x <= {MAX_TOWN_MULTIPLE}")),
            Rate::PerSecond(x) => (x.is_finite() && x > 0.0 && x <= MAX_RATE, format!("events per second 0 < r <= {MAX_RATE}")),
        };
        p.check(ok, || field, || format!("expected {what}, got {}", r.value()));
    };
    let check_seconds = |p: &mut Problems, field: String, s: f64| {
        p.check(s.is_finite() && s > 0.0 && s <= 86_400.0, || field, || format!("expected seconds 0 < s <= 86400, got {s}"));
    };
    let mut segments = Vec::new();
    let mut start = 0.0;
    let mut push = |start: &mut f64, seconds: f64, from: Rate, to: Rate| {
        segments.push(Segment { start: *start, seconds, kind: from.kind(), r0: from.value(), r1: to.value() });
        *start += seconds;
    };
    for (i, ph) in profile.phases.iter().enumerate() {
        let f = |name: &str| format!("phases[{i}].{name}");
        match ph {
            Phase::Steady { rate, seconds } => {
                check_rate(&mut p, f("rate"), *rate);
                check_seconds(&mut p, f("seconds"), *seconds);
                push(&mut start, *seconds, *rate, *rate);
            }
            Phase::Ramp { from, to, seconds } => {
                check_rate(&mut p, f("from"), *from);
                check_rate(&mut p, f("to"), *to);
                check_seconds(&mut p, f("seconds"), *seconds);
                p.check(from.kind() == to.kind(), || f("to"), || format!("expected the same kind of rate as `from` ({from}), got {to}"));
                push(&mut start, *seconds, *from, *to);
            }
            Phase::Spike { base, peak, seconds, at, hold } => {
                check_rate(&mut p, f("base"), *base);
                check_rate(&mut p, f("peak"), *peak);
                check_seconds(&mut p, f("seconds"), *seconds);
                p.check(base.kind() == peak.kind(), || f("peak"), || format!("expected the same kind of rate as `base` ({base}), got {peak}"));
                let fits = at.is_finite() && hold.is_finite() && *at >= 0.0 && *hold > 0.0 && at + hold <= *seconds;
                p.check(fits, || f("hold"), || format!("expected 0 <= at and 0 < hold with at + hold <= seconds ({seconds}), got at {at}, hold {hold}"));
                if fits {
                    if *at > 0.0 {
                        push(&mut start, *at, *base, *base);
                    }
                    push(&mut start, *hold, *peak, *peak);
                    if seconds - at - hold > 0.0 {
                        push(&mut start, seconds - at - hold, *base, *base);
                    }
                }
            }
            Phase::Steps { rates, seconds_each } => {
                p.check(!rates.is_empty(), || f("rates"), || "expected at least one rate".into());
                check_seconds(&mut p, f("seconds_each"), *seconds_each);
                for (k, r) in rates.iter().enumerate() {
                    check_rate(&mut p, format!("phases[{i}].rates[{k}]"), *r);
                    push(&mut start, *seconds_each, *r, *r);
                }
            }
        }
    }
    let total: f64 = segments.iter().map(|s| s.seconds).sum();
    let limits = &profile.limits;
    p.check(
        limits.max_seconds.is_finite() && limits.max_seconds > 0.0 && limits.max_seconds <= 86_400.0,
        || "limits.max_seconds".into(),
        || format!("expected 0 < s <= 86400, got {}", limits.max_seconds),
    );
    p.check(
        limits.drain_seconds.is_finite() && limits.drain_seconds > 0.0 && limits.drain_seconds <= 3_600.0,
        || "limits.drain_seconds".into(),
        || format!("expected 0 < s <= 3600, got {}", limits.drain_seconds),
    );
    p.check((1..=200_000_000).contains(&limits.max_events), || "limits.max_events".into(), || format!("expected 1..=200000000, got {}", limits.max_events));
    p.check(total <= limits.max_seconds, || "phases".into(), || format!("the phases last {total} s, more than limits.max_seconds ({})", limits.max_seconds));
    // Events asked for by the count-based stretches (town-time stretches are bounded by the town's own rate).
    let counted: f64 = segments.iter().filter(|s| s.kind == Kind::Count).map(|s| s.total()).sum();
    p.check(
        counted <= limits.max_events as f64,
        || "phases".into(),
        || format!("the phases offer {counted:.0} events, more than limits.max_events ({}): an impossible or mistyped rate?", limits.max_events),
    );
    for (i, f) in profile.faults.iter().enumerate() {
        let ok = f.at().is_finite() && f.at() >= 0.0 && f.at() < total;
        p.check(ok, || format!("faults[{i}].at"), || format!("expected a time within the load, 0 <= at < {total} s, got {}", f.at()));
        let len = f.length();
        p.check(len.is_finite() && len > 0.0 && len <= 600.0, || format!("faults[{i}]"), || format!("expected a length 0 < s <= 600, got {len}"));
    }
    let slo = &profile.slo;
    let pos = |x: f64| x.is_finite() && x > 0.0;
    p.check(pos(slo.p99_ms), || "slo.p99_ms".into(), || format!("expected milliseconds > 0, got {}", slo.p99_ms));
    if let Some(x) = slo.p999_ms {
        p.check(pos(x) && x >= slo.p99_ms, || "slo.p999_ms".into(), || format!("expected milliseconds >= p99_ms ({}), got {x}", slo.p99_ms));
    }
    if let Some(x) = slo.recovery_s {
        p.check(pos(x), || "slo.recovery_s".into(), || format!("expected seconds > 0, got {x}"));
    }
    p.check(pos(slo.late_ms), || "slo.late_ms".into(), || format!("expected milliseconds > 0, got {}", slo.late_ms));
    p.check(pos(slo.generator_lag_p99_ms), || "slo.generator_lag_p99_ms".into(), || format!("expected milliseconds > 0, got {}", slo.generator_lag_p99_ms));
    if let Some(k) = &profile.find_max {
        p.check(
            k.from.is_finite() && k.from > 0.0 && k.from <= MAX_RATE,
            || "find_max.from".into(),
            || format!("expected events per second 0 < r <= {MAX_RATE}, got {}", k.from),
        );
        p.check(
            k.factor.is_finite() && k.factor > 1.0 && k.factor <= 10.0,
            || "find_max.factor".into(),
            || format!("expected 1 < factor <= 10, got {}", k.factor),
        );
        p.check(
            k.seconds.is_finite() && k.seconds >= 1.0 && k.seconds <= 3_600.0,
            || "find_max.seconds".into(),
            || format!("expected 1 <= s <= 3600, got {}", k.seconds),
        );
        p.check(
            k.resolution.is_finite() && k.resolution >= 0.005 && k.resolution < 1.0,
            || "find_max.resolution".into(),
            || format!("expected 0.005 <= resolution < 1 (0.05 for 5%), got {}", k.resolution),
        );
        p.check(
            k.max.is_finite() && k.max >= k.from && k.max <= MAX_RATE,
            || "find_max.max".into(),
            || format!("expected from ({}) <= max <= {MAX_RATE}, got {}", k.from, k.max),
        );
    }
    for (i, f) in profile.faults.iter().enumerate() {
        if matches!(f, Fault::ReconnectStorm { .. }) {
            p.check(profile.connections == Mode::Device, || format!("faults[{i}]"), || "a ReconnectStorm needs connections: Device".into());
        }
    }
    p.finish()?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let scenario = dir.join(&profile.scenario);
    let standard = crate::setup::CoreFiles::standard();
    let rules = profile.rules.as_ref().map_or(standard.rules, |r| dir.join(r));
    let policy = profile.policy.as_ref().map_or(standard.policy, |r| dir.join(r));
    Ok(Loaded { file: file.to_path_buf(), profile, scenario, rules, policy, segments })
}

/// The intended send instants of a stream of town events under a profile: `(event, seconds from the start)`,
/// in order, until the profile ends or the events or `max_events` run out. Decided before anything is sent, so
/// nothing the system under test does can move them.
pub fn schedule<M>(segments: &[Segment], events: impl IntoIterator<Item = M>, time_ms: impl Fn(&M) -> i64, max_events: u64) -> Vec<(M, f64)> {
    let mut out = Vec::new();
    let mut events = events.into_iter().peekable();
    for seg in segments {
        let mut k = 0u64;
        let first = match events.peek() {
            Some(m) => time_ms(m),
            None => break,
        };
        let total = seg.total();
        loop {
            if out.len() as u64 >= max_events {
                return out;
            }
            let Some(m) = events.peek() else { return out };
            let p = match seg.kind {
                Kind::Count => k as f64,
                Kind::Town => (time_ms(m) - first) as f64 / 1000.0,
            };
            if p >= total {
                break;
            }
            let w = seg.start + seg.when(p);
            if let Some(m) = events.next() {
                out.push((m, w));
            }
            k += 1;
        }
    }
    out
}

/// Seconds as a [`Duration`] (negative and non-finite ones as zero).
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}
