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
    let mut core = Command::new(env!("CARGO_BIN_EXE_towntwin"));
    core.args(["core", "--broker", &format!("mqtt://127.0.0.1:{port}"), "--client-id", client_id])
        .arg("--db")
        .arg(dir.join("core.db"))
        .arg("--town")
        .arg(dir.join("town.ron"));
    until_subscribed(core)
}

/// Starts `core` (a `towntwin core` command) and returns once it prints that the broker acknowledged its
/// subscription.
pub fn until_subscribed(mut core: Command) -> Killed {
    let mut child = core.stdout(Stdio::piped()).spawn().expect("towntwin core starts");
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
    towntwin_core::store::Reader::open(dir.join("core.db")).and_then(|r| r.event_count()).map_or(0, |n| n as i64)
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

/// The work orders an uninterrupted in-process core makes of `msgs` (the load test's reference core, with
/// the shipped rules and the standard policy): (rule, key, created_at).
pub fn reference(town: &Town, msgs: &[Message]) -> Vec<(String, String, i64)> {
    reference_in(town, msgs, towntwin_core::service::Order::Arrival)
}

/// [`reference`] of a core that applies events in `order`.
pub fn reference_in(town: &Town, msgs: &[Message], order: towntwin_core::service::Order) -> Vec<(String, String, i64)> {
    let rules = towntwin_core::rules::RuleSet::load(&root().join("assets/rules.ron")).unwrap();
    let policy = towntwin_core::orders::Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap();
    towntwin_harness::load::reference::reference_in(&rules, &policy, town, msgs, order).unwrap().orders
}

/// The work orders in the core's store in `dir`: (rule, key, created_at).
pub fn stored_orders(dir: &Path) -> Vec<(String, String, i64)> {
    let orders = towntwin_core::store::Reader::open(dir.join("core.db")).unwrap().orders().unwrap();
    orders.into_iter().map(|o| (o.rule, o.key, o.created_at)).collect()
}

/// A plain HTTP/1.1 request on loopback (`addr` with or without `http://`): (status, the body as JSON, or
/// Null when it is none).
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let host = addr.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.unwrap_or("");
    let kind = if body.is_empty() { String::new() } else { "Content-Type: application/json\r\n".into() };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let text = out.split_once("\r\n\r\n").map_or("", |x| x.1);
    // Bodies come whole or chunked; a chunked JSON body is one chunk here.
    let json = text.find(['[', '{']).and_then(|i| serde_json::from_str(text[i..].trim_end_matches(|c: char| c != ']' && c != '}')).ok());
    (status, json.unwrap_or(serde_json::Value::Null))
}

/// `towntwin drill FILE --out DIR` and its other `args`, running; its stdout read line by line.
pub struct LiveDrill {
    pub child: Killed,
    pub lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<String>,
}

/// What a drill prints at start: the core's API, the controller's panel and its token, and each trainee's
/// token by name.
#[derive(Default)]
pub struct Printed {
    pub console: String,
    pub panel: String,
    pub controller: String,
    pub trainees: std::collections::BTreeMap<String, String>,
    /// Each evaluator's token by name.
    pub evaluators: std::collections::BTreeMap<String, String>,
}

impl LiveDrill {
    pub fn start(file: &Path, out: &Path, args: &[&str]) -> LiveDrill {
        let mut child = Command::new(env!("CARGO_BIN_EXE_towntwin"))
            .args(["drill", file.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        LiveDrill { child: Killed(child), lines, reader }
    }

    /// Reads stdout until the addresses and the `trainees` tokens are printed.
    pub fn printed(&self, trainees: usize) -> Printed {
        self.printed_with(trainees, 0)
    }

    /// Reads stdout until the addresses, the `trainees` tokens and the `evaluators` tokens are printed.
    pub fn printed_with(&self, trainees: usize, evaluators: usize) -> Printed {
        let mut p = Printed::default();
        while p.trainees.len() < trainees || p.evaluators.len() < evaluators || p.console.is_empty() || p.controller.is_empty() {
            let line = self.lines.recv_timeout(std::time::Duration::from_secs(120)).expect("the drill prints its addresses and tokens");
            if let Some(rest) = line.strip_prefix("drill: console (the core's API) on ") {
                p.console = rest.to_string();
            } else if let Some(rest) = line.strip_prefix("drill: controller on ") {
                let (url, token) = rest.split_once(" (Authorization: Bearer ").unwrap();
                p.panel = url.trim_end_matches("/drill").to_string();
                p.controller = token.trim_end_matches(')').to_string();
            } else if let Some(rest) = line.strip_prefix("drill: trainee ") {
                let (name, rest) = rest.split_once(' ').unwrap();
                p.trainees.insert(name.to_string(), rest.rsplit(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("drill: evaluator ")
                && rest.contains(" token ")
            {
                let (name, rest) = rest.split_once(' ').unwrap();
                p.evaluators.insert(name.to_string(), rest.rsplit(' ').next().unwrap().to_string());
            }
        }
        p
    }

    /// Waits for the drill to end: its exit status and everything it printed.
    pub fn finish(mut self, limit: std::time::Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.0.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "the drill did not end within {} s", limit.as_secs());
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        (status, self.reader.join().unwrap())
    }
}

/// A QoS 1 publisher as the tests send the twin's stream with (100 in flight, packets up to 1 MiB) on the
/// broker at `ep`, its event loop polled on a task until the connection ends. Call inside a runtime.
pub async fn publisher(ep: &towntwin_harness::broker::Endpoint, client_id: &str) -> (rumqttc::AsyncClient, tokio::task::JoinHandle<()>) {
    let mut o = rumqttc::MqttOptions::new(client_id, ep.host.clone(), ep.port);
    o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10_000);
    (client, tokio::spawn(async move { while el.poll().await.is_ok() {} }))
}
