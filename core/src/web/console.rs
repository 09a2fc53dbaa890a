//! The operators' web console, served by the core beside its API: the one a town's operations centre,
//! committee cadres and property managers use (and a drill's trainees). Server-rendered HTML with the
//! vendored htmx and its SSE extension (`assets/console/`); no JavaScript build step, nothing fetched from
//! the network.
//!
//! - `/console/login`: log in with a token the core issued (the API's authentication); the console keeps it
//!   in an `HttpOnly`, `SameSite=Strict` cookie, so another site cannot act through it.
//! - `/console`: the work-order queue of the principal's scope, refreshed live: `/console/events` is a
//!   server-sent event stream of the orders that changed within the scope, and each one makes the page
//!   fetch the queue again (`/console/queue`).
//! - `/console/orders/{id}`: an order with its history and the actions legal in its state; opening it is
//!   audited (an operator's time to notice is measured from it), acting is the API's act.
//! - `/console/map`: the town's map, each estate where the town file places it as a block of its buildings
//!   with its gates, and the open orders on it, refreshed live.
//!
//! Everything outside the principal's scope is 403, and audited, as in the API.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::html::{cookie, esc, same_origin as from_here};
use super::i18n::Lang;
use super::state::Api;
use crate::orders::{Action, Order, State as OrderState, next_state};
use crate::principal::{Principal, Scope};
use crate::service::CoreError;
use crate::time::{Local, Millis};

pub static HTMX: &[u8] = include_bytes!("../../../assets/console/htmx.min.js");
static SSE: &[u8] = include_bytes!("../../../assets/console/sse.min.js");

/// The cookie the console keeps the token in.
const COOKIE: &str = "towntwin_token";
/// The most orders a queue shows (newest first).
const QUEUE_ROWS: usize = 300;

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/console", get(queue_page))
        .route("/console/queue", get(queue_fragment))
        .route("/console/events", get(events))
        .route("/console/orders/{id}", get(order_page))
        .route("/console/orders/{id}/actions", post(act))
        .route("/console/map", get(map_page))
        .route("/console/map/svg", get(map_fragment))
        .route("/console/login", get(login_page).post(login))
        .route("/console/lang/{lang}", get(|Path(lang): Path<String>, headers: HeaderMap| async move { super::i18n::choose(&lang, &headers, "/console") }))
        .route("/console/logout", post(logout))
        .route("/console/static/htmx.min.js", get(|| async { js(HTMX) }))
        .route("/console/static/sse.min.js", get(|| async { js(SSE) }))
        .with_state(api)
}

fn js(body: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=86400")], body).into_response()
}

/// Town (local) time to the minute.
fn town_time(t: Millis) -> String {
    let l = Local::of(t);
    format!("{} {:02}:{:02}", l.date_string(), l.hour, l.minute)
}

fn page(lang: Lang, title: &str, who: Option<&Principal>, body: &str) -> String {
    let switch = super::i18n::switch(lang, "/console");
    let nav = match who {
        Some(p) => format!(
            "<nav><a href=/console>{queue}</a> · <a href=/console/map>{map}</a> · {signed} <b id=principal>{}</b> \
             <form method=post action=/console/logout style=display:inline><button>{out}</button></form> · {switch}</nav>",
            esc(&p.to_string()),
            queue = lang.t("Queue"),
            map = lang.t("Map"),
            signed = lang.t("signed in as"),
            out = lang.t("Log out"),
        ),
        None => format!("<nav>{switch}</nav>"),
    };
    format!(
        "<!doctype html><html lang={l}><head><meta charset=utf-8><title>{t} · towntwin console</title>\
         <script src=/console/static/htmx.min.js></script><script src=/console/static/sse.min.js></script><style>\
         body{{font-family:sans-serif;margin:1em 2em;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         th{{background:#eee}}nav{{margin-bottom:1em}}.state-dispatched{{background:#fee}}.state-accepted,.state-in_progress{{background:#ffd}}\
         .state-resolved,.state-verified{{background:#efe}}.error{{color:#a00}}tr.mine{{font-weight:bold}}form.act{{display:inline;margin-right:.5em}}</style></head>\
         <body>{nav}<h1>{t}</h1>{body}</body></html>",
        t = esc(title),
        l = lang.html()
    )
}

