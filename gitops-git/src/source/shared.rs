//! [`SharedRepository`]: one cache repository and one fetch per poll round
//! for every [`GitSource`](super::GitSource) of the same remote.
//!
//! Several applications deployed from one repository (different paths,
//! branches or tags) would otherwise each keep a cache and each contact the
//! remote on every poll. Sources built with
//! [`GitSourceBuilder::shared`](super::GitSourceBuilder::shared) share the
//! cache, serialize their polls on one lock, and fetch once for all of them:
//! the fetch asks for the references of every member (the union of their
//! refspecs, the deepest history any needs), and a member whose poll finds
//! a fetch that is fresh enough reads its release from that fetch's
//! reference listing instead of contacting the remote again.
//!
//! A fetch is fresh enough for a poll when it started after the poll was
//! asked for (polls of many members at the same moment: one fetch), or at
//! most the coalescing window before it ([`SharedRepository::set_window`],
//! zero by default), unless [`SharedRepository::expire`] was called since
//! it started (a webhook said the remote changed). Failed fetches are not
//! reused: the next poll tries again.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::GitError;
use crate::policy::Policy;

use super::builder::location_of;
use super::cache::open_cache;
use super::lock;

/// The references a remote advertised: full name and object, if any.
pub(crate) type Advertised = Vec<(String, Option<gix::ObjectId>)>;

/// What one fetch asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchPlan {
    /// Fetch refspecs (sorted, unique).
    pub(crate) refspecs: BTreeSet<String>,
    /// `None`: full history.
    pub(crate) depth: Option<NonZeroU32>,
    /// The policies whose releases decide whether a pack is needed.
    pub(crate) policies: Vec<Policy>,
}

impl FetchPlan {
    /// What a lone source with `policy` fetches.
    pub(crate) fn single(policy: &Policy, depth: Option<NonZeroU32>) -> Self {
        Self {
            refspecs: policy.refspecs().into_iter().collect(),
            depth,
            policies: vec![policy.clone()],
        }
    }

    /// Adds a member: its refspecs, its policy, and its depth (`None`, full
    /// history, wins; otherwise the deeper one).
    fn add(&mut self, policy: &Policy, depth: Option<NonZeroU32>) {
        self.refspecs.extend(policy.refspecs());
        if !self.policies.contains(policy) {
            self.policies.push(policy.clone());
        }
        self.depth = match (self.depth, depth) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
}

/// The last successful fetch of a shared repository.
#[derive(Debug, Clone)]
struct LastFetch {
    started: Instant,
    refspecs: BTreeSet<String>,
    advertised: Arc<Advertised>,
}

/// Whether a fetch that started at `started` with `fetched` refspecs can
/// answer a poll asked for at `requested` that needs `wanted` refspecs
/// (pure; see the [module docs](self)).
pub(crate) fn reusable(
    started: Instant,
    fetched: &BTreeSet<String>,
    requested: Instant,
    wanted: &[String],
    window: Duration,
    expired: Option<Instant>,
) -> bool {
    let fresh = requested.saturating_duration_since(started) <= window;
    let not_expired = expired.is_none_or(|at| started >= at);
    fresh && not_expired && wanted.iter().all(|r| fetched.contains(r))
}

#[derive(Debug)]
struct State {
    window: Duration,
    /// Empty until the first member registers.
    plan: Option<FetchPlan>,
    last: Option<LastFetch>,
    expired: Option<Instant>,
}

/// What a [`SharedRepository`] and its member sources share.
pub(crate) struct Group {
    pub(crate) location: String,
    pub(crate) cache_dir: PathBuf,
    pub(crate) repo: gix::ThreadSafeRepository,
    pub(crate) fetch_lock: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<State>,
    fetches: AtomicU64,
}

impl Group {
    /// Adds a member source's needs to every later fetch.
    pub(crate) fn register(&self, policy: &Policy, depth: Option<NonZeroU32>) {
        let mut state = lock(&self.state);
        match &mut state.plan {
            Some(plan) => plan.add(policy, depth),
            None => state.plan = Some(FetchPlan::single(policy, depth)),
        }
    }

    /// What the next fetch asks for: every member's references.
    pub(crate) fn plan(&self) -> Option<FetchPlan> {
        lock(&self.state).plan.clone()
    }

    /// The listing of a fetch fresh enough for a poll asked for at
    /// `requested` needing `wanted`, if there is one.
    pub(crate) fn reuse(&self, requested: Instant, wanted: &[String]) -> Option<Arc<Advertised>> {
        let state = lock(&self.state);
        let last = state.last.as_ref()?;
        reusable(
            last.started,
            &last.refspecs,
            requested,
            wanted,
            state.window,
            state.expired,
        )
        .then(|| last.advertised.clone())
    }

    /// Records a successful fetch that started at `started`.
    pub(crate) fn fetched(&self, started: Instant, plan: &FetchPlan, advertised: Advertised) {
        lock(&self.state).last = Some(LastFetch {
            started,
            refspecs: plan.refspecs.clone(),
            advertised: Arc::new(advertised),
        });
    }

