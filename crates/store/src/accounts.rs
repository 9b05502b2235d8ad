//! Users, organizations, memberships and API tokens.

use crate::{Idempotency, Page, PageRequest, StoreError, StoreHealth};
use time::OffsetDateTime;
use trueline_core::accounts::{Email, OrganizationName, Role};
use trueline_core::ids::{OrgId, TokenId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub created_at: OffsetDateTime,
}

/// An organization as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationMembership {
    pub organization: Organization,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub joined_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A token to store. Only the SHA-256 of the secret is ever persisted.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: TokenId,
    pub hash: [u8; 32],
    pub user_id: UserId,
    pub org_id: OrgId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Everything signup creates, atomically: the user, their organization, the owner
/// membership and the first token.
#[derive(Debug, Clone)]
pub struct NewSignup {
    pub user_id: UserId,
    pub email: Email,
    pub password_hash: String,
    pub org_id: OrgId,
    pub org_name: OrganizationName,
    pub token: NewToken,
    pub now: OffsetDateTime,
    /// The request's id, for the audit record.
    pub request_id: String,
}

#[derive(Debug, Clone)]
pub struct SignupRecord {
    pub user: User,
    pub organization: Organization,
}

/// What login needs to check a password.
#[derive(Clone)]
pub struct Credentials {
    pub user_id: UserId,
    pub password_hash: String,
}

/// Without the hash: secrets never reach a `Debug` print (CONVENTIONS).
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// The identity behind a presented token, as stored. The caller decides about expiry and
/// revocation so it can answer with the precise reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: TokenId,
    pub user_id: UserId,
    pub org_id: OrgId,
    /// The member's role now (not when the token was issued): demotions apply at once.
    pub role: Role,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// One of a user's tokens, as its holder may see it (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: TokenId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Without the hashes: secrets never reach a `Debug` print (CONVENTIONS).
impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChange")
            .field("user_id", &self.user_id)
            .field("org_id", &self.org_id)
            .field("keep", &self.keep)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// The refusal of a password change whose current password is wrong (or no longer current).
pub fn wrong_password() -> trueline_core::DomainError {
    trueline_core::DomainError::Validation(vec![trueline_core::validation::FieldError::new(
        "/current_password",
        "wrong_password",
        "is not your current password",
    )])
}

/// Which of a user's tokens in an organization to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSelection {
    /// This one (if it is theirs).
    One(TokenId),
    /// Every one but this (the token of the request).
    AllBut(TokenId),
}

/// A password change, the caller's password checked already (outside any transaction: the
/// check is a slow hash).
#[derive(Clone)]
pub struct PasswordChange {
    pub user_id: UserId,
    /// The organization of the request: where the change's audit record goes.
    pub org_id: OrgId,
    /// The token of the request: the one token of the user left working.
    pub keep: TokenId,
    /// The hash the caller's current password was checked against.
    pub checked_hash: String,
    pub new_hash: String,
    pub request_id: String,
    pub now: OffsetDateTime,
}

/// Who is changing something, in which organization, as part of which request.
#[derive(Debug, Clone)]
pub struct Actor {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub role: Role,
    pub request_id: String,
    pub now: OffsetDateTime,
}

#[async_trait::async_trait]
pub trait AccountStore: Send + Sync {
    /// Liveness of the database for `/readyz`.
    async fn health(&self) -> StoreHealth;

    /// Creates user, organization, owner membership and token in one transaction.
    /// `EmailTaken` if the email is registered already.
    async fn sign_up(&self, signup: NewSignup) -> Result<SignupRecord, StoreError>;

    async fn credentials(&self, email: &Email) -> Result<Option<Credentials>, StoreError>;

    /// Stores a token for an existing membership (`NotFound("organization")` if the user is
    /// not a member of `org_id`), with its audit record `token.issued` (and the event
    /// `accounts.token.issued`) in the same transaction. `checked_password_hash`: the hash a
    /// login checked the password against; if the password changed since (a change
    /// committed between the check and this), `InvalidCredentials` and nothing is stored,
    /// so a login racing a password change cannot keep a token the change did not revoke.
    async fn create_token(
        &self,
        token: NewToken,
        checked_password_hash: Option<&str>,
        request_id: &str,
    ) -> Result<(), StoreError>;

    /// Finds a token by the hash of its secret, joined with the member's current role.
    /// `None` if unknown or if the membership no longer exists.
    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;

