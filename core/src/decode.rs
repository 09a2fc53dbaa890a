//! Decoding what arrives from the broker: a CloudEvent whose `type` names one of the town's event types
//! and whose `source` names a device of the registry. A message that fails is rejected with a reason
//! code (counted, logged, dead-lettered by the caller), never a panic.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{self, Data, EventType, FlatRef, SmolStr};
use crate::time::parse_rfc3339;
use crate::town::{DeviceKind, Town};

/// The largest payload accepted; the twin's events are well under 1 KiB.
pub const MAX_PAYLOAD: usize = crate::limits::MAX_EVENT_BYTES;

pub use crate::event::Event;

/// Why a message was refused. `code` is what rejections are counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

fn reject(code: &'static str, detail: impl Into<String>) -> Reject {
    Reject { code, detail: detail.into() }
}

/// The registry's devices as the core needs them: id -> index, and each device's kind and estate.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    pub index: HashMap<String, u32>,
    pub list: Vec<DeviceEntry>,
    /// The town's estate ids (the areas a hotline call may come from).
    pub estates: std::collections::HashSet<String>,
    /// The exercise (an operator drill) this core takes events of: an event must carry this `exerciseid`,
    /// and with `None` it must carry none. A drill's traffic never mixes with a town's, nor with another
    /// drill's (rejected as `wrong_exercise`).
    pub exercise: Option<String>,
    /// The town's topic root and source prefix: an event's topic must be under the one and its `source`
    /// under the other (the default town's unless the core serves a named town of a district).
    pub ns: event::Namespace,
}

#[derive(Debug, Clone)]
pub struct DeviceEntry {
    pub id: String,
    pub kind: DeviceKind,
    /// Estate index in the town, or `None` for road devices.
    pub estate: Option<u16>,
    pub area: String,
    pub building: Option<u16>,
}

