//! Pacing on tokio time: town time kept to the wall clock at a speed a controller may change while the run
//! goes (full speed, a multiple of real time, paused, or stepped a tick at a time), and the open-loop
//! schedule of a load test ([`until`]). Pacing decides when a message goes out, never what it is: the
//! stream and the work orders are the same at any speed.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use towntwin_core::time::Millis;

/// How fast town time goes against the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the machine goes.
    Max,
    /// A multiple of real time: 1 for drills, 60, 3600, ...
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(Speed::Times(x)),
            _ => Err(format!("`{s}` is not a speed: expected `max` or a positive multiple of real time such as 1, 60 or 3600")),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Times(x) => write!(f, "{x}x"),
        }
    }
}

/// What a controller has set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Controls {
    pub speed: Speed,
    pub paused: bool,
    /// Ticks that may run while paused (a step each).
    pub steps: u32,
    pub stopped: bool,
}

/// Whether the next tick may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Run it at the pace.
    Go,
    /// Run it at once: a step while paused.
    Step,
    Stop,
}

/// The controls a run's pacer follows, shared with whoever changes them (a drill's controller). The twin's
/// thread waits at [`Throttle::gate`] before a tick; the publisher's pacing wakes on a change mid-tick.
pub struct Throttle {
    controls: Mutex<Controls>,
    /// Wakes the twin's thread (paused).
    wake: Condvar,
    /// Wakes the publisher's pacing (a pause, a resume, a new speed or a stop takes effect mid-tick).
    changed: Notify,
}

impl Throttle {
    pub fn new(speed: Speed) -> Throttle {
        Throttle { controls: Mutex::new(Controls { speed, paused: false, steps: 0, stopped: false }), wake: Condvar::new(), changed: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Controls> {
        // A panic while holding the controls leaves plain data behind: keep going with it.
        self.controls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The controls as they are.
    pub fn get(&self) -> Controls {
        *self.lock()
    }

    /// Changes the controls and wakes everyone who waits on them; returns what `change` returned.
    pub fn set<T>(&self, change: impl FnOnce(&mut Controls) -> T) -> T {
        let out = change(&mut self.lock());
        self.wake.notify_all();
        self.changed.notify_waiters();
        out
    }

    /// Blocks the twin's thread while paused with no step to take; says whether the next tick runs.
    pub fn gate(&self) -> Gate {
        let mut c = self.lock();
        loop {
            if c.stopped {
                return Gate::Stop;
            }
            if !c.paused {
                return Gate::Go;
            }
            if c.steps > 0 {
                c.steps -= 1;
                return Gate::Step;
            }
            c = self.wake.wait_timeout(c, Duration::from_millis(200)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// Where the pace is anchored: wall time `wall` is town time `town`, and `speed` town seconds pass a wall
/// second.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    wall: Instant,
    town: Millis,
    speed: f64,
}

impl Anchor {
    fn due(&self, t: Millis) -> Instant {
        // A town span scaled by a positive speed; capped so that it stays far inside `Duration` and `Instant`.
        let secs = ((t - self.town).max(0) as f64 / 1000.0) / self.speed;
        self.wall.checked_add(Duration::from_secs_f64(secs.clamp(0.0, 1e9))).unwrap_or(self.wall)
    }
}

/// Keeps town time to the wall clock at the [`Throttle`]'s speed. The pace is anchored at the first event
/// it waits for, and again after a pause or a change of speed, so either takes effect at once, mid-tick;
/// after a stop the rest goes out at once.
pub struct Pacer<'a> {
    throttle: &'a Throttle,
    anchor: Option<Anchor>,
}

impl<'a> Pacer<'a> {
    pub fn new(throttle: &'a Throttle) -> Pacer<'a> {
        Pacer { throttle, anchor: None }
    }

    /// Forgets the anchor: the next wait anchors anew (after a stretch at full speed).
    pub fn reset(&mut self) {
        self.anchor = None;
    }

    /// Waits until town time `t` is due, and returns how late it came (zero at full speed).
    pub async fn wait(&mut self, t: Millis) -> Duration {
        loop {
            // Registered before the controls are read, so a change in between is not missed.
            let changed = self.throttle.changed.notified();
            let c = self.throttle.get();
            let speed = match c.speed {
                _ if c.stopped => return Duration::ZERO,
                Speed::Max => return Duration::ZERO,
                Speed::Times(x) => x,
            };
            if c.paused {
                changed.await;
                self.anchor = None;
                continue;
            }
            let anchor = *self.anchor.get_or_insert(Anchor { wall: Instant::now(), town: t, speed });
            if anchor.speed != speed {
                self.anchor = Some(Anchor { wall: Instant::now(), town: t, speed });
                continue;
            }
            let due = anchor.due(t);
            tokio::select! {
                late = until(due) => return late,
                () = changed => {}
            }
        }
    }
}

/// Sleeps until `due` (never wakes early) and returns how late it woke: a timer wakes on the next
/// millisecond, so up to a millisecond late, which a load test's lag histogram shows.
pub async fn until(due: Instant) -> Duration {
    tokio::time::sleep_until(due).await;
    Instant::now().saturating_duration_since(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pace_follows_speed_pause_and_stop() {
        let throttle = Throttle::new(Speed::Times(60.0));
        let mut pacer = Pacer::new(&throttle);
        let t0 = 1_000_000;
        let start = Instant::now();
        pacer.wait(t0).await;
        // A town minute at x60 is a wall second.
        pacer.wait(t0 + 60_000).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        // Twice as fast from here: re-anchored at the next event.
        throttle.set(|c| c.speed = Speed::Times(120.0));
        pacer.wait(t0 + 60_000).await;
        pacer.wait(t0 + 120_000).await;
        assert_eq!(Instant::now() - start, Duration::from_millis(1500));
        // Paused: nothing is due until a resume, which anchors anew.
        throttle.set(|c| c.paused = true);
        let resume = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            throttle.set(|c| c.paused = false);
        };
        let ((), late) = tokio::join!(resume, pacer.wait(t0 + 180_000));
        assert_eq!(late, Duration::ZERO);
        assert_eq!(Instant::now() - start, Duration::from_millis(31_500));
        // Stopped: the rest at once.
        throttle.set(|c| c.stopped = true);
        pacer.wait(t0 + 100 * 60_000).await;
        assert_eq!(Instant::now() - start, Duration::from_millis(31_500));
        assert_eq!(throttle.gate(), Gate::Stop);
    }

    #[test]
    fn a_paused_gate_lets_steps_through_one_at_a_time() {
        let throttle = Throttle::new(Speed::Times(1.0));
        assert_eq!(throttle.gate(), Gate::Go);
        throttle.set(|c| {
            c.paused = true;
            c.steps = 2;
        });
        assert_eq!(throttle.gate(), Gate::Step);
        assert_eq!(throttle.gate(), Gate::Step);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                throttle.set(|c| c.paused = false);
            });
            assert_eq!(throttle.gate(), Gate::Go, "waits for the resume");
        });
    }
}
