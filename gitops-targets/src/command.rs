//! [`CommandTarget`]: drives any command-line tool (`kubectl`, `helm`, a
//! vendor CLI) with argument vectors, never a shell.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gitops_core::{Diff, Health, Observed, Resource, ResourceId, Target, TargetError, async_trait};
use serde_json::{Map, Value, json};

use crate::process::{self, Capture, Invocation, Output, Program, ResolveError, RunError};

/// Default per-call timeout: 60 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on captured stdout and on captured stderr: 4 MiB each.
pub const DEFAULT_OUTPUT_LIMIT: usize = 4 << 20;
/// Default exit code meaning "not found" (observe, delete, health).
pub const DEFAULT_NOT_FOUND_EXIT: i32 = 3;
/// Default exit code of a health command meaning "progressing, ask again".
pub const DEFAULT_PROGRESSING_EXIT: i32 = 4;
/// Default exit code meaning "transient, retry later" (`EX_TEMPFAIL`).
pub const DEFAULT_TRANSIENT_EXIT: i32 = 75;
/// Environment variables passed through by default.
pub const DEFAULT_ENV_ALLOW: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// How a document is encoded on stdin (apply) or read from stdout (observe).
///
/// ```
/// use gitops_targets::command::Format;
/// assert_eq!(Format::default(), Format::Json);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON document.
    #[default]
    Json,
    /// One YAML document.
    Yaml,
}

/// What `apply` writes on the program's stdin.
///
/// ```
/// use gitops_targets::command::Payload;
/// assert_eq!(Payload::default(), Payload::Manifest);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Payload {
    /// A Kubernetes-shaped manifest: `apiVersion` (when set), `kind`,
    /// `metadata { name, namespace, labels, annotations }` and `spec`.
    #[default]
    Manifest,
    /// The resource's `spec` only (for objects whose whole body lives in the
    /// spec, such as a `ConfigMap` with `data`).
    Spec,
}

/// How [`Target::differs`] compares an observed object with the desired spec.
///
/// ```
/// use gitops_targets::command::Compare;
/// assert_eq!(Compare::default(), Compare::Exact);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// Every field must be equal.
    #[default]
    Exact,
    /// Only the fields present in the desired spec are compared; fields the
    /// system adds itself (defaults, status, timestamps) are ignored.
    DesiredFields,
}

/// Which call of the target a command serves.
///
/// ```
/// use gitops_targets::command::Operation;
/// assert_eq!(Operation::Apply.to_string(), "apply");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// [`Target::apply`].
    Apply,
    /// [`Target::delete`].
    Delete,
    /// [`Target::observe`].
    Observe,
    /// [`Target::health`].
    Health,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Apply => "apply",
            Operation::Delete => "delete",
            Operation::Observe => "observe",
            Operation::Health => "health",
        })
    }
}

/// Why a [`CommandTarget`] configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandConfigError {
    /// A required command (apply, delete, observe) was not configured.
    #[error("no {operation} command configured")]
    Missing {
        /// The operation.
        operation: Operation,
    },
    /// An argument vector was empty.
    #[error("the {operation} command is empty")]
    Empty {
        /// The operation.
        operation: Operation,
    },
    /// The program is not on the search path, or not a file.
    #[error("{operation} program {program:?} not found (searched {searched})")]
    ProgramNotFound {
        /// The operation.
        operation: Operation,
        /// The program as configured.
        program: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The program exists but is not executable.
    #[error("{operation} program {path} is not executable")]
    NotExecutable {
        /// The operation.
        operation: Operation,
        /// The resolved path.
        path: PathBuf,
    },
    /// An environment variable name contained `=` or NUL, or was empty.
    #[error("invalid environment variable name {name:?}")]
    EnvName {
        /// The offending name.
        name: String,
    },
    /// The observe pointer does not start with `/`.
    #[error("observe pointer {pointer:?} is not a JSON pointer (must start with '/')")]
    Pointer {
        /// The offending pointer.
        pointer: String,
    },
}

