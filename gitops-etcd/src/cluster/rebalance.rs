//! Rebalancing: read members and locks, drop what is no longer ours,
//! release what moved away, claim and start what is ours now.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use futures::StreamExt as _;
use tokio::sync::watch;

use crate::client::EtcdError;
use crate::fence::unescape;

use super::engines::Owned;
use super::{ClusterEvent, Shared, assign};

/// Locks claimed per transaction (one nested transaction each), half of
/// etcd's default `--max-txn-ops` (128).
const CLAIMS_PER_TXN: usize = 64;

/// Where an owned application stands after a look at the locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// The lock is still ours and the engine runs.
    Running,
    /// The lock is gone or was re-created by someone else.
    Lost,
    /// The engine stopped by itself.
    Stopped,
}

/// Where an application owned under lock `revision` stands, given the
/// create-revision of the lock now `held` and whether its engine finished.
fn standing(held: Option<i64>, revision: i64, finished: bool) -> Standing {
    if held != Some(revision) {
        Standing::Lost
    } else if finished {
        Standing::Stopped
    } else {
        Standing::Running
    }
}

/// What a rebalance changes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Moves {
    /// Owned applications assigned elsewhere now: hand them over.
    release: Vec<String>,
    /// Applications to claim; `Some(revision)`: a lock this lease already
    /// holds, adopted as is.
    claim: Vec<(String, Option<i64>)>,
}

/// Decides the moves of replica `me` (lease `lease`) among `live` members:
/// applications assigned to it (and not `cooling`) are claimed unless
/// another holds their lock (the previous owner is handing it over);
/// applications it `owns` but that are assigned elsewhere are released.
fn moves(
    apps: &[String],
    live: &[String],
    locks: &HashMap<String, Lock>,
    owns: impl Fn(&str) -> bool,
    me: &str,
    lease: i64,
    mut cooling: impl FnMut(&str) -> bool,
) -> Moves {
    let mut moves = Moves::default();
    for app in apps {
        let mine = assign(app, live) == Some(me);
        let mine = mine && !cooling(app);
        match (mine, owns(app)) {
            (false, true) => moves.release.push(app.clone()),
            (true, false) => match locks.get(app) {
                None => moves.claim.push((app.clone(), None)),
                Some(l) if l.owner == me && l.lease == lease => {
                    moves.claim.push((app.clone(), Some(l.create_revision)));
                }
                Some(_) => {} // the previous owner is handing it over
            },
            _ => {}
        }
    }
    moves
}

/// Who holds the lock of an application.
struct Lock {
    owner: String,
    create_revision: i64,
    lease: i64,
}

