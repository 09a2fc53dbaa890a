//! The one loop that drives the twin and the core a simulated minute at a time. `towntwin run`, a drill and
//! every experiment replication are configurations of it:
//!
//! - the twin steps on a thread of its own ([`Twin`] side), or inline on the driver's thread when nothing
//!   needs the two to overlap (an experiment's replication, in process);
//! - each tick the responders' actions of the tick go to the core first, then the tick's events (to the
//!   broker at the [`pace`], and to the core through its [`link::CoreLink`]), then the notices the tick
//!   caused come back to the responders before the twin steps again (the lockstep);
//! - a command's [`Hooks`] run on the twin's side around each tick: a drill's injects and its controller's
//!   start, a run's progress bar, an experiment's hourly measures.
//!
//! The loop decides nothing about the town: the stream and the work orders are the same whatever the
//! pace, the link or the thread.

pub mod link;
pub mod pace;

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use towntwin_core::event::{Event, EventType};
use towntwin_core::orders::Notice;
use towntwin_core::time::{MINUTE, Millis};
use towntwin_sim::Incident;
use towntwin_sim::{Act, ResponderStats};
use towntwin_sim::{Message, Stats, Stepped, Twin};

use self::link::CoreLink;
use self::pace::{Pacer, Throttle};
use crate::mqtt::Publisher;
use crate::percentiles::Recorder;

/// One tick of the twin, from its side to the core's.
pub struct Tick {
    /// Town time at the tick's start.
    pub at: Millis,
    /// The tick's encoded events, in the twin's order (none when the twin hands them over typed).
    pub msgs: Vec<Message>,
    /// The tick's events typed, for a core in this process (see `TwinOptions::typed`).
    pub events: Vec<Event>,
    /// The responders' actions of the tick; they reach the core before the tick's events.
    pub acts: Vec<Act>,
    /// Whether the tick goes out at the pace (a drill's warm-up and a step go at once).
    pub paced: bool,
    /// Moments to time against the pace, each with a number of the hooks' choosing (a drill's injects
    /// that took effect this tick).
    pub marks: Vec<(usize, Millis)>,
}

impl Tick {
    /// Event time of the clock tick that closes the minute: the core's watermark to wait for.
    fn closing(&self) -> Option<Millis> {
        let typed = self.events.iter().rev().find(|e| e.ty == EventType::ClockTick).map(|e| e.time);
        typed.or_else(|| self.msgs.iter().rev().find(|m| m.ty == EventType::ClockTick).map(|m| m.time))
    }
}

/// Whether a tick runs, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Go { paced: bool },
    Stop(String),
}

/// What a command does around each tick, on the twin's side.
pub trait Hooks: Send + 'static {
    /// Before the tick starting at town time `at`: may change the twin (a drill's injects), may wait (a
    /// controller's start), or end the run with a reason.
    fn before(&mut self, _twin: &mut Twin, _at: Millis) -> Flow {
        Flow::Go { paced: true }
    }
    /// After the twin stepped, before the tick goes to the core: moments to time against the pace.
    fn stepped(&mut self, _twin: &mut Twin) -> Vec<(usize, Millis)> {
        Vec::new()
    }
    /// The notices the tick caused, before the twin's responders get them.
    fn answered(&mut self, _twin: &Twin, _notices: &[Notice]) {}
    /// After the tick that ended at town time `end`.
    fn after(&mut self, _twin: &Twin, _end: Millis) {}
}

/// No hooks: the twin to its end.
pub struct Plain;

impl Hooks for Plain {}

/// What the twin's side hands back when it ends.
pub struct TwinReport {
    pub stats: Stats,
    pub digest: String,
    pub incidents: Vec<Incident>,
    /// Wall time spent stepping the twin.
    pub busy: Duration,
    /// Town time at the end of the last tick run.
    pub end: Millis,
    pub responders: ResponderStats,
    /// Why it ended before the scenario's last tick, if it did.
    pub stopped_by: Option<String>,
}

/// The twin with its hooks, stepped a tick at a time.
pub struct TwinSide<H> {
    twin: Twin,
    hooks: H,
    /// Town time of the next tick.
    next: Millis,
    typed: bool,
    busy: Duration,
    stopped_by: Option<String>,
}

