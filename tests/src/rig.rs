//! A rig: one namespace acting as an Ethernet switch (a Linux bridge) and one namespace per
//! node, each node wired to the switch with a veth pair (`eth0` in the node, `p<i>` on the
//! bridge). Optionally a client namespace on the same segment.
//!
//! Power failure takes the node's switch port down and kills everything in the node;
//! a partition detaches the port from the bridge while its carrier stays up.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::cmd::{self, ip, ip_ok};
use crate::proc::Proc;
use crate::wait::wait_until;

/// Prefix of every namespace a rig creates; followed by `<pid>-<counter>-<role>`.
pub const NS_PREFIX: &str = "carig-";
/// Interface name of a node's port inside its namespace.
pub const NODE_IF: &str = "eth0";
const BRIDGE: &str = "br0";
const SETTLE: Duration = Duration::from_secs(5);

static RIG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Addresses of the nodes (in order) and of the optional client, all in one subnet.
#[derive(Clone, Debug)]
pub struct RigConfig {
    pub addrs: Vec<Ipv4Addr>,
    pub prefix: u8,
    pub client: Option<Ipv4Addr>,
}

impl RigConfig {
    /// `n` nodes at 10.99.0.1, 10.99.0.2, ... with prefix /24, no client.
    pub fn nodes(n: usize) -> RigConfig {
        assert!((1..=200).contains(&n), "unreasonable node count {n}");
        RigConfig {
            addrs: (0..n)
                .map(|i| Ipv4Addr::new(10, 99, 0, 1 + i as u8))
                .collect(),
            prefix: 24,
            client: None,
        }
    }

    /// Nodes at the given addresses, all with the given prefix length.
    pub fn with_addrs(addrs: &[Ipv4Addr], prefix: u8) -> RigConfig {
        RigConfig {
            addrs: addrs.to_vec(),
            prefix,
            client: None,
        }
    }

    /// Adds a client namespace at `addr`.
    pub fn client(mut self, addr: Ipv4Addr) -> RigConfig {
        self.client = Some(addr);
        self
    }
}

struct Port {
    ns: String,
    port: String,
    addr: Ipv4Addr,
}

pub struct Rig {
    id: String,
    switch: String,
    nodes: Vec<Port>,
    client: Option<Port>,
    prefix: u8,
    dir: PathBuf,
    /// Every namespace created so far, removed on drop (also when construction fails halfway).
    created: Vec<String>,
}

#[derive(Deserialize)]
struct IpAddrJson {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Deserialize)]
struct IpLinkJson {
    #[serde(default)]
    operstate: String,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Deserialize)]
struct BridgeLinkJson {
    ifname: String,
    #[serde(default)]
    state: String,
}

