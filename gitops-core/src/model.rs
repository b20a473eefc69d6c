//! The data model: revisions, snapshots, resources, observations, health,
//! and the inventory of what an engine applied.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::ResourceId;
use crate::spec::Spec;

/// One commit chosen as the release: what the engine deploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Full commit id in hex (40 digits for SHA-1, 64 for SHA-256).
    pub id: String,
    /// The reference it was selected through: a branch, a tag, or the id itself.
    pub reference: String,
    /// Commit author, `Name <email>`.
    pub author: String,
    /// Committer time, seconds since the Unix epoch.
    pub committed_at: i64,
    /// The full commit message.
    pub message: String,
}

impl Revision {
    /// A revision with only an id and a reference; author and message empty.
    pub fn new(reference: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            reference: reference.into(),
            author: String::new(),
            committed_at: 0,
            message: String::new(),
        }
    }

    /// The first line of the commit message.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }

    /// The revision with its message cut to [`MAX_MESSAGE_BYTES`] and its
    /// author to [`MAX_AUTHOR_BYTES`], each marked [`TRUNCATED`] when cut:
    /// what the engine keeps (history, audit, status, events) never grows
    /// with a hostile commit.
    pub fn bounded(mut self) -> Self {
        cap(&mut self.message, MAX_MESSAGE_BYTES);
        cap(&mut self.author, MAX_AUTHOR_BYTES);
        self
    }
}

/// Largest file, in bytes, accepted anywhere by default (10 MiB): a
/// snapshot file (`gitops-git`'s `Limits`), a manifest
/// ([`ManifestRender`](crate::ManifestRender)), a file the directory target
/// writes or reads (`gitops-targets`' `FsOptions`). One limit, so a file the
/// target holds and writes back to Git is never one the source then refuses.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// Longest commit message the engine keeps, in bytes (see [`Revision::bounded`]).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest commit author the engine keeps, in bytes.
pub const MAX_AUTHOR_BYTES: usize = 512;
/// Appended to a message or author that was cut.
pub const TRUNCATED: &str = " [truncated]";

/// Cuts `text` to at most `max` bytes (on a character boundary), the marker included.
fn cap(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub(TRUNCATED.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(TRUNCATED);
}

impl fmt::Display for Revision {
    /// `main@sha1:<hex>` (or `sha256:` for 64-digit ids).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algo = if self.id.len() == 64 {
            "sha256"
        } else {
            "sha1"
        };
        write!(f, "{}@{}:{}", self.reference, algo, self.id)
    }
}

/// One file of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The file's bytes, shared.
    pub data: Arc<[u8]>,
    /// Whether the executable bit is set.
    pub executable: bool,
}

/// Why a path was refused by [`Snapshot::insert`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot path {path:?} refused: {reason}")]
pub struct SnapshotPathError {
    /// The offending path.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a snapshot-relative path: `/`-separated, no empty, `.` or `..`
/// components, not absolute, no NUL or control characters, no `.git` component.
pub fn validate_relative_path(path: &str) -> Result<(), SnapshotPathError> {
    let refuse = |reason| {
        Err(SnapshotPathError {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return refuse("empty path");
    }
    if path.starts_with('/') || path.contains('\\') {
        return refuse("absolute path or backslash");
    }
    if path.chars().any(char::is_control) {
        return refuse("control character");
    }
    for component in path.split('/') {
        match component {
            "" => return refuse("empty component"),
            "." | ".." => return refuse("'.' or '..' component"),
            c if c.eq_ignore_ascii_case(".git") => return refuse("'.git' component"),
            _ => {}
        }
    }
    Ok(())
}

/// The files of one revision (relative path to bytes), ordered by path.
///
/// Cloning is cheap: the file map is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    revision: Revision,
    files: Arc<BTreeMap<String, SnapshotFile>>,
}

impl Snapshot {
    /// An empty snapshot of `revision`.
    pub fn new(revision: Revision) -> Self {
        Self {
            revision,
            files: Arc::default(),
        }
    }

    /// A snapshot from `(path, bytes)` pairs; every path is validated.
    pub fn from_files<P, B>(
        revision: Revision,
        files: impl IntoIterator<Item = (P, B)>,
    ) -> Result<Self, SnapshotPathError>
    where
        P: Into<String>,
        B: Into<Arc<[u8]>>,
    {
        let mut snapshot = Self::new(revision);
        for (path, data) in files {
            snapshot.insert(path, data, false)?;
        }
        Ok(snapshot)
    }

    /// Adds or replaces one file after validating its path.
    pub fn insert(
        &mut self,
        path: impl Into<String>,
        data: impl Into<Arc<[u8]>>,
        executable: bool,
    ) -> Result<(), SnapshotPathError> {
        let path = path.into();
        validate_relative_path(&path)?;
        Arc::make_mut(&mut self.files).insert(
            path,
            SnapshotFile {
                data: data.into(),
                executable,
            },
        );
        Ok(())
    }

    /// The revision these files belong to.
    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    /// All files, ordered by path.
    pub fn files(&self) -> &BTreeMap<String, SnapshotFile> {
        &self.files
    }

    /// One file's bytes.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(|f| &*f.data)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// What the engine does when the target no longer matches Git.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Re-apply the desired state (the Retry strategy). The default.
    #[default]
    Revert,
    /// Write the observed state back to Git (the Modify strategy).
    Writeback,
    /// Report the drift, change nothing.
    Ignore,
}

impl DriftPolicy {
    /// The annotation value: `revert`, `writeback` or `ignore`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftPolicy::Revert => "revert",
            DriftPolicy::Writeback => "writeback",
            DriftPolicy::Ignore => "ignore",
        }
    }
}

