//! The status page (`GET /` and `GET /apps/{name}`): server-rendered HTML
//! from the same views as the JSON endpoints ([`super::view`]).
//!
//! Templating is hand-written: every piece of text goes through [`Esc`]
//! (which escapes `& < > " '`, enough for element content and quoted
//! attribute values, the only places text is put), and every URL path
//! segment through [`segment`]. Both are unit-tested below. A template
//! crate (`maud`) was considered; it would add a proc-macro dependency
//! tree to the agent for two small pages, and its escaping is the same
//! five characters. The pages carry no script at all (they refresh with
//! `<meta http-equiv="refresh">`), and the route sends a
//! `Content-Security-Policy` that forbids scripts, so a hostile commit
//! subject that escaped escaping still could not run.
//!
//! What is shown: ids, field paths, revisions, messages. The views are
//! always built without values (`expose_values` off), so no spec value,
//! drifted value or gate output reaches a page.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use gitops_core::ConditionKind;

use super::last_sync::LastSync;
use super::owners::Owner;
use super::view::{AuditView, HistoryView, StatusView, rfc3339};

/// How often the pages reload themselves (seconds).
const REFRESH_SECONDS: u32 = 10;

/// The most audit records a page shows (the newest).
pub(crate) const AUDIT_SHOWN: usize = 100;

/// Text escaped for HTML element content and quoted attribute values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Esc<'a>(pub(crate) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            let entity = match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            };
            f.write_str(entity)?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// `name` as one URL path segment: unreserved characters as they are,
/// every other byte percent-encoded.
pub(crate) fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The first 12 characters of a revision id.
fn short(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(at, _)| &id[..at])
}

/// One application on the index page.
#[derive(Debug)]
pub(crate) struct Row {
    /// Its status (built without values).
    pub(crate) status: StatusView,
    /// Its newest history entry, if any.
    pub(crate) last: Option<HistoryView>,
}

/// The headline state of an application: the first of Stalled, Failed,
/// Reconciling that holds, else Ready or Not ready; with its reason and
/// message.
pub(crate) fn state(status: &StatusView) -> (&'static str, String, String) {
    let holds = |kind: ConditionKind| {
        status
            .conditions
            .iter()
            .find(|c| c.kind == kind && c.status)
    };
    let order = [
        (ConditionKind::Stalled, "Stalled"),
        (ConditionKind::Failed, "Failed"),
        (ConditionKind::Reconciling, "Reconciling"),
        (ConditionKind::Ready, "Ready"),
    ];
    for (kind, label) in order {
        if let Some(c) = holds(kind) {
            return (label, c.reason.to_string(), c.message.clone());
        }
    }
    let ready = status
        .conditions
        .iter()
        .find(|c| c.kind == ConditionKind::Ready);
    match ready {
        Some(c) => ("Not ready", c.reason.to_string(), c.message.clone()),
        None => ("Unknown", String::new(), String::new()),
    }
}

/// What the application waits for, in words (empty: nothing).
fn waits_for(status: &StatusView) -> String {
    if status.suspended {
        return "suspended".to_owned();
    }
    if let Some(blocked) = &status.blocked {
        let until = blocked
            .until
            .as_deref()
            .map(|t| format!(" (until {t})"))
            .unwrap_or_default();
        return format!("{}{until}", blocked.message);
    }
    if let Some(retry) = &status.retry {
        return format!(
            "retry {} in {:.0} s",
            retry.attempt,
            retry.after_seconds.ceil()
        );
    }
    String::new()
}

/// The page around `body`.
fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>{body}\
         <footer>Rendered {} · reloads every {REFRESH_SECONDS} s · \
         <a href=\"\">reload now</a> · values are never shown</footer></body></html>\n",
        Esc(title),
        rfc3339(SystemTime::now()).unwrap_or_default(),
    )
}

