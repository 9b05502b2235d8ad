//! Assessment races: every check-then-write of the assessments store must hold when two
//! requests run it at once (on PostgreSQL under READ COMMITTED, where a plain read does not
//! stop a concurrent writer), and the start and submit of a candidate must re-check inside
//! their own transaction what the handler read before.

use crate::assessments::{draft, invite, settings};
use crate::fixtures::*;
use crate::inventory::owner_actor;
use std::future::Future;
use std::sync::Arc;
use time::Duration;
use trueline_core::DomainError;
use trueline_core::assessments::{AssessmentStatus, ReviewDecision, SubmissionStatus};
use trueline_store::{
    Actor, AnswersSource, Attempt, NewAttempt, NewInvite, NewSubmission, Store, StoreError,
};
use uuid::Uuid;

/// How many times each race is run: one run may miss the window, twenty rarely all do.
const ROUNDS: usize = 20;

/// Runs `n` copies of `op` released together; their results in task order.
async fn together<T, F, Fut>(store: &Arc<dyn Store>, n: usize, op: F) -> Vec<Result<T, StoreError>>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (barrier, run) = (barrier.clone(), op(store.clone(), i));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            run.await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

pub(crate) async fn published(f: &Fixture, a: &Actor, title: &str) -> Uuid {
    let id = draft(f, a, title).await;
    f.store
        .transition_assessment(a, id, None, AssessmentStatus::Published, 100, None)
        .await
        .expect("publish");
    id
}

/// A started attempt of a new candidate of `assessment`.
pub(crate) async fn started(f: &Fixture, a: &Actor, assessment: Uuid, email: &str) -> Attempt {
    let candidate = invite(email);
    let token = candidate.token_hash;
    f.store
        .create_invites(a, assessment, vec![candidate], None)
        .await
        .expect("invite");
    let t = now();
    f.store
        .start_attempt(&token, new_attempt(t))
        .await
        .expect("start")
}

fn new_attempt(t: time::OffsetDateTime) -> NewAttempt {
    NewAttempt {
        id: Uuid::now_v7(),
        started_at: t,
        deadline_at: t + Duration::minutes(30),
        question_order: vec![],
    }
}

pub(crate) fn submission(answers: serde_json::Value, source: AnswersSource) -> NewSubmission {
    NewSubmission {
        id: Uuid::now_v7(),
        earned: 0,
        total: 1,
        passed: false,
        per_question: serde_json::json!([]),
        answers,
        answers_source: source,
        auto_submitted: false,
    }
}

fn is_transition_refusal(r: &Result<impl Sized, StoreError>) -> bool {
    matches!(
        r,
        Err(StoreError::Domain(DomainError::InvalidTransition { .. }))
    )
}

pub async fn concurrent_reviews_of_one_submission_apply_one_decision(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = published(f, &a, "Quiz").await;
    for round in 0..ROUNDS {
        let attempt = started(f, &a, id, &format!("c{round}@example.com")).await;
        let t = now();
        let s = f
            .store
            .submit_attempt(
                attempt.id,
                submission(serde_json::json!({}), AnswersSource::Request),
                t,
                Some(t),
            )
            .await
            .expect("submit");
        f.store
            .review_submission(&a, s.id, ReviewDecision::Verify, None, None)
            .await
            .expect("verify");
        let decisions = [ReviewDecision::Approve, ReviewDecision::Reject];
        let results = together(&f.store, 2, |store, i| {
            let a = a.clone();
            async move {
                store
                    .review_submission(&a, s.id, decisions[i], None, None)
                    .await
            }
        })
        .await;
        let applied: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(applied.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().any(is_transition_refusal));
        let stored = f
            .store
            .submission(a.org_id, s.id)
            .await
            .expect("read")
            .expect("exists");
        // The stored status, the audit trail and the one decision that was applied agree.
        assert_eq!(stored.review_status, applied[0].review_status);
        assert_eq!(stored.reviews.len(), 2, "verify plus one decision");
        assert_eq!(stored.reviews[1].to, stored.review_status);
        assert_ne!(stored.review_status, SubmissionStatus::Verified);
    }
    assert_eq!(
        f.raw
            .scalar(
                "SELECT count(*) FROM outbox WHERE event_type = 'assessments.submission.reviewed'"
            )
            .await,
        2 * ROUNDS as i64
    );
}

