//! Git credentials from files and the environment, never from argv.
//!
//! Where HTTP(S) credentials come from, first found wins:
//!
//! 1. `--git-credentials-file FILE`: `username=`, `password=` or `token=`
//!    lines (blank lines and `#` comments ignored), or `https://user:token@host`
//!    lines as git's credential store writes them (the line for the remote's
//!    scheme, host and port is used; user and password percent-decoded). The
//!    file is read again before every fetch, so a rotated token is picked up
//!    without a restart; if a later read fails the last good credentials stay
//!    in use (with a warning). A file readable by group or others draws a
//!    warning.
//! 2. The environment: `GITOPS_GIT_USERNAME` with `GITOPS_GIT_PASSWORD`, or
//!    `GITOPS_GIT_TOKEN` (with `GITOPS_GIT_USERNAME` if the host wants a
//!    particular user). There are no flags for them: argv is visible to every
//!    local user (`ps`), the environment only to the process's own user.
//! 3. A password in the `--repo` URL (works, with a warning that it shows in
//!    the process list).
//!
//! A token is sent as HTTP basic authentication with the token as password
//! and [`TOKEN_USERNAME`] as user unless one is given: that is what Git hosts
//! accept over git's smart HTTP (GitHub for personal access and app tokens,
//! GitLab for personal, project and deploy tokens, Gitea and Bitbucket too);
//! an `Authorization: Bearer` header is refused by most of them for git
//! operations.
//!
//! `--ssh-key` names the private key for `ssh://` and `host:path` remotes,
//! `--git-ca-file` a PEM CA bundle trusted for `https://` besides the
//! system's roots. Credentials over plain `http://` are refused unless
//! `--allow-insecure-http-credentials` is given.
//!
//! No error, `Debug` or log line of this module holds a secret: errors name
//! the flag, file, line or variable, never a value.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gitops_git::{Credentials, GitSourceBuilder, SshOptions};

use crate::args::CredentialArgs;

/// The user name sent with a token when none is given (GitHub's convention
/// for app tokens; GitLab, Gitea and Bitbucket accept any user with a token).
pub const TOKEN_USERNAME: &str = "x-access-token";

/// The environment variable with the user name.
pub const ENV_USERNAME: &str = "GITOPS_GIT_USERNAME";
/// The environment variable with the password.
pub const ENV_PASSWORD: &str = "GITOPS_GIT_PASSWORD";
/// The environment variable with a token (sent as the basic password).
pub const ENV_TOKEN: &str = "GITOPS_GIT_TOKEN";

/// Why credentials could not be set up. Names the flag, file, line or
/// variable; never holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The credentials file cannot be read or says nothing usable.
    #[error("--git-credentials-file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a value from it).
        message: String,
    },
    /// One line of the credentials file is wrong.
    #[error("--git-credentials-file {path}, line {line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong (never a value from it).
        message: String,
    },
    /// The credentials environment variables are inconsistent.
    #[error("{variable}: {message}")]
    Environment {
        /// The variable it is about.
        variable: &'static str,
        /// What is wrong (never its value).
        message: String,
    },
    /// `--ssh-key` cannot be read.
    #[error("--ssh-key {path}: {source}")]
    SshKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--git-ca-file` cannot be read.
    #[error("--git-ca-file {path}: {source}")]
    CaFile {
        /// The PEM file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Credentials would go over plain `http://`.
    #[error(
        "--repo {location}: refusing to send credentials over plain http:// (anyone on the \
         path can read them); use https://, or --allow-insecure-http-credentials on a \
         network you trust"
    )]
    InsecureHttp {
        /// The remote, without any user or password.
        location: String,
    },
}

/// Adds the credentials `args` and the process environment give to
/// `builder` for the remote `repo`: credentials (file, then environment;
/// a password in `repo` itself is left to the builder), the SSH key, the
/// CA file and whether plain `http://` may carry credentials.
pub fn configure(
    builder: GitSourceBuilder,
    args: &CredentialArgs,
    repo: &str,
) -> Result<GitSourceBuilder, CredentialError> {
    configure_with(builder, args, repo, &|name| std::env::var_os(name))
}

