//! The engine: the state the rules keep, their timers, and the clock they run on (event time only).
//! What each rule kind does with an event or a due timer is in [`kinds`].

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{RuleKind, RuleSet};
use crate::decode::{Devices, Event};
use crate::event::{Data, EventType, FlatRef};
use crate::time::{DAY, HOUR, Local, MINUTE, Millis};
use crate::town::{DeviceKind, Tenure, Town};

mod faces;
mod flats;
mod kinds;

use faces::Faces;
use flats::{FlatIndex, FlatMap};

/// What a rule decided: open (or count again) a work order keyed by (rule, key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: String,
    /// Dedup key within the rule: repeats of the same condition share it.
    pub key: String,
    pub area: String,
    pub estate: Option<u16>,
    pub subject: String,
    /// Event time of the condition.
    pub at: Millis,
    pub detail: String,
}

/// Timers, ordered by due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Timer {
    /// (rule, registered person): each absence rule keeps its own deadline and fires under its own id.
    Absence(u16, u32),
    Duration(u16, u32),
    Silence(u32),
    Sample(u16),
}

/// Everything the engine remembers; serialisable so it survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub now: Millis,
    /// Registered person -> last pass.
    #[serde(with = "pairs")]
    last_pass: FxMap<u32, Millis>,
    /// (estate, flat) -> faces seen with their last time. Most in one cache line each ([`Faces`]): the
    /// engine's snapshot clones this map of ~80,000 flats, which with a heap vector each took 13-18 ms of
    /// the ingest path every snapshot (measured at 60,000 events/s). Serialised as the vector it was.
    faces: FlatMap<Faces>,
    /// (rule, device) -> start of an open condition.
    #[serde(with = "pairs")]
    open_since: FxMap<(u16, u32), Millis>,
    /// Device -> last time heard.
    heard: Dense<Millis>,
    /// Gate -> its outages: when it went silent, and when it was heard again (None while silent).
    #[serde(with = "pairs")]
    gate_outages: FxMap<u32, Vec<(Millis, Option<Millis>)>>,
    timers: BTreeSet<(Millis, Timer)>,
    /// Rules whose daily sample is armed.
    #[serde(with = "pairs")]
    sampled: FxMap<u16, i64>,
    /// Current due time of each timer that is re-armed often, so re-arming is a removal, not a scan.
    silence_due: Dense<Millis>,
    /// (absence rule, person) -> the deadline armed for it.
    #[serde(with = "pairs")]
    absence_due: FxMap<(u16, u32), Millis>,
    /// (estate, flat) -> its last construction-waste drop, for a sample framed on them.
    #[serde(with = "pairs", default)]
    waste_drops: FxMap<(u16, FlatRef), Millis>,
    /// Whether the register's residents are watched from the first clock tick on (see `watch_register`).
    #[serde(default)]
    watching: bool,
    /// Registered person -> the last sign of life at home (water used, the flat's door opened), for a fused
    /// absence rule. Last, so that a format-2 snapshot (without it) reads as this one with none.
    #[serde(with = "pairs", default)]
    home_signs: FxMap<u32, Millis>,
    /// (wrong-sorts rule, estate, flat) -> the times of the flat's drops flagged as wrongly sorted since
    /// that rule's last finding about it (each rule keeps its own count). Last, so that a format-3 snapshot
    /// (without it) reads as this one with none.
    #[serde(with = "pairs", default)]
    missorts: FxMap<(u16, u16, FlatRef), Vec<Millis>>,
}

/// A map keyed by a device's index in the core's registry (dense, below the registry's size), as a vector:
/// two of these are on every event's path, and a hash map's probe was most of what hearing a device cost.
/// Serialised as the sorted pairs a map of the engine's is ([`pairs`]), so snapshots are unchanged.
#[derive(Debug, Clone, Default)]
struct Dense<V>(Vec<Option<V>>);

/// Above any registry's device count (the town has under 10,000): a snapshot naming a device past it is
/// corrupt, not a reason to allocate gigabytes (one just under it still costs some 256 MiB).
const DENSE_MAX: u32 = 1 << 24;

