//! Unit tests of the pure rendering of the status page.

use gitops_core::diff::FieldChange;
use gitops_core::status::{DriftEntry, Reason};
use gitops_core::{Diff, DriftPolicy, Revision, Status};
use serde_json::json;

use super::*;

const HOSTILE: &str = "<script>alert(1)</script>";

fn revision(message: &str, author: &str) -> Revision {
    let mut r = Revision::new("main", "0123456789abcdef".repeat(2) + "01234567");
    r.message = format!("{message}\n\nbody line");
    r.author = author.to_owned();
    r
}

fn row(name: &str, status: Status) -> Row {
    Row {
        status: StatusView::new(name, status, false),
        last: None,
    }
}

#[test]
fn escapes_the_five_characters() {
    assert_eq!(
        Esc(r#"a&b<c>d"e'f"#).to_string(),
        "a&amp;b&lt;c&gt;d&quot;e&#39;f"
    );
    assert_eq!(Esc("plain ü").to_string(), "plain ü");
    assert_eq!(Esc("").to_string(), "");
}

#[test]
fn path_segments_are_percent_encoded() {
    assert_eq!(segment("db-1.x_y~"), "db-1.x_y~");
    assert_eq!(segment("a/b c\"<"), "a%2Fb%20c%22%3C");
    assert_eq!(segment("ü"), "%C3%BC");
}

#[test]
fn a_hostile_commit_subject_and_author_are_text() {
    let mut status = Status {
        last_applied: Some(revision(HOSTILE, "<img src=x onerror=alert(2)>")),
        ..Status::default()
    };
    status.set(
        ConditionKind::Ready,
        true,
        Reason::ReconciliationSucceeded,
        "ok",
    );
    let html = index(&[row("web", status)]);
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("body line"), "only the subject: {html}");
    assert!(
        html.contains("<code>0123456789ab</code>"),
        "short revision: {html}"
    );
    assert!(html.contains("<strong>Ready</strong>"), "{html}");
    assert!(!html.contains("<script"), "no script at all: {html}");
    assert!(html.contains("name=\"viewport\""), "{html}");
}

#[test]
fn a_failing_app_shows_its_state_and_reason() {
    let mut status = Status::default();
    status.set(
        ConditionKind::Stalled,
        true,
        Reason::ResourceFailed,
        "bad.yaml line 3: <oops>",
    );
    let html = index(&[row("ok", Status::default()), row("broken app", status)]);
    assert!(html.contains("id=\"app-broken%20app\""), "{html}");
    assert!(html.contains("href=\"/apps/broken%20app\""), "{html}");
    assert!(
        html.contains("<strong>Stalled</strong> ResourceFailed"),
        "{html}"
    );
    assert!(html.contains("bad.yaml line 3: &lt;oops&gt;"), "{html}");
    assert!(html.contains("id=\"app-ok\""), "{html}");
    assert!(html.contains(">never<"), "no sync yet: {html}");
}

#[test]
fn an_empty_list_says_so() {
    let html = index(&[]);
    assert!(html.contains("No application is configured."), "{html}");
    assert!(!html.contains("<table"), "{html}");
}

#[test]
fn an_app_page_shows_drift_paths_never_values_and_says_the_plan_is_unknown() {
    let mut status = Status::default();
    status.drift.push(DriftEntry {
        id: "File//etc/app.conf".parse().expect("id"),
        policy: DriftPolicy::Revert,
        diff: Some(Diff {
            changes: vec![FieldChange {
                path: "spec.content".into(),
                old: Some(json!("password = hunter2")),
                new: Some(json!("password = from-git")),
            }],
        }),
        resolved: false,
    });
    let view = StatusView::new("app", status, false);
    let html = app(&AppPage {
        status: &view,
        history: &[],
        audit: &[],
        last: None,
        started: SystemTime::UNIX_EPOCH,
    });
    assert!(html.contains("spec.content"), "{html}");
    assert!(html.contains("File//etc/app.conf"), "{html}");
    assert!(
        !html.contains("hunter2") && !html.contains("from-git"),
        "{html}"
    );
    assert!(
        html.contains("Not known since the agent started (1970-01-01T00:00:00Z)"),
        "{html}"
    );
    assert!(html.contains("No sync recorded yet."), "{html}");
}

#[test]
fn replicas_add_an_escaped_replica_column_and_name_the_owner_of_the_others() {
    let plain = index(&[row("web", Status::default())]);
    assert!(!plain.contains("<th>Replica</th>"), "{plain}");
    let here = Row {
        status: StatusView::new("web", Status::default(), false).with_owner(Owner::This {
            replica: "r1".into(),
        }),
        last: None,
    };
    let other = Row {
        status: StatusView::elsewhere(
            "db",
            Owner::Other {
                replica: HOSTILE.into(),
            },
            None,
        ),
        last: None,
    };
    let page = index(&[here, other]);
    assert!(page.contains("<th>Replica</th>"), "{page}");
    assert!(page.contains("r1 (this replica)"), "{page}");
    assert!(page.contains("<strong>Elsewhere</strong>"), "{page}");
    assert!(!page.contains(HOSTILE), "{page}");
    assert!(page.contains(&Esc(HOSTILE).to_string()), "{page}");
}
