//! The model against queueing theory: one crew set up as the textbook M/M/c queue and checked against
//! Erlang C through the whole experiment machinery (twin, 12345 line, core, responders, KPIs, intervals).
//!
//! Jobs of the synthetic kind arrive as a Poisson process at a constant rate (exponential gaps in
//! continuous time) and are reported at once through the 12345 line; the core's only rule opens one order
//! per job (every job its own subject: nothing merges) for the task force, whose c members notice at once,
//! need no travel, work an exponential time and never fail, under a policy that never escalates. The
//! crew's mean wait in its queue (from the tick a job joined it to its acceptance) must match Erlang C's
//! Wq within the experiment's 95% interval, at utilisations 0.5 and 0.8.
//!
//! Time resolution: the twin acts at one-minute ticks. A job reaches the crew at the first tick after it
//! arrives (the wait is measured from there, as the crew's queue sees it); a service is rounded to whole
//! minutes (rounding keeps its mean: for an exponential of mean m, off by about 1/(12 m)), and a step of no
//! duration takes no tick. Before those two, services were cut to their whole minutes (half a minute
//! short on average) and a zero travel still cost a tick.

use std::path::{Path, PathBuf};

use towntwin_harness::experiment::{Options, run};

const C: u32 = 4;
const MEAN_SERVICE: f64 = 30.0;

/// Erlang C's mean wait in queue for c servers, arrival rate `lambda` and mean service `m` (same unit).
fn erlang_c_wait(c: u32, lambda: f64, m: f64) -> f64 {
    let a = lambda * m;
    let mut term = 1.0;
    let mut sum = 0.0;
    for k in 0..c {
        if k > 0 {
            term *= a / k as f64;
        }
        sum += term;
    }
    let top = term * a / c as f64 * c as f64 / (c as f64 - a);
    let p_wait = top / (sum + top);
    p_wait * m / (c as f64 - a)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn a_crew_set_up_as_m_m_c_waits_as_erlang_c_says() {
    // The hand check of the formula: c = 2, a = 1 erlang: C = (1/2 * 2) / (1 + 1 + 1) = 1/3; Wq = C m / (c - a).
    assert!((erlang_c_wait(2, 1.0, 1.0) - 1.0 / 3.0).abs() < 1e-12);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("town.ron"), towntwin_sim::generate::to_ron(&towntwin_sim::generate::small(7, 2, 1))).unwrap();
    write(
        d,
        "rules.ron",
        r#"(version: 1, window: (ahead_minutes: 10, behind_hours: 24), rules: [
            (id: "hotline", title: "job", service: "jobs", targets: [TaskForce], kind: Hotline, detects: (kinds: ["synthetic.job"], by: Subject)),
        ])"#,
    );
    // Never escalates: no deadlines, no escalation on failure or reopening (the upper loops name the task
    // force only because a policy must say who takes them).
    let level = |l: &str| {
        let targets = if l == "Small" { "[]" } else { "[TaskForce]" };
        format!(
            "(level: {l}, targets: {targets}, accept_within_minutes: None, resolve_within_hours: None, escalate_on_fail: false, escalate_after_reopens: None)"
        )
    };
    write(
        d,
        "never.ron",
        &format!(
            r#"(name: "never", version: 1, description: "no escalation", levels: [{}, {}, {}], whistle_to: Medium)"#,
            level("Small"),
            level("Medium"),
            level("Large")
        ),
    );
    // Utilisation rho = lambda m / c: jobs an hour = rho c 60 / m.
    let rates = [0.5, 0.8].map(|rho| rho * C as f64 * 60.0 / MEAN_SERVICE);
    for (rho, per_hour) in [0.5, 0.8].iter().zip(rates) {
        write(
            d,
            &format!("mmc-{}.ron", (rho * 100.0) as u32),
            &format!(
                r#"(name: "mmc", seed: 1, start_date: "2026-03-02", days: 1, town: "town.ron",
                    hotline: (patience: {{}}),
                    response: (effects: {{"synthetic.job": (ends: 1.0)}}),
                    synthetic: (per_hour: {per_hour}),
                    responders: (
                        task_force: (shifts: [(hours: None, headcount: {C})], notice_minutes: Fixed(0.0), travel_minutes: Fixed(0.0), work_minutes: Exponential(mean: {MEAN_SERVICE}), fail_share: 0.0),
                        reopen_share: 0.0,
                    ),
                )"#
            ),
        );
    }
    let experiment = write(
        d,
        "mmc.ron",
        r#"(name: "mmc", scenario: "mmc-50.ron", rules: Some("rules.ron"), days: 21, warmup_days: 1, seed: 5, replications: Fixed(12), variants: [
                (name: "rho-50", scenario: Some("mmc-50.ron"), policy: "never.ron"),
                (name: "rho-80", scenario: Some("mmc-80.ron"), policy: "never.ron"),
            ])"#,
    );
    let out = d.join("out");
    let done = run(&Options { file: experiment, out: Some(out.clone()), jobs: Some(2), shard: None, progress: false }).unwrap();
    let s = done.summary.expect("analysed");
    let row = s.kpi("queue_wait_minutes_mean/task_force").expect("the task force's queue waits");
    for ((variant, rho), per_hour) in ["rho-50", "rho-80"].iter().zip([0.5, 0.8]).zip(rates) {
        let i = row.by_variant[*variant];
        let theory = erlang_c_wait(C, per_hour / 60.0, MEAN_SERVICE);
        let busy = s.kpi("utilisation/task_force").unwrap().by_variant[*variant];
        println!(
            "rho {rho}: utilisation {:.3} ± {:.3}; Wq {:.2} ± {:.2} min over {} replications; Erlang C {:.2} min",
            busy.mean, busy.half_width, i.mean, i.half_width, i.n, theory
        );
        assert!((busy.mean - rho).abs() < 0.03, "utilisation {} for rho {rho}", busy.mean);
        assert!((i.mean - theory).abs() <= i.half_width, "rho {rho}: Wq {:.2} ± {:.2} min does not hold Erlang C's {theory:.2}", i.mean, i.half_width);
        // The interval is tight enough to mean something.
        assert!(i.half_width < 0.3 * theory, "rho {rho}: the interval ± {:.2} is too wide against {theory:.2}", i.half_width);
    }
    // The checks hold for a stationary queue: Little's law for the crew's line, conservation.
    for c in s.checks.iter().filter(|c| c.name == "little/task_force" || c.name == "conservation") {
        assert!(c.pass, "{} ({}): {}", c.name, c.variant, c.detail);
    }
}
