//! The agent's handle on its local database server.
//!
//! Every connection (to the local server, and to a new master for the errant-transaction
//! check) is TLS with the server's certificate verified against the cluster's CA and the
//! address dialled, never the system roots: a database that cannot prove it belongs to the
//! cluster is treated as unreachable.
//!
//! Two sessions: one for role changes, which may block for the bounded promotion wait, and one
//! for health probes, so the catch-up gate keeps answering meanwhile. A session that failed is
//! dropped and reopened on next use, because after a server restart or a `KILL` its state is
//! unknown.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::carp::time::Mono;
use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, OptsBuilder, Row, SslOpts, Value};
use tokio::sync::Mutex;

use super::gtid::{self, GtidList};
use super::secret::Secret;
use super::sql::{Flavour, ReplicationSource, StatusCol};

mod cluster;
pub use cluster::fault;

/// How the agent reaches its local server and what replication uses.
#[derive(Clone, Debug, PartialEq)]
pub struct DbConfig {
    /// The local server's address: the node's own address, which its certificate names.
    pub addr: IpAddr,
    /// The port of every server in the cluster (a replica dials the master on it).
    pub port: u16,
    pub admin_user: String,
    pub admin_password: Secret,
    pub repl_user: String,
    pub repl_password: Secret,
    /// CA certificate (PEM) that every server's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate and key the agent presents (optional: the users `REQUIRE SSL`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The CA, certificate and key replication uses, as paths the database server can read
    /// (it opens them itself); `None`: the same paths as above.
    pub repl_ssl_ca: Option<PathBuf>,
    pub repl_ssl_cert: Option<PathBuf>,
    pub repl_ssl_key: Option<PathBuf>,
    /// Bound on connecting and on any one operation besides the promotion wait.
    pub op_timeout: Duration,
    /// How long a bare TCP handshake with a peer's server may take before its host counts
    /// as gone (powered off, cut off) rather than up with a stalled server.
    pub host_check: Duration,
    /// With a quorum lease: the shortest semi-sync timeout a master may run with. A master
    /// cut off from its replicas and from etcd must not acknowledge a commit on its own
    /// before it has fenced itself, which it does within the lease's TTL.
    pub semi_sync_min: Option<Duration>,
}

impl DbConfig {
    /// A configuration with the default users and timeouts.
    pub fn new(
        addr: IpAddr,
        port: u16,
        ca: PathBuf,
        admin_password: Secret,
        repl_password: Secret,
    ) -> DbConfig {
        DbConfig {
            addr,
            port,
            admin_user: super::bootstrap::DEFAULT_ADMIN_USER.to_string(),
            admin_password,
            repl_user: super::bootstrap::DEFAULT_REPL_USER.to_string(),
            repl_password,
            ca,
            client_cert: None,
            client_key: None,
            repl_ssl_ca: None,
            repl_ssl_cert: None,
            repl_ssl_key: None,
            op_timeout: Duration::from_secs(5),
            host_check: Duration::from_millis(50),
            semi_sync_min: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("database {what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error("database operation {what} did not finish within {limit:?}")]
    Timeout { what: &'static str, limit: Duration },
    #[error(
        "database at {addr}: no answer, and its host did not complete a TCP handshake within {within:?}"
    )]
    HostSilent { addr: IpAddr, within: Duration },
    #[error(
        "not promoted: relay log not applied within {waited:?} (received {received}, applied {applied})"
    )]
    PromoteTimeout {
        waited: Duration,
        received: String,
        applied: String,
    },
    #[error("not promoted: replication SQL thread stopped: {0}")]
    ReplicationBroken(String),
    #[error(
        "errant transactions: this node holds {gtids:?} that the master at {master} lacks; staying fenced"
    )]
    Errant { master: IpAddr, gtids: Vec<String> },
    #[error("the master at {master} is not open for writes yet")]
    MasterNotOpen { master: IpAddr },
    #[error("replication from {master} came up without verified TLS; stopped it")]
    NoTls { master: IpAddr },
    #[error("replication from {master} fails: error {errno}: {error}")]
    ReplicaIo {
        master: IpAddr,
        errno: u32,
        error: String,
    },
    #[error("unexpected answer from the database: {0}")]
    Protocol(String),
}

/// The local server's state, as the catch-up gate and `status` need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The server answered over verified TLS.
    pub up: bool,
    /// Why it is not up (no secrets: the driver's and server's messages only).
    pub error: Option<String>,
    pub flavour: Option<Flavour>,
    pub read_only: bool,
    /// Acting as a semi-sync master right now (it falls back to async after a timeout).
    pub semi_sync_master: bool,
    /// `@@gtid_binlog_state` (MariaDB) or `@@gtid_executed` (MySQL).
    pub gtid_state: String,
    /// `None` when the server is not configured as a replica.
    pub replica: Option<ReplicaStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub master_host: String,
    pub master_port: u16,
    /// The receiving thread is connected (`Yes`; `Connecting` counts as not running).
    pub io_running: bool,
    /// The receiving thread has stopped (`No`): it will not connect again by itself.
    pub io_stopped: bool,
    pub sql_running: bool,
    /// `Seconds_Behind_Master`; `None` while either thread is stopped.
    pub lag_secs: Option<u64>,
    /// The replication connection is configured for TLS (`Master_SSL_Allowed`).
    pub using_tls: bool,
    /// The master's certificate is verified (`Master_SSL_Verify_Server_Cert`).
    pub verify_server_cert: bool,
    /// Received up to (`Gtid_IO_Pos` / `Retrieved_Gtid_Set`).
    pub gtid_io_pos: String,
    /// Applied up to (`@@gtid_slave_pos` / `@@gtid_executed`).
    pub gtid_slave_pos: String,
    /// Everything received has been applied.
    pub caught_up: bool,
    pub last_io_errno: u32,
    pub last_io_error: String,
    pub last_sql_errno: u32,
    pub last_sql_error: String,
}

/// Why a node should not be master now (the catch-up gate).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("database down: {0}")]
    Down(String),
    #[error("replication stopped applying: {0}")]
    Broken(String),
    #[error("replica {lag_secs} s behind (limit {max_secs} s)")]
    Lagging { lag_secs: u64, max_secs: u64 },
}

impl Health {
    fn down(error: String) -> Health {
        Health {
            error: Some(error),
            ..Health::default()
        }
    }

