//! What the HTTP API reads from a caller: the body of `POST /orders/{id}/actions` (an `Action` as JSON,
//! with the API's reason-length check) and principals (`str::parse`, as tokens are issued for them); and
//! actions applied to work orders through `Orders::act`, checked against `next_state`.
//!
//! Input: the whole input is one body and one principal. Then line by line, a script over a set of work
//! orders (one is opened first): a line that is an action body is applied to the current order; a
//! principal becomes the actor of what follows; `+<minutes>` moves event time on (deadlines escalate);
//! `#<id>` picks the current order; `!<key>` opens (or repeats) an order for that key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use towntwin_core::limits::MAX_REASON_CHARS;
use towntwin_core::orders::{Action, Orders, State, next_state};
use towntwin_core::principal::{MAX_ACTOR_LEN, Principal, Scope};
use towntwin_core::rules::Finding;
use towntwin_core::time::{MINUTE, Millis};
use towntwin_fuzz as fx;

/// The API's reading of a body: JSON as axum's `Json` extractor reads it, then the reason's length.
fn body(bytes: &[u8]) -> Option<Action> {
    let a: Action = serde_json::from_slice(bytes).ok()?;
    let back: Action = serde_json::from_slice(&serde_json::to_vec(&a).expect("an action serialises")).expect("a written action reads back");
    assert_eq!(back, a);
    assert_eq!(serde_json::to_value(&a).expect("serialises")["action"], a.name());
    match a.reason() {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => None,
        _ => Some(a),
    }
}

fn principal(text: &str) -> Option<Principal> {
    match text.parse::<Principal>() {
        Ok(p) => {
            let s = p.to_string();
            assert_eq!(s, text, "a principal formats as it was written");
            assert_eq!(s.parse::<Principal>().as_ref(), Ok(&p));
            let json = serde_json::to_string(&p).expect("serialises");
            assert_eq!(serde_json::from_str::<Principal>(&json).ok().as_ref(), Some(&p));
            if let Some(a) = &p.actor {
                assert!(!a.is_empty() && a.len() <= MAX_ACTOR_LEN);
            }
            if let Scope::Committee(id) | Scope::Estate(id) = &p.scope {
                assert!(id.len() >= 2 && id.is_ascii());
            }
            Some(p)
        }
        Err(e) => {
            assert!(e.to_string().contains("expected district"));
            None
        }
    }
}

fn finding(key: &str, at: Millis) -> Finding {
    let rule = &fx::rules().rules[key.len() % fx::rules().rules.len()];
    Finding { rule: rule.id.clone(), key: key.into(), area: "E001".into(), estate: Some(0), subject: key.into(), at, detail: String::new() }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(a) = body(data) {
        // Every state either moves or refuses with a message naming the action and the state.
        for s in [
            State::Created,
            State::Dispatched,
            State::Accepted,
            State::InProgress,
            State::Resolved,
            State::Verified,
            State::Closed,
            State::Returned,
            State::Cancelled,
        ] {
            if let Err(why) = next_state(s, &a) {
                assert!(why.contains(a.name()), "{why}");
            }
        }
    }
    principal(&text);

    let (rules, policy) = (fx::rules(), fx::policy());
    let mut orders = Orders::default();
    let mut now: Millis = 1_772_380_800_000;
    let mut current = orders.on_finding(&finding("first", now), rules, policy).expect("a new order is dispatched");
    let mut actor = "system".to_string();
    for line in data.split(|&b| b == b'\n').take(200) {
        let Ok(l) = std::str::from_utf8(line) else { continue };
        if let Some(m) = l.strip_prefix('+').and_then(|m| m.parse::<u32>().ok()).filter(|m| *m <= 1_000_000) {
            now += m as Millis * MINUTE;
            orders.tick(now).unwrap_or_else(|e| panic!("a deadline escalation was refused: {e}"));
        } else if let Some(id) = l.strip_prefix('#').and_then(|n| n.parse::<u64>().ok()) {
            current = id;
        } else if let Some(key) = l.strip_prefix('!') {
            current = orders.on_finding(&finding(key, now), rules, policy).expect("a new order is dispatched");
        } else if let Some(p) = principal(l) {
            actor = p.to_string();
        } else if let Some(a) = body(line) {
            let before = orders.get(current).map(|o| (o.state, o.level, o.reopened));
            let expect = before.map(|(s, _, _)| next_state(s, &a));
            let n = orders.pending.len();
            match (orders.act(current, now, &actor, a.clone()), expect) {
                (Ok(to), Some(Ok(want))) => {
                    // The last party's report on a joint visit resolves it.
                    assert!(to == want || (matches!(a, Action::Report { .. }) && to == State::Resolved), "{to:?} for {want:?}");
                    let o = orders.get(current).expect("acted on");
                    assert_eq!((o.state, o.updated_at), (to, now));
                    assert!(o.level >= before.expect("exists").1, "a loop never goes down");
                    let e = orders.pending.last().expect("a transition is logged");
                    assert_eq!((orders.pending.len(), e.order, e.to, e.action.as_str()), (n + 1, current, to, a.name()));
                    match &a {
                        Action::Report { role } => assert_eq!(e.reason.as_deref(), Some(format!("for {}", role.name()).as_str())),
                        _ => assert_eq!(e.reason.as_deref(), a.reason()),
                    }
                }
                (Err(_), None) => {}
                // Refusals the state alone does not decide: an escalation from the large loop, a report that is
                // no joint visit's party's, a plain resolve of a joint visit.
                (Err(e), Some(Ok(_))) => assert!(
                    (matches!(a, Action::Escalate { .. }) && e.why.contains("large loop"))
                        || matches!(a, Action::Report { .. })
                        || (matches!(a, Action::Resolve) && e.why.contains("joint visit")),
                    "{e}"
                ),
                (Err(e), Some(Err(why))) => assert_eq!(e.why, why),
                (got, want) => panic!("act gave {got:?}, next_state {want:?}"),
            }
        }
    }
    // Each order's history runs forward in event time, and ends where the order is.
    let mut last: std::collections::HashMap<u64, (Millis, State)> = std::collections::HashMap::new();
    for e in &orders.pending {
        if let Some((at, to)) = last.insert(e.order, (e.at, e.to)) {
            assert!(e.at >= at, "order {}: a transition at {} after one at {at}", e.order, e.at);
            assert_eq!(e.from, Some(to), "order {}: a transition from {:?} after one to {to:?}", e.order, e.from);
        }
    }
    for o in &orders.orders {
        assert_eq!(last.get(&o.id).map(|l| l.1), Some(o.state), "order {}: its history does not end in its state", o.id);
    }
});
