//! An experiment's report in its folder: `summary.json` (the analysis), `replications.csv` (one row per
//! replication and every KPI), plots as PNG and SVG drawn with plotters (the font is bundled, so no system
//! font library is needed), and `report.html`, one self-contained file with the plots inline that a
//! planner can forward as it is.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use plotters::coord::Shift;
use plotters::prelude::*;
use towntwin_core::web::html::esc;

use super::PlanRecord;
use super::analyse::{HEADLINE, Summary};
use super::replicate::Replication;
use super::write_atomic;
use crate::plots::{Drawn, color, e, legend, plot, register_font};
use crate::stats::Interval;

/// Writes every part of the report into `out`.
pub fn write(out: &Path, record: &PlanRecord, reps: &[Replication], summary: &Summary) -> Result<()> {
    write_atomic(&out.join("summary.json"), &serde_json::to_vec_pretty(summary)?)?;
    write_atomic(&out.join("replications.csv"), csv(reps).as_bytes())?;
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("cannot create {}", plots.display()))?;
    register_font();
    let drawn = draw_all(&plots, record, reps, summary)?;
    let html = html(record, summary, &drawn)?;
    write_atomic(&out.join("report.html"), html.as_bytes())
}

/// One row per replication: variant, k, seed, then every KPI any replication has (empty where absent).
fn csv(reps: &[Replication]) -> String {
    let names: BTreeSet<&String> = reps.iter().flat_map(|r| r.kpis.keys()).collect();
    let mut s = String::from("variant,replication,seed,events,wall_seconds");
    for n in &names {
        s.push(',');
        s.push_str(n);
    }
    s.push('\n');
    for r in reps {
        let _ = write!(s, "{},{},{},{},{:.3}", r.variant, r.k, r.seed, r.events, r.wall_seconds);
        for n in &names {
            s.push(',');
            if let Some(v) = r.kpis.get(*n) {
                let _ = write!(s, "{v}");
            }
        }
        s.push('\n');
    }
    s
}

/// A variant's line with a band: (day, mean, lowest, highest) points.
type Band = (String, Vec<(f64, f64, f64, f64)>);
/// A panel of CDF lines: the loop, and each variant's (hours, share) points.
type CdfPanel = (String, Vec<(String, Vec<(f64, f64)>)>);

