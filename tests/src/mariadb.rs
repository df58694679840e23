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

fn client_bin() -> PathBuf {
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
        let dir = rig.dir().join(format!("mariadb-n{node}"));
        let data = dir.join("data");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create server directory");
        cmd::run(Command::new("cp").arg("-a").arg(template()).arg(&data));
        let socket = dir.join("mysqld.sock");
        let cnf = dir.join("my.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[mariadbd]\n\
                 datadir = {data}\n\
                 socket = {socket}\n\
                 pid_file = {dir}/mariadbd.pid\n\
                 port = {PORT}\n\
                 user = root\n\
                 skip_name_resolve = ON\n\
                 performance_schema = OFF\n\
                 innodb_buffer_pool_size = 32M\n\
                 innodb_log_file_size = 4M\n\
                 !include {node_cnf}\n",
                data = data.display(),
                socket = socket.display(),
                dir = dir.display(),
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
pub fn run_client(mut c: Command, sql: &str) -> Result<String, String> {
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
        if done_rx.recv_timeout(CLIENT_TIMEOUT).is_err() {
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
