//! The application list in Git (`--config-repo`, "app of apps", issue 18),
//! through the real binary: the list is polled like any source, a commit
//! with an invalid list is refused whole (the last good list stays and
//! keeps running), the next good commit is applied, and a restart while
//! the list's repository is unreachable runs the last good list.

mod support;

use std::path::Path;

use support::apps::{Agent, Served, app, read};
use support::git_server::Repo;

fn list(apps: &[String]) -> String {
    format!(
        "[defaults]\ninterval = \"1s\"\ndrift_interval = \"1h\"\n\n{}",
        apps.concat()
    )
}

fn start(dir: &Path, list_url: &str) -> Agent {
    Agent::start(
        dir,
        &[
            "--config-repo",
            list_url,
            "--config-path",
            "fleet/apps.toml",
            "--interval",
            "1s",
        ],
    )
}

#[test]
fn an_invalid_list_in_git_is_refused_whole_and_the_last_good_one_stays() {
    let ops = Served::start(&[("apps/a/a.conf", "a = 1\n"), ("apps/b/b.conf", "b = 1\n")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let target = |name: &str| dir.path().join("srv").join(name);
    let app_a = app("a", &ops.url(), "apps/a", &target("a"), "");
    let app_b = app("b", &ops.url(), "apps/b", &target("b"), "");
    let fleet = Repo::with_files(&[(
        "fleet/apps.toml",
        list(std::slice::from_ref(&app_a)).as_str(),
    )]);
    let list_url = fleet.root.join("app.git").display().to_string();
    let agent = start(dir.path(), &list_url);
    let (a, b) = (target("a").join("a.conf"), target("b").join("b.conf"));
    agent.wait_for("a deployed", || read(&a) == "a = 1\n");
    agent.wait_for("ready", || agent.get("/readyz").0 == 200);
    let status = agent.json("/status");
    assert_eq!(status["config"]["revision"], fleet.head(), "{status}");
    assert_eq!(agent.apps(), ["a"]);

    // A commit whose list has an unknown key: refused, a keeps running.
    let bad = format!("{app_a}bogus = 1\n{app_b}");
    fleet.commit(&[("fleet/apps.toml", list(&[bad]).as_str())], "a typo");
    let short: String = fleet.head().chars().take(12).collect();
    let expected = format!("fleet/apps.toml@{short}:11: app \"a\": unknown key \"bogus\"");
    agent.wait_for("the refusal", || {
        agent.json("/status")["config"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&expected))
    });
    assert!(agent.log().contains(&expected), "{}", agent.log());
    assert_eq!(agent.apps(), ["a"]);
    assert!(!b.exists());
    ops.repo.commit(&[("apps/a/a.conf", "a = 2\n")], "a two");
    agent.wait_for("a still following its repository", || read(&a) == "a = 2\n");

    // The next good commit is applied.
    fleet.commit(
        &[(
            "fleet/apps.toml",
            list(&[app_a.clone(), app_b.clone()]).as_str(),
        )],
        "add b",
    );
    agent.wait_for("b deployed", || {
        read(&b) == "b = 1\n" && agent.apps() == ["a", "b"]
    });
    assert!(agent.json("/status")["config"]["error"].is_null());
    assert_eq!(agent.stop(), Some(0));

    // Restarted while the list's repository is gone: the last good list runs.
    let moved = fleet.root.join("moved.git");
    std::fs::rename(fleet.root.join("app.git"), &moved).expect("move the repository away");
    let agent = start(dir.path(), &list_url);
    agent.wait_for("the kept list running", || agent.apps() == ["a", "b"]);
    ops.repo.commit(&[("apps/b/b.conf", "b = 2\n")], "b two");
    agent.wait_for("b following its repository", || read(&b) == "b = 2\n");
    assert!(
        agent.log().contains("last good application list"),
        "{}",
        agent.log()
    );
    assert_eq!(agent.stop(), Some(0));
}
