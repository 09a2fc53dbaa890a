//! Experiments on a batch engine: a single-node Slurm on loopback (`towntwin_harness::slurm`, Debian's
//! `slurm-wlm` and `munge`; `.ci/run` installs them) runs an experiment as the project ships it for a
//! planner: `deploy/slurm/submit-experiment.sh` submits the shards as an array job and the merge as a job
//! that depends on it. One shard is requeued while it runs (a retried task): it resumes in its folder. The
//! merged report equals the one-process run's, every KPI and interval; a merge of an incomplete set is
//! refused.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use towntwin_harness::slurm::Slurm;

use crate::common::root;

fn towntwin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_towntwin"))
}

/// The analysis without its timings.
fn kpis_of(dir: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    serde_json::json!({ "kpis": v["kpis"], "checks": v["checks"], "replications": v["replications"] })
}

fn reps_in(dir: &Path) -> usize {
    let Ok(vs) = std::fs::read_dir(dir.join("replications")) else { return 0 };
    vs.flatten()
        .filter_map(|v| std::fs::read_dir(v.path()).ok())
        .flat_map(|d| d.flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .count()
}

/// The array's and the merge's job ids a submit script prints (`array ID`, `merge ID`).
fn job_ids(stdout: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(stdout);
    let id = |what: &str| text.lines().find_map(|l| l.strip_prefix(what)).map(|s| s.trim().to_string()).unwrap_or_else(|| panic!("no {what} in {text}"));
    (id("array "), id("merge "))
}

/// The Slurm logs in `dir` whose names hold `pattern`, one after another.
fn logs_matching(dir: &Path, pattern: &str) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().contains(pattern))
        .map(|f| std::fs::read_to_string(f.path()).unwrap())
        .collect()
}

#[test]
fn an_experiment_runs_as_a_slurm_array_with_a_requeued_shard_and_its_merge_equals_one_run() {
    if !Slurm::available_for_test() {
        return;
    }
    let slurm = Slurm::start(&root().join("deploy/slurm/slurm.conf")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The shipped smoke experiment: two variants, two replications of two days (one a warm-up).
    let file = root().join("scenarios/experiments/smoke.ron");
    let (one, results, logs) = (tmp.path().join("one"), tmp.path().join("results"), tmp.path().join("logs"));
    std::fs::create_dir_all(&logs).unwrap();

    // On Slurm: the shipped script, two shards, one CPU each (so that both run at once on two cores).
    let t0 = Instant::now();
    let o = Command::new(root().join("deploy/slurm/submit-experiment.sh"))
        .arg(&file)
        .arg(&results)
        .arg("2")
        .arg("--cpus-per-task=1")
        .current_dir(&logs)
        .env("SLURM_CONF", slurm.conf())
        .env("TOWNTWIN", env!("CARGO_BIN_EXE_towntwin"))
        .output()
        .unwrap();
    assert!(o.status.success(), "submit: {}", String::from_utf8_lossy(&o.stderr));
    let (array, merge) = job_ids(&o.stdout);

    // Shard 2 requeued once it has finished a replication: killed and run again, it resumes.
    let shard2 = results.join("shard-2");
    while reps_in(&shard2) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(300), "shard 2 finished no replication in 300 s; logs in {}", slurm.log_dir().display());
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = slurm.command("scontrol").args(["requeue", &format!("{array}_2")]).status().unwrap();
    assert!(st.success(), "scontrol requeue {array}_2");

    // Meanwhile, the same experiment in one process.
    // (A short experiment may fail a validity check: exit 1, after writing everything.)
    let o = towntwin().arg("experiment").arg(&file).arg("--out").arg(&one).args(["--jobs", "1", "-q"]).output().unwrap();
    let code = o.status.code().unwrap();
    assert!(code == 0 || code == 1, "{}", String::from_utf8_lossy(&o.stderr));

    let ended = slurm.wait(&merge, Duration::from_secs(600)).unwrap();
    eprintln!("the array and its merge on Slurm: {:.1} s from submission (one shard requeued)", t0.elapsed().as_secs_f64());
    let log = |pattern: &str| logs_matching(&logs, pattern);
    // The merge job ends as the one-process run did: COMPLETED, or FAILED with its exit 1 (a check failed).
    let want = if code == 0 { "COMPLETED" } else { "FAILED" };
    assert_eq!(
        (ended.state.as_str(), ended.exit_code.as_str()),
        (want, format!("{code}:0").as_str()),
        "the merge job: {ended:?}\n{}\n{}",
        log("experiment"),
        log("merge")
    );
    let task2 = log(&format!("{array}_2"));
    assert!(task2.contains("attempt 2") && task2.contains("resuming"), "shard 2 ran again and resumed:\n{task2}");
    assert!(task2.contains("shard 2/2: replication"), "progress lines in the scheduler's log:\n{task2}");
    assert_eq!(kpis_of(&results.join("merged")), kpis_of(&one), "the merged report equals the one-process run");

    // A merge of shard 1 alone is refused, naming what is missing (exit 2).
    let o = towntwin().args(["experiment", "merge"]).arg(results.join("shard-1")).arg("--out").arg(tmp.path().join("part")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("shard 2/2 is missing") && err.contains("lacks replication"), "{err}");
    // A shard's folder resumed as another shard is refused.
    let o = towntwin().arg("experiment").arg(&file).args(["--shard", "2/2", "-q"]).arg("--out").arg(results.join("shard-1")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("holds shard 1/2"), "{err}");
}

