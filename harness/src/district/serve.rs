//! The district's API and console over PostgreSQL: every registered town's orders read from its schema,
//! read-only (each town's core is the only writer of its own).
//!
//! A caller proves who it is with a bearer token (the API) or the console's cookie: a token issued into
//! the district's registry (`towntwin district token issue`) for the `district` principal sees every town;
//! a token issued into one town's schema (`towntwin core token issue --store ...?schema=TOWN`) sees that
//! town only, and within it what its scope reaches (a committee its estates, an estate itself). Another
//! town is 403, an unknown one 404, no token 401. JSON errors are `{"error": "..."}`.
//!
//! - `GET /district/towns`: the towns the caller sees, with their events, orders and open orders;
//! - `GET /district/towns/{id}/orders?state=&rule=&loop=`: a town's orders;
//! - `GET /district/towns/{id}/orders/{n}`: one order and its history;
//! - `GET /district` (the console: sign in with a token, then the towns), `GET /district/view/{id}` (a
//!   town's orders), `GET /district/view/{id}/{n}` (one order);
//! - `GET /healthz`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use towntwin_core::orders::{Loop, Order};
use towntwin_core::principal::{Principal, Scope};
use towntwin_core::store::postgres::{District as Registry, Reader, RegisteredTown, Url};
use towntwin_core::web::html::{cookie, esc, same_origin};

/// The console's cookie.
const COOKIE: &str = "towntwin_district";

/// What the handlers share: the registry and a reader per town, opened on first use.
#[derive(Clone)]
pub struct State {
    registry: Arc<Mutex<Registry>>,
    readers: Arc<Mutex<HashMap<String, Arc<Reader>>>>,
    url: Url,
}

impl State {
    /// Opens the district's registry in the database `url` names.
    pub fn open(url: &Url) -> anyhow::Result<State> {
        Ok(State { registry: Arc::new(Mutex::new(Registry::open(url)?)), readers: Arc::default(), url: url.clone() })
    }

    fn registry(&self) -> Result<std::sync::MutexGuard<'_, Registry>, Refusal> {
        self.registry.lock().map_err(|_| Refusal(StatusCode::INTERNAL_SERVER_ERROR, "the registry's lock was poisoned".into()))
    }

    fn towns(&self) -> Result<Vec<RegisteredTown>, Refusal> {
        self.registry()?.towns().map_err(internal)
    }

    fn reader(&self, town: &RegisteredTown) -> Result<Arc<Reader>, Refusal> {
        let mut readers = self.readers.lock().map_err(|_| Refusal(StatusCode::INTERNAL_SERVER_ERROR, "the readers' lock was poisoned".into()))?;
        if let Some(r) = readers.get(&town.id) {
            return Ok(r.clone());
        }
        let url = self.url.in_schema(&town.schema).map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let r = Arc::new(Reader::open(&url).map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("town {}: {e}", town.id)))?);
        readers.insert(town.id.clone(), r.clone());
        Ok(r)
    }
}

/// Who is calling: a district principal, or a principal of one town.
#[derive(Debug, Clone)]
struct Caller {
    principal: Principal,
    /// `None`: the district's (every town); `Some(id)`: that town's only.
    town: Option<String>,
}

impl Caller {
    fn sees_town(&self, id: &str) -> bool {
        self.town.as_deref().is_none_or(|t| t == id)
    }
}

