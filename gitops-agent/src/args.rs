//! The command line every agent shares: [`AgentArgs`], a clap `Args` struct
//! a tool flattens into its own CLI, and [`parse`], which keeps the exit
//! codes the agent promises (clap's own 2 would mean "changes pending").
//!
//! Every flag can also come from an environment variable `GITOPS_<FLAG>`
//! (`--drift-interval` from `GITOPS_DRIFT_INTERVAL`); a repeatable flag
//! (`--allow`, `--deny`, `--notify`, `--verify-pgp-keys`) takes a
//! `;`-separated list there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, ValueEnum};
use gitops_core::{DriftPolicy, SyncWindow};
use gitops_git::{ReferencePolicy, VerifyMode};

/// Separates the values of a repeatable flag given in one environment
/// variable. Not `:` (URLs and `+05:30` offsets hold colons) and not `,`
/// (cron lists like `MON,FRI` do).
pub const LIST_SEPARATOR: char = ';';

/// The flags every gitops agent shares. Flatten it into your own CLI:
///
/// ```
/// use clap::Parser;
///
/// /// My tool's agent.
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     agent: gitops_agent::AgentArgs,
///     /// Where my target lives.
///     #[arg(long, env = "MY_TARGET")]
///     target: String,
/// }
///
/// let cli = Cli::try_parse_from(["my-agent", "--repo", "https://git.example/app.git", "--target", "x"])?;
/// assert_eq!(cli.agent.source.repo, "https://git.example/app.git");
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Clone, Args)]
#[non_exhaustive]
pub struct AgentArgs {
    /// Where the desired state comes from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Credentials for the Git remote (never on the command line).
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// How the engine reconciles.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// One-shot runs (CI) instead of a long-lived agent.
    #[command(flatten)]
    pub mode: ModeArgs,
    /// The HTTP service: status, metrics, webhooks.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Outgoing notifications.
    #[command(flatten)]
    pub notify: NotifyArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Many applications from a config file or a config repository.
    #[command(flatten)]
    pub apps: AppsArgs,
    /// Replica mode: the applications shared with other agents on etcd
    /// (feature `etcd`).
    #[cfg(feature = "etcd")]
    #[command(flatten)]
    pub replica: crate::replica::ReplicaArgs,
}

/// The Git source: repository, release selection, path, render, signatures.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Source")]
#[non_exhaustive]
pub struct SourceArgs {
    /// The repository: a path, `file://`, `https://`, `ssh://`, `git://` or `host:path`.
    /// A password in the URL works but is visible to every local user
    /// (`ps`): use --git-credentials-file or GITOPS_GIT_TOKEN instead.
    /// Not needed with --config or --config-repo.
    #[arg(long, env = "GITOPS_REPO", value_name = "URL",
          required_unless_present_any = ["config", "config_repo"],
          default_value = "", hide_default_value = true)]
    pub repo: String,
    /// Follow the head of this branch (`main` by default).
    #[arg(long, env = "GITOPS_BRANCH", group = "release", value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Deploy exactly this tag.
    #[arg(long, env = "GITOPS_TAG", group = "release", value_name = "TAG")]
    pub tag: Option<String>,
    /// Deploy the highest tag matching this semver range (pre-releases only when asked for).
    #[arg(long, env = "GITOPS_SEMVER", group = "release", value_name = "RANGE")]
    pub semver: Option<String>,
    /// Deploy exactly this commit.
    #[arg(long, env = "GITOPS_COMMIT", group = "release", value_name = "SHA")]
    pub commit: Option<String>,
    /// Only this directory of the repository.
    #[arg(long, env = "GITOPS_PATH", value_name = "SUBDIR")]
    pub path: Option<String>,
    /// How files become resources: each file as it is, or Kubernetes-style manifests.
    #[arg(long, env = "GITOPS_RENDER", value_enum, default_value_t = RenderKind::Files)]
    pub render: RenderKind,
    /// Deploy only commits signed by a key in this allowed-signers file (ssh-keygen format).
    #[arg(long, env = "GITOPS_VERIFY_SIGNERS", value_name = "FILE")]
    pub verify_signers: Option<PathBuf>,
    /// Deploy only commits signed by one of the armored OpenPGP public keys
    /// in this file (`gpg --armor --export KEYID`; repeatable). With
    /// --verify-signers, a signature by a key of either passes.
    #[arg(long, env = "GITOPS_VERIFY_PGP_KEYS", value_name = "FILE",
          action = ArgAction::Append, value_delimiter = LIST_SEPARATOR)]
    pub verify_pgp_keys: Vec<PathBuf>,
    /// What must be signed: the commit (`head`, the default), the annotated
    /// release tag (`tag`, with --tag or --semver), or both (`tag-and-head`).
    #[arg(long, env = "GITOPS_VERIFY_MODE", value_enum)]
    pub verify_mode: Option<VerifyModeArg>,
    /// Decrypt `NAME.age` files with the identities in this file (age-keygen
    /// output or an unencrypted SSH ed25519 private key; repeatable): in
    /// files mode they deploy as `NAME` with mode 0600, in manifests mode
    /// `NAME.yaml.age` is decrypted then parsed. Their resources are
    /// sensitive: their values are never shown, logged or stored.
    #[arg(long, env = "GITOPS_AGE_IDENTITY", value_name = "FILE",
          action = ArgAction::Append, value_delimiter = LIST_SEPARATOR)]
    pub age_identity: Vec<PathBuf>,
}

