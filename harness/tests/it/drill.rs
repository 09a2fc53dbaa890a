//! Drill scripts as a trainer meets them: the shipped script checks and prints its events list; a script
//! that names an estate, flat, resident or device the town does not have, whose start conditions form a
//! cycle, or that expects a trainee to act outside their scope is refused before anything starts, naming
//! the file, the field and the reason, with exit 2.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{http, root};
use towntwin_harness::drill::script;

fn shipped() -> PathBuf {
    root().join("scenarios/drills/lone-elderly.ron")
}

/// The shipped script with `edits` applied (each `from` must be in it), written next to a copy that points
/// at the repository's baseline scenario.
fn edited(dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(shipped()).unwrap();
    let baseline = root().join("scenarios/baseline.ron");
    text = text.replace("scenario: \"../baseline.ron\"", &format!("scenario: {:?}", baseline.to_str().unwrap()));
    for (from, to) in edits {
        assert!(text.contains(from), "the shipped script has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    let file = dir.join("drill.ron");
    std::fs::write(&file, text).unwrap();
    file
}

/// The problems `script::load` reports, as (field, message).
fn refused(file: &Path) -> Vec<(String, String)> {
    match script::load(file) {
        Ok(_) => panic!("{} was accepted", file.display()),
        Err(e) => e.0.into_iter().map(|e| (e.field.unwrap_or_default(), e.message)).collect(),
    }
}

fn has(problems: &[(String, String)], field: &str, words: &str) -> bool {
    problems.iter().any(|(f, m)| f == field && m.contains(words))
}

#[test]
fn the_shipped_script_checks_and_orders_its_injects() {
    let d = script::load(&shipped()).unwrap();
    let ids: Vec<&str> = d.order.iter().map(|&i| d.script.injects[i].id.as_str()).collect();
    let pos = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    assert_eq!(ids.len(), 4);
    assert!(pos("I1") < pos("I2") && pos("I2") < pos("I4"), "each after the one it waits for: {ids:?}");
    assert_eq!(d.areas, vec!["E001"; 4]);
    let table = towntwin_harness::drill::msel(&d);
    for needle in [
        "I1: Resident V0001",
        "fire in E001 B16-101",
        "9 new faces move into E001 B01-105",
        "E001-gate-02 dark for 6 h",
        "cadre Accept within 30 min (O1)",
        "a neighbour calls 12345 5 min later",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
}

#[test]
fn unknown_targets_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = edited(
        dir.path(),
        &[
            ("Incapacitate(resident: \"V0001\"", "Incapacitate(resident: \"V9999\""),
            ("Fire(estate: \"E001\", flat: \"B16-101\")", "Fire(estate: \"E001\", flat: \"B16-9901\")"),
            ("NewFaces(estate: \"E001\"", "NewFaces(estate: \"E999\""),
            ("DeviceDark(device: \"E001-gate-02\"", "DeviceDark(device: \"E001-gate-99\""),
        ],
    );
    let p = refused(&file);
    assert!(has(&p, "injects[0].what.resident", "V9999"), "{p:?}");
    assert!(has(&p, "injects[1].what.flat", "no flat B16-9901"), "{p:?}");
    assert!(has(&p, "injects[2].what.estate", "E999"), "{p:?}");
    assert!(has(&p, "injects[3].what.device", "E001-gate-99"), "{p:?}");
}

#[test]
fn a_cycle_in_start_conditions_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    // I1 now waits for I4, which waits for I2, which waits for I1.
    let file = edited(dir.path(), &[("start: At(minute: 5.0)", "start: AfterStarted(inject: \"I4\", minutes: 1.0)")]);
    let p = refused(&file);
    assert!(p.iter().any(|(f, m)| f.ends_with(".start") && m.contains("cycle") && m.contains("I1") && m.contains("I2") && m.contains("I4")), "{p:?}");
    // And one waiting for an inject that is not there.
    let file = edited(dir.path(), &[("AfterHandled(inject: \"I1\"", "AfterHandled(inject: \"I9\"")]);
    assert!(has(&refused(&file), "injects[1].start.inject", "I9"), "refused for the unknown inject");
}

#[test]
fn an_expectation_outside_the_trainees_scope_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The property manager now plays another estate; the committee's cadre another committee.
    let file = edited(
        dir.path(),
        &[
            ("principal: \"estate:E001/property\"", "principal: \"estate:E002/property\""),
            ("principal: \"committee:C25/cadre\"", "principal: \"committee:C01/cadre\""),
        ],
    );
    let p = refused(&file);
    assert!(has(&p, "injects[0].expect[0].by", "does not reach E001"), "{p:?}");
    assert!(has(&p, "injects[2].expect[0].by", "committee:C01"), "{p:?}");
    // A principal of a committee the town does not have.
    let file = edited(dir.path(), &[("principal: \"committee:C25/cadre\"", "principal: \"committee:C99/cadre\"")]);
    assert!(has(&refused(&file), "trainees[1].principal", "C99"));
}

