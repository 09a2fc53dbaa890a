//! The after-action report's files: the timeline plot and the HTML page.

use super::*;

/// Writes `aar.json`, the timeline plot (`aar-timeline.png` and `.svg`) and `aar.html` (self-contained: the
/// plot inline as SVG) into `dir`.
pub fn write(dir: &Path, aar: &Aar) -> Result<()> {
    crate::plots::register_font();
    let json = serde_json::to_string_pretty(aar)?;
    std::fs::write(dir.join("aar.json"), json).with_context(|| format!("cannot write {}", dir.join("aar.json").display()))?;
    timeline_plot(dir, aar)?;
    let svg = std::fs::read_to_string(dir.join("aar-timeline.svg")).unwrap_or_default();
    let html = render_html(aar, &svg);
    std::fs::write(dir.join("aar.html"), html).with_context(|| format!("cannot write {}", dir.join("aar.html").display()))?;
    let file = dir.join("improvement-plan.csv");
    std::fs::write(&file, improvement_plan_csv(&aar.improvement_plan)?).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// The improvement plan as CSV, in [`IMPROVEMENT_PLAN_COLUMNS`].
pub fn improvement_plan_csv(rows: &[Improvement]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(IMPROVEMENT_PLAN_COLUMNS)?;
    for r in rows {
        w.write_record([&r.objective, &r.capability, &r.observation, &r.corrective_action, &r.owner, &r.due, &r.source])?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The evaluators' observations, the hotwash's agenda and the improvement plan.
fn debrief_html(h: &mut String, aar: &Aar) {
    h.push_str("<h2>Evaluators' observations</h2>");
    if aar.evaluators.is_empty() {
        h.push_str("<p>No evaluator was named in the script.</p>");
    } else {
        let names: Vec<String> = aar.evaluators.iter().map(|(n, o)| format!("{} ({})", esc(n), esc(&o.join(", ")))).collect();
        let _ = write!(h, "<p>Evaluators: {}.</p>", names.join("; "));
    }
    if !aar.observations.is_empty() {
        h.push_str("<table id=observations><tr><th>town time</th><th>evaluator</th><th>objective</th><th>inject</th><th>kind</th><th>observation</th><th>corrective action</th></tr>");
        for o in &aar.observations {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                town_time(o.at),
                esc(&o.evaluator),
                esc(&o.objective),
                esc(o.inject.as_deref().unwrap_or("")),
                match o.kind {
                    ObservationKind::Strength => "strength",
                    ObservationKind::Improvement => "area for improvement",
                },
                esc(&o.text),
                esc(o.corrective_action.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table>");
    } else if !aar.evaluators.is_empty() {
        h.push_str("<p>None recorded.</p>");
    }
    h.push_str("<h2>Hotwash</h2><p>For the talk straight after the drill: per objective, what went well and what did not (the evaluators' observations and the expectations).</p>");
    for w in &aar.hotwash {
        let _ = write!(h, "<h3>{} ({}): {}</h3>", esc(&w.objective), esc(&w.rating), esc(&w.text));
        for (title, list) in [("Strengths", &w.strengths), ("Areas for improvement", &w.improvements)] {
            let _ = write!(h, "<p><b>{title}</b></p><ul>");
            if list.is_empty() {
                h.push_str("<li>none</li>");
            }
            for l in list {
                let _ = write!(h, "<li>{}</li>", esc(l));
            }
            h.push_str("</ul>");
        }
    }
    let _ = write!(
        h,
        "<h2>Improvement plan</h2><p>Also as <a href=improvement-plan.csv>improvement-plan.csv</a>; owners and dates are proposals for the hotwash to confirm.</p><table id=improvement-plan><tr>{}</tr>",
        IMPROVEMENT_PLAN_COLUMNS.iter().map(|c| format!("<th>{c}</th>")).collect::<String>()
    );
    if aar.improvement_plan.is_empty() {
        h.push_str("<tr><td colspan=7>No area for improvement.</td></tr>");
    }
    for r in &aar.improvement_plan {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.objective),
            esc(&r.capability),
            esc(&r.observation),
            esc(&r.corrective_action),
            esc(&r.owner),
            esc(&r.due),
            esc(&r.source)
        );
    }
    h.push_str("</table>");
}

/// Each inject a row: when it started, its order, and each expectation's deadline (a bar) and when it was
/// done (a dot: green in time, red late; a cross at the deadline for what was never done).
fn timeline_plot(dir: &Path, aar: &Aar) -> Result<()> {
    let rows = aar.injects.len().max(1);
    let xmax = aar.minutes.max(1.0) * 1.02;
    let labels: Vec<String> = aar.injects.iter().map(|i| i.id.clone()).collect();
    plot!(dir, "aar-timeline", (1000, 120 + 70 * rows as u32), "Drill timeline", |root| { draw_timeline(root, aar, rows, xmax, &labels) })?;
    Ok(())
}

fn draw_timeline<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, aar: &Aar, rows: usize, xmax: f64, labels: &[String]) -> Result<()> {
    let mut c = ChartBuilder::on(root)
        .caption(format!("Drill {}: injects, orders and the trainees' actions", aar.drill), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..xmax, -0.5..rows as f64 - 0.5)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("drill minute")
        .y_labels(rows)
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 0.01 && i >= 0.0 { labels.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
        })
        .draw()
        .map_err(e)?;
    for (row, inj) in aar.injects.iter().enumerate() {
        let y = row as f64;
        let Some(start) = inj.started_minute else { continue };
        c.draw_series(std::iter::once(Circle::new((start, y), 6, BLACK.filled()))).map_err(e)?;
        if let Some(after) = inj.order_after_minutes {
            c.draw_series(std::iter::once(TriangleMarker::new((start + after, y), 7, color(3).filled()))).map_err(e)?;
        }
        for (k, x) in inj.expectations.iter().enumerate() {
            let dy = y - 0.3 + 0.6 * (k as f64 + 0.5) / inj.expectations.len().max(1) as f64;
            let deadline = start + x.within_minutes;
            c.draw_series(std::iter::once(PathElement::new(vec![(start, dy), (deadline, dy)], BLUE.mix(0.35).stroke_width(3)))).map_err(e)?;
            match x.done_after_minutes {
                Some(m) => {
                    let col = if x.met { GREEN } else { RED };
                    c.draw_series(std::iter::once(Circle::new((start + m, dy), 5, col.filled()))).map_err(e)?;
                }
                None => {
                    c.draw_series(std::iter::once(Cross::new((deadline, dy), 6, RED.stroke_width(2)))).map_err(e)?;
                }
            }
        }
    }
    Ok(())
}

fn mins(m: Option<f64>) -> String {
    m.map_or_else(|| "-".into(), |m| format!("{m:.0} min"))
}

/// The report as one HTML file with nothing to fetch.
pub fn render_html(aar: &Aar, svg: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>After-action report: {name}</title><style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}}th{{background:#eee}}\
         .P{{background:#cfc}}.S{{background:#efc}}.M{{background:#fec}}.U{{background:#fcc}}.met{{color:#060}}.missed{{color:#a00}}\
         svg{{max-width:100%;height:auto}}</style></head><body>",
        name = esc(&aar.drill)
    );
    let _ = write!(
        h,
        "<h1>After-action report: drill <code>{}</code></h1><p>{}</p><p>Exercise <code>{}</code>, town time {} to {} ({:.0} drill minutes), ended by {}.</p>",
        esc(&aar.drill),
        esc(&aar.description),
        esc(&aar.exercise),
        esc(&aar.start),
        esc(&aar.end),
        aar.minutes,
        esc(&aar.ended_by)
    );
    let _ = write!(h, "<h2>Trainees</h2><table><tr><th>trainee</th><th>principal</th></tr>");
    for (n, p) in &aar.trainees {
        let _ = write!(h, "<tr><td>{}</td><td><code>{}</code></td></tr>", esc(n), esc(p));
    }
    let _ = write!(h, "</table><h2>Objectives: {} of {} points</h2><table><tr><th>objective</th><th>rating</th><th>points</th></tr>", aar.earned, aar.possible);
    for o in &aar.objectives {
        let _ = write!(
            h,
            "<tr><td><b>{}</b>: {}</td><td class={r}><b>{r}</b></td><td>{} of {}</td></tr>",
            esc(&o.id),
            esc(&o.text),
            o.earned,
            o.possible,
            r = o.rating
        );
    }
    let _ = write!(
        h,
        "</table><p>P: performed without challenges (every point); S: with some challenges (at least half); M: with major challenges; U: unable to be performed (none); -: not exercised (nothing of it was due before the drill ended).</p><h2>Injects</h2><table><tr><th>inject</th><th>started</th><th>order</th><th>expected</th><th>done after</th><th>points</th><th>why not met</th></tr>"
    );
    for i in &aar.injects {
        let order = match (&i.order, &i.order_rule) {
            (Some(o), Some(r)) => format!("{o} ({}) after {}", esc(r), mins(i.order_after_minutes)),
            _ => "none".into(),
        };
        let started = match i.status {
            Status::Started => format!("minute {}", mins(i.started_minute).trim_end_matches(" min")),
            Status::Skipped => "skipped".into(),
            Status::NotStarted => "not started".into(),
        };
        let n = i.expectations.len().max(1);
        let why = i.why.as_deref().map(|w| format!("<br><i class=why>{}</i>", esc(w))).unwrap_or_default();
        let adhoc = if i.adhoc { " <i>(ad hoc, fired by the controller)</i>" } else { "" };
        let _ = write!(
            h,
            "<tr><td rowspan={n}><b>{}</b>: {}{adhoc}</td><td rowspan={n}>{started}{why}</td><td rowspan={n}>{order}</td>",
            esc(&i.id),
            esc(&i.title)
        );
        if i.expectations.is_empty() {
            let _ = write!(h, "<td colspan=4>(background: nothing expected)</td></tr>");
        }
        for (k, x) in i.expectations.iter().enumerate() {
            if k > 0 {
                h.push_str("<tr>");
            }
            let class = if x.met {
                "met"
            } else if x.exercised {
                "missed"
            } else {
                "open"
            };
            let _ = write!(
                h,
                "<td>{} {:?} within {:.0} min ({})</td><td class={class}>{}</td><td class={class}>{} of {}</td><td class=why>{}</td></tr>",
                esc(&x.by),
                x.action,
                x.within_minutes,
                esc(&x.objective),
                match (x.done_after_minutes, x.exercised) {
                    (Some(_), _) => mins(x.done_after_minutes),
                    (None, true) => "never".into(),
                    (None, false) => "not due before the end".into(),
                },
                x.earned,
                x.points,
                esc(x.why.as_deref().unwrap_or(""))
            );
        }
    }
    h.push_str("</table>");
    debrief_html(&mut h, aar);
    let _ = write!(
        h,
        "<h2>Timeline</h2>{svg}<p>Black dot: the inject took effect; triangle: its order was made; each bar: an expectation's \
         window from the inject's start; on it a green dot: done in time, a red dot: done late, a red cross at the deadline: never done.</p>\
         <table><tr><th>drill minute</th><th>what</th></tr>"
    );
    for m in &aar.timeline {
        let _ = write!(h, "<tr><td>{:.0}</td><td>{}</td></tr>", m.minute, esc(&m.what));
    }
    h.push_str("</table><h2>Keeping time</h2>");
    if aar.inject_lateness_ms.is_empty() {
        h.push_str("<p>No inject ran at a paced speed.</p>");
    } else {
        h.push_str("<table><tr><th>inject</th><th>late by</th></tr>");
        for (id, l) in &aar.inject_lateness_ms {
            let _ = write!(h, "<tr><td>{}</td><td>{l:.0} ms</td></tr>", esc(id));
        }
        h.push_str("</table>");
    }
    if let Some(l) = &aar.event_lateness {
        let _ = write!(
            h,
            "<p>All {} events of the paced drill against their scheduled wall time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.</p>",
            l.events, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    h.push_str("</body></html>\n");
    h
}
