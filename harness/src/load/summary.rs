//! What a load run reports (`summary.json`): the accounting, latency, rates, resources, faults and the
//! SLO's checks.

use serde::Serialize;

use super::account;
use crate::percentiles::Recorder;

/// What happened to one injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRun {
    pub fault: String,
    /// Seconds from the start of the load when it was injected, and when it ended (the process back up).
    pub started: f64,
    pub ended: f64,
    /// From the fault's start until the core had caught up with the traffic again (everything it would
    /// accept that was due a second earlier); `None`: it never did before the run ended.
    pub recovery_seconds: Option<f64>,
    pub error: Option<String>,
}

/// One sample of the run's resources and progress (every 200 ms).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t: f64,
    /// Events in the core's log (accepted) so far.
    pub accepted: u64,
    /// The generator's device connections up.
    pub connections: u64,
    pub core: Option<UsageAt>,
    pub broker: Option<UsageAt>,
    pub generator: Option<UsageAt>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct UsageAt {
    /// Share of one core since the previous sample (1.0 = one core busy).
    pub cpu: f64,
    pub rss_mb: f64,
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, Default)]
pub struct Millis {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Millis {
    /// A recorder of microseconds, in milliseconds (p99.9 beside the usual percentiles).
    pub(super) fn of(r: &Recorder) -> Millis {
        let h = r.histogram();
        if h.is_empty() {
            return Millis::default();
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        Millis { count: h.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: h.max() as f64 / 1000.0 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub profile: String,
    pub broker: String,
    pub connections: crate::mqtt::Mode,
    /// How many connections the generator made, and how long until the broker had accepted them all.
    pub connection_count: usize,
    pub connect_seconds: f64,
    pub seconds: f64,
    /// Whether the generator kept to its schedule; an invalid run is not a result.
    pub valid: bool,
    pub invalid_reason: Option<String>,
    pub sent: u64,
    pub broker_acknowledged: u64,
    /// The generator's connections: drops, resumed sessions, requests sent again, collisions.
    pub publishers: crate::mqtt::Churn,
    /// Events the core under load refused, by reason (the core's `rejects` table): an event refused here
    /// that the reference core accepted is counted lost.
    pub core_refused: std::collections::BTreeMap<String, u64>,
    pub accepted: u64,
    pub expected_work_orders: u64,
    pub work_orders: u64,
    /// QoS 1 events and work orders lost.
    pub lost: u64,
    pub lost_qos0: u64,
    pub duplicated: u64,
    pub late: u64,
    /// Redeliveries the core's dedup dropped (after a kill -9 the broker sends again what was not
    /// acknowledged), from its last clean stop.
    pub redelivered_dropped: Option<u64>,
    pub latency_ms: Millis,
    pub generator_lag_ms: Millis,
    pub offered_per_second: f64,
    pub sent_per_second: f64,
    pub core_per_second: f64,
    /// Seconds after the last send until the core had taken everything (`None`: not within the limit).
    pub drain_seconds: Option<f64>,
    pub faults: Vec<FaultRun>,
    pub core_starts: u32,
    /// The flags `towntwin core` ran with beyond broker, store and inputs (`--partitions`, `--batch-max`).
    pub core_flags: Vec<String>,
    pub core_cpu_max: f64,
    pub core_rss_max_mb: f64,
    pub broker_cpu_max: Option<f64>,
    pub broker_rss_max_mb: Option<f64>,
    pub generator_cpu_max: f64,
    pub checks: Vec<Check>,
    pub slo_pass: bool,
    pub events: account::Events,
    pub orders: account::Orders,
    /// A run of several generators (`towntwin load merge`): each one's part.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<GeneratorLine>,
    pub out_dir: String,
}

/// One generator's part in a merged run.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorLine {
    /// `i/n`.
    pub generator: String,
    pub host: String,
    pub dir: String,
    /// Events in its slice, and how many of them it sent.
    pub events: u64,
    pub sent: u64,
    pub broker_acknowledged: u64,
    pub connections: usize,
    pub connect_seconds: f64,
    pub generator_lag_ms: Millis,
    /// Creation notices of orders its events caused that it heard.
    pub notices: u64,
    pub valid: bool,
    pub invalid_reason: Option<String>,
}
