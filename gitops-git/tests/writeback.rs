//! `GitWriteback` against real repositories: a local path (compare-and-swap
//! of the ref) and `git http-backend` behind a local HTTP server (`git push`).

mod support;

use std::sync::Arc;

use gitops_core::testing::MemoryTarget;
use gitops_core::{Cancel, Engine, FilesRender, Source, WritebackError};
use gitops_git::{AllowedSigners, GitSource, GitWriteback, Identity, ReferencePolicy, VerifyMode};
use serde_json::json;
use support::writeback::{APP, Repo, drifted, fixture, other, write};
use support::{Logs, git, ssh_keygen};

#[test]
fn a_drifted_file_is_written_back_to_a_local_repository_and_visible_in_a_fresh_clone() {
    let fx = fixture(&[
        ("etc/app.conf", "port = 80\n"),
        ("etc/other.conf", "x = 1\n"),
    ]);
    let repo = Repo::local(fx, "local")
        .render(FilesRender::new())
        .writeback(|b| b.author(Identity::new("Ops Bot", "ops@example.com")))
        .build();
    repo.rt.block_on(async {
        let (deployed, d) = repo
            .poll_with_drift(
                "File//etc/app.conf",
                json!({"path": "etc/app.conf", "content": "port = 8080\n", "encoding": "utf-8", "mode": "0755"}),
            )
            .await;
        let written = repo.commit(&deployed, &[d]).await;
        assert!(written.is_release);
        assert_eq!(written.published_to, "refs/heads/main");
        assert_eq!(repo.remote_head("main"), written.revision.id);
        assert_eq!(
            repo.parent(&written.revision.id),
            deployed.id,
            "the deployed revision is the parent"
        );
        let message = git(&repo.fx.remote, &["log", "-1", "--format=%an <%ae>%n%B", "main"]);
        assert!(message.starts_with("Ops Bot <ops@example.com>"), "{message}");
        assert!(message.contains("shop"), "{message}");
        assert!(message.contains("File//etc/app.conf"), "{message}");
        assert!(message.contains(&deployed.id), "{message}");
        // The engine's next poll sees its own commit.
        assert_eq!(repo.poll().await.id, written.revision.id);
    });
    assert_eq!(repo.clone_file("main", "etc/app.conf"), "port = 8080\n");
    assert_eq!(repo.clone_file("main", "etc/other.conf"), "x = 1\n");
    let mode = git(&repo.fx.remote, &["ls-tree", "main", "etc/app.conf"]);
    assert!(mode.starts_with("100755"), "mode written back: {mode}");
}

#[test]
fn only_the_drifted_document_of_a_multi_document_yaml_changes_over_http() {
    let repo = Repo::http(fixture(&[("deploy/app.yaml", APP)]), "http")
        .source(|b| b.path("deploy"))
        .build();
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        let written = repo.commit(&deployed, &[d]).await;
        assert_eq!(repo.remote_head("main"), written.revision.id);
        // Deploying the commit renders exactly the target's state.
        let next = repo.poll().await;
        assert_eq!(next.id, written.revision.id);
        let snapshot = repo
            .src
            .snapshot(&next, &Cancel::new())
            .await
            .expect("snapshot");
        let desired = repo.render.render(&snapshot).expect("render");
        assert_eq!(desired.resources().len(), 3);
        let web = desired
            .resources()
            .iter()
            .find(|r| r.id.to_string() == "App/web")
            .expect("web");
        assert_eq!(web.spec, json!({"replicas": 5}));
        assert_eq!(web.policy.drift, gitops_core::DriftPolicy::Writeback);
    });
    let text = repo.clone_file("main", "deploy/app.yaml");
    let rest = &APP[APP.find("---\n# the database").expect("second document")..];
    assert!(
        text.ends_with(rest),
        "the other documents are byte-identical:\n{text}"
    );
    assert!(
        text.starts_with("# web tier: scaled by hand in emergencies\n"),
        "{text}"
    );
    assert!(text.contains("replicas: 5"), "{text}");
    assert_eq!(text.matches("---\n").count(), 2, "{text}");
}

