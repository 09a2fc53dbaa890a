//! The sim crate's integration tests, one binary (one link of the whole stack instead of one per file);
//! each module is a file of tests as it was.

mod answers;
mod drill;
mod platform;
mod responders;
mod scenarios;
mod twin;
