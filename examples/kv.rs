//! A complete `Target` for a system of its own, an in-process key-value
//! store, in four methods; used by the `custom_target` and `custom_agent`
//! examples. Swap `KvStore` for your HTTP API, database or device.
//!
//! Everything else (ordering, retries, drift, prune, history) comes from the
//! engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gitops_core::{Observed, Resource, ResourceId, Target, TargetError, async_trait};

/// The system being managed: keys to JSON values.
#[derive(Debug, Default)]
pub struct KvStore(Mutex<BTreeMap<String, serde_json::Value>>);

impl KvStore {
    /// Every key and its value, in key order.
    pub fn entries(&self) -> Vec<(String, serde_json::Value)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The target: one key per resource, `namespace/name` or `name`.
#[derive(Debug, Clone)]
pub struct KvTarget(pub Arc<KvStore>);

fn key(id: &ResourceId) -> String {
    match id.namespace() {
        Some(ns) => format!("{ns}/{}", id.name()),
        None => id.name().to_owned(),
    }
}

#[async_trait]
impl Target for KvTarget {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let map = self
            .0
            .0
            .lock()
            .map_err(|_| TargetError::transient(id, "store poisoned"))?;
        Ok(map.get(&key(id)).cloned().map(Observed::new))
    }

    async fn apply(&self, r: &Resource) -> Result<(), TargetError> {
        let mut map = self
            .0
            .0
            .lock()
            .map_err(|_| TargetError::transient(&r.id, "store poisoned"))?;
        map.insert(key(&r.id), r.spec.to_value());
        Ok(())
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let mut map = self
            .0
            .0
            .lock()
            .map_err(|_| TargetError::transient(id, "store poisoned"))?;
        map.remove(&key(id));
        Ok(())
    }
    // health() defaults to Healthy; override it when your system can say more.
}
