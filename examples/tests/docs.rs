//! The README stays a front door and every guide stays compiled: checks on
//! README.md and docs/*.md that `cargo test --doc` cannot make by itself.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ has a parent")
        .to_path_buf()
}

/// Guides whose Rust blocks, in order, are an example file cut at blank
/// lines: the example is built (clippy, tests) and run
/// (scripts/examples-smoke), which a doc test of a fragment could not be.
const WALKTHROUGHS: &[(&str, &str)] = &[("docs/writing-a-target.md", "examples/sqlite_target.rs")];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every docs/*.md, with their text.
fn markdown() -> Vec<(PathBuf, String)> {
    let root = root();
    let mut files = vec![root.join("README.md")];
    let mut guides: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    guides.sort();
    files.extend(guides);
    files
        .into_iter()
        .map(|path| {
            let text = read(&path);
            (path, text)
        })
        .collect()
}

#[test]
fn readme_is_a_front_door() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines < 250,
        "README.md has {lines} lines; move the manual to docs/"
    );
}

#[test]
fn every_guide_is_a_doc_test() {
    let lib = read(&root().join("examples/lib.rs"));
    // The etcd guide compiles where etcd-client is: gitops-etcd's lib (the
    // examples package stays free of protoc).
    let etcd = read(&root().join("gitops-etcd/src/lib.rs"));
    for (path, _) in markdown() {
        let relative = path.strip_prefix(root()).expect("under the root");
        let include = format!("include_str!(\"../{}\")", relative.display());
        let from_etcd = format!("include_str!(\"../../{}\")", relative.display());
        assert!(
            lib.contains(&include) || etcd.contains(&from_etcd),
            "examples/lib.rs does not compile {} as doc tests: add `#[cfg(doctest)] #[doc = {include}]`",
            relative.display()
        );
    }
}

#[test]
fn every_code_block_names_its_language_and_none_is_ignored() {
    for (path, text) in markdown() {
        let mut inside = false;
        for (number, line) in text.lines().enumerate() {
            let Some(info) = line.trim_start().strip_prefix("```") else {
                continue;
            };
            if inside {
                inside = false;
                continue;
            }
            inside = true;
            let at = format!("{}:{}", path.display(), number + 1);
            assert!(
                !info.trim().is_empty(),
                "{at}: a block without a language is compiled as Rust; name it (text, toml, yaml, sh)"
            );
            // A walkthrough's Rust blocks are pieces of an example, checked
            // against it below (and built and run as that example).
            let walkthrough = WALKTHROUGHS.iter().any(|(guide, _)| path.ends_with(guide));
            assert!(
                !info.contains("ignore") || walkthrough,
                "{at}: `ignore` hides a Rust block from the doc tests; use no_run"
            );
        }
        assert!(!inside, "{}: a code block is not closed", path.display());
    }
}

/// The fenced blocks of a markdown text: (info string, body, line of the fence).
fn blocks(text: &str) -> Vec<(String, String, usize)> {
    let mut found = Vec::new();
    let mut open: Option<(String, String, usize)> = None;
    for (number, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new(), number + 1)),
            (Some(_), Some(_)) => found.extend(open.take()),
            (Some((_, body, _)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    found
}

#[test]
fn a_walkthrough_is_its_example() {
    for (guide, example) in WALKTHROUGHS {
        let text = read(&root().join(guide));
        let pieces: Vec<String> = blocks(&text)
            .into_iter()
            .filter(|(info, _, _)| info.starts_with("rust"))
            .map(|(_, body, _)| body)
            .collect();
        let joined = pieces.join("\n");
        let file = read(&root().join(example));
        if joined == file {
            continue;
        }
        let line = joined
            .lines()
            .zip(file.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| joined.lines().count().min(file.lines().count()));
        panic!(
            "{guide}'s Rust blocks, joined by blank lines, are not {example}: they differ at line {} \
             ({:?} in the guide, {:?} in the example); copy the changed part of the example into the guide",
            line + 1,
            joined.lines().nth(line).unwrap_or("(end)"),
            file.lines().nth(line).unwrap_or("(end)"),
        );
    }
}

/// Features a program needs, by what its source shows: (crate, feature,
/// whether the source needs it).
type Rule = (&'static str, &'static str, fn(&str) -> bool);

const FEATURE_RULES: &[Rule] = &[
    // `#[tokio::main]` without a flavour is the multi-threaded runtime.
    ("tokio", "rt-multi-thread", |s| s.contains("#[tokio::main]")),
    ("tokio", "macros", |s| {
        s.contains("#[tokio::main") || s.contains("tokio::select!")
    }),
    ("tokio", "signal", |s| s.contains("tokio::signal")),
    ("tokio", "time", |s| s.contains("tokio::time")),
    ("tokio", "sync", |s| s.contains("tokio::sync")),
    ("serde", "derive", |s| {
        s.lines()
            .any(|l| l.contains("#[derive(") && l.contains("erialize"))
    }),
    // A policy, not a necessity: SQLite compiled in, nothing to install.
    ("rusqlite", "bundled", |s| s.contains("rusqlite::")),
    ("gitops-core", "redb", |s| s.contains("RedbStore")),
    ("gitops-core", "testing", |s| {
        s.contains("gitops_core::testing")
    }),
];

/// A dependency entry's explicit features, and whether it keeps the
/// crate's default features.
fn features(entry: &toml::Value) -> (Vec<String>, bool) {
    let listed = entry
        .get("features")
        .and_then(|f| f.as_array())
        .map(|f| {
            f.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let defaults = entry
        .get("default-features")
        .and_then(|d| d.as_bool())
        .unwrap_or(true);
    (listed, defaults)
}

fn version(entry: &toml::Value) -> Option<&str> {
    entry
        .as_str()
        .or_else(|| entry.get("version").and_then(|v| v.as_str()))
}

/// The crates `source` names as paths (`tokio::`, `use serde::`), not those
/// reached through a re-export (`gitops_core::serde_json`).
fn crates_used<'a>(source: &str, candidates: impl Iterator<Item = &'a String>) -> Vec<String> {
    candidates
        .filter(|name| {
            let path = format!("{}::", name.replace('-', "_"));
            let reexported = format!("::{}", name.replace('-', "_"));
            let named = source.match_indices(&path).any(|(at, _)| {
                let before = source[..at].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            let through_another = source.lines().any(|l| {
                l.trim_start().starts_with("use ")
                    && l.match_indices(&reexported).any(|(at, _)| {
                        let after = l[at + reexported.len()..].chars().next();
                        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
            });
            named && !through_another
        })
        .cloned()
        .collect()
}

/// Checks where the guide takes a dependency from (a path dependency: the
/// right directory; a registry one: the version the workspace builds) and
/// returns the default features it brings (known for path dependencies).
fn checked_source(
    at: &str,
    entry: &toml::Value,
    shared: Option<&toml::Value>,
    built: &toml::Value,
    keeps_defaults: bool,
) -> Vec<String> {
    if let Some(path) = entry.get("path").and_then(|p| p.as_str()) {
        let dir = shared
            .and_then(|s| s.get("path"))
            .and_then(|p| p.as_str())
            .unwrap_or("?");
        assert!(
            path.ends_with(&format!("/{dir}")),
            "{at}: path {path} should end in /{dir}"
        );
        if !keeps_defaults {
            return Vec::new();
        }
        let manifest: toml::Table = read(&root().join(dir).join("Cargo.toml"))
            .parse()
            .expect("parses");
        let defaults = manifest
            .get("features")
            .and_then(|f| f.get("default"))
            .and_then(|d| d.as_array());
        return defaults
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect();
    }
    let wanted = version(entry).unwrap_or_else(|| panic!("{at}: no version"));
    let building = shared
        .and_then(version)
        .or_else(|| version(built))
        .expect("a version");
    let (wanted, building): (Vec<&str>, Vec<&str>) =
        (wanted.split('.').collect(), building.split('.').collect());
    assert!(
        building.starts_with(&wanted),
        "{at}: version {} but the workspace builds {}",
        wanted.join("."),
        building.join(".")
    );
    Vec::new()
}

#[test]
fn the_guides_cargo_toml_is_what_its_example_uses() {
    let (guide, example) = WALKTHROUGHS[0];
    let text = read(&root().join(guide));
    let snippet = blocks(&text)
        .into_iter()
        .find(|(info, body, _)| info == "toml" && body.contains("[dependencies]"))
        .unwrap_or_else(|| panic!("{guide} has no ```toml block with [dependencies]"));
    let snippet: toml::Table = snippet.1.parse().expect("the guide's Cargo.toml parses");
    let deps = snippet["dependencies"].as_table().expect("[dependencies]");
    let source = read(&root().join(example));
    let workspace: toml::Table = read(&root().join("Cargo.toml")).parse().expect("parses");
    let workspace_deps = workspace["workspace"]["dependencies"]
        .as_table()
        .expect("table");
    let package: toml::Table = read(&root().join("examples/Cargo.toml"))
        .parse()
        .expect("parses");
    let package_deps = package["dependencies"].as_table().expect("table");

    let mut used = crates_used(&source, package_deps.keys());
    used.sort();
    let mut listed: Vec<String> = deps.keys().cloned().collect();
    listed.sort();
    assert_eq!(
        listed, used,
        "{guide}'s [dependencies] against the crates {example} names"
    );

    for (name, entry) in deps {
        let at = format!("{guide}: dependency {name}");
        let (explicit, keeps_defaults) = features(entry);
        let built = package_deps
            .get(name)
            .expect("listed in examples/Cargo.toml");
        let shared = workspace_deps.get(name);
        let mut effective = explicit.clone();
        effective.extend(checked_source(&at, entry, shared, built, keeps_defaults));
        let needed: Vec<&str> = FEATURE_RULES
            .iter()
            .filter(|(krate, _, needs)| krate == name && needs(&source))
            .map(|(_, feature, _)| *feature)
            .collect();
        for feature in &needed {
            assert!(
                effective.iter().any(|f| f == feature),
                "{at}: needs feature {feature}"
            );
        }
        for feature in &explicit {
            assert!(
                needed.contains(&feature.as_str()),
                "{at}: feature {feature} is listed but {example} does not need it (or FEATURE_RULES lacks its rule)"
            );
            let mut enabled = features(built).0;
            enabled.extend(shared.map(|s| features(s).0).unwrap_or_default());
            assert!(
                enabled.contains(feature),
                "{at}: {feature} is not enabled where {example} is built (examples/Cargo.toml)"
            );
        }
    }
}

#[test]
fn every_example_is_in_the_examples_readme() {
    let readme = read(&root().join("examples/README.md"));
    let manifest = read(&root().join("examples/Cargo.toml"));
    for dir in ["examples", "gitops-etcd/examples"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .expect("readable")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
            .collect();
        files.sort();
        for path in files {
            if !read(&path).contains("fn main(") {
                continue;
            }
            let name = path.file_stem().and_then(|s| s.to_str()).expect("a name");
            assert!(
                readme.contains(&format!("--example {name}")),
                "examples/README.md does not list {dir}/{name}.rs (`cargo run ... --example {name}`)"
            );
            if dir == "examples" {
                assert!(
                    manifest.contains(&format!("name = \"{name}\"\npath = \"{name}.rs\"")),
                    "examples/Cargo.toml has no [[example]] for {name}.rs"
                );
            }
        }
    }
}
