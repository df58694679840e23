//! The database follows the VIP: real MariaDB servers, one per node namespace, set up from
//! `cluster-agent db bootstrap`'s output, replicating over TLS with verified certificates, and
//! driven by the agent's own `db::Db` (promote, fence, replicate_from, health).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cluster_agent::db::gtid::Gtids;
use cluster_agent::db::sql::{Flavour, ReplicationSource};
use cluster_agent::db::{
    self, Bootstrap, BootstrapOptions, Db, DbConfig, DbError, Health, NotReady, Secret,
};
use tests::mariadb::{self, MariaDb, PORT};
use tests::{Proc, Rig, RigConfig, netns_test, wait_for, wait_timed, wait_until};

/// Replication normally delivers within milliseconds; this only bounds a broken run.
const REPLICATE: Duration = Duration::from_secs(20);
const APP_PASSWORD: &str = "app-test-password";

/// A tokio runtime whose threads live in one node's network namespace, so the agent's `Db`
/// connects from the node, as in production.
struct NodeRuntime {
    rt: tokio::runtime::Runtime,
}

impl NodeRuntime {
    fn new(rig: &Rig, node: usize) -> Result<NodeRuntime> {
        let ns = rig.ns(node).to_string();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .enable_all()
            // A thread outside the namespace would connect from the host: nothing to go on.
            .on_thread_start(move || {
                if let Err(e) = tests::netns::enter(&ns) {
                    panic!("{e:#}")
                }
            })
            .build()
            .context("building a runtime")?;
        Ok(NodeRuntime { rt })
    }

    fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Spawned, so that it runs on a worker thread (in the namespace), not this one.
        self.rt
            .block_on(self.rt.spawn(f))
            .expect("task on the node runtime panicked")
    }
}

/// A rig with a bootstrapped MariaDB on every node, users created, nothing replicating yet
/// (every server read-only, as bootstrap leaves it).
struct DbCluster {
    boot: Bootstrap,
    // Fields drop in order: servers and runtimes before the rig's namespaces go.
    servers: Vec<MariaDb>,
    runtimes: Vec<NodeRuntime>,
    dbs: Vec<Arc<Db>>,
    rig: Rig,
}

