//! [`RenderCache`]: render results kept in memory by file content, so a new
//! commit re-renders only the files it changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::model::{Observed, Resource, Snapshot, SnapshotFile};
use crate::render::{DesiredState, FileEdit, Render, RenderError, RenderParts, RenderWarning};

/// What one file rendered to, with the content it was rendered from.
#[derive(Debug)]
struct Cached {
    data: Arc<[u8]>,
    executable: bool,
    resources: Vec<Resource>,
    warnings: Vec<RenderWarning>,
}

impl Cached {
    /// Whether `file` is the content this entry was rendered from: the same
    /// shared bytes (a Git source shares the bytes of unchanged blobs between
    /// snapshots, so this is a pointer comparison), or equal bytes.
    fn is_for(&self, file: &SnapshotFile) -> bool {
        self.executable == file.executable
            && (Arc::ptr_eq(&self.data, &file.data) || *self.data == *file.data)
    }
}

/// The entries by path.
type Entries = HashMap<String, Cached>;

/// A [`Render`] wrapper for a long-running agent: keeps what each file
/// rendered to, in memory only, and on the next snapshot renders only the
/// files whose content (or executable bit) changed, reusing the resources
/// of the others. The result is exactly the inner renderer's: the cache is
/// used only when the inner renderer is per-file
/// ([`Render::render_parts`] answers); otherwise every snapshot is
/// rendered whole and nothing is kept.
///
/// Only the entries of the latest rendered snapshot are kept (a file that
/// went away is forgotten), so the cache is about one desired state in size.
/// Nothing is ever written to disk; a renderer that marks resources
/// sensitive ([`Decrypt`](crate::Decrypt) with encrypted files) is not
/// per-file and is not cached.
///
/// A one-shot process gains nothing from it: its first render is a full one.
///
/// ```
/// use gitops_core::{FilesRender, Render, RenderCache, Revision, Snapshot};
/// let render = RenderCache::new(FilesRender::new());
/// let a = Snapshot::from_files(Revision::new("main", "1"), [("a", &b"1"[..]), ("b", &b"2"[..])])?;
/// render.render(&a)?;
/// let b = Snapshot::from_files(Revision::new("main", "2"), [("a", &b"1"[..]), ("b", &b"3"[..])])?;
/// let desired = render.render(&b)?;
/// assert_eq!(desired.len(), 2);
/// assert_eq!(render.files_rendered(), 3); // a and b, then b only
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct RenderCache<R> {
    inner: R,
    entries: Mutex<Entries>,
    files_rendered: AtomicU64,
}

impl<R: Render> RenderCache<R> {
    /// `inner`, with an empty cache.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            entries: Mutex::new(Entries::new()),
            files_rendered: AtomicU64::new(0),
        }
    }

    /// How many files the inner renderer was asked to render so far (every
    /// file of a snapshot rendered whole).
    pub fn files_rendered(&self) -> u64 {
        self.files_rendered.load(Ordering::Relaxed)
    }

    /// The renderer this one wraps.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn count(&self, files: usize) {
        let files = u64::try_from(files).unwrap_or(u64::MAX);
        self.files_rendered.fetch_add(files, Ordering::Relaxed);
    }

    /// Renders `snapshot` whole and forgets every entry.
    fn render_whole(&self, snapshot: &Snapshot, entries: &mut Entries) -> RenderResult {
        entries.clear();
        self.count(snapshot.len());
        self.inner.render(snapshot)
    }
}

type RenderResult = Result<DesiredState, RenderError>;

/// The files of `snapshot` that `entries` has no result for, as a snapshot
/// of their own (same revision).
fn changed_files(snapshot: &Snapshot, entries: &Entries) -> Result<Snapshot, RenderError> {
    let mut changed = Snapshot::new(snapshot.revision().clone());
    for (path, file) in snapshot.files() {
        if entries.get(path).is_some_and(|c| c.is_for(file)) {
            continue;
        }
        changed
            .insert(path.clone(), file.data.clone(), file.executable)
            .map_err(|e| RenderError::Config {
                message: e.to_string(),
            })?;
    }
    Ok(changed)
}

