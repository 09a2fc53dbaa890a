//! Components and resources every plugin shares: the clock, the device registry and device health,
//! households and residents, the agenda of scheduled actions, the outbox of events and the ground truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use serde::Serialize;
use towntwin_contracts::event::{Data, EventType, FlatRef, Line, SmolStr};
use towntwin_contracts::time::{DAY, MINUTE, Millis, rfc3339};
use towntwin_contracts::town::{DeviceKind, Tenure, Town};
use towntwin_contracts::truth::IncidentKind;

use crate::rng::{Rng, pair, stream};
use crate::scenario::Scenario;

/// The scenario being run, and its seed.
#[derive(Resource, Debug, Clone)]
pub struct Params {
    pub scenario: Scenario,
    pub seed: u64,
}

impl Params {
    /// A stream for `purpose` on simulated day `day` for a stable `id`.
    pub fn rng(&self, purpose: &str, id: u64, day: u32) -> Rng {
        stream(self.seed, purpose, pair(id, day as u64))
    }
}

/// What most systems read: the clock, the scenario being run and the device registry.
#[derive(SystemParam)]
pub struct Ctx<'w> {
    pub clock: Res<'w, Clock>,
    pub params: Res<'w, Params>,
    pub reg: Res<'w, Registry>,
}

/// What systems record: the incidents that really happen, and the events devices send about them.
#[derive(SystemParam)]
pub struct Record<'w> {
    pub truth: ResMut<'w, GroundTruth>,
    pub outbox: ResMut<'w, Outbox>,
}

/// Simulated time. One `App::update` is one tick of one simulated minute, covering `[now, now + 1 min)`.
#[derive(Resource, Debug, Clone)]
pub struct Clock {
    pub start: Millis,
    pub end: Millis,
    pub now: Millis,
    pub tick: u64,
    /// True on the first tick of each simulated day.
    pub day_start: bool,
    /// Days since the start, 0-based.
    pub day: u32,
    started: bool,
}

impl Clock {
    pub const TICK: Millis = MINUTE;

    pub fn new(start: Millis, days: u32) -> Clock {
        Clock { start, end: start + days as Millis * DAY, now: start, tick: 0, day_start: true, day: 0, started: false }
    }

    /// Advances to the next tick (the first call stays on the start).
    pub fn advance(&mut self) {
        if self.started {
            self.now += Self::TICK;
            self.tick += 1;
        }
        self.started = true;
        let since = self.now - self.start;
        self.day = (since / DAY) as u32;
        self.day_start = since % DAY == 0;
    }

    pub fn finished(&self) -> bool {
        self.started && self.now + Self::TICK >= self.end
    }

    /// Start of the current simulated day.
    pub fn day_begin(&self) -> Millis {
        self.start + self.day as Millis * DAY
    }
}

/// Static facts of one device, indexed by its position in [`Registry::devices`].
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Inline (ids and areas are short), so that naming a device for its events reads the registry's one
    /// array, not a string elsewhere on the heap (a cache miss an event).
    pub id: SmolStr,
    pub kind: DeviceKind,
    /// Estate or road id.
    pub area: SmolStr,
    /// Estate index, or `u16::MAX` for road devices.
    pub estate: u16,
    pub building: Option<u16>,
    pub elevator: Option<u8>,
}

/// Device index `u32`, as stored in actions and events.
pub type Dev = u32;
/// The pseudo-device of the twin's own clock.
pub const CLOCK_DEVICE: Dev = u32::MAX;
/// The estates' report lines' pseudo-devices: `HOTLINE_BASE + line x LINE_STRIDE + estate index`, the 12345
/// hotline first (so its numbers are `HOTLINE_BASE + estate index`), then the QR code and the patrol.
pub const HOTLINE_BASE: Dev = 0xFFFF_0000;
const LINE_STRIDE: Dev = 0x1000;

/// The pseudo-device of `line` in estate `estate`.
pub fn line_device(line: Line, estate: usize) -> Dev {
    let l = Line::ALL.iter().position(|x| *x == line).unwrap_or(0) as Dev;
    HOTLINE_BASE + l * LINE_STRIDE + estate as Dev
}

/// The line and estate index of a report line's pseudo-device (`dev >= HOTLINE_BASE`, not the clock).
pub fn line_of(dev: Dev) -> (Line, usize) {
    let off = dev - HOTLINE_BASE;
    (Line::ALL[((off / LINE_STRIDE) as usize).min(Line::ALL.len() - 1)], (off % LINE_STRIDE) as usize)
}

