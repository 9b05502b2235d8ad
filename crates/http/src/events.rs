//! The Events API: append (single, or a batch to one stream), read by id, catch-up by
//! position, read a stream, live subscription over Server-Sent Events, statistics.

use crate::extract::{ApiJsonData, ApiQuery, Principal, bearer_token, principal_for};
use crate::list_type;
use crate::problem::{ApiError, codes};
use crate::state::AppState;
use crate::strict_json::StrictValue;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::time::Duration;
use time::OffsetDateTime;
use trueline_core::accounts::Role;
use trueline_core::ids::EventId;
use trueline_store::events::*;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(append_event, list_events))
        .routes(routes!(subscribe))
        .routes(routes!(get_event))
        .routes(routes!(append_to_stream))
        .routes(routes!(read_stream))
        .routes(routes!(stats))
}

/// Default stream of `POST /events` without `stream`.
pub const DEFAULT_STREAM: &str = "default";
/// Events per page of catch-up reads and of one SSE read.
const READ_BATCH_MAX: usize = 1000;

/// Events a subscription reads at a time at most: what a slow reader holds in memory while
/// its socket drains (and no more than [`PAGE_BYTES_MAX`] of event data).
const SUBSCRIBE_READ_BATCH: usize = 100;

/// How often a subscription asks again whether its token is still valid (revoked, expired,
/// membership gone): a stream ends at most this long (by the server's clock) after that.
const SUBSCRIPTION_RECHECK: time::Duration = time::Duration::seconds(30);

// ---- wire types ----

/// `expected_version`: an integer (the stream's current version), `"no_stream"` or `"any"`.
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(value_type = Value, example = json!("any"))]
pub struct Expected(pub ExpectedVersion);

