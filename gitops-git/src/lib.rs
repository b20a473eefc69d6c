//! `gitops-git`: the Git [`Source`](gitops_core::Source) of `gitops`, on
//! [gix](https://docs.rs/gix). It decides which commit is the release, notices
//! a new one cheaply, and reads its files straight from the object database of
//! a bare cache repository — never a worktree checkout.
//!
//! Poll a repository and print the files of the release:
//!
//! ```
//! use gitops_core::{Cancel, Source};
//! use gitops_git::{GitSource, ReferencePolicy};
//!
//! # fn git(dir: &std::path::Path, args: &[&str]) {
//! #     let status = std::process::Command::new("git").current_dir(dir).args(args)
//! #         .env("GIT_CONFIG_GLOBAL", "/dev/null").env("GIT_CONFIG_NOSYSTEM", "1")
//! #         .env("GIT_AUTHOR_NAME", "Alice").env("GIT_AUTHOR_EMAIL", "alice@example.com")
//! #         .env("GIT_COMMITTER_NAME", "Alice").env("GIT_COMMITTER_EMAIL", "alice@example.com")
//! #         .status().expect("git is installed");
//! #     assert!(status.success());
//! # }
//! # let tmp = tempfile::tempdir()?;
//! # let repo = tmp.path().join("repo");
//! # std::fs::create_dir_all(repo.join("deploy"))?;
//! # std::fs::write(repo.join("deploy/app.yaml"), "kind: ConfigFile\n")?;
//! # git(&repo, &["init", "-q", "-b", "main"]);
//! # git(&repo, &["add", "-A"]);
//! # git(&repo, &["commit", "-q", "-m", "release 1.2.0"]);
//! # git(&repo, &["tag", "-a", "v1.2.0", "-m", "1.2.0"]);
//! // A repository with a `deploy/` directory and release tags `v1.2.0`, ...
//! let url = format!("file://{}", repo.display());
//! let source = GitSource::builder(url, ReferencePolicy::semver(">=1.0.0, <2.0.0"))
//!     .cache_dir(tmp.path().join("cache")) // a bare repository, reused across restarts
//!     .path("deploy")                       // only the files under deploy/
//!     .build()?;
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let release = source.poll().await?; // cheap when nothing changed
//!     println!("{release}: {} by {}", release.summary(), release.author);
//!     let snapshot = source.snapshot(&release, &Cancel::new()).await?;
//!     for (path, file) in snapshot.files() {
//!         println!("  {path} ({} bytes)", file.data.len());
//!     }
//!     assert_eq!(release.reference, "v1.2.0");
//!     assert_eq!(snapshot.get("app.yaml"), Some(&b"kind: ConfigFile\n"[..]));
//!     Ok::<_, gitops_core::SourceError>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # URLs
//!
//! A plain local path and `file://` (these run `git-upload-pack`, so the `git`
//! binary must be installed), `http://` and `https://` (in process, rustls),
//! `ssh://` and scp-like `user@host:path` (the system `ssh`, always with
//! `BatchMode=yes`; see [`SshOptions`]), and `git://` (in process).
//!
//! # Release selection
//!
//! [`ReferencePolicy`]: `Branch("main")`, `Tag("v1.2.0")` (annotated tags are
//! peeled to their commit), `Semver(">=1.0.0, <2.0.0")` (highest matching tag;
//! a `v` prefix is accepted, tags that are not semver are ignored, pre-releases
//! only match a range that names one), `Commit(id)` (full or unique
//! abbreviation). A revision displays as `main@sha1:<hex>` or
//! `v1.2.0@sha1:<hex>`.
//!
//! Every poll lists the remote references (one round trip). If the selected
//! reference still points at what the cache has, nothing else happens: no
//! negotiation, no pack, the same [`Revision`](gitops_core::Revision) again
//! ([`GitSource::poll_detailed`] tells). Force-pushed branches, moved tags and
//! deleted tags are noticed because the selection is made from the remote's
//! current advertisement, never from the cache. A pinned commit already in
//! the cache needs no network at all. Fetches are shallow (depth 1) by
//! default; `depth(None)` keeps full history for [`GitSource::history`].
//!
//! # Snapshots
//!
//! [`Source::snapshot`](gitops_core::Source::snapshot) walks the commit's tree
//! (under the optional `path`) in the bare cache. Every path component is
//! checked with `gix-validate` (Windows, NTFS and HFS protections on: `..`,
//! `.git`, `GIT~1`, `.GIT`, control characters, ...) and every full path with
//! `gitops_core::model::validate_relative_path`. [`Limits`] (one file 10 MiB,
//! 256 MiB in total, 100,000 files by default) are checked from the object
//! header before any content is read. Symbolic links and submodules are never
//! followed: the revision is refused, or with [`SpecialEntries::Skip`] they
//! are left out with a `tracing` warning.
//!
//! Before the walk, the tree is measured: each unique tree object is read
//! once (its size checked from its header first, at most 10 MiB,
//! `max_tree_bytes`), and the entries below it are counted as often as they
//! are referenced. A tree with more than 1,000,000 entries (`max_entries`)
//! or nested more than 64 directories deep (`max_depth`) is refused, naming
//! the limit. A Git tree may reference the same subtree many times: 64
//! copies of a subtree, 6 levels deep, is 10 objects and 64^6 visits (hours
//! of walking); it is refused in milliseconds. The walk also checks the
//! [`Cancel`](gitops_core::Cancel) it is given (and a dropped snapshot or poll
//! future stops its blocking thread), so a shutdown is prompt.
//!
//! A fetch or push timeout of `Duration::MAX` means no practical limit (it
//! is cut to [`LONGEST_TIMEOUT`]).
//!
//! # Credentials
//!
//! [`Credentials::basic`] (also the usual way to pass a personal access token),
//! [`Credentials::bearer`] (an `Authorization: Bearer` header), either fixed or
//! from a [`CredentialsCallback`] asked on every fetch (rotated tokens). A
//! password in the URL is moved out of it. There is never a terminal prompt.
//! Secrets never appear in errors, `Debug`, `Display` or log lines (they are
//! also scrubbed from gix's messages).
//!
//! Credentials over plain `http://` are refused before anything is sent
//! unless [`GitSourceBuilder::allow_insecure_http_credentials`] is set (a
//! test server, a trusted network); basic credentials then also need this
//! crate's cargo feature `insecure-http-credentials`, which turns on
//! gix-transport's `http-client-insecure-credentials` (gix refuses them
//! outright without it; cargo unifies features, so this crate does not rely
//! on gix's refusal and checks at run time).
//!
//! [`GitSourceBuilder::ca_file`] trusts the CA certificates of a PEM file for
//! `https://` remotes besides the system's roots (a private server, a test
//! CA): gix's reqwest (rustls) transport ignores `http.sslCAInfo`, so the
//! certificates are added to its client; write-back's `git push` gets the
//! file as `http.sslCAInfo`.
//! For SSH, [`SshOptions`] names the key, a known_hosts file (strict host key
//! checking) and optionally another ssh program.
//!
//! # Signatures
//!
//! With [`GitSourceBuilder::verify`], a revision is only returned (and a
//! snapshot only read) when its signature is valid: [`VerifyMode::Head`] (the
//! commit), [`VerifyMode::Tag`] (the annotated tag it was selected through),
//! or [`VerifyMode::TagAndHead`], by a key of a [`TrustedSigners`] set:
//!
//! - SSH signatures (`gpg.format=ssh`) are verified with the `ssh-key`
//!   crate, namespace `git`, against an [`AllowedSigners`] list (git's
//!   `allowedSignersFile` format; Ed25519 keys). A key's
//!   `valid-after`/`valid-before` window is honoured against the commit's
//!   committer time (the tag's tagger time), as `git verify-commit` does; a
//!   `cert-authority` line or an unknown option is refused at parse, naming
//!   the line.
//! - OpenPGP signatures (GnuPG's) are verified with the pure-Rust `pgp`
//!   crate against [`PgpKeys`] (armored public keys): a signature made after
//!   its key expired, by a revoked key, or with a weak hash is refused. They
//!   were refused as unsupported before; Argo CD (GPG) and Flux (OpenPGP)
//!   users sign this way and could not adopt otherwise.
//!
//! A commit signed by a key of either set passes.
//!
//! # Write-back
//!
//! [`GitWriteback`] is the Modify strategy: drifted resources are rewritten
//! into the files they came from (by the `Render` that read them), committed
//! with gix on top of the deployed revision (optionally SSH-signed), and
//! published by a compare-and-swap of the branch in a local repository or by
//! `git push --atomic --force-with-lease` from the bare cache to a remote (gix
//! cannot push yet; the source's credentials go to `git` through its
//! environment). A moved branch is handled by rebuilding the commit on the new
//! head when the written files did not change there, else by a
//! [`WritebackError::Conflict`](gitops_core::WritebackError::Conflict); nothing
//! is ever overwritten.
//!
//! # Errors
//!
//! Network trouble (connection refused, timeout, HTTP 5xx, ...) is
//! `SourceError::Unavailable` (transient); its message names the last good
//! revision, which stays readable from the cache ([`GitSource::last_good`]).
//! A missing reference, a failed verification, a refused path or limit, and
//! rejected credentials are permanent.
//!
//! # Performance
//!
//! `cargo bench -p gitops-benches --bench git` (release build, criterion
//! medians, one run, against the `git` CLI on the same generated repository of
//! 10,000 files of ~200 bytes in nested directories, on the project's shared
//! 2-core machine under load):
//!
//! | measurement | gitops-git | git CLI | ratio | goal |
//! |---|---|---|---|---|
//! | cold fetch + snapshot (`file://`) | 85 ms | `git clone --depth 1`: 11.7 s (`--bare`: 203 ms) | 0.007x (0.42x of the bare clone) | ≤ 0.5x |
//! | no-op poll, `file://` | 1.7 ms | `git fetch`, up-to-date clone: 15.7 ms | 0.11x | ≤ 1.0x |
//! | no-op poll, local HTTP | 20.1 ms | `git fetch`: 39.7 ms | 0.51x | ≤ 1.0x |
//! | one-file commit, then poll + snapshot | 37 ms | `git fetch --depth 1` + `reset --hard`: 86 ms | 0.43x | ≤ 50 ms |
//! | peak RSS, cold 10,000-file snapshot (own process) | 16.9 MB | | | < 100 MB |
//!
//! # Threads
//!
//! gix is blocking: every fetch and tree walk runs in
//! `tokio::task::spawn_blocking`. Polls of one source are serialized.

