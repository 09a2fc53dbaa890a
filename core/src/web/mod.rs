//! The core's web side: the HTTP JSON API ([`api`]), the operators' web console ([`console`]) and the
//! metrics and probes ([`ops`]) beside it, over one state ([`Api`]); the HTML escape and the cookie and Origin checks every page shares
//! ([`html`], also the drill controller's panel's).

pub mod api;
pub mod console;
pub mod html;
pub mod i18n;
pub mod ops;
mod state;

use axum::Router;

pub use self::state::Api;

/// The JSON API and the console, with the body limit of both.
pub fn router(api: Api) -> Router {
    api::routes(api.clone())
        .merge(ops::routes(api.clone()))
        .merge(console::router(api))
        .layer(axum::extract::DefaultBodyLimit::max(crate::limits::API_MAX_BODY))
}
