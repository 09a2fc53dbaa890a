//! Event payloads as they arrive from the broker: `decode` and `decode_on` against the real town's
//! registry, then through a store-less `Core` (dedup, window, rules, timers, work orders).
//!
//! Input: `topic \n payload`. The payload is decoded whole (with and without the topic); then it goes to
//! the core: with a non-empty topic as one message through `ingest_on`, with an empty topic (the input
//! starts with `\n`) as a batch of its lines through `ingest` (so one input can carry a clock tick and
//! the events its timers fire on).
//!
//! The core is kept between inputs (building one over the real town takes milliseconds) and replaced by a
//! fresh one every `RESET_EVERY` inputs, so that state (clock, timers, orders) carries over a few hundred
//! inputs and stays bounded. Set `TOWNTWIN_FUZZ_FRESH=1` to replace it before every input: a crash that
//! needs no history then reproduces from its input alone (use it with `cargo fuzz run ... <artifact>`
//! and `cargo fuzz tmin`).
//!
//! Found here and fixed (results/fuzz/README.md): before the core's first clock tick any event time is
//! accepted, and a daily-sample timer armed by an early-stamped event caught up one day at a time when the
//! first tick came (one heartbeat stamped 1970 then a 2026 tick: 23 s and 1 GB); the regression test is
//! `core/tests/hostile.rs`.

#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use towntwin_core::decode::{Devices, Event, decode, decode_on};
use towntwin_core::event::{Data, EventType, Header, encode};
use towntwin_core::rules::Engine;
use towntwin_core::service::Core;
use towntwin_fuzz as fx;

const RESET_EVERY: u32 = 500;
/// At most this many messages of one input go to the core as a batch.
const MAX_BATCH: usize = 64;

struct Fixture {
    devices: Devices,
    core: Mutex<(Core, u32)>,
    fresh: bool,
}

fn new_core() -> Core {
    Core::open(fx::rules().clone(), fx::policy().clone(), fx::town(), None).expect("a store-less core opens")
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        devices: Engine::new(fx::rules().clone(), fx::town()).devices().clone(),
        core: Mutex::new((new_core(), 0)),
        fresh: std::env::var_os("TOWNTWIN_FUZZ_FRESH").is_some_and(|v| v != "0"),
    })
}

/// Whether `v` holds a `null`: the encoder writes a non-finite float as `null`.
fn has_null(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.iter().any(has_null),
        serde_json::Value::Object(o) => o.values().any(has_null),
        _ => false,
    }
}

/// What `decode` accepted must be what the twin's encoder would write for it, and decode to itself again
/// (the source aside: the encoder writes the registry's `/gaohang/{area}/{kind}/{device}`).
fn check_event(ev: &Event, devices: &Devices) {
    assert!(!ev.id.is_empty());
    let device_id = ev.source.rsplit('/').next().unwrap_or_default();
    let (area, kind, device) = match ev.device {
        Some(d) => {
            let entry = devices.list.get(d as usize).expect("decoded device index is in the registry");
            assert_eq!(entry.id, device_id, "device index names the source's device");
            (entry.area.as_str(), entry.kind.slug(), entry.id.as_str())
        }
        None if ev.ty == EventType::HotlineCall => {
            let area = towntwin_core::decode::hotline_area(&ev.source).expect("a decoded call comes from an estate's 12345 line");
            assert!(devices.estates.contains(area), "a decoded call comes from an estate of the town");
            (area, "hotline", "12345")
        }
        None => {
            assert_eq!(ev.ty, EventType::ClockTick, "only the clock and the hotline have no device");
            ("_town", "clock", "twin")
        }
    };
    let data = serde_json::to_value(&ev.data).expect("data serialises");
    if has_null(&data) {
        // A number too large for an f32 (`1e39`) decodes as infinity, which JSON cannot write back.
        return;
    }
    let mut out = Vec::new();
    encode(&mut out, &Header { id: &ev.id, source: towntwin_core::event::SOURCE_PREFIX, area, kind, device, ty: ev.ty, time: ev.time, subject: ev.subject, exercise: None }, &ev.data);
    let again = decode(&out, devices).unwrap_or_else(|r| panic!("re-encoded event is refused: {r}\n{}", String::from_utf8_lossy(&out)));
    assert_eq!(Event { source: ev.source.clone(), ..again }, *ev, "re-encoded event decodes differently");
    if !matches!(ev.data, Data::Tick(_) | Data::Hotline(_)) {
        assert!(ev.device.is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (topic, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let topic = String::from_utf8_lossy(topic);

    let plain = decode(payload, &f.devices);
    if let Ok(ev) = &plain {
        check_event(ev, &f.devices);
    }
    match decode_on(&topic, payload, &f.devices) {
        Ok(ev) => {
            assert_eq!(plain.as_ref().ok(), Some(&ev), "decode_on accepted what decode did not");
        }
        Err(r) => {
            if let Err(p) = &plain {
                assert_eq!(p, &r, "decode_on refused for another reason than decode");
            } else {
                assert_eq!(r.code, "topic_mismatch");
            }
        }
    }

    let mut guard = f.core.lock().unwrap_or_else(|p| p.into_inner());
    let (core, inputs) = &mut *guard;
    *inputs += 1;
    if f.fresh || *inputs > RESET_EVERY {
        *core = new_core();
        *inputs = 1;
    }
    let (out, n) = if topic.is_empty() {
        let batch: Vec<&[u8]> = payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()).take(MAX_BATCH).collect();
        (core.ingest(&batch), batch.len())
    } else {
        (core.ingest_on(&[&topic], &[payload]), 1)
    };
    let out = out.unwrap_or_else(|e| panic!("the core refused its own transition: {e}"));
    assert!(out.rejected.len() <= n);
    assert_eq!(out.causes.len(), out.transitions.len(), "every transition has a cause");
    for t in &out.transitions {
        assert!(core.orders.get(t.order).is_some(), "a transition of an order the core does not hold");
    }
});