/// Device registry and lookups by place.
#[derive(Resource, Debug, Default)]
pub struct Registry {
    pub devices: Vec<DeviceInfo>,
    pub entity: Vec<Entity>,
    pub estate_ids: Vec<String>,
    pub by_estate_kind: HashMap<(u16, DeviceKind), Vec<Dev>>,
    pub by_building_kind: HashMap<(u16, u16, DeviceKind), Vec<Dev>>,
    pub detector: HashMap<(u16, u16, u8), Dev>,
    pub by_id: HashMap<String, Dev>,
    pub cameras_by_road: Vec<Vec<Dev>>,
    pub buildings: Vec<Vec<(u16, u8, u8)>>,
}

impl Registry {
    pub fn of(&self, estate: u16, kind: DeviceKind) -> &[Dev] {
        self.by_estate_kind.get(&(estate, kind)).map_or(&[], |v| v.as_slice())
    }
    pub fn in_building(&self, estate: u16, building: u16, kind: DeviceKind) -> &[Dev] {
        self.by_building_kind.get(&(estate, building, kind)).map_or(&[], |v| v.as_slice())
    }
}

/// The town registry as loaded.
#[derive(Resource, Debug, Clone)]
pub struct TownData(pub Town);

/// A device's health. Offline devices say nothing; stuck sensors report a frozen reading.
#[derive(Component, Debug, Clone)]
pub struct Health {
    pub online: bool,
    pub stuck: bool,
    /// Battery percentage, for battery-powered devices.
    pub battery: Option<f32>,
    /// Percentage points a day the battery loses (its life drawn once, at set-up).
    pub drain_per_day: f32,
    pub low_battery: bool,
    pub next_heartbeat: Millis,
    pub down_since: Millis,
    pub until: Millis,
    pub incident: Option<usize>,
    pub battery_incident: Option<usize>,
}

impl Health {
    /// True when the device reports at all.
    pub fn reports(&self) -> bool {
        self.online
    }
    /// True when the device reports what it really senses.
    pub fn senses(&self) -> bool {
        self.online && !self.stuck
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    Child,
    Adult,
    Senior,
}

/// A flat's household (an entity per occupied flat).
#[derive(Component, Debug, Clone)]
pub struct Household {
    pub estate: u16,
    pub building: u16,
    pub room: u16,
    pub tenure: Tenure,
    pub size: u8,
    /// Building and room, written `B03-1102` in events.
    pub flat: FlatRef,
    pub bin: Option<Dev>,
    pub elevators: u8,
}

impl Household {
    /// A key that orders households the same way in every run, whatever the ECS's storage order.
    pub fn key(&self) -> u64 {
        flat_key(self.estate, self.flat)
    }

    /// The flat as ground truth names it.
    pub fn label(&self) -> String {
        self.flat.to_string()
    }

    /// The household as an answer names it: its estate's id and its flat's label.
    pub fn place(&self, reg: &Registry) -> (String, String) {
        (reg.estate_ids[self.estate as usize].clone(), self.label())
    }
}

/// A resident. `flat` is the household entity.
#[derive(Component, Debug, Clone)]
pub struct Resident {
    pub pid: u32,
    pub age: Age,
    pub flat: Entity,
    /// The same flat as events name it (kept here so a gate pass needs no look-up of the household).
    pub home: FlatRef,
    pub estate: u16,
    /// The gate this resident uses most.
    pub usual_gate: Option<Dev>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Normal,
    /// Ill or fallen at home, unable to go out: the case the 48-hour rule exists for.
    Emergency,
    /// In hospital after being found.
    Hospital,
    /// Away on a trip: a benign absence.
    Trip,
}

/// Where a resident is and in what state.
#[derive(Component, Debug, Clone)]
pub struct Presence {
    pub inside: bool,
    pub state: State,
}

/// A registered vulnerable resident, with their flat's devices.
#[derive(Component, Debug, Clone)]
pub struct Vulnerable {
    pub reg: usize,
    pub water: Option<Dev>,
    pub door: Option<Dev>,
    pub incident: Option<usize>,
}

/// A flat's stable key: estate, building, room.
pub fn flat_key(estate: u16, flat: FlatRef) -> u64 {
    ((estate as u64) << 32) | ((flat.building as u64) << 16) | flat.room as u64
}

/// A query's items in the order of a stable key. Queries iterate in storage order, which follows the
/// ECS's internals (spawn and archetype history, resources stored as entities); a system that draws from
/// one random stream across entities, or whose order shows in the event stream, iterates through this.
pub fn in_order<T, K: Ord>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut v: Vec<T> = items.into_iter().collect();
    v.sort_by_key(|x| key(x));
    v
}

/// Actions scheduled for a future instant, bucketed by minute so each tick takes only what is due.
#[derive(Resource, Debug)]
pub struct Agenda<A: Send + Sync + 'static> {
    buckets: BTreeMap<i64, Vec<(Millis, A)>>,
}

impl<A: Send + Sync + 'static> Default for Agenda<A> {
    fn default() -> Self {
        Agenda { buckets: BTreeMap::new() }
    }
}