/// The entries of `snapshot`: those of `old` still valid, and the new
/// `parts` of the `changed` files grouped by file. Pure.
fn next_entries(
    snapshot: &Snapshot,
    changed: &Snapshot,
    mut old: Entries,
    parts: RenderParts,
) -> Entries {
    let mut next = Entries::with_capacity(snapshot.len());
    for (path, file) in changed.files() {
        let cached = Cached {
            data: file.data.clone(),
            executable: file.executable,
            resources: Vec::new(),
            warnings: Vec::new(),
        };
        next.insert(path.clone(), cached);
    }
    for r in parts.resources {
        if let Some(c) = next.get_mut(&r.origin.path) {
            c.resources.push(r);
        }
    }
    for w in parts.warnings {
        if let Some(c) = next.get_mut(&w.path) {
            c.warnings.push(w);
        }
    }
    for path in snapshot.files().keys() {
        if !next.contains_key(path)
            && let Some(c) = old.remove(path)
        {
            next.insert(path.clone(), c);
        }
    }
    next
}

/// Whether every resource and warning of `parts` names a file of `changed`:
/// the contract of [`Render::render_parts`], checked so that a renderer
/// breaking it is rendered whole rather than cached wrongly.
fn parts_name_their_files(changed: &Snapshot, parts: &RenderParts) -> bool {
    let files = changed.files();
    parts
        .resources
        .iter()
        .all(|r| files.contains_key(&r.origin.path))
        && parts.warnings.iter().all(|w| files.contains_key(&w.path))
}

/// The desired state of `snapshot` from `entries` (one for each of its files).
fn assemble(snapshot: &Snapshot, entries: &Entries) -> RenderResult {
    let mut resources = Vec::new();
    let mut warnings = Vec::new();
    for path in snapshot.files().keys() {
        if let Some(c) = entries.get(path) {
            resources.extend(c.resources.iter().cloned());
            warnings.extend(c.warnings.iter().cloned());
        }
    }
    Ok(DesiredState::new(snapshot.revision().clone(), resources)?.with_warnings(warnings))
}

impl<R: Render> Render for RenderCache<R> {
    /// Renders the changed files only, when the inner renderer is per-file;
    /// the whole snapshot otherwise.
    fn render(&self, snapshot: &Snapshot) -> RenderResult {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = changed_files(snapshot, &entries)?;
        let parts = if changed.is_empty() {
            RenderParts::default()
        } else {
            match self.inner.render_parts(&changed) {
                None => return self.render_whole(snapshot, &mut entries),
                Some(parts) => {
                    self.count(changed.len());
                    parts?
                }
            }
        };
        if !parts_name_their_files(&changed, &parts) {
            return self.render_whole(snapshot, &mut entries);
        }
        let old = std::mem::take(&mut *entries);
        let next = next_entries(snapshot, &changed, old, parts);
        // Each file's result stands even when the set is refused (a
        // duplicate id across files): it is kept either way.
        *entries = next;
        assemble(snapshot, &entries)
    }

    fn render_parts(&self, snapshot: &Snapshot) -> Option<Result<RenderParts, RenderError>> {
        self.inner.render_parts(snapshot)
    }

    fn write_back(
        &self,
        file: &SnapshotFile,
        resource: &Resource,
        observed: Option<&Observed>,
    ) -> Result<FileEdit, RenderError> {
        self.inner.write_back(file, resource, observed)
    }

    fn fingerprint(&self) -> Option<String> {
        self.inner.fingerprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FilesRender, ManifestRender, Revision};

    fn snap(rev: &str, files: &[(&str, &str)]) -> Snapshot {
        let files = files.iter().map(|(p, d)| (*p, d.as_bytes()));
        Snapshot::from_files(Revision::new("main", rev), files).expect("valid paths")
    }

    fn same(a: &DesiredState, b: &DesiredState) {
        assert_eq!(a.resources(), b.resources());
        assert_eq!(a.warnings(), b.warnings());
        let waves = |d: &DesiredState| -> Vec<Vec<String>> {
            d.waves()
                .map(|w| w.map(|r| r.id.to_string()).collect())
                .collect()
        };
        assert_eq!(waves(a), waves(b));
    }

    const A: &str = "kind: Svc\nmetadata: {name: a, dependsOn: [Db/b]}\nspec: {on: yes}\n";
    const B: &str = "kind: Db\nmetadata: {name: b}\nspec: {size: 1}\n";

    #[test]
    fn unchanged_files_are_not_rendered_again() {
        let cache = RenderCache::new(ManifestRender::new());
        let first = snap(
            "1",
            &[
                ("a.yaml", A),
                ("b.yaml", B),
                ("c.yaml", B.replace('b', "c").as_str()),
            ],
        );
        same(
            &cache.render(&first).unwrap(),
            &ManifestRender::new().render(&first).unwrap(),
        );
        assert_eq!(cache.files_rendered(), 3);
        // The same revision again, then a one-file change: one file rendered.
        cache.render(&first).unwrap();
        assert_eq!(cache.files_rendered(), 3);
        let b2 = B.replace("size: 1", "size: 2");
        let second = snap(
            "2",
            &[
                ("a.yaml", A),
                ("b.yaml", &b2),
                ("c.yaml", B.replace('b', "c").as_str()),
            ],
        );
        let desired = cache.render(&second).unwrap();
        assert_eq!(cache.files_rendered(), 4);
        same(&desired, &ManifestRender::new().render(&second).unwrap());
        assert_eq!(desired.revision().id, "2");
        assert!(
            !desired.warnings().is_empty(),
            "the cached file's warnings are kept"
        );
    }

