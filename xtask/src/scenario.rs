//! What the demo and the failover benchmark share: a rig of nodes in network namespaces with
//! the web service on every node, a CARP/VRRP implementation holding the VIP, a client probing
//! the VIP, a recorder of the adverts on one switch port, power failures, and the measurement
//! of one failover from those records.
//!
//! Everything the scenario starts lives in namespaces the rig created; dropping the scenario
//! (also while unwinding, or after Ctrl-C) kills those processes and removes the namespaces.

use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tests::mariadb::{ClusterFiles, MariaDb};
use tests::rig::{NODE_IF, kill_all_in, pids_in};
use tests::{AgentOpts, Proc, Rig, RigConfig};

use crate::adverts::AdvertLog;
use crate::http::ProbeLog;

/// The VIP every scenario moves, and its prefix length.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
pub const PREFIX: u8 = 24;
/// The client's own address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 200);
/// CARP vhid / VRRP router id.
pub const VHID: u8 = 42;
const PASS: &str = "bench";
/// Interval between two evaluations of a condition.
const POLL: Duration = Duration::from_millis(5);
/// Longest any process of a scenario lives, whatever happens to the one that started it.
const PROCESS_LIFETIME_S: u64 = 3600;

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every network namespace of the host,
/// so records written by processes in different namespaces can be compared directly.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds between two `mono_ns` instants (negative when `to` is earlier).
pub fn ms_between(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e6
}

/// Appended text of `path` after `offset` (which is advanced); `None` if the file is absent.
pub fn read_from(path: &Path, offset: &mut u64) -> Result<Option<String>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    f.seek(SeekFrom::Start(*offset))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    *offset += bytes.len() as u64;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set a flag that every wait checks, so a Ctrl-C unwinds through the
/// normal error path and the rig removes itself. Children get the default handlers back on exec.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// An error once SIGINT or SIGTERM arrived.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Polls `f` until it yields a value, for at most `timeout` (and a matching number of polls).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let max_polls = timeout.as_millis() / POLL.as_millis() + 2;
    for _ in 0..max_polls {
        check_interrupt()?;
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            break;
        }
        std::thread::sleep(POLL);
    }
    bail!("timed out after {:?} waiting for: {what}", start.elapsed())
}

/// Runs `f`, turning a panic of the test harness (which reports failures that way) into an error.
pub fn catch<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(anyhow!("{msg}"))
        }
    }
}

/// A small deterministic-enough pseudo-random number from the clock (for phase jitter).
pub fn jitter(below: u64) -> u64 {
    let mut x = mono_ns() ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % below.max(1)
}

/// A private copy of the agent binary for the whole session, so a concurrent build in the
/// workspace cannot swap the binary between (or during) runs. Removed on drop.
pub struct PinnedAgent {
    dir: PathBuf,
}

impl PinnedAgent {
    /// Copies `bin` and points the harness at the copy.
    pub fn new(bin: &Path) -> Result<PinnedAgent> {
        let dir = std::env::temp_dir().join(format!("cluster-xtask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pinned = PinnedAgent { dir };
        let copy = pinned.dir.join("cluster-agent");
        std::fs::copy(bin, &copy)
            .with_context(|| format!("copying {} to {}", bin.display(), copy.display()))?;
        // SAFETY: called before any thread is started; the harness reads this variable.
        unsafe { std::env::set_var(crate::tasks::AGENT_BIN_VAR, &copy) };
        Ok(pinned)
    }
}

impl Drop for PinnedAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The CARP/VRRP implementation a scenario runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// This project's agent with the given `--xdp` mode.
    Agent { xdp: String },
    /// UCARP with up/down scripts that add/remove the VIP and announce it with `arping -U`.
    Ucarp,
    /// keepalived, VRRPv2; it manages the VIP itself.
    Keepalived,
    /// keepalived, VRRPv3 with an advert interval in milliseconds (a multiple of 10).
    KeepalivedV3 { interval_ms: u32 },
}

impl Implementation {
    pub fn parse(s: &str) -> Result<Implementation> {
        Ok(match s {
            "ucarp" => Implementation::Ucarp,
            "keepalived" => Implementation::Keepalived,
            "agent" => Implementation::Agent { xdp: "auto".into() },
            _ => match s.strip_prefix("agent-xdp-") {
                Some(mode) if ["auto", "native", "generic", "off"].contains(&mode) => {
                    Implementation::Agent { xdp: mode.into() }
                }
                _ => bail!(
                    "unknown implementation {s:?} (agent-xdp-off|agent-xdp-native|agent-xdp-generic|agent-xdp-auto|ucarp|keepalived)"
                ),
            },
        })
    }

