//! The after-action report's files: the timeline plot and the HTML page.

use super::*;

/// Scores the drill of `log` and writes its report into `dir`: `aar.json` (English, for tools), the timeline
/// plot (`aar-timeline.png` and `.svg`), the report as one self-contained page in Chinese (`aar.html`, the
/// town's language) and in English (`aar.en.html`), each linking to the other, and the improvement plan in
/// HSEEP's columns (`improvement-plan.csv`) and in Chinese (`improvement-plan.zh.csv`). Returns the
/// English report.
pub fn report(dir: &Path, log: &Log, rec: &Recorded) -> Result<Aar> {
    crate::plots::register_font();
    let en = score(log, rec, Lang::En);
    let zh = score(log, rec, Lang::Zh);
    let put = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).with_context(|| format!("cannot write {}", dir.join(name).display()));
    put("aar.json", serde_json::to_string_pretty(&en)?.as_bytes())?;
    timeline_plot(dir, &en)?;
    let svg = std::fs::read_to_string(dir.join("aar-timeline.svg")).unwrap_or_default();
    for (aar, lang) in [(&zh, Lang::Zh), (&en, Lang::En)] {
        let (page, plan, _) = files(lang);
        put(page, render_html(aar, &svg, lang).as_bytes())?;
        put(plan, &improvement_plan_csv(&aar.improvement_plan, lang)?)?;
    }
    Ok(en)
}

/// The report's files in `lang`: (its page, its improvement plan's CSV, the other language's page).
fn files(lang: Lang) -> (&'static str, &'static str, &'static str) {
    match lang {
        Lang::Zh => ("aar.html", "improvement-plan.zh.csv", "aar.en.html"),
        Lang::En => ("aar.en.html", "improvement-plan.csv", "aar.html"),
    }
}

