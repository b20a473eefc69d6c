//! [`Repos`]: one [`SharedRepository`] per repository URL, so that every
//! application (and the config repository) of one remote shares one cache
//! and one fetch per poll round.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gitops_git::{GitError, SharedRepository};
use sha2::{Digest as _, Sha256};

use crate::http::repo_key;

/// The shared repositories of an agent, by URL (as written in the config).
#[derive(Debug)]
pub(crate) struct Repos {
    dir: PathBuf,
    open: BTreeMap<String, SharedRepository>,
}

impl Repos {
    /// Caches live under `dir` (`<state-dir>/git`).
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: BTreeMap::new(),
        }
    }

    /// The shared repository of `url`, opened on first use.
    pub(crate) fn get(&mut self, url: &str) -> Result<SharedRepository, GitError> {
        if let Some(shared) = self.open.get(url) {
            return Ok(shared.clone());
        }
        let shared = SharedRepository::open(url, self.dir.join(cache_name(url)))?;
        self.open.insert(url.to_owned(), shared.clone());
        Ok(shared)
    }

    /// Sets each repository's coalescing window to the shortest poll
    /// interval of those using it (`users`: URL and interval), so that one
    /// fetch per interval serves them all (their polls are out of step:
    /// a commit may take up to two intervals to show, a webhook none);
    /// unused ones get none.
    pub(crate) fn set_windows<'a>(&self, users: impl IntoIterator<Item = (&'a str, Duration)>) {
        let mut shortest: BTreeMap<&str, Duration> = BTreeMap::new();
        for (url, interval) in users {
            let entry = shortest.entry(url).or_insert(interval);
            *entry = (*entry).min(interval);
        }
        for (url, shared) in &self.open {
            let window = shortest
                .get(url.as_str())
                .copied()
                .unwrap_or(Duration::ZERO);
            shared.set_window(window);
        }
    }
}

/// A cache directory name for `url`: readable, unique, never a path
/// (`git.example_org_ops-1a2b3c4d5e6f7a8b`), never holding credentials.
pub(crate) fn cache_name(url: &str) -> String {
    let key = repo_key(url);
    let readable: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let readable = readable.trim_matches(['_', '.']);
    let short: String = readable
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let digest = Sha256::digest(url.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{short}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_readable_distinct_and_secret_free() {
        let a = cache_name("https://bot:s3cret@git.example/org/ops.git");
        assert!(a.starts_with("git.example_org_ops-"), "{a}");
        assert!(!a.contains("s3cret") && !a.contains('/'), "{a}");
        assert_ne!(a, cache_name("https://git.example/org/ops.git"));
        let local = cache_name("/srv/git/../ops.git");
        assert!(!local.contains('/') && !local.starts_with('.'), "{local}");
        assert!(cache_name(&"x/".repeat(100)).len() <= 40 + 17);
    }

    #[test]
    fn windows_are_half_the_shortest_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut repos = Repos::new(dir.path().to_owned());
        let a = repos.get("/srv/a.git").expect("open");
        repos.get("/srv/b.git").expect("open");
        assert_eq!(
            repos.get("/srv/a.git").expect("again").cache_dir(),
            a.cache_dir()
        );
        repos.set_windows([
            ("/srv/a.git", Duration::from_secs(30)),
            ("/srv/a.git", Duration::from_secs(10)),
        ]);
        assert!(
            dir.path()
                .join(cache_name("/srv/a.git"))
                .join("HEAD")
                .exists()
        );
    }
}
