//! [`ManifestRender`]: Kubernetes-shaped YAML, JSON and TOML manifests.
//!
//! ```yaml
//! apiVersion: example.com/v1      # optional, carried to the target
//! kind: ConfigFile
//! metadata:
//!   name: web
//!   namespace: prod               # optional
//!   dependsOn:                    # optional; short string form or structured
//!     - Secret/prod/tls
//!     - { kind: Database, name: main }
//!   labels: { app: web }
//!   annotations:
//!     gitops.rs/drift: revert     # revert (default) | writeback | ignore
//!     gitops.rs/prune: disabled   # enabled (default) | disabled
//! spec: { ... }                   # opaque to the core; the target interprets it
//! ```
//!
//! A YAML file may hold many documents (`---`); a JSON file holds one document
//! or an array of documents; a TOML file holds one document. Dependencies are
//! taken literally: `Secret/tls` does not inherit the namespace of the
//! resource that names it. Unknown top-level fields are refused (a misplaced
//! `spec` is a common typo).

use std::collections::BTreeMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Map, Value};

use crate::edit;
use crate::id::ResourceId;
use crate::model::{DriftPolicy, Observed, Origin, Policy, Resource, Snapshot, SnapshotFile};
use crate::render::{DesiredState, FileEdit, Render, RenderError, RenderParts, RenderWarning};

/// Annotation selecting the drift policy: `revert`, `writeback` or `ignore`.
pub const DRIFT_ANNOTATION: &str = "gitops.rs/drift";
/// Annotation disabling prune: `disabled` (or `false`); `enabled` (or `true`) is the default.
pub const PRUNE_ANNOTATION: &str = "gitops.rs/prune";
/// Default largest manifest file accepted: 10 MiB ([`MAX_FILE_BYTES`](crate::MAX_FILE_BYTES)).
#[allow(clippy::cast_possible_truncation)] // 10 MiB fits every usize we build for.
pub const DEFAULT_MAX_FILE_SIZE: usize = crate::model::MAX_FILE_BYTES as usize;
/// Default include patterns.
pub const DEFAULT_INCLUDE: &[&str] = &["**/*.yaml", "**/*.yml", "**/*.json", "**/*.toml"];
/// Most YAML documents accepted in one file.
pub const MAX_DOCUMENTS_PER_FILE: usize = 100_000;

/// Renders manifest files into resources.
///
/// ```
/// use gitops_core::{ManifestRender, Render, Revision, Snapshot};
/// let snap = Snapshot::from_files(
///     Revision::new("main", "0".repeat(40)),
///     [("app.yaml", &b"kind: ConfigFile\nmetadata: { name: web }\nspec: { port: 80 }\n"[..])],
/// )?;
/// let desired = ManifestRender::new().render(&snap)?;
/// assert_eq!(desired.resources()[0].id.to_string(), "ConfigFile/web");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManifestRender {
    include: GlobSet,
    exclude: GlobSet,
    /// The patterns of `include` and `exclude` (`None`: the defaults), for
    /// [`Render::fingerprint`].
    patterns: (Option<Vec<String>>, Vec<String>),
    max_file_size: usize,
}

impl Default for ManifestRender {
    fn default() -> Self {
        Self::new()
    }
}

fn globset(patterns: &[&str]) -> Result<GlobSet, RenderError> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p).map_err(|e| RenderError::Config {
            message: format!("bad glob {p:?}: {e}"),
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|e| RenderError::Config {
        message: e.to_string(),
    })
}

