//! Trueline's HTTP transport (axum): one router per module, extractors whose rejections are
//! problem+json, the error → problem mapping, the observability middleware and the OpenAPI
//! document. Handlers parse and authorize, then call ONE store operation per mutation; the
//! business rules live in `trueline-core` and the adapters.
//!
//! Layers, outermost first: [`observe`] (request id, log line, latency histogram, problem
//! bodies for every error) → catch-panic → request timeout → body limit → routes.

pub mod accounts;
pub mod assessments;
pub mod auth;
pub mod body_read;
pub mod candidates;
pub mod combiner;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod inventory;
pub mod limits;
pub mod observe;
pub mod openapi;
pub mod pagination;
pub mod platform;
pub mod problem;
pub mod request_id;
pub mod slots;
pub mod state;
pub mod strict_json;
pub mod unread_body;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use state::AppState;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use state::{AppState as State, HttpSettings};

/// Body limit of the question import: the 5 MiB spreadsheet plus multipart framing.
pub const IMPORT_BODY_LIMIT_BYTES: usize = 6 * 1024 * 1024;

/// The API routes and the finished OpenAPI document. `events_body_limit`: the body limit of
/// the event routes (batches of up to 1000 events are larger than other requests).
pub fn api(events_body_limit: usize) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let served = idempotency::Served::default();
    let layer_served = served.clone();
    let authenticated = accounts::router()
        .merge(inventory::router())
        .merge(webhooks::router())
        .merge(assessments::router())
        .merge(assessments::import_router().layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT_BYTES)))
        .route_layer(axum::middleware::from_fn(move |request, next| {
            idempotency::layer(layer_served.clone(), request, next)
        }));
    // Events are made idempotent by client-chosen event ids (kept forever), not by keys.
    let events = events::router().layer(DefaultBodyLimit::max(events_body_limit));
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .nest(
            API_PREFIX,
            accounts::public_router()
                .merge(candidates::router())
                .merge(authenticated)
                .merge(accounts::password_router())
                .merge(events),
        )
        .merge(platform::router())
        .split_for_parts();
    let api = openapi::finalize(api);
    idempotency::record_served(&served, &api);
    (router, api)
}

/// Where the API's routes are nested.
pub const API_PREFIX: &str = "/api/v1";

/// The complete application: routes, docs, fallbacks and middleware.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The application with `extra` routes under the same middleware (tests use it to mount
/// routes that panic or stall, to prove the layers contain them).
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let (router, api) = api(state.settings.events_body_limit_bytes);
    let router = router.merge(extra);
    let timeout = state.settings.request_timeout;
    let body_limit = state.settings.body_limit_bytes;
    router
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", api))
        .fallback(|| async { problem::for_status(StatusCode::NOT_FOUND) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(observe::panic_response))
        .layer(axum::middleware::from_fn(unread_body::layer))
        .layer(axum::middleware::from_fn(limits::layer))
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(axum::Extension(state.clone()))
        .with_state(state)
}
