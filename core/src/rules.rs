//! Rules as data (`assets/rules.ron`) and the engine that runs them on event time.
//!
//! The engine never reads the wall clock. Its clock is the twin's `clock.tick` (the newest one seen): no
//! device's event moves it, and the core refuses events outside [`TimeWindow`] around it before they get
//! here. Timers (absence deadlines, overflow durations, device silence) fire when a tick passes them. Late and out-of-order events: an event older than the
//! clock still updates state where it is newer than what the state holds (a late gate pass moves a
//! person's last pass forward only if it is later than the one recorded), and a timer that already fired
//! is not un-fired: its work order stays, and a later pass re-arms the timer. Events never move the clock
//! backwards.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decode::{Devices, Event};
use crate::event::{Data, ElecAlarmKind, EventType, FlatRef};
use crate::load::{DataErrors, Problems, read_ron};
use crate::time::{DAY, HOUR, HhMm, Local, MINUTE, Millis};
use crate::town::{DeviceKind, Tenure, Town};
use crate::truth::Detects;

pub use towntwin_contracts::orders::Role;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub version: u32,
    /// The event times the core accepts around its clock.
    #[serde(default)]
    pub window: TimeWindow,
    pub rules: Vec<Rule>,
}

/// How far from the core's clock an event's time may be. The clock moves only with the twin's
/// `clock.tick`; an event outside the window is rejected (`out_of_window`, dead-lettered), never applied:
/// one device stamped in 2099 or 1970 cannot move the clock, fire every timer or open orders in the past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Ahead of the clock: a device's event stamped within this many minutes after the last tick (the
    /// minute in progress, and clock skew). A tick may move the clock at most this far at once.
    pub ahead_minutes: u32,
    /// Behind the clock: late events up to this many hours old still update state.
    pub behind_hours: u32,
}

impl Default for TimeWindow {
    fn default() -> Self {
        TimeWindow { ahead_minutes: 10, behind_hours: 24 }
    }
}

