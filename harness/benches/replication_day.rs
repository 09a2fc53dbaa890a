//! The figures planners pay for, one bench each (issue 25's targets on the 2-core machine in brackets):
//!
//! - `replication_day`: one replication-day of an experiment, the baseline town with its responders and
//!   the store-less core in one thread, KPIs included (target 0.5 s);
//! - `run_day`: `towntwin run --days 1 --broker none -q`, the core and its SQLite store in process, the
//!   results folder written (target 2 s).
//!
//! The twin alone is `town_day`. Run: `cargo bench -p towntwin-harness --bench replication_day`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use towntwin_harness::experiment::replicate::replicate;
use towntwin_harness::experiment::spec::Plan;
use towntwin_harness::run::{BrokerChoice, RunOptions, run};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn replication_day(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("bench.ron");
    let text = format!(
        "(name: \"bench\", scenario: \"{}\", days: 1, warmup_days: 0, seed: 7, replications: Fixed(2), variants: [(name: \"standard\", policy: \"{}\")])",
        root().join("scenarios/baseline.ron").display(),
        root().join("scenarios/policies/standard.ron").display()
    );
    std::fs::write(&file, text).expect("the bench's experiment file");
    let plan = Plan::load(&file).expect("the bench's experiment loads");
    let mut group = c.benchmark_group("replication_day");
    group.sample_size(10);
    group.bench_function("baseline_standard_one_day", |b| b.iter(|| replicate(&plan, 0, 0).expect("a replication")));
    group.finish();
}

fn run_day(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let n = AtomicUsize::new(0);
    let mut group = c.benchmark_group("run_day");
    group.sample_size(10);
    group.bench_function("broker_none_with_store", |b| {
        b.iter(|| {
            let out = dir.path().join(format!("run-{}", n.fetch_add(1, Ordering::Relaxed)));
            let opts = RunOptions {
                scenario: root().join("scenarios/baseline.ron"),
                days: Some(1),
                broker: BrokerChoice::None,
                out: Some(out.clone()),
                progress: false,
                ..RunOptions::default()
            };
            let s = run(&opts).expect("a run");
            std::fs::remove_dir_all(&out).ok();
            s.events_total
        })
    });
    group.finish();
}

criterion_group!(benches, replication_day, run_day);
criterion_main!(benches);