    pub fn name(&self) -> String {
        match self {
            Implementation::Agent { xdp } => format!("agent-xdp-{xdp}"),
            Implementation::Ucarp => "ucarp".into(),
            Implementation::Keepalived => "keepalived".into(),
            Implementation::KeepalivedV3 { interval_ms } => {
                format!("keepalived-v3-{interval_ms}ms")
            }
        }
    }

    pub fn is_agent(&self) -> bool {
        matches!(self, Implementation::Agent { .. })
    }
}

/// Election timing shared by all nodes of a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub advbase: u8,
    pub deadratio: u32,
}

/// How one node ranks in the election: a CARP advskew, or a VRRP priority.
#[derive(Clone, Copy, Debug)]
pub struct Rank {
    pub advskew: u8,
    pub priority: u8,
    pub preempt: bool,
}

impl Timing {
    /// The theoretical master-down time of a backup with `rank`: CARP
    /// `advbase * deadratio + advskew/256` s; VRRPv2 (RFC 3768) `3 * advert_int +
    /// (256 - priority)/256` s, the skew not scaled by the interval; VRRPv3 (RFC 5798) the
    /// skew scaled by the interval. The agent in fast mode (advbase 0) waits deadratio times
    /// the slower interval, which is the backup's own.
    pub fn master_down(&self, imp: &Implementation, rank: Rank) -> Duration {
        let skew_us = |interval_us: u64| (256 - u64::from(rank.priority)) * interval_us / 256;
        match imp {
            Implementation::Keepalived => {
                Duration::from_micros(3 * u64::from(self.advbase) * 1_000_000 + skew_us(1_000_000))
            }
            Implementation::KeepalivedV3 { interval_ms } => {
                let i = u64::from(*interval_ms) * 1000;
                Duration::from_micros(3 * i + skew_us(i))
            }
            Implementation::Agent { .. } if self.advbase == 0 => Duration::from_micros(
                u64::from(self.deadratio) * u64::from(rank.advskew) * 1_000_000 / 256,
            ),
            _ => tests::ucarp::master_down(self.advbase, rank.advskew, self.deadratio),
        }
    }
}

/// The processes of one node's election daemon.
struct Daemon {
    proc: Proc,
    /// The agent's control socket (agents only).
    socket: Option<PathBuf>,
}

/// Where the advert recorder listens.
#[derive(Clone, Copy, Debug)]
pub enum WatchPort {
    /// The switch port of node `i` (adverts as that node receives them).
    Node(usize),
    /// The client's switch port (every advert, as flooded to the client).
    Client,
}

/// The guestbook's database account (local connections only; a demo password).
const GUESTBOOK_PASSWORD: &str = "guestbook-demo-password";

/// Every node's MariaDB: TLS settings, certificates and users from the product's own
/// `cluster-agent db bootstrap`, the guestbook schema, read-only until someone promotes it.
pub struct Database {
    pub files: ClusterFiles,
    pub servers: Vec<MariaDb>,
    password_file: PathBuf,
}

