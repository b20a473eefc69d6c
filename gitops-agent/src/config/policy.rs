//! [`Policy`]: the per-application policy keys, in one struct shared by the
//! command line's flags (every application's defaults, [`Defaults`]) and
//! each checked application ([`AppSpec::policy`](super::AppSpec::policy)).
//!
//! A new per-application key is a field here (with its flag in
//! [`Policy::from_args`] and its default), a field of
//! [`RawApp`](super::file::RawApp) and a line of [`merge`](super::merge)'s
//! `policy`.

use std::path::PathBuf;
use std::time::Duration;

use gitops_core::SyncWindow;

use crate::args::{AgentArgs, DriftArg, RenderKind, VerifyModeArg};

/// How an application is synced: the keys that `[[app]]`, `[defaults]` and
/// the command line's flags all set (in that order of precedence).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Policy {
    /// How files become resources (`render`, `--render`).
    pub render: RenderKind,
    /// The default drift policy (`drift`, `--drift`; `None`: revert, a
    /// manifest may say otherwise).
    pub drift: Option<DriftArg>,
    /// Delete what a commit removes (`prune`, `--prune`/`--no-prune`).
    pub prune: bool,
    /// How often to poll Git (`interval`, `--interval`).
    pub interval: Duration,
    /// How often to check for drift (`drift_interval`, `--drift-interval`).
    pub drift_interval: Duration,
    /// Sync only inside these windows (`allow`, `--allow`).
    pub allow: Vec<SyncWindow>,
    /// Never sync inside these windows (`deny`, `--deny`).
    pub deny: Vec<SyncWindow>,
    /// Write-back to this branch for review (`writeback_branch`,
    /// `--writeback-branch`).
    pub writeback_branch: Option<String>,
    /// Sign write-back commits with this SSH key (`writeback_key`,
    /// `--writeback-key`).
    pub writeback_key: Option<PathBuf>,
    /// Deploy only commits signed by a key in this allowed-signers file
    /// (`verify_signers`, `--verify-signers`): the SSH keys.
    pub verify_signers: Option<PathBuf>,
    /// Deploy only commits signed by a key in these armored OpenPGP key
    /// files (`verify_pgp_keys`, `--verify-pgp-keys`): the OpenPGP keys.
    pub verify_pgp_keys: Vec<PathBuf>,
    /// What must be signed (`verify_mode`, `--verify-mode`; `None`: the
    /// commit, when there are keys).
    pub verify_mode: Option<VerifyModeArg>,
}

/// What the command line gives every application unless the file sets the
/// key (the flags' own defaults when they are not given).
pub type Defaults = Policy;

impl Default for Policy {
    /// The flags' defaults: files, prune, 30 s polls, 60 s drift checks,
    /// no write-back branch or key, no signature check.
    fn default() -> Self {
        Self {
            render: RenderKind::Files,
            drift: None,
            prune: true,
            interval: Duration::from_secs(30),
            drift_interval: Duration::from_secs(60),
            allow: Vec::new(),
            deny: Vec::new(),
            writeback_branch: None,
            writeback_key: None,
            verify_signers: None,
            verify_pgp_keys: Vec::new(),
            verify_mode: None,
        }
    }
}

impl Policy {
    /// The per-application flags of `args`.
    pub fn from_args(args: &AgentArgs) -> Self {
        let engine = &args.engine;
        Self {
            render: args.source.render,
            drift: engine.drift,
            prune: engine.prune(),
            interval: engine.interval,
            drift_interval: engine.drift_interval,
            allow: engine.allow.clone(),
            deny: engine.deny.clone(),
            writeback_branch: engine.writeback_branch.clone(),
            writeback_key: engine.writeback_key.clone(),
            verify_signers: args.source.verify_signers.clone(),
            verify_pgp_keys: args.source.verify_pgp_keys.clone(),
            verify_mode: args.source.verify_mode,
        }
    }

    /// Whether a signature is checked: a key file of either kind is given.
    pub fn verifies(&self) -> bool {
        self.verify_signers.is_some() || !self.verify_pgp_keys.is_empty()
    }
}
