//! Accounts and tenancy: signup, login tokens, `me`, organizations and members.

use crate::auth::issue_token;
use crate::extract::{ApiJson, ApiQuery, PathId, Principal};
use crate::idempotency::{Idem, Stored, json_response};
use crate::list_type;
use crate::pagination::ListQuery;
use crate::problem::{ApiError, codes};
use crate::state::AppState;
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use time::OffsetDateTime;
use trueline_core::accounts::{Email, OrganizationName, Password, Role};
use trueline_core::ids::{OrgId, TokenId, UserId};
use trueline_core::validation::FieldError;
use trueline_store::{
    Actor, Member, NewSignup, NewToken, Organization, OrganizationMembership, PasswordChange,
    TokenSelection, User,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Routes that need no token.
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(create_token))
}

/// The password change: it needs a token, but it stays out of the idempotency layer, which
/// stores a fingerprint (an unsalted hash) of the request body, here the passwords.
pub fn password_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(change_password))
}

/// Routes that need a token.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(revoke_current_token))
        .routes(routes!(list_tokens, revoke_other_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(me))
        .routes(routes!(create_organization, list_organizations))
        .routes(routes!(list_members, add_member))
        .routes(routes!(change_member_role, remove_member))
}

// ---- wire types ----

/// A member's role: `owner > admin > member > viewer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => RoleName::Owner,
            Role::Admin => RoleName::Admin,
            Role::Member => RoleName::Member,
            Role::Viewer => RoleName::Viewer,
        }
    }
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Owner => Role::Owner,
            RoleName::Admin => Role::Admin,
            RoleName::Member => Role::Member,
            RoleName::Viewer => Role::Viewer,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id.0,
            email: u.email,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrganizationView {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The caller's role in this organization.
    pub role: RoleName,
}

impl OrganizationView {
    fn of(o: Organization, role: Role) -> Self {
        Self {
            id: o.id.0,
            name: o.name,
            created_at: o.created_at,
            role: role.into(),
        }
    }
}

impl From<OrganizationMembership> for OrganizationView {
    fn from(m: OrganizationMembership) -> Self {
        Self::of(m.organization, m.role)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// The token's id (to list or revoke it later; not a secret).
    pub id: Uuid,
    /// The bearer token. Shown once; only its hash is stored.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub organization_id: Uuid,
    pub user_id: Uuid,
}

/// One of the caller's working tokens in this organization (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenSummary {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The token of this request.
    pub current: bool,
}

list_type!(TokenList, TokenSummary);

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevokedTokens {
    /// How many tokens were revoked.
    pub revoked: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub user_id: Uuid,
    pub email: String,
    pub role: RoleName,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id.0,
            email: m.email,
            role: m.role.into(),
            joined_at: m.joined_at,
            updated_at: m.updated_at,
        }
    }
}

list_type!(OrganizationList, OrganizationView);
list_type!(MemberList, MemberView);

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    pub email: String,
    /// At least 10 characters.
    pub password: String,
    pub organization_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignupResponse {
    pub user: UserView,
    pub organization: OrganizationView,
    pub token: TokenView,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// The organization the token acts in; default: the first one you belong to.
    pub organization_id: Option<Uuid>,
}

