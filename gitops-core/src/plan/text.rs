//! The human plan, in the style of `terraform plan`: creates list their
//! attributes (`+ spec.field = value`), updates their changed fields and
//! whether Git or drift caused them, prunes and holds follow.
//!
//! Long values are shortened so a plan of a big file stays readable: a
//! multi-line string shows its first lines, its size and a digest; a changed
//! multi-line string shows a line diff of the changed lines. [`PlanText`]
//! with `full` shows everything.

use std::fmt::{self, Write as _};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{Cause, Change, Plan};
use crate::diff::{Diff, FieldChange};
use crate::spec::Spec;

/// Lines of a multi-line value shown when not `full`.
const SHOWN_LINES: usize = 4;
/// Characters of a one-line value shown when not `full`.
const SHOWN_CHARS: usize = 120;
/// Attributes of one create shown when not `full`.
const SHOWN_FIELDS: usize = 40;
/// Lines of one line diff shown when not `full`.
const SHOWN_DIFF_LINES: usize = 24;

/// A plan as text; `Display` of [`Plan`] is `PlanText` without `full`.
///
/// ```
/// use gitops_core::plan::Planner;
/// use gitops_core::model::Inventory;
/// use gitops_core::{DesiredState, Resource, Revision, serde_json::json};
///
/// let rev = Revision::new("main", "0".repeat(40));
/// let row = Resource::new("Row/alice".parse()?, json!({"name": "Alice", "tags": ["a"]}));
/// let desired = DesiredState::new(rev, vec![row])?;
/// let plan = Planner::new().plan(&desired, &[None], &Inventory::new())?;
/// let text = plan.to_string();
/// assert!(text.contains("+ create Row/alice"));
/// assert!(text.contains(r#"+ spec.name = "Alice""#));
/// assert!(text.contains(r#"+ spec.tags[0] = "a""#));
/// assert_eq!(plan.text(true).to_string(), text); // nothing long to shorten
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PlanText<'p> {
    plan: &'p Plan,
    full: bool,
}

impl Plan {
    /// The plan as text; `full` shows long values whole instead of their
    /// first lines, size and digest.
    pub fn text(&self, full: bool) -> PlanText<'_> {
        PlanText { plan: self, full }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.text(false).fmt(f)
    }
}

impl fmt::Display for PlanText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = self.plan;
        let s = &plan.summary;
        for warning in &plan.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        if !plan.has_changes() {
            writeln!(
                f,
                "No changes. The target matches {} ({} resources).",
                plan.revision, s.unchanged
            )?;
        } else {
            writeln!(f, "Plan for {}:", plan.revision)?;
            let total_waves = plan.waves.len();
            for (n, wave) in plan.waves.iter().enumerate() {
                let mut header = false;
                for c in &wave.changes {
                    if c.change == Change::Unchanged {
                        continue;
                    }
                    if !header {
                        writeln!(f, "  wave {}/{}:", n + 1, total_waves)?;
                        header = true;
                    }
                    self.change(f, &c.id.to_string(), &c.change)?;
                }
            }
            if !plan.prune.is_empty() {
                writeln!(f, "  prune:")?;
                for c in plan.prune.iter().flat_map(|w| &w.changes) {
                    writeln!(f, "    - delete {}", c.id)?;
                }
            }
        }
        for id in &plan.retained {
            writeln!(f, "    ! keep {id} (gone from Git, prune disabled)")?;
        }
        write!(
            f,
            "Plan: {} to create, {} to update, {} to delete, {} unchanged.",
            s.create, s.update, s.delete, s.unchanged
        )?;
        if let Some(held) = &plan.held {
            write!(f, "\nA sync would not apply it: {held}.")?;
        }
        Ok(())
    }
}

