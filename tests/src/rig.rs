//! A rig: one namespace acting as an Ethernet switch (a Linux bridge) and one namespace per
//! node, each node wired to the switch with a veth pair (`eth0` in the node, `p<i>` on the
//! bridge). Optionally a client namespace on the same segment.
//!
//! The faults a rig injects are physical ones: a power cut (every process of the node frozen,
//! its switch port down, then the processes killed: nothing the node does after the cut
//! reaches the wire), a partition (the port detached from the bridge, its carrier up), and
//! signals to the node's processes (freeze, thaw, kill). The rig remembers which nodes are
//! powered and attached, so samples of who holds the VIP can tell a live holder from an
//! address left on a dead node.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::cmd::{self, ip, ip_ok};
use crate::proc::{Proc, comm, signal_pid};
use crate::wait::{POLL, mono_ns, wait_until};

/// Prefix of every namespace a rig creates; followed by `<pid>-<counter>-<role>`.
pub const NS_PREFIX: &str = "carig-";
/// Interface name of a node's port inside its namespace.
pub const NODE_IF: &str = "eth0";
const BRIDGE: &str = "br0";
const SETTLE: Duration = Duration::from_secs(5);
/// How long the processes of a node may take to die once killed (a loaded machine is slow).
const KILL_LIMIT: Duration = Duration::from_secs(5);

static RIG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Addresses of the nodes (in order) and of the optional client, all in one subnet.
#[derive(Clone, Debug)]
pub struct RigConfig {
    pub addrs: Vec<Ipv4Addr>,
    pub prefix: u8,
    pub client: Option<Ipv4Addr>,
}

impl RigConfig {
    /// `n` nodes (1-200) at 10.99.0.1, 10.99.0.2, ... with prefix /24, no client.
    pub fn nodes(n: usize) -> RigConfig {
        let first = u32::from(Ipv4Addr::new(10, 99, 0, 1));
        RigConfig {
            addrs: (0..n).map(|i| Ipv4Addr::from(first + i as u32)).collect(),
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

/// What the switch knows of a node's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortState {
    /// False from a power cut until the node is powered on.
    pub powered: bool,
    /// False while the node is partitioned (its port detached from the bridge).
    pub attached: bool,
}

/// Which way [`Rig::cut_one_way`] drops a node's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// What the node sends: it hears everyone and no one hears it.
    FromNode,
    /// What is sent to the node: everyone hears it and it hears no one.
    ToNode,
}

/// Runs `nft` in namespace `ns`.
fn nft(ns: &str, args: &[&str]) -> Result<String> {
    cmd::run(&mut cmd::netns_command(ns, "nft", args))
}

/// Who holds the VIP at one instant, node by node.
#[derive(Clone, Debug)]
pub struct VipSample {
    /// When the sample started (`mono_ns`); it takes one `ip` call per node.
    pub t_ns: u64,
    /// Per node: whether the address is on its interface.
    pub held: Vec<bool>,
    /// Per node: the port's state when sampled.
    pub ports: Vec<PortState>,
}

impl VipSample {
    /// Powered nodes holding the VIP (partitioned ones included: they believe they hold it).
    pub fn holders(&self) -> Vec<usize> {
        (0..self.held.len())
            .filter(|&i| self.held[i] && self.ports[i].powered)
            .collect()
    }

