//! Reference policies: which commit is "the release".

use std::fmt;

/// Which commit of the repository is the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferencePolicy {
    /// The head of a branch, e.g. `main`.
    Branch(String),
    /// One tag, e.g. `v1.2.0`; annotated tags are peeled to their commit.
    Tag(String),
    /// The highest tag matching a semver range, e.g. `>=1.0.0, <2.0.0`. Tags may
    /// carry a `v` prefix; tags that are not semver are ignored; pre-releases are
    /// excluded unless the range itself names a pre-release.
    Semver(String),
    /// One commit, by full id or unique abbreviation (at least 4 hex digits).
    Commit(String),
}

impl ReferencePolicy {
    /// A branch policy.
    pub fn branch(name: impl Into<String>) -> Self {
        ReferencePolicy::Branch(name.into())
    }
    /// A tag policy.
    pub fn tag(name: impl Into<String>) -> Self {
        ReferencePolicy::Tag(name.into())
    }
    /// A semver range policy.
    pub fn semver(range: impl Into<String>) -> Self {
        ReferencePolicy::Semver(range.into())
    }
    /// A pinned commit policy.
    pub fn commit(id: impl Into<String>) -> Self {
        ReferencePolicy::Commit(id.into())
    }

    /// Checks the policy without building a source: a valid branch or tag
    /// name, a parsable semver range, a commit id of 4 to 64 hex digits.
    ///
    /// ```
    /// use gitops_git::ReferencePolicy;
    /// assert!(ReferencePolicy::semver("^1").check().is_ok());
    /// assert!(ReferencePolicy::semver("one").check().is_err());
    /// assert!(ReferencePolicy::branch("a..b").check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), String> {
        Policy::new(self).map(drop)
    }
}

impl fmt::Display for ReferencePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferencePolicy::Branch(b) => write!(f, "branch {b}"),
            ReferencePolicy::Tag(t) => write!(f, "tag {t}"),
            ReferencePolicy::Semver(r) => write!(f, "semver {r}"),
            ReferencePolicy::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

/// A validated policy, ready to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Policy {
    Branch(String),
    Tag(String),
    Semver {
        text: String,
        req: semver::VersionReq,
        allow_pre: bool,
    },
    Commit(String),
}

