//! `Idempotency-Key` on every authenticated `POST`, `PATCH` and `PUT` (the event routes
//! and the password change excepted: see `events::KeyedIds` and `accounts::password_router`),
//! and on the one public write that hands out a secret, the share-link registration
//! ([`share_registration_layer`]).
//!
//! Before the handler runs, this middleware claims the key for (organization, user, key) with
//! a fingerprint of (method, path, canonical body: JSON re-serialized, multipart by its parts):
//! - first use → the handler runs, and its store operation completes the record with the
//!   response **in the same transaction as the mutation**;
//! - same key, same request, already completed → the stored response, byte-identical, with
//!   `Idempotent-Replayed: true`;
//! - same key while the first request still runs → `409 idempotency_key_in_use`;
//! - same key, different request → `422 idempotency_key_reused`.
//!
//! A request that fails (validation, a refused transition, an outage) changed nothing, so its
//! claim is released and a retry runs afresh. A claim whose request died (crash) expires after
//! `idempotency_lock_ms` and is taken over by the next retry.
//!
//! Responses that hand out a secret once (invite tokens, a webhook's signing secret) must
//! replay the same secret, so their stored copy holds it, but sealed: encrypted
//! (ChaCha20-Poly1305) under a key derived from the bearer token of the request. The database
//! keeps that token only as a SHA-256, so a copy of the database opens none of them; a retry
//! with the same token replays the response byte-identical, one with another token of the same
//! user gets `409 idempotency_key_other_token`.

use crate::extract::Principal;
use crate::problem::{ApiError, codes};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use trueline_core::idempotency::IdempotencyKey;
use trueline_store::{Claim, Idempotency, IdempotencyScope, StoredResponse};

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A claimed key, handed to the handler through the request extensions.
#[derive(Clone)]
pub struct IdempotencyClaim {
    pub scope: IdempotencyScope,
    /// Set when the handler hands the claim to a store operation; a 2xx without it is a
    /// handler bug (the key would never complete), caught and logged.
    used: Arc<AtomicBool>,
    /// Seals stored responses that carry a secret to this request's bearer token.
    seal_key: SealKey,
}

impl std::fmt::Debug for IdempotencyClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyClaim")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The key that seals stored responses to one bearer token.
#[derive(Clone)]
struct SealKey([u8; 32]);

impl SealKey {
    /// SHA-256 of a domain label and the token. The token carries 256 random bits; the label
    /// keeps this key unrelated to the token hash the database stores.
    fn of(bearer_token: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"trueline idempotency seal v1\n");
        hasher.update(bearer_token.as_bytes());
        Self(hasher.finalize().into())
    }

    fn cipher(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.0)
            .ok()
            .map(LessSafeKey::new)
    }
}

/// Marks a stored response whose body is sealed (internal; never sent).
const SEALED_HEADER: &str = "trueline-sealed";
const SEALED_V1: &str = "v1";

/// Replaces the body with `nonce ‖ ciphertext ‖ tag`. Should sealing fail (no randomness),
/// the body is dropped instead: a replay then answers 409, and the secret is never stored.
fn seal(mut response: StoredResponse, key: &SealKey) -> StoredResponse {
    let sealed = (|| {
        let cipher = key.cipher()?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let mut body = std::mem::take(&mut response.body);
        cipher
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .ok()?;
        let mut out = nonce.to_vec();
        out.append(&mut body);
        Some(out)
    })();
    response.body = sealed.unwrap_or_default();
    response
        .headers
        .push((SEALED_HEADER.to_owned(), SEALED_V1.to_owned()));
    response
}

