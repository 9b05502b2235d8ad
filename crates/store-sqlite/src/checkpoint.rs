//! The WAL checkpointer: copies the WAL back into the database file beside the writer, and
//! makes sure the WAL starts over while writes keep coming.

use crate::writer;
use sqlx::SqlitePool;
use std::sync::Arc;
use std::time::Duration;

/// How often the checkpointer copies the WAL back into the database file. SQLite would
/// otherwise do it inside whichever commit crosses its auto-checkpoint threshold, stalling
/// the single writer (and every request waiting for it) for the copy and the file's fsync.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// WAL frames (pages) after which a checkpoint round also holds the writer so the WAL starts
/// over ([`crate::SqliteOptions::wal_restart_frames`]). Each held round stalls every write
/// for as long as it copies what was committed during the round before it (12–15 ms under
/// deltas spread over many items, where the WAL grows by ~70,000 frames a second): at
/// SQLite's own auto-checkpoint threshold of 1,000 frames that was every round, 4–5 times a
/// second and ~6 % of the writer's time; at 48,000 (~190 MiB) it is 1–2 times a second
/// (docs/benchmarks.md, "2026-12-04, afternoon").
pub(crate) const RESTART_AFTER_FRAMES: i64 = 48_000;

/// The most bytes one WAL frame takes: a frame header and a page of the default size.
pub(crate) const FRAME_BYTES: i64 = 24 + 4096;

/// What SQLite cuts the WAL file back to when it starts over, for `restart_frames`: the
/// frames of a restart plus what one round can add (64 MiB). The file must keep the blocks
/// the next cycle writes again: cut back below that, the filesystem allocates (and zeroes)
/// them anew every cycle, which cost more than the held rounds saved.
pub(crate) fn wal_size_limit(restart_frames: i64) -> i64 {
    restart_frames.max(0) * FRAME_BYTES + 64 * 1024 * 1024
}

/// Checkpoints on their own connection until the store is closed or dropped; a final one
/// truncates the WAL.
///
/// Each round first runs a passive checkpoint beside the writer (it never waits for, nor
/// blocks, the writer or readers) and copies most of the WAL into the database file. But a
/// checkpoint running while the writer commits never catches up with it, and SQLite starts
/// the WAL over only when a write transaction begins with every frame copied: without more,
/// the WAL grew by every commit for as long as writes kept coming (1.4 GB in 22 s of
/// `spread`), every commit appended to fresh blocks of the file, which the filesystem
/// allocated and zeroed (16 % of the server's CPU) and `fdatasync` had to journal. So when
/// the WAL holds more than `restart_frames`, a second passive checkpoint runs with the
/// writer held: it only copies what was committed during the first, and the writer's next
/// transaction writes from the start of the WAL again, over blocks that exist.
pub(crate) async fn checkpoint_continuously(
    checkpointer: SqlitePool,
    writer: Arc<writer::Writer>,
    alive: std::sync::Weak<()>,
    closing: Arc<tokio::sync::Notify>,
    restart_frames: i64,
) {
    let mut failures = Failures::default();
    while !writer.is_closed() && alive.strong_count() > 0 {
        tokio::select! {
            () = tokio::time::sleep(CHECKPOINT_INTERVAL) => {}
            () = closing.notified() => {}
        }
        let round = match checkpoint(&checkpointer).await {
            Ok(frames) if frames > restart_frames => {
                let Ok(_held) = writer.acquire().await else {
                    continue;
                };
                checkpoint(&checkpointer).await.map(|_| ())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match round {
            Ok(()) => {
                if let Some(failed) = failures.succeeded() {
                    tracing::info!(
                        event = "sqlite.checkpoint_recovered",
                        failed_rounds = failed,
                        "WAL checkpoints work again"
                    );
                }
            }
            Err(e) => {
                if let Some(since_logged) = failures.failed(std::time::Instant::now()) {
                    tracing::warn!(
                        event = "error.db",
                        error = %e,
                        failed_rounds_since_last_line = since_logged,
                        "WAL checkpoint failed"
                    );
                }
            }
        }
    }
    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&checkpointer)
        .await;
    checkpointer.close().await;
}

/// How often a checkpoint that keeps failing is logged: a full disk fails every round
/// (five a second), and a line per round would fill what room the logs have left.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Failed rounds in a row, and when one was last logged.
#[derive(Default)]
struct Failures {
    in_a_row: u64,
    not_logged: u64,
    last_logged: Option<std::time::Instant>,
}

impl Failures {
    /// A round failed at `now`: `Some(rounds failed since the last line)` if this one is to
    /// be logged (the first of a run, then one a minute).
    fn failed(&mut self, now: std::time::Instant) -> Option<u64> {
        self.in_a_row += 1;
        self.not_logged += 1;
        let due = self.in_a_row == 1
            || self
                .last_logged
                .is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.not_logged))
    }

    /// A round succeeded: `Some(rounds failed in a row)` if it ends a run of failures.
    fn succeeded(&mut self) -> Option<u64> {
        let failed = std::mem::take(&mut self.in_a_row);
        self.not_logged = 0;
        self.last_logged = None;
        (failed > 0).then_some(failed)
    }
}