impl<A: Send + Sync + 'static> Agenda<A> {
    pub fn push(&mut self, at: Millis, action: A) {
        self.buckets.entry(at.div_euclid(MINUTE)).or_default().push((at, action));
    }

    /// Schedules each of `items`, as [`Agenda::push`] would one by one in their order, but bucketed all at
    /// once, each minute's bucket made at its size: a day's plan pushes some 400,000 outings into 1,440
    /// buckets, and pushing them one by one (each bucket grown as it went) was 4% of a 35-day replication.
    pub fn push_all(&mut self, items: Vec<(Millis, A)>) {
        let minute = |at: Millis| at.div_euclid(MINUTE);
        let (Some(lo), Some(hi)) = (items.iter().map(|x| minute(x.0)).min(), items.iter().map(|x| minute(x.0)).max()) else { return };
        // Over more than a few days (a far-off time): one by one.
        let span = hi.checked_sub(lo).and_then(|d| usize::try_from(d).ok()).filter(|&d| d < 8 * 1_440);
        let Some(span) = span else {
            for (at, a) in items {
                self.push(at, a);
            }
            return;
        };
        let mut counts = vec![0usize; span + 1];
        for x in &items {
            counts[(minute(x.0) - lo) as usize] += 1;
        }
        let mut dense: Vec<Vec<(Millis, A)>> = counts.into_iter().map(Vec::with_capacity).collect();
        for x in items {
            dense[(minute(x.0) - lo) as usize].push(x);
        }
        for (m, bucket) in (lo..).zip(dense) {
            if bucket.is_empty() {
                continue;
            }
            match self.buckets.entry(m) {
                std::collections::btree_map::Entry::Vacant(e) => drop(e.insert(bucket)),
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().extend(bucket),
            }
        }
    }

    /// Removes and returns every action due before the end of the tick starting at `now`.
    pub fn due(&mut self, now: Millis) -> Vec<(Millis, A)> {
        let cut = now.div_euclid(MINUTE);
        let mut out = Vec::new();
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > cut {
                break;
            }
            out.extend(entry.remove());
        }
        out
    }
}

/// One event waiting to be encoded at the end of the tick.
#[derive(Debug, Clone)]
pub struct Pending {
    pub time: Millis,
    pub device: Dev,
    pub ty: EventType,
    pub subject: Option<FlatRef>,
    pub data: Data,
}

/// Events produced during the current tick, in the order systems produced them.
#[derive(Resource, Debug, Default)]
pub struct Outbox(pub Vec<Pending>);

impl Outbox {
    pub fn emit(&mut self, time: Millis, device: Dev, ty: EventType, subject: Option<FlatRef>, data: Data) {
        self.0.push(Pending { time, device, ty, subject, data });
    }
}

/// One real incident: what happened, where, to whom, and when. Benign ones (a trip, a legal renovation)
/// are recorded too, so that alarms about them can be scored as false. Kept small (a 35-day run has some
/// 600,000): its id and start time as text are made when it is written (see [`Incident::id`]).
#[derive(Debug, Clone)]
pub struct Incident {
    /// Its place in the run's ground truth (0 the first): its id is `GT-` and this plus one.
    pub n: u32,
    pub kind: IncidentKind,
    pub area: SmolStr,
    pub subject: SmolStr,
    pub start_ms: Millis,
    pub end_ms: Option<Millis>,
    pub benign: bool,
    /// How it ended: `response` (a resolved work order ended it, see [`Incident::order`]) or `itself` (it
    /// ran its course); absent while it goes on.
    pub ended_by: Option<&'static str>,
    /// The work order whose resolution ended it.
    pub order: Option<u64>,
    /// When residents called the 12345 hotline about it.
    pub calls: Vec<Millis>,
    /// Reports on the estate's other lines (the QR code, the patrol): when, and which.
    pub reports: Vec<(Millis, Line)>,
}

/// An incident as `ground_truth.jsonl` and the reports write it.
impl Serialize for Incident {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Written<'a> {
            id: String,
            kind: IncidentKind,
            area: &'a str,
            subject: &'a str,
            start: String,
            start_ms: Millis,
            end_ms: Option<Millis>,
            benign: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            ended_by: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            order: Option<u64>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            calls: &'a [Millis],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            reports: &'a [(Millis, Line)],
        }
        Written {
            id: self.id(),
            kind: self.kind,
            area: &self.area,
            subject: &self.subject,
            start: rfc3339(self.start_ms),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            benign: self.benign,
            ended_by: self.ended_by,
            order: self.order,
            calls: &self.calls,
            reports: &self.reports,
        }
        .serialize(s)
    }
}

