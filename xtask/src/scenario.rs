//! What the demo and the failover benchmark add to the harness's [`Cluster`]: the guestbook
//! on every node, a client probing the VIP, a recorder of the adverts on one switch port, and
//! the measurement of one failover from those records.
//!
//! Everything the scenario starts lives in namespaces the rig created; dropping the scenario
//! (also after an error, or after Ctrl-C) kills those processes and removes the namespaces.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tests::Proc;
use tests::cluster::{self, Cluster, ClusterConfig, Implementation, Rank, VIP};
use tests::wait::{Poller, mono_ns, ms_between};

use crate::adverts::AdvertLog;
use crate::http::ProbeLog;

/// CARP vhid / VRRP router id.
pub const VHID: u8 = 42;
const PASS: &str = "bench";
/// The demo and the benches measure to a few milliseconds, so they poll that often.
pub const POLL: Poller = Poller::every(Duration::from_millis(5));
/// Longest any process of a scenario lives, whatever happens to the one that started it.
const PROCESS_LIFETIME_S: u64 = 3600;
/// The guestbook's database account (local connections only; a demo password).
const GUESTBOOK_PASSWORD: &str = "guestbook-demo-password";

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

/// A small deterministic-enough pseudo-random number from the clock (for phase jitter).
pub fn jitter(below: u64) -> u64 {
    let mut x = mono_ns() ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % below.max(1)
}

/// Private copies of binaries for the whole session, so a concurrent build in the workspace
/// cannot swap one between (or during) runs; the agent's copy is what the harness runs.
/// Removed on drop.
pub struct Pinned {
    dir: PathBuf,
}

