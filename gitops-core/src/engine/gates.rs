//! Runs quality gates: in order, each under the gate timeout, stopping at
//! the first that does not pass, every verdict in the audit log.

use std::sync::Arc;

use tokio::time::Instant;

use super::EngineError;
use super::executor::AuditContext;
use super::state::Inner;
use crate::gate::{GateInput, GateResult, GateStage, GateVerdict};
use crate::id::ResourceId;
use crate::model::Inventory;
use crate::plan::Plan;
use crate::record::AuditAction;

/// Where a gate run writes its audit records.
pub(super) struct GateRun<'a> {
    pub plan: &'a Arc<Plan>,
    pub audit: &'a AuditContext<'a>,
    pub inventory: &'a Inventory,
    pub version: &'a mut u64,
}

impl Inner {
    /// Runs the gates of `stage`; a gate that outlives the gate timeout
    /// reached no verdict (a transient error, retried with backoff).
    pub(super) async fn run_gates(
        &self,
        stage: GateStage,
        run: GateRun<'_>,
    ) -> Result<Vec<GateResult>, EngineError> {
        let gates = match stage {
            GateStage::PreSync => &self.parts.pre_gates,
            GateStage::PostSync => &self.parts.post_gates,
        };
        let input = GateInput {
            stage,
            revision: run.audit.revision.clone(),
            plan: run.plan.clone(),
        };
        let limit = self.config.gate_timeout;
        let mut results = Vec::new();
        let mut records = Vec::new();
        for gate in gates {
            let started = Instant::now();
            let verdict = tokio::time::timeout(limit, gate.check(&input))
                .await
                .unwrap_or_else(|_| GateVerdict::Error {
                    message: format!("timed out after {limit:?}"),
                    transient: true,
                });
            let result = GateResult::new(gate.name(), stage, verdict, started.elapsed());
            tracing::info!(gate = gate.name(), ?stage, passed = result.passed, "gate");
            if let Ok(id) = ResourceId::new("Gate", gate.name()) {
                let mut record = run.audit.record(&id, AuditAction::Gate, None, None);
                let verdict = match (result.passed, result.error) {
                    (true, _) => "passed",
                    (false, None) => "failed",
                    (false, Some(_)) => "could not run",
                };
                record.detail = Some(format!("{stage:?} {verdict}: {}", result.output));
                records.push(record);
            }
            let passed = result.passed;
            results.push(result);
            if !passed {
                break;
            }
        }
        *run.version = self
            .parts
            .store
            .save_inventory(&self.name, run.inventory, *run.version, &records)
            .await
            .map_err(EngineError::Store)?;
        Ok(results)
    }
}
