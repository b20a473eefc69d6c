//! Promotion: a candidate that passed its stage goes through the promoter,
//! into the stage's audit log, and on to the next stage. What to hand on
//! and what to record are pure functions ([`handed_on`], [`detail`],
//! [`record`]); [`Inner::pass`] acts on them.

use std::time::{Duration, SystemTime};

use super::{Inner, StageRuntime};
use crate::engine::Trigger;
use crate::id::ResourceId;
use crate::model::Revision;
use crate::store::{AuditAction, AuditRecord, StoreError};
use crate::sync::LockExt as _;

/// How often the audit record is written again when the engine wrote the
/// stage's inventory in between.
const AUDIT_ATTEMPTS: usize = 5;

/// What the next stage runs after `candidate` passed: what the promoter
/// answered (a tag, a moved branch), or the candidate itself when it
/// answered nothing; a promoter's error is passed through.
fn handed_on<E>(answer: Result<Option<Revision>, E>, candidate: &Revision) -> Result<Revision, E> {
    answer.map(|promoted| promoted.unwrap_or_else(|| candidate.clone()))
}

/// The audit detail of a promotion past `stage` (to `next`, or none when
/// `stage` is the last).
fn detail(stage: &str, soak: Duration, next: Option<&str>, promoted: &Revision) -> String {
    match next {
        Some(next) => format!(
            "passed stage {stage} (Ready and healthy for {soak:?}, gates passed); promoted to {next} as {promoted}"
        ),
        None => format!(
            "passed stage {stage} (Ready and healthy for {soak:?}, gates passed); last stage, promoted as {promoted}"
        ),
    }
}

/// The audit record of a promotion past `stage` (`Stage/<name>`); `None`
/// when the stage's name is not a valid resource name.
fn record(
    stage: &str,
    candidate: &Revision,
    promoted: &Revision,
    detail: String,
    at: SystemTime,
) -> Option<AuditRecord> {
    let id = ResourceId::new("Stage", stage.to_owned()).ok()?;
    Some(AuditRecord {
        at,
        id,
        action: AuditAction::Promote,
        digest_before: None,
        digest_after: None,
        revision: candidate.id.clone(),
        reference: promoted.reference.clone(),
        author: candidate.author.clone(),
        message: candidate.summary().to_owned(),
        trigger: Trigger::Promotion,
        detail: Some(detail),
    })
}

/// The id of the revision the last promotion among `records` (oldest
/// first) passed.
pub(super) fn last_promoted(records: &[AuditRecord]) -> Option<String> {
    records
        .iter()
        .rev()
        .find(|r| r.action == AuditAction::Promote)
        .map(|r| r.revision.clone())
}

impl Inner {
    /// `candidate` passed stage `index`: promote it. `false` when the
    /// promoter failed (tried again after a pause).
    pub(super) async fn pass(&self, index: usize, candidate: &Revision) -> bool {
        let stage = &self.stages[index];
        let next = self.stages.get(index + 1);
        let promoted = match stage.promoter.as_ref().or(self.promoter.as_ref()) {
            Some(promoter) => {
                let answer = promoter.promote(&stage.name, candidate).await;
                match handed_on(answer, candidate) {
                    Ok(promoted) => promoted,
                    Err(e) => {
                        tracing::warn!(stage = %stage.name, revision = %candidate, error = %e, "promotion failed");
                        return false;
                    }
                }
            }
            None => candidate.clone(),
        };
        let detail = detail(
            &stage.name,
            stage.soak,
            next.map(|n| n.name.as_str()),
            &promoted,
        );
        tracing::info!(stage = %stage.name, revision = %candidate, %detail, "promoted");
        if let Err(e) = self.audit(stage, candidate, &promoted, detail).await {
            tracing::warn!(stage = %stage.name, error = %e, "could not record the promotion");
        }
        *stage.passed.locked() = Some(candidate.id.clone());
        if let Some(next) = next
            && let Some(gate) = &next.gate
        {
            gate.hand_on(promoted);
            next.engine.handle().reconcile_now();
        }
        true
    }

    /// Appends the promotion to `stage`'s audit log (compare-and-swap on its
    /// inventory, retried when the engine wrote in between).
    async fn audit(
        &self,
        stage: &StageRuntime,
        candidate: &Revision,
        promoted: &Revision,
        detail: String,
    ) -> Result<(), StoreError> {
        let Some(record) = record(&stage.name, candidate, promoted, detail, SystemTime::now())
        else {
            return Ok(());
        };
        let mut attempts = 0;
        loop {
            let inventory = self.store.load_inventory(&stage.name).await?;
            let saved = self
                .store
                .save_inventory(
                    &stage.name,
                    &inventory.value,
                    inventory.version,
                    std::slice::from_ref(&record),
                )
                .await;
            match saved {
                Err(StoreError::Conflict { .. }) if attempts < AUDIT_ATTEMPTS => attempts += 1,
                other => return other.map(|_| ()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(id: &str) -> Revision {
        Revision::new("main", id)
    }

    #[test]
    fn the_promoters_answer_decides_what_is_handed_on() {
        let candidate = rev("a");
        let tagged = Revision::new("v1.0.0", "a");
        assert_eq!(
            handed_on::<()>(Ok(Some(tagged.clone())), &candidate),
            Ok(tagged)
        );
        assert_eq!(handed_on::<()>(Ok(None), &candidate), Ok(candidate.clone()));
        assert_eq!(handed_on(Err("conflict"), &candidate), Err("conflict"));
    }

    #[test]
    fn the_detail_says_where_the_revision_went() {
        let promoted = rev("a");
        let soak = Duration::from_secs(600);
        let to_production = detail("staging", soak, Some("production"), &promoted);
        assert_eq!(
            to_production,
            format!(
                "passed stage staging (Ready and healthy for 600s, gates passed); promoted to production as {promoted}"
            )
        );
        let last = detail("production", Duration::ZERO, None, &promoted);
        assert_eq!(
            last,
            format!(
                "passed stage production (Ready and healthy for 0ns, gates passed); last stage, promoted as {promoted}"
            )
        );
    }

    #[test]
    fn the_record_names_the_stage_and_the_promoted_reference() {
        let candidate = rev("a");
        let tagged = Revision::new("v1.0.0", "a");
        let at = SystemTime::UNIX_EPOCH;
        let r = record("staging", &candidate, &tagged, "passed".into(), at).expect("record");
        assert_eq!(r.id.to_string(), "Stage/staging");
        assert_eq!(r.action, AuditAction::Promote);
        assert_eq!((r.revision.as_str(), r.reference.as_str()), ("a", "v1.0.0"));
        assert_eq!(r.trigger, Trigger::Promotion);
        assert_eq!(r.detail.as_deref(), Some("passed"));
        assert!(record("", &candidate, &tagged, String::new(), at).is_none());
    }

    #[test]
    fn the_last_promotion_in_the_log_counts() {
        let at = SystemTime::UNIX_EPOCH;
        let promote =
            |id: &str| record("s", &rev(id), &rev(id), String::new(), at).expect("record");
        let mut gate = promote("c");
        gate.action = AuditAction::Gate;
        assert_eq!(last_promoted(&[]), None);
        assert_eq!(last_promoted(&[gate.clone()]), None);
        assert_eq!(
            last_promoted(&[promote("a"), promote("b"), gate]).as_deref(),
            Some("b")
        );
    }
}