/// A step in a loop where it cannot be taken: a whistle above the estate, an escalation above the top.
#[test]
fn a_step_in_a_loop_where_it_cannot_be_taken_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = edited(
        dir.path(),
        &[
            (
                r#"(by: "cadre", action: Notice, within_minutes: 20.0, points: 5, objective: "O1")"#,
                r#"(by: "cadre", action: Whistle, within_minutes: 20.0, points: 5, objective: "O1", loop: Some(Medium))"#,
            ),
            (
                r#"(by: "cadre", action: Accept, within_minutes: 30.0, points: 10, objective: "O1")"#,
                r#"(by: "cadre", action: Escalate, within_minutes: 30.0, points: 10, objective: "O1", loop: Some(Large))"#,
            ),
        ],
    );
    let p = refused(&file);
    assert!(has(&p, "injects[0].expect[0].loop", "small loop"), "{p:?}");
    assert!(has(&p, "injects[0].expect[1].loop", "nothing is above the large loop"), "{p:?}");
    // The same steps in loops where they can be taken are accepted.
    let file = edited(
        dir.path(),
        &[(
            r#"action: Notice, within_minutes: 20.0, points: 5, objective: "O1")"#,
            r#"action: Whistle, within_minutes: 20.0, points: 5, objective: "O1", loop: Some(Small))"#,
        )],
    );
    script::load(&file).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn targets_the_twin_cannot_make_real_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // B01-101 is owner-occupied; building 9 of E001 has no smoke detector.
    let file = edited(dir.path(), &[("flat: \"B01-105\"", "flat: \"B01-101\""), ("flat: \"B16-101\"", "flat: \"B09-101\"")]);
    let p = refused(&file);
    assert!(has(&p, "injects[2].what.flat", "rented flat"), "{p:?}");
    assert!(has(&p, "injects[1].what.flat", "no smoke detector"), "{p:?}");
    // A drill that runs past the scenario's days.
    let file = edited(dir.path(), &[("start: \"2026-03-02T08:00\"", "start: \"2026-03-04T23:00\"")]);
    assert!(has(&refused(&file), "start", "inside the scenario"));
}

#[test]
fn the_cli_checks_a_script_and_refuses_a_bad_one_with_exit_2() {
    let ok = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["drill", "--check"]).arg(shipped()).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("| I1: Resident V0001"));

    let dir = tempfile::tempdir().unwrap();
    let file =
        edited(dir.path(), &[("Incapacitate(resident: \"V0001\"", "Incapacitate(resident: \"V9999\""), ("minutes: 180,", "minutes: 180, colour: \"red\",")]);
    let bad = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["drill", "--check"]).arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("drill.ron:") && err.contains("colour"), "an unknown field, with file and place: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A short drill, run as a trainer runs one: `towntwin drill FILE` with a trainee working the queue over the
