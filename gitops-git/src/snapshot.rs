//! Reading one commit's tree into a [`Snapshot`], with limits and path checks.

use gitops_core::model::validate_relative_path;
use gitops_core::{Revision, Snapshot, SourceError};
use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;

use crate::error::objects;

/// Limits on what one snapshot may contain. Sizes are checked from the object
/// header before any content is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file, in bytes (default 10 MiB).
    pub max_file_bytes: u64,
    /// Largest sum of all file sizes, in bytes (default 256 MiB).
    pub max_total_bytes: u64,
    /// Most files (default 100,000).
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 10 * 1024 * 1024,
            max_total_bytes: 256 * 1024 * 1024,
            max_files: 100_000,
        }
    }
}

/// What to do with symbolic links and submodules (gitlinks) in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpecialEntries {
    /// Refuse the whole revision (default).
    #[default]
    Refuse,
    /// Leave them out of the snapshot and log a warning (`tracing`).
    Skip,
}

pub(crate) struct ReadOptions<'a> {
    pub path: Option<&'a str>,
    pub limits: Limits,
    pub special: SpecialEntries,
}

/// Blob contents of the previous snapshot by id: unchanged files are shared,
/// not read again (a one-file commit reads one blob).
pub(crate) type BlobCache = std::collections::HashMap<gix::ObjectId, std::sync::Arc<[u8]>>;

fn rejected(path: impl Into<String>, reason: impl Into<String>) -> SourceError {
    SourceError::Rejected {
        path: path.into(),
        reason: reason.into(),
    }
}

const COMPONENT_OPTIONS: gix::validate::path::component::Options =
    gix::validate::path::component::Options {
        protect_windows: true,
        protect_hfs: true,
        protect_ntfs: true,
    };

/// Reads the tree of `commit` under `options.path`.
pub(crate) fn read(
    repo: &gix::Repository,
    revision: &Revision,
    commit_id: gix::ObjectId,
    options: &ReadOptions<'_>,
    previous: &BlobCache,
    next: &mut BlobCache,
) -> Result<Snapshot, SourceError> {
    let commit = repo
        .find_commit(commit_id)
        .map_err(|e| objects(format!("commit {commit_id}"), e))?;
    let root = commit
        .tree_id()
        .map_err(|e| objects(format!("tree of commit {commit_id}"), e))?
        .detach();
    let start = match options.path {
        None => root,
        Some(sub) => {
            let tree = repo
                .find_tree(root)
                .map_err(|e| objects(format!("tree of commit {commit_id}"), e))?;
            let entry = tree
                .lookup_entry_by_path(sub)
                .map_err(|e| objects(format!("path {sub} in commit {commit_id}"), e))?
                .ok_or_else(|| rejected(sub, format!("not found in commit {commit_id}")))?;
            if !entry.mode().is_tree() {
                return Err(rejected(
                    sub,
                    format!("is not a directory in commit {commit_id}"),
                ));
            }
            entry.object_id()
        }
    };

    let limits = options.limits;
    let mut snapshot = Snapshot::new(revision.clone());
    let mut files = 0usize;
    let mut total = 0u64;
    let mut stack: Vec<(String, gix::ObjectId)> = vec![(String::new(), start)];
    while let Some((dir, tree_id)) = stack.pop() {
        let tree = repo
            .find_tree(tree_id)
            .map_err(|e| objects(format!("tree {tree_id} at {dir:?}"), e))?;
        let decoded = tree
            .decode()
            .map_err(|e| objects(format!("tree {tree_id} at {dir:?}"), e))?;
        for entry in &decoded.entries {
            let raw = entry.filename;
            let shown = printable(&raw.to_str_lossy());
            let display = if dir.is_empty() {
                shown
            } else {
                format!("{dir}/{shown}")
            };
            let kind = entry.mode.kind();
            let mode = matches!(kind, EntryKind::Link)
                .then_some(gix::validate::path::component::Mode::Symlink);
            gix::validate::path::component(raw, mode, COMPONENT_OPTIONS)
                .map_err(|e| rejected(&display, format!("unsafe path component: {e}")))?;
            let Ok(name) = raw.to_str() else {
                return Err(rejected(display, "file name is not UTF-8"));
            };
            let path = if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            };
            validate_relative_path(&path).map_err(|e| rejected(&path, e.reason))?;
            let id = entry.oid.to_owned();
            match kind {
                EntryKind::Tree => stack.push((path, id)),
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    files += 1;
                    if files > limits.max_files {
                        return Err(rejected(
                            path,
                            format!(
                                "more than {} files in the snapshot (limit max_files)",
                                limits.max_files
                            ),
                        ));
                    }
                    let cached = previous.get(&id).cloned();
                    let size = match &cached {
                        Some(data) => data.len() as u64,
                        None => repo
                            .find_header(id)
                            .map_err(|e| objects(format!("blob {id} at {path}"), e))?
                            .size(),
                    };
                    if size > limits.max_file_bytes {
                        return Err(rejected(
                            path,
                            format!(
                                "file is {size} bytes, larger than the limit of {} bytes (max_file_bytes)",
                                limits.max_file_bytes
                            ),
                        ));
                    }
                    total = total.saturating_add(size);
                    if total > limits.max_total_bytes {
                        return Err(rejected(
                            path,
                            format!(
                                "snapshot exceeds {} bytes in total (limit max_total_bytes)",
                                limits.max_total_bytes
                            ),
                        ));
                    }
                    let data: std::sync::Arc<[u8]> = match cached {
                        Some(data) => data,
                        None => repo
                            .find_blob(id)
                            .map_err(|e| objects(format!("blob {id} at {path}"), e))?
                            .take_data()
                            .into(),
                    };
                    next.insert(id, data.clone());
                    snapshot
                        .insert(path, data, matches!(kind, EntryKind::BlobExecutable))
                        .map_err(|e| rejected(e.path, e.reason))?;
                }
                EntryKind::Link | EntryKind::Commit => {
                    let what = if matches!(kind, EntryKind::Link) {
                        "symbolic link"
                    } else {
                        "submodule"
                    };
                    match options.special {
                        SpecialEntries::Refuse => {
                            return Err(rejected(
                                path,
                                format!("{what} refused (not followed; see SpecialEntries)"),
                            ));
                        }
                        SpecialEntries::Skip => {
                            tracing::warn!(path = %path, kind = what, revision = %revision, "skipping {what} in snapshot");
                        }
                    }
                }
            }
        }
    }
    Ok(snapshot)
}

/// A name safe to print: control characters escaped.
fn printable(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