impl Shared {
    /// Members and locks, read in one transaction (one consistent revision).
    async fn snapshot(&self) -> Result<(Vec<String>, HashMap<String, Lock>), EtcdError> {
        let members = format!("{}/members/", self.config.prefix);
        let locks = format!("{}/locks/", self.config.prefix);
        let txn = Txn::new().and_then([
            TxnOp::get(
                members.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
            TxnOp::get(locks.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = self
            .client
            .kv()
            .txn(txn)
            .await
            .map_err(self.etcd("txn", &members))?;
        let mut live = Vec::new();
        let mut held = HashMap::new();
        for (i, op) in resp.op_responses().into_iter().enumerate() {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                let key = String::from_utf8_lossy(kv.key());
                if i == 0 {
                    if let Some(id) = key.strip_prefix(&members) {
                        live.push(unescape(id));
                    }
                } else if let Some(app) = key.strip_prefix(&locks) {
                    held.insert(
                        unescape(app),
                        Lock {
                            owner: String::from_utf8_lossy(kv.value()).into_owned(),
                            create_revision: kv.create_revision(),
                            lease: kv.lease(),
                        },
                    );
                }
            }
        }
        live.sort();
        Ok((live, held))
    }

    /// Brings what this replica runs in line with the assignment.
    pub(super) async fn rebalance(
        &self,
        lease: i64,
        owned: &mut HashMap<String, Owned>,
        lost: &watch::Receiver<Option<String>>,
    ) {
        let (live, locks) = match self.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(replica = %self.config.id, error = %e, "cannot read members and locks");
                return;
            }
        };
        self.drop_stale(owned, &locks).await;
        if !live.contains(&self.config.id) {
            // Our member key is gone: the lease is about to be reported lost.
            self.publish(owned);
            return;
        }
        let apps = self.apps();
        let mut moves = moves(
            &apps,
            &live,
            &locks,
            |app| owned.contains_key(app),
            &self.config.id,
            lease,
            |app| self.cooling(app),
        );
        // Owned applications no longer listed, and restarts asked for, are
        // handed over too.
        let gone = super::list::unlisted(&apps, owned.keys());
        moves.release.extend(gone);
        let restarts = self.take_restarts(|app| {
            owned.contains_key(app) && !moves.release.iter().any(|r| r == app)
        });
        moves.release.extend(restarts);
        if !moves.release.is_empty() {
            self.release(owned, moves.release).await;
        }
        self.claim_and_start(moves.claim, lease, owned, lost).await;
        self.publish(owned);
    }

    /// Drops the engines that stopped by themselves, and those of
    /// applications whose lock is gone or was re-created by someone else.
    async fn drop_stale(&self, owned: &mut HashMap<String, Owned>, locks: &HashMap<String, Lock>) {
        let apps: Vec<String> = owned.keys().cloned().collect();
        for app in apps {
            let Some(o) = owned.get(&app) else { continue };
            let held = locks.get(&app).map(|l| l.create_revision);
            match standing(held, o.revision, o.task.is_finished()) {
                Standing::Running => {}
                Standing::Lost => {
                    if let Some(o) = owned.remove(&app) {
                        self.abort(&app, o, "lock deleted or taken by another replica")
                            .await;
                    }
                }
                Standing::Stopped => {
                    if let Some(o) = owned.remove(&app) {
                        let error = o
                            .task
                            .await
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| "engine stopped".into());
                        self.engine_failed(&app, error, o.revision).await;
                    }
                }
            }
        }
    }

    /// Claims the applications (`Some(revision)`: a lock of this lease to
    /// adopt) and starts their engines, until the lease is lost.
    async fn claim_and_start(
        &self,
        to_claim: Vec<(String, Option<i64>)>,
        lease: i64,
        owned: &mut HashMap<String, Owned>,
        lost: &watch::Receiver<Option<String>>,
    ) {
        let (adopted, free): (Vec<_>, Vec<_>) =
            to_claim.into_iter().partition(|(_, r)| r.is_some());
        let free: Vec<String> = free.into_iter().map(|(app, _)| app).collect();
        let mut claims: Vec<(String, Option<i64>)> = adopted;
        // The futures are made first: async-trait-like futures borrowing
        // inside stream combinators hit a higher-ranked lifetime limitation.
        let calls: Vec<_> = free
            .chunks(CLAIMS_PER_TXN)
            .map(|batch| self.claim_batch(batch, lease))
            .collect();
        let batches = futures::stream::iter(calls)
            .buffer_unordered(self.config.claim_concurrency)
            .collect::<Vec<_>>()
            .await;
        claims.extend(batches.into_iter().flatten());
        for (app, revision) in claims {
            let Some(revision) = revision else { continue };
            if lost.borrow().is_some() {
                break;
            }
            match self.start_engine(&app, revision, lost.clone()) {
                Ok(o) => {
                    owned.insert(app, o);
                }
                Err(error) => {
                    tracing::warn!(replica = %self.config.id, app, %error, "engine could not be built");
                    self.engine_failed(&app, error, revision).await;
                }
            }
        }
    }

    /// An engine failed or stopped: say so, keep the application cool for
    /// one TTL and let its lock go.
    async fn engine_failed(&self, app: &str, error: String, revision: i64) {
        self.emit(ClusterEvent::EngineFailed {
            app: app.to_owned(),
            error,
        });
        self.cool_down(app);
        self.delete_lock(app, revision).await;
    }

