//! Drill scripts as a trainer meets them: the shipped script checks and prints its events list; a script
//! that names an estate, flat, resident or device the town does not have, whose start conditions form a
//! cycle, or that expects a trainee to act outside their scope is refused before anything starts, naming
//! the file, the field and the reason, with exit 2.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;
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
    for needle in
        ["I1: Resident V0001", "fire in E001 B16-101", "9 new faces move into E001 B01-105", "E001-gate-02 dark for 6 h", "property Accept within 30 min (O1)"]
    {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
}

#[test]
fn unknown_targets_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = edited(
        dir.path(),
        &[
            ("Incapacitate(resident: \"V0001\")", "Incapacitate(resident: \"V9999\")"),
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
        edited(dir.path(), &[("Incapacitate(resident: \"V0001\")", "Incapacitate(resident: \"V9999\")"), ("minutes: 180,", "minutes: 180, colour: \"red\",")]);
    let bad = Command::new(env!("CARGO_BIN_EXE_towntwin")).args(["drill", "--check"]).arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("drill.ron:") && err.contains("colour"), "an unknown field, with file and place: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