impl TimeWindow {
    /// Why `t` is outside the window around `now`, if it is; any time is accepted before the first tick
    /// (`now` = 0: the clock is not set).
    pub fn check(&self, now: Millis, t: Millis) -> Option<String> {
        if now == 0 {
            return None;
        }
        let (ahead, behind) = (self.ahead_minutes as Millis * MINUTE, self.behind_hours as Millis * HOUR);
        if t > now + ahead {
            Some(format!(
                "event time {} is more than {} min ahead of the core's clock {}",
                crate::time::rfc3339(t),
                self.ahead_minutes,
                crate::time::rfc3339(now)
            ))
        } else if t < now - behind {
            Some(format!("event time {} is more than {} h behind the core's clock {}", crate::time::rfc3339(t), self.behind_hours, crate::time::rfc3339(now)))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub title: String,
    /// The town department's service code, for the medium loop.
    pub service: String,
    pub targets: Vec<Role>,
    pub kind: RuleKind,
    /// After an order for a key is closed, repeats of the condition within this many hours are counted on
    /// it instead of opening a new order (a group rental takes weeks to clear; a closed order must not
    /// spring back at the next pass through the gate). 0: a repeat after closing opens a new order.
    #[serde(default)]
    pub quiet_hours: u32,
    /// The ground-truth incident kinds this rule is meant to catch, for scoring a run (none: not scored).
    #[serde(default)]
    pub detects: Detects,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RuleKind {
    /// A registered vulnerable resident with no gate pass for `hours`; suppressed while the estate's gates
    /// are silent (a dead gate must not flood the committee).
    Absence { hours: u32 },
    /// A flat used by more than `more_than` distinct faces within `window_days`.
    DistinctFaces { window_days: u32, more_than: u32 },
    /// At least `households` households drawn at random each day at local `at` (HH:MM), seeded by date and
    /// rule id so the draw can be audited and replayed.
    DailySample {
        households: u32,
        at: HhMm,
        /// Which flats the draw is from (the sampling frame).
        #[serde(default)]
        frame: Frame,
    },
    /// One order per alarm of `event` (optionally only some codes or alarm kinds, above a confidence).
    Direct {
        event: EventType,
        #[serde(default)]
        min_confidence: f32,
        #[serde(default)]
        codes: Vec<u8>,
        #[serde(default)]
        alarms: Vec<ElecAlarmKind>,
    },
    /// `start` not followed by `end` on the same device within `minutes`.
    Duration { start: EventType, end: EventType, minutes: u32 },
    /// A device heard from no more for `factor` times its heartbeat interval.
    Silence { factor: f64, mains_minutes: u32, battery_minutes: u32 },
    /// A resident's call to the 12345 hotline (`hotline.call`). The core attaches it to the open order of a
    /// rule that detects the call's category for the same place (the same subject, for a rule that names
    /// one); otherwise it opens (or repeats) an order of this rule keyed by estate, category and subject.
    Hotline,
}

impl RuleSet {
    pub fn load(file: &Path) -> Result<RuleSet, DataErrors> {
        let set: RuleSet = read_ron(file)?;
        set.validate(file)?;
        Ok(set)
    }

    pub fn validate(&self, file: &Path) -> Result<(), DataErrors> {
        let mut p = Problems::new(file);
        p.check(
            self.window.ahead_minutes >= 1,
            || "window.ahead_minutes".into(),
            || "expected at least 1 minute: a tick must be able to move the clock".into(),
        );
        p.check(self.window.behind_hours >= 1, || "window.behind_hours".into(), || "expected at least 1 hour".into());
        let mut ids = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            p.check(!r.id.is_empty() && ids.insert(r.id.as_str()), || at("id"), || format!("rule ids must be unique and non-empty, `{}`", r.id));
            p.check(!r.targets.is_empty(), || at("targets"), || "expected at least one target role".into());
            match &r.kind {
                RuleKind::Absence { hours } => p.check(*hours >= 1, || at("kind.hours"), || "expected at least 1 hour".into()),
                RuleKind::DistinctFaces { window_days, more_than } => {
                    p.check(*window_days >= 1, || at("kind.window_days"), || "expected at least 1 day".into());
                    p.check(*more_than >= 1, || at("kind.more_than"), || "expected at least 1 face".into());
                }
                RuleKind::DailySample { households, .. } => {
                    p.check(*households >= 1, || at("kind.households"), || "expected at least 1 household".into());
                }
                RuleKind::Direct { event, min_confidence, codes, .. } => {
                    p.check(
                        *event != EventType::ClockTick && *event != EventType::DeviceHeartbeat,
                        || at("kind.event"),
                        || format!("{event:?} is not an alarm"),
                    );
                    p.check((0.0..=1.0).contains(min_confidence), || at("kind.min_confidence"), || "expected 0..=1".into());
                    p.check(codes.iter().all(|c| (1..=15).contains(c)), || at("kind.codes"), || "violation codes are 1..=15".into());
                }
                RuleKind::Duration { start, end, minutes } => {
                    p.check(start != end, || at("kind.end"), || "start and end must differ".into());
                    p.check(*minutes >= 1, || at("kind.minutes"), || "expected at least 1 minute".into());
                }
                RuleKind::Silence { factor, mains_minutes, battery_minutes } => {
                    // Bounded, so a deadline (factor x interval) always fits in event time (found by fuzzing:
                    // `inf` and `1e20` passed and overflowed the deadline).
                    p.check((1.0..=1000.0).contains(factor), || at("kind.factor"), || format!("expected a factor from 1 to 1000, got {factor}"));
                    p.check(
                        (1..=43_200).contains(mains_minutes) && (1..=43_200).contains(battery_minutes),
                        || at("kind"),
                        || "heartbeat intervals must be 1 to 43,200 minutes (30 days)".into(),
                    );
                }
                RuleKind::Hotline => {
                    let n = self.rules.iter().filter(|r| matches!(r.kind, RuleKind::Hotline)).count();
                    p.check(n == 1, || at("kind"), || format!("at most one Hotline rule (calls would open an order for each), found {n}"));
                }
            }
        }
        p.finish()
    }
}

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
    /// (estate, flat) -> faces seen with their last time. Inline up to four (most households): the engine's
    /// snapshot clones this map of ~80,000 flats, which with a heap vector each took 13-18 ms of the ingest
    /// path every snapshot (measured at 60,000 events/s). Serialised as the vector it was.
    #[serde(with = "pairs")]
    faces: FxMap<(u16, FlatRef), Faces>,
    /// (rule, device) -> start of an open condition.
    #[serde(with = "pairs")]
    open_since: FxMap<(u16, u32), Millis>,
    /// Device -> last time heard.
    #[serde(with = "pairs")]
    heard: FxMap<u32, Millis>,
    /// Gate -> its outages: when it went silent, and when it was heard again (None while silent).
    #[serde(with = "pairs")]
    gate_outages: FxMap<u32, Vec<(Millis, Option<Millis>)>>,
    timers: BTreeSet<(Millis, Timer)>,
    /// Rules whose daily sample is armed.
    #[serde(with = "pairs")]
    sampled: FxMap<u16, i64>,
    /// Current due time of each timer that is re-armed often, so re-arming is a removal, not a scan.
    #[serde(with = "pairs")]
    silence_due: FxMap<u32, Millis>,
    /// (absence rule, person) -> the deadline armed for it.
    #[serde(with = "pairs")]
    absence_due: FxMap<(u16, u32), Millis>,
    /// (estate, flat) -> its last construction-waste drop, for a sample framed on them.
    #[serde(with = "pairs", default)]
    waste_drops: FxMap<(u16, FlatRef), Millis>,
    /// Whether the register's residents are watched from the first clock tick on (see `watch_register`).
    #[serde(default)]
    watching: bool,
}

/// A flat's faces: (person, last seen).
type Faces = smallvec::SmallVec<[(u32, Millis); 4]>;

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
    /// Occupied flats per estate, for the daily sample.
    flats: Vec<Vec<FlatRef>>,
    /// Gate devices per estate.
    gates: Vec<Vec<u32>>,
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
}

