//! `towntwin load PROFILE --find-max`: the highest steady rate at which the whole chain (generator, broker,
//! core as deployed) holds the profile's SLO, and what broke first above it; beside it, the broker's raw
//! ceiling measured in the same run, so the core's share of what the broker could carry is known.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::profile::{FindMax, Kind, Loaded, Phase, Rate, Segment};
use super::{Summary, check_broker, run_loaded};

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub rate: f64,
    pub holds: bool,
    pub valid: bool,
    /// The first SLO line that failed, or why the run was invalid.
    pub broke: Option<String>,
    pub p99_ms: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub core_per_second: f64,
    pub core_cpu_max: f64,
    pub broker_cpu_max: Option<f64>,
    pub generator_cpu_max: f64,
    pub dir: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Knee {
    pub profile: String,
    pub search: FindMax,
    pub trials: Vec<Trial>,
    pub highest_holding: Option<f64>,
    /// What broke first at the lowest rate that did not hold.
    pub first_break: Option<String>,
    /// The broker's raw ceiling, QoS 0 messages of 400 bytes a second through it (one publisher, one
    /// subscriber), measured after the trials on the same broker.
    pub broker_ceiling_per_second: Option<f64>,
    pub ratio_to_ceiling: Option<f64>,
}

fn trial_of(s: &Summary, rate: f64, dir: &Path) -> Trial {
    let broke = if !s.valid {
        s.invalid_reason.clone().map(|r| format!("invalid: {r}"))
    } else {
        s.checks.iter().find(|c| !c.pass).map(|c| format!("{}: {} (target {})", c.what, c.measured, c.target))
    };
    Trial {
        rate,
        holds: s.valid && s.slo_pass,
        valid: s.valid,
        broke,
        p99_ms: s.latency_ms.p99,
        lost: s.lost,
        duplicated: s.duplicated,
        core_per_second: s.core_per_second,
        core_cpu_max: s.core_cpu_max,
        broker_cpu_max: s.broker_cpu_max,
        generator_cpu_max: s.generator_cpu_max,
        dir: dir.display().to_string(),
    }
}

/// Searches; writes `knee.json` and `knee.md` in `out` and each trial's full report in `out/rate-N/`.
pub fn find_max(loaded: &Loaded, broker: Option<&str>, out: &Path) -> Result<Knee> {
    let ep = check_broker(loaded, broker)?;
    crate::results::claim(out, "a load run")?;
    let search = loaded.profile.find_max.clone().unwrap_or_default();
    let mut trials: Vec<Trial> = Vec::new();
    let run_at = |rate: f64, trials: &mut Vec<Trial>| -> Result<bool> {
        let rate = rate.round();
        let mut l = loaded.clone();
        l.profile.phases = vec![Phase::Steady { rate: Rate::PerSecond(rate), seconds: search.seconds }];
        l.profile.faults.clear();
        l.segments = vec![Segment { start: 0.0, seconds: search.seconds, kind: Kind::Count, r0: rate, r1: rate }];
        let dir = out.join(format!("rate-{rate}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        eprintln!("find-max: {rate} events/s for {} s ...", search.seconds);
        let s = run_loaded(&l, ep.clone(), &dir)?;
        // The trial's store (hundreds of megabytes at these rates) has been read into its report: removed, so
        // that a search of a dozen trials does not fill the disk.
        for f in ["core.db", "core.db-wal", "core.db-shm"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let t = trial_of(&s, rate, &dir);
        eprintln!("find-max: {rate} events/s {}", if t.holds { "holds".to_string() } else { format!("does not hold: {}", t.broke.as_deref().unwrap_or("?")) });
        let holds = t.holds;
        trials.push(t);
        Ok(holds)
    };
    let (mut lo, mut hi) = (None::<f64>, None::<f64>);
    let mut r = search.from;
    while r <= search.max {
        if run_at(r, &mut trials)? {
            lo = Some(r);
            r *= search.factor;
        } else {
            hi = Some(r);
            break;
        }
    }
    if let (Some(mut a), Some(mut b)) = (lo, hi) {
        while (b - a) / a > search.resolution {
            let m = (a + b) / 2.0;
            if run_at(m, &mut trials)? {
                a = m;
            } else {
                b = m;
            }
        }
    }
    let highest = trials.iter().filter(|t| t.holds).map(|t| t.rate).fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let first_break = trials.iter().filter(|t| !t.holds).min_by(|a, b| a.rate.total_cmp(&b.rate)).and_then(|t| t.broke.clone());
    let ceiling = measure_ceiling(&ep).map_err(|e| tracing::warn!("the broker's ceiling could not be measured: {e:#}")).ok();
    let knee = Knee {
        profile: loaded.profile.name.clone(),
        search,
        ratio_to_ceiling: match (highest, ceiling) {
            (Some(h), Some(c)) if c > 0.0 => Some(h / c),
            _ => None,
        },
        trials,
        highest_holding: highest,
        first_break,
        broker_ceiling_per_second: ceiling,
    };
    std::fs::write(out.join("knee.json"), serde_json::to_vec_pretty(&knee)?).with_context(|| format!("cannot write {}/knee.json", out.display()))?;
    std::fs::write(out.join("knee.md"), render(&knee)).with_context(|| format!("cannot write {}/knee.md", out.display()))?;
    Ok(knee)
}

/// The raw ceiling of the broker the trials used (the embedded one started afresh as its own process).
fn measure_ceiling(ep: &crate::broker::Endpoint) -> Result<f64> {
    let (started, ep) = if ep.embedded {
        let (p, ep) = super::procs::start_broker()?;
        (Some(p), ep)
    } else {
        (None, ep.clone())
    };
    let rt = crate::runtime()?;
    let c = rt.block_on(crate::ceiling::measure(&ep, 200_000, 400))?;
    drop(started);
    Ok(c.delivered_per_second)
}

pub fn render(k: &Knee) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Knee search `{}`\n", k.profile);
    let _ = writeln!(
        o,
        "Steady trials of {} s from {} events/s, x{} a step, then halving to {:.0}%.\n",
        k.search.seconds,
        k.search.from,
        k.search.factor,
        k.search.resolution * 100.0
    );
    let _ = writeln!(
        o,
        "| events/s | holds | p99 ms | lost | duplicated | core events/s | core CPU | broker CPU | generator CPU | what broke |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut sorted = k.trials.clone();
    sorted.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    for t in &sorted {
        let _ = writeln!(
            o,
            "| {:.0} | {} | {:.1} | {} | {} | {:.0} | {:.2} | {} | {:.2} | {} |",
            t.rate,
            if t.holds { "yes" } else { "no" },
            t.p99_ms,
            t.lost,
            t.duplicated,
            t.core_per_second,
            t.core_cpu_max,
            t.broker_cpu_max.map_or("-".into(), |c| format!("{c:.2}")),
            t.generator_cpu_max,
            t.broke.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(o, "\nHighest rate that held: {}", k.highest_holding.map_or("none".into(), |r| format!("{r:.0} events/s")));
    if let Some(b) = &k.first_break {
        let _ = writeln!(o, "What broke first above it: {b}");
    }
    if let Some(c) = k.broker_ceiling_per_second {
        let _ = writeln!(o, "Broker's raw ceiling (QoS 0, 400 B, same broker, same run): {c:.0} messages/s");
    }
    if let Some(r) = k.ratio_to_ceiling {
        let _ = writeln!(o, "Whole chain / broker ceiling: {r:.2}");
    }
    o
}
