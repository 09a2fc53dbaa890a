//! A drill's master scenario events list (MSEL) as CSV in HSEEP's columns, out and back in:
//! `towntwin drill FILE --check --csv` prints it; `towntwin drill FILE --import-msel MSEL.csv` reads one
//! (as exported, or edited in a spreadsheet), puts its injects in place of the script's, checks the result
//! as any script, and prints it as a script.
//!
//! One row per expectation (an inject with none has one row, its expectation columns empty); the rows of
//! an inject are together and agree on its time, description and what it does. The columns, in HSEEP's
//! words where it has one: `Inject No.`, `Designated Scenario Time` (`minute 5`, `3 min after I2 starts`,
//! `15 min after I1 is handled`, `manual`), `Event Description` (the title), `Inject Mode` (`twin`: the
//! twin makes it real), `Inject` (what it does, as a script writes it), `To` (the trainee expected to act),
//! `Expected Action`, `Within (min)`, `Points`, `Objective`. A file with a column missing or one it does not
//! know is refused, naming them.

use std::path::Path;

use towntwin_core::load::{DataError, DataErrors};

use towntwin_core::orders::Loop;

use super::script::{Expect, Expected, Inject, Script, Start, What};

pub const COLUMNS: [&str; 10] =
    ["Inject No.", "Designated Scenario Time", "Event Description", "Inject Mode", "Inject", "To", "Expected Action", "Within (min)", "Points", "Objective"];

fn time(start: &Start) -> String {
    match start {
        Start::At { minute } => format!("minute {minute}"),
        Start::AfterStarted { inject, minutes } => format!("{minutes} min after {inject} starts"),
        Start::AfterHandled { inject, minutes } => format!("{minutes} min after {inject} is handled"),
        Start::Manual => "manual".into(),
    }
}

fn parse_time(s: &str) -> Option<Start> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("manual") {
        return Some(Start::Manual);
    }
    if let Some(m) = s.strip_prefix("minute ") {
        return m.trim().parse().ok().filter(|m: &f64| m.is_finite()).map(|minute| Start::At { minute });
    }
    let (minutes, rest) = s.split_once(" min after ")?;
    let minutes: f64 = minutes.trim().parse().ok().filter(|m: &f64| m.is_finite())?;
    if let Some(inject) = rest.strip_suffix(" starts") {
        return Some(Start::AfterStarted { inject: inject.trim().to_string(), minutes });
    }
    rest.strip_suffix(" is handled").map(|inject| Start::AfterHandled { inject: inject.trim().to_string(), minutes })
}

/// An expected action, with the loop it is to be done in where the script names one: `Report (large loop)`.
fn action(s: &str) -> Option<(Expected, Option<Loop>)> {
    let s = s.trim();
    match s.strip_suffix(" loop)").and_then(|s| s.split_once(" (")) {
        Some((a, l)) => Some((ron::from_str(a.trim()).ok()?, Some([Loop::Small, Loop::Medium, Loop::Large].into_iter().find(|x| x.as_str() == l.trim())?))),
        None => Some((ron::from_str(s).ok()?, None)),
    }
}

/// An expected action as the events list writes it: `Report`, `Report (large loop)`.
pub fn action_text(x: &Expect) -> String {
    match x.in_loop {
        Some(l) => format!("{:?} ({} loop)", x.action, l.as_str()),
        None => format!("{:?}", x.action),
    }
}

