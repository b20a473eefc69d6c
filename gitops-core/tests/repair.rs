//! Drift repair while a revision is failing (issue 16 item 2): drift checks
//! keep running while a revision is stalled, and every resource that is not
//! itself failing is put back to what was last applied to it — the failing
//! revision's spec where it applied, the last applied revision's elsewhere —
//! while the failing resource is not applied again on every tick, and a
//! deny window still holds the repair back.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gitops_core::engine::{EngineConfig, RetryPolicy};
use gitops_core::status::Reason;
use gitops_core::testing::{Call, MemorySource, MemoryTarget};
use gitops_core::window::{ManualClock, SyncWindow, SyncWindows};
use gitops_core::{ConditionKind, Engine, ManifestRender, ResourceId};
use serde_json::json;

mod support;
use support::{Agent, eventually, id};

fn doc(kind_name: &str, deps: &[&str], spec: serde_json::Value) -> String {
    let (kind, name) = kind_name.split_once('/').expect("Kind/name");
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "---\nkind: {kind}\nmetadata: {{ name: {name}, dependsOn: [{}] }}\nspec: {spec}\n",
        deps.join(", ")
    )
}

fn config() -> EngineConfig {
    EngineConfig::default()
        .interval(Duration::from_secs(10))
        .interval_jitter(0.0)
        .drift_interval(Duration::from_secs(60))
        .health_poll(Duration::from_secs(1))
        .retry(RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        })
}

struct World {
    source: Arc<MemorySource>,
    target: Arc<MemoryTarget>,
    engine: Engine,
}

fn world(config: EngineConfig, clock: Option<Arc<ManualClock>>) -> World {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let mut builder = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .config(config);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    World {
        source,
        target,
        engine: builder.build().expect("engine"),
    }
}

fn applies(target: &MemoryTarget, of: &ResourceId) -> usize {
    target
        .calls()
        .iter()
        .filter(|c| **c == Call::Apply(of.clone()))
        .count()
}

/// v1: web, db and cache. v2 changes web, adds Conf/bad (which the target
/// always refuses) and makes db (changed too) depend on it.
fn v1() -> String {
    [
        doc("App/web", &[], json!({"v": 1})),
        doc("App/db", &[], json!({"v": 1})),
        doc("App/cache", &[], json!({"v": 1})),
    ]
    .concat()
}

fn v2() -> String {
    [
        doc("App/web", &[], json!({"v": 2})),
        doc("Conf/bad", &[], json!({"x": 1})),
        doc("App/db", &["Conf/bad"], json!({"v": 2})),
        doc("App/cache", &[], json!({"v": 1})),
    ]
    .concat()
}

