//! The end of every tick: orders the tick's events by event time (stably, so equal times keep the fixed
//! order of the feature chain), gives each a per-device id, encodes it as a CloudEvent, and folds the
//! encoded bytes into the run's stream digest.

use bevy::prelude::*;
use bevy::tasks::{TaskPool, TaskPoolBuilder};
use towntwin_contracts::event::{Data, Event, EventType, HOTLINE_KIND, Header, Namespace, Sent, SmolStr, TOWN_AREA, encode_append};
use towntwin_contracts::time::Local;

use super::Feature;
use crate::world::{CLOCK_DEVICE, HOTLINE_BASE, Outbox, Params, Pending, Registry, line_of};

pub struct EmitPlugin;

impl Plugin for EmitPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Emitted>()
            .init_resource::<Typed>()
            .init_resource::<Stats>()
            .init_resource::<StreamDigest>()
            .init_resource::<Exercise>()
            .init_resource::<TownNamespace>()
            .init_resource::<EncodePool>()
            .init_resource::<Ahead>()
            .add_systems(Update, encode_tick.in_set(Feature::Emit));
    }
}

/// One encoded event, ready for a broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic's UTF-8 bytes, a slice of the tick's shared buffer like the payload.
    pub topic: bytes::Bytes,
    /// A slice of the tick's shared buffer: cloning or handing it to the MQTT client copies nothing.
    pub payload: bytes::Bytes,
    pub qos: u8,
    pub ty: EventType,
    pub time: i64,
}

impl Message {
    pub fn topic(&self) -> &str {
        // Topics are built from `&str` pieces in `encode_run`; the fallback cannot happen.
        std::str::from_utf8(&self.topic).unwrap_or("")
    }
}

/// The encoded events of the last tick; the caller takes them.
#[derive(Resource, Debug, Default)]
pub struct Emitted(pub Vec<Message>);

/// The twin's events as they are before encoding, for a core in the same process that takes them typed
/// (an experiment's): when `on`, a tick's events land here with their per-device sequence numbers instead of
/// being encoded, and the stream digest is not kept. The same ids, order and counts as the encoded stream.
#[derive(Resource, Debug, Default)]
pub struct Typed {
    pub on: bool,
    /// Typed as well as encoded (see `TwinOptions::typed_too`): the same events in the same order as
    /// the tick's messages.
    pub too: bool,
    pub events: Vec<Event>,
    /// Each registry device's `source`, made once (for the namespace in `sources_of`) and shared by its
    /// events: a static string ([`interned`]).
    sources: Vec<SmolStr>,
    sources_of: String,
}

impl Typed {
    /// Makes the sources of the registry's devices under `ns`, unless made already.
    fn fill(&mut self, reg: &Registry, ns: &Namespace) {
        if self.sources_of != ns.source() || self.sources.len() != reg.devices.len() {
            self.sources = (0..reg.devices.len() as crate::world::Dev).map(|d| SmolStr::new_static(interned(&source_of(reg, ns, d)))).collect();
            self.sources_of = ns.source().to_string();
        }
    }
}

/// `text`, kept for the life of the process and shared by every twin in it. The devices' sources of the
/// typed events are these: an event's source is then a static string, whose clone and drop touch nothing
/// on the heap (a reference count shared by a device's events was a cache miss to count up in the twin and
/// down in the core, about 4% of a 35-day replication). What is kept is one copy of each distinct source: some
/// 10,000 of the town's devices, about 0.5 MB, however many twins of it a process builds (an experiment
/// builds one a replication), and as much again for each other town or namespace it runs.
fn interned(text: &str) -> &'static str {
    static KEPT: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> = std::sync::OnceLock::new();
    let mut kept = KEPT.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&k) = kept.get(text) {
        return k;
    }
    let k: &'static str = Box::leak(text.to_owned().into_boxed_str());
    kept.insert(k);
    k
}

