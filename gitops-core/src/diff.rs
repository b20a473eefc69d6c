//! Field-level differences between an observed and a desired spec.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::canonical::sorted_entries;

/// One changed field: its path under `spec` and the old and new values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Path like `spec.ports[0].port` or `spec["a.b"]`.
    pub path: String,
    /// The observed value; `None` when the field is absent in the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The desired value; `None` when Git no longer has the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// The fields that differ, in document order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct Diff {
    /// Every changed leaf.
    pub changes: Vec<FieldChange>,
}

impl Diff {
    /// The fields of `new` that differ from `old`; `None` when the values are equal.
    pub fn between(old: &Value, new: &Value) -> Option<Diff> {
        if old == new {
            return None;
        }
        let mut changes = Vec::new();
        let mut path = String::from("spec");
        walk(&mut path, Some(old), Some(new), &mut changes);
        Some(Diff { changes })
    }

    /// The fields of spec `new` that differ from `old`; `None` when the
    /// specs are equal (compared as text first, so equal specs cost no parse).
    pub fn specs(old: &crate::Spec, new: &crate::Spec) -> Option<Diff> {
        if old == new {
            return None;
        }
        Diff::between(&old.to_value(), &new.to_value())
    }

    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn push_key(path: &mut String, key: &str) {
    if is_plain_key(key) {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        // A JSON string literal is an unambiguous, escaped rendering of any key.
        path.push_str(&Value::String(key.to_owned()).to_string());
        path.push(']');
    }
}

fn walk(path: &mut String, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    let len = path.len();
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            // Merge both maps in key order, in one pass.
            let (a, b) = (sorted_entries(a), sorted_entries(b));
            let mut ia = a.into_iter().peekable();
            let mut ib = b.into_iter().peekable();
            loop {
                let (key, va, vb) = match (ia.peek(), ib.peek()) {
                    (None, None) => break,
                    (Some((ka, va)), Some((kb, vb))) if ka == kb => {
                        let r = (ka.as_str(), Some(*va), Some(*vb));
                        ia.next();
                        ib.next();
                        r
                    }
                    (Some((ka, va)), Some((kb, _))) if ka < kb => {
                        let r = (ka.as_str(), Some(*va), None);
                        ia.next();
                        r
                    }
                    (Some((ka, va)), None) => {
                        let r = (ka.as_str(), Some(*va), None);
                        ia.next();
                        r
                    }
                    (_, Some((kb, vb))) => {
                        let r = (kb.as_str(), None, Some(*vb));
                        ib.next();
                        r
                    }
                };
                push_key(path, key);
                walk(path, va, vb, out);
                path.truncate(len);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                use fmt::Write as _;
                let _ = write!(path, "[{i}]");
                walk(path, a.get(i), b.get(i), out);
                path.truncate(len);
            }
        }
        _ => out.push(FieldChange {
            path: path.clone(),
            old: old.cloned(),
            new: new.cloned(),
        }),
    }
}

fn show(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(Value::String(s)) if s == crate::secret::SENSITIVE => s.clone(),
        Some(v) => {
            let s = v.to_string();
            const MAX: usize = 120;
            if s.len() > MAX {
                let mut cut = MAX;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}… ({} bytes)", &s[..cut], s.len())
            } else {
                s
            }
        }
    }
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} -> {}",
            self.path,
            show(self.old.as_ref()),
            show(self.new.as_ref())
        )
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, change) in self.changes.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{change}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_have_no_diff() {
        assert!(Diff::between(&json!({"a": 1}), &json!({"a": 1})).is_none());
    }

    #[test]
    fn names_changed_paths() {
        let old = json!({"replicas": 1, "ports": [{"port": 80}], "gone": true, "a.b": 1});
        let new =
            json!({"replicas": 3, "ports": [{"port": 80}, {"port": 443}], "a.b": 2, "added": "x"});
        let diff = Diff::between(&old, &new).unwrap();
        let paths: Vec<_> = diff.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec[\"a.b\"]",
                "spec.added",
                "spec.gone",
                "spec.ports[1]",
                "spec.replicas"
            ]
        );
        assert_eq!(diff.changes[4].to_string(), "spec.replicas: 1 -> 3");
        assert_eq!(diff.changes[2].new, None);
        assert_eq!(diff.changes[1].old, None);
    }

    #[test]
    fn type_change_at_root() {
        let diff = Diff::between(&json!("x"), &json!({"a": 1})).unwrap();
        assert_eq!(diff.changes.len(), 1);
        assert_eq!(diff.changes[0].path, "spec");
    }
}
