//! Inventory items, guarded quantity transitions and their history.

use crate::{Actor, Idempotency, OutboxEvent, Page, PageRequest, StoreError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use trueline_core::ids::{EventId, ItemId, OrgId, UserId};
use trueline_core::inventory::{Delta, ItemName, Quantity, Sku};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: ItemId,
    pub org_id: OrgId,
    pub name: String,
    pub sku: Option<String>,
    pub qty: u64,
    /// Starts at 1, +1 on every change; the ETag is derived from it.
    pub version: u64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub created_by: UserId,
    /// The key the name is unique, sorted and searched under, as stored
    /// ([`trueline_core::validation::name_key`] of the name, except for a row whose key an
    /// earlier rule computed and that could not be recomputed: see `Rekey`).
    pub name_key: String,
}

#[derive(Debug, Clone)]
pub struct NewItem {
    pub id: ItemId,
    pub name: ItemName,
    pub sku: Option<Sku>,
    pub qty: Quantity,
}

/// A partial update; `sku: Some(None)` clears the SKU.
#[derive(Debug, Clone, Default)]
pub struct ItemPatch {
    pub name: Option<ItemName>,
    pub sku: Option<Option<Sku>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemSort {
    NameAsc,
    NameDesc,
    QtyAsc,
    QtyDesc,
    CreatedAsc,
    CreatedDesc,
}

/// Where a listing continues: the sort it belongs to, the sort key of the last row and its
/// id (the tie-breaker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCursor {
    pub sort: ItemSort,
    pub key: CursorKey,
    pub id: uuid::Uuid,
}

impl ItemCursor {
    /// Whether the key is one a listing in this sort could have produced: a name key for names, a
    /// quantity in range for quantities, an instant of years 1970–9999 for creation times.
    /// Cursors are plain base64 JSON; a tampered one must be a `400 invalid_cursor` on every
    /// backend, not a type or range error deep in one database.
    pub fn is_well_formed(&self) -> bool {
        /// 9999-12-31T23:59:59.999999Z in unix microseconds.
        const LAST_MICROS: i64 = 253_402_300_799_999_999;
        match (&self.key, self.sort) {
            // A name key as stored: no control character (PostgreSQL refuses NUL in text
            // with an error; SQLite compared it), no longer than a folded name can be. (Not
            // required to be its own key: a row whose key an earlier rule computed keeps it
            // when today's would collide, and its cursor carries that stored key.)
            (CursorKey::Text(k), ItemSort::NameAsc | ItemSort::NameDesc) => {
                k.chars().count() <= 3 * trueline_core::inventory::ITEM_NAME_CHARS_MAX
                    && !k.chars().any(char::is_control)
            }
            (CursorKey::Int(q), ItemSort::QtyAsc | ItemSort::QtyDesc) => {
                (0..=trueline_core::inventory::JSON_SAFE_INTEGER_MAX).contains(q)
            }
            (CursorKey::Int(t), ItemSort::CreatedAsc | ItemSort::CreatedDesc) => {
                (0..=LAST_MICROS).contains(t)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CursorKey {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct ItemFilter {
    /// Name contains this, case-insensitively (already case-folded by the caller).
    pub name_contains: Option<String>,
    pub min_qty: Option<u64>,
    pub max_qty: Option<u64>,
    pub sort: ItemSort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    Created,
    Renamed,
    Updated,
    QtyChanged,
    Deleted,
}

impl HistoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryKind::Created => "created",
            HistoryKind::Renamed => "renamed",
            HistoryKind::Updated => "updated",
            HistoryKind::QtyChanged => "qty_changed",
            HistoryKind::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => HistoryKind::Created,
            "renamed" => HistoryKind::Renamed,
            "updated" => HistoryKind::Updated,
            "qty_changed" => HistoryKind::QtyChanged,
            "deleted" => HistoryKind::Deleted,
            _ => return None,
        })
    }
}

/// One immutable history record. The deltas of an item's records always sum to its
/// quantity: `created` carries the initial quantity, `deleted` its negation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub id: uuid::Uuid,
    pub item_id: ItemId,
    /// The item version this record produced (1 for `created`); unique per item.
    pub version: u64,
    pub kind: HistoryKind,
    pub delta: i64,
    pub qty_after: u64,
    pub name: String,
    pub sku: Option<String>,
    pub reason: Option<String>,
    pub actor_user_id: UserId,
    pub request_id: String,
    pub at: OffsetDateTime,
}

/// One line of a batch adjustment.
#[derive(Debug, Clone, Copy)]
pub struct QtyChange {
    pub item_id: ItemId,
    pub delta: Delta,
}

/// An idempotency key handled inside the delta's own transaction (the combined path): no
/// separate claim transaction, so a batch of N keyed deltas costs one commit, not N + 1.
#[derive(Clone)]
pub struct InlineIdempotency {
    pub scope: crate::IdempotencyScope,
    pub fingerprint: [u8; 32],
    /// How long a pending claim found in the table stays locked to its request.
    pub locked_until: OffsetDateTime,
    pub render: std::sync::Arc<dyn Fn(&Item) -> crate::StoredResponse + Send + Sync>,
}

