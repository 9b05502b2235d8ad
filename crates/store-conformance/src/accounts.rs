//! Accounts and tenancy cases.

use crate::fixtures::*;
use std::sync::Arc;
use trueline_core::DomainError;
use trueline_core::accounts::{Email, OrganizationName, Role};
use trueline_core::ids::{OrgId, UserId};
use trueline_store::{PageRequest, StoreError};

fn domain(result: Result<impl std::fmt::Debug, StoreError>) -> DomainError {
    match result {
        Err(StoreError::Domain(e)) => e,
        other => panic!("expected a domain error, got {other:?}"),
    }
}

/// Signs up `owner`, signs up `other` separately and adds them to owner's organization.
async fn org_with_member(f: &Fixture, role: Role) -> (OrgWithOwner, UserId) {
    let owner = sign_up(f, "owner@example.com").await;
    let other = sign_up(f, &format!("{}@example.com", role.as_str())).await;
    let act = actor(owner.organization.id, owner.user.id, Role::Owner);
    let email = Email::parse(&other.user.email).expect("valid");
    f.store
        .add_member(&act, &email, role, None)
        .await
        .expect("add member");
    (
        OrgWithOwner {
            org: owner.organization.id,
            owner: owner.user.id,
        },
        other.user.id,
    )
}

pub async fn signup_creates_user_organization_owner_and_token(f: &Fixture) {
    let s = signup_of("Ann@Example.com", "Ann's shop");
    let token_hash = s.token.hash;
    let record = f.store.sign_up(s.clone()).await.expect("signup");
    assert_eq!(record.user.email, "ann@example.com");
    assert_eq!(record.organization.name, "Ann's shop");
    let token = f
        .store
        .token_by_hash(&token_hash)
        .await
        .expect("lookup")
        .expect("token exists");
    assert_eq!(
        (token.user_id, token.org_id, token.role),
        (s.user_id, s.org_id, Role::Owner)
    );
    assert_eq!(token.expires_at, s.token.expires_at);
    assert_eq!(token.revoked_at, None);
    let creds = f
        .store
        .credentials(&s.email)
        .await
        .expect("credentials")
        .expect("user exists");
    assert_eq!(creds.user_id, s.user_id);
    assert_eq!(
        f.store
            .user(s.user_id)
            .await
            .expect("user")
            .expect("exists")
            .created_at,
        s.now
    );
}

pub async fn signup_with_a_taken_email_is_refused_and_changes_nothing(f: &Fixture) {
    sign_up(f, "ann@example.com").await;
    let before = (
        f.count("users").await,
        f.count("organizations").await,
        f.count("api_tokens").await,
    );
    let again = f.store.sign_up(signup_of("ANN@example.com", "Other")).await;
    assert_eq!(domain(again), DomainError::EmailTaken);
    let after = (
        f.count("users").await,
        f.count("organizations").await,
        f.count("api_tokens").await,
    );
    assert_eq!(before, after);
    assert_eq!(f.count("memberships").await, 1);
}

