//! Render a directory of manifests and print the plan against an empty target.
//!
//! ```text
//! cargo run --example plan -- <dir> [--files] [--json]
//! ```
//!
//! `--files` deploys every file as-is (`FilesRender`) instead of reading
//! Kubernetes-shaped manifests; `--json` prints the plan as JSON. Exit codes:
//! 0 nothing to do, 2 changes pending, 1 error (a bad manifest, a cycle, ...).
//! Without a directory it plans a small built-in example.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use gitops_core::model::Inventory;
use gitops_core::plan::Planner;
use gitops_core::{FilesRender, ManifestRender, Render, Revision, Snapshot};

const DEMO: &str = "\
kind: Secret
metadata: { name: tls }
spec: { cert: demo }
---
kind: Config
metadata: { name: web, dependsOn: [Secret/tls] }
spec: { port: 8080 }
";

fn collect(root: &Path, dir: &Path, snapshot: &mut Snapshot) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if entry.file_name() == ".git" {
            continue;
        }
        if kind.is_dir() {
            collect(root, &path, snapshot)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_str()
                .ok_or_else(|| format!("{}: path is not UTF-8", path.display()))?
                .replace(std::path::MAIN_SEPARATOR, "/");
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            snapshot
                .insert(relative, data, false)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn run() -> Result<bool, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let files = args.iter().any(|a| a == "--files");
    if let Some(unknown) = args
        .iter()
        .find(|a| a.starts_with("--") && !["--json", "--files"].contains(&a.as_str()))
    {
        return Err(format!(
            "unknown option {unknown}; usage: plan [DIR] [--files] [--json]"
        ));
    }
    let revision = Revision::new("local", "0".repeat(40));
    let mut snapshot = Snapshot::new(revision);
    match args.iter().find(|a| !a.starts_with("--")) {
        Some(dir) => {
            let root = PathBuf::from(dir);
            collect(&root, &root, &mut snapshot)?;
        }
        None => snapshot
            .insert("demo.yaml", DEMO.as_bytes(), false)
            .map_err(|e| e.to_string())?,
    }
    let desired = if files {
        FilesRender::new().render(&snapshot)
    } else {
        ManifestRender::new().render(&snapshot)
    }
    .map_err(|e| e.to_string())?;
    let observed = vec![None; desired.len()];
    let plan = Planner::new()
        .plan(&desired, &observed, &Inventory::new())
        .map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?
        );
    } else {
        println!("{plan}");
    }
    Ok(plan.has_changes())
}

fn main() -> ExitCode {
    match run() {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
