//! The schema is the final authority: these cases bypass the store's code and prove the
//! database itself refuses states the domain forbids.

use crate::fixtures::*;
use trueline_core::accounts::{Email, Role};

/// The up migration files of a store's `migrations` directory as `(version, path)`, in
/// version order: the schema tests run them alone to know what each down must restore.
pub fn up_migration_files(dir: &std::path::Path) -> Vec<(i64, std::path::PathBuf)> {
    let mut ups: Vec<(i64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .expect("the migrations directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".up.sql"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name[..4].parse().expect("a four-digit version"), path)
        })
        .collect();
    ups.sort();
    ups
}

pub async fn database_refuses_removing_the_last_owner_behind_the_codes_back(f: &Fixture) {
    let owner = sign_up(f, "owner@example.com").await;
    let removed = f
        .raw
        .execute("DELETE FROM memberships WHERE role = 'owner'")
        .await;
    assert!(
        removed.is_err(),
        "deleting the only owner must fail: {removed:?}"
    );
    let demoted = f
        .raw
        .execute("UPDATE memberships SET role = 'viewer'")
        .await;
    assert!(
        demoted.is_err(),
        "demoting the only owner must fail: {demoted:?}"
    );
    assert_eq!(f.count("memberships").await, 1);
    // With a second owner, one of them may go.
    let other = sign_up(f, "other@example.com").await;
    let act = actor(owner.organization.id, owner.user.id, Role::Owner);
    let email = Email::parse(&other.user.email).expect("valid");
    f.store
        .add_member(&act, &email, Role::Owner, None)
        .await
        .expect("add second owner");
    let demote_all_in_org = f
        .raw
        .execute(
            "UPDATE memberships SET role = 'admin'
             WHERE org_id = (SELECT org_id FROM memberships GROUP BY org_id HAVING count(*) = 2)",
        )
        .await;
    assert!(
        demote_all_in_org.is_err(),
        "demoting both owners at once must fail"
    );
}

pub async fn database_refuses_invalid_roles_emails_and_names(f: &Fixture) {
    sign_up(f, "owner@example.com").await;
    for statement in [
        "UPDATE memberships SET role = 'superuser'",
        "UPDATE users SET email = 'UPPER@EXAMPLE.COM'",
        "UPDATE users SET email = 'no-at-sign'",
        "UPDATE users SET password_hash = 'plaintext'",
        "UPDATE organizations SET name = ''",
        "UPDATE organizations SET name = '  padded  '",
        "UPDATE organizations SET owner_count = -1",
    ] {
        let result = f.raw.execute(statement).await;
        assert!(result.is_err(), "{statement} must be refused");
    }
}

pub async fn audit_records_cannot_be_changed_or_deleted(f: &Fixture) {
    sign_up(f, "owner@example.com").await;
    assert_eq!(f.count("audit_log").await, 1);
    assert!(
        f.raw
            .execute("UPDATE audit_log SET action = 'forged'")
            .await
            .is_err()
    );
    assert!(f.raw.execute("DELETE FROM audit_log").await.is_err());
    assert_eq!(f.count("audit_log").await, 1);
}

pub async fn database_refuses_deleting_an_unpublished_outbox_row(f: &Fixture) {
    sign_up(f, "owner@example.com").await;
    assert_eq!(f.count("outbox").await, 1);
    assert!(f.raw.execute("DELETE FROM outbox").await.is_err());
    assert_eq!(f.count("outbox").await, 1, "nothing deleted");
    // Once the event log has it, it may go.
    f.raw
        .execute("UPDATE outbox SET published_at = created_at")
        .await
        .expect("publish");
    assert_eq!(f.raw.execute("DELETE FROM outbox").await, Ok(1));
}

pub async fn migrations_go_up_down_and_up_again(f: &Fixture) {
    let status = f.store.migration_status().await.expect("status");
    assert!(
        !status.is_empty() && status.iter().all(|m| m.applied),
        "fixture is migrated"
    );
    assert!(
        f.store.migrate_up().await.expect("up").is_empty(),
        "up is idempotent"
    );
    let reverted = f
        .store
        .migrate_down(status.len() as u32)
        .await
        .expect("down");
    let mut expected: Vec<i64> = status.iter().map(|m| m.version).collect();
    expected.reverse();
    assert_eq!(reverted, expected, "down reverts newest first");
    let status = f.store.migration_status().await.expect("status");
    assert!(status.iter().all(|m| !m.applied));
    assert!(
        f.raw.execute("SELECT count(*) FROM users").await.is_err(),
        "tables are gone"
    );
    let applied = f.store.migrate_up().await.expect("up again");
    assert_eq!(applied.len(), status.len());
    sign_up(f, "after@example.com").await;
}
