//! The one way to start the core as a service: a [`CoreConfig`] in, a [`CoreHandle`] out.
//!
//! [`start`] opens the store (resuming from it), binds the HTTP API if asked, connects to the broker and
//! returns only once the broker has acknowledged the core's subscription (or resumed the core's persistent
//! session, which holds it: the SUBACK would then come only behind everything the broker queued for the
//! core while it was down) and the API's listener is bound:
//! whoever publishes after `start` returns is heard, and no caller needs a timer to know it is ready. The handle
//! owns the service's tasks: it gives the API's address, the stream of work-order notices as they are
//! published, progress to wait on, and [`CoreHandle::shutdown`], which stops ingest and the API and hands
//! back the core. `towntwin core`, `towntwin run` and the tests all start the core
//! through here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::ingest::{IngestConfig, IngestCounters, IngestError, Progress, serve_on};
use crate::notices::{Link, OrdersOut};
use crate::orders::{Notice, Policy};
use crate::rules::RuleSet;
use crate::service::{Core, CoreError};
use crate::store::{Location, Store};
use crate::town::Town;
use crate::web::Api;

/// Everything the core needs to run as a service.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub town: Town,
    pub rules: RuleSet,
    pub policy: Policy,
    /// The store (a SQLite file or a PostgreSQL schema); the core resumes from it. `None` keeps everything
    /// in memory (tests only: a restart then loses everything).
    pub db: Option<Location>,
    /// Broker, client id, topic filter and batching.
    pub ingest: IngestConfig,
    /// Serve the HTTP API on this address (port 0 picks a free one; [`CoreHandle::http_addr`] says which).
    pub http: Option<SocketAddr>,
    /// How long to wait for the broker to acknowledge the subscription.
    pub subscribe_timeout: Duration,
    /// The exercise (an operator drill) whose events this core takes; `None`: the town's own traffic only
    /// (see [`crate::decode::Devices::exercise`]).
    pub exercise: Option<String>,
    /// Start as the town's standby: wait for its active core to let go of the store (a PostgreSQL store's
    /// lock), then load it and take over the same broker session. Nothing connects to the broker before.
    pub standby: bool,
    /// In what order the core applies what it takes (a store must be resumed in the order it was written).
    pub order: crate::service::Order,
}

impl CoreConfig {
    pub fn new(town: Town, rules: RuleSet, policy: Policy, db: Option<impl Into<Location>>, ingest: IngestConfig) -> CoreConfig {
        let db = db.map(Into::into);
        CoreConfig {
            town,
            rules,
            policy,
            db,
            ingest,
            http: None,
            subscribe_timeout: Duration::from_secs(30),
            exercise: None,
            standby: false,
            order: crate::service::Order::Arrival,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the core's store {path}: {source}")]
    Open { path: String, source: CoreError },
    #[error("cannot serve the HTTP API on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the broker at {broker} did not acknowledge the core's subscription to {filter} within {secs} s")]
    NotSubscribed { broker: String, filter: String, secs: u64 },
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("the core's {0} task failed: {1}")]
    Task(&'static str, String),
    #[error("the core is still held by another task 5 s after the service stopped")]
    StillHeld,
    #[error("the core's lock was poisoned by a panic")]
    Poisoned,
}

/// A running core service.
pub struct CoreHandle {
    core: Arc<Mutex<Core>>,
    progress: Arc<Progress>,
    out: OrdersOut,
    http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    /// `None` once [`CoreHandle::stopped`] has reaped it.
    ingest: Option<JoinHandle<Result<(), IngestError>>>,
    http: Option<JoinHandle<()>>,
}

/// Opens the store, binds the API, subscribes, and returns once the service is listening on both (a
/// resumed session counts as subscribed).
pub async fn start(cfg: CoreConfig) -> Result<CoreHandle, ServerError> {
    let CoreConfig { town, rules, policy, db, ingest: icfg, http, subscribe_timeout, exercise, standby, order } = cfg;
    let open_err = |source: CoreError| ServerError::Open { path: db.as_ref().map_or_else(|| "(in memory)".into(), |p| p.to_string()), source };
    // The API's listener is bound before anything else can fail late, so its address is known and taken
    // (a standby's too: it answers the probes while it waits).
    let mut listener = match http {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { addr, source })?),
        None => None,
    };
    let http_addr = match (&listener, http) {
        (Some(l), Some(addr)) => Some(l.local_addr().map_err(|source| ServerError::Listen { addr, source })?),
        _ => None,
    };
    let mut core = match (&db, standby) {
        (Some(at), true) => {
            let probes = match (listener.take(), http_addr) {
                (Some(l), Some(addr)) => {
                    let (l, done, task) = standby_probes(l, addr)?;
                    listener = Some(l);
                    Some((done, task))
                }
                (l, _) => {
                    listener = l;
                    None
                }
            };
            // Waiting may take as long as the active core lives: off the runtime's threads.
            let at = at.clone();
            let store = tokio::task::spawn_blocking(move || Store::open_standby(&at, None))
                .await
                .map_err(|e| ServerError::Task("standby", e.to_string()))?
                .map_err(|e| open_err(e.into()))?;
            if let Some((done, task)) = probes {
                let _ = done.send(());
                let _ = task.await;
            }
            Core::with_store(rules, policy, &town, Some(store), order).map_err(open_err)?
        }
        _ => Core::open_in(rules, policy, &town, db.as_ref(), order).map_err(open_err)?,
    };
    core.engine.set_exercise(exercise);
    core.engine.set_namespace(icfg.ns.clone());
    let core = Arc::new(Mutex::new(core));
    let (stop, stop_rx) = watch::channel(false);
    let link = Link::new(&icfg.connect(), &icfg.ns);
    let out = link.orders_out();

