//! The engine end to end on the in-memory source and target, with tokio's
//! paused clock for every timing.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::{Event, Outcome, RetryPolicy, SyncResult, Trigger};
use gitops_core::testing::{Call, MemorySource, MemoryTarget, MemoryWriteback};
use gitops_core::{ConditionKind, DriftPolicy, Engine, ManifestRender};
use serde_json::json;
use tokio::time::Instant;

mod support;
use support::world::{annotated, applies, config, doc, world, world_with};
use support::{Agent, eventually, id};

#[tokio::test(start_paused = true)]
async fn applies_in_dependency_order() {
    let manifests = [
        doc("Db/main", &[], json!({"size": 1})),
        doc("App/web", &["Db/main", "Secret/tls"], json!({"port": 80})),
        doc("Secret/tls", &[], json!({"cert": "x"})),
        doc("Ingress/web", &["App/web"], json!({})),
    ]
    .concat();
    let w = world(&manifests);
    let report = w.engine.sync_once().await.expect("sync runs");
    assert!(report.converged(), "{report}");
    assert_eq!(report.counts()[0], 4);
    let order: Vec<Call> = w.target.changes();
    let pos = |name: &str| {
        order
            .iter()
            .position(|c| *c == Call::Apply(id(name)))
            .unwrap_or_else(|| panic!("{name} applied"))
    };
    assert!(pos("Db/main") < pos("App/web"));
    assert!(pos("Secret/tls") < pos("App/web"));
    assert!(pos("App/web") < pos("Ingress/web"));
    // Health was checked for each wave before the next wave started.
    let calls = w.target.calls();
    let health_db = calls
        .iter()
        .position(|c| *c == Call::Health(id("Db/main")))
        .expect("health");
    assert!(
        health_db
            < calls
                .iter()
                .position(|c| *c == Call::Apply(id("App/web")))
                .expect("apply")
    );

    let again = w.engine.sync_once().await.expect("sync runs");
    assert!(again.converged());
    assert!(!again.plan.has_changes(), "{}", again.plan);
    assert_eq!(w.target.changes().len(), 4, "no-op sync changes nothing");
    assert!(
        again
            .to_string()
            .contains("0 created, 0 updated, 0 deleted, 4 unchanged"),
        "{again}"
    );
    let json = serde_json::to_value(&again).expect("serializes");
    assert_eq!(json["result"], "converged");
    assert_eq!(json["trigger"], "manual");
}

