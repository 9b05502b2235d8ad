//! Event ids scoped to their organization over the engine's one global id index.
//!
//! The engine refuses a second event with an id it holds, whoever wrote the first. The
//! adapter therefore stores `client id XOR mask(organization)`, where the mask is the first
//! 16 bytes of `SHA-256(key ‖ organization id)` and the key is 32 random bytes kept in
//! [`ID_KEY_FILE`] beside the segments. Two organizations using the same id store different
//! ids, and, because the key is secret, no organization can compute an id that lands on
//! another organization's event: with the mask being the organization id itself (the first
//! version), a client knowing another organization's id and one of its event ids could
//! append `id ^ their org ^ other org` and learn from the `409 event_id_conflict` that the
//! event exists, or claim the id first so that the other organization's append failed.
//!
//! The key is part of the log: without it no stored id maps back to the id a client chose.
//! It is written (and made durable) when a log is created, before its first append; a log
//! that holds events and has no key file, or a damaged one, refuses to open.
//!
//! A log written before the key existed (2026-12-03) holds `client id XOR organization id`.
//! It opens only after the operator runs `trueline eventlog keep-legacy-ids --yes`
//! ([`IdScope::keep_legacy`]), which writes a key file of the legacy kind: the log then goes
//! on with the organization id as the mask, and with that mapping's weakness (another
//! organization that knows both ids can probe an id or claim it first).

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The key's file in the event log directory.
pub const ID_KEY_FILE: &str = "id-scope.key";

const MAGIC: &[u8; 8] = b"TLIDKEY1";
/// The legacy kind: the mask is the organization id (no key; the key bytes are zeros).
const LEGACY_MAGIC: &[u8; 8] = b"TLIDLEG1";
const KEY_LEN: usize = 32;
/// Magic, key, and the SHA-256 of both (a damaged file is refused, not used).
const FILE_LEN: usize = MAGIC.len() + KEY_LEN + 32;

/// Why the id key could not be used.
#[derive(Debug)]
pub struct IdKeyError {
    pub path: PathBuf,
    pub detail: String,
}

impl fmt::Display for IdKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event id key {}: {}", self.path.display(), self.detail)
    }
}

impl std::error::Error for IdKeyError {}

/// The secret that maps client ids to stored ids (see the module docs).
#[derive(Clone)]
pub struct IdScope {
    key: [u8; KEY_LEN],
    /// The first version's mapping (see the module docs).
    legacy: bool,
    /// Organizations' masks, computed once each (a SHA-256 per append and per read cost
    /// ~2 % of the event API's throughput at 64 clients); cleared when it reaches
    /// `MASKS_CACHED_MAX`.
    masks: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<[u8; 16], Mask>>>,
}

const MASKS_CACHED_MAX: usize = 4096;

impl fmt::Debug for IdScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdScope(..)")
    }
}

/// One organization's mask: XOR with it maps a client id to the stored id and back.
#[derive(Clone, Copy)]
pub struct Mask([u8; 16]);

impl Mask {
    pub fn apply(&self, id: [u8; 16]) -> [u8; 16] {
        let mut out = id;
        for (byte, mask) in out.iter_mut().zip(self.0) {
            *byte ^= mask;
        }
        out
    }
}

