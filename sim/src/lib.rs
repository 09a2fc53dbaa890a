//! towntwin-sim: the town twin, a bevy ECS model of Gaohang's estates, residents and devices that
//! produces the town's device traffic as encoded CloudEvents. It has no network code: the harness
//! carries what it produces to a broker.

pub mod dist;
pub mod generate;
pub mod plugins;
pub mod rng;
pub mod scenario;
pub mod setup;
pub mod twin;
pub mod world;

pub use plugins::emit::{Message, Stats};
pub use scenario::Scenario;
pub use twin::{Twin, TwinOptions};
