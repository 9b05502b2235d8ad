//! Assessments: versions (drafts and frozen published ones), questions, invites, timed
//! attempts, submissions and their review.

use crate::{Actor, Idempotency, Page, PageRequest, StoreError};
use time::OffsetDateTime;
use trueline_core::accounts::Email;
use trueline_core::assessments::{
    AssessmentSettings, AssessmentStatus, QuestionSpec, ReviewDecision, SubmissionStatus,
};
use trueline_core::ids::{OrgId, UserId};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub id: Uuid,
    pub org_id: OrgId,
    /// The first version's id; every revision shares it.
    pub family_id: Uuid,
    pub version_number: u32,
    pub status: AssessmentStatus,
    pub settings: AssessmentSettings,
    /// +1 on every change of the draft; the ETag.
    pub revision: u64,
    pub has_share_link: bool,
    pub published_at: Option<OffsetDateTime>,
    pub closed_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub created_by: UserId,
    pub question_count: u32,
    pub invite_count: u64,
    pub submission_count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: Uuid,
    pub position: u32,
    pub spec: QuestionSpec,
}

#[derive(Debug, Clone)]
pub struct NewInvite {
    pub id: Uuid,
    pub email: Email,
    pub name: Option<String>,
    /// SHA-256 of the candidate token (the token is returned once, never stored).
    pub token_hash: [u8; 32],
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub id: Uuid,
    pub assessment_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub via_share_link: bool,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub submitted_at: Option<OffsetDateTime>,
}

/// The result of inviting one candidate: created now, re-issued (an earlier invite of the
/// same email that was revoked or expired before it was ever started now holds the new token
/// and expiry), or invited before (no token then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteOutcome {
    pub invite: Invite,
    pub created: bool,
    pub reissued: bool,
}

/// Whether an invite whose attempt has not started can start one now. Each store checks it
/// again inside the start's write transaction, with the invite and the assessment read
/// there: the handler's checks ran on an earlier read that a revoke, an expiry or a close
/// may have overtaken.
pub fn startable(revoked: bool, expired: bool, status: &str) -> Result<(), StoreError> {
    if revoked {
        return Err(StoreError::not_found("invite"));
    }
    if expired {
        return Err(trueline_core::DomainError::InviteExpired.into());
    }
    let status = AssessmentStatus::parse(status)
        .ok_or_else(|| StoreError::Internal(format!("unknown assessment status {status}")))?;
    if !status.accepts_submissions() {
        return Err(trueline_core::DomainError::InvalidTransition {
            from: status.as_str(),
            to: "started",
        }
        .into());
    }
    Ok(())
}

/// The payload of an `assessments.draft.*` event (a draft edit): the revision it made and the
/// questions it touched, never a question's content (events leave the system; answer keys
/// must not).
pub fn draft_change_payload(
    actor: &Actor,
    a: &Assessment,
    question_ids: &[Uuid],
) -> serde_json::Value {
    serde_json::json!({
        "assessment_id": a.id,
        "family_id": a.family_id,
        "revision": a.revision + 1,
        "question_ids": question_ids,
        "actor_user_id": actor.user_id,
        "request_id": actor.request_id,
    })
}

/// The event of a share-link change: its type, and a payload that says whether there is a
/// link, never its token.
pub fn share_link_event(
    actor: &Actor,
    assessment_id: Uuid,
    enabled: bool,
) -> (&'static str, serde_json::Value) {
    let event_type = if enabled {
        "assessments.share_link.set"
    } else {
        "assessments.share_link.removed"
    };
    let payload = serde_json::json!({
        "assessment_id": assessment_id,
        "enabled": enabled,
        "actor_user_id": actor.user_id,
        "request_id": actor.request_id,
    });
    (event_type, payload)
}

/// Why a guarded submit changed no row of an existing attempt: it was submitted already, its
/// deadline had passed, or (the only remaining guard) its saved answers changed.
pub fn refused_submit(submitted: bool, deadline_passed: bool) -> StoreError {
    if submitted {
        trueline_core::DomainError::AlreadySubmitted.into()
    } else if deadline_passed {
        trueline_core::DomainError::DeadlinePassed.into()
    } else {
        trueline_core::DomainError::AnswersChanged.into()
    }
}

#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: Uuid,
    pub started_at: OffsetDateTime,
    pub deadline_at: OffsetDateTime,
    pub question_order: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: Uuid,
    pub invite_id: Uuid,
    pub assessment_id: Uuid,
    pub started_at: OffsetDateTime,
    pub deadline_at: OffsetDateTime,
    pub question_order: Vec<Uuid>,
    /// Question id → raw answer, as last saved.
    pub answers: serde_json::Value,
    pub saved_at: Option<OffsetDateTime>,
    pub submitted_at: Option<OffsetDateTime>,
}

