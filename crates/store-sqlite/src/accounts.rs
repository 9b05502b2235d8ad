//! `AccountStore` on SQLite.

use crate::platform::{complete_idempotency, write_outbox};
use crate::{SqliteStore, constraint_message, db_error, from_micros, micros};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
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

/// The organizations of a user's live tokens but one (a password change revokes them):
/// searched through `api_tokens_by_user` (migration 16; before it, a scan of every token ever
/// issued, under the write lock).
pub(crate) const LIVE_TOKEN_ORGS_OF_USER: &str = "SELECT DISTINCT org_id FROM api_tokens
    WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 AND id <> ?3
    ORDER BY org_id";

/// A connection inside a transaction: a write transaction derefs to it.
type Tx = sqlx::SqliteConnection;

fn role_of(row: &SqliteRow, column: &str) -> Result<Role, StoreError> {
    let raw: String = row.try_get(column).map_err(db_error)?;
    raw.parse()
        .map_err(|_| StoreError::Internal(format!("unknown role {raw:?} in database")))
}

fn member_from(row: &SqliteRow) -> Result<Member, StoreError> {
    Ok(Member {
        user_id: UserId(row.try_get("user_id").map_err(db_error)?),
        email: row.try_get("email").map_err(db_error)?,
        role: role_of(row, "role")?,
        joined_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
        updated_at: from_micros(row.try_get("updated_at").map_err(db_error)?)?,
    })
}

fn organization_from(row: &SqliteRow) -> Result<Organization, StoreError> {
    Ok(Organization {
        id: OrgId(row.try_get("id").map_err(db_error)?),
        name: row.try_get("name").map_err(db_error)?,
        created_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
    })
}

/// Translates the membership trigger's abort into the domain rule it protects.
fn membership_error(e: sqlx::Error) -> StoreError {
    match constraint_message(&e) {
        Some(m) if m.contains("last_owner") => DomainError::LastOwner.into(),
        Some(m) if m.contains("memberships.org_id, memberships.user_id") => {
            DomainError::AlreadyMember.into()
        }
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
    sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?1, ?2, ?3)")
        .bind(id.0)
        .bind(name.as_str())
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, created_at, updated_at)
         VALUES (?1, ?2, 'owner', ?3, ?3)",
    )
    .bind(id.0)
    .bind(owner.0)
    .bind(micros(now))
    .execute(&mut *tx)
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .bind(AuditId::new().0)
    .bind(org_id.0)
    .bind(actor.0)
    .bind(request_id)
    .bind(action)
    .bind(subject)
    .bind(detail.to_string())
    .bind(micros(now))
    .execute(&mut *tx)
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(token.id.0)
    .bind(&token.hash[..])
    .bind(token.user_id.0)
    .bind(token.org_id.0)
    .bind(micros(token.created_at))
    .bind(micros(token.expires_at))
    .execute(&mut *tx)
    .await
    .map_err(|e| match constraint_message(&e) {
        Some(m) if m.contains("FOREIGN KEY") => StoreError::not_found("organization"),
        _ => db_error(e),
    })?;
    Ok(())
}

/// The actor's role as of this transaction (the token's snapshot may be stale).
async fn current_role(tx: &mut Tx, org_id: OrgId, user_id: UserId) -> Result<Role, StoreError> {
    let row = sqlx::query("SELECT role FROM memberships WHERE org_id = ?1 AND user_id = ?2")
        .bind(org_id.0)
        .bind(user_id.0)
        .fetch_optional(&mut *tx)
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
         WHERE m.org_id = ?1 AND m.user_id = ?2",
    )
    .bind(org_id.0)
    .bind(user_id.0)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    row.as_ref().map(member_from).transpose()
}

#[async_trait::async_trait]
impl AccountStore for SqliteStore {
    async fn health(&self) -> StoreHealth {
        self.health_check().await
    }