#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The caller of a token: the district's registry first, then each town's schema.
fn caller(state: &State, token: Option<&str>) -> Result<Caller, Refusal> {
    let unauthorized = |why: &str| {
        Refusal(
            StatusCode::UNAUTHORIZED,
            format!(
                "{why}: send Authorization: Bearer <token> (a district token from `towntwin district token issue`, or a town's from `towntwin core token issue`)"
            ),
        )
    };
    let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or_else(|| unauthorized("no token"))?;
    let hash = towntwin_core::auth::hash(token);
    if let Some(p) = state.registry()?.token(&hash).map_err(internal)? {
        let principal: Principal = p.parse().map_err(internal)?;
        return Ok(Caller { principal, town: None });
    }
    for t in state.towns()? {
        let Ok(reader) = state.reader(&t) else { continue };
        if let Some(p) = reader.token(&hash).map_err(internal)? {
            let principal: Principal = p.parse().map_err(internal)?;
            if principal.scope == Scope::District {
                // A town cannot make a district principal: its own store is all it vouches for.
                return Ok(Caller { principal: Principal::new(Scope::Town, principal.actor.as_deref()), town: Some(t.id) });
            }
            return Ok(Caller { principal, town: Some(t.id) });
        }
    }
    tracing::warn!("district API: a request with a token no one issued (401)");
    Err(unauthorized("unknown token"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// Runs a blocking body (the store's calls block) off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Refusal> + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

/// A town the caller may see, or 404 / 403.
fn town_for(state: &State, who: &Caller, id: &str) -> Result<RegisteredTown, Refusal> {
    let town = state.towns()?.into_iter().find(|t| t.id == id).ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("no town `{id}` in this district")))?;
    if !who.sees_town(id) {
        return Err(Refusal(StatusCode::FORBIDDEN, format!("town `{id}` is outside your scope ({})", who.principal)));
    }
    Ok(town)
}

/// The town's orders the caller's scope reaches.
fn visible_orders(state: &State, who: &Caller, town: &RegisteredTown) -> Result<Vec<Order>, Refusal> {
    let orders = state.reader(town)?.orders().map_err(internal)?;
    if matches!(who.principal.scope, Scope::District | Scope::Town) {
        return Ok(orders);
    }
    let areas = state.registry()?.areas(&town.id).map_err(internal)?;
    Ok(orders.into_iter().filter(|o| who.principal.scope.reaches(&o.area, areas.get(&o.area).and_then(|c| c.as_deref()))).collect())
}

#[derive(Serialize)]
struct TownRow {
    id: String,
    name: String,
    events: u64,
    orders: usize,
    open: usize,
    by_loop: [usize; 3],
}

fn town_rows(state: &State, who: &Caller) -> Result<Vec<TownRow>, Refusal> {
    let mut rows = Vec::new();
    for t in state.towns()?.into_iter().filter(|t| who.sees_town(&t.id)) {
        let orders = visible_orders(state, who, &t)?;
        let events = state.reader(&t)?.event_count().map_err(internal)?;
        let mut by_loop = [0; 3];
        for o in orders.iter().filter(|o| o.state.is_open()) {
            by_loop[o.level as usize] += 1;
        }
        rows.push(TownRow { id: t.id, name: t.name, events, orders: orders.len(), open: by_loop.iter().sum(), by_loop });
    }
    Ok(rows)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    state: Option<String>,
    rule: Option<String>,
    #[serde(rename = "loop")]
    level: Option<String>,
}

fn filtered(orders: Vec<Order>, f: &Filter) -> Result<Vec<Order>, Refusal> {
    let level = match f.level.as_deref() {
        None | Some("") => None,
        Some("small") => Some(Loop::Small),
        Some("medium") => Some(Loop::Medium),
        Some("large") => Some(Loop::Large),
        Some(x) => return Err(Refusal(StatusCode::BAD_REQUEST, format!("`loop`: `{x}` is not small, medium or large"))),
    };
    Ok(orders
        .into_iter()
        .filter(|o| f.state.as_deref().filter(|s| !s.is_empty()).is_none_or(|s| o.state.as_str() == s))
        .filter(|o| f.rule.as_deref().filter(|s| !s.is_empty()).is_none_or(|r| o.rule == r))
        .filter(|o| level.is_none_or(|l| o.level == l))
        .collect())
}

async fn api_towns(axum::extract::State(state): axum::extract::State<State>, headers: HeaderMap) -> Result<Response, Refusal> {
    let token = bearer(&headers).map(str::to_string);
    blocking(move || {
        let who = caller(&state, token.as_deref())?;
        Ok(axum::Json(town_rows(&state, &who)?).into_response())
    })
    .await
}

async fn api_orders(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Refusal> {
    let Query(f) = filter.map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.body_text()))?;
    let token = bearer(&headers).map(str::to_string);
    blocking(move || {
        let who = caller(&state, token.as_deref())?;
        let town = town_for(&state, &who, &id)?;
        let orders = filtered(visible_orders(&state, &who, &town)?, &f)?;
        let rows: Vec<serde_json::Value> = orders
            .iter()
            .map(|o| {
                serde_json::json!({
                    "id": o.id, "rule": o.rule, "area": o.area, "subject": o.subject, "state": o.state.as_str(), "level": o.level,
                    "created_at": towntwin_core::time::rfc3339(o.created_at), "updated_at": towntwin_core::time::rfc3339(o.updated_at),
                })
            })
            .collect();
        Ok(axum::Json(rows).into_response())
    })
    .await
}

