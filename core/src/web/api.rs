//! The HTTP JSON API (axum): list and filter work orders, fetch one with its history, act on it.
//!
//! Every request carries a token (`Authorization: Bearer ...`, see [`crate::auth`]) issued for a principal
//! bound to a scope in the tree district > town > committee > estate: `district`, `town`, `committee:C03`
//! or `estate:E012`, optionally followed by `/name` (parsed by [`towntwin_contracts::principal::Principal`]). A principal
//! sees and acts only inside its scope: a list is filtered to it; fetching or acting on an order outside it
//! is 403. Road orders (the fences) belong to the town. Every action, every order viewed and every refusal
//! to an authenticated caller (403, 404, 409) is recorded in the audit log ([`crate::audit`]); a request without a valid token
//! (401) is logged by `tracing` only, so anonymous traffic cannot grow the audit log. Errors are JSON `{"error": "..."}` with 400 (bad
//! request), 401 (no principal), 403, 404 or 409 (an illegal transition).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::state::{Api, ApiError};
use crate::orders::{Action, Loop, Order, OrderEvent};
use crate::principal::{Principal, Scope};
use crate::service::{Core, CoreError};
use crate::time::parse_rfc3339;

/// The caller, from `Authorization: Bearer <token>`: 401 without one or with one this core did not issue.
/// An `X-Principal` header proves nothing and is ignored.
fn principal(api: &Api, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let unauthorized = |why: &str| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            format!("{why}: send Authorization: Bearer <token> (issue one with `towntwin core token issue --principal <scope>`)"),
        )
    };
    let raw = headers.get("authorization").ok_or_else(|| unauthorized("no token"))?;
    let token =
        raw.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty()).ok_or_else(|| unauthorized("not a bearer token"))?;
    let core = api.lock()?;
    core.principal_of(token).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?.ok_or_else(|| {
        tracing::warn!("API: a request with a token this core did not issue (401)");
        unauthorized("unknown token")
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    state: Option<String>,
    rule: Option<String>,
    #[serde(rename = "loop")]
    level: Option<String>,
    /// Estate, road or committee id.
    scope: Option<String>,
    /// Created at or after / before, RFC 3339.
    from: Option<String>,
    to: Option<String>,
}

#[derive(Serialize)]
struct Summary<'a> {
    id: u64,
    rule: &'a str,
    area: &'a str,
    subject: &'a str,
    state: &'a str,
    level: Loop,
    count: u32,
    created_at: String,
    updated_at: String,
}

fn summary(o: &Order) -> Summary<'_> {
    Summary {
        id: o.id,
        rule: &o.rule,
        area: &o.area,
        subject: &o.subject,
        state: o.state.as_str(),
        level: o.level,
        count: o.count,
        created_at: crate::time::rfc3339(o.created_at),
        updated_at: crate::time::rfc3339(o.updated_at),
    }
}

async fn list(
    State(api): State<Api>,
    headers: HeaderMap,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = principal(&api, &headers)?.scope;
    let Query(f) = filter.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        v.as_deref().map(|s| parse_rfc3339(s).ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, format!("`{name}`: `{s}` is not an RFC 3339 time")))).transpose()
    };
    let (from, to) = (time("from", &f.from)?, time("to", &f.to)?);
    let level = match f.level.as_deref() {
        None => None,
        Some("small") | Some("Small") => Some(Loop::Small),
        Some("medium") | Some("Medium") => Some(Loop::Medium),
        Some("large") | Some("Large") => Some(Loop::Large),
        Some(x) => return Err(ApiError(StatusCode::BAD_REQUEST, format!("`loop`: `{x}` is not small, medium or large"))),
    };
    let core = api.lock()?;
    let out: Vec<Summary> = core
        .orders
        .orders
        .iter()
        .filter(|o| api.sees(&scope, o))
        .filter(|o| f.state.as_deref().is_none_or(|s| o.state.as_str() == s))
        .filter(|o| f.rule.as_deref().is_none_or(|r| o.rule == r))
        .filter(|o| level.is_none_or(|l| o.level == l))
        .filter(|o| f.scope.as_deref().is_none_or(|s| o.area == s || api.committee_of(&o.area) == Some(s)))
        .filter(|o| from.is_none_or(|t| o.created_at >= t) && to.is_none_or(|t| o.created_at < t))
        .map(summary)
        .collect();
    Ok(axum::Json(out).into_response())
}