fn draw_all(dir: &Path, record: &PlanRecord, reps: &[Replication], summary: &Summary) -> Result<Vec<Drawn>> {
    let variants = &record.variants;
    let mut drawn = Vec::new();
    // The open backlog over time: the mean across replications with a band from the lowest to the highest.
    let mut bands: Vec<Band> = Vec::new();
    for v in variants {
        let rs: Vec<&Replication> = reps.iter().filter(|r| &r.variant == v).collect();
        let len = rs.iter().map(|r| r.backlog_hourly.len()).min().unwrap_or(0);
        let pts = (0..len)
            .map(|h| {
                let xs: Vec<f64> = rs.iter().map(|r| r.backlog_hourly[h] as f64).collect();
                let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = xs.iter().copied().fold(0.0, f64::max);
                ((h + 1) as f64 / 24.0, mean, lo, hi)
            })
            .collect();
        bands.push((v.clone(), pts));
    }
    let warm = summary.warmup_days as f64;
    let title = "Open work orders over time (mean across replications, band: lowest to highest)";
    drawn.push(plot!(dir, "backlog", (1000, 480), title, |root| backlog_plot(root, title, &bands, warm))?);

    // Time to close per loop: the CDF of the orders closed in the window, pooled over replications.
    let loops = ["small", "medium", "large"];
    let mut cdfs: Vec<CdfPanel> = Vec::new();
    for l in loops {
        let mut lines = Vec::new();
        for v in variants {
            let spreads: Vec<_> = reps.iter().filter(|r| &r.variant == v).filter_map(|r| r.close_hours_by_loop.get(l)).filter(|s| s.n > 0).collect();
            let n: u64 = spreads.iter().map(|s| s.n).sum();
            if n == 0 {
                continue;
            }
            // Percentiles pooled as the n-weighted mean of each replication's.
            let pts = (0..=100).map(|p| (spreads.iter().map(|s| s.percentiles[p] as f64 * s.n as f64).sum::<f64>() / n as f64, p as f64 / 100.0)).collect();
            lines.push((v.clone(), pts));
        }
        cdfs.push((l.to_string(), lines));
    }
    let title = "Hours from creation to closing, by the loop an order closed in (CDF, orders closed in the window)";
    drawn.push(plot!(dir, "close-cdf", (1200, 420), title, |root| cdf_plot(root, &cdfs, variants))?);

    // Bars with intervals.
    let groups = |prefix: &str| -> Vec<String> {
        let mut g: Vec<String> = summary.kpis.iter().filter_map(|r| r.name.strip_prefix(prefix).map(str::to_string)).collect();
        g.sort();
        g
    };
    for (name, prefix, title, ylabel) in [
        ("escalations", "escalations_per_day/", "Escalations and whistles into each loop per day (95% interval)", "per day"),
        ("utilisation", "utilisation/", "Utilisation per crew: share of on-duty time on orders (95% interval)", "share"),
        ("harm", "harm_hours_per_day/", "Harm hours per day by incident kind (95% interval)", "hours per day"),
        ("hotline", "hotline_calls_per_week/", "12345 hotline calls per week by problem (95% interval)", "calls per week"),
    ] {
        let cats = groups(prefix);
        if cats.is_empty() {
            continue;
        }
        let series: Vec<(String, Vec<Option<Interval>>)> = variants
            .iter()
            .map(|v| (v.clone(), cats.iter().map(|c| summary.kpi(&format!("{prefix}{c}")).and_then(|r| r.by_variant.get(v)).copied()).collect()))
            .collect();
        let width = (300 + cats.len() as u32 * 40 * variants.len() as u32).clamp(800, 1600);
        drawn.push(plot!(dir, name, (width, 480), title, |root| bars_plot(root, title, ylabel, &cats, &series))?);
    }

    // Forest plot: each headline KPI's paired difference from the reference, as a share of its mean.
    let mut rows: Vec<(String, Interval)> = Vec::new();
    for h in HEADLINE {
        let Some(row) = summary.kpi(h) else { continue };
        let Some(base) = row.by_variant.get(&summary.reference) else { continue };
        for v in variants.iter().skip(1) {
            if let Some(d) = row.difference.get(v)
                && base.mean != 0.0
            {
                let scale = 100.0 / base.mean.abs();
                rows.push((format!("{h} · {v}"), Interval { mean: d.interval.mean * scale, half_width: d.interval.half_width * scale, ..d.interval }));
            }
        }
    }
    if !rows.is_empty() {
        let title = format!("Paired differences from {} (% of its mean, 95% interval)", summary.reference);
        let t = title.clone();
        drawn.push(plot!(dir, "differences", (1000, 120 + rows.len() as u32 * 28), &t, |root| forest_plot(root, &title, &rows))?);
    }
    Ok(drawn)
}

fn backlog_plot<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, bands: &[Band], warm: f64) -> Result<()> {
    let x_max = bands.iter().flat_map(|(_, p)| p.last().map(|x| x.0)).fold(1.0, f64::max);
    let y_max = bands.iter().flat_map(|(_, p)| p.iter().map(|x| x.3)).fold(1.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(e)?;
    chart.configure_mesh().x_desc("day").y_desc("open orders").label_style(("sans-serif", 13)).draw().map_err(e)?;
    if warm > 0.0 {
        chart.draw_series(std::iter::once(Rectangle::new([(0.0, 0.0), (warm, y_max)], RGBColor(230, 230, 230).filled()))).map_err(e)?;
    }
    for (i, (name, pts)) in bands.iter().enumerate() {
        let c = color(i);
        let mut poly: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.3)).collect();
        poly.extend(pts.iter().rev().map(|p| (p.0, p.2)));
        chart.draw_series(std::iter::once(Polygon::new(poly, c.mix(0.15)))).map_err(e)?;
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft, 13)?;
    Ok(())
}

