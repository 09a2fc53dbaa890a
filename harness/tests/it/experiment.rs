//! Planners' experiments end to end: common random numbers across variants, a sharded run merged equal to
//! one run, resuming after a kill (a half-written replication is never counted), a folder of another plan
//! refused, the store-less core equal to the SQLite-backed one, and bad experiment files refused with
//! their file and field (exit 2).

use std::path::{Path, PathBuf};
use std::process::Command;

use towntwin_harness::experiment::replicate::{Replication, replicate_with_store};
use towntwin_harness::experiment::spec::Plan;
use towntwin_harness::experiment::{Options, merge, run};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p).canonicalize().unwrap()
}

/// An experiment file in `dir` over the baseline scenario with absolute paths; `variants` is RON.
fn experiment(dir: &Path, name: &str, seed: u64, variants: &str, replications: &str) -> PathBuf {
    let file = dir.join(format!("{name}.ron"));
    let text = format!(
        r#"(name: "{name}", scenario: "{}", days: 1, warmup_days: 0, seed: {seed}, replications: {replications}, variants: [{variants}])"#,
        repo("scenarios/baseline.ron").display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

fn two_policies() -> String {
    format!(
        r#"(name: "standard", policy: "{}"), (name: "whistle-early", policy: "{}")"#,
        repo("scenarios/policies/standard.ron").display(),
        repo("scenarios/policies/whistle-early.ron").display()
    )
}

fn reps_of(dir: &Path) -> Vec<Replication> {
    let mut out = Vec::new();
    for v in std::fs::read_dir(dir.join("replications")).unwrap() {
        for f in std::fs::read_dir(v.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "json") {
                out.push(serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap());
            }
        }
    }
    out.sort_by(|a: &Replication, b| (a.k, &a.variant).cmp(&(b.k, &b.variant)));
    out
}

/// The analysis without its timings (which differ from run to run).
fn kpis_of(dir: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    serde_json::json!({ "kpis": v["kpis"], "checks": v["checks"], "replications": v["replications"] })
}

fn opts(file: &Path, out: &Path, shard: Option<(u32, u32)>) -> Options {
    Options { file: file.to_path_buf(), out: Some(out.to_path_buf()), jobs: Some(2), shard, progress: false }
}

#[test]
fn common_random_numbers_shards_merged_equal_one_run_and_a_killed_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = experiment(tmp.path(), "crn", 11, &two_policies(), "Fixed(2)");
    let whole = tmp.path().join("whole");
    let done = run(&opts(&file, &whole, None)).unwrap();
    assert_eq!((done.ran, done.resumed), (4, 0));
    for name in ["summary.json", "replications.csv", "report.html", "plots/backlog.png", "plots/backlog.svg", "plots/close-cdf.png", "plots/differences.svg"] {
        assert!(whole.join(name).is_file(), "{name} was not written");
    }
    let html = std::fs::read_to_string(whole.join("report.html")).unwrap();
    assert!(html.contains("data:image/png;base64,") && !html.contains("src=\"http"), "the report must carry its plots inline");

    // Common random numbers: replication k has one seed and the same incidents in every variant until a
    // response changes the town, while the policies make the orders differ; another k has other incidents.
    let reps = reps_of(&whole);
    assert_eq!(reps.len(), 4);
    let (a0, b0, a1, b1) = (&reps[0], &reps[1], &reps[2], &reps[3]);
    assert_eq!((a0.k, b0.k, a1.k, b1.k), (0, 0, 1, 1));
    assert_eq!(a0.seed, b0.seed);
    let start = towntwin_core::time::parse_local_date("2026-03-02").unwrap();
    for (a, b) in [(a0, b0), (a1, b1)] {
        let first = a.first_answer_ms.min(b.first_answer_ms).expect("responses ended incidents");
        // Hour h's digest covers what was created by the end of hour h; before the first answer the two
        // towns are the same.
        let same = ((first - start) / towntwin_core::time::HOUR) as usize;
        assert!(same >= 2, "the first answer came at hour {same}");
        assert_eq!(a.incidents_digest_hourly[..same], b.incidents_digest_hourly[..same], "replication {}: the variants saw different incidents", a.k);
        // After it the policies' different response times end incidents at different times.
        assert_ne!(a.kpis["harm_hours_per_day"], b.kpis["harm_hours_per_day"], "the responses of two policies changed nothing in the town");
    }
    assert_ne!(a0.incidents_digest_hourly[0], a1.incidents_digest_hourly[0], "two replications saw the same incidents");
    assert_ne!(a0.kpis.get("escalations_per_day/medium"), b0.kpis.get("escalations_per_day/medium"), "the policies made no difference at all");
    for r in &reps {
        assert!(r.checks.conservation_holds, "{}: {:?}", r.variant, r.checks);
    }

    // Two shards merged give the same analysis as the whole run.
    let (s1, s2, merged) = (tmp.path().join("s1"), tmp.path().join("s2"), tmp.path().join("merged"));
    let one = run(&opts(&file, &s1, Some((1, 2)))).unwrap();
    assert!(one.summary.is_none());
    assert_eq!(one.ran, 2);
    assert!(reps_of(&s1).iter().all(|r| r.k == 0));
    run(&opts(&file, &s2, Some((2, 2)))).unwrap();
    merge(&[s1.clone(), s2.clone()], &merged).unwrap();
    assert_eq!(kpis_of(&merged), kpis_of(&whole));
    // Each shard's folder says which shard and which binary made it; shard 1 alone is not a whole set.
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(s2.join("run.json")).unwrap()).unwrap();
    assert_eq!(rec["shard"], serde_json::json!([2, 2]));
    assert_eq!(rec["binary"], towntwin_harness::experiment::binary_id());
    let err = merge(std::slice::from_ref(&s1), &tmp.path().join("half")).expect_err("half a set must not merge");
    assert_eq!(towntwin_harness::exit_code(&err), 2, "{err:#}");
    assert!(format!("{err:#}").contains("shard 2/2 is missing"), "{err:#}");
    // Shards of another build are neither merged nor resumed.
    std::fs::write(s2.join("run.json"), serde_json::to_vec(&serde_json::json!({"shard": [2, 2], "binary": "towntwin 0.0.0 0123456789abcdef"})).unwrap())
        .unwrap();
    let err = merge(&[s1.clone(), s2.clone()], &tmp.path().join("mixed-builds")).expect_err("shards of two builds must not merge");
    assert_eq!(towntwin_harness::exit_code(&err), 2, "{err:#}");
    assert!(format!("{err:#}").contains("shards of one binary only"), "{err:#}");
    let err = run(&opts(&file, &s2, Some((2, 2)))).err().expect("a folder begun by another build must not resume");
    assert!(format!("{err:#}").contains("another towntwin binary"), "{err:#}");

    // Killed midway: one replication missing and another half-written. The rerun runs just the missing one
    // and ignores the partial file; the analysis is unchanged.
    let before = kpis_of(&whole);
    let dir = whole.join("replications/whistle-early");
    std::fs::remove_file(dir.join("rep-0001.json")).unwrap();
    std::fs::write(dir.join("rep-0001.json.partial"), b"{\"variant\": \"whistle-ea").unwrap();
    let again = run(&opts(&file, &whole, None)).unwrap();
    assert_eq!((again.ran, again.resumed), (1, 3));
    assert_eq!(kpis_of(&whole), before);

    // The same folder for another plan is refused (exit 2), and nothing in it changes.
    let other = experiment(tmp.path(), "crn", 12, &two_policies(), "Fixed(2)");
    let err = run(&opts(&other, &whole, None)).err().expect("a folder of another plan must be refused");
    assert_eq!(towntwin_harness::exit_code(&err), 2, "{err:#}");
    assert!(format!("{err:#}").contains("another plan"), "{err:#}");
    assert_eq!(kpis_of(&whole), before);
    // Shards of different plans are not merged.
    let s3 = tmp.path().join("s3");
    run(&opts(&other, &s3, Some((1, 2)))).unwrap();
    let err = merge(&[s1, s3], &tmp.path().join("mixed")).expect_err("shards of two plans must not merge");
    assert_eq!(towntwin_harness::exit_code(&err), 2, "{err:#}");
}

