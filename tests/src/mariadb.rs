//! Real MariaDB servers: one `mariadbd` per node namespace, listening on every address of its
//! node with the TLS settings, certificates and users that `cluster-agent db bootstrap`
//! generates, each with its own data directory, socket and temporary directory.
//!
//! Data directories are copied from a template made once by `mariadb-install-db` and kept in
//! the target directory (a build cache like any other), since a fresh installation takes
//! seconds and a copy milliseconds.
//!
//! The harness talks to a server as `root` over its Unix socket with the `mariadb` client
//! (setting up, writing rows, inspecting); statements go to the client's stdin, never its
//! command line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::cmd;
use crate::proc::Proc;
use crate::rig::Rig;
use crate::wait::wait_until;

/// Every server listens on this port (each in its own namespace).
pub const PORT: u16 = 3306;
/// How long a server may take to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one `mariadb` client call.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The application's account and table (`t.rows`) on every server of a
/// [`crate::cluster::Cluster`]; this password is the local account's (`'app'@'localhost'`).
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-agent-test-password";
/// Creates them; run outside the binary log, so no server holds a GTID the others lack.
/// `'app'@'%'` (TLS required) is bootstrap's application account (`--app-user app`), with its
/// own password; it gets rights on `t` here too.
pub const APP_SQL: &str = "CREATE DATABASE t;\n\
     CREATE TABLE t.rows (id BIGINT PRIMARY KEY, note VARCHAR(32)) ENGINE=InnoDB;\n\
     GRANT SELECT, INSERT, UPDATE, DELETE ON t.* TO 'app'@'%';\n\
     CREATE USER 'app'@'localhost' IDENTIFIED BY 'app-agent-test-password';\n\
     GRANT SELECT, INSERT, UPDATE, DELETE ON t.* TO 'app'@'localhost';\n";

fn mariadbd_bin() -> Result<PathBuf> {
    ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("`mariadbd` is not installed (Debian package mariadb-server)")
}

