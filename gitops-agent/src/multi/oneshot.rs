//! `--once` and `--plan` with `--config`: every application of the file
//! once, dependencies first, then exit.
//!
//! `--once` syncs each application (one whose dependency did not converge
//! is skipped, not synced), prints each report under a header naming the
//! application (`--json`: one object keyed by name) and a one-line summary
//! per application on stderr; it exits 0 when every application converged,
//! 1 otherwise. `--plan` prints each application's plan the same way and
//! exits 0 when nothing would change, 2 when something would, 1 when an
//! application's plan cannot be made. The list is built whole first: an
//! application that cannot be built (a bad key file, a target that cannot
//! be opened) refuses the run before anything is synced.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use gitops_core::{Plan, RedbStore, SyncReport};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::app::{self, Built, Parts, TargetFactory};
use super::repos::Repos;
use crate::args::AgentArgs;
use crate::config::{self, AppSpec, AppsConfig, Defaults};
use crate::metrics::Metrics;
use crate::run::{AgentError, Outcome};

/// How one application's `--once` ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum OnceResult {
    /// The target matches the revision.
    Converged,
    /// The sync ran and did not converge (a resource failed, ...).
    NotConverged,
    /// A sync window or a dependency held the sync back.
    Blocked {
        /// Why.
        message: String,
    },
    /// The sync could not run (source, render, observe or store).
    Failed {
        /// Why.
        error: String,
    },
    /// Not synced: an application it depends on did not converge.
    Skipped {
        /// That application.
        dependency: String,
    },
}

impl fmt::Display for OnceResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnceResult::Converged => f.write_str("converged"),
            OnceResult::NotConverged => f.write_str("not converged"),
            OnceResult::Blocked { message } => write!(f, "blocked: {message}"),
            OnceResult::Failed { error } => write!(f, "failed: {error}"),
            OnceResult::Skipped { dependency } => {
                write!(
                    f,
                    "skipped: it depends on {dependency:?}, which did not converge"
                )
            }
        }
    }
}

/// How one application's `--plan` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlanResult {
    /// Nothing would change.
    Unchanged,
    /// A sync would change something.
    Changes,
    /// No plan could be made.
    Failed(String),
}

/// The first dependency of `spec` that did not converge, among the
/// applications already run (`done`, by name).
pub(crate) fn unmet_dependency(spec: &AppSpec, done: &[(String, OnceResult)]) -> Option<String> {
    spec.depends_on
        .iter()
        .find(|dependency| {
            done.iter()
                .any(|(name, result)| name == *dependency && *result != OnceResult::Converged)
        })
        .cloned()
}

/// `--once`'s exit: converged only when every application converged.
pub(crate) fn once_outcome(results: &[(String, OnceResult)]) -> Outcome {
    if results.iter().all(|(_, r)| *r == OnceResult::Converged) {
        Outcome::Converged
    } else {
        Outcome::NotConverged
    }
}

/// `--plan`'s exit: an error when a plan failed, else changes pending when
/// any application would change.
pub(crate) fn plan_outcome(results: &[(String, PlanResult)]) -> Result<Outcome, AgentError> {
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, r)| matches!(r, PlanResult::Failed(_)))
        .map(|(name, _)| name.clone())
        .collect();
    if !failed.is_empty() {
        return Err(AgentError::AppsFailed { apps: failed });
    }
    if results.iter().any(|(_, r)| *r == PlanResult::Changes) {
        Ok(Outcome::ChangesPending)
    } else {
        Ok(Outcome::Converged)
    }
}

/// Runs `--once` or `--plan` over every application of `--config`.
pub(crate) async fn run(
    args: &AgentArgs,
    targets: &dyn TargetFactory,
    path: &Path,
) -> Result<Outcome, AgentError> {
    let state_dir = args
        .engine
        .state_dir
        .clone()
        .ok_or(AgentError::NoStateDir)?;
    let config = config::load(path, &Defaults::from_args(args))?;
    super::supervisor::check_real_overlaps(&config)?;
    crate::trust::trusted_signers(&args.source)?;
    let store = RedbStore::open(&state_dir).map_err(|source| AgentError::Store {
        path: state_dir.clone(),
        source,
    })?;
    let keys = app::Keys {
        age: crate::run::age_keys(args)?,
        digest: gitops_core::secret::DigestKey::load_or_create(
            &state_dir.join(crate::run::DIGEST_KEY_FILE),
        )?,
    };
    let metrics = Metrics::new();
    let parts = Parts {
        credentials: &args.credentials,
        store: Arc::new(store),
        metrics: &metrics,
        targets,
        keys: &keys,
    };
    let built = build_all(&parts, &config, &mut Repos::new(state_dir.join("git")))?;
    if args.mode.plan {
        plan(args, &built).await
    } else {
        once(args, &built).await
    }
}

/// Builds every application, dependencies first.
fn build_all(
    parts: &Parts<'_>,
    config: &AppsConfig,
    repos: &mut Repos,
) -> Result<Vec<Built>, AgentError> {
    let mut built: Vec<Built> = Vec::with_capacity(config.apps.len());
    for name in config::start_order(&config.apps) {
        let Some(spec) = config.get(&name) else {
            continue;
        };
        let upstreams: Vec<_> = spec
            .depends_on
            .iter()
            .filter_map(|upstream| built.iter().find(|b| &b.spec.name == upstream))
            .map(|b| app::Upstream::Local(&b.spec, &b.engine))
            .collect();
        let shared = repos
            .get(&spec.repo)
            .map_err(|e| config.error(&name, "repo", e.to_string()))?;
        let app = app::build(parts, config, spec, &shared, &upstreams)?;
        built.push(app);
    }
    Ok(built)
}

