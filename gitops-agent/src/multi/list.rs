//! Where the application list comes from: a file (`--config`, read again
//! on SIGHUP) or a file in a Git repository (`--config-repo`,
//! `--config-path`: "app of apps", polled like any source). A list that
//! cannot be read, parsed or built is refused whole: the list in force
//! stays, and the error is logged and shown in `GET /status`. The last
//! good list from Git is kept in the state directory, so a restart while
//! the repository is unreachable (or its newest list invalid) runs it.

use std::path::{Path, PathBuf};

use gitops_core::{Cancel, Source as _};
use gitops_git::{GitSource, ReferencePolicy, SharedRepository};

use crate::args::AgentArgs;
use crate::config::{self, AppsConfig, Changes, ConfigError, Defaults};
use crate::credentials;
use crate::http::{AppSet, ConfigState};
use crate::run::AgentError;

/// What a list is applied to: the applications of this process
/// ([`Supervisor`](super::supervisor::Supervisor)) or, with `--etcd`, the
/// replica sharing them.
pub(crate) trait Apply {
    /// The shared repository of `url` (the config repository joins them).
    fn repo(&mut self, url: &str) -> Result<SharedRepository, gitops_git::GitError>;
    /// Applies `next`, or refuses it whole.
    async fn apply(&mut self, next: AppsConfig) -> Result<Changes, ConfigError>;
}

/// A list in Git.
pub(crate) struct GitList {
    source: GitSource,
    shared: SharedRepository,
    /// The file's name within the source's path.
    file: String,
    /// Its path in the repository (for messages).
    path: String,
    /// The commit last looked at (applied or refused).
    seen: Option<String>,
    /// Where the last good list is kept.
    saved: PathBuf,
}

/// The application list's origin.
pub(crate) enum List {
    /// `--config FILE`.
    File(PathBuf),
    /// `--config-repo URL --config-path PATH`.
    Git(Box<GitList>),
}

/// Logs why a list was refused: as an error the first time, then (the
/// same reason on every poll of an unreachable repository) at debug level.
fn refused(error: &str, last: Option<&str>) {
    if last == Some(error) {
        tracing::debug!(%error, "application list refused again; the one in force stays");
    } else {
        tracing::error!(%error, "application list refused; the one in force stays");
    }
}

/// What a look at the list found.
enum Looked {
    /// The same list as before.
    Same,
    /// A list to apply (from the commit, for a list in Git).
    New(AppsConfig, Option<String>, Option<String>),
    /// Why there is no list to apply (a commit whose list is invalid, an
    /// unreachable repository); the message names the commit.
    Refused(String),
}

impl List {
    /// The origin `args` name; a list in Git joins the shared repository
    /// of its URL.
    pub(crate) fn new(
        args: &AgentArgs,
        supervisor: &mut impl Apply,
        state_dir: &Path,
    ) -> Result<Self, AgentError> {
        let apps = &args.apps;
        if let Some(path) = &apps.config {
            return Ok(List::File(path.clone()));
        }
        let (Some(url), Some(path)) = (&apps.config_repo, &apps.config_path) else {
            return Err(AgentError::ManyApps);
        };
        let branch = apps.config_branch.clone().unwrap_or_else(|| "main".into());
        let (dir, file) = match path.rsplit_once('/') {
            Some((dir, file)) => (Some(dir), file),
            None => (None, path.as_str()),
        };
        let shared = supervisor.repo(url).map_err(AgentError::Source)?;
        let mut builder =
            GitSource::builder(url.clone(), ReferencePolicy::branch(branch)).shared(&shared);
        if let Some(dir) = dir {
            builder = builder.path(dir.to_owned());
        }
        let builder = credentials::configure(builder, &args.credentials, url)?;
        let source = builder.build().map_err(AgentError::Source)?;
        Ok(List::Git(Box::new(GitList {
            source,
            shared,
            file: file.to_owned(),
            path: path.clone(),
            seen: None,
            saved: state_dir.join("config-repo").join("last-good.toml"),
        })))
    }

    /// How the list is named in `GET /status`.
    fn label(&self, args: &AgentArgs) -> String {
        match self {
            List::File(path) => path.display().to_string(),
            List::Git(git) => format!(
                "{} ({}) {}",
                git.source.location(),
                args.apps.config_branch.as_deref().unwrap_or("main"),
                args.apps.config_path.as_deref().unwrap_or_default()
            ),
        }
    }

    /// Whether the list is polled (a list in Git).
    pub(crate) fn polled(&self) -> bool {
        matches!(self, List::Git(_))
    }

