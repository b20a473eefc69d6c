//! The applications of the cluster tests: a source shared through etcd,
//! manifests whose applies can be slowed down, a target whose writes run to
//! completion even when the engine is aborted, and the engine factory.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::RetryPolicy;
use gitops_core::source::BoxError;
use gitops_core::{
    Diff, Engine, EngineConfig, ManifestRender, Observed, Resource, ResourceId, Revision, Snapshot,
    Source, SourceError, Target, TargetError, async_trait,
};
use gitops_etcd::{AppContext, EtcdClient, EtcdTarget, testing};

/// The manifests of `app` at revision `rev`: two keys; revision 2 makes
/// each apply take 1.5 s, so a sync is reliably in flight when the test
/// revokes a lease.
pub fn manifests(app: &str, rev: &str) -> String {
    let delay = if rev == "2" { 1500 } else { 0 };
    format!(
        "kind: Key\nmetadata: {{ name: a }}\nspec: {{ value: {{ app: {app}, rev: \"{rev}\" }}, delay_ms: {delay} }}\n---\n\
         kind: Key\nmetadata: {{ name: b }}\nspec: {{ format: text, value: \"{app}@{rev}\", delay_ms: {delay} }}\n"
    )
}

/// A source whose revision is the key `<prefix>/src/rev`, shared by every
/// process (a stand-in for a Git repository).
pub struct EtcdRevSource {
    client: EtcdClient,
    key: String,
    app: String,
}

#[async_trait]
impl Source for EtcdRevSource {
    async fn poll(&self) -> Result<Revision, SourceError> {
        let value = testing::list(&self.client, &self.key)
            .await
            .map_err(|e| SourceError::Unavailable {
                location: self.key.clone(),
                message: e.to_string(),
                source: None,
            })?
            .into_iter()
            .find(|(k, _, _)| *k == self.key)
            .map(|(_, v, _)| v)
            .unwrap_or_else(|| "1".into());
        Ok(Revision::new("main", value))
    }

    async fn snapshot(
        &self,
        rev: &Revision,
        _cancel: &gitops_core::Cancel,
    ) -> Result<Snapshot, SourceError> {
        let text = manifests(&self.app, &rev.id);
        Snapshot::from_files(rev.clone(), [("app.yaml", text.as_bytes())]).map_err(|e| {
            SourceError::Unavailable {
                location: self.key.clone(),
                message: e.to_string(),
                source: None,
            }
        })
    }
}

/// An EtcdTarget whose writes take `spec.delay_ms` and run to completion
/// even when the engine is aborted (like a call that can not be taken
/// back), so a fenced write after a lost lease is observable.
pub struct SlowTarget {
    inner: EtcdTarget,
    app: String,
    replica: String,
}

fn strip(r: &Resource) -> (Resource, u64) {
    let mut r = r.clone();
    let mut spec = r.spec.to_value();
    let delay = spec
        .as_object_mut()
        .and_then(|m| m.remove("delay_ms"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    r.spec = spec.into();
    (r, delay)
}

#[async_trait]
impl Target for SlowTarget {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        self.inner.observe(id).await
    }
    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let (r, delay) = strip(resource);
        let inner = self.inner.clone();
        let line = format!("REFUSED {} {} {}", self.replica, self.app, r.id);
        let write = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let result = inner.apply(&r).await;
            if result.is_err() {
                println!("{line}");
            }
            result
        });
        write
            .await
            .map_err(|e| TargetError::transient(&resource.id, e.to_string()))?
    }
    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        self.inner.delete(id).await
    }
    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        self.inner.differs(&strip(desired).0, observed)
    }
}

/// The engine factory of the cluster tests: each application's engine
/// reads [`EtcdRevSource`], renders [`manifests`] and writes through a
/// fenced [`SlowTarget`]; it prints `SYNC <replica> <app> <revision>`
/// when a sync starts.
pub fn factory(prefix: String, replica: String) -> gitops_etcd::EngineFactory {
    Arc::new(move |ctx: &AppContext| -> Result<Engine, BoxError> {
        let app = ctx.app().to_owned();
        let target = EtcdTarget::new(ctx.client().clone(), format!("{prefix}/kv/{app}"))
            .fenced(ctx.fence().clone());
        let engine = Engine::builder()
            .source(Arc::new(EtcdRevSource {
                client: ctx.client().clone(),
                key: format!("{prefix}/src/rev"),
                app: app.clone(),
            }))
            .render(Arc::new(ManifestRender::new()))
            .target(Arc::new(SlowTarget {
                inner: target,
                app: app.clone(),
                replica: replica.clone(),
            }))
            .store(ctx.store())
            .name(app.clone())
            .config(
                EngineConfig::default()
                    .interval(Duration::from_millis(300))
                    .interval_jitter(0.0)
                    .retry(RetryPolicy {
                        initial: Duration::from_millis(200),
                        max_delay: Duration::from_secs(1),
                        jitter: false,
                        ..RetryPolicy::default()
                    }),
            )
            .build()?;
        let mut events = engine.subscribe();
        let (replica, app) = (replica.clone(), app.clone());
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let gitops_core::engine::Event::SyncStarted { revision, .. } = event {
                    println!("SYNC {replica} {app} {}", revision.id);
                }
            }
        });
        Ok(engine)
    })
}
