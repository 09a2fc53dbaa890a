//! What a run is asked to do: the scenario and overrides, the broker, the core's inputs, and where results go.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::broker::{self, Endpoint};
use crate::mqtt::Mode;

pub use crate::runner::pace::Speed;
pub use crate::setup::{asset, default_scenario};

/// Which broker a run talks to.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerChoice {
    /// Start rumqttd in this process.
    Embedded,
    /// An external broker, `mqtt://host:port`.
    External(String),
    /// No network at all: generate, encode and digest only.
    None,
}

impl BrokerChoice {
    /// Where to connect: the external broker once it answers, the embedded one once started, or none.
    pub fn endpoint(&self) -> Result<Option<Endpoint>> {
        self.endpoint_with(None)
    }

    /// [`BrokerChoice::endpoint`], logging in with the credentials in `credentials` (a folder written by
    /// `towntwin town credentials`, or its `credentials.csv`): external brokers only.
    pub fn endpoint_with(&self, credentials: Option<&Path>) -> Result<Option<Endpoint>> {
        let creds = match credentials {
            None => None,
            Some(_) if *self != BrokerChoice::None && !matches!(self, BrokerChoice::External(_)) => {
                return Err(crate::UsageFault(
                    "--credentials needs --broker mqtt://...: the embedded broker has no logins or per-topic ACL (use mosquitto with the files `towntwin town credentials` writes)".into(),
                )
                .into());
            }
            Some(p) => Some(crate::credentials::Credentials::load(p)?),
        };
        Ok(match self {
            BrokerChoice::Embedded => Some(broker::start_embedded()?),
            BrokerChoice::External(url) => {
                let ep = broker::reach(url)?;
                Some(match creds {
                    Some(c) => ep.with_credentials(c),
                    None => ep,
                })
            }
            BrokerChoice::None => None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: PathBuf,
    pub days: Option<u32>,
    pub seed: Option<u64>,
    pub speed: Speed,
    pub broker: BrokerChoice,
    pub connections: Mode,
    pub out: Option<PathBuf>,
    pub threads: Option<usize>,
    /// Subscribe to `town/#` and count what the broker delivers.
    pub observe: bool,
    /// Check every delivered payload is a valid CloudEvent (costs CPU on the observer).
    pub validate: bool,
    /// Measure the broker's raw ceiling for messages of the run's mean size, in the same run.
    pub ceiling: bool,
    pub progress: bool,
    /// Run the rules and work-order core on the twin's stream: over MQTT when there is a broker, in-process
    /// without one (or with `in_process`).
    pub core: bool,
    /// Feed the core the twin's messages directly, even when a broker carries them.
    pub in_process: bool,
    pub rules: PathBuf,
    pub policy: PathBuf,
    /// The core's store (default: `core.db` in the results folder).
    pub db: Option<towntwin_core::store::Location>,
    /// Broker logins (`towntwin town credentials`): every client logs in as its own user. External
    /// brokers only (the embedded one has no per-topic ACL).
    pub credentials: Option<PathBuf>,
    /// The town's topic root and CloudEvents source (a named town of a district; the default town's
    /// otherwise).
    pub ns: towntwin_core::event::Namespace,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            scenario: default_scenario(),
            days: None,
            seed: None,
            speed: Speed::Max,
            broker: BrokerChoice::Embedded,
            connections: Mode::One,
            out: None,
            threads: None,
            observe: true,
            validate: false,
            ceiling: false,
            progress: true,
            core: true,
            in_process: false,
            rules: asset("assets/rules.ron"),
            policy: asset("scenarios/policies/standard.ron"),
            db: None,
            credentials: None,
            ns: towntwin_core::event::Namespace::default(),
        }
    }
}