impl ManifestRender {
    /// All `.yaml`, `.yml`, `.json` and `.toml` files, up to 10 MiB each.
    pub fn new() -> Self {
        Self {
            // The default patterns are constants known to compile.
            include: globset(DEFAULT_INCLUDE).unwrap_or_default(),
            exclude: GlobSet::empty(),
            patterns: (None, Vec::new()),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }

    /// Only files matching one of `patterns` (glob syntax, `**` crosses directories).
    pub fn include(mut self, patterns: &[&str]) -> Result<Self, RenderError> {
        self.include = globset(patterns)?;
        self.patterns.0 = Some(patterns.iter().map(|p| (*p).to_owned()).collect());
        Ok(self)
    }

    /// Skips files matching one of `patterns`.
    pub fn exclude(mut self, patterns: &[&str]) -> Result<Self, RenderError> {
        self.exclude = globset(patterns)?;
        self.patterns.1 = patterns.iter().map(|p| (*p).to_owned()).collect();
        Ok(self)
    }

    /// Refuses files larger than `bytes`.
    pub fn max_file_size(mut self, bytes: usize) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// Whether `path` is read by this renderer.
    pub fn matches(&self, path: &str) -> bool {
        self.include.is_match(path) && !self.exclude.is_match(path)
    }

    /// Parses one file into its documents.
    pub fn parse_file(&self, path: &str, bytes: &[u8]) -> Result<Vec<Value>, RenderError> {
        if bytes.len() > self.max_file_size {
            return Err(RenderError::TooLarge {
                path: path.to_owned(),
                size: bytes.len(),
                limit: self.max_file_size,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| RenderError::NotUtf8 {
            path: path.to_owned(),
            offset: e.valid_up_to(),
        })?;
        match Format::of(path) {
            Format::Json => parse_json(path, text),
            Format::Toml => parse_toml(path, text),
            Format::Yaml => parse_yaml(path, text),
        }
    }
}

enum Format {
    Yaml,
    Json,
    Toml,
}

impl Format {
    fn of(path: &str) -> Format {
        let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("json") => Format::Json,
            Some("toml") => Format::Toml,
            _ => Format::Yaml,
        }
    }
}

fn parse_yaml(path: &str, text: &str) -> Result<Vec<Value>, RenderError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: MAX_DOCUMENTS_PER_FILE,
            max_nodes: 5_000_000,
            max_events: 10_000_000,
        },
    };
    serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        RenderError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: yaml_message(&e.to_string()),
        }
    })
}

fn parse_json(path: &str, text: &str) -> Result<Vec<Value>, RenderError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(docs)) => Ok(docs),
        Ok(doc) => Ok(vec![doc]),
        Err(e) => Err(RenderError::Parse {
            path: path.to_owned(),
            line: e.line() as u64,
            column: e.column() as u64,
            message: strip_position(&e.to_string()),
        }),
    }
}

fn parse_toml(path: &str, text: &str) -> Result<Vec<Value>, RenderError> {
    match toml::from_str::<Value>(text) {
        Ok(doc) => Ok(vec![doc]),
        Err(e) => {
            let (line, column) = e.span().map_or((0, 0), |s| line_column(text, s.start));
            Err(RenderError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            })
        }
    }
}

/// serde-saphyr's message without its "error: line L column C: " prefix (we
/// report the position separately) and without advice meant for programmers.
fn yaml_message(s: &str) -> String {
    let mut msg = s.lines().next().unwrap_or("").trim();
    msg = msg.strip_prefix("error: ").unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
        && rest
            .split_once(": ")
            .is_some_and(|(pos, _)| pos.contains(" column "))
    {
        msg = after;
    }
    let msg = msg.split(", set DuplicateKeyPolicy").next().unwrap_or(msg);
    msg.to_owned()
}

/// serde_json appends " at line L column C"; we report those separately.
fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line as u64, col as u64)
}

fn string_field<'v>(
    map: &'v Map<String, Value>,
    key: &str,
    origin: &Origin,
) -> Result<Option<&'v str>, RenderError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(RenderError::Invalid {
            origin: origin.clone(),
            message: format!(
                "{key} must be a string, found {}{}",
                type_name(other),
                quote_hint(key, other)
            ),
        }),
    }
}

