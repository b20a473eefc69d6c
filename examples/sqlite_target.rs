//! A target for a real system: keeps a SQLite table equal to `kind: Row`
//! manifests in Git. docs/writing-a-target.md walks through this file. Run:
//! `cargo run --example sqlite_target`.
//!
//! It makes a Git repository and a database in a temporary directory, plans
//! and syncs (push mode), refuses a commit with a bad spec, then runs the
//! engine as an agent (pull mode) until a row edited behind its back is put
//! back, and exits.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gitops_core::engine::Event;
use gitops_core::serde_json::{self, Value};
use gitops_core::{
    Blocking, DesiredState, Diff, Engine, EngineConfig, ManifestRender, Observed, RedbStore,
    RenderError, Resource, ResourceId, SyncTarget, TargetError,
};
use gitops_git::{GitSource, ReferencePolicy};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

type Error = Box<dyn std::error::Error>;

/// The spec of a `kind: Row` manifest: one row of the `services` table, the
/// manifest's name being the row's key.
#[derive(Debug, Serialize, Deserialize)]
// A typo in Git (`prot: 80`) is an error naming the field, not a field
// silently dropped.
#[serde(deny_unknown_fields)]
struct RowSpec {
    port: u16,
    weight: f64,
    enabled: bool,
    // May be left out: `None`, NULL in the table.
    owner: Option<String>,
}

impl RowSpec {
    /// Reads and checks a resource's spec: a wrong type or a missing field is
    /// `TargetError::InvalidSpec` naming the field path (`spec.port: invalid
    /// type: string "8080", expected u16`); rules serde cannot express say
    /// the same with `TargetError::invalid`.
    fn of(resource: &Resource) -> Result<Self, TargetError> {
        let row: RowSpec = resource.spec_as()?;
        if !(0.0..=1.0).contains(&row.weight) {
            let message = format!("spec.weight: {} is not between 0 and 1", row.weight);
            return Err(TargetError::invalid(&resource.id, message));
        }
        Ok(row)
    }
}

/// The table. SQLite sets `updated_at` itself, on insert and (by the
/// trigger) on every update, whoever writes the row.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS services (
    name       TEXT PRIMARY KEY,
    port       INTEGER NOT NULL,
    weight     REAL NOT NULL,
    enabled    INTEGER NOT NULL,
    owner      TEXT,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TRIGGER IF NOT EXISTS services_touched AFTER UPDATE ON services BEGIN
    UPDATE services SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE name = NEW.name;
END;
";

/// Insert or update: applying the same row twice is the same as once.
const UPSERT: &str = "
INSERT INTO services (name, port, weight, enabled, owner) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (name) DO UPDATE SET
    port = excluded.port, weight = excluded.weight,
    enabled = excluded.enabled, owner = excluded.owner
";

/// The managed system: one SQLite database. A rusqlite `Connection` blocks
/// the thread it runs on and is not `Sync`, so calls take turns on a mutex
/// and `Blocking` (in `engine` below) runs them on tokio's blocking pool.
struct RowTable {
    db: Mutex<Connection>,
}

impl RowTable {
    fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let db = Connection::open(path)?;
        // How long a call waits for another writer's lock (an operator's
        // sqlite3 shell) before failing as busy, which `db_error` makes
        // transient: well under the engine's call_timeout (60 s), since a
        // call past that cannot be interrupted and would still run.
        db.busy_timeout(Duration::from_secs(2))?;
        db.execute_batch(SCHEMA)?;
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self, id: &ResourceId) -> Result<MutexGuard<'_, Connection>, TargetError> {
        self.db
            .lock()
            .map_err(|_| TargetError::permanent(id, "a call panicked holding the connection"))
    }
}

/// A database error about `id`. A busy or locked database passes (transient:
/// retried with backoff); anything else needs a person (permanent). The
/// message carries the cause's text for reports; `with_source` keeps the
/// typed `rusqlite::Error` for code that inspects it.
fn db_error(id: &ResourceId, doing: &str, e: rusqlite::Error) -> TargetError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    let message = format!("{doing}: {e}");
    let error = match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => TargetError::transient(id, message),
        _ => TargetError::permanent(id, message),
    };
    error.with_source(e)
}

/// One stored value as JSON, whatever SQLite holds (a hand edit may have
/// left text in a number column: it shows as drift and is repaired).
fn json(value: rusqlite::types::Value) -> Value {
    use rusqlite::types::Value as Sql;
    match value {
        Sql::Null => Value::Null,
        Sql::Integer(n) => n.into(),
        Sql::Real(x) => x.into(),
        Sql::Text(s) => s.into(),
        Sql::Blob(b) => format!("({} bytes)", b.len()).into(),
    }
}

