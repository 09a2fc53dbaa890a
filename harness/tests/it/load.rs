//! `towntwin load`: the open-loop scheduler, a known injected delay showing in the latency, exactly-once
//! accounting across a kill -9, an SLO miss turning into a non-zero exit, bad profiles refused, and the
//! smoke profile against mosquitto.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use towntwin_harness::load::{Sink, drive};
use towntwin_harness::mosquitto::Mosquitto;
use towntwin_harness::percentiles::Recorder;

/// The tests here run one at a time: each starts a broker, a core and a generator, and they measure time.
static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A consumer that takes each item at once, except item `stall_at`, on which it blocks for `stall`.
struct Stalling {
    stall_at: usize,
    stall: Duration,
    sent: Arc<Mutex<Vec<Instant>>>,
}

impl Sink for Stalling {
    async fn send(&mut self, i: usize) -> anyhow::Result<()> {
        self.sent.lock().unwrap().push(Instant::now());
        if i == self.stall_at {
            tokio::time::sleep(self.stall).await;
        }
        Ok(())
    }
}

#[test]
fn intended_instants_hold_when_the_consumer_stalls() {
    let _one = serial();
    // 200 items 5 ms apart (1 s); the consumer blocks 300 ms on item 40 (due at 200 ms).
    let offsets: Vec<f64> = (0..200).map(|i| i as f64 * 0.005).collect();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut sink = Stalling { stall_at: 40, stall: Duration::from_millis(300), sent: sent.clone() };
    let mut lag = Recorder::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t0 = Instant::now() + Duration::from_millis(20);
    rt.block_on(drive(&offsets, t0, &mut sink, &mut lag, Duration::from_secs(5))).unwrap();
    let sent = sent.lock().unwrap();
    let at = |i: usize| sent[i].duration_since(t0).as_secs_f64();
    // Before the stall: on schedule (never early; a timer may wake up to a couple of milliseconds late).
    let on_time = |i: usize| assert!((offsets[i]..offsets[i] + 0.02).contains(&at(i)), "item {i} sent at {:.4}, due {:.4}", at(i), offsets[i]);
    (0..=40).for_each(on_time);
    // The items that fell due during the stall go at once after it, back to back: their instants were
    // not moved (a closed-loop generator would have sent item 41 at 0.505 s and shifted all the rest).
    let released = at(41);
    assert!((0.5..0.53).contains(&released), "item 41 went at {released:.4}");
    for i in 41..100 {
        assert!(at(i) - released < 0.02, "item {i}, due during the stall, waited until {:.4}", at(i));
    }
    // After catching up, back on the original schedule (item 150 is due at 0.75 s, not at 1.05 s).
    (110..200).for_each(on_time);
    // The lag histogram has the stall: item 41 was about 295 ms late.
    let s = lag.summary(1000.0).unwrap();
    assert_eq!(s.count, 200);
    assert!(s.max >= 280.0 && s.max < 340.0, "max lag {} ms", s.max);
    assert!(s.p50 < 5.0, "median lag {} ms", s.p50);
}

fn towntwin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_towntwin"))
}

/// A profile in `dir` over the repository's baseline scenario.
fn profile(dir: &Path, name: &str, body: &str) -> PathBuf {
    let scenario = common::root().join("scenarios/baseline.ron");
    let text = format!("(name: \"{name}\", scenario: \"{}\", {body})", scenario.display());
    let p = dir.join(format!("{name}.ron"));
    std::fs::write(&p, text).unwrap();
    p
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json written")).unwrap()
}

