//! FsTarget observe with entries it cannot read at managed paths: a Unix
//! socket and a mode-000 file are that resource's drift, not an error that
//! fails the observation of every other file of the application.

mod support;

use support::file;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use gitops_core::{Health, Target};
use gitops_targets::FsTarget;

/// Observes `ok.conf` and `odd` (one by one and in a batch): the first is
/// read, the second is observed as a `kind` in the way (drift), not an
/// error; health says why; an apply replaces it.
async fn odd_entry_is_its_own_drift(root: &Path, kind: &str, replace: bool) {
    let target = FsTarget::open(root).expect("open");
    let ok = file("ok.conf", b"fine\n");
    let odd = file("odd", b"wanted\n");
    let results = target.observe_many(&[ok.id.clone(), odd.id.clone()]).await;
    let observed: Vec<_> = results
        .into_iter()
        .map(|r| {
            r.expect("observing one resource does not fail")
                .expect("present")
        })
        .collect();
    assert_eq!(observed[0].spec.to_value()["content"], "fine\n");
    assert!(target.differs(&ok, &observed[0]).is_none());
    assert_eq!(observed[1].spec.to_value()["type"], kind);
    let diff = target.differs(&odd, &observed[1]).expect("drift");
    assert!(diff.changes.iter().any(|c| c.path == "spec.type"));
    let single = target
        .observe(&odd.id)
        .await
        .expect("observe of one resource")
        .expect("present");
    assert_eq!(single.spec.to_value()["type"], kind);
    assert!(matches!(
        target.health(&odd.id).await.expect("health"),
        Health::Degraded { .. }
    ));
    if replace {
        target.apply(&odd).await.expect("replaced by the file");
        assert_eq!(std::fs::read(root.join("odd")).expect("read"), b"wanted\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_at_a_managed_path_fails_only_its_resource() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ok.conf"), b"fine\n").expect("write");
    let _listener = UnixListener::bind(dir.path().join("odd")).expect("bind a socket");
    odd_entry_is_its_own_drift(dir.path(), "socket", true).await;
}

const CHILD: &str = "GITOPS_TEST_UNREADABLE_ROOT";
const NAME: &str = "a_mode_000_file_at_a_managed_path_fails_only_its_resource";

/// Root reads a mode-000 file (CAP_DAC_OVERRIDE), so as root the check runs
/// in a child, this test binary again, as `nobody` without capabilities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_000_file_at_a_managed_path_fails_only_its_resource() {
    if let Ok(root) = std::env::var(CHILD) {
        // Not replaced: `nobody` may not write to the root's directory.
        odd_entry_is_its_own_drift(Path::new(&root), "unreadable file", false).await;
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ok.conf"), b"fine\n").expect("write");
    let odd = dir.path().join("odd");
    std::fs::write(&odd, b"secret\n").expect("write");
    std::fs::set_permissions(&odd, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    if !rustix::process::geteuid().is_root() {
        odd_entry_is_its_own_drift(dir.path(), "unreadable file", true).await;
        return;
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        dir.path().join("ok.conf"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let exe = std::env::current_exe().expect("this test binary");
    let status = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .status()
        .expect("setpriv (util-linux) runs the check unprivileged");
    assert!(status.success(), "the unprivileged check failed: {status}");
}