/// Which event types can move rule `kind` (every type for a daily sample, which arms on the first event).
fn moved_by(kind: &RuleKind, ty: EventType) -> bool {
    match kind {
        RuleKind::Absence { .. } | RuleKind::DistinctFaces { .. } => ty == EventType::GatePass,
        RuleKind::Hotline => ty == EventType::HotlineCall,
        RuleKind::Direct { event, .. } => ty == *event,
        RuleKind::Duration { start, end, .. } => ty == *start || ty == *end,
        RuleKind::DailySample { .. } => true,
        RuleKind::Silence { .. } => false,
    }
}

impl Engine {
    pub fn new(rules: RuleSet, town: &Town) -> Engine {
        let estates: Vec<String> = town.estates.iter().map(|e| e.id.clone()).collect();
        let registered =
            town.register.iter().filter_map(|r| estates.iter().position(|e| *e == r.estate).map(|i| (r.person.0, (r.id.clone(), i as u16)))).collect();
        let flats = town
            .estates
            .iter()
            .map(|e| {
                e.buildings
                    .iter()
                    .flat_map(|b| b.rooms().filter(|f| f.tenure != Tenure::Vacant).map(move |f| FlatRef { building: b.no, room: f.room }))
                    .collect()
            })
            .collect();
        let devices = Devices::of(town);
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
        Engine { rules, ctx: Ctx { devices, estates, registered, flats, gates }, state: State::default(), blind: Vec::new(), by_type, silence }
    }