/// The script's injects as CSV.
pub fn export(script: &Script) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for inj in &script.injects {
        let what = ron::to_string(&inj.what)?;
        let head = [inj.id.clone(), time(&inj.start), inj.title.clone(), "twin".into(), what];
        if inj.expect.is_empty() {
            w.write_record(head.iter().cloned().chain(std::iter::repeat_n(String::new(), 5)))?;
        }
        for x in &inj.expect {
            let tail = [x.by.clone(), action_text(x), x.within_minutes.to_string(), x.points.to_string(), x.objective.clone()];
            w.write_record(head.iter().cloned().chain(tail))?;
        }
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The injects of an MSEL CSV at `file`; every problem is reported at once, by row and column.
pub fn import(file: &Path) -> Result<Vec<Inject>, DataErrors> {
    let one = |field: String, message: String| DataErrors(vec![DataError::at(file, field, message)]);
    let text = std::fs::read(file).map_err(|e| one(String::new(), format!("cannot read it: {e}")))?;
    let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_slice());
    let header: Vec<String> = r.headers().map_err(|e| one("header".into(), e.to_string()))?.iter().map(|h| h.trim().to_string()).collect();
    let missing: Vec<&str> = COLUMNS.iter().filter(|c| !header.iter().any(|h| h == *c)).copied().collect();
    let unknown: Vec<&str> = header.iter().filter(|h| !COLUMNS.contains(&h.as_str())).map(String::as_str).collect();
    if !missing.is_empty() || !unknown.is_empty() {
        let mut errors = Vec::new();
        if !missing.is_empty() {
            errors.push(DataError::at(file, "header", format!("missing column(s) {}; expected the columns {}", missing.join(", "), COLUMNS.join(", "))));
        }
        if !unknown.is_empty() {
            errors.push(DataError::at(file, "header", format!("unknown column(s) {}; expected the columns {}", unknown.join(", "), COLUMNS.join(", "))));
        }
        return Err(DataErrors(errors));
    }
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or(0);
    let at: Vec<usize> = COLUMNS.iter().map(|c| col(c)).collect();
    let mut errors = Vec::new();
    let mut injects: Vec<Inject> = Vec::new();
    for (n, rec) in r.records().enumerate() {
        let row = n + 2;
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                errors.push(DataError::at(file, format!("row {row}"), e.to_string()));
                continue;
            }
        };
        let get = |i: usize| rec.get(at[i]).unwrap_or("").trim().to_string();
        let mut bad = |c: usize, m: String| errors.push(DataError::at(file, format!("row {row}, column `{}`", COLUMNS[c]), m));
        let id = get(0);
        if id.is_empty() {
            bad(0, "expected the inject's id (I1 ...)".into());
            continue;
        }
        let Some(start) = parse_time(&get(1)) else {
            bad(1, format!("{:?}: expected `minute 5`, `3 min after I2 starts`, `15 min after I1 is handled` or `manual`", get(1)));
            continue;
        };
        if !matches!(get(3).as_str(), "" | "twin") {
            bad(3, format!("{:?}: expected `twin` (the twin makes the inject real)", get(3)));
        }
        let what: What = match ron::from_str(&get(4)) {
            Ok(w) => w,
            Err(e) => {
                bad(4, format!("{e}; expected what the inject does as a script writes it, e.g. Fire(estate: \"E001\", flat: \"B16-101\")"));
                continue;
            }
        };
        let expect = if [5, 6, 7, 8, 9].iter().all(|&i| get(i).is_empty()) {
            None
        } else {
            let action = action(&get(6));
            let within: Option<f64> = get(7).parse().ok();
            let points: Option<u32> = get(8).parse().ok();
            if get(5).is_empty() {
                bad(5, "expected the trainee expected to act".into());
            }
            if action.is_none() {
                bad(
                    6,
                    format!(
                        "{:?}: expected Notice, Accept, Start, Resolve, Fail, Whistle, Report or Escalate, and then maybe the loop, as in `Report (large loop)`",
                        get(6)
                    ),
                );
            }
            if within.is_none() {
                bad(7, format!("{:?}: expected minutes", get(7)));
            }
            if points.is_none() {
                bad(8, format!("{:?}: expected whole points", get(8)));
            }
            if get(9).is_empty() {
                bad(9, "expected the objective it serves".into());
            }
            match (action, within, points) {
                (Some((action, in_loop)), Some(within_minutes), Some(points)) if !get(5).is_empty() && !get(9).is_empty() => {
                    Some(Expect { by: get(5), action, within_minutes, points, objective: get(9), in_loop })
                }
                _ => continue,
            }
        };
        match injects.iter().position(|i| i.id == id) {
            Some(k) => {
                let inj = &injects[k];
                if inj.start != start || inj.title != get(2) || inj.what != what {
                    bad(0, format!("{id} is on an earlier row with another time, description or inject: an inject's rows must agree"));
                } else if k + 1 != injects.len() {
                    bad(0, format!("{id}'s rows are not together"));
                } else if let Some(x) = expect {
                    injects[k].expect.push(x);
                }
            }
            None => injects.push(Inject { id, title: get(2), start, what, expect: expect.into_iter().collect() }),
        }
    }
    if injects.is_empty() && errors.is_empty() {
        errors.push(DataError::at(file, "rows", "expected at least one inject's row".to_string()));
    }
    if errors.is_empty() { Ok(injects) } else { Err(DataErrors(errors)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_times_read_back_as_written() {
        for s in [
            Start::At { minute: 5.0 },
            Start::At { minute: 2.5 },
            Start::AfterStarted { inject: "I2".into(), minutes: 3.0 },
            Start::AfterHandled { inject: "I1".into(), minutes: 15.0 },
            Start::Manual,
        ] {
            assert_eq!(parse_time(&time(&s)), Some(s));
        }
        assert_eq!(parse_time("soon"), None);
        assert_eq!(parse_time("minute NaN"), None);
        assert_eq!(action("Whistle"), Some((Expected::Whistle, None)));
        assert_eq!(action(" Report (large loop) "), Some((Expected::Report, Some(Loop::Large))));
        assert_eq!(action("Report (top loop)"), None);
    }
}