impl SourceArgs {
    /// The release selection the flags ask for (`--branch main` by default).
    pub fn policy(&self) -> ReferencePolicy {
        if let Some(tag) = &self.tag {
            ReferencePolicy::tag(tag.clone())
        } else if let Some(range) = &self.semver {
            ReferencePolicy::semver(range.clone())
        } else if let Some(commit) = &self.commit {
            ReferencePolicy::commit(commit.clone())
        } else {
            ReferencePolicy::branch(self.branch.clone().unwrap_or_else(|| "main".into()))
        }
    }
}

/// `--verify-mode`: which signature a release needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum VerifyModeArg {
    /// The commit's signature.
    Head,
    /// The annotated tag's signature (the release is selected by tag).
    Tag,
    /// Both the tag's and the commit's.
    TagAndHead,
}

impl From<VerifyModeArg> for VerifyMode {
    fn from(arg: VerifyModeArg) -> Self {
        match arg {
            VerifyModeArg::Head => VerifyMode::Head,
            VerifyModeArg::Tag => VerifyMode::Tag,
            VerifyModeArg::TagAndHead => VerifyMode::TagAndHead,
        }
    }
}

/// How files become resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum RenderKind {
    /// Every file is one resource, its path the name (`FilesRender`).
    Files,
    /// YAML, JSON and TOML manifests with kind, metadata and spec (`ManifestRender`).
    Manifests,
}

/// Credentials for the Git remote. Besides these flags the agent reads
/// `GITOPS_GIT_USERNAME`, `GITOPS_GIT_PASSWORD` and `GITOPS_GIT_TOKEN` from
/// its environment; there are no flags for them, so they never show in `ps`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Git credentials")]
#[non_exhaustive]
pub struct CredentialArgs {
    /// A file with the HTTP(S) credentials: `username=...` and `password=...`
    /// (or `token=...`) lines, or one `https://user:token@host` line as git's
    /// credential store writes it.
    #[arg(long, env = "GITOPS_GIT_CREDENTIALS_FILE", value_name = "FILE")]
    pub git_credentials_file: Option<PathBuf>,
    /// The private key for `ssh://` and `host:path` remotes.
    #[arg(long, env = "GITOPS_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for an `https://` remote, besides the system's.
    #[arg(long, env = "GITOPS_GIT_CA_FILE", value_name = "FILE")]
    pub git_ca_file: Option<PathBuf>,
    /// Send credentials over plain `http://` (anyone on the path can read them; tests only).
    #[arg(long, env = "GITOPS_ALLOW_INSECURE_HTTP_CREDENTIALS")]
    pub allow_insecure_http_credentials: bool,
}

