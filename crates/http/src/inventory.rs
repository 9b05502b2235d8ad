//! Inventory: items, guarded quantity deltas, batch adjustments and history.

use crate::extract::{ApiJson, ApiQuery, PathId, Principal};
use crate::idempotency::{DeferredKey, Idem, Stored, json_response};
use crate::list_type;
use crate::observe::RequestId;
use crate::pagination::{ListQuery, decode_cursor};
use crate::problem::{ApiError, codes};
use crate::state::AppState;
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;
use trueline_core::accounts::Role;
use trueline_core::ids::ItemId;
use trueline_core::inventory::{
    ADJUSTMENT_LINES_MAX, ADJUSTMENT_REASON_CHARS_MAX, Delta, ItemName, JSON_SAFE_INTEGER_MAX,
    Quantity, Sku,
};
use trueline_core::validation::{FieldError, clean_name, name_key};
use trueline_store::{
    Actor, DeltaJob, DeltaOutcome, HistoryRecord, InlineIdempotency, Item, ItemCursor, ItemFilter,
    ItemPatch, ItemSort, NewItem, PageRequest, QtyChange, StoredResponse,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_item, list_items))
        .routes(routes!(get_item, update_item, delete_item))
        .routes(routes!(adjust_qty))
        .routes(routes!(adjust_batch))
        .routes(routes!(item_history))
}

// ---- wire types ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemView {
    pub id: Uuid,
    pub name: String,
    pub sku: Option<String>,
    /// 0 to 2^53-1.
    pub qty: u64,
    /// +1 on every change; the ETag is `"v<version>"`.
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub created_by: Uuid,
}

