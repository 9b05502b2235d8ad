//! Assessments, employer side: authoring drafts, importing questions, the lifecycle, invites,
//! share links, submissions and their review, and the results export.

use crate::extract::{ApiJson, ApiQuery, PathId, Principal};
use crate::idempotency::{Idem, Stored, json_response};
use crate::list_type;
use crate::observe::RequestId;
use crate::pagination::ListQuery;
use crate::problem::{ApiError, codes};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use trueline_core::accounts::{Email, Role};
use trueline_core::assessments::{
    AssessmentSettings, AssessmentSettingsInput, AssessmentStatus, JsonInteger, QuestionSpec,
    ReviewDecision, SubmissionStatus,
};
use trueline_core::validation::{FieldError, clean_name};
use trueline_import::{Format, ImportError};
use trueline_store::{
    Actor, Assessment, Invite, InviteOutcome, NewInvite, Question, Submission, SubmissionFilter,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_assessment, list_assessments))
        .routes(routes!(get_assessment, update_assessment))
        .routes(routes!(add_question))
        .routes(routes!(replace_question, delete_question))
        .routes(routes!(reorder_questions))
        .routes(routes!(template_csv))
        .routes(routes!(template_xlsx))
        .routes(routes!(publish))
        .routes(routes!(close))
        .routes(routes!(archive))
        .routes(routes!(revise))
        .routes(routes!(create_invites, list_invites))
        .routes(routes!(revoke_invite))
        .routes(routes!(create_share_link, delete_share_link))
        .routes(routes!(list_submissions))
        .routes(routes!(results_csv))
        .routes(routes!(get_submission))
        .routes(routes!(review_submission))
}

/// The import route alone: its body is a spreadsheet of up to 5 MiB, where every other route
/// keeps the server's (smaller) body limit.
pub fn import_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(import_questions))
}

/// The path of the import route, as routed (see [`import_router`]).
pub const IMPORT_ROUTE: &str = "/assessments/{id}/questions/import";

/// Candidates invited in one request.
pub const INVITES_PER_REQUEST_MAX: usize = 500;
pub const INVITE_EXPIRY_HOURS_DEFAULT: i64 = 7 * 24;
pub const INVITE_EXPIRY_HOURS_MAX: i64 = 90 * 24;
pub const REVIEW_NOTE_CHARS_MAX: usize = 2000;
/// Rows of one results export; beyond it the answer names the next part in `Link`.
pub const RESULTS_CSV_ROWS_MAX: usize = 100_000;

