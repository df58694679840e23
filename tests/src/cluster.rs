//! A cluster with databases: a rig of N nodes and a client, every node with its own MariaDB
//! (TLS required, settings, certificates and users from the product's `cluster-agent db
//! bootstrap`, the application's table and account) and an election daemon that moves the
//! VIP: the agent with `[mysql]`, or UCARP / keepalived with the scripts such clusters use
//! (address, `arping`, promotion with the `mysql` client) and replication set up by hand.
//!
//! The integration tests, the demo and the benches build their clusters here, so that "node0
//! is the master, the others replicate from it" means the same thing everywhere.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::agent::{Agent, AgentOpts, Status};
use crate::keepalived::KeepalivedOpts;
use crate::mariadb::{self, APP_SQL, ClusterFiles, MariaDb, PORT, VipClient};
use crate::proc::Proc;
use crate::relay::Relay;
use crate::rig::{Rig, RigConfig, VipSample};
use crate::timing::{Timed, Timing};
use crate::ucarp::UcarpOpts;
use crate::wait::{mono_ns, wait_until};

/// The VIP every cluster moves (with the rig's /24), and the client's own address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 200);

/// The election daemon a cluster runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// This project's agent; the `--xdp` mode, or the test run's default when `None`.
    Agent { xdp: Option<String> },
    /// UCARP with up/down scripts that add/remove the VIP, announce it with `arping -U` and
    /// promote/demote the database with the mysql client.
    Ucarp,
    /// keepalived, VRRPv2, with notify scripts doing the same promotion; it moves the VIP itself.
    Keepalived,
    /// keepalived, VRRPv3 with an advert interval in milliseconds (a multiple of 10).
    KeepalivedV3 { interval_ms: u32 },
}

impl Implementation {
    /// `agent`, `agent-xdp-<mode>`, `ucarp` or `keepalived`.
    pub fn parse(s: &str) -> Result<Implementation> {
        Ok(match s {
            "ucarp" => Implementation::Ucarp,
            "keepalived" => Implementation::Keepalived,
            "agent" => Implementation::Agent { xdp: None },
            _ => match s.strip_prefix("agent-xdp-") {
                Some(mode) if ["auto", "native", "generic", "off"].contains(&mode) => {
                    Implementation::Agent {
                        xdp: Some(mode.into()),
                    }
                }
                _ => bail!(
                    "unknown implementation {s:?} (agent-xdp-off|agent-xdp-native|agent-xdp-generic|agent-xdp-auto|ucarp|keepalived)"
                ),
            },
        })
    }

    pub fn name(&self) -> String {
        match self {
            Implementation::Agent { xdp } => {
                format!("agent-xdp-{}", xdp.as_deref().unwrap_or("auto"))
            }
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

/// How one node ranks in the election: a CARP advskew, or a VRRP priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rank {
    pub advskew: u8,
    pub priority: u8,
    pub preempt: bool,
}

impl From<u8> for Rank {
    /// A CARP skew, no preemption (and an ordinary VRRP priority).
    fn from(advskew: u8) -> Rank {
        Rank {
            advskew,
            priority: 100,
            preempt: false,
        }
    }
}

/// The theoretical master-down time of a backup with `rank` (see [`Timing::master_down`]
/// and [`KeepalivedOpts::master_down`]).
pub fn master_down(imp: &Implementation, advbase: u8, deadratio: u32, rank: Rank) -> Duration {
    match imp {
        Implementation::Keepalived => KeepalivedOpts::new(1, VIP, rank.priority)
            .advert_int(advbase)
            .master_down(),
        Implementation::KeepalivedV3 { interval_ms } => KeepalivedOpts::new(1, VIP, rank.priority)
            .v3(*interval_ms)
            .master_down(),
        _ => Timing {
            advbase,
            advskew: rank.advskew,
            deadratio,
            preempt: rank.preempt,
        }
        .master_down(),
    }
}

/// What a [`Cluster`] is made of. [`ClusterConfig::new`] is the database tests' cluster:
/// agents in fast mode (advbase 0, deadratio 3), vhid 31.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    pub imp: Implementation,
    pub vhid: u8,
    pub pass: String,
    pub advbase: u8,
    pub deadratio: u32,
    /// SQL run on every server after bootstrap's users and the application's table, outside
    /// the binary log (more schemas and accounts).
    pub extra_sql: String,
    /// Flags every agent gets besides its own (e.g. `--quorum-endpoint`).
    pub agent_args: Vec<String>,
}

impl ClusterConfig {
    pub fn new(nodes: usize) -> ClusterConfig {
        ClusterConfig {
            nodes,
            imp: Implementation::Agent { xdp: None },
            vhid: 31,
            pass: "dbtest".into(),
            advbase: 0,
            deadratio: 3,
            extra_sql: String::new(),
            agent_args: Vec::new(),
        }
    }
}

/// One node's election daemon.
pub enum Daemon {
    Agent(Box<Agent>),
    Ucarp(Proc),
    Keepalived(Proc),
}

impl Daemon {
    pub fn proc(&self) -> &Proc {
        match self {
            Daemon::Agent(a) => &a.proc,
            Daemon::Ucarp(p) | Daemon::Keepalived(p) => p,
        }
    }

