//! The planner: desired state + observations + inventory -> [`Plan`].

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diff::Diff;
use crate::graph::DependencyGraph;
use crate::id::ResourceId;
use crate::model::{Inventory, Observed, Resource, Revision};
use crate::render::{DesiredState, RenderWarning};
use crate::secret::DigestKey;
use crate::spec::Spec;
use crate::target::Target;

mod text;

pub use text::PlanText;

/// What the plan does to one resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Change {
    /// Absent in the target: create it with this spec (the plan shows its
    /// attributes).
    Create {
        /// The spec to create (shared with the desired state, not a copy).
        spec: Spec,
    },
    /// Present but different: update these fields.
    Update {
        /// The fields that differ.
        diff: Diff,
        /// Whether Git changed the resource or the target drifted from it.
        cause: Cause,
    },
    /// In the inventory but gone from Git: delete it.
    Delete,
    /// Already as desired.
    Unchanged,
}

/// Why an update is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// Git changed the resource since it was last applied (or nothing was
    /// recorded for it).
    Git,
    /// Git did not change it: the target drifted from what was applied, and
    /// the update repairs it.
    Drift,
}

impl Cause {
    /// [`Drift`](Cause::Drift) when the inventory recorded exactly this spec
    /// as applied (Git did not change it since), else [`Git`](Cause::Git).
    /// An entry still being created (empty digest) is not drift.
    pub fn of(inventory: &Inventory, resource: &Resource) -> Cause {
        Self::of_digest(inventory, &resource.id, &resource.digest())
    }

    /// As [`of`](Cause::of), for the digest the engine stored for `id`
    /// (keyed for a sensitive resource).
    pub fn of_digest(inventory: &Inventory, id: &ResourceId, digest: &str) -> Cause {
        match inventory.get(id) {
            Some(entry) if !entry.digest.is_empty() && entry.digest == digest => Cause::Drift,
            _ => Cause::Git,
        }
    }
}

/// One resource and what happens to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedChange {
    /// The resource.
    pub id: ResourceId,
    /// The action.
    #[serde(flatten)]
    pub change: Change,
}

/// Changes that can run concurrently: nothing in a wave depends on another
/// member of the same or a later wave.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Wave {
    /// The changes, ordered by id.
    pub changes: Vec<PlannedChange>,
}

/// Counts of each kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Resources to create.
    pub create: usize,
    /// Resources to update.
    pub update: usize,
    /// Resources to delete.
    pub delete: usize,
    /// Resources already as desired.
    pub unchanged: usize,
    /// Resources gone from Git but kept because pruning is disabled for them.
    pub retained: usize,
}

/// What a sync would do, wave by wave. `Display` prints a human plan in the
/// style of `terraform plan`; `Serialize` gives the same as JSON for CI tools.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The revision planned for.
    pub revision: Revision,
    /// Apply waves, in order; every desired resource appears once.
    pub waves: Vec<Wave>,
    /// Delete waves, in order (dependents before their dependencies).
    pub prune: Vec<Wave>,
    /// Inventory ids gone from Git whose prune is disabled: left in place.
    pub retained: Vec<ResourceId>,
    /// Counts of each kind of change.
    pub summary: Summary,
    /// Set by [`Engine::plan`](crate::Engine::plan) when a sync of this plan
    /// would not apply it: refused (an empty revision) or held for
    /// confirmation (over the deletion or change limits), and how to go on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// What rendered but may not mean what its author meant (YAML values
    /// that YAML 1.1 and 1.2 read differently), naming file and line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<RenderWarning>,
}

impl Plan {
    /// A plan with nothing in it, for `revision` (what a sync that did not
    /// start reports).
    pub fn empty(revision: Revision) -> Self {
        Self {
            revision,
            waves: Vec::new(),
            prune: Vec::new(),
            retained: Vec::new(),
            summary: Summary::default(),
            held: None,
            warnings: Vec::new(),
        }
    }

    /// Whether applying the plan would change the target.
    pub fn has_changes(&self) -> bool {
        let s = &self.summary;
        s.create + s.update + s.delete > 0
    }

