//! Device health: heartbeats (mains-powered devices often, battery devices rarely), going offline and
//! coming back, sensors stuck at one reading, batteries running low and being replaced.

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use crate::params::{Probability, prob, range, rate};

#[cfg(feature = "twin")]
pub mod plugin;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Devices {
    pub heartbeat_minutes_mains: u32,
    pub heartbeat_minutes_battery: u32,
    pub offline_per_device_year: f64,
    pub offline_hours: (f64, f64),
    /// Sensors only: stuck at one reading.
    pub stuck_per_sensor_year: f64,
    pub stuck_days: (f64, f64),
    /// Probability a stuck sensor's self-test notices and reports it.
    pub stuck_self_report: Probability,
    /// Battery life in days (uniform range), and days until a low battery is replaced.
    pub battery_days: (f64, f64),
    pub battery_replace_days: (f64, f64),
}

impl Default for Devices {
    fn default() -> Self {
        Devices {
            heartbeat_minutes_mains: 30,
            heartbeat_minutes_battery: 360,
            offline_per_device_year: 1.5,
            offline_hours: (1.0, 36.0),
            stuck_per_sensor_year: 0.2,
            stuck_days: (2.0, 10.0),
            stuck_self_report: prob(0.5),
            battery_days: (400.0, 1500.0),
            battery_replace_days: (2.0, 10.0),
        }
    }
}

impl Devices {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        for (n, m) in [("heartbeat_minutes_mains", self.heartbeat_minutes_mains), ("heartbeat_minutes_battery", self.heartbeat_minutes_battery)] {
            p.check((1..=1440).contains(&m), || format!("devices.{n}"), || format!("expected 1..=1440 minutes, got {m}"));
        }
        rate(p, "devices.offline_per_device_year", self.offline_per_device_year);
        rate(p, "devices.stuck_per_sensor_year", self.stuck_per_sensor_year);
        range(p, "devices.offline_hours", self.offline_hours);
        range(p, "devices.stuck_days", self.stuck_days);
        range(p, "devices.battery_days", self.battery_days);
        range(p, "devices.battery_replace_days", self.battery_replace_days);
    }
}