    pub fn proc_mut(&mut self) -> &mut Proc {
        match self {
            Daemon::Agent(a) => &mut a.proc,
            Daemon::Ucarp(p) | Daemon::Keepalived(p) => p,
        }
    }

    pub fn agent(&self) -> Option<&Agent> {
        match self {
            Daemon::Agent(a) => Some(a),
            _ => None,
        }
    }
}

/// When [`Cluster::bring_up`] got where.
#[derive(Clone, Copy, Debug)]
pub struct BroughtUp {
    /// From starting node0's daemon to node0 being the sole master.
    pub master_after: Duration,
    /// When the backups' daemons were started (`mono_ns`).
    pub backups_started: u64,
}

pub struct Cluster {
    // Fields drop in order: daemons, then servers, then the rig's namespaces.
    daemons: Vec<Option<Daemon>>,
    /// The daemon and the server of each powered-off node, frozen (see [`Cluster::power_cut`]).
    frozen: Vec<(Option<Daemon>, Option<Proc>)>,
    servers: Vec<MariaDb>,
    pub files: ClusterFiles,
    pub config: ClusterConfig,
    pub rig: Rig,
}

impl Cluster {
    /// A rig of `config.nodes` nodes and a client, every node's MariaDB up (read-only, as
    /// bootstrap leaves it) with the users, an empty table `t.rows`, the application account
    /// and `extra_sql`; no daemon yet.
    pub fn start(config: ClusterConfig) -> Result<Cluster> {
        let n = config.nodes;
        let rig = Rig::new(RigConfig::nodes(n).client(CLIENT))?;
        let files = mariadb::bootstrap_cli(&rig, &rig.dir().join("db-bootstrap"), VIP)?;
        let users = std::fs::read_to_string(&files.users_sql)
            .with_context(|| format!("reading {}", files.users_sql.display()))?;
        let mut servers = Vec::new();
        for i in 0..n {
            let s = MariaDb::start(&rig, i, IpAddr::V4(rig.addr(i)), &files.nodes[i].cnf)?;
            s.sql(&users)?;
            // Outside the binary log: no server holds a GTID the others lack.
            s.sql(&format!(
                "SET SESSION sql_log_bin = 0;\n{APP_SQL}{}",
                config.extra_sql
            ))?;
            servers.push(s);
        }
        Ok(Cluster {
            daemons: (0..n).map(|_| None).collect(),
            frozen: (0..n).map(|_| (None, None)).collect(),
            servers,
            files,
            config,
            rig,
        })
    }

    pub fn nodes(&self) -> usize {
        self.servers.len()
    }