    let progress = Arc::new(Progress::default());
    let (subscribed_tx, subscribed_rx) = oneshot::channel();
    let (broker, filter) = (format!("mqtt://{}:{}", icfg.host, icfg.port), icfg.filter.clone());
    let mut ingest = tokio::spawn(serve_on(link, core.clone(), icfg, progress.clone(), stop_rx.clone(), subscribed_tx));
    tokio::select! {
        r = tokio::time::timeout(subscribe_timeout, subscribed_rx) => match r {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                stop.send_replace(true);
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut ingest).await;
                ingest.abort();
                return Err(ServerError::NotSubscribed { broker, filter, secs: subscribe_timeout.as_secs() });
            }
        },
        r = &mut ingest => {
            return Err(match r {
                Ok(Ok(())) => ServerError::NotSubscribed { broker, filter, secs: subscribe_timeout.as_secs() },
                Ok(Err(e)) => ServerError::Ingest(e),
                Err(e) => ServerError::Task("ingest", e.to_string()),
            });
        }
    }

    let http = listener.map(|listener| {
        let api = Api::new(core.clone(), &town).with_orders_out(out.clone()).with_stop(stop.clone()).with_progress(progress.clone());
        let mut stop_api = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                // Stops when told to, or when the service (the sender) is gone.
                let _ = stop_api.wait_for(|&stop| stop).await;
            };
            if let Err(e) = axum::serve(listener, crate::web::router(api)).with_graceful_shutdown(stopped).await {
                tracing::error!("the core's HTTP API stopped: {e}");
            }
        })
    });
    Ok(CoreHandle { core, progress, out, http_addr, stop, ingest: Some(ingest), http })
}

/// While a standby waits for its town's lock, its address answers the probes: `/healthz` 200 (the process
/// is sound: do not restart it), `/readyz` and everything else 503 (it takes no traffic yet). Served on a
/// copy of the listener, until `done`; the full API then serves on the listener itself.
#[allow(clippy::type_complexity)]
fn standby_probes(listener: tokio::net::TcpListener, addr: SocketAddr) -> Result<(tokio::net::TcpListener, oneshot::Sender<()>, JoinHandle<()>), ServerError> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let both = listener.into_std().and_then(|l| {
        let copy = l.try_clone()?;
        Ok((tokio::net::TcpListener::from_std(l)?, tokio::net::TcpListener::from_std(copy)?))
    });
    let (listener, copy) = both.map_err(|source| ServerError::Listen { addr, source })?;
    let waiting = || async { (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "status": "standby", "why": "waiting for the town's lock" }))) };
    let app = axum::Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok", "role": "standby" })) }))
        .route("/readyz", get(waiting))
        .fallback(waiting);
    let (done, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = rx.await;
        };
        if let Err(e) = axum::serve(copy, app).with_graceful_shutdown(stop).await {
            tracing::warn!("the standby's probes stopped: {e}");
        }
    });
    Ok((listener, done, task))
}

impl CoreHandle {
    /// Where the HTTP API listens, if it was asked for.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The work-order notices as the core publishes them (from ingest and from the API), in order.
    pub fn orders(&self) -> broadcast::Receiver<Notice> {
        self.out.subscribe()
    }

    pub fn counters(&self) -> &IngestCounters {
        &self.progress.counters
    }

    /// The number of messages taken (committed and acknowledged) so far, as a signal to wait on.
    pub fn received(&self) -> watch::Receiver<u64> {
        self.progress.received.subscribe()
    }

    /// The core itself, for reading its state while it runs.
    pub fn core(&self) -> &Arc<Mutex<Core>> {
        &self.core
    }

    /// Waits until the service stops (by itself on an error, or after [`CoreHandle::request_stop`]).
    pub async fn stopped(&mut self) -> Result<(), ServerError> {
        let Some(ingest) = self.ingest.as_mut() else { return Ok(()) };
        let r = match ingest.await {
            Ok(r) => r.map_err(ServerError::from),
            Err(e) => Err(ServerError::Task("ingest", e.to_string())),
        };
        self.ingest = None;
        r
    }

    /// Asks the service to stop without waiting (for a signal handler).
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops ingest (the batch in hand is committed and acknowledged first) and the API, and returns the
    /// core with everything it committed.
    pub async fn shutdown(self) -> Result<Core, ServerError> {
        let CoreHandle { core, stop, ingest, http, .. } = self;
        stop.send_replace(true);
        let ended = match ingest {
            Some(task) => match task.await {
                Ok(r) => r.map_err(ServerError::from),
                Err(e) => Err(ServerError::Task("ingest", e.to_string())),
            },
            // Already reaped by `stopped`, which reported its result.
            None => Ok(()),
        };
        if let Some(h) = http {
            // Graceful: requests in flight finish, then the server drops its hold on the core.
            // A client that keeps a connection open past the stop is cut off after a while.
            let mut h = h;
            match tokio::time::timeout(Duration::from_secs(10), &mut h).await {
                Ok(r) => r.map_err(|e| ServerError::Task("HTTP API", e.to_string()))?,
                Err(_) => {
                    tracing::warn!("the HTTP API still had connections open 10 s after the stop: closing them");
                    h.abort();
                    let _ = h.await;
                }
            }
        }
        ended?;
        // Another task may hold the core for a moment (a drill's panel upgrades its weak hold for the one
        // request it serves): the stop waits for it, a while, rather than fail.
        let mut core = core;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let core = loop {
            match Arc::try_unwrap(core) {
                Ok(c) => break c,
                Err(held) if tokio::time::Instant::now() < deadline => {
                    core = held;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => return Err(ServerError::StillHeld),
            }
        };
        core.into_inner().map_err(|_| ServerError::Poisoned)
    }
}
