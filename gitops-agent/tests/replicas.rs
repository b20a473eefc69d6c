//! Replicas (`--etcd`, feature `etcd`): several real `gitops-agent`
//! processes share the applications of one config on a real etcd, against
//! a real Git repository served over smart HTTP. What etcd recorded is the
//! judge: every write of an application's keys happened while the writer
//! held its lock, and each commit reached each key exactly once.

#![cfg(feature = "etcd")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::apps::{Agent, PATIENCE, Served};
use support::replicas::{self, Change, get_prefix, history, holder_at};

/// Applications a1..a6; a2 depends on a1.
const APPS: [&str; 6] = ["a1", "a2", "a3", "a4", "a5", "a6"];

/// One application's manifest at commit `rev`: one key, `v`.
fn manifest(rev: &str) -> String {
    format!("kind: Key\nmetadata: {{ name: v }}\nspec: {{ format: text, value: \"{rev}\" }}\n")
}

/// The repository's files at commit `rev` for `apps`.
fn files(apps: &[&str], rev: &str) -> Vec<(String, String)> {
    apps.iter()
        .map(|a| (format!("apps/{a}/k.yaml"), manifest(rev)))
        .collect()
}

/// A cluster under test: the repository, the key prefix, the config.
struct Cluster {
    dir: tempfile::TempDir,
    served: Served,
    prefix: String,
    apps: Vec<String>,
    ttl: &'static str,
}

