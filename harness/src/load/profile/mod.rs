//! A load profile (`scenarios/load/*.ron`): what traffic to offer and when, which faults to inject, and the
//! service-level objective a run is judged by. Everything is checked before any load starts; a problem names
//! the file and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use towntwin_core::load::{DataErrors, Problems, read_ron};

use crate::mqtt::Mode;

mod resolve;

pub use resolve::*;

/// The fastest offered rate a profile may ask for, events per second: far beyond what one loopback broker
/// carries (about 280,000 messages a second measured), so anything above it is a typing error.
pub const MAX_RATE: f64 = 1_000_000.0;
/// The largest multiple of town time: ten years of town in an hour.
pub const MAX_TOWN_MULTIPLE: f64 = 100_000.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The scenario whose traffic is offered, relative to this file (responders are off: this is ingest).
    #[serde(default = "default_scenario")]
    pub scenario: String,
    /// Rule set and escalation policy for the core, relative to this file (default: the repository's).
    #[serde(default)]
    pub rules: Option<String>,
    #[serde(default)]
    pub policy: Option<String>,
    /// Overrides the scenario's seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// How the devices connect: `One` connection, one per `Estate` gateway, or one per `Device`.
    #[serde(default = "default_connections")]
    pub connections: Mode,
    /// Run one after another; each starts where the one before left the traffic.
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    pub slo: Slo,
    #[serde(default)]
    pub limits: Limits,
    /// How `--find-max` searches (default: from 5,000 events/s, x1.5 a step, 10 s a trial, to 5%).
    #[serde(default)]
    pub find_max: Option<FindMax>,
    /// The core's decode partitions (`towntwin core --partitions`; default: the core's own, 2).
    #[serde(default)]
    pub partitions: Option<u16>,
    /// The core's largest batch (`towntwin core --batch-max`; default: 300 against the embedded broker, whose
    /// window is 1,000 unacknowledged messages, and the core's own 34 against `--broker`).
    #[serde(default)]
    pub batch_max: Option<u16>,
}

/// The core's batch against the embedded broker: a third of its window of 1,000 (see `towntwin core
/// --batch-max`).
pub const EMBEDDED_BATCH_MAX: u16 = 300;

/// The knee search: steady trials from `from` events/s, each `factor` times the last, until the SLO breaks;
/// then halving the gap between the highest rate that held and the lowest that did not, until it is within
/// `resolution` (a share of the rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindMax {
    pub from: f64,
    #[serde(default = "default_factor")]
    pub factor: f64,
    #[serde(default = "default_trial_seconds")]
    pub seconds: f64,
    #[serde(default = "default_resolution")]
    pub resolution: f64,
    /// No trial above this rate.
    #[serde(default = "default_find_max_max")]
    pub max: f64,
}

impl Default for FindMax {
    fn default() -> Self {
        FindMax { from: 5_000.0, factor: default_factor(), seconds: default_trial_seconds(), resolution: default_resolution(), max: default_find_max_max() }
    }
}

fn default_factor() -> f64 {
    1.5
}

fn default_trial_seconds() -> f64 {
    10.0
}

fn default_resolution() -> f64 {
    0.05
}

fn default_find_max_max() -> f64 {
    500_000.0
}

fn default_scenario() -> String {
    "../baseline.ron".into()
}

fn default_connections() -> Mode {
    Mode::One
}

/// How fast traffic is offered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Rate {
    /// A multiple of town time: the town's own traffic, bursts and lulls included, `x` times faster than
    /// real time (`Town(1.0)` is real time).
    Town(f64),
    /// Evenly spaced events, this many a second, in the town's order.
    PerSecond(f64),
}

impl Rate {
    fn kind(self) -> Kind {
        match self {
            Rate::Town(_) => Kind::Town,
            Rate::PerSecond(_) => Kind::Count,
        }
    }

    /// Town seconds per second, or events per second.
    pub fn value(self) -> f64 {
        match self {
            Rate::Town(x) | Rate::PerSecond(x) => x,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Town(x) => write!(f, "x{x} town time"),
            Rate::PerSecond(x) => write!(f, "{x} events/s"),
        }
    }
}