/// A row in the spec's terms. Column affinity converts what is stored:
/// `'9090'` in an INTEGER column becomes the number 9090, `1` in a REAL
/// column comes back as 1.0, and there is no boolean (`true` is stored as
/// 1). Reading `enabled` back as a boolean undoes the last; `differs` reads
/// the manifest's weight as a float for the second. Without both, every
/// sync would see a change and report the row as not converging.
fn observed_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    use rusqlite::types::Value as Sql;
    let enabled = match row.get(2)? {
        Sql::Integer(0) => Value::Bool(false),
        Sql::Integer(1) => Value::Bool(true),
        other => json(other),
    };
    Ok(serde_json::json!({
        "port": json(row.get(0)?),
        "weight": json(row.get(1)?),
        "enabled": enabled,
        "owner": json(row.get(3)?),
        "updated_at": json(row.get(4)?),
    }))
}

impl SyncTarget for RowTable {
    fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let sql = "SELECT port, weight, enabled, owner, updated_at FROM services WHERE name = ?1";
        let row = self
            .db(id)?
            .query_row(sql, [id.name()], observed_row)
            .optional()
            .map_err(|e| db_error(id, "cannot read the row", e))?;
        Ok(row.map(Observed::new))
    }

    fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let (id, row) = (&resource.id, RowSpec::of(resource)?);
        let values = params![id.name(), row.port, row.weight, row.enabled, row.owner];
        self.db(id)?
            .execute(UPSERT, values)
            .map_err(|e| db_error(id, "cannot write the row", e))?;
        Ok(())
    }

    fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        // A row that is not there deletes nothing, which is success.
        self.db(id)?
            .execute("DELETE FROM services WHERE name = ?1", [id.name()])
            .map_err(|e| db_error(id, "cannot delete the row", e))?;
        Ok(())
    }

    /// Compares in the spec's types and leaves out `updated_at`, which the
    /// database sets itself. `weight: 1` in YAML is the integer 1 while the
    /// table holds 1.0: reading the manifest as a `RowSpec` makes it 1.0 too.
    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        // A `Spec` is JSON: as a `Value`, a column can be left out.
        let mut have = observed.spec.to_value();
        if let Some(columns) = have.as_object_mut() {
            columns.remove("updated_at");
        }
        match RowSpec::of(desired).map(serde_json::to_value) {
            Ok(Ok(want)) => Diff::between(&have, &want),
            // Not a valid row: say it differs, so that apply reports why.
            _ => Some(Diff::default()),
        }
    }

    /// Refuses a commit holding anything this table cannot take, before a
    /// single row is written: the error names the file and the field.
    fn check(&self, desired: &DesiredState) -> Result<(), RenderError> {
        for resource in desired.resources() {
            let refuse = |message: String| RenderError::Invalid {
                origin: resource.origin.clone(),
                message,
            };
            if resource.id.kind() != "Row" || resource.id.namespace().is_some() {
                let id = &resource.id;
                return Err(refuse(format!(
                    "{id}: this target keeps `kind: Row` without a namespace"
                )));
            }
            RowSpec::of(resource).map_err(|e| refuse(e.to_string()))?;
        }
        Ok(())
    }
}

/// The engine: the rows under `rows/` on the repository's `main`, the
/// table, and the engine's own state (inventory, history, audit) in
/// `state/`. Point the source at your repository's URL.
fn engine(repo_url: &str, work: &Path, table: RowTable) -> Result<Engine, Error> {
    let source = GitSource::builder(repo_url, ReferencePolicy::branch("main"))
        .cache_dir(work.join("cache"))
        .path("rows")
        .build()?;
    Ok(Engine::builder()
        .name("services")
        .source(Arc::new(source))
        .render(Arc::new(ManifestRender::new()))
        .target(Arc::new(Blocking::new(table)))
        .store(Arc::new(RedbStore::open(work.join("state"))?))
        // Quick checks for the demo; the defaults suit a real agent better.
        .config(
            EngineConfig::default()
                .interval(Duration::from_secs(1))
                .drift_interval(Duration::from_millis(500)),
        )
        .build()?)
}

/// `rows/services.yaml`: the web service, and api with the spec given.
fn services(api: &str) -> String {
    let web = "{ port: 8080, weight: 1, enabled: true, owner: web-team }";
    format!(
        "kind: Row\nmetadata: {{ name: web }}\nspec: {web}\n---\n\
         kind: Row\nmetadata: {{ name: api }}\nspec: {api}\n"
    )
}

/// Runs `git` in `dir` with a fixed identity and none of the user's
/// configuration, as `gitops_examples::DemoRepo` does; repeated here so this
/// file needs only the crates in the guide's Cargo.toml.
fn git(dir: &Path, args: &[&str]) -> Result<String, Error> {
    let output = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Operator")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Operator")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("git {}: {}", args.join(" "), stderr.trim()).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Commits `rows/services.yaml` with api's spec as given.
