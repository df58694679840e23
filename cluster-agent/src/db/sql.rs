//! The statements the agent sends, per server flavour. MariaDB and MySQL 8 agree on most of
//! what the agent needs but name it differently (SLAVE/MASTER against REPLICA/SOURCE, GTID
//! lists against GTID sets, the semi-sync variables), so every statement is built here, in one
//! place, from a [`Flavour`] picked from `SELECT VERSION()`.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Which SQL dialect the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    MariaDb,
    MySql,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavour::MariaDb => "MariaDB",
            Flavour::MySql => "MySQL",
        })
    }
}

impl Flavour {
    /// From the result of `SELECT VERSION()`: MariaDB says so in its version string (e.g.
    /// `10.11.6-MariaDB-0+deb12u1-log`); anything else is treated as MySQL.
    pub fn from_version(version: &str) -> Flavour {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavour::MariaDb
        } else {
            Flavour::MySql
        }
    }

    pub fn show_replica_status(self) -> &'static str {
        match self {
            Flavour::MariaDb => "SHOW SLAVE STATUS",
            Flavour::MySql => "SHOW REPLICA STATUS",
        }
    }

    /// Stops applying only. The receiving thread is left alone: stopping it waits for it,
    /// and a receiver in the middle of reconnecting to a dead master ignores the stop for up
    /// to `rpl_semi_sync_slave_kill_conn_timeout` (or STOP's own 2 s re-signal).
    pub fn stop_sql_thread(self) -> &'static str {
        match self {
            Flavour::MariaDb => "STOP SLAVE SQL_THREAD",
            Flavour::MySql => "STOP REPLICA SQL_THREAD",
        }
    }

    /// Stops receiving only, and returns once the receiving thread has exited.
    pub fn stop_io_thread(self) -> &'static str {
        match self {
            Flavour::MariaDb => "STOP SLAVE IO_THREAD",
            Flavour::MySql => "STOP REPLICA IO_THREAD",
        }
    }

    /// The connection ids of the threads receiving from the master.
    pub fn select_io_threads(self) -> &'static str {
        match self {
            Flavour::MariaDb => {
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Slave_IO'"
            }
            Flavour::MySql => {
                "SELECT PROCESSLIST_ID FROM performance_schema.threads WHERE NAME = 'thread/sql/replica_io'"
            }
        }
    }

    pub fn start_sql_thread(self) -> &'static str {
        match self {
            Flavour::MariaDb => "START SLAVE SQL_THREAD",
            Flavour::MySql => "START REPLICA SQL_THREAD",
        }
    }

    pub fn stop_replica(self) -> &'static str {
        match self {
            Flavour::MariaDb => "STOP SLAVE",
            Flavour::MySql => "STOP REPLICA",
        }
    }

    pub fn start_replica(self) -> &'static str {
        match self {
            Flavour::MariaDb => "START SLAVE",
            Flavour::MySql => "START REPLICA",
        }
    }

    pub fn reset_replica_all(self) -> &'static str {
        match self {
            Flavour::MariaDb => "RESET SLAVE ALL",
            Flavour::MySql => "RESET REPLICA ALL",
        }
    }

    /// Fences the server. MySQL's `super_read_only` also stops accounts with SUPER, which
    /// MariaDB's `read_only` already does for everyone without `READ_ONLY ADMIN`.
    pub fn read_only_on(self) -> &'static str {
        match self {
            Flavour::MariaDb => "SET GLOBAL read_only = ON",
            Flavour::MySql => "SET GLOBAL super_read_only = ON",
        }
    }

    /// Opens the server for writes (on MySQL this clears `super_read_only` too).
    pub fn read_only_off(self) -> &'static str {
        "SET GLOBAL read_only = OFF"
    }

    /// `SELECT @@read_only` reads the same on both.
    pub fn select_read_only(self) -> &'static str {
        "SELECT @@GLOBAL.read_only"
    }

    /// `read_only` and the logged GTID state in one statement: what a node about to replicate
    /// from a server needs of it (open for writes, and nothing this node holds that it lacks).
    pub fn select_source_state(self) -> &'static str {
        match self {
            Flavour::MariaDb => "SELECT @@GLOBAL.read_only, @@GLOBAL.gtid_binlog_state",
            Flavour::MySql => "SELECT @@GLOBAL.read_only, @@GLOBAL.gtid_executed",
        }
    }

    /// `read_only`, the logged GTID state and the replica status in one round trip (two
    /// statements, two result sets): a promotion asks this of each peer twice, before and
    /// just before it opens, and every round trip over TLS is time the service is down.
    pub fn select_standing(self) -> [&'static str; 2] {
        match self {
            Flavour::MariaDb => [
                "SELECT @@GLOBAL.read_only, @@GLOBAL.gtid_binlog_state",
                "SHOW SLAVE STATUS",
            ],
            Flavour::MySql => [
                "SELECT @@GLOBAL.read_only, @@GLOBAL.gtid_executed",
                "SHOW REPLICA STATUS",
            ],
        }
    }

    /// What the observation asks of the followed master, in one round trip (two statements):
    /// `read_only`, the semi-sync timeout and the logged GTID state, then the semi-sync
    /// counters. One round trip also means the master answered everything asked before the
    /// instant this was sent, which is when a master that did not answer went silent.
    pub fn select_master_standing(self) -> [&'static str; 2] {
        match self {
            Flavour::MariaDb => [
                "SELECT @@GLOBAL.read_only, @@GLOBAL.rpl_semi_sync_master_timeout, @@GLOBAL.gtid_binlog_state",
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_no_tx', 'Rpl_semi_sync_master_clients')",
            ],
            Flavour::MySql => [
                "SELECT @@GLOBAL.read_only, @@GLOBAL.rpl_semi_sync_source_timeout, @@GLOBAL.gtid_executed",
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_source_status', 'Rpl_semi_sync_source_no_tx', 'Rpl_semi_sync_source_clients')",
            ],
        }
    }

    pub fn semi_sync_master(self, on: bool) -> &'static str {
        match (self, on) {
            (Flavour::MariaDb, true) => "SET GLOBAL rpl_semi_sync_master_enabled = ON",
            (Flavour::MariaDb, false) => "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
            (Flavour::MySql, true) => "SET GLOBAL rpl_semi_sync_source_enabled = ON",
            (Flavour::MySql, false) => "SET GLOBAL rpl_semi_sync_source_enabled = OFF",
        }
    }

    /// Raises the semi-sync timeout to at least `min` (never lowers an operator's choice).
    pub fn raise_semi_sync_timeout(self, min: Duration) -> String {
        let var = match self {
            Flavour::MariaDb => "rpl_semi_sync_master_timeout",
            Flavour::MySql => "rpl_semi_sync_source_timeout",
        };
        format!(
            "SET GLOBAL {var} = GREATEST(@@GLOBAL.{var}, {})",
            min.as_millis()
        )
    }

    pub fn semi_sync_replica(self, on: bool) -> &'static str {
        match (self, on) {
            (Flavour::MariaDb, true) => "SET GLOBAL rpl_semi_sync_slave_enabled = ON",
            (Flavour::MariaDb, false) => "SET GLOBAL rpl_semi_sync_slave_enabled = OFF",
            (Flavour::MySql, true) => "SET GLOBAL rpl_semi_sync_replica_enabled = ON",
            (Flavour::MySql, false) => "SET GLOBAL rpl_semi_sync_replica_enabled = OFF",
        }
    }

    /// Whether this server is acting as a semi-sync master right now (it falls back to
    /// asynchronous on a timeout): one row, the status variable's name and `ON`/`OFF`.
    pub fn semi_sync_master_status(self) -> &'static str {
        match self {
            Flavour::MariaDb => "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'",
            Flavour::MySql => "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_source_status'",
        }
    }

    /// The master side of semi-sync: rows of (name, value) for the status (`ON`/`OFF`), the
    /// commits acknowledged without a replica, and the replicas connected.
    pub fn semi_sync_master_counters(self) -> &'static str {
        match self {
            Flavour::MariaDb => {
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_no_tx', 'Rpl_semi_sync_master_clients')"
            }
            Flavour::MySql => {
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_source_status', 'Rpl_semi_sync_source_no_tx', 'Rpl_semi_sync_source_clients')"
            }
        }
    }

    /// How long a semi-sync master waits for a replica (milliseconds).
    pub fn select_semi_sync_timeout(self) -> &'static str {
        match self {
            Flavour::MariaDb => "SELECT @@GLOBAL.rpl_semi_sync_master_timeout",
            Flavour::MySql => "SELECT @@GLOBAL.rpl_semi_sync_source_timeout",
        }
    }

    /// Every transaction this server has logged: the state whose comparison with the
    /// master's finds errant transactions.
    pub fn select_gtid_state(self) -> &'static str {
        match self {
            Flavour::MariaDb => "SELECT @@GLOBAL.gtid_binlog_state",
            Flavour::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// Blocks until the GTID position `pos` is applied; returns 0 then, else (timeout) -1 on
    /// MariaDB and 1 on MySQL. See [`Flavour::wait_succeeded`].
    pub fn wait_applied(self, pos: &str, timeout: Duration) -> String {
        let secs = timeout.as_secs_f64();
        match self {
            Flavour::MariaDb => format!("SELECT MASTER_GTID_WAIT({}, {secs:.3})", quote(pos)),
            Flavour::MySql => {
                format!(
                    "SELECT WAIT_FOR_EXECUTED_GTID_SET({}, {secs:.3})",
                    quote(pos)
                )
            }
        }
    }

    pub fn wait_succeeded(self, result: Option<i64>) -> bool {
        result == Some(0)
    }

    /// The local transactions a master whose state is `master_state` lacks (MySQL only: the
    /// server does the set arithmetic; for MariaDB see [`super::gtid::errant`]).
    pub fn mysql_errant(local_state: &str, master_state: &str) -> String {
        format!(
            "SELECT GTID_SUBTRACT({}, {})",
            quote(local_state),
            quote(master_state)
        )
    }

    /// Connections to end when fencing: every one but this session, the agent's and
    /// replication's own, the server's internal threads, and connections still in their
    /// handshake. Those cannot hold a transaction or a lock, and once logged in they meet
    /// `read_only`; ending them would end a peer agent's connection, mid-handshake, as it
    /// comes to prepare its promotion after our bow-out, and cost it a retry.
    pub fn fence_victims(self, admin_user: &str, repl_user: &str) -> String {
        format!(
            "SELECT ID, USER FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() \
             AND USER NOT IN ({}, {}, 'system user', 'event_scheduler', 'unauthenticated user') \
             AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID', 'Slave_IO', 'Slave_SQL', 'Slave_worker')",
            quote(admin_user),
            quote(repl_user)
        )
    }

    /// Accounts that can write through `read_only` (`user@host`, one per row), directly or
    /// through a role: READ_ONLY ADMIN, or SUPER granted before 10.11, or ALL on `*.*`.
    /// Fencing cannot stop them; `status` names them. MariaDB only (MySQL's `super_read_only`
    /// stops everyone): `None` for MySQL.
    pub fn read_only_bypass_accounts(self) -> Option<&'static str> {
        match self {
            Flavour::MariaDb => Some(
                "WITH RECURSIVE \
                 p AS (SELECT User, Host, CAST(JSON_VALUE(Priv, '$.access') AS UNSIGNED) acc, \
                   CAST(IFNULL(JSON_VALUE(Priv, '$.version_id'), 0) AS UNSIGNED) ver, \
                   IFNULL(JSON_VALUE(Priv, '$.is_role'), 'false') IN ('true', '1') is_role \
                   FROM mysql.global_priv), \
                 d AS (SELECT User, Host, is_role FROM p \
                   WHERE (acc & (1 << 33)) <> 0 OR ((acc & (1 << 15)) <> 0 AND ver < 101100)), \
                 r AS (SELECT User AS role FROM d WHERE is_role \
                   UNION SELECT m.User FROM mysql.roles_mapping m JOIN r ON m.Role = r.role WHERE m.Host = '') \
                 SELECT CONCAT(User, '@', Host) FROM d WHERE NOT is_role \
                 UNION SELECT CONCAT(m.User, '@', m.Host) FROM mysql.roles_mapping m \
                   JOIN r ON m.Role = r.role WHERE m.Host <> ''",
            ),
            Flavour::MySql => None,
        }
    }

    pub fn kill_connection(self, id: u64) -> String {
        format!("KILL CONNECTION {id}")
    }

    /// Column names in the replica status, which MySQL 8 renamed.
    pub fn col(self, c: StatusCol) -> &'static str {
        use StatusCol::*;
        match (self, c) {
            (Flavour::MariaDb, MasterHost) => "Master_Host",
            (Flavour::MySql, MasterHost) => "Source_Host",
            (Flavour::MariaDb, MasterPort) => "Master_Port",
            (Flavour::MySql, MasterPort) => "Source_Port",
            (Flavour::MariaDb, IoRunning) => "Slave_IO_Running",
            (Flavour::MySql, IoRunning) => "Replica_IO_Running",
            (Flavour::MariaDb, SqlRunning) => "Slave_SQL_Running",
            (Flavour::MySql, SqlRunning) => "Replica_SQL_Running",
            (Flavour::MariaDb, Lag) => "Seconds_Behind_Master",
            (Flavour::MySql, Lag) => "Seconds_Behind_Source",
            (Flavour::MariaDb, SslAllowed) => "Master_SSL_Allowed",
            (Flavour::MySql, SslAllowed) => "Source_SSL_Allowed",
            (Flavour::MariaDb, SslVerify) => "Master_SSL_Verify_Server_Cert",
            (Flavour::MySql, SslVerify) => "Source_SSL_Verify_Server_Cert",
            (Flavour::MariaDb, IoPos) => "Gtid_IO_Pos",
            (Flavour::MySql, IoPos) => "Retrieved_Gtid_Set",
            (_, LastIoErrno) => "Last_IO_Errno",
            (_, LastIoError) => "Last_IO_Error",
            (_, LastSqlErrno) => "Last_SQL_Errno",
            (_, LastSqlError) => "Last_SQL_Error",
        }
    }

    /// Where the replica has applied up to.
    pub fn select_applied_pos(self) -> &'static str {
        match self {
            Flavour::MariaDb => "SELECT @@GLOBAL.gtid_slave_pos",
            Flavour::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }
}