/// A passive checkpoint; returns the frames in the WAL.
async fn checkpoint(checkpointer: &SqlitePool) -> Result<i64, sqlx::Error> {
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(checkpointer)
            .await?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::{FAILURE_LOG_INTERVAL, Failures};
    use crate::{SqliteOptions, SqliteStore};

    /// A store on `t.db` in `dir`.
    async fn open(dir: &tempfile::TempDir, options: SqliteOptions) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        SqliteStore::connect(&url, options).await.unwrap()
    }

    #[test]
    fn a_checkpoint_failing_every_round_is_logged_once_a_minute_and_its_end_once() {
        let mut failures = Failures::default();
        let start = std::time::Instant::now();
        let at = |ms: u64| start + std::time::Duration::from_millis(ms);
        assert_eq!(failures.failed(at(0)), Some(1), "the first failure");
        let logged: Vec<Option<u64>> = (1..=300).map(|i| failures.failed(at(i * 200))).collect();
        let lines: Vec<u64> = logged.iter().flatten().copied().collect();
        assert_eq!(
            lines,
            vec![300],
            "one line at the minute, counting the rounds since"
        );
        assert_eq!(
            failures.failed(at(300 * 200) + FAILURE_LOG_INTERVAL),
            Some(1)
        );
        assert_eq!(
            failures.succeeded(),
            Some(302),
            "the run's end, with its length"
        );
        assert_eq!(failures.succeeded(), None);
        assert_eq!(
            failures.failed(at(61_000)),
            Some(1),
            "a new run is logged at once"
        );
    }

    /// SQLite cuts the WAL back to a size that holds a whole cycle's frames: cut back below
    /// that, every cycle allocated the file's blocks anew.
    #[tokio::test]
    async fn the_wal_is_cut_back_no_further_than_a_cycle_writes() {
        use super::{FRAME_BYTES, RESTART_AFTER_FRAMES, wal_size_limit};
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, SqliteOptions::default()).await;
        let limit: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(limit, wal_size_limit(RESTART_AFTER_FRAMES));
        assert!(limit > RESTART_AFTER_FRAMES * FRAME_BYTES);
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(
            page_size + 24,
            FRAME_BYTES,
            "a frame is a header and a page"
        );
        store.close().await;
    }

    /// A store closed with writes in its WAL leaves no WAL behind (the checkpointer's last
    /// round): before, the process could exit first, leaving a WAL of up to its size limit.
    #[tokio::test]
    async fn closing_the_store_copies_the_wal_back_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, SqliteOptions::default()).await;
        {
            let mut tx = store.writer.begin().await.unwrap();
            sqlx::query("CREATE TABLE t (x BLOB)")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO t VALUES (zeroblob(100000))")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let wal = dir.path().join("t.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 100_000);
        store.close().await;
        let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            left, 0,
            "the WAL is gone (or empty) once the store is closed"
        );
        // Its content is in the database file.
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}",
            dir.path().join("t.db").display()
        ))
        .await
        .unwrap();
        let size: i64 = sqlx::query_scalar("SELECT length(x) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(size, 100_000);
    }

    /// Without the held second round the WAL only grew while commits kept coming.
    #[tokio::test]
    async fn the_wal_starts_over_under_continuous_writes_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        // A low threshold, so that a test's commits cross it several times.
        let options = SqliteOptions {
            wal_restart_frames: 1_000,
            ..SqliteOptions::default()
        };
        let store = open(&dir, options).await;
        {
            let mut c = store.writer.acquire().await.unwrap();
            sqlx::query("CREATE TABLE t (x BLOB)")
                .execute(&mut *c)
                .await
                .unwrap();
        }
        // Short reads all the time, as the relay and GETs do. (A long one holds its snapshot,
        // and no checkpoint can copy past it nor the WAL start over until it ends.)
        let reader = store.reader.clone();
        let reading = tokio::spawn(async move {
            loop {
                let _ = sqlx::query("SELECT length(x) FROM t WHERE rowid = 1")
                    .fetch_one(&reader)
                    .await;
                tokio::task::yield_now().await;
            }
        });
        let started = std::time::Instant::now();
        let mut commits = 0u64;
        while commits < 2_000 || started.elapsed() < std::time::Duration::from_millis(1_500) {
            let mut tx = store.writer.begin().await.unwrap();
            // At least one new 4 KiB page per commit.
            sqlx::query("INSERT INTO t VALUES (zeroblob(4000))")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            commits += 1;
        }
        reading.abort();
        // The WAL header's checkpoint sequence number (bytes 12..16, big-endian) counts the
        // times the WAL started over.
        let header = std::fs::read(dir.path().join("t.db-wal")).unwrap();
        let restarts = u32::from_be_bytes(header[12..16].try_into().unwrap());
        assert!(
            restarts >= 2,
            "the WAL started over {restarts} time(s) in {commits} commits over {:?}",
            started.elapsed()
        );
        store.close().await;
    }
}
