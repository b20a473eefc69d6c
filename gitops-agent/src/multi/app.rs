//! Building one application of a config: its Git source (on the shared
//! repository of its URL), render, write-back, target and engine, before
//! anything runs, so that a config whose application cannot be built is
//! refused whole.

use std::sync::Arc;

use gitops_core::decrypt::{Decrypt, Identities, Recipients};
use gitops_core::secret::DigestKey;
use gitops_core::{
    ConditionKind, Dependency, DriftPolicy, Engine, EngineConfig, EngineHandle, FilesRender,
    ManifestRender, Needs, Render, StateStore, SyncWindows, Target,
};
use gitops_git::{
    AllowedSigners, GitSource, GitWriteback, PgpKeys, SharedRepository, TrustedSigners, VerifyMode,
};

use crate::args::{CredentialArgs, RenderKind, VerifyModeArg};
use crate::config::{AppSpec, AppsConfig, ConfigError, Policy};
use crate::credentials;
use crate::http::repo_key;
use crate::metrics::Metrics;
use crate::run::DefaultDrift;

/// Builds the target of an application from its spec (its
/// [`AppTarget`](crate::config::AppTarget)); the error says why it cannot,
/// and is reported with the application's line.
pub trait TargetFactory: Send + Sync {
    /// The target of `app`.
    fn target(&self, app: &AppSpec) -> Result<Arc<dyn Target>, String>;
}

impl<F> TargetFactory for F
where
    F: Fn(&AppSpec) -> Result<Arc<dyn Target>, String> + Send + Sync,
{
    fn target(&self, app: &AppSpec) -> Result<Arc<dyn Target>, String> {
        self(app)
    }
}

/// The agent-wide keys of `--age-identity`/`--writeback-age-recipient`
/// and the state directory's digest key: every application uses them.
/// (The signature keys are each application's
/// [`Policy`]: `--verify-signers`, `--verify-pgp-keys` and `--verify-mode`
/// are their defaults.)
pub(crate) struct Keys {
    pub(crate) age: Option<(Identities, Recipients)>,
    pub(crate) digest: DigestKey,
}

/// What building an application needs from the agent.
pub(crate) struct Parts<'a> {
    pub(crate) keys: &'a Keys,
    pub(crate) credentials: &'a CredentialArgs,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) metrics: &'a Metrics,
    pub(crate) targets: &'a dyn TargetFactory,
}

/// An application built and not yet running.
pub(crate) struct Built {
    pub(crate) spec: AppSpec,
    pub(crate) engine: Engine,
    pub(crate) target: Arc<dyn Target>,
    pub(crate) shared: SharedRepository,
    /// The engines it depends on.
    pub(crate) upstreams: Vec<EngineHandle>,
}

/// An application another one depends on.
#[derive(Clone, Copy)]
pub(crate) enum Upstream<'a> {
    /// Running or just built in this process: its live status is watched.
    Local(&'a AppSpec, &'a Engine),
    /// Wherever it runs (replicas): its record in the shared store is read
    /// on each reconcile of the dependent.
    #[cfg(feature = "etcd")]
    Stored(&'a AppSpec),
}

impl<'a> Upstream<'a> {
    /// Its engine, when it runs in this process.
    fn engine(&self) -> Option<&'a Engine> {
        match self {
            Upstream::Local(_, engine) => Some(engine),
            #[cfg(feature = "etcd")]
            Upstream::Stored(_) => None,
        }
    }

    fn spec(&self) -> &'a AppSpec {
        match self {
            Upstream::Local(spec, _) => spec,
            #[cfg(feature = "etcd")]
            Upstream::Stored(spec) => spec,
        }
    }
}

/// What `app` needs of `upstream`: the same or a newer revision when both
/// follow the same release of one repository (ancestry can be told
/// there), Ready otherwise.
fn needs(app: &AppSpec, upstream: &AppSpec) -> Needs {
    let same = repo_key(&app.repo) == repo_key(&upstream.repo) && app.release == upstream.release;
    if same {
        Needs::SameOrNewerRevision
    } else {
        Needs::Ready
    }
}