    pub fn devices(&self) -> &Devices {
        &self.ctx.devices
    }

    /// Takes only events of `exercise` from now on (see [`Devices::exercise`]).
    pub fn set_exercise(&mut self, exercise: Option<String>) {
        self.ctx.devices.exercise = exercise;
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
                RuleKind::Absence { hours } => Some((ri, hours)),
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
        let last = self.state.heard.entry(d).or_insert(t);
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

    fn apply_rule(&mut self, ri: usize, ev: &Event, out: &mut Vec<Finding>) {
        let rule = &self.rules.rules[ri];
        let dev = ev.device.and_then(|d| self.ctx.devices.list.get(d as usize));
        match (&rule.kind, &ev.data) {
            (RuleKind::Absence { hours }, Data::GatePass(g)) if self.ctx.registered.contains_key(&g.person.0) => {
                let last = self.state.last_pass.entry(g.person.0).or_insert(ev.time);
                // `>=`: a second absence rule sees the pass the first one just recorded.
                if ev.time >= *last {
                    *last = ev.time;
                    let due = ev.time + *hours as Millis * HOUR;
                    self.arm_absence(ri as u16, g.person.0, due);
                }
            }
            (RuleKind::DistinctFaces { window_days, more_than }, Data::GatePass(g)) => {
                let Some(estate) = dev.as_ref().and_then(|d| d.estate) else { return };
                let window = *window_days as Millis * DAY;
                let faces = self.state.faces.entry((estate, g.flat)).or_default();
                match faces.iter_mut().find(|f| f.0 == g.person.0) {
                    Some(f) => f.1 = f.1.max(ev.time),
                    None => faces.push((g.person.0, ev.time)),
                }
                let now = ev.time.max(self.state.now);
                faces.retain(|f| f.1 > now - window);
                if faces.len() > *more_than as usize {
                    let n = faces.len();
                    let area = self.ctx.estates[estate as usize].clone();
                    out.push(self.finding(
                        ri,
                        format!("{area}/{}", g.flat),
                        Some(estate),
                        area,
                        g.flat.to_string(),
                        ev.time,
                        format!("{n} distinct faces in {window_days} days"),
                    ));
                }
            }
            (RuleKind::Hotline, Data::Hotline(call)) => {
                let Some(area) = crate::decode::hotline_area(&ev.source) else { return };
                let estate = self.ctx.estates.iter().position(|e| e == area).map(|i| i as u16);
                let (area, about) = (area.to_string(), call.about.clone());
                out.push(self.finding(
                    ri,
                    format!("{area}/{}/{about}", call.category),
                    estate,
                    area,
                    about,
                    ev.time,
                    format!("a resident called 12345 about {}", call.category),
                ));
            }
            (RuleKind::Direct { event, min_confidence, codes, alarms }, data) if *event == ev.ty => {
                let Some(d) = dev else { return };
                let (ok, key, detail) = match data {
                    Data::Fence(f) => (
                        f.confidence >= *min_confidence && (codes.is_empty() || codes.contains(&f.code)),
                        format!("{}/{}", d.id, f.code),
                        format!("{} ({:.2})", f.violation, f.confidence),
                    ),
                    Data::ElevatorEbike(e) => (
                        e.confidence >= *min_confidence,
                        format!("{}/{}", d.id, ev.subject.map_or(String::new(), |s| s.to_string())),
                        format!("elevator {} ({:.2})", e.elevator, e.confidence),
                    ),
                    Data::ElecAlarm(a) => (
                        alarms.is_empty() || alarms.contains(&a.alarm),
                        format!("{}/B{:02}-{}/{:?}", d.area, a.building, a.room, a.alarm),
                        format!("{:?} {:.1} A", a.alarm, a.amps),
                    ),
                    Data::Smoke(s) => (true, d.id.clone(), format!("obscuration {:.1}%", s.obscuration_pct)),
                    Data::Manhole(m) => (true, d.id.clone(), format!("tilt {:.0} deg", m.tilt_deg)),
                    Data::Noise(n) => (true, format!("{}/B{:02}", d.area, n.building), format!("{} dB for {} s", n.db, n.seconds)),
                    Data::Fault(f) => (true, d.id.clone(), format!("{:?}", f.fault)),
                    _ => (true, format!("{}/{}", d.id, ev.id), String::new()),
                };
                if ok {
                    // A fence order is about a camera's view of one kind of violation: its key.
                    let subject = match data {
                        Data::Fence(_) => key.clone(),
                        _ => ev.subject.map_or(d.id.clone(), |s| s.to_string()),
                    };
                    out.push(self.finding(ri, key, d.estate, d.area.clone(), subject, ev.time, detail));
                }
            }
            (RuleKind::Duration { start, end, minutes }, _) => {
                let Some(d) = ev.device else { return };
                if ev.ty == *start {
                    if let std::collections::hash_map::Entry::Vacant(e) = self.state.open_since.entry((ri as u16, d)) {
                        e.insert(ev.time);
                        self.state.timers.insert((ev.time + *minutes as Millis * MINUTE, Timer::Duration(ri as u16, d)));
                    }
                } else if ev.ty == *end
                    && let Some(since) = self.state.open_since.remove(&(ri as u16, d))
                {
                    self.state.timers.remove(&(since + *minutes as Millis * MINUTE, Timer::Duration(ri as u16, d)));
                }
            }
            (RuleKind::DailySample { at, frame, .. }, data) => {
                // A sample framed on construction waste remembers each flat's last drop.
                if let (Frame::WasteDrops { .. }, Data::ConstructionDrop(c), Some(estate)) = (frame, data, dev.and_then(|d| d.estate)) {
                    let last = self.state.waste_drops.entry((estate, c.flat)).or_insert(ev.time);
                    *last = (*last).max(ev.time);
                }
                if self.state.sampled.contains_key(&(ri as u16)) {
                    return;
                }
                // Armed on the first event at the next `at`; each draw re-arms it for the next day.
                let ri16 = ri as u16;
                let base = self.state.now.max(ev.time);
                let mut due = Local::of(base).midnight() + at.millis();
                if due <= base {
                    due += DAY;
                }
                self.state.sampled.insert(ri16, i64::MIN);
                self.state.timers.insert((due, Timer::Sample(ri16)));
            }
            _ => {}
        }
    }

    fn advance_to(&mut self, now: Millis, out: &mut Vec<Finding>) {
        if now <= self.state.now {
            return;
        }
        self.state.now = now;
        while let Some(&(due, timer)) = self.state.timers.first() {
            if due > now {
                break;
            }
            self.state.timers.pop_first();
            self.fire(due, timer, out);
        }
    }

    fn fire(&mut self, due: Millis, timer: Timer, out: &mut Vec<Finding>) {
        match timer {
            Timer::Absence(ri16, person) => {
                let ri = ri16 as usize;
                let Some(RuleKind::Absence { hours }) = self.rules.rules.get(ri).map(|r| &r.kind) else { return };
                let hours = *hours as Millis * HOUR;
                let Some((reg, estate)) = self.ctx.registered.get(&person).cloned() else { return };
                let last = self.state.last_pass.get(&person).copied().unwrap_or(due);
                // Suppressed while the estate's gates were silent: the order needs `hours` of absence with
                // working gates, so a window that overlaps an outage is re-armed from the outage's end.
                let window_start = due - hours;
                // Of the estate's gates' outages overlapping the window, the one that ended last (or goes on).
                let overlapping = self.ctx.gates[estate as usize]
                    .iter()
                    .filter_map(|g| self.state.gate_outages.get(g))
                    .flat_map(|l| l.iter())
                    .filter(|(from, to)| *from < due && to.is_none_or(|t| t > window_start))
                    .map(|(_, to)| to.unwrap_or(Millis::MAX))
                    .max();
                if let Some(end) = overlapping {
                    // Still down: look again in an hour; back: a full window from its return.
                    let next = if end == Millis::MAX { due + HOUR } else { end + hours };
                    self.state.absence_due.insert((ri16, person), next);
                    self.state.timers.insert((next, Timer::Absence(ri16, person)));
                    return;
                }
                let area = self.ctx.estates[estate as usize].clone();
                let hours = (due - last) / HOUR;
                out.push(self.finding(
                    ri,
                    reg.clone(),
                    Some(estate),
                    area,
                    reg,
                    due,
                    format!("no gate pass for {hours} h (since {})", crate::time::rfc3339(last)),
                ));
            }
            Timer::Duration(ri, d) => {
                let Some(&since) = self.state.open_since.get(&(ri, d)) else { return };
                let Some(dev) = self.ctx.devices.list.get(d as usize).cloned() else { return };
                let mins = (due - since) / MINUTE;
                out.push(self.finding(ri as usize, format!("{}@{since}", dev.id), dev.estate, dev.area, dev.id, due, format!("open for {mins} min")));
            }
            Timer::Silence(d) => {
                if self.state.silence_due.get(&d) == Some(&due) {
                    self.state.silence_due.remove(&d);
                }
                // Heard since the timer was armed: the silence is due later (the timer moves on lazily).
                if let (Some(&last), Some(after)) = (self.state.heard.get(&d), self.silence_after(d))
                    && last + after > due
                {
                    self.arm_silence(d, last + after);
                    return;
                }
                let Some(ri) = self.rules.rules.iter().position(|r| matches!(r.kind, RuleKind::Silence { .. })) else { return };
                let Some(dev) = self.ctx.devices.list.get(d as usize).cloned() else { return };
                let mut note = String::new();
                match self.blind_recheck(d, due) {
                    Blindness::LookAgain(again) => {
                        self.arm_silence(d, again);
                        return;
                    }
                    Blindness::Unsure(from) => {
                        note =
                            format!("; the core has heard no live (QoS 0) message since its feed broke at {}, so it may be its own", crate::time::rfc3339(from))
                    }
                    Blindness::No => {}
                }
                if dev.kind == DeviceKind::Gate {
                    let list = self.state.gate_outages.entry(d).or_default();
                    if list.last().is_none_or(|l| l.1.is_some()) {
                        list.push((self.state.heard.get(&d).copied().unwrap_or(due), None));
                    }
                }
                let last = self.state.heard.get(&d).copied().unwrap_or(due);
                out.push(self.finding(
                    ri,
                    format!("{}@{last}", dev.id),
                    dev.estate,
                    dev.area,
                    dev.id,
                    due,
                    format!("silent since {}{note}", crate::time::rfc3339(last)),
                ));
            }
            Timer::Sample(ri) => {
                let (n, at, frame) = match &self.rules.rules[ri as usize].kind {
                    RuleKind::DailySample { households, at, frame } => (*households, *at, *frame),
                    _ => return,
                };
                // The next draw is the first `at` after the clock, not the day after this one: a timer armed
                // by an event stamped long before the first tick would otherwise catch up one draw a day,
                // decades of them (found by fuzzing: a 1970 heartbeat then a 2026 tick, 23 s and 1 GB).
                let now = self.state.now.max(due);
                let today = Local::of(now).midnight() + at.millis();
                if due + DAY <= now {
                    // A day long gone: nobody can check those flats on that day any more. The latest draw at
                    // or before the clock is still due: armed there, it fires in this same advance.
                    let latest = if today <= now { today } else { today - DAY };
                    self.state.timers.insert((latest.max(due + 1), Timer::Sample(ri)));
                    return;
                }
                let next = if today > now { today } else { today + DAY };
                self.state.timers.insert((next, Timer::Sample(ri)));
                let day = Local::of(due).day;
                self.state.sampled.insert(ri, day);
                let rule_id = self.rules.rules[ri as usize].id.clone();
                let mut drawn = Vec::with_capacity(n as usize);
                if let Frame::WasteDrops { within_days } = frame {
                    // Drops older than the frame's days are forgotten; the rest, in a fixed order, are the
                    // flagged flats, drawn from first.
                    let since = due - within_days as Millis * DAY;
                    self.state.waste_drops.retain(|_, t| *t >= since);
                    let mut flagged: Vec<(u16, FlatRef)> = self.state.waste_drops.keys().copied().collect();
                    flagged.sort();
                    let by_estate: Vec<Vec<FlatRef>> =
                        (0..self.ctx.flats.len() as u16).map(|e| flagged.iter().filter(|(fe, _)| *fe == e).map(|(_, f)| *f).collect()).collect();
                    drawn = sample(&by_estate, &rule_id, day, n as usize);
                }
                if drawn.len() < n as usize {
                    // The frame-less draw, less the flats already drawn (so without a flagged flat it is the
                    // `All` draw itself).
                    for x in sample(&self.ctx.flats, &rule_id, day, n as usize + drawn.len()) {
                        if drawn.len() >= n as usize {
                            break;
                        }
                        if !drawn.contains(&x) {
                            drawn.push(x);
                        }
                    }
                }
                for (estate, flat) in drawn {
                    let area = self.ctx.estates[estate as usize].clone();
                    let date = Local::of(due).date_string();
                    out.push(self.finding(
                        ri as usize,
                        format!("{date}/{area}/{flat}"),
                        Some(estate),
                        area,
                        flat.to_string(),
                        due,
                        format!("renovation spot check drawn for {date}"),
                    ));
                }
            }
        }
    }
}

/// The day's draw: `n` distinct occupied flats, seeded by (rule id, local day) only, so anyone can
/// replay it from the rule and the date.
pub fn sample(flats: &[Vec<FlatRef>], rule: &str, day: i64, n: usize) -> Vec<(u16, FlatRef)> {
    let all: Vec<(u16, FlatRef)> = flats.iter().enumerate().flat_map(|(e, l)| l.iter().map(move |f| (e as u16, *f))).collect();
    if all.is_empty() {
        return Vec::new();
    }
    // SplitMix64 over a seed from the rule and the day: small, portable and documented.
    let mut x =
        rule.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)) ^ (day as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut chosen = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    while chosen.len() < n.min(all.len()) {
        let i = (next() % all.len() as u64) as usize;
        if seen.insert(i) {
            chosen.push(all[i]);
        }
    }
    chosen
}

/// The flats a daily sample draws from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Every occupied flat alike.
    #[default]
    All,
    /// Flats that dropped construction waste (a `construction.drop` naming the flat) within the last
    /// `within_days` come first, in a draw of their own; the rest of the day's households are drawn from all
    /// flats as with `All`.
    WasteDrops { within_days: u32 },
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

    #[test]
    fn a_daily_sample_time_is_read_once_and_a_bad_one_is_a_located_error() {
        let text =
            "(version: 1, rules: [(id: \"s\", title: \"t\", service: \"housing\", targets: [Property],\n kind: DailySample(households: 20, at: \"09:00\"))])";
        let set: RuleSet = crate::load::parse_ron(Path::new("rules.ron"), text).unwrap();
        assert!(matches!(set.rules[0].kind, RuleKind::DailySample { at, .. } if at.minutes() == 9 * 60));
        let e = crate::load::parse_ron::<RuleSet>(Path::new("rules.ron"), &text.replace("09:00", "25:00")).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.field.as_deref().is_some_and(|f| f.starts_with("rules[0].kind") && f.ends_with(".at")), "{e}");
        assert!(e.message.contains("`25:00` is not a time HH:MM"), "{e}");
    }
}
