//! A run's summary: what it is made of (`summary.json`), how it is gathered, and how it is printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use towntwin_core::event::EventType;
use towntwin_core::orders::{Order, State};
use towntwin_core::service::CoreStats;
use towntwin_core::time::HOUR;
use towntwin_sim::Incident;
use towntwin_sim::Scenario;

use super::RunOptions;
use crate::mqtt::Mode;
use crate::percentiles::{Percentiles, Recorder};
use crate::responders::ResponderReport;
use crate::runner::TwinReport;
use crate::runner::link::CoreOutcome;
use crate::{ceiling, detect};

/// What the broker side saw.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkReport {
    pub broker: String,
    pub connections_mode: Mode,
    pub connections: usize,
    pub connect_seconds: f64,
    pub published: u64,
    pub published_qos1: u64,
    pub qos1_acknowledged: u64,
    /// QoS 1 publishes the broker never acknowledged (the run exits non-zero when this is not 0).
    pub qos1_unacknowledged: u64,
    /// Requests sent again after a reconnect (unacknowledged or still queued when a connection broke).
    pub resent_after_reconnect: u64,
    /// Connections made again after one broke.
    pub reconnects: u64,
    /// Delivered to the `town/#` observer (None when not observing).
    pub observed: Option<u64>,
    pub observed_invalid: Option<u64>,
    pub publish_seconds: f64,
    pub events_per_second: f64,
}

/// The run's summary, written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run: String,
    pub scenario: String,
    pub seed: u64,
    pub start_date: String,
    pub days: u32,
    pub speed: String,
    pub threads: Option<usize>,
    pub events_total: u64,
    pub bytes_total: u64,
    pub events_by_type: BTreeMap<String, u64>,
    pub events_by_hour: BTreeMap<String, [u64; 24]>,
    pub stream_digest: String,
    pub ground_truth_incidents: u64,
    pub ground_truth_by_kind: BTreeMap<String, u64>,
    pub wall_seconds: f64,
    /// Seconds spent in the twin itself (stepping, encoding, digest), without waiting on the network.
    pub twin_seconds: f64,
    pub network: Option<NetworkReport>,
    pub ceiling: Option<ceiling::Ceiling>,
    /// How the core got the stream (`mqtt`, `in-process`); None when run without it.
    pub core_mode: Option<String>,
    pub work_orders_total: u64,
    pub work_orders_by_rule: BTreeMap<String, u64>,
    pub work_orders_by_loop: BTreeMap<String, u64>,
    pub work_orders_by_state: BTreeMap<String, u64>,
    /// Hours from creation to closing, over the orders closed in the run.
    pub close_hours: Option<Percentiles>,
    pub responders: Option<ResponderReport>,
    pub detection: BTreeMap<String, detect::RuleScore>,
    pub core_stats: Option<CoreStats>,
    pub out_dir: String,
}

/// Hours from creation to closing, over the orders closed in the run.
fn closure(orders: &[Order]) -> Option<Percentiles> {
    orders.iter().filter(|o| o.state == State::Closed).map(|o| o.updated_at - o.created_at).collect::<Recorder>().summary(HOUR as f64)
}

/// What the run saw, gathered for `summary.json` and the terminal.
pub(crate) struct Parts<'a> {
    pub opts: &'a RunOptions,
    pub scenario: &'a Scenario,
    pub out: &'a Path,
    pub twin: &'a TwinReport,
    pub network: Option<NetworkReport>,
    pub ceiling: Option<ceiling::Ceiling>,
    pub core: Option<&'a CoreOutcome>,
    pub wall: Duration,
}

