//! towntwin-sim: the town twin, a bevy ECS model of Gaohang's estates, residents and devices that
//! produces the town's device traffic as encoded CloudEvents. It has no network code: the harness
//! carries what it produces to a broker.
//!
//! Without its default feature `twin` the crate is the scenario file's types and checks alone
//! ([`scenario`], [`dist`], [`rng`]), with no bevy: the fuzz crate reads scenarios that way.

pub mod dist;
#[cfg(feature = "twin")]
pub mod generate;
#[cfg(feature = "twin")]
pub mod plugins;
pub mod rng;
pub mod scenario;
#[cfg(feature = "twin")]
pub mod setup;
#[cfg(feature = "twin")]
pub mod twin;
#[cfg(feature = "twin")]
pub mod world;

#[cfg(feature = "twin")]
pub use plugins::emit::{Message, Stats};
pub use scenario::Scenario;
#[cfg(feature = "twin")]
pub use twin::{Twin, TwinOptions};
