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
//!
//! Built for many applications on one etcd: the resources of a wave are
//! observed with one read-only transaction per [`OBSERVE_BATCH`] keys, and
//! their puts and deletes issued together go out as one (fenced)
//! transaction (`batch`).

mod batch;

use async_trait::async_trait;
use etcd_client::{Txn, TxnOp, TxnOpResponse};
use futures::StreamExt as _;
use std::collections::HashMap;
use std::sync::Arc;

use gitops_core::{
    DesiredState, Diff, Observed, RenderError, Resource, ResourceId, Target, TargetError,
};
use serde_json::{Value, json};

use crate::client::{EtcdClient, EtcdError, VALUES_PER_PAGE, check_size};
use crate::fence::Fence;

use batch::{Batcher, Refused};

/// How many keys one read of [`Target::observe_many`] asks for: one
/// read-only transaction of single-key reads, as many values of the
/// largest size as fit in one reply.
pub const OBSERVE_BATCH: usize = VALUES_PER_PAGE;

/// How many of those reads of one `observe_many` are in flight at once.
const OBSERVE_CONCURRENCY: usize = 4;

/// Keys under a prefix in etcd, one per resource.
#[derive(Clone, Debug)]
pub struct EtcdTarget {
    client: EtcdClient,
    prefix: String,
    fence: Option<Fence>,
    format: ValueFormat,
    /// Writes issued together, sent together (shared by clones, one per fence).
    batch: Arc<Batcher>,
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
            batch: Arc::default(),
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
            batch: Arc::default(),
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

    /// Runs `op` on `key` (of `bytes` bytes), fenced when a fence is set,
    /// in one transaction with the writes issued beside it.
    async fn write(
        &self,
        id: &ResourceId,
        (key, bytes): (&str, usize),
        op: TxnOp,
        what: &'static str,
    ) -> Result<(), TargetError> {
        let fence = self.fence.as_ref();
        match self
            .batch
            .write(&self.client, fence, (key, bytes, op), what)
            .await
        {
            Ok(()) => Ok(()),
            Err(Refused::Failed { message, transient }) => Err(if transient {
                TargetError::transient(id, message)
            } else {
                TargetError::permanent(id, message)
            }),
            Err(Refused::Fenced) => {
                let Some(fence) = fence else {
                    return Err(TargetError::permanent(id, format!("{what} {key} refused")));
                };
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

    /// Observes up to [`OBSERVE_BATCH`] resources with one read-only
    /// transaction; results in the order of `ids`.
    async fn observe_batch(
        &self,
        ids: &[ResourceId],
    ) -> Vec<Result<Option<Observed>, TargetError>> {
        let keys: Vec<String> = ids.iter().map(|id| self.key(id)).collect();
        let gets: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
        match self.client.kv().txn(Txn::new().and_then(gets)).await {
            Ok(resp) => {
                let mut replies = resp.op_responses().into_iter();
                ids.iter()
                    .map(|id| match replies.next() {
                        Some(TxnOpResponse::Get(get)) => Ok(get.kvs().first().map(|kv| {
                            Observed::new(json!({ "stored": String::from_utf8_lossy(kv.value()) }))
                        })),
                        _ => Err(TargetError::transient(
                            id,
                            "etcd sent no reply for this key",
                        )),
                    })
                    .collect()
            }
            Err(e) => {
                let e = EtcdError::request("get", keys.first().cloned().unwrap_or_default(), e);
                let transient = e.is_transient();
                let message = e.to_string();
                ids.iter()
                    .map(|id| {
                        Err(if transient {
                            TargetError::transient(id, message.clone())
                        } else {
                            TargetError::permanent(id, message.clone())
                        })
                    })
                    .collect()
            }
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

    /// One read-only transaction per [`OBSERVE_BATCH`] keys instead of one
    /// read per key.
    async fn observe_many(&self, ids: &[ResourceId]) -> Vec<Result<Option<Observed>, TargetError>> {
        let calls: Vec<_> = ids
            .chunks(OBSERVE_BATCH)
            .map(|chunk| self.observe_batch(chunk))
            .collect();
        futures::stream::iter(calls)
            .buffered(OBSERVE_CONCURRENCY)
            .flat_map(futures::stream::iter)
            .collect()
            .await
    }

    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let key = self.key(&resource.id);
        let text = encode(resource, self.format)?;
        check_size(&key, text.len()).map_err(|e| Self::target_error(&resource.id, e))?;
        let bytes = text.len();
        self.write(
            &resource.id,
            (&key, bytes),
            TxnOp::put(key.as_str(), text, None),
            "put",
        )
        .await
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let key = self.key(id);
        self.write(id, (&key, 0), TxnOp::delete(key.as_str(), None), "delete")
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