/// The replica-status columns the agent reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCol {
    MasterHost,
    MasterPort,
    IoRunning,
    SqlRunning,
    Lag,
    SslAllowed,
    SslVerify,
    IoPos,
    LastIoErrno,
    LastIoError,
    LastSqlErrno,
    LastSqlError,
}

/// Everything `CHANGE MASTER TO` / `CHANGE REPLICATION SOURCE TO` needs.
#[derive(Clone, Debug)]
pub struct ReplicationSource<'a> {
    /// A named replication connection (MariaDB) or channel (MySQL) beside the default one.
    pub connection: Option<&'a str>,
    pub host: IpAddr,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
    /// CA the replica verifies the master's certificate against, as a path on the replica's
    /// server host.
    pub ssl_ca: &'a Path,
    /// Client certificate and key the replica presents, if any.
    pub ssl_cert: Option<&'a Path>,
    pub ssl_key: Option<&'a Path>,
    /// Seconds between reconnection attempts; a new master should be found within one.
    pub connect_retry_secs: u32,
}

impl Flavour {
    /// Points replication at `src`: GTID positioning, TLS required, the server certificate
    /// verified against the CA and the address dialled. The result holds the password: never
    /// log it or put it in an error.
    pub fn change_source(self, src: &ReplicationSource<'_>) -> String {
        let (kw, use_gtid) = match self {
            Flavour::MariaDb => ("MASTER", "MASTER_USE_GTID = slave_pos"),
            Flavour::MySql => ("SOURCE", "SOURCE_AUTO_POSITION = 1"),
        };
        let head = match (self, src.connection) {
            (Flavour::MariaDb, Some(name)) => format!("CHANGE MASTER {} TO", quote(name)),
            (Flavour::MariaDb, None) => "CHANGE MASTER TO".to_string(),
            (Flavour::MySql, _) => "CHANGE REPLICATION SOURCE TO".to_string(),
        };
        let mut s = format!(
            "{head} {kw}_HOST = {host}, {kw}_PORT = {port}, {kw}_USER = {user}, \
             {kw}_PASSWORD = {pw}, {use_gtid}, {kw}_CONNECT_RETRY = {retry}, \
             {kw}_SSL = 1, {kw}_SSL_CA = {ca}, {kw}_SSL_VERIFY_SERVER_CERT = 1",
            host = quote(&src.host.to_string()),
            port = src.port,
            user = quote(src.user),
            pw = quote(src.password),
            retry = src.connect_retry_secs.max(1),
            ca = quote(&src.ssl_ca.display().to_string()),
        );
        if let Some(cert) = src.ssl_cert {
            s.push_str(&format!(
                ", {kw}_SSL_CERT = {}",
                quote(&cert.display().to_string())
            ));
        }
        if let Some(key) = src.ssl_key {
            s.push_str(&format!(
                ", {kw}_SSL_KEY = {}",
                quote(&key.display().to_string())
            ));
        }
        if let (Flavour::MySql, Some(name)) = (self, src.connection) {
            s.push_str(&format!(" FOR CHANNEL {}", quote(name)));
        }
        s
    }

