//! towntwin-harness: the `towntwin` command line's library. It embeds the broker, runs the twin against
//! it and the core, measures what crosses the network and writes results. `main.rs` only parses arguments.

pub mod broker;
pub mod ceiling;
pub mod cloudevents;
pub mod credentials;
pub mod detect;
pub mod district;
pub mod drill;
pub mod experiment;
pub mod load;
pub mod mosquitto;
pub mod mqtt;
pub mod nats;
pub mod percentiles;
pub mod plots;
pub mod postgres;
pub mod responders;
pub mod results;
pub mod run;
pub mod runner;
pub mod serve;
pub mod setup;
pub mod slurm;
pub mod stats;
pub mod status;
pub mod transport;

/// A bad input file (scenario, town, rules, policy): reported with its place and mapped to exit code 2.
#[derive(Debug)]
pub struct DataFault(pub towntwin_core::load::DataErrors);

impl std::fmt::Display for DataFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for DataFault {}

/// A request the command refuses as given (a results folder that holds a run, say): exit code 2, with
/// what to do instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageFault(pub String);

/// A load run that cannot be judged (the generator could not keep its schedule, say): exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("invalid run: {0}")]
pub struct InvalidRun(pub String);

/// The exit codes of every command, in one table:
///
/// | code | when |
/// |---|---|
/// | 0 | done (an experiment's validity checks and a load test's SLO held) |
/// | 1 | a failure, or what the run is judged by failed after its report was written (a validity check, the SLO, a broken audit chain) |
/// | 2 | bad input files, or a request refused as given (a results folder that holds a run) |
/// | 3 | a load run that cannot be judged ([`InvalidRun`]) |
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<DataFault>() || c.is::<UsageFault>()) {
        2
    } else if e.chain().any(|c| c.is::<InvalidRun>()) {
        3
    } else {
        1
    }
}

/// The runtime every command's network side runs on: two workers (this project's machines have two cores;
/// the twin and the core's writer have threads of their own), with I/O and timers.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

/// Raises this process's soft limit on open files to its hard limit (children inherit it): 9,750 device
/// connections need more than the usual soft limit of 1,024. Best effort: a limit that cannot be raised is
/// reported where connections then fail.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
    }
}
