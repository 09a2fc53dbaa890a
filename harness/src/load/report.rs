//! A load run's report in its folder: `summary.json`, `report.md`, `latency.hlog` (an HdrHistogram interval
//! log, one histogram a second, readable by HdrHistogram's log tools), `samples.csv` (progress and resources
//! every 200 ms) and plots as PNG and SVG: the latency percentile spectrum, throughput and p99 over time, and
//! CPU and memory of the core, the broker and the generator.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::profile::Loaded;
use super::{Sample, Summary};
use crate::percentiles::Recorder;
use crate::plots::{color, e, legend, plot, register_font};

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// The interval log, the samples and the plots.
/// `sent`: events sent in each second of the load (by their intended instants).
pub fn write_series(out: &Path, all: &Recorder, per_second: &[Recorder], sent: &[u64], samples: &[Sample], summary: &Summary) -> Result<()> {
    let comment = format!("towntwin load {}: work-order latency in microseconds from each event's intended send instant", summary.profile);
    write_file(&out.join("latency.hlog"), &interval_log(&comment, None, per_second, &[])?)?;
    let mut csv = String::from("t,accepted,connections,core_cpu,core_rss_mb,broker_cpu,broker_rss_mb,generator_cpu,generator_rss_mb\n");
    for s in samples {
        let u = |u: Option<super::UsageAt>| u.map_or(",".to_string(), |u| format!("{:.3},{:.1}", u.cpu, u.rss_mb));
        let _ = writeln!(csv, "{:.2},{},{},{},{},{}", s.t, s.accepted, s.connections, u(s.core), u(s.broker), u(s.generator));
    }
    write_file(&out.join("samples.csv"), csv.as_bytes())?;
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("cannot create {}", plots.display()))?;
    register_font();
    spectrum(&plots, all.histogram())?;
    timeline(&plots, per_second, sent, samples, summary)?;
    if !samples.is_empty() {
        resources(&plots, samples, summary)?;
    }
    if summary.connection_count > 1 && !samples.is_empty() {
        connections(&plots, samples, summary)?;
    }
    Ok(())
}

/// An HdrHistogram interval log (values in microseconds): `comment`, one histogram for each second of
/// `per_second` that has any, then each of `tagged` (its tag, its histogram, the seconds from the start it
/// covers); `start`: the instant the log's timestamps count from, when there is one to state.
pub(super) fn interval_log(comment: &str, start: Option<std::time::SystemTime>, per_second: &[Recorder], tagged: &[(&str, &Recorder, f64)]) -> Result<Vec<u8>> {
    use std::time::Duration;
    let mut log = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.add_comment(comment).with_max_value_divisor(1000.0);
    if let Some(t) = start {
        builder.with_start_time(t).with_base_time(t);
    }
    let mut w = builder.begin_log_with(&mut log, &mut ser).map_err(|e| anyhow::anyhow!("cannot start the interval log: {e}"))?;
    let put = |e| anyhow::anyhow!("cannot write the interval log: {e}");
    for (s, h) in per_second.iter().map(Recorder::histogram).enumerate() {
        if !h.is_empty() {
            w.write_histogram(h, Duration::from_secs(s as u64), Duration::from_secs(1), None).map_err(put)?;
        }
    }
    for (tag, h, seconds) in tagged {
        let tag = hdrhistogram::serialization::interval_log::Tag::new(tag).ok_or_else(|| anyhow::anyhow!("{tag:?} is not an interval log tag"))?;
        w.write_histogram(h.histogram(), Duration::ZERO, Duration::from_secs_f64(seconds.max(0.001)), Some(tag)).map_err(put)?;
    }
    drop(w);
    Ok(log)
}

/// The generator's connections up over time (a reconnect storm's dip and recovery).
fn connections(dir: &Path, samples: &[Sample], summary: &Summary) -> Result<()> {
    let pts: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, s.connections as f64)).collect();
    let tmax = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let ymax = summary.connection_count as f64 * 1.05 + 1.0;
    let spans = fault_spans(summary);
    plot!(dir, "connections", (1000, 400), "Connections over time", |root| {
        let mut c = ChartBuilder::on(root)
            .caption("Device connections up (faults shaded)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, 0.0..ymax)
            .map_err(e)?;
        c.configure_mesh().x_desc("seconds since the load started").y_desc("connections").draw().map_err(e)?;
        shade(&mut c, &spans, ymax)?;
        c.draw_series(LineSeries::new(pts.iter().copied(), color(0).stroke_width(2))).map_err(e)?;
        Ok(())
    })?;
    Ok(())
}

