//! Rewriting one document of a manifest file in place (write-back), leaving
//! the file's other documents byte-identical.

use std::ops::Range;

use serde_json::Value;

/// One YAML document of a stream, as byte ranges of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlDocument {
    /// From the first content line to the end of the last content line:
    /// leading and trailing comments stay outside.
    pub content: Range<usize>,
    /// The whole document, with its directives, its `---` line and its `...`
    /// line (removing it removes the document).
    pub whole: Range<usize>,
    /// The content starts on the `---` line itself (`--- {a: 1}`).
    pub inline_marker: bool,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// The documents of a YAML stream that hold content, in order. YAML forbids
/// `---` and `...` at the start of a line inside content, so splitting by
/// lines is exact; comment-only documents are skipped, as the parser does.
pub(crate) fn yaml_documents(text: &str) -> Vec<YamlDocument> {
    struct Open {
        start: usize,
        first: Option<usize>,
        last_end: usize,
        inline_marker: bool,
        /// The first `%` directive line before the next `---`.
        directive: Option<usize>,
    }
    let mut docs = Vec::new();
    // A byte order mark is not content: the first line starts after it (and
    // it stays in the file whatever happens to the first document).
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let mut open = Open {
        start: bom,
        first: None,
        last_end: bom,
        inline_marker: false,
        directive: None,
    };
    let close = |open: &Open, end: usize, docs: &mut Vec<YamlDocument>| {
        if let Some(first) = open.first {
            docs.push(YamlDocument {
                content: first..open.last_end,
                whole: open.start..end,
                inline_marker: open.inline_marker,
            });
        }
    };
    let mut offset = bom;
    for raw in text[bom..].split_inclusive('\n') {
        let start = offset;
        let end = offset + raw.len();
        offset = end;
        let line = raw.trim_end_matches(['\n', '\r']);
        if is_marker(line, "---") {
            close(&open, start, &mut docs);
            let rest = line[3..].trim();
            let inline = !rest.is_empty() && !rest.starts_with('#');
            // Directives apply to the document they precede.
            let directive = open.first.is_none().then_some(open.directive).flatten();
            open = Open {
                start: directive.unwrap_or(start),
                first: inline.then_some(start),
                last_end: end,
                inline_marker: inline,
                directive: None,
            };
            continue;
        }
        if is_marker(line, "...") {
            close(&open, end, &mut docs);
            open = Open {
                start: end,
                first: None,
                last_end: end,
                inline_marker: false,
                directive: None,
            };
            continue;
        }
        if line.starts_with('%') && open.first.is_none() {
            open.directive.get_or_insert(start);
            continue;
        }
        let trimmed = line.trim_start();
        let blank = trimmed.is_empty() || line.starts_with('%');
        // Before the content, any comment is a leading comment; after it, only
        // a comment at column 0 (an indented `#` may be inside a block scalar).
        let comment = if open.first.is_none() {
            trimmed.starts_with('#')
        } else {
            line.starts_with('#')
        };
        if blank || comment {
            continue;
        }
        if open.first.is_none() {
            open.first = Some(start);
        }
        open.last_end = end;
    }
    close(&open, text.len(), &mut docs);
    docs
}