/// The assessment as a candidate's requests use it: what it is, whether it takes
/// submissions, and its settings. Not [`Assessment`], whose invite and submission counts are
/// a count over every invite and submission of the assessment: per candidate request, a cost
/// that grew with the assessment's invites (docs/benchmarks.md, 2026-12-05 midday).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionAssessment {
    pub id: Uuid,
    pub org_id: OrgId,
    pub status: AssessmentStatus,
    pub settings: AssessmentSettings,
}

/// Everything a candidate's token gives access to.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateSession {
    pub invite: Invite,
    pub assessment: SessionAssessment,
    pub questions: Vec<Question>,
    pub attempt: Option<Attempt>,
    pub submission: Option<Submission>,
}

#[derive(Debug, Clone)]
pub struct NewSubmission {
    pub id: Uuid,
    pub earned: u64,
    pub total: u64,
    pub passed: bool,
    /// Per question: id, earned, max, correct, answered.
    pub per_question: serde_json::Value,
    pub answers: serde_json::Value,
    /// Where `answers` came from: the store refuses to record a score of saved answers that
    /// a save has replaced since they were read.
    pub answers_source: AnswersSource,
    pub auto_submitted: bool,
}

/// Where a submission's answers came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnswersSource {
    /// Sent with the submit request: scored as given, and they replace the saved ones.
    Request,
    /// The attempt's saved answers, read when its `saved_at` was this (`None`: never saved).
    /// A save that lands between that read and the submit makes the submit fail with
    /// `answers_changed` (nothing is recorded), so a candidate told "saved" is never scored
    /// on older answers.
    Saved { saved_at: Option<OffsetDateTime> },
}

