//! One load generator of several (`towntwin load PROFILE --generator i/n --broker URL --start-at UNIX_MS`):
//! the traffic of a load run spread over machines, each sending its slice ([`super::slice`]) against a core
//! that runs on its own (`towntwin core --order minutes`), and [`merge`](super::merge) joining their
//! records into one run's report.
//!
//! Every generator generates and schedules the whole traffic (the same on every machine: one seed), sends
//! only its own events, open loop, at their intended instants counted from the agreed start, and listens to
//! the core's orders feed: the latency of each work order its own events caused, from the cause's intended
//! send to the notice, goes into its HdrHistogram interval log (`latency.hlog`, one histogram a second from
//! the agreed start, and its sends' lateness tagged `lag`). Its folder's `generator.json` says what it was
//! (profile, traffic digest, slice, binary, start) and what it did (sent, acknowledged, connections, the
//! latency of each order it heard). It judges nothing: the core's store is read once, by the merge.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde::{Deserialize, Serialize};
use towntwin_sim::Message;

use super::judge::Latency;
use super::profile::{self, secs};
use super::send::{Gen, ToBroker, drive};
use super::slice::{Owner, Slice};
use super::summary::Millis;
use super::{Prepared, drain, prepare};
use crate::percentiles::Recorder;
use crate::transport::OrdersFeed;
use crate::{DataFault, UsageFault};

/// The record's file in a generator's folder.
pub const RECORD: &str = "generator.json";
/// Its interval log.
pub const LOG: &str = "latency.hlog";
/// The interval log's tag for the sends' lateness.
const LAG_TAG: &str = "lag";

#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    pub profile: PathBuf,
    /// The broker (or a cluster's nodes) the core takes its events from.
    pub broker: String,
    pub slice: Slice,
    /// The agreed start, milliseconds since the Unix epoch (needed when there are several generators).
    pub start_at: Option<i64>,
    pub out: Option<PathBuf>,
}

/// `generator.json`: what a generator was and what it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The profile's name and the file the generator read it from.
    pub profile: String,
    pub profile_file: PathBuf,
    /// Events in the whole traffic and the digest of their keys and intended instants ([`Prepared::digest`]).
    pub traffic_events: u64,
    pub traffic_digest: String,
    /// BLAKE3 of the rules' and policy's files ([`Prepared::inputs_digest`]).
    pub inputs_digest: String,
    pub generator: Slice,
    /// The binary's version and a digest of its executable.
    pub binary: String,
    pub host: String,
    pub broker: String,
    /// The agreed start (Unix milliseconds), and how late this generator was ready for it (0: in time).
    pub start_at_ms: i64,
    pub ready_late_ms: f64,
    /// Events in this generator's slice, and how many of them it sent (the first ones, in schedule order).
    pub slice_events: u64,
    pub sent: u64,
    /// Seconds from the start until its last send.
    pub sent_until: f64,
    /// Why it stopped sending early (it fell too far behind its schedule), if it did.
    pub sending_error: Option<String>,
    pub broker_acknowledged: u64,
    pub connections: usize,
    pub connect_seconds: f64,
    pub publishers: crate::mqtt::Churn,
    /// Seconds after its last send until the core's watermark passed the traffic's last tick (`None`: not
    /// within the profile's drain limit).
    pub drained: Option<f64>,
    pub generator_lag_ms: Millis,
    pub latency_ms: Millis,
    /// Milliseconds from the cause's intended send to the creation notice, by work order id: the orders
    /// this generator's events caused.
    pub latency_by_order: BTreeMap<u64, f64>,
}

/// The Unix milliseconds now (for the agreed start only: it schedules sends, it decides no rule).
fn unix_ms_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The local instant of the agreed start (in the past when this generator is late for it), and how late
/// this generator is for it by the wall clock (milliseconds, 0 when in time).
fn instant_of(start_at_ms: i64) -> (Instant, f64) {
    let now = Instant::now();
    let ahead = start_at_ms - unix_ms_now();
    if ahead >= 0 {
        (now + Duration::from_millis(ahead as u64), 0.0)
    } else {
        // An instant before this machine's monotonic clock began cannot be had: the lateness is still known.
        (now.checked_sub(Duration::from_millis((-ahead) as u64)).unwrap_or(now), -ahead as f64)
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "?".into())
}

