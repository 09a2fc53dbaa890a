//! towntwin-core: the platform's rules and work-order core. Decoding ([`decode`]), the rules engine
//! ([`rules`]), work orders and escalation policies ([`orders`]), the SQLite store ([`store`]), the core as
//! one object ([`service`]), its MQTT ingest ([`ingest`]) and what it publishes ([`notices`]), its web side ([`web`]: the HTTP API and the operators' console), the audit log ([`audit`]) and the one way to start
//! it as a service ([`server`]). The contracts it shares with the twin live in `towntwin-contracts` and are
//! re-exported here under their own names. This crate never depends on bevy.

pub use towntwin_contracts::{event, limits, load, principal, time, town, truth, violations};

pub mod audit;
pub mod auth;
pub mod decode;
pub mod ingest;
pub mod metrics;
pub mod notices;
pub mod orders;
pub mod rules;
pub mod server;
pub mod service;
pub mod store;
pub mod web;
pub mod wire;