/// One order and its history, or 404 (no such order, or one outside the caller's scope: a town's principal
/// learns nothing of orders it may not see). The view, or the refusal, is written to the town's audit log
/// as the town's own API writes it (who, in what scope, which order, event time), marked as the district's;
/// if the audit log cannot be written the caller gets a 500: no view goes unrecorded.
fn one_order(state: &State, who: &Caller, id: &str, n: u64) -> Result<(RegisteredTown, Order, Vec<towntwin_core::orders::OrderEvent>), Refusal> {
    let town = town_for(state, who, id)?;
    let found = visible_orders(state, who, &town)?
        .into_iter()
        .find(|o| o.id == n)
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("no work order {n} in town `{id}` within your scope")));
    let outcome = match &found {
        Ok(_) => "seen (district view)".to_string(),
        Err(r) => format!("refused {} (district view): {}", r.0.as_u16(), r.1),
    };
    let url = state.url.in_schema(&town.schema).map_err(internal)?;
    let (actor, scope, target) = (who.principal.to_string(), who.principal.scope.to_string(), format!("order {n}"));
    towntwin_core::store::postgres::append_audit(&url, move |at| towntwin_core::audit::Entry { at, actor, scope, what: "view".into(), target, outcome })
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("the audit log could not be written: {e}")))?;
    let order = found?;
    let history = state.reader(&town)?.order_events(n).map_err(internal)?;
    Ok((town, order, history))
}

async fn api_order(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Path((id, n)): Path<(String, u64)>,
) -> Result<Response, Refusal> {
    let token = bearer(&headers).map(str::to_string);
    blocking(move || {
        let who = caller(&state, token.as_deref())?;
        let (_, order, history) = one_order(&state, &who, &id, n)?;
        Ok(axum::Json(serde_json::json!({ "town": id, "order": order, "history": history })).into_response())
    })
    .await
}