/// The `mariadb` command-line client.
pub fn client_bin() -> Result<PathBuf> {
    ["/usr/bin/mariadb", "/usr/bin/mysql"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("the `mariadb` client is not installed (Debian package mariadb-client)")
}

/// The template data directory, made once per machine (and per server version).
fn template() -> Result<PathBuf> {
    // Threads of one test process wait for the one that makes it (they would share its
    // temporary directory); a failure is not remembered, so the next caller tries again.
    static T: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut t = T.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = &*t {
        return Ok(dir.clone());
    }
    let dir = make_template()?;
    *t = Some(dir.clone());
    Ok(dir)
}

fn make_template() -> Result<PathBuf> {
    let version = cmd::run(Command::new(mariadbd_bin()?).arg("--version"))?;
    let tag: String = version
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    let dir = crate::env::target_dir()
        .join("test-cache")
        .join(format!("mariadb-datadir-{tag}"));
    if dir.join("mysql").is_dir() {
        return Ok(dir);
    }
    // Built aside and renamed into place, so parallel test processes never see half a
    // template.
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    cmd::run(
        Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", tmp.display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=socket")
            .arg("--skip-test-db")
            .arg("--innodb-log-file-size=4M")
            .arg("--innodb-buffer-pool-size=16M"),
    )
    .context("mariadb-install-db failed")?;
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process won the race; its template is as good as ours.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    ensure!(
        dir.join("mysql").is_dir(),
        "no template at {}",
        dir.display()
    );
    Ok(dir)
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
    pub fn start(rig: &Rig, node: usize, addr: IpAddr, node_cnf: &Path) -> Result<MariaDb> {
        MariaDb::start_with(rig, node, addr, node_cnf, "")
    }

    /// As [`MariaDb::start`], with `overrides` (option lines) after the node's settings.
    pub fn start_with(
        rig: &Rig,
        node: usize,
        addr: IpAddr,
        node_cnf: &Path,
        overrides: &str,
    ) -> Result<MariaDb> {
        let dir = rig.dir().join(format!("mariadb-n{node}"));
        let data = dir.join("data");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        cmd::run(Command::new("cp").arg("-a").arg(template()?).arg(&data))?;
        let socket = dir.join("mysqld.sock");
        // A private temporary directory: servers of parallel tests never share /tmp files.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
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
        .with_context(|| format!("writing {}", cnf.display()))?;
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
        m.launch()?;
        Ok(m)
    }

    fn launch(&mut self) -> Result<()> {
        let c = cmd::netns_command(
            &self.ns,
            mariadbd_bin()?,
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
        let proc = self
            .proc
            .insert(Proc::spawn(format!("mariadbd@node{}", self.node), c, &log)?);
        let proc = &*proc;
        let socket = &self.socket;
        wait_until(
            START_TIMEOUT,
            &format!("mariadbd on node{} accepts connections", self.node),
            || {
                proc.check_alive()?;
                Ok(
                    socket.exists()
                        && run_client(client_command(socket, None)?, "SELECT 1").is_ok(),
                )
            },
        )?;
        Ok(())
    }

    /// Kills the server (SIGKILL: a crash, nothing flushed beyond what it already wrote).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// The server's process, no longer this handle's (a frozen one, for its caller to kill).
    pub fn take_proc(&mut self) -> Option<Proc> {
        self.proc.take()
    }

    /// Stops the server cleanly (SIGTERM: it flushes and shuts down), waiting up to `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            let st = p.stop(timeout)?;
            ensure!(
                st.success(),
                "mariadbd on node{} stopped with {st}",
                self.node
            );
        }
        Ok(())
    }

    /// Freezes the server (SIGSTOP): connections stay open and every statement hangs, as on a
    /// server stuck on its disk.
    pub fn stall(&mut self) -> Result<()> {
        self.running_proc()?.freeze()
    }

    /// Lets a [`MariaDb::stall`]ed server go on (SIGCONT).
    pub fn resume(&mut self) -> Result<()> {
        self.running_proc()?.thaw()
    }

    fn running_proc(&mut self) -> Result<&mut Proc> {
        let node = self.node;
        self.proc
            .as_mut()
            .with_context(|| format!("mariadbd on node{node} is not running"))
    }

    /// Starts the server again on its data directory (after [`MariaDb::kill`], a stop or a
    /// power cut): crash recovery, as after a reboot.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        self.launch()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
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
    pub fn client(&self, user: Option<&str>) -> Result<Command> {
        client_command(&self.socket, user)
    }

    /// Runs `sql` as root; the tab-separated rows.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let run = || run_client(self.client(None)?, sql);
        // An agent that fences this server ends every client session, the test's own
        // included: a read that lost its connection that way is asked again, once. A write
        // is not, since it may have been committed.
        let read = ["SELECT", "SHOW"]
            .iter()
            .any(|k| sql.trim_start().starts_with(k));
        let res = match run() {
            Err(e)
                if read
                    && ["Server has gone away", "Lost connection"]
                        .iter()
                        .any(|m| format!("{e:#}").contains(m)) =>
            {
                run()
            }
            other => other,
        };
        res.with_context(|| format!("SQL on node{}: {sql}", self.node))
    }

    /// The first column of the first row, if any.
    pub fn scalar(&self, sql: &str) -> Result<Option<String>> {
        Ok(self
            .sql(sql)?
            .lines()
            .next()
            .map(|l| l.split('\t').next().unwrap_or("").to_string()))
    }

    /// `SHOW SLAVE STATUS` as column -> value (empty when not a replica).
    pub fn slave_status(&self) -> Result<BTreeMap<String, String>> {
        Ok(self.vertical("SHOW SLAVE STATUS")?.into_iter().collect())
    }

    /// The names of every replication connection (`SHOW ALL SLAVES STATUS`; the default
    /// one is the empty name).
    pub fn replication_connections(&self) -> Result<Vec<String>> {
        Ok(self
            .vertical("SHOW ALL SLAVES STATUS")?
            .into_iter()
            .filter_map(|(k, v)| (k == "Connection_name").then_some(v))
            .collect())
    }

    /// Every `column: value` line of `stmt`'s vertical output, in order.
    fn vertical(&self, stmt: &str) -> Result<Vec<(String, String)>> {
        let mut c = Command::new(client_bin()?);
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg("--user=root")
            .arg("--vertical");
        let out = run_client(c, stmt).with_context(|| format!("{stmt} on node{}", self.node))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect())
    }

    /// A shell command line running `sql` as root on this server, for the scripts of a UCARP
    /// or keepalived cluster.
    pub fn shell_command(&self, sql: &str) -> Result<String> {
        Ok(format!(
            "{} --no-defaults --socket={} --user=root -e \"{sql}\"",
            client_bin()?.display(),
            self.socket.display()
        ))
    }
}

