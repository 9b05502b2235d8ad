//! Delivery cases: outbox leases, per-destination progress, webhooks and delivery jobs.

use crate::fixtures::*;
use crate::inventory::{create, delta, owner_actor};
use time::Duration;
use trueline_core::error::DomainError;
use trueline_store::{
    AttemptOutcome, DeliveryAttempt, DeliveryLease, DeliveryState, Destination, NewDelivery,
    NewWebhook, OutboxRow, PageRequest, StoreError,
};
use uuid::Uuid;

/// An outbox row's payload as a value (the store hands it on as JSON text).
pub(crate) fn payload_of(row: &OutboxRow) -> serde_json::Value {
    serde_json::from_str(row.payload.get()).expect("an outbox payload is JSON")
}

/// Leases until at least `expected` rows come back (PostgreSQL publishes a row only once no
/// older transaction anywhere on the server is still running, so rows can lag briefly while
/// other tests run).
async fn lease(
    f: &Fixture,
    destination: Destination,
    holder: &str,
    t: time::OffsetDateTime,
    max_orgs: u32,
    expected: usize,
) -> Vec<OutboxRow> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = f
            .store
            .lease_outbox(
                destination,
                holder,
                t,
                t + Duration::seconds(30),
                max_orgs,
                100,
                &[],
            )
            .await
            .expect("lease");
        if rows.len() >= expected || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A delivery of a made-up event to `webhook_id` (the tests of leases and purges need
/// deliveries, not the outbox rows they come from).
fn new_delivery(webhook_id: Uuid, org_id: trueline_core::ids::OrgId) -> NewDelivery {
    NewDelivery {
        id: Uuid::now_v7(),
        webhook_id,
        org_id,
        event_id: trueline_core::ids::EventId(Uuid::now_v7()),
        event_type: "inventory.item.created".to_owned(),
        payload: serde_json::json!({}),
    }
}

fn webhook(url: &str, types: &[&str]) -> NewWebhook {
    NewWebhook {
        id: Uuid::now_v7(),
        url: url.to_owned(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        secret: "s".repeat(40),
    }
}

pub async fn outbox_rows_are_leased_per_organization_in_sequence_order(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let b = owner_actor(f, "bob@example.com").await;
    let item = create(f, &a, "Milk", 1).await;
    for _ in 0..3 {
        f.store
            .adjust_qty(&a, item.id, delta(1), None)
            .await
            .expect("adjust");
    }
    create(f, &b, "Eggs", 1).await;
    let t = now();
    let rows = lease(f, Destination::EventLog, "relay-1", t, 10, 7).await;
    assert_eq!(rows.len(), 7, "2 signups, 2 creates, 3 deltas");
    let org_a: Vec<i64> = rows
        .iter()
        .filter(|r| r.org_id == a.org_id)
        .map(|r| r.seq)
        .collect();
    let mut sorted = org_a.clone();
    sorted.sort_unstable();
    assert_eq!(org_a, sorted, "sequence order within an organization");
    // Another relay cannot take the same organizations while the lease holds.
    let other = f
        .store
        .lease_outbox(
            Destination::EventLog,
            "relay-2",
            t,
            t + Duration::seconds(30),
            10,
            100,
            &[],
        )
        .await
        .expect("lease");
    assert!(other.is_empty(), "{other:?}");
    // ... but can once it expired.
    let later = t + Duration::seconds(31);
    let taken = lease(f, Destination::EventLog, "relay-2", later, 1, 1).await;
    assert!(!taken.is_empty());
    assert!(
        taken.iter().all(|r| r.org_id == taken[0].org_id),
        "max_orgs = 1"
    );
}

/// A round's rows are split evenly among its organizations: one organization's backlog
/// does not crowd out the others', and a round stays within `max_rows`.
pub async fn a_round_splits_max_rows_among_its_organizations(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let b = owner_actor(f, "bob@example.com").await;
    let milk = create(f, &a, "Milk", 1).await;
    let eggs = create(f, &b, "Eggs", 1).await;
    for _ in 0..6 {
        f.store
            .adjust_qty(&a, milk.id, delta(1), None)
            .await
            .expect("adjust");
        f.store
            .adjust_qty(&b, eggs.id, delta(1), None)
            .await
            .expect("adjust");
    }
    let t = now();
    let all = lease(f, Destination::EventLog, "relay-1", t, 10, 16).await;
    assert_eq!(all.len(), 16, "per organization: signup, create, 6 deltas");
    let first_of = |rows: &[OutboxRow], org, n: usize| -> Vec<i64> {
        rows.iter()
            .filter(|r| r.org_id == org)
            .map(|r| r.seq)
            .take(n)
            .collect()
    };
    let lease_again = |max_orgs: u32, max_rows: u32| {
        f.store.lease_outbox(
            Destination::EventLog,
            "relay-1",
            t,
            t + Duration::seconds(30),
            max_orgs,
            max_rows,
            &[],
        )
    };
    let round = lease_again(10, 6).await.expect("lease");
    assert_eq!(round.len(), 6, "{round:?}");
    for org in [a.org_id, b.org_id] {
        assert_eq!(
            first_of(&round, org, 6),
            first_of(&all, org, 3),
            "each organization's first three rows"
        );
    }
    let one = lease_again(1, 6).await.expect("lease");
    assert_eq!(one.len(), 6, "one organization takes the whole round");
    assert!(one.iter().all(|r| r.org_id == one[0].org_id));
    assert_eq!(
        one.iter().map(|r| r.seq).collect::<Vec<_>>(),
        first_of(&all, one[0].org_id, 6)
    );
    // Fewer rows than organizations: one each.
    let thin = lease_again(10, 1).await.expect("lease");
    assert_eq!(thin.len(), 2, "{thin:?}");
}

pub async fn completing_marks_rows_once_and_creates_each_delivery_once(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let hook = f
        .store
        .create_webhook(
            &a,
            webhook("https://example.com/hook", &["inventory.*"]),
            None,
        )
        .await
        .expect("webhook");
    create(f, &a, "Milk", 1).await;
    let t = now();
    let rows = lease(f, Destination::EventLog, "r", t, 10, 3).await;
    let item_row = rows
        .iter()
        .find(|r| r.event_type == "inventory.item.created")
        .expect("row");
    let delivery = NewDelivery {
        id: Uuid::now_v7(),
        webhook_id: hook.id,
        org_id: a.org_id,
        event_id: item_row.event_id,
        event_type: item_row.event_type.clone(),
        payload: payload_of(item_row),
    };
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let changed = f
        .store
        .complete_outbox(
            Destination::EventLog,
            &seqs,
            std::slice::from_ref(&delivery),
            t,
        )
        .await
        .expect("complete");
    assert_eq!(changed, seqs.len() as u64);
    let again = NewDelivery {
        id: Uuid::now_v7(),
        ..delivery
    };
    let changed = f
        .store
        .complete_outbox(Destination::EventLog, &seqs, &[again], t)
        .await
        .expect("complete again");
    assert_eq!(changed, 0, "completing twice changes nothing");
    assert_eq!(
        f.count("webhook_deliveries").await,
        1,
        "one delivery per (webhook, event)"
    );
    assert_eq!(
        f.store
            .outbox_stats(Destination::EventLog)
            .await
            .expect("stats")
            .pending,
        0
    );
    f.store
        .release_outbox(Destination::EventLog, "r")
        .await
        .expect("release");
    let nats = lease(f, Destination::Nats, "r", t, 10, seqs.len()).await;
    assert_eq!(
        nats.len(),
        seqs.len(),
        "NATS sees exactly what the event log got"
    );
    let stats = f
        .store
        .outbox_stats(Destination::Nats)
        .await
        .expect("stats");
    assert_eq!(stats.pending, seqs.len() as u64);
    assert!(stats.oldest_pending_at.is_some());
}

pub async fn only_rows_every_destination_published_are_purged_oldest_first(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    for name in ["Milk", "Eggs", "Flour"] {
        create(f, &a, name, 1).await;
    }
    let t = now();
    let rows = lease(f, Destination::EventLog, "r", t, 10, 4).await;
    let s: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(s.len(), 4, "a signup and 3 creates");
    // s0..s2 reach the event log, s1 NATS too; s3 waits for both.
    f.store
        .complete_outbox(Destination::EventLog, &s[..3], &[], t)
        .await
        .expect("complete");
    f.store
        .complete_outbox(Destination::Nats, &s[1..2], &[], t)
        .await
        .expect("complete");
    let left = || async {
        (
            f.raw.scalar("SELECT count(*) FROM outbox").await,
            f.raw.scalar("SELECT min(seq) FROM outbox").await,
        )
    };
    let purge = |before, nats, limit| f.store.purge_outbox(before, nats, limit);
    assert_eq!(purge(t - Duration::hours(1), false, 100).await.unwrap(), 0);
    assert_eq!(left().await, (4, s[0]), "nothing is older than the cut-off");
    let later = t + Duration::hours(1);
    assert_eq!(
        purge(later, true, 100).await.unwrap(),
        1,
        "with NATS: s1 only"
    );
    assert_eq!(left().await, (3, s[0]));
    assert_eq!(purge(later, false, 1).await.unwrap(), 1, "oldest first: s0");
    assert_eq!(left().await, (2, s[2]));
    assert_eq!(purge(later, false, 100).await.unwrap(), 1, "s2");
    assert_eq!(purge(later, false, 100).await.unwrap(), 0);
    assert_eq!(left().await, (1, s[3]), "the pending row stays");
    let pending = f
        .store
        .outbox_stats(Destination::EventLog)
        .await
        .expect("stats");
    assert_eq!(pending.pending, 1);
}

/// A database tells whether its relay ever published (a start without an event log asks).
pub async fn the_outbox_tells_whether_it_ever_published(f: &Fixture) {
    let ever = || async { f.store.outbox_ever_published().await.expect("ask") };
    assert!(!ever().await, "a new database");
    let a = owner_actor(f, "ann@example.com").await;
    create(f, &a, "Milk", 1).await;
    assert!(!ever().await, "rows waiting are not published");
    let t = now();
    let rows = lease(f, Destination::EventLog, "r", t, 10, 2).await;
    let s: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    f.store
        .complete_outbox(Destination::Nats, &s, &[], t)
        .await
        .expect("complete");
    assert!(!ever().await, "published to NATS only");
    f.store
        .complete_outbox(Destination::EventLog, &s[..1], &[], t)
        .await
        .expect("complete");
    assert!(ever().await, "a published row is kept");
    let purged = f
        .store
        .purge_outbox(t + Duration::hours(1), false, 100)
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    assert_eq!(f.raw.scalar("SELECT count(*) FROM outbox").await, 1);
    assert!(
        ever().await,
        "the published row was purged: the sequence still tells"
    );
}

pub async fn failed_publications_are_counted(f: &Fixture) {
    owner_actor(f, "ann@example.com").await;
    let t = now();
    let rows = lease(f, Destination::EventLog, "r", t, 10, 1).await;
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    f.store
        .fail_outbox(&seqs, "event log down")
        .await
        .expect("fail");
    f.store
        .release_outbox(Destination::EventLog, "r")
        .await
        .expect("release");
    let rows = lease(f, Destination::EventLog, "r", t, 10, 1).await;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    assert!(rows.iter().all(|r| r.attempts == 1), "{rows:?}");
}

pub async fn webhooks_are_listed_per_organization_and_deleted_with_their_deliveries(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let b = owner_actor(f, "bob@example.com").await;
    let hook = f
        .store
        .create_webhook(&a, webhook("https://example.com/a", &[]), None)
        .await
        .expect("webhook");
    f.store
        .create_webhook(&b, webhook("https://example.com/b", &[]), None)
        .await
        .expect("webhook");
    let page = f
        .store
        .webhooks(
            a.org_id,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(page.items, vec![hook.clone()]);
    assert!(
        f.store
            .webhook(b.org_id, hook.id)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        !f.store
            .delete_webhook(&b, hook.id)
            .await
            .expect("other org")
    );
    assert!(f.store.delete_webhook(&a, hook.id).await.expect("delete"));
    assert!(!f.store.delete_webhook(&a, hook.id).await.expect("again"));
    assert!(
        f.raw
            .execute("UPDATE webhooks SET url = 'ftp://x'")
            .await
            .is_err(),
        "only http(s) URLs"
    );
}

/// A worker whose lease was lost while its attempt ran (redelivered, or taken over once the
/// lease ran out) records nothing: the state and the attempt numbers belong to the new owner.
pub async fn an_attempt_whose_lease_was_lost_records_nothing(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let hook = f
        .store
        .create_webhook(&a, webhook("http://127.0.0.1:9/hook", &[]), None)
        .await
        .expect("webhook");
    let t = now();
    let rows = lease(f, Destination::EventLog, "r", t, 10, 2).await;
    let d = NewDelivery {
        id: Uuid::now_v7(),
        webhook_id: hook.id,
        org_id: a.org_id,
        event_id: rows[0].event_id,
        event_type: rows[0].event_type.clone(),
        payload: payload_of(&rows[0]),
    };
    f.store
        .complete_outbox(Destination::EventLog, &[rows[0].seq], &[d], t)
        .await
        .expect("complete");
    let attempt = |n: u32, status: Option<u16>| DeliveryAttempt {
        attempt: n,
        at: t,
        status,
        error: None,
        duration_ms: 3,
    };
    let first = f
        .store
        .lease_deliveries(t, t + Duration::seconds(30), 10, DeliveryLease::ANY)
        .await
        .expect("lease")
        .remove(0);
    // While the attempt runs, a redelivery is refused: the worker will record the outcome.
    let refused = f
        .store
        .redeliver(&a, hook.id, first.id, None)
        .await
        .expect_err("in progress");
    assert!(
        matches!(
            refused,
            StoreError::Domain(DomainError::InvalidTransition {
                from: "attempt_in_progress",
                ..
            })
        ),
        "{refused:?}"
    );
    // The first worker stalls past its lease; another takes the delivery over.
    let later = t + Duration::seconds(31);
    let second = f
        .store
        .lease_deliveries(later, later + Duration::seconds(30), 10, DeliveryLease::ANY)
        .await
        .expect("takeover")
        .remove(0);
    assert_eq!((second.id, second.attempts), (first.id, 0));
    assert!(
        f.store
            .record_attempt(&second, attempt(1, Some(200)), AttemptOutcome::Succeeded)
            .await
            .expect("second")
    );
    // The stale worker's outcome changes nothing, and adds no attempt.
    assert!(
        !f.store
            .record_attempt(
                &first,
                attempt(1, None),
                AttemptOutcome::RetryAt(later + Duration::seconds(60)),
            )
            .await
            .expect("first")
    );
    let page = f
        .store
        .deliveries(
            a.org_id,
            hook.id,
            None,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("list");
    let delivery = &page.items[0];
    assert_eq!(
        (
            delivery.state,
            delivery.attempts,
            delivery.attempt_log.len()
        ),
        (DeliveryState::Succeeded, 1, 1)
    );
    assert_eq!(delivery.attempt_log[0].status, Some(200));
}

pub async fn deliveries_retry_then_die_and_can_be_redelivered(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let hook = f
        .store
        .create_webhook(&a, webhook("http://127.0.0.1:9/hook", &[]), None)
        .await
        .expect("webhook");
    let t = now();
    let rows = lease(f, Destination::EventLog, "r", t, 10, 2).await;
    let row = &rows[0];
    let d = NewDelivery {
        id: Uuid::now_v7(),
        webhook_id: hook.id,
        org_id: a.org_id,
        event_id: row.event_id,
        event_type: row.event_type.clone(),
        payload: payload_of(row),
    };
    f.store
        .complete_outbox(Destination::EventLog, &[row.seq], &[d], t)
        .await
        .expect("complete");
    let due = f
        .store
        .lease_deliveries(t, t + Duration::seconds(30), 10, DeliveryLease::ANY)
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].url.as_str(), due[0].secret.len()),
        ("http://127.0.0.1:9/hook", 40)
    );
    assert!(
        f.store
            .lease_deliveries(t, t + Duration::seconds(30), 10, DeliveryLease::ANY)
            .await
            .expect("due")
            .is_empty(),
        "leased"
    );
    let attempt = |n: u32, status: Option<u16>| DeliveryAttempt {
        attempt: n,
        at: t,
        status,
        error: Some("boom".into()),
        duration_ms: 3,
    };
    assert!(
        f.store
            .record_attempt(
                &due[0],
                attempt(1, Some(500)),
                AttemptOutcome::RetryAt(t + Duration::seconds(60)),
            )
            .await
            .expect("retry")
    );
    assert!(
        f.store
            .lease_deliveries(t, t + Duration::seconds(30), 10, DeliveryLease::ANY)
            .await
            .expect("due")
            .is_empty(),
        "not due yet"
    );
    let later = t + Duration::seconds(61);
    let due = f
        .store
        .lease_deliveries(later, later + Duration::seconds(30), 10, DeliveryLease::ANY)
        .await
        .expect("due");
    assert_eq!(due[0].attempts, 1);
    assert!(
        f.store
            .record_attempt(&due[0], attempt(2, None), AttemptOutcome::Dead)
            .await
            .expect("dead")
    );
    let page = f
        .store
        .deliveries(
            a.org_id,
            hook.id,
            Some(DeliveryState::Dead),
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("list");
    let dead = &page.items[0];
    assert_eq!(
        (dead.state, dead.attempts, dead.attempt_log.len()),
        (DeliveryState::Dead, 2, 2)
    );
    assert_eq!(dead.attempt_log[0].status, Some(500));
    let redelivered = f
        .store
        .redeliver(&a, hook.id, dead.id, None)
        .await
        .expect("redeliver");
    assert_eq!(redelivered.state, DeliveryState::Pending);
    assert_eq!(
        redelivered.attempt_log, dead.attempt_log,
        "the answer shows the attempts made, as the list does"
    );
    assert_eq!(
        f.store
            .lease_deliveries(later, later, 10, DeliveryLease::ANY)
            .await
            .expect("due")
            .len(),
        1
    );
    let b = owner_actor(f, "bob@example.com").await;
    assert!(
        f.store.redeliver(&b, hook.id, dead.id, None).await.is_err(),
        "another organization's delivery"
    );
    assert!(
        f.store
            .deliveries(
                b.org_id,
                hook.id,
                None,
                PageRequest {
                    limit: 10,
                    after: None
                }
            )
            .await
            .is_err()
    );
}

/// A lease takes the organizations' due deliveries in turns, at most `per_org` of one and none
/// of the organizations skipped: one organization's backlog of retries (a receiver that
/// hangs) cannot hold every slot of the worker while another's deliveries wait.
pub async fn deliveries_are_leased_in_turns_per_organization(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let b = owner_actor(f, "bob@example.com").await;
    let hook_a = f
        .store
        .create_webhook(&a, webhook("http://127.0.0.1:9/a", &[]), None)
        .await
        .expect("webhook");
    let hook_b = f
        .store
        .create_webhook(&b, webhook("http://127.0.0.1:9/b", &[]), None)
        .await
        .expect("webhook");
    let t = now();
    // Four of Ann's organization's due first, then one of Bob's.
    let ann: Vec<_> = (0..4).map(|_| new_delivery(hook_a.id, a.org_id)).collect();
    f.store
        .complete_outbox(Destination::EventLog, &[], &ann, t)
        .await
        .expect("deliveries");
    f.store
        .complete_outbox(
            Destination::EventLog,
            &[],
            &[new_delivery(hook_b.id, b.org_id)],
            t + Duration::milliseconds(1),
        )
        .await
        .expect("deliveries");
    let later = t + Duration::seconds(1);
    let orgs =
        |due: &[trueline_store::DueDelivery]| due.iter().map(|d| d.org_id).collect::<Vec<_>>();
    let turns = DeliveryLease {
        per_org: 2,
        in_flight: &[],
    };
    let first = f
        .store
        .lease_deliveries(later, later + Duration::seconds(30), 3, turns)
        .await
        .expect("lease");
    assert_eq!(orgs(&first), [a.org_id, b.org_id, a.org_id]);
    assert_eq!(first[0].id, ann[0].id);
    assert_eq!(first[2].id, ann[1].id);
    // Ann's organization has its two in flight (its share): nothing else is due.
    let saturated = f
        .store
        .lease_deliveries(
            later,
            later + Duration::seconds(30),
            10,
            DeliveryLease {
                per_org: 2,
                in_flight: &[(a.org_id, 2)],
            },
        )
        .await
        .expect("lease");
    assert!(saturated.is_empty(), "{saturated:?}");
    // One of them ended: one more, not two.
    let one_more = f
        .store
        .lease_deliveries(
            later,
            later + Duration::seconds(30),
            10,
            DeliveryLease {
                per_org: 2,
                in_flight: &[(a.org_id, 1), (b.org_id, 1)],
            },
        )
        .await
        .expect("lease");
    assert_eq!(
        one_more.iter().map(|d| d.id).collect::<Vec<_>>(),
        [ann[2].id]
    );
    let rest = f
        .store
        .lease_deliveries(later, later + Duration::seconds(30), 10, DeliveryLease::ANY)
        .await
        .expect("lease");
    assert_eq!(rest.iter().map(|d| d.id).collect::<Vec<_>>(), [ann[3].id]);
}

/// Finished deliveries (succeeded, dead) older than the retention go with their attempts;
/// pending ones and newer ones stay.
pub async fn finished_deliveries_are_purged_with_their_attempts(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let hook = f
        .store
        .create_webhook(&a, webhook("http://127.0.0.1:9/hook", &[]), None)
        .await
        .expect("webhook");
    let t = now();
    let made: Vec<_> = (0..4).map(|_| new_delivery(hook.id, a.org_id)).collect();
    f.store
        .complete_outbox(Destination::EventLog, &[], &made, t)
        .await
        .expect("deliveries");
    let leased = f
        .store
        .lease_deliveries(t, t + Duration::seconds(30), 10, DeliveryLease::ANY)
        .await
        .expect("lease");
    assert_eq!(leased.len(), 4);
    let outcomes = [
        (t, AttemptOutcome::Succeeded),
        (t, AttemptOutcome::Dead),
        (t, AttemptOutcome::RetryAt(t + Duration::hours(1))),
        // Finished, but after the purge's cut-off.
        (t + Duration::hours(2), AttemptOutcome::Succeeded),
    ];
    for (d, (at, outcome)) in leased.iter().zip(outcomes) {
        let attempt = DeliveryAttempt {
            attempt: 1,
            at,
            status: Some(200),
            error: None,
            duration_ms: 1,
        };
        assert!(
            f.store
                .record_attempt(d, attempt, outcome)
                .await
                .expect("record")
        );
    }
    assert_eq!(f.count("webhook_attempts").await, 4);
    let purged = f
        .store
        .purge_deliveries(t + Duration::hours(1), 100)
        .await
        .expect("purge");
    assert_eq!(purged, 2);
    assert_eq!(f.count("webhook_deliveries").await, 2);
    assert_eq!(
        f.count("webhook_attempts").await,
        2,
        "attempts go with their delivery"
    );
    let kept = f
        .store
        .deliveries(
            a.org_id,
            hook.id,
            None,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("list");
    let mut kept: Vec<Uuid> = kept.items.iter().map(|d| d.id).collect();
    kept.sort();
    let mut expected = vec![leased[2].id, leased[3].id];
    expected.sort();
    assert_eq!(kept, expected);
}

/// Workers (instances) leasing at once each take their own deliveries: on PostgreSQL a row
/// another worker leased after this statement's snapshot is re-checked once locked.
pub async fn concurrent_leases_never_take_a_delivery_twice(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let hook = f
        .store
        .create_webhook(&a, webhook("http://127.0.0.1:9/hook", &[]), None)
        .await
        .expect("webhook");
    let made: Vec<_> = (0..60).map(|_| new_delivery(hook.id, a.org_id)).collect();
    let t = now();
    f.store
        .complete_outbox(Destination::EventLog, &[], &made, t)
        .await
        .expect("deliveries");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..10 {
                let leased = store
                    .lease_deliveries(t, t + Duration::seconds(30), 3, DeliveryLease::ANY)
                    .await
                    .expect("lease");
                mine.extend(leased.into_iter().map(|d| d.id));
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let leased = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), leased, "a delivery was leased twice");
    assert_eq!(leased, 60, "every due delivery was leased");
}
