//! The drill's controller: what the controller asked for and where the drill stands ([`Control`]), and
//! its panel over HTTP, as JSON for scripts and as a page with buttons (`/drill/panel`, signed in with
//! the controller's token in an HttpOnly cookie). Pause, resume, step, speed and stop go to the runner's
//! [`Throttle`]; start, fire and skip to the drill's hooks.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use towntwin_core::time::{MINUTE, Millis};

use super::aar::{InjectLog, Status, town_time};
use super::live::{MAX_SPEED, MIN_SPEED, speed_ok};
use super::script::{AdHoc, Drill, Inject};
use crate::runner::pace::{Speed, Throttle};
use towntwin_core::truth::IncidentKind;
use towntwin_core::web::html::{cookie, esc, same_origin};
use towntwin_core::web::i18n::Lang;

/// Town minutes per wall minute, as the panel shows it.
fn speed_of(s: Speed) -> f64 {
    match s {
        Speed::Times(x) => x,
        Speed::Max => MAX_SPEED,
    }
}

/// The controller's panel: what the controller asked for, and where the drill stands.
#[derive(Debug, Default)]
pub(super) struct Panel {
    pub started: bool,
    pub fire: Vec<usize>,
    pub skip: Vec<usize>,
    /// Town time of the tick about to run.
    pub town: Millis,
    /// Wall time the drill began (minute 0), for the log.
    pub began: Option<Instant>,
    pub injects: Vec<InjectView>,
    pub log: Vec<(Millis, f64, String)>,
    /// Ad-hoc injects checked and waiting for the twin's next tick, with their log entries.
    pub adhoc: Vec<(Inject, InjectLog)>,
    /// Every ad-hoc inject fired (for the evaluators' guides).
    pub adhoc_fired: Vec<Inject>,
    /// The evaluators' observations so far (each is in the core's audit log too).
    pub observations: Vec<super::aar::Observation>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct InjectView {
    pub id: String,
    pub title: String,
    pub status: Status,
    pub started_at: Option<String>,
    pub order: Option<u64>,
    pub resolved: bool,
    /// Fired by the controller from the catalogue, not in the script.
    #[serde(default)]
    pub adhoc: bool,
}

impl InjectView {
    /// An inject's row before it starts.
    pub fn new(inj: &Inject, adhoc: bool) -> InjectView {
        InjectView { id: inj.id.clone(), title: inj.title.clone(), status: Status::NotStarted, started_at: None, order: None, resolved: false, adhoc }
    }
}

impl Panel {
    /// Logs what the controller did; the caller prints it once the panel is unlocked.
    pub fn note(&mut self, what: String) -> String {
        let wall = self.began.map_or(0.0, |b| b.elapsed().as_secs_f64());
        self.log.push((self.town, wall, what.clone()));
        format!("drill: controller: {what}")
    }
}

pub(super) struct Control {
    pub panel: Mutex<Panel>,
    /// Wakes the twin's thread waiting for the start at minute 0.
    pub wake: Condvar,
    /// Pause, resume, step, speed and stop: the runner's pacing follows it.
    pub throttle: Throttle,
    pub token: String,
    pub drill_start: Millis,
    /// The drill as checked: ad-hoc injects are checked against it.
    pub drill: Drill,
    /// Each rule and the incident kinds it detects (the rules an ad-hoc inject's order may come from).
    pub rules: Vec<(String, Vec<IncidentKind>)>,
    /// The drill's core: evaluators' tokens are its, and their observations go to its audit log.
    /// Weak: the core is the service's to stop, which needs it held by nothing else.
    pub core: Option<std::sync::Weak<Mutex<towntwin_core::service::Core>>>,
}

impl Control {
    pub fn lock(&self) -> MutexGuard<'_, Panel> {
        // A panic while holding the panel leaves plain data behind: keep going with it.
        self.panel.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Serialize)]