/// How the engine reconciles: state, intervals, prune, drift, write-back, windows.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Engine")]
#[non_exhaustive]
pub struct EngineArgs {
    /// Where history, audit and the Git cache live (the default is the
    /// agent's: the reference agent uses `<target-dir>/../.gitops-state`).
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How often to poll Git (`30s`, `5m`, `1h`, `500ms`; a webhook polls at once).
    #[arg(long, env = "GITOPS_INTERVAL", value_parser = duration, default_value = "30s")]
    pub interval: Duration,
    /// How often to check the target for drift, even when Git is quiet.
    #[arg(long, env = "GITOPS_DRIFT_INTERVAL", value_parser = duration, default_value = "60s")]
    pub drift_interval: Duration,
    /// Delete what a commit removes (only what this agent applied); the default.
    #[arg(long, env = "GITOPS_PRUNE", overrides_with = "no_prune")]
    pub prune: bool,
    /// Never delete anything.
    #[arg(long, env = "GITOPS_NO_PRUNE", overrides_with = "prune")]
    pub no_prune: bool,
    /// What to do with drift, unless a manifest says (`gitops.rs/drift`); `revert` by default.
    #[arg(long, env = "GITOPS_DRIFT", value_enum)]
    pub drift: Option<DriftArg>,
    /// Commit write-back drift to this branch for review instead of the tracked one.
    #[arg(long, env = "GITOPS_WRITEBACK_BRANCH", value_name = "BRANCH")]
    pub writeback_branch: Option<String>,
    /// Sign write-back commits with this SSH key.
    #[arg(long, env = "GITOPS_WRITEBACK_KEY", value_name = "FILE")]
    pub writeback_key: Option<PathBuf>,
    /// Write back drift of a sensitive resource (from an `.age` file)
    /// encrypted to this recipient (`age1…` or `ssh-ed25519 …`;
    /// repeatable). Without one, such drift is reverted, never written
    /// back in plain text.
    #[arg(long, env = "GITOPS_WRITEBACK_AGE_RECIPIENT", value_name = "RECIPIENT",
          action = ArgAction::Append, value_delimiter = LIST_SEPARATOR)]
    pub writeback_age_recipient: Vec<String>,
    /// Let this revision (a full commit id) through the deletion limit: a
    /// revision that would delete more than 10 resources and more than half
    /// of those managed waits for a confirmation (this flag, or an
    /// authenticated `POST /confirm`).
    #[arg(long, env = "GITOPS_CONFIRM", value_name = "REVISION")]
    pub confirm: Option<String>,
    /// Sync only inside this window: `NAME SCHEDULE DURATION [ZONE] [manual]`,
    /// e.g. "office 0 9 * * MON-FRI 8h Europe/Berlin" (repeatable).
    #[arg(long, env = "GITOPS_ALLOW", value_name = "WINDOW", value_parser = allow_window,
          action = ArgAction::Append, value_delimiter = LIST_SEPARATOR)]
    pub allow: Vec<SyncWindow>,
    /// Never sync inside this window (same form; `manual` lets --once through), e.g.
    /// "freeze 0 18 * * FRI 62h Europe/Berlin manual" (repeatable).
    #[arg(long, env = "GITOPS_DENY", value_name = "WINDOW", value_parser = deny_window,
          action = ArgAction::Append, value_delimiter = LIST_SEPARATOR)]
    pub deny: Vec<SyncWindow>,
    /// Read the content of every managed file on every check instead of
    /// trusting the target's stat cache (by default a file whose stat is
    /// unchanged is read only now and then, at the latest every 100th check).
    #[arg(long, env = "GITOPS_VERIFY_CONTENT")]
    pub verify_content: bool,
}

impl EngineArgs {
    /// Whether prune is on (`--no-prune` turns it off).
    pub fn prune(&self) -> bool {
        !self.no_prune
    }
}

/// `--drift`: the default drift policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum DriftArg {
    /// Put the target back to what Git says.
    Revert,
    /// Only report it.
    Ignore,
    /// Commit what the target holds back to Git.
    Writeback,
}

impl From<DriftArg> for DriftPolicy {
    fn from(arg: DriftArg) -> Self {
        match arg {
            DriftArg::Revert => DriftPolicy::Revert,
            DriftArg::Ignore => DriftPolicy::Ignore,
            DriftArg::Writeback => DriftPolicy::Writeback,
        }
    }
}