/// Serialises one manifest document as YAML, ending with a newline.
pub(crate) fn to_yaml(doc: &Value) -> Result<String, String> {
    let mut text = serde_saphyr::to_string(doc).map_err(|e| e.to_string())?;
    if let Some(rest) = text.strip_prefix("---\n") {
        text = rest.to_owned();
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Replaces document `index` of a YAML stream with `doc`, or removes it.
pub(crate) fn replace_yaml(
    text: &str,
    index: usize,
    doc: Option<&Value>,
) -> Result<String, String> {
    let docs = yaml_documents(text);
    let Some(target) = docs.get(index) else {
        return Err(format!(
            "the file has {} documents, not {}",
            docs.len(),
            index + 1
        ));
    };
    let mut out = String::with_capacity(text.len() + 256);
    match doc {
        Some(doc) => {
            let mut replacement = to_yaml(doc)?;
            if target.inline_marker {
                replacement.insert_str(0, "---\n");
            }
            // Line breaks as the document (else the file) had them; YAML
            // reads both alike.
            let content = &text[target.content.clone()];
            let sample = if content.contains('\n') {
                content
            } else {
                text
            };
            if sample.contains("\r\n") {
                replacement = replacement.replace('\n', "\r\n");
            }
            if !content.ends_with('\n') {
                // The file ends without a line break: so does the document.
                replacement.pop();
                if replacement.ends_with('\r') {
                    replacement.pop();
                }
            }
            out.push_str(&text[..target.content.start]);
            out.push_str(&replacement);
            out.push_str(&text[target.content.end..]);
        }
        None => {
            out.push_str(&text[..target.whole.start]);
            out.push_str(&text[target.whole.end..]);
        }
    }
    Ok(out)
}

/// The byte ranges of the elements of a JSON array, in order.
fn json_elements(text: &str) -> Result<Vec<Range<usize>>, String> {
    let elements: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(elements
        .iter()
        .map(|element| {
            let raw = element.get();
            // The raw value borrows from `text`: its address gives its offset.
            let start = raw.as_ptr() as usize - text.as_ptr() as usize;
            start..start + raw.len()
        })
        .collect())
}

fn element_out_of_range(count: usize, index: usize) -> String {
    format!("the array has {count} documents, not {}", index + 1)
}

/// Replaces element `index` of a JSON array with `doc` (pretty-printed at the
/// element's indentation), leaving the other elements' bytes as they were.
pub(crate) fn replace_json_element(
    text: &str,
    index: usize,
    doc: &Value,
) -> Result<String, String> {
    let elements = json_elements(text)?;
    let Some(Range { start, end }) = elements.get(index).cloned() else {
        return Err(element_out_of_range(elements.len(), index));
    };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = text[line_start..start]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect();
    let pretty = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    let replacement = pretty.replace('\n', &format!("\n{indent}"));
    Ok(format!("{}{}{}", &text[..start], replacement, &text[end..]))
}

/// Removes element `index` of a JSON array with its separator, leaving the
/// other elements' bytes as they were.
pub(crate) fn remove_json_element(text: &str, index: usize) -> Result<String, String> {
    let elements = json_elements(text)?;
    let Some(element) = elements.get(index) else {
        return Err(element_out_of_range(elements.len(), index));
    };
    // Up to the next element (its comma and the space before it), or, for
    // the last one, from the end of the previous element (its comma).
    let cut = match (elements.get(index + 1), index.checked_sub(1)) {
        (Some(next), _) => element.start..next.start,
        (None, Some(previous)) => elements[previous].end..element.end,
        (None, None) => element.clone(),
    };
    Ok(format!("{}{}", &text[..cut.start], &text[cut.end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_are_found_between_markers_and_comments_stay_outside() {
        let text = "# head\na: 1\n---\n# lead\nb: 2\n# tail\n---\n# only a comment\n--- {c: 3}\n";
        let docs = yaml_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!(&text[docs[0].content.clone()], "a: 1\n");
        assert_eq!(&text[docs[1].content.clone()], "b: 2\n");
        assert_eq!(&text[docs[2].content.clone()], "--- {c: 3}\n");
        assert!(docs[2].inline_marker);
    }

    #[test]
    fn an_indented_hash_at_the_end_is_content() {
        let text = "a: |\n  x\n  # not a comment\n---\nb: 1\n";
        let docs = yaml_documents(text);
        assert_eq!(
            &text[docs[0].content.clone()],
            "a: |\n  x\n  # not a comment\n"
        );
    }

    #[test]
    fn replacing_keeps_the_other_documents_byte_identical() {
        let text = "a:   1 # keep me\n---\n# lead\nb: 2\n---\nc:    3\n";
        let out = replace_yaml(text, 1, Some(&json!({"b": 5}))).unwrap();
        assert_eq!(out, "a:   1 # keep me\n---\n# lead\nb: 5\n---\nc:    3\n");
        let removed = replace_yaml(text, 1, None).unwrap();
        assert_eq!(removed, "a:   1 # keep me\n---\nc:    3\n");
    }

    #[test]
    fn a_byte_order_mark_is_not_content_and_is_kept() {
        let text = "\u{feff}# managed by hand\n---\na: 1\n---\nb: 2\n";
        let docs = yaml_documents(text);
        assert_eq!(docs.len(), 2, "the BOM-prefixed comment is not a document");
        let out = replace_yaml(text, 1, Some(&json!({"b": 5}))).unwrap();
        assert_eq!(out, "\u{feff}# managed by hand\n---\na: 1\n---\nb: 5\n");
        let first = "\u{feff}a: 1\n---\nb: 2\n";
        let out = replace_yaml(first, 0, Some(&json!({"a": 5}))).unwrap();
        assert_eq!(out, "\u{feff}a: 5\n---\nb: 2\n");
    }

    #[test]
    fn a_crlf_file_stays_crlf() {
        let text = "a: 1\r\n---\r\nb: {c: 2}\r\n---\r\nd: 3";
        let out = replace_yaml(text, 1, Some(&json!({"b": {"c": 5}}))).unwrap();
        assert_eq!(out, "a: 1\r\n---\r\nb:\r\n  c: 5\r\n---\r\nd: 3");
        let out = replace_yaml(text, 2, Some(&json!({"d": [4]}))).unwrap();
        assert_eq!(out, "a: 1\r\n---\r\nb: {c: 2}\r\n---\r\nd:\r\n- 4");
        let inline = "a: 1\r\n--- {b: 2}\r\n";
        let out = replace_yaml(inline, 1, Some(&json!({"b": 3}))).unwrap();
        assert_eq!(out, "a: 1\r\n---\r\nb: 3\r\n");
    }

    #[test]
    fn removing_a_document_takes_its_end_marker_and_its_directives() {
        let ended = "a: 1\n...\n---\nb: 2\n...\n";
        assert_eq!(replace_yaml(ended, 0, None).unwrap(), "---\nb: 2\n...\n");
        assert_eq!(replace_yaml(ended, 1, None).unwrap(), "a: 1\n...\n");
        let directives = "# head\n%YAML 1.2\n---\na: 1\n...\n%YAML 1.2\n---\nb: 2\n";
        assert_eq!(
            replace_yaml(directives, 0, None).unwrap(),
            "# head\n%YAML 1.2\n---\nb: 2\n"
        );
        assert_eq!(
            replace_yaml(directives, 1, None).unwrap(),
            "# head\n%YAML 1.2\n---\na: 1\n...\n"
        );
    }

    #[test]
    fn json_elements_are_replaced_in_place() {
        let text = "[\n  {\"a\":1},\n  {\"b\": 2}\n]\n";
        let out = replace_json_element(text, 1, &json!({"b": 3})).unwrap();
        assert_eq!(out, "[\n  {\"a\":1},\n  {\n    \"b\": 3\n  }\n]\n");
    }
}
