//! What every page the project serves shares: one HTML escape, and the checks of a session cookie and of
//! a form's origin.

use axum::http::{HeaderMap, header};

/// `s` as HTML text or an attribute value (`&`, `<`, `>`, `"` and `'` escaped).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The value of the cookie `name` in the request, if it has a non-empty one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

/// Whether a request may use a session cookie: a form posted from another origin (another site, or
/// another port on this host: every port of 127.0.0.1 is one site to a browser, so `SameSite=Strict` does
/// not keep it out) is refused, with the origin it came from. Browsers send `Origin` with every POST; a
/// request without one (not from a browser's page) has no cookie to abuse.
pub fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else { return Ok(()) };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else { return Err("an unreadable Origin or Host".into()) };
    if origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host) { Ok(()) } else { Err(origin.to_string()) }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn escapes_quotes_too_and_reads_cookies_and_origins() {
        assert_eq!(esc(r#"<a href='x'>"&"</a>"#), "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; towntwin_token=abc; b="));
        assert_eq!(cookie(&h, "towntwin_token"), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok(), "no Origin: not a browser's form");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9999"));
        assert_eq!(same_origin(&h), Err("http://127.0.0.1:9999".into()));
    }
}