/// Latency against percentile, the percentile axis stretched towards the tail (1 / (1 - q), log scale).
fn spectrum(dir: &Path, h: &Histogram<u64>) -> Result<()> {
    let pts: Vec<(f64, f64)> = if h.is_empty() {
        Vec::new()
    } else {
        h.iter_quantiles(2)
            .filter(|v| v.quantile_iterated_to() < 0.999_99)
            .map(|v| (1.0 / (1.0 - v.quantile_iterated_to()), v.value_iterated_to() as f64 / 1000.0))
            .collect()
    };
    let ymax = pts.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    plot!(dir, "latency-spectrum", (900, 500), "Work-order latency by percentile", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Event -> work order latency by percentile (from intended send)", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((1.0f64..100_000.0).log_scale(), 0.0..ymax)
            .map_err(e)?;
        chart.configure_mesh().x_desc("percentile").y_desc("ms").x_label_formatter(&|x| format!("{}%", 100.0 - 100.0 / x)).draw().map_err(e)?;
        chart.draw_series(LineSeries::new(pts.iter().copied(), color(0).stroke_width(2))).map_err(e)?;
        Ok(())
    })?;
    Ok(())
}

/// Shades each fault's span, the chart's full height.
fn shade<DB: DrawingBackend>(c: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, spans: &[(f64, f64)], top: f64) -> Result<()> {
    for &(a, b) in spans {
        c.draw_series(std::iter::once(Rectangle::new([(a, 0.0), (b, top)], RED.mix(0.15).filled()))).map_err(e)?;
    }
    Ok(())
}

fn fault_spans(summary: &Summary) -> Vec<(f64, f64)> {
    summary.faults.iter().map(|f| (f.started, f.ended.max(f.started + 0.2))).collect()
}

/// Events the core accepted a second, and the p99 latency of each second's notices.
/// Events sent and accepted a second (accepted: where the core was sampled), and the p99 latency of each
/// second's notices.
fn timeline(dir: &Path, per_second: &[Recorder], sent: &[u64], samples: &[Sample], summary: &Summary) -> Result<()> {
    let rate: Vec<(f64, f64)> =
        samples.windows(2).map(|w| (w[1].t, (w[1].accepted.saturating_sub(w[0].accepted)) as f64 / (w[1].t - w[0].t).max(1e-3))).collect();
    let sent: Vec<(f64, f64)> = sent.iter().enumerate().map(|(s, &n)| (s as f64 + 0.5, n as f64)).collect();
    let p99: Vec<(f64, f64)> = per_second
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.is_empty())
        .map(|(s, h)| (s as f64 + 0.5, h.histogram().value_at_quantile(0.99) as f64 / 1000.0))
        .collect();
    let tmax = samples.last().map_or(1.0, |s| s.t).max(per_second.len() as f64).max(sent.len() as f64).max(1.0);
    let rmax = rate.iter().chain(&sent).map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let lmax = p99.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let spans = fault_spans(summary);
    plot!(dir, "timeline", (1000, 700), "Throughput and p99 over time", |root| {
        let (top, bottom) = root.split_vertically(350);
        let mut c = ChartBuilder::on(&top)
            .caption(
                if samples.is_empty() { "Events sent per second (the core was not sampled)" } else { "Events sent and accepted by the core per second" },
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, 0.0..rmax)
            .map_err(e)?;
        c.configure_mesh().y_desc("events/s").draw().map_err(e)?;
        shade(&mut c, &spans, rmax)?;
        c.draw_series(LineSeries::new(sent.iter().copied(), color(2).stroke_width(1)))
            .map_err(e)?
            .label("sent/s")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], color(2)));
        if !rate.is_empty() {
            c.draw_series(LineSeries::new(rate.iter().copied(), color(0).stroke_width(2)))
                .map_err(e)?
                .label("accepted/s")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], color(0)));
        }
        legend(&mut c, SeriesLabelPosition::UpperRight, 14)?;
        let mut c = ChartBuilder::on(&bottom)
            .caption("p99 event -> work order latency per second (faults shaded)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, 0.0..lmax)
            .map_err(e)?;
        c.configure_mesh().x_desc("seconds since the load started").y_desc("ms").draw().map_err(e)?;
        shade(&mut c, &spans, lmax)?;
        c.draw_series(LineSeries::new(p99.iter().copied(), color(1).stroke_width(2))).map_err(e)?;
        Ok(())
    })?;
    Ok(())
}

