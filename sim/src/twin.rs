//! The twin as a whole: builds the bevy app from a scenario and a town, steps it one simulated minute at a
//! time, and hands back each tick's encoded events. Nothing here paces against the wall clock: the
//! harness decides how fast to step.

use bevy::app::{TaskPoolOptions, TaskPoolPlugin};
use bevy::ecs::schedule::{LogLevel, ScheduleBuildSettings, SingleThreadedExecutor};
use bevy::prelude::*;
use towntwin_contracts::time::Millis;
use towntwin_contracts::town::Town;

use crate::plugins::emit::{Ahead, Emitted, EncodePool, Message, Stats, StreamDigest, Typed};
use crate::plugins::messages::{Applied, InjectEffect};
use crate::plugins::responders::plugin::{Act, Acts, Inbox, ResponderStats, RuleTargets};
use crate::plugins::{
    FeatureOrderPlugin, clock, devices, drill, emit, fence, garbage, hotline, renovation, rental, residents, responders, safety, vehicles, vulnerable,
};
use crate::scenario::Scenario;
use crate::world::{Clock, GroundTruth, Incident, Outbox, Params, TownData};
use towntwin_contracts::orders::Notice;

/// A tick stepped by [`Twin::step_ahead`]: its events being encoded, or encoded already.
#[must_use = "a tick's events are had with Twin::collect"]
#[derive(Default)]
pub struct Stepped(Option<std::sync::mpsc::Receiver<Vec<Message>>>, Vec<Message>);

/// Options that change how the twin runs, never what it produces.
#[derive(Debug, Clone, Default)]
pub struct TwinOptions {
    /// Threads that encode each tick's events in parallel pieces, the twin's own included (`None`: the
    /// machine's cores, at most 4; `Some(1)`: the twin's thread alone, which also steps no tick ahead).
    /// Systems always run on the single-threaded executor: every feature writes the one outbox in a fixed
    /// chain, so threads would only add overhead there.
    pub threads: Option<usize>,
    /// Make the build of the schedule fail on ambiguous system order (used by tests).
    pub deny_ambiguity: bool,
    /// Spawn and despawn unrelated entities before the town, so that tests can check that nothing the twin
    /// produces depends on the ECS's storage order.
    pub perturb_storage: bool,
    /// Hand the events over typed ([`Twin::take_typed`]) instead of encoded: for a core in the same
    /// process, which then need not parse what the twin would only have encoded for it. `step` returns
    /// nothing and the stream digest is not kept.
    pub typed: bool,
    /// Hand the events over typed as well as encoded: for a core in the same process that logs each
    /// payload as it was sent (`run --broker none`), so it need not parse back what the twin encoded.
    pub typed_too: bool,
}