impl DbCluster {
    fn start(n: usize) -> Result<DbCluster> {
        // The agent library's logs, shown with a failing test's output (RUST_LOG to filter).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "cluster_agent=debug".into()),
            )
            .with_test_writer()
            .try_init();
        let t0 = Instant::now();
        let rig = Rig::new(RigConfig::nodes(n))?;
        let boot = bootstrap(&rig, "boot")?;
        let users = std::fs::read_to_string(&boot.users_sql).context("read users.sql")?;
        let mut servers = Vec::new();
        for (i, files) in boot.nodes.iter().enumerate() {
            let s = MariaDb::start(&rig, i, files.addr, &files.cnf)?;
            s.sql(&users)?;
            // The table and an application user, outside the binary log so that no server
            // holds a GTID the others lack.
            s.sql(&format!(
                "SET SESSION sql_log_bin = 0;\n\
                 CREATE DATABASE t;\n\
                 CREATE TABLE t.rows (id INT PRIMARY KEY, node VARCHAR(16)) ENGINE=InnoDB;\n\
                 CREATE USER 'app'@'localhost' IDENTIFIED BY '{APP_PASSWORD}';\n\
                 GRANT SELECT, INSERT, UPDATE, DELETE ON t.* TO 'app'@'localhost';\n"
            ))?;
            servers.push(s);
        }
        let runtimes = (0..n)
            .map(|i| NodeRuntime::new(&rig, i))
            .collect::<Result<_>>()?;
        let mut c = DbCluster {
            boot,
            servers,
            runtimes,
            dbs: Vec::new(),
            rig,
        };
        c.dbs = (0..n)
            .map(|i| Ok(Arc::new(Db::new(c.db_config(i)?))))
            .collect::<Result<_>>()?;
        eprintln!("{n} MariaDB servers up in {:?}", t0.elapsed());
        Ok(c)
    }

    fn server(&self, i: usize) -> &MariaDb {
        &self.servers[i]
    }

    fn addr(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.rig.addr(i))
    }

    /// The agent's settings for node `i`, as an operator writes them from bootstrap's output.
    fn db_config(&self, i: usize) -> Result<DbConfig> {
        let f = &self.boot.nodes[i];
        let mut c = DbConfig::new(
            f.addr,
            PORT,
            f.ca.clone(),
            Secret::from_file(&self.boot.admin_password_file).context("admin password")?,
            Secret::from_file(&self.boot.repl_password_file).context("replication password")?,
        );
        c.admin_user = self.boot.admin_user.clone();
        c.repl_user = self.boot.repl_user.clone();
        c.client_cert = Some(f.client_cert.clone());
        c.client_key = Some(f.client_key.clone());
        Ok(c)
    }

    /// Runs `f` with node `i`'s `Db`, in node `i`'s namespace.
    fn with<T, F, Fut>(&self, i: usize, f: F) -> T
    where
        F: FnOnce(Arc<Db>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtimes[i].run(f(self.dbs[i].clone()))
    }

    fn health(&self, i: usize) -> Health {
        self.with(i, |d| async move { d.health().await })
    }

    fn promote(&self, i: usize, timeout: Duration) -> Result<db::Promoted, DbError> {
        self.with(i, move |d| async move { d.promote(timeout).await })
    }

    fn fence(&self, i: usize) -> Result<usize, DbError> {
        self.with(i, |d| async move { d.fence().await })
    }

    fn replicate_from(&self, i: usize, master: usize) -> Result<db::Replicating, DbError> {
        let m = self.addr(master);
        self.with(i, move |d| async move { d.replicate_from(m).await })
    }

    fn app(&self, i: usize) -> Result<Command> {
        let mut c = self.servers[i].client(Some("app"))?;
        // The client reads it from the environment: never a password on a command line.
        c.env("MYSQL_PWD", APP_PASSWORD);
        Ok(c)
    }

    fn app_sql(&self, i: usize, sql: &str) -> Result<String> {
        mariadb::run_client(self.app(i)?, sql)
    }

    fn insert(&self, i: usize, ids: std::ops::RangeInclusive<i64>) -> Result<()> {
        for id in ids {
            self.app_sql(i, &format!("INSERT INTO t.rows VALUES ({id}, 'node{i}')"))
                .with_context(|| format!("insert {id} on node{i}"))?;
        }
        Ok(())
    }

    fn ids(&self, i: usize) -> Result<Vec<i64>> {
        self.servers[i]
            .sql("SELECT id FROM t.rows ORDER BY id")?
            .lines()
            .map(|l| Ok(l.trim().parse()?))
            .collect()
    }

    fn wait_ids(&self, i: usize, want: &[i64]) -> Result<Duration> {
        wait_until(REPLICATE, &format!("node{i} holds ids {want:?}"), || {
            Ok(self.ids(i)? == want)
        })
    }
}

fn bootstrap(rig: &Rig, dir: &str) -> Result<Bootstrap> {
    let nodes = (0..rig.node_count())
        .map(|i| db::NodeSpec {
            name: format!("node{i}"),
            addr: IpAddr::V4(rig.addr(i)),
        })
        .collect();
    db::bootstrap(&BootstrapOptions::new(rig.dir().join(dir), nodes)).context("db bootstrap")
}

fn range(a: i64, b: i64) -> Vec<i64> {
    (a..=b).collect()
}

/// Configures `replica` to replicate from `master` by hand (the way an operator would, with
/// the SQL the agent uses) over TLS, trusting `ca`, as the replication user.
fn change_master(c: &DbCluster, replica: usize, master: usize, ca: &std::path::Path) -> Result<()> {
    let pw = Secret::from_file(&c.boot.repl_password_file)?;
    change_master_as(c, replica, master, ca, &c.boot.repl_user, pw.expose())
}

/// As [`change_master`], as `user`.
fn change_master_as(
    c: &DbCluster,
    replica: usize,
    master: usize,
    ca: &std::path::Path,
    user: &str,
    pw: &str,
) -> Result<()> {
    let sql = Flavour::MariaDb.change_source(&ReplicationSource {
        connection: None,
        host: c.addr(master),
        port: PORT,
        user,
        password: pw,
        ssl_ca: ca,
        ssl_cert: Some(&c.boot.nodes[replica].client_cert),
        ssl_key: Some(&c.boot.nodes[replica].client_key),
        connect_retry_secs: 1,
    });
    restart_replication(c.server(replica), &sql)
}

