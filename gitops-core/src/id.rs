//! Resource identity: [`ResourceId`] and its string form.
//!
//! # String form
//!
//! Kinds and namespaces never contain `/`; names may (a file resource is named
//! by its relative path). The string form therefore puts the kind first, then
//! an optional namespace segment, then the name:
//!
//! | id | string |
//! |---|---|
//! | kind `Secret`, name `tls` | `Secret/tls` |
//! | kind `Secret`, namespace `prod`, name `tls` | `Secret/prod/tls` |
//! | kind `File`, name `etc/app.conf` (no namespace) | `File//etc/app.conf` |
//! | kind `File`, namespace `prod`, name `etc/app.conf` | `File/prod/etc/app.conf` |
//!
//! Parsing splits at the first `/` (the kind); if the rest holds another `/`,
//! the part before it is the namespace, and an empty namespace segment means
//! "no namespace". Every valid id round-trips through this form.
//!
//! No part may be empty, hold a control character, be longer than
//! [`MAX_PART_LEN`] bytes or begin with `-` (handed to a program as an
//! argument, `--context=prod` would read as an option); kinds and
//! namespaces hold no `/`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest allowed kind, namespace or name, in bytes (the Kubernetes limit).
pub const MAX_PART_LEN: usize = 253;

/// The identity of one resource: kind, optional namespace, name.
///
/// Construct with [`ResourceId::new`] or [`ResourceId::namespaced`] (both
/// validate), or parse the string form documented in [this module](self).
///
/// ```
/// use gitops_core::ResourceId;
/// let id: ResourceId = "Secret/prod/tls".parse()?;
/// assert_eq!(id.namespace(), Some("prod"));
/// assert_eq!(id.to_string(), "Secret/prod/tls");
/// let file = ResourceId::new("File", "etc/app.conf")?;
/// assert_eq!(file.to_string(), "File//etc/app.conf");
/// # Ok::<(), gitops_core::IdError>(())
/// ```
///
/// An id is one shared allocation holding its string form: cloning it is a
/// reference-count increment, which keeps plans and indexes of 100,000
/// resources small.
#[derive(Clone)]
pub struct ResourceId {
    /// The string form, e.g. `Kind/ns/name` or `Kind//a/b`.
    repr: Arc<str>,
    /// Byte range of the kind: `0..kind_end`.
    kind_end: u16,
    /// Byte range of the namespace when present: `kind_end + 1..ns_end`.
    ns_end: Option<u16>,
}

/// Why a kind, namespace or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A part was empty.
    #[error("resource {part} must not be empty (in {input:?})")]
    Empty {
        /// `kind`, `namespace` or `name`.
        part: &'static str,
        /// The offending input.
        input: String,
    },
    /// A kind or namespace contained `/`.
    #[error("resource {part} {value:?} must not contain '/'")]
    Slash {
        /// `kind` or `namespace`.
        part: &'static str,
        /// The offending value.
        value: String,
    },
    /// A part contained a control character (newline, NUL, escape, ...).
    #[error("resource {part} {value:?} contains a control character")]
    Control {
        /// `kind`, `namespace` or `name`.
        part: &'static str,
        /// The offending value.
        value: String,
    },
    /// A part was longer than [`MAX_PART_LEN`] bytes.
    #[error(
        "resource {part} is {len} bytes long, more than the limit of {MAX_PART_LEN}: {value:?}"
    )]
    TooLong {
        /// `kind`, `namespace` or `name`.
        part: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The offending value, cut to the limit.
        value: String,
    },
    /// A part began with `-`: a program given it as an argument would read
    /// an option (`--context=prod`), so ids never start one.
    #[error(
        "resource {part} {value:?} must not begin with '-' (it would read as a command-line option)"
    )]
    LeadingDash {
        /// `kind`, `namespace` or `name`.
        part: &'static str,
        /// The offending value.
        value: String,
    },
    /// A string form without a `/` between kind and name.
    #[error("resource id {input:?} is not of the form Kind/name or Kind/namespace/name")]
    Malformed {
        /// The offending input.
        input: String,
    },
}

fn validate(part: &'static str, value: &str, slash_allowed: bool) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty {
            part,
            input: value.to_owned(),
        });
    }
    if value.len() > MAX_PART_LEN {
        let mut cut = MAX_PART_LEN;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(IdError::TooLong {
            part,
            len: value.len(),
            value: value[..cut].to_owned(),
        });
    }
    if !slash_allowed && value.contains('/') {
        return Err(IdError::Slash {
            part,
            value: value.to_owned(),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::Control {
            part,
            value: value.to_owned(),
        });
    }
    if value.starts_with('-') {
        return Err(IdError::LeadingDash {
            part,
            value: value.to_owned(),
        });
    }
    Ok(())
}