/// Per-resource policy, from manifest annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// What to do on drift.
    pub drift: DriftPolicy,
    /// Whether the resource may be deleted when it leaves Git (default `true`).
    pub prune: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            drift: DriftPolicy::Revert,
            prune: true,
        }
    }
}

/// Where a resource came from: a file of the snapshot and the document in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Origin {
    /// Snapshot-relative path.
    pub path: String,
    /// Zero-based index of the (non-empty) document inside the file.
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            write!(f, "{}", self.path)
        } else {
            write!(f, "{} (document {})", self.path, self.document + 1)
        }
    }
}

/// One desired resource, as rendered from Git.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Its identity.
    pub id: ResourceId,
    /// `apiVersion` from the manifest, carried for targets that need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The desired state; opaque to the core, interpreted by the target
    /// (read it with [`spec_as`](Resource::spec_as) or [`Spec::to_value`]).
    pub spec: Spec,
    /// Resources that must be applied (and healthy) before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ResourceId>,
    /// Labels from the manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations from the manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Drift and prune policy.
    #[serde(default)]
    pub policy: Policy,
    /// The file and document it came from.
    #[serde(default)]
    pub origin: Origin,
    /// Whether the resource came from an encrypted file: its values never
    /// appear in plans, diffs, events, status, logs or stored records
    /// (they show [`SENSITIVE`](crate::secret::SENSITIVE)), and its
    /// inventory digest is keyed ([`DigestKey`](crate::secret::DigestKey)).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

impl Resource {
    /// A resource with default policy, no dependencies and an empty origin;
    /// `spec` is a [`Spec`] or anything that converts into one, such as a
    /// `serde_json::Value`.
    pub fn new(id: ResourceId, spec: impl Into<Spec>) -> Self {
        Self {
            id,
            api_version: None,
            spec: spec.into(),
            depends_on: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            policy: Policy::default(),
            origin: Origin::default(),
            sensitive: false,
        }
    }

    /// Marks the resource sensitive (builder style; see [`Resource::sensitive`](Resource#structfield.sensitive)).
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// The spec read as `T`; a mismatch is [`TargetError::InvalidSpec`](crate::TargetError::InvalidSpec)
    /// naming the field path (`spec.ports[1].number: invalid type: string
    /// "80", expected u16`), so a target need not hand-parse
    /// `serde_json::Value`.
    ///
    /// ```
    /// use gitops_core::{Resource, ResourceId, serde_json::json};
    ///
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Row { name: String, port: u16 }
    ///
    /// let id: ResourceId = "Row/web".parse()?;
    /// let row: Row = Resource::new(id.clone(), json!({"name": "web", "port": 80})).spec_as()?;
    /// assert_eq!((row.name.as_str(), row.port), ("web", 80));
    /// let bad = Resource::new(id, json!({"name": "web", "port": "eighty"})).spec_as::<Row>();
    /// assert!(bad.unwrap_err().to_string().contains("spec.port: invalid type"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spec_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::TargetError> {
        self.spec
            .parse()
            .map_err(|e| crate::TargetError::invalid(&self.id, e.to_string()))
    }

    /// Adds a dependency (builder style).
    pub fn depends_on(mut self, id: ResourceId) -> Self {
        self.depends_on.push(id);
        self
    }

    /// SHA-256 of the spec's canonical JSON (object keys sorted), in hex.
    ///
    /// Stored in the inventory and the audit log to say exactly what was
    /// applied; for a sensitive resource the engine stores
    /// [`DigestKey::digest`](crate::secret::DigestKey::digest) instead.
    pub fn digest(&self) -> String {
        self.spec.digest()
    }
}