    /// The catch-up gate: `Ok` when this node's database could take over as master.
    ///
    /// A replica whose master has gone (receiving thread not connected) is judged by whether
    /// it still applies what it received: that is exactly the node that must be able to win
    /// when the master dies, and promotion waits for the rest.
    pub fn gate(&self, max_lag: Duration) -> Result<(), NotReady> {
        if !self.up {
            return Err(NotReady::Down(
                self.error.clone().unwrap_or_else(|| "unreachable".into()),
            ));
        }
        let Some(r) = &self.replica else {
            return Ok(());
        };
        if !r.sql_running && !r.caught_up {
            let why = if r.last_sql_error.is_empty() {
                "SQL thread not running".to_string()
            } else {
                r.last_sql_error.clone()
            };
            return Err(NotReady::Broken(why));
        }
        if r.io_running
            && let Some(lag) = r.lag_secs
            && lag > max_lag.as_secs()
        {
            return Err(NotReady::Lagging {
                lag_secs: lag,
                max_secs: max_lag.as_secs(),
            });
        }
        Ok(())
    }
}

/// What a promotion did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promoted {
    /// Time spent waiting for the relay log to be applied.
    pub waited: Duration,
    /// The GTID position the node was promoted at (everything it had applied, which covers
    /// everything it had received).
    pub applied: String,
    /// It was a replica (false: it was already writable, nothing to stop).
    pub was_replica: bool,
    /// Each statement of the promotion and the instant it returned.
    pub steps: Vec<(&'static str, Mono)>,
}

/// What replicate_from did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replicating {
    pub master: IpAddr,
    /// It already replicated from this master over verified TLS; nothing was changed.
    pub unchanged: bool,
}

struct Session {
    conn: Conn,
    flavour: Flavour,
}

/// The local database server.
pub struct Db {
    cfg: DbConfig,
    ops: Mutex<Option<Session>>,
    probe: Mutex<Option<Session>>,
    /// Sessions to the master being observed.
    watch: cluster::Remote,
    /// Sessions to peers for prepare steps.
    peers: cluster::Remote,
    /// Sessions to peers for the look for a second writer.
    guard: cluster::Remote,
    /// Sessions that hold the opening lock on peers and on this server during a promotion
    /// and just after it, used for nothing else, so that dropping them all releases every
    /// lock this node may still hold.
    locks: cluster::Remote,
    /// Where the opening lock is still held after a promotion that opened, and the bound for
    /// releasing it on each server: released once the promotion is reported (see
    /// [`Db::release_opening_locks`]), so the VIP does not wait for a round trip to every peer.
    opened_locks: std::sync::Mutex<Option<(Vec<IpAddr>, Duration)>>,
    /// Host checks begun while a master's advert was overdue.
    early: cluster::EarlyChecks,
    /// What a draining prepare step made ready for the promotion expected next (see
    /// [`Db::prepare`]).
    ready: std::sync::Mutex<Option<cluster::Ready>>,
}

impl Db {
    /// A handle that connects on first use, so an agent can start while its database is down
    /// (and advertise a demoted skew until it is up).
    pub fn new(cfg: DbConfig) -> Db {
        Db {
            cfg,
            ops: Mutex::new(None),
            probe: Mutex::new(None),
            watch: cluster::Remote::default(),
            peers: cluster::Remote::default(),
            guard: cluster::Remote::default(),
            locks: cluster::Remote::default(),
            opened_locks: std::sync::Mutex::new(None),
            early: cluster::EarlyChecks::default(),
            ready: std::sync::Mutex::new(None),
        }
    }

    /// Connects now: fails if the server is unreachable or cannot prove its identity.
    pub async fn connect(cfg: DbConfig) -> Result<Db, DbError> {
        let db = Db::new(cfg);
        {
            let mut g = db.ops.lock().await;
            *g = Some(db.open(db.cfg.addr).await?);
        }
        Ok(db)
    }

    pub fn config(&self) -> &DbConfig {
        &self.cfg
    }

    /// The server's flavour, once connected.
    pub async fn flavour(&self) -> Result<Flavour, DbError> {
        let mut g = self.ops.lock().await;
        Ok(self.session(&mut g).await?.flavour)
    }

    async fn open(&self, addr: IpAddr) -> Result<Session, DbError> {
        let mut ssl = SslOpts::default()
            .with_root_certs(vec![self.cfg.ca.clone().into()])
            .with_disable_built_in_roots(true);
        if let (Some(cert), Some(key)) = (&self.cfg.client_cert, &self.cfg.client_key) {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        let opts = OptsBuilder::default()
            .ip_or_hostname(addr.to_string())
            .tcp_port(self.cfg.port)
            .user(Some(self.cfg.admin_user.clone()))
            .pass(Some(self.cfg.admin_password.expose().to_string()))
            .prefer_socket(false)
            .ssl_opts(ssl)
            .stmt_cache_size(0)
            // Known quoting rules for the literals in sql.rs; no implicit transactions.
            .init(vec!["SET SESSION sql_mode = 'TRADITIONAL', autocommit = 1"]);
        let connect = async {
            let mut conn = Conn::new(opts).await.map_err(|source| DbError::Connect {
                addr: format!("{addr}:{}", self.cfg.port),
                source,
            })?;
            let version: Option<String> = conn
                .query_first("SELECT VERSION()")
                .await
                .map_err(sql_err("SELECT VERSION()"))?;
            let version = version.ok_or_else(|| DbError::Protocol("no VERSION()".into()))?;
            let flavour = Flavour::from_version(&version);
            tracing::debug!(addr = %addr, %version, %flavour, "connected to database");
            Ok(Session { conn, flavour })
        };
        bounded("connect", self.cfg.op_timeout, connect).await
    }

    /// The session in `slot`, reopened if there is none or the one there no longer answers
    /// (the server restarted, or the network dropped it while idle): a role change must not
    /// fail on a connection that died before it began.
    async fn session<'a>(&self, slot: &'a mut Option<Session>) -> Result<&'a mut Session, DbError> {
        if let Some(s) = slot.as_mut() {
            let alive = tokio::time::timeout(self.cfg.op_timeout, s.conn.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            if !alive {
                tracing::debug!(addr = %self.cfg.addr, "database session lost; reconnecting");
                *slot = None;
            }
        }
        if slot.is_none() {
            *slot = Some(self.open(self.cfg.addr).await?);
        }
        Ok(slot.as_mut().expect("just opened"))
    }

    /// Runs `op` on the role-change session with a time bound, dropping the session if it
    /// fails (its state is unknown afterwards).
    async fn with_ops<T>(
        &self,
        what: &'static str,
        limit: Duration,
        op: impl AsyncFnOnce(&mut Session) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut g = self.ops.lock().await;
        let res = async {
            let s = self.session(&mut g).await?;
            bounded(what, limit, op(s)).await
        }
        .await;
        if res.is_err() {
            *g = None;
        }
        res
    }

