//! The twin's integration tests: the shipped town, determinism, the shape of the traffic, and the
//! schedule's order.

use std::path::Path;

use towntwin_core::event::EventType;
use towntwin_core::load::parse_ron;
use towntwin_core::time::parse_local_date;
use towntwin_core::town::{Totals, Town};
use towntwin_sim::generate::{generate, small, to_ron};
use towntwin_sim::{Scenario, Twin, TwinOptions};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn scenario(days: u32, start_date: &str) -> Scenario {
    let mut s = Scenario::load(&root().join("scenarios/baseline.ron")).expect("baseline loads").scenario;
    s.days = days;
    s.start_date = start_date.to_string();
    s
}

/// Runs the twin over a small town and returns (digest, stats, incidents).
fn run(s: &Scenario, town: Town, threads: Option<usize>) -> (String, towntwin_sim::Stats, usize) {
    run_with(s, town, TwinOptions { threads, deny_ambiguity: true, perturb_storage: false })
}

fn run_with(s: &Scenario, town: Town, opts: TwinOptions) -> (String, towntwin_sim::Stats, usize) {
    let start = parse_local_date(&s.start_date).unwrap();
    let mut twin = Twin::new(s, start, town, opts);
    twin.run(|_| {});
    (twin.digest(), twin.stats().clone(), twin.truth().incidents.len())
}

#[test]
fn shipped_town_has_the_source_totals_and_is_what_the_generator_writes() {
    let file = root().join("assets/town.ron");
    let town = Town::load(&file).expect("assets/town.ron is valid");
    assert_eq!(town.declared, Totals::GAOHANG);
    let c = town.census();
    assert_eq!((c.estates, c.committees, c.gates, c.sensors, c.cameras), (82, 39, 583, 8_113, 1_053));
    assert!(c.resettlement_estates * 10 > c.estates * 7, "over 70% resettlement");
    assert!((190_000..=210_000).contains(&c.residents), "about 200,000 residents, got {}", c.residents);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(to_ron(&generate(town.generator_seed)), text, "assets/town.ron must be regenerated: towntwin town generate");
}

#[test]
fn same_seed_same_stream_across_runs_and_thread_counts() {
    let s = scenario(1, "2026-03-02");
    let (a, sa, ia) = run(&s, small(7, 4, 2), Some(1));
    let (b, sb, ib) = run(&s, small(7, 4, 2), Some(1));
    let (c, _, _) = run(&s, small(7, 4, 2), Some(3));
    assert_eq!(a, b);
    assert_eq!(a, c, "the digest must not depend on the number of threads");
    assert_eq!((sa.total, ia), (sb.total, ib));
    let mut other = s.clone();
    other.seed += 1;
    let (d, _, _) = run(&other, small(7, 4, 2), Some(1));
    assert_ne!(a, d, "another seed, another stream");
}

#[test]
fn the_baseline_file_states_the_built_in_defaults() {
    // A what-if file states only what it changes; the baseline states everything, so it must agree.
    use towntwin_sim::scenario::*;
    let s = Scenario::load(&root().join("scenarios/baseline.ron")).unwrap().scenario;
    assert_eq!(s.residents, Residents::default());
    assert_eq!(s.vulnerable, VulnerableResidents::default());
    assert_eq!(s.garbage, Garbage::default());
    assert_eq!(s.renovation, Renovation::default());
    assert_eq!(s.group_rental, GroupRental::default());
    assert_eq!(s.vehicles, Vehicles::default());
    assert_eq!(s.fence, Fence::default());
    assert_eq!(s.safety, Safety::default());
    assert_eq!(s.devices, Devices::default());
    assert_eq!(s.responders, Responders::default());
}

#[test]
fn the_stream_does_not_depend_on_ecs_storage_order() {
    // Systems that draw from one stream across many entities iterate in a stable key order; this would
    // catch one that iterates a query in storage order (or keys a stream by an entity id).
    let s = scenario(2, "2026-03-06");
    let (a, sa, ia) = run(&s, small(5, 3, 1), Some(1));
    let (b, sb, ib) = run_with(&s, small(5, 3, 1), TwinOptions { threads: Some(1), deny_ambiguity: false, perturb_storage: true });
    assert_eq!((sa.total, ia), (sb.total, ib));
    assert_eq!(a, b);
}

