//! Command-line interface.

use crate::config::{Config, Overrides};
use crate::startup::{Application, open_store, shutdown_signal};
use crate::telemetry;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "trueline", version, about = "The backend that never lies.")]
pub struct Cli {
    /// Config file (default: ./trueline.toml if it exists).
    #[arg(long, global = true, env = "TRUELINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory for the embedded database and event log (default ./data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… (default: SQLite in the data directory).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long, global = true)]
    pub bind: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the effective configuration (secrets redacted).
    Config,
    /// Apply, revert or list schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Inspect or repair the embedded event log (stop the server first: it holds the lock).
    Eventlog {
        #[command(subcommand)]
        action: EventlogAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventlogAction {
    /// Check every record and checkpoint; exit 1 if anything is damaged.
    Verify,
    /// Print records as NDJSON (one object per line) on stdout.
    Dump {
        /// First global position to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// Cut the log after its last good record (damaged bytes are moved aside, not deleted),
    /// rewrite a damaged segment header from the file name when the records after it verify,
    /// and rebuild a stream registry that is missing or damaged in a log that retention
    /// trimmed. Refuses, changing nothing, when the cut would move aside records whose
    /// checksums verify (unless --discard-valid-records), and for a log written by a newer
    /// version.
    Repair {
        /// Required: repairing discards the damaged records and what follows them (and a lost
        /// registry's numbers of streams whose events were all dropped).
        #[arg(long)]
        yes: bool,
        /// Also accept moving aside records whose checksums verify (after a damaged record in
        /// the middle of a segment, whole later segments): without it repair refuses such a
        /// cut. Restoring the log from a backup loses nothing; this loses those records.
        #[arg(long)]
        discard_valid_records: bool,
    },
    /// Accept the event log as it is as the database's log: a start refuses a log the
    /// database was not used with, or one that ends before the position the database saw.
    Pair {
        /// Required: positions and stream versions past the log's end that the database's
        /// earlier log handed out may be handed out again.
        #[arg(long)]
        yes: bool,
    },
    /// Let a log written before 2026-12-03 (no `id-scope.key`) open with that version's id
    /// mapping (ids XORed with the organization id).
    KeepLegacyIds {
        /// Required: that mapping lets an organization that knows another's id and one of its
        /// event ids probe or claim that id.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the most recent migrations.
    Down {
        /// How many migrations to revert.
        #[arg(long, default_value_t = 1)]
        steps: u32,
        /// Go ahead: down migrations drop the tables and columns they remove, with their
        /// rows. Without it, the migrations that would be reverted are listed.
        #[arg(long)]
        yes: bool,
    },
    /// List migrations and whether each is applied.
    Status,
}

impl Cli {
    fn config(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            bind: self.bind.clone(),
            database_url: self.database_url.clone(),
        };
        Config::load(self.config.as_deref(), &overrides).context("loading configuration")
    }
}

fn banner(config: &Config, addr: std::net::SocketAddr) -> String {
    // The database in effect (an explicit database.url wins over the data directory).
    let storage = if config.is_postgres() {
        "postgres".to_owned()
    } else {
        format!(
            "sqlite {}",
            crate::startup::sqlite_path(&config.database_url())
        )
    };
    format!(
        "Trueline is listening on http://{addr}  (storage: {storage})\n\
         Create the first account:\n  \
         curl -s -X POST http://{addr}/api/v1/auth/signup -H 'content-type: application/json' \\\n    \
         -d '{{\"email\":\"you@example.com\",\"password\":\"a long passphrase\",\"organization_name\":\"My shop\"}}'\n\
         API reference: http://{addr}/docs   Stop: Ctrl-C\n"
    )
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init_logging(&config.log.level);
            let app = Application::build(config.clone()).await?;
            eprint!("{}", banner(&config, app.local_addr()));
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Config => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Migrate { action } => {
            // Status and down only read or remove: a mistyped --data-dir must not create a
            // database to report every migration pending in (or to revert nothing in).
            let url = config.database_url();
            if !matches!(action, MigrateAction::Up) && url.starts_with("sqlite:") {
                let path = crate::startup::sqlite_path(&url);
                anyhow::ensure!(
                    std::path::Path::new(&path).exists(),
                    "there is no database at {path} (the server creates it at its first start; check --data-dir)"
                );
            }
            // Not under a running server (SQLite: it holds the database's server lock).
            let _lock = match action {
                MigrateAction::Status => None,
                _ => crate::startup::lock_sqlite(&config)?,
            };
            let store = match action {
                MigrateAction::Status => crate::startup::open_store_as_guest(&config).await?,
                _ => open_store(&config).await?,
            };
            match action {
                MigrateAction::Up => {
                    let applied = store.migrate_up().await?;
                    println!("applied {} migration(s): {applied:?}", applied.len());
                }
                MigrateAction::Down { steps, yes } => {
                    let unknown: Vec<i64> = store
                        .migration_status()
                        .await?
                        .into_iter()
                        .filter(|m| m.description == trueline_store::UNKNOWN_MIGRATION)
                        .map(|m| m.version)
                        .collect();
                    anyhow::ensure!(
                        unknown.is_empty(),
                        "the database has migrations this binary does not know ({unknown:?}, \
                         applied by a newer version): revert them with that version"
                    );
                    if !yes {
                        let applied: Vec<_> = store
                            .migration_status()
                            .await?
                            .into_iter()
                            .filter(|m| m.applied)
                            .collect();
                        let undone: Vec<String> = applied
                            .iter()
                            .rev()
                            .take(steps as usize)
                            .map(|m| format!("{} ({})", m.version, m.description))
                            .collect();
                        anyhow::bail!(
                            "migrate down would revert {} migration(s): {}; down migrations drop \
                             the tables and columns they remove, with their rows: run it again \
                             with --yes",
                            undone.len(),
                            undone.join(", ")
                        );
                    }
                    let reverted = store.migrate_down(steps).await?;
                    println!("reverted {} migration(s): {reverted:?}", reverted.len());
                }
                MigrateAction::Status => {
                    let status = store.migration_status().await?;
                    for m in &status {
                        let state = if m.applied { "applied" } else { "pending" };
                        println!("{:>4}  {:<8} {}", m.version, state, m.description);
                    }
                    let unknown = status
                        .iter()
                        .filter(|m| m.description == trueline_store::UNKNOWN_MIGRATION)
                        .count();
                    anyhow::ensure!(
                        unknown == 0,
                        "{unknown} applied migration(s) are unknown to this binary: this \
                         database was migrated by a newer version, which this one cannot serve"
                    );
                }
            }
            Ok(())
        }
        Command::Eventlog {
            action: EventlogAction::Pair { yes },
        } => pair_event_log(&config, yes).await,
        Command::Eventlog { action } => eventlog(&config, action),
    }
}

/// `trueline eventlog pair`: the server must be stopped (the log's lock, and on SQLite the
/// database's server lock).
async fn pair_event_log(config: &Config, yes: bool) -> anyhow::Result<()> {
    let dir = config.eventlog_dir();
    anyhow::ensure!(
        config.events.backend == "file" && !config.is_postgres(),
        "only the embedded configuration (SQLite and the file event log) pairs its event log \
         with the database"
    );
    anyhow::ensure!(
        yes,
        "pair makes the database accept the event log in {} as it is; positions and stream \
         versions the earlier log handed out past this log's end may be handed out again: \
         run it again with --yes",
        dir.display()
    );
    // A mistyped --data-dir must not create a database (and a log) to pair.
    let path = crate::startup::sqlite_path(&config.database_url());
    anyhow::ensure!(
        std::path::Path::new(&path).exists(),
        "there is no database at {path} (check --data-dir)"
    );
    let _lock = crate::startup::lock_sqlite(config)?;
    let store = open_store(config).await?;
    store.migrate_up().await.context("applying migrations")?;
    // A missing directory is a new, empty log: what the operator asked for.
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let events =
        trueline_store_eventlog::FileEventStore::open(&dir, crate::startup::file_options(config)?)
            .with_context(|| format!("opening the event log in {}", dir.display()))?;
    let (mark, before) = crate::log_pairing::pair(
        store.as_ref(),
        &dir,
        &events,
        time::OffsetDateTime::now_utc(),
    )
    .await?;
    match before {
        Some(b) => println!(
            "the database now takes log {} (at global position {}) in {}; it was used with log {} at global position {}",
            mark.log_id,
            mark.position,
            dir.display(),
            b.log_id,
            b.position
        ),
        None => println!(
            "the database now takes log {} (at global position {}) in {}",
            mark.log_id,
            mark.position,
            dir.display()
        ),
    }
    Ok(())
}

fn eventlog(config: &Config, action: EventlogAction) -> anyhow::Result<()> {
    let dir = config.eventlog_dir();
    anyhow::ensure!(dir.is_dir(), "no event log at {}", dir.display());
    match action {
        EventlogAction::Verify => {
            refuse_while_in_use(&dir)?;
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let report = trueline_eventlog::verify(&dir, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            println!(
                "{} segment(s), {} record(s), {} bytes, {} checkpoint(s) ok",
                report.segments, report.records, report.bytes, report.checkpoints_ok
            );
            for p in &report.problems {
                println!(
                    "problem: {:?} in {} at offset {}: {}",
                    p.kind,
                    p.file.display(),
                    p.offset,
                    p.detail
                );
            }
            // Damaged or stale checkpoints are acceleration the server rebuilds from the log
            // at its next start: reported, but the log itself is whole (exit 0).
            anyhow::ensure!(
                report.is_clean(),
                "{} problem(s) found",
                report.problems.len()
            );
            if !report.problems.is_empty() {
                println!(
                    "the log is whole: only index checkpoints are damaged or stale, and the server rebuilds them from the log at its next start"
                );
            }
            Ok(())
        }
        EventlogAction::Dump { from } => {
            refuse_while_in_use(&dir)?;
            let stdout = std::io::stdout();
            // Without the key (lost, or a log from before it) the records are still worth
            // reading: their ids are printed as stored, and the operator is told so.
            let ids = match trueline_store_eventlog::IdScope::read(&dir) {
                Ok(ids) => Some(ids),
                Err(e) => {
                    eprintln!("{e}: ids are printed as stored, not as the API shows them");
                    None
                }
            };
            let mut out = ApiIds {
                ids,
                out: std::io::BufWriter::new(stdout.lock()),
                pending: Vec::new(),
                closed: false,
            };
            let dumped = trueline_eventlog::dump(&dir, &mut out, from);
            let flushed = std::io::Write::flush(&mut out);
            if out.closed {
                // The reader stopped reading (`dump | head`): not a failure of the dump.
                return Ok(());
            }
            let count = dumped?;
            flushed?;
            eprintln!("{count} record(s)");
            Ok(())
        }
        EventlogAction::Pair { .. } => {
            anyhow::bail!("`pair` needs the database: handled by `pair_event_log`")
        }
        EventlogAction::KeepLegacyIds { yes } => {
            anyhow::ensure!(
                yes,
                "a log kept with its legacy ids lets an organization that knows another's id and one of its event ids probe or claim that id; pass --yes to accept, or start a new log"
            );
            // Opening takes the directory's lock (refused while a server has the log open)
            // and tells whether there is anything to keep: an empty log gets a key of its own.
            let (log, _) =
                trueline_eventlog::EventLog::open(&dir, trueline_eventlog::Options::default())
                    .with_context(|| format!("opening the event log in {}", dir.display()))?;
            anyhow::ensure!(
                log.last_global_position() > 0,
                "the event log in {} holds no events: the server gives it a key of its own; there are no legacy ids to keep",
                dir.display()
            );
            trueline_store_eventlog::IdScope::keep_legacy(&dir)?;
            drop(log);
            println!(
                "{} now keeps the ids of its events as they were written (XORed with the organization id)",
                dir.display()
            );
            Ok(())
        }
        EventlogAction::Repair {
            yes,
            discard_valid_records,
        } => {
            anyhow::ensure!(
                yes,
                "repair cuts the log after its last good record (what follows is moved aside; records whose checksums verify only with --discard-valid-records); run `trueline eventlog verify` first, then `repair --yes`"
            );
            let report = trueline_eventlog::repair(
                &dir,
                trueline_eventlog::RepairOptions {
                    discard_valid_records,
                },
            )?;
            for h in &report.headers_rebuilt {
                println!(
                    "rewrote the damaged header of {} from its file name (its records verify)",
                    h.display()
                );
            }
            if let Some(t) = &report.truncated {
                println!(
                    "cut {} at offset {} ({} bytes): {}",
                    t.segment.display(),
                    t.offset,
                    t.truncated_bytes,
                    t.reason
                );
            }
            if report.segments_moved_aside > 0 {
                println!(
                    "moved {} whole segment(s) aside",
                    report.segments_moved_aside
                );
            }
            if report.truncated.is_none() && report.segments_moved_aside == 0 {
                println!("nothing to cut");
            }
            for q in &report.quarantined {
                println!("moved aside: {}", q.display());
            }
            match report.positions_moved_aside {
                Some((first, last)) => println!(
                    "{} record(s) whose checksums verify were moved aside (global positions {first} to {last})",
                    report.records_moved_aside
                ),
                None => println!("0 records whose checksums verify were moved aside"),
            }
            if report.registry_rebuilt {
                println!(
                    "the stream registry was missing or damaged and has been rebuilt from the log: \
                     streams and organizations whose events retention dropped entirely count from 1 again"
                );
            }
            println!(
                "the log now ends at global position {}",
                report.last_global_position
            );
            Ok(())
        }
    }
}

/// `verify` and `dump` read a log no server appends to: a tail being written looks torn, and
/// a segment retention drops mid-scan is an I/O error.
fn refuse_while_in_use(dir: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !trueline_eventlog::in_use(dir)?,
        "{} is in use by a running trueline server: stop it first",
        dir.display()
    );
    Ok(())
}

/// Rewrites each dumped NDJSON line's `id` from the engine's stored form to the id the API
/// shows (the adapter stores `id XOR a keyed mask of the organization`, see
/// `trueline_store_eventlog::id_scope`), so an operator can search a dump for an id a client
/// reported.
struct ApiIds<W: std::io::Write> {
    /// `None`: ids stay as stored.
    ids: Option<trueline_store_eventlog::IdScope>,
    out: W,
    /// The bytes of a line not complete yet.
    pending: Vec<u8>,
    /// The reader went away (a broken pipe).
    closed: bool,
}

impl<W: std::io::Write> ApiIds<W> {
    /// The line as dumped, with only its `id` replaced in place: parsing and writing the
    /// record again changed what it carries (numbers beyond a double's precision, key
    /// order, payloads nested past the parser's depth went out with the stored id).
    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut line = line.to_vec();
        if let Some(ids) = &self.ids
            && let (Some(org_at), Some(id_at)) = (field_at(&line, b"org"), field_at(&line, b"id"))
            && let (Some(org), Some(stored)) = (uuid_at(&line, org_at), uuid_at(&line, id_at))
        {
            let id = trueline_store_eventlog::api_event_id(ids, org, stored);
            line[id_at..id_at + 36].copy_from_slice(id.hyphenated().to_string().as_bytes());
        }
        let written = self
            .out
            .write_all(&line)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = &written {
            self.closed |= e.kind() == std::io::ErrorKind::BrokenPipe;
        }
        written
    }
}

/// Where the value of the dump's top-level string field `name` starts: its first
/// `"name":"`. The dump writes `org` and `id` before the metadata and payload, and a quote
/// inside a JSON string is always escaped, so no earlier match can come from a value.
fn field_at(line: &[u8], name: &[u8]) -> Option<usize> {
    let mut pattern = Vec::with_capacity(name.len() + 5);
    pattern.push(b'"');
    pattern.extend_from_slice(name);
    pattern.extend_from_slice(b"\":\"");
    line.windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .map(|at| at + pattern.len())
}

fn uuid_at(line: &[u8], at: usize) -> Option<uuid::Uuid> {
    let text = std::str::from_utf8(line.get(at..at + 36)?).ok()?;
    uuid::Uuid::parse_str(text).ok()
}

impl<W: std::io::Write> std::io::Write for ApiIds<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.line(&line[..end])?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.line(&rest)?;
        }
        let flushed = self.out.flush();
        if let Err(e) = &flushed {
            self.closed |= e.kind() == std::io::ErrorKind::BrokenPipe;
        }
        flushed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use std::io::Write as _;

    /// Only the id changes: a number past a double's precision, the key order and the rest
    /// of the line stay byte for byte.
    #[test]
    fn a_dumped_line_keeps_its_bytes_but_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let ids = trueline_store_eventlog::IdScope::open(dir.path(), true).unwrap();
        let org = uuid::Uuid::now_v7();
        let stored = uuid::Uuid::now_v7();
        let line = format!(
            r#"{{"global_position":1,"org_position":1,"org":"{org}","stream":"s","stream_version":1,"event_type":"t","id":"{stored}","timestamp_micros":1,"metadata":{{"z":1,"a":2}},"payload":{{"amount":123456789012345678901,"id":"{stored}"}}}}"#
        );
        let mut out = ApiIds {
            ids: Some(ids),
            out: Vec::new(),
            pending: Vec::new(),
            closed: false,
        };
        out.write_all(line.as_bytes()).unwrap();
        out.write_all(b"\n").unwrap();
        let written = String::from_utf8(out.out).unwrap();
        let api = trueline_store_eventlog::api_event_id(out.ids.as_ref().unwrap(), org, stored);
        assert_ne!(api, stored);
        let expected = line.replacen(&stored.to_string(), &api.to_string(), 1) + "\n";
        assert_eq!(written, expected);
    }
}