    /// The server's state. Never fails: an unreachable server is `up: false` with the reason.
    pub async fn health(&self) -> Health {
        let mut g = self.probe.lock().await;
        let res = async {
            let s = self.session(&mut g).await?;
            bounded("health", self.cfg.op_timeout, read_health(s)).await
        }
        .await;
        match res {
            Ok(h) => h,
            Err(e) => {
                *g = None;
                Health::down(e.to_string())
            }
        }
    }

    /// Makes the local server the writable master.
    ///
    /// Waits up to `timeout` until everything received is applied (a relay log thrown away
    /// is acknowledged writes lost), stops applying, switches semi-sync master on (before the
    /// first write can arrive) and clears `read_only`; then removes the replication
    /// configuration ([`Db::forget_replication`]). On timeout nothing is changed: the caller
    /// stays BACKUP and the node goes on replicating.
    pub async fn promote(&self, timeout: Duration) -> Result<Promoted, DbError> {
        let limit = timeout + self.cfg.op_timeout;
        let res = self
            .with_ops("promote", limit, async |s| {
                promote(s, timeout, self.cfg.semi_sync_min).await
            })
            .await;
        match &res {
            Ok(p) => tracing::info!(
                waited_ms = p.waited.as_millis() as u64,
                applied = %p.applied,
                was_replica = p.was_replica,
                "database promoted: writable, semi-sync master on"
            ),
            Err(e) => tracing::warn!(error = %e, "database not promoted"),
        }
        if res.is_ok() {
            // Failure is logged there; the node is open either way.
            let _ = self.forget_replication().await;
        }
        res
    }

    /// After a promotion: stops the receiving thread and removes the replication
    /// configuration. Run after the node has opened, because stopping a receiver that is
    /// reconnecting to a dead master can take a second or two; applying stopped before the
    /// node opened, so nothing it receives meanwhile is applied.
    pub async fn forget_replication(&self) -> Result<(), DbError> {
        let start = Instant::now();
        let res = self
            .with_ops(
                "forget replication",
                self.cfg.op_timeout + Duration::from_secs(5),
                async |s| {
                    let f = s.flavour;
                    if read_replica(s).await?.is_none() {
                        return Ok(());
                    }
                    exec(&mut s.conn, f.stop_replica()).await?;
                    exec(&mut s.conn, f.reset_replica_all()).await
                },
            )
            .await;
        match &res {
            Ok(()) => tracing::debug!(
                elapsed_ms = start.elapsed().as_millis() as u64,
                "replication configuration removed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove the replication configuration after the promotion")
            }
        }
        res
    }

    /// Stops writes on the local server: ends client sessions (so none is left blocking the
    /// switch to read-only, nor writing when it returns), sets `read_only`, and ends sessions
    /// that arrived meanwhile. Returns how many sessions were ended.
    pub async fn fence(&self) -> Result<usize, DbError> {
        let (admin, repl) = (self.cfg.admin_user.clone(), self.cfg.repl_user.clone());
        let res = self
            .with_ops("fence", self.cfg.op_timeout, async |s| {
                fence(s, &admin, &repl).await
            })
            .await;
        match &res {
            Ok(killed) => tracing::info!(killed = *killed, "database fenced: read_only on"),
            Err(e) => tracing::warn!(error = %e, "fencing the database failed"),
        }
        res
    }

    /// The accounts, other than the agent's, replication's and the server's own local ones,
    /// that can write through `read_only` (see [`Flavour::read_only_bypass_accounts`]).
    pub async fn read_only_bypass_accounts(&self) -> Result<Vec<String>, DbError> {
        let own = [
            format!("{}@%", self.cfg.admin_user),
            format!("{}@%", self.cfg.repl_user),
            "root@localhost".to_string(),
            "mariadb.sys@localhost".to_string(),
            "mysql@localhost".to_string(),
        ];
        self.with_ops("list accounts", self.cfg.op_timeout, async |s| {
            let Some(stmt) = s.flavour.read_only_bypass_accounts() else {
                return Ok(Vec::new());
            };
            let rows: Vec<String> = s.conn.query(stmt).await.map_err(sql_err(stmt))?;
            Ok(rows.into_iter().filter(|a| !own.contains(a)).collect())
        })
        .await
    }

    /// The durability settings that differ from what acknowledged writes need (see
    /// [`super::settings`]). MariaDB only: MySQL's names and recovery differ, so it is not
    /// judged here.
    pub async fn unsafe_settings(&self) -> Result<Vec<String>, DbError> {
        self.with_ops("read settings", self.cfg.op_timeout, async |s| {
            if s.flavour != Flavour::MariaDb {
                return Ok(Vec::new());
            }
            let stmt = super::settings::select();
            let row: Option<Row> = s.conn.query_first(&stmt).await.map_err(sql_err(&stmt))?;
            let values: Vec<Option<String>> = row
                .map(|r| (0..r.len()).map(|i| value_string(r.as_ref(i))).collect())
                .unwrap_or_default();
            Ok(super::settings::deviations(&values))
        })
        .await
    }

    /// Replicates from the master at `master` (the source address of its adverts; the port is
    /// the cluster's).
    ///
    /// First fences, then compares GTID states: a node holding transactions the master lacks
    /// is refused with [`DbError::Errant`] and stays fenced; rejoining would silently diverge.
    /// Then GTID positioning from this node's own binary log position, TLS with the master's
    /// certificate verified, semi-sync replica on. Replication that comes up without TLS is
    /// stopped and reported, never accepted.
    pub async fn replicate_from(&self, master: IpAddr) -> Result<Replicating, DbError> {
        self.replicate(master, false).await
    }

    /// Replicates from the cluster's writer, as [`Db::replicate_from`], but only once its
    /// database is open for writes: a new master still applying what it received would make
    /// the errant-transaction check see transactions it is about to have as ours alone.
    pub async fn follow(&self, master: IpAddr) -> Result<Replicating, DbError> {
        self.replicate(master, true).await
    }

    async fn replicate(&self, master: IpAddr, writer: bool) -> Result<Replicating, DbError> {
        let master_state = self.source_state(master, writer).await?;
        self.replicate_knowing(master, &master_state).await
    }

    /// [`Db::replicate`] from `master`, whose logged state `master_state` was just read.
    pub(super) async fn replicate_knowing(
        &self,
        master: IpAddr,
        master_state: &str,
    ) -> Result<Replicating, DbError> {
        if master == self.cfg.addr {
            return Err(DbError::Protocol(format!(
                "refusing to replicate from this node's own address {master}"
            )));
        }
        let cfg = self.cfg.clone();
        let res = self
            .with_ops("replicate_from", self.cfg.op_timeout * 2, async |s| {
                replicate(s, &cfg, master, master_state).await
            })
            .await;
        match &res {
            Ok(r) => {
                tracing::info!(master = %master, unchanged = r.unchanged, "replicating over verified TLS")
            }
            Err(DbError::Errant { gtids, .. }) => {
                tracing::error!(master = %master, gtids = ?gtids, "errant transactions: refusing to replicate; staying fenced")
            }
            Err(e) => tracing::warn!(master = %master, error = %e, "replication not started"),
        }
        res
    }
}