impl From<&Item> for ItemView {
    fn from(i: &Item) -> Self {
        Self {
            id: i.id.0,
            name: i.name.clone(),
            sku: i.sku.clone(),
            qty: i.qty,
            version: i.version,
            created_at: i.created_at,
            updated_at: i.updated_at,
            created_by: i.created_by.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    pub id: Uuid,
    pub item_id: Uuid,
    /// The item version this change produced.
    pub version: u64,
    /// `created`, `renamed`, `updated` (SKU), `qty_changed` or `deleted`.
    pub kind: String,
    /// Quantity change; the deltas of an item's records sum to its quantity.
    pub delta: i64,
    pub qty_after: u64,
    pub name: String,
    pub sku: Option<String>,
    pub reason: Option<String>,
    pub actor_user_id: Uuid,
    pub request_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl From<HistoryRecord> for HistoryView {
    fn from(r: HistoryRecord) -> Self {
        Self {
            id: r.id,
            item_id: r.item_id.0,
            version: r.version,
            kind: r.kind.as_str().to_owned(),
            delta: r.delta,
            qty_after: r.qty_after,
            name: r.name,
            sku: r.sku,
            reason: r.reason,
            actor_user_id: r.actor_user_id.0,
            request_id: r.request_id,
            at: r.at,
        }
    }
}

list_type!(ItemList, ItemView);
list_type!(HistoryList, HistoryView);

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateItemRequest {
    /// 1-200 characters, unique per organization case-insensitively.
    pub name: String,
    /// Initial quantity (default 0), a JSON integer 0..2^53-1.
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 9007199254740991_u64)]
    pub qty: Option<Quantity>,
    pub sku: Option<String>,
}

/// Distinguishes an absent field (keep) from `null` (clear).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItemRequest {
    pub name: Option<String>,
    /// A string sets the SKU, `null` clears it, absent keeps it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub sku: Option<Option<String>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QtyDeltaRequest {
    /// A non-zero JSON integer within ±(2^53-1); `true`, `1.0`, `"1"` and `null` are refused.
    #[schema(value_type = i64, minimum = -9007199254740991_i64, maximum = 9007199254740991_i64)]
    pub delta: Delta,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentLine {
    pub item_id: Uuid,
    #[schema(value_type = i64, minimum = -9007199254740991_i64, maximum = 9007199254740991_i64)]
    pub delta: Delta,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentsRequest {
    /// Recorded on every history record of the batch (up to 500 characters).
    pub reason: Option<String>,
    /// 1 to 100 lines, applied all-or-nothing in this order.
    pub adjustments: Vec<AdjustmentLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdjustmentsResponse {
    /// Every adjusted item after the batch, in order of first appearance.
    pub items: Vec<ItemView>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ItemListQuery {
    /// Name contains this text (case-insensitive).
    pub q: Option<String>,
    pub min_qty: Option<u64>,
    pub max_qty: Option<u64>,
    /// `name`, `-name`, `qty`, `-qty`, `created_at` (default) or `-created_at`.
    pub sort: Option<String>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// ---- helpers ----

pub fn etag(version: u64) -> String {
    format!("\"v{version}\"")
}

fn item_response(status: StatusCode, item: &Item, location: bool) -> StoredResponse {
    let mut headers = vec![("etag", etag(item.version))];
    if location {
        headers.push(("location", format!("/api/v1/items/{}", item.id)));
    }
    json_response(status, &headers, &ItemView::from(item))
}

fn actor(p: &Principal, state: &AppState, request_id: &RequestId) -> Actor {
    Actor {
        org_id: p.org_id,
        user_id: p.user_id,
        role: p.role,
        request_id: request_id.0.clone(),
        now: state.clock.now(),
    }
}

fn log_outcome<T>(
    action: &str,
    result: &Result<T, ApiError>,
    fields: impl FnOnce(&T) -> (String, i64, u64),
) {
    match result {
        Ok(value) => {
            let (item_id, delta, qty_after) = fields(value);
            tracing::info!(
                event = %format!("mutation.inventory.{action}.success"),
                item_id = %item_id,
                delta,
                qty_after,
            );
        }
        Err(e) => tracing::info!(
            event = %format!("mutation.inventory.{action}.rejected"),
            code = e.code.code,
        ),
    }
}

/// Parses `If-Match`: `*`, or one or more `"v<version>"` (weak or strong) tags.
/// `Ok(None)` for `*`.
fn if_match(headers: &HeaderMap) -> Result<Option<Vec<u64>>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err(ApiError::new(
            codes::PRECONDITION_REQUIRED,
            "send If-Match with the item's ETag (from GET) to update it",
        ));
    };
    let value = value.to_str().unwrap_or("");
    if value.trim() == "*" {
        return Ok(None);
    }
    // `If-Match` compares strongly (RFC 9110, 13.1.1): a weak tag never matches. (The
    // server only hands out strong ones.)
    let versions = value
        .split(',')
        .filter_map(|tag| {
            tag.trim()
                .strip_prefix("\"v")?
                .strip_suffix('"')?
                .parse::<u64>()
                .ok()
        })
        .collect();
    Ok(Some(versions))
}

// ---- handlers ----

/// Create an item.
#[utoipa::path(post, path = "/items", tag = "inventory", security(("bearer" = [])),
    request_body = CreateItemRequest,
    responses((status = 201, description = "Created; `Location` and `ETag` headers", body = ItemView),
              (status = 409, description = "`name_taken`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn create_item(
    State(state): State<AppState>,
    p: Principal,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<CreateItemRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Member)?;
        let mut errors = Vec::new();
        let name = ItemName::parse(&body.name)
            .map_err(|e| errors.push(e.at("/name")))
            .ok();
        let sku = match &body.sku {
            Some(raw) => Sku::parse(raw)
                .map(Some)
                .map_err(|e| errors.push(e.at("/sku")))
                .ok()
                .flatten(),
            None => None,
        };
        let (Some(name), true) = (name, errors.is_empty()) else {
            return Err(ApiError::validation(errors));
        };
        let new = NewItem {
            id: ItemId::new(),
            name,
            sku,
            qty: body.qty.unwrap_or(Quantity::ZERO),
        };
        let render = |item: &Item| item_response(StatusCode::CREATED, item, true);
        let item = state
            .store
            .create_item(&actor(&p, &state, &rid), new, idem.with(&render))
            .await?;
        Ok((render(&item), item))
    }
    .await;
    log_outcome("item_created", &result, |(_, i)| {
        (i.id.to_string(), i.qty as i64, i.qty)
    });
    Ok(Stored(result?.0).into_response())
}

/// List items: filter by name and quantity, sort, keyset pagination.
#[utoipa::path(get, path = "/items", tag = "inventory", security(("bearer" = [])),
    params(ItemListQuery),
    responses((status = 200, description = "A page of items", body = ItemList)))]
