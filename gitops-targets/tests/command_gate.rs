//! CommandGate against real processes: small local shell scripts are the
//! gate programs (the gate itself never runs a shell), driven by an engine
//! over the in-memory source and target.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gitops_core::engine::SyncResult;
use gitops_core::gate::GateVerdict;
use gitops_core::store::AuditAction;
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{
    AuditQuery, ConditionKind, Engine, Gate, GateInput, GateStage, ManifestRender, Plan,
    ResourceId, Revision,
};
use gitops_targets::{CommandGate, CommandGateError};
use serde_json::Value;

use support::{Scripts, assert_gone, read_pid};

const SCRIPTS: &[(&str, &str)] = &[
    (
        "record",
        r#"cat > "$STATE/stdin"
env > "$STATE/env"
echo "checked $GITOPS_REVISION""#,
    ),
    (
        "smoke",
        r#"cat > /dev/null
echo "ran 10 smoke tests"
echo "3 of 10 smoke tests failed: GET /health returned 503" >&2
exit 3"#,
    ),
    (
        "hang",
        r#"sleep 300 &
echo $! > "$STATE/child.pid"
echo $$ > "$STATE/leader.pid"
wait"#,
    ),
    (
        "chatty",
        r#"cat > /dev/null
echo "FIRST LINE"
head -c 1048576 /dev/zero | tr '\0' x
echo
echo "verdict: all 200 tests passed""#,
    ),
];

fn scripts() -> &'static Scripts {
    static DIR: OnceLock<Scripts> = OnceLock::new();
    DIR.get_or_init(|| Scripts::write("gate-scripts", SCRIPTS))
}

fn doc(v: i64) -> String {
    format!("kind: App\nmetadata: {{ name: web }}\nspec: {{ v: {v} }}\n")
}

fn id(s: &str) -> ResourceId {
    s.parse().expect("valid id")
}

fn engine(
    pre: Option<CommandGate>,
    post: Option<CommandGate>,
) -> (Arc<MemorySource>, Arc<MemoryTarget>, Engine) {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let mut builder = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone());
    if let Some(gate) = pre {
        builder = builder.pre_sync_gate(Arc::new(gate));
    }
    if let Some(gate) = post {
        builder = builder.post_sync_gate(Arc::new(gate));
    }
    (source, target, builder.build().expect("engine"))
}

/// A passing gate: the apply goes ahead, and the program got the stage, the
/// revision and the plan as JSON on stdin (the `ci` example's shape) plus
/// the GITOPS_* variables, in an environment that is otherwise only the
/// allowlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_gate_gets_revision_and_plan_on_stdin() {
    let state = tempfile::tempdir().expect("state");
    let gate = CommandGate::builder([scripts().path("record")])
        .name("scanner")
        .env("STATE", state.path().to_str().expect("utf-8"))
        .build()
        .expect("gate");
    let (source, target, engine) = engine(Some(gate), None);
    let rev = source.commit([("app.yaml", doc(1))]);

    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(report.gates.len(), 1);
    assert!(report.gates[0].passed);
    assert_eq!(report.gates[0].output, format!("checked {}", rev.id));
    assert!(
        target.get(&id("App/web")).is_some(),
        "applied after the gate"
    );

    let stdin: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("stdin")).expect("stdin"))
            .expect("stdin is JSON");
    assert_eq!(stdin["stage"], "pre_sync");
    let revision: Revision = serde_json::from_value(stdin["revision"].clone()).expect("revision");
    assert_eq!(revision, rev);
    assert_eq!(stdin["plan"]["summary"]["create"], 1);
    assert_eq!(stdin["plan"]["revision"]["id"], rev.id.as_str());
    assert_eq!(stdin["plan"]["waves"][0]["changes"][0]["id"], "App/web");

    let env = std::fs::read_to_string(state.path().join("env")).expect("env");
    assert!(env.contains("GITOPS_GATE_STAGE=pre_sync"), "{env}");
    assert!(
        env.contains(&format!("GITOPS_REVISION={}", rev.id)),
        "{env}"
    );
    assert!(env.contains("GITOPS_REFERENCE=main"), "{env}");
    for line in env.lines() {
        let name = line.split('=').next().unwrap_or("");
        assert!(
            [
                "PATH", "HOME", "LANG", "LC_ALL", "TZ", "STATE", "PWD", "SHLVL", "_"
            ]
            .contains(&name)
                || name.starts_with("GITOPS_"),
            "unexpected variable {line:?} reached the gate"
        );
    }
}

