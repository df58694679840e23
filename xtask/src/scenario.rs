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
    /// (256 - priority)/256` s, the skew not scaled by the interval.
    pub fn master_down(&self, imp: &Implementation, rank: Rank) -> Duration {
        match imp {
            Implementation::Keepalived => Duration::from_micros(
                3 * u64::from(self.advbase) * 1_000_000
                    + (256 - u64::from(rank.priority)) * 1_000_000 / 256,
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
    /// Declared last: fields drop in order, and the rig (namespaces) must go after the processes.
    pub rig: Rig,
}

/// The node name the web service on node `i` answers with.
pub fn node_name(i: usize) -> String {
    format!("node{i}")
}

impl Scenario {
    /// Builds a rig of `nodes` nodes and a client, starts the web service on every node and the
    /// advert recorder on `watch`. No election daemon runs yet.
    pub fn new(
        nodes: usize,
        imp: Implementation,
        timing: Timing,
        watch: WatchPort,
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
        let mut p = self.rig.spawn(
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
        );
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

    /// Starts the client's probe of `http://VIP/`.
    pub fn start_probe(&mut self) -> Result<()> {
        let xtask = self.xtask.to_string_lossy().into_owned();
        let target = format!("{VIP}:80");
        let out = self.probe_log.path().to_string_lossy().into_owned();
        let lifetime = PROCESS_LIFETIME_S.to_string();
        let p = self.rig.spawn_client(
            "probe",
            &[
                &xtask,
                "http-probe",
                "--target",
                &target,
                "--out",
                &out,
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
            Implementation::Keepalived => Daemon {
                proc: self.spawn_keepalived(i, rank)?,
                socket: None,
            },
        };
        self.daemons[i] = Some(d);
        Ok(())
    }

    fn spawn_ucarp(&self, i: usize, rank: Rank) -> Result<Proc> {
        let up = self.rig.write_script(
            &format!("ucarp-up-n{i}.sh"),
            &format!(
                "ip addr add \"$2/{PREFIX}\" dev \"$1\"\n\
                 arping -q -U -c 1 -I \"$1\" \"$2\" >/dev/null 2>&1 &\n\
                 exit 0"
            ),
        );
        let down = self.rig.write_script(
            &format!("ucarp-down-n{i}.sh"),
            &format!("ip addr del \"$2/{PREFIX}\" dev \"$1\" 2>/dev/null\nexit 0"),
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

    fn spawn_keepalived(&self, i: usize, rank: Rank) -> Result<Proc> {
        let dir = self.rig.dir();
        let conf = dir.join(format!("keepalived-n{i}.conf"));
        let state = if rank.priority >= 200 {
            "MASTER"
        } else {
            "BACKUP"
        };
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n    router_id {name}\n    vrrp_version 2\n}}\n\
                 vrrp_instance VI_{VHID} {{\n    state {state}\n    interface {NODE_IF}\n\
                 \x20   virtual_router_id {VHID}\n    priority {prio}\n    advert_int {adv}\n\
                 \x20   virtual_ipaddress {{\n        {VIP}/{PREFIX} dev {NODE_IF}\n    }}\n}}\n",
                name = node_name(i),
                prio = rank.priority,
                adv = self.timing.advbase,
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

    /// Waits until node `i` holds the VIP (and, for the agent, reports MASTER) and is the only
    /// holder.
    pub fn wait_sole_master(&mut self, i: usize, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        wait_for(
            timeout,
            &format!("{} is the only node holding the VIP", node_name(i)),
            || {
                self.check_daemon(i)?;
                let sole = self.holders()? == [i];
                let reports =
                    !self.imp.is_agent() || self.agent_status(i).is_some_and(|s| s.is_master());
                Ok((sole && reports).then_some(()))
            },
        )?;
        Ok(start.elapsed())
    }

    /// Waits until the probe has `count` successes answered by node `i` that ended after `since`.
    pub fn wait_answers(
        &mut self,
        i: usize,
        since: u64,
        count: usize,
        timeout: Duration,
    ) -> Result<()> {
        let name = node_name(i);
        wait_for(timeout, &format!("{count} answers from {name}"), || {
            self.refresh()?;
            let n = self
                .probe_log
                .ended_since(since)
                .filter(|s| s.ok_from(&name))
                .count();
            Ok((n >= count).then_some(()))
        })
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
        self.powered[i] = false;
        Ok(t)
    }

    /// Powers node `i` back on (port up, own address back, VIP gone) and restarts its service.
    pub fn power_on(&mut self, i: usize) -> Result<()> {
        catch(|| {
            self.rig.power_on(i);
            Ok(())
        })?;
        self.powered[i] = true;
        self.start_service(i)
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
