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
    // The standard policy routes e-bikes in elevators to the fire-safety office, with the property informed.
    assert_eq!(w.assignee, vec![Role::FireSafety, Role::Property]);
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

fn found(rule: &str, key: &str, at: i64) -> Finding {
    Finding { rule: rule.into(), key: key.into(), area: "E001".into(), estate: Some(0), subject: "B01-101".into(), at, detail: String::new() }
}

#[test]
fn routes_send_each_rule_to_its_department_and_never_back_to_the_crew_it_came_from() {
    let (mut o, r, p) = (Orders::default(), rules(), policy("standard"));
    let fail = |o: &mut Orders, id: u64, at: i64| {
        o.act(id, at, "crew", Action::Accept).unwrap();
        o.act(id, at + 1, "crew", Action::Fail { reason: "could not".into() }).unwrap();
    };
    // Group rentals: the committee, then housing with the police, then the task force.
    let g = o.on_finding(&found("group-rental", "g", 0), &r, &p).unwrap();
    assert_eq!(o.get(g).unwrap().assignee, [Role::Committee, Role::Property]);
    fail(&mut o, g, MINUTE);
    assert_eq!((o.get(g).unwrap().level, o.get(g).unwrap().assignee.clone()), (Loop::Medium, vec![Role::Housing, Role::PublicSecurity]));
    fail(&mut o, g, 2 * MINUTE);
    assert_eq!((o.get(g).unwrap().level, o.get(g).unwrap().assignee.clone()), (Loop::Large, vec![Role::TaskForce]));
    // Fence orders start with city management; failed, the police go, not city management again.
    let f = o.on_finding(&found("fence-violation", "f", 0), &r, &p).unwrap();
    assert_eq!(o.get(f).unwrap().assignee, [Role::CityManagement]);
    fail(&mut o, f, MINUTE);
    assert_eq!(o.get(f).unwrap().assignee, [Role::PublicSecurity, Role::CityManagement], "the police lead, city management informed");
    // A manhole order has no route: the medium loop's default is city management, which it came from, so it
    // goes straight up to the task force.
    let m = o.on_finding(&found("manhole", "m", 0), &r, &p).unwrap();
    assert_eq!(o.get(m).unwrap().assignee, [Role::CityManagement]);
    fail(&mut o, m, MINUTE);
    assert_eq!((o.get(m).unwrap().level, o.get(m).unwrap().assignee.clone()), (Loop::Large, vec![Role::TaskForce]));
    assert_eq!(o.pending.iter().filter(|e| e.order == m && e.action == "fail").count(), 1, "one failure, one move");
    // The direct-large policy starts safety-critical kinds at the task force, with their large-loop deadlines.
    let d = policy("direct-large");
    let s = o.on_finding(&found("smoke", "s", 0), &r, &d).unwrap();
    let w = o.get(s).unwrap();
    assert_eq!((w.level, w.state, w.assignee.clone()), (Loop::Large, State::Dispatched, vec![Role::TaskForce]));
    let e = o.on_finding(&found("elevator-ebike", "e", 0), &r, &d).unwrap();
    assert_eq!(o.get(e).unwrap().level, Loop::Small);
    o.tick(HOUR).unwrap();
    assert_eq!(o.get(s).unwrap().level, Loop::Large, "nowhere further to go");
}

#[test]
fn a_route_naming_an_unknown_rule_or_an_empty_loop_is_refused() {
    let f = Path::new("p.ron");
    let text = std::fs::read_to_string(root().join("scenarios/policies/standard.ron")).unwrap();
    let bad = text.replace("\"group-rental\": [Housing", "\"group-rentals\": [Housing");
    let p: Policy = towntwin_core::load::parse_ron(f, &bad).unwrap();
    let e = p.check_rules(&rules(), f).unwrap_err().to_string();
    assert!(e.contains("levels[1].routes[\"group-rentals\"]") && e.contains("no rule `group-rentals`") && e.contains("group-rental,"), "{e}");
    let bad = text.replace("    whistle_to: Medium,", "    whistle_to: Medium,\n    start_at: {\"fire\": Large},");
    let p: Policy = towntwin_core::load::parse_ron(f, &bad).unwrap();
    assert!(p.check_rules(&rules(), f).unwrap_err().to_string().contains("start_at[\"fire\"]"));
    let bad = text.replace("\"smoke\": [FireSafety]", "\"smoke\": []").replace("targets: [TaskForce]", "targets: []");
    let p: Policy = towntwin_core::load::parse_ron(f, &bad).unwrap();
    let e = p.validate(f).unwrap_err().to_string();
    assert!(e.contains("levels[1].routes[\"smoke\"]") && e.contains("expected at least one role"), "{e}");
    assert!(e.contains("levels[2].targets") && e.contains("the large loop needs at least one role"), "{e}");
    let bad = text.replace("[Housing, PublicSecurity]", "[Housing, Police]");
    let e = towntwin_core::load::parse_ron::<Policy>(f, &bad).unwrap_err().to_string();
    assert!(e.contains("Police") && e.contains("PublicSecurity"), "{e}");
}

