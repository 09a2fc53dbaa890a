//! What each rule kind does: with an event that can move it ([`Engine::apply_rule`]) and with one of its
//! timers that falls due ([`Engine::fire`]).

use super::super::{Frame, sample};
use super::*;
use crate::event::{Data, WaterReading};

impl Engine {
    pub(super) fn apply_rule(&mut self, ri: usize, ev: &Event, out: &mut Vec<Finding>) {
        let rule = &self.rules.rules[ri];
        let dev = ev.device.and_then(|d| self.ctx.devices.list.get(d as usize));
        match (&rule.kind, &ev.data) {
            // A sign of life at home: water used (a reading of at least a litre), or the door opened.
            (RuleKind::Absence { home_quiet_hours: Some(_), .. }, Data::Water(WaterReading { litres: 1.., .. }) | Data::Door(_)) => {
                let Some(&person) = ev.device.and_then(|d| self.ctx.home_devices.get(&d)) else { return };
                let last = self.state.home_signs.entry(person).or_insert(ev.time);
                *last = (*last).max(ev.time);
            }
            (RuleKind::Absence { hours, .. }, Data::GatePass(g)) if self.ctx.registered.contains_key(&g.person.0) => {
                let last = self.state.last_pass.entry(g.person.0).or_insert(ev.time);
                // `>=`: a second absence rule sees the pass the first one just recorded.
                if ev.time >= *last {
                    *last = ev.time;
                    let due = ev.time + *hours as Millis * HOUR;
                    self.arm_absence(ri as u16, g.person.0, due);
                }
            }
            (RuleKind::DistinctFaces { window_days, more_than }, Data::GatePass(g)) => {
                let Some(estate) = dev.as_ref().and_then(|d| d.estate) else { return };
                let window = *window_days as Millis * DAY;
                let faces = self.state.faces.entry(estate, g.flat);
                faces.see(g.person.0, ev.time);
                let now = ev.time.max(self.state.now);
                faces.retain_after(now - window);
                if faces.len() > *more_than as usize {
                    let n = faces.len();
                    let area = self.ctx.estates[estate as usize].clone();
                    out.push(self.finding(
                        ri,
                        format!("{area}/{}", g.flat),
                        Some(estate),
                        area,
                        g.flat.to_string(),
                        ev.time,
                        format!("{n} distinct faces in {window_days} days"),
                    ));
                }
            }
            (kind @ (RuleKind::Hotline | RuleKind::Qr), Data::Hotline(call)) => {
                let Some((area, line)) = crate::decode::report_line(&ev.source) else { return };
                // With a QR rule in the set, QR reports are its own and the rest the hotline rule's.
                let qr = line == crate::event::Line::Qr;
                let take = match kind {
                    RuleKind::Qr => qr,
                    _ => !qr || !self.qr_rule,
                };
                if !take {
                    return;
                }
                let estate = self.ctx.estates.iter().position(|e| e == area).map(|i| i as u16);
                let (area, about) = (area.to_string(), call.about.clone());
                out.push(self.finding(
                    ri,
                    format!("{area}/{}/{about}", call.category),
                    estate,
                    area,
                    about,
                    ev.time,
                    format!("{} {}", line.said(), call.category),
                ));
            }
            (RuleKind::Direct { event, min_confidence, codes, alarms }, data) if *event == ev.ty => {
                let Some(d) = dev else { return };
                let (ok, key, detail) = match data {
                    Data::Fence(f) => (
                        f.confidence >= *min_confidence && (codes.is_empty() || codes.contains(&f.code)),
                        format!("{}/{}", d.id, f.code),
                        format!("{} ({:.2})", f.violation, f.confidence),
                    ),
                    Data::ElevatorEbike(e) => (
                        e.confidence >= *min_confidence,
                        format!("{}/{}", d.id, ev.subject.map_or(String::new(), |s| s.to_string())),
                        format!("elevator {} ({:.2})", e.elevator, e.confidence),
                    ),
                    Data::ElecAlarm(a) => (
                        alarms.is_empty() || alarms.contains(&a.alarm),
                        format!("{}/B{:02}-{}/{:?}", d.area, a.building, a.room, a.alarm),
                        format!("{:?} {:.1} A", a.alarm, a.amps),
                    ),
                    Data::Smoke(s) => (true, d.id.clone(), format!("obscuration {:.1}%", s.obscuration_pct)),
                    Data::Manhole(m) => (true, d.id.clone(), format!("tilt {:.0} deg", m.tilt_deg)),
                    Data::Noise(n) => (true, format!("{}/B{:02}", d.area, n.building), format!("{} dB for {} s", n.db, n.seconds)),
                    Data::Fault(f) => (true, d.id.clone(), format!("{:?}", f.fault)),
                    // Bags beside a kiosk: one order per kiosk, which later sightings join.
                    Data::Dumping(x) if ev.ty == EventType::ConstructionDumping => (true, d.id.clone(), format!("{} load(s) left outside the box", x.bags)),
                    Data::Dumping(x) => (true, d.id.clone(), format!("{} bag(s) beside the kiosk", x.bags)),
                    _ => (true, format!("{}/{}", d.id, ev.id), String::new()),
                };
                if ok {
                    // A fence order is about a camera's view of one kind of violation: its key.
                    let subject = match data {
                        Data::Fence(_) => key.clone(),
                        _ => ev.subject.map_or(d.id.clone(), |s| s.to_string()),
                    };
                    out.push(self.finding(ri, key, d.estate, d.area.clone(), subject, ev.time, detail));
                }
            }
            (RuleKind::WrongSorts { times, within_days }, Data::BinDrop(b)) if !b.sorted_ok => {
                let Some(estate) = dev.as_ref().and_then(|d| d.estate) else { return };
                let since = ev.time.max(self.state.now) - *within_days as Millis * DAY;
                let key = (ri as u16, estate, b.flat);
                let flags = self.state.missorts.entry(key).or_default();
                flags.retain(|t| *t > since);
                if ev.time > since {
                    flags.push(ev.time);
                }
                if flags.len() >= *times as usize {
                    let n = flags.len();
                    self.state.missorts.remove(&key);
                    let area = self.ctx.estates[estate as usize].clone();
                    out.push(self.finding(
                        ri,
                        format!("{area}/{}", b.flat),
                        Some(estate),
                        area,
                        b.flat.to_string(),
                        ev.time,
                        format!("{n} drops flagged as wrongly sorted in {within_days} days"),
                    ));
                }
            }
            (RuleKind::Duration { start, end, minutes }, _) => {
                let Some(d) = ev.device else { return };
                if ev.ty == *start {
                    if let std::collections::hash_map::Entry::Vacant(e) = self.state.open_since.entry((ri as u16, d)) {
                        e.insert(ev.time);
                        self.state.timers.insert((ev.time + *minutes as Millis * MINUTE, Timer::Duration(ri as u16, d)));
                    }
                } else if ev.ty == *end
                    && let Some(since) = self.state.open_since.remove(&(ri as u16, d))
                {
                    self.state.timers.remove(&(since + *minutes as Millis * MINUTE, Timer::Duration(ri as u16, d)));
                }
            }
            (RuleKind::DailySample { at, frame, .. }, data) => {
                // A sample framed on construction waste remembers each flat's last drop.
                if let (Frame::WasteDrops { .. }, Data::ConstructionDrop(c), Some(estate)) = (frame, data, dev.and_then(|d| d.estate)) {
                    let last = self.state.waste_drops.entry((estate, c.flat)).or_insert(ev.time);
                    *last = (*last).max(ev.time);
                }
                if self.state.sampled.contains_key(&(ri as u16)) {
                    return;
                }
                // Armed on the first event at the next `at`; each draw re-arms it for the next day.
                let ri16 = ri as u16;
                let base = self.state.now.max(ev.time);
                let mut due = Local::of(base).midnight() + at.millis();
                if due <= base {
                    due += DAY;
                }
                self.state.sampled.insert(ri16, i64::MIN);
                self.state.timers.insert((due, Timer::Sample(ri16)));
            }
            _ => {}
        }
    }