/// For a boolean or number where a string belongs: why YAML read it so and
/// how to quote it.
fn quote_hint(key: &str, found: &Value) -> String {
    let key = key.rsplit('.').next().unwrap_or(key);
    match found {
        Value::Bool(b) => format!(
            " (YAML reads a plain {} as a boolean): quote it as written, e.g. {key}: \"{}\"",
            if *b {
                "y, yes, on or true"
            } else {
                "n, no, off or false"
            },
            if *b { "y" } else { "n" }
        ),
        Value::Number(n) => format!(
            " (YAML reads a plain {n} as a number): quote it as written, e.g. {key}: \"{n}\""
        ),
        _ => String::new(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn string_map(
    meta: &Map<String, Value>,
    key: &str,
    origin: &Origin,
) -> Result<BTreeMap<String, String>, RenderError> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                // Numbers and booleans are what people write for `replicas: 3`-like labels.
                Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
                other => Err(RenderError::Invalid {
                    origin: origin.clone(),
                    message: format!(
                        "metadata.{key}.{k} must be a string, found {}",
                        type_name(other)
                    ),
                }),
            })
            .collect(),
        Some(other) => Err(RenderError::Invalid {
            origin: origin.clone(),
            message: format!(
                "metadata.{key} must be a mapping, found {}",
                type_name(other)
            ),
        }),
    }
}

fn policy(annotations: &BTreeMap<String, String>, origin: &Origin) -> Result<Policy, RenderError> {
    let mut policy = Policy::default();
    if let Some(v) = annotations.get(DRIFT_ANNOTATION) {
        policy.drift = match v.as_str() {
            "revert" => DriftPolicy::Revert,
            "writeback" => DriftPolicy::Writeback,
            "ignore" => DriftPolicy::Ignore,
            other => {
                return Err(RenderError::Invalid {
                    origin: origin.clone(),
                    message: format!(
                        "annotation {DRIFT_ANNOTATION}: {other:?} is not one of revert, writeback, ignore"
                    ),
                });
            }
        };
    }
    if let Some(v) = annotations.get(PRUNE_ANNOTATION) {
        policy.prune = match v.as_str() {
            "enabled" | "true" => true,
            "disabled" | "false" => false,
            other => {
                return Err(RenderError::Invalid {
                    origin: origin.clone(),
                    message: format!(
                        "annotation {PRUNE_ANNOTATION}: {other:?} is not one of enabled, disabled"
                    ),
                });
            }
        };
    }
    Ok(policy)
}

fn depends_on(meta: &Map<String, Value>, origin: &Origin) -> Result<Vec<ResourceId>, RenderError> {
    let list = match meta.get("dependsOn") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(RenderError::Invalid {
                origin: origin.clone(),
                message: format!(
                    "metadata.dependsOn must be a list, found {}",
                    type_name(other)
                ),
            });
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<ResourceId>(v.clone()).map_err(|e| RenderError::Invalid {
                origin: origin.clone(),
                message: format!("metadata.dependsOn[{i}] ({v}): {e}"),
            })
        })
        .collect()
}

/// Turns one parsed document into a resource.
pub fn resource_from_document(doc: Value, origin: Origin) -> Result<Resource, RenderError> {
    let Value::Object(mut map) = doc else {
        return Err(RenderError::Invalid {
            message: format!("a manifest must be a mapping, found {}", type_name(&doc)),
            origin,
        });
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "spec"))
    {
        return Err(RenderError::Invalid {
            message: format!(
                "unknown top-level field {unknown:?} (expected apiVersion, kind, metadata, spec)"
            ),
            origin,
        });
    }
    let kind = string_field(&map, "kind", &origin)?
        .ok_or_else(|| RenderError::Missing {
            origin: origin.clone(),
            field: "kind",
        })?
        .to_owned();
    let api_version = string_field(&map, "apiVersion", &origin)?.map(str::to_owned);
    let meta = match map.get("metadata") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return Err(RenderError::Missing {
                origin,
                field: "metadata.name",
            });
        }
        Some(other) => {
            return Err(RenderError::Invalid {
                message: format!("metadata must be a mapping, found {}", type_name(other)),
                origin,
            });
        }
    };
    let name = string_field(meta, "name", &origin)?.ok_or_else(|| RenderError::Missing {
        origin: origin.clone(),
        field: "metadata.name",
    })?;
    let namespace = string_field(meta, "namespace", &origin)?;
    let id = ResourceId::with_namespace(kind, namespace, name).map_err(|source| {
        RenderError::InvalidId {
            origin: origin.clone(),
            source,
        }
    })?;
    let labels = string_map(meta, "labels", &origin)?;
    let annotations = string_map(meta, "annotations", &origin)?;
    let policy = policy(&annotations, &origin)?;
    let depends_on = depends_on(meta, &origin)?;
    let spec = map.remove("spec").unwrap_or(Value::Null);
    Ok(Resource {
        sensitive: false,
        id,
        api_version,
        spec: spec.into(),
        depends_on,
        labels,
        annotations,
        policy,
        origin,
    })
}