impl Database {
    fn start(rig: &Rig) -> Result<Database> {
        let t0 = Instant::now();
        let files = catch(|| {
            Ok(tests::mariadb::bootstrap_cli(
                rig,
                &rig.dir().join("db-bootstrap"),
            ))
        })?;
        let users = std::fs::read_to_string(&files.users_sql)
            .with_context(|| format!("reading {}", files.users_sql.display()))?;
        let password_file = rig.dir().join("guestbook.pass");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&password_file)
                .with_context(|| format!("creating {}", password_file.display()))?;
            std::io::Write::write_all(&mut f, GUESTBOOK_PASSWORD.as_bytes())?;
        }
        let mut servers = Vec::new();
        for i in 0..rig.node_count() {
            let server = catch(|| {
                let s = MariaDb::start(
                    rig,
                    i,
                    std::net::IpAddr::V4(rig.addr(i)),
                    &files.nodes[i].cnf,
                );
                s.sql(&users);
                // Outside the binary log: no server holds a GTID the others lack.
                s.sql(&format!(
                    "SET SESSION sql_log_bin = 0;\n{}\
                     CREATE USER '{user}'@'localhost' IDENTIFIED BY '{GUESTBOOK_PASSWORD}';\n\
                     GRANT SELECT, INSERT ON guestbook.* TO '{user}'@'localhost';\n",
                    crate::guestbook::SCHEMA,
                    user = crate::guestbook::DB_USER,
                ));
                Ok(s)
            })?;
            servers.push(server);
        }
        crate::cmd::say(format_args!(
            "{} MariaDB servers bootstrapped (TLS, certificates from `cluster-agent db bootstrap`) in {:.1} s",
            servers.len(),
            t0.elapsed().as_secs_f64()
        ));
        Ok(Database {
            files,
            servers,
            password_file,
        })
    }

    /// `(id, token)` of every guestbook entry on node `i`'s server.
    pub fn entries(&self, i: usize) -> Result<std::collections::BTreeMap<String, u64>> {
        let out = self.servers[i]
            .try_sql("SELECT token, id FROM guestbook.entries")
            .map_err(|e| anyhow!("reading the guestbook on node{i}: {e}"))?;
        out.lines()
            .map(|l| {
                let (token, id) = l
                    .split_once('\t')
                    .ok_or_else(|| anyhow!("unexpected row {l:?}"))?;
                Ok((token.to_string(), id.trim().parse()?))
            })
            .collect()
    }

    /// A shell command line running `sql` as root on node `i`'s server (for daemon scripts).
    fn sql_command(&self, i: usize, sql: &str) -> String {
        format!(
            "{} --no-defaults --socket={} --user=root -e \"{sql}\"",
            tests::mariadb::client_bin().display(),
            self.servers[i].socket().display()
        )
    }
}

pub struct Scenario {
    pub imp: Implementation,
    pub timing: Timing,
    daemons: Vec<Option<Daemon>>,
    /// False while a node is power-failed: its namespace keeps its addresses, but nobody can
    /// reach them.
    powered: Vec<bool>,
    services: Vec<Option<Proc>>,
    probe: Option<Proc>,
    watcher: Proc,
    pub probe_log: ProbeLog,
    pub adverts: AdvertLog,
    xtask: PathBuf,
    /// Every node's database, when the scenario runs the guestbook.
    pub db: Option<Database>,
    /// Declared last: fields drop in order, and the rig (namespaces) must go after the processes.
    pub rig: Rig,
}

/// The node name the web service on node `i` answers with.
pub fn node_name(i: usize) -> String {
    format!("node{i}")
}

