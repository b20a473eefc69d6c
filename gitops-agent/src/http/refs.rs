//! [`RefFilter`]: which pushes a webhook acts on.

use gitops_git::ReferencePolicy;

/// Which pushed Git references a webhook acts on; pushes to others are
/// acknowledged and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefFilter {
    /// Every push.
    Any,
    /// Pushes to this branch (`refs/heads/<name>`).
    Branch(String),
    /// Pushes of any tag (`refs/tags/*`): a tag or semver policy may pick
    /// any of them, and a moved tag is a push of that tag.
    Tags,
    /// No push (a pinned commit never moves).
    Nothing,
}

impl RefFilter {
    /// Whether a push to `reference` (a full ref like `refs/heads/main`) is acted on.
    pub fn matches(&self, reference: &str) -> bool {
        match self {
            RefFilter::Any => true,
            RefFilter::Branch(branch) => {
                let branch = branch.strip_prefix("refs/heads/").unwrap_or(branch);
                reference.strip_prefix("refs/heads/") == Some(branch)
            }
            RefFilter::Tags => reference.starts_with("refs/tags/"),
            RefFilter::Nothing => false,
        }
    }
}

impl From<&ReferencePolicy> for RefFilter {
    fn from(policy: &ReferencePolicy) -> Self {
        match policy {
            ReferencePolicy::Branch(branch) => RefFilter::Branch(branch.clone()),
            ReferencePolicy::Tag(_) | ReferencePolicy::Semver(_) => RefFilter::Tags,
            ReferencePolicy::Commit(_) => RefFilter::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_branch_policy_matches_only_its_branch() {
        let filter = RefFilter::from(&ReferencePolicy::branch("main"));
        assert!(filter.matches("refs/heads/main"));
        assert!(!filter.matches("refs/heads/main2"));
        assert!(!filter.matches("refs/heads/feature/main"));
        assert!(!filter.matches("refs/tags/main"));
        assert!(!filter.matches("main"));
        assert!(RefFilter::Branch("refs/heads/main".into()).matches("refs/heads/main"));
    }

    #[test]
    fn tag_and_semver_policies_match_any_tag_and_commits_nothing() {
        for policy in [
            ReferencePolicy::tag("v1.0.0"),
            ReferencePolicy::semver("^1"),
        ] {
            let filter = RefFilter::from(&policy);
            assert!(filter.matches("refs/tags/v2.0.0"));
            assert!(!filter.matches("refs/heads/main"));
        }
        let pinned = RefFilter::from(&ReferencePolicy::commit("abcd"));
        assert!(!pinned.matches("refs/heads/main"));
        assert!(RefFilter::Any.matches("refs/heads/anything"));
    }
}
