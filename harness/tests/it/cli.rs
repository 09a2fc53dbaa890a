//! The `towntwin` binary as a user meets it: bad files exit 2 with the place and what was expected, an
//! unreachable broker is said so, and an offline run writes its summary.

use std::path::{Path, PathBuf};
use std::process::Command;

use towntwin_sim::generate::{small, to_ron};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_towntwin"))
}

/// A folder with a small town and a one-day scenario over it.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("town.ron"), to_ron(&small(11, 3, 1))).unwrap();
    let scenario = dir.path().join("s.ron");
    std::fs::write(&scenario, "(name: \"t\", seed: 5, start_date: \"2026-03-02\", days: 1, town: \"town.ron\")").unwrap();
    (dir, scenario)
}

fn run_with(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn scenario_syntax_error_exits_2_with_line_and_column() {
    let (dir, _) = fixture();
    let bad = dir.path().join("bad.ron");
    std::fs::write(&bad, "(\n  name: \"t\",\n  seed: 5,,\n)").unwrap();
    let (code, _, err) = run_with(&["run", "--broker", "none", "-q", "--scenario", path(&bad)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.ron:3:"), "names file and line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn scenario_unknown_field_and_impossible_value_exit_2() {
    let (dir, _) = fixture();
    let bad = dir.path().join("bad.ron");
    std::fs::write(&bad, "(name: \"t\", seed: 5, start_date: \"2026-03-02\", days: 1, town: \"town.ron\", fence: (recal: 0.5))").unwrap();
    let (code, _, err) = run_with(&["scenario", "check", path(&bad)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("recal") && err.contains("fence"), "{err}");
    std::fs::write(&bad, "(name: \"t\", seed: 5, start_date: \"2026-03-02\", days: 1, town: \"town.ron\", fence: (recall: 1.5))").unwrap();
    let (code, _, err) = run_with(&["run", "--broker", "none", "-q", "--scenario", path(&bad)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("fence.recall") && err.contains("probability"), "{err}");
}

#[test]
fn a_distribution_with_impossible_parameters_or_a_negative_cost_exits_2_naming_the_field() {
    let (dir, _) = fixture();
    let bad = dir.path().join("bad.ron");
    let head = "(name: \"t\", seed: 5, start_date: \"2026-03-02\", days: 1, town: \"town.ron\"";
    std::fs::write(&bad, format!("{head}, responders: (committee: (work_minutes: Exponential(mean: 0.0), cost_per_hour: -5.0)))")).unwrap();
    let (code, _, err) = run_with(&["scenario", "check", path(&bad)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("responders.committee.work_minutes") && err.contains("mean > 0"), "{err}");
    assert!(err.contains("responders.committee.cost_per_hour"), "{err}");
    std::fs::write(&bad, format!("{head}, responders: (verify_minutes: Triangular(min: 5.0, mode: 1.0, max: 9.0)))")).unwrap();
    let (code, _, err) = run_with(&["scenario", "check", path(&bad)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("responders.verify_minutes") && err.contains("min <= mode <= max"), "{err}");
    std::fs::write(&bad, format!("{head}, responders: (property: (travel_minutes: Gamma(2.0))))")).unwrap();
    let (code, _, err) = run_with(&["scenario", "check", path(&bad)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Gamma") && err.contains("Exponential"), "an unknown kind names the ones there are: {err}");
    std::fs::write(&bad, format!("{head}, responders: (property: (travel_minutes: LogNormal(mean: 10.0, sd: 4.0))))")).unwrap();
    let (code, _, err) = run_with(&["scenario", "check", path(&bad)]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn town_with_a_broken_reference_exits_2_naming_the_field() {
    let (dir, scenario) = fixture();
    let town = dir.path().join("town.ron");
    let text = std::fs::read_to_string(&town).unwrap().replacen("committee: \"C", "committee: \"X", 1);
    std::fs::write(&town, text).unwrap();
    let (code, _, err) = run_with(&["run", "--broker", "none", "-q", "--scenario", path(&scenario)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("town.ron") && err.contains("estates[0].committee"), "{err}");
}

#[test]
fn unreachable_broker_is_reported_and_exits_non_zero() {
    let (dir, scenario) = fixture();
    let out = dir.path().join("out");
    let (code, _, err) = run_with(&["run", "-q", "--scenario", path(&scenario), "--broker", "mqtt://127.0.0.1:1", "--out", path(&out)]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach the MQTT broker"), "{err}");
    assert!(!out.exists(), "a run that cannot start leaves no results folder behind");
}

#[test]
fn a_broker_log_too_small_or_not_a_number_exits_2_naming_the_flag() {
    for bad in ["5", "lots"] {
        let (code, _, err) = run_with(&["broker", "--port", "0", "--log-mib", bad]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--log-mib"), "{err}");
    }
}

#[test]
fn offline_run_writes_summary_and_ground_truth() {
    let (dir, scenario) = fixture();
    let out = dir.path().join("out");
    let (code, stdout, err) = run_with(&["run", "--broker", "none", "-q", "--scenario", path(&scenario), "--out", path(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("Events by type") && stdout.contains("Ground-truth incidents"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    for key in ["events_total", "events_by_type", "stream_digest", "ground_truth_incidents"] {
        assert!(v.get(key).is_some(), "summary.json lacks {key}");
    }
    let by_type: u64 = v["events_by_type"].as_object().unwrap().values().map(|x| x.as_u64().unwrap()).sum();
    assert_eq!(by_type, v["events_total"].as_u64().unwrap());
    let truth = std::fs::read_to_string(out.join("ground_truth.jsonl")).unwrap();
    assert_eq!(truth.lines().count() as u64, v["ground_truth_incidents"].as_u64().unwrap());
}

#[test]
fn a_second_run_into_the_same_folder_is_refused_and_the_first_is_kept() {
    let (dir, scenario) = fixture();
    let out = dir.path().join("out");
    let (code, first_stdout, err) = run_with(&["run", "--broker", "none", "-q", "--scenario", path(&scenario), "--out", path(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(first_stdout.contains("Work orders by rule"), "{first_stdout}");
    let summary = std::fs::read(out.join("summary.json")).unwrap();
    let store = std::fs::read(out.join("core.db")).unwrap();
    // Same folder, another seed: it must not report the first run's work orders as its own.
    let (code, stdout, err) = run_with(&["run", "--broker", "none", "-q", "--seed", "6", "--scenario", path(&scenario), "--out", path(&out)]);
    assert_eq!(code, 2, "refused as a usage error: {err}");
    assert!(err.contains("already holds a run") && err.contains("--out"), "says why and what to do: {err}");
    assert!(!stdout.contains("Work orders"), "reports no results: {stdout}");
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary, "the first run's summary is untouched");
    assert_eq!(std::fs::read(out.join("core.db")).unwrap(), store, "the first run's store is untouched");
    // A store left behind without a summary (a run killed before its end) is refused too.
    std::fs::remove_file(out.join("summary.json")).unwrap();
    let (code, _, err) = run_with(&["run", "--broker", "none", "-q", "--scenario", path(&scenario), "--out", path(&out)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("core.db") && err.contains("already exists"), "{err}");
}

#[test]
fn a_token_is_issued_for_a_principal_and_kept_only_as_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("core.db");
    let (code, stdout, err) = run_with(&["core", "token", "issue", "--principal", "committee:C05", "--db", path(&db)]);
    assert_eq!(code, 0, "{err}");
    let token = stdout.trim();
    assert_eq!(token.len(), 64, "{stdout}");
    let tokens = towntwin_core::store::Reader::open(&db).unwrap().tokens().unwrap();
    let [(hash, principal)] = &tokens[..] else { panic!("one token kept: {tokens:?}") };
    assert_eq!(principal, "committee:C05");
    assert_ne!(hash, token, "the store keeps a hash, not the token");
    assert_eq!(*hash, towntwin_core::auth::hash(token));
    let (code, _, err) = run_with(&["core", "token", "issue", "--principal", "district/<script>", "--db", path(&db)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected district"), "{err}");
}

#[test]
fn the_audit_log_verifies_and_a_changed_removed_or_cut_entry_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("core.db");
    let (code, _, err) = run_with(&["core", "audit", "verify", "--db", path(&db)]);
    assert_eq!(code, 2, "a missing store is a usage error, not an empty log: {err}");
    assert!(!db.exists(), "verifying never creates a store");
    for p in ["town", "committee:C01", "estate:E001/li", "estate:E002"] {
        assert_eq!(run_with(&["core", "token", "issue", "--principal", p, "--db", path(&db)]).0, 0);
    }
    let (code, out, err) = run_with(&["core", "audit", "verify", "--db", path(&db)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("audit log intact: 4 entries"), "{out}");
    let head = out.trim().rsplit(' ').next().unwrap().to_string();
    let (_, shown, _) = run_with(&["core", "audit", "show", "--db", path(&db), "--tail", "1"]);
    assert!(shown.contains("token.issue") && shown.contains("estate:E002"), "{shown}");

    let c = rusqlite::Connection::open(&db).unwrap();
    assert!(c.execute("UPDATE audit SET target = 'district' WHERE seq = 2", []).is_err(), "the triggers refuse changes");
    // Someone who goes around the triggers is found by the chain.
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;").unwrap();
    c.execute("UPDATE audit SET target = 'district' WHERE seq = 2", []).unwrap();
    let (code, _, err) = run_with(&["core", "audit", "verify", "--db", path(&db)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("audit entry 2: its contents do not match its hash"), "{err}");
    c.execute("UPDATE audit SET target = 'committee:C01' WHERE seq = 2", []).unwrap();
    assert_eq!(run_with(&["core", "audit", "verify", "--db", path(&db)]).0, 0, "restored, it verifies again");
    c.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
    let (code, _, err) = run_with(&["core", "audit", "verify", "--db", path(&db)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("audit entries 3..=3 are missing"), "{err}");
    c.execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
    assert_eq!(run_with(&["core", "audit", "verify", "--db", path(&db)]).0, 0, "a cut at the end alone leaves a valid chain");
    let (code, _, err) = run_with(&["core", "audit", "verify", "--db", path(&db), "--head", &head]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not contain the head"), "{err}");
}

#[test]
fn logs_can_be_json_lines_for_a_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_towntwin"))
        .env("TOWNTWIN_LOG", "debug")
        .args(["--log-format", "json", "run", "--days", "1", "--broker", "none", "-q", "--no-core", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty(), "debug logs were asked for");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string() && v["message"].is_string(), "{l}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["--log-format", "xml", "scenario", "check", "x.ron"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}
