//! In-memory [`Source`], [`Target`] and [`Writeback`] with fault injection,
//! for fast engine tests — ours and yours (cargo feature `testing`).
//!
//! ```
//! use gitops_core::testing::{Call, MemorySource, MemoryTarget};
//! use gitops_core::{Source, Target, Resource, ResourceId};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let source = MemorySource::new("main");
//! let rev = source.commit([("a.yaml", "kind: A\nmetadata: { name: a }\n")]);
//! assert_eq!(source.poll().await?, rev);
//!
//! let target = MemoryTarget::new();
//! let id: ResourceId = "A/a".parse()?;
//! target.fail_next(&id, 1, true); // the next apply fails, transiently
//! let r = Resource::new(id.clone(), serde_json::json!({}));
//! assert!(target.apply(&r).await.unwrap_err().is_transient());
//! target.apply(&r).await?;
//! assert_eq!(target.calls(), [Call::Apply(id.clone()), Call::Apply(id)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use crate::sync::LockExt as _;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::id::ResourceId;
use crate::model::{Health, Observed, Resource, Revision, Snapshot, SnapshotFile};
use crate::promote::{PromoteError, Promoter};
use crate::render::{FileEdit, Render};
use crate::source::{Source, SourceError};
use crate::spec::Spec;
use crate::target::{Target, TargetError};
use crate::writeback::{Drifted, Writeback, WritebackError, WritebackRequest, WrittenBack};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the state from the others.
    m.locked()
}

#[derive(Default)]
struct SourceState {
    commits: Vec<Snapshot>,
    /// The parent of each commit: the head when it was made.
    parents: Vec<Option<usize>>,
    head: Option<usize>,
    poll_faults: VecDeque<bool>,
    polls: usize,
}

/// A source whose commits a test makes: each [`commit`](Self::commit) replaces
/// the whole tree and moves the reference to it.
pub struct MemorySource {
    reference: String,
    state: Mutex<SourceState>,
}

impl std::fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySource")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl MemorySource {
    /// An empty source tracking `reference` (e.g. `main`).
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            state: Mutex::new(SourceState::default()),
        }
    }

    /// Commits a new tree of `(path, content)` and moves the reference to it.
    ///
    /// # Panics
    /// On an invalid path: test input is the caller's to get right.
    pub fn commit<P, B>(&self, files: impl IntoIterator<Item = (P, B)>) -> Revision
    where
        P: Into<String>,
        B: AsRef<[u8]>,
    {
        let number = lock(&self.state).commits.len() + 1;
        self.commit_as(
            "Test Author <test@example.com>",
            &format!("commit {number}"),
            files,
        )
    }

    /// Like [`commit`](Self::commit), with this author and message.
    ///
    /// # Panics
    /// On an invalid path.
    pub fn commit_as<P, B>(
        &self,
        author: &str,
        message: &str,
        files: impl IntoIterator<Item = (P, B)>,
    ) -> Revision
    where
        P: Into<String>,
        B: AsRef<[u8]>,
    {
        let mut state = lock(&self.state);
        let files: Vec<(String, Vec<u8>)> = files
            .into_iter()
            .map(|(p, b)| (p.into(), b.as_ref().to_vec()))
            .collect();
        let mut hasher = Sha256::new();
        hasher.update(state.commits.len().to_le_bytes());
        for (p, b) in &files {
            hasher.update(p.as_bytes());
            hasher.update([0]);
            hasher.update(b);
        }
        let id: String = hasher.finalize()[..20]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut revision = Revision::new(self.reference.clone(), id);
        revision.author = author.to_owned();
        revision.message = message.to_owned();
        revision.committed_at = 1_700_000_000 + state.commits.len() as i64;
        let snapshot = Snapshot::from_files(revision.clone(), files)
            .unwrap_or_else(|e| panic!("MemorySource::commit: {e}"));
        state.commits.push(snapshot);
        let parent = state.head;
        state.parents.push(parent);
        state.head = Some(state.commits.len() - 1);
        revision
    }

    /// The revision the reference points at.
    pub fn head(&self) -> Option<Revision> {
        let state = lock(&self.state);
        state.head.map(|i| state.commits[i].revision().clone())
    }

    /// Moves the reference to an earlier commit (a force-push or revert).
    pub fn reset(&self, revision: &Revision) -> bool {
        let mut state = lock(&self.state);
        match state
            .commits
            .iter()
            .position(|s| s.revision().id == revision.id)
        {
            Some(i) => {
                state.head = Some(i);
                true
            }
            None => false,
        }
    }

    /// The next `n` polls fail (`transient`: as an unreachable remote).
    pub fn fail_next_polls(&self, n: usize, transient: bool) {
        lock(&self.state)
            .poll_faults
            .extend(std::iter::repeat_n(transient, n));
    }

    /// How many times `poll` was called.
    pub fn polls(&self) -> usize {
        lock(&self.state).polls
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn poll(&self) -> Result<Revision, SourceError> {
        let mut state = lock(&self.state);
        state.polls += 1;
        if let Some(transient) = state.poll_faults.pop_front() {
            return Err(if transient {
                SourceError::Unavailable {
                    location: "memory".into(),
                    message: "injected poll failure".into(),
                    source: None,
                }
            } else {
                SourceError::ReferenceNotFound {
                    reference: self.reference.clone(),
                    message: "injected poll failure".into(),
                }
            });
        }
        match state.head {
            Some(i) => Ok(state.commits[i].revision().clone()),
            None => Err(SourceError::ReferenceNotFound {
                reference: self.reference.clone(),
                message: "no commits yet".into(),
            }),
        }
    }

    /// Commits form a history: each one's parent is the head it was made on
    /// (so after [`reset`](MemorySource::reset), later commits branch off).
    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        let state = lock(&self.state);
        let index = |id: &str| state.commits.iter().position(|s| s.revision().id == id);
        let (Some(a), Some(mut d)) = (index(&ancestor.id), index(&descendant.id)) else {
            return Ok(None);
        };
        loop {
            if d == a {
                return Ok(Some(true));
            }
            match state.parents[d] {
                Some(p) => d = p,
                None => return Ok(Some(false)),
            }
        }
    }

    async fn snapshot(
        &self,
        revision: &Revision,
        _cancel: &Cancel,
    ) -> Result<Snapshot, SourceError> {
        let state = lock(&self.state);
        state
            .commits
            .iter()
            .find(|s| s.revision().id == revision.id)
            .cloned()
            .ok_or_else(|| SourceError::ReferenceNotFound {
                reference: revision.to_string(),
                message: "unknown commit".into(),
            })
    }
}

