//! The platform as a lever: the town before it, with its pilots and with it everywhere, run on common random
//! numbers (the same incidents until a response changes the town); what each finds problems by (12345
//! calls, patrols, the QR code, devices); the pilots' orders only where the platform is; the calibration
//! table against the source; and bad deployment or calibration refused with its file and field.

use std::path::{Path, PathBuf};
use std::process::Command;

use towntwin_harness::experiment::replicate::{Replication, replicate_with_store};
use towntwin_harness::experiment::spec::Plan;
use towntwin_harness::experiment::{Options, run};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p).canonicalize().unwrap()
}

/// The shipped platform experiment, shortened: two days (the first a warm-up), two replications.
fn short(dir: &Path, calibration: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo("scenarios/experiments/platform.ron")).unwrap();
    let text = text
        .replace("days: 28,", "days: 2,")
        .replace("warmup_days: 7,", "warmup_days: 1,")
        .replace("Fixed(5)", "Fixed(2)")
        .replace("\"../", &format!("\"{}/", repo("scenarios").display()))
        .replace("calibration: Some((before: \"before\", after: \"after\")),", calibration);
    let file = dir.join("platform.ron");
    std::fs::write(&file, text).unwrap();
    file
}

fn reps_of(dir: &Path, variant: &str) -> Vec<Replication> {
    (0..2).map(|k| serde_json::from_slice(&std::fs::read(dir.join(format!("replications/{variant}/rep-{k:04}.json"))).unwrap()).unwrap()).collect()
}

#[test]
fn before_and_after_share_their_incidents_until_the_first_response_and_the_platform_changes_what_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let file = short(tmp.path(), "calibration: Some((before: \"before\", after: \"after\")),");
    let out = tmp.path().join("out");
    let opts = Options { file: file.clone(), out: Some(out.clone()), jobs: Some(2), shard: None, progress: false };
    // The validity checks of two short days may fail (a backlog still filling); the replications are what
    // this test reads.
    let _ = run(&opts);
    let (before, pilots, after) = (reps_of(&out, "before"), reps_of(&out, "pilots"), reps_of(&out, "after"));
    let start = towntwin_core::time::parse_local_date("2026-03-02").unwrap();
    for k in 0..2 {
        let (b, p, a) = (&before[k], &pilots[k], &after[k]);
        assert_eq!((b.seed, p.seed), (a.seed, a.seed));
        let first = [b, p, a].iter().filter_map(|r| r.first_answer_ms).min().expect("responses ended incidents");
        let same = ((first - start) / towntwin_core::time::HOUR) as usize;
        assert!(same >= 1, "the first answer came at hour {same}");
        for r in [b, p] {
            assert_eq!(r.incidents_digest_hourly[..same], a.incidents_digest_hourly[..same], "{}: other incidents than after's", r.variant);
        }
        let kpi = |r: &Replication, name: &str| r.kpis.get(name).copied().unwrap_or(0.0);
        // Before: only calls and patrols find problems; no device, no QR code, no capital.
        assert_eq!(kpi(b, "reports_per_week/qr"), 0.0);
        assert_eq!(kpi(b, "capital_yuan_per_day"), 0.0);
        assert!(kpi(b, "reports_per_week/patrol") > 0.0, "no patrol found anything");
        assert!(kpi(b, "hotline_calls_per_week") > 0.0);
        for (name, v) in &b.kpis {
            if let Some(rule) = name.strip_prefix("false_alarms_per_day/") {
                assert!(rule == "hotline" || *v == 0.0, "before the platform, rule {rule} raised orders: {v}");
            }
        }
        // After: the devices' orders, the QR code in use, fewer calls, problems solved before anyone called.
        assert!(kpi(a, "orders_per_day") > 10.0 * kpi(b, "orders_per_day"), "{} vs {}", kpi(a, "orders_per_day"), kpi(b, "orders_per_day"));
        assert!(kpi(a, "reports_per_week/qr") > 0.0);
        assert!(kpi(a, "hotline_calls_per_week") < kpi(b, "hotline_calls_per_week"));
        assert!(kpi(a, "solved_before_any_call") > kpi(b, "solved_before_any_call"));
        assert!(kpi(a, "capital_yuan_per_day") > kpi(p, "capital_yuan_per_day") && kpi(p, "capital_yuan_per_day") > 0.0);
        // Household waste: the kiosks' cameras find dumped bags and a response clears them.
        assert!(kpi(a, "recall/garbage-dumping") > 0.5, "{:?}", a.kpis.get("recall/garbage-dumping"));
        assert!(kpi(a, "harm_hours_per_day/garbage.dumping") < kpi(b, "harm_hours_per_day/garbage.dumping"));
        // Construction waste left outside the boxes: the box's camera finds it and a response clears it.
        assert!(kpi(a, "recall/construction-dumping") > 0.0, "{:?}", a.kpis.get("recall/construction-dumping"));
        assert_eq!(kpi(b, "recall/construction-dumping"), 0.0);
        // Repair requests: by the QR code after, seen to sooner than by the property's phone before.
        assert!(kpi(a, "harm_hours_per_day/repair.needed") < kpi(b, "harm_hours_per_day/repair.needed"));
        assert!(kpi(a, "reports_per_week/qr") > kpi(p, "reports_per_week/qr"));
        // A response changes the town: after's problems go on for fewer hours.
        assert!(kpi(a, "harm_hours_per_day") < kpi(b, "harm_hours_per_day"));
    }
    // The calibration table: one row per claim, each with both sides and a verdict.
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let rows = summary["calibration"].as_array().expect("a calibration table");
    assert_eq!(rows.len(), 5, "{rows:#?}");
    for r in rows {
        assert!(r["before"]["mean"].is_number() && r["after"]["mean"].is_number(), "{r}");
        for f in ["direction", "size"] {
            assert!(["agrees", "contradicts", "cannot tell"].contains(&r[f].as_str().unwrap()), "{r}");
        }
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Calibration against the source") && html.contains("居民投诉量大幅度降低"));
    assert!(html.contains("What the platform changes, scenario by scenario") && html.contains("vehicles and charging"));
}