impl Scenario {
    /// Builds a rig of `nodes` nodes and a client, starts the web service on every node (the
    /// guestbook on a MariaDB per node if `with_db`) and the advert recorder on `watch`. No
    /// election daemon runs yet.
    pub fn new(
        nodes: usize,
        imp: Implementation,
        timing: Timing,
        watch: WatchPort,
        with_db: bool,
    ) -> Result<Scenario> {
        // Our own binary through procfs: still valid if a concurrent build replaces the file.
        let xtask = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
        let rig = catch(|| Ok(Rig::new(RigConfig::nodes(nodes).client(CLIENT))))?;
        // A long demo opens more connections than the default ephemeral range holds.
        let client_ns = rig.client_ns().expect("rig has a client").to_string();
        let _ = tests::cmd::output(&mut tests::cmd::netns_command(
            &client_ns,
            "sysctl",
            &["-qw", "net.ipv4.ip_local_port_range=1024 65000"],
        ));
        let (port, stem) = match watch {
            WatchPort::Node(i) => (format!("p{i}"), format!("adverts-p{i}")),
            WatchPort::Client => ("pc".to_string(), "adverts-pc".to_string()),
        };
        let advert_file = rig.dir().join(format!("{stem}.txt"));
        let watcher = Proc::spawn(
            "advert-watch",
            tests::cmd::netns_command(
                rig.switch_ns(),
                &xtask,
                &[
                    "advert-watch",
                    "--interface",
                    &port,
                    "--out",
                    &advert_file.to_string_lossy(),
                    "--max-seconds",
                    &PROCESS_LIFETIME_S.to_string(),
                ],
            ),
            &rig.log_path(&stem),
        );
        let probe_file = rig.dir().join("probe.txt");
        let db = if with_db {
            Some(Database::start(&rig)?)
        } else {
            None
        };
        let mut s = Scenario {
            imp,
            timing,
            daemons: (0..nodes).map(|_| None).collect(),
            powered: vec![true; nodes],
            services: (0..nodes).map(|_| None).collect(),
            probe: None,
            watcher,
            probe_log: ProbeLog::new(&probe_file),
            adverts: AdvertLog::new(&advert_file),
            xtask,
            db,
            rig,
        };
        wait_for(
            Duration::from_secs(5),
            "the advert recorder is ready",
            || {
                if !s.watcher.is_running() {
                    bail!("advert recorder exited: {}", s.watcher.log());
                }
                Ok(s.watcher.log().contains("ready").then_some(()))
            },
        )?;
        for i in 0..nodes {
            s.start_service(i)?;
        }
        Ok(s)
    }

    pub fn nodes(&self) -> usize {
        self.rig.node_count()
    }

    /// Starts the web service on node `i` and waits until it listens.
    pub fn start_service(&mut self, i: usize) -> Result<()> {
        let xtask = self.xtask.to_string_lossy().into_owned();
        let lifetime = PROCESS_LIFETIME_S.to_string();
        let name = node_name(i);
        let mut p = match &self.db {
            None => self.rig.spawn(
                i,
                "http",
                &[
                    &xtask,
                    "http-serve",
                    "--name",
                    &name,
                    "--max-seconds",
                    &lifetime,
                ],
            ),
            Some(db) => self.rig.spawn(
                i,
                "guestbook",
                &[
                    &xtask,
                    "guestbook-serve",
                    "--name",
                    &name,
                    "--db-socket",
                    &db.servers[i].socket().to_string_lossy(),
                    "--db-password-file",
                    &db.password_file.to_string_lossy(),
                    "--max-seconds",
                    &lifetime,
                ],
            ),
        };
        wait_for(
            Duration::from_secs(5),
            &format!("web service on {name}"),
            || {
                if !p.is_running() {
                    bail!("web service on {name} exited: {}", p.log());
                }
                Ok(p.log().contains("listening").then_some(()))
            },
        )?;
        self.services[i] = Some(p);
        Ok(())
    }

    /// Starts the client's probe of `http://VIP/`: a request every `interval_us`, every
    /// `write_every`th a guestbook write (0: reads only).
    pub fn start_probe(&mut self, interval_us: u64, write_every: u64) -> Result<()> {
        let xtask = self.xtask.to_string_lossy().into_owned();
        let target = format!("{VIP}:80");
        let out = self.probe_log.path().to_string_lossy().into_owned();
        let lifetime = PROCESS_LIFETIME_S.to_string();
        let (interval, every) = (interval_us.to_string(), write_every.to_string());
        let p = self.rig.spawn_client(
            "probe",
            &[
                &xtask,
                "http-probe",
                "--target",
                &target,
                "--out",
                &out,
                "--interval-us",
                &interval,
                "--write-every",
                &every,
                "--max-seconds",
                &lifetime,
            ],
        );
        self.probe = Some(p);
        Ok(())
    }

