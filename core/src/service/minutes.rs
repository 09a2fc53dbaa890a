//! Ordering the core's input by minutes (`towntwin core --order minutes`): a broker may deliver a town's
//! events in another order than the twin sent them (a cluster carries QoS 0 and QoS 1 by different paths
//! and redelivers what a dead node had in flight after messages sent later), and the core's rules and orders
//! depend on the order it applies events in. Here each event is logged as it comes (so it is acknowledged
//! at once) and held with the other events of its minute until that minute is whole: its clock tick has
//! come and, if the tick says how many events the twin sent in the minute ([`Tick::sent`]), that many have
//! come. Then the minute is applied in a fixed order, by event time, source and id, and its tick last. So
//! the same events give the same orders in whatever order they came.
//!
//! - An event of a minute already applied (late) is applied at once, as in arrival order.
//! - A minute whose QoS 0 events are not all there (QoS 0 may be lost) is applied without them once QoS 0
//!   events (telemetry) of a minute [`QOS0_WAIT`] minutes later have come: QoS 0 has a path of its own through a
//!   cluster, and a publisher's messages on it keep their order, so when it has moved on, what is missing
//!   is lost. QoS 1 events are waited for (a broker keeps them).
//! - A minute still incomplete when ticks a whole [`TimeWindow::behind_hours`] later have come is applied as
//!   it is (a twin that died between sending a tick and its minute's events), and counted as forced.
//! - Every decision is made on the events' own times and types, never the wall clock or how an event came:
//!   replaying the log in the order it was written applies the same events in the same order.

use std::collections::BTreeMap;

use crate::decode::Event;
use crate::event::{Data, EventType};
use crate::rules::TimeWindow;
use crate::time::{MINUTE, Millis};

/// How many minutes past a minute the QoS 0 events that come must be before it is applied without those
/// of its own that never came.
pub const QOS0_WAIT: i64 = 2;

/// An event held until its minute is whole, with whether it came at QoS 0 (live traffic, see
/// [`super::Core::ingest_delivered`]).
#[derive(Debug, Clone)]
pub struct Held {
    pub ev: Event,
    pub live: bool,
}

#[derive(Debug, Default)]
struct Minute {
    events: Vec<Held>,
    /// Events come, by QoS: `[qos0, qos1]`.
    got: [u32; 2],
    tick: Option<Held>,
    /// What the tick says the twin sent: `[qos0, qos1]`.
    sent: Option<[u32; 2]>,
}

/// The minutes held, and the first one not yet applied.
#[derive(Debug, Default)]
pub struct Minutes {
    /// The first minute (minutes since the epoch) not yet applied; `None` until one is.
    next: Option<i64>,
    held: BTreeMap<i64, Minute>,
    /// The latest minute whose tick has come.
    newest: Option<i64>,
    /// The latest minute a QoS 0 event came for.
    newest_qos0: Option<i64>,
    /// Events held now.
    pub holding: usize,
    /// Minutes applied before they were whole.
    pub forced: u64,
    /// Events that came after their minute was applied (applied at once).
    pub late: u64,
}

/// The minute an event lies in; a clock tick's is the minute it closes (tick `n` is stamped at its end).
fn minute_of(ev: &Event) -> i64 {
    if ev.ty == EventType::ClockTick { (ev.time - 1).div_euclid(MINUTE) } else { ev.time.div_euclid(MINUTE) }
}

impl Minutes {
    /// A core resuming at event time `now` (its last applied tick's time): the minutes before it are
    /// applied. `now` = 0: nothing applied yet.
    pub fn resuming_at(now: Millis) -> Minutes {
        Minutes { next: (now > 0).then(|| now.div_euclid(MINUTE)), ..Minutes::default() }
    }

    /// Whether `t` may be held: not more than the window's `behind_hours` after the latest tick that came
    /// (a device stamped years ahead is refused, not kept in memory). Before any tick, anything may.
    pub fn may_hold(&self, window: &TimeWindow, t: Millis) -> Option<String> {
        let newest = self.newest?;
        let limit = (newest + 1) * MINUTE + window.behind_hours as Millis * crate::time::HOUR;
        (t > limit).then(|| {
            format!(
                "event time {} is more than {} h ahead of the latest clock tick {}",
                crate::time::rfc3339(t),
                window.behind_hours,
                crate::time::rfc3339((newest + 1) * MINUTE)
            )
        })
    }

    /// Whether nothing is held, not even a tick waiting for its minute's events: only then does the engine's
    /// clock say which minutes are applied (what an engine snapshot may be taken at).
    pub fn idle(&self) -> bool {
        self.held.is_empty()
    }

    /// The feed broke: what is held came before the break, so none of it is live traffic after it (a
    /// QoS 0 event held from before a break, applied after it, would end the core's blind span at a time
    /// before the messages it lost, and the silence rule would count their devices as silent).
    pub fn broke(&mut self) {
        for m in self.held.values_mut() {
            for h in m.events.iter_mut().chain(m.tick.as_mut()) {
                h.live = false;
            }
        }
    }

