//! The drill on the twin's side of the runner: the warm-up at full speed, then the drill at the
//! controller's pace; at each tick the controller's start, fire and skip are read, and injects whose
//! start condition has come are handed to the twin, which makes them real at that tick. The core's notices
//! tell which order each inject made and when it was resolved (for `AfterHandled`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use towntwin_core::orders::{Notice, State as OrderState};
use towntwin_core::principal::Principal;
use towntwin_core::time::{MINUTE, Millis};
use towntwin_sim::InjectEffect;
use towntwin_sim::Twin;

use super::aar::{InjectLog, Status, kind_of, town_time};
use super::panel::Control;
use super::script::{Drill, Start};
use crate::runner::pace::Gate;
use crate::runner::{Flow, Hooks};

/// Where each inject stands, kept by the twin's thread.
pub(super) struct Plan {
    pub logs: Vec<InjectLog>,
    /// The order each inject made, and when it was resolved.
    pub orders: Vec<Option<u64>>,
    pub resolved_at: Vec<Option<Millis>>,
}

/// The drill's hooks.
pub(super) struct DrillHooks {
    pub d: Drill,
    pub plan: Plan,
    pub control: Arc<Control>,
    /// The trainees' principals: their crews stand down from minute 0.
    pub trainees: HashSet<Principal>,
    pub drill_start: Millis,
    pub drill_end: Millis,
    /// Scripted trainees (`--play`).
    pub player: Option<super::play::Player>,
}

