//! ManifestRender and FilesRender on good and hostile input.

use gitops_core::{
    DriftPolicy, FilesRender, ManifestRender, Render, RenderError, ResourceId, Revision, Snapshot,
};

fn snapshot(files: &[(&str, &[u8])]) -> Snapshot {
    Snapshot::from_files(
        Revision::new("main", "1".repeat(40)),
        files.iter().map(|(p, b)| (*p, *b)),
    )
    .expect("valid test paths")
}

fn render(files: &[(&str, &[u8])]) -> Result<gitops_core::DesiredState, RenderError> {
    ManifestRender::new().render(&snapshot(files))
}

fn id(s: &str) -> ResourceId {
    s.parse().expect("valid test id")
}

#[test]
fn yaml_json_toml_documents() {
    let yaml = br#"
apiVersion: example.com/v1
kind: ConfigFile
metadata:
  name: web
  namespace: prod
  labels: { app: web, tier: 1 }
  annotations:
    gitops.rs/drift: writeback
    gitops.rs/prune: disabled
  dependsOn:
    - Secret/prod/tls
    - { kind: Database, name: main }
spec:
  port: 8080
---
kind: Secret
metadata: { name: tls, namespace: prod }
spec: { cert: abc }
"#;
    let json = br#"[{"kind":"Database","metadata":{"name":"main"},"spec":{"size":3}},
                    {"kind":"Queue","metadata":{"name":"jobs"}}]"#;
    let toml = b"kind = \"Cache\"\n[metadata]\nname = \"redis\"\ndependsOn = [\"Database/main\"]\n[spec]\nmemory = \"1Gi\"\n";
    let desired = render(&[
        ("apps/web.yaml", yaml),
        ("db.json", json),
        ("cache.toml", toml),
        ("README.md", b"# not a manifest: ignored"),
    ])
    .expect("valid manifests");
    let ids: Vec<String> = desired
        .resources()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "Cache/redis",
            "ConfigFile/prod/web",
            "Database/main",
            "Queue/jobs",
            "Secret/prod/tls"
        ]
    );
    let web = desired.get(&id("ConfigFile/prod/web")).expect("web");
    assert_eq!(web.api_version.as_deref(), Some("example.com/v1"));
    assert_eq!(web.policy.drift, DriftPolicy::Writeback);
    assert!(!web.policy.prune);
    assert_eq!(web.labels["tier"], "1");
    assert_eq!(
        web.depends_on,
        vec![id("Secret/prod/tls"), id("Database/main")]
    );
    assert_eq!(web.spec.to_value()["port"], 8080);
    assert_eq!(
        (web.origin.path.as_str(), web.origin.document),
        ("apps/web.yaml", 0)
    );
    let tls = desired.get(&id("Secret/prod/tls")).expect("tls");
    assert_eq!(tls.origin.document, 1);
    assert_eq!(
        desired
            .get(&id("Queue/jobs"))
            .expect("queue")
            .origin
            .document,
        1
    );
    assert_eq!(
        desired.get(&id("Queue/jobs")).expect("queue").spec,
        serde_json::Value::Null
    );
    let waves: Vec<Vec<String>> = desired
        .waves()
        .map(|w| w.map(|r| r.id.to_string()).collect())
        .collect();
    assert_eq!(
        waves,
        [
            vec!["Database/main", "Queue/jobs", "Secret/prod/tls"],
            vec!["Cache/redis", "ConfigFile/prod/web"]
        ]
    );
}

#[test]
fn include_and_exclude_globs() {
    let doc = |name: &str| format!("kind: A\nmetadata: {{ name: {name} }}\n").into_bytes();
    let (a, b, c) = (doc("a"), doc("b"), doc("c"));
    let snap = snapshot(&[
        ("deploy/a.yaml", &a),
        ("deploy/test/b.yaml", &b),
        ("other/c.yaml", &c),
    ]);
    let render = ManifestRender::new()
        .include(&["deploy/**/*.yaml"])
        .and_then(|r| r.exclude(&["**/test/**"]))
        .expect("valid globs");
    let desired = render.render(&snap).expect("renders");
    assert_eq!(desired.len(), 1);
    assert_eq!(desired.resources()[0].id, id("A/a"));
    let err = ManifestRender::new().include(&["a/{b"]).unwrap_err();
    assert!(matches!(err, RenderError::Config { .. }), "{err}");
}

