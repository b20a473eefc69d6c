//! [`EtcdTarget`]: configuration kept in etcd keys, what git2consul does for
//! Consul.
//!
//! A resource `Kind/name` (or `Kind/namespace/name`) is the key
//! `<prefix>/name` (or `<prefix>/namespace/name`); the kind only
//! documents what the value is, so a commit with two resources that would be
//! one key (`Key/x` and `Config/x`) is refused before anything is written.
//! The spec says what to store:
//!
//! ```yaml
//! kind: Key
//! metadata: { name: web/max-connections }
//! spec:
//!   format: json          # json (default) | yaml | text
//!   value: { limit: 100 } # any value; for text, a string
//! ```
//!
//! Observe reads the key; drift is a stored text other than the one the spec
//! encodes to (so a hand edit is reverted); delete removes the key, and the
//! engine prunes only keys in its inventory. A target made with
//! [`EtcdTarget::fenced`] writes only while the replica owns the
//! application: each put and delete is a transaction that checks the fence.

use async_trait::async_trait;
use etcd_client::{Txn, TxnOp};
use std::collections::HashMap;

use gitops_core::{
    DesiredState, Diff, Observed, RenderError, Resource, ResourceId, Target, TargetError,
};
use serde_json::{Value, json};

use crate::client::{EtcdClient, EtcdError, check_size};
use crate::fence::Fence;

/// Keys under a prefix in etcd, one per resource.
#[derive(Clone, Debug)]
pub struct EtcdTarget {
    client: EtcdClient,
    prefix: String,
    fence: Option<Fence>,
    format: ValueFormat,
}

/// How a value is written: `spec.format` of a resource, else the target's
/// default ([`EtcdTarget::default_format`], JSON unless set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ValueFormat {
    /// `json`: the value as compact JSON.
    #[default]
    Json,
    /// `yaml`: the value as YAML.
    Yaml,
    /// `text`: a string value as it is.
    Text,
}

impl std::str::FromStr for ValueFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(ValueFormat::Json),
            "yaml" => Ok(ValueFormat::Yaml),
            "text" => Ok(ValueFormat::Text),
            other => Err(format!("format {other:?}: expected json, yaml or text")),
        }
    }
}

impl EtcdTarget {
    /// A target writing under `prefix` (e.g. `/config/web`).
    pub fn new(client: EtcdClient, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into().trim_end_matches('/').to_owned(),
            fence: None,
            format: ValueFormat::Json,
        }
    }

    /// The same target, writing resources without `spec.format` in `format`.
    pub fn default_format(self, format: ValueFormat) -> Self {
        Self { format, ..self }
    }

    /// The same target, writing only while `fence` holds.
    pub fn fenced(&self, fence: Fence) -> Self {
        Self {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The key a resource is stored at.
    pub fn key(&self, id: &ResourceId) -> String {
        match id.namespace() {
            Some(ns) => format!("{}/{}/{}", self.prefix, ns, id.name()),
            None => format!("{}/{}", self.prefix, id.name()),
        }
    }

    /// Every key under the prefix with its text (for inspection and tests).
    pub async fn list(&self) -> Result<Vec<(String, String)>, EtcdError> {
        let all = crate::client::list_prefix(&self.client, &format!("{}/", self.prefix)).await?;
        Ok(all.into_iter().map(|(k, v, _)| (k, v)).collect())
    }

    fn target_error(id: &ResourceId, e: EtcdError) -> TargetError {
        if e.is_transient() {
            TargetError::Transient {
                id: id.clone(),
                message: e.to_string(),
                source: Some(Box::new(e)),
            }
        } else {
            TargetError::Permanent {
                id: id.clone(),
                message: e.to_string(),
                source: Some(Box::new(e)),
            }
        }
    }

    /// Runs `op` (fenced when a fence is set).
    async fn write(
        &self,
        id: &ResourceId,
        key: &str,
        op: TxnOp,
        what: &'static str,
    ) -> Result<(), TargetError> {
        let Some(fence) = &self.fence else {
            let txn = Txn::new().and_then([op]);
            return self
                .client
                .kv()
                .txn(txn)
                .await
                .map(|_| ())
                .map_err(|e| Self::target_error(id, EtcdError::request(what, key, e)));
        };
        let txn = Txn::new().when([fence.compare()]).and_then([op]);
        let resp = self
            .client
            .kv()
            .txn(txn)
            .await
            .map_err(|e| Self::target_error(id, EtcdError::request(what, key, e)))?;
        if resp.succeeded() {
            Ok(())
        } else {
            tracing::warn!(%id, key, lock = fence.lock_key(), "write refused: application no longer owned (fenced)");
            Err(TargetError::permanent(
                id,
                format!(
                    "{what} {key} refused: this replica no longer owns {} (lock {} was not created at revision {})",
                    fence.app(),
                    fence.lock_key(),
                    fence.revision()
                ),
            ))
        }
    }
}

fn format_of(r: &Resource, default: ValueFormat) -> Result<ValueFormat, TargetError> {
    match r.spec.get("format").as_ref().and_then(Value::as_str) {
        None => Ok(default),
        Some(name) => name.parse().map_err(|message| TargetError::InvalidSpec {
            id: r.id.clone(),
            message,
        }),
    }
}

/// The text a resource's spec stores (`default`: the format when the spec
/// names none).
fn encode(r: &Resource, default: ValueFormat) -> Result<String, TargetError> {
    let invalid = |message: String| TargetError::InvalidSpec {
        id: r.id.clone(),
        message,
    };
    let Value::Object(spec) = r.spec.to_value() else {
        return Err(invalid("spec must be a map with `value`".into()));
    };
    if let Some(field) = spec
        .keys()
        .find(|k| !matches!(k.as_str(), "format" | "value"))
    {
        return Err(invalid(format!(
            "unknown field {field:?} (expected format, value)"
        )));
    }
    let value = spec
        .get("value")
        .ok_or_else(|| invalid("missing `value`".into()))?;
    match format_of(r, default)? {
        ValueFormat::Json => serde_json::to_string(value).map_err(|e| invalid(e.to_string())),
        ValueFormat::Yaml => serde_saphyr::to_string(value).map_err(|e| invalid(e.to_string())),
        ValueFormat::Text => value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid("format text needs a string value".into())),
    }
}