impl<H: Hooks> TwinSide<H> {
    /// `twin` (built to start at `start`, `typed` when it hands its events over typed) with `hooks`. A
    /// controller's pause is the hooks' to wait for (see [`Throttle::gate`]).
    pub fn new(twin: Twin, start: Millis, typed: bool, hooks: H) -> TwinSide<H> {
        TwinSide { twin, hooks, next: start, typed, busy: Duration::ZERO, stopped_by: None }
    }

    /// Steps the next tick; `None` when the scenario is over or the run was stopped.
    fn next(&mut self) -> Option<Tick> {
        self.stepped(false).map(|(tick, _)| tick)
    }

    /// The tick `next_ahead` stepped, with its events once encoded.
    fn complete(&mut self, (mut tick, stepped): (Tick, Stepped)) -> Tick {
        let t0 = Instant::now();
        tick.msgs = self.twin.collect(stepped);
        self.busy += t0.elapsed();
        tick
    }

    /// Steps the next tick as `next` does, its events left to encode on the twin's thread for that
    /// ([`Twin::step_ahead`]) until `complete`.
    fn next_ahead(&mut self) -> Option<(Tick, Stepped)> {
        self.stepped(true).map(|(tick, stepped)| (tick, stepped.unwrap_or_default()))
    }

    /// The next tick, stepped (`ahead`: its events left to encode, in the `Stepped`).
    fn stepped(&mut self, ahead: bool) -> Option<(Tick, Option<Stepped>)> {
        if self.twin.finished() || self.stopped_by.is_some() {
            return None;
        }
        let at = self.next;
        let paced = match self.hooks.before(&mut self.twin, at) {
            Flow::Go { paced } => paced,
            Flow::Stop(why) => {
                self.stopped_by = Some(why);
                return None;
            }
        };
        let t0 = Instant::now();
        let (msgs, stepped) = if ahead { (Vec::new(), Some(self.twin.step_ahead())) } else { (self.twin.step(), None) };
        self.busy += t0.elapsed();
        let events = if self.typed { self.twin.take_typed() } else { Vec::new() };
        let acts = self.twin.take_acts();
        let marks = self.hooks.stepped(&mut self.twin);
        self.next = at + MINUTE;
        Some((Tick { at, msgs, events, acts, paced, marks }, stepped))
    }

    /// The tick's notices: to the hooks, then to the twin's responders.
    fn answer(&mut self, notices: Vec<Notice>) {
        self.hooks.answered(&self.twin, &notices);
        self.twin.deliver(notices);
        self.hooks.after(&self.twin, self.next);
    }

    fn finish(mut self) -> (TwinReport, H) {
        let report = TwinReport {
            stats: self.twin.stats().clone(),
            digest: self.twin.digest(),
            // Taken, not copied: the twin ends here (a copy was a second ground truth at the peak).
            incidents: self.twin.take_incidents(),
            busy: self.busy,
            end: self.next,
            responders: self.twin.responder_stats().clone(),
            stopped_by: self.stopped_by,
        };
        (report, self.hooks)
    }
}

/// Where the ticks come from: the twin on its own thread, or stepped right here.
enum Source<H> {
    Inline(Box<TwinSide<H>>),
    Thread { rx: tokio::sync::mpsc::Receiver<Tick>, reply: Option<std::sync::mpsc::Sender<Vec<Notice>>>, twin: std::thread::JoinHandle<(TwinReport, H)> },
}