async fn bounded<T>(
    what: &'static str,
    limit: Duration,
    f: impl Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| DbError::Timeout { what, limit })?
}

/// Maps a driver error to one naming the statement's first words only: a server's syntax
/// error quotes the statement, and a statement may hold a password.
fn sql_err(stmt: &str) -> impl FnOnce(mysql_async::Error) -> DbError + '_ {
    move |e| DbError::Sql {
        what: statement_name(stmt),
        message: match e {
            mysql_async::Error::Server(s) => format!("error {}: {}", s.code, s.message),
            other => other.to_string(),
        },
    }
}

/// A fixed name for a statement, for errors.
fn statement_name(stmt: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "SELECT VERSION()",
        "SHOW SLAVE STATUS",
        "SHOW SLAVE '",
        "SHOW REPLICA STATUS",
        "STOP SLAVE IO_THREAD",
        "STOP REPLICA IO_THREAD",
        "START SLAVE IO_THREAD",
        "START REPLICA IO_THREAD",
        "STOP SLAVE",
        "STOP REPLICA",
        "START SLAVE",
        "START REPLICA",
        "RESET SLAVE ALL",
        "RESET REPLICA ALL",
        "RESET SLAVE '",
        "STOP SLAVE '",
        "START SLAVE '",
        "SHOW ALL SLAVES STATUS",
        "CHANGE MASTER TO",
        "CHANGE MASTER '",
        "CHANGE REPLICATION SOURCE TO",
        "SELECT MASTER_GTID_WAIT",
        "SELECT WAIT_FOR_EXECUTED_GTID_SET",
        "SELECT GTID_SUBTRACT",
        "SELECT ID, USER FROM information_schema.PROCESSLIST",
        "KILL CONNECTION",
        "SET GLOBAL gtid_slave_pos",
        "SET GLOBAL read_only",
        "SET GLOBAL super_read_only",
        "SET GLOBAL rpl_semi_sync",
        "SHOW GLOBAL STATUS",
        "SELECT @@GLOBAL",
        "WITH RECURSIVE",
    ];
    NAMES
        .iter()
        .find(|n| stmt.starts_with(**n))
        .copied()
        .unwrap_or("statement")
}

async fn exec(conn: &mut Conn, stmt: &str) -> Result<(), DbError> {
    conn.query_drop(stmt).await.map_err(sql_err(stmt))
}

/// Sends `stmts` as one multi-statement query, in one round trip, and returns each one's rows
/// (none for a statement without a result set). The server runs them in order and stops at
/// the first that fails, so a later statement never runs after an earlier one failed: the
/// order of a promotion's steps holds as when each was sent alone. On a busy server every
/// round trip costs a promotion 0.3-1 ms.
async fn in_one_trip(conn: &mut Conn, stmts: &[&str]) -> Result<Vec<Vec<Row>>, DbError> {
    let joined = stmts.join("; ");
    // Each statement's result (its header, then its rows) is read in turn, and a failure
    // surfaces when the failed statement's result is read: name that statement.
    let first = stmts.first().copied().unwrap_or_default();
    let mut res = conn
        .query_iter(joined.as_str())
        .await
        .map_err(sql_err(first))?;
    let mut sets = Vec::with_capacity(stmts.len());
    for stmt in stmts {
        // A statement without a result set (a `SET`) gives no rows.
        sets.push(res.collect::<Row>().await.map_err(sql_err(stmt))?);
    }
    let last = stmts.last().copied().unwrap_or_default();
    res.drop_result().await.map_err(sql_err(last))?;
    Ok(sets)
}

async fn scalar(conn: &mut Conn, stmt: &str) -> Result<Option<String>, DbError> {
    let row: Option<Row> = conn.query_first(stmt).await.map_err(sql_err(stmt))?;
    Ok(row.and_then(|r| value_string(r.as_ref(0))))
}

fn value_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true)),
    }
}

fn col(row: &Row, name: &str) -> Option<String> {
    let idx = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str() == name)?;
    value_string(row.as_ref(idx))
}

fn is_on(v: Option<String>) -> bool {
    matches!(
        v.as_deref().map(str::to_ascii_uppercase).as_deref(),
        Some("1" | "ON" | "YES")
    )
}

async fn read_replica(s: &mut Session) -> Result<Option<ReplicaStatus>, DbError> {
    let stmt = s.flavour.show_replica_status();
    read_replica_by(s, stmt).await
}

/// The status `stmt` shows: the default connection's, or a named one's.
async fn read_replica_by(s: &mut Session, stmt: &str) -> Result<Option<ReplicaStatus>, DbError> {
    let applied = s.flavour.select_applied_pos();
    let mut sets = in_one_trip(&mut s.conn, &[stmt, applied]).await?;
    let applied = sets.pop().unwrap_or_default();
    let status = sets.pop().unwrap_or_default();
    replica_status(s, status, applied).await
}

