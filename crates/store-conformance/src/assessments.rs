//! Assessment cases: frozen versions, the publish quota race, the double-submit race.

use crate::fixtures::*;
use crate::inventory::owner_actor;
use std::sync::Arc;
use time::Duration;
use trueline_core::DomainError;
use trueline_core::accounts::Email;
use trueline_core::assessments::{
    AssessmentSettings, AssessmentSettingsInput, AssessmentStatus, JsonInteger, QuestionSpec,
};
use trueline_store::{Actor, AnswersSource, NewAttempt, NewInvite, NewSubmission, StoreError};
use uuid::Uuid;

pub(crate) fn settings(title: &str) -> AssessmentSettings {
    AssessmentSettings::parse(AssessmentSettingsInput {
        title: title.to_owned(),
        description: None,
        time_limit_minutes: JsonInteger(30),
        passing_score_percent: JsonInteger(50),
        shuffle_questions: false,
        show_score_to_candidate: true,
    })
    .expect("valid settings")
}

pub(crate) fn question() -> QuestionSpec {
    QuestionSpec::from_json(
        &serde_json::json!({"type": "true_false", "prompt": "Is water wet?", "correct": true}),
    )
    .expect("valid question")
}

/// Another valid question (a replacement that changes something).
pub(crate) fn other_question() -> QuestionSpec {
    QuestionSpec::from_json(
        &serde_json::json!({"type": "true_false", "prompt": "Is fire hot?", "correct": true}),
    )
    .expect("valid question")
}

/// A draft with one question.
pub(crate) async fn draft(f: &Fixture, a: &Actor, title: &str) -> Uuid {
    let id = Uuid::now_v7();
    f.store
        .create_assessment(a, id, settings(title), None)
        .await
        .expect("create");
    f.store
        .add_questions(a, id, None, vec![(Uuid::now_v7(), question())], None)
        .await
        .expect("question");
    id
}

pub(crate) fn invite(email: &str) -> NewInvite {
    NewInvite {
        id: Uuid::now_v7(),
        email: Email::parse(email).expect("valid email"),
        name: None,
        token_hash: token_hash(email),
        expires_at: now() + Duration::days(7),
    }
}

/// Every change staff make to assessments leaves an immutable audit record (action = the
/// event type, with the actor and request id) beside its event, in the same transaction:
/// the outbox rows go once published, the audit log stays.
pub async fn staff_changes_to_assessments_are_audited(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Audited").await;
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Published, 3, None)
        .await
        .expect("publish");
    let outcomes = f
        .store
        .create_invites(&a, id, vec![invite("cand@example.com")], None)
        .await
        .expect("invite");
    f.store
        .revoke_invite(&a, id, outcomes[0].invite.id)
        .await
        .expect("revoke");
    f.store
        .set_share_link(&a, id, Some(token_hash("link")), None)
        .await
        .expect("share link");
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Closed, 3, None)
        .await
        .expect("close");
    let events = f
        .raw
        .scalar("SELECT count(*) FROM outbox WHERE event_type LIKE 'assessments.%'")
        .await;
    let audited = f
        .raw
        .scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'assessments.%'")
        .await;
    // created, questions added (the draft helper), published, invited, revoked, link, closed
    assert!(events >= 7, "{events}");
    assert_eq!(audited, events, "one audit record per staff event");
    for action in [
        "assessments.assessment.published",
        "assessments.invite.created",
        "assessments.invite.revoked",
        "assessments.share_link.set",
        "assessments.assessment.closed",
    ] {
        let sql = format!(
            "SELECT count(*) FROM audit_log WHERE action = '{action}' AND request_id = '{}'",
            a.request_id
        );
        assert_eq!(f.raw.scalar(&sql).await, 1, "{action}");
    }
    assert!(
        f.raw
            .execute("DELETE FROM audit_log WHERE action LIKE 'assessments.%'")
            .await
            .is_err(),
        "the records are immutable"
    );
}