struct PanelStatus {
    town: String,
    minute: f64,
    started: bool,
    paused: bool,
    stopping: bool,
    speed: f64,
    injects: Vec<InjectView>,
    log: Vec<(Millis, f64, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeedBody {
    speed: f64,
}

struct PanelError(StatusCode, String);

impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub(super) fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/drill", get(status))
        .route("/drill/panel", get(panel_page))
        .route("/drill/panel/status", get(panel_status))
        .route("/drill/panel/login", post(panel_login))
        .route(
            "/drill/panel/htmx.min.js",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")], towntwin_core::web::console::HTMX) }),
        )
        .route("/drill/catalogue", get(catalogue))
        .route(
            "/drill/lang/{lang}",
            get(|UrlPath(lang): UrlPath<String>, headers: HeaderMap| async move { towntwin_core::web::i18n::choose(&lang, &headers, "/drill/panel") }),
        )
        .route("/drill/injects", post(adhoc_json))
        .route("/drill/panel/inject", post(adhoc_form))
        .route("/drill/{command}", post(command))
        .route("/drill/injects/{id}/{command}", post(inject_command))
        .merge(super::evaluate::routes())
        .layer(axum::extract::DefaultBodyLimit::max(8192))
        .with_state(control)
}

/// The controller's token: as a bearer token, or in the panel page's cookie.
fn authorised(c: &Control, headers: &HeaderMap) -> Result<(), PanelError> {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let cookie = cookie(headers, PANEL_COOKIE);
    if bearer.is_none() && cookie.is_some() {
        // The panel page's cookie: only from the panel's own pages (every port of 127.0.0.1 is one site).
        same_origin(headers).map_err(|o| PanelError(StatusCode::FORBIDDEN, format!("a request from {o} cannot use the controller's panel")))?;
    }
    let token = bearer.or(cookie);
    if token == Some(c.token.as_str()) && !c.token.is_empty() {
        Ok(())
    } else {
        Err(PanelError(StatusCode::UNAUTHORIZED, "the controller's panel needs Authorization: Bearer <the controller's token, printed at start>".into()))
    }
}

async fn status(State(c): State<Arc<Control>>, headers: HeaderMap) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let t = c.throttle.get();
    let p = c.lock();
    let s = PanelStatus {
        town: town_time(p.town),
        minute: (p.town - c.drill_start) as f64 / MINUTE as f64,
        started: p.started,
        paused: t.paused,
        stopping: t.stopped,
        speed: speed_of(t.speed),
        injects: p.injects.clone(),
        log: p.log.clone(),
    };
    Ok(axum::Json(s).into_response())
}