/// One stretch of the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Phase {
    /// The same rate throughout.
    Steady { rate: Rate, seconds: f64 },
    /// From one rate to another, linearly (both of the same kind).
    Ramp { from: Rate, to: Rate, seconds: f64 },
    /// `base`, then `peak` from `at` seconds for `hold` seconds, then `base` again, `seconds` in all.
    Spike { base: Rate, peak: Rate, seconds: f64, at: f64, hold: f64 },
    /// Each rate in turn, `seconds_each` seconds at each.
    Steps { rates: Vec<Rate>, seconds_each: f64 },
}

/// What goes wrong, and when (seconds from the start of the load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Fault {
    /// `kill -9` the core, and start it again (same store, same client id) `down` seconds later.
    KillCore { at: f64, down: f64 },
    /// Freeze the core (SIGSTOP) for `seconds`, then let it go on (SIGCONT): a known delay.
    StallCore { at: f64, seconds: f64 },
    /// Kill the broker and start it again on the same port `down` seconds later (only a broker this command
    /// started: the embedded one, not `--broker`).
    RestartBroker { at: f64, down: f64 },
    /// Every device connection drops at once and reconnects after a random delay within `within` seconds,
    /// resuming its session (per-device connections only).
    ReconnectStorm { at: f64, within: f64 },
}

impl Fault {
    pub fn at(&self) -> f64 {
        match self {
            Fault::KillCore { at, .. } | Fault::StallCore { at, .. } | Fault::RestartBroker { at, .. } | Fault::ReconnectStorm { at, .. } => *at,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Fault::KillCore { .. } => "kill -9 core",
            Fault::StallCore { .. } => "stall core",
            Fault::RestartBroker { .. } => "restart broker",
            Fault::ReconnectStorm { .. } => "reconnect storm",
        }
    }

    /// How long the fault itself lasts.
    pub fn length(&self) -> f64 {
        match self {
            Fault::KillCore { down, .. } | Fault::RestartBroker { down, .. } => *down,
            Fault::StallCore { seconds, .. } => *seconds,
            Fault::ReconnectStorm { within, .. } => *within,
        }
    }
}

/// The service-level objective: a run passes when every line holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// p99 of the latency from an event's intended send instant to its work-order notice, milliseconds.
    pub p99_ms: f64,
    #[serde(default)]
    pub p999_ms: Option<f64>,
    /// QoS 1 events (and work orders) that may be lost: 0.
    #[serde(default)]
    pub lost: u64,
    /// Events accepted twice, or work orders made twice: 0.
    #[serde(default)]
    pub duplicated: u64,
    /// QoS 0 events that may be lost (a sensor reading during an outage); `None`: counted, not judged.
    #[serde(default)]
    pub lost_qos0: Option<u64>,
    /// After each fault, the latency must be back under `p99_ms` within this many seconds of its start.
    #[serde(default)]
    pub recovery_s: Option<f64>,
    /// A work order is late when its notice comes this long after the intended send of its cause.
    #[serde(default = "default_late_ms")]
    pub late_ms: f64,
    /// Late work orders allowed; `None`: counted, not judged.
    #[serde(default)]
    pub late: Option<u64>,
    /// The run is valid only if the generator kept to its schedule: p99 of (actual - intended) send.
    #[serde(default = "default_lag_ms")]
    pub generator_lag_p99_ms: f64,
}

fn default_late_ms() -> f64 {
    1_000.0
}

fn default_lag_ms() -> f64 {
    50.0
}

/// Bounds that stop a run by themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Events offered at most.
    #[serde(default = "default_max_events")]
    pub max_events: u64,
    /// Seconds of load at most (drain not included).
    #[serde(default = "default_max_seconds")]
    pub max_seconds: f64,
    /// How long to wait, after the last event, for the core to take everything.
    #[serde(default = "default_drain")]
    pub drain_seconds: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_events: default_max_events(), max_seconds: default_max_seconds(), drain_seconds: default_drain() }
    }
}

fn default_max_events() -> u64 {
    20_000_000
}

fn default_max_seconds() -> f64 {
    3_600.0
}

fn default_drain() -> f64 {
    60.0
}

/// What the profile's progress variable counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Town seconds since the segment's first event.
    Town,
    /// Events since the segment's start.
    Count,
}

/// A stretch where the rate moves linearly from `r0` to `r1` over `seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub seconds: f64,
    pub kind: Kind,
    pub r0: f64,
    pub r1: f64,
}

