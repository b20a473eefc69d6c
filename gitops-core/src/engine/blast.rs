//! The blast-radius guard: a revision that would delete (or change) more
//! than a limit allows waits for a person to confirm it. Decided by the
//! pure [`held`]; the engine turns its answer into
//! [`EngineError::ConfirmationRequired`](super::EngineError::ConfirmationRequired).

use std::fmt;

use crate::plan::Summary;

/// How much of the inventory one revision may delete or change before it
/// is held for confirmation: it is held when it exceeds **both** the count
/// and the percent (`count = 10, percent = 50`: more than 10 resources and
/// more than half of what the engine manages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLimit {
    /// More than this many resources...
    pub count: usize,
    /// ...and more than this percent of the managed resources.
    pub percent: u8,
}

impl ChangeLimit {
    /// A limit of more than `count` resources and more than `percent` % of
    /// the managed ones.
    pub const fn new(count: usize, percent: u8) -> Self {
        Self { count, percent }
    }

    /// The default deletion limit: more than 10 resources and more than 50 %.
    pub const DEFAULT_DELETES: ChangeLimit = ChangeLimit::new(10, 50);

    fn exceeded_by(&self, n: usize, managed: usize) -> bool {
        n > self.count && n.saturating_mul(100) > usize::from(self.percent).saturating_mul(managed)
    }
}

/// What a held revision would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// It would delete `count` of `managed`.
    Deletes {
        count: usize,
        managed: usize,
        limit: ChangeLimit,
    },
    /// It would create, update or delete `count` resources, `managed` known.
    Changes {
        count: usize,
        managed: usize,
        limit: ChangeLimit,
    },
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, count, managed, limit) = match *self {
            Held::Deletes {
                count,
                managed,
                limit,
            } => ("delete", count, managed, limit),
            Held::Changes {
                count,
                managed,
                limit,
            } => ("change", count, managed, limit),
        };
        let percent = count.saturating_mul(100) / managed.max(1);
        write!(
            f,
            "it would {verb} {count} of {managed} managed resources ({percent} %), more than the \
             limit of {} resources and {} %",
            limit.count, limit.percent
        )
    }
}

/// Whether a revision with this plan `summary` waits for confirmation,
/// given `managed` resources in the inventory and the limits.
pub(super) fn held(
    summary: &Summary,
    managed: usize,
    deletes: Option<ChangeLimit>,
    changes: Option<ChangeLimit>,
) -> Option<Held> {
    if let Some(limit) = deletes
        && limit.exceeded_by(summary.delete, managed)
    {
        return Some(Held::Deletes {
            count: summary.delete,
            managed,
            limit,
        });
    }
    let changed = summary.create + summary.update + summary.delete;
    if let Some(limit) = changes
        && limit.exceeded_by(changed, managed)
    {
        return Some(Held::Changes {
            count: changed,
            managed,
            limit,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(create: usize, update: usize, delete: usize) -> Summary {
        Summary {
            create,
            update,
            delete,
            ..Summary::default()
        }
    }

    const DEFAULT: Option<ChangeLimit> = Some(ChangeLimit::DEFAULT_DELETES);

    #[test]
    fn deletes_are_held_past_both_the_count_and_the_percent() {
        assert_eq!(held(&summary(0, 0, 11), 20, DEFAULT, None).map(|h| h.to_string()),
            Some("it would delete 11 of 20 managed resources (55 %), more than the limit of 10 resources and 50 %".to_owned()));
        assert_eq!(
            held(&summary(0, 0, 10), 15, DEFAULT, None),
            None,
            "not more than 10"
        );
        assert_eq!(
            held(&summary(0, 0, 11), 22, DEFAULT, None),
            None,
            "exactly 50 %"
        );
        assert_eq!(
            held(&summary(0, 0, 5), 5, DEFAULT, None),
            None,
            "a small app may empty out"
        );
        assert!(held(&summary(0, 0, 11), 11, DEFAULT, None).is_some());
    }

    #[test]
    fn no_limit_means_never_held() {
        assert_eq!(held(&summary(0, 0, 1000), 1000, None, None), None);
    }

    #[test]
    fn changes_count_creates_updates_and_deletes() {
        let limit = Some(ChangeLimit::new(2, 10));
        assert!(matches!(
            held(&summary(1, 1, 1), 10, None, limit),
            Some(Held::Changes { count: 3, .. })
        ));
        assert_eq!(held(&summary(1, 1, 0), 10, None, limit), None);
        // Deletes are reported first when both limits are passed.
        assert!(matches!(
            held(&summary(0, 0, 20), 20, DEFAULT, limit),
            Some(Held::Deletes { .. })
        ));
    }
}