async fn command(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    UrlPath(command): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let what = match command.as_str() {
        "start" => {
            c.lock().started = true;
            "start".to_string()
        }
        "pause" => {
            c.throttle.set(|t| t.paused = true);
            "pause".into()
        }
        "resume" => {
            c.throttle.set(|t| t.paused = false);
            "resume".into()
        }
        "step" => {
            // While paused, one more town minute runs (at once); otherwise nothing to do.
            if !c.throttle.set(|t| {
                t.steps += u32::from(t.paused);
                t.paused
            }) {
                return Err(PanelError(StatusCode::CONFLICT, "a step is for a paused drill: pause it first".into()));
            }
            "step".into()
        }
        "stop" => {
            c.throttle.set(|t| t.stopped = true);
            "stop".into()
        }
        "speed" => {
            // JSON from a script, or the panel page's form.
            let speed = serde_json::from_slice::<SpeedBody>(&body)
                .map(|b| b.speed)
                .ok()
                .or_else(|| std::str::from_utf8(&body).ok().and_then(|s| s.strip_prefix("speed=")).and_then(|v| v.trim().parse().ok()));
            let Some(speed) = speed else {
                return Err(PanelError(StatusCode::BAD_REQUEST, "expected a body {\"speed\": <town minutes per wall minute>}".into()));
            };
            if !speed_ok(speed) {
                return Err(PanelError(StatusCode::BAD_REQUEST, format!("`speed`: expected {MIN_SPEED} to {MAX_SPEED}, got {speed}")));
            }
            c.throttle.set(|t| t.speed = Speed::Times(speed));
            format!("speed x{speed}")
        }
        other => return Err(PanelError(StatusCode::NOT_FOUND, format!("no command `{other}`: start, pause, resume, step, speed, stop"))),
    };
    let line = c.lock().note(what);
    say!("{line}");
    c.wake.notify_all();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn inject_command(State(c): State<Arc<Control>>, headers: HeaderMap, UrlPath((id, command)): UrlPath<(String, String)>) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let mut p = c.lock();
    let i = p.injects.iter().position(|x| x.id == id).ok_or_else(|| PanelError(StatusCode::NOT_FOUND, format!("no inject `{id}` in this drill")))?;
    if p.injects[i].status != Status::NotStarted || p.fire.contains(&i) || p.skip.contains(&i) {
        return Err(PanelError(StatusCode::CONFLICT, format!("inject {id} has started or been skipped already")));
    }
    match command.as_str() {
        "fire" => p.fire.push(i),
        "skip" => p.skip.push(i),
        other => return Err(PanelError(StatusCode::NOT_FOUND, format!("no inject command `{other}`: fire, skip"))),
    }
    let line = p.note(format!("{command} {id}"));
    drop(p);
    say!("{line}");
    c.wake.notify_all();
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Ad-hoc injects: from the catalogue of what the twin can make real, checked as a script's inject.

/// Why an ad-hoc inject was refused: the status, and each problem (field, what was expected).
struct Refused(StatusCode, Vec<(String, String)>);

impl Refused {
    fn text(&self) -> String {
        self.1.iter().map(|(f, m)| if f.is_empty() { m.clone() } else { format!("`{f}`: {m}") }).collect::<Vec<_>>().join("; ")
    }
}

/// Checks `inj` against the drill and queues it for the twin's next tick; returns its id.
fn fire_adhoc(c: &Control, inj: Inject) -> Result<String, Refused> {
    if c.throttle.get().stopped {
        return Err(Refused(StatusCode::CONFLICT, vec![(String::new(), "the drill is ending: no more injects".into())]));
    }
    let mut p = c.lock();
    let taken: Vec<&str> = p.injects.iter().map(|v| v.id.as_str()).collect();
    // An id the drill has already is a conflict with its state (409); any other problem is the request's (400).
    let conflict = taken.contains(&inj.id.as_str());
    let area = c.drill.check_adhoc(&inj, taken).map_err(|e| {
        let status = if conflict { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
        Refused(status, e.0.into_iter().map(|x| (x.field.unwrap_or_default(), x.message)).collect())
    })?;
    let log = InjectLog::new(&inj, area, &c.rules, &c.drill.town, true);
    p.injects.push(InjectView::new(&inj, true));
    let id = inj.id.clone();
    let line = p.note(format!("fire ad-hoc {id}: {}", inj.title));
    p.adhoc_fired.push(inj.clone());
    p.adhoc.push((inj, log));
    drop(p);
    say!("{line}");
    c.wake.notify_all();
    Ok(id)
}

/// `GET /drill/catalogue`: the kinds of inject the twin can make real, each with an example.
async fn catalogue(State(c): State<Arc<Control>>, headers: HeaderMap) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    Ok(axum::Json(super::script::CATALOGUE).into_response())
}

/// `POST /drill/injects` with `{"id", "title", "what": {"Fire": {...}}, "expect": [...]}`: 201 and its id;
/// 400 (409 for an id in use, or a drill ending) naming each problem.
async fn adhoc_json(State(c): State<Arc<Control>>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let a: AdHoc = serde_json::from_slice(&body).map_err(|e| {
        PanelError(
            StatusCode::BAD_REQUEST,
            format!("{e}; expected {{\"id\": \"X1\", \"title\": \"...\", \"what\": {{\"Fire\": {{\"estate\": \"E001\", \"flat\": \"B16-101\"}}}}, \"expect\": [...]}} (GET /drill/catalogue lists what the twin can make real)"),
        )
    })?;
    match fire_adhoc(&c, a.into_inject()) {
        Ok(id) => Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "id": id }))).into_response()),
        Err(r) => {
            let problems: Vec<serde_json::Value> = r.1.iter().map(|(f, m)| serde_json::json!({ "field": f, "message": m })).collect();
            Ok((r.0, axum::Json(serde_json::json!({ "error": r.text(), "problems": problems }))).into_response())
        }
    }
}

#[derive(Deserialize)]
struct AdHocForm {
    id: String,
    title: String,
    /// As a script writes it: `Fire(estate: "E001", flat: "B16-101")`.
    what: String,
    /// As a script writes it, or empty.
    #[serde(default)]
    expect: String,
}