async fn list_items(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<ItemListQuery>,
) -> Result<axum::Json<ItemList>, ApiError> {
    let sort = match query.sort.as_deref().unwrap_or("created_at") {
        "name" => ItemSort::NameAsc,
        "-name" => ItemSort::NameDesc,
        "qty" => ItemSort::QtyAsc,
        "-qty" => ItemSort::QtyDesc,
        "created_at" => ItemSort::CreatedAsc,
        "-created_at" => ItemSort::CreatedDesc,
        _ => {
            return Err(ApiError::field(
                "/query/sort",
                "invalid_value",
                "must be one of name, -name, qty, -qty, created_at, -created_at",
            ));
        }
    };
    let mut errors: Vec<FieldError> = Vec::new();
    for (field, value) in [("min_qty", query.min_qty), ("max_qty", query.max_qty)] {
        if value.is_some_and(|v| v > JSON_SAFE_INTEGER_MAX as u64) {
            errors.push(FieldError::new(
                format!("/query/{field}"),
                "out_of_range",
                "must be at most 2^53-1",
            ));
        }
    }
    if let (Some(min), Some(max)) = (query.min_qty, query.max_qty)
        && min > max
    {
        errors.push(FieldError::new(
            "/query/min_qty",
            "invalid_value",
            "must not exceed max_qty",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let name_contains = match query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => Some(name_key(
            &clean_name(q, 200).map_err(|e| ApiError::validation(vec![e.at("/query/q")]))?,
        )),
        None => None,
    };
    let list = ListQuery {
        limit: query.limit,
        cursor: None,
    };
    let mut page: PageRequest<ItemCursor> = list.page()?;
    if let Some(cursor) = &query.cursor {
        let cursor: ItemCursor = decode_cursor(cursor)?;
        if cursor.sort != sort {
            return Err(ApiError::new(
                codes::INVALID_CURSOR,
                "the cursor belongs to another sort order",
            ));
        }
        if !cursor.is_well_formed() {
            return Err(ApiError::new(
                codes::INVALID_CURSOR,
                "the cursor is not one this server issued",
            ));
        }
        page.after = Some(cursor);
    }
    let filter = ItemFilter {
        name_contains,
        min_qty: query.min_qty,
        max_qty: query.max_qty,
        sort,
    };
    let page = state.store.items(p.org_id, &filter, page).await?;
    Ok(axum::Json(ItemList::from_page(page, |i| {
        ItemView::from(&i)
    })))
}

/// Get an item. `If-None-Match` with its ETag answers 304.
#[utoipa::path(get, path = "/items/{id}", tag = "inventory", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Item id")),
    responses((status = 200, description = "The item; `ETag` header", body = ItemView),
              (status = 304, description = "Not modified")))]
async fn get_item(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let item = state
        .store
        .item(p.org_id, ItemId(id))
        .await?
        .ok_or_else(|| ApiError::new(codes::NOT_FOUND, "item not found"))?;
    let tag = etag(item.version);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag || t.trim() == "*")
        });
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    Ok(Stored(item_response(StatusCode::OK, &item, false)).into_response())
}