/// A post-sync gate that exits non-zero fails the revision; what it printed
/// (stdout, then stderr) and its exit status are in the report, the history
/// and the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_keeps_its_output_in_report_history_and_audit() {
    let gate = CommandGate::builder([scripts().path("smoke")])
        .name("smoke")
        .build()
        .expect("gate");
    let (source, _target, engine) = engine(None, Some(gate));
    source.commit([("app.yaml", doc(1))]);

    let report = engine.sync_once().await.expect("sync");
    assert_eq!(report.result, SyncResult::Failed, "{report}");
    let result = &report.gates[0];
    assert_eq!(result.stage, GateStage::PostSync);
    assert!(!result.passed);
    let expected = "ran 10 smoke tests\n3 of 10 smoke tests failed: GET /health returned 503";
    assert!(result.output.starts_with(expected), "{}", result.output);
    assert!(
        result.output.ends_with("smoke` exited with 3]"),
        "{}",
        result.output
    );
    assert!(
        report.to_string().contains("gate smoke (PostSync) FAILED"),
        "{report}"
    );
    let status = engine.status();
    assert!(!status.is(ConditionKind::Ready), "{status}");
    assert!(
        status
            .condition(ConditionKind::Ready)
            .message
            .contains("3 of 10 smoke tests failed"),
        "{status}"
    );

    let history = engine.history(1).await.expect("history");
    assert_eq!(history[0].gates, report.gates);
    let audit = engine
        .audit(&AuditQuery {
            id: Some(id("Gate/smoke")),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, AuditAction::Gate);
    let detail = audit[0].detail.as_deref().unwrap_or("");
    assert!(
        detail.starts_with("PostSync failed: ran 10 smoke tests"),
        "{detail}"
    );
    assert!(detail.contains("exited with 3"), "{detail}");
}

/// A hanging gate fails at its timeout, and its whole process group (the
/// program and the grandchild it started) is killed and gone from /proc;
/// nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_gate_times_out_and_its_process_group_is_gone() {
    let state = tempfile::tempdir().expect("state");
    let gate = CommandGate::builder([scripts().path("hang")])
        .name("slow-suite")
        .env("STATE", state.path().to_str().expect("utf-8"))
        .timeout(Duration::from_millis(700))
        .reap_orphans(true)
        .build()
        .expect("gate");
    let (source, target, engine) = engine(Some(gate), None);
    source.commit([("app.yaml", doc(1))]);

    let started = Instant::now();
    let report = engine.sync_once().await.expect("sync");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(report.result, SyncResult::GateFailed, "{report}");
    let output = &report.gates[0].output;
    assert!(
        output.contains("timed out after 700ms; its process group was killed"),
        "{output}"
    );
    assert!(target.contents().is_empty(), "nothing applied");
    let leader = read_pid(state.path(), "leader.pid").await;
    let child = read_pid(state.path(), "child.pid").await;
    assert_gone(leader, "the gate program").await;
    assert_gone(child, "the gate's background grandchild").await;
}

/// A megabyte of output keeps only the last bytes (the verdict of a test
/// suite is at the end), with a note of what was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_to_its_tail() {
    let gate = CommandGate::builder([scripts().path("chatty")])
        .output_limit(1024)
        .build()
        .expect("gate");
    let source = MemorySource::new("main");
    let rev = source.commit([("app.yaml", doc(1))]);
    let input = GateInput {
        stage: GateStage::PreSync,
        revision: rev.clone(),
        plan: Arc::new(Plan::empty(rev)),
    };
    let GateVerdict::Passed(output) = gate.check(&input).await else {
        panic!("the gate should pass");
    };
    assert!(
        output.ends_with("verdict: all 200 tests passed"),
        "{output}"
    );
    assert!(output.starts_with("["), "{}", &output[..80]);
    assert!(
        output.contains("earlier bytes of stdout dropped"),
        "{}",
        &output[..80]
    );
    assert!(!output.contains("FIRST LINE"));
    assert!(output.len() < 1024 + 100, "{} bytes kept", output.len());
}

#[test]
fn configuration_errors_name_the_gate() {
    let err = CommandGate::builder(["no-such-program-for-gitops"])
        .name("policy")
        .build()
        .expect_err("missing");
    assert!(
        matches!(&err, CommandGateError::ProgramNotFound { gate, .. } if gate == "policy"),
        "{err}"
    );
    assert!(err.to_string().starts_with("gate policy: program"), "{err}");
    let err = CommandGate::builder(Vec::<String>::new())
        .name("empty")
        .build()
        .expect_err("empty");
    assert!(matches!(err, CommandGateError::Empty { .. }), "{err}");
    let err = CommandGate::builder(["sh"])
        .env("A=B", "x")
        .build()
        .expect_err("bad env");
    assert!(
        matches!(&err, CommandGateError::EnvName { gate, name } if gate == "sh" && name == "A=B"),
        "{err}"
    );
}
