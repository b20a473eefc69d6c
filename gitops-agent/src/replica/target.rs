//! `[app.target] kind = "etcd"`: an application's resources as keys under
//! a prefix ([`EtcdTarget`](gitops_etcd::EtcdTarget)), written only while
//! this replica owns the application (fenced). Checking the table is pure;
//! building the target needs the owning replica's context.

use std::sync::Arc;

use gitops_core::Target;
use gitops_etcd::{AppContext, EtcdTarget, ValueFormat};

/// The `kind` of an etcd target.
pub const KIND: &str = "etcd";

/// An `[app.target]` table of kind `etcd`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdTargetSpec {
    /// The key prefix (`/config/flags`), absolute, without a trailing `/`.
    pub prefix: String,
    /// How values are written when a resource's `spec.format` says
    /// nothing (`format = "json" | "yaml" | "text"`, default JSON).
    pub format: ValueFormat,
}

impl EtcdTargetSpec {
    /// Checks the table's keys other than `kind`: `prefix` (required, an
    /// absolute key prefix) and `format` (optional). `cluster` is the replicas' own prefix
    /// (`--etcd-prefix`), which a target may not write into.
    pub fn parse(settings: &toml::Table, cluster: &str) -> Result<Self, String> {
        if let Some(unknown) = settings
            .keys()
            .find(|k| !matches!(k.as_str(), "prefix" | "format"))
        {
            return Err(format!(
                "unknown key {unknown:?} in an etcd target (expected prefix, format)"
            ));
        }
        let format = match settings.get("format") {
            None => ValueFormat::default(),
            Some(toml::Value::String(name)) => name.parse()?,
            Some(_) => return Err("format must be \"json\", \"yaml\" or \"text\"".into()),
        };
        let prefix = match settings.get("prefix") {
            Some(toml::Value::String(prefix)) => prefix.trim_end_matches('/'),
            Some(_) => return Err("prefix must be a string like \"/config/flags\"".into()),
            None => return Err("an etcd target needs prefix = \"/some/keys\"".into()),
        };
        if !prefix.starts_with('/') || prefix.contains("//") {
            return Err(format!(
                "prefix {prefix:?}: expected an absolute key prefix like \"/config/flags\""
            ));
        }
        if nested(prefix, cluster) || nested(cluster.trim_end_matches('/'), prefix) {
            return Err(format!(
                "prefix {prefix:?} overlaps the replicas' own keys under {cluster:?} (--etcd-prefix)"
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            format,
        })
    }

    /// The target, fenced by the owning replica's lock on the application.
    pub fn build(&self, ctx: &AppContext) -> Arc<dyn Target> {
        let target = EtcdTarget::new(ctx.client().clone(), self.prefix.clone())
            .default_format(self.format)
            .fenced(ctx.fence().clone());
        Arc::new(target)
    }
}

/// Whether key prefix `inner` is `outer` or under it (`/a/b` is under
/// `/a`, `/ab` is not).
pub fn nested(inner: &str, outer: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The first two applications (by index in `prefixes`) whose key prefixes
/// overlap: one application's keys would be another's.
pub fn first_overlap(prefixes: &[(&str, &str)]) -> Option<(usize, usize)> {
    for (j, (_, b)) in prefixes.iter().enumerate() {
        for (i, (_, a)) in prefixes[..j].iter().enumerate() {
            if nested(a, b) || nested(b, a) {
                return Some((i, j));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("toml")
    }

    #[test]
    fn a_prefix_is_required_absolute_and_outside_the_cluster() {
        let ok = EtcdTargetSpec::parse(&table("prefix = \"/config/flags/\""), "/gitops");
        assert_eq!(ok.map(|s| s.prefix), Ok("/config/flags".to_owned()));
        for (text, want) in [
            ("", "needs prefix"),
            ("prefix = 1", "must be a string"),
            ("prefix = \"config\"", "absolute"),
            ("prefix = \"/a//b\"", "absolute"),
            ("prefix = \"/gitops/x\"", "overlaps the replicas' own keys"),
            ("prefix = \"/\"", "absolute"),
            ("prefix = \"/x\"\nformt = \"json\"", "unknown key \"formt\""),
            (
                "prefix = \"/x\"\nformat = \"xml\"",
                "expected json, yaml or text",
            ),
        ] {
            let e = EtcdTargetSpec::parse(&table(text), "/gitops").expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(EtcdTargetSpec::parse(&table("prefix = \"/gitopsx\""), "/gitops").is_ok());
        let text = EtcdTargetSpec::parse(&table("prefix = \"/x\"\nformat = \"text\""), "/g");
        assert_eq!(text.map(|s| s.format), Ok(ValueFormat::Text));
    }

    #[test]
    fn overlapping_prefixes_are_found() {
        assert!(nested("/a/b", "/a") && nested("/a", "/a") && !nested("/ab", "/a"));
        assert_eq!(
            first_overlap(&[("x", "/a"), ("y", "/b"), ("z", "/a/c")]),
            Some((0, 2))
        );
        assert_eq!(first_overlap(&[("x", "/a"), ("y", "/ab")]), None);
    }
}
