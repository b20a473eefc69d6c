//! Tracing spans carry the app, trigger, revision and resource id. In a test
//! binary of its own: `tracing` caches callsite interest process-wide, and
//! tests running in parallel without a subscriber would race this one.

use gitops_core::sync::LockExt as _;
use std::sync::Arc;

use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{Engine, ManifestRender};

/// Collects everything a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.locked().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn spans_carry_the_revision_and_the_resource_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("app.yaml", "kind: App\nmetadata: { name: web }\nspec: {}\n")]);
    let engine = Engine::builder()
        .source(source)
        .render(Arc::new(ManifestRender::new()))
        .target(Arc::new(MemoryTarget::new()))
        .build()
        .expect("builds");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let revision = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(engine.sync_once()).expect("sync").revision
    });
    let text = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("memory target applied"))
        .unwrap_or_else(|| panic!("no apply event in:\n{text}"));
    assert!(line.contains(&format!("revision={revision}")), "{line}");
    assert!(line.contains("trigger=manual"), "{line}");
    assert!(line.contains("apply{id=App/web}"), "{line}");
}