/// core's API and the controller's panel used over HTTP. One fire is handled in time, a second ignored; a
/// manual inject is fired by the controller and another never is. The after-action report scores the first
/// as met, the second as missed, and `--replay` scores the folder the same way.
#[test]
fn a_live_drill_scores_a_handled_inject_as_met_and_an_ignored_one_as_missed() {
    let tmp = tempfile::tempdir().unwrap();
    let baseline = root().join("scenarios/baseline.ron");
    let script = format!(
        r#"(
    name: "short",
    scenario: {baseline:?},
    start: "2026-03-02T00:10",
    minutes: 40,
    trainees: [(name: "property", principal: "estate:E001/property")],
    objectives: [(id: "O1", text: "Answer a fire alarm"), (id: "O2", text: "Answer another"), (id: "O3", text: "Never asked for")],
    injects: [
        (id: "I1", title: "Fire in B16", start: At(minute: 2.0), what: Fire(estate: "E001", flat: "B16-101"),
         expect: [
            (by: "property", action: Notice, within_minutes: 10.0, points: 5, objective: "O1"),
            (by: "property", action: Accept, within_minutes: 12.0, points: 5, objective: "O1"),
            (by: "property", action: Resolve, within_minutes: 20.0, points: 10, objective: "O1"),
         ]),
        (id: "I2", title: "Fire in B03", start: AfterStarted(inject: "I1", minutes: 18.0), what: Fire(estate: "E001", flat: "B03-101"),
         expect: [(by: "property", action: Accept, within_minutes: 10.0, points: 10, objective: "O2")]),
        (id: "I3", title: "A camera goes dark", start: Manual, what: DeviceDark(device: "E001-gate-02", hours: 1.0)),
        (id: "I4", title: "Never fired", start: Manual, what: DeviceDark(device: "E001-gate-01", hours: 1.0),
         expect: [(by: "property", action: Accept, within_minutes: 5.0, points: 5, objective: "O3")]),
    ],
    evaluators: [(name: "ana", objectives: ["O1", "O2"])],
)"#,
        baseline = baseline.to_str().unwrap()
    );
    let file = tmp.path().join("short.ron");
    std::fs::write(&file, script).unwrap();
    let out = tmp.path().join("short-drill");
    let drill = common::LiveDrill::start(&file, &out, &["--speed", "60"]);
    let printed = drill.printed_with(1, 1);
    let (console, panel, controller) = (printed.console.clone(), printed.panel.clone(), printed.controller.clone());
    let trainee = printed.trainees["property"].clone();
    let ana = printed.evaluators["ana"].clone();
    // The panel: refused without the controller's token, with a speed it cannot keep, for an unknown inject.
    assert_eq!(http(&panel, "GET", "/drill", Some(&trainee), None).0, 401);
    assert_eq!(http(&panel, "POST", "/drill/speed", Some(&controller), Some(r#"{"speed": -3}"#)).0, 400);
    assert_eq!(http(&panel, "POST", "/drill/injects/I9/fire", Some(&controller), None).0, 404);
    // The trainee works the first fire's order: opens it, accepts, starts and resolves it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut handled = None;
    while handled.is_none() && std::time::Instant::now() < deadline {
        let (s, orders) = http(&console, "GET", "/orders?rule=smoke&state=dispatched", Some(&trainee), None);
        assert_eq!(s, 200);
        if let Some(o) = orders.as_array().and_then(|a| a.iter().find(|o| o["area"] == "E001")) {
            let id = o["id"].as_u64().unwrap();
            assert_eq!(http(&console, "GET", &format!("/orders/{id}"), Some(&trainee), None).0, 200);
            for action in ["accept", "start", "resolve"] {
                let (s, body) = http(&console, "POST", &format!("/orders/{id}/actions"), Some(&trainee), Some(&format!(r#"{{"action":"{action}"}}"#)));
                assert_eq!(s, 200, "{action}: {body}");
            }
            handled = Some(id);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let handled = handled.expect("the injected fire's order reached the trainee's queue");
    // The controller fires the manual inject I3, and cannot fire it twice.
    assert_eq!(http(&panel, "POST", "/drill/injects/I3/fire", Some(&controller), None).0, 204);
    assert_eq!(http(&panel, "POST", "/drill/injects/I3/fire", Some(&controller), None).0, 409);
    // Ad-hoc injects from the catalogue, checked as a script's: refused naming what is wrong, nothing of
    // the running drill lost; one the twin can make real goes out.
    let (s, cat) = http(&panel, "GET", "/drill/catalogue", Some(&controller), None);
    assert_eq!((s, cat.as_array().map(Vec::len)), (200, Some(9)), "{cat}");
    let adhoc = |body: &str| http(&panel, "POST", "/drill/injects", Some(&controller), Some(body));
    let (s, e) = adhoc(r#"{"id": "X1", "title": "a fire", "what": {"Fire": {"estate": "E001", "flat": "B16-9901"}}}"#);
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["problems"][0]["field"], "what.flat", "{e}");
    let (s, e) = adhoc(r#"{"id": "I1", "title": "again", "what": {"DeviceDark": {"device": "E001-gate-01", "hours": 1.0}}}"#);
    assert_eq!(s, 409, "an id the drill has: {e}");
    let bags = r#"{"id": "X2", "title": "bags", "what": {"DumpedBags": {"kiosk": "E001-bin-001", "bags": 2}},
        "expect": [{"by": "property", "action": "Accept", "within_minutes": 30.0, "points": 5, "objective": "O1"}]}"#;
    let (s, e) = adhoc(bags);
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("no rule of this drill's rules detects garbage.dumping"), "{e}");
    assert_eq!(adhoc(r#"{"id": "X3", "title": "x", "what": {"Teleport": {}}}"#).0, 400);
    assert_eq!(http(&panel, "POST", "/drill/injects", Some(&trainee), Some("{}")).0, 401);
    let (s, e) = adhoc(r#"{"id": "X1", "title": "Gate E001-gate-01 goes dark", "what": {"DeviceDark": {"device": "E001-gate-01", "hours": 1.0}}}"#);
    assert_eq!((s, e["id"].as_str()), (201, Some("X1")), "{e}");
    // The evaluator: their guide; observations on their objectives only, kept in the core's audit log.
    let (s, eeg) = http(&panel, "GET", "/drill/eeg", Some(&ana), None);
    assert_eq!(s, 200, "{eeg}");
    assert_eq!(eeg["objectives"].as_array().map(|o| o.len()), Some(2), "{eeg}");
    assert_eq!(eeg["objectives"][0]["tasks"][0]["inject"], "I1", "{eeg}");
    assert_eq!(http(&panel, "GET", "/drill/eeg", Some(&trainee), None).0, 403, "a trainee is no evaluator");
    assert_eq!(http(&panel, "GET", "/drill/eeg", Some(&controller), None).0, 403, "nor is the controller");
    let observe = |body: &str| http(&panel, "POST", "/drill/observations", Some(&ana), Some(body));
    let (s, e) = observe(r#"{"objective": "O3", "kind": "strength", "text": "not mine"}"#);
    assert_eq!(s, 403, "an objective ana does not evaluate: {e}");
    assert!(e["error"].as_str().unwrap().contains("ana evaluates O1, O2"), "{e}");
    assert_eq!(observe(r#"{"objective": "O1", "inject": "I9", "kind": "strength", "text": "x"}"#).0, 400);
    assert_eq!(observe(r#"{"objective": "O1", "kind": "strength", "text": "   "}"#).0, 400);
    assert_eq!(observe(r#"{"objective": "O1", "kind": "praise", "text": "x"}"#).0, 400);
    let (s, e) = observe(r#"{"objective": "O1", "inject": "I1", "kind": "strength", "text": "Opened the alarm at once and went"}"#);
    assert_eq!(s, 201, "{e}");
    let (s, e) = observe(
        r#"{"objective": "O2", "inject": "I2", "kind": "improvement", "text": "The second alarm sat in the queue", "corrective_action": "A second pair of eyes on the queue at shift change"}"#,
    );
    assert_eq!(s, 201, "{e}");
    // The evaluator can watch the console but acts on nothing.
    let (s, _) = http(&console, "POST", &format!("/orders/{handled}/actions"), Some(&ana), Some(r#"{"action":"verify"}"#));
    assert_eq!(s, 403, "an evaluator acts on no order");
    // The panel shows the order the inject made (once the twin has had the core's notice of it).
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        let (s, st) = http(&panel, "GET", "/drill", Some(&controller), None);
        assert_eq!(s, 200);
        status = st;
        if status["injects"][0]["order"].as_u64() == Some(handled) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status["injects"][0]["order"].as_u64(), Some(handled), "{status}");
    let (code, printed) = drill.finish(std::time::Duration::from_secs(300));
    assert!(code.success(), "{printed}");
    assert!(printed.contains("After-action report:"), "{printed}");

    let aar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("aar.json")).unwrap()).unwrap();
    let inject = |id: &str| aar["injects"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap().clone();
    let i1 = inject("I1");
    assert_eq!(i1["order"].as_u64(), Some(handled), "{i1}");
    for x in i1["expectations"].as_array().unwrap() {
        assert_eq!(x["met"], true, "handled in time: {x}");
    }
    let i2 = inject("I2");
    assert_eq!(i2["status"], "started", "{i2}");
    assert!(i2["order"].is_u64(), "the ignored fire made an order too: {i2}");
    assert_eq!((i2["expectations"][0]["met"].as_bool(), i2["expectations"][0]["done_after_minutes"].is_null()), (Some(false), true), "{i2}");
    assert_eq!(inject("I3")["status"], "started");
    assert_eq!(inject("I4")["status"], "not_started");
    let x1 = inject("X1");
    assert_eq!((x1["status"].as_str(), x1["adhoc"].as_bool()), (Some("started"), Some(true)), "the ad-hoc inject went out: {x1}");
    assert!(aar["injects"].as_array().unwrap().iter().all(|i| i["id"] != "X2"), "a refused inject left no trace");
    // The evaluator's observations, read back from the store; the hotwash; the improvement plan, with a
    // row for the missed expectation and one for the evaluator's area for improvement, as CSV too.
    let obs = aar["observations"].as_array().unwrap();
    assert_eq!(obs.len(), 2, "{obs:?}");
    assert_eq!((obs[0]["evaluator"].as_str(), obs[0]["kind"].as_str()), (Some("ana"), Some("strength")));
    let plan = aar["improvement_plan"].as_array().unwrap();
    assert!(plan.iter().any(|r| r["source"] == "expectation of I2" && r["owner"] == "estate:E001/property"), "{plan:?}");
    assert!(plan.iter().any(|r| r["corrective_action"] == "A second pair of eyes on the queue at shift change" && r["objective"] == "O2"), "{plan:?}");
    let hot = aar["hotwash"].as_array().unwrap();
    assert!(hot[0]["strengths"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().contains("Opened the alarm at once")), "{hot:?}");
    let csv = std::fs::read_to_string(out.join("improvement-plan.csv")).unwrap();
    assert!(csv.starts_with("Objective,Capability,Area for improvement,Corrective action,Owner,Due,Source\n"), "{csv}");
    assert_eq!(csv.lines().count(), plan.len() + 1, "{csv}");
    let audit = towntwin_core::store::Reader::open(out.join("core.db")).unwrap().audit_entries().unwrap();
    assert_eq!(audit.iter().filter(|e| e.entry.what == "observe" && e.entry.actor == "town/evaluator-ana").count(), 2);
    // The report says why: an inject never fired, an expectation nobody met.
    assert_eq!(inject("I4")["why"], "the controller never fired it", "{}", inject("I4"));
    let why = i2["expectations"][0]["why"].as_str().unwrap_or_default();
    assert!(why.contains("nobody did it") && why.contains("property did nothing on it"), "{why}");
    assert!(i1["why"].is_null() && i1["expectations"][0]["why"].is_null(), "{i1}");
    let rating = |id: &str| aar["objectives"].as_array().unwrap().iter().find(|o| o["id"] == id).unwrap()["rating"].clone();
    assert_eq!((rating("O1"), rating("O2")), (serde_json::json!("P"), serde_json::json!("U")));
    // What was never due (an inject never fired) is not exercised: left out of the points possible.
    assert_eq!(rating("O3"), "-");
    assert_eq!((aar["earned"].as_u64(), aar["possible"].as_u64()), (Some(20), Some(30)), "{aar}");
    // The report to forward, in Chinese (the town's) and English, each linking to the other; the plan too.
    let html = std::fs::read_to_string(out.join("aar.en.html")).unwrap();
    assert!(html.contains("id=improvement-plan") && html.contains("The second alarm sat in the queue"));
    assert!(html.contains("<svg") && html.contains("Fire in B03") && !html.contains("src=\"http"), "self-contained, with the timeline");
    assert!(html.contains("the controller never fired it") && html.contains("href=aar.html"), "the reasons, and the Chinese");
    let zh = std::fs::read_to_string(out.join("aar.html")).unwrap();
    assert!(zh.contains("<html lang=zh-CN>") && zh.contains("演练评估报告") && zh.contains("改进计划") && zh.contains("href=aar.en.html"));
    assert!(zh.contains("导调员：发出注入 I3（现实第 ") && zh.contains("导调员：发出临时注入 X1"), "the controller's commands, in Chinese");
    assert!(zh.contains("导调员始终未发出该注入") && zh.contains("无人完成：工单") && zh.contains("The second alarm sat in the queue"), "why, in Chinese");
    for english in ["nobody did it", "did nothing on it", "Areas for improvement", " loop)", " made (", "After-action", "not started"] {
        assert!(!zh.contains(english), "{english:?} left in English in the Chinese report");
    }
    let zh_csv = std::fs::read_to_string(out.join("improvement-plan.zh.csv")).unwrap();
    assert!(zh_csv.starts_with("\u{FEFF}目标,能力,待改进之处,整改措施,责任单位,完成期限,来源\n") && zh_csv.contains("复训："), "{zh_csv}");
    assert_eq!(zh_csv.lines().count(), csv.lines().count(), "{zh_csv}");

    // Replayed from the folder: the same report.
    let replayed = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["drill", "--replay", out.to_str().unwrap()]).output().unwrap();
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("aar.json")).unwrap()).unwrap();
    assert_eq!(again, aar);
    // The same folder twice is refused before anything starts.
    let twice = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["drill", file.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(twice.status.code(), Some(2), "{}", String::from_utf8_lossy(&twice.stderr));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already holds a drill"));
}

/// Every shipped drill as CI knows it works: each script checks, and played through by scripted trainees
/// (`--play`, every trainee acting through the API with their own token, at top speed) it earns every
/// point of every inject that started; what did not start says why.
#[test]
fn every_shipped_drill_plays_through_with_scripted_trainees() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(root().join("scenarios/drills")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "ron")).collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let name = file.file_stem().unwrap().to_str().unwrap().to_string();
        let d = script::load(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = tmp.path().join(&name);
        let run = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["drill", "--play", "--out"]).arg(&out).arg(&file).output().unwrap();
        let printed = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{name}: {printed}\n{}", String::from_utf8_lossy(&run.stderr));
        let aar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("aar.json")).unwrap()).unwrap();
        let mut exercised = 0;
        for i in aar["injects"].as_array().unwrap() {
            let inject = d.script.injects.iter().find(|x| x.id == i["id"]).unwrap();
            if i["status"] == "started" {
                for x in i["expectations"].as_array().unwrap() {
                    assert_eq!(x["met"], true, "{name} {}: played, every expectation is met: {x}\n{printed}", i["id"]);
                    exercised += 1;
                }
                assert!(i["order"].is_u64(), "{name} {}: {i}", i["id"]);
            } else {
                assert!(i["why"].as_str().is_some_and(|w| !w.is_empty()), "{name} {}: says why it did not start: {i}", i["id"]);
                if inject.start == script::Start::Manual {
                    assert_eq!(i["why"], "the controller never fired it");
                }
            }
        }
        assert!(exercised > 0, "{name}: nothing was exercised");
        assert_eq!(aar["earned"], aar["possible"], "{name}: {printed}");
        for o in aar["objectives"].as_array().unwrap() {
            assert!(o["rating"] == "P" || o["rating"] == "-", "{name}: {o}");
        }
        // The played trainees' steps are printed.
        assert!(printed.contains("played "), "{name}: {printed}");
    }
}

/// The large loop: a step a script expects in one loop counts only when taken there. The task-force drill
/// with the police also reporting at the medium loop's joint visit: that report meets the medium-loop
/// expectation, not the large loop's, which the police's second report (with the task force) meets; the
/// order's path through the loops is in the timeline.
#[test]
fn a_step_expected_in_a_loop_counts_only_in_that_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(root().join("scenarios/drills/task-force.ron")).unwrap();
    for input in ["platform/after.ron", "rules/platform.ron", "policies/source-loops.ron"] {
        text = text.replace(&format!("\"../{input}\""), &format!("{:?}", root().join("scenarios").join(input).to_str().unwrap()));
    }
    let notice = r#"(by: "police", action: Notice, within_minutes: 180.0, points: 5, objective: "O3"),"#;
    assert!(text.contains(notice));
    text = text.replace(notice, &format!(r#"{notice} (by: "police", action: Report, within_minutes: 200.0, points: 5, objective: "O3", loop: Some(Medium)),"#));
    let file = tmp.path().join("drill.ron");
    std::fs::write(&file, text).unwrap();
    let out = tmp.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["drill", "--play", "--out"]).arg(&out).arg(&file).output().unwrap();
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{printed}\n{}", String::from_utf8_lossy(&run.stderr));
    let aar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("aar.json")).unwrap()).unwrap();
    let x = aar["injects"][0]["expectations"].as_array().unwrap().clone();
    let report =
        |by: &str, l: &str| x.iter().find(|x| x["by"] == by && x["action"] == "Report" && x["loop"] == l).unwrap_or_else(|| panic!("{by} {l}: {x:?}")).clone();
    let (medium, large) = (report("police", "Medium"), report("police", "Large"));
    assert!(medium["met"] == true && large["met"] == true, "{medium} {large}\n{printed}");
    let (m, l) = (medium["done_after_minutes"].as_f64().unwrap(), large["done_after_minutes"].as_f64().unwrap());
    let failed = x.iter().find(|x| x["by"] == "housing" && x["action"] == "Fail").unwrap()["done_after_minutes"].as_f64().unwrap();
    assert!(m < failed && failed < l, "medium report at {m}, the medium loop failed at {failed}, large report at {l}");
    assert_eq!(aar["earned"], aar["possible"], "{printed}");
    // The order's way up, in the timeline, in both languages.
    let timeline: Vec<String> = aar["timeline"].as_array().unwrap().iter().map(|m| m["what"].as_str().unwrap().to_string()).collect();
    for (level, action) in [("small", "whistle"), ("medium", "fail"), ("large", "report")] {
        assert!(timeline.iter().any(|t| t.contains(&format!("{level} loop): {action} by"))), "{level} {action}: {timeline:?}");
    }
    let zh = std::fs::read_to_string(out.join("aar.html")).unwrap();
    assert!(zh.contains("大闭环）：town/task-force 报到") && zh.contains("报到（大闭环）"), "the large loop, in Chinese");
}

/// The injects of the source's other scenarios, refused where the twin could not make them real or the
/// platform could not notice them: works where no noise monitor hears, an e-bike in a building with no
/// lift detector, charging where no monitor sees it, bags beside something that is not a kiosk, a
/// violation at a camera that is not a road's or with no such code, an inject whose kind no rule of the
/// drill detects, and a report expected of a trainee who plays no role.
#[test]
fn the_source_scenarios_injects_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, rules: &str, injects: &str| {
        let scenario = root().join("scenarios/platform/after.ron");
        let text = format!(
            r#"(
    name: "checked",
    scenario: {scenario:?},
    {rules}
    start: "2026-03-02T09:00",
    minutes: 60,
    trainees: [(name: "property", principal: "estate:E040/property"), (name: "dispatcher", principal: "town/dispatcher")],
    objectives: [(id: "O1", text: "Act")],
    injects: [{injects}],
)"#,
            scenario = scenario.to_str().unwrap()
        );
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    };
    let rules = format!("rules: Some({:?}),", root().join("scenarios/rules/platform.ron").to_str().unwrap());
    let expect = r#"expect: [(by: "property", action: Accept, within_minutes: 30.0, points: 5, objective: "O1")]"#;
    let file = write(
        "bad.ron",
        &rules,
        &format!(
            r#"(id: "I1", title: "works", start: At(minute: 1.0), what: IllegalWorks(estate: "E040", flat: "B01-101"), {expect}),
        (id: "I2", title: "lift", start: At(minute: 1.0), what: EbikeInElevator(estate: "E040", flat: "B01-101"), {expect}),
        (id: "I3", title: "charging", start: At(minute: 1.0), what: IndoorCharging(estate: "E040", flat: "B02-101"), {expect}),
        (id: "I4", title: "bags", start: At(minute: 1.0), what: DumpedBags(kiosk: "E040-smoke-001", bags: 40), {expect}),
        (id: "I5", title: "fence", start: At(minute: 1.0), what: FenceViolation(camera: "E040-bin-001", code: 99)),
        (id: "I6", title: "vacant", start: At(minute: 1.0), what: IndoorCharging(estate: "E040", flat: "B01-401")),
        (id: "I7", title: "report", start: At(minute: 1.0), what: FenceViolation(camera: "R01-camera-003", code: 1),
         expect: [(by: "dispatcher", action: Report, within_minutes: 30.0, points: 5, objective: "O1")])"#
        ),
    );
    let p = refused(&file);
    assert!(has(&p, "injects[0].what.flat", "no noise monitor"), "{p:?}");
    assert!(has(&p, "injects[1].what.flat", "no lift with an e-bike detector"), "{p:?}");
    assert!(has(&p, "injects[2].what.flat", "no electrical-fire monitor"), "{p:?}");
    assert!(has(&p, "injects[3].what.kiosk", "not a sorting kiosk") && has(&p, "injects[3].what.bags", "1 to 12"), "{p:?}");
    assert!(has(&p, "injects[4].what.camera", "not a road camera") && has(&p, "injects[4].what.code", "1 to 15"), "{p:?}");
    assert!(has(&p, "injects[5].what.flat", "vacant"), "{p:?}");
    assert!(has(&p, "injects[6].expect[0].action", "plays none"), "{p:?}");
    // Bags dumped, with the shipped rules (no dumping rule): nothing would make an order to act on.
    let file =
        write("no-rule.ron", "", &format!(r#"(id: "I1", title: "bags", start: At(minute: 1.0), what: DumpedBags(kiosk: "E040-bin-001", bags: 3), {expect})"#));
    assert!(has(&refused(&file), "injects[0].what", "no rule of this drill's rules detects garbage.dumping"), "{:?}", refused(&file));
    // The same with the platform's rules is accepted.
    let file =
        write("ok.ron", &rules, &format!(r#"(id: "I1", title: "bags", start: At(minute: 1.0), what: DumpedBags(kiosk: "E040-bin-001", bags: 3), {expect})"#));
    assert!(script::load(&file).is_ok());
}

/// The events list as CSV in HSEEP's columns, out and back: a shipped script's exported list read back in
/// gives the same injects; a list with a column missing or unknown, or a row that does not parse, is
/// refused naming the row and column, exit 2.
#[test]
fn the_msel_goes_out_as_csv_and_comes_back() {
    let bin = env!("CARGO_BIN_EXE_towntwin");
    let dir = tempfile::tempdir().unwrap();
    for name in ["group-rental", "lone-elderly", "vehicles", "task-force"] {
        let file = root().join(format!("scenarios/drills/{name}.ron"));
        let out = Command::new(bin).args(["drill", "--check", "--csv"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let csv = dir.path().join(format!("{name}.csv"));
        std::fs::write(&csv, &out.stdout).unwrap();
        let back = Command::new(bin).arg("drill").arg(&file).arg("--import-msel").arg(&csv).output().unwrap();
        assert!(back.status.success(), "{name}: {}", String::from_utf8_lossy(&back.stderr));
        let again: script::Script = ron::from_str(&String::from_utf8_lossy(&back.stdout)).unwrap();
        let shipped = script::load(&file).unwrap().script;
        assert_eq!(serde_json::to_value(&again.injects).unwrap(), serde_json::to_value(&shipped.injects).unwrap(), "{name}");
    }
    let file = root().join("scenarios/drills/group-rental.ron");
    let good = String::from_utf8(Command::new(bin).args(["drill", "--check", "--csv"]).arg(&file).output().unwrap().stdout).unwrap();
    let refused = |text: &str| {
        let csv = dir.path().join("bad.csv");
        std::fs::write(&csv, text).unwrap();
        let out = Command::new(bin).arg("drill").arg(&file).arg("--import-msel").arg(&csv).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = refused(&good.replacen("Expected Action", "Action", 1));
    assert!(err.contains("missing column(s) Expected Action") && err.contains("unknown column(s) Action"), "{err}");
    let err = refused(&good.replacen(",minute 5,", ",at five,", 1));
    assert!(err.contains("row 2, column `Designated Scenario Time`") && err.contains("at five"), "{err}");
    let err = refused(&good.replacen(",Notice,", ",Ponder,", 1));
    assert!(err.contains("row 2, column `Expected Action`"), "{err}");
    // A list that parses but names a flat the town does not have: the script's own check refuses it.
    let err = refused(&good.replace("B13-104", "B13-9904"));
    assert!(err.contains("no flat B13-9904"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn evaluators_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let evaluators =
        "    evaluators: [(name: \"bo\", objectives: [\"O9\"]), (name: \"bo\", objectives: []), (name: \"b o\", objectives: [\"O1\"])],\n    injects: [";
    let file = edited(dir.path(), &[("    injects: [", evaluators)]);
    let p = refused(&file);
    assert!(has(&p, "evaluators[0].objectives[0]", "`O9` is not an objective"), "{p:?}");
    assert!(has(&p, "evaluators[1].name", "named twice") && has(&p, "evaluators[1].objectives", "at least one"), "{p:?}");
    assert!(has(&p, "evaluators[2].name", "letters, digits"), "{p:?}");
}
