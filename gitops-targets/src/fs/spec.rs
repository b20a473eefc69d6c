//! What a `File` resource is to this target: the id's path, the parsed
//! spec, the observed spec, and the drift between the two.

use base64::Engine as _;
use gitops_core::diff::FieldChange;
use gitops_core::files::FILE_KIND;
use gitops_core::model::validate_relative_path;
use gitops_core::{Diff, Observed, Resource, ResourceId, TargetError};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::TEMP_PREFIX;
use super::stat_cache::{hex, unhex};

/// What was applied at a path: content digest and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    sha256: [u8; 32],
    mode: u32,
}

impl Fingerprint {
    pub(super) fn of(bytes: &[u8], mode: u32) -> Self {
        Self::from_digest(Sha256::digest(bytes).into(), mode)
    }

    pub(super) fn from_digest(sha256: [u8; 32], mode: u32) -> Self {
        Self { sha256, mode }
    }
}

/// The key of an observation from the stat cache: the SHA-256 (hex) of
/// the content the file holds, in place of `content`.
const SHA256: &str = "sha256";

/// A validated file spec.
pub(super) struct FileSpec<'a> {
    pub(super) path: &'a str,
    pub(super) bytes: Vec<u8>,
    pub(super) mode: u32,
}

/// What is at a path, as read.
pub(super) enum Found {
    File { bytes: Vec<u8>, mode: u32 },
    TooLarge { size: u64, mode: u32 },
    Other { kind: &'static str },
}

pub(super) fn invalid(id: &ResourceId, message: impl Into<String>) -> TargetError {
    TargetError::InvalidSpec {
        id: id.clone(),
        message: message.into(),
    }
}

/// The path a `File` id manages, after checking kind, namespace and path.
pub(super) fn path_of(id: &ResourceId) -> Result<&str, TargetError> {
    if id.kind() != FILE_KIND {
        return Err(invalid(
            id,
            format!(
                "FsTarget manages kind {FILE_KIND:?} only, not {:?}",
                id.kind()
            ),
        ));
    }
    if id.namespace().is_some() {
        return Err(invalid(id, "File resources have no namespace"));
    }
    let path = id.name();
    validate_relative_path(path).map_err(|e| invalid(id, e.to_string()))?;
    if path
        .rsplit('/')
        .next()
        .is_some_and(|base| base.starts_with(TEMP_PREFIX))
    {
        return Err(invalid(
            id,
            format!("file names starting with {TEMP_PREFIX:?} are reserved"),
        ));
    }
    Ok(path)
}

fn parse_mode(id: &ResourceId, mode: Option<&Value>) -> Result<u32, TargetError> {
    match mode {
        None => Ok(0o644),
        Some(Value::String(m)) if m == "0644" || m == "644" => Ok(0o644),
        Some(Value::String(m)) if m == "0755" || m == "755" => Ok(0o755),
        // Secrets (files decrypted from `NAME.age` deploy as 0600).
        Some(Value::String(m)) if m == "0600" || m == "600" => Ok(0o600),
        Some(Value::String(m)) if m == "0640" || m == "640" => Ok(0o640),
        Some(other) => Err(invalid(
            id,
            format!(
                "mode {other} refused: only \"0644\", \"0755\", \"0640\" and \"0600\" are allowed (no setuid, setgid, sticky or world-writable bits)"
            ),
        )),
    }
}

fn decode_content(id: &ResourceId, spec: &Value) -> Result<Vec<u8>, TargetError> {
    let content = match spec.get("content") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid(id, "\"content\" must be a string")),
        None => return Err(invalid(id, "\"content\" is missing")),
    };
    match spec
        .get("encoding")
        .and_then(Value::as_str)
        .unwrap_or("utf-8")
    {
        "utf-8" | "utf8" => Ok(content.as_bytes().to_vec()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|e| invalid(id, format!("\"content\" is not valid base64: {e}"))),
        other => Err(invalid(
            id,
            format!("encoding {other:?} is not \"utf-8\" or \"base64\""),
        )),
    }
}

impl<'a> FileSpec<'a> {
    pub(super) fn parse(resource: &'a Resource, max_size: u64) -> Result<Self, TargetError> {
        let id = &resource.id;
        let path = path_of(id)?;
        let spec = &resource.spec.to_value();
        if !spec.is_object() {
            return Err(invalid(id, "spec must be an object"));
        }
        match spec.get("path") {
            None => {}
            Some(Value::String(p)) if p == path => {}
            Some(other) => {
                return Err(invalid(
                    id,
                    format!("spec.path {other} differs from the resource name {path:?}"),
                ));
            }
        }
        let bytes = decode_content(id, spec)?;
        if bytes.len() as u64 > max_size {
            return Err(invalid(
                id,
                format!(
                    "content is {} bytes, more than the limit of {max_size}",
                    bytes.len()
                ),
            ));
        }
        let mode = parse_mode(id, spec.get("mode"))?;
        Ok(Self { path, bytes, mode })
    }
}

fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// The observed spec in the shape [`gitops_core::files::file_spec`] produces.
pub(super) fn observed_spec(path: &str, found: Found) -> Value {
    let mut spec = Map::new();
    spec.insert("path".to_owned(), Value::String(path.to_owned()));
    match found {
        Found::File { bytes, mode } => {
            // Text moves into the JSON string without a copy.
            let (content, encoding) = match String::from_utf8(bytes) {
                Ok(text) => (text, "utf-8"),
                Err(e) => (
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    "base64",
                ),
            };
            spec.insert("content".to_owned(), Value::String(content));
            spec.insert("encoding".to_owned(), Value::String(encoding.to_owned()));
            spec.insert("mode".to_owned(), Value::String(mode_string(mode)));
        }
        Found::TooLarge { size, mode } => {
            spec.insert("size".to_owned(), json!(size));
            spec.insert("mode".to_owned(), Value::String(mode_string(mode)));
        }
        Found::Other { kind } => {
            spec.insert("type".to_owned(), Value::String(kind.to_owned()));
        }
    }
    Value::Object(spec)
}

/// An observation the stat cache answered: the file holds the content
/// whose SHA-256 is `digest`, with `mode` (its content was not read).
pub(super) fn cached_spec(path: &str, digest: &[u8; 32], mode: u32) -> Value {
    let mut spec = Map::new();
    spec.insert("path".to_owned(), Value::String(path.to_owned()));
    spec.insert(SHA256.to_owned(), Value::String(hex(digest)));
    spec.insert("mode".to_owned(), Value::String(mode_string(mode)));
    Value::Object(spec)
}

/// The bytes and permission bits of an observation of `id` that read a
/// regular file (not one from the stat cache, not a non-file).
pub(super) fn observed_content(id: &ResourceId, observed: &Observed) -> Option<(Vec<u8>, u32)> {
    let spec = &observed.spec.to_value();
    if spec.get("type").is_some() || spec.get("content").is_none() {
        return None;
    }
    let bytes = decode_content(id, spec).ok()?;
    let mode = u32::from_str_radix(field(spec, "mode")?, 8).ok()?;
    Some((bytes, mode))
}

/// Drift against an observation from the stat cache: the desired bytes'
/// digest against the recorded one, and the modes.
fn cached_diff(desired: &Resource, recorded: &str, have: &Value) -> Option<Diff> {
    let want = &desired.spec.to_value();
    let same_content = match (decode_content(&desired.id, want), unhex(recorded)) {
        (Ok(bytes), Some(digest)) => <[u8; 32]>::from(Sha256::digest(&bytes)) == digest,
        _ => false,
    };
    let want_mode = parse_mode(&desired.id, want.get("mode")).ok();
    let mut changes = Vec::new();
    if !same_content {
        changes.push(FieldChange {
            path: "spec.content".to_owned(),
            old: Some(Value::String(format!("{SHA256}:{recorded}"))),
            new: want.get("content").cloned(),
        });
    }
    if want_mode.map(mode_string).as_deref() != field(have, "mode") {
        changes.push(FieldChange {
            path: "spec.mode".to_owned(),
            old: have.get("mode").cloned(),
            new: want.get("mode").cloned(),
        });
    }
    (!changes.is_empty()).then_some(Diff { changes })
}

fn field<'v>(spec: &'v Value, key: &str) -> Option<&'v str> {
    spec.get(key).and_then(Value::as_str)
}

