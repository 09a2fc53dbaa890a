//! The town answers the response, and residents call 12345: a resolved order ends the incident it was
//! about in the twin (the group rental's bed-space tenants leave, so the gates stop seeing new faces for the
//! flat) and the ground truth says the response ended it; residents call the hotline about it while it
//! goes on, and stop once it has ended. Each against a control twin of the same seed that gets no notice.

use std::collections::BTreeSet;
use std::path::Path;

use towntwin_contracts::orders::Notice;
use towntwin_contracts::time::{HOUR, MINUTE, Millis, parse_local_date};
use towntwin_contracts::truth::{Detects, IncidentKind, MatchBy};
use towntwin_sim::RuleTargets;
use towntwin_sim::dist::Dist;
use towntwin_sim::generate::small;
use towntwin_sim::scenario::{Effect, Patience, Probability};
use towntwin_sim::{Message, Scenario, Twin, TwinOptions};

fn scenario() -> Scenario {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut s = Scenario::load(&root.join("scenarios/baseline.ron")).expect("baseline loads").scenario;
    s.days = 2;
    // Many group rentals in the small town, every resolution ends one, and every one is called about an
    // hour after it starts and every hour after that.
    s.group_rental.share_of_rented = Probability::new(0.5).unwrap();
    s.response.effects.insert(IncidentKind::GroupRental, Effect { ends: Probability::new(1.0).unwrap(), resumes_after_days: None });
    // The flat's own faces only: no visitors.
    s.residents.visitors.per_household_week = 0.0;
    s.group_rental.occupants = (8, 12);
    s.hotline.patience.insert(
        IncidentKind::GroupRental,
        Patience { call_share: Probability::new(1.0).unwrap(), first_call_hours: Dist::Fixed(1.0), again_after_hours: Some(Dist::Fixed(1.0)) },
    );
    s
}

fn twin(s: &Scenario) -> Twin {
    let mut t = Twin::new(s, parse_local_date(&s.start_date).unwrap(), small(5, 2, 1), TwinOptions { threads: Some(1), ..TwinOptions::default() });
    let detects = Detects { kinds: vec![IncidentKind::GroupRental], by: MatchBy::Subject };
    t.set_rule_targets(RuleTargets { detects: [("group-rental".to_string(), detects)].into_iter().collect(), ..RuleTargets::default() });
    t
}

/// A resolution of a group-rental order.
fn resolved(order: u64, at: Millis, area: &str, subject: &str) -> Notice {
    crate::scenarios::resolved(order, at, "group-rental", area, subject)
}

/// What the devices and the hotline said about one flat in a stretch of the run.
#[derive(Default, Debug)]
struct Seen {
    faces: BTreeSet<String>,
    calls: Vec<Millis>,
}

fn watch(msgs: &[Message], area: &str, flat: &str, seen: &mut Seen) {
    for m in msgs {
        let topic = m.topic();
        if !topic.starts_with(&format!("town/{area}/")) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        match v["type"].as_str() {
            Some("gate.pass") if v["data"]["flat"] == flat => {
                seen.faces.insert(v["data"]["person"].as_str().unwrap().to_string());
            }
            Some("hotline.call") if v["data"]["about"] == flat => {
                assert_eq!(topic, format!("town/{area}/hotline/12345/hotline.call"));
                assert_eq!(v["data"]["category"], "group_rental");
                seen.calls.push(m.time);
            }
            _ => {}
        }
    }
}

#[test]
fn a_resolution_ends_the_incident_in_the_town_and_the_calls_stop() {
    let s = scenario();
    let (mut answered, mut control) = (twin(&s), twin(&s));
    let start = parse_local_date(&s.start_date).unwrap();
    answered.step();
    control.step();
    let (i, inc) =
        answered.incidents().iter().enumerate().find(|(_, i)| i.kind == IncidentKind::GroupRental).map(|(n, i)| (n, i.clone())).expect("a group rental");
    let (area, flat) = (inc.area.clone(), inc.subject.clone());
    // Until 10:00 both towns are the same: the flat is let by the bed and residents call about it hourly.
    let (mut a, mut c) = (Seen::default(), Seen::default());
    while answered.now() < start + 10 * HOUR {
        watch(&answered.step(), &area, &flat, &mut a);
        watch(&control.step(), &area, &flat, &mut c);
    }
    assert_eq!(a.calls, c.calls);
    assert!(a.calls.len() >= 8, "residents called {} times about a group rental going on since the start", a.calls.len());
    // The property manager resolves the order at 10:00; the answered town clears the flat.
    let at = answered.now();
    answered.deliver(vec![resolved(1, at, &area, &flat)]);
    let (mut a, mut c) = (Seen::default(), Seen::default());
    while answered.now() < start + 34 * HOUR {
        watch(&answered.step(), &area, &flat, &mut a);
        watch(&control.step(), &area, &flat, &mut c);
    }
    let ended = &answered.incidents()[i];
    assert_eq!((ended.ended_by, ended.order, ended.end_ms.map(|e| e - start)), (Some("response"), Some(1), Some(at + MINUTE - start)));
    assert_eq!(control.incidents()[i].end_ms, None, "the control's group rental goes on");
    assert!(ended.calls.iter().all(|&t| t < at + MINUTE), "a call after the end: {:?}", ended.calls);
    // The gates see it: in the day after, the cleared flat shows at most the two who stayed; the control
    // flat its many bed-space tenants; and nobody calls about the cleared flat any more.
    assert!(a.faces.len() <= 2, "the cleared flat still had {} faces", a.faces.len());
    assert!(c.faces.len() > 6, "the control flat showed {} faces", c.faces.len());
    assert!(a.calls.is_empty(), "calls after the resolution: {:?}", a.calls);
    assert!(c.calls.len() >= 20, "the control's residents called {} times", c.calls.len());
}