/// Rename an item or change its SKU. Requires `If-Match` with the current ETag.
#[utoipa::path(patch, path = "/items/{id}", tag = "inventory", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Item id"),
           ("If-Match" = String, Header, description = "The item's ETag, e.g. \"v3\"")),
    request_body = UpdateItemRequest,
    responses((status = 200, description = "Updated; new `ETag`", body = ItemView),
              (status = 409, description = "`name_taken`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`: stale ETag", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 428, description = "`precondition_required`: no If-Match", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn update_item(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateItemRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Member)?;
        let versions = if_match(&headers)?;
        let mut errors = Vec::new();
        let name = match &body.name {
            Some(raw) => ItemName::parse(raw)
                .map(Some)
                .map_err(|e| errors.push(e.at("/name")))
                .ok()
                .flatten(),
            None => None,
        };
        let sku = match &body.sku {
            Some(Some(raw)) => Sku::parse(raw)
                .map(|s| Some(Some(s)))
                .map_err(|e| errors.push(e.at("/sku")))
                .ok()
                .flatten(),
            Some(None) => Some(None),
            None => None,
        };
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let expected = match versions {
            None => None,
            Some(versions) => {
                let current = state
                    .store
                    .item(p.org_id, ItemId(id))
                    .await?
                    .ok_or_else(|| ApiError::new(codes::NOT_FOUND, "item not found"))?;
                // Several tags may be listed; the store checks the one that names the
                // current version (or the first, which then fails with the current one).
                Some(
                    versions
                        .iter()
                        .copied()
                        .find(|v| *v == current.version)
                        .unwrap_or(versions.first().copied().unwrap_or(0)),
                )
            }
        };
        let render = |item: &Item| item_response(StatusCode::OK, item, false);
        let item = state
            .store
            .update_item(
                &actor(&p, &state, &rid),
                ItemId(id),
                expected,
                ItemPatch { name, sku },
                idem.with(&render),
            )
            .await?;
        Ok((render(&item), item))
    }
    .await;
    log_outcome("item_updated", &result, |(_, i)| {
        (i.id.to_string(), 0, i.qty)
    });
    Ok(Stored(result?.0).into_response())
}

/// Delete an item (its history is kept). Idempotent: deleting an absent item is also 204.
#[utoipa::path(delete, path = "/items/{id}", tag = "inventory", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Item id")),
    responses((status = 204, description = "Deleted, or did not exist")))]
async fn delete_item(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
) -> Result<StatusCode, ApiError> {
    let result = async {
        p.require(Role::Member)?;
        Ok(state
            .store
            .delete_item(&actor(&p, &state, &rid), ItemId(id))
            .await?)
    }
    .await;
    log_outcome("item_deleted", &result, |_| (id.to_string(), 0, 0));
    result?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the quantity by a delta, atomically and never below zero.
#[utoipa::path(patch, path = "/items/{id}/qty", tag = "inventory", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Item id")),
    request_body = QtyDeltaRequest,
    responses((status = 200, description = "The item after the change", body = ItemView)))]
async fn adjust_qty(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    deferred: Option<Extension<DeferredKey>>,
    ApiJson(body): ApiJson<QtyDeltaRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Member)?;
        let actor = actor(&p, &state, &rid);
        if let Some(combiner) = &state.combiner {
            let lock = time::Duration::try_from(state.settings.idempotency_lock)
                .unwrap_or(time::Duration::MINUTE);
            let idempotency = deferred.map(|Extension(key)| InlineIdempotency {
                scope: key.scope,
                fingerprint: key.fingerprint,
                locked_until: actor.now + lock,
                render: Arc::new(|item: &Item| item_response(StatusCode::OK, item, false)),
            });
            let job = DeltaJob {
                actor,
                item_id: ItemId(id),
                delta: body.delta,
                idempotency,
            };
            return match combiner.submit(job).await? {
                DeltaOutcome::Applied(item) => {
                    Ok((item_response(StatusCode::OK, &item, false), item.qty, false))
                }
                DeltaOutcome::Replayed(stored) => Ok((stored, 0, true)),
                DeltaOutcome::Refused(e) => Err(ApiError::from(e)),
            };
        }
        let render = |item: &Item| item_response(StatusCode::OK, item, false);
        let item = state
            .store
            .adjust_qty(&actor, ItemId(id), body.delta, idem.with(&render))
            .await?;
        Ok((render(&item), item.qty, false))
    }
    .await;
    log_outcome("qty_delta", &result, |(_, qty, _)| {
        (id.to_string(), body.delta.get(), *qty)
    });
    let (stored, _, replayed) = result?;
    let mut response = Stored(stored).into_response();
    if replayed {
        response.headers_mut().insert(
            crate::idempotency::IDEMPOTENT_REPLAYED.clone(),
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// Apply 1-100 quantity deltas across items, all or nothing.
#[utoipa::path(post, path = "/inventory/adjustments", tag = "inventory", security(("bearer" = [])),
    request_body = AdjustmentsRequest,
    responses((status = 200, description = "Every line applied", body = AdjustmentsResponse)))]
