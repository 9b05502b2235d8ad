//! Idempotency records: claim, complete in the mutation's transaction, replay, mismatch,
//! in-progress, takeover after expiry, release, purge.

use crate::fixtures::*;
use crate::inventory::{create, delta, owner_actor, trail};
use time::Duration;
use trueline_core::DomainError;
use trueline_store::{Claim, Idempotency, IdempotencyScope, Item, StoreError, StoredResponse};

/// A request's scope (each call: another request, another holder).
fn scope(a: &trueline_store::Actor, key: &str) -> IdempotencyScope {
    IdempotencyScope::new(a.org_id, a.user_id, key.to_owned())
}

fn render(item: &Item) -> StoredResponse {
    StoredResponse {
        status: 200,
        headers: vec![("etag".into(), format!("\"v{}\"", item.version))],
        body: format!("{{\"qty\":{}}}", item.qty).into_bytes(),
    }
}

pub async fn a_completed_key_replays_and_a_different_request_is_a_mismatch(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 1).await;
    let s = scope(&a, "key-1");
    let now = now();
    assert_eq!(
        f.store
            .claim(&s, &[1; 32], now, now + Duration::minutes(1))
            .await
            .expect("claim"),
        Claim::Acquired
    );
    assert_eq!(
        f.store
            .claim(&s, &[1; 32], now, now + Duration::minutes(1))
            .await
            .expect("claim"),
        Claim::InProgress
    );
    assert_eq!(
        f.store
            .claim(&s, &[2; 32], now, now + Duration::minutes(1))
            .await
            .expect("claim"),
        Claim::Mismatch
    );
    let idem = Idempotency {
        scope: &s,
        render: &render,
    };
    let after = f
        .store
        .adjust_qty(&a, item.id, delta(4), Some(idem))
        .await
        .expect("adjust");
    assert_eq!(after.qty, 5);
    let replay = f
        .store
        .claim(&s, &[1; 32], now, now + Duration::minutes(1))
        .await
        .expect("claim");
    assert_eq!(replay, Claim::Replay(render(&after)));
    assert_eq!(
        f.store
            .claim(&s, &[2; 32], now, now + Duration::minutes(1))
            .await
            .expect("claim"),
        Claim::Mismatch
    );
    // Keys are scoped per user: another user's identical key is independent.
    let b = owner_actor(f, "bob@example.com").await;
    assert_eq!(
        f.store
            .claim(&scope(&b, "key-1"), &[1; 32], now, now)
            .await
            .expect("claim"),
        Claim::Acquired
    );
}

pub async fn a_failed_mutation_stores_nothing_and_a_released_key_can_be_reused(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 1).await;
    let s = scope(&a, "key-2");
    let now = now();
    assert_eq!(
        f.store
            .claim(&s, &[1; 32], now, now + Duration::minutes(1))
            .await
            .expect("claim"),
        Claim::Acquired
    );
    let idem = Idempotency {
        scope: &s,
        render: &render,
    };
    let refused = f.store.adjust_qty(&a, item.id, delta(-5), Some(idem)).await;
    assert!(matches!(
        refused,
        Err(StoreError::Domain(DomainError::InsufficientQuantity { .. }))
    ));
    let completed = f
        .raw
        .scalar("SELECT count(*) FROM idempotency_keys WHERE state = 'completed'")
        .await;
    assert_eq!(completed, 0);
    f.store.release(&s).await.expect("release");
    assert_eq!(f.count("idempotency_keys").await, 0);
    assert_eq!(
        f.store
            .claim(&s, &[2; 32], now, now + Duration::minutes(1))
            .await
            .expect("claim"),
        Claim::Acquired
    );
}

pub async fn a_mutation_whose_claim_was_lost_rolls_back(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 1).await;
    let s = scope(&a, "never-claimed");
    let before = (f.count("item_history").await, f.count("outbox").await);
    let idem = Idempotency {
        scope: &s,
        render: &render,
    };
    let result = f.store.adjust_qty(&a, item.id, delta(1), Some(idem)).await;
    assert!(matches!(
        result,
        Err(StoreError::Domain(DomainError::IdempotencyKeyInUse))
    ));
    assert_eq!(
        f.store
            .item(a.org_id, item.id)
            .await
            .expect("get")
            .expect("exists")
            .qty,
        1,
        "rolled back"
    );
    assert_eq!(
        (f.count("item_history").await, f.count("outbox").await),
        before
    );
}