/// The improvement plan as CSV, in [`IMPROVEMENT_PLAN_COLUMNS`] (their Chinese in Chinese, after a UTF-8
/// byte-order mark: without one a spreadsheet on a Chinese Windows reads the file as GBK).
pub fn improvement_plan_csv(rows: &[Improvement], lang: Lang) -> Result<Vec<u8>> {
    let bom: &[u8] = if lang == Lang::Zh { "\u{FEFF}".as_bytes() } else { b"" };
    let mut w = csv::Writer::from_writer(bom.to_vec());
    w.write_record(IMPROVEMENT_PLAN_COLUMNS.map(|c| lang.t(c)))?;
    for r in rows {
        w.write_record([&r.objective, &r.capability, &r.observation, &r.corrective_action, &r.owner, &r.due, &r.source])?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The evaluators' observations, the hotwash's agenda and the improvement plan.
fn debrief_html(h: &mut String, aar: &Aar, l: Lang) {
    let _ = write!(h, "<h2>{}</h2>", l.t("Evaluators' observations"));
    if aar.evaluators.is_empty() {
        let _ = write!(h, "<p>{}</p>", l.t("No evaluator was named in the script."));
    } else {
        let names: Vec<String> = aar.evaluators.iter().map(|(n, o)| format!("{} ({})", esc(n), esc(&o.join(", ")))).collect();
        let names = names.join(if l == Lang::Zh { "；" } else { "; " });
        let _ = write!(h, "<p>{}</p>", say!(l, "Evaluators: {names}.", "评估员：{names}。"));
    }
    if !aar.observations.is_empty() {
        let _ = write!(
            h,
            "<table id=observations><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            l.t("town time"),
            l.t("evaluator"),
            l.t("objective"),
            l.t("inject"),
            l.t("kind"),
            l.t("observation"),
            l.t("corrective action")
        );
        for o in &aar.observations {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                town_time(o.at),
                esc(&o.evaluator),
                esc(&o.objective),
                esc(o.inject.as_deref().unwrap_or("")),
                match o.kind {
                    ObservationKind::Strength => l.t("strength"),
                    ObservationKind::Improvement => l.t("area for improvement"),
                },
                esc(&o.text),
                esc(o.corrective_action.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table>");
    } else if !aar.evaluators.is_empty() {
        let _ = write!(h, "<p>{}</p>", l.t("None recorded."));
    }
    let _ = write!(
        h,
        "<h2>{}</h2><p>{}</p>",
        l.t("Hotwash"),
        l.t("For the talk straight after the drill: per objective, what went well and what did not (the evaluators' observations and the expectations).")
    );
    for w in &aar.hotwash {
        let _ = write!(h, "<h3>{} ({}): {}</h3>", esc(&w.objective), esc(&w.rating), esc(&w.text));
        for (title, list) in [(l.t("Strengths"), &w.strengths), (l.t("Areas for improvement"), &w.improvements)] {
            let _ = write!(h, "<p><b>{title}</b></p><ul>");
            if list.is_empty() {
                let _ = write!(h, "<li>{}</li>", l.t("none"));
            }
            for line in list {
                let _ = write!(h, "<li>{}</li>", esc(line));
            }
            h.push_str("</ul>");
        }
    }
    let (_, csv, _) = files(l);
    let _ = write!(
        h,
        "<h2>{}</h2><p>{} <a href={csv}>{csv}</a>{}</p><table id=improvement-plan><tr>{}</tr>",
        l.t("Improvement plan"),
        l.t("Also as"),
        l.t("; owners and dates are proposals for the hotwash to confirm."),
        IMPROVEMENT_PLAN_COLUMNS.iter().map(|c| format!("<th>{}</th>", l.t(c))).collect::<String>()
    );
    if aar.improvement_plan.is_empty() {
        let _ = write!(h, "<tr><td colspan=7>{}</td></tr>", l.t("No area for improvement."));
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

fn mins(m: Option<f64>, l: Lang) -> String {
    m.map_or_else(|| "-".into(), |m| format!("{m:.0} {}", l.t("min")))
}

/// The report as one HTML file in `l` with nothing to fetch.
pub fn render_html(aar: &Aar, svg: &str, l: Lang) -> String {
    let mut h = String::new();
    let (_, _, other) = files(l);
    let _ = write!(
        h,
        "<!doctype html><html lang={lang}><head><meta charset=utf-8><title>{title}: {name}</title><style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}}th{{background:#eee}}\
         .P{{background:#cfc}}.S{{background:#efc}}.M{{background:#fec}}.U{{background:#fcc}}.met{{color:#060}}.missed{{color:#a00}}\
         svg{{max-width:100%;height:auto}}</style></head><body><p style=float:right><a id=lang href={other}>{switch}</a></p>",
        lang = l.html(),
        title = l.t("After-action report"),
        name = esc(&aar.drill),
        switch = if l == Lang::Zh { "English" } else { "中文" }
    );
    let (drill, description, exercise, start, end, minutes) =
        (esc(&aar.drill), esc(&aar.description), esc(&aar.exercise), esc(&aar.start), esc(&aar.end), aar.minutes);
    let ended = match aar.ended_by.as_str() {
        "the end of the script" => say!(l, "ended at the end of the script", "按剧本结束"),
        "the controller" => say!(l, "stopped by the controller", "由导调员终止"),
        other => {
            let other = esc(other);
            say!(l, "ended by {other}", "结束方式：{other}")
        }
    };
    let _ = write!(
        h,
        "{}",
        say!(
            l,
            "<h1>After-action report: drill <code>{drill}</code></h1><p>{description}</p><p>Exercise <code>{exercise}</code>, town time {start} to {end} ({minutes:.0} drill minutes), {ended}.</p>",
            "<h1>演练评估报告：<code>{drill}</code></h1><p>{description}</p><p>演练编号 <code>{exercise}</code>，镇内时间 {start} 至 {end}（共 {minutes:.0} 分钟），{ended}。</p>"
        )
    );
    let _ = write!(h, "<h2>{}</h2><table><tr><th>{}</th><th>{}</th></tr>", l.t("Trainees"), l.t("trainee"), l.t("principal"));
    for (n, p) in &aar.trainees {
        let _ = write!(h, "<tr><td>{}</td><td><code>{}</code></td></tr>", esc(n), esc(p));
    }
    let _ = write!(
        h,
        "</table><h2>{}</h2><table><tr><th>{}</th><th>{}</th><th>{}</th></tr>",
        {
            let (earned, possible) = (aar.earned, aar.possible);
            say!(l, "Objectives: {earned} of {possible} points", "目标：得分 {earned} / {possible}")
        },
        l.t("objective"),
        l.t("rating"),
        l.t("points")
    );
    for o in &aar.objectives {
        let _ = write!(
            h,
            "<tr><td><b>{}</b>: {}</td><td class={r}><b>{r}</b></td><td>{} / {}</td></tr>",
            esc(&o.id),
            esc(&o.text),
            o.earned,
            o.possible,
            r = o.rating
        );
    }
    let _ = write!(
        h,
        "</table><p>{}</p><h2>{}</h2><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        l.t("P: performed without challenges (every point); S: with some challenges (at least half); M: with major challenges; U: unable to be performed (none); -: not exercised (nothing of it was due before the drill ended)."),
        l.t("Injects"),
        l.t("inject"),
        l.t("started"),
        l.t("order"),
        l.t("expected"),
        l.t("done after"),
        l.t("points"),
        l.t("why not met")
    );
    for i in &aar.injects {
        let order = match (&i.order, &i.order_rule) {
            (Some(o), Some(r)) => format!("{o} ({}) {} {}", esc(r), l.t("after"), mins(i.order_after_minutes, l)),
            _ => l.t("none").into(),
        };
        let started = match i.status {
            Status::Started => {
                let m = i.started_minute.unwrap_or(0.0);
                say!(l, "minute {m:.0}", "第 {m:.0} 分钟")
            }
            other => other.label(l).into(),
        };
        let n = i.expectations.len().max(1);
        let why = i.why.as_deref().map(|w| format!("<br><i class=why>{}</i>", esc(w))).unwrap_or_default();
        let adhoc = if i.adhoc { format!(" <i>({})</i>", l.t("ad hoc, fired by the controller")) } else { String::new() };
        let _ = write!(
            h,
            "<tr><td rowspan={n}><b>{}</b>: {}{adhoc}</td><td rowspan={n}>{started}{why}</td><td rowspan={n}>{order}</td>",
            esc(&i.id),
            esc(&i.title)
        );
        if i.expectations.is_empty() {
            let _ = write!(h, "<td colspan=4>{}</td></tr>", l.t("(background: nothing expected)"));
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
                "<td>{} {} {} {:.0} {} ({})</td><td class={class}>{}</td><td class={class}>{} / {}</td><td class=why>{}</td></tr>",
                esc(&x.by),
                expected_name(l, x.action)
                    + &x.in_loop
                        .map(|lp| {
                            let level = l.level(lp);
                            say!(l, " ({level} loop)", "（{level}）")
                        })
                        .unwrap_or_default(),
                l.t("within"),
                x.within_minutes,
                l.t("min"),
                esc(&x.objective),
                match (x.done_after_minutes, x.exercised) {
                    (Some(_), _) => mins(x.done_after_minutes, l),
                    (None, true) => l.t("never").into(),
                    (None, false) => l.t("not due before the end").into(),
                },
                x.earned,
                x.points,
                esc(x.why.as_deref().unwrap_or(""))
            );
        }
    }
    h.push_str("</table>");
    debrief_html(&mut h, aar, l);
    let _ = write!(
        h,
        "<h2>{}</h2>{svg}<p>{}</p><table><tr><th>{}</th><th>{}</th></tr>",
        l.t("Timeline"),
        l.t("Black dot: the inject took effect; triangle: its order was made; each bar: an expectation's window from the inject's start; on it a green dot: done in time, a red dot: done late, a red cross at the deadline: never done."),
        l.t("drill minute"),
        l.t("what")
    );
    for m in &aar.timeline {
        let _ = write!(h, "<tr><td>{:.0}</td><td>{}</td></tr>", m.minute, esc(&m.what));
    }
    let _ = write!(h, "</table><h2>{}</h2>", l.t("Keeping time"));
    if aar.inject_lateness_ms.is_empty() {
        let _ = write!(h, "<p>{}</p>", l.t("No inject ran at a paced speed."));
    } else {
        let _ = write!(h, "<table><tr><th>{}</th><th>{}</th></tr>", l.t("inject"), l.t("late by"));
        for (id, late) in &aar.inject_lateness_ms {
            let _ = write!(h, "<tr><td>{}</td><td>{late:.0} ms</td></tr>", esc(id));
        }
        h.push_str("</table>");
    }
    if let Some(e) = &aar.event_lateness {
        let _ = write!(h, "<p>{}</p>", {
            let (n, p50, p99, max) = (e.events, e.p50_ms, e.p99_ms, e.max_ms);
            say!(
                l,
                "All {n} events of the paced drill against their scheduled wall time: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms.",
                "按设定倍速运行时，{n} 个事件相对计划时刻的延迟：p50 {p50:.1} 毫秒，p99 {p99:.1} 毫秒，最大 {max:.1} 毫秒。"
            )
        });
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan's columns are looked up by value (`l.t(c)`), which the table's own test cannot see.
    #[test]
    fn the_improvement_plans_columns_have_their_chinese() {
        for c in IMPROVEMENT_PLAN_COLUMNS {
            assert_ne!(Lang::Zh.t(c), c, "{c}");
        }
        let csv = improvement_plan_csv(&[], Lang::Zh).unwrap();
        assert!(String::from_utf8(csv).unwrap().starts_with("\u{FEFF}目标,能力,待改进之处,整改措施,"));
    }
}