pub async fn concurrent_edits_at_one_revision_let_exactly_one_through(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Quiz").await;
    for round in 0..ROUNDS {
        let (current, _) = f
            .store
            .assessment(a.org_id, id)
            .await
            .expect("read")
            .expect("exists");
        let results = together(&f.store, 4, |store, i| {
            let a = a.clone();
            async move {
                store
                    .update_assessment(
                        &a,
                        id,
                        Some(current.revision),
                        settings(&format!("Round {round} edit {i}")),
                        None,
                    )
                    .await
            }
        })
        .await;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().all(|r| r.is_ok()
            || matches!(
                r,
                Err(StoreError::Domain(DomainError::VersionMismatch { .. }))
            )));
        let (after, _) = f
            .store
            .assessment(a.org_id, id)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(after.revision, current.revision + 1);
        assert_eq!(after.settings.title(), winners[0].settings.title());
    }
}

pub async fn an_edit_racing_a_publish_never_changes_the_published_version(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    for round in 0..ROUNDS {
        let id = draft(f, &a, &format!("Quiz {round}")).await;
        let (_, questions) = f
            .store
            .assessment(a.org_id, id)
            .await
            .expect("read")
            .expect("exists");
        let only = questions[0].id;
        let publish = {
            let (store, a) = (f.store.clone(), a.clone());
            tokio::spawn(async move {
                store
                    .transition_assessment(&a, id, None, AssessmentStatus::Published, 1_000, None)
                    .await
                    .map(|_| ())
            })
        };
        let delete = {
            let (store, a) = (f.store.clone(), a.clone());
            tokio::spawn(async move { store.delete_question(&a, id, only, None).await.map(|_| ()) })
        };
        let (publish, delete) = (publish.await.expect("task"), delete.await.expect("task"));
        let (stored, questions) = f
            .store
            .assessment(a.org_id, id)
            .await
            .expect("read")
            .expect("exists");
        match (&publish, &delete) {
            // The publish came first: the version is frozen with its question.
            (Ok(()), Err(StoreError::Domain(DomainError::NotEditable { .. }))) => {
                assert_eq!(
                    (stored.status, questions.len()),
                    (AssessmentStatus::Published, 1)
                );
            }
            // The delete came first: nothing left to publish.
            (Err(StoreError::Domain(DomainError::Validation(_))), Ok(())) => {
                assert_eq!(
                    (stored.status, questions.len()),
                    (AssessmentStatus::Draft, 0)
                );
            }
            other => panic!("round {round}: both or neither applied: {other:?}"),
        }
    }
}

pub async fn concurrent_transitions_and_revisions_run_one_after_another(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    for round in 0..ROUNDS / 4 {
        let id = draft(f, &a, &format!("Quiz {round}")).await;
        let publishes = together(&f.store, 4, |store, _| {
            let a = a.clone();
            async move {
                store
                    .transition_assessment(&a, id, None, AssessmentStatus::Published, 1_000, None)
                    .await
            }
        })
        .await;
        assert_eq!(publishes.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(
            publishes
                .iter()
                .all(|r| r.is_ok() || is_transition_refusal(r)),
            "{publishes:?}"
        );
        // Revisions of one published version: each gets its own version number.
        let revisions = together(&f.store, 4, |store, _| {
            let a = a.clone();
            async move { store.revise_assessment(&a, id, Uuid::now_v7(), None).await }
        })
        .await;
        let mut numbers: Vec<u32> = revisions
            .into_iter()
            .map(|r| r.expect("revise").version_number)
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, vec![2, 3, 4, 5]);
    }
    assert_eq!(
        f.raw
            .scalar(
                "SELECT count(*) FROM outbox WHERE event_type = 'assessments.assessment.published'"
            )
            .await,
        (ROUNDS / 4) as i64
    );
}

