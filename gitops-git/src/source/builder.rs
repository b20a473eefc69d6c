//! [`GitSourceBuilder`]: the settings of a [`GitSource`], checked once.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::credentials::{CredentialSource, Credentials, CredentialsCallback, SshOptions, scrub};
use crate::error::GitError;
use crate::policy::{Policy, ReferencePolicy};
use crate::snapshot::{Limits, SpecialEntries};
use crate::trust::TrustedSigners;
use crate::verify::VerifyMode;

use super::cache::open_cache;
use super::shared::SharedRepository;
use super::{GitSource, Inner};

/// Builds a [`GitSource`]; see [`GitSource::builder`].
#[derive(Debug)]
#[must_use]
pub struct GitSourceBuilder {
    url: String,
    policy: ReferencePolicy,
    path: Option<String>,
    cache_dir: Option<PathBuf>,
    fetch_timeout: Duration,
    depth: Option<NonZeroU32>,
    limits: Limits,
    special: SpecialEntries,
    credentials: CredentialSource,
    ssh: SshOptions,
    ca_file: Option<PathBuf>,
    insecure_http: bool,
    verify: Option<(VerifyMode, TrustedSigners)>,
    shared: Option<SharedRepository>,
}

/// Extra root certificates for `https://` remotes, read once by `build`.
#[derive(Clone)]
pub(crate) struct CaFile {
    /// The PEM file (handed to `git push` as `http.sslCAInfo`).
    pub(crate) path: PathBuf,
    /// Its certificates (handed to gix's reqwest client).
    pub(crate) certificates: Vec<reqwest::Certificate>,
}

impl CaFile {
    fn read(path: PathBuf) -> Result<Self, GitError> {
        let bad = |reason: String| GitError::Config {
            what: "ca_file",
            reason: format!("{}: {reason}", path.display()),
        };
        let pem = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
        if certificates.is_empty() {
            return Err(bad("no PEM certificate in it".to_owned()));
        }
        Ok(Self { path, certificates })
    }
}

impl GitSourceBuilder {
    /// The defaults for the repository at `url` (see [`GitSource::builder`]).
    pub(super) fn new(url: String, policy: ReferencePolicy) -> Self {
        Self {
            url,
            policy,
            path: None,
            cache_dir: None,
            fetch_timeout: Duration::from_secs(60),
            depth: Some(NonZeroU32::MIN),
            limits: Limits::default(),
            special: SpecialEntries::default(),
            credentials: CredentialSource::None,
            ssh: SshOptions::default(),
            ca_file: None,
            insecure_http: false,
            verify: None,
            shared: None,
        }
    }