#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    /// At least 10 characters, at most 1024 bytes.
    pub new_password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PasswordChanged {
    /// Your other tokens revoked, in every organization (the one of this request works on).
    pub tokens_revoked: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub organization: OrganizationView,
    pub token_id: Uuid,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganizationRequest {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The email of an existing account.
    pub email: String,
    pub role: RoleName,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    pub role: RoleName,
}

// ---- helpers ----

/// Collects every invalid field before failing, so a client fixes all of them at once.
struct Fields(Vec<FieldError>);

impl Fields {
    fn check<T>(
        &mut self,
        field: &str,
        result: Result<T, trueline_core::validation::Invalid>,
    ) -> Option<T> {
        result.map_err(|e| self.0.push(e.at(field))).ok()
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}

/// Logs `mutation.accounts.<action>.success|rejected`.
fn log_outcome<T>(action: &str, result: &Result<T, ApiError>) {
    match result {
        Ok(_) => tracing::info!(event = %format!("mutation.accounts.{action}.success")),
        Err(e) => tracing::info!(
            event = %format!("mutation.accounts.{action}.rejected"),
            code = e.code.code,
        ),
    }
}

fn new_token(
    state: &AppState,
    user_id: UserId,
    org_id: OrgId,
) -> Result<(NewToken, String), ApiError> {
    let issued = issue_token().map_err(ApiError::internal)?;
    let now = state.clock.now();
    let ttl = time::Duration::try_from(state.settings.token_ttl).map_err(ApiError::internal)?;
    let token = NewToken {
        id: TokenId::new(),
        hash: issued.hash,
        user_id,
        org_id,
        created_at: now,
        expires_at: now + ttl,
    };
    Ok((token, issued.secret))
}

fn token_view(token: &NewToken, secret: String) -> TokenView {
    TokenView {
        id: token.id.0,
        token: secret,
        token_type: "Bearer".into(),
        expires_at: token.expires_at,
        organization_id: token.org_id.0,
        user_id: token.user_id.0,
    }
}

fn actor(state: &AppState, p: &Principal, request_id: &str) -> Actor {
    Actor {
        org_id: p.org_id,
        user_id: p.user_id,
        role: p.role,
        request_id: request_id.to_owned(),
        now: state.clock.now(),
    }
}

/// The client address as the limits key it (an IPv6 client: its /64; see
/// [`crate::limits::client_key`]), when the server was started with connection info.
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| crate::limits::client_key(c.0.ip())),
        ))
    }
}

// ---- handlers ----

/// Create an account, its first organization (you become `owner`) and a token.
#[utoipa::path(post, path = "/auth/signup", tag = "accounts", request_body = SignupRequest,
    responses((status = 201, description = "Account created", body = SignupResponse),
              (status = 409, description = "`email_taken`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn signup(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    ApiJson(body): ApiJson<SignupRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let result = async {
        let mut fields = Fields(Vec::new());
        let email = fields.check("/email", Email::parse(&body.email));
        let password = fields.check("/password", Password::parse(body.password));
        let org_name = fields.check(
            "/organization_name",
            OrganizationName::parse(&body.organization_name),
        );
        fields.finish()?;
        let (Some(email), Some(password), Some(org_name)) = (email, password, org_name) else {
            return Err(ApiError::internal("validated fields missing"));
        };
        let password_hash = state
            .passwords
            .hash(&password)
            .await
            .map_err(ApiError::internal)?;
        let user_id = UserId::new();
        let org_id = OrgId::new();
        let (token, secret) = new_token(&state, user_id, org_id)?;
        let record = state
            .store
            .sign_up(NewSignup {
                user_id,
                email,
                password_hash,
                org_id,
                org_name,
                token: token.clone(),
                now: token.created_at,
                request_id: request_id.0.clone(),
            })
            .await?;
        tracing::info!(event = "accounts.signup", user_id = %user_id, org_id = %org_id);
        Ok(SignupResponse {
            user: record.user.into(),
            organization: OrganizationView::of(record.organization, Role::Owner),
            token: token_view(&token, secret),
        })
    }
    .await;
    log_outcome("signup", &result);
    Ok((StatusCode::CREATED, Json(result?)))
}

