//! Scale-out on etcd: applications of 10 resources each shared by 3
//! replicas on this machine (each with its own etcd connection), into
//! `EtcdTarget`s with the state in `EtcdStore`. Measures the time from start
//! to all converged, and the failover after a replica crashes (no handover:
//! its lease must expire), until every one of its applications has been
//! claimed and synced by the others.
//!
//! Needs `GITOPS_ETCD_ENDPOINTS` (scripts/test starts a throw-away etcd).
//!
//! - `cargo bench -p gitops-benches --bench etcd`: criterion, 1,000
//!   applications, 10 samples each (a few minutes). Goals: all converged
//!   < 30 s; failover < TTL + 1 s.
//! - `GITOPS_BENCH_APPS=10000 cargo bench -p gitops-benches --bench etcd`:
//!   the scale mode, one measured round without criterion (a run takes
//!   minutes), printing the time to all converged (and to each quarter),
//!   then the failover: every application of the crashed replica claimed,
//!   and synced again. Goals at 10,000: converged < 2 min, claimed < TTL +
//!   1 s, synced again < TTL + 10 s. `GITOPS_BENCH_RESOURCES` (default 10)
//!   and `GITOPS_BENCH_DEADLINE` (seconds to wait for convergence, default
//!   600) adjust it.
//! - Under `cargo test` it runs once with 30 applications of 2 resources.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, SamplingMode};
use gitops_core::source::BoxError;
use gitops_core::testing::MemorySource;
use gitops_core::{Engine, EngineConfig, ManifestRender};
use gitops_etcd::testing::SyncWatch;
use gitops_etcd::{
    AppContext, EtcdClient, EtcdConfig, EtcdTarget, Replica, ReplicaConfig, ReplicaHandle, testing,
};

const TTL: Duration = Duration::from_secs(2);

/// How long the criterion rounds wait for convergence.
const LIMIT: Duration = Duration::from_secs(300);

struct Sizes {
    apps: usize,
    resources: usize,
}

struct Cluster {
    prefix: String,
    apps: Vec<String>,
    replicas: Vec<ReplicaHandle>,
    syncs: SyncWatch,
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
    let apps: Vec<String> = (0..sizes.apps).map(|i| format!("app-{i:05}")).collect();
    let source = Arc::new(MemorySource::new("main"));
    let revision = source.commit([("app.yaml", manifests(sizes.resources))]).id;
    let client = EtcdClient::connect(&config())
        .await
        .expect("etcd reachable");
    let syncs = SyncWatch::start(&client, &prefix)
        .await
        .expect("watch starts");
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
    Cluster {
        syncs,
        client,
        prefix,
        apps,
        replicas,
        revision,
    }
}

impl Cluster {
    /// Waits until every application's newest sync converged on the
    /// revision; returns when (from `started`) each quartile got there,
    /// or how many had not by the deadline.
    async fn wait_converged(
        &self,
        started: Instant,
        deadline: Duration,
    ) -> Result<Vec<Duration>, usize> {
        let mut marks = Vec::new();
        loop {
            let done = self.syncs.count(&self.apps, |s| {
                s.is_some_and(|s| s.converged && s.revision == self.revision)
            });
            while marks.len() < 4 && done * 4 >= self.apps.len() * (marks.len() + 1) {
                marks.push(started.elapsed());
            }
            if done == self.apps.len() {
                return Ok(marks);
            }
            if started.elapsed() > deadline {
                return Err(self.apps.len() - done);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Crashes r1 and returns (all its applications claimed, all synced
    /// again), or what was still missing at TTL + 60 s.
    async fn failover(&mut self) -> Result<(Duration, Duration), String> {
        let r1 = self.replicas.remove(0);
        let orphans = r1.owned();
        assert!(!orphans.is_empty(), "r1 owned nothing");
        let killed = Instant::now();
        let killed_at = SystemTime::now();
        let limit = TTL + Duration::from_secs(60);
        r1.abort().await;
        loop {
            let owned: HashSet<String> = self.replicas.iter().flat_map(|r| r.owned()).collect();
            let left = orphans.iter().filter(|a| !owned.contains(*a)).count();
            if left == 0 {
                break;
            }
            if killed.elapsed() > limit {
                return Err(format!("{left} of {} not claimed", orphans.len()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let claimed = killed.elapsed();
        loop {
            let left = orphans.len()
                - self
                    .syncs
                    .count(&orphans, |s| s.is_some_and(|s| s.finished_at > killed_at));
            if left == 0 {
                return Ok((claimed, killed.elapsed()));
            }
            if killed.elapsed() > limit {
                return Err(format!("{left} of {} not synced again", orphans.len()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

/// `GITOPS_BENCH_<name>` as a number, or `default`.
fn env_number(name: &str, default: usize) -> usize {
    std::env::var(format!("GITOPS_BENCH_{name}"))
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("GITOPS_BENCH_{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// The 1-minute load average (Linux), for the report.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The scale mode: one measured round, printed.
fn scale(rt: &tokio::runtime::Runtime, apps: usize) {
    let sizes = Sizes {
        apps,
        resources: env_number("RESOURCES", 10),
    };
    let deadline = Duration::from_secs(env_number("DEADLINE", 600) as u64);
    println!(
        "scale: {} applications x {} resources, 3 replicas, TTL {:?}; load average {}",
        sizes.apps,
        sizes.resources,
        TTL,
        load()
    );
    rt.block_on(async {
        let started = Instant::now();
        let mut cluster = start(&sizes, 0).await;
        match cluster.wait_converged(started, deadline).await {
            Ok(marks) => println!(
                "start to all converged: {:.1?} (25%: {:.1?}, 50%: {:.1?}, 75%: {:.1?}); goal < 2 min at 10,000; load average {}",
                marks[3], marks[0], marks[1], marks[2], load()
            ),
            Err(left) => {
                println!("not converged within {deadline:?}: {left} left; load average {}", load());
                cluster.stop().await;
                return;
            }
        }
        let owned = cluster.replicas[0].owned().len();
        match cluster.failover().await {
            Ok((claimed, synced)) => println!(
                "failover of r1 ({owned} applications): all claimed after {claimed:.2?} (goal < TTL + 1 s = {:?}), all synced again after {synced:.2?} (goal < TTL + 10 s = {:?}); load average {}",
                TTL + Duration::from_secs(1),
                TTL + Duration::from_secs(10),
                load()
            ),
            Err(missing) => println!("failover of r1 ({owned} applications): {missing}"),
        }
        cluster.stop().await;
    });
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(apps) = std::env::var("GITOPS_BENCH_APPS").ok().filter(|_| full) {
        let apps = apps
            .parse()
            .unwrap_or_else(|_| panic!("GITOPS_BENCH_APPS={apps}: not a number"));
        scale(&rt, apps);
        return;
    }
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
                    let converged = cluster.wait_converged(started, LIMIT).await;
                    let took = started.elapsed();
                    assert!(converged.is_ok(), "not converged: {converged:?} left");
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
                        let converged = cluster.wait_converged(Instant::now(), LIMIT).await;
                        assert!(converged.is_ok(), "not converged: {converged:?} left");
                        let (claimed, synced) = cluster.failover().await.expect("failover");
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
