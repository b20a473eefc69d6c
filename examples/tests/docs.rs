//! The README stays a front door and every guide stays compiled: checks on
//! README.md and docs/*.md that `cargo test --doc` cannot make by itself.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ has a parent")
        .to_path_buf()
}

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
            assert!(
                !info.contains("ignore"),
                "{at}: `ignore` hides a Rust block from the doc tests; use no_run"
            );
        }
        assert!(!inside, "{}: a code block is not closed", path.display());
    }
}
