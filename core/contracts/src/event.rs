//! The event contract between twin and core: CloudEvents 1.0 in JSON structured mode, one MQTT message per
//! event, on the topic scheme `town/{area}/{kind}/{device}/{type}`.
//!
//! `area` is an estate id (`E012`), a road id (`R03`) or `_town` for town-wide messages such as the clock
//! tick; `kind` is the device kind's slug (`gate`, `bin`, ...); `device` is the device id; `type` is the
//! CloudEvents type (`gate.pass`). A core instance can own a set of estates by subscribing to
//! `town/E012/#`-style filters.

use serde::{Deserialize, Serialize};
pub use smol_str::SmolStr;

use crate::time::Millis;

mod data_json;

/// Every event type the twin emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    GatePass,
    BinDrop,
    BinOverflow,
    BinCollected,
    ConstructionDrop,
    NoiseAlarm,
    ElevatorEbike,
    ChargingStart,
    ChargingEnd,
    ElecAlarm,
    SmokeAlarm,
    WaterReading,
    DoorOpen,
    FenceViolation,
    ManholeAlarm,
    DeviceHeartbeat,
    DeviceFault,
    DeviceRecovered,
    HotlineCall,
    ClockTick,
    /// Last, so that the others keep their numbers.
    BinDumping,
    /// Construction waste left outside a smart construction-waste box, seen by its camera.
    ConstructionDumping,
}

/// Delivery class of an event type, which decides its MQTT QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Something needs attention: QoS 1.
    Alarm,
    /// An activity a rule counts (a gate pass, a drop): QoS 1, losing one skews a rule.
    Activity,
    /// Routine telemetry, superseded by the next report: QoS 0.
    Telemetry,
}

impl EventType {
    pub const ALL: [EventType; 22] = [
        EventType::GatePass,
        EventType::BinDrop,
        EventType::BinOverflow,
        EventType::BinCollected,
        EventType::ConstructionDrop,
        EventType::NoiseAlarm,
        EventType::ElevatorEbike,
        EventType::ChargingStart,
        EventType::ChargingEnd,
        EventType::ElecAlarm,
        EventType::SmokeAlarm,
        EventType::WaterReading,
        EventType::DoorOpen,
        EventType::FenceViolation,
        EventType::ManholeAlarm,
        EventType::DeviceHeartbeat,
        EventType::DeviceFault,
        EventType::DeviceRecovered,
        EventType::HotlineCall,
        EventType::ClockTick,
        EventType::BinDumping,
        EventType::ConstructionDumping,
    ];

    /// The CloudEvents `type` attribute and last topic segment.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::GatePass => "gate.pass",
            EventType::BinDrop => "bin.drop",
            EventType::BinOverflow => "bin.overflow",
            EventType::BinCollected => "bin.collected",
            EventType::ConstructionDrop => "construction.drop",
            EventType::NoiseAlarm => "noise.alarm",
            EventType::ElevatorEbike => "elevator.ebike",
            EventType::ChargingStart => "charging.start",
            EventType::ChargingEnd => "charging.end",
            EventType::ElecAlarm => "elec.alarm",
            EventType::SmokeAlarm => "smoke.alarm",
            EventType::WaterReading => "water.reading",
            EventType::DoorOpen => "door.open",
            EventType::FenceViolation => "fence.violation",
            EventType::ManholeAlarm => "manhole.alarm",
            EventType::DeviceHeartbeat => "device.heartbeat",
            EventType::DeviceFault => "device.fault",
            EventType::DeviceRecovered => "device.recovered",
            EventType::HotlineCall => "hotline.call",
            EventType::ClockTick => "clock.tick",
            EventType::BinDumping => "bin.dumping",
            EventType::ConstructionDumping => "construction.dumping",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn class(self) -> Class {
        match self {
            EventType::BinOverflow
            | EventType::NoiseAlarm
            | EventType::ElevatorEbike
            | EventType::ElecAlarm
            | EventType::SmokeAlarm
            | EventType::FenceViolation
            | EventType::ManholeAlarm
            | EventType::DeviceFault
            | EventType::HotlineCall
            | EventType::BinDumping
            | EventType::ConstructionDumping => Class::Alarm,
            EventType::DeviceHeartbeat | EventType::WaterReading => Class::Telemetry,
            // The clock tick drives the core's timers; it is cheap (one a simulated minute) and worth delivering.
            _ => Class::Activity,
        }
    }