    pub(super) fn advance_to(&mut self, now: Millis, out: &mut Vec<Finding>) {
        if now <= self.state.now {
            return;
        }
        self.state.now = now;
        while let Some(&(due, timer)) = self.state.timers.first() {
            if due > now {
                break;
            }
            self.state.timers.pop_first();
            self.fire(due, timer, out);
        }
    }

    fn fire(&mut self, due: Millis, timer: Timer, out: &mut Vec<Finding>) {
        match timer {
            Timer::Absence(ri16, person) => {
                let ri = ri16 as usize;
                let Some(RuleKind::Absence { hours, home_quiet_hours }) = self.rules.rules.get(ri).map(|r| &r.kind) else { return };
                let (hours, quiet) = (*hours as Millis * HOUR, home_quiet_hours.map(|q| q as Millis * HOUR));
                let Some((reg, estate)) = self.ctx.registered.get(&person).cloned() else { return };
                let last = self.state.last_pass.get(&person).copied().unwrap_or(due);
                // Suppressed while the estate's gates were silent: the order needs `hours` of absence with
                // working gates, so a window that overlaps an outage is re-armed from the outage's end.
                let window_start = due - hours;
                // Of the estate's gates' outages overlapping the window, the one that ended last (or goes on).
                let overlapping = self.ctx.gates[estate as usize]
                    .iter()
                    .filter_map(|g| self.state.gate_outages.get(g))
                    .flat_map(|l| l.iter())
                    .filter(|(from, to)| *from < due && to.is_none_or(|t| t > window_start))
                    .map(|(_, to)| to.unwrap_or(Millis::MAX))
                    .max();
                if let Some(end) = overlapping {
                    // Still down: look again in an hour; back: a full window from its return.
                    let next = if end == Millis::MAX { due + HOUR } else { end + hours };
                    self.state.absence_due.insert((ri16, person), next);
                    self.state.timers.insert((next, Timer::Absence(ri16, person)));
                    return;
                }
                // The fused rule: a sign of life at home within the quiet hours puts the order off.
                let sign = self.state.home_signs.get(&person).copied();
                if let (Some(quiet), Some(sign)) = (quiet, sign)
                    && sign + quiet > due
                {
                    self.arm_absence(ri16, person, sign + quiet);
                    return;
                }
                let area = self.ctx.estates[estate as usize].clone();
                let hours = (due - last) / HOUR;
                let mut detail = format!("no gate pass for {hours} h (since {})", crate::time::rfc3339(last));
                if quiet.is_some() {
                    match sign {
                        Some(s) => detail.push_str(&format!(", no sign of life at home for {} h", (due - s) / HOUR)),
                        None => detail.push_str(", no sign of life at home since the watch began"),
                    }
                }
                out.push(self.finding(ri, reg.clone(), Some(estate), area, reg, due, detail));
            }
            Timer::Duration(ri, d) => {
                let Some(&since) = self.state.open_since.get(&(ri, d)) else { return };
                let Some(dev) = self.ctx.devices.list.get(d as usize).cloned() else { return };
                let mins = (due - since) / MINUTE;
                out.push(self.finding(ri as usize, format!("{}@{since}", dev.id), dev.estate, dev.area, dev.id, due, format!("open for {mins} min")));
            }
            Timer::Silence(d) => {
                if self.state.silence_due.get(&d) == Some(&due) {
                    self.state.silence_due.remove(&d);
                }
                // Heard since the timer was armed: the silence is due later (the timer moves on lazily).
                if let (Some(&last), Some(after)) = (self.state.heard.get(&d), self.silence_after(d))
                    && last + after > due
                {
                    self.arm_silence(d, last + after);
                    return;
                }
                let Some(ri) = self.rules.rules.iter().position(|r| matches!(r.kind, RuleKind::Silence { .. })) else { return };
                let Some(dev) = self.ctx.devices.list.get(d as usize).cloned() else { return };
                let mut note = String::new();
                match self.blind_recheck(d, due) {
                    Blindness::LookAgain(again) => {
                        self.arm_silence(d, again);
                        return;
                    }
                    Blindness::Unsure(from) => {
                        note =
                            format!("; the core has heard no live (QoS 0) message since its feed broke at {}, so it may be its own", crate::time::rfc3339(from))
                    }
                    Blindness::No => {}
                }
                if dev.kind == DeviceKind::Gate {
                    let list = self.state.gate_outages.entry(d).or_default();
                    if list.last().is_none_or(|l| l.1.is_some()) {
                        list.push((self.state.heard.get(&d).copied().unwrap_or(due), None));
                    }
                }
                let last = self.state.heard.get(&d).copied().unwrap_or(due);
                out.push(self.finding(
                    ri,
                    format!("{}@{last}", dev.id),
                    dev.estate,
                    dev.area,
                    dev.id,
                    due,
                    format!("silent since {}{note}", crate::time::rfc3339(last)),
                ));
            }
            Timer::Sample(ri) => {
                let (n, at, frame) = match &self.rules.rules[ri as usize].kind {
                    RuleKind::DailySample { households, at, frame } => (*households, *at, *frame),
                    _ => return,
                };
                // The next draw is the first `at` after the clock, not the day after this one: a timer armed
                // by an event stamped long before the first tick would otherwise catch up one draw a day,
                // decades of them (found by fuzzing: a 1970 heartbeat then a 2026 tick, 23 s and 1 GB).
                let now = self.state.now.max(due);
                let today = Local::of(now).midnight() + at.millis();
                if due + DAY <= now {
                    // A day long gone: nobody can check those flats on that day any more. The latest draw at
                    // or before the clock is still due: armed there, it fires in this same advance.
                    let latest = if today <= now { today } else { today - DAY };
                    self.state.timers.insert((latest.max(due + 1), Timer::Sample(ri)));
                    return;
                }
                let next = if today > now { today } else { today + DAY };
                self.state.timers.insert((next, Timer::Sample(ri)));
                let day = Local::of(due).day;
                self.state.sampled.insert(ri, day);
                let rule_id = self.rules.rules[ri as usize].id.clone();
                let mut drawn = Vec::with_capacity(n as usize);
                if let Frame::WasteDrops { within_days } = frame {
                    // Drops older than the frame's days are forgotten; the rest, in a fixed order, are the
                    // flagged flats, drawn from first.
                    let since = due - within_days as Millis * DAY;
                    self.state.waste_drops.retain(|_, t| *t >= since);
                    let mut flagged: Vec<(u16, FlatRef)> = self.state.waste_drops.keys().copied().collect();
                    flagged.sort();
                    let by_estate: Vec<Vec<FlatRef>> =
                        (0..self.ctx.flats.len() as u16).map(|e| flagged.iter().filter(|(fe, _)| *fe == e).map(|(_, f)| *f).collect()).collect();
                    drawn = sample(&by_estate, &rule_id, day, n as usize);
                }
                if drawn.len() < n as usize {
                    // The frame-less draw, less the flats already drawn (so without a flagged flat it is the
                    // `All` draw itself).
                    for x in sample(&self.ctx.flats, &rule_id, day, n as usize + drawn.len()) {
                        if drawn.len() >= n as usize {
                            break;
                        }
                        if !drawn.contains(&x) {
                            drawn.push(x);
                        }
                    }
                }
                for (estate, flat) in drawn {
                    let area = self.ctx.estates[estate as usize].clone();
                    let date = Local::of(due).date_string();
                    out.push(self.finding(
                        ri as usize,
                        format!("{date}/{area}/{flat}"),
                        Some(estate),
                        area,
                        flat.to_string(),
                        due,
                        format!("renovation spot check drawn for {date}"),
                    ));
                }
            }
        }
    }
}