impl Hooks for DrillHooks {
    fn before(&mut self, twin: &mut Twin, upcoming: Millis) -> Flow {
        if upcoming >= self.drill_end {
            self.adhoc_too_late();
            return Flow::Stop("the end of the script".into());
        }
        if self.control.throttle.get().stopped {
            self.adhoc_too_late();
            return Flow::Stop("the controller".into());
        }
        if upcoming < self.drill_start {
            // The warm-up: the town as it runs, at full speed.
            return Flow::Go { paced: false };
        }
        let control = self.control.clone();
        {
            let mut p = control.lock();
            p.town = upcoming;
            if p.began.is_none() && !p.started {
                say!("drill: minute 0 reached; waiting for the controller to start the drill (POST /drill/start)");
            }
            while !p.started && !control.throttle.get().stopped {
                p = control.wake.wait_timeout(p, Duration::from_millis(200)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
        }
        // Paused: wait here, before the controller's fire and skip are read (a fire while paused takes
        // effect at the first minute after the resume); a step runs one minute at once.
        let paced = match control.throttle.gate() {
            Gate::Go => true,
            Gate::Step => false,
            Gate::Stop => return Flow::Stop("the controller".into()),
        };
        let mut p = control.lock();
        let first = p.began.is_none();
        if first {
            p.began = Some(Instant::now());
        }
        let (mut fire, skip, adhoc) = (std::mem::take(&mut p.fire), std::mem::take(&mut p.skip), std::mem::take(&mut p.adhoc));
        drop(p);
        // Ad-hoc injects join the drill's, after them, and go out now.
        for (inject, log) in adhoc {
            fire.push(self.add_adhoc(inject, log));
        }
        if first {
            // The trainees take over their crews' new orders from minute 0; the warm-up ran as the town does.
            twin.stand_down(self.trainees.clone());
            say!("drill: minute 0 at town time {}; pace {}", town_time(upcoming), control.throttle.get().speed);
        }
        let plan = &mut self.plan;
        for i in skip {
            if plan.logs[i].status == Status::NotStarted {
                plan.logs[i].status = Status::Skipped;
                plan.logs[i].due_at = Some(upcoming);
            }
        }
        for &i in &self.d.order {
            let now_due = fire.contains(&i) || due(&self.d, plan, self.drill_start, i).is_some_and(|t| t <= upcoming);
            if plan.logs[i].status == Status::NotStarted && now_due {
                plan.logs[i].status = Status::Started;
                plan.logs[i].due_at = Some(upcoming);
                twin.inject(i as u32, self.d.script.injects[i].what.clone());
                say!("drill: minute {}: {} due: {}", (upcoming - self.drill_start) / MINUTE, self.d.script.injects[i].id, self.d.script.injects[i].title);
            }
        }
        if let Some(player) = self.player.as_mut() {
            player.play(&self.d, &self.plan, upcoming);
        }
        Flow::Go { paced }
    }

    /// Injects that took effect this tick: marks timed against the pace.
    fn stepped(&mut self, twin: &mut Twin) -> Vec<(usize, Millis)> {
        let mut started = Vec::new();
        for InjectEffect { inject, at, what, .. } in twin.take_applied() {
            let log = &mut self.plan.logs[inject as usize];
            if log.started_at.is_none() {
                log.started_at = Some(at);
                started.push((inject as usize, at));
            }
            log.effects.push((at, what));
        }
        started
    }

    fn answered(&mut self, _: &Twin, notices: &[Notice]) {
        track_orders(&self.d, &mut self.plan, notices);
    }

    fn after(&mut self, _: &Twin, end: Millis) {
        update_panel(&self.control, &self.plan, end);
    }
}

impl DrillHooks {
    /// An ad-hoc inject joins the drill's injects, after them; returns its index.
    fn add_adhoc(&mut self, inject: super::script::Inject, log: InjectLog) -> usize {
        let i = self.d.script.injects.len();
        if let Some(player) = self.player.as_mut() {
            player.add_inject(inject.expect.len());
        }
        self.d.script.injects.push(inject);
        self.d.areas.push(log.area.clone());
        self.d.order.push(i);
        self.plan.logs.push(log);
        self.plan.orders.push(None);
        self.plan.resolved_at.push(None);
        i
    }

    /// The drill ends: ad-hoc injects fired too late to take effect are kept, not started, for the report.
    fn adhoc_too_late(&mut self) {
        let adhoc = std::mem::take(&mut self.control.lock().adhoc);
        for (inject, log) in adhoc {
            self.add_adhoc(inject, log);
        }
    }
}

/// When inject `i` is due (town time), if its start condition has come.
fn due(d: &Drill, plan: &Plan, drill_start: Millis, i: usize) -> Option<Millis> {
    let index = |id: &str| d.script.injects.iter().position(|x| x.id == id);
    let m = |minutes: f64| (minutes * MINUTE as f64).round() as Millis;
    match &d.script.injects[i].start {
        Start::At { minute } => Some(drill_start + m(*minute)),
        Start::AfterStarted { inject, minutes } => index(inject).and_then(|j| plan.logs[j].started_at).map(|t| t + m(*minutes)),
        Start::AfterHandled { inject, minutes } => index(inject).and_then(|j| plan.resolved_at[j]).map(|t| t + m(*minutes)),
        Start::Manual => None,
    }
}

/// Which order each started inject made (the first about it: its rules, its area), and when it was resolved.
fn track_orders(d: &Drill, plan: &mut Plan, notices: &[Notice]) {
    for n in notices {
        for (i, log) in plan.logs.iter_mut().enumerate() {
            let kind = kind_of(&d.script.injects[i].what);
            if plan.orders[i].is_none() && n.event.to == OrderState::Created && log.is_about(kind, &n.rule, &n.sighting()) {
                plan.orders[i] = Some(n.event.order);
                log.effects.push((n.event.at, format!("order {} made ({})", n.event.order, n.rule)));
                say!("drill: {}: order {} made ({})", log.id, n.event.order, n.rule);
            }
            if plan.resolved_at[i].is_none() && n.event.to == OrderState::Resolved && plan.orders[i] == Some(n.event.order) {
                plan.resolved_at[i] = Some(n.event.at);
            }
        }
    }
}

fn update_panel(control: &Control, plan: &Plan, town: Millis) {
    let mut p = control.lock();
    p.town = town;
    // An ad-hoc inject on the panel but not yet taken by the twin has no log yet.
    for (i, v) in p.injects.iter_mut().enumerate().take(plan.logs.len()) {
        v.status = plan.logs[i].status;
        v.started_at = plan.logs[i].started_at.map(town_time);
        v.order = plan.orders[i];
        v.resolved = plan.resolved_at[i].is_some();
    }
}