// ---- wire types ----

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssessmentView {
    pub id: Uuid,
    /// The first version's id; revisions share it.
    pub family_id: Uuid,
    pub version_number: u32,
    /// `draft`, `published`, `closed` or `archived`.
    pub status: String,
    pub title: String,
    pub description: Option<String>,
    pub time_limit_minutes: u32,
    pub passing_score_percent: u8,
    pub shuffle_questions: bool,
    pub show_score_to_candidate: bool,
    /// The ETag is `"r<revision>"`.
    pub revision: u64,
    pub has_share_link: bool,
    pub question_count: u32,
    pub invite_count: u64,
    pub submission_count: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub published_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&Assessment> for AssessmentView {
    fn from(a: &Assessment) -> Self {
        Self {
            id: a.id,
            family_id: a.family_id,
            version_number: a.version_number,
            status: a.status.as_str().to_owned(),
            title: a.settings.title().to_owned(),
            description: a.settings.description().map(str::to_owned),
            time_limit_minutes: a.settings.time_limit_minutes(),
            passing_score_percent: a.settings.passing_score_percent().get(),
            shuffle_questions: a.settings.shuffle_questions(),
            show_score_to_candidate: a.settings.show_score_to_candidate(),
            revision: a.revision,
            has_share_link: a.has_share_link,
            question_count: a.question_count,
            invite_count: a.invite_count,
            submission_count: a.submission_count,
            published_at: a.published_at,
            closed_at: a.closed_at,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// A question as its author sees it, answer key included.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuestionView {
    pub id: Uuid,
    pub position: u32,
    /// `{type, prompt, points, options?, correct?, accepted_answers?, value?, tolerance?}`.
    #[schema(value_type = Object)]
    pub question: Value,
}

impl From<&Question> for QuestionView {
    fn from(q: &Question) -> Self {
        Self {
            id: q.id,
            position: q.position,
            question: q.spec.to_json(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssessmentDetail {
    #[serde(flatten)]
    pub assessment: AssessmentView,
    pub questions: Vec<QuestionView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuestionList {
    pub questions: Vec<QuestionView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InviteView {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
    pub via_share_link: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub submitted_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&Invite> for InviteView {
    fn from(i: &Invite) -> Self {
        Self {
            id: i.id,
            email: i.email.clone(),
            name: i.name.clone(),
            expires_at: i.expires_at,
            revoked: i.revoked_at.is_some(),
            via_share_link: i.via_share_link,
            started_at: i.started_at,
            submitted_at: i.submitted_at,
            created_at: i.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InviteResult {
    #[serde(flatten)]
    pub invite: InviteView,
    /// `created`, `reissued` (an invite revoked or expired before it was started holds the new
    /// token now), or `already_invited` (the existing token is never shown again).
    pub status: String,
    /// The candidate's token, shown once, only for invites created or re-issued now.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvitesResponse {
    pub invites: Vec<InviteResult>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewView {
    pub from: String,
    pub to: String,
    pub decision: String,
    pub note: Option<String>,
    pub actor_user_id: Uuid,
    pub request_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubmissionView {
    pub id: Uuid,
    pub assessment_id: Uuid,
    pub invite_id: Uuid,
    pub email: String,
    pub earned: u64,
    pub total: u64,
    /// Two decimals, for display; `passed` was decided on exact integers.
    pub percent: String,
    pub passed: bool,
    pub auto_submitted: bool,
    /// `submitted`, `verified`, `approved`, `rejected` or `archived`.
    pub review_status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub submitted_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `earned / total` as a percentage with two decimals, computed in integers and rounded
/// down: so it reaches the passing score exactly when the submission passes (rounded half
/// up, 136 of 203 showed "67.00" beside `passed: false` at 67 %).
pub fn percent(earned: u64, total: u64) -> String {
    if total == 0 {
        return "0.00".into();
    }
    let hundredths = u128::from(earned) * 10_000 / u128::from(total);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

impl From<&Submission> for SubmissionView {
    fn from(s: &Submission) -> Self {
        Self {
            id: s.id,
            assessment_id: s.assessment_id,
            invite_id: s.invite_id,
            email: s.email.clone(),
            earned: s.earned,
            total: s.total,
            percent: percent(s.earned, s.total),
            passed: s.passed,
            auto_submitted: s.auto_submitted,
            review_status: s.review_status.as_str().to_owned(),
            submitted_at: s.submitted_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubmissionDetail {
    #[serde(flatten)]
    pub submission: SubmissionView,
    /// Per question: `{question_id, earned, max, correct, answered}`.
    #[schema(value_type = Vec<Object>)]
    pub questions: Value,
    /// The candidate's answers, by question id (employers only).
    #[schema(value_type = Object)]
    pub answers: Value,
    /// Every review transition, in the order they were made (not sorted by `at`: that is the
    /// clock of the server that made each, which may step back).
    pub reviews: Vec<ReviewView>,
}

impl From<&Submission> for SubmissionDetail {
    fn from(s: &Submission) -> Self {
        Self {
            submission: SubmissionView::from(s),
            questions: s.per_question.clone(),
            answers: crate::candidates::canonical_keys(&s.answers),
            reviews: s
                .reviews
                .iter()
                .map(|r| ReviewView {
                    from: r.from.as_str().to_owned(),
                    to: r.to.as_str().to_owned(),
                    decision: r.decision.as_str().to_owned(),
                    note: r.note.clone(),
                    actor_user_id: r.actor_user_id.0,
                    request_id: r.request_id.clone(),
                    at: r.at,
                })
                .collect(),
        }
    }
}

list_type!(AssessmentList, AssessmentView);
list_type!(InviteList, InviteView);
list_type!(SubmissionList, SubmissionView);

/// The settings of a new assessment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssessmentRequest {
    pub title: String,
    pub description: Option<String>,
    /// 5 to 240.
    #[schema(value_type = i64)]
    pub time_limit_minutes: JsonInteger,
    /// 0 to 100.
    #[schema(value_type = i64)]
    pub passing_score_percent: JsonInteger,
    #[serde(default)]
    pub shuffle_questions: bool,
    #[serde(default)]
    pub show_score_to_candidate: bool,
}

/// Fields to change; absent fields keep their value (`description: null` clears it).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAssessmentRequest {
    pub title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[schema(value_type = Option<i64>)]
    pub time_limit_minutes: Option<JsonInteger>,
    #[schema(value_type = Option<i64>)]
    pub passing_score_percent: Option<JsonInteger>,
    pub shuffle_questions: Option<bool>,
    pub show_score_to_candidate: Option<bool>,
}

fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReorderRequest {
    /// Every question id of the assessment, in the new order.
    pub question_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateInput {
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitesRequest {
    /// 1 to 500 candidates.
    pub candidates: Vec<CandidateInput>,
    /// Default 168 (7 days), at most 2160 (90 days).
    #[schema(value_type = Option<i64>)]
    pub expires_in_hours: Option<JsonInteger>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShareLinkResponse {
    /// Shown once: candidates register with `POST /api/v1/public/share/{token}/register`.
    pub token: String,
    pub register_url: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// `verify`, `approve`, `reject` or `archive`.
    pub decision: String,
    pub note: Option<String>,
}

/// The multipart form of an import.
#[derive(Debug, Clone, ToSchema)]
pub struct ImportForm {
    /// The spreadsheet (`.csv` or `.xlsx`).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportResponse {
    pub imported: usize,
    pub questions: Vec<QuestionView>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssessmentListQuery {
    /// `draft`, `published`, `closed` or `archived`.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubmissionListQuery {
    pub passed: Option<bool>,
    /// `submitted`, `verified`, `approved`, `rejected` or `archived`.
    pub review_status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultsCsvQuery {
    /// Where a part of the export continues (from the previous part's `Link: rel="next"`).
    pub cursor: Option<String>,
}

// ---- helpers ----

pub fn etag(revision: u64) -> String {
    format!("\"r{revision}\"")
}

fn actor(p: &Principal, state: &AppState, rid: &RequestId) -> Actor {
    Actor {
        org_id: p.org_id,
        user_id: p.user_id,
        role: p.role,
        request_id: rid.0.clone(),
        now: state.clock.now(),
    }
}

fn not_found() -> ApiError {
    ApiError::new(codes::NOT_FOUND, "assessment not found")
}

/// `If-Match: "r<revision>"` (or `*`): `Ok(None)` for `*`. Required when `required`.
fn if_match(headers: &HeaderMap, required: bool) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return if required {
            Err(ApiError::new(
                codes::PRECONDITION_REQUIRED,
                "send If-Match with the assessment's ETag",
            ))
        } else {
            Ok(None)
        };
    };
    let value = value.to_str().unwrap_or("").trim();
    if value == "*" {
        return Ok(None);
    }
    // Compared strongly (RFC 9110, 13.1.1): a weak tag never matches.
    value
        .strip_prefix("\"r")
        .and_then(|v| v.strip_suffix('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                codes::PRECONDITION_FAILED,
                "If-Match is not an ETag of this assessment",
            )
        })
}

fn detail_response(
    status: StatusCode,
    a: &Assessment,
    questions: &[Question],
    location: bool,
) -> trueline_store::StoredResponse {
    let mut headers = vec![("etag", etag(a.revision))];
    if location {
        headers.push(("location", format!("/api/v1/assessments/{}", a.id)));
    }
    let body = AssessmentDetail {
        assessment: a.into(),
        questions: questions.iter().map(QuestionView::from).collect(),
    };
    json_response(status, &headers, &body)
}

fn assessment_response(status: StatusCode, a: &Assessment) -> trueline_store::StoredResponse {
    json_response(
        status,
        &[("etag", etag(a.revision))],
        &AssessmentView::from(a),
    )
}

fn log<T>(action: &str, result: &Result<T, ApiError>) {
    match result {
        Ok(_) => tracing::info!(event = %format!("mutation.assessments.{action}.success")),
        Err(e) => {
            tracing::info!(event = %format!("mutation.assessments.{action}.rejected"), code = e.code.code)
        }
    }
}

/// `tli_…` (invites) and `tls_…` (share links): 256 random bits, base64url.
pub fn new_token(prefix: &str) -> Result<(String, [u8; 32]), ApiError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = crate::auth::hash_token(&token);
    Ok((token, hash))
}

// ---- authoring ----

/// Create a draft assessment (admin).
#[utoipa::path(post, path = "/assessments", tag = "assessments", security(("bearer" = [])),
    request_body = CreateAssessmentRequest,
    responses((status = 201, description = "Draft created; `Location`, `ETag`", body = AssessmentDetail)))]
async fn create_assessment(
    State(state): State<AppState>,
    p: Principal,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<CreateAssessmentRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let settings = AssessmentSettings::parse(AssessmentSettingsInput {
            title: body.title,
            description: body.description,
            time_limit_minutes: body.time_limit_minutes,
            passing_score_percent: body.passing_score_percent,
            shuffle_questions: body.shuffle_questions,
            show_score_to_candidate: body.show_score_to_candidate,
        })
        .map_err(ApiError::validation)?;
        let render = |a: &Assessment| detail_response(StatusCode::CREATED, a, &[], true);
        let a = state
            .store
            .create_assessment(
                &actor(&p, &state, &rid),
                Uuid::now_v7(),
                settings,
                idem.with(&render),
            )
            .await?;
        Ok(render(&a))
    }
    .await;
    log("create", &result);
    Ok(Stored(result?).into_response())
}

/// The organization's assessments, with question, invite and submission counts.
#[utoipa::path(get, path = "/assessments", tag = "assessments", security(("bearer" = [])),
    params(AssessmentListQuery),
    responses((status = 200, description = "Assessments", body = AssessmentList)))]
async fn list_assessments(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<AssessmentListQuery>,
) -> Result<Json<AssessmentList>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(|s| {
            AssessmentStatus::parse(s).ok_or_else(|| {
                ApiError::field(
                    "/query/status",
                    "invalid_value",
                    "must be draft, published, closed or archived",
                )
            })
        })
        .transpose()?;
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    let page = state.store.assessments(p.org_id, status, page).await?;
    Ok(Json(AssessmentList::from_page(page, |a| {
        AssessmentView::from(&a)
    })))
}

/// An assessment with its questions and answer keys.
#[utoipa::path(get, path = "/assessments/{id}", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id")),
    responses((status = 200, description = "The assessment; `ETag`", body = AssessmentDetail)))]
async fn get_assessment(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let (a, questions) = state
        .store
        .assessment(p.org_id, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Stored(detail_response(StatusCode::OK, &a, &questions, false)).into_response())
}

/// The settings an update asks for: the body's fields over `current`'s.
fn merged_settings(
    current: &Assessment,
    body: &UpdateAssessmentRequest,
) -> Result<AssessmentSettings, ApiError> {
    let s = &current.settings;
    AssessmentSettings::parse(AssessmentSettingsInput {
        title: body.title.clone().unwrap_or_else(|| s.title().to_owned()),
        description: body
            .description
            .clone()
            .unwrap_or_else(|| s.description().map(str::to_owned)),
        time_limit_minutes: body
            .time_limit_minutes
            .unwrap_or(JsonInteger(i64::from(s.time_limit_minutes()))),
        passing_score_percent: body
            .passing_score_percent
            .unwrap_or(JsonInteger(i64::from(s.passing_score_percent().get()))),
        shuffle_questions: body.shuffle_questions.unwrap_or(s.shuffle_questions()),
        show_score_to_candidate: body
            .show_score_to_candidate
            .unwrap_or(s.show_score_to_candidate()),
    })
    .map_err(ApiError::validation)
}

/// Change a draft's settings (`If-Match` required).
#[utoipa::path(patch, path = "/assessments/{id}", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"), ("If-Match" = String, Header, description = "The ETag, e.g. \"r3\"")),
    request_body = UpdateAssessmentRequest,
    responses((status = 200, description = "Updated", body = AssessmentView),
              (status = 409, description = "`not_editable`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 428, description = "`precondition_required`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn update_assessment(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateAssessmentRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let expected = if_match(&headers, true)?;
        let render = |a: &Assessment| assessment_response(StatusCode::OK, a);
        // The fields the body leaves out are filled from the current settings, so the write
        // is guarded by the revision they were read at even for `If-Match: *` (unguarded,
        // it put back a setting another admin changed in between). For `*` a change in
        // between means reading again, a few times; an explicit ETag is the client's own.
        let mut attempts = 0;
        let a = loop {
            attempts += 1;
            let (current, _) = state
                .store
                .assessment(p.org_id, id)
                .await?
                .ok_or_else(not_found)?;
            let settings = merged_settings(&current, &body)?;
            let updated = state
                .store
                .update_assessment(
                    &actor(&p, &state, &rid),
                    id,
                    expected.or(Some(current.revision)),
                    settings,
                    idem.with(&render),
                )
                .await;
            match updated {
                Err(trueline_store::StoreError::Domain(
                    trueline_core::DomainError::VersionMismatch { .. },
                )) if expected.is_none() && attempts < 3 => {}
                other => break other?,
            }
        };
        Ok(render(&a))
    }
    .await;
    log("update", &result);
    Ok(Stored(result?).into_response())
}

/// Add a question to a draft (`If-Match` optional).
#[utoipa::path(post, path = "/assessments/{id}/questions", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id")),
    request_body(content = Object, description = "`{type, prompt, points?, options?, correct?, accepted_answers?, value?, tolerance?}`"),
    responses((status = 201, description = "Added", body = QuestionView),
              (status = 409, description = "`not_editable`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn add_question(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    ApiJson(crate::strict_json::StrictValue(body)): ApiJson<crate::strict_json::StrictValue>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let spec = QuestionSpec::from_json(&body).map_err(ApiError::validation)?;
        let expected = if_match(&headers, false)?;
        let render = |qs: &Vec<Question>| {
            json_response(
                StatusCode::CREATED,
                &[],
                &qs.first().map(QuestionView::from),
            )
        };
        let added = state
            .store
            .add_questions(
                &actor(&p, &state, &rid),
                id,
                expected,
                vec![(Uuid::now_v7(), spec)],
                idem.with(&render),
            )
            .await?;
        Ok(render(&added))
    }
    .await;
    log("question_added", &result);
    Ok(Stored(result?).into_response())
}

/// Replace a draft's question (`If-Match` required).
#[utoipa::path(patch, path = "/assessments/{id}/questions/{question_id}", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"), ("question_id" = Uuid, Path, description = "Question id"),
           ("If-Match" = String, Header, description = "The assessment's ETag")),
    request_body(content = Object, description = "The whole question"),
    responses((status = 200, description = "Replaced", body = QuestionView),
              (status = 409, description = "`not_editable`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 428, description = "`precondition_required`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn replace_question(
    State(state): State<AppState>,
    p: Principal,
    Path((id, question_id)): Path<(String, String)>,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    ApiJson(crate::strict_json::StrictValue(body)): ApiJson<crate::strict_json::StrictValue>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let (id, question_id) = (parse_id(&id)?, parse_id(&question_id)?);
        let spec = QuestionSpec::from_json(&body).map_err(ApiError::validation)?;
        let expected = if_match(&headers, true)?;
        let render = |q: &Question| json_response(StatusCode::OK, &[], &QuestionView::from(q));
        let q = state
            .store
            .replace_question(
                &actor(&p, &state, &rid),
                id,
                question_id,
                expected,
                spec,
                idem.with(&render),
            )
            .await?;
        Ok(render(&q))
    }
    .await;
    log("question_replaced", &result);
    Ok(Stored(result?).into_response())
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::new(codes::NOT_FOUND, "no resource has this id"))
}

/// Remove a draft's question (`If-Match` required). Idempotent.
#[utoipa::path(delete, path = "/assessments/{id}/questions/{question_id}", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"), ("question_id" = Uuid, Path, description = "Question id"),
           ("If-Match" = String, Header, description = "The assessment's ETag")),
    responses((status = 204, description = "Removed, or was not there"),
              (status = 409, description = "`not_editable`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 428, description = "`precondition_required`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn delete_question(
    State(state): State<AppState>,
    p: Principal,
    Path((id, question_id)): Path<(String, String)>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    p.require(Role::Admin)?;
    let (id, question_id) = (parse_id(&id)?, parse_id(&question_id)?);
    let expected = if_match(&headers, true)?;
    match state
        .store
        .delete_question(&actor(&p, &state, &rid), id, question_id, expected)
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        // A retry after a lost `204` names the revision its first attempt moved on from: if
        // the question is gone, the delete it asks for is done (as for any absent question),
        // and there is nothing left for the precondition to protect.
        Err(trueline_store::StoreError::Domain(
            e @ trueline_core::DomainError::VersionMismatch { .. },
        )) => {
            let gone = state
                .store
                .assessment(p.org_id, id)
                .await?
                .is_some_and(|(_, questions)| questions.iter().all(|q| q.id != question_id));
            if gone {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(trueline_store::StoreError::Domain(e).into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Reorder a draft's questions (`If-Match` required).
#[utoipa::path(put, path = "/assessments/{id}/questions/order", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"), ("If-Match" = String, Header, description = "The assessment's ETag")),
    request_body = ReorderRequest,
    responses((status = 200, description = "The questions in their new order", body = QuestionList),
              (status = 409, description = "`not_editable`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 428, description = "`precondition_required`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn reorder_questions(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ReorderRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let expected = if_match(&headers, true)?;
        // With an `Idempotency-Key`, a retry after a lost response gets this response again
        // instead of a 412 (its `If-Match` names the revision the first attempt moved on).
        let render = |questions: &Vec<Question>| {
            json_response(
                StatusCode::OK,
                &[],
                &QuestionList {
                    questions: questions.iter().map(QuestionView::from).collect(),
                },
            )
        };
        let questions = state
            .store
            .reorder_questions(
                &actor(&p, &state, &rid),
                id,
                expected,
                body.question_ids,
                idem.with(&render),
            )
            .await?;
        Ok(render(&questions))
    }
    .await;
    log("questions_reordered", &result);
    Ok(Stored(result?).into_response())
}

/// The uploaded spreadsheet: a multipart `file` part, or the raw body with its media type.
struct Upload {
    format: Format,
    bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Upload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        crate::extract::refuse_content_coding(req.headers())?;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let too_large = || ApiError::new(codes::PAYLOAD_TOO_LARGE, "the upload exceeds 5 MiB");
        if content_type
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
        {
            let mut multipart = axum::extract::Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::field("/file", "invalid_upload", e.body_text()))?;
            while let Some(field) = multipart.next_field().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else if crate::body_read::is_stalled(&e) {
                    crate::body_read::timed_out_reading()
                } else {
                    ApiError::field("/file", "invalid_upload", e.body_text())
                }
            })? {
                if field.name() != Some("file") {
                    continue;
                }
                let format = field
                    .content_type()
                    .and_then(Format::from_media_type)
                    .or_else(|| field.file_name().and_then(format_of_name))
                    .ok_or_else(|| {
                        ApiError::field(
                            "/file",
                            "unsupported_file_type",
                            "the file must be CSV (.csv, text/csv) or XLSX (.xlsx)",
                        )
                    })?;
                let bytes = field.bytes().await.map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        too_large()
                    } else if crate::body_read::is_stalled(&e) {
                        crate::body_read::timed_out_reading()
                    } else {
                        ApiError::field("/file", "invalid_upload", e.body_text())
                    }
                })?;
                return Ok(Upload { format, bytes });
            }
            return Err(ApiError::field(
                "/file",
                "missing_field",
                "send the spreadsheet in a multipart part named `file`",
            ));
        }
        let format = Format::from_media_type(&content_type).ok_or_else(unsupported)?;
        // A body that fails to arrive is a failed upload, as in the multipart path: the body
        // is a spreadsheet, not JSON.
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else if crate::body_read::is_stalled(&e) {
                crate::body_read::timed_out_reading()
            } else {
                ApiError::field("/file", "invalid_upload", e.body_text())
            }
        })?;
        Ok(Upload { format, bytes })
    }
}

fn unsupported() -> ApiError {
    ApiError::new(
        codes::UNSUPPORTED_MEDIA_TYPE,
        "upload text/csv or application/vnd.openxmlformats-officedocument.spreadsheetml.sheet (raw body or a multipart `file` part)",
    )
}

fn format_of_name(name: &str) -> Option<Format> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".csv") {
        Some(Format::Csv)
    } else if lower.ends_with(".xlsx") {
        Some(Format::Xlsx)
    } else {
        None
    }
}

/// Row errors an `invalid_import` problem lists (`detail` counts them all): enough to fix a
/// file by, and a bound on the response; every row of a 5 MiB CSV in error made a problem of
/// tens of MiB.
const IMPORT_ROW_ERRORS_LISTED_MAX: usize = 100;

/// Spreadsheets parsed at once, across all imports. A parse takes a core and, for a hostile
/// workbook, up to a few hundred MiB (calamine's structures); without a bound a burst ran as
/// many as the blocking pool has threads (512).
const IMPORT_PARSES_MAX: usize = 2;
/// How long an import waits for a parse to finish before it is told to retry.
const IMPORT_PARSE_WAIT_MS: u64 = 2_000;
static IMPORT_PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(IMPORT_PARSES_MAX);

/// A place among the parses running at once, or `503 overloaded` once `wait` has passed:
/// imports queue briefly, never without bound (a queue turns a burst into timeouts for all).
async fn parse_slot(
    slots: &tokio::sync::Semaphore,
    wait: std::time::Duration,
) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    match tokio::time::timeout(wait, slots.acquire()).await {
        Ok(permit) => permit.map_err(ApiError::internal),
        Err(_) => Err(ApiError::new(
            codes::OVERLOADED,
            "too many spreadsheets are being imported; retry shortly",
        )
        .retry_after(1)),
    }
}

fn import_error(e: ImportError) -> ApiError {
    match e {
        ImportError::TooLarge { .. } => ApiError::new(codes::PAYLOAD_TOO_LARGE, e.to_string()),
        ImportError::Rows(rows) => {
            let detail = if rows.len() > IMPORT_ROW_ERRORS_LISTED_MAX {
                format!(
                    "{} row error(s), the first {IMPORT_ROW_ERRORS_LISTED_MAX} listed; nothing \
                     was imported",
                    rows.len()
                )
            } else {
                format!("{} row error(s); nothing was imported", rows.len())
            };
            let errors = rows
                .into_iter()
                .take(IMPORT_ROW_ERRORS_LISTED_MAX)
                .map(|r| FieldError::new(format!("/rows/{}/{}", r.row, r.column), r.code, r.detail))
                .collect();
            ApiError {
                errors,
                ..ApiError::new(codes::INVALID_IMPORT, detail)
            }
        }
        other => {
            let code = other.code();
            ApiError {
                errors: vec![FieldError::new("/file", code, other.to_string())],
                ..ApiError::new(codes::INVALID_IMPORT, other.to_string())
            }
        }
    }
}

/// Import questions from CSV or XLSX (columns `type,prompt,options,correct,points`), all or
/// nothing: any bad row → 400 listing the row errors (the first 100; `detail` counts them
/// all), and nothing is imported. `If-Match` is optional and checked as on adding a question.
#[utoipa::path(post, path = "/assessments/{id}/questions/import", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id")),
    request_body(description = "CSV or XLSX, raw or as a multipart `file` part; at most 5 MiB and 1,000 rows",
        content((String = "text/csv"),
                (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                (ImportForm = "multipart/form-data"))),
    responses((status = 201, description = "Imported", body = ImportResponse),
              (status = 409, description = "`not_editable`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn import_questions(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    upload: Upload,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        // Read before the parse: a malformed tag needs no parse to be refused. A stale one is
        // refused by the store, in the same transaction as the insert (as on add_question).
        let expected = if_match(&headers, false)?;
        let (format, bytes) = (upload.format, upload.bytes);
        let slot = parse_slot(
            &IMPORT_PARSES,
            std::time::Duration::from_millis(IMPORT_PARSE_WAIT_MS),
        )
        .await?;
        // The place moves into the blocking task: a request dropped meanwhile (timeout, client
        // gone) must not free the place of a parse that still runs.
        let specs = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            trueline_import::parse(&bytes, format)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(import_error)?;
        let questions = specs.into_iter().map(|s| (Uuid::now_v7(), s)).collect();
        let render = |qs: &Vec<Question>| json_response(StatusCode::CREATED, &[], &ImportResponse { imported: qs.len(), questions: qs.iter().map(QuestionView::from).collect() });
        let added = state.store.add_questions(&actor(&p, &state, &rid), id, expected, questions, idem.with(&render)).await?;
        tracing::info!(event = "assessments.imported", assessment_id = %id, questions = added.len());
        Ok(render(&added))
    }
    .await;
    log("import", &result);
    Ok(Stored(result?).into_response())
}

/// The CSV import template (one example of every question type).
#[utoipa::path(get, path = "/assessments/import-template.csv", tag = "assessments", security(("bearer" = [])),
    responses((status = 200, description = "CSV template", content_type = "text/csv", body = String)))]
async fn template_csv(_p: Principal) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"questions.csv\"",
            ),
        ],
        trueline_import::template_csv(),
    )
        .into_response()
}