    /// MQTT QoS for this type: alarms and activities 1, telemetry 0.
    pub fn qos(self) -> u8 {
        match self.class() {
            Class::Telemetry => 0,
            _ => 1,
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The area segment used for town-wide messages (the clock tick).
pub const TOWN_AREA: &str = "_town";
/// The `kind` and `device` segments of the 12345 citizens' hotline, which files residents' calls about an
/// estate's problem as `town/{estate}/hotline/12345/hotline.call`.
pub const HOTLINE_KIND: &str = "hotline";
pub const HOTLINE_DEVICE: &str = "12345";

/// The lines a report about an estate's problem comes in on, each the `device` segment of its source under
/// the estate's `hotline` kind (`/gaohang/{estate}/hotline/{line}`): the 12345 citizens' hotline (a
/// complaint), the estate's QR code (高行家园码, a resident's report through the platform) and the grid's
/// patrol (网格巡查, a patrol that found it). All three carry a `hotline.call` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Hotline,
    Qr,
    Patrol,
}

impl Line {
    pub const ALL: [Line; 3] = [Line::Hotline, Line::Qr, Line::Patrol];

    /// The source's and topic's `device` segment.
    pub fn device(self) -> &'static str {
        match self {
            Line::Hotline => HOTLINE_DEVICE,
            Line::Qr => "qr",
            Line::Patrol => "patrol",
        }
    }

    pub fn parse_device(s: &str) -> Option<Line> {
        Line::ALL.into_iter().find(|l| l.device() == s)
    }

    /// How a work order's finding says it came in.
    pub fn said(self) -> &'static str {
        match self {
            Line::Hotline => "a resident called 12345 about",
            Line::Qr => "a resident reported by the estate's QR code",
            Line::Patrol => "the grid's patrol found",
        }
    }
}
/// The CloudEvents `source` prefix of every device of the default town (Gaohang, the reference).
pub const SOURCE_PREFIX: &str = "/gaohang";

/// Where one town's traffic lives when several towns share a broker (a district): its MQTT topics under a
/// root of their own and its CloudEvents sources under `/{town}`. The default is the single town as it
/// always was (Gaohang): `town/...`, `orders/...` and `deadletter/...` at the top, sources `/gaohang/...`.
/// A named town `jinqiao` puts all three under `jinqiao/` (`jinqiao/town/E012/gate/...`,
/// `jinqiao/orders/...`) and its sources under `/jinqiao`, so that no town's core takes another's events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// The town's id (`gaohang` for the default).
    id: String,
    /// `""` for the default, `"{id}/"` for a named town: put before every topic.
    prefix: String,
    /// `/{id}`: the CloudEvents `source` prefix.
    source: String,
}

impl Default for Namespace {
    fn default() -> Namespace {
        Namespace { id: SOURCE_PREFIX[1..].to_string(), prefix: String::new(), source: SOURCE_PREFIX.to_string() }
    }
}

/// Top-level topic segments a town's id may not take: the default town's roots, and MQTT's system topics.
const RESERVED_IDS: [&str; 4] = ["town", "orders", "deadletter", "towntwin"];

impl Namespace {
    /// A named town's namespace. The id is 1 to 32 characters of `a-z`, `0-9` and `-`, starting with a
    /// letter, and is none of `town`, `orders`, `deadletter`, `towntwin` (the default town's roots).
    pub fn town(id: &str) -> Result<Namespace, String> {
        Namespace::check_id(id)?;
        Ok(Namespace { id: id.to_string(), prefix: format!("{id}/"), source: format!("/{id}") })
    }

    /// Whether `id` can name a town (see [`Namespace::town`]); the reason if not.
    pub fn check_id(id: &str) -> Result<(), String> {
        let ok = (1..=32).contains(&id.len())
            && id.starts_with(|c: char| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!("town id `{id}`: 1 to 32 characters of a-z, 0-9 and -, starting with a letter"));
        }
        if RESERVED_IDS.contains(&id) {
            return Err(format!("town id `{id}` is reserved (a topic root of the single town): choose another"));
        }
        Ok(())
    }

    /// Whether this is the single town's namespace (no topic prefix).
    pub fn is_default(&self) -> bool {
        self.prefix.is_empty()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// What every topic of this town starts with: `""` or `"{id}/"`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The CloudEvents `source` prefix: `/gaohang`, `/{id}`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The filter of every device event of the town: `town/#`, `{id}/town/#`.
    pub fn events_filter(&self) -> String {
        format!("{}town/#", self.prefix)
    }

    /// A topic of this town: `rest` (`town/...`, `orders/...`) under the town's prefix.
    pub fn topic(&self, rest: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + rest.len());
        s.push_str(&self.prefix);
        s.push_str(rest);
        s
    }

    /// `topic` without this town's prefix; `None` if it is not under it.
    pub fn strip<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(self.prefix.as_str())
    }
}

