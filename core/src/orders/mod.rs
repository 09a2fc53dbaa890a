//! Work orders (工单) as the 12345 practice runs them, the three loops, and escalation policies as data.
//!
//! States: created -> dispatched -> accepted -> in progress -> resolved -> verified -> closed; an order may be
//! returned to the dispatcher (with a reason) and dispatched again, reopened after resolution, cancelled as
//! a duplicate or invalid, escalated to the next loop by its policy's conditions or by an explicit whistle
//! (居村吹哨). Every transition is an appended [`OrderEvent`] with actor, time and reason; an illegal one is
//! refused with [`Illegal`]. Deadlines run on event time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::load::{DataErrors, Problems, read_ron};
use crate::rules::{Finding, RuleKind, RuleSet};
use crate::time::{HOUR, MINUTE, Millis};
use crate::truth::{IncidentKind, MatchBy};
pub use towntwin_contracts::orders::{
    Action, Loop, Notice, ORDERS_PREFIX, OrderEvent, Role, State, WATERMARK_TOPIC, WhistleWhen, parse_watermark, watermark_body,
};

mod policy;

pub use policy::*;

/// A refused transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} work order {order} in state {state}: {why}")]
pub struct Illegal {
    pub order: u64,
    pub action: &'static str,
    pub state: &'static str,
    pub why: String,
}

/// The state an action leads to from `from`, or why it cannot.
pub fn next_state(from: State, action: &Action) -> Result<State, String> {
    use State::*;
    let to = match (from, action) {
        (Created | Returned, Action::Dispatch) => Dispatched,
        (Dispatched, Action::Accept) => Accepted,
        (Accepted, Action::Start) => InProgress,
        (InProgress, Action::Resolve) => Resolved,
        (Resolved, Action::Verify) => Verified,
        (Verified, Action::Close) => Closed,
        (Dispatched | Accepted, Action::Return { .. }) => Returned,
        (Resolved | Verified | Closed, Action::Reopen { .. }) => Dispatched,
        (Created | Dispatched | Accepted | Returned, Action::Cancel { .. }) => Cancelled,
        // Escalation re-dispatches to the next loop.
        (Dispatched | Accepted | InProgress | Returned, Action::Escalate { .. } | Action::Whistle { .. }) => Dispatched,
        (Accepted | InProgress, Action::Fail { .. }) => Dispatched,
        // A joint visit's party reports; the order resolves when the last has (see `Orders::act`).
        (Accepted | InProgress, Action::Report { .. }) => InProgress,
        (s, a) => {
            return Err(format!("`{}` is not allowed from `{}`", a.name(), s.as_str()));
        }
    };
    if let Some(r) = action.reason()
        && r.trim().is_empty()
    {
        return Err(format!("`{}` needs a reason", action.name()));
    }
    Ok(to)
}

/// One work order's current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub rule: String,
    pub key: String,
    pub area: String,
    pub estate: Option<u16>,
    pub subject: String,
    pub service: String,
    pub detail: String,
    pub state: State,
    pub level: Loop,
    pub assignee: Vec<Role>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub dispatched_at: Millis,
    /// Repeats of the same condition: how many times, first and last seen.
    pub count: u32,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub reopened: u32,
    /// Residents' calls to the 12345 hotline attached to this order (counted in `count` too).
    #[serde(default)]
    pub calls: u32,
    /// Failed visits at its present loop (an escalation starts the count again).
    #[serde(default)]
    pub fails: u32,
    /// A joint visit at its present loop: every assignee goes, and it is resolved when all have reported.
    #[serde(default)]
    pub joint: bool,
    /// The assignees of a joint visit that have reported since it was last dispatched.
    #[serde(default)]
    pub reported: Vec<Role>,
    /// The policy this order started under, kept whole so a policy change does not rewrite history. Shared
    /// with the core's and the other orders' (cloning it whole for every action was 4% of an experiment).
    pub policy: std::sync::Arc<Policy>,
}