/// Runs one generator into its folder and writes its record.
pub fn run(opts: &GeneratorOptions) -> Result<Record> {
    let loaded = profile::load(&opts.profile).map_err(DataFault)?;
    let prof = &loaded.profile;
    let slice = opts.slice;
    if let Some(f) = prof.faults.first() {
        return Err(UsageFault(format!(
            "{}: a generator (--generator {slice}) injects no faults ({f:?} here): faults need the core and broker that `towntwin load` starts itself",
            loaded.file.display()
        ))
        .into());
    }
    if slice.of > 1 && opts.start_at.is_none() {
        return Err(UsageFault(format!("--generator {slice}: several generators need one agreed start: give --start-at UNIX_MS (the same for each)")).into());
    }
    if let Some(at) = opts.start_at {
        let ahead = (at - unix_ms_now()) as f64 / 1000.0;
        if ahead < -60.0 {
            return Err(UsageFault(format!(
                "--start-at {at}: that instant passed {:.0} s ago; it is Unix milliseconds (e.g. $(( $(date +%s%3N) + 60000 )) for a minute from now), the same for every generator",
                -ahead
            ))
            .into());
        }
        if ahead > 86_400.0 {
            return Err(
                UsageFault(format!("--start-at {at}: that is {:.1} days from now; a load starts within a day (Unix milliseconds)", ahead / 86_400.0)).into()
            );
        }
    }
    let ep = crate::broker::reach(&opts.broker).map_err(|e| UsageFault(format!("--broker: {e:#}")))?;
    let out = opts.out.clone().unwrap_or_else(|| crate::results::stamped(&format!("load/{}-g{}of{}", prof.name, slice.index, slice.of)));
    crate::results::claim(&out, "a generator's run")?;

    let p = prepare(&loaded)?;
    let Prepared { town, msgs, offsets, by_id, last_tick, .. } = &p;
    let owner = Owner::new(town, slice.of);
    let is_mine: Vec<bool> = msgs.iter().map(|m| owner.sends(slice, m.topic())).collect();
    let (mine_msgs, mine_offsets): (Vec<Message>, Vec<f64>) =
        msgs.iter().zip(offsets).zip(&is_mine).filter(|(_, m)| **m).map(|((msg, w), _)| (msg.clone(), *w)).unzip();
    eprintln!(
        "load: generator {slice}: {} of the {} events, to {ep}; the core runs on its own, `towntwin core --broker URL --town {} --rules {} --policy {} --order minutes`",
        mine_msgs.len(),
        msgs.len(),
        p.town_file.display(),
        loaded.rules.display(),
        loaded.policy.display()
    );
    let inputs_digest = Prepared::inputs_digest(&loaded)?;
    let last_offset = offsets.last().copied().unwrap_or(0.0);

    let rt = crate::runtime()?;
    let record = rt.block_on(async {
        let mut feed = OrdersFeed::start(&ep, &format!("towntwin-load-orders-g{}of{}", slice.index, slice.of)).await?;
        let mut publisher = Gen::connect(&ep, prof, town, Some((slice, &owner))).await?;
        let (connections, connect_seconds) = (publisher.connections(), publisher.connect_time().as_secs_f64());
        // One generator alone starts once it is connected.
        let start_at_ms = opts.start_at.unwrap_or_else(|| unix_ms_now() + 300);
        let (t0, ready_late_ms) = instant_of(start_at_ms);
        if ready_late_ms > 0.0 {
            eprintln!("load: generator {slice} was ready {ready_late_ms:.0} ms after the agreed start: its first sends are late by that much");
        } else {
            eprintln!("load: generator {slice}: {connections} connection(s) in {connect_seconds:.2} s; sending from the agreed start ...");
        }
        let mut lag = Recorder::new();
        let give_up = secs(30.0f64.max(prof.slo.generator_lag_p99_ms / 1000.0 * 20.0));
        let sending = drive(&mine_offsets, t0, &mut ToBroker { publisher: &mut publisher, msgs: &mine_msgs }, &mut lag, give_up).await;
        let sent_until = t0.elapsed().as_secs_f64();
        let sent = if sending.is_ok() { mine_msgs.len() } else { publisher.published() as usize };
        // Every generator waits for the core to take the whole traffic (the last tick is generator 1's).
        let want = if sending.is_ok() { *last_tick } else { None };
        let (heard, drained) = drain(&mut feed, want, t0 + secs(last_offset), secs(prof.limits.drain_seconds)).await;
        let _ = publisher.flush(Duration::from_secs(2)).await;
        let churn = publisher.counters().churn();
        let acked = publisher.counters().pubacks();
        publisher.close().await;
        feed.close().await;
        let latency = Latency::of_heard(&heard, t0, offsets, by_id, |i| is_mine[i]);
        write_log(&out, &latency, &lag, start_at_ms, sent_until, &prof.name, slice)?;
        Ok::<_, anyhow::Error>(Record {
            inputs_digest,
            profile: prof.name.clone(),
            profile_file: std::path::absolute(&loaded.file).unwrap_or_else(|_| loaded.file.clone()),
            traffic_events: msgs.len() as u64,
            traffic_digest: p.digest(),
            generator: slice,
            binary: crate::experiment::binary_id(),
            host: host(),
            broker: opts.broker.clone(),
            start_at_ms,
            ready_late_ms,
            slice_events: mine_msgs.len() as u64,
            sent: sent as u64,
            sent_until,
            sending_error: sending.err().map(|e| format!("{e:#}")),
            broker_acknowledged: acked,
            connections,
            connect_seconds,
            publishers: churn,
            drained,
            generator_lag_ms: Millis::of(&lag),
            latency_ms: Millis::of(&latency.hist),
            latency_by_order: latency.by_order.into_iter().collect(),
        })
    })?;
    let json = serde_json::to_vec_pretty(&record)?;
    std::fs::write(out.join(RECORD), json).with_context(|| format!("cannot write {}", out.join(RECORD).display()))?;
    let lag_over = record.generator_lag_ms.p99 > prof.slo.generator_lag_p99_ms;
    eprintln!(
        "load: generator {slice}: sent {} of {} events in {:.1} s, lag p99 {:.1} ms{}; {} notice(s) of its orders, p99 {:.1} ms; record in {}",
        record.sent,
        record.slice_events,
        record.sent_until,
        record.generator_lag_ms.p99,
        if lag_over { format!(" (over the profile's {} ms: the merged run will be invalid)", prof.slo.generator_lag_p99_ms) } else { String::new() },
        record.latency_ms.count,
        record.latency_ms.p99,
        out.display()
    );
    Ok(record)
}

