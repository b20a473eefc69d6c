//! The Desired-State step: the [`Render`] trait, [`DesiredState`] and its errors.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::graph::DependencyGraph;
use crate::id::{IdError, ResourceId};
use crate::model::{Observed, Origin, Resource, Revision, Snapshot, SnapshotFile};

/// Why a snapshot could not become a desired state. Never transient: the
/// revision is refused as a whole and the last good state stays deployed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// A file could not be parsed.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// Snapshot-relative path.
        path: String,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// The parser's message.
        message: String,
    },
    /// A manifest file is not valid UTF-8.
    #[error("{path}: not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Snapshot-relative path.
        path: String,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A file is larger than the renderer accepts.
    #[error("{path}: {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Snapshot-relative path.
        path: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A required field is missing.
    #[error("{origin}: missing {field}")]
    Missing {
        /// The document.
        origin: Origin,
        /// Which field, e.g. `kind` or `metadata.name`.
        field: &'static str,
    },
    /// A field has the wrong type or value.
    #[error("{origin}: {message}")]
    Invalid {
        /// The document.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// The kind, namespace or name is not a valid id.
    #[error("{origin}: {source}")]
    InvalidId {
        /// The document.
        origin: Origin,
        /// Why the id was refused.
        source: IdError,
    },
    /// Two documents define the same id.
    #[error("duplicate resource {id}: defined in {first} and in {second}")]
    DuplicateId {
        /// The id.
        id: ResourceId,
        /// Where it was defined first (in path order).
        first: Origin,
        /// Where it was defined again.
        second: Origin,
    },
    /// A `dependsOn` names a resource that is not in the desired state.
    #[error("{id} (in {origin}) depends on {dependency}, which is not defined")]
    UnknownDependency {
        /// The resource with the bad dependency.
        id: ResourceId,
        /// The missing dependency.
        dependency: ResourceId,
        /// Where `id` is defined.
        origin: Origin,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {}", CycleDisplay(cycle))]
    Cycle {
        /// The ids along the cycle; each depends on the next, the last on the first.
        cycle: Vec<ResourceId>,
    },
    /// The renderer itself is misconfigured (e.g. a bad glob).
    #[error("render configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// An encrypted file could not be decrypted (no identity opens it, it is
    /// truncated or tampered with, or it is not an age file). The message
    /// names the file, never a key.
    #[error("{path}: cannot decrypt: {message}")]
    Decrypt {
        /// Snapshot-relative path of the encrypted file.
        path: String,
        /// Why.
        message: String,
    },
    /// A drifted resource cannot be written back into its file.
    #[error("cannot write {id} back to {origin}: {message}")]
    Writeback {
        /// The resource.
        id: ResourceId,
        /// The file and document it came from.
        origin: Origin,
        /// Why.
        message: String,
    },
}

struct CycleDisplay<'a>(&'a [ResourceId]);

impl fmt::Display for CycleDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.0 {
            write!(f, "{id} -> ")?;
        }
        match self.0.first() {
            Some(first) => write!(f, "{first}"),
            None => Ok(()),
        }
    }
}

impl RenderError {
    /// Always `false`: the same input gives the same error.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// How one file changes so that it renders what the target holds (the
/// Modify strategy, see [`Render::write_back`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEdit {
    /// The file's new bytes and executable bit.
    Write {
        /// New content.
        data: Vec<u8>,
        /// Executable bit.
        executable: bool,
    },
    /// The file goes away (its only resource was deleted in the target).
    Remove,
}

/// Something in a revision that renders but may not mean what its author
/// meant: shown in the plan, naming the file and line; never refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderWarning {
    /// The file, relative to the snapshot root.
    pub path: String,
    /// The line (1-based).
    pub line: u64,
    /// What is ambiguous.
    #[serde(flatten)]
    pub kind: WarningKind,
}

/// What a [`RenderWarning`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WarningKind {
    /// A plain `yes`, `no`, `on`, `off`, `y` or `n`: read as a boolean
    /// (YAML 1.1), though YAML 1.2 reads it as a string.
    YamlBoolean {
        /// The value as written.
        text: String,
    },
    /// A plain number with a leading zero such as `0755`: read as a decimal
    /// (YAML 1.2: 755), though YAML 1.1 read it as octal (493).
    LeadingZero {
        /// The value as written.
        text: String,
    },
    /// A resource from an encrypted file asks for `writeback` drift, but
    /// there is no recipient to re-encrypt to: its drift is reverted, never
    /// written back in plain text.
    WritebackRefused {
        /// The resource.
        id: ResourceId,
    },
}