impl Incident {
    /// `GT-000001` for the first.
    pub fn id(&self) -> String {
        format!("GT-{:06}", self.n + 1)
    }

    /// Where and when it went on, for matching the orders about it (`Detects::is_about`).
    pub fn span(&self) -> towntwin_contracts::truth::Span<'_> {
        towntwin_contracts::truth::Span { kind: self.kind, area: &self.area, subject: &self.subject, start: self.start_ms, end: self.end_ms }
    }
}

/// Every incident of the run, and an index of those still going on by area and kind (for matching the
/// work orders responders resolve to what they were about).
#[derive(Resource, Debug, Default)]
pub struct GroundTruth {
    pub incidents: Vec<Incident>,
    open: HashMap<(SmolStr, IncidentKind), BTreeSet<usize>>,
}

impl GroundTruth {
    pub fn open(&mut self, kind: IncidentKind, area: &str, subject: String, start: Millis, benign: bool) -> usize {
        let n = self.incidents.len();
        self.incidents.push(Incident {
            n: n as u32,
            kind,
            area: area.into(),
            subject: subject.into(),
            start_ms: start,
            end_ms: None,
            benign,
            ended_by: None,
            order: None,
            calls: Vec::new(),
            reports: Vec::new(),
        });
        self.open.entry((area.into(), kind)).or_default().insert(n);
        n
    }

    /// An incident that is over as soon as it happens (a violation, a wrong sort).
    pub fn instant(&mut self, kind: IncidentKind, area: &str, subject: String, at: Millis, benign: bool) -> usize {
        let i = self.open(kind, area, subject, at, benign);
        self.close(i, at);
        i
    }

    /// The incident ran its course (or is known now to end at `at`).
    pub fn close(&mut self, i: usize, at: Millis) {
        self.end(i, at, "itself", None);
    }

    /// A responder's resolution of `order` ended the incident at `at`.
    pub fn end_by_response(&mut self, i: usize, at: Millis, order: u64) {
        self.end(i, at, "response", Some(order));
    }

    fn end(&mut self, i: usize, at: Millis, by: &'static str, order: Option<u64>) {
        let Some(inc) = self.incidents.get_mut(i) else { return };
        if inc.end_ms.is_some() {
            return;
        }
        inc.end_ms = Some(at);
        inc.ended_by = Some(by);
        inc.order = order;
        if let Some(set) = self.open.get_mut(&(inc.area.clone(), inc.kind)) {
            set.remove(&i);
        }
    }

    /// Incidents of `kind` in `area` still going on, oldest first.
    pub fn open_in(&self, area: &str, kind: IncidentKind) -> impl Iterator<Item = usize> + '_ {
        self.open.get(&(SmolStr::from(area), kind)).into_iter().flatten().copied()
    }
}

/// Uniform draw in a (low, high) range.
pub fn uniform(rng: &mut Rng, (lo, hi): (f64, f64)) -> f64 {
    use rand::Rng as _;
    if hi > lo { rng.random_range(lo..hi) } else { lo }
}

/// Poisson draw with mean `lambda` (0 for non-positive means).
pub fn poisson(rng: &mut Rng, lambda: f64) -> u32 {
    use rand::Rng as _;
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        // Knuth's method: exact and fast for the small means the twin mostly uses.
        let l = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    use rand_distr::Distribution;
    rand_distr::Poisson::new(lambda).map(|d| d.sample(rng) as u32).unwrap_or(0)
}

/// A time of day in `[lo_h, hi_h)` local hours on the day starting at `day_begin`, to the second.
pub fn at_hours(rng: &mut Rng, day_begin: Millis, lo_h: f64, hi_h: f64) -> Millis {
    let h = uniform(rng, (lo_h, hi_h));
    day_begin + (h * 3_600.0).floor() as Millis * 1_000
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Pushed all at once, the agenda gives what pushing one by one gives: each minute's actions in the
    /// order pushed, after those it held; over days, far-off and negative times too.
    #[test]
    fn pushing_all_at_once_is_pushing_one_by_one() {
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(3);
        for round in 0..200 {
            let spread: Millis = [MINUTE, 3_600_000, 86_400_000, 40 * 86_400_000, Millis::MAX / 2][round % 5];
            let (mut one, mut all) = (Agenda::<u32>::default(), Agenda::<u32>::default());
            let mut k = 0;
            for _ in 0..3 {
                let items: Vec<(Millis, u32)> = (0..rng.random_range(0..400))
                    .map(|_| {
                        k += 1;
                        (rng.random_range(-spread..=spread), k)
                    })
                    .collect();
                for &(at, a) in &items {
                    one.push(at, a);
                }
                all.push_all(items);
            }
            assert_eq!(one.buckets, all.buckets, "round {round}");
            assert!(all.buckets.values().all(|b| !b.is_empty()));
        }
    }
}