#[test]
fn an_upstream_change_to_the_same_file_is_a_conflict_and_nothing_is_overwritten() {
    let repo = Repo::http(fixture(&[("app.yaml", APP)]), "conflict").build();
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        // Someone else edits the same file (another document) and pushes first.
        let upstream = repo.fx.commit(
            &[("app.yaml", &APP.replace("memory: 64", "memory: 128"))],
            "bigger cache",
        );
        repo.fx.push();
        let err = repo.write(&deployed, &[d]).await.expect_err("a conflict");
        match &err {
            WritebackError::Conflict { path, message } => {
                assert_eq!(path, "app.yaml");
                assert!(message.contains("nothing was overwritten"), "{message}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(repo.remote_head("main"), upstream, "upstream kept");
    });
}

#[test]
fn an_upstream_change_to_another_file_is_rebased_and_pushed() {
    let fx = fixture(&[("app.yaml", APP), ("other.yaml", &other(1))]);
    let repo = Repo::http(fx, "rebase").build();
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        let upstream = repo.fx.commit(&[("other.yaml", &other(2))], "other v2");
        repo.fx.push();
        let written = repo.commit(&deployed, &[d]).await;
        assert_eq!(repo.remote_head("main"), written.revision.id);
        assert_eq!(
            repo.parent(&written.revision.id),
            upstream,
            "rebuilt on the new head"
        );
    });
    assert!(repo.clone_file("main", "app.yaml").contains("replicas: 5"));
    assert!(repo.clone_file("main", "other.yaml").contains("v: 2"));
}

#[test]
fn a_push_rejected_by_the_server_is_a_clear_transient_error_and_is_retried() {
    let repo = Repo::http(fixture(&[("app.yaml", APP)]), "rejected").build();
    // The server refuses pushes while the marker exists.
    let marker = repo.fx.dir.path().join("frozen");
    std::fs::write(&marker, "").expect("marker");
    let hook = repo.fx.remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'main is frozen for the release' >&2; exit 1; fi\n",
            marker.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        let err = repo
            .write(&deployed, std::slice::from_ref(&d))
            .await
            .expect_err("refused");
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains("refused"), "{text}");
        assert!(text.contains("pre-receive hook declined"), "{text}");
        assert_eq!(repo.remote_head("main"), deployed.id, "nothing pushed");
        std::fs::remove_file(&marker).expect("unfreeze");
        let written = repo.commit(&deployed, &[d]).await;
        assert_eq!(repo.remote_head("main"), written.revision.id);
    });
}

#[test]
fn credentials_never_appear_in_errors_debug_output_or_logs() {
    const SECRET: &str = "pa55-w0rd-never-shown";
    let logs = Logs::capture();
    let repo = Repo::http(fixture(&[("app.yaml", APP)]), "auth")
        .credentials("deployer", SECRET)
        .build();
    assert!(!format!("{:?}", repo.writeback).contains(SECRET));
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        let written = repo.commit(&deployed, std::slice::from_ref(&d)).await;
        assert_eq!(repo.remote_head("main"), written.revision.id);

        // The same write-back with a wrong secret in the URL: refused, not printed.
        let wrong = format!("wrong-{SECRET}");
        let bad_src = GitSource::builder(
            format!("http://deployer:{wrong}@127.0.0.1:{}/repo.git", repo.port()),
            ReferencePolicy::branch("main"),
        )
        .cache_dir(repo.fx.cache("auth"))
        .allow_insecure_http_credentials(true)
        .build()
        .expect("source");
        let bad = GitWriteback::builder(&bad_src, repo.render.clone())
            .build()
            .expect("writeback");
        let d2 = repo
            .drifted(&written.revision, "App/web", json!({"replicas": 6}))
            .await;
        let err = write(&bad, &written.revision, &[d2])
            .await
            .expect_err("refused");
        let text = format!("{err} {err:?}");
        assert!(!text.contains(&wrong), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(
            !err.is_transient(),
            "authentication is not transient: {text}"
        );
    });
    let logs = logs.text();
    assert!(
        logs.contains("drift written back"),
        "the logs were captured"
    );
    assert!(!logs.contains(SECRET), "a secret in the logs:\n{logs}");
}

#[test]
fn a_local_repository_is_updated_by_compare_and_swap_and_rebased_or_refused() {
    let fx = fixture(&[("app.yaml", APP), ("other.yaml", &other(1))]);
    let repo = Repo::local(fx, "local-cas").build();
    let fx = &repo.fx;
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        // Another file moves upstream: rebuilt on it.
        let upstream = fx.commit(&[("other.yaml", &other(2))], "other v2");
        fx.push();
        let written = repo.commit(&deployed, std::slice::from_ref(&d)).await;
        assert_eq!(repo.remote_head("main"), written.revision.id);
        assert_eq!(repo.parent(&written.revision.id), upstream);
        // The same file moves upstream: refused, nothing overwritten.
        let (deployed, d) = repo.web_drift(6).await;
        assert_eq!(deployed.id, written.revision.id);
        git(
            &fx.work,
            &["pull", "-q", fx.remote.to_str().expect("utf8"), "main"],
        );
        let upstream = fx.commit(
            &[("app.yaml", &APP.replace("replicas: 2", "replicas: 3"))],
            "web 3",
        );
        fx.push();
        let err = repo.write(&deployed, &[d]).await.expect_err("conflict");
        assert!(
            matches!(err, WritebackError::Conflict { ref path, .. } if path == "app.yaml"),
            "{err:?}"
        );
        assert_eq!(repo.remote_head("main"), upstream);
    });
}