/// Log in: exchange email and password for a token scoped to one organization.
#[utoipa::path(post, path = "/auth/tokens", tag = "accounts", request_body = LoginRequest,
    responses((status = 201, description = "Token issued", body = TokenView),
              (status = 401, description = "`invalid_credentials`", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 404, description = "`not_found`: not a member of that organization", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn create_token(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let email =
        Email::parse(&body.email).map_err(|e| ApiError::validation(vec![e.at("/email")]))?;
    // Failed logins are limited per (email, client address) to the allowance, per email from
    // anywhere to 10× (so that strangers' guesses cannot lock the owner of an email out with a
    // handful of requests) and per client address to 4× (offices and NAT share one). Each
    // attempt is counted before the password is checked (and taken back if it was right), so
    // parallel guesses cannot all slip past the limit while the first ones are checked.
    let keys: Vec<(String, u32)> = match ip {
        Some(ip) => vec![
            (format!("login:{email}|{ip}"), 1),
            (format!("email:{email}"), 10),
            (format!("ip:{ip}"), 4),
        ],
        None => vec![(format!("email:{email}"), 1)],
    };
    let attempt = match state.login_limiter.begin(keys) {
        Ok(attempt) => attempt,
        Err(wait) => {
            tracing::info!(event = "auth.login_throttled", retry_after_s = wait);
            return Err(ApiError::new(
                codes::RATE_LIMITED,
                "too many failed logins; wait before retrying",
            )
            .retry_after(wait));
        }
    };
    let credentials = state.store.credentials(&email).await?;
    let verified = state
        .passwords
        .verify(
            &body.password,
            credentials.as_ref().map(|c| c.password_hash.clone()),
        )
        .await;
    let Some(credentials) = credentials.filter(|_| verified) else {
        attempt.failed();
        tracing::info!(event = "auth.login_failed");
        return Err(ApiError::new(
            codes::INVALID_CREDENTIALS,
            "email or password is wrong",
        ));
    };
    // Right from this client: its own failures for this email are forgotten (as before the
    // per-client key); the wider keys only take this attempt back.
    attempt.succeeded();
    let org_id = match body.organization_id {
        Some(id) => {
            let org = state
                .store
                .organization_of(credentials.user_id, OrgId(id))
                .await?;
            org.ok_or_else(|| ApiError::new(codes::NOT_FOUND, "organization not found"))?
                .organization
                .id
        }
        None => state
            .store
            .default_organization_of(credentials.user_id)
            .await?
            .ok_or_else(|| {
                ApiError::new(codes::NOT_FOUND, "you are not a member of any organization")
            })?,
    };
    let (token, secret) = new_token(&state, credentials.user_id, org_id)?;
    state
        .store
        .create_token(
            token.clone(),
            Some(&credentials.password_hash),
            &request_id.0,
        )
        .await?;
    tracing::info!(event = "auth.token_issued", user_id = %credentials.user_id, org_id = %org_id);
    Ok((StatusCode::CREATED, Json(token_view(&token, secret))))
}

/// Revoke the token used for this request.
#[utoipa::path(delete, path = "/auth/tokens/current", tag = "accounts", security(("bearer" = [])),
    responses((status = 204, description = "Token revoked")))]
async fn revoke_current_token(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    p: Principal,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .revoke_token(p.token_id, &request_id.0, state.clock.now())
        .await?;
    tracing::info!(event = "auth.token_revoked", token_id = %p.token_id);
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's working tokens in this organization (neither revoked nor expired), to find
/// one that leaked.
#[utoipa::path(get, path = "/auth/tokens", tag = "accounts", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "The caller's tokens", body = TokenList)))]
async fn list_tokens(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TokenList>, ApiError> {
    let page = state
        .store
        .tokens_of(p.user_id, p.org_id, state.clock.now(), query.page()?)
        .await?;
    Ok(Json(TokenList::from_page(page, |t| TokenSummary {
        id: t.id.0,
        created_at: t.created_at,
        expires_at: t.expires_at,
        current: t.id == p.token_id,
    })))
}

/// Revoke one of the caller's tokens in this organization. Idempotent: an id that is not one
/// of the caller's working tokens (revoked already, another user's, unknown) changes nothing
/// and answers 204 as well.
#[utoipa::path(delete, path = "/auth/tokens/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Token id")),
    responses((status = 204, description = "Revoked (or nothing to revoke)")))]