#[tokio::test(start_paused = true)]
async fn a_failure_blocks_only_its_dependents() {
    let manifests = [
        doc("Db/main", &[], json!({})),
        doc("App/web", &["Db/main"], json!({})),
        doc("Ingress/web", &["App/web"], json!({})),
        doc("Cache/redis", &[], json!({})),
        doc("Worker/jobs", &["Cache/redis"], json!({})),
    ]
    .concat();
    let w = world(&manifests);
    w.target.fail_next(&id("Db/main"), 1, false);
    let report = w.engine.sync_once().await.expect("sync runs");
    assert_eq!(report.result, SyncResult::Failed);
    let outcome = |name: &str| {
        report
            .outcomes
            .iter()
            .find(|o| o.id == id(name))
            .map(|o| o.outcome.clone())
            .unwrap_or_else(|| panic!("{name} has an outcome"))
    };
    assert!(matches!(
        outcome("Db/main"),
        Outcome::Failed {
            transient: false,
            ..
        }
    ));
    assert_eq!(
        outcome("App/web"),
        Outcome::Skipped {
            blocked_by: id("Db/main")
        }
    );
    assert_eq!(
        outcome("Ingress/web"),
        Outcome::Skipped {
            blocked_by: id("App/web")
        }
    );
    assert_eq!(outcome("Cache/redis"), Outcome::Created);
    assert_eq!(outcome("Worker/jobs"), Outcome::Created);
    assert!(w.target.get(&id("App/web")).is_none());
    assert!(
        report
            .to_string()
            .contains("App/web: skipped, blocked by Db/main"),
        "{report}"
    );
    // A permanent failure stalls the engine instead of retrying hot.
    let status = w.engine.status();
    assert!(status.is(ConditionKind::Stalled), "{status}");
    assert!(!status.is(ConditionKind::Ready));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_retry_with_backoff_then_succeed() {
    let w = world(&doc("App/web", &[], json!({})));
    w.target.fail_next(&id("App/web"), 3, true);
    let mut events = w.engine.subscribe();
    let run = Agent::start(&w.engine);
    let target = w.target.clone();
    assert!(
        eventually(Duration::from_secs(60), || target
            .get(&id("App/web"))
            .is_some())
        .await,
        "converges after retries"
    );
    assert!(
        eventually(Duration::from_secs(1), || w
            .engine
            .status()
            .is(ConditionKind::Ready))
        .await
    );
    // Attempts at t0, then after 1–2 s, 2–4 s, 4–8 s (jitter adds up to 100%).
    let times: Vec<Instant> = w
        .target
        .timed_calls()
        .into_iter()
        .filter(|(c, _)| *c == Call::Apply(id("App/web")))
        .map(|(_, t)| t)
        .collect();
    assert_eq!(times.len(), 4);
    let bounds = [(1, 2), (2, 4), (4, 8)];
    for (i, (lo, hi)) in bounds.iter().enumerate() {
        let gap = times[i + 1] - times[i];
        assert!(
            gap >= Duration::from_secs(*lo)
                && gap <= Duration::from_secs(*hi) + Duration::from_millis(1),
            "retry {} after {gap:?}, expected {lo}..{hi} s",
            i + 1
        );
    }
    let mut scheduled = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::RetryScheduled { attempt, .. } = e {
            scheduled.push(attempt);
        }
    }
    assert_eq!(scheduled, [1, 2, 3]);
    // Success resets the backoff: a new failure starts again at attempt 1.
    assert!(w.engine.status().retry.is_none());
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_budget_exhausted_marks_the_revision_failed_until_a_new_commit() {
    let cfg = config().retry(RetryPolicy {
        initial: Duration::from_secs(1),
        factor: 2.0,
        max_delay: Duration::from_secs(60),
        max_attempts: 2,
        jitter: true,
    });
    let w = world_with(cfg, &doc("App/web", &[], json!({"v": 1})));
    w.target.fail_next(&id("App/web"), 100, true);
    let run = Agent::start(&w.engine);
    assert!(
        eventually(Duration::from_secs(30), || w
            .engine
            .status()
            .is(ConditionKind::Failed))
        .await
    );
    assert_eq!(
        applies(&w.target, &id("App/web")),
        3,
        "first try + 2 retries"
    );
    // Quiet: polls keep running but the failed revision is not retried.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(applies(&w.target, &id("App/web")), 3);
    // A new commit is tried again (the fault queue still fails it once more).
    w.source
        .commit([("app.yaml", doc("App/web", &[], json!({"v": 2})))]);
    assert!(
        eventually(Duration::from_secs(30), || applies(
            &w.target,
            &id("App/web")
        ) > 3)
        .await
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn render_error_stalls_and_a_new_commit_recovers() {
    let w = world(&doc("App/web", &[], json!({"v": 1})));
    let run = Agent::start(&w.engine);
    assert!(
        eventually(Duration::from_secs(5), || w
            .engine
            .status()
            .is(ConditionKind::Ready))
        .await
    );

    // A cycle: refused whole, last good state stays.
    let broken = [
        doc("A/a", &["A/b"], json!({})),
        doc("A/b", &["A/a"], json!({})),
    ]
    .concat();
    w.source.commit([("app.yaml", broken)]);
    assert!(
        eventually(Duration::from_secs(30), || w
            .engine
            .status()
            .is(ConditionKind::Stalled))
        .await
    );
    let status = w.engine.status();
    assert!(
        status
            .condition(ConditionKind::Stalled)
            .message
            .contains("dependency cycle"),
        "{status}"
    );
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"v": 1})));
    assert!(w.target.get(&id("A/a")).is_none());
    // No hot loop: a stalled revision is not applied on every poll; drift
    // checks keep watching the last good state (tests/repair.rs).
    let polls = w.source.polls();
    let changes = w.target.changes().len();
    let observes = w.target.calls().len();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(w.source.polls() > polls, "polling continues");
    assert!(w.target.calls().len() > observes, "drift checks continue");
    assert_eq!(w.target.changes().len(), changes, "but nothing is applied");

    w.source
        .commit([("app.yaml", doc("App/web", &[], json!({"v": 2})))]);
    assert!(
        eventually(Duration::from_secs(30), || w.target.get(&id("App/web"))
            == Some(json!({"v": 2})))
        .await
    );
    assert!(
        eventually(Duration::from_secs(1), || w
            .engine
            .status()
            .is(ConditionKind::Ready))
        .await
    );
    assert!(!w.engine.status().is(ConditionKind::Stalled));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unreachable_source_keeps_the_last_good_state_and_retries() {
    let w = world(&doc("App/web", &[], json!({"v": 1})));
    w.engine.sync_once().await.expect("first sync");
    w.source.fail_next_polls(3, true);
    let err = w.engine.sync_once().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"v": 1})));
    assert!(w.engine.status().retry.is_some());
}

