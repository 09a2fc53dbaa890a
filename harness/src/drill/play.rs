//! `towntwin drill FILE --play`: scripted trainees. Each trainee played (all of them, or those named with
//! `--play=cadre,housing`) does what the script expects of them, through the core's HTTP API with the
//! trainee's own token, as a person at the console would: it opens the order (`GET /orders/{id}`, the
//! audited view that is a notice) and acts on it (`POST /orders/{id}/actions`), taking the steps the order's
//! state needs first (an accept before a start). A shipped drill played so is a test of the drill: every
//! expectation can be met in the twin, in order, by the principals the script names (CI plays each one).
//!
//! The player acts at the drill's ticks, on the twin's thread, while the core waits for the next tick (the
//! lockstep): an action's event time is the core's clock, so a played drill is the same every run. Each
//! expectation is tried from half its time on (`within_minutes / 2` after the inject started), a trainee's
//! expectations on an inject in the script's order, until it is done or can no longer be (someone else
//! did it; the order moved on).

use std::collections::BTreeMap;

use serde::Deserialize;
use towntwin_core::orders::{Action, Loop, Role, State};
use towntwin_core::principal::Principal;
use towntwin_core::time::{MINUTE, Millis};

use super::hooks::Plan;
use super::script::{Drill, Expected};

/// One played trainee.
struct Played {
    token: String,
    role: Option<Role>,
}

/// What the player knows of an order (the API's `GET /orders/{id}`).
#[derive(Debug, Deserialize)]
struct Seen {
    state: State,
    level: Loop,
    assignee: Vec<Role>,
    #[serde(default)]
    joint: bool,
    #[serde(default)]
    reported: Vec<Role>,
}

#[derive(Deserialize)]
struct Detail {
    order: Seen,
}

/// What a try came to.
enum Try {
    /// The order is not where the step can be taken yet.
    NotYet,
    Done,
    /// It can no longer be done by this trainee (and why).
    Moot(String),
}

/// The scripted trainees of a drill.
pub(super) struct Player {
    rt: tokio::runtime::Handle,
    http: reqwest::Client,
    /// The core's API, `http://127.0.0.1:PORT`.
    base: String,
    trainees: BTreeMap<String, Played>,
    /// Per inject, per expectation: done, or given up.
    settled: Vec<Vec<bool>>,
    drill_start: Millis,
}

impl Player {
    /// Plays the trainees named in `names` (all of the script's when `None`); `tokens` are theirs.
    pub fn new(
        d: &Drill,
        rt: tokio::runtime::Handle,
        base: String,
        tokens: &BTreeMap<String, (Principal, String)>,
        names: Option<&[String]>,
        drill_start: Millis,
    ) -> Player {
        let trainees = tokens
            .iter()
            .filter(|(n, _)| names.is_none_or(|names| names.contains(n)))
            .map(|(n, (p, t))| (n.clone(), Played { token: t.clone(), role: p.role() }))
            .collect();
        let settled = d.script.injects.iter().map(|i| vec![false; i.expect.len()]).collect();
        Player { rt, http: reqwest::Client::new(), base, trainees, settled, drill_start }
    }

    /// An ad-hoc inject joined the drill, with this many expectations.
    pub fn add_inject(&mut self, expectations: usize) {
        self.settled.push(vec![false; expectations]);
    }

    /// At the tick starting at `now`: every played expectation whose time has come is tried.
    pub fn play(&mut self, d: &Drill, plan: &Plan, now: Millis) {
        for &i in &d.order {
            let (Some(start), Some(order)) = (plan.logs[i].started_at, plan.orders[i]) else { continue };
            let inject = &d.script.injects[i];
            for (k, x) in inject.expect.iter().enumerate() {
                if self.settled[i][k] || !self.trainees.contains_key(&x.by) {
                    continue;
                }
                if now < start + (x.within_minutes * MINUTE as f64 / 2.0) as Millis {
                    continue;
                }
                // A trainee's steps on an inject in the script's order.
                if inject.expect[..k].iter().enumerate().any(|(j, y)| y.by == x.by && !self.settled[i][j]) {
                    continue;
                }
                let minute = (now - self.drill_start) / MINUTE;
                match self.attempt(&x.by, x.action, x.in_loop, order) {
                    Try::NotYet => {}
                    Try::Done => {
                        self.settled[i][k] = true;
                        say!("drill: minute {minute}: played {} {:?} on order {order} ({})", x.by, x.action, inject.id);
                    }
                    Try::Moot(why) => {
                        self.settled[i][k] = true;
                        say!("drill: minute {minute}: played {} gives up {:?} on order {order} ({}): {why}", x.by, x.action, inject.id);
                    }
                }
            }
        }
    }

