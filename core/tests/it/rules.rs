//! Each rule kind driven by event sequences, with the edges: exactly 48 hours, late and out-of-order
//! events, a gate going offline, windows expiring, and the engine's state surviving a round trip.

use std::path::Path;

use crate::common::town;
use towntwin_core::decode::{Devices, Event};
use towntwin_core::event::{
    BinLevel, ConstructionDrop, Data, Direction, DoorOpen, EventType, FenceViolation, FlatRef, GatePass, Heartbeat, Method, PersonId, Tick, WaterReading,
};
use towntwin_core::rules::{Engine, Finding, RuleSet, sample};
use towntwin_core::time::{DAY, HOUR, MINUTE, Millis, parse_local_date};

fn rules() -> RuleSet {
    RuleSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/rules.ron")).expect("assets/rules.ron is valid")
}

struct Bench {
    engine: Engine,
    devices: Devices,
    t0: Millis,
    n: u32,
    /// Gates beat every 30 minutes up to each tick, unless listed here as broken.
    broken: Vec<&'static str>,
    beaten_to: Millis,
}

impl Bench {
    fn new() -> Bench {
        let town = town();
        town.validate(Path::new("test")).expect("test town is valid");
        let engine = Engine::new(rules(), &town);
        Bench { devices: Devices::of(&town), engine, t0: parse_local_date("2026-03-02").unwrap(), n: 0, broken: Vec::new(), beaten_to: 0 }
    }
    fn ev(&mut self, device: Option<&str>, ty: EventType, at: Millis, data: Data) -> Vec<Finding> {
        self.n += 1;
        let device = device.map(|d| self.devices.index[d]);
        let e = Event { id: format!("e{}", self.n).into(), source: Default::default(), ty, time: self.t0 + at, device, subject: None, data };
        self.engine.apply(&e)
    }
    fn pass(&mut self, person: u32, flat: FlatRef, at: Millis) -> Vec<Finding> {
        let data = Data::GatePass(GatePass { person: PersonId(person), flat, method: Method::Face, direction: Direction::Out });
        self.ev(Some("E001-gate-01"), EventType::GatePass, at, data)
    }
    fn tick(&mut self, at: Millis) -> Vec<Finding> {
        let mut out = Vec::new();
        while self.beaten_to + 30 * MINUTE <= at {
            self.beaten_to += 30 * MINUTE;
            for g in ["E001-gate-01", "E001-gate-02"] {
                if !self.broken.contains(&g) {
                    out.extend(self.beat(g, self.beaten_to));
                }
            }
        }
        out.extend(self.ev(None, EventType::ClockTick, at, Data::Tick(Tick { tick: 0, sent: None })));
        out
    }
    fn beat(&mut self, device: &str, at: Millis) -> Vec<Finding> {
        self.ev(Some(device), EventType::DeviceHeartbeat, at, Data::Heartbeat(Heartbeat { battery_pct: None, rssi_dbm: -70 }))
    }
}

fn of<'a>(f: &'a [Finding], rule: &str) -> Vec<&'a Finding> {
    f.iter().filter(|x| x.rule == rule).collect()
}

const FLAT: FlatRef = FlatRef { building: 1, room: 101 };
const VULNERABLE: u32 = 9_000_001;

#[test]
fn absence_fires_at_exactly_48_hours_and_not_a_minute_before() {
    let mut b = Bench::new();
    b.pass(VULNERABLE, FLAT, HOUR);
    assert!(of(&b.tick(HOUR + 48 * HOUR - MINUTE), "vulnerable-absence").is_empty());
    let f = b.tick(HOUR + 48 * HOUR);
    let a = of(&f, "vulnerable-absence");
    assert_eq!(a.len(), 1, "{f:?}");
    assert_eq!((a[0].subject.as_str(), a[0].area.as_str(), a[0].at), ("V0001", "E001", b.t0 + 49 * HOUR));
    // An unregistered person's absence means nothing.
    b.pass(123, FlatRef { building: 2, room: 101 }, 50 * HOUR);
    assert!(of(&b.tick(200 * HOUR), "vulnerable-absence").is_empty(), "fired once, not again without a new pass");
}

