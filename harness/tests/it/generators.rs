//! A load spread over several generators (`towntwin load PROFILE --generator i/n`) against one core of its
//! own, joined by `towntwin load merge`: the merged accounting equals a one-generator run's, the merged
//! latency is that of every generator's samples together, and a merge of a wrong set is refused naming what
//! is wrong. (`slurm.rs` runs the same three generators as a Slurm array.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{self, Killed};

pub fn towntwin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_towntwin"))
}

/// A short profile over the repository's baseline: the town's traffic at 100 times real time.
pub fn profile(dir: &Path) -> PathBuf {
    let scenario = common::root().join("scenarios/baseline.ron");
    let text = format!("(name: \"spread\", scenario: \"{}\", phases: [Steady(rate: Town(100.0), seconds: 8.0)], slo: (p99_ms: 2000.0))", scenario.display());
    let p = dir.join("spread.ron");
    std::fs::write(&p, text).unwrap();
    p
}

/// `towntwin core` on its own for the generators, as the docs have QA start it: the profile's town, rules
/// and policy, input ordered by minutes (several generators' events come in any order).
pub fn start_core(port: u16, db: &Path, client_id: &str) -> Killed {
    let root = common::root();
    let mut core = towntwin();
    core.args(["core", "--broker", &format!("mqtt://127.0.0.1:{port}"), "--client-id", client_id, "--order", "minutes", "--batch-max", "300"])
        .arg("--db")
        .arg(db)
        .arg("--town")
        .arg(root.join("assets/town.ron"))
        .arg("--rules")
        .arg(root.join("assets/rules.ron"))
        .arg("--policy")
        .arg(root.join("scenarios/policies/standard.ron"));
    common::until_subscribed(core)
}

pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn json(file: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))).unwrap()
}

/// The accounting of a load run's summary: what must be the same however many generators sent it.
pub fn accounting(s: &serde_json::Value) -> serde_json::Value {
    let e = &s["events"];
    let o = &s["orders"];
    serde_json::json!({
        "sent": s["sent"], "accepted": s["accepted"], "lost": s["lost"], "lost_qos0": s["lost_qos0"], "duplicated": s["duplicated"],
        "expected_work_orders": s["expected_work_orders"], "work_orders": s["work_orders"],
        "events": [e["sent"], e["sent_qos1"], e["sent_qos0"], e["expected"], e["accepted"], e["unknown"]],
        "orders": [o["expected"], o["made"], o["lost"], o["duplicated"], o["unexpected"], o["unnotified"]],
    })
}

/// `n` generators of `profile` as plain processes against a core of its own (store `DIR/core.db`) on the
/// broker at `port`, from one agreed start, then their merge into `DIR/merged`. Returns the merged summary
/// and the generators' folders.
pub fn spread(profile: &Path, port: u16, n: u32, dir: &Path) -> (serde_json::Value, Vec<PathBuf>) {
    std::fs::create_dir_all(dir).unwrap();
    let db = dir.join("core.db");
    let core = start_core(port, &db, &format!("spread-core-{n}"));
    let start_at = unix_ms() + 10_000;
    let gens: Vec<PathBuf> = (1..=n).map(|i| dir.join(format!("g{i}"))).collect();
    let children: Vec<_> = gens
        .iter()
        .zip(1..)
        .map(|(g, i)| {
            towntwin()
                .arg("load")
                .arg(profile)
                .args(["--generator", &format!("{i}/{n}"), "--broker", &format!("mqtt://127.0.0.1:{port}"), "--start-at", &start_at.to_string()])
                .arg("--out")
                .arg(g)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "a generator: {}", String::from_utf8_lossy(&o.stderr));
    }
    let dirs: Vec<&Path> = gens.iter().map(PathBuf::as_path).collect();
    let o = merge(&dirs, &db, &dir.join("merged"));
    assert!(matches!(o.status.code(), Some(0 | 1)), "the merge ran (its SLO held or not): {}", String::from_utf8_lossy(&o.stderr));
    drop(core);
    (json(&dir.join("merged/summary.json")), gens)
}

fn merge(dirs: &[&Path], store: &Path, out: &Path) -> Output {
    towntwin().args(["load", "merge"]).args(dirs).arg("--store").arg(store).arg("--out").arg(out).output().unwrap()
}

