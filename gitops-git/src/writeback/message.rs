//! The commit message: a template with placeholders, expanded once.

use gitops_core::writeback::WritebackRequest;

use super::WritebackInner;

/// Default commit message; see
/// [`GitWritebackBuilder::message_template`](super::GitWritebackBuilder::message_template).
pub const DEFAULT_MESSAGE_TEMPLATE: &str = "\
gitops({engine}): write back {count} drifted resource(s)

{resources}

The target was changed outside Git; the engine `{engine}` recorded the
change here instead of reverting it (drift policy `writeback`).

Previous revision: {previous}
Written at: {time}
";

impl WritebackInner {
    /// The commit message for `request`, from the configured template.
    pub(super) fn message(&self, request: &WritebackRequest<'_>) -> String {
        let resources: Vec<String> = request
            .drifted
            .iter()
            .map(|d| {
                let what = if d.observed.is_some() {
                    "changed"
                } else {
                    "deleted"
                };
                // The file as the repository names it, not as the snapshot does.
                let origin = gitops_core::model::Origin {
                    path: self.repo_path(&d.resource.origin.path),
                    document: d.resource.origin.document,
                };
                format!("- {} ({origin}, {what} in the target)", d.resource.id)
            })
            .collect();
        let time =
            gix::date::Time::now_utc().format_or_unix(gix::date::time::format::ISO8601_STRICT);
        let values = [
            ("{engine}", request.engine.to_owned()),
            ("{count}", request.drifted.len().to_string()),
            ("{resources}", resources.join("\n")),
            ("{previous}", request.revision.to_string()),
            ("{time}", time),
        ];
        expand(&self.template, &values)
    }
}

/// Replaces each placeholder of `template` in one pass: a value that
/// contains a placeholder (a resource named `{time}`) is not expanded again.
fn expand(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match values.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('{');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<(&'static str, String)> {
        vec![
            ("{engine}", "shop".to_owned()),
            ("{resources}", "- App/{time}".to_owned()),
            ("{time}", "2026-01-01T00:00:00Z".to_owned()),
        ]
    }

    #[test]
    fn placeholders_are_expanded_once() {
        assert_eq!(
            expand("{engine}: {resources} at {time}", &values()),
            "shop: - App/{time} at 2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn unknown_placeholders_and_braces_stay() {
        assert_eq!(expand("{nope} {engine} {", &values()), "{nope} shop {");
        assert_eq!(expand("no placeholders", &values()), "no placeholders");
        assert_eq!(expand("{{engine}}", &values()), "{shop}");
    }
}