/// [`configure`] with the environment given as a lookup function (tests).
pub fn configure_with(
    mut builder: GitSourceBuilder,
    args: &CredentialArgs,
    repo: &str,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<GitSourceBuilder, CredentialError> {
    let remote = Remote::parse(repo);
    let from_env = from_env(env)?;
    let mut have_credentials = remote.userinfo;
    if let Some(path) = &args.git_credentials_file {
        let file = CredentialsFile::open(path.clone(), remote.clone())?;
        if from_env.is_some() {
            tracing::debug!("--git-credentials-file wins over the GITOPS_GIT_* variables");
        }
        builder = builder.credentials_callback(Arc::new(move |_| Some(file.get())));
        have_credentials = true;
    } else if let Some(credentials) = from_env {
        builder = builder.credentials(credentials);
        have_credentials = true;
    }
    if have_credentials && remote.scheme == "http" && !args.allow_insecure_http_credentials {
        return Err(CredentialError::InsecureHttp {
            location: remote.location(),
        });
    }
    builder = builder.allow_insecure_http_credentials(args.allow_insecure_http_credentials);
    if let Some(key) = &args.ssh_key {
        std::fs::File::open(key).map_err(|source| CredentialError::SshKey {
            path: key.clone(),
            source,
        })?;
        builder = builder.ssh(SshOptions {
            key: Some(key.clone()),
            ..SshOptions::default()
        });
    }
    if let Some(ca) = &args.git_ca_file {
        std::fs::File::open(ca).map_err(|source| CredentialError::CaFile {
            path: ca.clone(),
            source,
        })?;
        builder = builder.ca_file(ca.clone());
    }
    Ok(builder)
}

/// What of the remote URL matters here: scheme, host and port (a line of a
/// credential store file is chosen by them) and whether it carries a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Remote {
    /// Lower case; empty for a path or `host:path`.
    scheme: String,
    /// `host` or `host:port`, lower case.
    host: String,
    /// The URL has `user@` or `user:password@` (HTTP(S) only).
    userinfo: bool,
}

impl Remote {
    fn parse(url: &str) -> Self {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Self::default();
        };
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((_, host)) => (true, host),
            None => (false, authority),
        };
        let http = scheme == "http" || scheme == "https";
        Self {
            host: host.to_ascii_lowercase(),
            userinfo: userinfo && http,
            scheme,
        }
    }

    /// `scheme://host`, for messages.
    fn location(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// The credentials the `GITOPS_GIT_*` variables give, if any. An empty
/// variable counts as unset.
fn from_env(
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Option<Credentials>, CredentialError> {
    let get = |variable: &'static str| -> Result<Option<String>, CredentialError> {
        match env(variable) {
            None => Ok(None),
            Some(value) if value.is_empty() => Ok(None),
            Some(value) => {
                value
                    .into_string()
                    .map(Some)
                    .map_err(|_| CredentialError::Environment {
                        variable,
                        message: "not valid UTF-8".to_owned(),
                    })
            }
        }
    };
    let bad = |variable, message: &str| CredentialError::Environment {
        variable,
        message: message.to_owned(),
    };
    match (get(ENV_USERNAME)?, get(ENV_PASSWORD)?, get(ENV_TOKEN)?) {
        (_, Some(_), Some(_)) => Err(bad(
            ENV_TOKEN,
            "set either GITOPS_GIT_PASSWORD or GITOPS_GIT_TOKEN, not both",
        )),
        (Some(user), Some(password), None) => Ok(Some(Credentials::basic(user, password))),
        (None, Some(_), None) => Err(bad(
            ENV_PASSWORD,
            "a password needs GITOPS_GIT_USERNAME (or use GITOPS_GIT_TOKEN for a token)",
        )),
        (user, None, Some(token)) => Ok(Some(Credentials::basic(
            user.unwrap_or_else(|| TOKEN_USERNAME.to_owned()),
            token,
        ))),
        (Some(_), None, None) => Err(bad(
            ENV_USERNAME,
            "a user name needs GITOPS_GIT_PASSWORD or GITOPS_GIT_TOKEN",
        )),
        (None, None, None) => Ok(None),
    }
}

/// `--git-credentials-file`, read again on every fetch.
struct CredentialsFile {
    path: PathBuf,
    remote: Remote,
    /// What the last successful read gave.
    last_good: Mutex<Credentials>,
}

impl CredentialsFile {
    /// Reads the file once (an error stops the agent before it starts) and
    /// warns if it is readable by group or others.
    fn open(path: PathBuf, remote: Remote) -> Result<Self, CredentialError> {
        let credentials = read_file(&path, &remote)?;
        warn_if_shared(&path);
        Ok(Self {
            path,
            remote,
            last_good: Mutex::new(credentials),
        })
    }

    /// The file's credentials now, or the last good ones if it cannot be read.
    fn get(&self) -> Credentials {
        let mut last = self.last_good.lock().unwrap_or_else(|p| p.into_inner());
        match read_file(&self.path, &self.remote) {
            Ok(credentials) => *last = credentials,
            Err(error) => tracing::warn!(
                %error,
                "cannot read the credentials file again; using the credentials read last"
            ),
        }
        last.clone()
    }
}

fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "--git-credentials-file is readable by group or others: chmod 600 it"
        );
    }
}