#[async_trait]
impl Target for EtcdTarget {
    /// Refuses two resources that would be the same key (`Key/x` and
    /// `Config/x`, or a name `a/b` and namespace `a` with name `b`), naming
    /// both files, before anything is written.
    fn check(&self, desired: &DesiredState) -> Result<(), RenderError> {
        let mut keys: HashMap<String, &Resource> = HashMap::new();
        for resource in desired.resources() {
            if let Some(first) = keys.insert(self.key(&resource.id), resource) {
                return Err(RenderError::Invalid {
                    origin: resource.origin.clone(),
                    message: format!(
                        "{} would be the same etcd key {} as {} (in {})",
                        resource.id,
                        self.key(&resource.id),
                        first.id,
                        first.origin
                    ),
                });
            }
        }
        Ok(())
    }

    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let key = self.key(id);
        let resp = self
            .client
            .kv()
            .get(key.as_str(), None)
            .await
            .map_err(|e| Self::target_error(id, EtcdError::request("get", key.as_str(), e)))?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| Observed::new(json!({ "stored": String::from_utf8_lossy(kv.value()) }))))
    }

    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let key = self.key(&resource.id);
        let text = encode(resource, self.format)?;
        check_size(&key, text.len()).map_err(|e| Self::target_error(&resource.id, e))?;
        self.write(
            &resource.id,
            &key,
            TxnOp::put(key.as_str(), text, None),
            "put",
        )
        .await
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let key = self.key(id);
        self.write(id, &key, TxnOp::delete(key.as_str(), None), "delete")
            .await
    }

    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        let stored = observed.spec.get("stored");
        let stored = stored.as_ref().and_then(Value::as_str);
        // A spec that does not encode is reported as a difference; apply
        // then fails with the reason.
        let wanted = encode(desired, self.format).ok();
        if wanted.is_some() && stored == wanted.as_deref() {
            return None;
        }
        Diff::between(&json!({ "stored": stored }), &json!({ "stored": wanted }))
            .or_else(|| Diff::between(&Value::Null, &json!({ "stored": wanted })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(spec: Value) -> Resource {
        Resource::new("Key/app/limit".parse().unwrap(), spec)
    }

    #[test]
    fn encodes_each_format() {
        assert_eq!(
            encode(&res(json!({"value": {"a": 1}})), ValueFormat::Json).unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(
            encode(
                &res(json!({"format": "yaml", "value": {"a": 1}})),
                ValueFormat::Json
            )
            .unwrap(),
            "a: 1\n"
        );
        assert_eq!(
            encode(
                &res(json!({"format": "text", "value": "x = 1\n"})),
                ValueFormat::Json
            )
            .unwrap(),
            "x = 1\n"
        );
    }

    #[test]
    fn the_target_s_default_format_applies_when_the_spec_names_none() {
        let text = res(json!({"value": "x = 1"}));
        assert_eq!(encode(&text, ValueFormat::Text).unwrap(), "x = 1");
        assert_eq!(encode(&text, ValueFormat::Json).unwrap(), "\"x = 1\"");
        let json = res(json!({"format": "json", "value": "x"}));
        assert_eq!(encode(&json, ValueFormat::Text).unwrap(), "\"x\"");
        assert_eq!("yaml".parse(), Ok(ValueFormat::Yaml));
        assert!("xml".parse::<ValueFormat>().is_err());
    }

    #[test]
    fn refuses_bad_specs() {
        for spec in [
            json!("plain"),
            json!({"format": "xml", "value": 1}),
            json!({"format": "text", "value": 1}),
            json!({"valeu": 1}),
            json!({}),
        ] {
            let err = encode(&res(spec.clone()), ValueFormat::Json).unwrap_err();
            assert!(
                matches!(err, TargetError::InvalidSpec { .. }),
                "{spec}: {err}"
            );
            assert_eq!(err.id().to_string(), "Key/app/limit");
        }
    }
}
