//! The core as one object: decode -> dedup -> rules -> work orders -> store, batch by batch. The networked
//! service feeds it from MQTT; the in-process mode feeds it the twin's messages directly. Both go through
//! [`Core::ingest`], so both produce the same work orders for the same stream.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::rules::TimeWindow;

use serde::Serialize;

use crate::decode::{Event, Reject, decode, decode_on};
use crate::event::{EventType, SmolStr};
use crate::orders::{Action, Illegal, OrderEvent, Orders, Policy, State};
use crate::principal::Principal;
use crate::rules::{Engine, Finding, RuleSet};
use crate::store::{Store, StoreError};
use crate::time::Millis;
use crate::town::Town;

mod dedup;
pub mod minutes;
mod snapshot;

use dedup::RecentIds;
use minutes::{Held, Minutes};
pub use snapshot::{SNAPSHOT_TAG, decode_snapshot, encode_snapshot};

/// Events between engine snapshots; a restart replays at most this many.
pub const SNAPSHOT_EVERY: u64 = 100_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreStats {
    pub accepted: u64,
    pub duplicates: u64,
    /// With `--order minutes`: events logged and held until their minute is whole, and minutes applied
    /// before they were (see [`minutes`]).
    pub holding: u64,
    pub minutes_forced: u64,
    pub late: u64,
    pub rejected: BTreeMap<String, u64>,
    pub findings_by_rule: BTreeMap<String, u64>,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rejected messages with their reasons, for the dead-letter topic.
    pub rejected: Vec<(usize, Reject)>,
    /// Work-order transitions committed by this batch, for the orders topic tree.
    pub transitions: Vec<OrderEvent>,
    /// For each transition, the id of the event whose arrival caused it (a finding, or a deadline its time
    /// passed), for latency measurements.
    pub causes: Vec<SmolStr>,
    /// Event time of each accepted event that opened or repeated an order (for latency measurements).
    pub findings: Vec<Finding>,
    /// The core's event time after the batch, when the batch carried a clock tick (fresh or redelivered):
    /// the watermark the networked service publishes.
    pub clock: Option<Millis>,
}