    /// At start: a list file must be good (the error ends the agent); a
    /// list in Git is applied when good, else the last good one kept in
    /// the state directory, else none yet (it is polled again).
    pub(crate) async fn start(
        &mut self,
        args: &AgentArgs,
        defaults: &Defaults,
        supervisor: &mut impl Apply,
        apps: &AppSet,
    ) -> Result<(), AgentError> {
        if let List::File(path) = self {
            let config = config::load(path, defaults)?;
            supervisor.apply(config).await?;
            apps.set_loaded();
            apps.set_config(state(self.label(args), None, None));
            return Ok(());
        }
        if self.refresh(args, defaults, supervisor, apps).await {
            return Ok(());
        }
        if let List::Git(git) = self
            && let Some(config) = git.load_saved(defaults)
        {
            tracing::warn!("running the last good application list kept in the state directory");
            match supervisor.apply(config).await {
                Ok(_) => apps.set_loaded(),
                Err(e) => {
                    tracing::error!(error = %e, "the kept application list cannot be applied")
                }
            }
        }
        Ok(())
    }

    /// Looks at the list again (a poll, or SIGHUP) and applies it if it
    /// changed and is good; otherwise logs why and keeps the list in force.
    /// Whether a new list was applied.
    pub(crate) async fn refresh(
        &mut self,
        args: &AgentArgs,
        defaults: &Defaults,
        supervisor: &mut impl Apply,
        apps: &AppSet,
    ) -> bool {
        let label = self.label(args);
        let looked = match self {
            List::File(path) => match config::load(path, defaults) {
                Ok(config) => Looked::New(config, None, None),
                Err(e) => Looked::Refused(e.to_string()),
            },
            List::Git(git) => git.look(defaults).await,
        };
        let (config, revision, text) = match looked {
            Looked::Same => return false,
            Looked::New(config, revision, text) => (config, revision, text),
            Looked::Refused(error) => {
                let previous = apps.config().and_then(|c| c.error);
                refused(&error, previous.as_deref());
                let in_force = apps.config().and_then(|c| c.revision);
                apps.set_config(state(label, in_force, Some(error)));
                return false;
            }
        };
        match supervisor.apply(config).await {
            Ok(_) => {
                apps.set_loaded();
                apps.set_config(state(label, revision, None));
                if let (List::Git(git), Some(text)) = (self, text) {
                    git.save(&text);
                }
                true
            }
            Err(e) => {
                let error = e.to_string();
                let previous = apps.config().and_then(|c| c.error);
                refused(&error, previous.as_deref());
                let in_force = apps.config().and_then(|c| c.revision);
                apps.set_config(state(label, in_force, Some(error)));
                false
            }
        }
    }

    /// The next poll of a list in Git fetches anew (SIGHUP, a webhook).
    pub(crate) fn expire(&self) {
        if let List::Git(git) = self {
            git.shared.expire();
        }
    }
}

fn state(source: String, revision: Option<String>, error: Option<String>) -> ConfigState {
    ConfigState {
        source,
        revision,
        error,
        checked_at: Some(jiff::Timestamp::now().to_string()),
    }
}

impl GitList {
    /// Polls; reads and checks the list of a commit not seen before.
    async fn look(&mut self, defaults: &Defaults) -> Looked {
        let revision = match self.source.poll().await {
            Ok(revision) => revision,
            Err(e) => {
                let error = format!("{}: {e}", self.source.location());
                return Looked::Refused(error);
            }
        };
        if self.seen.as_deref() == Some(revision.id.as_str()) {
            return Looked::Same;
        }
        self.seen = Some(revision.id.clone());
        let short: String = revision.id.chars().take(12).collect();
        let origin = format!("{}@{short}", self.path);
        let snapshot = match self.source.snapshot(&revision, &Cancel::new()).await {
            Ok(snapshot) => snapshot,
            Err(e) => return Looked::Refused(format!("{origin}: {e}")),
        };
        let Some(bytes) = snapshot.get(&self.file) else {
            return Looked::Refused(format!("{origin}: no such file"));
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => return Looked::Refused(format!("{origin}: not UTF-8")),
        };
        match parse(&text, &origin, defaults) {
            Ok(config) => Looked::New(config, Some(revision.id), Some(text)),
            Err(e) => Looked::Refused(e.to_string()),
        }
    }

    /// Keeps `text` as the last good list (best effort).
    fn save(&self, text: &str) {
        let write = || -> std::io::Result<()> {
            let dir = self.saved.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let partial = self.saved.with_extension("toml.partial");
            std::fs::write(&partial, text)?;
            std::fs::File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, &self.saved)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %self.saved.display(), error = %e, "cannot keep the last good application list");
        }
    }

    /// The last good list kept, if it is there and still good.
    fn load_saved(&self, defaults: &Defaults) -> Option<AppsConfig> {
        let text = std::fs::read_to_string(&self.saved).ok()?;
        let origin = self.saved.display().to_string();
        parse(&text, &origin, defaults)
            .inspect_err(|e| tracing::warn!(error = %e, "the kept application list is unusable"))
            .ok()
    }
}

/// A list from Git: relative paths in it are taken from the agent's
/// working directory.
fn parse(text: &str, origin: &str, defaults: &Defaults) -> Result<AppsConfig, ConfigError> {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    config::parse(text, origin, &base, defaults)
}