fn cdf_plot<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, cdfs: &[CdfPanel], variants: &[String]) -> Result<()> {
    let panels = root.split_evenly((1, cdfs.len().max(1)));
    for (panel, (l, lines)) in panels.iter().zip(cdfs) {
        let x_max = lines.iter().flat_map(|(_, p)| p.iter().map(|x| x.0)).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{l} loop"), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..x_max, 0f64..1f64)
            .map_err(e)?;
        chart.configure_mesh().x_desc("hours").y_desc("share closed").label_style(("sans-serif", 12)).draw().map_err(e)?;
        for (name, pts) in lines {
            let i = variants.iter().position(|v| v == name).unwrap_or(0);
            let c = color(i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(e)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        if !lines.is_empty() {
            legend(&mut chart, SeriesLabelPosition::LowerRight, 12)?;
        }
    }
    Ok(())
}

fn bars_plot<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    ylabel: &str,
    cats: &[String],
    series: &[(String, Vec<Option<Interval>>)],
) -> Result<()> {
    let y_max =
        series.iter().flat_map(|(_, xs)| xs.iter().flatten().map(|i| if i.half_width.is_nan() { i.mean } else { i.high() })).fold(0.0, f64::max).max(1e-9)
            * 1.1;
    let n = cats.len() as f64;
    let per = series.len().max(1) as f64;
    let cats_owned: Vec<String> = cats.to_vec();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n, 0f64..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(cats.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.26 { cats_owned.get(i).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc(ylabel)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    let w = 0.8 / per;
    for (si, (name, xs)) in series.iter().enumerate() {
        let c = color(si);
        let mut first = true;
        for (ci, i) in xs.iter().enumerate() {
            let Some(i) = i else { continue };
            let x0 = ci as f64 + 0.1 + si as f64 * w;
            let bar = chart.draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x0 + w * 0.9, i.mean.max(0.0))], c.filled()))).map_err(e)?;
            if first {
                bar.label(name.clone()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
                first = false;
            }
            if !i.half_width.is_nan() {
                let xm = x0 + w * 0.45;
                chart.draw_series(std::iter::once(PathElement::new(vec![(xm, i.low().max(0.0)), (xm, i.high())], BLACK.stroke_width(1)))).map_err(e)?;
            }
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight, 12)?;
    Ok(())
}

fn forest_plot<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, rows: &[(String, Interval)]) -> Result<()> {
    let reach = rows.iter().map(|(_, i)| if i.half_width.is_nan() { i.mean.abs() } else { i.low().abs().max(i.high().abs()) }).fold(1.0, f64::max) * 1.1;
    let n = rows.len() as f64;
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(360)
        .build_cartesian_2d(-reach..reach, 0f64..n)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = y.floor() as usize;
            if (y - y.floor() - 0.5).abs() < 0.26 { labels.get(rows.len().saturating_sub(i + 1)).cloned().unwrap_or_default() } else { String::new() }
        })
        .x_desc("% of the reference's mean")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, 0.0), (0.0, n)], BLACK.stroke_width(1)))).map_err(e)?;
    for (k, (_, i)) in rows.iter().enumerate() {
        let y = n - k as f64 - 0.5;
        let holds = i.half_width.is_nan() || i.holds_zero();
        let c = if holds { RGBColor(120, 120, 120) } else { RGBColor(200, 40, 40) };
        if !i.half_width.is_nan() {
            chart.draw_series(std::iter::once(PathElement::new(vec![(i.low(), y), (i.high(), y)], c.stroke_width(2)))).map_err(e)?;
        }
        chart.draw_series(std::iter::once(Circle::new((i.mean, y), 4, c.filled()))).map_err(e)?;
    }
    Ok(())
}

