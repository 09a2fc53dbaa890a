//! Data files: UTF-8 text through `parse_ron` as each of the four file types (rule set, escalation policy,
//! scenario, town), then each type's `validate`. What validates is written back with `ron` and must read
//! back the same, and is then used the way the platform uses it: a rule set runs an engine over a tiny
//! town through a few days of events, a policy runs a work order through its loops, a town gets an
//! engine of the real rules.
//!
//! Found here and fixed (results/fuzz/README.md): `RuleSet::validate` took any Silence `factor` of at least
//! 1, `inf` and `1e20` too, and the engine's silence deadline overflowed; factors are now 1 to 1000 and
//! heartbeat intervals at most 30 days (regression test in `core/tests/hostile.rs`).
//!
//! The input's first byte picks the type when it is one of `R`, `P`, `S`, `T` followed by a newline (so
//! the fuzzer can focus); otherwise every type is tried on the whole text.

#![no_main]

use std::fmt::Debug;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use towntwin_contracts::load::parse_ron;
use towntwin_core::decode::Event;
use towntwin_core::event::{
    Data, Direction, ElecAlarm, ElecAlarmKind, EventType, FenceViolation, FlatRef, GatePass, Heartbeat, Method, PersonId, SmokeAlarm, Tick,
};
use towntwin_core::orders::{Action, Orders, Policy};
use towntwin_core::rules::{Engine, Finding, RuleSet};
use towntwin_core::time::{DAY, HOUR, MINUTE, Millis};
use towntwin_core::town::Town;
use towntwin_fuzz as fx;
use towntwin_sim::scenario::Scenario;

const FILE: &str = "fuzz.ron";

/// Parses `text` as `T`; if that works, writes it back and reads it again: same text, same value.
fn parse<T: DeserializeOwned + Serialize + Debug>(text: &str) -> Option<T> {
    let v: T = parse_ron(Path::new(FILE), text).ok()?;
    let written = ron::to_string(&v).unwrap_or_else(|e| panic!("a parsed value does not serialise: {e}\n{v:?}"));
    let back: T = parse_ron(Path::new(FILE), &written).unwrap_or_else(|e| panic!("written back, it does not parse: {e}\n{written}"));
    let rewritten = ron::to_string(&back).expect("serialises");
    assert_eq!(written, rewritten, "a value does not survive a write and a read");
    Some(v)
}

fn ev(id: &str, device: u32, ty: EventType, time: Millis, data: Data) -> Event {
    let source = format!("/gaohang/{}", fx::tiny_town().estates[0].devices.get(device as usize).map_or("R01-camera-01", |d| d.id.as_str()));
    Event { id: id.into(), source: source.into(), ty, time, device: Some(device), subject: None, data }
}

/// A validated rule set, run over the tiny town through three days of passes, alarms and ticks.
fn run_rules(rules: RuleSet) {
    let town = fx::tiny_town();
    let mut engine = Engine::new(rules, town);
    let t0: Millis = 1_772_380_800_000;
    let flat = FlatRef { building: 1, room: 102 };
    let mut findings = 0usize;
    let events = [
        ev("g1", 0, EventType::GatePass, t0, Data::GatePass(GatePass { person: PersonId(1), flat, method: Method::Face, direction: Direction::Out })),
        ev("h1", 5, EventType::DeviceHeartbeat, t0, Data::Heartbeat(Heartbeat { battery_pct: Some(80), rssi_dbm: -70 })),
        ev("s1", 5, EventType::SmokeAlarm, t0 + MINUTE, Data::Smoke(SmokeAlarm { building: 1, obscuration_pct: 12.0 })),
        ev("e1", 6, EventType::ElecAlarm, t0 + MINUTE, Data::ElecAlarm(ElecAlarm { building: 1, room: 102, alarm: ElecAlarmKind::Overload, amps: 30.0 })),
        ev("o1", 1, EventType::BinOverflow, t0 + 2 * MINUTE, Data::BinLevel(towntwin_core::event::BinLevel { fill_pct: 100 })),
        Event {
            id: "f1".into(),
            source: "/gaohang/R01-camera-01".into(),
            ty: EventType::FenceViolation,
            time: t0 + 3 * MINUTE,
            device: Some(11),
            subject: None,
            data: Data::Fence(FenceViolation { road: "R01".into(), code: 3, violation: "v".into(), confidence: 0.9 }),
        },
    ];
    for e in &events {
        findings += engine.apply(e).len();
    }
    for (i, step) in [MINUTE, HOUR, 13 * HOUR, DAY, 2 * DAY, 3 * DAY].into_iter().enumerate() {
        let tick = Event {
            id: format!("t{i}").into(),
            source: "/gaohang/_town/clock/twin".into(),
            ty: EventType::ClockTick,
            time: t0 + step,
            device: None,
            subject: None,
            data: Data::Tick(Tick { tick: i as u64, sent: None }),
        };
        findings += engine.apply(&tick).len();
    }
    assert!(findings < 1_000_000);
}