    #[test]
    fn removed_files_are_forgotten_and_errors_keep_the_cache() {
        let cache = RenderCache::new(ManifestRender::new());
        cache
            .render(&snap("1", &[("a.yaml", A), ("b.yaml", B)]))
            .unwrap();
        // b.yaml went away: a's dependency is unknown, refused as uncached.
        let err = cache.render(&snap("2", &[("a.yaml", A)])).unwrap_err();
        assert!(
            matches!(err, RenderError::UnknownDependency { .. }),
            "{err}"
        );
        let bad = snap("3", &[("a.yaml", A), ("b.yaml", B), ("c.yaml", "kind: [")]);
        assert!(matches!(cache.render(&bad), Err(RenderError::Parse { .. })));
        let before = cache.files_rendered();
        // b.yaml comes back: rendered again (it was forgotten); a.yaml is not.
        cache
            .render(&snap("4", &[("a.yaml", A), ("b.yaml", B)]))
            .unwrap();
        assert_eq!(cache.files_rendered(), before + 1);
    }

    #[test]
    fn the_executable_bit_is_part_of_the_content() {
        let cache = RenderCache::new(FilesRender::new());
        let mut s = snap("1", &[("run.sh", "echo")]);
        cache.render(&s).unwrap();
        s.insert("run.sh", &b"echo"[..], true).unwrap();
        let desired = cache.render(&s).unwrap();
        assert_eq!(cache.files_rendered(), 2);
        assert_eq!(desired.resources()[0].spec.to_value()["mode"], "0755");
    }

    /// Not per-file: the default `render_parts`.
    struct Whole;

    impl Render for Whole {
        fn render(&self, snapshot: &Snapshot) -> RenderResult {
            FilesRender::new().render(snapshot)
        }
    }

    #[test]
    fn a_renderer_that_is_not_per_file_renders_every_snapshot_whole() {
        let cache = RenderCache::new(Whole);
        let s = snap("1", &[("a", "1"), ("b", "2")]);
        cache.render(&s).unwrap();
        let desired = cache.render(&s).unwrap();
        assert_eq!(cache.files_rendered(), 4);
        assert_eq!(desired.len(), 2);
    }
}

/// The pull-mode benefit, timed: `cargo test --release -p gitops-core --lib
/// render_cache_timing -- --ignored --nocapture`.
#[cfg(test)]
mod timing {
    use std::time::Instant;

    use super::*;
    use crate::{ManifestRender, Revision};

    fn config(i: usize, extra: &str) -> (String, Vec<u8>) {
        let path = format!("cfg/d{:05}/f{}.yaml", i / 10, i % 10);
        let text = format!(
            "kind: Config\nmetadata: {{name: svc-{i}}}\nspec: {{port: {}}}\n{extra}",
            8000 + i % 1000
        );
        (path, text.into_bytes())
    }

    #[test]
    #[ignore = "timing, run by hand"]
    fn render_cache_timing() {
        let n = 20_000;
        let files: Vec<_> = (0..n).map(|i| config(i, "")).collect();
        let first = Snapshot::from_files(Revision::new("main", "1"), files.clone()).unwrap();
        // The next commit shares the bytes of unchanged blobs, as the Git source does.
        let mut second = Snapshot::new(Revision::new("main", "2"));
        for (path, file) in first.files() {
            second
                .insert(path.clone(), file.data.clone(), false)
                .unwrap();
        }
        let (path, data) = config(7, "# changed\n");
        second.insert(path, data, false).unwrap();
        let plain = ManifestRender::new();
        let cache = RenderCache::new(ManifestRender::new());
        cache.render(&first).unwrap();
        let t = Instant::now();
        plain.render(&second).unwrap();
        let uncached = t.elapsed();
        let t = Instant::now();
        cache.render(&second).unwrap();
        let cached = t.elapsed();
        println!("{n} files, one changed: render {uncached:?}, with the cache {cached:?}");
        assert_eq!(cache.files_rendered(), u64::try_from(n).unwrap() + 1);
    }
}