/// The replica status from the rows of the status statement and of
/// [`Flavour::select_applied_pos`], read in the same round trip.
async fn replica_status(
    s: &mut Session,
    status: Vec<Row>,
    applied: Vec<Row>,
) -> Result<Option<ReplicaStatus>, DbError> {
    let f = s.flavour;
    // Multi-source replication would give several rows; the agent uses the default one.
    let Some(row) = status.into_iter().next() else {
        return Ok(None);
    };
    let c = |c: StatusCol| col(&row, f.col(c));
    let applied = applied
        .first()
        .and_then(|r| value_string(r.as_ref(0)))
        .unwrap_or_default();
    let io_pos = c(StatusCol::IoPos).unwrap_or_default();
    let caught_up = match f {
        Flavour::MariaDb => match (io_pos.parse::<GtidList>(), applied.parse::<GtidList>()) {
            (Ok(io), Ok(ap)) => ap.covers(&io),
            _ => false,
        },
        // MySQL: the executed set is a superset of the retrieved one once all is applied.
        Flavour::MySql => {
            let left = scalar(&mut s.conn, &Flavour::mysql_errant(&io_pos, &applied))
                .await?
                .unwrap_or_default();
            left.trim().is_empty()
        }
    };
    Ok(Some(ReplicaStatus {
        master_host: c(StatusCol::MasterHost).unwrap_or_default(),
        master_port: c(StatusCol::MasterPort)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        io_running: c(StatusCol::IoRunning).as_deref() == Some("Yes"),
        io_stopped: c(StatusCol::IoRunning).as_deref() == Some("No"),
        sql_running: c(StatusCol::SqlRunning).as_deref() == Some("Yes"),
        lag_secs: c(StatusCol::Lag).and_then(|l| l.parse().ok()),
        using_tls: is_on(c(StatusCol::SslAllowed)),
        verify_server_cert: is_on(c(StatusCol::SslVerify)),
        gtid_io_pos: io_pos,
        gtid_slave_pos: applied,
        caught_up,
        last_io_errno: c(StatusCol::LastIoErrno)
            .and_then(|e| e.parse().ok())
            .unwrap_or(0),
        last_io_error: c(StatusCol::LastIoError).unwrap_or_default(),
        last_sql_errno: c(StatusCol::LastSqlErrno)
            .and_then(|e| e.parse().ok())
            .unwrap_or(0),
        last_sql_error: c(StatusCol::LastSqlError).unwrap_or_default(),
    }))
}

async fn read_health(s: &mut Session) -> Result<Health, DbError> {
    let f = s.flavour;
    let read_only = is_on(scalar(&mut s.conn, f.select_read_only()).await?);
    let semi: Option<Row> = s
        .conn
        .query_first(f.semi_sync_master_status())
        .await
        .map_err(sql_err(f.semi_sync_master_status()))?;
    let semi_sync_master = is_on(semi.and_then(|r| value_string(r.as_ref(1))));
    let gtid_state = scalar(&mut s.conn, f.select_gtid_state())
        .await?
        .unwrap_or_default();
    let replica = read_replica(s).await?;
    Ok(Health {
        up: true,
        error: None,
        flavour: Some(f),
        read_only,
        semi_sync_master,
        gtid_state,
        replica,
    })
}

