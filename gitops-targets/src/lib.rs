//! Reference targets for `gitops`: [`FsTarget`] keeps a directory equal to
//! the files in Git, [`CommandTarget`] drives any command-line tool
//! (`kubectl`, `helm`, a vendor CLI) without writing Rust, and
//! [`CommandGate`] runs a program as a quality gate.
//!
//! ```
//! use gitops_core::{FilesRender, Render, Revision, Snapshot, Target};
//! use gitops_targets::FsTarget;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let target = FsTarget::open(dir.path())?;
//! let snapshot = Snapshot::from_files(
//!     Revision::new("main", "0".repeat(40)),
//!     [("etc/app.conf", &b"port = 80\n"[..])],
//! )?;
//! for file in FilesRender::new().render(&snapshot)?.resources() {
//!     target.apply(file).await?;
//! }
//! assert_eq!(std::fs::read_to_string(dir.path().join("etc/app.conf"))?, "port = 80\n");
//! # Ok(())
//! # }
//! ```
//!
//! Both targets need a Tokio runtime for their `async` methods (file work
//! runs on Tokio's blocking pool, commands are Tokio child processes).
//!
//! # `FsTarget`: a directory
//!
//! Manages resources of kind `File` (spec `{ path, content, encoding, mode }`
//! as made by [`FilesRender`](gitops_core::FilesRender)) under one root.
//!
//! - **Writes** are atomic: a temporary file `.gitops-tmp-<pid>-<n>` in the
//!   same directory, `fchmod` to the exact mode (the umask does not apply),
//!   then `rename` over the old file. Temporary files left by a killed
//!   process are removed by [`FsTarget::open`].
//! - **Observe** opens the file without following a symlink, reads its size
//!   first (a file over the size limit is reported by size, never read),
//!   then its content, and returns a spec in exactly the `FilesRender` shape.
//!   `differs` compares the decoded bytes and the mode, so drift is exact
//!   whatever the encoding. A symlink, directory or FIFO at a managed path is
//!   observed as drift (`"type": "symlink"`), and `apply` replaces it (a
//!   directory in the way is an error instead).
//!   `observe_many` reads in one batch per core, sorted by directory, each
//!   directory opened once. With a stat cache ([`FsOptions::stat_cache`],
//!   the technique of Git's index) a file whose `(device, inode, size,
//!   mtime, ctime, mode)` is unchanged since this target wrote or read it is
//!   answered by the recorded digest without being opened; racily clean
//!   entries, drift and a periodic verification ([`FsOptions::verify_every`])
//!   are read.
//! - **Delete** unlinks the file, then removes its parent directories that
//!   became empty, deepest first, stopping at the first that still holds
//!   anything (managed or not) and never removing the root. Deleting a
//!   missing file succeeds. (The target keeps no record of which directories
//!   it created, so an empty directory that existed before is removed too.)
//! - **Health** is `Missing` when absent, `Healthy` when present with the
//!   content and mode this target last applied, `Degraded` when someone
//!   changed it since or a non-file is in the way.
//! - **Limits** ([`FsOptions`]): modes `0644` and `0755` only (no setuid,
//!   setgid, sticky or world-writable bits), 10 MiB per file (the Git source's limit), 1,000,000 files
//!   under the root (counting unmanaged files; replacing does not count).
//!
//! ## Durability trade-off
//!
//! | [`Durability`] | what happens | after a power loss | cost (1,000 files, see below) |
//! |---|---|---|---|
//! | `None` | atomic rename only | the last ~30 s of writes may be lost, a just-renamed file may be empty | fastest |
//! | `PerWave` (**default**) | atomic rename; the wave's health check runs one `syncfs` shared by all its resources | a wave is reported healthy only once it is on disk; a crash mid-wave can leave that wave's files old, new or empty, which the next reconcile observes and repairs | about the cost of `None` plus one `syncfs` |
//! | `PerFile` | `fsync` of each file before its rename and of its directory after | `apply` returns only when the file is on disk | one `fsync` pair per file: slowest |
//!
//! `PerWave` is the default because the engine is level-triggered: it never
//! trusts what it wrote, it observes again, so the only durability that
//! matters is "a wave reported healthy is on disk", and one `syncfs` per wave
//! gives that at a fraction of per-file `fsync`. `syncfs` flushes the whole
//! filesystem holding the root, including other programs' dirty data; on a
//! busy shared disk that can take seconds (see the benchmark). Call
//! [`FsTarget::sync`] yourself when you apply without the engine's health
//! checks.
//!
//! ## Path safety
//!
//! Every operation is relative to the root opened once (`openat2` with
//! `RESOLVE_BENEATH` through `cap-std`). `..`, absolute paths, backslashes,
//! control characters, `.git` components and the temporary-file prefix are
//! refused as invalid specs before any system call; a symlink planted inside
//! the root (before or during a sync) that leads outside makes the operation
//! fail instead of escaping. Symlinks that stay inside the root are followed
//! for directories (the file lands inside the root); the last component is
//! never followed. The tests plant symlinks, swap a directory with a symlink
//! to outside thousands of times during applies (`renameat2(RENAME_EXCHANGE)`),
//! and check that nothing outside the root is read or written.
//!
//! # `CommandTarget`: any CLI
//!
//! Configured with argument vectors, never a shell string. Placeholders
//! `{kind}`, `{namespace}`, `{name}` and `{id}` inside an argument are
//! replaced as plain text (an argument containing `{namespace}` is left out
//! for an id without namespace); the id is also in the environment as
//! `GITOPS_KIND`, `GITOPS_NAMESPACE`, `GITOPS_NAME`, `GITOPS_ID`, with
//! `GITOPS_OPERATION`. `apply` gets the resource on stdin as JSON or YAML
//! ([`command::Format`]), as a Kubernetes-shaped manifest or the bare spec
//! ([`command::Payload`]).
//!
//! ## Exit-code contract
//!
//! | call | exit 0 | not-found code (default 3) | progressing code (default 4) | transient codes (default 75) | anything else |
//! |---|---|---|---|---|---|
//! | `observe` | current state on stdout (JSON or YAML; empty stdout is "not found" only with `empty_stdout_is_not_found`) | `None` | error | `Transient` error | `Permanent` error |
//! | `apply` | done | `Permanent` error | `Permanent` error | `Transient` error | `Permanent` error |
//! | `delete` | done | done (already gone) | `Permanent` error | `Transient` error | `Permanent` error |
//! | `health` | `Healthy` | `Missing` | `Progressing` | `Transient` error | `Degraded` (reason: stderr) |
//!
//! Errors carry the command line, the exit status and the (capped) stderr. A
//! program killed by a signal is a transient error; a call over its timeout
//! is `TargetError::Timeout` and its whole process group is killed
//! (`SIGKILL`) and reaped. Stdout over the cap (default 4 MiB) kills the
//! program and fails the call; stderr over the cap is truncated. A program
//! that is not there fails [`CommandTargetBuilder::build`] with
//! [`CommandConfigError::ProgramNotFound`] (naming the `PATH` searched), and
//! a call fails with "program ... not found" if it disappears later.
//!
//! ## Worked configuration: `kubectl`
//!
//! ```
//! use std::time::Duration;
//! use gitops_targets::CommandTarget;
//! use gitops_targets::command::{Compare, Format, Payload};
//!
//! let kubectl = CommandTarget::builder()
//!     // Server-side apply: the API server merges, and owns, the fields Git sets.
//!     .apply(["kubectl", "apply", "--server-side", "--field-manager=gitops",
//!             "--force-conflicts", "-f", "-"])
//!     .payload(Payload::Manifest) // apiVersion, kind, metadata, spec
//!     .input(Format::Yaml)
//!     // --ignore-not-found: a missing object is exit 0 with empty stdout.
//!     // `{kind}/{name}` is one argument, and no id part begins with `-`:
//!     // a manifest cannot pass `--context=prod` as a kind.
//!     .observe(["kubectl", "get", "--ignore-not-found", "-o", "json",
//!               "--namespace={namespace}", "{kind}/{name}"])
//!     .empty_stdout_is_not_found(true)
//!     .observe_pointer("/spec")
//!     .compare(Compare::DesiredFields)
//!     .delete(["kubectl", "delete", "--ignore-not-found", "--wait=false",
//!              "--namespace={namespace}", "{kind}/{name}"])
//!     // rollout status exits 1 while the rollout is not done within 1 s.
//!     .health(["kubectl", "rollout", "status", "--timeout=1s",
//!              "--namespace={namespace}", "{kind}/{name}"])
//!     .progressing_exit_code(1)
//!     // kubectl exits 1 for every failure, including an unreachable API
//!     // server: treat 1 as transient so the engine retries with backoff.
//!     .transient_exit_codes([1])
//!     .allow_env(["KUBECONFIG"])
//!     .kinds(["Deployment", "Service", "ConfigMap"])
//!     .timeout(Duration::from_secs(120));
//! // `.build()` resolves `kubectl` on PATH and fails clearly when it is missing.
//! # let _ = kubectl;
//! ```
//!
//! `kubectl get -o json` prints the whole live object: `metadata` with
//! server-set fields (`uid`, `resourceVersion`, `managedFields`), the
//! `spec` with defaults the API server filled in (`revisionHistoryLimit`,
//! `imagePullPolicy`, ...), and `status`. Comparing it with Git field by
//! field would report drift forever, so the pointer `/spec` selects the
//! spec and [`command::Compare::DesiredFields`] compares only the fields Git
//! sets: a field someone changed is drift, a field the server added is not.
//! `kubectl diff -f -` is the precise alternative: it runs a server-side
//! dry-run apply and diffs the result against the live object, exiting 0 for
//! no difference, 1 for a difference and above 1 for an error; it needs the
//! API server for every comparison, and [`Target::differs`](gitops_core::Target::differs)
//! is a pure function without I/O, so use `kubectl diff` in CI next to
//! `plan`, not as the drift check. Objects whose body is not under `spec`
//! (a `ConfigMap`'s `data`) need [`command::Payload::Spec`] with the whole
//! object in the manifest's `spec` and no `observe_pointer`. With
//! `transient_exit_codes([1])` a manifest the API server rejects is also
//! retried until the engine's retry budget runs out; leave the default to
//! stop at once instead, at the price of stopping on a network blip too.
//!
//! ## Security notes
//!
//! - No shell runs: hostile names (`; rm -rf /`, `$(id)`, `--force`, `-rf`)
//!   reach the program as one argument each; put `--` before positional ids
//!   where the program supports it, or the name could be read as an option.
//!   [`ResourceId`](gitops_core::ResourceId) already refuses control
//!   characters (newline, NUL, escape), `/` in kind and namespace and parts
//!   over 253 bytes; [`CommandTargetBuilder::kinds`] restricts kinds before
//!   anything runs.
//! - The environment starts empty plus an allowlist (default `PATH`, `HOME`,
//!   `LANG`, `LC_ALL`, `TZ`) and the variables you set: the engine's own
//!   secrets do not leak into the tool. Pass secrets in the resource (stdin),
//!   not in arguments, which every local user can read in `/proc`.
//! - Programs are resolved to absolute paths when the target is built.
//! - Every call runs in its own process group; a timeout kills the group.
//!   Orphans of a killed command are re-parented to PID 1, which normally
//!   reaps them; where PID 1 does not (some containers, and the machines this
//!   project's CI runs on), [`CommandTargetBuilder::reap_orphans`] makes this
//!   process a child subreaper and reaps them itself.
//! - `FsTarget` writes files as the user running it, with mode `0644` or
//!   `0755` only, and never follows a symlink out of its root; run it as an
//!   unprivileged user that owns the root where you can.
//!
//! # `CommandGate`: a program as a quality gate
//!
//! A test suite or a policy scanner run before (pre-sync) or after
//! (post-sync) a revision reaches the target, with the same process runner
//! as `CommandTarget`: argument vector, no shell, environment allowlist,
//! timeout killing the whole process group. It gets `{stage, revision,
//! plan}` as JSON on stdin; exit 0 passes. The last 64 KiB of stdout and of
//! stderr are kept as the gate's output (report, history, audit). See the
//! [`gate`] module.
//!
//! # Benchmarks
//!
//! `cargo bench -p gitops-benches --bench targets` (criterion, release, the
//! floors measured in the same run on the same filesystem, ext4 on a 2-core
//! VM shared with two other builds: load average 4.7 to 5.1 during the run).
//! 10,000 files of ~200 bytes in 1,000 directories; applies run 8 at a
//! time, the engine's default concurrency. Medians:
//!
//! | case | `FsTarget` | floor | ratio | goal |
//! |---|---|---|---|---|
//! | first apply of 10,000 files into an empty directory | 5.69 s | `rsync -a`: 8.45 s | 0.67x | ≤ 1.5x |
//! | same, plus the wave's health check (one `syncfs`) | 4.86 s | `rsync -a`: 8.45 s | 0.58x | |
//! | no-op observe of all 10,000 (`observe_many`) | 50.0 ms | `rsync -a --dry-run`: 100.4 ms | 0.50x | ≤ 1.0x |
//! | one changed file: observe all, diff all, repair | 49.3 ms (observe + diff 48.8 ms) | | | ≤ 50 ms |
//! | reference: `open`+`fstat`+`read`+`close` of every file, 2 threads, no target | 25.5 ms | | | |
//!
//! Durability on the first 1,000 files (one directory each): `None` 1.04 s,
//! `PerWave` with its health check 1.00 s, `PerFile` 1.24 s. File creation
//! dominates on this disk (ext4 spends its time finding free inodes among
//! recently deleted ones), so `fsync` is cheap here; on a disk where `fsync`
//! waits for the device the gap to `PerFile` grows.
//!
//! The one-change case is at its goal only on a moderately loaded machine:
//! earlier runs under heavier load measured 52 to 81 ms, all of it in the
//! observe (the single `apply` is ~1 ms). Observe reads every file's
//! content by design; it costs about twice the bare system calls (the
//! reference line), the rest being the JSON spec per file and the
//! `openat2(RESOLVE_BENEATH)` path checks.
pub mod command;
pub mod fs;
pub mod gate;
mod process;

pub use command::{CommandConfigError, CommandTarget, CommandTargetBuilder};
pub use fs::{Durability, FsOpenError, FsOptions, FsTarget};
pub use gate::{CommandGate, CommandGateBuilder, CommandGateError};