/// Configures `replica` to replicate from `master` without TLS, as `user`.
fn change_master_plain(
    c: &DbCluster,
    replica: usize,
    master: usize,
    user: &str,
    pw: &str,
) -> Result<()> {
    let sql = format!(
        "CHANGE MASTER TO MASTER_HOST = '{}', MASTER_PORT = {PORT}, MASTER_USER = '{user}', \
         MASTER_PASSWORD = '{pw}', MASTER_USE_GTID = slave_pos, MASTER_SSL = 0, \
         MASTER_CONNECT_RETRY = 1",
        c.addr(master),
    );
    restart_replication(c.server(replica), &sql)
}

fn restart_replication(r: &MariaDb, change: &str) -> Result<()> {
    r.sql("STOP SLAVE; RESET SLAVE ALL")?;
    r.sql(change)?;
    r.sql("START SLAVE")?;
    Ok(())
}

/// Waits for the replica's receiving thread to report an error; returns it.
fn io_error(r: &MariaDb) -> Result<String> {
    wait_for(REPLICATE, "the replica reports a connection error", || {
        let st = r.slave_status()?;
        let errno: u32 = st
            .get("Last_IO_Errno")
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        Ok((errno != 0).then(|| st.get("Last_IO_Error").cloned().unwrap_or_default()))
    })
}

/// Sets the flag when dropped, so a helper thread ends however its scope is left.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn status_is(st: &BTreeMap<String, String>, k: &str, v: &str) -> bool {
    st.get(k).map(String::as_str) == Some(v)
}

#[test]
fn replication_runs_over_tls_with_a_verified_certificate() -> Result<()> {
    netns_test(|| {
        let c = DbCluster::start(2)?;
        c.server(0).sql("SET GLOBAL read_only = OFF")?;
        change_master(&c, 1, 0, &c.boot.nodes[1].ca)?;
        c.insert(0, 1..=20)?;
        let t = c.wait_ids(1, &range(1, 20))?;
        eprintln!("20 rows replicated over TLS within {t:?}");
        let st = c.server(1).slave_status()?;
        for (k, v) in [
            ("Slave_IO_Running", "Yes"),
            ("Slave_SQL_Running", "Yes"),
            ("Master_SSL_Allowed", "Yes"),
            ("Master_SSL_Verify_Server_Cert", "Yes"),
            ("Using_Gtid", "Slave_Pos"),
        ] {
            assert!(status_is(&st, k, v), "{k} is not {v}: {st:#?}");
        }
        // The master's replication session is the replication user's, and the server admits no
        // other kind of TCP session: require_secure_transport is on.
        assert_eq!(
            c.server(0)
                .scalar("SELECT @@require_secure_transport")?
                .as_deref(),
            Some("1")
        );
        assert_eq!(
        c.server(0)
            .scalar(
                "SELECT USER FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
            )?
            .as_deref(),
        Some(c.boot.repl_user.as_str())
    );
        // The replica is fenced: the application cannot write there.
        let err = c
            .app_sql(1, "INSERT INTO t.rows VALUES (1000, 'x')")
            .expect_err("a write on the read-only replica succeeded")
            .to_string();
        assert!(err.contains("read-only"), "unexpected error: {err}");
        Ok(())
    })
}

