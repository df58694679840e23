//! The task that holds, renews and releases the cluster's leader key in etcd (`[quorum]`).
//!
//! It decides nothing: the coordinator says whether it wants the key ([`Effect::Lease`]) and
//! judges from the reports ([`LeaseReport`]) whether its database may be open. Renewals carry
//! the instant they were sent, taken before the request leaves, which is never later than
//! when etcd restarts the lease's TTL.
//!
//! [`Effect::Lease`]: crate::failover::Effect::Lease

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::carp::time::Mono;
use crate::config::QuorumSettings;
use crate::failover::lease::{self, LeaseReport};

/// How soon a wanted key that another node holds, or that could not be taken, is asked for
/// again. The holder's bow-out deletes it, so this bounds the wait after a hand-over.
const ACQUIRE_RETRY: Duration = Duration::from_millis(100);

/// What the leader key says about its holder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// The node's advert source address.
    pub node: String,
    /// The agent process, so a restarted agent knows a key its earlier run left.
    pub pid: u32,
    /// The lease the key is attached to.
    pub lease: i64,
    /// What the node's server had logged when it took the key (`@@gtid_binlog_state`).
    #[serde(default)]
    pub gtid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("reading {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("etcd ended the lease keep-alive stream")]
    StreamEnded,
}

/// Starts the task on `rt`; `want` says whether the key is wanted, reports come back on the
/// receiver; `gtid` is the local server's last observed position, written into the key.
pub fn spawn(
    settings: QuorumSettings,
    node: String,
    gtid: watch::Receiver<String>,
    rt: &tokio::runtime::Handle,
) -> (watch::Sender<bool>, mpsc::UnboundedReceiver<LeaseReport>) {
    let (want_tx, want_rx) = watch::channel(false);
    let (report_tx, reports) = mpsc::unbounded_channel();
    rt.spawn(async move {
        Task {
            s: settings,
            node,
            gtid,
            want: want_rx,
            reports: report_tx,
            held: None,
            keeper: None,
            last: None,
            endpoint: 0,
            failing: false,
        }
        .run()
        .await
    });
    (want_tx, reports)
}

struct Task {
    s: QuorumSettings,
    node: String,
    gtid: watch::Receiver<String>,
    want: watch::Receiver<bool>,
    reports: mpsc::UnboundedSender<LeaseReport>,
    /// The lease and the key's creation revision, while this node holds the key.
    held: Option<(i64, i64)>,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// The last report, so an unchanged state is not sent again.
    last: Option<LeaseReport>,
    /// Which endpoint the next connection goes to. One at a time: a client balancing over
    /// all of them kept sending renewals to a member that had died, and the lease lapsed
    /// while two members were healthy.
    endpoint: usize,
    /// Since the last answer, a member failed (logged once).
    failing: bool,
}

impl Task {
    async fn run(mut self) {
        let timeout = lease::request_timeout(self.s.ttl);
        loop {
            let e = match self.connect().await {
                Ok(client) => self.session(client).await,
                Err(e) => e,
            };
            let endpoint = &self.s.endpoints[self.endpoint % self.s.endpoints.len()];
            if self.failing {
                tracing::debug!(%endpoint, error = %e, "quorum: etcd member unreachable; trying the next");
            } else {
                tracing::warn!(%endpoint, error = %e, "quorum: etcd member unreachable; trying the next (further failures are logged at debug level until one answers)");
                self.failing = true;
            }
            self.keeper = None;
            self.report(LeaseReport::Unreachable(format!("{endpoint}: {e}")));
            self.endpoint = (self.endpoint + 1) % self.s.endpoints.len();
            if self.endpoint == 0 {
                // Every member failed once: not faster than a member can answer.
                tokio::time::sleep(ACQUIRE_RETRY.max(timeout / 5)).await;
            }
        }
    }

    async fn connect(&self) -> Result<Client, QuorumError> {
        let timeout = lease::request_timeout(self.s.ttl);
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            // A member cut off from the others answers at once that it has no leader, rather
            // than after the timeout.
            .with_require_leader(true);
        if let Some(ca) = &self.s.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let Some((cert, key)) = &self.s.identity {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        }
        let endpoint = &self.s.endpoints[self.endpoint % self.s.endpoints.len()];
        within(timeout, Client::connect([endpoint], Some(options))).await
    }

