//! [`Agent`]: from the flags to a running engine with its HTTP service,
//! metrics, notifications and signals; and the exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use gitops_core::decrypt::{Decrypt, Identities, Recipients};
use gitops_core::engine::Event;
use gitops_core::manifest::DRIFT_ANNOTATION;
use gitops_core::secret::DigestKey;
use gitops_core::{
    DesiredState, DriftPolicy, Engine, EngineBuilder, EngineConfig, EngineError, FileEdit,
    FilesRender, ManifestRender, Observed, RedbStore, Render, RenderCache, RenderError,
    RenderParts, Resource, Snapshot, SnapshotFile, StoreError, SyncWindows, Target,
};
use gitops_git::{GitError, GitSource, GitWriteback};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{AgentArgs, RenderKind};
use crate::credentials::{self, CredentialError};
use crate::http::{AppContext, HttpError, HttpOptions, Server};
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifyError, NotifyOptions};

/// How long queued notifications may take to go out at shutdown.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// Why the agent cannot start or run. Names the flag or file it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No `--state-dir`, and the agent has no default for it.
    #[error("--state-dir is required")]
    NoStateDir,
    /// `--verify-signers` cannot be read or parsed.
    #[error("--verify-signers {path}: {message}")]
    Signers {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A `--verify-pgp-keys` file cannot be read or holds no usable public key.
    #[error("--verify-pgp-keys {path}: {message}")]
    PgpKeys {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never the key material).
        message: String,
    },
    /// `--verify-mode` does not fit the release selection.
    #[error("--verify-mode: {message}")]
    VerifyMode {
        /// Why.
        message: String,
    },
    /// The Git source cannot be set up.
    #[error("--repo: {0}")]
    Source(#[source] GitError),
    /// Write-back was asked for but cannot be set up.
    #[error("--drift writeback: {0}")]
    Writeback(#[source] GitError),
    /// The credentials cannot be read.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The state store cannot be opened.
    #[error("--state-dir {path}: {source}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The HTTP service cannot start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The notification settings are unusable.
    #[error(transparent)]
    Notify(#[from] NotifyError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The tool's target cannot be opened.
    #[error("{what}: {source}")]
    Target {
        /// What the tool was opening (the flag and its value).
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A one-shot sync did not run (a sync window or a dependency held it).
    #[error("revision {revision}: {message}")]
    Blocked {
        /// The revision that was not deployed.
        revision: String,
        /// Why.
        message: String,
    },
    /// The application list (`--config`, `--config-repo`) is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `--plan` with `--config`: these applications' plans could not be
    /// made (each error is printed under the application's header).
    #[error("no plan for {}: see above", .apps.join(", "))]
    AppsFailed {
        /// The applications, in the order they ran.
        apps: Vec<String>,
    },
    /// `--config` or `--config-repo` given to a single-application agent
    /// (run [`Apps`](crate::Apps) instead).
    #[error("--config and --config-repo need an agent of many applications (gitops_agent::Apps)")]
    ManyApps,
    /// An `--age-identity` file or a `--writeback-age-recipient` cannot be
    /// used (the error names the file, never the key).
    #[error("{0}")]
    Age(#[from] gitops_core::decrypt::AgeError),
    /// The digest key in the state directory cannot be read or created.
    #[error(transparent)]
    DigestKey(#[from] gitops_core::secret::DigestKeyError),
    /// Replica mode (`--etcd`) cannot start.
    #[cfg(feature = "etcd")]
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    /// Signals cannot be installed, or the report cannot be printed.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How a run ended; [`exit`] turns it into the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `--once` converged, or `--plan` found nothing to change: exit 0.
    Converged,
    /// `--plan` found changes: exit 2.
    ChangesPending,
    /// `--once` did not converge: exit 1.
    NotConverged,
    /// The long-lived agent stopped on a signal: exit 0.
    Stopped,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Converged | Outcome::Stopped => ExitCode::SUCCESS,
            Outcome::ChangesPending => ExitCode::from(2),
            Outcome::NotConverged => ExitCode::FAILURE,
        }
    }
}

/// The exit code for a run; an error is printed as one `error:` line.
pub fn exit(result: Result<Outcome, AgentError>) -> ExitCode {
    match result {
        Ok(outcome) => outcome.into(),
        Err(e) => {
            let mut line = e.to_string();
            for cause in std::iter::successors(std::error::Error::source(&e), |c| c.source()) {
                let cause = cause.to_string();
                if !line.contains(&cause) {
                    line = format!("{line}: {cause}");
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

impl AgentArgs {
    /// The log level when `RUST_LOG` is not set: `error` for one-shot runs
    /// (their result is on stdout), `info` for the long-lived agent.
    pub fn default_log_level(&self) -> &'static str {
        if self.mode.once || self.mode.plan {
            "error"
        } else {
            "info"
        }
    }
}

/// One application's agent: the flags, read and checked, and what it builds
/// from them. See the [crate docs](crate) for a whole `main`.
#[derive(Debug)]
pub struct Agent {
    name: String,
    args: AgentArgs,
    metrics: Metrics,
    http: Option<HttpOptions>,
    notify: Option<NotifyOptions>,
    age: Option<(Identities, Recipients)>,
}

impl Agent {
    /// Reads and checks what the flags name (secret files, listen address);
    /// `name` is the application (the `app` label, the notifications' subject).
    pub fn new(name: impl Into<String>, args: AgentArgs) -> Result<Self, AgentError> {
        if args.apps.many() {
            return Err(AgentError::ManyApps);
        }
        #[cfg(feature = "etcd")]
        if args.replica.enabled() {
            return Err(crate::replica::ReplicaError::NeedsManyApps.into());
        }
        let http = HttpOptions::from_args(&args)?;
        let notify = NotifyOptions::from_args(&args.notify)?;
        let age = age_keys(&args)?;
        Ok(Self {
            age,
            name: name.into(),
            args,
            metrics: Metrics::new(),
            http,
            notify,
        })
    }

    /// The application's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The flags.
    pub fn args(&self) -> &AgentArgs {
        &self.args
    }

    /// The metrics registry (`GET /metrics`); add a tool's own series to it.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The state directory (`--state-dir`).
    pub fn state_dir(&self) -> Result<&Path, AgentError> {
        self.args
            .engine
            .state_dir
            .as_deref()
            .ok_or(AgentError::NoStateDir)
    }

    /// The Git source the flags describe, with its cache in the state directory.
    pub fn source(&self) -> Result<GitSource, AgentError> {
        let args = &self.args.source;
        if url_has_password(&args.repo) {
            tracing::warn!(
                "the --repo URL carries a password: every local user can read it in the \
                 process list; use --git-credentials-file or GITOPS_GIT_TOKEN"
            );
        }
        let mut source = GitSource::builder(args.repo.clone(), args.policy())
            .cache_dir(self.state_dir()?.join("cache"));
        if let Some(path) = &args.path {
            source = source.path(path.clone());
        }
        if let Some((mode, signers)) = crate::trust::trusted_signers(args)? {
            source = source.verify(mode, signers);
        }
        let source = credentials::configure(source, &self.args.credentials, &args.repo)?;
        source.build().map_err(AgentError::Source)
    }

    /// The render the flags choose, with `--drift` as every resource's
    /// default, decrypting `.age` files with `--age-identity`; in a
    /// long-running agent behind a [`RenderCache`] (a new commit renders
    /// only the files it changed).
    pub fn render(&self) -> Arc<dyn Render> {
        let mut render: Box<dyn Render> = match self.args.source.render {
            RenderKind::Manifests => Box::new(ManifestRender::new()),
            _ => Box::new(FilesRender::new()),
        };
        if let Some(drift) = self.args.engine.drift {
            render = Box::new(DefaultDrift {
                inner: render,
                drift: drift.into(),
            });
        }
        if let Some((identities, recipients)) = &self.age {
            // Outermost but for the cache, so a sensitive resource's policy is final here.
            render = Box::new(
                Decrypt::new(render, identities.clone()).writeback_recipients(recipients.clone()),
            );
        }
        if self.args.mode.once || self.args.mode.plan {
            // One render per process: a cache would only cost memory.
            Arc::from(render)
        } else {
            Arc::new(RenderCache::new(render))
        }
    }

    /// The engine settings the flags give.
    pub fn config(&self) -> EngineConfig {
        let engine = &self.args.engine;
        let windows = engine
            .allow
            .iter()
            .chain(&engine.deny)
            .cloned()
            .fold(SyncWindows::new(), SyncWindows::with);
        EngineConfig::default()
            .interval(engine.interval)
            .drift_interval(engine.drift_interval)
            .prune(engine.prune())
            .windows(windows)
    }

    /// An engine builder with everything but the target's own settings:
    /// the Git source (timed and counted for the metrics), the render, the
    /// redb store in the state directory, write-back, the config and the name.
    pub fn engine(&self, target: Arc<dyn Target>) -> Result<EngineBuilder, AgentError> {
        let source = self.source()?;
        let render = self.render();
        let writeback = self.writeback(&source, &render)?;
        let dir = self.state_dir()?;
        let store = RedbStore::open(dir).map_err(|source| AgentError::Store {
            path: dir.to_owned(),
            source,
        })?;
        let digest_key = DigestKey::load_or_create(&dir.join(DIGEST_KEY_FILE))?;
        let mut builder = Engine::builder()
            .digest_key(digest_key)
            .source(self.metrics.source(&self.name, Arc::new(source)))
            .render(render)
            .target(target)
            .store(Arc::new(store))
            .config(self.config())
            .name(self.name.clone());
        if let Some(writeback) = writeback {
            builder = builder.writeback(Arc::new(writeback));
        }
        Ok(builder)
    }

    /// Write-back needs a branch to commit to: the tracked one or
    /// `--writeback-branch`. Without one, write-back drift is only reported,
    /// unless write-back was asked for explicitly.
    fn writeback(
        &self,
        source: &GitSource,
        render: &Arc<dyn Render>,
    ) -> Result<Option<GitWriteback>, AgentError> {
        let engine = &self.args.engine;
        let mut writeback = GitWriteback::builder(source, render.clone());
        if let Some(branch) = &engine.writeback_branch {
            writeback = writeback.review_branch(branch.clone());
        }
        if let Some(key) = &engine.writeback_key {
            writeback = writeback.signing_key(key.clone());
        }
        let asked = engine.drift.map(DriftPolicy::from) == Some(DriftPolicy::Writeback)
            || engine.writeback_key.is_some();
        match writeback.build() {
            Ok(w) => Ok(Some(w)),
            Err(e) if asked => Err(AgentError::Writeback(e)),
            Err(_) => Ok(None),
        }
    }

    /// Runs `engine` as the flags say: `--plan`, `--once`, or the long-lived
    /// agent with its HTTP service until SIGINT or SIGTERM (a second one
    /// aborts); SIGHUP asks for a reconcile.
    pub async fn run(&self, engine: Engine) -> Result<Outcome, AgentError> {
        if self.args.mode.plan {
            return self.plan(&engine).await;
        }
        if let Some(revision) = &self.args.engine.confirm {
            engine.confirm(revision).await?;
        }
        if self.args.mode.once {
            return self.once(&engine).await;
        }
        self.serve(engine).await
    }

    async fn plan(&self, engine: &Engine) -> Result<Outcome, AgentError> {
        let plan = engine.plan().await?;
        self.print(&plan, &plan.text(self.args.mode.full))?;
        Ok(if plan.has_changes() {
            Outcome::ChangesPending
        } else {
            Outcome::Converged
        })
    }

    async fn once(&self, engine: &Engine) -> Result<Outcome, AgentError> {
        let report = engine.sync_once().await?;
        // A sync that did not run is no success: say why on one error line.
        if let Some(blocked) = &report.blocked {
            return Err(AgentError::Blocked {
                revision: report.revision.to_string(),
                message: blocked.message.clone(),
            });
        }
        self.print(&report, &report)?;
        Ok(if report.converged() {
            Outcome::Converged
        } else {
            Outcome::NotConverged
        })
    }

    fn print(
        &self,
        value: &impl serde::Serialize,
        text: &impl std::fmt::Display,
    ) -> Result<(), AgentError> {
        if self.args.mode.json {
            let json = serde_json::to_string_pretty(value).map_err(|e| AgentError::Io {
                what: "printing the report",
                source: e.into(),
            })?;
            println!("{json}");
        } else {
            println!("{text}");
        }
        Ok(())
    }

    async fn serve(&self, engine: Engine) -> Result<Outcome, AgentError> {
        let io = |what| move |source| AgentError::Io { what, source };
        let mut interrupt = signal(SignalKind::interrupt()).map_err(io("SIGINT"))?;
        let mut terminate = signal(SignalKind::terminate()).map_err(io("SIGTERM"))?;
        let mut hangup = signal(SignalKind::hangup()).map_err(io("SIGHUP"))?;
        let _metrics = self.metrics.watch(&engine);
        let notifier = self
            .notify
            .clone()
            .map(|options| Notifier::start(options, &self.name, &engine, self.metrics.clone()));
        tokio::spawn(narrate(engine.subscribe()));
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http = match &self.http {
            Some(options) => {
                let context =
                    AppContext::new(engine.clone(), self.metrics.clone(), notifier.clone());
                let server = Server::bind(options.clone(), context).await?;
                tracing::info!(addr = %server.local_addr(), "listening");
                Some(tokio::spawn(server.run(async {
                    let _ = http_stopped.await;
                })))
            }
            None => None,
        };
        let handle = engine.handle();
        let run = tokio::spawn(async move { engine.run().await });
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = interrupt.recv() => stop(&handle),
                _ = terminate.recv() => stop(&handle),
                _ = hangup.recv() => handle.reconcile_now(),
            }
        };
        let _ = stop_http.send(());
        if let Some(http) = http
            && let Ok(Err(e)) = http.await
        {
            tracing::warn!(error = %e, "the HTTP service ended with an error");
        }
        if let Some(notifier) = notifier {
            notifier.flush(FLUSH_AT_SHUTDOWN).await;
        }
        match result {
            Ok(Ok(())) => Ok(Outcome::Stopped),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(AgentError::Io {
                what: "the engine task",
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

fn stop(handle: &gitops_core::EngineHandle) {
    tracing::info!("shutting down (again to abort)");
    handle.shutdown();
}

/// Whether a URL carries a password (`scheme://user:password@host`).
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Logs one line per finished sync and per failure, for people and shippers.
pub(crate) async fn narrate(mut events: tokio::sync::broadcast::Receiver<Event>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "log lagged behind the engine's events");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        match event {
            Event::ResourceFailed { id, error, .. } => {
                tracing::warn!(resource = %id, %error, "apply failed")
            }
            Event::Stalled {
                revision, reason, ..
            } => tracing::warn!(revision = revision_text(revision), %reason, "stalled"),
            Event::WrittenBack {
                ids,
                revision: Some(revision),
                published_to,
            } => tracing::info!(
                resources = ids.len(),
                commit = %revision.id,
                branch = published_to.unwrap_or_default(),
                "drift written back"
            ),
            Event::WritebackConflict { path, message, .. } => {
                tracing::warn!(path, message, "write-back conflict")
            }
            Event::WritebackFailed { error, .. } => tracing::warn!(%error, "write-back failed"),
            Event::Blocked { message, .. } => tracing::info!(message, "blocked"),
            Event::SyncFinished {
                revision,
                result,
                duration,
                summary,
            } => tracing::info!(
                %revision,
                %result,
                created = summary.create,
                updated = summary.update,
                deleted = summary.delete,
                unchanged = summary.unchanged,
                duration_ms = duration.as_millis() as u64,
                "sync finished"
            ),
            _ => {}
        }
    }
}

/// The file in the state directory holding the key of sensitive
/// resources' digests (mode 0600).
pub const DIGEST_KEY_FILE: &str = "digest.key";

/// The identities of `--age-identity` and the recipients of
/// `--writeback-age-recipient`; `None` without identities.
pub(crate) fn age_keys(args: &AgentArgs) -> Result<Option<(Identities, Recipients)>, AgentError> {
    let recipients = Recipients::parse(
        args.engine
            .writeback_age_recipient
            .iter()
            .map(String::as_str),
    )?;
    if args.source.age_identity.is_empty() {
        return Ok(None);
    }
    let mut identities = Identities::new();
    for path in &args.source.age_identity {
        identities.add_file(path)?;
    }
    Ok(Some((identities, recipients)))
}

fn revision_text(revision: Option<gitops_core::Revision>) -> String {
    revision.map(|r| r.to_string()).unwrap_or_default()
}

/// Applies `--drift` to every resource whose manifest does not choose its own policy.
pub(crate) struct DefaultDrift {
    inner: Box<dyn Render>,
    drift: DriftPolicy,
}

impl DefaultDrift {
    /// `inner`, with `drift` as the default policy.
    pub(crate) fn new(inner: Box<dyn Render>, drift: DriftPolicy) -> Self {
        Self { inner, drift }
    }
}

impl DefaultDrift {
    fn default_drift(&self, r: &mut Resource) {
        if !r.annotations.contains_key(DRIFT_ANNOTATION) {
            r.policy.drift = self.drift;
        }
    }
}

impl Render for DefaultDrift {
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError> {
        let desired = self.inner.render(snapshot)?;
        let revision = desired.revision().clone();
        let resources = desired
            .into_resources()
            .into_iter()
            .map(|mut r| {
                self.default_drift(&mut r);
                r
            })
            .collect();
        DesiredState::new(revision, resources)
    }

    fn render_parts(&self, snapshot: &Snapshot) -> Option<Result<RenderParts, RenderError>> {
        let parts = self.inner.render_parts(snapshot)?;
        Some(parts.map(|mut parts| {
            for r in &mut parts.resources {
                self.default_drift(r);
            }
            parts
        }))
    }

    fn write_back(
        &self,
        file: &SnapshotFile,
        resource: &Resource,
        observed: Option<&Observed>,
    ) -> Result<FileEdit, RenderError> {
        self.inner.write_back(file, resource, observed)
    }

    fn fingerprint(&self) -> Option<String> {
        let inner = self.inner.fingerprint()?;
        Some(format!("{inner}\ndefault drift {:?}", self.drift))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_spotted() {
        assert!(url_has_password("https://bot:tok@git.example/r.git"));
        assert!(!url_has_password("https://tok@git.example/r.git"));
        assert!(!url_has_password("https://git.example/a:b@c"));
        assert!(!url_has_password("git@github.com:org/repo.git"));
        assert!(!url_has_password("/srv/repo"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ExitCode::from(Outcome::Converged), ExitCode::SUCCESS);
        assert_eq!(ExitCode::from(Outcome::ChangesPending), ExitCode::from(2));
        assert_eq!(ExitCode::from(Outcome::NotConverged), ExitCode::FAILURE);
        assert_eq!(exit(Err(AgentError::NoStateDir)), ExitCode::FAILURE);
    }
}