/// The generator's interval log: a histogram of its orders' latency (microseconds) for each second from
/// the agreed start, and its sends' lateness over the whole run tagged `lag`.
fn write_log(out: &Path, latency: &Latency, lag: &Recorder, start_at_ms: i64, sent_until: f64, profile: &str, slice: Slice) -> Result<()> {
    let comment =
        format!("towntwin load {profile}, generator {slice}: work-order latency in microseconds from each event's intended send; tag lag: its sends' lateness");
    let start = UNIX_EPOCH + Duration::from_millis(start_at_ms.max(0) as u64);
    let log = super::report::interval_log(&comment, Some(start), &latency.per_second, &[(LAG_TAG, lag, sent_until)])?;
    std::fs::write(out.join(LOG), log).with_context(|| format!("cannot write {}", out.join(LOG).display()))
}

/// A generator's interval log read back: its latency by second from the agreed start, and its lag.
pub(super) struct Log {
    pub per_second: Vec<Histogram<u64>>,
    pub lag: Histogram<u64>,
}

/// `seconds`: how long the run may have lasted (intervals starting later are refused).
pub(super) fn read_log(dir: &Path, seconds: f64) -> Result<Log> {
    let file = dir.join(LOG);
    let bytes = std::fs::read(&file).map_err(|e| UsageFault(format!("{}: cannot read the generator's interval log: {e}", file.display())))?;
    let bad = |what: String| UsageFault(format!("{}: {what}", file.display()));
    let mut per_second: Vec<Histogram<u64>> = Vec::new();
    let mut lag = None;
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| bad(format!("not an HdrHistogram interval log ({e:?})")))?;
        let LogEntry::Interval(h) = entry else { continue };
        let raw = base64::engine::general_purpose::STANDARD.decode(h.encoded_histogram()).map_err(|e| bad(format!("a histogram that is not base64 ({e})")))?;
        let hist: Histogram<u64> =
            Deserializer::new().deserialize(&mut Cursor::new(raw)).map_err(|e| bad(format!("a histogram that does not decode ({e:?})")))?;
        match h.tag().map(|t| t.as_str()) {
            Some(LAG_TAG) if lag.is_some() => return Err(bad("two `lag` histograms: not one generator's log".into()).into()),
            Some(LAG_TAG) => lag = Some(hist),
            Some(other) => return Err(bad(format!("an interval tagged {other:?}: only untagged (latency) and `lag` are expected")).into()),
            None => {
                let s = h.start_timestamp().as_secs() as usize;
                if s as f64 > seconds {
                    return Err(bad(format!("an interval {s} s after the start: this load lasts at most {seconds:.0} s")).into());
                }
                if per_second.len() <= s {
                    per_second.resize_with(s + 1, || Histogram::new(3).expect("3 significant digits"));
                }
                per_second[s].add(&hist).map_err(|e| bad(format!("a histogram that does not add up ({e:?})")))?;
            }
        }
    }
    let lag = lag.ok_or_else(|| bad("no `lag` histogram: not a generator's log, or one cut short".into()))?;
    Ok(Log { per_second, lag })
}
