//! The HTTP service end to end: the read endpoints, what must trigger
//! nothing, the Host check, the limits and shutdown, against the real
//! service on 127.0.0.1:0 and a real engine.

mod support;

use std::time::{Duration, Instant};

use clap::Parser;
use gitops_agent::AgentArgs;
use gitops_agent::http::{HttpError, HttpOptions};
use serde_json::json;
use support::http::{
    PATIENCE, World, eventually, file_id, now, options, raw, secret, standard, status_of,
};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_always_and_readyz_only_after_the_first_reconcile() {
    let mut w = World::bound(options()).await;
    let health = w.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), "ok\n");
    assert_eq!(w.get("/readyz").await.status(), 503);
    w.run_engine();
    let mut ready = false;
    let start = Instant::now();
    while !ready && start.elapsed() < PATIENCE {
        ready = w.get("/readyz").await.status() == 200;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "/readyz turned 200");
    assert!(w.engine.status().last_applied.is_some());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_drifted_fields_but_never_their_contents() {
    for expose in [false, true] {
        let w = World::started(options().expose_values(expose)).await;
        let drifted = "password = hunter2-from-the-target";
        w.target.edit(
            &file_id(),
            json!({"path": "app.conf", "content": drifted, "encoding": "utf-8", "mode": "0644"}),
        );
        // A webhook also checks the deployed commit for drift.
        let body = "{}";
        let headers = standard(&secret(), "drift", now(), body);
        assert_eq!(w.post("/hooks/generic", &headers, body).await.status(), 202);
        assert!(
            eventually(PATIENCE, || !w.engine.status().drift.is_empty()).await,
            "drift is found"
        );
        let status = w.get("/status").await;
        assert_eq!(status.status(), 200);
        let text = status.text().await.expect("body");
        let view: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let entry = &view["drift"][0];
        assert_eq!(entry["id"], file_id().to_string(), "{text}");
        assert_eq!(entry["fields"][0]["path"], "spec.content", "{text}");
        assert_eq!(text.contains(drifted), expose, "{text}");
        assert_eq!(
            text.contains("v1\\n"),
            expose,
            "the desired content: {text}"
        );
        let history = w.get("/history").await.text().await.expect("body");
        assert!(!history.contains(drifted), "{history}");
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_of_one_app_shows_drifted_paths_never_values() {
    // Even with --expose-values, which only changes the JSON endpoints.
    let w = World::started(options().expose_values(true)).await;
    let drifted = "password = hunter2-from-the-target";
    w.target.edit(
        &file_id(),
        json!({"path": "app.conf", "content": drifted, "encoding": "utf-8", "mode": "0644"}),
    );
    let body = "{}";
    let headers = standard(&secret(), "page-drift", now(), body);
    assert_eq!(w.post("/hooks/generic", &headers, body).await.status(), 202);
    assert!(
        eventually(PATIENCE, || !w.engine.status().drift.is_empty()).await,
        "drift is found"
    );
    let index = w.get("/").await;
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"]
        .to_str()
        .expect("ASCII");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        index.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .starts_with("text/html")
    );
    let html = index.text().await.expect("body");
    assert_eq!(html.matches("<tr id=\"app-").count(), 1, "one row: {html}");
    assert!(html.contains("href=\"/apps/app\""), "{html}");
    let page = w.get("/apps/app").await.text().await.expect("body");
    // The drift may be reverted already (the field paths are checked by
    // the unit tests of the page); values must be absent either way.
    assert!(page.contains("<h2>Drift</h2>"), "{page}");
    for html in [&html, &page] {
        assert!(
            !html.contains("hunter2") && !html.contains("v1\n"),
            "{html}"
        );
    }
    assert_eq!(w.get("/apps/nope").await.status(), 404);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_history_are_json_with_rfc3339_times() {
    let w = World::started(options()).await;
    let status = w.json("/status").await;
    assert_eq!(status["app"], "app");
    assert_eq!(status["last_applied"]["id"], w.first.id.as_str());
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], true);
    let since = status["conditions"][0]["since"].as_str().expect("a time");
    assert!(since.parse::<jiff::Timestamp>().is_ok(), "{since}");

    let history = w.json("/history?limit=5").await;
    let entries = history.as_array().expect("an array");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["revision"]["id"], w.first.id.as_str());
    assert_eq!(entries[0]["result"], "converged");
    for field in ["started_at", "finished_at"] {
        let at = entries[0][field].as_str().expect("a time");
        assert!(at.parse::<jiff::Timestamp>().is_ok(), "{field}: {at}");
    }
    assert_eq!(w.get("/history?limit=many").await.status(), 400);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_speak_openmetrics_and_notifications_are_a_list() {
    let w = World::started(options()).await;
    let metrics = w.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        metrics.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(metrics.text().await.expect("body").ends_with("# EOF\n"));
    assert_eq!(w.json("/notifications").await, json!([]));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_paths_and_silent_connections_trigger_nothing() {
    let w = World::started(options().header_read_timeout(Duration::from_millis(300))).await;
    let (next, polls) = w.pending_commit("v2\n");

    // A connection that sends nothing is closed at the header read timeout.
    let mut silent = TcpStream::connect(w.addr).await.expect("connect");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent connection is closed");

    let client = &w.client;
    let cases = [
        (client.get(w.url("/hooks/github")), 405),
        (client.get(w.url("/retry")), 405),
        (client.put(w.url("/hooks/generic")), 405),
        (client.head(w.url("/status")), 200),
        (client.post(w.url("/status")), 405),
        (client.post(w.url("/anything")), 404),
        (client.post(w.url("/hooks")), 404),
        (client.post(w.url("/hooks/github/")), 404),
    ];
    for (request, expected) in cases {
        let request = request.build().expect("a request");
        let what = format!("{} {}", request.method(), request.url().path());
        let answer = client.execute(request).await.expect("answered");
        assert_eq!(answer.status(), expected, "{what}");
    }
    w.assert_quiet(polls, &next, "other methods and paths")
        .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_host_is_refused_before_anything_runs() {
    let options = options()
        .public_url("https://deploy.example.com")
        .expect("a URL");
    let w = World::started(options).await;
    let (next, polls) = w.pending_commit("v2\n");
    let body = "{}";
    let signed: String = standard(&secret(), "h-1", now(), body)
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    for host in ["evil.example", "evil.example:80", "127.0.0.1:1"] {
        let request = format!(
            "POST /hooks/generic HTTP/1.1\r\nHost: {host}\r\n{signed}Content-Length: 2\r\nConnection: close\r\n\r\n{body}"
        );
        let answer = raw(w.addr, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 421, "{host}: {answer}");
    }
    let no_host = "GET /healthz HTTP/1.0\r\n\r\n";
    assert_eq!(status_of(&raw(w.addr, no_host.as_bytes()).await), 400);
    w.assert_quiet(polls, &next, "requests for other hosts")
        .await;

    let port = w.addr.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "deploy.example.com".into(),
        "DEPLOY.example.com:443".into(),
    ] {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = raw(w.addr, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{host}: {answer}");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_one_mebibyte_is_413_and_triggers_nothing() {
    let w = World::started(options()).await;
    let (next, polls) = w.pending_commit("v2\n");
    let body = "x".repeat(1024 * 1024 + 1);
    let headers = standard(&secret(), "big", now(), &body);
    let mut request = w.client.post(w.url("/hooks/generic")).body(body);
    for (name, value) in &headers {
        request = request.header(*name, value);
    }
    // The server answers 413 as soon as it reads Content-Length and closes
    // the connection: the client sees the 413, or (when it was still
    // writing the body) a broken pipe. Either way it was refused unread.
    match request.send().await {
        Ok(answer) => assert_eq!(answer.status(), 413),
        Err(e) => assert!(
            e.is_request() && format!("{e:?}").contains("BodyWrite"),
            "neither a 413 nor a refused body: {e:?}"
        ),
    }
    // Announced too large, nothing sent: refused without waiting for it.
    let request = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        w.addr,
        2 * 1024 * 1024
    );
    assert_eq!(status_of(&raw(w.addr, request.as_bytes()).await), 413);
    w.assert_quiet(polls, &next, "oversized bodies").await;
    // Exactly the limit is read (and here refused for its signature only).
    let body = "x".repeat(1024 * 1024);
    let answer = w.post("/hooks/generic", &[], body).await;
    assert_eq!(answer.status(), 401);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_is_cut_off_with_408() {
    let w = World::started(options().request_timeout(Duration::from_millis(300))).await;
    let (next, polls) = w.pending_commit("v2\n");
    let request = format!(
        "POST /hooks/generic HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n{{",
        w.addr
    );
    let answer = raw(w.addr, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    w.assert_quiet(polls, &next, "a slow body").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let options = options()
        .max_connections(1)
        .header_read_timeout(Duration::from_secs(1));
    let w = World::started(options).await;
    // Let the reqwest connection used to start the world go; then hold the only slot.
    let _idle = TcpStream::connect(w.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let answer = client.get(w.url("/healthz")).send().await.expect("served");
    assert_eq!(answer.status(), 200);
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "served after {:?}, before the silent connection's timeout freed the slot",
        start.elapsed()
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_returns() {
    let mut w = World::started(options()).await;
    assert_eq!(w.get("/healthz").await.status(), 200);
    tokio::time::timeout(PATIENCE, w.stop_http())
        .await
        .expect("Server::run returns after shutdown");
    assert!(
        TcpStream::connect(w.addr).await.is_err(),
        "no longer accepting"
    );
    w.stop().await;
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
}

#[test]
fn a_non_loopback_listen_without_a_secret_is_refused() {
    let args = |extra: &[&str]| {
        let base = ["agent", "--repo", "/srv/repo"];
        Cli::try_parse_from(base.iter().chain(extra))
            .expect("valid flags")
            .agent
    };
    let refused = HttpOptions::from_args(&args(&["--listen", "0.0.0.0:8080"]));
    assert!(matches!(refused, Err(HttpError::SecretRequired { .. })));
    let refused = HttpOptions::from_args(&args(&["--listen", "[::]:8080"]));
    assert!(matches!(refused, Err(HttpError::SecretRequired { .. })));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret");
    std::fs::write(&file, "s3cret\n").expect("write");
    let file = file.to_str().expect("utf-8");
    let flags = ["--listen", "0.0.0.0:8080", "--webhook-secret-file", file];
    let options = HttpOptions::from_args(&args(&flags)).expect("accepted");
    assert!(options.expect("some").secret.is_some());
    let loopback = HttpOptions::from_args(&args(&["--listen", "127.0.0.1:8080"]));
    assert!(loopback.expect("accepted").expect("some").secret.is_none());
}