impl Order {
    /// Where and when the order saw its condition.
    pub fn sighting(&self) -> crate::truth::Sighting<'_> {
        crate::truth::Sighting { area: &self.area, subject: &self.subject, first_seen: self.first_seen, last_seen: self.last_seen }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Due {
    Accept,
    Resolve,
    /// The operations centres' relay is over: dispatch.
    Relay,
}

/// All work orders, with dedup by (rule, key) among open orders and event-time deadlines.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Orders {
    pub orders: Vec<Order>,
    #[serde(skip)]
    open_by_key: HashMap<(String, String), u64>,
    /// The last closed order of each key, for the rules' quiet hours.
    #[serde(skip)]
    closed_by_key: HashMap<(String, String), u64>,
    /// Deadlines by due time; with `armed`, an action finds its order's deadlines in log n.
    deadlines: BTreeSet<(Millis, u64, Due)>,
    /// Each order's armed deadlines (at most one of each kind), the keys of its entries in `deadlines`.
    #[serde(skip)]
    armed: HashMap<u64, Vec<(Millis, Due)>>,
    /// Transitions not yet taken by the store.
    #[serde(skip)]
    pub pending: Vec<OrderEvent>,
    /// Orders changed since the store last took them.
    #[serde(skip)]
    pub dirty: BTreeSet<u64>,
}

impl Orders {
    /// Rebuilds the dedup index and the deadlines after loading: both follow from the orders themselves.
    pub fn reindex(&mut self) {
        self.open_by_key = self.orders.iter().filter(|o| o.state.is_open()).map(|o| ((o.rule.clone(), o.key.clone()), o.id)).collect();
        self.closed_by_key = self.orders.iter().filter(|o| o.state == State::Closed).map(|o| ((o.rule.clone(), o.key.clone()), o.id)).collect();
        self.deadlines.clear();
        self.armed.clear();
        for id in 1..=self.orders.len() as u64 {
            self.arm(id);
        }
    }

    /// Sets an order's deadlines from its state, loop and policy (its old ones must be gone).
    fn arm(&mut self, id: u64) {
        let o = &self.orders[id as usize - 1];
        let lvl = o.policy.level(o.level);
        let (accept, resolve) = lvl.deadlines(&o.rule);
        let resolve_due = resolve.map(|h| o.dispatched_at + h as Millis * HOUR);
        let mut due = Vec::new();
        match o.state {
            State::Created => {
                if let Some(m) = o.policy.relay_minutes.get(&o.rule) {
                    due.push((o.created_at + *m as Millis * MINUTE, Due::Relay));
                }
            }
            State::Dispatched => {
                if let Some(m) = accept {
                    due.push((o.dispatched_at + m as Millis * MINUTE, Due::Accept));
                }
                if let Some(t) = resolve_due {
                    due.push((t, Due::Resolve));
                }
            }
            State::Accepted | State::InProgress => {
                if let Some(t) = resolve_due {
                    due.push((t, Due::Resolve));
                }
            }
            _ => {}
        }
        if due.is_empty() {
            return;
        }
        for &(t, what) in &due {
            self.deadlines.insert((t, id, what));
        }
        self.armed.insert(id, due);
    }

    /// Removes an order's deadlines: log n per deadline, not a scan of all of them.
    fn disarm(&mut self, id: u64) {
        for (t, what) in self.armed.remove(&id).unwrap_or_default() {
            self.deadlines.remove(&(t, id, what));
        }
    }

    pub fn get(&self, id: u64) -> Option<&Order> {
        self.orders.get(id.checked_sub(1)? as usize)
    }

    /// `e` with its order's place now (a transition of an order this set does not hold gets empty fields).
    pub fn notice(&self, e: &OrderEvent) -> Notice {
        let o = self.get(e.order);
        Notice {
            event: e.clone(),
            area: o.map(|o| o.area.clone()).unwrap_or_default(),
            rule: o.map(|o| o.rule.clone()).unwrap_or_default(),
            subject: o.map(|o| o.subject.clone()).unwrap_or_default(),
            estate: o.and_then(|o| o.estate),
            assignee: o.map(|o| o.assignee.clone()).unwrap_or_default(),
            joint: o.is_some_and(|o| o.joint),
            cause: None,
            first_seen: o.map_or(e.at, |o| o.first_seen),
            last_seen: o.map_or(e.at, |o| o.last_seen),
        }
    }

    /// A finding opens an order, or counts as a repeat of the open one with the same key. The dispatch of a
    /// new order is always legal; if the state machine ever refused it, that is returned, not dropped.
    pub fn on_finding(&mut self, f: &Finding, rules: &RuleSet, policy: &Policy) -> Result<u64, Illegal> {
        self.on_finding_under(f, rules, &std::sync::Arc::new(policy.clone()))
    }