/// Builds a [`CommandTarget`]; see there for an example.
#[derive(Debug, Clone)]
pub struct CommandTargetBuilder {
    commands: BTreeMap<u8, (Operation, Vec<String>)>,
    input: Format,
    output: Format,
    payload: Payload,
    compare: Compare,
    observe_pointer: Option<String>,
    empty_is_not_found: bool,
    timeout: Duration,
    output_limit: usize,
    env_allow: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<PathBuf>,
    not_found_exit: i32,
    progressing_exit: i32,
    transient_exits: Vec<i32>,
    kinds: Option<Vec<String>>,
    reap_orphans: bool,
}

/// A target that runs a program per call. See the crate docs for the exit
/// code contract and a worked `kubectl` configuration.
///
/// Programs get argument vectors, never a shell string; the placeholders
/// `{kind}`, `{namespace}`, `{name}` and `{id}` inside an argument are
/// replaced by the id's parts as plain text, in one pass (an argument holding
/// `{namespace}` is left out when the id has no namespace). No id part
/// begins with `-` ([`IdError::LeadingDash`](gitops_core::IdError)), so a
/// manifest cannot smuggle an option (`--context=prod`) into the command;
/// still list the kinds the target manages with [`kinds`](CommandTargetBuilder::kinds). The id is also
/// in the environment as `GITOPS_KIND`, `GITOPS_NAMESPACE`, `GITOPS_NAME`,
/// `GITOPS_ID`, with `GITOPS_OPERATION`.
///
/// ```
/// use std::time::Duration;
/// use gitops_targets::CommandTarget;
/// use gitops_targets::command::{Compare, Format};
///
/// let kubectl = CommandTarget::builder()
///     .apply(["kubectl", "apply", "--server-side", "--field-manager=gitops", "-f", "-"])
///     // `{kind}/{name}` is one argument: an id part never starts with `-`,
///     // and `.kinds()` keeps manifests to the kinds this target manages.
///     .delete(["kubectl", "delete", "--ignore-not-found", "--namespace={namespace}", "{kind}/{name}"])
///     .observe(["kubectl", "get", "--ignore-not-found", "-o", "json", "--namespace={namespace}", "{kind}/{name}"])
///     .kinds(["ConfigMap", "Deployment", "Service"])
///     .empty_stdout_is_not_found(true)
///     .observe_pointer("/spec")
///     .compare(Compare::DesiredFields)
///     .input(Format::Yaml)
///     .allow_env(["KUBECONFIG"])
///     .timeout(Duration::from_secs(120));
/// # // kubectl is not installed where the docs are built: only build the config.
/// # let _ = kubectl;
/// ```
#[derive(Debug, Clone)]
pub struct CommandTarget {
    inner: Arc<Config>,
}

#[derive(Debug)]
struct Config {
    apply: Program,
    delete: Program,
    observe: Program,
    health: Option<Program>,
    input: Format,
    output: Format,
    payload: Payload,
    compare: Compare,
    observe_pointer: Option<String>,
    empty_is_not_found: bool,
    timeout: Duration,
    output_limit: usize,
    env: Vec<(OsString, OsString)>,
    working_dir: Option<PathBuf>,
    not_found_exit: i32,
    progressing_exit: i32,
    transient_exits: Vec<i32>,
    kinds: Option<Vec<String>>,
    reap_orphans: bool,
}

impl Default for CommandTargetBuilder {
    fn default() -> Self {
        Self {
            commands: BTreeMap::new(),
            input: Format::Json,
            output: Format::Json,
            payload: Payload::Manifest,
            compare: Compare::Exact,
            observe_pointer: None,
            empty_is_not_found: false,
            timeout: DEFAULT_TIMEOUT,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            working_dir: None,
            not_found_exit: DEFAULT_NOT_FOUND_EXIT,
            progressing_exit: DEFAULT_PROGRESSING_EXIT,
            transient_exits: vec![DEFAULT_TRANSIENT_EXIT],
            kinds: None,
            reap_orphans: false,
        }
    }
}