/// Two requests inviting the same candidates in opposite orders both succeed, with their
/// outcomes in request order. On PostgreSQL an insert that conflicts with a row another open
/// transaction inserted waits for it: in request order the two waited for each other (40P01,
/// a 503), so the store works through the invites in email order.
pub async fn overlapping_invites_in_opposite_orders_both_succeed(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = published(f, &a, "Quiz").await;
    for round in 0..ROUNDS {
        let emails: Vec<String> = (0..5)
            .map(|k| format!("c{round}-{k}@example.com"))
            .collect();
        let results = together(&f.store, 2, |store, task| {
            let a = a.clone();
            let mut list: Vec<NewInvite> = emails
                .iter()
                .map(|e| {
                    let mut i = invite(e);
                    i.token_hash = token_hash(&format!("{e}/{task}"));
                    i
                })
                .collect();
            if task == 1 {
                list.reverse();
            }
            async move { store.create_invites(&a, id, list, None).await }
        })
        .await;
        for (task, result) in results.iter().enumerate() {
            let outcomes = result.as_ref().expect("both requests succeed");
            let mut got: Vec<String> = outcomes
                .iter()
                .map(|o| o.invite.email.to_string())
                .collect();
            if task == 1 {
                got.reverse();
            }
            assert_eq!(got, emails, "outcomes in request order");
            let created = outcomes.iter().filter(|o| o.created).count();
            assert!(created <= 5);
        }
        let created: usize = results
            .iter()
            .map(|r| {
                r.as_ref()
                    .map_or(0, |o| o.iter().filter(|o| o.created).count())
            })
            .sum();
        assert_eq!(created, 5, "each candidate invited once");
    }
    assert_eq!(f.count("invites").await, (ROUNDS * 5) as i64);
}

pub async fn a_start_rechecks_revocation_expiry_and_status_in_its_transaction(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = published(f, &a, "Quiz").await;
    let t = now();
    let mut expiring = invite("soon@example.com");
    expiring.expires_at = t + Duration::minutes(1);
    let (to_revoke, to_close) = (invite("revoked@example.com"), invite("closed@example.com"));
    let (revoked_token, soon_token, closed_token) = (
        to_revoke.token_hash,
        expiring.token_hash,
        to_close.token_hash,
    );
    let outcomes = f
        .store
        .create_invites(&a, id, vec![to_revoke, expiring, to_close], None)
        .await
        .expect("invites");
    let revoked = outcomes[0].invite.id;
    // A revoke that lands after the handler's checks: the start still refuses.
    assert!(
        f.store
            .revoke_invite(&a, id, revoked)
            .await
            .expect("revoke")
    );
    let refused = f.store.start_attempt(&revoked_token, new_attempt(t)).await;
    assert!(matches!(
        refused,
        Err(StoreError::Domain(DomainError::NotFound(_)))
    ));
    // Invited again: the same invite gets a new token. A start with the old token (its
    // handler's checks passed before the revoke) still finds no invite.
    let mut again = invite("revoked@example.com");
    again.token_hash = token_hash("reissued");
    let reissued = f
        .store
        .create_invites(&a, id, vec![again], None)
        .await
        .expect("re-issue");
    assert_eq!(reissued[0].invite.id, revoked, "the same invite, re-issued");
    let old_token = f.store.start_attempt(&revoked_token, new_attempt(t)).await;
    assert!(matches!(
        old_token,
        Err(StoreError::Domain(DomainError::NotFound(_)))
    ));
    let late = f
        .store
        .start_attempt(&soon_token, new_attempt(t + Duration::minutes(1)))
        .await;
    assert!(matches!(
        late,
        Err(StoreError::Domain(DomainError::InviteExpired))
    ));
    f.store
        .transition_assessment(&a, id, None, AssessmentStatus::Closed, 100, None)
        .await
        .expect("close");
    let after_close = f.store.start_attempt(&closed_token, new_attempt(t)).await;
    assert!(matches!(
        after_close,
        Err(StoreError::Domain(DomainError::InvalidTransition { .. }))
    ));
    assert_eq!(f.count("attempts").await, 0);
    assert_eq!(
        f.raw
            .scalar("SELECT count(*) FROM outbox WHERE event_type = 'assessments.attempt.started'")
            .await,
        0
    );
}

