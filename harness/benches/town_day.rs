//! One simulated town day without network: the whole town (200k residents, 9,749 devices), every event
//! generated, encoded as a CloudEvent and folded into the stream digest. Target: 1 s on the 2-core
//! machine. Run: `cargo bench -p towntwin-harness --bench town_day`.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use towntwin_core::town::Town;
use towntwin_sim::{Scenario, Twin, TwinOptions};

fn town_day(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut loaded = Scenario::load(&root.join("scenarios/baseline.ron")).expect("baseline scenario");
    loaded.scenario.days = 1;
    let town = Town::load(&loaded.town_file).expect("town");
    let mut group = c.benchmark_group("town_day");
    group.sample_size(10);
    for threads in [1usize, 2] {
        group.bench_function(format!("build_and_run_one_day_threads_{threads}"), |b| {
            b.iter(|| {
                let mut twin = Twin::new(&loaded.scenario, loaded.start, town.clone(), TwinOptions { threads: Some(threads), ..TwinOptions::default() });
                let mut events = 0usize;
                twin.run(|m| events += m.len());
                assert!(events > 800_000);
                twin.digest()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, town_day);
criterion_main!(benches);