impl<V: Copy> Dense<V> {
    fn get(&self, k: &u32) -> Option<&V> {
        self.0.get(*k as usize)?.as_ref()
    }

    fn slot(&mut self, k: u32) -> &mut Option<V> {
        let i = k as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, None);
        }
        &mut self.0[i]
    }

    fn insert(&mut self, k: u32, v: V) -> Option<V> {
        self.slot(k).replace(v)
    }

    fn remove(&mut self, k: &u32) -> Option<V> {
        self.0.get_mut(*k as usize)?.take()
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &V)> {
        self.0.iter().enumerate().filter_map(|(i, v)| Some((i as u32, v.as_ref()?)))
    }
}

/// Equal when they hold the same pairs (a vector may end in empty slots).
impl<V: Copy + PartialEq> PartialEq for Dense<V> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<V: Copy + Serialize> Serialize for Dense<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.iter().collect::<Vec<_>>().serialize(s)
    }
}

impl<'de, V: Copy + Deserialize<'de>> Deserialize<'de> for Dense<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = Dense(Vec::new());
        for (k, v) in Vec::<(u32, V)>::deserialize(d)? {
            if k >= DENSE_MAX {
                return Err(serde::de::Error::custom(format!("device index {k} out of range")));
            }
            m.insert(k, v);
        }
        Ok(m)
    }
}

/// A hash map with the Fx hash: the rules' keys are small integers from the twin's registry, not
/// attacker-chosen strings, and this map is on every event's path.
type FxMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// The town facts the rules need.
#[derive(Debug, Clone)]
struct Ctx {
    devices: Devices,
    estates: Vec<String>,
    /// Registered person -> (register id, estate).
    registered: FxMap<u32, (String, u16)>,
    /// A registered resident's water meter and door sensor (device index) -> the resident.
    home_devices: FxMap<u32, u32>,
    /// Occupied flats per estate, for the daily sample.
    flats: Vec<Vec<FlatRef>>,
    /// Gate devices per estate.
    gates: Vec<Vec<u32>>,
    /// The town's flats numbered, for the state's maps keyed by flat.
    flat_index: std::sync::Arc<FlatIndex>,
}

/// How long after the core's feed broke, in event time, a silence is still put down to the core's own
/// blindness while no live message has come in (see [`Engine::blind`]).
pub const BLIND_OPEN_LIMIT: Millis = 24 * HOUR;

/// What a blind span means for a silence that is due.
enum Blindness {
    /// Not blind over the silence.
    No,
    /// Blind over part of it: look again then.
    LookAgain(Millis),
    /// Still blind since then, for longer than [`BLIND_OPEN_LIMIT`]: fire, and say so.
    Unsure(Millis),
}

/// Runs a rule set over decoded events.
#[derive(Debug, Clone)]
pub struct Engine {
    pub rules: RuleSet,
    ctx: Ctx,
    /// What the rules remember. A snapshot's is taken up with [`Engine::restore`], which keys its flats by
    /// the town's numbering (one assigned here directly works, with its flats in a hash map).
    pub state: State,
    /// When the core itself was not listening, in event time: from its clock when its feed broke (a
    /// restart, a lost connection) to the first live message after (None while it is still blind).
    /// QoS 0 messages of that time (heartbeats) were dropped by the broker, not by the devices, so a
    /// silence that overlaps such a span is counted again from its end. Kept by the service in its store.
    pub blind: Vec<(Millis, Option<Millis>)>,
    /// Per event type (by its index in [`EventType::ALL`]), the rules an event of that type can move:
    /// a gate pass visits the gate rules, not all of them.
    by_type: Vec<Vec<u16>>,
    /// The silence rule's (factor, mains minutes, battery minutes), if the set has one.
    silence: Option<(f64, u32, u32)>,
    /// Whether the set has a QR rule, which then takes the QR reports from the hotline rule.
    qr_rule: bool,
    /// Whether the set has a distinct-faces rule (see [`Engine::warm`]).
    counts_faces: bool,
}