/// The CloudEvents `source` of device `dev`'s events: `{ns source}/{area}/{kind}/{device}`.
fn source_of(reg: &Registry, ns: &Namespace, dev: crate::world::Dev) -> SmolStr {
    let (area, kind, device) = names(reg, dev);
    let mut source = String::with_capacity(ns.source().len() + area.len() + kind.len() + device.len() + 3);
    for part in [ns.source(), "/", area, "/", kind, "/", device] {
        source.push_str(part);
    }
    SmolStr::from(source)
}

/// The topic segments of an event from `dev`: area, device kind and device id, as the CloudEvent's `source`
/// (`/gaohang/{area}/{kind}/{device}`) and its id (`{device}-{seq:x}`) are made of.
pub fn names(reg: &Registry, dev: crate::world::Dev) -> (&str, &'static str, &str) {
    names_with(dev, &reg.estate_ids, |i| {
        let d = &reg.devices[i];
        (d.area.as_str(), d.kind.slug(), d.id.as_str())
    })
}

/// [`names`] over estate ids and a registry device's names, wherever they are kept.
fn names_with<'a>(
    dev: crate::world::Dev,
    estates: &'a [String],
    device: impl FnOnce(usize) -> (&'a str, &'static str, &'a str),
) -> (&'a str, &'static str, &'a str) {
    if dev == CLOCK_DEVICE {
        (TOWN_AREA, "clock", "twin")
    } else if dev >= HOTLINE_BASE {
        let (line, estate) = line_of(dev);
        (estates[estate].as_str(), HOTLINE_KIND, line.device())
    } else {
        device(dev as usize)
    }
}

/// The twin's own workers for encoding a tick in pieces, one fewer than its threads: the twin's thread
/// encodes a piece itself while it waits for theirs (a scope runs the pool's tasks on the calling thread).
/// The twin's own, not bevy's global compute pool, which the first twin of a process would size for every
/// later one (and bevy's default split of two threads left that pool one: the twin encoded alone).
#[derive(Resource)]
pub struct EncodePool(TaskPool);

impl EncodePool {
    /// A pool for a twin of `threads` threads (at least 1: its own).
    pub fn new(threads: usize) -> EncodePool {
        EncodePool(TaskPoolBuilder::new().num_threads(threads.max(1) - 1).thread_name("twin encode".into()).build())
    }

    /// The twin's threads: its own and the pool's.
    pub fn threads(&self) -> usize {
        self.0.thread_num() + 1
    }
}

impl Default for EncodePool {
    fn default() -> Self {
        EncodePool::new(1)
    }
}

/// What events' names are made of (see [`names`]), copied out of the registry once so that the digest's
/// thread can encode a tick while the twin goes on.
pub(crate) struct Names {
    devices: Vec<(SmolStr, &'static str, SmolStr)>,
    estates: Vec<String>,
}

impl Names {
    fn of(reg: &Registry) -> Names {
        Names { devices: reg.devices.iter().map(|d| (d.area.clone(), d.kind.slug(), d.id.clone())).collect(), estates: reg.estate_ids.clone() }
    }

    /// As [`names`].
    fn get(&self, dev: crate::world::Dev) -> (&str, &'static str, &str) {
        names_with(dev, &self.estates, |i| {
            let d = &self.devices[i];
            (d.0.as_str(), d.1, d.2.as_str())
        })
    }
}

/// Whether the next tick is stepped ahead ([`crate::Twin::step_ahead`]): its events encoded on the digest's
/// thread while the twin goes on, and handed back through `pending`.
#[derive(Resource, Default)]
pub struct Ahead {
    pub(crate) on: bool,
    /// In a mutex only because a resource must be `Sync` (a receiver is not).
    pub(crate) pending: Option<std::sync::Mutex<std::sync::mpsc::Receiver<Vec<Message>>>>,
}

/// Counts by type and by local hour.
#[derive(Resource, Debug, Clone)]
pub struct Stats {
    pub total: u64,
    pub bytes: u64,
    pub by_type_hour: Vec<[u64; 24]>,
    seq: Vec<u32>,
    clock_seq: u32,
    hotline_seq: u32,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { total: 0, bytes: 0, by_type_hour: vec![[0; 24]; EventType::ALL.len()], seq: Vec::new(), clock_seq: 0, hotline_seq: 0 }
    }
}