/// The stored response as sent: opened if sealed; `None` if `key` cannot open it.
fn open(mut response: StoredResponse, key: &SealKey) -> Option<StoredResponse> {
    let Some(at) = response
        .headers
        .iter()
        .position(|(k, _)| k == SEALED_HEADER)
    else {
        return Some(response);
    };
    response.headers.remove(at);
    if response.body.len() < NONCE_LEN {
        return None;
    }
    let mut body = response.body.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&response.body).ok()?;
    let plain = key
        .cipher()?
        .open_in_place(nonce, Aad::empty(), &mut body)
        .ok()?
        .len();
    body.truncate(plain);
    response.body = body;
    Some(response)
}

/// A key this middleware did not claim because the handler resolves it inside its own
/// mutation transaction (the combined quantity path: one commit per batch, not per key).
#[derive(Debug, Clone)]
pub struct DeferredKey {
    pub scope: IdempotencyScope,
    pub fingerprint: [u8; 32],
}

/// The route whose keys are resolved inline when hot-row combining is on.
const INLINE_ROUTE: &str = "/api/v1/items/{id}/qty";

/// The claim of this request, if it carried a key (extractor; never fails).
#[derive(Debug, Clone, Default)]
pub struct Idem(pub Option<IdempotencyClaim>);

impl Idem {
    /// The store-side half: complete the claim with `render(result)` in the mutation's
    /// transaction.
    pub fn with<'a, T>(
        &'a self,
        render: &'a (dyn Fn(&T) -> StoredResponse + Send + Sync),
    ) -> Option<Idempotency<'a, T>> {
        self.0.as_ref().map(|claim| {
            claim.used.store(true, Ordering::SeqCst);
            Idempotency {
                scope: &claim.scope,
                render,
            }
        })
    }

    /// The stored copy of a response that hands out a secret: sealed to the caller's bearer
    /// token (see the module docs). Store with `idem.with(&|x| idem.seal(render(x)))` and send
    /// `render(x)`.
    pub fn seal(&self, response: StoredResponse) -> StoredResponse {
        match &self.0 {
            Some(claim) => seal(response, &claim.seal_key),
            None => response,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Idem {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Idem(parts.extensions.get::<IdempotencyClaim>().cloned()))
    }
}

/// A response that can be stored for replay and sent as is.
pub struct Stored(pub StoredResponse);

impl IntoResponse for Stored {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::OK);
        let mut response = (status, self.0.body).into_response();
        for (name, value) in &self.0.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// A JSON response in storable form.
pub fn json_response<T: Serialize>(
    status: StatusCode,
    extra_headers: &[(&str, String)],
    body: &T,
) -> StoredResponse {
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    headers.extend(
        extra_headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone())),
    );
    StoredResponse {
        status: status.as_u16(),
        headers,
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

/// SHA-256 over (method, path, canonical JSON body): what makes two requests "the same".
pub fn fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    // Canonical JSON (keys sorted, insignificant whitespace dropped) so a client that
    // re-serializes the same request is recognised; anything else is hashed as sent.
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => hasher.update(serde_json::to_vec(&value).unwrap_or_default()),
        Err(_) => hasher.update(body),
    }
    hasher.finalize().into()
}

/// [`fingerprint`], with a multipart body hashed by its parts (name, file name, media type,
/// bytes) rather than as sent: the boundary is chosen anew for every request by most clients,
/// so a retried upload would otherwise be "a different request" (`422`).
pub async fn request_fingerprint(
    method: &Method,
    path: &str,
    content_type: Option<&str>,
    body: &axum::body::Bytes,
) -> [u8; 32] {
    let boundary = content_type
        .filter(|c| c.to_ascii_lowercase().starts_with("multipart/form-data"))
        .and_then(|c| multer::parse_boundary(c).ok());
    if let Some(boundary) = boundary
        && let Some(parts) = multipart_digest(boundary, body.clone()).await
    {
        // A leading NUL (no method starts with one) keeps this apart from every raw body.
        let mut hasher = Sha256::new();
        hasher.update(b"\0multipart\n");
        hasher.update(method.as_str().as_bytes());
        hasher.update(b"\n");
        hasher.update(path.as_bytes());
        hasher.update(b"\n");
        hasher.update(parts);
        return hasher.finalize().into();
    }
    fingerprint(method, path, body)
}

