//! The private process runner shared by [`CommandTarget`](crate::CommandTarget)
//! and [`CommandGate`](crate::CommandGate): programs resolved once to a path,
//! argument vectors (never a shell), an environment that starts empty plus an
//! allowlist, a timeout that kills the whole process group, capped output.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

/// The environment and working-directory setters shared by the builders of
/// programs ([`CommandTargetBuilder`](crate::CommandTargetBuilder),
/// [`CommandGateBuilder`](crate::CommandGateBuilder)); the builder has the
/// fields `env_allow`, `env` and `working_dir`.
macro_rules! environment_setters {
    () => {
        /// Adds names to the environment allowlist (default
        /// [`DEFAULT_ENV_ALLOW`](crate::command::DEFAULT_ENV_ALLOW)): their
        /// values are copied from this process.
        pub fn allow_env<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
            self.env_allow.extend(names.into_iter().map(Into::into));
            self
        }

        /// Replaces the environment allowlist (an empty list passes nothing).
        pub fn env_allowlist<I: IntoIterator<Item = S>, S: Into<String>>(
            mut self,
            names: I,
        ) -> Self {
            self.env_allow = names.into_iter().map(Into::into).collect();
            self
        }

        /// Sets one variable for every run.
        pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.env.push((name.into(), value.into()));
            self
        }

        /// The working directory of the program (default: this process's).
        pub fn working_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
            self.working_dir = Some(dir.into());
            self
        }
    };
}
pub(crate) use environment_setters;

/// A program resolved to a path, with its fixed arguments.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    /// The resolved executable.
    pub path: PathBuf,
    /// The arguments after the program (templates for `CommandTarget`).
    pub args: Vec<String>,
    /// The argument vector as configured, joined by spaces (for messages).
    pub display: String,
}

/// Why [`resolve`] refused an argument vector.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// The vector, or the program in it, is empty.
    Empty,
    /// No such file.
    NotFound {
        /// The program as configured.
        program: String,
        /// Where it was looked for.
        searched: String,
    },
    /// Found but not executable.
    NotExecutable {
        /// The resolved path.
        path: PathBuf,
    },
}

/// Resolves `argv[0]` on `search_path` (or relative to `working_dir` when it
/// contains a `/`) and checks it is an executable file.
pub(crate) fn resolve(
    argv: &[String],
    search_path: &OsStr,
    working_dir: Option<&Path>,
) -> Result<Program, ResolveError> {
    let Some((program, rest)) = argv.split_first() else {
        return Err(ResolveError::Empty);
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        let p = PathBuf::from(program);
        vec![match working_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        }]
    } else if program.is_empty() {
        return Err(ResolveError::Empty);
    } else {
        std::env::split_paths(search_path)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(program))
            .collect()
    };
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let searched = if program.contains('/') {
            "the given path".to_owned()
        } else {
            format!("PATH={}", search_path.to_string_lossy())
        };
        return Err(ResolveError::NotFound {
            program: program.clone(),
            searched,
        });
    };
    let executable = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if !executable {
        return Err(ResolveError::NotExecutable { path: path.clone() });
    }
    let display = argv.join(" ");
    Ok(Program {
        path: path.clone(),
        args: rest.to_vec(),
        display,
    })
}

/// The environment of every call: the allowlisted variables copied from this
/// process, then `set` (which wins). `Err(name)` names an invalid variable
/// name (empty, or holding `=` or NUL).
pub(crate) fn environment(
    allow: &[String],
    set: &[(String, String)],
) -> Result<Vec<(OsString, OsString)>, String> {
    let check = |name: &str| {
        if name.is_empty() || name.contains(['=', '\0']) {
            Err(name.to_owned())
        } else {
            Ok(())
        }
    };
    let mut env = Vec::new();
    for name in allow {
        check(name)?;
        if let Some(value) = std::env::var_os(name) {
            env.push((OsString::from(name), value));
        }
    }
    for (name, value) in set {
        check(name)?;
        env.retain(|(n, _)| n != name.as_str());
        env.push((OsString::from(name), OsString::from(value)));
    }
    Ok(env)
}

/// The `PATH` programs are resolved on: the one passed to them, else ours.
pub(crate) fn search_path(env: &[(OsString, OsString)]) -> OsString {
    env.iter()
        .find(|(n, _)| n == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default()
}

/// How one output stream is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capture {
    /// Everything, up to the limit; more is an overflow and kills the program.
    Limit,
    /// The first `limit` bytes; the rest is counted and dropped.
    Head,
    /// The last `limit` bytes; the rest is counted and dropped.
    Tail,
}

/// One run of a program.
pub(crate) struct Invocation<'a> {
    /// The program and its fixed arguments.
    pub program: &'a Path,
    /// The arguments (already expanded).
    pub args: Vec<String>,
    /// The base environment (the process starts with nothing else).
    pub env: &'a [(OsString, OsString)],
    /// Extra variables for this call.
    pub extra_env: Vec<(&'static str, String)>,
    /// The working directory (default: this process's).
    pub working_dir: Option<&'a Path>,
    /// Bytes for stdin (`None`: stdin is `/dev/null`).
    pub stdin: Option<Vec<u8>>,
    /// On expiry the whole process group is killed.
    pub timeout: Duration,
    /// Cap of each stream.
    pub output_limit: usize,
    /// How stdout is captured.
    pub stdout: Capture,
    /// How stderr is captured.
    pub stderr: Capture,
    /// Reap re-parented members of the group (as child subreaper).
    pub reap_orphans: bool,
}

