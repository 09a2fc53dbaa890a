//! Work orders: dedup of repeats, each escalation condition, whistles, and the policy snapshot.

use std::path::Path;

use towntwin_core::orders::{Action, Loop, Orders, Policy, State};
use towntwin_core::rules::{Finding, Role, RuleSet};
use towntwin_core::time::{HOUR, MINUTE};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn policy(name: &str) -> Policy {
    Policy::load(&root().join(format!("scenarios/policies/{name}.ron"))).expect("policy loads")
}

fn rules() -> RuleSet {
    RuleSet::load(&root().join("assets/rules.ron")).unwrap()
}

fn finding(key: &str, at: i64) -> Finding {
    Finding { rule: "elevator-ebike".into(), key: key.into(), area: "E001".into(), estate: Some(0), subject: "B01-101".into(), at, detail: String::new() }
}

#[test]
fn repeats_of_one_condition_count_on_one_order() {
    let (mut o, r, p) = (Orders::default(), rules(), policy("standard"));
    let a = o.on_finding(&finding("k", 10 * MINUTE), &r, &p).unwrap();
    let b = o.on_finding(&finding("k", 30 * MINUTE), &r, &p).unwrap();
    let c = o.on_finding(&finding("k", 5 * MINUTE), &r, &p).unwrap(); // late repeat
    assert_eq!((a, b, c), (1, 1, 1));
    let w = o.get(1).unwrap();
    assert_eq!((w.count, w.first_seen, w.last_seen, w.state), (3, 5 * MINUTE, 30 * MINUTE, State::Dispatched));
    assert_eq!(w.assignee, vec![Role::Property]);
    assert_eq!(o.on_finding(&finding("other", 0), &r, &p).unwrap(), 2);
    // Once closed, the same condition opens a new order.
    for (i, a) in [Action::Accept, Action::Start, Action::Resolve, Action::Verify, Action::Close].into_iter().enumerate() {
        o.act(1, HOUR + i as i64, "property", a).unwrap();
    }
    assert_eq!(o.on_finding(&finding("k", 2 * HOUR), &r, &p).unwrap(), 3);
    let log: Vec<&str> = o.pending.iter().filter(|e| e.order == 1).map(|e| e.action.as_str()).collect();
    assert_eq!(log, ["create", "dispatch", "accept", "start", "resolve", "verify", "close"]);
}

#[test]
fn not_accepted_in_time_escalates_to_the_departments_then_the_task_force() {
    let (mut o, r, p) = (Orders::default(), rules(), policy("standard"));
    o.on_finding(&finding("k", 0), &r, &p).unwrap();
    o.tick(2 * HOUR - MINUTE).unwrap();
    assert_eq!(o.get(1).unwrap().level, Loop::Small);
    o.tick(2 * HOUR).unwrap();
    let w = o.get(1).unwrap();
    assert_eq!((w.level, w.state), (Loop::Medium, State::Dispatched));
    assert_eq!(w.assignee, vec![Role::CityManagement]);
    o.tick(3 * HOUR).unwrap();
    assert_eq!(o.get(1).unwrap().level, Loop::Large);
    assert_eq!(o.pending.last().unwrap().reason.as_deref(), Some("not accepted in time"));
}

#[test]
fn not_resolved_in_time_escalates() {
    let (mut o, r, p) = (Orders::default(), rules(), policy("standard"));
    o.on_finding(&finding("k", 0), &r, &p).unwrap();
    o.act(1, 10 * MINUTE, "property", Action::Accept).unwrap();
    o.tick(23 * HOUR).unwrap();
    assert_eq!(o.get(1).unwrap().level, Loop::Small);
    o.tick(24 * HOUR).unwrap();
    assert_eq!(o.get(1).unwrap().level, Loop::Medium);
    assert_eq!(o.pending.last().unwrap().reason.as_deref(), Some("not resolved in time"));
}

