//! The config file as written: TOML parsed with serde into [`RawFile`],
//! every value with its position (`toml::Spanned`), unknown keys refused.
//! An error names the line, the section (`[defaults]` or the application)
//! and the key, and suggests the key meant when one is close.

use std::ops::Range;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

use super::{ConfigError, Section};

/// A value and where it is.
pub type Located<T> = Spanned<T>;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RawFile {
    /// `[defaults]`.
    #[serde(default)]
    pub defaults: Option<Located<RawApp>>,
    /// Every `[[app]]`.
    #[serde(default)]
    pub app: Vec<Located<RawApp>>,
}

/// One `[[app]]` (or `[defaults]`), as written. Every key is optional here;
/// [`merge`](super::merge) says which are required.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)] // the keys are documented in docs/agent.md
pub struct RawApp {
    pub name: Option<Located<String>>,
    pub repo: Option<Located<String>>,
    pub branch: Option<Located<String>>,
    pub tag: Option<Located<String>>,
    pub semver: Option<Located<String>>,
    pub commit: Option<Located<String>>,
    pub path: Option<Located<String>>,
    pub render: Option<Located<String>>,
    pub target_dir: Option<Located<String>>,
    pub target: Option<Located<toml::Table>>,
    pub depends_on: Option<Located<Vec<String>>>,
    pub drift: Option<Located<String>>,
    pub prune: Option<Located<bool>>,
    pub interval: Option<Located<String>>,
    pub drift_interval: Option<Located<String>>,
    pub allow: Option<Located<Vec<String>>>,
    pub deny: Option<Located<Vec<String>>>,
    pub writeback_branch: Option<Located<String>>,
    pub writeback_key: Option<Located<String>>,
    pub verify_signers: Option<Located<String>>,
    pub verify_pgp_keys: Option<Located<Vec<String>>>,
    pub verify_mode: Option<Located<String>>,
}

/// Every key an `[[app]]` accepts (for suggestions).
pub const KEYS: &[&str] = &[
    "name",
    "repo",
    "branch",
    "tag",
    "semver",
    "commit",
    "path",
    "render",
    "target_dir",
    "target",
    "depends_on",
    "drift",
    "prune",
    "interval",
    "drift_interval",
    "allow",
    "deny",
    "writeback_branch",
    "writeback_key",
    "verify_signers",
    "verify_pgp_keys",
    "verify_mode",
];

/// Where the sections start, to say which one an error is in.
#[derive(Debug, Default, Deserialize)]
struct Outline {
    #[serde(default)]
    defaults: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    app: Vec<Spanned<OutlineApp>>,
}

#[derive(Debug, Deserialize)]
struct OutlineApp {
    name: Option<toml::Value>,
}

/// The text of a config with its name, to turn byte offsets into lines
/// and sections.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The text.
    pub text: &'a str,
    /// Its name in errors.
    pub origin: &'a str,
}

impl Source<'_> {
    /// The 1-based line of byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text
            .as_bytes()
            .get(..end)
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
            + 1
    }

    /// An error at `span` in `section`, about `key`.
    pub fn error(
        &self,
        span: Range<usize>,
        section: Section,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line: self.line(span.start),
            section,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    /// The key a line starts with (`key = value`), if any.
    fn key_at(&self, offset: usize) -> Option<String> {
        let start = self.text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
        let line = self.text.get(start..)?.lines().next()?.trim_start();
        let key: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        let rest = line.get(key.len()..)?.trim_start();
        (!key.is_empty() && rest.starts_with('=')).then_some(key)
    }

    /// The section holding byte `offset`: the last `[defaults]` or
    /// `[[app]]` header before it.
    fn section_at(&self, offset: usize) -> Section {
        let Ok(outline) = toml::from_str::<Outline>(self.text) else {
            return Section::Top;
        };
        let mut best: Option<(usize, Section)> = None;
        let mut consider = |start: usize, section: Section| {
            if start <= offset && best.as_ref().is_none_or(|(s, _)| start >= *s) {
                best = Some((start, section));
            }
        };
        if let Some(defaults) = &outline.defaults {
            consider(defaults.span().start, Section::Defaults);
        }
        for (i, app) in outline.app.iter().enumerate() {
            let name = match &app.get_ref().name {
                Some(toml::Value::String(name)) => name.clone(),
                _ => format!("#{}", i + 1),
            };
            consider(app.span().start, Section::App(name));
        }
        best.map_or(Section::Top, |(_, section)| section)
    }
}

