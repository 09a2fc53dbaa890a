//! towntwin-harness: the `towntwin` command line's library. It embeds the broker, runs the twin against
//! it, measures what crosses the network and writes results. `main.rs` only parses arguments.

pub mod bench_ingest;
pub mod broker;
pub mod ceiling;
pub mod cloudevents;
pub mod mqtt;
pub mod responders;
pub mod run;

/// A bad input file (scenario, town): reported with its place and mapped to exit code 2.
#[derive(Debug)]
pub struct DataFault(pub towntwin_core::load::DataErrors);

impl std::fmt::Display for DataFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for DataFault {}

/// Exit code for an error: 2 for bad input files, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<DataFault>()) { 2 } else { 1 }
}
pub mod detect;