/// `town/{area}/{kind}/{device}/{type}`.
pub fn topic(area: &str, kind: &str, device: &str, ty: EventType) -> String {
    let mut s = String::with_capacity(16 + area.len() + kind.len() + device.len());
    s.push_str("town/");
    s.push_str(area);
    s.push('/');
    s.push_str(kind);
    s.push('/');
    s.push_str(device);
    s.push('/');
    s.push_str(ty.as_str());
    s
}

/// A device event as the core takes it: decoded from its CloudEvent, or handed over typed by a twin in the
/// same process (the same id, source, device index, time, subject and data either way).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Inline up to 23 bytes (every id the twin makes: `{device}-{seq:x}`), so that making, cloning and
    /// dropping one allocates nothing.
    pub id: SmolStr,
    /// The CloudEvents `source`: with `id`, what makes an event unique (the dedup key). A device's events
    /// share one (a clone counts a reference).
    pub source: SmolStr,
    pub ty: EventType,
    pub time: Millis,
    /// Device index in the registry; `None` for the twin's clock and the 12345 line.
    pub device: Option<u32>,
    pub subject: Option<FlatRef>,
    pub data: Data,
}

/// The CloudEvents attributes of one event, borrowed for encoding. `data` is encoded separately.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub id: &'a str,
    /// The town's source prefix ([`Namespace::source`]): `/gaohang` for the default town.
    pub source: &'a str,
    pub area: &'a str,
    pub kind: &'a str,
    pub device: &'a str,
    pub ty: EventType,
    pub time: Millis,
    /// The flat the event is about, where there is one.
    pub subject: Option<FlatRef>,
    /// The exercise (an operator drill) the event belongs to, as the CloudEvents extension attribute
    /// `exerciseid`; `None` for the town's own traffic. A core takes only its own exercise's events.
    pub exercise: Option<&'a str>,
}

/// Encodes one event as a CloudEvents 1.0 structured-mode JSON object into `out` (cleared first).
/// Attribute order is fixed, so equal events give equal bytes.
pub fn encode(out: &mut Vec<u8>, h: &Header<'_>, data: &Data) {
    out.clear();
    encode_append(out, h, data);
}

/// [`encode`] appending to what `out` holds: for an encoder that lays many events out in one buffer.
pub fn encode_append(out: &mut Vec<u8>, h: &Header<'_>, data: &Data) {
    out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":");
    json_str(out, h.id);
    out.extend_from_slice(b",\"source\":\"");
    out.extend_from_slice(h.source.as_bytes());
    for seg in [h.area, h.kind, h.device] {
        out.push(b'/');
        json_inner(out, seg);
    }
    out.extend_from_slice(b"\",\"type\":\"");
    out.extend_from_slice(h.ty.as_str().as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    out.extend_from_slice(&crate::time::rfc3339_bytes(h.time));
    out.extend_from_slice(b"\",\"datacontenttype\":\"application/json\"");
    if let Some(s) = h.subject {
        out.extend_from_slice(b",\"subject\":\"");
        s.write_to(out);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"estate\":");
    json_str(out, h.area);
    if let Some(x) = h.exercise {
        out.extend_from_slice(b",\"exerciseid\":");
        json_str(out, x);
    }
    out.extend_from_slice(b",\"data\":");
    data_json::write(out, data);
    out.push(b'}');
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_inner(out, s);
    out.push(b'"');
}

fn json_inner(out: &mut Vec<u8>, s: &str) {
    // Every byte looked at, no early exit: names are short and almost never need escaping, and the loop
    // without a branch per byte is the faster.
    if !s.bytes().fold(false, |esc, b| esc | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        out.extend_from_slice(s.as_bytes());
    } else {
        let quoted = serde_json::to_string(s).unwrap_or_default();
        out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
    }
}

/// A flat inside an estate, written `B03-1102` (building 3, room 1102) in payloads and subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlatRef {
    pub building: u16,
    pub room: u16,
}

impl std::fmt::Display for FlatRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B{:02}-{}", self.building, self.room)
    }
}

