//! RFC 9457 problem details: the one error envelope of the API.
//!
//! Every error the server sends is `application/problem+json` with a stable `code` from
//! [`codes`]. Clients branch on `code`, never on `title` or `detail`. 5xx bodies never carry
//! internals: the cause is logged with the request id, which the body repeats.

use crate::request_id;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use trueline_core::DomainError;
use trueline_core::validation::FieldError;
use trueline_store::StoreError;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One documented error: its stable code, HTTP status and human title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: &'static str,
    pub status: StatusCode,
    pub title: &'static str,
}

macro_rules! error_codes {
    ($($name:ident = ($code:literal, $status:ident, $title:literal);)*) => {
        /// Every error code the API can return.
        pub mod codes {
            use super::ErrorCode;
            use axum::http::StatusCode;
            $(pub const $name: ErrorCode =
                ErrorCode { code: $code, status: StatusCode::$status, title: $title };)*
            /// All codes, for the README table and the OpenAPI description.
            pub const ALL: &[ErrorCode] = &[$($name),*];
        }
    };
}

error_codes! {
    BAD_REQUEST = ("bad_request", BAD_REQUEST, "The request is malformed");
    MALFORMED_JSON = ("malformed_json", BAD_REQUEST, "Request body is not valid JSON");
    VALIDATION_FAILED = ("validation_failed", BAD_REQUEST, "Request failed validation");
    INVALID_CURSOR = ("invalid_cursor", BAD_REQUEST, "Pagination cursor is invalid");
    INSUFFICIENT_QUANTITY = ("insufficient_quantity", BAD_REQUEST, "Quantity would go below zero");
    QUANTITY_OVERFLOW = ("quantity_overflow", BAD_REQUEST, "Quantity would exceed 2^53-1");
    INVALID_IMPORT = ("invalid_import", BAD_REQUEST, "The file cannot be imported");
    ADJUSTMENTS_REJECTED = ("adjustments_rejected", BAD_REQUEST, "Some adjustments cannot be applied");
    UNAUTHENTICATED = ("unauthenticated", UNAUTHORIZED, "Authentication required");
    INVALID_TOKEN = ("invalid_token", UNAUTHORIZED, "Token is invalid or revoked");
    TOKEN_EXPIRED = ("token_expired", UNAUTHORIZED, "Token has expired");
    INVALID_CREDENTIALS = ("invalid_credentials", UNAUTHORIZED, "Email or password is wrong");
    INSUFFICIENT_ROLE = ("insufficient_role", FORBIDDEN, "Your role does not allow this");
    NOT_FOUND = ("not_found", NOT_FOUND, "Not found");
    METHOD_NOT_ALLOWED = ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed");
    EMAIL_TAKEN = ("email_taken", CONFLICT, "Email is already registered");
    ALREADY_MEMBER = ("already_member", CONFLICT, "User is already a member");
    LAST_OWNER = ("last_owner", CONFLICT, "An organization must keep at least one owner");
    NAME_TAKEN = ("name_taken", CONFLICT, "The name is already used");
    IDEMPOTENCY_KEY_IN_USE = ("idempotency_key_in_use", CONFLICT, "Idempotency key is in use");
    IDEMPOTENCY_KEY_OTHER_TOKEN = ("idempotency_key_other_token", CONFLICT, "The stored response is sealed to another token");
    PRECONDITION_FAILED = ("precondition_failed", PRECONDITION_FAILED, "If-Match does not match the current version");
    IDEMPOTENCY_KEY_REUSED = ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "Idempotency key was used for another request");
    PRECONDITION_REQUIRED = ("precondition_required", PRECONDITION_REQUIRED, "If-Match is required");
    NOT_EDITABLE = ("not_editable", CONFLICT, "Only a draft can be edited");
    ACTIVE_ASSESSMENT_LIMIT = ("active_assessment_limit", CONFLICT, "Too many published assessments");
    ALREADY_SUBMITTED = ("already_submitted", CONFLICT, "Already submitted");
    DEADLINE_PASSED = ("deadline_passed", CONFLICT, "The time limit has passed");
    ANSWERS_CHANGED = ("answers_changed", CONFLICT, "The saved answers changed");
    ALREADY_INVITED = ("already_invited", CONFLICT, "This email is already invited");
    INVITE_EXPIRED = ("invite_expired", GONE, "The invite has expired");
    EVENTS_DROPPED = ("events_dropped", GONE, "Retention dropped events after this position");
    POSITION_AHEAD = ("position_ahead", CONFLICT, "The position is past the organization's last event");
    INVALID_TRANSITION = ("invalid_transition", CONFLICT, "The current state does not allow this transition");
    WRONG_EXPECTED_VERSION = ("wrong_expected_version", CONFLICT, "The stream is not at the expected version");
    EVENT_ID_CONFLICT = ("event_id_conflict", CONFLICT, "The event id exists with different content");
    EVENT_TOO_LARGE = ("event_too_large", PAYLOAD_TOO_LARGE, "The event is too large");
    STORAGE_FULL = ("storage_full", INSUFFICIENT_STORAGE, "The event log's disk is full");
    PAYLOAD_TOO_LARGE = ("payload_too_large", PAYLOAD_TOO_LARGE, "Request body is too large");
    URI_TOO_LONG = ("uri_too_long", URI_TOO_LONG, "The request target is too long");
    REQUEST_HEAD_TOO_LARGE = ("request_head_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE, "The request head is too large");
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Unsupported content type");
    RATE_LIMITED = ("rate_limited", TOO_MANY_REQUESTS, "Too many requests");
    TOO_MANY_SUBSCRIPTIONS = ("too_many_subscriptions", TOO_MANY_REQUESTS, "Too many open event subscriptions");
    INTERNAL_ERROR = ("internal_error", INTERNAL_SERVER_ERROR, "Internal server error");
    DEPENDENCY_UNAVAILABLE = ("dependency_unavailable", SERVICE_UNAVAILABLE, "A dependency is unavailable");
    OVERLOADED = ("overloaded", SERVICE_UNAVAILABLE, "The server is at capacity");
    TIMEOUT = ("timeout", SERVICE_UNAVAILABLE, "The request took too long");
    REQUEST_TIMEOUT = ("request_timeout", REQUEST_TIMEOUT, "The request body did not arrive in time");
}

