//! The agent under test: starting it in a rig node, reading its status over the control
//! socket, running its offline commands.
//!
//! [`Status`] is the harness's own reading of `status --json`, written from the documented
//! contract rather than taken from the agent's crate, so a change of the JSON breaks the tests.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cmd;
use crate::env::agent_bin;
use crate::mariadb::AgentDb;
use crate::proc::Proc;
use crate::rig::{NODE_IF, Rig};
use crate::timing::{Timed, Timing};
use crate::wait::wait_for;

/// How long one `status` call may take before it counts as a hang.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a started agent may take to answer on its control socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one agent: [`Timing`] defaults, the XDP mode left to the agent unless the
/// test run asks for one (`CLUSTER_TEST_XDP`), no database.
#[derive(Clone, Debug)]
pub struct AgentOpts {
    pub vhid: u8,
    pub pass: String,
    /// VIP with its prefix length, as passed to `-a`.
    pub vip: String,
    pub timing: Timing,
    pub xdp: Option<String>,
    /// Source address; the node's own address when `None`.
    pub src: Option<Ipv4Addr>,
    /// The `[mysql]` settings, when the agent moves a database with the VIP.
    pub db: Option<AgentDb>,
    pub extra: Vec<String>,
    /// Environment variables the agent gets besides the test's own.
    pub env: Vec<(String, String)>,
    /// A TOML file holding every election setting instead of flags (`--config`), so that a
    /// reload can change them; the fields above other than `xdp` and `extra` are then unused.
    pub config: Option<PathBuf>,
}

impl Timed for AgentOpts {
    fn timing(&self) -> &Timing {
        &self.timing
    }

    fn timing_mut(&mut self) -> &mut Timing {
        &mut self.timing
    }
}

impl AgentOpts {
    /// `vip` may carry a prefix (`10.99.0.100/24`).
    pub fn new(vhid: u8, pass: &str, vip: &str) -> AgentOpts {
        AgentOpts {
            vhid,
            pass: pass.to_string(),
            vip: vip.to_string(),
            timing: Timing::default(),
            // `cargo xtask test` runs the suite once per data-plane mode through this variable.
            xdp: std::env::var("CLUSTER_TEST_XDP")
                .ok()
                .filter(|m| !m.is_empty()),
            src: None,
            db: None,
            extra: Vec::new(),
            env: Vec::new(),
            config: None,
        }
    }

    /// Settings from `file` (see [`AgentOpts::config`]).
    pub fn config_file(mut self, file: &Path) -> Self {
        self.config = Some(file.to_path_buf());
        self
    }

    pub fn xdp(mut self, mode: &str) -> Self {
        self.xdp = Some(mode.to_string());
        self
    }

    pub fn db(mut self, db: AgentDb) -> Self {
        self.db = Some(db);
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The VIP address without its prefix.
    pub fn vip_addr(&self) -> Result<Ipv4Addr> {
        self.vip
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("VIP {:?} is not an IPv4 address", self.vip))
    }
}

/// The agent's counters as `status --json` reports them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub auth_failures: u64,
    #[serde(default)]
    pub replayed: u64,
    pub bad_packets: u64,
    /// Packets the advert socket dropped before the agent read them (without XDP).
    #[serde(default)]
    pub socket_drops: u64,
    pub transitions: u64,
    #[serde(default)]
    pub arp_conflicts: u64,
}

/// What `status --json` says about the database.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DbStatus {
    pub role: String,
    pub gate: Option<String>,
    #[serde(default)]
    pub errant: Vec<String>,
    pub last_error: Option<String>,
    /// Known to hold every write the master acknowledged.
    #[serde(default)]
    pub current: bool,
    /// Why a MASTER keeps its database closed: the outcome of its last attempt, which an
    /// `operation` under way (a new prepare, a catch-up) may be about to change.
    #[serde(default)]
    pub refused: Option<String>,
    /// The database operation under way (`prepare`, `catch-up`, `promote`, ...).
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub semi_sync: Option<SemiSync>,
    #[serde(default)]
    pub semi_sync_fallbacks: u64,
    #[serde(default)]
    pub fence_error: Option<String>,
    /// Why a MASTER waits for the quorum lease before it opens.
    #[serde(default)]
    pub quorum_wait: Option<String>,
}

/// The quorum lease as `status --json` reports it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QuorumStatus {
    /// `held`, `held-by-other`, `free`, `unreachable` or `unknown`.
    pub state: String,
    pub holder: Option<String>,
    pub epoch: Option<i64>,
    pub write_left_ms: Option<u64>,
    pub error: Option<String>,
}

/// The master side of semi-sync as `status --json` reports it.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct SemiSync {
    pub on: bool,
    pub no_tx: u64,
    pub clients: u32,
}

