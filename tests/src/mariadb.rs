//! Real MariaDB servers for the database tests: one `mariadbd` per node namespace, listening
//! on the node's address with the TLS settings, certificates and users that
//! `cluster_agent::db::bootstrap` generates, each with its own data directory and socket.
//!
//! Data directories are copied from a template made once by `mariadb-install-db` and kept in
//! the target directory (a build cache like any other), since a fresh installation takes
//! seconds and a copy milliseconds.
//!
//! Tests talk to a server as `root` over its Unix socket with the `mariadb` client (setting
//! up, writing rows, inspecting); statements go to the client's stdin, never its command line.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::cmd;
use crate::proc::Proc;
use crate::rig::Rig;
use crate::wait::wait_until;

/// Every server listens on this port (each in its own namespace).
pub const PORT: u16 = 3306;
/// How long a server may take to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one `mariadb` client call.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

fn mariadbd_bin() -> PathBuf {
    ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("`mariadbd` is not installed (Debian package mariadb-server); the database tests need it")
}

/// The `mariadb` command-line client.
pub fn client_bin() -> PathBuf {
    ["/usr/bin/mariadb", "/usr/bin/mysql"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("the `mariadb` client is not installed (Debian package mariadb-client)")
}

/// The template data directory, made once per machine (and per server version).
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let version = cmd::run(Command::new(mariadbd_bin()).arg("--version"));
        let tag: String = version
            .split_whitespace()
            .nth(2)
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .collect();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::env::workspace_root().join("target"));
        let dir = target
            .join("test-cache")
            .join(format!("mariadb-datadir-{tag}"));
        if dir.join("mysql").is_dir() {
            return dir;
        }
        // Built aside and renamed into place, so parallel test processes never see half a
        // template.
        let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.parent().expect("parent")).expect("create test cache");
        let out = cmd::output(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", tmp.display()))
                .arg("--user=root")
                .arg("--auth-root-authentication-method=socket")
                .arg("--skip-test-db")
                .arg("--innodb-log-file-size=4M")
                .arg("--innodb-buffer-pool-size=16M"),
        );
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process won the race; its template is as good as ours.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        assert!(
            dir.join("mysql").is_dir(),
            "no template at {}",
            dir.display()
        );
        dir
    })
}

/// One `mariadbd` in one node of a rig.
pub struct MariaDb {
    ns: String,
    node: usize,
    addr: IpAddr,
    dir: PathBuf,
    socket: PathBuf,
    cnf: PathBuf,
    log_dir: PathBuf,
    proc: Option<Proc>,
}

impl MariaDb {
    /// Starts a server in node `node` of `rig`, listening on `addr` with the settings of
    /// `node_cnf` (the node's `cluster-agent.cnf` from bootstrap) included, on a fresh copy of
    /// the template data directory, and waits until it answers.
    pub fn start(rig: &Rig, node: usize, addr: IpAddr, node_cnf: &Path) -> MariaDb {
        MariaDb::start_with(rig, node, addr, node_cnf, "")
    }