#[tokio::test(start_paused = true)]
async fn drift_is_reverted_on_the_drift_interval() {
    let w = world(&doc("App/web", &[], json!({"replicas": 2})));
    let mut events = w.engine.subscribe();
    let run = Agent::start(&w.engine);
    assert!(
        eventually(Duration::from_secs(5), || w
            .target
            .get(&id("App/web"))
            .is_some())
        .await
    );
    w.target.edit(&id("App/web"), json!({"replicas": 5}));
    // Git is quiet; the drift check (60 s) finds and reverts it.
    assert!(
        eventually(Duration::from_secs(70), || w.target.get(&id("App/web"))
            == Some(json!({"replicas": 2})))
        .await,
        "drift reverted"
    );
    let mut seen = (false, false);
    while let Ok(e) = events.try_recv() {
        match e {
            Event::DriftDetected {
                id: i,
                policy,
                diff,
            } if i == id("App/web") => {
                assert_eq!(policy, DriftPolicy::Revert);
                assert_eq!(diff.expect("a diff").changes[0].path, "spec.replicas");
                seen.0 = true;
            }
            Event::DriftReverted { id: i } if i == id("App/web") => seen.1 = true,
            Event::SyncStarted { trigger, .. } if seen.0 => assert_eq!(trigger, Trigger::Drift),
            _ => {}
        }
    }
    assert_eq!(seen, (true, true));
    // A deleted resource is drift too.
    w.target.remove(&id("App/web"));
    assert!(
        eventually(Duration::from_secs(70), || w
            .target
            .get(&id("App/web"))
            .is_some())
        .await
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn ignore_reports_drift_and_writeback_hands_it_over() {
    let manifests = [
        annotated("App/ignored", "gitops.rs/drift: ignore", json!({"v": 1})),
        annotated("App/written", "gitops.rs/drift: writeback", json!({"v": 1})),
    ]
    .concat();
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("app.yaml", manifests)]);
    let target = Arc::new(MemoryTarget::new());
    let writeback = Arc::new(MemoryWriteback::new());
    let engine = Engine::builder()
        .source(source)
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .writeback(writeback.clone())
        .config(config())
        .build()
        .expect("builds");
    assert!(engine.sync_once().await.expect("sync").converged());
    target.edit(&id("App/ignored"), json!({"v": 9}));
    target.edit(&id("App/written"), json!({"v": 7}));
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(
        target.get(&id("App/ignored")),
        Some(json!({"v": 9})),
        "ignored drift stays"
    );
    assert_eq!(
        target.get(&id("App/written")),
        Some(json!({"v": 7})),
        "written back, not reverted"
    );
    let drift = engine.status().drift;
    assert_eq!(drift.len(), 2);
    assert!(drift.iter().all(|d| !d.resolved));
    let calls = writeback.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1[0].resource.id, id("App/written"));
    assert_eq!(
        calls[0].1[0].observed.as_ref().map(|o| o.spec.to_value()),
        Some(json!({"v": 7}))
    );
}

#[tokio::test(start_paused = true)]
async fn git_changes_apply_even_under_ignore_policy() {
    let w = world(&annotated(
        "App/web",
        "gitops.rs/drift: ignore",
        json!({"v": 1}),
    ));
    w.engine.sync_once().await.expect("sync");
    w.source.commit([(
        "app.yaml",
        annotated("App/web", "gitops.rs/drift: ignore", json!({"v": 2})),
    )]);
    w.engine.sync_once().await.expect("sync");
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"v": 2})));
}