/// The XLSX import template.
#[utoipa::path(get, path = "/assessments/import-template.xlsx", tag = "assessments", security(("bearer" = [])),
    responses((status = 200, description = "XLSX template", content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", body = Vec<u8>)))]
async fn template_xlsx(_p: Principal) -> Response {
    (
        [
            (header::CONTENT_TYPE, Format::Xlsx.media_type()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"questions.xlsx\"",
            ),
        ],
        trueline_import::template_xlsx(),
    )
        .into_response()
}

// ---- lifecycle ----

async fn move_to(
    state: AppState,
    p: Principal,
    id: Uuid,
    rid: RequestId,
    idem: Idem,
    headers: &HeaderMap,
    to: AssessmentStatus,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let expected = if_match(headers, false)?;
        let render = |a: &Assessment| assessment_response(StatusCode::OK, a);
        let a = state
            .store
            .transition_assessment(
                &actor(&p, &state, &rid),
                id,
                expected,
                to,
                state.settings.published_assessments_max,
                idem.with(&render),
            )
            .await?;
        Ok(render(&a))
    }
    .await;
    log(to.as_str(), &result);
    Ok(Stored(result?).into_response())
}

/// Publish a draft: its settings and questions freeze; at most N published per organization.
#[utoipa::path(post, path = "/assessments/{id}/publish", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"),
           ("If-Match" = Option<String>, Header, description = "Optional: the ETag the caller saw, e.g. \"r3\"; another revision is `412`")),
    responses((status = 200, description = "Published", body = AssessmentView),
              (status = 409, description = "`invalid_transition` or `active_assessment_limit`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn publish(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    _: crate::extract::NoBody,
) -> Result<Response, ApiError> {
    move_to(
        state,
        p,
        id,
        rid,
        idem,
        &headers,
        AssessmentStatus::Published,
    )
    .await
}

/// Close a published assessment: no new attempts; frees a publishing slot.
#[utoipa::path(post, path = "/assessments/{id}/close", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"),
           ("If-Match" = Option<String>, Header, description = "Optional: the ETag the caller saw, e.g. \"r3\"; another revision is `412`")),
    responses((status = 200, description = "Closed", body = AssessmentView),
              (status = 409, description = "`invalid_transition`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn close(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    _: crate::extract::NoBody,
) -> Result<Response, ApiError> {
    move_to(state, p, id, rid, idem, &headers, AssessmentStatus::Closed).await
}

/// Archive a closed assessment.
#[utoipa::path(post, path = "/assessments/{id}/archive", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"),
           ("If-Match" = Option<String>, Header, description = "Optional: the ETag the caller saw, e.g. \"r3\"; another revision is `412`")),
    responses((status = 200, description = "Archived", body = AssessmentView),
              (status = 409, description = "`invalid_transition`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 412, description = "`precondition_failed`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn archive(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    headers: HeaderMap,
    _: crate::extract::NoBody,
) -> Result<Response, ApiError> {
    move_to(
        state,
        p,
        id,
        rid,
        idem,
        &headers,
        AssessmentStatus::Archived,
    )
    .await
}

/// A new draft version of a published, closed or archived assessment (questions copied).
#[utoipa::path(post, path = "/assessments/{id}/revise", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id")),
    responses((status = 201, description = "The new draft (without its questions: `GET /assessments/{id}` shows them)", body = AssessmentView),
              (status = 409, description = "`invalid_transition` (already a draft)", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn revise(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    _: crate::extract::NoBody,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let render = |a: &Assessment| assessment_response(StatusCode::CREATED, a);
        let a = state
            .store
            .revise_assessment(
                &actor(&p, &state, &rid),
                id,
                Uuid::now_v7(),
                idem.with(&render),
            )
            .await?;
        Ok(render(&a))
    }
    .await;
    log("revise", &result);
    Ok(Stored(result?).into_response())
}

// ---- candidates ----

/// Invite candidates (one invite per email); tokens are returned once.
#[utoipa::path(post, path = "/assessments/{id}/invites", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id")),
    request_body = InvitesRequest,
    responses((status = 201, description = "Invites (created or already invited)", body = InvitesResponse),
              (status = 409, description = "`invalid_transition` (not published), `idempotency_key_other_token`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn create_invites(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<InvitesRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let count = body.candidates.len();
        if count == 0 || count > INVITES_PER_REQUEST_MAX {
            return Err(ApiError::field(
                "/candidates",
                "invalid_length",
                format!("must list 1 to {INVITES_PER_REQUEST_MAX} candidates"),
            ));
        }
        let hours = body
            .expires_in_hours
            .map_or(INVITE_EXPIRY_HOURS_DEFAULT, |h| h.0);
        if !(1..=INVITE_EXPIRY_HOURS_MAX).contains(&hours) {
            return Err(ApiError::field(
                "/expires_in_hours",
                "out_of_range",
                format!("must be between 1 and {INVITE_EXPIRY_HOURS_MAX}"),
            ));
        }
        let now = state.clock.now();
        let mut errors = Vec::new();
        let mut invites = Vec::with_capacity(count);
        let mut tokens = std::collections::HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (i, c) in body.candidates.iter().enumerate() {
            let email = Email::parse(&c.email)
                .map_err(|e| errors.push(e.at(format!("/candidates/{i}/email"))))
                .ok();
            let name = match &c.name {
                Some(n) => clean_name(n, 200)
                    .map(Some)
                    .map_err(|e| errors.push(e.at(format!("/candidates/{i}/name"))))
                    .ok()
                    .flatten(),
                None => None,
            };
            if let Some(email) = email {
                if !seen.insert(email.as_str().to_owned()) {
                    errors.push(FieldError::new(
                        format!("/candidates/{i}/email"),
                        "duplicate_email",
                        "listed twice",
                    ));
                    continue;
                }
                let (token, hash) = new_token("tli_")?;
                let invite_id = Uuid::now_v7();
                tokens.insert(email.as_str().to_owned(), token);
                invites.push(NewInvite {
                    id: invite_id,
                    email,
                    name,
                    token_hash: hash,
                    expires_at: now + time::Duration::hours(hours),
                });
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let render = |outcomes: &Vec<InviteOutcome>| {
            let invites = outcomes
                .iter()
                .map(|o| InviteResult {
                    invite: InviteView::from(&o.invite),
                    status: if o.created {
                        "created"
                    } else if o.reissued {
                        "reissued"
                    } else {
                        "already_invited"
                    }
                    .to_owned(),
                    // By email: a re-issued invite keeps its id.
                    token: if o.created || o.reissued {
                        tokens.get(&o.invite.email).cloned()
                    } else {
                        None
                    },
                })
                .collect();
            json_response(StatusCode::CREATED, &[], &InvitesResponse { invites })
        };
        // The tokens are shown once: the replayable copy is sealed to the caller's token.
        let sealed = |outcomes: &Vec<InviteOutcome>| idem.seal(render(outcomes));
        let outcomes = state
            .store
            .create_invites(&actor(&p, &state, &rid), id, invites, idem.with(&sealed))
            .await?;
        Ok(render(&outcomes))
    }
    .await;
    log("invite", &result);
    Ok(Stored(result?).into_response())
}

/// The assessment's invites (tokens are never shown again).
#[utoipa::path(get, path = "/assessments/{id}/invites", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"), ListQuery),
    responses((status = 200, description = "Invites", body = InviteList)))]
async fn list_invites(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<InviteList>, ApiError> {
    p.require(Role::Admin)?;
    let page = state.store.invites(p.org_id, id, query.page()?).await?;
    Ok(Json(InviteList::from_page(page, |i| InviteView::from(&i))))
}

/// Revoke an invite: its token stops working. Idempotent.
#[utoipa::path(delete, path = "/assessments/{id}/invites/{invite_id}", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"), ("invite_id" = Uuid, Path, description = "Invite id")),
    responses((status = 204, description = "Revoked (or already)")))]
async fn revoke_invite(
    State(state): State<AppState>,
    p: Principal,
    Path((id, invite_id)): Path<(String, String)>,
    Extension(rid): Extension<RequestId>,
) -> Result<StatusCode, ApiError> {
    p.require(Role::Admin)?;
    let (id, invite_id) = (parse_id(&id)?, parse_id(&invite_id)?);
    state
        .store
        .revoke_invite(&actor(&p, &state, &rid), id, invite_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create (or replace) the public share link; its token is shown once.
#[utoipa::path(post, path = "/assessments/{id}/share-link", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id")),
    responses((status = 201, description = "The link", body = ShareLinkResponse),
              (status = 409, description = "`invalid_transition`: the assessment is closed or archived", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn create_share_link(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    _: crate::extract::NoBody,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    // Registration takes published assessments only: a link made for a closed or archived
    // one would be dead on arrival. (One closing meanwhile leaves a dead link, as a close
    // after the link was made does.)
    let (current, _) = state
        .store
        .assessment(p.org_id, id)
        .await?
        .ok_or_else(not_found)?;
    if matches!(
        current.status,
        AssessmentStatus::Closed | AssessmentStatus::Archived
    ) {
        return Err(ApiError::new(
            codes::INVALID_TRANSITION,
            format!(
                "the assessment is {}: it takes no registrations, so it gets no share link",
                current.status.as_str()
            ),
        ));
    }
    let (token, hash) = new_token("tls_")?;
    let body = ShareLinkResponse {
        register_url: format!("/api/v1/public/share/{token}/register"),
        token,
    };
    let render = |_: &()| json_response(StatusCode::CREATED, &[], &body);
    // The token is shown once: the replayable copy is sealed to the caller's token.
    let sealed = |_: &()| idem.seal(render(&()));
    state
        .store
        .set_share_link(&actor(&p, &state, &rid), id, Some(hash), idem.with(&sealed))
        .await?;
    Ok(Stored(render(&())).into_response())
}

/// Remove the share link. Idempotent.
#[utoipa::path(delete, path = "/assessments/{id}/share-link", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id")),
    responses((status = 204, description = "Removed")))]
async fn delete_share_link(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
) -> Result<StatusCode, ApiError> {
    p.require(Role::Admin)?;
    state
        .store
        .set_share_link(&actor(&p, &state, &rid), id, None, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- results ----

fn submission_filter(query: &SubmissionListQuery) -> Result<SubmissionFilter, ApiError> {
    let review_status = query
        .review_status
        .as_deref()
        .map(|s| {
            SubmissionStatus::parse(s).ok_or_else(|| {
                ApiError::field(
                    "/query/review_status",
                    "invalid_value",
                    "must be submitted, verified, approved, rejected or archived",
                )
            })
        })
        .transpose()?;
    Ok(SubmissionFilter {
        passed: query.passed,
        review_status,
    })
}

/// Submissions of an assessment, filtered by outcome and review status.
#[utoipa::path(get, path = "/assessments/{id}/submissions", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"), SubmissionListQuery),
    responses((status = 200, description = "Submissions", body = SubmissionList)))]
async fn list_submissions(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<SubmissionListQuery>,
) -> Result<Json<SubmissionList>, ApiError> {
    p.require(Role::Admin)?;
    let filter = submission_filter(&query)?;
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    let page = state.store.submissions(p.org_id, id, &filter, page).await?;
    Ok(Json(SubmissionList::from_page(page, |s| {
        SubmissionView::from(&s)
    })))
}

/// A cell that a spreadsheet would evaluate as a formula (`=`, `+`, `-`, `@`, tab, CR) is
/// prefixed with `'` so it shows as text.
pub fn spreadsheet_safe(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

/// All submissions of an assessment as CSV (formula-escaped), in parts of at most 100,000
/// rows: a part with more after it has `Link: <…?cursor=…>; rel="next"`.
#[utoipa::path(get, path = "/assessments/{id}/results.csv", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Assessment id"), ResultsCsvQuery),
    responses((status = 200, description = "CSV; `Link` with `rel=\"next\"` when more rows follow", content_type = "text/csv", body = String)))]
async fn results_csv(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<ResultsCsvQuery>,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let first: trueline_store::PageRequest<Uuid> = ListQuery {
        limit: None,
        cursor: query.cursor,
    }
    .page()?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = [
        "submission_id",
        "email",
        "earned",
        "total",
        "percent",
        "passed",
        "review_status",
        "auto_submitted",
        "submitted_at",
    ];
    writer.write_record(header).map_err(ApiError::internal)?;
    let mut after = first.after;
    let mut rows = 0;
    let mut more = None;
    loop {
        let page = state
            .store
            .submissions(
                p.org_id,
                id,
                &SubmissionFilter::default(),
                trueline_store::PageRequest { limit: 200, after },
            )
            .await?;
        for s in &page.items {
            let submitted = s
                .submitted_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let record = [
                s.id.to_string(),
                spreadsheet_safe(&s.email),
                s.earned.to_string(),
                s.total.to_string(),
                percent(s.earned, s.total),
                s.passed.to_string(),
                s.review_status.as_str().to_owned(),
                s.auto_submitted.to_string(),
                submitted,
            ];
            writer.write_record(&record).map_err(ApiError::internal)?;
            rows += 1;
        }
        match page.next {
            Some(next) if rows < RESULTS_CSV_ROWS_MAX => after = Some(next),
            // Never a silent cut: the next part is named.
            Some(next) => {
                more = Some(next);
                break;
            }
            None => break,
        }
    }
    let body = writer.into_inner().map_err(ApiError::internal)?;
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"results.csv\"",
            ),
        ],
        body,
    )
        .into_response();
    if let Some(next) = more {
        let link = format!(
            "</api/v1/assessments/{id}/results.csv?cursor={}>; rel=\"next\"",
            crate::pagination::encode_cursor(&next)
        );
        response.headers_mut().insert(
            header::LINK,
            axum::http::HeaderValue::from_str(&link).map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

/// One submission with its per-question breakdown, answers and review trail.
#[utoipa::path(get, path = "/submissions/{id}", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Submission id")),
    responses((status = 200, description = "The submission", body = SubmissionDetail)))]
async fn get_submission(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
) -> Result<Json<SubmissionDetail>, ApiError> {
    p.require(Role::Admin)?;
    let s = state
        .store
        .submission(p.org_id, id)
        .await?
        .ok_or_else(|| ApiError::new(codes::NOT_FOUND, "submission not found"))?;
    Ok(Json(SubmissionDetail::from(&s)))
}

/// Move a submission through review: `submitted → verified → approved | rejected → archived`.
#[utoipa::path(post, path = "/submissions/{id}/review", tag = "assessments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Submission id")),
    request_body = ReviewRequest,
    responses((status = 200, description = "Reviewed", body = SubmissionDetail),
              (status = 409, description = "`invalid_transition`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn review_submission(
    State(state): State<AppState>,
    p: Principal,
    PathId(id): PathId,
    Extension(rid): Extension<RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let decision = ReviewDecision::parse(&body.decision).ok_or_else(|| {
            ApiError::field(
                "/decision",
                "invalid_value",
                "must be verify, approve, reject or archive",
            )
        })?;
        let note = match &body.note {
            Some(n) => Some(
                trueline_core::assessments::text::clean_multiline(n, REVIEW_NOTE_CHARS_MAX, true)
                    .map_err(|e| ApiError::validation(vec![e.at("/note")]))?,
            )
            .flatten(),
            None => None,
        };
        let render =
            |s: &Submission| json_response(StatusCode::OK, &[], &SubmissionDetail::from(s));
        let s = state
            .store
            .review_submission(
                &actor(&p, &state, &rid),
                id,
                decision,
                note,
                idem.with(&render),
            )
            .await?;
        Ok(render(&s))
    }
    .await;
    log("review", &result);
    Ok(Stored(result?).into_response())
}

#[cfg(test)]
mod if_match_tests {
    use super::if_match;
    use axum::http::{HeaderMap, HeaderValue, header};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Arbitrary header bytes never panic: the answer is `*`, one revision, or a refusal.
        #[test]
        fn if_match_never_panics(raw in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                let mut headers = HeaderMap::new();
                headers.insert(header::IF_MATCH, value);
                if let Ok(Some(revision)) = if_match(&headers, true) {
                    let text = String::from_utf8_lossy(&raw);
                    let tag = revision.to_string();
                    prop_assert!(text.contains(&tag), "{} not in {}", tag, text);
                }
            }
        }

        #[test]
        fn if_match_round_trips(revision in any::<u64>(), weak in any::<bool>()) {
            let mut headers = HeaderMap::new();
            let raw = format!("{}\"r{revision}\"", if weak { "W/" } else { "" });
            headers.insert(header::IF_MATCH, HeaderValue::from_str(&raw).unwrap());
            if weak {
                prop_assert!(if_match(&headers, true).is_err(), "a weak tag never matches");
            } else {
                prop_assert_eq!(if_match(&headers, true).unwrap(), Some(revision));
            }
        }
    }
}