impl Stats {
    pub fn by_type(&self, ty: EventType) -> u64 {
        self.by_type_hour[ty as usize].iter().sum()
    }
}

/// The exercise (an operator drill) every event is marked with, as the CloudEvents extension `exerciseid`;
/// `None` (the default) for a run of the town on its own.
#[derive(Resource, Debug, Default, Clone)]
pub struct Exercise(pub Option<String>);

/// The town's topic root and CloudEvents source ([`Namespace`]); the default town's unless a district
/// names the town.
#[derive(Resource, Debug, Default, Clone)]
pub struct TownNamespace(pub Namespace);

/// BLAKE3 over every encoded event in generation order: topic, newline, payload, newline. Hashed on a thread
/// of its own, started by the first bytes (a twin that hands its events over typed never starts it): the
/// twin hands over each tick's shared buffers (a reference count each) and goes on to the next tick, a
/// tenth of its day. A tick stepped ahead ([`Ahead`]) is handed over unencoded, and that thread encodes it
/// before hashing it. Everything is taken in the order handed over, one at a time, so the digest is the
/// same however the ticks were stepped.
#[derive(Resource, Default)]
pub struct StreamDigest(Hashing);

#[derive(Default)]
enum Hashing {
    #[default]
    NotStarted,
    /// On this thread: the hashing thread could not be started.
    Here(Box<blake3::Hasher>),
    There {
        tx: std::sync::mpsc::SyncSender<Fold>,
        thread: std::thread::JoinHandle<()>,
    },
}

enum Fold {
    Bytes(bytes::Bytes),
    /// Encode a tick's run, hash it and hand its messages back (a tick stepped ahead, see [`Ahead`]).
    Encode(Box<Job>),
    /// Reply with the digest of everything before.
    Ask(std::sync::mpsc::Sender<blake3::Hash>),
}

/// A tick's events for the digest's thread to encode.
struct Job {
    run: Vec<(Pending, u32)>,
    names: std::sync::Arc<Names>,
    ns: Namespace,
    exercise: Option<String>,
    reply: std::sync::mpsc::Sender<Vec<Message>>,
}

/// Buffers in flight to the hashing thread before the twin waits for it (a tick hands over one or a few).
const DIGEST_QUEUE: usize = 64;

impl StreamDigest {
    /// Folds `bytes` into the digest after everything handed over before.
    pub fn update(&mut self, bytes: bytes::Bytes) {
        self.start();
        match &mut self.0 {
            Hashing::NotStarted => unreachable!("started above"),
            Hashing::Here(h) => {
                h.update(&bytes);
            }
            Hashing::There { tx, .. } => {
                // The thread only ends when this is dropped.
                tx.send(Fold::Bytes(bytes)).expect("the stream digest's thread ended early: it panicked");
            }
        }
    }

    /// Hands a tick's run to the digest's thread to encode and hash after everything handed over before;
    /// its `reply` gets the messages. The job back when there is no such thread (it is encoded here then).
    fn encode_ahead(&mut self, job: Box<Job>) -> Result<(), Box<Job>> {
        self.start();
        match &mut self.0 {
            Hashing::There { tx, .. } => {
                tx.send(Fold::Encode(job)).expect("the stream digest's thread ended early: it panicked");
                Ok(())
            }
            _ => Err(job),
        }
    }