pub async fn tokens_resolve_to_the_current_role_and_record_revocation(f: &Fixture) {
    let (org, member) = org_with_member(f, Role::Member).await;
    let token = new_token(member, org.org, now());
    f.store
        .create_token(token.clone(), None, "req-issue")
        .await
        .expect("create token");
    let found = f
        .store
        .token_by_hash(&token.hash)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.role, Role::Member);
    let owner = actor(org.org, org.owner, Role::Owner);
    f.store
        .change_role(&owner, member, Role::Viewer, None)
        .await
        .expect("demote");
    let found = f
        .store
        .token_by_hash(&token.hash)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        found.role,
        Role::Viewer,
        "demotion applies to existing tokens at once"
    );
    let at = now();
    f.store
        .revoke_token(token.id, "req-revoke", at)
        .await
        .expect("revoke");
    f.store
        .revoke_token(
            token.id,
            "req-revoke-again",
            at + time::Duration::seconds(5),
        )
        .await
        .expect("revoke again");
    // Issued and revoked once each, with the requests' ids; the second revocation changed
    // nothing and recorded nothing.
    let audited = |action: &str, request_id: &str| {
        format!(
            "SELECT count(*) FROM audit_log WHERE action = '{action}' AND request_id = '{request_id}'"
        )
    };
    assert_eq!(f.raw.scalar(&audited("token.issued", "req-issue")).await, 1);
    assert_eq!(
        f.raw.scalar(&audited("token.revoked", "req-revoke")).await,
        1
    );
    assert_eq!(
        f.raw
            .scalar(&audited("token.revoked", "req-revoke-again"))
            .await,
        0
    );
    let events =
        |event_type: &str| format!("SELECT count(*) FROM outbox WHERE event_type = '{event_type}'");
    assert_eq!(
        (
            f.raw.scalar(&events("accounts.token.issued")).await,
            f.raw.scalar(&events("accounts.token.revoked")).await
        ),
        (1, 1),
        "every audited change is also an event"
    );
    // Signup's first token is in its organization's creation record (two signups here).
    assert_eq!(
        f.raw
            .scalar(
                "SELECT count(*) FROM audit_log WHERE action = 'organization.created'
                 AND CAST(detail AS TEXT) LIKE '%\"token_id\"%'
                 AND CAST(detail AS TEXT) LIKE '%\"expires_at\"%'"
            )
            .await,
        2
    );
    let found = f
        .store
        .token_by_hash(&token.hash)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        found.revoked_at,
        Some(at),
        "revoking twice keeps the first instant"
    );
    assert!(
        f.store
            .token_by_hash(&token_hash("unknown"))
            .await
            .expect("lookup")
            .is_none()
    );
}

pub async fn tokens_of_a_removed_member_stop_resolving(f: &Fixture) {
    let (org, member) = org_with_member(f, Role::Member).await;
    let token = new_token(member, org.org, now());
    f.store
        .create_token(token.clone(), None, "req-issue")
        .await
        .expect("create token");
    let owner = actor(org.org, org.owner, Role::Owner);
    assert!(f.store.remove_member(&owner, member).await.expect("remove"));
    assert!(
        f.store
            .token_by_hash(&token.hash)
            .await
            .expect("lookup")
            .is_none()
    );
    let stranger = sign_up(f, "stranger@example.com").await;
    let foreign = new_token(stranger.user.id, org.org, now());
    let audit_before = f.count("audit_log").await;
    let refused = f.store.create_token(foreign, None, "req-foreign").await;
    assert_eq!(domain(refused), DomainError::NotFound("organization"));
    assert_eq!(f.count("audit_log").await, audit_before, "nothing recorded");
}

