//! Property tests for ids, the dependency graph and the planner.

use std::collections::{BTreeMap, BTreeSet};

use gitops_core::graph::DependencyGraph;
use gitops_core::model::Inventory;
use gitops_core::plan::{Change, Planner};
use gitops_core::{DesiredState, Observed, Resource, ResourceId, Revision};
use proptest::prelude::*;
use serde_json::json;

fn part(slash: bool) -> impl Strategy<Value = String> {
    // Mostly short ASCII with separators, sometimes arbitrary non-control Unicode.
    // Never a leading `-` (ids refuse it: it would read as an option).
    let chars = if slash {
        "[a-z0-9/._@:][a-z0-9/._@:-]{0,11}"
    } else {
        "[a-z0-9._@:][a-z0-9._@:-]{0,11}"
    };
    prop_oneof![
        4 => chars.prop_map(String::from),
        1 => "[^-\\p{C}]\\PC{0,7}".prop_map(move |s: String| if slash { s } else { s.replace('/', "x") }),
    ]
}

fn any_id() -> impl Strategy<Value = ResourceId> {
    (part(false), proptest::option::of(part(false)), part(true)).prop_map(|(k, ns, n)| {
        let id = ResourceId::with_namespace(k.clone(), ns.clone(), n.clone())
            .expect("strategy yields valid parts");
        assert_eq!(
            (id.kind(), id.namespace(), id.name()),
            (k.as_str(), ns.as_deref(), n.as_str())
        );
        id
    })
}

proptest! {
    #[test]
    fn id_string_form_round_trips(id in any_id()) {
        let s = id.to_string();
        let back: ResourceId = s.parse().expect("displayed ids parse");
        prop_assert_eq!(&back, &id);
        prop_assert_eq!(
            (back.kind(), back.namespace(), back.name()),
            (id.kind(), id.namespace(), id.name())
        );
        let json = serde_json::to_string(&id).expect("serializes");
        prop_assert_eq!(serde_json::from_str::<ResourceId>(&json).expect("deserializes"), id);
    }
}

/// A random DAG: edges only from lower to higher index, then nodes shuffled.
fn dag() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (1usize..60).prop_flat_map(|n| {
        let edges = proptest::collection::vec((0..n, 0..n), 0..n * 3).prop_map(|pairs| {
            pairs
                .into_iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (a.min(b), a.max(b)))
                .collect::<Vec<_>>()
        });
        (
            Just(n),
            edges,
            Just(()).prop_perturb(move |_, mut rng| {
                let mut perm: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    perm.swap(i, rng.random_range(0..=i));
                }
                perm
            }),
        )
            .prop_map(|(n, edges, perm)| {
                (
                    n,
                    edges.into_iter().map(|(a, b)| (perm[a], perm[b])).collect(),
                )
            })
    })
}

/// Independent cycle check: repeatedly remove nodes without incoming edges.
fn has_cycle(n: usize, edges: &[(usize, usize)]) -> bool {
    let mut alive: BTreeSet<usize> = (0..n).collect();
    loop {
        let removable: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&v| !edges.iter().any(|&(a, b)| b == v && alive.contains(&a)))
            .collect();
        if removable.is_empty() {
            return !alive.is_empty();
        }
        for v in removable {
            alive.remove(&v);
        }
    }
}

proptest! {
    #[test]
    fn waves_respect_every_edge_and_partition_nodes((n, edges) in dag()) {
        let g = DependencyGraph::new(n, edges.iter().copied()).expect("a DAG has no cycle");
        for &(a, b) in &edges {
            prop_assert!(g.wave_of(a) < g.wave_of(b), "edge {a}->{b}");
        }
        let mut seen: Vec<usize> = g.waves().iter().flatten().copied().collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..n).collect::<Vec<_>>());
        for wave in g.waves() {
            prop_assert!(wave.windows(2).all(|w| w[0] < w[1]), "deterministic order");
        }
    }

    #[test]
    fn cycles_are_found_and_reported_exactly(
        n in 1usize..25,
        raw in proptest::collection::vec((0usize..25, 0usize..25), 0..60),
    ) {
        let edges: Vec<(usize, usize)> = raw.into_iter().map(|(a, b)| (a % n, b % n)).collect();
        let expected = has_cycle(n, &edges);
        match DependencyGraph::new(n, edges.iter().copied()) {
            Ok(_) => prop_assert!(!expected, "missed a cycle"),
            Err(err) => {
                prop_assert!(expected, "reported a cycle that does not exist");
                let c = &err.cycle;
                prop_assert!(!c.is_empty());
                let distinct: BTreeSet<_> = c.iter().collect();
                prop_assert_eq!(distinct.len(), c.len(), "a simple cycle");
                // c[i] depends on c[i+1]: an edge c[i+1] -> c[i]; the last depends on the first.
                for i in 0..c.len() {
                    let (node, dep) = (c[i], c[(i + 1) % c.len()]);
                    prop_assert!(edges.contains(&(dep, node)), "missing edge {dep}->{node}");
                }
            }
        }
    }
}

