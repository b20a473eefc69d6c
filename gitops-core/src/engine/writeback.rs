//! The write-back step: hands `writeback`-policy drift to the configured
//! [`Writeback`](crate::Writeback), once per revision and observed state.

use super::executor::AuditContext;
use super::state::{Inner, LoopState, WritebackKey};
use super::{EngineError, Event, WritebackConflict};
use crate::model::{Inventory, Revision};
use crate::record::{AuditAction, AuditRecord};
use crate::writeback::{Drifted, WritebackError, WritebackRequest, WrittenBack};

/// What one write-back step works on.
pub(super) struct WritebackRun<'a> {
    pub drifted: &'a [Drifted],
    pub audit: &'a AuditContext<'a>,
    pub inventory: &'a Inventory,
    pub version: &'a mut u64,
}

impl Inner {
    /// Hands the drift over (the drift stays reported meanwhile); returns
    /// the commit when it is the next release.
    pub(super) async fn write_back(
        &self,
        state: &mut LoopState,
        mut run: WritebackRun<'_>,
    ) -> Result<Option<Revision>, EngineError> {
        if run.drifted.is_empty() {
            return Ok(None);
        }
        let ids: Vec<_> = run.drifted.iter().map(|d| d.resource.id.clone()).collect();
        let key = WritebackKey {
            revision: run.audit.revision.id.clone(),
            observed: run
                .drifted
                .iter()
                .map(|d| {
                    let digest = d.observed.as_ref().map(|o| {
                        self.parts
                            .digest_key
                            .spec_digest(&o.spec, d.resource.sensitive)
                    });
                    (d.resource.id.clone(), digest)
                })
                .collect(),
        };
        if state.writeback_memo.as_ref() == Some(&key) {
            return Ok(None);
        }
        let Some(writeback) = &self.parts.writeback else {
            state.writeback_memo = Some(key);
            self.emit(Event::WritebackFailed {
                ids,
                error: "no write-back configured; drift kept and reported".into(),
            });
            return Ok(None);
        };
        let request = WritebackRequest {
            engine: &self.name,
            revision: run.audit.revision,
            drifted: run.drifted,
        };
        match writeback.write_back(request).await {
            Ok(None) => {
                state.writeback_memo = Some(key);
                self.emit(Event::WrittenBack {
                    ids,
                    revision: None,
                    published_to: None,
                });
                Ok(None)
            }
            Ok(Some(written)) => {
                self.written_back(&mut run, &written).await?;
                state.writeback_memo = Some(key);
                self.emit(Event::WrittenBack {
                    ids,
                    revision: Some(written.revision.clone()),
                    published_to: Some(written.published_to),
                });
                Ok(written.is_release.then_some(written.revision))
            }
            Err(e) => {
                self.writeback_failed(state, run.audit.revision, key, ids, e);
                Ok(None)
            }
        }
    }

    /// Records a write-back commit in the audit log.
    async fn written_back(
        &self,
        run: &mut WritebackRun<'_>,
        written: &WrittenBack,
    ) -> Result<(), EngineError> {
        let detail = format!(
            "written back as commit {} on {}",
            written.revision.id, written.published_to
        );
        let records: Vec<AuditRecord> = run
            .drifted
            .iter()
            .map(|d| {
                let mut record = run.audit.record(
                    &d.resource.id,
                    AuditAction::Writeback,
                    Some(self.parts.digest_key.digest(&d.resource)),
                    d.observed.as_ref().map(|o| {
                        self.parts
                            .digest_key
                            .spec_digest(&o.spec, d.resource.sensitive)
                    }),
                );
                record.detail = Some(detail.clone());
                record
            })
            .collect();
        *run.version = self
            .parts
            .store
            .save_inventory(&self.name, run.inventory, *run.version, &records)
            .await
            .map_err(EngineError::Store)?;
        tracing::info!(commit = %written.revision, to = %written.published_to, "drift written back");
        Ok(())
    }

    fn writeback_failed(
        &self,
        state: &mut LoopState,
        revision: &Revision,
        key: WritebackKey,
        ids: Vec<crate::id::ResourceId>,
        error: WritebackError,
    ) {
        match error {
            WritebackError::Conflict { path, message } => {
                state.writeback_memo = Some(key);
                let fallback = self.config.writeback_conflict;
                tracing::warn!(%path, %message, ?fallback, "write-back conflict");
                if fallback == WritebackConflict::Revert {
                    state.force_revert = Some((revision.id.clone(), ids.iter().cloned().collect()));
                    // Pull mode reverts at once; push mode on its next sync.
                    self.trigger.notify_one();
                }
                self.emit(Event::WritebackConflict {
                    ids,
                    path,
                    message,
                    fallback,
                });
            }
            e => {
                // A transient failure is tried again at the next drift check.
                if !e.is_transient() {
                    state.writeback_memo = Some(key);
                }
                tracing::warn!(error = %e, "write-back failed");
                self.emit(Event::WritebackFailed {
                    ids,
                    error: e.to_string(),
                });
            }
        }
    }
}
