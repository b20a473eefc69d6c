//! Reading from the cache, without the network: commits as revisions,
//! history, snapshots.

use gitops_core::{Cancel, Revision, Snapshot, SourceError};
use gix::bstr::ByteSlice;

use crate::error::objects;
use crate::snapshot::{BlobCache, ReadOptions};
use crate::verify::VerifyMode;

use super::signatures::verify_commit;
use super::{Inner, lock};

/// Parses a full object id as stored in a [`Revision`].
pub(crate) fn parse_id(id: &str) -> Result<gix::ObjectId, SourceError> {
    gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| SourceError::Other {
        message: format!("revision id {id:?} is not a full object id: {e}"),
        transient: false,
        source: None,
    })
}

fn not_cached(id: &str) -> SourceError {
    SourceError::ReferenceNotFound {
        reference: id.to_owned(),
        message: "commit is not in the cache repository (poll for it first)".to_owned(),
    }
}

/// The files of `revision`, read from the cache (reusing the blobs of the
/// previous snapshot).
pub(super) fn snapshot_blocking(
    inner: &Inner,
    revision: &Revision,
    cancel: &Cancel,
) -> Result<Snapshot, SourceError> {
    let repo = inner.repo.to_thread_local();
    let id = parse_id(&revision.id)?;
    if !repo.has_object(id) {
        return Err(not_cached(&revision.id));
    }
    if let Some((VerifyMode::Head | VerifyMode::TagAndHead, signers)) = &inner.verify {
        verify_commit(&repo, id, signers)?;
    }
    // Blobs of the previous snapshot are reused (a concurrent snapshot just
    // finds the cache empty and reads everything).
    let previous = std::mem::take(&mut *lock(&inner.blob_cache));
    let mut next = BlobCache::with_capacity(previous.len());
    let snapshot = crate::snapshot::read(
        &repo,
        revision,
        id,
        &ReadOptions {
            path: inner.path.as_deref(),
            limits: inner.limits,
            special: inner.special,
            cancel,
        },
        &previous,
        &mut next,
    );
    *lock(&inner.blob_cache) = if snapshot.is_ok() { next } else { previous };
    snapshot
}

/// The commits of `to` not in `from`, newest first, at most `limit`.
pub(super) fn history_blocking(
    inner: &Inner,
    from: Option<&str>,
    to: &Revision,
    limit: usize,
) -> Result<Vec<Revision>, SourceError> {
    let repo = inner.repo.to_thread_local();
    let tip = parse_id(&to.id)?;
    if !repo.has_object(tip) {
        return Err(not_cached(&to.id));
    }
    let mut walk = repo
        .rev_walk([tip])
        .sorting(gix::revision::walk::Sorting::ByCommitTime(
            Default::default(),
        ));
    if let Some(from) = from {
        let hidden = parse_id(from)?;
        if !repo.has_object(hidden) {
            return Err(not_cached(from));
        }
        walk = walk.with_hidden([hidden]);
    }
    let walk = walk
        .all()
        .map_err(|e| objects(format!("history of {}", to.id), e))?;
    let mut out = Vec::new();
    for info in walk.take(limit) {
        let info = info.map_err(|e| objects(format!("history of {}", to.id), e))?;
        out.push(revision_of(&repo, info.id, to.reference.clone())?);
    }
    Ok(out)
}

/// Builds a [`Revision`] from a commit in the cache.
pub(crate) fn revision_of(
    repo: &gix::Repository,
    id: gix::ObjectId,
    reference: String,
) -> Result<Revision, SourceError> {
    let commit = repo
        .find_commit(id)
        .map_err(|e| objects(format!("commit {id}"), e))?;
    let mut revision = Revision::new(reference, id.to_string());
    if let Ok(author) = commit.author() {
        revision.author = format!("{} <{}>", author.name, author.email);
    }
    revision.committed_at = commit.time().map(|t| t.seconds).unwrap_or_default();
    revision.message = commit.message_raw_sloppy().to_str_lossy().into_owned();
    Ok(revision)
}

/// Resolves a full or abbreviated commit id in the cache. `Ok(None)`: not present.
pub(super) fn resolve_commit(
    repo: &gix::Repository,
    prefix: &str,
) -> Result<Option<gix::ObjectId>, SourceError> {
    if prefix.len() == repo.object_hash().len_in_hex() {
        let id = parse_id(prefix)?;
        return Ok(repo.find_commit(id).ok().map(|c| c.id));
    }
    let Ok(prefix_id) = gix::hash::Prefix::from_hex(prefix) else {
        return Ok(None);
    };
    match repo.objects.lookup_prefix(prefix_id, None) {
        Ok(Some(Ok(id))) => Ok(repo.find_commit(id).ok().map(|c| c.id)),
        Ok(Some(Err(()))) => Err(SourceError::ReferenceNotFound {
            reference: prefix.to_owned(),
            message: "the abbreviated commit id is ambiguous; use more digits".to_owned(),
        }),
        Ok(None) => Ok(None),
        Err(e) => Err(objects(format!("looking up commit {prefix}"), e)),
    }
}
