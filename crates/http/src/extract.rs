//! Extractors whose rejections are problem+json with precise codes: JSON bodies (415, 413,
//! `malformed_json`, `validation_failed` with a JSON pointer per field), query strings, path
//! ids, and the authenticated [`Principal`].

use crate::auth::{hash_token, looks_like_token};
use crate::problem::{ApiError, codes};
use crate::state::AppState;
use crate::strict_json::ByName;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_path_to_error::{Path as ErrorPath, Segment};
use trueline_core::accounts::Role;
use trueline_core::ids::{OrgId, TokenId, UserId};
use trueline_core::validation::FieldError;

/// A JSON request body. Requires `Content-Type: application/json` (or `+json`). Integer
/// literals too wide for 64 bits are refused as out of range by the fields' own rules
/// ([`narrow_wide_integers`](crate::strict_json::narrow_wide_integers)), never read as
/// rounded doubles.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = object_body(req, state).await?;
        let narrowed = crate::strict_json::narrow_wide_integers(&bytes);
        if let std::borrow::Cow::Owned(_) = narrowed {
            // Syntax errors are reported with the positions of the body as sent.
            serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                .map_err(|e| ApiError::new(codes::MALFORMED_JSON, e.to_string()))?;
        }
        parse_json(&narrowed).map(ApiJson)
    }
}

/// The body of a JSON request: the right media type and a JSON object.
async fn object_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    require_json_content_type(req.headers())?;
    let bytes = body_bytes(req, state).await?;
    require_object(&bytes)?;
    Ok(bytes)
}

/// A JSON request body carrying client data whose numbers are kept as serde_json reads them
/// (an event's `data` and `metadata`: doubles, as documented), so no integer is narrowed.
#[derive(Debug, Clone)]
pub struct ApiJsonData<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJsonData<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        parse_json(&object_body(req, state).await?).map(ApiJsonData)
    }
}

/// The whole body, within the route's limit: `413` over it, else as `body_read` says.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                codes::PAYLOAD_TOO_LARGE,
                "the request body exceeds the size limit",
            )
        } else {
            crate::body_read::read_failed(&rejection)
        }
    })
}

/// The body of an operation that takes none: empty, or an empty JSON object. Anything else
/// is refused as a field a typed body does not know would be: a client sending options
/// (`{"dry_run": true}` to a publish) must not see them silently ignored.
#[derive(Debug, Clone, Copy)]
pub struct NoBody;

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoBody);
        }
        require_json_content_type(&headers)?;
        require_object(&bytes)?;
        let members: serde_json::Map<String, serde_json::Value> = parse_json(&bytes)?;
        if members.is_empty() {
            return Ok(NoBody);
        }
        Err(ApiError::validation(
            members
                .keys()
                .map(|name| {
                    FieldError::new(
                        format!("/{}", name.replace('~', "~0").replace('/', "~1")),
                        "unknown_field",
                        "this operation takes no body (send none, or {})",
                    )
                })
                .collect(),
        ))
    }
}

/// Every request body is a JSON object. serde's derived structs also take an array, matched
/// to the fields by position (`["Milk", 5]` made an item) with no field name checked, and
/// other values got errors naming internal types.
fn require_object(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::new(codes::MALFORMED_JSON, e.to_string()))?;
    Err(ApiError::validation(vec![FieldError::new(
        "",
        "invalid_type",
        "the body must be a JSON object",
    )]))
}

/// A body in a content coding (`gzip`, …) is refused: nothing here decodes one, and reading
/// its bytes as they are would take a compressed body for JSON (or JSON sent with a wrong
/// header for something it is not).
pub fn refuse_content_coding(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let coded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        !v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
    });
    if coded {
        return Err(ApiError::new(
            codes::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding is not supported: send the body uncompressed",
        ));
    }
    Ok(())
}

pub fn require_json_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    refuse_content_coding(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_json = content_type.is_some_and(|ct| {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            codes::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "expected Content-Type: application/json, got {}",
                content_type.unwrap_or("none")
            ),
        ))
    }
}

