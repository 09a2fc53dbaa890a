//! The source's scenarios that need a response to change the town, in the twin alone: a household the
//! kiosks flagged sorts carefully once persuaded and goes back to its habit at the drawn relapse; points
//! win households over for good; construction waste left outside a box is seen by its camera and cleared;
//! residents' repair requests and questions reach the estate by the QR code only where the platform covers
//! it, and are seen to by the property's own channels otherwise. Each against a control twin of the same seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use towntwin_contracts::event::Line;
use towntwin_contracts::orders::{Loop, Notice, OrderEvent, Role, State};
use towntwin_contracts::time::{DAY, HOUR, MINUTE, Millis, parse_local_date};
use towntwin_contracts::truth::{Detects, IncidentKind, MatchBy};
use towntwin_sim::dist::Dist;
use towntwin_sim::generate::small;
use towntwin_sim::scenario::{Deployed, Effect, Probability};
use towntwin_sim::{Incident, RuleTargets, Scenario, Twin, TwinOptions};

fn scenario(days: u32) -> Scenario {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut s = Scenario::load(&root.join("scenarios/baseline.ron")).expect("baseline loads").scenario;
    s.days = days;
    s
}

fn p(x: f64) -> Probability {
    Probability::new(x).unwrap()
}

fn twin(s: &Scenario, rule: &str, kind: IncidentKind) -> Twin {
    let mut t = Twin::new(s, parse_local_date(&s.start_date).unwrap(), small(5, 2, 1), TwinOptions { threads: Some(1), ..TwinOptions::default() });
    let detects = Detects { kinds: vec![kind], by: MatchBy::Subject };
    t.set_rule_targets(RuleTargets { detects: [(rule.to_string(), detects)].into_iter().collect(), ..RuleTargets::default() });
    t
}

/// A resolution of an order of `rule` about `subject` in `area`, as the core would notify it.
pub(crate) fn resolved(order: u64, at: Millis, rule: &str, area: &str, subject: &str) -> Notice {
    Notice {
        event: OrderEvent {
            order,
            at,
            actor: "estate:x/property".into(),
            action: "resolve".into(),
            from: Some(State::InProgress),
            to: State::Resolved,
            level: Loop::Small,
            reason: None,
        },
        area: area.into(),
        rule: rule.into(),
        subject: subject.into(),
        estate: None,
        assignee: vec![Role::Property],
        joint: false,
        cause: None,
        first_seen: at,
        last_seen: at,
    }
}

/// Runs `t` to its end, delivering `notices` at their instants.
fn run(mut t: Twin, mut notices: Vec<Notice>) -> Vec<Incident> {
    notices.sort_by_key(|n| n.event.at);
    let mut next = 0;
    while !t.finished() {
        let due: Vec<Notice> = notices[next..].iter().take_while(|n| n.event.at <= t.now() + MINUTE).cloned().collect();
        next += due.len();
        if !due.is_empty() {
            t.deliver(due);
        }
        t.step();
    }
    t.incidents().to_vec()
}

/// Wrong sorts per (estate, flat) within `[from, to)`.
fn missorts(truth: &[Incident], from: Millis, to: Millis) -> BTreeMap<(String, String), u32> {
    let mut m = BTreeMap::new();
    for i in truth.iter().filter(|i| i.kind == IncidentKind::GarbageMissort && i.start_ms >= from && i.start_ms < to) {
        *m.entry((i.area.to_string(), i.subject.to_string())).or_default() += 1;
    }
    m
}

#[test]
fn a_persuaded_household_sorts_carefully_until_its_relapse() {
    let mut s = scenario(8);
    // Every visit persuades; a persuaded household makes no wrong sort at all; the habit is back after 3 days.
    s.garbage.careful_missort_factor = p(0.0);
    s.response.effects.insert(IncidentKind::GarbageMissort, Effect { ends: p(1.0), resumes_after_days: Some(Dist::Fixed(3.0)) });
    let start = parse_local_date(&s.start_date).unwrap();
    let control = run(twin(&s, "garbage-sorting", IncidentKind::GarbageMissort), Vec::new());
    // The households that sorted wrongly on the first day get a visit at the start of the second.
    let day1 = missorts(&control, start, start + DAY);
    assert!(day1.len() > 20, "{} households sorted wrongly on day 1", day1.len());
    let visit = start + DAY + 60 * MINUTE;
    let notices = day1.keys().enumerate().map(|(i, (area, flat))| resolved(i as u64 + 1, visit, "garbage-sorting", area, flat)).collect();
    let treated = run(twin(&s, "garbage-sorting", IncidentKind::GarbageMissort), notices);
    // The same town up to the visit (common random numbers) ...
    assert_eq!(missorts(&treated, start, visit), missorts(&control, start, visit));
    // ... then none of the visited households sorts wrongly until the relapse on day 4, while in the
    // control they go on ...
    let careful = |t: &[Incident], from, to| missorts(t, from, to).into_iter().filter(|(k, _)| day1.contains_key(k)).map(|(_, n)| n).sum::<u32>();
    let (from, relapse) = (start + 2 * DAY, visit + 3 * DAY);
    assert_eq!(careful(&treated, from, relapse - HOUR), 0);
    assert!(careful(&control, from, relapse - HOUR) > 10, "{}", careful(&control, from, relapse - HOUR));
    // ... and after it, they are back to their habit: the same wrong sorts as the control.
    let (a, b) = (start + 5 * DAY, start + 8 * DAY);
    assert_eq!(careful(&treated, a, b), careful(&control, a, b));
    assert!(careful(&treated, a, b) > 0);
    // The others are untouched throughout.
    let others = |t: &[Incident]| missorts(t, start, b).into_iter().filter(|(k, _)| !day1.contains_key(k)).collect::<Vec<_>>();
    assert_eq!(others(&treated), others(&control));
}