impl Devices {
    /// Indexes devices in the same order the twin does: estates' devices, then roads'.
    pub fn of(town: &Town) -> Devices {
        let mut d = Devices { estates: town.estates.iter().map(|e| e.id.clone()).collect(), ..Devices::default() };
        let estates = town.estates.iter().enumerate().map(|(i, e)| (Some(i as u16), e.id.as_str(), &e.devices));
        let roads = town.roads.iter().map(|r| (None, r.id.as_str(), &r.devices));
        for (estate, area, devices) in estates.chain(roads) {
            for dev in devices {
                d.index.insert(dev.id.clone(), d.list.len() as u32);
                d.list.push(DeviceEntry { id: dev.id.clone(), kind: dev.kind, estate, area: area.to_string(), building: dev.building });
            }
        }
        d
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    specversion: Option<&'a str>,
    /// Borrowed unless it has escapes.
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    source: Option<&'a str>,
    #[serde(rename = "type")]
    ty: Option<&'a str>,
    time: Option<&'a str>,
    subject: Option<&'a str>,
    exerciseid: Option<&'a str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Decodes one message payload against the registry.
pub fn decode(payload: &[u8], devices: &Devices) -> Result<Event, Reject> {
    if payload.len() > MAX_PAYLOAD {
        return Err(reject("oversized", format!("{} bytes, at most {MAX_PAYLOAD}", payload.len())));
    }
    // A message over the MQTT client's packet limit, which the connection skipped unread.
    if let Some(n) = crate::wire::oversized_stub(payload) {
        return Err(reject("oversized", format!("an MQTT packet of {n} bytes, skipped unread (events are at most {MAX_PAYLOAD} bytes)")));
    }
    let env: Envelope = serde_json::from_slice(payload).map_err(|e| {
        let code = if e.is_data() { "mistyped_field" } else { "malformed_json" };
        reject(code, e.to_string())
    })?;
    if env.specversion != Some("1.0") {
        return Err(reject("missing_field", "`specversion` must be \"1.0\""));
    }
    let id = env.id.filter(|s| !s.is_empty()).ok_or_else(|| reject("missing_field", "`id`"))?;
    let source = env.source.ok_or_else(|| reject("missing_field", "`source`"))?;
    let ty_name = env.ty.ok_or_else(|| reject("missing_field", "`type`"))?;
    let ty = EventType::parse(ty_name).ok_or_else(|| reject("unknown_type", format!("`{ty_name}`")))?;
    if env.exerciseid != devices.exercise.as_deref() {
        let said = |x: Option<&str>| x.map_or_else(|| "none".to_string(), |x| format!("`{x}`"));
        return Err(reject("wrong_exercise", format!("exerciseid {}, this core takes {}", said(env.exerciseid), said(devices.exercise.as_deref()))));
    }
    let time = env.time.ok_or_else(|| reject("missing_field", "`time`"))?;
    let time = parse_rfc3339(time).ok_or_else(|| reject("mistyped_field", format!("`time` {time:?} is not RFC 3339")))?;
    let device_id = source.rsplit('/').next().unwrap_or_default();
    let device = match ty {
        EventType::ClockTick => None,
        // The hotline is no device of the registry: its source must be one of an estate's report lines.
        EventType::HotlineCall => {
            let estate = source.strip_prefix(devices.ns.source()).filter(|r| r.starts_with('/')).and(hotline_area(source)).ok_or_else(|| {
                let lines: Vec<&str> = event::Line::ALL.iter().map(|l| l.device()).collect();
                reject("unknown_device", format!("`{source}` is not {}/{{estate}}/{}/{{{}}}", devices.ns.source(), event::HOTLINE_KIND, lines.join("|")))
            })?;
            if !devices.estates.contains(estate) {
                return Err(reject("unknown_device", format!("`{source}`: no estate `{estate}`")));
            }
            None
        }
        _ => Some(*devices.index.get(device_id).ok_or_else(|| reject("unknown_device", format!("`{source}`")))?),
    };
    let subject = match env.subject {
        Some(s) => Some(s.parse::<FlatRef>().map_err(|e| reject("mistyped_field", format!("`subject`: {e}")))?),
        None => None,
    };
    let raw = env.data.ok_or_else(|| reject("missing_field", "`data`"))?;
    let data = decode_data(ty, raw.get()).map_err(|e| reject("bad_data", format!("{ty_name}: {e}")))?;
    Ok(Event { id: SmolStr::new(id), source: SmolStr::new(source), ty, time, device, subject, data })
}

/// [`decode`], and the MQTT topic it came on must be the one its `source` and `type` publish to
/// (`town/{area}/{kind}/{device}/{type}`, under the town's root): a publisher cannot post one device's event
/// under another's topic, nor one town's under another's.
pub fn decode_on(topic: &str, payload: &[u8], devices: &Devices) -> Result<Event, Reject> {
    let ev = decode(payload, devices)?;
    let ns = &devices.ns;
    let mut parts = ns.strip(topic).unwrap_or("").split('/');
    let (Some("town"), Some(_area), Some(_kind), Some(device), Some(ty), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject("topic_mismatch", format!("topic `{topic}` is not {}town/{{area}}/{{kind}}/{{device}}/{{type}}", ns.prefix())));
    };
    if !ev.source.strip_prefix(ns.source()).is_some_and(|r| r.starts_with('/')) {
        return Err(reject("topic_mismatch", format!("source `{}` is not this town's ({}/...)", ev.source, ns.source())));
    }
    let source_device = ev.source.rsplit('/').next().unwrap_or_default();
    if device != source_device || ty != ev.ty.as_str() {
        return Err(reject("topic_mismatch", format!("topic `{topic}` does not match source `{}` and type `{}`", ev.source, ev.ty)));
    }
    Ok(ev)
}

/// The estate of a report's source `/gaohang/{estate}/hotline/{line}` (the 12345 hotline, the estate's QR
/// code or the grid's patrol).
pub fn hotline_area(source: &str) -> Option<&str> {
    report_line(source).map(|(area, _)| area)
}

/// The estate and the line of a report's source `/{town}/{estate}/hotline/{line}` (`/gaohang/...`; which
/// town's is [`decode`]'s to check).
pub fn report_line(source: &str) -> Option<(&str, event::Line)> {
    let (_town, rest) = source.strip_prefix('/')?.split_once('/')?;
    let (area, rest) = rest.split_once('/')?;
    let line = rest.strip_prefix(event::HOTLINE_KIND)?.strip_prefix('/')?;
    Some((area, event::Line::parse_device(line)?))
}

fn decode_data(ty: EventType, raw: &str) -> Result<Data, serde_json::Error> {
    use serde_json::from_str as p;
    Ok(match ty {
        EventType::GatePass => Data::GatePass(p(raw)?),
        EventType::BinDrop => Data::BinDrop(p(raw)?),
        EventType::BinOverflow | EventType::BinCollected => Data::BinLevel(p(raw)?),
        EventType::BinDumping | EventType::ConstructionDumping => Data::Dumping(p(raw)?),
        EventType::ConstructionDrop => Data::ConstructionDrop(p(raw)?),
        EventType::NoiseAlarm => Data::Noise(p(raw)?),
        EventType::ElevatorEbike => Data::ElevatorEbike(p(raw)?),
        EventType::ChargingStart => Data::ChargingStart(p(raw)?),
        EventType::ChargingEnd => Data::ChargingEnd(p(raw)?),
        EventType::ElecAlarm => Data::ElecAlarm(p(raw)?),
        EventType::SmokeAlarm => Data::Smoke(p(raw)?),
        EventType::WaterReading => Data::Water(p(raw)?),
        EventType::DoorOpen => Data::Door(p(raw)?),
        EventType::FenceViolation => Data::Fence(p::<event::FenceViolation>(raw)?),
        EventType::ManholeAlarm => Data::Manhole(p(raw)?),
        EventType::DeviceHeartbeat => Data::Heartbeat(p(raw)?),
        EventType::DeviceFault => Data::Fault(p(raw)?),
        EventType::DeviceRecovered => Data::Recovered(p(raw)?),
        EventType::HotlineCall => Data::Hotline(p(raw)?),
        EventType::ClockTick => Data::Tick(p(raw)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, GatePass, Header, Method, PersonId, encode};

    fn devices() -> Devices {
        let mut d = Devices::default();
        d.index.insert("E001-gate-01".into(), 0);
        d.list.push(DeviceEntry { id: "E001-gate-01".into(), kind: DeviceKind::Gate, estate: Some(0), area: "E001".into(), building: None });
        d
    }

    fn gate_pass() -> Vec<u8> {
        let mut out = Vec::new();
        let flat = FlatRef { building: 3, room: 1102 };
        let h = Header {
            source: event::SOURCE_PREFIX,
            id: "E001-gate-01-1",
            area: "E001",
            kind: "gate",
            device: "E001-gate-01",
            ty: EventType::GatePass,
            time: 1_000,
            subject: Some(flat),
            exercise: None,
        };
        encode(&mut out, &h, &Data::GatePass(GatePass { person: PersonId(7), flat, method: Method::Face, direction: Direction::In }));
        out
    }

    #[test]
    fn decodes_what_the_twin_encodes() {
        let e = decode(&gate_pass(), &devices()).unwrap();
        assert_eq!((e.ty, e.time, e.device), (EventType::GatePass, 1_000, Some(0)));
        assert!(matches!(e.data, Data::GatePass(GatePass { person: PersonId(7), .. })));
    }

    #[test]
    fn rejects_with_a_reason_for_each_fault() {
        let d = devices();
        let good = String::from_utf8(gate_pass()).unwrap();
        let cases: [(String, &str); 8] = [
            ("{not json".into(), "malformed_json"),
            (good.replace("\"specversion\":\"1.0\",", ""), "missing_field"),
            (good.replace("\"id\":\"E001-gate-01-1\",", "\"id\":7,"), "mistyped_field"),
            (good.replace("gate.pass\"", "gate.teleport\""), "unknown_type"),
            (good.replace("/E001-gate-01\"", "/E999-gate-01\""), "unknown_device"),
            (good.replace("\"direction\":\"in\"", "\"direction\":\"sideways\""), "bad_data"),
            (good.replace("1970-01-01T00:00:01.000Z", "yesterday"), "mistyped_field"),
            (format!("{}{}", good, " ".repeat(MAX_PAYLOAD)), "oversized"),
        ];
        for (payload, code) in cases {
            let r = decode(payload.as_bytes(), &d).unwrap_err();
            assert_eq!(r.code, code, "{payload:.80}: {r}");
        }
    }

    #[test]
    fn an_exercise_takes_only_its_own_events() {
        let town = decode(&gate_pass(), &devices());
        let marked = String::from_utf8(gate_pass()).unwrap().replace(",\"data\":", ",\"exerciseid\":\"drill-1\",\"data\":");
        let other = marked.replace("drill-1", "drill-2");
        let drill = Devices { exercise: Some("drill-1".into()), ..devices() };
        assert!(town.is_ok());
        assert_eq!(decode(marked.as_bytes(), &devices()).unwrap_err().code, "wrong_exercise", "a town's core takes no drill traffic");
        assert_eq!(decode(&gate_pass(), &drill).unwrap_err().code, "wrong_exercise", "a drill's core takes none of the town's");
        assert_eq!(decode(other.as_bytes(), &drill).unwrap_err().code, "wrong_exercise", "nor another drill's");
        assert_eq!(decode(marked.as_bytes(), &drill).map(|e| e.id.to_string()), Ok("E001-gate-01-1".to_string()));
    }

    #[test]
    fn a_named_towns_core_takes_its_own_root_and_source_only() {
        let ns = event::Namespace::town("jinqiao").unwrap();
        let mine = Devices { ns: ns.clone(), ..devices() };
        let ours = String::from_utf8(gate_pass()).unwrap().replace("\"/gaohang/", "\"/jinqiao/");
        let topic = "jinqiao/town/E001/gate/E001-gate-01/gate.pass";
        assert!(decode_on(topic, ours.as_bytes(), &mine).is_ok());
        // The default town's topic, another town's root, or another town's source under this root.
        for (t, p) in [
            ("town/E001/gate/E001-gate-01/gate.pass", ours.as_bytes().to_vec()),
            ("caolu/town/E001/gate/E001-gate-01/gate.pass", ours.as_bytes().to_vec()),
            (topic, gate_pass()),
        ] {
            assert_eq!(decode_on(t, &p, &mine).unwrap_err().code, "topic_mismatch", "{t}");
        }
        // And the single town's core takes none of a named town's.
        assert_eq!(decode_on(topic, ours.as_bytes(), &devices()).unwrap_err().code, "topic_mismatch");
        assert!(decode_on("town/E001/gate/E001-gate-01/gate.pass", &gate_pass(), &devices()).is_ok());
        // A report line's estate is read whatever the town.
        assert_eq!(report_line("/jinqiao/E003/hotline/qr"), Some(("E003", event::Line::Qr)));
    }
}
