//! Many applications in one `gitops-agent` process (`--config`, issue 18),
//! through the real binary against real Git repositories served over smart
//! HTTP and real target directories: deploy, one fetch per repository per
//! poll, errors naming line and key, overlapping targets, SIGHUP reloads
//! (added, removed, changed, invalid), `--prune-removed`, `depends_on`,
//! webhooks by repository.

mod support;

use std::path::{Path, PathBuf};

use gitops_agent::signing::WebhookSecret;
use support::apps::{Agent, Served, app, one_shot, read};

/// A temporary directory with the config file, the targets and the state.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn target(&self, name: &str) -> PathBuf {
        self.path().join("srv").join(name)
    }

    /// Writes `apps.toml`; returns its path.
    fn config(&self, text: &str) -> String {
        let path = self.path().join("apps.toml");
        std::fs::write(&path, text).expect("write the config");
        path.display().to_string()
    }

    fn start(&self, extra: &[&str]) -> Agent {
        let config = self.path().join("apps.toml").display().to_string();
        let mut args = vec!["--config", config.as_str()];
        args.extend_from_slice(extra);
        Agent::start(self.path(), &args)
    }
}

const FAST: &str = "[defaults]\ninterval = \"1s\"\ndrift_interval = \"1h\"\n\n";

#[test]
fn three_apps_over_two_repositories_deploy_with_one_fetch_per_repository_per_poll() {
    let ops = Served::start(&[
        ("apps/db/db.conf", "db = 1\n"),
        ("apps/web/web.conf", "web = 1\n"),
    ]);
    let flags = Served::start(&[("flags.conf", "on = true\n")]);
    let s = Setup::new();
    s.config(&format!(
        "{FAST}{}{}{}",
        app("db", &ops.url(), "apps/db", &s.target("db"), ""),
        app(
            "web",
            &ops.url(),
            "apps/web",
            &s.target("web"),
            "depends_on = [\"db\"]"
        ),
        app("flags", &flags.url(), "", &s.target("flags"), ""),
    ));
    let agent = s.start(&[]);
    let db = s.target("db").join("db.conf");
    let web = s.target("web").join("web.conf");
    let on = s.target("flags").join("flags.conf");
    agent.wait_for("all three deployed", || {
        read(&db) == "db = 1\n" && read(&web) == "web = 1\n" && read(&on) == "on = true\n"
    });
    agent.wait_for("ready", || agent.get("/readyz").0 == 200);
    assert_eq!(agent.apps(), ["db", "flags", "web"]);
    assert_eq!(agent.json("/apps/web/status")["app"], "web");
    assert_eq!(agent.json("/status/flags")["app"], "flags");
    assert_eq!(agent.get("/apps/nope/status").0, 404);
    let metrics = agent.get("/metrics").1;
    for name in ["db", "web", "flags"] {
        let series = format!("gitops_app_info{{app=\"{name}\"");
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }

    // Over the same polls, the repository of two applications is fetched
    // no more often than the repository of one.
    let (ops_before, flags_before) = (ops.listings(), flags.listings());
    agent.wait_for("five polls of flags", || {
        flags.listings() >= flags_before + 5
    });
    let ops_fetches = ops.listings() - ops_before;
    let flags_fetches = flags.listings() - flags_before;
    eprintln!(
        "fetches over the same polls: ops (2 apps) {ops_fetches}, flags (1 app) {flags_fetches}"
    );
    assert!(
        ops_fetches <= flags_fetches + 1,
        "ops (2 apps): {ops_fetches} fetches, flags (1 app): {flags_fetches}"
    );

    // A commit to the shared repository reaches both of its applications.
    ops.repo.commit(
        &[
            ("apps/db/db.conf", "db = 2\n"),
            ("apps/web/web.conf", "web = 2\n"),
        ],
        "two",
    );
    agent.wait_for("the new commit deployed", || {
        read(&db) == "db = 2\n" && read(&web) == "web = 2\n"
    });
    let history = agent.json("/apps/db/history");
    assert!(
        history.as_array().is_some_and(|h| h.len() >= 2),
        "{history}"
    );
    let audit = agent.json("/apps/db/audit");
    assert!(audit.as_array().is_some_and(|a| a.len() >= 2), "{audit}");
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn a_bad_file_names_its_line_and_key_and_the_agent_does_not_start() {
    let s = Setup::new();
    let config = s.config(
        "[defaults]\ninterval = \"30s\"\n\n[[app]]\nname = \"db\"\nrepo = \"/srv/ops.git\"\n\
         targt_dir = \"/srv/db\"\n",
    );
    let agent = s.start(&[]);
    let log = agent.log.clone();
    assert_eq!(agent.wait(), Some(1));
    let log = read(&log);
    let expected = format!(
        "error: {config}:7: app \"db\": unknown key \"targt_dir\" (did you mean \"target_dir\"?)"
    );
    assert!(log.contains(&expected), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{log}"
    );
}

#[test]
fn overlapping_target_directories_are_refused_at_start() {
    let ops = Served::start(&[("a.conf", "a\n")]);
    let s = Setup::new();
    let nested = s.target("a").join("b");
    s.config(&format!(
        "{}{}",
        app("a", &ops.url(), "", &s.target("a"), ""),
        app("b", &ops.url(), "", &nested, ""),
    ));
    let agent = s.start(&[]);
    let log = agent.log.clone();
    assert_eq!(agent.wait(), Some(1));
    let log = read(&log);
    assert!(log.contains("app \"b\": target_dir: "), "{log}");
    assert!(
        log.contains("overlaps") && log.contains("of app \"a\""),
        "{log}"
    );

    // Through a symbolic link too.
    std::fs::create_dir_all(s.target("real")).expect("mkdir");
    std::os::unix::fs::symlink(s.target("real"), s.target("link")).expect("symlink");
    s.config(&format!(
        "{}{}",
        app("a", &ops.url(), "", &s.target("real"), ""),
        app("b", &ops.url(), "", &s.target("link").join("x"), ""),
    ));
    let agent = s.start(&[]);
    let log = agent.log.clone();
    assert_eq!(agent.wait(), Some(1));
    let log = read(&log);
    assert!(log.contains("through a symbolic link"), "{log}");
    assert!(!s.target("real").join("a.conf").exists(), "nothing ran");
}

#[test]
fn sighup_starts_added_stops_removed_and_restarts_changed_apps() {
    let ops = Served::start(&[
        ("apps/a/a.conf", "a = 1\n"),
        ("apps/a2/a.conf", "a = 2\n"),
        ("apps/b/b.conf", "b = 1\n"),
        ("apps/c/c.conf", "c = 1\n"),
    ]);
    let s = Setup::new();
    let url = ops.url();
    s.config(&format!(
        "{FAST}{}{}",
        app("a", &url, "apps/a", &s.target("a"), ""),
        app("b", &url, "apps/b", &s.target("b"), ""),
    ));
    let agent = s.start(&[]);
    let (a, b, c) = (
        s.target("a").join("a.conf"),
        s.target("b").join("b.conf"),
        s.target("c").join("c.conf"),
    );
    agent.wait_for("a and b deployed", || {
        read(&a) == "a = 1\n" && read(&b) == "b = 1\n"
    });

    // a changes its path, b goes, c comes.
    s.config(&format!(
        "{FAST}{}{}",
        app("a", &url, "apps/a2", &s.target("a"), ""),
        app("c", &url, "apps/c", &s.target("c"), ""),
    ));
    agent.signal("HUP");
    agent.wait_for("the reload", || {
        read(&a) == "a = 2\n" && read(&c) == "c = 1\n" && agent.apps() == ["a", "c"]
    });
    assert_eq!(read(&b), "b = 1\n", "a removed application's files stay");

    // An invalid file is refused whole; the running set stays.
    let config = s.config(&format!(
        "{FAST}{}{}",
        app("a", &url, "apps/a2", &s.target("a"), ""),
        app("c", &url, "apps/c", &s.target("c"), "interval = \"5d\""),
    ));
    agent.signal("HUP");
    let expected = format!("{config}:16: app \"c\": interval: ");
    agent.wait_for("the refusal logged", || agent.log().contains(&expected));
    let status = agent.json("/status");
    let error = status["config"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(":16: app \"c\": interval: "), "{status}");
    assert_eq!(agent.apps(), ["a", "c"]);
    ops.repo.commit(&[("apps/c/c.conf", "c = 2\n")], "c two");
    agent.wait_for("c still following its branch", || read(&c) == "c = 2\n");
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn prune_removed_deletes_only_what_the_removed_app_deployed() {
    let ops = Served::start(&[("apps/a/a.conf", "a\n"), ("apps/b/b.conf", "b\n")]);
    let s = Setup::new();
    let url = ops.url();
    let both = format!(
        "{FAST}{}{}",
        app("a", &url, "apps/a", &s.target("a"), ""),
        app("b", &url, "apps/b", &s.target("b"), ""),
    );
    s.config(&both);
    let agent = s.start(&["--prune-removed"]);
    let (a, b) = (s.target("a").join("a.conf"), s.target("b").join("b.conf"));
    agent.wait_for("a and b deployed", || {
        read(&a) == "a\n" && read(&b) == "b\n"
    });
    let mine = s.target("b").join("mine.txt");
    std::fs::write(&mine, "not from Git\n").expect("write");
    s.config(&format!(
        "{FAST}{}",
        app("a", &url, "apps/a", &s.target("a"), "")
    ));
    agent.signal("HUP");
    agent.wait_for("b pruned", || !b.exists());
    assert_eq!(read(&a), "a\n");
    assert_eq!(read(&mine), "not from Git\n", "only what b applied goes");
    agent.wait_for("b gone from /status", || agent.apps() == ["a"]);
    assert!(agent.log().contains("removed application pruned"));
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn an_app_waits_for_the_app_it_depends_on() {
    let ops = Served::start(&[
        ("apps/db/db.conf", "db = 1\n"),
        ("apps/web/web.conf", "web = 1\n"),
    ]);
    let s = Setup::new();
    // db cannot deploy: a directory holds its file's path.
    std::fs::create_dir_all(s.target("db").join("db.conf").join("keep")).expect("mkdir");
    let url = ops.url();
    s.config(&format!(
        "{FAST}{}{}",
        app(
            "web",
            &url,
            "apps/web",
            &s.target("web"),
            "depends_on = [\"db\"]"
        ),
        app("db", &url, "apps/db", &s.target("db"), ""),
    ));
    let agent = s.start(&[]);
    let reason = |app: &str| {
        let status = agent.json(&format!("/apps/{app}/status"));
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    agent.wait_for("db stalled", || agent.log().contains("stalled"));
    agent.wait_for("web waiting for db", || {
        reason("web") == "DependencyNotReady"
    });
    let web = s.target("web").join("web.conf");
    assert!(!web.exists(), "web must wait for db");
    let status = agent.json("/apps/web/status");
    assert!(
        status.to_string().contains("waiting for app `db`"),
        "{status}"
    );

    // db's path is freed and a new commit deploys it; web follows.
    std::fs::remove_dir_all(s.target("db").join("db.conf")).expect("rm");
    ops.repo
        .commit(&[("apps/db/db.conf", "db = 2\n")], "db two");
    let db = s.target("db").join("db.conf");
    agent.wait_for("db, then web", || {
        read(&db) == "db = 2\n" && read(&web) == "web = 1\n"
    });
    let recorded =
        |app: &str| agent.json(&format!("/apps/{app}/history"))[0]["finished_at"].is_string();
    agent.wait_for("both syncs recorded", || recorded("db") && recorded("web"));
    let finished = |app: &str| -> jiff::Timestamp {
        let history = agent.json(&format!("/apps/{app}/history"));
        let at = history[0]["finished_at"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        at.parse().unwrap_or_else(|e| panic!("{e}: {history}"))
    };
    assert!(finished("db") <= finished("web"), "db deployed before web");
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn a_push_webhook_triggers_the_apps_of_its_repository() {
    let ops = Served::start(&[("db.conf", "db = 1\n")]);
    let flags = Served::start(&[("flags.conf", "on = 1\n")]);
    let s = Setup::new();
    let secret_file = s.path().join("secret");
    std::fs::write(&secret_file, "s3cret\n").expect("write");
    s.config(&format!(
        "[defaults]\ninterval = \"1h\"\n\n{}{}",
        app("db", &ops.url(), "", &s.target("db"), ""),
        app("flags", &flags.url(), "", &s.target("flags"), ""),
    ));
    let agent = s.start(&[
        "--webhook-secret-file",
        secret_file.to_str().expect("utf-8"),
    ]);
    let on = s.target("flags").join("flags.conf");
    agent.wait_for("the first deploy", || read(&on) == "on = 1\n");
    flags.repo.commit(&[("flags.conf", "on = 2\n")], "two");
    let body = format!(
        r#"{{"ref":"refs/heads/main","repository":{{"clone_url":"{}"}}}}"#,
        flags.url()
    );
    let secret = WebhookSecret::new(b"s3cret".to_vec());
    let headers = [
        (
            "x-hub-signature-256",
            gitops_agent::signing::sign_github(&secret, body.as_bytes()),
        ),
        ("x-github-event", "push".to_owned()),
        ("x-github-delivery", "d-1".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    let (status, answer) = agent.post("/hooks/github", &headers, &body);
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["apps"], serde_json::json!(["flags"]));
    agent.wait_for("the pushed commit deployed", || read(&on) == "on = 2\n");
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn every_app_uses_the_agent_wide_age_identity_and_never_logs_the_secret() {
    use std::os::unix::fs::PermissionsExt as _;

    let setup = Setup::new();
    let key = support::age::x25519(setup.path(), "ops");
    let armored = String::from_utf8(support::age::encrypt(&[&key], true, b"hunter2-agent\n"))
        .expect("armored age is text");
    let served = Served::start(&[
        ("db/password.age", armored.as_str()),
        ("web/site.conf", "x\n"),
    ]);
    let url = served.url();
    setup.config(&format!(
        "{FAST}{}{}",
        app("db", &url, "db", &setup.target("db"), ""),
        app("web", &url, "web", &setup.target("web"), "")
    ));
    let identity = key.identity.display().to_string();
    let agent = setup.start(&["--age-identity", &identity, "--log-format", "json"]);
    let secret = setup.target("db").join("password");
    agent.wait_for("the secret decrypted and deployed", || {
        read(&secret) == "hunter2-agent\n"
    });
    agent.wait_for("the other app deployed", || {
        read(&setup.target("web").join("site.conf")) == "x\n"
    });
    let mode = std::fs::metadata(&secret)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!setup.target("db").join("password.age").exists());
    for path in [
        "/status",
        "/history/db",
        "/apps/db/status",
        "/apps/db/audit",
        "/metrics",
    ] {
        let (code, body) = agent.get(path);
        assert_eq!(code, 200, "{path}: {body}");
        assert!(!body.contains("hunter2"), "{path} shows the secret: {body}");
    }
    assert!(!agent.log().contains("hunter2"), "the log shows the secret");
    agent.stop();
    let state = setup.path().join("state");
    assert!(
        state.join("digest.key").is_file(),
        "one keyed-digest key for every app"
    );
}

/// The revision id `GET /status` shows deployed for each application.
fn deployed(agent: &Agent) -> std::collections::BTreeMap<String, String> {
    agent.json("/status")["apps"]
        .as_array()
        .map(|apps| {
            apps.iter()
                .map(|a| {
                    let name = a["app"].as_str().unwrap_or_default().to_owned();
                    let id = a["last_applied"]["id"].as_str().unwrap_or_default();
                    (name, id.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 18's "Done when": one agent process, six applications over three
/// repositories served over smart HTTP (one depending on another, files
/// and manifests renders), all deployed and listed in `/status`; a commit
/// to one repository changes the revision of its application only.
#[test]
fn six_apps_deploy_and_only_the_committed_one_changes_revision() {
    let web_manifest =
        "kind: File\nmetadata:\n  name: web.conf\nspec:\n  content: \"web = 1\\n\"\n";
    let ops = Served::start(&[
        ("apps/db/db.conf", "db = 1\n"),
        ("apps/web/web.yaml", web_manifest),
        ("apps/cache/cache.conf", "cache = 1\n"),
        ("apps/api/api.conf", "api = 1\n"),
    ]);
    let flags = Served::start(&[("flags/flags.conf", "on = 1\n")]);
    let site = Served::start(&[("index.html", "<h1>1</h1>\n")]);
    let s = Setup::new();
    s.config(&format!(
        "{FAST}{}{}{}{}{}{}",
        app("db", &ops.url(), "apps/db", &s.target("db"), ""),
        app(
            "web",
            &ops.url(),
            "apps/web",
            &s.target("web"),
            "render = \"manifests\"\ndepends_on = [\"db\"]"
        ),
        app("cache", &ops.url(), "apps/cache", &s.target("cache"), ""),
        app("api", &ops.url(), "apps/api", &s.target("api"), ""),
        app("flags", &flags.url(), "flags", &s.target("flags"), ""),
        app("site", &site.url(), "", &s.target("site"), ""),
    ));
    let agent = s.start(&[]);
    let files = [
        ("db", "db.conf", "db = 1\n"),
        ("web", "web.conf", "web = 1\n"),
        ("cache", "cache.conf", "cache = 1\n"),
        ("api", "api.conf", "api = 1\n"),
        ("flags", "flags.conf", "on = 1\n"),
        ("site", "index.html", "<h1>1</h1>\n"),
    ];
    agent.wait_for("all six deployed", || {
        files
            .iter()
            .all(|(app, file, content)| read(&s.target(app).join(file)) == *content)
    });
    agent.wait_for("ready", || agent.get("/readyz").0 == 200);
    assert_eq!(agent.apps(), ["api", "cache", "db", "flags", "site", "web"]);
    agent.wait_for("six revisions deployed", || {
        deployed(&agent)
            .values()
            .filter(|id| !id.is_empty())
            .count()
            == 6
    });
    let before = deployed(&agent);
    assert_eq!(before["web"], ops.repo.head());
    assert_eq!(before["site"], site.repo.head());

    flags
        .repo
        .commit(&[("flags/flags.conf", "on = 2\n")], "flags two");
    let flags_head = flags.repo.head();
    agent.wait_for("the flags commit deployed", || {
        read(&s.target("flags").join("flags.conf")) == "on = 2\n"
            && deployed(&agent)["flags"] == flags_head
    });
    let after = deployed(&agent);
    for (name, id) in &before {
        if name != "flags" {
            assert_eq!(&after[name], id, "{name} changed revision");
        }
    }
    assert_ne!(after["flags"], before["flags"]);
    // Its audit trail, newest first: the update of this commit.
    let newest = agent.json("/apps/flags/audit?limit=1");
    assert_eq!(newest[0]["action"], "update", "{newest}");
    assert_eq!(newest[0]["revision"], flags_head, "{newest}");
    assert_eq!(agent.stop(), Some(0));
}

/// `--once` and `--plan` with `--config` (issue 18): every application
/// once, dependencies first; a dependency that does not converge skips
/// its dependents; a summary per application; the exit codes of the
/// single-application agent; `--plan --json` is keyed by application.
#[test]
fn once_and_plan_run_every_app_in_dependency_order() {
    let ops = Served::start(&[
        ("apps/db/db.conf", "db = 1\n"),
        ("apps/web/web.conf", "web = 1\n"),
    ]);
    let flags = Served::start(&[("flags.conf", "on = 1\n")]);
    let s = Setup::new();
    let config = s.config(&format!(
        "{}{}{}",
        app(
            "web",
            &ops.url(),
            "apps/web",
            &s.target("web"),
            "depends_on = [\"db\"]"
        ),
        app("db", &ops.url(), "apps/db", &s.target("db"), ""),
        app("flags", &flags.url(), "", &s.target("flags"), ""),
    ));
    let config = Path::new(&config);
    let state = s.path().join("state");

    let (code, stdout, stderr) = one_shot(config, &state, &["--plan"]);
    assert_eq!(code, Some(2), "changes pending: {stdout}\n{stderr}");
    let headers: Vec<&str> = stdout.lines().filter(|l| l.starts_with("== ")).collect();
    assert_eq!(
        headers,
        ["== db ==", "== web ==", "== flags =="],
        "dependencies first: {stdout}"
    );
    assert!(
        stdout.contains("web.conf") && stdout.contains("flags.conf"),
        "{stdout}"
    );
    let (code, stdout, _) = one_shot(config, &state, &["--plan", "--json"]);
    assert_eq!(code, Some(2));
    let plans: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let mut names: Vec<&String> = plans.as_object().expect("an object").keys().collect();
    names.sort();
    assert_eq!(names, ["db", "flags", "web"]);

    // db cannot deploy (a directory holds its file's path): web is skipped,
    // flags still syncs, and the run fails.
    std::fs::create_dir_all(s.target("db").join("db.conf").join("keep")).expect("mkdir");
    let (code, stdout, stderr) = one_shot(config, &state, &["--once"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("db: not converged") || stderr.contains("db: failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("web: skipped: it depends on \"db\", which did not converge"),
        "{stderr}"
    );
    assert!(stderr.contains("flags: converged"), "{stderr}");
    assert_eq!(read(&s.target("flags").join("flags.conf")), "on = 1\n");
    assert!(
        !s.target("web").join("web.conf").exists(),
        "web waits for db"
    );

    std::fs::remove_dir_all(s.target("db").join("db.conf")).expect("rm");
    let (code, stdout, stderr) = one_shot(config, &state, &["--once", "--json"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let reports: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    for name in ["db", "web", "flags"] {
        assert_eq!(reports[name]["result"], "converged", "{name}: {reports}");
    }
    assert_eq!(read(&s.target("web").join("web.conf")), "web = 1\n");
    let (code, stdout, _) = one_shot(config, &state, &["--plan"]);
    assert_eq!(code, Some(0), "nothing left to change: {stdout}");
}