/// The merged run's checks beyond the accounting: every generator's part reported, the latency histogram
/// the sum of theirs (its count theirs together, its p99 that of every sample pooled, within HdrHistogram's
/// precision), and nothing lost or duplicated.
pub fn check_merged(merged: &serde_json::Value, gens: &[PathBuf]) {
    assert_eq!(merged["valid"], true, "{}", merged["invalid_reason"]);
    assert_eq!(merged["generators"].as_array().map(Vec::len), Some(gens.len()), "{}", merged["generators"]);
    let records: Vec<serde_json::Value> = gens.iter().map(|g| json(&g.join("generator.json"))).collect();
    let sent: u64 = records.iter().map(|r| r["sent"].as_u64().unwrap()).sum();
    assert_eq!(merged["sent"].as_u64(), Some(sent));
    assert!(records.iter().all(|r| r["sent"].as_u64().unwrap() > 0), "every generator sent its part");
    let mut pooled: Vec<f64> =
        records.iter().flat_map(|r| r["latency_by_order"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>()).collect();
    let count: u64 = records.iter().map(|r| r["latency_ms"]["count"].as_u64().unwrap()).sum();
    assert_eq!(merged["latency_ms"]["count"].as_u64(), Some(count), "the merged histogram holds every generator's samples");
    assert!(!pooled.is_empty(), "orders were heard");
    pooled.sort_by(f64::total_cmp);
    let p99 = pooled[((pooled.len() as f64 * 0.99).ceil() as usize).clamp(1, pooled.len()) - 1];
    let got = merged["latency_ms"]["p99"].as_f64().unwrap();
    assert!((got - p99).abs() <= p99 * 0.002 + 0.01, "merged p99 {got} ms, every sample's p99 {p99} ms");
    assert_eq!((merged["lost"].as_u64(), merged["duplicated"].as_u64()), (Some(0), Some(0)), "{}", merged["checks"]);
    assert_eq!(merged["work_orders"], merged["expected_work_orders"]);
}

#[test]
fn three_generators_against_one_core_account_as_one_generator_and_a_wrong_set_is_refused() {
    let _one = crate::load::serial();
    let tmp = tempfile::tempdir().unwrap();
    let p = profile(tmp.path());
    // The core on its own, on a broker of its own: one generator, then three from one agreed start.
    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", ep.port);
    let (one, one_gen) = spread(&p, ep.port, 1, &tmp.path().join("one"));
    check_merged(&one, &one_gen);
    let (merged, gens) = spread(&p, ep.port, 3, tmp.path());
    check_merged(&merged, &gens);
    assert_eq!(accounting(&merged), accounting(&one), "three generators account as one");
    assert!(std::fs::read_to_string(tmp.path().join("merged/report.md")).unwrap().contains("| 2/3 |"), "the report names each generator");
    let db = tmp.path().join("core.db");

    // A wrong set: refused, naming what is wrong (exit 2).
    let refused = |o: Output, what: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(what), "{what}: {err}");
    };
    let out = |n: &str| tmp.path().join(n);
    refused(merge(&[&gens[0], &gens[2]], &db, &out("m1")), "generator 2/3 is missing");
    refused(merge(&[&gens[0], &gens[1], &gens[1], &gens[2]], &db, &out("m2")), "generator 2/3 is there 2 times");
    refused(merge(&[&gens[0], &gens[1], &gens[2]], &db, &tmp.path().join("merged")), "already holds");
    refused(merge(&[&gens[0], &gens[1], tmp.path()], &db, &out("m3")), "no generator's record");
    // A generator's record of other traffic (forged here: its digest changed).
    let forged = out("forged");
    std::fs::create_dir_all(&forged).unwrap();
    let mut r = json(&gens[2].join("generator.json"));
    r["traffic_digest"] = "0".repeat(64).into();
    std::fs::write(forged.join("generator.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    std::fs::copy(gens[2].join("latency.hlog"), forged.join("latency.hlog")).unwrap();
    refused(merge(&[&gens[0], &gens[1], &forged], &db, &out("m4")), "traffic digest");
    // A record out of range, and a generator's log that is another's.
    let forge = |name: &str, change: &dyn Fn(&mut serde_json::Value), log_of: &Path| {
        let dir = out(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = json(&gens[2].join("generator.json"));
        change(&mut r);
        std::fs::write(dir.join("generator.json"), serde_json::to_vec(&r).unwrap()).unwrap();
        std::fs::copy(log_of.join("latency.hlog"), dir.join("latency.hlog")).unwrap();
        dir
    };
    let odd = forge("odd", &|r| r["generator"]["index"] = 4.into(), &gens[2]);
    refused(merge(&[&gens[0], &gens[1], &odd], &db, &out("m5")), "not one of 1..n");
    let swapped = forge("swapped", &|_| {}, &gens[0]);
    refused(merge(&[&gens[0], &gens[1], &swapped], &db, &out("m6")), "is not its record's");
    let cut = forge("cut", &|r| r["sent"] = 10.into(), &gens[2]);
    refused(merge(&[&gens[0], &gens[1], &cut], &db, &out("m7")), "cut short or altered");
    // Generators that cannot start: out of range, several without an agreed start, a used folder.
    let generator = |args: &[&str], dir: &Path| towntwin().arg("load").arg(&p).args(args).arg("--out").arg(dir).output().unwrap();
    refused(generator(&["--generator", "4/3", "--broker", &url], &out("x")), "1 <= i <= n");
    refused(generator(&["--generator", "2/3", "--broker", &url], &out("x")), "--start-at");
    let soon = (unix_ms() + 60_000).to_string();
    refused(generator(&["--generator", "1/3", "--broker", &url, "--start-at", &soon], &gens[0]), "already holds");
    // Seconds where milliseconds are meant: an instant decades ago.
    let seconds = (unix_ms() / 1000).to_string();
    refused(generator(&["--generator", "1/3", "--broker", &url, "--start-at", &seconds], &out("y")), "Unix milliseconds");
}
