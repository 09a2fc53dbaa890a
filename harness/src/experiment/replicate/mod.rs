//! One replication of one variant: the twin, its responders and the core in one thread, in lockstep, with
//! no network and (by default) no store, measured into KPIs after the warm-up.
//!
//! The loop is the [runner's](crate::runner), inline on this thread, with the core in process
//! ([`crate::runner::link::InProcess`]) taking the twin's events typed; the [`Measures`] hooks keep the
//! transitions and the hourly measures. The core is the same [`Core`] a town deploys; without a store it
//! keeps its dedup ids in memory for as long as its time window could let a duplicate in.
//! `replicate_with_store` runs the same with the SQLite store and the encoded events, for the test that
//! both give the same orders and histories.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use towntwin_core::orders::{Loop, Notice, OrderEvent, State};
use towntwin_core::service::Core;
use towntwin_core::time::{DAY, HOUR, Millis};
use towntwin_sim::Incident;
use towntwin_sim::{CrewStats, ResponderStats};
use towntwin_sim::{Twin, TwinOptions};

use super::spec::{Plan, Resolved};
use crate::detect;
use crate::runner::link::{CoreLink, InProcess};
use crate::runner::{self, Drive, Flow, Hooks, TwinSide};

mod measure;
mod survival;

use measure::Measure;
pub use survival::KaplanMeier;

/// What one replication measured, written as `replications/<variant>/rep-<k>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Replication {
    pub variant: String,
    /// 0-based replication number; its seed is the same in every variant.
    pub k: u32,
    pub seed: u64,
    pub fingerprint: String,
    /// Every KPI by name (`group/name` for per-crew, per-kind and per-rule ones); a KPI that has no value
    /// in this replication (a median of nothing) is absent.
    pub kpis: BTreeMap<String, f64>,
    /// Open orders at the end of every hour of the run, warm-up included (`window_hour` says where the
    /// measured window starts).
    pub backlog_hourly: Vec<u32>,
    pub window_hour: usize,
    /// Hours from creation to closing of the orders created and closed in the window, by the loop they
    /// closed in (for the CDF plot).
    pub close_hours_by_loop: BTreeMap<String, Spread>,
    /// The crews' counts over the window.
    pub crews: BTreeMap<String, CrewStats>,
    pub checks: Checks,
    /// BLAKE3 of the ground-truth incidents' kinds, places and starts as they were created, at the end of
    /// every hour of the run, less those deploying the platform changes by itself
    /// ([`towntwin_sim::scenario::changed_by_deployment`]): the same in every variant of a replication until
    /// a response changes the town (common random numbers).
    pub incidents_digest_hourly: Vec<String>,
    /// When a response first ended an incident that `incidents_digest_hourly` covers (see
    /// `ResponderStats::first_answer_ms`).
    pub first_answer_ms: Option<Millis>,
    pub events: u64,
    pub wall_seconds: f64,
}

/// A sample kept as its size and its percentiles 0, 1, ..., 100 (nearest rank).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub n: u64,
    pub percentiles: Vec<f32>,
}

impl Spread {
    pub fn of(mut xs: Vec<f32>) -> Spread {
        xs.sort_by(f32::total_cmp);
        let n = xs.len();
        let percentiles = if n == 0 { Vec::new() } else { (0..=100).map(|p| xs[((p * (n - 1)) as f64 / 100.0).round() as usize]).collect() };
        Spread { n: n as u64, percentiles }
    }
}

/// The checks every replication runs on itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checks {
    /// Orders created (counted from the transitions as they happened) = closed + cancelled + open by state
    /// (counted from the orders at the end).
    pub created: u64,
    pub closed: u64,
    pub cancelled: u64,
    pub open_by_state: BTreeMap<String, u64>,
    pub conservation_holds: bool,
    /// Little's law per crew's waiting line over the window: L (mean queue length), lambda (joins per
    /// minute), W (mean minutes waited by those that left) and |L - lambda W| / L.
    pub little: BTreeMap<String, Little>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Little {
    pub l: f64,
    pub lambda_per_minute: f64,
    pub w_minutes: f64,
    pub relative_error: f64,
}

/// Runs replication `k` of variant `vi` without a store.
pub fn replicate(plan: &Plan, vi: usize, k: u32) -> Result<Replication> {
    Ok(run(plan, vi, k, None, false)?.0)
}