    /// Reads what the probe and the advert recorder appended; fails if either died.
    pub fn refresh(&mut self) -> Result<()> {
        if let Some(p) = &mut self.probe
            && !p.is_running()
        {
            bail!("the probe exited: {}", p.log());
        }
        if !self.watcher.is_running() {
            bail!("the advert recorder exited: {}", self.watcher.log());
        }
        self.probe_log.refresh()?;
        self.adverts.refresh()
    }

    /// Starts the election daemon on node `i`.
    pub fn start_daemon(&mut self, i: usize, rank: Rank) -> Result<()> {
        let d = match &self.imp {
            Implementation::Agent { xdp } => {
                let opts = AgentOpts::new(VHID, PASS, &format!("{VIP}/{PREFIX}"))
                    .advbase(self.timing.advbase)
                    .deadratio(self.timing.deadratio)
                    .advskew(rank.advskew)
                    .preempt(rank.preempt)
                    .xdp(xdp);
                let opts = match &self.db {
                    Some(db) => db.files.agent_flags(i, opts),
                    None => opts,
                };
                let agent = catch(|| Ok(self.rig.spawn_agent(i, &opts)))?;
                Daemon {
                    proc: agent.proc,
                    socket: Some(agent.socket),
                }
            }
            Implementation::Ucarp => Daemon {
                proc: self.spawn_ucarp(i, rank)?,
                socket: None,
            },
            Implementation::Keepalived | Implementation::KeepalivedV3 { .. } => Daemon {
                proc: self.spawn_keepalived(i, rank)?,
                socket: None,
            },
        };
        self.daemons[i] = Some(d);
        Ok(())
    }

