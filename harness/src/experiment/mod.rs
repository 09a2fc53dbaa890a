//! `towntwin experiment FILE`: planners' what-if experiments. Every variant of an experiment file
//! ([`spec`]) runs the same replications (replication k has the same seed in every variant: common random
//! numbers), each one a whole town with its responders and the core in one thread ([`replicate`]), on all
//! cores in parallel. Each finished replication is written on its own (`replications/<variant>/rep-K.json`,
//! through a temporary file and a rename), so an experiment killed midway resumes from what it finished,
//! and `--shard k/n` runs a slice that `towntwin experiment merge` joins with the others. Then
//! [`analyse`] computes the KPIs' intervals, paired differences and validity checks, and [`report`] draws
//! the plots and writes `report.html`.

pub mod analyse;
pub mod calibrate;
pub mod replicate;
pub mod report;
pub mod spec;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use self::replicate::Replication;
use self::spec::{Experiment, Plan, Replications};
use crate::{DataFault, UsageFault};

/// What the command line asks of an experiment.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub file: PathBuf,
    /// Results folder (default `results/experiments/<name>`); a folder holding this experiment resumes.
    pub out: Option<PathBuf>,
    /// Replications run at once (default: the machine's cores).
    pub jobs: Option<usize>,
    /// Run only replications k with k % n == i - 1 (`i/n`, 1-based), for a batch scheduler's array job.
    pub shard: Option<(u32, u32)>,
    pub progress: bool,
}

/// The experiment as a results folder records it (`plan.json`): enough to analyse and report its
/// replications without the files it was run from, and to refuse mixing replications of another plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanRecord {
    pub file: String,
    pub fingerprint: String,
    pub experiment: Experiment,
    /// Variant names in the file's order; the first is the reference for paired differences.
    pub variants: Vec<String>,
}

impl PlanRecord {
    fn of(plan: &Plan) -> PlanRecord {
        PlanRecord {
            file: plan.file.display().to_string(),
            fingerprint: plan.fingerprint.clone(),
            experiment: plan.spec.clone(),
            variants: plan.variants.iter().map(|v| v.name.clone()).collect(),
        }
    }
}

/// Which slice of the plan a results folder holds and which build of towntwin made it (`run.json`):
/// a folder resumed by another slice or another binary is refused, and so is a merge that mixes binaries
/// or lacks a slice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunRecord {
    /// `(i, n)` for shard i of n; `None` for the whole plan.
    pub shard: Option<(u32, u32)>,
    /// The binary: its version and a digest of the executable ([`binary_id`]).
    pub binary: String,
}

/// This executable's identity: the package version and the first 16 hex digits of the BLAKE3 of its file
/// (two builds of different code differ; an unreadable executable gives its version alone).
pub fn binary_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        // /proc/self/exe reads the running file even after a rebuild has replaced it on disk.
        let digest =
            std::fs::read("/proc/self/exe").or_else(|_| std::env::current_exe().and_then(std::fs::read)).map(|b| blake3::hash(&b).to_hex()[..16].to_string());
        format!("towntwin {} {}", env!("CARGO_PKG_VERSION"), digest.unwrap_or_else(|_| "unknown".into()))
    })
    .clone()
}

fn read_run(dir: &Path) -> Result<Option<RunRecord>> {
    read_json(&dir.join("run.json"), "a run record")
}

fn shard_name(s: Option<(u32, u32)>) -> String {
    s.map_or("the whole plan".into(), |(i, n)| format!("shard {i}/{n}"))
}

/// Makes `out` hold this slice made by this binary: a folder of another slice or binary is refused.
fn claim_run(out: &Path, run: &RunRecord) -> Result<()> {
    match read_run(out)? {
        Some(old) if old.shard != run.shard => Err(UsageFault(format!(
            "{} holds {} of this plan; this run is {}: give each shard its own --out",
            out.display(),
            shard_name(old.shard),
            shard_name(run.shard)
        ))
        .into()),
        Some(old) if old.binary != run.binary => Err(UsageFault(format!(
            "{} was begun by another towntwin binary ({}; this is {}): finish it with that binary, or give another --out",
            out.display(),
            old.binary,
            run.binary
        ))
        .into()),
        Some(_) => Ok(()),
        None => write_atomic(&out.join("run.json"), serde_json::to_vec_pretty(run)?.as_slice()),
    }
}

