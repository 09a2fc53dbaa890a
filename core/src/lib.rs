//! towntwin-core: the platform side of the twin. Today it holds the contracts the twin and the core share:
//! the town registry ([`town`]), the event envelope and topic scheme ([`event`]), event time ([`time`]),
//! the road-violation catalogue ([`violations`]) and RON loading with located errors ([`load`]).
//! The rules and work-order service builds on these (issue 3). This crate never depends on bevy.

pub mod event;
pub mod load;
pub mod time;
pub mod town;
pub mod violations;
pub mod decode;
pub mod rules;
pub mod orders;
pub mod store;
pub mod service;
pub mod ingest;
pub mod api;
