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

use super::aar::{Status, town_time};
use super::live::{MAX_SPEED, MIN_SPEED, speed_ok};
use crate::runner::pace::{Speed, Throttle};
use towntwin_core::web::html::{cookie, esc, same_origin};

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
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct InjectView {
    pub id: String,
    pub title: String,
    pub status: Status,
    pub started_at: Option<String>,
    pub order: Option<u64>,
    pub resolved: bool,
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
    pub ids: Vec<String>,
    pub drill_start: Millis,
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
        .route("/drill/{command}", post(command))
        .route("/drill/injects/{id}/{command}", post(inject_command))
        .layer(axum::extract::DefaultBodyLimit::max(4096))
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
    let i = c.ids.iter().position(|x| *x == id).ok_or_else(|| PanelError(StatusCode::NOT_FOUND, format!("no inject `{id}` in this drill")))?;
    let mut p = c.lock();
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

// The controller's panel as a page: the same commands, as buttons.

const PANEL_COOKIE: &str = "towntwin_controller";

fn panel_html(body: &str) -> axum::response::Html<String> {
    axum::response::Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Drill controller</title><script src=/drill/panel/htmx.min.js></script>\
         <style>body{{font-family:sans-serif;margin:1em 2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}th{{background:#eee}}\
         button{{margin-right:.4em}}</style></head><body><h1>Drill controller</h1>{body}</body></html>"
    ))
}

async fn panel_page(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if authorised(&c, &headers).is_err() {
        return panel_html(
            "<form method=post action=/drill/panel/login><label>Controller's token <input id=token name=token type=password size=70></label> <button id=signin>Sign in</button></form>",
        )
        .into_response();
    }
    panel_html(
        "<p><button hx-post=/drill/start hx-swap=none>Start</button><button hx-post=/drill/pause hx-swap=none>Pause</button>\
         <button hx-post=/drill/resume hx-swap=none>Resume</button><button hx-post=/drill/step hx-swap=none>Step a minute</button><button hx-post=/drill/stop hx-swap=none hx-confirm=\"End the drill now?\">Stop</button>\
         <form hx-post=/drill/speed hx-swap=none style=display:inline><input name=speed size=5 placeholder=1> <button>Set speed</button></form></p>\
         <div id=status hx-get=/drill/panel/status hx-trigger=\"load, every 1s\"></div>",
    )
    .into_response()
}

#[derive(Deserialize)]
struct PanelLogin {
    token: String,
}

async fn panel_login(State(c): State<Arc<Control>>, axum::extract::Form(f): axum::extract::Form<PanelLogin>) -> Response {
    if c.token.is_empty() || f.token.trim() != c.token {
        return (StatusCode::UNAUTHORIZED, panel_html("<p>That is not the controller's token. <a href=/drill/panel>Try again</a></p>")).into_response();
    }
    let cookie = format!("{PANEL_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/drill", c.token);
    ([(axum::http::header::SET_COOKIE, cookie)], axum::response::Redirect::to("/drill/panel")).into_response()
}

async fn panel_status(State(c): State<Arc<Control>>, headers: HeaderMap) -> Result<Response, PanelError> {
    authorised(&c, &headers)?;
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
        "<p>Town time <b>{}</b>, drill minute <b>{:.0}</b>, {state}, pace x{}.</p><table><tr><th>inject</th><th>state</th><th>started</th><th>order</th><th></th></tr>",
        town_time(p.town),
        (p.town - c.drill_start) as f64 / MINUTE as f64,
        speed_of(t.speed)
    );
    for v in &p.injects {
        let buttons = if v.status == Status::NotStarted {
            format!(
                "<button hx-post=\"/drill/injects/{id}/fire\" hx-swap=none>Fire now</button><button hx-post=\"/drill/injects/{id}/skip\" hx-swap=none>Skip</button>",
                id = esc(&v.id)
            )
        } else {
            String::new()
        };
        let order = v.order.map_or_else(String::new, |o| format!("{o}{}", if v.resolved { " (resolved)" } else { "" }));
        h.push_str(&format!(
            "<tr><td><b>{}</b>: {}</td><td>{:?}</td><td>{}</td><td>{order}</td><td>{buttons}</td></tr>",
            esc(&v.id),
            esc(&v.title),
            v.status,
            v.started_at.as_deref().unwrap_or("")
        ));
    }
    h.push_str("</table><h2>Log</h2><ul>");
    for (t, wall, what) in p.log.iter().rev().take(20) {
        h.push_str(&format!("<li>{} (wall {wall:.0} s): {}</li>", town_time(*t), esc(what)));
    }
    h.push_str("</ul>");
    Ok(axum::response::Html(h).into_response())
}
