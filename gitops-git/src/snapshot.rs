//! Reading one commit's tree into a [`Snapshot`], with limits and path checks.
//!
//! Two passes: [`measure`] sizes the tree first (every unique tree object
//! decoded once, its entry count and height remembered by id), so a tree
//! that repeats a subtree many times is refused from a handful of objects
//! before any walk; then [`read`] walks it, checking paths and file sizes.

use std::collections::HashMap;

use gitops_core::model::validate_relative_path;
use gitops_core::{Cancel, Revision, Snapshot, SourceError};
use gix::bstr::{BStr, ByteSlice};
use gix::objs::tree::EntryKind;

use crate::error::objects;

/// Limits on what one snapshot may contain. Sizes are checked from the object
/// header before any content is read; entries and depth are counted before
/// the tree is walked.
///
/// The defaults are generous for real repositories; a tree of repeated
/// subtrees (a "tree bomb": 64 copies of a subtree, 6 levels deep, is 10
/// objects and 64^6 entries) is refused by `max_entries`, not walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file, in bytes (default 10 MiB, [`gitops_core::MAX_FILE_BYTES`]).
    pub max_file_bytes: u64,
    /// Largest sum of all file sizes, in bytes (default 256 MiB).
    pub max_total_bytes: u64,
    /// Most files (default 100,000).
    pub max_files: usize,
    /// Most tree entries visited in one snapshot: files, directories, links
    /// and submodules, a subtree counted each time it is referenced
    /// (default 1,000,000).
    pub max_entries: u64,
    /// Deepest directory nesting below the snapshot's root (default 64).
    pub max_depth: usize,
    /// Largest single tree (directory) object, in bytes, checked from its
    /// header before it is decoded (default 10 MiB: about 250,000 entries).
    pub max_tree_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: gitops_core::MAX_FILE_BYTES,
            max_total_bytes: 256 * 1024 * 1024,
            max_files: 100_000,
            max_entries: 1_000_000,
            max_depth: 64,
            max_tree_bytes: 10 * 1024 * 1024,
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
    pub cancel: &'a Cancel,
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
    let start = start_tree(repo, commit_id, options.path)?;
    let root = options.path.unwrap_or_default();
    Measure::new(repo, &options.limits, options.cancel).tree(start, root, 0)?;
    let mut snapshot = Snapshot::new(revision.clone());
    let mut tally = Tally::default();
    let mut stack: Vec<(String, gix::ObjectId)> = vec![(String::new(), start)];
    while let Some((dir, tree_id)) = stack.pop() {
        cancelled(options.cancel)?;
        let tree = repo
            .find_tree(tree_id)
            .map_err(|e| objects(format!("tree {tree_id} at {dir:?}"), e))?;
        let decoded = tree
            .decode()
            .map_err(|e| objects(format!("tree {tree_id} at {dir:?}"), e))?;
        for entry in &decoded.entries {
            let kind = entry.mode.kind();
            let path = entry_path(&dir, entry.filename, kind)?;
            let id = entry.oid.to_owned();
            match kind {
                EntryKind::Tree => stack.push((path, id)),
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    tally.file(&options.limits, &path)?;
                    let cached = previous.get(&id).cloned();
                    let size = match &cached {
                        Some(data) => data.len() as u64,
                        None => repo
                            .find_header(id)
                            .map_err(|e| objects(format!("blob {id} at {path}"), e))?
                            .size(),
                    };
                    tally.bytes(&options.limits, &path, size)?;
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
                    let what = special_entry(&path, kind, options.special)?;
                    tracing::warn!(path = %path, kind = what, revision = %revision, "skipping {what} in snapshot");
                }
            }
        }
    }
    Ok(snapshot)
}

/// A transient error when `cancel` is set: the caller stopped waiting.
fn cancelled(cancel: &Cancel) -> Result<(), SourceError> {
    if cancel.is_cancelled() {
        return Err(SourceError::Other {
            message: "snapshot cancelled (deadline or shutdown)".to_owned(),
            transient: true,
            source: None,
        });
    }
    Ok(())
}

/// What [`Measure`] remembers of a tree it decoded: the entries below it
/// (each subtree counted as often as it is referenced) and its height (0
/// for a tree without subtrees).
#[derive(Debug, Clone, Copy)]
struct Size {
    entries: u64,
    height: usize,
}

/// Sizes a tree before it is walked, against `max_entries`, `max_depth`
/// and `max_tree_bytes`: each unique tree object is read once (its header
/// checked first), so repeated subtrees cost one lookup each.
struct Measure<'a> {
    repo: &'a gix::Repository,
    limits: &'a Limits,
    cancel: &'a Cancel,
    seen: HashMap<gix::ObjectId, Size>,
}