/// One-shot runs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "One-shot runs (CI)")]
#[non_exhaustive]
pub struct ModeArgs {
    /// Sync once and exit: 0 converged, 1 otherwise.
    #[arg(long, env = "GITOPS_ONCE", conflicts_with = "plan")]
    pub once: bool,
    /// Print what a sync would change and exit: 0 nothing, 2 changes pending, 1 error.
    #[arg(long, env = "GITOPS_PLAN")]
    pub plan: bool,
    /// Print the report or plan as JSON on stdout (logs stay on stderr).
    #[arg(long, env = "GITOPS_JSON")]
    pub json: bool,
    /// With --plan: show long values whole, not their first lines, size and digest.
    #[arg(long, env = "GITOPS_FULL", requires = "plan")]
    pub full: bool,
}

/// The HTTP service.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP service")]
#[non_exhaustive]
pub struct HttpArgs {
    /// Serve status, metrics and webhooks here (e.g. 127.0.0.1:8080). A
    /// non-loopback address needs --webhook-secret-file. Requests must name
    /// this address (or, on 0.0.0.0, any IP with this port) or
    /// --public-url's host: a host name only through --public-url.
    #[arg(long, env = "GITOPS_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The URL the agent is reached at through a proxy (e.g.
    /// `https://deploy.example.com`); its host is accepted in `Host` headers.
    #[arg(long, env = "GITOPS_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The webhook secret (GitHub, GitLab, Standard Webhooks `whsec_...`), one
    /// trailing newline stripped.
    #[arg(long, env = "GITOPS_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Show drifted values in /status (by default only resource and field paths).
    #[arg(long, env = "GITOPS_EXPOSE_VALUES")]
    pub expose_values: bool,
}

/// Outgoing notifications.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Notifications")]
#[non_exhaustive]
pub struct NotifyArgs {
    /// POST CloudEvents about syncs, drift and rollbacks to this URL (repeatable).
    #[arg(long = "notify", env = "GITOPS_NOTIFY", value_name = "URL",
          action = ArgAction::Append, value_delimiter = LIST_SEPARATOR)]
    pub urls: Vec<String>,
    /// Sign notifications (Standard Webhooks) with the secret in this file.
    #[arg(long, env = "GITOPS_NOTIFY_SECRET_FILE", value_name = "FILE")]
    pub notify_secret_file: Option<PathBuf>,
}

/// Many applications in one agent: a config file (`--config`) or a config
/// repository (`--config-repo`, "app of apps"). The flags of the other
/// groups that are about one application (`--interval`, `--drift`,
/// `--render`, ...) are then every application's defaults, and
/// `--repo`/`--target-dir` are not used.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Many applications")]
#[non_exhaustive]
pub struct AppsArgs {
    /// Run every application of this TOML file (docs/agent.md, "Many
    /// applications"); SIGHUP reads it again. With --once or --plan, every
    /// application once, dependencies first.
    #[arg(long, env = "GITOPS_CONFIG", value_name = "FILE",
          conflicts_with_all = ["repo", "config_repo", "confirm"])]
    pub config: Option<PathBuf>,
    /// Read the application list from this repository instead, polled like
    /// any source ("app of apps"); an invalid list is refused whole.
    #[arg(long, env = "GITOPS_CONFIG_REPO", value_name = "URL",
          requires = "config_path", conflicts_with_all = ["repo", "once", "plan", "confirm"])]
    pub config_repo: Option<String>,
    /// The list's path in --config-repo (e.g. `apps.toml`).
    #[arg(
        long,
        env = "GITOPS_CONFIG_PATH",
        value_name = "PATH",
        requires = "config_repo",
        conflicts_with = "repo"
    )]
    pub config_path: Option<String>,
    /// The branch of --config-repo (`main` by default).
    #[arg(
        long,
        env = "GITOPS_CONFIG_BRANCH",
        value_name = "BRANCH",
        requires = "config_repo",
        conflicts_with = "repo"
    )]
    pub config_branch: Option<String>,
    /// Delete what an application removed from the list had deployed (by
    /// default its resources stay).
    #[arg(long, env = "GITOPS_PRUNE_REMOVED")]
    pub prune_removed: bool,
}

impl AppsArgs {
    /// Whether the agent runs many applications (`--config` or `--config-repo`).
    pub fn many(&self) -> bool {
        self.config.is_some() || self.config_repo.is_some()
    }
}