/// SHA-256 over every part, in order, each field length-prefixed; `None` when the body is not
/// well-formed multipart (then it is hashed as sent, and the handler refuses it anyway).
async fn multipart_digest(boundary: String, body: axum::body::Bytes) -> Option<[u8; 32]> {
    let stream =
        futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(body)));
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut hasher = Sha256::new();
    let mut field_of = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    while let Some(field) = multipart.next_field().await.ok()? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().unwrap_or_default().to_owned();
        let media_type = field
            .content_type()
            .map(ToString::to_string)
            .unwrap_or_default();
        let data = field.bytes().await.ok()?;
        for bytes in [
            name.as_bytes(),
            file_name.as_bytes(),
            media_type.as_bytes(),
            &data,
        ] {
            field_of(bytes);
        }
    }
    Some(hasher.finalize().into())
}

/// The refusal of a malformed `Idempotency-Key` header.
pub(crate) fn invalid_key() -> ApiError {
    ApiError::field(
        "/headers/idempotency-key",
        "invalid_idempotency_key",
        "must be 1 to 255 printable ASCII characters, bare or quoted",
    )
}

/// The write methods each route of the API serves, from its OpenAPI document: the layer wraps
/// a route's every method, also those it answers `405` (a wrong method with a reused key was
/// a `422 idempotency_key_reused`, and with a fresh one a claim written for nothing).
pub type Served = Arc<std::sync::OnceLock<std::collections::HashMap<String, Vec<Method>>>>;

/// Fills `served` from the finished OpenAPI document.
pub fn record_served(served: &Served, api: &utoipa::openapi::OpenApi) {
    let mut routes = std::collections::HashMap::new();
    for (path, item) in &api.paths.paths {
        let methods: Vec<Method> = [
            (Method::POST, &item.post),
            (Method::PATCH, &item.patch),
            (Method::PUT, &item.put),
        ]
        .into_iter()
        .filter(|(_, op)| op.is_some())
        .map(|(method, _)| method)
        .collect();
        routes.insert(path.clone(), methods);
    }
    let _ = served.set(routes);
}

