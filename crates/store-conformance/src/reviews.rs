//! A submission's review trail: its order is the sequence in which the transitions were made
//! (`seq`, one step per transition, held by the schema), whatever the clocks of the
//! instances that made them said.

use crate::assessment_races::{published, started, submission};
use crate::fixtures::*;
use crate::inventory::owner_actor;
use time::{Duration, OffsetDateTime};
use trueline_core::assessments::ReviewDecision::{Approve, Archive, Reject, Verify};
use trueline_core::assessments::SubmissionStatus::{
    Approved, Archived, Rejected, Submitted, Verified,
};
use trueline_core::assessments::{ReviewDecision, SubmissionStatus};
use trueline_store::{Actor, AnswersSource, Submission};
use uuid::Uuid;

/// A submission of a new candidate of `assessment`, not reviewed yet.
async fn submitted(f: &Fixture, a: &Actor, assessment: Uuid, email: &str) -> Submission {
    let attempt = started(f, a, assessment, email).await;
    let t = now();
    f.store
        .submit_attempt(
            attempt.id,
            submission(serde_json::json!({}), AnswersSource::Request),
            t,
            Some(t),
        )
        .await
        .expect("submit")
}

/// `a`'s decision made by an instance whose clock says `at`.
async fn review_at(
    f: &Fixture,
    a: &Actor,
    id: Uuid,
    decision: ReviewDecision,
    at: OffsetDateTime,
) -> Submission {
    let a = Actor {
        now: at,
        ..a.clone()
    };
    f.store
        .review_submission(&a, id, decision, None, None)
        .await
        .expect("review")
}

async fn stored(f: &Fixture, a: &Actor, id: Uuid) -> Submission {
    f.store
        .submission(a.org_id, id)
        .await
        .expect("read")
        .expect("exists")
}

fn trail(s: &Submission) -> Vec<(SubmissionStatus, SubmissionStatus)> {
    s.reviews.iter().map(|r| (r.from, r.to)).collect()
}

fn times(s: &Submission) -> Vec<OffsetDateTime> {
    s.reviews.iter().map(|r| r.at).collect()
}

pub async fn a_review_trail_keeps_the_transition_order_when_the_clock_goes_back(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let assessment = published(f, &a, "Quiz").await;
    let s = submitted(f, &a, assessment, "cand@example.com").await;
    // Each transition made by an instance whose clock is an hour behind the previous one's
    // (a clock stepped back, or another instance with a skewed clock).
    let t = now();
    let at = [t, t - Duration::hours(1), t - Duration::hours(2)];
    review_at(f, &a, s.id, Verify, at[0]).await;
    review_at(f, &a, s.id, Approve, at[1]).await;
    let answered = review_at(f, &a, s.id, Archive, at[2]).await;
    let expected = [
        (Submitted, Verified),
        (Verified, Approved),
        (Approved, Archived),
    ];
    let read = stored(f, &a, s.id).await;
    assert_eq!(trail(&read), expected, "the trail read back");
    assert_eq!(
        trail(&answered),
        expected,
        "the trail the last review answered"
    );
    assert_eq!(times(&read), at, "each keeps the time its instance gave it");
}

pub async fn the_database_refuses_two_review_rows_of_one_step_and_a_step_below_one(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let assessment = published(f, &a, "Quiz").await;
    let s = submitted(f, &a, assessment, "cand@example.com").await;
    review_at(f, &a, s.id, Verify, now()).await;
    // The one review row again as a decision, under another id (the submission's attempt's:
    // an id of the column's type on both backends) and with the step `seq`.
    let decision_at = |seq: &str| {
        format!(
            "INSERT INTO submission_reviews (id, submission_id, seq, from_status, to_status,
                 decision, note, actor_user_id, request_id, at)
             SELECT s.attempt_id, r.submission_id, {seq}, 'verified', 'approved', 'approve',
                 NULL, r.actor_user_id, r.request_id, r.at
             FROM submission_reviews r JOIN submissions s ON s.id = r.submission_id"
        )
    };
    for (what, sql) in [
        ("a second row of the same step", decision_at("r.seq")),
        ("step 0", decision_at("0")),
        ("a negative step", decision_at("-1")),
    ] {
        let refused = f.raw.execute(&sql).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("seq")),
            "{what} must be refused for its step: {refused:?}"
        );
    }
    assert_eq!(f.count("submission_reviews").await, 1, "nothing written");
    // The same row as the next step is taken: what was refused above was the step.
    assert_eq!(f.raw.execute(&decision_at("r.seq + 1")).await, Ok(1));
}