/// A model of the target: id -> spec.
type Model = BTreeMap<ResourceId, gitops_core::Spec>;

fn rid(i: usize) -> ResourceId {
    ResourceId::new("Kind", format!("r{i}")).expect("valid")
}

#[derive(Debug, Clone)]
struct World {
    desired: Vec<(usize, u8, Vec<usize>)>,
    target: BTreeMap<usize, u8>,
    inventory: BTreeSet<usize>,
}

fn world() -> impl Strategy<Value = World> {
    let desired = proptest::collection::btree_map(
        0usize..40,
        (0u8..3, proptest::collection::vec(0usize..40, 0..3)),
        0..25,
    )
    .prop_map(|m| {
        let ids: Vec<usize> = m.keys().copied().collect();
        m.into_iter()
            .map(|(i, (v, deps))| {
                // Depend only on lower desired ids: acyclic and known.
                let deps = deps
                    .into_iter()
                    .filter(|d| *d < i && ids.contains(d))
                    .collect();
                (i, v, deps)
            })
            .collect::<Vec<_>>()
    });
    (
        desired,
        proptest::collection::btree_map(0usize..40, 0u8..3, 0..25),
        proptest::collection::btree_set(0usize..40, 0..25),
    )
        .prop_map(|(desired, target, inventory)| World {
            desired,
            target,
            inventory,
        })
}

fn build(world: &World) -> (DesiredState, Model, Inventory) {
    let resources = world
        .desired
        .iter()
        .map(|(i, v, deps)| {
            let mut r = Resource::new(rid(*i), json!({ "v": v }));
            r.depends_on = deps.iter().map(|d| rid(*d)).collect();
            r
        })
        .collect();
    let desired =
        DesiredState::new(Revision::new("main", "0"), resources).expect("valid by construction");
    let model = world
        .target
        .iter()
        .map(|(i, v)| (rid(*i), json!({ "v": v }).into()))
        .collect();
    let mut inventory = Inventory::new();
    for i in &world.inventory {
        inventory.record(&Resource::new(rid(*i), json!({})));
    }
    (desired, model, inventory)
}

fn observe(desired: &DesiredState, model: &Model) -> Vec<Option<Observed>> {
    desired
        .resources()
        .iter()
        .map(|r| model.get(&r.id).cloned().map(Observed::new))
        .collect()
}

proptest! {
    #[test]
    fn applying_a_plan_converges_and_touches_only_the_inventory(world in world()) {
        let (desired, mut model, mut inventory) = build(&world);
        let before = model.clone();
        let plan = Planner::new()
            .plan(&desired, &observe(&desired, &model), &inventory)
            .expect("observations line up");

        for change in plan.changes() {
            match &change.change {
                Change::Create { .. } | Change::Update { .. } => {
                    let r = desired.get(&change.id).expect("applies are desired");
                    model.insert(r.id.clone(), r.spec.clone());
                    inventory.record(r);
                }
                Change::Delete => {
                    prop_assert!(inventory.contains(&change.id), "delete outside the inventory");
                    prop_assert!(!desired.contains(&change.id));
                    model.remove(&change.id);
                    inventory.remove(&change.id);
                }
                Change::Unchanged => inventory.record(desired.get(&change.id).expect("desired")),
            }
        }
        for r in desired.resources() {
            prop_assert_eq!(model.get(&r.id), Some(&r.spec));
        }
        // Nothing outside desired state or inventory was touched.
        for (id, spec) in &before {
            if !desired.contains(id) && !world.inventory.iter().any(|i| rid(*i) == *id) {
                prop_assert_eq!(model.get(id), Some(spec));
            }
        }
        let again = Planner::new()
            .plan(&desired, &observe(&desired, &model), &inventory)
            .expect("observations line up");
        prop_assert!(!again.has_changes(), "second plan: {again}");
        prop_assert!(again.changes().all(|c| c.change == Change::Unchanged));
    }
}