/// Drift between a desired file and an observed one: compares the decoded
/// bytes and the mode, whatever the encodings.
pub(super) fn file_diff(desired: &Resource, observed: &Observed) -> Option<Diff> {
    // Fastest path: the same canonical text.
    if desired.spec == observed.spec {
        return None;
    }
    let want = &desired.spec.to_value();
    let have = &observed.spec.to_value();
    if let (Some(recorded), None) = (field(have, SHA256), have.get("content")) {
        return cached_diff(desired, recorded, have);
    }
    // Fast path: same encoding, same text, same mode.
    if have.get("type").is_none()
        && field(want, "content").is_some()
        && field(want, "content") == field(have, "content")
        && field(want, "encoding").unwrap_or("utf-8") == field(have, "encoding").unwrap_or("utf-8")
        && matches!(
            (field(want, "mode").unwrap_or("0644"), field(have, "mode")),
            ("0644" | "644", Some("0644"))
                | ("0755" | "755", Some("0755"))
                | ("0600" | "600", Some("0600"))
                | ("0640" | "640", Some("0640"))
        )
    {
        return None;
    }
    let want_bytes = decode_content(&desired.id, want).ok();
    let have_bytes = decode_content(&desired.id, have).ok();
    let want_mode = parse_mode(&desired.id, want.get("mode")).ok();
    let have_mode = have.get("mode").and_then(Value::as_str);
    let mut changes = Vec::new();
    if want_bytes.is_none() || want_bytes != have_bytes {
        changes.push(FieldChange {
            path: "spec.content".to_owned(),
            old: have.get("content").cloned(),
            new: want.get("content").cloned(),
        });
    }
    if want_mode.map(mode_string).as_deref() != have_mode {
        changes.push(FieldChange {
            path: "spec.mode".to_owned(),
            old: have.get("mode").cloned(),
            new: want.get("mode").cloned(),
        });
    }
    if let Some(kind) = have.get("type") {
        changes.push(FieldChange {
            path: "spec.type".to_owned(),
            old: Some(kind.clone()),
            new: Some(json!("file")),
        });
    }
    (!changes.is_empty()).then_some(Diff { changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, spec: Value) -> Resource {
        Resource::new(ResourceId::new(FILE_KIND, path).expect("an id"), spec)
    }

    fn message(err: TargetError) -> String {
        match err {
            TargetError::InvalidSpec { message, .. } => message,
            other => panic!("not an invalid spec: {other:?}"),
        }
    }

    #[test]
    fn only_file_ids_with_safe_paths_are_managed() {
        let ok = ResourceId::new(FILE_KIND, "etc/app.conf").expect("an id");
        assert_eq!(path_of(&ok).expect("managed"), "etc/app.conf");
        let other = ResourceId::new("ConfigMap", "x").expect("an id");
        assert!(message(path_of(&other).unwrap_err()).contains("manages kind"));
        let temp = ResourceId::new(FILE_KIND, format!("etc/{TEMP_PREFIX}1")).expect("an id");
        assert!(message(path_of(&temp).unwrap_err()).contains("reserved"));
    }

    #[test]
    fn a_spec_is_decoded_with_its_mode_and_limit() {
        let text = file("a", json!({"content": "hi", "mode": "755"}));
        let parsed = FileSpec::parse(&text, 16).expect("valid");
        assert_eq!((parsed.bytes.as_slice(), parsed.mode), (&b"hi"[..], 0o755));
        let binary = file("a", json!({"content": "aGk=", "encoding": "base64"}));
        let parsed = FileSpec::parse(&binary, 16).expect("valid");
        assert_eq!((parsed.bytes.as_slice(), parsed.mode), (&b"hi"[..], 0o644));
        let big = file("a", json!({"content": "hello"}));
        assert!(message(FileSpec::parse(&big, 4).err().expect("too big")).contains("limit of 4"));
        let setuid = file("a", json!({"content": "", "mode": "4755"}));
        assert!(message(FileSpec::parse(&setuid, 4).err().expect("refused")).contains("mode"));
        let moved = file("a", json!({"content": "", "path": "b"}));
        assert!(message(FileSpec::parse(&moved, 4).err().expect("refused")).contains("spec.path"));
    }

    #[test]
    fn the_observed_spec_round_trips_through_the_diff() {
        let desired = file("a", json!({"content": "aGk=", "encoding": "base64"}));
        let seen = observed_spec(
            "a",
            Found::File {
                bytes: b"hi".to_vec(),
                mode: 0o644,
            },
        );
        assert_eq!(seen["encoding"], "utf-8");
        assert!(file_diff(&desired, &Observed::new(seen)).is_none());
        let changed = observed_spec(
            "a",
            Found::File {
                bytes: b"ho".to_vec(),
                mode: 0o755,
            },
        );
        let diff = file_diff(&desired, &Observed::new(changed)).expect("drift");
        let paths: Vec<&str> = diff.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["spec.content", "spec.mode"]);
        let dir = observed_spec("a", Found::Other { kind: "directory" });
        let diff = file_diff(&desired, &Observed::new(dir)).expect("drift");
        assert!(diff.changes.iter().any(|c| c.path == "spec.type"));
    }

    #[test]
    fn an_observation_from_the_stat_cache_is_compared_by_digest() {
        let desired = file("a", json!({"content": "aGk=", "encoding": "base64"}));
        let digest: [u8; 32] = Sha256::digest(b"hi").into();
        let same = Observed::new(cached_spec("a", &digest, 0o644));
        assert!(same.spec.get("content").is_none());
        assert!(file_diff(&desired, &same).is_none());
        let other: [u8; 32] = Sha256::digest(b"ho").into();
        let changed = Observed::new(cached_spec("a", &other, 0o755));
        let diff = file_diff(&desired, &changed).expect("differs");
        let paths: Vec<&str> = diff.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["spec.content", "spec.mode"]);
        let old = diff.changes[0].old.as_ref().and_then(Value::as_str);
        assert!(old.is_some_and(|o| o.starts_with("sha256:")), "{old:?}");
        // What a read observation holds, for confirming it as desired.
        let read = Observed::new(observed_spec(
            "a",
            Found::File {
                bytes: b"hi".to_vec(),
                mode: 0o755,
            },
        ));
        assert_eq!(
            observed_content(&desired.id, &read),
            Some((b"hi".to_vec(), 0o755))
        );
        assert_eq!(observed_content(&desired.id, &same), None);
    }
}