impl std::fmt::Debug for InlineIdempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineIdempotency")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// One quantity delta of a combined batch.
#[derive(Debug, Clone)]
pub struct DeltaJob {
    pub actor: Actor,
    pub item_id: ItemId,
    pub delta: Delta,
    pub idempotency: Option<InlineIdempotency>,
}

/// What happened to one job of a combined batch.
#[derive(Debug, Clone)]
pub enum DeltaOutcome {
    /// Applied; the idempotency record (if any) holds `render(item)`.
    Applied(Item),
    /// The key was completed before: the stored response, nothing applied.
    Replayed(crate::StoredResponse),
    /// Refused (not found, insufficient, overflow, key in use or reused): nothing stored.
    Refused(trueline_core::DomainError),
}

/// The combiner's side of [`ItemStore::apply_delta_batches`].
pub trait DeltaBatches {
    /// The next batch if one is ready now (never waits); `None` ends the run.
    fn next_ready(&mut self) -> Option<Vec<DeltaJob>>;
    /// The outcome of the batch [`DeltaBatches::next_ready`] handed out last.
    fn done(&mut self, outcome: Result<Vec<DeltaOutcome>, StoreError>);
}

#[async_trait::async_trait]
pub trait ItemStore: Send + Sync {
    /// `NameTaken` if the organization has an item with the same case-folded name.
    async fn create_item(
        &self,
        actor: &Actor,
        item: NewItem,
        idempotency: Option<Idempotency<'_, Item>>,
    ) -> Result<Item, StoreError>;

    async fn item(&self, org_id: OrgId, id: ItemId) -> Result<Option<Item>, StoreError>;

    async fn items(
        &self,
        org_id: OrgId,
        filter: &ItemFilter,
        page: PageRequest<ItemCursor>,
    ) -> Result<Page<Item, ItemCursor>, StoreError>;

    /// Applies `patch` if the item is at `expected_version` (`None`: any version).
    /// `NotFound`, `VersionMismatch`, `NameTaken`.
    async fn update_item(
        &self,
        actor: &Actor,
        id: ItemId,
        expected_version: Option<u64>,
        patch: ItemPatch,
        idempotency: Option<Idempotency<'_, Item>>,
    ) -> Result<Item, StoreError>;

    /// Deletes the item, keeping its history. `Ok(false)` if it did not exist.
    async fn delete_item(&self, actor: &Actor, id: ItemId) -> Result<bool, StoreError>;

    /// One guarded atomic statement `qty = qty + delta WHERE qty + delta >= 0`, with its
    /// history record and outbox event in the same transaction.
    /// `NotFound`, `InsufficientQuantity`, `QuantityOverflow`.
    async fn adjust_qty(
        &self,
        actor: &Actor,
        id: ItemId,
        delta: Delta,
        idempotency: Option<Idempotency<'_, Item>>,
    ) -> Result<Item, StoreError>;

    /// Hot-row combining: applies many independent deltas in ONE transaction. The adapter
    /// locks the batch's items (in id order) and keys, [`crate::combine::plan`] decides each
    /// job in job order against its item's running quantity with the same domain rule as the
    /// guarded statement, and the plan is written (the item UPDATE guarded by the loaded
    /// version, the schema's CHECK still in force). Each job is refused individually; each
    /// applied one gets its own history record, outbox event and idempotency record.
    /// Outcomes come back in job order. `Err` only if the transaction itself failed (then
    /// nothing applied).
    async fn apply_deltas(&self, jobs: &[DeltaJob]) -> Result<Vec<DeltaOutcome>, StoreError>;

    /// Applies batch after batch, each as [`ItemStore::apply_deltas`] (its own transaction),
    /// for as long as `batches` has one ready, handing each outcome back before asking for
    /// the next. An adapter may keep its write connection from one batch to the next (SQLite
    /// does, until another writer waits for it).
    async fn apply_delta_batches(&self, batches: &mut (dyn DeltaBatches + Send)) {
        while let Some(jobs) = batches.next_ready() {
            let outcome = self.apply_deltas(&jobs).await;
            batches.done(outcome);
        }
    }

    /// All-or-nothing across items. Rows are locked in id order, so crossing batches cannot
    /// deadlock. Lines apply in request order against running quantities. On any failing
    /// line: `AdjustmentsRejected` listing every failing line, and nothing is applied.
    /// Returns the items after the change, in order of first appearance.
    async fn adjust_batch(
        &self,
        actor: &Actor,
        reason: Option<String>,
        lines: &[QtyChange],
        idempotency: Option<Idempotency<'_, Vec<Item>>>,
    ) -> Result<Vec<Item>, StoreError>;

    /// History of an item (also after deletion), oldest first. `NotFound` if the
    /// organization has no record of the item.
    async fn history(
        &self,
        org_id: OrgId,
        id: ItemId,
        page: PageRequest<u64>,
    ) -> Result<Page<HistoryRecord, u64>, StoreError>;
}

