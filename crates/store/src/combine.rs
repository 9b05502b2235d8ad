//! The plan of a combined delta batch, shared by both adapters so they decide identically.
//!
//! An adapter loads (under its write lock) the items the batch touches and the idempotency
//! keys it carries, asks [`plan`] what happens to every job, and writes the plan with a few
//! set-based statements (one per table) instead of several statements per job. Each delta is
//! decided in job order against its item's running quantity by the same domain rule as the
//! guarded statement ([`Quantity::apply`]); the final UPDATE of each item is guarded by the
//! version it was loaded at, and the schema's CHECK still refuses a quantity out of range.

use crate::{
    DeltaJob, DeltaOutcome, IdempotencyScope, Item, ItemChange, OutboxEvent, StoredResponse,
    item_event,
};
use std::collections::HashMap;
use time::OffsetDateTime;
use trueline_core::DomainError;
use trueline_core::ids::ItemId;
use trueline_core::inventory::{Quantity, QuantityRejection};

/// (org, user, key): an idempotency key's identity.
pub type KeyId = (uuid::Uuid, uuid::Uuid, String);

/// An idempotency key as the adapter found it in the table (absent keys are not in the map).
#[derive(Debug, Clone)]
pub struct KeyState {
    pub fingerprint: [u8; 32],
    pub completed: Option<StoredResponse>,
    pub locked_until: OffsetDateTime,
    /// Inserted as pending by this very transaction (PostgreSQL claims keys first).
    pub fresh: bool,
}

/// One applied delta: the item as it is after it (its history record).
#[derive(Debug, Clone)]
pub struct PlannedChange {
    pub job: usize,
    pub item: Item,
    pub delta: i64,
}

/// The key of an applied job, to store completed with its response.
#[derive(Debug, Clone)]
pub struct PlannedKey {
    pub job: usize,
    pub scope: IdempotencyScope,
    pub fingerprint: [u8; 32],
    pub locked_until: OffsetDateTime,
    pub response: StoredResponse,
    /// The row exists (claimed by this transaction or an expired claim taken over): UPDATE it;
    /// otherwise INSERT it.
    pub exists: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One per job, in job order.
    pub outcomes: Vec<DeltaOutcome>,
    /// Final state of every changed item with the version it was loaded at, in first-change
    /// order.
    pub items: Vec<(Item, u64)>,
    /// In job order (so per item in version order).
    pub changes: Vec<PlannedChange>,
    /// One per change, same order.
    pub events: Vec<OutboxEvent>,
    pub complete: Vec<PlannedKey>,
    /// Existing (pending) key rows to delete: their job was refused and a refused request
    /// stores nothing.
    pub release: Vec<IdempotencyScope>,
}

fn refusal(item_id: ItemId, current: u64, delta: i64, why: QuantityRejection) -> DomainError {
    match why {
        QuantityRejection::Insufficient => DomainError::InsufficientQuantity {
            item_id,
            current,
            delta,
        },
        QuantityRejection::Overflow => DomainError::QuantityOverflow {
            item_id,
            current,
            delta,
        },
    }
}

/// What the key says before the delta is tried: `None` to go ahead.
fn key_verdict(job: &DeltaJob, state: Option<&KeyState>) -> Option<DeltaOutcome> {
    let idem = job.idempotency.as_ref()?;
    let state = state.filter(|s| !s.fresh)?;
    let same = state.fingerprint == idem.fingerprint;
    match &state.completed {
        Some(response) if same => Some(DeltaOutcome::Replayed(response.clone())),
        Some(_) => Some(DeltaOutcome::Refused(DomainError::IdempotencyKeyReused)),
        None if state.locked_until > job.actor.now => Some(DeltaOutcome::Refused(if same {
            DomainError::IdempotencyKeyInUse
        } else {
            DomainError::IdempotencyKeyReused
        })),
        // An expired pending claim: its request died having stored nothing, so a retry
        // takes it over, corrected or not.
        None => None,
    }
}

/// Decides every job in job order. `items`: the loaded items by id (any organization: a job
/// only sees its own organization's item); `keys`: the loaded key rows.
pub fn plan(
    jobs: &[DeltaJob],
    mut items: HashMap<ItemId, Item>,
    keys: &HashMap<KeyId, KeyState>,
) -> Plan {
    let loaded: HashMap<ItemId, u64> = items.iter().map(|(id, i)| (*id, i.version)).collect();
    let mut plan = Plan::default();
    let mut changed: Vec<ItemId> = Vec::new();
    // Keys completed earlier in this batch: a repeated key replays (or conflicts with) that.
    let mut completed: HashMap<KeyId, ([u8; 32], StoredResponse)> = HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        let key: Option<KeyId> = job
            .idempotency
            .as_ref()
            .map(|k| (k.scope.org_id.0, k.scope.user_id.0, k.scope.key.clone()));
        let earlier = key.as_ref().and_then(|k| completed.get(k));
        let verdict = match (earlier, &job.idempotency) {
            (Some((print, response)), Some(idem)) => Some(if *print == idem.fingerprint {
                DeltaOutcome::Replayed(response.clone())
            } else {
                DeltaOutcome::Refused(DomainError::IdempotencyKeyReused)
            }),
            _ => key_verdict(job, key.as_ref().and_then(|k| keys.get(k))),
        };
        if let Some(verdict) = verdict {
            plan.outcomes.push(verdict);
            continue;
        }
        let outcome = match items
            .get_mut(&job.item_id)
            .filter(|item| item.org_id == job.actor.org_id)
        {
            None => DeltaOutcome::Refused(DomainError::NotFound("item")),
            Some(item) => match Quantity::new(item.qty)
                .map_err(|_| QuantityRejection::Overflow)
                .and_then(|q| q.apply(job.delta))
            {
                Err(why) => DeltaOutcome::Refused(refusal(item.id, item.qty, job.delta.get(), why)),
                Ok(after) => {
                    item.qty = after.get();
                    item.version += 1;
                    item.updated_at = job.actor.now;
                    if !changed.contains(&item.id) {
                        changed.push(item.id);
                    }
                    plan.events.push(item_event(
                        &job.actor,
                        item,
                        ItemChange::QtyChanged {
                            delta: job.delta.get(),
                            reason: None,
                        },
                    ));
                    plan.changes.push(PlannedChange {
                        job: index,
                        item: item.clone(),
                        delta: job.delta.get(),
                    });
                    DeltaOutcome::Applied(item.clone())
                }
            },
        };
        if let (Some(idem), Some(key)) = (&job.idempotency, key) {
            let exists = keys.contains_key(&key);
            match &outcome {
                DeltaOutcome::Applied(item) => {
                    let response = (idem.render)(item);
                    // A refused earlier job with this key released the row; this one keeps it.
                    plan.release.retain(|scope| !scope.same_key(&idem.scope));
                    plan.complete.push(PlannedKey {
                        job: index,
                        scope: idem.scope.clone(),
                        fingerprint: idem.fingerprint,
                        locked_until: idem.locked_until,
                        response: response.clone(),
                        exists,
                    });
                    completed.insert(key, (idem.fingerprint, response));
                }
                DeltaOutcome::Refused(_) if exists => plan.release.push(idem.scope.clone()),
                _ => {}
            }
        }
        plan.outcomes.push(outcome);
    }
    for id in changed {
        if let (Some(item), Some(version)) = (items.get(&id), loaded.get(&id)) {
            plan.items.push((item.clone(), *version));
        }
    }
    plan
}