#[test]
fn points_for_sorting_right_win_households_over_for_good_where_the_platform_is() {
    let mut s = scenario(10);
    s.garbage.careful_missort_factor = p(0.0);
    s.platform.points_sorting_per_week = p(1.0);
    let start = parse_local_date(&s.start_date).unwrap();
    let won = run(twin(&s, "garbage-sorting", IncidentKind::GarbageMissort), Vec::new());
    assert!(!missorts(&won, start, start + 7 * DAY).is_empty());
    assert!(missorts(&won, start + 7 * DAY, start + 10 * DAY).is_empty(), "points at the first week's end: nobody sorts wrongly after");
    s.platform.estates = Deployed::Nothing;
    let uncovered = run(twin(&s, "garbage-sorting", IncidentKind::GarbageMissort), Vec::new());
    assert!(!missorts(&uncovered, start + 7 * DAY, start + 10 * DAY).is_empty(), "no points where the platform is not");
}

#[test]
fn construction_waste_left_outside_a_box_is_seen_and_cleared_by_a_response_or_the_rounds() {
    let mut s = scenario(6);
    s.renovation.starts_per_1000_flats_year = 400.0;
    s.renovation.dumped_outside_legal = p(0.5);
    s.renovation.dumped_outside_illegal = p(0.5);
    s.renovation.dumping_seen = p(1.0);
    s.response.effects.insert(IncidentKind::ConstructionDumping, Effect { ends: p(1.0), resumes_after_days: None });
    let mut t = twin(&s, "construction-dumping", IncidentKind::ConstructionDumping);
    let mut seen = 0;
    let mut answered = Vec::new();
    let mut n = 0;
    while !t.finished() {
        // Every sighting is an order resolved an hour later (as the core and a crew would).
        let msgs = t.step();
        for m in msgs.iter().filter(|m| m.topic().ends_with("/construction.dumping")) {
            seen += 1;
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let (area, device) = (m.topic().split('/').nth(1).unwrap().to_string(), m.topic().split('/').nth(3).unwrap().to_string());
            assert!(device.contains("-cwbox-"), "{device}");
            assert!(v["data"]["bags"].as_u64().is_some_and(|b| b >= 1), "{v}");
            n += 1;
            answered.push(resolved(n, t.now() + HOUR, "construction-dumping", &area, &device));
        }
        let due: Vec<Notice> = answered.iter().filter(|x| x.event.at <= t.now()).cloned().collect();
        answered.retain(|x| x.event.at > t.now());
        if !due.is_empty() {
            t.deliver(due);
        }
    }
    let truth = t.incidents().to_vec();
    let piles: Vec<&Incident> = truth.iter().filter(|i| i.kind == IncidentKind::ConstructionDumping).collect();
    assert!(piles.len() > 5 && seen >= piles.len(), "{} piles, {seen} sightings", piles.len());
    assert!(piles.iter().any(|i| i.ended_by == Some("response")), "no response cleared a pile");
    // Every pile is about a box, and at most one at a time per box.
    let mut by_box: BTreeMap<&str, Vec<&Incident>> = BTreeMap::new();
    for i in &piles {
        assert!(i.subject.contains("-cwbox-"), "{i:?}");
        by_box.entry(i.subject.as_str()).or_default().push(i);
    }
    for list in by_box.values() {
        for (a, b) in list.iter().zip(list.iter().skip(1)) {
            assert!(a.end_ms.is_some_and(|e| e <= b.start_ms), "two piles at once at {}", a.subject);
        }
    }
    // Without a response, the property's rounds clear them within 2 to 7 days.
    let alone = run(twin(&s, "construction-dumping", IncidentKind::ConstructionDumping), Vec::new());
    for i in alone.iter().filter(|i| i.kind == IncidentKind::ConstructionDumping) {
        if let Some(end) = i.end_ms {
            assert_eq!(i.ended_by, Some("itself"));
            assert!((2 * DAY..=7 * DAY).contains(&(end - i.start_ms)), "{i:?}");
        }
    }
    // None in the baseline.
    let base = run(twin(&scenario(2), "construction-dumping", IncidentKind::ConstructionDumping), Vec::new());
    assert!(base.iter().all(|i| i.kind != IncidentKind::ConstructionDumping));
}