async fn adjust_batch(
    State(state): State<AppState>,
    p: Principal,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<AdjustmentsRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Member)?;
        let count = body.adjustments.len();
        if count == 0 || count > ADJUSTMENT_LINES_MAX {
            return Err(ApiError::field(
                "/adjustments",
                "invalid_length",
                format!("must contain 1 to {ADJUSTMENT_LINES_MAX} lines, got {count}"),
            ));
        }
        let reason = match &body.reason {
            Some(raw) => Some(
                clean_name(raw, ADJUSTMENT_REASON_CHARS_MAX)
                    .map_err(|e| ApiError::validation(vec![e.at("/reason")]))?,
            ),
            None => None,
        };
        let lines: Vec<QtyChange> = body
            .adjustments
            .iter()
            .map(|l| QtyChange {
                item_id: ItemId(l.item_id),
                delta: l.delta,
            })
            .collect();
        let render = |items: &Vec<Item>| {
            json_response(
                StatusCode::OK,
                &[],
                &AdjustmentsResponse {
                    items: items.iter().map(ItemView::from).collect(),
                },
            )
        };
        let items = state
            .store
            .adjust_batch(&actor(&p, &state, &rid), reason, &lines, idem.with(&render))
            .await?;
        Ok(render(&items))
    }
    .await;
    log_outcome("adjustments", &result, |_| {
        (String::new(), body.adjustments.len() as i64, 0)
    });
    Ok(Stored(result?).into_response())
}

/// The immutable history of an item (kept after deletion), oldest first.
#[utoipa::path(get, path = "/items/{id}/history", tag = "inventory", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Item id"), ListQuery),
    responses((status = 200, description = "History records", body = HistoryList)))]
async fn item_history(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<HistoryList>, ApiError> {
    let page: trueline_store::PageRequest<u64> = query.page()?;
    // Versions are stored as signed 64-bit integers: a larger one was not issued here.
    if page.after.is_some_and(|v| i64::try_from(v).is_err()) {
        return Err(ApiError::new(
            codes::INVALID_CURSOR,
            "the cursor is not one this server issued",
        ));
    }
    let page = state.store.history(p.org_id, ItemId(id), page).await?;
    Ok(axum::Json(HistoryList::from_page(page, HistoryView::from)))
}

#[cfg(test)]
mod tests {
    use super::if_match;
    use axum::http::{HeaderMap, HeaderValue, header};
    use proptest::prelude::*;

    fn headers(raw: &[u8]) -> Option<HeaderMap> {
        let value = HeaderValue::from_bytes(raw).ok()?;
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, value);
        Some(headers)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Arbitrary header bytes never panic; whatever they are, the versions found are only
        /// ones written as `"v<n>"` in the header.
        #[test]
        fn if_match_never_panics(raw in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Some(headers) = headers(&raw)
                && let Ok(Some(versions)) = if_match(&headers)
            {
                let text = String::from_utf8_lossy(&raw);
                for v in versions {
                    let tag = v.to_string();
                    prop_assert!(text.contains(&tag), "{} not in {}", tag, text);
                }
            }
        }

        /// A list of (weak or strong) tags yields exactly their versions.
        #[test]
        fn if_match_lists_round_trip(tags in prop::collection::vec((any::<u64>(), any::<bool>()), 1..6)) {
            let raw = tags
                .iter()
                .map(|(v, weak)| format!("{}\"v{v}\"", if *weak { "W/" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ");
            let got = if_match(&headers(raw.as_bytes()).unwrap()).unwrap();
            // Weak tags never match If-Match.
            let strong: Vec<u64> = tags.iter().filter(|(_, weak)| !weak).map(|(v, _)| *v).collect();
            prop_assert_eq!(got, Some(strong));
        }
    }

    #[test]
    fn a_star_matches_any_version_and_a_missing_header_is_refused() {
        assert_eq!(if_match(&headers(b" * ").unwrap()).unwrap(), None);
        assert!(if_match(&HeaderMap::new()).is_err());
    }
}
