//! `AssessmentStore` on PostgreSQL.

use crate::platform::{Tx, complete_idempotency, write_outbox};
use crate::{PgStore, constraint_name, db_error};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use trueline_core::DomainError;
use trueline_core::assessments::{
    AssessmentSettings, AssessmentSettingsInput, AssessmentStatus, JsonInteger, QUESTIONS_MAX,
    QuestionSpec, ReviewDecision, SubmissionStatus, decide, expect_revision, transition,
};
use trueline_core::ids::{EventId, OrgId, UserId};
use trueline_store::{
    Actor, Assessment, AssessmentStore, Attempt, CandidateSession, Idempotency, Invite,
    InviteOutcome, NewAttempt, NewInvite, NewSubmission, OutboxEvent, Page, PageRequest, Question,
    ReviewRecord, SessionAssessment, StoreError, Submission, SubmissionFilter,
};
use uuid::Uuid;

const ASSESSMENT_SELECT: &str = "SELECT a.id, a.org_id, a.family_id, a.version_number, a.status,
    a.title, a.description, a.time_limit_minutes, a.passing_score_percent, a.shuffle_questions,
    a.show_score_to_candidate, a.revision, a.share_token_hash IS NOT NULL AS has_share_link,
    a.published_at, a.closed_at, a.created_at, a.updated_at, a.created_by,
    (SELECT count(*) FROM assessment_questions q WHERE q.assessment_id = a.id) AS question_count,
    (SELECT count(*) FROM invites i WHERE i.assessment_id = a.id) AS invite_count,
    (SELECT count(*) FROM submissions s WHERE s.assessment_id = a.id) AS submission_count
    FROM assessments a";

/// An assessment's columns for a candidate's request (`SessionAssessment`): no counts.
const SESSION_ASSESSMENT_SELECT: &str = "SELECT a.id, a.org_id, a.status, a.title,
    a.description, a.time_limit_minutes, a.passing_score_percent, a.shuffle_questions,
    a.show_score_to_candidate
    FROM assessments a";

const INVITE_SELECT: &str = "SELECT i.id, i.assessment_id, i.email, i.name, i.expires_at,
    i.revoked_at, i.via_share_link, i.created_at, t.started_at, t.submitted_at
    FROM invites i LEFT JOIN attempts t ON t.invite_id = i.id";

/// A candidate session's submission: searched through `submissions_by_invite` (migration 20;
/// before it, every candidate request scanned every submission stored).
pub(crate) const SUBMISSION_OF_INVITE: &str = "submissions WHERE invite_id = $1";

pub(crate) const SUBMISSION_COLUMNS: &str =
    "id, assessment_id, invite_id, attempt_id, email, earned, total,
    passed, per_question, answers, auto_submitted, review_status, submitted_at, updated_at";

const ATTEMPT_COLUMNS: &str = "id, invite_id, assessment_id, started_at, deadline_at,
    question_order, answers, saved_at, submitted_at";

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn opt_instant(row: &PgRow, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    row.try_get(column).map_err(db_error)
}

/// The status and settings columns of an assessment row (of `ASSESSMENT_SELECT` or
/// `SESSION_ASSESSMENT_SELECT`).
fn status_and_settings(row: &PgRow) -> Result<(AssessmentStatus, AssessmentSettings), StoreError> {
    let status: String = row.try_get("status").map_err(db_error)?;
    let input = AssessmentSettingsInput {
        title: row.try_get("title").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        time_limit_minutes: JsonInteger(i64::from(
            row.try_get::<i32, _>("time_limit_minutes")
                .map_err(db_error)?,
        )),
        passing_score_percent: JsonInteger(i64::from(
            row.try_get::<i32, _>("passing_score_percent")
                .map_err(db_error)?,
        )),
        shuffle_questions: row.try_get("shuffle_questions").map_err(db_error)?,
        show_score_to_candidate: row.try_get("show_score_to_candidate").map_err(db_error)?,
    };
    Ok((
        AssessmentStatus::parse(&status)
            .ok_or_else(|| internal(format!("unknown status {status}")))?,
        AssessmentSettings::parse(input)
            .map_err(|e| internal(format!("stored settings invalid: {e:?}")))?,
    ))
}

fn session_assessment_from(row: &PgRow) -> Result<SessionAssessment, StoreError> {
    let (status, settings) = status_and_settings(row)?;
    Ok(SessionAssessment {
        id: row.try_get("id").map_err(db_error)?,
        org_id: OrgId(row.try_get("org_id").map_err(db_error)?),
        status,
        settings,
    })
}

fn assessment_from(row: &PgRow) -> Result<Assessment, StoreError> {
    let (status, settings) = status_and_settings(row)?;
    Ok(Assessment {
        id: row.try_get("id").map_err(db_error)?,
        org_id: OrgId(row.try_get("org_id").map_err(db_error)?),
        family_id: row.try_get("family_id").map_err(db_error)?,
        version_number: row.try_get::<i32, _>("version_number").map_err(db_error)? as u32,
        status,
        settings,
        revision: row.try_get::<i64, _>("revision").map_err(db_error)? as u64,
        has_share_link: row.try_get("has_share_link").map_err(db_error)?,
        published_at: opt_instant(row, "published_at")?,
        closed_at: opt_instant(row, "closed_at")?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        created_by: UserId(row.try_get("created_by").map_err(db_error)?),
        question_count: row.try_get::<i64, _>("question_count").map_err(db_error)? as u32,
        invite_count: row.try_get::<i64, _>("invite_count").map_err(db_error)? as u64,
        submission_count: row
            .try_get::<i64, _>("submission_count")
            .map_err(db_error)? as u64,
    })
}

fn question_from(row: &PgRow) -> Result<Question, StoreError> {
    let spec: String = row.try_get("spec").map_err(db_error)?;
    Ok(Question {
        id: row.try_get("id").map_err(db_error)?,
        position: row.try_get::<i32, _>("position").map_err(db_error)? as u32,
        spec: serde_json::from_str(&spec)
            .map_err(|e| internal(format!("stored question invalid: {e}")))?,
    })
}

fn invite_from(row: &PgRow) -> Result<Invite, StoreError> {
    Ok(Invite {
        id: row.try_get("id").map_err(db_error)?,
        assessment_id: row.try_get("assessment_id").map_err(db_error)?,
        email: row.try_get("email").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
        revoked_at: opt_instant(row, "revoked_at")?,
        via_share_link: row.try_get("via_share_link").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        started_at: opt_instant(row, "started_at")?,
        submitted_at: opt_instant(row, "submitted_at")?,
    })
}

