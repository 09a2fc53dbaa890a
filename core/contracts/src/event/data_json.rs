//! An event's `data` written as JSON by hand: the bytes `serde_json::to_writer` writes for the same value
//! (fields in declaration order, integers by `itoa` and floats by `zmij` as serde_json does, a non-finite
//! float as `null`, an absent optional field left out), without serde's machinery per field. The twin
//! encodes some 900,000 a town day; the test below and the decode fuzz target's round trip hold the bytes
//! to serde's.

use super::*;

/// Appends `data` as `serde_json::to_writer` would.
pub(super) fn write(out: &mut Vec<u8>, data: &Data) {
    let mut w = Obj::new(out);
    match data {
        Data::GatePass(d) => {
            w.key("person").person(d.person);
            w.key("flat").flat(d.flat);
            w.key("method").str(match d.method {
                Method::Face => "face",
                Method::Card => "card",
            });
            w.key("direction").str(match d.direction {
                Direction::In => "in",
                Direction::Out => "out",
            });
        }
        Data::BinDrop(d) => {
            w.key("flat").flat(d.flat);
            w.key("category").str(match d.category {
                WasteCategory::Residual => "residual",
                WasteCategory::Kitchen => "kitchen",
                WasteCategory::Recyclable => "recyclable",
                WasteCategory::Hazardous => "hazardous",
            });
            w.key("weight_g").int(d.weight_g);
            w.key("sorted_ok").bool(d.sorted_ok);
            w.key("fill_pct").int(d.fill_pct);
        }
        Data::BinLevel(d) => {
            w.key("fill_pct").int(d.fill_pct);
        }
        Data::ConstructionDrop(d) => {
            w.key("flat").flat(d.flat);
            w.key("weight_kg").int(d.weight_kg);
        }
        Data::Noise(d) => {
            w.key("building").int(d.building);
            w.key("db").int(d.db);
            w.key("seconds").int(d.seconds);
        }
        Data::ElevatorEbike(d) => {
            w.key("building").int(d.building);
            w.key("elevator").int(d.elevator);
            w.key("confidence").float(d.confidence);
        }
        Data::ChargingStart(d) => {
            w.key("session").str(&d.session);
            w.key("vehicle").str(vehicle(d.vehicle));
            w.key("flat").flat(d.flat);
        }
        Data::ChargingEnd(d) => {
            w.key("session").str(&d.session);
            w.key("vehicle").str(vehicle(d.vehicle));
            w.key("wh").int(d.wh);
            w.key("minutes").int(d.minutes);
        }
        Data::ElecAlarm(d) => {
            w.key("building").int(d.building);
            w.key("room").int(d.room);
            w.key("alarm").str(match d.alarm {
                ElecAlarmKind::EbikeCharging => "ebike_charging",
                ElecAlarmKind::ResidualCurrent => "residual_current",
                ElecAlarmKind::Overload => "overload",
            });
            w.key("amps").float(d.amps);
        }
        Data::Smoke(d) => {
            w.key("building").int(d.building);
            w.key("obscuration_pct").float(d.obscuration_pct);
        }
        Data::Water(d) => {
            w.key("flat").flat(d.flat);
            w.key("litres").int(d.litres);
        }
        Data::Door(d) => {
            w.key("flat").flat(d.flat);
        }
        Data::Fence(d) => {
            w.key("road").str(&d.road);
            w.key("code").int(d.code);
            w.key("violation").str(&d.violation);
            w.key("confidence").float(d.confidence);
        }
        Data::Manhole(d) => {
            w.key("tilt_deg").float(d.tilt_deg);
        }
        Data::Heartbeat(d) => {
            if let Some(b) = d.battery_pct {
                w.key("battery_pct").int(b);
            }
            w.key("rssi_dbm").int(d.rssi_dbm);
        }
        Data::Fault(d) => {
            w.key("fault").str(match d.fault {
                FaultKind::LowBattery => "low_battery",
                FaultKind::Stuck => "stuck",
            });
        }
        Data::Recovered(d) => {
            w.key("down_minutes").int(d.down_minutes);
        }
        Data::Hotline(d) => {
            w.key("category").str(d.category.as_str());
            w.key("about").str(&d.about);
        }
        Data::Tick(d) => {
            w.key("tick").int(d.tick);
            if let Some(s) = d.sent {
                w.key("sent");
                let mut inner = Obj::new(w.out);
                inner.key("qos0").int(s.qos0);
                inner.key("qos1").int(s.qos1);
                inner.end();
            }
        }
        Data::Dumping(d) => {
            w.key("bags").int(d.bags);
        }
    }
    w.end();
}

fn vehicle(v: Vehicle) -> &'static str {
    match v {
        Vehicle::Ebike => "ebike",
        Vehicle::Ev => "ev",
    }
}

