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
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use towntwin_core::orders::{Loop, Notice, OrderEvent, State};
use towntwin_core::service::Core;
use towntwin_core::time::{DAY, HOUR, Millis};
use towntwin_sim::plugins::responders::{CrewStats, ResponderStats};
use towntwin_sim::world::Incident;
use towntwin_sim::{Twin, TwinOptions};

use super::spec::{Plan, Resolved};
use crate::detect;
use crate::runner::link::{CoreLink, InProcess};
use crate::runner::{self, Drive, Flow, Hooks, TwinSide};

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
    /// BLAKE3 of the ground-truth incidents' ids, kinds, places and starts as they were created, at the
    /// end of every hour of the run: the same in every variant of a replication until a response changes
    /// the town (common random numbers).
    pub incidents_digest_hourly: Vec<String>,
    /// When a response first ended an incident.
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
    Ok(run(plan, vi, k, None)?.0)
}

/// The same with the core's SQLite store at `db`, returning the core too (for the equivalence test).
pub fn replicate_with_store(plan: &Plan, vi: usize, k: u32, db: Option<&Path>) -> Result<(Replication, Core, Vec<OrderEvent>)> {
    run(plan, vi, k, db)
}

/// What a replication keeps as it goes, on the twin's side of the runner.
struct Measures {
    start: Millis,
    window: Millis,
    /// Every transition, in the order the core made them.
    history: Vec<OrderEvent>,
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
            self.history.push(e.clone());
        }
    }

    fn after(&mut self, twin: &Twin, end: Millis) {
        // The tick that just ran covered [end - 1 min, end).
        if (end - self.start) % HOUR == 0 {
            self.backlog_hourly.push(self.open.max(0) as u32);
            let truth = &twin.truth().incidents;
            for i in &truth[self.digested..] {
                self.digest.update(format!("{}|{}|{}|{}|{}\n", i.id, i.kind, i.area, i.subject, i.start_ms).as_bytes());
            }
            self.digested = truth.len();
            self.incidents_digest_hourly.push(self.digest.clone().finalize().to_hex()[..16].to_string());
        }
        if end == self.window {
            self.at_window = Some(twin.responder_stats().clone());
        }
    }
}

fn run(plan: &Plan, vi: usize, k: u32, db: Option<&Path>) -> Result<(Replication, Core, Vec<OrderEvent>)> {
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
        history: Vec::new(),
        open: 0,
        backlog_hourly: Vec::with_capacity(scenario.days as usize * 24),
        at_window: None,
        digest: blake3::Hasher::new(),
        digested: 0,
        incidents_digest_hourly: Vec::new(),
    };
    let (start, town, targets, sc) = (v.start, (*v.town).clone(), detect::rule_targets(&v.rules), scenario.clone());
    let make = move || {
        let mut twin = Twin::new(&sc, start, town, TwinOptions { threads: Some(1), typed, ..TwinOptions::default() });
        twin.set_rule_targets(targets);
        TwinSide::new(twin, start, typed, measures)
    };
    let mut link = InProcess::new(core);
    // Nothing here waits: the in-process core answers at once, so the runtime is only the loop's frame.
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let driven = rt.block_on(runner::drive(make, &mut link, Drive { threaded: false, lockstep: true, publisher: None, throttle: None }))?;
    let core = rt.block_on(link.finish(0, 0))?.map(|o| o.core).ok_or_else(|| anyhow!("the in-process core did not hand itself back"))?;
    let Measures { history, backlog_hourly, at_window, incidents_digest_hourly, .. } = driven.hooks;
    let report = driven.twin;
    let end = report.end;
    let crews = match &at_window {
        Some(w) => report.responders.since(w),
        None => report.responders.clone(),
    };
    let incidents = report.incidents;
    let events = report.stats.total;
    let m = Measure { plan, v, core: &core, history: &history, incidents: &incidents, window, end, crews: &crews };
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
        first_answer_ms: incidents.iter().filter(|i| i.ended_by == Some("response")).filter_map(|i| i.end_ms).min(),
        events,
        wall_seconds: wall.elapsed().as_secs_f64(),
    };
    Ok((rep, core, history))
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

/// What a finished replication is measured from.
struct Measure<'a> {
    plan: &'a Plan,
    v: &'a Resolved,
    core: &'a Core,
    history: &'a [OrderEvent],
    incidents: &'a [Incident],
    window: Millis,
    end: Millis,
    crews: &'a ResponderStats,
}

/// One order's times, from its transitions.
#[derive(Default)]
struct Times {
    created: Millis,
    accepted: Option<Millis>,
    closed: Option<Millis>,
    /// When it stopped being open for good (closed or cancelled, and not reopened after).
    ended: Option<Millis>,
}