#[cfg(test)]
mod percent_tests {
    use super::percent;
    use proptest::prelude::*;
    use trueline_core::assessments::scoring::PassingScorePercent;
    use trueline_core::assessments::scoring::passes;

    #[test]
    fn the_shown_percent_is_rounded_down() {
        assert_eq!(percent(136, 203), "66.99");
        assert_eq!(percent(5, 6), "83.33");
        assert_eq!(percent(2, 3), "66.66");
        assert_eq!(percent(3, 3), "100.00");
        assert_eq!(percent(0, 0), "0.00");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// The shown percent reaches the passing score exactly when the submission passes.
        #[test]
        fn the_shown_percent_reaches_the_pass_mark_exactly_when_passed(
            total in 1u64..1_000_000,
            share in 0.0f64..=1.0,
            mark in 0i64..=100,
        ) {
            let earned = ((total as f64) * share) as u64;
            let shown = percent(earned, total);
            let (whole, hundredths) = shown.split_once('.').unwrap();
            let shown: u64 = whole.parse::<u64>().unwrap() * 100 + hundredths.parse::<u64>().unwrap();
            let mark_percent = PassingScorePercent::new(mark).unwrap();
            prop_assert_eq!(shown >= mark as u64 * 100, passes(earned, total, mark_percent));
        }
    }
}