/// Parses JSON, turning serde's errors into problems with the failing field's JSON pointer.
/// Every struct must be a JSON object, at every level ([`ByName`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The common case, a valid body, in one plain parse: the path tracking and the syntax
    // pass below are only needed to explain a refusal precisely (they were ~4 % of the
    // server's CPU per event append when run on every body).
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    if let Ok(value) = T::deserialize(ByName(&mut deserializer))
        && deserializer.end().is_ok()
    {
        return Ok(value);
    }
    // Syntax first, without building anything: a truncated document must be reported as
    // malformed, not as whichever field the typed parse happened to be missing.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::new(codes::MALFORMED_JSON, e.to_string()))?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(ByName(&mut deserializer)).map_err(|e| {
        let path = pointer(e.path());
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::validation(vec![data_error(&path, &inner)])
            }
            _ => ApiError::new(codes::MALFORMED_JSON, inner.to_string()),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::new(codes::MALFORMED_JSON, e.to_string()))?;
    Ok(value)
}

fn pointer(path: &ErrorPath) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        out.push('/');
        match segment {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// Classifies a serde data error by its message. Our own deserializers report
/// `[code] detail`; serde's built-in messages have fixed prefixes.
fn data_error(path: &str, e: &serde_json::Error) -> FieldError {
    let full = e.to_string();
    // serde_json appends " at line L column C"; the pointer says where, so drop it.
    let message = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m)
        .to_owned();
    let backticked = || message.split('`').nth(1).unwrap_or("").to_owned();
    if let Some(rest) = message.strip_prefix('[')
        && let Some((code, detail)) = rest.split_once("] ")
    {
        let code = CUSTOM_CODES
            .iter()
            .find(|c| **c == code)
            .copied()
            .unwrap_or("invalid_value");
        return FieldError::new(path, code, detail);
    }
    if message.starts_with("missing field") {
        let field = backticked();
        return FieldError::new(
            format!("{path}/{field}"),
            "missing_field",
            format!("`{field}` is required"),
        );
    }
    if message.starts_with("duplicate field") {
        let field = backticked();
        return FieldError::new(
            format!("{path}/{field}"),
            "duplicate_field",
            format!("`{field}` is given more than once"),
        );
    }
    if message.starts_with("unknown field") {
        let field = backticked();
        let at = if path.ends_with(&format!("/{field}")) {
            path.to_owned()
        } else {
            format!("{path}/{field}")
        };
        return FieldError::new(at, "unknown_field", message);
    }
    let code = if message.starts_with("invalid type") {
        "invalid_type"
    } else if message.starts_with("invalid length") {
        "invalid_length"
    } else {
        "invalid_value"
    };
    // The root's pointer is "" (RFC 6901; "/" would name a member called "").
    FieldError::new(path, code, message)
}

/// Codes our custom deserializers may report (anything else becomes `invalid_value`).
const CUSTOM_CODES: &[&str] = &[
    "invalid_type",
    "out_of_range",
    "invalid_value",
    "too_long",
    "empty",
    "duplicate_field",
];

/// A query string parsed into `T`, with problem rejections.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded_parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let message = e.into_inner().to_string();
                let code = if message.starts_with("unknown field") {
                    "unknown_field"
                } else {
                    "invalid_value"
                };
                let field = if field == "." {
                    message.split('`').nth(1).unwrap_or("").to_owned()
                } else {
                    field
                };
                ApiError::field(&format!("/query/{field}"), code, message)
            })
    }
}

fn form_urlencoded_parse(input: &[u8]) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(input)
}

/// A UUID path parameter. A malformed id names no resource, so it is a 404 like any other
/// unknown id (and reveals nothing); a segment that is not UTF-8 is `400 bad_request`.
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // A segment that does not decode (not UTF-8) is a malformed request, as on the
        // routes that take their parameters with axum's `Path`.
        let axum::extract::Path(raw): axum::extract::Path<String> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::new(codes::BAD_REQUEST, e.body_text()))?;
        uuid::Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| ApiError::new(codes::NOT_FOUND, "no resource has this id"))
    }
}

/// The authenticated caller: a user acting in one organization through one token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub org_id: OrgId,
    pub role: Role,
    pub token_id: TokenId,
}