    /// Nodes holding the VIP that the segment can reach: powered and attached.
    pub fn reachable_holders(&self) -> Vec<usize> {
        (0..self.held.len())
            .filter(|&i| self.held[i] && self.ports[i].powered && self.ports[i].attached)
            .collect()
    }
}

pub struct Rig {
    id: String,
    switch: String,
    nodes: Vec<Port>,
    ports: Mutex<Vec<PortState>>,
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
    pub fn new(cfg: RigConfig) -> Result<Rig> {
        ensure!(
            (1..=200).contains(&cfg.addrs.len()),
            "unreasonable node count {}",
            cfg.addrs.len()
        );
        remove_stale_rigs();
        let n = RIG_COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{NS_PREFIX}{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut rig = Rig {
            switch: format!("{id}-sw"),
            id,
            nodes: Vec::new(),
            ports: Mutex::new(Vec::new()),
            client: None,
            prefix: cfg.prefix,
            dir,
            created: Vec::new(),
        };
        let sw = rig.switch.clone();
        rig.add_ns(&sw)?;
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
        ])?;
        ip(&["-n", &sw, "link", "set", BRIDGE, "up"])?;
        for (i, addr) in cfg.addrs.iter().enumerate() {
            let port = rig.wire(&format!("{}-n{i}", rig.id), &format!("p{i}"), *addr)?;
            rig.nodes.push(port);
        }
        *rig.ports_mut() = vec![
            PortState {
                powered: true,
                attached: true,
            };
            rig.nodes.len()
        ];
        if let Some(addr) = cfg.client {
            let port = rig.wire(&format!("{}-cl", rig.id), "pc", addr)?;
            rig.client = Some(port);
        }
        for p in rig.nodes.iter().chain(&rig.client) {
            rig.wait_port_forwarding(&p.port)?;
            rig.wait_carrier(&p.ns)?;
        }
        Ok(rig)
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn wire(&mut self, ns: &str, port: &str, addr: Ipv4Addr) -> Result<Port> {
        self.add_ns(ns)?;
        let sw = self.switch.clone();
        ip(&[
            "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", NODE_IF, "netns", ns,
        ])?;
        ip(&["-n", &sw, "link", "set", port, "master", BRIDGE, "up"])?;
        // A native-mode XDP_TX on the node side (the agent answering ARP) reaches a veth peer
        // only when the peer has GRO on, as a real NIC's switch port would simply receive it.
        cmd::run(&mut cmd::netns_command(
            &sw,
            "ethtool",
            &["-K", port, "gro", "on"],
        ))?;
        let cidr = format!("{addr}/{}", self.prefix);
        ip(&["-n", ns, "addr", "add", &cidr, "dev", NODE_IF])?;
        ip(&["-n", ns, "link", "set", NODE_IF, "up"])?;
        Ok(Port {
            ns: ns.to_string(),
            port: port.to_string(),
            addr,
        })
    }

    fn wait_carrier(&self, ns: &str) -> Result<()> {
        wait_until(SETTLE, &format!("{NODE_IF} in {ns} has carrier"), || {
            let out = cmd::output(
                Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", NODE_IF]),
            )?;
            Ok(serde_json::from_slice::<Vec<IpLinkJson>>(&out.stdout)
                .ok()
                .and_then(|v| v.into_iter().next())
                .is_some_and(|l| l.operstate == "UP" && l.flags.iter().any(|f| f == "LOWER_UP")))
        })
        .map(drop)
    }

    fn wait_port_forwarding(&self, port: &str) -> Result<()> {
        wait_until(SETTLE, &format!("bridge port {port} forwards"), || {
            let out = cmd::output(Command::new("bridge").args([
                "-n",
                &self.switch,
                "-j",
                "link",
                "show",
            ]))?;
            Ok(serde_json::from_slice::<Vec<BridgeLinkJson>>(&out.stdout)
                .unwrap_or_default()
                .iter()
                .any(|l| l.ifname == port && l.state == "forwarding"))
        })
        .map(drop)
    }

    fn ports_mut(&self) -> std::sync::MutexGuard<'_, Vec<PortState>> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Namespace name of node `i`. Panics on a node the rig does not have: that is a bug in
    /// the test, not a failure of the system under test.
    pub fn ns(&self, node: usize) -> &str {
        &self.node(node).ns
    }

    /// The node's own (permanent) address.
    pub fn addr(&self, node: usize) -> Ipv4Addr {
        self.node(node).addr
    }