fn attempt_from(row: &PgRow) -> Result<Attempt, StoreError> {
    let order: String = row.try_get("question_order").map_err(db_error)?;
    let answers: String = row.try_get("answers").map_err(db_error)?;
    Ok(Attempt {
        id: row.try_get("id").map_err(db_error)?,
        invite_id: row.try_get("invite_id").map_err(db_error)?,
        assessment_id: row.try_get("assessment_id").map_err(db_error)?,
        started_at: row.try_get("started_at").map_err(db_error)?,
        deadline_at: row.try_get("deadline_at").map_err(db_error)?,
        question_order: serde_json::from_str(&order).map_err(internal)?,
        answers: serde_json::from_str(&answers).map_err(internal)?,
        saved_at: opt_instant(row, "saved_at")?,
        submitted_at: opt_instant(row, "submitted_at")?,
    })
}

fn submission_from(row: &PgRow) -> Result<Submission, StoreError> {
    let status: String = row.try_get("review_status").map_err(db_error)?;
    let per_question: String = row.try_get("per_question").map_err(db_error)?;
    let answers: String = row.try_get("answers").map_err(db_error)?;
    Ok(Submission {
        id: row.try_get("id").map_err(db_error)?,
        assessment_id: row.try_get("assessment_id").map_err(db_error)?,
        invite_id: row.try_get("invite_id").map_err(db_error)?,
        attempt_id: row.try_get("attempt_id").map_err(db_error)?,
        email: row.try_get("email").map_err(db_error)?,
        earned: row.try_get::<i64, _>("earned").map_err(db_error)? as u64,
        total: row.try_get::<i64, _>("total").map_err(db_error)? as u64,
        passed: row.try_get("passed").map_err(db_error)?,
        per_question: serde_json::from_str(&per_question).map_err(internal)?,
        answers: serde_json::from_str(&answers).map_err(internal)?,
        auto_submitted: row.try_get("auto_submitted").map_err(db_error)?,
        review_status: SubmissionStatus::parse(&status)
            .ok_or_else(|| internal(format!("unknown review status {status}")))?,
        submitted_at: row.try_get("submitted_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        reviews: Vec::new(),
    })
}

/// Translates the schema's refusals.
fn frozen_error(e: sqlx::Error, status: AssessmentStatus) -> StoreError {
    match constraint_name(&e) {
        Some("assessments_frozen") => DomainError::NotEditable {
            status: status.as_str(),
        }
        .into(),
        _ => db_error(e),
    }
}

async fn event(
    tx: &mut Tx,
    org_id: OrgId,
    event_type: &str,
    stream: String,
    payload: Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    write_outbox(
        tx,
        &OutboxEvent {
            event_id: EventId::new(),
            org_id,
            event_type: event_type.to_owned(),
            stream,
            payload: OutboxEvent::payload_of(&payload)?,
            created_at: now,
        },
    )
    .await
}

/// A change the organization's staff made: its immutable audit record (`audit_log`, the
/// event type as its action and the event's payload as its detail) and its domain event, in
/// the change's transaction; the outbox rows are purged once published, the audit record
/// stays. Candidates' own steps (start, submit, registering through a share link) have no
/// staff actor: their rows (attempts, submissions) are the record.
async fn staff_event(
    tx: &mut Tx,
    actor: &Actor,
    event_type: &str,
    stream: String,
    payload: Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    crate::accounts::audit_row(
        tx,
        actor.org_id,
        actor.user_id,
        &actor.request_id,
        event_type,
        None,
        &payload,
        now,
    )
    .await?;
    event(tx, actor.org_id, event_type, stream, payload, now).await
}

async fn fetch_assessment(
    tx: &mut Tx,
    org: OrgId,
    id: Uuid,
) -> Result<Option<Assessment>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{ASSESSMENT_SELECT} WHERE a.id = $1 AND a.org_id = $2"
    )))
    .bind(id)
    .bind(org.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    row.as_ref().map(assessment_from).transpose()
}

async fn questions_in(tx: &mut Tx, id: Uuid) -> Result<Vec<Question>, StoreError> {
    let rows = sqlx::query("SELECT id, position, spec FROM assessment_questions WHERE assessment_id = $1 ORDER BY position")
        .bind(id)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    rows.iter().map(question_from).collect()
}

/// How a transaction holds an assessment's row until it ends.
#[derive(Clone, Copy)]
enum RowLock {
    /// Edits, transitions, revisions: one at a time per assessment.
    Update,
    /// Reads a decision depends on (the status, for invites): no transition in between.
    Share,
}