#[test]
fn parse_errors_name_file_line_and_column() {
    let err = render(&[("bad.yaml", b"kind: A\nmetadata:\n  name: [unclosed\n")]).unwrap_err();
    let RenderError::Parse { path, line, .. } = &err else {
        panic!("expected a parse error, got {err}")
    };
    assert_eq!(path, "bad.yaml");
    assert!(*line >= 3, "{err}");
    assert!(err.to_string().starts_with("bad.yaml:"), "{err}");

    let err = render(&[("bad.json", b"{\n  \"kind\": \"A\",\n  oops\n}")]).unwrap_err();
    assert!(
        matches!(&err, RenderError::Parse { path, line: 3, column: 3, .. } if path == "bad.json"),
        "{err:?}"
    );

    let err = render(&[("bad.toml", b"kind = \"A\"\nmetadata = {\n")]).unwrap_err();
    assert!(
        matches!(&err, RenderError::Parse { path, line: 2, .. } if path == "bad.toml"),
        "{err:?}"
    );
}

#[test]
fn duplicate_yaml_keys_are_refused() {
    let err = render(&[("dup.yaml", b"kind: A\nkind: B\nmetadata: { name: x }\n")]).unwrap_err();
    assert!(
        matches!(&err, RenderError::Parse { line: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().to_lowercase().contains("duplicate"),
        "{err}"
    );
}

#[test]
fn missing_kind_or_name() {
    let err = render(&[("m.yaml", b"metadata: { name: x }\n")]).unwrap_err();
    assert_eq!(err.to_string(), "m.yaml: missing kind");
    let err = render(&[("m.yaml", b"kind: A\n---\nkind: B\nmetadata: {}\n")]).unwrap_err();
    assert_eq!(err.to_string(), "m.yaml: missing metadata.name");
    let err = render(&[(
        "m.yaml",
        b"kind: A\nmetadata: { name: a }\n---\nkind: B\nmetadata: { namespace: x }\n",
    )])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.yaml (document 2): missing metadata.name"
    );
}

#[test]
fn invalid_fields_are_named() {
    let err = render(&[("m.yaml", b"kind: A\nmetadata: { name: x }\nspce: {}\n")]).unwrap_err();
    assert!(
        err.to_string().contains("unknown top-level field \"spce\""),
        "{err}"
    );
    let err = render(&[(
        "m.yaml",
        b"kind: A\nmetadata: { name: x, annotations: { gitops.rs/drift: sometimes } }\n",
    )])
    .unwrap_err();
    assert!(
        err.to_string().contains("gitops.rs/drift: \"sometimes\""),
        "{err}"
    );
    let err = render(&[("m.yaml", b"kind: A/B\nmetadata: { name: x }\n")]).unwrap_err();
    assert!(matches!(err, RenderError::InvalidId { .. }), "{err}");
    let err = render(&[(
        "m.yaml",
        b"kind: A\nmetadata: { name: x, dependsOn: [nokind] }\n",
    )])
    .unwrap_err();
    assert!(err.to_string().contains("metadata.dependsOn[0]"), "{err}");
    let err = render(&[("m.yaml", b"- just\n- a list\n")]).unwrap_err();
    assert!(err.to_string().contains("must be a mapping"), "{err}");
}

#[test]
fn duplicate_id_names_both_origins() {
    let doc = b"kind: A\nmetadata: { name: x }\n";
    let err = render(&[("one.yaml", doc), ("two.yaml", doc)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "duplicate resource A/x: defined in one.yaml and in two.yaml"
    );
}

#[test]
fn unknown_dependency_names_both_ids() {
    let err = render(&[(
        "a.yaml",
        b"kind: A\nmetadata: { name: x, dependsOn: [B/missing] }\n",
    )])
    .unwrap_err();
    assert!(
        matches!(&err, RenderError::UnknownDependency { id: a, dependency: b, .. }
            if a.to_string() == "A/x" && b.to_string() == "B/missing"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "A/x (in a.yaml) depends on B/missing, which is not defined"
    );
}

#[test]
fn cycle_is_listed_in_order() {
    let yaml = b"kind: S\nmetadata: { name: a, dependsOn: [S/b] }\n---\nkind: S\nmetadata: { name: b, dependsOn: [S/c] }\n---\nkind: S\nmetadata: { name: c, dependsOn: [S/a] }\n---\nkind: S\nmetadata: { name: d, dependsOn: [S/a] }\n";
    let err = render(&[("c.yaml", yaml)]).unwrap_err();
    let RenderError::Cycle { cycle } = &err else {
        panic!("expected a cycle, got {err}")
    };
    assert_eq!(cycle, &[id("S/a"), id("S/b"), id("S/c")]);
    assert_eq!(
        err.to_string(),
        "dependency cycle: S/a -> S/b -> S/c -> S/a"
    );
}

#[test]
fn anchor_bomb_is_refused() {
    let mut yaml = String::from(
        "kind: A\nmetadata: { name: x }\nspec:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..=9 {
        let prev = format!("*a{}", i - 1);
        yaml.push_str(&format!(
            "  a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    let err = render(&[("bomb.yaml", yaml.as_bytes())]).unwrap_err();
    assert!(
        matches!(&err, RenderError::Parse { path, .. } if path == "bomb.yaml"),
        "{err:?}"
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let depth = 100_000;
    let yaml = format!(
        "kind: A\nmetadata: {{ name: x }}\nspec: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let err = render(&[("deep.yaml", yaml.as_bytes())]).unwrap_err();
    assert!(
        matches!(&err, RenderError::Parse { path, .. } if path == "deep.yaml"),
        "{err:?}"
    );

    // Block style: "- - - - x" nests one sequence per dash.
    let block = format!("{}x\n", "- ".repeat(depth));
    let err = render(&[("deep-block.yaml", block.as_bytes())]).unwrap_err();
    assert!(matches!(&err, RenderError::Parse { .. }), "{err:?}");

    let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let err = render(&[("deep.json", json.as_bytes())]).unwrap_err();
    assert!(
        matches!(&err, RenderError::Parse { path, .. } if path == "deep.json"),
        "{err:?}"
    );

    let toml = format!(
        "kind = \"A\"\nspec = {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let err = render(&[("deep.toml", toml.as_bytes())]).unwrap_err();
    assert!(
        matches!(&err, RenderError::Parse { path, .. } if path == "deep.toml"),
        "{err:?}"
    );
}

#[test]
fn huge_file_is_refused_before_parsing() {
    let big = vec![b'#'; 50 * 1024 * 1024];
    let err = render(&[("big.yaml", &big)]).unwrap_err();
    assert_eq!(
        err,
        RenderError::TooLarge {
            path: "big.yaml".into(),
            size: 50 * 1024 * 1024,
            limit: 10 * 1024 * 1024
        }
    );
}

#[test]
fn non_utf8_yaml_is_refused() {
    let err = render(&[("latin1.yaml", b"kind: Caf\xe9\nmetadata: { name: x }\n")]).unwrap_err();
    assert_eq!(
        err,
        RenderError::NotUtf8 {
            path: "latin1.yaml".into(),
            offset: 9
        }
    );
}

#[test]
fn files_render_text_binary_and_mode() {
    let mut snap = snapshot(&[
        ("etc/app.conf", b"port = 80\n"),
        ("logo.png", b"\x89PNG\r\n\x1a\n\xff"),
    ]);
    snap.insert("bin/run.sh", &b"#!/bin/sh\n"[..], true)
        .expect("valid path");
    let desired = FilesRender::new().render(&snap).expect("renders");
    let ids: Vec<String> = desired
        .resources()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(
        ids,
        ["File//bin/run.sh", "File//etc/app.conf", "File/logo.png"]
    );
    let run = &desired.resources()[0];
    assert_eq!(run.spec.to_value()["mode"], "0755");
    assert_eq!(run.spec.to_value()["encoding"], "utf-8");
    let logo = &desired.resources()[2];
    assert_eq!(logo.spec.to_value()["encoding"], "base64");
    assert_eq!(logo.spec.to_value()["content"], "iVBORw0KGgr/");
    assert_eq!(logo.spec.to_value()["mode"], "0644");
    assert_eq!(logo.origin.path, "logo.png");

    let only_conf = FilesRender::new()
        .exclude(&["*.png", "bin/**"])
        .expect("globs");
    assert_eq!(only_conf.render(&snap).expect("renders").len(), 1);
}

#[test]
fn many_files_report_the_first_error_in_path_order() {
    let good: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("kind: A\nmetadata: {{ name: n{i} }}\n").into_bytes())
        .collect();
    let mut files: Vec<(String, &[u8])> = good
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("f{i:03}.yaml"), b.as_slice()))
        .collect();
    let desired = render(
        &files
            .iter()
            .map(|(p, b)| (p.as_str(), *b))
            .collect::<Vec<_>>(),
    )
    .expect("all good");
    assert_eq!(desired.len(), 200);
    files[170].1 = b"kind: [";
    files[40].1 = b"metadata: { name: x }\n";
    let err = render(
        &files
            .iter()
            .map(|(p, b)| (p.as_str(), *b))
            .collect::<Vec<_>>(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "f040.yaml: missing kind");
}

#[test]
fn a_name_read_as_a_boolean_or_number_says_why_and_how_to_quote_it() {
    let err = render(&[("a.yaml", b"kind: Row\nmetadata: { name: y }\n")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("a.yaml"), "{text}");
    assert!(
        text.contains("name must be a string, found a boolean"),
        "{text}"
    );
    assert!(
        text.contains("YAML reads a plain y, yes, on or true as a boolean"),
        "{text}"
    );
    assert!(text.contains("e.g. name: \"y\""), "{text}");
    let err = render(&[("b.yaml", b"kind: Row\nmetadata: { name: 0755 }\n")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("as a number): quote it as written"),
        "{err}"
    );
}

#[test]
fn values_yaml_1_1_and_1_2_read_differently_are_warned_in_the_plan() {
    let yaml = b"kind: Row\nmetadata: { name: web }\nspec:\n  enabled: yes\n  mode: 0755\n  quoted: \"on\"\n  plain: on-call\n";
    let desired = render(&[
        ("rows/web.yaml", yaml),
        (
            "c.json",
            br#"{"kind": "Row", "metadata": {"name": "j"}, "spec": {"m": "0755"}}"#,
        ),
    ])
    .expect("renders");
    let warnings: Vec<String> = desired.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        [
            "rows/web.yaml:4: yes is read as the boolean true (YAML 1.1), as the string \"yes\" by YAML 1.2: write true or quote it (\"yes\")",
            "rows/web.yaml:5: 0755 is read as the number 755 (YAML 1.2), as an octal number by YAML 1.1: write 755, or quote it (\"0755\") for a string such as a file mode",
        ]
    );
    // The values are what the parser made of them; the warning is in the plan.
    let web = desired.get(&id("Row/web")).expect("web");
    assert_eq!(web.spec.to_value()["enabled"], true);
    assert_eq!(web.spec.to_value()["mode"].as_f64(), Some(755.0));
    let plan = gitops_core::plan::Planner::new()
        .plan(
            &desired,
            &[None, None],
            &gitops_core::model::Inventory::new(),
        )
        .expect("plans");
    let text = plan.to_string();
    assert!(
        text.starts_with("warning: rows/web.yaml:4: yes is read as the boolean true"),
        "{text}"
    );
    let json = serde_json::to_value(&plan).expect("json");
    assert_eq!(json["warnings"][1]["warning"], "leading_zero");
    assert_eq!(json["warnings"][1]["line"], 5);
}