/// What changed an item, with what its event carries beyond the item itself.
#[derive(Debug, Clone, Copy)]
pub enum ItemChange<'a> {
    Created,
    /// The name and SKU before the change.
    Updated {
        previous_name: &'a str,
        previous_sku: Option<&'a str>,
    },
    QtyChanged {
        delta: i64,
        reason: Option<&'a str>,
    },
    Deleted,
}

impl ItemChange<'_> {
    pub fn event_type(&self) -> &'static str {
        match self {
            ItemChange::Created => "inventory.item.created",
            ItemChange::Updated { .. } => "inventory.item.updated",
            ItemChange::QtyChanged { .. } => "inventory.item.qty_changed",
            ItemChange::Deleted => "inventory.item.deleted",
        }
    }
}

/// An item event's payload, serialized straight to text. Fields in alphabetical order: the
/// bytes a `serde_json::Value` object (a sorted map) gave before, so the payloads of events
/// written before and after are alike (test `item_event_payloads_are_the_json_they_always_were`).
/// `None` fields are left out; `Some(None)` ones are written as `null`.
#[derive(Serialize)]
struct ItemPayload<'a> {
    actor_user_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<i64>,
    item_id: ItemId,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_sku: Option<Option<&'a str>>,
    qty: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    qty_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Option<&'a str>>,
    request_id: &'a str,
    sku: Option<&'a str>,
    version: u64,
}

/// The outbox event of an item change (payloads carry ids and values, never secrets). Both
/// adapters build every inventory event here, so the payloads are identical.
pub fn item_event(actor: &Actor, item: &Item, change: ItemChange<'_>) -> OutboxEvent {
    let mut payload = ItemPayload {
        actor_user_id: actor.user_id,
        delta: None,
        item_id: item.id,
        name: &item.name,
        previous_name: None,
        previous_sku: None,
        qty: item.qty,
        qty_after: None,
        reason: None,
        request_id: &actor.request_id,
        sku: item.sku.as_deref(),
        version: item.version,
    };
    match change {
        ItemChange::Created | ItemChange::Deleted => {}
        ItemChange::Updated {
            previous_name,
            previous_sku,
        } => {
            payload.previous_name = Some(previous_name);
            payload.previous_sku = Some(previous_sku);
        }
        ItemChange::QtyChanged { delta, reason } => {
            payload.delta = Some(delta);
            payload.qty_after = Some(item.qty);
            payload.reason = Some(reason);
        }
    }
    // Cannot fail: a struct of strings, integers and UUIDs (serde_json fails only on a map
    // with non-string keys, or on a `Serialize` impl that reports an error).
    #[allow(clippy::expect_used)]
    let payload =
        serde_json::value::to_raw_value(&payload).expect("an item event's payload serializes");
    OutboxEvent {
        event_id: EventId::new(),
        org_id: actor.org_id,
        event_type: change.event_type().to_owned(),
        stream: format!("item-{}", item.id),
        payload,
        created_at: actor.now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The payload as it was built before it was serialized straight to text: a
    /// `serde_json::Value` object (keys sorted) with the change's fields merged in.
    fn as_before(actor: &Actor, item: &Item, extra: Value) -> String {
        let mut payload = json!({
            "item_id": item.id,
            "name": item.name,
            "sku": item.sku,
            "qty": item.qty,
            "version": item.version,
            "actor_user_id": actor.user_id,
            "request_id": actor.request_id,
        });
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        payload.to_string()
    }

    #[test]
    fn item_event_payloads_are_the_json_they_always_were() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let actor = Actor {
            org_id: OrgId::new(),
            user_id: UserId::new(),
            role: trueline_core::accounts::Role::Member,
            request_id: "req \"quoted\" \u{e9}".into(),
            now,
        };
        for sku in [None, Some("SKU-1".to_owned())] {
            let item = Item {
                id: ItemId::new(),
                org_id: actor.org_id,
                name: "Bolt \\ 8\" \u{1f529}".into(),
                sku: sku.clone(),
                qty: 9_007_199_254_740_991,
                version: 7,
                created_at: now,
                updated_at: now,
                created_by: actor.user_id,
                name_key: "bolt".into(),
            };
            let cases = [
                (ItemChange::Created, json!({})),
                (ItemChange::Deleted, json!({})),
                (
                    ItemChange::Updated {
                        previous_name: "Old",
                        previous_sku: sku.as_deref(),
                    },
                    json!({ "previous_name": "Old", "previous_sku": sku }),
                ),
                (
                    ItemChange::QtyChanged {
                        delta: -3,
                        reason: None,
                    },
                    json!({ "delta": -3, "qty_after": item.qty, "reason": null }),
                ),
                (
                    ItemChange::QtyChanged {
                        delta: 5,
                        reason: Some("recount"),
                    },
                    json!({ "delta": 5, "qty_after": item.qty, "reason": "recount" }),
                ),
            ];
            for (change, extra) in cases {
                let event = item_event(&actor, &item, change);
                assert_eq!(
                    event.payload.get(),
                    as_before(&actor, &item, extra),
                    "{change:?}"
                );
                assert_eq!(event.event_type, change.event_type());
                assert_eq!(event.stream, format!("item-{}", item.id));
            }
        }
    }
}