/// The file `key` of the ConfigMap `map` in deploy/k8s, written into `dir` with the image's `/opt/towntwin`
/// as this repository.
fn configmap_file(map: &str, key: &str, dir: &Path) -> std::path::PathBuf {
    let map = std::fs::read_to_string(root().join("deploy/k8s").join(map)).unwrap();
    let body: Vec<&str> =
        map.lines().skip_while(|l| !l.trim_start().starts_with(&format!("{key}: |"))).skip(1).take_while(|l| l.starts_with("    ") || l.is_empty()).collect();
    assert!(!body.is_empty(), "no {key} in the ConfigMap");
    let text = body.iter().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n").replace("/opt/towntwin", &root().display().to_string());
    let file = dir.join(key);
    std::fs::write(&file, text).unwrap();
    file
}

/// A Job manifest's `field:` value (the first), and the value of its environment variable `name`.
fn manifest(file: &str) -> (impl Fn(&str) -> String, impl Fn(&str) -> String) {
    let job = std::fs::read_to_string(root().join("deploy/k8s").join(file)).unwrap();
    let j = job.clone();
    let field = move |name: &str| {
        j.lines().find_map(|l| l.trim().strip_prefix(name)).map(|v| v.trim().trim_matches('"').to_string()).unwrap_or_else(|| panic!("no {name} in {file}"))
    };
    let env = move |name: &str| {
        job.lines()
            .skip_while(|l| !l.contains(&format!("name: {name}")))
            .nth(1)
            .and_then(|l| l.trim().strip_prefix("value:"))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no {name} in {file}"))
    };
    (field, env)
}

/// The load profile in `deploy/k8s/load-configmap.yaml` is one `towntwin load` takes, and every generator
/// of the Indexed Job runs at once (parallelism = completions = GENERATORS), which the merge expects too.
#[test]
fn the_kubernetes_load_files_hold_a_valid_profile_and_agree_on_the_generators() {
    let tmp = tempfile::tempdir().unwrap();
    let file = configmap_file("load-configmap.yaml", "load.ron", tmp.path());
    let loaded = towntwin_harness::load::profile::load(&file).unwrap_or_else(|e| panic!("the ConfigMap's profile: {e}"));
    assert!(loaded.profile.faults.is_empty(), "generators inject no faults");
    let (field, env) = manifest("load-generators-job.yaml");
    assert_eq!(field("completionMode:"), "Indexed");
    assert_eq!(field("completions:"), env("GENERATORS"), "completions and GENERATORS must agree");
    assert_eq!(field("parallelism:"), field("completions:"), "every generator runs at once");
    assert_eq!(field("backoffLimitPerIndex:"), "0", "a retried generator would miss the start");
    assert_eq!(env("START_AT"), "@START_AT@", "the placeholder the docs' sed replaces");
    let (_, merge_env) = manifest("load-merge-job.yaml");
    assert_eq!(merge_env("GENERATORS"), env("GENERATORS"));
    assert_eq!(merge_env("RESULTS"), env("RESULTS"));
}

