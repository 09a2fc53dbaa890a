//! The drill's evaluators (HSEEP): each signs in with their own token (their principal is
//! `town/evaluator-<name>`, issued by the core at the start, which also lets them watch the console, where
//! they act on no order), sees the exercise evaluation guide (EEG) of the objectives they evaluate, live,
//! and records observations: a strength or an area for improvement, tied to one of their objectives and,
//! optionally, an inject, with a corrective action where they have one. Each observation is written to the
//! core's audit log (`observe`, at the core's event time), so it is kept with everything else the drill
//! did, chained and verifiable, and the after-action report reads it back from there.
//!
//! Routes on the controller's address: `GET /drill/evaluate` (the page; a sign-in form without the
//! cookie), `POST /drill/evaluate/login`, `GET /drill/evaluate/status` (the EEG, an HTML fragment),
//! `POST /drill/evaluate/observe` (the page's form); for scripts `GET /drill/eeg` and
//! `POST /drill/observations` (JSON, `Authorization: Bearer <the evaluator's token>`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use towntwin_core::principal::Principal;
use towntwin_core::web::html::{cookie, esc, same_origin};
use towntwin_core::web::i18n::Lang;

use super::aar::{Noted, Observation, ObservationKind, observation_target, town_time};
use super::panel::Control;
use super::script::{Evaluator, Expected, Inject};

/// The cookie the evaluator's page keeps their token in.
const COOKIE: &str = "towntwin_evaluator";
/// The longest observation and corrective action taken, in characters.
pub const MAX_TEXT: usize = 2000;
pub const MAX_ACTION: usize = 500;

pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/drill/evaluate", get(page))
        .route("/drill/evaluate/login", post(login))
        .route("/drill/evaluate/status", get(status))
        .route("/drill/evaluate/observe", post(observe_form))
        .route("/drill/eeg", get(eeg_json))
        .route("/drill/observations", post(observe_json))
}

struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The drill's core, while it runs.
fn the_core(c: &Control) -> Result<Arc<std::sync::Mutex<towntwin_core::service::Core>>, Refusal> {
    c.core.as_ref().and_then(std::sync::Weak::upgrade).ok_or_else(|| Refusal(StatusCode::SERVICE_UNAVAILABLE, "the drill's core is not running".into()))
}

/// The evaluator signed in: by a bearer token, or the page's cookie (only from the panel's own pages).
fn who(c: &Control, headers: &HeaderMap) -> Result<(Principal, Evaluator), Refusal> {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let from_cookie = cookie(headers, COOKIE);
    if bearer.is_none() && from_cookie.is_some() {
        same_origin(headers).map_err(|o| Refusal(StatusCode::FORBIDDEN, format!("a request from {o} cannot use the evaluator's page")))?;
    }
    let unknown = || Refusal(StatusCode::UNAUTHORIZED, "an evaluator signs in with the token printed for them at the start".into());
    let token = bearer.or(from_cookie).ok_or_else(unknown)?;
    let core = the_core(c)?;
    let p = core.lock().map_err(|_| Refusal(StatusCode::INTERNAL_SERVER_ERROR, "the core's lock was poisoned".into()))?.principal_of(token);
    let p = p.map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?.ok_or_else(unknown)?;
    let e = c.drill.script.evaluators.iter().find(|e| e.principal() == p).cloned();
    let e = e.ok_or_else(|| Refusal(StatusCode::FORBIDDEN, format!("{p} is not an evaluator of this drill")))?;
    Ok((p, e))
}

/// An observation as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Observe {
    objective: String,
    #[serde(default)]
    inject: Option<String>,
    kind: ObservationKind,
    text: String,
    #[serde(default)]
    corrective_action: Option<String>,
}