impl IdScope {
    /// The key of the log in `dir`. When the file is missing and `log_is_empty`, a new key
    /// is created and made durable first; missing in a log with events, or damaged, is an
    /// error (the stored ids cannot be mapped without it).
    pub fn open(dir: &Path, log_is_empty: bool) -> Result<Self, IdKeyError> {
        let path = dir.join(ID_KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => Self::parse(&path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound && log_is_empty => Self::create(dir)
                .map_err(|e| IdKeyError {
                    path,
                    detail: format!("cannot create it: {e}"),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(IdKeyError {
                path,
                detail: "missing, but the log holds events: their ids cannot be mapped back \
                         to the ids clients chose without it. Restore the file from the \
                         backup of this directory; a log written before 2026-12-03 never had \
                         one: `trueline eventlog keep-legacy-ids --yes` lets it open with \
                         that version's mapping (see docs/eventlog.md)"
                    .into(),
            }),
            Err(e) => Err(IdKeyError {
                path,
                detail: e.to_string(),
            }),
        }
    }

    /// The key of an existing log, for tools that read the files (`trueline eventlog dump`).
    pub fn read(dir: &Path) -> Result<Self, IdKeyError> {
        let path = dir.join(ID_KEY_FILE);
        let bytes = fs::read(&path).map_err(|e| IdKeyError {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        Self::parse(&path, &bytes)
    }

    pub fn mask(&self, org: &[u8; 16]) -> Mask {
        use std::sync::PoisonError;
        if self.legacy {
            return Mask(*org);
        }
        if let Some(mask) = self
            .masks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(org)
        {
            return *mask;
        }
        let mask = self.compute_mask(org);
        let mut masks = self.masks.write().unwrap_or_else(PoisonError::into_inner);
        if masks.len() >= MASKS_CACHED_MAX {
            masks.clear();
        }
        masks.insert(*org, mask);
        mask
    }

    fn compute_mask(&self, org: &[u8; 16]) -> Mask {
        let digest = Sha256::new()
            .chain_update(self.key)
            .chain_update(org)
            .finalize();
        let mut mask = [0u8; 16];
        mask.copy_from_slice(&digest[..16]);
        Mask(mask)
    }

    fn with_key(key: [u8; KEY_LEN]) -> Self {
        Self {
            key,
            legacy: false,
            masks: Default::default(),
        }
    }

    /// Whether this log keeps the first version's mapping.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// For a log written before the key existed: records that its ids are
    /// `client id XOR organization id` and stay so. Refused when the directory has a key
    /// file already (a keyed log's ids would all map wrong).
    pub fn keep_legacy(dir: &Path) -> Result<(), IdKeyError> {
        let path = dir.join(ID_KEY_FILE);
        if path.exists() {
            return Err(IdKeyError {
                path,
                detail: "exists: this log has its key already".into(),
            });
        }
        write_key_file(dir, LEGACY_MAGIC, &[0u8; KEY_LEN]).map_err(|e| IdKeyError {
            path,
            detail: format!("cannot write it: {e}"),
        })
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, IdKeyError> {
        let damaged = |detail: &str| IdKeyError {
            path: path.to_owned(),
            detail: format!("damaged ({detail}); restore it from the backup of this directory"),
        };
        if bytes.len() != FILE_LEN {
            return Err(damaged(&format!("{} bytes, not {FILE_LEN}", bytes.len())));
        }
        let (body, sum) = bytes.split_at(MAGIC.len() + KEY_LEN);
        let legacy = match &body[..MAGIC.len()] {
            m if m == MAGIC => false,
            m if m == LEGACY_MAGIC => true,
            _ => return Err(damaged("wrong magic")),
        };
        if Sha256::digest(body).as_slice() != sum {
            return Err(damaged("checksum mismatch"));
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&body[MAGIC.len()..]);
        Ok(Self {
            legacy,
            ..Self::with_key(key)
        })
    }

    /// Writes a new key, durable before the log's first append.
    fn create(dir: &Path) -> io::Result<Self> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(io::Error::other)?;
        write_key_file(dir, MAGIC, &key)?;
        Ok(Self::with_key(key))
    }
}

/// A temporary file made durable, renamed into place, and the directory synced, so a crash
/// leaves either no key file or this one.
fn write_key_file(dir: &Path, magic: &[u8; 8], key: &[u8; KEY_LEN]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(FILE_LEN);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(key);
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    let tmp = dir.join(format!("{ID_KEY_FILE}.tmp"));
    {
        // Readable by the server's user only: with it, anyone reading the segments could
        // tell which organization's ids are which.
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(ID_KEY_FILE))?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_read_back_and_masks_are_per_organization() {
        let dir = tempfile::tempdir().unwrap();
        let created = IdScope::open(dir.path(), true).unwrap();
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(dir.path().join(ID_KEY_FILE))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode & 0o777, 0o600);
        let read = IdScope::read(dir.path()).unwrap();
        assert_eq!(created.key, read.key);
        let id = [7u8; 16];
        let a = created.mask(&[1u8; 16]);
        let b = created.mask(&[2u8; 16]);
        assert_ne!(a.apply(id), b.apply(id));
        assert_eq!(
            a.apply(id),
            created.compute_mask(&[1u8; 16]).apply(id),
            "cached = computed"
        );
        assert_eq!(a.apply(a.apply(id)), id, "the mask is its own inverse");
        // Not the organization id (the first version's mask, which anyone could compute).
        assert_ne!(a.apply(id), Mask([1u8; 16]).apply(id));
    }

    #[test]
    fn two_logs_have_different_keys() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let one = IdScope::open(one.path(), true).unwrap();
        let two = IdScope::open(two.path(), true).unwrap();
        assert_ne!(one.key, two.key);
    }

    #[test]
    fn a_missing_key_in_a_log_with_events_and_a_damaged_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = IdScope::open(dir.path(), false).unwrap_err();
        assert!(missing.detail.contains("missing"), "{missing}");
        assert!(
            !dir.path().join(ID_KEY_FILE).exists(),
            "nothing was created"
        );

        IdScope::open(dir.path(), true).unwrap();
        let path = dir.path().join(ID_KEY_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + 3] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let damaged = IdScope::open(dir.path(), true).unwrap_err();
        assert!(damaged.detail.contains("checksum"), "{damaged}");
        fs::write(&path, &bytes[..10]).unwrap();
        let short = IdScope::read(dir.path()).unwrap_err();
        assert!(short.detail.contains("10 bytes"), "{short}");
    }
}