    /// The user's tokens in the organization that still work at `now` (neither revoked nor
    /// expired), ordered by id.
    async fn tokens_of(
        &self,
        user_id: UserId,
        org_id: OrgId,
        now: OffsetDateTime,
        page: PageRequest<TokenId>,
    ) -> Result<Page<TokenInfo, TokenId>, StoreError>;

    /// Revokes the user's working tokens (neither revoked nor expired at `now`) in the
    /// organization that `which` selects, each
    /// with its `token.revoked` record (as [`AccountStore::revoke_token`]), in one
    /// transaction; returns how many. Another user's token is never selected.
    async fn revoke_tokens_of(
        &self,
        user_id: UserId,
        org_id: OrgId,
        which: TokenSelection,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// Marks a token revoked (idempotent: revoking twice keeps the first instant), with its
    /// audit record `token.revoked` (and the event `accounts.token.revoked`) in the same
    /// transaction; a second revocation changes nothing and records nothing.
    async fn revoke_token(
        &self,
        id: TokenId,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Sets the user's password hash to `new_hash` if it is still `checked_hash` (a change
    /// that landed since the check makes the caller's password stale: `Validation` at
    /// `/current_password`, `wrong_password`, and nothing changes), revokes every working
    /// token of the user in every organization but `keep` (each with its `token.revoked`
    /// record), and records `password.changed` (and the event `accounts.password.changed`)
    /// in the request's organization, in one transaction; returns how many tokens it revoked.
    async fn change_password(&self, change: PasswordChange) -> Result<u64, StoreError>;

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// The caller's membership in one organization, if any.
    async fn organization_of(
        &self,
        user_id: UserId,
        org_id: OrgId,
    ) -> Result<Option<OrganizationMembership>, StoreError>;

    /// Creates an organization with `user_id` as its owner.
    async fn create_organization(
        &self,
        user_id: UserId,
        org_id: OrgId,
        name: OrganizationName,
        now: OffsetDateTime,
        request_id: &str,
        idempotency: Option<Idempotency<'_, Organization>>,
    ) -> Result<Organization, StoreError>;

    /// Organizations the user belongs to, ordered by id.
    async fn organizations_of(
        &self,
        user_id: UserId,
        page: PageRequest<OrgId>,
    ) -> Result<Page<OrganizationMembership, OrgId>, StoreError>;

    /// The organization a login without one lands in: the user's oldest membership (for a
    /// user who signed up, the organization made at signup). Not the smallest id: anyone
    /// can add an existing account to an organization of theirs, and an organization made
    /// before the user's own would otherwise catch every plain login.
    async fn default_organization_of(&self, user_id: UserId) -> Result<Option<OrgId>, StoreError>;

    /// Members of the actor's organization, ordered by user id.
    async fn members(
        &self,
        org_id: OrgId,
        page: PageRequest<UserId>,
    ) -> Result<Page<Member, UserId>, StoreError>;

    async fn member(&self, org_id: OrgId, user_id: UserId) -> Result<Option<Member>, StoreError>;

    /// Adds the user registered under `email` with `role`. Authorization is decided inside the
    /// transaction. `NotFound("user")`, `AlreadyMember`, `InsufficientRole`.
    async fn add_member(
        &self,
        actor: &Actor,
        email: &Email,
        role: Role,
        idempotency: Option<Idempotency<'_, Member>>,
    ) -> Result<Member, StoreError>;

    /// Changes a member's role. `NotFound("member")`, `InsufficientRole`, `LastOwner`.
    /// Race-proof: two owners demoting each other concurrently leave one owner.
    async fn change_role(
        &self,
        actor: &Actor,
        user_id: UserId,
        role: Role,
        idempotency: Option<Idempotency<'_, Member>>,
    ) -> Result<Member, StoreError>;

    /// Removes a member. `Ok(false)` if they were not a member (idempotent delete);
    /// `InsufficientRole`, `LastOwner`.
    async fn remove_member(&self, actor: &Actor, user_id: UserId) -> Result<bool, StoreError>;
}

/// What a token's audit records say of it (`token.issued`, `token.revoked`, and signup's
/// `organization.created`): its expiry; never its secret or hash.
pub fn token_audit_detail(expires_at: OffsetDateTime) -> serde_json::Value {
    let expires_at = expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({ "expires_at": expires_at })
}