#[test]
fn a_frozen_core_shows_in_the_latency_and_the_slo_miss_exits_non_zero() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path(), "stall", "phases: [Steady(rate: Town(300.0), seconds: 10.0)], faults: [StallCore(at: 3.0, seconds: 2.0)], slo: (p99_ms: 50.0)");
    let out = dir.path().join("out");
    let o = towntwin().arg("load").arg(&p).arg("--out").arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "an SLO miss exits 1: {stderr}");
    assert!(stderr.contains("SLO missed: work-order latency p99"), "{stderr}");
    let s = summary(&out);
    assert_eq!(s["slo_pass"], false);
    assert_eq!(s["valid"], true);
    // The core was frozen for 2 s: work orders whose cause was sent in the stall's first half waited over
    // a second; the rest of the run was fast.
    let l = &s["latency_ms"];
    assert!(l["max"].as_f64().unwrap() >= 1_000.0, "max latency {l}");
    assert!(l["p50"].as_f64().unwrap() < 100.0, "median latency {l}");
    // Nothing lost or duplicated for all that, and every file of the report is there.
    assert_eq!((s["lost"].as_u64(), s["duplicated"].as_u64()), (Some(0), Some(0)));
    for f in ["report.md", "latency.hlog", "samples.csv", "plots/latency-spectrum.png", "plots/timeline.svg", "plots/resources.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // The same folder twice is refused, and what is there is kept.
    let again = towntwin().arg("load").arg(&p).arg("--out").arg(&out).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a load run"));
    assert_eq!(summary(&out)["slo_pass"], false);
}

#[test]
fn kill_9_of_the_core_loses_and_duplicates_nothing() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = towntwin().arg("load").arg(common::root().join("scenarios/load/kill.ron")).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "kill.ron holds its SLO: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let s = summary(&out);
    assert_eq!(s["core_starts"], 2, "the core was killed and started again");
    assert_eq!((s["lost"].as_u64(), s["lost_qos0"].as_u64(), s["duplicated"].as_u64()), (Some(0), Some(0), Some(0)));
    let e = &s["events"];
    assert_eq!(e["accepted"], e["expected"]);
    assert!(s["expected_work_orders"].as_u64().unwrap() > 20);
    assert_eq!(s["work_orders"], s["expected_work_orders"]);
    assert!(s["faults"][0]["recovery_seconds"].as_f64().is_some());
}

