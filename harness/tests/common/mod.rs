//! Shared by the tests that run `towntwin core` as a process: start it and wait until it says it is
//! subscribed, kill it, count what it logged, and make a stream of the twin's messages with its clock ticks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use towntwin_core::event::EventType;
use towntwin_core::town::Town;
use towntwin_sim::{Message, Scenario, Twin, TwinOptions};

pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A `towntwin core` process, SIGKILLed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `towntwin core` on the broker at `port` with its store and town in `dir`, and returns once it
/// prints that the broker acknowledged its subscription.
pub fn start_core(port: u16, dir: &Path, client_id: &str) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_towntwin"))
        .args(["core", "--broker", &format!("mqtt://127.0.0.1:{port}"), "--client-id", client_id])
        .arg("--db")
        .arg(dir.join("core.db"))
        .arg("--town")
        .arg(dir.join("town.ron"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("towntwin core starts");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    loop {
        let line = lines.next().expect("core prints its state").unwrap();
        if line.contains("subscribed") {
            break;
        }
    }
    // Keep reading its output so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Killed(child)
}

/// Events in the core's log.
pub fn logged(dir: &Path) -> i64 {
    rusqlite::Connection::open(dir.join("core.db")).and_then(|c| c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))).unwrap_or(0)
}

/// The twin's messages over `town` for `days`, and the event time of each clock tick by its index.
pub fn stream(town: &Town, days: u32) -> (Vec<Message>, Vec<(usize, i64)>) {
    let mut scenario = Scenario::load(&root().join("scenarios/baseline.ron")).unwrap().scenario;
    scenario.days = days;
    let start = towntwin_core::time::parse_local_date(&scenario.start_date).unwrap();
    let mut msgs = Vec::new();
    let mut ticks = Vec::new();
    Twin::new(&scenario, start, town.clone(), TwinOptions::default()).run(|m| {
        for m in m {
            if m.ty == EventType::ClockTick {
                ticks.push((msgs.len(), m.time));
            }
            msgs.push(m.clone());
        }
    });
    (msgs, ticks)
}

/// The last clock tick at or before message `i`.
pub fn tick_before(ticks: &[(usize, i64)], i: usize) -> i64 {
    ticks.iter().rev().find(|t| t.0 <= i).map(|t| t.1).unwrap()
}

/// The work orders an uninterrupted in-process core makes of `msgs`: (rule, key, created_at).
pub fn reference(town: &Town, msgs: &[Message]) -> Vec<(String, String, i64)> {
    let rules = towntwin_core::rules::RuleSet::load(&root().join("assets/rules.ron")).unwrap();
    let policy = towntwin_core::orders::Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap();
    let mut core = towntwin_core::service::Core::open(rules, policy, town, None).unwrap();
    for chunk in msgs.chunks(100) {
        let refs: Vec<&[u8]> = chunk.iter().map(|m| &m.payload[..]).collect();
        core.ingest(&refs).unwrap();
    }
    core.orders.orders.iter().map(|o| (o.rule.clone(), o.key.clone(), o.created_at)).collect()
}

/// The work orders in the core's store in `dir`: (rule, key, created_at).
pub fn stored_orders(dir: &Path) -> Vec<(String, String, i64)> {
    let db = rusqlite::Connection::open(dir.join("core.db")).unwrap();
    let mut st = db.prepare("SELECT rule, key, created_at FROM orders ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}
