//! Escalation policies as data (`assets/policy.ron`): who takes an order in each loop, and when it moves up.

use super::*;

/// One loop's part of a policy: who takes the order and when it moves up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub level: Loop,
    /// Roles that take orders at this loop; an empty list means the rule's own targets.
    #[serde(default)]
    pub targets: Vec<Role>,
    /// Escalate if not accepted within this many minutes of dispatch.
    pub accept_within_minutes: Option<u32>,
    /// Escalate if not resolved within this many hours of dispatch.
    pub resolve_within_hours: Option<u32>,
    /// Escalate when failed on site.
    pub escalate_on_fail: bool,
    /// Escalate when reopened this many times.
    pub escalate_after_reopens: Option<u32>,
    /// Per rule id, the roles that take that rule's orders at this loop instead of `targets` (renovation
    /// failures to city management, group rentals to housing and the police, the lone elderly to civil
    /// affairs). The first role leads: it is the crew that goes.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<Role>>,
}

/// An escalation policy: what planners compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    pub version: u32,
    pub description: String,
    pub levels: Vec<Level>,
    /// Where a whistle sends an order.
    pub whistle_to: Loop,
    /// Rules whose orders start above the small loop (a direct large loop for safety-critical kinds).
    #[serde(default)]
    pub start_at: BTreeMap<String, Loop>,
}

impl Policy {
    pub fn load(file: &Path) -> Result<Policy, DataErrors> {
        let p: Policy = read_ron(file)?;
        p.validate(file)?;
        Ok(p)
    }

    /// Loads a policy to run with `rules`: its routes and starts must name their rules.
    pub fn load_for(file: &Path, rules: &RuleSet) -> Result<Policy, DataErrors> {
        let p = Policy::load(file)?;
        p.check_rules(rules, file)?;
        Ok(p)
    }

    pub fn validate(&self, file: &Path) -> Result<(), DataErrors> {
        let mut p = Problems::new(file);
        for want in [Loop::Small, Loop::Medium, Loop::Large] {
            let n = self.levels.iter().filter(|l| l.level == want).count();
            p.check(n == 1, || "levels".into(), || format!("expected exactly one {want:?} level, found {n}"));
        }
        for (i, l) in self.levels.iter().enumerate() {
            p.check(l.accept_within_minutes != Some(0), || format!("levels[{i}].accept_within_minutes"), || "expected at least 1".into());
            p.check(l.resolve_within_hours != Some(0), || format!("levels[{i}].resolve_within_hours"), || "expected at least 1".into());
            p.check(l.escalate_after_reopens != Some(0), || format!("levels[{i}].escalate_after_reopens"), || "expected at least 1".into());
        }
        p.check(self.whistle_to != Loop::Small, || "whistle_to".into(), || "a whistle calls in the departments: Medium or Large".into());
        for (i, l) in self.levels.iter().enumerate() {
            p.check(
                l.level == Loop::Small || !l.targets.is_empty(),
                || format!("levels[{i}].targets"),
                || format!("the {} loop needs at least one role (only the small loop may leave it to the rules' own targets)", l.level.as_str()),
            );
            for (rule, roles) in &l.routes {
                p.check(!roles.is_empty(), || format!("levels[{i}].routes[\"{rule}\"]"), || "expected at least one role".into());
            }
        }
        p.finish()
    }

    /// Checks that every rule a route or a start names is in `rules` (a policy is loaded apart from the
    /// rules it runs with, so this is checked where the two meet).
    pub fn check_rules(&self, rules: &RuleSet, file: &Path) -> Result<(), DataErrors> {
        let mut p = Problems::new(file);
        let known = || rules.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ");
        let routes = self.levels.iter().enumerate().flat_map(|(i, l)| l.routes.keys().map(move |rule| (format!("levels[{i}].routes"), rule)));
        let starts = self.start_at.keys().map(|rule| ("start_at".to_string(), rule));
        for (field, rule) in routes.chain(starts) {
            p.check(
                rules.rules.iter().any(|r| &r.id == rule),
                || format!("{field}[\"{rule}\"]"),
                || format!("no rule `{rule}` in the rule set (it has {})", known()),
            );
        }
        p.finish()
    }

    pub fn level(&self, l: Loop) -> &Level {
        self.levels.iter().find(|x| x.level == l).unwrap_or(&self.levels[0])
    }

    /// Who takes an order of `rule` at loop `l`: the level's route for the rule, else the level's targets;
    /// at the small loop with neither, the rule's own `targets`.
    pub fn takers(&self, l: Loop, rule: &str, rule_targets: &[Role]) -> Vec<Role> {
        let lvl = self.level(l);
        match lvl.routes.get(rule) {
            Some(r) => r.clone(),
            None if lvl.targets.is_empty() => rule_targets.to_vec(),
            None => lvl.targets.clone(),
        }
    }

    /// Where an order of `rule` led by `lead` (the first of its assignees, the crew that went) goes when it
    /// moves up to loop `to`: that loop's takers, without `lead` if it would lead again. An escalation never
    /// re-queues an order to the crew it came from: when `lead` is that loop's only taker, it goes up one
    /// more loop. At the large loop it stays with that loop's takers whoever led it before, since there is
    /// nowhere further.
    pub fn route_up(&self, to: Loop, rule: &str, lead: Option<Role>) -> (Loop, Vec<Role>) {
        let mut l = to;
        loop {
            let all = self.takers(l, rule, &[]);
            // The crew that led may stay informed, but never lead again.
            let fresh: Vec<Role> = if all.first().copied() == lead { all.iter().copied().filter(|r| Some(*r) != lead).collect() } else { all.clone() };
            if !fresh.is_empty() {
                return (l, fresh);
            }
            match l.next() {
                Some(n) => l = n,
                None => return (l, all),
            }
        }
    }
}
