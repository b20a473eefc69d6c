//! The reference binary's command line: exit codes and usage errors.

mod support;

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gitops-agent"))
}

#[test]
fn help_exits_zero_and_lists_every_group() {
    let out = agent().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in [
        "Target:",
        "Source:",
        "Git credentials:",
        "Engine:",
        "One-shot runs (CI):",
        "HTTP service:",
        "Notifications:",
        "Logging:",
        "Many applications:",
    ] {
        assert!(help.contains(heading), "{heading} missing from\n{help}");
    }
}

#[test]
fn a_usage_error_is_one_error_line_and_exit_1_not_clap_s_2() {
    let out = agent()
        .args([
            "--repo",
            "/nowhere",
            "--target-dir",
            "/tmp/x",
            "--interval",
            "5d",
        ])
        .env_clear()
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "2 would mean changes pending");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("--interval"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn flags_come_from_the_environment_too() {
    let out = agent()
        .env_clear()
        .env("GITOPS_REPO", "/nowhere")
        .env("GITOPS_TARGET_DIR", "/tmp/x")
        .env("GITOPS_INTERVAL", "nonsense")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nonsense"), "the env value was parsed: {err}");
}

#[test]
fn json_logs_are_one_object_per_line_and_rust_log_sets_the_level() {
    let repo = support::git_server::Repo::with_files(&[("app.conf", "port = 80\n")]);
    let dirs = support::git_server::Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let out = support::git_server::agent(&url, &dirs, "debug")
        .args(["--once", "--log-format", "json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "RUST_LOG=debug logs something");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value.get("level").is_some() && value.get("timestamp").is_some(),
            "{line}"
        );
    }
    let quiet = support::git_server::agent(&url, &dirs, "error")
        .args(["--once", "--log-format", "json"])
        .output()
        .expect("run");
    assert!(quiet.status.success());
    assert!(quiet.stderr.is_empty(), "RUST_LOG=error: nothing to say");
}

#[test]
fn a_mass_delete_waits_for_confirm_and_the_plan_says_so() {
    let files: Vec<(String, String)> = (0..12)
        .map(|i| (format!("f{i}.conf"), "x\n".into()))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let repo = support::git_server::Repo::with_files(&refs);
    let dirs = support::git_server::Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let run = |args: &[&str]| {
        support::git_server::agent(&url, &dirs, "error")
            .args(args)
            .output()
            .expect("run")
    };
    assert!(run(&["--once"]).status.success());
    // Delete 11 of 12: more than 10 and more than half.
    let removed: Vec<String> = (1..12).map(|i| format!("f{i}.conf")).collect();
    for path in &removed {
        std::fs::remove_file(repo.work().join(path)).expect("rm");
    }
    repo.commit(&[], "drop most");
    let head = repo.head();

    let plan = run(&["--plan"]);
    assert_eq!(plan.status.code(), Some(2));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("held for confirmation"), "{text}");
    assert!(text.contains(&format!("--confirm {head}")), "{text}");

    let once = run(&["--once"]);
    assert_eq!(once.status.code(), Some(1));
    let err = String::from_utf8_lossy(&once.stderr);
    assert!(
        err.contains("held for confirmation") && err.contains("delete 11 of 12"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dirs.target).expect("ls").count(),
        12,
        "nothing deleted"
    );

    let confirmed = run(&["--once", "--confirm", &head]);
    assert!(
        confirmed.status.success(),
        "{}",
        String::from_utf8_lossy(&confirmed.stderr)
    );
    assert_eq!(std::fs::read_dir(&dirs.target).expect("ls").count(), 1);
}

#[test]
fn a_plan_lists_what_a_create_writes_marks_drift_and_full_shows_everything() {
    let long: String = (0..30).map(|i| format!("line {i}\n")).collect();
    let repo = support::git_server::Repo::with_files(&[("app.conf", long.as_str())]);
    let dirs = support::git_server::Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let run = |args: &[&str]| {
        let out = support::git_server::agent(&url, &dirs, "error")
            .args(args)
            .output()
            .expect("run");
        (out.status.code(), support::git_server::text(&out).0)
    };
    let (code, short) = run(&["--plan"]);
    assert_eq!(code, Some(2), "{short}");
    assert!(short.contains("+ create File"), "{short}");
    assert!(
        short.contains("+ spec.content = <<(30 lines, 230 bytes, sha256:"),
        "{short}"
    );
    assert!(
        short.contains("| line 3\n") && short.contains("| … 26 more lines"),
        "{short}"
    );
    assert!(!short.contains("line 29"), "{short}");
    let (_, full) = run(&["--plan", "--full"]);
    assert!(
        full.contains("| line 29\n") && !full.contains("more lines"),
        "{full}"
    );

    assert_eq!(run(&["--once"]).0, Some(0));
    std::fs::write(
        dirs.target.join("app.conf"),
        long.replace("line 7\n", "line seven\n"),
    )
    .expect("edit behind the agent's back");
    let (code, drift) = run(&["--plan"]);
    assert_eq!(code, Some(2), "{drift}");
    assert!(
        drift.contains("~ update File") && drift.contains(" (drift)"),
        "{drift}"
    );
    assert!(
        drift.contains("- line seven") && drift.contains("+ line 7"),
        "{drift}"
    );

    // A Git change is never labelled drift.
    repo.commit(&[("app.conf", "new\n")], "change it in Git");
    let (_, git) = run(&["--plan"]);
    assert!(
        git.contains("~ update File") && !git.contains("(drift)"),
        "{git}"
    );
}

#[test]
fn the_stat_cache_is_in_the_state_dir_and_a_same_size_edit_is_still_reverted() {
    use std::fs::{File, FileTimes};
    use std::time::Duration;

    let repo =
        support::git_server::Repo::with_files(&[("app.conf", "port = 80\n"), ("b.conf", "b\n")]);
    let dirs = support::git_server::Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let run = |args: &[&str]| {
        let out = support::git_server::agent(&url, &dirs, "error")
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["--once"]);
    // Past the racy window, a second run records both files clean.
    std::thread::sleep(Duration::from_millis(150));
    run(&["--once"]);
    assert!(dirs.state.join("fs-stat-cache").is_file());
    let mut names: Vec<String> = std::fs::read_dir(&dirs.target)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["app.conf", "b.conf"],
        "nothing of the agent's in the target"
    );

    // A hand edit of the same size, its mtime put back: only ctime moved.
    let path = dirs.target.join("app.conf");
    let mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, "port = 81\n").expect("edit");
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(mtime)))
        .expect("put the mtime back");
    run(&["--once"]);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "port = 80\n");
    run(&["--once", "--verify-content"]);
}