/// The approval of the one verified submission as a version before the sequence wrote it:
/// the guarded status update, then a review row that names no step (the same statements the
/// store runs, less `seq`, outside the store's transaction).
const APPROVAL_WITHOUT_A_STEP: [&str; 2] = [
    "UPDATE submissions SET review_status = 'approved' WHERE review_status = 'verified'",
    "INSERT INTO submission_reviews (id, submission_id, from_status, to_status,
         decision, note, actor_user_id, request_id, at)
     SELECT s.attempt_id, r.submission_id, 'verified', 'approved', 'approve', NULL,
         r.actor_user_id, r.request_id, r.at
     FROM submission_reviews r JOIN submissions s ON s.id = r.submission_id",
];

/// SQLite (one process uses its database, so no earlier version writes beside this one): a
/// review row without its step is refused. Not in the shared suite: PostgreSQL numbers it.
pub async fn a_review_row_without_a_step_is_refused(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let assessment = published(f, &a, "Quiz").await;
    let s = submitted(f, &a, assessment, "cand@example.com").await;
    review_at(f, &a, s.id, Verify, now()).await;
    let refused = f.raw.execute(APPROVAL_WITHOUT_A_STEP[1]).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("seq")),
        "a row without a step must be refused for its step: {refused:?}"
    );
    assert_eq!(f.count("submission_reviews").await, 1, "nothing written");
}

/// PostgreSQL: during a rolling upgrade, instances of a version before the sequence still
/// review submissions and write their rows without a step; the database numbers each as its
/// submission's next step (migration 18), and the trail stays in transition order with the
/// current version's steps before and after it.
pub async fn a_review_row_an_earlier_version_writes_without_a_step_is_numbered_next(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let assessment = published(f, &a, "Quiz").await;
    let s = submitted(f, &a, assessment, "cand@example.com").await;
    let t = now();
    review_at(f, &a, s.id, Verify, t).await;
    for sql in APPROVAL_WITHOUT_A_STEP {
        assert_eq!(f.raw.execute(sql).await, Ok(1), "{sql}");
    }
    // The current version's next transition, by a clock an hour behind: still the third step.
    review_at(f, &a, s.id, Archive, t - Duration::hours(1)).await;
    let read = stored(f, &a, s.id).await;
    assert_eq!(read.review_status, Archived);
    assert_eq!(
        trail(&read),
        [
            (Submitted, Verified),
            (Verified, Approved),
            (Approved, Archived)
        ]
    );
    assert_eq!(
        f.raw
            .scalar(&format!(
                "SELECT count(*) FROM submission_reviews WHERE submission_id = '{}'
                 AND (seq, to_status) IN ((1, 'verified'), (2, 'approved'), (3, 'archived'))",
                s.id
            ))
            .await,
        3,
        "steps 1, 2, 3"
    );
    // A row that names its step is judged as before: a second row of step 2 is refused.
    let again = f
        .raw
        .execute(&format!(
            "INSERT INTO submission_reviews (id, submission_id, seq, from_status, to_status,
                 decision, note, actor_user_id, request_id, at)
             SELECT gen_random_uuid(), submission_id, 2, from_status, to_status, decision, note,
                 actor_user_id, request_id, at
             FROM submission_reviews WHERE submission_id = '{}' AND seq = 2",
            s.id
        ))
        .await;
    assert!(again.is_err_and(|e| e.contains("seq")), "step 2 twice");
    assert_eq!(f.count("submission_reviews").await, 3);
}

