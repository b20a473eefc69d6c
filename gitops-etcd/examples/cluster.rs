//! Three replicas sharing applications on etcd: each application run by one
//! replica, a crashed replica's applications taken over within the lease
//! TTL, a stopped replica's handed over at once.
//!
//! Needs an etcd (and `protoc` to build, which is why it lives in
//! gitops-etcd, out of the other examples' build):
//! `GITOPS_ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p gitops-etcd
//! --example cluster -- [--apps N] [--ttl SECONDS]` (scripts/test starts a
//! throw-away one; see the README's "Scale-out on etcd"). The replicas run
//! as tasks of this process, each with its own connection, as separate
//! processes would; everything is written under a fresh prefix that is
//! deleted at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_core::source::BoxError;
use gitops_core::testing::MemorySource;
use gitops_core::{Engine, EngineConfig, ManifestRender};
use gitops_etcd::{
    AppContext, EtcdClient, EtcdConfig, EtcdStore, EtcdTarget, Replica, ReplicaConfig,
    ReplicaHandle, testing,
};

fn manifests(app: &str, version: u32) -> String {
    format!(
        "kind: Key\nmetadata: {{ name: settings }}\nspec: {{ value: {{ app: {app}, version: {version} }} }}\n---\n\
         kind: Key\nmetadata: {{ name: banner }}\nspec: {{ format: text, value: \"{app} v{version}\" }}\n"
    )
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

/// Waits until every application's newest sync converged on its source's head.
async fn wait_converged(
    store: &EtcdStore,
    sources: &BTreeMap<String, Arc<MemorySource>>,
) -> Result<Duration, BoxError> {
    let expected: Vec<(String, String)> = sources
        .iter()
        .map(|(app, s)| (app.clone(), s.head().map(|r| r.id).unwrap_or_default()))
        .collect();
    let start = Instant::now();
    loop {
        let pending = testing::not_converged(store, &expected).await?;
        if pending.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("not converged after 60 s: {pending:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spread(replicas: &[&ReplicaHandle]) -> String {
    replicas
        .iter()
        .map(|r| format!("{}: {}", r.id(), r.owned().len()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// replica-1 dies without a handover; the others take its applications
/// within the lease TTL.
async fn failover(
    r1: ReplicaHandle,
    r2: &ReplicaHandle,
    r3: &ReplicaHandle,
    ttl: Duration,
) -> Result<(), BoxError> {
    let orphans = r1.owned();
    let crashed = Instant::now();
    r1.abort().await; // as if the process were killed: no handover
    loop {
        let taken = orphans
            .iter()
            .all(|app| r2.owned().contains(app) || r3.owned().contains(app));
        if taken {
            break;
        }
        if crashed.elapsed() > ttl * 5 {
            return Err("replica-1's applications were not taken over".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "failover: replica-1 crashed; its {} applications taken over in {} ms (lease TTL {} s)",
        orphans.len(),
        crashed.elapsed().as_millis(),
        ttl.as_secs()
    );
    println!("ownership: {}", spread(&[r2, r3]));
    Ok(())
}

/// replica-2 stops gracefully; replica-3 takes its applications at once.
async fn handover(r2: ReplicaHandle, r3: &ReplicaHandle, ttl: Duration) -> Result<(), BoxError> {
    let moving = r2.owned();
    let stopping = Instant::now();
    r2.stop().await; // graceful: engines finish, locks deleted, lease revoked
    while !moving.iter().all(|app| r3.owned().contains(app)) {
        if stopping.elapsed() > ttl * 5 {
            return Err("replica-2's applications were not handed over".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "handover: replica-2 stopped; its {} applications handed over in {} ms",
        moving.len(),
        stopping.elapsed().as_millis()
    );
    println!("ownership: {}", spread(&[r3]));
    Ok(())
}

async fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = usize::try_from(arg(&args, "--apps", 30)?)?;
    let ttl = Duration::from_secs(arg(&args, "--ttl", 2)?);
    let config = EtcdConfig::from_env()?;
    let prefix = format!("/gitops-example-{}", std::process::id());
    let apps: Vec<String> = (0..n).map(|i| format!("app-{i:03}")).collect();
    // One Git repository per application (in memory here).
    let sources: Arc<BTreeMap<String, Arc<MemorySource>>> = Arc::new(
        apps.iter()
            .map(|app| {
                let source = Arc::new(MemorySource::new("main"));
                source.commit([("app.yaml", manifests(app, 1))]);
                (app.clone(), source)
            })
            .collect(),
    );
    let factory = {
        let (sources, prefix) = (sources.clone(), prefix.clone());
        Arc::new(move |ctx: &AppContext| -> Result<Engine, BoxError> {
            let source = sources.get(ctx.app()).ok_or("unknown application")?.clone();
            let target = EtcdTarget::new(
                ctx.client().clone(),
                format!("{prefix}/config/{}", ctx.app()),
            )
            .fenced(ctx.fence().clone());
            Ok(Engine::builder()
                .source(source)
                .render(Arc::new(ManifestRender::new()))
                .target(Arc::new(target))
                .store(ctx.store())
                .name(ctx.app().to_owned())
                .config(EngineConfig::default().interval(Duration::from_millis(500)))
                .build()?)
        })
    };
    let mut replicas = Vec::new();
    for id in ["replica-1", "replica-2", "replica-3"] {
        let client = EtcdClient::connect(&config).await?;
        let replica_config = ReplicaConfig::new(id, &prefix).ttl(ttl);
        replicas.push(Replica::start(client, replica_config, apps.clone(), factory.clone()).await?);
    }
    let client = EtcdClient::connect(&config).await?;
    let store = EtcdStore::new(client.clone(), &prefix);

    let took = wait_converged(&store, &sources).await?;
    println!(
        "converged: {n} applications on 3 replicas in {} ms",
        took.as_millis()
    );

    for (app, source) in sources.iter() {
        source.commit([("app.yaml", manifests(app, 2))]);
    }
    let took = wait_converged(&store, &sources).await?;
    println!(
        "new commit in every application: converged in {} ms",
        took.as_millis()
    );
    let banner = testing::list(&client, &format!("{prefix}/config/{}/banner", apps[0])).await?;
    println!("{} = {:?}", apps[0], banner.first().map(|(_, v, _)| v));

    let [r1, r2, r3]: [ReplicaHandle; 3] = replicas.try_into().map_err(|_| "three replicas")?;
    println!("ownership: {}", spread(&[&r1, &r2, &r3]));
    failover(r1, &r2, &r3, ttl).await?;
    handover(r2, &r3, ttl).await?;
    r3.stop().await;
    let removed = testing::delete_prefix(&client, &format!("{prefix}/")).await?;
    println!("cluster example: ok ({removed} keys under {prefix} removed)");
    Ok(())
}
