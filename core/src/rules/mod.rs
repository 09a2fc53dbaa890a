//! Rules as data (`assets/rules.ron`) and the engine that runs them on event time.
//!
//! The engine never reads the wall clock. Its clock is the twin's `clock.tick` (the newest one seen): no
//! device's event moves it, and the core refuses events outside [`TimeWindow`] around it before they get
//! here. Timers (absence deadlines, overflow durations, device silence) fire when a tick passes them. Late and out-of-order events: an event older than the
//! clock still updates state where it is newer than what the state holds (a late gate pass moves a
//! person's last pass forward only if it is later than the one recorded), and a timer that already fired
//! is not un-fired: its work order stays, and a later pass re-arms the timer. Events never move the clock
//! backwards.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::event::{ElecAlarmKind, EventType};
use crate::load::{DataErrors, Problems, read_ron};
use crate::time::{HOUR, HhMm, MINUTE, Millis};
use crate::truth::Detects;

pub use towntwin_contracts::orders::Role;

mod engine;
mod sample;

pub use engine::{BLIND_OPEN_LIMIT, Engine, Finding, State};
pub use sample::{Frame, sample};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub version: u32,
    /// The event times the core accepts around its clock.
    #[serde(default)]
    pub window: TimeWindow,
    pub rules: Vec<Rule>,
    /// The files this set was built on through `extends`, the first the deepest (none for a file that
    /// states its whole set): an experiment's fingerprint reads them too.
    #[serde(skip)]
    pub bases: Vec<std::path::PathBuf>,
}

/// A rule file as written: a whole set, or changes to the set of another file (`extends`): that file's
/// window and rules, each rule given here replacing the base's rule of the same id or added after them,
/// and the window replaced when given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    version: u32,
    #[serde(default)]
    extends: Option<String>,
    #[serde(default, deserialize_with = "given")]
    window: Option<TimeWindow>,
    #[serde(default, deserialize_with = "given")]
    rules: Option<Vec<Rule>>,
}

/// A field written plainly (not `Some(...)`) that may be left out.
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// How many files deep `extends` may go (a file that extends itself stops here).
const EXTENDS_DEPTH: usize = 8;

/// How far from the core's clock an event's time may be. The clock moves only with the twin's
/// `clock.tick`; an event outside the window is rejected (`out_of_window`, dead-lettered), never applied:
/// one device stamped in 2099 or 1970 cannot move the clock, fire every timer or open orders in the past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Ahead of the clock: a device's event stamped within this many minutes after the last tick (the
    /// minute in progress, and clock skew). A tick may move the clock at most this far at once.
    pub ahead_minutes: u32,
    /// Behind the clock: late events up to this many hours old still update state.
    pub behind_hours: u32,
}

impl Default for TimeWindow {
    fn default() -> Self {
        TimeWindow { ahead_minutes: 10, behind_hours: 24 }
    }
}

