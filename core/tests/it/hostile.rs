//! Hostile input through the core's front door (`Core::ingest_on`, as the MQTT service calls it).
//! Event time: one device's event stamped far ahead or far behind is rejected with its own reason,
//! counted, and moves nothing; only the twin's clock tick moves the clock, and at most by the window at
//! once. Identity: dedup is on source and id together, and a topic must match its event's source.

use std::path::Path;

use crate::common;
use towntwin_core::event::{Data, EventType, Header, Heartbeat, Tick, encode};
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::service::Core;
use towntwin_core::time::{DAY, HOUR, MINUTE, Millis, parse_local_date, parse_rfc3339};

fn core() -> Core {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = RuleSet::load(&root.join("assets/rules.ron")).unwrap();
    let policy = Policy::load(&root.join("scenarios/policies/standard.ron")).unwrap();
    Core::open(rules, policy, &common::town(), None).unwrap()
}

fn alarm(id: &str, device: &str, camera_code: u8, t: Millis) -> (String, Vec<u8>) {
    use towntwin_core::event::FenceViolation;
    let mut out = Vec::new();
    let h = Header {
        id,
        source: towntwin_core::event::SOURCE_PREFIX,
        area: "R01",
        kind: "camera",
        device,
        ty: EventType::FenceViolation,
        time: t,
        subject: None,
        exercise: None,
    };
    encode(&mut out, &h, &Data::Fence(FenceViolation { road: "R01".into(), code: camera_code, violation: "v".into(), confidence: 0.95 }));
    (format!("town/R01/camera/{device}/fence.violation"), out)
}

fn heartbeat(id: &str, device: &str, t: Millis) -> Vec<u8> {
    let mut out = Vec::new();
    let h = Header {
        id,
        source: towntwin_core::event::SOURCE_PREFIX,
        area: "E001",
        kind: "gate",
        device,
        ty: EventType::DeviceHeartbeat,
        time: t,
        subject: None,
        exercise: None,
    };
    encode(&mut out, &h, &Data::Heartbeat(Heartbeat { battery_pct: None, rssi_dbm: -70 }));
    out
}

fn tick(id: &str, t: Millis) -> Vec<u8> {
    let mut out = Vec::new();
    let h = Header {
        id,
        source: towntwin_core::event::SOURCE_PREFIX,
        area: "_town",
        kind: "clock",
        device: "twin",
        ty: EventType::ClockTick,
        time: t,
        subject: None,
        exercise: None,
    };
    encode(&mut out, &h, &Data::Tick(Tick { tick: 1, sent: None }));
    out
}

#[test]
fn a_device_stamped_far_ahead_or_behind_is_rejected_and_moves_nothing() {
    let t0 = parse_local_date("2026-03-02").unwrap() + 8 * HOUR;
    let mut c = core();
    c.ingest(&[&heartbeat("h0", "E001-gate-01", t0 - MINUTE), &tick("t0", t0)]).unwrap();
    assert_eq!(c.now(), t0);

    let y2099 = parse_rfc3339("2099-01-01T00:00:00Z").unwrap();
    let cases: [(&str, Millis); 4] = [("2099", y2099), ("three days ahead", t0 + 3 * DAY), ("1970", 1_000), ("two days behind", t0 - 2 * DAY)];
    for (i, (what, t)) in cases.iter().enumerate() {
        let out = c.ingest(&[&heartbeat(&format!("bad{i}"), "E001-gate-02", *t)]).unwrap();
        assert_eq!(out.rejected.len(), 1, "{what}: rejected");
        assert_eq!(out.rejected[0].1.code, "out_of_window", "{what}: its own reason");
        assert!(out.transitions.is_empty(), "{what}: no order");
        assert_eq!(c.now(), t0, "{what}: the clock did not move");
    }
    assert_eq!(c.stats.rejected.get("out_of_window"), Some(&4));
    // A forged tick far ahead is refused too; the next real tick moves the clock as usual.
    let out = c.ingest(&[&tick("forged", t0 + 3 * DAY)]).unwrap();
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(c.now(), t0);
    // Within the window, a device's event is taken at its own time but does not move the clock: its
    // timers fire when a tick passes them.
    let out = c.ingest(&[&heartbeat("ok", "E001-gate-02", t0 + 5 * MINUTE)]).unwrap();
    assert!(out.rejected.is_empty());
    assert_eq!(c.now(), t0, "only a tick moves the clock");
    c.ingest(&[&tick("t1", t0 + MINUTE)]).unwrap();
    assert_eq!(c.now(), t0 + MINUTE);
    assert!(c.orders.orders.is_empty(), "no device-silent storm, no order from the bad events: {:?}", c.orders.orders.first());
}