fn page(title: &str, who: Option<&Caller>, body: &str) -> Html<String> {
    let signed = who.map_or_else(String::new, |w| {
        format!(
            "<form method=post action=/district/logout style='float:right'>{} <button>Sign out</button></form>",
            esc(&match &w.town {
                None => w.principal.to_string(),
                Some(t) => format!("{} of {t}", w.principal),
            })
        )
    });
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{t} · towntwin district</title>\
         <style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
         th{{background:#eee}}.n{{text-align:right}}</style></head><body>{signed}<h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

/// The console's caller, or the response instead of the page: to the sign-in page without a valid token.
fn console_caller(state: &State, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let token = cookie(headers, COOKIE).map(str::to_string);
    caller(state, token.as_deref())
        .map_err(|r| Box::new(if r.0 == StatusCode::UNAUTHORIZED { Redirect::to("/district/login").into_response() } else { r.into_response() }))
}

async fn console_home(axum::extract::State(state): axum::extract::State<State>, headers: HeaderMap) -> Response {
    let out = blocking(move || {
        let who = match console_caller(&state, &headers) {
            Ok(w) => w,
            Err(r) => return Ok(*r),
        };
        let rows = town_rows(&state, &who)?;
        let mut body = String::from(
            "<table><tr><th>Town</th><th>Id</th><th class=n>Events logged</th><th class=n>Work orders</th><th class=n>Open</th>\
             <th class=n>Open, small loop</th><th class=n>medium</th><th class=n>large</th></tr>",
        );
        for r in &rows {
            body.push_str(&format!(
                "<tr><td><a href='/district/view/{id}'>{name}</a></td><td>{id}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
                 <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                r.events,
                r.orders,
                r.open,
                r.by_loop[0],
                r.by_loop[1],
                r.by_loop[2],
                id = esc(&r.id),
                name = esc(&r.name)
            ));
        }
        body.push_str("</table>");
        Ok(page("The district's towns", Some(&who), &body).into_response())
    })
    .await;
    out.unwrap_or_else(IntoResponse::into_response)
}

async fn console_town(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let f = match filter {
        Ok(Query(f)) => f,
        Err(e) => return Refusal(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let out = blocking(move || {
        let who = match console_caller(&state, &headers) {
            Ok(w) => w,
            Err(r) => return Ok(*r),
        };
        let town = town_for(&state, &who, &id)?;
        let mut orders = filtered(visible_orders(&state, &who, &town)?, &f)?;
        orders.sort_by_key(|o| std::cmp::Reverse(o.updated_at));
        let shown = orders.len().min(500);
        let mut body = format!(
            "<p><a href=/district>All towns</a> · {} work orders{}; the {} most recently changed below.</p>\
             <form><label>State <input name=state value='{}'></label> <label>Rule <input name=rule value='{}'></label> \
             <label>Loop <input name=loop value='{}'></label> <button>Filter</button></form>\
             <table><tr><th>Order</th><th>Rule</th><th>Area</th><th>Subject</th><th>State</th><th>Loop</th><th>Updated</th></tr>",
            orders.len(),
            if f.state.is_some() || f.rule.is_some() || f.level.is_some() { " matching" } else { "" },
            shown,
            esc(f.state.as_deref().unwrap_or("")),
            esc(f.rule.as_deref().unwrap_or("")),
            esc(f.level.as_deref().unwrap_or("")),
        );
        for o in &orders[..shown] {
            body.push_str(&format!(
                "<tr><td><a href='/district/view/{t}/{n}'>{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td></tr>",
                esc(&o.rule),
                esc(&o.area),
                esc(&o.subject),
                o.state.as_str(),
                o.level,
                &towntwin_core::time::rfc3339(o.updated_at)[..16].replace('T', " "),
                t = esc(&town.id),
                n = o.id
            ));
        }
        body.push_str("</table>");
        Ok(page(&format!("{} ({})", town.name, town.id), Some(&who), &body).into_response())
    })
    .await;
    out.unwrap_or_else(IntoResponse::into_response)
}

async fn console_order(axum::extract::State(state): axum::extract::State<State>, headers: HeaderMap, Path((id, n)): Path<(String, u64)>) -> Response {
    let out = blocking(move || {
        let who = match console_caller(&state, &headers) {
            Ok(w) => w,
            Err(r) => return Ok(*r),
        };
        let (town, o, history) = one_order(&state, &who, &id, n)?;
        let mut body = format!(
            "<p><a href='/district/view/{t}'>{name}</a></p><p>{} · {} · {} · <b>{}</b> · {:?} loop</p><h2>History</h2>\
             <table><tr><th>At</th><th>Actor</th><th>Action</th><th>From</th><th>To</th><th>Reason</th></tr>",
            esc(&o.rule),
            esc(&o.area),
            esc(&o.subject),
            o.state.as_str(),
            o.level,
            t = esc(&town.id),
            name = esc(&town.name)
        );
        for e in &history {
            let v = serde_json::to_value(e).unwrap_or_default();
            let f = |k: &str| esc(&v[k].as_str().map(str::to_string).unwrap_or_else(|| if v[k].is_null() { String::new() } else { v[k].to_string() }));
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                towntwin_core::time::rfc3339(e.at),
                f("actor"),
                f("action"),
                f("from"),
                f("to"),
                f("reason")
            ));
        }
        body.push_str("</table>");
        Ok(page(&format!("Work order {n} of {}", town.name), Some(&who), &body).into_response())
    })
    .await;
    out.unwrap_or_else(IntoResponse::into_response)
}

async fn login_page() -> Html<String> {
    page(
        "Sign in to the district",
        None,
        "<form method=post action=/district/login><label>Token <input name=token type=password size=50 autofocus></label> <button>Sign in</button></form>",
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(axum::extract::State(state): axum::extract::State<State>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if let Err(origin) = same_origin(&headers) {
        return Refusal(StatusCode::FORBIDDEN, format!("a form from another origin ({origin})")).into_response();
    }
    let token = f.token.trim().to_string();
    let checked = {
        let token = token.clone();
        blocking(move || caller(&state, Some(&token))).await
    };
    match checked {
        Ok(_) => {
            let c = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/district");
            ([(header::SET_COOKIE, c)], Redirect::to("/district")).into_response()
        }
        Err(r) if r.0 == StatusCode::UNAUTHORIZED => (
            StatusCode::UNAUTHORIZED,
            page("Sign in to the district", None, "<p>That token is no one's (unknown, expired or revoked).</p><p><a href=/district/login>Again</a></p>"),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn logout(headers: HeaderMap) -> Response {
    if let Err(origin) = same_origin(&headers) {
        return Refusal(StatusCode::FORBIDDEN, format!("a form from another origin ({origin})")).into_response();
    }
    ([(header::SET_COOKIE, format!("{COOKIE}=; Max-Age=0; Path=/district"))], Redirect::to("/district/login")).into_response()
}

/// The district's API, console and health probe.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/district/towns", get(api_towns))
        .route("/district/towns/{id}/orders", get(api_orders))
        .route("/district/towns/{id}/orders/{n}", get(api_order))
        .route("/district", get(console_home))
        .route("/district/login", get(login_page).post(login))
        .route("/district/logout", post(logout))
        .route("/district/view/{id}", get(console_town))
        .route("/district/view/{id}/{n}", get(console_order))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
}

/// Serves the district on `listener` until `stop` resolves.
pub async fn serve(listener: tokio::net::TcpListener, state: State, stop: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(stop).await
}
