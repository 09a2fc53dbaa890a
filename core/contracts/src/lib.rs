//! towntwin-contracts: what the twin and the core agree on, and nothing else. The town registry
//! ([`town`]), the event envelope and topic scheme ([`event`]), event time ([`time`]), the road-violation
//! catalogue ([`violations`]), the work-order wire types the responders see ([`orders`]), principals
//! ([`principal`]), ground-truth kinds ([`truth`]) and RON loading with located errors ([`load`]).
//!
//! This crate has no network, storage or ECS code: the twin (`towntwin-sim`) depends on it and not on the
//! core, so that nothing but this crate is shared between the two.

pub mod event;
pub mod limits;
pub mod load;
pub mod orders;
pub mod principal;
pub mod time;
pub mod town;
pub mod truth;
pub mod violations;