#[test]
fn a_window_of_zero_is_refused_where_the_file_says_it() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/rules.ron")).unwrap();
    let bad = text.replacen("ahead_minutes: 10", "ahead_minutes: 0", 1);
    assert_ne!(bad, text);
    let set: RuleSet = towntwin_core::load::parse_ron(Path::new("rules.ron"), &bad).unwrap();
    let e = set.validate(Path::new("rules.ron")).unwrap_err().to_string();
    assert!(e.contains("window.ahead_minutes"), "{e}");
}

#[test]
fn dedup_is_on_source_and_id_and_a_topic_must_match_its_source() {
    let t0 = parse_local_date("2026-03-02").unwrap() + 8 * HOUR;
    let mut c = core();
    c.ingest(&[&tick("t0", t0)]).unwrap();
    // Two sources may use the same id: both are events. The same source and id again is a duplicate.
    let (ta, a) = alarm("same-id", "R01-camera-001", 3, t0 + 1_000);
    let hb = heartbeat("same-id", "E001-gate-01", t0 + 2_000);
    let out = c.ingest_on(&[&ta, "town/E001/gate/E001-gate-01/device.heartbeat"], &[&a, &hb]).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected.iter().map(|r| r.1.to_string()).collect::<Vec<_>>());
    assert_eq!((c.stats.accepted, c.stats.duplicates), (3, 0), "one id, two sources: two events");
    assert_eq!(c.orders.orders.len(), 1, "the camera's alarm opened its order");
    c.ingest_on(&[&ta], &[&a]).unwrap();
    assert_eq!(c.stats.duplicates, 1, "the same source and id again is a duplicate");
    // One device's event on another device's topic, or under another type, is refused.
    let (_, forged) = alarm("forged-1", "R01-camera-001", 4, t0 + 3_000);
    let out = c.ingest_on(&["town/E001/gate/E001-gate-01/fence.violation"], &[&forged]).unwrap();
    assert_eq!(out.rejected[0].1.code, "topic_mismatch");
    let out = c.ingest_on(&["town/R01/camera/R01-camera-001/smoke.alarm"], &[&forged]).unwrap();
    assert_eq!(out.rejected[0].1.code, "topic_mismatch");
    let out = c.ingest_on(&["elsewhere"], &[&forged]).unwrap();
    assert_eq!(out.rejected[0].1.code, "topic_mismatch");
    assert_eq!(c.orders.orders.len(), 1, "no order from a forged topic");
}

/// Found by fuzzing (fuzz, decode_event): before the first tick any event time is taken, and the first
/// event armed the daily sample at its own time; a heartbeat stamped 1970 then a 2026 tick made the timer
/// catch up one draw a day, 20 orders for each of 20,000 days (23 s, 1 GB). Now a draw for a day long gone
/// is skipped and the next is armed after the clock.
#[test]
fn an_event_stamped_decades_before_the_first_tick_does_not_replay_decades_of_daily_samples() {
    let t0 = parse_local_date("2026-03-02").unwrap() + 9 * HOUR + 30 * MINUTE;
    let mut c = core();
    c.ingest(&[&heartbeat("h1970", "E001-gate-01", parse_rfc3339("1970-01-02T00:00:00Z").unwrap())]).unwrap();
    c.ingest(&[&tick("t0", t0)]).unwrap();
    let samples = c.orders.orders.iter().filter(|o| o.rule == "renovation-sample").count();
    assert!((1..=20).contains(&samples), "no draws for the days long gone, only today's (09:00 passed): {samples}");
    // The next draw is at the next 09:00 after the clock, and it is one day's draw.
    let next = parse_local_date("2026-03-03").unwrap() + 9 * HOUR;
    for (i, t) in (t0 + MINUTE..=next).step_by(MINUTE as usize).enumerate() {
        c.ingest(&[&tick(&format!("t{}", i + 1), t)]).unwrap();
    }
    let later = c.orders.orders.iter().filter(|o| o.rule == "renovation-sample").count();
    assert!(later > samples && later <= 40, "one more day's draw: {samples} then {later}");
}

/// Found by fuzzing (fuzz, load_ron): a silence factor of `inf` or `1e20` passed validation and the
/// silence deadline overflowed.
#[test]
fn a_silence_factor_out_of_bounds_is_refused_where_the_file_says_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("assets/rules.ron")).unwrap();
    assert!(text.contains("factor: 3.0"));
    let dir = tempfile::tempdir().unwrap();
    for bad in ["inf", "1e20", "0.5"] {
        let f = dir.path().join("rules.ron");
        std::fs::write(&f, text.replace("factor: 3.0", &format!("factor: {bad}"))).unwrap();
        let err = RuleSet::load(&f).unwrap_err().to_string();
        assert!(err.contains("kind.factor") && err.contains("from 1 to 1000"), "{bad}: {err}");
    }
}