    /// Opens the order as the trainee and takes the steps toward `action` its state allows (in loop
    /// `in_loop`: it waits for the order to get there).
    fn attempt(&self, by: &str, action: Expected, in_loop: Option<Loop>, order: u64) -> Try {
        let Some(t) = self.trainees.get(by) else { return Try::Moot("not played".into()) };
        let seen = match self.get(&t.token, order) {
            Ok(s) => s,
            Err(e) => return Try::Moot(e),
        };
        match in_loop {
            Some(want) if seen.level < want => return Try::NotYet,
            Some(want) if seen.level > want => return Try::Moot(format!("the order has gone past the {} loop", want.as_str())),
            _ => {}
        }
        let steps = match steps(action, &seen, t.role) {
            Ok(steps) => steps,
            Err(t) => return t,
        };
        for a in steps {
            if let Err(e) = self.act(&t.token, order, &a) {
                return if e.starts_with("409") { Try::NotYet } else { Try::Moot(e) };
            }
        }
        Try::Done
    }

    fn get(&self, token: &str, order: u64) -> Result<Seen, String> {
        let url = format!("{}/orders/{order}", self.base);
        self.rt.block_on(async {
            let r = self.http.get(&url).bearer_auth(token).send().await.map_err(|e| format!("GET {url}: {e}"))?;
            let status = r.status();
            let text = r.text().await.map_err(|e| format!("GET {url}: {e}"))?;
            if !status.is_success() {
                return Err(format!("{} GET {url}: {text}", status.as_u16()));
            }
            serde_json::from_str::<Detail>(&text).map(|d| d.order).map_err(|e| format!("GET {url}: not an order: {e}"))
        })
    }

    fn act(&self, token: &str, order: u64, action: &Action) -> Result<(), String> {
        let url = format!("{}/orders/{order}/actions", self.base);
        self.rt.block_on(async {
            let r = self.http.post(&url).bearer_auth(token).json(action).send().await.map_err(|e| format!("POST {url}: {e}"))?;
            let status = r.status();
            if status.is_success() {
                return Ok(());
            }
            let text = r.text().await.unwrap_or_default();
            Err(format!("{} POST {url} {}: {text}", status.as_u16(), action.name()))
        })
    }
}

