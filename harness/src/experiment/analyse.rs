//! From replications to conclusions: per variant and KPI the mean and its 95% interval (Student t over
//! replications), the paired difference from the first variant over the replications both ran (common
//! random numbers), and the validity checks (conservation, Little's law, stationarity of the backlog,
//! MSER-5 on the backlog as a check of the chosen warm-up).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::PlanRecord;
use super::replicate::Replication;
use crate::stats::{Interval, mser5, paired_difference};

/// The KPIs a precision target applies to, and the report leads with.
pub const HEADLINE: [&str; 7] =
    ["close_hours_rmst72", "closed_within_sla", "backlog_mean", "cost_yuan_per_day", "harm_hours_per_day", "hotline_calls_per_week", "solved_before_any_call"];

/// Little's law may miss by the orders queued across the window's edges; more than this is a defect.
pub const LITTLE_TOLERANCE: f64 = 0.05;

pub const LEVEL: f64 = 0.95;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub experiment: String,
    pub fingerprint: String,
    pub days: u32,
    pub warmup_days: u32,
    pub level: f64,
    pub replications: BTreeMap<String, usize>,
    /// The reference variant the differences are taken from.
    pub reference: String,
    pub kpis: Vec<KpiRow>,
    pub checks: Vec<Check>,
    /// Per variant, MSER-5's truncation point on the mean hourly backlog, in hours (the warm-up used is
    /// `warmup_days` x 24).
    pub mser5_warmup_hours: BTreeMap<String, usize>,
    /// Town days simulated, and the seconds one replication took per town day on one core (mean).
    pub replication_days: f64,
    pub seconds_per_town_day: f64,
    /// The source's claims against the twin, when the experiment names its before and after variants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<super::calibrate::Row>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KpiRow {
    pub name: String,
    pub what: String,
    pub by_variant: BTreeMap<String, Interval>,
    /// Variant minus the reference, over the replications both have.
    pub difference: BTreeMap<String, Difference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub interval: Interval,
    /// `higher`, `lower` or `no difference detected` (the interval holds 0).
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub variant: String,
    pub pass: bool,
    pub detail: String,
}

/// What a KPI measures, for the report (units included).
pub fn describe(name: &str) -> String {
    let (base, of) = name.split_once('/').map_or((name, None), |(b, o)| (b, Some(o)));
    let text = match base {
        "orders_per_day" => "work orders created per day",
        "close_hours_rmst72" => "mean hours to close, Kaplan-Meier restricted to 72 h (open orders censored at the end)",
        "close_hours_km_median" => "median hours to close, Kaplan-Meier (open orders censored)",
        "close_hours_km_p90" => "90th percentile of hours to close, Kaplan-Meier",
        "close_hours_closed_only_mean" => "mean hours to close over closed orders only (biased low: open ones left out)",
        "closed_within_sla" => "share closed within the SLA hours, Kaplan-Meier",
        "accept_hours_rmst24" => "mean hours to acceptance, Kaplan-Meier restricted to 24 h",
        "accept_hours_km_median" => "median hours to acceptance, Kaplan-Meier",
        "escalations_per_day" => "orders moved up into the loop per day (deadlines, failures, reopenings, whistles)",
        "open_at_end" => "orders open at the end of the run",
        "backlog_mean" => "mean open orders (hourly samples over the window)",
        "backlog_slope_per_day" => "trend of open orders at midnight (orders per day; 0 in steady state)",
        "cost_yuan_per_day" => "staff cost per day (yuan, on-duty hours at each crew's rate)",
        "capital_yuan_per_day" => "the platform's capital per day (yuan: devices, estates' systems and the town's, over their lifetime, with upkeep)",
        "remediation_yuan_per_day" => "what the problems left going on cost later, per day (yuan, harm hours at each kind's rate)",
        "total_cost_yuan_per_day" => "staff, capital and remediation per day (yuan)",
        "going_on_at_end" => "real problems still going on at the end of the run",
        "scenario_calls_per_week" => "12345 calls per week about the scenario's problems",
        "scenario_incidents_per_day" => "real problems of the scenario begun per day (a habit a response or points changed shows here)",
        "incidents_per_day" => "real problems of the kind begun per day",
        "scenario_harm_hours_per_day" => "hours the scenario's real problems went on, per day",
        "scenario_remediation_yuan_per_day" => "remediation of the scenario's problems per day (yuan)",
        "scenario_solved_before_any_call" => "share of the scenario's problems a response ended before any resident reported them (12345 or QR code)",
        "capital_once_yuan_per_estate" => {
            "the platform's capital per covered estate, once (yuan: its devices and system, and an even share of the town's platform; not the road cameras)"
        }
        "remediation_yuan_per_estate_lifetime" => "remediation per estate over the platform's lifetime (yuan)",
        "reports_per_week" => "reports per week on the estates' line",
        "staff_hours_per_day" => "paid staff hours per day",
        "utilisation" => "share of on-duty staff time spent on orders",
        "wait_minutes_mean" => "mean minutes from dispatch to acceptance",
        "queue_wait_minutes_mean" => "mean minutes in the crew's waiting line (from the tick it joined to acceptance)",
        "harm_hours_per_day" => "hours real incidents were going on, per day",
        "recall" => "share of real incidents that got an order",
        "false_alarms_per_day" => "orders matching no real incident, per day",
        "detection_delay_p50_min" => "median minutes from incident start to its first order",
        "hotline_calls_per_week" => "residents' calls to the 12345 hotline per week",
        "solved_before_any_call" => {
            "share of incidents a response ended before any resident reported them, by 12345 or the QR code (未呼先应; not residents' own repair requests and questions)"
        }
        "resident_reports_per_week" => "residents' reports per week by 12345 or the estate's QR code",
        "called_about_share" => "share of incidents (of kinds residents call about) someone called 12345 about",
        "call_to_end_hours_rmst72" => "hours from the first 12345 call to the problem's end, Kaplan-Meier restricted to 72 h (接诉即办)",
        "ended_by_response" => "share of incidents that a response ended (not by themselves, not still going on)",
        _ => "",
    };
    match of {
        Some(o) => format!("{text} ({o})"),
        None => text.to_string(),
    }
}