pub async fn layer(served: Served, request: Request, next: Next) -> Response {
    // This layer wraps the authenticated routes only (candidates' public routes have no
    // token to scope a key to). A PUT there takes keys too: the question order carries an
    // `If-Match` that the first attempt moves on, so a retry without a key fails.
    if !matches!(
        *request.method(),
        Method::POST | Method::PATCH | Method::PUT
    ) {
        return next.run(request).await;
    }
    // A method a documented route does not serve goes on to its `405`. (A route the document
    // does not know keeps the layer: nothing is switched off by omission.)
    if let (Some(routes), Some(matched)) = (
        served.get(),
        request.extensions().get::<axum::extract::MatchedPath>(),
    ) {
        let path = matched.as_str();
        let methods = if path.starts_with(crate::API_PREFIX) {
            routes.get(path)
        } else {
            routes.get(&format!("{}{path}", crate::API_PREFIX))
        };
        if methods.is_some_and(|m| !m.contains(request.method())) {
            return next.run(request).await;
        }
    }
    let Some(raw_key) = request.headers().get(&IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    match claimed(request, raw_key, next, KeyOwner::Caller).await {
        Ok(response) | Err(response) => response,
    }
}

/// `Idempotency-Key` on a candidate's registration through a share link
/// (`POST /public/share/{token}/register`): its answer hands out the candidate's invite token
/// once, and a registration sent again after a lost answer was `409 already_invited` with no
/// way to get the token. With a key, the same key and request again replay the answer, as on
/// the authenticated routes (see [`share_registration_scope`] for whose key it is).
pub async fn share_registration_layer(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(&IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    match claimed(request, raw_key, next, KeyOwner::ShareRegistration).await {
        Ok(response) | Err(response) => response,
    }
}

/// Whose keys a layer claims.
#[derive(Debug, Clone, Copy)]
enum KeyOwner {
    /// The authenticated caller: (organization, user); secrets sealed to the bearer token.
    Caller,
    /// A candidate registering through a share link: no account, no token.
    ShareRegistration,
}

/// The shortest key a share-link registration takes: there the key is the candidate's only
/// secret (see [`share_registration_scope`]), so it must not be guessable.
/// 26: a ULID, the shortest common form of a random key (a UUID has 36).
pub const SHARE_REGISTRATION_KEY_CHARS_MIN: usize = 26;

impl KeyOwner {
    /// The scope of `key` in this request, and the key sealing its secrets.
    async fn scope(
        self,
        parts: &mut Parts,
        state: &AppState,
        key: &IdempotencyKey,
    ) -> Result<(IdempotencyScope, SealKey), ApiError> {
        match self {
            KeyOwner::Caller => {
                let principal = Principal::from_request_parts(parts, state).await?;
                // The principal was resolved from this header, so it is there.
                let seal_key = SealKey::of(
                    parts
                        .headers
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(crate::extract::bearer_token)
                        .unwrap_or_default(),
                );
                let scope = IdempotencyScope::new(
                    principal.org_id,
                    principal.user_id,
                    key.as_str().to_owned(),
                );
                Ok((scope, seal_key))
            }
            KeyOwner::ShareRegistration => {
                if key.as_str().len() < SHARE_REGISTRATION_KEY_CHARS_MIN {
                    return Err(ApiError::field(
                        "/headers/idempotency-key",
                        "invalid_idempotency_key",
                        format!(
                            "a registration's key is the candidate's secret: at least \
                             {SHARE_REGISTRATION_KEY_CHARS_MIN} characters (send a random UUID or ULID)"
                        ),
                    ));
                }
                let axum::extract::Path(token) =
                    axum::extract::Path::<String>::from_request_parts(parts, state)
                        .await
                        .map_err(|_| ApiError::new(codes::NOT_FOUND, "share link not found"))?;
                Ok(share_registration_scope(&token, key.as_str()))
            }
        }
    }
}

/// The scope of a key sent with a share-link registration. No organization or user is known
/// before the link is looked up, and anyone may hold the link: the key is what tells the
/// candidate's retry from another registration. It is stored as the SHA-256 of the link's
/// token and the key, under the nil organization and user; the stored answer (with the
/// invite token) is sealed to the link's token and the key. The database holds neither, so a
/// copy of it opens nothing, and a replay needs the key and the same request (email, name).
fn share_registration_scope(share_token: &str, key: &str) -> (IdempotencyScope, SealKey) {
    let mut hasher = Sha256::new();
    hasher.update(b"trueline share registration key v1\n");
    hasher.update(share_token.as_bytes());
    hasher.update(b"\n");
    hasher.update(key.as_bytes());
    let stored: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let nobody = uuid::Uuid::nil();
    let scope = IdempotencyScope::new(
        trueline_core::ids::OrgId(nobody),
        trueline_core::ids::UserId(nobody),
        stored,
    );
    (scope, SealKey::of(&format!("{share_token}\n{key}")))
}

async fn claimed(
    request: Request,
    raw_key: HeaderValue,
    next: Next,
    owner: KeyOwner,
) -> Result<Response, Response> {
    let key = raw_key
        .to_str()
        .ok()
        .and_then(|k| IdempotencyKey::parse(k).ok())
        .ok_or_else(|| invalid_key().into_response())?;
    let state = request
        .extensions()
        .get::<AppState>()
        .cloned()
        .ok_or_else(|| ApiError::internal("AppState extension missing").into_response())?;
    let (mut parts, body) = request.into_parts();
    let (scope, seal_key) = owner
        .scope(&mut parts, &state, &key)
        .await
        .map_err(IntoResponse::into_response)?;
    // The body limit of the route (the import takes more than the rest): buffered here to be
    // fingerprinted, a body must not get past the limit its handler would have applied.
    let import = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|p| p.as_str().ends_with(crate::assessments::IMPORT_ROUTE));
    let limit = if import {
        state
            .settings
            .body_limit_bytes
            .max(crate::IMPORT_BODY_LIMIT_BYTES)
    } else {
        state.settings.body_limit_bytes
    };
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| crate::body_read::read_failed(&e).into_response())?;
    // Nested routers see the path without their prefix; the fingerprint uses the full one.
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| parts.uri.path().to_owned(), |uri| uri.path().to_owned());
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let print = request_fingerprint(&parts.method, &path, content_type, &bytes).await;
    let inline = state.combiner.is_some()
        && parts.method == Method::PATCH
        && parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .is_some_and(|p| p.as_str() == INLINE_ROUTE);
    if inline {
        parts.extensions.insert(DeferredKey {
            scope,
            fingerprint: print,
        });
        return Ok(next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await);
    }
    let now = state.clock.now();
    let lock =
        time::Duration::try_from(state.settings.idempotency_lock).unwrap_or(time::Duration::MINUTE);
    // Until the request has run to its end, the claim is released if it is dropped (the
    // request timed out or its client went away) or unwinds (a panic): otherwise it stayed
    // pending, and retries got `idempotency_key_in_use`, until its lock expired. Armed before
    // the claim, whose commit may land just before a drop; a release of a claim this request
    // does not hold changes nothing.
    let mut unfinished = ReleaseIfUnfinished {
        store: state.store.clone(),
        scope: Some(scope.clone()),
    };
    let claim = state
        .store
        .claim(&scope, &print, now, now + lock)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    if !matches!(claim, Claim::Acquired) {
        unfinished.scope = None;
    }
    match claim {
        Claim::Replay(stored) => {
            let stored = open(stored, &seal_key).ok_or_else(|| {
                ApiError::new(
                    codes::IDEMPOTENCY_KEY_OTHER_TOKEN,
                    "the response stored for this Idempotency-Key holds a secret sealed to the \
                     token that sent the first request; retry with that token",
                )
                .into_response()
            })?;
            tracing::info!(event = "idempotency.replayed", key_len = scope.key.len());
            let mut response = Stored(stored).into_response();
            response.headers_mut().insert(
                IDEMPOTENT_REPLAYED.clone(),
                HeaderValue::from_static("true"),
            );
            return Ok(response);
        }
        Claim::InProgress => {
            return Err(ApiError::new(
                codes::IDEMPOTENCY_KEY_IN_USE,
                "a request with this Idempotency-Key is still being processed; retry later",
            )
            .retry_after(1)
            .into_response());
        }
        Claim::Mismatch => {
            return Err(ApiError::new(
                codes::IDEMPOTENCY_KEY_REUSED,
                "this Idempotency-Key was used for a different request (method, path or body)",
            )
            .into_response());
        }
        Claim::Acquired => {}
    }
    let used = Arc::new(AtomicBool::new(false));
    parts.extensions.insert(IdempotencyClaim {
        scope: scope.clone(),
        used: used.clone(),
        seal_key,
    });
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() || !used.load(Ordering::SeqCst) {
        if response.status().is_success() {
            tracing::error!(
                event = "error.unhandled",
                error = "2xx without completing the idempotency claim"
            );
        }
        // Nothing was stored with the key: free it so a retry runs afresh. (The guard stays
        // armed until this is done: if this is dropped, it releases.)
        if let Err(e) = state.store.release(&scope).await {
            tracing::warn!(event = "idempotency.release_failed", error = %e);
        }
    }
    unfinished.scope = None;
    Ok(response)
}