#[test]
fn replica_without_tls_or_trusting_another_ca_is_refused() -> Result<()> {
    netns_test(|| {
        let c = DbCluster::start(2)?;
        c.server(0).sql("SET GLOBAL read_only = OFF")?;
        c.insert(0, 1..=3)?;

        // No TLS, as the replication user: its account requires TLS.
        let pw = Secret::from_file(&c.boot.repl_password_file)?;
        change_master_plain(&c, 1, 0, &c.boot.repl_user, pw.expose())?;
        let err = io_error(c.server(1))?;
        eprintln!("without TLS, replication user: {err}");
        assert!(err.contains("Access denied"), "unexpected error: {err}");
        assert!(!status_is(
            &c.server(1).slave_status()?,
            "Slave_IO_Running",
            "Yes"
        ));

        // No TLS, as an account that would not require it: the server itself refuses
        // (require_secure_transport; MariaDB reports it as "Access denied"; that this account
        // connects over TLS is checked below).
        c.server(0).sql(
            "SET SESSION sql_log_bin = 0;\n\
         CREATE USER 'plain_repl'@'%' IDENTIFIED BY 'plain-pw';\n\
         GRANT REPLICATION SLAVE ON *.* TO 'plain_repl'@'%';",
        )?;
        change_master_plain(&c, 1, 0, "plain_repl", "plain-pw")?;
        let err = io_error(c.server(1))?;
        eprintln!("without TLS, account without REQUIRE SSL: {err}");
        assert!(
            err.contains("Access denied for user 'plain_repl'"),
            "unexpected error: {err}"
        );
        assert!(!status_is(
            &c.server(1).slave_status()?,
            "Slave_IO_Running",
            "Yes"
        ));
        assert!(c.ids(1)?.is_empty(), "rows arrived without TLS");

        // TLS, but trusting the CA of another cluster: the master's certificate fails verification.
        let other = bootstrap(&c.rig, "boot-other")?;
        change_master(&c, 1, 0, &other.ca_cert)?;
        let err = io_error(c.server(1))?;
        eprintln!("with another CA: {err}");
        let e = err.to_ascii_lowercase();
        assert!(
            e.contains("ssl") || e.contains("certificate") || e.contains("tls"),
            "unexpected error with another CA: {err}"
        );
        assert!(!status_is(
            &c.server(1).slave_status()?,
            "Slave_IO_Running",
            "Yes"
        ));
        assert!(
            c.ids(1)?.is_empty(),
            "rows arrived from an unverified master"
        );

        // The same replica, same account, over TLS with the cluster's CA connects: the refusals
        // above were about transport and trust, not the account.
        change_master_as(&c, 1, 0, &c.boot.nodes[1].ca, "plain_repl", "plain-pw")?;
        c.wait_ids(1, &range(1, 3))?;
        assert!(status_is(
            &c.server(1).slave_status()?,
            "Master_SSL_Allowed",
            "Yes"
        ));
        Ok(())
    })
}

#[test]
fn the_agent_promotes_fences_and_replicates_over_verified_tls() -> Result<()> {
    netns_test(|| {
        let c = DbCluster::start(2)?;
        let t0 = Instant::now();
        c.fence(0).context("fence node0")?;
        let p = c
            .promote(0, Duration::from_secs(5))
            .context("promote node0")?;
        eprintln!("promoted a non-replica in {:?}", t0.elapsed());
        assert!(!p.was_replica);
        let h0 = c.health(0);
        assert!(h0.up, "{h0:?}");
        assert_eq!(h0.flavour, Some(Flavour::MariaDb));
        assert!(!h0.read_only && h0.replica.is_none(), "{h0:?}");

        let r = c
            .replicate_from(1, 0)
            .context("node1 replicates from node0")?;
        assert!(!r.unchanged);
        // Asked again (as on every advert), it changes nothing.
        assert!(c.replicate_from(1, 0).context("again")?.unchanged);

        c.insert(0, 1..=10)?;
        c.wait_ids(1, &range(1, 10))?;
        let h1 = c.health(1);
        let rs = h1.replica.clone().context("node1 is a replica")?;
        assert!(h1.read_only, "{h1:?}");
        assert!(rs.io_running && rs.sql_running, "{rs:?}");
        assert!(rs.using_tls && rs.verify_server_cert, "{rs:?}");
        assert_eq!(rs.master_host, c.addr(0).to_string());
        assert!(rs.caught_up && !rs.gtid_io_pos.is_empty(), "{rs:?}");
        assert_eq!(h1.gate(Duration::from_secs(5)), Ok(()));
        // Semi-sync: the master sees its replica as a semi-sync client.
        wait_until(REPLICATE, "node0 has a semi-sync replica", || {
            Ok(c.server(0)
                .sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")?
                .trim()
                .ends_with('1'))
        })?;
        assert!(c.health(0).semi_sync_master);
        // Nothing secret in what status would show.
        let shown = format!("{h0:?}{h1:?}");
        for f in [&c.boot.repl_password_file, &c.boot.admin_password_file] {
            let pw = Secret::from_file(f)?;
            assert!(!shown.contains(pw.expose()), "a password in health output");
        }
        Ok(())
    })
}