/// Which event types can move rule `kind` (every type for a daily sample, which arms on the first event).
fn moved_by(kind: &RuleKind, ty: EventType) -> bool {
    match kind {
        RuleKind::Absence { home_quiet_hours: Some(_), .. } => matches!(ty, EventType::GatePass | EventType::WaterReading | EventType::DoorOpen),
        RuleKind::Absence { .. } | RuleKind::DistinctFaces { .. } => ty == EventType::GatePass,
        RuleKind::Hotline | RuleKind::Qr => ty == EventType::HotlineCall,
        RuleKind::WrongSorts { .. } => ty == EventType::BinDrop,
        RuleKind::Direct { event, .. } => ty == *event,
        RuleKind::Duration { start, end, .. } => ty == *start || ty == *end,
        RuleKind::DailySample { .. } => true,
        RuleKind::Silence { .. } => false,
    }
}

impl Engine {
    pub fn new(rules: RuleSet, town: &Town) -> Engine {
        let estates: Vec<String> = town.estates.iter().map(|e| e.id.clone()).collect();
        // An estate the platform does not cover has no register and no sampling frame (its devices, not
        // installed, send nothing).
        let registered = town
            .register
            .iter()
            .filter(|r| town.covers(&r.estate))
            .filter_map(|r| estates.iter().position(|e| *e == r.estate).map(|i| (r.person.0, (r.id.clone(), i as u16))))
            .collect();
        let flats = town
            .estates
            .iter()
            .map(|e| {
                let covered = town.covers(&e.id);
                e.buildings
                    .iter()
                    .filter(move |_| covered)
                    .flat_map(|b| b.rooms().filter(|f| f.tenure != Tenure::Vacant).map(move |f| FlatRef { building: b.no, room: f.room }))
                    .collect()
            })
            .collect();
        let devices = Devices::of(town);
        let home_devices = town
            .register
            .iter()
            .flat_map(|r| [&r.water_meter, &r.door_sensor].map(|d| devices.index.get(d.as_str()).map(|&i| (i, r.person.0))))
            .flatten()
            .collect();
        let mut gates = vec![Vec::new(); estates.len()];
        for (i, d) in devices.list.iter().enumerate() {
            if let (DeviceKind::Gate, Some(e)) = (d.kind, d.estate) {
                gates[e as usize].push(i as u32);
            }
        }
        let by_type =
            EventType::ALL.iter().map(|&ty| rules.rules.iter().enumerate().filter(|(_, r)| moved_by(&r.kind, ty)).map(|(i, _)| i as u16).collect()).collect();
        let silence = rules.rules.iter().find_map(|r| match r.kind {
            RuleKind::Silence { factor, mains_minutes, battery_minutes } => Some((factor, mains_minutes, battery_minutes)),
            _ => None,
        });
        let qr_rule = rules.rules.iter().any(|r| matches!(r.kind, RuleKind::Qr));
        let counts_faces = rules.rules.iter().any(|r| matches!(r.kind, RuleKind::DistinctFaces { .. }));
        let flat_index = std::sync::Arc::new(FlatIndex::of(town));
        let mut state = State::default();
        state.faces.index_by(flat_index.clone());
        Engine {
            rules,
            ctx: Ctx { devices, estates, registered, home_devices, flats, gates, flat_index },
            state,
            blind: Vec::new(),
            by_type,
            silence,
            qr_rule,
            counts_faces,
        }
    }

