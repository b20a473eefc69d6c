//! CommandTarget against real processes: small local shell scripts are the
//! programs (the target itself never runs a shell).

mod support;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gitops_core::{Health, Resource, ResourceId, Target, TargetError};
use gitops_targets::command::{Compare, Format, Payload};
use gitops_targets::{CommandConfigError, CommandTarget, CommandTargetBuilder};
use serde_json::{Value, json};

use support::{Scripts, assert_gone, present, process_state, read_pid};

const SCRIPTS: &[(&str, &str)] = &[
    (
        "store",
        r#"key=$(printf %s "$GITOPS_ID" | sha256sum | cut -c1-16)
f="$STATE/$key"
case "$1" in
  apply) cat > "$f" ;;
  observe) [ -f "$f" ] || exit 3; cat "$f" ;;
  delete) [ -f "$f" ] || exit 3; rm "$f" ;;
  health) [ -f "$f" ] || exit 3 ;;
esac"#,
    ),
    (
        "record",
        r#"for a in "$@"; do printf '%s\0' "$a"; done > "$STATE/args"
env > "$STATE/env"
cat > "$STATE/stdin""#,
    ),
    (
        "exit",
        r#"printf '%s' "$MESSAGE" >&2
printf '%s' "$STDOUT"
exit "$EXIT_CODE""#,
    ),
    ("selfkill", "kill -9 $$"),
    (
        "hang",
        r#"sleep 300 &
echo $! > "$STATE/child.pid"
echo $$ > "$STATE/leader.pid"
wait"#,
    ),
    (
        "detach",
        r#"sleep 300 &
echo $! > "$STATE/child.pid"
echo $$ > "$STATE/leader.pid"
exit 0"#,
    ),
    ("flood_out", "head -c 104857600 /dev/zero"),
    ("flood_err", "head -c 104857600 /dev/zero >&2\nexit 1"),
    ("doomed", "exit 0"),
    ("ok", "exit 0"),
];

fn scripts() -> &'static Scripts {
    static DIR: OnceLock<Scripts> = OnceLock::new();
    DIR.get_or_init(|| Scripts::write("command-scripts", SCRIPTS))
}

fn state() -> tempfile::TempDir {
    tempfile::tempdir().expect("state dir")
}

/// A target that runs `program` (no arguments) for apply, observe and delete.
fn program_target(program: &str) -> CommandTargetBuilder {
    CommandTarget::builder()
        .apply([program])
        .observe([program])
        .delete([program])
}

fn store_target(state: &Path) -> CommandTargetBuilder {
    let store = scripts().path("store");
    CommandTarget::builder()
        .apply([store.as_str(), "apply"])
        .observe([store.as_str(), "observe"])
        .delete([store.as_str(), "delete"])
        .health([store.as_str(), "health"])
        .env("STATE", state.to_str().expect("utf-8"))
}

fn exit_target(state: &Path, code: i32, message: &str) -> CommandTarget {
    let exit = scripts().path("exit");
    program_target(&exit)
        .health([exit.as_str()])
        .env("STATE", state.to_str().expect("utf-8"))
        .env("EXIT_CODE", code.to_string())
        .env("MESSAGE", message)
        .build()
        .expect("config")
}