#[tokio::test(start_paused = true)]
async fn prune_deletes_only_what_the_engine_applied() {
    let w = world(
        &[
            doc("App/a", &[], json!({})),
            doc("App/b", &["App/a"], json!({})),
        ]
        .concat(),
    );
    w.engine.sync_once().await.expect("sync");
    w.target.edit(&id("Foreign/x"), json!({"not": "ours"}));
    w.source
        .commit([("app.yaml", doc("App/c", &[], json!({})))]);
    let report = w.engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    let deletes: Vec<Call> = w
        .target
        .changes()
        .into_iter()
        .filter(|c| matches!(c, Call::Delete(_)))
        .collect();
    assert_eq!(
        deletes,
        [Call::Delete(id("App/b")), Call::Delete(id("App/a"))],
        "dependents first"
    );
    assert_eq!(w.target.get(&id("Foreign/x")), Some(json!({"not": "ours"})));
    assert!(w.target.get(&id("App/c")).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_failed_delete_stays_in_the_inventory_and_is_retried() {
    let w = world(&[doc("App/a", &[], json!({})), doc("App/b", &[], json!({}))].concat());
    w.engine.sync_once().await.expect("sync");
    w.source
        .commit([("app.yaml", doc("App/a", &[], json!({})))]);
    w.target.fail_next(&id("App/b"), 1, true);
    let report = w.engine.sync_once().await.expect("sync");
    assert_eq!(report.result, SyncResult::Failed);
    assert!(w.target.get(&id("App/b")).is_some());
    let report = w.engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert!(w.target.get(&id("App/b")).is_none());
}

#[tokio::test(start_paused = true)]
async fn reconcile_now_skips_the_poll_interval() {
    let cfg = config().interval(Duration::from_secs(3600));
    let w = world_with(cfg, &doc("App/web", &[], json!({"v": 1})));
    let run = Agent::start(&w.engine);
    assert!(
        eventually(Duration::from_secs(5), || w
            .target
            .get(&id("App/web"))
            .is_some())
        .await
    );
    w.source
        .commit([("app.yaml", doc("App/web", &[], json!({"v": 2})))]);
    let asked = Instant::now();
    let handle = w.engine.handle();
    handle.reconcile_now();
    handle.reconcile_now(); // coalesces with the first
    assert!(
        eventually(Duration::from_secs(5), || w.target.get(&id("App/web"))
            == Some(json!({"v": 2})))
        .await
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn suspend_and_resume() {
    let w = world(&doc("App/web", &[], json!({"v": 1})));
    let handle = w.engine.handle();
    handle.suspend();
    let report = w.engine.sync_once().await.expect("suspended is an outcome");
    assert_eq!(report.result, SyncResult::Suspended, "{report}");
    let run = Agent::start(&w.engine);
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(w.target.calls().is_empty(), "nothing while suspended");
    assert!(w.engine.status().suspended);
    handle.resume();
    assert!(
        eventually(Duration::from_secs(2), || w
            .target
            .get(&id("App/web"))
            .is_some())
        .await
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_finishes_in_flight_and_starts_nothing_new() {
    let manifests: String = (0..20)
        .map(|i| doc(&format!("App/a{i:02}"), &[], json!({})))
        .collect();
    let cfg = config().concurrency(2);
    let w = world_with(cfg, &manifests);
    w.target.set_latency(Duration::from_secs(1));
    let run = Agent::start(&w.engine);
    // Observe takes 1 s, then applies run two at a time, 1 s each.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let started = w.target.changes().len();
    assert_eq!(started, 4, "two batches of two have started");
    run.stop().await;
    assert_eq!(w.target.changes().len(), 4, "nothing new started");
    assert_eq!(w.target.contents().len(), 4, "in-flight applies finished");
}

#[tokio::test(start_paused = true)]
async fn a_second_shutdown_aborts() {
    let w = world(&doc("App/web", &[], json!({})));
    w.target.set_latency(Duration::from_secs(600));
    let run = Agent::start(&w.engine);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handle = w.engine.handle();
    handle.shutdown();
    handle.shutdown();
    let started = Instant::now();
    run.join().await.expect("run ends");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn plan_is_a_dry_run() {
    let w = world(&doc("App/web", &[], json!({})));
    let plan = w.engine.plan().await.expect("plans");
    assert_eq!(plan.summary.create, 1);
    assert!(w.target.changes().is_empty());
    assert!(w.target.contents().is_empty());
}

#[tokio::test(start_paused = true)]
async fn calls_that_outlive_their_timeout_fail_transiently() {
    let cfg = config().call_timeout(Duration::from_secs(5));
    let w = world_with(cfg, &doc("App/slow", &[], json!({})));

    // A hung apply: the resource fails with a transient timeout, nothing is written.
    w.target.set_apply_latency(Duration::from_secs(60));
    let report = w.engine.sync_once().await.expect("observe completes");
    let outcome = &report.outcomes[0].outcome;
    assert!(
        matches!(outcome, Outcome::Failed { transient: true, error } if error.contains("timed out after 5s")),
        "{report}"
    );
    assert!(w.target.get(&id("App/slow")).is_none());

    // A hung observe: the reconcile fails transiently instead of hanging.
    w.target.set_apply_latency(Duration::ZERO);
    w.target.set_latency(Duration::from_secs(60));
    let started = Instant::now();
    let err = w.engine.sync_once().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("timed out after 5s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// `Duration::MAX` for the intervals and the health timeout means "never by
/// itself": the agent syncs at start and on triggers, and nothing panics
/// adding it to the clock.
#[tokio::test(start_paused = true)]
async fn endless_intervals_and_timeouts_mean_only_on_request() {
    let w = world_with(
        config()
            .interval(Duration::MAX)
            .interval_jitter(0.5)
            .drift_interval(Duration::MAX)
            .health_timeout(Duration::MAX),
        &doc("App/web", &[], json!({"v": 1})),
    );
    let handle = w.engine.handle();
    let agent = Agent::start(&w.engine);
    assert!(
        eventually(Duration::from_secs(5), || w
            .target
            .get(&id("App/web"))
            .is_some())
        .await,
        "the first sync runs at start"
    );
    w.source
        .commit([("app.yaml", doc("App/web", &[], json!({"v": 2})))]);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        w.target.get(&id("App/web")),
        Some(json!({"v": 1})),
        "no poll by itself"
    );
    handle.reconcile_now();
    assert!(
        eventually(Duration::from_secs(5), || {
            w.target.get(&id("App/web")) == Some(json!({"v": 2}))
        })
        .await,
        "a trigger deploys"
    );
    agent.stop().await;
}

#[test]
fn a_zero_interval_is_refused_at_build() {
    for (name, config) in [
        ("interval", config().interval(Duration::ZERO)),
        ("drift_interval", config().drift_interval(Duration::ZERO)),
    ] {
        let err = Engine::builder()
            .source(Arc::new(MemorySource::new("main")))
            .render(Arc::new(ManifestRender::new()))
            .target(Arc::new(MemoryTarget::new()))
            .config(config)
            .build()
            .expect_err("zero busy-loops");
        assert!(
            err.to_string()
                .contains(&format!("{name} must be longer than zero")),
            "{err}"
        );
    }
}

/// Every `SyncStarted` has its `SyncFinished`, a render error included.
#[tokio::test(start_paused = true)]
async fn a_sync_that_fails_after_it_started_still_finishes() {
    let w = world(&doc("App/a", &["App/b"], json!({})));
    w.source.commit([(
        "app.yaml",
        [
            doc("App/a", &["App/b"], json!({})),
            doc("App/b", &["App/a"], json!({})),
        ]
        .concat(),
    )]);
    let mut events = w.engine.subscribe();
    let err = w.engine.sync_once().await.expect_err("a cycle");
    assert!(err.to_string().contains("cycle"), "{err}");
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            Event::SyncStarted { .. } => seen.push("started".to_owned()),
            Event::SyncFinished { result, .. } => seen.push(format!("finished {result}")),
            _ => {}
        }
    }
    assert_eq!(seen, ["started", "finished failed"]);
}