fn resources(dir: &Path, samples: &[Sample], summary: &Summary) -> Result<()> {
    type Pick = fn(&Sample) -> Option<super::UsageAt>;
    let who: [(&str, Pick); 3] = [("core", |s| s.core), ("broker", |s| s.broker), ("generator + twin", |s| s.generator)];
    let tmax = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let cmax = samples.iter().flat_map(|s| [s.core, s.broker, s.generator]).flatten().map(|u| u.cpu).fold(0.5f64, f64::max) * 1.1;
    let mmax = samples.iter().flat_map(|s| [s.core, s.broker, s.generator]).flatten().map(|u| u.rss_mb).fold(10.0f64, f64::max) * 1.1;
    let spans = fault_spans(summary);
    plot!(dir, "resources", (1000, 700), "CPU and memory over time", |root| {
        let (top, bottom) = root.split_vertically(350);
        let mut c = ChartBuilder::on(&top)
            .caption("CPU (1.0 = one core busy)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..tmax, 0.0..cmax)
            .map_err(e)?;
        c.configure_mesh().draw().map_err(e)?;
        shade(&mut c, &spans, cmax)?;
        for (i, (name, pick)) in who.iter().enumerate() {
            let pts: Vec<(f64, f64)> = samples.iter().filter_map(|s| pick(s).map(|u| (s.t, u.cpu))).collect();
            if !pts.is_empty() {
                let col = color(i);
                c.draw_series(LineSeries::new(pts, col.stroke_width(2)))
                    .map_err(e)?
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], col));
            }
        }
        legend(&mut c, SeriesLabelPosition::UpperRight, 14)?;
        let mut c = ChartBuilder::on(&bottom)
            .caption("Resident memory (MiB)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..tmax, 0.0..mmax)
            .map_err(e)?;
        c.configure_mesh().x_desc("seconds since the load started").draw().map_err(e)?;
        for (i, (_, pick)) in who.iter().enumerate() {
            let pts: Vec<(f64, f64)> = samples.iter().filter_map(|s| pick(s).map(|u| (s.t, u.rss_mb))).collect();
            c.draw_series(LineSeries::new(pts, color(i).stroke_width(2))).map_err(e)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// `summary.json` and `report.md`.
pub fn write(out: &Path, s: &Summary, loaded: &Loaded) -> Result<()> {
    write_file(&out.join("summary.json"), &serde_json::to_vec_pretty(s)?)?;
    let mut md = String::new();
    let _ = writeln!(md, "# Load test `{}`\n", s.profile);
    if !loaded.profile.description.is_empty() {
        let _ = writeln!(md, "{}\n", loaded.profile.description);
    }
    let verdict = match (s.valid, s.slo_pass) {
        (false, _) => format!("**INVALID**: {}", s.invalid_reason.as_deref().unwrap_or("")),
        (true, true) => "**SLO met.**".to_string(),
        (true, false) => "**SLO missed.**".to_string(),
    };
    let _ = writeln!(md, "{verdict}\n");
    let _ = writeln!(md, "Profile `{}`; broker {}; {:?} connection(s); {:.0} s of load.\n", loaded.file.display(), s.broker, s.connections, s.seconds);
    md.push_str(&render(s));
    let _ = writeln!(md, "\n## Plots\n");
    for (f, t) in [
        ("latency-spectrum", "Latency by percentile"),
        ("timeline", "Throughput and p99 over time"),
        ("resources", "CPU and memory"),
        ("connections", "Connections over time"),
    ] {
        if out.join("plots").join(format!("{f}.png")).exists() {
            let _ = writeln!(md, "![{t}](plots/{f}.png)\n");
        }
    }
    let _ = writeln!(
        md,
        "Files: `summary.json`, `latency.hlog` (HdrHistogram interval log, µs, one histogram a second), `samples.csv`, `plots/`, `core.db` (the core's store)."
    );
    write_file(&out.join("report.md"), md.as_bytes())
}

/// The core's, the broker's and the generator's resources (a run that started them itself).
fn core_lines(o: &mut String, s: &Summary) {
    let _ = writeln!(
        o,
        "| core | {}{} start(s); CPU max {:.2} cores; RSS max {:.0} MiB; redeliveries dropped {} |",
        if s.core_flags.is_empty() { String::new() } else { format!("`{}`; ", s.core_flags.join(" ")) },
        s.core_starts,
        s.core_cpu_max,
        s.core_rss_max_mb,
        s.redelivered_dropped.map_or("?".into(), |n| n.to_string())
    );
    if let (Some(c), Some(m)) = (s.broker_cpu_max, s.broker_rss_max_mb) {
        let _ = writeln!(o, "| broker | CPU max {c:.2} cores; RSS max {m:.0} MiB |");
    }
    let _ = writeln!(o, "| generator and twin | CPU max {:.2} cores |", s.generator_cpu_max);
}

/// The summary as text (the terminal and report.md).
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let l = &s.latency_ms;
    let g = &s.generator_lag_ms;
    let _ = writeln!(o, "| what | figure |\n|---|---|");
    let _ = writeln!(o, "| connections | {} ({:?}), all accepted in {:.2} s |", s.connection_count, s.connections, s.connect_seconds);
    let _ =
        writeln!(o, "| events sent | {} ({} QoS 1, {} QoS 0); broker acknowledged {} |", s.sent, s.events.sent_qos1, s.events.sent_qos0, s.broker_acknowledged);
    let c = &s.publishers;
    if c.drops > 0 {
        let _ = writeln!(
            o,
            "| generator's connections | {} dropped, {} resumed their session; {} requests sent again ({} QoS 1); {} packet-id collisions |",
            c.drops, c.resumed, c.resent, c.resent_qos1, c.collisions
        );
    }
    let refused = if s.core_refused.is_empty() {
        String::new()
    } else {
        format!("; it refused {}", s.core_refused.iter().map(|(r, n)| format!("{n} ({r})")).collect::<Vec<_>>().join(", "))
    };
    let _ = writeln!(o, "| accepted by the core | {} of {} expected{refused} |", s.accepted, s.events.expected);
    let _ = writeln!(o, "| work orders | {} of {} expected |", s.work_orders, s.expected_work_orders);
    let _ = writeln!(o, "| lost | {} QoS 1 events, {} work orders; QoS 0 events lost: {} |", s.events.lost_qos1, s.orders.lost, s.lost_qos0);
    let _ = writeln!(o, "| duplicated | {} events, {} work orders; unexpected orders {} |", s.events.duplicated, s.orders.duplicated, s.orders.unexpected);
    let _ = writeln!(o, "| late / unnotified work orders | {} / {} |", s.orders.late, s.orders.unnotified);
    let _ = writeln!(
        o,
        "| event -> work order latency (ms) | p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} ({} orders) |",
        l.p50, l.p90, l.p99, l.p999, l.max, l.count
    );
    let _ = writeln!(o, "| generator lag (ms) | p50 {:.2}, p99 {:.2}, max {:.1} |", g.p50, g.p99, g.max);
    let core_rate = if s.generators.is_empty() { format!("{:.0}", s.core_per_second) } else { "not sampled (it runs on its own)".into() };
    let _ = writeln!(o, "| rates (events/s) | offered {:.0}, sent {:.0}, core {core_rate} |", s.offered_per_second, s.sent_per_second);
    let _ = writeln!(o, "| drain after the last send | {} |", s.drain_seconds.map_or("not within the limit".into(), |d| format!("{d:.2} s")));
    if !s.generators.is_empty() {
        // Several generators against a core of its own: the run's resources were not sampled here.
        let _ = writeln!(o, "| core | on its own; {} |", s.core_flags.join(" "));
    } else {
        core_lines(&mut o, s);
    }
    for f in &s.faults {
        let _ = writeln!(
            o,
            "| fault: {} | injected at {:.1} s, over at {:.1} s, recovered {}{} |",
            f.fault,
            f.started,
            f.ended,
            f.recovery_seconds.map_or("never".into(), |r| format!("{r:.1} s after it started")),
            f.error.as_ref().map_or(String::new(), |e| format!("; FAILED: {e}"))
        );
    }
    let _ = writeln!(o, "\n| SLO | target | measured | |\n|---|---|---|---|");
    for c in &s.checks {
        let _ = writeln!(o, "| {} | {} | {} | {} |", c.what, c.target, c.measured, if c.pass { "pass" } else { "**FAIL**" });
    }
    for (what, ids) in [
        ("lost QoS 1 events", &s.events.lost_qos1_ids),
        ("lost QoS 0 events", &s.events.lost_qos0_ids),
        ("duplicated events", &s.events.duplicated_ids),
        ("lost work orders", &s.orders.lost_ids),
        ("duplicated work orders", &s.orders.duplicated_ids),
        ("late work orders", &s.orders.late_ids),
    ] {
        if !ids.is_empty() {
            let _ = writeln!(o, "\nFirst {what}: {}", ids.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
        }
    }
    if !s.generators.is_empty() {
        let _ = writeln!(
            o,
            "\n| generator | host | events | sent | broker acknowledged | connections | lag p99 (ms) | notices heard | |\n|---|---|---|---|---|---|---|---|---|"
        );
        for g in &s.generators {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} in {:.2} s | {:.2} | {} | {} |",
                g.generator,
                g.host,
                g.events,
                g.sent,
                g.broker_acknowledged,
                g.connections,
                g.connect_seconds,
                g.generator_lag_ms.p99,
                g.notices,
                g.invalid_reason.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(o, "\nResults: {}", s.out_dir);
    o
}
