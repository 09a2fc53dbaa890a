//! The twin's responders, driven by hand-made notices as the core would send them: who accepts, when, in
//! what order; shifts and headcount; a re-dispatch taking an order away; verification by the dispatchers.

use std::path::Path;

use towntwin_contracts::orders::{Loop, Notice, OrderEvent, Role, State};
use towntwin_contracts::time::{HOUR, MINUTE, Millis, parse_local_date};
use towntwin_contracts::town::Town;
use towntwin_sim::Act;
use towntwin_sim::dist::Dist;
use towntwin_sim::generate::small;
use towntwin_sim::scenario::{Days, Probability, Shift};
use towntwin_sim::{Scenario, Twin, TwinOptions};

fn scenario() -> Scenario {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut s = Scenario::load(&root.join("scenarios/baseline.ron")).expect("baseline loads").scenario;
    s.days = 2;
    s
}

fn notice(order: u64, at: Millis, to: State, level: Loop, area: &str, assignee: &[Role]) -> Notice {
    Notice {
        event: OrderEvent { order, at, actor: "system".into(), action: "dispatch".into(), from: None, to, level, reason: None },
        area: area.into(),
        rule: "test".into(),
        subject: String::new(),
        estate: None,
        assignee: assignee.to_vec(),
        joint: false,
        cause: None,
        first_seen: at,
        last_seen: at,
    }
}

struct Drive {
    twin: Twin,
    start: Millis,
    acts: Vec<Act>,
}

impl Drive {
    fn new(s: &Scenario, town: Town) -> Drive {
        let start = parse_local_date(&s.start_date).unwrap();
        Drive { twin: Twin::new(s, start, town, TwinOptions::default()), start, acts: Vec::new() }
    }

    /// Steps until simulated time `until` (exclusive), delivering `notices` before the first step.
    fn run(&mut self, notices: Vec<Notice>, until: Millis) {
        self.twin.deliver(notices);
        while self.twin.now() + MINUTE < until && !self.twin.finished() {
            self.twin.step();
            self.acts.extend(self.twin.take_acts());
        }
    }

    fn of(&self, order: u64) -> Vec<(Millis, String, &'static str)> {
        self.acts.iter().filter(|a| a.order == order).map(|a| (a.at - self.start, a.principal.to_string(), a.action.name())).collect()
    }
}

#[test]
fn property_staff_accept_travel_and_finish_then_dispatchers_verify() {
    let s = scenario();
    let town = small(3, 2, 1);
    let estate = town.estates[0].id.clone();
    let mut d = Drive::new(&s, town);
    // Dispatched at 10:00 local to the estate's property manager.
    let t = d.start + 10 * HOUR;
    d.run(vec![], t);
    d.run(vec![notice(1, t, State::Dispatched, Loop::Small, &estate, &[Role::Property])], t + 6 * HOUR);
    let acts = d.of(1);
    let who = format!("estate:{estate}/property");
    let names: Vec<_> = acts.iter().map(|a| a.2).collect();
    assert!(names == ["accept", "start", "resolve"] || names == ["accept", "start", "fail"], "{acts:?}");
    assert!(acts.iter().all(|a| a.1 == who), "{acts:?}");
    let c = &s.responders.property;
    let (accept, start, done) = (acts[0].0 - 10 * HOUR, acts[1].0 - acts[0].0, acts[2].0 - acts[1].0);
    let within = |v: Millis, d: &Dist| {
        let Dist::Uniform(lo, hi) = *d else { panic!("the baseline's times are uniform ranges: {d:?}") };
        v >= (lo * MINUTE as f64) as Millis - MINUTE && v <= (hi * MINUTE as f64) as Millis + MINUTE
    };
    assert!(within(accept, &c.notice_minutes), "noticed after {} min", accept / MINUTE);
    assert!(within(start, &c.travel_minutes), "travelled {} min", start / MINUTE);
    assert!(within(done, &c.work_minutes), "worked {} min", done / MINUTE);
    // The core reports it resolved: a dispatcher verifies and closes (or reopens) it.
    let now = d.twin.now() + MINUTE;
    d.run(vec![notice(1, now, State::Resolved, Loop::Small, &estate, &[Role::Property])], now + 6 * HOUR);
    let after: Vec<_> = d.of(1).into_iter().skip(3).collect();
    let names: Vec<_> = after.iter().map(|a| a.2).collect();
    assert!(names == ["verify", "close"] || names == ["reopen"], "{after:?}");
    assert!(after.iter().all(|a| a.1 == "town/dispatcher"));
    let stats = d.twin.responder_stats();
    assert_eq!(stats.by_crew["property"].accepted, 1);
}

#[test]
fn a_redispatch_takes_the_order_away_and_headcount_queues_the_rest() {
    let mut s = scenario();
    s.responders.property.shifts = vec![Shift { days: Days::Every, hours: None, headcount: 1 }];
    s.responders.property.fail_share = Probability::ZERO;
    s.responders.property.work_minutes = Dist::Fixed(200.0);
    let town = small(3, 1, 1);
    let estate = town.estates[0].id.clone();
    let mut d = Drive::new(&s, town);
    let t = d.start + 9 * HOUR;
    d.run(vec![], t);
    // Two orders for one member of staff: the second waits for the first to be resolved.
    d.run(
        vec![
            notice(1, t, State::Dispatched, Loop::Small, &estate, &[Role::Property]),
            notice(2, t, State::Dispatched, Loop::Small, &estate, &[Role::Property]),
        ],
        t + 5 * HOUR,
    );
    let (one, two) = (d.of(1), d.of(2));
    let resolved_one = one.iter().find(|a| a.2 == "resolve").expect("order 1 resolved").0;
    let accepted_two = two.iter().find(|a| a.2 == "accept").expect("order 2 accepted").0;
    assert!(accepted_two >= resolved_one, "one member: order 2 accepted at {accepted_two} before order 1 was resolved at {resolved_one}");
    // Order 2 is escalated to the task force while property staff work it: they stop, the task force takes it.
    let now = d.twin.now() + MINUTE;
    let before = d.of(2).len();
    d.run(vec![notice(2, now, State::Dispatched, Loop::Large, &estate, &[Role::TaskForce])], now + 4 * HOUR);
    let later: Vec<_> = d.of(2).into_iter().skip(before).collect();
    assert!(later.iter().all(|a| a.1 == "town/task-force"), "{later:?}");
    assert_eq!(later.first().map(|a| a.2), Some("accept"));
    assert_eq!(d.twin.responder_stats().by_crew["property"].withdrawn, 1);
}