/// The lifecycle's edges hold in the schema too (`assessments_status_edges`): a statement
/// skipping or reversing a step is refused, whatever the code checked.
pub async fn lifecycle_edges_are_held_by_the_schema(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Edges").await;
    let set =
        |status: &str| format!("UPDATE assessments SET status = '{status}' WHERE title = 'Edges'");
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Published, 3, None)
        .await
        .expect("publish");
    assert!(
        f.raw.execute(&set("archived")).await.is_err(),
        "published → archived"
    );
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Closed, 3, None)
        .await
        .expect("close");
    assert!(
        f.raw.execute(&set("published")).await.is_err(),
        "closed → published"
    );
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Archived, 3, None)
        .await
        .expect("archive");
    for back in ["closed", "published"] {
        assert!(
            f.raw.execute(&set(back)).await.is_err(),
            "archived → {back}"
        );
    }
    let stored = f
        .store
        .assessment(a.org_id, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.0.status, AssessmentStatus::Archived);
    assert_eq!(
        f.raw
            .scalar("SELECT published_assessments FROM organizations WHERE id IN (SELECT org_id FROM assessments)")
            .await,
        0,
        "the published count moved only with the accepted transitions"
    );
}

pub async fn published_versions_are_frozen_by_the_schema(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Rust basics").await;
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Published, 3, None)
        .await
        .expect("publish");
    let refused = f
        .store
        .add_questions(&a, id, None, vec![(Uuid::now_v7(), question())], None)
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::Domain(DomainError::NotEditable { .. }))
    ));
    for statement in [
        "UPDATE assessments SET title = 'Changed'",
        "UPDATE assessment_questions SET points = 5",
        "DELETE FROM assessment_questions",
        "DELETE FROM assessments",
    ] {
        assert!(
            f.raw.execute(statement).await.is_err(),
            "{statement} must be refused"
        );
    }
    let (stored, questions) = f
        .store
        .assessment(a.org_id, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (stored.settings.title(), questions.len()),
        ("Rust basics", 1)
    );
    // A revision is a new draft of the same family, with the questions copied.
    let revision = f
        .store
        .revise_assessment(&a, id, Uuid::now_v7(), None)
        .await
        .expect("revise");
    assert_eq!(
        (
            revision.family_id,
            revision.version_number,
            revision.status,
            revision.question_count
        ),
        (id, 2, AssessmentStatus::Draft, 1)
    );
    // A question moves neither out of the published version nor into it (each backend's
    // guard looked at one side of the move only).
    for statement in [
        "UPDATE assessment_questions
         SET assessment_id = (SELECT id FROM assessments WHERE status = 'draft'),
             position = position + 100
         WHERE assessment_id = (SELECT id FROM assessments WHERE status = 'published')",
        "UPDATE assessment_questions
         SET assessment_id = (SELECT id FROM assessments WHERE status = 'published'),
             position = position + 100
         WHERE assessment_id = (SELECT id FROM assessments WHERE status = 'draft')",
    ] {
        assert!(
            f.raw.execute(statement).await.is_err(),
            "{statement} must be refused"
        );
    }
    // Writing a frozen setting unchanged is no change (both backends alike).
    assert_eq!(
        f.raw
            .execute("UPDATE assessments SET title = title WHERE status = 'published'")
            .await,
        Ok(1)
    );
}

pub async fn concurrent_publishes_never_exceed_the_quota(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let mut drafts = Vec::new();
    for i in 0..20 {
        drafts.push(draft(f, &a, &format!("Draft {i}")).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(drafts.len()));
    let mut tasks = Vec::new();
    for id in drafts {
        let (store, a, barrier) = (f.store.clone(), a.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .transition_assessment(&a, id, None, AssessmentStatus::Published, 3, None)
                .await
        }));
    }
    let mut published = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => published += 1,
            Err(StoreError::Domain(DomainError::ActiveAssessmentLimit { max: 3 })) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(published, 3);
    assert_eq!(
        f.raw
            .scalar("SELECT count(*) FROM assessments WHERE status = 'published'")
            .await,
        3
    );
    assert_eq!(
        f.raw
            .scalar(
                "SELECT published_assessments FROM organizations WHERE published_assessments > 0"
            )
            .await,
        3
    );
}