pub(crate) fn summarise(p: Parts<'_>) -> Summary {
    let Parts { opts, scenario: s, out, twin: r, network, ceiling, core: outcome, wall } = p;
    let mode = outcome.map(|c| c.mode.to_string());
    let responders = outcome.filter(|_| s.responders.enabled).map(|c| ResponderReport {
        via: c.actions_via.to_string(),
        actions_applied: c.applied,
        actions_refused: c.refused,
        stats: r.responders.clone(),
    });
    let core = outcome.map(|c| &c.core);
    let orders: &[Order] = core.map_or(&[], |c| &c.orders.orders);
    let mut by_rule = BTreeMap::new();
    let mut by_loop = BTreeMap::new();
    let mut by_state = BTreeMap::new();
    for o in orders {
        *by_state.entry(o.state.as_str().to_string()).or_insert(0) += 1;
        *by_rule.entry(o.rule.clone()).or_insert(0) += 1;
        *by_loop.entry(format!("{:?}", o.level)).or_insert(0) += 1;
    }
    let mut by_kind = BTreeMap::new();
    for i in &r.incidents {
        *by_kind.entry(i.kind.to_string()).or_insert(0) += 1;
    }
    Summary {
        run: out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        scenario: s.name.clone(),
        seed: s.seed,
        start_date: s.start_date.clone(),
        days: s.days,
        speed: opts.speed.to_string(),
        threads: opts.threads,
        events_total: r.stats.total,
        bytes_total: r.stats.bytes,
        events_by_type: EventType::ALL.iter().map(|t| (t.as_str().to_string(), r.stats.by_type(*t))).collect(),
        events_by_hour: EventType::ALL.iter().map(|t| (t.as_str().to_string(), r.stats.by_type_hour[*t as usize])).collect(),
        stream_digest: r.digest.clone(),
        ground_truth_incidents: r.incidents.len() as u64,
        ground_truth_by_kind: by_kind,
        wall_seconds: wall.as_secs_f64(),
        twin_seconds: r.busy.as_secs_f64(),
        network,
        ceiling,
        core_mode: mode,
        work_orders_total: orders.len() as u64,
        work_orders_by_rule: by_rule,
        work_orders_by_loop: by_loop,
        work_orders_by_state: by_state,
        close_hours: closure(orders),
        responders,
        detection: core
            .map_or_else(BTreeMap::new, |c| detect::score(&c.engine.rules, &orders.iter().collect::<Vec<_>>(), &r.incidents.iter().collect::<Vec<_>>(), r.end)),
        core_stats: core.map(|c| c.stats.clone()),
        out_dir: out.display().to_string(),
    }
}