pub async fn an_expired_pending_claim_is_taken_over(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 1).await;
    // Two requests with the same key and body: the first is slow, its claim expires, and
    // the second (a retry) takes the claim over.
    let slow = scope(&a, "key-3");
    let retry = scope(&a, "key-3");
    let now = now();
    assert_eq!(
        f.store
            .claim(&slow, &[1; 32], now, now + Duration::seconds(30))
            .await
            .expect("claim"),
        Claim::Acquired
    );
    let later = now + Duration::seconds(31);
    assert_eq!(
        f.store
            .claim(&retry, &[1; 32], later, later + Duration::seconds(30))
            .await
            .expect("claim"),
        Claim::Acquired
    );
    assert_eq!(
        f.store
            .claim(&scope(&a, "key-3"), &[1; 32], later, later)
            .await
            .expect("claim"),
        Claim::InProgress
    );
    // The slow request finishes now: its claim is not its own any more, so its change rolls
    // back, and its failure handling (a release) leaves the retry's claim alone.
    let state = || async {
        (
            trail(f).await,
            f.raw
                .scalar("SELECT count(*) FROM idempotency_keys WHERE state = 'pending'")
                .await,
            f.store
                .item(a.org_id, item.id)
                .await
                .expect("get")
                .expect("exists")
                .qty,
        )
    };
    let before = state().await;
    let idem = |s| Idempotency {
        scope: s,
        render: &render,
    };
    let lost = f
        .store
        .adjust_qty(&a, item.id, delta(1), Some(idem(&slow)))
        .await;
    assert!(matches!(
        lost,
        Err(StoreError::Domain(DomainError::IdempotencyKeyInUse))
    ));
    f.store.release(&slow).await.expect("release");
    assert_eq!(
        state().await,
        before,
        "nothing changed; the retry's claim is still there"
    );
    let after = f
        .store
        .adjust_qty(&a, item.id, delta(1), Some(idem(&retry)))
        .await
        .expect("the retry completes its claim");
    assert_eq!(after.qty, 2);
    assert_eq!(
        f.store
            .claim(&scope(&a, "key-3"), &[1; 32], later, later)
            .await
            .expect("claim"),
        Claim::Replay(render(&after)),
        "the stored answer is the retry's"
    );
}

/// A request that died left its claim pending; a retry with a corrected body (the first one
/// was refused, or the client fixed it) takes the expired claim over as a new request: the
/// key then answers for the new body, and its record's age starts again.
pub async fn an_expired_claim_is_taken_over_by_a_corrected_request(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 5).await;
    let s = scope(&a, "key-4");
    let now = now();
    let claim = |print: u8, at: time::OffsetDateTime| {
        let s = s.clone();
        async move {
            f.store
                .claim(&s, &[print; 32], at, at + Duration::seconds(30))
                .await
                .expect("claim")
        }
    };
    assert_eq!(claim(1, now).await, Claim::Acquired);
    assert_eq!(
        claim(2, now).await,
        Claim::Mismatch,
        "while it may still finish"
    );
    let later = now + Duration::seconds(31);
    assert_eq!(
        claim(2, later).await,
        Claim::Acquired,
        "expired: taken over"
    );
    let after = f
        .store
        .adjust_qty(
            &a,
            item.id,
            delta(-1),
            Some(Idempotency {
                scope: &s,
                render: &render,
            }),
        )
        .await
        .expect("the corrected request completes its claim");
    assert_eq!(after.qty, 4);
    assert_eq!(claim(2, later).await, Claim::Replay(render(&after)));
    assert_eq!(
        claim(1, later).await,
        Claim::Mismatch,
        "the dead request's body"
    );
    // Purging what is older than the takeover keeps the record.
    f.store
        .purge_idempotency(now + Duration::seconds(10), 100)
        .await
        .expect("purge");
    assert_eq!(
        claim(2, later).await,
        Claim::Replay(render(&after)),
        "its age started again"
    );
}

pub async fn old_records_are_purged(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 1).await;
    let now = now();
    for key in ["old-1", "old-2"] {
        let s = scope(&a, key);
        f.store
            .claim(&s, &[1; 32], now, now + Duration::minutes(1))
            .await
            .expect("claim");
        let idem = Idempotency {
            scope: &s,
            render: &render,
        };
        f.store
            .adjust_qty(&a, item.id, delta(1), Some(idem))
            .await
            .expect("adjust");
    }
    assert_eq!(
        f.store
            .purge_idempotency(now - Duration::hours(1), 100)
            .await
            .expect("purge"),
        0
    );
    // At most `limit` at a time.
    for _ in 0..2 {
        assert_eq!(
            f.store
                .purge_idempotency(now + Duration::hours(25), 1)
                .await
                .expect("purge"),
            1
        );
    }
    assert_eq!(f.count("idempotency_keys").await, 0);
}

/// The event log mark moves forward only, and only for the log it names; the operator's
/// replace (`trueline eventlog pair`) stores it as given. The schema holds one row at most.
pub async fn the_event_log_mark_only_moves_forward_for_its_log(f: &Fixture) {
    use trueline_store::EventLogMark;
    let (one, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mark = |log_id, position| EventLogMark { log_id, position };
    assert_eq!(f.store.event_log_mark().await.expect("read"), None);
    let set = |m, replace| async move {
        f.store
            .set_event_log_mark(m, now(), replace)
            .await
            .expect("set");
        f.store.event_log_mark().await.expect("read")
    };
    assert_eq!(set(mark(one, 10), false).await, Some(mark(one, 10)));
    assert_eq!(set(mark(one, 25), false).await, Some(mark(one, 25)));
    assert_eq!(
        set(mark(one, 5), false).await,
        Some(mark(one, 25)),
        "never back"
    );
    assert_eq!(
        set(mark(other, 90), false).await,
        Some(mark(one, 25)),
        "not another log"
    );
    assert_eq!(
        set(mark(other, 3), true).await,
        Some(mark(other, 3)),
        "replaced"
    );
    assert!(
        f.raw
            .execute("INSERT INTO event_log_mark (singleton, log_id, position, updated_at) SELECT 2, log_id, 1, updated_at FROM event_log_mark")
            .await
            .is_err(),
        "one row at most"
    );
}