/// Two nodes that both believe themselves master open at the same instant, each rechecking
/// the other just before it opens: the opening lock lets one open, and the other then finds
/// it writable (or the lock still taken) and stays read-only. Several rounds, since which node
/// wins and how the two interleave is a race.
#[test]
fn two_nodes_opening_at_once_leave_one_writer() -> Result<()> {
    netns_test(|| {
        let c = DbCluster::start(2)?;
        let open = |i: usize| {
            let (d, peer) = (c.dbs[i].clone(), c.rig.addr(1 - i));
            c.runtimes[i].rt.spawn(async move {
                let r = d
                    .promote_covering(
                        &Gtids::default(),
                        &[peer],
                        Duration::from_millis(250),
                        Duration::from_secs(5),
                    )
                    .await;
                // As the agent's operations task does once it has reported.
                d.release_opening_locks().await;
                r.map(drop).map_err(|e| e.to_string())
            })
        };
        for round in 0..5 {
            let (j0, j1) = (open(0), open(1));
            let r = [
                c.runtimes[0].rt.block_on(j0)?,
                c.runtimes[1].rt.block_on(j1)?,
            ];
            let opened: Vec<usize> = (0..2).filter(|&i| r[i].is_ok()).collect();
            assert_eq!(opened.len(), 1, "round {round}: {r:?}");
            let (winner, loser) = (opened[0], 1 - opened[0]);
            let why = r[loser].clone().unwrap_err();
            assert!(
                why.contains("became writable") || why.contains("opening lock"),
                "round {round}: node{loser} did not open for another reason: {why}"
            );
            assert!(!c.health(winner).read_only, "round {round}");
            assert!(c.health(loser).read_only, "round {round}");
            eprintln!("round {round}: node{winner} opened; node{loser}: {why}");
            c.fence(winner)
                .context("fence the winner for the next round")?;
        }
        Ok(())
    })
}

#[test]
fn fence_ends_writing_sessions_and_stops_writes() -> Result<()> {
    netns_test(|| {
        let c = DbCluster::start(1)?;
        c.promote(0, Duration::from_secs(5)).context("promote")?;
        c.insert(0, 1..=2)?;
        // A client in the middle of a write transaction, its session kept open.
        let mut cmd = c.app(0)?;
        cmd.arg("-e")
            .arg("BEGIN; INSERT INTO t.rows VALUES (100, 'open'); SELECT SLEEP(120); COMMIT;");
        let mut writer = Proc::spawn("app-writer", cmd, &c.rig.log_path("app-writer"))?;
        wait_until(REPLICATE, "the writing session is open", || {
            Ok(c.server(0)
                .scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'")?
                .as_deref()
                == Some("1"))
        })?;
        let t0 = Instant::now();
        let killed = c.fence(0).context("fence")?;
        eprintln!("fenced in {:?}, ended {killed} session(s)", t0.elapsed());
        assert!(killed >= 1, "no session ended");
        let st = writer.wait_exit(Duration::from_secs(10))?;
        assert!(!st.success(), "the writing session was not ended");
        assert_eq!(
            c.ids(0)?,
            vec![1, 2],
            "the open transaction survived the fence"
        );
        assert_eq!(
            c.server(0)
                .scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'")?
                .as_deref(),
            Some("0")
        );
        let err = c
            .app_sql(0, "INSERT INTO t.rows VALUES (3, 'late')")
            .expect_err("a write after the fence succeeded")
            .to_string();
        assert!(err.contains("read-only"), "unexpected error: {err}");
        assert!(c.health(0).read_only);
        Ok(())
    })
}

