//! The simulated clock: advances one minute a tick and publishes `clock.tick`, which drives the core's timers.
//! Tick `n` is stamped `start + n minutes` and closes minute `n - 1`: it is the last message of its tick, so
//! a core that has it has had everything before it.

use bevy::prelude::*;
use towntwin_contracts::event::{Data, EventType, Tick};

use super::Feature;
use crate::world::{CLOCK_DEVICE, Clock, Outbox};

pub struct ClockPlugin;

impl Plugin for ClockPlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(Update, advance_clock.in_set(Feature::Clock));
    }
}

fn advance_clock(mut clock: ResMut<Clock>, mut outbox: ResMut<Outbox>) {
    clock.advance();
    let tick = clock.tick + 1;
    outbox.emit(clock.now + Clock::TICK, CLOCK_DEVICE, EventType::ClockTick, None, Data::Tick(Tick { tick, sent: None }));
}
