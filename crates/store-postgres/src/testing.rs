//! Throwaway databases for tests: each test creates its own database on the server named by
//! `TRUELINE_TEST_POSTGRES_URL` and drops it afterwards, so tests never share state.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The environment variable naming the PostgreSQL server tests may create databases on.
pub const TEST_URL_ENV: &str = "TRUELINE_TEST_POSTGRES_URL";

/// A database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

/// Replaces the database name in a `postgres://user@host:port/db?params` URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{}", &base[..authority_end], database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl TestDatabase {
    /// Creates a fresh, empty database. Panics with a clear message when the server URL is
    /// not configured: PostgreSQL tests are `#[ignore]`d by default and must never pass by
    /// silently doing nothing.
    pub async fn create() -> Self {
        let admin_url = std::env::var(TEST_URL_ENV).unwrap_or_else(|_| {
            panic!("{TEST_URL_ENV} is not set; e.g. postgres://postgres@127.0.0.1:5432/postgres")
        });
        let name = format!("trueline_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {TEST_URL_ENV}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
        let _ = admin.close().await;
        Self {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside (or outside) a runtime; a dedicated thread with its own runtime
        // works in both cases. FORCE disconnects pools that are still open.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