impl Segment {
    /// Progress (town seconds, or events) made by `w` seconds into the segment.
    pub fn progress(&self, w: f64) -> f64 {
        self.r0 * w + (self.r1 - self.r0) * w * w / (2.0 * self.seconds)
    }

    /// The total progress of the segment.
    pub fn total(&self) -> f64 {
        (self.r0 + self.r1) / 2.0 * self.seconds
    }

    /// Seconds into the segment at which progress `p` is reached (the inverse of [`Segment::progress`]).
    pub fn when(&self, p: f64) -> f64 {
        let a = (self.r1 - self.r0) / (2.0 * self.seconds);
        if a.abs() < 1e-12 {
            return if self.r0 > 0.0 { p / self.r0 } else { self.seconds };
        }
        // a w^2 + r0 w - p = 0, the root in [0, seconds].
        let disc = (self.r0 * self.r0 + 4.0 * a * p).max(0.0);
        ((-self.r0 + disc.sqrt()) / (2.0 * a)).clamp(0.0, self.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(kind: Kind, r0: f64, r1: f64, seconds: f64) -> Segment {
        Segment { start: 0.0, seconds, kind, r0, r1 }
    }

    #[test]
    fn steady_count_is_evenly_spaced() {
        let s = [seg(Kind::Count, 100.0, 100.0, 1.0)];
        let out = schedule(&s, 0..1_000i64, |_| 0, u64::MAX);
        assert_eq!(out.len(), 100);
        for (i, (_, w)) in out.iter().enumerate() {
            assert!((w - i as f64 / 100.0).abs() < 1e-9);
        }
    }

    #[test]
    fn town_time_is_scaled_and_keeps_its_bursts() {
        // Events at town 0 s, 0 s, 10 s, 100 s; x10 for 5 s: 0, 0, 1 s; the one at 100 s is past the phase.
        let s = [seg(Kind::Town, 10.0, 10.0, 5.0)];
        let times = [0i64, 0, 10_000, 100_000];
        let out = schedule(&s, times, |t| *t, u64::MAX);
        let w: Vec<f64> = out.iter().map(|x| x.1).collect();
        assert_eq!(w, vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn ramp_integrates_the_rate() {
        // 0 -> 200 events/s over 10 s: 1000 events, the k-th at sqrt(k / 10) s.
        let s = [seg(Kind::Count, 0.0, 200.0, 10.0)];
        let out = schedule(&s, 0..5_000i64, |_| 0, u64::MAX);
        assert_eq!(out.len(), 1_000);
        assert!((out[400].1 - 40f64.sqrt()).abs() < 1e-6);
        // Half the events in the last 29% of the time.
        assert!((out[500].1 - 50f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn segments_follow_on_and_limits_hold() {
        let s = [
            Segment { start: 0.0, seconds: 1.0, kind: Kind::Count, r0: 10.0, r1: 10.0 },
            Segment { start: 1.0, seconds: 1.0, kind: Kind::Count, r0: 20.0, r1: 20.0 },
        ];
        let out = schedule(&s, 0..1_000i64, |_| 0, u64::MAX);
        assert_eq!(out.len(), 30);
        assert_eq!(out[10].1, 1.0);
        assert_eq!(out[10].0, 10);
        assert_eq!(schedule(&s, 0..1_000i64, |_| 0, 7).len(), 7);
    }

    #[test]
    fn bad_profiles_are_refused_naming_the_field() {
        let text = r#"(name: "x", phases: [Steady(rate: PerSecond(5e9), seconds: 10.0), Ramp(from: Town(10.0), to: PerSecond(5.0), seconds: 1.0)],
            faults: [KillCore(at: 99.0, down: 1.0)], slo: (p99_ms: 50.0))"#;
        let f = Path::new("bad.ron");
        let prof: Profile = towntwin_core::load::parse_ron(f, text).unwrap();
        let e = resolve(f, prof).unwrap_err().to_string();
        assert!(e.contains("phases[0].rate") && e.contains("events per second"), "{e}");
        assert!(e.contains("phases[1].to"), "{e}");
        assert!(e.contains("faults[0].at"), "{e}");
        let unknown = towntwin_core::load::parse_ron::<Profile>(f, r#"(name: "x", phases: [], slo: (p99_ms: 5.0), speed: 3)"#).unwrap_err().to_string();
        assert!(unknown.contains("speed"), "{unknown}");
    }
}
