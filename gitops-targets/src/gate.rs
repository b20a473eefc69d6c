//! [`CommandGate`]: a quality gate that runs a program (a test suite, a
//! policy scanner) with the revision and the plan on stdin.
//!
//! The program gets an argument vector, never a shell; its environment starts
//! empty plus an allowlist; a timeout kills its whole process group; stdout
//! and stderr are each capped to their last bytes (a failing test suite
//! prints its verdict at the end). Exit 0 passes, anything else fails.
//!
//! Stdin holds one JSON document, the same one the `ci` example has always
//! passed, with the stage added:
//!
//! ```json
//! { "stage": "pre_sync", "revision": { "id": "…", "reference": "main", "author": "…", "committed_at": 0, "message": "…" },
//!   "plan": { "revision": …, "waves": […], "prune": […], "summary": { "create": 1, … } } }
//! ```
//!
//! and the environment has `GITOPS_GATE_STAGE` (`pre_sync` or `post_sync`),
//! `GITOPS_REVISION` (the commit id) and `GITOPS_REFERENCE`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use gitops_targets::CommandGate;
//!
//! // Runs the policy checks of the repository on every revision with changes.
//! let gate = CommandGate::builder(["sh", "-c", "cat > /dev/null; echo policy ok"])
//!     .name("policy")
//!     .timeout(Duration::from_secs(120))
//!     .build()?;
//! // engine_builder.pre_sync_gate(Arc::new(gate))
//! # let _: Arc<dyn gitops_core::Gate> = Arc::new(gate);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use gitops_core::gate::GateVerdict;
use gitops_core::{Gate, GateInput, GateStage, async_trait};

use crate::process::{self, Capture, Invocation, Program, ResolveError, RunError};

/// Default limit of one gate run: 10 minutes (the engine's default gate timeout).
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default cap on the kept output, each of stdout and stderr: the last 64 KiB.
pub const DEFAULT_GATE_OUTPUT_LIMIT: usize = 64 << 10;

/// Why a [`CommandGate`] configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandGateError {
    /// The argument vector or its program is empty.
    #[error("gate {gate}: the command is empty")]
    Empty {
        /// The gate's name.
        gate: String,
    },
    /// The program is not on the search path, or not a file.
    #[error("gate {gate}: program {program:?} not found (searched {searched})")]
    ProgramNotFound {
        /// The gate's name.
        gate: String,
        /// The program as configured.
        program: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The program exists but is not executable.
    #[error("gate {gate}: program {path} is not executable")]
    NotExecutable {
        /// The gate's name.
        gate: String,
        /// The resolved path.
        path: PathBuf,
    },
    /// An environment variable name was empty or held `=` or NUL.
    #[error("gate {gate}: invalid environment variable name {name:?}")]
    EnvName {
        /// The gate's name.
        gate: String,
        /// The offending name.
        name: String,
    },
}

/// Builds a [`CommandGate`]; see the [module docs](self) for an example.
#[derive(Debug, Clone)]
pub struct CommandGateBuilder {
    argv: Vec<String>,
    name: Option<String>,
    timeout: Duration,
    output_limit: usize,
    env_allow: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<PathBuf>,
    reap_orphans: bool,
}

impl CommandGateBuilder {
    /// The name in reports, history and the audit log (`Gate/<name>`;
    /// default: the program as given).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Limit of one run; on expiry the whole process group is killed and the
    /// gate fails (default [`DEFAULT_GATE_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many bytes of stdout, and of stderr, are kept: the last ones
    /// (default [`DEFAULT_GATE_OUTPUT_LIMIT`]). More output is read and
    /// dropped, never an error.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    process::environment_setters!();

    /// Reap the orphaned grandchildren of a killed run here (makes this
    /// process a child subreaper; see
    /// [`CommandTargetBuilder::reap_orphans`](crate::CommandTargetBuilder::reap_orphans)).
    pub fn reap_orphans(mut self, yes: bool) -> Self {
        self.reap_orphans = yes;
        self
    }

    /// Checks the configuration and resolves the program to a path.
    pub fn build(self) -> Result<CommandGate, CommandGateError> {
        let gate = self
            .name
            .clone()
            .or_else(|| self.argv.first().cloned())
            .unwrap_or_default();
        let env = process::environment(&self.env_allow, &self.env).map_err(|name| {
            CommandGateError::EnvName {
                gate: gate.clone(),
                name,
            }
        })?;
        let program = process::resolve(
            &self.argv,
            &process::search_path(&env),
            self.working_dir.as_deref(),
        )
        .map_err(|e| match e {
            ResolveError::Empty => CommandGateError::Empty { gate: gate.clone() },
            ResolveError::NotFound { program, searched } => CommandGateError::ProgramNotFound {
                gate: gate.clone(),
                program,
                searched,
            },
            ResolveError::NotExecutable { path } => CommandGateError::NotExecutable {
                gate: gate.clone(),
                path,
            },
        })?;
        if self.reap_orphans {
            process::become_subreaper();
        }
        Ok(CommandGate {
            name: gate,
            program,
            env,
            working_dir: self.working_dir,
            timeout: self.timeout,
            output_limit: self.output_limit,
            reap_orphans: self.reap_orphans,
        })
    }
}