fn argv<I, S>(argv: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    argv.into_iter().map(Into::into).collect()
}

impl CommandTargetBuilder {
    /// The command that creates or updates a resource (required). The
    /// resource arrives on stdin.
    pub fn apply<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.commands.insert(0, (Operation::Apply, argv(command)));
        self
    }

    /// The command that deletes a resource (required). Exit 0 or the
    /// not-found code both mean success.
    pub fn delete<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.commands.insert(1, (Operation::Delete, argv(command)));
        self
    }

    /// The command that prints a resource's current state on stdout
    /// (required). Exit 0 with the state, or the not-found code.
    pub fn observe<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.commands.insert(2, (Operation::Observe, argv(command)));
        self
    }

    /// The command that checks health (optional; without it every applied
    /// resource is healthy). Exit 0 healthy, the progressing code
    /// progressing, the not-found code missing, anything else degraded.
    pub fn health<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.commands.insert(3, (Operation::Health, argv(command)));
        self
    }

    /// Encoding of the document on apply's stdin (default JSON).
    pub fn input(mut self, format: Format) -> Self {
        self.input = format;
        self
    }

    /// Encoding of observe's stdout (default JSON).
    pub fn output(mut self, format: Format) -> Self {
        self.output = format;
        self
    }

    /// What apply's stdin holds (default [`Payload::Manifest`]).
    pub fn payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self
    }

    /// How drift is decided (default [`Compare::Exact`]).
    pub fn compare(mut self, compare: Compare) -> Self {
        self.compare = compare;
        self
    }

    /// A JSON pointer (RFC 6901, e.g. `/spec`) selecting the part of observe's
    /// output that is compared with the desired spec. A pointer that selects
    /// nothing observes `null`.
    pub fn observe_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.observe_pointer = Some(pointer.into());
        self
    }

    /// Whether observe exiting 0 with empty stdout means "not found"
    /// (`kubectl get --ignore-not-found`). Default `false`: empty output is an error.
    pub fn empty_stdout_is_not_found(mut self, yes: bool) -> Self {
        self.empty_is_not_found = yes;
        self
    }

    /// Limit for one call; on expiry the whole process group is killed
    /// (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Cap on captured stdout and on captured stderr, each (default
    /// [`DEFAULT_OUTPUT_LIMIT`]). A program printing more on stdout is killed.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    process::environment_setters!();

    /// Exit code meaning "not found" (default [`DEFAULT_NOT_FOUND_EXIT`]).
    pub fn not_found_exit_code(mut self, code: i32) -> Self {
        self.not_found_exit = code;
        self
    }

    /// Exit code of the health command meaning "progressing" (default
    /// [`DEFAULT_PROGRESSING_EXIT`]).
    pub fn progressing_exit_code(mut self, code: i32) -> Self {
        self.progressing_exit = code;
        self
    }

    /// Exit codes meaning "transient, retry later" (default `[75]`); every
    /// other failure is permanent.
    pub fn transient_exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.transient_exits = codes.into_iter().collect();
        self
    }

    /// Accepts only these kinds; others fail as invalid before anything runs.
    pub fn kinds<I: IntoIterator<Item = S>, S: Into<String>>(mut self, kinds: I) -> Self {
        self.kinds = Some(kinds.into_iter().map(Into::into).collect());
        self
    }

    /// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`) so
    /// that the grandchildren of a killed command are reaped here instead of
    /// by PID 1. Process-wide: turn it on when PID 1 does not reap orphans
    /// (some containers) and zombies must not pile up. Default off.
    pub fn reap_orphans(mut self, yes: bool) -> Self {
        self.reap_orphans = yes;
        self
    }

    /// Checks the configuration and resolves every program to a path.
    pub fn build(self) -> Result<CommandTarget, CommandConfigError> {
        let env = process::environment(&self.env_allow, &self.env)
            .map_err(|name| CommandConfigError::EnvName { name })?;
        let search_path = process::search_path(&env);
        let mut resolved: BTreeMap<u8, Program> = BTreeMap::new();
        for (slot, (operation, args)) in &self.commands {
            resolved.insert(
                *slot,
                process::resolve(args, &search_path, self.working_dir.as_deref())
                    .map_err(|e| config_error(*operation, e))?,
            );
        }
        let mut take = |slot: u8, operation| {
            resolved
                .remove(&slot)
                .ok_or(CommandConfigError::Missing { operation })
        };
        let apply = take(0, Operation::Apply)?;
        let delete = take(1, Operation::Delete)?;
        let observe = take(2, Operation::Observe)?;
        let health = take(3, Operation::Health).ok();
        if let Some(p) = &self.observe_pointer
            && !p.starts_with('/')
        {
            return Err(CommandConfigError::Pointer { pointer: p.clone() });
        }
        if self.reap_orphans {
            // Best effort: without it, orphans go to PID 1 as usual.
            process::become_subreaper();
        }
        Ok(CommandTarget {
            inner: Arc::new(Config {
                apply,
                delete,
                observe,
                health,
                input: self.input,
                output: self.output,
                payload: self.payload,
                compare: self.compare,
                observe_pointer: self.observe_pointer,
                empty_is_not_found: self.empty_is_not_found,
                timeout: self.timeout,
                output_limit: self.output_limit,
                env,
                working_dir: self.working_dir,
                not_found_exit: self.not_found_exit,
                progressing_exit: self.progressing_exit,
                transient_exits: self.transient_exits,
                kinds: self.kinds,
                reap_orphans: self.reap_orphans,
            }),
        })
    }
}

