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
    /// Escalate when failed on site (after the first failed visit at this loop; see `failed_visits`).
    pub escalate_on_fail: bool,
    /// Per rule id, how many failed visits at this loop move an order up, in place of `escalate_on_fail`'s
    /// one (or none): the estate may try a habit twice before the departments are called in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_visits: BTreeMap<String, u32>,
    /// Rule ids whose orders are joint visits at this loop: every taker goes, and the order is resolved when
    /// all have reported (部门报到), not when the first has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joint: Vec<String>,
    /// A task force assembled for the problem (专班): an order reaching this loop goes, as a joint visit, to
    /// this loop's takers (the task force's office) together with every department the rule has at the
    /// medium loop. Only the large loop may assemble.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub assemble: bool,
    /// Escalate when reopened this many times.
    pub escalate_after_reopens: Option<u32>,
    /// Per rule id, the roles that take that rule's orders at this loop instead of `targets` (renovation
    /// failures to city management, group rentals to housing and the police, the lone elderly to civil
    /// affairs). The first role leads: it is the crew that goes.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<Role>>,
    /// Per rule id, a service promise of its own at this loop: deadlines in place of the level's (the QR
    /// code's repair requests answered within the hour, say). A field left out keeps the level's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub promise: BTreeMap<String, Promise>,
}

/// A rule's own deadlines at one loop (see [`Level::promise`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promise {
    #[serde(default)]
    pub accept_within_minutes: Option<u32>,
    #[serde(default)]
    pub resolve_within_hours: Option<u32>,
}

impl Level {
    /// The accept and resolve deadlines for an order of `rule` at this loop: the rule's promise where it
    /// gives one, else the level's.
    pub fn deadlines(&self, rule: &str) -> (Option<u32>, Option<u32>) {
        let p = self.promise.get(rule);
        (p.and_then(|p| p.accept_within_minutes).or(self.accept_within_minutes), p.and_then(|p| p.resolve_within_hours).or(self.resolve_within_hours))
    }
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
    /// Per rule id, when the estate's committee blows the whistle on an order still in the small loop
    /// (居村吹哨): the twin's committees follow this; a person may whistle at any time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub whistle: BTreeMap<String, WhistleWhen>,
    /// Per rule id, minutes an order waits, created but not yet dispatched, while its alarm is relayed
    /// through the district's and the town's operations centres (区、镇城运中心) before it reaches the
    /// loop's takers. None: dispatched as it is created.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub relay_minutes: BTreeMap<String, u32>,
}