/// A number with a sensible number of digits for its size.
pub fn num(x: f64) -> String {
    if x.is_nan() {
        return "–".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn ci(i: &Interval) -> String {
    if i.half_width.is_nan() { num(i.mean) } else { format!("{} ± {}", num(i.mean), num(i.half_width)) }
}

/// What the platform changes, scenario by scenario: before and after with intervals, and the paired
/// difference (for an experiment with a calibration, whose first variant is the town before).
fn by_scenario_table(h: &mut String, s: &Summary, after: &str) {
    let scenarios: std::collections::BTreeSet<&str> =
        s.kpis.iter().filter_map(|r| r.name.strip_prefix("scenario_harm_hours_per_day/").or_else(|| r.name.strip_prefix("scenario_calls_per_week/"))).collect();
    if scenarios.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<h2>What the platform changes, scenario by scenario</h2><p>Per scenario of the source: <b>{}</b> (the town before the platform) against <b>{}</b>, 95% intervals; the difference is paired per replication.</p>",
        esc(&s.reference),
        esc(after)
    );
    h.push_str("<table><tr><th>scenario</th><th>measure</th><th>before</th><th>after</th><th>after − before</th></tr>");
    let measures = [
        ("scenario_incidents_per_day/", "problems begun, a day"),
        ("scenario_calls_per_week/", "12345 calls a week"),
        ("scenario_harm_hours_per_day/", "hours problems went on, a day"),
        ("scenario_solved_before_any_call/", "solved before any resident reported it"),
        ("scenario_remediation_yuan_per_day/", "remediation, yuan a day"),
    ];
    for sc in scenarios {
        let mut first = true;
        for (prefix, what) in measures {
            let Some(row) = s.kpis.iter().find(|r| r.name == format!("{prefix}{sc}")) else { continue };
            let cell = |v: &str| row.by_variant.get(v).map(ci).unwrap_or_else(|| "-".into());
            let diff = row.difference.get(after).map(|d| format!("{}<br><small>{}</small>", ci(&d.interval), esc(&d.verdict))).unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td>{}</td><td style=\"text-align:left\">{what}</td><td>{}</td><td>{}</td><td>{diff}</td></tr>",
                if first { esc(sc) } else { String::new() },
                cell(&s.reference),
                cell(after)
            );
            first = false;
        }
    }
    h.push_str("</table>");
}

/// The source's claims against the twin (see [`super::calibrate`]).
fn calibration_table(h: &mut String, s: &Summary) {
    h.push_str(
        "<h2>Calibration against the source</h2><p>Each claim the source makes about the town with the platform, against the twin's town before it and with it (95% intervals; the difference is paired per replication). <i>Direction</i>: does the twin move the same way; <i>size</i>: does it get as far, as the note says. Read every row with its note: where the twin contradicts the source, the assumptions behind it are the place to look.</p>",
    );
    h.push_str("<table><tr><th>the source's claim</th><th>KPI</th><th>before</th><th>after</th><th>after − before</th><th>direction</th><th>size</th><th>note</th></tr>");
    let cell = |i: &Option<crate::stats::Interval>| i.as_ref().map(ci).unwrap_or_else(|| "-".into());
    let class = |v: &str| match v {
        "agrees" => "pass",
        "contradicts" => "fail",
        _ => "none",
    };
    for r in &s.calibration {
        let _ = write!(
            h,
            "<tr><td style=\"text-align:left\">{}<br><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td style=\"text-align:left\"><small>{}</small></td></tr>",
            esc(&r.claim),
            esc(&r.source),
            esc(&r.kpi),
            cell(&r.before),
            cell(&r.after),
            cell(&r.difference),
            class(&r.direction),
            esc(&r.direction),
            class(&r.size),
            esc(&r.size),
            esc(&r.note)
        );
    }
    h.push_str("</table>");
}

