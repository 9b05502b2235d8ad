//! The embedded event log is a directory of its own beside the database, and the two are
//! paired: the log keeps a random id (file `log-id` in its directory) and the database a mark
//! of it (`event_log_mark`: that id and a global position the log had reached). A start that
//! finds another log, a log without an id where the database knows one, or the log ending
//! before the mark (its directory deleted or not mounted, a copy of another one, a backup
//! older than the database, a repair that cut acknowledged events) refuses: serving it would
//! hand out positions and stream versions a second time, and the changes the outbox relay
//! already published into the lost events would be missing from the log for good.
//! `trueline eventlog pair --yes` accepts the log as it is.
//!
//! Made on the embedded configuration (SQLite), where one server owns both. With PostgreSQL
//! each instance keeps its own log directory (which the server warns about), so one mark in
//! the shared database could not describe them. Positions are compared only under `always`
//! durability, where a visible position is a durable one: under `interval`/`never` a crash
//! may rightly lose the last events, and the mark keeps only the log's id.

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use trueline_store::{EventLogMark, Store};
use trueline_store_eventlog::FileEventStore;
use uuid::Uuid;

/// The file in the event log's directory that holds the log's id.
pub const LOG_ID_FILE: &str = "log-id";

/// How often a running server moves the mark up to the log's last position.
const MARK_INTERVAL: Duration = Duration::from_secs(5);