#[test]
fn repair_requests_and_questions_go_by_qr_code_where_the_platform_is_and_are_seen_to_otherwise() {
    let mut s = scenario(4);
    s.requests.repairs_per_household_year = 20.0;
    s.requests.questions_per_household_year = 10.0;
    s.requests.qr_share = p(1.0);
    let town = small(5, 2, 1);
    let first = town.estates[0].id.clone();
    s.platform.estates = Deployed::Estates(vec![first.clone()]);
    let truth = run(twin(&s, "qr", IncidentKind::RepairNeeded), Vec::new());
    // Those whose QR filing would fall after the run's end are left out.
    let end = parse_local_date(&s.start_date).unwrap() + s.days as Millis * DAY;
    let requests: Vec<&Incident> =
        truth.iter().filter(|i| matches!(i.kind, IncidentKind::RepairNeeded | IncidentKind::ResidentQuestion) && i.start_ms + 4 * HOUR <= end).collect();
    let kinds: BTreeSet<IncidentKind> = requests.iter().map(|i| i.kind).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    for i in &requests {
        let qr = i.reports.iter().filter(|r| r.1 == Line::Qr).count();
        if i.area == first {
            // Filed by QR within 4 hours, unless seen to before.
            assert!(qr == 1 || i.end_ms.is_some_and(|e| e - i.start_ms <= 4 * HOUR), "{i:?}");
            assert!(i.reports.iter().all(|r| r.0 - i.start_ms <= 4 * HOUR), "{i:?}");
        } else {
            assert_eq!(qr, 0, "a QR report from an estate the platform does not cover: {i:?}");
        }
        // The property's own channels: a repair within 1 to 6 days, a question within half a day to 4.
        if let Some(end) = i.end_ms {
            let (lo, hi) = if i.kind == IncidentKind::RepairNeeded { (DAY, 6 * DAY) } else { (DAY / 2, 4 * DAY) };
            assert!((lo..=hi).contains(&(end - i.start_ms)), "{i:?}");
        }
    }
    assert!(requests.iter().any(|i| i.area == first && !i.reports.is_empty()));
    assert!(requests.iter().any(|i| i.area != first));
    // None in the baseline.
    let base = run(twin(&scenario(2), "qr", IncidentKind::RepairNeeded), Vec::new());
    assert!(base.iter().all(|i| !matches!(i.kind, IncidentKind::RepairNeeded | IncidentKind::ResidentQuestion)));
}

#[test]
fn shared_parking_absorbs_the_illegal_parking_on_the_roads_and_leaves_the_other_violations_as_they_were() {
    let fences = |t: &[Incident], parking: bool| {
        t.iter()
            .filter(|i| i.kind == IncidentKind::FenceViolation && i.subject.ends_with("/1") == parking)
            .map(|i| (i.subject.clone(), i.start_ms))
            .collect::<Vec<_>>()
    };
    let s = scenario(2);
    let base = run(twin(&s, "fence-violation", IncidentKind::FenceViolation), Vec::new());
    let mut shared = scenario(2);
    shared.platform.shared_parking = p(1.0);
    let all = run(twin(&shared, "fence-violation", IncidentKind::FenceViolation), Vec::new());
    assert!(fences(&base, true).len() > 10, "{}", fences(&base, true).len());
    assert!(fences(&all, true).is_empty(), "every estate covered, every space shared: no illegal parking");
    assert_eq!(fences(&all, false), fences(&base, false), "the other violations are the same ones");
    // Half the spaces' effect with half the estates covered (here: the first of two), none with none.
    let town = small(5, 2, 1);
    shared.platform.estates = Deployed::Estates(vec![town.estates[0].id.clone()]);
    let half = run(twin(&shared, "fence-violation", IncidentKind::FenceViolation), Vec::new());
    let n = fences(&half, true).len() as f64 / fences(&base, true).len() as f64;
    assert!((0.2..0.8).contains(&n), "{n}");
    shared.platform.estates = Deployed::Nothing;
    assert_eq!(fences(&run(twin(&shared, "fence-violation", IncidentKind::FenceViolation), Vec::new()), true), fences(&base, true));
}