/// The configuration error for a program [`process::resolve`] refused.
fn config_error(operation: Operation, e: ResolveError) -> CommandConfigError {
    match e {
        ResolveError::Empty => CommandConfigError::Empty { operation },
        ResolveError::NotFound { program, searched } => CommandConfigError::ProgramNotFound {
            operation,
            program,
            searched,
        },
        ResolveError::NotExecutable { path } => {
            CommandConfigError::NotExecutable { operation, path }
        }
    }
}

/// The captured stderr as text, with a note of what the cap dropped.
fn stderr_text(out: &Output) -> String {
    process::text(&out.stderr, out.stderr_dropped, "stderr", false)
}

/// Expands the placeholders of one argument in a single pass: what an id
/// part holds is never read again (a kind `{name}` stays `{name}`). `None`
/// when the argument names `{namespace}` and the id has none.
fn replace_placeholders(arg: &str, id: &ResourceId) -> Option<String> {
    if arg.contains("{namespace}") && id.namespace().is_none() {
        return None;
    }
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let (value, len) = [
            ("{kind}", id.kind()),
            ("{namespace}", id.namespace().unwrap_or("")),
            ("{name}", id.name()),
            ("{id}", id.as_str()),
        ]
        .into_iter()
        .find(|(placeholder, _)| after.starts_with(placeholder))
        .map_or(("{", 1), |(placeholder, value)| (value, placeholder.len()));
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Some(out)
}

impl Config {
    fn check_id(&self, id: &ResourceId) -> Result<(), TargetError> {
        // ResourceId already refuses empty parts, control characters (NUL,
        // newline, escape) and overlong parts; '/' in kind and namespace.
        if let Some(kinds) = &self.kinds
            && !kinds.iter().any(|k| k == id.kind())
        {
            return Err(TargetError::InvalidSpec {
                id: id.clone(),
                message: format!(
                    "kind {:?} is not one this command target accepts ({})",
                    id.kind(),
                    kinds.join(", ")
                ),
            });
        }
        Ok(())
    }