fn resource(kind: &str, ns: Option<&str>, name: &str, spec: Value) -> Resource {
    Resource::new(
        ResourceId::with_namespace(kind, ns, name).expect("valid id"),
        spec,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_observe_delete_round_trip() {
    for (payload, pointer, format) in [
        (Payload::Spec, None, Format::Json),
        (Payload::Manifest, Some("/spec"), Format::Json),
        (Payload::Manifest, Some("/spec"), Format::Yaml),
    ] {
        let st = state();
        let mut builder = store_target(st.path())
            .payload(payload)
            .input(format)
            .output(format);
        if let Some(p) = pointer {
            builder = builder.observe_pointer(p);
        }
        let target = builder.build().expect("config");
        let r = resource(
            "Deployment",
            Some("prod"),
            "web",
            json!({"replicas": 3, "image": "web:1.2", "ports": [80, 443]}),
        );
        assert!(target.observe(&r.id).await.expect("observe").is_none());
        assert_eq!(target.health(&r.id).await.expect("health"), Health::Missing);
        target.apply(&r).await.expect("apply");
        let observed = present(&target, &r.id).await;
        assert_eq!(observed.spec, r.spec, "{payload:?} {format:?}");
        assert!(target.differs(&r, &observed).is_none());
        assert_eq!(target.health(&r.id).await.expect("health"), Health::Healthy);
        let mut changed = r.clone();
        changed.spec = changed.spec.edited(|v| v["replicas"] = json!(5));
        let diff = target.differs(&changed, &observed).expect("drift");
        assert_eq!(diff.changes[0].path, "spec.replicas");
        target.delete(&r.id).await.expect("delete");
        assert!(target.observe(&r.id).await.expect("observe").is_none());
        target
            .delete(&r.id)
            .await
            .expect("deleting a missing resource succeeds");
    }
}

fn read_args(state: &Path) -> Vec<String> {
    let raw = std::fs::read(state.join("args")).expect("args recorded");
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).expect("utf-8"))
        .collect()
}

fn read_env(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("env"))
        .expect("env recorded")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_reach_the_program_as_plain_data() {
    let record = scripts().path("record");
    for name in [
        "; rm -rf /",
        "$(touch CANARY)",
        "`touch CANARY`",
        "a  b",
        "x--force",
        "*",
        "'\"\\",
        "x && touch CANARY",
        "../../etc/passwd",
    ] {
        let st = state();
        let target = CommandTarget::builder()
            .apply([
                record.as_str(),
                "apply",
                "{kind}",
                "--namespace={namespace}",
                "--",
                "{name}",
            ])
            .observe([record.as_str()])
            .delete([record.as_str(), "delete", "--", "{name}"])
            .env("STATE", st.path().to_str().expect("utf-8"))
            .working_dir(st.path())
            .build()
            .expect("config");
        let r = resource("ConfigMap", None, name, json!({"k": "v"}));
        target.apply(&r).await.expect("apply");
        assert_eq!(
            read_args(st.path()),
            ["apply", "ConfigMap", "--", name],
            "no namespace: the --namespace argument is left out"
        );
        let env = read_env(st.path());
        assert!(env.contains(&format!("GITOPS_NAME={name}")), "{env:?}");
        assert!(env.contains(&"GITOPS_KIND=ConfigMap".to_owned()));
        assert!(!env.iter().any(|l| l.starts_with("GITOPS_NAMESPACE=")));
        let namespaced = resource("ConfigMap", Some("$(id)"), name, json!({}));
        target.apply(&namespaced).await.expect("apply");
        assert_eq!(
            read_args(st.path()),
            ["apply", "ConfigMap", "--namespace=$(id)", "--", name]
        );
        target.delete(&r.id).await.expect("delete");
        assert_eq!(read_args(st.path()), ["delete", "--", name]);
        assert!(!st.path().join("CANARY").exists(), "{name}: a shell ran");
    }
}

/// A manifest with kind `--context=prod` must never reach a program as an
/// option: ids refuse a leading `-` in every part, so it cannot be built.
#[test]
fn option_shaped_id_parts_are_refused() {
    for (kind, ns, name) in [
        ("--context=prod", None, "web"),
        ("ConfigMap", Some("-n"), "web"),
        ("ConfigMap", None, "-rf"),
    ] {
        let err = ResourceId::with_namespace(kind, ns, name).unwrap_err();
        assert!(err.to_string().contains("must not begin with '-'"), "{err}");
    }
    assert!("--context=prod/web".parse::<ResourceId>().is_err());
    assert!("ConfigMap/-n/web".parse::<ResourceId>().is_err());
}