impl TimeWindow {
    /// Why `t` is outside the window around `now`, if it is; any time is accepted before the first tick
    /// (`now` = 0: the clock is not set).
    pub fn check(&self, now: Millis, t: Millis) -> Option<String> {
        if now == 0 {
            return None;
        }
        let (ahead, behind) = (self.ahead_minutes as Millis * MINUTE, self.behind_hours as Millis * HOUR);
        if t > now + ahead {
            Some(format!(
                "event time {} is more than {} min ahead of the core's clock {}",
                crate::time::rfc3339(t),
                self.ahead_minutes,
                crate::time::rfc3339(now)
            ))
        } else if t < now - behind {
            Some(format!("event time {} is more than {} h behind the core's clock {}", crate::time::rfc3339(t), self.behind_hours, crate::time::rfc3339(now)))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub title: String,
    /// The town department's service code, for the medium loop.
    pub service: String,
    pub targets: Vec<Role>,
    pub kind: RuleKind,
    /// After an order for a key is closed, repeats of the condition within this many hours are counted on
    /// it instead of opening a new order (a group rental takes weeks to clear; a closed order must not
    /// spring back at the next pass through the gate). 0: a repeat after closing opens a new order.
    #[serde(default)]
    pub quiet_hours: u32,
    /// The ground-truth incident kinds this rule is meant to catch, for scoring a run (none: not scored).
    #[serde(default)]
    pub detects: Detects,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RuleKind {
    /// A registered vulnerable resident with no gate pass for `hours`; suppressed while the estate's gates
    /// are silent (a dead gate must not flood the committee).
    Absence {
        hours: u32,
        /// The fused rule: the order opens only when the resident's home has also shown no sign of life for
        /// this many hours: no water used on her water meter, her flat's door not opened (the register names
        /// both devices). A resident who stays in is not absent; a sign of life puts the check off until
        /// this many hours after it. `None` (the default): gate passes alone.
        #[serde(default)]
        home_quiet_hours: Option<u32>,
    },
    /// A flat used by more than `more_than` distinct faces within `window_days`.
    DistinctFaces { window_days: u32, more_than: u32 },
    /// At least `households` households drawn at random each day at local `at` (HH:MM), seeded by date and
    /// rule id so the draw can be audited and replayed.
    DailySample {
        households: u32,
        at: HhMm,
        /// Which flats the draw is from (the sampling frame).
        #[serde(default)]
        frame: Frame,
    },
    /// One order per alarm of `event` (optionally only some codes or alarm kinds, above a confidence).
    Direct {
        event: EventType,
        #[serde(default)]
        min_confidence: f32,
        #[serde(default)]
        codes: Vec<u8>,
        #[serde(default)]
        alarms: Vec<ElecAlarmKind>,
    },
    /// `start` not followed by `end` on the same device within `minutes`.
    Duration { start: EventType, end: EventType, minutes: u32 },
    /// A device heard from no more for `factor` times its heartbeat interval.
    Silence { factor: f64, mains_minutes: u32, battery_minutes: u32 },
    /// A resident's call to the 12345 hotline (`hotline.call`). The core attaches it to the open order of a
    /// rule that detects the call's category for the same place (the same subject, for a rule that names
    /// one); otherwise it opens (or repeats) an order of this rule keyed by estate, category and subject.
    /// It takes the reports on the estates' patrol and QR lines too, unless the set has a [`RuleKind::Qr`]
    /// rule, which then takes the QR reports.
    Hotline,
    /// A resident's report by the estate's QR code (高行家园码): a repair request (物业报修), a question, or a
    /// problem seen. Like [`RuleKind::Hotline`] (a report about a problem a rule already has an order for
    /// joins that order), but for the QR line alone, so that a policy can give the platform's own channel
    /// its own service promise (its deadlines and takers) apart from the city's hotline.
    Qr,
    /// A household whose drops the kiosk's camera flagged as wrongly sorted at least `times` times within
    /// `within_days` days (the kiosks' data comparison and video capture, 数据比对、视频抓拍): an order to
    /// call on the household and persuade it, keyed by the flat. The flags are counted afresh after each
    /// finding.
    WrongSorts { times: u32, within_days: u32 },
}

impl RuleSet {
    /// Reads and validates a rule file, and the files it `extends`.
    pub fn load(file: &Path) -> Result<RuleSet, DataErrors> {
        RuleSet::load_at(file, 0)
    }

    fn load_at(file: &Path, depth: usize) -> Result<RuleSet, DataErrors> {
        let f: RuleFile = read_ron(file)?;
        let mut p = Problems::new(file);
        let set = match f.extends {
            None => match f.rules {
                Some(rules) => RuleSet { version: f.version, window: f.window.unwrap_or_default(), rules, bases: Vec::new() },
                None => {
                    p.push("rules", "expected the rules, or `extends` naming a rule file to build on");
                    return Err(p.finish().unwrap_err());
                }
            },
            Some(base) => {
                if depth >= EXTENDS_DEPTH {
                    p.push("extends", format!("more than {EXTENDS_DEPTH} files deep: does a file extend itself?"));
                    return Err(p.finish().unwrap_err());
                }
                let path = file.parent().unwrap_or(Path::new(".")).join(&base);
                let mut set = RuleSet::load_at(&path, depth + 1)?;
                set.bases.push(path);
                set.version = f.version;
                if let Some(w) = f.window {
                    set.window = w;
                }
                let mut ids = std::collections::HashSet::new();
                for (i, r) in f.rules.unwrap_or_default().into_iter().enumerate() {
                    if !ids.insert(r.id.clone()) {
                        p.push(format!("rules[{i}].id"), format!("`{}` is given twice in this file", r.id));
                        continue;
                    }
                    match set.rules.iter_mut().find(|x| x.id == r.id) {
                        Some(x) => *x = r,
                        None => set.rules.push(r),
                    }
                }
                p.finish()?;
                set
            }
        };
        // An extended set's problems are named by the rule's id too: its place is in the merged set.
        set.validate(file).map_err(|mut e| {
            if !set.bases.is_empty() {
                for d in &mut e.0 {
                    let Some(field) = &d.field else { continue };
                    let id =
                        field.strip_prefix("rules[").and_then(|r| r.split(']').next()).and_then(|i| i.parse::<usize>().ok()).and_then(|i| set.rules.get(i));
                    if let Some(r) = id {
                        d.field = Some(format!("{field} (rule `{}`, after extends)", r.id));
                    }
                }
            }
            e
        })?;
        Ok(set)
    }

    pub fn validate(&self, file: &Path) -> Result<(), DataErrors> {
        let mut p = Problems::new(file);
        p.check(
            self.window.ahead_minutes >= 1,
            || "window.ahead_minutes".into(),
            || "expected at least 1 minute: a tick must be able to move the clock".into(),
        );
        p.check(self.window.behind_hours >= 1, || "window.behind_hours".into(), || "expected at least 1 hour".into());
        let mut ids = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            p.check(!r.id.is_empty() && ids.insert(r.id.as_str()), || at("id"), || format!("rule ids must be unique and non-empty, `{}`", r.id));
            p.check(!r.targets.is_empty(), || at("targets"), || "expected at least one target role".into());
            match &r.kind {
                RuleKind::Absence { hours, home_quiet_hours } => {
                    p.check(*hours >= 1, || at("kind.hours"), || "expected at least 1 hour".into());
                    if let Some(q) = home_quiet_hours {
                        p.check((1..=8760).contains(q), || at("kind.home_quiet_hours"), || format!("expected 1..=8760 hours, got {q}"));
                    }
                }
                RuleKind::DistinctFaces { window_days, more_than } => {
                    p.check(*window_days >= 1, || at("kind.window_days"), || "expected at least 1 day".into());
                    p.check(*more_than >= 1, || at("kind.more_than"), || "expected at least 1 face".into());
                }
                RuleKind::DailySample { households, .. } => {
                    p.check(*households >= 1, || at("kind.households"), || "expected at least 1 household".into());
                }
                RuleKind::Direct { event, min_confidence, codes, .. } => {
                    p.check(
                        *event != EventType::ClockTick && *event != EventType::DeviceHeartbeat,
                        || at("kind.event"),
                        || format!("{event:?} is not an alarm"),
                    );
                    p.check((0.0..=1.0).contains(min_confidence), || at("kind.min_confidence"), || "expected 0..=1".into());
                    p.check(codes.iter().all(|c| (1..=15).contains(c)), || at("kind.codes"), || "violation codes are 1..=15".into());
                }
                RuleKind::Duration { start, end, minutes } => {
                    p.check(start != end, || at("kind.end"), || "start and end must differ".into());
                    p.check(*minutes >= 1, || at("kind.minutes"), || "expected at least 1 minute".into());
                }
                RuleKind::Silence { factor, mains_minutes, battery_minutes } => {
                    // Bounded, so a deadline (factor x interval) always fits in event time (found by fuzzing:
                    // `inf` and `1e20` passed and overflowed the deadline).
                    p.check((1.0..=1000.0).contains(factor), || at("kind.factor"), || format!("expected a factor from 1 to 1000, got {factor}"));
                    p.check(
                        (1..=43_200).contains(mains_minutes) && (1..=43_200).contains(battery_minutes),
                        || at("kind"),
                        || "heartbeat intervals must be 1 to 43,200 minutes (30 days)".into(),
                    );
                }
                RuleKind::Hotline => {
                    let n = self.rules.iter().filter(|r| matches!(r.kind, RuleKind::Hotline)).count();
                    p.check(n == 1, || at("kind"), || format!("at most one Hotline rule (calls would open an order for each), found {n}"));
                }
                RuleKind::Qr => {
                    let n = self.rules.iter().filter(|r| matches!(r.kind, RuleKind::Qr)).count();
                    p.check(n == 1, || at("kind"), || format!("at most one Qr rule (reports would open an order for each), found {n}"));
                }
                RuleKind::WrongSorts { times, within_days } => {
                    p.check((1..=1000).contains(times), || at("kind.times"), || format!("expected 1..=1000 flagged drops, got {times}"));
                    p.check((1..=365).contains(within_days), || at("kind.within_days"), || format!("expected 1..=365 days, got {within_days}"));
                }
            }
        }
        p.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_sample_time_is_read_once_and_a_bad_one_is_a_located_error() {
        let text =
            "(version: 1, rules: [(id: \"s\", title: \"t\", service: \"housing\", targets: [Property],\n kind: DailySample(households: 20, at: \"09:00\"))])";
        let set: RuleSet = crate::load::parse_ron(Path::new("rules.ron"), text).unwrap();
        assert!(matches!(set.rules[0].kind, RuleKind::DailySample { at, .. } if at.minutes() == 9 * 60));
        let e = crate::load::parse_ron::<RuleSet>(Path::new("rules.ron"), &text.replace("09:00", "25:00")).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.field.as_deref().is_some_and(|f| f.starts_with("rules[0].kind") && f.ends_with(".at")), "{e}");
        assert!(e.message.contains("`25:00` is not a time HH:MM"), "{e}");
    }
}
