//! Judging a finished load run: the core's store read back ([`towntwin_core::store::Reader`]), every
//! event and work order accounted for, latency from intended send to notice, recovery after each fault,
//! and the SLO's checks; then the report's series and plots.

use std::collections::{HashMap, HashSet};

use std::time::Instant;

use anyhow::{Context, Result};
use towntwin_core::store::{Location, Reader};
use towntwin_sim::Message;

use super::profile::{Loaded, secs};
use super::reference::Reference;
use super::summary::{Check, Millis, Sample, Summary};
use super::{Heard, Measured, account, report};
use crate::percentiles::Recorder;

/// Work-order latency from each creation's cause's intended send to the notice's arrival: in all, by the
/// second of the load it came in, and by order (for the late ones).
#[derive(Default)]
pub(super) struct Latency {
    pub hist: Recorder,
    pub per_second: Vec<Recorder>,
    pub by_order: HashMap<u64, f64>,
}

impl Latency {
    /// One creation notice: `us` microseconds after its cause's intended send, heard in second `second`.
    pub fn record(&mut self, order: u64, us: i64, second: usize) {
        self.hist.record(us);
        self.by_order.entry(order).or_insert(us as f64 / 1000.0);
        if self.per_second.len() <= second {
            self.per_second.resize_with(second + 1, Recorder::new);
        }
        self.per_second[second].record(us);
    }