    /// Readies what the rules will look up for `events`, about to be applied: reads, each independent of
    /// the others, what each event's device and, with a rule that counts faces, each gate pass's flat will
    /// need, so that the processor fetches them from memory together instead of one after another as the
    /// events come (each was a cache miss: a fifth of a replication-day waited on them). Changes nothing.
    pub fn warm<'a>(&self, events: impl Iterator<Item = &'a Event>) {
        let devices = &self.ctx.devices.list;
        let mut seen = 0usize;
        for ev in events {
            let Some(d) = ev.device else { continue };
            let Some(entry) = devices.get(d as usize) else { continue };
            seen += entry.kind as usize;
            seen += self.state.heard.get(&d).is_some() as usize + self.state.silence_due.get(&d).is_some() as usize;
            if let (true, Data::GatePass(g), Some(estate)) = (self.counts_faces, &ev.data, entry.estate) {
                seen += self.state.faces.touch(estate, g.flat);
            }
        }
        std::hint::black_box(seen);
    }

    /// Takes up `state` (a snapshot's) as the engine's own.
    pub fn restore(&mut self, mut state: State) {
        state.faces.index_by(self.ctx.flat_index.clone());
        self.state = state;
    }

    pub fn devices(&self) -> &Devices {
        &self.ctx.devices
    }

    /// Takes only events of `exercise` from now on (see [`Devices::exercise`]).
    pub fn set_exercise(&mut self, exercise: Option<String>) {
        self.ctx.devices.exercise = exercise;
    }

    /// Takes the events of the town `ns` (its topic root and source prefix).
    pub fn set_namespace(&mut self, ns: crate::event::Namespace) {
        self.ctx.devices.ns = ns;
    }

    /// Applies one event; returns what the rules found (with a clock tick, the timers due by its time).
    /// Only the twin's `clock.tick` moves the clock: a device's event updates state at its own time, and
    /// its timers fire at the next tick that passes them.
    pub fn apply(&mut self, ev: &Event) -> Vec<Finding> {
        let mut out = Vec::new();
        if ev.ty == EventType::ClockTick && ev.time > self.state.now {
            if !self.state.watching {
                self.watch_register(ev.time);
            }
            self.advance_to(ev.time, &mut out);
        }
        if let Some(d) = ev.device {
            self.hear(d, ev.time);
        }
        let rules = std::mem::take(&mut self.by_type[ev.ty as usize]);
        for &ri in &rules {
            self.apply_rule(ri as usize, ev, &mut out);
        }
        self.by_type[ev.ty as usize] = rules;
        out
    }

    /// The first clock tick starts the watch over the register: every registered resident the core has not
    /// yet seen pass a gate is taken as last seen then, so one who stays in from the start is missed after
    /// `hours` like any other (not only from a first pass that may never come).
    fn watch_register(&mut self, at: Millis) {
        self.state.watching = true;
        let mut people: Vec<u32> = self.ctx.registered.keys().copied().filter(|p| !self.state.last_pass.contains_key(p)).collect();
        people.sort_unstable();
        for p in &people {
            self.state.last_pass.insert(*p, at);
        }
        let absences: Vec<(usize, u32)> = self
            .rules
            .rules
            .iter()
            .enumerate()
            .filter_map(|(ri, r)| match r.kind {
                RuleKind::Absence { hours, .. } => Some((ri, hours)),
                _ => None,
            })
            .collect();
        for (ri, hours) in absences {
            for &p in &people {
                self.arm_absence(ri as u16, p, at + hours as Millis * HOUR);
            }
        }
    }

    /// Sets absence rule `ri`'s deadline for `person` to `due`, replacing the one armed before.
    fn arm_absence(&mut self, ri: u16, person: u32, due: Millis) {
        if let Some(old) = self.state.absence_due.insert((ri, person), due) {
            self.state.timers.remove(&(old, Timer::Absence(ri, person)));
        }
        self.state.timers.insert((due, Timer::Absence(ri, person)));
    }

    /// Moves the event-time clock forward (a clock tick), firing due timers.
    pub fn advance(&mut self, now: Millis) -> Vec<Finding> {
        let mut out = Vec::new();
        self.advance_to(now, &mut out);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(&self, ri: usize, key: String, estate: Option<u16>, area: String, subject: String, at: Millis, detail: String) -> Finding {
        Finding { rule: self.rules.rules[ri].id.clone(), key, area, estate, subject, at, detail }
    }

    /// The core stopped listening at its clock's time (if it has one and is not blind already).
    /// Returns the span's start when a new span was opened.
    pub fn blind_from_now(&mut self) -> Option<Millis> {
        let now = self.state.now;
        if now == 0 || self.blind.last().is_some_and(|b| b.1.is_none()) {
            return None;
        }
        self.blind.push((now, None));
        Some(now)
    }

    /// A live message at `t` ends the open blind span, if any. Returns the span when one was closed.
    pub fn live_at(&mut self, t: Millis) -> Option<(Millis, Millis)> {
        let last = self.blind.last_mut()?;
        if last.1.is_some() {
            return None;
        }
        let until = t.max(last.0);
        last.1 = Some(until);
        Some((last.0, until))
    }

    /// How long device `d` may stay silent before the silence rule fires, if there is such a rule.
    fn silence_after(&self, d: u32) -> Option<Millis> {
        let (factor, mains, battery) = self.silence?;
        let entry = self.ctx.devices.list.get(d as usize)?;
        let minutes = if entry.kind.battery_powered() { battery } else { mains };
        Some(((minutes as f64 * factor) as Millis).saturating_mul(MINUTE))
    }

    fn hear(&mut self, d: u32, t: Millis) {
        let last = self.state.heard.slot(d).get_or_insert(t);
        if t > *last {
            *last = t;
        }
        // A gate heard again ends its outage.
        if let Some(list) = self.state.gate_outages.get_mut(&d)
            && let Some(last) = list.last_mut()
            && last.1.is_none()
            && t >= last.0
        {
            last.1 = Some(t);
        }
        if let Some(after) = self.silence_after(d) {
            let want = self.state.heard.get(&d).copied().unwrap_or(t) + after;
            // A timer armed for earlier is left where it is, and moved on when it comes due (see `fire`):
            // a heartbeat then costs no re-arming. One armed for later is brought forward now.
            match self.state.silence_due.get(&d) {
                Some(&armed) if armed <= want => {}
                _ => self.arm_silence(d, want),
            }
        }
    }

    fn arm_silence(&mut self, d: u32, due: Millis) {
        if let Some(old) = self.state.silence_due.insert(d, due) {
            self.state.timers.remove(&(old, Timer::Silence(d)));
        }
        self.state.timers.insert((due, Timer::Silence(d)));
    }

    /// Whether device `d`'s silence up to `due` may be the core's own blindness. With a closed span, the
    /// silence is counted again from its end. With one still open (no live message yet), the check steps on
    /// for up to [`BLIND_OPEN_LIMIT`] after the span began; past that the order is opened and says so.
    fn blind_recheck(&self, d: u32, due: Millis) -> Blindness {
        let (Some(last), Some(after)) = (self.state.heard.get(&d).copied(), self.silence_after(d)) else { return Blindness::No };
        let Some(&(from, until)) = self.blind.iter().rev().find(|(from, until)| *from < due && until.is_none_or(|u| u > last)) else { return Blindness::No };
        match until {
            Some(until) if until + after > due => Blindness::LookAgain(until + after),
            Some(_) => Blindness::No,
            None if due < from + BLIND_OPEN_LIMIT => Blindness::LookAgain(due + after),
            None => Blindness::Unsure(from),
        }
    }
}