/// The log's id, if its directory has one.
pub fn read_log_id(dir: &Path) -> anyhow::Result<Option<Uuid>> {
    let path = dir.join(LOG_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim())
            .map(Some)
            .with_context(|| format!("{} does not hold a log id", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Gives the log a new id, durably (written aside, synced, renamed, directory synced).
fn write_log_id(dir: &Path) -> anyhow::Result<Uuid> {
    use std::io::Write;
    let id = Uuid::new_v4();
    let path = dir.join(LOG_ID_FILE);
    let temporary = dir.join(format!("{LOG_ID_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    writeln!(file, "{id}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(id)
}

/// Why the log in `dir` is not the one the database was used with, if it is not.
/// `positions_durable`: every visible position was durable (`always` durability); in the
/// other modes a crash may rightly lose the last events, so only the id is compared.
pub fn mismatch(
    dir: &Path,
    log_id: Option<Uuid>,
    position: u64,
    mark: Option<EventLogMark>,
    positions_durable: bool,
) -> Option<String> {
    let mark = mark?;
    let how = "start it with the log it was used with (restore that directory), or accept this \
               log as it is with `trueline eventlog pair --yes` (positions from the mark on \
               may then be handed out again)";
    match log_id {
        None => Some(format!(
            "the event log in {} has no {LOG_ID_FILE}: it is not the log this database was used \
             with (log {}, which had reached global position {}); {how}",
            dir.display(),
            mark.log_id,
            mark.position
        )),
        Some(id) if id != mark.log_id => Some(format!(
            "the event log in {} is log {id}, but this database was used with log {} (which had \
             reached global position {}); {how}",
            dir.display(),
            mark.log_id,
            mark.position
        )),
        Some(_) if positions_durable && position < mark.position => Some(format!(
            "the event log in {} ends at global position {position}, but this database saw it \
             at {}: acknowledged events are missing (a backup older than the database? a \
             repair that cut them?); {how}",
            dir.display(),
            mark.position
        )),
        Some(_) => None,
    }
}

/// Before the log is opened (opening creates a log in an empty or missing directory): a
/// database that knows a log refuses a directory without that log's id, creating nothing
/// (an unmounted volume's mount point stays empty). A database without a mark (used only
/// by versions before the pairing) whose relay published events refuses a directory without
/// segments: it had a log, and the first start must not adopt an empty one in its place.
pub async fn check_before_open(store: &dyn Store, dir: &Path) -> anyhow::Result<()> {
    let found = if dir.is_dir() {
        read_log_id(dir)?
    } else {
        None
    };
    if found.is_some() {
        return Ok(());
    }
    let mark = store
        .event_log_mark()
        .await
        .context("reading the event log mark")?;
    if let Some(why) = mismatch(dir, None, 0, mark, false) {
        anyhow::bail!(why);
    }
    if mark.is_none()
        && !trueline_eventlog::holds_segments(dir)
            .with_context(|| format!("reading {}", dir.display()))?
        && store
            .outbox_ever_published()
            .await
            .context("reading the outbox")?
    {
        anyhow::bail!(
            "the event log in {} is empty or missing, but this database's outbox relay has \
             published events into a log: is the log's volume mounted? Start it with the log \
             it was used with (restore that directory), or accept an empty log with \
             `trueline eventlog pair --yes` (positions from 1 on are then handed out again)",
            dir.display()
        );
    }
    Ok(())
}

/// Checks the log against the database's mark at start-up and moves the mark to the log's
/// position; returns the log's id (given one if it is new, or from before this check) and the
/// position marked.
pub async fn check_at_start(
    store: &dyn Store,
    dir: &Path,
    events: &FileEventStore,
    positions_durable: bool,
    now: time::OffsetDateTime,
) -> anyhow::Result<(Uuid, u64)> {
    let position = events.last_global_position();
    let found = read_log_id(dir)?;
    let mark = store
        .event_log_mark()
        .await
        .context("reading the event log mark")?;
    if let Some(why) = mismatch(dir, found, position, mark, positions_durable) {
        anyhow::bail!(why);
    }
    let log_id = match found {
        Some(id) => id,
        None => write_log_id(dir)?,
    };
    // Without `always` durability a visible position may not survive a crash: the mark
    // keeps the id only (a position of 0 never moves a mark).
    let position = if positions_durable { position } else { 0 };
    store
        .set_event_log_mark(EventLogMark { log_id, position }, now, false)
        .await
        .context("recording the event log mark")?;
    Ok((log_id, position))
}

/// `trueline eventlog pair`: records the log as it is as the database's log.
pub async fn pair(
    store: &dyn Store,
    dir: &Path,
    events: &FileEventStore,
    now: time::OffsetDateTime,
) -> anyhow::Result<(EventLogMark, Option<EventLogMark>)> {
    let before = store.event_log_mark().await?;
    let log_id = match read_log_id(dir)? {
        Some(id) => id,
        None => write_log_id(dir)?,
    };
    let mark = EventLogMark {
        log_id,
        position: events.last_global_position(),
    };
    store.set_event_log_mark(mark, now, true).await?;
    Ok((mark, before))
}

/// Moves the mark up to the log's last position every few seconds (under `always`
/// durability only; the server writes a last one with [`mark_now`] once its workers and
/// requests are done). A mark behind the log is harmless (it is a
/// lower bound); failures are logged and tried again at the next round. A mark that names
/// another log now (an operator paired one while this server ran) stops the marking.
pub async fn keep_marking(
    store: Arc<dyn Store>,
    events: Arc<FileEventStore>,
    log_id: Uuid,
    marked_at_start: u64,
    clock: Arc<dyn trueline_core::clock::Clock>,
    mut stop: watch::Receiver<bool>,
) {
    // From what the start recorded: the relay may publish leftovers before this runs.
    let mut marked = marked_at_start;
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(MARK_INTERVAL) => false,
            _ = stop.changed() => true,
        };
        let position = events.last_global_position();
        if position > marked {
            let mark = EventLogMark { log_id, position };
            match store.set_event_log_mark(mark, clock.now(), false).await {
                Ok(true) => marked = position,
                Ok(false) => {
                    tracing::warn!(
                        event = "eventlog.mark_failed",
                        position,
                        error = "the database's mark names another log or a later position: `trueline eventlog pair` ran meanwhile?",
                    );
                    return;
                }
                Err(e) => tracing::warn!(
                    event = "eventlog.mark_failed",
                    position,
                    error = %e,
                ),
            }
        }
        if stopping || *stop.borrow() {
            return;
        }
    }
}

/// The mark at the log's last position now: the server's last one, after its workers (the
/// relay among them) and requests have stopped appending.
pub async fn mark_now(
    store: &dyn Store,
    events: &FileEventStore,
    log_id: Uuid,
    now: time::OffsetDateTime,
) {
    let position = events.last_global_position();
    if let Err(e) = store
        .set_event_log_mark(EventLogMark { log_id, position }, now, false)
        .await
    {
        tracing::warn!(event = "eventlog.mark_failed", position, error = %e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(log_id: Uuid, position: u64) -> Option<EventLogMark> {
        Some(EventLogMark { log_id, position })
    }

    #[test]
    fn a_log_is_refused_unless_it_is_the_marked_one_at_or_past_the_mark() {
        let dir = Path::new("/data/eventlog");
        let (one, other) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            mismatch(dir, None, 0, None, true),
            None,
            "nothing known yet"
        );
        assert_eq!(mismatch(dir, Some(one), 7, None, true), None);
        assert_eq!(mismatch(dir, Some(one), 7, mark(one, 7), true), None);
        assert_eq!(mismatch(dir, Some(one), 9, mark(one, 7), true), None);
        let lost = mismatch(dir, None, 0, mark(one, 7), true).expect("no id");
        assert!(
            lost.contains("has no log-id") && lost.contains("pair --yes"),
            "{lost}"
        );
        let replaced = mismatch(dir, Some(other), 50, mark(one, 7), true).expect("other log");
        assert!(replaced.contains(&other.to_string()), "{replaced}");
        let behind = mismatch(dir, Some(one), 3, mark(one, 7), true).expect("behind");
        assert!(behind.contains("ends at global position 3"), "{behind}");
        assert_eq!(
            mismatch(dir, Some(one), 3, mark(one, 7), false),
            None,
            "without `always` durability a crash may lose the last events"
        );
    }

    #[test]
    fn a_log_id_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(read_log_id(dir.path()).expect("read"), None);
        let id = write_log_id(dir.path()).expect("write");
        assert_eq!(read_log_id(dir.path()).expect("read"), Some(id));
        std::fs::write(dir.path().join(LOG_ID_FILE), "garbage").expect("write");
        assert!(read_log_id(dir.path()).is_err());
    }
}
