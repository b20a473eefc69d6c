//! `--verify-signers`, `--verify-pgp-keys` and `--verify-mode`: the keys a
//! release must be signed by, read once at start.

use std::path::Path;

use gitops_git::{AllowedSigners, PgpKeys, TrustedSigners, VerifyMode};

use crate::args::{SourceArgs, VerifyModeArg};
use crate::run::AgentError;

/// What the source must verify, if any key file was given: the mode
/// (`head` by default) and every key of every file. An error names the
/// flag and the file, never what is in it.
pub(crate) fn trusted_signers(
    args: &SourceArgs,
) -> Result<Option<(VerifyMode, TrustedSigners)>, AgentError> {
    if args.verify_signers.is_none() && args.verify_pgp_keys.is_empty() {
        return match args.verify_mode {
            Some(_) => Err(AgentError::VerifyMode {
                message: "no keys to verify with: give --verify-signers or --verify-pgp-keys"
                    .to_owned(),
            }),
            None => Ok(None),
        };
    }
    let mode = args.verify_mode.unwrap_or(VerifyModeArg::Head);
    // With many applications the release is each application's, checked
    // when its source is built.
    if mode != VerifyModeArg::Head
        && args.tag.is_none()
        && args.semver.is_none()
        && !args.repo.is_empty()
    {
        return Err(AgentError::VerifyMode {
            message: "a tag is only verified when the release is selected by --tag or --semver"
                .to_owned(),
        });
    }
    let mut trusted = TrustedSigners::new();
    if let Some(file) = &args.verify_signers {
        let bad = |message: String| AgentError::Signers {
            path: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
        trusted = trusted.with_ssh(AllowedSigners::parse(&text).map_err(|e| bad(e.to_string()))?);
    }
    let mut keys = PgpKeys::new();
    for file in &args.verify_pgp_keys {
        keys.extend(read_pgp_keys(file)?);
    }
    Ok(Some((mode.into(), trusted.with_pgp(keys))))
}

fn read_pgp_keys(file: &Path) -> Result<PgpKeys, AgentError> {
    pgp_keys_file(file).map_err(|message| AgentError::PgpKeys {
        path: file.to_owned(),
        message,
    })
}

/// The armored OpenPGP public keys in `file`; the error says what is wrong
/// with it (never the key material).
pub(crate) fn pgp_keys_file(file: &Path) -> Result<PgpKeys, String> {
    let bad = |message: String| message;
    // A binary keyring is not UTF-8: say what to give instead.
    let bytes = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| bad("not an armored key (export with `gpg --armor --export KEYID`)".into()))?;
    let keys = PgpKeys::parse(&text).map_err(|e| bad(e.to_string()))?;
    for key in keys.keys() {
        tracing::info!(file = %file.display(), key = %key.fingerprint(), "trusting OpenPGP key");
    }
    Ok(keys)
}