#[test]
fn gate_traffic_has_a_diurnal_and_weekly_shape() {
    let weekday = run(&scenario(1, "2026-03-02"), small(7, 6, 1), None).1;
    let saturday = run(&scenario(1, "2026-03-07"), small(7, 6, 1), None).1;
    let gate = |s: &towntwin_sim::Stats| s.by_type_hour[EventType::GatePass as usize];
    let (wd, we) = (gate(&weekday), gate(&saturday));
    let night: u64 = wd[1..5].iter().sum();
    let morning: u64 = wd[7..9].iter().sum();
    let midday: u64 = wd[11..14].iter().sum();
    let evening: u64 = wd[17..19].iter().sum();
    assert!(morning > 20 * night.max(1), "weekday morning peak: {wd:?}");
    assert!(morning > 2 * midday && evening > 2 * midday, "two commuting peaks: {wd:?}");
    assert!(wd[7] > 2 * we[7], "weekend mornings are late: weekday {} vs Saturday {}", wd[7], we[7]);
    let total: u64 = wd.iter().sum();
    assert!(total > 0 && we.iter().sum::<u64>() > 0);
}

#[test]
fn every_event_kind_appears_over_a_week() {
    let (_, stats, incidents) = run(&scenario(7, "2026-03-02"), small(3, 12, 3), None);
    for t in EventType::ALL {
        // Fires and manhole alarms are too rare for a small town's week; the rest must all occur.
        if matches!(t, EventType::SmokeAlarm | EventType::ManholeAlarm) {
            continue;
        }
        assert!(stats.by_type(t) > 0, "no {t} in a week");
    }
    assert!(incidents > 0);
}

#[test]
fn topics_follow_the_scheme() {
    let s = scenario(1, "2026-03-02");
    let start = parse_local_date(&s.start_date).unwrap();
    let mut twin = Twin::new(&s, start, small(2, 2, 1), TwinOptions::default());
    let mut seen = 0;
    twin.run(|msgs| {
        for m in msgs {
            let parts: Vec<&str> = m.topic().split('/').collect();
            assert_eq!(parts.len(), 5, "{}", m.topic());
            assert_eq!(parts[0], "town");
            assert_eq!(parts[4], m.ty.as_str());
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["source"], format!("/gaohang/{}/{}/{}", parts[1], parts[2], parts[3]));
            seen += 1;
        }
    });
    assert!(seen > 1000);
}

#[test]
fn a_day_of_one_estate_is_not_shifted_by_another_estate() {
    // Per-estate streams: removing the last estate leaves the first estate's gate passes unchanged.
    let s = scenario(1, "2026-03-02");
    let count_first = |town: Town| {
        let start = parse_local_date(&s.start_date).unwrap();
        let mut twin = Twin::new(&s, start, town, TwinOptions::default());
        let mut n = 0u64;
        twin.run(|msgs| n += msgs.iter().filter(|m| m.ty == EventType::GatePass && m.topic().starts_with("town/E001/")).count() as u64);
        n
    };
    assert_eq!(count_first(small(5, 3, 1)), count_first(small(5, 2, 1)));
}

#[test]
fn scenario_errors_name_the_place_and_what_was_expected() {
    let f = Path::new("bad.ron");
    let e = parse_ron::<Scenario>(f, "(name: \"x\", seed: 1, start_date: \"2026-03-02\", days: 1, town: \"t\", colour: 1)").unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    let e = parse_ron::<Scenario>(f, "(name: \"x\", seed: -1, start_date: \"2026-03-02\", days: 1, town: \"t\")").unwrap_err();
    assert_eq!(e.field.as_deref(), Some("seed"), "{e}");
    let mut s = scenario(1, "2026-03-02");
    s.garbage.missort_owner = 1.5;
    s.start_date = "2026-02-30".into();
    let e = s.validate(f).unwrap_err().to_string();
    assert!(e.contains("garbage.missort_owner") && e.contains("probability"), "{e}");
    assert!(e.contains("start_date") && e.contains("not a real date"), "{e}");
    let e = parse_ron::<Scenario>(f, "(name: \"x\", seed: 1, start_date: \"2026-03-02\", days: 1, town: \"t\", responders: (task_force: (headcount: 2, colour: 1)))").unwrap_err();
    assert!(e.to_string().contains("colour") && e.to_string().contains("responders.task_force"), "{e}");
}

#[test]
fn a_what_if_file_changes_one_field_of_one_crew() {
    use towntwin_sim::scenario::Responders;
    let f = Path::new("what-if.ron");
    let s = parse_ron::<Scenario>(f, "(name: \"x\", seed: 1, start_date: \"2026-03-02\", days: 1, town: \"t\", responders: (city_management: (headcount: 40), committee: (on_duty: None)))").unwrap();
    let d = Responders::default();
    assert_eq!(s.responders.city_management.headcount, 40);
    assert_eq!(s.responders.city_management.work_minutes, d.city_management.work_minutes);
    assert_eq!(s.responders.committee.on_duty, None, "None states round the clock, it does not mean `not given`");
    assert_eq!(s.responders.committee.headcount, d.committee.headcount);
    assert_eq!(s.responders.task_force, d.task_force);
}
