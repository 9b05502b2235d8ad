//! `AccountStore` on PostgreSQL.

use crate::platform::{complete_idempotency, write_outbox};
use crate::{PgStore, constraint_name, db_error};
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use trueline_core::DomainError;
use trueline_core::accounts::{
    Email, MembershipChange, OrganizationName, Role, authorize_membership_change,
};
use trueline_core::ids::{AuditId, EventId, OrgId, TokenId, UserId};
use trueline_store::{
    AccountStore, Actor, Credentials, Idempotency, Member, NewSignup, NewToken, Organization,
    OrganizationMembership, OutboxEvent, Page, PageRequest, PasswordChange, SignupRecord,
    StoreError, StoreHealth, TokenInfo, TokenRecord, TokenSelection, User,
};
use uuid::Uuid;

/// A user's live tokens but one, locked (a password change revokes them): searched through
/// `api_tokens_by_user` (migration 20; before it, a scan of every token ever issued).
pub(crate) const LIVE_TOKENS_OF_USER: &str = "SELECT id FROM api_tokens
    WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND id <> $3
    ORDER BY id FOR UPDATE";

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

fn role_of(row: &PgRow, column: &str) -> Result<Role, StoreError> {
    let raw: String = row.try_get(column).map_err(db_error)?;
    raw.parse()
        .map_err(|_| StoreError::Internal(format!("unknown role {raw:?} in database")))
}

fn member_from(row: &PgRow) -> Result<Member, StoreError> {
    Ok(Member {
        user_id: UserId(row.try_get("user_id").map_err(db_error)?),
        email: row.try_get("email").map_err(db_error)?,
        role: role_of(row, "role")?,
        joined_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
    })
}

fn organization_from(row: &PgRow) -> Result<Organization, StoreError> {
    Ok(Organization {
        id: OrgId(row.try_get("id").map_err(db_error)?),
        name: row.try_get("name").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
    })
}

/// Translates the membership trigger's abort into the domain rule it protects.
fn membership_error(e: sqlx::Error) -> StoreError {
    match constraint_name(&e) {
        Some("organizations_last_owner") => DomainError::LastOwner.into(),
        Some("memberships_pkey") => DomainError::AlreadyMember.into(),
        _ => db_error(e),
    }
}

async fn insert_organization(
    tx: &mut Tx,
    id: OrgId,
    name: &OrganizationName,
    owner: UserId,
    now: OffsetDateTime,
) -> Result<Organization, StoreError> {
    sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id.0)
        .bind(name.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, created_at, updated_at)
         VALUES ($1, $2, 'owner', $3, $3)",
    )
    .bind(id.0)
    .bind(owner.0)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(membership_error)?;
    Ok(Organization {
        id,
        name: name.as_str().to_owned(),
        created_at: now,
    })
}

/// The immutable audit record of a change (see the `audit_log` triggers), in its transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn audit_row(
    tx: &mut Tx,
    org_id: OrgId,
    actor: UserId,
    request_id: &str,
    action: &str,
    subject: Option<Uuid>,
    detail: &serde_json::Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (id, org_id, actor_user_id, request_id, action, subject_id, detail, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(AuditId::new().0)
    .bind(org_id.0)
    .bind(actor.0)
    .bind(request_id)
    .bind(action)
    .bind(subject)
    .bind(detail)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn audit(
    tx: &mut Tx,
    org_id: OrgId,
    actor: UserId,
    request_id: &str,
    action: &str,
    subject: Option<Uuid>,
    detail: serde_json::Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    audit_row(tx, org_id, actor, request_id, action, subject, &detail, now).await?;
    // Every audited change is also a domain event (`accounts.member.added`, …).
    let mut payload = detail;
    if let Some(p) = payload.as_object_mut() {
        p.insert("actor_user_id".into(), serde_json::json!(actor));
        p.insert("subject_id".into(), serde_json::json!(subject));
        p.insert("request_id".into(), serde_json::json!(request_id));
    }
    let event = OutboxEvent {
        event_id: EventId::new(),
        org_id,
        event_type: format!("accounts.{action}"),
        stream: format!("organization-{org_id}"),
        payload: OutboxEvent::payload_of(&payload)?,
        created_at: now,
    };
    write_outbox(tx, &event).await
}

async fn insert_token(tx: &mut Tx, token: &NewToken) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, user_id, org_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token.id.0)
    .bind(&token.hash[..])
    .bind(token.user_id.0)
    .bind(token.org_id.0)
    .bind(token.created_at)
    .bind(token.expires_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| match constraint_name(&e) {
        Some("api_tokens_membership_fkey") => StoreError::not_found("organization"),
        _ => db_error(e),
    })?;
    Ok(())
}