    fn publish(&self, owned: &HashMap<String, Owned>) {
        *self.owned() = owned.keys().cloned().collect();
    }

    /// Creates the locks of `apps` that nobody holds, in one transaction
    /// (one nested transaction per lock, each only if its key does not
    /// exist); returns each application with its fence revision, `None`
    /// when another holds it. If etcd refuses the batch (a cluster with a
    /// lower `--max-txn-ops`), claims one by one.
    async fn claim_batch(&self, apps: &[String], lease: i64) -> Vec<(String, Option<i64>)> {
        let ops: Vec<TxnOp> = apps
            .iter()
            .map(|app| TxnOp::txn(self.claim_txn(app, lease)))
            .collect();
        let resp = match self.client.kv().txn(Txn::new().and_then(ops)).await {
            Ok(resp) => resp,
            Err(e) => {
                let prefix = format!("{}/locks/", self.config.prefix);
                tracing::warn!(replica = %self.config.id, error = %EtcdError::request("txn", prefix, e), "batched claim failed; claiming one by one");
                let mut out = Vec::with_capacity(apps.len());
                for app in apps {
                    out.push((app.clone(), self.claim(app, lease).await));
                }
                return out;
            }
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        let won: Vec<bool> = resp
            .op_responses()
            .into_iter()
            .map(|r| matches!(r, TxnOpResponse::Txn(t) if t.succeeded()))
            .collect();
        apps.iter()
            .zip(won.into_iter().chain(std::iter::repeat(false)))
            .map(|(app, won)| {
                let revision = won.then_some(revision);
                if let Some(revision) = revision {
                    self.emit(ClusterEvent::Claimed {
                        app: app.clone(),
                        revision,
                    });
                }
                (app.clone(), revision)
            })
            .collect()
    }

    /// The transaction that creates the lock of `app` under `lease` if
    /// nobody holds it.
    fn claim_txn(&self, app: &str, lease: i64) -> Txn {
        let key = self.config.lock_key(app);
        Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.config.id.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
    }

    /// Creates the lock of `app` if nobody holds it; returns the fence revision.
    async fn claim(&self, app: &str, lease: i64) -> Option<i64> {
        let key = self.config.lock_key(app);
        match self.client.kv().txn(self.claim_txn(app, lease)).await {
            Ok(resp) if resp.succeeded() => {
                let revision = resp.header().map_or(0, |h| h.revision());
                self.emit(ClusterEvent::Claimed {
                    app: app.to_owned(),
                    revision,
                });
                Some(revision)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(replica = %self.config.id, error = %EtcdError::request("txn", key, e), "claim failed");
                None
            }
        }
    }

    /// Deletes the locks of `apps` (with the revisions they were claimed
    /// at) that are still ours, [`CLAIMS_PER_TXN`] per transaction.
    pub(super) async fn delete_locks(&self, apps: &[(String, i64)]) {
        for batch in apps.chunks(CLAIMS_PER_TXN) {
            let ops: Vec<TxnOp> = batch
                .iter()
                .map(|(app, revision)| TxnOp::txn(self.delete_txn(app, *revision)))
                .collect();
            if let Err(e) = self.client.kv().txn(Txn::new().and_then(ops)).await {
                let prefix = format!("{}/locks/", self.config.prefix);
                tracing::warn!(replica = %self.config.id, error = %EtcdError::request("txn", prefix, e), "lock deletes failed; they go with the lease");
            }
        }
    }

    /// The transaction that deletes the lock of `app` if it is still the
    /// one created at `revision`.
    fn delete_txn(&self, app: &str, revision: i64) -> Txn {
        let key = self.config.lock_key(app);
        Txn::new()
            .when([Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)])
    }

