//! towntwin-core: the platform's rules and work-order core. Decoding ([`decode`]), the rules engine
//! ([`rules`]), work orders and escalation policies ([`orders`]), the SQLite store ([`store`]), the core as
//! one object ([`service`]), its MQTT ingest ([`ingest`]), its HTTP API ([`api`]) and the operators' web console beside it ([`console`]), the audit log ([`audit`]) and the one way to start
//! it as a service ([`server`]). The contracts it shares with the twin live in `towntwin-contracts` and are
//! re-exported here under their own names. This crate never depends on bevy.

pub use towntwin_contracts::{event, limits, load, principal, time, town, truth, violations};

pub mod api;
pub mod audit;
pub mod auth;
pub mod console;
pub mod decode;
pub mod ingest;
pub mod orders;
pub mod rules;
pub mod server;
pub mod service;
pub mod store;
pub mod wire;