pub async fn closing_frees_a_slot_and_the_counter_follows_the_status(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let first = draft(f, &a, "One").await;
    let second = draft(f, &a, "Two").await;
    f.store
        .transition_assessment(&a, first, None, AssessmentStatus::Published, 1, None)
        .await
        .expect("publish");
    let full = f
        .store
        .transition_assessment(&a, second, None, AssessmentStatus::Published, 1, None)
        .await;
    assert!(matches!(
        full,
        Err(StoreError::Domain(DomainError::ActiveAssessmentLimit {
            max: 1
        }))
    ));
    f.store
        .transition_assessment(&a, first, None, AssessmentStatus::Closed, 1, None)
        .await
        .expect("close");
    f.store
        .transition_assessment(&a, second, None, AssessmentStatus::Published, 1, None)
        .await
        .expect("publish second");
    let back = f
        .store
        .transition_assessment(&a, first, None, AssessmentStatus::Published, 1, None)
        .await;
    assert!(matches!(
        back,
        Err(StoreError::Domain(DomainError::InvalidTransition { .. }))
    ));
    assert_eq!(
        f.raw
            .scalar("SELECT max(published_assessments) FROM organizations")
            .await,
        1
    );
}

pub async fn two_concurrent_submits_leave_exactly_one_submission(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Quiz").await;
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Published, 3, None)
        .await
        .expect("publish");
    let candidate = invite("cand@example.com");
    let token = candidate.token_hash;
    f.store
        .create_invites(&a, id, vec![candidate], None)
        .await
        .expect("invite");
    let t = now();
    let attempt = f
        .store
        .start_attempt(
            &token,
            NewAttempt {
                id: Uuid::now_v7(),
                started_at: t,
                deadline_at: t + Duration::minutes(30),
                question_order: vec![],
            },
        )
        .await
        .expect("start");
    let again = f
        .store
        .start_attempt(
            &token,
            NewAttempt {
                id: Uuid::now_v7(),
                started_at: t + Duration::minutes(1),
                deadline_at: t + Duration::minutes(31),
                question_order: vec![],
            },
        )
        .await
        .expect("start again");
    assert_eq!(
        again.id, attempt.id,
        "starting twice returns the same attempt"
    );
    let submission = || NewSubmission {
        id: Uuid::now_v7(),
        earned: 1,
        total: 1,
        passed: true,
        per_question: serde_json::json!([]),
        answers: serde_json::json!({}),
        answers_source: AnswersSource::Request,
        auto_submitted: false,
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (store, barrier, s) = (f.store.clone(), barrier.clone(), submission());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.submit_attempt(attempt.id, s, t, Some(t)).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Domain(DomainError::AlreadySubmitted)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(f.count("submissions").await, 1);
    let late = f
        .store
        .save_answers(attempt.id, serde_json::json!({}), t, t)
        .await;
    assert!(matches!(
        late,
        Err(StoreError::Domain(DomainError::AlreadySubmitted))
    ));
}

pub async fn deadlines_are_enforced_by_the_guarded_statements(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Quiz").await;
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Published, 3, None)
        .await
        .expect("publish");
    let candidate = invite("late@example.com");
    let token = candidate.token_hash;
    f.store
        .create_invites(&a, id, vec![candidate], None)
        .await
        .expect("invite");
    let t = now();
    let attempt = f
        .store
        .start_attempt(
            &token,
            NewAttempt {
                id: Uuid::now_v7(),
                started_at: t,
                deadline_at: t + Duration::minutes(5),
                question_order: vec![],
            },
        )
        .await
        .expect("start");
    let later = t + Duration::minutes(10);
    let save = f
        .store
        .save_answers(
            attempt.id,
            serde_json::json!({}),
            later,
            later - Duration::seconds(30),
        )
        .await;
    assert!(matches!(
        save,
        Err(StoreError::Domain(DomainError::DeadlinePassed))
    ));
    let s = NewSubmission {
        id: Uuid::now_v7(),
        earned: 0,
        total: 1,
        passed: false,
        per_question: serde_json::json!([]),
        answers: serde_json::json!({}),
        answers_source: AnswersSource::Request,
        auto_submitted: false,
    };
    let late = f
        .store
        .submit_attempt(
            attempt.id,
            s.clone(),
            later,
            Some(later - Duration::seconds(30)),
        )
        .await;
    assert!(matches!(
        late,
        Err(StoreError::Domain(DomainError::DeadlinePassed))
    ));
    assert_eq!(
        f.store.overdue_attempts(later, 10).await.expect("overdue"),
        vec![attempt.id]
    );
    let auto = NewSubmission {
        auto_submitted: true,
        ..s
    };
    f.store
        .submit_attempt(attempt.id, auto, later, None)
        .await
        .expect("the sweeper may submit late");
    assert!(
        f.store
            .overdue_attempts(later, 10)
            .await
            .expect("overdue")
            .is_empty()
    );
}