impl<'de> Deserialize<'de> for Expected {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s == "any" => Ok(Expected(ExpectedVersion::Any)),
            Value::String(s) if s == "no_stream" => Ok(Expected(ExpectedVersion::NoStream)),
            Value::Number(n) if n.as_u64().is_some() => {
                Ok(Expected(ExpectedVersion::Exact(n.as_u64().unwrap_or(0))))
            }
            _ => Err(D::Error::custom(
                "[invalid_value] must be a non-negative integer, \"no_stream\" or \"any\"",
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// 1-128 bytes.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Any JSON value.
    #[schema(value_type = serde_json::Value)]
    pub data: StrictValue,
    /// A JSON object (default `{}`).
    #[schema(value_type = Option<serde_json::Value>)]
    pub metadata: Option<StrictValue>,
    /// A client-chosen UUID makes the append idempotent.
    pub id: Option<Uuid>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendEventRequest {
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = serde_json::Value)]
    pub data: StrictValue,
    #[schema(value_type = Option<serde_json::Value>)]
    pub metadata: Option<StrictValue>,
    pub id: Option<Uuid>,
    /// Default `default`. 1-256 bytes.
    pub stream: Option<String>,
    pub expected_version: Option<Expected>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendStreamRequest {
    pub expected_version: Option<Expected>,
    /// 1 to 1000 events, appended atomically.
    pub events: Vec<EventInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppendedView {
    pub id: Uuid,
    /// Gapless per organization, from 1.
    pub position: u64,
    pub stream: String,
    /// Gapless per stream, from 1.
    pub stream_version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppendStreamResponse {
    pub events: Vec<AppendedView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    pub position: u64,
    pub stream: String,
    pub stream_version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = Value)]
    pub data: Box<RawValue>,
    #[schema(value_type = Value)]
    pub metadata: Box<RawValue>,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

fn raw(bytes: Vec<u8>) -> Box<RawValue> {
    // Stored bytes are the compact JSON this API wrote; anything else is shown as a string.
    String::from_utf8(bytes)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
        .unwrap_or_else(|| RawValue::from_string("null".into()).unwrap_or_default())
}

impl From<EventRecord> for EventView {
    fn from(e: EventRecord) -> Self {
        Self {
            id: e.id.0,
            position: e.position,
            stream: e.stream,
            stream_version: e.stream_version,
            event_type: e.event_type,
            data: raw(e.data),
            metadata: raw(e.metadata),
            recorded_at: e.recorded_at,
        }
    }
}

list_type!(EventList, EventView);

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Return events with a position greater than this (default 0).
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    pub after: Option<u64>,
    /// Same as `after` (the `next_cursor` of the previous page).
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<u32>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    pub stream: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// First version to read (forward, default 1) or last (backward, default: the end).
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    pub from: Option<u64>,
    /// `forward` (default) or `backward`.
    pub direction: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubscribeQuery {
    /// Start after this position (default 0); `Last-Event-ID` takes precedence.
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    pub after: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsResponse {
    pub organization: OrgStatsView,
    /// Facts about the event backend that concern no organization's data: `backend`, and
    /// for the embedded engine its last recovery and writer state.
    #[schema(value_type = Object)]
    pub storage: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrgStatsView {
    pub events: u64,
    pub bytes: u64,
    pub streams: u64,
    pub first_position: u64,
    pub last_position: u64,
}

// ---- validation ----

fn check_name(
    field: &str,
    value: &str,
    max_bytes: usize,
) -> Result<(), trueline_core::validation::FieldError> {
    use trueline_core::validation::FieldError;
    if value.is_empty() {
        return Err(FieldError::new(field, "empty", "must not be empty"));
    }
    if value.len() > max_bytes {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("must be at most {max_bytes} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "control_character",
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn new_event(
    input_type: &str,
    data: &Value,
    metadata: Option<&Value>,
    id: Option<Uuid>,
    prefix: &str,
    errors: &mut Vec<trueline_core::validation::FieldError>,
) -> NewEvent {
    if let Err(e) = check_name(&format!("{prefix}/type"), input_type, EVENT_TYPE_BYTES_MAX) {
        errors.push(e);
    }
    if metadata.is_some_and(|m| !m.is_object()) {
        errors.push(trueline_core::validation::FieldError::new(
            format!("{prefix}/metadata"),
            "invalid_type",
            "must be a JSON object",
        ));
    }
    // `source: "outbox"` marks the events the server records for committed changes (the
    // outbox relay): a client's append could otherwise pass for one (an audit fact that
    // never happened), and readers could not tell them apart.
    if metadata.and_then(|m| m.get("source")) == Some(&Value::String("outbox".into())) {
        errors.push(trueline_core::validation::FieldError::new(
            format!("{prefix}/metadata/source"),
            "reserved",
            "\"outbox\" marks the events the server records for committed changes",
        ));
    }
    NewEvent {
        id: id.map_or_else(EventId::new, EventId),
        event_type: input_type.to_owned(),
        data: serde_json::to_vec(data).unwrap_or_default(),
        metadata: metadata.map_or_else(
            || b"{}".to_vec(),
            |m| serde_json::to_vec(m).unwrap_or_default(),
        ),
    }
}

fn refusal_error(e: EventStoreError) -> ApiError {
    match e {
        EventStoreError::Refused(AppendRefusal::WrongExpectedVersion { current }) => ApiError {
            current_version: Some(current),
            ..ApiError::new(
                codes::WRONG_EXPECTED_VERSION,
                format!("the stream is at version {current}"),
            )
        },
        EventStoreError::Refused(r @ AppendRefusal::EventIdConflict { .. }) => {
            ApiError::new(codes::EVENT_ID_CONFLICT, r.to_string())
        }
        EventStoreError::Refused(r @ AppendRefusal::DuplicateIdInBatch { .. }) => {
            ApiError::field("/events", "duplicate_id", r.to_string())
        }
        EventStoreError::Refused(r @ AppendRefusal::EventTooLarge { .. }) => {
            ApiError::new(codes::EVENT_TOO_LARGE, r.to_string())
        }
        EventStoreError::Refused(r @ AppendRefusal::AppendTooLarge { .. }) => {
            ApiError::new(codes::PAYLOAD_TOO_LARGE, r.to_string())
        }
        EventStoreError::Refused(AppendRefusal::StorageFull) => ApiError::new(
            codes::STORAGE_FULL,
            "the event log's disk is full; nothing was written",
        )
        .retry_after(30),
        EventStoreError::Store(e) => e.into(),
    }
}

fn log_append(result: &Result<Vec<Appended>, ApiError>) {
    match result {
        Ok(appended) => tracing::info!(
            event = "mutation.events.append.success",
            events = appended.len(),
            first_position = appended.first().map_or(0, |a| a.position),
            duplicate = appended.iter().all(|a| a.duplicate),
        ),
        Err(e) => tracing::info!(
            event = "mutation.events.append.rejected",
            code = e.code.code
        ),
    }
}

fn appended_view(stream: &str, a: &Appended) -> AppendedView {
    AppendedView {
        id: a.id.0,
        position: a.position,
        stream: stream.to_owned(),
        stream_version: a.stream_version,
        recorded_at: a.recorded_at,
    }
}

/// Positions and versions are at most 2^53-1 (exact in JavaScript), like every integer here.
fn position_param(field: &str, value: Option<u64>) -> Result<Option<u64>, ApiError> {
    match value {
        Some(v) if v > trueline_core::inventory::JSON_SAFE_INTEGER_MAX as u64 => Err(
            ApiError::field(field, "out_of_range", "must be at most 2^53-1"),
        ),
        other => Ok(other),
    }
}

fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=READ_BATCH_MAX as u32).contains(&limit) {
        return Err(ApiError::field(
            "/query/limit",
            "out_of_range",
            "must be between 1 and 1000",
        ));
    }
    Ok(limit as usize)
}

/// A `cursor` is a position (or version) this API handed out: at most 2^53-1, like `after`.
fn cursor_position(cursor: Option<&str>) -> Result<Option<u64>, ApiError> {
    cursor
        .map(|c| match c.parse::<u64>() {
            Ok(p) if p <= trueline_core::inventory::JSON_SAFE_INTEGER_MAX as u64 => Ok(p),
            _ => Err(ApiError::new(
                codes::INVALID_CURSOR,
                "the cursor is not a position",
            )),
        })
        .transpose()
}

/// An `Idempotency-Key` on an append names the request's events: an event sent without an
/// `id` gets one derived from (organization, user, key, its index in the request). A retry
/// of the same request then appends nothing (200 with the original positions, as for client
/// ids) and a retry with other content is `409 event_id_conflict`. Events are idempotent by
/// their ids, which are kept as long as the event, so these routes keep no key records of
/// their own (and stay outside the idempotency layer).
struct KeyedIds(Option<[u8; 32]>);

impl KeyedIds {
    fn of(p: &Principal, headers: &HeaderMap) -> Result<Self, ApiError> {
        use sha2::{Digest, Sha256};
        let Some(raw) = headers.get(&crate::idempotency::IDEMPOTENCY_KEY) else {
            return Ok(Self(None));
        };
        let key = raw
            .to_str()
            .ok()
            .and_then(|k| trueline_core::idempotency::IdempotencyKey::parse(k).ok())
            .ok_or_else(crate::idempotency::invalid_key)?;
        let mut seed = Sha256::new();
        seed.update(b"trueline event ids\0");
        seed.update(p.org_id.0.as_bytes());
        seed.update(p.user_id.0.as_bytes());
        seed.update(key.as_str().as_bytes());
        Ok(Self(Some(seed.finalize().into())))
    }

    /// The id of the request's `index`th event: the client's own if it sent one.
    fn id(&self, index: usize, client_id: Option<Uuid>) -> Option<Uuid> {
        use sha2::{Digest, Sha256};
        client_id.or_else(|| {
            let seed = self.0?;
            let digest: [u8; 32] = Sha256::new()
                .chain_update(seed)
                .chain_update((index as u64).to_be_bytes())
                .finalize()
                .into();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            Some(uuid::Builder::from_custom_bytes(bytes).into_uuid())
        })
    }
}

// ---- handlers ----

/// Append one event (to `stream`, default `default`). A client `id` makes it idempotent:
/// the same id and content again → 200 with the original position.
#[utoipa::path(post, path = "/events", tag = "events", security(("bearer" = [])),
    request_body = AppendEventRequest,
    responses((status = 201, description = "Appended", body = AppendedView),
              (status = 200, description = "Already appended with this id and content", body = AppendedView),
              (status = 409, description = "`wrong_expected_version` (with `current_version`) or `event_id_conflict`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 507, description = "`storage_full`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn append_event(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    ApiJsonData(body): ApiJsonData<AppendEventRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Member)?;
        let ids = KeyedIds::of(&p, &headers)?;
        let mut errors = Vec::new();
        let stream = body
            .stream
            .clone()
            .unwrap_or_else(|| DEFAULT_STREAM.to_owned());
        if let Err(e) = check_name("/stream", &stream, STREAM_NAME_BYTES_MAX) {
            errors.push(e);
        }
        let event = new_event(
            &body.event_type,
            &body.data.0,
            body.metadata.as_ref().map(|m| &m.0),
            ids.id(0, body.id),
            "",
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let expected = body.expected_version.map_or(ExpectedVersion::Any, |e| e.0);
        let appended = state
            .events
            .append(p.org_id, &stream, expected, vec![event], state.clock.now())
            .await
            .map_err(refusal_error)?;
        Ok((stream, appended))
    }
    .await;
    log_append(
        &result
            .as_ref()
            .map(|(_, a)| a.clone())
            .map_err(|e| ApiError::new(e.code, "")),
    );
    let (stream, appended) = result?;
    let first = appended
        .first()
        .ok_or_else(|| ApiError::internal("append returned no event"))?;
    let status = if first.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        axum::Extension(crate::observe::NoOutboxRow),
        Json(appended_view(&stream, first)),
    )
        .into_response())
}

/// Append 1-1000 events to one stream atomically.
#[utoipa::path(post, path = "/streams/{stream}/events", tag = "events", security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name (1-256 bytes)")),
    request_body = AppendStreamRequest,
    responses((status = 201, description = "Appended", body = AppendStreamResponse),
              (status = 200, description = "All already appended with these ids and contents", body = AppendStreamResponse),
              (status = 409, description = "`wrong_expected_version` or `event_id_conflict`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 507, description = "`storage_full`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn append_to_stream(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    headers: HeaderMap,
    ApiJsonData(body): ApiJsonData<AppendStreamRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Member)?;
        let ids = KeyedIds::of(&p, &headers)?;
        let mut errors = Vec::new();
        if let Err(e) = check_name("/path/stream", &stream, STREAM_NAME_BYTES_MAX) {
            errors.push(e);
        }
        let count = body.events.len();
        if count == 0 || count > APPEND_EVENTS_MAX {
            errors.push(trueline_core::validation::FieldError::new(
                "/events",
                "invalid_length",
                format!("must contain 1 to {APPEND_EVENTS_MAX} events, got {count}"),
            ));
        }
        let events: Vec<NewEvent> = body
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                new_event(
                    &e.event_type,
                    &e.data.0,
                    e.metadata.as_ref().map(|m| &m.0),
                    ids.id(i, e.id),
                    &format!("/events/{i}"),
                    &mut errors,
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let expected = body.expected_version.map_or(ExpectedVersion::Any, |e| e.0);
        state
            .events
            .append(p.org_id, &stream, expected, events, state.clock.now())
            .await
            .map_err(refusal_error)
    }
    .await;
    log_append(
        &result
            .as_ref()
            .map(Clone::clone)
            .map_err(|e| ApiError::new(e.code, "")),
    );
    let appended = result?;
    let status = if appended.iter().all(|a| a.duplicate) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let events = appended.iter().map(|a| appended_view(&stream, a)).collect();
    Ok((
        status,
        axum::Extension(crate::observe::NoOutboxRow),
        Json(AppendStreamResponse { events }),
    )
        .into_response())
}

/// Event types of the server's own changes that only admins read: what they carry (a
/// candidate's invite, attempt, score or review; a share link; a webhook's receiver; when
/// members log in and out or change their password) is admin-only through the REST routes,
/// and the event log must not be a way around a route's role. Below admin these events are left out of every read:
/// pages, stream reads and subscriptions skip them (positions and versions have gaps there;
/// cursors still move past them), a `type=` filter naming one is an empty page, and by id
/// they are `403 insufficient_role`.
pub const ADMIN_ONLY_EVENT_TYPES: &[&str] = &[
    "accounts.token.",
    "accounts.password.",
    "accounts.webhook.",
    "assessments.invite.",
    "assessments.attempt.",
    "assessments.submission.",
    "assessments.share_link.",
];

/// Whether a caller of `role` reads events of `event_type` (see [`ADMIN_ONLY_EVENT_TYPES`]).
fn visible_to(role: Role, event_type: &str) -> bool {
    role.at_least(Role::Admin)
        || !ADMIN_ONLY_EVENT_TYPES
            .iter()
            .any(|prefix| event_type.starts_with(prefix))
}

/// One event by id.
#[utoipa::path(get, path = "/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "The event", body = EventView)))]
async fn get_event(
    State(state): State<AppState>,
    p: Principal,
    crate::extract::PathId(id): crate::extract::PathId,
) -> Result<Json<EventView>, ApiError> {
    let event = state
        .events
        .event(p.org_id, EventId(id))
        .await?
        .ok_or_else(|| ApiError::new(codes::NOT_FOUND, "event not found"))?;
    if !visible_to(p.role, &event.event_type) {
        // The organization's own event, of a type its role does not read: 403, as the REST
        // route of the same fact answers.
        p.require(Role::Admin)?;
    }
    Ok(Json(event.into()))
}

/// The organization's events in position order (catch-up): `after` a position, optionally
/// of one `type` or `stream`. Positions are gapless per organization.
#[utoipa::path(get, path = "/events", tag = "events", security(("bearer" = [])),
    params(EventsQuery),
    responses((status = 200, description = "A page of events; `next_cursor` is the last position", body = EventList),
              (status = 409, description = "`position_ahead`: `after` is past the organization's last position", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 410, description = "`events_dropped`: events after `after` were dropped by retention", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn list_events(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = position_param("/query/after", query.after)?;
    let after = cursor_position(query.cursor.as_deref())?
        .or(after)
        .unwrap_or(0);
    // The names a filter can match are checked like the names an append writes: a control
    // character (a NUL, which PostgreSQL text cannot hold) or an overlong name is a 400 on
    // both backends, not a 500 on one and an empty page on the other.
    let mut errors = Vec::new();
    if let Some(t) = &query.event_type
        && let Err(e) = check_name("/query/type", t, EVENT_TYPE_BYTES_MAX)
    {
        errors.push(e);
    }
    if let Some(s) = &query.stream
        && let Err(e) = check_name("/query/stream", s, STREAM_NAME_BYTES_MAX)
    {
        errors.push(e);
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // A type the caller may not read: nothing, and no cursor (whose positions would tell
    // where events of that type are).
    if let Some(t) = &query.event_type
        && !visible_to(p.role, t)
    {
        return Ok(Json(EventList {
            data: Vec::new(),
            next_cursor: None,
        }));
    }
    let filter = EventFilter {
        event_type: query.event_type,
        stream: query.stream,
    };
    let filtered = filter.event_type.is_some() || filter.stream.is_some();
    let (mut events, more) = page_of(
        state
            .events
            .events_after(p.org_id, after, page_read(limit), &filter)
            .await?,
        limit,
    );
    if after > 0 {
        // Positions are gapless: the first event after `after` in the whole log tells whether
        // retention dropped some the reader has not seen (a filtered page can skip events).
        let first = if filtered {
            state
                .events
                .events_after(
                    p.org_id,
                    after,
                    ReadLimit::events(1),
                    &EventFilter::default(),
                )
                .await?
        } else {
            Vec::new()
        };
        let first = first.first().or(events.first());
        check_not_dropped(after, first)?;
        if first.is_none() {
            check_nothing_after(&state, p.org_id, after).await?;
        }
    }
    let next_cursor = if more {
        events.last().map(|e| e.position.to_string())
    } else {
        None
    };
    events.retain(|e| visible_to(p.role, &e.event_type));
    Ok(Json(EventList {
        data: events.into_iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

/// A stream's events by version, forward or backward.
#[utoipa::path(get, path = "/streams/{stream}", tag = "events", security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name"), StreamQuery),
    responses((status = 200, description = "A page of the stream; `next_cursor` is the next version to read", body = EventList),
              (status = 410, description = "`events_dropped`: the versions asked for were dropped by retention", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn read_stream(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Json<EventList>, ApiError> {
    check_name("/path/stream", &stream, STREAM_NAME_BYTES_MAX)
        .map_err(|e| ApiError::validation(vec![e]))?;
    let limit = page_limit(query.limit)?;
    let direction = match query.direction.as_deref().unwrap_or("forward") {
        "forward" => ReadDirection::Forward,
        "backward" => ReadDirection::Backward,
        _ => {
            return Err(ApiError::field(
                "/query/direction",
                "invalid_value",
                "must be forward or backward",
            ));
        }
    };
    let from = position_param("/query/from", query.from)?;
    let from = cursor_position(query.cursor.as_deref())?
        .or(from)
        .unwrap_or(match direction {
            ReadDirection::Forward => 1,
            ReadDirection::Backward => u64::MAX,
        });
    let (mut events, more) = page_of(
        state
            .events
            .read_stream(p.org_id, &stream, from, direction, page_read(limit))
            .await?,
        limit,
    );
    let first = events.first().map(|e| e.stream_version);
    check_stream_kept(&state, p.org_id, &stream, from, direction, first).await?;
    let next_cursor = if more {
        events.last().map(|e| match direction {
            ReadDirection::Forward => (e.stream_version + 1).to_string(),
            ReadDirection::Backward => e.stream_version.saturating_sub(1).to_string(),
        })
    } else {
        match (direction, events.last()) {
            // The page ran out above version 1: the versions below were dropped by retention.
            // The cursor points at them, and following it answers `410 events_dropped`, so
            // a reader walking back never takes the oldest kept event for the first.
            (ReadDirection::Backward, Some(e)) if e.stream_version > 1 => {
                Some((e.stream_version - 1).to_string())
            }
            _ => None,
        }
    };
    events.retain(|e| visible_to(p.role, &e.event_type));
    Ok(Json(EventList {
        data: events.into_iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

/// Server-Sent Events: every event after `after` (catch-up), then live. Each message's `id`
/// is the position, so a reconnect with `Last-Event-ID` resumes exactly. A slow reader is
/// never dropped and never slows writers: it simply reads from its own position.
#[utoipa::path(get, path = "/events/subscribe", tag = "events", security(("bearer" = [])),
    params(SubscribeQuery),
    responses((status = 200, description = "`text/event-stream`; `event:` is the type, `data:` the event JSON", content_type = "text/event-stream"),
              (status = 409, description = "`position_ahead`: the resume point is past the organization's last position", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 410, description = "`events_dropped`: events after the resume point were dropped by retention", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn subscribe(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<SubscribeQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let resume = position_param("/header/last-event-id", last_event_id(&headers)?)?;
    let start = resume
        .or(position_param("/query/after", query.after)?)
        .unwrap_or(0);
    if start > 0 {
        let first = state
            .events
            .events_after(
                p.org_id,
                start,
                ReadLimit::events(1),
                &EventFilter::default(),
            )
            .await?;
        check_not_dropped(start, first.first())?;
        if first.is_empty() {
            check_nothing_after(&state, p.org_id, start).await?;
        }
    }
    let slot = SubscriptionSlot::take(&state, p.org_id)?;
    // The extractor accepted this header: its hash is what the subscription checks again.
    let token_hash = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(bearer_token)
        .map(crate::auth::hash_token)
        .ok_or_else(|| ApiError::internal("a subscription without its bearer token"))?;
    tracing::info!(event = "events.subscribed", after = start);
    let live = Live {
        _slot: slot,
        token_hash,
        role: p.role,
        checked_at: state.clock.now(),
        state: state.clone(),
        org: p.org_id,
        position: start,
        pending: Vec::new().into_iter(),
        changes: state.events.changes(),
        shutdown: state.shutdown.subscribe(),
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        let event = live.next_visible().await?;
        let sse = SseEvent::default()
            .id(event.position.to_string())
            .event(event.event_type.clone())
            .json_data(EventView::from(event))
            .unwrap_or_default();
        Some((Ok(sse), live))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A reader resuming after `after` whose next events retention dropped would skip them
/// without knowing: `410 events_dropped`, naming where the log now starts. `first`: the first
/// event after `after`, unfiltered. (Reading from the start, `after` 0, begins at the oldest
/// kept event.)
fn check_not_dropped(after: u64, first: Option<&EventRecord>) -> Result<(), ApiError> {
    match first {
        Some(e) if after > 0 && e.position > after + 1 => Err(ApiError::new(
            codes::EVENTS_DROPPED,
            format!(
                "the events after position {after} up to {} were dropped by retention; the \
                 oldest kept is {} (resume from after={}, or from the start)",
                e.position - 1,
                e.position,
                e.position - 1
            ),
        )),
        _ => Ok(()),
    }
}

/// Bytes of event data and metadata in one page at most (the event that reaches it is the
/// last): a page of 1,000 events of up to 1 MiB each was a gigabyte in memory per request,
/// twice over while being encoded. A page that stops there has a `next_cursor` like any other.
const PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A page's read: one event more than the page (to tell whether more follow), and no more
/// than [`PAGE_BYTES_MAX`] of event data.
fn page_read(limit: usize) -> ReadLimit {
    ReadLimit {
        events: limit + 1,
        bytes: PAGE_BYTES_MAX,
    }
}

/// The page of a [`page_read`], and whether more may follow (the extra event was read, or
/// the read stopped at the byte bound: then the next page may be empty).
fn page_of(mut events: Vec<EventRecord>, limit: usize) -> (Vec<EventRecord>, bool) {
    let more = events.len() > limit || page_read(limit).stopped_by_bytes(&events);
    events.truncate(limit);
    (events, more)
}

/// When nothing is kept after `after`, which of these it is: caught up (`after` is the last
/// position); retention dropped every event after it (`410 events_dropped`: a reader resuming
/// there would skip them without knowing); or the organization never reached `after` (its
/// log was restored from an older backup, or lost events in a crash under `interval`/`never`
/// durability): `409 position_ahead`, since the reader would wait for numbers that will go to
/// other events.
async fn check_nothing_after(
    state: &AppState,
    org: trueline_core::ids::OrgId,
    after: u64,
) -> Result<(), ApiError> {
    let last = state.events.last_position(org).await?;
    if after > last {
        return Err(ApiError::new(
            codes::POSITION_AHEAD,
            format!(
                "position {after} is past this organization's last event ({last}): the log does \
                 not hold what this reader saw; resume from after={last} or from the start"
            ),
        ));
    }
    if after < last {
        // Read once more: an append that landed after the first read is not a drop.
        let kept = state
            .events
            .events_after(org, after, ReadLimit::events(1), &EventFilter::default())
            .await?;
        if kept.is_empty() {
            return Err(ApiError::new(
                codes::EVENTS_DROPPED,
                format!(
                    "the events after position {after} up to {last} were dropped by retention \
                     and nothing newer is kept (resume from after={last})"
                ),
            ));
        }
    }
    Ok(())
}

/// A stream read that starts at a version retention dropped would begin at the oldest kept
/// version, or find nothing, without a word: `410 events_dropped`. `first`: the page's first
/// version. Reading forward from the start (version 1), or past the last version, is no drop;
/// a backward page that ends above version 1 points its cursor below, where this answers.
async fn check_stream_kept(
    state: &AppState,
    org: trueline_core::ids::OrgId,
    stream: &str,
    from: u64,
    direction: ReadDirection,
    first: Option<u64>,
) -> Result<(), ApiError> {
    let dropped = |up_to: u64, rest: String| {
        ApiError::new(
            codes::EVENTS_DROPPED,
            format!("versions up to {up_to} of stream {stream} were dropped by retention; {rest}"),
        )
    };
    match (direction, first) {
        (ReadDirection::Forward, Some(oldest)) if from > 1 && oldest > from => {
            return Err(dropped(oldest - 1, format!("the oldest kept is {oldest}")));
        }
        (_, Some(_)) => return Ok(()),
        (_, None) => {}
    }
    // An empty page: did the wanted versions exist?
    let last = state.events.stream_version(org, stream).await?;
    let (existed, up_to) = match direction {
        ReadDirection::Forward => (from > 1 && from <= last, last),
        ReadDirection::Backward => (from >= 1 && last >= 1, from.min(last)),
    };
    if !existed {
        return Ok(());
    }
    // Read once more: an append that landed after the first read is not a drop.
    let kept = state
        .events
        .read_stream(org, stream, from, direction, ReadLimit::events(1))
        .await?;
    if kept.is_empty() {
        return Err(dropped(up_to, "none of them is kept".into()));
    }
    Ok(())
}

/// The `Last-Event-ID` a reconnecting client sends: absent or empty means none. Anything else
/// must be a position: a value the server never sent is refused rather than read as "from
/// the start" (the whole history again) or as a position past the end (a stream that never
/// delivers).
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().map(str::trim).unwrap_or("\u{0}");
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u64>() {
        // Positions start at 1: the server never sends id 0.
        Ok(position) if position > 0 && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(position))
        }
        _ => Err(ApiError::field(
            "/header/last-event-id",
            "invalid_value",
            "must be the id of an event this stream sent (a position)",
        )),
    }
}

/// One of an organization's open subscriptions, given back when the stream is dropped (the
/// client went away: noticed at the latest by the next keep-alive, 15 s). Each holds a task,
/// a connection and up to a read batch of events, so an organization may hold only
/// `subscriptions_per_org` at once on an instance.
struct SubscriptionSlot {
    _held: crate::slots::Slot<trueline_core::ids::OrgId>,
}

impl SubscriptionSlot {
    fn take(state: &AppState, org: trueline_core::ids::OrgId) -> Result<Self, ApiError> {
        let max = state.settings.subscriptions_per_org;
        let slot = state.subscriptions.take(org, max).ok_or_else(|| {
            ApiError::new(
                codes::TOO_MANY_SUBSCRIPTIONS,
                format!(
                    "this organization has {max} event subscriptions open on this server; \
                     close one first"
                ),
            )
            .retry_after(15)
        })?;
        Ok(Self { _held: slot })
    }
}

/// One subscriber's cursor: reads from its own position, so it never holds writers back.
struct Live {
    _slot: SubscriptionSlot,
    token_hash: [u8; 32],
    /// The subscriber's role as of the last check: it decides which events it is sent.
    role: Role,
    /// When the token was last found valid (the server's clock).
    checked_at: OffsetDateTime,
    state: AppState,
    org: trueline_core::ids::OrgId,
    position: u64,
    pending: std::vec::IntoIter<EventRecord>,
    changes: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Live {
    /// The next event the subscriber's role reads ([`visible_to`]); the others are passed
    /// over (the position still moves past them).
    async fn next_visible(&mut self) -> Option<EventRecord> {
        loop {
            let event = self.next().await?;
            if visible_to(self.role, &event.event_type) {
                return Some(event);
            }
        }
    }

    /// The next event, waiting for one if caught up; `None` when the server shuts down or
    /// the store fails (the client reconnects with `Last-Event-ID`).
    async fn next(&mut self) -> Option<EventRecord> {
        loop {
            if let Some(event) = self.pending.next() {
                self.position = event.position;
                return Some(event);
            }
            if *self.shutdown.borrow() {
                return None;
            }
            if !self.token_still_valid().await {
                return None;
            }
            // Mark the current change as seen BEFORE reading, so an append that lands between
            // the read and the wait still wakes us.
            self.changes.borrow_and_update();
            let filter = EventFilter::default();
            match self
                .state
                .events
                .events_after(
                    self.org,
                    self.position,
                    ReadLimit {
                        events: SUBSCRIBE_READ_BATCH,
                        bytes: PAGE_BYTES_MAX,
                    },
                    &filter,
                )
                .await
            {
                // Positions are gapless per organization, so a first event past the next
                // position means retention dropped events this subscriber had not read yet
                // (the store reads from the oldest kept one). The stream ends rather than
                // skip them silently: the client's reconnect with `Last-Event-ID` gets the
                // `410 events_dropped` a catch-up read gets. (From the start, position 0,
                // the oldest kept event is where the subscription begins.)
                Ok(events)
                    if self.position > 0
                        && events
                            .first()
                            .is_some_and(|e| e.position != self.position + 1) =>
                {
                    tracing::info!(
                        event = "events.subscription_ended",
                        code = "events_dropped",
                        position = self.position,
                        oldest_kept = events[0].position
                    );
                    return None;
                }
                Ok(events) if !events.is_empty() => self.pending = events.into_iter(),
                Ok(_) => {
                    tokio::select! {
                        _ = self.changes.changed() => {}
                        _ = self.shutdown.changed() => {}
                        // Wake-ups from other instances may be missed; re-read now and then.
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(event = "events.subscription_failed", error = %e);
                    return None;
                }
            }
        }
    }
}

impl Live {
    /// Whether the subscription's token still reads this organization's events, asked at most
    /// every [`SUBSCRIPTION_RECHECK`]. The principal was checked once, when the stream opened;
    /// without this a revoked or expired token (or a removed member) kept reading new events
    /// for as long as the connection stayed open. When it no longer does, the stream ends and
    /// the client's reconnect gets the 401.
    async fn token_still_valid(&mut self) -> bool {
        let now = self.state.clock.now();
        // (A clock set back counts as due: the check must not pause until it catches up.)
        if now >= self.checked_at && now - self.checked_at < SUBSCRIPTION_RECHECK {
            return true;
        }
        match principal_for(&self.state, &self.token_hash).await {
            Ok(p) if p.org_id == self.org => {
                self.checked_at = now;
                // A demotion applies from here on (a promotion too).
                self.role = p.role;
                true
            }
            Ok(_) => false,
            // The token no longer holds: end, and the reconnect gets the 401.
            Err(e) if e.code.status == axum::http::StatusCode::UNAUTHORIZED => {
                tracing::info!(
                    event = "events.subscription_ended",
                    code = e.code.code,
                    position = self.position
                );
                false
            }
            // The accounts store is unavailable for a moment: keep streaming and ask again at
            // the next read, rather than dropping every subscription at once.
            Err(e) => {
                tracing::warn!(
                    event = "events.subscription_recheck_failed",
                    code = e.code.code
                );
                true
            }
        }
    }
}

/// Totals of the organization's events and facts about the event storage.
#[utoipa::path(get, path = "/stats", tag = "events", security(("bearer" = [])),
    responses((status = 200, description = "Statistics", body = StatsResponse)))]
async fn stats(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<StatsResponse>, ApiError> {
    let s = state.events.stats(p.org_id).await?;
    Ok(Json(StatsResponse {
        organization: OrgStatsView {
            events: s.events,
            bytes: s.bytes,
            streams: s.streams,
            first_position: s.first_position,
            last_position: s.last_position,
        },
        storage: tenant_visible(state.events.storage()),
    }))
}

/// The storage facts a tenant may see. Totals over the whole log (events, bytes, segments,
/// index memory) count every organization's events, so showing them would let one
/// organization watch another's activity; operators have them in `/metrics` and
/// `trueline eventlog verify`.
const TENANT_VISIBLE_STORAGE_KEYS: &[&str] = &[
    "backend",
    "last_recovery_ms",
    "last_recovery_truncated_bytes",
    "writer_failure",
];

fn tenant_visible(storage: Value) -> Value {
    match storage {
        Value::Object(facts) => Value::Object(
            facts
                .into_iter()
                .filter(|(key, _)| TENANT_VISIBLE_STORAGE_KEYS.contains(&key.as_str()))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_see_no_totals_of_the_whole_log() {
        let storage = serde_json::json!({"backend": "file", "segments": 3, "bytes": 10,
            "events": 7, "index_memory_bytes": 5, "last_recovery_ms": 1.5,
            "last_recovery_truncated_bytes": 0, "writer_failure": null});
        assert_eq!(
            tenant_visible(storage),
            serde_json::json!({"backend": "file", "last_recovery_ms": 1.5,
                "last_recovery_truncated_bytes": 0, "writer_failure": null})
        );
    }
}