impl<'a> Measure<'a> {
    fn new(repo: &'a gix::Repository, limits: &'a Limits, cancel: &'a Cancel) -> Self {
        Self {
            repo,
            limits,
            cancel,
            seen: HashMap::new(),
        }
    }

    /// The size of the tree `id` at `path`, `depth` directories below the
    /// snapshot's root; refused as soon as a limit is passed.
    fn tree(&mut self, id: gix::ObjectId, path: &str, depth: usize) -> Result<Size, SourceError> {
        let limits = self.limits;
        if let Some(size) = self.seen.get(&id).copied() {
            self.depth(path, depth.saturating_add(size.height))?;
            return Ok(size);
        }
        self.depth(path, depth)?;
        cancelled(self.cancel)?;
        let shown = if path.is_empty() { "/" } else { path };
        let bytes = self
            .repo
            .find_header(id)
            .map_err(|e| objects(format!("tree {id} at {shown}"), e))?
            .size();
        if bytes > limits.max_tree_bytes {
            return Err(rejected(
                shown,
                format!(
                    "directory object is {bytes} bytes, larger than the limit of {} bytes (max_tree_bytes)",
                    limits.max_tree_bytes
                ),
            ));
        }
        let tree = self
            .repo
            .find_tree(id)
            .map_err(|e| objects(format!("tree {id} at {shown}"), e))?;
        let decoded = tree
            .decode()
            .map_err(|e| objects(format!("tree {id} at {shown}"), e))?;
        let mut size = Size {
            entries: decoded.entries.len() as u64,
            height: 0,
        };
        self.entries(shown, size.entries)?;
        for entry in decoded.entries.iter().filter(|e| e.mode.is_tree()) {
            let name = printable(&entry.filename.to_str_lossy());
            let child = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            let below = self.tree(entry.oid.to_owned(), &child, depth + 1)?;
            size.entries = size.entries.saturating_add(below.entries);
            size.height = size.height.max(below.height + 1);
            self.entries(&child, size.entries)?;
        }
        self.seen.insert(id, size);
        Ok(size)
    }