    pub fn server(&self, i: usize) -> &MariaDb {
        &self.servers[i]
    }

    pub fn server_mut(&mut self, i: usize) -> &mut MariaDb {
        &mut self.servers[i]
    }

    /// Node `i`'s election timing with `rank`.
    pub fn timing(&self, rank: Rank) -> Timing {
        Timing {
            advbase: self.config.advbase,
            advskew: rank.advskew,
            deadratio: self.config.deadratio,
            preempt: rank.preempt,
        }
    }

    /// The theoretical master-down time of a backup with `rank`.
    pub fn master_down(&self, rank: Rank) -> Duration {
        master_down(
            &self.config.imp,
            self.config.advbase,
            self.config.deadratio,
            rank,
        )
    }

    /// Agent settings for node `i`: the cluster's vhid, VIP and timing with `rank`, and the
    /// `[mysql]` settings from bootstrap's files.
    pub fn agent_opts(&self, i: usize, rank: impl Into<Rank>) -> AgentOpts {
        let c = &self.config;
        let mut o = AgentOpts::new(c.vhid, &c.pass, &format!("{VIP}/{}", self.rig.prefix()))
            .with_timing(self.timing(rank.into()))
            .db(self.files.agent_db(i));
        if let Implementation::Agent { xdp: Some(x) } = &c.imp {
            o = o.xdp(x);
        }
        for a in &c.agent_args {
            o = o.arg(a);
        }
        o
    }

    /// Starts the agent on node `i` with `o` and waits until it answers.
    pub fn start_agent(&mut self, i: usize, o: &AgentOpts) -> Result<()> {
        self.daemons[i] = Some(Daemon::Agent(Box::new(self.rig.start_agent(i, o)?)));
        Ok(())
    }

    /// Starts node `i`'s daemon of the cluster's implementation with `rank` (an agent: and
    /// waits until it answers).
    pub fn start_daemon(&mut self, i: usize, rank: impl Into<Rank>) -> Result<()> {
        let rank = rank.into();
        let d = match &self.config.imp {
            Implementation::Agent { .. } => {
                let o = self.agent_opts(i, rank);
                Daemon::Agent(Box::new(self.rig.start_agent(i, &o)?))
            }
            Implementation::Ucarp => {
                let (promote, demote) = self.promotion_lines(i)?;
                let o = UcarpOpts::new(self.config.vhid, &self.config.pass, VIP)
                    .with_timing(self.timing(rank))
                    .on_up("arping -q -U -c 1 -I \"$1\" \"$2\" >/dev/null 2>&1 &")
                    .on_up(&promote)
                    .on_down(&demote);
                Daemon::Ucarp(self.rig.spawn_ucarp(i, &o)?)
            }
            Implementation::Keepalived | Implementation::KeepalivedV3 { .. } => {
                let (promote, demote) = self.promotion_lines(i)?;
                let up = self
                    .rig
                    .write_script(&format!("keepalived-master-n{i}.sh"), &promote)?;
                let down = self
                    .rig
                    .write_script(&format!("keepalived-backup-n{i}.sh"), &demote)?;
                let o = KeepalivedOpts::new(self.config.vhid, VIP, rank.priority)
                    .notify(up, down)
                    .log_detail();
                let o = match self.config.imp {
                    Implementation::KeepalivedV3 { interval_ms } => o.v3(interval_ms),
                    _ => o.advert_int(self.config.advbase),
                };
                Daemon::Keepalived(self.rig.spawn_keepalived(i, &o)?)
            }
        };
        self.daemons[i] = Some(d);
        Ok(())
    }

    /// Shell lines that promote and demote node `i`'s database with the mysql client, as the
    /// scripts of a UCARP or keepalived cluster do.
    fn promotion_lines(&self, i: usize) -> Result<(String, String)> {
        let s = &self.servers[i];
        Ok((
            s.shell_command("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0;")?,
            s.shell_command("SET GLOBAL read_only = 1;")?,
        ))
    }