/// The same with the core's store at `db` (a SQLite file or a PostgreSQL schema), returning the core too
/// (for the equivalence tests).
/// Every transition is kept whole and returned (a replication alone keeps only what it measures).
pub fn replicate_with_store(plan: &Plan, vi: usize, k: u32, db: Option<&towntwin_core::store::Location>) -> Result<(Replication, Core, Vec<OrderEvent>)> {
    run(plan, vi, k, db, true)
}

/// What the measures need of a transition: a whole [`OrderEvent`] was some 250 bytes with its strings, and
/// a replication makes about 29,000 a town day (over half of a 35-day replication's memory).
#[derive(Debug, Clone, Copy)]
struct Step {
    order: u64,
    at: Millis,
    from: Option<State>,
    to: State,
    level: Loop,
}

/// What a replication keeps as it goes, on the twin's side of the runner.
struct Measures {
    start: Millis,
    window: Millis,
    /// Every transition, in the order the core made them, as the measures need it.
    steps: Vec<Step>,
    /// The same whole, when asked for ([`replicate_with_store`]).
    history: Option<Vec<OrderEvent>>,
    /// Orders open now (not closed or cancelled), kept from the transitions.
    open: i64,
    backlog_hourly: Vec<u32>,
    at_window: Option<ResponderStats>,
    digest: blake3::Hasher,
    digested: usize,
    incidents_digest_hourly: Vec<String>,
}

impl Hooks for Measures {
    fn before(&mut self, _: &mut Twin, _: Millis) -> Flow {
        // Nothing to pace: the replication runs flat out.
        Flow::Go { paced: false }
    }

    fn answered(&mut self, _: &Twin, notices: &[Notice]) {
        for n in notices {
            let e = &n.event;
            let was = e.from.is_some_and(State::is_open);
            self.open += i64::from(e.to.is_open()) - i64::from(was);
            self.steps.push(Step { order: e.order, at: e.at, from: e.from, to: e.to, level: e.level });
            if let Some(h) = &mut self.history {
                h.push(e.clone());
            }
        }
    }

    fn after(&mut self, twin: &Twin, end: Millis) {
        // The tick that just ran covered [end - 1 min, end).
        if (end - self.start) % HOUR == 0 {
            self.backlog_hourly.push(self.open.max(0) as u32);
            let truth = &twin.incidents();
            // Less what deploying the platform changes by itself (shared parking, the elevator detectors):
            // the rest is the same in every variant until a response changes the town.
            for i in truth[self.digested..].iter().filter(|i| !towntwin_sim::scenario::changed_by_deployment(i.kind, &i.subject)) {
                // Not the id: it numbers incidents in the order they came, those left out included.
                self.digest.update(format!("{}|{}|{}|{}\n", i.kind, i.area, i.subject, i.start_ms).as_bytes());
            }
            self.digested = truth.len();
            self.incidents_digest_hourly.push(self.digest.clone().finalize().to_hex()[..16].to_string());
        }
        if end == self.window {
            self.at_window = Some(twin.responder_stats().clone());
        }
    }
}