pub fn analyse(record: &PlanRecord, reps: &[Replication]) -> Summary {
    let reference = record.variants.first().cloned().unwrap_or_default();
    let mut by_variant: BTreeMap<&str, BTreeMap<u32, &Replication>> = BTreeMap::new();
    for r in reps {
        by_variant.entry(r.variant.as_str()).or_default().insert(r.k, r);
    }
    let names: BTreeSet<&String> = reps.iter().flat_map(|r| r.kpis.keys()).collect();
    // Headline KPIs first, then the rest by name.
    let mut ordered: Vec<&String> = HEADLINE.iter().filter_map(|h| names.iter().find(|n| n.as_str() == *h).copied()).collect();
    ordered.extend(names.iter().filter(|n| !HEADLINE.contains(&n.as_str())));
    let mut kpis = Vec::new();
    for name in ordered {
        let values = |v: &str| -> BTreeMap<u32, f64> {
            by_variant.get(v).map(|m| m.iter().filter_map(|(k, r)| Some((*k, *r.kpis.get(name)?))).collect()).unwrap_or_default()
        };
        let reference_values = values(&reference);
        let mut row = KpiRow { name: name.clone(), what: describe(name), by_variant: BTreeMap::new(), difference: BTreeMap::new() };
        for v in &record.variants {
            let xs = values(v);
            if xs.is_empty() {
                continue;
            }
            row.by_variant.insert(v.clone(), Interval::of(&xs.values().copied().collect::<Vec<_>>(), LEVEL));
            if *v == reference {
                continue;
            }
            let common: Vec<u32> = xs.keys().filter(|k| reference_values.contains_key(k)).copied().collect();
            let a: Vec<f64> = common.iter().map(|k| reference_values[k]).collect();
            let b: Vec<f64> = common.iter().map(|k| xs[k]).collect();
            if let Some(d) = paired_difference(&a, &b, LEVEL).filter(|d| d.n >= 2) {
                let verdict = if d.half_width.is_nan() || d.holds_zero() {
                    "no difference detected"
                } else if d.mean > 0.0 {
                    "higher"
                } else {
                    "lower"
                };
                row.difference.insert(v.clone(), Difference { interval: d, verdict: verdict.into() });
            }
        }
        kpis.push(row);
    }
    let mut checks = Vec::new();
    let mut mser = BTreeMap::new();
    for v in &record.variants {
        let Some(rs) = by_variant.get(v.as_str()) else { continue };
        let broken: Vec<String> = rs
            .values()
            .filter(|r| !r.checks.conservation_holds)
            .map(|r| {
                format!(
                    "replication {}: created {} != closed {} + cancelled {} + open {:?}",
                    r.k, r.checks.created, r.checks.closed, r.checks.cancelled, r.checks.open_by_state
                )
            })
            .collect();
        checks.push(Check {
            name: "conservation".into(),
            variant: v.clone(),
            pass: broken.is_empty(),
            detail: if broken.is_empty() {
                format!("created = closed + cancelled + open by state in all {} replications", rs.len())
            } else {
                broken.join("; ")
            },
        });
        let crews: BTreeSet<&String> = rs.values().flat_map(|r| r.checks.little.keys()).collect();
        for crew in crews {
            let errs: Vec<f64> = rs.values().filter_map(|r| r.checks.little.get(crew)).map(|l| l.relative_error).collect();
            let worst = errs.iter().copied().fold(0.0, f64::max);
            let mean = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
            checks.push(Check {
                name: format!("little/{crew}"),
                variant: v.clone(),
                pass: worst <= LITTLE_TOLERANCE,
                detail: format!("|L - lambda W| / L: mean {:.4}, worst {:.4} over {} replications (tolerance {LITTLE_TOLERANCE})", mean, worst, errs.len()),
            });
        }
        let slopes: Vec<f64> = rs.values().filter_map(|r| r.kpis.get("backlog_slope_per_day").copied()).collect();
        if slopes.len() >= 2 {
            let i = Interval::of(&slopes, LEVEL);
            checks.push(Check {
                name: "stationarity".into(),
                variant: v.clone(),
                pass: i.holds_zero(),
                detail: format!(
                    "slope of open orders at midnight {:.1} per day, 95% interval [{:.1}, {:.1}]{}",
                    i.mean,
                    i.low(),
                    i.high(),
                    if i.holds_zero() { ", holds 0" } else { ": the backlog has a trend, the window is not in steady state" }
                ),
            });
        }
        // MSER-5 on the mean backlog across replications, warm-up included.
        let len = rs.values().map(|r| r.backlog_hourly.len()).min().unwrap_or(0);
        let mean: Vec<f64> = (0..len).map(|h| rs.values().map(|r| r.backlog_hourly[h] as f64).sum::<f64>() / rs.len() as f64).collect();
        mser.insert(v.clone(), mser5(&mean));
    }
    let replication_days: f64 = reps.len() as f64 * record.experiment.days as f64;
    let seconds_per_town_day = reps.iter().map(|r| r.wall_seconds).sum::<f64>() / replication_days.max(1.0);
    let mut summary = Summary {
        experiment: record.experiment.name.clone(),
        fingerprint: record.fingerprint.clone(),
        days: record.experiment.days,
        warmup_days: record.experiment.warmup_days,
        level: LEVEL,
        replications: record.variants.iter().map(|v| (v.clone(), by_variant.get(v.as_str()).map_or(0, |m| m.len()))).collect(),
        reference,
        kpis,
        checks,
        mser5_warmup_hours: mser,
        replication_days,
        seconds_per_town_day,
        calibration: Vec::new(),
    };
    if let Some(c) = &record.experiment.calibration {
        summary.calibration = super::calibrate::calibrate(c, &summary);
    }
    summary
}

impl Summary {
    /// With a precision target `p`: None if every headline KPI of every variant is within it (or `current`
    /// has reached `max`), else how many replications to run in all (an estimate from the half-widths,
    /// which shrink as 1/sqrt(n)).
    pub fn replications_for(&self, p: f64, current: u32, max: u32) -> Option<u32> {
        if current >= max {
            return None;
        }
        let mut need = current;
        for row in self.kpis.iter().filter(|r| HEADLINE.contains(&r.name.as_str())) {
            for i in row.by_variant.values() {
                if i.mean == 0.0 || i.half_width.is_nan() {
                    continue;
                }
                let rp = i.relative_precision();
                if rp > p {
                    need = need.max((current as f64 * (rp / p).powi(2)).ceil() as u32).max(current + 1);
                }
            }
        }
        (need > current).then_some(need.min(max))
    }

    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.pass).collect()
    }

    pub fn kpi(&self, name: &str) -> Option<&KpiRow> {
        self.kpis.iter().find(|r| r.name == name)
    }
}