/// One call the engine made on a [`MemoryTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `observe` (also recorded for each id of `observe_many`).
    Observe(ResourceId),
    /// `apply`.
    Apply(ResourceId),
    /// `delete`.
    Delete(ResourceId),
    /// `health`.
    Health(ResourceId),
}

#[derive(Default)]
struct TargetState {
    resources: BTreeMap<ResourceId, Spec>,
    faults: HashMap<ResourceId, VecDeque<bool>>,
    health: HashMap<ResourceId, VecDeque<Health>>,
    latency: Duration,
    apply_latency: Duration,
    calls: Vec<(Call, Instant)>,
}

/// A target holding resources in a map, with fault injection and a call log.
#[derive(Default)]
pub struct MemoryTarget {
    state: Mutex<TargetState>,
}

impl std::fmt::Debug for MemoryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTarget")
            .field("resources", &lock(&self.state).resources.len())
            .finish_non_exhaustive()
    }
}

impl MemoryTarget {
    /// An empty target.
    pub fn new() -> Self {
        Self::default()
    }

    /// The spec held for `id`.
    pub fn get(&self, id: &ResourceId) -> Option<Value> {
        lock(&self.state).resources.get(id).map(Spec::to_value)
    }

    /// Everything the target holds.
    pub fn contents(&self) -> BTreeMap<ResourceId, Value> {
        lock(&self.state)
            .resources
            .iter()
            .map(|(id, spec)| (id.clone(), spec.to_value()))
            .collect()
    }

    /// An edit made behind the engine's back (drift), or a resource someone
    /// else created.
    pub fn edit(&self, id: &ResourceId, spec: impl Into<Spec>) {
        lock(&self.state).resources.insert(id.clone(), spec.into());
    }

    /// A delete made behind the engine's back.
    pub fn remove(&self, id: &ResourceId) {
        lock(&self.state).resources.remove(id);
    }

    /// Removes everything (a wiped target).
    pub fn wipe(&self) {
        lock(&self.state).resources.clear();
    }

    /// The next `n` applies or deletes of `id` fail.
    pub fn fail_next(&self, id: &ResourceId, n: usize, transient: bool) {
        lock(&self.state)
            .faults
            .entry(id.clone())
            .or_default()
            .extend(std::iter::repeat_n(transient, n));
    }