/// What draining replication did, for [`open_for_writes`].
struct Drained {
    waited: Duration,
    applied: String,
    was_replica: bool,
    steps: Vec<(&'static str, Mono)>,
}

/// Waits up to `timeout` until everything received is applied, then stops applying, so the
/// node holds a fixed, fully applied history it can open with.
///
/// The receiving thread is not waited for: stopping it can take a second or two when it is
/// reconnecting to a dead master (see [`Db::forget_replication`], which removes it once the
/// node is open). It must acknowledge nothing more, though: should the old master resume
/// (a paused machine), commits it acknowledged would count as safe while this node no longer
/// applies them. So semi-sync is switched off for its next connection, and its current
/// connection is ended (a receiver in the middle of connecting ignores that, but its next
/// connection is asynchronous). Everything it acknowledged before is in the relay log and is
/// applied before the node opens. On failure applying and acknowledging resume.
async fn drain_replication(s: &mut Session, timeout: Duration) -> Result<Drained, DbError> {
    let f = s.flavour;
    let start = Instant::now();
    let Some(r) = read_replica(s).await? else {
        return Ok(Drained {
            waited: Duration::ZERO,
            applied: String::new(),
            was_replica: false,
            steps: vec![("replication status read", Mono::now())],
        });
    };
    if !r.sql_running && !r.caught_up {
        return Err(DbError::ReplicationBroken(if r.last_sql_error.is_empty() {
            "SQL thread not running".into()
        } else {
            r.last_sql_error
        }));
    }
    let mut steps = vec![("replication status read", Mono::now())];
    let sets = in_one_trip(
        &mut s.conn,
        &[f.semi_sync_replica(false), f.select_io_threads()],
    )
    .await?;
    steps.push(("semi-sync replica off, receiver found", Mono::now()));
    let ids = sets
        .last()
        .into_iter()
        .flatten()
        .filter_map(|r| value_string(r.as_ref(0))?.parse::<u64>().ok());
    for id in ids {
        // Gone already is fine: the point is that it is gone.
        let _ = s.conn.query_drop(f.kill_connection(id)).await;
    }
    steps.push(("receiver acknowledges no more", Mono::now()));
    let res = apply_all_received(s, r, timeout, start, &mut steps).await;
    match res {
        Ok(applied) => Ok(Drained {
            waited: start.elapsed(),
            applied,
            was_replica: true,
            steps,
        }),
        Err(e) => {
            resume_replication(s).await;
            Err(e)
        }
    }
}

/// After a promotion that did not open: stay the replica this node was, applying, and
/// acknowledging after the receiver's next connection.
async fn resume_replication(s: &mut Session) {
    if let Err(e) = restart_replication(s).await {
        tracing::warn!(error = %e, "resuming replication after a promotion that did not open");
    }
}

/// Acknowledging on for the receiver's next connection, then both threads started (the
/// receiver was ended, the applier stopped); every statement is tried.
///
/// The receiver that was ended may still be on its way out: a semi-sync receiver whose
/// master is gone tries to end its dump thread there first, for up to
/// `rpl_semi_sync_slave_kill_conn_timeout`. Until it has exited the server counts it as
/// running, and `START` starts the applier alone; the receiver then exits, and the replica,
/// its applier running and its master unchanged, looked to a later rejoin like one that
/// replicates and was never restarted (chaos seed 20261220). Stopping the receiver waits
/// for that exit.
async fn restart_replication(s: &mut Session) -> Result<(), DbError> {
    let f = s.flavour;
    let ack = exec(&mut s.conn, f.semi_sync_replica(true)).await;
    let stopped = exec(&mut s.conn, f.stop_io_thread()).await;
    exec(&mut s.conn, f.start_replica()).await?;
    stopped.and(ack)
}

/// Applies what was received, stops the applier, and checks that nothing new arrived in
/// between (bounded rounds); returns the applied position.
async fn apply_all_received(
    s: &mut Session,
    mut r: ReplicaStatus,
    timeout: Duration,
    start: Instant,
    steps: &mut Vec<(&'static str, Mono)>,
) -> Result<String, DbError> {
    let f = s.flavour;
    for _ in 0..3 {
        if !r.gtid_io_pos.is_empty() {
            let left = timeout.saturating_sub(start.elapsed());
            let stmt = f.wait_applied(&r.gtid_io_pos, left);
            let res: Option<i64> = s.conn.query_first(&stmt).await.map_err(sql_err(&stmt))?;
            if !f.wait_succeeded(res) {
                let now = read_replica(s).await?.unwrap_or(r.clone());
                return Err(DbError::PromoteTimeout {
                    waited: start.elapsed(),
                    received: r.gtid_io_pos,
                    applied: now.gtid_slave_pos,
                });
            }
            steps.push(("relay log applied", Mono::now()));
        }
        // Stop and look in one round trip. Not with the wait: an applier that did not apply
        // in time may be blocked (on a lock), and stopping it would wait for it.
        let stmts = [
            f.stop_sql_thread(),
            f.show_replica_status(),
            f.select_applied_pos(),
        ];
        let mut sets = in_one_trip(&mut s.conn, &stmts).await?.into_iter().skip(1);
        let (status, applied) = (sets.next(), sets.next());
        let now = replica_status(s, status.unwrap_or_default(), applied.unwrap_or_default())
            .await?
            .unwrap_or(r.clone());
        steps.push(("applier stopped", Mono::now()));
        if now.caught_up {
            return Ok(now.gtid_slave_pos);
        }
        // Something was still on its way (the receiver had it before it ended, or its next
        // connection brought it): apply that too.
        exec(&mut s.conn, f.start_sql_thread()).await?;
        r = now;
    }
    Err(DbError::Protocol(
        "the old master is still sending: more kept arriving while the relay log was applied"
            .into(),
    ))
}

/// Semi-sync master on (before the first write can arrive), then `read_only` off: the last
/// step, so that any failure before it leaves the server fenced.
async fn open_for_writes(
    s: &mut Session,
    mut d: Drained,
    semi_sync_min: Option<Duration>,
) -> Result<Promoted, DbError> {
    let f = s.flavour;
    // Nothing may replicate into a master: a catch-up's connection that outlived it (its
    // stop timed out, or the agent died meanwhile) goes first, or the node stays closed.
    if !named_connections(s).await?.is_empty() {
        end_catch_up_connection(s).await;
        let left = named_connections(s).await?;
        if !left.is_empty() {
            return Err(DbError::Protocol(format!(
                "replication connections besides the default one are still configured ({}): not opening while they could replicate into this server",
                left.join(", ")
            )));
        }
    }
    // In one round trip, which stops at a failure: `read_only` stays on unless semi-sync is
    // on with its timeout raised.
    let raise = semi_sync_min.map(|min| f.raise_semi_sync_timeout(min));
    let mut stmts: Vec<&str> = raise.iter().map(String::as_str).collect();
    stmts.extend([f.semi_sync_master(true), f.read_only_off()]);
    in_one_trip(&mut s.conn, &stmts).await?;
    d.steps
        .push(("semi-sync master on, read_only off", Mono::now()));
    let applied = if d.applied.is_empty() {
        scalar(&mut s.conn, f.select_gtid_state())
            .await?
            .unwrap_or_default()
    } else {
        d.applied
    };
    Ok(Promoted {
        waited: d.waited,
        applied,
        was_replica: d.was_replica,
        steps: d.steps,
    })
}

async fn promote(
    s: &mut Session,
    timeout: Duration,
    semi_sync_min: Option<Duration>,
) -> Result<Promoted, DbError> {
    let drained = drain_replication(s, timeout).await?;
    open_for_writes(s, drained, semi_sync_min).await
}

/// Ends every session that is not the agent's, replication's or the server's own.
async fn kill_clients(s: &mut Session, admin: &str, repl: &str) -> Result<usize, DbError> {
    let f = s.flavour;
    let stmt = f.fence_victims(admin, repl);
    let victims: Vec<(u64, Option<String>)> = s.conn.query(&stmt).await.map_err(sql_err(&stmt))?;
    let mut killed = 0;
    for (id, user) in victims {
        match s.conn.query_drop(f.kill_connection(id)).await {
            Ok(()) => {
                killed += 1;
                tracing::info!(
                    id,
                    user = user.as_deref().unwrap_or(""),
                    "ended a client session while fencing"
                );
            }
            // Gone already (ER_NO_SUCH_THREAD).
            Err(mysql_async::Error::Server(e)) if e.code == 1094 => {}
            Err(e) => return Err(sql_err("KILL CONNECTION")(e)),
        }
    }
    Ok(killed)
}

async fn fence(s: &mut Session, admin: &str, repl: &str) -> Result<usize, DbError> {
    let f = s.flavour;
    let mut killed = kill_clients(s, admin, repl).await?;
    // Switching to read-only waits for running commits; a short lock wait keeps a client that
    // slipped in between from holding the fence up, and a new round ends it.
    exec(&mut s.conn, "SET SESSION lock_wait_timeout = 1").await?;
    let mut last = None;
    for _ in 0..3 {
        match exec(&mut s.conn, f.read_only_on()).await {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => {
                last = Some(e);
                killed += kill_clients(s, admin, repl).await?;
            }
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    killed += kill_clients(s, admin, repl).await?;
    Ok(killed)
}

/// Refuses with [`DbError::Errant`] if this node holds transactions that `master`, whose
/// logged state is `master_state`, lacks: replicating from it would silently diverge.
async fn refuse_errant(s: &mut Session, master: IpAddr, master_state: &str) -> Result<(), DbError> {
    let f = s.flavour;
    let local_state = scalar(&mut s.conn, f.select_gtid_state())
        .await?
        .unwrap_or_default();
    let errant: Vec<String> = match f {
        Flavour::MariaDb => {
            let local: GtidList = local_state
                .parse()
                .map_err(|e: gtid::GtidParseError| DbError::Protocol(e.to_string()))?;
            let master_l: GtidList = master_state
                .parse()
                .map_err(|e: gtid::GtidParseError| DbError::Protocol(e.to_string()))?;
            gtid::errant(&local, &master_l)
                .iter()
                .map(ToString::to_string)
                .collect()
        }
        Flavour::MySql => {
            let left = scalar(
                &mut s.conn,
                &Flavour::mysql_errant(&local_state, master_state),
            )
            .await?
            .unwrap_or_default();
            if left.trim().is_empty() {
                Vec::new()
            } else {
                vec![left.trim().to_string()]
            }
        }
    };
    if !errant.is_empty() {
        return Err(DbError::Errant {
            master,
            gtids: errant,
        });
    }
    Ok(())
}

/// Points replication (the default connection, or `connection`) at `source`: GTID
/// positioning, TLS with the source's certificate verified.
async fn point_at(
    s: &mut Session,
    cfg: &DbConfig,
    source: IpAddr,
    connection: Option<&str>,
) -> Result<(), DbError> {
    let ca = cfg.repl_ssl_ca.as_ref().unwrap_or(&cfg.ca);
    let cert = cfg.repl_ssl_cert.as_ref().or(cfg.client_cert.as_ref());
    let key = cfg.repl_ssl_key.as_ref().or(cfg.client_key.as_ref());
    let change = s.flavour.change_source(&ReplicationSource {
        connection,
        host: source,
        port: cfg.port,
        user: &cfg.repl_user,
        password: cfg.repl_password.expose(),
        ssl_ca: ca,
        ssl_cert: cert.map(|p| p.as_path()),
        ssl_key: key.map(|p| p.as_path()),
        connect_retry_secs: 1,
    });
    exec(&mut s.conn, &change).await.map_err(|e| {
        // The server may quote the statement back; never pass the password on.
        let pw = cfg.repl_password.expose();
        match e {
            DbError::Sql { what, message } => DbError::Sql {
                what,
                message: message.replace(pw, "<redacted>"),
            },
            other => other,
        }
    })
}

/// The named connection a catch-up replicates on (MariaDB), beside the default one.
const CATCH_UP_CONNECTION: &str = "catch_up";

/// MariaDB's answer to a statement naming a replication connection that does not exist.
const NO_SUCH_CONNECTION: &str = "error 1617:";

/// Stops and removes the catch-up's connection if there is one. Usually there is none and
/// the server says so; any other failure is logged, and [`open_for_writes`] refuses to open
/// while the connection remains.
async fn end_catch_up_connection(s: &mut Session) {
    let f = s.flavour;
    if f != Flavour::MariaDb {
        return;
    }
    for stmt in [
        f.stop_connection(CATCH_UP_CONNECTION),
        f.reset_connection_all(CATCH_UP_CONNECTION),
    ] {
        match exec(&mut s.conn, &stmt).await {
            Err(DbError::Sql { message, .. }) if message.starts_with(NO_SUCH_CONNECTION) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot end the catch-up's replication connection")
            }
            Ok(()) => {}
        }
    }
}

/// The replication connections besides the default one (MariaDB multi-source).
async fn named_connections(s: &mut Session) -> Result<Vec<String>, DbError> {
    if s.flavour != Flavour::MariaDb {
        return Ok(Vec::new());
    }
    let stmt = "SHOW ALL SLAVES STATUS";
    let rows: Vec<Row> = s.conn.query(stmt).await.map_err(sql_err(stmt))?;
    Ok(rows
        .iter()
        .filter_map(|r| col(r, "Connection_name"))
        .filter(|name| !name.is_empty())
        .collect())
}

/// Catches up from `source` on a replication connection of its own (MariaDB multi-source),
/// and removes it again. The default connection, to the master that went silent, is drained
/// first as a promotion drains it (its receiver killed, what it received applied, its
/// applier stopped) but not stopped with `STOP SLAVE`: a receiver that was semi-sync
/// connects to its master on the way out to end the dump thread there, and with the master
/// gone that waits `rpl_semi_sync_slave_kill_conn_timeout` (a second), which re-pointing the
/// default connection would spend before the catch-up could begin. The catch-up's own
/// connection ends against a live server, at once.
///
/// `Ok(false)`: not applicable, and the caller re-points the default connection instead:
/// another flavour, no default connection, one that already points at the source, one that
/// cannot be drained (left replicating as it was), or own writes logged beyond what was
/// applied (they need the default connection re-pointed from the furthest position).
async fn catch_up_beside(
    s: &mut Session,
    cfg: &DbConfig,
    (source, source_state): (IpAddr, &str),
    wait: &str,
    (timeout, start): (Duration, Instant),
    steps: &mut Vec<(&'static str, Mono)>,
) -> Result<bool, DbError> {
    let f = s.flavour;
    if f != Flavour::MariaDb {
        return Ok(false);
    }
    // The server refuses a second connection to the host and port the default one uses: when
    // the source is the master this node followed, replication already points at it.
    match read_replica(s).await? {
        None => return Ok(false),
        Some(r) if r.master_host == source.to_string() && r.master_port == cfg.port => {
            return Ok(false);
        }
        Some(_) => {}
    }
    exec(&mut s.conn, f.read_only_on()).await?;
    refuse_errant(s, source, source_state).await?;
    let parse = |p: Option<String>| {
        p.unwrap_or_default()
            .parse::<GtidList>()
            .map_err(|e: gtid::GtidParseError| DbError::Protocol(e.to_string()))
    };
    let logged = parse(scalar(&mut s.conn, "SELECT @@GLOBAL.gtid_binlog_pos").await?)?;
    let applied = parse(scalar(&mut s.conn, "SELECT @@GLOBAL.gtid_slave_pos").await?)?;
    if !applied.covers(&logged) {
        return Ok(false);
    }
    steps.push(("checked", Mono::now()));
    if let Err(error) = drain_replication(s, timeout.saturating_sub(start.elapsed())).await {
        tracing::warn!(%error, "cannot drain the replication from the old master; re-pointing it instead");
        return Ok(false);
    }
    steps.push(("old master's replication drained", Mono::now()));
    end_catch_up_connection(s).await;
    let caught_up = async {
        point_at(s, cfg, source, Some(CATCH_UP_CONNECTION)).await?;
        steps.push(("connection to the source set up", Mono::now()));
        exec(&mut s.conn, &f.start_connection(CATCH_UP_CONNECTION)).await?;
        steps.push(("connection started", Mono::now()));
        let status = f.show_connection_status(CATCH_UP_CONNECTION);
        let watch = (source, status.as_str());
        wait_caught_up(
            s,
            wait,
            timeout.saturating_sub(start.elapsed()),
            start,
            watch,
        )
        .await?;
        steps.push(("applied", Mono::now()));
        Ok(())
    }
    .await;
    // Whatever the outcome, the second source goes: the promotion reads the default
    // connection only, and nothing may replicate into a master. Stopping it must succeed.
    let ended = async {
        exec(&mut s.conn, &f.stop_connection(CATCH_UP_CONNECTION)).await?;
        steps.push(("connection stopped", Mono::now()));
        exec(&mut s.conn, &f.reset_connection_all(CATCH_UP_CONNECTION)).await?;
        steps.push(("connection removed", Mono::now()));
        Ok(())
    }
    .await;
    if let Err(e) = caught_up.and(ended) {
        // Stay the replica this node was, as a promotion that does not open does.
        resume_replication(s).await;
        return Err(e);
    }
    Ok(true)
}

/// How long one wait for a catch-up's position lasts before the connection's state is
/// looked at again.
const CATCH_UP_LOOK: Duration = Duration::from_millis(200);

/// Waits until the GTID position `wait` is applied, at most `limit` (`start` dates the
/// error's `waited`), while the replication connection from `source` whose status `status`
/// shows is looked at every [`CATCH_UP_LOOK`]: one whose receiver stopped on an error (a source
/// whose binary log lacks what its GTID state claims answers 1236) or whose applier stopped
/// will bring nothing more, and the catch-up fails at once with that error rather than after
/// the whole `promote-timeout`.
async fn wait_caught_up(
    s: &mut Session,
    wait: &str,
    limit: Duration,
    start: Instant,
    (source, status): (IpAddr, &str),
) -> Result<(), DbError> {
    let f = s.flavour;
    let began = Instant::now();
    // Bounded in count too: a server that answered every wait at once must not spin here.
    let looks = limit.as_millis() / CATCH_UP_LOOK.as_millis() + 1;
    for _ in 0..looks {
        let left = limit.saturating_sub(began.elapsed());
        let stmt = f.wait_applied(wait, left.min(CATCH_UP_LOOK));
        let res: Option<i64> = s.conn.query_first(&stmt).await.map_err(sql_err(&stmt))?;
        if f.wait_succeeded(res) {
            return Ok(());
        }
        if left <= CATCH_UP_LOOK {
            break;
        }
        if let Some(r) = read_replica_by(s, status).await? {
            if r.io_stopped && r.last_io_errno != 0 {
                return Err(DbError::ReplicaIo {
                    master: source,
                    errno: r.last_io_errno,
                    error: r.last_io_error,
                });
            }
            if !r.sql_running && r.last_sql_errno != 0 {
                return Err(DbError::ReplicationBroken(r.last_sql_error));
            }
        }
    }
    Err(DbError::PromoteTimeout {
        waited: start.elapsed(),
        received: wait.to_string(),
        applied: scalar(&mut s.conn, f.select_applied_pos())
            .await?
            .unwrap_or_default(),
    })
}

async fn replicate(
    s: &mut Session,
    cfg: &DbConfig,
    master: IpAddr,
    master_state: &str,
) -> Result<Replicating, DbError> {
    let f = s.flavour;
    exec(&mut s.conn, f.read_only_on()).await?;
    // Errant transactions first: nothing about replication changes if the node holds any.
    refuse_errant(s, master, master_state).await?;
    if let Some(r) = read_replica(s).await?
        && r.master_host == master.to_string()
        && r.master_port == cfg.port
        && r.io_running
        && r.sql_running
        && r.using_tls
        && r.verify_server_cert
    {
        return Ok(Replicating {
            master,
            unchanged: true,
        });
    }
    exec(&mut s.conn, f.stop_replica()).await?;
    if f == Flavour::MariaDb {
        // Start from the furthest of what this node has logged (including what it wrote as
        // master: those transactions are in the new master's log too, the errant check proved
        // it, and asking for them again would apply them twice) and what it has applied (a
        // node rebuilt from a dump has applied what it never logged).
        let binlog_pos = scalar(&mut s.conn, "SELECT @@GLOBAL.gtid_binlog_pos")
            .await?
            .unwrap_or_default();
        let slave_pos = scalar(&mut s.conn, "SELECT @@GLOBAL.gtid_slave_pos")
            .await?
            .unwrap_or_default();
        let parse = |p: &str| {
            p.parse::<GtidList>()
                .map_err(|e: gtid::GtidParseError| DbError::Protocol(e.to_string()))
        };
        let start = gtid::furthest(&parse(&binlog_pos)?, &parse(&slave_pos)?);
        let stmt = format!(
            "SET GLOBAL gtid_slave_pos = {}",
            super::sql::quote(&start.to_string())
        );
        exec(&mut s.conn, &stmt).await?;
    }
    exec(&mut s.conn, f.semi_sync_master(false)).await?;
    exec(&mut s.conn, f.semi_sync_replica(true)).await?;
    // A catch-up's own connection left by an interrupted promotion must not go on beside
    // this one.
    end_catch_up_connection(s).await;
    point_at(s, cfg, master, None).await?;
    exec(&mut s.conn, f.start_replica()).await?;
    let r = read_replica(s)
        .await?
        .ok_or_else(|| DbError::Protocol("no replica status after START".into()))?;
    if !r.using_tls || !r.verify_server_cert {
        let _ = exec(&mut s.conn, f.stop_replica()).await;
        return Err(DbError::NoTls { master });
    }
    // Bounded by the caller's time limit: the receiving thread connects or reports why not.
    let mut r = r;
    loop {
        if r.io_running {
            break;
        }
        if r.last_io_errno != 0 {
            return Err(DbError::ReplicaIo {
                master,
                errno: r.last_io_errno,
                error: r.last_io_error,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = read_replica(s)
            .await?
            .ok_or_else(|| DbError::Protocol("replica status vanished".into()))?;
    }
    Ok(Replicating {
        master,
        unchanged: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(io: bool, sql: bool, lag: Option<u64>, caught_up: bool) -> Health {
        Health {
            up: true,
            replica: Some(ReplicaStatus {
                io_running: io,
                sql_running: sql,
                lag_secs: lag,
                caught_up,
                ..ReplicaStatus::default()
            }),
            ..Health::default()
        }
    }

    #[test]
    fn gate_refuses_down_broken_and_lagging() {
        let max = Duration::from_secs(5);
        assert!(matches!(
            Health::down("x".into()).gate(max),
            Err(NotReady::Down(_))
        ));
        assert!(matches!(
            replica(true, false, None, false).gate(max),
            Err(NotReady::Broken(_))
        ));
        assert_eq!(
            replica(true, true, Some(9), false).gate(max),
            Err(NotReady::Lagging {
                lag_secs: 9,
                max_secs: 5
            })
        );
        assert_eq!(replica(true, true, Some(1), true).gate(max), Ok(()));
        // The master died: not receiving, but applying what it has.
        assert_eq!(replica(false, true, None, false).gate(max), Ok(()));
        let master = Health {
            up: true,
            ..Health::default()
        };
        assert_eq!(master.gate(max), Ok(()));
    }

    #[test]
    fn statement_names_never_carry_the_statement() {
        assert_eq!(
            statement_name("CHANGE MASTER TO MASTER_PASSWORD = 'x'"),
            "CHANGE MASTER TO"
        );
        assert_eq!(statement_name("anything else 'secret'"), "statement");
    }
}