#[test]
fn promotion_waits_for_the_relay_log_and_lag_shows_in_health() -> Result<()> {
    netns_test(|| {
        let c = DbCluster::start(2)?;
        c.promote(0, Duration::from_secs(5))
            .context("promote node0")?;
        c.replicate_from(1, 0).context("node1 replicates")?;
        c.insert(0, 1..=5)?;
        c.wait_ids(1, &range(1, 5))?;

        // Hold the replica's applier back: a global read lock blocks its commits while the
        // receiving thread goes on.
        let mut hold = c.server(1).client(None)?;
        hold.arg("-e")
            .arg("FLUSH TABLES WITH READ LOCK; SELECT SLEEP(120);");
        let mut lock = Proc::spawn("replica-lock", hold, &c.rig.log_path("replica-lock"))?;
        wait_until(REPLICATE, "the read lock is held", || {
            Ok(c.server(1)
            .scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'")?
            .as_deref()
            == Some("1"))
        })?;
        c.insert(0, 6..=10)?;
        let (lag, t) = wait_timed(REPLICATE, "the replica reports lag of 2 s or more", || {
            let h = c.health(1);
            let r = h.replica.as_ref()?;
            (r.io_running && !r.caught_up && r.lag_secs.is_some_and(|l| l >= 2)).then_some(h)
        })?;
        eprintln!(
            "lag {:?} visible after {t:?}",
            lag.replica.as_ref().unwrap().lag_secs
        );
        assert!(matches!(
            lag.gate(Duration::from_secs(1)),
            Err(NotReady::Lagging { .. })
        ));
        assert_eq!(c.ids(1)?, range(1, 5));

        // Promotion cannot apply the rest in time: it refuses and leaves the replica as it was.
        let t0 = Instant::now();
        let err = c
            .promote(1, Duration::from_millis(500))
            .expect_err("promoted with an unapplied relay log");
        eprintln!("refused after {:?}: {err}", t0.elapsed());
        assert!(matches!(err, DbError::PromoteTimeout { .. }), "{err}");
        let h = c.health(1);
        assert!(
            h.read_only,
            "fenced state lost on a failed promotion: {h:?}"
        );
        let r = h.replica.expect("still a replica");
        assert_eq!(r.master_host, c.addr(0).to_string());

        // Released, it catches up; the gate opens, and promotion applies everything first.
        lock.kill();
        c.wait_ids(1, &range(1, 10))?;
        wait_until(REPLICATE, "the gate opens once caught up", || {
            c.health(1).gate(Duration::from_secs(1)).is_ok()
        })?;
        let p = c
            .promote(1, Duration::from_secs(5))
            .context("promote node1")?;
        assert!(p.was_replica);
        eprintln!("promoted a replica in {:?} of waiting", p.waited);
        let h = c.health(1);
        assert!(
            !h.read_only && h.replica.is_none() && h.semi_sync_master,
            "{h:?}"
        );
        assert_eq!(c.ids(1)?, range(1, 10));

        // The old master rejoins: fenced, replicating from the new one, the same rows.
        c.fence(0).context("fence node0")?;
        c.replicate_from(0, 1).context("node0 rejoins")?;
        c.insert(1, 11..=15)?;
        c.wait_ids(0, &range(1, 15))?;
        assert_eq!(c.ids(0)?, c.ids(1)?);
        Ok(())
    })
}

#[test]
fn errant_transactions_are_refused_and_listed() -> Result<()> {
    netns_test(|| {
        let c = DbCluster::start(2)?;
        c.promote(0, Duration::from_secs(5))
            .context("promote node0")?;
        c.replicate_from(1, 0).context("node1 replicates")?;
        c.insert(0, 1..=3)?;
        c.wait_ids(1, &range(1, 3))?;

        // node1 takes over; node0, cut off from it, still accepts two writes.
        c.promote(1, Duration::from_secs(5))
            .context("promote node1")?;
        c.insert(0, 100..=101)?;
        c.insert(1, 4..=5)?;

        c.fence(0).context("fence node0")?;
        let err = c
            .replicate_from(0, 1)
            .expect_err("node0 rejoined with errant transactions");
        let msg = err.to_string();
        eprintln!("refused: {msg}");
        let DbError::Errant { master, gtids } = &err else {
            panic!("not an errant-transaction error: {err}");
        };
        assert_eq!(*master, c.addr(1));
        // node0 is server 1; its two writes are GTIDs 0-1-4 and 0-1-5.
        assert_eq!(gtids, &vec!["0-1-4..5".to_string()]);
        assert!(msg.contains("0-1-4..5"));
        // Still fenced, not replicating, its rows as they were.
        let h = c.health(0);
        assert!(h.read_only && h.replica.is_none(), "{h:?}");
        assert_eq!(c.ids(0)?, vec![1, 2, 3, 100, 101]);
        assert_eq!(c.ids(1)?, range(1, 5));
        let pw = Secret::from_file(&c.boot.repl_password_file)?;
        assert!(!msg.contains(pw.expose()));
        Ok(())
    })
}