/// `cluster-agent status --json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub state: String,
    pub vhid: u8,
    pub vip: String,
    /// A vhid's addresses after the first.
    #[serde(default)]
    pub more_vips: Vec<String>,
    pub interface: String,
    pub master: Option<String>,
    pub since_last_advert_ms: Option<u64>,
    /// The skew advertised now: the configured one, or the demoted one (240).
    pub advskew: u8,
    pub demoted: bool,
    pub xdp: String,
    pub counters: Counters,
    #[serde(default)]
    pub xdp_counters: BTreeMap<String, u64>,
    /// Present when the agent manages a database.
    #[serde(default)]
    pub database: Option<DbStatus>,
    /// Accounts that can write through `read_only`.
    #[serde(default)]
    pub read_only_bypass: Vec<String>,
    /// Durability settings of the local server that can lose acknowledged writes.
    #[serde(default)]
    pub unsafe_settings: Vec<String>,
    /// The last transition to MASTER, step by step.
    #[serde(default)]
    pub last_takeover: Option<Takeover>,
    /// With `--quorum-endpoint`.
    #[serde(default)]
    pub quorum: Option<QuorumStatus>,
    /// The `[[track]]` service checks.
    #[serde(default)]
    pub tracks: Vec<TrackStatus>,
    /// The agent's other vhids, when it serves several.
    #[serde(default)]
    pub other_vhids: Vec<Status>,
}

impl Status {
    /// This vhid's entry: the first one, or one of [`Status::other_vhids`].
    pub fn vhid(&self, vhid: u8) -> Option<&Status> {
        std::iter::once(self)
            .chain(&self.other_vhids)
            .find(|s| s.vhid == vhid)
    }
}

/// A service check as `status --json` reports it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TrackStatus {
    pub name: String,
    pub passing: bool,
    pub probes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// A takeover as `status --json` reports it: CLOCK_MONOTONIC instants (comparable with
/// [`crate::wait::mono_ns`]).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct Takeover {
    pub reason: String,
    pub at_ns: u64,
    pub steps: Vec<TakeoverStep>,
    pub complete: bool,
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct TakeoverStep {
    pub name: String,
    pub at_ns: u64,
}