#[test]
fn committee_cadres_accept_only_on_duty() {
    let s = scenario();
    let town = small(3, 1, 1);
    let estate = town.estates[0].id.clone();
    let committee = town.estates[0].committee.clone();
    let mut d = Drive::new(&s, town);
    // Dispatched at 20:00; cadres are on duty 08:30-17:30.
    let t = d.start + 20 * HOUR;
    d.run(vec![], t);
    d.run(vec![notice(7, t, State::Dispatched, Loop::Small, &estate, &[Role::Committee])], d.start + 36 * HOUR);
    let acts = d.of(7);
    let accept = acts.iter().find(|a| a.2 == "accept").expect("accepted next morning");
    assert_eq!(accept.1, format!("committee:{committee}/cadre"));
    assert!(accept.0 >= 32 * HOUR + 30 * MINUTE, "accepted at {} min, before the cadres' shift", accept.0 / MINUTE);
    // Nothing else happens to an order nobody dispatched, and the same notices give the same actions.
    assert!(d.acts.iter().all(|a| a.order == 7));
    let mut again = Drive::new(&s, small(3, 1, 1));
    again.run(vec![], t);
    again.run(vec![notice(7, t, State::Dispatched, Loop::Small, &estate, &[Role::Committee])], d.start + 36 * HOUR);
    assert_eq!(again.acts, d.acts);
}

#[test]
fn crews_work_their_shifts_nights_and_working_days() {
    // 2026-03-06 is a Friday: a housing order at 17:00 waits over the weekend; city management's night
    // squad takes one dispatched at 23:00 the same night.
    let mut s = scenario();
    s.start_date = "2026-03-06".into();
    s.days = 4;
    let town = small(3, 1, 1);
    let estate = town.estates[0].id.clone();
    let mut d = Drive::new(&s, town);
    let friday_5pm = d.start + 17 * HOUR + 20 * MINUTE;
    d.run(vec![], friday_5pm);
    d.run(vec![notice(1, friday_5pm, State::Dispatched, Loop::Medium, &estate, &[Role::Housing])], d.start + 23 * HOUR);
    d.run(vec![notice(2, d.start + 23 * HOUR, State::Dispatched, Loop::Medium, &estate, &[Role::CityManagement])], d.start + 4 * 24 * HOUR - MINUTE);
    let housing = d.of(1);
    let accept = housing.iter().find(|a| a.2 == "accept").expect("housing accepts on Monday");
    assert_eq!(accept.1, "town/housing");
    // Monday 2026-03-09 08:30 is 3 days and 8.5 hours after the start.
    assert!(accept.0 >= 3 * 24 * HOUR + 8 * HOUR + 30 * MINUTE, "housing accepted at {} min, outside its shift", accept.0 / MINUTE);
    let night = d.of(2);
    let taken = night.iter().find(|a| a.2 == "accept").expect("the night squad accepts");
    assert_eq!(taken.1, "town/city-management");
    assert!(taken.0 < 24 * HOUR, "accepted at {} min, not that night", taken.0 / MINUTE);
}

#[test]
fn every_party_of_a_joint_visit_goes_and_reports_and_one_accepts_for_all() {
    let mut s = scenario();
    for c in [&mut s.responders.housing, &mut s.responders.public_security] {
        c.fail_share = Probability::new(0.0).unwrap();
    }
    let town = small(3, 2, 1);
    let estate = town.estates[0].id.clone();
    let mut d = Drive::new(&s, town);
    // Tuesday 3 March 2026, 10:00 local: the housing office is at work.
    let t = d.start + 24 * HOUR + 10 * HOUR;
    d.run(vec![], t);
    let mut n = notice(1, t, State::Dispatched, Loop::Medium, &estate, &[Role::Housing, Role::PublicSecurity]);
    n.joint = true;
    d.run(vec![n], t + 8 * HOUR);
    let acts = d.of(1);
    let names: Vec<(&str, &str)> = acts.iter().map(|a| (a.1.as_str(), a.2)).collect();
    assert_eq!(names.iter().filter(|a| a.1 == "accept").count(), 1, "{acts:?}");
    assert_eq!(names.iter().filter(|a| a.1 == "start").count(), 1, "{acts:?}");
    assert!(!names.iter().any(|a| a.1 == "resolve"), "a joint visit is resolved by its reports: {acts:?}");
    let mut reporters: Vec<&str> = names.iter().filter(|a| a.1 == "report").map(|a| a.0).collect();
    reporters.sort();
    assert_eq!(reporters, ["town/housing", "town/public-security"], "{acts:?}");
    let stats = d.twin.responder_stats();
    assert_eq!((stats.by_crew["housing"].resolved, stats.by_crew["public_security"].resolved), (1, 1));
}
