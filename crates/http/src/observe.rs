//! The outermost middleware: request id, the one `http.request.completed` log line, the
//! latency histogram, and the guarantee that every error response is problem+json (axum's own
//! 404/405, a layer's 413 or timeout, a caught panic) with the request id in header and body.

use crate::problem;
use crate::request_id;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tracing::Instrument;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A response extension: this successful mutation wrote no outbox row (event appends go
/// straight to the event log), so there is nothing to wake the relay for. Without it every
/// append woke the relay for an empty round on the SQLite writer.
#[derive(Debug, Clone, Copy)]
pub struct NoOutboxRow;

/// The span every line of a request carries its `request_id` from. At level ERROR: a span
/// is filtered like an event, and one at INFO was off under `log.level = "warn"`, so the
/// very lines a 500 asks to report the request id of (`error.unhandled`, `error.db`) had
/// none. (The level only decides when the span is recorded.)
pub fn request_span(id: &str) -> tracing::Span {
    tracing::error_span!("request", request_id = %id)
}

pub async fn observe(mut request: Request, next: Next) -> Response {
    let id = request_id::accept_or_new(request.headers().get(&X_REQUEST_ID));
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let state = request.extensions().get::<crate::state::AppState>();
    let wake = state.map(|s| s.outbox_wake.clone());
    let idle = state.map_or_else(
        || crate::state::HttpSettings::default().body_read_timeout,
        |s| s.settings.body_read_timeout,
    );
    let (request, body) = {
        let (parts, body) = request.into_parts();
        let (body, progress) = crate::body_read::watch(body, idle);
        (Request::from_parts(parts, body), progress)
    };
    let span = request_span(&id);
    tracing::debug!(parent: &span, event = "http.request.started", method = %method, route = %route);
    let mut outcome = Outcome {
        span: span.clone(),
        method: method.clone(),
        route,
        started: Instant::now(),
        answered: false,
    };

    let mut response =
        request_id::scope(id.clone(), next.run(request).instrument(span.clone())).await;

    let status = response.status();
    // Errors made outside our handlers (axum's rejections and 405, a layer's 413) come as
    // plain text or without a body: those become problems. A JSON error body was made on
    // purpose (a problem, or `/readyz`'s `application/health+json` with its checks) and is
    // kept as it is.
    let is_plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if status.as_u16() >= 400 && is_plain {
        let headers = std::mem::take(response.headers_mut());
        // A request timeout that found the handler still waiting for the body: nothing
        // was changed (see `body_read`).
        let problem =
            if status == axum::http::StatusCode::SERVICE_UNAVAILABLE && body.waiting_for_body() {
                crate::body_read::timed_out_reading()
            } else {
                problem::for_status(status)
            };
        response = request_id::sync_scope(id.clone(), || problem.into_response());
        for (name, value) in headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }

    // A committed mutation has an outbox row: wake the relay.
    if response.status().is_success()
        && response.extensions().get::<NoOutboxRow>().is_none()
        && matches!(
            method,
            axum::http::Method::POST | axum::http::Method::PATCH | axum::http::Method::DELETE
        )
        && let Some(state) = wake
    {
        state.notify_one();
    }
    outcome.answered(response.status().as_u16());
    response
}

/// The `route` of a request whose head the HTTP layer could not read.
pub const UNREADABLE_HEAD_ROUTE: &str = "(unreadable head)";

/// The one log line of a request whose head the HTTP layer could not read (hyper answered
/// it before any of our code ran; see `trueline::unreadable_head`): no method or route is
/// known, nor when the head began, so the line has no `latency_ms` and the count goes to
/// `http_unreadable_heads_total` instead of the latency histogram.
pub fn unreadable_head_answered(id: &str, status: u16, code: &str) {
    let span = request_span(id);
    tracing::info!(
        parent: &span,
        event = "http.request.completed",
        method = "-",
        route = UNREADABLE_HEAD_ROUTE,
        status,
        code,
    );
    metrics::counter!("http_unreadable_heads_total", "status" => status.to_string()).increment(1);
}

/// The request's one closing log line and its latency sample. Written when the answer is
/// ready, or, if the request is dropped before that (its client went away and the
/// connection with it: hyper drops the handler's future), when it is dropped:
/// `http.request.aborted` with status 499 (nginx's "client closed request"). A write the
/// handler had sent to the database may have committed all the same; the audit trail tells.
struct Outcome {
    span: tracing::Span,
    method: axum::http::Method,
    route: String,
    started: Instant,
    answered: bool,
}

/// The status recorded for a request whose client went away before its answer.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Outcome {
    fn answered(&mut self, status: u16) {
        self.answered = true;
        self.record("http.request.completed", status);
    }

    fn record(&self, event: &'static str, status: u16) {
        let latency = self.started.elapsed();
        tracing::info!(
            parent: &self.span,
            event,
            method = %self.method,
            route = %self.route,
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
        );
        metrics::histogram!(
            "http_request_duration_seconds",
            "route" => self.route.clone(),
            "method" => method_label(&self.method),
            "status" => status.to_string(),
        )
        .record(latency.as_secs_f64());
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.answered {
            self.record("http.request.aborted", CLIENT_CLOSED_REQUEST);
        }
    }
}

/// The method as a metrics label: the standard ones by name, any other as `other`. A client
/// may send any token as a method, and every distinct label value is a series the recorder
/// keeps forever.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The body of a caught panic: a 500 problem; the panic message goes to the log only.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_owned());
    problem::ApiError::internal(format!("handler panicked: {message}")).into_response()
}
