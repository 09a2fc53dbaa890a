//! What an operator's tools read of a running core: Prometheus metrics (`GET /metrics`, the text format),
//! and the answers to Kubernetes' probes (`GET /healthz`: the process is serving; `GET /readyz`: it is
//! subscribed to the broker and its store takes writes). Rendered at each scrape from the core's own
//! counters and orders and from the ingest's counters; the batch latency histogram is kept by the ingest.
//! Wall-clock durations here are measurements only: nothing decides on them.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::ingest::IngestCounters;
use crate::service::Core;

type Labels = Vec<(String, String)>;

/// The metrics of `core` and its ingest, in Prometheus' text format.
pub fn render(core: &Core, ingest: &IngestCounters) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut reg = Registry::with_prefix("towntwin");
    reg.register("events_accepted", "Events logged, each event id once", ConstCounter::new(core.stats.accepted));
    reg.register("events_duplicate", "Events whose id was logged before (redeliveries), not applied again", ConstCounter::new(core.stats.duplicates));
    reg.register(
        "events_held",
        "With --order minutes: events logged and held until their minute is whole (its tick and every event it counts)",
        ConstGauge::new(core.stats.holding as i64),
    );
    reg.register(
        "minutes_forced",
        "With --order minutes: minutes applied before they were whole (their events never came within a day of ticks)",
        ConstCounter::new(core.stats.minutes_forced),
    );
    reg.register(
        "events_late",
        "With --order minutes: events that came after their minute was applied (applied at once, as they came)",
        ConstCounter::new(core.stats.late),
    );
    let rejected = Family::<Labels, Counter>::default();
    for (reason, n) in &core.stats.rejected {
        rejected.get_or_create(&vec![("reason".into(), reason.clone())]).inc_by(*n);
    }
    reg.register("events_rejected", "Messages refused, by reason (dead-lettered)", rejected);
    let findings = Family::<Labels, Counter>::default();
    for (rule, n) in &core.stats.findings_by_rule {
        findings.get_or_create(&vec![("rule".into(), rule.clone())]).inc_by(*n);
    }
    reg.register("findings", "Rule findings, by rule", findings);
    let orders = Family::<Labels, Gauge>::default();
    for o in &core.orders.orders {
        orders.get_or_create(&vec![("state".into(), o.state.as_str().into()), ("loop".into(), o.level.as_str().into())]).inc();
    }
    reg.register("orders", "Work orders, by state and by the loop that holds them", orders);
    reg.register("event_time_seconds", "The core's event-time clock (Unix seconds)", ConstGauge::new(core.now() / 1000));
    reg.register("messages_received", "Messages taken from the broker: committed and acknowledged", ConstCounter::new(ingest.received.load(Relaxed)));
    reg.register("batches_committed", "Batches committed", ConstCounter::new(ingest.batches.load(Relaxed)));
    reg.register("dead_letters", "Messages dead-lettered", ConstCounter::new(ingest.dead_lettered.load(Relaxed)));
    reg.register("batch_seconds", "Time to decode, apply and commit a batch, before its acknowledgement", ingest.batch_seconds.clone());
    reg.register("broker_connected", "1 while the core's subscribing session is up and subscribed", ConstGauge::new(i64::from(ingest.connected.load(Relaxed))));
    reg.register(
        "broker_connects",
        "Connections the core's subscribing session made (1 plus its reconnects)",
        ConstCounter::new(ingest.connects.load(Relaxed)),
    );
    reg.register(
        "broker_lag_messages",
        "Messages read from the broker and not yet committed: how far the core is behind what it was sent",
        ConstGauge::new(ingest.arrived.load(Relaxed).saturating_sub(ingest.received.load(Relaxed)) as i64),
    );
    reg.register(
        "ingest_running",
        "1 while the ingest loop runs (0 once it stopped, e.g. on a store failure)",
        ConstGauge::new(i64::from(ingest.running.load(Relaxed))),
    );
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Whether the core should be sent traffic, and if not why.
pub fn ready(core: &Core, ingest: &IngestCounters) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    if !ingest.running.load(Relaxed) {
        return Err("the ingest loop has stopped".into());
    }
    if !ingest.connected.load(Relaxed) {
        return Err("not subscribed to the broker".into());
    }
    match core.store() {
        Some(s) => s.probe().map_err(|e| format!("the store does not take writes: {e}")),
        None => Ok(()),
    }
}

/// The histogram buckets of [`IngestCounters::batch_seconds`]: 0.1 ms to 3.3 s, doubling.
pub fn batch_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16)
}
