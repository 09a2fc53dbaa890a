//! The check that what reaches the broker is a valid CloudEvent 1.0 in JSON structured mode. It decodes
//! with the official CloudEvents SDK (`cloudevents-sdk`), so it does not share a line with the twin's own
//! encoder, and adds the two rules of the spec that the SDK's decoder leaves to the producer.

use cloudevents::AttributesReader as _;
use serde_json::Value;

/// Checks one structured-mode CloudEvent; the error says what is wrong.
pub fn check(payload: &[u8]) -> Result<(), String> {
    let event: cloudevents::Event = serde_json::from_slice(payload).map_err(|e| format!("not a CloudEvent: {e}"))?;
    if event.specversion() != cloudevents::event::SpecVersion::V10 {
        return Err(format!("`specversion` must be \"1.0\", found {}", event.specversion()));
    }
    for (name, _) in event.iter() {
        // CloudEvents 1.0: attribute names are lower-case ASCII letters and digits.
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(format!("attribute name `{name}` must be lower-case ASCII letters and digits"));
        }
    }
    for (name, value) in [("id", event.id()), ("type", event.ty()), ("source", event.source().as_str())] {
        if value.is_empty() {
            return Err(format!("`{name}` must be a non-empty string"));
        }
    }
    // The SDK keeps one of the two; both present is malformed.
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("data").is_some() && v.get("data_base64").is_some() {
        return Err("`data` and `data_base64` are mutually exclusive".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_valid_and_names_what_is_wrong() {
        let ok = br#"{"specversion":"1.0","id":"a","source":"/x","type":"t","time":"2026-03-02T00:00:00.000Z","data":{}}"#;
        assert_eq!(check(ok), Ok(()));
        let e = check(br#"{"specversion":"0.3","id":"a","source":"/x","type":"t"}"#).unwrap_err();
        assert!(e.contains("specversion") || e.contains("0.3"), "{e}");
        let e = check(br#"{"specversion":"1.0","source":"/x","type":"t"}"#).unwrap_err();
        assert!(e.contains("id"), "{e}");
        let e = check(br#"{"specversion":"1.0","id":"a","source":"/x","type":"t","Estate":"E1"}"#).unwrap_err();
        assert!(e.contains("Estate"), "{e}");
        let e = check(br#"{"specversion":"1.0","id":"a","source":"/x","type":"t","time":"yesterday"}"#).unwrap_err();
        assert!(e.contains("time") || e.contains("input"), "{e}");
        assert!(check(b"nope").is_err());
    }

    #[test]
    fn the_twins_own_events_pass() {
        use towntwin_core::event::{Data, EventType, Header, Tick, encode};
        let mut out = Vec::new();
        let h = Header {
            source: towntwin_core::event::SOURCE_PREFIX,
            id: "twin-1",
            area: "_town",
            kind: "clock",
            device: "twin",
            ty: EventType::ClockTick,
            time: 1_772_380_800_000,
            subject: None,
            exercise: None,
        };
        encode(&mut out, &h, &Data::Tick(Tick { tick: 1, sent: None }));
        assert_eq!(check(&out), Ok(()), "{}", String::from_utf8_lossy(&out));
    }
}