/// Every mutation writes a domain event to the outbox in its transaction: draft edits and
/// share-link changes too. The events name what changed, never a question's content.
pub async fn draft_edits_and_share_links_write_outbox_events(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Quiz").await;
    let count = |event_type: &'static str| {
        let raw = f.raw.clone();
        async move {
            raw.scalar(&format!(
                "SELECT count(*) FROM outbox WHERE event_type = '{event_type}'"
            ))
            .await
        }
    };
    // `draft` added one question.
    assert_eq!(count("assessments.draft.questions_added").await, 1);
    f.store
        .update_assessment(&a, id, None, settings("Quiz, renamed"), None)
        .await
        .expect("update");
    let added = f
        .store
        .add_questions(&a, id, None, vec![(Uuid::now_v7(), question())], None)
        .await
        .expect("add");
    let (_, questions) = f
        .store
        .assessment(a.org_id, id)
        .await
        .expect("read")
        .expect("exists");
    let first = questions[0].id;
    f.store
        .replace_question(&a, id, first, None, other_question(), None)
        .await
        .expect("replace");
    f.store
        .reorder_questions(&a, id, None, vec![added[0].id, first], None)
        .await
        .expect("reorder");
    assert!(
        f.store
            .delete_question(&a, id, added[0].id, None)
            .await
            .expect("delete")
    );
    f.store
        .set_share_link(&a, id, Some(token_hash("link")), None)
        .await
        .expect("link");
    f.store
        .set_share_link(&a, id, None, None)
        .await
        .expect("unlink");
    // Removing it again changes nothing (no event, no write); an unknown assessment is 404.
    let outbox_before = f.count("outbox").await;
    let (before, _) = f
        .store
        .assessment(a.org_id, id)
        .await
        .expect("read")
        .expect("exists");
    let later = Actor {
        now: a.now + Duration::minutes(1),
        ..a.clone()
    };
    f.store
        .set_share_link(&later, id, None, None)
        .await
        .expect("unlink again");
    let (after, _) = f
        .store
        .assessment(a.org_id, id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (f.count("outbox").await, after.updated_at),
        (outbox_before, before.updated_at)
    );
    assert!(matches!(
        f.store.set_share_link(&a, Uuid::now_v7(), None, None).await,
        Err(StoreError::Domain(DomainError::NotFound(_)))
    ));
    for event_type in [
        "assessments.draft.settings_updated",
        "assessments.draft.question_replaced",
        "assessments.draft.questions_reordered",
        "assessments.draft.question_deleted",
        "assessments.share_link.set",
        "assessments.share_link.removed",
    ] {
        assert_eq!(count(event_type).await, 1, "{event_type}");
    }
    assert_eq!(count("assessments.draft.questions_added").await, 2);
    // No answer key and no token in any of them.
    assert_eq!(
        f.raw
            .scalar(
                "SELECT count(*) FROM outbox WHERE event_type LIKE 'assessments.%'
                 AND (CAST(payload AS TEXT) LIKE '%correct%'
                      OR CAST(payload AS TEXT) LIKE '%prompt%'
                      OR CAST(payload AS TEXT) LIKE '%token%')"
            )
            .await,
        0
    );
    // A refused edit writes none.
    let before = f.count("outbox").await;
    let refused = f
        .store
        .update_assessment(&a, id, Some(1), settings("Stale"), None)
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::Domain(DomainError::VersionMismatch { .. }))
    ));
    assert_eq!(f.count("outbox").await, before);
}