#[test]
fn failure_on_site_and_reopenings_escalate_and_a_whistle_calls_in_the_departments() {
    let (mut o, r, p) = (Orders::default(), rules(), policy("standard"));
    o.on_finding(&finding("a", 0), &r, &p).unwrap();
    o.act(1, MINUTE, "property", Action::Accept).unwrap();
    o.act(1, 2 * MINUTE, "property", Action::Fail { reason: "resident refused".into() }).unwrap();
    assert_eq!((o.get(1).unwrap().level, o.get(1).unwrap().state), (Loop::Medium, State::Dispatched));

    o.on_finding(&finding("b", 0), &r, &p).unwrap();
    for round in 0..2 {
        for a in [Action::Accept, Action::Start, Action::Resolve] {
            o.act(2, MINUTE * (round * 10 + 1), "property", a).unwrap();
        }
        o.act(2, MINUTE * (round * 10 + 5), "committee", Action::Reopen { reason: "still there".into() }).unwrap();
    }
    let w = o.get(2).unwrap();
    assert_eq!((w.reopened, w.level), (2, Loop::Medium), "escalated on the second reopening");

    o.on_finding(&finding("c", 0), &r, &p).unwrap();
    o.act(3, MINUTE, "committee", Action::Whistle { reason: "needs the departments".into() }).unwrap();
    assert_eq!(o.get(3).unwrap().level, Loop::Medium);
    let e = o.act(3, MINUTE, "x", Action::Close).unwrap_err();
    assert!(e.to_string().contains("cannot close work order 3 in state dispatched"), "{e}");
}

#[test]
fn an_order_keeps_the_policy_it_started_under() {
    let (mut o, r) = (Orders::default(), rules());
    o.on_finding(&finding("a", 0), &r, &policy("standard")).unwrap();
    o.on_finding(&finding("b", 0), &r, &policy("whistle-early")).unwrap();
    o.tick(30 * MINUTE).unwrap();
    assert_eq!(o.get(1).unwrap().level, Loop::Small, "standard allows two hours");
    assert_eq!(o.get(2).unwrap().level, Loop::Medium, "whistle-early allows thirty minutes");
    assert_eq!(o.get(1).unwrap().policy.name, "standard");
}

#[test]
fn a_broken_policy_names_the_field() {
    let text = std::fs::read_to_string(root().join("scenarios/policies/standard.ron")).unwrap();
    let bad = text.replace("whistle_to: Medium", "whistle_to: Small");
    let p: Policy = towntwin_core::load::parse_ron(Path::new("p.ron"), &bad).unwrap();
    let e = p.validate(Path::new("p.ron")).unwrap_err().to_string();
    assert!(e.contains("whistle_to"), "{e}");
}

#[test]
fn quiet_hours_count_repeats_on_the_closed_order_until_they_pass() {
    let (mut o, mut r, p) = (Orders::default(), rules(), policy("standard"));
    let quiet = r.rules.iter_mut().find(|x| x.id == "elevator-ebike").unwrap();
    quiet.quiet_hours = 24;
    assert_eq!(o.on_finding(&finding("k", 0), &r, &p).unwrap(), 1);
    for (i, a) in [Action::Accept, Action::Start, Action::Resolve, Action::Verify, Action::Close].into_iter().enumerate() {
        o.act(1, HOUR + i as i64, "property", a).unwrap();
    }
    let closed_at = o.get(1).unwrap().updated_at;
    // Within 24 hours of closing: a repeat on the closed order, which stays closed.
    assert_eq!(o.on_finding(&finding("k", closed_at + 23 * HOUR), &r, &p).unwrap(), 1);
    let w = o.get(1).unwrap();
    assert_eq!((w.count, w.state, w.last_seen), (2, State::Closed, closed_at + 23 * HOUR));
    // After them: a new order. Reopening the closed one makes it the key's open order again.
    assert_eq!(o.on_finding(&finding("k", closed_at + 25 * HOUR), &r, &p).unwrap(), 2);
    assert_eq!(o.on_finding(&finding("j", 0), &r, &p).unwrap(), 3);
    for (i, a) in [Action::Accept, Action::Start, Action::Resolve, Action::Verify, Action::Close].into_iter().enumerate() {
        o.act(3, HOUR + i as i64, "property", a).unwrap();
    }
    o.act(3, 2 * HOUR, "town/dispatcher", Action::Reopen { reason: "still there".into() }).unwrap();
    assert_eq!(o.on_finding(&finding("j", 3 * HOUR), &r, &p).unwrap(), 3);
    assert_eq!(o.get(3).unwrap().count, 2);
}