/// A revoke that lands after the handler read the (then valid) session: the candidate's save
/// and submit still refuse (404), changing nothing; the sweeper still closes the attempt.
pub async fn saves_and_submits_recheck_revocation_in_their_transaction(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = published(f, &a, "Quiz").await;
    let attempt = started(f, &a, id, "cand@example.com").await;
    let t = now();
    let saved = serde_json::json!({ "q": "before" });
    f.store
        .save_answers(attempt.id, saved.clone(), t, t)
        .await
        .expect("save");
    assert!(
        f.store
            .revoke_invite(&a, id, attempt.invite_id)
            .await
            .expect("revoke")
    );
    let save = f
        .store
        .save_answers(attempt.id, serde_json::json!({ "q": "after" }), t, t)
        .await;
    assert!(
        matches!(save, Err(StoreError::Domain(DomainError::NotFound(_)))),
        "{save:?}"
    );
    let submit = f
        .store
        .submit_attempt(
            attempt.id,
            submission(saved.clone(), AnswersSource::Request),
            t,
            Some(t),
        )
        .await;
    assert!(
        matches!(submit, Err(StoreError::Domain(DomainError::NotFound(_)))),
        "{submit:?}"
    );
    let session = f
        .store
        .attempt_session(attempt.id)
        .await
        .expect("read")
        .expect("exists");
    // The session's assessment (read without the employer's counts) is the assessment.
    let (full, _) = f
        .store
        .assessment(a.org_id, id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        session.assessment,
        trueline_store::SessionAssessment {
            id,
            org_id: a.org_id,
            status: full.status,
            settings: full.settings,
        }
    );
    let kept = session.attempt.expect("attempt");
    assert_eq!(
        (kept.answers, kept.submitted_at),
        (saved.clone(), None),
        "the refused save and submit changed nothing"
    );
    assert_eq!(f.count("submissions").await, 0);
    // The sweeper (no deadline bound) submits the saved answers of the abandoned attempt.
    f.store
        .submit_attempt(
            attempt.id,
            submission(
                saved,
                AnswersSource::Saved {
                    saved_at: kept.saved_at,
                },
            ),
            t + Duration::minutes(31),
            None,
        )
        .await
        .expect("sweeper");
    assert_eq!(f.count("submissions").await, 1);
}

pub async fn a_submit_of_saved_answers_is_refused_when_a_save_replaced_them(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = published(f, &a, "Quiz").await;
    let attempt = started(f, &a, id, "cand@example.com").await;
    let t = now();
    let first = serde_json::json!({ "q": "first" });
    let saved = f
        .store
        .save_answers(attempt.id, first.clone(), t, t)
        .await
        .expect("save");
    // The submit read (and scored) the first save; a second save lands before it is recorded.
    let second = serde_json::json!({ "q": "second" });
    f.store
        .save_answers(attempt.id, second.clone(), t + Duration::seconds(1), t)
        .await
        .expect("save again");
    let stale = f
        .store
        .submit_attempt(
            attempt.id,
            submission(
                first,
                AnswersSource::Saved {
                    saved_at: saved.saved_at,
                },
            ),
            t + Duration::seconds(2),
            Some(t),
        )
        .await;
    assert!(matches!(
        stale,
        Err(StoreError::Domain(DomainError::AnswersChanged))
    ));
    assert_eq!(f.count("submissions").await, 0);
    let session = f
        .store
        .attempt_session(attempt.id)
        .await
        .expect("read")
        .expect("exists");
    let kept = session.attempt.expect("attempt");
    assert_eq!(
        (kept.answers, kept.submitted_at),
        (second.clone(), None),
        "the refused submit changed nothing"
    );
    // Scored again on what is saved now, it is recorded.
    f.store
        .submit_attempt(
            attempt.id,
            submission(
                second,
                AnswersSource::Saved {
                    saved_at: kept.saved_at,
                },
            ),
            t + Duration::seconds(3),
            Some(t),
        )
        .await
        .expect("submit");
    assert_eq!(f.count("submissions").await, 1);
    // An attempt never saved is guarded by "never saved".
    let other = started(f, &a, id, "other@example.com").await;
    f.store
        .submit_attempt(
            other.id,
            submission(
                serde_json::json!({}),
                AnswersSource::Saved { saved_at: None },
            ),
            t,
            Some(t),
        )
        .await
        .expect("submit of an attempt never saved");
}

/// A read of an assessment shows one moment: its revision, its question count and its
/// questions agree while questions are being added (on PostgreSQL each statement of a READ
/// COMMITTED transaction took its own snapshot, so a read could pair one revision's count
/// with the next revision's questions).
pub async fn reads_of_an_assessment_show_one_moment_while_it_changes(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let id = draft(f, &a, "Quiz").await;
    let writer = {
        let store = f.store.clone();
        let a = a.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                store
                    .add_questions(
                        &a,
                        id,
                        None,
                        vec![(Uuid::now_v7(), crate::assessments::question())],
                        None,
                    )
                    .await
                    .expect("add");
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let (assessment, questions) = f
            .store
            .assessment(a.org_id, id)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(
            assessment.question_count as usize,
            questions.len(),
            "revision {} read with {} questions",
            assessment.revision,
            questions.len()
        );
        // Each added question is one revision: a draft of one question is at revision 2.
        assert_eq!(assessment.revision as usize, questions.len() + 1);
        reads += 1;
    }
    writer.await.expect("writer");
}