    /// [`Orders::on_finding`] under a policy the new order shares (the core's).
    pub fn on_finding_under(&mut self, f: &Finding, rules: &RuleSet, policy: &std::sync::Arc<Policy>) -> Result<u64, Illegal> {
        if let Some(&id) = self.open_by_key.get(&(f.rule.clone(), f.key.clone())) {
            let o = &mut self.orders[id as usize - 1];
            o.count += 1;
            o.last_seen = o.last_seen.max(f.at);
            o.first_seen = o.first_seen.min(f.at);
            self.dirty.insert(id);
            return Ok(id);
        }
        let rule = rules.rules.iter().find(|r| r.id == f.rule);
        let quiet = rule.map_or(0, |r| r.quiet_hours) as Millis * HOUR;
        if quiet > 0
            && let Some(&id) = self.closed_by_key.get(&(f.rule.clone(), f.key.clone()))
        {
            let o = &mut self.orders[id as usize - 1];
            if o.state == State::Closed && f.at < o.updated_at + quiet {
                o.count += 1;
                o.last_seen = o.last_seen.max(f.at);
                self.dirty.insert(id);
                return Ok(id);
            }
        }
        let id = self.orders.len() as u64 + 1;
        let rule_targets = rule.map(|r| r.targets.as_slice()).unwrap_or_default();
        let level = policy.start_at.get(&f.rule).copied().unwrap_or(Loop::Small);
        let targets = policy.takers(level, &f.rule, rule_targets);
        self.orders.push(Order {
            id,
            rule: f.rule.clone(),
            key: f.key.clone(),
            area: f.area.clone(),
            estate: f.estate,
            subject: f.subject.clone(),
            service: rule.map(|r| r.service.clone()).unwrap_or_default(),
            detail: f.detail.clone(),
            state: State::Created,
            level,
            assignee: targets,
            created_at: f.at,
            updated_at: f.at,
            dispatched_at: f.at,
            count: 1,
            first_seen: f.at,
            last_seen: f.at,
            reopened: 0,
            calls: 0,
            fails: 0,
            joint: policy.joint(level, &f.rule),
            reported: Vec::new(),
            policy: std::sync::Arc::clone(policy),
        });
        self.open_by_key.insert((f.rule.clone(), f.key.clone()), id);
        self.log(id, f.at, "system", "create", None, State::Created, None);
        if policy.relay_minutes.contains_key(&f.rule) {
            // Relayed through the operations centres first: dispatched when the relay is over (`tick`).
            self.arm(id);
            return Ok(id);
        }
        // Dispatch at once to the small loop's takers.
        self.act(id, f.at, "system", Action::Dispatch)?;
        Ok(id)
    }

    /// A 12345 call about `category` (the finding of a hotline rule) joins the open order of a rule that
    /// detects that kind of problem at the same place: the same area, and the same subject for a rule that
    /// names one. Failing that, a report on one line joins the open order the other report rule (hotline or
    /// QR) made of the same problem (the same key: estate, category, subject): a resident who reported a
    /// repair by QR and then calls 12345 about it adds to that order. Returns the order it joined (the
    /// oldest, if several), or `None` when there is none and the call makes its own order.
    pub fn attach_call(&mut self, f: &Finding, category: IncidentKind, rules: &RuleSet) -> Option<u64> {
        let detecting: Vec<(&str, bool)> = rules
            .rules
            .iter()
            .filter(|r| !matches!(r.kind, RuleKind::Hotline | RuleKind::Qr) && r.detects.kinds.contains(&category))
            .map(|r| (r.id.as_str(), r.detects.by == MatchBy::Subject))
            .collect();
        let id = self
            .open_by_key
            .values()
            .copied()
            .filter(|id| {
                let o = &self.orders[*id as usize - 1];
                o.area == f.area && detecting.iter().any(|(rule, by_subject)| o.rule == *rule && (!by_subject || o.subject == f.subject))
            })
            .min()
            .or_else(|| {
                rules
                    .rules
                    .iter()
                    .filter(|r| matches!(r.kind, RuleKind::Hotline | RuleKind::Qr) && r.id != f.rule)
                    .filter_map(|r| self.open_by_key.get(&(r.id.clone(), f.key.clone())).copied())
                    .min()
            })?;
        let o = &mut self.orders[id as usize - 1];
        o.calls += 1;
        o.count += 1;
        o.last_seen = o.last_seen.max(f.at);
        self.dirty.insert(id);
        Some(id)
    }

