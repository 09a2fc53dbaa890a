//! Drill injects as the twin makes them real: a fire sounds its building's smoke detectors, a dark device
//! goes quiet, new faces come in through the gates registered to their flat, a resident taken ill is called
//! about by a neighbour. Each against a control twin of the same seed without injects, which the drill twin
//! matches tick for tick until the first inject; and the same injects at the same ticks give the same stream.

use std::collections::HashSet;
use std::path::Path;

use towntwin_contracts::principal::Principal;
use towntwin_contracts::time::parse_local_date;
use towntwin_contracts::town::Town;
use towntwin_sim::Inject;
use towntwin_sim::{Message, Scenario, Twin, TwinOptions};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Runs `ticks` ticks of the baseline town, injecting the four kinds at tick `at` when `inject`.
fn run(town: &Town, ticks: usize, at: usize, inject: bool) -> (Vec<Vec<Message>>, String) {
    let s = Scenario::load(&root().join("scenarios/baseline.ron")).unwrap().scenario;
    let mut t = Twin::new(&s, parse_local_date(&s.start_date).unwrap(), town.clone(), TwinOptions { threads: Some(1), ..TwinOptions::default() });
    if inject {
        t.mark_exercise("drill-test");
        t.stand_down(HashSet::from([Principal::estate("E001", "property")]));
    }
    let mut ticks_out = Vec::new();
    for k in 0..ticks {
        if inject && k == at {
            t.inject(0, Inject::Fire { estate: "E001".into(), flat: "B16-101".into() });
            t.inject(1, Inject::DeviceDark { device: "E002-gate-01".into(), hours: 6.0 });
            t.inject(2, Inject::NewFaces { estate: "E001".into(), flat: "B01-105".into(), people: 9 });
            t.inject(3, Inject::Incapacitate { resident: "V0001".into(), call_after_minutes: Some(5.0) });
        }
        ticks_out.push(t.step());
        if inject && k == at {
            let applied = t.take_applied();
            let which: Vec<u32> = applied.iter().map(|e| e.inject).collect();
            assert_eq!(which, [0, 1, 2, 3], "each inject took effect at the tick it was given: {applied:?}");
        }
    }
    (ticks_out, t.digest())
}

fn text(m: &Message) -> String {
    format!("{} {}", m.topic(), String::from_utf8_lossy(&m.payload))
}

#[test]
fn injects_are_made_real_by_the_town_and_change_nothing_before_them() {
    let town = Town::load(&root().join("assets/town.ron")).unwrap();
    let (at, ticks) = (5, 60);
    let (control, _) = run(&town, ticks, at, false);
    let (drill, digest) = run(&town, ticks, at, true);
    let (_, again) = run(&town, ticks, at, true);
    assert_eq!(digest, again, "the same injects at the same ticks make the same stream");

    // Before the inject: the same events, but marked with the exercise.
    for k in 0..at {
        let a: Vec<String> = control[k].iter().map(text).collect();
        let b: Vec<String> = drill[k].iter().map(|m| text(m).replace(",\"exerciseid\":\"drill-test\"", "")).collect();
        assert_eq!(a, b, "tick {k} differs before any inject");
        assert!(drill[k].iter().all(|m| text(m).contains("\"exerciseid\":\"drill-test\"")), "every event is marked with the exercise");
    }
    let after: Vec<String> = drill[at..].iter().flatten().map(text).collect();
    let control_after: Vec<String> = control[at..].iter().flatten().map(text).collect();
    let count = |v: &[String], f: &dyn Fn(&String) -> bool| v.iter().filter(|m| f(m)).count();

    // The fire: building 16's smoke detectors sound (obscuration of a real fire), within 3 minutes.
    let smoke = |m: &String| m.starts_with("town/E001/smoke/") && m.contains("smoke.alarm") && m.contains("\"building\":16");
    assert!(count(&after, &smoke) >= 1, "building 16 sounds");
    assert_eq!(count(&control_after, &smoke), 0, "and does not without the fire");
    // The dark gate: nothing from it any more; the control's gate keeps talking.
    let gate2 = |m: &String| m.starts_with("town/E002/gate/E002-gate-01/");
    assert_eq!(count(&after, &gate2), 0, "a dark device sends nothing");
    assert!(count(&control_after, &gate2) > 0, "the control's gate is heard in the same hour");
    // New faces: nine people registered to B01-105 come in through the gates within 10 minutes.
    let in_b01_105: HashSet<String> = after
        .iter()
        .filter(|m| m.contains("gate.pass") && m.contains("\"subject\":\"B01-105\"") && m.contains("\"direction\":\"in\""))
        .filter_map(|m| m.split("\"person\":\"").nth(1).map(|p| p[..8].to_string()))
        .collect();
    assert!(in_b01_105.len() >= 9, "nine new faces come in: {in_b01_105:?}");
    // The resident taken ill: a neighbour calls 12345 about her 5 minutes later.
    let call = |m: &String| m.contains("hotline.call") && m.contains("\"about\":\"V0001\"");
    assert_eq!(count(&after, &call), 1, "one call about V0001");
    let when = drill[at..].iter().position(|t| t.iter().any(|m| call(&text(m)))).unwrap();
    assert_eq!(when, 5, "the call comes 5 minutes after the inject");
}