#[derive(Serialize)]
struct Detail<'a> {
    order: &'a Order,
    history: Vec<OrderEvent>,
}

fn find<'a>(core: &'a Core, api: &Api, scope: &Scope, id: u64) -> Result<&'a Order, ApiError> {
    let o = core.orders.get(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no work order {id}")))?;
    if !api.sees(scope, o) {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("work order {id} is outside your scope")));
    }
    Ok(o)
}

async fn fetch(State(api): State<Api>, headers: HeaderMap, Path(id): Path<u64>) -> Result<Response, ApiError> {
    let principal = principal(&api, &headers)?;
    let mut core = api.lock()?;
    if let Err(e) = find(&core, &api, &principal.scope, id) {
        return Err(audited(&mut core, &principal, "view", id, e));
    }
    // Who opened which order, and when (event time): an operator's time to notice is measured from this.
    core.audit(&principal, "view", &format!("order {id}"), "seen")
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("the audit log could not be written: {e}")))?;
    let order = find(&core, &api, &principal.scope, id)?;
    let history = match core.store() {
        Some(s) => s.order_events(id).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        None => Vec::new(),
    };
    Ok(axum::Json(Detail { order, history }).into_response())
}

async fn act(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Result<axum::Json<Action>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&api, &headers)?;
    // A body over the limit keeps its 413; any other refusal is a 400 that says what was expected.
    let axum::Json(action) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
        ApiError(status, format!("{}; expected e.g. {{\"action\":\"accept\"}} or {{\"action\":\"return\",\"reason\":\"...\"}}", e.body_text()))
    })?;
    if let Some(r) = action.reason()
        && r.chars().count() > crate::limits::MAX_REASON_CHARS
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`reason` is {} characters long: at most {}", r.chars().count(), crate::limits::MAX_REASON_CHARS),
        ));
    }
    let mut core = api.lock()?;
    if let Err(e) = find(&core, &api, &principal.scope, id).and_then(|_| reports_for_own_part(&principal, &action)) {
        return Err(audited(&mut core, &principal, action.name(), id, e));
    }
    let name = action.name();
    match core.act(id, &principal.to_string(), action) {
        Ok((state, transitions)) => {
            if let Some(out) = api.orders_out() {
                let notices: Vec<_> = transitions.iter().map(|t| core.orders.notice(t)).collect();
                out.publish(&notices);
            }
            Ok(axum::Json(serde_json::json!({ "id": id, "state": state.as_str(), "transitions": transitions })).into_response())
        }
        Err(CoreError::Illegal(e)) => Err(audited(&mut core, &principal, name, id, ApiError(StatusCode::CONFLICT, e.to_string()))),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// A joint visit's part is reported by the department that did it: a principal playing a role
/// ([`Principal::role`]) reports only its own part (403 otherwise); one playing none, for any.
fn reports_for_own_part(p: &Principal, action: &Action) -> Result<(), ApiError> {
    if p.is_evaluator() {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("{p} is a drill's evaluator: it observes, and acts on no order")));
    }
    match action {
        Action::Report { role } if !p.may_report_for(*role) => Err(ApiError(StatusCode::FORBIDDEN, report_refusal(p, *role))),
        _ => Ok(()),
    }
}

/// Why `p` may not report for `role`.
pub(super) fn report_refusal(p: &Principal, role: crate::orders::Role) -> String {
    let own = p.role().map_or("", |r| r.name());
    format!("{p} reports its own part ({own}) of a joint visit, not {}'s", role.name())
}

/// Records a refusal to an authenticated caller in the audit log (outside its scope: 403; illegal: 409;
/// a missing order: 404) and returns it. If the audit log cannot be written, the caller gets a 500: no
/// refusal goes unrecorded.
fn audited(core: &mut Core, principal: &Principal, what: &str, id: u64, refusal: ApiError) -> ApiError {
    let outcome = format!("refused {}: {}", refusal.0.as_u16(), refusal.1);
    match core.audit(principal, what, &format!("order {id}"), &outcome) {
        Ok(()) => refusal,
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("the audit log could not be written: {e}")),
    }
}

/// The JSON API's routes.
pub(super) fn routes(api: Api) -> Router {
    Router::new().route("/orders", get(list)).route("/orders/{id}", get(fetch)).route("/orders/{id}/actions", post(act)).with_state(api)
}
