//! The 12345 hotline through the core's front door: a resident's call about a problem the platform already
//! has an order for joins that order; a call about a problem it has none for becomes a hotline order (and a
//! second call about it counts on that order); a call from a line that is not an estate's, or on another
//! topic, is refused with its reason.

use std::path::Path;

use crate::common;
use towntwin_core::event::{BinLevel, Data, EventType, Header, HotlineCall, Tick, encode};
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::service::Core;
use towntwin_core::time::{MINUTE, Millis, parse_local_date};
use towntwin_core::truth::IncidentKind;

fn core() -> Core {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = RuleSet::load(&root.join("assets/rules.ron")).unwrap();
    let policy = Policy::load(&root.join("scenarios/policies/standard.ron")).unwrap();
    Core::open(rules, policy, &common::town(), None).unwrap()
}

struct Feed {
    core: Core,
    t0: Millis,
    n: u32,
}

impl Feed {
    fn send(&mut self, topic: &str, h: Header<'_>, data: Data) -> towntwin_core::service::Outcome {
        let mut out = Vec::new();
        encode(&mut out, &h, &data);
        self.core.ingest_on(&[topic], &[&out]).unwrap()
    }
    fn tick(&mut self, at: Millis) {
        self.n += 1;
        let id = format!("twin-{:x}", self.n);
        let h = Header {
            id: &id,
            source: towntwin_core::event::SOURCE_PREFIX,
            area: "_town",
            kind: "clock",
            device: "twin",
            ty: EventType::ClockTick,
            time: self.t0 + at,
            subject: None,
            exercise: None,
        };
        self.send("town/_town/clock/twin/clock.tick", h, Data::Tick(Tick { tick: self.n as u64, sent: None }));
    }
    fn call(&mut self, estate: &str, category: IncidentKind, about: &str, at: Millis) -> towntwin_core::service::Outcome {
        self.n += 1;
        let id = format!("12345-{:x}", self.n);
        let h = Header {
            id: &id,
            source: towntwin_core::event::SOURCE_PREFIX,
            area: estate,
            kind: "hotline",
            device: "12345",
            ty: EventType::HotlineCall,
            time: self.t0 + at,
            subject: None,
            exercise: None,
        };
        let topic = format!("town/{estate}/hotline/12345/hotline.call");
        self.send(&topic, h, Data::Hotline(HotlineCall { category, about: about.into() }))
    }
}

#[test]
fn a_call_joins_the_open_order_for_its_problem_or_becomes_a_hotline_order() {
    let mut f = Feed { core: core(), t0: parse_local_date("2026-03-02").unwrap(), n: 0 };
    f.tick(0);
    // A kiosk overflowing for more than 30 minutes: the platform opens its order.
    let h = Header {
        source: towntwin_core::event::SOURCE_PREFIX,
        id: "E001-bin-001-1",
        area: "E001",
        kind: "bin",
        device: "E001-bin-001",
        ty: EventType::BinOverflow,
        time: f.t0 + MINUTE,
        subject: None,
        exercise: None,
    };
    f.send("town/E001/bin/E001-bin-001/bin.overflow", h, Data::BinLevel(BinLevel { fill_pct: 101 }));
    for m in 2..=32 {
        f.tick(m * MINUTE);
    }
    let orders = f.core.orders.orders.clone();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!((orders[0].rule.as_str(), orders[0].subject.as_str(), orders[0].calls), ("bin-overflow", "E001-bin-001", 0));

    // A resident calls about that kiosk: the call joins the order, no new one.
    let o = f.call("E001", IncidentKind::BinOverflow, "E001-bin-001", 40 * MINUTE);
    assert!(o.rejected.is_empty(), "{:?}", o.rejected);
    assert_eq!(f.core.orders.orders.len(), 1);
    assert_eq!((f.core.orders.orders[0].calls, f.core.orders.orders[0].count), (1, 2));

    // A call about another kiosk, of which the platform knows nothing: a hotline order, dispatched.
    let o = f.call("E001", IncidentKind::BinOverflow, "E001-bin-002", 41 * MINUTE);
    assert_eq!(f.core.orders.orders.len(), 2);
    let hot = &f.core.orders.orders[1];
    assert_eq!((hot.rule.as_str(), hot.area.as_str(), hot.subject.as_str(), hot.count), ("hotline", "E001", "E001-bin-002", 1));
    assert!(o.transitions.iter().any(|t| t.order == 2 && t.action == "dispatch"), "{:?}", o.transitions);
    // Called again about it: counted on the hotline order.
    for m in 33..=50 {
        f.tick(m * MINUTE);
    }
    f.call("E001", IncidentKind::BinOverflow, "E001-bin-002", 50 * MINUTE);
    assert_eq!(f.core.orders.orders.len(), 2);
    assert_eq!(f.core.orders.orders[1].count, 2);

    // A call about a problem of a kind no rule detects still becomes a hotline order, not a join.
    f.call("E001", IncidentKind::GroupRental, "B01-101", 55 * MINUTE);
    assert_eq!(f.core.orders.orders.len(), 3);
    assert_eq!(f.core.orders.orders[2].rule, "hotline");
}