    /// Kills node `i`'s daemon (SIGKILL, as a crash would), leaving the node powered.
    pub fn kill_daemon(&mut self, i: usize) {
        self.daemons[i] = None;
    }

    /// Stops node `i`'s daemon gracefully (SIGTERM, bounded), as an orderly shutdown does,
    /// unlike a crash: a master may announce that it leaves (the agent bows out).
    pub fn stop_daemon(&mut self, i: usize, timeout: Duration) -> Result<ExitStatus> {
        let mut d = self.daemons[i]
            .take()
            .with_context(|| format!("no daemon running on node{i}"))?;
        d.proc_mut().stop(timeout)
    }

    pub fn daemon(&self, i: usize) -> Option<&Daemon> {
        self.daemons[i].as_ref()
    }

    pub fn daemon_mut(&mut self, i: usize) -> Option<&mut Daemon> {
        self.daemons[i].as_mut()
    }

    /// Node `i`'s agent; an error if none runs there.
    pub fn agent(&self, i: usize) -> Result<&Agent> {
        self.daemons[i]
            .as_ref()
            .and_then(Daemon::agent)
            .ok_or_else(|| anyhow!("no agent running on node{i}"))
    }

    pub fn agent_mut(&mut self, i: usize) -> Result<&mut Agent> {
        match self.daemons[i].as_mut() {
            Some(Daemon::Agent(a)) => Ok(a),
            _ => bail!("no agent running on node{i}"),
        }
    }

    /// The agent's status on node `i`.
    pub fn status(&self, i: usize) -> Result<Status> {
        self.agent(i)?.status()
    }

    /// The agent's log on node `i` so far.
    pub fn agent_log(&self, i: usize) -> Result<String> {
        Ok(self.agent(i)?.proc.log())
    }

    /// An error (with its output) if node `i`'s daemon was started and has exited.
    pub fn check_daemon(&self, i: usize) -> Result<()> {
        match &self.daemons[i] {
            Some(d) => d.proc().check_alive(),
            None => Ok(()),
        }
    }

    /// [`Cluster::check_daemon`] for every node.
    pub fn check_daemons(&self) -> Result<()> {
        (0..self.nodes()).try_for_each(|i| self.check_daemon(i))
    }

    /// Who holds the VIP now, node by node (see [`Rig::vip_sample`]).
    pub fn vip_sample(&self) -> Result<VipSample> {
        self.rig.vip_sample(VIP)
    }

    /// The powered nodes holding the VIP (a dead node is not asked: the demo polls this to
    /// time the VIP's move).
    pub fn holders(&self) -> Result<Vec<usize>> {
        self.rig.holders(VIP, &self.rig.powered())
    }

    /// Node `i` is the one master. An agent: MASTER with the database promoted, the only
    /// holder of the VIP, its server writable. UCARP, keepalived: the only holder of the VIP.
    pub fn is_sole_master(&self, i: usize) -> bool {
        if !self.config.imp.is_agent() {
            return self.holders().is_ok_and(|h| h == [i]);
        }
        self.status(i)
            .is_ok_and(|s| s.is_master() && s.db_role() == "master")
            && self.holders().is_ok_and(|h| h == [i])
            && self.servers[i]
                .scalar("SELECT @@read_only")
                .is_ok_and(|v| v.as_deref() == Some("0"))
    }

    /// Waits until node `i` is the sole master; how long that took.
    pub fn wait_sole_master(&self, i: usize, timeout: Duration) -> Result<Duration> {
        wait_until(timeout, &format!("node{i} is the sole master"), || {
            self.check_daemons()?;
            Ok(self.is_sole_master(i))
        })
    }

