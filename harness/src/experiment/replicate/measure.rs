//! A replication's measures: each order's times, the KPIs and the validity checks, from what the run
//! recorded.

use super::*;
use towntwin_core::event::Line;

/// The source's scenario of incident kind `kind` (by its name).
fn scenario_of(kind: &str) -> Option<&'static str> {
    towntwin_core::truth::IncidentKind::ALL.iter().find(|k| k.as_str() == kind).and_then(|k| k.scenario())
}

/// The remediation rate of incident kind `kind` (by its name), 0 when not listed.
fn rate_of(rates: &BTreeMap<towntwin_core::truth::IncidentKind, f64>, kind: &str) -> f64 {
    rates.iter().find(|(k, _)| k.to_string() == kind).map_or(0.0, |(_, r)| *r)
}

/// What a finished replication is measured from.
pub(super) struct Measure<'a> {
    pub(super) plan: &'a Plan,
    pub(super) v: &'a Resolved,
    pub(super) core: &'a Core,
    pub(super) history: &'a [Step],
    pub(super) incidents: &'a [Incident],
    pub(super) window: Millis,
    pub(super) end: Millis,
    pub(super) crews: &'a ResponderStats,
}

/// One order's times, from its transitions.
#[derive(Default)]
struct Times {
    created: Millis,
    accepted: Option<Millis>,
    closed: Option<Millis>,
    /// When it stopped being open for good (closed or cancelled, and not reopened after).
    ended: Option<Millis>,
}