fn html(record: &PlanRecord, s: &Summary, drawn: &[Drawn]) -> Result<String> {
    let x = &record.experiment;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>towntwin experiment {name}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}table{{border-collapse:collapse;margin:1em 0;font-size:14px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}.fail{{background:#fdd}}.pass{{background:#dfd}}
.lower{{color:#06c}}.higher{{color:#c60}}.none{{color:#888}}img{{max-width:100%;border:1px solid #eee;margin:0.5em 0}}code{{background:#f4f4f4;padding:1px 4px}}</style></head><body>
<h1>Experiment <code>{name}</code></h1><p>{desc}</p>
<p>{days} simulated days per replication, the first {warm} a warm-up that no KPI counts; replication <i>k</i> has the same seed in every variant (common random numbers, experiment seed {seed}); intervals are {lvl:.0}% Student t over replications; differences are paired per replication against <b>{refv}</b>. Plan {fp}; {rd:.0} town-days simulated at {spd:.2} s per town-day per core: {rdh:.0} replication-days an hour per core.</p>"#,
        name = esc(&x.name),
        desc = esc(&x.description),
        days = x.days,
        warm = x.warmup_days,
        seed = x.seed,
        lvl = s.level * 100.0,
        refv = esc(&s.reference),
        fp = s.fingerprint,
        rd = s.replication_days,
        spd = s.seconds_per_town_day,
        rdh = 3600.0 / s.seconds_per_town_day.max(1e-9),
    );
    h.push_str("<h2>Variants</h2><table><tr><th>variant</th><th>replications</th><th>what it changes</th></tr>");
    for v in &x.variants {
        let mut what = format!("policy <code>{}</code>", esc(&v.policy));
        if let Some(sc) = &v.scenario {
            let _ = write!(what, ", scenario <code>{}</code>", esc(sc));
        }
        if let Some(r) = &v.rules {
            let _ = write!(what, ", rules <code>{}</code>", esc(r));
        }
        for (crew, f) in &v.staff {
            let _ = write!(what, ", {} staff x{f}", esc(crew));
        }
        if !v.description.is_empty() {
            let _ = write!(what, ": {}", esc(&v.description));
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td style=\"text-align:left\">{what}</td></tr>",
            esc(&v.name),
            s.replications.get(&v.name).copied().unwrap_or(0)
        );
    }
    h.push_str("</table>");
    if let Some(c) = &record.experiment.calibration {
        by_scenario_table(&mut h, s, &c.after);
        calibration_table(&mut h, s);
    }
    let failed = s.failed_checks();
    let _ = write!(
        h,
        "<h2>Validity checks</h2><p>{}</p><table><tr><th>check</th><th>variant</th><th>result</th><th>detail</th></tr>",
        if failed.is_empty() {
            "All checks pass.".to_string()
        } else {
            format!("<b>{} check(s) FAILED</b>: read the results with that in mind.", failed.len())
        }
    );
    for c in &s.checks {
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            if c.pass { "pass" } else { "fail" },
            esc(&c.name),
            esc(&c.variant),
            if c.pass { "pass" } else { "FAIL" },
            esc(&c.detail)
        );
    }
    h.push_str("</table><p>MSER-5 on the mean hourly backlog would truncate: ");
    let m: Vec<String> = s.mser5_warmup_hours.iter().map(|(v, hrs)| format!("{} {} h", esc(v), hrs)).collect();
    let _ = write!(h, "{} (warm-up used: {} h).</p>", m.join(", "), x.warmup_days * 24);
    for (title, only_headline) in [("Headline KPIs", true), ("Every KPI", false)] {
        let _ = write!(h, "<h2>{title}</h2><table><tr><th>KPI</th>");
        for v in &record.variants {
            let _ = write!(h, "<th>{}</th>", esc(v));
        }
        for v in record.variants.iter().skip(1) {
            let _ = write!(h, "<th>{} − {}</th>", esc(v), esc(&s.reference));
        }
        h.push_str("</tr>");
        for row in s.kpis.iter().filter(|r| HEADLINE.contains(&r.name.as_str()) == only_headline || !only_headline) {
            let _ = write!(h, "<tr><td title=\"{}\">{}<br><small>{}</small></td>", esc(&row.what), esc(&row.name), esc(&row.what));
            for v in &record.variants {
                let _ = write!(h, "<td>{}</td>", row.by_variant.get(v).map(ci).unwrap_or_default());
            }
            for v in record.variants.iter().skip(1) {
                match row.difference.get(v) {
                    Some(d) => {
                        let class = match d.verdict.as_str() {
                            "lower" => "lower",
                            "higher" => "higher",
                            _ => "none",
                        };
                        let _ = write!(h, "<td class=\"{class}\">{}<br><small>{}</small></td>", ci(&d.interval), esc(&d.verdict));
                    }
                    None => h.push_str("<td></td>"),
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
        if only_headline {
            h.push_str("<h2>Plots</h2>");
            for d in drawn {
                let bytes = std::fs::read(&d.png).with_context(|| format!("cannot read {}", d.png.display()))?;
                let _ = write!(
                    h,
                    "<h3>{}</h3><img alt=\"{}\" src=\"data:image/png;base64,{}\">",
                    esc(&d.title),
                    esc(&d.title),
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                );
            }
        }
    }
    let _ = write!(
        h,
        "<h2>How to reproduce</h2><p><code>towntwin experiment {}</code> (the same plan {} gives the same replications). Per replication: <code>replications.csv</code>; the analysis: <code>summary.json</code>; plots as PNG and SVG in <code>plots/</code>.</p></body></html>",
        esc(&record.file),
        s.fingerprint
    );
    Ok(h)
}
