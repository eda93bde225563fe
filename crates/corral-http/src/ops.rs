//! Operations: liveness, readiness, Prometheus metrics, and the per-status request counter.

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::{Api, Auth, Operation};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use corral_model::ErrorKind;
use corral_services::metrics::Exposition;
use std::sync::atomic::{AtomicU64, Ordering};

const TAG: &str = "operations";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/healthz",
        healthz,
        Operation::new(TAG, "Liveness: the process answers").auth(Auth::Anyone).returns::<Health>(200, "Alive"),
    )
    .get(
        "/readyz",
        readyz,
        Operation::new(TAG, "Readiness: start-up (WAL replay, migrations) is done and it is not shutting down")
            .auth(Auth::Anyone)
            .returns::<Health>(200, "Ready"),
    )
    .get(
        "/metrics",
        metrics,
        Operation::new(TAG, "Prometheus metrics").auth(Auth::Anyone).returns_raw(
            200,
            "text/plain",
            "The Prometheus text exposition format, version 0.0.4",
        ),
    )
    .get(
        "/api/v1/openapi.json",
        openapi,
        Operation::new(TAG, "This document").auth(Auth::Anyone).returns_raw(200, "application/json", "OpenAPI 3.1"),
    )
}

#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    status: &'static str,
}

/// HTTP requests answered, by status code.
pub struct HttpMetrics {
    by_status: Vec<AtomicU64>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics { by_status: (0..600).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl HttpMetrics {
    pub fn record(&self, status: StatusCode) {
        if let Some(counter) = self.by_status.get(status.as_u16() as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self, out: &mut String) {
        let mut e = Exposition::new(out);
        let mut requests = e.family("corral_http_requests_total", "HTTP requests answered, by status code.", "counter");
        for (status, counter) in self.by_status.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                requests.sample(&[("status", &status.to_string())], n);
            }
        }
    }
}

pub async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.http_metrics.record(response.status());
    response
}

pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        axum::Json(Health { status: "ready" }).into_response()
    } else {
        ApiError::new(ErrorKind::Unavailable, "not ready: starting up or shutting down").into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    for source in &state.metrics_sources {
        source.render(&mut out);
    }
    state.http_metrics.render(&mut out);
    let mut response = out.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// The OpenAPI document of the router's routes, as JSON text (an extension of every request).
#[derive(Clone)]
pub struct OpenApiDocument(pub axum::body::Bytes);

/// This API's OpenAPI 3.1 document, generated from the code that mounts the routes.
pub async fn openapi(axum::Extension(OpenApiDocument(document)): axum::Extension<OpenApiDocument>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

pub async fn not_found(request: Request) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no route for {} {}", request.method(), request.uri().path()))
}