    async fn sign_up(&self, s: NewSignup) -> Result<SignupRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(s.user_id.0)
        .bind(s.email.as_str())
        .bind(&s.password_hash)
        .bind(micros(s.now))
        .execute(&mut *tx)
        .await
        .map_err(|e| match constraint_message(&e) {
            Some(m) if m.contains("users.email") => DomainError::EmailTaken.into(),
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
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE email = ?1")
            .bind(email.as_str())
            .fetch_optional(&self.reader)
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
        let mut tx = self.begin_write().await?;
        // Under the writer lock: a password change is either before (this login checked
        // the old hash: refused) or after (it sees this token and revokes it).
        if let Some(checked) = checked_password_hash {
            let current: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM users WHERE id = ?1 AND password_hash = ?2")
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
        let generation = match self.tokens.get(hash) {
            Ok(hit) => return Ok(Some(hit)),
            Err(generation) => generation,
        };
        let row = sqlx::query(
            "SELECT t.id, t.user_id, t.org_id, m.role, t.expires_at, t.revoked_at
             FROM api_tokens t
             JOIN memberships m ON m.org_id = t.org_id AND m.user_id = t.user_id
             WHERE t.token_hash = ?1",
        )
        .bind(&hash[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(db_error)?;
            Ok(TokenRecord {
                token_id: TokenId(row.try_get("id").map_err(db_error)?),
                user_id: UserId(row.try_get("user_id").map_err(db_error)?),
                org_id: OrgId(row.try_get("org_id").map_err(db_error)?),
                role: role_of(&row, "role")?,
                expires_at: from_micros(row.try_get("expires_at").map_err(db_error)?)?,
                revoked_at: revoked_at.map(from_micros).transpose()?,
            })
        })
        .transpose()
        .inspect(|found| {
            if let Some(record) = found {
                self.tokens.put(generation, *hash, record.clone());
            }
        })
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = ?1")
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(User {
                id: UserId(row.try_get("id").map_err(db_error)?),
                email: row.try_get("email").map_err(db_error)?,
                created_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
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
             WHERE m.user_id = ?1 AND m.org_id = ?2",
        )
        .bind(user_id.0)
        .bind(org_id.0)
        .fetch_optional(&self.reader)
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
        let mut tx = self.begin_write().await?;
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
            "SELECT org_id FROM memberships WHERE user_id = ?1
             ORDER BY created_at, org_id LIMIT 1",
        )
        .bind(user_id.0)
        .fetch_optional(&self.reader)
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
             WHERE user_id = ?1 AND org_id = ?2 AND revoked_at IS NULL
               AND expires_at > ?3 AND id > ?4
             ORDER BY id LIMIT ?5",
        )
        .bind(user_id.0)
        .bind(org_id.0)
        .bind(micros(now))
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: TokenId(row.try_get("id").map_err(db_error)?),
                    created_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
                    expires_at: from_micros(row.try_get("expires_at").map_err(db_error)?)?,
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
             WHERE m.user_id = ?1 AND m.org_id > ?2
             ORDER BY m.org_id LIMIT ?3",
        )
        .bind(user_id.0)
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
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
             WHERE m.org_id = ?1 AND m.user_id > ?2
             ORDER BY m.user_id LIMIT ?3",
        )
        .bind(org_id.0)
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
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
             WHERE m.org_id = ?1 AND m.user_id = ?2",
        )
        .bind(org_id.0)
        .bind(user_id.0)
        .fetch_optional(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let actor_role = current_role(&mut tx, actor.org_id, actor.user_id).await?;
        authorize_membership_change(actor_role, MembershipChange::Add { role }, false)?;
        let user = sqlx::query("SELECT id FROM users WHERE email = ?1")
            .bind(email.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::not_found("user"))?;
        let user_id = UserId(user.try_get("id").map_err(db_error)?);
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )
        .bind(actor.org_id.0)
        .bind(user_id.0)
        .bind(role.as_str())
        .bind(micros(actor.now))
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

    async fn change_password(&self, change: PasswordChange) -> Result<u64, StoreError> {
        // Revokes tokens: the token cache is out of play meanwhile (see `token_write`).
        let write = self.token_write();
        let result = async {
            let mut tx = self.begin_write().await?;
            let updated = sqlx::query(
                "UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2",
            )
            .bind(change.user_id.0)
            .bind(&change.checked_hash)
            .bind(&change.new_hash)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if updated.rows_affected() != 1 {
                return Err(trueline_store::wrong_password().into());
            }
            let orgs: Vec<Uuid> = sqlx::query_scalar(LIVE_TOKEN_ORGS_OF_USER)
                .bind(change.user_id.0)
                .bind(micros(change.now))
                .bind(change.keep.0)
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
            }
            audit(
                &mut tx,
                change.org_id,
                change.user_id,
                &change.request_id,
                "password.changed",
                Some(change.user_id.0),
                serde_json::json!({ "tokens_revoked": revoked }),
                change.now,
            )
            .await?;
            tx.commit().await.map_err(db_error)?;
            Ok(revoked)
        }
        .await;
        write.done();
        result
    }

    async fn revoke_tokens_of(
        &self,
        user_id: UserId,
        org_id: OrgId,
        which: TokenSelection,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let write = self.token_write();
        let result = async {
            let mut tx = self.begin_write().await?;
            let revoked = revoke_selected(&mut tx, user_id, org_id, which, request_id, now).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(revoked)
        }
        .await;
        write.done();
        result
    }

    // Writes that can change what a token resolves to run inside `token_write`: the cache is
    // out of play from before they start until they are over (committed or not, and also when
    // their request is dropped half-way), so no request sees the old role or token after.
    async fn revoke_token(
        &self,
        id: TokenId,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let write = self.token_write();
        let result = self.revoke_token_uncached(id, request_id, now).await;
        write.done();
        result
    }

    async fn change_role(
        &self,
        actor: &Actor,
        user_id: UserId,
        role: Role,
        idempotency: Option<Idempotency<'_, Member>>,
    ) -> Result<Member, StoreError> {
        let write = self.token_write();
        let result = self
            .change_role_uncached(actor, user_id, role, idempotency)
            .await;
        write.done();
        result
    }

    async fn remove_member(&self, actor: &Actor, user_id: UserId) -> Result<bool, StoreError> {
        let write = self.token_write();
        let result = self.remove_member_uncached(actor, user_id).await;
        write.done();
        result
    }
}