    /// As [`MariaDb::start`], with `overrides` (option lines) after the node's settings.
    pub fn start_with(
        rig: &Rig,
        node: usize,
        addr: IpAddr,
        node_cnf: &Path,
        overrides: &str,
    ) -> MariaDb {
        let dir = rig.dir().join(format!("mariadb-n{node}"));
        let data = dir.join("data");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create server directory");
        cmd::run(Command::new("cp").arg("-a").arg(template()).arg(&data));
        let socket = dir.join("mysqld.sock");
        // A private temporary directory: servers of parallel tests never share /tmp files.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("create server tmpdir");
        let cnf = dir.join("my.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[mariadbd]\n\
                 datadir = {data}\n\
                 socket = {socket}\n\
                 pid_file = {dir}/mariadbd.pid\n\
                 tmpdir = {tmp}\n\
                 port = {PORT}\n\
                 user = root\n\
                 skip_name_resolve = ON\n\
                 performance_schema = OFF\n\
                 innodb_buffer_pool_size = 32M\n\
                 innodb_log_file_size = 4M\n\
                 !include {node_cnf}\n\
                 {overrides}\n",
                data = data.display(),
                socket = socket.display(),
                dir = dir.display(),
                tmp = tmp.display(),
                node_cnf = node_cnf.display(),
            ),
        )
        .expect("write my.cnf");
        let mut m = MariaDb {
            ns: rig.ns(node).to_string(),
            node,
            addr,
            dir,
            socket,
            cnf,
            log_dir: rig.dir().to_path_buf(),
            proc: None,
        };
        m.launch();
        m
    }

    fn launch(&mut self) {
        let c = cmd::netns_command(
            &self.ns,
            mariadbd_bin(),
            &[format!("--defaults-file={}", self.cnf.display())],
        );
        let mut log = self.log_dir.join(format!("mariadbd-n{}.log", self.node));
        for k in 1..1000 {
            if !log.exists() {
                break;
            }
            log = self
                .log_dir
                .join(format!("mariadbd-n{}.{k}.log", self.node));
        }
        self.proc = Some(Proc::spawn(format!("mariadbd@node{}", self.node), c, &log));
        let socket = self.socket.clone();
        wait_until(
            START_TIMEOUT,
            &format!("mariadbd on node{} accepts connections", self.node),
            || {
                let p = self.proc.as_mut().expect("just spawned");
                assert!(
                    p.is_running(),
                    "mariadbd on node{} exited at start:\n{}",
                    self.node,
                    p.log()
                );
                socket.exists() && self.try_sql("SELECT 1").is_ok()
            },
        );
    }

    /// Kills the server (SIGKILL: a crash, nothing flushed beyond what it already wrote).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the server again on its data directory (after [`MariaDb::kill`] or a rig power
    /// failure).
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn node(&self) -> usize {
        self.node
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A `mariadb` client command on the server's socket (statements go to its stdin, so
    /// nothing secret is ever on a command line). `user`: `None` for root.
    pub fn client(&self, user: Option<&str>) -> Command {
        let mut c = Command::new(client_bin());
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--user={}", user.unwrap_or("root")))
            .arg("--batch")
            .arg("--skip-column-names");
        c
    }

    /// Runs `sql` as root; tab-separated rows or the client's error.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        run_client(self.client(None), sql)
    }

    /// Runs `sql` as root, panicking with the error if it fails.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("SQL on node{} failed: {e}\nSQL: {sql}", self.node))
    }

    /// The first column of the first row, if any.
    pub fn scalar(&self, sql: &str) -> Option<String> {
        self.sql(sql)
            .lines()
            .next()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
    }

    /// `SHOW SLAVE STATUS` as column -> value (empty when not a replica).
    pub fn slave_status(&self) -> std::collections::BTreeMap<String, String> {
        let out = run_client(
            {
                let mut c = Command::new(client_bin());
                c.arg("--no-defaults")
                    .arg(format!("--socket={}", self.socket.display()))
                    .arg("--user=root")
                    .arg("--vertical");
                c
            },
            "SHOW SLAVE STATUS",
        )
        .unwrap_or_else(|e| panic!("SHOW SLAVE STATUS on node{}: {e}", self.node));
        out.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    }
}

/// Runs a `mariadb` client command with `sql` on its stdin, bounded in time; its output, or
/// its error message.
pub fn run_client(c: Command, sql: &str) -> Result<String, String> {
    run_client_within(c, sql, CLIENT_TIMEOUT)
}

