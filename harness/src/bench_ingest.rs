//! `towntwin bench-ingest`: the core's ingest through a real broker at steady, open-loop rates.
//!
//! The twin's traffic is generated first (so generation costs nothing during the measurement), then
//! published at each offered rate for a fixed time on a wall-clock schedule that does not slow down when the
//! broker or the core does. The core runs as a service on its own thread (its own runtime, its own SQLite
//! file), exactly as `towntwin core` does. A subscriber on `orders/#` takes the core's notices; each names
//! the event that caused it, and its latency is measured from that event's *scheduled* send time (so a
//! publisher that falls behind cannot hide the delay: no coordinated omission) to the notice's arrival, in
//! an HdrHistogram. A rate holds when the publisher kept to it, the core drained its backlog within a second
//! of the step's end, nothing was lost, and the p99 latency is within the target.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use towntwin_core::event::EventType;
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::{Notice, Policy, WATERMARK_TOPIC};
use towntwin_core::rules::RuleSet;
use towntwin_core::server::{self, CoreConfig};
use towntwin_core::service::Core;
use towntwin_core::time::Millis;
use towntwin_core::town::Town;
use towntwin_sim::{Message, Scenario, Twin, TwinOptions};

use crate::mqtt::{Mode, Publisher};
use crate::percentiles::Recorder;
use crate::run::{RunOptions, load, stamped_dir};
use crate::{DataFault, UsageFault};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scenario, rules and policy as for `run` (responders are switched off: this measures ingest).
    pub run: RunOptions,
    /// Offered rates, events per second, in the order they are run.
    pub rates: Vec<u32>,
    /// Seconds at each rate.
    pub seconds: f64,
    /// The p99 event -> work-order latency a rate must keep to hold, in milliseconds.
    pub p99_target_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub offered_per_second: u32,
    pub published: u64,
    /// Publishing took this long; at the offered rate it would take `published / offered`.
    pub publish_seconds: f64,
    pub achieved_per_second: f64,
    /// From the step's last publish until the core had taken everything published so far.
    pub drain_seconds: f64,
    /// Events the core took in the step, over the step's publishing plus drain time.
    pub core_per_second: f64,
    /// Events published but never taken by the core (QoS 0 shed by the broker, or lost).
    pub lost: u64,
    pub latency_samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub holds: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub broker: String,
    pub scenario: String,
    pub seconds_per_rate: f64,
    pub p99_target_ms: f64,
    pub steps: Vec<Step>,
    /// The highest offered rate that held (and every lower one run before it held too).
    pub highest_holding_rate: Option<u32>,
    pub core_accepted: u64,
    pub core_duplicates: u64,
    pub orders: u64,
    pub out_dir: String,
}

/// What the benchmark's `orders/#` subscription hears: a notice's cause (stamped on arrival), or a watermark.
enum FromCore {
    Notice(String, Instant),
    Watermark(Millis),
}

/// The id of a CloudEvent payload as the twin encodes it (`"id":"..."` near the start).
fn event_id(payload: &[u8]) -> Option<&str> {
    let key = b"\"id\":\"";
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let len = payload[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&payload[at..at + len]).ok()
}

/// At least `n` messages of the scenario's traffic from its start (ten years at most), minute by minute.
fn generate(scenario: &Scenario, start: i64, town: &Town, n: usize) -> Vec<Message> {
    let mut scenario = scenario.clone();
    scenario.responders.enabled = false;
    scenario.days = 3_660;
    let mut t = Twin::new(&scenario, start, town.clone(), TwinOptions::default());
    let mut msgs = Vec::with_capacity(n + 2_000);
    while msgs.len() < n && !t.finished() {
        msgs.extend(t.step());
    }
    msgs
}

