//! One bevy plugin per feature of the town. Every plugin's systems run in its own [`Feature`] set; the sets
//! run in a fixed chain, so the order in which systems write events and draw random numbers never depends
//! on the executor or the number of threads.

use bevy::prelude::*;

pub mod clock;
pub mod devices;
pub mod drill;
pub mod emit;
pub mod fence;
pub mod garbage;
pub mod hotline;
pub mod messages;
pub mod renovation;
pub mod rental;
pub mod residents;
pub mod responders;
pub mod safety;
pub mod vehicles;
pub mod vulnerable;

/// The features, in the order they run each tick.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    Clock,
    Drill,
    Responders,
    Rental,
    Residents,
    Vulnerable,
    Garbage,
    Renovation,
    Vehicles,
    Fence,
    Safety,
    Devices,
    Hotline,
    Emit,
}

/// Orders the feature sets in `Startup` and `Update`.
pub struct FeatureOrderPlugin;

impl Plugin for FeatureOrderPlugin {
    fn build(&self, app: &mut App) {
        use Feature::*;
        app.configure_sets(
            Startup,
            (Clock, Drill, Responders, Rental, Residents, Vulnerable, Garbage, Renovation, Vehicles, Fence, Safety, Devices, Hotline, Emit).chain(),
        );
        app.configure_sets(
            Update,
            (Clock, Drill, Responders, Rental, Residents, Vulnerable, Garbage, Renovation, Vehicles, Fence, Safety, Devices, Hotline, Emit).chain(),
        );
    }
}

/// Run condition: the first tick of a simulated day.
pub fn day_start(clock: Res<crate::world::Clock>) -> bool {
    clock.day_start
}