    async fn run(
        &self,
        operation: Operation,
        command: &Program,
        id: &ResourceId,
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, TargetError> {
        self.check_id(id)?;
        let mut extra_env = vec![
            ("GITOPS_OPERATION", operation.to_string()),
            ("GITOPS_KIND", id.kind().to_owned()),
            ("GITOPS_NAME", id.name().to_owned()),
            ("GITOPS_ID", id.as_str().to_owned()),
        ];
        if let Some(ns) = id.namespace() {
            extra_env.push(("GITOPS_NAMESPACE", ns.to_owned()));
        }
        let limit = self.output_limit;
        let result = process::run(Invocation {
            program: &command.path,
            args: command
                .args
                .iter()
                .filter_map(|a| replace_placeholders(a, id))
                .collect(),
            env: &self.env,
            extra_env,
            working_dir: self.working_dir.as_deref(),
            stdin,
            timeout: self.timeout,
            output_limit: limit,
            stdout: Capture::Limit,
            stderr: Capture::Head,
            reap_orphans: self.reap_orphans,
        })
        .await;
        let fail = |message: String| {
            TargetError::permanent(id, format!("{operation}: `{}` {message}", command.display))
        };
        match result {
            Ok(out) => Ok(out),
            Err(RunError::Spawn(e)) => {
                let message = match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "{operation}: program {} not found (or its interpreter is missing): {e}",
                        command.path.display()
                    ),
                    std::io::ErrorKind::PermissionDenied => format!(
                        "{operation}: program {} is not executable: {e}",
                        command.path.display()
                    ),
                    _ => format!("{operation}: cannot start {}: {e}", command.path.display()),
                };
                Err(TargetError::Permanent {
                    id: id.clone(),
                    message,
                    source: Some(Box::new(e)),
                })
            }
            Err(RunError::Overflow) => Err(fail(format!(
                "printed more than {limit} bytes on stdout; killed"
            ))),
            Err(RunError::Io(e)) => Err(fail(format!("I/O error: {e}"))),
            Err(RunError::Timeout) => Err(TargetError::Timeout {
                id: id.clone(),
                after: self.timeout,
            }),
        }
    }

    fn failure(
        &self,
        operation: Operation,
        command: &Program,
        id: &ResourceId,
        out: &Output,
    ) -> TargetError {
        let stderr = stderr_text(out);
        let stderr = if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        };
        let message = format!(
            "{operation}: `{}` {}{stderr}",
            command.display,
            process::describe_status(out.status)
        );
        let transient = match out.status.code() {
            Some(code) => self.transient_exits.contains(&code),
            None => true, // killed by a signal (OOM killer, operator): try again
        };
        if transient {
            TargetError::transient(id, message)
        } else {
            TargetError::permanent(id, message)
        }
    }

    fn payload(&self, resource: &Resource) -> Result<Vec<u8>, TargetError> {
        let doc = match self.payload {
            Payload::Spec => resource.spec.to_value(),
            Payload::Manifest => {
                let id = &resource.id;
                let mut metadata = Map::new();
                metadata.insert("name".into(), json!(id.name()));
                if let Some(ns) = id.namespace() {
                    metadata.insert("namespace".into(), json!(ns));
                }
                if !resource.labels.is_empty() {
                    metadata.insert("labels".into(), json!(resource.labels));
                }
                if !resource.annotations.is_empty() {
                    metadata.insert("annotations".into(), json!(resource.annotations));
                }
                let mut doc = Map::new();
                if let Some(v) = &resource.api_version {
                    doc.insert("apiVersion".into(), json!(v));
                }
                doc.insert("kind".into(), json!(id.kind()));
                doc.insert("metadata".into(), Value::Object(metadata));
                doc.insert("spec".into(), resource.spec.to_value());
                Value::Object(doc)
            }
        };
        let encoded = match self.input {
            Format::Json => serde_json::to_vec(&doc).map_err(|e| e.to_string()),
            Format::Yaml => serde_saphyr::to_string(&doc)
                .map(String::into_bytes)
                .map_err(|e| e.to_string()),
        };
        encoded.map_err(|message| TargetError::InvalidSpec {
            id: resource.id.clone(),
            message: format!("cannot encode the resource for stdin: {message}"),
        })
    }

    fn parse_observed(
        &self,
        id: &ResourceId,
        stdout: &[u8],
    ) -> Result<Option<Observed>, TargetError> {
        let text = std::str::from_utf8(stdout).map_err(|e| {
            TargetError::permanent(id, format!("observe printed invalid UTF-8: {e}"))
        })?;
        if text.trim().is_empty() {
            if self.empty_is_not_found {
                return Ok(None);
            }
            return Err(TargetError::permanent(
                id,
                format!(
                    "observe: `{}` exited 0 but printed nothing",
                    self.observe.display
                ),
            ));
        }
        let value: Value = match self.output {
            Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
            Format::Yaml => serde_saphyr::from_str(text).map_err(|e| e.to_string()),
        }
        .map_err(|e| {
            TargetError::permanent(
                id,
                format!(
                    "observe: `{}` printed a bad document: {e}",
                    self.observe.display
                ),
            )
        })?;
        let spec = match &self.observe_pointer {
            Some(p) => value.pointer(p).cloned().unwrap_or(Value::Null),
            None => value,
        };
        Ok(Some(Observed::new(spec)))
    }
}