mod credentials;
mod error;
mod openpgp;
mod policy;
mod promote;
mod push;
mod snapshot;
mod source;
mod trust;
mod verify;
mod writeback;

pub use credentials::{CredentialRequest, Credentials, CredentialsCallback, Secret, SshOptions};
pub use error::GitError;
pub use openpgp::{PgpKey, PgpKeys, PgpKeysError};
pub use policy::ReferencePolicy;
pub use promote::{GitPromoter, GitPromoterBuilder, PromotionRef};
pub use snapshot::{Limits, SpecialEntries};

/// The longest timeout kept: a fetch or push timeout above it (such as
/// `Duration::MAX`) means "no practical limit" and is cut to it, so the
/// deadline arithmetic of tokio, std and reqwest never overflows.
pub const LONGEST_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `timeout`, cut to [`LONGEST_TIMEOUT`].
pub(crate) fn saturate(timeout: std::time::Duration) -> std::time::Duration {
    timeout.min(LONGEST_TIMEOUT)
}
pub use source::{GitSource, GitSourceBuilder, PollOutcome, SharedRepository};
pub use trust::TrustedSigners;
pub use verify::{AllowedSigner, AllowedSigners, AllowedSignersError, VerifyMode};
pub use writeback::{DEFAULT_MESSAGE_TEMPLATE, GitWriteback, GitWritebackBuilder, Identity};