    #[allow(clippy::too_many_arguments)]
    fn log(&mut self, id: u64, at: Millis, actor: &str, action: &str, from: Option<State>, to: State, reason: Option<String>) {
        let level = self.orders[id as usize - 1].level;
        self.pending.push(OrderEvent { order: id, at, actor: actor.to_string(), action: action.to_string(), from, to, level, reason });
        self.dirty.insert(id);
    }

    /// Applies an action by `actor` at event time `at`.
    pub fn act(&mut self, id: u64, at: Millis, actor: &str, action: Action) -> Result<State, Illegal> {
        let Some(o) = id.checked_sub(1).and_then(|i| self.orders.get(i as usize)) else {
            return Err(Illegal { order: id, action: action.name(), state: "missing", why: "no such work order".into() });
        };
        let from = o.state;
        let mut to = next_state(from, &action).map_err(|why| Illegal { order: id, action: action.name(), state: from.as_str(), why })?;
        let illegal = |why: String| Illegal { order: id, action: action.name(), state: from.as_str(), why };
        match &action {
            Action::Report { .. } if !o.joint => return Err(illegal(format!("work order {id} is no joint visit: its lead resolves it"))),
            Action::Report { role } if !o.assignee.contains(role) => {
                let names: Vec<&str> = o.assignee.iter().map(|r| r.name()).collect();
                return Err(illegal(format!("{} is not on this joint visit ({})", role.name(), names.join(", "))));
            }
            Action::Report { role } if o.reported.contains(role) => return Err(illegal(format!("{} has already reported", role.name()))),
            Action::Report { role } if o.assignee.iter().all(|r| r == role || o.reported.contains(r)) => to = State::Resolved,
            Action::Resolve if o.joint => {
                let waiting: Vec<&str> = o.assignee.iter().filter(|r| !o.reported.contains(r)).map(|r| r.name()).collect();
                return Err(illegal(format!("a joint visit is resolved when every party has reported (waiting for {})", waiting.join(", "))));
            }
            _ => {}
        }
        let policy = o.policy.clone();
        let mut level = o.level;
        let mut escalate = matches!(action, Action::Escalate { .. });
        match &action {
            Action::Whistle { .. } => level = level.max(policy.whistle_to),
            Action::Fail { .. } if policy.fails_to_escalate(level, &o.rule).is_some_and(|n| o.fails + 1 >= n) => escalate = true,
            _ => {}
        }
        if escalate {
            match level.next() {
                Some(n) => level = n,
                None if matches!(action, Action::Escalate { .. }) => {
                    return Err(Illegal { order: id, action: action.name(), state: from.as_str(), why: "already at the large loop".into() });
                }
                None => {}
            }
        }
        let reopened = matches!(action, Action::Reopen { .. });
        // A report names its party in the history (the action itself carries no reason).
        let reason = match &action {
            Action::Report { role } => Some(format!("for {}", role.name())),
            a => a.reason().map(str::to_string),
        };
        {
            let o = &mut self.orders[id as usize - 1];
            o.state = to;
            o.updated_at = at;
            match &action {
                Action::Fail { .. } => o.fails += 1,
                Action::Report { role } => o.reported.push(*role),
                _ => {}
            }
            if reopened {
                o.reopened += 1;
                if policy.level(o.level).escalate_after_reopens.is_some_and(|n| o.reopened >= n)
                    && let Some(n) = o.level.next()
                {
                    level = n;
                }
            }
            if level != o.level {
                let (l, who) = policy.route_up(level, &o.rule, o.assignee.first().copied());
                o.level = l;
                o.assignee = who;
                o.fails = 0;
                o.joint = policy.joint(l, &o.rule);
            }
            if to == State::Dispatched {
                o.dispatched_at = at;
                o.reported.clear();
            }
        }
        self.log(id, at, actor, action.name(), Some(from), to, reason);
        self.disarm(id);
        self.arm(id);
        let o = &self.orders[id as usize - 1];
        if !to.is_open() {
            let key = (o.rule.clone(), o.key.clone());
            self.open_by_key.remove(&key);
            if to == State::Closed {
                self.closed_by_key.insert(key, id);
            }
        } else if from == State::Closed {
            // Reopened: it is the open order of its key again.
            let key = (o.rule.clone(), o.key.clone());
            self.closed_by_key.remove(&key);
            self.open_by_key.entry(key).or_insert(id);
        }
        Ok(to)
    }