/// Locks the assessment's row (if it exists in `org`) before it is read: under READ
/// COMMITTED a plain read followed by a write lets two requests both pass the same check
/// (two publishes, two edits at one `If-Match` revision, an edit beside a publish). SQLite
/// needs no such lock: its single writer runs write transactions one at a time.
async fn lock_assessment(
    tx: &mut Tx,
    org: OrgId,
    id: Uuid,
    lock: RowLock,
) -> Result<(), StoreError> {
    let sql = match lock {
        RowLock::Update => "SELECT 1 FROM assessments WHERE id = $1 AND org_id = $2 FOR UPDATE",
        RowLock::Share => "SELECT 1 FROM assessments WHERE id = $1 AND org_id = $2 FOR SHARE",
    };
    sqlx::query(sql)
        .bind(id)
        .bind(org.0)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The draft to edit: it exists, is a draft and (if asked) at the expected revision. Its row
/// stays locked until the transaction ends.
async fn editable(
    tx: &mut Tx,
    actor: &Actor,
    id: Uuid,
    expected: Option<u64>,
) -> Result<Assessment, StoreError> {
    lock_assessment(tx, actor.org_id, id, RowLock::Update).await?;
    let a = fetch_assessment(tx, actor.org_id, id)
        .await?
        .ok_or(StoreError::not_found("assessment"))?;
    if !a.status.is_editable() {
        return Err(DomainError::NotEditable {
            status: a.status.as_str(),
        }
        .into());
    }
    expect_revision(expected, a.revision)?;
    Ok(a)
}

/// The family of an assessment version: every assessment event goes to the family's stream.
async fn family_of(tx: &mut Tx, id: Uuid) -> Result<Uuid, StoreError> {
    sqlx::query_scalar("SELECT family_id FROM assessments WHERE id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
}

/// A draft edit: the revision moves on, and the change goes to the outbox in the same
/// transaction like every mutation's. The event names what changed (and which questions),
/// never a question's content: answer keys stay out of events.
async fn bump(
    tx: &mut Tx,
    actor: &Actor,
    a: &Assessment,
    change: &str,
    question_ids: &[Uuid],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE assessments SET revision = revision + 1, updated_at = $2 WHERE id = $1")
        .bind(a.id)
        .bind(actor.now)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    staff_event(
        tx,
        actor,
        &format!("assessments.draft.{change}"),
        format!("assessment-{}", a.family_id),
        trueline_store::draft_change_payload(actor, a, question_ids),
        actor.now,
    )
    .await
}

async fn insert_question(
    tx: &mut Tx,
    assessment: Uuid,
    id: Uuid,
    position: u32,
    spec: &QuestionSpec,
    status: AssessmentStatus,
) -> Result<Question, StoreError> {
    sqlx::query("INSERT INTO assessment_questions (id, assessment_id, position, kind, points, spec) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(assessment)
        .bind(position as i32)
        .bind(spec.kind().as_str())
        .bind(spec.points() as i32)
        .bind(spec.to_json().to_string())
        .execute(&mut **tx)
        .await
        .map_err(|e| frozen_error(e, status))?;
    Ok(Question {
        id,
        position,
        spec: spec.clone(),
    })
}

async fn insert_assessment(
    tx: &mut Tx,
    actor: &Actor,
    id: Uuid,
    family: Uuid,
    version: u32,
    s: &AssessmentSettings,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO assessments (id, org_id, family_id, version_number, status, title, description,
            time_limit_minutes, passing_score_percent, shuffle_questions, show_score_to_candidate,
            revision, created_at, updated_at, created_by)
         VALUES ($1, $2, $3, $4, 'draft', $5, $6, $7, $8, $9, $10, 1, $11, $11, $12)",
    )
    .bind(id)
    .bind(actor.org_id.0)
    .bind(family)
    .bind(version as i32)
    .bind(s.title())
    .bind(s.description())
    .bind(s.time_limit_minutes() as i32)
    .bind(i32::from(s.passing_score_percent().get()))
    .bind(s.shuffle_questions())
    .bind(s.show_score_to_candidate())
    .bind(actor.now)
    .bind(actor.user_id.0)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

fn lifecycle_payload(actor: &Actor, a: &Assessment) -> Value {
    json!({
        "assessment_id": a.id,
        "family_id": a.family_id,
        "version_number": a.version_number,
        "status": a.status.as_str(),
        "title": a.settings.title(),
        "actor_user_id": actor.user_id,
        "request_id": actor.request_id,
    })
}

/// A read-only transaction whose statements all see one snapshot (REPEATABLE READ): a read
/// of several tables (an assessment and its questions; a submission and its reviews) shows
/// one moment, as SQLite's read transactions do. At PostgreSQL's default READ COMMITTED each
/// statement took its own snapshot, so a read racing a change could show a revision with
/// another revision's questions.
async fn read_snapshot(
    store: &PgStore,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = store.pool.begin().await.map_err(db_error)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    Ok(tx)
}

/// How a candidate session is found.
enum SessionKey<'a> {
    Token(&'a [u8]),
    Attempt(Uuid),
}

async fn session_where(
    store: &PgStore,
    key: SessionKey<'_>,
) -> Result<Option<CandidateSession>, StoreError> {
    let query = match key {
        SessionKey::Token(hash) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVITE_SELECT} WHERE i.token_hash = $1"
        )))
        .bind(hash.to_vec()),
        SessionKey::Attempt(id) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVITE_SELECT} WHERE i.id = (SELECT invite_id FROM attempts WHERE id = $1)"
        )))
        .bind(id),
    };
    let mut tx = read_snapshot(store).await?;
    let row = query.fetch_optional(&mut *tx).await.map_err(db_error)?;
    let Some(row) = row else { return Ok(None) };
    let invite = invite_from(&row)?;
    let assessment_row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SESSION_ASSESSMENT_SELECT} WHERE a.id = $1"
    )))
    .bind(invite.assessment_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    let assessment = session_assessment_from(&assessment_row)?;
    let questions = questions_in(&mut tx, invite.assessment_id).await?;
    let attempt = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE invite_id = $1"
    )))
    .bind(invite.id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?
    .as_ref()
    .map(attempt_from)
    .transpose()?;
    let submission = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUBMISSION_COLUMNS} FROM {SUBMISSION_OF_INVITE}"
    )))
    .bind(invite.id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?
    .as_ref()
    .map(submission_from)
    .transpose()?;
    tx.rollback().await.map_err(db_error)?;
    Ok(Some(CandidateSession {
        invite,
        assessment,
        questions,
        attempt,
        submission,
    }))
}

/// An employer's invite of an email whose earlier invite was revoked or expired before it was
/// ever started: that invite takes the new token, expiry and name (its id stays; the old token
/// stops working). Not for share-link registrations: a revoked candidate could re-admit
/// themselves.
async fn reissue_invite(
    tx: &mut Tx,
    assessment: Uuid,
    i: &NewInvite,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    // The invite locked first, and the attempt looked for by the next statement: a start
    // holding it (its attempt not committed yet) is waited for and then seen. In one UPDATE
    // the waiting row would be updated without its `NOT EXISTS` read again, and a candidate
    // mid-attempt would lose their token.
    sqlx::query("SELECT 1 FROM invites WHERE assessment_id = $1 AND email = $2 FOR UPDATE")
        .bind(assessment)
        .bind(i.email.as_str())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    let done = sqlx::query(
        "UPDATE invites SET token_hash = $3, expires_at = $4, revoked_at = NULL, name = $5,
                            via_share_link = false
         WHERE assessment_id = $1 AND email = $2 AND (revoked_at IS NOT NULL OR expires_at <= $6)
           AND NOT EXISTS (SELECT 1 FROM attempts t WHERE t.invite_id = invites.id)",
    )
    .bind(assessment)
    .bind(i.email.as_str())
    .bind(&i.token_hash[..])
    .bind(i.expires_at)
    .bind(&i.name)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(done.rows_affected() == 1)
}

async fn insert_invite(
    tx: &mut Tx,
    org: OrgId,
    assessment: Uuid,
    i: &NewInvite,
    via_link: bool,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO invites (id, assessment_id, org_id, email, name, token_hash, expires_at, via_share_link, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (assessment_id, email) DO NOTHING",
    )
    .bind(i.id)
    .bind(assessment)
    .bind(org.0)
    .bind(i.email.as_str())
    .bind(&i.name)
    .bind(&i.token_hash[..])
    .bind(i.expires_at)
    .bind(via_link)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(done.rows_affected() == 1)
}

