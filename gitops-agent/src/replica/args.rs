//! [`ReplicaArgs`]: the flags of replica mode (`--etcd`, `--replica-id`,
//! TLS and user), and what they become: the etcd connection settings and
//! the replica's settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use gitops_etcd::{EtcdConfig, ReplicaConfig, TlsConfig};

use super::ReplicaError;

/// The environment variable holding the etcd password (an environment
/// file of the service manager); `--etcd-password-file` wins over it.
pub const PASSWORD_ENV: &str = "GITOPS_ETCD_PASSWORD";

/// Replica mode: run the applications of `--config` or `--config-repo` as
/// one replica among several sharing them on etcd.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Replicas (etcd)")]
#[non_exhaustive]
pub struct ReplicaArgs {
    /// Share the applications with the other replicas on this etcd
    /// (comma-separated endpoints, `http://` or `https://`): each
    /// application runs on exactly one replica. Needs --config or
    /// --config-repo, and --replica-id.
    #[arg(
        long = "etcd",
        env = "GITOPS_ETCD",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        requires = "replica_id"
    )]
    pub endpoints: Vec<String>,
    /// This replica's name, unique among the live replicas (no `/`).
    #[arg(
        long,
        env = "GITOPS_REPLICA_ID",
        value_name = "ID",
        requires = "endpoints"
    )]
    pub replica_id: Option<String>,
    /// The key prefix the replicas share (members, locks, state).
    #[arg(
        long,
        env = "GITOPS_ETCD_PREFIX",
        value_name = "PREFIX",
        default_value = "/gitops"
    )]
    pub etcd_prefix: String,
    /// The replica's lease (whole seconds, at least 2 s): a killed
    /// replica's applications are taken over about this long after.
    #[arg(long, env = "GITOPS_ETCD_LEASE_TTL", value_name = "DURATION",
          value_parser = crate::args::duration, default_value = "5s")]
    pub etcd_lease_ttl: Duration,
    /// PEM of the CA that signed etcd's certificate (`https://` endpoints).
    #[arg(long, env = "GITOPS_ETCD_CA_FILE", value_name = "FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM of this replica's client certificate (mutual TLS; with --etcd-key-file).
    #[arg(
        long,
        env = "GITOPS_ETCD_CERT_FILE",
        value_name = "FILE",
        requires = "etcd_key_file"
    )]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM of this replica's client key (with --etcd-cert-file).
    #[arg(
        long,
        env = "GITOPS_ETCD_KEY_FILE",
        value_name = "FILE",
        requires = "etcd_cert_file"
    )]
    pub etcd_key_file: Option<PathBuf>,
    /// The server name to verify in etcd's certificate (default: the endpoint's host).
    #[arg(long, env = "GITOPS_ETCD_TLS_DOMAIN", value_name = "NAME")]
    pub etcd_tls_domain: Option<String>,
    /// etcd user; the password comes from --etcd-password-file or the
    /// environment variable GITOPS_ETCD_PASSWORD (never a flag: `ps`
    /// shows flags).
    #[arg(long, env = "GITOPS_ETCD_USER", value_name = "USER")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd password (one trailing newline ignored).
    #[arg(
        long,
        env = "GITOPS_ETCD_PASSWORD_FILE",
        value_name = "FILE",
        requires = "etcd_user"
    )]
    pub etcd_password_file: Option<PathBuf>,
}

impl ReplicaArgs {
    /// Whether replica mode is on (`--etcd`).
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The connection settings; reads the TLS files and the password
    /// (from `password_env`, the value of [`PASSWORD_ENV`], unless a file
    /// is given). Errors name the flag and file, never a secret.
    pub fn etcd_config(&self, password_env: Option<String>) -> Result<EtcdConfig, ReplicaError> {
        let mut config = EtcdConfig::new(self.endpoints.iter().map(|e| e.trim().to_owned()));
        if self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some() {
            let ca_pem = read_opt("--etcd-ca-file", self.etcd_ca_file.as_deref())?;
            let cert = read_opt("--etcd-cert-file", self.etcd_cert_file.as_deref())?;
            let key = read_opt("--etcd-key-file", self.etcd_key_file.as_deref())?;
            config = config.with_tls(TlsConfig {
                ca_pem,
                identity: cert.zip(key),
                domain: self.etcd_tls_domain.clone(),
            });
        }
        if let Some(user) = &self.etcd_user {
            let password = match &self.etcd_password_file {
                Some(path) => {
                    let bytes = read("--etcd-password-file", path)?;
                    let text = String::from_utf8(bytes).map_err(|_| ReplicaError::File {
                        flag: "--etcd-password-file",
                        path: path.clone(),
                        message: "not UTF-8".into(),
                    })?;
                    strip_newline(text)
                }
                None => password_env.ok_or(ReplicaError::NoPassword)?,
            };
            config = config.with_user(user.clone(), password);
        }
        Ok(config)
    }