    /// Escalates orders whose deadlines passed by event time `now`. Only orders the policy can still move
    /// up are escalated, so a refusal is a defect: it is returned, not dropped.
    pub fn tick(&mut self, now: Millis) -> Result<(), Illegal> {
        while let Some(&(due, id, what)) = self.deadlines.first() {
            if due > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(list) = self.armed.get_mut(&id) {
                list.retain(|d| *d != (due, what));
                if list.is_empty() {
                    self.armed.remove(&id);
                }
            }
            let o = &self.orders[id as usize - 1];
            if what == Due::Relay {
                if o.state == State::Created {
                    self.act(id, due, "operations-centre", Action::Dispatch)?;
                }
                continue;
            }
            let stale = match what {
                Due::Accept => o.state == State::Dispatched,
                Due::Resolve => matches!(o.state, State::Dispatched | State::Accepted | State::InProgress),
                Due::Relay => false,
            };
            if stale && o.level.next().is_some() {
                let reason = match what {
                    Due::Accept => "not accepted in time",
                    _ => "not resolved in time",
                };
                self.act(id, due, "policy", Action::Escalate { reason: reason.into() })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_legal_transition_and_the_refusal_of_the_rest() {
        use State::*;
        let r = || "r".to_string();
        let actions = [
            Action::Dispatch,
            Action::Accept,
            Action::Start,
            Action::Resolve,
            Action::Fail { reason: r() },
            Action::Verify,
            Action::Close,
            Action::Return { reason: r() },
            Action::Reopen { reason: r() },
            Action::Cancel { reason: r() },
            Action::Escalate { reason: r() },
            Action::Whistle { reason: r() },
            Action::Report { role: Role::Housing },
        ];
        let legal: &[(State, &str, State)] = &[
            (Created, "dispatch", Dispatched),
            (Returned, "dispatch", Dispatched),
            (Dispatched, "accept", Accepted),
            (Accepted, "start", InProgress),
            (InProgress, "resolve", Resolved),
            (Resolved, "verify", Verified),
            (Verified, "close", Closed),
            (Dispatched, "return", Returned),
            (Accepted, "return", Returned),
            (Resolved, "reopen", Dispatched),
            (Verified, "reopen", Dispatched),
            (Closed, "reopen", Dispatched),
            (Created, "cancel", Cancelled),
            (Dispatched, "cancel", Cancelled),
            (Accepted, "cancel", Cancelled),
            (Returned, "cancel", Cancelled),
            (Dispatched, "escalate", Dispatched),
            (Accepted, "escalate", Dispatched),
            (InProgress, "escalate", Dispatched),
            (Returned, "escalate", Dispatched),
            (Dispatched, "whistle", Dispatched),
            (Accepted, "whistle", Dispatched),
            (InProgress, "whistle", Dispatched),
            (Returned, "whistle", Dispatched),
            (Accepted, "fail", Dispatched),
            (InProgress, "fail", Dispatched),
            (Accepted, "report", InProgress),
            (InProgress, "report", InProgress),
        ];
        let states = [Created, Dispatched, Accepted, InProgress, Resolved, Verified, Closed, Returned, Cancelled];
        let mut n_legal = 0;
        for s in states {
            for a in &actions {
                let want = legal.iter().find(|(f, n, _)| *f == s && *n == a.name()).map(|x| x.2);
                match (next_state(s, a), want) {
                    (Ok(to), Some(w)) => {
                        assert_eq!(to, w, "{s:?} {}", a.name());
                        n_legal += 1;
                    }
                    (Err(msg), None) => assert!(msg.contains(a.name()) && msg.contains(s.as_str()), "{msg}"),
                    (got, want) => panic!("{s:?} {}: got {got:?}, want {want:?}", a.name()),
                }
            }
        }
        assert_eq!(n_legal, legal.len());
        assert!(next_state(Dispatched, &Action::Return { reason: " ".into() }).unwrap_err().contains("needs a reason"));
    }
}