impl<H: Hooks> Source<H> {
    /// The twin made by `make` on a thread named `twin` (a bevy app stays on the thread it was built on);
    /// with `lockstep` it waits for each tick's notices before the next.
    fn thread(make: impl FnOnce() -> TwinSide<H> + Send + 'static, lockstep: bool) -> Result<Source<H>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Tick>(if lockstep { 1 } else { 256 });
        let (reply_tx, reply_rx) = std::sync::mpsc::channel::<Vec<Notice>>();
        let twin = std::thread::Builder::new().name("twin".into()).spawn(move || {
            let mut side = make();
            if lockstep {
                while let Some(tick) = side.next() {
                    if tx.blocking_send(tick).is_err() {
                        break;
                    }
                    match reply_rx.recv() {
                        Ok(notices) => side.answer(notices),
                        Err(_) => break,
                    }
                }
            } else {
                // Nothing comes back to wait for: each tick goes out once the next has been stepped, so
                // that its encoding (on the twin's thread for that) overlaps stepping the next.
                let mut last = None;
                while let Some(ahead) = side.next_ahead() {
                    if let Some(before) = last.take()
                        && tx.blocking_send(side.complete(before)).is_err()
                    {
                        break;
                    }
                    side.answer(Vec::new());
                    last = Some(ahead);
                }
                if let Some(before) = last {
                    let _ = tx.blocking_send(side.complete(before));
                }
            }
            side.finish()
        })?;
        Ok(Source::Thread { rx, reply: lockstep.then_some(reply_tx), twin })
    }

    async fn next(&mut self) -> Option<Tick> {
        match self {
            Source::Inline(side) => side.next(),
            Source::Thread { rx, .. } => rx.recv().await,
        }
    }

    fn answer(&mut self, notices: Vec<Notice>) {
        match self {
            Source::Inline(side) => side.answer(notices),
            Source::Thread { reply: Some(r), .. } => {
                // A twin thread that has ended reports how when it is joined.
                let _ = r.send(notices);
            }
            Source::Thread { reply: None, .. } => {}
        }
    }

    fn finish(self) -> Result<(TwinReport, H)> {
        match self {
            Source::Inline(side) => Ok((*side).finish()),
            Source::Thread { rx, reply, twin } => {
                // The twin ends when its channel closes.
                drop(rx);
                drop(reply);
                twin.join().map_err(|_| anyhow!("the twin thread panicked"))
            }
        }
    }
}

/// How a run is driven.
pub struct Drive<'a> {
    /// The twin on its own thread (so that stepping overlaps publishing), or inline.
    pub threaded: bool,
    /// Wait for each tick's notices before the twin steps again (the responders answer the core).
    pub lockstep: bool,
    /// Where the events go out, if anywhere but the core's link.
    pub publisher: Option<&'a mut Publisher>,
    /// The pace of paced ticks' publishing (none: full speed).
    pub throttle: Option<&'a Throttle>,
}

/// How late paced events and marks went out against the pace.
pub struct Lateness {
    pub events: Recorder,
    /// (mark, milliseconds late).
    pub marks: Vec<(usize, f64)>,
}

/// What a driven run hands back.
pub struct Driven<H> {
    pub twin: TwinReport,
    pub hooks: H,
    pub lateness: Lateness,
}

/// Drives the twin `make` builds to its end against `core` (and the publisher, if any), a tick at a time.
pub(crate) async fn drive<H: Hooks, C: CoreLink>(make: impl FnOnce() -> TwinSide<H> + Send + 'static, core: &mut C, d: Drive<'_>) -> Result<Driven<H>> {
    let Drive { threaded, lockstep, mut publisher, throttle } = d;
    let mut source = if threaded { Source::thread(make, lockstep)? } else { Source::Inline(Box::new(make())) };
    let idle = Throttle::new(pace::Speed::Max);
    let mut pacer = Pacer::new(throttle.unwrap_or(&idle));
    let mut lateness = Lateness { events: Recorder::new(), marks: Vec::new() };
    let mut failed = None;
    while let Some(tick) = source.next().await {
        let closing = tick.closing();
        let Tick { msgs, events, acts, paced, marks, .. } = tick;
        let step = async {
            core.act(acts).await?;
            if paced {
                for &(i, t) in &marks {
                    let late = pacer.wait(t).await;
                    lateness.marks.push((i, late.as_secs_f64() * 1000.0));
                }
            } else {
                pacer.reset();
            }
            if let Some(p) = publisher.as_deref_mut() {
                for m in &msgs {
                    if paced {
                        let late = pacer.wait(m.time).await;
                        lateness.events.record(late.as_micros() as i64);
                    }
                    p.publish(m.clone()).await?;
                }
            }
            core.events(&msgs, events).await?;
            core.notices(closing).await
        };
        match step.await {
            Ok(notices) => source.answer(notices),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let (twin, hooks) = source.finish()?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Driven { twin, hooks, lateness })
}