fn read_file(path: &Path, remote: &Remote) -> Result<Credentials, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|e| CredentialError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    parse_file(&text, remote).map_err(|e| match e {
        Problem::Line(line, message) => CredentialError::Line {
            path: path.to_owned(),
            line,
            message,
        },
        Problem::File(message) => CredentialError::File {
            path: path.to_owned(),
            message,
        },
    })
}

/// What is wrong with a credentials file, before the path is known.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    Line(usize, String),
    File(String),
}

/// Parses the text of a credentials file for `remote`.
fn parse_file(text: &str, remote: &Remote) -> Result<Credentials, Problem> {
    let mut keys: [Option<String>; 3] = [None, None, None];
    let mut urls: Vec<(usize, StoreLine)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let lower = line.get(..8).unwrap_or(line).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let parsed = StoreLine::parse(line).map_err(|m| Problem::Line(number, m))?;
            urls.push((number, parsed));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Problem::Line(
                number,
                "expected `username=`, `password=`, `token=` or a URL".to_owned(),
            ));
        };
        let slot = match key.trim() {
            "username" => 0,
            "password" => 1,
            "token" => 2,
            // The key is echoed only when short and plain: a value pasted on
            // its own line without `key=` is caught above, never shown.
            other if other.len() <= 20 && other.chars().all(|c| c.is_ascii_alphabetic()) => {
                return Err(Problem::Line(
                    number,
                    format!("unknown key `{other}` (expected username, password or token)"),
                ));
            }
            _ => {
                return Err(Problem::Line(
                    number,
                    "unknown key (expected username, password or token)".to_owned(),
                ));
            }
        };
        if keys[slot].is_some() {
            return Err(Problem::Line(number, "repeated key".to_owned()));
        }
        keys[slot] = Some(value.trim().to_owned());
    }
    let [username, password, token] = keys;
    let any_key = username.is_some() || password.is_some() || token.is_some();
    if !urls.is_empty() {
        if any_key {
            return Err(Problem::File(
                "mixes key=value lines and URL lines; use one form".to_owned(),
            ));
        }
        return urls
            .into_iter()
            .find(|(_, l)| l.scheme == remote.scheme && l.host == remote.host)
            .map(|(_, l)| l.credentials())
            .ok_or_else(|| {
                Problem::File(format!(
                    "no line for the remote {}",
                    if remote.host.is_empty() {
                        "(not an http(s) URL)".to_owned()
                    } else {
                        remote.location()
                    }
                ))
            });
    }
    match (username, password, token) {
        (_, Some(_), Some(_)) => Err(Problem::File(
            "has both password= and token=; keep one".to_owned(),
        )),
        (Some(user), Some(password), None) => Ok(Credentials::basic(user, password)),
        (None, Some(_), None) => Err(Problem::File(
            "password= needs username= (or use token= for a token)".to_owned(),
        )),
        (user, None, Some(token)) => Ok(Credentials::basic(
            user.unwrap_or_else(|| TOKEN_USERNAME.to_owned()),
            token,
        )),
        (Some(_), None, None) => Err(Problem::File(
            "username= needs password= or token=".to_owned(),
        )),
        (None, None, None) => Err(Problem::File("holds no credentials".to_owned())),
    }
}

/// One `scheme://user:password@host[:port][/path]` line of git's store.
struct StoreLine {
    scheme: String,
    host: String,
    username: String,
    password: String,
}