/// Checks an observation of `e` and records it in the core's audit log; returns it.
fn record(c: &Control, p: &Principal, e: &Evaluator, o: Observe) -> Result<Observation, Refusal> {
    if !e.objectives.contains(&o.objective) {
        return Err(Refusal(StatusCode::FORBIDDEN, format!("{} evaluates {}: not `{}`", e.name, e.objectives.join(", "), o.objective)));
    }
    let inject = o.inject.map(|i| i.trim().to_string()).filter(|i| !i.is_empty());
    if let Some(i) = &inject {
        let known: Vec<String> = c.lock().injects.iter().map(|v| v.id.clone()).collect();
        if !known.contains(i) {
            return Err(Refusal(StatusCode::BAD_REQUEST, format!("`inject`: no inject `{i}` in this drill ({})", known.join(", "))));
        }
    }
    let text = o.text.trim().to_string();
    if text.is_empty() || text.chars().count() > MAX_TEXT {
        return Err(Refusal(StatusCode::BAD_REQUEST, format!("`text`: expected 1 to {MAX_TEXT} characters")));
    }
    let action = o.corrective_action.map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
    if action.as_ref().is_some_and(|a| a.chars().count() > MAX_ACTION) {
        return Err(Refusal(StatusCode::BAD_REQUEST, format!("`corrective_action`: at most {MAX_ACTION} characters")));
    }
    let noted = Noted { kind: o.kind, text, corrective_action: action };
    let outcome = serde_json::to_string(&noted).map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let target = observation_target(&o.objective, inject.as_deref());
    let core = the_core(c)?;
    let at = {
        let mut core = core.lock().map_err(|_| Refusal(StatusCode::INTERNAL_SERVER_ERROR, "the core's lock was poisoned".into()))?;
        core.audit(p, "observe", &target, &outcome)
            .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("the observation could not be kept: {e}")))?;
        core.now()
    };
    let seen = Observation {
        at,
        evaluator: e.name.clone(),
        objective: o.objective,
        inject,
        kind: noted.kind,
        text: noted.text,
        corrective_action: noted.corrective_action,
    };
    say!("drill: evaluator {} observes {} ({:?}): {}", seen.evaluator, target, seen.kind, seen.text);
    c.lock().observations.push(seen.clone());
    Ok(seen)
}

/// One task of an EEG: an expectation that serves one of the evaluator's objectives, and where it stands.
#[derive(Debug, Serialize)]
struct Task {
    inject: String,
    title: String,
    by: String,
    action: Expected,
    within_minutes: f64,
    points: u32,
    /// The inject's state, its start (town time) and its order, as the controller's panel shows them.
    status: String,
    started_at: Option<String>,
    order: Option<u64>,
}

#[derive(Debug, Serialize)]
struct EegObjective {
    id: String,
    text: String,
    tasks: Vec<Task>,
}

#[derive(Debug, Serialize)]
struct Eeg {
    evaluator: String,
    principal: String,
    objectives: Vec<EegObjective>,
    observations: Vec<Observation>,
}

fn eeg(c: &Control, e: &Evaluator) -> Eeg {
    let p = c.lock();
    let injects: Vec<&Inject> = c.drill.script.injects.iter().chain(&p.adhoc_fired).collect();
    let objectives = c
        .drill
        .script
        .objectives
        .iter()
        .filter(|o| e.objectives.contains(&o.id))
        .map(|o| {
            let tasks = injects
                .iter()
                .flat_map(|i| i.expect.iter().filter(|x| x.objective == o.id).map(move |x| (i, x)))
                .map(|(i, x)| {
                    let v = p.injects.iter().find(|v| v.id == i.id);
                    Task {
                        inject: i.id.clone(),
                        title: i.title.clone(),
                        by: x.by.clone(),
                        action: x.action,
                        within_minutes: x.within_minutes,
                        points: x.points,
                        status: v.map_or("not_started".into(), |v| format!("{:?}", v.status).to_lowercase()),
                        started_at: v.and_then(|v| v.started_at.clone()),
                        order: v.and_then(|v| v.order),
                    }
                })
                .collect();
            EegObjective { id: o.id.clone(), text: o.text.clone(), tasks }
        })
        .collect();
    let observations = p.observations.iter().filter(|o| o.evaluator == e.name).cloned().collect();
    Eeg { evaluator: e.name.clone(), principal: e.principal().to_string(), objectives, observations }
}

