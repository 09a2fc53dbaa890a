//! What speed work must not change: the twin's event stream (its digest), a day's work orders and their
//! histories through `towntwin run` with the core's store, and the smoke experiment's summary and
//! replications (their timings apart), pinned in `results/profiles/unchanged.json`. A change that means to
//! move them writes the new values with `TOWNTWIN_PIN=1` and says why in its commit.

use std::path::Path;
use std::process::Command;

use crate::common::root;

fn towntwin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_towntwin"))
}

fn json(file: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))).unwrap()
}

/// The value without its wall-clock timings, its keys in order (serde_json's maps are sorted).
fn untimed(mut v: serde_json::Value) -> String {
    if let Some(m) = v.as_object_mut() {
        m.remove("seconds_per_town_day");
        m.remove("wall_seconds");
    }
    v.to_string()
}

fn digest(parts: impl IntoIterator<Item = String>) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

#[test]
fn the_stream_the_orders_and_the_smoke_experiment_are_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = |n: &str| tmp.path().join(n);
    let ok = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(matches!(o.status.code(), Some(0 | 1)), "{c:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    // The twin alone, a day.
    ok(towntwin().args(["run", "--days", "1", "--broker", "none", "-q", "--no-core", "--out"]).arg(out("twin")));
    let twin = json(&out("twin/summary.json"));
    // A day with the core and its store in process.
    ok(towntwin().args(["run", "--days", "1", "--broker", "none", "-q", "--out"]).arg(out("run")));
    let run = json(&out("run/summary.json"));
    let store = towntwin_core::store::Reader::open(out("run/core.db")).unwrap();
    let orders = store.orders().unwrap();
    let history = store.history().unwrap();
    // The smoke experiment, in one process.
    ok(towntwin().arg("experiment").arg(root().join("scenarios/experiments/smoke.ron")).args(["--jobs", "1", "-q", "--out"]).arg(out("exp")));
    let mut reps: Vec<_> = std::fs::read_dir(out("exp/replications"))
        .unwrap()
        .flatten()
        .flat_map(|v| std::fs::read_dir(v.path()).unwrap().flatten().map(|f| f.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .collect();
    reps.sort();
    assert_eq!(reps.len(), 4, "two variants of two replications");

    let now = serde_json::json!({
        "twin_stream_digest": twin["stream_digest"],
        "twin_events": twin["events_total"],
        "run_stream_digest": run["stream_digest"],
        "run_work_orders": orders.len(),
        "run_orders_digest": digest(orders.iter().map(|o| serde_json::to_string(o).unwrap())),
        "run_history_digest": digest(history.iter().map(|e| serde_json::to_string(e).unwrap())),
        "experiment_summary_digest": digest([untimed(json(&out("exp/summary.json")))]),
        "experiment_replications_digest": digest(reps.iter().map(|f| untimed(json(f)))),
    });
    let pinned = root().join("results/profiles/unchanged.json");
    if std::env::var("TOWNTWIN_PIN").is_ok_and(|v| v == "1") {
        std::fs::write(&pinned, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        eprintln!("pinned {}", pinned.display());
        return;
    }
    let want = json(&pinned);
    assert_eq!(
        now, want,
        "the stream, the orders or the smoke experiment changed; if that is meant, pin the new values with TOWNTWIN_PIN=1 and say why in the commit"
    );
}