async fn stalled_on_v2(w: &World) {
    w.source.commit([("app.yaml", v1())]);
    assert!(
        eventually(Duration::from_secs(5), || w
            .engine
            .status()
            .is(ConditionKind::Ready))
        .await
    );
    w.target.fail_next(&id("Conf/bad"), 1_000, false);
    w.source.commit([("app.yaml", v2())]);
    assert!(
        eventually(Duration::from_secs(30), || w
            .engine
            .status()
            .is(ConditionKind::Stalled))
        .await,
        "{}",
        w.engine.status()
    );
    let status = w.engine.status();
    assert_eq!(
        status.condition(ConditionKind::Stalled).reason,
        Reason::ResourceFailed
    );
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"v": 2})));
    assert_eq!(
        w.target.get(&id("App/db")),
        Some(json!({"v": 1})),
        "skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn drift_is_repaired_while_a_resource_keeps_failing() {
    let w = world(config(), None);
    let run = Agent::start(&w.engine);
    stalled_on_v2(&w).await;
    assert_eq!(applies(&w.target, &id("Conf/bad")), 1);

    // Hand edits of the other resources: each goes back to what was last
    // applied to it (web: v2, which applied; db: v1, as v2 skipped it;
    // cache: the same in both).
    w.target.edit(&id("App/web"), json!({"v": 666}));
    w.target.edit(&id("App/db"), json!({"v": 666}));
    w.target.remove(&id("App/cache"));
    assert!(
        eventually(Duration::from_secs(70), || {
            w.target.get(&id("App/web")) == Some(json!({"v": 2}))
                && w.target.get(&id("App/db")) == Some(json!({"v": 1}))
                && w.target.get(&id("App/cache")) == Some(json!({"v": 1}))
        })
        .await,
        "{:?}",
        w.target.contents()
    );
    // Many drift checks later: the failing resource was never applied
    // again, and the revision is still stalled (a repair lifts nothing).
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(applies(&w.target, &id("Conf/bad")), 1);
    assert_eq!(applies(&w.target, &id("App/db")), 2, "v1, then the repair");
    let status = w.engine.status();
    assert!(status.is(ConditionKind::Stalled), "{status}");
    assert!(w.target.get(&id("Conf/bad")).is_none());
    // Each check repairs again.
    w.target.edit(&id("App/web"), json!({"v": 7}));
    assert!(
        eventually(Duration::from_secs(70), || w.target.get(&id("App/web"))
            == Some(json!({"v": 2})))
        .await
    );
    // A fix in Git deploys as usual.
    w.target.clear_faults();
    w.source
        .commit([("app.yaml", v2().replace("{\"x\":1}", "{\"x\":2}"))]);
    assert!(
        eventually(Duration::from_secs(30), || w
            .engine
            .status()
            .is(ConditionKind::Ready))
        .await,
        "{}",
        w.engine.status()
    );
    assert_eq!(w.target.get(&id("App/db")), Some(json!({"v": 2})));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn drift_is_repaired_while_a_failing_resource_awaits_its_retry() {
    // Transient failures back off to a minute; drift checks every 10 s
    // repair the others without applying the failing one.
    let w = world(
        config()
            .drift_interval(Duration::from_secs(10))
            .retry(RetryPolicy {
                initial: Duration::from_secs(60),
                max_delay: Duration::from_secs(60),
                max_attempts: 100,
                jitter: false,
                ..RetryPolicy::default()
            }),
        None,
    );
    let run = Agent::start(&w.engine);
    w.source.commit([("app.yaml", v1())]);
    assert!(
        eventually(Duration::from_secs(5), || w
            .engine
            .status()
            .is(ConditionKind::Ready))
        .await
    );
    w.target.fail_next(&id("Conf/bad"), 1_000, true);
    w.source.commit([("app.yaml", v2())]);
    assert!(
        eventually(Duration::from_secs(15), || w
            .engine
            .status()
            .retry
            .is_some())
        .await
    );
    let tries = applies(&w.target, &id("Conf/bad"));
    w.target.edit(&id("App/web"), json!({"v": 666}));
    assert!(
        eventually(Duration::from_secs(15), || w.target.get(&id("App/web"))
            == Some(json!({"v": 2})))
        .await
    );
    assert_eq!(
        applies(&w.target, &id("Conf/bad")),
        tries,
        "only retries apply it"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_render_failure_keeps_repairing_the_last_good_state() {
    let w = world(config(), None);
    let run = Agent::start(&w.engine);
    w.source.commit([("app.yaml", v1())]);
    assert!(
        eventually(Duration::from_secs(5), || w
            .engine
            .status()
            .is(ConditionKind::Ready))
        .await
    );
    let cycle = [
        doc("App/web", &["App/db"], json!({"v": 3})),
        doc("App/db", &["App/web"], json!({"v": 3})),
    ]
    .concat();
    w.source.commit([("app.yaml", cycle)]);
    assert!(
        eventually(Duration::from_secs(30), || w
            .engine
            .status()
            .is(ConditionKind::Stalled))
        .await
    );
    assert_eq!(
        w.engine.status().condition(ConditionKind::Stalled).reason,
        Reason::RenderFailed
    );
    w.target.edit(&id("App/web"), json!({"v": 666}));
    assert!(
        eventually(Duration::from_secs(70), || w.target.get(&id("App/web"))
            == Some(json!({"v": 1})))
        .await,
        "{:?}",
        w.target.contents()
    );
    assert_eq!(applies(&w.target, &id("App/web")), 2, "v1, then the repair");
    assert!(w.engine.status().is(ConditionKind::Stalled));
    // The repair is audited as a drift revert of the last good revision.
    let audit = w
        .engine
        .audit(&gitops_core::AuditQuery::default())
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.id == id("App/web") && a.trigger == gitops_core::engine::Trigger::Drift),
        "{audit:?}"
    );
    run.stop().await;
}

/// Thursday 2026-11-26 00:00:00 UTC.
const THURSDAY: u64 = 1_795_651_200;

fn at(hours: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(THURSDAY + hours * 3_600)
}

#[tokio::test(start_paused = true)]
async fn a_deny_window_holds_the_repair_back() {
    let clock = Arc::new(ManualClock::new(at(8)));
    let freeze =
        SyncWindow::deny("freeze", "0 10 * * *", Duration::from_secs(2 * 3_600)).expect("window");
    let w = world(
        config().windows(SyncWindows::new().with(freeze)),
        Some(clock.clone()),
    );
    let run = Agent::start(&w.engine);
    stalled_on_v2(&w).await;

    clock.set(at(10));
    w.target.edit(&id("App/web"), json!({"v": 666}));
    w.target.clear_calls();
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"v": 666})));
    assert!(w.target.changes().is_empty(), "{:?}", w.target.changes());
    let status = w.engine.status();
    let blocked = status.blocked.clone().expect("blocked");
    assert_eq!(blocked.until, Some(at(12)));
    assert!(status.is(ConditionKind::Stalled), "{status}");

    clock.set(at(12));
    assert!(
        eventually(Duration::from_secs(70), || w.target.get(&id("App/web"))
            == Some(json!({"v": 2})))
        .await
    );
    assert_eq!(w.target.changes(), [Call::Apply(id("App/web"))]);
    run.stop().await;
}