    /// Takes a fresh event (logged already) and appends to `out` what is to be applied now, in order.
    pub fn push(&mut self, h: Held, window: &TimeWindow, out: &mut Vec<Held>) {
        let m = minute_of(&h.ev);
        if self.next.is_some_and(|next| m < next) {
            self.late += 1;
            out.push(h);
            return;
        }
        let minute = self.held.entry(m).or_default();
        if h.ev.ty == EventType::ClockTick {
            if let Data::Tick(t) = &h.ev.data {
                minute.sent = t.sent.map(|s| [s.qos0, s.qos1]);
            }
            minute.tick = Some(h);
            self.newest = Some(self.newest.map_or(m, |n| n.max(m)));
        } else {
            let qos1 = h.ev.ty.qos() > 0;
            minute.got[usize::from(qos1)] += 1;
            // Progress on QoS 0's path, by the event's type (the twin sends telemetry at QoS 0), not by how
            // it came: the log a restart replays does not say how each event came, and the replay must
            // decide as the live core did.
            if !qos1 {
                self.newest_qos0 = Some(self.newest_qos0.map_or(m, |n| n.max(m)));
            }
            minute.events.push(h);
            self.holding += 1;
        }
        self.release(window, out);
    }

    /// Applies, in order, every minute from the first not yet applied that is whole (or waited for long
    /// enough).
    fn release(&mut self, window: &TimeWindow, out: &mut Vec<Held>) {
        let Some(newest) = self.newest else { return };
        let give_up = window.behind_hours as i64 * 60;
        let newest_qos0 = self.newest_qos0;
        let qos0_moved_on = |m: i64| newest_qos0.is_some_and(|n| n >= m + QOS0_WAIT);
        while let Some(entry) = self.held.first_entry() {
            let m = *entry.key();
            let next = *self.next.get_or_insert(m);
            if m > next {
                // A minute with no event at all and no tick yet: wait for its tick, unless long overdue.
                if newest - next > give_up {
                    self.forced += 1;
                    self.next = Some(next + 1);
                    continue;
                }
                return;
            }
            let minute = entry.get();
            let whole = minute.tick.is_some()
                && match minute.sent {
                    None => true,
                    Some([q0, q1]) => minute.got[1] >= q1 && (minute.got[0] >= q0 || qos0_moved_on(m)),
                };
            if !whole {
                if newest - m <= give_up {
                    return;
                }
                self.forced += 1;
            }
            let Minute { mut events, tick, .. } = entry.remove();
            self.holding -= events.len();
            events.sort_by(|a, b| (a.ev.time, &a.ev.source, &a.ev.id).cmp(&(b.ev.time, &b.ev.source, &b.ev.id)));
            out.extend(events);
            out.extend(tick);
            self.next = Some(m + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Sent, Tick};

    fn ev(id: &str, ty: EventType, time: Millis) -> Held {
        let data = match ty {
            EventType::ClockTick => Data::Tick(Tick { tick: 0, sent: None }),
            _ => Data::Heartbeat(crate::event::Heartbeat { battery_pct: Some(90), rssi_dbm: -70 }),
        };
        Held { ev: Event { id: id.into(), source: format!("/gaohang/E001/x/{id}").into(), ty, time, device: None, subject: None, data }, live: false }
    }

    fn tick(n: i64, sent: Option<(u32, u32)>) -> Held {
        let mut h = ev(&format!("tick-{n}"), EventType::ClockTick, n * MINUTE);
        h.ev.data = Data::Tick(Tick { tick: n as u64, sent: sent.map(|(qos0, qos1)| Sent { qos0, qos1 }) });
        h
    }

    /// Three minutes of a twin's stream: QoS 0 heartbeats and QoS 1 alarms, each minute closed by a counted tick.
    fn stream() -> Vec<Held> {
        let mut s = Vec::new();
        for m in 100..103 {
            let mut sent = (0, 0);
            for k in 0..4 {
                let ty = if k % 2 == 0 { EventType::DeviceHeartbeat } else { EventType::SmokeAlarm };
                s.push(ev(&format!("d{m}-{k}"), ty, m * MINUTE + 1_000 * (4 - k)));
                if ty.qos() == 0 {
                    sent.0 += 1;
                } else {
                    sent.1 += 1;
                }
            }
            s.push(tick(m + 1, Some(sent)));
        }
        s
    }

    fn applied(order: &[usize], start: Millis) -> Vec<String> {
        let s = stream();
        let w = TimeWindow::default();
        let mut m = Minutes::resuming_at(start);
        let mut out = Vec::new();
        for &i in order {
            m.push(s[i].clone(), &w, &mut out);
        }
        assert_eq!(m.holding, 0);
        out.into_iter().map(|h| h.ev.id.to_string()).collect()
    }

    #[test]
    fn any_arrival_order_applies_the_same_sequence() {
        let n = stream().len();
        let inorder: Vec<usize> = (0..n).collect();
        let want = applied(&inorder, 100 * MINUTE);
        assert_eq!(want.len(), n);
        // Each minute sorted by time, its tick last.
        assert_eq!(&want[..5], ["d100-3", "d100-2", "d100-1", "d100-0", "tick-101"]);
        // QoS 0 in the order sent (its own path keeps a publisher's order), QoS 1 and the ticks in any order
        // (redelivered late), the two interleaved in any way.
        let s = stream();
        let (q0, q1): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| s[i].ev.ty.qos() == 0);
        let q1_reversed: Vec<usize> = q1.iter().rev().copied().collect();
        assert_eq!(applied(&[q0.clone(), q1.clone()].concat(), 100 * MINUTE), want, "QoS 0 first, as a cluster delivers it");
        assert_eq!(applied(&[q1_reversed.clone(), q0.clone()].concat(), 100 * MINUTE), want, "QoS 1 reversed, QoS 0 after");
        let zipped: Vec<usize> =
            q1_reversed.iter().zip(q0.iter().chain(std::iter::repeat(&usize::MAX))).flat_map(|(&a, &b)| [a, b]).filter(|&i| i != usize::MAX).collect();
        assert_eq!(zipped.len(), n);
        assert_eq!(applied(&zipped, 100 * MINUTE), want, "interleaved");
        // A fresh core (no minute applied yet) starts at the first minute that came.
        assert_eq!(applied(&[q0, q1].concat(), 0), want);
    }

    #[test]
    fn a_minute_waits_for_its_qos1_events_and_gives_up_on_lost_qos0_two_minutes_on() {
        let s = stream();
        let w = TimeWindow::default();
        let mut m = Minutes::resuming_at(100 * MINUTE);
        let mut out = Vec::new();
        // Minute 100 without its alarm d100-1: the ticks of 101 and 102 come, nothing is applied.
        for (i, h) in s.iter().enumerate() {
            if i != 1 && i != 0 {
                m.push(h.clone(), &w, &mut out);
            }
        }
        assert!(out.is_empty(), "applied {:?}", out.iter().map(|h| &h.ev.id).collect::<Vec<_>>());
        m.push(s[1].clone(), &w, &mut out);
        // The alarm came; the heartbeat d100-0 never does, and minute 102's tick is in: all is applied.
        assert_eq!(out.len(), s.len() - 1);
        assert_eq!(m.forced, 0);
        // The heartbeat, late, is applied at once.
        let mut late = Vec::new();
        m.push(s[0].clone(), &w, &mut late);
        assert_eq!(late.len(), 1);
    }

    #[test]
    fn uncounted_ticks_close_their_minute_as_it_is_and_far_future_events_are_refused() {
        let w = TimeWindow::default();
        let mut m = Minutes::default();
        let mut out = Vec::new();
        m.push(ev("a", EventType::SmokeAlarm, 5 * MINUTE + 10), &w, &mut out);
        assert!(out.is_empty(), "held until its minute's tick");
        m.push(tick(6, None), &w, &mut out);
        assert_eq!(out.iter().map(|h| h.ev.id.as_str()).collect::<Vec<_>>(), ["a", "tick-6"]);
        assert!(m.may_hold(&w, 6 * MINUTE + 23 * crate::time::HOUR).is_none());
        assert!(m.may_hold(&w, 6 * MINUTE + 25 * crate::time::HOUR).is_some());
    }

    /// A heartbeat held from before the feed broke is not live traffic after it: applied after the break, it
    /// must not end the core's blind span (found with a broker node killed under a district: the span closed
    /// at a time before the heartbeats lost, and 112 devices got silence orders they should not have).
    #[test]
    fn what_is_held_when_the_feed_breaks_is_not_live_after_it() {
        let w = TimeWindow::default();
        let mut m = Minutes::resuming_at(5 * MINUTE);
        let mut out = Vec::new();
        let mut before = ev("hb-before", EventType::DeviceHeartbeat, 5 * MINUTE + 10);
        before.live = true;
        m.push(before, &w, &mut out);
        assert!(out.is_empty());
        m.broke();
        let mut after = ev("hb-after", EventType::DeviceHeartbeat, 5 * MINUTE + 20);
        after.live = true;
        m.push(after, &w, &mut out);
        m.push(tick(6, Some((2, 0))), &w, &mut out);
        let live: Vec<(&str, bool)> = out.iter().map(|h| (h.ev.id.as_str(), h.live)).collect();
        assert_eq!(live, [("hb-before", false), ("hb-after", true), ("tick-6", false)]);
    }

    #[test]
    fn a_minute_never_completed_is_forced_a_day_of_ticks_later() {
        let w = TimeWindow::default();
        let mut m = Minutes::resuming_at(10 * MINUTE);
        let mut out = Vec::new();
        // The tick of minute 10 says one QoS 1 event was sent; it never comes.
        m.push(tick(11, Some((0, 1))), &w, &mut out);
        assert!(out.is_empty() && m.holding == 0 && !m.idle(), "a tick held alone is held");
        for n in 12..(11 + 24 * 60 + 2) {
            m.push(tick(n, Some((0, 0))), &w, &mut out);
        }
        assert_eq!(m.forced, 1);
        assert!(out.len() > 24 * 60, "the stalled minutes applied: {}", out.len());
    }
}
