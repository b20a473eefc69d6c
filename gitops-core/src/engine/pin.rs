//! Rollback pins: a pinned revision stays deployed until `resume()` or, with
//! `unpin_on_new_commit`, until a newer commit appears.

use super::EngineError;
use super::state::{Inner, LoopState};
use crate::model::Revision;

/// What a poll that saw `head` means for a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PinCheck {
    /// No pin: go on.
    Unpinned,
    /// A pin holds: skip this poll.
    Holds,
    /// A newer commit ends the pin.
    Ends,
}

/// Decides what a poll that saw `head` means for the pin in `record`.
pub(super) fn check_pin(record: &crate::record::EngineRecord, head: &Revision) -> PinCheck {
    let Some(pinned) = &record.pinned else {
        return PinCheck::Unpinned;
    };
    let newer = record
        .unpin_after
        .as_ref()
        .is_some_and(|old| *old != head.id && pinned.id != head.id);
    if newer {
        PinCheck::Ends
    } else {
        PinCheck::Holds
    }
}

impl Inner {
    /// Pins `revision`; with `unpin_after`, a commit other than that one
    /// (and the pinned one) ends the pin by itself.
    pub(super) async fn pin(
        &self,
        state: &mut LoopState,
        revision: Revision,
        unpin_after: Option<String>,
    ) -> Result<(), EngineError> {
        tracing::info!(%revision, "pinned by rollback");
        self.update_record(state, |r| {
            r.pinned = Some(revision);
            r.unpin_after = unpin_after;
        })
        .await
    }

    /// Ends any pin.
    pub(super) async fn unpin(&self, state: &mut LoopState) {
        if let Err(e) = self
            .update_record(state, |r| {
                r.pinned = None;
                r.unpin_after = None;
            })
            .await
        {
            tracing::warn!(error = %e, "could not clear the rollback pin");
        }
    }

    /// Pins a rollback asked for by a person: the head it leaves ends the
    /// pin when `unpin_on_new_commit` is on.
    pub(super) async fn pin_requested(
        &self,
        state: &mut LoopState,
        revision: Revision,
    ) -> Result<(), EngineError> {
        let head = self.parts.source.poll().await.ok().map(|r| r.id);
        let until = head.filter(|_| self.config.unpin_on_new_commit);
        self.pin(state, revision, until).await
    }

    /// For a poll that saw `head`: whether to skip it because a pin holds.
    pub(super) async fn pin_holds(&self, state: &mut LoopState, head: &Revision) -> bool {
        let Some(record) = state.record.as_ref() else {
            return false;
        };
        match check_pin(&record.value, head) {
            PinCheck::Unpinned => false,
            PinCheck::Holds => true,
            PinCheck::Ends => {
                tracing::info!(%head, "a newer commit ends the rollback pin");
                self.unpin(state).await;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EngineRecord;

    fn rev(id: &str) -> Revision {
        Revision::new("main", id)
    }

    #[test]
    fn pins_hold_until_a_newer_commit_when_asked() {
        let mut record = EngineRecord::default();
        assert_eq!(check_pin(&record, &rev("b")), PinCheck::Unpinned);
        record.pinned = Some(rev("a"));
        // Without unpin_after: holds whatever appears.
        assert_eq!(check_pin(&record, &rev("c")), PinCheck::Holds);
        record.unpin_after = Some("b".into());
        assert_eq!(
            check_pin(&record, &rev("b")),
            PinCheck::Holds,
            "the head rolled back from"
        );
        assert_eq!(
            check_pin(&record, &rev("a")),
            PinCheck::Holds,
            "the pinned one"
        );
        assert_eq!(check_pin(&record, &rev("c")), PinCheck::Ends);
    }
}
