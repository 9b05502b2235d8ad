//! Schema migrations: reversible (`*.up.sql` / `*.down.sql`), embedded in the binary.

use crate::StoreError;

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
