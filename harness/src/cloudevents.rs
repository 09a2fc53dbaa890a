//! A checker for CloudEvents 1.0 in JSON structured mode, used by the observer and the tests to prove
//! that what reaches the broker is valid.

use serde_json::Value;
use towntwin_core::time::parse_rfc3339;

/// Checks one structured-mode CloudEvent; the error says which attribute is wrong.
pub fn check(payload: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let text = |name: &str| -> Result<&str, String> {
        match obj.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(format!("`{name}` must be a non-empty string")),
            None => Err(format!("required attribute `{name}` is missing")),
        }
    };
    if text("specversion")? != "1.0" {
        return Err("`specversion` must be \"1.0\"".into());
    }
    text("id")?;
    text("source")?;
    text("type")?;
    if obj.contains_key("time") && parse_rfc3339(text("time")?).is_none() {
        return Err("`time` is not an RFC 3339 timestamp".into());
    }
    for optional in ["datacontenttype", "subject", "dataschema"] {
        if obj.contains_key(optional) {
            text(optional)?;
        }
    }
    for name in obj.keys() {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(format!("attribute name `{name}` must be lower-case ASCII letters and digits"));
        }
    }
    if obj.contains_key("data") && obj.contains_key("data_base64") {
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
        assert!(e.contains("specversion"), "{e}");
        let e = check(br#"{"specversion":"1.0","source":"/x","type":"t"}"#).unwrap_err();
        assert!(e.contains("`id`"), "{e}");
        let e = check(br#"{"specversion":"1.0","id":"a","source":"/x","type":"t","Estate":"E1"}"#).unwrap_err();
        assert!(e.contains("Estate"), "{e}");
        assert!(check(b"nope").is_err());
    }
}