    /// Counts one contact with the remote.
    pub(crate) fn count(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
    }
}

/// One remote's cache repository, shared by several [`GitSource`](super::GitSource)s
/// (the sources of every application on that remote): one fetch per poll round instead of one
/// per source. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use gitops_git::{GitSource, ReferencePolicy, SharedRepository};
///
/// # let tmp = tempfile::tempdir()?;
/// let url = "https://git.example/ops.git";
/// let shared = SharedRepository::open(url, tmp.path().join("ops"))?;
/// shared.set_window(Duration::from_secs(15)); // half the poll interval
/// let db = GitSource::builder(url, ReferencePolicy::branch("main"))
///     .path("apps/db")
///     .shared(&shared)
///     .build()?;
/// let web = GitSource::builder(url, ReferencePolicy::tag("v2.0.0"))
///     .path("apps/web")
///     .shared(&shared)
///     .build()?;
/// assert_eq!(db.cache_dir(), web.cache_dir());
/// assert_eq!(shared.fetches(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The fetch runs with the settings (credentials, TLS, timeout) of the
/// member whose poll makes it: give every member the same ones.
#[derive(Clone)]
pub struct SharedRepository {
    pub(crate) group: Arc<Group>,
}

impl std::fmt::Debug for SharedRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRepository")
            .field("location", &self.group.location)
            .field("cache_dir", &self.group.cache_dir)
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl SharedRepository {
    /// Creates or opens the bare cache repository for the remote at `url`
    /// in `cache_dir`. Sources join it with
    /// [`GitSourceBuilder::shared`](super::GitSourceBuilder::shared) and must
    /// name the same remote.
    pub fn open(url: &str, cache_dir: impl Into<PathBuf>) -> Result<Self, GitError> {
        let cache_dir = cache_dir.into();
        let location = location_of(url)?;
        let repo = open_cache(&cache_dir)?;
        Ok(Self {
            group: Arc::new(Group {
                location,
                cache_dir,
                repo,
                fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
                state: Mutex::new(State {
                    window: Duration::ZERO,
                    plan: None,
                    last: None,
                    expired: None,
                }),
                fetches: AtomicU64::new(0),
            }),
        })
    }

    /// The remote, without credentials.
    pub fn location(&self) -> &str {
        &self.group.location
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.group.cache_dir
    }

    /// How old a fetch may be and still answer a member's poll (zero by
    /// default: only polls asked for before a fetch started share it). Half
    /// the shortest poll interval of the members makes one fetch per
    /// interval for all of them.
    pub fn set_window(&self, window: Duration) {
        lock(&self.group.state).window = window;
    }

    /// The next poll of any member contacts the remote (a webhook said it
    /// changed); polls asked for after that share its fetch.
    pub fn expire(&self) {
        lock(&self.group.state).expired = Some(Instant::now());
    }

    /// How many times a member contacted the remote (the number of fetches).
    pub fn fetches(&self) -> u64 {
        self.group.fetches.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ReferencePolicy;

    fn set(refspecs: &[&str]) -> BTreeSet<String> {
        refspecs.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_fetch_started_after_the_request_is_always_fresh() {
        let requested = Instant::now();
        let started = requested + Duration::from_millis(5);
        let fetched = set(&["a", "b"]);
        let wanted = ["a".to_owned()];
        assert!(reusable(
            started,
            &fetched,
            requested,
            &wanted,
            Duration::ZERO,
            None
        ));
        // Older than the window: not fresh.
        let later = started + Duration::from_secs(2);
        assert!(!reusable(
            started,
            &fetched,
            later,
            &wanted,
            Duration::from_secs(1),
            None
        ));
        assert!(reusable(
            started,
            &fetched,
            later,
            &wanted,
            Duration::from_secs(5),
            None
        ));
    }

    #[test]
    fn expiry_and_missing_refspecs_force_a_fetch() {
        let started = Instant::now();
        let requested = started + Duration::from_millis(1);
        let window = Duration::from_secs(10);
        let fetched = set(&["a"]);
        let expired = Some(started + Duration::from_nanos(1));
        assert!(!reusable(
            started,
            &fetched,
            requested,
            &["a".to_owned()],
            window,
            expired
        ));
        assert!(!reusable(
            started,
            &fetched,
            requested,
            &["b".to_owned()],
            window,
            None
        ));
    }

    #[test]
    fn a_plan_is_the_union_of_its_members() {
        let main = Policy::new(&ReferencePolicy::branch("main")).expect("policy");
        let tags = Policy::new(&ReferencePolicy::semver("^1")).expect("policy");
        let pinned = Policy::new(&ReferencePolicy::commit("abcd")).expect("policy");
        let mut plan = FetchPlan::single(&main, NonZeroU32::new(1));
        plan.add(&tags, NonZeroU32::new(1));
        plan.add(&main, NonZeroU32::new(1));
        assert_eq!(plan.policies.len(), 2);
        assert_eq!(plan.refspecs.len(), 2);
        assert_eq!(plan.depth, NonZeroU32::new(1));
        plan.add(&pinned, None);
        assert_eq!(plan.depth, None, "full history wins");
    }
}