/// Refuses a merge of folders made by different binaries, of shards that are not one whole set (each of
/// 1..n once), or, for a fixed number of replications, a set that lacks some; each named.
fn check_complete(dirs: &[PathBuf], runs: &[Option<RunRecord>], record: &PlanRecord, reps: &BTreeMap<(String, u32), Replication>) -> Result<()> {
    // A folder without run.json (made by an older towntwin) says nothing of its shard or binary: it is
    // judged by its replications alone.
    let mut problems = Vec::new();
    let known: Vec<(&PathBuf, &RunRecord)> = dirs.iter().zip(runs).filter_map(|(d, r)| Some((d, r.as_ref()?))).collect();
    if let Some((d0, r0)) = known.first() {
        for (d, r) in &known[1..] {
            if r.binary != r0.binary {
                problems.push(format!("{} was made by {}, {} by {}: shards of one binary only", d.display(), r.binary, d0.display(), r0.binary));
            }
        }
    }
    let shards: Vec<(&PathBuf, (u32, u32))> = known.iter().filter_map(|(d, r)| Some((*d, r.shard?))).collect();
    if let Some(&(_, (_, n))) = shards.first() {
        if let Some((d, (i, m))) = shards.iter().find(|(_, (_, m))| *m != n) {
            problems.push(format!("{} is shard {i}/{m}, the others of {n}", d.display()));
        }
        for i in 1..=n {
            match shards.iter().filter(|(_, (j, _))| *j == i).count() {
                0 => problems.push(format!("shard {i}/{n} is missing")),
                1 => {}
                c => problems.push(format!("shard {i}/{n} is given {c} times")),
            }
        }
    }
    if let Replications::Fixed(r) = record.experiment.replications {
        for v in &record.variants {
            let lacking: Vec<String> = (0..r).filter(|k| !reps.contains_key(&(v.clone(), *k))).map(|k| k.to_string()).collect();
            if !lacking.is_empty() {
                problems.push(format!("variant {v} lacks replication(s) {} of {r} (a shard not finished?)", lacking.join(", ")));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(UsageFault(format!("cannot merge: {}", problems.join("; "))).into())
}

/// What a run of the command did.
pub struct Finished {
    pub out: PathBuf,
    pub ran: usize,
    pub resumed: usize,
    pub wall_seconds: f64,
    /// None for a shard (merge the shards to analyse).
    pub summary: Option<analyse::Summary>,
}

/// `parse` for `--shard i/n`.
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("expected i/n (for example 2/8), got {s:?}"))?;
    let (i, n): (u32, u32) = (i.trim().parse().map_err(|_| format!("{i:?} is not a number"))?, n.trim().parse().map_err(|_| format!("{n:?} is not a number"))?);
    if n == 0 || i == 0 || i > n {
        return Err(format!("expected 1 <= i <= n, got {i}/{n}"));
    }
    Ok((i, n))
}

/// Runs (or resumes) an experiment and, unless it is a shard, analyses it and writes the report.
pub fn run(opts: &Options) -> Result<Finished> {
    let plan = Plan::load(&opts.file).map_err(DataFault)?;
    if opts.shard.is_some() && !matches!(plan.spec.replications, Replications::Fixed(_)) {
        return Err(UsageFault(format!(
            "{}: a sharded experiment needs a fixed number of replications (`replications: Fixed(n)`); a precision target decides its count as it goes",
            opts.file.display()
        ))
        .into());
    }
    let out = opts.out.clone().unwrap_or_else(|| crate::setup::asset("results/experiments").join(&plan.spec.name));
    let record = PlanRecord::of(&plan);
    claim(&out, &record)?;
    claim_run(&out, &RunRecord { shard: opts.shard, binary: binary_id() })?;
    let wall = Instant::now();
    let jobs = opts.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let in_shard = |k: u32| opts.shard.is_none_or(|(i, n)| k % n == i - 1);
    let mut target = plan.first_round();
    let (mut ran, mut resumed) = (0, 0);
    loop {
        let todo: Vec<(u32, usize)> = (0..target).filter(|k| in_shard(*k)).flat_map(|k| (0..plan.variants.len()).map(move |v| (k, v))).collect();
        let (missing, have): (Vec<_>, Vec<_>) = todo.into_iter().partition(|(k, v)| load_rep(&out, &plan.variants[*v].name, *k, &plan.fingerprint).is_none());
        if ran == 0 {
            resumed = have.len();
            if resumed > 0 {
                eprintln!("experiment {}: resuming in {}: {} replication(s) already done", plan.spec.name, out.display(), resumed);
            }
        }
        ran += missing.len();
        let label = match opts.shard {
            Some((i, n)) => format!("experiment {} shard {i}/{n}", plan.spec.name),
            None => format!("experiment {}", plan.spec.name),
        };
        run_jobs(&plan, &out, missing, jobs, opts.progress, &label)?;
        if opts.shard.is_some() {
            return Ok(Finished { out, ran, resumed, wall_seconds: wall.elapsed().as_secs_f64(), summary: None });
        }
        let reps = load_all(&out, &record)?;
        let summary = analyse::analyse(&record, &reps);
        let next = match plan.spec.replications {
            Replications::Fixed(_) => None,
            Replications::Precision { relative_half_width, max, .. } => summary.replications_for(relative_half_width, target, max),
        };
        match next {
            Some(n) if n > target => {
                eprintln!("experiment {}: {} replications do not reach the precision; running up to {n}", plan.spec.name, target);
                target = n;
            }
            _ => {
                report::write(&out, &record, &reps, &summary)?;
                return Ok(Finished { out, ran, resumed, wall_seconds: wall.elapsed().as_secs_f64(), summary: Some(summary) });
            }
        }
    }
}

/// Joins the replications of shards (or of interrupted runs) of one experiment into `out`, then analyses
/// them and writes the report there.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<analyse::Summary> {
    let mut record: Option<PlanRecord> = None;
    let mut runs = Vec::new();
    let mut reps: BTreeMap<(String, u32), Replication> = BTreeMap::new();
    for d in dirs {
        let r = read_record(d)?.ok_or_else(|| UsageFault(format!("{}: no plan.json; not an experiment's results folder", d.display())))?;
        if let Some(first) = &record
            && first.fingerprint != r.fingerprint
        {
            return Err(UsageFault(format!(
                "{} holds experiment {:?} with plan {}, but {} has {:?} with plan {}: only replications of one plan can be merged",
                d.display(),
                r.experiment.name,
                r.fingerprint,
                dirs[0].display(),
                first.experiment.name,
                first.fingerprint
            ))
            .into());
        }
        runs.push(read_run(d)?);
        for rep in load_all(d, &r)? {
            let key = (rep.variant.clone(), rep.k);
            match reps.get(&key) {
                Some(old) if old.kpis != rep.kpis => {
                    return Err(anyhow!(
                        "replication {} of variant {} differs between the folders (the same seed must give the same result)",
                        rep.k,
                        rep.variant
                    ));
                }
                _ => {
                    reps.insert(key, rep);
                }
            }
        }
        record.get_or_insert(r);
    }
    let record = record.ok_or_else(|| UsageFault("give at least one folder to merge".into()))?;
    check_complete(dirs, &runs, &record, &reps)?;
    claim(out, &record)?;
    let binary = runs.iter().flatten().next().map_or_else(binary_id, |r| r.binary.clone());
    claim_run(out, &RunRecord { shard: None, binary })?;
    for rep in reps.values() {
        save_rep(out, rep)?;
    }
    let reps: Vec<Replication> = reps.into_values().collect();
    let summary = analyse::analyse(&record, &reps);
    report::write(out, &record, &reps, &summary)?;
    Ok(summary)
}