impl Policy {
    pub(crate) fn new(policy: &ReferencePolicy) -> Result<Self, String> {
        match policy {
            ReferencePolicy::Branch(name) => {
                check_ref_name(&format!("refs/heads/{name}"))?;
                Ok(Policy::Branch(name.clone()))
            }
            ReferencePolicy::Tag(name) => {
                check_ref_name(&format!("refs/tags/{name}"))?;
                Ok(Policy::Tag(name.clone()))
            }
            ReferencePolicy::Semver(range) => {
                let req = semver::VersionReq::parse(range)
                    .map_err(|e| format!("invalid semver range {range:?}: {e}"))?;
                let allow_pre = req.comparators.iter().any(|c| !c.pre.is_empty());
                Ok(Policy::Semver {
                    text: range.clone(),
                    req,
                    allow_pre,
                })
            }
            ReferencePolicy::Commit(id) => {
                let id = id.to_ascii_lowercase();
                if id.len() < 4 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "commit {id:?} is not a full or abbreviated hex object id (4 to 64 hex digits)"
                    ));
                }
                Ok(Policy::Commit(id))
            }
        }
    }

    /// The configured reference, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Policy::Branch(b) => b.clone(),
            Policy::Tag(t) => t.clone(),
            Policy::Semver { text, .. } => text.clone(),
            Policy::Commit(c) => c.clone(),
        }
    }

    /// Fetch refspecs for the bare cache.
    pub(crate) fn refspecs(&self) -> Vec<String> {
        match self {
            Policy::Branch(b) => vec![format!("+refs/heads/{b}:{}", local_branch(b))],
            Policy::Tag(t) => vec![format!("+refs/tags/{t}:{}", local_tag(t))],
            Policy::Semver { .. } => vec![format!("+refs/tags/*:{LOCAL_TAGS}*")],
            Policy::Commit(_) => vec![
                format!("+refs/heads/*:{LOCAL_HEADS}*"),
                format!("+refs/tags/*:{LOCAL_TAGS}*"),
            ],
        }
    }

    /// Whether a shallow fetch can serve this policy.
    pub(crate) fn allows_shallow(&self) -> bool {
        !matches!(self, Policy::Commit(_))
    }

    /// Picks the remote reference (full name) to deploy among the advertised names.
    /// Returns `(full remote name, short display name)`.
    pub(crate) fn select<'a>(
        &self,
        remote_names: impl Iterator<Item = &'a str>,
    ) -> Option<(String, String)> {
        match self {
            Policy::Branch(b) => {
                let want = format!("refs/heads/{b}");
                remote_names
                    .into_iter()
                    .any(|n| n == want)
                    .then(|| (want, b.clone()))
            }
            Policy::Tag(t) => {
                let want = format!("refs/tags/{t}");
                remote_names
                    .into_iter()
                    .any(|n| n == want)
                    .then(|| (want, t.clone()))
            }
            Policy::Semver { req, allow_pre, .. } => {
                let mut best: Option<(semver::Version, &str)> = None;
                for name in remote_names {
                    let Some(tag) = name.strip_prefix("refs/tags/") else {
                        continue;
                    };
                    if tag.ends_with("^{}") {
                        continue;
                    }
                    let Some(version) = parse_version(tag) else {
                        continue;
                    };
                    if !version.pre.is_empty() && !allow_pre {
                        continue;
                    }
                    if !req.matches(&version) {
                        continue;
                    }
                    let better = match &best {
                        None => true,
                        // Equal versions (`1.0.0` and `v1.0.0`): prefer the
                        // lexicographically smaller name, for determinism.
                        Some((b, bn)) => version > *b || (version == *b && tag < *bn),
                    };
                    if better {
                        best = Some((version, tag));
                    }
                }
                best.map(|(_, tag)| (format!("refs/tags/{tag}"), tag.to_owned()))
            }
            Policy::Commit(_) => None,
        }
    }

    /// The local tracking ref for a selected remote ref.
    pub(crate) fn local_ref(remote: &str) -> Option<String> {
        if let Some(b) = remote.strip_prefix("refs/heads/") {
            Some(local_branch(b))
        } else {
            remote.strip_prefix("refs/tags/").map(local_tag)
        }
    }
}

/// Parses a tag as semver, accepting a leading `v`.
pub(crate) fn parse_version(tag: &str) -> Option<semver::Version> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    semver::Version::parse(text).ok()
}

const LOCAL_HEADS: &str = "refs/gitops/heads/";
const LOCAL_TAGS: &str = "refs/gitops/tags/";

fn local_branch(b: &str) -> String {
    format!("{LOCAL_HEADS}{b}")
}

fn local_tag(t: &str) -> String {
    format!("{LOCAL_TAGS}{t}")
}

fn check_ref_name(name: &str) -> Result<(), String> {
    gix::validate::reference::name(name.as_bytes().into())
        .map(|_| ())
        .map_err(|e| format!("invalid reference name {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(range: &str, tags: &[&str]) -> Option<String> {
        let p = Policy::new(&ReferencePolicy::semver(range)).ok()?;
        let names: Vec<String> = tags.iter().map(|t| format!("refs/tags/{t}")).collect();
        p.select(names.iter().map(String::as_str)).map(|(_, t)| t)
    }

    #[test]
    fn semver_selection() {
        let tags = [
            "v1.0.0",
            "v1.2.0",
            "1.10.0",
            "v2.0.0-rc.1",
            "latest",
            "v1.3",
            "release-7",
        ];
        assert_eq!(pick(">=1.0.0", &tags).as_deref(), Some("1.10.0"));
        assert_eq!(pick("~1.2", &tags).as_deref(), Some("v1.2.0"));
        assert_eq!(pick(">=2.0.0-rc.0", &tags).as_deref(), Some("v2.0.0-rc.1"));
        assert_eq!(pick(">=3", &tags), None);
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(Policy::new(&ReferencePolicy::branch("a..b")).is_err());
        assert!(Policy::new(&ReferencePolicy::tag("x y")).is_err());
        assert!(Policy::new(&ReferencePolicy::semver("not a range")).is_err());
        assert!(Policy::new(&ReferencePolicy::commit("HEAD~1")).is_err());
        assert!(Policy::new(&ReferencePolicy::commit("abc")).is_err());
        assert!(Policy::new(&ReferencePolicy::commit("abcd")).is_ok());
    }
}
