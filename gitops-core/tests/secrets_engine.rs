//! Sensitive resources never leak: an engine deploying an age-encrypted
//! manifest, with drift, shows `(sensitive)` in plans (text and JSON),
//! events, status, history and audit; logs at debug level and every file
//! of the state directory hold neither the secret nor the drifted value;
//! the inventory keeps a keyed digest. In a binary of its own: it installs
//! a process-wide `tracing` subscriber.

mod support;

use std::sync::{Arc, Mutex};

use gitops_core::decrypt::{Decrypt, Identities};
use gitops_core::engine::Event;
use gitops_core::secret::{DigestKey, KEYED_PREFIX, SENSITIVE};
use gitops_core::store::StateStore as _;
use gitops_core::testing::{MemorySource, MemoryTarget, MemoryWriteback};
use gitops_core::{AuditQuery, Engine, ManifestRender, RedbStore, Render, serde_json::json};
use support::age::{encrypt, x25519};

const SECRET: &str = "hunter2-correct-horse";
const DRIFTED: &str = "typed-by-hand-0xdeadbeef";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} leaks the secret:\n{text}");
    assert!(
        !text.contains(DRIFTED),
        "{what} leaks the drifted value:\n{text}"
    );
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_shows_a_sensitive_value() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("subscriber");

    let keys = tempfile::tempdir().expect("keys");
    let key = x25519(keys.path(), "k");
    let state = tempfile::tempdir().expect("state");
    let manifest = format!(
        "kind: Secret\nmetadata: {{ name: db, annotations: {{ gitops.rs/drift: writeback }} }}\n\
         spec: {{ password: {SECRET}, user: app }}\n"
    );
    let source = Arc::new(MemorySource::new("main"));
    source.commit([
        (
            "app.yaml",
            b"kind: App\nmetadata: { name: web }\nspec: { replicas: 2 }\n".to_vec(),
        ),
        ("db.yaml.age", encrypt(&[&key], true, manifest.as_bytes())),
    ]);
    let identities = Identities::from_file(&key.identity).expect("identity");
    let render: Arc<dyn Render> = Arc::new(Decrypt::new(ManifestRender::new(), identities));
    let target = Arc::new(MemoryTarget::new());
    let writeback = Arc::new(MemoryWriteback::committing(source.clone(), render.clone()));
    let store = Arc::new(RedbStore::open(state.path()).expect("store"));
    let digest_key = DigestKey::load_or_create(&state.path().join("digest.key")).expect("key");
    let engine = Engine::builder()
        .source(source.clone())
        .render(render)
        .target(target.clone())
        .store(store.clone())
        .writeback(writeback.clone())
        .digest_key(digest_key)
        .build()
        .expect("builds");
    let mut events = engine.subscribe();
    let mut shown = Vec::new();

    let plan = engine.plan().await.expect("plan");
    shown.push(("create plan text", plan.to_string()));
    assert!(plan.to_string().contains(SENSITIVE), "{plan}");
    // The plan says the writeback policy becomes revert, and why.
    assert!(
        plan.to_string().contains(
            "Secret/db: drift is reverted, not written back: a sensitive resource is written back only re-encrypted"
        ),
        "{plan}"
    );
    shown.push(("create plan JSON", json!(plan).to_string()));
    let report = engine.sync_once().await.expect("sync");
    shown.push(("first report", format!("{report:?}")));
    let db = "Secret/db".parse().expect("id");
    assert_eq!(
        target.get(&db),
        Some(json!({"password": SECRET, "user": "app"}))
    );

    target.edit(&db, json!({"password": DRIFTED, "user": "app"}));
    let plan = engine.plan().await.expect("plan");
    let text = plan.to_string();
    assert!(
        text.contains("spec.password") && text.contains(SENSITIVE),
        "{text}"
    );
    shown.push(("drift plan text", text));
    shown.push(("drift plan JSON", json!(plan).to_string()));
    let report = engine.sync_once().await.expect("sync");
    shown.push(("drift report", format!("{report:?}")));
    // No recipients: reverted, never written back.
    assert_eq!(
        target.get(&db),
        Some(json!({"password": SECRET, "user": "app"}))
    );
    assert!(writeback.calls().is_empty());

    let mut drift_events = 0;
    let mut refused = 0;
    while let Ok(event) = events.try_recv() {
        if let Event::Warnings { warnings, .. } = &event {
            refused += warnings
                .iter()
                .filter(|w| matches!(&w.kind, gitops_core::WarningKind::WritebackRefused { id } if id.to_string() == "Secret/db"))
                .count();
        }
        if let Event::DriftDetected {
            diff: Some(diff), ..
        } = &event
        {
            drift_events += 1;
            assert!(diff.changes.iter().all(|c| c.path.starts_with("spec.")));
        }
        shown.push(("event", format!("{event:?}")));
    }
    assert!(drift_events > 0, "a drift event was sent");
    assert_eq!(
        refused, 1,
        "one Warnings event names the refused write-back"
    );
    shown.push(("status", json!(engine.status()).to_string()));
    let history = engine.history(100).await.expect("history");
    shown.push(("history", json!(history).to_string()));
    let audit = engine.audit(&AuditQuery::default()).await.expect("audit");
    shown.push(("audit", json!(audit).to_string()));
    for (what, text) in &shown {
        assert_clean(what, text);
    }

    let inventory = store
        .load_inventory("default")
        .await
        .expect("inventory")
        .value;
    let entry = inventory.get(&db).expect("recorded");
    assert!(entry.digest.starts_with(KEYED_PREFIX), "{}", entry.digest);
    let web = inventory.get(&"App/web".parse().expect("id")).expect("web");
    assert!(!web.digest.starts_with(KEYED_PREFIX));

    drop(engine);
    drop(store);
    let mut files = Vec::new();
    files_under(state.path(), &mut files);
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        assert_clean(
            &file.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        );
    }
    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    assert!(logs.contains("DEBUG"), "debug logs captured");
    assert_clean("logs", &logs);
}