async fn eeg_json(State(c): State<Arc<Control>>, headers: HeaderMap) -> Result<Response, Refusal> {
    let (_, e) = who(&c, &headers)?;
    Ok(axum::Json(eeg(&c, &e)).into_response())
}

async fn observe_json(State(c): State<Arc<Control>>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response, Refusal> {
    let (p, e) = who(&c, &headers)?;
    let o: Observe = serde_json::from_slice(&body).map_err(|err| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("{err}; expected {{\"objective\": \"O1\", \"inject\": \"I1\", \"kind\": \"strength\" or \"improvement\", \"text\": \"...\", \"corrective_action\": \"...\"}}"),
        )
    })?;
    let seen = record(&c, &p, &e, o)?;
    Ok((StatusCode::CREATED, axum::Json(seen)).into_response())
}

fn html(lang: Lang, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang={l}><head><meta charset=utf-8><title>{t}</title><script src=/drill/panel/htmx.min.js></script>\
         <style>body{{font-family:sans-serif;margin:1em 2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         th{{background:#eee}}.error{{color:#a00}}.ok{{color:#060}}textarea{{width:40em}}</style></head><body><nav>{switch}</nav><h1>{t}</h1>{body}</body></html>",
        l = lang.html(),
        t = lang.t("Drill evaluator"),
        switch = towntwin_core::web::i18n::switch(lang, "/drill"),
    ))
}

async fn page(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let Ok((_, e)) = who(&c, &headers) else {
        let form = format!(
            "<form method=post action=/drill/evaluate/login><label>{} <input id=token name=token type=password size=70></label> <button id=signin>{}</button></form>",
            lang.t("Evaluator's token"),
            lang.t("Sign in")
        );
        return html(lang, &form).into_response();
    };
    let mut options = String::new();
    for o in &e.objectives {
        let _ = write!(options, "<option value=\"{o}\">{o}</option>", o = esc(o));
    }
    let t = |s: &'static str| lang.t(s);
    let body = format!(
        "<p>{signed} <b id=evaluator>{name}</b>, {evaluating} {objectives}. {live}</p>\
         <div id=eeg hx-get=/drill/evaluate/status hx-trigger=\"load, every 2s\"></div>\
         <h2>{record_title}</h2><form hx-post=/drill/evaluate/observe hx-target=#observe-result>\
         <p><label>{objective} <select name=objective id=observe-objective>{options}</select></label> \
         <label>{inject} <input name=inject id=observe-inject size=6 placeholder=I1></label> \
         <label>{kind} <select name=kind id=observe-kind><option value=strength>{strength}</option><option value=improvement>{improvement}</option></select></label></p>\
         <p><textarea name=text id=observe-text rows=3 placeholder=\"{saw}\"></textarea></p>\
         <p><label>{action} <input name=corrective_action id=observe-action size=70></label></p>\
         <button id=observe>{record}</button></form><div id=observe-result></div>",
        name = esc(&e.name),
        objectives = esc(&e.objectives.join(", ")),
        signed = t("Signed in as"),
        evaluating = t("evaluating"),
        live = t("The guide below follows the drill live."),
        record_title = t("Record an observation"),
        objective = t("objective"),
        inject = t("inject (optional)"),
        kind = t("kind"),
        strength = t("strength"),
        improvement = t("area for improvement"),
        saw = t("What you saw"),
        action = t("corrective action (optional)"),
        record = t("Record"),
    );
    html(lang, &body).into_response()
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(c): State<Arc<Control>>, headers: HeaderMap, axum::extract::Form(f): axum::extract::Form<Login>) -> Response {
    if let Err(o) = same_origin(&headers) {
        return (StatusCode::FORBIDDEN, format!("a form from {o} cannot sign in here")).into_response();
    }
    let token = f.token.trim().to_string();
    let mut probe = HeaderMap::new();
    if let Ok(v) = format!("Bearer {token}").parse() {
        probe.insert("authorization", v);
    }
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric()) || who(&c, &probe).is_err() {
        let lang = Lang::of(&headers);
        let body =
            format!("<p class=error>{} <a href=/drill/evaluate>{}</a></p>", lang.t("That is not an evaluator's token of this drill."), lang.t("Try again"));
        return (StatusCode::UNAUTHORIZED, html(lang, &body)).into_response();
    }
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/drill");
    ([(axum::http::header::SET_COOKIE, cookie)], Redirect::to("/drill/evaluate")).into_response()
}

async fn status(State(c): State<Arc<Control>>, headers: HeaderMap) -> Result<Response, Refusal> {
    let (_, e) = who(&c, &headers)?;
    let lang = Lang::of(&headers);
    let g = eeg(&c, &e);
    let mut h = String::new();
    for o in &g.objectives {
        let _ = write!(h, "<h2>{}: {}</h2><table class=eeg><tr>", esc(&o.id), esc(&o.text));
        for th in ["inject", "task", "within", "points", "inject state", "order"] {
            let _ = write!(h, "<th>{}</th>", lang.t(th));
        }
        h.push_str("</tr>");
        if o.tasks.is_empty() {
            let _ = write!(h, "<tr><td colspan=6>{}</td></tr>", lang.t("No scripted task serves it: observe it as it comes."));
        }
        for t in &o.tasks {
            let _ = write!(
                h,
                "<tr><td><b>{}</b>: {}</td><td>{} {:?}</td><td>{:.0} min</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(&t.inject),
                esc(&t.title),
                esc(&t.by),
                t.action,
                t.within_minutes,
                t.points,
                esc(&t.status),
                t.started_at.as_deref().map(|s| format!(" at {}", esc(s))).unwrap_or_default(),
                t.order.map(|o| o.to_string()).unwrap_or_default()
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(h, "<h2>{}</h2><ul id=observations>", lang.t("Your observations"));
    for o in &g.observations {
        let _ = write!(
            h,
            "<li>{} <b>{}</b>{} {}: {}{}</li>",
            town_time(o.at),
            esc(&o.objective),
            o.inject.as_deref().map(|i| format!(" ({})", esc(i))).unwrap_or_default(),
            match o.kind {
                ObservationKind::Strength => lang.t("strength"),
                ObservationKind::Improvement => lang.t("area for improvement"),
            },
            esc(&o.text),
            o.corrective_action.as_deref().map(|a| format!("; {}: {}", lang.t("corrective action"), esc(a))).unwrap_or_default()
        );
    }
    h.push_str("</ul>");
    Ok(Html(h).into_response())
}

#[derive(Deserialize)]
struct ObserveForm {
    objective: String,
    #[serde(default)]
    inject: String,
    kind: String,
    text: String,
    #[serde(default)]
    corrective_action: String,
}

async fn observe_form(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    form: Result<axum::extract::Form<ObserveForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, Refusal> {
    let (p, e) = who(&c, &headers)?;
    let lang = Lang::of(&headers);
    let line = |ok: bool, text: String| Html(format!("<p class={} id=observe-outcome>{}</p>", if ok { "ok" } else { "error" }, esc(&text))).into_response();
    let Ok(axum::extract::Form(f)) = form else { return Ok(line(false, "expected objective, kind and text".into())) };
    let kind = match f.kind.as_str() {
        "strength" => ObservationKind::Strength,
        "improvement" => ObservationKind::Improvement,
        other => return Ok(line(false, format!("`kind`: expected strength or improvement, got {other:?}"))),
    };
    let o = Observe { objective: f.objective, inject: Some(f.inject), kind, text: f.text, corrective_action: Some(f.corrective_action) };
    Ok(match record(&c, &p, &e, o) {
        Ok(seen) => line(true, format!("{} {}", lang.t("recorded at"), town_time(seen.at))),
        Err(r) => line(false, format!("{}: {}", lang.t("refused"), r.1)),
    })
}