impl Takeover {
    /// Every step as `name +ms` after the transition, comma-separated: the line a report
    /// gives each failover.
    pub fn steps_line(&self) -> String {
        self.steps
            .iter()
            .map(|s| {
                format!(
                    "{} +{:.1}",
                    s.name,
                    s.at_ns.saturating_sub(self.at_ns) as f64 / 1e6
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Milliseconds from the transition to the first step named `name`.
    pub fn after_ms(&self, name: &str) -> Option<f64> {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.at_ns.saturating_sub(self.at_ns) as f64 / 1e6)
    }
}

impl Status {
    pub fn is_master(&self) -> bool {
        self.state == "MASTER"
    }

    pub fn is_backup(&self) -> bool {
        self.state == "BACKUP"
    }

    /// The database's role (`master`, `replica`, `fenced`), empty without a database.
    pub fn db_role(&self) -> &str {
        self.database.as_ref().map_or("", |d| d.role.as_str())
    }
}

/// One advert as `cluster-agent inspect --json` reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct Inspected {
    pub vhid: u8,
    pub source: String,
    pub advbase: u8,
    pub advskew: u8,
    pub counter: u64,
    pub authentic: bool,
}

/// A running agent.
pub struct Agent {
    pub proc: Proc,
    pub socket: PathBuf,
    pub opts: AgentOpts,
    pub node: usize,
}

impl Agent {
    /// Asks the agent for a planned switchover (`cluster-agent switchover`) and waits for its
    /// answer: `Err` if it did not answer within `limit`, `Ok(Err(why))` if it refused.
    pub fn switchover(&self, limit: Duration) -> Result<Result<(), String>> {
        let socket = self.socket.to_string_lossy();
        let out = run_agent_cmd(None, &["switchover", "--control-socket", &socket], limit)?
            .with_context(|| format!("`switchover` on {} did not answer", self.proc.name()))?;
        Ok(if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`switchover` on {} refused ({}): {}",
                self.proc.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
    }

    /// Queries the agent's status over its control socket.
    pub fn status(&self) -> Result<Status> {
        query_status(&self.socket).with_context(|| format!("status of {}", self.proc.name()))
    }

    /// True if the agent answers and reports MASTER.
    pub fn is_master(&self) -> bool {
        self.status().is_ok_and(|s| s.is_master())
    }

    /// True if the agent answers and reports BACKUP.
    pub fn is_backup(&self) -> bool {
        self.status().is_ok_and(|s| s.is_backup())
    }

    /// Waits until the control socket answers; returns the first status. An error if it does
    /// not answer within `timeout` (with the last error), or if the agent exits meanwhile.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Status> {
        let mut last_err = String::from("no attempt");
        let what = format!("{} answers on its control socket", self.proc.name());
        wait_for(timeout, &what, || {
            self.proc.check_alive()?;
            match self.status() {
                Ok(s) => Ok(Some(s)),
                Err(e) => {
                    last_err = format!("{e:#}");
                    Ok(None)
                }
            }
        })
        .with_context(|| format!("last error: {last_err}"))
    }

    /// SIGSTOP: the agent hangs, its sockets and XDP program in place.
    pub fn freeze(&mut self) -> Result<()> {
        self.proc.freeze()
    }

    pub fn thaw(&mut self) -> Result<()> {
        self.proc.thaw()
    }

    /// SIGTERM and a bounded wait: a MASTER bows out, removes the VIP and runs its down script.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.proc.stop(timeout)
    }

    /// SIGKILL: the agent crashes, leaving its VIP and its database's state behind.
    pub fn kill(&mut self) {
        self.proc.kill()
    }
}

/// Runs `cluster-agent status --json --control-socket <socket>`.
pub fn query_status(socket: &Path) -> Result<Status> {
    let socket = socket.to_string_lossy();
    agent_json(
        &["status", "--json", "--control-socket", &socket],
        STATUS_TIMEOUT,
    )
}

/// Runs `cluster-agent inspect --json -p <pass> -a <vip> <pcap>`.
pub fn inspect(pcap: &Path, pass: &str, vip: Ipv4Addr) -> Result<Vec<Inspected>> {
    let (vip, pcap) = (vip.to_string(), pcap.to_string_lossy());
    agent_json(
        &["inspect", "--json", "-p", pass, "-a", &vip, &pcap],
        Duration::from_secs(10),
    )
}

/// Runs one of the agent's offline commands (in the host) and reads its JSON answer.
fn agent_json<T: serde::de::DeserializeOwned>(args: &[&str], timeout: Duration) -> Result<T> {
    let what = args.first().copied().unwrap_or_default();
    let out = run_agent_cmd(None, args, timeout)?
        .with_context(|| format!("`{what}` did not answer within {timeout:?}"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "`{what} --json` output is not the expected JSON: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })
}

/// Runs the agent binary with `args` (in namespace `ns` if given) and a time limit.
/// `Ok(None)` if it was still running at the limit (and has been killed).
pub fn run_agent_cmd(ns: Option<&str>, args: &[&str], timeout: Duration) -> Result<Option<Output>> {
    let bin = agent_bin()?;
    let mut c = match ns {
        Some(ns) => cmd::netns_command(ns, &bin, args),
        None => {
            let mut c = Command::new(&bin);
            c.args(args);
            c
        }
    };
    cmd::output_timeout(&mut c, timeout)
}

impl Rig {
    /// Control-socket path of the agent on node `i`. Stable across restarts on that node.
    pub fn agent_socket(&self, node: usize) -> PathBuf {
        self.dir().join(format!("agent-n{node}.sock"))
    }

    /// The `run` arguments for `o` on node `i`.
    pub fn agent_args(&self, node: usize, o: &AgentOpts) -> Vec<String> {
        if let Some(file) = &o.config {
            let mut a: Vec<String> = vec![
                "run".into(),
                "--config".into(),
                file.display().to_string(),
                "--control-socket".into(),
                self.agent_socket(node).display().to_string(),
            ];
            if let Some(x) = &o.xdp {
                a.extend(["--xdp".into(), x.clone()]);
            }
            a.extend(o.extra.iter().cloned());
            return a;
        }
        let src = o.src.unwrap_or_else(|| self.addr(node));
        let t = &o.timing;
        let mut a: Vec<String> = [
            "run",
            "-i",
            NODE_IF,
            "-s",
            &src.to_string(),
            "-v",
            &o.vhid.to_string(),
            "-p",
            &o.pass,
            "-a",
            &o.vip,
            "-b",
            &t.advbase.to_string(),
            "-k",
            &t.advskew.to_string(),
            "-r",
            &t.deadratio.to_string(),
            "--control-socket",
            &self.agent_socket(node).to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if t.preempt {
            a.push("-P".into());
        }
        if let Some(x) = &o.xdp {
            a.push("--xdp".into());
            a.push(x.clone());
        }
        if let Some(db) = &o.db {
            a.extend(db.flags());
        }
        a.extend(o.extra.iter().cloned());
        a
    }

    /// Starts the agent on node `i` (not waiting for it to answer).
    pub fn spawn_agent(&self, node: usize, o: &AgentOpts) -> Result<Agent> {
        let args = self.agent_args(node, o);
        let mut c = cmd::netns_command(self.ns(node), agent_bin()?, &args);
        if std::env::var_os("RUST_LOG").is_none() {
            c.env("RUST_LOG", "debug");
        }
        c.envs(o.env.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn(
            format!("agent@node{node}"),
            c,
            &self.log_path(&format!("agent-n{node}")),
        )?;
        Ok(Agent {
            proc,
            socket: self.agent_socket(node),
            opts: o.clone(),
            node,
        })
    }

    /// Starts the agent on node `i` and waits until its control socket answers.
    pub fn start_agent(&self, node: usize, o: &AgentOpts) -> Result<Agent> {
        let mut a = self.spawn_agent(node, o)?;
        a.wait_ready(READY_TIMEOUT)?;
        Ok(a)
    }
}

/// Indices (into `agents`) of the agents that answer and report MASTER.
pub fn masters(agents: &[&Agent]) -> Vec<usize> {
    agents
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_master())
        .map(|(i, _)| i)
        .collect()
}