    fn start(&mut self) {
        if let Hashing::NotStarted = self.0 {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Fold>(DIGEST_QUEUE);
            let spawned = std::thread::Builder::new().name("twin digest".into()).spawn(move || {
                let mut hasher = blake3::Hasher::new();
                for fold in rx {
                    match fold {
                        Fold::Bytes(b) => {
                            hasher.update(&b);
                        }
                        Fold::Encode(job) => {
                            let (bytes, messages) = encode_run(&job.names, &job.ns, job.exercise.as_deref(), &job.run);
                            hasher.update(&bytes);
                            // A tick nobody waits for any more (its twin dropped): only its digest counts.
                            let _ = job.reply.send(messages);
                        }
                        Fold::Ask(reply) => {
                            let _ = reply.send(hasher.finalize());
                        }
                    }
                }
            });
            self.0 = match spawned {
                Ok(thread) => Hashing::There { tx, thread },
                Err(_) => Hashing::Here(Box::default()),
            };
        }
    }

    /// The digest of everything handed over so far (waits for the hashing thread to reach it).
    pub fn hash(&self) -> blake3::Hash {
        match &self.0 {
            Hashing::NotStarted => blake3::Hasher::new().finalize(),
            Hashing::Here(h) => h.finalize(),
            Hashing::There { tx, .. } => {
                let (reply, answer) = std::sync::mpsc::channel();
                tx.send(Fold::Ask(reply)).expect("the stream digest's thread ended early: it panicked");
                answer.recv().expect("the stream digest's thread ended early: it panicked")
            }
        }
    }
}

impl Drop for StreamDigest {
    fn drop(&mut self) {
        if let Hashing::There { tx, thread } = std::mem::take(&mut self.0) {
            drop(tx);
            let _ = thread.join();
        }
    }
}

/// Encodes a run of events whose per-device sequence numbers are already assigned, into one buffer laid
/// out as the digest takes it (`topic\npayload\n` each); messages hold slices of it. A pure function of its
/// input, so pieces of a tick can be encoded on different threads and joined in order.
fn encode_run(names: &Names, ns: &Namespace, exercise: Option<&str>, run: &[(Pending, u32)]) -> (bytes::Bytes, Vec<Message>) {
    let mut buf = Vec::with_capacity(run.len() * 420);
    let mut spans = Vec::with_capacity(run.len());
    let mut id = String::with_capacity(32);
    for (p, seq) in run {
        let (area, kind, device) = names.get(p.device);
        event_id(&mut id, device, *seq);
        let header = Header { id: &id, source: ns.source(), area, kind, device, ty: p.ty, time: p.time, subject: p.subject, exercise };
        let topic_start = buf.len();
        buf.extend_from_slice(ns.prefix().as_bytes());
        for (i, seg) in ["town", area, kind, device, p.ty.as_str()].into_iter().enumerate() {
            if i > 0 {
                buf.push(b'/');
            }
            buf.extend_from_slice(seg.as_bytes());
        }
        let topic_end = buf.len();
        buf.push(b'\n');
        let start = buf.len();
        encode_append(&mut buf, &header, &p.data);
        spans.push((topic_start, topic_end, start, buf.len(), p.ty, p.time));
        buf.push(b'\n');
    }
    let shared = bytes::Bytes::from(buf);
    let messages = spans
        .into_iter()
        .map(|(t0, t1, a, b, ty, time)| Message { topic: shared.slice(t0..t1), payload: shared.slice(a..b), qos: ty.qos(), ty, time })
        .collect();
    (shared, messages)
}