#[test]
fn the_pilots_orders_come_only_from_the_pilot_estates_and_the_hotline() {
    let tmp = tempfile::tempdir().unwrap();
    let file = short(tmp.path(), "");
    let plan = Plan::load(&file).unwrap();
    let vi = plan.variants.iter().position(|v| v.name == "pilots").unwrap();
    let (rep, core, _) = replicate_with_store(&plan, vi, 0, None).unwrap();
    let pilots = ["E001", "E002", "E003"];
    let mut by_rule = std::collections::BTreeMap::<String, u32>::new();
    for o in &core.orders.orders {
        *by_rule.entry(o.rule.clone()).or_default() += 1;
        assert!(o.rule == "hotline" || pilots.contains(&o.area.as_str()), "order {} of rule {} in {}", o.id, o.rule, o.area);
    }
    assert!(by_rule.len() > 2, "the pilots raised orders of the devices' rules too: {by_rule:?}");
    assert!(core.orders.orders.iter().any(|o| o.rule == "hotline" && !pilots.contains(&o.area.as_str())), "the rest of the town still calls");
    assert!(rep.kpis["capital_once_yuan_per_estate"] > 0.0);
}

#[test]
fn under_the_source_loops_committees_whistle_departments_visit_jointly_and_a_task_force_is_assembled() {
    use towntwin_core::orders::{Loop, State, WhistleWhen};
    let tmp = tempfile::tempdir().unwrap();
    let file = short(tmp.path(), "");
    let plan = Plan::load(&file).unwrap();
    let vi = plan.variants.iter().position(|v| v.name == "after-source-loops").unwrap();
    let policy = plan.variants[vi].policy.clone();
    let (_, core, history) = replicate_with_store(&plan, vi, 0, None).unwrap();
    let mut by_order = std::collections::BTreeMap::<u64, Vec<&towntwin_core::orders::OrderEvent>>::new();
    for e in &history {
        by_order.entry(e.order).or_default().push(e);
    }
    let (mut whistles, mut joint_resolved, mut assembled) = (0, 0, 0);
    for (id, log) in &by_order {
        let o = core.orders.get(*id).unwrap();
        let created = log[0].at;
        for (i, e) in log.iter().enumerate() {
            let before = if i == 0 { Loop::Small } else { log[i - 1].level };
            match e.action.as_str() {
                // Only the estate's committee whistles, only on the rules the policy names, only from the small
                // loop, and when the policy says.
                "whistle" => {
                    whistles += 1;
                    assert!(e.actor.starts_with("committee:") && e.actor.ends_with("/cadre"), "order {id}: {e:?}");
                    assert_eq!(before, Loop::Small, "order {id}: {e:?}");
                    let fails = log[..i].iter().filter(|x| x.action == "fail" && x.level == Loop::Small).count() as u32;
                    match policy.whistle.get(&o.rule) {
                        Some(WhistleWhen::AfterHours(h)) => assert!(e.at - created >= *h as i64 * towntwin_core::time::HOUR, "order {id} whistled early"),
                        Some(WhistleWhen::AfterFails(n)) => assert!(fails >= *n, "order {id} whistled after {fails} failed visits, not {n}"),
                        Some(WhistleWhen::AtOnce) => {}
                        None => panic!("order {id} of rule {} whistled: the policy names no whistle for it", o.rule),
                    }
                }
                // In the estate a failed visit moves nothing up by itself: the whistle does.
                "fail" if before == Loop::Small && policy.whistle.contains_key(&o.rule) => {
                    assert_eq!(e.level, Loop::Small, "order {id} of rule {} left the estate on a failed visit", o.rule);
                }
                _ => {}
            }
            // A joint visit is resolved by the last party's report, after every party has reported.
            if e.to == State::Resolved && e.level != Loop::Small && policy.joint(e.level, &o.rule) {
                assert_eq!(e.action, "report", "order {id}: a joint visit resolved by {e:?}");
                let since = log[..=i].iter().rposition(|x| x.to == State::Dispatched).unwrap();
                let parties: std::collections::BTreeSet<&str> = log[since..=i].iter().filter(|x| x.action == "report").map(|x| x.actor.as_str()).collect();
                let want = policy.takers(e.level, &o.rule, &[]).len();
                assert_eq!(parties.len(), want, "order {id}: reports from {parties:?}");
                joint_resolved += 1;
                if e.level == Loop::Large {
                    assert!(parties.contains("town/task-force"), "{parties:?}");
                    assembled += 1;
                }
            }
        }
    }
    assert!(whistles > 10, "{whistles} whistles");
    assert!(joint_resolved > 10, "{joint_resolved} joint visits resolved");
    assert!(assembled > 0, "no task force assembled");
    // Owners' volunteers take the dumped bags in the estate.
    assert!(history.iter().any(|e| e.actor.ends_with("/owners") && e.action == "accept"), "the owners took nothing");
}