/// The experiment in `deploy/k8s/experiment-configmap.yaml` is one `towntwin experiment` takes (the image's
/// `/opt/towntwin` being the repository), and the Indexed Job runs as many shards as it has completions.
#[test]
fn the_kubernetes_files_hold_a_valid_experiment_and_agree_on_the_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let file = configmap_file("experiment-configmap.yaml", "experiment.ron", tmp.path());
    let plan = towntwin_harness::experiment::spec::Plan::load(&file).unwrap_or_else(|e| panic!("the ConfigMap's experiment: {e}"));
    assert_eq!(plan.variants.len(), 2);
    let (field, env) = manifest("experiment-job.yaml");
    let shards = env("SHARDS");
    assert_eq!(field("completions:"), shards, "completions and SHARDS must agree");
    assert_eq!(field("completionMode:"), "Indexed");
}

/// A load as QA runs it on Slurm: the core on its own (here, beside the test), `deploy/slurm/submit-load.sh`
/// submits three generators as an array that start at one agreed instant and their merge as a job after
/// them. The merged accounting equals a one-generator run's.
#[test]
fn a_load_runs_as_three_generator_tasks_on_slurm_and_merges_as_one_generator() {
    use crate::generators::{accounting, check_merged, json, profile, spread, start_core};
    if !Slurm::available_for_test() {
        return;
    }
    let _one = crate::load::serial();
    let slurm = Slurm::start(&root().join("deploy/slurm/slurm.conf")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = profile(tmp.path());
    let ep = towntwin_harness::broker::start_embedded().unwrap();
    // One generator (a plain process), for comparison.
    let (one, _) = spread(&p, ep.port, 1, &tmp.path().join("one"));
    let db = tmp.path().join("core.db");
    let core = start_core(ep.port, &db, "slurm-spread-core");
    let (results, logs) = (tmp.path().join("results"), tmp.path().join("logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let t0 = Instant::now();
    // Three tasks on two CPUs: they share them (the partition lets a job that asks).
    let o = Command::new(root().join("deploy/slurm/submit-load.sh"))
        .arg(&p)
        .arg(format!("mqtt://127.0.0.1:{}", ep.port))
        .arg(&db)
        .arg(&results)
        .arg("3")
        .args(["--cpus-per-task=1", "--oversubscribe"])
        .current_dir(&logs)
        .env("SLURM_CONF", slurm.conf())
        .env("TOWNTWIN", env!("CARGO_BIN_EXE_towntwin"))
        .env("LEAD_SECONDS", "20")
        .output()
        .unwrap();
    assert!(o.status.success(), "submit: {}", String::from_utf8_lossy(&o.stderr));
    let (array, merge) = job_ids(&o.stdout);
    let ended = slurm.wait(&merge, Duration::from_secs(300)).unwrap();
    drop(core);
    let log = |pattern: &str| logs_matching(&logs, pattern);
    eprintln!("three generators and their merge on Slurm: {:.1} s from submission", t0.elapsed().as_secs_f64());
    let array_ended = slurm.wait(&array, Duration::from_secs(10)).unwrap();
    assert_eq!(array_ended.state, "COMPLETED", "the generators: {array_ended:?}\n{}", log("towntwin-load-"));
    assert!(
        matches!((ended.state.as_str(), ended.exit_code.as_str()), ("COMPLETED", "0:0") | ("FAILED", "1:0")),
        "the merge ran (its SLO held or not): {ended:?}\n{}",
        log("merge")
    );
    let gens: Vec<_> = (1..=3).map(|i| results.join(format!("generator-{i}"))).collect();
    let merged = json(&results.join("merged/summary.json"));
    check_merged(&merged, &gens);
    assert_eq!(accounting(&merged), accounting(&one), "three generator tasks account as one generator");
    assert!(log(&format!("{array}_2")).contains("generator 2/3"), "each task's log says which generator it is");
}