/// The panel page's form: the same, with `what` and `expect` as a script writes them; answers with a line
/// for the page.
async fn adhoc_form(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    form: Result<axum::extract::Form<AdHocForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let line = |ok: bool, text: String| {
        let class = if ok { "ok" } else { "error" };
        axum::response::Html(format!("<p class={class} id=adhoc-outcome>{}</p>", esc(&text))).into_response()
    };
    let Ok(axum::extract::Form(f)) = form else { return Ok(line(false, "expected the fields id, title, what (and expect)".into())) };
    let what = match ron::from_str::<super::script::What>(f.what.trim()) {
        Ok(w) => w,
        Err(e) => return Ok(line(false, format!("`what`: {e}; expected e.g. Fire(estate: \"E001\", flat: \"B16-101\") (the catalogue below)"))),
    };
    let expect = if f.expect.trim().is_empty() {
        Vec::new()
    } else {
        match ron::from_str::<Vec<super::script::Expect>>(f.expect.trim()) {
            Ok(x) => x,
            Err(e) => {
                return Ok(line(
                    false,
                    format!("`expect`: {e}; expected e.g. [(by: \"property\", action: Accept, within_minutes: 30.0, points: 10, objective: \"O1\")]"),
                ));
            }
        }
    };
    let inj = AdHoc { id: f.id.trim().to_string(), title: f.title.trim().to_string(), what, expect }.into_inject();
    Ok(match fire_adhoc(&c, inj) {
        Ok(id) => line(true, format!("{id} fired: it takes effect at the next town minute")),
        Err(r) => line(false, format!("refused: {}", r.text())),
    })
}

// The controller's panel as a page: the same commands, as buttons.

const PANEL_COOKIE: &str = "towntwin_controller";

fn panel_html(lang: Lang, body: &str) -> axum::response::Html<String> {
    axum::response::Html(format!(
        "<!doctype html><html lang={l}><head><meta charset=utf-8><title>{t}</title><script src=/drill/panel/htmx.min.js></script>\
         <style>body{{font-family:sans-serif;margin:1em 2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}th{{background:#eee}}\
         button{{margin-right:.4em}}.error{{color:#a00}}.ok{{color:#060}}</style></head><body><nav>{switch}</nav><h1>{t}</h1>{body}</body></html>",
        l = lang.html(),
        t = lang.t("Drill controller"),
        switch = towntwin_core::web::i18n::switch(lang, "/drill"),
    ))
}

async fn panel_page(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    if authorised(&c, &headers).is_err() {
        return panel_html(
            lang,
            &format!(
                "<form method=post action=/drill/panel/login><label>{} <input id=token name=token type=password size=70></label> <button id=signin>{}</button></form>",
                lang.t("Controller's token"),
                lang.t("Sign in")
            ),
        )
        .into_response();
    }
    let b = |s: &'static str| lang.t(s);
    panel_html(
        lang,
        &format!(
            "<p><button id=start hx-post=/drill/start hx-swap=none>{}</button><button id=pause hx-post=/drill/pause hx-swap=none>{}</button>\
             <button id=resume hx-post=/drill/resume hx-swap=none>{}</button><button id=step hx-post=/drill/step hx-swap=none>{}</button><button id=stop hx-post=/drill/stop hx-swap=none hx-confirm=\"{}\">{}</button>\
             <form hx-post=/drill/speed hx-swap=none style=display:inline><input name=speed size=5 placeholder=1> <button>{}</button></form></p>\
             <div id=status hx-get=/drill/panel/status hx-trigger=\"load, every 1s\"></div>{}",
            b("Start"),
            b("Pause"),
            b("Resume"),
            b("Step a minute"),
            b("End the drill now?"),
            b("Stop"),
            b("Set speed"),
            adhoc_section(lang)
        ),
    )
    .into_response()
}