impl FlatRef {
    /// Appends what [`Display`](std::fmt::Display) writes, without the formatting machinery (the twin writes
    /// one for most events it encodes).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(b'B');
        if self.building < 10 {
            out.push(b'0');
        }
        push_decimal(out, self.building);
        out.push(b'-');
        push_decimal(out, self.room);
    }
}

fn push_decimal(out: &mut Vec<u8>, v: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut v = v;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

impl std::str::FromStr for FlatRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a flat: expected B<building>-<room>, e.g. B03-1102");
        let (b, r) = s.strip_prefix('B').and_then(|x| x.split_once('-')).ok_or_else(bad)?;
        Ok(FlatRef { building: b.parse().map_err(|_| bad())?, room: r.parse().map_err(|_| bad())? })
    }
}

impl Serialize for FlatRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FlatRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A person as the gates know them (a registered face or card), written `P0001234`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonId(pub u32);

impl std::fmt::Display for PersonId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P{:07}", self.0)
    }
}

impl Serialize for PersonId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PersonId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.strip_prefix('P')
            .and_then(|n| n.parse().ok())
            .map(PersonId)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a person id: expected P followed by digits")))
    }
}

/// The `data` of each event type. Serialised untagged: the CloudEvents `type` says which it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Data {
    GatePass(GatePass),
    BinDrop(BinDrop),
    BinLevel(BinLevel),
    ConstructionDrop(ConstructionDrop),
    Noise(NoiseAlarm),
    ElevatorEbike(ElevatorEbike),
    ChargingStart(ChargingStart),
    ChargingEnd(ChargingEnd),
    ElecAlarm(ElecAlarm),
    Smoke(SmokeAlarm),
    Water(WaterReading),
    Door(DoorOpen),
    Fence(FenceViolation),
    Manhole(ManholeAlarm),
    Heartbeat(Heartbeat),
    Fault(Fault),
    Recovered(Recovered),
    Hotline(HotlineCall),
    Tick(Tick),
    Dumping(Dumping),
}

/// `bin.dumping`: the kiosk's camera sees bags left beside it outside the fixed times and places (定时定点).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dumping {
    pub bags: u16,
}

/// `hotline.call`: a resident's call to the 12345 citizens' hotline, as its operator files it: what kind of
/// problem (`category`, an incident kind such as `group_rental`) and what it is about within the estate of
/// the event's source (`about`: a flat `B03-1102`, a device id, or empty when the caller could not say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotlineCall {
    pub category: crate::truth::IncidentKind,
    pub about: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Face,
    Card,
}

/// `gate.pass`: a face or card recognised at an estate gate. `person` is the platform's face/card id,
/// `flat` the flat it is registered to (`B03-1102`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatePass {
    pub person: PersonId,
    pub flat: FlatRef,
    pub method: Method,
    pub direction: Direction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WasteCategory {
    Residual,
    Kitchen,
    Recyclable,
    Hazardous,
}

/// `bin.drop`: a household's drop at a sorting kiosk; the kiosk's camera judges the sorting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinDrop {
    pub flat: FlatRef,
    pub category: WasteCategory,
    pub weight_g: u32,
    pub sorted_ok: bool,
    pub fill_pct: u16,
}

/// `bin.overflow` and `bin.collected`: the kiosk's fill level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinLevel {
    pub fill_pct: u16,
}

/// `construction.drop`: renovation waste dropped at a smart box, identified by the flat's card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstructionDrop {
    pub flat: FlatRef,
    pub weight_kg: u32,
}

/// `noise.alarm`: a stairwell noise monitor heard construction noise above its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseAlarm {
    pub building: u16,
    pub db: u16,
    pub seconds: u32,
}

/// `elevator.ebike`: an e-bike recognised in an elevator car; the car is held until it leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElevatorEbike {
    pub building: u16,
    pub elevator: u8,
    pub confidence: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vehicle {
    Ebike,
    Ev,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargingStart {
    pub session: String,
    pub vehicle: Vehicle,
    pub flat: FlatRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargingEnd {
    pub session: String,
    pub vehicle: Vehicle,
    pub wh: u32,
    pub minutes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElecAlarmKind {
    /// The load signature of an e-bike charger on a flat's circuit (charging indoors or by a flying wire).
    EbikeCharging,
    ResidualCurrent,
    Overload,
}

/// `elec.alarm`: an electrical-fire monitor's alarm for one flat's circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElecAlarm {
    pub building: u16,
    pub room: u16,
    pub alarm: ElecAlarmKind,
    pub amps: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeAlarm {
    pub building: u16,
    pub obscuration_pct: f32,
}

/// `water.reading`: litres used in the flat in the hour ending at the event's time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaterReading {
    pub flat: FlatRef,
    pub litres: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorOpen {
    pub flat: FlatRef,
}

/// `fence.violation`: one of the 15 violation kinds recognised by a road camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceViolation {
    pub road: String,
    /// 1..=15, see [`crate::violations::VIOLATIONS`].
    pub code: u8,
    pub violation: String,
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManholeAlarm {
    pub tilt_deg: f32,
}

/// `device.heartbeat`: a device says it is alive. `battery_pct` only for battery-powered devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
    pub rssi_dbm: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    LowBattery,
    /// The device's self-test found its sensor stuck at one reading.
    Stuck,
}

/// `device.fault`: a device reports a fault of its own (an offline device says nothing: it goes silent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub fault: FaultKind,
}

/// `device.recovered`: a device back after being offline or faulty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovered {
    pub down_minutes: u32,
}