fn run(plan: &Plan, vi: usize, k: u32, db: Option<&towntwin_core::store::Location>, whole: bool) -> Result<(Replication, Core, Vec<OrderEvent>)> {
    let wall = Instant::now();
    let v: &Resolved = &plan.variants[vi];
    let mut scenario = v.scenario.clone();
    scenario.seed = plan.seed_of(k);
    let core = Core::open(v.rules.clone(), v.policy.clone(), &v.town, db).with_context(|| format!("variant {}: the core could not open", v.name))?;
    // Without a store the core takes the twin's events typed, as they are before encoding: the same rules
    // and orders (the equivalence test runs one replication both ways), without JSON in between.
    let typed = db.is_none();
    let window = plan.window_start(v);
    let measures = Measures {
        start: v.start,
        window,
        steps: Vec::new(),
        history: whole.then(Vec::new),
        open: 0,
        backlog_hourly: Vec::with_capacity(scenario.days as usize * 24),
        at_window: None,
        digest: blake3::Hasher::new(),
        digested: 0,
        incidents_digest_hourly: Vec::new(),
    };
    let (start, town, targets, sc) = (v.start, (*v.town).clone(), detect::rule_targets(&v.rules, &v.policy), scenario.clone());
    let make = move || {
        let mut twin = Twin::new(&sc, start, town, TwinOptions { threads: Some(1), typed, ..TwinOptions::default() });
        twin.set_rule_targets(targets);
        TwinSide::new(twin, start, typed, measures)
    };
    let mut link = InProcess::new(core)?;
    // Nothing here waits: the in-process core answers at once, so the runtime is only the loop's frame.
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let driven = rt.block_on(runner::drive(make, &mut link, Drive { threaded: false, lockstep: true, publisher: None, throttle: None }))?;
    let core = rt.block_on(link.finish(0, 0))?.map(|o| o.core).ok_or_else(|| anyhow!("the in-process core did not hand itself back"))?;
    let Measures { steps, history, backlog_hourly, at_window, incidents_digest_hourly, .. } = driven.hooks;
    let report = driven.twin;
    let end = report.end;
    let crews = match &at_window {
        Some(w) => report.responders.since(w),
        None => report.responders.clone(),
    };
    let incidents = report.incidents;
    let events = report.stats.total;
    let m = Measure { plan, v, core: &core, history: &steps, incidents: &incidents, window, end, crews: &crews };
    let (mut kpis, close_hours_by_loop) = m.kpis();
    let checks = m.checks();
    let window_hour = (plan.spec.warmup_days * 24) as usize;
    let measured = &backlog_hourly[window_hour.min(backlog_hourly.len())..];
    if !measured.is_empty() {
        kpis.insert("backlog_mean".into(), measured.iter().map(|&x| x as f64).sum::<f64>() / measured.len() as f64);
    }
    // The trend of the open backlog at each midnight of the window (orders per day): a steady state has none.
    let midnights: Vec<f64> = measured.iter().skip(23).step_by(24).map(|&x| x as f64).collect();
    if midnights.len() >= 2 {
        kpis.insert("backlog_slope_per_day".into(), slope(&midnights));
    }
    let close_hours_by_loop = close_hours_by_loop.into_iter().map(|(k, v)| (k, Spread::of(v))).collect();
    let rep = Replication {
        variant: v.name.clone(),
        k,
        seed: scenario.seed,
        fingerprint: plan.fingerprint.clone(),
        kpis,
        backlog_hourly,
        window_hour,
        close_hours_by_loop,
        crews: crews.by_crew,
        checks,
        incidents_digest_hourly,
        first_answer_ms: report.responders.first_answer_ms,
        events,
        wall_seconds: wall.elapsed().as_secs_f64(),
    };
    Ok((rep, core, history.unwrap_or_default()))
}

/// The least-squares slope of `ys` against 0, 1, 2, ...
pub fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = ys.iter().enumerate().map(|(i, y)| (i as f64 - mx) * (y - my)).sum();
    let sxx: f64 = (0..ys.len()).map(|i| (i as f64 - mx).powi(2)).sum();
    sxy / sxx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaplan_meier_against_a_hand_computed_case() {
        // Times 1, 2+, 3, 3, 4+, 5: S(1) = 5/6; at 3, 2 events among 4 at risk: S = 5/6 * 2/4 = 5/12; at 5,
        // 1 of 1: S = 0.
        let km = KaplanMeier::new(&[(1.0, true), (2.0, false), (3.0, true), (3.0, true), (4.0, false), (5.0, true)]);
        assert!((km.survival(0.5) - 1.0).abs() < 1e-12);
        assert!((km.survival(2.5) - 5.0 / 6.0).abs() < 1e-12);
        assert!((km.survival(3.0) - 5.0 / 12.0).abs() < 1e-12);
        assert_eq!(km.survival(6.0), 0.0);
        assert_eq!(km.quantile(0.5), Some(3.0));
        // Area: 1*1 + 5/6*2 + 5/12*2 = 1 + 5/3 + 5/6 = 3.5.
        assert!((km.restricted_mean(5.0) - 3.5).abs() < 1e-12);
        assert!((km.restricted_mean(2.0) - (1.0 + 5.0 / 6.0)).abs() < 1e-12);
        // Without censoring it is the plain mean.
        let km = KaplanMeier::new(&[(1.0, true), (2.0, true), (6.0, true)]);
        assert!((km.restricted_mean(10.0) - 3.0).abs() < 1e-12);
    }
}
