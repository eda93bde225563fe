//! The HTTP listener: REST API, HTTP ingest, SQL, health and Prometheus metrics.
//!
//! Place on the data path: a **transport**. Ingest handlers ask `Identity` who the device is,
//! decode with `corral-ingest`, and hand the batch to the pipeline's [`Sink`]; they return 2xx only
//! after the sink said the data is durable. Query handlers call a [`SqlService`]; operations
//! metrics come from a [`MetricsSource`]. Management routes hold the rooms through their traits
//! (`Arc<dyn corral_registry::Registry>`, `Arc<dyn corral_rules::RulesService>`,
//! `Arc<dyn corral_pki::Pki>`), never their concrete types. This crate never touches storage
//! directly.
//!
//! Routes: each module mounts its own through the `openapi` module's builder, which records each one's
//! description (parameters, bodies, answers, errors, who may call it) as it mounts it, so the
//! OpenAPI 3.1 document at `GET /api/v1/openapi.json` (and [`openapi()`]) lists every route the
//! router serves. Errors are always `{"error": "..."}` with the status that fits. In short:
//! devices and their credentials (`/api/v1/devices`, CSV import and export, tokens, PSKs,
//! certificates, CAs, approval of just-in-time registrations), live readings (SSE), tracked
//! commands and command jobs, twins and profile defaults, ingest (`/api/v1/ingest`, InfluxDB's
//! `/write` and `/api/v2/write`), SQL (`/api/v1/query`), streamed exports and scheduled ones,
//! retention, rollups and deleting a device's data, API tokens, profiles, tenants, audit, rules,
//! alarms and the outbox, broker users, console users, firmware artifacts and campaigns;
//! `GET /healthz`, `/readyz`, `/metrics`; `GET /mqtt` (MQTT over WebSocket, handed to a
//! [`MqttOverWebSocket`]). Every other path goes to the console's pages.

mod admin;
mod artifacts;
mod auth;
mod body;
mod broker_users;
mod campaigns;
mod certificates;
mod command_jobs;
mod commands;
mod data;
mod device_commands;
mod devices;
mod devices_csv;
mod encode;
mod error;
mod export;
mod exports;
mod extract;
mod ingest;
mod line_protocol;
mod live;
mod mqtt_ws;
mod openapi;
mod ops;
mod profile_twin;
mod query;
mod rules;
mod twin;
mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use corral_ingest::Sink;
use corral_ingest::decode::Limits;
use corral_registry::Registry;
use corral_services::{Commands, Identity, MetricsSource, OnlineStatus, SqlService};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use auth::{CSRF_HEADER, ClientCertificate, OverTls, SESSION_COOKIE, constant_time_eq, cookie};
pub use error::ApiError;
pub use live::{LiveFeed, Reading};
pub use mqtt_ws::MqttOverWebSocket;
pub use ops::HttpMetrics;

#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    pub query_timeout: Duration,
    /// Most rows a JSON query answer carries; `"truncated": true` says more matched.
    pub max_query_rows: usize,
    pub decode: Limits,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 16 << 20,
            query_timeout: Duration::from_secs(30),
            max_query_rows: 100_000,
            decode: Limits::default(),
        }
    }
}

/// Everything handlers share. Cloned per request (all fields are handles).
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<dyn Registry>,
    /// Who a device credential is (ingest); management requests still ask the registry.
    pub identity: Arc<dyn Identity>,
    /// Commands to devices, whatever door they use.
    pub commands: Arc<dyn Commands>,
    pub sink: Arc<dyn Sink>,
    pub sql: Arc<dyn SqlService>,
    pub metrics_sources: Vec<Arc<dyn MetricsSource>>,
    pub http_metrics: Arc<HttpMetrics>,
    pub limits: HttpLimits,
    /// False until start-up (WAL replay, migrations) is done, and again while shutting down.
    pub ready: Arc<AtomicBool>,
    /// `GET /mqtt` hands WebSocket connections here; `None` when MQTT is off.
    pub mqtt_ws: Option<Arc<dyn MqttOverWebSocket>>,
    /// Rules, alarms and the outbox.
    pub rules: Arc<dyn corral_rules::RulesService>,
    pub online: Arc<dyn OnlineStatus>,
    /// The tenants' certificate authorities.
    pub authorities: Arc<dyn corral_pki::Pki>,
    /// Readings as they become durable, for live views (register it as a pipeline observer).
    pub live: LiveFeed,
    /// Device twins (desired, reported, delta); the HTTP door reads and patches them.
    pub twins: Arc<dyn corral_twin::TwinStore>,
    /// Tracked commands: created here, followed to the device's answer, polled by HTTP devices.
    pub tracker: corral_commands::Tracker,
    /// Firmware artifacts and campaigns.
    pub rollouts: corral_campaigns::Rollouts,
    /// Retention, rollups and deleting a device's data.
    pub lifecycle: Arc<dyn corral_services::DataLifecycle>,
    /// Scheduled exports.
    pub exports: Arc<dyn corral_exports::ExportBook>,
}

/// The HTTP routes; `pages` (the web console) are served beside them, under the same request
/// metrics and limits.
pub fn router(state: AppState, pages: Router) -> Router {
    let (api, document) = api().finish();
    // The document of the very routes mounted here, rendered once and served as is.
    let document = ops::OpenApiDocument(document.to_string().into());
    api.fallback_service(pages.fallback(ops::not_found))
        .layer(axum::Extension(document))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ops::count_requests))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
}

/// The OpenAPI 3.1 document of every route [`router`] serves (`GET /api/v1/openapi.json`).
pub fn openapi() -> serde_json::Value {
    api().finish().1
}

/// Every route, each module adding its own with their descriptions.
fn api() -> openapi::Api {
    let modules: [fn(openapi::Api) -> openapi::Api; 23] = [
        devices::routes,
        devices_csv::routes,
        live::routes,
        commands::routes,
        device_commands::routes,
        command_jobs::routes,
        twin::routes,
        certificates::routes,
        ingest::routes,
        query::routes,
        export::routes,
        data::routes,
        exports::routes,
        admin::routes,
        profile_twin::routes,
        rules::routes,
        broker_users::routes,
        users::routes,
        artifacts::routes,
        campaigns::routes,
        line_protocol::routes,
        ops::routes,
        mqtt_ws::routes,
    ];
    modules.into_iter().fold(openapi::Api::new(), |api, add| add(api))
}