    /// Starts both threads of the named connection `name`.
    pub fn start_connection(self, name: &str) -> String {
        match self {
            Flavour::MariaDb => format!("START SLAVE {}", quote(name)),
            Flavour::MySql => format!("START REPLICA FOR CHANNEL {}", quote(name)),
        }
    }

    /// The status of one named replication connection.
    pub fn show_connection_status(self, name: &str) -> String {
        match self {
            Flavour::MariaDb => format!("SHOW SLAVE {} STATUS", quote(name)),
            Flavour::MySql => format!("SHOW REPLICA STATUS FOR CHANNEL {}", quote(name)),
        }
    }

    pub fn stop_connection(self, name: &str) -> String {
        match self {
            Flavour::MariaDb => format!("STOP SLAVE {}", quote(name)),
            Flavour::MySql => format!("STOP REPLICA FOR CHANNEL {}", quote(name)),
        }
    }

    /// Removes the named connection with its relay logs.
    pub fn reset_connection_all(self, name: &str) -> String {
        match self {
            Flavour::MariaDb => format!("RESET SLAVE {} ALL", quote(name)),
            Flavour::MySql => format!("RESET REPLICA ALL FOR CHANNEL {}", quote(name)),
        }
    }
}

/// A single-quoted SQL string literal. The agent's sessions run without
/// `NO_BACKSLASH_ESCAPES` (it sets its own `sql_mode`), so backslashes are escaped too.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        match c {
            '\'' => q.push_str("''"),
            '\\' => q.push_str("\\\\"),
            '\0' => q.push_str("\\0"),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standing_query_reads_what_its_parts_read() {
        for f in [Flavour::MariaDb, Flavour::MySql] {
            let [select, show] = f.select_standing();
            let var = |s: &'static str| s.strip_prefix("SELECT ").unwrap();
            assert_eq!(
                select,
                format!(
                    "SELECT {}, {}",
                    var(f.select_read_only()),
                    var(f.select_gtid_state())
                )
            );
            assert_eq!(show, f.show_replica_status());
            let [select, show] = f.select_master_standing();
            assert_eq!(
                select,
                format!(
                    "SELECT {}, {}, {}",
                    var(f.select_read_only()),
                    var(f.select_semi_sync_timeout()),
                    var(f.select_gtid_state())
                )
            );
            assert_eq!(show, f.semi_sync_master_counters());
        }
    }

    #[test]
    fn flavour_from_version() {
        assert_eq!(
            Flavour::from_version("10.11.6-MariaDB-0+deb12u1-log"),
            Flavour::MariaDb
        );
        assert_eq!(Flavour::from_version("8.0.36"), Flavour::MySql);
        assert_eq!(Flavour::from_version("8.4.0-commercial"), Flavour::MySql);
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
    }

    fn src() -> ReplicationSource<'static> {
        ReplicationSource {
            connection: None,
            host: "10.0.0.1".parse().unwrap(),
            port: 3306,
            user: "repl",
            password: "pw'x",
            ssl_ca: Path::new("/etc/ca.pem"),
            ssl_cert: Some(Path::new("/etc/c.pem")),
            ssl_key: Some(Path::new("/etc/k.pem")),
            connect_retry_secs: 1,
        }
    }

    #[test]
    fn mariadb_change_master_uses_gtid_and_verified_tls() {
        let s = Flavour::MariaDb.change_source(&src());
        assert!(s.starts_with("CHANGE MASTER TO MASTER_HOST = '10.0.0.1', MASTER_PORT = 3306"));
        for want in [
            "MASTER_USE_GTID = slave_pos",
            "MASTER_SSL = 1",
            "MASTER_SSL_CA = '/etc/ca.pem'",
            "MASTER_SSL_VERIFY_SERVER_CERT = 1",
            "MASTER_SSL_CERT = '/etc/c.pem'",
            "MASTER_SSL_KEY = '/etc/k.pem'",
            "MASTER_PASSWORD = 'pw''x'",
        ] {
            assert!(s.contains(want), "{want} missing from {s}");
        }
    }

    #[test]
    fn a_named_connection_is_addressed_by_its_name() {
        let named = ReplicationSource {
            connection: Some("catch_up"),
            ..src()
        };
        let s = Flavour::MariaDb.change_source(&named);
        assert!(s.starts_with("CHANGE MASTER 'catch_up' TO MASTER_HOST = '10.0.0.1'"));
        assert!(s.contains("MASTER_SSL_VERIFY_SERVER_CERT = 1"));
        let s = Flavour::MySql.change_source(&named);
        assert!(s.ends_with(" FOR CHANNEL 'catch_up'"), "{s}");
        assert_eq!(
            Flavour::MariaDb.start_connection("catch_up"),
            "START SLAVE 'catch_up'"
        );
        assert_eq!(
            Flavour::MariaDb.stop_connection("catch_up"),
            "STOP SLAVE 'catch_up'"
        );
        assert_eq!(
            Flavour::MariaDb.reset_connection_all("catch_up"),
            "RESET SLAVE 'catch_up' ALL"
        );
    }

    #[test]
    fn mysql_uses_its_own_syntax() {
        let s = Flavour::MySql.change_source(&src());
        assert!(s.starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST = '10.0.0.1'"));
        assert!(s.contains("SOURCE_AUTO_POSITION = 1"));
        assert!(s.contains("SOURCE_SSL_VERIFY_SERVER_CERT = 1"));
        assert!(!s.contains("MASTER"));
        assert_eq!(Flavour::MySql.show_replica_status(), "SHOW REPLICA STATUS");
        assert_eq!(Flavour::MySql.reset_replica_all(), "RESET REPLICA ALL");
        assert!(
            Flavour::MySql
                .wait_applied("u:1-5", Duration::from_millis(1500))
                .contains("WAIT_FOR_EXECUTED_GTID_SET('u:1-5', 1.500)")
        );
        assert_eq!(
            Flavour::MySql.semi_sync_master(true),
            "SET GLOBAL rpl_semi_sync_source_enabled = ON"
        );
        assert_eq!(Flavour::MySql.col(StatusCol::Lag), "Seconds_Behind_Source");
    }

    #[test]
    fn mariadb_wait_and_fence_statements() {
        assert_eq!(
            Flavour::MariaDb.wait_applied("0-1-5", Duration::from_secs(2)),
            "SELECT MASTER_GTID_WAIT('0-1-5', 2.000)"
        );
        let f = Flavour::MariaDb.fence_victims("agent", "repl");
        assert!(f.contains("USER NOT IN ('agent', 'repl'"));
        assert!(f.contains("ID <> CONNECTION_ID()"));
        assert!(f.contains("'unauthenticated user')"));
    }
}