/// Below this many files, parsing stays on the calling thread.
const PARALLEL_MIN_FILES: usize = 32;

/// What one part of the files renders to.
type Rendered = (Vec<Resource>, Vec<RenderWarning>);

impl ManifestRender {
    fn render_files(&self, files: &[(&String, &SnapshotFile)]) -> Result<Rendered, RenderError> {
        let mut resources = Vec::new();
        let mut warnings = Vec::new();
        for (path, file) in files {
            for (document, doc) in self.parse_file(path, &file.data)?.into_iter().enumerate() {
                let origin = Origin {
                    path: (*path).clone(),
                    document,
                };
                resources.push(resource_from_document(doc, origin)?);
            }
            if matches!(Format::of(path), Format::Yaml)
                && let Ok(text) = std::str::from_utf8(&file.data)
            {
                warnings.extend(crate::yaml_lint::ambiguous(path, text));
            }
        }
        Ok((resources, warnings))
    }
}

impl ManifestRender {
    /// Parses matching files (on all cores when there are many). Errors are
    /// reported as a sequential parse would: the first failing file in path
    /// order.
    fn parts(&self, snapshot: &Snapshot) -> Result<RenderParts, RenderError> {
        let files: Vec<(&String, &SnapshotFile)> = snapshot
            .files()
            .iter()
            .filter(|(path, _)| self.matches(path))
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(files.len() / PARALLEL_MIN_FILES)
            .max(1);
        let (resources, warnings) = if threads == 1 {
            self.render_files(&files)?
        } else {
            let chunk = files.len().div_ceil(threads);
            let parts: Vec<Result<Rendered, RenderError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = files
                    .chunks(chunk)
                    .map(|part| scope.spawn(move || self.render_files(part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect()
            });
            let (mut resources, mut warnings) = (Vec::new(), Vec::new());
            for part in parts {
                let (r, w) = part?;
                resources.extend(r);
                warnings.extend(w);
            }
            (resources, warnings)
        };
        Ok(RenderParts {
            resources,
            warnings,
        })
    }
}

impl Render for ManifestRender {
    /// Parses matching files (on all cores when there are many), then
    /// validates the whole set. Errors are reported as a sequential parse
    /// would: the first failing file in path order.
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError> {
        let parts = self.parts(snapshot)?;
        Ok(
            DesiredState::new(snapshot.revision().clone(), parts.resources)?
                .with_warnings(parts.warnings),
        )
    }

    /// A file's documents depend on that file alone.
    fn render_parts(&self, snapshot: &Snapshot) -> Option<Result<RenderParts, RenderError>> {
        Some(self.parts(snapshot))
    }

    /// The kind, the patterns, the size limit and this crate's version (a
    /// new build may parse differently).
    fn fingerprint(&self) -> Option<String> {
        Some(format!(
            "manifests {} include {:?} exclude {:?} max {}",
            env!("CARGO_PKG_VERSION"),
            self.patterns.0,
            self.patterns.1,
            self.max_file_size
        ))
    }

