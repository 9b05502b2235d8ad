//! What a conformance case gets: a fresh store and raw SQL access to the same database.

use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use trueline_core::accounts::{Email, OrganizationName, Role};
use trueline_core::clock::truncate_to_micros;
use trueline_core::ids::{OrgId, TokenId, UserId};
use trueline_store::{Actor, NewSignup, NewToken, SignupRecord, Store};

/// Raw statements against the fixture's database, bypassing the store's code paths.
#[async_trait::async_trait]
pub trait RawSql: Send + Sync {
    /// Runs one dialect-neutral statement; `Err` carries the database's message.
    async fn execute(&self, sql: &str) -> Result<u64, String>;
    /// Runs a query returning one integer (e.g. `SELECT count(*) FROM users`).
    async fn scalar(&self, sql: &str) -> i64;
}

/// A fresh, migrated database. Dropping it releases (or drops) the database.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub raw: Arc<dyn RawSql>,
    /// Keeps per-backend resources (temp dir, throwaway PostgreSQL database) alive.
    pub guard: Box<dyn Send + Sync>,
}

impl Fixture {
    pub async fn count(&self, table: &str) -> i64 {
        self.raw
            .scalar(&format!("SELECT count(*) FROM {table}"))
            .await
    }
}

/// An organization created by signup and its owner.
#[derive(Debug, Clone, Copy)]
pub struct OrgWithOwner {
    pub org: OrgId,
    pub owner: UserId,
}

/// A fixed instant, so both backends store the same values.
pub fn now() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

/// Hash of a (fake) token secret derived from a label, unique per call site.
pub fn token_hash(label: &str) -> [u8; 32] {
    let mut hash = [0u8; 32];
    let id = uuid::Uuid::new_v4();
    hash[..16].copy_from_slice(id.as_bytes());
    for (i, b) in label.bytes().take(16).enumerate() {
        hash[16 + i] = b;
    }
    hash
}

pub fn new_token(user_id: UserId, org_id: OrgId, now: OffsetDateTime) -> NewToken {
    NewToken {
        id: TokenId::new(),
        hash: token_hash("t"),
        user_id,
        org_id,
        created_at: now,
        expires_at: now + Duration::days(30),
    }
}

/// A valid argon2id-shaped hash (the schema checks the prefix; the store never verifies).
pub const FAKE_PASSWORD_HASH: &str = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";

pub fn signup_of(email: &str, org: &str) -> NewSignup {
    let user_id = UserId::new();
    let org_id = OrgId::new();
    let now = now();
    NewSignup {
        user_id,
        email: Email::parse(email).expect("test email is valid"),
        password_hash: FAKE_PASSWORD_HASH.to_owned(),
        org_id,
        org_name: OrganizationName::parse(org).expect("test org name is valid"),
        token: new_token(user_id, org_id, now),
        now,
        request_id: "req-signup".into(),
    }
}

/// Signs up `email` with a fresh organization; returns the record.
pub async fn sign_up(f: &Fixture, email: &str) -> SignupRecord {
    f.store
        .sign_up(signup_of(email, "Acme"))
        .await
        .expect("signup succeeds")
}

pub fn actor(org_id: OrgId, user_id: UserId, role: Role) -> Actor {
    Actor {
        org_id,
        user_id,
        role,
        request_id: "req-test".into(),
        now: now(),
    }
}