/// The dependency of `app` on `upstream`.
fn dependency(app: &AppSpec, upstream: Upstream<'_>) -> Dependency {
    let needs = needs(app, upstream.spec());
    match upstream {
        Upstream::Local(_, engine) => Dependency::on(&engine.handle()).needs(needs),
        #[cfg(feature = "etcd")]
        Upstream::Stored(spec) => Dependency::on_app(spec.name.clone()).needs(needs),
    }
}

/// What an application is built from besides its target.
struct Pieces {
    source: GitSource,
    render: Arc<dyn Render>,
    writeback: Option<GitWriteback>,
}

/// The source, render and write-back of `spec`; an error names the
/// application's line and key.
fn pieces(
    credentials: &CredentialArgs,
    keys: &Keys,
    config: &AppsConfig,
    spec: &AppSpec,
    shared: &SharedRepository,
) -> Result<Pieces, ConfigError> {
    let bad = |key: &str, message: String| config.error(&spec.name, key, message);
    let source = source(credentials, spec, shared).map_err(|(k, m)| bad(k, m))?;
    let render = render(spec, keys);
    let writeback = writeback(spec, &source, &render).map_err(|m| bad("drift", m))?;
    Ok(Pieces {
        source,
        render,
        writeback,
    })
}

/// Checks that `spec` can be built, but for its target (which only its
/// owner builds, when replicas share the list).
#[cfg(feature = "etcd")]
pub(crate) fn check(
    credentials: &CredentialArgs,
    keys: &Keys,
    config: &AppsConfig,
    spec: &AppSpec,
    shared: &SharedRepository,
) -> Result<(), ConfigError> {
    pieces(credentials, keys, config, spec, shared).map(|_| ())
}