/// An event's id: its device and its sequence number on that device, `{device}-{seq:x}` (written by hand:
/// `write!` took a tenth of the twin's day).
fn event_id(id: &mut String, device: &str, seq: u32) {
    id.clear();
    id.push_str(device);
    id.push('-');
    let mut hex = [0u8; 8];
    let mut at = hex.len();
    let mut v = seq;
    loop {
        at -= 1;
        hex[at] = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    // Hex digits are ASCII.
    id.push_str(std::str::from_utf8(&hex[at..]).unwrap_or_default());
}

/// An event as the core takes it, without encoding: the id and source its CloudEvent would carry, and the
/// registry's device index (none for the clock and the 12345 line, which are not devices). `sources` are
/// the registry's devices' ([`Typed::fill`]), `id` a scratch buffer; the event's id is inline (no
/// allocation) and its source shared with the device's others.
fn typed(reg: &Registry, ns: &Namespace, sources: &[SmolStr], id: &mut String, p: Pending, seq: u32) -> Event {
    let dev = (p.device != CLOCK_DEVICE && p.device < HOTLINE_BASE).then_some(p.device);
    let source = match dev {
        Some(d) => sources[d as usize].clone(),
        None => source_of(reg, ns, p.device),
    };
    event_id(id, names(reg, p.device).2, seq);
    Event { id: SmolStr::new(id.as_str()), source, ty: p.ty, time: p.time, device: dev, subject: p.subject, data: p.data }
}

/// The tick's events in time order, the clock's after all others, and in the order they were made where
/// these tie: what a stable sort by `(clock, time)` gives. The keys are sorted, not the events (some 80
/// bytes each, moved many times over by a sort of a few hundred of them): by two passes of a radix sort
/// when the tick's times lie within 65 seconds (every tick of a run), by comparison otherwise.
fn stream_order(pending: Vec<Pending>) -> Vec<Pending> {
    let key = |p: &Pending| (p.device == CLOCK_DEVICE, p.time);
    if pending.is_sorted_by_key(key) {
        return pending;
    }
    let lo = pending.iter().map(|p| p.time).min().unwrap_or(0);
    let near = pending.iter().all(|p| p.time.checked_sub(lo).is_some_and(|d| d < 1 << 16));
    let order: Vec<u64> = if near {
        // (clock, time from the earliest) in 17 bits above the event's place: two stable passes of 9 bits.
        let keys: Vec<u64> =
            pending.iter().enumerate().map(|(i, p)| (u64::from(p.device == CLOCK_DEVICE) << 48) | (((p.time - lo) as u64) << 32) | i as u64).collect();
        let mut sorted = vec![0; keys.len()];
        radix_pass(&keys, &mut sorted, 32);
        let mut keys = keys;
        radix_pass(&sorted, &mut keys, 41);
        keys
    } else {
        // (clock, time, place) in one integer: the time's sign bit flipped so that it orders as a signed one.
        let mut keys: Vec<u128> = pending
            .iter()
            .enumerate()
            .map(|(i, p)| (u128::from(p.device == CLOCK_DEVICE) << 96) | (u128::from((p.time as u64) ^ (1 << 63)) << 32) | i as u128)
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|k| u64::from(k as u32)).collect()
    };
    let mut slots: Vec<Option<Pending>> = pending.into_iter().map(Some).collect();
    order.iter().filter_map(|&k| slots[k as u32 as usize].take()).collect()
}

/// One stable pass of a radix sort of `from` into `to`, by the 9 bits from bit `shift`.
fn radix_pass(from: &[u64], to: &mut [u64], shift: u32) {
    let digit = |x: u64| ((x >> shift) & 511) as usize;
    let mut start = [0usize; 513];
    for &x in from {
        start[digit(x) + 1] += 1;
    }
    for d in 0..512 {
        start[d + 1] += start[d];
    }
    for &x in from {
        let d = digit(x);
        to[start[d]] = x;
        start[d] += 1;
    }
}

/// Makes the tick's events the minute its clock tick closes, and has the tick say how many there are: an
/// event due earlier (an agenda's entry that came due late) is stamped at the minute's start, so that every
/// event the twin sends between two ticks lies in the minute the second one closes, as a core that orders
/// its input by minutes takes it ([`towntwin_contracts::event::Tick::sent`]). `pending` is in time order
/// with the tick last; a frame without a tick (the clock's feature off) is left as it is.
fn close_minute(pending: &mut [Pending]) {
    let Some((last, events)) = pending.split_last_mut() else { return };
    let Data::Tick(tick) = &mut last.data else { return };
    let start = last.time - crate::world::Clock::TICK;
    let mut sent = Sent::default();
    for p in events.iter_mut() {
        p.time = p.time.clamp(start, last.time - 1);
        if p.ty.qos() == 0 {
            sent.qos0 += 1;
        } else {
            sent.qos1 += 1;
        }
    }
    tick.sent = Some(sent);
}