    /// The node's port on the switch (`p<i>`), in [`Rig::switch_ns`].
    pub fn port(&self, node: usize) -> &str {
        &self.node(node).port
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

    /// The client's port on the switch, if the rig has a client.
    pub fn client_port(&self) -> Option<&str> {
        self.client.as_ref().map(|c| c.port.as_str())
    }

    fn node(&self, node: usize) -> &Port {
        match self.nodes.get(node) {
            Some(p) => p,
            None => panic!("rig has {} nodes, no node {node}", self.nodes.len()),
        }
    }

    /// Whether node `i` is powered and attached to the switch.
    pub fn port_state(&self, node: usize) -> PortState {
        self.node(node);
        self.ports_mut()[node]
    }

    /// The powered nodes.
    pub fn powered(&self) -> Vec<usize> {
        let ports = self.ports_mut();
        (0..ports.len()).filter(|&i| ports[i].powered).collect()
    }

    /// Runs `argv` inside node `i` to completion, whatever its exit status.
    pub fn exec(&self, node: usize, argv: &[&str]) -> Result<Output> {
        let (prog, args) = argv.split_first().context("empty command")?;
        cmd::output(&mut cmd::netns_command(self.ns(node), prog, args))
    }

    /// Starts `argv` inside node `i`; its output goes to `<dir>/<name>-n<i>.log`.
    pub fn spawn(&self, node: usize, name: &str, argv: &[&str]) -> Result<Proc> {
        let (prog, args) = argv.split_first().context("empty command")?;
        Proc::spawn(
            format!("{name}@node{node}"),
            cmd::netns_command(self.ns(node), prog, args),
            &self.log_path(&format!("{name}-n{node}")),
        )
    }

    /// Starts `argv` inside the client namespace.
    pub fn spawn_client(&self, name: &str, argv: &[&str]) -> Result<Proc> {
        let ns = self
            .client_ns()
            .context("the rig has no client namespace")?;
        let (prog, args) = argv.split_first().context("empty command")?;
        Proc::spawn(
            format!("{name}@client"),
            cmd::netns_command(ns, prog, args),
            &self.log_path(&format!("{name}-client")),
        )
    }

    /// Starts `argv` inside the switch namespace (where every port can be watched).
    pub fn spawn_switch(&self, name: &str, argv: &[&str]) -> Result<Proc> {
        let (prog, args) = argv.split_first().context("empty command")?;
        Proc::spawn(
            format!("{name}@switch"),
            cmd::netns_command(&self.switch, prog, args),
            &self.log_path(name),
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
    pub fn addrs(&self, node: usize) -> Result<Vec<(Ipv4Addr, u8)>> {
        Ok(self
            .all_addrs(node)?
            .into_iter()
            .filter_map(|(a, p)| match a {
                IpAddr::V4(a) => Some((a, p)),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// Every address, IPv4 and IPv6 (link-local included), on node `i`'s `eth0`.
    fn all_addrs(&self, node: usize) -> Result<Vec<(IpAddr, u8)>> {
        let ns = self.ns(node);
        let out =
            cmd::run(Command::new("ip").args(["-n", ns, "-j", "addr", "show", "dev", NODE_IF]))?;
        let v: Vec<IpAddrJson> = serde_json::from_str(&out)
            .with_context(|| format!("`ip -j addr` in {ns} is not the expected JSON: {out}"))?;
        Ok(v.into_iter()
            .flat_map(|l| l.addr_info)
            .filter(|a| a.family == "inet" || a.family == "inet6")
            .filter_map(|a| Some((a.local.parse().ok()?, a.prefixlen)))
            .collect())
    }

    /// Node `node`'s MAC on its `eth0`, lowercase.
    pub fn mac(&self, node: usize) -> Result<String> {
        let out = self.exec(node, &["cat", &format!("/sys/class/net/{NODE_IF}/address")])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_lowercase())
    }

    /// `arping` from `node`: the MACs that answered for `addr` (iputils prints `[aa:bb:...]`),
    /// sorted and each once.
    pub fn arp_answers(&self, node: usize, addr: Ipv4Addr) -> Result<Vec<String>> {
        let out = self.exec(
            node,
            &[
                "arping",
                "-c",
                "2",
                "-w",
                "2",
                "-I",
                NODE_IF,
                &addr.to_string(),
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut macs: Vec<String> = text
            .split(['[', ']'])
            .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
            .map(str::to_lowercase)
            .collect();
        macs.sort();
        macs.dedup();
        Ok(macs)
    }

    /// The MAC node `node`'s neighbour table holds for `addr` (IPv6), if any: what its next
    /// packet to `addr` would be sent to.
    pub fn neighbour(&self, node: usize, addr: std::net::Ipv6Addr) -> Result<Option<String>> {
        let out = cmd::run(Command::new("ip").args([
            "-n",
            self.ns(node),
            "-6",
            "neigh",
            "show",
            &addr.to_string(),
            "dev",
            NODE_IF,
        ]))?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_lowercase))
    }

    /// True if node `i` has `addr` (IPv4 or IPv6) on its `eth0`.
    pub fn node_has_addr(&self, node: usize, addr: impl Into<IpAddr>) -> Result<bool> {
        let addr = addr.into();
        Ok(self.all_addrs(node)?.iter().any(|(a, _)| *a == addr))
    }

    /// Indices of the nodes (among `among`) holding `addr`.
    pub fn holders(&self, addr: impl Into<IpAddr>, among: &[usize]) -> Result<Vec<usize>> {
        let addr = addr.into();
        let mut v = Vec::new();
        for &i in among {
            if self.node_has_addr(i, addr)? {
                v.push(i);
            }
        }
        Ok(v)
    }

    /// Who holds `vip` now, with each node's port state.
    pub fn vip_sample(&self, vip: Ipv4Addr) -> Result<VipSample> {
        let t_ns = mono_ns();
        let held = (0..self.node_count())
            .map(|i| self.node_has_addr(i, vip))
            .collect::<Result<_>>()?;
        Ok(VipSample {
            t_ns,
            held,
            ports: self.ports_mut().clone(),
        })
    }

    /// The processes living in node `i`'s namespace.
    pub fn pids(&self, node: usize) -> Result<Vec<libc::pid_t>> {
        pids_in(self.ns(node))
    }

    /// The processes in node `i` whose command name (`/proc/PID/comm`) is `name`: e.g.
    /// `mariadbd`, `cluster-agent`, `ucarp`, `keepalived`.
    pub fn pids_named(&self, node: usize, name: &str) -> Result<Vec<libc::pid_t>> {
        Ok(self
            .pids(node)?
            .into_iter()
            .filter(|&p| comm(p).as_deref() == Some(name))
            .collect())
    }

    /// Sends `sig` to every process named `name` in node `i`; how many there were (an error
    /// if none: a fault injected into nothing proves nothing).
    pub fn signal_named(&self, node: usize, name: &str, sig: libc::c_int) -> Result<usize> {
        let pids = self.pids_named(node, name)?;
        ensure!(!pids.is_empty(), "no process named {name} in node{node}");
        for &p in &pids {
            signal_pid(p, sig)?;
        }
        Ok(pids.len())
    }

    /// SIGSTOP to every process named `name` in node `i`: hung, its sockets still open.
    pub fn freeze(&self, node: usize, name: &str) -> Result<usize> {
        self.signal_named(node, name, libc::SIGSTOP)
    }

    /// SIGCONT to every process named `name` in node `i`.
    pub fn thaw(&self, node: usize, name: &str) -> Result<usize> {
        self.signal_named(node, name, libc::SIGCONT)
    }

    /// SIGKILL to every process named `name` in node `i` (a crash of that program only).
    pub fn kill(&self, node: usize, name: &str) -> Result<usize> {
        self.signal_named(node, name, libc::SIGKILL)
    }

    /// Power cut of node `i`; returns the instant (`mono_ns`) its processes were stopped.
    ///
    /// Every process of the node is frozen (SIGSTOP) first, then the switch port goes down,
    /// and only then are they killed: killing one process of a daemon first could let another
    /// one that watches it shut down gracefully and say so on the wire, and a killed process's
    /// sockets close with a FIN or RST that must not reach anyone. A power cut says nothing.
    pub fn power_cut(&self, node: usize) -> Result<u64> {
        let t = self.power_cut_frozen(node)?;
        self.bury(node)?;
        Ok(t)
    }

    /// A power cut as the other nodes see it ([`Rig::power_cut`]), with the node's processes
    /// left frozen rather than killed: [`Rig::bury`], [`Rig::power_on`] or the end of the rig
    /// kills them. Killing them at once (a database server's exit frees all its memory, the
    /// processes are looked for in `/proc` until none is left) takes tens of milliseconds of
    /// the machine that a real power failure does not take from the surviving nodes, right
    /// when they take over; a failover measured meanwhile would pay for it.
    ///
    /// The port goes down right after the first round of stops, by a netlink message on a
    /// socket made beforehand: an `ip` process takes milliseconds to start on a loaded
    /// machine, and meanwhile the frozen node's kernel would still complete TCP handshakes,
    /// as a stalled machine's does, not a dead one's.
    pub fn power_cut_frozen(&self, node: usize) -> Result<u64> {
        let ns = self.ns(node).to_string();
        let port = crate::netns::LinkSwitch::new(&self.switch, self.port(node))?;
        let mut stopped = BTreeSet::new();
        let mut t = None;
        // A process may fork while we stop the others: rounds until no new one shows up.
        for round in 0..100 {
            let fresh: Vec<_> = pids_in(&ns)?
                .into_iter()
                .filter(|p| !stopped.contains(p))
                .collect();
            if fresh.is_empty() && round > 0 {
                break;
            }
            t.get_or_insert_with(mono_ns);
            for p in fresh {
                // One that exited meanwhile needs no stopping.
                let _ = signal_pid(p, libc::SIGSTOP);
                stopped.insert(p);
            }
            if round == 0 {
                port.down()?;
            }
        }
        let t = t.unwrap_or_else(mono_ns);
        self.ports_mut()[node].powered = false;
        // A machine without power holds no address: the VIP it held is gone now, not at the
        // next power-on (the port is down, so this says nothing to anyone).
        ip(&["-n", &ns, "addr", "flush", "dev", NODE_IF])?;
        Ok(t)
    }

    /// Kills every process of node `i` (frozen by [`Rig::power_cut_frozen`] or not).
    pub fn bury(&self, node: usize) -> Result<()> {
        kill_all_in(self.ns(node))
    }

    /// Powers node `i` back on as after a reboot: nothing runs, the VIPs it held are gone, its
    /// own address is back, its port is up and forwarding (a partition outlasts the power cut,
    /// as an unplugged cable would).
    pub fn power_on(&self, node: usize) -> Result<()> {
        let p = self.node(node);
        kill_all_in(&p.ns)?;
        ip(&["-n", &p.ns, "addr", "flush", "dev", NODE_IF])?;
        let cidr = format!("{}/{}", p.addr, self.prefix);
        ip(&["-n", &p.ns, "addr", "add", &cidr, "dev", NODE_IF])?;
        ip(&["-n", &self.switch, "link", "set", &p.port, "up"])?;
        if self.port_state(node).attached {
            self.wait_port_forwarding(&p.port)?;
        }
        self.wait_carrier(&p.ns)?;
        self.ports_mut()[node].powered = true;
        Ok(())
    }

    /// Detaches node `i`'s port from the bridge: its carrier stays up, nothing gets through.
    pub fn partition(&self, node: usize) -> Result<()> {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            self.port(node),
            "nomaster",
        ])?;
        self.ports_mut()[node].attached = false;
        Ok(())
    }

    /// Reattaches node `i`'s port to the bridge and waits until it forwards.
    pub fn heal(&self, node: usize) -> Result<()> {
        let port = self.port(node);
        ip(&["-n", &self.switch, "link", "set", port, "master", BRIDGE])?;
        self.ports_mut()[node].attached = true;
        if self.port_state(node).powered {
            self.wait_port_forwarding(port)?;
        }
        Ok(())
    }

    /// Drops, at the switch, every frame node `i` sends ([`Way::FromNode`]) or every frame
    /// sent to it ([`Way::ToNode`]), while the other way passes: a link or a firewall rule that
    /// fails one way. The node can then talk without being heard, or hear without being
    /// answered, which a whole partition never shows. [`Rig::mend_one_way`] lifts it.
    pub fn cut_one_way(&self, node: usize, way: Way) -> Result<()> {
        let table = format!("cut{node}");
        let side = match way {
            Way::FromNode => "iifname",
            Way::ToNode => "oifname",
        };
        let rule = format!("{side} \"{}\" drop", self.port(node));
        nft(&self.switch, &["add", "table", "bridge", &table])?;
        nft(
            &self.switch,
            &[
                "add",
                "chain",
                "bridge",
                &table,
                "pass",
                "{ type filter hook forward priority 0; }",
            ],
        )?;
        nft(
            &self.switch,
            &["add", "rule", "bridge", &table, "pass", &rule],
        )?;
        Ok(())
    }

    /// Lifts [`Rig::cut_one_way`] on node `i`.
    pub fn mend_one_way(&self, node: usize) -> Result<()> {
        nft(
            &self.switch,
            &["delete", "table", "bridge", &format!("cut{node}")],
        )?;
        Ok(())
    }

    /// Writes an executable shell script into the rig directory and returns its path.
    pub fn write_script(&self, name: &str, body: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n"))
            .with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", p.display()))?;
        Ok(p)
    }

    /// Addresses of every node and the bridge's ports, for a failed test's output.
    fn state(&self) -> String {
        let text = |c: &mut Command| {
            cmd::output(c)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let mut s = format!("----- rig {} state -----\n", self.id);
        for (i, n) in self.nodes.iter().enumerate() {
            let addrs = text(Command::new("ip").args(["-n", &n.ns, "-br", "addr"]));
            s.push_str(&format!("node{i} ({}):\n{addrs}", n.ns));
        }
        let links = text(Command::new("bridge").args(["-n", &self.switch, "link"]));
        s.push_str(&format!("bridge:\n{links}"));
        s
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let remove_dir = crate::scope::rig_dropped(&self.dir, || self.state());
        for ns in self.created.iter().rev() {
            if let Err(e) = kill_all_in(ns) {
                eprintln!("warning: {e:#}");
            }
            ip_ok(&["netns", "del", ns]);
        }
        if remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Pids of the processes whose network namespace is `ns` (what `ip netns pids` lists, without
/// starting a process: a power cut must not wait for one).
pub fn pids_in(ns: &str) -> Result<Vec<libc::pid_t>> {
    let target = std::fs::metadata(format!("/run/netns/{ns}"))
        .with_context(|| format!("no namespace {ns}"))?;
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc")
        .context("reading /proc")?
        .flatten()
    {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // Gone meanwhile, or a zombie (no namespace any more): not in the namespace.
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            && m.dev() == target.dev()
            && m.ino() == target.ino()
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// SIGKILLs every process in `ns` and waits until none is left; an error if some survive
/// [`KILL_LIMIT`].
pub fn kill_all_in(ns: &str) -> Result<()> {
    // A process may fork while we kill; further rounds catch the children. A killed process
    // can take a while to exit on a loaded machine, so the bound is time, not rounds.
    let deadline = Instant::now() + KILL_LIMIT;
    for _ in 0..KILL_LIMIT.as_millis() / POLL.as_millis() + 2 {
        let pids = pids_in(ns)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            break;
        }
        for pid in pids {
            // One that exited meanwhile needs no killing.
            let _ = signal_pid(pid, libc::SIGKILL);
        }
        std::thread::sleep(POLL);
    }
    bail!(
        "processes still alive in {ns} {KILL_LIMIT:?} after SIGKILL: {:?}",
        pids_in(ns)?
    )
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
                let _ = kill_all_in(&name);
                ip_ok(&["netns", "del", &name]);
            }
        }
    }
    if std::env::var_os(crate::scope::KEEP_ENV).is_some() {
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
