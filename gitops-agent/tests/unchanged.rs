//! `--once` on a revision it already converged to, with the same flags, is
//! proven unchanged by the stat cache (no snapshot, no render); a file
//! deleted or edited in the target, a new commit, another `--path` or
//! another `--drift` take the full path and are applied.

mod support;

use std::process::Output;

use support::git_server::{Dirs, Repo, agent, text};

/// Runs `--once` with `extra` flags; its stderr (gitops-core debug logs).
fn once(url: &str, dirs: &Dirs, extra: &[&str]) -> String {
    let out: Output = agent(url, dirs, "gitops_core=debug")
        .arg("--once")
        .args(extra)
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stderr
}

const PROVEN: &str = "proven unchanged since the last converged sync";

#[test]
fn a_converged_revision_is_proven_unchanged_until_something_changes() {
    let repo = Repo::with_files(&[("app.conf", "port = 80\n"), ("etc/b.conf", "b\n")]);
    let dirs = Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let first = once(&url, &dirs, &[]);
    assert!(!first.contains(PROVEN), "{first}");
    assert!(once(&url, &dirs, &[]).contains(PROVEN));
    assert!(once(&url, &dirs, &[]).contains(PROVEN), "and again");

    // Deleted by hand: the full path puts it back.
    let b = dirs.target.join("etc/b.conf");
    std::fs::remove_file(&b).expect("rm");
    assert!(!once(&url, &dirs, &[]).contains(PROVEN));
    assert_eq!(std::fs::read_to_string(&b).expect("back"), "b\n");
    assert!(once(&url, &dirs, &[]).contains(PROVEN), "sealed again");

    // A new commit.
    repo.commit(&[("app.conf", "port = 81\n")], "port");
    assert!(!once(&url, &dirs, &[]).contains(PROVEN));
    let app = dirs.target.join("app.conf");
    assert_eq!(std::fs::read_to_string(&app).expect("read"), "port = 81\n");
    assert!(once(&url, &dirs, &[]).contains(PROVEN));

    // Other settings: another default drift policy, another path.
    assert!(!once(&url, &dirs, &["--drift", "ignore"]).contains(PROVEN));
    assert!(once(&url, &dirs, &["--drift", "ignore"]).contains(PROVEN));
    let moved = once(&url, &dirs, &["--path", "etc"]);
    assert!(!moved.contains(PROVEN), "{moved}");
    assert!(dirs.target.join("b.conf").is_file(), "rendered from etc/");
    assert!(!app.exists(), "pruned");
}