#[test]
fn a_review_branch_gets_the_commit_and_the_release_branch_stays() {
    let repo = Repo::http(fixture(&[("app.yaml", APP)]), "review")
        .writeback(|b| b.review_branch("gitops/shop"))
        .build();
    repo.rt.block_on(async {
        let deployed = repo.poll().await;
        for replicas in [5, 6] {
            let d = repo
                .drifted(&deployed, "App/web", json!({ "replicas": replicas }))
                .await;
            let written = repo.commit(&deployed, &[d]).await;
            assert!(!written.is_release);
            assert_eq!(written.published_to, "refs/heads/gitops/shop");
            assert_eq!(repo.remote_head("gitops/shop"), written.revision.id);
            assert_eq!(
                git(&repo.fx.remote, &["rev-parse", "gitops/shop^"]),
                deployed.id,
                "one commit on top of the deployed revision, replaced each time"
            );
        }
        assert_eq!(
            repo.remote_head("main"),
            deployed.id,
            "release branch untouched"
        );
    });
    assert!(
        repo.clone_file("gitops/shop", "app.yaml")
            .contains("replicas: 6")
    );
}

#[test]
fn signed_write_back_commits_pass_the_sources_verification() {
    let fx = support::Fixture::new();
    let (key, public) = ssh_keygen(fx.dir.path(), "engine");
    support::use_signing_key(&fx.work, &key);
    std::fs::write(fx.work.join("app.yaml"), APP).expect("write");
    git(&fx.work, &["add", "-A"]);
    git(&fx.work, &["commit", "-q", "-S", "-m", "signed initial"]);
    let signers =
        AllowedSigners::parse(&format!("engine@example.com {public}\n")).expect("signers");
    let signing_key = key.clone();
    let repo = Repo::local(fx, "signed")
        .source(|b| b.verify(VerifyMode::Head, signers))
        .writeback(move |b| b.signing_key(&signing_key))
        .build();
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        let written = repo.commit(&deployed, &[d]).await;
        let next = repo.src.poll().await.expect("the signed commit verifies");
        assert_eq!(next.id, written.revision.id);
        repo.src
            .snapshot(&next, &Cancel::new())
            .await
            .expect("snapshot verifies too");
    });
    let fx = &repo.fx;
    let verified = std::process::Command::new("git")
        .current_dir(&fx.remote)
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!("gpg.ssh.allowedSignersFile={}", {
            let path = fx.dir.path().join("allowed");
            std::fs::write(&path, format!("engine@example.com {public}\n")).expect("write");
            path.display().to_string()
        }))
        .args(["verify-commit", "main"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git verify-commit");
    assert!(
        verified.status.success(),
        "git itself verifies the signature: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

#[test]
fn the_engine_writes_back_then_deploys_its_own_commit_as_a_no_op() {
    let repo = Repo::http(fixture(&[("app.yaml", APP)]), "engine").build();
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .source(Arc::new(repo.src.clone()))
        .render(repo.render.clone())
        .target(target.clone())
        .writeback(Arc::new(repo.writeback.clone()))
        .name("shop")
        .build()
        .expect("engine");
    let web: gitops_core::ResourceId = "App/web".parse().expect("id");
    repo.rt.block_on(async {
        assert!(engine.sync_once().await.expect("first sync").converged());
        target.edit(&web, json!({"replicas": 9}));
        let report = engine.sync_once().await.expect("drift sync");
        let written = report.written_back.clone().expect("written back");
        assert_eq!(repo.remote_head("main"), written.id);
        target.clear_calls();
        let report = engine.sync_once().await.expect("deploys the commit");
        assert_eq!(report.revision.id, written.id);
        assert!(!report.plan.has_changes(), "{report}");
        assert!(report.converged());
        assert_eq!(target.get(&web), Some(json!({"replicas": 9})));
        assert!(engine.status().drift.is_empty());
        let audit = engine
            .audit(&gitops_core::AuditQuery::default())
            .await
            .expect("audit");
        assert!(
            audit
                .iter()
                .any(|r| r.action == gitops_core::store::AuditAction::Writeback
                    && r.detail.as_deref().is_some_and(|d| d.contains(&written.id))),
            "{audit:?}"
        );
    });
    assert!(repo.clone_file("main", "app.yaml").contains("replicas: 9"));
}

#[test]
fn the_same_write_back_asked_twice_is_not_a_conflict_with_its_own_commit() {
    // The trait requires idempotence: the engine may ask again (a restart, a
    // push whose answer was lost) before it deploys its own commit.
    let repo = Repo::local(fixture(&[("app.yaml", APP)]), "twice").build();
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        let written = repo.commit(&deployed, std::slice::from_ref(&d)).await;
        let again = repo
            .write(&deployed, &[d])
            .await
            .expect("asking again is not a conflict: Git already holds the change");
        assert!(again.is_none(), "nothing more to write: {again:?}");
        assert_eq!(repo.remote_head("main"), written.revision.id);
    });
}

#[test]
fn an_upstream_commit_that_already_records_the_drift_is_not_a_conflict() {
    let repo = Repo::local(fixture(&[("etc/app.conf", "port = 80\n")]), "same-upstream")
        .render(FilesRender::new())
        .build();
    repo.rt.block_on(async {
        let (deployed, d) = repo
            .poll_with_drift(
                "File//etc/app.conf",
                json!({"path": "etc/app.conf", "content": "port = 8080\n", "encoding": "utf-8", "mode": "0644"}),
            )
            .await;
        // The operator who made the hotfix also committed it.
        let upstream = repo
            .fx
            .commit(&[("etc/app.conf", "port = 8080\n")], "hotfix");
        repo.fx.push();
        let outcome = repo
            .write(&deployed, &[d])
            .await
            .expect("not a conflict: upstream holds what the target holds");
        assert!(outcome.is_none(), "{outcome:?}");
        assert_eq!(repo.remote_head("main"), upstream);
    });
}

#[test]
fn placeholders_in_resource_names_are_not_expanded_in_the_commit_message() {
    let manifest = "kind: App\nmetadata: { name: \"{previous}-{time}\" }\nspec: { a: 1 }\n";
    let repo = Repo::local(fixture(&[("app.yaml", manifest)]), "placeholders")
        .writeback(|b| b.message_template("{engine} wrote back:\n{resources}\n"))
        .build();
    repo.rt.block_on(async {
        let (deployed, d) = repo
            .poll_with_drift("App/{previous}-{time}", json!({"a": 2}))
            .await;
        repo.commit(&deployed, &[d]).await;
    });
    let message = git(&repo.fx.remote, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(
        message,
        "shop wrote back:\n- App/{previous}-{time} (app.yaml, changed in the target)"
    );
}

#[test]
fn the_commit_message_names_files_by_their_path_in_the_repository() {
    let repo = Repo::local(fixture(&[("deploy/app.yaml", APP)]), "subdir-message")
        .source(|b| b.path("deploy"))
        .writeback(|b| b.message_template("{resources}"))
        .build();
    repo.rt.block_on(async {
        let (deployed, web) = repo.web_drift(5).await;
        let db = drifted(&repo.src, &*repo.render, &deployed, "App/db", None).await;
        repo.commit(&deployed, &[web, db]).await;
    });
    let message = git(&repo.fx.remote, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(
        message,
        "- App/web (deploy/app.yaml, changed in the target)\n\
         - App/db (deploy/app.yaml (document 2), deleted in the target)"
    );
}

#[test]
fn a_write_back_of_what_git_already_holds_makes_no_commit() {
    // A target may report drift in something a manifest cannot hold; the
    // observed spec then equals Git's, and rewriting the document would only
    // drop its comments and formatting.
    let repo = Repo::local(fixture(&[("app.yaml", APP)]), "same-spec").build();
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(2).await;
        let outcome = repo.write(&deployed, &[d]).await.expect("write-back");
        assert!(outcome.is_none(), "no commit: {outcome:?}");
        assert_eq!(repo.remote_head("main"), deployed.id);
    });
    assert_eq!(repo.clone_file("main", "app.yaml"), APP);
}

/// A source that is someone's checkout (a non-bare repository with `main`
/// checked out): moving `main` under its files is refused, as `git push`
/// refuses it; a review branch is fine.
#[test]
fn the_checked_out_branch_of_a_work_tree_is_never_moved() {
    let repo = Repo::checkout(fixture(&[("app.yaml", APP)]), "checkout").build();
    let review = GitWriteback::builder(&repo.src, repo.render.clone())
        .review_branch("gitops/shop")
        .build()
        .expect("writeback to a review branch");
    let fx = &repo.fx;
    repo.rt.block_on(async {
        let (deployed, d) = repo.web_drift(5).await;
        let err = repo
            .write(&deployed, std::slice::from_ref(&d))
            .await
            .expect_err("main is checked out");
        let text = err.to_string();
        assert!(
            text.contains("refusing to move refs/heads/main: it is checked out in"),
            "{text}"
        );
        assert!(!err.is_transient(), "{text}");
        assert_eq!(fx.head(), deployed.id, "main did not move");
        assert_eq!(
            git(&fx.work, &["status", "--porcelain"]),
            "",
            "the work tree still matches its branch"
        );

        let written = write(&review, &deployed, &[d])
            .await
            .expect("pushed")
            .expect("a commit");
        assert_eq!(written.published_to, "refs/heads/gitops/shop");
        assert_eq!(
            git(&fx.work, &["rev-parse", "gitops/shop"]),
            written.revision.id
        );
    });
}