/// A submission with its review trail, read inside `tx`.
async fn submission_in(
    tx: &mut Tx,
    org: OrgId,
    id: Uuid,
) -> Result<Option<Submission>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE id = $1 AND org_id = $2"
    )))
    .bind(id)
    .bind(org.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let Some(row) = row else { return Ok(None) };
    let mut submission = submission_from(&row)?;
    let reviews = sqlx::query("SELECT from_status, to_status, decision, note, actor_user_id, request_id, at FROM submission_reviews WHERE submission_id = $1 ORDER BY seq")
        .bind(id)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    for r in reviews {
        let from: String = r.try_get("from_status").map_err(db_error)?;
        let to: String = r.try_get("to_status").map_err(db_error)?;
        let decision: String = r.try_get("decision").map_err(db_error)?;
        submission.reviews.push(ReviewRecord {
            from: SubmissionStatus::parse(&from).ok_or_else(|| internal("bad review status"))?,
            to: SubmissionStatus::parse(&to).ok_or_else(|| internal("bad review status"))?,
            decision: ReviewDecision::parse(&decision).ok_or_else(|| internal("bad decision"))?,
            note: r.try_get("note").map_err(db_error)?,
            actor_user_id: UserId(r.try_get("actor_user_id").map_err(db_error)?),
            request_id: r.try_get("request_id").map_err(db_error)?,
            at: r.try_get("at").map_err(db_error)?,
        });
    }
    Ok(Some(submission))
}

#[async_trait::async_trait]
impl AssessmentStore for PgStore {
    async fn create_assessment(
        &self,
        actor: &Actor,
        id: Uuid,
        settings: AssessmentSettings,
        idempotency: Option<Idempotency<'_, Assessment>>,
    ) -> Result<Assessment, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        insert_assessment(&mut tx, actor, id, id, 1, &settings).await?;
        let a = fetch_assessment(&mut tx, actor.org_id, id)
            .await?
            .ok_or_else(|| internal("created assessment vanished"))?;
        staff_event(
            &mut tx,
            actor,
            "assessments.assessment.created",
            format!("assessment-{}", a.family_id),
            lifecycle_payload(actor, &a),
            actor.now,
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &a, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(a)
    }

