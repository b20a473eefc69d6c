//! The soak harness: the real `gitops-agent` binary on a real Git repository
//! of a few thousand files, for many iterations of random commits (changes,
//! deletes, new files, broken commits), hand edits and deletes in the target,
//! `kill -9` at random moments and restarts. After each restart and
//! convergence it checks the invariants:
//!
//! - the target equals the last good revision;
//! - nothing the engine did not create was touched;
//! - the audit log explains the target: for every managed file the newest
//!   audit record is a create or update whose digest is the inventory's, and
//!   every file the engine deleted has a delete as its newest record;
//! - history is in order (newest first);
//! - the state store opens.
//!
//! `GITOPS_SOAK_ITERATIONS` (default 20, as CI runs it; the long mode is
//! 100 or more), `GITOPS_SOAK_FILES` (default 2,000) and
//! `GITOPS_SOAK_SEED` (default: from the clock, printed) set the run.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gitops_core::store::{AuditAction, AuditQuery, StateStore};
use gitops_core::{RedbStore, ResourceId};
use support::git_server::run;

/// The application name the reference agent uses.
const APP: &str = "agent";
/// How long one convergence may take before the harness gives up.
const PATIENCE: Duration = Duration::from_secs(120);
/// Files that are not the engine's and must survive every iteration.
const UNMANAGED: &[(&str, &str)] = &[
    ("unmanaged/keep.txt", "not the agent's\n"),
    ("unmanaged/deep/also.txt", "nor this\n"),
];

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The repository the agent deploys, driven with the `git` CLI.
struct Repo {
    dir: PathBuf,
    /// The files of the last good commit (what the target must hold).
    good: BTreeMap<String, String>,
    /// Every path the engine ever deployed.
    ever: BTreeSet<String>,
    commits: u64,
}

impl Repo {
    fn create(dir: &Path, files: u64) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        run(dir, "git", &["init", "-q", "-b", "main"]);
        let mut repo = Self {
            dir: dir.to_owned(),
            good: BTreeMap::new(),
            ever: BTreeSet::new(),
            commits: 0,
        };
        let initial: BTreeMap<String, String> = (0..files)
            .map(|i| (format!("d{:02}/f{i:05}.conf", i % 50), format!("v0 {i}\n")))
            .collect();
        repo.commit_files(&initial, &[], "initial");
        repo
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Writes `files`, removes `removed`, commits; the new good state.
    fn commit_files(&mut self, files: &BTreeMap<String, String>, removed: &[String], what: &str) {
        for (path, content) in files {
            let full = self.dir.join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, content).expect("write");
            self.good.insert(path.clone(), content.clone());
        }
        for path in removed {
            std::fs::remove_file(self.dir.join(path)).expect("remove");
            self.good.remove(path);
        }
        self.commits += 1;
        run(&self.dir, "git", &["add", "-A"]);
        run(&self.dir, "git", &["commit", "-q", "-m", what]);
        self.ever.extend(self.good.keys().cloned());
    }

    /// A commit the source refuses (a symlink), then its revert: the target
    /// must stay at the last good state meanwhile.
    fn broken_commit(&mut self) {
        std::os::unix::fs::symlink("/etc/passwd", self.dir.join("evil-link")).expect("symlink");
        run(&self.dir, "git", &["add", "-A"]);
        run(
            &self.dir,
            "git",
            &["commit", "-q", "-m", "broken: a symlink"],
        );
    }

    fn revert_broken(&mut self) {
        std::fs::remove_file(self.dir.join("evil-link")).expect("remove the link");
        run(&self.dir, "git", &["add", "-A"]);
        run(
            &self.dir,
            "git",
            &["commit", "-q", "-m", "remove the symlink"],
        );
    }

    /// A random commit: changed, deleted and new files.
    fn random_commit(&mut self, rng: &mut fastrand::Rng) {
        let paths: Vec<String> = self.good.keys().cloned().collect();
        let mut files = BTreeMap::new();
        for _ in 0..rng.usize(1..20) {
            let path = &paths[rng.usize(..paths.len())];
            files.insert(path.clone(), format!("v{} {path}\n", self.commits));
        }
        let mut removed = Vec::new();
        for _ in 0..rng.usize(0..5) {
            let path = &paths[rng.usize(..paths.len())];
            if !files.contains_key(path) && !removed.contains(path) {
                removed.push(path.clone());
            }
        }
        for _ in 0..rng.usize(0..5) {
            let path = format!("new/c{}-{}.conf", self.commits, rng.u32(..));
            files.insert(path, "new\n".into());
        }
        let what = format!("change {}", self.commits);
        self.commit_files(&files, &removed, &what);
    }
}

/// The agent's directories and process.
struct World {
    _dir: tempfile::TempDir,
    target: PathBuf,
    state: PathBuf,
    repo: Repo,
    agent: Option<Child>,
    /// The running agent's HTTP port (for `/readyz`).
    port: u16,
}

