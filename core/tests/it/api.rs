//! The HTTP API over real HTTP: listing within scope, fetching with history, acting, and the refusals
//! (401 without a principal, 403 outside scope, 404, 409 for an illegal transition, 400 for a bad body).

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use towntwin_core::orders::Policy;
use towntwin_core::rules::{Finding, RuleSet};
use towntwin_core::service::Core;
use towntwin_core::web::Api;

async fn req(addr: std::net::SocketAddr, method: &str, path: &str, principal: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(p) = principal {
        head.push_str(&format!("Authorization: Bearer {p}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body);
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status: u16 = out[9..12].parse().unwrap();
    let json = out.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the body here is one JSON document: take from its first bracket.
    let start = json.find(['{', '[']).unwrap_or(0);
    let end = json.rfind(['}', ']']).map_or(json.len(), |i| i + 1);
    (status, serde_json::from_str(&json[start..end]).unwrap_or(Value::Null))
}

fn finding(rule: &str, area: &str, key: &str) -> Finding {
    Finding { rule: rule.into(), key: key.into(), area: area.into(), estate: None, subject: key.into(), at: 0, detail: String::new() }
}

#[tokio::test]
async fn scoped_principals_list_fetch_and_act() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let town = common::town();
    let rules = RuleSet::load(&root.join("assets/rules.ron")).unwrap();
    let policy = Policy::load(&root.join("scenarios/policies/standard.ron")).unwrap();
    let mut core = Core::open(rules.clone(), policy.clone(), &town, Some(&dir.path().join("core.db").into())).unwrap();
    core.orders.on_finding(&finding("elevator-ebike", "E001", "B01-101"), &rules, &policy).unwrap();
    core.orders.on_finding(&finding("fence-violation", "R01", "R01-camera-001/5"), &rules, &policy).unwrap();
    // Tokens as an operator issues them; the API knows callers by their tokens only.
    let mut tokens = std::collections::HashMap::new();
    for p in ["town", "committee:C01", "estate:E001", "estate:E002"] {
        tokens.insert(p, core.issue_token(&p.parse().unwrap()).unwrap());
    }
    let tok = |p: &str| tokens[p].clone();
    let core = Arc::new(Mutex::new(core));
    let app = towntwin_core::web::router(Api::new(core.clone(), &town));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    assert_eq!(req(addr, "GET", "/orders", None, None).await.0, 401);
    assert_eq!(req(addr, "GET", "/orders", Some("not-a-token-of-this-core"), None).await.0, 401);
    // Naming a principal proves nothing: without a token it is 401.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /orders HTTP/1.1\r\nHost: x\r\nX-Principal: district\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    let (s, all) = req(addr, "GET", "/orders", Some(tok("town").as_str()), None).await;
    assert_eq!((s, all.as_array().unwrap().len()), (200, 2));
    let (_, mine) = req(addr, "GET", "/orders", Some(tok("committee:C01").as_str()), None).await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "a committee sees its estates, not the roads");
    assert_eq!(mine[0]["area"], "E001");
    let (_, none) = req(addr, "GET", "/orders", Some(tok("estate:E002").as_str()), None).await;
    assert_eq!(none.as_array().unwrap().len(), 0);

    assert_eq!(req(addr, "GET", "/orders/1", Some(tok("estate:E002").as_str()), None).await.0, 403);
    assert_eq!(req(addr, "POST", "/orders/1/actions", Some(tok("estate:E002").as_str()), Some(r#"{"action":"accept"}"#)).await.0, 403);
    assert_eq!(req(addr, "GET", "/orders/99", Some(tok("town").as_str()), None).await.0, 404);
    let (s, body) = req(addr, "POST", "/orders/1/actions", Some(tok("estate:E001").as_str()), Some(r#"{"action":"teleport"}"#)).await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = req(addr, "POST", "/orders/1/actions", Some(tok("estate:E001").as_str()), Some(r#"{"action":"accept"}"#)).await;
    assert_eq!((s, body["state"].as_str()), (200, Some("accepted")), "{body}");
    let (s, body) = req(addr, "POST", "/orders/1/actions", Some(tok("estate:E001").as_str()), Some(r#"{"action":"close"}"#)).await;
    assert_eq!(s, 409);
    assert!(body["error"].as_str().unwrap().contains("cannot close work order 1 in state accepted"), "{body}");
    let (s, body) = req(addr, "POST", "/orders/1/actions", Some(tok("estate:E001").as_str()), Some(r#"{"action":"return","reason":""}"#)).await;
    assert_eq!(s, 409, "a return needs a reason: {body}");

    let (_, one) = req(addr, "GET", "/orders/1", Some(tok("committee:C01").as_str()), None).await;
    let actions: Vec<&str> = one["history"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "dispatch", "accept"]);
    assert_eq!(one["history"][2]["actor"], "estate:E001");
    let (_, accepted) = req(addr, "GET", "/orders?state=accepted&rule=elevator-ebike", Some(tok("town").as_str()), None).await;
    assert_eq!(accepted.as_array().unwrap().len(), 1);
    assert_eq!(req(addr, "GET", "/orders?loop=huge", Some(tok("town").as_str()), None).await.0, 400);
    // Sizes: a reason over the limit is refused with what the limit is; a body over the limit is 413.
    let long = format!(r#"{{"action":"return","reason":"{}"}}"#, "x".repeat(towntwin_core::limits::MAX_REASON_CHARS + 1));
    let (s, body) = req(addr, "POST", "/orders/1/actions", Some(tok("estate:E001").as_str()), Some(&long)).await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most"), "{body}");
    let huge = format!(r#"{{"action":"return","reason":"{}"}}"#, "x".repeat(64 * 1024));
    assert_eq!(req(addr, "POST", "/orders/1/actions", Some(tok("estate:E001").as_str()), Some(&huge)).await.0, 413);
    // A principal that is not one cannot even be given a token.
    assert!("district/<script>".parse::<towntwin_core::principal::Principal>().is_err());
    assert_eq!(req(addr, "GET", "/orders?from=yesterday", Some(tok("town").as_str()), None).await.0, 400);

    // The audit log holds the tokens, every transition, and every refusal to a caller it knows, chained.
    let core = core.lock().unwrap();
    let store = core.store().unwrap();
    let audit = store.audit_entries().unwrap();
    let line = |e: &towntwin_core::audit::Entry| format!("{} {} {} {} {}", e.actor, e.scope, e.what, e.target, e.outcome);
    let lines: Vec<String> = audit.iter().map(|s| line(&s.entry)).collect();
    let has = |needle: &str| lines.iter().any(|l| l.starts_with(needle));
    assert_eq!(lines.iter().filter(|l| l.contains("token.issue")).count(), 4, "{lines:#?}");
    assert!(has("system system create order 1 - -> created (small)"), "{lines:#?}");
    assert!(has("estate:E001 estate:E001 accept order 1 dispatched -> accepted (small)"), "{lines:#?}");
    assert!(has("estate:E002 estate:E002 view order 1 refused 403"), "{lines:#?}");
    assert!(has("estate:E002 estate:E002 accept order 1 refused 403"), "{lines:#?}");
    assert!(has("town town view order 99 refused 404"), "{lines:#?}");
    assert!(has("committee:C01 committee:C01 view order 1 seen"), "an order opened is recorded (an operator's time to notice): {lines:#?}");
    assert!(has("estate:E001 estate:E001 close order 1 refused 409: cannot close work order 1 in state accepted"), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("teleport")), "a body that is not an action is a 400, not an audited action");
    let v = store.verify_audit(None).unwrap();
    assert_eq!(v.entries as usize, audit.len());
}

/// The loops over the API: the committee whistles an order still in the estate to the departments, who
/// go together; each reports its own part (a department's report for another is 403, audited), and the
/// order is resolved by the last. The departments' console queue shows them what is assigned to them.
#[tokio::test]
async fn departments_report_their_own_part_of_a_joint_visit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let town = common::town();
    let rules = RuleSet::load(&root.join("assets/rules.ron")).unwrap();
    let policy = Policy::load(&root.join("scenarios/policies/source-loops.ron")).unwrap();
    let mut core = Core::open(rules.clone(), policy.clone(), &town, Some(&dir.path().join("core.db").into())).unwrap();
    core.orders.on_finding(&finding("group-rental", "E001", "B01-101"), &rules, &policy).unwrap();
    core.orders.on_finding(&finding("elevator-ebike", "E001", "B02-101"), &rules, &policy).unwrap();
    let mut tokens = std::collections::HashMap::new();
    for p in ["committee:C01/cadre", "town/housing", "town/public-security", "town/dispatcher", "town/evaluator-ana"] {
        tokens.insert(p, core.issue_token(&p.parse().unwrap()).unwrap());
    }
    let tok = |p: &str| tokens[p].clone();
    let core = Arc::new(Mutex::new(core));
    let app = towntwin_core::web::router(Api::new(core.clone(), &town));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let act = |who: &'static str, body: &'static str| {
        let t = tok(who);
        async move { req(addr, "POST", "/orders/1/actions", Some(&t), Some(body)).await }
    };

    // Before the whistle the order is the estate's: not on the housing office's queue.
    let queue = |who: &'static str, query: &'static str| {
        let t = tok(who);
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!("GET /console/queue{query} HTTP/1.1\r\nHost: x\r\nCookie: towntwin_token={t}\r\nConnection: close\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let before = queue("town/housing", "").await;
    assert!(before.starts_with("HTTP/1.1 200") && !before.contains("id=order-1 "), "{before}");
    assert!(queue("town/housing", "?assigned=all").await.contains("id=order-1 "), "every order in scope on asking");
    assert!(queue("town/housing", "?assigned=nobody").await.starts_with("HTTP/1.1 400"));

    let (s, body) = act("committee:C01/cadre", r#"{"action":"whistle","reason":"the tenants will not open the door"}"#).await;
    assert_eq!((s, body["state"].as_str()), (200, Some("dispatched")), "{body}");
    let (_, one) = req(addr, "GET", "/orders/1", Some(&tok("town/housing")), None).await;
    assert_eq!((one["order"]["level"].as_str(), one["order"]["joint"].as_bool()), (Some("Medium"), Some(true)), "{one}");
    let after = queue("town/housing", "").await;
    assert!(after.contains("id=order-1 class=\"state-dispatched mine\""), "the whistled order reaches the department's queue, marked theirs: {after}");
    assert!(!after.contains("id=order-2 "), "not another department's order: {after}");

    // An evaluator sees the order and acts on nothing.
    assert_eq!(req(addr, "GET", "/orders/1", Some(&tok("town/evaluator-ana")), None).await.0, 200);
    let (s, body) = act("town/evaluator-ana", r#"{"action":"accept"}"#).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("evaluator"), "{body}");
    assert_eq!(act("town/housing", r#"{"action":"accept"}"#).await.0, 200);
    // The housing office cannot report for the police.
    let (s, body) = act("town/housing", r#"{"action":"report","role":"PublicSecurity"}"#).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not public_security's"), "{body}");
    let (s, body) = act("town/housing", r#"{"action":"report","role":"Housing"}"#).await;
    assert_eq!((s, body["state"].as_str()), (200, Some("in_progress")), "{body}");
    let (s, body) = act("town/public-security", r#"{"action":"report","role":"PublicSecurity"}"#).await;
    assert_eq!((s, body["state"].as_str()), (200, Some("resolved")), "the last party's report resolves it: {body}");

    let core = core.lock().unwrap();
    let lines: Vec<String> =
        core.store().unwrap().audit_entries().unwrap().iter().map(|s| format!("{} {} {}", s.entry.actor, s.entry.what, s.entry.outcome)).collect();
    assert!(lines.iter().any(|l| l.starts_with("town/housing report refused 403")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("committee:C01/cadre whistle dispatched -> dispatched (medium)")), "{lines:#?}");
}
