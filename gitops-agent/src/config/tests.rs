//! Reading whole configs: defaults and flags, every key, and the errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gitops_git::ReferencePolicy;

use super::*;

fn parse_with(text: &str, defaults: &Defaults) -> Result<AppsConfig, ConfigError> {
    parse(text, "apps.toml", Path::new("/etc/gitops"), defaults)
}

fn ok(text: &str) -> AppsConfig {
    parse_with(text, &Defaults::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    parse_with(text, &Defaults::default())
        .expect_err("invalid")
        .to_string()
}

/// The issue's example, with its etcd app as a directory app.
const EXAMPLE: &str = r#"
[defaults]               # optional; any per-app key may appear here
interval = "30s"
drift_interval = "60s"

[[app]]
name = "db"                          # unique; [A-Za-z0-9._-]
repo = "https://git.example/ops.git" # path, file://, http(s)://, ssh://, git://
branch = "main"                      # or tag = "...", semver = "^1", commit = "..."
path = "apps/db"                     # optional, default: the repository root
render = "files"                     # files | manifests
target_dir = "/srv/db"               # the FsTarget root; or a [app.target] table, below
depends_on = ["flags"]
drift = "revert"                     # revert | ignore | writeback
prune = true

[[app]]
name = "flags"
repo = "https://git.example/ops.git"
path = "apps/flags"
render = "manifests"
[app.target]
kind = "etcd"
prefix = "/config/flags"
"#;

#[test]
fn the_issue_s_example_reads() {
    let config = ok(EXAMPLE);
    assert_eq!(config.apps.len(), 2);
    let db = config.get("db").expect("db");
    assert_eq!(db.repo, "https://git.example/ops.git");
    assert_eq!(db.release, ReferencePolicy::branch("main"));
    assert_eq!(db.path.as_deref(), Some("apps/db"));
    assert_eq!(db.target, AppTarget::Dir(PathBuf::from("/srv/db")));
    assert_eq!(db.depends_on, ["flags"]);
    assert_eq!(db.policy.drift, Some(crate::args::DriftArg::Revert));
    assert!(db.policy.prune);
    let flags = config.get("flags").expect("flags");
    assert_eq!(flags.policy.render, crate::args::RenderKind::Manifests);
    let AppTarget::Other { kind, settings } = &flags.target else {
        panic!("{:?}", flags.target)
    };
    assert_eq!(kind, "etcd");
    assert_eq!(settings.get("prefix"), Some(&"/config/flags".into()));
    assert_eq!(config.lines["db"], AppLines { app: 6, target: 12 });
    assert_eq!(config.lines["flags"].target, 22);
}

#[test]
fn app_keys_win_over_defaults_which_win_over_flags() {
    let flags = Defaults {
        interval: Duration::from_secs(7),
        drift_interval: Duration::from_secs(8),
        prune: false,
        ..Defaults::default()
    };
    let text = "[defaults]\ninterval = \"1m\"\nrepo = \"/srv/git/ops.git\"\ntag = \"v1\"\n\
                [[app]]\nname = \"a\"\ntarget_dir = \"/t/a\"\n\
                [[app]]\nname = \"b\"\ntarget_dir = \"/t/b\"\ninterval = \"2s\"\nbranch = \"dev\"\n\
                prune = true\nallow = [\"office @daily 8h\"]\n";
    let config = parse_with(text, &flags).expect("valid");
    let (a, b) = (&config.apps[0], &config.apps[1]);
    assert_eq!(
        a.policy.interval,
        Duration::from_secs(60),
        "[defaults] over the flag"
    );
    assert_eq!(a.policy.drift_interval, Duration::from_secs(8), "the flag");
    assert!(!a.policy.prune);
    assert_eq!(a.release, ReferencePolicy::tag("v1"));
    assert_eq!(a.repo, "/srv/git/ops.git");
    assert_eq!(
        b.policy.interval,
        Duration::from_secs(2),
        "the app over [defaults]"
    );
    assert_eq!(
        b.release,
        ReferencePolicy::branch("dev"),
        "release keys go together"
    );
    assert!(b.policy.prune);
    assert_eq!(b.policy.allow.len(), 1);
    assert!(a.policy.allow.is_empty());
}

#[test]
fn relative_paths_are_taken_from_the_config_s_directory() {
    let text = "[[app]]\nname = \"a\"\nrepo = \"../git/ops.git\"\ntarget_dir = \"srv/a\"\n\
                verify_signers = \"signers\"\n[[app]]\nname = \"b\"\n\
                repo = \"git@host:org/ops.git\"\n[app.target]\nkind = \"dir\"\npath = \"./b/\"\n";
    let config = ok(text);
    assert_eq!(config.apps[0].repo, "/etc/git/ops.git");
    assert_eq!(
        config.apps[0].target,
        AppTarget::Dir(PathBuf::from("/etc/gitops/srv/a"))
    );
    assert_eq!(
        config.apps[0].policy.verify_signers.as_deref(),
        Some(Path::new("/etc/gitops/signers"))
    );
    assert_eq!(config.apps[1].repo, "git@host:org/ops.git");
    assert_eq!(
        config.apps[1].target,
        AppTarget::Dir(PathBuf::from("/etc/gitops/b"))
    );
}

#[test]
fn values_are_checked_naming_line_app_and_key() {
    let app = |extra: &str| {
        format!("[[app]]\nname = \"db\"\nrepo = \"/r\"\ntarget_dir = \"/t\"\n{extra}")
    };
    let cases = [
        ("interval = \"5d\"\n", "apps.toml:5: app \"db\": interval: "),
        (
            "render = \"yaml\"\n",
            "apps.toml:5: app \"db\": render: \"yaml\": use one of files, manifests",
        ),
        ("drift = \"x\"\n", "apps.toml:5: app \"db\": drift: "),
        ("semver = \"one\"\n", "apps.toml:5: app \"db\": semver: "),
        (
            "branch = \"a\"\ntag = \"b\"\n",
            "apps.toml:6: app \"db\": tag: give one of",
        ),
        ("path = \"../x\"\n", "apps.toml:5: app \"db\": path: "),
        (
            "deny = [\"x 0 18 * * FRI\"]\n",
            "apps.toml:5: app \"db\": deny: ",
        ),
        (
            "depends_on = [\"nope\"]\n",
            "apps.toml:1: app \"db\": depends_on: no app is named \"nope\"",
        ),
        (
            "depends_on = [\"db\"]\n",
            "apps.toml:1: app \"db\": depends_on: an app cannot depend on itself",
        ),
    ];
    for (extra, expected) in cases {
        let e = error(&app(extra));
        assert!(e.starts_with(expected), "{extra:?}: {e}");
    }
}

#[test]
fn missing_keys_names_and_targets() {
    let e = error("[[app]]\nrepo = \"/r\"\ntarget_dir = \"/t\"\n");
    assert_eq!(e, "apps.toml:1: app #1: name: required");
    let e = error("[[app]]\nname = \"a b\"\n");
    assert!(
        e.starts_with("apps.toml:2: app #1: name: \"a b\": use"),
        "{e}"
    );
    let e = error("[[app]]\nname = \"..\"\n");
    assert!(e.contains("name: \"..\""), "{e}");
    let e = error("\n[[app]]\nname = \"a\"\ntarget_dir = \"/t\"\n");
    assert_eq!(e, "apps.toml:2: app \"a\": repo: required");
    let e = error("[[app]]\nname = \"a\"\nrepo = \"/r\"\n");
    assert!(
        e.starts_with("apps.toml:1: app \"a\": target_dir: required"),
        "{e}"
    );
    let e = error(
        "[[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/t\"\n[app.target]\nkind = \"dir\"\n",
    );
    assert!(
        e.contains("target: give target_dir or an [app.target] table"),
        "{e}"
    );
    let e =
        error("[[app]]\nname = \"a\"\nrepo = \"/r\"\n[app.target]\nkind = \"dir\"\npth = \"/x\"\n");
    assert!(
        e.starts_with("apps.toml:4: app \"a\": target.pth: unknown key"),
        "{e}"
    );
    let e = error("[defaults]\nname = \"x\"\n");
    assert!(e.starts_with("apps.toml:2: [defaults]: name: "), "{e}");
    let e = error(
        "[defaults]\ninterval = \"0s\"\n[[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/t\"\n",
    );
    assert!(e.starts_with("apps.toml:2: [defaults]: interval: "), "{e}");
}

#[test]
fn duplicate_names_cycles_and_overlapping_directories_are_refused() {
    let two = |a: &str, b: &str| {
        format!(
            "[[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = {a:?}\n\
             [[app]]\nname = \"b\"\nrepo = \"/r\"\ntarget_dir = {b:?}\n"
        )
    };
    let e = error(&two("/srv/a", "/srv/a/../a/"));
    assert_eq!(
        e,
        "apps.toml:8: app \"b\": target_dir: /srv/a overlaps /srv/a of app \"a\" (line 4): \
         two apps cannot manage one directory"
    );
    let e = error(&two("/srv", "/srv/b"));
    assert!(
        e.contains("app \"b\": target_dir: /srv/b overlaps /srv of app \"a\""),
        "{e}"
    );
    ok(&two("/srv/app", "/srv/app2"));
    let e =
        error("[[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/1\"\n[[app]]\nname = \"a\"\n");
    assert!(
        e.starts_with("apps.toml:6: app \"a\": name: another app at line 1"),
        "{e}"
    );
    let e = error(
        "[[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/1\"\ndepends_on = [\"b\"]\n\
         [[app]]\nname = \"b\"\nrepo = \"/r\"\ntarget_dir = \"/2\"\ndepends_on = [\"a\"]\n",
    );
    assert_eq!(
        e,
        "apps.toml:1: app \"a\": depends_on: a cycle: a -> b -> a"
    );
}

#[test]
fn the_docs_snippets_read() {
    let docs = include_str!("../../../docs/agent.md");
    let section = docs
        .split("## Many applications")
        .nth(1)
        .expect("docs/agent.md has a \"Many applications\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let snippets: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|s| s.split("```").next())
        .collect();
    assert!(!snippets.is_empty(), "no toml snippet in the section");
    for snippet in snippets {
        if let Err(e) = parse_with(snippet, &Defaults::default()) {
            panic!("{e}\n{snippet}");
        }
    }
}

#[test]
fn signature_keys_per_app_over_defaults_over_flags() {
    let flags = Defaults {
        verify_pgp_keys: vec![PathBuf::from("/keys/agent.asc")],
        ..Defaults::default()
    };
    let text = "[defaults]\nverify_pgp_keys = [\"keys/ops.asc\", \"/keys/rel.asc\"]\n\
                [[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/t/a\"\n\
                [[app]]\nname = \"b\"\nrepo = \"/r\"\ntarget_dir = \"/t/b\"\ntag = \"v1\"\n\
                verify_pgp_keys = []\nverify_signers = \"signers\"\nverify_mode = \"tag-and-head\"\n";
    let config = parse_with(text, &flags).expect("valid");
    let (a, b) = (&config.apps[0].policy, &config.apps[1].policy);
    assert_eq!(
        a.verify_pgp_keys,
        [
            PathBuf::from("/etc/gitops/keys/ops.asc"),
            PathBuf::from("/keys/rel.asc")
        ],
        "[defaults] over the flag, relative to the config"
    );
    assert_eq!(a.verify_mode, None);
    assert!(b.verify_pgp_keys.is_empty(), "an empty list replaces");
    assert_eq!(
        b.verify_signers.as_deref(),
        Some(Path::new("/etc/gitops/signers"))
    );
    assert_eq!(b.verify_mode, Some(crate::args::VerifyModeArg::TagAndHead));
    assert!(b.verifies());
    let only_flags = parse_with(
        "[[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/t/a\"\n",
        &flags,
    )
    .expect("valid");
    assert_eq!(
        only_flags.apps[0].policy.verify_pgp_keys,
        flags.verify_pgp_keys
    );
}

#[test]
fn verify_mode_errors_name_line_and_key() {
    let app = |extra: &str| {
        format!("[[app]]\nname = \"db\"\nrepo = \"/r\"\ntarget_dir = \"/t\"\n{extra}")
    };
    let cases = [
        (
            "verify_pgp_keys = [\"k.asc\"]\nverify_mode = \"tags\"\n",
            "apps.toml:6: app \"db\": verify_mode: \"tags\": use one of head, tag, tag-and-head",
        ),
        (
            "verify_mode = \"head\"\n",
            "apps.toml:5: app \"db\": verify_mode: no keys to verify with",
        ),
        (
            "verify_pgp_keys = [\"k.asc\"]\n\nverify_mode = \"tag\"\n",
            "apps.toml:7: app \"db\": verify_mode: a tag is only verified when the release is selected by tag or semver",
        ),
        (
            "verify_pgp_keys = \"k.asc\"\n",
            "apps.toml:5: app \"db\": verify_pgp_keys: ",
        ),
    ];
    for (extra, expected) in cases {
        let e = error(&app(extra));
        assert!(e.starts_with(expected), "{extra:?}: {e}");
    }
    let e = error(
        "[defaults]\nverify_mode = \"tag\"\nverify_signers = \"s\"\n\
         [[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/t\"\n",
    );
    assert!(
        e.starts_with("apps.toml:2: [defaults]: verify_mode: a tag is only verified"),
        "{e}"
    );
    ok(&app(
        "semver = \"^1\"\nverify_pgp_keys = [\"k.asc\"]\nverify_mode = \"tag\"\n",
    ));
}
