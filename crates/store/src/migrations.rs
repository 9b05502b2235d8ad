//! Schema migrations: reversible (`*.up.sql` / `*.down.sql`), embedded in the binary.

use crate::StoreError;

/// The description of an applied migration the binary does not have (a newer version applied
/// it): `migrate status` lists it, and `migrate down` refuses to run past it.
pub const UNKNOWN_MIGRATION: &str = "applied by a newer version: unknown to this binary";

/// Every migration the binary has (version, description), applied or pending, then the
/// applied versions it does not have ([`UNKNOWN_MIGRATION`]).
pub fn migration_status(known: &[(i64, &str)], applied: &[i64]) -> Vec<MigrationStatus> {
    let mut status: Vec<MigrationStatus> = known
        .iter()
        .map(|&(version, description)| MigrationStatus {
            version,
            description: description.to_owned(),
            applied: applied.contains(&version),
        })
        .collect();
    status.extend(
        applied
            .iter()
            .filter(|v| !known.iter().any(|k| k.0 == **v))
            .map(|&version| MigrationStatus {
                version,
                description: UNKNOWN_MIGRATION.to_owned(),
                applied: true,
            }),
    );
    status
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

#[async_trait::async_trait]
pub trait Migrations: Send + Sync {
    /// Applies every pending migration; returns the versions applied now.
    async fn migrate_up(&self) -> Result<Vec<i64>, StoreError>;
    /// Reverts the `steps` most recently applied migrations; returns the versions reverted.
    async fn migrate_down(&self, steps: u32) -> Result<Vec<i64>, StoreError>;
    /// Every known migration and whether it is applied.
    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError>;
}

/// A table whose rows carry a key computed by the domain that an earlier version computed
/// differently, recomputed by the stores right after migrating (SQL has no Unicode
/// normalization). The migration that changed the rule lists the rows that may differ in
/// `unicode_rekeys`; the stores take each listed row, write [`Rekey::recompute`]'s answer
/// and remove the row from the list in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rekey {
    /// `items.name_key`, from `items.name` ([`trueline_core::validation::name_key`]).
    ItemNameKey,
    /// `users.email`, normalized again ([`trueline_core::accounts::Email`]).
    UserEmail,
    /// `invites.email`, likewise.
    InviteEmail,
    /// `submissions.email`, likewise.
    SubmissionEmail,
}

impl Rekey {
    pub fn from_table(table: &str) -> Option<Self> {
        match table {
            "items" => Some(Self::ItemNameKey),
            "users" => Some(Self::UserEmail),
            "invites" => Some(Self::InviteEmail),
            "submissions" => Some(Self::SubmissionEmail),
            _ => None,
        }
    }

    /// The next batch of listed rows after `(?1/$1, ?2/$2)` in list order, `?3/$3` at most,
    /// each with the value its key is computed from (`source`) and the key as stored
    /// (`stored`; both NULL for a row deleted since it was listed).
    pub fn list_sql(postgres: bool) -> String {
        let sql = "SELECT r.table_name, r.row_id,
                    coalesce(i.name, u.email, v.email, s.email) AS source,
                    coalesce(i.name_key, u.email, v.email, s.email) AS stored
             FROM unicode_rekeys r
             LEFT JOIN items i ON r.table_name = 'items' AND i.id = r.row_id
             LEFT JOIN users u ON r.table_name = 'users' AND u.id = r.row_id
             LEFT JOIN invites v ON r.table_name = 'invites' AND v.id = r.row_id
             LEFT JOIN submissions s ON r.table_name = 'submissions' AND s.id = r.row_id
             WHERE (r.table_name, r.row_id) > (?1, ?2)
             ORDER BY r.table_name, r.row_id
             LIMIT ?3";
        if postgres {
            sql.replace('?', "$")
        } else {
            sql.to_owned()
        }
    }

    /// The statement writing the new key: `?1`/`$1` the key, `?2`/`$2` the row's id, `?3`/`$3`
    /// the source value it was computed from (a row changed meanwhile is left to its writer).
    pub fn update_sql(self, postgres: bool) -> String {
        let (table, column, source) = match self {
            Self::ItemNameKey => ("items", "name_key", "name"),
            Self::UserEmail => ("users", "email", "email"),
            Self::InviteEmail => ("invites", "email", "email"),
            Self::SubmissionEmail => ("submissions", "email", "email"),
        };
        let p = if postgres { '$' } else { '?' };
        format!("UPDATE {table} SET {column} = {p}1 WHERE id = {p}2 AND {source} = {p}3")
    }

    /// The key `source` has under today's rule, when it is not `stored`. `None` also when the
    /// source no longer passes today's check (an email that stored fine but normalizes to
    /// something invalid): such a row keeps what it has.
    pub fn recompute(self, source: &str, stored: &str) -> Option<String> {
        let key = match self {
            Self::ItemNameKey => trueline_core::validation::name_key(source),
            Self::UserEmail | Self::InviteEmail | Self::SubmissionEmail => {
                trueline_core::accounts::Email::parse(source)
                    .ok()?
                    .as_str()
                    .to_owned()
            }
        };
        (key != stored).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::Rekey;

    #[test]
    fn only_keys_that_changed_are_rewritten() {
        assert_eq!(Rekey::ItemNameKey.recompute("Milk", "milk"), None);
        assert_eq!(
            Rekey::ItemNameKey.recompute("Stra\u{df}e", "stra\u{df}e"),
            Some("strasse".into())
        );
        assert_eq!(
            Rekey::UserEmail.recompute("jose\u{301}@example.com", "jose\u{301}@example.com"),
            Some("jos\u{e9}@example.com".into())
        );
        assert_eq!(
            Rekey::UserEmail.recompute("ann@example.com", "ann@example.com"),
            None
        );
        assert_eq!(Rekey::from_table("items"), Some(Rekey::ItemNameKey));
        assert_eq!(Rekey::from_table("other"), None);
    }

    #[test]
    fn each_table_is_updated_guarded_by_its_source() {
        for (table, sql) in [
            (
                "items",
                "UPDATE items SET name_key = $1 WHERE id = $2 AND name = $3",
            ),
            (
                "users",
                "UPDATE users SET email = $1 WHERE id = $2 AND email = $3",
            ),
            (
                "invites",
                "UPDATE invites SET email = $1 WHERE id = $2 AND email = $3",
            ),
            (
                "submissions",
                "UPDATE submissions SET email = $1 WHERE id = $2 AND email = $3",
            ),
        ] {
            let rekey = Rekey::from_table(table).expect("known");
            assert_eq!(rekey.update_sql(true), sql);
            assert_eq!(rekey.update_sql(false), sql.replace('$', "?"));
        }
        assert_eq!(
            Rekey::InviteEmail.recompute("Jose\u{301}@example.com", "x"),
            Some("jos\u{e9}@example.com".into())
        );
    }
}