    /// UCARP as such clusters run it: the up script adds the address, announces it with
    /// arping and promotes the local database with the mysql client; the down script undoes
    /// the address and makes the database read-only.
    fn spawn_ucarp(&self, i: usize, rank: Rank) -> Result<Proc> {
        let (promote, demote) = self.db_scripts(i);
        let up = self.rig.write_script(
            &format!("ucarp-up-n{i}.sh"),
            &format!(
                "ip addr add \"$2/{PREFIX}\" dev \"$1\"\n\
                 arping -q -U -c 1 -I \"$1\" \"$2\" >/dev/null 2>&1 &\n\
                 {promote}\n\
                 exit 0"
            ),
        );
        let down = self.rig.write_script(
            &format!("ucarp-down-n{i}.sh"),
            &format!("ip addr del \"$2/{PREFIX}\" dev \"$1\" 2>/dev/null\n{demote}\nexit 0"),
        );
        let bin = catch(|| Ok(tests::env::ucarp_bin()))?;
        let mut argv: Vec<String> = vec![
            bin.to_string_lossy().into_owned(),
            "-i".into(),
            NODE_IF.into(),
            "-s".into(),
            self.rig.addr(i).to_string(),
            "-v".into(),
            VHID.to_string(),
            "-p".into(),
            PASS.into(),
            "-a".into(),
            VIP.to_string(),
            "-b".into(),
            self.timing.advbase.to_string(),
            "-k".into(),
            rank.advskew.to_string(),
            "-r".into(),
            self.timing.deadratio.to_string(),
            "-u".into(),
            up.to_string_lossy().into_owned(),
            "-d".into(),
            down.to_string_lossy().into_owned(),
            "-z".into(),
        ];
        if rank.preempt {
            argv.push("-P".into());
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Ok(self.rig.spawn(i, "ucarp", &argv))
    }

    /// Shell lines that promote and demote node `i`'s database with the mysql client, as the
    /// scripts of a UCARP or keepalived cluster do (empty without a database).
    fn db_scripts(&self, i: usize) -> (String, String) {
        match &self.db {
            None => (String::new(), String::new()),
            Some(db) => (
                db.sql_command(i, "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0;"),
                db.sql_command(i, "SET GLOBAL read_only = 1;"),
            ),
        }
    }

    /// keepalived manages the VIP itself; with a database, notify scripts promote and demote
    /// it.
    fn spawn_keepalived(&self, i: usize, rank: Rank) -> Result<Proc> {
        let dir = self.rig.dir();
        let conf = dir.join(format!("keepalived-n{i}.conf"));
        let state = if rank.priority >= 200 {
            "MASTER"
        } else {
            "BACKUP"
        };
        let (version, advert_int) = match self.imp {
            Implementation::KeepalivedV3 { interval_ms } => {
                (3, format!("{}", f64::from(interval_ms) / 1000.0))
            }
            _ => (2, self.timing.advbase.to_string()),
        };
        let notify = if self.db.is_some() {
            let (promote, demote) = self.db_scripts(i);
            let up = self
                .rig
                .write_script(&format!("keepalived-master-n{i}.sh"), &promote);
            let down = self
                .rig
                .write_script(&format!("keepalived-backup-n{i}.sh"), &demote);
            format!(
                "    notify_master \"{}\"\n    notify_backup \"{}\"\n    notify_fault \"{}\"\n",
                up.display(),
                down.display(),
                down.display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n    router_id {name}\n    vrrp_version {version}\n    script_user root\n}}\n\
                 vrrp_instance VI_{VHID} {{\n    state {state}\n    interface {NODE_IF}\n\
                 \x20   virtual_router_id {VHID}\n    priority {prio}\n    advert_int {advert_int}\n\
                 {notify}\
                 \x20   virtual_ipaddress {{\n        {VIP}/{PREFIX} dev {NODE_IF}\n    }}\n}}\n",
                name = node_name(i),
                prio = rank.priority,
            ),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        let pid = |what: &str| {
            dir.join(format!("keepalived-{what}-n{i}.pid"))
                .to_string_lossy()
                .into_owned()
        };
        let (main_pid, vrrp_pid) = (pid("main"), pid("vrrp"));
        let conf = conf.to_string_lossy().into_owned();
        Ok(self.rig.spawn(
            i,
            "keepalived",
            &[
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--vrrp",
                "--use-file",
                &conf,
                "--pid",
                &main_pid,
                "--vrrp_pid",
                &vrrp_pid,
            ],
        ))
    }

    /// Fails if node `i`'s daemon has exited (it would never hold the VIP then).
    pub fn check_daemon(&mut self, i: usize) -> Result<()> {
        if let Some(d) = &mut self.daemons[i]
            && !d.proc.is_running()
        {
            bail!(
                "{} on {} exited: {}",
                self.imp.name(),
                node_name(i),
                tail(&d.proc.log(), 2000)
            );
        }
        Ok(())
    }

    /// The agent's status on node `i` (`None` for other implementations or when it does not answer).
    pub fn agent_status(&self, i: usize) -> Option<tests::Status> {
        let socket = self.daemons[i].as_ref()?.socket.as_ref()?;
        tests::agent::query_status(socket).ok()
    }

    /// The powered nodes holding the VIP on their interface.
    pub fn holders(&self) -> Result<Vec<usize>> {
        let powered: Vec<usize> = (0..self.nodes()).filter(|&i| self.powered[i]).collect();
        catch(|| Ok(self.rig.holders(VIP, &powered)))
    }