/// As [`run_client`], killing the client after `limit` (an error: nothing was acknowledged).
pub fn run_client_within(mut c: Command, sql: &str, limit: Duration) -> Result<String, String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the mariadb client: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let sql = sql.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(sql.as_bytes());
    });
    let pid = child.id();
    // A watchdog bounds the call: a server that hangs must fail the test, not stall it.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            // SAFETY: kill(2) on our own child, which is not reaped before `done` is sent.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let _ = writer.join();
    let out = out.map_err(|e| format!("waiting for the mariadb client: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        ))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() && std::env::var_os("CLUSTER_KEEP_RIG").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What `cluster-agent db bootstrap` wrote, by its documented layout.
#[derive(Clone, Debug)]
pub struct ClusterFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub users_sql: PathBuf,
    pub admin_password_file: PathBuf,
    pub repl_password_file: PathBuf,
    pub nodes: Vec<NodeFiles>,
}

impl ClusterFiles {
    /// `o` with the `[mysql]` flags for node `i`: bootstrap's certificates and secrets, a
    /// 100 ms health check.
    pub fn agent_flags(&self, i: usize, mut o: crate::agent::AgentOpts) -> crate::agent::AgentOpts {
        let f = &self.nodes[i];
        let path = |p: &Path| p.to_string_lossy().into_owned();
        for (flag, value) in [
            ("--mysql-ca", path(&f.ca)),
            ("--mysql-client-cert", path(&f.client_cert)),
            ("--mysql-client-key", path(&f.client_key)),
            (
                "--mysql-admin-password-file",
                path(&self.admin_password_file),
            ),
            ("--mysql-repl-password-file", path(&self.repl_password_file)),
            ("--mysql-check-interval", "100".into()),
            ("--mysql-promote-timeout", "10".into()),
            ("--mysql-max-lag", "5".into()),
        ] {
            o = o.arg(flag).arg(&value);
        }
        o
    }
}

/// One node's files from `cluster-agent db bootstrap`.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    pub dir: PathBuf,
    pub cnf: PathBuf,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Runs `cluster-agent db bootstrap` for every node of `rig` (named `node<i>`) into `out`.
pub fn bootstrap_cli(rig: &Rig, out: &Path) -> ClusterFiles {
    let mut c = Command::new(crate::env::agent_bin());
    c.args(["db", "bootstrap", "--out"]).arg(out);
    for i in 0..rig.node_count() {
        c.arg("--node").arg(format!("node{i}={}", rig.addr(i)));
    }
    let o = cmd::output_timeout(&mut c, Duration::from_secs(30)).expect("db bootstrap hangs");
    assert!(
        o.status.success(),
        "cluster-agent db bootstrap failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let nodes = (0..rig.node_count())
        .map(|i| {
            let dir = out.join("nodes").join(format!("node{i}"));
            NodeFiles {
                cnf: dir.join("cluster-agent.cnf"),
                ca: dir.join("ca.pem"),
                client_cert: dir.join("client-cert.pem"),
                client_key: dir.join("client-key.pem"),
                dir,
            }
        })
        .collect();
    let files = ClusterFiles {
        dir: out.to_path_buf(),
        ca: out.join("ca.pem"),
        users_sql: out.join("users.sql"),
        admin_password_file: out.join("secrets").join("admin.pass"),
        repl_password_file: out.join("secrets").join("replication.pass"),
        nodes,
    };
    for f in [&files.ca, &files.users_sql, &files.admin_password_file] {
        assert!(f.is_file(), "bootstrap wrote no {}", f.display());
    }
    files
}

/// The application's account and table on every server of an [`AgentDbCluster`].
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-agent-test-password";

/// What `status --json` says about the database (see the agent's control module).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct DbStatus {
    pub role: String,
    pub gate: Option<String>,
    #[serde(default)]
    pub errant: Vec<String>,
    pub last_error: Option<String>,
}

/// The parts of `status --json` the database tests look at.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AgentDbStatus {
    pub state: String,
    pub master: Option<String>,
    pub advskew: u8,
    pub demoted: bool,
    pub database: Option<DbStatus>,
}

impl AgentDbStatus {
    pub fn is_master(&self) -> bool {
        self.state == "MASTER"
    }

    pub fn db_role(&self) -> &str {
        self.database.as_ref().map_or("", |d| d.role.as_str())
    }
}

/// Agents with `[mysql]` on every node of a rig, each with its own MariaDB (TLS required,
/// bootstrapped by the agent's own command), and a client namespace that reaches the database
/// only through the VIP.
pub struct AgentDbCluster {
    // Fields drop in order: agents, then servers, then the rig's namespaces.
    agents: Vec<Option<crate::agent::Agent>>,
    servers: Vec<MariaDb>,
    pub files: ClusterFiles,
    pub rig: Rig,
}

/// The VIP every [`AgentDbCluster`] moves, its CARP settings, and the client's address.
pub const VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 99, 0, 100);
pub const VHID: u8 = 31;
pub const CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 99, 0, 200);

impl AgentDbCluster {
    /// A rig of `n` nodes and a client, every node's MariaDB up (read-only, as bootstrap
    /// leaves it) with the users, an empty table `t.rows` and the application account; no
    /// agent yet.
    pub fn start(n: usize) -> AgentDbCluster {
        let t0 = std::time::Instant::now();
        let rig = Rig::new(crate::rig::RigConfig::nodes(n).client(CLIENT));
        let files = bootstrap_cli(&rig, &rig.dir().join("db-bootstrap"));
        let users = std::fs::read_to_string(&files.users_sql).expect("read users.sql");
        let mut servers = Vec::new();
        for i in 0..n {
            let s = MariaDb::start_with(&rig, i, IpAddr::V4(rig.addr(i)), &files.nodes[i].cnf, "");
            s.sql(&users);
            // Outside the binary log: no server holds a GTID the others lack.
            s.sql(&format!(
                "SET SESSION sql_log_bin = 0;\n\
                 CREATE DATABASE t;\n\
                 CREATE TABLE t.rows (id BIGINT PRIMARY KEY, note VARCHAR(32)) ENGINE=InnoDB;\n\
                 CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}' REQUIRE SSL;\n\
                 GRANT SELECT, INSERT, UPDATE, DELETE ON t.* TO '{APP_USER}'@'%';\n\
                 CREATE USER '{APP_USER}'@'localhost' IDENTIFIED BY '{APP_PASSWORD}';\n\
                 GRANT SELECT, INSERT, UPDATE, DELETE ON t.* TO '{APP_USER}'@'localhost';\n"
            ));
            servers.push(s);
        }
        eprintln!("{n} MariaDB servers bootstrapped in {:?}", t0.elapsed());
        AgentDbCluster {
            agents: (0..n).map(|_| None).collect(),
            servers,
            files,
            rig,
        }
    }