/// A console page's refusal, as a page (and for htmx, the same page).
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.0 == StatusCode::UNAUTHORIZED {
            return Redirect::to("/console/login").into_response();
        }
        (
            self.0,
            Html(page(
                Lang::Zh,
                &format!("{} {} · {}", self.0.as_u16(), self.0.canonical_reason().unwrap_or(""), refusal_zh(self.0)),
                None,
                &format!("<p class=error>{}</p><p><a href=/console>返回工单队列 · Back to the queue</a></p>", esc(&self.1)),
            )),
        )
            .into_response()
    }
}

/// What a refusal's status means, in Chinese, beside the English reason (the refusal's detail is the
/// core's own message, in English, as the API gives it).
fn refusal_zh(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "请求有误",
        403 => "无权查看或操作",
        404 => "未找到",
        409 => "与工单当前状态冲突",
        503 => "服务暂不可用",
        s if s >= 500 => "服务出错",
        _ => "请求被拒绝",
    }
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE).map(str::to_string)
}

/// The signed-in principal, or a redirect to the login page.
fn who(api: &Api, headers: &HeaderMap) -> Result<Principal, Refusal> {
    let token = token_of(headers).ok_or_else(|| Refusal(StatusCode::UNAUTHORIZED, "not signed in".into()))?;
    let core = api.lock().map_err(|e| Refusal(e.0, e.1))?;
    core.principal_of(&token)
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| Refusal(StatusCode::UNAUTHORIZED, "unknown token".into()))
}

async fn login_page(headers: HeaderMap) -> Html<String> {
    let lang = Lang::of(&headers);
    Html(page(
        lang,
        lang.t("Sign in"),
        None,
        &format!(
            "<form method=post action=/console/login><p><label>{token} <input id=token name=token type=password size=70 autofocus></label></p>\
             <p><button id=signin>{sign}</button></p></form><p>{how}</p>",
            token = lang.t("Token"),
            sign = lang.t("Sign in"),
            how = lang.t(
                "A token is issued for a principal (its scope: the town, a committee or an estate) with <code>towntwin core token issue --principal estate:E012/property</code>; a drill prints its trainees'."
            ),
        ),
    ))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(api): State<Api>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if let Err(r) = same_origin(&headers) {
        return r.into_response();
    }
    let token = f.token.trim().to_string();
    let known =
        !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric()) && api.lock().ok().and_then(|c| c.principal_of(&token).ok().flatten()).is_some();
    if !known {
        tracing::warn!("console: a sign-in with a token this core did not issue");
        return (
            StatusCode::UNAUTHORIZED,
            Html({
                let lang = Lang::of(&headers);
                let body = format!(
                    "<p class=error>{}</p><p><a href=/console/login>{}</a></p>",
                    lang.t("That token was not issued by this core."),
                    lang.t("Try again")
                );
                page(lang, lang.t("Sign in"), None, &body)
            }),
        )
            .into_response();
    }
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/console");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}