pub(crate) fn write_results(out: &Path, summary: &Summary, incidents: &[Incident]) -> Result<()> {
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(summary)?).with_context(|| format!("cannot write {}", path.display()))?;
    let path = out.join("ground_truth.jsonl");
    let mut text = String::with_capacity(incidents.len() * 160);
    for i in incidents {
        text.push_str(&serde_json::to_string(i)?);
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The summary as tables for a terminal.
pub fn render(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "towntwin run `{}`: scenario {}, seed {}, {} day(s) from {}, speed {}", s.run, s.scenario, s.seed, s.days, s.start_date, s.speed);
    let _ = writeln!(o, "\nEvents by type                  total   per day  qos");
    let days = s.days.max(1) as u64;
    for t in EventType::ALL {
        let n = s.events_by_type.get(t.as_str()).copied().unwrap_or(0);
        let _ = writeln!(o, "  {:<24} {:>12} {:>9} {:>4}", t.as_str(), n, n / days, t.qos());
    }
    let _ = writeln!(o, "  {:<24} {:>12} {:>9}", "all", s.events_total, s.events_total / days);
    let _ = writeln!(o, "\nEvents by local hour (all days)   all events   gate.pass");
    let gate = s.events_by_hour.get("gate.pass");
    let max_gate = gate.map_or(1, |g| *g.iter().max().unwrap_or(&1)).max(1);
    for h in 0..24 {
        let all: u64 = s.events_by_hour.values().map(|v| v[h]).sum();
        let g = gate.map_or(0, |v| v[h]);
        let bar = "#".repeat((g * 30 / max_gate) as usize);
        let _ = writeln!(o, "  {h:02}:00 {all:>14} {g:>11}  {bar}");
    }
    let _ = writeln!(o, "\nGround-truth incidents            count");
    for (k, n) in &s.ground_truth_by_kind {
        let _ = writeln!(o, "  {k:<28} {n:>10}");
    }
    let _ = writeln!(o, "  {:<28} {:>10}", "all", s.ground_truth_incidents);
    let _ = writeln!(o, "\nStream digest (BLAKE3): {}", s.stream_digest);
    let _ = writeln!(o, "Twin time {:.2} s, wall time {:.2} s", s.twin_seconds, s.wall_seconds);
    if let Some(n) = &s.network {
        let _ = writeln!(
            o,
            "Broker {} over {} connection(s) ({:?} mode, connected in {:.2} s): published {}, QoS 1 acknowledged {}/{}, {:.0} events/s",
            n.broker, n.connections, n.connections_mode, n.connect_seconds, n.published, n.qos1_acknowledged, n.published_qos1, n.events_per_second
        );
        if n.reconnects > 0 || n.resent_after_reconnect > 0 {
            let _ = writeln!(o, "Reconnected {} time(s); {} request(s) sent again after a reconnect", n.reconnects, n.resent_after_reconnect);
        }
        if n.qos1_unacknowledged > 0 {
            let _ = writeln!(o, "NOT ACKNOWLEDGED by the broker: {} QoS 1 publish(es)", n.qos1_unacknowledged);
        }
        if let Some(obs) = n.observed {
            let _ = writeln!(
                o,
                "Observer on town/# received {obs} of {} ({} invalid)",
                n.published,
                n.observed_invalid.map_or("unchecked".into(), |x| x.to_string())
            );
        }
    }
    if s.core_mode.is_some() {
        let _ = writeln!(
            o,
            "\nWork orders by rule ({} in all, core {}; by loop: {:?})",
            s.work_orders_total,
            s.core_mode.as_deref().unwrap_or("-"),
            s.work_orders_by_loop
        );
        let _ =
            writeln!(o, "  {:<24} {:>7} {:>10} {:>9} {:>7} {:>12} {:>12}", "rule", "orders", "incidents", "detected", "recall", "false alarms", "delay p50 m");
        let mut rules: Vec<&String> = s.work_orders_by_rule.keys().chain(s.detection.keys()).collect();
        rules.sort();
        rules.dedup();
        for r in rules {
            let n = s.work_orders_by_rule.get(r).copied().unwrap_or(0);
            match s.detection.get(r) {
                Some(d) => {
                    let _ = writeln!(
                        o,
                        "  {:<24} {:>7} {:>10} {:>9} {:>7} {:>12} {:>12}",
                        r,
                        n,
                        d.incidents,
                        d.detected,
                        d.recall.map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
                        d.false_alarms,
                        d.delay_p50_min.map_or("-".into(), |x| format!("{x:.0}"))
                    );
                }
                None => {
                    let _ = writeln!(o, "  {r:<24} {n:>7}");
                }
            }
        }
        if !s.work_orders_by_state.is_empty() {
            let _ = writeln!(o, "Work orders by state at the end: {:?}", s.work_orders_by_state);
        }
        if let Some(c) = &s.close_hours {
            let _ = writeln!(o, "Closed {}: hours from creation to closing mean {:.1}, p50 {:.1}, p90 {:.1}, max {:.1}", c.count, c.mean, c.p50, c.p90, c.max);
        }
        if let Some(r) = &s.responders {
            let _ = writeln!(o, "\nResponders (actions via {}: {} applied, {} refused by the core)", r.via, r.actions_applied, r.actions_refused);
            let _ = writeln!(
                o,
                "  {:<16} {:>10} {:>9} {:>9} {:>7} {:>10} {:>11} {:>10} {:>8} {:>6} {:>10}",
                "crew", "dispatched", "accepted", "resolved", "failed", "withdrawn", "wait mean m", "max queue", "staff h", "busy", "cost yuan"
            );
            for (name, c) in &r.stats.by_crew {
                if name == "dispatcher" {
                    continue;
                }
                let wait = if c.accepted > 0 { format!("{:.0}", c.wait_minutes as f64 / c.accepted as f64) } else { "-".into() };
                // Utilisation: member-minutes on orders over member-minutes on duty (work finished off duty
                // counts as busy, so a crew that works late can pass 100%).
                let busy = if c.duty_minutes > 0 { format!("{:.0}%", 100.0 * c.busy_minutes as f64 / c.duty_minutes as f64) } else { "-".into() };
                let _ = writeln!(
                    o,
                    "  {:<16} {:>10} {:>9} {:>9} {:>7} {:>10} {:>11} {:>10} {:>8.0} {:>6} {:>10.0}",
                    name,
                    c.dispatched,
                    c.accepted,
                    c.resolved,
                    c.failed,
                    c.withdrawn,
                    wait,
                    c.max_queue,
                    c.duty_minutes as f64 / 60.0,
                    busy,
                    c.cost_yuan
                );
            }
            if let Some(d) = r.stats.by_crew.get("dispatcher") {
                let _ = writeln!(o, "  dispatchers: {} verified and closed, {} reopened", d.verified, d.reopened);
            }
        }
        if let Some(cs) = &s.core_stats {
            let _ = writeln!(o, "Core: {} events accepted, {} duplicates, rejected {:?}", cs.accepted, cs.duplicates, cs.rejected);
        }
    }
    if let Some(c) = &s.ceiling {
        let _ = writeln!(
            o,
            "Broker raw ceiling, {} B QoS 0 messages, one publisher and one subscriber: {:.0} msg/s delivered",
            c.payload_bytes, c.delivered_per_second
        );
    }
    let _ = writeln!(o, "Results: {}/summary.json, ground_truth.jsonl", s.out_dir);
    o
}
