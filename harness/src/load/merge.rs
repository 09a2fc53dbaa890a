//! `towntwin load merge DIRS... --store STORE --out DIR`: the records of a load's generators
//! ([`super::generator`]) joined into one run's report, judged as `towntwin load` judges its own: the
//! traffic regenerated from the profile (and checked against the generators' digest), the reference core
//! run over all of it, every event sent by any generator and every work order accounted for against the
//! core's store, latency percentiles from the generators' histograms added together (never averaged
//! percentiles).
//!
//! Refused (exit 2), naming what is wrong: a folder without a generator's record, generators of different
//! profiles, traffic, binaries, starts or counts, a generator missing or there twice.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use towntwin_core::service::Order;
use towntwin_core::store::Location;

use super::generator::{self, RECORD, Record};
use super::judge::{self, Latency};
use super::slice::Owner;
use super::summary::{GeneratorLine, Millis, Summary};
use super::{Measured, Prepared, prepare, profile, reference, report};
use crate::percentiles::Recorder;
use crate::{DataFault, UsageFault};

#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub dirs: Vec<PathBuf>,
    /// The core's store (a SQLite file or a PostgreSQL URL).
    pub store: Location,
    /// The profile, where the generators' path to it does not hold here.
    pub profile: Option<PathBuf>,
    pub out: PathBuf,
}