#[test]
fn a_late_pass_does_not_move_the_deadline_back_and_a_pass_after_the_alarm_rearms() {
    let mut b = Bench::new();
    b.pass(VULNERABLE, FLAT, 20 * HOUR);
    b.pass(VULNERABLE, FLAT, 10 * HOUR); // late: arrives after a newer one
    assert!(of(&b.tick(20 * HOUR + 48 * HOUR - MINUTE), "vulnerable-absence").is_empty(), "deadline follows the newest pass");
    assert_eq!(of(&b.tick(68 * HOUR), "vulnerable-absence").len(), 1);
    // Seen again after the alarm: a new 48 hours starts.
    b.pass(VULNERABLE, FLAT, 70 * HOUR);
    assert!(of(&b.tick(117 * HOUR), "vulnerable-absence").is_empty());
    assert_eq!(of(&b.tick(118 * HOUR), "vulnerable-absence").len(), 1);
}

#[test]
fn absence_is_suppressed_while_the_estates_gates_are_silent() {
    let mut b = Bench::new();
    b.pass(VULNERABLE, FLAT, 0);
    b.tick(HOUR);
    // Gate 01 breaks at 1 h (three missed 30-minute heartbeats later it counts as down).
    b.broken.push("E001-gate-01");
    let f = b.tick(47 * HOUR);
    assert!(!of(&f, "device-silent").is_empty(), "the silent gate gets a maintenance order");
    assert!(of(&b.tick(49 * HOUR), "vulnerable-absence").is_empty(), "no absence order while a gate is down");
    // The gate beats again from 49.5 h; the resident is still not seen: 48 h after the outage ends, the order comes.
    b.broken.clear();
    let early = b.tick(97 * HOUR);
    assert!(of(&early, "vulnerable-absence").is_empty(), "{:?}", of(&early, "vulnerable-absence"));
    assert_eq!(of(&b.tick(97 * HOUR + 30 * MINUTE), "vulnerable-absence").len(), 1);
}

#[test]
fn more_than_seven_faces_in_seven_days_is_a_group_rental_and_old_faces_expire() {
    let mut b = Bench::new();
    let flat = FlatRef { building: 2, room: 302 };
    for p in 0..7 {
        assert!(of(&b.pass(100 + p, flat, p as Millis * DAY / 2), "group-rental").is_empty(), "seven faces are allowed");
    }
    // The same seven again: still seven.
    assert!(of(&b.pass(100, flat, 6 * DAY), "group-rental").is_empty());
    let f = b.pass(200, flat, 6 * DAY + HOUR);
    let g = of(&f, "group-rental");
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].key, "E001/B02-302");
    // Ten days on, only the recent faces count.
    assert!(of(&b.pass(300, flat, 16 * DAY), "group-rental").is_empty());
}

#[test]
fn daily_sample_draws_twenty_households_at_nine_seeded_by_date() {
    let mut b = Bench::new();
    b.tick(0);
    assert!(of(&b.tick(9 * HOUR - MINUTE), "renovation-sample").is_empty());
    let day1: Vec<String> = of(&b.tick(9 * HOUR), "renovation-sample").iter().map(|f| f.subject.clone()).collect();
    assert_eq!(day1.len(), 20);
    let unique: std::collections::HashSet<_> = day1.iter().collect();
    assert_eq!(unique.len(), 20, "distinct households");
    let day2: Vec<String> = of(&b.tick(DAY + 9 * HOUR), "renovation-sample").iter().map(|f| f.subject.clone()).collect();
    assert_eq!(day2.len(), 20);
    assert_ne!(day1, day2);
    // The draw is a function of rule and date: replayable by anyone.
    let flats = vec![town().estates[0].buildings.iter().flat_map(|b| b.rooms().map(move |f| FlatRef { building: b.no, room: f.room })).collect::<Vec<_>>()];
    let day = towntwin_core::time::Local::of(b.t0).day;
    let replay: Vec<String> = sample(&flats, "renovation-sample", day, 20).iter().map(|(_, f)| f.to_string()).collect();
    assert_eq!(replay, day1);
}

