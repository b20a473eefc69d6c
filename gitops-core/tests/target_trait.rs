//! Default methods of the Target trait and error classification.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gitops_core::{Health, Observed, Resource, ResourceId, Target, TargetError, async_trait};
use serde_json::json;

/// Observes resolve in reverse order of their start; tracks peak concurrency.
struct SlowTarget {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

#[async_trait]
impl Target for SlowTarget {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let n: u64 = id
            .name()
            .parse()
            .map_err(|_| TargetError::permanent(id, "not a number"))?;
        tokio::time::sleep(Duration::from_millis(100 - n % 100)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if n == 7 {
            return Err(TargetError::transient(id, "busy"));
        }
        Ok(n.is_multiple_of(2).then(|| Observed::new(json!(n))))
    }
    async fn apply(&self, _: &Resource) -> Result<(), TargetError> {
        Ok(())
    }
    async fn delete(&self, _: &ResourceId) -> Result<(), TargetError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn observe_many_keeps_order_and_bounds_concurrency() {
    let target = SlowTarget {
        in_flight: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    };
    let ids: Vec<ResourceId> = (0..50)
        .map(|i| ResourceId::new("N", i.to_string()).expect("valid"))
        .collect();
    let results = target.observe_many(&ids).await;
    assert_eq!(results.len(), 50);
    for (i, r) in results.iter().enumerate() {
        match r {
            Err(e) => {
                assert_eq!(i, 7);
                assert!(e.is_transient());
                assert_eq!(e.id(), &ids[7]);
                assert_eq!(e.to_string(), "N/7: busy (transient)");
            }
            Ok(Some(o)) => assert_eq!(o.spec, json!(i)),
            Ok(None) => assert_eq!(i % 2, 1),
        }
    }
    assert_eq!(
        target.peak.load(Ordering::SeqCst),
        gitops_core::target::DEFAULT_OBSERVE_CONCURRENCY
    );
    assert_eq!(
        target.health(&ids[0]).await.expect("default health"),
        Health::Healthy
    );
}

#[test]
fn error_classification() {
    let id = ResourceId::new("A", "x").expect("valid");
    assert!(
        TargetError::Timeout {
            id: id.clone(),
            after: Duration::from_secs(1)
        }
        .is_transient()
    );
    assert!(!TargetError::permanent(&id, "no").is_transient());
    assert!(
        !TargetError::InvalidSpec {
            id: id.clone(),
            message: "bad".into()
        }
        .is_transient()
    );
}

#[test]
fn error_helpers_keep_the_id_and_the_typed_source() {
    let id: gitops_core::ResourceId = "Row/users".parse().expect("id");
    let invalid = gitops_core::TargetError::invalid(&id, "port must be a number");
    assert!(!invalid.is_transient());
    assert_eq!(
        invalid.to_string(),
        "Row/users: invalid spec: port must be a number"
    );
    let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "database busy");
    let e = gitops_core::TargetError::transient(&id, "insert failed").with_source(io);
    assert!(e.is_transient());
    assert_eq!(e.id(), &id);
    let cause = std::error::Error::source(&e).expect("the source is kept");
    assert_eq!(
        cause.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::TimedOut)
    );
    let value: gitops_core::serde_json::Value = gitops_core::serde_json::json!({"a": 1});
    assert_eq!(value["a"], 1, "serde_json is reachable through gitops_core");
}

#[test]
fn spec_as_names_the_failing_field_path() {
    #[derive(Debug, serde::Deserialize)]
    struct Port {
        #[allow(dead_code)]
        number: u16,
    }
    #[derive(Debug, serde::Deserialize)]
    struct Service {
        #[allow(dead_code)]
        ports: Vec<Port>,
    }
    let id: gitops_core::ResourceId = "Service/web".parse().expect("id");
    let good = gitops_core::Resource::new(
        id.clone(),
        serde_json::json!({"ports": [{"number": 80}, {"number": 443}]}),
    );
    assert_eq!(good.spec_as::<Service>().expect("typed").ports.len(), 2);
    let bad = gitops_core::Resource::new(
        id,
        serde_json::json!({"ports": [{"number": 80}, {"number": "443"}]}),
    );
    let err = bad.spec_as::<Service>().expect_err("a string port");
    assert!(matches!(err, gitops_core::TargetError::InvalidSpec { .. }));
    assert!(
        err.to_string()
            .starts_with("Service/web: invalid spec: spec.ports[1].number: invalid type"),
        "{err}"
    );
}

/// A synchronous target behind `Blocking` does not stall the runtime: on a
/// one-thread runtime a ticker keeps ticking while `apply` blocks; a panic
/// in a call is a permanent error, not a crash.
#[test]
fn blocking_calls_run_off_the_async_worker() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use gitops_core::{Blocking, Observed, Resource, ResourceId, SyncTarget, Target, TargetError};

    struct Slow;
    impl SyncTarget for Slow {
        fn observe(&self, _: &ResourceId) -> Result<Option<Observed>, TargetError> {
            panic!("the client crashed")
        }
        fn apply(&self, _: &Resource) -> Result<(), TargetError> {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        }
        fn delete(&self, _: &ResourceId) -> Result<(), TargetError> {
            Ok(())
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let target = Blocking::new(Slow);
        let id: ResourceId = "Row/a".parse().expect("id");
        target
            .apply(&Resource::new(id.clone(), serde_json::json!({})))
            .await
            .expect("apply");
        assert!(
            ticks.load(Ordering::SeqCst) >= 5,
            "the runtime kept running while apply blocked"
        );
        let err = target.observe(&id).await.expect_err("a panic");
        assert!(
            !err.is_transient() && err.to_string().contains("the target's call failed"),
            "{err}"
        );
        ticker.abort();
    });
}
