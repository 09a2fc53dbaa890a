//! `towntwin core`: the rules and work-order core as a service on a broker, as a town deploys it. It tells
//! whoever started it where it stands in JSON status lines ([`crate::status`]): loaded, subscribed (a
//! publisher may start now; where its HTTP API listens), stopped with its counters.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::server::{self, CoreConfig};
use towntwin_core::time::rfc3339;
use towntwin_core::town::Town;

use crate::status::Status;
use crate::{DataFault, UsageFault};

/// What `towntwin core` is asked to serve.
#[derive(Debug, Clone)]
pub struct Serve {
    pub broker: String,
    pub db: towntwin_core::store::Location,
    pub town: PathBuf,
    pub rules: PathBuf,
    pub policy: PathBuf,
    pub client_id: String,
    pub filter: String,
    /// The town's topic root and source prefix.
    pub ns: towntwin_core::event::Namespace,
    pub partitions: u16,
    pub batch_max: u16,
    pub http: Option<SocketAddr>,
    pub credentials: Option<PathBuf>,
    pub exercise: Option<String>,
    /// Wait as the town's standby (see [`towntwin_core::server::CoreConfig::standby`]).
    pub standby: bool,
    /// In what order the core applies events ([`towntwin_core::service::Order`]).
    pub order: towntwin_core::service::Order,
}

/// Serves until interrupted (Ctrl-C, SIGINT) or until the core stops on its own (a store that cannot be
/// written): the core commits and acknowledges what it holds, then prints its counters.
pub fn core(s: &Serve) -> Result<()> {
    if s.standby && s.db.as_path().is_some() {
        return Err(
            UsageFault(format!("--standby: {} is a SQLite file; a standby waits on a PostgreSQL store's lock (give --store postgres://...)", s.db)).into()
        );
    }
    // One broker, or the nodes of a cluster to fail over between.
    let nodes = crate::broker::reach_cluster(&s.broker)?;
    let ep = nodes[0].clone();
    let login = match &s.credentials {
        Some(p) => Some(
            crate::credentials::Credentials::load(p)?.login(crate::credentials::CORE).ok_or_else(|| UsageFault(format!("{}: no user `core`", p.display())))?,
        ),
        None => None,
    };
    let town = Town::load(&s.town).map_err(DataFault)?;
    let rules = RuleSet::load(&s.rules).map_err(DataFault)?;
    let policy = Policy::load_for(&s.policy, &rules).map_err(DataFault)?;
    let ingest = IngestConfig {
        client_id: s.client_id.clone(),
        filter: s.filter.clone(),
        ns: s.ns.clone(),
        login,
        partitions: s.partitions.into(),
        batch_max: s.batch_max.into(),
        also: nodes[1..].iter().map(|n| (n.host.clone(), n.port)).collect(),
        ..IngestConfig::new(&ep.host, ep.port)
    };
    let mut cfg = CoreConfig::new(town, rules, policy, Some(s.db.clone()), ingest);
    cfg.http = s.http;
    cfg.exercise = s.exercise.clone();
    cfg.standby = s.standby;
    cfg.order = s.order;
    let rt = crate::runtime()?;
    let core = rt.block_on(async {
        if s.standby {
            Status::CoreStandby { db: s.db.to_string() }.print();
        }
        // Interruptible from the start: a standby waits inside `start` as long as its active core lives.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let mut handle = tokio::select! {
            h = server::start(cfg) => h?,
            _ = &mut interrupted => return Ok(None),
        };
        {
            let c = handle.core().lock().map_err(|_| anyhow::anyhow!("the core's lock was poisoned"))?;
            Status::CoreLoaded { db: s.db.to_string(), orders: c.orders.orders.len() as u64, event_time: rfc3339(c.now()) }.print();
        }
        // Printed once the broker has acknowledged the subscription: a publisher may start now.
        Status::CoreSubscribed { broker: s.broker.clone(), http: handle.http_addr().map(|a| format!("http://{a}")) }.print();
        tokio::select! {
            _ = &mut interrupted => {}
            r = handle.stopped() => r.context("the core stopped")?,
        }
        handle.shutdown().await.context("the core did not stop cleanly").map(Some)
    })?;
    let Some(core) = core else {
        // Interrupted while it waited: the wait for the lock runs on a blocking thread, which the runtime
        // would otherwise wait for on the way out.
        rt.shutdown_background();
        Status::CoreInterrupted { db: s.db.to_string() }.print();
        return Ok(());
    };
    Status::CoreStopped {
        accepted: core.stats.accepted,
        duplicates: core.stats.duplicates,
        rejected: core.stats.rejected.clone(),
        orders: core.orders.orders.len() as u64,
    }
    .print();
    Ok(())
}
