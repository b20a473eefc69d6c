//! Unchanged revisions: a reconcile of the revision the engine last
//! converged to, with the same settings, on a target that proves nothing it
//! manages changed since, needs no snapshot, no render and no plan.
//!
//! The proof has four parts, all required (`docs/engine.md`, "Unchanged
//! revisions"):
//!
//! - the stored [`Seal`] names this revision id and the digest of the same
//!   source, render and engine settings ([`settings_digest`]; any part
//!   unknown, no shortcut);
//! - the inventory is still at the version the sealing sync left;
//! - the newest history entry is a converged sync of this revision;
//! - the target says every inventory id is unchanged since its seal token
//!   ([`Target::unchanged_since`](crate::Target::unchanged_since)).
//!
//! A seal is only written after a sync that converged with every desired
//! resource equal to Git and recorded with its digest, and nothing else
//! recorded ([`sealable`]). Anything less, and the reconcile takes the full
//! path, which then seals again.

use sha2::{Digest as _, Sha256};

use super::state::{Inner, LoopState, Prepared};
use super::{EngineError, SyncReport, Timings};
use crate::model::{Inventory, Revision};
use crate::plan::Plan;
use crate::record::{HistoryEntry, Outcome, ResourceOutcome, Seal, SyncResult, Trigger};

/// The SHA-256 (hex) of what, besides the revision, decides a sync: the
/// source's and the renderer's fingerprints and the engine's own settings.
/// `None` when the source or the renderer cannot say.
pub(super) fn settings_digest(
    source: Option<String>,
    render: Option<String>,
    engine: &str,
) -> Option<String> {
    let (source, render) = (source?, render?);
    let mut hasher = Sha256::new();
    // Lengths first: no two different triples hash the same text.
    for part in [source.as_str(), render.as_str(), engine] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    Some(crate::spec::hex(&hasher.finalize()))
}

/// Whether `seal` vouches for a reconcile of `revision` with `settings`
/// and the inventory at `inventory` (the target's proof aside).
pub(super) fn seal_applies(seal: &Seal, revision: &str, settings: &str, inventory: u64) -> bool {
    seal.revision == revision && seal.settings == settings && seal.inventory == inventory
}

/// Whether a finished sync leaves a state a seal may vouch for: converged,
/// no drift kept, nothing written back or failing to converge, and the
/// inventory holding exactly the desired resources, each with its digest.
pub(super) fn sealable(report: &SyncReport, prepared: &Prepared, inventory: &Inventory) -> bool {
    let desired = prepared.desired.resources();
    report.result == SyncResult::Converged
        && report.written_back.is_none()
        && report.not_converging.is_empty()
        && report.plan.retained.is_empty()
        && report
            .outcomes
            .iter()
            .all(|o| o.outcome != Outcome::DriftKept)
        && inventory.len() == desired.len()
        && desired
            .iter()
            .zip(&prepared.digests)
            .all(|(r, digest)| inventory.get(&r.id).is_some_and(|e| e.digest == *digest))
}

/// Whether `entry` is a converged sync of revision `id`.
fn converged_at(entry: &HistoryEntry, id: &str) -> bool {
    entry.revision.id == id && entry.result == SyncResult::Converged
}

/// The report of a reconcile proven unchanged: every inventory id
/// unchanged, a plan with the summary only (no waves).
fn unchanged_report(
    revision: &Revision,
    trigger: Trigger,
    inventory: &Inventory,
    started: tokio::time::Instant,
) -> SyncReport {
    let mut report = SyncReport::untouched(revision.clone(), trigger, SyncResult::Converged);
    report.plan = Plan::empty(revision.clone());
    report.plan.summary.unchanged = inventory.len();
    report.outcomes = inventory
        .iter()
        .map(|(id, _)| ResourceOutcome {
            id: id.clone(),
            outcome: Outcome::Unchanged,
        })
        .collect();
    report.timings = Timings {
        total: started.elapsed(),
        ..Timings::default()
    };
    report
}

impl Inner {
    /// The digest of this engine's settings, when its source and renderer
    /// can name theirs.
    pub(super) fn settings(&self) -> Option<String> {
        let engine = format!(
            "engine prune {} allow_empty {}",
            self.config.prune, self.config.allow_empty
        );
        settings_digest(
            self.parts.source.fingerprint(),
            self.parts.render.fingerprint(),
            &engine,
        )
    }