/// Below this many events a tick is encoded on the calling thread.
const PARALLEL_MIN: usize = 256;

/// Whether each device of the registry is installed, by the scenario's `platform` section: an estate the
/// platform does not cover has none, and the road cameras may be off. A device not installed still lives
/// in the twin (its draws are the same whatever is deployed); only its events are left out.
#[derive(Default)]
struct Installed(Vec<bool>, bool);

impl Installed {
    fn of(params: &Params, reg: &Registry) -> Installed {
        let p = &params.scenario.platform;
        let each: Vec<bool> =
            reg.devices.iter().map(|d| p.installed(d.kind, (d.estate != u16::MAX).then(|| reg.estate_ids[d.estate as usize].as_str()))).collect();
        let all = each.iter().all(|&x| x);
        Installed(each, all)
    }
}

#[allow(clippy::too_many_arguments)]
fn encode_tick(
    mut outbox: ResMut<Outbox>,
    params: Res<Params>,
    mut installed: bevy::prelude::Local<Installed>,
    reg: Res<Registry>,
    mut emitted: ResMut<Emitted>,
    mut typed: ResMut<Typed>,
    mut stats: ResMut<Stats>,
    mut digest: ResMut<StreamDigest>,
    exercise: Res<Exercise>,
    ns: Res<TownNamespace>,
    pool: Res<EncodePool>,
    mut ahead: ResMut<Ahead>,
    mut names: bevy::prelude::Local<Option<std::sync::Arc<Names>>>,
) {
    let mut pending = std::mem::take(&mut outbox.0);
    if installed.0.len() != reg.devices.len() {
        *installed = Installed::of(&params, &reg);
    }
    if !installed.1 {
        pending.retain(|p| p.device >= HOTLINE_BASE || installed.0[p.device as usize]);
    }
    // In time order, and the clock tick that closes the minute last of all: once the core has it, it has
    // had the whole minute (the watermark the harness's lockstep with the core waits on).
    let mut pending = stream_order(pending);
    close_minute(&mut pending);
    if stats.seq.len() < reg.devices.len() {
        stats.seq.resize(reg.devices.len(), 0);
    }
    // Ids and counts in stream order, on this thread; encoding itself may run in parallel pieces.
    let mut run = Vec::with_capacity(pending.len());
    for p in pending {
        let seq = if p.device == CLOCK_DEVICE {
            stats.clock_seq += 1;
            stats.clock_seq
        } else if p.device >= HOTLINE_BASE {
            // One line for the town: call ids are unique across estates.
            stats.hotline_seq += 1;
            stats.hotline_seq
        } else {
            stats.seq[p.device as usize] += 1;
            stats.seq[p.device as usize]
        };
        stats.total += 1;
        stats.by_type_hour[p.ty as usize][Local::of(p.time).hour as usize] += 1;
        run.push((p, seq));
    }
    if typed.on || typed.too {
        typed.fill(&reg, &ns.0);
        let mut id = String::with_capacity(32);
        // Only typed: the run itself; typed too: a copy, the run is encoded below.
        let to_type = if typed.on { std::mem::take(&mut run) } else { run.clone() };
        let Typed { events, sources, .. } = &mut *typed;
        events.extend(to_type.into_iter().map(|(p, seq)| self::typed(&reg, &ns.0, sources, &mut id, p, seq)));
        if typed.on {
            return;
        }
    }
    let names = names.get_or_insert_with(|| std::sync::Arc::new(Names::of(&reg))).clone();
    if ahead.on {
        let (reply, pending) = std::sync::mpsc::channel();
        let job = Box::new(Job { run, names: names.clone(), ns: ns.0.clone(), exercise: exercise.0.clone(), reply });
        match digest.encode_ahead(job) {
            Ok(()) => {
                ahead.pending = Some(std::sync::Mutex::new(pending));
                return;
            }
            // No thread for the digest: encoded here, as for `step`.
            Err(job) => run = job.run,
        }
    }
    let pool = &pool.0;
    // The pool's workers and this thread, which runs the pool's tasks while it waits in `scope`.
    let workers = pool.thread_num() + 1;
    let pieces: Vec<(bytes::Bytes, Vec<Message>)> = if run.len() < PARALLEL_MIN || workers == 1 {
        vec![encode_run(&names, &ns.0, exercise.0.as_deref(), &run)]
    } else {
        let size = run.len().div_ceil(workers);
        let (names, ns, exercise) = (&*names, &ns.0, exercise.0.as_deref());
        pool.scope(|scope| {
            for piece in run.chunks(size) {
                scope.spawn(async move { encode_run(names, ns, exercise, piece) });
            }
        })
    };
    for (bytes, messages) in pieces {
        // BLAKE3 is fastest fed in large pieces: each piece's bytes are hashed at once, in stream order.
        digest.update(bytes);
        stats.bytes += messages.iter().map(|m| m.payload.len() as u64).sum::<u64>();
        emitted.0.extend(messages);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use towntwin_contracts::event::{Data, Dumping, EventType};

    use crate::world::{CLOCK_DEVICE, Pending};

    /// What the stable sort by `(clock, time)` gives, for ticks of events made out of order, with many ties,
    /// times before 1970 and far off, and ticks already in order.
    #[test]
    fn events_are_put_in_the_order_a_stable_sort_gives() {
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
        for round in 0..500 {
            let n = rng.random_range(0..300);
            let spread: i64 = [1, 5, 32_000, 60_000, i64::MAX / 4][round % 5];
            let pending: Vec<Pending> = (0..n)
                .map(|i| Pending {
                    time: if round % 7 == 0 { i as i64 } else { rng.random_range(-spread..=spread) },
                    device: if rng.random_bool(0.05) { CLOCK_DEVICE } else { rng.random_range(0..50) },
                    ty: EventType::BinDumping,
                    subject: None,
                    // The event's place among those made, to see ties keep it.
                    data: Data::Dumping(Dumping { bags: i as u16 }),
                })
                .collect();
            let mut want = pending.clone();
            want.sort_by_key(|p| (p.device == CLOCK_DEVICE, p.time));
            let got = super::stream_order(pending);
            let key = |p: &Pending| {
                (
                    p.device,
                    p.time,
                    match p.data {
                        Data::Dumping(ref d) => d.bags,
                        _ => unreachable!(),
                    },
                )
            };
            assert_eq!(got.iter().map(key).collect::<Vec<_>>(), want.iter().map(key).collect::<Vec<_>>(), "round {round}");
        }
    }

    /// One copy of each text, however often it is asked for, from however many threads.
    #[test]
    fn a_text_is_kept_once() {
        let texts: Vec<String> = (0..100).map(|i| format!("/gaohang/E{i:03}/gate/E{i:03}-gate-01")).collect();
        let first: Vec<&'static str> = texts.iter().map(|t| super::interned(t)).collect();
        let again: Vec<Vec<&'static str>> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4).map(|_| s.spawn(|| texts.iter().rev().map(|t| super::interned(t)).rev().collect())).collect();
            runs.into_iter().map(|r| r.join().expect("the thread ends")).collect()
        });
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(first[i], t);
            for run in &again {
                assert!(std::ptr::eq(run[i], first[i]), "{t} kept twice");
            }
        }
    }

    #[test]
    fn an_event_id_is_written_as_format_writes_it() {
        let mut id = String::new();
        for seq in [0u32, 1, 9, 10, 15, 16, 255, 0xabc, 0x1234_5678, u32::MAX] {
            super::event_id(&mut id, "E012-gate-03", seq);
            assert_eq!(id, format!("E012-gate-03-{seq:x}"));
        }
    }
}