#[test]
fn fence_violations_open_orders_above_the_confidence_threshold() {
    let mut b = Bench::new();
    let v = |confidence: f32| Data::Fence(FenceViolation { road: "R01".into(), code: 5, violation: "street_vending".into(), confidence });
    let f = b.ev(Some("R01-camera-001"), EventType::FenceViolation, HOUR, v(0.9));
    let d = of(&f, "fence-violation");
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].key.as_str(), d[0].area.as_str()), ("R01-camera-001/5", "R01"));
    assert!(of(&b.ev(Some("R01-camera-001"), EventType::FenceViolation, 2 * HOUR, v(0.6)), "fence-violation").is_empty());
}

#[test]
fn overflow_longer_than_thirty_minutes_opens_an_order_and_a_collection_in_time_does_not() {
    let mut b = Bench::new();
    let lvl = |p| Data::BinLevel(BinLevel { fill_pct: p });
    b.ev(Some("E001-bin-001"), EventType::BinOverflow, HOUR, lvl(101));
    b.ev(Some("E001-bin-001"), EventType::BinCollected, HOUR + 20 * MINUTE, lvl(110));
    assert!(of(&b.tick(3 * HOUR), "bin-overflow").is_empty());
    b.ev(Some("E001-bin-001"), EventType::BinOverflow, 4 * HOUR, lvl(101));
    b.ev(Some("E001-bin-001"), EventType::BinOverflow, 4 * HOUR + 5 * MINUTE, lvl(105)); // a repeat changes nothing
    assert!(of(&b.tick(4 * HOUR + 29 * MINUTE), "bin-overflow").is_empty());
    assert_eq!(of(&b.tick(4 * HOUR + 30 * MINUTE), "bin-overflow").len(), 1);
}

#[test]
fn engine_state_survives_a_round_trip_and_keeps_its_timers() {
    let mut b = Bench::new();
    b.pass(VULNERABLE, FLAT, HOUR);
    b.beat("E001-gate-01", HOUR);
    // The format the store writes (postcard behind a tag), not another one.
    let bytes = towntwin_core::service::encode_snapshot(&b.engine.state).unwrap();
    assert!(bytes.starts_with(towntwin_core::service::SNAPSHOT_TAG));
    let mut restored = Engine::new(rules(), &town());
    restored.state = towntwin_core::service::decode_snapshot(&bytes).unwrap();
    assert_eq!(restored.state, b.engine.state);
    // Keep the restored engine's gates alive, as the twin would.
    let mut r = Bench { engine: restored, devices: b.devices, t0: b.t0, n: b.n, broken: Vec::new(), beaten_to: b.beaten_to };
    let f = r.tick(49 * HOUR);
    assert_eq!(of(&f, "vulnerable-absence").len(), 1, "the absence timer was rebuilt");
}

#[test]
fn broken_rules_file_names_the_entry_and_field() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/rules.ron")).unwrap();
    let bad = text.replace("Absence(hours: 48)", "Absence(hours: 0)");
    let set: RuleSet = towntwin_core::load::parse_ron(Path::new("rules.ron"), &bad).unwrap();
    let e = set.validate(Path::new("rules.ron")).unwrap_err().to_string();
    assert!(e.contains("rules[0].kind.hours"), "{e}");
    let bad = text.replace("Absence(hours: 48)", "Absense(hours: 48)");
    let e = towntwin_core::load::parse_ron::<RuleSet>(Path::new("rules.ron"), &bad).unwrap_err();
    assert!(e.to_string().contains("Absense"), "{e}");
}