/// Rows of the review trail written before it had a sequence are numbered, when the
/// migration adds it, in the best order known for them: by (at, id) within each submission.
/// Down and up again keep every row, and the immutability triggers hold at both ends.
pub async fn review_rows_written_before_the_sequence_are_numbered_by_time(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let assessment = published(f, &a, "Quiz").await;
    let t = now();
    let forward = submitted(f, &a, assessment, "forward@example.com").await;
    for (i, decision) in [Verify, Approve, Archive].into_iter().enumerate() {
        review_at(f, &a, forward.id, decision, t + Duration::seconds(i as i64)).await;
    }
    let back = submitted(f, &a, assessment, "back@example.com").await;
    review_at(f, &a, back.id, Verify, t).await;
    review_at(f, &a, back.id, Reject, t - Duration::hours(1)).await;
    let tied = submitted(f, &a, assessment, "tied@example.com").await;
    review_at(f, &a, tied.id, Verify, t).await;
    review_at(f, &a, tied.id, Approve, t).await;
    let rows = f.count("submission_reviews").await;
    assert_eq!(rows, 7);

    // Back to before the sequence (any later migration first), then up again.
    let status = f.store.migration_status().await.expect("status");
    let since = status
        .iter()
        .find(|m| m.description == "review sequence")
        .expect("the sequence's migration")
        .version;
    let mut newer: Vec<i64> = status
        .iter()
        .map(|m| m.version)
        .filter(|&v| v >= since)
        .collect();
    newer.reverse();
    assert_eq!(
        f.store
            .migrate_down(newer.len() as u32)
            .await
            .expect("down"),
        newer
    );
    assert!(
        f.raw
            .execute("SELECT count(*) FROM submission_reviews WHERE seq >= 1")
            .await
            .is_err(),
        "no sequence before the migration"
    );
    assert_eq!(f.count("submission_reviews").await, rows, "every row kept");
    let refuse_changes = |when: &'static str| async move {
        for sql in [
            "UPDATE submission_reviews SET note = 'forged'",
            "DELETE FROM submission_reviews",
        ] {
            assert!(f.raw.execute(sql).await.is_err(), "{when}: {sql}");
        }
        assert_eq!(f.count("submission_reviews").await, rows, "{when}");
    };
    refuse_changes("before the sequence").await;
    newer.reverse();
    assert_eq!(f.store.migrate_up().await.expect("up"), newer);
    refuse_changes("with the sequence").await;

    // Each row's step is its rank by (at, id) among its submission's rows.
    let misnumbered = f
        .raw
        .scalar(
            "SELECT count(*) FROM submission_reviews r
             WHERE r.seq <> (SELECT count(*) FROM submission_reviews o
                             WHERE o.submission_id = r.submission_id
                               AND (o.at < r.at OR (o.at = r.at AND o.id <= r.id)))",
        )
        .await;
    assert_eq!(misnumbered, 0, "every row numbered by (at, id)");
    let read = stored(f, &a, forward.id).await;
    assert_eq!(
        trail(&read),
        [
            (Submitted, Verified),
            (Verified, Approved),
            (Approved, Archived)
        ]
    );
    // Made while the clock went back, these two were ordered by time before the migration:
    // that is the order they are numbered in (nothing else recorded which came first).
    let read = stored(f, &a, back.id).await;
    assert_eq!(trail(&read), [(Verified, Rejected), (Submitted, Verified)]);
    // A transition made now comes after every numbered one, whatever its clock says.
    review_at(f, &a, back.id, Archive, t - Duration::hours(2)).await;
    let read = stored(f, &a, back.id).await;
    assert_eq!(
        trail(&read),
        [
            (Verified, Rejected),
            (Submitted, Verified),
            (Rejected, Archived)
        ]
    );
    assert_eq!(
        f.raw
            .scalar("SELECT count(*) FROM submission_reviews WHERE seq = 3")
            .await,
        2,
        "the third steps of `forward` and `back`"
    );
}
