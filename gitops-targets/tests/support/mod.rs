//! Helpers shared by the tests: observing what a target holds, script
//! folders and /proc checks.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gitops_core::files::file_spec;
use gitops_core::{Observed, Resource, ResourceId, Target};

/// The id of the file resource at `path`.
pub fn id(path: &str) -> ResourceId {
    ResourceId::new("File", path).expect("valid id")
}

/// A file resource at `path` holding `content` (mode 0644).
pub fn file(path: &str, content: &[u8]) -> Resource {
    Resource::new(id(path), file_spec(path, content, false))
}

/// A folder of executable `#!/bin/sh` scripts.
pub struct Scripts {
    dir: PathBuf,
}

impl Scripts {
    /// Writes `scripts` (name, body) under the target directory, in
    /// `<folder>/<pid>`, removing the folders of test processes that are
    /// gone. Call it once, before any test spawns a process (writing an
    /// executable while another thread forks can make exec fail with ETXTBSY).
    pub fn write(folder: &str, scripts: &[(&str, &str)]) -> Self {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join(folder);
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for entry in entries.flatten() {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if !Path::new("/proc").join(&pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = parent.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scripts dir");
        for (name, body) in scripts {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod script");
        }
        Scripts { dir }
    }

    /// The path of one script.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().expect("utf-8 path").to_owned()
    }
}

/// `None` when the process is gone, `Some('Z')` for a zombie, else its state.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesized command name.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// The pid a script wrote into `state/file`, waiting up to 2 s for it.
pub async fn read_pid(state: &Path, file: &str) -> u32 {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(state.join(file))
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{file} was never written");
}

/// Waits up to 3 s for `pid` to be gone from /proc (killed and reaped).
pub async fn assert_gone(pid: u32, what: &str) {
    for _ in 0..300 {
        match process_state(pid) {
            None => return,
            Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!(
        "{what} (pid {pid}) still exists in state {:?}: killed but not reaped",
        process_state(pid)
    );
}

/// What `target` holds at `id`, which must be there.
pub async fn present(target: &impl Target, id: &ResourceId) -> Observed {
    target.observe(id).await.expect("observe").expect("present")
}

/// Rewrites the stat cache `file` as if the entry of `path` had been
/// recorded with the current stat of `on_disk`, two seconds after its last
/// change (keeping its digest): the state a change that no stat shows would
/// leave (a filesystem that does not update ctime, bit rot). Keeps the
/// file's trailer valid.
pub fn forge_stat_cache_entry(file: &Path, path: &str, on_disk: &Path) {
    use sha2::Digest as _;
    use std::os::unix::fs::MetadataExt as _;
    let text = std::fs::read_to_string(file).expect("read the stat cache");
    let meta = std::fs::symlink_metadata(on_disk).expect("stat");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.pop(); // the trailer
    let count = lines.len() - 1;
    let suffix = format!(" {path}");
    let line = lines
        .iter_mut()
        .find(|l| l.ends_with(&suffix) && l.split(' ').count() >= 13)
        .expect("an entry for the path");
    let fields: Vec<&str> = line.splitn(13, ' ').collect();
    *line = format!(
        "{} {} {} {} {} {} {} {} {} {:o} {} {} {}",
        fields[0],
        fields[1],
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.mode(),
        meta.mtime().max(meta.ctime()) + 2,
        0,
        fields[12],
    );
    let mut body = lines.join("\n");
    body.push('\n');
    let digest: String = sha2::Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(file, format!("{body}end {count} {digest}\n")).expect("write the stat cache");
}
