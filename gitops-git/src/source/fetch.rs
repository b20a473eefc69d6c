//! One poll: list the remote's references, select the release, receive a
//! pack unless the cache already has it, and verify what was selected.
//!
//! [`select_release`] decides from the advertisement alone (pure);
//! [`fetch_blocking`] does the network and cache work around it.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use gitops_core::{Revision, SourceError};
use gix::bstr::ByteSlice;

use crate::credentials::Credentials;
use crate::error::objects;
use crate::policy::Policy;

use super::cache::consolidate_packs;
use super::read::resolve_commit;
use super::remote::{answer_basic, configure, http_options, remote_error};
use super::shared::{Advertised, FetchPlan};
use super::signatures::finish;
use super::{Inner, PollOutcome};

/// What the remote's advertisement says the release is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Release {
    /// The selected reference (`full` remote name, `short` display name) at
    /// `object`: a commit, or an annotated tag to peel.
    Advertised {
        full: String,
        short: String,
        object: gix::ObjectId,
    },
    /// The selected reference was advertised without an object (unborn).
    Unborn { full: String },
    /// A pinned commit, looked up by its (abbreviated) id after the fetch.
    Pinned { prefix: String },
}

/// Picks the release among the advertised `(name, object)` pairs; a
/// missing reference is an error naming the location.
fn select_release(
    policy: &Policy,
    location: &str,
    advertised: &[(String, Option<gix::ObjectId>)],
) -> Result<Release, SourceError> {
    if let Policy::Commit(prefix) = policy {
        return Ok(Release::Pinned {
            prefix: prefix.clone(),
        });
    }
    let names = advertised.iter().map(|(name, _)| name.as_str());
    let Some((full, short)) = policy.select(names) else {
        return Err(SourceError::ReferenceNotFound {
            reference: policy.describe(),
            message: match policy {
                Policy::Semver { .. } => format!(
                    "no tag on {location} matches the range (pre-releases only match a range that names one)"
                ),
                _ => format!("no such reference on {location}"),
            },
        });
    };
    let object = advertised
        .iter()
        .find(|(name, _)| *name == full)
        .and_then(|(_, object)| *object);
    Ok(match object {
        Some(object) => Release::Advertised {
            full,
            short,
            object,
        },
        None => Release::Unborn { full },
    })
}

/// Whether the cache already has the advertised release under its local
/// reference (then no pack negotiation happens at all).
fn in_cache(repo: &gix::Repository, release: &Release) -> bool {
    let Release::Advertised { full, object, .. } = release else {
        return false;
    };
    repo.has_object(*object)
        && Policy::local_ref(full)
            .and_then(|l| repo.try_find_reference(l.as_str()).ok().flatten())
            .and_then(|r| r.try_id().map(|id| id.detach()))
            == Some(*object)
}

/// Polls the remote (or, for a pinned commit already cached, only the
/// cache; or, for a member of a shared repository, a fetch fresh enough
/// for a poll asked for at `requested`).
pub(super) fn fetch_blocking(
    inner: &Inner,
    interrupt: &AtomicBool,
    requested: Instant,
) -> Result<PollOutcome, SourceError> {
    let mut repo = inner.repo.to_thread_local();

    // A pinned commit never changes: no network once it is in the cache.
    if let Policy::Commit(prefix) = &inner.policy
        && let Some(id) = resolve_commit(&repo, prefix)?
    {
        let revision = finish(inner, &repo, id, None, id.to_string())?;
        return Ok(PollOutcome {
            revision,
            pack_received: false,
            contacted_remote: false,
        });
    }
    if let Some(group) = &inner.group
        && let Some(advertised) = group.reuse(requested, &inner.policy.refspecs())
    {
        let release = select_release(&inner.policy, &inner.location, &advertised)?;
        if in_cache(&repo, &release) {
            let revision = resolve(inner, &repo, release)?;
            return Ok(PollOutcome {
                revision,
                pack_received: false,
                contacted_remote: false,
            });
        }
    }
    let plan = inner
        .group
        .as_ref()
        .and_then(|g| g.plan())
        .unwrap_or_else(|| FetchPlan::single(&inner.policy, inner.depth));
    let started = Instant::now();
    if let Some(group) = &inner.group {
        group.count();
    }
    let (advertised, pack_received) = transfer(inner, &mut repo, interrupt, &plan)?;
    let release = select_release(&inner.policy, &inner.location, &advertised);
    if let Some(group) = &inner.group {
        group.fetched(started, &plan, advertised);
    }
    let repo = inner.repo.to_thread_local();
    let revision = resolve(inner, &repo, release?)?;
    Ok(PollOutcome {
        revision,
        pack_received,
        contacted_remote: true,
    })
}