/// Starts a transaction that serializes membership changes of one organization (the lock on
/// the organization row is what the last-owner trigger also takes). `NO KEY UPDATE`, the lock
/// an UPDATE of a non-key column takes: it serializes these changes but lets inserts that
/// reference the organization (tokens, audit rows, items) check their foreign key meanwhile;
/// `FOR UPDATE` made a login or logout of the member being removed deadlock with it.
async fn begin_membership_change(store: &PgStore, org_id: OrgId) -> Result<Tx, StoreError> {
    let mut tx = store.pool.begin().await.map_err(db_error)?;
    sqlx::query("SELECT 1 FROM organizations WHERE id = $1 FOR NO KEY UPDATE")
        .bind(org_id.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    Ok(tx)
}

/// The actor's role as of this transaction (the token's snapshot may be stale).
async fn current_role(tx: &mut Tx, org_id: OrgId, user_id: UserId) -> Result<Role, StoreError> {
    let row = sqlx::query("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
        .bind(org_id.0)
        .bind(user_id.0)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    match row {
        Some(row) => role_of(&row, "role"),
        None => Err(StoreError::not_found("organization")),
    }
}

async fn member_in(
    tx: &mut Tx,
    org_id: OrgId,
    user_id: UserId,
) -> Result<Option<Member>, StoreError> {
    let row = sqlx::query(
        "SELECT m.user_id, u.email, m.role, m.created_at, m.updated_at
         FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.org_id = $1 AND m.user_id = $2",
    )
    .bind(org_id.0)
    .bind(user_id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    row.as_ref().map(member_from).transpose()
}

#[async_trait::async_trait]
impl AccountStore for PgStore {
    async fn health(&self) -> StoreHealth {
        self.health_check().await
    }

    async fn sign_up(&self, s: NewSignup) -> Result<SignupRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(s.user_id.0)
        .bind(s.email.as_str())
        .bind(&s.password_hash)
        .bind(s.now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match constraint_name(&e) {
            Some("users_email_key") => DomainError::EmailTaken.into(),
            _ => db_error(e),
        })?;
        let organization =
            insert_organization(&mut tx, s.org_id, &s.org_name, s.user_id, s.now).await?;
        insert_token(&mut tx, &s.token).await?;
        // The first token is recorded here (its id and expiry), not in a record of its own.
        let mut detail = trueline_store::token_audit_detail(s.token.expires_at);
        detail["name"] = serde_json::json!(s.org_name.as_str());
        detail["token_id"] = serde_json::json!(s.token.id.0);
        audit(
            &mut tx,
            s.org_id,
            s.user_id,
            &s.request_id,
            "organization.created",
            Some(s.org_id.0),
            detail,
            s.now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(SignupRecord {
            user: User {
                id: s.user_id,
                email: s.email.as_str().to_owned(),
                created_at: s.now,
            },
            organization,
        })
    }

    async fn credentials(&self, email: &Email) -> Result<Option<Credentials>, StoreError> {
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(Credentials {
                user_id: UserId(row.try_get("id").map_err(db_error)?),
                password_hash: row.try_get("password_hash").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn create_token(
        &self,
        token: NewToken,
        checked_password_hash: Option<&str>,
        request_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // `FOR SHARE` waits for a password change holding the row and then sees its hash:
        // the change either sees this token (and revokes it) or this login is refused.
        if let Some(checked) = checked_password_hash {
            let current: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM users WHERE id = $1 AND password_hash = $2 FOR SHARE",
            )
            .bind(token.user_id.0)
            .bind(checked)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            if current.is_none() {
                return Err(DomainError::InvalidCredentials.into());
            }
        }
        insert_token(&mut tx, &token).await?;
        audit(
            &mut tx,
            token.org_id,
            token.user_id,
            request_id,
            "token.issued",
            Some(token.id.0),
            trueline_store::token_audit_detail(token.expires_at),
            token.created_at,
        )
        .await?;
        tx.commit().await.map_err(db_error)
    }

    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT t.id, t.user_id, t.org_id, m.role, t.expires_at, t.revoked_at
             FROM api_tokens t
             JOIN memberships m ON m.org_id = t.org_id AND m.user_id = t.user_id
             WHERE t.token_hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(TokenRecord {
                token_id: TokenId(row.try_get("id").map_err(db_error)?),
                user_id: UserId(row.try_get("user_id").map_err(db_error)?),
                org_id: OrgId(row.try_get("org_id").map_err(db_error)?),
                role: role_of(&row, "role")?,
                expires_at: row.try_get("expires_at").map_err(db_error)?,
                revoked_at: row.try_get("revoked_at").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn change_password(&self, change: PasswordChange) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let updated =
            sqlx::query("UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2")
                .bind(change.user_id.0)
                .bind(&change.checked_hash)
                .bind(&change.new_hash)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        if updated.rows_affected() != 1 {
            return Err(trueline_store::wrong_password().into());
        }
        // The tokens to revoke, locked (no login can add one meanwhile: the users row is
        // locked, and a login re-checks the hash under FOR SHARE), so their count is known
        // before any event is written.
        let to_revoke: Vec<Uuid> = sqlx::query_scalar(LIVE_TOKENS_OF_USER)
            .bind(change.user_id.0)
            .bind(change.now)
            .bind(change.keep.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        // Organizations in the order of their outbox commit locks (migration 9's deferred
        // trigger takes them in the order rows were inserted; a combined batch inserts in this
        // order too): a change touching several organizations and a batch touching the same
        // ones in another order would otherwise deadlock at commit.
        let orgs: Vec<Uuid> = sqlx::query_scalar(
            "SELECT o FROM (
                 SELECT DISTINCT org_id AS o FROM api_tokens WHERE id = ANY($1)
                 UNION SELECT $2::uuid
             ) AS touched
             ORDER BY hashtextextended('trueline.outbox ' || o::text, 0), o",
        )
        .bind(&to_revoke)
        .bind(change.org_id.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut revoked = 0;
        for org in orgs {
            revoked += revoke_selected(
                &mut tx,
                change.user_id,
                OrgId(org),
                TokenSelection::AllBut(change.keep),
                &change.request_id,
                change.now,
            )
            .await?;
            if org == change.org_id.0 {
                audit(
                    &mut tx,
                    change.org_id,
                    change.user_id,
                    &change.request_id,
                    "password.changed",
                    Some(change.user_id.0),
                    serde_json::json!({ "tokens_revoked": to_revoke.len() }),
                    change.now,
                )
                .await?;
            }
        }
        if revoked != to_revoke.len() as u64 {
            return Err(StoreError::Internal(
                "tokens changed under the password change's row locks".into(),
            ));
        }
        tx.commit().await.map_err(db_error)?;
        Ok(revoked)
    }

    async fn revoke_tokens_of(
        &self,
        user_id: UserId,
        org_id: OrgId,
        which: TokenSelection,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let revoked = revoke_selected(&mut tx, user_id, org_id, which, request_id, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(revoked)
    }

    async fn revoke_token(
        &self,
        id: TokenId,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
             RETURNING user_id, org_id, expires_at",
        )
        .bind(id.0)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(row) = revoked {
            audit(
                &mut tx,
                OrgId(row.try_get("org_id").map_err(db_error)?),
                UserId(row.try_get("user_id").map_err(db_error)?),
                request_id,
                "token.revoked",
                Some(id.0),
                trueline_store::token_audit_detail(row.try_get("expires_at").map_err(db_error)?),
                now,
            )
            .await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(User {
                id: UserId(row.try_get("id").map_err(db_error)?),
                email: row.try_get("email").map_err(db_error)?,
                created_at: row.try_get("created_at").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn organization_of(
        &self,
        user_id: UserId,
        org_id: OrgId,
    ) -> Result<Option<OrganizationMembership>, StoreError> {
        let row = sqlx::query(
            "SELECT o.id, o.name, o.created_at, m.role
             FROM memberships m JOIN organizations o ON o.id = m.org_id
             WHERE m.user_id = $1 AND m.org_id = $2",
        )
        .bind(user_id.0)
        .bind(org_id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(OrganizationMembership {
                organization: organization_from(&row)?,
                role: role_of(&row, "role")?,
            })
        })
        .transpose()
    }

    async fn create_organization(
        &self,
        user_id: UserId,
        org_id: OrgId,
        name: OrganizationName,
        now: OffsetDateTime,
        request_id: &str,
        idempotency: Option<Idempotency<'_, Organization>>,
    ) -> Result<Organization, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let organization = insert_organization(&mut tx, org_id, &name, user_id, now).await?;
        let detail = serde_json::json!({ "name": name.as_str() });
        audit(
            &mut tx,
            org_id,
            user_id,
            request_id,
            "organization.created",
            Some(org_id.0),
            detail,
            now,
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &organization, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(organization)
    }

    async fn default_organization_of(&self, user_id: UserId) -> Result<Option<OrgId>, StoreError> {
        let org: Option<Uuid> = sqlx::query_scalar(
            "SELECT org_id FROM memberships WHERE user_id = $1
             ORDER BY created_at, org_id LIMIT 1",
        )
        .bind(user_id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(org.map(OrgId))
    }

    async fn tokens_of(
        &self,
        user_id: UserId,
        org_id: OrgId,
        now: OffsetDateTime,
        page: PageRequest<TokenId>,
    ) -> Result<Page<TokenInfo, TokenId>, StoreError> {
        let after = page.after.map_or(Uuid::nil(), |id| id.0);
        let rows = sqlx::query(
            "SELECT id, created_at, expires_at FROM api_tokens
             WHERE user_id = $1 AND org_id = $2 AND revoked_at IS NULL
               AND expires_at > $3 AND id > $4
             ORDER BY id LIMIT $5",
        )
        .bind(user_id.0)
        .bind(org_id.0)
        .bind(now)
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: TokenId(row.try_get("id").map_err(db_error)?),
                    created_at: row.try_get("created_at").map_err(db_error)?,
                    expires_at: row.try_get("expires_at").map_err(db_error)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_overfetch(items, page.limit, |t| t.id))
    }

    async fn organizations_of(
        &self,
        user_id: UserId,
        page: PageRequest<OrgId>,
    ) -> Result<Page<OrganizationMembership, OrgId>, StoreError> {
        let after = page.after.map_or(Uuid::nil(), |id| id.0);
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.created_at, m.role
             FROM memberships m JOIN organizations o ON o.id = m.org_id
             WHERE m.user_id = $1 AND m.org_id > $2
             ORDER BY m.org_id LIMIT $3",
        )
        .bind(user_id.0)
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(OrganizationMembership {
                    organization: organization_from(row)?,
                    role: role_of(row, "role")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_overfetch(items, page.limit, |m| {
            m.organization.id
        }))
    }

    async fn members(
        &self,
        org_id: OrgId,
        page: PageRequest<UserId>,
    ) -> Result<Page<Member, UserId>, StoreError> {
        let after = page.after.map_or(Uuid::nil(), |id| id.0);
        let rows = sqlx::query(
            "SELECT m.user_id, u.email, m.role, m.created_at, m.updated_at
             FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.org_id = $1 AND m.user_id > $2
             ORDER BY m.user_id LIMIT $3",
        )
        .bind(org_id.0)
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let items = rows
            .iter()
            .map(member_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |m| m.user_id))
    }

    async fn member(&self, org_id: OrgId, user_id: UserId) -> Result<Option<Member>, StoreError> {
        let row = sqlx::query(
            "SELECT m.user_id, u.email, m.role, m.created_at, m.updated_at
             FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.org_id = $1 AND m.user_id = $2",
        )
        .bind(org_id.0)
        .bind(user_id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(member_from).transpose()
    }

    async fn add_member(
        &self,
        actor: &Actor,
        email: &Email,
        role: Role,
        idempotency: Option<Idempotency<'_, Member>>,
    ) -> Result<Member, StoreError> {
        let mut tx = begin_membership_change(self, actor.org_id).await?;
        let actor_role = current_role(&mut tx, actor.org_id, actor.user_id).await?;
        authorize_membership_change(actor_role, MembershipChange::Add { role }, false)?;
        let user = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::not_found("user"))?;
        let user_id = UserId(user.try_get("id").map_err(db_error)?);
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(actor.org_id.0)
        .bind(user_id.0)
        .bind(role.as_str())
        .bind(actor.now)
        .execute(&mut *tx)
        .await
        .map_err(membership_error)?;
        let detail = serde_json::json!({ "role": role });
        audit(
            &mut tx,
            actor.org_id,
            actor.user_id,
            &actor.request_id,
            "member.added",
            Some(user_id.0),
            detail,
            actor.now,
        )
        .await?;
        let member = member_in(&mut tx, actor.org_id, user_id)
            .await?
            .ok_or_else(|| {
                StoreError::Internal("membership vanished inside its own transaction".into())
            })?;
        complete_idempotency(&mut tx, idempotency, &member, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(member)
    }

    async fn change_role(
        &self,
        actor: &Actor,
        user_id: UserId,
        role: Role,
        idempotency: Option<Idempotency<'_, Member>>,
    ) -> Result<Member, StoreError> {
        let mut tx = begin_membership_change(self, actor.org_id).await?;
        let actor_role = current_role(&mut tx, actor.org_id, actor.user_id).await?;
        let target = member_in(&mut tx, actor.org_id, user_id)
            .await?
            .ok_or(StoreError::not_found("member"))?;
        let change = MembershipChange::ChangeRole {
            from: target.role,
            to: role,
        };
        authorize_membership_change(actor_role, change, actor.user_id == user_id)?;
        if target.role == role {
            complete_idempotency(&mut tx, idempotency, &target, actor.now).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(target);
        }
        sqlx::query(
            "UPDATE memberships SET role = $3, updated_at = $4 WHERE org_id = $1 AND user_id = $2",
        )
        .bind(actor.org_id.0)
        .bind(user_id.0)
        .bind(role.as_str())
        .bind(actor.now)
        .execute(&mut *tx)
        .await
        .map_err(membership_error)?;
        let detail = serde_json::json!({ "from": target.role, "to": role });
        audit(
            &mut tx,
            actor.org_id,
            actor.user_id,
            &actor.request_id,
            "member.role_changed",
            Some(user_id.0),
            detail,
            actor.now,
        )
        .await?;
        let member = member_in(&mut tx, actor.org_id, user_id)
            .await?
            .ok_or_else(|| {
                StoreError::Internal("membership vanished inside its own transaction".into())
            })?;
        complete_idempotency(&mut tx, idempotency, &member, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(member)
    }

    async fn remove_member(&self, actor: &Actor, user_id: UserId) -> Result<bool, StoreError> {
        let mut tx = begin_membership_change(self, actor.org_id).await?;
        let actor_role = current_role(&mut tx, actor.org_id, actor.user_id).await?;
        let is_self = actor.user_id == user_id;
        let Some(target) = member_in(&mut tx, actor.org_id, user_id).await? else {
            // Absent already: still refuse callers who could never remove anyone.
            authorize_membership_change(
                actor_role,
                MembershipChange::Remove { role: Role::Viewer },
                is_self,
            )?;
            return Ok(false);
        };
        authorize_membership_change(
            actor_role,
            MembershipChange::Remove { role: target.role },
            is_self,
        )?;
        // The delete cascades to the member's tokens, locking them in the order it finds
        // them; a password change and revocations lock a user's tokens in id order, so
        // they are locked that way first (two orders could deadlock).
        sqlx::query(
            "SELECT id FROM api_tokens WHERE org_id = $1 AND user_id = $2 ORDER BY id FOR UPDATE",
        )
        .bind(actor.org_id.0)
        .bind(user_id.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(actor.org_id.0)
            .bind(user_id.0)
            .execute(&mut *tx)
            .await
            .map_err(membership_error)?;
        let detail = serde_json::json!({ "role": target.role });
        audit(
            &mut tx,
            actor.org_id,
            actor.user_id,
            &actor.request_id,
            "member.removed",
            Some(user_id.0),
            detail,
            actor.now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }
}

/// Revokes the user's working tokens (neither revoked nor expired) in the organization that
/// `which` selects, each with its `token.revoked` audit record and event.
async fn revoke_selected(
    tx: &mut Tx,
    user_id: UserId,
    org_id: OrgId,
    which: TokenSelection,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    let (one, but) = match which {
        TokenSelection::One(id) => (Some(id.0), None),
        TokenSelection::AllBut(id) => (None, Some(id.0)),
    };
    // Locked in id order first (a password change locks the user's tokens that way too):
    // the UPDATE alone locks in the order it finds rows, and two such could deadlock.
    sqlx::query(
        "SELECT id FROM api_tokens
         WHERE user_id = $1 AND org_id = $2 AND revoked_at IS NULL AND expires_at > $3
           AND ($4 IS NULL OR id = $4) AND ($5 IS NULL OR id <> $5)
         ORDER BY id FOR UPDATE",
    )
    .bind(user_id.0)
    .bind(org_id.0)
    .bind(now)
    .bind(one)
    .bind(but)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    let rows = sqlx::query(
        "UPDATE api_tokens SET revoked_at = $3
         WHERE user_id = $1 AND org_id = $2 AND revoked_at IS NULL AND expires_at > $3
           AND ($4 IS NULL OR id = $4) AND ($5 IS NULL OR id <> $5)
         RETURNING id, expires_at",
    )
    .bind(user_id.0)
    .bind(org_id.0)
    .bind(now)
    .bind(one)
    .bind(but)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    // Audited in token id order: `RETURNING` gives no order, and both stores must record
    // (and publish) the same sequence.
    let mut revoked = rows
        .iter()
        .map(|row| -> Result<(Uuid, OffsetDateTime), StoreError> {
            Ok((
                row.try_get("id").map_err(db_error)?,
                row.try_get("expires_at").map_err(db_error)?,
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    revoked.sort_by_key(|(id, _)| *id);
    for (id, expires_at) in revoked {
        audit(
            tx,
            org_id,
            user_id,
            request_id,
            "token.revoked",
            Some(id),
            trueline_store::token_audit_detail(expires_at),
            now,
        )
        .await?;
    }
    Ok(rows.len() as u64)
}