async fn revoke_token(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    p: Principal,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let revoked = state
        .store
        .revoke_tokens_of(
            p.user_id,
            p.org_id,
            TokenSelection::One(TokenId(id)),
            &request_id.0,
            state.clock.now(),
        )
        .await?;
    if revoked > 0 {
        tracing::info!(event = "auth.token_revoked", token_id = %id);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke every token of the caller in this organization but the one of this request (after
/// a leak: log in, call this, and only the new token works).
#[utoipa::path(delete, path = "/auth/tokens", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, description = "How many were revoked", body = RevokedTokens)))]
async fn revoke_other_tokens(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    p: Principal,
) -> Result<Json<RevokedTokens>, ApiError> {
    let revoked = state
        .store
        .revoke_tokens_of(
            p.user_id,
            p.org_id,
            TokenSelection::AllBut(p.token_id),
            &request_id.0,
            state.clock.now(),
        )
        .await?;
    tracing::info!(event = "auth.tokens_revoked", revoked);
    Ok(Json(RevokedTokens { revoked }))
}

/// Change your password: give the current one and the new one. Every other token of yours,
/// in every organization, is revoked; the token of this request keeps working. A wrong
/// current password is `400` at `/current_password` (`wrong_password`); such guesses are
/// limited like failed logins (5 per token and 50 per account within 15 minutes, then
/// `429`).
#[utoipa::path(put, path = "/me/password", tag = "accounts", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses((status = 200, description = "Changed; how many other tokens were revoked", body = PasswordChanged)))]
async fn change_password(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    p: Principal,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<Json<PasswordChanged>, ApiError> {
    let new_password = Password::parse(body.new_password)
        .map_err(|e| ApiError::validation(vec![e.at("/new_password")]))?;
    // Someone holding a stolen token must not get unlimited guesses at the password behind
    // it: wrong current passwords count against the account like failed logins.
    // Per token (5 wrong guesses), and per account from all its tokens together (50): a
    // stolen token's guesses cannot lock the owner's own change out, and many tokens cannot
    // guess without bound either. Logins have their own keys.
    let attempt = match state.login_limiter.begin(vec![
        (format!("password:{}", p.token_id), 1),
        (format!("password-user:{}", p.user_id), 10),
    ]) {
        Ok(attempt) => attempt,
        Err(wait) => {
            tracing::info!(
                event = "auth.password_change_throttled",
                user_id = %p.user_id,
                retry_after_s = wait
            );
            return Err(ApiError::new(
                codes::RATE_LIMITED,
                "too many wrong passwords; wait before retrying",
            )
            .retry_after(wait));
        }
    };
    let user = state
        .store
        .user(p.user_id)
        .await?
        .ok_or_else(|| ApiError::new(codes::INVALID_TOKEN, "user gone"))?;
    let credentials = match Email::parse(&user.email) {
        Ok(email) => state.store.credentials(&email).await?,
        Err(_) => None,
    };
    let verified = state
        .passwords
        .verify(
            &body.current_password,
            credentials.as_ref().map(|c| c.password_hash.clone()),
        )
        .await;
    let Some(credentials) = credentials.filter(|c| verified && c.user_id == p.user_id) else {
        attempt.failed();
        tracing::info!(event = "auth.password_change_failed", user_id = %p.user_id);
        return Err(trueline_store::wrong_password().into());
    };
    attempt.succeeded();
    let new_hash = state
        .passwords
        .hash(&new_password)
        .await
        .map_err(ApiError::internal)?;
    let tokens_revoked = state
        .store
        .change_password(PasswordChange {
            user_id: p.user_id,
            org_id: p.org_id,
            keep: p.token_id,
            checked_hash: credentials.password_hash,
            new_hash,
            request_id: request_id.0,
            now: state.clock.now(),
        })
        .await
        .inspect_err(|_| {
            tracing::info!(event = "auth.password_change_failed", user_id = %p.user_id);
        })?;
    tracing::info!(event = "auth.password_changed", user_id = %p.user_id, tokens_revoked);
    Ok(Json(PasswordChanged { tokens_revoked }))
}

/// Who am I: the user, the organization the token acts in, and my role there.
#[utoipa::path(get, path = "/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = MeResponse)))]
async fn me(State(state): State<AppState>, p: Principal) -> Result<Json<MeResponse>, ApiError> {
    let user = state
        .store
        .user(p.user_id)
        .await?
        .ok_or_else(|| ApiError::new(codes::INVALID_TOKEN, "user gone"))?;
    let org = state
        .store
        .organization_of(p.user_id, p.org_id)
        .await?
        .ok_or_else(|| ApiError::new(codes::INVALID_TOKEN, "membership gone"))?;
    Ok(Json(MeResponse {
        user: user.into(),
        organization: org.into(),
        token_id: p.token_id.0,
    }))
}

/// Create another organization; you become its owner. Log in with its id to act in it.
#[utoipa::path(post, path = "/organizations", tag = "accounts", security(("bearer" = [])),
    request_body = CreateOrganizationRequest,
    responses((status = 201, description = "Organization created", body = OrganizationView)))]
async fn create_organization(
    State(state): State<AppState>,
    p: Principal,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<CreateOrganizationRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        let name = OrganizationName::parse(&body.name)
            .map_err(|e| ApiError::validation(vec![e.at("/name")]))?;
        let render = |org: &Organization| {
            json_response(
                StatusCode::CREATED,
                &[],
                &OrganizationView::of(org.clone(), Role::Owner),
            )
        };
        let org = state
            .store
            .create_organization(
                p.user_id,
                OrgId::new(),
                name,
                state.clock.now(),
                &request_id.0,
                idem.with(&render),
            )
            .await?;
        Ok(render(&org))
    }
    .await;
    log_outcome("organization_created", &result);
    Ok(Stored(result?).into_response())
}

/// The organizations you belong to, with your role in each.
#[utoipa::path(get, path = "/organizations", tag = "accounts", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "Your organizations", body = OrganizationList)))]
async fn list_organizations(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<OrganizationList>, ApiError> {
    let page = state
        .store
        .organizations_of(p.user_id, query.page()?)
        .await?;
    Ok(Json(OrganizationList::from_page(
        page,
        OrganizationView::from,
    )))
}

/// Members of the token's organization.
#[utoipa::path(get, path = "/members", tag = "accounts", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "Members", body = MemberList)))]
async fn list_members(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<MemberList>, ApiError> {
    let page = state.store.members(p.org_id, query.page()?).await?;
    Ok(Json(MemberList::from_page(page, MemberView::from)))
}

/// Add an existing account to the organization (admin or owner; only owners add owners).
#[utoipa::path(post, path = "/members", tag = "accounts", security(("bearer" = [])),
    request_body = AddMemberRequest,
    responses((status = 201, description = "Member added", body = MemberView),
              (status = 404, description = "`not_found`: no account has that email", body = crate::problem::Problem, content_type = "application/problem+json"),
              (status = 409, description = "`already_member`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn add_member(
    State(state): State<AppState>,
    p: Principal,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<AddMemberRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        p.require(Role::Admin)?;
        let email =
            Email::parse(&body.email).map_err(|e| ApiError::validation(vec![e.at("/email")]))?;
        let render =
            |m: &Member| json_response(StatusCode::CREATED, &[], &MemberView::from(m.clone()));
        let member = state
            .store
            .add_member(
                &actor(&state, &p, &request_id.0),
                &email,
                body.role.into(),
                idem.with(&render),
            )
            .await?;
        Ok(render(&member))
    }
    .await;
    log_outcome("member_added", &result);
    Ok(Stored(result?).into_response())
}

/// Change a member's role. An organization always keeps at least one owner.
#[utoipa::path(patch, path = "/members/{user_id}", tag = "accounts", security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "The member's user id")),
    request_body = ChangeRoleRequest,
    responses((status = 200, description = "Role changed", body = MemberView),
              (status = 409, description = "`last_owner`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn change_member_role(
    State(state): State<AppState>,
    p: Principal,
    PathId(user_id): PathId,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
    idem: Idem,
    ApiJson(body): ApiJson<ChangeRoleRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        let render = |m: &Member| json_response(StatusCode::OK, &[], &MemberView::from(m.clone()));
        let member = state
            .store
            .change_role(
                &actor(&state, &p, &request_id.0),
                UserId(user_id),
                body.role.into(),
                idem.with(&render),
            )
            .await?;
        Ok(render(&member))
    }
    .await;
    log_outcome("member_role_changed", &result);
    Ok(Stored(result?).into_response())
}

/// Remove a member (or leave, by removing yourself). Idempotent.
#[utoipa::path(delete, path = "/members/{user_id}", tag = "accounts", security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "The member's user id")),
    responses((status = 204, description = "Removed (or was not a member)"),
              (status = 409, description = "`last_owner`", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn remove_member(
    State(state): State<AppState>,
    p: Principal,
    PathId(user_id): PathId,
    axum::Extension(request_id): axum::Extension<crate::observe::RequestId>,
) -> Result<StatusCode, ApiError> {
    let result = state
        .store
        .remove_member(&actor(&state, &p, &request_id.0), UserId(user_id))
        .await
        .map_err(ApiError::from);
    log_outcome("member_removed", &result);
    result?;
    Ok(StatusCode::NO_CONTENT)
}