impl StoreLine {
    /// Errors never quote the line (it holds the secret).
    fn parse(line: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = line.split_once("://") else {
            return Err("not a URL".to_owned());
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err("a URL line must start with https:// or http://".to_owned());
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let Some((userinfo, host)) = authority.rsplit_once('@') else {
            return Err("the URL has no `user:password@`".to_owned());
        };
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let decode = |s: &str, what: &str| {
            percent_decode(s).ok_or_else(|| format!("the {what} is not valid percent-encoding"))
        };
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            username: decode(user, "user name")?,
            password: decode(password, "password")?,
        })
    }

    /// `user:password`, or a token alone (`https://token@host`).
    fn credentials(self) -> Credentials {
        if self.password.is_empty() {
            Credentials::basic(TOKEN_USERNAME, self.username)
        } else {
            Credentials::basic(self.username, self.password)
        }
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Remote {
        Remote::parse("https://git.example:8443/org/app.git")
    }

    fn basic(c: &Credentials) -> (String, String) {
        match c {
            Credentials::Basic { username, password } => {
                (username.clone(), password.expose().to_owned())
            }
            other => panic!("not basic: {other:?}"),
        }
    }

    #[test]
    fn key_value_lines() {
        let c = parse_file("# deploy bot\nusername = bot\npassword=pw-1\n\n", &remote());
        assert_eq!(basic(&c.expect("parses")), ("bot".into(), "pw-1".into()));
        let c = parse_file("token=tok-1\n", &remote()).expect("parses");
        assert_eq!(basic(&c), (TOKEN_USERNAME.into(), "tok-1".into()));
        let c = parse_file("username=oauth2\ntoken=tok-1\n", &remote()).expect("parses");
        assert_eq!(basic(&c), ("oauth2".into(), "tok-1".into()));
    }

    #[test]
    fn store_lines_pick_the_remote_s_host_and_decode() {
        let text = "https://a:other@elsewhere.example\nhttps://bot:p%40ss@git.example:8443\n";
        let c = parse_file(text, &remote()).expect("parses");
        assert_eq!(basic(&c), ("bot".into(), "p@ss".into()));
        let c = parse_file("https://tok-only@git.example:8443/\n", &remote()).expect("parses");
        assert_eq!(basic(&c), (TOKEN_USERNAME.into(), "tok-only".into()));
        let err = parse_file("https://a:b@git.example\n", &remote()).expect_err("no port");
        assert_eq!(
            err,
            Problem::File("no line for the remote https://git.example:8443".into())
        );
    }

    #[test]
    fn errors_name_the_line_never_the_value() {
        let cases = [
            "username=bot\npasswd=SECRET-1\n",
            "username=bot\nSECRET-1\n",
            "username=bot\nx-SECRET-1=y\n",
            "https://bot:SECRET-1@git.example:8443\ntoken=SECRET-1\n",
            "https://bot:SECRET-1%zz@git.example:8443\n",
            "password=SECRET-1\n",
            "password=SECRET-1\ntoken=SECRET-1\n",
            "username=bot\npassword=SECRET-1\npassword=SECRET-1\n",
        ];
        for text in cases {
            let err = parse_file(text, &remote()).expect_err(text);
            let shown = format!("{err:?}");
            assert!(!shown.contains("SECRET-1"), "{text}: {shown}");
        }
        assert_eq!(
            parse_file("username=bot\npasswd=x\n", &remote()),
            Err(Problem::Line(
                2,
                "unknown key `passwd` (expected username, password or token)".into()
            ))
        );
    }

    #[test]
    fn environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let got = from_env(&env(&[(ENV_TOKEN, "tok")])).expect("ok");
        assert_eq!(
            basic(&got.expect("some")),
            (TOKEN_USERNAME.into(), "tok".into())
        );
        let got = from_env(&env(&[(ENV_USERNAME, "u"), (ENV_PASSWORD, "pw")])).expect("ok");
        assert_eq!(basic(&got.expect("some")), ("u".into(), "pw".into()));
        assert!(from_env(&env(&[(ENV_TOKEN, "")])).expect("ok").is_none());
        for vars in [
            &[(ENV_PASSWORD, "SECRET-2")][..],
            &[(ENV_USERNAME, "u")][..],
            &[(ENV_PASSWORD, "SECRET-2"), (ENV_TOKEN, "SECRET-2")][..],
        ] {
            let vars: &'static [(&str, &str)] = Box::leak(vars.to_vec().into_boxed_slice());
            let err = from_env(&env(vars)).expect_err("inconsistent");
            assert!(!format!("{err} {err:?}").contains("SECRET-2"));
        }
    }

    #[test]
    fn remotes() {
        let r = Remote::parse("HTTPS://bot:pw@Git.Example/app.git");
        assert_eq!(
            (r.scheme.as_str(), r.host.as_str()),
            ("https", "git.example")
        );
        assert!(r.userinfo);
        assert!(!Remote::parse("ssh://git@host/x").userinfo);
        assert_eq!(Remote::parse("git@host:x"), Remote::default());
    }
}
