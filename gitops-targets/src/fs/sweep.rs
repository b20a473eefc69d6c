//! The walk [`FsTarget::open`](super::FsTarget::open) makes: stale
//! temporary files removed, regular files counted.

use std::path::Path;

use cap_std::fs::Dir;

use super::{FsOpenError, TEMP_PREFIX};

/// Deepest directory nesting [`FsTarget::open`] walks when sweeping temporary files.
const MAX_WALK_DEPTH: usize = 256;

/// Walks the root: removes stale temporary files, counts regular files.
pub(super) fn sweep(root: &Dir, root_path: &Path) -> Result<usize, FsOpenError> {
    let scan_error = |relative: &str, source| FsOpenError::Scan {
        path: root_path.to_owned(),
        relative: relative.to_owned(),
        source,
    };
    let mut files = 0;
    let mut stack: Vec<(String, Option<Dir>)> = vec![(String::new(), None)];
    while let Some((relative, dir)) = stack.pop() {
        let dir_ref = dir.as_ref().unwrap_or(root);
        let entries = dir_ref.entries().map_err(|e| scan_error(&relative, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| scan_error(&relative, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let file_type = entry.file_type().map_err(|e| scan_error(&relative, e))?;
            let child = if relative.is_empty() {
                name.to_string()
            } else {
                format!("{relative}/{name}")
            };
            if file_type.is_dir() {
                if stack.len() + child.matches('/').count() > MAX_WALK_DEPTH {
                    continue;
                }
                let sub = entry.open_dir().map_err(|e| scan_error(&child, e))?;
                stack.push((child, Some(sub)));
            } else if file_type.is_file() && name.starts_with(TEMP_PREFIX) {
                dir_ref
                    .remove_file(entry.file_name())
                    .map_err(|e| scan_error(&child, e))?;
            } else if file_type.is_file() {
                files += 1;
            }
        }
    }
    Ok(files)
}