    /// Replaces the resource's document with one whose `spec` is the observed
    /// state, in the file's own format. In YAML and in JSON arrays the other
    /// documents (and the comments around the document) stay byte-identical;
    /// comments inside the document are lost and its keys come out sorted (in
    /// the target's order when serde_json's `preserve_order` is on). A
    /// TOML or single-document JSON file is re-serialised whole. A resource
    /// deleted in the target removes its document (or the file, when it was
    /// the only one); an observed spec equal to Git's leaves the file as it
    /// is. The result is parsed again and refused unless it renders exactly
    /// the intended documents.
    fn write_back(
        &self,
        file: &SnapshotFile,
        resource: &Resource,
        observed: Option<&Observed>,
    ) -> Result<FileEdit, RenderError> {
        let origin = &resource.origin;
        let path = origin.path.as_str();
        let refuse = |message: String| RenderError::Writeback {
            id: resource.id.clone(),
            origin: origin.clone(),
            message,
        };
        let docs = self.parse_file(path, &file.data)?;
        let Some(original) = docs.get(origin.document) else {
            return Err(refuse(format!(
                "the file has only {} documents",
                docs.len()
            )));
        };
        let found = resource_from_document(original.clone(), origin.clone())?;
        if found.id != resource.id {
            return Err(refuse(format!("that document is now {}", found.id)));
        }
        let replacement = observed.map(|o| {
            let mut doc = original.clone();
            if let Value::Object(map) = &mut doc {
                match o.spec.to_value() {
                    Value::Null => map.remove("spec"),
                    spec => map.insert("spec".to_owned(), spec),
                };
            }
            doc
        });
        if replacement.as_ref() == Some(original) {
            // Git already holds it: rewriting would only lose the document's
            // comments and formatting.
            return Ok(FileEdit::Write {
                data: file.data.to_vec(),
                executable: file.executable,
            });
        }
        let mut expected = docs.clone();
        match &replacement {
            Some(doc) => expected[origin.document] = doc.clone(),
            None if docs.len() == 1 => return Ok(FileEdit::Remove),
            None => {
                expected.remove(origin.document);
            }
        }
        // parse_file checked that the bytes are UTF-8.
        let text = String::from_utf8_lossy(&file.data);
        let rewritten = match (Format::of(path), &replacement) {
            (Format::Yaml, doc) => edit::replace_yaml(&text, origin.document, doc.as_ref()),
            (Format::Json, Some(doc)) if text.trim_start().starts_with('[') => {
                edit::replace_json_element(&text, origin.document, doc)
            }
            (Format::Json, Some(doc)) => serde_json::to_string_pretty(doc)
                .map(|t| t + "\n")
                .map_err(|e| e.to_string()),
            (Format::Json, None) if text.trim_start().starts_with('[') => {
                edit::remove_json_element(&text, origin.document)
            }
            (Format::Json, None) => serde_json::to_string_pretty(&expected)
                .map(|t| t + "\n")
                .map_err(|e| e.to_string()),
            (Format::Toml, Some(doc)) => match null_path(doc, &mut String::new()) {
                Some(at) => Err(format!(
                    "TOML has no null, and the target holds null at {at}"
                )),
                None => toml::to_string_pretty(doc).map_err(|e| e.to_string()),
            },
            (Format::Toml, None) => Ok(String::new()),
        }
        .map_err(refuse)?;
        let reparsed = self
            .parse_file(path, rewritten.as_bytes())
            .map_err(|e| refuse(format!("the rewritten file does not parse: {e}")))?;
        if reparsed != expected {
            return Err(refuse(
                "the rewritten file would not hold exactly the intended documents".to_owned(),
            ));
        }
        Ok(FileEdit::Write {
            data: rewritten.into_bytes(),
            executable: file.executable,
        })
    }
}

/// Where the first `null` in `value` is, as a path like `spec.ports[1]`.
fn null_path(value: &Value, path: &mut String) -> Option<String> {
    let len = path.len();
    let found = match value {
        Value::Null => {
            return Some(if path.is_empty() {
                "the top".into()
            } else {
                path.clone()
            });
        }
        Value::Object(map) => map.iter().find_map(|(key, v)| {
            path.truncate(len);
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            null_path(v, path)
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            path.truncate(len);
            path.push_str(&format!("[{i}]"));
            null_path(v, path)
        }),
        _ => None,
    };
    path.truncate(len);
    found
}
