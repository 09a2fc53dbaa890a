//! The load test's two helper threads: faults injected on schedule ([`inject`]: kill -9, a frozen core, a
//! broker restart, a reconnect storm) and the sampler of progress and resources every 200 ms
//! ([`sample`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::procs::{self, Proc, Usage};
use anyhow::{Result, anyhow};

use super::profile::{Fault, secs};
use super::summary::{FaultRun, Sample, UsageAt};
use super::{Procs, accepted_in};

pub(super) fn inject(procs: &Mutex<Procs>, faults: &[Fault], t0: Instant, storm: &crate::mqtt::Storm, rt: &tokio::runtime::Handle) -> Vec<FaultRun> {
    let mut order: Vec<&Fault> = faults.iter().collect();
    order.sort_by(|a, b| a.at().total_cmp(&b.at()));
    let mut runs = Vec::new();
    for f in order {
        let due = t0 + secs(f.at());
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            // The fault's own schedule.
            std::thread::sleep(d);
        }
        let started = t0.elapsed().as_secs_f64();
        let result = (|| -> Result<()> {
            match f {
                Fault::KillCore { down, .. } => {
                    procs.lock().map_err(|_| anyhow!("poisoned"))?.core.kill()?;
                    // Down for the fault's length.
                    std::thread::sleep(secs(*down));
                    procs.lock().map_err(|_| anyhow!("poisoned"))?.core.restart(Duration::from_secs(60))
                }
                Fault::StallCore { seconds, .. } => {
                    procs.lock().map_err(|_| anyhow!("poisoned"))?.core.signal(procs::Signal::SIGSTOP)?;
                    // Frozen for the fault's length.
                    std::thread::sleep(secs(*seconds));
                    procs.lock().map_err(|_| anyhow!("poisoned"))?.core.signal(procs::Signal::SIGCONT)
                }
                Fault::ReconnectStorm { within, .. } => {
                    let drops = crate::mqtt::Counters::get(&storm.counters().drops);
                    storm.start(secs(*within));
                    let limit = secs(within + 60.0);
                    if !rt.block_on(storm.wait_reconnected(drops, limit)) {
                        anyhow::bail!(
                            "{} of {} connections were up {limit:?} after the storm began",
                            crate::mqtt::Counters::get(&storm.counters().live),
                            storm.total()
                        );
                    }
                    Ok(())
                }
                Fault::RestartBroker { down, .. } => {
                    let mut p = procs.lock().map_err(|_| anyhow!("poisoned"))?;
                    p.broker.as_mut().ok_or_else(|| anyhow!("no broker started by this run"))?.kill()?;
                    drop(p);
                    // Down for the fault's length.
                    std::thread::sleep(secs(*down));
                    let mut p = procs.lock().map_err(|_| anyhow!("poisoned"))?;
                    p.broker.as_mut().ok_or_else(|| anyhow!("no broker"))?.restart(Duration::from_secs(30))
                }
            }
        })();
        let ended = t0.elapsed().as_secs_f64();
        if let Err(e) = &result {
            tracing::error!("fault {} at {started:.1} s: {e:#}", f.name());
        }
        runs.push(FaultRun {
            fault: format!("{} at {} s for {} s", f.name(), f.at(), f.length()),
            started,
            ended,
            recovery_seconds: None,
            error: result.err().map(|e| format!("{e:#}")),
        });
    }
    runs
}

pub(super) fn sample(
    procs: &Mutex<Procs>,
    db: &std::path::Path,
    t0: Instant,
    stop: &std::sync::atomic::AtomicBool,
    counters: &crate::mqtt::Counters,
) -> Vec<Sample> {
    let mut conn = None;
    let mut out = Vec::new();
    // CPU is the change in CPU seconds over the wall time between two readings, measured on its own clock:
    // the samples' `t` stays 0 until the load starts (t0 is a moment ahead), and a difference of two such
    // zeros made a 10-core generator out of 10 ms of CPU.
    let mut last: HashMap<u32, (Instant, Usage)> = HashMap::new();
    let me = std::process::id();
    let mut accepted = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = t0.elapsed().as_secs_f64();
        let (core, broker) = match procs.lock() {
            Ok(p) => (p.core.pid(), p.broker.as_ref().map(Proc::pid)),
            Err(_) => break,
        };
        let mut at = |pid: u32| -> Option<UsageAt> {
            let (u, now) = (procs::usage(pid)?, Instant::now());
            let prev = last.insert(pid, (now, u));
            let cpu = prev.map_or(0.0, |(pt, pu)| ((u.cpu_seconds - pu.cpu_seconds) / now.duration_since(pt).as_secs_f64().max(0.05)).max(0.0));
            Some(UsageAt { cpu, rss_mb: u.rss_mb })
        };
        let (c, b, g) = (at(core), broker.and_then(&mut at), at(me));
        accepted = accepted_in(db, &mut conn).unwrap_or(accepted).max(accepted);
        if t >= 0.0 {
            out.push(Sample { t, accepted, connections: crate::mqtt::Counters::get(&counters.live), core: c, broker: b, generator: g });
        }
        // The sampling period.
        std::thread::sleep(Duration::from_millis(200));
    }
    out
}