    /// Power failure of node `i`: everything in it stops at once, then its switch port goes
    /// down. Returns the instant of the stop.
    ///
    /// SIGSTOP goes to every process before any SIGKILL: killing one process of a daemon first
    /// could let another one that watches it run a graceful shutdown, and announce it on the
    /// wire, before its own SIGKILL lands. A power failure announces nothing.
    pub fn power_fail(&mut self, i: usize) -> Result<u64> {
        let ns = self.rig.ns(i).to_string();
        let pids = pids_in(&ns);
        let t = mono_ns();
        for sig in [libc::SIGSTOP, libc::SIGKILL] {
            for &pid in &pids {
                // SAFETY: kill(2) on a process that lives in a namespace this scenario created.
                unsafe { libc::kill(pid, sig) };
            }
        }
        let port = format!("p{i}");
        let out = tests::cmd::output(std::process::Command::new("ip").args([
            "-n",
            self.rig.switch_ns(),
            "link",
            "set",
            &port,
            "down",
        ]));
        if !out.status.success() {
            bail!(
                "taking {port} down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Processes forked in the meantime, if any; then reap our own children.
        kill_all_in(&ns);
        self.daemons[i] = None;
        self.services[i] = None;
        if let Some(db) = &mut self.db {
            db.servers[i].kill();
        }
        self.powered[i] = false;
        Ok(t)
    }

    /// Powers node `i` back on (port up, own address back, VIP gone), restarts its database
    /// (crash recovery) and its service.
    pub fn power_on(&mut self, i: usize) -> Result<()> {
        catch(|| {
            self.rig.power_on(i);
            if let Some(db) = &mut self.db {
                db.servers[i].restart();
            }
            Ok(())
        })?;
        self.powered[i] = true;
        self.start_service(i)
    }

    /// What an operator of a UCARP or keepalived cluster sets up by hand: node `master`'s
    /// database writable, every other one replicating from it over verified TLS.
    pub fn start_static_replication(&mut self, master: usize) -> Result<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let repl_pw = std::fs::read_to_string(&db.files.repl_password_file)?
            .trim_end()
            .to_string();
        db.servers[master]
            .try_sql("SET GLOBAL read_only = 0")
            .map_err(|e| anyhow!("node{master}: {e}"))?;
        for i in (0..self.nodes()).filter(|&i| i != master) {
            let f = &db.files.nodes[i];
            let sql = format!(
                "CHANGE MASTER TO MASTER_HOST = '{host}', MASTER_PORT = {port}, \
                 MASTER_USER = 'cluster_repl', MASTER_PASSWORD = '{repl_pw}', \
                 MASTER_USE_GTID = slave_pos, MASTER_SSL = 1, MASTER_SSL_CA = '{ca}', \
                 MASTER_SSL_CERT = '{cert}', MASTER_SSL_KEY = '{key}', \
                 MASTER_SSL_VERIFY_SERVER_CERT = 1, MASTER_CONNECT_RETRY = 1; START SLAVE;",
                host = self.rig.addr(master),
                port = tests::mariadb::PORT,
                ca = f.ca.display(),
                cert = f.client_cert.display(),
                key = f.client_key.display(),
            );
            db.servers[i]
                .try_sql(&sql)
                .map_err(|e| anyhow!("node{i}: {e}"))?;
        }
        let servers = &db.servers;
        wait_for(
            Duration::from_secs(20),
            "every replica connected to the master",
            || {
                Ok((0..servers.len())
                    .filter(|&i| i != master)
                    .all(|i| {
                        servers[i]
                            .slave_status()
                            .get("Slave_IO_Running")
                            .map(String::as_str)
                            == Some("Yes")
                    })
                    .then_some(()))
            },
        )
    }

    /// Checks every write the client saw acknowledged against node `survivor`'s database.
    pub fn check_writes(&self, survivor: usize) -> Result<WriteCheck> {
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| anyhow!("no database in this scenario"))?;
        let entries = db.entries(survivor)?;
        let mut check = WriteCheck::default();
        for s in &self.probe_log.samples {
            let Some((token, id)) = &s.write else {
                continue;
            };
            check.attempted += 1;
            let Some(id) = id else { continue };
            check.acknowledged += 1;
            if entries.get(token) != Some(id) {
                check.lost.push(format!("{token}={id}"));
            }
        }
        check.rows_on_survivor = entries.len();
        Ok(check)
    }