#[test]
fn a_call_from_no_estates_line_or_on_another_topic_is_refused() {
    let mut f = Feed { core: core(), t0: parse_local_date("2026-03-02").unwrap(), n: 0 };
    f.tick(0);
    let o = f.call("E999", IncidentKind::BinOverflow, "E999-bin-001", MINUTE);
    assert_eq!(o.rejected.first().map(|r| r.1.code), Some("unknown_device"), "{:?}", o.rejected);
    // The hotline's event posted under a device's topic.
    let h = Header {
        source: towntwin_core::event::SOURCE_PREFIX,
        id: "12345-x",
        area: "E001",
        kind: "hotline",
        device: "12345",
        ty: EventType::HotlineCall,
        time: f.t0 + MINUTE,
        subject: None,
        exercise: None,
    };
    let o = f.send("town/E001/gate/E001-gate-01/hotline.call", h, Data::Hotline(HotlineCall { category: IncidentKind::BinOverflow, about: String::new() }));
    assert_eq!(o.rejected.first().map(|r| r.1.code), Some("topic_mismatch"), "{:?}", o.rejected);
    // A category that is no incident kind.
    let mut bad = Vec::new();
    let h = Header {
        source: towntwin_core::event::SOURCE_PREFIX,
        id: "12345-y",
        area: "E001",
        kind: "hotline",
        device: "12345",
        ty: EventType::HotlineCall,
        time: f.t0 + MINUTE,
        subject: None,
        exercise: None,
    };
    encode(&mut bad, &h, &Data::Hotline(HotlineCall { category: IncidentKind::BinOverflow, about: String::new() }));
    let bad = String::from_utf8(bad).unwrap().replace("bin.overflow", "aliens");
    let o = f.core.ingest_on(&["town/E001/hotline/12345/hotline.call"], &[bad.as_bytes()]).unwrap();
    assert_eq!(o.rejected.first().map(|r| r.1.code), Some("bad_data"), "{:?}", o.rejected);
    assert!(f.core.orders.orders.is_empty());
}

impl Feed {
    /// A report on line `device` (`12345`, `qr`, `patrol` or another) of `estate`.
    fn report(&mut self, estate: &str, device: &str, category: IncidentKind, about: &str, at: Millis) -> towntwin_core::service::Outcome {
        self.n += 1;
        let id = format!("{device}-{:x}", self.n);
        let h = Header {
            id: &id,
            source: towntwin_core::event::SOURCE_PREFIX,
            area: estate,
            kind: "hotline",
            device,
            ty: EventType::HotlineCall,
            time: self.t0 + at,
            subject: None,
            exercise: None,
        };
        let topic = format!("town/{estate}/hotline/{device}/hotline.call");
        self.send(&topic, h, Data::Hotline(HotlineCall { category, about: about.into() }))
    }
}

#[test]
fn reports_by_qr_code_and_by_patrol_become_orders_that_say_where_they_came_from() {
    let mut f = Feed { core: core(), t0: parse_local_date("2026-03-02").unwrap(), n: 0 };
    f.tick(0);
    let o = f.report("E001", "qr", IncidentKind::RenovationIllegal, "B01-101", MINUTE);
    assert!(o.rejected.is_empty(), "{:?}", o.rejected);
    let o = f.report("E001", "patrol", IncidentKind::EbikeFlyingWire, "B01-102", 2 * MINUTE);
    assert!(o.rejected.is_empty(), "{:?}", o.rejected);
    let orders = &f.core.orders.orders;
    assert_eq!(orders.len(), 2, "{orders:#?}");
    assert!(orders.iter().all(|o| o.rule == "hotline"));
    let details: Vec<String> = orders.iter().map(|o| format!("{o:?}")).collect();
    assert!(details[0].contains("reported by the estate's QR code"), "{}", details[0]);
    assert!(details[1].contains("the grid's patrol found"), "{}", details[1]);
    // A line that is none of the estate's three is refused, naming the lines there are.
    let o = f.report("E001", "fax", IncidentKind::BinOverflow, "", 3 * MINUTE);
    let r = o.rejected.first().map(|r| (r.1.code, r.1.detail.clone()));
    assert!(matches!(&r, Some(("unknown_device", d)) if d.contains("12345|qr|patrol")), "{r:?}");
    assert_eq!(f.core.orders.orders.len(), 2);
}

