//! The status page (issue 18) in a real headless Chromium driven through
//! WebDriver: the real agent binary with `--config` of three applications
//! over a real Git repository served over smart HTTP, one of which does
//! not render. The page loads on a phone-sized window, lists the
//! applications, shows the failing one's reason, shows a new commit (with
//! a subject that is hostile HTML, shown as text) after a reload, and the
//! application's page shows the plan of its last sync.

mod support;

use std::time::{Duration, Instant};

use support::apps::{Agent, PATIENCE, Served, app, read};
use support::webdriver::Browser;

const FAST: &str = "[defaults]\ninterval = \"1s\"\ndrift_interval = \"1h\"\n\n";

/// Reloads until the text of `css` satisfies `done`, or fails showing it.
fn reload_until(browser: &Browser, css: &str, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = browser.text(css).unwrap_or_default();
        if done(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; `{css}` reads:\n{text}\npage:\n{}",
            browser.source()
        );
        std::thread::sleep(Duration::from_millis(200));
        browser.refresh();
    }
}

#[test]
fn the_status_page_lists_the_apps_shows_a_failure_and_follows_a_commit() {
    let ops = Served::start(&[
        ("apps/db/db.conf", "db = 1\n"),
        ("apps/web/web.conf", "web = 1\n"),
        ("apps/broken/bad.yaml", "kind: [unclosed\n"),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let target = |name: &str| dir.path().join("srv").join(name);
    let config = dir.path().join("apps.toml");
    let text = format!(
        "{FAST}{}{}{}",
        app("db", &ops.url(), "apps/db", &target("db"), ""),
        app("web", &ops.url(), "apps/web", &target("web"), ""),
        app(
            "broken",
            &ops.url(),
            "apps/broken",
            &target("broken"),
            "render = \"manifests\""
        ),
    );
    std::fs::write(&config, text).expect("write the config");
    let config = config.display().to_string();
    let agent = Agent::start(dir.path(), &["--config", &config]);
    let web = target("web").join("web.conf");
    agent.wait_for("db and web deployed", || {
        read(&target("db").join("db.conf")) == "db = 1\n" && read(&web) == "web = 1\n"
    });
    agent.wait_for("ready", || agent.get("/readyz").0 == 200);

    let browser = Browser::start(390, 844);
    browser.goto(&format!("http://127.0.0.1:{}/", agent.port));
    assert!(
        browser.title().contains("applications"),
        "{}",
        browser.title()
    );
    reload_until(&browser, "#apps", "all three listed", |t| {
        t.contains("db") && t.contains("web") && t.contains("broken")
    });
    reload_until(&browser, "#app-broken", "the failure and its reason", |t| {
        t.contains("Stalled") && t.contains("bad.yaml")
    });
    let row = browser.width("#app-web").expect("a row for web");
    let viewport = browser.viewport_width().expect("a viewport");
    assert!(
        viewport <= 400.0 && row <= viewport,
        "row {row} px in {viewport} px"
    );

    let subject = "web: <b>second</b> release";
    ops.repo
        .commit(&[("apps/web/web.conf", "web = 2\n")], subject);
    let head = ops.repo.head();
    let short = head.get(..12).expect("a full commit id");
    reload_until(&browser, "#app-web", "the new commit, as text", |t| {
        t.contains(subject) && t.contains(short) && t.contains("Ready")
    });
    assert_eq!(read(&web), "web = 2\n");

    browser.goto(&format!("http://127.0.0.1:{}/apps/web", agent.port));
    reload_until(&browser, "#plan", "the plan of the last sync", |t| {
        t.contains(short)
    });
    let steps = browser.text("#steps").expect("the steps of the last sync");
    assert!(
        steps.contains("web.conf") && steps.contains("updated"),
        "{steps}"
    );
    let history = browser.text("#history").expect("a history table");
    assert!(history.contains(subject), "{history}");
    browser.goto(&format!("http://127.0.0.1:{}/apps/broken", agent.port));
    let state = browser.text("#state").expect("a state line");
    assert!(
        state.contains("Stalled") && state.contains("bad.yaml"),
        "{state}"
    );
}

/// The single-application agent (`--repo`, `--target-dir`) through its real
/// HTTP service: its page shows the plan of its first sync (the agent
/// follows its syncs as for many applications), and `GET /audit` lists the
/// newest records first, at most `limit`, with more records than that.
#[test]
fn the_single_application_page_shows_its_first_sync_and_audit_is_newest_first() {
    let ops = Served::start(&[
        ("a.conf", "a = 1\n"),
        ("b.conf", "b = 1\n"),
        ("c.conf", "c = 1\n"),
        ("d.conf", "d = 1\n"),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("srv");
    let url = ops.url();
    let target_arg = target.display().to_string();
    let agent = Agent::start(
        dir.path(),
        &[
            "--repo",
            &url,
            "--target-dir",
            &target_arg,
            "--interval",
            "1s",
            "--drift-interval",
            "1h",
        ],
    );
    agent.wait_for("the first sync", || {
        read(&target.join("d.conf")) == "d = 1\n"
    });
    let head = ops.repo.head();
    let short = head.get(..12).expect("a full commit id");
    agent.wait_for("the page shows the first sync", || {
        let page = agent.get("/apps/agent").1;
        page.contains(&format!("Revision <code>{short}</code>"))
    });
    let page = agent.get("/apps/agent").1;
    let steps = page
        .split("<ul id=\"steps\">")
        .nth(1)
        .and_then(|s| s.split("</ul>").next())
        .unwrap_or_default();
    for file in ["a.conf", "d.conf"] {
        assert!(
            steps.contains(&format!("{file}</code>: created")),
            "{file}: {page}"
        );
    }

    ops.repo.commit(&[("b.conf", "b = 2\n")], "b two");
    agent.wait_for("b updated", || read(&target.join("b.conf")) == "b = 2\n");
    let audit = |path: &str| -> Vec<(String, String)> {
        agent
            .json(path)
            .as_array()
            .map_or_else(Vec::new, |records| {
                records
                    .iter()
                    .map(|r| {
                        let id = r["id"].as_str().unwrap_or_default();
                        let action = r["action"].as_str().unwrap_or_default();
                        (id.to_owned(), action.to_owned())
                    })
                    .collect()
            })
    };
    agent.wait_for("the update audited", || audit("/audit").len() == 5);
    let newest = audit("/audit?limit=2");
    assert_eq!(newest.len(), 2, "{newest:?}");
    assert!(
        newest[0].0.ends_with("b.conf") && newest[0].1 == "update",
        "the newest record first: {newest:?}"
    );
    assert_eq!(
        newest[1].1, "create",
        "then the creates, newest first: {newest:?}"
    );
    assert_eq!(audit("/apps/agent/audit?limit=1"), newest[..1]);
    assert_eq!(agent.stop(), Some(0));
}