/// Maps as sorted lists of pairs: JSON object keys must be strings, and sorting keeps snapshots stable.
mod pairs {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, Hash};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize + Ord + Hash, V: Serialize, H, S: Serializer>(m: &HashMap<K, V, H>, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<(&K, &V)> = m.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.serialize(s)
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Eq + Hash, V: Deserialize<'de>, H: BuildHasher + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<K, V, H>, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device map reads and writes as the sorted pairs a hash map of the engine's does, compares by its
    /// pairs, and refuses a device index past any registry's (a corrupt snapshot).
    #[test]
    fn a_dense_map_is_written_as_sorted_pairs_and_refuses_an_absurd_index() {
        let mut m = Dense::default();
        m.insert(7, 70_i64);
        m.insert(2, 20);
        m.insert(9, 90);
        assert_eq!(m.remove(&9), Some(90));
        let written = serde_json::to_string(&m).unwrap();
        let as_map: FxMap<u32, i64> = [(7, 70), (2, 20)].into_iter().collect();
        #[derive(Serialize)]
        struct Old<'a>(#[serde(with = "pairs")] &'a FxMap<u32, i64>);
        assert_eq!(written, serde_json::to_string(&Old(&as_map)).unwrap(), "the same bytes as the hash map it replaced");
        let back: Dense<i64> = serde_json::from_str(&written).unwrap();
        assert_eq!(back, m, "equal though one ends in an empty slot");
        assert_eq!((back.get(&2), back.get(&3), back.get(&1_000_000)), (Some(&20), None, None));
        let err = serde_json::from_str::<Dense<i64>>(&format!("[[{DENSE_MAX},1]]")).unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
    }
}
