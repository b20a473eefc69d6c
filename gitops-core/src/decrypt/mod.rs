//! [`Decrypt`]: a render wrapper that decrypts age-encrypted files, so any
//! renderer deploys secrets kept encrypted in Git.
//!
//! Every file `NAME.age` of the snapshot (binary or ASCII-armored age
//! format) is decrypted with the [`Identities`] and handed to the inner
//! renderer as `NAME`: with [`FilesRender`](crate::FilesRender) it deploys
//! as the file `NAME` with mode 0600; with
//! [`ManifestRender`](crate::ManifestRender) `NAME.yaml.age` (or `.json.age`,
//! `.toml.age`) is parsed as `NAME.yaml`. Every resource rendered from an
//! encrypted file is [`sensitive`](crate::Resource#structfield.sensitive) and
//! keeps the encrypted file as its origin.
//!
//! A file no identity opens, a truncated or tampered one, refuses the
//! revision whole with [`RenderError::Decrypt`] naming the file; the last
//! good state stays deployed.
//!
//! ```
//! use gitops_core::decrypt::{Decrypt, Identities};
//! use gitops_core::{FilesRender, Render, Revision, Snapshot};
//!
//! let render = Decrypt::new(FilesRender::new(), Identities::new());
//! let snap = Snapshot::from_files(Revision::new("main", "0".repeat(40)), [("a.conf", &b"x"[..])])?;
//! assert_eq!(render.render(&snap)?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;

use crate::files::FILE_KIND;
use crate::model::{
    DriftPolicy, MAX_FILE_BYTES, Observed, Origin, Resource, Snapshot, SnapshotFile,
};
use crate::render::{
    DesiredState, FileEdit, Render, RenderError, RenderParts, RenderWarning, WarningKind,
};

mod keys;

pub use keys::{AgeError, Identities, Recipients};

/// The extension of encrypted files.
pub const AGE_SUFFIX: &str = ".age";

/// Mode of a file deployed from an encrypted file by the files render.
pub const SECRET_MODE: &str = "0600";

/// Decrypts `.age` files before `R` renders; marks what they render
/// sensitive. See the [module docs](self).
///
/// Drift of a sensitive resource under the `writeback` policy is
/// re-encrypted to the [recipients](Decrypt::writeback_recipients); with
/// none, its policy becomes `revert` (a warning says so) and it is never
/// written back in plain text.
#[derive(Debug)]
pub struct Decrypt<R> {
    inner: R,
    identities: Identities,
    recipients: Recipients,
}

impl<R: Render> Decrypt<R> {
    /// Wraps `inner`; encrypted files are opened with `identities`.
    pub fn new(inner: R, identities: Identities) -> Self {
        Self {
            inner,
            identities,
            recipients: Recipients::new(),
        }
    }

    /// Re-encrypts write-backs of sensitive resources to `recipients`.
    /// Without recipients, write-back of a sensitive resource is refused
    /// (never written in plain text).
    pub fn writeback_recipients(mut self, recipients: Recipients) -> Self {
        self.recipients = recipients;
        self
    }

    /// The wrapped renderer.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// The snapshot with every `.age` file decrypted under its plain name,
    /// and a map from each plain name to its encrypted name.
    fn decrypt_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> Result<(Snapshot, HashMap<String, String>), RenderError> {
        let mut plain = Snapshot::new(snapshot.revision().clone());
        let mut encrypted = HashMap::new();
        for (path, file) in snapshot.files() {
            let Some(name) = plain_name(path) else {
                insert(&mut plain, path, file.data.clone(), file.executable)?;
                continue;
            };
            if snapshot.files().contains_key(name) {
                return Err(RenderError::Decrypt {
                    path: path.clone(),
                    message: format!("{name} exists too, in plain text"),
                });
            }
            let data = self
                .identities
                .decrypt(&file.data, MAX_FILE_BYTES)
                .map_err(|message| RenderError::Decrypt {
                    path: path.clone(),
                    message,
                })?;
            insert(&mut plain, name, data, file.executable)?;
            encrypted.insert(name.to_owned(), path.clone());
        }
        Ok((plain, encrypted))
    }
}