    /// Deletes the lock of `app` if it is still ours.
    pub(super) async fn delete_lock(&self, app: &str, revision: i64) {
        let key = self.config.lock_key(app);
        if let Err(e) = self.client.kv().txn(self.delete_txn(app, revision)).await {
            tracing::warn!(replica = %self.config.id, error = %EtcdError::request("txn", key, e), "lock delete failed; it goes with the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(owner: &str, create_revision: i64, lease: i64) -> Lock {
        Lock {
            owner: owner.to_owned(),
            create_revision,
            lease,
        }
    }

    /// Applications `a-0`.. and the one member each is assigned to.
    fn apps_of(me: &str, live: &[String], n: usize) -> (Vec<String>, Vec<String>) {
        let apps: Vec<String> = (0..n).map(|i| format!("a-{i}")).collect();
        let (mine, theirs) = apps
            .iter()
            .cloned()
            .partition(|a| assign(a, live) == Some(me));
        (mine, theirs)
    }

    #[test]
    fn standing_follows_the_lock_then_the_engine() {
        assert_eq!(standing(Some(7), 7, false), Standing::Running);
        assert_eq!(standing(Some(7), 7, true), Standing::Stopped);
        assert_eq!(standing(None, 7, false), Standing::Lost);
        assert_eq!(standing(Some(9), 7, true), Standing::Lost);
    }

    #[test]
    fn free_applications_assigned_here_are_claimed() {
        let live = vec!["r1".to_owned(), "r2".to_owned()];
        let (mine, theirs) = apps_of("r1", &live, 40);
        let all: Vec<String> = mine.iter().chain(&theirs).cloned().collect();
        let got = moves(&all, &live, &HashMap::new(), |_| false, "r1", 5, |_| false);
        let claimed: Vec<String> = got.claim.iter().map(|(a, _)| a.clone()).collect();
        let mut want = mine.clone();
        want.sort();
        let mut claimed_sorted = claimed.clone();
        claimed_sorted.sort();
        assert_eq!(claimed_sorted, want);
        assert!(got.claim.iter().all(|(_, adopted)| adopted.is_none()));
        assert!(got.release.is_empty());
    }

    #[test]
    fn locks_decide_between_adopting_waiting_and_claiming() {
        let live = vec!["r1".to_owned()];
        let apps: Vec<String> = ["own", "old", "other", "free"].map(String::from).to_vec();
        let locks = HashMap::from([
            ("own".to_owned(), lock("r1", 11, 5)),
            ("old".to_owned(), lock("r1", 12, 4)),
            ("other".to_owned(), lock("r2", 13, 6)),
        ]);
        let got = moves(&apps, &live, &locks, |_| false, "r1", 5, |_| false);
        assert_eq!(
            got,
            Moves {
                release: vec![],
                claim: vec![("own".to_owned(), Some(11)), ("free".to_owned(), None)],
            }
        );
    }

    #[test]
    fn applications_assigned_elsewhere_or_cooling_are_released() {
        let live = vec!["r1".to_owned(), "r2".to_owned()];
        let (mine, theirs) = apps_of("r1", &live, 40);
        let all: Vec<String> = mine.iter().chain(&theirs).cloned().collect();
        let cool = mine[0].clone();
        let got = moves(
            &all,
            &live,
            &HashMap::new(),
            |_| true,
            "r1",
            5,
            |a| a == cool,
        );
        let mut want: Vec<String> = theirs.iter().chain([&cool]).cloned().collect();
        want.sort();
        let mut released = got.release.clone();
        released.sort();
        assert_eq!(released, want);
        assert!(got.claim.is_empty(), "everything is owned already");
    }

    #[test]
    fn cooling_is_asked_only_for_applications_assigned_here() {
        let live = vec!["r1".to_owned(), "r2".to_owned()];
        let (mine, theirs) = apps_of("r1", &live, 40);
        let all: Vec<String> = mine.iter().chain(&theirs).cloned().collect();
        let mut asked = Vec::new();
        moves(
            &all,
            &live,
            &HashMap::new(),
            |_| false,
            "r1",
            5,
            |a| {
                asked.push(a.to_owned());
                false
            },
        );
        assert_eq!(asked, mine);
    }
}