impl ResourceId {
    /// An id without a namespace.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Result<Self, IdError> {
        Self::with_namespace(kind, None::<String>, name)
    }

    /// An id in a namespace.
    pub fn namespaced(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<Self, IdError> {
        Self::with_namespace(kind, Some(namespace), name)
    }

    /// An id with an optional namespace.
    pub fn with_namespace(
        kind: impl Into<String>,
        namespace: Option<impl Into<String>>,
        name: impl Into<String>,
    ) -> Result<Self, IdError> {
        let kind = kind.into();
        let namespace = namespace.map(Into::into);
        let name = name.into();
        validate("kind", &kind, false)?;
        if let Some(ns) = &namespace {
            validate("namespace", ns, false)?;
        }
        validate("name", &name, true)?;
        // Parts are at most 253 bytes, so every offset fits in a u16.
        let kind_end = kind.len() as u16;
        let (repr, ns_end) = match &namespace {
            Some(ns) => (
                format!("{kind}/{ns}/{name}"),
                Some(kind_end + 1 + ns.len() as u16),
            ),
            None if name.contains('/') => (format!("{kind}//{name}"), None),
            None => (format!("{kind}/{name}"), None),
        };
        Ok(Self {
            repr: repr.into(),
            kind_end,
            ns_end,
        })
    }

    /// The kind, e.g. `ConfigFile`.
    pub fn kind(&self) -> &str {
        &self.repr[..self.kind_end as usize]
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.ns_end
            .map(|end| &self.repr[self.kind_end as usize + 1..end as usize])
    }

    /// The name; may contain `/`.
    pub fn name(&self) -> &str {
        let start = match self.ns_end {
            Some(end) => end as usize + 1,
            None if self.repr[self.kind_end as usize + 1..].starts_with('/') => {
                self.kind_end as usize + 2
            }
            None => self.kind_end as usize + 1,
        };
        &self.repr[start..]
    }

    /// The string form (what `Display` prints), without allocating.
    pub fn as_str(&self) -> &str {
        &self.repr
    }
}

// The string form is a bijection of (kind, namespace, name), so equality and
// hashing can use it directly; ordering compares the parts.
impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.repr == other.repr
    }
}

impl Eq for ResourceId {}

impl Hash for ResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.repr.hash(state);
    }
}

impl Ord for ResourceId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.kind(), self.namespace(), self.name()).cmp(&(
            other.kind(),
            other.namespace(),
            other.name(),
        ))
    }
}

impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({:?})", &*self.repr)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repr)
    }
}

impl FromStr for ResourceId {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = input.split_once('/').ok_or_else(|| IdError::Malformed {
            input: input.to_owned(),
        })?;
        match rest.split_once('/') {
            Some(("", name)) => Self::new(kind, name),
            Some((ns, name)) => Self::namespaced(kind, ns, name),
            None => Self::new(kind, rest),
        }
    }
}

/// The structured form accepted in `dependsOn` and produced by serialization.
#[derive(Serialize, Deserialize)]
struct Structured {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    name: String,
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The string form is shortest and unambiguous; JSON readers get one token per id.
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Short(String),
            Structured(Structured),
        }
        match Either::deserialize(deserializer)? {
            Either::Short(s) => s.parse().map_err(serde::de::Error::custom),
            Either::Structured(s) => ResourceId::with_namespace(s.kind, s.namespace, s.name)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms() {
        let id: ResourceId = "Secret/tls".parse().unwrap();
        assert_eq!(
            (id.kind(), id.namespace(), id.name()),
            ("Secret", None, "tls")
        );
        let id: ResourceId = "Secret/prod/tls".parse().unwrap();
        assert_eq!(id.namespace(), Some("prod"));
        let id: ResourceId = "File//a/b.conf".parse().unwrap();
        assert_eq!((id.namespace(), id.name()), (None, "a/b.conf"));
    }

    #[test]
    fn validation_names_the_value() {
        let err = ResourceId::new("Con/fig", "x").unwrap_err();
        assert!(err.to_string().contains("Con/fig"), "{err}");
        let err = ResourceId::new("Kind", "a\nb").unwrap_err();
        assert!(matches!(err, IdError::Control { part: "name", .. }));
        let err = ResourceId::new("", "x").unwrap_err();
        assert!(matches!(err, IdError::Empty { part: "kind", .. }));
        let err = ResourceId::new("K", "x".repeat(254)).unwrap_err();
        assert!(matches!(err, IdError::TooLong { len: 254, .. }));
        assert!(ResourceId::new("K", "x".repeat(253)).is_ok());
        assert!(matches!(
            "nokind".parse::<ResourceId>(),
            Err(IdError::Malformed { .. })
        ));
    }

    #[test]
    fn serde_accepts_both_forms() {
        let a: ResourceId = serde_json::from_str(r#""Secret/prod/tls""#).unwrap();
        let b: ResourceId =
            serde_json::from_str(r#"{"kind":"Secret","namespace":"prod","name":"tls"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#""Secret/prod/tls""#);
        assert!(serde_json::from_str::<ResourceId>(r#"{"kind":"a/b","name":"x"}"#).is_err());
    }
}
