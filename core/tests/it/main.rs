//! The core crate's integration tests, one binary (one link of the whole stack instead of one per file);
//! each module is a file of tests as it was.

mod api;
mod common;
mod hostile;
mod hotline;
mod orders;
mod rules;