impl PlanText<'_> {
    fn change(&self, f: &mut fmt::Formatter<'_>, id: &str, change: &Change) -> fmt::Result {
        match change {
            Change::Create { spec } => {
                writeln!(f, "    + create {id}")?;
                self.attributes(f, spec)
            }
            Change::Update { diff, cause } => {
                let why = match cause {
                    Cause::Git => "",
                    Cause::Drift => " (drift)",
                };
                writeln!(f, "    ~ update {id}{why}")?;
                self.fields(f, diff)
            }
            Change::Delete => writeln!(f, "    - delete {id}"),
            Change::Unchanged => Ok(()),
        }
    }

    /// `+ spec.a.b = value` for every leaf of a created spec.
    fn attributes(&self, f: &mut fmt::Formatter<'_>, spec: &Spec) -> fmt::Result {
        let value = spec.to_value();
        let mut leaves = Vec::new();
        flatten(&value, &mut String::from("spec"), &mut leaves);
        let shown = if self.full {
            leaves.len()
        } else {
            leaves.len().min(SHOWN_FIELDS)
        };
        for (path, leaf) in &leaves[..shown] {
            write!(f, "        + {path} = ")?;
            self.value(f, leaf)?;
        }
        if shown < leaves.len() {
            writeln!(
                f,
                "        … {} more fields ({} bytes of spec; --full shows all)",
                leaves.len() - shown,
                spec.len()
            )?;
        }
        Ok(())
    }

    /// `~ path: old -> new`, or a line diff when both are multi-line text.
    fn fields(&self, f: &mut fmt::Formatter<'_>, diff: &Diff) -> fmt::Result {
        for FieldChange { path, old, new } in &diff.changes {
            match (old, new) {
                (Some(Value::String(a)), Some(Value::String(b)))
                    if a.contains('\n') || b.contains('\n') =>
                {
                    writeln!(f, "        ~ {path}: {} -> {}", about(a), about(b))?;
                    self.line_diff(f, a, b)?;
                }
                _ => {
                    write!(f, "        ~ {path}: ")?;
                    self.inline(f, old.as_ref())?;
                    f.write_str(" -> ")?;
                    self.inline(f, new.as_ref())?;
                    f.write_str("\n")?;
                }
            }
        }
        Ok(())
    }

    /// A value after `= `, ending the line: a multi-line string continues on
    /// indented lines below.
    fn value(&self, f: &mut fmt::Formatter<'_>, value: &Value) -> fmt::Result {
        match value {
            Value::String(text) if text.contains('\n') => {
                writeln!(f, "<<{}", about(text))?;
                let lines: Vec<&str> = text.lines().collect();
                let shown = if self.full {
                    lines.len()
                } else {
                    lines.len().min(SHOWN_LINES)
                };
                for line in &lines[..shown] {
                    writeln!(f, "            | {line}")?;
                }
                if shown < lines.len() {
                    writeln!(f, "            | … {} more lines", lines.len() - shown)?;
                }
                Ok(())
            }
            other => {
                self.inline(f, Some(other))?;
                f.write_str("\n")
            }
        }
    }

    /// A value on one line: JSON, cut at [`SHOWN_CHARS`] unless `full`.
    fn inline(&self, f: &mut fmt::Formatter<'_>, value: Option<&Value>) -> fmt::Result {
        let Some(value) = value else {
            return f.write_str("(absent)");
        };
        if value.as_str() == Some(crate::secret::SENSITIVE) {
            return f.write_str(crate::secret::SENSITIVE);
        }
        let text = value.to_string();
        if self.full || text.len() <= SHOWN_CHARS {
            return f.write_str(&text);
        }
        let mut cut = SHOWN_CHARS;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        write!(
            f,
            "{}… ({} bytes, sha256:{})",
            &text[..cut],
            text.len(),
            short_digest(&text)
        )
    }

    /// The changed lines of a multi-line string, as `-`/`+` lines with one
    /// line of context, via the `similar` crate.
    fn line_diff(&self, f: &mut fmt::Formatter<'_>, old: &str, new: &str) -> fmt::Result {
        let diff = similar::TextDiff::from_lines(old, new);
        let mut out = String::new();
        for group in diff.grouped_ops(1) {
            out.push_str("            @@\n");
            for op in group {
                for change in diff.iter_changes(&op) {
                    let sign = match change.tag() {
                        similar::ChangeTag::Delete => '-',
                        similar::ChangeTag::Insert => '+',
                        similar::ChangeTag::Equal => ' ',
                    };
                    let line = change.value().trim_end_matches('\n');
                    let _ = writeln!(out, "            {sign} {line}");
                }
            }
        }
        let lines: Vec<&str> = out.lines().collect();
        let shown = if self.full {
            lines.len()
        } else {
            lines.len().min(SHOWN_DIFF_LINES)
        };
        for line in &lines[..shown] {
            writeln!(f, "{line}")?;
        }
        if shown < lines.len() {
            writeln!(
                f,
                "            … {} more diff lines (--full shows all)",
                lines.len() - shown
            )?;
        }
        Ok(())
    }
}

/// `(3 lines, 45 bytes, sha256:0123456789ab)`: size and a short digest.
fn about(text: &str) -> String {
    let lines = text.lines().count();
    let plural = if lines == 1 { "" } else { "s" };
    format!(
        "({lines} line{plural}, {} bytes, sha256:{})",
        text.len(),
        short_digest(text)
    )
}

