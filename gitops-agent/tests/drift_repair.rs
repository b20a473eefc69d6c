//! Drift repair while a revision is failing, through the `gitops-agent`
//! binary against a real Git repository and a real target directory (issue
//! 16 item 2): a commit adds a file whose target path is a directory, so
//! that file keeps failing; a hand edit of another managed file is still
//! reverted, and the failing file is not written on every drift check.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::git_server::{Dirs, Repo, agent};

fn wait_for(what: &str, limit: Duration, log: &Path, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out waiting for {what}; agent log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn stop(mut child: Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn a_hand_edit_is_reverted_while_a_commit_keeps_failing() {
    let repo = Repo::with_files(&[("app.conf", "port = 8080\n"), ("other.conf", "a = 1\n")]);
    let dirs = Dirs::new();
    let log = dirs.dir.path().join("agent.log");
    let child = agent(
        repo.root.join("app.git").to_str().expect("utf8"),
        &dirs,
        "info",
    )
    .args(["--interval", "200ms", "--drift-interval", "200ms"])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).expect("log file"))
    .spawn()
    .expect("spawn gitops-agent");
    let app = dirs.target.join("app.conf");
    let limit = Duration::from_secs(30);
    wait_for("the first deploy", limit, &log, &|| {
        read(&app) == "port = 8080\n"
    });

    // `conf` cannot be written: a directory holds its path.
    std::fs::create_dir_all(dirs.target.join("conf").join("keep")).expect("mkdir");
    repo.commit(
        &[("conf", "x = 1\n"), ("other.conf", "a = 2\n")],
        "add conf",
    );
    wait_for("the failing revision to stall", limit, &log, &|| {
        read(&log).contains("stalled")
    });
    assert_eq!(read(&dirs.target.join("other.conf")), "a = 2\n", "applied");

    // A hand edit while the revision is stalled is reverted.
    std::fs::write(&app, "port = 6666\n").expect("hand edit");
    std::fs::write(dirs.target.join("other.conf"), "a = 666\n").expect("hand edit");
    wait_for("the hand edits to be reverted", limit, &log, &|| {
        read(&app) == "port = 8080\n" && read(&dirs.target.join("other.conf")) == "a = 2\n"
    });
    // The failing file was tried once, not on every drift check.
    std::thread::sleep(Duration::from_secs(2));
    let text = read(&log);
    let failures = text.matches("resource failed").count();
    assert_eq!(failures, 1, "{text}");
    assert!(dirs.target.join("conf").is_dir());
    stop(child);
}
