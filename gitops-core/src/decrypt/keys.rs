//! [`Identities`] (who can decrypt) and [`Recipients`] (who write-back
//! encrypts to), wrapping the `age` crate without exposing its types.

use std::fmt;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

/// Why identities or recipients could not be loaded. Never shows key
/// material: identity files are named, their lines are not.
#[derive(Debug, thiserror::Error)]
pub enum AgeError {
    /// The identity file could not be read.
    #[error("age identity file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The identity file holds something that is not a usable identity.
    #[error("age identity file {path}: {message}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// What is wrong (a line number, never the line).
        message: String,
    },
    /// A recipient is neither `age1…` nor an `ssh-ed25519` public key.
    #[error("age recipient {recipient:?}: not an age (age1…) or ssh-ed25519 recipient")]
    Recipient {
        /// The recipient as given (public).
        recipient: String,
    },
}

type SharedIdentity = std::sync::Arc<dyn age::Identity + Send + Sync>;

/// The identities a [`Decrypt`](super::Decrypt) render tries on every
/// encrypted file: X25519 keys (`AGE-SECRET-KEY-1…` lines, as written by
/// `age-keygen`) and unencrypted SSH ed25519 private keys.
/// Cloning is cheap: the identities are shared.
#[derive(Clone, Default)]
pub struct Identities {
    list: Vec<SharedIdentity>,
    files: Vec<PathBuf>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("count", &self.list.len())
            .field("files", &self.files)
            .finish()
    }
}

impl Identities {
    /// No identities (every encrypted file is then refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// The identities in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, AgeError> {
        let mut identities = Self::new();
        identities.add_file(path)?;
        Ok(identities)
    }

    /// Adds the identities in the file at `path`: an age identity file or
    /// an SSH private key.
    pub fn add_file(&mut self, path: &Path) -> Result<(), AgeError> {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
            .map_err(|source| AgeError::Read {
                path: path.to_owned(),
                source,
            })?;
        self.add(&text, path)
    }

    /// Parses identities from `text`; `name` names it in errors.
    pub fn parse(text: &str, name: &Path) -> Result<Self, AgeError> {
        let mut identities = Self::new();
        identities.add(text, name)?;
        Ok(identities)
    }

    fn add(&mut self, text: &str, path: &Path) -> Result<(), AgeError> {
        let refuse = |message: String| AgeError::Identity {
            path: path.to_owned(),
            message,
        };
        if text.trim_start().starts_with("-----BEGIN") {
            let ssh = age::ssh::Identity::from_buffer(text.as_bytes(), None)
                .map_err(|e| refuse(format!("not an SSH private key age can use ({e})")))?;
            match ssh {
                age::ssh::Identity::Unencrypted(_) => self.list.push(std::sync::Arc::new(ssh)),
                age::ssh::Identity::Encrypted(_) => {
                    return Err(refuse(
                        "passphrase-protected SSH keys are not supported".to_owned(),
                    ));
                }
                age::ssh::Identity::Unsupported(_) => {
                    return Err(refuse("unsupported SSH key type".to_owned()));
                }
            }
        } else {
            let file = age::IdentityFile::from_buffer(text.as_bytes())
                .map_err(|e| refuse(e.to_string()))?;
            let found = file.into_identities().map_err(|e| refuse(e.to_string()))?;
            if found.is_empty() {
                return Err(refuse("no identities in the file".to_owned()));
            }
            self.list
                .extend(found.into_iter().map(SharedIdentity::from));
        }
        self.files.push(path.to_owned());
        Ok(())
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Decrypts an age file (binary or ASCII-armored), at most `limit`
    /// bytes of plaintext. The error is age's message (never key material).
    pub(crate) fn decrypt(&self, data: &[u8], limit: u64) -> Result<Vec<u8>, String> {
        let reader = age::armor::ArmoredReader::new(data);
        let decryptor = age::Decryptor::new_buffered(reader).map_err(|e| e.to_string())?;
        if decryptor.is_scrypt() {
            return Err("passphrase-encrypted files are not supported".to_owned());
        }
        let stream = decryptor
            .decrypt(self.list.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| e.to_string())?;
        let mut plain = Vec::new();
        let mut limited = std::io::BufReader::new(stream).take(limit + 1);
        loop {
            let chunk = limited.fill_buf().map_err(|e| e.to_string())?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            plain.extend_from_slice(chunk);
            limited.consume(n);
        }
        if plain.len() as u64 > limit {
            return Err(format!("decrypts to more than {limit} bytes"));
        }
        Ok(plain)
    }
}

#[derive(Clone)]
enum Recipient {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

/// The recipients a write-back re-encrypts a sensitive file to: `age1…`
/// (X25519) and `ssh-ed25519 …` public keys.
#[derive(Clone, Default)]
pub struct Recipients {
    list: Vec<Recipient>,
    shown: Vec<String>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.shown).finish()
    }
}

impl Recipients {
    /// No recipients.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one recipient (`age1…` or `ssh-ed25519 AAAA… [comment]`).
    pub fn add(&mut self, recipient: &str) -> Result<(), AgeError> {
        let text = recipient.trim();
        let parsed = if let Ok(r) = age::x25519::Recipient::from_str(text) {
            Recipient::X25519(r)
        } else if let Ok(r) = age::ssh::Recipient::from_str(text) {
            Recipient::Ssh(r)
        } else {
            return Err(AgeError::Recipient {
                recipient: text.to_owned(),
            });
        };
        self.list.push(parsed);
        self.shown.push(text.to_owned());
        Ok(())
    }

    /// Parses every recipient of `recipients`.
    pub fn parse<'a>(recipients: impl IntoIterator<Item = &'a str>) -> Result<Self, AgeError> {
        let mut all = Self::new();
        for r in recipients {
            all.add(r)?;
        }
        Ok(all)
    }

    /// Number of recipients.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Encrypts `plain` to every recipient, ASCII-armored.
    pub(crate) fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let recipients = self.list.iter().map(|r| match r {
            Recipient::X25519(r) => r as &dyn age::Recipient,
            Recipient::Ssh(r) => r as &dyn age::Recipient,
        });
        let encryptor = age::Encryptor::with_recipients(recipients).map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| e.to_string();
        let armored =
            age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor)
                .map_err(io)?;
        let mut writer = encryptor.wrap_output(armored).map_err(io)?;
        writer.write_all(plain).map_err(io)?;
        writer
            .finish()
            .and_then(|armored| armored.finish())
            .map_err(io)
    }
}
