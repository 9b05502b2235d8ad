//! Operational endpoints at the root: `/livez`, `/readyz`, `/metrics`.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `application/health+json` (draft-inadarei-api-health-check).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `pass`, `warn` or `fail`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, Vec<HealthCheck>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthCheck {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

fn health_response(status: StatusCode, health: Health) -> Response {
    let body = serde_json::to_vec(&health).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/health+json")],
        body,
    )
        .into_response()
}

/// The process is alive (no dependencies are checked).
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "Alive", body = Health, content_type = "application/health+json")))]
async fn livez() -> Response {
    health_response(
        StatusCode::OK,
        Health {
            status: "pass",
            checks: BTreeMap::new(),
        },
    )
}

/// Ready to serve: the database answers and the server is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready (pass or warn)", body = Health, content_type = "application/health+json"),
              (status = 503, description = "Not ready", body = Health, content_type = "application/health+json")))]
async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    // Both checks at once, each within its own bound: the event log's on PostgreSQL had
    // none, and a database that stopped answering held `/readyz` until the request timeout,
    // which answered a `timeout` problem instead of this document's `fail`.
    let (db, events) = tokio::join!(
        state.store.health(),
        tokio::time::timeout(READY_CHECK_TIMEOUT, state.events.health()),
    );
    let events = events.unwrap_or_else(|_| Err("did not answer within 2s".to_owned()));
    // What failed is logged, not shown: `/readyz` answers anyone, and a driver's error
    // names hosts, users and databases.
    if !db.ok {
        tracing::warn!(event = "server.not_ready", check = "database", error = %db.detail);
    }
    if let Err(e) = &events {
        tracing::warn!(event = "server.not_ready", check = "eventlog", error = %e);
    }
    checks.insert(
        format!("{}:connections", state.store.backend()),
        vec![HealthCheck {
            status: if db.ok { "pass" } else { "fail" },
            output: (!db.ok).then(|| "the database is unavailable (see the log)".to_owned()),
        }],
    );
    let draining = state.is_draining();
    checks.insert(
        "server:draining".to_owned(),
        vec![HealthCheck {
            status: if draining { "fail" } else { "pass" },
            output: draining.then(|| "shutting down".to_owned()),
        }],
    );
    checks.insert(
        "eventlog:writer".to_owned(),
        vec![HealthCheck {
            status: if events.is_ok() { "pass" } else { "fail" },
            output: events
                .is_err()
                .then(|| "the event log is unavailable (see the log)".to_owned()),
        }],
    );
    let lag_ms = state
        .outbox_lag_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let lagging = u128::from(lag_ms) > state.outbox_lag_warn.as_millis();
    checks.insert(
        "outbox:lag".to_owned(),
        vec![HealthCheck {
            status: if lagging { "warn" } else { "pass" },
            output: lagging.then(|| format!("oldest unpublished change is {} ms old", lag_ms)),
        }],
    );
    let failed = checks.values().flatten().any(|c| c.status == "fail");
    let warned = checks.values().flatten().any(|c| c.status == "warn");
    let status = if failed {
        "fail"
    } else if warned {
        "warn"
    } else {
        "pass"
    };
    let code = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = health_response(code, Health { status, checks });
    if failed {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    response
}

/// How long `/readyz` waits for the event log's check (the store's has its own bound).
const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (idle, in_use) = state.store.pool_stats();
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(f64::from(in_use));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        (state.metrics)(),
    )
}

#[allow(dead_code)]
fn _assert_json_is_used(_: Json<()>) {}