#[cfg(test)]
mod import_tests {
    use super::*;
    use std::time::Duration;
    use trueline_import::RowError;

    #[test]
    fn a_problem_lists_the_first_100_row_errors_and_counts_them_all() {
        let rows = |n: u64| {
            ImportError::Rows(
                (0..n)
                    .map(|i| RowError {
                        row: i + 2,
                        column: "points".into(),
                        code: "invalid_type",
                        detail: "must be a whole number".into(),
                    })
                    .collect(),
            )
        };
        let problem = import_error(rows(250));
        assert_eq!(problem.code.code, codes::INVALID_IMPORT.code);
        assert_eq!(problem.errors.len(), IMPORT_ROW_ERRORS_LISTED_MAX);
        assert_eq!(problem.errors[0].field, "/rows/2/points");
        assert_eq!(problem.errors[99].field, "/rows/101/points");
        assert_eq!(
            problem.detail,
            "250 row error(s), the first 100 listed; nothing was imported"
        );
        let problem = import_error(rows(100));
        assert_eq!(problem.errors.len(), 100);
        assert_eq!(problem.detail, "100 row error(s); nothing was imported");
    }

    #[tokio::test]
    async fn an_import_waits_briefly_for_a_parse_slot_then_is_told_to_retry() {
        let slots = tokio::sync::Semaphore::new(1);
        let wait = Duration::from_millis(20);
        let held = parse_slot(&slots, wait).await.expect("a free slot");
        let refused = parse_slot(&slots, wait).await.expect_err("no free slot");
        assert_eq!(refused.code.code, codes::OVERLOADED.code);
        let headers = refused.headers.as_deref().cloned().unwrap_or_default();
        assert!(headers.iter().any(|(name, _)| name == header::RETRY_AFTER));
        drop(held);
        let _freed = parse_slot(&slots, wait)
            .await
            .expect("the slot is free again");
    }

    #[tokio::test]
    async fn a_raw_upload_whose_body_fails_to_arrive_is_an_invalid_upload() {
        let chunks = [
            Ok(Bytes::from_static(b"type,prompt,correct\n")),
            Err(std::io::Error::other("connection reset")),
        ];
        let request = Request::builder()
            .header(header::CONTENT_TYPE, "text/csv")
            .body(axum::body::Body::from_stream(futures_util::stream::iter(
                chunks,
            )))
            .expect("a request");
        let Err(e) = Upload::from_request(request, &()).await else {
            panic!("the upload is refused");
        };
        assert_eq!(e.code.code, codes::VALIDATION_FAILED.code);
        assert_eq!(e.errors[0].field, "/file");
        assert_eq!(e.errors[0].code, "invalid_upload");
    }
}