    /// The replica's settings (validated when it starts).
    pub fn replica_config(&self) -> Result<ReplicaConfig, ReplicaError> {
        let id = self.replica_id.clone().ok_or(ReplicaError::NoReplicaId)?;
        Ok(ReplicaConfig::new(id, self.etcd_prefix.clone()).ttl(self.etcd_lease_ttl))
    }
}

/// `text` without one trailing newline (`\n` or `\r\n`).
fn strip_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ReplicaError> {
    std::fs::read(path).map_err(|e| ReplicaError::File {
        flag,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn read_opt(flag: &'static str, path: Option<&Path>) -> Result<Option<Vec<u8>>, ReplicaError> {
    path.map(|p| read(flag, p)).transpose()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        replica: ReplicaArgs,
    }

    fn parse(args: &[&str]) -> Result<ReplicaArgs, clap::Error> {
        let mut all = vec!["agent"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.replica)
    }

    #[test]
    fn endpoints_are_comma_separated_and_need_an_id() {
        let args = parse(&[
            "--etcd",
            "http://a:2379,http://b:2379",
            "--replica-id",
            "r1",
        ])
        .expect("valid");
        assert!(args.enabled());
        assert_eq!(args.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(args.etcd_lease_ttl, Duration::from_secs(5));
        assert!(parse(&["--etcd", "http://a:2379"]).is_err());
        assert!(parse(&["--replica-id", "r1"]).is_err());
        assert!(!parse(&[]).expect("valid").enabled());
    }

    #[test]
    fn the_password_comes_from_a_file_or_the_environment_and_is_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret-from-file\n").expect("write");
        let file_arg = file.display().to_string();
        let args = parse(&[
            "--etcd",
            "http://a:2379",
            "--replica-id",
            "r1",
            "--etcd-user",
            "gitops",
            "--etcd-password-file",
            &file_arg,
        ])
        .expect("valid");
        let config = args.etcd_config(Some("from-env".into())).expect("config");
        assert_eq!(
            config.user,
            Some(("gitops".to_owned(), "s3cret-from-file".to_owned()))
        );
        assert!(!format!("{config:?}").contains("s3cret"));

        let env_only = parse(&[
            "--etcd",
            "http://a:2379",
            "--replica-id",
            "r1",
            "--etcd-user",
            "u",
        ])
        .expect("valid");
        let config = env_only.etcd_config(Some("pw".into())).expect("config");
        assert_eq!(config.user, Some(("u".to_owned(), "pw".to_owned())));
        let missing = env_only.etcd_config(None).expect_err("no password");
        assert!(matches!(missing, ReplicaError::NoPassword), "{missing}");
    }

    #[test]
    fn unreadable_tls_files_name_the_flag_and_file() {
        let args = parse(&[
            "--etcd",
            "https://a:2379",
            "--replica-id",
            "r1",
            "--etcd-ca-file",
            "/nonexistent/ca.pem",
        ])
        .expect("valid");
        let e = args
            .etcd_config(None)
            .expect_err("missing file")
            .to_string();
        assert!(e.starts_with("--etcd-ca-file /nonexistent/ca.pem: "), "{e}");
    }

    #[test]
    fn one_trailing_newline_is_stripped() {
        assert_eq!(strip_newline("pw\r\n".into()), "pw");
        assert_eq!(strip_newline("pw\n\n".into()), "pw\n");
        assert_eq!(strip_newline("pw".into()), "pw");
    }
}