impl Measure<'_> {
    fn days(&self) -> f64 {
        (self.end - self.window) as f64 / DAY as f64
    }

    fn times(&self) -> HashMap<u64, Times> {
        let mut t: HashMap<u64, Times> = HashMap::new();
        for e in self.history {
            let x = t.entry(e.order).or_default();
            if e.from.is_none() {
                x.created = e.at;
            }
            match e.to {
                State::Accepted if x.accepted.is_none() => x.accepted = Some(e.at),
                State::Closed => {
                    x.closed = Some(e.at);
                    x.ended = Some(e.at);
                }
                State::Cancelled => x.ended = Some(e.at),
                _ => {
                    if e.from == Some(State::Closed) {
                        x.closed = None;
                        x.ended = None;
                    }
                }
            }
        }
        t
    }

    fn kpis(&self) -> (BTreeMap<String, f64>, BTreeMap<String, Vec<f32>>) {
        let mut k = BTreeMap::new();
        let days = self.days();
        let times = self.times();
        let h = HOUR as f64;
        let sla = self.plan.spec.sla_hours as f64;
        // Orders created in the window; an order still open at the end is censored there.
        let mut close = Vec::new();
        let mut accept = Vec::new();
        let mut closed_only = Vec::new();
        let mut by_loop: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut created = 0u64;
        for o in &self.core.orders.orders {
            let Some(t) = times.get(&o.id) else { continue };
            if t.created < self.window {
                continue;
            }
            created += 1;
            match t.closed {
                Some(c) => {
                    let hours = (c - t.created) as f64 / h;
                    close.push((hours, true));
                    closed_only.push(hours);
                    by_loop.entry(o.level.as_str().to_string()).or_default().push(hours as f32);
                }
                // Cancelled: it will never close; counted as censored when it ended.
                None => close.push(((t.ended.unwrap_or(self.end) - t.created) as f64 / h, false)),
            }
            match t.accepted {
                Some(a) => accept.push(((a - t.created) as f64 / h, true)),
                None => accept.push(((t.ended.unwrap_or(self.end) - t.created) as f64 / h, false)),
            }
        }
        k.insert("orders_per_day".into(), created as f64 / days);
        let km = KaplanMeier::new(&close);
        k.insert("close_hours_rmst72".into(), km.restricted_mean(72.0));
        if let Some(m) = km.quantile(0.5) {
            k.insert("close_hours_km_median".into(), m);
        }
        if let Some(m) = km.quantile(0.9) {
            k.insert("close_hours_km_p90".into(), m);
        }
        k.insert("closed_within_sla".into(), 1.0 - km.survival(sla));
        if !closed_only.is_empty() {
            k.insert("close_hours_closed_only_mean".into(), closed_only.iter().sum::<f64>() / closed_only.len() as f64);
        }
        let km = KaplanMeier::new(&accept);
        k.insert("accept_hours_rmst24".into(), km.restricted_mean(24.0));
        if let Some(m) = km.quantile(0.5) {
            k.insert("accept_hours_km_median".into(), m);
        }
        // Escalations (policy deadlines, failures, reopenings, whistles) into each loop.
        for lvl in [Loop::Medium, Loop::Large] {
            let n = self.history.iter().filter(|e| e.at >= self.window && matches!(e.action.as_str(), "escalate" | "whistle") && e.level == lvl).count();
            k.insert(format!("escalations_per_day/{}", lvl.as_str()), n as f64 / days);
        }
        // The backlog: open orders at the end of each hour of the window.
        let open_end = self.core.orders.orders.iter().filter(|o| o.state.is_open()).count();
        k.insert("open_at_end".into(), open_end as f64);
        // Staff.
        let mut cost = 0.0;
        let mut duty = 0u64;
        for (name, c) in &self.crews.by_crew {
            if c.duty_minutes == 0 && c.dispatched == 0 {
                continue;
            }
            cost += c.cost_yuan;
            duty += c.duty_minutes;
            if c.duty_minutes > 0 {
                k.insert(format!("utilisation/{name}"), c.busy_minutes as f64 / c.duty_minutes as f64);
            }
            if c.accepted > 0 {
                k.insert(format!("wait_minutes_mean/{name}"), c.wait_minutes as f64 / c.accepted as f64);
            }
            if c.queue_left > 0 {
                k.insert(format!("queue_wait_minutes_mean/{name}"), c.queue_left_minutes as f64 / c.queue_left as f64);
            }
            k.insert(format!("staff_hours_per_day/{name}"), c.duty_minutes as f64 / 60.0 / days);
        }
        k.insert("cost_yuan_per_day".into(), cost / days);
        k.insert("staff_hours_per_day".into(), duty as f64 / 60.0 / days);
        // Harm: hours each real incident was going on inside the window, per kind.
        let mut harm: BTreeMap<String, f64> = BTreeMap::new();
        for i in self.incidents.iter().filter(|i| !i.benign) {
            let (a, b) = (i.start_ms.max(self.window), i.end_ms.unwrap_or(self.end).min(self.end));
            *harm.entry(i.kind.to_string()).or_default() += (b - a).max(0) as f64 / h;
        }
        let total: f64 = harm.values().sum();
        for (kind, hours) in harm {
            k.insert(format!("harm_hours_per_day/{kind}"), hours / days);
        }
        k.insert("harm_hours_per_day".into(), total / days);
        // The 12345 hotline: calls in the window, problems solved before anyone called (未呼先应), and
        // hours from a problem's first call to its end (接诉即办; still going on at the end: censored).
        let weeks = days / 7.0;
        let mut calls: BTreeMap<String, u64> = BTreeMap::new();
        let callable: std::collections::BTreeSet<_> = self.v.scenario.hotline.patience.keys().copied().collect();
        let (mut solved, mut solved_first) = (0u64, 0u64);
        let (mut started, mut called) = (0u64, 0u64);
        let mut to_end = Vec::new();
        for i in self.incidents.iter().filter(|i| !i.benign && callable.contains(&i.kind)) {
            let n = i.calls.iter().filter(|&&c| c >= self.window).count() as u64;
            *calls.entry(i.kind.to_string()).or_default() += n;
            if i.start_ms >= self.window {
                started += 1;
                called += u64::from(!i.calls.is_empty());
            }
            if i.ended_by == Some("response")
                && let Some(end) = i.end_ms.filter(|&e| e >= self.window)
            {
                solved += 1;
                solved_first += u64::from(i.calls.iter().all(|&c| c >= end));
            }
            if let Some(&first) = i.calls.first().filter(|&&c| c >= self.window) {
                match i.end_ms.filter(|&e| e <= self.end) {
                    Some(e) => to_end.push(((e - first) as f64 / h, true)),
                    None => to_end.push(((self.end - first) as f64 / h, false)),
                }
            }
        }
        for (kind, n) in &calls {
            k.insert(format!("hotline_calls_per_week/{kind}"), *n as f64 / weeks);
        }
        k.insert("hotline_calls_per_week".into(), calls.values().sum::<u64>() as f64 / weeks);
        if solved > 0 {
            k.insert("solved_before_any_call".into(), solved_first as f64 / solved as f64);
        }
        if started > 0 {
            k.insert("called_about_share".into(), called as f64 / started as f64);
        }
        if !to_end.is_empty() {
            let km = KaplanMeier::new(&to_end);
            k.insert("call_to_end_hours_rmst72".into(), km.restricted_mean(72.0));
        }
        // How incidents ended: by a response, by themselves, or still going on, per kind (of those that
        // started in the window).
        let mut ended: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for i in self.incidents.iter().filter(|i| !i.benign && i.start_ms >= self.window) {
            let e = ended.entry(i.kind.to_string()).or_default();
            e.0 += 1;
            e.1 += u64::from(i.ended_by == Some("response"));
        }
        for (kind, (n, by_response)) in ended {
            if self.v.scenario.response.effects.keys().any(|k| k.as_str() == kind) {
                k.insert(format!("ended_by_response/{kind}"), by_response as f64 / n as f64);
            }
        }
        // Detection, over the incidents that started in the window.
        let started: Vec<Incident> = self.incidents.iter().filter(|i| i.start_ms >= self.window).cloned().collect();
        let orders: Vec<_> = self.core.orders.orders.iter().filter(|o| o.created_at >= self.window).cloned().collect();
        for (rule, s) in detect::score(&self.v.rules, &orders, &started, self.end) {
            if let Some(r) = s.recall {
                k.insert(format!("recall/{rule}"), r);
            }
            k.insert(format!("false_alarms_per_day/{rule}"), s.false_alarms as f64 / days);
            if let Some(d) = s.delay_p50_min {
                k.insert(format!("detection_delay_p50_min/{rule}"), d);
            }
        }
        (k, by_loop)
    }

    fn checks(&self) -> Checks {
        let mut c = Checks { created: self.history.iter().filter(|e| e.from.is_none()).count() as u64, ..Checks::default() };
        for o in &self.core.orders.orders {
            match o.state {
                State::Closed => c.closed += 1,
                State::Cancelled => c.cancelled += 1,
                s => *c.open_by_state.entry(s.as_str().to_string()).or_default() += 1,
            }
        }
        c.conservation_holds = c.created == c.closed + c.cancelled + c.open_by_state.values().sum::<u64>();
        let minutes = ((self.end - self.window) / towntwin_core::time::MINUTE) as f64;
        for (name, s) in &self.crews.by_crew {
            if s.queue_joined == 0 || s.queue_left == 0 || s.queue_area_minutes == 0 {
                continue;
            }
            let l = s.queue_area_minutes as f64 / minutes;
            let lambda = s.queue_joined as f64 / minutes;
            let w = s.queue_left_minutes as f64 / s.queue_left as f64;
            c.little.insert(name.clone(), Little { l, lambda_per_minute: lambda, w_minutes: w, relative_error: (l - lambda * w).abs() / l });
        }
        c
    }
}

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