#[test]
fn a_registered_resident_never_seen_is_missed_48_hours_after_the_watch_began() {
    let mut b = Bench::new();
    // No pass at all: the watch begins at the first clock tick (1 min), so the order comes at 48 h 1 min.
    b.tick(MINUTE);
    assert!(of(&b.tick(48 * HOUR), "vulnerable-absence").is_empty());
    let f = b.tick(48 * HOUR + MINUTE);
    let a = of(&f, "vulnerable-absence");
    assert_eq!(a.len(), 1, "{f:?}");
    assert!(a[0].detail.contains("no gate pass for 48 h (since 2026-03-01T16:01:00.000Z)"), "{}", a[0].detail);
}

#[test]
fn a_sample_framed_on_waste_drops_checks_those_flats_first_and_fills_up_from_all() {
    let framed = |within_days: u32| {
        let mut r = rules();
        for rule in &mut r.rules {
            if let towntwin_core::rules::RuleKind::DailySample { frame, .. } = &mut rule.kind {
                *frame = towntwin_core::rules::Frame::WasteDrops { within_days };
            }
        }
        let town = town();
        Bench {
            engine: Engine::new(r, &town),
            devices: Devices::of(&town),
            t0: parse_local_date("2026-03-02").unwrap(),
            n: 0,
            broken: Vec::new(),
            beaten_to: 0,
        }
    };
    let drop = |b: &mut Bench, flat: FlatRef, at: Millis| {
        b.ev(Some("E001-bin-001"), EventType::ConstructionDrop, at, Data::ConstructionDrop(ConstructionDrop { flat, weight_kg: 30 }));
    };
    let subjects = |f: &[Finding]| of(f, "renovation-sample").iter().map(|x| x.subject.clone()).collect::<Vec<_>>();
    // Without a drop, the framed draw is the plain one.
    let mut plain = Bench::new();
    plain.tick(0);
    let mut b = framed(14);
    b.tick(0);
    assert_eq!(subjects(&b.tick(9 * HOUR)), subjects(&plain.tick(9 * HOUR)));
    // Two flats dropped construction waste: both are checked the next morning, and 18 others.
    let (x, y) = (FlatRef { building: 2, room: 601 }, FlatRef { building: 1, room: 102 });
    drop(&mut b, x, 10 * HOUR);
    drop(&mut b, y, 11 * HOUR);
    let day2 = subjects(&b.tick(DAY + 9 * HOUR));
    assert_eq!(day2.len(), 20);
    assert!(day2.contains(&x.to_string()) && day2.contains(&y.to_string()), "{day2:?}");
    assert_eq!(day2.iter().collect::<std::collections::HashSet<_>>().len(), 20, "distinct flats");
    // Past the frame's days they are forgotten: with a one-day frame, the drops of day 1 do not count on day 3.
    let mut c = framed(1);
    c.tick(0);
    c.tick(9 * HOUR);
    drop(&mut c, x, 10 * HOUR);
    let day3 = subjects(&c.tick(2 * DAY + 9 * HOUR));
    let mut p3 = Bench::new();
    p3.tick(0);
    p3.tick(9 * HOUR);
    assert_eq!(day3, subjects(&p3.tick(2 * DAY + 9 * HOUR)));
}

