//! Starting and stopping a `trueline` server as a child process on a temporary data
//! directory (`--spawn`).
//!
//! The child's stdout (JSON log lines) goes to a file in that directory: the tool reads the
//! `server.started` line from it for the address, and never has to keep draining a pipe
//! while measuring.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a server may take to migrate and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct SpawnedServer {
    child: Child,
    pub address: String,
    pub pid: u32,
    pub log_path: PathBuf,
    /// Dropped last: removes the data directory.
    _dir: tempfile::TempDir,
}

/// The default server binary: `$CARGO_TARGET_DIR/release/trueline`, else
/// `target/release/trueline`.
pub fn default_server_bin() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("release")
        .join("trueline")
}

/// The address of a `server.started` log line (`{"event":"server.started","address":…}`).
pub fn started_address(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("event")?.as_str()? != "server.started" {
        return None;
    }
    value.get("address")?.as_str().map(str::to_owned)
}

/// The address of the start-up banner the server prints on stderr at every log level
/// (`Trueline is listening on http://ADDR  (storage: …)`): with `--server-log-level warn`
/// there is no `server.started` line.
pub fn banner_address(line: &str) -> Option<String> {
    let rest = line.strip_prefix("Trueline is listening on http://")?;
    rest.split_whitespace().next().map(str::to_owned)
}

impl SpawnedServer {
    pub async fn start(
        bin: &Path,
        database_url: Option<&str>,
        log_level: Option<&str>,
    ) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!(
                "no server binary at {} (build it with `cargo build --release -p trueline`, or \
                 pass --server-bin)",
                bin.display()
            );
        }
        // The server runs in its own directory, so a relative path must be resolved here.
        let bin =
            &std::fs::canonicalize(bin).with_context(|| format!("resolving {}", bin.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("trueline-bench-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).context("creating the server log file")?;
        let errors = std::fs::File::create(dir.path().join("server.stderr"))
            .context("creating the server's stderr file")?;
        let mut command = Command::new(bin);
        command
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // Its own directory: a stray ./trueline.toml must not change what is measured.
            .current_dir(dir.path())
            .env("TRUELINE_SERVER__SHUTDOWN_DRAIN_MS", "0")
            // All load comes from one IP and a few tokens: the per-IP and per-token rate
            // limits would measure themselves, not the server.
            .env("TRUELINE_LIMITS__ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            // Its start-up banner and anything it prints on stderr stay out of the report.
            .stderr(Stdio::from(errors));
        if let Some(url) = database_url {
            command.env("TRUELINE_DATABASE__URL", url);
        }
        if let Some(level) = log_level {
            command.env("TRUELINE_LOG__LEVEL", level);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut server = Self {
            child,
            address: String::new(),
            pid,
            log_path,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let mut log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
            let stderr_path = server.log_path.with_file_name("server.stderr");
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let started = log.lines().find_map(started_address);
            if let Some(address) = started.or_else(|| stderr.lines().find_map(banner_address)) {
                server.address = format!("http://{address}");
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                log.push_str(&stderr);
                bail!(
                    "the server exited ({status}) before starting; its log:\n{}",
                    tail(&log)
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the server did not start within {START_TIMEOUT:?}; its log:\n{}",
                    tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid.to_string())
                .status();
            let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
            while self.child.try_wait()?.is_none() {
                if tokio::time::Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        // An error path that skipped `stop` must not leave a server running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_the_server_started_line_or_the_banner() {
        let line = r#"{"timestamp":"…","level":"INFO","event":"server.started","address":"127.0.0.1:43123","backend":"sqlite"}"#;
        assert_eq!(started_address(line).as_deref(), Some("127.0.0.1:43123"));
        assert_eq!(started_address(r#"{"event":"db.migrated"}"#), None);
        assert_eq!(started_address("not json"), None);
        assert_eq!(
            banner_address("Trueline is listening on http://127.0.0.1:43123  (storage: sqlite x)")
                .as_deref(),
            Some("127.0.0.1:43123")
        );
        assert_eq!(banner_address("Create the first account:"), None);
    }

    #[tokio::test]
    async fn a_missing_binary_is_reported_with_how_to_build_it() {
        let error = SpawnedServer::start(Path::new("/nonexistent/trueline"), None, None)
            .await
            .err()
            .unwrap();
        assert!(format!("{error}").contains("cargo build --release -p trueline"));
    }
}
