//! Delivery: the outbox relay's leases and progress, webhooks and their delivery jobs.
//!
//! The relay leases whole organizations per destination (so one organization's events are
//! published by one relay at a time, in order), publishes the leased rows, then completes
//! them; completing the event-log destination also creates the webhook delivery jobs, once per
//! (webhook, event), in the same transaction.

use crate::{Actor, Idempotency, Page, PageRequest, StoreError};
use time::OffsetDateTime;
use trueline_core::ids::{EventId, OrgId, UserId};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    EventLog,
    Nats,
}

impl Destination {
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::EventLog => "eventlog",
            Destination::Nats => "nats",
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: EventId,
    pub org_id: OrgId,
    pub event_type: String,
    pub stream: String,
    /// The event's data as JSON text, not parsed: the relay hands it on as it is, and
    /// parsing and writing again every row of a round was a share of the relay's cost. On
    /// SQLite the stored text (which serde_json wrote: compact, keys sorted); on PostgreSQL
    /// the `jsonb` value written again by serde_json (the same form).
    pub payload: Box<serde_json::value::RawValue>,
    pub created_at: OffsetDateTime,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub pending: u64,
    pub oldest_pending_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: Uuid,
    pub org_id: OrgId,
    pub url: String,
    /// Exact types, or prefixes ending in `*`; empty matches every event.
    pub event_types: Vec<String>,
    pub created_at: OffsetDateTime,
    pub created_by: UserId,
}

impl Webhook {
    pub fn matches(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self.event_types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => t == event_type,
            })
    }
}

#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    /// Shown once to the caller; used to sign deliveries.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub org_id: OrgId,
    pub event_id: EventId,
    pub event_type: String,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Succeeded,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "succeeded" => DeliveryState::Succeeded,
            "dead" => DeliveryState::Dead,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub at: OffsetDateTime,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: EventId,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: OffsetDateTime,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub attempt_log: Vec<DeliveryAttempt>,
}

/// A delivery leased for an attempt, with what the worker needs to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub org_id: OrgId,
    pub event_id: EventId,
    pub event_type: String,
    pub url: String,
    pub secret: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    /// The lease this worker holds (`locked_until` as leased): recording the attempt requires
    /// it to still be the delivery's, so a worker whose lease was lost (a redelivery, or a
    /// takeover after it ran out) cannot overwrite a newer state.
    pub leased_until: OffsetDateTime,
}

/// `scheme://host[:port]` of a stored webhook URL: what audit records and events tell of a
/// webhook. The path and query may carry a secret (a token the receiver checks), and events
/// reach every member, NATS subscribers and other webhooks' receivers.
pub fn url_origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// Which due deliveries a lease may take (see [`DeliveryStore::lease_deliveries`]).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryLease<'a> {
    /// Deliveries in flight at most per organization.
    pub per_org: u32,
    /// Organizations with deliveries in flight, and how many.
    pub in_flight: &'a [(OrgId, u32)],
}

impl DeliveryLease<'_> {
    /// Nothing in flight, no bound per organization.
    pub const ANY: DeliveryLease<'static> = DeliveryLease {
        per_org: u32::MAX,
        in_flight: &[],
    };

    /// The organizations that have `per_org` in flight: none of theirs is looked at.
    pub fn saturated(&self) -> impl Iterator<Item = OrgId> + '_ {
        self.in_flight
            .iter()
            .filter(|(_, n)| *n >= self.per_org)
            .map(|(org, _)| *org)
    }
}

/// Due deliveries looked at per lease (the earliest): the turns are taken among them, so a
/// backlog of millions is not sorted on every poll.
pub const LEASE_WINDOW: u32 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    RetryAt(OffsetDateTime),
    /// Out of attempts: the delivery moves to the dead-letter list.
    Dead,
}

