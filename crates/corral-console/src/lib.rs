//! The web console, served on the HTTP listener beside the REST API: sign-in with user accounts
//! ([`signin`]), and the pages people run the platform from ([`pages`]): overview, inventory,
//! device, alarms, commands (follow them, send one), campaigns (firmware and configuration
//! rollouts), SQL, and the account page (one's password; users, for administrators).
//!
//! The pages are HTML shells with the project's own small scripts and stylesheet, embedded in the
//! binary (no CDN, nothing fetched from elsewhere: the console works without an internet
//! connection). The scripts read and change everything through the REST API with the session
//! cookie, echoing the session's CSRF token on every change; the API enforces roles and tenant
//! scope exactly as for API tokens, so the console can show no more than its user may see.

pub mod pages;
pub mod signin;
mod throttle;

use axum::Router;
use axum::routing::{get, post};
use corral_registry::Registry;
use std::sync::Arc;

/// The ports devices connect to, for the connection snippets the console prints: those of the
/// listeners actually bound (`None` when a listener is off). The host is the one the browser used.
#[derive(Clone, Copy, Debug, Default)]
pub struct DevicePorts {
    pub mqtt: Option<u16>,
    pub mqtts: Option<u16>,
    pub coap: Option<u16>,
    pub coaps: Option<u16>,
}

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    registry: Arc<dyn Registry>,
    ports: DevicePorts,
    throttle: Arc<throttle::Throttle>,
    /// Password checks running at once (argon2id takes 19 MiB each).
    hashing: Arc<tokio::sync::Semaphore>,
}

/// Password checks at once; beyond it sign-in answers 503 with Retry-After.
const CONCURRENT_SIGN_INS: usize = 8;

/// The console's routes, ready to be served beside the API ([`corral_http::router`]).
pub fn router(registry: Arc<dyn Registry>, ports: DevicePorts) -> Router {
    let console = Console {
        registry,
        ports,
        throttle: Arc::new(throttle::Throttle::default()),
        hashing: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_SIGN_INS)),
    };
    Router::new()
        .route("/login", get(signin::form).post(signin::sign_in))
        .route("/logout", post(signin::sign_out))
        .route("/", get(pages::overview))
        .route("/devices", get(pages::inventory))
        .route("/devices/{id}", get(pages::device))
        .route("/alarms", get(pages::alarms))
        .route("/commands", get(pages::commands))
        .route("/campaigns", get(pages::campaigns))
        .route("/campaigns/{id}", get(pages::campaign))
        .route("/sql", get(pages::sql))
        .route("/account", get(pages::account))
        .route("/assets/{file}", get(pages::asset))
        .route("/favicon.ico", get(pages::favicon))
        .with_state(console)
}
