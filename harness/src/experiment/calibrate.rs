//! Calibration against the source: each claim the source makes about the town with the platform, held
//! against the twin's figures before and after it, with intervals, and whether the twin agrees in
//! direction and in size. An experiment asks for it by naming its `before` and `after` variants.
//!
//! The claims are the source's (`../shared/seed/`, see the planners' docs); the test of "size" for each is
//! ours and is stated with the row. A row the twin cannot decide (an interval that holds both answers)
//! says so rather than picking one.

use serde::{Deserialize, Serialize};

use super::analyse::{KpiRow, Summary};
use crate::stats::Interval;

/// Which variants are the town before the platform and with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub before: String,
    pub after: String,
}

/// One claim of the source against the twin.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub claim: String,
    /// The source's words, in Chinese, and its figure.
    pub source: String,
    pub kpi: String,
    pub before: Option<Interval>,
    pub after: Option<Interval>,
    /// After minus before, paired per replication (when the before variant is the reference).
    pub difference: Option<Interval>,
    /// `agrees`, `contradicts` or `cannot tell`.
    pub direction: String,
    pub size: String,
    /// How size is judged, and what the figure rests on.
    pub note: String,
}

const AGREES: &str = "agrees";
const CONTRADICTS: &str = "contradicts";
const CANNOT_TELL: &str = "cannot tell";

fn verdict(yes: bool, no: bool) -> String {
    if yes {
        AGREES
    } else if no {
        CONTRADICTS
    } else {
        CANNOT_TELL
    }
    .to_string()
}

/// The rows for `summary` (empty when a variant named is missing from it).
pub fn calibrate(c: &Calibration, s: &Summary) -> Vec<Row> {
    let row = |name: &str| s.kpis.iter().find(|r| r.name == name);
    let get = |r: Option<&KpiRow>, v: &str| r.and_then(|r| r.by_variant.get(v)).copied();
    let diff = |r: Option<&KpiRow>| if s.reference == c.before { r.and_then(|r| r.difference.get(&c.after)).map(|d| d.interval) } else { None };
    let mut rows = Vec::new();
    // Direction: the paired difference after - before is below 0 (agrees), above 0 (contradicts).
    let direction = |d: &Option<Interval>| match d {
        Some(d) if !d.half_width.is_nan() => verdict(d.high() < 0.0, d.low() > 0.0),
        _ => CANNOT_TELL.to_string(),
    };
    // "Fell to 0": after, the interval's top is under one a week (agrees) or its bottom is over (contradicts).
    let zero = |claim: &str, source: &str, kpi: &str, unit: &str, note: &str| {
        let r = row(kpi);
        let (before, after, difference) = (get(r, &c.before), get(r, &c.after), diff(r));
        let size = match &after {
            Some(a) if !a.half_width.is_nan() => verdict(a.high() < 1.0, a.low() >= 1.0),
            Some(a) => verdict(a.mean < 1.0, a.mean >= 1.0),
            None => CANNOT_TELL.to_string(),
        };
        Row {
            claim: claim.into(),
            source: source.into(),
            kpi: kpi.into(),
            direction: direction(&difference),
            before,
            after,
            difference,
            size,
            note: format!("size: \"0\" read as fewer than one {unit} in the whole town after (the interval's top under 1). {note}"),
        }
    };
    rows.push(zero(
        "Complaints about garbage sorting fell to 0",
        "近期高行镇垃圾分类……投诉皆为0",
        "scenario_calls_per_week/garbage",
        "call a week",
        "Calls about household waste: overflowing kiosks and bags dumped beside them outside the fixed times. A wrong sort itself is no problem anyone calls about in the twin.",
    ));
    rows.push(zero(
        "Complaints about flying-wire charging fell to 0",
        "近期高行镇……飞线充电等投诉皆为0",
        "hotline_calls_per_week/ebike.flying_wire",
        "call a week",
        "Calls about a cable hung from a window to charge an e-bike.",
    ));
    rows.push(zero(
        "Zero group rentals",
        "“零群租”",
        "going_on_at_end/group_rental",
        "group rental going on",
        "Group rentals going on at the end of the run (the source's target, not a measured result).",
    ));
    {
        let kpi = "hotline_calls_per_week";
        let r = row(kpi);
        let (before, after, difference) = (get(r, &c.before), get(r, &c.after), diff(r));
        // "Greatly reduced": at least halved.
        let size = match (&before, &difference) {
            (Some(b), Some(d)) if !d.half_width.is_nan() && b.mean > 0.0 => verdict(d.high() <= -0.5 * b.mean, d.low() > -0.5 * b.mean),
            _ => CANNOT_TELL.to_string(),
        };
        rows.push(Row {
            claim: "Residents' complaints greatly reduced".into(),
            source: "居民投诉量大幅度降低".into(),
            kpi: kpi.into(),
            direction: direction(&difference),
            before,
            after,
            difference,
            size,
            note: "size: \"greatly\" read as at least halved (the whole interval of the fall at or past half the before figure). Every 12345 call about an estate's problem; a report by QR code is not a complaint.".into(),
        });
    }
    {
        // The cost: 443,000 yuan once at one estate, against nearly 2,000,000 of remediation later at
        // comparable estates without the platform.
        let capital = get(row("capital_once_yuan_per_estate"), &c.after);
        let r = row("remediation_yuan_per_estate_lifetime");
        let (before, after, difference) = (get(r, &c.before), get(r, &c.after), diff(r));
        // The remediation spared (-difference) against the capital, by the difference's interval: all of it
        // above the capital, all of it below, or neither.
        let size = match (&before, &difference, &capital) {
            (Some(b), Some(d), Some(cap)) if !d.half_width.is_nan() => {
                let (spared_low, spared_high) = (-d.high(), -d.low());
                verdict(
                    (1_000_000.0..=4_000_000.0).contains(&b.mean) && spared_low > cap.mean,
                    !(500_000.0..=8_000_000.0).contains(&b.mean) || spared_high < cap.mean,
                )
            }
            _ => CANNOT_TELL.to_string(),
        };
        rows.push(Row {
            claim: "The platform costs less than the remediation it spares".into(),
            source: "一次性投入44.3万元……同类型的其他动迁小区……后续综合整新整治成本需要近200万元".into(),
            kpi: "remediation_yuan_per_estate_lifetime".into(),
            direction: direction(&difference),
            before,
            after,
            difference,
            size,
            note: format!(
                "size: agrees when the before figure is within a factor of 2 of 2,000,000 yuan per estate and the remediation spared (the whole interval) is above the capital; contradicts when the before figure is off by more than 4, or the whole interval of the remediation spared is below the capital. The platform's capital per estate is {} yuan once (its devices and system and an even share of the town's platform, not the road cameras, at the scenario's unit prices, chosen near the source's 443,000). Remediation is harm hours at each kind's assumed rate over the platform's lifetime: the twin measures the hours; the rates are assumptions, so this row tests the assumptions as much as the twin.",
                capital.map_or("-".to_string(), |c| format!("{:.0}", c.mean))
            ),
        });
    }
    rows
}