async fn logout() -> Response {
    ([(header::SET_COOKIE, format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"))], Redirect::to("/console/login")).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFilter {
    /// `open` (default: not closed or cancelled) or `all`.
    state: Option<String>,
    /// An estate or road id.
    area: Option<String>,
    /// `me`: the orders assigned to the principal's role (the default for a department or the task
    /// force, who see the whole town); `all`: every order in scope (the default for the others).
    assigned: Option<String>,
}

impl QueueFilter {
    /// The role whose orders the queue is narrowed to, if any.
    fn mine(&self, p: &Principal) -> Option<crate::orders::Role> {
        let role = p.role()?;
        let town_wide = matches!(p.scope, Scope::Town | Scope::District);
        match self.assigned.as_deref() {
            Some("me") => Some(role),
            None if town_wide => Some(role),
            _ => None,
        }
    }
}

/// The signed-in principal and the queue's filter.
fn queue_request(
    api: &Api,
    headers: &HeaderMap,
    filter: Result<Query<QueueFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<(Principal, QueueFilter), Refusal> {
    let p = who(api, headers)?;
    let Query(f) = filter.map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("{}; expected state=open|all and area=E012", e.body_text())))?;
    if !matches!(f.state.as_deref(), None | Some("open") | Some("all")) {
        return Err(Refusal(StatusCode::BAD_REQUEST, "`state`: expected open or all".into()));
    }
    if !matches!(f.assigned.as_deref(), None | Some("me") | Some("all")) {
        return Err(Refusal(StatusCode::BAD_REQUEST, "`assigned`: expected me or all".into()));
    }
    if f.area.as_deref().is_some_and(|a| a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric())) {
        return Err(Refusal(StatusCode::BAD_REQUEST, "`area`: expected an estate or road id (E012, R03)".into()));
    }
    Ok((p, f))
}

/// A form posted from another origin is refused ([`super::html::same_origin`]).
fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    from_here(headers).map_err(|origin| Refusal(StatusCode::FORBIDDEN, format!("a form from {origin} cannot act on this console")))
}

