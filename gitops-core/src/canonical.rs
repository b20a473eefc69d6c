//! Key order for JSON objects that does not depend on serde_json's features.
//!
//! serde_json keeps object keys sorted unless some crate in the final binary
//! turns on its `preserve_order` feature (features unify across the whole
//! dependency graph, so a tool author's other dependencies decide, not us).
//! Digests and diffs must not change with that: they go through here.

use std::io::{self, Write};

use serde_json::{Map, Value};

/// The entries of `map`, ordered by key.
pub(crate) fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    // Already sorted without `preserve_order`: the check is all it costs.
    if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    entries
}

/// Writes `value` as compact JSON with every object's keys sorted: the bytes
/// `serde_json::to_writer` produces for a sorted map, whatever the map keeps.
pub(crate) fn write_canonical<W: Write>(out: &mut W, value: &Value) -> io::Result<()> {
    match value {
        // Digests run over every resource on every sync: no allocation when
        // the map is already sorted (always, without `preserve_order`).
        Value::Object(map) if map.keys().is_sorted() => write_object(out, map.iter()),
        Value::Object(map) => write_object(out, sorted_entries(map).into_iter()),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]")
        }
        scalar => Ok(serde_json::to_writer(out, scalar)?),
    }
}

fn write_object<'a, W: Write>(
    out: &mut W,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) -> io::Result<()> {
    out.write_all(b"{")?;
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        write_canonical(out, value)?;
    }
    out.write_all(b"}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map in insertion order when `preserve_order` is on; sorted otherwise.
    fn unsorted() -> Value {
        let mut inner = Map::new();
        inner.insert("z".into(), Value::from(1));
        inner.insert("a\"\n".into(), Value::from("é\u{1}"));
        let mut map = Map::new();
        map.insert("zeta".into(), Value::Object(inner));
        map.insert(
            "alpha".into(),
            Value::from(vec![Value::Null, Value::from(1.5)]),
        );
        map.insert("mid".into(), Value::Bool(true));
        Value::Object(map)
    }

    #[test]
    fn canonical_bytes_sort_keys_and_escape_like_serde_json() {
        let mut out = Vec::new();
        write_canonical(&mut out, &unsorted()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"alpha":[null,1.5],"mid":true,"zeta":{"a\"\n":"é\u0001","z":1}}"#
        );
    }

    #[test]
    fn canonical_bytes_equal_serde_json_for_sorted_maps() {
        // Stored digests were made with `serde_json::to_writer` on sorted maps:
        // they must stay valid.
        let value: Value = serde_json::from_str(
            r#"{"a":{"b":[1,-2,3.25e10,"x\ty",{"c":null}],"d":false},"e":"\u2028"}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        write_canonical(&mut out, &value).unwrap();
        assert_eq!(out, serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn entries_come_sorted() {
        let value = unsorted();
        let keys: Vec<_> = sorted_entries(value.as_object().unwrap())
            .into_iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["alpha", "mid", "zeta"]);
    }
}