/// The actions that take an order in state `o` to `action` done by a trainee playing `role`, or why not
/// now (`NotYet`) or not at all (`Moot`).
fn steps(action: Expected, o: &Seen, role: Option<Role>) -> Result<Vec<Action>, Try> {
    use State::*;
    let assigned = role.is_none_or(|r| o.assignee.contains(&r));
    let moot = |why: &str| Err(Try::Moot(format!("{why} (the order is {} in the {} loop)", o.state.as_str(), o.level.as_str())));
    // Accept first, where the order waits for one and the trainee's role is on it.
    let lead = |then: Vec<Action>| -> Result<Vec<Action>, Try> {
        match o.state {
            Dispatched if assigned => Ok([vec![Action::Accept], then].concat()),
            Created | Dispatched | Returned => Err(Try::NotYet),
            Accepted | InProgress => Ok(then),
            _ => moot("it is past being worked on"),
        }
    };
    match action {
        Expected::Notice => Ok(Vec::new()),
        Expected::Accept => match o.state {
            Dispatched if assigned => Ok(vec![Action::Accept]),
            Created | Dispatched | Returned => Err(Try::NotYet),
            _ => moot("someone accepted it already"),
        },
        Expected::Start => match o.state {
            InProgress => moot("someone started it already"),
            _ => lead(vec![Action::Start]),
        },
        Expected::Resolve if o.joint => match role {
            Some(r) if o.reported.contains(&r) => moot("its part is reported already"),
            Some(r) if o.assignee.contains(&r) => lead(vec![Action::Report { role: r }]),
            _ => Err(Try::NotYet),
        },
        Expected::Resolve => match o.state {
            InProgress => Ok(vec![Action::Resolve]),
            _ => lead(vec![Action::Start, Action::Resolve]),
        },
        Expected::Fail => lead(vec![Action::Fail { reason: "could not be settled on site (a played trainee)".into() }]),
        Expected::Whistle => match (o.level, o.state) {
            (Loop::Small, Dispatched | Accepted | InProgress | Returned) => {
                Ok(vec![Action::Whistle { reason: "the estate cannot settle it: the committee whistles (a played trainee)".into() }])
            }
            (Loop::Small, Created) => Err(Try::NotYet),
            (Loop::Small, _) => moot("it was settled in the estate"),
            _ => moot("it has left the estate already"),
        },
        Expected::Report => match role {
            None => moot("a report is for a role, and this trainee plays none"),
            Some(r) if o.reported.contains(&r) => moot("its part is reported already"),
            Some(r) if o.joint && o.assignee.contains(&r) => lead(vec![Action::Report { role: r }]),
            Some(_) if matches!(o.state, Resolved | Verified | Closed | Cancelled) => moot("it was settled without this department"),
            Some(_) => Err(Try::NotYet),
        },
        Expected::Escalate => match o.state {
            Dispatched | Accepted | InProgress | Returned if o.level != Loop::Large => {
                Ok(vec![Action::Escalate { reason: "beyond this loop (a played trainee)".into() }])
            }
            Created => Err(Try::NotYet),
            _ => moot("it cannot be escalated from here"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: State, level: Loop, assignee: &[Role], joint: bool, reported: &[Role]) -> Seen {
        Seen { state, level, assignee: assignee.to_vec(), joint, reported: reported.to_vec() }
    }

    fn names(r: Result<Vec<Action>, Try>) -> Vec<&'static str> {
        match r {
            Ok(a) => a.iter().map(Action::name).collect(),
            Err(Try::NotYet) => vec!["not yet"],
            Err(Try::Done) => vec!["done"],
            Err(Try::Moot(_)) => vec!["moot"],
        }
    }

    #[test]
    fn a_played_trainee_takes_the_steps_the_order_needs() {
        use State::*;
        let property = Some(Role::Property);
        let small = seen(Dispatched, Loop::Small, &[Role::Property], false, &[]);
        assert_eq!(names(steps(Expected::Start, &small, property)), ["accept", "start"]);
        assert_eq!(names(steps(Expected::Resolve, &small, property)), ["accept", "start", "resolve"]);
        assert_eq!(names(steps(Expected::Fail, &small, property)), ["accept", "fail"]);
        // Not the property's order: it waits.
        assert_eq!(names(steps(Expected::Accept, &small, Some(Role::Owners))), ["not yet"]);
        assert_eq!(names(steps(Expected::Whistle, &small, Some(Role::Committee))), ["whistle"]);
        // A joint visit after the whistle: the housing office reports its own part, once.
        let joint = seen(Accepted, Loop::Medium, &[Role::Housing, Role::PublicSecurity], true, &[]);
        assert_eq!(names(steps(Expected::Report, &joint, Some(Role::Housing))), ["report"]);
        assert_eq!(names(steps(Expected::Resolve, &joint, Some(Role::Housing))), ["report"]);
        let reported = seen(InProgress, Loop::Medium, &[Role::Housing, Role::PublicSecurity], true, &[Role::Housing]);
        assert_eq!(names(steps(Expected::Report, &reported, Some(Role::Housing))), ["moot"]);
        assert_eq!(names(steps(Expected::Report, &reported, Some(Role::PublicSecurity))), ["report"]);
        // Still in the estate: the department waits for the whistle.
        assert_eq!(names(steps(Expected::Report, &small, Some(Role::Housing))), ["not yet"]);
        assert_eq!(names(steps(Expected::Whistle, &joint, Some(Role::Committee))), ["moot"]);
        let closed = seen(Closed, Loop::Small, &[Role::Property], false, &[]);
        assert_eq!(names(steps(Expected::Accept, &closed, property)), ["moot"]);
        assert_eq!(names(steps(Expected::Report, &closed, Some(Role::Housing))), ["moot"]);
        assert_eq!(names(steps(Expected::Notice, &closed, property)), Vec::<&str>::new());
    }
}