impl Cluster {
    fn new(name: &str, ttl: &'static str) -> Self {
        let initial = files(&APPS, "1");
        let refs: Vec<(&str, &str)> = initial
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        let cluster = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            served: Served::start(&refs),
            prefix: replicas::prefix(name),
            apps: APPS.iter().map(|a| (*a).to_owned()).collect(),
            ttl,
        };
        cluster.write_config();
        cluster
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("apps.toml")
    }

    fn write_config(&self) {
        let mut text = String::from(
            "[defaults]\ninterval = \"1s\"\ndrift_interval = \"1h\"\nrender = \"manifests\"\n\n",
        );
        for app in &self.apps {
            let depends = if app == "a2" {
                "depends_on = [\"a1\"]\n"
            } else {
                ""
            };
            text.push_str(&format!(
                "[[app]]\nname = {app:?}\nrepo = {:?}\npath = \"apps/{app}\"\n{depends}\
                 [app.target]\nkind = \"etcd\"\nprefix = \"{}/config/{app}\"\n\n",
                self.served.url(),
                self.prefix
            ));
        }
        std::fs::write(self.config_path(), text).expect("write the config");
    }

    /// Starts replica `id` in its own directory.
    fn start(&self, id: &str) -> Agent {
        let dir = self.dir.path().join(id);
        std::fs::create_dir_all(&dir).expect("replica dir");
        let config = self.config_path().display().to_string();
        let cluster = format!("{}/cluster", self.prefix);
        Agent::start(
            &dir,
            &[
                "--config",
                &config,
                "--etcd",
                &replicas::endpoints(),
                "--replica-id",
                id,
                "--etcd-prefix",
                &cluster,
                "--etcd-lease-ttl",
                self.ttl,
            ],
        )
    }

    fn commit(&self, rev: &str) {
        let files = files(
            &APPS
                .iter()
                .chain(["a7"].iter())
                .copied()
                .collect::<Vec<_>>(),
            rev,
        );
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        self.served.repo.commit(&refs, &format!("rev {rev}"));
    }

    fn key(&self, app: &str) -> String {
        format!("{}/config/{app}/v", self.prefix)
    }

    fn lock(&self, app: &str) -> String {
        format!("{}/cluster/locks/{app}", self.prefix)
    }

    /// The applications whose key holds `rev`.
    fn at(&self, rev: &str) -> BTreeSet<String> {
        let keys = get_prefix(&format!("{}/config/", self.prefix));
        self.apps
            .iter()
            .filter(|a| keys.get(&self.key(a)).map(String::as_str) == Some(rev))
            .cloned()
            .collect()
    }

    /// Waits until every application's key holds `rev`; how long it took.
    fn wait_all(&self, rev: &str, agents: &[&Agent]) -> Duration {
        let start = Instant::now();
        let all: BTreeSet<String> = self.apps.iter().cloned().collect();
        while self.at(rev) != all {
            assert!(
                start.elapsed() < PATIENCE * 2,
                "not every application reached {rev}: {:?}; logs:\n{}",
                self.at(rev),
                agents
                    .iter()
                    .map(|a| a.log())
                    .collect::<Vec<_>>()
                    .join("\n-----\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    /// The lock holder of each application now.
    fn owners(&self) -> BTreeMap<String, String> {
        let locks = get_prefix(&format!("{}/cluster/locks/", self.prefix));
        self.apps
            .iter()
            .filter_map(|a| locks.get(&self.lock(a)).map(|o| (a.clone(), o.clone())))
            .collect()
    }

    /// Checks etcd's history: every write of an application's key was made
    /// while a replica held its lock, and each value was written once.
    /// Returns who wrote each (application, value).
    fn check_history(&self) -> BTreeMap<(String, String), String> {
        let history: Vec<Change> = history(&self.prefix);
        let mut writers = BTreeMap::new();
        for app in &self.apps {
            let key = self.key(app);
            for change in history.iter().filter(|c| c.key == key) {
                let value = change.value.clone().expect("keys are never deleted here");
                let holder =
                    holder_at(&history, &self.lock(app), change.revision).unwrap_or_else(|| {
                        panic!(
                            "{key}={value} at {} written without the lock",
                            change.revision
                        )
                    });
                let before = writers.insert((app.clone(), value.clone()), holder);
                assert!(before.is_none(), "{key}={value} written twice: {history:?}");
            }
        }
        writers
    }
}

#[test]
fn replicas_share_the_applications_and_none_is_applied_by_two_at_once() {
    let c = Cluster::new("share", "2s");
    let r1 = c.start("r1");
    let r2 = c.start("r2");
    c.wait_all("1", &[&r1, &r2]);
    // A third replica joins: the assignment moves some applications to it.
    let r3 = c.start("r3");
    r3.wait_for("r3 owns an application", || {
        c.owners().values().any(|o| o == "r3")
    });
    c.commit("2");
    c.wait_all("2", &[&r1, &r2, &r3]);

    // SIGHUP with a7 added and a3 removed: a7 is claimed by one replica,
    // a3 is handed over by its owner and nobody claims it again.
    let mut c = c;
    c.apps.retain(|a| a != "a3");
    c.apps.push("a7".into());
    c.write_config();
    for agent in [&r1, &r2, &r3] {
        agent.signal("HUP");
    }
    c.wait_all("2", &[&r1, &r2, &r3]);
    let a3 = c.lock("a3");
    r1.wait_for("a3 released", || {
        !get_prefix(&format!("{}/cluster/locks/", c.prefix)).contains_key(&a3)
    });

    // Every row of every replica's status names the lock holder.
    let owners = c.owners();
    assert_eq!(owners.len(), c.apps.len(), "{owners:?}");
    for (agent, id) in [(&r1, "r1"), (&r2, "r2"), (&r3, "r3")] {
        agent.wait_for("every application listed with its owner", || {
            let status = agent.json("/status");
            let rows = status["apps"].as_array().cloned().unwrap_or_default();
            status["replica"] == id
                && rows.len() == c.apps.len()
                && rows.iter().all(|row| {
                    let app = row["app"].as_str().unwrap_or_default();
                    let owner = &owners[app];
                    let state = if owner == id { "this" } else { "other" };
                    row["owner"]["state"] == state && row["owner"]["replica"] == owner.as_str()
                })
        });
        let page = agent.get("/").1;
        assert!(page.contains("<th>Replica</th>"), "{page}");
    }

    let writers = c.check_history();
    for app in &c.apps {
        assert!(
            writers.contains_key(&(app.clone(), "2".to_owned())),
            "{app} never got 2"
        );
    }
    let history = history(&c.prefix);
    let first = |app: &str| {
        history
            .iter()
            .find(|ch| ch.key == c.key(app))
            .map(|ch| ch.revision)
            .unwrap_or_default()
    };
    assert!(
        first("a1") < first("a2"),
        "a2 (depends on a1) was applied before a1"
    );
    let used: BTreeSet<&String> = writers.values().collect();
    assert!(used.len() >= 2, "one replica did everything: {writers:?}");
    for agent in [r1, r2, r3] {
        assert_eq!(agent.stop(), Some(0));
    }
}

#[test]
fn a_killed_replica_s_applications_follow_the_next_commit_on_the_survivors() {
    let c = Cluster::new("kill", "2s");
    let mut agents: Vec<(String, Agent)> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| ((*id).to_owned(), c.start(id)))
        .collect();
    let refs: Vec<&Agent> = agents.iter().map(|(_, a)| a).collect();
    c.wait_all("1", &refs);
    let mut measured = Vec::new();
    for (round, rev) in ["2", "3", "4"].iter().enumerate() {
        let owners = c.owners();
        let (victim, _) = agents
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (i, owners.values().filter(|o| *o == id).count()))
            .max_by_key(|(_, n)| *n)
            .expect("replicas");
        let (id, agent) = agents.remove(victim);
        let theirs: Vec<String> = owners
            .iter()
            .filter(|(_, o)| **o == id)
            .map(|(a, _)| a.clone())
            .collect();
        let killed = Instant::now();
        agent.signal("KILL");
        drop(agent);
        c.commit(rev);
        let refs: Vec<&Agent> = agents.iter().map(|(_, a)| a).collect();
        refs[0].wait_for("the survivors hold every lock", || {
            let owners = c.owners();
            owners.len() == c.apps.len() && owners.values().all(|o| *o != id)
        });
        let claimed = killed.elapsed();
        c.wait_all(rev, &refs);
        let took = killed.elapsed();
        eprintln!(
            "takeover round {round}: {id} killed owning {theirs:?}; locks claimed after {} ms, \
             all at {rev} after {} ms (lease TTL 2 s, poll 1 s)",
            claimed.as_millis(),
            took.as_millis()
        );
        measured.push(took);
        let replacement = format!("r{}", 4 + round);
        let agent = c.start(&replacement);
        agents.push((replacement, agent));
    }
    c.check_history();
    eprintln!(
        "takeover times (ms): {:?}",
        measured.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
}

#[test]
fn sigterm_hands_the_applications_over_before_a_lease_passes() {
    // A long lease: a takeover by expiry would take 20 s.
    let c = Cluster::new("term", "20s");
    let r1 = c.start("r1");
    let r2 = c.start("r2");
    c.wait_all("1", &[&r1, &r2]);
    r2.wait_for("r1 owns an application", || {
        c.owners().values().any(|o| o == "r1")
    });
    let stopped = Instant::now();
    assert_eq!(r1.stop(), Some(0));
    r2.wait_for("r2 owns everything", || {
        let owners = c.owners();
        owners.len() == c.apps.len() && owners.values().all(|o| o == "r2")
    });
    let took = stopped.elapsed();
    eprintln!(
        "handover on SIGTERM: {} ms (lease TTL 20 s)",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(20),
        "handed over only after {took:?}"
    );
    c.commit("2");
    c.wait_all("2", &[&r2]);
    c.check_history();
}

/// Runs the agent to its exit; its exit code and log.
fn refused(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let agent = Agent::start(dir, args);
    let log = agent.log.clone();
    let code = agent.wait();
    (code, support::apps::read(&log))
}

#[test]
fn etcd_targets_and_flags_are_checked_with_the_line_and_key() {
    let c = Cluster::new("checks", "2s");
    let config = c.config_path().display().to_string();
    // kind = "etcd" without --etcd: the app's target line and key.
    let (code, log) = refused(c.dir.path(), &["--config", &config]);
    assert_eq!(code, Some(1));
    assert!(
        log.contains("apps.toml:10: app \"a1\": target: kind \"etcd\" needs --etcd"),
        "{log}"
    );
    // --etcd without a list.
    let (code, log) = refused(
        c.dir.path(),
        &[
            "--repo",
            "/nonexistent",
            "--target-dir",
            "/tmp/x",
            "--etcd",
            &replicas::endpoints(),
            "--replica-id",
            "r1",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        log.contains("--etcd needs --config or --config-repo"),
        "{log}"
    );
    // A target prefix inside the replicas' own keys.
    let inside = std::fs::read_to_string(c.config_path())
        .expect("config")
        .replace(
            &format!("{}/config/a3", c.prefix),
            &format!("{}/cluster/x", c.prefix),
        );
    std::fs::write(c.config_path(), inside).expect("config");
    let agent = c.start("r1");
    let code = agent.wait();
    let log = support::apps::read(&c.dir.path().join("r1").join("agent.log"));
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("app \"a3\": target: prefix"), "{log}");
    assert!(log.contains("overlaps the replicas' own keys"), "{log}");
}