/// The state of a resource as the target reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The observed state, in the same shape as [`Resource::spec`].
    pub spec: Spec,
}

impl Observed {
    /// Wraps an observed spec: a [`Spec`] or anything that converts into
    /// one, such as a `serde_json::Value`.
    pub fn new(spec: impl Into<Spec>) -> Self {
        Self { spec: spec.into() }
    }
}

/// Health of an applied resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Health {
    /// Running as desired.
    Healthy,
    /// Not there yet; keep waiting (up to the health timeout).
    Progressing,
    /// Failed; the engine stops waiting at once.
    Degraded {
        /// Why, in the target's words.
        reason: String,
    },
    /// Not present in the target.
    Missing,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => f.write_str("healthy"),
            Health::Progressing => f.write_str("progressing"),
            Health::Degraded { reason } => write!(f, "degraded: {reason}"),
            Health::Missing => f.write_str("missing"),
        }
    }
}

/// What the engine applied before, for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// [`Resource::digest`] of what was applied.
    pub digest: String,
    /// Its dependencies at the time, so deletes can run in reverse order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ResourceId>,
    /// Whether it may be pruned (the manifest's prune annotation when applied).
    #[serde(default = "yes")]
    pub prune: bool,
}

fn yes() -> bool {
    true
}

/// The ids (and digests) this engine applied: the only things it may prune.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Inventory {
    entries: BTreeMap<ResourceId, InventoryEntry>,
}

impl Inventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `resource` was applied.
    pub fn record(&mut self, resource: &Resource) {
        self.entries.insert(
            resource.id.clone(),
            InventoryEntry {
                digest: resource.digest(),
                depends_on: resource.depends_on.clone(),
                prune: resource.policy.prune,
            },
        );
    }

    /// Inserts an entry directly.
    pub fn insert(&mut self, id: ResourceId, entry: InventoryEntry) {
        self.entries.insert(id, entry);
    }

    /// Forgets an id (after it was deleted from the target).
    pub fn remove(&mut self, id: &ResourceId) -> Option<InventoryEntry> {
        self.entries.remove(id)
    }

    /// Whether `id` is managed by this engine.
    pub fn contains(&self, id: &ResourceId) -> bool {
        self.entries.contains_key(id)
    }

    /// One entry.
    pub fn get(&self, id: &ResourceId) -> Option<&InventoryEntry> {
        self.entries.get(id)
    }

    /// All entries, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceId, &InventoryEntry)> {
        self.entries.iter()
    }

    /// Number of managed ids.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is managed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_display() {
        let rev = Revision::new("main", "a".repeat(40));
        assert_eq!(rev.to_string(), format!("main@sha1:{}", "a".repeat(40)));
        let rev = Revision::new("v1.2.0", "b".repeat(64));
        assert!(rev.to_string().starts_with("v1.2.0@sha256:"));
    }

    #[test]
    fn snapshot_refuses_hostile_paths() {
        let mut snap = Snapshot::new(Revision::new("main", "0"));
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "./a",
            ".git/config",
            "a/.GIT/x",
            "a//b",
            "a\0b",
            "a\\b",
        ] {
            let err = snap.insert(bad, &b""[..], false).unwrap_err();
            assert_eq!(err.path, bad);
        }
        snap.insert("dir/app.yaml", &b"x"[..], false).unwrap();
        assert_eq!(snap.get("dir/app.yaml"), Some(&b"x"[..]));
    }

    #[test]
    fn digest_is_canonical() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":[1,2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":[1,2],"b":1}"#).unwrap();
        assert_eq!(Spec::from(&a).digest(), Spec::from(&b).digest());
        assert_eq!(Spec::from(&a).digest().len(), 64);
        assert_ne!(
            Spec::from(&a).digest(),
            Spec::from(serde_json::json!({"a":[2,1],"b":1})).digest()
        );
    }
}
