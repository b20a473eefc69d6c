//! Replicas on etcd (`--etcd`): the test etcd, and keys and their history
//! read with the real `etcdctl`, to check from etcd's own record who wrote
//! what while holding which lock.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;

/// The test etcd's endpoints, or a failure saying what to do. Never skips.
pub fn endpoints() -> String {
    match std::env::var("GITOPS_ETCD_ENDPOINTS") {
        Ok(e) if !e.trim().is_empty() => e,
        _ => panic!(
            "GITOPS_ETCD_ENDPOINTS is not set: these tests need a real etcd. Run scripts/test, \
             or `source scripts/etcd.sh && start_test_etcd` first"
        ),
    }
}

/// A key prefix no other test (or earlier run) uses.
pub fn prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("/gitops-agent-test/{name}-{}-{nanos}", std::process::id())
}

fn etcdctl(args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints())
        .args(args)
        .output()
        .expect("etcdctl (Debian package etcd-client) must be installed");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn decode(v: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every key under `prefix` with its value.
pub fn get_prefix(prefix: &str) -> BTreeMap<String, String> {
    let json: Value = serde_json::from_str(&etcdctl(&["get", "--prefix", prefix, "-w", "json"]))
        .expect("etcdctl json");
    json["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (decode(&kv["key"]), decode(&kv["value"])))
                .collect()
        })
        .unwrap_or_default()
}

/// Puts `key`.
pub fn put(key: &str, value: &str) {
    etcdctl(&["put", key, value]);
}

/// One change in etcd's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: String,
    /// The value written; `None` for a delete.
    pub value: Option<String>,
    /// The revision of the change.
    pub revision: i64,
}

/// Every change under `prefix` since the first revision, in order: a
/// sentinel key is written last, and the watch is read up to it.
pub fn history(prefix: &str) -> Vec<Change> {
    let sentinel = format!("{prefix}/~end-of-history");
    put(&sentinel, "1");
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoints(),
            "watch",
            "--rev=1",
            "--prefix",
            prefix,
        ])
        .args(["-w", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let stdout = child.stdout.take().expect("stdout");
    let mut changes = Vec::new();
    let reader = std::thread::spawn(move || {
        let mut changes = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(json) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            for event in json["Events"].as_array().into_iter().flatten() {
                let kv = &event["kv"];
                let change = Change {
                    key: decode(&kv["key"]),
                    value: (event["type"].as_i64() != Some(1)).then(|| decode(&kv["value"])),
                    revision: kv["mod_revision"].as_i64().unwrap_or_default(),
                };
                let done = change.key.ends_with("/~end-of-history");
                changes.push(change);
                if done {
                    return changes;
                }
            }
        }
        changes
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    changes.extend(reader.join().expect("reader"));
    assert!(
        changes.last().is_some_and(|c| c.key == sentinel),
        "the history of {prefix} was not read to its end"
    );
    changes
}

/// Who held the lock `lock` from which revision until which (exclusive;
/// `i64::MAX` while held), from the history.
pub fn holders(history: &[Change], lock: &str) -> Vec<(String, i64, i64)> {
    let mut held: Vec<(String, i64, i64)> = Vec::new();
    for change in history.iter().filter(|c| c.key == lock) {
        match &change.value {
            Some(owner) => held.push((owner.clone(), change.revision, i64::MAX)),
            None => {
                if let Some(last) = held.last_mut() {
                    last.2 = change.revision;
                }
            }
        }
    }
    held
}

/// The replica that held `lock` at `revision`.
pub fn holder_at(history: &[Change], lock: &str, revision: i64) -> Option<String> {
    holders(history, lock)
        .into_iter()
        .find(|(_, from, until)| *from < revision && revision < *until)
        .map(|(owner, _, _)| owner)
}