/// Logging.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
#[non_exhaustive]
pub struct LogArgs {
    /// `text` for people, `json` (one object per line) for log shippers. `RUST_LOG` sets the level.
    #[arg(long, env = "GITOPS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses a duration: `500ms`, `30s`, `5m`, `2h` (a bare number is
/// seconds); longer than zero and at most a year.
pub fn duration(value: &str) -> Result<Duration, String> {
    let digits = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?}: expected a duration like 30s, 5m, 500ms"))?;
    let too_long = || format!("{value:?}: longer than a year");
    let seconds = |per: u64| n.checked_mul(per).ok_or_else(too_long);
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(seconds(60)?),
        "h" => Duration::from_secs(seconds(3600)?),
        _ => {
            return Err(format!(
                "{value:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    if duration.is_zero() {
        return Err(format!("{value:?}: must be longer than zero"));
    }
    if duration > Duration::from_secs(366 * 86_400) {
        return Err(too_long());
    }
    Ok(duration)
}

fn allow_window(spec: &str) -> Result<SyncWindow, String> {
    window(true, spec)
}

fn deny_window(spec: &str) -> Result<SyncWindow, String> {
    window(false, spec)
}

/// `NAME SCHEDULE DURATION [ZONE] [manual]`: a 5-field cron schedule (or
/// `@daily`…), a duration, then optionally an IANA zone or a UTC offset, and
/// `manual` to let one-shot runs through.
pub fn window(allow: bool, spec: &str) -> Result<SyncWindow, String> {
    let tokens: Vec<&str> = spec.split_whitespace().collect();
    let (name, rest) = tokens
        .split_first()
        .ok_or("expected NAME SCHEDULE DURATION [ZONE] [manual]")?;
    let fields = if rest.first().is_some_and(|t| t.starts_with('@')) {
        1
    } else {
        5
    };
    if rest.len() < fields + 1 {
        return Err(format!(
            "expected NAME, a {fields}-field schedule and a DURATION, then optionally a ZONE and `manual`"
        ));
    }
    let schedule = rest[..fields].join(" ");
    let length = duration(rest[fields])?;
    let window = if allow {
        SyncWindow::allow(*name, &schedule, length)
    } else {
        SyncWindow::deny(*name, &schedule, length)
    };
    let mut window = window.map_err(|e| e.to_string())?;
    for extra in &rest[fields + 1..] {
        window = match *extra {
            "manual" => Ok(window.manual_sync(true)),
            offset if offset == "Z" || offset.starts_with(['+', '-']) => window.utc_offset(offset),
            zone => window.time_zone(zone),
        }
        .map_err(|e| e.to_string())?;
    }
    Ok(window)
}

/// Parses the command line of `T` (usually a struct that flattens
/// [`AgentArgs`]) and keeps the agent's exit codes: `--help` and `--version`
/// print and exit 0; a usage error prints one `error:` line and a hint and
/// exits 1 (clap's own 2 means "changes pending" for `--plan`).
pub fn parse<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(error) => exit_on(error),
    }
}

fn exit_on(error: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = error.print();
        std::process::exit(0);
    }
    eprintln!("{}", usage_error(&error.to_string()));
    std::process::exit(1);
}