fn client_command(socket: &Path, user: Option<&str>) -> Result<Command> {
    let mut c = Command::new(client_bin()?);
    c.arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--user={}", user.unwrap_or("root")))
        .arg("--batch")
        .arg("--skip-column-names");
    Ok(c)
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
        if !crate::scope::keep_files() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs a `mariadb` client command with `sql` on its stdin, bounded in time; its output, or
/// an error with the client's message.
pub fn run_client(c: Command, sql: &str) -> Result<String> {
    run_client_within(c, sql, CLIENT_TIMEOUT)
}

/// As [`run_client`], killing the client after `limit` (an error: nothing was acknowledged).
pub fn run_client_within(mut c: Command, sql: &str, limit: Duration) -> Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the mariadb client")?;
    let mut stdin = child.stdin.take().context("piped stdin")?;
    let sql = sql.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(sql.as_bytes());
    });
    let pid = child.id();
    // A watchdog bounds the call: a server that hangs must fail the caller, not stall it.
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
    let out = out.context("waiting for the mariadb client")?;
    if !out.status.success() {
        bail!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The agent's `[mysql]` settings for one node.
///
/// [`AgentDb::settings`] is the one place that names them; the command-line flags and the
/// TOML section are both made from it, so a new setting is a field here and a line there.
#[derive(Clone, Debug)]
pub struct AgentDb {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub admin_password_file: PathBuf,
    pub repl_password_file: PathBuf,
    pub check_interval_ms: u64,
    pub promote_timeout_s: u64,
    pub max_lag_s: u64,
    /// Every database node of the cluster.
    pub nodes: Vec<std::net::Ipv4Addr>,
}

/// The value of one `[mysql]` setting: TOML quotes text and not numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    Text(String),
    Number(u64),
    /// A list: a TOML array, and the flag once per item.
    List(Vec<String>),
}

impl AgentDb {
    /// Every setting as (key in `[mysql]`, value); the flag is `--mysql-<key>`, for a list the
    /// key without its plural `s`, repeated.
    pub fn settings(&self) -> Vec<(&'static str, Setting)> {
        let path = |p: &Path| Setting::Text(p.to_string_lossy().into_owned());
        vec![
            ("ca", path(&self.ca)),
            ("client-cert", path(&self.client_cert)),
            ("client-key", path(&self.client_key)),
            ("admin-password-file", path(&self.admin_password_file)),
            ("repl-password-file", path(&self.repl_password_file)),
            ("check-interval", Setting::Number(self.check_interval_ms)),
            ("promote-timeout", Setting::Number(self.promote_timeout_s)),
            ("max-lag", Setting::Number(self.max_lag_s)),
            (
                "nodes",
                Setting::List(self.nodes.iter().map(ToString::to_string).collect()),
            ),
        ]
    }

    /// The settings as `run` flags.
    pub fn flags(&self) -> Vec<String> {
        self.settings()
            .into_iter()
            .flat_map(|(k, v)| match v {
                Setting::Text(s) => vec![format!("--mysql-{k}"), s],
                Setting::Number(n) => vec![format!("--mysql-{k}"), n.to_string()],
                Setting::List(items) => {
                    let flag = format!("--mysql-{}", k.trim_end_matches('s'));
                    items.into_iter().flat_map(|i| [flag.clone(), i]).collect()
                }
            })
            .collect()
    }

    /// The settings as the `[mysql]` section of the agent's TOML file.
    pub fn toml(&self) -> String {
        let mut s = String::from("[mysql]\n");
        for (k, v) in self.settings() {
            match v {
                Setting::Text(t) => s.push_str(&format!("{k} = {t:?}\n")),
                Setting::Number(n) => s.push_str(&format!("{k} = {n}\n")),
                Setting::List(items) => {
                    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
                    s.push_str(&format!("{k} = [{}]\n", quoted.join(", ")));
                }
            }
        }
        s
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
    /// The application account's (`--app-user`), for clients through the VIP.
    pub app_password_file: PathBuf,
    pub nodes: Vec<NodeFiles>,
    /// The nodes' addresses, in order.
    pub addrs: Vec<std::net::Ipv4Addr>,
}

impl ClusterFiles {
    /// Node `i`'s `[mysql]` settings: bootstrap's certificates and secrets, a 100 ms health
    /// check, a 10 s promotion limit, 5 s of tolerated lag.
    pub fn agent_db(&self, i: usize) -> AgentDb {
        let f = &self.nodes[i];
        AgentDb {
            ca: f.ca.clone(),
            client_cert: f.client_cert.clone(),
            client_key: f.client_key.clone(),
            admin_password_file: self.admin_password_file.clone(),
            repl_password_file: self.repl_password_file.clone(),
            check_interval_ms: 100,
            promote_timeout_s: 10,
            max_lag_s: 5,
            nodes: self.addrs.clone(),
        }
    }

