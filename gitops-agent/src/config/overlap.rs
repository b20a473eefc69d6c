//! Whether two target directories overlap: the same directory, or one
//! inside the other, after normalising (`.` and `..` taken lexically; the
//! agent also compares the canonical paths of what exists, so a symbolic
//! link to another application's directory is caught at start).

use std::path::{Component, Path, PathBuf};

/// `path` with `.` removed and `..` applied lexically (never above the
/// root), without touching the filesystem.
///
/// ```
/// use std::path::Path;
/// use gitops_agent::config::normalize;
/// assert_eq!(normalize(Path::new("/srv/./a/../b/")), Path::new("/srv/b"));
/// assert_eq!(normalize(Path::new("/../x")), Path::new("/x"));
/// ```
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

/// Whether `a` and `b` (normalised) are the same directory or one holds the other.
///
/// ```
/// use std::path::Path;
/// use gitops_agent::config::overlaps;
/// assert!(overlaps(Path::new("/srv/a"), Path::new("/srv/a/b")));
/// assert!(!overlaps(Path::new("/srv/a"), Path::new("/srv/ab")));
/// ```
pub fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The first pair (by position) of `dirs` that overlaps.
pub fn first_overlap<N>(dirs: &[(N, &Path)]) -> Option<(usize, usize)> {
    (0..dirs.len()).find_map(|j| {
        (0..j)
            .find(|&i| overlaps(dirs[i].1, dirs[j].1))
            .map(|i| (i, j))
    })
}

/// `path` with its longest existing ancestor replaced by its canonical
/// path (symbolic links resolved), the rest appended.
pub fn canonical(path: &Path) -> PathBuf {
    let mut existing = path.to_owned();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_owned();
            }
            _ => return path.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_nested_and_disjoint_directories() {
        let p = Path::new;
        assert!(overlaps(p("/srv/a"), p("/srv/a")));
        assert!(overlaps(p("/srv"), p("/srv/a/b")));
        assert!(overlaps(&normalize(p("/srv/a/../b")), p("/srv/b/c")));
        assert!(!overlaps(p("/srv/a"), p("/srv/b")));
        assert!(!overlaps(p("/srv/app"), p("/srv/app2")));
        let dirs = [("a", p("/srv/a")), ("b", p("/srv/b")), ("c", p("/srv/b/x"))];
        assert_eq!(first_overlap(&dirs), Some((1, 2)));
        assert_eq!(first_overlap(&dirs[..2]), None);
    }

    #[test]
    fn normalising_is_lexical() {
        assert_eq!(normalize(Path::new("a/./b/../c")), Path::new("a/c"));
        assert_eq!(normalize(Path::new("../a")), Path::new("../a"));
        assert_eq!(normalize(Path::new("../../a/..")), Path::new("../.."));
        assert_eq!(normalize(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn canonical_paths_follow_links_of_what_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let real = real.canonicalize().expect("canonical");
        assert_eq!(canonical(&link.join("x/y")), real.join("x/y"));
        assert!(overlaps(&canonical(&link), &canonical(&real.join("sub"))));
    }
}
