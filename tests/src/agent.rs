//! The agent under test: starting it in a rig node, reading its status over the control
//! socket, running its offline commands.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::cmd;
use crate::env::agent_bin;
use crate::proc::Proc;
use crate::rig::{NODE_IF, Rig};
use crate::wait::POLL;

/// How long one `status` call may take before it counts as a hang.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of one agent. Defaults: advbase 1, advskew 0, deadratio 3, no preempt, the XDP
/// mode left to the agent.
#[derive(Clone, Debug)]
pub struct AgentOpts {
    pub vhid: u8,
    pub pass: String,
    /// VIP with its prefix length, as passed to `-a`.
    pub vip: String,
    pub advbase: u8,
    pub advskew: u8,
    pub deadratio: u32,
    pub preempt: bool,
    pub xdp: Option<String>,
    /// Source address; the node's own address when `None`.
    pub src: Option<Ipv4Addr>,
    pub extra: Vec<String>,
}

impl AgentOpts {
    /// `vip` may carry a prefix (`10.99.0.100/24`).
    pub fn new(vhid: u8, pass: &str, vip: &str) -> AgentOpts {
        AgentOpts {
            vhid,
            pass: pass.to_string(),
            vip: vip.to_string(),
            advbase: 1,
            advskew: 0,
            deadratio: 3,
            preempt: false,
            // `cargo xtask test` runs the suite once per data-plane mode through this variable.
            xdp: std::env::var("CLUSTER_TEST_XDP")
                .ok()
                .filter(|m| !m.is_empty()),
            src: None,
            extra: Vec::new(),
        }
    }

    pub fn advbase(mut self, v: u8) -> Self {
        self.advbase = v;
        self
    }

    pub fn advskew(mut self, v: u8) -> Self {
        self.advskew = v;
        self
    }

    pub fn deadratio(mut self, v: u32) -> Self {
        self.deadratio = v;
        self
    }

    pub fn preempt(mut self, v: bool) -> Self {
        self.preempt = v;
        self
    }

    pub fn xdp(mut self, mode: &str) -> Self {
        self.xdp = Some(mode.to_string());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    /// The VIP address without its prefix.
    pub fn vip_addr(&self) -> Ipv4Addr {
        self.vip
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("VIP is an IPv4 address")
    }

    /// Master-down time in BACKUP: `advbase * deadratio + advskew / 256` seconds.
    pub fn master_down(&self) -> Duration {
        crate::ucarp::master_down(self.advbase, self.advskew, self.deadratio)
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
    pub transitions: u64,
    #[serde(default)]
    pub arp_conflicts: u64,
}

/// `cluster-agent status --json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub state: String,
    pub vhid: u8,
    pub vip: String,
    pub interface: String,
    pub master: Option<String>,
    pub since_last_advert_ms: Option<u64>,
    pub xdp: String,
    pub counters: Counters,
    #[serde(default)]
    pub xdp_counters: BTreeMap<String, u64>,
    /// Present when the agent manages a database.
    #[serde(default)]
    pub database: Option<crate::mariadb::DbStatus>,
}

impl Status {
    pub fn is_master(&self) -> bool {
        self.state == "MASTER"
    }

    pub fn is_backup(&self) -> bool {
        self.state == "BACKUP"
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
    /// Queries the agent's status over its control socket.
    pub fn status(&self) -> anyhow::Result<Status> {
        query_status(&self.socket)
    }

    /// The status, or a panic naming the agent and the error.
    pub fn status_now(&self) -> Status {
        self.status()
            .unwrap_or_else(|e| panic!("status of {}: {e:#}", self.proc.name()))
    }

    /// True if the agent answers and reports MASTER.
    pub fn is_master(&self) -> bool {
        self.status().is_ok_and(|s| s.is_master())
    }

    /// True if the agent answers and reports BACKUP.
    pub fn is_backup(&self) -> bool {
        self.status().is_ok_and(|s| s.is_backup())
    }

    /// Waits until the control socket answers; returns the first status. Panics with the
    /// last error if it does not answer within `timeout`, or if the agent exits meanwhile.
    pub fn wait_ready(&mut self, timeout: Duration) -> Status {
        let start = std::time::Instant::now();
        let mut last_err = String::from("no attempt");
        for _ in 0..timeout.as_millis() / POLL.as_millis() + 2 {
            if let Some(st) = self.proc.try_status() {
                panic!("{} exited during start-up with {st}", self.proc.name());
            }
            match self.status() {
                Ok(s) => return s,
                Err(e) => last_err = format!("{e:#}"),
            }
            if start.elapsed() > timeout {
                break;
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "{} did not answer status within {timeout:?}: {last_err}",
            self.proc.name()
        );
    }
}

/// Runs `cluster-agent status --json --control-socket <socket>`.
pub fn query_status(socket: &Path) -> anyhow::Result<Status> {
    let mut c = Command::new(agent_bin());
    c.args(["status", "--json", "--control-socket"]).arg(socket);
    let out = cmd::output_timeout(&mut c, STATUS_TIMEOUT)
        .with_context(|| format!("`status` did not answer within {STATUS_TIMEOUT:?}"))?;
    if !out.status.success() {
        bail!(
            "`status` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "`status --json` output is not the expected JSON: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })
}

/// Runs `cluster-agent inspect --json -p <pass> -a <vip> <pcap>`.
pub fn inspect(pcap: &Path, pass: &str, vip: Ipv4Addr) -> Vec<Inspected> {
    let mut c = Command::new(agent_bin());
    c.args(["inspect", "--json", "-p", pass, "-a", &vip.to_string()])
        .arg(pcap);
    let out = cmd::output_timeout(&mut c, Duration::from_secs(10)).expect("inspect hangs");
    assert!(
        out.status.success(),
        "inspect failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect --json output is not a JSON array of adverts ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs the agent binary with `args` (in namespace `ns` if given) and a time limit.
/// Returns `None` if it was still running at the limit (and has been killed).
pub fn run_agent_cmd(ns: Option<&str>, args: &[&str], timeout: Duration) -> Option<Output> {
    let bin = agent_bin();
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
        let src = o.src.unwrap_or_else(|| self.addr(node));
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
            &o.advbase.to_string(),
            "-k",
            &o.advskew.to_string(),
            "-r",
            &o.deadratio.to_string(),
            "--control-socket",
            &self.agent_socket(node).to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if o.preempt {
            a.push("-P".into());
        }
        if let Some(x) = &o.xdp {
            a.push("--xdp".into());
            a.push(x.clone());
        }
        a.extend(o.extra.iter().cloned());
        a
    }

    /// Starts the agent on node `i` (not waiting for it to answer).
    pub fn spawn_agent(&self, node: usize, o: &AgentOpts) -> Agent {
        let bin = agent_bin();
        let args = self.agent_args(node, o);
        let mut c = cmd::netns_command(self.ns(node), &bin, &args);
        if std::env::var_os("RUST_LOG").is_none() {
            c.env("RUST_LOG", "debug");
        }
        let proc = Proc::spawn(
            format!("agent@node{node}"),
            c,
            &self.log_path(&format!("agent-n{node}")),
        );
        Agent {
            proc,
            socket: self.agent_socket(node),
            opts: o.clone(),
            node,
        }
    }

    /// Starts the agent on node `i` and waits until its control socket answers.
    pub fn start_agent(&self, node: usize, o: &AgentOpts) -> Agent {
        let mut a = self.spawn_agent(node, o);
        a.wait_ready(Duration::from_secs(10));
        a
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