    /// Only the files under this directory of the repository (relative, `/`-separated)
    /// are part of a snapshot; their paths are relative to it.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The directory of the bare cache repository (created on first use, reused
    /// across polls and restarts). Required.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The longest one poll may take before it fails as transient (default
    /// 60 s; `Duration::MAX`: no practical limit, see [`LONGEST_TIMEOUT`](crate::LONGEST_TIMEOUT)).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = crate::saturate(timeout);
        self
    }

    /// History depth to fetch: `Some(1)` (the default) fetches only the release
    /// commit; `None` fetches full history (needed by [`GitSource::history`]).
    /// The `Commit` policy always fetches full history.
    pub fn depth(mut self, depth: Option<NonZeroU32>) -> Self {
        self.depth = depth;
        self
    }

    /// Size and count limits for snapshots.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// What to do with symbolic links and submodules (default: refuse the revision).
    pub fn special_entries(mut self, special: SpecialEntries) -> Self {
        self.special = special;
        self
    }

    /// HTTP(S) credentials. A password in the URL is moved here automatically.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = CredentialSource::Fixed(credentials);
        self
    }

    /// HTTP(S) credentials asked for on every network operation.
    pub fn credentials_callback(mut self, callback: CredentialsCallback) -> Self {
        self.credentials = CredentialSource::Callback(callback);
        self
    }

    /// How to run `ssh` (command, key, known_hosts).
    pub fn ssh(mut self, ssh: SshOptions) -> Self {
        self.ssh = ssh;
        self
    }

    /// Trust the CA certificates in this PEM file for `https://` remotes,
    /// besides the system's roots (a private Git server, a test CA). Read
    /// once by [`build`](Self::build): a missing file or one without a
    /// certificate is a configuration error.
    ///
    /// Fetches hand the certificates to gix's reqwest client (rustls);
    /// [`GitWriteback`](crate::GitWriteback)'s `git push` gets the file as
    /// `http.sslCAInfo`, where git (curl) trusts only the certificates in it
    /// for that remote, not the system's.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Send credentials (basic, bearer, or from the URL) to a plain `http://`
    /// remote, where anyone on the path can read them. Off by default: such
    /// a fetch or push fails with `SourceError::Authentication` (or a
    /// permanent write-back error) before anything is sent. For test servers
    /// and trusted networks only. Basic credentials also need this crate's
    /// cargo feature `insecure-http-credentials` (gix refuses them
    /// otherwise); a bearer token travels in a header and does not.
    pub fn allow_insecure_http_credentials(mut self, allow: bool) -> Self {
        self.insecure_http = allow;
        self
    }

    /// Require valid signatures, by a key of `signers`, before a revision
    /// is returned by `poll` or read by `snapshot`: an
    /// [`AllowedSigners`](crate::AllowedSigners) (SSH), a
    /// [`PgpKeys`](crate::PgpKeys) (OpenPGP), or a [`TrustedSigners`] with
    /// both (a signature by either set passes).
    pub fn verify(mut self, mode: VerifyMode, signers: impl Into<TrustedSigners>) -> Self {
        self.verify = Some((mode, signers.into()));
        self
    }

    /// Shares `repository`'s cache and fetches with the other sources of the
    /// same remote (see [`SharedRepository`]); [`cache_dir`](Self::cache_dir)
    /// is then not needed (and ignored). The URL must name the remote the
    /// shared repository was opened for.
    pub fn shared(mut self, repository: &SharedRepository) -> Self {
        self.shared = Some(repository.clone());
        self
    }

    /// Validates the settings and creates or opens the cache repository.
    pub fn build(self) -> Result<GitSource, GitError> {
        let policy = Policy::new(&self.policy).map_err(|reason| GitError::Config {
            what: "reference policy",
            reason,
        })?;
        if let Some(path) = &self.path {
            gitops_core::model::validate_relative_path(path).map_err(|e| GitError::Config {
                what: "path",
                reason: e.to_string(),
            })?;
        }
        let cache_dir = match &self.shared {
            Some(shared) => shared.group.cache_dir.clone(),
            None => self.cache_dir.ok_or(GitError::Config {
                what: "cache_dir",
                reason: "a cache directory is required".to_owned(),
            })?,
        };
        if let Some((VerifyMode::Tag | VerifyMode::TagAndHead, _)) = &self.verify
            && matches!(policy, Policy::Branch(_) | Policy::Commit(_))
        {
            return Err(GitError::Config {
                what: "verify",
                reason: "tag verification needs the Tag or Semver policy".to_owned(),
            });
        }
        let ca = self.ca_file.map(CaFile::read).transpose()?;
        let mut url = gix::url::parse(self.url.as_str()).map_err(|e| GitError::Config {
            what: "url",
            reason: scrub(&e.to_string(), &url_secrets(&self.url)),
        })?;
        let credentials = credentials_from_url(&mut url, self.credentials);
        let location = url.to_bstring().to_string();
        let depth = if policy.allows_shallow() {
            self.depth
        } else {
            None
        };
        let group = self.shared.map(|shared| shared.group);
        let (repo, fetch_lock) = match &group {
            Some(group) if group.location != location => {
                return Err(GitError::Config {
                    what: "shared",
                    reason: format!(
                        "the shared repository is for {}, not {location}",
                        group.location
                    ),
                });
            }
            Some(group) => {
                group.register(&policy, depth);
                (group.repo.clone(), group.fetch_lock.clone())
            }
            None => (
                open_cache(&cache_dir)?,
                Arc::new(tokio::sync::Mutex::new(())),
            ),
        };
        Ok(GitSource {
            inner: Arc::new(Inner {
                repo,
                url,
                location,
                policy,
                path: self.path,
                cache_dir,
                fetch_timeout: self.fetch_timeout,
                depth,
                limits: self.limits,
                special: self.special,
                credentials,
                ssh: self.ssh,
                ca,
                insecure_http: self.insecure_http,
                verify: self.verify,
                last_good: Mutex::new(None),
                fetch_lock,
                blob_cache: Mutex::new(Default::default()),
                group,
            }),
        })
    }
}