async fn queue_page(
    State(api): State<Api>,
    headers: HeaderMap,
    filter: Result<Query<QueueFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Refusal> {
    let (p, f) = queue_request(&api, &headers, filter)?;
    let lang = Lang::of(&headers);
    let mut query = String::new();
    if let Some(s) = &f.state {
        let _ = write!(query, "state={}&", esc(s));
    }
    if let Some(a) = &f.assigned {
        let _ = write!(query, "assigned={}&", esc(a));
    }
    if let Some(a) = &f.area {
        let _ = write!(query, "area={}", esc(a));
    }
    let mine = match (p.role(), f.mine(&p)) {
        (Some(r), Some(_)) => {
            format!(", {} {} (<a id=assigned-all href=\"/console?assigned=all\">{}</a>)", lang.t("assigned to"), esc(lang.role(r)), lang.t("all in scope"))
        }
        (Some(r), None) => format!(" (<a id=assigned-me href=\"/console?assigned=me\">{} {}</a>)", lang.t("only those assigned to"), esc(lang.role(r))),
        (None, _) => String::new(),
    };
    let body = format!(
        "<p>{of} <b>{scope}</b>{area}{mine}, {newest}: <a href=/console>{open}</a> · <a href=\"/console?state=all\">{all}</a>. {live}</p>\
         <div hx-ext=sse sse-connect=/console/events><div id=queue hx-get=\"/console/queue?{query}\" hx-trigger=\"load, sse:orders throttle:300ms\">{table}</div></div>",
        scope = esc(&p.scope.to_string()),
        area = f.area.as_deref().map(|a| format!(" {} {}", lang.t("in"), esc(a))).unwrap_or_default(),
        table = queue_table(&api, &p, &f, lang)?,
        of = lang.t("Work orders of"),
        newest = lang.t("newest first"),
        open = lang.t("open"),
        all = lang.t("all"),
        live = lang.t("The queue updates itself as orders change; yours are in bold."),
    );
    Ok(Html(page(lang, lang.t("Work-order queue"), Some(&p), &body)).into_response())
}

async fn queue_fragment(
    State(api): State<Api>,
    headers: HeaderMap,
    filter: Result<Query<QueueFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Refusal> {
    let (p, f) = queue_request(&api, &headers, filter)?;
    Ok(Html(queue_table(&api, &p, &f, Lang::of(&headers))?).into_response())
}

fn queue_table(api: &Api, p: &Principal, f: &QueueFilter, lang: Lang) -> Result<String, Refusal> {
    let all = f.state.as_deref() == Some("all");
    let core = api.lock().map_err(|e| Refusal(e.0, e.1))?;
    let mut rows: Vec<&Order> = core
        .orders
        .orders
        .iter()
        .filter(|o| api.sees(&p.scope, o))
        .filter(|o| all || o.state.is_open())
        .filter(|o| f.area.as_deref().is_none_or(|a| o.area == a))
        .filter(|o| f.mine(p).is_none_or(|r| o.assignee.contains(&r)))
        .collect();
    rows.sort_by_key(|o| std::cmp::Reverse((o.created_at, o.id)));
    let mut t = String::from("<table id=orders><tr>");
    for h in ["order", "rule", "area", "about", "state", "loop", "assigned to", "made", "updated"] {
        let _ = write!(t, "<th>{}</th>", lang.t(h));
    }
    t.push_str("</tr>");
    let role = p.role();
    for o in rows.iter().take(QUEUE_ROWS) {
        let mine = role.is_some_and(|r| o.assignee.contains(&r));
        let _ = write!(
            t,
            "<tr id=order-{id} class=\"state-{st}{m}\" data-state={st}><td><a href=/console/orders/{id}>{id}</a></td><td>{rule}</td><td>{area}</td><td>{subj}</td><td>{shown}</td><td>{lvl}</td><td>{who}</td><td>{made}</td><td>{upd}</td></tr>",
            id = o.id,
            m = if mine { " mine" } else { "" },
            who = esc(&o.assignee.iter().map(|r| lang.role(*r)).collect::<Vec<_>>().join(", ")),
            st = o.state.as_str(),
            shown = lang.state(o.state),
            rule = esc(&o.rule),
            area = esc(&o.area),
            subj = esc(&o.subject),
            lvl = lang.level(o.level),
            made = town_time(o.created_at),
            upd = town_time(o.updated_at)
        );
    }
    t.push_str("</table>");
    if rows.len() > QUEUE_ROWS {
        let _ = write!(t, "<p>{} {}</p>", rows.len() - QUEUE_ROWS, lang.t("more not shown."));
    }
    Ok(t)
}

/// A server-sent event for each order that changed within the principal's scope (its id as data).
async fn events(State(api): State<Api>, headers: HeaderMap) -> Result<Response, Refusal> {
    let p = who(&api, &headers)?;
    let rx = api.orders_out().map(|o| o.subscribe()).ok_or_else(|| Refusal(StatusCode::SERVICE_UNAVAILABLE, "this core publishes no order changes".into()))?;
    // The stream ends when the service stops: a graceful shutdown waits for open connections.
    let stopped: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(api.stopped());
    let stream = futures_util::stream::unfold((rx, api, p, stopped), |(mut rx, api, p, mut stopped)| async move {
        loop {
            let got = tokio::select! {
                got = rx.recv() => got,
                () = &mut stopped => return None,
            };
            match got {
                Ok(n) => {
                    if p.scope.reaches(&n.area, api.committee_of(&n.area)) {
                        let ev = Event::default().event("orders").data(n.event.order.to_string());
                        return Some((Ok::<_, std::convert::Infallible>(ev), (rx, api, p, stopped)));
                    }
                }
                // Fell behind a burst: the page refetches the queue anyway.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    return Some((Ok(Event::default().event("orders").data("lagged")), (rx, api, p, stopped)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Every action, with a placeholder reason where one is needed: for asking which are legal.
fn all_actions() -> Vec<Action> {
    let r = || "-".to_string();
    vec![
        Action::Accept,
        Action::Start,
        Action::Resolve,
        Action::Fail { reason: r() },
        Action::Return { reason: r() },
        Action::Verify,
        Action::Close,
        Action::Reopen { reason: r() },
        Action::Escalate { reason: r() },
        Action::Whistle { reason: r() },
        Action::Cancel { reason: r() },
        Action::Dispatch,
    ]
}

async fn order_page(State(api): State<Api>, headers: HeaderMap, Path(id): Path<u64>) -> Result<Response, Refusal> {
    let p = who(&api, &headers)?;
    let lang = Lang::of(&headers);
    let mut core = api.lock().map_err(|e| Refusal(e.0, e.1))?;
    let refusal = match core.orders.get(id) {
        None => Some((StatusCode::NOT_FOUND, format!("no work order {id}"))),
        Some(o) if !api.sees(&p.scope, o) => Some((StatusCode::FORBIDDEN, format!("work order {id} is outside your scope"))),
        Some(_) => None,
    };
    if let Some((status, why)) = refusal {
        core.audit(&p, "view", &format!("order {id}"), &format!("refused {}: {why}", status.as_u16()))
            .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("the audit log could not be written: {e}")))?;
        return Err(Refusal(status, why));
    }
    core.audit(&p, "view", &format!("order {id}"), "seen")
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("the audit log could not be written: {e}")))?;
    let Some(o) = core.orders.get(id) else { return Err(Refusal(StatusCode::NOT_FOUND, format!("no work order {id}"))) };
    let history = match core.store() {
        Some(s) => s.order_events(id).map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        None => Vec::new(),
    };
    let th = |h: &'static str| lang.t(h);
    let mut b = format!(
        "<table id=order><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr>\
         <tr><th>{}</th><td id=state data-state={st}>{}</td></tr><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr>\
         <tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{} {} {}</td></tr></table>",
        th("rule"),
        esc(&o.rule),
        th("area"),
        esc(&o.area),
        th("about"),
        esc(&o.subject),
        th("state"),
        lang.state(o.state),
        th("loop"),
        lang.level(o.level),
        th("assigned to"),
        esc(&o.assignee.iter().map(|r| lang.role(*r)).collect::<Vec<_>>().join(", ")),
        th("detail"),
        esc(&o.detail),
        th("made"),
        town_time(o.created_at),
        th("seen"),
        o.count,
        th("time(s), hotline calls"),
        o.calls,
        st = o.state.as_str(),
    );
    let _ = write!(b, "<h2>{}</h2>", lang.t("Actions"));
    // A joint visit is resolved by its parties' reports, one form per party still to report.
    let legal: Vec<Action> =
        all_actions().into_iter().filter(|a| next_state(o.state, a).is_ok() && !(o.joint && *a == Action::Resolve) && !p.is_evaluator()).collect();
    if p.is_evaluator() {
        let _ = write!(b, "<p>{}</p>", lang.t("None: an evaluator observes and acts on no order."));
    } else if legal.is_empty() {
        let _ = write!(b, "<p>{}</p>", lang.t("None: the order is closed."));
    }
    for a in legal {
        let name = a.name();
        let reason = if a.reason().is_some() { format!("<input name=reason placeholder=\"{}\" required>", lang.t("reason (required)")) } else { String::new() };
        let _ = write!(
            b,
            "<form class=act method=post action=/console/orders/{id}/actions><input type=hidden name=action value={name}>{reason}<button id=act-{name}>{label}</button></form>",
            label = lang.action(name)
        );
    }
    if o.joint && matches!(o.state, OrderState::Accepted | OrderState::InProgress) && !p.is_evaluator() {
        for r in o.assignee.iter().filter(|r| !o.reported.contains(r) && p.may_report_for(**r)) {
            let _ = write!(
                b,
                "<form class=act method=post action=/console/orders/{id}/actions><input type=hidden name=action value=report><input type=hidden name=role value={r:?}><button id=act-report-{n}>{label} {shown}</button></form>",
                n = r.name(),
                label = lang.t("report for"),
                shown = lang.role(*r)
            );
        }
    }
    let _ = write!(b, "<h2>{}</h2><table id=history><tr>", lang.t("History"));
    for h in ["when", "action", "by", "from", "to", "loop", "reason"] {
        let _ = write!(b, "<th>{}</th>", lang.t(h));
    }
    b.push_str("</tr>");
    for e in &history {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            town_time(e.at),
            esc(lang.action(&e.action)),
            esc(&e.actor),
            e.from.map_or("-", |s| lang.state(s)),
            lang.state(e.to),
            lang.level(e.level),
            esc(e.reason.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</table>");
    Ok(Html(page(lang, &format!("{} {id}", lang.t("Work order")), Some(&p), &b)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActForm {
    action: String,
    reason: Option<String>,
    /// The party a `report` is for, on a joint visit (`Housing`).
    role: Option<String>,
}

async fn act(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    form: Result<Form<ActForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, Refusal> {
    same_origin(&headers)?;
    let p = who(&api, &headers)?;
    let Form(f) =
        form.map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("{}; expected action=accept (and reason=... where one is needed)", e.body_text())))?;
    let mut body = serde_json::json!({ "action": f.action });
    if let Some(r) = f.reason.filter(|r| !r.trim().is_empty()) {
        if r.chars().count() > crate::limits::MAX_REASON_CHARS {
            return Err(Refusal(StatusCode::BAD_REQUEST, format!("the reason is longer than {} characters", crate::limits::MAX_REASON_CHARS)));
        }
        body["reason"] = serde_json::Value::String(r);
    }
    if let Some(r) = f.role {
        body["role"] = serde_json::Value::String(r);
    }
    let action: Action = serde_json::from_value(body).map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("not an action this console knows: {e}")))?;
    let mut core = api.lock().map_err(|e| Refusal(e.0, e.1))?;
    let refusal = match core.orders.get(id) {
        None => Some((StatusCode::NOT_FOUND, format!("no work order {id}"))),
        Some(o) if !api.sees(&p.scope, o) => Some((StatusCode::FORBIDDEN, format!("work order {id} is outside your scope"))),
        Some(_) if p.is_evaluator() => Some((StatusCode::FORBIDDEN, format!("{p} is a drill's evaluator: it observes, and acts on no order"))),
        Some(_) => match &action {
            Action::Report { role } if !p.may_report_for(*role) => Some((StatusCode::FORBIDDEN, super::api::report_refusal(&p, *role))),
            _ => None,
        },
    };
    let name = action.name();
    let outcome = match refusal {
        Some(r) => Err(r),
        None => match core.act(id, &p.to_string(), action) {
            Ok((_, transitions)) => {
                if let Some(out) = api.orders_out() {
                    let notices: Vec<_> = transitions.iter().map(|t| core.orders.notice(t)).collect();
                    out.publish(&notices);
                }
                Ok(())
            }
            Err(CoreError::Illegal(e)) => Err((StatusCode::CONFLICT, e.to_string())),
            Err(e) => return Err(Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        },
    };
    match outcome {
        Ok(()) => Ok(Redirect::to(&format!("/console/orders/{id}")).into_response()),
        Err((status, why)) => {
            core.audit(&p, name, &format!("order {id}"), &format!("refused {}: {why}", status.as_u16()))
                .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("the audit log could not be written: {e}")))?;
            Err(Refusal(status, why))
        }
    }
}

/// The town's map: each estate where the town file places it, drawn as a block of its buildings, with its
/// gates on its edge, refreshed live (the same server-sent events as the queue) with the open orders in
/// the principal's scope: an estate with open orders is outlined in red with their count, and a building an
/// order names is filled red. Roads (no outline in the town file) are listed beside it with their open
/// orders. The positions are the town file's; the blocks' sizes and the buildings' layout are drawn, not
/// surveyed.
async fn map_page(State(api): State<Api>, headers: HeaderMap) -> Result<Response, Refusal> {
    let p = who(&api, &headers)?;
    let lang = Lang::of(&headers);
    let body = format!(
        "<p>{legend}</p><div hx-ext=sse sse-connect=/console/events><div id=map-live hx-get=/console/map/svg hx-trigger=\"sse:orders throttle:1s\">{svg}</div></div>",
        legend = lang.t("Each estate where the town file places it, a block of its buildings with its gates on the edge; red: open orders (a building an order names, or whose device raised one, is filled red; a red dot at a corner: a device of the grounds). Live. Click an estate for its queue. Sizes and layout are drawn, not surveyed."),
        svg = map_svg(&api, &p, lang)?
    );
    Ok(Html(page(lang, lang.t("Town map"), Some(&p), &body)).into_response())
}

async fn map_fragment(State(api): State<Api>, headers: HeaderMap) -> Result<Response, Refusal> {
    let p = who(&api, &headers)?;
    Ok(Html(map_svg(&api, &p, Lang::of(&headers))?).into_response())
}

/// The map's SVG and the roads' table, for principal `p`.
fn map_svg(api: &Api, p: &Principal, lang: Lang) -> Result<String, Refusal> {
    let core = api.lock().map_err(|e| Refusal(e.0, e.1))?;
    let town = api.town();
    let (w, h, scale, margin) = (1000.0f32, 760.0f32, 150.0f32, 40.0f32);
    // Open orders in scope: per area; per (area, building) where the order names a flat, a building or a
    // device in a building (a smoke detector, a noise monitor); per area the others that name a device of
    // the estate's grounds (a kiosk, a charging pile).
    let mut open: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut hot: std::collections::HashMap<(&str, u16), Vec<String>> = std::collections::HashMap::new();
    let mut grounds: std::collections::HashMap<&str, Vec<String>> = std::collections::HashMap::new();
    // Every estate device by id, once (an order names at most one).
    let devices_by_id: std::collections::HashMap<&str, &crate::town::Device> =
        town.estates.iter().flat_map(|e| &e.devices).map(|d| (d.id.as_str(), d)).collect();
    for o in core.orders.orders.iter().filter(|o| o.state.is_open() && api.sees(&p.scope, o)) {
        *open.entry(o.area.as_str()).or_default() += 1;
        let what = format!("{} {}", o.id, o.rule);
        let named = o.subject.strip_prefix('B').and_then(|r| r.split(['-', '/']).next()).and_then(|n| n.parse::<u16>().ok());
        let device = || devices_by_id.get(o.subject.split('/').next().unwrap_or_default()).copied();
        match (named, named.is_none().then(device).flatten()) {
            (Some(b), _) => hot.entry((o.area.as_str(), b)).or_default().push(what),
            (None, Some(d)) => match d.building {
                Some(b) => hot.entry((o.area.as_str(), b)).or_default().push(format!("{what} ({})", d.id)),
                None => grounds.entry(o.area.as_str()).or_default().push(format!("{what} ({})", d.id)),
            },
            (None, None) => {}
        }
    }
    let mut svg = String::new();
    let (mut devices, mut shown) = (0usize, 0usize);
    // The part of the town in scope: the view is zoomed to it (a whole town, or a committee's estates).
    let (mut lo, mut hi) = ((w, h), (0.0f32, 0.0f32));
    for e in &town.estates {
        if !p.scope.reaches(&e.id, Some(e.committee.as_str())) {
            continue;
        }
        shown += 1;
        devices += e.devices.len();
        let (cx, cy) = (margin + e.pos.0 * scale, h - margin - e.pos.1 * scale);
        let side = (16.0 + (e.buildings.len() as f32).sqrt() * 5.0).min(46.0);
        let (x0, y0) = (cx - side / 2.0, cy - side / 2.0);
        (lo, hi) = ((lo.0.min(x0), lo.1.min(y0 - 12.0)), (hi.0.max(x0 + side), hi.1.max(y0 + side)));
        let n = open.get(e.id.as_str()).copied().unwrap_or(0);
        let (stroke, width) = if n > 0 { ("#c22", 2.5) } else { ("#567", 1.0) };
        let gates = e.devices.iter().filter(|d| d.kind == crate::town::DeviceKind::Gate).count();
        let _ = write!(
            svg,
            "<a href=\"/console?area={id}\"><g id=estate-{id} class=\"estate{cls}\"><title>{id} {name}: {b} {bl}, {d} {devs}, {gates} {gl}, {n} {opens}</title>\
             <rect x={x0:.1} y={y0:.1} width={side:.1} height={side:.1} rx=3 fill=\"#eef2ee\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>",
            id = esc(&e.id),
            name = esc(&e.name),
            cls = if n > 0 { " alarm" } else { "" },
            b = e.buildings.len(),
            bl = lang.t("buildings"),
            d = e.devices.len(),
            devs = lang.t("devices"),
            gl = lang.t("gates"),
            opens = lang.t("open orders"),
        );
        // The buildings, in a grid inside the block.
        let cols = (e.buildings.len() as f32).sqrt().ceil().max(1.0) as usize;
        let cell = (side - 4.0) / cols as f32;
        for (i, bd) in e.buildings.iter().enumerate() {
            let (bx, by) = (x0 + 2.0 + (i % cols) as f32 * cell, y0 + 2.0 + (i / cols) as f32 * cell);
            let alarms = hot.get(&(e.id.as_str(), bd.no));
            let fill = if alarms.is_some() { "#e33" } else { "#bcc8d4" };
            let tip = alarms.map(|a| format!("<title>B{:02}: {}</title>", bd.no, esc(&a.join(", ")))).unwrap_or_default();
            let _ = write!(
                svg,
                "<rect class=building data-building={} x={bx:.1} y={by:.1} width={:.1} height={:.1} fill=\"{fill}\">{tip}</rect>",
                bd.no,
                (cell - 1.0).max(1.0),
                (cell - 1.0).max(1.0)
            );
        }
        // The gates on the block's edge.
        for g in 0..gates {
            let t = (g as f32 + 0.5) / gates.max(1) as f32 * 4.0;
            let (gx, gy) = match t as u32 {
                0 => (x0 + t * side, y0),
                1 => (x0 + side, y0 + (t - 1.0) * side),
                2 => (x0 + side - (t - 2.0) * side, y0 + side),
                _ => (x0, y0 + side - (t - 3.0) * side),
            };
            let _ = write!(svg, "<circle class=gate cx={gx:.1} cy={gy:.1} r=1.6 fill=\"#2a6\"/>");
        }
        // Alarms of devices on the estate's grounds: a red dot at the block's corner, over
        // the gates.
        if let Some(a) = grounds.get(e.id.as_str()) {
            let _ = write!(
                svg,
                "<circle class=device-alarm cx={:.1} cy={:.1} r=4 fill=\"#e33\" stroke=\"#fff\"><title>{}</title></circle>",
                x0 + side,
                y0,
                esc(&a.join(", "))
            );
        }
        let _ = write!(
            svg,
            "<text x={tx:.0} y={ty:.0} font-size=9 fill=\"#234\">{id}{badge}</text></g></a>",
            tx = x0,
            ty = y0 - 2.0,
            id = esc(&e.id),
            badge = if n > 0 { format!(" ({n})") } else { String::new() }
        );
    }
    svg.push_str("</svg>");
    // At least a quarter of the town's width across, in the page's proportions, centred on what is in scope.
    let (vw, vh) = if shown == 0 { (w, h) } else { (((hi.0 - lo.0) + 40.0).max(w / 4.0), ((hi.1 - lo.1) + 40.0).max(h / 4.0)) };
    let (vw, vh) = (vw.max(vh * w / h), vh.max(vw * h / w));
    let (vx, vy) = if shown == 0 { (0.0, 0.0) } else { ((lo.0 + hi.0 - vw) / 2.0, (lo.1 + hi.1 - vh) / 2.0) };
    svg.insert_str(
        0,
        &format!(
            "<svg id=map xmlns=http://www.w3.org/2000/svg viewBox=\"{vx:.0} {vy:.0} {vw:.0} {vh:.0}\" width={w} height={h} style=\"border:1px solid #ccc;background:#f8faf8\">"
        ),
    );
    let _ = write!(
        svg,
        "<p>{shown} {with} {devices} {inn} <b>{}</b>.</p><table id=roads><tr><th>{}</th><th>{}</th></tr>",
        esc(&p.scope.to_string()),
        lang.t("road"),
        lang.t("open orders"),
        with = lang.t("estates with"),
        inn = lang.t("devices in"),
    );
    for r in &town.roads {
        let n = open.get(r.id.as_str()).copied().unwrap_or(0);
        if n > 0 {
            let _ = write!(svg, "<tr><td><a href=\"/console?area={id}\">{id} {}</a></td><td>{n}</td></tr>", esc(&r.name), id = esc(&r.id));
        }
    }
    svg.push_str("</table>");
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::same_origin;

    #[test]
    fn a_form_from_another_origin_is_refused() {
        let headers = |origin: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_static(o));
            }
            h
        };
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080"))).is_ok());
        assert!(same_origin(&headers(None)).is_ok(), "not from a browser's page: no cookie to abuse");
        assert!(same_origin(&headers(Some("http://127.0.0.1:9999"))).is_err(), "another port of the same host is another origin");
        assert!(same_origin(&headers(Some("https://evil.example"))).is_err());
    }
}