/// Connects, lists the references `plan` asks for and receives a pack
/// unless the cache has every release of `plan`'s policies. Returns the
/// listing and whether a pack came.
fn transfer(
    inner: &Inner,
    repo: &mut gix::Repository,
    interrupt: &AtomicBool,
    plan: &FetchPlan,
) -> Result<(Advertised, bool), SourceError> {
    let credentials = inner.credentials.get(&inner.location);
    if credentials.is_some()
        && let Some(message) = inner.refuse_credentials()
    {
        return Err(SourceError::Authentication {
            location: inner.location.clone(),
            message,
        });
    }
    let secrets: Vec<String> = credentials.iter().flat_map(Credentials::secrets).collect();
    let net = |e: gix::Error| remote_error(inner, &e, &secrets, credentials.as_ref());
    configure(repo, inner, credentials.as_ref()).map_err(net)?;
    let remote = repo
        .remote_at(inner.url.clone())
        .and_then(|r| {
            r.with_refspecs(
                plan.refspecs.iter().map(String::as_str),
                gix::remote::Direction::Fetch,
            )
        })
        .map_err(net)?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let mut connection = remote.connect(gix::remote::Direction::Fetch).map_err(net)?;
    if let Some(options) = http_options(repo, inner).map_err(net)? {
        connection = connection.with_transport_options(options);
    }
    connection.set_credentials(answer_basic(credentials.as_ref()));
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(net)?;
    let advertised: Advertised = prepare
        .ref_map()
        .remote_refs
        .iter()
        .map(|r| {
            let (name, object, _) = r.unpack();
            (
                name.to_str_lossy().into_owned(),
                object.map(ToOwned::to_owned),
            )
        })
        .collect();
    // Skip the pack negotiation entirely when the cache already has every
    // release the plan's policies select (or none selects anything).
    let needed = plan.policies.iter().any(|policy| {
        select_release(policy, &inner.location, &advertised)
            .is_ok_and(|release| !in_cache(repo, &release))
    });
    if !needed {
        return Ok((advertised, false));
    }
    let shallow = match plan.depth {
        Some(depth) => gix::remote::fetch::Shallow::DepthAtRemote(depth),
        None => gix::remote::fetch::Shallow::NoChange,
    };
    let outcome = prepare
        .with_shallow(shallow)
        .receive(gix::progress::Discard, interrupt)
        .map_err(net)?;
    let pack_received = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
    if pack_received {
        consolidate_packs(&inner.cache_dir);
    }
    Ok((advertised, pack_received))
}

/// The revision of the release, from the (now up to date) cache, verified.
fn resolve(
    inner: &Inner,
    repo: &gix::Repository,
    release: Release,
) -> Result<Revision, SourceError> {
    match release {
        Release::Advertised { short, object, .. } => {
            let peeled = repo
                .find_object(object)
                .and_then(gix::Object::peel_to_commit)
                .map_err(|e| objects(format!("peeling {short} to a commit"), e))?;
            let tag = (object != peeled.id).then_some(object);
            finish(
                inner,
                repo,
                peeled.id,
                tag.map(|t| (short.as_str(), t)),
                short.clone(),
            )
        }
        Release::Unborn { full } => Err(SourceError::ReferenceNotFound {
            reference: full,
            message: "the remote advertised it without an object (unborn)".to_owned(),
        }),
        Release::Pinned { prefix } => {
            let id =
                resolve_commit(repo, &prefix)?.ok_or_else(|| SourceError::ReferenceNotFound {
                    reference: prefix.clone(),
                    message: format!(
                        "no commit with this id is reachable from the branches and tags of {}",
                        inner.location
                    ),
                })?;
            finish(inner, repo, id, None, id.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ReferencePolicy;

    fn policy(p: ReferencePolicy) -> Policy {
        Policy::new(&p).expect("a valid policy")
    }

    fn id(byte: u8) -> gix::ObjectId {
        gix::ObjectId::from_bytes_or_panic(&[byte; 20])
    }

    fn refs(list: &[(&str, Option<u8>)]) -> Vec<(String, Option<gix::ObjectId>)> {
        list.iter()
            .map(|(name, object)| ((*name).to_owned(), object.map(id)))
            .collect()
    }

    #[test]
    fn a_branch_is_selected_with_its_object() {
        let advertised = refs(&[("refs/heads/dev", Some(1)), ("refs/heads/main", Some(2))]);
        let got = select_release(&policy(ReferencePolicy::branch("main")), "r", &advertised);
        assert_eq!(
            got.expect("selected"),
            Release::Advertised {
                full: "refs/heads/main".into(),
                short: "main".into(),
                object: id(2),
            }
        );
    }

    #[test]
    fn a_reference_without_an_object_is_unborn() {
        let advertised = refs(&[("refs/heads/main", None)]);
        let got = select_release(&policy(ReferencePolicy::branch("main")), "r", &advertised);
        assert_eq!(
            got.expect("selected"),
            Release::Unborn {
                full: "refs/heads/main".into()
            }
        );
    }

    #[test]
    fn the_highest_matching_tag_is_selected() {
        let advertised = refs(&[
            ("refs/tags/v1.0.0", Some(1)),
            ("refs/tags/v1.2.0", Some(2)),
            ("refs/tags/v2.0.0", Some(3)),
        ]);
        let range = policy(ReferencePolicy::semver(">=1.0.0, <2.0.0"));
        let got = select_release(&range, "r", &advertised).expect("selected");
        assert!(
            matches!(&got, Release::Advertised { short, object, .. } if short == "v1.2.0" && *object == id(2)),
            "{got:?}"
        );
    }

    #[test]
    fn a_missing_reference_names_the_location() {
        let advertised = refs(&[("refs/heads/dev", Some(1))]);
        let err = select_release(
            &policy(ReferencePolicy::branch("main")),
            "the-repo",
            &advertised,
        )
        .expect_err("missing");
        assert!(
            matches!(&err, SourceError::ReferenceNotFound { reference, message }
                if reference == "main" && message == "no such reference on the-repo"),
            "{err:?}"
        );
        let range = policy(ReferencePolicy::semver(">=3"));
        let err = select_release(&range, "the-repo", &advertised).expect_err("missing");
        assert!(
            matches!(&err, SourceError::ReferenceNotFound { message, .. }
                if message.starts_with("no tag on the-repo matches the range")),
            "{err:?}"
        );
    }

    #[test]
    fn a_pinned_commit_ignores_the_advertisement() {
        let got = select_release(&policy(ReferencePolicy::commit("abcd1234")), "r", &[]);
        assert_eq!(
            got.expect("pinned"),
            Release::Pinned {
                prefix: "abcd1234".into()
            }
        );
    }
}