/// The wire shape of a problem (also the OpenAPI schema).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `code` identifies the problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable error code (see the error-code table).
    pub code: String,
    /// The request id, also in the `X-Request-Id` header.
    pub request_id: String,
    /// Every failing field, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// For `wrong_expected_version`: the stream's current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ProblemField {
    /// JSON pointer of the field (`/delta`, `/adjustments/2/item_id`).
    pub field: String,
    pub code: String,
    pub detail: String,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Extra response headers (`Retry-After`, …), boxed to keep the error small to move.
    pub headers: Option<Box<Vec<(HeaderName, HeaderValue)>>>,
    pub current_version: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            headers: None,
            current_version: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        Self {
            errors,
            ..Self::new(codes::VALIDATION_FAILED, detail)
        }
    }

    pub fn field(field: &str, code: &'static str, detail: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, code, detail)])
    }

    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers
                .get_or_insert_with(Default::default)
                .push((name, value));
        }
        self
    }

    pub fn retry_after(self, seconds: u64) -> Self {
        self.with_header(header::RETRY_AFTER, &seconds.to_string())
    }

    /// 500 with nothing internal in the body; `cause` goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(event = "error.unhandled", error = %cause, "unhandled error");
        Self::new(
            codes::INTERNAL_ERROR,
            "the server failed; report the request id",
        )
    }

    pub fn to_problem(&self) -> Problem {
        Problem {
            kind: "about:blank".into(),
            title: self.code.title.into(),
            status: self.code.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.code.into(),
            request_id: request_id::current(),
            errors: self
                .errors
                .iter()
                .map(|e| ProblemField {
                    field: e.field.clone(),
                    code: e.code.into(),
                    detail: e.detail.clone(),
                })
                .collect(),
            current_version: self.current_version,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_problem()).unwrap_or_default();
        let mut response = (self.code.status, body).into_response();
        for (name, value) in self.headers.into_iter().flat_map(|h| *h) {
            response.headers_mut().insert(name, value);
        }
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.code.status == StatusCode::UNAUTHORIZED
            && !response.headers().contains_key(header::WWW_AUTHENTICATE)
        {
            // RFC 6750 §3: a token that was sent and refused says so (`invalid_token`, with
            // expired ones); a request without one gets the challenge only.
            let challenge =
                if self.code == codes::INVALID_TOKEN || self.code == codes::TOKEN_EXPIRED {
                    "Bearer realm=\"trueline\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"trueline\""
                };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Validation(errors) => ApiError::validation(errors),
            DomainError::NotFound(what) => {
                ApiError::new(codes::NOT_FOUND, format!("{what} not found"))
            }
            e @ DomainError::InsufficientRole { required, actual } => {
                // Refusals decided inside a store's transaction (an admin touching an owner,
                // a role change the caller may not make); `Principal::require` logs its own
                // with the caller's ids.
                tracing::info!(
                    event = "auth.denied",
                    role = %actual,
                    required = %required,
                );
                ApiError::new(codes::INSUFFICIENT_ROLE, e.to_string())
            }
            e @ DomainError::EmailTaken => ApiError::new(codes::EMAIL_TAKEN, e.to_string()),
            e @ DomainError::AlreadyMember => ApiError::new(codes::ALREADY_MEMBER, e.to_string()),
            e @ DomainError::LastOwner => ApiError::new(codes::LAST_OWNER, e.to_string()),
            e @ DomainError::InvalidCredentials => {
                ApiError::new(codes::INVALID_CREDENTIALS, e.to_string())
            }
            e @ DomainError::NameTaken { .. } => ApiError::new(codes::NAME_TAKEN, e.to_string()),
            e @ DomainError::InsufficientQuantity { .. } => {
                ApiError::new(codes::INSUFFICIENT_QUANTITY, e.to_string())
            }
            e @ DomainError::QuantityOverflow { .. } => {
                ApiError::new(codes::QUANTITY_OVERFLOW, e.to_string())
            }
            e @ DomainError::VersionMismatch { .. } => {
                ApiError::new(codes::PRECONDITION_FAILED, e.to_string())
            }
            e @ DomainError::IdempotencyKeyReused => {
                ApiError::new(codes::IDEMPOTENCY_KEY_REUSED, e.to_string())
            }
            e @ DomainError::IdempotencyKeyInUse => {
                ApiError::new(codes::IDEMPOTENCY_KEY_IN_USE, e.to_string()).retry_after(1)
            }
            e @ DomainError::NotEditable { .. } => {
                ApiError::new(codes::NOT_EDITABLE, e.to_string())
            }
            e @ DomainError::ActiveAssessmentLimit { .. } => {
                ApiError::new(codes::ACTIVE_ASSESSMENT_LIMIT, e.to_string())
            }
            e @ DomainError::AlreadySubmitted => {
                ApiError::new(codes::ALREADY_SUBMITTED, e.to_string())
            }
            e @ DomainError::DeadlinePassed => ApiError::new(codes::DEADLINE_PASSED, e.to_string()),
            e @ DomainError::AnswersChanged => ApiError::new(codes::ANSWERS_CHANGED, e.to_string()),
            e @ DomainError::InviteExpired => ApiError::new(codes::INVITE_EXPIRED, e.to_string()),
            e @ DomainError::AlreadyInvited => ApiError::new(codes::ALREADY_INVITED, e.to_string()),
            e @ DomainError::InvalidTransition { .. } => {
                ApiError::new(codes::INVALID_TRANSITION, e.to_string())
            }
            DomainError::AdjustmentsRejected(lines) => {
                let detail = format!(
                    "{} adjustment line(s) cannot be applied; nothing was applied",
                    lines.len()
                );
                let errors = lines
                    .iter()
                    .map(|line| {
                        let code = ApiError::from(line.error.clone()).code.code;
                        let field = match &line.error {
                            DomainError::NotFound(_) => {
                                format!("/adjustments/{}/item_id", line.index)
                            }
                            _ => format!("/adjustments/{}/delta", line.index),
                        };
                        FieldError::new(field, code, line.error.to_string())
                    })
                    .collect();
                ApiError {
                    errors,
                    ..ApiError::new(codes::ADJUSTMENTS_REJECTED, detail)
                }
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(e) => e.into(),
            StoreError::Unavailable(cause) => {
                tracing::warn!(event = "error.db", error = %cause, "database unavailable");
                ApiError::new(
                    codes::DEPENDENCY_UNAVAILABLE,
                    "the database is unavailable; retry later",
                )
                .retry_after(1)
            }
            StoreError::Internal(cause) => {
                tracing::error!(event = "error.db", error = %cause, "database error");
                ApiError::new(
                    codes::INTERNAL_ERROR,
                    "the server failed; report the request id",
                )
            }
        }
    }
}

