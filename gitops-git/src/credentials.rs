//! Credentials for HTTP(S) and SSH remotes, kept out of every log line,
//! error message, `Debug` and `Display`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A secret string (password or token). `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; only for handing it to the transport.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// HTTP(S) credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic authentication (also how most hosts take a personal access token:
    /// any user name, the token as password).
    Basic {
        /// The user name (not secret, but never logged either).
        username: String,
        /// The password or token.
        password: Secret,
    },
    /// An `Authorization: Bearer <token>` header on every request.
    Bearer(Secret),
}

impl Credentials {
    /// Basic credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// A bearer token.
    pub fn bearer(token: impl Into<Secret>) -> Self {
        Credentials::Bearer(token.into())
    }

    /// The strings that must never be shown (a user name without a password
    /// is a token, as in `https://<token>@host/repo`).
    pub(crate) fn secrets(&self) -> Vec<String> {
        match self {
            Credentials::Basic { username, password } if password.expose().is_empty() => {
                vec![username.clone()]
            }
            Credentials::Basic { password, .. } => vec![password.expose().to_owned()],
            Credentials::Bearer(token) => vec![token.expose().to_owned()],
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { .. } => f.write_str("Credentials::Basic(***)"),
            Credentials::Bearer(_) => f.write_str("Credentials::Bearer(***)"),
        }
    }
}

/// What a credentials callback is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CredentialRequest {
    /// The remote location, without any user name or password.
    pub location: String,
}

/// A function that returns the credentials to use for one fetch (called once per
/// network operation, so rotated tokens are picked up).
pub type CredentialsCallback =
    Arc<dyn Fn(&CredentialRequest) -> Option<Credentials> + Send + Sync + 'static>;

/// Where credentials come from.
#[derive(Clone, Default)]
pub(crate) enum CredentialSource {
    #[default]
    None,
    Fixed(Credentials),
    Callback(CredentialsCallback),
}

impl CredentialSource {
    pub(crate) fn get(&self, location: &str) -> Option<Credentials> {
        match self {
            CredentialSource::None => None,
            CredentialSource::Fixed(c) => Some(c.clone()),
            CredentialSource::Callback(f) => f(&CredentialRequest {
                location: location.to_owned(),
            }),
        }
    }
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::None => f.write_str("None"),
            CredentialSource::Fixed(c) => write!(f, "{c:?}"),
            CredentialSource::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// How to run `ssh` for `ssh://` and scp-like (`host:path`) URLs.
///
/// The system `ssh` is always run with `BatchMode=yes`, so it never prompts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshOptions {
    /// The program to run instead of `ssh` (like `GIT_SSH_COMMAND`; may contain arguments).
    pub command: Option<String>,
    /// A private key file (`-i`, with `IdentitiesOnly=yes`).
    pub key: Option<PathBuf>,
    /// A known_hosts file; when set, host keys are checked strictly against it.
    pub known_hosts: Option<PathBuf>,
}

impl SshOptions {
    /// The `core.sshCommand` value for these options.
    pub(crate) fn command_line(&self) -> Option<String> {
        if self.command.is_none() && self.key.is_none() && self.known_hosts.is_none() {
            return None;
        }
        let mut cmd = self.command.clone().unwrap_or_else(|| "ssh".to_owned());
        cmd.push_str(" -o BatchMode=yes");
        if let Some(key) = &self.key {
            cmd.push_str(" -o IdentitiesOnly=yes -i ");
            cmd.push_str(&shell_quote(&key.to_string_lossy()));
        }
        if let Some(known_hosts) = &self.known_hosts {
            cmd.push_str(" -o StrictHostKeyChecking=yes -o UserKnownHostsFile=");
            cmd.push_str(&shell_quote(&known_hosts.to_string_lossy()));
        }
        Some(cmd)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Replaces every occurrence of a secret in `text` by `***`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}
