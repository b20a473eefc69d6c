//! [`EngineBuilder`]: the parts of an engine and its [`EngineConfig`].

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast, watch};

use super::state::{Inner, LoopState, Parts, RUNNING, Requests};
use super::{ConfigError, Dependency, Engine, EngineConfig, EngineError};
use crate::gate::Gate;
use crate::render::Render;
use crate::secret::DigestKey;
use crate::source::Source;
use crate::status::Status;
use crate::store::{MemoryStore, StateStore};
use crate::target::Target;
use crate::window::{Clock, SystemClock};
use crate::writeback::Writeback;

/// Builds an [`Engine`]; source, render and target are required.
///
/// Policies live in one [`EngineConfig`] given to [`config`](Self::config);
/// the builder holds only the application name and the parts.
#[derive(Default)]
#[must_use]
pub struct EngineBuilder {
    name: Option<String>,
    config: EngineConfig,
    source: Option<Arc<dyn Source>>,
    render: Option<Arc<dyn Render>>,
    target: Option<Arc<dyn Target>>,
    store: Option<Arc<dyn StateStore>>,
    writeback: Option<Arc<dyn Writeback>>,
    pre_gates: Vec<Arc<dyn Gate>>,
    post_gates: Vec<Arc<dyn Gate>>,
    clock: Option<Arc<dyn Clock>>,
    dependencies: Vec<Dependency>,
    digest_key: Option<DigestKey>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// The application name: the key of this engine's records in the state
    /// store (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The policies (default [`EngineConfig::default`]).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Where releases come from.
    pub fn source(mut self, source: Arc<dyn Source>) -> Self {
        self.source = Some(source);
        self
    }

    /// How snapshots become desired state.
    pub fn render(mut self, render: Arc<dyn Render>) -> Self {
        self.render = Some(render);
        self
    }

    /// The system kept equal to Git.
    pub fn target(mut self, target: Arc<dyn Target>) -> Self {
        self.target = Some(target);
        self
    }

    /// Where the inventory lives (default: a [`MemoryStore`], lost on exit).
    pub fn store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Where `writeback`-policy drift goes (default: none; such drift is reported only).
    pub fn writeback(mut self, writeback: Arc<dyn Writeback>) -> Self {
        self.writeback = Some(writeback);
        self
    }

    /// A gate that must pass before a revision with changes is applied.
    pub fn pre_sync_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.pre_gates.push(gate);
        self
    }

    /// A gate that must pass after a revision with changes was applied and
    /// found healthy (or, without changes, when its last run on this
    /// revision failed); a failure marks the revision failed.
    pub fn post_sync_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.post_gates.push(gate);
        self
    }

    /// The wall clock sync windows are read against (default: the system's).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Syncs only while another application is Ready (see
    /// [`Dependency`]); the status names the dependency that blocks.
    pub fn depends_on(mut self, dependency: Dependency) -> Self {
        self.dependencies.push(dependency);
        self
    }

    /// The key of the digests the engine stores for sensitive resources
    /// (see [`DigestKey`]); default [`DigestKey::process`], one random key
    /// per process. A store that outlives the process wants a key kept
    /// beside it: [`DigestKey::load_or_create`] in its directory.
    pub fn digest_key(mut self, key: DigestKey) -> Self {
        self.digest_key = Some(key);
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Result<Engine, EngineError> {
        let name = self.name.unwrap_or_else(|| "default".to_owned());
        check(&name, &self.config, &self.dependencies)?;
        let (events, _) = broadcast::channel(1024);
        let (status, _) = watch::channel(Status::default());
        let (shutdown, _) = watch::channel(RUNNING);
        let parts = Parts {
            source: Arc::new(super::guard::Guarded {
                source: self.source.ok_or(ConfigError::Missing("a source"))?,
                timeout: self.config.source_timeout,
                shutdown: shutdown.subscribe(),
            }),
            render: self.render.ok_or(ConfigError::Missing("a render"))?,
            target: self.target.ok_or(ConfigError::Missing("a target"))?,
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            writeback: self.writeback,
            pre_gates: self.pre_gates,
            post_gates: self.post_gates,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            dependencies: self.dependencies,
            digest_key: self.digest_key.unwrap_or_else(DigestKey::process),
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                name,
                config: self.config,
                parts,
                events,
                status,
                trigger: Notify::new(),
                shutdown,
                state: tokio::sync::Mutex::new(LoopState::default()),
                requests: Mutex::new(Requests::default()),
            }),
        })
    }
}

/// Refuses a configuration the engine cannot run with.
fn check(
    name: &str,
    config: &EngineConfig,
    dependencies: &[Dependency],
) -> Result<(), ConfigError> {
    if config.concurrency == 0 {
        return Err(ConfigError::Zero("concurrency"));
    }
    if config.observe_chunk == 0 {
        return Err(ConfigError::Zero("observe_chunk"));
    }
    // Zero would poll (or check drift) in a busy loop.
    for (field, value) in [
        ("interval", config.interval),
        ("drift_interval", config.drift_interval),
        ("health_poll", config.health_poll),
    ] {
        if value.is_zero() {
            return Err(ConfigError::ZeroInterval(field));
        }
    }
    // Zero would fail every call.
    for (field, value) in [
        ("source_timeout", config.source_timeout),
        ("render_timeout", config.render_timeout),
    ] {
        if value.is_zero() {
            return Err(ConfigError::ZeroTimeout(field));
        }
    }
    if let Some(own) = dependencies.iter().find(|d| d.name() == name) {
        return Err(ConfigError::SelfDependency(own.name().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn unusable_configurations_are_refused_by_name() {
        let ok = EngineConfig::default();
        assert_eq!(check("web", &ok, &[]), Ok(()));
        let zero = |c: EngineConfig| check("web", &c, &[]);
        assert_eq!(
            zero(ok.clone().concurrency(0)),
            Err(ConfigError::Zero("concurrency"))
        );
        assert_eq!(
            zero(ok.clone().observe_chunk(0)),
            Err(ConfigError::Zero("observe_chunk"))
        );
        for (config, field) in [
            (ok.clone().interval(Duration::ZERO), "interval"),
            (ok.clone().drift_interval(Duration::ZERO), "drift_interval"),
            (ok.clone().health_poll(Duration::ZERO), "health_poll"),
        ] {
            assert_eq!(zero(config), Err(ConfigError::ZeroInterval(field)));
        }
        for (config, field) in [
            (ok.clone().source_timeout(Duration::ZERO), "source_timeout"),
            (ok.clone().render_timeout(Duration::ZERO), "render_timeout"),
        ] {
            assert_eq!(zero(config), Err(ConfigError::ZeroTimeout(field)));
        }
        let own = [Dependency::on_app("web")];
        assert_eq!(
            check("web", &ok, &own),
            Err(ConfigError::SelfDependency("web".into()))
        );
    }
}
