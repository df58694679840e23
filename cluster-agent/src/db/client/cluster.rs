//! The operations the failover coordinator asks for that look beyond the local server: samples
//! of the master being followed, the prepare step that fences and reads every peer, catching up
//! from a peer, and promotion to a known target.
//!
//! Every remote server is reached over TLS with its certificate verified against the cluster's
//! CA and the address dialled, with the agent's own account, which every node has. Sessions to
//! peers are kept between uses: a promotion should not wait for TLS handshakes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::Row;
use mysql_async::prelude::Queryable;
use tokio::sync::Mutex;

use super::{
    Db, DbError, Session, bounded, in_one_trip, read_replica, scalar, sql_err, value_string,
};
use crate::carp::time::Mono;
use crate::db::gtid::{GtidParseError, Gtids};
use crate::db::sql::{Flavour, StatusCol};
use crate::failover::{
    Fault, Holdings, LocalDb, MasterDb, PeerReport, PeerSeen, PeerState, Probe, Replica, SemiSync,
};
use crate::timer;

/// Sessions to other servers, one per address, each used by one caller at a time.
#[derive(Default)]
pub(super) struct Remote {
    sessions: std::sync::Mutex<HashMap<IpAddr, Arc<Mutex<Option<Session>>>>>,
}

impl Remote {
    /// Drops every session (closing each ends whatever it held on its server).
    fn clear(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    fn slot(&self, addr: IpAddr) -> Arc<Mutex<Option<Session>>> {
        let mut map = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(addr).or_default().clone()
    }
}

/// What a host check found, once it has.
type CheckResult = tokio::sync::watch::Receiver<Option<HostCheck>>;

/// Host checks begun ahead of a prepare step (see [`Effect::CheckHost`]), the latest per
/// address, found again by the instant the coordinator gave it.
///
/// [`Effect::CheckHost`]: crate::failover::Effect::CheckHost
#[derive(Default)]
pub(super) struct EarlyChecks {
    checks: std::sync::Mutex<HashMap<Ipv4Addr, (Mono, CheckResult)>>,
}

impl EarlyChecks {
    fn find(&self, addr: Ipv4Addr, since: Mono) -> Option<CheckResult> {
        let map = self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&addr)
            .filter(|(s, _)| *s == since)
            .map(|(_, rx)| rx.clone())
    }
}

/// What a draining prepare step made ready (see [`DbOp::Prepare`]): replication drained on
/// this server and the opening lock held where `locked` says, `read_only` still on.
///
/// [`DbOp::Prepare`]: crate::failover::DbOp::Prepare
pub(super) struct Ready {
    drained: super::Drained,
    locked: Vec<IpAddr>,
    /// The bound for releasing each lock.
    limit: Duration,
}

/// Whether the error means nothing listens at the address: the server is not running.
pub fn fault(e: &DbError) -> Fault {
    let refused = match e {
        DbError::Connect { source, .. } => matches!(
            source,
            mysql_async::Error::Io(mysql_async::IoError::Io(io))
                if io.kind() == std::io::ErrorKind::ConnectionRefused
        ),
        _ => false,
    };
    if refused {
        Fault::Refused(e.to_string())
    } else {
        Fault::Other(e.to_string())
    }
}

/// How long a peer's server may take to answer a question on a kept session before its host
/// is checked: many round trips on a segment. Only a server slow to answer pays for the bare
/// connection of the check, which it counts as a failed connection from our host.
const HOST_CHECK_AFTER: Duration = Duration::from_millis(2);

/// What a bare TCP connection to a server's port found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HostCheck {
    /// The handshake completed: the host is up, whatever its server does.
    Accepts,
    /// Nothing listens on the port: the server is not running.
    Refused,
    /// No answer in time: the host is powered off or cut off.
    Silent,
}

/// The named lock a node holds on every reachable server while it checks its peers and
/// opens (see [`Db::lock_for_opening`]), and how long it waits for one another node holds.
const OPENING_LOCK: &str = "cluster_agent_opening";
const OPENING_LOCK_WAIT: Duration = Duration::from_secs(1);

/// True if this session now holds the opening lock, false if another kept it for `wait`
/// (whole seconds).
async fn take_opening_lock(s: &mut Session, wait: Duration) -> Result<bool, DbError> {
    let stmt = format!("SELECT GET_LOCK('{OPENING_LOCK}', {})", wait.as_secs());
    match scalar(&mut s.conn, &stmt).await?.as_deref() {
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        other => Err(DbError::Protocol(format!("GET_LOCK answered {other:?}"))),
    }
}

/// Releases every named lock of the session: a promotion cut short may have taken the
/// opening lock more than once on a kept session.
async fn release_opening_lock(s: &mut Session) -> Result<(), DbError> {
    scalar(&mut s.conn, "SELECT RELEASE_ALL_LOCKS()")
        .await
        .map(drop)
}

/// Runs `attempt` (one operation on a peer) and, if it failed at once (not a timeout, not a
/// refusal), once more: such a failure is a connection the peer ended, a kept session its
/// server has since dropped (a restart) or a new one ended mid-handshake, and a fresh
/// connection answers it. A promotion must not wait a retry interval for that.
async fn once_more_if_cut<T, F: Future<Output = Result<T, DbError>>>(
    peer: impl std::fmt::Display,
    attempt: impl Fn() -> F,
) -> Result<T, DbError> {
    match attempt().await {
        Err(e) if matches!(fault(&e), Fault::Other(_)) && !matches!(e, DbError::Timeout { .. }) => {
            tracing::debug!(%peer, error = %e, "a peer's connection failed at once; trying a new one");
            attempt().await
        }
        r => r,
    }
}