/// Placeholders are expanded once: an id part holding `{name}` is passed
/// as written, not expanded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_are_expanded_in_one_pass() {
    let record = scripts().path("record");
    let st = state();
    let target = CommandTarget::builder()
        .apply([record.as_str(), "{kind}/{name}", "{id}", "{unknown}", "{"])
        .observe([record.as_str()])
        .delete([record.as_str()])
        .env("STATE", st.path().to_str().expect("utf-8"))
        .build()
        .expect("config");
    let r = resource("Kind{name}", None, "n{kind}", json!({}));
    target.apply(&r).await.expect("apply");
    assert_eq!(
        read_args(st.path()),
        ["Kind{name}/n{kind}", "Kind{name}/n{kind}", "{unknown}", "{"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_documents_and_kind_validation() {
    let record = scripts().path("record");
    let st = state();
    let builder = program_target(&record)
        .env("STATE", st.path().to_str().expect("utf-8"))
        .kinds(["Deployment"]);
    let mut r = resource("Deployment", Some("prod"), "web", json!({"replicas": 2}));
    r.api_version = Some("apps/v1".into());
    r.labels.insert("app".into(), "web".into());
    let json_target = builder.clone().build().expect("config");
    json_target.apply(&r).await.expect("apply");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(st.path().join("stdin")).expect("stdin"))
            .expect("json on stdin");
    assert_eq!(
        doc,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"}},
               "spec": {"replicas": 2}})
    );
    let yaml_target = builder.clone().input(Format::Yaml).build().expect("config");
    yaml_target.apply(&r).await.expect("apply");
    let text = std::fs::read_to_string(st.path().join("stdin")).expect("stdin");
    let parsed: Value = serde_saphyr::from_str(&text).expect("yaml on stdin");
    assert_eq!(parsed, doc);
    let spec_target = builder.payload(Payload::Spec).build().expect("config");
    spec_target.apply(&r).await.expect("apply");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(st.path().join("stdin")).expect("stdin"))
            .expect("json");
    assert_eq!(doc, json!({"replicas": 2}));

    // A kind outside the allowlist is refused before anything runs.
    std::fs::remove_file(st.path().join("args")).expect("rm");
    let other = resource("Secret", None, "x", json!({}));
    let err = json_target.apply(&other).await.expect_err("kind");
    assert!(matches!(err, TargetError::InvalidSpec { .. }), "{err}");
    assert!(!st.path().join("args").exists(), "the program did not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_starts_empty_plus_the_allowlist() {
    let record = scripts().path("record");
    let st = state();
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
        "cargo sets CARGO_MANIFEST_DIR for test processes; this test relies on it"
    );
    let builder = program_target(&record).env("STATE", st.path().to_str().expect("utf-8"));
    let r = resource("Thing", None, "x", json!({}));
    builder
        .clone()
        .build()
        .expect("config")
        .apply(&r)
        .await
        .expect("apply");
    let env = read_env(st.path());
    assert!(env.iter().any(|l| l.starts_with("PATH=")), "{env:?}");
    assert!(!env.iter().any(|l| l.starts_with("CARGO_")), "{env:?}");
    builder
        .clone()
        .allow_env(["CARGO_MANIFEST_DIR"])
        .build()
        .expect("config")
        .apply(&r)
        .await
        .expect("apply");
    assert!(
        read_env(st.path())
            .iter()
            .any(|l| l.starts_with("CARGO_MANIFEST_DIR="))
    );
    builder
        .env_allowlist(Vec::<String>::new())
        .build()
        .expect("config")
        .apply(&r)
        .await
        .expect("apply");
    let env = read_env(st.path());
    assert!(!env.iter().any(|l| l.starts_with("HOME=")), "{env:?}");
    assert!(
        matches!(
            CommandTarget::builder()
                .env("A=B", "x")
                .apply(["x"])
                .build(),
            Err(CommandConfigError::EnvName { .. })
        ),
        "bad variable name refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_contract() {
    let st = state();
    let r = resource("Thing", None, "x", json!({}));

    let target = exit_target(st.path(), 1, "boom: quota exceeded");
    let err = target.apply(&r).await.expect_err("exit 1");
    assert!(!err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("exited with 1") && text.contains("boom: quota exceeded"),
        "{text}"
    );
    assert!(text.contains("Thing/x"), "{text}");
    assert!(target.observe(&r.id).await.is_err());
    assert!(target.delete(&r.id).await.is_err());
    assert_eq!(
        target.health(&r.id).await.expect("health"),
        Health::Degraded {
            reason: "boom: quota exceeded".into()
        }
    );

    let target = exit_target(st.path(), 75, "try later");
    assert!(target.apply(&r).await.expect_err("75").is_transient());
    assert!(target.health(&r.id).await.expect_err("75").is_transient());

    let target = exit_target(st.path(), 3, "");
    assert!(target.observe(&r.id).await.expect("not found").is_none());
    target
        .delete(&r.id)
        .await
        .expect("not found is a successful delete");
    assert_eq!(target.health(&r.id).await.expect("health"), Health::Missing);
    assert!(target.apply(&r).await.is_err(), "3 is no success for apply");

    let target = exit_target(st.path(), 4, "");
    assert_eq!(
        target.health(&r.id).await.expect("health"),
        Health::Progressing
    );

    let target = exit_target(st.path(), 0, "");
    let err = target.observe(&r.id).await.expect_err("empty stdout");
    assert!(err.to_string().contains("printed nothing"), "{err}");

    let exit = scripts().path("exit");
    let target = program_target(&exit)
        .env("EXIT_CODE", "0")
        .env("STDOUT", "{not json")
        .build()
        .expect("config");
    let err = target.observe(&r.id).await.expect_err("bad json");
    assert!(err.to_string().contains("bad document"), "{err}");
    let target = program_target(&exit)
        .env("EXIT_CODE", "0")
        .empty_stdout_is_not_found(true)
        .build()
        .expect("config");
    assert!(target.observe(&r.id).await.expect("observe").is_none());

    let selfkill = scripts().path("selfkill");
    let target = program_target(&selfkill).build().expect("config");
    let err = target.apply(&r).await.expect_err("killed");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("killed by signal 9"), "{err}");
}