/// Semi-sync's promise, end to end: a client commits numbered rows on the master; the master
/// loses power mid-stream; the replica is promoted and holds every row the client saw
/// acknowledged; writes resume there; the old master returns, is fenced, rejoins and ends up
/// with exactly the same rows.
#[test]
fn failover_under_write_load_keeps_every_acknowledged_row() -> Result<()> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    netns_test(|| {
        let mut c = DbCluster::start(2)?;
        c.promote(0, Duration::from_secs(5))
            .context("promote node0")?;
        c.replicate_from(1, 0).context("node1 replicates")?;
        wait_until(REPLICATE, "node0 has a semi-sync replica", || {
            Ok(c.server(0)
                .sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")?
                .trim()
                .ends_with('1'))
        })?;

        let acked = Mutex::new(Vec::<i64>::new());
        let attempted = Mutex::new(0i64);
        let stop = AtomicBool::new(false);
        let t_fail = std::thread::scope(|s| {
            s.spawn(|| {
                // Bounded: the master dies long before this many rows.
                for id in 1..=100_000i64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    *attempted.lock().unwrap() = id;
                    match c.app_sql(0, &format!("INSERT INTO t.rows VALUES ({id}, 'load')")) {
                        Ok(_) => acked.lock().unwrap().push(id),
                        Err(_) => break,
                    }
                }
            });
            // The writer stops when the scenario ends, also when a wait below fails.
            let _stop = StopOnDrop(&stop);
            wait_until(REPLICATE, "50 rows acknowledged", || {
                acked.lock().unwrap().len() >= 50
            })?;
            let t = Instant::now();
            c.rig.power_cut(0)?;
            // The writer stops at its first failure; this only covers a writer still waiting.
            wait_until(REPLICATE, "the writer sees the master gone", || {
                let n = *attempted.lock().unwrap();
                acked.lock().unwrap().last().copied() != Some(n)
            })?;
            Ok::<_, anyhow::Error>(t)
        })?;
        let acked = acked.into_inner().unwrap();
        let attempted = attempted.into_inner().unwrap();
        eprintln!(
            "{} rows acknowledged, {attempted} attempted before the power failure",
            acked.len()
        );

        let p = c
            .promote(1, Duration::from_secs(10))
            .context("promote node1")?;
        eprintln!(
            "node1 promoted {:?} after the power failure (waited {:?} for its relay log)",
            t_fail.elapsed(),
            p.waited
        );
        let on_new = c.ids(1)?;
        let missing: Vec<i64> = acked
            .iter()
            .filter(|id| !on_new.contains(id))
            .copied()
            .collect();
        assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
        assert!(
            on_new.iter().all(|id| *id <= attempted),
            "rows nobody wrote: {on_new:?}"
        );
        // Writes resume on the new master.
        let next = attempted + 1;
        c.insert(1, next..=next + 9)?;

        // The old master comes back: fenced, rejoins, catches up, holds the same rows.
        c.rig.power_on(0)?;
        c.servers[0].restart()?;
        c.fence(0).context("fence the old master")?;
        c.replicate_from(0, 1).context("the old master rejoins")?;
        let want = c.ids(1)?;
        let t = c.wait_ids(0, &want)?;
        eprintln!("old master caught up {t:?} after rejoining");
        assert_eq!(c.ids(0)?, c.ids(1)?);
        assert!(c.health(0).read_only);
        Ok(())
    })
}