/// In what order the core applies the events it takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// As they come (the twin's order over one broker, or in process).
    #[default]
    Arrival,
    /// A minute at a time, once the minute is whole, in a fixed order: the same orders whatever order a
    /// broker delivered the events in (a broker cluster). See [`minutes`].
    Minutes,
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> Result<Order, String> {
        match s {
            "arrival" => Ok(Order::Arrival),
            "minutes" => Ok(Order::Minutes),
            _ => Err(format!("unknown order `{s}`: expected `arrival` or `minutes`")),
        }
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Order::Arrival => "arrival",
            Order::Minutes => "minutes",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Illegal(#[from] Illegal),
    #[error("engine snapshot is corrupt: {0}")]
    Snapshot(String),
    #[error("a core with a store takes messages as they came (their payloads are its log), not decoded events")]
    NeedsPayloads,
}

pub struct Core {
    pub engine: Engine,
    pub orders: Orders,
    pub policy: std::sync::Arc<Policy>,
    pub stats: CoreStats,
    store: Option<Store>,
    /// Ids seen, when there is no store to ask (only those a duplicate could still be accepted with).
    seen: RecentIds,
    /// Token hashes, when there is no store to keep them.
    tokens: HashMap<String, Principal>,
    since_snapshot: u64,
    last_seq: i64,
    /// Events between engine snapshots ([`SNAPSHOT_EVERY`] unless set).
    pub snapshot_every: u64,
    /// The event sequence the store's engine snapshot covers, if there is one.
    snapshot_upto: Option<i64>,
    /// Whether any message ever came at QoS 0 (else a broken feed cannot have lost any).
    qos0_seen: bool,
    /// With [`Order::Minutes`], the minutes held.
    minutes: Option<Minutes>,
}

impl Core {
    /// A core over `town` with `rules` and `policy`; with a store, state is loaded from it (orders, the
    /// engine's snapshot, and a replay of the events logged after it).
    pub fn open(rules: RuleSet, policy: Policy, town: &Town, db: Option<&crate::store::Location>) -> Result<Core, CoreError> {
        Core::open_in(rules, policy, town, db, Order::Arrival)
    }

    /// [`Core::open`] of a core that applies events in `order`.
    pub fn open_in(rules: RuleSet, policy: Policy, town: &Town, db: Option<&crate::store::Location>, order: Order) -> Result<Core, CoreError> {
        let store = db.map(Store::open).transpose()?;
        Core::with_store(rules, policy, town, store, order)
    }

    /// A core over `town` resuming from `store` (opened already: by [`Store::open`], or by
    /// [`Store::open_standby`] once the town's active core let go of it), applying events in `order`. A
    /// store written in one order must be resumed in the same.
    pub fn with_store(rules: RuleSet, policy: Policy, town: &Town, store: Option<Store>, order: Order) -> Result<Core, CoreError> {
        let mut core = Core {
            engine: Engine::new(rules, town),
            orders: Orders::default(),
            policy: std::sync::Arc::new(policy),
            stats: CoreStats::default(),
            store: None,
            seen: RecentIds::default(),
            tokens: HashMap::new(),
            since_snapshot: 0,
            last_seq: 0,
            snapshot_every: SNAPSHOT_EVERY,
            snapshot_upto: None,
            qos0_seen: false,
            minutes: None,
        };
        if let Some(store) = store {
            let loaded = store.load()?;
            core.orders.orders = loaded.orders;
            core.orders.reindex();
            if let Some((upto, bytes)) = loaded.snapshot {
                core.engine.restore(decode_snapshot(&bytes)?);
                core.last_seq = upto;
                core.snapshot_upto = Some(upto);
            }
            // Blind spans before the replay, so that silences re-armed live are re-armed the same way here.
            core.engine.blind = loaded.blind.clone();
            // Snapshots are taken only while no minute is held: the minutes applied are those before the
            // snapshot's clock.
            if order == Order::Minutes {
                core.minutes = Some(Minutes::resuming_at(core.engine.state.now));
            }
            // Replay rebuilds the engine only: the orders these events led to are already in the store. The
            // log is in the order the events came, so minutes are held and applied as they were.
            let mut ready = Vec::new();
            for (seq, payload) in &loaded.replay {
                if let Ok(ev) = decode(payload, core.engine.devices()) {
                    match core.minutes.as_mut() {
                        Some(m) => m.push(Held { ev, live: false }, &core.engine.rules.window, &mut ready),
                        None => ready.push(Held { ev, live: false }),
                    }
                    for h in ready.drain(..) {
                        let _ = core.engine.apply(&h.ev);
                    }
                }
                core.last_seq = *seq;
                core.since_snapshot += 1;
            }
            core.stats.rejected = loaded.rejects.into_iter().collect();
            core.qos0_seen = loaded.qos0_seen;
            core.store = Some(store);
        } else if order == Order::Minutes {
            core.minutes = Some(Minutes::default());
        }
        core.sync_minute_stats();
        Ok(core)
    }

    fn sync_minute_stats(&mut self) {
        if let Some(m) = &self.minutes {
            self.stats.holding = m.holding as u64;
            self.stats.minutes_forced = m.forced;
            self.stats.late = m.late;
        }
    }

    /// Event time as far as the core knows.
    pub fn now(&self) -> Millis {
        self.engine.state.now
    }

    /// Decodes and applies a batch of message payloads, and commits all their effects in one transaction
    /// before returning: the caller acknowledges the batch only after this returns `Ok`.
    pub fn ingest(&mut self, payloads: &[&[u8]]) -> Result<Outcome, CoreError> {
        self.ingest_from(payloads, None, None)
    }

    /// [`Core::ingest`] of messages with the topics they came on: each topic must match its event's source
    /// and type (`topic_mismatch` otherwise).
    pub fn ingest_on(&mut self, topics: &[&str], payloads: &[&[u8]]) -> Result<Outcome, CoreError> {
        self.ingest_from(payloads, Some(topics), None)
    }

    /// [`Core::ingest_on`] of messages as a broker delivered them, with whether each came at QoS 0: after
    /// [`Core::feed_broke`], the first accepted QoS 0 message is live traffic again (a broker drops QoS 0
    /// for a client that is away, and sends what it queued at QoS 1 first), which ends the blind span.
    pub fn ingest_delivered(&mut self, topics: &[&str], payloads: &[&[u8]], qos0: &[bool]) -> Result<Outcome, CoreError> {
        self.ingest_from(payloads, Some(topics), Some(qos0))
    }

    /// The core's feed broke or is starting (a restart, a reconnect): messages sent at QoS 0 from its clock's
    /// time until the next live one were lost to it, so the silence rule must not count them as a device's
    /// silence (see [`crate::rules::Engine::blind`]). Recorded in the store. A core that never had a QoS 0
    /// message cannot have lost one, and records nothing.
    pub fn feed_broke(&mut self) -> Result<(), CoreError> {
        if let Some(m) = self.minutes.as_mut() {
            m.broke();
        }
        if !self.qos0_seen {
            // Everything comes at QoS 1 and the broker keeps it: nothing can have been lost.
            return Ok(());
        }
        if let Some(from) = self.engine.blind_from_now() {
            tracing::info!("core: not listening from event time {}", crate::time::rfc3339(from));
            if let Some(store) = self.store.as_mut() {
                let b = store.batch()?;
                b.blind_span(from, None)?;
                b.commit()?;
            }
        }
        Ok(())
    }

    /// Events already decoded, as the twin made them, for a core without a store (an experiment's): the
    /// same window, dedup, rules and orders as [`Core::ingest_on`] without encoding each event to JSON and
    /// parsing it back. A core with a store must log every payload as it came, so it refuses this.
    pub fn ingest_events(&mut self, events: Vec<Event>) -> Result<Outcome, CoreError> {
        self.ingest_typed(events, false)
    }

    /// [`Core::ingest_events`] of events the caller guarantees it has never given before (no `(source, id)`
    /// twice): a twin in this process, which numbers each device's events, feeding an experiment's
    /// store-less core. The window of recent ids is not consulted (a probe into a set of two days' ids was
    /// a sixth of a replication-day); debug builds still check every id.
    pub fn ingest_unique_events(&mut self, events: Vec<Event>) -> Result<Outcome, CoreError> {
        self.ingest_typed(events, true)
    }

    fn ingest_typed(&mut self, events: Vec<Event>, unique: bool) -> Result<Outcome, CoreError> {
        if self.store.is_some() {
            return Err(CoreError::NeedsPayloads);
        }
        let n = events.len();
        let (out, accepted) = self.admit(events.into_iter().map(Ok).enumerate(), n);
        self.take(out, accepted, &[], None, unique)
    }

    /// [`Core::ingest_delivered`] of messages decoded already (by the ingest's partitions, with
    /// [`crate::decode::decode_on`] against this core's registry), one result for each payload.
    pub fn ingest_decoded(&mut self, payloads: &[&[u8]], qos0: &[bool], decoded: Vec<Result<Event, Reject>>) -> Result<Outcome, CoreError> {
        let n = payloads.len();
        debug_assert_eq!(decoded.len(), n, "one decoded result for each payload");
        let (out, accepted) = self.admit(decoded.into_iter().enumerate(), n);
        self.take(out, accepted, payloads, Some(qos0), false)
    }

    fn ingest_from(&mut self, payloads: &[&[u8]], topics: Option<&[&str]>, qos0: Option<&[bool]>) -> Result<Outcome, CoreError> {
        let devices = self.engine.devices();
        let decoded = payloads.iter().enumerate().map(|(i, p)| {
            let ev = match topics.and_then(|t| t.get(i)) {
                Some(topic) => decode_on(topic, p, devices),
                None => decode(p, devices),
            };
            (i, ev)
        });
        let (out, accepted) = self.admit(decoded, payloads.len());
        self.take(out, accepted, payloads, qos0, false)
    }

    /// Of a batch's decoded events (with their indices), those inside the time window, checked against the
    /// clock as it moves through the batch (only ticks move it); the rest rejected, with why.
    fn admit(&self, decoded: impl Iterator<Item = (usize, Result<Event, Reject>)>, n: usize) -> (Outcome, Vec<(usize, Event)>) {
        let mut out = Outcome::default();
        let mut accepted = Vec::with_capacity(n);
        let mut clock = self.engine.state.now;
        let window = &self.engine.rules.window;
        for (i, decoded) in decoded {
            // Ordered by minutes, an event ahead of the clock is held, not refused, unless it is far ahead
            // of every tick that came; one behind is refused as in arrival order.
            let check = |ev: &Event| match &self.minutes {
                Some(m) if ev.time > clock => m.may_hold(window, ev.time),
                _ => window.check(clock, ev.time),
            };
            match decoded {
                Ok(ev) => match check(&ev) {
                    None => {
                        if ev.ty == EventType::ClockTick {
                            clock = clock.max(ev.time);
                        }
                        accepted.push((i, ev));
                    }
                    Some(detail) => out.rejected.push((i, Reject { code: "out_of_window", detail })),
                },
                Err(r) => out.rejected.push((i, r)),
            }
        }
        (out, accepted)
    }

    /// Logs (with a store), dedups and applies the accepted events of a batch; `payloads` are the messages
    /// as they came (for the store's log), indexed like the events.
    /// `unique`: the caller guarantees every id is new ([`Core::ingest_unique_events`]).
    fn take(&mut self, mut out: Outcome, accepted: Vec<(usize, Event)>, payloads: &[&[u8]], qos0: Option<&[bool]>, unique: bool) -> Result<Outcome, CoreError> {
        let mut batch = match self.store.as_mut() {
            Some(s) => Some(s.batch()?),
            None => None,
        };
        for (_, r) in &out.rejected {
            *self.stats.rejected.entry(r.code.to_string()).or_default() += 1;
            if let Some(b) = &batch {
                b.count_reject(r.code)?;
            }
        }
        self.engine.warm(accepted.iter().map(|(_, ev)| ev));
        let window = self.engine.rules.window;
        let mut ready: Vec<Held> = Vec::new();
        let mut key = String::with_capacity(96);
        for (i, ev) in accepted {
            let tick = ev.ty == EventType::ClockTick;
            // Unique as CloudEvents define it: source and id together (two devices may use the same id).
            let fresh = match &mut batch {
                Some(b) => {
                    key.clear();
                    for part in [ev.source.as_str(), " ", ev.id.as_str()] {
                        key.push_str(part);
                    }
                    b.append_event(&key, ev.time, payloads[i])?.inspect(|seq| self.last_seq = *seq).is_some()
                }
                None if unique => {
                    if cfg!(debug_assertions) {
                        let new = self.seen.insert(RecentIds::key(&ev.source, &ev.id), self.engine.state.now, &self.engine.rules.window);
                        assert!(new, "event {} {} given twice to a core told its ids are unique", ev.source, ev.id);
                    }
                    true
                }
                None => self.seen.insert(RecentIds::key(&ev.source, &ev.id), self.engine.state.now, &self.engine.rules.window),
            };
            if !fresh {
                self.stats.duplicates += 1;
                if tick {
                    out.clock = Some(self.engine.state.now);
                }
                continue;
            }
            self.stats.accepted += 1;
            self.since_snapshot += 1;
            let live = qos0.and_then(|q| q.get(i)) == Some(&true);
            if live && !self.qos0_seen {
                self.qos0_seen = true;
                if let Some(b) = &batch {
                    b.qos0_seen()?;
                }
            }
            // Logged; applied now, or (ordered by minutes) once its minute is whole. Applied in place: an
            // event is some 140 bytes, and moving each through the held list and back was 2% of a
            // replication-day.
            macro_rules! apply {
                ($ev:expr, $live:expr) => {{
                    let (ev, live): (&Event, bool) = ($ev, $live);
                    let tick = ev.ty == EventType::ClockTick;
                    if live && let Some((from, until)) = self.engine.live_at(ev.time) {
                        tracing::info!("core: listening again from event time {} (blind since {})", crate::time::rfc3339(until), crate::time::rfc3339(from));
                        if let Some(b) = &batch {
                            b.blind_span(from, Some(until))?;
                        }
                    }
                    let before = self.orders.pending.len();
                    // `apply` moves the event-time clock to the event (a clock tick included) and fires due timers.
                    let call = match &ev.data {
                        crate::event::Data::Hotline(c) => Some(c.category),
                        _ => None,
                    };
                    for f in self.engine.apply(ev) {
                        *self.stats.findings_by_rule.entry(f.rule.clone()).or_default() += 1;
                        // A 12345 call about a problem the platform already has an order for joins that order.
                        let joined = call.and_then(|c| self.orders.attach_call(&f, c, &self.engine.rules));
                        if joined.is_none() {
                            self.orders.on_finding_under(&f, &self.engine.rules, &self.policy)?;
                        }
                        out.findings.push(f);
                    }
                    self.orders.tick(self.engine.state.now)?;
                    out.causes.resize(out.causes.len() + self.orders.pending.len() - before, ev.id.clone());
                    if tick {
                        out.clock = Some(self.engine.state.now);
                    }
                }};
            }
            match self.minutes.as_mut() {
                Some(m) => m.push(Held { ev, live }, &window, &mut ready),
                None => apply!(&ev, live),
            }
            for held in ready.drain(..) {
                apply!(&held.ev, held.live);
            }
        }
        // Taken only while no minute is held, so that a restart knows which minutes were applied from the
        // snapshot's clock alone.
        let snapshot = self.since_snapshot >= self.snapshot_every && self.minutes.as_ref().is_none_or(Minutes::idle);
        if let Some(b) = batch.take() {
            flush(&self.orders, &b)?;
            b.commit()?;
        }
        drop(batch);
        self.sync_minute_stats();
        if snapshot {
            self.snapshot()?;
        }
        out.transitions = std::mem::take(&mut self.orders.pending);
        self.orders.dirty.clear();
        Ok(out)
    }

    /// Snapshots the engine's state, to be written on the store's snapshot thread (the store first waits for
    /// its writer, so a snapshot covers only committed events); only the clone is paid here.
    fn snapshot(&mut self) -> Result<(), CoreError> {
        if let Some(store) = &self.store {
            let state = self.engine.state.clone();
            store.snapshot(self.last_seq, Box::new(move || encode_snapshot(&state).map_err(|e| e.to_string())))?;
            self.snapshot_upto = Some(self.last_seq);
        }
        self.since_snapshot = 0;
        Ok(())
    }

    /// Commits what is held and snapshots the engine if events came since the last snapshot and no minute
    /// is held (see [`minutes`]): a core that ends (the twin's own, at the end of a run) leaves a store
    /// that a later core opens without replaying.
    pub fn close_snapshot(&mut self) -> Result<(), CoreError> {
        self.sync_writes()?;
        if self.since_snapshot > 0 && self.minutes.as_ref().is_none_or(Minutes::idle) {
            self.snapshot()?;
        }
        Ok(())
    }

    /// Hands the store's writes to a thread of its own, committed every `group` batches, while the core goes
    /// on (see [`Store::write_behind`]): for the twin's own core, whose event ids never repeat (they are not
    /// looked up) and which acknowledges nothing to anyone. Reads of the store wait for what was handed.
    pub fn write_behind(&mut self, group: u32) -> Result<(), CoreError> {
        if let Some(s) = self.store.as_mut() {
            s.write_behind(group)?;
        }
        Ok(())
    }

    /// Waits until the batches handed to the store's writer are committed (see [`Core::write_behind`]).
    pub fn sync_writes(&mut self) -> Result<(), CoreError> {
        if let Some(s) = self.store.as_mut() {
            s.sync_writes()?;
        }
        Ok(())
    }

    /// An action from a person (API, responder), at the core's event time; committed before returning
    /// (handed to the store's writer when it writes behind, see [`Core::write_behind`]).
    pub fn act(&mut self, id: u64, actor: &str, action: Action) -> Result<(State, Vec<OrderEvent>), CoreError> {
        let now = self.now();
        let state = self.orders.act(id, now, actor, action)?;
        if let Some(store) = self.store.as_mut() {
            let b = store.batch()?;
            flush(&self.orders, &b)?;
            b.commit()?;
        }
        self.orders.dirty.clear();
        Ok((state, std::mem::take(&mut self.orders.pending)))
    }

    /// Issues an API token for `principal`: kept as its hash (in the store, or in memory without one), and
    /// returned once.
    pub fn issue_token(&mut self, principal: &Principal) -> Result<String, CoreError> {
        let token = crate::auth::new_token();
        let hash = crate::auth::hash(&token);
        let now = self.now();
        match &mut self.store {
            Some(s) => s.put_token(&hash, &principal.to_string(), &crate::auth::issue_entry(now, "core", principal))?,
            None => {
                self.tokens.insert(hash, principal.clone());
            }
        }
        Ok(token)
    }

    /// Records in the audit log what the API did for `actor` that is no transition: an order viewed, or an
    /// action refused (outside its scope, or illegal in the order's state). Stamped with event time, like the
    /// transitions. Without a store there is no audit log, and nothing is recorded.
    pub fn audit(&mut self, actor: &Principal, what: &str, target: &str, outcome: &str) -> Result<(), CoreError> {
        let entry = crate::audit::Entry {
            at: self.now(),
            actor: actor.to_string(),
            scope: actor.scope.to_string(),
            what: what.to_string(),
            target: target.to_string(),
            outcome: outcome.to_string(),
        };
        if let Some(store) = self.store.as_mut() {
            let b = store.batch()?;
            b.audit(&entry)?;
            b.commit()?;
        }
        Ok(())
    }

    /// The principal a token was issued for, if it is a token of this core.
    pub fn principal_of(&self, token: &str) -> Result<Option<Principal>, CoreError> {
        let hash = crate::auth::hash(token);
        match &self.store {
            Some(s) => Ok(s.token(&hash)?.and_then(|p| p.parse().ok())),
            None => Ok(self.tokens.get(&hash).cloned()),
        }
    }

    /// Whether the store holds an engine snapshot (written by this core or loaded from the store).
    pub fn has_snapshot(&self) -> bool {
        self.snapshot_upto.is_some()
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }
}

/// Writes the orders changed and the transitions appended since the last flush.
fn flush(orders: &Orders, b: &crate::store::Batch<'_>) -> Result<(), CoreError> {
    for id in &orders.dirty {
        if let Some(o) = orders.get(*id) {
            b.put_order(o)?;
        }
    }
    for e in &orders.pending {
        b.append_order_event(e)?;
        b.audit(&transition_entry(e))?;
    }
    Ok(())
}

/// A transition as the audit log records it.
fn transition_entry(e: &OrderEvent) -> crate::audit::Entry {
    let from = e.from.map_or("-", |f| f.as_str());
    let mut outcome = format!("{from} -> {} ({})", e.to.as_str(), e.level.as_str());
    if let Some(r) = &e.reason {
        outcome.push_str("; reason: ");
        outcome.push_str(r);
    }
    // The core's own decisions: opening and dispatching ("system"), escalating at a deadline ("policy").
    let scope = if matches!(e.actor.as_str(), "system" | "policy") { crate::audit::SYSTEM.to_string() } else { crate::audit::Entry::scope_of(&e.actor) };
    crate::audit::Entry { at: e.at, actor: e.actor.clone(), scope, what: e.action.clone(), target: format!("order {}", e.order), outcome }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{HOUR, MINUTE};

    #[test]
    fn recent_ids_keep_an_id_as_long_as_the_window_could_let_a_duplicate_in() {
        let w = TimeWindow { ahead_minutes: 10, behind_hours: 24 };
        let mut ids = RecentIds::default();
        let t0 = 1_000 * HOUR;
        let k = |s: &str| RecentIds::key("/gaohang/E001/gate/E001-gate-01", s);
        assert_ne!(k("a"), RecentIds::key("/gaohang/E001/gate/E001-gate-02", "a"), "the source is part of the key");
        assert!(ids.insert(k("a"), t0, &w));
        // Through several rotations, until the window has passed it for good.
        let mut now = t0;
        while now <= t0 + 24 * HOUR + 10 * MINUTE {
            assert!(!ids.insert(k("a"), now, &w), "a duplicate at {} h after was taken as new", (now - t0) / HOUR);
            assert!(ids.insert(k(&format!("b{now}")), now, &w));
            now += 10 * MINUTE;
        }
        // Two generations at most: what was accepted more than two windows ago is gone.
        for j in 0..400 {
            ids.insert(k(&format!("c{j}")), now + j * 10 * MINUTE, &w);
        }
        assert!(ids.len() <= 2 * (24 * 6 + 2) + 2, "{} ids kept", ids.len());
        assert!(ids.insert(k("a"), now + 400 * 10 * MINUTE, &w), "an id long out of the window is forgotten");
    }
}
