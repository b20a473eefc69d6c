//! [`Spec`]: the state of one resource, desired or observed, as compact JSON.
//!
//! # The decision
//!
//! A spec is JSON (manifests are YAML, JSON or TOML; every target speaks
//! some JSON shape), and the engine holds one per resource for the whole
//! desired state, often 100,000 of them. Held as a `serde_json::Value`, a
//! four-field spec costs ~1.6 KB, because every JSON object is a `BTreeMap`
//! whose node is ~630 bytes however few keys it holds. A `Spec` instead
//! keeps the **canonical JSON text** (compact, object keys sorted) in one
//! shared allocation: the same spec costs its text plus 16 bytes, clones
//! for free, compares by bytes, and its digest is the SHA-256 of that text
//! (the bytes digests were always computed over, so stored digests stay
//! valid).
//!
//! A target reads a spec typed, with [`Spec::parse`] (or
//! [`Resource::spec_as`](crate::Resource::spec_as), whose errors name the
//! resource), or as a `serde_json::Value` with [`Spec::to_value`]; it builds
//! one from any `Value` (`Spec::from(json!(...))`) or any serializable type
//! ([`Spec::from_serialize`]). `gitops_core::serde_json` re-exports the
//! crate, so none of this needs a dependency of its own.
//!
//! ```
//! use gitops_core::{Spec, serde_json::json};
//!
//! #[derive(serde::Deserialize)]
//! struct Row { name: String, port: u16 }
//!
//! let spec = Spec::from(json!({"port": 80, "name": "web"}));
//! assert_eq!(spec.as_str(), r#"{"name":"web","port":80}"#); // keys sorted
//! let row: Row = spec.parse()?;
//! assert_eq!((row.name.as_str(), row.port), ("web", 80));
//! assert_eq!(spec.to_value()["port"], 80);
//! assert_eq!(spec, json!({"name": "web", "port": 80}));
//! # Ok::<(), gitops_core::SpecError>(())
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// A spec could not be read as the type asked for, or a value could not be
/// turned into a spec.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// Where in the spec: `spec`, `spec.ports[1].number`, ...
    pub path: String,
    /// What is wrong there, in serde's words.
    pub message: String,
}

/// The state of one resource as compact, canonical JSON text (object keys
/// sorted), shared by every clone. See the [module docs](self) for why.
///
/// Equality is equality of the canonical text, which is equality of the
/// JSON values (`1` and `1.0` differ, as they do for `serde_json::Value`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Spec(Arc<str>);

impl Spec {
    /// The canonical JSON text of `value` (object keys sorted at every level,
    /// whatever serde_json's `preserve_order` feature says).
    pub fn new(value: &Value) -> Self {
        let mut text = Vec::with_capacity(64);
        // Writing into a Vec cannot fail, and serde_json writes valid UTF-8.
        let _ = crate::canonical::write_canonical(&mut text, value);
        Spec(Arc::from(String::from_utf8_lossy(&text).as_ref()))
    }

    /// The spec of any serializable value (a typed spec struct, a map, ...).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, SpecError> {
        serde_json::to_value(value)
            .map(|v| Spec::new(&v))
            .map_err(|e| SpecError {
                path: "spec".into(),
                message: e.to_string(),
            })
    }

    /// Parses JSON text (any key order or spacing) into its canonical spec.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let value: Value = serde_json::from_str(text).map_err(|e| SpecError {
            path: "spec".into(),
            message: e.to_string(),
        })?;
        Ok(Spec::new(&value))
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The length of the canonical text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never: even `null` has four bytes).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The spec as a `serde_json::Value`, parsed from the text on each call:
    /// for typed access prefer [`parse`](Spec::parse).
    pub fn to_value(&self) -> Value {
        let mut de = serde_json::Deserializer::from_str(&self.0);
        // The text was written by serde_json from a Value that already had
        // this depth; parsing it back needs no more stack than building it.
        de.disable_recursion_limit();
        // A Spec's text is always valid JSON written by serde_json, so this
        // cannot fail; Null is unreachable, not a silent fallback for input.
        Value::deserialize(&mut de).unwrap_or(Value::Null)
    }

    /// The spec read as `T`; a mismatch names the field path
    /// (`spec.ports[1].number: invalid type: string "80", expected u16`).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, SpecError> {
        let mut de = serde_json::Deserializer::from_str(&self.0);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            SpecError {
                path: if path == "." {
                    "spec".to_owned()
                } else {
                    format!("spec.{path}")
                },
                message: e.into_inner().to_string(),
            }
        })
    }

    /// A copy with `edit` applied to its value: normalising an observation,
    /// or a test's changed spec.
    ///
    /// ```
    /// use gitops_core::{Spec, serde_json::json};
    ///
    /// let spec = Spec::from(json!({"replicas": 2}));
    /// let more = spec.edited(|v| v["replicas"] = json!(5));
    /// assert_eq!(more, json!({"replicas": 5}));
    /// ```
    #[must_use]
    pub fn edited(&self, edit: impl FnOnce(&mut Value)) -> Spec {
        let mut value = self.to_value();
        edit(&mut value);
        Spec::new(&value)
    }

    /// The value at the top-level object key `key`, if the spec is an object
    /// holding it. Parses the whole spec: read many fields with
    /// [`parse`](Spec::parse) or [`to_value`](Spec::to_value) instead.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self.to_value() {
            Value::Object(mut map) => map.remove(key),
            _ => None,
        }
    }

    /// SHA-256 of the canonical text, in hex: what the inventory and the
    /// audit log record as "what was applied".
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
}