    /// Every planned change in execution order: apply waves, then prune waves.
    pub fn changes(&self) -> impl Iterator<Item = &PlannedChange> {
        self.waves
            .iter()
            .chain(&self.prune)
            .flat_map(|w| w.changes.iter())
    }
}

/// The plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The observations do not line up with the desired resources.
    #[error("{observed} observations for {desired} desired resources")]
    ObservationCount {
        /// Desired resources.
        desired: usize,
        /// Observations given.
        observed: usize,
    },
    /// [`PlanBuilder::finish`] was called before this resource was observed.
    #[error("{id} was not observed")]
    NotObserved {
        /// The resource.
        id: ResourceId,
    },
}

/// Computes plans. By default specs are compared as JSON; with a target, its
/// [`Target::differs`] decides.
#[derive(Default, Clone, Copy)]
pub struct Planner<'t> {
    target: Option<&'t dyn Target>,
    key: Option<&'t DigestKey>,
}

/// `target.differs`, redacted for a sensitive resource (see
/// [`Diff::redacted`]): what every diff the engine shows goes through.
pub fn differs(target: &dyn Target, desired: &Resource, observed: &Observed) -> Option<Diff> {
    let diff = target.differs(desired, observed)?;
    Some(if desired.sensitive {
        diff.redacted()
    } else {
        diff
    })
}

impl fmt::Debug for Planner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Planner")
            .field("target_differs", &self.target.is_some())
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

impl<'t> Planner<'t> {
    /// A planner that compares specs as JSON.
    pub fn new() -> Self {
        Self {
            target: None,
            key: None,
        }
    }

    /// A planner that asks `target.differs` whether a resource changed.
    pub fn with_target(target: &'t dyn Target) -> Self {
        Self {
            target: Some(target),
            key: None,
        }
    }

    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        match self.target {
            Some(t) => differs(t, desired, observed),
            None => {
                let diff = Diff::specs(&observed.spec, &desired.spec)?;
                Some(if desired.sensitive {
                    diff.redacted()
                } else {
                    diff
                })
            }
        }
    }

    /// Keys the digests of sensitive resources with `key` when telling
    /// drift from a Git change (as the engine stores them).
    pub fn with_digest_key(mut self, key: &'t DigestKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Plans `desired` against `observed` (one entry per desired resource, in
    /// [`DesiredState::resources`] order) and the inventory of what was applied.
    ///
    /// Deletes are planned only for inventory ids missing from `desired`.
    pub fn plan(
        &self,
        desired: &DesiredState,
        observed: &[Option<Observed>],
        inventory: &Inventory,
    ) -> Result<Plan, PlanError> {
        if observed.len() != desired.len() {
            return Err(PlanError::ObservationCount {
                desired: desired.len(),
                observed: observed.len(),
            });
        }
        let mut builder = self.builder(desired);
        for (position, o) in observed.iter().enumerate() {
            builder.observe(position, o.as_ref());
        }
        builder.finish(inventory)
    }

    /// A plan fed one observation at a time, so a caller can observe in
    /// chunks and drop each observed spec as soon as it is compared: peak
    /// memory then holds the desired state and the diffs, not a second copy
    /// of every spec.
    pub fn builder<'d>(&self, desired: &'d DesiredState) -> PlanBuilder<'d, 't> {
        PlanBuilder {
            planner: *self,
            desired,
            changes: vec![None; desired.len()],
        }
    }
}

/// An incremental plan; see [`Planner::builder`].
pub struct PlanBuilder<'d, 't> {
    planner: Planner<'t>,
    desired: &'d DesiredState,
    changes: Vec<Option<Change>>,
}

impl fmt::Debug for PlanBuilder<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanBuilder")
            .field("desired", &self.desired.len())
            .field(
                "observed",
                &self.changes.iter().filter(|c| c.is_some()).count(),
            )
            .finish()
    }
}

