//! SSH signature verification of commits and tags (namespace `git`), in process.
//!
//! OpenPGP signatures are not supported: every pure-Rust OpenPGP verifier
//! either pulls in a C toolchain (nettle for Sequoia's default backend) or is
//! not ready for this use; a repository that needs OpenPGP must verify outside.

use std::fmt;

use ssh_key::{HashAlg, PublicKey, SshSig};

/// Which signature must be valid before a revision is deployed (as in Flux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// The commit itself must carry a valid signature.
    Head,
    /// The annotated tag the release was selected through must carry a valid
    /// signature (only meaningful with the `Tag` and `Semver` policies).
    Tag,
    /// Both the tag and the commit it points to.
    TagAndHead,
}

/// Why an allowed-signers list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowed signers line {line}: {reason}")]
pub struct AllowedSignersError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// One trusted key.
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedSigner {
    principals: Vec<String>,
    key: PublicKey,
}

impl AllowedSigner {
    /// The principals (usually e-mail addresses) of the key.
    pub fn principals(&self) -> &[String] {
        &self.principals
    }

    /// The key's SHA-256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }
}

impl fmt::Debug for AllowedSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowedSigner")
            .field("principals", &self.principals)
            .field("key", &self.fingerprint())
            .finish()
    }
}

/// The keys allowed to sign releases, in the format of git's
/// `gpg.ssh.allowedSignersFile` (`principals [options] keytype base64 [comment]`).
///
/// A `namespaces="..."` option that does not include `git` excludes the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedSigners {
    signers: Vec<AllowedSigner>,
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

impl AllowedSigners {
    /// An empty list (every signature fails).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses an allowed-signers file.
    pub fn parse(text: &str) -> Result<Self, AllowedSignersError> {
        let mut signers = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| AllowedSignersError {
                line: index + 1,
                reason,
            };
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let Some(key_pos) = tokens.iter().position(|t| KEY_TYPES.contains(t)) else {
                return Err(err("no known key type".to_owned()));
            };
            if key_pos == 0 {
                return Err(err("missing principals".to_owned()));
            }
            let Some(base64) = tokens.get(key_pos + 1) else {
                return Err(err("missing key data".to_owned()));
            };
            let options = tokens[1..key_pos].join(" ");
            if let Some(ns) = option_value(&options, "namespaces")
                && !ns.split(',').any(|n| n == "git")
            {
                continue;
            }
            let key = PublicKey::from_openssh(&format!("{} {}", tokens[key_pos], base64))
                .map_err(|e| err(format!("bad public key: {e}")))?;
            signers.push(AllowedSigner {
                principals: tokens[0].split(',').map(str::to_owned).collect(),
                key,
            });
        }
        Ok(Self { signers })
    }

    /// Adds one key in OpenSSH format (`ssh-ed25519 AAAA... comment`) for `principal`.
    pub fn add(
        &mut self,
        principal: impl Into<String>,
        openssh_key: &str,
    ) -> Result<&mut Self, AllowedSignersError> {
        let key = PublicKey::from_openssh(openssh_key.trim()).map_err(|e| AllowedSignersError {
            line: 0,
            reason: format!("bad public key: {e}"),
        })?;
        self.signers.push(AllowedSigner {
            principals: vec![principal.into()],
            key,
        });
        Ok(self)
    }

    /// The trusted keys.
    pub fn signers(&self) -> &[AllowedSigner] {
        &self.signers
    }

    /// Verifies an armored SSH signature over `payload`; returns the signer's
    /// principal, or why it is not valid.
    pub fn verify(&self, payload: &[u8], armored: &[u8]) -> Result<String, String> {
        let sig = SshSig::from_pem(armored).map_err(|e| {
            if armored.starts_with(b"-----BEGIN PGP") {
                "OpenPGP signatures are not supported (only SSH signatures)".to_owned()
            } else {
                format!("unreadable SSH signature: {e}")
            }
        })?;
        if sig.namespace() != "git" {
            return Err(format!(
                "signature namespace is {:?}, expected \"git\"",
                sig.namespace()
            ));
        }
        let signer = self
            .signers
            .iter()
            .find(|s| s.key.key_data() == sig.public_key())
            .ok_or_else(|| {
                format!(
                    "signed by a key that is not in the allowed signers ({})",
                    PublicKey::from(sig.public_key().clone()).fingerprint(HashAlg::Sha256)
                )
            })?;
        signer
            .key
            .verify("git", payload, &sig)
            .map_err(|e| format!("bad signature (content does not match): {e}"))?;
        Ok(signer.principals.join(","))
    }
}

fn option_value<'a>(options: &'a str, name: &str) -> Option<&'a str> {
    let start = options.find(&format!("{name}="))? + name.len() + 1;
    let rest = &options[start..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest.find(['"', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Splits a raw tag object into `(payload, armored signature)`.
pub(crate) fn split_tag_signature(data: &[u8]) -> Option<(&[u8], &[u8])> {
    const MARKERS: &[&[u8]] = &[
        b"-----BEGIN SSH SIGNATURE-----",
        b"-----BEGIN PGP SIGNATURE-----",
    ];
    let mut best: Option<usize> = None;
    for marker in MARKERS {
        let mut from = 0;
        while let Some(pos) = find(&data[from..], marker) {
            let at = from + pos;
            if at == 0 || data[at - 1] == b'\n' {
                best = Some(best.map_or(at, |b| b.min(at)));
                break;
            }
            from = at + 1;
        }
    }
    best.map(|at| (&data[..at], &data[at..]))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_allowed_signers_and_options() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtYyUcAPXVfZ6jm5QFMDaPPgwMUnnXGwJ9l9WRbc7PJ";
        let text = format!(
            "# comment\n\nalice@example.com {key} alice\nbob@example.com namespaces=\"file\" {key}\n"
        );
        let signers = AllowedSigners::parse(&text).expect("parses");
        assert_eq!(signers.signers().len(), 1);
        assert_eq!(signers.signers()[0].principals(), ["alice@example.com"]);
        assert!(signers.signers()[0].fingerprint().starts_with("SHA256:"));
        assert!(AllowedSigners::parse("alice ssh-ed25519 !!!").is_err());
        assert!(AllowedSigners::parse("alice nokey").is_err());
    }

    #[test]
    fn splits_tag_signature() {
        let data = b"object x\ntag v1\n\nmsg\n-----BEGIN SSH SIGNATURE-----\nabc\n-----END SSH SIGNATURE-----\n";
        let (payload, sig) = split_tag_signature(data).expect("signed");
        assert_eq!(payload, b"object x\ntag v1\n\nmsg\n");
        assert!(sig.starts_with(b"-----BEGIN SSH"));
        assert!(split_tag_signature(b"object x\n\nmsg\n").is_none());
    }
}