/// Lower-case hex of `bytes` (without `fmt`: a digest per resource per
/// render adds up).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

impl Default for Spec {
    /// `null`, like `serde_json::Value::default()`.
    fn default() -> Self {
        Spec::new(&Value::Null)
    }
}

impl From<Value> for Spec {
    fn from(value: Value) -> Self {
        Spec::new(&value)
    }
}

impl From<&Value> for Spec {
    fn from(value: &Value) -> Self {
        Spec::new(value)
    }
}

impl From<Spec> for Value {
    fn from(spec: Spec) -> Self {
        spec.to_value()
    }
}

impl PartialEq<Value> for Spec {
    fn eq(&self, other: &Value) -> bool {
        *self == Spec::new(other)
    }
}

impl PartialEq<Spec> for Value {
    fn eq(&self, other: &Spec) -> bool {
        other == self
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Spec {
    /// The canonical JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Spec {
    /// As the JSON value itself (not a string), in any serde format.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|v| Spec::new(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_canonical_and_digest_matches_the_stored_rule() {
        let spec = Spec::from(json!({"b": 1, "a": {"d": [true, null], "c": "x"}}));
        assert_eq!(spec.as_str(), r#"{"a":{"c":"x","d":[true,null]},"b":1}"#);
        // The digest rule from format 1: SHA-256 of serde_json's compact
        // bytes of a sorted map.
        let bytes = serde_json::to_vec(&json!({"a": {"c": "x", "d": [true, null]}, "b": 1}))
            .expect("serialises");
        let want: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(spec.digest(), want);
    }

    #[test]
    fn round_trips_through_value_and_serde() {
        let value = json!({"s": "é\n\"", "n": -1.5, "big": u64::MAX, "arr": [{}, []]});
        let spec = Spec::from(&value);
        assert_eq!(spec.to_value(), value);
        assert_eq!(spec, value);
        let text = serde_json::to_string(&spec).expect("serialises");
        assert_eq!(text, spec.as_str());
        let back: Spec = serde_json::from_str(&text).expect("deserialises");
        assert_eq!(back, spec);
        assert_eq!(
            Spec::from_json(
                r#" { "n":-1.5, "s":"é\n\"" , "big": 18446744073709551615, "arr":[{},[]] }"#
            )
            .expect("parses"),
            spec
        );
    }

    #[test]
    fn typed_reads_name_the_field_path() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Port {
            number: u16,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Svc {
            ports: Vec<Port>,
        }
        let spec = Spec::from(json!({"ports": [{"number": 80}, {"number": "80"}]}));
        let err = spec.parse::<Svc>().expect_err("a string is not a u16");
        assert_eq!(err.path, "spec.ports[1].number");
        assert!(
            err.to_string()
                .starts_with("spec.ports[1].number: invalid type")
        );
        let err = Spec::from(json!(3)).parse::<Svc>().expect_err("not a map");
        assert_eq!(err.path, "spec");
    }

    #[test]
    fn deep_nesting_reads_back() {
        let mut value = json!(1);
        for _ in 0..300 {
            value = json!([value]);
        }
        assert_eq!(Spec::from(&value).to_value(), value);
    }

    #[test]
    fn get_reads_one_top_level_key() {
        let spec = Spec::from(json!({"format": "json", "n": 1}));
        assert_eq!(spec.get("format"), Some(json!("json")));
        assert_eq!(spec.get("missing"), None);
        assert_eq!(Spec::from(json!([1])).get("format"), None);
    }

    #[test]
    fn is_smaller_than_a_value() {
        // The point of the type: text plus one shared header.
        let spec = Spec::from(json!({"replicas": 3, "image": "web:1.2.3", "env": {"A": "1"}}));
        assert!(spec.len() < 64, "{}", spec.len());
        assert_eq!(std::mem::size_of::<Spec>(), 16);
    }
}