/// `observed` with only the object keys that `desired` has, recursively.
fn project(observed: &Value, desired: &Value) -> Value {
    match (observed, desired) {
        (Value::Object(o), Value::Object(d)) => Value::Object(
            d.keys()
                .filter_map(|k| o.get(k).map(|v| (k.clone(), project(v, &d[k]))))
                .collect(),
        ),
        (Value::Array(o), Value::Array(d)) if o.len() == d.len() => {
            Value::Array(o.iter().zip(d).map(|(o, d)| project(o, d)).collect())
        }
        _ => observed.clone(),
    }
}

impl CommandTarget {
    /// A builder with the defaults described on its methods.
    pub fn builder() -> CommandTargetBuilder {
        CommandTargetBuilder::default()
    }
}

#[async_trait]
impl Target for CommandTarget {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let c = &self.inner;
        let out = c.run(Operation::Observe, &c.observe, id, None).await?;
        match out.status.code() {
            Some(0) => c.parse_observed(id, &out.stdout),
            Some(code) if code == c.not_found_exit => Ok(None),
            _ => Err(c.failure(Operation::Observe, &c.observe, id, &out)),
        }
    }

    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let c = &self.inner;
        let payload = c.payload(resource)?;
        let out = c
            .run(Operation::Apply, &c.apply, &resource.id, Some(payload))
            .await?;
        match out.status.code() {
            Some(0) => Ok(()),
            _ => Err(c.failure(Operation::Apply, &c.apply, &resource.id, &out)),
        }
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let c = &self.inner;
        let out = c.run(Operation::Delete, &c.delete, id, None).await?;
        match out.status.code() {
            Some(0) => Ok(()),
            Some(code) if code == c.not_found_exit => Ok(()),
            _ => Err(c.failure(Operation::Delete, &c.delete, id, &out)),
        }
    }

    async fn health(&self, id: &ResourceId) -> Result<Health, TargetError> {
        let c = &self.inner;
        let Some(command) = &c.health else {
            return Ok(Health::Healthy);
        };
        let out = c.run(Operation::Health, command, id, None).await?;
        Ok(match out.status.code() {
            Some(0) => Health::Healthy,
            Some(code) if code == c.not_found_exit => Health::Missing,
            Some(code) if code == c.progressing_exit => Health::Progressing,
            Some(code) if c.transient_exits.contains(&code) => {
                return Err(c.failure(Operation::Health, command, id, &out));
            }
            _ => Health::Degraded {
                reason: match stderr_text(&out) {
                    text if text.is_empty() => process::describe_status(out.status),
                    text => text,
                },
            },
        })
    }

    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        match self.inner.compare {
            Compare::Exact => Diff::specs(&observed.spec, &desired.spec),
            Compare::DesiredFields => {
                if observed.spec == desired.spec {
                    return None;
                }
                let want = desired.spec.to_value();
                Diff::between(&project(&observed.spec.to_value(), &want), &want)
            }
        }
    }
}