/// Releases a claim whose request never finished: from `Drop`, on a spawned task. Safe when
/// the write committed after all: a release removes only a claim still pending and held by
/// this request, and a completion needs the claim (see `IdempotencyScope::holder`).
struct ReleaseIfUnfinished {
    store: Arc<dyn trueline_store::Store>,
    scope: Option<IdempotencyScope>,
}

impl Drop for ReleaseIfUnfinished {
    fn drop(&mut self) {
        let Some(scope) = self.scope.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        // In the request's span (entered while its future is dropped), so the lines carry
        // its request id.
        let release = async move {
            match store.release(&scope).await {
                Ok(()) => tracing::info!(event = "idempotency.release_unfinished"),
                Err(e) => tracing::warn!(event = "idempotency.release_failed", error = %e),
            }
        };
        runtime.spawn(tracing::Instrument::instrument(
            release,
            tracing::Span::current(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str) -> StoredResponse {
        json_response(StatusCode::CREATED, &[("location", "/x".into())], &body)
    }

    #[test]
    fn a_sealed_response_opens_only_with_the_token_that_sealed_it() {
        let secret = "tli_the-secret-token";
        let plain = response(secret);
        let key = SealKey::of("tl_first");
        let sealed = seal(plain.clone(), &key);
        assert!(
            !sealed
                .body
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "the stored body does not show the secret"
        );
        assert_ne!(seal(plain.clone(), &key).body, sealed.body, "fresh nonce");
        assert_eq!(open(sealed.clone(), &key), Some(plain.clone()));
        assert!(open(sealed.clone(), &SealKey::of("tl_other")).is_none());
        let mut tampered = sealed;
        if let Some(last) = tampered.body.last_mut() {
            *last ^= 1;
        }
        assert!(open(tampered, &key).is_none(), "tampering is detected");
    }

    fn multipart(boundary: &str, parts: &[(&str, &str, &str)]) -> (String, axum::body::Bytes) {
        let mut body = String::new();
        for (name, file_name, data) in parts {
            body.push_str(&format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"; \
                 filename=\"{file_name}\"\r\ncontent-type: text/csv\r\n\r\n{data}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        (
            format!("multipart/form-data; boundary={boundary}"),
            axum::body::Bytes::from(body),
        )
    }

    #[tokio::test]
    async fn multipart_bodies_are_the_same_request_whatever_their_boundary() {
        let print = |(content_type, body): (String, axum::body::Bytes)| async move {
            request_fingerprint(&Method::POST, "/import", Some(&content_type), &body).await
        };
        let file = [("file", "q.csv", "prompt,answer\nA,1")];
        let first = print(multipart("XyZ1", &file)).await;
        assert_eq!(first, print(multipart("other-boundary-42", &file)).await);
        assert_ne!(
            first,
            print(multipart(
                "XyZ1",
                &[("file", "q.csv", "prompt,answer\nA,2")]
            ))
            .await,
            "other bytes"
        );
        assert_ne!(
            first,
            print(multipart(
                "XyZ1",
                &[("file", "r.csv", "prompt,answer\nA,1")]
            ))
            .await,
            "another file name"
        );
        assert_ne!(
            first,
            print(multipart(
                "XyZ1",
                &[("upload", "q.csv", "prompt,answer\nA,1")]
            ))
            .await,
            "another part name"
        );
        // Not multipart after all: hashed as sent, like any body.
        let (content_type, body) = multipart("XyZ1", &file);
        let broken = axum::body::Bytes::from(body[..body.len() - 8].to_vec());
        assert_eq!(
            request_fingerprint(&Method::POST, "/import", Some(&content_type), &broken).await,
            fingerprint(&Method::POST, "/import", &broken)
        );
    }

    #[test]
    fn unsealed_responses_replay_as_stored() {
        let plain = response("no secret");
        assert_eq!(open(plain.clone(), &SealKey::of("tl_any")), Some(plain));
    }
}
