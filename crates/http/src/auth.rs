//! Credentials: API tokens, password hashing and the login-failure limiter.
//!
//! Tokens are `tl_` + 43 base64url characters (32 random bytes = 256 bits). Only the SHA-256
//! of a token is stored, so a database leak yields no usable token, and lookup by hash means
//! no secret is ever compared byte by byte in application code. Passwords are argon2id.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trueline_core::accounts::Password;

pub const TOKEN_PREFIX: &str = "tl_";
const TOKEN_SECRET_BYTES: usize = 32;
/// `tl_` + base64url(32 bytes) without padding.
pub const TOKEN_LENGTH: usize = 3 + 43;

/// A freshly issued token: the secret (shown once) and the hash to store.
pub struct IssuedToken {
    pub secret: String,
    pub hash: [u8; 32],
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedToken([redacted])")
    }
}

pub fn issue_token() -> Result<IssuedToken, getrandom::Error> {
    let mut secret = [0u8; TOKEN_SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash_token(&secret);
    Ok(IssuedToken { secret, hash })
}

pub fn hash_token(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a presented string could be one of our tokens at all (saves a database lookup and
/// keeps garbage out of the query).
pub fn looks_like_token(candidate: &str) -> bool {
    candidate.len() == TOKEN_LENGTH
        && candidate.starts_with(TOKEN_PREFIX)
        && candidate[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for PasswordCost {
    /// OWASP's argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

/// Hashes and verifies passwords on the blocking pool (argon2 is deliberately slow), a few at
/// a time: each takes `memory_kib` (19 MiB) and a core for tens of milliseconds, and without
/// a bound a burst of logins from many addresses (each within its own rate limit) ran as many
/// at once as the blocking pool has threads (512: ~9.5 GiB). Beyond the bound they queue, and
/// the request timeout applies while they wait.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    running: Arc<tokio::sync::Semaphore>,
    /// A hash of a random password, verified against when the email is unknown so that login
    /// takes the same time whether or not an account exists.
    dummy_hash: Arc<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl PasswordHasher {
    pub fn new(cost: PasswordCost) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = argon2
            .hash_password(uuid::Uuid::new_v4().as_bytes())
            .map_err(|e| PasswordError::Hash(e.to_string()))?
            .to_string();
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Self {
            argon2: Arc::new(argon2),
            running: Arc::new(tokio::sync::Semaphore::new(2 * cores)),
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        // Owned and moved into the blocking task: a request dropped meanwhile (timeout, client
        // gone) must not free the place of a hash that still runs.
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let argon2 = self.argon2.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            let _running = running;
            argon2
                .hash_password(password.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hash(e.to_string()))
        })
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?
    }

    /// Constant-time verification (argon2 compares digests in constant time). With `None`
    /// (unknown email) a dummy hash is verified so the response time reveals nothing.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> bool {
        let Ok(running) = self.running.clone().acquire_owned().await else {
            return false;
        };
        let argon2 = self.argon2.clone();
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let password = password.to_owned();
        let verified = tokio::task::spawn_blocking(move || {
            let _running = running;
            PasswordHash::new(&stored)
                .map(|hash| argon2.verify_password(password.as_bytes(), &hash).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        known && verified
    }
}

/// Counts failed logins per key (an email, a client IP) in a fixed window. Only failures
/// count, so a user who types the right password is never locked out by their own logins.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Entries kept at most (bounds memory and the sweep under a spraying attack): when full,
/// expired windows are swept and, if that is not enough, the oldest windows are dropped down
/// to half, so a sweep runs at most once per `LOGIN_LIMITER_ENTRIES_MAX / 2` new keys.
const LOGIN_LIMITER_ENTRIES_MAX: usize = 100_000;

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds to wait)` if `key` has used up its failures allowance (scaled by
    /// `factor`, e.g. 4× for an IP shared by several users). Tests only: logins use
    /// [`LoginLimiter::attempt`], which checks and counts under one lock.
    #[cfg(test)]
    pub fn blocked(&self, key: &str, factor: u32) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (count, since) = failures.get(key)?;
        let elapsed = since.elapsed();
        if elapsed >= self.window || *count < self.max_failures * factor {
            return None;
        }
        Some((self.window - elapsed).as_secs().max(1))
    }

    // The check and the count apart (tests only: logins use `attempt`, which does both
    // under one lock).
    #[cfg(test)]
    pub fn record_failure(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        self.count_locked(&mut failures, key);
    }

    fn count_locked(&self, failures: &mut HashMap<String, (u32, Instant)>, key: &str) {
        if failures.len() >= LOGIN_LIMITER_ENTRIES_MAX && !failures.contains_key(key) {
            let window = self.window;
            failures.retain(|_, (_, since)| since.elapsed() < window);
            let keep = LOGIN_LIMITER_ENTRIES_MAX / 2;
            if failures.len() > keep {
                // The oldest windows go, exactly down to half (ties included).
                let mut by_age: Vec<(Instant, String)> = failures
                    .iter()
                    .map(|(key, (_, since))| (*since, key.clone()))
                    .collect();
                let cut = by_age.len() - keep;
                by_age.select_nth_unstable_by_key(cut, |(since, _)| *since);
                for (_, key) in &by_age[..cut] {
                    failures.remove(key);
                }
            }
        }
        let entry = failures
            .entry(key.to_owned())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// A login attempt, counted as a failure up front (check and count under one lock):
    /// `Some(seconds to wait)` if `key` has used up its allowance, and then nothing is
    /// counted. Counting only after the password check let parallel guesses all pass the
    /// check first; a login that succeeds takes its count back ([`LoginLimiter::forgive`]).
    pub fn attempt(&self, key: &str, factor: u32) -> Option<u64> {
        self.attempt_all(&[(key, factor)])
    }

    /// One login attempt against several keys (each with its allowance factor): checked
    /// first, all of them, and counted against every key only if none is used up. A refused
    /// attempt adds nothing (no entry either: refused attempts cannot fill the table).
    pub fn attempt_all(&self, keys: &[(&str, u32)]) -> Option<u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for (key, factor) in keys {
            if let Some((count, since)) = failures.get(*key) {
                let elapsed = since.elapsed();
                if elapsed < self.window && *count >= self.max_failures * factor {
                    return Some((self.window - elapsed).as_secs().max(1));
                }
            }
        }
        for (key, _) in keys {
            self.count_locked(&mut failures, key);
        }
        None
    }

    /// Takes back one counted attempt of `key` (it was not a failure after all); an entry
    /// back at zero is removed.
    pub fn forgive(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = failures.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                failures.remove(key);
            }
        }
    }

    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Starts a login attempt against `keys` (each with its allowance factor; the first is the
    /// narrowest, see [`LoginAttempt::succeeded`]): `Err(seconds to wait)` if one is used up.
    pub fn begin(self: &Arc<Self>, keys: Vec<(String, u32)>) -> Result<LoginAttempt, u64> {
        let checked: Vec<(&str, u32)> = keys.iter().map(|(k, f)| (k.as_str(), *f)).collect();
        if let Some(wait) = self.attempt_all(&checked) {
            return Err(wait);
        }
        Ok(LoginAttempt {
            limiter: self.clone(),
            keys: keys.into_iter().map(|(key, _)| key).collect(),
            settled: false,
        })
    }
}

/// A login attempt, counted as a failure on its keys until it ends. Only a password found
/// wrong leaves the count ([`LoginAttempt::failed`]): an attempt dropped before that (the
/// store failed, the request timed out waiting for a hash, a panic) takes it back, so a user
/// whose right password met an outage is not locked out by their retries.
pub struct LoginAttempt {
    limiter: Arc<LoginLimiter>,
    keys: Vec<String>,
    settled: bool,
}

impl LoginAttempt {
    /// The password was wrong: the count stays.
    pub fn failed(mut self) {
        self.settled = true;
    }

    /// The password was right: the first (narrowest) key's failures are forgotten, the
    /// wider keys only take this attempt back.
    pub fn succeeded(mut self) {
        self.settled = true;
        for (i, key) in self.keys.iter().enumerate() {
            if i == 0 {
                self.limiter.clear(key);
            } else {
                self.limiter.forgive(key);
            }
        }
    }
}

impl Drop for LoginAttempt {
    fn drop(&mut self) {
        if !self.settled {
            for key in &self.keys {
                self.limiter.forgive(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_prefixed_random_and_recognisable() {
        let a = issue_token().map(|t| t.secret).unwrap_or_default();
        let b = issue_token().map(|t| t.secret).unwrap_or_default();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert!(!looks_like_token("tl_short"));
        assert!(!looks_like_token(&a.replace("tl_", "xx_")));
        assert_eq!(hash_token(&a), hash_token(&a));
    }

    #[test]
    fn only_failures_beyond_the_allowance_block_a_key() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        assert_eq!(limiter.blocked("ann", 1), None);
        limiter.record_failure("ann");
        assert_eq!(limiter.blocked("ann", 1), None);
        limiter.record_failure("ann");
        assert!(limiter.blocked("ann", 1).is_some());
        assert_eq!(
            limiter.blocked("ann", 2),
            None,
            "a larger factor allows more"
        );
        limiter.clear("ann");
        assert_eq!(limiter.blocked("ann", 1), None);
    }

    #[test]
    fn a_flood_of_keys_keeps_the_table_bounded_and_the_newest_windows() {
        let limiter = LoginLimiter::new(5, Duration::from_secs(900));
        for i in 0..LOGIN_LIMITER_ENTRIES_MAX {
            limiter.record_failure(&format!("old-{i}"));
        }
        std::thread::sleep(Duration::from_millis(2));
        limiter.record_failure("new");
        let failures = limiter.failures.lock().unwrap();
        assert!(
            failures.len() <= LOGIN_LIMITER_ENTRIES_MAX / 2 + 1,
            "{}",
            failures.len()
        );
        assert!(failures.contains_key("new"));
        assert!(failures.contains_key(&format!("old-{}", LOGIN_LIMITER_ENTRIES_MAX - 1)));
        assert!(
            !failures.contains_key("old-0"),
            "the oldest windows go first"
        );
    }

    /// Only a wrong password leaves its count: an attempt dropped before its password was
    /// checked (a store error, a request timeout) takes it back on every key.
    #[test]
    fn only_a_wrong_password_counts_and_a_right_one_clears_the_pair() {
        let limiter = Arc::new(LoginLimiter::new(1, Duration::from_secs(60)));
        let keys = || vec![("pair".to_owned(), 1), ("email".to_owned(), 3)];
        for _ in 0..5 {
            drop(limiter.begin(keys()).unwrap());
        }
        assert!(limiter.failures.lock().unwrap().is_empty());
        limiter.begin(keys()).unwrap().failed();
        assert!(limiter.begin(keys()).is_err(), "the pair is used up");
        limiter.clear("pair");
        limiter.begin(keys()).unwrap().succeeded();
        let failures = limiter.failures.lock().unwrap();
        assert!(!failures.contains_key("pair"));
        assert_eq!(
            failures.get("email").map(|e| e.0),
            Some(1),
            "only the failure"
        );
    }

    #[test]
    fn an_attempt_against_several_keys_counts_on_all_or_none() {
        let limiter = LoginLimiter::new(1, Duration::from_secs(60));
        assert_eq!(limiter.attempt_all(&[("pair", 1), ("email", 3)]), None);
        // The pair is used up: refused, and the email key is not counted again.
        assert!(limiter.attempt_all(&[("pair", 1), ("email", 3)]).is_some());
        assert!(
            limiter
                .attempt_all(&[("other-pair", 1), ("email", 3)])
                .is_none()
        );
        assert!(
            limiter
                .attempt_all(&[("third-pair", 1), ("email", 3)])
                .is_none()
        );
        // Three counted on the email (not four): now it is used up for every client.
        assert!(
            limiter
                .attempt_all(&[("fourth-pair", 1), ("email", 3)])
                .is_some()
        );
        let failures = limiter.failures.lock().unwrap();
        assert!(
            !failures.contains_key("fourth-pair"),
            "a refused attempt adds no entry"
        );
        drop(failures);
        limiter.forgive("pair");
        assert!(!limiter.failures.lock().unwrap().contains_key("pair"));
    }

    #[test]
    fn attempts_are_counted_before_they_are_decided() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        // Two attempts in flight at once use up the allowance: a third waits, whatever
        // their passwords turn out to be.
        assert_eq!(limiter.attempt("ann", 1), None);
        assert_eq!(limiter.attempt("ann", 1), None);
        assert!(limiter.attempt("ann", 1).is_some());
        // One of them succeeded: its count comes back.
        limiter.forgive("ann");
        assert_eq!(limiter.attempt("ann", 1), None);
        assert!(limiter.attempt("ann", 1).is_some());
    }
}