impl fmt::Display for RenderWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: ", self.path)?,
            line => write!(f, "{}:{line}: ", self.path)?,
        }
        match &self.kind {
            WarningKind::YamlBoolean { text } => {
                let as_bool = matches!(text.to_ascii_lowercase().as_str(), "yes" | "on" | "y");
                write!(
                    f,
                    "{text} is read as the boolean {as_bool} (YAML 1.1), as the string \"{text}\" \
                     by YAML 1.2: write {as_bool} or quote it (\"{text}\")"
                )
            }
            WarningKind::LeadingZero { text } => {
                let decimal = text
                    .parse::<i64>()
                    .map_or_else(|_| text.clone(), |n| n.to_string());
                write!(
                    f,
                    "{text} is read as the number {decimal} (YAML 1.2), as an octal number by \
                     YAML 1.1: write {decimal}, or quote it (\"{text}\") for a string such as a file mode"
                )
            }
            WarningKind::WritebackRefused { id } => write!(
                f,
                "{id}: drift is reverted, not written back: a sensitive resource is written \
                 back only re-encrypted, and no write-back recipient is set \
                 (--writeback-age-recipient)"
            ),
        }
    }
}

/// What a per-file renderer makes of some files, before the set is
/// validated (see [`Render::render_parts`]).
#[derive(Debug, Clone, Default)]
pub struct RenderParts {
    /// The resources, in any order; each one's `origin.path` is the file it
    /// came from.
    pub resources: Vec<Resource>,
    /// The warnings; each one's `path` is the file it is about.
    pub warnings: Vec<RenderWarning>,
}

/// Turns a [`Snapshot`] into a [`DesiredState`]: the Desired-State step.
pub trait Render: Send + Sync {
    /// Renders all resources of the snapshot, or refuses the revision whole.
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError>;

    /// For a renderer whose output for a file depends on that file alone (its
    /// path, bytes and executable bit): the resources and warnings of every
    /// file of `snapshot`, not yet validated as a set, such that
    /// [`render`](Render::render) is [`DesiredState::new`] over them (with
    /// the warnings in path order). [`RenderCache`](crate::RenderCache) uses
    /// it to render only the files that changed. `None` (the default): the
    /// renderer is not per-file, or not for this snapshot; it is then only
    /// ever asked to render whole snapshots.
    fn render_parts(&self, snapshot: &Snapshot) -> Option<Result<RenderParts, RenderError>> {
        let _ = snapshot;
        None
    }

    /// The inverse, for write-back: rewrites `file` (the bytes of
    /// `resource.origin.path` at the revision `resource` was rendered from) so
    /// that it renders `observed` (`None`: the resource was deleted in the
    /// target). Renderers that cannot do this keep the default, which refuses.
    fn write_back(
        &self,
        file: &SnapshotFile,
        resource: &Resource,
        observed: Option<&Observed>,
    ) -> Result<FileEdit, RenderError> {
        let _ = (file, observed);
        Err(RenderError::Writeback {
            id: resource.id.clone(),
            origin: resource.origin.clone(),
            message: "this renderer does not support write-back".to_owned(),
        })
    }

    /// Everything that decides what a snapshot renders to (the renderer,
    /// its options, the wrappers around it), as text that changes whenever
    /// any of it changes; the engine keeps only a SHA-256 of it. With the
    /// same revision, the same fingerprints and a target that proves
    /// nothing changed, the engine skips snapshot and render (see
    /// `docs/engine.md`, "Unchanged revisions").
    ///
    /// `None` (the default): unknown, the engine always renders. A wrapper
    /// returns `None` when its inner renderer does, and never puts a
    /// secret in it (a decrypting wrapper returns `None`).
    fn fingerprint(&self) -> Option<String> {
        None
    }
}

impl<R: Render + ?Sized> Render for Box<R> {
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError> {
        (**self).render(snapshot)
    }

    fn render_parts(&self, snapshot: &Snapshot) -> Option<Result<RenderParts, RenderError>> {
        (**self).render_parts(snapshot)
    }

    fn write_back(
        &self,
        file: &SnapshotFile,
        resource: &Resource,
        observed: Option<&Observed>,
    ) -> Result<FileEdit, RenderError> {
        (**self).write_back(file, resource, observed)
    }

    fn fingerprint(&self) -> Option<String> {
        (**self).fingerprint()
    }
}

/// The resources of one revision, validated, sorted by id, with their graph.
#[derive(Debug, Clone)]
pub struct DesiredState {
    revision: Revision,
    resources: Vec<Resource>,
    index: HashMap<ResourceId, usize>,
    graph: DependencyGraph,
    warnings: Vec<RenderWarning>,
}