/// Moves the secret out of `url`: `user:password@` always leaves the URL
/// (and becomes the credentials unless others are configured); a bare
/// `https://token@host` user is taken as a token when no credentials are
/// configured.
fn credentials_from_url(url: &mut gix::Url, configured: CredentialSource) -> CredentialSource {
    if let Some(password) = url.password.take() {
        let username = url.user.take().unwrap_or_default();
        if matches!(configured, CredentialSource::None) {
            return CredentialSource::Fixed(Credentials::basic(username, password));
        }
    } else if matches!(url.scheme, gix::url::Scheme::Http | gix::url::Scheme::Https)
        && url.user.is_some()
        && matches!(configured, CredentialSource::None)
    {
        // `https://token@host/repo`: the user part is the secret.
        let token = url.user.take().unwrap_or_default();
        return CredentialSource::Fixed(Credentials::basic(token, String::new()));
    }
    configured
}

/// The remote at `url` as it is shown and compared: without credentials.
pub(super) fn location_of(url: &str) -> Result<String, GitError> {
    let mut parsed = gix::url::parse(url).map_err(|e| GitError::Config {
        what: "url",
        reason: scrub(&e.to_string(), &url_secrets(url)),
    })?;
    credentials_from_url(&mut parsed, CredentialSource::None);
    Ok(parsed.to_bstring().to_string())
}

fn url_secrets(url: &str) -> Vec<String> {
    // user:password@ in an unparsable URL: scrub everything between "//" and "@".
    url.split_once("//")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(userinfo, _)| vec![userinfo.to_owned()])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> gix::Url {
        gix::url::parse(gix::bstr::BStr::new(text)).expect("a valid url")
    }

    fn basic(source: &CredentialSource) -> Option<(String, String)> {
        match source {
            CredentialSource::Fixed(Credentials::Basic { username, password }) => {
                Some((username.clone(), password.expose().to_owned()))
            }
            _ => None,
        }
    }

    #[test]
    fn a_password_in_the_url_becomes_the_credentials() {
        let mut u = url("https://alice:s3cret@example.com/repo.git");
        let got = credentials_from_url(&mut u, CredentialSource::None);
        assert_eq!(basic(&got), Some(("alice".into(), "s3cret".into())));
        assert_eq!((u.user, u.password), (None, None));
    }

    #[test]
    fn configured_credentials_win_but_the_password_still_leaves_the_url() {
        let mut u = url("https://alice:s3cret@example.com/repo.git");
        let configured = CredentialSource::Fixed(Credentials::basic("bob", "other"));
        let got = credentials_from_url(&mut u, configured);
        assert_eq!(basic(&got), Some(("bob".into(), "other".into())));
        assert_eq!((u.user, u.password), (None, None));
    }

    #[test]
    fn an_https_user_alone_is_a_token() {
        let mut u = url("https://tok3n@example.com/repo.git");
        let got = credentials_from_url(&mut u, CredentialSource::None);
        assert_eq!(basic(&got), Some(("tok3n".into(), String::new())));
        assert_eq!(u.user, None);
    }

    #[test]
    fn an_ssh_user_is_not_a_secret() {
        let mut u = url("ssh://git@example.com/repo.git");
        let got = credentials_from_url(&mut u, CredentialSource::None);
        assert!(matches!(got, CredentialSource::None));
        assert_eq!(u.user.as_deref(), Some("git"));
    }

    #[test]
    fn a_ca_file_must_exist_and_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = CaFile::read(dir.path().join("missing.pem")).err();
        assert!(
            matches!(
                missing,
                Some(GitError::Config {
                    what: "ca_file",
                    ..
                })
            ),
            "{missing:?}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = CaFile::read(empty).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("empty.pem")),
            "{err:?}"
        );
    }

    #[test]
    fn userinfo_of_an_unparsable_url_is_scrubbed() {
        assert_eq!(url_secrets("https://a:b@host/x"), vec!["a:b".to_owned()]);
        assert!(url_secrets("/local/path").is_empty());
    }
}
