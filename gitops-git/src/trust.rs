//! [`TrustedSigners`]: the SSH and OpenPGP keys a release may be signed by.

use std::time::SystemTime;

use crate::openpgp::PgpKeys;
use crate::verify::AllowedSigners;

const PGP_ARMOR: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const SSH_ARMOR: &[u8] = b"-----BEGIN SSH SIGNATURE-----";

/// The keys allowed to sign releases: SSH keys ([`AllowedSigners`], git's
/// `gpg.format=ssh`), OpenPGP keys ([`PgpKeys`], GnuPG's signatures), or
/// both. A commit or tag signed by a key of either set passes; each
/// signature is checked by the set of its kind (a commit carries one).
///
/// Both sets convert into it, so `builder.verify(mode, signers)` takes an
/// `AllowedSigners` or a `PgpKeys` as they are:
///
/// ```
/// use gitops_git::{AllowedSigners, PgpKeys, TrustedSigners};
///
/// let ssh = AllowedSigners::parse(
///     "alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtYyUcAPXVfZ6jm5QFMDaPPgwMUnnXGwJ9l9WRbc7PJ",
/// )?;
/// let both = TrustedSigners::new().with_ssh(ssh).with_pgp(PgpKeys::new());
/// assert_eq!(both.ssh().signers().len(), 1);
/// assert!(both.pgp().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedSigners {
    ssh: AllowedSigners,
    pgp: PgpKeys,
}

impl TrustedSigners {
    /// No keys: every signature fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts these SSH keys (replacing any set before).
    pub fn with_ssh(mut self, signers: AllowedSigners) -> Self {
        self.ssh = signers;
        self
    }

    /// Trusts these OpenPGP keys (replacing any set before).
    pub fn with_pgp(mut self, keys: PgpKeys) -> Self {
        self.pgp = keys;
        self
    }

    /// The trusted SSH keys.
    pub fn ssh(&self) -> &AllowedSigners {
        &self.ssh
    }

    /// The trusted OpenPGP keys.
    pub fn pgp(&self) -> &PgpKeys {
        &self.pgp
    }

    /// Whether no key of either kind is trusted.
    pub fn is_empty(&self) -> bool {
        self.ssh.signers().is_empty() && self.pgp.is_empty()
    }

    /// Verifies an armored signature over `payload`, by the set of its
    /// kind; returns the signer, or why the signature is not valid.
    /// `signed_at` (the committer or tagger time) is when an SSH signature
    /// was made (see [`AllowedSigners::verify_at`]); an OpenPGP signature
    /// states its own time (see [`PgpKeys`]).
    pub fn verify_at(
        &self,
        payload: &[u8],
        armored: &[u8],
        signed_at: SystemTime,
    ) -> Result<String, String> {
        let start = armored.trim_ascii_start();
        if start.starts_with(PGP_ARMOR) {
            if self.pgp.is_empty() {
                return Err("an OpenPGP signature, and no OpenPGP key is trusted".to_owned());
            }
            self.pgp.verify(payload, start)
        } else if start.starts_with(SSH_ARMOR) {
            if self.ssh.signers().is_empty() {
                return Err("an SSH signature, and no SSH key is trusted".to_owned());
            }
            self.ssh.verify_at(payload, start, signed_at)
        } else {
            Err(
                "neither an OpenPGP nor an SSH signature (X.509 signatures are not supported)"
                    .to_owned(),
            )
        }
    }
}

impl From<AllowedSigners> for TrustedSigners {
    fn from(signers: AllowedSigners) -> Self {
        Self::new().with_ssh(signers)
    }
}

impl From<PgpKeys> for TrustedSigners {
    fn from(keys: PgpKeys) -> Self {
        Self::new().with_pgp(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_needs_keys_of_its_kind() {
        let none = TrustedSigners::new();
        assert!(none.is_empty());
        let pgp = b"-----BEGIN PGP SIGNATURE-----\n\nx\n-----END PGP SIGNATURE-----\n";
        let ssh = b"-----BEGIN SSH SIGNATURE-----\nx\n-----END SSH SIGNATURE-----\n";
        let at = SystemTime::now();
        let err = none.verify_at(b"p", pgp, at).expect_err("no pgp keys");
        assert!(err.contains("no OpenPGP key is trusted"), "{err}");
        let err = none.verify_at(b"p", ssh, at).expect_err("no ssh keys");
        assert!(err.contains("no SSH key is trusted"), "{err}");
        let err = none
            .verify_at(b"p", b"-----BEGIN SIGNED MESSAGE-----", at)
            .expect_err("x509");
        assert!(err.contains("X.509"), "{err}");
    }
}