impl DesiredState {
    /// Validates `resources` (unique ids, known dependencies, no cycle) and
    /// orders them by id.
    pub fn new(revision: Revision, mut resources: Vec<Resource>) -> Result<Self, RenderError> {
        // In place (no merge buffer); among duplicates the earlier origin comes first.
        resources.sort_unstable_by(|a, b| {
            a.id.cmp(&b.id).then_with(|| {
                (&a.origin.path, a.origin.document).cmp(&(&b.origin.path, b.origin.document))
            })
        });
        let mut index = HashMap::with_capacity(resources.len());
        for (i, r) in resources.iter().enumerate() {
            if let Some(&prev) = index.get(&r.id) {
                let first: &Resource = &resources[prev];
                return Err(RenderError::DuplicateId {
                    id: r.id.clone(),
                    first: first.origin.clone(),
                    second: r.origin.clone(),
                });
            }
            index.insert(r.id.clone(), i);
        }
        let mut edges = Vec::with_capacity(resources.iter().map(|r| r.depends_on.len()).sum());
        for (i, r) in resources.iter_mut().enumerate() {
            for dep in &mut r.depends_on {
                let Some((canonical, &d)) = index.get_key_value(dep) else {
                    return Err(RenderError::UnknownDependency {
                        id: r.id.clone(),
                        dependency: dep.clone(),
                        origin: r.origin.clone(),
                    });
                };
                // Share the dependency's id allocation instead of keeping a parsed copy.
                *dep = canonical.clone();
                edges.push((d, i));
            }
        }
        let graph =
            DependencyGraph::new(resources.len(), edges).map_err(|e| RenderError::Cycle {
                cycle: e.cycle.iter().map(|&i| resources[i].id.clone()).collect(),
            })?;
        Ok(Self {
            revision,
            resources,
            index,
            graph,
            warnings: Vec::new(),
        })
    }

    /// Attaches warnings found while rendering (shown in the plan).
    #[must_use]
    pub fn with_warnings(mut self, warnings: Vec<RenderWarning>) -> Self {
        self.warnings = warnings;
        self
    }

    /// What rendered but may not mean what its author meant.
    pub fn warnings(&self) -> &[RenderWarning] {
        &self.warnings
    }

    /// The revision these resources were rendered from.
    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    /// All resources, ordered by id.
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// The resources, ordered by id, giving up the graph (to adjust them and
    /// build a new state with [`DesiredState::new`]).
    pub fn into_resources(self) -> Vec<Resource> {
        self.resources
    }

    /// One resource by id.
    pub fn get(&self, id: &ResourceId) -> Option<&Resource> {
        self.index.get(id).map(|&i| &self.resources[i])
    }

    /// Position of `id` in [`resources`](Self::resources).
    pub fn position(&self, id: &ResourceId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Whether `id` is desired.
    pub fn contains(&self, id: &ResourceId) -> bool {
        self.index.contains_key(id)
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether there are no resources.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The dependency graph over [`resources`](Self::resources) positions.
    pub fn graph(&self) -> &DependencyGraph {
        &self.graph
    }

    /// The apply waves: each is a list of resources whose dependencies are all
    /// in earlier waves, ordered by id.
    pub fn waves(&self) -> impl Iterator<Item = impl Iterator<Item = &Resource>> {
        self.graph
            .waves()
            .iter()
            .map(|wave| wave.iter().map(|&i| &self.resources[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(id: &str, deps: &[&str]) -> Resource {
        let mut r = Resource::new(id.parse().unwrap(), json!({}));
        r.depends_on = deps.iter().map(|d| d.parse().unwrap()).collect();
        r.origin = Origin {
            path: format!("{}.yaml", id.replace('/', "-")),
            document: 0,
        };
        r
    }

    #[test]
    fn errors_name_both_sides() {
        let rev = Revision::new("main", "0");
        let err = DesiredState::new(rev.clone(), vec![res("A/x", &["B/y"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "A/x (in A-x.yaml) depends on B/y, which is not defined"
        );
        let mut dup = res("A/x", &[]);
        dup.origin.path = "other.yaml".into();
        let err = DesiredState::new(rev.clone(), vec![res("A/x", &[]), dup]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "duplicate resource A/x: defined in A-x.yaml and in other.yaml"
        );
        let err = DesiredState::new(
            rev,
            vec![
                res("A/a", &["A/c"]),
                res("A/b", &["A/a"]),
                res("A/c", &["A/b"]),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dependency cycle: A/a -> A/c -> A/b -> A/a"
        );
    }

    #[test]
    fn waves_follow_dependencies() {
        let rev = Revision::new("main", "0");
        let d = DesiredState::new(
            rev,
            vec![
                res("C/c", &["B/b"]),
                res("B/b", &["A/a"]),
                res("A/a", &[]),
                res("Z/z", &[]),
            ],
        )
        .unwrap();
        let waves: Vec<Vec<String>> = d
            .waves()
            .map(|w| w.map(|r| r.id.to_string()).collect())
            .collect();
        assert_eq!(waves, [vec!["A/a", "Z/z"], vec!["B/b"], vec!["C/c"]]);
    }
}
