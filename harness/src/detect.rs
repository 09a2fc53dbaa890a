//! Scoring work orders against the twin's ground truth: per rule, how many real incidents got an order
//! (recall), how many orders matched no real incident (false alarms), and how long detection took. An
//! order is about an incident by the one rule for it, `truth::Detects::is_about`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use towntwin_core::orders::Order;
use towntwin_core::rules::RuleSet;
use towntwin_core::time::{MINUTE, Millis};
use towntwin_core::truth::MatchBy;
use towntwin_sim::Incident;

use crate::percentiles::Recorder;

#[derive(Debug, Clone, Serialize)]
pub struct RuleScore {
    pub incidents: u64,
    pub detected: u64,
    pub recall: Option<f64>,
    pub orders: u64,
    pub false_alarms: u64,
    /// Detection delay from incident start to the first order about it, in minutes.
    pub delay_p50_min: Option<f64>,
    pub delay_p90_min: Option<f64>,
}

/// Scores every rule of `rules` that says what it detects and has orders or target incidents. Taken by
/// reference: a 35-day replication's incidents and orders copied to be scored were a third of its peak memory.
pub fn score(rules: &RuleSet, orders: &[&Order], incidents: &[&Incident], run_end: Millis) -> BTreeMap<String, RuleScore> {
    let mut out = BTreeMap::new();
    for rule in &rules.rules {
        let detects = &rule.detects;
        if detects.kinds.is_empty() {
            continue;
        }
        let by_subject = &(detects.by == MatchBy::Subject);
        let real: Vec<&Incident> = incidents.iter().copied().filter(|i| !i.benign && detects.kinds.contains(&i.kind)).collect();
        let mine: Vec<&Order> = orders.iter().copied().filter(|o| o.rule == rule.id).collect();
        if real.is_empty() && mine.is_empty() {
            continue;
        }
        // Index orders and incidents by where they are (the area, and the subject for a rule that names
        // one), so matching is not a scan of a whole road's orders per incident: over weeks that was
        // quadratic in the run's length.
        let place = |area: &'_ str, subject: &'_ str| (area.to_string(), if *by_subject { subject.to_string() } else { String::new() });
        let mut by_place: HashMap<(String, String), Vec<&Order>> = HashMap::new();
        for o in &mine {
            by_place.entry(place(&o.area, &o.subject)).or_default().push(o);
        }
        let mut delays = Recorder::new();
        for i in &real {
            let first = by_place
                .get(&place(&i.area, &i.subject))
                .into_iter()
                .flatten()
                .filter(|o| detects.is_about(&o.sighting(), &i.span(), run_end))
                .map(|o| o.first_seen)
                .min();
            if let Some(t) = first {
                delays.record(t - i.start_ms);
            }
        }
        let mut real_by_place: HashMap<(String, String), Vec<&Incident>> = HashMap::new();
        for i in &real {
            real_by_place.entry(place(&i.area, &i.subject)).or_default().push(i);
        }
        let false_alarms = mine
            .iter()
            .filter(|o| !real_by_place.get(&place(&o.area, &o.subject)).into_iter().flatten().any(|i| detects.is_about(&o.sighting(), &i.span(), run_end)))
            .count() as u64;
        let delay = delays.summary(MINUTE as f64);
        let detected = delays.len();
        out.insert(
            rule.id.clone(),
            RuleScore {
                incidents: real.len() as u64,
                detected,
                recall: (!real.is_empty()).then(|| detected as f64 / real.len() as f64),
                orders: mine.len() as u64,
                false_alarms,
                delay_p50_min: delay.map(|d| d.p50),
                delay_p90_min: delay.map(|d| d.p90),
            },
        );
    }
    out
}

/// What each rule's orders are about, for the twin's responders: a resolution of an order can then end
/// the incident it was about in the town (see `towntwin_sim::scenario::Response`); and when the committees
/// whistle on a rule's orders, by the policy.
pub fn rule_targets(rules: &RuleSet, policy: &towntwin_core::orders::Policy) -> towntwin_sim::RuleTargets {
    towntwin_sim::RuleTargets {
        detects: rules.rules.iter().map(|r| (r.id.clone(), r.detects.clone())).collect(),
        whistle: policy.whistle.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    }
}

/// Checks that every crew the policy sends a rule's orders to has shifts in the scenario: the crew that
/// leads at the loop the order starts in, and at each loop it can move up to. An order routed to a crew
/// that never works would wait for its deadlines, which is a mistake in the files, not a what-if.
pub fn check_staffed(
    policy: &towntwin_core::orders::Policy,
    rules: &RuleSet,
    responders: &towntwin_sim::scenario::Responders,
    policy_file: &std::path::Path,
) -> Result<(), towntwin_core::load::DataErrors> {
    use towntwin_core::orders::Loop;
    let mut p = towntwin_core::load::Problems::new(policy_file);
    if !responders.enabled {
        return Ok(());
    }
    for r in &rules.rules {
        let start = policy.start_at.get(&r.id).copied().unwrap_or(Loop::Small);
        let mut at = (start, policy.takers(start, &r.id, &r.targets));
        loop {
            // The lead goes; on a joint visit every party goes, and the order waits for each.
            let go = if policy.joint(at.0, &r.id) { at.1.len() } else { 1 };
            for &role in at.1.iter().take(go) {
                let crew = responders.crew(role);
                p.check(
                    crew.shifts.iter().any(|s| s.headcount > 0),
                    || format!("rule `{}` at the {} loop", r.id, at.0.as_str()),
                    || format!("routed to {role:?}, which has no shifts in the scenario (responders.{}.shifts)", role.name()),
                );
            }
            let Some(next) = at.0.next() else { break };
            at = policy.route_up(next, &r.id, at.1.first().copied());
        }
    }
    p.finish()
}