    /// Forgets every injected fault.
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Applies sleep this long more than other calls (on tokio's clock).
    pub fn set_apply_latency(&self, latency: Duration) {
        lock(&self.state).apply_latency = latency;
    }

    /// Every call sleeps this long first (on tokio's clock).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Health answers for `id`, one per call; the last one repeats.
    pub fn script_health(&self, id: &ResourceId, sequence: impl IntoIterator<Item = Health>) {
        lock(&self.state)
            .health
            .insert(id.clone(), sequence.into_iter().collect());
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state)
            .calls
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Every call so far with the (tokio) instant it was made.
    pub fn timed_calls(&self) -> Vec<(Call, Instant)> {
        lock(&self.state).calls.clone()
    }

    /// Only the applies and deletes, in order.
    pub fn changes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Apply(_) | Call::Delete(_)))
            .collect()
    }

    /// Forgets the call log.
    pub fn clear_calls(&self) {
        lock(&self.state).calls.clear();
    }

    async fn enter(&self, call: Call) -> Option<bool> {
        let latency = {
            let mut state = lock(&self.state);
            state.calls.push((call.clone(), Instant::now()));
            state.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let id = match &call {
            Call::Apply(id) | Call::Delete(id) => id,
            _ => return None,
        };
        lock(&self.state)
            .faults
            .get_mut(id)
            .and_then(VecDeque::pop_front)
    }
}

fn injected(id: &ResourceId, transient: bool) -> TargetError {
    if transient {
        TargetError::transient(id, "injected failure")
    } else {
        TargetError::permanent(id, "injected failure")
    }
}

#[async_trait]
impl Target for MemoryTarget {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        self.enter(Call::Observe(id.clone())).await;
        Ok(self.get(id).map(Observed::new))
    }

    async fn observe_many(&self, ids: &[ResourceId]) -> Vec<Result<Option<Observed>, TargetError>> {
        let latency = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            state
                .calls
                .extend(ids.iter().map(|id| (Call::Observe(id.clone()), now)));
            state.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let state = lock(&self.state);
        ids.iter()
            .map(|id| Ok(state.resources.get(id).cloned().map(Observed::new)))
            .collect()
    }

    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let extra = lock(&self.state).apply_latency;
        if !extra.is_zero() {
            tokio::time::sleep(extra).await;
        }
        if let Some(transient) = self.enter(Call::Apply(resource.id.clone())).await {
            return Err(injected(&resource.id, transient));
        }
        lock(&self.state)
            .resources
            .insert(resource.id.clone(), resource.spec.clone());
        tracing::trace!("memory target applied");
        Ok(())
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        if let Some(transient) = self.enter(Call::Delete(id.clone())).await {
            return Err(injected(id, transient));
        }
        lock(&self.state).resources.remove(id);
        Ok(())
    }

    async fn health(&self, id: &ResourceId) -> Result<Health, TargetError> {
        self.enter(Call::Health(id.clone())).await;
        let mut state = lock(&self.state);
        if let Some(seq) = state.health.get_mut(id) {
            let next = if seq.len() > 1 {
                seq.pop_front()
            } else {
                seq.front().cloned()
            };
            if let Some(h) = next {
                return Ok(h);
            }
        }
        Ok(if state.resources.contains_key(id) {
            Health::Healthy
        } else {
            Health::Missing
        })
    }
}

/// A [`Writeback`] that records what it was given and, when made with
/// [`committing`](Self::committing), commits the drift to a [`MemorySource`]
/// the way `GitWriteback` does to Git: the edited files on top of the deployed
/// revision (or on the moved head when those files did not change there),
/// else a conflict.
#[derive(Default)]
pub struct MemoryWriteback {
    calls: Mutex<Vec<(Revision, Vec<Drifted>)>>,
    commit_to: Option<(Arc<MemorySource>, Arc<dyn Render>)>,
    faults: Mutex<VecDeque<WritebackError>>,
}

impl std::fmt::Debug for MemoryWriteback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryWriteback")
            .field("calls", &lock(&self.calls).len())
            .field("commits", &self.commit_to.is_some())
            .finish()
    }
}

impl MemoryWriteback {
    /// A recorder that commits nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A write-back that commits to `source`, rewriting files with `render`.
    pub fn committing(source: Arc<MemorySource>, render: Arc<dyn Render>) -> Self {
        Self {
            commit_to: Some((source, render)),
            ..Self::default()
        }
    }

    /// The next call fails with `error` (queued; one per call).
    pub fn fail_next(&self, error: WritebackError) {
        lock(&self.faults).push_back(error);
    }

