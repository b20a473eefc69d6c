//! Git credentials from files and the environment, never from argv.
//!
//! STUB: the credentials helper fills this module in. The API below is what
//! the rest of the crate calls; keep it (extend it as needed).

use gitops_git::GitSourceBuilder;

use crate::args::CredentialArgs;

/// Why credentials could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {}

/// Adds the credentials `args` and the environment give to `builder` for
/// the remote `repo`.
pub fn configure(
    builder: GitSourceBuilder,
    _args: &CredentialArgs,
    _repo: &str,
) -> Result<GitSourceBuilder, CredentialError> {
    Ok(builder)
}