/// Narrow screens: each table row becomes a block, each cell a line
/// labelled from its `data-label`.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1rem;color:#222}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;\
border-bottom:1px solid #ddd;vertical-align:top;overflow-wrap:anywhere}\
code{font-size:.9em}.Ready{color:#075e07}.Stalled,.Failed,.Not{color:#a00}\
.Reconciling{color:#8a5a00}footer{margin-top:1rem;color:#666;font-size:.85em}\
@media (max-width:640px){thead{display:none}table,tbody,tr,td{display:block;width:auto}\
tr{border:1px solid #ccc;margin-bottom:.7rem}td{border:0}\
td::before{content:attr(data-label) \": \";font-weight:bold}}";

/// `GET /`: one row per application.
pub(crate) fn index(rows: &[Row]) -> String {
    let mut body = String::from("<h1>Applications</h1>");
    if rows.is_empty() {
        body.push_str("<p id=\"empty\">No application is configured.</p>");
        return document("gitops: applications", &body);
    }
    body.push_str(
        "<table id=\"apps\"><thead><tr><th>Application</th><th>State</th><th>Revision</th>\
         <th>Commit</th><th>Last sync</th><th>Drift</th><th>Waiting for</th>",
    );
    if rows.iter().any(|r| r.status.owner.is_some()) {
        body.push_str("<th>Replica</th>");
    }
    body.push_str("</tr></thead><tbody>");
    for row in rows {
        index_row(&mut body, row);
    }
    body.push_str("</tbody></table>");
    document("gitops: applications", &body)
}

fn index_row(out: &mut String, row: &Row) {
    let status = &row.status;
    let (label, reason, message) = match &status.owner {
        Some(Owner::Other { replica }) => (
            "Elsewhere",
            String::new(),
            format!("run by replica {replica}"),
        ),
        Some(Owner::Unowned) => ("Unowned", String::new(), "being handed over".to_owned()),
        _ => state(status),
    };
    let revision = status
        .last_attempted
        .as_ref()
        .or(status.last_applied.as_ref());
    let (id, subject, author) = revision
        .map(|r| (short(&r.id), r.summary.as_str(), r.author.as_str()))
        .unwrap_or_default();
    let synced = row
        .last
        .as_ref()
        .and_then(|h| h.finished_at.as_deref())
        .unwrap_or("never");
    let drift = status.drift.iter().filter(|d| !d.resolved).count();
    let class = label.split(' ').next().unwrap_or(label);
    let _ = write!(
        out,
        "<tr id=\"app-{seg}\"><td data-label=\"Application\"><a href=\"/apps/{seg}\">{name}</a></td>\
         <td data-label=\"State\" class=\"{class}\"><strong>{label}</strong> {reason}<br><small>{message}</small></td>\
         <td data-label=\"Revision\"><code>{id}</code></td>\
         <td data-label=\"Commit\">{subject}<br><small>{author}</small></td>\
         <td data-label=\"Last sync\">{synced}</td><td data-label=\"Drift\">{drift}</td>\
         <td data-label=\"Waiting for\">{waits}</td>{owner}</tr>",
        seg = Esc(&segment(&status.app)),
        name = Esc(&status.app),
        reason = Esc(&reason),
        message = Esc(&message),
        id = Esc(id),
        subject = Esc(subject),
        author = Esc(author),
        synced = Esc(synced),
        waits = Esc(&waits_for(status)),
        owner = OwnerCell(status.owner.as_ref()),
    );
}

/// The Replica cell of a row (nothing when replicas do not share the list).
struct OwnerCell<'a>(Option<&'a Owner>);

impl fmt::Display for OwnerCell<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(owner) => write!(
                f,
                "<td data-label=\"Replica\" class=\"owner\">{}</td>",
                Esc(&owner.describe())
            ),
            None => Ok(()),
        }
    }
}

/// What one application's page shows.
#[derive(Debug)]
pub(crate) struct AppPage<'a> {
    /// Its status (built without values).
    pub(crate) status: &'a StatusView,
    /// Its newest syncs, newest first.
    pub(crate) history: &'a [HistoryView],
    /// Its newest audit records, newest first (at most [`AUDIT_SHOWN`] are shown).
    pub(crate) audit: &'a [AuditView],
    /// Its last sync as the agent saw it, if since `started`.
    pub(crate) last: Option<&'a LastSync>,
    /// Since when the agent has kept the last sync in memory.
    pub(crate) started: SystemTime,
}

/// `GET /apps/{name}`.
pub(crate) fn app(page: &AppPage<'_>) -> String {
    let status = page.status;
    let (label, reason, message) = state(status);
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><a href=\"/\">← all applications</a></p><h1>{name}</h1>\
         <p id=\"state\" class=\"{class}\"><strong>{label}</strong> {reason}: {message}</p>",
        name = Esc(&status.app),
        class = label.split(' ').next().unwrap_or(label),
        reason = Esc(&reason),
        message = Esc(&message),
    );
    let waits = waits_for(status);
    if !waits.is_empty() {
        let _ = write!(body, "<p id=\"waits\">Waiting for: {}</p>", Esc(&waits));
    }
    drift_section(&mut body, status);
    plan_section(&mut body, page.last, page.started);
    history_section(&mut body, page.history);
    audit_section(&mut body, page.audit);
    document(&format!("gitops: {}", status.app), &body)
}