/// `clock.tick`: the twin's simulated clock, once a simulated minute; the core's timers run on it. Tick `n`
/// is stamped at the end of minute `n - 1` and closes it: the twin sends it after that minute's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tick {
    pub tick: u64,
    /// How many events of the minute this tick closes the twin sent, by QoS: what a core that orders its
    /// input by minutes (`towntwin core --order minutes`) waits for before it applies the minute, whatever
    /// order a broker delivered them in. Absent from ticks that do not count (hand-made ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
}

/// The events of one minute the twin sent, by QoS (see [`Tick::sent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sent {
    pub qos0: u32,
    pub qos1: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_writes_by_hand_as_it_displays() {
        for building in [0u16, 1, 9, 10, 42, 99, 100, 999, u16::MAX] {
            for room in [0u16, 1, 9, 10, 101, 1102, 65_535] {
                let f = FlatRef { building, room };
                let mut out = Vec::new();
                f.write_to(&mut out);
                assert_eq!(String::from_utf8(out).unwrap(), f.to_string());
            }
        }
    }

    #[test]
    fn encodes_a_structured_cloudevent() {
        let mut out = Vec::new();
        let h = Header {
            source: SOURCE_PREFIX,
            id: "E012-gate-03-1f",
            area: "E012",
            kind: "gate",
            device: "E012-gate-03",
            ty: EventType::GatePass,
            time: 0,
            subject: Some(FlatRef { building: 3, room: 1102 }),
            exercise: Some("drill-7"),
        };
        let d = Data::GatePass(GatePass { person: PersonId(1), flat: FlatRef { building: 3, room: 1102 }, method: Method::Face, direction: Direction::Out });
        encode(&mut out, &h, &d);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "gate.pass");
        assert_eq!(v["source"], "/gaohang/E012/gate/E012-gate-03");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["direction"], "out");
        assert_eq!(v["data"]["person"], "P0000001");
        assert_eq!(v["subject"], "B03-1102");
        assert_eq!(v["exerciseid"], "drill-7", "an exercise's events carry its id as a CloudEvents extension");
        let back: GatePass = serde_json::from_value(v["data"].clone()).unwrap();
        assert_eq!(back.flat, FlatRef { building: 3, room: 1102 });
        assert!("B3".parse::<FlatRef>().is_err());
        assert_eq!(topic("E012", "gate", "E012-gate-03", EventType::GatePass), "town/E012/gate/E012-gate-03/gate.pass");
    }

    #[test]
    fn every_type_round_trips_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::DeviceHeartbeat.qos(), 0);
        assert_eq!(EventType::FenceViolation.qos(), 1);
    }

    #[test]
    fn a_town_namespace_puts_topics_and_sources_under_its_id() {
        let d = Namespace::default();
        assert!(d.is_default());
        assert_eq!((d.events_filter(), d.topic("orders/#"), d.source()), ("town/#".into(), "orders/#".into(), "/gaohang"));
        let j = Namespace::town("jin-qiao2").unwrap();
        assert_eq!((j.events_filter(), j.topic("orders/#"), j.source()), ("jin-qiao2/town/#".into(), "jin-qiao2/orders/#".into(), "/jin-qiao2"));
        assert_eq!(j.strip("jin-qiao2/town/E1/x"), Some("town/E1/x"));
        assert_eq!(j.strip("town/E1/x"), None);
        for bad in ["", "Jinqiao", "9ine", "a b", "a/b", "a+", "#", "town", "orders", "deadletter", &"x".repeat(33)] {
            assert!(Namespace::town(bad).is_err(), "{bad:?}");
        }
    }
}