async fn once(args: &AgentArgs, built: &[Built]) -> Result<Outcome, AgentError> {
    let mut results: Vec<(String, OnceResult)> = Vec::with_capacity(built.len());
    let mut json = Map::new();
    for app in built {
        let name = app.spec.name.clone();
        let (result, report) = match unmet_dependency(&app.spec, &results) {
            Some(dependency) => (OnceResult::Skipped { dependency }, None),
            None => sync(app).await,
        };
        if args.mode.json {
            let mut value = serde_json::to_value(&result).unwrap_or(Value::Null);
            value["report"] = serde_json::to_value(&report).unwrap_or(Value::Null);
            json.insert(name.clone(), value);
        } else {
            println!("== {name} ==");
            match &report {
                Some(report) => println!("{report}\n"),
                None => println!("{result}\n"),
            }
        }
        results.push((name, result));
    }
    if args.mode.json {
        print_json(&Value::Object(json))?;
    }
    for (name, result) in &results {
        eprintln!("{name}: {result}");
    }
    Ok(once_outcome(&results))
}

/// One application's sync.
async fn sync(app: &Built) -> (OnceResult, Option<SyncReport>) {
    match app.engine.sync_once().await {
        Ok(report) => {
            let result = match &report.blocked {
                Some(blocked) => OnceResult::Blocked {
                    message: blocked.message.clone(),
                },
                None if report.converged() => OnceResult::Converged,
                None => OnceResult::NotConverged,
            };
            (result, Some(report))
        }
        Err(e) => (
            OnceResult::Failed {
                error: e.to_string(),
            },
            None,
        ),
    }
}

async fn plan(args: &AgentArgs, built: &[Built]) -> Result<Outcome, AgentError> {
    let mut results: Vec<(String, PlanResult)> = Vec::with_capacity(built.len());
    let mut json = Map::new();
    for app in built {
        let name = app.spec.name.clone();
        let planned: Result<Plan, String> = app.engine.plan().await.map_err(|e| e.to_string());
        let result = match &planned {
            Ok(plan) if plan.has_changes() => PlanResult::Changes,
            Ok(_) => PlanResult::Unchanged,
            Err(error) => PlanResult::Failed(error.clone()),
        };
        match (&planned, args.mode.json) {
            (Ok(plan), true) => {
                json.insert(
                    name.clone(),
                    serde_json::to_value(plan).unwrap_or(Value::Null),
                );
            }
            (Err(error), true) => {
                json.insert(name.clone(), json!({ "error": error }));
            }
            (Ok(plan), false) => println!("== {name} ==\n{}\n", plan.text(args.mode.full)),
            (Err(error), false) => println!("== {name} ==\nerror: {error}\n"),
        }
        results.push((name, result));
    }
    if args.mode.json {
        print_json(&Value::Object(json))?;
    }
    plan_outcome(&results)
}

fn print_json(value: &Value) -> Result<(), AgentError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| AgentError::Io {
        what: "printing the report",
        source: e.into(),
    })?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn specs(text: &str) -> AppsConfig {
        config::parse(text, "apps.toml", Path::new("/"), &Defaults::default()).expect("valid")
    }

    #[test]
    fn a_dependency_that_did_not_converge_skips_its_dependents() {
        let config = specs(
            "[[app]]\nname = \"db\"\nrepo = \"/r\"\ntarget_dir = \"/t/db\"\n\
             [[app]]\nname = \"web\"\nrepo = \"/r\"\ntarget_dir = \"/t/web\"\n\
             depends_on = [\"db\"]\n",
        );
        let web = config.get("web").expect("web");
        let converged = [("db".to_owned(), OnceResult::Converged)];
        assert_eq!(unmet_dependency(web, &converged), None);
        let failed = [("db".to_owned(), OnceResult::Failed { error: "x".into() })];
        assert_eq!(unmet_dependency(web, &failed).as_deref(), Some("db"));
        let skipped = OnceResult::Skipped {
            dependency: "db".into(),
        };
        assert_eq!(
            skipped.to_string(),
            "skipped: it depends on \"db\", which did not converge"
        );
        assert_eq!(
            unmet_dependency(config.get("db").expect("db"), &failed),
            None
        );
    }

    #[test]
    fn exit_outcomes_follow_the_single_application_agent() {
        let all = |r: OnceResult| vec![("a".to_owned(), OnceResult::Converged), ("b".into(), r)];
        assert_eq!(
            once_outcome(&all(OnceResult::Converged)),
            Outcome::Converged
        );
        assert_eq!(
            once_outcome(&all(OnceResult::NotConverged)),
            Outcome::NotConverged
        );
        let blocked = OnceResult::Blocked {
            message: "window".into(),
        };
        assert_eq!(once_outcome(&all(blocked)), Outcome::NotConverged);
        assert_eq!(once_outcome(&[]), Outcome::Converged);

        let plans = |r: PlanResult| vec![("a".to_owned(), PlanResult::Unchanged), ("b".into(), r)];
        assert_eq!(
            plan_outcome(&plans(PlanResult::Unchanged)).expect("ok"),
            Outcome::Converged
        );
        assert_eq!(
            plan_outcome(&plans(PlanResult::Changes)).expect("ok"),
            Outcome::ChangesPending
        );
        let e = plan_outcome(&plans(PlanResult::Failed("x".into()))).unwrap_err();
        assert!(
            matches!(&e, AgentError::AppsFailed { apps } if apps == &["b"]),
            "{e}"
        );
    }
}