    /// Node `i`'s server is read-only and replicates from `master` over verified TLS with
    /// GTIDs, both threads running; an agent there is BACKUP with the database a replica.
    pub fn is_replica_of(&self, i: usize, master: usize) -> bool {
        if self.config.imp.is_agent() {
            let Ok(s) = self.status(i) else { return false };
            if s.is_master() || s.db_role() != "replica" {
                return false;
            }
        }
        let Ok(st) = self.servers[i].slave_status() else {
            return false;
        };
        let is = |k: &str, v: &str| st.get(k).map(String::as_str) == Some(v);
        self.servers[i]
            .scalar("SELECT @@read_only")
            .is_ok_and(|v| v.as_deref() == Some("1"))
            && is("Master_Host", &self.rig.addr(master).to_string())
            && is("Slave_IO_Running", "Yes")
            && is("Slave_SQL_Running", "Yes")
            && is("Master_SSL_Allowed", "Yes")
            && is("Master_SSL_Verify_Server_Cert", "Yes")
            && is("Using_Gtid", "Slave_Pos")
    }

    pub fn wait_replica_of(&self, i: usize, master: usize, timeout: Duration) -> Result<Duration> {
        wait_until(
            timeout,
            &format!("node{i} replicates from node{master} over verified TLS"),
            || {
                self.check_daemons()?;
                Ok(self.is_replica_of(i, master))
            },
        )
    }

    /// Waits until `master` has `n` semi-sync replicas connected.
    pub fn wait_semi_sync_clients(
        &self,
        master: usize,
        n: usize,
        timeout: Duration,
    ) -> Result<Duration> {
        wait_until(
            timeout,
            &format!("node{master} has {n} semi-sync replica(s)"),
            || {
                let out = self.servers[master]
                    .sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")?;
                Ok(out.split_whitespace().nth(1) == Some(n.to_string().as_str()))
            },
        )
    }

    /// The usual start: node0's daemon alone, until node0 is the sole master (its database
    /// promoted); for UCARP and keepalived, replication set up by hand; then the other nodes'
    /// daemons, until every one replicates from node0 (agents: semi-sync connected too) and
    /// node0 is still the sole master. `ranks[i]` is node `i`'s; `limit` bounds each step.
    pub fn bring_up(&mut self, ranks: &[Rank], limit: Duration) -> Result<BroughtUp> {
        let n = self.nodes();
        ensure!(ranks.len() == n, "{} ranks for {n} nodes", ranks.len());
        self.start_daemon(0, ranks[0])?;
        let master_after = self.wait_sole_master(0, limit)?;
        let agent = self.config.imp.is_agent();
        if !agent {
            self.start_static_replication(0)?;
        }
        let backups_started = mono_ns();
        for (i, &rank) in ranks.iter().enumerate().skip(1) {
            self.start_daemon(i, rank)?;
        }
        for i in 1..n {
            self.wait_replica_of(i, 0, limit)?;
        }
        if agent {
            self.wait_semi_sync_clients(0, n - 1, limit)?;
        }
        self.wait_sole_master(0, limit)?;
        Ok(BroughtUp {
            master_after,
            backups_started,
        })
    }

