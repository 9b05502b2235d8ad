//! Candidate endpoints, authenticated by the invite token in the path (no account).
//!
//! Time is the server's: `start` records `started_at` and the deadline; answers are saved and
//! submitted only until the deadline plus a short grace period; a sweeper auto-submits
//! attempts left open past it with the last saved answers. No response of these routes ever
//! contains an answer key.

use crate::auth::hash_token;
use crate::extract::ApiJson;
use crate::idempotency::{Idem, Stored, json_response};
use crate::problem::{ApiError, codes};
use crate::state::AppState;
use crate::strict_json::StrictObject;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use time::OffsetDateTime;
use trueline_core::DomainError;
use trueline_core::accounts::Email;
use trueline_core::assessments::{PublicQuestion, parse_answers, score_attempt};
use trueline_core::validation::clean_name;
use trueline_store::{
    AnswersSource, CandidateSession, NewAttempt, NewInvite, NewSubmission, Question, StoreError,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(view))
        .routes(routes!(start))
        .routes(routes!(save_answers))
        .routes(routes!(submit))
        .merge(OpenApiRouter::new().routes(routes!(register)).route_layer(
            axum::middleware::from_fn(crate::idempotency::share_registration_layer),
        ))
}

/// Longest path token accepted (longer ones are refused before hashing).
const TOKEN_CHARS_MAX: usize = 64;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateQuestion {
    pub id: Uuid,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub question: PublicQuestion,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateAssessment {
    pub title: String,
    pub description: Option<String>,
    pub time_limit_minutes: u32,
    pub question_count: usize,
    pub total_points: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateAttempt {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Answers are accepted until then (plus a short grace for network latency).
    #[serde(with = "time::serde::rfc3339")]
    pub deadline_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub saved_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateResult {
    #[serde(with = "time::serde::rfc3339")]
    pub submitted_at: OffsetDateTime,
    pub auto_submitted: bool,
    /// Present only if the employer shows scores to candidates.
    pub earned: Option<u64>,
    pub total: Option<u64>,
    pub percent: Option<String>,
    pub passed: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateView {
    /// `not_started`, `in_progress`, `time_up` (the time limit and its grace are over: the
    /// attempt is being submitted with its saved answers), `submitted` or `expired`.
    pub status: String,
    pub assessment: CandidateAssessment,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub invite_expires_at: OffsetDateTime,
    pub attempt: Option<CandidateAttempt>,
    /// In this attempt's order; only once started (the timer starts with the questions).
    pub questions: Vec<CandidateQuestion>,
    /// The saved answers, while in progress.
    #[schema(value_type = Object)]
    pub answers: Value,
    pub result: Option<CandidateResult>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswersRequest {
    /// Question id → answer: an option index (single_choice), an array of indices
    /// (multiple_choice), a boolean (true_false), a string (short_text) or a number (numeric).
    #[schema(value_type = Object)]
    pub answers: StrictObject,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Final answers; when absent, the last saved answers are submitted.
    #[schema(value_type = Option<Object>)]
    pub answers: Option<StrictObject>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegisterResponse {
    pub invite_id: Uuid,
    /// The candidate's own token, shown once.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SavedResponse {
    #[serde(with = "time::serde::rfc3339::option")]
    pub saved_at: Option<OffsetDateTime>,
}

fn token_hash(token: &str) -> Result<[u8; 32], ApiError> {
    if token.is_empty() || token.len() > TOKEN_CHARS_MAX {
        return Err(ApiError::new(codes::NOT_FOUND, "invite not found"));
    }
    Ok(hash_token(token))
}

/// The session of a usable invite: unknown or revoked → 404, expired before starting → 410.
async fn session(state: &AppState, token: &str) -> Result<CandidateSession, ApiError> {
    let session = state
        .store
        .candidate_session(&token_hash(token)?)
        .await?
        .ok_or_else(|| ApiError::new(codes::NOT_FOUND, "invite not found"))?;
    if session.invite.revoked_at.is_some() {
        return Err(ApiError::new(codes::NOT_FOUND, "invite not found"));
    }
    if session.attempt.is_none() && state.clock.now() >= session.invite.expires_at {
        return Err(DomainError::InviteExpired.into());
    }
    Ok(session)
}

/// The questions in the attempt's order (falling back to authoring order).
fn ordered(session: &CandidateSession) -> Vec<&Question> {
    match &session.attempt {
        Some(attempt) if !attempt.question_order.is_empty() => attempt
            .question_order
            .iter()
            .filter_map(|id| session.questions.iter().find(|q| q.id == *id))
            .collect(),
        _ => session.questions.iter().collect(),
    }
}

pub fn percent(earned: u64, total: u64) -> String {
    crate::assessments::percent(earned, total)
}

fn view_of(state: &AppState, session: &CandidateSession) -> CandidateView {
    let now = state.clock.now();
    let a = &session.assessment;
    let status = match (&session.submission, &session.attempt) {
        (Some(_), _) => "submitted",
        (None, Some(t)) if now > t.deadline_at + grace(state) => "time_up",
        (None, Some(_)) => "in_progress",
        (None, None) if now >= session.invite.expires_at => "expired",
        (None, None) => "not_started",
    };
    let show = a.settings.show_score_to_candidate();
    let in_progress = status == "in_progress";
    CandidateView {
        status: status.to_owned(),
        assessment: CandidateAssessment {
            title: a.settings.title().to_owned(),
            description: a.settings.description().map(str::to_owned),
            time_limit_minutes: a.settings.time_limit_minutes(),
            question_count: session.questions.len(),
            total_points: session
                .questions
                .iter()
                .map(|q| u64::from(q.spec.points()))
                .sum(),
        },
        email: session.invite.email.clone(),
        invite_expires_at: session.invite.expires_at,
        attempt: session.attempt.as_ref().map(|t| CandidateAttempt {
            started_at: t.started_at,
            deadline_at: t.deadline_at,
            saved_at: t.saved_at,
        }),
        questions: if in_progress {
            ordered(session)
                .into_iter()
                .map(|q| CandidateQuestion {
                    id: q.id,
                    question: q.spec.public_view(),
                })
                .collect()
        } else {
            Vec::new()
        },
        answers: match (&session.attempt, in_progress) {
            (Some(t), true) => canonical_keys(&t.answers),
            _ => json!({}),
        },
        result: session.submission.as_ref().map(|s| CandidateResult {
            submitted_at: s.submitted_at,
            auto_submitted: s.auto_submitted,
            earned: show.then_some(s.earned),
            total: show.then_some(s.total),
            percent: show.then(|| percent(s.earned, s.total)),
            passed: show.then_some(s.passed),
        }),
    }
}

/// Parses answers against the session's questions; every bad one is named. The answers come
/// back keyed by the canonical (lowercase, hyphenated) question ids, as `questions[].id` shows
/// them: `Uuid::parse_str` also accepts uppercase, braces, `urn:uuid:` and no hyphens, and a
/// key kept as sent could not be matched to its question by the client.
fn checked_answers(
    session: &CandidateSession,
    answers: &Map<String, Value>,
) -> Result<Value, ApiError> {
    use trueline_core::assessments::codes;
    use trueline_core::validation::FieldError;
    let questions: Vec<(Uuid, trueline_core::assessments::QuestionSpec)> = session
        .questions
        .iter()
        .map(|q| (q.id, q.spec.clone()))
        .collect();
    let mut raw = Vec::with_capacity(answers.len());
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(answers.len());
    for (key, value) in answers {
        match Uuid::parse_str(key) {
            // Two spellings of one id: which answer is meant is anyone's guess.
            Ok(id) if !seen.insert(id) => errors.push(FieldError::new(
                format!("/answers/{key}"),
                codes::DUPLICATE_ANSWER_ID,
                format!("question {id} is answered more than once (under two spellings of its id)"),
            )),
            Ok(id) => raw.push((id, value)),
            Err(_) => errors.push(FieldError::new(
                format!("/answers/{key}"),
                codes::UNKNOWN_QUESTION,
                "the assessment has no such question",
            )),
        }
    }
    if let Err(mut more) = parse_answers(&questions, raw.iter().map(|(id, v)| (*id, *v))) {
        errors.append(&mut more);
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(Value::Object(
        raw.into_iter()
            .map(|(id, value)| (id.to_string(), value.clone()))
            .collect(),
    ))
}

/// `answers` with every key that is a question id spelled canonically (answers saved before
/// keys were made canonical may be spelled as the candidate sent them).
pub(crate) fn canonical_keys(answers: &Value) -> Value {
    match answers {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let key =
                        Uuid::parse_str(key).map_or_else(|_| key.clone(), |id| id.to_string());
                    (key, value.clone())
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Scores `answers` (already validated, or saved) against the session's questions. Saved
/// answers that no longer parse are dropped rather than failing an automatic submission.
/// `source` says where they came from (the store refuses saved ones a save has replaced).
pub fn score(
    session: &CandidateSession,
    answers: &Value,
    source: AnswersSource,
    auto_submitted: bool,
) -> Result<NewSubmission, ApiError> {
    let questions: Vec<(Uuid, trueline_core::assessments::QuestionSpec)> = session
        .questions
        .iter()
        .map(|q| (q.id, q.spec.clone()))
        .collect();
    let raw: Vec<(Uuid, &Value)> = answers
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Uuid::parse_str(k).ok().map(|id| (id, v)))
                .collect()
        })
        .unwrap_or_default();
    let parsed = match parse_answers(&questions, raw.clone()) {
        Ok(parsed) => parsed,
        Err(_) if auto_submitted => {
            let mut kept = HashMap::new();
            for (id, value) in raw {
                if let Ok(one) = parse_answers(&questions, [(id, value)]) {
                    kept.extend(one);
                }
            }
            kept
        }
        Err(errors) => return Err(ApiError::validation(errors)),
    };
    let scored = score_attempt(
        &questions,
        &parsed,
        session.assessment.settings.passing_score_percent(),
    )?;
    let per_question: Vec<Value> = scored
        .per_question
        .iter()
        .map(|(id, r)| json!({"question_id": id, "earned": r.earned, "max": r.max, "correct": r.correct, "answered": r.answered}))
        .collect();
    Ok(NewSubmission {
        id: Uuid::now_v7(),
        earned: scored.earned,
        total: scored.total,
        passed: scored.passed,
        per_question: Value::Array(per_question),
        answers: canonical_keys(answers),
        answers_source: source,
        auto_submitted,
    })
}

/// Whether a submit arriving after `existing` is a retry of it: the candidate's own submit
/// (not the sweeper's), sent again without answers or with answers that parse to the same
/// ones (compared parsed, so key spelling, number notation and multiple-choice order do not
/// matter, while any changed answer does).
fn is_retry_of(
    session: &CandidateSession,
    existing: &trueline_store::Submission,
    given: Option<&Map<String, Value>>,
) -> bool {
    if existing.auto_submitted {
        return false;
    }
    let Some(given) = given else {
        return true;
    };
    let questions: Vec<(Uuid, trueline_core::assessments::QuestionSpec)> = session
        .questions
        .iter()
        .map(|q| (q.id, q.spec.clone()))
        .collect();
    let parsed = |answers: &Map<String, Value>| {
        let raw: Option<Vec<(Uuid, &Value)>> = answers
            .iter()
            .map(|(k, v)| Uuid::parse_str(k).ok().map(|id| (id, v)))
            .collect();
        parse_answers(&questions, raw?).ok()
    };
    match (parsed(given), existing.answers.as_object().and_then(parsed)) {
        (Some(sent), Some(stored)) => sent == stored,
        _ => false,
    }
}

/// How often a submit without answers is scored again after a concurrent save replaced the
/// saved answers (then `409 answers_changed`: a client saving that fast should send them).
const SUBMIT_RETRIES: u32 = 3;

fn grace(state: &AppState) -> time::Duration {
    time::Duration::try_from(state.settings.submit_grace).unwrap_or(time::Duration::seconds(30))
}

/// The assessment and (once started) its questions, never with answer keys.
#[utoipa::path(get, path = "/public/invites/{token}", tag = "candidates",
    params(("token" = String, Path, description = "The invite token")),
    responses((status = 200, description = "The candidate's view", body = CandidateView),
              (status = 404, description = "Unknown or revoked invite", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 410, description = "`invite_expired`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn view(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<CandidateView>, ApiError> {
    let s = session(&state, &token).await?;
    Ok(Json(view_of(&state, &s)))
}

/// Start the attempt: the server records the start and the deadline. Calling it again
/// returns the same attempt.
#[utoipa::path(post, path = "/public/invites/{token}/start", tag = "candidates",
    params(("token" = String, Path, description = "The invite token")),
    responses((status = 200, description = "Started (or already)", body = CandidateView),
              (status = 404, description = "Unknown or revoked invite", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 409, description = "`invalid_transition` (the assessment is closed)", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 410, description = "`invite_expired`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn start(
    State(state): State<AppState>,
    Path(token): Path<String>,
    _: crate::extract::NoBody,
) -> Result<Json<CandidateView>, ApiError> {
    let mut s = session(&state, &token).await?;
    if s.attempt.is_none() {
        if !s.assessment.status.accepts_submissions() {
            return Err(DomainError::InvalidTransition {
                from: s.assessment.status.as_str(),
                to: "started",
            }
            .into());
        }
        let now = state.clock.now();
        let mut order: Vec<Uuid> = s.questions.iter().map(|q| q.id).collect();
        if s.assessment.settings.shuffle_questions() {
            shuffle(&mut order);
        }
        let limit = time::Duration::minutes(i64::from(s.assessment.settings.time_limit_minutes()));
        let attempt = NewAttempt {
            id: Uuid::now_v7(),
            started_at: now,
            deadline_at: now + limit,
            question_order: order,
        };
        let started = state
            .store
            .start_attempt(&token_hash(&token)?, attempt)
            .await?;
        tracing::info!(event = "assessments.attempt_started", attempt_id = %started.id, invite_id = %s.invite.id);
        s.attempt = Some(started);
    }
    Ok(Json(view_of(&state, &s)))
}

/// Fisher-Yates with OS randomness.
fn shuffle(ids: &mut [Uuid]) {
    for i in (1..ids.len()).rev() {
        let mut bytes = [0u8; 4];
        let r = getrandom::fill(&mut bytes).map_or(i as u32, |()| u32::from_le_bytes(bytes));
        ids.swap(i, r as usize % (i + 1));
    }
}

/// Autosave answers (each is validated; a malformed one is a 400 naming its question).
#[utoipa::path(put, path = "/public/invites/{token}/answers", tag = "candidates",
    params(("token" = String, Path, description = "The invite token")),
    request_body = AnswersRequest,
    responses((status = 200, description = "Saved", body = SavedResponse),
              (status = 404, description = "Unknown or revoked invite", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 409, description = "`deadline_passed`, `already_submitted` or `invalid_transition` (not started)", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 410, description = "`invite_expired`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn save_answers(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ApiJson(body): ApiJson<AnswersRequest>,
) -> Result<Json<SavedResponse>, ApiError> {
    let s = session(&state, &token).await?;
    let attempt = s.attempt.as_ref().ok_or_else(|| {
        ApiError::from(DomainError::InvalidTransition {
            from: "not_started",
            to: "answering",
        })
    })?;
    if s.submission.is_some() {
        return Err(DomainError::AlreadySubmitted.into());
    }
    let answers = checked_answers(&s, &body.answers.0)?;
    let now = state.clock.now();
    let saved = state
        .store
        .save_answers(attempt.id, answers, now, now - grace(&state))
        .await?;
    Ok(Json(SavedResponse {
        saved_at: saved.saved_at,
    }))
}

/// Submit (once): scored on the server against the version the candidate took. Sending the
/// same submit again (no answers, or the same answers) answers as the first did.
#[utoipa::path(post, path = "/public/invites/{token}/submit", tag = "candidates",
    params(("token" = String, Path, description = "The invite token")),
    request_body = SubmitRequest,
    responses((status = 201, description = "Submitted (or, sent again without answers or with the same answers, already submitted by this candidate)", body = CandidateView),
              (status = 404, description = "Unknown or revoked invite", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 409, description = "`already_submitted` (with other answers), `deadline_passed`, `invalid_transition` (not started) or `answers_changed` (no answers sent, and saves kept replacing the saved ones)", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 410, description = "`invite_expired`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ApiJson(body): ApiJson<SubmitRequest>,
) -> Result<Response, ApiError> {
    let result: Result<Response, ApiError> = async {
        // Without answers in the body the saved ones are scored; if a save lands between
        // reading them and recording the submission, the store refuses (`answers_changed`)
        // and the submission is scored again on what was saved.
        let mut retries_left = SUBMIT_RETRIES;
        // The submit's time is its arrival: retries after a concurrent save, and the reads
        // before them, do not move it past the deadline (the sweeper leaves a request
        // timeout for exactly such a submit).
        let now = state.clock.now();
        // A submit that lost the race to a concurrent one reads the session once more, so an
        // identical duplicate is answered as a retry (below) whichever of the two won.
        let mut reread_after_race = false;
        loop {
            let mut s = session(&state, &token).await?;
            let attempt = s.attempt.clone().ok_or_else(|| ApiError::from(DomainError::InvalidTransition { from: "not_started", to: "submitted" }))?;
            if let Some(existing) = &s.submission {
                // Public routes take no Idempotency-Key: a candidate whose 201 was lost can
                // only send the submit again. Sent without answers or with the same ones, it
                // gets what the first got; different answers (or an attempt the sweeper
                // submitted) are a second submission and refused.
                if is_retry_of(&s, existing, body.answers.as_ref().map(|a| &a.0)) {
                    tracing::info!(event = "mutation.assessments.submit.success", submission_id = %existing.id, replayed = true);
                    return Ok((StatusCode::CREATED, Json(view_of(&state, &s))).into_response());
                }
                return Err(DomainError::AlreadySubmitted.into());
            }
            if now > attempt.deadline_at + grace(&state) {
                return Err(DomainError::DeadlinePassed.into());
            }
            let submission = match &body.answers {
                Some(given) => score(&s, &checked_answers(&s, &given.0)?, AnswersSource::Request, false)?,
                None => score(&s, &attempt.answers, AnswersSource::Saved { saved_at: attempt.saved_at }, false)?,
            };
            let stored = match state.store.submit_attempt(attempt.id, submission, now, Some(now - grace(&state))).await {
                Err(StoreError::Domain(DomainError::AnswersChanged)) if retries_left > 0 => {
                    retries_left -= 1;
                    continue;
                }
                Err(StoreError::Domain(DomainError::AlreadySubmitted)) if !reread_after_race => {
                    reread_after_race = true;
                    continue;
                }
                stored => stored?,
            };
            tracing::info!(event = "mutation.assessments.submit.success", submission_id = %stored.id, passed = stored.passed);
            s.submission = Some(stored);
            return Ok((StatusCode::CREATED, Json(view_of(&state, &s))).into_response());
        }
    }
    .await;
    if let Err(e) = &result {
        tracing::info!(
            event = "mutation.assessments.submit.rejected",
            code = e.code.code
        );
    }
    result
}

/// Register through a share link: creates this candidate's own invite. An email that is
/// already invited is refused (its token is never revealed). With an `Idempotency-Key` (at
/// least 26 characters: the candidate's secret), the same key and request again replay the
/// answer with its token.
#[utoipa::path(post, path = "/public/share/{token}/register", tag = "candidates",
    params(("token" = String, Path, description = "The share-link token")),
    request_body = RegisterRequest,
    responses((status = 201, description = "Registered", body = RegisterResponse),
              (status = 404, description = "Unknown link or assessment not published", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 409, description = "`already_invited`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn register(
    State(state): State<AppState>,
    Path(token): Path<String>,
    idem: Idem,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let share = token_hash(&token)?;
    let mut errors = Vec::new();
    let email = Email::parse(&body.email)
        .map_err(|e| errors.push(e.at("/email")))
        .ok();
    let name = match &body.name {
        Some(n) => clean_name(n, 200)
            .map(Some)
            .map_err(|e| errors.push(e.at("/name")))
            .ok()
            .flatten(),
        None => None,
    };
    let Some(email) = email.filter(|_| errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let (invite_token, hash) = crate::assessments::new_token("tli_")?;
    let now = state.clock.now();
    let expires_at = now + time::Duration::hours(crate::assessments::INVITE_EXPIRY_HOURS_DEFAULT);
    let invite = NewInvite {
        id: Uuid::now_v7(),
        email,
        name,
        token_hash: hash,
        expires_at,
    };
    let render = |stored: &trueline_store::Invite| {
        json_response(
            StatusCode::CREATED,
            &[],
            &RegisterResponse {
                invite_id: stored.id,
                token: invite_token.clone(),
                expires_at: stored.expires_at,
            },
        )
    };
    // The token is shown once: the replayable copy is sealed (see `idempotency`).
    let sealed = |stored: &trueline_store::Invite| idem.seal(render(stored));
    let stored = state
        .store
        .register_via_share_link(&share, invite, now, idem.with(&sealed))
        .await
        .map_err(|e| match e {
            trueline_store::StoreError::Domain(DomainError::NotFound(_)) => {
                ApiError::new(codes::NOT_FOUND, "share link not found")
            }
            other => other.into(),
        })?;
    Ok(Stored(render(&stored)).into_response())
}