impl Principal {
    /// 403 `insufficient_role` unless the caller's role is at least `required`.
    pub fn require(&self, required: Role) -> Result<(), ApiError> {
        self.role.require(required).map_err(|e| {
            tracing::info!(
                event = "auth.denied",
                user_id = %self.user_id,
                org_id = %self.org_id,
                role = %self.role,
                required = %required,
            );
            // Not through `From<DomainError>`, which logs the refusals stores decide.
            ApiError::new(codes::INSUFFICIENT_ROLE, e.to_string())
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header value (not yet validated).
pub fn bearer_token(value: &axum::http::HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

fn unauthorized(code: crate::problem::ErrorCode, reason: &'static str, detail: &str) -> ApiError {
    tracing::info!(event = "auth.unauthorized", reason);
    ApiError::new(code, detail)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                codes::UNAUTHENTICATED,
                "missing",
                "send Authorization: Bearer <token>",
            ));
        };
        // Another scheme (`Basic …`) is no bearer token at all: as without the header
        // (RFC 6750 §3: no error code for a request without bearer credentials).
        let Some(token) = bearer_token(value) else {
            return Err(unauthorized(
                codes::UNAUTHENTICATED,
                "other_scheme",
                "send Authorization: Bearer <token> (the header names another scheme)",
            ));
        };
        let token = Some(token)
            .filter(|token| looks_like_token(token))
            .ok_or_else(|| {
                unauthorized(
                    codes::INVALID_TOKEN,
                    "malformed",
                    "the bearer token is malformed",
                )
            })?;
        let principal = principal_for(state, &hash_token(token)).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// The principal a token (by its hash) stands for now: 401 if it is unknown (or its
/// membership is gone), revoked or expired. Long-lived responses (event subscriptions) ask
/// again now and then, so that a revoked token stops reading.
pub(crate) async fn principal_for(
    state: &AppState,
    token_hash: &[u8; 32],
) -> Result<Principal, ApiError> {
    let record = state
        .store
        .token_by_hash(token_hash)
        .await?
        .ok_or_else(|| unauthorized(codes::INVALID_TOKEN, "unknown", "the token is not valid"))?;
    if record.revoked_at.is_some() {
        return Err(unauthorized(
            codes::INVALID_TOKEN,
            "revoked",
            "the token was revoked",
        ));
    }
    if state.clock.now() >= record.expires_at {
        return Err(unauthorized(
            codes::TOKEN_EXPIRED,
            "expired",
            "the token has expired; log in again",
        ));
    }
    Ok(Principal {
        user_id: record.user_id,
        org_id: record.org_id,
        role: record.role,
        token_id: record.token_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        n: i64,
    }

    fn code_of(input: &str) -> (String, Vec<(String, &'static str)>) {
        match parse_json::<Body>(input.as_bytes()) {
            Ok(_) => ("ok".into(), vec![]),
            Err(e) => (
                e.code.code.to_owned(),
                e.errors.iter().map(|f| (f.field.clone(), f.code)).collect(),
            ),
        }
    }

    #[test]
    fn json_errors_are_classified_with_pointers() {
        assert_eq!(code_of("{\"email\": ").0, "malformed_json");
        assert_eq!(code_of("{} x").0, "malformed_json");
        assert_eq!(
            code_of("{\"email\": \"a\"}").1,
            vec![("/n".to_owned(), "missing_field")]
        );
        assert_eq!(
            code_of("{\"email\": \"a\", \"n\": true}").1,
            vec![("/n".to_owned(), "invalid_type")]
        );
        assert_eq!(
            code_of("{\"email\": \"a\", \"n\": 1, \"x\": 1}").1,
            vec![("/x".to_owned(), "unknown_field")]
        );
        assert_eq!(code_of("{\"email\": \"a\", \"n\": 1}").0, "ok");
    }

    mod bearer_header {
        use super::super::bearer_token;
        use axum::http::HeaderValue;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            /// Any bytes a client can put in the header: no panic, and a token is always a
            /// trimmed part of what was sent after `Bearer `.
            #[test]
            fn never_panics_and_only_takes_what_follows_the_scheme(
                raw in prop::collection::vec(any::<u8>(), 0..300)
            ) {
                if let Ok(value) = HeaderValue::from_bytes(&raw)
                    && let Some(token) = bearer_token(&value)
                {
                    let text = value.to_str().unwrap();
                    prop_assert!(text[..7].eq_ignore_ascii_case("bearer "));
                    prop_assert!(text[7..].contains(token));
                    prop_assert_eq!(token, token.trim());
                }
            }

            #[test]
            fn a_well_formed_header_yields_its_token(token in "[A-Za-z0-9_-]{1,100}") {
                let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
                prop_assert_eq!(bearer_token(&value), Some(token.as_str()));
            }
        }
    }
}
