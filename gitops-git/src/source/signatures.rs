//! Signature checks of the release: the commit, the annotated tag, or both
//! (per [`VerifyMode`]).

use std::time::SystemTime;

use gitops_core::{Revision, SourceError};
use gix::bstr::ByteSlice;

use crate::error::objects;
use crate::trust::TrustedSigners;
use crate::verify::{VerifyMode, split_tag_signature, system_time};

use super::Inner;
use super::read::revision_of;

/// Checks the commit's signature (SSH or OpenPGP) against `signers`.
pub(super) fn verify_commit(
    repo: &gix::Repository,
    id: gix::ObjectId,
    signers: &TrustedSigners,
) -> Result<(), SourceError> {
    let fail = |reason: String| SourceError::Verification {
        commit: id.to_string(),
        reason,
    };
    let commit = repo
        .find_commit(id)
        .map_err(|e| objects(format!("commit {id}"), e))?;
    let signature = commit
        .signature()
        .map_err(|e| fail(format!("unreadable commit: {e}")))?;
    let Some((armored, signed)) = signature else {
        return Err(fail("commit is not signed".to_owned()));
    };
    let payload = signed.to_bstring();
    // The committer time, for SSH: see `AllowedSigners` on why (an OpenPGP
    // signature carries its own).
    let time = commit
        .time()
        .map_err(|e| fail(format!("unreadable committer time: {e}")))?;
    let principal = signers
        .verify_at(&payload, armored.as_bytes(), system_time(time.seconds))
        .map_err(|r| fail(format!("commit signature: {r}")))?;
    tracing::debug!(commit = %id, signer = %principal, "commit signature verified");
    Ok(())
}

/// Checks the signature (SSH or OpenPGP) of the annotated tag `tag_name` (`tag_id`).
fn verify_tag(
    repo: &gix::Repository,
    tag_name: &str,
    tag_id: Option<gix::ObjectId>,
    commit: gix::ObjectId,
    signers: &TrustedSigners,
) -> Result<(), SourceError> {
    let fail = |reason: String| SourceError::Verification {
        commit: commit.to_string(),
        reason: format!("tag {tag_name}: {reason}"),
    };
    let Some(tag_id) = tag_id else {
        return Err(fail(
            "is a lightweight tag; only annotated tags carry signatures".to_owned(),
        ));
    };
    let object = repo
        .find_object(tag_id)
        .map_err(|e| objects(format!("tag {tag_name}"), e))?;
    let Some((payload, armored)) = split_tag_signature(&object.data) else {
        return Err(fail("tag is not signed".to_owned()));
    };
    // The tagger time (a tag without one is checked against now, as git does).
    let tagger = gix::objs::TagRefIter::from_bytes(&object.data, tag_id.kind())
        .tagger()
        .map_err(|e| fail(format!("unreadable tag: {e}")))?;
    let signed_at = match tagger {
        Some(tagger) => system_time(
            tagger
                .time()
                .map_err(|e| fail(format!("unreadable tagger time: {e}")))?
                .seconds,
        ),
        None => SystemTime::now(),
    };
    let principal = signers
        .verify_at(payload, armored, signed_at)
        .map_err(fail)?;
    tracing::debug!(tag = tag_name, signer = %principal, "tag signature verified");
    Ok(())
}

/// Verifies (per mode) and builds the revision.
pub(super) fn finish(
    inner: &Inner,
    repo: &gix::Repository,
    commit: gix::ObjectId,
    tag: Option<(&str, gix::ObjectId)>,
    reference: String,
) -> Result<Revision, SourceError> {
    if let Some((mode, signers)) = &inner.verify {
        if matches!(mode, VerifyMode::Tag | VerifyMode::TagAndHead) {
            verify_tag(repo, &reference, tag.map(|(_, id)| id), commit, signers)?;
        }
        if matches!(mode, VerifyMode::Head | VerifyMode::TagAndHead) {
            verify_commit(repo, commit, signers)?;
        }
    }
    revision_of(repo, commit, reference)
}