    /// Refuses `entries` over `max_entries`, at `path`.
    fn entries(&self, path: &str, entries: u64) -> Result<(), SourceError> {
        if entries > self.limits.max_entries {
            return Err(rejected(
                path,
                format!(
                    "more than {} tree entries in the snapshot (limit max_entries; \
                     a subtree counts each time it is referenced)",
                    self.limits.max_entries
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a directory nested `depth` levels deep, over `max_depth`, at `path`.
    fn depth(&self, path: &str, depth: usize) -> Result<(), SourceError> {
        if depth > self.limits.max_depth {
            return Err(rejected(
                path,
                format!(
                    "directories nested more than {} levels deep (limit max_depth)",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(())
    }
}

/// The tree the snapshot starts from: the commit's root, or the directory
/// `path` in it.
fn start_tree(
    repo: &gix::Repository,
    commit_id: gix::ObjectId,
    path: Option<&str>,
) -> Result<gix::ObjectId, SourceError> {
    let commit = repo
        .find_commit(commit_id)
        .map_err(|e| objects(format!("commit {commit_id}"), e))?;
    let root = commit
        .tree_id()
        .map_err(|e| objects(format!("tree of commit {commit_id}"), e))?
        .detach();
    let Some(sub) = path else {
        return Ok(root);
    };
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
    Ok(entry.object_id())
}

/// The checked path of the entry `raw` (of `kind`) in directory `dir`:
/// every component passes gix's Windows, NTFS and HFS checks, the name is
/// UTF-8 and the whole path is a safe relative path.
fn entry_path(dir: &str, raw: &BStr, kind: EntryKind) -> Result<String, SourceError> {
    let shown = printable(&raw.to_str_lossy());
    let display = if dir.is_empty() {
        shown
    } else {
        format!("{dir}/{shown}")
    };
    let mode =
        matches!(kind, EntryKind::Link).then_some(gix::validate::path::component::Mode::Symlink);
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
    Ok(path)
}

/// Files and bytes counted so far, against the [`Limits`].
#[derive(Debug, Default)]
struct Tally {
    files: usize,
    total: u64,
}

impl Tally {
    /// Counts one more file at `path`.
    fn file(&mut self, limits: &Limits, path: &str) -> Result<(), SourceError> {
        self.files += 1;
        if self.files > limits.max_files {
            return Err(rejected(
                path,
                format!(
                    "more than {} files in the snapshot (limit max_files)",
                    limits.max_files
                ),
            ));
        }
        Ok(())
    }

    /// Counts the `size` bytes of the file at `path`.
    fn bytes(&mut self, limits: &Limits, path: &str, size: u64) -> Result<(), SourceError> {
        if size > limits.max_file_bytes {
            return Err(rejected(
                path,
                format!(
                    "file is {size} bytes, larger than the limit of {} bytes (max_file_bytes)",
                    limits.max_file_bytes
                ),
            ));
        }
        self.total = self.total.saturating_add(size);
        if self.total > limits.max_total_bytes {
            return Err(rejected(
                path,
                format!(
                    "snapshot exceeds {} bytes in total (limit max_total_bytes)",
                    limits.max_total_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// A symbolic link or submodule at `path`: refused, or (with
/// [`SpecialEntries::Skip`]) what it is, for the warning.
fn special_entry(
    path: &str,
    kind: EntryKind,
    special: SpecialEntries,
) -> Result<&'static str, SourceError> {
    let what = if matches!(kind, EntryKind::Link) {
        "symbolic link"
    } else {
        "submodule"
    };
    match special {
        SpecialEntries::Refuse => Err(rejected(
            path,
            format!("{what} refused (not followed; see SpecialEntries)"),
        )),
        SpecialEntries::Skip => Ok(what),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(err: SourceError) -> (String, String) {
        match err {
            SourceError::Rejected { path, reason } => (path, reason),
            other => panic!("not a rejection: {other:?}"),
        }
    }

    #[test]
    fn entry_paths_are_joined_and_checked() {
        let blob = EntryKind::Blob;
        assert_eq!(entry_path("", "a.yaml".into(), blob).unwrap(), "a.yaml");
        assert_eq!(
            entry_path("x/y", "a.yaml".into(), blob).unwrap(),
            "x/y/a.yaml"
        );
        let (path, why) = reason(entry_path("x", ".git".into(), EntryKind::Tree).unwrap_err());
        assert_eq!(path, "x/.git");
        assert!(why.starts_with("unsafe path component"), "{why}");
        let (path, _) = reason(entry_path("x", "..".into(), EntryKind::Tree).unwrap_err());
        assert_eq!(path, "x/..");
        let (path, _) = reason(entry_path("", b"a\x01b".as_slice().into(), blob).unwrap_err());
        assert_eq!(path, "a\\u{1}b", "control characters are escaped");
        let (_, why) = reason(entry_path("", b"\xff.yaml".as_slice().into(), blob).unwrap_err());
        assert_eq!(why, "file name is not UTF-8");
    }

    #[test]
    fn the_file_limit_is_the_one_shared_with_the_target_and_the_renderer() {
        assert_eq!(
            Limits::default().max_file_bytes,
            gitops_core::MAX_FILE_BYTES
        );
        assert_eq!(
            gitops_core::manifest::DEFAULT_MAX_FILE_SIZE as u64,
            gitops_core::MAX_FILE_BYTES
        );
    }

    #[test]
    fn the_tally_refuses_too_many_files_and_bytes() {
        let limits = Limits {
            max_file_bytes: 10,
            max_total_bytes: 15,
            max_files: 2,
            ..Limits::default()
        };
        let mut tally = Tally::default();
        tally.file(&limits, "a").unwrap();
        tally.bytes(&limits, "a", 10).unwrap();
        let (path, why) = reason(tally.bytes(&limits, "b", 11).unwrap_err());
        assert_eq!(path, "b");
        assert!(why.contains("max_file_bytes"), "{why}");
        tally.file(&limits, "c").unwrap();
        let (path, why) = reason(tally.bytes(&limits, "c", 6).unwrap_err());
        assert_eq!(path, "c");
        assert!(why.contains("max_total_bytes"), "{why}");
        let (path, why) = reason(tally.file(&limits, "d").unwrap_err());
        assert_eq!(path, "d");
        assert!(why.contains("max_files"), "{why}");
    }

    #[test]
    fn special_entries_are_refused_or_named_for_the_warning() {
        let (path, why) =
            reason(special_entry("l", EntryKind::Link, SpecialEntries::Refuse).unwrap_err());
        assert_eq!(path, "l");
        assert_eq!(
            why,
            "symbolic link refused (not followed; see SpecialEntries)"
        );
        let why = special_entry("m", EntryKind::Commit, SpecialEntries::Refuse).unwrap_err();
        assert!(reason(why).1.starts_with("submodule refused"));
        assert_eq!(
            special_entry("l", EntryKind::Link, SpecialEntries::Skip).unwrap(),
            "symbolic link"
        );
        assert_eq!(
            special_entry("m", EntryKind::Commit, SpecialEntries::Skip).unwrap(),
            "submodule"
        );
    }
}