/// The problem for a status produced outside our handlers (axum's 405, a layer's 413, …).
pub fn for_status(status: StatusCode) -> ApiError {
    // The only layer that answers 503 by itself is the request timeout.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return ApiError::new(
            codes::TIMEOUT,
            "the request took longer than the server allows; a change it was making may \
             still have been committed, so retry it with the same Idempotency-Key",
        )
        .retry_after(1);
    }
    // Generic codes only: the first code of the same status would name a domain error
    // (`malformed_json` for a bad path parameter, `event_too_large` for any 413, …).
    let code = match status {
        StatusCode::BAD_REQUEST => codes::BAD_REQUEST,
        StatusCode::NOT_FOUND => codes::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED => codes::METHOD_NOT_ALLOWED,
        StatusCode::PAYLOAD_TOO_LARGE => codes::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => codes::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::TOO_MANY_REQUESTS => codes::RATE_LIMITED,
        StatusCode::INTERNAL_SERVER_ERROR => codes::INTERNAL_ERROR,
        _ => ErrorCode {
            code: "http_error",
            status,
            title: "HTTP error",
        },
    };
    let detail = match status {
        StatusCode::NOT_FOUND => "no route matches this path".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => {
            "see the Allow header for the methods of this path".to_owned()
        }
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    ApiError::new(code, detail)
}

/// The problem for a request head the HTTP layer could not read, by the status hyper gave
/// it (`400`, `414`, `431`); `None` for any other status.
pub fn for_unreadable_head(status: StatusCode) -> Option<ApiError> {
    let (code, detail) = match status {
        StatusCode::BAD_REQUEST => (
            codes::BAD_REQUEST,
            "the request line or a header could not be read as HTTP/1.x",
        ),
        StatusCode::URI_TOO_LONG => (codes::URI_TOO_LONG, "the request target is too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            codes::REQUEST_HEAD_TOO_LARGE,
            "the request line and headers are larger than the server takes \
             (server.max_request_head_bytes) or number more than 100 headers",
        ),
        _ => return None,
    };
    Some(ApiError::new(code, detail))
}

#[cfg(test)]
mod tests {
    use super::codes;

    #[test]
    fn the_readme_documents_every_error_code_with_its_status() {
        let readme = include_str!("../../../README.md");
        for code in codes::ALL {
            let row = format!("| `{}` | {} |", code.code, code.status.as_u16());
            assert!(readme.contains(&row), "README lacks the row {row}");
        }
    }
}
