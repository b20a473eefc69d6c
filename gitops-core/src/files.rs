//! [`FilesRender`]: every file of the snapshot becomes a `File` resource.

use base64::Engine as _;
use globset::GlobSet;
use serde_json::json;

use crate::id::ResourceId;
use crate::model::{DriftPolicy, Observed, Origin, Resource, Snapshot, SnapshotFile};
use crate::render::{DesiredState, FileEdit, Render, RenderError, RenderParts};

/// The kind of the resources made by [`FilesRender`].
pub const FILE_KIND: &str = "File";

/// "Deploy these config files": each file under the snapshot is a resource of
/// kind `File`, named by its relative path, with spec
/// `{ "path", "content", "encoding": "utf-8" | "base64", "mode": "0644" | "0755" }`.
///
/// ```
/// use gitops_core::{FilesRender, Render, Revision, Snapshot};
/// let snap = Snapshot::from_files(
///     Revision::new("main", "0".repeat(40)),
///     [("etc/app.conf", &b"port = 80\n"[..])],
/// )?;
/// let desired = FilesRender::new().render(&snap)?;
/// let file = &desired.resources()[0];
/// assert_eq!(file.id.to_string(), "File//etc/app.conf");
/// assert_eq!(file.spec.get("content"), Some("port = 80\n".into()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct FilesRender {
    exclude: Option<GlobSet>,
    /// The patterns of `exclude`, for [`Render::fingerprint`].
    exclude_patterns: Vec<String>,
    drift: DriftPolicy,
}

impl FilesRender {
    /// Every file.
    pub fn new() -> Self {
        Self::default()
    }

    /// What drift does to every file (default [`DriftPolicy::Revert`]);
    /// [`DriftPolicy::Writeback`] records changes made in the target in Git.
    pub fn drift_policy(mut self, policy: DriftPolicy) -> Self {
        self.drift = policy;
        self
    }

    /// Skips files matching one of `patterns` (glob syntax).
    pub fn exclude(mut self, patterns: &[&str]) -> Result<Self, RenderError> {
        let mut builder = globset::GlobSetBuilder::new();
        for p in patterns {
            builder.add(globset::Glob::new(p).map_err(|e| RenderError::Config {
                message: format!("bad glob {p:?}: {e}"),
            })?);
        }
        self.exclude = Some(builder.build().map_err(|e| RenderError::Config {
            message: e.to_string(),
        })?);
        self.exclude_patterns = patterns.iter().map(|p| (*p).to_owned()).collect();
        Ok(self)
    }
}

/// The spec of a file resource: text when the bytes are UTF-8, else base64.
pub fn file_spec(path: &str, data: &[u8], executable: bool) -> serde_json::Value {
    let mode = if executable { "0755" } else { "0644" };
    match std::str::from_utf8(data) {
        Ok(text) => json!({ "path": path, "content": text, "encoding": "utf-8", "mode": mode }),
        Err(_) => json!({
            "path": path,
            "content": base64::engine::general_purpose::STANDARD.encode(data),
            "encoding": "base64",
            "mode": mode,
        }),
    }
}

impl FilesRender {
    /// One resource per file not excluded.
    fn files(&self, snapshot: &Snapshot) -> Result<RenderParts, RenderError> {
        let mut resources = Vec::with_capacity(snapshot.len());
        for (path, file) in snapshot.files() {
            if self.exclude.as_ref().is_some_and(|g| g.is_match(path)) {
                continue;
            }
            let origin = Origin {
                path: path.clone(),
                document: 0,
            };
            let id = ResourceId::new(FILE_KIND, path.as_str()).map_err(|source| {
                RenderError::InvalidId {
                    origin: origin.clone(),
                    source,
                }
            })?;
            let mut r = Resource::new(id, file_spec(path, &file.data, file.executable));
            r.origin = origin;
            r.policy.drift = self.drift;
            resources.push(r);
        }
        Ok(RenderParts {
            resources,
            warnings: Vec::new(),
        })
    }
}

impl Render for FilesRender {
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError> {
        let parts = self.files(snapshot)?;
        DesiredState::new(snapshot.revision().clone(), parts.resources)
    }

    /// Each file is one resource of its own.
    fn render_parts(&self, snapshot: &Snapshot) -> Option<Result<RenderParts, RenderError>> {
        Some(self.files(snapshot))
    }

    /// The kind, the exclusions, the drift policy and this crate's version
    /// (a new build may render differently).
    fn fingerprint(&self) -> Option<String> {
        Some(format!(
            "files {} exclude {:?} drift {:?}",
            env!("CARGO_PKG_VERSION"),
            self.exclude_patterns,
            self.drift
        ))
    }

    /// The file's bytes and mode as the target holds them; a file deleted in
    /// the target is removed from Git.
    fn write_back(
        &self,
        file: &SnapshotFile,
        resource: &Resource,
        observed: Option<&Observed>,
    ) -> Result<FileEdit, RenderError> {
        let Some(observed) = observed else {
            return Ok(FileEdit::Remove);
        };
        let refuse = |message: String| RenderError::Writeback {
            id: resource.id.clone(),
            origin: resource.origin.clone(),
            message,
        };
        let spec = observed.spec.to_value();
        let content = spec
            .get("content")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| refuse("the observed spec has no `content` string".to_owned()))?;
        let data = match spec.get("encoding").and_then(serde_json::Value::as_str) {
            None | Some("utf-8") => content.as_bytes().to_vec(),
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(content)
                .map_err(|e| refuse(format!("observed content is not valid base64: {e}")))?,
            Some(other) => return Err(refuse(format!("unknown encoding {other:?}"))),
        };
        let executable = match spec.get("mode").and_then(serde_json::Value::as_str) {
            None => file.executable,
            Some("0755") => true,
            Some("0644") => false,
            Some(other) => {
                return Err(refuse(format!(
                    "mode {other:?} cannot be stored in Git (only 0644 and 0755)"
                )));
            }
        };
        Ok(FileEdit::Write { data, executable })
    }
}