pub fn bench(opts: &BenchOptions) -> Result<BenchReport> {
    // Every input file, then the broker, before anything is generated or written.
    let (scenario, start, town) = load(&opts.run)?;
    let rules = RuleSet::load(&opts.run.rules).map_err(DataFault)?;
    let policy = Policy::load_for(&opts.run.policy, &rules).map_err(DataFault)?;
    let ep = opts.run.broker.endpoint()?.ok_or_else(|| anyhow!("bench-ingest measures through a broker: it cannot run without one"))?;
    let needed: usize = opts.rates.iter().map(|r| (*r as f64 * opts.seconds).ceil() as usize).sum();
    eprintln!("generating {needed} events of traffic ...");
    let msgs = generate(&scenario, start, &town, needed);
    let ids: HashMap<String, usize> = msgs.iter().enumerate().filter_map(|(i, m)| Some((event_id(&m.payload)?.to_string(), i))).collect();
    let out = opts.run.out.clone().unwrap_or_else(|| stamped_dir("bench-ingest"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let db = out.join("core.db");
    if db.exists() {
        return Err(UsageFault(format!("{} already holds a benchmark's core store: give another --out, or remove it", db.display())).into());
    }

    // The core as a service, on its own thread and runtime, started the one way the core starts.
    let mut cfg = CoreConfig::new(town.clone(), rules, policy, Some(db), IngestConfig::new(&ep.host, ep.port));
    cfg.ingest.client_id = format!("towntwin-core-bench-{}", std::process::id());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<tokio::sync::watch::Receiver<u64>, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = std::thread::Builder::new().name("core".into()).spawn(move || -> Result<Option<Core>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let handle = match server::start(cfg).await {
                Ok(h) => h,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Ok(None);
                }
            };
            let _ = ready_tx.send(Ok(handle.received()));
            let _ = stop_rx.await;
            Ok(Some(handle.shutdown().await?))
        })
    })?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let steps = rt.block_on(async {
        let mut received = ready_rx.await.map_err(|_| anyhow!("the core thread ended before starting"))?.map_err(|e| anyhow!("the core could not start: {e}"))?;
        // The notices and watermarks, stamped on arrival.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<FromCore>();
        let mut o = MqttOptions::new(format!("towntwin-bench-orders-{}", std::process::id()), ep.host.clone(), ep.port);
        o.set_keep_alive(Duration::from_secs(60)).set_max_packet_size(towntwin_core::limits::CLIENT_MAX_PACKET, towntwin_core::limits::CLIENT_MAX_PACKET);
        let (client, mut el) = AsyncClient::new(o, 1_000);
        let mut n = rumqttc::NetworkOptions::new();
        n.set_tcp_nodelay(true);
        el.set_network_options(n);
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let at = Instant::now();
                        let msg = if p.topic == WATERMARK_TOPIC {
                            serde_json::from_slice::<serde_json::Value>(&p.payload).ok().and_then(|v| v.get("now")?.as_i64()).map(FromCore::Watermark)
                        } else {
                            serde_json::from_slice::<Notice>(&p.payload).ok().and_then(|n| n.cause).map(|c| FromCore::Notice(c, at))
                        };
                        if let Some(m) = msg
                            && tx.send(m).is_err()
                        {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("bench orders subscription: {e}");
                        // Back-off before the event loop reconnects.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        client.subscribe("orders/#", QoS::AtLeastOnce).await?;
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .map_err(|_| anyhow!("no SUBACK for orders/# from {ep} within 10 s"))?
            .map_err(|_| anyhow!("the orders subscription ended before its SUBACK"))?;
        let mut publisher = Publisher::connect(&ep, Mode::One, &town, Duration::from_secs(30)).await?;
        let mut scheduled: Vec<Option<Instant>> = vec![None; msgs.len()];
        let mut next = 0usize;
        let mut steps = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &rate in &opts.rates {
            let n = (rate as f64 * opts.seconds).ceil() as usize;
            let range = next..(next + n).min(msgs.len());
            let before = *received.borrow();
            let t0 = Instant::now();
            let per = Duration::from_secs_f64(1.0 / rate as f64);
            for i in range.clone() {
                let due = t0 + per * (i - range.start) as u32;
                let now = Instant::now();
                if due > now + Duration::from_millis(1) {
                    // Pacing: the open-loop schedule of the offered rate.
                    tokio::time::sleep_until(due.into()).await;
                }
                scheduled[i] = Some(due);
                publisher.publish(msgs[i].clone()).await?;
            }
            let publish_seconds = t0.elapsed().as_secs_f64();
            let published = range.len() as u64;
            next = range.end;
            // Drain: until the core has taken everything so far, or 30 s.
            let t1 = Instant::now();
            let target = next as u64;
            let _ = tokio::time::timeout(Duration::from_secs(30), received.wait_for(|&n| n >= target)).await;
            let drain_seconds = t1.elapsed().as_secs_f64();
            let took = *received.borrow() - before;
            // The notices of the step: everything up to the core's watermark for the step's last clock tick
            // (what follows that tick is counted in the next step), at most 5 s.
            let last_tick = msgs[range.clone()].iter().rev().find(|m| m.ty == EventType::ClockTick).map(|m| m.time);
            let mut h = Recorder::new();
            let mut take = |cause: String, at: Instant, h: &mut Recorder| {
                if seen.insert(cause.clone())
                    && let Some(sent) = ids.get(&cause).and_then(|&i| scheduled[i])
                {
                    h.record(at.saturating_duration_since(sent).as_micros().max(1) as i64);
                }
            };
            let settle = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let msg = if last_tick.is_some() { tokio::time::timeout_at(settle, rx.recv()).await.ok().flatten() } else { rx.try_recv().ok() };
                match msg {
                    Some(FromCore::Notice(cause, at)) => take(cause, at, &mut h),
                    Some(FromCore::Watermark(now)) if last_tick.is_some_and(|t| now >= t) => break,
                    Some(FromCore::Watermark(_)) => {}
                    None => break,
                }
            }
            while let Ok(FromCore::Notice(cause, at)) = rx.try_recv() {
                take(cause, at, &mut h);
            }
            let lat = h.summary(1000.0);
            let lost = target.saturating_sub(*received.borrow());
            let achieved = published as f64 / publish_seconds.max(1e-9);
            let p99 = lat.map_or(f64::INFINITY, |l| l.p99);
            let holds = lost == 0 && drain_seconds <= 1.0 && achieved >= 0.98 * rate as f64 && p99 <= opts.p99_target_ms && lat.is_some();
            let step = Step {
                offered_per_second: rate,
                published,
                publish_seconds,
                achieved_per_second: achieved,
                drain_seconds,
                core_per_second: took as f64 / (publish_seconds + drain_seconds).max(1e-9),
                lost,
                latency_samples: h.len(),
                p50_ms: lat.map_or(0.0, |l| l.p50),
                p90_ms: lat.map_or(0.0, |l| l.p90),
                p99_ms: lat.map_or(0.0, |l| l.p99),
                max_ms: lat.map_or(0.0, |l| l.max),
                holds,
            };
            eprintln!(
                "  {:>6}/s offered: published {} at {:.0}/s, core {:.0}/s, drained in {:.2} s, lost {}, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} samples) -> {}",
                rate,
                step.published,
                step.achieved_per_second,
                step.core_per_second,
                step.drain_seconds,
                step.lost,
                step.p50_ms,
                step.p99_ms,
                step.max_ms,
                step.latency_samples,
                if holds { "holds" } else { "does not hold" }
            );
            steps.push(step);
            if next >= msgs.len() {
                break;
            }
        }
        let _ = publisher.flush(Duration::from_secs(30)).await;
        publisher.close().await;
        let _ = client.try_disconnect();
        watcher.abort();
        Ok::<_, anyhow::Error>(steps)
    });
    let _ = stop_tx.send(());
    let core = service.join().map_err(|_| anyhow!("the core thread panicked"))?;
    let steps = steps?;
    let c = core?.ok_or_else(|| anyhow!("the core did not start"))?;
    let highest = steps.iter().take_while(|s| s.holds).map(|s| s.offered_per_second).max();
    let report = BenchReport {
        broker: ep.to_string(),
        scenario: scenario.name.clone(),
        seconds_per_rate: opts.seconds,
        p99_target_ms: opts.p99_target_ms,
        steps,
        highest_holding_rate: highest,
        core_accepted: c.stats.accepted,
        core_duplicates: c.stats.duplicates,
        orders: c.orders.orders.len() as u64,
        out_dir: out.display().to_string(),
    };
    let path = out.join("bench.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(report)
}

pub fn render(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "Core ingest through {} ({} s a rate, p99 target {} ms)", r.broker, r.seconds_per_rate, r.p99_target_ms);
    let _ = writeln!(
        o,
        "  {:>8} {:>10} {:>9} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}  holds",
        "offered", "achieved", "core/s", "drain s", "lost", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for s in &r.steps {
        let _ = writeln!(
            o,
            "  {:>8} {:>10.0} {:>9.0} {:>8.2} {:>6} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1}  {}",
            s.offered_per_second,
            s.achieved_per_second,
            s.core_per_second,
            s.drain_seconds,
            s.lost,
            s.latency_samples,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            if s.holds { "yes" } else { "no" }
        );
    }
    let _ = writeln!(o, "Highest rate that holds: {}", r.highest_holding_rate.map_or("none".into(), |x| format!("{x} events/s")));
    let _ =
        writeln!(o, "Core: {} events accepted, {} duplicates, {} work orders; results: {}/bench.json", r.core_accepted, r.core_duplicates, r.orders, r.out_dir);
    o
}