impl Rig {
    /// Builds the rig described by `cfg` and waits until every port forwards.
    pub fn new(cfg: RigConfig) -> Rig {
        remove_stale_rigs();
        let n = RIG_COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{NS_PREFIX}{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create rig directory");
        let mut rig = Rig {
            switch: format!("{id}-sw"),
            id,
            nodes: Vec::new(),
            client: None,
            prefix: cfg.prefix,
            dir,
            created: Vec::new(),
        };
        let sw = rig.switch.clone();
        rig.add_ns(&sw);
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &sw, "link", "set", BRIDGE, "up"]);
        for (i, addr) in cfg.addrs.iter().enumerate() {
            let port = rig.wire(&format!("{}-n{i}", rig.id), &format!("p{i}"), *addr);
            rig.nodes.push(port);
        }
        if let Some(addr) = cfg.client {
            let port = rig.wire(&format!("{}-cl", rig.id), "pc", addr);
            rig.client = Some(port);
        }
        for i in 0..rig.nodes.len() {
            rig.wait_port_forwarding(&rig.nodes[i].port.clone());
            rig.wait_carrier(&rig.nodes[i].ns.clone());
        }
        if let Some(c) = &rig.client {
            let (port, ns) = (c.port.clone(), c.ns.clone());
            rig.wait_port_forwarding(&port);
            rig.wait_carrier(&ns);
        }
        rig
    }

    fn add_ns(&mut self, ns: &str) {
        ip(&["netns", "add", ns]);
        self.created.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    fn wire(&mut self, ns: &str, port: &str, addr: Ipv4Addr) -> Port {
        self.add_ns(ns);
        let sw = self.switch.clone();
        ip(&[
            "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", NODE_IF, "netns", ns,
        ]);
        ip(&["-n", &sw, "link", "set", port, "master", BRIDGE, "up"]);
        // A native-mode XDP_TX on the node side (the agent answering ARP) reaches a veth peer
        // only when the peer has GRO on, as a real NIC's switch port would simply receive it.
        cmd::run(&mut cmd::netns_command(
            &sw,
            "ethtool",
            &["-K", port, "gro", "on"],
        ));
        let cidr = format!("{addr}/{}", self.prefix);
        ip(&["-n", ns, "addr", "add", &cidr, "dev", NODE_IF]);
        ip(&["-n", ns, "link", "set", NODE_IF, "up"]);
        Port {
            ns: ns.to_string(),
            port: port.to_string(),
            addr,
        }
    }

    fn wait_carrier(&self, ns: &str) {
        wait_until(SETTLE, &format!("{NODE_IF} in {ns} has carrier"), || {
            let out = cmd::output(
                std::process::Command::new("ip")
                    .args(["-n", ns, "-j", "link", "show", "dev", NODE_IF]),
            );
            serde_json::from_slice::<Vec<IpLinkJson>>(&out.stdout)
                .ok()
                .and_then(|v| v.into_iter().next())
                .is_some_and(|l| l.operstate == "UP" && l.flags.iter().any(|f| f == "LOWER_UP"))
        });
    }

    fn wait_port_forwarding(&self, port: &str) {
        wait_until(SETTLE, &format!("bridge port {port} forwards"), || {
            let out = cmd::output(std::process::Command::new("bridge").args([
                "-n",
                &self.switch,
                "-j",
                "link",
                "show",
            ]));
            serde_json::from_slice::<Vec<BridgeLinkJson>>(&out.stdout)
                .unwrap_or_default()
                .iter()
                .any(|l| l.ifname == port && l.state == "forwarding")
        });
    }

    /// Unique id of this rig (also the prefix of its namespaces).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Directory for this rig's files (scripts, logs, sockets, captures); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Namespace name of node `i`.
    pub fn ns(&self, node: usize) -> &str {
        &self.node(node).ns
    }

    /// The node's own (permanent) address.
    pub fn addr(&self, node: usize) -> Ipv4Addr {
        self.node(node).addr
    }

    /// Prefix length of the rig's subnet.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Namespace of the switch.
    pub fn switch_ns(&self) -> &str {
        &self.switch
    }

    /// Namespace of the client, if the rig has one.
    pub fn client_ns(&self) -> Option<&str> {
        self.client.as_ref().map(|c| c.ns.as_str())
    }

    fn node(&self, node: usize) -> &Port {
        self.nodes
            .get(node)
            .unwrap_or_else(|| panic!("rig has {} nodes, no node {node}", self.nodes.len()))
    }

    /// Runs `argv` inside node `i` to completion.
    pub fn exec(&self, node: usize, argv: &[&str]) -> Output {
        let (prog, args) = argv.split_first().expect("empty command");
        cmd::output(&mut cmd::netns_command(self.ns(node), prog, args))
    }

    /// Starts `argv` inside node `i`; its output goes to `<dir>/<name>.log`.
    pub fn spawn(&self, node: usize, name: &str, argv: &[&str]) -> Proc {
        let (prog, args) = argv.split_first().expect("empty command");
        let c = cmd::netns_command(self.ns(node), prog, args);
        Proc::spawn(
            format!("{name}@node{node}"),
            c,
            &self.log_path(&format!("{name}-n{node}")),
        )
    }

    /// Starts `argv` inside the client namespace.
    pub fn spawn_client(&self, name: &str, argv: &[&str]) -> Proc {
        let ns = self.client_ns().expect("rig has no client namespace");
        let (prog, args) = argv.split_first().expect("empty command");
        Proc::spawn(
            format!("{name}@client"),
            cmd::netns_command(ns, prog, args),
            &self.log_path(&format!("{name}-client")),
        )
    }

    /// A fresh log file path in the rig directory (never overwriting an earlier one).
    pub fn log_path(&self, stem: &str) -> PathBuf {
        let mut p = self.dir.join(format!("{stem}.log"));
        for k in 1..1000 {
            if !p.exists() {
                break;
            }
            p = self.dir.join(format!("{stem}.{k}.log"));
        }
        p
    }

    /// IPv4 addresses (with prefix length) on node `i`'s `eth0`.
    pub fn addrs(&self, node: usize) -> Vec<(Ipv4Addr, u8)> {
        let out = cmd::output(std::process::Command::new("ip").args([
            "-n",
            self.ns(node),
            "-j",
            "addr",
            "show",
            "dev",
            NODE_IF,
        ]));
        assert!(
            out.status.success(),
            "ip addr in {} failed: {}",
            self.ns(node),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Vec<IpAddrJson> =
            serde_json::from_slice(&out.stdout).expect("ip -j addr output is JSON");
        v.into_iter()
            .flat_map(|l| l.addr_info)
            .filter(|a| a.family == "inet")
            .filter_map(|a| Some((a.local.parse().ok()?, a.prefixlen)))
            .collect()
    }

    /// True if node `i` has `addr` on its `eth0`.
    pub fn node_has_addr(&self, node: usize, addr: Ipv4Addr) -> bool {
        self.addrs(node).iter().any(|(a, _)| *a == addr)
    }

    /// Indices of the nodes (among `among`) holding `addr`.
    pub fn holders(&self, addr: Ipv4Addr, among: &[usize]) -> Vec<usize> {
        among
            .iter()
            .copied()
            .filter(|&i| self.node_has_addr(i, addr))
            .collect()
    }

    /// Kills (SIGKILL) every process running in node `i` and takes its switch port down.
    pub fn power_fail(&self, node: usize) {
        kill_all_in(self.ns(node));
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.node(node).port,
            "down",
        ]);
    }

    /// Powers node `i` back on as after a reboot: the VIPs it held are gone, its own address
    /// is back, its port is up and forwarding.
    pub fn power_on(&self, node: usize) {
        let p = self.node(node);
        kill_all_in(&p.ns);
        ip(&["-n", &p.ns, "addr", "flush", "dev", NODE_IF]);
        let cidr = format!("{}/{}", p.addr, self.prefix);
        ip(&["-n", &p.ns, "addr", "add", &cidr, "dev", NODE_IF]);
        ip(&["-n", &self.switch, "link", "set", &p.port, "up"]);
        self.wait_port_forwarding(&p.port);
        self.wait_carrier(&p.ns);
    }

    /// Detaches node `i`'s port from the bridge: its carrier stays up, nothing gets through.
    pub fn partition(&self, node: usize) {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.node(node).port,
            "nomaster",
        ]);
    }

    /// Reattaches node `i`'s port to the bridge.
    pub fn heal(&self, node: usize) {
        let port = self.node(node).port.clone();
        ip(&["-n", &self.switch, "link", "set", &port, "master", BRIDGE]);
        self.wait_port_forwarding(&port);
    }

    /// Writes an executable shell script into the rig directory and returns its path.
    pub fn write_script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    fn print_diagnostics(&self) {
        let mut s = format!("----- rig {} state -----\n", self.id);
        for (i, n) in self.nodes.iter().enumerate() {
            let out =
                cmd::output(std::process::Command::new("ip").args(["-n", &n.ns, "-br", "addr"]));
            s.push_str(&format!(
                "node{i} ({}):\n{}",
                n.ns,
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let out =
            cmd::output(std::process::Command::new("bridge").args(["-n", &self.switch, "link"]));
        s.push_str(&format!(
            "bridge:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ));
        eprintln!("{s}----- files kept in {} -----", self.dir.display());
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            self.print_diagnostics();
        }
        for ns in self.created.iter().rev() {
            kill_all_in(ns);
            ip_ok(&["netns", "del", ns]);
        }
        if !panicking && std::env::var_os("CLUSTER_KEEP_RIG").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Pids of the processes whose network namespace is `ns`.
pub fn pids_in(ns: &str) -> Vec<libc::pid_t> {
    let out = cmd::output(std::process::Command::new("ip").args(["netns", "pids", ns]));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILLs every process in `ns` and waits (bounded) until none is left.
pub fn kill_all_in(ns: &str) {
    // A process may fork while we kill; further rounds catch the children. A killed process
    // can take a while to exit on a loaded machine, so the bound is time (5 s), not rounds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for _ in 0..1000 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) on a pid just listed as living in a namespace we created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(crate::wait::POLL);
    }
    eprintln!("warning: processes still alive in {ns}: {:?}", pids_in(ns));
}

/// The test-process id in a rig name (`carig-<pid>-<counter>[-<role>]`).
fn rig_owner(name: &str) -> Option<u32> {
    name.strip_prefix(NS_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and directories left behind by test processes that no longer exist
/// (e.g. killed by a timeout before their rigs could clean up, or kept after a failure).
fn remove_stale_rigs() {
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if rig_owner(&name).is_some_and(|pid| !process_exists(pid)) {
                kill_all_in(&name);
                ip_ok(&["netns", "del", &name]);
            }
        }
    }
    if std::env::var_os("CLUSTER_KEEP_RIG").is_some() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if rig_owner(&name).is_some_and(|pid| !process_exists(pid)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