#[test]
fn two_absence_rules_each_fire_under_their_own_id_and_hours() {
    // A second absence rule, a day's watch beside the 48 h one (say, for residents living alone): each keeps
    // its own deadline and fires under its own id, the 24 h one first.
    let mut set = rules();
    let mut day = set.rules.iter().find(|r| r.id == "vulnerable-absence").cloned().expect("the shipped absence rule");
    day.id = "vulnerable-absence-24h".into();
    day.kind = towntwin_core::rules::RuleKind::Absence { hours: 24, home_quiet_hours: None };
    set.rules.push(day);
    set.validate(Path::new("rules.ron")).expect("two absence rules are a valid set");
    let town = town();
    let mut b = Bench::new();
    b.engine = Engine::new(set, &town);
    b.pass(VULNERABLE, FLAT, HOUR);
    assert!(of(&b.tick(HOUR + 24 * HOUR - MINUTE), "vulnerable-absence-24h").is_empty());
    let f = b.tick(HOUR + 24 * HOUR);
    let day = of(&f, "vulnerable-absence-24h");
    assert_eq!(day.len(), 1, "{f:?}");
    assert!(day[0].detail.contains("no gate pass for 24 h"), "{}", day[0].detail);
    assert!(of(&f, "vulnerable-absence").is_empty(), "the 48 h rule does not fire at 24 h: {f:?}");
    let f = b.tick(HOUR + 48 * HOUR);
    let two_days = of(&f, "vulnerable-absence");
    assert_eq!(two_days.len(), 1, "{f:?}");
    assert!(two_days[0].detail.contains("no gate pass for 48 h"), "{}", two_days[0].detail);
    assert!(of(&f, "vulnerable-absence-24h").is_empty(), "the 24 h rule fired once: {f:?}");
    // A new pass re-arms both, each with its own hours.
    b.pass(VULNERABLE, FLAT, 60 * HOUR);
    assert_eq!(of(&b.tick(84 * HOUR), "vulnerable-absence-24h").len(), 1);
    assert!(of(&b.tick(107 * HOUR), "vulnerable-absence").is_empty());
    assert_eq!(of(&b.tick(108 * HOUR), "vulnerable-absence").len(), 1);
}

#[test]
fn older_snapshot_formats_read_as_format_4_with_their_missing_fields_empty() {
    // Format 3 is format 4 without its last field (the flats' flagged wrong sorts), format 2 format 3
    // without the homes' signs of life: each empty list is one zero byte.
    let mut b = Bench::new();
    b.pass(VULNERABLE, FLAT, HOUR);
    b.tick(2 * HOUR);
    let four = towntwin_core::service::encode_snapshot(&b.engine.state).unwrap();
    let tag = b"towntwin-engine-postcard-4\n";
    assert!(four.starts_with(tag));
    assert!(four.ends_with(&[0, 0]), "no signs of life, no wrong sorts: two empty lists last");
    for (n, cut) in [(3, 1), (2, 2)] {
        let mut old = format!("towntwin-engine-postcard-{n}\n").into_bytes();
        old.extend(&four[tag.len()..four.len() - cut]);
        assert_eq!(towntwin_core::service::decode_snapshot(&old).unwrap(), b.engine.state, "format {n}");
    }
}

#[test]
fn a_snapshot_of_the_older_engine_format_is_refused_by_name() {
    let mut bytes = b"towntwin-engine-postcard-1\n".to_vec();
    bytes.extend([0u8; 16]);
    let e = towntwin_core::service::decode_snapshot(&bytes).unwrap_err().to_string();
    assert!(e.contains("engine format 1"), "{e}");
}