/// `NAME` for `NAME.age` (a non-empty last component before the suffix).
fn plain_name(path: &str) -> Option<&str> {
    let name = path.strip_suffix(AGE_SUFFIX)?;
    (!name.is_empty() && !name.ends_with('/')).then_some(name)
}

fn insert(
    snapshot: &mut Snapshot,
    path: &str,
    data: impl Into<std::sync::Arc<[u8]>>,
    executable: bool,
) -> Result<(), RenderError> {
    snapshot
        .insert(path, data, executable)
        .map_err(|e| RenderError::Decrypt {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Marks a resource from an encrypted file: sensitive, its origin the
/// encrypted file, a file resource's mode 0600, and a `writeback` drift
/// policy `revert` when there is no recipient to re-encrypt to.
fn mark(
    mut r: Resource,
    encrypted: &HashMap<String, String>,
    writes_back: bool,
    warnings: &mut Vec<RenderWarning>,
) -> Resource {
    let Some(age_path) = encrypted.get(&r.origin.path) else {
        return r;
    };
    r.origin.path = age_path.clone();
    r.sensitive = true;
    if !writes_back && r.policy.drift == DriftPolicy::Writeback {
        // Never written back in plain text: reverted instead, and the plan
        // and the engine's `Warnings` event say so.
        warnings.push(RenderWarning {
            path: r.origin.path.clone(),
            line: 0,
            kind: WarningKind::WritebackRefused { id: r.id.clone() },
        });
        r.policy.drift = DriftPolicy::Revert;
    }
    if r.id.kind() == FILE_KIND && r.spec.get("mode").is_some() {
        r.spec = r.spec.edited(|v| {
            if let Some(map) = v.as_object_mut() {
                map.insert("mode".to_owned(), SECRET_MODE.into());
            }
        });
    }
    r
}

/// The same error naming the encrypted file, with anything a parser may
/// quote from the plaintext withheld.
fn scrub(error: RenderError, encrypted: &HashMap<String, String>) -> RenderError {
    const WITHHELD: &str = "(details withheld: the file is sensitive)";
    let renamed = |path: &str| encrypted.get(path).cloned();
    let origin = |o: Origin| match renamed(&o.path) {
        Some(path) => Origin { path, ..o },
        None => o,
    };
    match error {
        RenderError::Parse {
            path,
            line,
            column,
            message,
        } => match renamed(&path) {
            Some(path) => RenderError::Parse {
                path,
                line,
                column,
                message: WITHHELD.to_owned(),
            },
            None => RenderError::Parse {
                path,
                line,
                column,
                message,
            },
        },
        RenderError::NotUtf8 { path, offset } => RenderError::NotUtf8 {
            path: renamed(&path).unwrap_or(path),
            offset,
        },
        RenderError::TooLarge { path, size, limit } => RenderError::TooLarge {
            path: renamed(&path).unwrap_or(path),
            size,
            limit,
        },
        RenderError::Missing { origin: o, field } => RenderError::Missing {
            origin: origin(o),
            field,
        },
        RenderError::Invalid { origin: o, message } => {
            let sensitive = encrypted.contains_key(&o.path);
            RenderError::Invalid {
                origin: origin(o),
                message: if sensitive {
                    WITHHELD.to_owned()
                } else {
                    message
                },
            }
        }
        RenderError::InvalidId { origin: o, source } => RenderError::InvalidId {
            origin: origin(o),
            source,
        },
        RenderError::DuplicateId { id, first, second } => RenderError::DuplicateId {
            id,
            first: origin(first),
            second: origin(second),
        },
        RenderError::UnknownDependency {
            id,
            dependency,
            origin: o,
        } => RenderError::UnknownDependency {
            id,
            dependency,
            origin: origin(o),
        },
        other => other,
    }
}

impl<R: Render> Render for Decrypt<R> {
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError> {
        if !snapshot.files().keys().any(|p| plain_name(p).is_some()) {
            return self.inner.render(snapshot);
        }
        let (plain, encrypted) = self.decrypt_snapshot(snapshot)?;
        let desired = self
            .inner
            .render(&plain)
            .map_err(|e| scrub(e, &encrypted))?;
        let revision = desired.revision().clone();
        // The inner renderer's warnings, except those about a decrypted
        // file: they quote its values.
        let mut warnings: Vec<RenderWarning> = desired
            .warnings()
            .iter()
            .filter(|w| !encrypted.contains_key(&w.path))
            .cloned()
            .collect();
        let writes_back = !self.recipients.is_empty();
        let resources = desired
            .into_resources()
            .into_iter()
            .map(|r| mark(r, &encrypted, writes_back, &mut warnings))
            .collect();
        Ok(DesiredState::new(revision, resources)
            .map_err(|e| scrub(e, &encrypted))?
            .with_warnings(warnings))
    }

    /// The inner renderer's parts when no file is encrypted; `None` otherwise,
    /// so that nothing of a sensitive resource is ever kept by a
    /// [`RenderCache`](crate::RenderCache) (encrypted files are never
    /// cached, and a snapshot holding one is rendered whole).
    fn render_parts(&self, snapshot: &Snapshot) -> Option<Result<RenderParts, RenderError>> {
        if snapshot.files().keys().any(|p| plain_name(p).is_some()) {
            return None;
        }
        self.inner.render_parts(snapshot)
    }

    /// An ordinary resource: the inner renderer's write-back. A sensitive
    /// one: re-encrypted to the [recipients](Decrypt::writeback_recipients),
    /// or refused when there are none (never written in plain text).
    fn write_back(
        &self,
        file: &SnapshotFile,
        resource: &Resource,
        observed: Option<&Observed>,
    ) -> Result<FileEdit, RenderError> {
        let Some(name) = plain_name(&resource.origin.path).filter(|_| resource.sensitive) else {
            return self.inner.write_back(file, resource, observed);
        };
        let refuse = |message: String| RenderError::Writeback {
            id: resource.id.clone(),
            origin: resource.origin.clone(),
            message,
        };
        if self.recipients.is_empty() {
            return Err(refuse(
                "the resource is sensitive and no write-back recipients are configured: \
                 it is never written back in plain text"
                    .to_owned(),
            ));
        }
        let data = self
            .identities
            .decrypt(&file.data, MAX_FILE_BYTES)
            .map_err(|e| refuse(format!("cannot decrypt: {e}")))?;
        let plain_file = SnapshotFile {
            data: data.into(),
            executable: file.executable,
        };
        let mut plain = resource.clone();
        plain.origin.path = name.to_owned();
        let observed = observed.map(|o| Observed::new(unmark_mode(&plain, &o.spec)));
        let edit = self
            .inner
            .write_back(&plain_file, &plain, observed.as_ref())
            .map_err(|_| refuse("the inner renderer refused the write-back".to_owned()))?;
        match edit {
            FileEdit::Remove => Ok(FileEdit::Remove),
            FileEdit::Write { data, executable } => Ok(FileEdit::Write {
                data: self.recipients.encrypt(&data).map_err(refuse)?,
                executable,
            }),
        }
    }
}

/// A file resource's observed mode as Git stores it (0600 and 0640 are
/// what deploying an encrypted file made of 0644).
fn unmark_mode(resource: &Resource, spec: &crate::Spec) -> crate::Spec {
    if resource.id.kind() != FILE_KIND {
        return spec.clone();
    }
    spec.edited(|v| {
        if let Some(mode) = v.get_mut("mode")
            && matches!(mode.as_str(), Some("0600" | "0640"))
        {
            *mode = "0644".into();
        }
    })
}