/// The first 12 hex digits of the SHA-256 of `text`: enough to tell two
/// versions apart in a review.
fn short_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .fold(String::with_capacity(12), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Every leaf of `value` with its path (`spec.ports[0].port`); an empty
/// object or array is a leaf of its own.
fn flatten<'v>(value: &'v Value, path: &mut String, out: &mut Vec<(String, &'v Value)>) {
    let len = path.len();
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in crate::canonical::sorted_entries(map) {
                crate::diff::push_key(path, key);
                flatten(child, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                flatten(child, path, out);
                path.truncate(len);
            }
        }
        leaf => out.push((path.clone(), leaf)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Inventory, Observed, Resource, Revision};
    use crate::plan::Planner;
    use crate::render::DesiredState;
    use serde_json::json;

    fn plan_of(resources: Vec<Resource>, observed: Vec<Option<Observed>>, inv: &Inventory) -> Plan {
        let desired =
            DesiredState::new(Revision::new("main", "0".repeat(40)), resources).expect("valid");
        Planner::new()
            .plan(&desired, &observed, inv)
            .expect("plans")
    }

    fn file(content: &str) -> Resource {
        Resource::new(
            "File/app.conf".parse().expect("id"),
            json!({"content": content, "mode": "0644"}),
        )
    }

    #[test]
    fn a_create_lists_nested_attributes() {
        let r = Resource::new(
            "Row/n".parse().expect("id"),
            json!({"name": "n", "env": {"A": "1"}, "ports": [{"port": 80}], "empty": {}}),
        );
        let text = plan_of(vec![r], vec![None], &Inventory::new()).to_string();
        for line in [
            "    + create Row/n",
            "        + spec.empty = {}",
            "        + spec.env.A = \"1\"",
            "        + spec.name = \"n\"",
            "        + spec.ports[0].port = 80",
        ] {
            assert!(text.contains(line), "{line:?} missing in:\n{text}");
        }
    }

    #[test]
    fn long_values_are_shortened_unless_full() {
        let content: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let plan = plan_of(vec![file(&content)], vec![None], &Inventory::new());
        let short = plan.to_string();
        assert!(
            short.contains(&format!(
                "+ spec.content = <<(30 lines, {} bytes, sha256:",
                content.len()
            )),
            "{short}"
        );
        assert!(
            short.contains("| line 3\n") && !short.contains("| line 4\n"),
            "{short}"
        );
        assert!(short.contains("| … 26 more lines"), "{short}");
        let full = plan.text(true).to_string();
        assert!(
            full.contains("| line 29\n") && !full.contains("more lines"),
            "{full}"
        );
        let long = "x".repeat(500);
        let plan = plan_of(vec![file(&long)], vec![None], &Inventory::new());
        let short = plan.to_string();
        assert!(short.contains("… (502 bytes, sha256:"), "{short}");
        assert!(plan.text(true).to_string().contains(&long));
    }

    #[test]
    fn drift_is_marked_and_a_git_change_is_not() {
        let desired = file("port = 80\n");
        let drifted = Some(Observed::new(
            json!({"content": "port = 81\n", "mode": "0644"}),
        ));
        let mut inventory = Inventory::new();
        inventory.record(&desired);
        let text = plan_of(vec![desired.clone()], vec![drifted.clone()], &inventory).to_string();
        assert!(text.contains("~ update File/app.conf (drift)"), "{text}");
        assert!(
            text.contains("- port = 81") && text.contains("+ port = 80"),
            "{text}"
        );
        // Git moved on since the recorded apply: a Git change, whatever the target holds.
        let mut older = Inventory::new();
        older.record(&file("port = 79\n"));
        let text = plan_of(vec![desired.clone()], vec![drifted.clone()], &older).to_string();
        assert!(text.contains("~ update File/app.conf\n"), "{text}");
        assert!(!text.contains("(drift)"), "{text}");
        // Nothing recorded: Git's.
        let plan = plan_of(vec![desired], vec![drifted], &Inventory::new());
        assert!(matches!(
            plan.changes().next().map(|c| &c.change),
            Some(Change::Update {
                cause: Cause::Git,
                ..
            })
        ));
        let json = serde_json::to_value(&plan).expect("json");
        assert_eq!(json["waves"][0]["changes"][0]["cause"], "git");
    }

    #[test]
    fn a_long_line_diff_is_cut_unless_full() {
        let old: String = (0..200).map(|i| format!("{i}\n")).collect();
        let new: String = (0..200).map(|i| format!("{}\n", i * 2)).collect();
        let mut inventory = Inventory::new();
        inventory.record(&file(&new));
        let observed = Some(Observed::new(json!({"content": old, "mode": "0644"})));
        let plan = plan_of(vec![file(&new)], vec![observed], &inventory);
        let short = plan.to_string();
        assert!(
            short.contains("more diff lines (--full shows all)"),
            "{short}"
        );
        assert!(!plan.text(true).to_string().contains("more diff lines"));
    }
}
