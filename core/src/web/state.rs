//! The web side's state: the core, the town's committees and map, where the API's transitions are
//! published, and the stop signal; shared by the JSON API ([`super::api`]) and the console
//! ([`super::console`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::notices::OrdersOut;
use crate::orders::Order;
use crate::principal::Scope;
use crate::service::Core;
use crate::town::Town;

#[derive(Clone)]
pub struct Api {
    pub core: Arc<Mutex<Core>>,
    /// Estate id -> committee id.
    committees: Arc<HashMap<String, String>>,
    /// The town (for the console's map).
    town: Arc<Town>,
    /// Where the transitions made through the API are published (the ingest service's connection).
    orders_out: Option<OrdersOut>,
    /// Stops the service when the core's lock is found poisoned.
    stop: Option<tokio::sync::watch::Sender<bool>>,
    /// The ingest's counters, for the metrics and the probes (`None`: no ingest, as in tests of the API).
    progress: Option<Arc<crate::ingest::Progress>>,
}

impl Api {
    pub fn new(core: Arc<Mutex<Core>>, town: &Town) -> Api {
        let committees = town.estates.iter().map(|e| (e.id.clone(), e.committee.clone())).collect();
        Api { core, committees: Arc::new(committees), town: Arc::new(town.clone()), orders_out: None, stop: None, progress: None }
    }

    /// Stops the service (through this signal) if a request finds the core's lock poisoned.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Sender<bool>) -> Api {
        self.stop = Some(stop);
        self
    }

    /// The core, or 503 if a panic poisoned its lock: its state in memory can no longer be trusted, so the
    /// service is told to stop (a restart rebuilds the core from its store).
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Core>, ApiError> {
        self.core.lock().map_err(|_| {
            tracing::error!("the core's lock is poisoned: stopping the service");
            if let Some(stop) = &self.stop {
                stop.send_replace(true);
            }
            ApiError(StatusCode::SERVICE_UNAVAILABLE, "the core stopped after an internal failure; it must be restarted".into())
        })
    }

    /// Reports the ingest's counters in the metrics and the probes.
    pub fn with_progress(mut self, progress: Arc<crate::ingest::Progress>) -> Api {
        self.progress = Some(progress);
        self
    }

    pub(crate) fn progress(&self) -> Option<&crate::ingest::Progress> {
        self.progress.as_deref()
    }

    /// Publishes the transitions made through the API on `orders/...`, on the ingest service's publishing connection.
    pub fn with_orders_out(mut self, out: OrdersOut) -> Api {
        self.orders_out = Some(out);
        self
    }

    pub(crate) fn sees(&self, scope: &Scope, o: &Order) -> bool {
        scope.reaches(&o.area, self.committee_of(&o.area))
    }

    /// The committee of an estate (`None` for a road or an unknown area).
    pub(crate) fn committee_of(&self, area: &str) -> Option<&str> {
        self.committees.get(area).map(String::as_str)
    }

    pub(crate) fn orders_out(&self) -> Option<&OrdersOut> {
        self.orders_out.as_ref()
    }

    pub(crate) fn town(&self) -> &Town {
        &self.town
    }

    /// Resolves once the service is told to stop (never, for an API without a stop signal): long-lived
    /// responses (the console's event stream) end then, so a graceful shutdown does not wait on them.
    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = self.stop.as_ref().map(|s| s.subscribe());
        async move {
            match rx {
                Some(mut rx) => {
                    let _ = rx.wait_for(|&stop| stop).await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
}

pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}