/// Builds `spec` of `config` on `shared`, depending on `upstreams`; an
/// error names the application's line and key.
pub(crate) fn build(
    parts: &Parts<'_>,
    config: &AppsConfig,
    spec: &AppSpec,
    shared: &SharedRepository,
    upstreams: &[Upstream<'_>],
) -> Result<Built, ConfigError> {
    let bad = |key: &str, message: String| config.error(&spec.name, key, message);
    let Pieces {
        source,
        render,
        writeback,
    } = pieces(parts.credentials, parts.keys, config, spec, shared)?;
    let target = parts.targets.target(spec).map_err(|m| bad("target", m))?;
    let mut builder = Engine::builder()
        .digest_key(parts.keys.digest.clone())
        .name(spec.name.clone())
        .source(parts.metrics.source(&spec.name, Arc::new(source)))
        .render(render)
        .target(target.clone())
        .store(parts.store.clone())
        .config(engine_config(spec));
    if let Some(writeback) = writeback {
        builder = builder.writeback(Arc::new(writeback));
    }
    for upstream in upstreams {
        builder = builder.depends_on(dependency(spec, *upstream));
    }
    let engine = builder.build().map_err(|e| bad("name", e.to_string()))?;
    let local = upstreams.iter().filter_map(Upstream::engine);
    Ok(Built {
        spec: spec.clone(),
        engine,
        target,
        shared: shared.clone(),
        upstreams: local.map(Engine::handle).collect(),
    })
}

/// The Git source of `spec` on its shared repository; errors are (key, message).
fn source(
    credentials: &CredentialArgs,
    spec: &AppSpec,
    shared: &SharedRepository,
) -> Result<GitSource, (&'static str, String)> {
    let mut builder = GitSource::builder(spec.repo.clone(), spec.release.clone()).shared(shared);
    if let Some(path) = &spec.path {
        builder = builder.path(path.clone());
    }
    if let Some((mode, trusted)) = trust(&spec.policy)? {
        builder = builder.verify(mode, trusted);
    }
    let builder = credentials::configure(builder, credentials, &spec.repo)
        .map_err(|e| ("repo", e.to_string()))?;
    builder.build().map_err(|e| ("repo", e.to_string()))
}

/// The keys `policy` names, read now (at every build: a reload reads them
/// again), and what must be signed; `None` without keys. Errors are
/// (key, message) and name the file, never its content.
fn trust(policy: &Policy) -> Result<Option<(VerifyMode, TrustedSigners)>, (&'static str, String)> {
    if !policy.verifies() {
        return Ok(None);
    }
    let mut trusted = TrustedSigners::new();
    if let Some(file) = &policy.verify_signers {
        let bad = |e: String| ("verify_signers", format!("{}: {e}", file.display()));
        let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
        trusted = trusted.with_ssh(AllowedSigners::parse(&text).map_err(|e| bad(e.to_string()))?);
    }
    let mut keys = PgpKeys::new();
    for file in &policy.verify_pgp_keys {
        let read = crate::trust::pgp_keys_file(file)
            .map_err(|e| ("verify_pgp_keys", format!("{}: {e}", file.display())))?;
        keys.extend(read);
    }
    let mode = policy.verify_mode.unwrap_or(VerifyModeArg::Head).into();
    Ok(Some((mode, trusted.with_pgp(keys))))
}

/// The render of `spec`, with its drift policy as every resource's default.
fn render(spec: &AppSpec, keys: &Keys) -> Arc<dyn Render> {
    let mut render: Box<dyn Render> = match spec.policy.render {
        RenderKind::Manifests => Box::new(ManifestRender::new()),
        _ => Box::new(FilesRender::new()),
    };
    if let Some(drift) = spec.policy.drift {
        render = Box::new(DefaultDrift::new(render, drift.into()));
    }
    match &keys.age {
        // Outermost, as for one application: a sensitive resource's drift
        // policy is final here.
        Some((identities, recipients)) => Arc::new(
            Decrypt::new(render, identities.clone()).writeback_recipients(recipients.clone()),
        ),
        None => Arc::from(render),
    }
}

/// Write-back, when the tracked branch or `writeback_branch` allows it; an
/// error only when write-back was asked for.
fn writeback(
    spec: &AppSpec,
    source: &GitSource,
    render: &Arc<dyn Render>,
) -> Result<Option<GitWriteback>, String> {
    let mut builder = GitWriteback::builder(source, render.clone());
    if let Some(branch) = &spec.policy.writeback_branch {
        builder = builder.review_branch(branch.clone());
    }
    if let Some(key) = &spec.policy.writeback_key {
        builder = builder.signing_key(key.clone());
    }
    let asked = spec.policy.drift.map(DriftPolicy::from) == Some(DriftPolicy::Writeback)
        || spec.policy.writeback_key.is_some();
    match builder.build() {
        Ok(w) => Ok(Some(w)),
        Err(e) if asked => Err(format!("write-back: {e}")),
        Err(_) => Ok(None),
    }
}

/// The engine settings of `spec`.
fn engine_config(spec: &AppSpec) -> EngineConfig {
    let windows = spec
        .policy
        .allow
        .iter()
        .chain(&spec.policy.deny)
        .cloned()
        .fold(SyncWindows::new(), SyncWindows::with);
    EngineConfig::default()
        .interval(spec.policy.interval)
        .drift_interval(spec.policy.drift_interval)
        .prune(spec.policy.prune)
        .windows(windows)
}

/// Reconciles `dependent` as soon as `upstream` becomes Ready, rather than
/// at its next poll (a dependency is looked at on each reconcile). Ends
/// with the upstream engine; abort it when the dependent stops.
pub(crate) async fn follow_upstream(upstream: EngineHandle, dependent: EngineHandle) {
    let mut status = upstream.watch_status();
    let mut was_ready = status.borrow().is(ConditionKind::Ready);
    while status.changed().await.is_ok() {
        let ready = status.borrow_and_update().is(ConditionKind::Ready);
        if ready && !was_ready {
            dependent.reconcile_now();
        }
        was_ready = ready;
    }
}