/// Makes `out` this experiment's folder: new, or already holding the same plan (to resume); a folder with
/// another plan is refused.
fn claim(out: &Path, record: &PlanRecord) -> Result<()> {
    if let Some(old) = read_record(out)? {
        if old.fingerprint != record.fingerprint {
            return Err(UsageFault(format!(
                "{} holds the results of another plan (experiment {:?}, plan {}; this is {}): give another --out, or remove the folder",
                out.display(),
                old.experiment.name,
                old.fingerprint,
                record.fingerprint
            ))
            .into());
        }
        return Ok(());
    }
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(UsageFault(format!("{} exists and is not an experiment's results folder: give another --out", out.display())).into());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join("plan.json"), serde_json::to_vec_pretty(record)?.as_slice())
}

fn read_record(dir: &Path) -> Result<Option<PlanRecord>> {
    read_json(&dir.join("plan.json"), "a plan")
}

/// A results folder's JSON file `f`, if there is one; `what` names it in the error of one this version
/// cannot read.
fn read_json<T: serde::de::DeserializeOwned>(f: &Path, what: &str) -> Result<Option<T>> {
    if !f.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
    Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{}: not {what} this version can read", f.display()))?))
}

fn rep_path(out: &Path, variant: &str, k: u32) -> PathBuf {
    out.join("replications").join(variant).join(format!("rep-{k:04}.json"))
}

/// A finished replication of this plan, if the folder has one (a half-written one never is: they are
/// written under another name and renamed).
fn load_rep(out: &Path, variant: &str, k: u32, fingerprint: &str) -> Option<Replication> {
    let bytes = std::fs::read(rep_path(out, variant, k)).ok()?;
    serde_json::from_slice::<Replication>(&bytes).ok().filter(|r| r.fingerprint == fingerprint && r.variant == variant && r.k == k)
}

fn save_rep(out: &Path, rep: &Replication) -> Result<()> {
    let path = rep_path(out, &rep.variant, rep.k);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(&path, &serde_json::to_vec(rep)?)
}