fn commit_rows(repo: &Path, api: &str, message: &str) -> Result<(), Error> {
    std::fs::create_dir_all(repo.join("rows"))?;
    std::fs::write(repo.join("rows/services.yaml"), services(api))?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", message])?;
    Ok(())
}

fn say(step: &str) {
    println!("\n==> {step}");
}

/// Prints the table as SQLite stores it (`quote` shows text in quotes and
/// reals with a decimal point).
fn show_table(db: &Connection) -> Result<(), Error> {
    let mut rows = db.prepare(
        "SELECT printf('%s: port=%s weight=%s enabled=%s owner=%s', name, quote(port), \
         quote(weight), quote(enabled), quote(owner)) FROM services ORDER BY name",
    )?;
    for row in rows.query_map([], |row| row.get::<_, String>(0))? {
        println!("    {}", row?);
    }
    Ok(())
}

/// Push mode, what CI runs: a plan, a sync, a plan that finds nothing to
/// do, a commit refused whole, and its fix.
async fn push_mode(engine: &Engine, repo: &Path, db: &Connection) -> Result<(), Error> {
    say("plan (a dry run: nothing is written)");
    println!("{}", engine.plan().await?);
    say("sync once");
    let report = engine.sync_once().await?;
    println!("{report}");
    if !report.converged() {
        return Err("the first sync did not converge".into());
    }
    show_table(db)?;

    say("plan again: the table holds 1.0 and 1 where Git says 1 and true, which is equal");
    let plan = engine.plan().await?;
    println!("{plan}");
    if plan.has_changes() {
        return Err("normalisation failed: an unchanged table shows changes".into());
    }

    // SQLite would store "9001" as the number 9001; the typed spec refuses it.
    say("a commit quotes api's port; it is refused before any row is written");
    let quoted = r#"{ port: "9001", weight: 0.5, enabled: true }"#;
    commit_rows(repo, quoted, "Move api to port 9001 and enable it")?;
    match engine.sync_once().await {
        Ok(report) if report.converged() => return Err("a bad spec was applied".into()),
        Ok(report) => println!("{report}"),
        Err(e) => println!("{e}"),
    }
    show_table(db)?;

    say("the fix is committed and synced");
    let fixed = "{ port: 9001, weight: 0.5, enabled: true }";
    commit_rows(repo, fixed, "Unquote api's port")?;
    let report = engine.sync_once().await?;
    println!("{report}");
    if !report.converged() {
        return Err("the fixed commit did not converge".into());
    }
    Ok(())
}

/// An operator sets web's port by hand; waits until the engine has put it
/// back and finished that sync, printing what it saw.
async fn edit_and_see_it_repaired(engine: &Engine, db: &Connection) -> Result<(), Error> {
    // Subscribed before the edit, so that no event is missed.
    let mut events = engine.subscribe();
    db.execute("UPDATE services SET port = '9090' WHERE name = 'web'", [])?;
    show_table(db)?;
    let mut reverted = false;
    loop {
        match events.recv().await? {
            Event::DriftDetected { id, diff, .. } => {
                let diff = diff.map_or("deleted".into(), |d| d.to_string());
                println!("    drift  {id}: {diff}");
            }
            Event::DriftReverted { id } => {
                println!("    revert {id}");
                reverted = true;
            }
            Event::SyncFinished { result, .. } if reverted => {
                println!("    sync   {result}");
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Pull mode: the engine as a long-lived agent, repairing drift. A real
/// agent runs until Ctrl-C; this one stops once the row is repaired (or
/// after 30 s).
async fn pull_mode(engine: &Engine, db: &Connection) -> Result<(), Error> {
    let handle = engine.handle();
    let agent = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    say("pull mode: an operator sets web's port to '9090' behind the engine's back");
    let repaired = edit_and_see_it_repaired(engine, db);
    let outcome = tokio::select! {
        done = tokio::time::timeout(Duration::from_secs(30), repaired) => {
            done.unwrap_or_else(|_| Err("no drift repair within 30 s".into()))
        }
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    handle.shutdown();
    agent.await??;
    outcome?;
    show_table(db)?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let work = tempfile::tempdir()?;
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    let api = "{ port: 9000, weight: 0.5, enabled: false }";
    commit_rows(&repo, api, "Two services")?;

    let database = work.path().join("services.db");
    let url = format!("file://{}", repo.display());
    let engine = engine(&url, work.path(), RowTable::open(&database)?)?;
    // The operator's own connection: reads the table, and edits it by hand.
    let db = Connection::open(&database)?;
    push_mode(&engine, &repo, &db).await?;
    pull_mode(&engine, &db).await?;
    println!("\nsqlite_target: synced, refused a bad spec, repaired drift");
    Ok(())
}