    /// The report of this reconcile when the stored seal proves that the
    /// target still holds `revision` as last converged; `None` when
    /// anything is unproven (then the full path runs).
    pub(super) async fn try_unchanged(
        &self,
        state: &LoopState,
        revision: &Revision,
        trigger: Trigger,
    ) -> Result<Option<SyncReport>, EngineError> {
        let started = tokio::time::Instant::now();
        let Some(seal) = state.record.as_ref().and_then(|r| r.value.sealed.clone()) else {
            return Ok(None);
        };
        if seal.revision != revision.id || !state.converging.is_empty() {
            return Ok(None);
        }
        let Some(settings) = self.settings() else {
            return Ok(None);
        };
        let loaded = self
            .parts
            .store
            .load_inventory(&self.name)
            .await
            .map_err(EngineError::Store)?;
        if !seal_applies(&seal, &revision.id, &settings, loaded.version) {
            return Ok(None);
        }
        let newest = self
            .parts
            .store
            .history(&self.name, 1)
            .await
            .map_err(EngineError::Store)?;
        if !newest
            .first()
            .is_some_and(|h| converged_at(h, &revision.id))
        {
            return Ok(None);
        }
        let inventory = loaded.value;
        let ids: Vec<_> = inventory.iter().map(|(id, _)| id.clone()).collect();
        let limit = super::prepare::batch_timeout(self.config.call_timeout, ids.len());
        let proven =
            tokio::time::timeout(limit, self.parts.target.unchanged_since(&ids, &seal.target))
                .await
                .unwrap_or(false);
        if !proven {
            tracing::debug!("the target could not prove itself unchanged: full reconcile");
            return Ok(None);
        }
        tracing::debug!(
            resources = ids.len(),
            "proven unchanged since the last converged sync"
        );
        self.status.send_modify(|s| s.drift = Vec::new());
        let report = unchanged_report(revision, trigger, &inventory, started);
        self.emit(super::Event::SyncFinished {
            revision: report.revision.clone(),
            result: report.result,
            duration: report.timings.total,
            summary: report.plan.summary,
        });
        Ok(Some(report))
    }

    /// Stores a seal for the state a finished full sync left, when it may
    /// vouch for it and the target gives a token; clears a stale one
    /// otherwise (one record write, only when the seal changes).
    pub(super) async fn seal_after(
        &self,
        state: &mut LoopState,
        report: &SyncReport,
        prepared: &Prepared,
        inventory: (&Inventory, u64),
    ) -> Result<(), EngineError> {
        let settings = self
            .settings()
            .filter(|_| sealable(report, prepared, inventory.0));
        // The target is asked only for a state worth sealing.
        let seal = settings.and_then(|settings| {
            let target = self.parts.target.seal()?;
            Some(Seal {
                revision: report.revision.id.clone(),
                settings,
                inventory: inventory.1,
                target,
            })
        });
        self.update_record(state, |r| r.sealed = seal).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> Seal {
        Seal {
            revision: "abc".into(),
            settings: "s".into(),
            inventory: 7,
            target: "t".into(),
        }
    }

    #[test]
    fn settings_digest_needs_every_part_and_tells_them_apart() {
        let d = |s: &str, r: &str, e: &str| settings_digest(Some(s.into()), Some(r.into()), e);
        assert_eq!(settings_digest(None, Some("r".into()), "e"), None);
        assert_eq!(settings_digest(Some("s".into()), None, "e"), None);
        let base = d("s", "r", "e");
        assert_eq!(base, d("s", "r", "e"));
        assert_eq!(base.as_ref().map(String::len), Some(64));
        assert_ne!(base, d("s2", "r", "e"));
        assert_ne!(base, d("s", "r2", "e"));
        assert_ne!(base, d("s", "r", "e2"));
        assert_ne!(
            d("ab", "c", "e"),
            d("a", "bc", "e"),
            "parts do not run together"
        );
    }

    #[test]
    fn a_seal_applies_to_its_revision_settings_and_inventory_only() {
        let s = seal();
        assert!(seal_applies(&s, "abc", "s", 7));
        assert!(!seal_applies(&s, "abd", "s", 7), "another revision");
        assert!(!seal_applies(&s, "abc", "other", 7), "other settings");
        assert!(!seal_applies(&s, "abc", "s", 8), "the inventory moved");
    }
}