fn read_record(dir: &std::path::Path) -> Result<Record> {
    let file = dir.join(RECORD);
    let bytes = std::fs::read(&file).map_err(|e| {
        UsageFault(format!("{}: no generator's record here ({e}): a generator that did not finish, or not a generator's folder", file.display()))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| UsageFault(format!("{}: not a generator's record: {e}", file.display())).into())
}

/// Checks that the records are one load's generators, each once, all of them. Every problem is named.
pub fn check(records: &[(PathBuf, Record)]) -> Result<(), UsageFault> {
    let Some((first_dir, first)) = records.first() else { return Err(UsageFault("no generator folders given".into())) };
    let mut problems = Vec::new();
    let same = |what: &str, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display, dir: &PathBuf| {
        format!("{} has {what} {b}, {} has {a}: not generators of one load", dir.display(), first_dir.display())
    };
    for (dir, r) in &records[1..] {
        if r.profile != first.profile {
            problems.push(same("profile", &first.profile, &r.profile, dir));
        } else if r.traffic_digest != first.traffic_digest {
            problems.push(same("traffic digest", &first.traffic_digest, &r.traffic_digest, dir));
        }
        if r.generator.of != first.generator.of {
            problems.push(same("generator count", &first.generator.of, &r.generator.of, dir));
        }
        if r.start_at_ms != first.start_at_ms {
            problems.push(same("start (Unix ms)", &first.start_at_ms, &r.start_at_ms, dir));
        }
        if r.binary != first.binary {
            problems.push(same("binary", &first.binary, &r.binary, dir));
        }
        if r.inputs_digest != first.inputs_digest {
            problems.push(same("rules and policy digest", &first.inputs_digest, &r.inputs_digest, dir));
        }
    }
    let n = first.generator.of;
    let mut by_index: BTreeMap<u32, Vec<&PathBuf>> = BTreeMap::new();
    for (dir, r) in records {
        let g = r.generator;
        if g.of == 0 || g.index == 0 || g.index > g.of {
            problems.push(format!("{} is generator {}/{}: not one of 1..n", dir.display(), g.index, g.of));
        } else {
            by_index.entry(g.index).or_default().push(dir);
        }
        if g.of != n {
            continue;
        }
        if r.sending_error.is_none() && r.sent != r.slice_events {
            problems.push(format!(
                "{} (generator {g}) sent {} of its {} events and says nothing stopped it: a record cut short or altered",
                dir.display(),
                r.sent,
                r.slice_events
            ));
        }
        if r.sent > r.slice_events {
            problems.push(format!("{} (generator {g}) sent {} events of a slice of {}", dir.display(), r.sent, r.slice_events));
        }
    }
    if !problems.is_empty() {
        return Err(UsageFault(problems.join("; ")));
    }
    for (i, dirs) in &by_index {
        if dirs.len() > 1 {
            let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            problems.push(format!("generator {i}/{n} is there {} times: {}", dirs.len(), names.join(", ")));
        }
    }
    let missing: Vec<u32> = (1..=n).filter(|i| !by_index.contains_key(i)).take(10).collect();
    for i in &missing {
        problems.push(format!("generator {i}/{n} is missing: its slice of the devices would be left out"));
    }
    if missing.len() == 10 && by_index.len() + 10 < n as usize {
        problems.push(format!("and {} more of {n} are missing", n as usize - by_index.len() - 10));
    }
    if problems.is_empty() { Ok(()) } else { Err(UsageFault(problems.join("; "))) }
}

/// Joins the generators' records, judges the run against the core's store and writes its report in `out`.
pub fn merge(opts: &MergeOptions) -> Result<Summary> {
    let mut records = Vec::with_capacity(opts.dirs.len());
    for dir in &opts.dirs {
        records.push((dir.clone(), read_record(dir)?));
    }
    check(&records)?;
    records.sort_by_key(|(_, r)| r.generator.index);
    let first = &records[0].1;
    let profile_file = opts.profile.clone().unwrap_or_else(|| first.profile_file.clone());
    let loaded = profile::load(&profile_file).map_err(DataFault)?;
    if loaded.profile.name != first.profile {
        return Err(UsageFault(format!("{}: profile {:?}, and the generators ran {:?}", profile_file.display(), loaded.profile.name, first.profile)).into());
    }
    if !opts.store.may_exist() {
        return Err(UsageFault(format!("--store {}: no store there (the core's --db)", opts.store)).into());
    }
    towntwin_core::store::Reader::open(&opts.store).map_err(|e| UsageFault(format!("--store {}: cannot read it as the core's store: {e}", opts.store)))?;
    crate::results::claim(&opts.out, "a load run")?;

    let p = prepare(&loaded)?;
    let short = |d: &str| d.chars().take(12).collect::<String>();
    if p.digest() != first.traffic_digest {
        return Err(UsageFault(format!(
            "{}: its traffic now is not the generators' ({} events, digest {}; they had {} events, {}): another profile, scenario, town or binary",
            profile_file.display(),
            p.msgs.len(),
            short(&p.digest()),
            first.traffic_events,
            short(&first.traffic_digest)
        ))
        .into());
    }
    let inputs = Prepared::inputs_digest(&loaded)?;
    if inputs != first.inputs_digest {
        return Err(UsageFault(format!(
            "{}: its rules and policy ({} and {}, digest {}) are not those the generators had ({}): the reference core would judge by other rules",
            profile_file.display(),
            loaded.rules.display(),
            loaded.policy.display(),
            short(&inputs),
            short(&first.inputs_digest)
        ))
        .into());
    }
    let Prepared { town, rules, policy, msgs, offsets, keys, .. } = &p;
    let slo = &loaded.profile.slo;
    let longest = loaded.seconds() + loaded.profile.limits.drain_seconds + 60.0;
    eprintln!("load merge: {} generators, {} events; the reference core takes them ...", records.len(), msgs.len());
    let reference = reference::reference_in(rules, policy, town, msgs, Order::Minutes)?;

    // What each generator sent: the first `sent` of its slice.
    let owner = Owner::new(town, first.generator.of);
    let mut slices: Vec<Vec<usize>> = vec![Vec::new(); first.generator.of as usize];
    for (i, m) in msgs.iter().enumerate() {
        slices[owner.of_topic(m.topic()) as usize - 1].push(i);
    }
    let mut sent = Vec::new();
    let mut cut = i64::MAX;
    let mut latency = Latency::default();
    let mut lag = Recorder::new();
    let mut lines = Vec::new();
    let mut sending_errors = Vec::new();
    let mut churn = crate::mqtt::Churn::default();
    let (mut acked, mut connections, mut connect_seconds, mut sent_until) = (0, 0, 0.0f64, 0.0f64);
    let mut drained = Some(0.0f64);
    for (dir, r) in &records {
        let mine = &slices[r.generator.index as usize - 1];
        if mine.len() as u64 != r.slice_events {
            return Err(UsageFault(format!(
                "{}: generator {} had {} events in its slice and sent {}; this profile gives it {}",
                dir.display(),
                r.generator,
                r.slice_events,
                r.sent,
                mine.len()
            ))
            .into());
        }
        let took = &mine[..r.sent as usize];
        sent.extend_from_slice(took);
        if took.len() < mine.len() {
            cut = cut.min(took.last().map_or(i64::MIN, |&i| msgs[i].time));
        }
        let log = generator::read_log(dir, longest)?;
        let heard: u64 = log.per_second.iter().map(|h| h.len()).sum();
        let lag_count = log.lag.len();
        if heard != r.latency_ms.count || !(r.sent..=r.sent + 1).contains(&lag_count) {
            return Err(UsageFault(format!(
                "{}: its interval log ({heard} latencies, {lag_count} sends' lateness) is not its record's ({} latencies, {} sent): another run's log?",
                dir.display(),
                r.latency_ms.count,
                r.sent
            ))
            .into());
        }
        for (s, h) in log.per_second.iter().enumerate() {
            if latency.per_second.len() <= s {
                latency.per_second.resize_with(s + 1, Recorder::new);
            }
            latency.per_second[s].add(h);
            latency.hist.add(h);
        }
        lag.add(&log.lag);

        for (&order, &ms) in &r.latency_by_order {
            if latency.by_order.insert(order, ms).is_some() {
                return Err(UsageFault(format!(
                    "{}: work order {order} is claimed by two generators (each hears only the orders its own events caused)",
                    dir.display()
                ))
                .into());
            }
        }
        // A generator that fell behind, or was late for the start, did not apply its part of the load.
        let mut faults = Vec::new();
        if let Some(e) = &r.sending_error {
            faults.push(e.clone());
        }
        if r.ready_late_ms > slo.generator_lag_p99_ms {
            faults.push(format!("ready {:.0} ms after the agreed start", r.ready_late_ms));
        }
        let own_lag = Millis::of(&Recorder::from_histogram(log.lag.clone()));
        if own_lag.p99 > slo.generator_lag_p99_ms {
            faults.push(format!("its lag p99 {:.1} ms, over the {} ms it may be", own_lag.p99, slo.generator_lag_p99_ms));
        }
        if !faults.is_empty() {
            sending_errors.push(format!("generator {}: {}", r.generator, faults.join(", ")));
        }
        acked += r.broker_acknowledged;
        connections += r.connections;
        connect_seconds = connect_seconds.max(r.connect_seconds);
        sent_until = sent_until.max(r.sent_until);
        drained = drained.zip(r.drained).map(|(a, b)| a.max(b));
        churn += &r.publishers;
        lines.push(GeneratorLine {
            generator: r.generator.to_string(),
            host: r.host.clone(),
            dir: dir.display().to_string(),
            events: r.slice_events,
            sent: r.sent,
            broker_acknowledged: r.broker_acknowledged,
            connections: r.connections,
            connect_seconds: r.connect_seconds,
            generator_lag_ms: own_lag,
            notices: r.latency_by_order.len() as u64,
            valid: faults.is_empty(),
            invalid_reason: (!faults.is_empty()).then(|| faults.join(", ")),
        });
    }
    sent.sort_unstable();
    let measured = Measured {
        sending: if sending_errors.is_empty() { Ok(()) } else { Err(anyhow!(sending_errors.join("; "))) },
        sent,
        cut,
        sent_until,
        lag,
        latency,
        drained,
        acked,
        churn,
        faults: Vec::new(),
        samples: Vec::new(),
        connection_count: connections,
        connect_seconds,
        generators: lines,
    };
    let broker = format!("{} ({} generators; the core on its own)", first.broker, records.len());
    let flags = vec!["--order minutes (expected: several generators' events come in any order)".to_string()];
    let summary = judge::judge(&loaded, &broker, &opts.out, &opts.store, msgs, offsets, keys, &reference, measured, None, 1, &flags)
        .with_context(|| format!("judging the run against the core's store {}", opts.store))?;
    report::write(&opts.out, &summary, &loaded)?;
    Ok(summary)
}