    /// Every write-back so far: the base revision and the drifted resources.
    pub fn calls(&self) -> Vec<(Revision, Vec<Drifted>)> {
        lock(&self.calls).clone()
    }
}

fn failed(message: String) -> WritebackError {
    WritebackError::Failed {
        message,
        transient: false,
        source: None,
    }
}

#[async_trait]
impl Writeback for MemoryWriteback {
    async fn write_back(
        &self,
        request: WritebackRequest<'_>,
    ) -> Result<Option<WrittenBack>, WritebackError> {
        lock(&self.calls).push((request.revision.clone(), request.drifted.to_vec()));
        if let Some(error) = lock(&self.faults).pop_front() {
            return Err(error);
        }
        let Some((source, render)) = &self.commit_to else {
            return Ok(None);
        };
        let base = source
            .snapshot(request.revision, &Cancel::new())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let head_revision = source.head().ok_or_else(|| failed("no head".into()))?;
        let head = source
            .snapshot(&head_revision, &Cancel::new())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut files: BTreeMap<String, Vec<u8>> = head
            .files()
            .iter()
            .map(|(p, f)| (p.clone(), f.data.to_vec()))
            .collect();
        let mut edited: BTreeMap<String, Option<SnapshotFile>> = BTreeMap::new();
        // Later documents first, so a removal does not shift the others.
        let mut drifted: Vec<&Drifted> = request.drifted.iter().collect();
        drifted.sort_by_key(|d| std::cmp::Reverse(d.resource.origin.document));
        for d in drifted {
            let path = &d.resource.origin.path;
            if head.get(path) != base.get(path) {
                return Err(WritebackError::Conflict {
                    path: path.clone(),
                    message: format!("{path} changed since {}", request.revision),
                });
            }
            let current = match edited.get(path) {
                Some(Some(file)) => file.clone(),
                Some(None) => continue,
                None => base
                    .files()
                    .get(path)
                    .cloned()
                    .ok_or_else(|| failed(format!("{path} is not in {}", request.revision)))?,
            };
            let edit = render
                .write_back(&current, &d.resource, d.observed.as_ref())
                .map_err(|e| failed(e.to_string()))?;
            let next = match edit {
                FileEdit::Write { data, executable } => Some(SnapshotFile {
                    data: data.into(),
                    executable,
                }),
                FileEdit::Remove => None,
            };
            edited.insert(path.clone(), next);
        }
        let mut changed = false;
        for (path, file) in edited {
            match file {
                Some(file) => {
                    changed |= files.get(&path).map(Vec::as_slice) != Some(&file.data[..]);
                    files.insert(path, file.data.to_vec());
                }
                None => changed |= files.remove(&path).is_some(),
            }
        }
        if !changed {
            return Ok(None);
        }
        let revision = source.commit(files);
        Ok(Some(WrittenBack {
            published_to: revision.reference.clone(),
            revision,
            is_release: true,
        }))
    }
}

/// A [`Promoter`] that records each promotion and hands on the revision
/// under the reference `passed/<stage>` (as a branch a Git promoter would
/// move); it can be told to fail.
#[derive(Default)]
pub struct MemoryPromoter {
    calls: Mutex<Vec<(String, Revision)>>,
    failures: Mutex<usize>,
}

impl std::fmt::Debug for MemoryPromoter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPromoter")
            .field("calls", &lock(&self.calls).len())
            .finish()
    }
}

impl MemoryPromoter {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every successful promotion so far: the stage passed and the revision.
    pub fn calls(&self) -> Vec<(String, Revision)> {
        lock(&self.calls).clone()
    }

    /// The next `n` promotions fail (transiently).
    pub fn fail_next(&self, n: usize) {
        *lock(&self.failures) += n;
    }
}

#[async_trait]
impl Promoter for MemoryPromoter {
    async fn promote(
        &self,
        stage: &str,
        revision: &Revision,
    ) -> Result<Option<Revision>, PromoteError> {
        {
            let mut failures = lock(&self.failures);
            if *failures > 0 {
                *failures -= 1;
                return Err(PromoteError::Failed {
                    stage: stage.to_owned(),
                    revision: revision.to_string(),
                    message: "injected failure".into(),
                    transient: true,
                    source: None,
                });
            }
        }
        lock(&self.calls).push((stage.to_owned(), revision.clone()));
        let mut promoted = revision.clone();
        promoted.reference = format!("passed/{stage}");
        Ok(Some(promoted))
    }
}