#[test]
fn bad_profiles_and_brokers_are_refused_before_any_load() {
    let dir = tempfile::tempdir().unwrap();
    let run = |p: &Path, extra: &[&str]| {
        let o = towntwin().arg("load").arg(p).args(extra).arg("--out").arg(dir.path().join("o")).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let impossible = profile(dir.path(), "fast", "phases: [Steady(rate: PerSecond(1e9), seconds: 10.0)], slo: (p99_ms: 50.0)");
    let (code, err) = run(&impossible, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("fast.ron") && err.contains("phases[0].rate") && err.contains("events per second"), "{err}");
    let unknown = profile(dir.path(), "typo", "phases: [Steady(rate: Town(10.0), seconds: 1.0)], slo: (p99_ms: 50.0, p98_ms: 3.0)");
    let (code, err) = run(&unknown, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("typo.ron") && err.contains("p98_ms"), "{err}");
    let ok = profile(dir.path(), "ok", "phases: [Steady(rate: Town(10.0), seconds: 1.0)], slo: (p99_ms: 50.0)");
    // Nothing listens on port 9 of loopback.
    let (code, err) = run(&ok, &["--broker", "mqtt://127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot reach the MQTT broker"), "{err}");
    let (code, err) = run(&ok, &["--broker", "mqtt://192.0.2.1:1883"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("loopback only"), "{err}");
    let restart =
        profile(dir.path(), "rb", "phases: [Steady(rate: Town(10.0), seconds: 5.0)], faults: [RestartBroker(at: 1.0, down: 1.0)], slo: (p99_ms: 50.0)");
    let (code, err) = run(&restart, &["--broker", "mqtt://127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("RestartBroker"), "{err}");
    assert!(!dir.path().join("o").join("summary.json").exists());
}

#[test]
fn smoke_holds_its_slo_against_mosquitto() {
    let _one = serial();
    if !Mosquitto::available_for_test() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = Mosquitto::start(dir.path(), "").unwrap();
    let ep = m.endpoint();
    let out = dir.path().join("out");
    let o = towntwin()
        .arg("load")
        .arg(common::root().join("scenarios/load/smoke.ron"))
        .args(["--broker", &format!("mqtt://{}:{}", ep.host, ep.port)])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "smoke holds against mosquitto: {stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("SLO met."));
    let s = summary(&out);
    assert_eq!(s["slo_pass"], true);
    assert!(s["sent"].as_u64().unwrap() > 50_000);
    assert_eq!(s["accepted"], s["sent"]);
    assert!(s["latency_ms"]["count"].as_u64().unwrap() > 100);
}

/// A short reconnect storm at full town scale: every device connection drops and comes back, its session
/// resumed, and no QoS 1 event or work order is lost. The clock stays up (it is the platform's, not a
/// device's): when it dropped with the devices, its ticks came back up to the storm's length late, and the
/// core refused the devices' events as minutes ahead of its clock (out of its window) — QoS 1 events lost
/// in about half the runs.
#[test]
fn a_reconnect_storm_loses_no_qos1_event_and_keeps_the_clock_up() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        "storm-short",
        "connections: Device, phases: [Steady(rate: Town(300.0), seconds: 14.0)], faults: [ReconnectStorm(at: 5.0, within: 4.0)], \
         slo: (p99_ms: 5000.0, recovery_s: Some(15.0))",
    );
    let out = dir.path().join("out");
    let o = towntwin().arg("load").arg(&p).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "the storm holds its SLO: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let s = summary(&out);
    let n = s["connection_count"].as_u64().unwrap();
    assert!(n > 9_700, "every device on its own connection: {n}");
    let c = &s["publishers"];
    assert_eq!(c["drops"].as_u64(), Some(n - 2), "every device dropped, the clock and the hotline did not: {c}");
    assert_eq!(c["resumed"], c["drops"], "every device found its session: {c}");
    assert_eq!((s["lost"].as_u64(), s["duplicated"].as_u64()), (Some(0), Some(0)));
    assert_eq!(s["core_refused"], serde_json::json!({}), "the core refused nothing");
    assert!(s["faults"][0]["recovery_seconds"].as_f64().is_some_and(|r| r < 15.0));
}

/// `towntwin load` against a 3-node nats-server cluster: the generator publishes to node 1, the core
/// subscribes on node 2 and orders its input by minutes (a cluster reorders). The accounting holds: every
/// event sent is logged once, none lost or duplicated, and the work orders are the reference core's.
#[test]
fn the_load_accounting_holds_through_a_nats_cluster() {
    let _one = serial();
    if !towntwin_harness::nats::NatsCluster::available_for_test() {
        return;
    }
    let cluster = towntwin_harness::nats::NatsCluster::start(3).unwrap();
    cluster.settled(Duration::from_secs(60)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path(), "cluster", "phases: [Steady(rate: Town(100.0), seconds: 10.0)], slo: (p99_ms: 1000.0)");
    let out = dir.path().join("out");
    let o = towntwin().arg("load").arg(&p).args(["--broker", &cluster.url()]).arg("--out").arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(matches!(o.status.code(), Some(0 | 1)), "the load run ran (its SLO held or not): {stderr}");
    let s = summary(&out);
    assert_eq!(s["broker"].as_str().unwrap().matches(',').count(), 2, "the three nodes: {}", s["broker"]);
    assert!(s["core_flags"].as_array().unwrap().iter().any(|f| f == "--order minutes"), "{}", s["core_flags"]);
    assert_eq!(s["valid"], true, "{}", s["invalid_reason"]);
    assert!(s["sent"].as_u64().unwrap() > 3_000, "{}", s["sent"]);
    assert_eq!(s["accepted"], s["sent"], "every event logged once: {stderr}");
    assert_eq!((s["lost"].as_u64(), s["duplicated"].as_u64()), (Some(0), Some(0)));
    assert_eq!(s["work_orders"], s["expected_work_orders"], "the reference core's orders");
    eprintln!("through the cluster: {} events, latency p99 {} ms, SLO {}", s["sent"], s["latency_ms"]["p99"], s["slo_pass"]);
}
