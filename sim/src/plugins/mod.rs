//! The town's features. A feature owns its scenario section (`<feature>/mod.rs`: the type, its baseline
//! defaults and its checks, built with or without bevy) and its bevy plugin (`<feature>/plugin.rs`, only
//! with the `twin` feature). Features talk to each other only through [`messages`].
//!
//! Every plugin's systems run in its own [`Feature`] set; the sets run in a fixed chain, so the order in
//! which systems write events and draw random numbers never depends on the executor or the number of
//! threads.

#[cfg(feature = "twin")]
use bevy::prelude::*;

#[cfg(feature = "twin")]
pub mod clock;
pub mod devices;
#[cfg(feature = "twin")]
pub mod drill;
#[cfg(feature = "twin")]
pub mod emit;
pub mod fence;
pub mod garbage;
pub mod hotline;
#[cfg(feature = "twin")]
pub mod messages;
pub mod platform;
pub mod renovation;
pub mod rental;
pub mod residents;
pub mod responders;
pub mod safety;
pub mod vehicles;
pub mod vulnerable;

/// The features, in the order they run each tick.
#[cfg(feature = "twin")]
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
#[cfg(feature = "twin")]
pub struct FeatureOrderPlugin;

#[cfg(feature = "twin")]
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
#[cfg(feature = "twin")]
pub fn day_start(clock: Res<crate::world::Clock>) -> bool {
    clock.day_start
}