/// The panel page's form for an ad-hoc inject, and the catalogue.
fn adhoc_section(lang: Lang) -> String {
    let mut h = format!(
        "<h2>{}</h2><form hx-post=/drill/panel/inject hx-target=#adhoc-result>\
         <p><label>{} <input name=id id=adhoc-id size=6 placeholder=X1></label> <label>{} <input name=title id=adhoc-title size=50></label></p>\
         <p><label>{} <input name=what id=adhoc-what size=70 placeholder='Fire(estate: \"E001\", flat: \"B16-101\")'></label></p>\
         <p><label>{} <input name=expect id=adhoc-expect size=90 placeholder='[(by: \"property\", action: Accept, within_minutes: 30.0, points: 10, objective: \"O1\")]'></label></p>\
         <button id=fire-adhoc>{}</button></form><div id=adhoc-result></div>\
         <details><summary>{}</summary><table><tr><th>{}</th><th>{}</th><th>{}</th></tr>",
        lang.t("Fire an ad-hoc inject"),
        lang.t("id"),
        lang.t("title"),
        lang.t("what"),
        lang.t("expected (optional)"),
        lang.t("Fire now"),
        lang.t("What the twin can make real"),
        lang.t("kind"),
        lang.t("what it does"),
        lang.t("example"),
    );
    for k in &super::script::CATALOGUE {
        h.push_str(&format!("<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>", k.name, esc(k.does), esc(k.example)));
    }
    h.push_str("</table></details>");
    h
}

#[derive(Deserialize)]
struct PanelLogin {
    token: String,
}

async fn panel_login(State(c): State<Arc<Control>>, headers: HeaderMap, axum::extract::Form(f): axum::extract::Form<PanelLogin>) -> Response {
    if c.token.is_empty() || f.token.trim() != c.token {
        let lang = Lang::of(&headers);
        let body = format!("<p class=error>{} <a href=/drill/panel>{}</a></p>", lang.t("That is not the controller's token."), lang.t("Try again"));
        return (StatusCode::UNAUTHORIZED, panel_html(lang, &body)).into_response();
    }
    let cookie = format!("{PANEL_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/drill", c.token);
    ([(axum::http::header::SET_COOKIE, cookie)], axum::response::Redirect::to("/drill/panel")).into_response()
}

async fn panel_status(State(c): State<Arc<Control>>, headers: HeaderMap) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
    let lang = Lang::of(&headers);
    let t = c.throttle.get();
    let p = c.lock();
    let state = if t.stopped {
        "stopping"
    } else if !p.started {
        "waiting for start"
    } else if t.paused {
        "paused"
    } else {
        "running"
    };
    let mut h = format!(
        "<p id=drill-state data-state=\"{state}\">{} <b>{}</b>, {} <b>{:.0}</b>, {}, {} x{}.</p><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr>",
        lang.t("Town time"),
        town_time(p.town),
        lang.t("drill minute"),
        (p.town - c.drill_start) as f64 / MINUTE as f64,
        lang.t(state),
        lang.t("pace"),
        speed_of(t.speed),
        lang.t("inject"),
        lang.t("state"),
        lang.t("started"),
        lang.t("order"),
    );
    for v in &p.injects {
        let buttons = if v.status == Status::NotStarted && !v.adhoc {
            format!(
                "<button hx-post=\"/drill/injects/{id}/fire\" hx-swap=none>{fire}</button><button hx-post=\"/drill/injects/{id}/skip\" hx-swap=none>{skip}</button>",
                id = esc(&v.id),
                fire = lang.t("Fire now"),
                skip = lang.t("Skip")
            )
        } else {
            String::new()
        };
        let order = v.order.map_or_else(String::new, |o| if v.resolved { format!("{o} ({})", lang.t("resolved")) } else { o.to_string() });
        let status = v.status.label(lang);
        h.push_str(&format!(
            "<tr><td><b>{}</b>: {}{}</td><td data-status={:?}>{status}</td><td>{}</td><td>{order}</td><td>{buttons}</td></tr>",
            esc(&v.id),
            esc(&v.title),
            if v.adhoc { format!(" <i>{}</i>", lang.t("(ad hoc)")) } else { String::new() },
            v.status,
            v.started_at.as_deref().unwrap_or("")
        ));
    }
    h.push_str(&format!("</table><h2>{}</h2><ul>", lang.t("Log")));
    for (t, wall, what) in p.log.iter().rev().take(20) {
        h.push_str(&format!("<li>{} ({} {wall:.0} s): {}</li>", town_time(*t), lang.t("wall"), esc(what)));
    }
    h.push_str("</ul>");
    Ok(axum::response::Html(h).into_response())
}