    pub fn server(&self, i: usize) -> &MariaDb {
        &self.servers[i]
    }

    pub fn server_mut(&mut self, i: usize) -> &mut MariaDb {
        &mut self.servers[i]
    }

    /// Agent settings for node `i`: fast mode (advbase 0) with `advskew`, deadratio 3, the
    /// `[mysql]` flags from bootstrap's files, a 100 ms health check.
    pub fn agent_opts(&self, i: usize, advskew: u8) -> crate::agent::AgentOpts {
        let o = crate::agent::AgentOpts::new(VHID, "dbtest", &format!("{VIP}/24"))
            .advbase(0)
            .advskew(advskew)
            .deadratio(3);
        self.files.agent_flags(i, o)
    }

    /// Starts the agent on node `i` and waits until it answers.
    pub fn start_agent(&mut self, i: usize, o: &crate::agent::AgentOpts) {
        self.agents[i] = Some(self.rig.start_agent(i, o));
    }

    /// Stops the agent on node `i` (SIGKILL, as a crash would).
    pub fn kill_agent(&mut self, i: usize) {
        self.agents[i] = None;
    }

    pub fn agent(&self, i: usize) -> &crate::agent::Agent {
        self.agents[i]
            .as_ref()
            .unwrap_or_else(|| panic!("no agent running on node{i}"))
    }

