//! A state-machine model test of the engine: random sequences of commits,
//! external drift, injected faults and reconciles. Whatever happened, once
//! faults stop one reconcile makes the target equal the desired state, and
//! nothing the engine did not create is ever touched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gitops_core::testing::{Call, MemorySource, MemoryTarget};
use gitops_core::{Engine, EngineConfig, ManifestRender, ResourceId};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use serde_json::json;

/// Resource names are `App/r0`..`App/r5`; foreign ones live under `Foreign/`.
const UNIVERSE: u8 = 6;

fn rid(i: u8) -> ResourceId {
    ResourceId::new("App", format!("r{i}")).expect("valid")
}

fn foreign(i: u8) -> ResourceId {
    ResourceId::new("Foreign", format!("f{i}")).expect("valid")
}

/// A commit: resource index -> (value, dependencies on lower indices).
type Desired = BTreeMap<u8, (u8, Vec<u8>)>;

#[derive(Debug, Clone)]
enum Step {
    Commit(Desired),
    Drift(u8, u8),
    ExternalDelete(u8),
    Fault(u8, usize, bool),
    Reconcile,
}

#[derive(Debug, Clone, Default)]
struct Model {
    desired: Desired,
    committed: bool,
}

struct Reference;

fn desired_strategy() -> impl Strategy<Value = Desired> {
    proptest::collection::btree_map(
        0..UNIVERSE,
        (0u8..3, proptest::collection::vec(0..UNIVERSE, 0..2)),
        0..5,
    )
    .prop_map(|m| {
        let keys: BTreeSet<u8> = m.keys().copied().collect();
        m.into_iter()
            .map(|(k, (v, deps))| {
                let deps = deps
                    .into_iter()
                    .filter(|d| *d < k && keys.contains(d))
                    .collect();
                (k, (v, deps))
            })
            .collect()
    })
}

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Step> {
        prop_oneof![
            3 => desired_strategy().prop_map(Step::Commit),
            2 => (0..UNIVERSE, 5u8..8).prop_map(|(i, v)| Step::Drift(i, v)),
            1 => (0..UNIVERSE).prop_map(Step::ExternalDelete),
            2 => (0..UNIVERSE, 1usize..3, any::<bool>()).prop_map(|(i, n, t)| Step::Fault(i, n, t)),
            4 => Just(Step::Reconcile),
        ]
        .boxed()
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        if let Step::Commit(d) = step {
            state.desired = d.clone();
            state.committed = true;
        }
        state
    }
}

struct Sut {
    rt: tokio::runtime::Runtime,
    source: Arc<MemorySource>,
    target: Arc<MemoryTarget>,
    engine: Engine,
    /// Every id ever committed to Git.
    ever_desired: BTreeSet<ResourceId>,
}

fn manifests(desired: &Desired) -> String {
    desired
        .iter()
        .map(|(i, (v, deps))| {
            let deps: Vec<String> = deps.iter().map(|d| format!("App/r{d}")).collect();
            format!(
                "---\nkind: App\nmetadata: {{ name: r{i}, dependsOn: [{}] }}\nspec: {{ v: {v} }}\n",
                deps.join(", ")
            )
        })
        .collect()
}

struct EngineModel;

impl StateMachineTest for EngineModel {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut {
        let source = Arc::new(MemorySource::new("main"));
        let target = Arc::new(MemoryTarget::new());
        for i in 0..3 {
            target.edit(&foreign(i), json!({"owner": "someone else"}));
        }
        let engine = Engine::builder()
            .source(source.clone())
            .render(Arc::new(ManifestRender::new()))
            .target(target.clone())
            // The model explores deleting everything; the guard has its own test.
            .config(EngineConfig::default().allow_empty(true))
            .build()
            .expect("builds");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        Sut {
            rt,
            source,
            target,
            engine,
            ever_desired: BTreeSet::new(),
        }
    }

    fn apply(mut sut: Sut, _: &Model, step: Step) -> Sut {
        match step {
            Step::Commit(d) => {
                sut.ever_desired.extend(d.keys().map(|i| rid(*i)));
                sut.source.commit([("app.yaml", manifests(&d))]);
            }
            Step::Drift(i, v) => sut.target.edit(&rid(i), json!({"v": v})),
            Step::ExternalDelete(i) => sut.target.remove(&rid(i)),
            Step::Fault(i, n, transient) => sut.target.fail_next(&rid(i), n, transient),
            Step::Reconcile => {
                // Failures are allowed here; convergence is checked at teardown.
                let _ = sut.rt.block_on(sut.engine.sync_once());
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, _: &Model) {
        for i in 0..3 {
            assert_eq!(
                sut.target.get(&foreign(i)),
                Some(json!({"owner": "someone else"}))
            );
        }
        for call in sut.target.changes() {
            let (Call::Apply(id) | Call::Delete(id)) = call else {
                continue;
            };
            assert!(sut.ever_desired.contains(&id), "touched {id}, never in Git");
        }
    }

    fn teardown(sut: Sut, model: Model) {
        if !model.committed {
            return;
        }
        sut.target.clear_faults();
        let report = sut.rt.block_on(sut.engine.sync_once()).expect("sync runs");
        assert!(report.converged(), "{report}");
        let mut expected: BTreeMap<ResourceId, serde_json::Value> = model
            .desired
            .iter()
            .map(|(i, (v, _))| (rid(*i), json!({"v": v})))
            .collect();
        for i in 0..3 {
            expected.insert(foreign(i), json!({"owner": "someone else"}));
        }
        // Anything else in the target was created behind the engine's back
        // after the engine last deleted it (or never applied it): the engine
        // leaves it, and its own last word on that id was a delete.
        let contents = sut.target.contents();
        let changes = sut.target.changes();
        for (id, value) in &contents {
            if !expected.contains_key(id) {
                let last = changes
                    .iter()
                    .rev()
                    .find(|c| matches!(c, Call::Apply(i) | Call::Delete(i) if i == id));
                assert!(
                    !matches!(last, Some(Call::Apply(_))),
                    "{id} = {value}: applied by the engine, no longer desired, not pruned"
                );
            }
        }
        for (id, value) in &expected {
            assert_eq!(contents.get(id), Some(value), "{id}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn engine_converges_after_faults_stop(sequential 1..25 => EngineModel);
}
