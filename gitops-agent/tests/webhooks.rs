//! The webhook endpoints end to end: real signed requests against the real
//! service and engine (poll interval one hour, so only a webhook deploys a
//! new commit in time).

mod support;

/// A path, its headers and its body.
type Case = (&'static str, Vec<(&'static str, String)>, String);

use gitops_core::ConditionKind;
use gitops_core::record::Trigger;
use support::http::{
    JsonBody as _, PATIENCE, World, eventually, file_id, github, gitlab, now, options, push,
    secret, standard, wrong_secret,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_push_to_the_tracked_branch_deploys_at_once() {
    let w = World::started(options()).await;
    let (next, _) = w.pending_commit("v2\n");
    let body = push("refs/heads/main");
    let answer = w
        .post(
            "/hooks/github",
            &github(&secret(), "push", "d-1", &body),
            body,
        )
        .await;
    assert_eq!(answer.status(), 202);
    assert!(w.deployed(&next).await, "the pushed commit is deployed");
    assert_eq!(
        w.target.get(&file_id()).expect("deployed")["content"],
        "v2\n"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_push_with_the_token_deploys_at_once() {
    let w = World::started(options()).await;
    let (next, _) = w.pending_commit("v2\n");
    let token = String::from_utf8(support::http::SECRET.to_vec()).expect("utf-8");
    let answer = w
        .post(
            "/hooks/gitlab",
            &gitlab(&token, "Push Hook"),
            push("refs/heads/main"),
        )
        .await;
    assert_eq!(answer.status(), 202);
    assert!(w.deployed(&next).await);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_standard_webhook_deploys_at_once() {
    let w = World::started(options()).await;
    let (next, _) = w.pending_commit("v2\n");
    let body = r#"{"type":"push"}"#;
    let answer = w
        .post(
            "/hooks/generic",
            &standard(&secret(), "msg_1", now(), body),
            body,
        )
        .await;
    assert_eq!(answer.status(), 202);
    assert!(w.deployed(&next).await);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_wrongly_signed_webhooks_are_401_and_trigger_nothing() {
    let w = World::started(options()).await;
    let (next, polls) = w.pending_commit("v2\n");
    let body = push("refs/heads/main");
    let generic = r#"{"type":"push"}"#;
    let cases: Vec<Case> = vec![
        (
            "/hooks/github",
            vec![("x-github-event", "push".into())],
            body.clone(),
        ),
        (
            "/hooks/github",
            github(&wrong_secret(), "push", "d-1", &body),
            body.clone(),
        ),
        (
            "/hooks/github",
            // Signed, then the body changed on the way.
            github(&secret(), "push", "d-2", &push("refs/heads/other")),
            body.clone(),
        ),
        (
            "/hooks/gitlab",
            vec![("x-gitlab-event", "Push Hook".into())],
            body.clone(),
        ),
        (
            "/hooks/gitlab",
            gitlab("not-the-secret", "Push Hook"),
            body.clone(),
        ),
        (
            "/hooks/generic",
            vec![("webhook-id", "m-1".into())],
            generic.into(),
        ),
        (
            "/hooks/generic",
            standard(&wrong_secret(), "m-2", now(), generic),
            generic.into(),
        ),
    ];
    for (path, headers, body) in cases {
        let answer = w.post(path, &headers, body).await;
        assert_eq!(answer.status(), 401, "{path} {headers:?}");
        let json = answer.json_value().await;
        assert_eq!(json["result"], "unauthorized");
    }
    w.assert_quiet(polls, &next, "unauthenticated webhooks")
        .await;
    // The control: a signed one does deploy it.
    let answer = w
        .post(
            "/hooks/generic",
            &standard(&secret(), "m-3", now(), generic),
            generic,
        )
        .await;
    assert_eq!(answer.status(), 202);
    assert!(w.deployed(&next).await);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_every_webhook_is_refused() {
    let mut options = options();
    options.secret = None;
    let w = World::started(options).await;
    let (next, polls) = w.pending_commit("v2\n");
    let body = push("refs/heads/main");
    let answer = w
        .post(
            "/hooks/github",
            &github(&secret(), "push", "d-1", &body),
            body,
        )
        .await;
    assert_eq!(answer.status(), 401);
    let answer = w
        .post("/retry", &github(&secret(), "push", "d-2", "{}"), "{}")
        .await;
    assert_eq!(answer.status(), 401);
    w.assert_quiet(polls, &next, "no secret configured").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_ping_is_answered_without_a_reconcile() {
    let w = World::started(options()).await;
    let (next, polls) = w.pending_commit("v2\n");
    let body = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let answer = w
        .post(
            "/hooks/github",
            &github(&secret(), "ping", "p-1", body),
            body,
        )
        .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json_value().await["result"], "ignored");
    w.assert_quiet(polls, &next, "ping").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_other_refs_are_acknowledged_and_ignored() {
    let w = World::started(options()).await;
    let (next, polls) = w.pending_commit("v2\n");
    let token = String::from_utf8(support::http::SECRET.to_vec()).expect("utf-8");
    for (n, reference) in ["refs/heads/dev", "refs/tags/v1.0.0", "refs/heads/main2"]
        .into_iter()
        .enumerate()
    {
        let body = push(reference);
        let delivery = format!("o-{n}");
        let answer = w
            .post(
                "/hooks/github",
                &github(&secret(), "push", &delivery, &body),
                body.clone(),
            )
            .await;
        assert_eq!(answer.status(), 200, "{reference}");
        assert_eq!(answer.json_value().await["result"], "ignored");
        let answer = w
            .post("/hooks/gitlab", &gitlab(&token, "Push Hook"), body)
            .await;
        assert_eq!(answer.status(), 200, "{reference}");
    }
    w.assert_quiet(polls, &next, "pushes to other refs").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_github_delivery_is_ignored() {
    let w = World::started(options()).await;
    let (second, _) = w.pending_commit("v2\n");
    let body = push("refs/heads/main");
    let headers = github(&secret(), "push", "delivery-1", &body);
    let answer = w.post("/hooks/github", &headers, body.clone()).await;
    assert_eq!(answer.status(), 202);
    assert!(w.deployed(&second).await);
    let (third, polls) = w.pending_commit("v3\n");
    // The same request again, byte for byte: a valid signature, a used id.
    let answer = w.post("/hooks/github", &headers, body.clone()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json_value().await["result"], "ignored");
    w.assert_quiet(polls, &third, "a replayed delivery").await;
    let fresh = github(&secret(), "push", "delivery-2", &body);
    assert_eq!(w.post("/hooks/github", &fresh, body).await.status(), 202);
    assert!(w.deployed(&third).await);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_standard_webhook_id_is_ignored() {
    let w = World::started(options()).await;
    let (second, _) = w.pending_commit("v2\n");
    let body = r#"{"type":"push"}"#;
    let headers = standard(&secret(), "msg_once", now(), body);
    assert_eq!(w.post("/hooks/generic", &headers, body).await.status(), 202);
    assert!(w.deployed(&second).await);
    let (third, polls) = w.pending_commit("v3\n");
    let answer = w.post("/hooks/generic", &headers, body).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json_value().await["result"], "ignored");
    // A new signature over the same id is still the same message.
    let resigned = standard(&secret(), "msg_once", now() + 1, body);
    assert_eq!(
        w.post("/hooks/generic", &resigned, body).await.status(),
        200
    );
    w.assert_quiet(polls, &third, "a replayed webhook-id").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_webhook_timestamp_is_refused() {
    let w = World::started(options()).await;
    let (next, polls) = w.pending_commit("v2\n");
    let body = r#"{"type":"push"}"#;
    for (id, timestamp) in [("old", now() - 600), ("future", now() + 600)] {
        let headers = standard(&secret(), id, timestamp, body);
        let answer = w.post("/hooks/generic", &headers, body).await;
        assert_eq!(answer.status(), 401, "{id}");
    }
    w.assert_quiet(polls, &next, "stale timestamps").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_needs_a_signature_and_lifts_a_stall_that_a_webhook_does_not() {
    let mut w = World::bound(options()).await;
    // The first apply fails for good: the engine stalls on the first commit.
    w.target.fail_next(&file_id(), 1, false);
    w.run_engine();
    assert!(
        eventually(PATIENCE, || w.is(ConditionKind::Stalled)).await,
        "{}",
        w.engine.status()
    );
    let history = || async { w.engine.history(10).await.expect("history") };
    assert_eq!(history().await.len(), 1);

    for headers in [vec![], gitlab("not-the-secret", "Push Hook")] {
        let answer = w.post("/retry", &headers, "").await;
        assert_eq!(answer.status(), 401);
    }
    // A webhook polls, but does not lift the stall of the same commit.
    let polls = w.source.polls();
    let body = r#"{"type":"push"}"#;
    let answer = w
        .post(
            "/hooks/generic",
            &standard(&secret(), "m-1", now(), body),
            body,
        )
        .await;
    assert_eq!(answer.status(), 202);
    assert!(eventually(PATIENCE, || w.source.polls() > polls).await);
    tokio::time::sleep(support::http::QUIET).await;
    assert!(w.is(ConditionKind::Stalled), "{}", w.engine.status());
    assert_eq!(
        history().await.len(),
        1,
        "neither 401 nor a webhook retried"
    );
    assert!(w.target.get(&file_id()).is_none());

    let answer = w
        .post("/retry", &github(&secret(), "retry", "r-1", "{}"), "{}")
        .await;
    assert_eq!(answer.status(), 202);
    let first = w.first.clone();
    assert!(w.deployed(&first).await, "{}", w.engine.status());
    assert!(!w.is(ConditionKind::Stalled));
    let newest = history().await;
    assert_eq!(newest[0].trigger, Trigger::Retry);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_accepts_each_signature_scheme() {
    let w = World::started(options()).await;
    let token = String::from_utf8(support::http::SECRET.to_vec()).expect("utf-8");
    let schemes = [
        standard(&secret(), "r-1", now(), ""),
        github(&secret(), "retry", "r-2", ""),
        gitlab(&token, "retry"),
    ];
    for (n, headers) in schemes.into_iter().enumerate() {
        let before = w.engine.history(100).await.expect("history").len();
        let answer = w.post("/retry", &headers, "").await;
        assert_eq!(answer.status(), 202, "scheme {n}");
        let engine = w.engine.clone();
        let retried = async {
            for _ in 0..500 {
                let entries = engine.history(100).await.expect("history");
                if entries.len() > before && entries[0].trigger == Trigger::Retry {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            false
        };
        assert!(retried.await, "scheme {n} retried");
    }
    w.stop().await;
}

/// A revision that would delete most of what the agent manages waits; an
/// authenticated `POST /confirm` naming it in the signed body lets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_lets_a_held_revision_through_only_when_signed_and_consistent() {
    let w = World::started(options()).await;
    let many: Vec<(String, String)> = (0..20).map(|i| (format!("f{i}"), "x\n".into())).collect();
    let full = w.source.commit(many);
    w.engine.handle().reconcile_now();
    assert!(w.deployed(&full).await);
    let held = w.source.commit([("f0", "x\n")]);
    w.engine.handle().reconcile_now();
    let waiting = || {
        w.engine.status().conditions.iter().any(|c| {
            c.kind == ConditionKind::Stalled
                && c.status
                && c.reason == gitops_core::status::Reason::ConfirmationRequired
        })
    };
    assert!(eventually(PATIENCE, waiting).await, "{}", w.engine.status());

    let body = format!(r#"{{"revision":"{}"}}"#, held.id);
    let unsigned = w
        .post(
            &format!("/confirm?revision={}", held.id),
            &[],
            body.as_str(),
        )
        .await;
    assert_eq!(unsigned.status(), 401);
    let other = w
        .post(
            &format!("/confirm?revision={}", full.id),
            &standard(&secret(), "c-1", now(), &body),
            body.as_str(),
        )
        .await;
    assert_eq!(other.status(), 400, "the query names another revision");
    tokio::time::sleep(support::http::QUIET).await;
    assert_eq!(w.target.contents().len(), 20, "nothing deleted yet");

    let answer = w
        .post(
            &format!("/confirm?revision={}", held.id),
            &standard(&secret(), "c-2", now(), &body),
            body.as_str(),
        )
        .await;
    assert_eq!(answer.status(), 202);
    assert!(w.deployed(&held).await, "{}", w.engine.status());
    assert_eq!(w.target.contents().len(), 1);
    w.stop().await;
}