/// Whether a list names a role more than once.
fn twice(roles: &[Role]) -> bool {
    roles.iter().enumerate().any(|(i, r)| roles[..i].contains(r))
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
            for (rule, n) in &l.failed_visits {
                p.check(*n >= 1, || format!("levels[{i}].failed_visits[\"{rule}\"]"), || "expected at least 1 failed visit".into());
            }
            p.check(
                !l.assemble || l.level == Loop::Large,
                || format!("levels[{i}].assemble"),
                || "only the large loop assembles a task force (from the medium loop's departments)".into(),
            );
            for rule in &l.joint {
                let n = self.takers(l.level, rule, &[]).len();
                // A small loop that leaves the rule to its own targets is checked with the rules (`check_rules`).
                let own_targets = n == 0 && l.level == Loop::Small;
                p.check(
                    n >= 2 || own_targets,
                    || format!("levels[{i}].joint[\"{rule}\"]"),
                    || format!("a joint visit needs at least two takers at the {} loop; `{rule}` has {n} there (give it a route)", l.level.as_str()),
                );
            }
            p.check(l.accept_within_minutes != Some(0), || format!("levels[{i}].accept_within_minutes"), || "expected at least 1".into());
            p.check(l.resolve_within_hours != Some(0), || format!("levels[{i}].resolve_within_hours"), || "expected at least 1".into());
            p.check(l.escalate_after_reopens != Some(0), || format!("levels[{i}].escalate_after_reopens"), || "expected at least 1".into());
            for (rule, pr) in &l.promise {
                let at = |f: &str| format!("levels[{i}].promise[\"{rule}\"].{f}");
                p.check(
                    pr.accept_within_minutes.is_some() || pr.resolve_within_hours.is_some(),
                    || format!("levels[{i}].promise[\"{rule}\"]"),
                    || "expected accept_within_minutes or resolve_within_hours (a promise of neither changes nothing)".into(),
                );
                p.check(
                    pr.accept_within_minutes.is_none_or(|m| (1..=525_600).contains(&m)),
                    || at("accept_within_minutes"),
                    || "expected 1..=525600 minutes (a year)".into(),
                );
                p.check(
                    pr.resolve_within_hours.is_none_or(|h| (1..=8_760).contains(&h)),
                    || at("resolve_within_hours"),
                    || "expected 1..=8760 hours (a year)".into(),
                );
            }
        }
        p.check(self.whistle_to != Loop::Small, || "whistle_to".into(), || "a whistle calls in the departments: Medium or Large".into());
        for (rule, m) in &self.relay_minutes {
            p.check((1..=10_080).contains(m), || format!("relay_minutes[\"{rule}\"]"), || format!("expected 1..=10080 minutes (a week), got {m}"));
        }
        for (rule, w) in &self.whistle {
            let bad = matches!(w, WhistleWhen::AfterFails(0) | WhistleWhen::AfterHours(0));
            p.check(!bad, || format!("whistle[\"{rule}\"]"), || "expected AtOnce, AfterFails(n) or AfterHours(n) with n at least 1".into());
            p.check(
                self.start_at.get(rule).is_none_or(|l| *l == Loop::Small),
                || format!("whistle[\"{rule}\"]"),
                || "its orders start above the small loop (start_at): there is nothing for a committee to whistle".into(),
            );
            let small = self.levels.iter().any(|l| l.level == Loop::Small);
            if let (true, WhistleWhen::AfterFails(n)) = (small, w)
                && let Some(m) = self.fails_to_escalate(Loop::Small, rule)
                && m <= *n
            {
                p.push(
                    format!("whistle[\"{rule}\"]"),
                    format!("the small loop escalates on failed visit {m} already (escalate_on_fail or failed_visits): a whistle after {n} never blows"),
                );
            }
        }
        for (i, l) in self.levels.iter().enumerate() {
            p.check(
                l.level == Loop::Small || !l.targets.is_empty(),
                || format!("levels[{i}].targets"),
                || format!("the {} loop needs at least one role (only the small loop may leave it to the rules' own targets)", l.level.as_str()),
            );
            for (rule, roles) in &l.routes {
                p.check(!roles.is_empty(), || format!("levels[{i}].routes[\"{rule}\"]"), || "expected at least one role".into());
                p.check(!twice(roles), || format!("levels[{i}].routes[\"{rule}\"]"), || "a role named twice".into());
            }
            p.check(!twice(&l.targets), || format!("levels[{i}].targets"), || "a role named twice".into());
        }
        p.finish()
    }

    /// Checks that every rule a route or a start names is in `rules` (a policy is loaded apart from the
    /// rules it runs with, so this is checked where the two meet).
    pub fn check_rules(&self, rules: &RuleSet, file: &Path) -> Result<(), DataErrors> {
        let mut p = Problems::new(file);
        let known = || rules.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ");
        let routes = self.levels.iter().enumerate().flat_map(|(i, l)| {
            let fails = l.failed_visits.keys().map(move |rule| (format!("levels[{i}].failed_visits"), rule));
            let joint = l.joint.iter().map(move |rule| (format!("levels[{i}].joint"), rule));
            let promise = l.promise.keys().map(move |rule| (format!("levels[{i}].promise"), rule));
            l.routes.keys().map(move |rule| (format!("levels[{i}].routes"), rule)).chain(fails).chain(joint).chain(promise)
        });
        let starts = self
            .start_at
            .keys()
            .map(|rule| ("start_at".to_string(), rule))
            .chain(self.whistle.keys().map(|rule| ("whistle".to_string(), rule)))
            .chain(self.relay_minutes.keys().map(|rule| ("relay_minutes".to_string(), rule)));
        for (field, rule) in routes.chain(starts) {
            p.check(
                rules.rules.iter().any(|r| &r.id == rule),
                || format!("{field}[\"{rule}\"]"),
                || format!("no rule `{rule}` in the rule set (it has {})", known()),
            );
        }
        // A joint visit in a small loop that takes the rule's own targets: the rule must name two.
        for (i, l) in self.levels.iter().enumerate().filter(|(_, l)| l.level == Loop::Small) {
            for rule in l.joint.iter().filter_map(|id| rules.rules.iter().find(|r| &r.id == id)) {
                let n = self.takers(l.level, &rule.id, &rule.targets).len();
                p.check(
                    n >= 2,
                    || format!("levels[{i}].joint[\"{}\"]", rule.id),
                    || format!("a joint visit needs at least two takers at the small loop; `{}` has {n} there (its targets)", rule.id),
                );
            }
        }
        p.finish()
    }

    pub fn level(&self, l: Loop) -> &Level {
        self.levels.iter().find(|x| x.level == l).unwrap_or(&self.levels[0])
    }

    /// Who takes an order of `rule` at loop `l`: the level's route for the rule, else the level's targets;
    /// at the small loop with neither, the rule's own `targets`.
    /// A loop that assembles a task force takes its own takers first, then the medium loop's for the rule.
    pub fn takers(&self, l: Loop, rule: &str, rule_targets: &[Role]) -> Vec<Role> {
        let lvl = self.level(l);
        let mut who = match lvl.routes.get(rule) {
            Some(r) => r.clone(),
            None if lvl.targets.is_empty() => rule_targets.to_vec(),
            None => lvl.targets.clone(),
        };
        if lvl.assemble && l != Loop::Medium {
            for r in self.takers(Loop::Medium, rule, rule_targets) {
                if !who.contains(&r) {
                    who.push(r);
                }
            }
        }
        who
    }

    /// Whether an order of `rule` at loop `l` is a joint visit.
    pub fn joint(&self, l: Loop, rule: &str) -> bool {
        let lvl = self.level(l);
        lvl.assemble || lvl.joint.iter().any(|r| r == rule)
    }

    /// How many failed visits at loop `l` move an order of `rule` up; `None`: failures never do.
    pub fn fails_to_escalate(&self, l: Loop, rule: &str) -> Option<u32> {
        let lvl = self.level(l);
        lvl.failed_visits.get(rule).copied().or(lvl.escalate_on_fail.then_some(1))
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