/// One JSON object being written: `{`, then `"key":value` pairs with commas between, then `}`.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Writes `"name":` (names are plain ASCII: nothing to escape).
    fn key(&mut self, name: &str) -> &mut Self {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self
    }

    fn str(&mut self, s: &str) {
        json_str(self.out, s);
    }

    fn int(&mut self, v: impl itoa::Integer) {
        self.out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    fn bool(&mut self, v: bool) {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
    }

    /// As serde_json writes an `f32`: the shortest form that reads back the same, `null` if not finite.
    fn float(&mut self, v: f32) {
        if v.is_finite() {
            self.out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    fn flat(&mut self, f: FlatRef) {
        self.out.push(b'"');
        f.write_to(self.out);
        self.out.push(b'"');
    }

    /// `"P0001234"`: at least seven digits, as [`PersonId`]'s `Display`.
    fn person(&mut self, p: PersonId) {
        let mut b = itoa::Buffer::new();
        let digits = b.format(p.0).as_bytes();
        self.out.extend_from_slice(b"\"P");
        for _ in digits.len()..7 {
            self.out.push(b'0');
        }
        self.out.extend_from_slice(digits);
        self.out.push(b'"');
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::IncidentKind;

    fn flats() -> [FlatRef; 4] {
        [FlatRef { building: 0, room: 0 }, FlatRef { building: 3, room: 1102 }, FlatRef { building: 12, room: 65_535 }, FlatRef { building: u16::MAX, room: 7 }]
    }

    /// Every variant, with the edges of each field: what serde writes for them.
    fn samples() -> Vec<Data> {
        let floats = [0.0f32, -0.0, 1.0, 0.95, 1e-7, 3.4e38, -12.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE];
        let texts = ["", "R01", "中山路", "a\"b\\c", "tab\there\nline\u{1}", "\u{7f}\u{2028}"];
        let mut v = Vec::new();
        for (i, flat) in flats().into_iter().enumerate() {
            for person in [0u32, 7, 1_234_567, 12_345_678, u32::MAX] {
                for (method, direction) in [(Method::Face, Direction::In), (Method::Card, Direction::Out)] {
                    v.push(Data::GatePass(GatePass { person: PersonId(person), flat, method, direction }));
                }
            }
            for category in [WasteCategory::Residual, WasteCategory::Kitchen, WasteCategory::Recyclable, WasteCategory::Hazardous] {
                v.push(Data::BinDrop(BinDrop {
                    flat,
                    category,
                    weight_g: [0, 1, 999, u32::MAX][i],
                    sorted_ok: i % 2 == 0,
                    fill_pct: [0, 5, 100, u16::MAX][i],
                }));
            }
            v.push(Data::ConstructionDrop(ConstructionDrop { flat, weight_kg: [0, 10, 250, u32::MAX][i] }));
            v.push(Data::Water(WaterReading { flat, litres: [0, 9, 10, u32::MAX][i] }));
            v.push(Data::Door(DoorOpen { flat }));
            for vehicle in [Vehicle::Ebike, Vehicle::Ev] {
                v.push(Data::ChargingStart(ChargingStart { session: texts[i].into(), vehicle, flat }));
                v.push(Data::ChargingEnd(ChargingEnd { session: texts[i + 2].into(), vehicle, wh: [0, 1, 480, u32::MAX][i], minutes: i as u32 * 61 }));
            }
        }
        for n in [0u16, 1, 100, u16::MAX] {
            v.push(Data::BinLevel(BinLevel { fill_pct: n }));
            v.push(Data::Noise(NoiseAlarm { building: n, db: n / 2, seconds: u32::from(n) * 3 }));
            v.push(Data::Dumping(Dumping { bags: n }));
        }
        for (i, f) in floats.into_iter().enumerate() {
            v.push(Data::ElevatorEbike(ElevatorEbike { building: i as u16, elevator: [0, 1, 255][i % 3], confidence: f }));
            for alarm in [ElecAlarmKind::EbikeCharging, ElecAlarmKind::ResidualCurrent, ElecAlarmKind::Overload] {
                v.push(Data::ElecAlarm(ElecAlarm { building: 2, room: 1102, alarm, amps: f }));
            }
            v.push(Data::Smoke(SmokeAlarm { building: 9, obscuration_pct: f }));
            v.push(Data::Manhole(ManholeAlarm { tilt_deg: f }));
            let t = texts[i % texts.len()];
            v.push(Data::Fence(FenceViolation { road: t.into(), code: [1, 15, 0, 255][i % 4], violation: texts[(i + 1) % texts.len()].into(), confidence: f }));
        }
        for battery_pct in [None, Some(0), Some(100), Some(255)] {
            for rssi_dbm in [i16::MIN, -70, 0, i16::MAX] {
                v.push(Data::Heartbeat(Heartbeat { battery_pct, rssi_dbm }));
            }
        }
        v.push(Data::Fault(Fault { fault: FaultKind::LowBattery }));
        v.push(Data::Fault(Fault { fault: FaultKind::Stuck }));
        for down_minutes in [0, 1, u32::MAX] {
            v.push(Data::Recovered(Recovered { down_minutes }));
        }
        for (i, category) in IncidentKind::ALL.into_iter().enumerate() {
            v.push(Data::Hotline(HotlineCall { category, about: texts[i % texts.len()].into() }));
        }
        for tick in [0, 1, 1_440, u64::MAX] {
            v.push(Data::Tick(Tick { tick, sent: None }));
            v.push(Data::Tick(Tick { tick, sent: Some(Sent { qos0: tick as u32, qos1: u32::MAX }) }));
        }
        v
    }

    #[test]
    fn every_variant_writes_the_bytes_serde_writes() {
        let all = samples();
        let mut seen = std::collections::HashSet::new();
        for d in &all {
            let mut by_hand = Vec::new();
            write(&mut by_hand, d);
            let by_serde = serde_json::to_vec(d).unwrap();
            assert_eq!(String::from_utf8_lossy(&by_hand), String::from_utf8_lossy(&by_serde), "{d:?}");
            seen.insert(std::mem::discriminant(d));
        }
        assert_eq!(seen.len(), 20, "every variant of Data is sampled");
    }
}