impl Db {
    /// Classifies a failure to reach the server at `addr`: when it did not answer in time, a
    /// bare TCP connection to its port tells a host that still accepts connections (the server
    /// is stalled and may resume, writable) from one that does not (powered off, cut off).
    async fn classify(&self, addr: Ipv4Addr, e: &DbError) -> Fault {
        let f = fault(e);
        if !matches!(f, Fault::Other(_)) || !matches!(e, DbError::Timeout { .. }) {
            return f;
        }
        match self.check_host(addr).await {
            HostCheck::Accepts => Fault::Stalled(format!(
                "{e}; its host accepts connections: the server is stalled, not gone"
            )),
            HostCheck::Refused => Fault::Refused(format!("{e}; nothing listens on its port now")),
            HostCheck::Silent => f,
        }
    }

    /// A bare TCP connection to the server's port at `addr`, within the configured
    /// [`DbConfig::host_check`](super::DbConfig::host_check).
    async fn check_host(&self, addr: Ipv4Addr) -> HostCheck {
        let connect = tokio::net::TcpStream::connect((addr, self.cfg.port));
        tokio::select! {
            r = connect => match r {
                Ok(_) => HostCheck::Accepts,
                Err(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => HostCheck::Refused,
                Err(_) => HostCheck::Silent,
            },
            () = timer::sleep(self.cfg.host_check) => HostCheck::Silent,
        }
    }

    /// Begins a bare TCP handshake with the server's port at `addr` now, for a prepare step
    /// that may follow (see [`Probe::checked_since`]); `since` finds it again.
    pub async fn check_host_early(&self, addr: Ipv4Addr, since: Mono) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        self.early
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(addr, (since, rx));
        let found = self.check_host(addr).await;
        tracing::debug!(peer = %addr, ?found, "early host check");
        tx.send_replace(Some(found));
    }

    /// Runs `op` on the peer at `addr`, given up as soon as its host is found silent (see
    /// [`Db::host_silent`]): a host that cannot complete a TCP handshake is gone for this
    /// promotion, and the operation's whole bound need not pass to know it.
    async fn or_host_silent<T>(
        &self,
        addr: Ipv4Addr,
        checked_since: Option<Mono>,
        op: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        tokio::select! {
            r = op => r,
            () = self.host_silent(addr, checked_since) => Err(DbError::HostSilent {
                addr: IpAddr::V4(addr),
                within: HOST_CHECK_AFTER + self.cfg.host_check,
            }),
        }
    }

    /// Resolves only if the host at `addr` does not complete a TCP handshake in time, tried
    /// after [`HOST_CHECK_AFTER`] without an answer: it is powered off or cut off, and no
    /// server answer will come from it. A check begun at `checked_since` (while the master's
    /// advert was overdue) that finds the host silent stands for that one: it ends sooner,
    /// having begun sooner. One that found the host up says nothing of now (the advert may
    /// have been late and the power cut come after it): the check is made again.
    async fn host_silent(&self, addr: Ipv4Addr, checked_since: Option<Mono>) {
        if let Some(mut early) = checked_since.and_then(|since| self.early.find(addr, since))
            && let Ok(found) = early.wait_for(Option::is_some).await.map(|f| *f)
            && found == Some(HostCheck::Silent)
        {
            return;
        }
        timer::sleep(HOST_CHECK_AFTER).await;
        if self.check_host(addr).await != HostCheck::Silent {
            std::future::pending::<()>().await;
        }
    }
}

fn parse(f: Flavour, text: &str) -> Result<Gtids, DbError> {
    Gtids::parse(f, text).map_err(|e: GtidParseError| DbError::Protocol(e.to_string()))
}

async fn read_semi_sync(s: &mut Session) -> Result<SemiSync, DbError> {
    let f = s.flavour;
    let stmt = f.semi_sync_master_counters();
    let rows: Vec<Row> = s.conn.query(stmt).await.map_err(sql_err(stmt))?;
    let timeout = scalar(&mut s.conn, f.select_semi_sync_timeout())
        .await?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(semi_sync_from(&rows, timeout))
}