impl AnswersSource {
    /// `(checked, saved_at)` for the guarded statement: `checked` false means no guard.
    pub fn guard(self) -> (bool, Option<OffsetDateTime>) {
        match self {
            AnswersSource::Request => (false, None),
            AnswersSource::Saved { saved_at } => (true, saved_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRecord {
    pub from: SubmissionStatus,
    pub to: SubmissionStatus,
    pub decision: ReviewDecision,
    pub note: Option<String>,
    pub actor_user_id: UserId,
    pub request_id: String,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub id: Uuid,
    pub assessment_id: Uuid,
    pub invite_id: Uuid,
    pub attempt_id: Uuid,
    pub email: String,
    pub earned: u64,
    pub total: u64,
    pub passed: bool,
    pub per_question: serde_json::Value,
    pub answers: serde_json::Value,
    pub auto_submitted: bool,
    pub review_status: SubmissionStatus,
    pub submitted_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// In the order the transitions were made (their per-submission sequence, not `at`,
    /// which is the clock of the instance that made each); only filled by
    /// [`AssessmentStore::submission`].
    pub reviews: Vec<ReviewRecord>,
}

#[derive(Debug, Clone, Default)]
pub struct SubmissionFilter {
    pub passed: Option<bool>,
    pub review_status: Option<SubmissionStatus>,
}

#[async_trait::async_trait]
pub trait AssessmentStore: Send + Sync {
    async fn create_assessment(
        &self,
        actor: &Actor,
        id: Uuid,
        settings: AssessmentSettings,
        idempotency: Option<Idempotency<'_, Assessment>>,
    ) -> Result<Assessment, StoreError>;

    async fn assessments(
        &self,
        org: OrgId,
        status: Option<AssessmentStatus>,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Assessment, Uuid>, StoreError>;

    /// The assessment and its questions in order.
    async fn assessment(
        &self,
        org: OrgId,
        id: Uuid,
    ) -> Result<Option<(Assessment, Vec<Question>)>, StoreError>;

    /// Replaces a draft's settings. `NotFound`, `VersionMismatch`, `NotEditable`.
    async fn update_assessment(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_revision: Option<u64>,
        settings: AssessmentSettings,
        idempotency: Option<Idempotency<'_, Assessment>>,
    ) -> Result<Assessment, StoreError>;

    /// Appends questions to a draft, all or nothing (at most 200 in all).
    async fn add_questions(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_revision: Option<u64>,
        questions: Vec<(Uuid, QuestionSpec)>,
        idempotency: Option<Idempotency<'_, Vec<Question>>>,
    ) -> Result<Vec<Question>, StoreError>;

    async fn replace_question(
        &self,
        actor: &Actor,
        id: Uuid,
        question_id: Uuid,
        expected_revision: Option<u64>,
        spec: QuestionSpec,
        idempotency: Option<Idempotency<'_, Question>>,
    ) -> Result<Question, StoreError>;

    /// `Ok(false)` if the question did not exist.
    async fn delete_question(
        &self,
        actor: &Actor,
        id: Uuid,
        question_id: Uuid,
        expected_revision: Option<u64>,
    ) -> Result<bool, StoreError>;

    /// `order` must name every question exactly once.
    async fn reorder_questions(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_revision: Option<u64>,
        order: Vec<Uuid>,
        idempotency: Option<Idempotency<'_, Vec<Question>>>,
    ) -> Result<Vec<Question>, StoreError>;

    /// Moves the lifecycle (`draft → published → closed → archived`). Publishing needs at
    /// least one question and a free slot of the organization's `published_max`, checked
    /// under a lock so concurrent publishes cannot exceed it. With `expected_revision` (an
    /// `If-Match`), only from that revision: what the caller saw is what gets published.
    /// `VersionMismatch` (checked first), `InvalidTransition`, `ActiveAssessmentLimit`.
    async fn transition_assessment(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_revision: Option<u64>,
        to: AssessmentStatus,
        published_max: u32,
        idempotency: Option<Idempotency<'_, Assessment>>,
    ) -> Result<Assessment, StoreError>;

    /// A new draft version (copy of settings and questions) of a non-draft assessment.
    async fn revise_assessment(
        &self,
        actor: &Actor,
        id: Uuid,
        new_id: Uuid,
        idempotency: Option<Idempotency<'_, Assessment>>,
    ) -> Result<Assessment, StoreError>;

    /// One invite per (assessment, email); emails invited before come back `created: false`.
    /// The assessment must be published.
    async fn create_invites(
        &self,
        actor: &Actor,
        assessment_id: Uuid,
        invites: Vec<NewInvite>,
        idempotency: Option<Idempotency<'_, Vec<InviteOutcome>>>,
    ) -> Result<Vec<InviteOutcome>, StoreError>;

    async fn invites(
        &self,
        org: OrgId,
        assessment_id: Uuid,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Invite, Uuid>, StoreError>;

    async fn revoke_invite(
        &self,
        actor: &Actor,
        assessment_id: Uuid,
        invite_id: Uuid,
    ) -> Result<bool, StoreError>;

    /// Sets (or with `None` removes) the assessment's public share link; the idempotency
    /// record (if any) is completed in the same transaction.
    async fn set_share_link(
        &self,
        actor: &Actor,
        assessment_id: Uuid,
        token_hash: Option<[u8; 32]>,
        idempotency: Option<Idempotency<'_, ()>>,
    ) -> Result<(), StoreError>;

    /// Creates an invite through a share link. `NotFound("share link")` if the link is
    /// unknown or its assessment is not published; `AlreadyInvited` if the email is. The
    /// idempotency record (if any) is completed in the same transaction.
    async fn register_via_share_link(
        &self,
        share_token_hash: &[u8; 32],
        invite: NewInvite,
        now: OffsetDateTime,
        idempotency: Option<Idempotency<'_, Invite>>,
    ) -> Result<Invite, StoreError>;

    /// What an invite token unlocks (`None` if the token is unknown).
    async fn candidate_session(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<CandidateSession>, StoreError>;

    /// The same, by attempt (the deadline sweeper).
    async fn attempt_session(
        &self,
        attempt_id: Uuid,
    ) -> Result<Option<CandidateSession>, StoreError>;

    /// Starts the attempt of the invite whose token hashes to `token_hash`; if one exists
    /// already, returns it unchanged. The invite is found by the token again in the write
    /// transaction, not by its id: a revoke and a re-issue (a new token on the same invite)
    /// landing after the caller's checks leave the old token `NotFound` (invite).
    async fn start_attempt(
        &self,
        token_hash: &[u8; 32],
        attempt: NewAttempt,
    ) -> Result<Attempt, StoreError>;

    /// Autosaves answers while the attempt is open (`not_after`: the latest acceptable
    /// deadline, i.e. now minus the grace period). `AlreadySubmitted`, `DeadlinePassed`;
    /// `NotFound` (invite) if the invite is revoked, checked in the write transaction (the
    /// handler's earlier read may predate a revoke).
    async fn save_answers(
        &self,
        attempt_id: Uuid,
        answers: serde_json::Value,
        now: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Attempt, StoreError>;

    /// Records the submission (one per candidate, enforced by UNIQUE constraints). With
    /// `deadline_not_before` set (a candidate's submit), refuses attempts whose deadline is
    /// earlier (`DeadlinePassed`) and, in the write transaction, attempts whose invite is
    /// revoked (`NotFound`); the sweeper passes `None` and submits the saved answers of any
    /// abandoned attempt. `AlreadySubmitted`.
    async fn submit_attempt(
        &self,
        attempt_id: Uuid,
        submission: NewSubmission,
        now: OffsetDateTime,
        deadline_not_before: Option<OffsetDateTime>,
    ) -> Result<Submission, StoreError>;

    /// Open attempts whose deadline is before `before`, oldest first.
    async fn overdue_attempts(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError>;

    async fn submissions(
        &self,
        org: OrgId,
        assessment_id: Uuid,
        filter: &SubmissionFilter,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Submission, Uuid>, StoreError>;

    async fn submission(&self, org: OrgId, id: Uuid) -> Result<Option<Submission>, StoreError>;

    /// Applies a review decision through the review state machine; audited.
    async fn review_submission(
        &self,
        actor: &Actor,
        id: Uuid,
        decision: ReviewDecision,
        note: Option<String>,
        idempotency: Option<Idempotency<'_, Submission>>,
    ) -> Result<Submission, StoreError>;
}
