//! Audit records in etcd: paged reads and retention.
//!
//! Each inventory save writes its records as one key, `audit/<expected>`
//! (20 digits, so keys sort in the order of the saves). Retention keeps a
//! count beside them, `audit-count`: how many records the keys hold, up to
//! which key it counted, and when the oldest kept record was made. After a
//! save, only the keys after the counted one are counted (normally the one
//! just written, without reading its value), and the oldest keys are read
//! only when the count or the oldest record's age says something must go.
//! A missing count (data written before it existed) is rebuilt once from
//! the keys.

use std::time::SystemTime;

use etcd_client::TxnOp;
use gitops_core::store::Versioned;
use gitops_core::sync::LockExt as _;
use gitops_core::{AuditQuery, AuditRecord, StoreError};
use serde::{Deserialize, Serialize};

use super::{EtcdStore, Kv, TRIM_BATCH, key_after, prefix_end};
use crate::client::VALUES_PER_PAGE;

/// The `audit-count` value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct AuditCount {
    /// Records held by the audit keys up to and including `through`.
    records: u64,
    /// The last audit key counted (the part after `audit/`); empty: none.
    through: String,
    /// When the oldest kept record was made; `None`: unknown or no record.
    oldest: Option<SystemTime>,
}

impl AuditCount {
    /// Counts `n` records of the key `seq` (after `audit/`), the first
    /// made at `first_at` (`None`: not read; the next trim reads the head).
    fn add(&mut self, seq: &str, n: usize, first_at: Option<SystemTime>) {
        if self.records == 0 && n > 0 {
            self.oldest = first_at;
        }
        self.records += u64::try_from(n).unwrap_or(u64::MAX);
        seq.clone_into(&mut self.through);
    }
}

/// One step of a trim.
enum Trim {
    /// Delete a key whose records all go.
    Delete(String),
    /// Rewrite a batch without its oldest records.
    Rewrite(String, Vec<AuditRecord>),
}

impl EtcdStore {
    fn audit_base(&self, app: &str) -> String {
        format!("{}audit/", self.app_prefix(app))
    }

    /// A key of one record each, as versions before batches wrote them
    /// (`<expected>-<i>`), rather than a batch (`<expected>`).
    fn is_single(base: &str, key: &str) -> bool {
        key.strip_prefix(base).is_some_and(|seq| seq.contains('-'))
    }

    /// The records of one audit key.
    fn decode_batch(&self, base: &str, kv: &Kv) -> Result<Vec<AuditRecord>, StoreError> {
        if Self::is_single(base, &kv.key) {
            Ok(vec![self.decode(&kv.key, &kv.value)?])
        } else {
            self.decode(&kv.key, &kv.value)
        }
    }