/// A [`Gate`] that runs a program: exit 0 passes, anything else (a non-zero
/// exit, death by a signal, the timeout) fails. Its output, stdout then
/// stderr, is the gate's output in the report, the history and the audit log.
#[derive(Debug, Clone)]
pub struct CommandGate {
    name: String,
    program: Program,
    env: Vec<(OsString, OsString)>,
    working_dir: Option<PathBuf>,
    timeout: Duration,
    output_limit: usize,
    reap_orphans: bool,
}

impl CommandGate {
    /// A builder for the argument vector `argv` (program first).
    pub fn builder<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> CommandGateBuilder {
        CommandGateBuilder {
            argv: argv.into_iter().map(Into::into).collect(),
            name: None,
            timeout: DEFAULT_GATE_TIMEOUT,
            output_limit: DEFAULT_GATE_OUTPUT_LIMIT,
            env_allow: crate::command::DEFAULT_ENV_ALLOW
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            env: Vec::new(),
            working_dir: None,
            reap_orphans: false,
        }
    }
}

/// The stage as it appears on stdin and in `GITOPS_GATE_STAGE`.
fn stage_name(stage: GateStage) -> &'static str {
    match stage {
        GateStage::PreSync => "pre_sync",
        GateStage::PostSync => "post_sync",
    }
}

#[async_trait]
impl Gate for CommandGate {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self, input: &GateInput) -> GateVerdict {
        let stage = stage_name(input.stage);
        let stdin = match serde_json::to_vec(&serde_json::json!({
            "stage": stage,
            "revision": input.revision,
            "plan": &*input.plan,
        })) {
            Ok(stdin) => stdin,
            Err(e) => return error(format!("cannot encode the gate input: {e}"), false),
        };
        let result = process::run(Invocation {
            program: &self.program.path,
            args: self.program.args.clone(),
            env: &self.env,
            extra_env: vec![
                ("GITOPS_GATE_STAGE", stage.to_owned()),
                ("GITOPS_REVISION", input.revision.id.clone()),
                ("GITOPS_REFERENCE", input.revision.reference.clone()),
            ],
            working_dir: self.working_dir.as_deref(),
            stdin: Some(stdin),
            timeout: self.timeout,
            output_limit: self.output_limit,
            stdout: Capture::Tail,
            stderr: Capture::Tail,
            reap_orphans: self.reap_orphans,
        })
        .await;
        let display = &self.program.display;
        match result {
            Ok(out) => {
                let stdout = process::text(&out.stdout, out.stdout_dropped, "stdout", true);
                let stderr = process::text(&out.stderr, out.stderr_dropped, "stderr", true);
                let text = match (stdout.is_empty(), stderr.is_empty()) {
                    (_, true) => stdout,
                    (true, false) => stderr,
                    (false, false) => format!("{stdout}\n{stderr}"),
                };
                if out.status.success() {
                    GateVerdict::Passed(text)
                } else {
                    let status = process::describe_status(out.status);
                    let sep = if text.is_empty() { "" } else { "\n" };
                    GateVerdict::Failed(format!("{text}{sep}[`{display}` {status}]"))
                }
            }
            // No verdict: the check did not finish. Run again with backoff.
            Err(RunError::Timeout) => error(
                format!(
                    "[`{display}` timed out after {:?}; its process group was killed]",
                    self.timeout
                ),
                true,
            ),
            // A missing or forbidden program stays so until someone fixes it.
            Err(RunError::Spawn(e)) => {
                use std::io::ErrorKind::{NotFound, PermissionDenied};
                let transient = !matches!(e.kind(), NotFound | PermissionDenied);
                let path = self.program.path.display();
                error(format!("[cannot start {path}: {e}]"), transient)
            }
            Err(RunError::Io(e)) => error(format!("[`{display}`: I/O error: {e}]"), true),
            Err(RunError::Overflow) => {
                GateVerdict::Failed(format!("[`{display}`: output over the limit]"))
            }
        }
    }
}

/// A gate run that reached no verdict.
fn error(message: String, transient: bool) -> GateVerdict {
    GateVerdict::Error { message, transient }
}