#[derive(Component)]
struct Unrelated(#[allow(dead_code)] u32);

pub struct Twin {
    app: App,
}

/// Every feature plugin of the twin.
pub struct TownPlugins;

impl Plugin for TownPlugins {
    fn build(&self, app: &mut App) {
        app.add_plugins((
            FeatureOrderPlugin,
            clock::ClockPlugin,
            drill::DrillPlugin,
            responders::plugin::RespondersPlugin,
            rental::plugin::RentalPlugin,
            residents::plugin::ResidentsPlugin,
            vulnerable::plugin::VulnerablePlugin,
            garbage::plugin::GarbagePlugin,
            renovation::plugin::RenovationPlugin,
            vehicles::plugin::VehiclesPlugin,
            fence::plugin::FencePlugin,
            safety::plugin::SafetyPlugin,
            devices::plugin::DevicesPlugin,
            hotline::plugin::HotlinePlugin,
            emit::EmitPlugin,
        ));
    }
}

impl Twin {
    /// Builds the twin for `scenario` (starting at `start`) over `town`.
    pub fn new(scenario: &Scenario, start: Millis, town: Town, opts: TwinOptions) -> Twin {
        let mut app = App::new();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        let threads = opts.threads.unwrap_or(cores).max(1);
        app.add_plugins(TaskPoolPlugin { task_pool_options: TaskPoolOptions::with_num_threads(threads) });
        app.insert_resource(EncodePool::new(threads));
        if opts.deny_ambiguity {
            let strict = || ScheduleBuildSettings { ambiguity_detection: LogLevel::Error, ..default() };
            app.edit_schedule(Startup, |s| {
                s.set_build_settings(strict());
            });
            app.edit_schedule(Update, |s| {
                s.set_build_settings(strict());
            });
        }
        app.insert_resource(Params { scenario: scenario.clone(), seed: scenario.seed })
            .insert_resource(Clock::new(start, scenario.days))
            .init_resource::<Outbox>()
            .init_resource::<GroundTruth>();
        if opts.perturb_storage {
            let w = app.world_mut();
            let ids: Vec<Entity> = (0..1_000).map(|i| if i % 3 == 0 { w.spawn(Unrelated(i)).id() } else { w.spawn_empty().id() }).collect();
            for e in ids.into_iter().step_by(2) {
                w.despawn(e);
            }
        }
        crate::setup::populate(app.world_mut(), &town, start);
        app.insert_resource(TownData(town));
        app.add_plugins(TownPlugins);
        app.world_mut().resource_mut::<Typed>().on = opts.typed;
        app.world_mut().resource_mut::<Typed>().too = opts.typed_too;
        app.finish();
        app.cleanup();
        // Every schedule on the single-threaded executor, not only `Update`: bevy's own schedules around it
        // (`Main`, `First`, `Last`, ...) ran on the multi-threaded one, which woke the task pool's threads
        // every tick for a few bookkeeping systems (futex wake-ups, 4% of an experiment's replication-day).
        for (_, schedule) in app.world_mut().resource_mut::<Schedules>().iter_mut() {
            schedule.set_executor(SingleThreadedExecutor::default());
        }
        Twin { app }
    }

    /// Runs one tick (one simulated minute) and returns its encoded events in generation order.
    pub fn step(&mut self) -> Vec<Message> {
        self.app.update();
        std::mem::take(&mut self.app.world_mut().resource_mut::<Emitted>().0)
    }

    /// Runs one tick as [`Twin::step`] does, but leaves its events to be encoded (and folded into the
    /// stream digest) on a thread of the twin's while the caller goes on, say to the next tick: the twin's
    /// thread then does not wait for the encoding, a fifth of a town day. [`Twin::collect`] waits for them.
    /// The same events, messages and digest as `step`'s, in the same order, whatever the two are mixed
    /// with; a twin of one thread (`TwinOptions::threads`) encodes them here.
    pub fn step_ahead(&mut self) -> Stepped {
        let threads = self.app.world().resource::<EncodePool>().threads();
        self.app.world_mut().resource_mut::<Ahead>().on = threads > 1;
        self.app.update();
        let mut ahead = self.app.world_mut().resource_mut::<Ahead>();
        ahead.on = false;
        match ahead.pending.take() {
            Some(rx) => Stepped(Some(rx.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)), Vec::new()),
            None => Stepped(None, std::mem::take(&mut self.app.world_mut().resource_mut::<Emitted>().0)),
        }
    }

    /// The events of a tick [`Twin::step_ahead`] stepped, once encoded. Its payloads count in
    /// [`Twin::stats`]'s bytes when collected.
    pub fn collect(&mut self, stepped: Stepped) -> Vec<Message> {
        let Stepped(rx, ready) = stepped;
        let Some(rx) = rx else { return ready };
        // The thread replies to every tick it is given before it takes the next, and ends only with the twin.
        let messages = rx.recv().expect("the twin's encoding thread ended early: it panicked");
        self.app.world_mut().resource_mut::<Stats>().bytes += messages.iter().map(|m| m.payload.len() as u64).sum::<u64>();
        messages
    }

    /// The last tick's events as the core takes them, when the twin was built with [`TwinOptions::typed`].
    pub fn take_typed(&mut self) -> Vec<towntwin_contracts::event::Event> {
        std::mem::take(&mut self.app.world_mut().resource_mut::<Typed>().events)
    }

    /// Hands the responders the core's notices; they act on them from the next tick.
    pub fn deliver(&mut self, notices: Vec<Notice>) {
        self.app.world_mut().resource_mut::<Inbox>().0.extend(notices);
    }

    /// Queues inject number `n` of a drill: it takes effect at the next tick, made real by the features that
    /// own what it touches.
    pub fn inject(&mut self, n: u32, inject: drill::Inject) {
        self.app.world_mut().resource_mut::<drill::Injections>().push(n, inject);
    }

    /// When the injects took effect, and what they made, since the last call.
    /// In the order they took effect, then by inject (the features that make injects real run one after
    /// another within a tick).
    pub fn take_applied(&mut self) -> Vec<InjectEffect> {
        let mut applied = std::mem::take(&mut self.app.world_mut().resource_mut::<Applied>().0);
        applied.sort_by_key(|e| (e.at, e.inject));
        applied
    }

    /// Puts the town's traffic under its own topic root and CloudEvents source (a town of a district).
    pub fn set_namespace(&mut self, ns: towntwin_contracts::event::Namespace) {
        self.app.world_mut().insert_resource(emit::TownNamespace(ns));
    }

    /// Marks every event from now on as traffic of `exercise` (the CloudEvents extension `exerciseid`).
    pub fn mark_exercise(&mut self, exercise: &str) {
        self.app.world_mut().insert_resource(emit::Exercise(Some(exercise.to_string())));
    }

    /// From now on the crews whose principals are in `trainees` leave new orders to the drill's trainees
    /// (what they hold already they finish).
    pub fn stand_down(&mut self, trainees: std::collections::HashSet<towntwin_contracts::principal::Principal>) {
        self.app.world_mut().insert_resource(crate::plugins::messages::StandDown(trainees));
    }

    /// The responders' actions of the last tick, for the harness to apply to the core (in order).
    pub fn take_acts(&mut self) -> Vec<Act> {
        std::mem::take(&mut self.app.world_mut().resource_mut::<Acts>().0)
    }

    /// Tells the responders what each rule's orders are about, so that a resolution can end the incident it
    /// was about (see [`crate::scenario::Response`]).
    pub fn set_rule_targets(&mut self, targets: RuleTargets) {
        self.app.world_mut().insert_resource(targets);
    }

    pub fn responder_stats(&self) -> &ResponderStats {
        self.app.world().resource::<ResponderStats>()
    }

    /// True once the last tick of the scenario has run.
    pub fn finished(&self) -> bool {
        self.app.world().resource::<Clock>().finished()
    }

    /// The simulated instant of the twin's clock: the start of the minute of the last tick run.
    pub fn now(&self) -> Millis {
        self.clock().now
    }

    fn clock(&self) -> &Clock {
        self.app.world().resource::<Clock>()
    }

    /// Ticks run so far and ticks in the whole run.
    pub fn progress(&self) -> (u64, u64) {
        let c = self.clock();
        (c.tick + 1, ((c.end - c.start) / Clock::TICK) as u64)
    }

    pub fn stats(&self) -> &Stats {
        self.app.world().resource::<Stats>()
    }

    /// The ground truth: every incident so far, open or ended.
    pub fn incidents(&self) -> &[Incident] {
        &self.app.world().resource::<GroundTruth>().incidents
    }

    /// The incidents so far, taken out of the twin (which keeps none after): for a twin that has ended and
    /// is not stepped again (its index of open incidents still points into them).
    pub fn take_incidents(&mut self) -> Vec<Incident> {
        std::mem::take(&mut self.app.world_mut().resource_mut::<GroundTruth>().incidents)
    }

    /// Hex BLAKE3 digest of the encoded event stream so far.
    pub fn digest(&self) -> String {
        self.app.world().resource::<StreamDigest>().hash().to_hex().to_string()
    }

    /// Runs to the end, passing each tick's events to `sink`.
    /// Each tick is stepped ahead ([`Twin::step_ahead`]) and its events passed on after the next tick has
    /// been stepped, so that encoding one tick overlaps stepping the next.
    pub fn run(&mut self, mut sink: impl FnMut(&[Message])) {
        let mut last: Option<Stepped> = None;
        loop {
            let stepped = self.step_ahead();
            if let Some(before) = last.take() {
                sink(&self.collect(before));
            }
            if self.finished() {
                sink(&self.collect(stepped));
                break;
            }
            last = Some(stepped);
        }
    }
}