/// A password change applies only over the hash the caller's password was checked against: a
/// change that landed since refuses it and nothing changes; otherwise the new hash is stored,
/// every other working token of the user in every organization is revoked and the change is
/// audited, in one transaction.
pub async fn a_password_change_is_guarded_by_the_checked_hash(f: &Fixture) {
    let signup = signup_of("ann@example.com", "Acme");
    let signup_token = signup.token.hash;
    let ann = f.store.sign_up(signup).await.expect("signup");
    let keep = new_token(ann.user.id, ann.organization.id, now());
    f.store
        .create_token(keep.clone(), None, "req-keep")
        .await
        .expect("token");
    let second = f
        .store
        .create_organization(
            ann.user.id,
            OrgId::new(),
            OrganizationName::parse("Second").expect("valid"),
            now(),
            "req-org",
            None,
        )
        .await
        .expect("second organization");
    f.store
        .create_token(new_token(ann.user.id, second.id, now()), None, "req-second")
        .await
        .expect("token in the second organization");
    let change = |checked: &str| trueline_store::PasswordChange {
        user_id: ann.user.id,
        org_id: ann.organization.id,
        keep: keep.id,
        checked_hash: checked.to_owned(),
        new_hash: "$argon2id$v=19$m=8,t=1,p=1$bmV3c2FsdA$bmV3aGFzaA".to_owned(),
        request_id: "req-change".to_owned(),
        now: now(),
    };
    let audit_before = f.count("audit_log").await;
    let stale = f
        .store
        .change_password(change("$argon2id$v=19$m=8,t=1,p=1$b3RoZXI$b3RoZXI"))
        .await;
    assert!(
        matches!(&stale, Err(StoreError::Domain(DomainError::Validation(e))) if e[0].code == "wrong_password"),
        "{stale:?}"
    );
    assert_eq!(f.count("audit_log").await, audit_before, "nothing recorded");
    assert_eq!(
        f.raw
            .scalar("SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL")
            .await,
        0,
        "nothing revoked"
    );
    let revoked = f
        .store
        .change_password(change(FAKE_PASSWORD_HASH))
        .await
        .expect("change");
    assert_eq!(
        revoked, 2,
        "the sign-up's token and the second organization's"
    );
    assert!(
        f.store
            .token_by_hash(&keep.hash)
            .await
            .expect("lookup")
            .is_some()
    );
    assert!(
        f.store
            .token_by_hash(&signup_token)
            .await
            .expect("lookup")
            .is_none_or(|t| t.revoked_at.is_some()),
        "the sign-up's token is revoked"
    );
    assert_eq!(
        f.raw
            .scalar("SELECT count(*) FROM audit_log WHERE action = 'password.changed'")
            .await,
        1
    );
    assert_eq!(
        f.raw
            .scalar("SELECT count(*) FROM users WHERE password_hash LIKE '%bmV3aGFzaA'")
            .await,
        1
    );
    // Recorded in the request's organization, with its event; each revocation in its own.
    assert_eq!(
        f.raw
            .scalar("SELECT count(*) FROM outbox WHERE event_type = 'accounts.password.changed'")
            .await,
        1
    );
    assert_eq!(
        f.raw
            .scalar(
                "SELECT count(DISTINCT org_id) FROM audit_log
                 WHERE request_id = 'req-change' AND action = 'token.revoked'"
            )
            .await,
        2,
        "a revocation record in each organization"
    );
    // A login that checked the old hash before the change committed gets no token now.
    let late = new_token(ann.user.id, ann.organization.id, now());
    let tokens_before = f.count("api_tokens").await;
    let refused = f
        .store
        .create_token(late.clone(), Some(FAKE_PASSWORD_HASH), "req-late")
        .await;
    assert_eq!(domain(refused), DomainError::InvalidCredentials);
    assert_eq!(f.count("api_tokens").await, tokens_before, "nothing stored");
    f.store
        .create_token(
            late,
            Some("$argon2id$v=19$m=8,t=1,p=1$bmV3c2FsdA$bmV3aGFzaA"),
            "req-new",
        )
        .await
        .expect("a login with the new password");
}