/// A token-affecting write in progress (see [`crate::token_cache`]).
struct TokenWrite {
    tokens: std::sync::Arc<crate::token_cache::TokenCache>,
    writer: std::sync::Arc<crate::writer::Writer>,
    done: bool,
}

impl TokenWrite {
    fn done(mut self) {
        self.done = true;
        self.tokens.write_done();
    }
}

impl Drop for TokenWrite {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped half-way: the connection's thread may still be committing. Once the writer
        // has worked through everything queued before (one statement behind it, in order),
        // the write is over either way.
        let (tokens, writer) = (self.tokens.clone(), self.writer.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    writer.drain().await;
                    tokens.write_done();
                });
            }
            Err(_) => tokens.write_done(),
        }
    }
}

impl SqliteStore {
    fn token_write(&self) -> TokenWrite {
        self.tokens.write_started();
        TokenWrite {
            tokens: self.tokens.clone(),
            writer: self.writer.clone(),
            done: false,
        }
    }
}

impl SqliteStore {
    async fn revoke_token_uncached(
        &self,
        id: TokenId,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL
             RETURNING user_id, org_id, expires_at",
        )
        .bind(id.0)
        .bind(micros(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(row) = revoked {
            let expires_at: i64 = row.try_get("expires_at").map_err(db_error)?;
            audit(
                &mut tx,
                OrgId(row.try_get("org_id").map_err(db_error)?),
                UserId(row.try_get("user_id").map_err(db_error)?),
                request_id,
                "token.revoked",
                Some(id.0),
                trueline_store::token_audit_detail(from_micros(expires_at)?),
                now,
            )
            .await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn change_role_uncached(
        &self,
        actor: &Actor,
        user_id: UserId,
        role: Role,
        idempotency: Option<Idempotency<'_, Member>>,
    ) -> Result<Member, StoreError> {
        let mut tx = self.begin_write().await?;
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
            "UPDATE memberships SET role = ?3, updated_at = ?4 WHERE org_id = ?1 AND user_id = ?2",
        )
        .bind(actor.org_id.0)
        .bind(user_id.0)
        .bind(role.as_str())
        .bind(micros(actor.now))
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

    async fn remove_member_uncached(
        &self,
        actor: &Actor,
        user_id: UserId,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
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
        sqlx::query("DELETE FROM memberships WHERE org_id = ?1 AND user_id = ?2")
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
    let rows = sqlx::query(
        "UPDATE api_tokens SET revoked_at = ?3
         WHERE user_id = ?1 AND org_id = ?2 AND revoked_at IS NULL AND expires_at > ?3
           AND (?4 IS NULL OR id = ?4) AND (?5 IS NULL OR id <> ?5)
         RETURNING id, expires_at",
    )
    .bind(user_id.0)
    .bind(org_id.0)
    .bind(micros(now))
    .bind(one)
    .bind(but)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    // Audited in token id order: `RETURNING` gives no order, and both stores must record
    // (and publish) the same sequence.
    let mut revoked = rows
        .iter()
        .map(|row| -> Result<(Uuid, OffsetDateTime), StoreError> {
            Ok((
                row.try_get("id").map_err(db_error)?,
                from_micros(row.try_get("expires_at").map_err(db_error)?)?,
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
