//! towntwin-sim: the town twin, a bevy ECS model of Gaohang's estates, residents and devices that
//! produces the town's device traffic as encoded CloudEvents. It has no network code: the harness
//! carries what it produces to a broker.
//!
//! The public face is small: the [`Twin`] and its options, what it emits ([`Message`], [`Stats`]), what
//! a drill injects and what that made happen ([`Inject`], [`InjectEffect`]), the ground-truth
//! [`Incident`]s, the responders' actions and statistics ([`Act`], [`ResponderStats`], [`CrewStats`],
//! [`RuleTargets`]), the [`scenario`] file and the town [`generate`]or. The features (`plugins`), the
//! ECS world and the town's setup are the crate's own.
//!
//! Without its default feature `twin` the crate is the scenario file's types and checks alone
//! ([`scenario`], [`dist`], [`rng`]), with no bevy: the fuzz crate reads scenarios that way.

pub mod dist;
#[cfg(feature = "twin")]
pub mod generate;
pub(crate) mod params;
mod plugins;
pub mod rng;
pub mod scenario;
#[cfg(feature = "twin")]
mod setup;
#[cfg(feature = "twin")]
mod twin;
#[cfg(feature = "twin")]
mod world;

#[cfg(feature = "twin")]
pub use plugins::drill::Inject;
#[cfg(feature = "twin")]
pub use plugins::emit::{Message, Stats};
#[cfg(feature = "twin")]
pub use plugins::messages::InjectEffect;
#[cfg(feature = "twin")]
pub use plugins::responders::plugin::{Act, CrewStats, ResponderStats, RuleTargets};
pub use scenario::Scenario;
#[cfg(feature = "twin")]
pub use twin::{Stepped, Twin, TwinOptions};
#[cfg(feature = "twin")]
pub use world::Incident;