pub async fn members_are_listed_in_keyset_pages(f: &Fixture) {
    let owner = sign_up(f, "owner@example.com").await;
    let act = actor(owner.organization.id, owner.user.id, Role::Owner);
    for i in 0..6 {
        let other = sign_up(f, &format!("m{i}@example.com")).await;
        let email = Email::parse(&other.user.email).expect("valid");
        f.store
            .add_member(&act, &email, Role::Member, None)
            .await
            .expect("add");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = f
            .store
            .members(owner.organization.id, PageRequest { limit: 3, after })
            .await
            .expect("page");
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|m| m.user_id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages are ordered by user id without repeats");
}

pub async fn organizations_of_a_user_are_listed_with_roles(f: &Fixture) {
    let owner = sign_up(f, "owner@example.com").await;
    let second = trueline_core::ids::OrgId::new();
    let name = trueline_core::accounts::OrganizationName::parse("Second").expect("valid");
    f.store
        .create_organization(owner.user.id, second, name, now(), "req-org", None)
        .await
        .expect("create org");
    // Both creations are audited with the id of the request that made them.
    assert_eq!(
        f.raw
            .scalar(
                "SELECT count(*) FROM audit_log WHERE action = 'organization.created'
                 AND request_id IN ('req-signup', 'req-org')"
            )
            .await,
        2
    );
    let page = f
        .store
        .organizations_of(
            owner.user.id,
            PageRequest {
                limit: 50,
                after: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(page.items.len(), 2);
    assert!(page.items.iter().all(|m| m.role == Role::Owner));
    assert!(page.next.is_none());
    let mine = f
        .store
        .organization_of(owner.user.id, second)
        .await
        .expect("get")
        .expect("member");
    assert_eq!(mine.organization.name, "Second");
    let stranger = sign_up(f, "stranger@example.com").await;
    assert!(
        f.store
            .organization_of(stranger.user.id, second)
            .await
            .expect("get")
            .is_none()
    );
}

pub async fn adding_members_checks_user_role_and_duplicates(f: &Fixture) {
    let (org, member) = org_with_member(f, Role::Member).await;
    let owner = actor(org.org, org.owner, Role::Owner);
    let unknown = Email::parse("nobody@example.com").expect("valid");
    assert_eq!(
        domain(
            f.store
                .add_member(&owner, &unknown, Role::Member, None)
                .await
        ),
        DomainError::NotFound("user")
    );
    let existing = Email::parse("member@example.com").expect("valid");
    assert_eq!(
        domain(
            f.store
                .add_member(&owner, &existing, Role::Admin, None)
                .await
        ),
        DomainError::AlreadyMember
    );
    let as_member = actor(org.org, member, Role::Member);
    let newcomer = sign_up(f, "new@example.com").await;
    let email = Email::parse(&newcomer.user.email).expect("valid");
    assert!(matches!(
        domain(
            f.store
                .add_member(&as_member, &email, Role::Viewer, None)
                .await
        ),
        DomainError::InsufficientRole { .. }
    ));
    assert_eq!(
        f.store
            .member(org.org, member)
            .await
            .expect("get")
            .expect("exists")
            .role,
        Role::Member
    );
    assert!(
        f.store
            .member(org.org, newcomer.user.id)
            .await
            .expect("get")
            .is_none()
    );
}

pub async fn admins_cannot_touch_owners_and_members_cannot_manage(f: &Fixture) {
    let (org, admin) = org_with_member(f, Role::Admin).await;
    let as_admin = actor(org.org, admin, Role::Admin);
    assert!(matches!(
        domain(
            f.store
                .change_role(&as_admin, org.owner, Role::Member, None)
                .await
        ),
        DomainError::InsufficientRole {
            required: Role::Owner,
            ..
        }
    ));
    assert!(matches!(
        domain(f.store.remove_member(&as_admin, org.owner).await),
        DomainError::InsufficientRole { .. }
    ));
    assert!(matches!(
        domain(
            f.store
                .change_role(&as_admin, admin, Role::Owner, None)
                .await
        ),
        DomainError::InsufficientRole { .. }
    ));
    assert_eq!(
        f.store
            .member(org.org, org.owner)
            .await
            .expect("get")
            .expect("exists")
            .role,
        Role::Owner
    );
    // The actor's role is re-read inside the transaction: a stale "owner" claim is not trusted.
    let stale = actor(org.org, admin, Role::Owner);
    assert!(matches!(
        domain(
            f.store
                .change_role(&stale, org.owner, Role::Viewer, None)
                .await
        ),
        DomainError::InsufficientRole { .. }
    ));
}

pub async fn the_last_owner_can_be_neither_demoted_nor_removed(f: &Fixture) {
    let owner = sign_up(f, "owner@example.com").await;
    let act = actor(owner.organization.id, owner.user.id, Role::Owner);
    assert_eq!(
        domain(
            f.store
                .change_role(&act, owner.user.id, Role::Admin, None)
                .await
        ),
        DomainError::LastOwner
    );
    assert_eq!(
        domain(f.store.remove_member(&act, owner.user.id).await),
        DomainError::LastOwner
    );
    let member = f
        .store
        .member(owner.organization.id, owner.user.id)
        .await
        .expect("get");
    assert_eq!(member.expect("still a member").role, Role::Owner);
}

/// Two owners each demote (or remove) the other at the same moment, many times over; every
/// round must end with exactly one owner left.
async fn owners_race(f: &Fixture, remove: bool) {
    for round in 0..10 {
        let a = sign_up(f, &format!("a{round}@example.com")).await;
        let b = sign_up(f, &format!("b{round}@example.com")).await;
        let org = a.organization.id;
        let email_b = Email::parse(&b.user.email).expect("valid");
        f.store
            .add_member(
                &actor(org, a.user.id, Role::Owner),
                &email_b,
                Role::Owner,
                None,
            )
            .await
            .expect("add");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (me, other) in [(a.user.id, b.user.id), (b.user.id, a.user.id)] {
            let store = f.store.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let act = actor(org, me, Role::Owner);
                barrier.wait().await;
                if remove {
                    store.remove_member(&act, other).await.map(|_| ())
                } else {
                    store
                        .change_role(&act, other, Role::Admin, None)
                        .await
                        .map(|_| ())
                }
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.expect("task"));
        }
        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: exactly one wins: {outcomes:?}");
        assert!(outcomes.iter().any(|o| matches!(
            o,
            // The loser was demoted (no longer an owner), removed (no longer a member), or
            // would have removed the last owner.
            Err(StoreError::Domain(
                DomainError::LastOwner
                    | DomainError::InsufficientRole { .. }
                    | DomainError::NotFound("organization")
            ))
        )));
        let page = f
            .store
            .members(
                org,
                PageRequest {
                    limit: 10,
                    after: None,
                },
            )
            .await
            .expect("list");
        assert_eq!(
            page.items.iter().filter(|m| m.role == Role::Owner).count(),
            1,
            "round {round}"
        );
    }
}

pub async fn owners_demoting_each_other_concurrently_leave_one_owner(f: &Fixture) {
    owners_race(f, false).await;
}

pub async fn owners_removing_each_other_concurrently_leave_one_owner(f: &Fixture) {
    owners_race(f, true).await;
}

pub async fn membership_changes_write_audit_records(f: &Fixture) {
    let before = f.count("audit_log").await;
    let (org, member) = org_with_member(f, Role::Member).await;
    let owner = actor(org.org, org.owner, Role::Owner);
    f.store
        .change_role(&owner, member, Role::Admin, None)
        .await
        .expect("promote");
    f.store
        .change_role(&owner, member, Role::Admin, None)
        .await
        .expect("no-op");
    f.store.remove_member(&owner, member).await.expect("remove");
    // 2 signups (organization.created) + added + role_changed + removed; the no-op writes nothing.
    assert_eq!(f.count("audit_log").await - before, 5);
    let refused = f
        .store
        .change_role(&owner, org.owner, Role::Viewer, None)
        .await;
    assert_eq!(domain(refused), DomainError::LastOwner);
    assert_eq!(
        f.count("audit_log").await - before,
        5,
        "a refused change is not audited"
    );
}

pub async fn removing_an_absent_member_is_idempotent(f: &Fixture) {
    let (org, member) = org_with_member(f, Role::Viewer).await;
    let owner = actor(org.org, org.owner, Role::Owner);
    assert!(f.store.remove_member(&owner, member).await.expect("remove"));
    assert!(
        !f.store
            .remove_member(&owner, member)
            .await
            .expect("remove again")
    );
    assert!(
        !f.store
            .remove_member(&owner, UserId::new())
            .await
            .expect("remove unknown")
    );
}

/// A login without an organization lands in the user's oldest membership, not the smallest
/// id: an organization made before the user's own (ids are time-ordered) that added them as
/// a member must not catch their plain logins.
pub async fn the_default_organization_is_the_oldest_membership(f: &Fixture) {
    let stranger = sign_up(f, "stranger@example.com").await;
    let user = sign_up(f, "user@example.com").await;
    assert!(stranger.organization.id.0 < user.organization.id.0);
    let act = actor(stranger.organization.id, stranger.user.id, Role::Owner);
    let email = Email::parse("user@example.com").expect("valid");
    f.store
        .add_member(&act, &email, Role::Owner, None)
        .await
        .expect("add member");
    assert_eq!(
        f.store.default_organization_of(user.user.id).await.unwrap(),
        Some(user.organization.id)
    );
    assert_eq!(
        f.store
            .default_organization_of(UserId::new())
            .await
            .unwrap(),
        None
    );
}