fn towntwin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_towntwin"))
}

#[test]
fn a_deployment_or_a_calibration_that_names_what_is_not_there_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("s.ron");
    let town = repo("assets/town.ron");
    for (platform, wants) in [
        (r#"(estates: Estates(["E001", "E900"]))"#, ["platform.estates[1]", "`E900` is not an estate"]),
        (r#"(estates: Estates(["E001", "E001"]))"#, ["platform.estates[1]", "named twice"]),
        ("(qr_share: 1.5)", ["qr_share", "0..=1"]),
        ("(estates: Estates([]))", ["platform.estates", "`Nothing`"]),
    ] {
        let text = format!(r#"(name: "x", seed: 1, start_date: "2026-03-02", days: 1, town: "{}", platform: {platform})"#, town.display());
        std::fs::write(&scenario, text).unwrap();
        let o = towntwin().args(["run", "--broker", "none", "-q", "--out"]).arg(tmp.path().join("o")).arg("--scenario").arg(&scenario).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        for want in wants {
            assert!(err.contains(want) && !err.contains("panicked"), "expected {want:?} in: {err}");
        }
        assert!(!tmp.path().join("o").exists(), "a refused run left its folder");
        // `scenario check` refuses it as a run would.
        let o = towntwin().args(["scenario", "check"]).arg(&scenario).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(wants[0]), "expected {:?} in: {err}", wants[0]);
    }
    for (calibration, want) in [
        ("calibration: Some((before: \"before\", after: \"later\")),", "calibration.after"),
        ("calibration: Some((before: \"after\", after: \"before\")),", "expected the first variant"),
        ("calibration: Some((before: \"before\", after: \"before\")),", "expected another variant"),
    ] {
        let file = short(tmp.path(), calibration);
        let o = towntwin().arg("experiment").arg(&file).arg("--out").arg(tmp.path().join("e")).arg("-q").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want) && !err.contains("panicked"), "expected {want:?} in: {err}");
        assert!(!tmp.path().join("e").exists());
    }
}

