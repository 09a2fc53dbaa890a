//! The core process is killed (SIGKILL) in the middle of a stream and restarted: every committed work order
//! and timer is still there, nothing is duplicated, and the stream completes with the same work orders as an
//! uninterrupted in-process run over the same messages.

use std::time::Duration;

use crate::common::{logged, reference, start_core, stored_orders, stream, tick_before};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use towntwin_harness::responders::OrdersWatch;
use towntwin_sim::generate::{small, to_ron};

#[test]
fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let town = small(6, 2, 1);
    std::fs::write(dir.path().join("town.ron"), to_ron(&town)).unwrap();
    let (msgs, ticks) = stream(&town, 2);

    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (client, task) = rt.block_on(async {
        let mut o = MqttOptions::new("kill-test-publisher", ep.host.clone(), ep.port);
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        let task = tokio::spawn(async move { while el.poll().await.is_ok() {} });
        (client, task)
    });
    let publish = |range: &[towntwin_sim::Message]| {
        rt.block_on(async {
            for m in range {
                // All QoS 1: the broker keeps them for the core's session while it is down.
                client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.unwrap();
            }
        })
    };
    let n = msgs.len();
    let (a, b) = (n * 2 / 5, n * 3 / 5);
    assert_eq!(ticks.last().map(|t| t.0), Some(n - 1), "the stream ends with a clock tick");
    // The core's notices and watermarks, on a subscription of our own that outlives the core's restarts.
    let mut watch = rt.block_on(OrdersWatch::start(&ep)).unwrap();

    let core = start_core(ep.port, dir.path(), "kill-test");
    publish(&msgs[..a]);
    // Kill it while it is still working through the stream: once its watermark passes a tenth of it.
    rt.block_on(watch.until(tick_before(&ticks, a / 4), Duration::from_secs(60))).expect("the core takes the stream");
    drop(core); // SIGKILL
    let at_kill = logged(dir.path());
    publish(&msgs[a..b]); // while the core is down
    let core = start_core(ep.port, dir.path(), "kill-test");
    publish(&msgs[b..]);
    // The last message is a clock tick: its watermark means every event before it is committed.
    if let Err(e) = rt.block_on(watch.until(tick_before(&ticks, n - 1), Duration::from_secs(240))) {
        panic!("the core did not finish the stream after the restart ({} of {n} logged): {e}", logged(dir.path()));
    }
    drop(core);
    rt.block_on(watch.close());
    task.abort();
    assert!(at_kill > 0 && at_kill < n as i64, "killed mid-stream ({at_kill} of {n})");

    // The reference: the same messages in the same order, in-process, no kill.
    assert_eq!(logged(dir.path()), n as i64, "every event logged exactly once");
    let got = stored_orders(dir.path());
    let want = reference(&town, &msgs);
    assert!(want.len() > 20, "the stream makes orders: {}", want.len());
    assert_eq!(got.len(), want.len(), "no order lost or duplicated");
    assert_eq!(got, want);
}

/// `run --broker none` hands its store's writes to a thread that commits them in groups (write-behind):
/// killed mid-run, the store is a prefix of the run: intact, its events numbered without a gap, and every
/// work order's transition there with its audit entry (a batch is never half written). Run to the end, the
/// store holds every event and a snapshot covering the last one (a core opened on it replays nothing).
#[test]
fn a_run_killed_mid_day_leaves_its_store_a_prefix_and_a_whole_run_a_last_snapshot() {
    use std::process::Command;
    let tmp = tempfile::tempdir().unwrap();
    let check = |db: &std::path::Path| -> (i64, i64) {
        let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok", "{}", db.display());
        let (n, max): (i64, i64) = c.query_row("SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!(n, max, "events numbered 1..{max} without a gap");
        let transitions: i64 = c.query_row("SELECT COUNT(*) FROM order_events", [], |r| r.get(0)).unwrap();
        let audited: i64 = c.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0)).unwrap();
        assert_eq!(transitions, audited, "each transition with its audit entry");
        let orphans: i64 = c.query_row("SELECT COUNT(*) FROM order_events WHERE order_id NOT IN (SELECT id FROM orders)", [], |r| r.get(0)).unwrap();
        assert_eq!(orphans, 0, "every transition's order is there");
        let snap: i64 = c.query_row("SELECT COALESCE(MAX(upto), 0) FROM snapshots", [], |r| r.get(0)).unwrap();
        assert!(snap <= max, "a snapshot covers only logged events ({snap} > {max})");
        (n, snap)
    };

    // Killed once its store holds some 30 MB (about 100,000 events) of a three-day run.
    let out = tmp.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_towntwin"))
        .args(["run", "--days", "3", "--broker", "none", "-q", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let size = |f: &str| std::fs::metadata(out.join(f)).map_or(0, |m| m.len());
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while size("core.db") + size("core.db-wal") < 30 << 20 {
        assert!(std::time::Instant::now() < until, "the run's store did not grow");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished");
    let (n, _) = check(&out.join("core.db"));
    assert!(n > 0, "the killed run committed events before it was killed");

    // Run to the end: every event, and a snapshot up to the last one.
    let out = tmp.path().join("whole");
    let o = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["run", "--days", "1", "--broker", "none", "-q", "--out"]).arg(&out).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let (n, snap) = check(&out.join("core.db"));
    assert_eq!(Some(n as u64), summary["events_total"].as_u64(), "every event the twin made is logged");
    assert_eq!(snap, n, "the last snapshot covers the last event");
}
