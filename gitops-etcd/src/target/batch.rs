//! Group commit for [`EtcdTarget`](super::EtcdTarget): the puts and
//! deletes that an engine issues at about the same time (the calls of one
//! wave run concurrently) go to etcd as one transaction, fenced once,
//! instead of one transaction each. At 10,000 applications that is the
//! difference between etcd keeping up and not.
//!
//! Every call queues its operation, then takes the flush lock: the caller
//! that gets it first yields once (so the calls polled beside it queue
//! theirs too), takes what is queued (up to [`MAX_OPS`] operations,
//! [`MAX_VALUE_BYTES`] bytes, and never the same key twice) and sends it;
//! each caller then reads its own outcome. A caller whose operation was
//! taken by a flusher that was cancelled (its engine aborted) gets a
//! transient error: the write may or may not have landed, and the next
//! reconcile looks again.

use std::collections::HashSet;
use std::sync::Mutex;

use etcd_client::{Txn, TxnOp};
use gitops_core::sync::LockExt as _;
use tokio::sync::oneshot;

use crate::client::{EtcdClient, EtcdError, MAX_VALUE_BYTES};
use crate::fence::Fence;

/// Operations per transaction, half of etcd's default `--max-txn-ops`
/// (128).
pub(super) const MAX_OPS: usize = 64;

/// Why a batched write did not land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refused {
    /// The fence did not hold: the application is no longer owned.
    Fenced,
    /// etcd failed the request (the message names the operation and key).
    Failed {
        /// What went wrong.
        message: String,
        /// Whether retrying may help.
        transient: bool,
    },
}

/// One queued write.
struct Queued {
    key: String,
    bytes: usize,
    op: TxnOp,
    done: oneshot::Sender<Result<(), Refused>>,
}

/// The writes of one target (one fence) waiting to go out together.
#[derive(Default)]
pub(super) struct Batcher {
    queue: Mutex<Vec<Queued>>,
    flush: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("queued", &self.queue.locked().len())
            .finish_non_exhaustive()
    }
}

/// Takes from `queue` what fits in one transaction, in order: at most
/// [`MAX_OPS`] operations and [`MAX_VALUE_BYTES`] bytes (the first always
/// goes), stopping before a key already taken.
fn take_batch<T>(queue: &mut Vec<T>, key_and_bytes: impl Fn(&T) -> (&str, usize)) -> Vec<T> {
    let mut keys = HashSet::new();
    let mut bytes = 0;
    let mut n = 0;
    for item in queue.iter() {
        let (key, size) = key_and_bytes(item);
        let fits = n == 0 || (n < MAX_OPS && bytes + size <= MAX_VALUE_BYTES);
        if !fits || !keys.insert(key) {
            break;
        }
        bytes += size;
        n += 1;
    }
    queue.drain(..n).collect()
}

impl Batcher {
    /// Runs `op` on `key` (of `bytes` bytes), in a transaction shared with
    /// the writes queued beside it, fenced by `fence` when given.
    pub(super) async fn write(
        &self,
        client: &EtcdClient,
        fence: Option<&Fence>,
        (key, bytes, op): (&str, usize, TxnOp),
        what: &'static str,
    ) -> Result<(), Refused> {
        let (done, mut outcome) = oneshot::channel();
        self.queue.locked().push(Queued {
            key: key.to_owned(),
            bytes: key.len() + bytes,
            op,
            done,
        });
        let _flushing = self.flush.lock().await;
        let mut first = true;
        loop {
            match outcome.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => return Err(interrupted()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if first {
                // Let the calls polled beside this one queue their writes.
                tokio::task::yield_now().await;
                first = false;
            }
            self.flush_one(client, fence, what).await;
        }
    }

    /// Sends one transaction of what is queued and tells each caller.
    async fn flush_one(&self, client: &EtcdClient, fence: Option<&Fence>, what: &'static str) {
        let batch = take_batch(&mut self.queue.locked(), |q| (q.key.as_str(), q.bytes));
        let Some(first) = batch.first().map(|q| q.key.clone()) else {
            return;
        };
        let (ops, waiting): (Vec<TxnOp>, Vec<_>) =
            batch.into_iter().map(|q| (q.op, q.done)).unzip();
        let mut txn = Txn::new();
        if let Some(fence) = fence {
            txn = txn.when([fence.compare()]);
        }
        let result = match client.kv().txn(txn.and_then(ops)).await {
            Ok(resp) if resp.succeeded() => Ok(()),
            Ok(_) => Err(Refused::Fenced),
            Err(e) => {
                let e = EtcdError::request(what, first, e);
                Err(Refused::Failed {
                    message: e.to_string(),
                    transient: e.is_transient(),
                })
            }
        };
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}

fn interrupted() -> Refused {
    Refused::Failed {
        message: "the batched write was interrupted; it may or may not have landed".into(),
        transient: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(queue: &mut Vec<(&'static str, usize)>) -> Vec<&'static str> {
        take_batch(queue, |(k, b)| (*k, *b))
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn a_batch_stops_at_a_repeated_key_the_op_limit_or_the_byte_limit() {
        let mut q = vec![("a", 1), ("b", 1), ("a", 1), ("c", 1)];
        assert_eq!(take(&mut q), ["a", "b"]);
        assert_eq!(take(&mut q), ["a", "c"]);
        assert!(q.is_empty());

        let keys: Vec<&'static str> = (0..MAX_OPS + 6).map(|i| &*format!("k{i}").leak()).collect();
        let mut q: Vec<_> = keys.iter().map(|k| (*k, 10)).collect();
        assert_eq!(take(&mut q).len(), MAX_OPS);
        assert_eq!(take(&mut q).len(), 6);

        let big = MAX_VALUE_BYTES - 10;
        let mut q = vec![("x", big), ("y", big), ("z", 5)];
        assert_eq!(take(&mut q), ["x"], "the second does not fit");
        assert_eq!(take(&mut q), ["y", "z"]);
        let mut q = vec![("huge", MAX_VALUE_BYTES * 2)];
        assert_eq!(take(&mut q), ["huge"], "the first always goes");
    }
}