impl Measure<'_> {
    pub(super) fn days(&self) -> f64 {
        (self.end - self.window) as f64 / DAY as f64
    }

    fn times(&self) -> HashMap<u64, Times> {
        let mut t: HashMap<u64, Times> = HashMap::new();
        for e in self.history {
            let x = t.entry(e.order).or_default();
            if e.from.is_none() {
                x.created = e.at;
            }
            match e.to {
                State::Accepted if x.accepted.is_none() => x.accepted = Some(e.at),
                State::Closed => {
                    x.closed = Some(e.at);
                    x.ended = Some(e.at);
                }
                State::Cancelled => x.ended = Some(e.at),
                _ => {
                    if e.from == Some(State::Closed) {
                        x.closed = None;
                        x.ended = None;
                    }
                }
            }
        }
        t
    }

    pub(super) fn kpis(&self) -> (BTreeMap<String, f64>, BTreeMap<String, Vec<f32>>) {
        let mut k = BTreeMap::new();
        let days = self.days();
        let times = self.times();
        let h = HOUR as f64;
        let sla = self.plan.spec.sla_hours as f64;
        // Orders created in the window; an order still open at the end is censored there.
        let mut close = Vec::new();
        let mut accept = Vec::new();
        let mut closed_only = Vec::new();
        let mut by_loop: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut created = 0u64;
        for o in &self.core.orders.orders {
            let Some(t) = times.get(&o.id) else { continue };
            if t.created < self.window {
                continue;
            }
            created += 1;
            match t.closed {
                Some(c) => {
                    let hours = (c - t.created) as f64 / h;
                    close.push((hours, true));
                    closed_only.push(hours);
                    by_loop.entry(o.level.as_str().to_string()).or_default().push(hours as f32);
                }
                // Cancelled: it will never close; counted as censored when it ended.
                None => close.push(((t.ended.unwrap_or(self.end) - t.created) as f64 / h, false)),
            }
            match t.accepted {
                Some(a) => accept.push(((a - t.created) as f64 / h, true)),
                None => accept.push(((t.ended.unwrap_or(self.end) - t.created) as f64 / h, false)),
            }
        }
        k.insert("orders_per_day".into(), created as f64 / days);
        let km = KaplanMeier::new(&close);
        k.insert("close_hours_rmst72".into(), km.restricted_mean(72.0));
        if let Some(m) = km.quantile(0.5) {
            k.insert("close_hours_km_median".into(), m);
        }
        if let Some(m) = km.quantile(0.9) {
            k.insert("close_hours_km_p90".into(), m);
        }
        k.insert("closed_within_sla".into(), 1.0 - km.survival(sla));
        if !closed_only.is_empty() {
            k.insert("close_hours_closed_only_mean".into(), closed_only.iter().sum::<f64>() / closed_only.len() as f64);
        }
        let km = KaplanMeier::new(&accept);
        k.insert("accept_hours_rmst24".into(), km.restricted_mean(24.0));
        if let Some(m) = km.quantile(0.5) {
            k.insert("accept_hours_km_median".into(), m);
        }
        // Escalations into each loop: every transition that moves an order up (a policy deadline, a failure,
        // a reopening, a whistle), found as a loop higher than the order's transition before it.
        let mut level_of: HashMap<u64, Loop> = HashMap::new();
        let mut up = [0usize; 2];
        for e in self.history {
            // An order's first transition (an order that starts above the small loop) is no escalation.
            let before = level_of.insert(e.order, e.level).unwrap_or(e.level);
            if e.at >= self.window && e.level > before {
                up[(e.level == Loop::Large) as usize] += 1;
            }
        }
        for (lvl, n) in [Loop::Medium, Loop::Large].into_iter().zip(up) {
            k.insert(format!("escalations_per_day/{}", lvl.as_str()), n as f64 / days);
        }
        // The backlog: open orders at the end of each hour of the window.
        let open_end = self.core.orders.orders.iter().filter(|o| o.state.is_open()).count();
        k.insert("open_at_end".into(), open_end as f64);
        // Staff.
        let mut cost = 0.0;
        let mut duty = 0u64;
        for (name, c) in &self.crews.by_crew {
            if c.duty_minutes == 0 && c.dispatched == 0 {
                continue;
            }
            cost += c.cost_yuan;
            duty += c.duty_minutes;
            if c.duty_minutes > 0 {
                k.insert(format!("utilisation/{name}"), c.busy_minutes as f64 / c.duty_minutes as f64);
            }
            if c.accepted > 0 {
                k.insert(format!("wait_minutes_mean/{name}"), c.wait_minutes as f64 / c.accepted as f64);
            }
            if c.queue_left > 0 {
                k.insert(format!("queue_wait_minutes_mean/{name}"), c.queue_left_minutes as f64 / c.queue_left as f64);
            }
            k.insert(format!("staff_hours_per_day/{name}"), c.duty_minutes as f64 / 60.0 / days);
        }
        k.insert("cost_yuan_per_day".into(), cost / days);
        k.insert("staff_hours_per_day".into(), duty as f64 / 60.0 / days);
        // Harm: hours each real incident was going on inside the window, per kind.
        let mut harm: BTreeMap<String, f64> = BTreeMap::new();
        for i in self.incidents.iter().filter(|i| !i.benign) {
            let (a, b) = (i.start_ms.max(self.window), i.end_ms.unwrap_or(self.end).min(self.end));
            *harm.entry(i.kind.to_string()).or_default() += (b - a).max(0) as f64 / h;
        }
        let total: f64 = harm.values().sum();
        // What the platform and the problems left going on cost (the scenario's `costs`, assumptions).
        let costs = &self.v.scenario.costs;
        // The same by the source's scenario.
        let mut by_scenario: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for (kind, hours) in &harm {
            if let Some(sc) = scenario_of(kind) {
                let e = by_scenario.entry(sc).or_default();
                e.0 += hours / days;
                e.1 += hours * rate_of(&costs.remediation_yuan_per_hour, kind) / days;
            }
        }
        for (sc, (hours, yuan)) in by_scenario {
            k.insert(format!("scenario_harm_hours_per_day/{sc}"), hours);
            k.insert(format!("scenario_remediation_yuan_per_day/{sc}"), yuan);
        }
        for (kind, hours) in &harm {
            let r = rate_of(&costs.remediation_yuan_per_hour, kind);
            if r > 0.0 {
                k.insert(format!("remediation_yuan_per_day/{kind}"), hours * r / days);
            }
        }
        let remediation: f64 = harm.iter().map(|(kind, hours)| hours * rate_of(&costs.remediation_yuan_per_hour, kind)).sum::<f64>() / days;
        let capital = costs.capital(&self.v.scenario.platform, &self.v.town);
        k.insert("capital_yuan_per_day".into(), capital.per_day_yuan);
        if capital.estates_covered > 0 {
            // A covered estate's own devices and system, with an even share of the town's platform (built for
            // every estate of the town, whichever are covered yet).
            let town_share = costs.town_yuan / self.v.town.estates.len().max(1) as f64;
            let own = capital.estates_yuan / capital.estates_covered as f64;
            k.insert("capital_once_yuan_per_estate".into(), own + town_share);
        }
        if !self.v.town.estates.is_empty() {
            let lifetime = remediation * 365.0 * costs.lifetime_years;
            k.insert("remediation_yuan_per_estate_lifetime".into(), lifetime / self.v.town.estates.len() as f64);
        }
        k.insert("remediation_yuan_per_day".into(), remediation);
        k.insert("total_cost_yuan_per_day".into(), cost / days + capital.per_day_yuan + remediation);
        for (kind, hours) in harm {
            k.insert(format!("harm_hours_per_day/{kind}"), hours / days);
        }
        k.insert("harm_hours_per_day".into(), total / days);
        // Problems still going on at the end, by kind ("zero group rentals").
        let sc = &self.v.scenario;
        let mut going: BTreeMap<String, u64> = sc.hotline.patience.keys().chain(sc.response.effects.keys()).map(|k| (k.to_string(), 0)).collect();
        for i in self.incidents.iter().filter(|i| !i.benign && i.end_ms.is_none_or(|e| e > self.end)) {
            *going.entry(i.kind.to_string()).or_default() += 1;
        }
        for (kind, n) in going {
            k.insert(format!("going_on_at_end/{kind}"), n as f64);
        }
        // Reports on the estates' other lines: the QR code and the patrols; and residents' reports by either
        // line (12345 or the QR code), which a QR code moves between lines without changing.
        let week = |n: usize| n as f64 / (days / 7.0);
        for line in [Line::Qr, Line::Patrol] {
            let n = self.incidents.iter().flat_map(|i| &i.reports).filter(|(t, l)| *l == line && *t >= self.window).count();
            k.insert(format!("reports_per_week/{}", line.device()), week(n));
        }
        let residents = self
            .incidents
            .iter()
            .filter(|i| !i.benign)
            .map(|i| i.calls.iter().filter(|&&c| c >= self.window).count() + i.reports.iter().filter(|r| r.1 == Line::Qr && r.0 >= self.window).count())
            .sum::<usize>();
        k.insert("resident_reports_per_week".into(), week(residents));
        // The 12345 hotline: calls in the window, problems solved before anyone called (未呼先应), and
        // hours from a problem's first call to its end (接诉即办; still going on at the end: censored).
        let weeks = days / 7.0;
        let mut calls: BTreeMap<String, u64> = BTreeMap::new();
        let callable: std::collections::BTreeSet<_> = self.v.scenario.hotline.patience.keys().copied().collect();
        let (mut solved, mut solved_first) = (0u64, 0u64);
        let mut solved_by_kind: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let (mut started, mut called) = (0u64, 0u64);
        let mut to_end = Vec::new();
        for i in self.incidents.iter().filter(|i| !i.benign && callable.contains(&i.kind)) {
            let n = i.calls.iter().filter(|&&c| c >= self.window).count() as u64;
            *calls.entry(i.kind.to_string()).or_default() += n;
            if i.start_ms >= self.window {
                started += 1;
                called += u64::from(!i.calls.is_empty());
            }
            // A resident's own request (a repair, a question) is the resident's report: it is never solved
            // before one, so it is not counted among the problems the platform could solve first (未呼先应).
            if i.ended_by == Some("response")
                && !towntwin_sim::scenario::REQUESTS.contains(&i.kind)
                && let Some(end) = i.end_ms.filter(|&e| e >= self.window)
            {
                // Before any resident reported it: by 12345 or by the estate's QR code (a patrol is no resident).
                let qr = i.reports.iter().filter(|r| r.1 == Line::Qr).map(|r| r.0);
                let first = u64::from(i.calls.iter().copied().chain(qr).all(|c| c >= end));
                solved += 1;
                solved_first += first;
                let e = solved_by_kind.entry(i.kind.to_string()).or_default();
                e.0 += 1;
                e.1 += first;
            }
            if let Some(&first) = i.calls.first().filter(|&&c| c >= self.window) {
                match i.end_ms.filter(|&e| e <= self.end) {
                    Some(e) => to_end.push(((e - first) as f64 / h, true)),
                    None => to_end.push(((self.end - first) as f64 / h, false)),
                }
            }
        }
        let mut scenario_calls: BTreeMap<&str, u64> = BTreeMap::new();
        for (kind, n) in &calls {
            k.insert(format!("hotline_calls_per_week/{kind}"), *n as f64 / weeks);
            if let Some(sc) = scenario_of(kind) {
                *scenario_calls.entry(sc).or_default() += n;
            }
        }
        for (sc, n) in scenario_calls {
            k.insert(format!("scenario_calls_per_week/{sc}"), n as f64 / weeks);
        }
        k.insert("hotline_calls_per_week".into(), calls.values().sum::<u64>() as f64 / weeks);
        if solved > 0 {
            k.insert("solved_before_any_call".into(), solved_first as f64 / solved as f64);
        }
        let mut solved_by_scenario: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (kind, (n, first)) in solved_by_kind {
            k.insert(format!("solved_before_any_call/{kind}"), first as f64 / n as f64);
            if let Some(sc) = scenario_of(&kind) {
                let e = solved_by_scenario.entry(sc).or_default();
                e.0 += n;
                e.1 += first;
            }
        }
        for (sc, (n, first)) in solved_by_scenario {
            k.insert(format!("scenario_solved_before_any_call/{sc}"), first as f64 / n as f64);
        }
        if started > 0 {
            k.insert("called_about_share".into(), called as f64 / started as f64);
        }
        if !to_end.is_empty() {
            let km = KaplanMeier::new(&to_end);
            k.insert("call_to_end_hours_rmst72".into(), km.restricted_mean(72.0));
        }
        // How incidents ended: by a response, by themselves, or still going on, per kind (of those that
        // started in the window).
        let mut ended: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for i in self.incidents.iter().filter(|i| !i.benign && i.start_ms >= self.window) {
            let e = ended.entry(i.kind.to_string()).or_default();
            e.0 += 1;
            e.1 += u64::from(i.ended_by == Some("response"));
        }
        // How many real problems began a day, per kind and per scenario of the source: a response that
        // changes a habit (a household persuaded to sort right, a rider to charge at a pile) shows here.
        let mut began: BTreeMap<&str, u64> = BTreeMap::new();
        for (kind, (n, _)) in &ended {
            k.insert(format!("incidents_per_day/{kind}"), *n as f64 / days);
            if let Some(sc) = scenario_of(kind) {
                *began.entry(sc).or_default() += n;
            }
        }
        for (sc, n) in began {
            k.insert(format!("scenario_incidents_per_day/{sc}"), n as f64 / days);
        }
        for (kind, (n, by_response)) in ended {
            // Not the kinds that are over as they happen (a wrong sort): no response ends one.
            let instant = towntwin_sim::scenario::INSTANT.iter().any(|k| k.as_str() == kind);
            if !instant && self.v.scenario.response.effects.keys().any(|k| k.as_str() == kind) {
                k.insert(format!("ended_by_response/{kind}"), by_response as f64 / n as f64);
            }
        }
        // Detection, over the incidents that started in the window.
        let started: Vec<&Incident> = self.incidents.iter().filter(|i| i.start_ms >= self.window).collect();
        let orders: Vec<_> = self.core.orders.orders.iter().filter(|o| o.created_at >= self.window).collect();
        for (rule, s) in detect::score(&self.v.rules, &orders, &started, self.end) {
            if let Some(r) = s.recall {
                k.insert(format!("recall/{rule}"), r);
            }
            k.insert(format!("false_alarms_per_day/{rule}"), s.false_alarms as f64 / days);
            if let Some(d) = s.delay_p50_min {
                k.insert(format!("detection_delay_p50_min/{rule}"), d);
            }
        }
        (k, by_loop)
    }

    pub(super) fn checks(&self) -> Checks {
        let mut c = Checks { created: self.history.iter().filter(|e| e.from.is_none()).count() as u64, ..Checks::default() };
        for o in &self.core.orders.orders {
            match o.state {
                State::Closed => c.closed += 1,
                State::Cancelled => c.cancelled += 1,
                s => *c.open_by_state.entry(s.as_str().to_string()).or_default() += 1,
            }
        }
        c.conservation_holds = c.created == c.closed + c.cancelled + c.open_by_state.values().sum::<u64>();
        let minutes = ((self.end - self.window) / towntwin_core::time::MINUTE) as f64;
        for (name, s) in &self.crews.by_crew {
            if s.queue_joined == 0 || s.queue_left == 0 || s.queue_area_minutes == 0 {
                continue;
            }
            let l = s.queue_area_minutes as f64 / minutes;
            let lambda = s.queue_joined as f64 / minutes;
            let w = s.queue_left_minutes as f64 / s.queue_left as f64;
            c.little.insert(name.clone(), Little { l, lambda_per_minute: lambda, w_minutes: w, relative_error: (l - lambda * w).abs() / l });
        }
        c
    }
}