    /// From the notices heard, those whose cause is a message `mine` takes (a generator's own events).
    pub fn of_heard(heard: &[Heard], t0: Instant, offsets: &[f64], by_id: &HashMap<String, usize>, mine: impl Fn(usize) -> bool) -> Latency {
        let mut l = Latency::default();
        for h in heard {
            if let Heard::Created { order, cause, at } = h
                && let Some(&i) = by_id.get(cause)
                && mine(i)
            {
                let intended = t0 + secs(offsets[i]);
                let us = at.saturating_duration_since(intended).as_micros().max(1) as i64;
                l.record(*order, us, at.saturating_duration_since(t0).as_secs() as usize);
            }
        }
        l
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn judge(
    loaded: &Loaded,
    broker: &str,
    out: &std::path::Path,
    store: &Location,
    msgs: &[Message],
    offsets: &[f64],
    keys: &[String],
    reference: &Reference,
    m: Measured,
    stop_counts: Option<(u64, u64)>,
    core_starts: u32,
    core_flags: &[String],
) -> Result<Summary> {
    let prof = &loaded.profile;
    let store = Reader::open(store).with_context(|| format!("cannot read the core's store {store}"))?;
    let logged = store.event_ids()?;
    let made: Vec<(u64, account::OrderKey)> = store.orders()?.into_iter().map(|o| (o.id, (o.rule, o.key, o.created_at))).collect();
    let refused = store.rejects()?;
    let sent: Vec<account::Sent> = m.sent.iter().map(|&i| account::Sent { key: keys[i].clone(), qos: msgs[i].qos }).collect();
    let expected: HashSet<String> = m.sent.iter().filter(|&&i| reference.accepted[i]).map(|&i| keys[i].clone()).collect();
    let events = account::events(&sent, &expected, &logged);
    let Latency { hist, per_second, by_order: latency_by_order } = m.latency;

    // Orders are expected from the events sent (a cut-short run expects less).
    let expected_orders: Vec<account::OrderKey> = reference.orders.iter().filter(|k| k.2 <= m.cut).cloned().collect();
    let orders = account::orders(&expected_orders, &made, &latency_by_order, prof.slo.late_ms);
    let latency = Millis::of(&hist);
    let lag = Millis::of(&m.lag);

    // Recovery: from a fault's start until the core's log holds everything due a second earlier that it
    // will ever hold.
    let logged_set: HashSet<&str> = logged.iter().map(String::as_str).collect();
    let mut due_logged: Vec<f64> = m.sent.iter().filter(|&&i| logged_set.contains(keys[i].as_str())).map(|&i| offsets[i]).collect();
    due_logged.sort_by(f64::total_cmp);
    let caught_up = |s: &Sample| {
        let due = due_logged.partition_point(|&w| w <= s.t - 1.0) as u64;
        s.accepted >= due
    };
    let mut faults = m.faults;
    for f in &mut faults {
        f.recovery_seconds = m.samples.iter().filter(|s| s.t >= f.ended).find(|s| caught_up(s)).map(|s| s.t - f.started);
    }

    let valid_lag = lag.p99 <= prof.slo.generator_lag_p99_ms;
    let invalid_reason = match (&m.sending, valid_lag) {
        (Err(e), _) => Some(format!("{e:#}")),
        (Ok(()), false) => Some(format!(
            "the generator's lag p99 was {:.1} ms, over the {} ms it may be: the offered load was not applied",
            lag.p99, prof.slo.generator_lag_p99_ms
        )),
        _ => None,
    };
    let slo = &prof.slo;
    let mut checks = Vec::new();
    let mut check = |what: &str, target: String, measured: String, pass: bool| checks.push(Check { what: what.into(), target, measured, pass });
    check("work-order latency p99", format!("<= {} ms", slo.p99_ms), format!("{:.1} ms", latency.p99), latency.count > 0 && latency.p99 <= slo.p99_ms);
    if let Some(t) = slo.p999_ms {
        check("work-order latency p99.9", format!("<= {t} ms"), format!("{:.1} ms", latency.p999), latency.count > 0 && latency.p999 <= t);
    }
    let lost = events.lost_qos1 + orders.lost;
    check("lost (QoS 1 events + work orders)", format!("<= {}", slo.lost), format!("{} + {}", events.lost_qos1, orders.lost), lost <= slo.lost);
    let duplicated = events.duplicated + orders.duplicated;
    check(
        "duplicated (events + work orders)",
        format!("<= {}", slo.duplicated),
        format!("{} + {}", events.duplicated, orders.duplicated),
        duplicated <= slo.duplicated,
    );
    if let Some(t) = slo.lost_qos0 {
        check("lost QoS 0 events", format!("<= {t}"), events.lost_qos0.to_string(), events.lost_qos0 <= t);
    }
    if let Some(t) = slo.late {
        check(&format!("work orders later than {} ms", slo.late_ms), format!("<= {t}"), orders.late.to_string(), orders.late <= t);
    }
    if let Some(t) = slo.recovery_s {
        for f in &faults {
            let ok = f.error.is_none() && f.recovery_seconds.is_some_and(|r| r <= t);
            check(&format!("recovery after {}", f.fault), format!("<= {t} s"), f.recovery_seconds.map_or("never".into(), |r| format!("{r:.1} s")), ok);
        }
    }
    check("drained", format!("within {} s", prof.limits.drain_seconds), m.drained.map_or("no".into(), |d| format!("{d:.1} s")), m.drained.is_some());
    let slo_pass = checks.iter().all(|c| c.pass);
    let max_of = |f: &dyn Fn(&Sample) -> Option<f64>| m.samples.iter().filter_map(f).fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
    let load_secs = loaded.seconds();
    let first_accept = m.samples.first().map_or(0, |s| s.accepted);
    let accepted_by_end = m.samples.iter().rev().find(|s| s.t <= m.sent_until).map_or(0, |s| s.accepted);
    let summary = Summary {
        profile: prof.name.clone(),
        broker: broker.to_string(),
        connections: prof.connections,
        connection_count: m.connection_count,
        connect_seconds: m.connect_seconds,
        seconds: load_secs,
        valid: invalid_reason.is_none(),
        invalid_reason,
        sent: m.sent.len() as u64,
        broker_acknowledged: m.acked,
        publishers: m.churn,
        core_refused: refused,
        accepted: events.accepted,
        expected_work_orders: orders.expected,
        work_orders: orders.made,
        lost,
        lost_qos0: events.lost_qos0,
        duplicated,
        late: orders.late,
        redelivered_dropped: stop_counts.map(|c| c.1),
        latency_ms: latency,
        generator_lag_ms: lag,
        offered_per_second: msgs.len() as f64 / load_secs.max(1e-9),
        sent_per_second: m.sent.len() as f64 / m.sent_until.max(1e-9),
        core_per_second: accepted_by_end.saturating_sub(first_accept) as f64 / m.sent_until.max(1e-9),
        drain_seconds: m.drained,
        faults,
        core_starts,
        core_flags: core_flags.to_vec(),
        core_cpu_max: max_of(&|s| s.core.map(|u| u.cpu)).unwrap_or(0.0),
        core_rss_max_mb: max_of(&|s| s.core.map(|u| u.rss_mb)).unwrap_or(0.0),
        broker_cpu_max: max_of(&|s| s.broker.map(|u| u.cpu)),
        broker_rss_max_mb: max_of(&|s| s.broker.map(|u| u.rss_mb)),
        generator_cpu_max: max_of(&|s| s.generator.map(|u| u.cpu)).unwrap_or(0.0),
        checks,
        slo_pass,
        events,
        orders,
        generators: m.generators,
        out_dir: out.display().to_string(),
    };
    let mut sent_per_second: Vec<u64> = Vec::new();
    for &i in &m.sent {
        let s = offsets[i].max(0.0) as usize;
        if sent_per_second.len() <= s {
            sent_per_second.resize(s + 1, 0);
        }
        sent_per_second[s] += 1;
    }
    report::write_series(out, &hist, &per_second, &sent_per_second, &m.samples, &summary)?;
    Ok(summary)
}