impl PlanBuilder<'_, '_> {
    /// Records the observation of the resource at `position` in
    /// [`DesiredState::resources`] (`None`: absent from the target).
    /// A position out of range is ignored.
    pub fn observe(&mut self, position: usize, observed: Option<&Observed>) {
        let (Some(resource), Some(slot)) = (
            self.desired.resources().get(position),
            self.changes.get_mut(position),
        ) else {
            return;
        };
        *slot = Some(match observed {
            None => Change::Create {
                spec: if resource.sensitive {
                    crate::secret::redact_spec(&resource.spec)
                } else {
                    resource.spec.clone()
                },
            },
            Some(o) => match self.planner.differs(resource, o) {
                // The cause needs the inventory: `finish` sets it.
                Some(diff) => Change::Update {
                    diff,
                    cause: Cause::Git,
                },
                None => Change::Unchanged,
            },
        });
    }

    /// Finishes the plan; deletes come from `inventory` ids missing from the
    /// desired state. Fails if a desired resource was never observed.
    pub fn finish(self, inventory: &Inventory) -> Result<Plan, PlanError> {
        let desired = self.desired;
        let resources = desired.resources();
        let mut changes = self.changes;
        if let Some(missing) = changes.iter().position(Option::is_none) {
            return Err(PlanError::NotObserved {
                id: resources[missing].id.clone(),
            });
        }
        let mut summary = Summary::default();
        let waves = desired
            .graph()
            .waves()
            .iter()
            .map(|wave| Wave {
                changes: wave
                    .iter()
                    .map(|&i| {
                        let mut change = changes[i].take().unwrap_or(Change::Unchanged);
                        match &mut change {
                            Change::Create { .. } => summary.create += 1,
                            Change::Update { cause, .. } => {
                                summary.update += 1;
                                *cause = match self.planner.key {
                                    Some(key) => Cause::of_digest(
                                        inventory,
                                        &resources[i].id,
                                        &key.digest(&resources[i]),
                                    ),
                                    None => Cause::of(inventory, &resources[i]),
                                };
                            }
                            Change::Delete => summary.delete += 1,
                            Change::Unchanged => summary.unchanged += 1,
                        }
                        PlannedChange {
                            id: resources[i].id.clone(),
                            change,
                        }
                    })
                    .collect(),
            })
            .collect();

        let mut retained = Vec::new();
        let mut doomed: Vec<(&ResourceId, &[ResourceId])> = Vec::new();
        for (id, entry) in inventory.iter() {
            if desired.contains(id) {
                continue;
            }
            if entry.prune {
                doomed.push((id, &entry.depends_on));
            } else {
                retained.push(id.clone());
            }
        }
        summary.delete = doomed.len();
        summary.retained = retained.len();
        let prune = delete_waves(&doomed);
        Ok(Plan {
            revision: desired.revision().clone(),
            waves,
            prune,
            retained,
            summary,
            held: None,
            warnings: desired.warnings().to_vec(),
        })
    }
}

/// Reverse topological order over the deleted ids, using the dependencies
/// recorded in the inventory. Only edges among deleted ids matter.
fn delete_waves(doomed: &[(&ResourceId, &[ResourceId])]) -> Vec<Wave> {
    if doomed.is_empty() {
        return Vec::new();
    }
    let position: HashMap<&ResourceId, usize> = doomed
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let edges = doomed.iter().enumerate().flat_map(|(i, (_, deps))| {
        deps.iter()
            .filter_map(|d| position.get(d))
            .map(move |&d| (d, i))
    });
    let to_wave = |nodes: &[usize]| Wave {
        changes: nodes
            .iter()
            .map(|&i| PlannedChange {
                id: doomed[i].0.clone(),
                change: Change::Delete,
            })
            .collect(),
    };
    match DependencyGraph::new(doomed.len(), edges) {
        Ok(graph) => graph.waves().iter().rev().map(|w| to_wave(w)).collect(),
        // Inventories are recorded from acyclic states; if one is damaged,
        // still delete everything, in id order.
        Err(_) => vec![to_wave(&(0..doomed.len()).collect::<Vec<_>>())],
    }
}