#[test]
fn an_estate_the_platform_does_not_cover_has_no_register_to_watch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let open = |covered: Option<Vec<String>>| {
        let rules = RuleSet::load(&root.join("assets/rules.ron")).unwrap();
        let policy = Policy::load(&root.join("scenarios/policies/standard.ron")).unwrap();
        let town = towntwin_core::town::Town { covered, ..common::town() };
        Feed { core: Core::open(rules, policy, &town, None).unwrap(), t0: parse_local_date("2026-03-02").unwrap(), n: 0 }
    };
    let absences = |covered: Option<Vec<String>>| {
        let mut f = open(covered);
        // Three days with no gate pass from anyone: the registered resident is missed after 48 hours, unless
        // the platform does not cover her estate (no gates, no register).
        for m in 0..=72 * 6 {
            f.tick(m * 10 * MINUTE);
        }
        f.core.orders.orders.iter().filter(|o| o.rule == "vulnerable-absence").count()
    };
    assert_eq!(absences(None), 1);
    assert_eq!(absences(Some(vec!["E001".into()])), 1);
    assert_eq!(absences(Some(Vec::new())), 0);
}

/// A core on the platform comparison's rules (with the QR rule) and the source's loops (with its promise).
fn platform_core() -> Core {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = RuleSet::load(&root.join("scenarios/rules/platform.ron")).unwrap();
    let policy = Policy::load_for(&root.join("scenarios/policies/source-loops.ron"), &rules).unwrap();
    Core::open(rules, policy, &common::town(), None).unwrap()
}

#[test]
fn with_a_qr_rule_the_qr_code_has_its_own_orders_and_promise_and_a_later_12345_call_joins_them() {
    use towntwin_core::orders::{Loop, State};
    let mut f = Feed { core: platform_core(), t0: parse_local_date("2026-03-02").unwrap(), n: 0 };
    f.tick(0);
    // A repair request by QR: the QR rule's order, for the property manager.
    let o = f.report("E001", "qr", IncidentKind::RepairNeeded, "B01-101", MINUTE);
    assert!(o.rejected.is_empty(), "{:?}", o.rejected);
    let orders = f.core.orders.orders.clone();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!((orders[0].rule.as_str(), orders[0].subject.as_str()), ("qr", "B01-101"));
    assert_eq!(orders[0].assignee.first(), Some(&towntwin_core::orders::Role::Property));
    // The resident calls 12345 about the same repair: the call joins the QR order.
    f.call("E001", IncidentKind::RepairNeeded, "B01-101", 5 * MINUTE);
    assert_eq!(f.core.orders.orders.len(), 1);
    assert_eq!((f.core.orders.orders[0].calls, f.core.orders.orders[0].count), (1, 2));
    // A call about another flat's repair: the hotline rule's order, not the QR rule's.
    f.call("E001", IncidentKind::RepairNeeded, "B01-102", 6 * MINUTE);
    assert_eq!(f.core.orders.orders.len(), 2);
    assert_eq!(f.core.orders.orders[1].rule, "hotline");
    // The QR promise (accept within 60 minutes) moves the unaccepted QR order up at minute 61, while the
    // hotline order waits for the small loop's own day.
    for m in 7..=62 {
        f.tick(m * MINUTE);
    }
    let (qr, hot) = (&f.core.orders.orders[0], &f.core.orders.orders[1]);
    assert_eq!((qr.level, qr.state), (Loop::Medium, State::Dispatched), "{qr:#?}");
    assert_eq!(hot.level, Loop::Small, "{hot:#?}");
}

#[test]
fn without_a_qr_rule_the_hotline_rule_takes_the_qr_reports() {
    let mut f = Feed { core: core(), t0: parse_local_date("2026-03-02").unwrap(), n: 0 };
    f.tick(0);
    f.report("E001", "qr", IncidentKind::RepairNeeded, "B01-101", MINUTE);
    assert_eq!(f.core.orders.orders.len(), 1);
    assert_eq!(f.core.orders.orders[0].rule, "hotline");
}
