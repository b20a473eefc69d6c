//! Scale-out on etcd: 1,000 applications of 10 resources each shared by 3
//! replicas on this machine (each with its own etcd connection), into
//! `EtcdTarget`s with the state in `EtcdStore`. Measures the time from start
//! to all converged, and the failover after a replica crashes (no handover:
//! its lease must expire), until every one of its applications has been
//! claimed and synced by the others. Goals: all converged < 30 s; failover
//! < TTL + 1 s.
//!
//! Needs `GITOPS_ETCD_ENDPOINTS` (scripts/test starts a throw-away etcd).
//! `cargo bench -p gitops-benches --bench etcd` (a few minutes); under
//! `cargo test` it runs once with 30 applications of 2 resources.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, SamplingMode};
use gitops_core::source::BoxError;
use gitops_core::testing::MemorySource;
use gitops_core::{Engine, EngineConfig, ManifestRender, StateStore};
use gitops_etcd::{
    AppContext, EtcdClient, EtcdConfig, EtcdStore, EtcdTarget, Replica, ReplicaConfig,
    ReplicaHandle, testing,
};

const TTL: Duration = Duration::from_secs(2);

struct Sizes {
    apps: usize,
    resources: usize,
}

struct Cluster {
    prefix: String,
    apps: Vec<String>,
    replicas: Vec<ReplicaHandle>,
    store: EtcdStore,
    client: EtcdClient,
    revision: String,
}

fn manifests(resources: usize) -> String {
    (0..resources)
        .map(|i| {
            format!(
                "kind: Key\nmetadata: {{ name: key-{i:02} }}\nspec: {{ value: {{ index: {i}, limits: {{ cpu: 2, memory: 512 }}, hosts: [a, b, c] }} }}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn config() -> EtcdConfig {
    EtcdConfig::from_env().unwrap_or_else(|e| {
        panic!("{e}: this benchmark needs a real etcd (scripts/test starts a throw-away one)")
    })
}

async fn start(sizes: &Sizes, run: usize) -> Cluster {
    let prefix = format!("/gitops-bench/{}-{run}", std::process::id());
    let apps: Vec<String> = (0..sizes.apps).map(|i| format!("app-{i:04}")).collect();
    let source = Arc::new(MemorySource::new("main"));
    let revision = source.commit([("app.yaml", manifests(sizes.resources))]).id;
    let factory = {
        let prefix = prefix.clone();
        Arc::new(move |ctx: &AppContext| -> Result<Engine, BoxError> {
            let target =
                EtcdTarget::new(ctx.client().clone(), format!("{prefix}/kv/{}", ctx.app()))
                    .fenced(ctx.fence().clone());
            Ok(Engine::builder()
                .source(source.clone())
                .render(Arc::new(ManifestRender::new()))
                .target(Arc::new(target))
                .store(ctx.store())
                .name(ctx.app().to_owned())
                .config(EngineConfig::default())
                .build()?)
        })
    };
    let mut replicas = Vec::new();
    for id in ["r1", "r2", "r3"] {
        let client = EtcdClient::connect(&config())
            .await
            .expect("etcd reachable");
        let replica = Replica::start(
            client,
            ReplicaConfig::new(id, &prefix).ttl(TTL),
            apps.clone(),
            factory.clone(),
        )
        .await
        .expect("replica starts");
        replicas.push(replica);
    }
    let client = EtcdClient::connect(&config())
        .await
        .expect("etcd reachable");
    Cluster {
        store: EtcdStore::new(client.clone(), &prefix),
        client,
        prefix,
        apps,
        replicas,
        revision,
    }
}

impl Cluster {
    async fn wait_converged(&self) {
        let expected: Vec<(String, String)> = self
            .apps
            .iter()
            .map(|a| (a.clone(), self.revision.clone()))
            .collect();
        let start = Instant::now();
        loop {
            let pending = testing::not_converged(&self.store, &expected)
                .await
                .expect("store readable");
            if pending.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "not converged: {} left",
                pending.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Crashes r1 and returns (all its applications claimed, all synced again).
    async fn failover(&mut self) -> (Duration, Duration) {
        let r1 = self.replicas.remove(0);
        let orphans = r1.owned();
        assert!(!orphans.is_empty(), "r1 owned nothing");
        let killed = Instant::now();
        let killed_at = SystemTime::now();
        r1.abort().await;
        loop {
            if orphans
                .iter()
                .all(|app| self.replicas.iter().any(|r| r.owned().contains(app)))
            {
                break;
            }
            assert!(killed.elapsed() < TTL * 10, "no takeover");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let claimed = killed.elapsed();
        let mut pending = orphans;
        while !pending.is_empty() {
            let mut left = Vec::new();
            for app in pending {
                let newest = self.store.history(&app, 1).await.expect("history");
                if newest.first().is_none_or(|h| h.finished_at <= killed_at) {
                    left.push(app);
                }
            }
            pending = left;
            assert!(
                killed.elapsed() < TTL * 10,
                "no resync: {} left",
                pending.len()
            );
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        (claimed, killed.elapsed())
    }

    async fn stop(self) {
        for r in self.replicas {
            r.stop().await;
        }
        testing::delete_prefix(&self.client, &format!("{}/", self.prefix))
            .await
            .expect("cleanup");
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            apps: 1_000,
            resources: 10,
        }
    } else {
        Sizes {
            apps: 30,
            resources: 2,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    let mut group = c.benchmark_group(format!(
        "etcd: {} applications x {} resources, 3 replicas, TTL {}s",
        sizes.apps,
        sizes.resources,
        TTL.as_secs()
    ));
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut run = 0;
    let mut claims = Vec::new();
    group.bench_function("start to all converged", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                total += rt.block_on(async {
                    let started = Instant::now();
                    let cluster = start(&sizes, run).await;
                    cluster.wait_converged().await;
                    let took = started.elapsed();
                    cluster.stop().await;
                    took
                });
            }
            total
        })
    });
    group.bench_function(
        "failover after a crash: claimed and synced by the others",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    run += 1;
                    total += rt.block_on(async {
                        let mut cluster = start(&sizes, run).await;
                        cluster.wait_converged().await;
                        let (claimed, synced) = cluster.failover().await;
                        claims.push(claimed);
                        cluster.stop().await;
                        synced
                    });
                }
                total
            })
        },
    );
    group.finish();
    claims.sort();
    if let Some(median) = claims.get(claims.len() / 2) {
        println!(
            "failover: median time until the crashed replica's applications were all claimed: {median:.2?} over {} runs (goal: < TTL + 1 s = {:?})",
            claims.len(),
            TTL + Duration::from_secs(1)
        );
    }
    c.final_summary();
}