#[test]
fn the_fused_absence_rule_waits_while_the_home_shows_signs_of_life() {
    use towntwin_core::rules::RuleKind;
    let fused = |quiet: Option<u32>| {
        let mut set = rules();
        let r = set.rules.iter_mut().find(|r| r.id == "vulnerable-absence").expect("the shipped absence rule");
        r.kind = RuleKind::Absence { hours: 48, home_quiet_hours: quiet };
        set
    };
    // Zero quiet hours is refused, naming the field.
    let e = fused(Some(0)).validate(Path::new("rules.ron")).unwrap_err().to_string();
    assert!(e.contains("kind.home_quiet_hours") && e.contains("expected 1..=8760"), "{e}");
    let set = fused(Some(12));
    set.validate(Path::new("rules.ron")).expect("a fused absence rule is valid");
    let mut b = Bench::new();
    b.engine = Engine::new(set, &town());
    let id = "vulnerable-absence";
    let water =
        |b: &mut Bench, at: Millis, litres: u32| b.ev(Some("E001-water-001"), EventType::WaterReading, at, Data::Water(WaterReading { flat: FLAT, litres }));
    // Events come in the order of the clock, as the core's time window lets them in.
    let stays_in = |b: &mut Bench, last_water: Millis, door: Option<Millis>| {
        b.pass(VULNERABLE, FLAT, HOUR);
        let mut h = 2 * HOUR;
        while h <= 80 * HOUR {
            if h <= last_water {
                water(b, h, 9);
            } else {
                // A reading of no water is no sign of life.
                water(b, h, 0);
            }
            if door == Some(h) {
                b.ev(Some("E001-door-001"), EventType::DoorOpen, h, Data::Door(DoorOpen { flat: FLAT }));
            }
            let f = b.tick(h);
            if !of(&f, id).is_empty() {
                return (h, f);
            }
            h += HOUR;
        }
        (h, Vec::new())
    };
    // She stays in, using water up to 40 h: the plain rule's 48 h pass without an order, and the order
    // opens once her home has been quiet for 12 hours, at 52 h.
    let (at, f) = stays_in(&mut b, 40 * HOUR, None);
    assert_eq!(at, 52 * HOUR, "{f:?}");
    let found = of(&f, id);
    assert_eq!(found.len(), 1, "{f:?}");
    assert!(found[0].detail.contains("no gate pass for 51 h") && found[0].detail.contains("no sign of life at home for 12 h"), "{}", found[0].detail);
    // Her door opening at 50 h puts it off to 62 h.
    let mut b2 = Bench::new();
    b2.engine = Engine::new(fused(Some(12)), &town());
    let (at, f) = stays_in(&mut b2, 40 * HOUR, Some(50 * HOUR));
    assert_eq!(at, 62 * HOUR, "{f:?}");
    // Without signs at all, the fused rule is the plain one: a fresh pass, then 48 h of nothing.
    let mut plain = Bench::new();
    plain.engine = Engine::new(fused(Some(12)), &town());
    plain.pass(VULNERABLE, FLAT, HOUR);
    assert!(of(&plain.tick(49 * HOUR - MINUTE), id).is_empty());
    let f = plain.tick(49 * HOUR);
    assert_eq!(of(&f, id).len(), 1, "{f:?}");
    assert!(of(&f, id)[0].detail.contains("since the watch began"), "{:?}", of(&f, id)[0].detail);
    // The engine's state with signs survives a snapshot round trip.
    let bytes = towntwin_core::service::encode_snapshot(&b2.engine.state).unwrap();
    assert_eq!(towntwin_core::service::decode_snapshot(&bytes).unwrap(), b2.engine.state);
}

#[test]
fn the_fused_rules_file_is_the_shipped_set_but_for_its_absence_rule() {
    use towntwin_core::rules::RuleKind;
    let fused = RuleSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/rules/fused-absence.ron")).expect("the fused rules file is valid");
    let mut shipped = rules();
    let r = shipped.rules.iter_mut().find(|r| r.id == "vulnerable-absence").expect("the shipped absence rule");
    assert_eq!(r.kind, RuleKind::Absence { hours: 48, home_quiet_hours: None });
    r.kind = RuleKind::Absence { hours: 48, home_quiet_hours: Some(24) };
    assert_eq!((fused.version, fused.window, &fused.rules), (shipped.version, shipped.window, &shipped.rules));
    assert_eq!(fused.bases.len(), 1, "built on assets/rules.ron");
}