    /// The replication password (for replication set up by hand).
    pub fn repl_password(&self) -> Result<String> {
        read_secret(&self.repl_password_file)
    }

    /// The application account's password.
    pub fn app_password(&self) -> Result<String> {
        read_secret(&self.app_password_file)
    }
}

fn read_secret(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim_end()
        .to_string())
}

impl ClusterFiles {}

/// One node's files from `cluster-agent db bootstrap`.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    pub dir: PathBuf,
    pub cnf: PathBuf,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Runs `cluster-agent db bootstrap` for every node of `rig` (named `node<i>`) into `out`, with
/// `vip` in the server certificates and the application account `app`.
pub fn bootstrap_cli(rig: &Rig, out: &Path, vip: std::net::Ipv4Addr) -> Result<ClusterFiles> {
    let mut c = Command::new(crate::env::agent_bin()?);
    c.args(["db", "bootstrap", "--out"]).arg(out);
    c.arg("--vip").arg(vip.to_string());
    c.args(["--app-user", APP_USER]);
    for i in 0..rig.node_count() {
        c.arg("--node").arg(format!("node{i}={}", rig.addr(i)));
    }
    let o = cmd::output_within(&mut c, Duration::from_secs(30))?;
    ensure!(
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
        app_password_file: out.join("secrets").join("app.pass"),
        nodes,
        addrs: (0..rig.node_count()).map(|i| rig.addr(i)).collect(),
    };
    for f in [
        &files.ca,
        &files.users_sql,
        &files.admin_password_file,
        &files.app_password_file,
    ] {
        ensure!(f.is_file(), "bootstrap wrote no {}", f.display());
    }
    Ok(files)
}

/// The application: a `mariadb` client in the client namespace, connected to the VIP over TLS
/// as bootstrap's application account. Every server certificate names the VIP, so a client
/// dialling it verifies the server fully (chain and name), as an application should.
#[derive(Clone, Debug)]
pub struct VipClient {
    pub ns: String,
    pub ca: PathBuf,
    /// Where the client connects: the VIP, or a relay in the client namespace that leads there.
    pub host: String,
    pub port: u16,
    pub password: String,
    /// Check that the server's certificate names `host` (not through a relay, whose address
    /// no certificate names).
    pub verify_name: bool,
}

impl VipClient {
    pub fn command(&self) -> Result<Command> {
        let mut c = cmd::netns_command(
            &self.ns,
            client_bin()?,
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
        if self.verify_name {
            c.arg("--ssl-verify-server-cert");
        }
        // The client reads it from the environment: never a password on a command line.
        c.env("MYSQL_PWD", &self.password);
        Ok(c)
    }

    /// Runs `sql` through the VIP, giving up after `limit`.
    pub fn sql(&self, sql: &str, limit: Duration) -> Result<String> {
        run_client_within(self.command()?, sql, limit)
    }

    /// Inserts row `id` through the VIP; `Ok` only if the commit was acknowledged.
    pub fn insert(&self, id: i64, limit: Duration) -> Result<()> {
        self.sql(&format!("INSERT INTO t.rows VALUES ({id}, 'vip')"), limit)
            .map(drop)
    }

    /// Inserts row `id` and returns the `server_id` of the server that acknowledged it.
    pub fn insert_where(&self, id: i64, limit: Duration) -> Result<u32> {
        let out = self.sql(
            &format!("INSERT INTO t.rows VALUES ({id}, 'vip'); SELECT @@server_id;"),
            limit,
        )?;
        out.trim()
            .parse()
            .map_err(|_| anyhow!("unexpected answer {out:?}"))
    }

    /// Inserts every id of `ids`, stopping at the first failure.
    pub fn insert_all(&self, ids: std::ops::RangeInclusive<i64>) -> Result<()> {
        for id in ids {
            self.insert(id, CLIENT_TIMEOUT)
                .with_context(|| format!("insert {id} through the VIP"))?;
        }
        Ok(())
    }
}
