//! What the docs say about committed results stays true: the shipped loops experiment's report is in the
//! repository, its summary has the variants and KPIs the book quotes, and the figures quoted for the
//! standard policy are the summary's.

use std::path::PathBuf;

use crate::common::root;

fn loops() -> PathBuf {
    root().join("results/experiments/loops")
}

#[test]
fn the_loops_report_is_committed_with_the_kpis_the_book_quotes() {
    let dir = loops();
    for f in ["report.html", "summary.json", "replications.csv", "plan.json"] {
        assert!(dir.join(f).is_file(), "{} is committed (docs/src/planners/loops.md links it)", dir.join(f).display());
    }
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let reps = summary["replications"].as_object().expect("replications by variant");
    for v in ["standard", "whistle-early", "direct-large", "night-squad", "staff-cut-30"] {
        let n = reps.get(v).and_then(|n| n.as_u64()).unwrap_or_else(|| panic!("variant {v} in the summary"));
        assert!((3..=6).contains(&n), "{v}: {n} replications, the plan's precision rule runs 3 to 6");
    }
    let kpis = summary["kpis"].as_array().expect("kpis");
    let mean = |name: &str| -> f64 {
        let k = kpis.iter().find(|k| k["name"] == name).unwrap_or_else(|| panic!("KPI {name} in the summary"));
        k["by_variant"]["standard"]["mean"].as_f64().unwrap_or_else(|| panic!("{name}: a mean for standard"))
    };
    for k in [
        "close_hours_rmst72",
        "closed_within_sla",
        "backlog_mean",
        "backlog_slope_per_day",
        "cost_yuan_per_day",
        "harm_hours_per_day",
        "hotline_calls_per_week",
        "solved_before_any_call",
    ] {
        assert!(mean(k).is_finite(), "{k}");
    }
    // The book's table quotes the standard policy's hours to close; it must be this summary's.
    let page = std::fs::read_to_string(root().join("docs/src/planners/loops.md")).unwrap();
    let row = page.lines().find(|l| l.starts_with("| hours to close (KM, RMST 72 h) |")).expect("the KPI table's first row");
    let quoted = row.split('|').nth(2).unwrap().split('±').next().unwrap().trim();
    assert_eq!(quoted, format!("{:.2}", mean("close_hours_rmst72")), "docs/src/planners/loops.md quotes another run");
}

#[test]
fn the_platform_report_is_committed_with_the_calibration_the_book_quotes() {
    let dir = root().join("results/experiments/platform");
    for f in ["report.html", "summary.json", "replications.csv", "plan.json"] {
        assert!(dir.join(f).is_file(), "{} is committed (docs/src/planners/platform.md links it)", dir.join(f).display());
    }
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let kpis = summary["kpis"].as_array().expect("kpis");
    let mean = |name: &str, v: &str| -> f64 {
        let k = kpis.iter().find(|k| k["name"] == name).unwrap_or_else(|| panic!("KPI {name} in the summary"));
        k["by_variant"][v]["mean"].as_f64().unwrap_or_else(|| panic!("{name}: a mean for {v}"))
    };
    let page = std::fs::read_to_string(root().join("docs/src/planners/platform.md")).unwrap();
    let row = page.lines().find(|l| l.starts_with("| calls to 12345 a week |")).expect("the KPI table's first row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    for (cell, v) in [(cells[2], "before"), (cells[3], "pilots"), (cells[4], "after")] {
        assert_eq!(cell.split('±').next().unwrap().trim(), format!("{:.1}", mean("hotline_calls_per_week", v)), "{v}: the book quotes another run");
    }
    // The calibration table has its five claims, with the verdicts the book repeats.
    let rows = summary["calibration"].as_array().expect("a calibration table");
    assert_eq!(rows.len(), 5);
    let verdicts: Vec<(String, String)> = rows.iter().map(|r| (r["direction"].as_str().unwrap().into(), r["size"].as_str().unwrap().into())).collect();
    let book: Vec<(String, String)> = page
        .lines()
        .skip_while(|l| !l.starts_with("## Calibration"))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| the source") && !l.starts_with("|---"))
        .map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            (c[3].to_string(), c[4].to_string())
        })
        .collect();
    assert_eq!(book, verdicts, "the book's calibration verdicts are the report's");
}