impl Pinned {
    /// Copies the agent `bin` (and `more`, as `(file, name)`) and points the harness at the
    /// agent's copy.
    pub fn new(bin: &Path, more: &[(&Path, &str)]) -> Result<Pinned> {
        let dir = std::env::temp_dir().join(format!("cluster-xtask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pinned = Pinned { dir };
        for (from, name) in std::iter::once((bin, "cluster-agent")).chain(more.iter().copied()) {
            let to = pinned.path(name);
            std::fs::copy(from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        // SAFETY: called before any thread is started; the harness reads this variable.
        unsafe { std::env::set_var(crate::tasks::AGENT_BIN_VAR, pinned.path("cluster-agent")) };
        Ok(pinned)
    }

    /// The copy named `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Election timing shared by all nodes of a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub advbase: u8,
    pub deadratio: u32,
}

impl Timing {
    /// The theoretical master-down time of a backup with `rank` under `imp`.
    pub fn master_down(&self, imp: &Implementation, rank: Rank) -> Duration {
        cluster::master_down(imp, self.advbase, self.deadratio, rank)
    }
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
    services: Vec<Option<Proc>>,
    /// Services of powered-off nodes, frozen with them until power-on (see
    /// `Cluster::power_cut`).
    frozen: Vec<Option<Proc>>,
    probe: Option<Proc>,
    watcher: Proc,
    pub probe_log: ProbeLog,
    pub adverts: AdvertLog,
    /// When the harness had done the last power cut (processes frozen, port down, addresses
    /// flushed): its own work on the machine the survivors share.
    cut_done: Option<u64>,
    xtask: PathBuf,
    password_file: PathBuf,
    /// The quorum's etcd members, when the agents use one.
    pub etcd: Option<tests::etcd::Etcd>,
    /// Declared last: fields drop in order, and the cluster (databases, daemons, namespaces)
    /// must go after the processes above.
    pub c: Cluster,
}

/// The node name the web service on node `i` answers with.
pub fn node_name(i: usize) -> String {
    format!("node{i}")
}

impl Scenario {
    /// Builds a cluster of `nodes` nodes and a client for `imp` (no election daemon runs
    /// yet), with the guestbook on every node and the advert recorder on `watch`.
    pub fn new(
        nodes: usize,
        imp: Implementation,
        timing: Timing,
        watch: WatchPort,
    ) -> Result<Scenario> {
        // Our own binary through procfs: still valid if a concurrent build replaces the file.
        let xtask = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
        let t0 = Instant::now();
        let c = Cluster::start(ClusterConfig {
            imp,
            vhid: VHID,
            pass: PASS.into(),
            advbase: timing.advbase,
            deadratio: timing.deadratio,
            extra_sql: format!(
                "{}CREATE USER '{user}'@'localhost' IDENTIFIED BY '{GUESTBOOK_PASSWORD}';\n\
                 GRANT SELECT, INSERT ON guestbook.* TO '{user}'@'localhost';\n",
                crate::guestbook::SCHEMA,
                user = crate::guestbook::DB_USER,
            ),
            ..ClusterConfig::new(nodes)
        })?;
        crate::cmd::say(format_args!(
            "{nodes} MariaDB servers bootstrapped (TLS, certificates from `cluster-agent db bootstrap`) in {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
        let password_file = c.rig.dir().join("guestbook.pass");
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
        // A long demo opens more connections than the default ephemeral range holds.
        let client_ns = c.rig.client_ns().context("the rig has no client")?;
        let _ = tests::cmd::output(&mut tests::cmd::netns_command(
            client_ns,
            "sysctl",
            &["-qw", "net.ipv4.ip_local_port_range=1024 65000"],
        ));
        let port = match watch {
            WatchPort::Node(i) => c.rig.port(i),
            WatchPort::Client => c.rig.client_port().context("the rig has no client")?,
        }
        .to_string();
        let stem = format!("adverts-{port}");
        let advert_file = c.rig.dir().join(format!("{stem}.txt"));
        let watcher = c.rig.spawn_switch(
            &stem,
            &[
                &xtask.to_string_lossy(),
                "advert-watch",
                "--interface",
                &port,
                "--out",
                &advert_file.to_string_lossy(),
                "--max-seconds",
                &PROCESS_LIFETIME_S.to_string(),
            ],
        )?;
        let probe_file = c.rig.dir().join("probe.txt");
        let mut s = Scenario {
            services: (0..nodes).map(|_| None).collect(),
            frozen: (0..nodes).map(|_| None).collect(),
            probe: None,
            watcher,
            probe_log: ProbeLog::new(&probe_file),
            adverts: AdvertLog::new(&advert_file),
            cut_done: None,
            xtask,
            password_file,
            etcd: None,
            c,
        };
        POLL.wait_until(
            Duration::from_secs(5),
            "the advert recorder is ready",
            || {
                s.watcher.check_alive()?;
                Ok(s.watcher.log().contains("ready"))
            },
        )?;
        for i in 0..nodes {
            s.start_service(i)?;
        }
        Ok(s)
    }

    pub fn nodes(&self) -> usize {
        self.c.nodes()
    }

    /// Starts the guestbook on node `i` (on its local database) and waits until it listens.
    pub fn start_service(&mut self, i: usize) -> Result<()> {
        let name = node_name(i);
        let p = self.c.rig.spawn(
            i,
            "guestbook",
            &[
                &self.xtask.to_string_lossy(),
                "guestbook-serve",
                "--name",
                &name,
                "--db-socket",
                &self.c.server(i).socket().to_string_lossy(),
                "--db-password-file",
                &self.password_file.to_string_lossy(),
                "--max-seconds",
                &PROCESS_LIFETIME_S.to_string(),
            ],
        )?;
        POLL.wait_until(
            Duration::from_secs(5),
            &format!("web service on {name}"),
            || {
                p.check_alive()?;
                Ok(p.log().contains("listening"))
            },
        )?;
        self.services[i] = Some(p);
        Ok(())
    }

    /// Starts the client's probe of `http://VIP/`: a request every `interval_us`, every
    /// `write_every`th a guestbook write (0: reads only).
    pub fn start_probe(&mut self, interval_us: u64, write_every: u64) -> Result<()> {
        let p = self.c.rig.spawn_client(
            "probe",
            &[
                &self.xtask.to_string_lossy(),
                "http-probe",
                "--target",
                &format!("{VIP}:80"),
                "--out",
                &self.probe_log.path().to_string_lossy(),
                "--interval-us",
                &interval_us.to_string(),
                "--write-every",
                &write_every.to_string(),
                "--max-seconds",
                &PROCESS_LIFETIME_S.to_string(),
            ],
        )?;
        self.probe = Some(p);
        Ok(())
    }

    /// Reads what the probe and the advert recorder appended; fails if either died.
    pub fn refresh(&mut self) -> Result<()> {
        if let Some(p) = &self.probe {
            p.check_alive().context("the probe exited")?;
        }
        self.watcher
            .check_alive()
            .context("the advert recorder exited")?;
        self.probe_log.refresh()?;
        self.adverts.refresh()
    }

    /// Power cut of node `i` (see [`tests::Rig::power_cut`]): its daemon, database and
    /// service die with it. Returns the instant of the cut.
    pub fn power_cut(&mut self, i: usize) -> Result<u64> {
        let t = self.c.power_cut(i)?;
        self.frozen[i] = self.services[i].take();
        self.cut_done = Some(mono_ns());
        Ok(t)
    }

    /// Powers node `i` back on (port up, own address back, VIP gone), restarts its database
    /// (crash recovery) and its service; its daemon is left to the caller.
    pub fn power_on(&mut self, i: usize) -> Result<()> {
        self.c.power_on(i)?;
        // Killed by the power-on with everything else of the node: only reaped here.
        self.frozen[i] = None;
        self.start_service(i)
    }

    /// The web service on node `i` dies (killed); the node stays up.
    pub fn kill_service(&mut self, i: usize) {
        self.services[i] = None;
    }

    /// `(token, id)` of every guestbook entry on node `i`'s server.
    pub fn entries(&self, i: usize) -> Result<std::collections::BTreeMap<String, u64>> {
        let out = self
            .c
            .server(i)
            .sql("SELECT token, id FROM guestbook.entries")
            .with_context(|| format!("reading the guestbook on node{i}"))?;
        out.lines()
            .map(|l| {
                let (token, id) = l
                    .split_once('\t')
                    .ok_or_else(|| anyhow!("unexpected row {l:?}"))?;
                Ok((token.to_string(), id.trim().parse()?))
            })
            .collect()
    }

    /// Checks every write the client saw acknowledged against node `survivor`'s database.
    pub fn check_writes(&self, survivor: usize) -> Result<WriteCheck> {
        let entries = self.entries(survivor)?;
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
        let (new, first_ok, first_ok_sent) =
            POLL.wait_for(timeout, "an answer from another node", || {
                self.refresh()?;
                Ok(self
                    .probe_log
                    .ended_since(t_fail)
                    .filter(|s| s.is_ok() && !s.ok_from(&old_name))
                    .min_by_key(|s| s.end_ns)
                    .map(|s| (s.outcome.clone().unwrap_or_default(), s.end_ns, s.start_ns)))
            })?;
        let new_idx = (0..self.nodes())
            .find(|&i| node_name(i) == new)
            .ok_or_else(|| anyhow!("answer from unknown node {new}"))?;
        let new_addr = self.c.rig.addr(new_idx);
        let first_advert_new = POLL.wait_for(
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
            .last_from_before(self.c.rig.addr(old), first_advert_new);
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
        // The agent's own account of its takeover: where the time between the transition
        // and the first answer went.
        let takeover = if self.c.config.imp.is_agent() {
            POLL.wait_for(
                Duration::from_secs(3),
                &format!("{new}'s takeover record"),
                || {
                    Ok(self
                        .c
                        .status(new_idx)
                        .ok()
                        .and_then(|s| s.last_takeover)
                        .filter(|t| t.complete && t.at_ns >= t_fail))
                },
            )
            .ok()
        } else {
            None
        };
        Ok(Failover {
            old,
            new: new_idx,
            takeover,
            t_fail,
            cut_done: self.cut_done.filter(|&t| t >= t_fail),
            last_advert_old,
            last_advert_old_skew,
            first_advert_new,
            last_ok_before,
            first_ok_new: first_ok,
            first_ok_sent,
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
    /// When the harness had done the power cut (see `Scenario::cut_done`).
    pub cut_done: Option<u64>,
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
    /// Start of that request: what comes after it is the request's own round trip.
    pub first_ok_sent: u64,
    /// Requests that failed between the failure and `first_ok_new`.
    pub failed: usize,
    /// The new master's record of its takeover (agents only).
    pub takeover: Option<tests::agent::Takeover>,
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

    /// The new master's database open for writes to its VIP's arrival, by its own record
    /// (agents with a database only): negative when the database opened first, as the agent
    /// orders it, so that the first write through the VIP finds it writable.
    pub fn open_after_vip_ms(&self) -> Option<f64> {
        let t = self.takeover.as_ref()?;
        Some(t.after_ms("open")? - t.after_ms("vip")?)
    }

    /// Last advert of the old master to the first advert of the new one.
    pub fn detection_ms(&self) -> Option<f64> {
        Some(ms_between(self.last_advert_old?, self.first_advert_new))
    }

    /// Where the time went, as one line: the old master's last advert to the new master's
    /// transition, then each step after the transition, then the first answer (agents only).
    pub fn breakdown(&self) -> Option<String> {
        let t = self.takeover.as_ref()?;
        let mut parts = Vec::new();
        if let Some(last) = self.last_advert_old {
            parts.push(format!(
                "MASTER {:.1} ms after the last advert",
                ms_between(last, t.at_ns)
            ));
        }
        if !t.steps.is_empty() {
            parts.push(t.steps_line());
        }
        if let Some(done) = self.cut_done {
            parts.push(format!(
                "(power cut done {:+.1})",
                ms_between(t.at_ns, done)
            ));
        }
        parts.push(format!(
            "first answered request sent +{:.1}",
            ms_between(t.at_ns, self.first_ok_sent)
        ));
        parts.push(format!(
            "first answer +{:.1} ms",
            ms_between(t.at_ns, self.first_ok_new)
        ));
        Some(parts.join(", "))
    }

    /// Last answer before the failure to the first one after it: the outage the client saw.
    pub fn outage_ms(&self) -> Option<f64> {
        Some(ms_between(self.last_ok_before?, self.first_ok_new))
    }
}
