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