fn drift_section(out: &mut String, status: &StatusView) {
    out.push_str("<h2>Drift</h2>");
    let open: Vec<_> = status.drift.iter().filter(|d| !d.resolved).collect();
    if open.is_empty() {
        out.push_str("<p>None.</p>");
        return;
    }
    out.push_str("<ul id=\"drift\">");
    for entry in open {
        let fields = if entry.deleted {
            "deleted in the target".to_owned()
        } else {
            let paths: Vec<&str> = entry.fields.iter().map(|f| f.path.as_str()).collect();
            paths.join(", ")
        };
        let _ = write!(
            out,
            "<li><code>{}</code>: {}</li>",
            Esc(&entry.id.to_string()),
            Esc(&fields)
        );
    }
    out.push_str("</ul>");
}

fn plan_section(out: &mut String, last: Option<&LastSync>, started: SystemTime) {
    out.push_str("<h2>Plan of the last sync</h2>");
    let Some(last) = last else {
        let _ = write!(
            out,
            "<p id=\"plan\">Not known since the agent started ({}): the plan of the last \
             sync is kept in memory only. The history below is from the store.</p>",
            Esc(&rfc3339(started).unwrap_or_default())
        );
        return;
    };
    let s = &last.summary;
    let _ = write!(
        out,
        "<p id=\"plan\">Revision <code>{rev}</code>: {result}, ended {at} after {secs:.1} s. \
         {c} to create, {u} to update, {d} to delete, {n} unchanged, {r} retained.</p>",
        rev = Esc(short(&last.revision)),
        result = Esc(&last.result.to_string()),
        at = Esc(&rfc3339(last.finished_at).unwrap_or_default()),
        secs = last.duration.as_secs_f64(),
        c = s.create,
        u = s.update,
        d = s.delete,
        n = s.unchanged,
        r = s.retained,
    );
    if last.steps.is_empty() {
        return;
    }
    out.push_str("<ul id=\"steps\">");
    for step in &last.steps {
        let _ = write!(
            out,
            "<li><code>{}</code>: {}</li>",
            Esc(&step.id.to_string()),
            Esc(&step.what)
        );
    }
    out.push_str("</ul>");
    if last.more > 0 {
        let _ = write!(out, "<p>… and {} more not kept.</p>", last.more);
    }
}

fn history_section(out: &mut String, history: &[HistoryView]) {
    out.push_str("<h2>History</h2>");
    if history.is_empty() {
        out.push_str("<p>No sync recorded yet.</p>");
        return;
    }
    out.push_str(
        "<table id=\"history\"><thead><tr><th>Finished</th><th>Revision</th><th>Commit</th>\
         <th>Trigger</th><th>Result</th></tr></thead><tbody>",
    );
    for h in history {
        let s = &h.summary;
        let _ = write!(
            out,
            "<tr><td data-label=\"Finished\">{at}</td><td data-label=\"Revision\"><code>{rev}</code></td>\
             <td data-label=\"Commit\">{subject}<br><small>{author}</small></td>\
             <td data-label=\"Trigger\">{trigger}</td><td data-label=\"Result\">{result} \
             (+{c} ~{u} -{d}){error}</td></tr>",
            at = Esc(h.finished_at.as_deref().unwrap_or("")),
            rev = Esc(short(&h.revision.id)),
            subject = Esc(&h.revision.summary),
            author = Esc(&h.revision.author),
            trigger = Esc(&h.trigger.to_string()),
            result = Esc(&h.result.to_string()),
            c = s.create,
            u = s.update,
            d = s.delete,
            error = h
                .error
                .as_deref()
                .map(|e| format!("<br><small>{}</small>", Esc(e)))
                .unwrap_or_default(),
        );
    }
    out.push_str("</tbody></table>");
}

fn audit_section(out: &mut String, audit: &[AuditView]) {
    out.push_str("<h2>Audit trail</h2>");
    if audit.is_empty() {
        out.push_str("<p>No change recorded yet.</p>");
        return;
    }
    out.push_str(
        "<table id=\"audit\"><thead><tr><th>At</th><th>Resource</th><th>Action</th>\
         <th>Revision</th><th>By</th></tr></thead><tbody>",
    );
    for a in audit.iter().take(AUDIT_SHOWN) {
        let action = serde_json::to_value(a.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td data-label=\"At\">{at}</td><td data-label=\"Resource\"><code>{id}</code></td>\
             <td data-label=\"Action\">{action}</td><td data-label=\"Revision\"><code>{rev}</code></td>\
             <td data-label=\"By\">{author}<br><small>{message}</small></td></tr>",
            at = Esc(a.at.as_deref().unwrap_or("")),
            id = Esc(&a.id.to_string()),
            action = Esc(&action),
            rev = Esc(short(&a.revision)),
            author = Esc(&a.author),
            message = Esc(a.message.lines().next().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table>");
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