    /// Serves the coordinator's wish until etcd fails to answer.
    async fn session(&mut self, mut client: Client) -> QuorumError {
        let timeout = lease::request_timeout(self.s.ttl);
        let renew = lease::renew_every(self.s.ttl);
        loop {
            let want = *self.want.borrow_and_update();
            let step = match (want, self.held) {
                (true, Some((id, epoch))) => {
                    self.renew(&mut client, id, epoch).await.map(|()| renew)
                }
                (true, None) => self
                    .acquire(&mut client)
                    .await
                    .map(|held| if held { renew } else { ACQUIRE_RETRY }),
                (false, Some((id, _))) => match within(timeout, client.lease_revoke(id)).await {
                    Ok(_) => {
                        tracing::info!(key = %self.s.key, "quorum: leader key released");
                        self.released();
                        Ok(renew)
                    }
                    // Ran out already: released too.
                    Err(QuorumError::Etcd(etcd_client::Error::GRpcStatus(s)))
                        if s.message().contains("lease not found") =>
                    {
                        tracing::info!(key = %self.s.key, "quorum: the lease had run out already");
                        self.released();
                        Ok(renew)
                    }
                    Err(e) => Err(e),
                },
                (false, None) => self.look(&mut client).await.map(|()| renew),
            };
            let wait = match step {
                Ok(wait) => wait,
                Err(e) => return e,
            };
            tokio::select! {
                changed = self.want.changed() => if changed.is_err() {
                    // The agent is gone; an unreleased lease runs out by itself.
                    std::future::pending::<()>().await;
                },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Takes the key if nobody holds it; true when this node holds it now.
    async fn acquire(&mut self, client: &mut Client) -> Result<bool, QuorumError> {
        let timeout = lease::request_timeout(self.s.ttl);
        if let Some((holder, epoch)) = self.holder(client).await? {
            if holder.node == self.node && holder.pid != std::process::id() {
                // Left by this node's earlier run: its database was fenced at our start.
                tracing::info!(
                    lease = holder.lease,
                    "quorum: releasing the leader key an earlier run of this agent left"
                );
                within(timeout, client.lease_revoke(holder.lease)).await?;
                return Ok(false);
            }
            self.report(LeaseReport::HeldBy {
                holder: holder.node,
                epoch,
            });
            return Ok(false);
        }
        let sent = Mono::now();
        let ttl = self.s.ttl.as_secs() as i64;
        let id = within(timeout, client.lease_grant(ttl, None)).await?.id();
        let value = serde_json::to_string(&Holder {
            node: self.node.clone(),
            pid: std::process::id(),
            lease: id,
            gtid: self.gtid.borrow().clone(),
        })
        .expect("plain struct");
        let key = self.s.key.as_str();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(id)),
            )]);
        let r = within(timeout, client.txn(txn)).await?;
        if !r.succeeded() {
            // Another node was quicker; its key is reported on the next look.
            within(timeout, client.lease_revoke(id)).await?;
            return Ok(false);
        }
        let epoch = r.header().map_or(0, |h| h.revision());
        tracing::info!(key = %self.s.key, epoch, lease = id, "quorum: leader key taken");
        self.held = Some((id, epoch));
        self.report(LeaseReport::Held { sent, epoch });
        Ok(true)
    }

    /// One keep-alive on the lease's stream (opened again after a failure: etcd answers
    /// keep-alives in order on a stream, so the next message answers the request just sent).
    async fn renew(&mut self, client: &mut Client, id: i64, epoch: i64) -> Result<(), QuorumError> {
        let timeout = lease::request_timeout(self.s.ttl);
        if self.keeper.is_none() {
            match within(timeout, client.lease_keep_alive(id)).await {
                Ok(k) => self.keeper = Some(k),
                // etcd answered that the lease is gone: it expired while no member that
                // could renew it was reachable (a partition healed, etcd came back).
                Err(QuorumError::Etcd(etcd_client::Error::LeaseKeepAliveError(e))) => {
                    tracing::error!(key = %self.s.key, error = %e, "quorum: the lease ran out in etcd");
                    self.held = None;
                    // Who holds the key now, not merely that this node does not: a node back
                    // from a partition must defer to the one that took over.
                    return self.look(client).await;
                }
                Err(e) => return Err(e),
            }
        }
        let (keeper, stream) = self.keeper.as_mut().expect("just opened");
        let sent = Mono::now();
        within(timeout, keeper.keep_alive()).await?;
        let answer = within(timeout, stream.message())
            .await?
            .ok_or(QuorumError::StreamEnded)?;
        if answer.ttl() <= 0 {
            tracing::error!(key = %self.s.key, "quorum: the lease ran out in etcd");
            self.held = None;
            self.keeper = None;
            return self.look(client).await;
        } else {
            self.report(LeaseReport::Held { sent, epoch });
        }
        Ok(())
    }

    fn released(&mut self) {
        self.held = None;
        self.keeper = None;
        self.report(LeaseReport::Free);
    }

    /// Reports who holds the key.
    async fn look(&mut self, client: &mut Client) -> Result<(), QuorumError> {
        let report = match self.holder(client).await? {
            Some((h, epoch)) => LeaseReport::HeldBy {
                holder: h.node,
                epoch,
            },
            None => LeaseReport::Free,
        };
        self.report(report);
        Ok(())
    }

    async fn holder(&self, client: &mut Client) -> Result<Option<(Holder, i64)>, QuorumError> {
        let timeout = lease::request_timeout(self.s.ttl);
        let r = within(timeout, client.get(self.s.key.as_str(), None)).await?;
        Ok(r.kvs().first().map(|kv| {
            let holder = serde_json::from_slice(kv.value()).unwrap_or_else(|_| Holder {
                node: String::from_utf8_lossy(kv.value()).into_owned(),
                pid: 0,
                lease: kv.lease(),
                gtid: String::new(),
            });
            (holder, kv.create_revision())
        }))
    }

    fn report(&mut self, r: LeaseReport) {
        if self.failing && !matches!(r, LeaseReport::Unreachable(_)) {
            tracing::info!(endpoint = %self.s.endpoints[self.endpoint], "quorum: etcd answers again");
            self.failing = false;
        }
        // Renewals always go: each one moves the write deadline.
        let repeat = self.last.as_ref() == Some(&r) && !matches!(r, LeaseReport::Held { .. });
        if repeat {
            return;
        }
        self.last = Some(r.clone());
        let _ = self.reports.send(r);
    }
}

async fn within<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, QuorumError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(QuorumError::Timeout(limit)),
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, QuorumError> {
    std::fs::read(path).map_err(|source| QuorumError::File {
        path: path.display().to_string(),
        source,
    })
}