/// Writes through a temporary file in the same folder and a rename: a reader sees the old file or the whole
/// new one, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // A name of its own per writer (process and call): two processes writing one folder (a retried task
    // beside the one it replaces) never rename each other's half-written file into place.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}.{}-{n}.partial", path.extension().and_then(|e| e.to_str()).unwrap_or(""), std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Every finished replication of the plan in `out`, by variant in the plan's order, then k.
fn load_all(out: &Path, record: &PlanRecord) -> Result<Vec<Replication>> {
    let mut reps = Vec::new();
    for v in &record.variants {
        let dir = out.join("replications").join(v);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut ks: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("rep-")?.strip_suffix(".json")?.parse().ok()))
            .collect();
        ks.sort_unstable();
        for k in ks {
            if let Some(r) = load_rep(out, v, k, &record.fingerprint) {
                reps.push(r);
            }
        }
    }
    Ok(reps)
}

/// Runs the replications on `jobs` threads, writing each as it finishes; the first failure stops the rest.
/// Runs the replications `todo` on `jobs` threads. With `progress`, a bar on a terminal; elsewhere (a batch
/// scheduler's log) a line per finished replication, `label` first.
fn run_jobs(plan: &Plan, out: &Path, todo: Vec<(u32, usize)>, jobs: usize, progress: bool, label: &str) -> Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let lines = progress && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (total, finished, t0) = (todo.len(), std::sync::atomic::AtomicUsize::new(0), Instant::now());
    let bar = if progress && !lines {
        let b = ProgressBar::new(todo.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} replications {elapsed_precise} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(plan.spec.name.clone());
        b
    } else {
        ProgressBar::hidden()
    };
    let queue = Mutex::new(todo.into_iter().collect::<VecDeque<_>>());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for w in 0..jobs {
            let (queue, failed, first_error, bar, finished) = (&queue, &failed, &first_error, &bar, &finished);
            let spawned = std::thread::Builder::new().name(format!("replication-{w}")).spawn_scoped(s, move || {
                while !failed.load(Ordering::Relaxed) {
                    let Some((k, v)) = queue.lock().ok().and_then(|mut q| q.pop_front()) else { break };
                    let started = Instant::now();
                    let done = replicate::replicate(plan, v, k).and_then(|rep| save_rep(out, &rep));
                    if let Err(e) = done {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e.context(format!("replication {k} of variant {}", plan.variants[v].name)));
                        }
                        break;
                    }
                    bar.inc(1);
                    let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
                    if lines {
                        eprintln!(
                            "{label}: replication {k} of {} done in {:.1} s ({n} of {total}, {:.0} s in all)",
                            plan.variants[v].name,
                            started.elapsed().as_secs_f64(),
                            t0.elapsed().as_secs_f64()
                        );
                    }
                }
            });
            if let Err(e) = spawned {
                failed.store(true, Ordering::Relaxed);
                if let Ok(mut slot) = first_error.lock() {
                    slot.get_or_insert(anyhow!("cannot start a worker thread: {e}"));
                }
            }
        }
    });
    bar.finish_and_clear();
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The terminal's account of an analysed experiment: the headline KPIs with their intervals and the
/// differences from the reference, the checks, and where the report is.
pub fn render(s: &analyse::Summary, out: &Path) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let reps: Vec<String> = s.replications.iter().map(|(v, n)| format!("{v} {n}")).collect();
    let _ = writeln!(t, "Experiment {} ({} days, {} warm-up; replications: {})", s.experiment, s.days, s.warmup_days, reps.join(", "));
    for h in analyse::HEADLINE {
        let Some(row) = s.kpi(h) else { continue };
        let _ = writeln!(t, "  {h}: {}", row.what);
        for (v, i) in &row.by_variant {
            let diff = row.difference.get(v).map_or(String::new(), |d| {
                format!("   diff {} [{}, {}] {}", report::num(d.interval.mean), report::num(d.interval.low()), report::num(d.interval.high()), d.verdict)
            });
            let _ = writeln!(t, "    {v:<24} {:>10} ± {:<8}{diff}", report::num(i.mean), report::num(i.half_width));
        }
    }
    let failed = s.failed_checks();
    let _ = writeln!(t, "Checks: {} of {} pass", s.checks.len() - failed.len(), s.checks.len());
    for c in failed {
        let _ = writeln!(t, "  FAILED {} ({}): {}", c.name, c.variant, c.detail);
    }
    let _ = writeln!(
        t,
        "{:.2} s per town-day per core over {:.0} town-days: {:.0} replication-days an hour per core",
        s.seconds_per_town_day,
        s.replication_days,
        3600.0 / s.seconds_per_town_day.max(1e-9)
    );
    let _ = writeln!(t, "Report: {}", out.join("report.html").display());
    t
}
