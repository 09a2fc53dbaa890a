//! What a process started by another tells it: one JSON object a line on stdout. `towntwin core` and
//! `towntwin broker` print these as they get ready and when they stop; the load test (and anyone who
//! starts them) reads them with [`Status::parse`], never the wording of a line meant for people.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One status line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// The embedded broker accepts connections: a client may connect now.
    BrokerListening { broker: String },
    /// The core is its town's standby: it waits for the active core to let go of the store.
    CoreStandby { db: String },
    /// The core has loaded its store: `orders` work orders and its event-time clock.
    CoreLoaded { db: String, orders: u64, event_time: String },
    /// The broker has acknowledged the core's subscription (a publisher may start now), and where its
    /// HTTP API listens.
    CoreSubscribed { broker: String, http: Option<String> },
    /// The core was interrupted (SIGINT) before it served: a standby while it waited for its town's
    /// lock. It took nothing over and wrote nothing.
    CoreInterrupted { db: String },
    /// The core stopped cleanly, with its counters.
    CoreStopped { accepted: u64, duplicates: u64, rejected: BTreeMap<String, u64>, orders: u64 },
    /// The district's API and console listen (`towntwin district run --serve`), with a `district` token
    /// for them and the store's URL (a town's tokens are issued into its schema there).
    DistrictServing { http: String, token: String, store: String },
}

impl Status {
    /// Prints the line on stdout; a closed stdout (the reader went away) stops nothing.
    pub fn print(&self) {
        use std::io::Write as _;
        if let Ok(line) = serde_json::to_string(self) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// The status a line holds, if it is one.
    pub fn parse(line: &str) -> Option<Status> {
        serde_json::from_str(line.trim()).ok()
    }

    /// The last status among `lines` that `pick` chooses.
    pub fn last<T>(lines: &[String], pick: impl Fn(Status) -> Option<T>) -> Option<T> {
        lines.iter().rev().find_map(|l| Status::parse(l).and_then(&pick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_round_trips_and_prose_is_not_one() {
        let s = Status::CoreStopped { accepted: 1200, duplicates: 34, rejected: BTreeMap::from([("malformed".into(), 2)]), orders: 5 };
        let line = serde_json::to_string(&s).unwrap();
        assert!(line.starts_with(r#"{"status":"core_stopped","accepted":1200"#), "{line}");
        assert_eq!(Status::parse(&line), Some(s));
        assert_eq!(Status::parse("core: stopped; 1200 accepted, 34 duplicates"), None);
        let lines = vec![r#"{"status":"core_subscribed","broker":"mqtt://x:1","http":null}"#.to_string(), line];
        let counts = Status::last(&lines, |s| match s {
            Status::CoreStopped { accepted, duplicates, .. } => Some((accepted, duplicates)),
            _ => None,
        });
        assert_eq!(counts, Some((1200, 34)));
    }
}