#[test]
fn a_rule_file_that_extends_another_replaces_by_id_adds_the_rest_and_names_its_problems() {
    use towntwin_core::rules::RuleKind;
    let tmp = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/rules.ron").canonicalize().unwrap();
    let write = |name: &str, text: String| {
        let f = tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        f
    };
    let rule = |id: &str, kind: &str| {
        format!(r#"(id: "{id}", title: "t", service: "s", targets: [Property], kind: {kind}, detects: (kinds: ["bin.overflow"], by: Area))"#)
    };
    let f = write(
        "more.ron",
        format!(
            r#"(version: 1, extends: Some("{}"), window: (ahead_minutes: 5, behind_hours: 12), rules: [{}, {}])"#,
            shipped.display(),
            rule("bin-overflow", "Duration(start: BinOverflow, end: BinCollected, minutes: 60)"),
            rule("bin-overflow-long", "Duration(start: BinOverflow, end: BinCollected, minutes: 240)")
        ),
    );
    let set = RuleSet::load(&f).unwrap();
    let base = rules();
    assert_eq!(set.rules.len(), base.rules.len() + 1);
    assert_eq!((set.window.ahead_minutes, set.window.behind_hours), (5, 12));
    let i = base.rules.iter().position(|r| r.id == "bin-overflow").unwrap();
    assert!(matches!(set.rules[i].kind, RuleKind::Duration { minutes: 60, .. }), "replaced in place: {:?}", set.rules[i].kind);
    assert_eq!(set.rules.last().unwrap().id, "bin-overflow-long");
    // Extending an extending file: two bases, the deepest first.
    let g = write("again.ron", r#"(version: 1, extends: Some("more.ron"))"#.to_string());
    let again = RuleSet::load(&g).unwrap();
    assert_eq!(again.rules, set.rules);
    assert_eq!(again.bases, vec![shipped.clone(), f.clone()]);
    // Refused, naming the file and the field: a rule given twice, a base that is not there, a file that
    // extends itself, a bad rule (named by its id), and a file with neither rules nor a base.
    let cases = [
        (format!(r#"(version: 1, extends: Some("{}"), rules: [{}, {}])"#, shipped.display(), rule("x", "Hotline"), rule("x", "Hotline")), "rules[1].id"),
        (r#"(version: 1, extends: Some("no-such-rules.ron"))"#.to_string(), "no-such-rules.ron"),
        (r#"(version: 1, extends: Some("bad.ron"))"#.to_string(), "more than 8 files deep"),
        (format!(r#"(version: 1, extends: Some("{}"), rules: [{}])"#, shipped.display(), rule("y", "Absence(hours: 0)")), "(rule `y`, after extends)"),
        ("(version: 1)".to_string(), "expected the rules, or `extends`"),
    ];
    for (text, want) in cases {
        let f = write("bad.ron", text);
        let e = RuleSet::load(&f).unwrap_err().to_string();
        assert!(e.contains(want), "expected {want:?} in: {e}");
    }
}

#[test]
fn wrong_sorts_open_an_order_at_the_nth_flag_within_the_window_and_count_afresh_after() {
    use towntwin_core::event::{BinDrop, WasteCategory};
    use towntwin_core::rules::{Rule, RuleKind};
    let mut b = Bench::new();
    let mut set = rules();
    set.rules.push(Rule {
        id: "garbage-sorting".into(),
        title: "t".into(),
        service: "property".into(),
        targets: vec![towntwin_core::rules::Role::Property],
        kind: RuleKind::WrongSorts { times: 3, within_days: 7 },
        quiet_hours: 0,
        detects: Default::default(),
    });
    set.validate(Path::new("test")).unwrap();
    b.engine = Engine::new(set, &crate::common::town());
    let drop = |b: &mut Bench, flat: FlatRef, ok: bool, at: Millis| {
        let data = Data::BinDrop(BinDrop { flat, category: WasteCategory::Kitchen, weight_g: 500, sorted_ok: ok, fill_pct: 10 });
        of(&b.ev(Some("E001-bin-001"), EventType::BinDrop, at, data), "garbage-sorting").len()
    };
    let other = FlatRef { building: 2, room: 201 };
    b.tick(HOUR);
    // Right sorts count for nothing; two flags are not yet three; another flat's flag is its own.
    assert_eq!(drop(&mut b, FLAT, true, HOUR), 0);
    assert_eq!(drop(&mut b, FLAT, false, 2 * HOUR), 0);
    assert_eq!(drop(&mut b, other, false, 2 * HOUR), 0);
    assert_eq!(drop(&mut b, FLAT, false, 3 * DAY), 0);
    // The first flag is more than 7 days old at the next one: still two in the window.
    b.tick(8 * DAY);
    assert_eq!(drop(&mut b, FLAT, false, 8 * DAY), 0);
    // The third in the window: an order about the flat, keyed by it.
    b.tick(9 * DAY);
    let f = b.ev(
        Some("E001-bin-001"),
        EventType::BinDrop,
        9 * DAY,
        Data::BinDrop(BinDrop { flat: FLAT, category: WasteCategory::Residual, weight_g: 300, sorted_ok: false, fill_pct: 11 }),
    );
    let found = of(&f, "garbage-sorting");
    assert_eq!(found.len(), 1, "{f:?}");
    assert_eq!((found[0].subject.as_str(), found[0].key.as_str(), found[0].area.as_str()), ("B01-101", "E001/B01-101", "E001"));
    assert!(found[0].detail.contains("3 drops flagged"), "{}", found[0].detail);
    // Counted afresh: the next flag is the first of three again; the state survives a snapshot.
    assert_eq!(drop(&mut b, FLAT, false, 9 * DAY + HOUR), 0);
    let bytes = towntwin_core::service::encode_snapshot(&b.engine.state).unwrap();
    assert_eq!(towntwin_core::service::decode_snapshot(&bytes).unwrap(), b.engine.state);
    assert_eq!(drop(&mut b, FLAT, false, 9 * DAY + 2 * HOUR), 0);
    assert_eq!(drop(&mut b, FLAT, false, 9 * DAY + 3 * HOUR), 1);
}

#[test]
fn a_wrong_sorts_rule_out_of_range_and_a_second_qr_rule_are_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.ron");
    let rule = |id: &str, kind: &str| format!("(id: \"{id}\", title: \"t\", service: \"s\", targets: [Property], kind: {kind})");
    let write = |rules: Vec<String>| {
        std::fs::write(&file, format!("(version: 1, rules: [{}])", rules.join(", "))).unwrap();
        RuleSet::load(&file).unwrap_err().to_string()
    };
    let e = write(vec![rule("w", "WrongSorts(times: 0, within_days: 400)")]);
    assert!(e.contains("rules[0].kind.times") && e.contains("rules[0].kind.within_days"), "{e}");
    let e = write(vec![rule("a", "Qr"), rule("b", "Qr")]);
    assert!(e.contains("at most one Qr rule"), "{e}");
}

#[test]
fn two_wrong_sorts_rules_keep_their_own_counts() {
    use towntwin_core::event::{BinDrop, WasteCategory};
    use towntwin_core::rules::{Rule, RuleKind};
    let mut b = Bench::new();
    let mut set = rules();
    for (id, times) in [("sorting-2", 2), ("sorting-3", 3)] {
        set.rules.push(Rule {
            id: id.into(),
            title: "t".into(),
            service: "property".into(),
            targets: vec![towntwin_core::rules::Role::Property],
            kind: RuleKind::WrongSorts { times, within_days: 7 },
            quiet_hours: 0,
            detects: Default::default(),
        });
    }
    b.engine = Engine::new(set, &crate::common::town());
    b.tick(HOUR);
    let mut fired = Vec::new();
    for i in 1..=6 {
        let data = Data::BinDrop(BinDrop { flat: FLAT, category: WasteCategory::Kitchen, weight_g: 500, sorted_ok: false, fill_pct: 10 });
        for f in b.ev(Some("E001-bin-001"), EventType::BinDrop, HOUR + i * MINUTE, data) {
            fired.push((i, f.rule));
        }
    }
    // Each drop counts once for each rule; one rule's order does not reset the other's count.
    let want: Vec<(i64, String)> =
        [(2, "sorting-2"), (3, "sorting-3"), (4, "sorting-2"), (6, "sorting-2"), (6, "sorting-3")].map(|(i, r)| (i, r.to_string())).to_vec();
    assert_eq!(fired, want);
}
