//! The harness crate's integration tests, one binary (one link of the whole stack instead of one per file);
//! each module is a file of tests as it was.

mod backlog;
mod blind;
mod broker;
mod claims;
mod cli;
mod cluster;
mod common;
mod console;
mod credentials;
mod district;
mod drill;
mod experiment;
mod faults;
mod generators;
mod kill;
mod load;
mod minutes;
mod mmc;
mod platform;
mod postgres;
mod server;
mod slurm;
mod unchanged;