/// Parses the file. A syntax error, a value of the wrong type, a duplicate
/// or unknown key is an error naming its line, section and key.
pub fn parse(text: &str, origin: &str) -> Result<RawFile, ConfigError> {
    let source = Source { text, origin };
    toml::from_str::<RawFile>(text).map_err(|e| {
        let Some(span) = e.span() else {
            return ConfigError::Invalid {
                origin: origin.to_owned(),
                line: 1,
                section: Section::Top,
                key: None,
                message: e.message().to_owned(),
            };
        };
        let section = source.section_at(span.start);
        let (key, message) = describe(e.message(), source.key_at(span.start));
        source.error(span, section, key.as_deref(), message)
    })
}

/// The key and message of a serde/toml error message: an unknown field
/// becomes `unknown key "x"` with a suggestion, others keep their text.
fn describe(message: &str, key: Option<String>) -> (Option<String>, String) {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field.to_owned());
    match unknown {
        Some(field) => {
            let hint = suggest(&field)
                .map(|k| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            (None, format!("unknown key {field:?}{hint}"))
        }
        None => (key, message.to_owned()),
    }
}

/// The known key closest to `word`, if it is close (an edit or two away).
pub fn suggest(word: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|k| (distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(text, "apps.toml").expect_err("invalid").to_string()
    }

    #[test]
    fn an_unknown_key_names_line_app_and_a_suggestion() {
        let text = "[defaults]\ninterval = \"30s\"\n\n[[app]]\nname = \"web\"\n\n\
                    [[app]]\nname = \"db\"\nrepo = \"r\"\n\n\n\ntargt_dir = \"/srv/db\"\n";
        assert_eq!(
            error(text),
            "apps.toml:13: app \"db\": unknown key \"targt_dir\" (did you mean \"target_dir\"?)"
        );
    }

    #[test]
    fn wrong_types_and_duplicates_name_the_key() {
        let text = "[[app]]\nname = \"a\"\nprune = \"yes\"\n";
        let e = error(text);
        assert!(e.starts_with("apps.toml:3: app \"a\": prune: "), "{e}");
        assert!(e.contains("boolean"), "{e}");
        let e = error("[[app]]\nname = \"a\"\nname = \"b\"\n");
        assert!(e.starts_with("apps.toml:3: "), "{e}");
        assert!(e.contains("name"), "{e}");
    }

    #[test]
    fn errors_in_defaults_and_at_the_top_say_so() {
        let e = error("[defaults]\nintervall = \"1s\"\n");
        assert_eq!(
            e,
            "apps.toml:2: [defaults]: unknown key \"intervall\" (did you mean \"interval\"?)"
        );
        let e = error("[[apps]]\nname = \"a\"\n");
        assert!(e.starts_with("apps.toml:1: unknown key \"apps\""), "{e}");
        let e = error("[[app]]\nname = \"a\"\nrepo = \n");
        assert!(e.starts_with("apps.toml:3: "), "{e}");
    }

    #[test]
    fn an_app_without_a_name_is_numbered_and_sub_tables_belong_to_their_app() {
        let e = error("[[app]]\nrepo = \"r\"\n[app.target]\nkind = \"dir\"\n[[app]]\nrepo = 1\n");
        assert!(e.starts_with("apps.toml:6: app #2: repo: "), "{e}");
        let raw = parse(
            "[[app]]\nname = \"a\"\n[app.target]\nkind = \"etcd\"\nprefix = \"/x\"\n",
            "f",
        )
        .expect("valid");
        let target = raw.app[0].get_ref().target.as_ref().expect("a target");
        assert_eq!(target.get_ref().get("prefix"), Some(&"/x".into()));
    }

    #[test]
    fn suggestions_are_only_for_near_misses() {
        assert_eq!(suggest("dependson"), Some("depends_on"));
        assert_eq!(suggest("semvar"), Some("semver"));
        assert_eq!(suggest("completely_else"), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