impl World {
    fn new(files: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repo::create(&dir.path().join("repo"), files);
        let target = dir.path().join("target");
        for (path, content) in UNMANAGED {
            let full = target.join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, content).expect("write");
        }
        Self {
            state: dir.path().join("state"),
            target,
            repo,
            agent: None,
            port: 0,
            _dir: dir,
        }
    }

    fn start(&mut self) {
        self.port = support::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gitops-agent"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .args(["--repo", &self.repo.url()])
            .arg("--target-dir")
            .arg(&self.target)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["--interval", "100ms", "--drift-interval", "200ms"])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(self.log())
            .spawn()
            .expect("start the agent");
        self.agent = Some(child);
    }

    /// The agent's log, appended to by every start.
    fn log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.with_extension("log"))
            .expect("log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.state.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// SIGTERM once the agent is up (before its handlers are installed, a
    /// SIGTERM ends any process), then a clean exit 0.
    fn stop(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.agent.is_some() && !self.ready() {
            assert!(Instant::now() < deadline, "the agent never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut child) = self.agent.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let status = child.wait().expect("wait");
            assert!(status.success(), "SIGTERM: the agent exited with {status}");
        }
    }

    /// The managed files in the target (unmanaged ones left out).
    fn deployed(&self) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        let mut todo = vec![self.target.clone()];
        while let Some(dir) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let rel = path
                    .strip_prefix(&self.target)
                    .expect("under the target")
                    .to_string_lossy()
                    .into_owned();
                if rel.starts_with("unmanaged") {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(path);
                } else {
                    found.insert(rel, std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        found
    }

    /// Whether the agent answers `GET /readyz` with 200 (it has synced).
    fn ready(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let request = format!(
            "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    }

    /// Waits until the running agent has synced and the target is the last
    /// good commit.
    fn converge(&self, iteration: u64) {
        let deadline = Instant::now() + PATIENCE;
        while !self.ready() || self.deployed() != self.repo.good {
            if Instant::now() > deadline {
                let deployed = self.deployed();
                let missing: Vec<_> = self
                    .repo
                    .good
                    .iter()
                    .filter(|(p, c)| deployed.get(*p) != Some(c))
                    .take(5)
                    .collect();
                let extra: Vec<_> = deployed
                    .keys()
                    .filter(|p| !self.repo.good.contains_key(*p))
                    .take(5)
                    .collect();
                panic!(
                    "iteration {iteration}: the target did not converge to the last good commit; \
                     differing {missing:?}, extra {extra:?}; the agent's log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Hand edits, deletes and a stray file in the target.
    fn tamper(&self, rng: &mut fastrand::Rng) {
        let deployed: Vec<String> = self.deployed().into_keys().collect();
        for _ in 0..rng.usize(0..4) {
            let path = self.target.join(&deployed[rng.usize(..deployed.len())]);
            if rng.bool() {
                let _ = std::fs::write(&path, "hand edit\n");
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    fn check_unmanaged(&self, iteration: u64) {
        for (path, content) in UNMANAGED {
            let got = std::fs::read_to_string(self.target.join(path)).unwrap_or_default();
            assert_eq!(&got, content, "iteration {iteration}: {path} was touched");
        }
    }

    /// The audit log, history and store invariants (the agent stopped).
    async fn check_records(&self, iteration: u64) {
        let store = RedbStore::open(&self.state).expect("the state store opens");
        let inventory = store.load_inventory(APP).await.expect("inventory").value;
        let audit = store
            .audit(APP, &AuditQuery::default())
            .await
            .expect("audit");
        let mut newest: BTreeMap<ResourceId, (AuditAction, Option<String>)> = BTreeMap::new();
        for record in audit {
            // Oldest first: the last one seen is the newest.
            newest.insert(
                record.id.clone(),
                (record.action, record.digest_after.clone()),
            );
        }
        for path in self.repo.good.keys() {
            let id = ResourceId::new("File", path.clone()).expect("id");
            let digest = inventory.get(&id).map(|e| e.digest.clone());
            match newest.get(&id) {
                Some((AuditAction::Create | AuditAction::Update, after)) => assert_eq!(
                    after.as_ref(),
                    digest.as_ref(),
                    "iteration {iteration}: {path}: the newest audit record is not what is deployed"
                ),
                other => {
                    panic!("iteration {iteration}: {path} is deployed but audited as {other:?}")
                }
            }
        }
        for path in self
            .repo
            .ever
            .difference(&self.repo.good.keys().cloned().collect())
        {
            let id = ResourceId::new("File", path.clone()).expect("id");
            if let Some((action, _)) = newest.get(&id) {
                assert_eq!(
                    *action,
                    AuditAction::Delete,
                    "iteration {iteration}: {path} was pruned but its newest audit record is {action:?}"
                );
            }
        }
        let history = store.history(APP, 1000).await.expect("history");
        assert!(
            history
                .windows(2)
                .all(|w| w[0].finished_at >= w[1].finished_at),
            "iteration {iteration}: history is out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_commits_tampering_and_kills_keep_every_invariant() {
    let iterations = setting("GITOPS_SOAK_ITERATIONS", 20);
    let files = setting("GITOPS_SOAK_FILES", 2_000);
    let seed = setting(
        "GITOPS_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    );
    println!("soak: {iterations} iterations, {files} files, GITOPS_SOAK_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut world = World::new(files);
    let started = Instant::now();
    world.start();
    world.converge(0);
    for iteration in 1..=iterations {
        if rng.u8(..10) == 0 {
            world.repo.broken_commit();
            std::thread::sleep(Duration::from_millis(rng.u64(0..300)));
            world.repo.revert_broken();
        }
        world.repo.random_commit(&mut rng);
        world.tamper(&mut rng);
        // Kill at a random moment, mid-sync or not, and restart.
        std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
        world.kill();
        world.tamper(&mut rng);
        world.start();
        world.converge(iteration);
        world.check_unmanaged(iteration);
        if iteration % 5 == 0 || iteration == iterations {
            world.stop();
            world.check_records(iteration).await;
            world.start();
        }
    }
    world.stop();
    println!(
        "soak: {iterations} iterations ({} commits) in {:.1?}, seed {seed}",
        world.repo.commits,
        started.elapsed()
    );
}
