//! Warnings for YAML values that YAML 1.1 and YAML 1.2 read differently.
//!
//! The manifest parser reads plain `yes`, `no`, `on`, `off`, `y` and `n` as
//! booleans (YAML 1.1; YAML 1.2 reads them as strings) and `0755` as the
//! decimal 755 (YAML 1.2; YAML 1.1 read it as octal 493). Either way some
//! author meant the other, and the value reaches the target silently; a
//! warning in the plan, naming file and line, lets a reviewer catch it.
//!
//! The parser's values carry no positions, so this walks the file's YAML
//! events with `granit-parser` (the event parser serde-saphyr is built on)
//! to find *plain* scalars (quoted ones are strings in every version) and
//! their lines. A cheap scan of the text skips that walk for files without
//! a candidate word.

use granit_parser::{Event, Parser, ScalarStyle};

use crate::render::{RenderWarning, WarningKind};

/// The YAML 1.1 boolean spellings YAML 1.2 reads as strings (`true` and
/// `false` are booleans in both).
const AMBIGUOUS_BOOLEANS: [&str; 6] = ["yes", "no", "on", "off", "y", "n"];

/// Warnings for the ambiguous plain scalars of `text` (a YAML file at
/// `path`). Mapping keys are not values and are skipped; a parse error ends
/// the walk quietly (the parser proper reports it).
pub(crate) fn ambiguous(path: &str, text: &str) -> Vec<RenderWarning> {
    if !has_candidate(text) {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    // One entry per open collection: for a mapping, whether the next node is a key.
    let mut expecting_key: Vec<Option<bool>> = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let is_key = matches!(expecting_key.last(), Some(Some(true)));
        match &event {
            Event::MappingStart(..) => expecting_key.push(Some(true)),
            Event::SequenceStart(..) => expecting_key.push(None),
            Event::MappingEnd | Event::SequenceEnd => {
                expecting_key.pop();
            }
            Event::Scalar(value, ScalarStyle::Plain, _, None) if !is_key => {
                if let Some(kind) = classify(value) {
                    warnings.push(RenderWarning {
                        path: path.to_owned(),
                        line: span.start.line() as u64,
                        kind,
                    });
                }
            }
            _ => {}
        }
        // A whole node went by (a scalar, an alias, or the end of a
        // collection): in a mapping, a key is followed by a value and back.
        let completes_node = matches!(
            event,
            Event::Scalar(..) | Event::Alias(..) | Event::MappingEnd | Event::SequenceEnd
        );
        if completes_node && let Some(Some(next)) = expecting_key.last_mut() {
            *next = !*next;
        }
    }
    warnings
}

/// Whether a plain scalar reads differently in YAML 1.1 and 1.2.
fn classify(text: &str) -> Option<WarningKind> {
    if AMBIGUOUS_BOOLEANS
        .iter()
        .any(|b| text.eq_ignore_ascii_case(b))
    {
        return Some(WarningKind::YamlBoolean {
            text: text.to_owned(),
        });
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(WarningKind::LeadingZero {
            text: text.to_owned(),
        });
    }
    None
}

/// Whether `text` holds a word that could be a whole ambiguous scalar: a
/// fast pre-check so most files skip the event walk. A word counts only
/// where a plain scalar can start and end (after a space, `:`, `[`, `{`,
/// `,`; before the end of the line, a space, `,`, `]`, `}`), so `cm-0001`
/// or `on-call` does not trigger the walk.
fn has_candidate(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        if c.is_ascii_alphanumeric() || (c == '-' || c == '+') && i == start {
            continue;
        }
        let word = &text[start..i];
        let before = start.checked_sub(1).map(|p| bytes[p]);
        let opens = matches!(
            before,
            None | Some(b' ' | b':' | b'[' | b'{' | b',' | b'\t')
        );
        let closes = matches!(c, ' ' | '\n' | '\r' | ',' | ']' | '}' | '\t' | '#');
        if !word.is_empty() && opens && closes && classify(word).is_some() {
            return true;
        }
        start = i + c.len_utf8();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(u64, String)> {
        ambiguous("a.yaml", text)
            .into_iter()
            .map(|w| {
                let text = match w.kind {
                    WarningKind::YamlBoolean { text } | WarningKind::LeadingZero { text } => text,
                    other => format!("{other:?}"),
                };
                (w.line, text)
            })
            .collect()
    }

    #[test]
    fn plain_values_are_found_with_their_lines() {
        let text = "kind: Row\nmetadata: { name: web }\nspec:\n  enabled: yes\n  mode: 0755\n  \
                    list: [on, 'off', \"no\", N]\n  neg: -007\n  fine: 0\n  also: 0.5\n";
        assert_eq!(
            lines(text),
            [
                (4, "yes".to_owned()),
                (5, "0755".to_owned()),
                (6, "on".to_owned()),
                (6, "N".to_owned()),
                (7, "-007".to_owned()),
            ]
        );
    }

    #[test]
    fn keys_quoted_values_and_block_text_are_not_warned() {
        let text = "spec:\n  yes: 1\n  on: 'on'\n  text: |\n    say yes\n    0755\n  n: \"y\"\n";
        assert!(lines(text).is_empty(), "{:?}", lines(text));
    }

    #[test]
    fn nested_mappings_keep_key_and_value_apart() {
        let text = "spec:\n  a:\n    b: off\n  c: [ {d: y}, 01 ]\n  e: x\n";
        assert_eq!(
            lines(text),
            [
                (3, "off".to_owned()),
                (4, "y".to_owned()),
                (4, "01".to_owned())
            ]
        );
    }

    #[test]
    fn files_without_a_candidate_skip_the_walk() {
        assert!(!has_candidate("kind: Row\nspec: { port: 80, name: web }\n"));
        assert!(!has_candidate(
            "metadata: { name: cm-0001-0 }\nspec: { who: on-call }\n"
        ));
        assert!(has_candidate("spec: { a: on }"));
        assert!(has_candidate("spec:\n  mode: 0755\n"));
        assert!(has_candidate("list: [a, -007]"));
        assert!(has_candidate("enabled: yes"));
    }
}