/// A validated policy, taking a work order through every loop.
fn run_policy(policy: &Policy) {
    let rules = fx::rules();
    let mut orders = Orders::default();
    let t0: Millis = 1_772_380_800_000;
    let f =
        Finding { rule: rules.rules[0].id.clone(), key: "k".into(), area: "E001".into(), estate: Some(0), subject: "s".into(), at: t0, detail: String::new() };
    let id = orders.on_finding(&f, rules, policy).expect("a new order is dispatched");
    let r = || "r".to_string();
    let mut now = t0;
    for a in [
        Action::Accept,
        Action::Fail { reason: r() },
        Action::Whistle { reason: r() },
        Action::Accept,
        Action::Start,
        Action::Resolve,
        Action::Reopen { reason: r() },
        Action::Escalate { reason: r() },
    ] {
        now += 30 * MINUTE;
        let _ = orders.act(id, now, "town/x", a);
        orders.tick(now).expect("deadline escalation is legal");
    }
    for step in [HOUR, DAY, 30 * DAY, 400 * DAY] {
        orders.tick(now + step).expect("deadline escalation is legal");
    }
}

fn try_rules(text: &str) {
    if let Some(set) = parse::<RuleSet>(text)
        && set.validate(Path::new(FILE)).is_ok()
    {
        run_rules(set);
    }
}

fn try_policy(text: &str) {
    if let Some(p) = parse::<Policy>(text)
        && p.validate(Path::new(FILE)).is_ok()
    {
        run_policy(&p);
    }
}

fn try_scenario(text: &str) {
    if let Some(s) = parse::<Scenario>(text)
        && let Ok(start) = s.validate(Path::new(FILE))
    {
        assert_eq!(towntwin_core::time::Local::of(start).hour, 0, "a scenario starts at local midnight");
    }
}

fn try_town(text: &str) {
    if let Some(t) = parse::<Town>(text) {
        let census = t.census();
        if t.validate(Path::new(FILE)).is_ok() {
            assert_eq!(census.estates as usize, t.estates.len());
            let engine = Engine::new(fx::rules().clone(), &t);
            let devices = t.estates.iter().map(|e| e.devices.len()).sum::<usize>() + t.roads.iter().map(|r| r.devices.len()).sum::<usize>();
            assert_eq!(engine.devices().list.len(), devices);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match text.as_bytes() {
        [b'R', b'\n', ..] => try_rules(&text[2..]),
        [b'P', b'\n', ..] => try_policy(&text[2..]),
        [b'S', b'\n', ..] => try_scenario(&text[2..]),
        [b'T', b'\n', ..] => try_town(&text[2..]),
        _ => {
            try_rules(text);
            try_policy(text);
            try_scenario(text);
            try_town(text);
        }
    }
});