/// The semi-sync state from the counters' rows (name, value) and the timeout in milliseconds.
fn semi_sync_from(rows: &[Row], timeout_ms: u64) -> SemiSync {
    let mut semi = SemiSync {
        timeout: Duration::from_millis(timeout_ms),
        ..SemiSync::default()
    };
    for row in rows {
        let name = value_string(row.as_ref(0)).unwrap_or_default();
        let value = value_string(row.as_ref(1)).unwrap_or_default();
        match name.to_ascii_lowercase().as_str() {
            n if n.ends_with("_status") => semi.on = value.eq_ignore_ascii_case("ON"),
            n if n.ends_with("_no_tx") => semi.no_tx = value.parse().unwrap_or(0),
            n if n.ends_with("_clients") => semi.clients = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    semi
}

/// Sends `stmt`, a single-row query and a second statement, in one round trip: the first
/// statement's row and the second's rows.
async fn two_statements(
    s: &mut Session,
    stmts: [&'static str; 2],
) -> Result<(Row, Vec<Row>), DbError> {
    let mut sets = in_one_trip(&mut s.conn, &stmts).await?.into_iter();
    let first = sets.next().unwrap_or_default().into_iter().next();
    let first = first.ok_or_else(|| DbError::Protocol(format!("{} returned no row", stmts[0])))?;
    Ok((first, sets.next().unwrap_or_default()))
}

/// What the observation needs of the followed master, in one round trip (see
/// [`Flavour::select_master_standing`]).
async fn read_master_standing(s: &mut Session) -> Result<MasterDb, DbError> {
    let f = s.flavour;
    let (first, counters) = two_statements(s, f.select_master_standing()).await?;
    let timeout_ms = value_string(first.as_ref(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(MasterDb {
        read_only: super::is_on(value_string(first.as_ref(0))),
        semi_sync: semi_sync_from(&counters, timeout_ms),
        logged: parse(f, &value_string(first.as_ref(2)).unwrap_or_default())?,
    })
}

async fn read_logged(s: &mut Session) -> Result<Gtids, DbError> {
    let state = scalar(&mut s.conn, s.flavour.select_gtid_state()).await?;
    parse(s.flavour, &state.unwrap_or_default())
}

async fn read_read_only(s: &mut Session) -> Result<bool, DbError> {
    let f = s.flavour;
    Ok(super::is_on(
        scalar(&mut s.conn, f.select_read_only()).await?,
    ))
}

async fn read_local(s: &mut Session) -> Result<LocalDb, DbError> {
    let f = s.flavour;
    let read_only = read_read_only(s).await?;
    let semi_sync = read_semi_sync(s).await?;
    let logged = read_logged(s).await?;
    let replica = match read_replica(s).await? {
        None => None,
        Some(r) => Some(Replica {
            master: r.master_host.parse::<Ipv4Addr>().ok(),
            io_running: r.io_running,
            sql_running: r.sql_running,
            received: parse(f, &r.gtid_io_pos)?,
            verified_tls: r.using_tls && r.verify_server_cert,
            // A stopped applier makes a poor candidate even without an error: what it
            // received would never reach its binary log.
            sql_error: (!r.sql_running).then(|| {
                if r.last_sql_error.is_empty() {
                    "the SQL thread is stopped".to_string()
                } else {
                    r.last_sql_error
                }
            }),
            lag_secs: r.lag_secs,
        }),
    };
    Ok(LocalDb {
        read_only,
        logged,
        semi_sync,
        replica,
    })
}

/// Whether the server is read-only, and what it holds, in one round trip (see
/// [`Flavour::select_standing`]).
async fn read_standing(s: &mut Session) -> Result<(bool, Holdings), DbError> {
    let f = s.flavour;
    let (first, status) = two_statements(s, f.select_standing()).await?;
    let read_only = super::is_on(value_string(first.as_ref(0)));
    let logged = parse(f, &value_string(first.as_ref(1)).unwrap_or_default())?;
    // Multi-source replication would give several rows; the agent uses the default one.
    let received = match status.first() {
        Some(row) => parse(
            f,
            &super::col(row, f.col(StatusCol::IoPos)).unwrap_or_default(),
        )?,
        None => Gtids::default(),
    };
    Ok((read_only, Holdings { logged, received }))
}

async fn read_holdings(s: &mut Session) -> Result<Holdings, DbError> {
    Ok(read_standing(s).await?.1)
}

/// Why not to open, if a rechecked peer is writable again or holds a transaction `held`
/// lacks. Between the prepare step and now another node that still believed itself master
/// may have opened, taken writes and been fenced again; its writes (and the replicas that
/// acknowledged them) must not be left behind.
fn recheck_verdict(peers: &[(Ipv4Addr, bool, Holdings)], held: &Gtids) -> Option<String> {
    peers.iter().find_map(|(p, read_only, h)| {
        if !read_only {
            return Some(format!("{p} became writable while this node prepared"));
        }
        let more = held.missing(&h.all());
        (!more.is_empty())
            .then(|| format!("{p} gained {more} while this node prepared: preparing again"))
    })
}

/// A drained replica with the opening lock taken at the instant `lock` says, or, if it was
/// not, replicating again.
async fn locked_or_resume(
    s: &mut Session,
    mut drained: super::Drained,
    lock: Result<Mono, DbError>,
) -> Result<super::Drained, DbError> {
    match lock {
        Ok(at) => {
            drained.steps.push(("opening locked", at));
            drained.steps.sort_by_key(|&(_, at)| at);
            Ok(drained)
        }
        Err(e) => {
            if drained.was_replica {
                super::resume_replication(s).await;
            }
            Err(e)
        }
    }
}

impl Db {
    /// Runs `op` on the kept session to `addr` within `limit`, dropping the session if it
    /// fails (its state is unknown afterwards).
    async fn with_remote<T>(
        &self,
        remote: &Remote,
        addr: IpAddr,
        limit: Duration,
        what: &'static str,
        op: impl AsyncFnOnce(&mut Session) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let slot = remote.slot(addr);
        let mut g = slot.lock().await;
        // The session is out of its slot while in use and goes back only after a success: one
        // cut short (a timeout, a caller that stopped waiting) is dropped, never reused with
        // an answer still pending on it.
        bounded(what, limit, async {
            let mut s = match g.take() {
                Some(s) => s,
                None => self.open(addr).await?,
            };
            let res = op(&mut s).await;
            if res.is_ok() {
                *g = Some(s);
            }
            res
        })
        .await
    }

    /// Keeps a session to each of `peers` for the prepare step and for the opening lock, and
    /// one to this server for its opening lock, each opened within `limit`: a promotion that
    /// starts with TLS handshakes waits for them (a few milliseconds each, twice). A missing
    /// session is opened; a kept one for
    /// the prepare is pinged and opened again if it failed. A kept lock session is left as it
    /// is, since it may hold the lock of a promotion under way (one that died fails at once
    /// when used, and a new one is opened then). A session in use is left alone and one being
    /// pinged is out of its slot, so a promotion never waits for this; at worst it opens its
    /// own session, as it would without this.
    pub async fn warm_peers(&self, peers: &[Ipv4Addr], limit: Duration) {
        let jobs = peers
            .iter()
            .flat_map(|&p| {
                let p = IpAddr::V4(p);
                [(&self.peers, p, true), (&self.locks, p, false)]
            })
            .chain([(&self.locks, self.cfg.addr, false)])
            .map(|(remote, addr, ping)| async move {
                let slot = remote.slot(addr);
                let Ok(mut g) = slot.try_lock() else { return };
                if g.is_some() && !ping {
                    return;
                }
                let kept = g.take();
                drop(g);
                let live = bounded("warm peer session", limit, async {
                    match kept {
                        Some(mut s) => {
                            s.conn.ping().await.map_err(|e| DbError::Sql {
                                what: "ping",
                                message: e.to_string(),
                            })?;
                            Ok(s)
                        }
                        None => self.open(addr).await,
                    }
                })
                .await;
                if let Ok(s) = live {
                    let mut g = slot.lock().await;
                    if g.is_none() {
                        *g = Some(s);
                    }
                }
            });
        futures::future::join_all(jobs).await;
    }

    /// One look at the local server.
    pub async fn observe_local(&self) -> Result<LocalDb, Fault> {
        let mut g = self.probe.lock().await;
        let res = async {
            let s = self.session(&mut g).await?;
            bounded("observe", self.cfg.op_timeout, read_local(s)).await
        }
        .await;
        res.map_err(|e| {
            *g = None;
            fault(&e)
        })
    }

    /// One look at the master at `addr`: semi-sync state and what it logged, with the instant
    /// it was last asked (a session opened, or the question sent). Its server answered all it
    /// was asked before that instant, so a master that did not answer went silent no sooner: a
    /// look cut short by a stall of this agent would otherwise date the silence from before
    /// the stall, and the master's adverts received meanwhile would seem to outlive its server.
    pub async fn observe_master(&self, addr: Ipv4Addr) -> (Result<MasterDb, Fault>, Mono) {
        let asked = AtomicU64::new(Mono::now().as_nanos());
        let res = self
            .with_remote(
                &self.watch,
                IpAddr::V4(addr),
                self.cfg.op_timeout.min(Duration::from_secs(1)),
                "observe master",
                async |s| {
                    asked.store(Mono::now().as_nanos(), Ordering::Relaxed);
                    read_master_standing(s).await
                },
            )
            .await;
        let asked = Mono::from_nanos(asked.load(Ordering::Relaxed));
        match res {
            Ok(m) => (Ok(m), asked),
            Err(e) => (Err(self.classify(addr, &e).await), asked),
        }
    }

    /// Fences every reachable peer that is writable (only reports it writable without
    /// `fence`), then reports what each peer and this node hold. Peers are asked in parallel,
    /// each within `probe_timeout` (plus the fence's own bound when one is needed): a
    /// promotion should not wait long on a dead node.
    ///
    /// With `ready` (a master and the promotion's bound), this server is meanwhile made ready
    /// to open (see [`Db::make_ready`]) and its holdings read again after, if the step is still
    /// waiting for a peer after [`HOST_CHECK_AFTER`] and that master's server has not answered
    /// (a step that ends sooner has no wait to fill, and a master that answers is alive);
    /// the steps of that are returned.
    pub async fn prepare(
        &self,
        peers: &[Probe],
        probe_timeout: Duration,
        fence: bool,
        ready: Option<(Ipv4Addr, Duration)>,
    ) -> (
        Result<Holdings, String>,
        Vec<PeerReport>,
        Vec<(&'static str, Mono)>,
    ) {
        // How many peers have been reported, and whether the master named in `ready` answered.
        let (done_tx, mut done) = tokio::sync::watch::channel((0usize, false));
        let master = ready.map(|(m, _)| m);
        let asks = peers.iter().map(|p| {
            let done_tx = &done_tx;
            async move {
                let reached = || {
                    if master == Some(p.addr) {
                        done_tx.send_modify(|(_, alive)| *alive = true);
                    }
                };
                let report = self.ask_peer(p, probe_timeout, fence, reached).await;
                done_tx.send_modify(|(n, _)| *n += 1);
                report
            }
        });
        let read_own = || async {
            let mut g = self.ops.lock().await;
            let res = async {
                let s = self.session(&mut g).await?;
                bounded("read own position", self.cfg.op_timeout, read_holdings(s)).await
            }
            .await;
            if res.is_err() {
                *g = None;
            }
            res.map_err(|e| e.to_string())
        };
        let own = async {
            let waiting = async {
                ready.is_some()
                    && tokio::select! {
                        biased;
                        _ = done.wait_for(|&(n, alive)| alive || n == peers.len()) => false,
                        () = timer::sleep(HOST_CHECK_AFTER) => true,
                    }
            };
            let (first, go) = tokio::join!(read_own(), waiting);
            let steps = match ready {
                Some((_, timeout)) if go => self.make_ready(peers, probe_timeout, timeout).await,
                _ => Vec::new(),
            };
            // Read again after a drain: the receiver may have brought more before it ended.
            let own = if steps.is_empty() {
                first
            } else {
                read_own().await
            };
            (own, steps)
        };
        let ((own, steps), peers) = tokio::join!(own, futures::future::join_all(asks));
        (own, peers, steps)
    }

    fn ready_slot(&self) -> std::sync::MutexGuard<'_, Option<Ready>> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drains replication and takes the opening lock here and on every peer of `peers` that
    /// answers, as a promotion would, leaving `read_only` on; kept for [`Db::promote_covering`]
    /// until [`Db::unready`]. A prepare step mostly waits for a silent master's host check,
    /// and the promotion that usually follows then has only its last checks left.
    ///
    /// Nothing here can make a second writer: the server stays read-only, and the lock only
    /// makes another node that opens meanwhile wait. What changes is that this replica stops
    /// acknowledging a few milliseconds sooner; a master that turns out alive loses no write
    /// by it (it waits for an acknowledgement, or another replica gives one, which the
    /// recheck before opening then finds), and replication resumes as soon as the step has
    /// not led to an opening. Returns the steps' instants; empty if it failed (logged), in
    /// which case the promotion drains as usual.
    async fn make_ready(
        &self,
        peers: &[Probe],
        probe_timeout: Duration,
        timeout: Duration,
    ) -> Vec<(&'static str, Mono)> {
        // Not the silent master being checked: a promotion locks only peers that answered
        // its prepare step, and one that did not is passed over. If it answers after all, the
        // promotion takes the locks again, in order.
        let lock_peers: Vec<Ipv4Addr> = peers
            .iter()
            .filter(|p| !p.skip && p.checked_since.is_none())
            .map(|p| p.addr)
            .collect();
        let mut locked = Vec::new();
        let res = self
            .with_ops(
                "drain replication",
                timeout + self.cfg.op_timeout,
                async |s| {
                    // Not waited for where another node holds it: that node is opening, and a
                    // promotion that follows waits for it instead.
                    self.drain_and_lock(
                        s,
                        &lock_peers,
                        (probe_timeout, Duration::ZERO),
                        timeout,
                        &mut locked,
                    )
                    .await
                },
            )
            .await;
        match res {
            Ok(drained) => {
                let steps = drained.steps.clone();
                *self.ready_slot() = Some(Ready {
                    drained,
                    locked,
                    limit: probe_timeout,
                });
                steps
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot make the database ready to open during the prepare step; a promotion drains it then");
                if matches!(e, DbError::Timeout { .. }) {
                    // Cut short mid-way: the locks' sessions go, and replication resumes on a
                    // fresh session.
                    self.locks.clear();
                    let _ = self
                        .with_ops("resume replication", self.cfg.op_timeout, async |s| {
                            super::resume_replication(s).await;
                            Ok(())
                        })
                        .await;
                } else {
                    self.unlock_after_opening(&locked, probe_timeout).await;
                }
                Vec::new()
            }
        }
    }

    /// Drains replication on `s` while the opening lock is taken here and on `peers` (see
    /// [`Db::lock_for_opening`], with its `limit` and `wait`): neither waits for the other. If
    /// the lock is not had, replication resumes.
    async fn drain_and_lock(
        &self,
        s: &mut Session,
        peers: &[Ipv4Addr],
        (limit, wait): (Duration, Duration),
        timeout: Duration,
        locked: &mut Vec<IpAddr>,
    ) -> Result<super::Drained, DbError> {
        let (drained, lock) = tokio::join!(super::drain_replication(s, timeout), async {
            let r = self.lock_for_opening(peers, limit, wait, locked).await;
            r.map(|()| Mono::now())
        });
        locked_or_resume(s, drained?, lock).await
    }

    /// One peer's part of [`Db::prepare`]: whether it answers, what it holds and whether it
    /// is writable (fenced first with `fence`). `reached` is called as soon as its server has
    /// answered, before anything else is asked of it.
    async fn ask_peer(
        &self,
        p: &Probe,
        probe_timeout: Duration,
        fence: bool,
        reached: impl FnOnce(),
    ) -> PeerReport {
        if p.skip {
            return PeerReport {
                addr: p.addr,
                result: Err(Fault::Other(
                    "its server has not answered for a while".into(),
                )),
            };
        }
        // Reachability first, connection included, within the short bound: a dead
        // host must not cost a promotion a whole connect timeout. The same round trip
        // reads what the peer holds, which is all a read-only peer is asked.
        let reach = || {
            self.with_remote(
                &self.peers,
                IpAddr::V4(p.addr),
                probe_timeout,
                "reach peer",
                async |s| read_standing(s).await,
            )
        };
        let reach = self
            .or_host_silent(p.addr, p.checked_since, once_more_if_cut(p.addr, reach))
            .await;
        if reach.is_ok() {
            reached();
        }
        let res = match reach {
            Err(e) => Err(e),
            Ok((true, holdings)) => Ok(PeerState {
                holdings,
                writable: false,
            }),
            Ok((false, holdings)) if !fence => Ok(PeerState {
                holdings,
                writable: true,
            }),
            Ok((false, _)) => {
                self.with_remote(
                        &self.peers,
                        IpAddr::V4(p.addr),
                        self.cfg.op_timeout,
                        "prepare peer",
                        async |s| {
                            tracing::warn!(peer = %p.addr, "a peer's database is writable: fencing it before opening ours");
                            let writable = match super::fence(s, &self.cfg.admin_user, &self.cfg.repl_user).await {
                                Ok(killed) => {
                                    tracing::info!(peer = %p.addr, killed, "peer database fenced");
                                    false
                                }
                                Err(e) => {
                                    tracing::error!(peer = %p.addr, error = %e, "cannot fence a writable peer");
                                    !read_read_only(s).await.unwrap_or(false)
                                }
                            };
                            // Read after the fence: writes may have committed until then.
                            Ok(PeerState {
                                holdings: read_holdings(s).await?,
                                writable,
                            })
                        },
                    )
                    .await
            }
        };
        let result = match res {
            Ok(state) => Ok(state),
            Err(e) => Err(self.classify(p.addr, &e).await),
        };
        PeerReport {
            addr: p.addr,
            result,
        }
    }

    /// Undoes what [`Db::make_ready`] left, if anything: the opening locks are released and
    /// replication resumes. Called before every operation but a promotion.
    pub async fn unready(&self) -> Result<(), DbError> {
        let Some(ready) = self.ready_slot().take() else {
            return Ok(());
        };
        self.unlock_after_opening(&ready.locked, ready.limit).await;
        if !ready.drained.was_replica {
            return Ok(());
        }
        tracing::info!("the prepare step did not lead to an opening: replicating again");
        self.with_ops("resume replication", self.cfg.op_timeout, async |s| {
            super::restart_replication(s).await
        })
        .await
    }

    /// The last look before opening: what each of `peers` that answers within `limit` holds
    /// and whether it is writable (judged by [`recheck_verdict`]). Peers that do not answer are
    /// passed over: they answered the prepare step moments ago or were accounted for then.
    async fn recheck_peers(
        &self,
        peers: &[Ipv4Addr],
        limit: Duration,
    ) -> Vec<(Ipv4Addr, bool, Holdings)> {
        let asks = peers.iter().map(|&p| async move {
            self.or_host_silent(
                p,
                None,
                self.with_remote(
                    &self.peers,
                    IpAddr::V4(p),
                    limit,
                    "recheck peer",
                    async |s| read_standing(s).await,
                ),
            )
            .await
            .ok()
            .map(|(read_only, h)| (p, read_only, h))
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The master's look at its peers: what each that answers within `limit` holds and
    /// whether it is writable; then what this node has logged, read after them, so that a
    /// replica of ours can never seem to hold more than we do.
    pub async fn look_at_peers(
        &self,
        peers: &[Ipv4Addr],
        limit: Duration,
    ) -> (Vec<PeerSeen>, Option<Gtids>) {
        let asks = peers.iter().map(|&p| async move {
            self.with_remote(
                &self.guard,
                IpAddr::V4(p),
                limit,
                "look at peer",
                async |s| {
                    let (read_only, holdings) = read_standing(s).await?;
                    Ok(PeerSeen {
                        addr: p,
                        writable: !read_only,
                        holdings,
                    })
                },
            )
            .await
            .ok()
        });
        let seen: Vec<PeerSeen> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let mut g = self.probe.lock().await;
        let own = async {
            let s = self.session(&mut g).await?;
            bounded("own position", limit, read_logged(s)).await
        }
        .await;
        if own.is_err() {
            *g = None;
        }
        (seen, own.ok())
    }

    /// Fences each of `peers` (client sessions ended, `read_only` on).
    pub async fn fence_peers(&self, peers: &[Ipv4Addr]) -> Vec<(Ipv4Addr, Result<(), String>)> {
        let (admin, repl) = (self.cfg.admin_user.clone(), self.cfg.repl_user.clone());
        let asks = peers.iter().map(|&p| {
            let (admin, repl) = (admin.clone(), repl.clone());
            async move {
                let r = self
                    .with_remote(
                        &self.peers,
                        IpAddr::V4(p),
                        self.cfg.op_timeout,
                        "fence peer",
                        async |s| super::fence(s, &admin, &repl).await,
                    )
                    .await;
                (p, r.map(drop).map_err(|e| e.to_string()))
            }
        });
        futures::future::join_all(asks).await
    }

    /// What the server at `source` has logged, for the errant-transaction check; with
    /// `writer`, only once it is open for writes. Read on the session kept for prepare steps
    /// (the source is a peer): a new one would cost a TLS handshake, and one that a fence or
    /// a restart of the source has ended is replaced at once.
    pub(super) async fn source_state(
        &self,
        source: IpAddr,
        writer: bool,
    ) -> Result<String, DbError> {
        let read = || {
            self.with_remote(
                &self.peers,
                source,
                self.cfg.op_timeout,
                "read the source's GTID state",
                async |s| {
                    let stmt = s.flavour.select_source_state();
                    let row: Option<Row> = s.conn.query_first(stmt).await.map_err(sql_err(stmt))?;
                    let row =
                        row.ok_or_else(|| DbError::Protocol(format!("{stmt} returned no row")))?;
                    Ok((
                        super::is_on(value_string(row.as_ref(0))),
                        value_string(row.as_ref(1)).unwrap_or_default(),
                    ))
                },
            )
        };
        let (read_only, logged) = once_more_if_cut(source, read).await?;
        if writer && read_only {
            return Err(DbError::MasterNotOpen { master: source });
        }
        Ok(logged)
    }

    /// Replicates from `from` until `target` is applied (at most `timeout`), so that this
    /// node holds what only `from` had: on a connection of its own where it can (see
    /// [`super::catch_up_beside`]), else by re-pointing replication to `from`, left running
    /// for the promotion that follows to drain and stop.
    pub async fn catch_up(
        &self,
        from: Ipv4Addr,
        target: &Gtids,
        timeout: Duration,
    ) -> Result<Vec<(&'static str, Mono)>, DbError> {
        let start = Instant::now();
        let source = IpAddr::V4(from);
        let source_state = self.source_state(source, false).await?;
        let mut steps = vec![("source read", Mono::now())];
        let cfg = self.cfg.clone();
        let wait = target.wait_position();
        tracing::info!(%from, target = %target, "catching up");
        let beside = self
            .with_ops("catch up", timeout + self.cfg.op_timeout, async |s| {
                super::catch_up_beside(
                    s,
                    &cfg,
                    (source, &source_state),
                    &wait,
                    (timeout, start),
                    &mut steps,
                )
                .await
            })
            .await;
        match beside {
            Ok(true) => return Ok(steps),
            Ok(false) => {}
            Err(e) => {
                // Cut short (a timeout drops the session mid-way): end the catch-up's
                // connection on a fresh one, and stay the replica this node was.
                let _ = self
                    .with_ops("end catch-up", self.cfg.op_timeout, async |s| {
                        super::end_catch_up_connection(s).await;
                        super::resume_replication(s).await;
                        Ok(())
                    })
                    .await;
                return Err(e);
            }
        }
        // The source's state was read above; re-pointing needs no second look.
        let r = self.replicate_knowing(source, &source_state).await?;
        steps.push(("replication re-pointed", Mono::now()));
        tracing::info!(%from, unchanged = r.unchanged, "catching up: replication re-pointed");
        let left = timeout.saturating_sub(start.elapsed());
        self.with_ops("catch up", left + self.cfg.op_timeout, async |s| {
            let status = s.flavour.show_replica_status();
            super::wait_caught_up(s, &wait, left, start, (source, status)).await
        })
        .await?;
        steps.push(("applied", Mono::now()));
        Ok(steps)
    }

    /// Takes the opening lock on this server and on every peer in `peers` that answers, in
    /// address order, recording in `locked` where it holds it. Each lock is held by a session
    /// of its own (in `locks`), this server's too, so that the locks can be taken while the
    /// role-change session drains replication.
    ///
    /// Two nodes that both believe themselves master (one frozen and resumed, one that just
    /// won) can prepare at once; each checks that the other is read-only and then opens, and
    /// without a lock both checks can pass before either opens. With it, the second waits
    /// until the first has opened and released the lock, and then its check sees the first
    /// writable and it does not open. The same address order on every node leaves no
    /// deadlock. A peer that does not answer is passed over, as the recheck passes it over;
    /// this server must answer.
    ///
    /// Each lock is waited for at most `wait` where another node holds it.
    async fn lock_for_opening(
        &self,
        peers: &[Ipv4Addr],
        limit: Duration,
        wait: Duration,
        locked: &mut Vec<IpAddr>,
    ) -> Result<(), DbError> {
        let mut all: Vec<IpAddr> = peers.iter().map(|&p| IpAddr::V4(p)).collect();
        all.push(self.cfg.addr);
        all.sort();
        all.dedup();
        for addr in all {
            let ask = || {
                self.with_remote(
                    &self.locks,
                    addr,
                    limit + wait,
                    "take the opening lock",
                    async |ls| take_opening_lock(ls, wait).await,
                )
            };
            let attempt = once_more_if_cut(addr, ask);
            let got = match addr {
                own if own == self.cfg.addr => attempt.await?,
                IpAddr::V4(v4) => match self.or_host_silent(v4, None, attempt).await {
                    Ok(got) => got,
                    Err(_) => continue,
                },
                IpAddr::V6(_) => match attempt.await {
                    Ok(got) => got,
                    Err(_) => continue,
                },
            };
            if !got {
                return Err(DbError::Protocol(format!(
                    "another node is opening its database (the opening lock on {addr} is taken)"
                )));
            }
            locked.push(addr);
        }
        Ok(())
    }

    /// Releases the opening lock wherever [`Db::lock_for_opening`] took it, each within
    /// `limit`. A session whose release fails is dropped, and a closed session releases its
    /// locks too.
    async fn unlock_after_opening(&self, locked: &[IpAddr], limit: Duration) {
        for &addr in locked {
            let released = self
                .with_remote(
                    &self.locks,
                    addr,
                    limit,
                    "release the opening lock",
                    async |ls| release_opening_lock(ls).await,
                )
                .await;
            if let Err(error) = released {
                tracing::warn!(%addr, %error, "cannot release the opening lock");
            }
        }
    }

    fn opened_locks_slot(&self) -> std::sync::MutexGuard<'_, Option<(Vec<IpAddr>, Duration)>> {
        self.opened_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Releases the opening lock a promotion that opened left held (nothing otherwise). The
    /// operations task calls it after every operation, right after reporting it and before
    /// the next; a session cut short or dropped releases its locks with it.
    pub async fn release_opening_locks(&self) {
        let Some((locked, limit)) = self.opened_locks_slot().take() else {
            return;
        };
        self.unlock_after_opening(&locked, limit).await;
    }

    /// After the drain: what is applied must cover `target`, and no peer may be writable or
    /// hold more. This node's server and its peers are read at once: with the opening lock
    /// held and replication stopped, neither side's answer can change the other's. Returns
    /// the steps' instants.
    async fn check_before_opening(
        &self,
        s: &mut Session,
        target: &Gtids,
        recheck: &[Ipv4Addr],
        probe_timeout: Duration,
    ) -> Result<Vec<(&'static str, Mono)>, DbError> {
        let f = s.flavour;
        let own = async {
            let stmts = [f.select_gtid_state(), f.select_applied_pos()];
            let sets = in_one_trip(&mut s.conn, &stmts).await?;
            let first = |i: usize| {
                let row = sets.get(i).and_then(|rows| rows.first());
                row.and_then(|r| value_string(r.as_ref(0)))
                    .unwrap_or_default()
            };
            let held = parse(f, &first(0))?.union(&parse(f, &first(1))?);
            Ok::<_, DbError>((held, Mono::now()))
        };
        let (own, peers) = tokio::join!(own, self.recheck_peers(recheck, probe_timeout));
        let (held, covered_at) = own?;
        let missing = held.missing(target);
        if !missing.is_empty() {
            return Err(DbError::Protocol(format!(
                "after applying everything received this node still lacks {missing}"
            )));
        }
        if let Some(why) = recheck_verdict(&peers, &held) {
            return Err(DbError::Protocol(why));
        }
        Ok(vec![
            ("coverage checked", covered_at),
            ("peers rechecked", Mono::now()),
        ])
    }

    /// Promotes as [`Db::promote`] does, but only if what is then applied covers `target`:
    /// the prepare step found that much on the reachable nodes, and opening with less would
    /// lose some of it.
    ///
    /// Just before it opens, the peers in `recheck` (those that answered the prepare step) are
    /// asked again whether they are read-only and hold nothing this node lacks: another node
    /// that won the election at the same moment may have opened meanwhile. When it does not
    /// open, a replica goes on replicating.
    ///
    /// When it opens, the opening lock stays held until [`Db::release_opening_locks`]: the
    /// caller must call that once it has reported the promotion, or every other node's
    /// promotion is refused while this agent's sessions live.
    pub async fn promote_covering(
        &self,
        target: &Gtids,
        recheck: &[Ipv4Addr],
        probe_timeout: Duration,
        timeout: Duration,
    ) -> Result<super::Promoted, DbError> {
        let limit = timeout + self.cfg.op_timeout;
        let target = target.clone();
        let res = self
            .with_ops("promote", limit, async |s| {
                // Taken here: if no session can be had, it is left for `unready`.
                let ready = self.ready_slot().take();
                let mut locked = Vec::new();
                let drained = match ready {
                    // Made ready by the prepare step: its steps were reported with it.
                    Some(mut r) if recheck.iter().all(|&p| r.locked.contains(&IpAddr::V4(p))) => {
                        locked = r.locked;
                        r.drained.steps.clear();
                        Ok(r.drained)
                    }
                    Some(mut r) => {
                        // A peer answered the prepare but not the lock: locked again, in
                        // order.
                        self.unlock_after_opening(&r.locked, r.limit).await;
                        r.drained.steps.clear();
                        let lock = self
                            .lock_for_opening(
                                recheck,
                                probe_timeout,
                                OPENING_LOCK_WAIT,
                                &mut locked,
                            )
                            .await;
                        locked_or_resume(s, r.drained, lock.map(|()| Mono::now())).await
                    }
                    None => {
                        self.drain_and_lock(
                            s,
                            recheck,
                            (probe_timeout, OPENING_LOCK_WAIT),
                            timeout,
                            &mut locked,
                        )
                        .await
                    }
                };
                let res = match drained {
                    Err(e) => Err(e),
                    Ok(mut drained) => {
                        match self
                            .check_before_opening(s, &target, recheck, probe_timeout)
                            .await
                        {
                            Ok(steps) => {
                                drained.steps.extend(steps);
                                super::open_for_writes(s, drained, self.cfg.semi_sync_min).await
                            }
                            Err(e) => {
                                if drained.was_replica {
                                    super::resume_replication(s).await;
                                }
                                Err(e)
                            }
                        }
                    }
                };
                if res.is_ok() {
                    // Open: a node that takes the lock from now on finds this one writable
                    // and does not open, so the VIP need not wait for the release.
                    *self.opened_locks_slot() = Some((locked, probe_timeout));
                } else {
                    self.unlock_after_opening(&locked, probe_timeout).await;
                }
                res
            })
            .await;
        if matches!(res, Err(DbError::Timeout { .. })) {
            // Cut short, perhaps between taking the opening lock on peers and releasing it.
            self.locks.clear();
        }
        match &res {
            Ok(p) => tracing::info!(
                waited_ms = p.waited.as_millis() as u64,
                applied = %p.applied,
                was_replica = p.was_replica,
                "database promoted: writable, semi-sync master on"
            ),
            Err(e) => tracing::warn!(error = %e, "database not promoted"),
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holdings(logged: &str, received: &str) -> Holdings {
        Holdings {
            logged: parse(Flavour::MariaDb, logged).unwrap(),
            received: parse(Flavour::MariaDb, received).unwrap(),
        }
    }

    #[test]
    fn the_recheck_refuses_a_writable_peer_or_one_that_gained_a_transaction() {
        let held = parse(Flavour::MariaDb, "0-1-10").unwrap();
        let p: Ipv4Addr = "10.0.0.2".parse().unwrap();
        let same = (p, true, holdings("0-1-10", "0-1-10"));
        let behind = (p, true, holdings("0-1-8", ""));
        assert_eq!(recheck_verdict(&[same.clone(), behind], &held), None);
        assert_eq!(recheck_verdict(&[], &held), None);
        let writable = (p, false, holdings("0-1-10", ""));
        assert!(
            recheck_verdict(&[same.clone(), writable], &held)
                .unwrap()
                .contains("became writable")
        );
        let gained = (p, true, holdings("0-1-10", "0-1-11"));
        assert!(
            recheck_verdict(&[same, gained], &held)
                .unwrap()
                .contains("gained")
        );
    }
}