/// Clap's message cut to its `error:` line, plus one hint.
fn usage_error(rendered: &str) -> String {
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("error: invalid arguments");
    let first = if first.starts_with("error:") {
        first.to_owned()
    } else {
        format!("error: {first}")
    };
    let hint = rendered
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("tip:"))
        .map(|tip| format!("\n  {tip}"))
        .unwrap_or_default();
    format!("{first}{hint}\n  hint: see --help")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(duration("0s").is_err());
        assert!(duration("5d").unwrap_err().contains("unknown unit"));
        assert!(
            duration("9999999h")
                .unwrap_err()
                .contains("longer than a year")
        );
    }

    #[test]
    fn defaults_keep_the_old_meanings() {
        let cli = cli(&["--repo", "r"]).expect("parse");
        let a = cli.agent;
        assert_eq!(a.source.policy(), ReferencePolicy::branch("main"));
        assert_eq!(a.source.render, RenderKind::Files);
        assert_eq!(a.engine.interval, Duration::from_secs(30));
        assert_eq!(a.engine.drift_interval, Duration::from_secs(60));
        assert!(a.engine.prune());
        assert_eq!(a.engine.drift, None);
        assert_eq!(a.log.log_format, LogFormat::Text);
    }

    #[test]
    fn one_release_selection_and_prune_switches() {
        assert!(cli(&["--repo", "r", "--tag", "v1", "--branch", "b"]).is_err());
        let a = cli(&["--repo", "r", "--semver", "^1"])
            .expect("parse")
            .agent;
        assert_eq!(a.source.policy(), ReferencePolicy::semver("^1"));
        let a = cli(&["--repo", "r", "--no-prune"]).expect("parse").agent;
        assert!(!a.engine.prune());
        let a = cli(&["--repo", "r", "--no-prune", "--prune"])
            .expect("parse")
            .agent;
        assert!(a.engine.prune(), "the last one wins");
        assert!(cli(&["--repo", "r", "--once", "--plan"]).is_err());
    }

    #[test]
    fn windows_parse_with_zones_offsets_and_manual() {
        let a = cli(&[
            "--repo",
            "r",
            "--deny",
            "freeze 0 18 * * FRI 62h Europe/Berlin manual",
            "--allow",
            "office @daily 8h +05:30",
        ])
        .expect("parse")
        .agent;
        assert_eq!(a.engine.deny.len(), 1);
        assert_eq!(a.engine.deny[0].name(), "freeze");
        assert_eq!(a.engine.allow[0].name(), "office");
        let e = cli(&["--repo", "r", "--deny", "x 0 18 * * FRI"]).unwrap_err();
        assert!(e.to_string().contains("--deny"), "{e}");
    }

    #[test]
    fn signature_flags_combine() {
        let a = cli(&["--repo", "r"]).expect("parse").agent;
        assert!(a.source.verify_signers.is_none() && a.source.verify_pgp_keys.is_empty());
        assert_eq!(a.source.verify_mode, None);
        let a = cli(&[
            "--repo",
            "r",
            "--verify-signers",
            "allowed",
            "--verify-pgp-keys",
            "a.asc",
            "--verify-pgp-keys",
            "b.asc",
            "--verify-mode",
            "tag-and-head",
        ])
        .expect("both key sets and a mode")
        .agent;
        assert_eq!(
            a.source.verify_pgp_keys,
            [PathBuf::from("a.asc"), PathBuf::from("b.asc")]
        );
        assert_eq!(a.source.verify_mode, Some(VerifyModeArg::TagAndHead));
        let a = cli(&[
            "--repo",
            "r",
            "--verify-pgp-keys",
            "a.asc",
            "--verify-mode",
            "tag",
        ])
        .expect("OpenPGP keys alone")
        .agent;
        assert_eq!(VerifyMode::from(VerifyModeArg::Tag), VerifyMode::Tag);
        assert!(a.source.verify_signers.is_none());
        assert!(
            cli(&[
                "--repo",
                "r",
                "--verify-pgp-keys",
                "a",
                "--verify-mode",
                "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn a_config_replaces_repo_and_conflicts_with_it_and_one_shot_runs() {
        assert!(cli(&[]).is_err(), "--repo is required alone");
        let a = cli(&["--config", "apps.toml"]).expect("parse").agent;
        assert!(a.apps.many());
        assert_eq!(a.source.repo, "");
        assert!(cli(&["--config", "a.toml", "--repo", "r"]).is_err());
        assert!(cli(&["--config", "a.toml", "--once"]).is_ok());
        assert!(cli(&["--config", "a.toml", "--plan", "--json"]).is_ok());
        assert!(cli(&["--config", "a.toml", "--confirm", "abc"]).is_err());
        let a = cli(&[
            "--config-repo",
            "https://git.example/fleet.git",
            "--config-path",
            "apps.toml",
        ])
        .expect("parse")
        .agent;
        assert!(a.apps.many());
        assert!(cli(&["--config-repo", "https://git.example/fleet.git"]).is_err());
        assert!(cli(&["--repo", "r", "--config-path", "x"]).is_err());
        assert!(!cli(&["--repo", "r"]).expect("parse").agent.apps.many());
    }

    #[test]
    fn usage_errors_are_one_error_line_and_a_hint() {
        let e = cli(&["--repo", "r", "--interval", "5d"]).unwrap_err();
        let text = usage_error(&e.to_string());
        assert!(text.starts_with("error: "), "{text}");
        assert!(text.contains("--interval"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("error")).count(), 1);
        assert!(text.ends_with("hint: see --help"), "{text}");
    }
}
