//! Webhooks: subscriptions (admin and above), their deliveries and redelivery.

use crate::extract::{ApiJson, ApiQuery, PathId, Principal};
use crate::idempotency::{Idem, Stored, json_response};
use crate::list_type;
use crate::observe::RequestId;
use crate::pagination::ListQuery;
use crate::problem::{ApiError, codes};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use time::OffsetDateTime;
use trueline_core::accounts::Role;
use trueline_store::{Actor, Delivery, DeliveryState, NewWebhook, Webhook};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
}

pub const WEBHOOK_URL_CHARS_MAX: usize = 2000;
pub const WEBHOOK_EVENT_TYPES_MAX: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    /// Exact event types, or prefixes ending in `*`; empty: every event.
    pub event_types: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: Uuid,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url.clone(),
            event_types: w.event_types.clone(),
            created_at: w.created_at,
            created_by: w.created_by.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The signing secret. Shown once: store it now.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// An `http://` or `https://` URL (loopback and private addresses are refused).
    pub url: String,
    #[serde(default)]
    pub event_types: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending`, `succeeded` or `dead` (out of attempts).
    pub state: String,
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub attempt_log: Vec<AttemptView>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        Self {
            id: d.id,
            webhook_id: d.webhook_id,
            event_id: d.event_id.0,
            event_type: d.event_type.clone(),
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            attempt_log: d
                .attempt_log
                .iter()
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    at: a.at,
                    status: a.status,
                    error: a.error.clone(),
                    duration_ms: a.duration_ms,
                })
                .collect(),
        }
    }
}

list_type!(WebhookList, WebhookView);
list_type!(DeliveryList, DeliveryView);

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `succeeded` or `dead`.
    pub state: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Loopback, private, link-local, unique-local, unspecified or multicast: a webhook must not
/// make the server call into its own network.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                // 0.0.0.0/8, "this network": Linux connects 0.x.y.z to the host itself.
                || v4.octets()[0] == 0
                || v4.is_broadcast()
                || v4.is_multicast()
                // 100.64.0.0/10 shared (carrier-grade NAT), 192.0.0.0/24 protocol
                // assignments, 198.18.0.0/15 benchmarking, 240.0.0.0/4 reserved.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
                || v4.octets()[..3] == [192, 0, 0]
                || (v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18)
                || v4.octets()[0] >= 240
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                // fec0::/10, the deprecated site-local range some networks still route.
                || (v6.segments()[0] & 0xffc0) == 0xfec0
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
                // ::a.b.c.d, the deprecated IPv4-compatible form, which stacks may still
                // route to the IPv4 address.
                || (v6.segments()[..6] == [0; 6]
                    && is_private(IpAddr::V4(std::net::Ipv4Addr::from_bits(
                        (v6.to_bits() & 0xffff_ffff) as u32,
                    ))))
                // 2002::/16, 6to4: the IPv4 address in bits 16..48 is the relay's target.
                || (v6.segments()[0] == 0x2002
                    && is_private(IpAddr::V4(std::net::Ipv4Addr::from_bits(
                        ((v6.to_bits() >> 80) & 0xffff_ffff) as u32,
                    ))))
                // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): it translates to whatever
                // IPv4 network the operator chose, private ones included.
                || v6.segments()[..3] == [0x64, 0xff9b, 1]
                // 64:ff9b::/96, NAT64: the IPv4 address in its last 32 bits is the target.
                || (v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                    && is_private(IpAddr::V4(std::net::Ipv4Addr::from_bits(
                        (v6.to_bits() & 0xffff_ffff) as u32,
                    ))))
        }
    }
}

fn check_url(raw: &str, allow_private: bool) -> Result<String, ApiError> {
    let invalid = |detail: &str| ApiError::field("/url", "invalid_url", detail.to_owned());
    if raw.chars().count() > WEBHOOK_URL_CHARS_MAX {
        return Err(invalid("must be at most 2000 characters"));
    }
    let url = url::Url::parse(raw.trim()).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http:// and https:// URLs are allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials in the URL are not allowed (the payload is signed)",
        ));
    }
    let host = url.host().ok_or_else(|| invalid("the URL needs a host"))?;
    let private = match host {
        url::Host::Ipv4(ip) => is_private(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => is_private(IpAddr::V6(ip)),
        url::Host::Domain(name) => {
            let name = name.to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost") || name.ends_with(".internal")
        }
    };
    if private && !allow_private {
        return Err(invalid("loopback and private-network targets are refused"));
    }
    // Counted again as it is stored: the parser percent-encodes (`é` becomes six
    // characters), and the schema's bound would refuse a longer one as an internal error.
    let url = url.to_string();
    if url.chars().count() > WEBHOOK_URL_CHARS_MAX {
        return Err(invalid(
            "must be at most 2000 characters once percent-encoded",
        ));
    }
    Ok(url)
}

fn new_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    Ok(format!(
        "whsec_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn actor(p: &Principal, state: &AppState, rid: &RequestId) -> Actor {
    Actor {
        org_id: p.org_id,
        user_id: p.user_id,
        role: p.role,
        request_id: rid.0.clone(),
        now: state.clock.now(),
    }
}

/// Subscribe a URL to events (admin). The signing secret is in the response, once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = CreateWebhookRequest,
    responses((status = 201, description = "Created; `secret` is shown only now", body = CreatedWebhook),
              (status = 409, description = "`idempotency_key_other_token`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn create_webhook(
    State(state): State<AppState>,
    p: Principal,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<CreateWebhookRequest>,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let url = check_url(&body.url, state.allow_private_webhook_targets)?;
    if body.event_types.len() > WEBHOOK_EVENT_TYPES_MAX {
        return Err(ApiError::field(
            "/event_types",
            "invalid_length",
            "at most 50 entries",
        ));
    }
    for (i, t) in body.event_types.iter().enumerate() {
        if t.is_empty() || t.len() > 128 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ApiError::field(
                &format!("/event_types/{i}"),
                "invalid_value",
                "an event type or a prefix ending in *",
            ));
        }
    }
    let secret = new_secret()?;
    let new = NewWebhook {
        id: Uuid::now_v7(),
        url,
        event_types: body.event_types,
        secret: secret.clone(),
    };
    // The secret is part of the stored (replayable) response: a retried create must hand the
    // caller the secret of the webhook that was actually created. That copy is sealed to the
    // caller's bearer token (the webhooks table keeps the secret to sign with).
    let render = |w: &Webhook| {
        json_response(
            StatusCode::CREATED,
            &[],
            &CreatedWebhook {
                webhook: WebhookView::from(w),
                secret: secret.clone(),
            },
        )
    };
    let sealed = |w: &Webhook| idem.seal(render(w));
    let webhook = state
        .store
        .create_webhook(&actor(&p, &state, &rid), new, idem.with(&sealed))
        .await?;
    tracing::info!(event = "mutation.webhooks.create.success", webhook_id = %webhook.id);
    Ok(Stored(render(&webhook)).into_response())
}

/// The organization's webhooks (secrets are never shown again).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "Webhooks", body = WebhookList)))]
async fn list_webhooks(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<WebhookList>, ApiError> {
    p.require(Role::Admin)?;
    let page = state.store.webhooks(p.org_id, query.page()?).await?;
    Ok(Json(WebhookList::from_page(page, |w| {
        WebhookView::from(&w)
    })))
}

/// One webhook.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, description = "The webhook", body = WebhookView)))]
async fn get_webhook(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
) -> Result<Json<WebhookView>, ApiError> {
    p.require(Role::Admin)?;
    let webhook = state
        .store
        .webhook(p.org_id, id)
        .await?
        .ok_or_else(|| ApiError::new(codes::NOT_FOUND, "webhook not found"))?;
    Ok(Json(WebhookView::from(&webhook)))
}

/// Delete a webhook and its delivery history. Idempotent.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted, or did not exist")))]
async fn delete_webhook(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
) -> Result<StatusCode, ApiError> {
    p.require(Role::Admin)?;
    state
        .store
        .delete_webhook(&actor(&p, &state, &rid), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deliveries of a webhook, newest first, with every attempt and its error.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook id"), DeliveriesQuery),
    responses((status = 200, description = "Deliveries", body = DeliveryList)))]
async fn list_deliveries(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    p.require(Role::Admin)?;
    let filter = match query.state.as_deref() {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            ApiError::field(
                "/query/state",
                "invalid_value",
                "must be pending, succeeded or dead",
            )
        })?),
    };
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    let page = state.store.deliveries(p.org_id, id, filter, page).await?;
    Ok(Json(DeliveryList::from_page(page, |d| {
        DeliveryView::from(&d)
    })))
}

/// Queue a delivery again (typically a dead one), due now.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook id"), ("delivery_id" = Uuid, Path, description = "Delivery id")),
    responses((status = 200, description = "Queued", body = DeliveryView)))]
async fn redeliver(
    State(state): State<AppState>,
    p: Principal,
    Path((id, delivery_id)): Path<(String, String)>,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    _: crate::extract::NoBody,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let parse =
        |raw: &str| Uuid::parse_str(raw).map_err(|_| ApiError::new(codes::NOT_FOUND, "not found"));
    let (id, delivery_id) = (parse(&id)?, parse(&delivery_id)?);
    let render = |d: &Delivery| json_response(StatusCode::OK, &[], &DeliveryView::from(d));
    let delivery = state
        .store
        .redeliver(
            &actor(&p, &state, &rid),
            id,
            delivery_id,
            idem.with(&render),
        )
        .await?;
    tracing::info!(event = "mutation.webhooks.redeliver.success", delivery_id = %delivery.id);
    Ok(Stored(render(&delivery)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_and_not_private_unless_allowed() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        for bad in [
            "ftp://x.com",
            "javascript:alert(1)",
            "http://localhost/x",
            "http://127.0.0.1:8080/",
            "http://10.0.0.1/",
            "http://[::1]/",
            "https://user:pw@example.com/",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
    }
}