#[test]
fn the_store_less_core_gives_the_same_orders_and_histories_as_the_sqlite_one() {
    let tmp = tempfile::tempdir().unwrap();
    let file = experiment(tmp.path(), "equal", 3, &two_policies(), "Fixed(2)");
    let plan = Plan::load(&file).unwrap();
    let db = tmp.path().join("core.db");
    let (with, core_with, history_with) = replicate_with_store(&plan, 0, 0, Some(&(&db).into())).unwrap();
    let (without, core_without, history_without) = replicate_with_store(&plan, 0, 0, None).unwrap();
    assert!(core_with.store().is_some() && core_without.store().is_none());
    assert!(!core_with.orders.orders.is_empty());
    assert_eq!(core_with.orders.orders, core_without.orders.orders);
    assert_eq!(history_with, history_without);
    assert_eq!(with.kpis, without.kpis);
    // The store holds what the run did: its orders and transitions, read back from the file.
    let reopened = towntwin_core::store::Store::open(&db).unwrap().load().unwrap();
    assert_eq!(reopened.orders, core_with.orders.orders);
}

fn towntwin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_towntwin"))
}

#[test]
fn bad_experiments_are_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = repo("scenarios/policies/standard.ron");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "precision",
            format!(r#"(name: "standard", policy: "{}")"#, policy.display()),
            "Precision(relative_half_width: 0.0, min: 2, max: 10)",
            "replications.relative_half_width",
        ),
        ("crew", format!(r#"(name: "cut", policy: "{}", staff: {{"janitors": 0.7}})"#, policy.display()), "Fixed(2)", "variants[0].staff.janitors"),
        ("negative", format!(r#"(name: "cut", policy: "{}", staff: {{"all": -0.3}})"#, policy.display()), "Fixed(2)", "variants[0].staff.all"),
        ("one", format!(r#"(name: "standard", policy: "{}")"#, policy.display()), "Fixed(1)", "replications"),
        ("field", format!(r#"(name: "standard", policy: "{}", budget: 3)"#, policy.display()), "Fixed(2)", "budget"),
        ("missing", r#"(name: "standard", policy: "no-such-policy.ron")"#.to_string(), "Fixed(2)", "no-such-policy.ron"),
        ("twice", format!(r#"(name: "a", policy: "{0}"), (name: "a", policy: "{0}")"#, policy.display()), "Fixed(2)", "variants[1].name"),
    ];
    for (name, variants, reps, expect) in cases {
        let file = experiment(tmp.path(), name, 1, &variants, reps);
        let out = tmp.path().join(format!("out-{name}"));
        let o = towntwin().arg("experiment").arg(&file).arg("--out").arg(&out).arg("-q").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&*file.to_string_lossy()) || err.contains("no-such-policy"), "{name}: the error must name the file: {err}");
        assert!(err.contains(expect), "{name}: expected {expect:?} in: {err}");
        assert!(!out.exists(), "{name}: a refused experiment left {}", out.display());
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    // A route to a crew the scenario gives no shifts (the baseline has no market supervision) is refused,
    // naming the policy file, the variant, the rule and loop, and the crew's shifts.
    let text = std::fs::read_to_string(&policy).unwrap().replace("\"smoke\": [FireSafety]", "\"smoke\": [MarketSupervision]");
    let unstaffed = tmp.path().join("unstaffed-policy.ron");
    std::fs::write(&unstaffed, text).unwrap();
    let file = experiment(tmp.path(), "unstaffed", 1, &format!(r#"(name: "u", policy: "{}")"#, unstaffed.display()), "Fixed(2)");
    let o = towntwin().arg("experiment").arg(&file).arg("--out").arg(tmp.path().join("out-u")).arg("-q").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for want in [&*unstaffed.to_string_lossy(), "variants[0]", "rule `smoke` at the medium loop", "responders.market_supervision.shifts"] {
        assert!(err.contains(want), "expected {want:?} in: {err}");
    }
    // A shard of an experiment with a precision target is refused too.
    let file = experiment(tmp.path(), "sharded", 1, &two_policies(), "Precision(relative_half_width: 0.1, min: 2, max: 4)");
    let o = towntwin().arg("experiment").arg(&file).args(["--shard", "1/2", "-q"]).arg("--out").arg(tmp.path().join("sh")).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = towntwin().arg("experiment").arg(&file).args(["--shard", "3/2"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

/// PostgreSQL as the store: a whole town's day through it holds exactly what the SQLite store holds (every
/// order and transition, the event log, the rejects, the audit chain), and a core reopened on it resumes.
#[test]
fn postgres_holds_what_sqlite_holds_for_a_town_day() {
    use towntwin_core::store::{Location, Reader};
    if !towntwin_harness::postgres::Postgres::available_for_test() {
        return;
    }
    let pg = towntwin_harness::postgres::Postgres::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = experiment(tmp.path(), "stores", 3, &two_policies(), "Fixed(2)");
    let plan = Plan::load(&file).unwrap();
    let sqlite: Location = tmp.path().join("core.db").into();
    let postgres = pg.location("gaohang");
    let t = std::time::Instant::now();
    let (a, core_a, history_a) = replicate_with_store(&plan, 0, 0, Some(&sqlite)).unwrap();
    let t_sqlite = t.elapsed();
    let (b, core_b, history_b) = replicate_with_store(&plan, 0, 0, Some(&postgres)).unwrap();
    eprintln!("a town day through SQLite: {:.1} s; through PostgreSQL: {:.1} s", t_sqlite.as_secs_f64(), (t.elapsed() - t_sqlite).as_secs_f64());
    assert!(!core_a.orders.orders.is_empty());
    assert_eq!(core_a.orders.orders, core_b.orders.orders);
    assert_eq!(history_a, history_b);
    assert_eq!(a.kpis, b.kpis);
    drop((core_a, core_b));

    // What each store holds, read back as everyone else reads it.
    let (ra, rb) = (Reader::open(&sqlite).unwrap(), Reader::open(&postgres).unwrap());
    assert_eq!(ra.orders().unwrap(), rb.orders().unwrap());
    assert_eq!(ra.history().unwrap(), rb.history().unwrap());
    assert_eq!(rb.history().unwrap(), history_a, "every transition, in the order appended");
    let ids = ra.event_ids().unwrap();
    assert!(ids.len() > 10_000, "{} events", ids.len());
    assert_eq!(ids, rb.event_ids().unwrap());
    assert_eq!(ra.last_seq().unwrap(), rb.last_seq().unwrap());
    assert_eq!(ra.rejects().unwrap(), rb.rejects().unwrap());
    let order = ra.orders().unwrap()[0].id;
    assert_eq!(ra.order_events(order).unwrap(), rb.order_events(order).unwrap());
    // The audit chains: the same entries (each store's own hashes and wall-clock stamps), both intact.
    let (va, vb) = (ra.verify_audit(None).unwrap(), rb.verify_audit(None).unwrap());
    assert_eq!(va.entries, vb.entries);
    let entries = |r: &Reader| r.audit_entries().unwrap().into_iter().map(|s| s.entry).collect::<Vec<_>>();
    assert_eq!(entries(&ra), entries(&rb));
    assert_eq!(rb.verify_audit(Some(&vb.head)).unwrap(), vb);

    // A core reopened on PostgreSQL resumes: the same orders, and the engine rebuilt from its log.
    let rules = towntwin_core::rules::RuleSet::load(&repo("assets/rules.ron")).unwrap();
    let policy = towntwin_core::orders::Policy::load(&repo("scenarios/policies/standard.ron")).unwrap();
    let resumed = towntwin_core::service::Core::open(rules, policy, &plan.variants[0].town, Some(&postgres)).unwrap();
    assert_eq!(resumed.orders.orders, rb.orders().unwrap());
    assert!(resumed.now() > 0, "the engine's clock comes back from the log");
}