fn rental(key: &str, at: i64) -> Finding {
    Finding { rule: "group-rental".into(), key: key.into(), area: "E001".into(), estate: Some(0), subject: "B01-101".into(), at, detail: String::new() }
}

#[test]
fn the_source_loops_try_a_habit_twice_visit_jointly_and_assemble_a_task_force() {
    let (mut o, r, p) = (Orders::default(), rules(), policy("source-loops"));
    // In the estate a failed visit moves nothing up by itself (the committee's whistle does) ...
    o.on_finding(&finding("k", 0), &r, &p).unwrap();
    for round in 0..3 {
        o.act(1, MINUTE * (round * 10 + 1), "property", Action::Accept).unwrap();
        o.act(1, MINUTE * (round * 10 + 2), "property", Action::Fail { reason: "nobody home".into() }).unwrap();
    }
    assert_eq!((o.get(1).unwrap().level, o.get(1).unwrap().fails), (Loop::Small, 3));
    // ... and with `failed_visits: 2` the second failure does.
    let text = std::fs::read_to_string(root().join("scenarios/policies/source-loops.ron")).unwrap();
    let two: Policy =
        towntwin_core::load::parse_ron(Path::new("p.ron"), &text.replace("\"fence-violation\": 1,", "\"elevator-ebike\": 2, \"fence-violation\": 1,")).unwrap();
    o.on_finding(&finding("k2", 0), &r, &two).unwrap();
    for round in 0..2 {
        o.act(2, MINUTE * (round * 10 + 1), "property", Action::Accept).unwrap();
        o.act(2, MINUTE * (round * 10 + 2), "property", Action::Fail { reason: "nobody home".into() }).unwrap();
        let w = o.get(2).unwrap();
        let want = if round == 0 { (Loop::Small, 1) } else { (Loop::Medium, 0) };
        assert_eq!((w.level, w.fails), want, "after {} failed visits", round + 1);
    }
    // A group rental at the medium loop is a joint visit of the housing office and the police: resolved when
    // both have reported, not before; a plain resolve is refused, and so is a report by someone not on it.
    o.on_finding(&rental("r", 0), &r, &p).unwrap();
    o.act(3, MINUTE, "committee:C01/cadre", Action::Whistle { reason: "the estate cannot evict".into() }).unwrap();
    let w = o.get(3).unwrap();
    assert_eq!((w.level, &w.assignee, w.joint), (Loop::Medium, &vec![Role::Housing, Role::PublicSecurity], true));
    o.act(3, 2 * MINUTE, "town/housing", Action::Accept).unwrap();
    o.act(3, 2 * MINUTE, "town/housing", Action::Start).unwrap();
    let e = o.act(3, 3 * MINUTE, "town/housing", Action::Resolve).unwrap_err().to_string();
    assert!(e.contains("waiting for housing, public_security"), "{e}");
    let e = o.act(3, 3 * MINUTE, "town/fire-safety", Action::Report { role: Role::FireSafety }).unwrap_err().to_string();
    assert!(e.contains("fire_safety is not on this joint visit"), "{e}");
    assert_eq!(o.act(3, 3 * MINUTE, "town/housing", Action::Report { role: Role::Housing }).unwrap(), State::InProgress);
    assert_eq!(o.pending.last().unwrap().reason.as_deref(), Some("for housing"), "the history names the party");
    let e = o.act(3, 4 * MINUTE, "town/housing", Action::Report { role: Role::Housing }).unwrap_err().to_string();
    assert!(e.contains("already reported"), "{e}");
    assert_eq!(o.act(3, 5 * MINUTE, "town/public-security", Action::Report { role: Role::PublicSecurity }).unwrap(), State::Resolved);
    // Reopened, the visit starts over: both report again.
    o.act(3, 6 * MINUTE, "town/dispatcher", Action::Reopen { reason: "still rented out".into() }).unwrap();
    assert!(o.get(3).unwrap().reported.is_empty());
    // Failed at the medium loop: a task force assembled for it, the task force's office with both departments.
    o.act(3, 7 * MINUTE, "town/housing", Action::Accept).unwrap();
    o.act(3, 8 * MINUTE, "town/housing", Action::Fail { reason: "the landlord refuses".into() }).unwrap();
    let w = o.get(3).unwrap();
    assert_eq!((w.level, &w.assignee, w.joint), (Loop::Large, &vec![Role::TaskForce, Role::Housing, Role::PublicSecurity], true));
    // A report on an order that is no joint visit is refused.
    o.on_finding(&finding("m", 0), &r, &p).unwrap();
    o.act(4, MINUTE, "property", Action::Accept).unwrap();
    let e = o.act(4, 2 * MINUTE, "property", Action::Report { role: Role::Property }).unwrap_err().to_string();
    assert!(e.contains("no joint visit"), "{e}");
}

