//! The replica's lease: granted, kept alive every TTL/6, and reported lost
//! when it can not be proven alive.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{EtcdClient, EtcdError};

use super::Shared;

impl Shared {
    /// Grants a new lease of one TTL.
    pub(super) async fn grant(&self) -> Result<i64, EtcdError> {
        let ttl = i64::try_from(self.config.ttl.as_secs()).unwrap_or(i64::MAX);
        let resp = self
            .client
            .lease()
            .grant(ttl, None)
            .await
            .map_err(self.etcd("lease grant", &self.config.id))?;
        Ok(resp.id())
    }
}

/// Aborts the task when dropped.
pub(super) struct AbortOnDrop(pub(super) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one keep-alive round says about the lease.
#[derive(Debug, PartialEq, Eq)]
enum Renewal {
    /// Acknowledged with time left: the lease lives TTL/2 longer at least.
    Renewed,
    /// No answer this time (the stream ended or failed): open a new one.
    Retry,
    /// The lease is gone or can not be proven alive.
    Lost(String),
}

/// The verdict on one round: `answer` is `None` when nothing was
/// acknowledged before the deadline, else the remaining TTL (`None`: the
/// stream ended) or the error.
fn renewal(answer: Option<Result<Option<i64>, etcd_client::Error>>, margin: Duration) -> Renewal {
    let gone = || Renewal::Lost("lease expired or revoked".into());
    match answer {
        None => Renewal::Lost(format!(
            "no keep-alive acknowledged within {margin:?} (TTL/2)"
        )),
        Some(Ok(Some(left))) if left > 0 => Renewal::Renewed,
        Some(Ok(Some(_))) => gone(),
        Some(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => gone(),
        Some(Err(etcd_client::Error::GRpcStatus(s))) if i32::from(s.code()) == 5 => gone(),
        Some(Ok(None)) | Some(Err(_)) => Renewal::Retry,
    }
}

/// Renews `lease` every TTL/6. Reports loss when etcd says the lease is
/// gone, or when no renewal sent in the last TTL/2 was acknowledged.
pub(super) async fn keep_alive(
    client: EtcdClient,
    lease: i64,
    ttl: Duration,
    granted_at: Instant,
    lost: watch::Sender<Option<String>>,
) {
    let interval = ttl / 6;
    let margin = ttl / 2;
    let mut deadline = granted_at + margin;
    let mut keeper = None;
    loop {
        let sent = Instant::now();
        let attempt = async {
            if keeper.is_none() {
                // Creating the stream sends one renewal and reads its answer.
                keeper = Some(client.lease().keep_alive(lease).await?);
                return Ok(Some(1));
            }
            let Some((k, stream)) = keeper.as_mut() else {
                return Ok(None);
            };
            k.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()))
        };
        let answer = tokio::time::timeout_at(deadline, attempt).await.ok();
        match renewal(answer, margin) {
            Renewal::Renewed => deadline = sent + margin,
            Renewal::Retry => keeper = None,
            Renewal::Lost(reason) => {
                lost.send_replace(Some(reason));
                return;
            }
        }
        let wake = (sent + interval).min(deadline);
        tokio::time::sleep_until(wake.max(Instant::now() + Duration::from_millis(10))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_renews_retries_or_loses_the_lease() {
        let margin = Duration::from_millis(2500);
        assert_eq!(renewal(Some(Ok(Some(4))), margin), Renewal::Renewed);
        assert_eq!(renewal(Some(Ok(None)), margin), Renewal::Retry);
        let broken = etcd_client::Error::LeaseKeepAliveError("stream closed".into());
        assert_eq!(renewal(Some(Err(broken)), margin), Renewal::Retry);
        let gone = Renewal::Lost("lease expired or revoked".into());
        assert_eq!(renewal(Some(Ok(Some(0))), margin), gone);
        let missing = etcd_client::Error::LeaseKeepAliveError("lease not found".into());
        assert_eq!(renewal(Some(Err(missing)), margin), gone);
        assert_eq!(
            renewal(None, margin),
            Renewal::Lost("no keep-alive acknowledged within 2.5s (TTL/2)".into())
        );
    }
}