    /// What an operator of a UCARP or keepalived cluster sets up by hand: node `master`'s
    /// database writable, every other one replicating from it over verified TLS.
    pub fn start_static_replication(&self, master: usize) -> Result<()> {
        let repl_pw = self.files.repl_password()?;
        self.servers[master].sql("SET GLOBAL read_only = 0")?;
        for i in (0..self.nodes()).filter(|&i| i != master) {
            let f = &self.files.nodes[i];
            let sql = format!(
                "CHANGE MASTER TO MASTER_HOST = '{host}', MASTER_PORT = {PORT}, \
                 MASTER_USER = 'cluster_repl', MASTER_PASSWORD = '{repl_pw}', \
                 MASTER_USE_GTID = slave_pos, MASTER_SSL = 1, MASTER_SSL_CA = '{ca}', \
                 MASTER_SSL_CERT = '{cert}', MASTER_SSL_KEY = '{key}', \
                 MASTER_SSL_VERIFY_SERVER_CERT = 1, MASTER_CONNECT_RETRY = 1; START SLAVE;",
                host = self.rig.addr(master),
                ca = f.ca.display(),
                cert = f.client_cert.display(),
                key = f.client_key.display(),
            );
            self.servers[i].sql(&sql)?;
        }
        wait_until(
            Duration::from_secs(20),
            "every replica connected to the master",
            || -> Result<bool> {
                for i in (0..self.nodes()).filter(|&i| i != master) {
                    let st = self.servers[i].slave_status()?;
                    if st.get("Slave_IO_Running").map(String::as_str) != Some("Yes") {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .map(drop)
    }

    /// Power cut of node `i`: its daemon, its server and everything else in it stop at once
    /// and its port goes down. Returns the instant of the cut (`mono_ns`). The processes stay
    /// frozen until the node is powered on (see [`Rig::power_cut_frozen`]), so that the
    /// takeover on the other nodes does not share the machine with their deaths.
    pub fn power_cut(&mut self, i: usize) -> Result<u64> {
        let t = self.rig.power_cut_frozen(i)?;
        self.frozen[i] = (self.daemons[i].take(), self.servers[i].take_proc());
        Ok(t)
    }

    /// Node `i` boots again: port up, own address back, its server restarted on its data
    /// (crash recovery); the daemon is left to the caller.
    pub fn power_on(&mut self, i: usize) -> Result<()> {
        self.rig.bury(i)?;
        self.frozen[i] = (None, None);
        self.rig.power_on(i)?;
        self.servers[i].restart()
    }

    /// Rebuilds node `i`'s database from node `master`'s, as an operator does with a node the
    /// agent refuses as errant: a consistent dump of the application's schema and its GTID
    /// position, loaded outside the binary log after this node's binary log and replication
    /// are reset. Node `i`'s daemon must be stopped; start it again afterwards.
    pub fn rebuild_from(&mut self, i: usize, master: usize) -> Result<()> {
        ensure!(
            self.daemons[i].is_none(),
            "stop node{i}'s daemon before rebuilding its database"
        );
        // Everything the source logged before the dump; the dump's position adds what came
        // after. Without it the rebuilt node's log would seem to lack every transaction the
        // dump brought, and a node catching up from it could never get them.
        let state_before = self.servers[master]
            .scalar("SELECT @@gtid_binlog_state")?
            .unwrap_or_default();
        let dump_bin = ["/usr/bin/mariadb-dump", "/usr/bin/mysqldump"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .context("mariadb-dump is not installed (Debian package mariadb-client)")?;
        let out = crate::cmd::output_within(
            std::process::Command::new(dump_bin)
                .arg("--no-defaults")
                .arg(format!(
                    "--socket={}",
                    self.servers[master].socket().display()
                ))
                .args([
                    "--user=root",
                    "--single-transaction",
                    "--gtid",
                    "--master-data=2",
                    "--databases",
                    "t",
                ]),
            Duration::from_secs(60),
        )?;
        ensure!(
            out.status.success(),
            "dumping node{master}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = String::from_utf8(out.stdout).context("the dump is not UTF-8")?;
        // `--master-data=2 --gtid` writes the position as a comment.
        let pos = dump
            .lines()
            .find_map(|l| {
                let rest = l.split("gtid_slave_pos='").nth(1)?;
                Some(rest.split('\'').next()?.to_string())
            })
            .context("the dump names no GTID position")?;
        let state = binlog_state_at(&state_before, &pos)?;
        let sql = format!(
            "SET SESSION sql_log_bin = 0;\n\
             STOP SLAVE;\n\
             RESET SLAVE ALL;\n\
             SET GLOBAL read_only = ON;\n\
             DROP DATABASE IF EXISTS t;\n\
             RESET MASTER;\n\
             {dump}\n\
             SET GLOBAL gtid_binlog_state = '{state}';\n\
             SET GLOBAL gtid_slave_pos = '{pos}';\n"
        );
        self.servers[i].sql(&sql)?;
        Ok(())
    }

    /// The application's view: the database through the VIP, from the client namespace.
    pub fn vip(&self) -> Result<VipClient> {
        Ok(VipClient {
            ns: self
                .rig
                .client_ns()
                .context("the rig has no client")?
                .to_string(),
            ca: self.files.ca.clone(),
            host: VIP.to_string(),
            port: PORT,
            password: self.files.app_password()?,
            verify_name: true,
        })
    }

    /// A client of the database through the VIP by way of a [`Relay`] in the client
    /// namespace (connections retried every few milliseconds, given up after `limit`).
    pub fn vip_relayed(&self, limit: Duration) -> Result<(VipClient, Relay)> {
        let ns = self.rig.client_ns().context("client namespace")?;
        let relay = Relay::start(ns, SocketAddr::from((VIP, PORT)), limit)?;
        let mut app = self.vip()?;
        app.host = Ipv4Addr::LOCALHOST.to_string();
        app.port = relay.port;
        app.verify_name = false;
        Ok((app, relay))
    }

    /// The ids in `t.rows` on node `i`'s server (as root, on its socket).
    pub fn ids(&self, i: usize) -> Result<Vec<i64>> {
        // An agent that fences its server ends every client session, ours too: read again.
        let mut last = None;
        let rows = crate::wait::wait_for(
            Duration::from_secs(10),
            &format!("node{i}'s rows"),
            || match self.servers[i].sql("SELECT id FROM t.rows ORDER BY id") {
                Ok(rows) => Ok(Some(rows)),
                Err(e) => {
                    last = Some(e);
                    Ok(None)
                }
            },
        )
        .map_err(|e| {
            last.take()
                .map_or(e, |l| l.context("reading the rows kept failing"))
        })?;
        rows.lines()
            .map(|l| {
                l.trim()
                    .parse()
                    .with_context(|| format!("id {l:?} on node{i}"))
            })
            .collect()
    }
}

/// A MariaDB binary log state (`domain-server-seq` per domain and server) as of a dump: the
/// state read before it, with the dump's position (the last GTID of each domain) added, and
/// each domain's position last, as MariaDB takes the last entry of a domain for its position.
fn binlog_state_at(before: &str, pos: &str) -> Result<String> {
    let parse = |s: &str| -> Result<Vec<(u32, u32, u64)>> {
        s.split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|g| {
                let mut it = g.split('-');
                let mut next = || it.next().with_context(|| format!("bad GTID {g:?}"));
                Ok((next()?.parse()?, next()?.parse()?, next()?.parse()?))
            })
            .collect()
    };
    let last = parse(pos)?;
    let mut state: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for (d, srv, n) in parse(before)?.into_iter().chain(last.iter().copied()) {
        let e = state.entry((d, srv)).or_insert(n);
        *e = (*e).max(n);
    }
    let mut out: Vec<String> = Vec::new();
    for (&(d, srv), &n) in &state {
        if !last.iter().any(|l| l.0 == d && l.1 == srv) {
            out.push(format!("{d}-{srv}-{n}"));
        }
    }
    for (d, srv, _) in &last {
        out.push(format!("{d}-{srv}-{}", state[&(*d, *srv)]));
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod binlog_state_tests {
    use super::binlog_state_at;

    #[test]
    fn the_dump_position_is_added_and_last_in_its_domain() {
        assert_eq!(
            binlog_state_at("0-1-16541,0-3-17145,0-2-17000", "0-2-17200").unwrap(),
            "0-1-16541,0-3-17145,0-2-17200"
        );
        assert_eq!(binlog_state_at("", "0-1-5").unwrap(), "0-1-5");
        assert_eq!(
            binlog_state_at("0-1-9,1-2-3", "0-1-9,1-2-4").unwrap(),
            "0-1-9,1-2-4"
        );
        assert!(binlog_state_at("0-x-1", "0-1-1").is_err());
    }
}
