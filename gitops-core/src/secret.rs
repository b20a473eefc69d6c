//! Sensitive resources (from encrypted files): the [`SENSITIVE`] marker
//! that stands in for their values, redaction of specs and diffs, and the
//! [`DigestKey`] that keys their inventory digests.
//!
//! Redaction happens at the source: the planner and the convergence check
//! redact a sensitive resource's diff before anything else sees it, so
//! plans, events, status, notifications and logs only ever hold the paths
//! of its changed fields.
//!
//! ```
//! use gitops_core::secret::{DigestKey, SENSITIVE, redact};
//! use gitops_core::{Resource, serde_json::json};
//!
//! let shown = redact(&json!({"password": "hunter2", "port": 80}));
//! assert_eq!(shown, json!({"password": SENSITIVE, "port": SENSITIVE}));
//!
//! let key = DigestKey::random();
//! let r = Resource::new("Secret/db".parse()?, json!({"password": "hunter2"})).sensitive();
//! assert!(key.digest(&r).starts_with("hmac-sha256:"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use age::secrecy::ExposeSecret as _;
use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::diff::Diff;
use crate::model::Resource;
use crate::spec::Spec;

/// What a sensitive value shows everywhere: plan text and JSON, diffs,
/// events, status, notifications.
pub const SENSITIVE: &str = "(sensitive)";

/// Prefix of a keyed digest (then 64 hex digits).
pub const KEYED_PREFIX: &str = "hmac-sha256:";

/// `value` with every leaf (string, number, bool, null) replaced by
/// [`SENSITIVE`]; object keys and array lengths stay (field paths are not
/// secret).
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), redact(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        _ => Value::String(SENSITIVE.to_owned()),
    }
}

/// A spec with its values redacted (see [`redact`]).
pub fn redact_spec(spec: &Spec) -> Spec {
    Spec::from(redact(&spec.to_value()))
}

impl Diff {
    /// The same changed paths with every old and new value shown as
    /// [`SENSITIVE`] (an absent side stays absent).
    pub fn redacted(mut self) -> Diff {
        let mark = || Value::String(SENSITIVE.to_owned());
        for change in &mut self.changes {
            change.old = change.old.as_ref().map(|_| mark());
            change.new = change.new.as_ref().map(|_| mark());
        }
        self
    }
}

/// The key of the digests of sensitive resources: HMAC-SHA256 of the
/// canonical spec, so a leaked inventory cannot be brute-forced into the
/// secret. 32 random bytes; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey([u8; 32]);

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

/// Why a [`DigestKey`] file could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum DigestKeyError {
    /// Reading or creating the file failed.
    #[error("digest key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not 64 hex digits.
    #[error("digest key {path}: not a key (64 hex digits expected)")]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
}

impl DigestKey {
    /// A new random key (from the operating system's generator).
    pub fn random() -> Self {
        // age's X25519 identity generation draws from the OS generator;
        // hashing its secret gives 32 uniformly random bytes.
        let identity = age::x25519::Identity::generate();
        let secret = identity.to_string();
        Self(Sha256::digest(secret.expose_secret().as_bytes()).into())
    }

    /// One random key per process: what an engine uses unless given one
    /// (fine for a store that does not outlive the process).
    pub fn process() -> Self {
        static KEY: OnceLock<DigestKey> = OnceLock::new();
        KEY.get_or_init(DigestKey::random).clone()
    }

    /// Reads the key at `path`, or creates it (mode 0600, 64 hex digits)
    /// when it does not exist. Keep it beside the state store.
    pub fn load_or_create(path: &Path) -> Result<Self, DigestKeyError> {
        let io = |source| DigestKeyError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                return Self::parse(text.trim()).ok_or_else(|| DigestKeyError::Malformed {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let key = Self::random();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        file.write_all(format!("{}\n", hex(&key.0)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        Ok(key)
    }

    fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(key))
    }

    /// The digest the engine stores for `resource`: [`Resource::digest`]
    /// for an ordinary resource, a keyed digest for a sensitive one.
    pub fn digest(&self, resource: &Resource) -> String {
        self.spec_digest(&resource.spec, resource.sensitive)
    }

    /// The digest of `spec`, keyed when `sensitive`:
    /// `hmac-sha256:<hex>` of its canonical JSON.
    pub fn spec_digest(&self, spec: &Spec, sensitive: bool) -> String {
        if !sensitive {
            return spec.digest();
        }
        // A key of any length is accepted by HMAC: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(spec.as_str().as_bytes());
        format!("{KEYED_PREFIX}{}", hex(&mac.finalize().into_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    crate::spec::hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyed_digests_depend_on_the_key_and_hide_the_plain_digest() {
        let r = Resource::new("Secret/a".parse().unwrap(), json!({"v": "hunter2"})).sensitive();
        let (a, b) = (DigestKey::random(), DigestKey::random());
        assert_ne!(a.digest(&r), b.digest(&r));
        assert_eq!(a.digest(&r), a.digest(&r.clone()));
        assert_ne!(a.digest(&r), format!("{KEYED_PREFIX}{}", r.digest()));
        let plain = Resource::new("Secret/a".parse().unwrap(), json!({"v": "x"}));
        assert_eq!(a.digest(&plain), plain.digest());
    }

    #[test]
    fn key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digest.key");
        let key = DigestKey::load_or_create(&path).unwrap();
        assert_eq!(DigestKey::load_or_create(&path).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "nope").unwrap();
        let err = DigestKey::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("digest.key"), "{err}");
    }

    #[test]
    fn diffs_keep_paths_and_lose_values() {
        let d = Diff::between(&json!({"a": "hunter1", "b": 1}), &json!({"a": "hunter2"}))
            .unwrap()
            .redacted();
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("hunter"), "{text}");
        assert!(text.contains("spec.a") && text.contains("spec.b"), "{text}");
        assert!(d.changes[1].new.is_none());
    }
}