    async fn assessments(
        &self,
        org: OrgId,
        status: Option<AssessmentStatus>,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Assessment, Uuid>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{ASSESSMENT_SELECT} WHERE a.org_id = $1 AND ($2::text IS NULL OR a.status = $2) AND a.id > $3 ORDER BY a.id LIMIT $4"
        )))
        .bind(org.0)
        .bind(status.map(AssessmentStatus::as_str))
        .bind(page.after.unwrap_or(Uuid::nil()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let items = rows
            .iter()
            .map(assessment_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |a| a.id))
    }

    async fn assessment(
        &self,
        org: OrgId,
        id: Uuid,
    ) -> Result<Option<(Assessment, Vec<Question>)>, StoreError> {
        let mut tx = read_snapshot(self).await?;
        let Some(a) = fetch_assessment(&mut tx, org, id).await? else {
            return Ok(None);
        };
        let questions = questions_in(&mut tx, id).await?;
        tx.rollback().await.map_err(db_error)?;
        Ok(Some((a, questions)))
    }

    async fn update_assessment(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_revision: Option<u64>,
        s: AssessmentSettings,
        idempotency: Option<Idempotency<'_, Assessment>>,
    ) -> Result<Assessment, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let current = editable(&mut tx, actor, id, expected_revision).await?;
        // Settings as they are: a no-op, as an unchanged item is (no revision, no record),
        // so it does not turn another editor's If-Match stale.
        if s == current.settings {
            complete_idempotency(&mut tx, idempotency, &current, actor.now).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(current);
        }
        sqlx::query(
            "UPDATE assessments SET title = $2, description = $3, time_limit_minutes = $4,
                passing_score_percent = $5, shuffle_questions = $6, show_score_to_candidate = $7
             WHERE id = $1",
        )
        .bind(id)
        .bind(s.title())
        .bind(s.description())
        .bind(s.time_limit_minutes() as i32)
        .bind(i32::from(s.passing_score_percent().get()))
        .bind(s.shuffle_questions())
        .bind(s.show_score_to_candidate())
        .execute(&mut *tx)
        .await
        .map_err(|e| frozen_error(e, current.status))?;
        bump(&mut tx, actor, &current, "settings_updated", &[]).await?;
        let a = fetch_assessment(&mut tx, actor.org_id, id)
            .await?
            .ok_or_else(|| internal("assessment vanished"))?;
        complete_idempotency(&mut tx, idempotency, &a, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(a)
    }

    async fn add_questions(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_revision: Option<u64>,
        questions: Vec<(Uuid, QuestionSpec)>,
        idempotency: Option<Idempotency<'_, Vec<Question>>>,
    ) -> Result<Vec<Question>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let a = editable(&mut tx, actor, id, expected_revision).await?;
        let existing = a.question_count as usize;
        if existing + questions.len() > QUESTIONS_MAX {
            return Err(DomainError::field("/questions", "too_many_questions", format!(
                "an assessment holds at most {QUESTIONS_MAX} questions; it has {existing}, adding {} would make {}",
                questions.len(), existing + questions.len()
            )).into());
        }
        let next: i32 = sqlx::query_scalar("SELECT coalesce(max(position) + 1, 0) FROM assessment_questions WHERE assessment_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let mut added = Vec::with_capacity(questions.len());
        for (i, (qid, spec)) in questions.iter().enumerate() {
            added.push(
                insert_question(&mut tx, id, *qid, next as u32 + i as u32, spec, a.status).await?,
            );
        }
        bump(
            &mut tx,
            actor,
            &a,
            "questions_added",
            &added.iter().map(|q: &Question| q.id).collect::<Vec<_>>(),
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &added, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(added)
    }

    async fn replace_question(
        &self,
        actor: &Actor,
        id: Uuid,
        question_id: Uuid,
        expected_revision: Option<u64>,
        spec: QuestionSpec,
        idempotency: Option<Idempotency<'_, Question>>,
    ) -> Result<Question, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let a = editable(&mut tx, actor, id, expected_revision).await?;
        if let Some(same) = questions_in(&mut tx, id)
            .await?
            .into_iter()
            .find(|q| q.id == question_id && q.spec == spec)
        {
            complete_idempotency(&mut tx, idempotency, &same, actor.now).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(same);
        }
        let row = sqlx::query("UPDATE assessment_questions SET kind = $3, points = $4, spec = $5 WHERE id = $1 AND assessment_id = $2 RETURNING id, position, spec")
            .bind(question_id)
            .bind(id)
            .bind(spec.kind().as_str())
            .bind(spec.points() as i32)
            .bind(spec.to_json().to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| frozen_error(e, a.status))?
            .ok_or(StoreError::not_found("question"))?;
        let q = question_from(&row)?;
        bump(&mut tx, actor, &a, "question_replaced", &[question_id]).await?;
        complete_idempotency(&mut tx, idempotency, &q, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(q)
    }

    async fn delete_question(
        &self,
        actor: &Actor,
        id: Uuid,
        question_id: Uuid,
        expected_revision: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let a = editable(&mut tx, actor, id, expected_revision).await?;
        let done =
            sqlx::query("DELETE FROM assessment_questions WHERE id = $1 AND assessment_id = $2")
                .bind(question_id)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| frozen_error(e, a.status))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        bump(&mut tx, actor, &a, "question_deleted", &[question_id]).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn reorder_questions(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_revision: Option<u64>,
        order: Vec<Uuid>,
        idempotency: Option<Idempotency<'_, Vec<Question>>>,
    ) -> Result<Vec<Question>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let a = editable(&mut tx, actor, id, expected_revision).await?;
        let current = questions_in(&mut tx, id).await?;
        let mut wanted = order.clone();
        wanted.sort();
        wanted.dedup();
        let mut have: Vec<Uuid> = current.iter().map(|q| q.id).collect();
        have.sort();
        if wanted != have || order.len() != current.len() {
            return Err(DomainError::field(
                "/question_ids",
                "invalid_value",
                "must list every question of the assessment exactly once",
            )
            .into());
        }
        if order.iter().eq(current.iter().map(|q| &q.id)) {
            complete_idempotency(&mut tx, idempotency, &current, actor.now).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(current);
        }
        // Two steps so the UNIQUE (assessment, position) never sees a transient duplicate.
        sqlx::query("UPDATE assessment_questions SET position = position + 1000000 WHERE assessment_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| frozen_error(e, a.status))?;
        for (position, qid) in order.iter().enumerate() {
            sqlx::query("UPDATE assessment_questions SET position = $3 WHERE id = $1 AND assessment_id = $2")
                .bind(qid)
                .bind(id)
                .bind(position as i32)
                .execute(&mut *tx)
                .await
                .map_err(|e| frozen_error(e, a.status))?;
        }
        bump(&mut tx, actor, &a, "questions_reordered", &order).await?;
        let questions = questions_in(&mut tx, id).await?;
        complete_idempotency(&mut tx, idempotency, &questions, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(questions)
    }

    async fn transition_assessment(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_revision: Option<u64>,
        to: AssessmentStatus,
        published_max: u32,
        idempotency: Option<Idempotency<'_, Assessment>>,
    ) -> Result<Assessment, StoreError> {
        // The assessment's row lock makes two transitions of one assessment run one after
        // the other (the second sees the first's status); the organization's row lock below
        // does the same for publishes of different assessments, so the quota read is never
        // stale.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        lock_assessment(&mut tx, actor.org_id, id, RowLock::Update).await?;
        let a = fetch_assessment(&mut tx, actor.org_id, id)
            .await?
            .ok_or(StoreError::not_found("assessment"))?;
        // The precondition first (RFC 9110, 13.2.2): a stale tag is 412 whatever the state.
        expect_revision(expected_revision, a.revision)?;
        transition(a.status, to)?;
        if to == AssessmentStatus::Published {
            if a.question_count == 0 {
                return Err(DomainError::field(
                    "/questions",
                    "no_questions",
                    "an assessment needs at least one question to be published",
                )
                .into());
            }
            let published: i32 = sqlx::query_scalar(
                "SELECT published_assessments FROM organizations WHERE id = $1 FOR UPDATE",
            )
            .bind(actor.org_id.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            if i64::from(published) >= i64::from(published_max) {
                return Err(DomainError::ActiveAssessmentLimit { max: published_max }.into());
            }
        }
        let (published_at, closed_at) = match to {
            AssessmentStatus::Published => (Some(actor.now), None),
            AssessmentStatus::Closed => (a.published_at, Some(actor.now)),
            _ => (a.published_at, a.closed_at),
        };
        // Guarded by the status the transition was checked from (and, in the schema, by the
        // `assessments_status_edges` trigger): under the lock nothing can have moved it, and
        // if something did, the transition is refused rather than applied from another state.
        let moved = sqlx::query(
            "UPDATE assessments SET status = $2, published_at = $3, closed_at = $4, updated_at = $5
             WHERE id = $1 AND status = $6",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(published_at)
        .bind(closed_at)
        .bind(actor.now)
        .bind(a.status.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            // The schema's edge trigger: refused like the domain refuses it.
            if constraint_name(&e) == Some("assessments_status_edges") {
                StoreError::from(DomainError::InvalidTransition {
                    from: a.status.as_str(),
                    to: to.as_str(),
                })
            } else {
                db_error(e)
            }
        })?;
        if moved.rows_affected() != 1 {
            return Err(DomainError::InvalidTransition {
                from: a.status.as_str(),
                to: to.as_str(),
            }
            .into());
        }
        let a = fetch_assessment(&mut tx, actor.org_id, id)
            .await?
            .ok_or_else(|| internal("assessment vanished"))?;
        staff_event(
            &mut tx,
            actor,
            &format!("assessments.assessment.{}", to.as_str()),
            format!("assessment-{}", a.family_id),
            lifecycle_payload(actor, &a),
            actor.now,
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &a, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(a)
    }

    async fn revise_assessment(
        &self,
        actor: &Actor,
        id: Uuid,
        new_id: Uuid,
        idempotency: Option<Idempotency<'_, Assessment>>,
    ) -> Result<Assessment, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Every version of the family stays locked: two revisions (of one version or of two)
        // would otherwise both take `max(version_number) + 1`.
        sqlx::query(
            "SELECT 1 FROM assessments WHERE family_id =
                (SELECT family_id FROM assessments WHERE id = $1 AND org_id = $2)
             FOR UPDATE",
        )
        .bind(id)
        .bind(actor.org_id.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let a = fetch_assessment(&mut tx, actor.org_id, id)
            .await?
            .ok_or(StoreError::not_found("assessment"))?;
        if a.status.is_editable() {
            return Err(DomainError::InvalidTransition {
                from: "draft",
                to: "draft",
            }
            .into());
        }
        let latest: i32 =
            sqlx::query_scalar("SELECT max(version_number) FROM assessments WHERE family_id = $1")
                .bind(a.family_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        insert_assessment(
            &mut tx,
            actor,
            new_id,
            a.family_id,
            latest as u32 + 1,
            &a.settings,
        )
        .await?;
        for q in questions_in(&mut tx, id).await? {
            insert_question(
                &mut tx,
                new_id,
                Uuid::now_v7(),
                q.position,
                &q.spec,
                AssessmentStatus::Draft,
            )
            .await?;
        }
        let revised = fetch_assessment(&mut tx, actor.org_id, new_id)
            .await?
            .ok_or_else(|| internal("revision vanished"))?;
        staff_event(
            &mut tx,
            actor,
            "assessments.assessment.revised",
            format!("assessment-{}", a.family_id),
            lifecycle_payload(actor, &revised),
            actor.now,
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &revised, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(revised)
    }

    async fn create_invites(
        &self,
        actor: &Actor,
        assessment_id: Uuid,
        invites: Vec<NewInvite>,
        idempotency: Option<Idempotency<'_, Vec<InviteOutcome>>>,
    ) -> Result<Vec<InviteOutcome>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        lock_assessment(&mut tx, actor.org_id, assessment_id, RowLock::Share).await?;
        let a = fetch_assessment(&mut tx, actor.org_id, assessment_id)
            .await?
            .ok_or(StoreError::not_found("assessment"))?;
        if !a.status.accepts_submissions() {
            return Err(DomainError::InvalidTransition {
                from: a.status.as_str(),
                to: "invited",
            }
            .into());
        }
        // Rows are inserted (or locked to re-issue) in email order, the outcomes kept in the
        // request's: two requests inviting the same people in different orders would
        // otherwise each wait for a row the other inserted first (a deadlock, 40P01).
        let mut order: Vec<usize> = (0..invites.len()).collect();
        order.sort_by(|&x, &y| invites[x].email.as_str().cmp(invites[y].email.as_str()));
        let mut outcomes: Vec<Option<InviteOutcome>> = (0..invites.len()).map(|_| None).collect();
        for k in order {
            let invite = &invites[k];
            let created = insert_invite(
                &mut tx,
                actor.org_id,
                assessment_id,
                invite,
                false,
                actor.now,
            )
            .await?;
            let reissued =
                !created && reissue_invite(&mut tx, assessment_id, invite, actor.now).await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{INVITE_SELECT} WHERE i.assessment_id = $1 AND i.email = $2"
            )))
            .bind(assessment_id)
            .bind(invite.email.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            let stored = invite_from(&row)?;
            outcomes[k] = Some(InviteOutcome {
                invite: stored,
                created,
                reissued,
            });
        }
        let outcomes: Vec<InviteOutcome> = outcomes.into_iter().flatten().collect();
        // Events and audit records in the request's order, as SQLite writes them.
        for o in outcomes.iter().filter(|o| o.created || o.reissued) {
            let payload = json!({ "invite_id": o.invite.id, "assessment_id": assessment_id, "actor_user_id": actor.user_id, "request_id": actor.request_id });
            staff_event(
                &mut tx,
                actor,
                if o.created {
                    "assessments.invite.created"
                } else {
                    "assessments.invite.reissued"
                },
                format!("assessment-{}", a.family_id),
                payload,
                actor.now,
            )
            .await?;
        }
        complete_idempotency(&mut tx, idempotency, &outcomes, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(outcomes)
    }

    async fn invites(
        &self,
        org: OrgId,
        assessment_id: Uuid,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Invite, Uuid>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVITE_SELECT} WHERE i.assessment_id = $1 AND i.org_id = $2 AND i.id > $3 ORDER BY i.id LIMIT $4"
        )))
        .bind(assessment_id)
        .bind(org.0)
        .bind(page.after.unwrap_or(Uuid::nil()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        if rows.is_empty()
            && page.after.is_none()
            && self.assessment(org, assessment_id).await?.is_none()
        {
            return Err(StoreError::not_found("assessment"));
        }
        let items = rows
            .iter()
            .map(invite_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |i| i.id))
    }

    async fn revoke_invite(
        &self,
        actor: &Actor,
        assessment_id: Uuid,
        invite_id: Uuid,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = sqlx::query("UPDATE invites SET revoked_at = $4 WHERE id = $1 AND assessment_id = $2 AND org_id = $3 AND revoked_at IS NULL")
            .bind(invite_id)
            .bind(assessment_id)
            .bind(actor.org_id.0)
            .bind(actor.now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let family = family_of(&mut tx, assessment_id).await?;
        let payload = json!({ "invite_id": invite_id, "assessment_id": assessment_id, "actor_user_id": actor.user_id, "request_id": actor.request_id });
        staff_event(
            &mut tx,
            actor,
            "assessments.invite.revoked",
            format!("assessment-{family}"),
            payload,
            actor.now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn set_share_link(
        &self,
        actor: &Actor,
        assessment_id: Uuid,
        token_hash: Option<[u8; 32]>,
        idempotency: Option<Idempotency<'_, ()>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = sqlx::query(
            "UPDATE assessments SET share_token_hash = $3, updated_at = $4
             WHERE id = $1 AND org_id = $2 AND ($3 IS NOT NULL OR share_token_hash IS NOT NULL)",
        )
        .bind(assessment_id)
        .bind(actor.org_id.0)
        .bind(token_hash.map(|h| h.to_vec()))
        .bind(actor.now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            // Removing a link that is not there changes nothing: no write, no event (a
            // repeated DELETE is a no-op), unless the assessment itself is unknown.
            let exists = sqlx::query("SELECT 1 FROM assessments WHERE id = $1 AND org_id = $2")
                .bind(assessment_id)
                .bind(actor.org_id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?
                .is_some();
            if !exists {
                return Err(StoreError::not_found("assessment"));
            }
            complete_idempotency(&mut tx, idempotency, &(), actor.now).await?;
            return tx.commit().await.map_err(db_error);
        }
        let family = family_of(&mut tx, assessment_id).await?;
        let (event_type, payload) =
            trueline_store::share_link_event(actor, assessment_id, token_hash.is_some());
        staff_event(
            &mut tx,
            actor,
            event_type,
            format!("assessment-{family}"),
            payload,
            actor.now,
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &(), actor.now).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn register_via_share_link(
        &self,
        share_token_hash: &[u8; 32],
        invite: NewInvite,
        now: OffsetDateTime,
        idempotency: Option<Idempotency<'_, Invite>>,
    ) -> Result<Invite, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // FOR SHARE, as `create_invites` does: a close, or a removal or rotation of the link,
        // that commits meanwhile is waited for and the row checked again (a rotated or removed
        // link then matches nothing), so no invite lands on an assessment closed or a link
        // removed before this commits. (SQLite's single writer serializes the two anyway.)
        let row = sqlx::query(
            "SELECT id, org_id, family_id, status FROM assessments WHERE share_token_hash = $1
             FOR SHARE",
        )
        .bind(&share_token_hash[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::not_found("share link"))?;
        let status: String = row.try_get("status").map_err(db_error)?;
        if status != "published" {
            return Err(StoreError::not_found("share link"));
        }
        let assessment_id: Uuid = row.try_get("id").map_err(db_error)?;
        let org = OrgId(row.try_get("org_id").map_err(db_error)?);
        let family: Uuid = row.try_get("family_id").map_err(db_error)?;
        if !insert_invite(&mut tx, org, assessment_id, &invite, true, now).await? {
            return Err(DomainError::AlreadyInvited.into());
        }
        let stored = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVITE_SELECT} WHERE i.id = $1"
        )))
        .bind(invite.id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let stored = invite_from(&stored)?;
        let payload = json!({ "invite_id": stored.id, "assessment_id": assessment_id, "via_share_link": true });
        event(
            &mut tx,
            org,
            "assessments.invite.created",
            format!("assessment-{family}"),
            payload,
            now,
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &stored, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(stored)
    }

    async fn candidate_session(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<CandidateSession>, StoreError> {
        session_where(self, SessionKey::Token(&token_hash[..])).await
    }

    async fn attempt_session(
        &self,
        attempt_id: Uuid,
    ) -> Result<Option<CandidateSession>, StoreError> {
        session_where(self, SessionKey::Attempt(attempt_id)).await
    }

    async fn start_attempt(
        &self,
        token_hash: &[u8; 32],
        attempt: NewAttempt,
    ) -> Result<Attempt, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The invite's row lock orders this start after a concurrent revoke (and two starts
        // one after the other); the assessment's share lock, after a concurrent close.
        let invite = sqlx::query(
            "SELECT i.id, i.assessment_id, i.org_id, a.family_id, a.status, i.revoked_at,
                i.expires_at, EXISTS (SELECT 1 FROM attempts t WHERE t.invite_id = i.id) AS started
             FROM invites i JOIN assessments a ON a.id = i.assessment_id WHERE i.token_hash = $1
             FOR UPDATE OF i FOR SHARE OF a",
        )
        .bind(&token_hash[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or(DomainError::NotFound("invite"))?;
        let invite_id: Uuid = invite.try_get("id").map_err(db_error)?;
        let started: bool = invite.try_get("started").map_err(db_error)?;
        if !started {
            let revoked: Option<OffsetDateTime> = invite.try_get("revoked_at").map_err(db_error)?;
            let expires: OffsetDateTime = invite.try_get("expires_at").map_err(db_error)?;
            let status: String = invite.try_get("status").map_err(db_error)?;
            trueline_store::startable(revoked.is_some(), attempt.started_at >= expires, &status)?;
        }
        let assessment_id: Uuid = invite.try_get("assessment_id").map_err(db_error)?;
        let org = OrgId(invite.try_get("org_id").map_err(db_error)?);
        let family: Uuid = invite.try_get("family_id").map_err(db_error)?;
        let inserted = sqlx::query(
            "INSERT INTO attempts (id, invite_id, assessment_id, started_at, deadline_at, question_order)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (invite_id) DO NOTHING",
        )
        .bind(attempt.id)
        .bind(invite_id)
        .bind(assessment_id)
        .bind(attempt.started_at)
        .bind(attempt.deadline_at)
        .bind(serde_json::to_string(&attempt.question_order).map_err(internal)?)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if inserted.rows_affected() == 1 {
            let payload = json!({ "attempt_id": attempt.id, "invite_id": invite_id, "assessment_id": assessment_id, "deadline_at": attempt.deadline_at.unix_timestamp() });
            event(
                &mut tx,
                org,
                "assessments.attempt.started",
                format!("assessment-{family}"),
                payload,
                attempt.started_at,
            )
            .await?;
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE invite_id = $1"
        )))
        .bind(invite_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let stored = attempt_from(&row)?;
        tx.commit().await.map_err(db_error)?;
        Ok(stored)
    }

    async fn save_answers(
        &self,
        attempt_id: Uuid,
        answers: Value,
        now: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Attempt, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        refuse_if_revoked(&mut tx, attempt_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE attempts SET answers = $2, saved_at = $3
             WHERE id = $1 AND submitted_at IS NULL AND deadline_at >= $4
             RETURNING {ATTEMPT_COLUMNS}"
        )))
        .bind(attempt_id)
        .bind(answers.to_string())
        .bind(now)
        .bind(not_after)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            let submitted: Option<Option<OffsetDateTime>> =
                sqlx::query_scalar("SELECT submitted_at FROM attempts WHERE id = $1")
                    .bind(attempt_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
            return Err(match submitted {
                None => StoreError::not_found("attempt"),
                Some(Some(_)) => DomainError::AlreadySubmitted.into(),
                Some(None) => DomainError::DeadlinePassed.into(),
            });
        };
        let attempt = attempt_from(&row)?;
        tx.commit().await.map_err(db_error)?;
        Ok(attempt)
    }

    async fn submit_attempt(
        &self,
        attempt_id: Uuid,
        s: NewSubmission,
        now: OffsetDateTime,
        deadline_not_before: Option<OffsetDateTime>,
    ) -> Result<Submission, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Every submit takes the invite's lock first, the sweeper's too: a start holds it
        // (`FOR UPDATE`) while it inserts its attempt, and a submit that updated the attempt
        // first and then needed the invite for the submission's foreign key could deadlock
        // with a repeated start. Only a candidate's own submit is refused when revoked.
        let revoked = invite_revoked_locked(&mut tx, attempt_id).await?;
        if deadline_not_before.is_some() && revoked == Some(true) {
            return Err(StoreError::not_found("invite"));
        }
        let (checked, saved_at) = s.answers_source.guard();
        let closed = sqlx::query(
            "UPDATE attempts SET submitted_at = $2, answers = $3
             WHERE id = $1 AND submitted_at IS NULL AND ($4::timestamptz IS NULL OR deadline_at >= $4)
               AND (NOT $5 OR saved_at IS NOT DISTINCT FROM $6)",
        )
        .bind(attempt_id)
        .bind(now)
        .bind(s.answers.to_string())
        .bind(deadline_not_before)
        .bind(checked)
        .bind(saved_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if closed.rows_affected() == 0 {
            let found = sqlx::query("SELECT submitted_at, deadline_at FROM attempts WHERE id = $1")
                .bind(attempt_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let Some(found) = found else {
                return Err(StoreError::not_found("attempt"));
            };
            let submitted: Option<OffsetDateTime> =
                found.try_get("submitted_at").map_err(db_error)?;
            let deadline: OffsetDateTime = found.try_get("deadline_at").map_err(db_error)?;
            return Err(trueline_store::refused_submit(
                submitted.is_some(),
                deadline_not_before.is_some_and(|d| deadline < d),
            ));
        }
        let context = sqlx::query("SELECT t.invite_id, t.assessment_id, i.org_id, i.email, a.family_id FROM attempts t JOIN invites i ON i.id = t.invite_id JOIN assessments a ON a.id = t.assessment_id WHERE t.id = $1")
            .bind(attempt_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let invite_id: Uuid = context.try_get("invite_id").map_err(db_error)?;
        let assessment_id: Uuid = context.try_get("assessment_id").map_err(db_error)?;
        let org = OrgId(context.try_get("org_id").map_err(db_error)?);
        let email: String = context.try_get("email").map_err(db_error)?;
        let family: Uuid = context.try_get("family_id").map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO submissions (id, attempt_id, invite_id, assessment_id, org_id, email, earned, total,
                passed, per_question, answers, auto_submitted, review_status, submitted_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'submitted', $13, $13)
             RETURNING {SUBMISSION_COLUMNS}"
        )))
        .bind(s.id)
        .bind(attempt_id)
        .bind(invite_id)
        .bind(assessment_id)
        .bind(org.0)
        .bind(&email)
        .bind(s.earned as i64)
        .bind(s.total as i64)
        .bind(s.passed)
        .bind(s.per_question.to_string())
        .bind(s.answers.to_string())
        .bind(s.auto_submitted)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match constraint_name(&e) {
            Some("submissions_attempt_key" | "submissions_candidate_key") => DomainError::AlreadySubmitted.into(),
            _ => db_error(e),
        })?;
        let submission = submission_from(&row)?;
        // Scores, never answers: events travel to other systems.
        let payload = json!({
            "submission_id": submission.id, "assessment_id": assessment_id, "invite_id": invite_id,
            "earned": submission.earned, "total": submission.total, "passed": submission.passed,
            "auto_submitted": submission.auto_submitted,
        });
        event(
            &mut tx,
            org,
            "assessments.submission.submitted",
            format!("assessment-{family}"),
            payload,
            now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(submission)
    }

    async fn overdue_attempts(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        sqlx::query_scalar("SELECT id FROM attempts WHERE submitted_at IS NULL AND deadline_at < $1 ORDER BY deadline_at LIMIT $2")
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn submissions(
        &self,
        org: OrgId,
        assessment_id: Uuid,
        filter: &SubmissionFilter,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Submission, Uuid>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBMISSION_COLUMNS} FROM submissions
             WHERE assessment_id = $1 AND org_id = $2 AND ($3::boolean IS NULL OR passed = $3)
               AND ($4::text IS NULL OR review_status = $4) AND id > $5
             ORDER BY id LIMIT $6"
        )))
        .bind(assessment_id)
        .bind(org.0)
        .bind(filter.passed)
        .bind(filter.review_status.map(SubmissionStatus::as_str))
        .bind(page.after.unwrap_or(Uuid::nil()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        if rows.is_empty()
            && page.after.is_none()
            && self.assessment(org, assessment_id).await?.is_none()
        {
            return Err(StoreError::not_found("assessment"));
        }
        let items = rows
            .iter()
            .map(submission_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |s| s.id))
    }

    async fn submission(&self, org: OrgId, id: Uuid) -> Result<Option<Submission>, StoreError> {
        let mut tx = read_snapshot(self).await?;
        let found = submission_in(&mut tx, org, id).await?;
        tx.rollback().await.map_err(db_error)?;
        Ok(found)
    }

    async fn review_submission(
        &self,
        actor: &Actor,
        id: Uuid,
        decision: ReviewDecision,
        note: Option<String>,
        idempotency: Option<Idempotency<'_, Submission>>,
    ) -> Result<Submission, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // FOR UPDATE: two reviews of one submission run one after the other, and the second
        // decides from the first's outcome (else both would pass `decide` on the same status).
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE id = $1 AND org_id = $2 FOR UPDATE"
        )))
        .bind(id)
        .bind(actor.org_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::not_found("submission"))?;
        let current = submission_from(&row)?;
        let next = decide(current.review_status, decision)?;
        let moved = sqlx::query("UPDATE submissions SET review_status = $2, updated_at = $3 WHERE id = $1 AND review_status = $4")
            .bind(id)
            .bind(next.as_str())
            .bind(actor.now)
            .bind(current.review_status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if moved.rows_affected() != 1 {
            return Err(internal("submission status changed under its row lock"));
        }
        // The trail's order is this sequence, not `at` (instances' clocks differ and may step
        // back). The submission's row lock (taken FOR UPDATE above, held to commit) makes
        // transitions of one submission run one after another, and this statement's snapshot
        // is taken after it was granted: it sees every earlier transition's row.
        sqlx::query(
            "INSERT INTO submission_reviews (id, submission_id, seq, from_status, to_status, decision, note, actor_user_id, request_id, at)
             VALUES ($1, $2, (SELECT coalesce(max(seq), 0) + 1 FROM submission_reviews WHERE submission_id = $2), $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(id)
        .bind(current.review_status.as_str())
        .bind(next.as_str())
        .bind(decision.as_str())
        .bind(&note)
        .bind(actor.user_id.0)
        .bind(&actor.request_id)
        .bind(actor.now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let payload = json!({ "submission_id": id, "assessment_id": current.assessment_id, "from": current.review_status.as_str(), "to": next.as_str(), "decision": decision.as_str(), "actor_user_id": actor.user_id, "request_id": actor.request_id });
        staff_event(
            &mut tx,
            actor,
            "assessments.submission.reviewed",
            format!("submission-{id}"),
            payload,
            actor.now,
        )
        .await?;
        let updated = submission_in(&mut tx, actor.org_id, id)
            .await?
            .ok_or_else(|| internal("submission vanished"))?;
        complete_idempotency(&mut tx, idempotency, &updated, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(updated)
    }
}

/// A candidate's write to an attempt whose invite was revoked is refused as the handler
/// refuses its reads (404), checked inside the write: the handler's read may predate the
/// revoke. On PostgreSQL the invite row is locked FOR SHARE, so a revoke committing meanwhile is waited for and seen.
async fn refuse_if_revoked(tx: &mut Tx, attempt_id: Uuid) -> Result<(), StoreError> {
    if invite_revoked_locked(tx, attempt_id).await? == Some(true) {
        return Err(StoreError::not_found("invite"));
    }
    Ok(())
}

/// Whether the attempt's invite is revoked (`None`: no such attempt), with the invite locked
/// `FOR SHARE` until the transaction ends.
async fn invite_revoked_locked(tx: &mut Tx, attempt_id: Uuid) -> Result<Option<bool>, StoreError> {
    sqlx::query_scalar(
        "SELECT i.revoked_at IS NOT NULL FROM attempts t JOIN invites i ON i.id = t.invite_id
             WHERE t.id = $1
             FOR SHARE OF i",
    )
    .bind(attempt_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)
}