#[test]
fn an_alarm_relayed_by_the_operations_centres_is_dispatched_when_the_relay_is_over() {
    let (mut o, r, p) = (Orders::default(), rules(), policy("source-loops"));
    let alone = |at: i64| Finding {
        rule: "vulnerable-absence".into(),
        key: "E001/P1".into(),
        area: "E001".into(),
        estate: Some(0),
        subject: "P1".into(),
        at,
        detail: String::new(),
    };
    o.on_finding(&alone(0), &r, &p).unwrap();
    assert_eq!(o.get(1).unwrap().state, State::Created);
    // A repeat during the relay counts on it; its deadlines start at the dispatch.
    o.on_finding(&alone(10 * MINUTE), &r, &p).unwrap();
    o.tick(29 * MINUTE).unwrap();
    assert_eq!((o.get(1).unwrap().state, o.get(1).unwrap().count), (State::Created, 2));
    o.tick(30 * MINUTE).unwrap();
    let w = o.get(1).unwrap();
    assert_eq!((w.state, w.dispatched_at, &w.assignee), (State::Dispatched, 30 * MINUTE, &vec![Role::Committee]));
    assert_eq!(o.pending.last().unwrap().actor, "operations-centre");
    // A snapshot taken during a relay dispatches on time after a reload.
    o.on_finding(&Finding { key: "E001/P2".into(), subject: "P2".into(), ..alone(HOUR) }, &r, &p).unwrap();
    let mut back: Orders = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
    back.reindex();
    back.tick(HOUR + 30 * MINUTE).unwrap();
    assert_eq!(back.get(2).unwrap().state, State::Dispatched);
    // Refused: a relay of no time or of more than a week, or of a rule the rule set does not have.
    let text = std::fs::read_to_string(root().join("scenarios/policies/source-loops.ron")).unwrap();
    for (to, want) in [("0", "relay_minutes[\"vulnerable-absence\"]"), ("20000", "expected 1..=10080")] {
        let bad: Policy =
            towntwin_core::load::parse_ron(Path::new("p.ron"), &text.replace("\"vulnerable-absence\": 30 }", &format!("\"vulnerable-absence\": {to} }}")))
                .unwrap();
        let e = bad.validate(Path::new("p.ron")).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn a_policy_with_a_joint_visit_of_one_a_task_force_below_the_large_loop_or_a_whistle_of_nothing_is_refused() {
    let text = std::fs::read_to_string(root().join("scenarios/policies/source-loops.ron")).unwrap();
    for (from, to, wants) in [
        ("joint: [\"group-rental\",", "joint: [\"smoke\", \"group-rental\",", vec!["levels[1].joint[\"smoke\"]", "at least two takers"]),
        (
            "escalate_after_reopens: Some(2),\n            routes: {",
            "escalate_after_reopens: Some(2), assemble: true,\n            routes: {",
            vec!["levels[1].assemble", "only the large loop"],
        ),
        ("\"group-rental\": AfterFails(1)", "\"group-rental\": AfterFails(0)", vec!["whistle[\"group-rental\"]", "at least 1"]),
        ("\"smoke\": 1,", "\"smoke\": 0,", vec!["failed_visits[\"smoke\"]", "at least 1"]),
        (
            "\"group-rental\": [Housing, PublicSecurity]",
            "\"group-rental\": [Housing, Housing]",
            vec!["levels[1].routes[\"group-rental\"]", "a role named twice"],
        ),
        ("\"smoke\": 1,", "\"smoke\": 1, \"hotline\": 1,", vec!["whistle[\"hotline\"]", "never blows"]),
    ] {
        assert!(text.contains(from), "{from}");
        let bad = text.replacen(from, to, 1);
        let p: Policy = towntwin_core::load::parse_ron(Path::new("p.ron"), &bad).unwrap();
        let e = p.validate(Path::new("p.ron")).unwrap_err().to_string();
        for want in wants {
            assert!(e.contains(want), "expected {want:?} in {e}");
        }
    }
    // A joint visit in the estate by the rule's own targets: group rentals have two (committee and property),
    // a full kiosk's one.
    for (rule, ok) in [("group-rental", true), ("bin-overflow", false)] {
        let small = text.replace(
            "routes: { \"garbage-dumping\": [Owners, Property], \"garbage-sorting\": [Owners, Property] },",
            &format!("routes: {{ \"garbage-dumping\": [Owners, Property], \"garbage-sorting\": [Owners, Property] }}, joint: [\"{rule}\"],"),
        );
        let p: Policy = towntwin_core::load::parse_ron(Path::new("p.ron"), &small).unwrap();
        p.validate(Path::new("p.ron")).unwrap();
        // (assets/rules.ron has no garbage-dumping, garbage-sorting or qr rule: those refusals are there either way.)
        let got = p.check_rules(&rules(), Path::new("p.ron"));
        let e = got.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e.contains(&format!("levels[0].joint[\"{rule}\"]")), !ok, "{rule}: {e}");
    }
    // A rule the rule set does not have, named by a whistle or a joint visit.
    let bad = text.replace("\"hotline\": AfterFails(1)", "\"hotlines\": AfterFails(1)");
    let p: Policy = towntwin_core::load::parse_ron(Path::new("p.ron"), &bad).unwrap();
    let e = p.check_rules(&rules(), Path::new("p.ron")).unwrap_err().to_string();
    assert!(e.contains("no rule `hotlines`"), "{e}");
}

#[test]
fn a_promise_of_nothing_of_zero_or_for_an_unknown_rule_is_refused() {
    let f = Path::new("p.ron");
    let text = std::fs::read_to_string(root().join("scenarios/policies/standard.ron")).unwrap();
    let with = |promise: &str| text.replace("escalate_after_reopens: Some(2)),", &format!("escalate_after_reopens: Some(2), promise: {{{promise}}}),"));
    let p: Policy = towntwin_core::load::parse_ron(f, &with("\"hotline\": ()")).unwrap();
    let e = p.validate(f).unwrap_err().to_string();
    assert!(e.contains("levels[0].promise[\"hotline\"]") && e.contains("changes nothing"), "{e}");
    let p: Policy = towntwin_core::load::parse_ron(f, &with("\"hotline\": (accept_within_minutes: Some(0))")).unwrap();
    let e = p.validate(f).unwrap_err().to_string();
    assert!(e.contains("levels[0].promise[\"hotline\"].accept_within_minutes"), "{e}");
    let p: Policy = towntwin_core::load::parse_ron(f, &with("\"qr\": (resolve_within_hours: Some(4))")).unwrap();
    p.validate(f).unwrap();
    let e = p.check_rules(&rules(), f).unwrap_err().to_string();
    assert!(e.contains("levels[0].promise[\"qr\"]") && e.contains("no rule `qr`"), "{e}");
    // A promise keeps what it does not say from the level.
    let p: Policy = towntwin_core::load::parse_ron(f, &with("\"hotline\": (resolve_within_hours: Some(4))")).unwrap();
    assert_eq!(p.level(towntwin_core::orders::Loop::Small).deadlines("hotline"), (Some(120), Some(4)));
    assert_eq!(p.level(towntwin_core::orders::Loop::Small).deadlines("smoke"), (Some(120), Some(24)));
}