#[async_trait::async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Leases up to `max_orgs` organizations with pending rows for `destination` (whose
    /// lease is free, expired or already ours) and returns their pending rows, each one's in
    /// sequence order: up to `max_rows / organizations` of each (at least one), so a round
    /// holds at most `max_rows` rows unless it has more organizations than that.
    #[allow(clippy::too_many_arguments)]
    /// `skip`: organizations the caller is not taking now (backing off after failures); they
    /// neither take a place among `max_orgs` nor keep others out.
    #[allow(clippy::too_many_arguments)]
    async fn lease_outbox(
        &self,
        destination: Destination,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
        max_orgs: u32,
        max_rows: u32,
        skip: &[OrgId],
    ) -> Result<Vec<OutboxRow>, StoreError>;

    /// Marks rows published for `destination` and inserts `deliveries` (ignoring ones that
    /// exist), in one transaction; returns how many rows changed.
    async fn complete_outbox(
        &self,
        destination: Destination,
        seqs: &[i64],
        deliveries: &[NewDelivery],
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// Records a failed publication attempt of `seqs`.
    async fn fail_outbox(&self, seqs: &[i64], error: &str) -> Result<(), StoreError>;

    /// Deletes up to `limit` rows created before `before` that every destination in use
    /// has published (the event log, and NATS when `nats`), oldest first; returns how many.
    /// A row some destination still waits for is never deleted. The published events stay in
    /// the event log, and webhook deliveries keep their own copy of the payload.
    async fn purge_outbox(
        &self,
        before: OffsetDateTime,
        nats: bool,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Deletes up to `limit` finished deliveries (succeeded or dead) last changed before
    /// `before`, with their attempts, oldest first; returns how many. Pending ones are never
    /// deleted.
    async fn purge_deliveries(&self, before: OffsetDateTime, limit: u32)
    -> Result<u64, StoreError>;

    /// Gives up `holder`'s leases on `destination`.
    async fn release_outbox(
        &self,
        destination: Destination,
        holder: &str,
    ) -> Result<(), StoreError>;

    async fn outbox_stats(&self, destination: Destination) -> Result<OutboxStats, StoreError>;

    /// The webhooks of these organizations (to match events against).
    async fn webhooks_of(&self, orgs: &[OrgId]) -> Result<Vec<Webhook>, StoreError>;

    async fn create_webhook(
        &self,
        actor: &Actor,
        webhook: NewWebhook,
        idempotency: Option<Idempotency<'_, Webhook>>,
    ) -> Result<Webhook, StoreError>;

    async fn webhooks(
        &self,
        org: OrgId,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Webhook, Uuid>, StoreError>;

    async fn webhook(&self, org: OrgId, id: Uuid) -> Result<Option<Webhook>, StoreError>;

    /// Deletes a webhook and its deliveries. `Ok(false)` if it did not exist.
    async fn delete_webhook(&self, actor: &Actor, id: Uuid) -> Result<bool, StoreError>;

    /// Leases up to `limit` pending deliveries that are due, until `until`: the
    /// organizations' earliest first, taking turns (each organization's first delivery
    /// before any second one), and no organization past `per_org` counting the deliveries
    /// the worker has of it in flight (`in_flight`). So one organization whose receiver hangs
    /// cannot hold every slot of the worker while other organizations' deliveries wait
    /// behind its retries.
    async fn lease_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: u32,
        lease: DeliveryLease<'_>,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Records one attempt and its outcome, and releases the lease, if the delivery is still
    /// pending under the lease `leased` describes (`leased_until`, `attempts`). `Ok(false)`:
    /// the lease was lost and nothing was written.
    async fn record_attempt(
        &self,
        leased: &DueDelivery,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError>;

    /// Deliveries of a webhook, newest first, with their attempts.
    async fn deliveries(
        &self,
        org: OrgId,
        webhook_id: Uuid,
        state: Option<DeliveryState>,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Delivery, Uuid>, StoreError>;

    /// Puts a delivery (typically dead) back in the queue, due now. `NotFound`; while an
    /// attempt of it runs (a live lease), `InvalidTransition` from `attempt_in_progress`.
    async fn redeliver(
        &self,
        actor: &Actor,
        webhook_id: Uuid,
        delivery_id: Uuid,
        idempotency: Option<Idempotency<'_, Delivery>>,
    ) -> Result<Delivery, StoreError>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_origin_has_no_path_query_or_fragment() {
        use super::url_origin;
        assert_eq!(
            url_origin("https://hooks.example.com/t/secret?k=v"),
            "https://hooks.example.com"
        );
        assert_eq!(
            url_origin("http://[2001:db8::1]:8080/x"),
            "http://[2001:db8::1]:8080"
        );
        assert_eq!(
            url_origin("https://example.com?token=1"),
            "https://example.com"
        );
        assert_eq!(url_origin("https://example.com"), "https://example.com");
    }
}