    /// Waits until the failover away from `old` (power-failed at `t_fail`) is complete as the
    /// client and the recorder see it, and measures it.
    pub fn measure_failover(
        &mut self,
        old: usize,
        t_fail: u64,
        timeout: Duration,
    ) -> Result<Failover> {
        let old_name = node_name(old);
        let (new, first_ok) = wait_for(timeout, "an answer from another node", || {
            self.refresh()?;
            Ok(self
                .probe_log
                .ended_since(t_fail)
                .filter(|s| s.is_ok() && !s.ok_from(&old_name))
                .min_by_key(|s| s.end_ns)
                .map(|s| (s.outcome.clone().unwrap_or_default(), s.end_ns)))
        })?;
        let new_idx = (0..self.nodes())
            .find(|&i| node_name(i) == new)
            .ok_or_else(|| anyhow!("answer from unknown node {new}"))?;
        let new_addr = self.rig.addr(new_idx);
        let first_advert_new = wait_for(
            Duration::from_secs(3),
            &format!("an advert from {new}"),
            || {
                self.refresh()?;
                Ok(self
                    .adverts
                    .sent_by_since(new_addr, t_fail)
                    .map(|a| a.t_ns)
                    .min())
            },
        )?;
        let last_old = self
            .adverts
            .last_from_before(self.rig.addr(old), first_advert_new);
        let last_advert_old = last_old.map(|a| a.t_ns);
        let last_advert_old_skew = last_old.map(|a| a.skew_or_prio);
        let last_ok_before = self
            .probe_log
            .samples
            .iter()
            .filter(|s| s.is_ok() && s.end_ns <= t_fail)
            .map(|s| s.end_ns)
            .max();
        let failed = self
            .probe_log
            .samples
            .iter()
            .filter(|s| !s.is_ok() && s.end_ns >= t_fail && s.end_ns <= first_ok)
            .count();
        Ok(Failover {
            old,
            new: new_idx,
            t_fail,
            last_advert_old,
            last_advert_old_skew,
            first_advert_new,
            last_ok_before,
            first_ok_new: first_ok,
            failed,
        })
    }
}

/// The client's acknowledged writes against a surviving database.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WriteCheck {
    pub attempted: usize,
    pub acknowledged: usize,
    /// `token=id` of acknowledged writes missing on the survivor (or there with another id).
    pub lost: Vec<String>,
    pub rows_on_survivor: usize,
}

/// One failover as the records show it (all instants in `mono_ns`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Failover {
    pub old: usize,
    pub new: usize,
    /// The power failure of the old master.
    pub t_fail: u64,
    /// The old master's last advert on the recorded port.
    pub last_advert_old: Option<u64>,
    /// The advskew (CARP) or priority (VRRP) in that advert; a VRRP priority of 0 means the old
    /// master resigned instead of dying silently.
    pub last_advert_old_skew: Option<u8>,
    /// The new master's first advert on the recorded port.
    pub first_advert_new: u64,
    /// End of the last successful request before the failure.
    pub last_ok_before: Option<u64>,
    /// End of the first request the new master answered.
    pub first_ok_new: u64,
    /// Requests that failed between the failure and `first_ok_new`.
    pub failed: usize,
}

impl Failover {
    /// Power failure to the first answer from the new master.
    pub fn gap_from_fail_ms(&self) -> f64 {
        ms_between(self.t_fail, self.first_ok_new)
    }

    /// Last advert of the old master to the first answer from the new master.
    pub fn gap_from_last_advert_ms(&self) -> Option<f64> {
        Some(ms_between(self.last_advert_old?, self.first_ok_new))
    }

    /// Last advert of the old master to the first advert of the new one.
    pub fn detection_ms(&self) -> Option<f64> {
        Some(ms_between(self.last_advert_old?, self.first_advert_new))
    }

    /// Last answer before the failure to the first one after it: the outage the client saw.
    pub fn outage_ms(&self) -> Option<f64> {
        Some(ms_between(self.last_ok_before?, self.first_ok_new))
    }
}

/// The last `max` bytes of `text` (at a character boundary).
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