/// What a finished program produced.
#[derive(Debug)]
pub(crate) struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Bytes of stdout dropped by the cap.
    pub stdout_dropped: u64,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Bytes of stderr dropped by the cap.
    pub stderr_dropped: u64,
}

/// Why a run did not produce an [`Output`]. In every case but `Spawn`, the
/// whole process group was killed and the leader reaped.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// The timeout expired.
    Timeout,
    /// Stdout went over the limit with [`Capture::Limit`].
    Overflow,
    /// Reading or writing a pipe failed.
    Io(std::io::Error),
}

/// Runs one program in its own process group. Dropping the returned future
/// (a caller's timeout, a cancelled sync) kills the whole group too.
pub(crate) async fn run(call: Invocation<'_>) -> Result<Output, RunError> {
    let mut cmd = tokio::process::Command::new(call.program);
    cmd.args(&call.args)
        .env_clear()
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .envs(call.extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(if call.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = call.working_dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let pgid = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
    let mut guard = GroupGuard(pgid);
    let stdin_pipe = child.stdin.take();
    let stdout_pipe = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let limit = call.output_limit;
    let stdin = call.stdin;
    let outcome = tokio::time::timeout(call.timeout, async {
        let write = async {
            if let (Some(mut pipe), Some(data)) = (stdin_pipe, stdin) {
                // A program that exits without reading its input is fine.
                let _ = pipe.write_all(&data).await;
            }
            Ok::<(), RunError>(())
        };
        let out = async {
            match stdout_pipe {
                Some(p) => read(p, limit, call.stdout).await,
                None => Ok((Vec::new(), 0)),
            }
        };
        let err = async {
            match stderr_pipe {
                Some(p) => read(p, limit, call.stderr).await,
                None => Ok((Vec::new(), 0)),
            }
        };
        let ((), (stdout, stdout_dropped), (stderr, stderr_dropped)) =
            tokio::try_join!(write, out, err)?;
        let status = child.wait().await.map_err(RunError::Io)?;
        Ok::<_, RunError>(Output {
            status,
            stdout,
            stdout_dropped,
            stderr,
            stderr_dropped,
        })
    })
    .await;
    let error = match outcome {
        Ok(Ok(output)) => {
            // The leader was reaped: its pid may be reused, never signal it.
            guard.disarm();
            if call.reap_orphans {
                reap_group(pgid).await;
            }
            return Ok(output);
        }
        Ok(Err(e)) => e,
        Err(_elapsed) => RunError::Timeout,
    };
    // Timeout, overflow or I/O error: kill the whole group, reap the
    // leader (so it leaves no zombie), then any re-parented members.
    kill_group(pgid);
    let _ = child.wait().await;
    guard.disarm();
    if call.reap_orphans {
        reap_group(pgid).await;
    }
    Err(error)
}

/// Reads all of `reader` as `capture` says; returns the kept bytes and how
/// many were dropped.
async fn read<R: AsyncRead + Unpin>(
    mut reader: R,
    limit: usize,
    capture: Capture,
) -> Result<(Vec<u8>, u64), RunError> {
    let mut out = Vec::new();
    let mut dropped = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await.map_err(RunError::Io)?;
        if n == 0 {
            return Ok((out, dropped));
        }
        let chunk = &buf[..n];
        match capture {
            Capture::Limit => {
                if out.len() + n > limit {
                    return Err(RunError::Overflow);
                }
                out.extend_from_slice(chunk);
            }
            Capture::Head => {
                let keep = n.min(limit.saturating_sub(out.len()));
                out.extend_from_slice(&chunk[..keep]);
                dropped += (n - keep) as u64;
            }
            Capture::Tail => {
                out.extend_from_slice(chunk);
                if out.len() > limit {
                    let excess = out.len() - limit;
                    out.drain(..excess);
                    dropped += excess as u64;
                }
            }
        }
    }
}

/// Kills the process group when dropped while armed: a call whose future is
/// dropped mid-run (the engine's own call timeout, a cancelled sync) leaves
/// no process of the group behind. Tokio's `kill_on_drop` alone would kill
/// only the leader.
struct GroupGuard(Option<rustix::process::Pid>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// Kills every process of the group `pgid`; a group already gone is fine.
fn kill_group(pgid: Option<rustix::process::Pid>) {
    if let Some(pgid) = pgid {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
}

/// Reaps the members of `pgid` that were re-parented to this process (only
/// possible as a child subreaper); waits up to a second for them to die.
async fn reap_group(pgid: Option<rustix::process::Pid>) {
    let Some(pgid) = pgid else { return };
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    for _ in 0..100 {
        match waitid(
            WaitId::Pgid(Some(pgid)),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(_)) => continue,
            Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => return, // ECHILD: none left.
        }
    }
}

/// Makes this process a child subreaper, best effort (process-wide).
pub(crate) fn become_subreaper() {
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
}

/// "exited with 3", "was killed by signal 9".
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}

/// Lossy UTF-8 text of captured bytes, trimmed at the end, with a note of
/// how many bytes the cap dropped (`before`: they came before the text).
pub(crate) fn text(bytes: &[u8], dropped: u64, what: &str, before: bool) -> String {
    let body = String::from_utf8_lossy(bytes).trim_end().to_owned();
    match (dropped, before) {
        (0, _) => body,
        (n, true) => format!("[{n} earlier bytes of {what} dropped] {body}"),
        (n, false) => format!("{body} [{n} more bytes of {what} dropped]"),
    }
}