    /// The agent's status on node `i`.
    pub fn status(&self, i: usize) -> anyhow::Result<AgentDbStatus> {
        use anyhow::Context;
        let socket = &self.agent(i).socket;
        let mut c = Command::new(crate::env::agent_bin());
        c.args(["status", "--json", "--control-socket"]).arg(socket);
        let out = cmd::output_timeout(&mut c, Duration::from_secs(2))
            .context("`status` did not answer within 2 s")?;
        anyhow::ensure!(
            out.status.success(),
            "`status` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "unexpected status JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The agent's status on node `i`, panicking if it does not answer.
    pub fn status_now(&self, i: usize) -> AgentDbStatus {
        self.status(i)
            .unwrap_or_else(|e| panic!("status of the agent on node{i}: {e:#}"))
    }

    /// Nodes with a running agent that hold the VIP.
    pub fn vip_holders(&self) -> Vec<usize> {
        let live: Vec<usize> = (0..self.agents.len())
            .filter(|&i| self.agents[i].is_some())
            .collect();
        self.rig.holders(VIP, &live)
    }

    /// Node `i` is the one master: its agent is MASTER with the database promoted, it alone
    /// holds the VIP, and its server is writable.
    pub fn is_sole_master(&self, i: usize) -> bool {
        self.status(i)
            .is_ok_and(|s| s.is_master() && s.db_role() == "master")
            && self.vip_holders() == [i]
            && self.servers[i]
                .try_sql("SELECT @@read_only")
                .ok()
                .as_deref()
                == Some("0\n")
    }

    /// Waits until node `i` is the sole master; returns how long that took.
    pub fn wait_sole_master(&self, i: usize, timeout: Duration) -> Duration {
        wait_until(timeout, &format!("node{i} is the sole master"), || {
            self.check_agents();
            self.is_sole_master(i)
        })
    }

    /// Node `i` is a BACKUP whose server is read-only and replicates from `master` over
    /// verified TLS, both threads running.
    pub fn is_replica_of(&self, i: usize, master: usize) -> bool {
        let Ok(s) = self.status(i) else { return false };
        if s.is_master() || s.db_role() != "replica" {
            return false;
        }
        let st = self.servers[i].slave_status();
        let is = |k: &str, v: &str| st.get(k).map(String::as_str) == Some(v);
        self.servers[i]
            .try_sql("SELECT @@read_only")
            .ok()
            .as_deref()
            == Some("1\n")
            && is("Master_Host", &self.rig.addr(master).to_string())
            && is("Slave_IO_Running", "Yes")
            && is("Slave_SQL_Running", "Yes")
            && is("Master_SSL_Allowed", "Yes")
            && is("Master_SSL_Verify_Server_Cert", "Yes")
            && is("Using_Gtid", "Slave_Pos")
    }

    pub fn wait_replica_of(&self, i: usize, master: usize, timeout: Duration) -> Duration {
        wait_until(
            timeout,
            &format!("node{i} replicates from node{master} over verified TLS"),
            || {
                self.check_agents();
                self.is_replica_of(i, master)
            },
        )
    }

    /// Panics (with the agent's log) if an agent that should run has exited.
    pub fn check_agents(&self) {
        for a in self.agents.iter().flatten() {
            // An exited child stays a zombie until reaped: state `Z` in /proc/PID/stat.
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", a.proc.pid())).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            if matches!(state, None | Some("Z" | "X")) {
                panic!("{} exited:\n{}", a.proc.name(), a.proc.log());
            }
        }
    }

    /// The application's view: the database through the VIP, from the client namespace.
    pub fn vip(&self) -> VipClient {
        VipClient {
            ns: self
                .rig
                .client_ns()
                .expect("the rig has a client")
                .to_string(),
            ca: self.files.ca.clone(),
            host: VIP.to_string(),
            port: PORT,
        }
    }

    /// The ids in `t.rows` on node `i`'s server (as root, on its socket).
    pub fn ids(&self, i: usize) -> Vec<i64> {
        self.servers[i]
            .sql("SELECT id FROM t.rows ORDER BY id")
            .lines()
            .map(|l| l.trim().parse().expect("integer id"))
            .collect()
    }

    /// Power failure of node `i`: its agent, its server and everything else in it die at
    /// once, its switch port goes down.
    pub fn power_fail(&mut self, i: usize) {
        self.rig.power_fail(i);
        self.agents[i] = None;
        self.servers[i].kill();
    }

    /// Node `i` boots again: port up, own address back, its server restarted on its data
    /// (crash recovery); the agent is left to the caller.
    pub fn power_on(&mut self, i: usize) {
        self.rig.power_on(i);
        self.servers[i].restart();
    }

    /// The agent's log on node `i` so far.
    pub fn agent_log(&self, i: usize) -> String {
        self.agent(i).proc.log()
    }
}

/// The application: a `mariadb` client in the client namespace, connected to the VIP over TLS
/// as the application account. The server's certificate names the node, not the VIP, so the
/// client verifies the chain to the cluster's CA only.
#[derive(Clone, Debug)]
pub struct VipClient {
    pub ns: String,
    pub ca: PathBuf,
    /// Where the client connects: the VIP, or a relay in the client namespace that leads there.
    pub host: String,
    pub port: u16,
}

impl VipClient {
    pub fn command(&self) -> Command {
        let mut c = cmd::netns_command(
            &self.ns,
            client_bin(),
            &[
                "--no-defaults".to_string(),
                format!("--host={}", self.host),
                format!("--port={}", self.port),
                format!("--user={APP_USER}"),
                format!("--ssl-ca={}", self.ca.display()),
                "--connect-timeout=1".to_string(),
                "--batch".to_string(),
                "--skip-column-names".to_string(),
            ],
        );
        // The client reads it from the environment: never a password on a command line.
        c.env("MYSQL_PWD", APP_PASSWORD);
        c
    }

    /// Runs `sql` through the VIP, giving up after `limit`.
    pub fn sql(&self, sql: &str, limit: Duration) -> Result<String, String> {
        run_client_within(self.command(), sql, limit)
    }

    /// Inserts row `id` through the VIP; `Ok` only if the commit was acknowledged.
    pub fn insert(&self, id: i64, limit: Duration) -> Result<(), String> {
        self.sql(&format!("INSERT INTO t.rows VALUES ({id}, 'vip')"), limit)
            .map(drop)
    }

    /// Inserts row `id` and returns the `server_id` of the server that acknowledged it.
    pub fn insert_where(&self, id: i64, limit: Duration) -> Result<u32, String> {
        let out = self.sql(
            &format!("INSERT INTO t.rows VALUES ({id}, 'vip'); SELECT @@server_id;"),
            limit,
        )?;
        out.trim()
            .parse()
            .map_err(|_| format!("unexpected answer {out:?}"))
    }

    /// Inserts every id of `ids`, panicking at the first failure.
    pub fn insert_all(&self, ids: std::ops::RangeInclusive<i64>) {
        for id in ids {
            self.insert(id, CLIENT_TIMEOUT)
                .unwrap_or_else(|e| panic!("insert {id} through the VIP: {e}"));
        }
    }
}