/// The timeout kills the whole process group and leaves no zombie: the
/// leader is reaped by the target, the orphaned grandchild too (as child
/// subreaper; PID 1 on this kind of machine does not reap orphans).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_command_is_killed_with_its_group_and_reaped() {
    for script in ["hang", "detach"] {
        let st = state();
        let program = scripts().path(script);
        let target = program_target(&program)
            .env("STATE", st.path().to_str().expect("utf-8"))
            .timeout(Duration::from_millis(700))
            .reap_orphans(true)
            .build()
            .expect("config");
        let r = resource("Thing", None, "x", json!({}));
        let started = Instant::now();
        let err = target.apply(&r).await.expect_err("timeout");
        let elapsed = started.elapsed();
        assert!(
            matches!(err, TargetError::Timeout { after, .. } if after == Duration::from_millis(700)),
            "{script}: {err}"
        );
        assert!(err.is_transient());
        assert!(
            elapsed < Duration::from_secs(5),
            "{script}: took {elapsed:?}"
        );
        let leader = read_pid(st.path(), "leader.pid").await;
        let child = read_pid(st.path(), "child.pid").await;
        assert_gone(leader, "the leader").await;
        assert_gone(child, "the background grandchild").await;
    }
}

/// The engine cancels a call by dropping its future (its own call timeout):
/// the whole group is killed then too, not only the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_kills_the_whole_group() {
    let st = state();
    let program = scripts().path("hang");
    let target = program_target(&program)
        .env("STATE", st.path().to_str().expect("utf-8"))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("config");
    let r = resource("Thing", None, "x", json!({}));
    let cancelled = tokio::time::timeout(Duration::from_millis(700), target.apply(&r)).await;
    assert!(cancelled.is_err(), "the outer timeout fired first");
    let leader = read_pid(st.path(), "leader.pid").await;
    let child = read_pid(st.path(), "child.pid").await;
    for (pid, what) in [(leader, "leader"), (child, "grandchild")] {
        let mut alive = true;
        for _ in 0..300 {
            // Gone, or a zombie waiting for its parent: no longer running.
            if matches!(process_state(pid), None | Some('Z')) {
                alive = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !alive,
            "the {what} (pid {pid}) still runs after the call was dropped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_of_output_are_capped() {
    let r = resource("Thing", None, "x", json!({}));
    let flood_out = scripts().path("flood_out");
    let target = program_target(&flood_out)
        .output_limit(1 << 20)
        .build()
        .expect("config");
    let started = Instant::now();
    let err = target.observe(&r.id).await.expect_err("stdout flood");
    assert!(
        err.to_string()
            .contains("more than 1048576 bytes on stdout"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let flood_err = scripts().path("flood_err");
    let target = program_target(&flood_err)
        .output_limit(64 << 10)
        .build()
        .expect("config");
    let err = target.apply(&r).await.expect_err("stderr flood, exit 1");
    let text = err.to_string();
    assert!(
        text.len() < (64 << 10) + 1024,
        "message capped: {} bytes",
        text.len()
    );
    assert!(
        text.contains("more bytes of stderr dropped"),
        "{}",
        &text[text.len() - 200..]
    );
    assert!(text.contains("exited with 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binary_is_a_clear_error() {
    let err = CommandTarget::builder()
        .apply(["/nonexistent/gitops-tool", "apply"])
        .observe(["/bin/true"])
        .delete(["/bin/true"])
        .build()
        .expect_err("missing");
    assert!(
        matches!(err, CommandConfigError::ProgramNotFound { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("/nonexistent/gitops-tool"),
        "{err}"
    );
    let err = CommandTarget::builder()
        .apply(["true"])
        .observe(["no-such-gitops-tool"])
        .delete(["true"])
        .build()
        .expect_err("missing on PATH");
    let text = err.to_string();
    assert!(
        text.contains("no-such-gitops-tool") && text.contains("PATH="),
        "{text}"
    );
    assert!(matches!(
        CommandTarget::builder()
            .apply(["true"])
            .delete(["true"])
            .build(),
        Err(CommandConfigError::Missing { .. })
    ));
    assert!(matches!(
        CommandTarget::builder().apply(Vec::<String>::new()).build(),
        Err(CommandConfigError::Empty { .. })
    ));
    let st = state();
    let not_exec = st.path().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").expect("write");
    let err = CommandTarget::builder()
        .apply([not_exec.to_str().expect("utf-8")])
        .observe(["true"])
        .delete(["true"])
        .build()
        .expect_err("not executable");
    assert!(
        matches!(err, CommandConfigError::NotExecutable { .. }),
        "{err}"
    );

    // A program removed after the target was built.
    let doomed = scripts().path("doomed");
    let target = program_target(&doomed).build().expect("config");
    std::fs::remove_file(&doomed).expect("remove");
    let r = resource("Thing", None, "x", json!({}));
    let err = target.apply(&r).await.expect_err("gone");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains("not found") && text.contains("doomed"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_fields_comparison_ignores_what_the_system_adds() {
    let ok = scripts().path("ok");
    let target = program_target(&ok)
        .compare(Compare::DesiredFields)
        .build()
        .expect("config");
    let desired = resource(
        "Deployment",
        Some("prod"),
        "web",
        json!({"replicas": 3, "template": {"containers": [{"name": "web", "image": "web:1"}]}}),
    );
    let observed = gitops_core::Observed::new(json!({
        "replicas": 3,
        "revisionHistoryLimit": 10,
        "template": {"containers": [{"name": "web", "image": "web:1", "imagePullPolicy": "IfNotPresent"}]}
    }));
    assert!(target.differs(&desired, &observed).is_none());
    let drifted = gitops_core::Observed::new(json!({
        "replicas": 1,
        "template": {"containers": [{"name": "web", "image": "web:1"}, {"name": "sidecar"}]}
    }));
    let diff = target.differs(&desired, &drifted).expect("drift");
    let paths: Vec<_> = diff.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["spec.replicas", "spec.template.containers[1]"]);
}
