//! The commit: the edited files computed from the deployed revision, the
//! tree and (signed) commit written on a parent, and the check that the
//! parent did not change those files.

use std::collections::BTreeMap;

use gitops_core::model::SnapshotFile;
use gitops_core::writeback::Drifted;
use gitops_core::{FileEdit, WritebackError};

use crate::error::chain;
use crate::push::failed;

use super::{Identity, WritebackInner};

/// One file's new state, by repository path.
pub(super) type Edits = BTreeMap<String, Option<(Vec<u8>, bool)>>;

impl WritebackInner {
    /// The path of a snapshot file in the repository.
    pub(super) fn repo_path(&self, snapshot_path: &str) -> String {
        match &self.source.shared().path {
            Some(prefix) => format!("{}/{snapshot_path}", prefix.trim_end_matches('/')),
            None => snapshot_path.to_owned(),
        }
    }

    /// The new content of every file touched, computed from the deployed revision.
    pub(super) fn edits(
        &self,
        repo: &gix::Repository,
        deployed: gix::ObjectId,
        drifted: &[Drifted],
    ) -> Result<Edits, WritebackError> {
        let tree = repo
            .find_commit(deployed)
            .and_then(|c| c.tree())
            .map_err(|e| failed(format!("commit {deployed}: {}", chain(&e)), false))?;
        let mut edits: Edits = BTreeMap::new();
        // Later documents first, so removing one does not shift the others.
        let mut order: Vec<&Drifted> = drifted.iter().collect();
        order.sort_by(|a, b| {
            (&a.resource.origin.path, b.resource.origin.document)
                .cmp(&(&b.resource.origin.path, a.resource.origin.document))
        });
        for d in order {
            let path = self.repo_path(&d.resource.origin.path);
            let current = match edits.get(&path) {
                Some(Some((data, executable))) => SnapshotFile {
                    data: data.clone().into(),
                    executable: *executable,
                },
                // The file is already removed by an earlier document's edit.
                Some(None) => continue,
                None => {
                    let entry = tree
                        .lookup_entry_by_path(&path)
                        .map_err(|e| failed(format!("{path}: {}", chain(&e)), false))?
                        .filter(|e| e.mode().is_blob())
                        .ok_or_else(|| {
                            failed(format!("{path} is not a file in {deployed}"), false)
                        })?;
                    let executable = entry.mode().is_executable();
                    let blob = repo
                        .find_blob(entry.object_id())
                        .map_err(|e| failed(format!("{path}: {}", chain(&e)), false))?;
                    SnapshotFile {
                        data: blob.data.clone().into(),
                        executable,
                    }
                }
            };
            let edit = self
                .render
                .write_back(&current, &d.resource, d.observed.as_ref())
                .map_err(|e| WritebackError::Failed {
                    message: e.to_string(),
                    transient: false,
                    source: Some(Box::new(e)),
                })?;
            let next = match edit {
                FileEdit::Write { data, executable } => Some((data, executable)),
                FileEdit::Remove => None,
            };
            edits.insert(path, next);
        }
        Ok(edits)
    }

    /// Writes the edited tree on top of `parent` and a commit; `None` when
    /// the tree does not change.
    pub(super) fn commit(
        &self,
        repo: &gix::Repository,
        parent: gix::ObjectId,
        edits: &Edits,
        message: &str,
    ) -> Result<Option<gix::ObjectId>, WritebackError> {
        let git = |what: &str, e: &dyn std::error::Error| failed(format!("{what}: {e}"), false);
        let parent_tree = repo
            .find_commit(parent)
            .and_then(|c| c.tree_id())
            .map_err(|e| git("parent tree", &e))?
            .detach();
        let mut editor = repo
            .edit_tree(parent_tree)
            .map_err(|e| git("edit tree", &e))?;
        for (path, edit) in edits {
            match edit {
                Some((data, executable)) => {
                    let blob = repo.write_blob(data).map_err(|e| git("write blob", &e))?;
                    let kind = if *executable {
                        gix::object::tree::EntryKind::BlobExecutable
                    } else {
                        gix::object::tree::EntryKind::Blob
                    };
                    editor
                        .upsert(path.as_str(), kind, blob.detach())
                        .map_err(|e| git(path, &e))?;
                }
                None => {
                    editor.remove(path.as_str()).map_err(|e| git(path, &e))?;
                }
            }
        }
        let tree = editor.write().map_err(|e| git("write tree", &e))?.detach();
        if tree == parent_tree {
            return Ok(None);
        }
        let now = gix::date::Time::now_utc();
        let signature = |who: &Identity| gix::actor::Signature {
            name: who.name.as_str().into(),
            email: who.email.as_str().into(),
            time: now,
        };
        let mut commit = gix::objs::Commit {
            tree,
            parents: [parent].into_iter().collect(),
            author: signature(&self.author),
            committer: signature(&self.committer),
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        if let Some(key) = &self.signer {
            use gix::objs::WriteTo as _;
            let mut payload = Vec::new();
            commit
                .write_to(&mut payload)
                .map_err(|e| git("serialise commit", &e))?;
            let signature = key
                .sign("git", ssh_key::HashAlg::Sha512, &payload)
                .and_then(|s| s.to_pem(ssh_key::LineEnding::LF))
                .map_err(|e| failed(format!("signing the commit: {e}"), false))?;
            commit
                .extra_headers
                .push(("gpgsig".into(), signature.trim_end().into()));
        }
        let id = repo
            .write_object(&commit)
            .map_err(|e| git("write commit", &e))?;
        Ok(Some(id.detach()))
    }

    /// The first edited path that changed between the deployed commit and
    /// `parent` to something other than the edit itself: a file upstream
    /// already holding exactly the new content (the engine's own earlier
    /// commit, or someone recording the same change) is not a conflict.
    pub(super) fn conflicting_path(
        repo: &gix::Repository,
        deployed: gix::ObjectId,
        parent: gix::ObjectId,
        edits: &Edits,
    ) -> Result<Option<String>, WritebackError> {
        use gix::object::tree::EntryKind;
        let tree = |id: gix::ObjectId| {
            repo.find_commit(id)
                .and_then(|c| c.tree())
                .map_err(|e| failed(format!("commit {id}: {}", chain(&e)), true))
        };
        let (ta, tb) = (tree(deployed)?, tree(parent)?);
        for (path, edit) in edits {
            let entry = |t: &gix::Tree<'_>| {
                t.lookup_entry_by_path(path)
                    .map(|e| e.map(|e| (e.mode().kind(), e.object_id())))
                    .map_err(|e| failed(format!("{path}: {}", chain(&e)), true))
            };
            let upstream = entry(&tb)?;
            if entry(&ta)? == upstream {
                continue;
            }
            let wanted = match edit {
                Some((data, executable)) => {
                    let id =
                        gix::objs::compute_hash(repo.object_hash(), gix::object::Kind::Blob, data)
                            .map_err(|e| failed(format!("{path}: hashing: {e}"), false))?;
                    let kind = if *executable {
                        EntryKind::BlobExecutable
                    } else {
                        EntryKind::Blob
                    };
                    Some((kind, id))
                }
                None => None,
            };
            if upstream != wanted {
                return Ok(Some(path.clone()));
            }
        }
        Ok(None)
    }
}