/// A lifecycle transition with an `If-Match` revision happens only from that revision: a
/// publish of a draft someone edited since it was read is refused (`VersionMismatch`,
/// before the transition is even considered) and changes nothing: status, counter, events
/// and audit as they were.
pub async fn transitions_with_a_stale_revision_change_nothing(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Guarded").await;
    let revision = || async {
        let (current, _) = f
            .store
            .assessment(a.org_id, id)
            .await
            .expect("read")
            .expect("exists");
        (current.revision, current.status)
    };
    let (seen, _) = revision().await;
    f.store
        .update_assessment(&a, id, Some(seen), settings("Edited since"), None)
        .await
        .expect("edit");
    let (current, _) = revision().await;
    assert_ne!(seen, current);
    let state = || async {
        (
            revision().await,
            f.count("outbox").await,
            f.count("audit_log").await,
            f.raw
                .scalar("SELECT published_assessments FROM organizations")
                .await,
        )
    };
    let before = state().await;
    for (to, expected) in [
        (AssessmentStatus::Published, seen),
        (AssessmentStatus::Published, current + 1),
        // Refused as stale even where the transition itself would be refused too.
        (AssessmentStatus::Archived, seen),
    ] {
        let refused = f
            .store
            .transition_assessment(&a, id, Some(expected), to, 3, None)
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::Domain(DomainError::VersionMismatch { expected: e, current: c }))
                    if e == expected && c == current
            ),
            "{to:?} at r{expected}: {refused:?}"
        );
        assert_eq!(state().await, before, "{to:?} at r{expected}");
    }
    let published = f
        .store
        .transition_assessment(&a, id, Some(current), AssessmentStatus::Published, 3, None)
        .await
        .expect("publish at the current revision");
    assert_eq!(published.status, AssessmentStatus::Published);
    let closed = f
        .store
        .transition_assessment(&a, id, Some(current), AssessmentStatus::Closed, 3, None)
        .await
        .expect("close at the revision it was published at");
    assert_eq!(closed.status, AssessmentStatus::Closed);
}

/// The events of one request come out in the request's order on both stores: inviting
/// `[c, a, b]` publishes c's, a's, then b's `invite.created` (PostgreSQL inserts the rows in
/// email order, to not deadlock, and wrote the events in that order too).
pub async fn invite_events_follow_the_request_order(f: &Fixture) {
    use trueline_store::Destination;
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Ordered").await;
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Published, 3, None)
        .await
        .expect("publish");
    let outcomes = f
        .store
        .create_invites(
            &a,
            id,
            vec![
                invite("c@example.com"),
                invite("a@example.com"),
                invite("b@example.com"),
            ],
            None,
        )
        .await
        .expect("invite");
    let requested: Vec<String> = outcomes.iter().map(|o| o.invite.id.to_string()).collect();
    let rows = f
        .store
        .lease_outbox(
            Destination::EventLog,
            "test",
            a.now,
            a.now + Duration::seconds(30),
            10,
            1000,
            &[],
        )
        .await
        .expect("lease");
    let published: Vec<String> = rows
        .iter()
        .filter(|r| r.event_type == "assessments.invite.created")
        .map(|r| {
            crate::delivery::payload_of(r)["invite_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(published, requested);
}

/// An edit that changes nothing (settings as they are, a question replaced by itself, the
/// current order) is a no-op, as an unchanged item is: no new revision, no event, no audit
/// record, so it does not make another editor's `If-Match` stale. A real change still is one.
pub async fn draft_edits_that_change_nothing_are_no_ops(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Quiz").await;
    f.store
        .add_questions(&a, id, None, vec![(Uuid::now_v7(), question())], None)
        .await
        .expect("second question");
    let state = || async {
        let (assessment, questions) = f
            .store
            .assessment(a.org_id, id)
            .await
            .expect("read")
            .expect("exists");
        (
            assessment.revision,
            questions,
            f.count("outbox").await,
            f.count("audit_log").await,
        )
    };
    let before = state().await;
    let revision = Some(before.0);
    let same = f
        .store
        .update_assessment(&a, id, revision, settings("Quiz"), None)
        .await
        .expect("same settings");
    assert_eq!(same.revision, before.0);
    let first = before.1[0].clone();
    let replaced = f
        .store
        .replace_question(&a, id, first.id, revision, first.spec.clone(), None)
        .await
        .expect("same question");
    assert_eq!(replaced, first);
    let order: Vec<Uuid> = before.1.iter().map(|q| q.id).collect();
    f.store
        .reorder_questions(&a, id, revision, order.clone(), None)
        .await
        .expect("same order");
    assert_eq!(state().await, before, "nothing changed");
    let reversed: Vec<Uuid> = order.into_iter().rev().collect();
    let moved = f
        .store
        .reorder_questions(&a, id, revision, reversed.clone(), None)
        .await
        .expect("another order");
    assert_eq!(moved.iter().map(|q| q.id).collect::<Vec<_>>(), reversed);
    let after = state().await;
    assert_eq!(after.0, before.0 + 1, "a real change is a new revision");
    assert!(
        after.2 > before.2 && after.3 > before.3,
        "with its event and audit record"
    );
}
