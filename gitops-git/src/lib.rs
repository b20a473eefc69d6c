//! `gitops-git`: a [`Source`](gitops_core::Source) that reads releases from Git.
//!
//! TODO docs
mod credentials;
mod error;
mod policy;
mod snapshot;
mod source;
mod verify;

pub use credentials::{CredentialRequest, Credentials, CredentialsCallback, Secret, SshOptions};
pub use error::GitError;
pub use policy::ReferencePolicy;
pub use snapshot::{Limits, SpecialEntries};
pub use source::{GitSource, GitSourceBuilder, PollOutcome};
pub use verify::{AllowedSigner, AllowedSigners, AllowedSignersError, VerifyMode};
