//! End to end with the real binary and a real repository: a commit whose
//! tree is a tree bomb (64 copies of a subtree, 6 levels deep, built with
//! `git mktree`) is refused naming the limit, the last good state stays
//! deployed, a following good commit deploys, and SIGINT stops the agent
//! promptly.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::git_server::{Dirs, Repo, agent};

/// Polls `cond` every 50 ms up to `limit`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Kills the agent if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_tree_bomb_is_refused_the_last_good_state_stays_and_sigint_is_prompt() {
    let repo = Repo::with_files(&[("app.conf", "v1\n")]);
    let dirs = Dirs::new();
    let log = dirs.dir.path().join("agent.log");
    let url = format!("file://{}", repo.root.join("app.git").display());
    let mut cmd = agent(&url, &dirs, "info");
    cmd.args(["--interval", "200ms"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut running = Running(cmd.spawn().expect("agent starts"));
    let deployed = |content: &str| {
        std::fs::read_to_string(dirs.target.join("app.conf")).is_ok_and(|c| c == content)
    };
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(60), || deployed("v1\n")),
        "first commit deployed; log:\n{}",
        logged()
    );

    // The bomb: 64^6 visits for a walk that follows every reference.
    let mut bomb = repo.mktree("");
    for _ in 0..6 {
        let lines: String = (0..64)
            .map(|i| format!("040000 tree {bomb}\td{i:02}\n"))
            .collect();
        bomb = repo.mktree(&lines);
    }
    let blob = repo.blob("bomb\n");
    let mut root: String = (0..64)
        .map(|i| format!("040000 tree {bomb}\td{i:02}\n"))
        .collect();
    root.push_str(&format!("100644 blob {blob}\tapp.conf\n"));
    let pushed = Instant::now();
    repo.commit_tree(&repo.mktree(&root), "tree bomb");
    assert!(
        wait_for(Duration::from_secs(60), || logged()
            .contains("limit max_entries")),
        "the bomb is refused naming the limit; log:\n{}",
        logged()
    );
    eprintln!("bomb refused {:?} after the push", pushed.elapsed());
    assert!(deployed("v1\n"), "the last good state stays");

    let good = repo.mktree(&format!("100644 blob {}\tapp.conf\n", repo.blob("v3\n")));
    repo.commit_tree(&good, "good again");
    assert!(
        wait_for(Duration::from_secs(60), || deployed("v3\n")),
        "a later good commit deploys; log:\n{}",
        logged()
    );

    let pid = running.0.id().to_string();
    let signalled = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    assert!(
        wait_for(Duration::from_secs(20), || running
            .0
            .try_wait()
            .expect("wait")
            .is_some()),
        "SIGINT stops the agent; log:\n{}",
        logged()
    );
    let took = signalled.elapsed();
    eprintln!("agent stopped {took:?} after SIGINT");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