    /// Audit records matching `query`, oldest first, read a page at a time
    /// and no further than the limit needs.
    pub(super) async fn read_audit(
        &self,
        app: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let base = self.audit_base(app);
        // With a limit the first page is one key: most queries with a
        // limit are answered by the oldest batch or two.
        let first = if query.limit.is_some() {
            1
        } else {
            VALUES_PER_PAGE
        };
        let range = (base.as_bytes().to_vec(), prefix_end(&base));
        self.scan(range, (first, VALUES_PER_PAGE), false, |kv| {
            for record in self.decode_batch(&base, &kv)? {
                if query.matches(&record) {
                    out.push(record);
                    if out.len() >= limit {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    /// Applies the audit retention of this store to `app` after a save that
    /// wrote `written` (the key's part after `audit/`) holding `records`,
    /// the first made at `first_at`. A fenced store (the only writer) that
    /// wrote the count last time counts on from what it wrote, without
    /// reading; the count's version, compared when it is written, catches
    /// anything else.
    pub(super) async fn retain_audit(
        &self,
        app: &str,
        written: &str,
        (records, first_at): (usize, Option<SystemTime>),
    ) -> Result<(), StoreError> {
        let base = self.audit_base(app);
        let count_key = format!("{}audit-count", self.app_prefix(app));
        let known = self.fence.as_ref().and(self.known.locked().audit.take());
        let (mut version, mut count) = match known {
            Some((version, mut count)) => {
                count.add(written, records, first_at);
                (version, count)
            }
            None => {
                let Versioned { version, mut value } =
                    self.load::<AuditCount>(count_key.clone()).await?;
                self.count_new(&base, &mut value, written, (records, first_at))
                    .await?;
                (version, value)
            }
        };
        let trims = self.plan_trim(&base, &mut count).await?;
        // A transaction holds at most `--max-txn-ops` operations; the count
        // is written with each chunk, compared with the one read, so a
        // concurrent writer makes this pass stop (the next save redoes it).
        let last = trims.len().div_ceil(TRIM_BATCH).max(1);
        let mut removed_so_far = 0;
        let total_removed: u64 = trims.iter().map(|(_, n)| n).sum();
        let before = count.records + total_removed;
        let chunks: Vec<&[(Trim, u64)]> = if trims.is_empty() {
            vec![&[]]
        } else {
            trims.chunks(TRIM_BATCH).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut ops = Vec::with_capacity(chunk.len() + 1);
            for (trim, removed) in chunk {
                removed_so_far += removed;
                ops.push(match trim {
                    Trim::Delete(key) => TxnOp::delete(key.as_str(), None),
                    Trim::Rewrite(key, kept) => {
                        TxnOp::put(key.as_str(), self.encode(key, kept)?, None)
                    }
                });
            }
            let state = if i + 1 == last {
                count.clone()
            } else {
                // Part way: the oldest record is not known yet.
                AuditCount {
                    records: before - removed_so_far,
                    oldest: None,
                    ..count.clone()
                }
            };
            ops.push(TxnOp::put(
                count_key.as_str(),
                self.encode(&count_key, &state)?,
                None,
            ));
            let revision = self.write(app, Some((&count_key, version)), ops).await?;
            version = u64::try_from(revision).unwrap_or(0);
        }
        if self.fence.is_some() {
            self.known.locked().audit = Some((version, count));
        }
        Ok(())
    }

    /// Adds the records of the keys after `count.through`. Normally that
    /// is the key just written, counted as `records` without reading it;
    /// otherwise (a count being rebuilt, a save by a version that kept no
    /// count) the new keys are read a page at a time.
    async fn count_new(
        &self,
        base: &str,
        count: &mut AuditCount,
        written: &str,
        (records, first_at): (usize, Option<SystemTime>),
    ) -> Result<(), StoreError> {
        let start = if count.through.is_empty() {
            base.as_bytes().to_vec()
        } else {
            key_after(&format!("{base}{}", count.through))
        };
        let range = (start, prefix_end(base));
        let mut keys = Vec::new();
        self.scan(range.clone(), (2, 2), true, |kv| {
            keys.push(kv.key);
            Ok(keys.len() < 2)
        })
        .await?;
        match keys.as_slice() {
            [] => {}
            [only] if only.strip_prefix(base) == Some(written) => {
                count.add(written, records, first_at);
            }
            _ => {
                self.scan(range, (VALUES_PER_PAGE, VALUES_PER_PAGE), false, |kv| {
                    let batch = self.decode_batch(base, &kv)?;
                    let seq = &kv.key[base.len()..];
                    count.add(seq, batch.len(), batch.first().map(|r| r.at));
                    Ok(true)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// What must go, oldest first: beyond the count, then older than the
    /// age, stopping at the first record kept. Reads the oldest keys only,
    /// and only when the count or the oldest record's age asks for it.
    /// Updates `count` to what is left.
    async fn plan_trim(
        &self,
        base: &str,
        count: &mut AuditCount,
    ) -> Result<Vec<(Trim, u64)>, StoreError> {
        let retention = self.audit_retention();
        let now = SystemTime::now();
        let over = count.records > retention.max_records;
        let maybe_old = count.oldest.is_none_or(|at| retention.expired(at, now));
        let mut trims = Vec::new();
        if count.records == 0 || !(over || maybe_old) {
            return Ok(trims);
        }
        let mut oldest = None;
        let range = (base.as_bytes().to_vec(), prefix_end(base));
        self.scan(range, (1, VALUES_PER_PAGE), false, |kv| {
            let batch = self.decode_batch(base, &kv)?;
            let excess = count.records.saturating_sub(retention.max_records);
            let mut drop = usize::try_from(excess)
                .unwrap_or(usize::MAX)
                .min(batch.len());
            while batch
                .get(drop)
                .is_some_and(|r| retention.expired(r.at, now))
            {
                drop += 1;
            }
            let removed = u64::try_from(drop).unwrap_or(u64::MAX);
            count.records = count.records.saturating_sub(removed);
            if drop == batch.len() {
                trims.push((Trim::Delete(kv.key), removed));
                return Ok(true);
            }
            oldest = Some(batch[drop].at);
            if drop > 0 {
                let kept = batch[drop..].to_vec();
                trims.push((Trim::Rewrite(kv.key, kept), removed));
            }
            Ok(false)
        })
        .await?;
        count.oldest = oldest;
        Ok(trims)
    }
}