#[test]
fn an_hourly_cost_on_a_problem_that_lasts_no_time_and_a_load_test_of_a_pilot_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("s.ron");
    let text = format!(
        r#"(name: "x", seed: 1, start_date: "2026-03-02", days: 1, town: "{}", costs: (remediation_yuan_per_hour: {{"fire": 500.0}}))"#,
        repo("assets/town.ron").display()
    );
    std::fs::write(&scenario, text).unwrap();
    let o = towntwin().args(["scenario", "check"]).arg(&scenario).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("costs.remediation_yuan_per_hour.fire") && err.contains("no hours"), "{err}");
    // A load test runs its core as a process over the town file: a pilot's coverage cannot reach it.
    let profile = tmp.path().join("p.ron");
    let text = format!(
        r#"(name: "p", scenario: "{}", connections: One, phases: [Steady(rate: Town(100.0), seconds: 1.0)], slo: (p99_ms: 50.0, lost: 0, duplicated: 0))"#,
        repo("scenarios/platform/pilots.ron").display()
    );
    std::fs::write(&profile, text).unwrap();
    let o = towntwin().arg("load").arg(&profile).arg("--out").arg(tmp.path().join("out")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("platform.estates") && err.contains("every estate"), "{err}");
}

#[test]
fn the_three_platform_scenarios_share_their_patrols() {
    let read = |f: &str| towntwin_sim::Scenario::load(&repo(&format!("scenarios/platform/{f}.ron"))).unwrap().scenario;
    let (b, p, a) = (read("before"), read("pilots"), read("after"));
    assert!(!a.patrols.finds.is_empty());
    assert_eq!(b.patrols, a.patrols);
    assert_eq!(p.patrols, a.patrols);
    assert_eq!((b.platform.qr_share, p.platform.qr_share), (a.platform.qr_share, a.platform.qr_share));
    assert_eq!((b.platform.points_switch_per_week, p.platform.points_switch_per_week), (a.platform.points_switch_per_week, a.platform.points_switch_per_week));
    assert!(a.platform.points_switch_per_week.get() > 0.0);
    assert_eq!((b.vehicles.clone(), p.vehicles.clone()), (a.vehicles.clone(), a.vehicles.clone()));
    assert_eq!((&b.garbage, &b.response, &b.hotline), (&a.garbage, &a.response, &a.hotline));
    assert_eq!((&p.garbage, &p.response, &p.hotline), (&a.garbage, &a.response, &a.hotline));
    // The same people in the estates: owners' volunteers and what the estate cannot settle.
    assert_eq!((&b.responders, &p.responders), (&a.responders, &a.responders));
    assert!(!a.responders.owners.shifts.is_empty() && !a.responders.property.fail_share_by_kind.is_empty());
    assert!(a.garbage.dumping_per_kiosk_day > 0.0);
}
