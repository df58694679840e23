//! `cargo xtask chaos`: a real cluster (agents with XDP, MariaDB with TLS and semi-sync, in
//! network namespaces) under write load through the VIP, and a seeded random schedule of
//! faults: power cut and return of any node (the preferred one included), kill -9 of an agent,
//! kill of a server, SIGSTOP of an agent or of a server for longer than the master-down time,
//! a replica stalled past the semi-sync timeout, partition and heal, floods of forged adverts,
//! graceful stops and switchovers.
//!
//! After every fault it waits for the cluster to heal (one master, the others its replicas;
//! when histories diverged, the one holding the acknowledged writes is kept and the other
//! nodes are rebuilt from it, as the README tells an operator to) and checks that every write the database acknowledged is on the master (I1).
//! Throughout, every server's `read_only` is sampled every few milliseconds: two writable at
//! once outside a partition is a failure (I2). During a flood of forged adverts nothing may
//! change state (I3). The run fails on any of these, or if the cluster does not heal, and
//! prints the seed that replays its schedule.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use tests::cluster::{Cluster, ClusterConfig, Implementation, Rank};
use tests::etcd::Etcd;
use tests::mariadb::MariaDb;
use tests::rig::Way;
use tests::wait::{check_interrupt, install_signal_handlers, interrupted, mono_ns};
use tests::watch::{Timeline, TwoWriters, VipWatch, WritableWatch, Writer, sockets};

use crate::cmd::say;
use crate::scenario::Pinned;

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Seed of the fault schedule (default: from the clock); printed, to replay a run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long to inject faults.
    #[arg(long, default_value_t = 5.0)]
    pub minutes: f64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub nodes: u8,
    /// Advert base interval of the agents (0: fast mode).
    #[arg(long, default_value_t = 1)]
    pub advbase: u8,
    /// XDP mode of the agents.
    #[arg(long, default_value = "auto")]
    pub xdp: String,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The agents open their databases only under a quorum lease on etcd (a member on every
    /// node, so a partition cuts a node off from etcd's majority too); partitions are then
    /// not excused: two writable databases at any instant is a failure. Needs 3 nodes.
    #[arg(long)]
    pub quorum: bool,
}

/// How long the cluster may take to heal after a fault is repaired: crash recovery, an
/// agent's start, an election in compatible mode, catching up.
const HEAL: Duration = Duration::from_secs(90);
/// How long one insert through the VIP may take before it counts as unanswered.
const INSERT_LIMIT: Duration = Duration::from_secs(2);
/// Pause between two inserts.
const GAP: Duration = Duration::from_millis(5);
/// Longer than the agents' retry of a refused promotion (every second).
const REFUSAL_RETRY: Duration = Duration::from_secs(3);
/// How long a node's server may stay down after a fault was undone before it counts as having
/// crashed on its own (crash recovery of a killed server takes well under this).
const SERVER_RESTART_AFTER: Duration = Duration::from_secs(10);
/// `db bootstrap`'s semi-sync timeout.
const SEMI_SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// Diverged histories, as [`Chaos::divergence`] finds them.
struct Divergence {
    keeper: usize,
    /// Acknowledged writes the keeper holds.
    held: usize,
    /// Nodes to rebuild from the keeper, and the rows only they hold.
    others: Vec<usize>,
    extra: Vec<i64>,
}

/// What a heal found.
enum Repair {
    /// One master, every other node its replica.
    Healed(usize),
    /// A master, and nodes refused as errant.
    Errant(usize, Vec<usize>),
    /// A master refusing to open because histories diverged.
    Diverged(usize),
    /// A node's server has been down since well after the fault was undone: it crashed on its
    /// own.
    ServerDown(usize),
}

/// The acknowledged ids so far, sorted.
fn acked_ids(w: &Writer) -> Vec<i64> {
    let mut ids: Vec<i64> = w.writes().acked.iter().map(|a| a.0).collect();
    ids.sort_unstable();
    ids
}

/// A node's state, whether it is demoted, and its transition count.
type Settled = (String, bool, u64);

/// The judgment of a run that played to the end found failures (they are in its report).
#[derive(Debug)]
struct Judged;

impl std::fmt::Display for Judged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run was judged failed")
    }
}

impl std::error::Error for Judged {}

/// splitmix64: the schedule is a function of the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n.max(1))) >> 64) as u64
    }

    fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Fault {
    PowerCut,
    KillAgent,
    KillServer,
    StopAgent,
    StopServer,
    StallReplica,
    Partition,
    OneWayCut,
    JunkFlood,
    GracefulStop,
    Switchover,
}

const FAULTS: [Fault; 11] = [
    Fault::PowerCut,
    Fault::KillAgent,
    Fault::KillServer,
    Fault::StopAgent,
    Fault::StopServer,
    Fault::StallReplica,
    Fault::Partition,
    Fault::OneWayCut,
    Fault::JunkFlood,
    Fault::GracefulStop,
    Fault::Switchover,
];

#[derive(Debug, Default, Serialize)]
struct Report {
    seed: u64,
    nodes: u8,
    advbase: u8,
    /// Under a quorum lease: two writers are not excused during partitions.
    quorum: bool,
    minutes: f64,
    faults: BTreeMap<Fault, u64>,
    faults_total: u64,
    writes_acknowledged: usize,
    writes_failed: u64,
    lost: usize,
    lost_examples: Vec<i64>,
    two_writers: usize,
    two_writers_ms: f64,
    two_writers_examples: Vec<String>,
    /// Stretches within the spacing of the looks at `read_only`: one server's fence and
    /// another's opening too close to be put in order (not counted as two writers).
    two_writers_unsure: usize,
    two_writers_unsure_examples: Vec<String>,
    vip_two_holders: usize,
    vip_two_holders_ms: f64,
    vip_two_holders_max_ms: f64,
    vip_two_holders_examples: Vec<String>,
    vip_two_holders_agent_down: usize,
    vip_two_holders_agent_down_max_ms: f64,
    vip_changes: usize,
    excused_partition_ms: f64,
    read_only_samples: Vec<usize>,
    flood_state_changes: u64,
    rebuilds: u64,
    /// Rows of a discarded history re-applied on the kept one before the rebuild.
    rows_reapplied: usize,
    /// Servers that crashed on their own and were started again, as systemd would.
    servers_restarted: usize,
    heal_ms_max: f64,
    failures: Vec<String>,
}

pub fn run(args: ChaosArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the chaos suite needs root (network namespaces, XDP); run it as root");
    }
    let seed = args
        .seed
        .unwrap_or_else(|| mono_ns() ^ u64::from(std::process::id()));
    let built = crate::tasks::build(false)?;
    let inject = crate::tasks::tests_bin("carp-inject")?;
    let pinned = Pinned::new(&built.agent_bin, &[(&inject, "carp-inject")])?;
    install_signal_handlers();
    say(format_args!(
        "chaos: seed {seed}, {} nodes, advbase {}, {} minutes (replay with --seed {seed})",
        args.nodes, args.advbase, args.minutes
    ));
    let mut report = Report {
        seed,
        nodes: args.nodes,
        advbase: args.advbase,
        quorum: args.quorum,
        minutes: args.minutes,
        ..Report::default()
    };
    let keep = crate::cmd::root()
        .join("results")
        .join(format!("chaos-{seed}-failed"));
    let outcome = tests::scope::keep_on_error(&keep, || {
        Chaos::new(&args, seed, pinned.path("carp-inject"))
            .and_then(|mut c| c.play(&args, &mut report))?;
        // A run that played to the end but was judged failed keeps its files too: the agents'
        // logs are what explains the stretch the judgment found.
        if report.failures.is_empty() {
            Ok(())
        } else {
            Err(Judged.into())
        }
    });
    if interrupted() {
        say("chaos: interrupted; the rig has been removed");
    }
    if let Err(e) = outcome
        && !e.is::<Judged>()
    {
        report.failures.push(format!("{e:#}"));
    }
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.failures.is_empty()
        || report.lost > 0
        || report.two_writers > 0
        || report.vip_two_holders > 0
    {
        bail!(
            "chaos: FAILED (seed {seed}): {}",
            report.failures.join("; ")
        );
    }
    Ok(())
}

fn print_report(r: &Report) {
    say(format_args!(
        "chaos: seed {}: {} faults {:?}; {} writes acknowledged ({} failed), {} lost{}; \
         {} stretches with two writable databases ({:.1} ms{}) {} \
         ({} more within the spacing of the looks at read_only{}) ({:.0} ms of partitions{}); {} VIP address changes, {} stretches with two VIP holders \
         outside partitions ({:.1} ms, longest {:.1} ms{}) and {} while an agent was killed or frozen \
         (longest {:.0} ms); {} state changes during junk floods; \
         {} nodes rebuilt after diverged histories ({} rows re-applied); {} servers restarted after crashing on their own; slowest heal {:.0} ms; read_only samples {:?}",
        r.seed,
        r.faults_total,
        r.faults,
        r.writes_acknowledged,
        r.writes_failed,
        r.lost,
        if r.lost_examples.is_empty() {
            String::new()
        } else {
            format!(" ({})", e_g(&r.lost_examples, ""))
        },
        r.two_writers,
        r.two_writers_ms,
        e_g(&r.two_writers_examples, ", "),
        if r.quorum {
            "at any instant (quorum: partitions included)"
        } else {
            "outside partitions"
        },
        r.two_writers_unsure,
        e_g(&r.two_writers_unsure_examples, ", "),
        r.excused_partition_ms,
        if r.quorum {
            ", excused for two VIP holders only"
        } else {
            " excused"
        },
        r.vip_changes,
        r.vip_two_holders,
        r.vip_two_holders_ms,
        r.vip_two_holders_max_ms,
        e_g(&r.vip_two_holders_examples, ", "),
        r.vip_two_holders_agent_down,
        r.vip_two_holders_agent_down_max_ms,
        r.flood_state_changes,
        r.rebuilds,
        r.rows_reapplied,
        r.servers_restarted,
        r.heal_ms_max,
        r.read_only_samples,
    ));
    for f in &r.failures {
        say(format_args!("chaos: FAILURE: {f}"));
    }
}

/// `sep` and "e.g." with the examples, or nothing when there are none.
fn e_g<T: std::fmt::Debug>(examples: &[T], sep: &str) -> String {
    if examples.is_empty() {
        String::new()
    } else {
        format!("{sep}e.g. {examples:?}")
    }
}

struct Chaos {
    /// Dropped before the cluster, whose namespaces its members run in.
    etcd: Option<Etcd>,
    c: Cluster,
    ranks: Vec<Rank>,
    rng: Rng,
    inject: PathBuf,
    /// Partitions: from the cut to the end of the election that follows the heal.
    excused: Vec<(u64, u64)>,
    /// An agent killed or frozen: (node, from, until the cluster had healed). Its node keeps
    /// the VIP on its interface meanwhile; nothing can remove it but the agent.
    agent_down: Vec<(usize, u64, Option<u64>)>,
    /// When each fault began (`mono_ns`) and what it was, to place a stretch found at the end.
    fault_log: Vec<(u64, String)>,
}

impl Chaos {
    fn new(args: &ChaosArgs, seed: u64, inject: PathBuf) -> Result<Chaos> {
        let n = usize::from(args.nodes);
        let mut cfg = ClusterConfig::new(n);
        cfg.imp = Implementation::parse(&format!("agent-xdp-{}", args.xdp))?;
        cfg.advbase = args.advbase;
        ensure!(
            !args.quorum || n == 3,
            "--quorum needs --nodes 3 (an etcd member per node: with two, one cut node leaves no majority)"
        );
        let mut c = Cluster::start(cfg)?;
        let etcd = if args.quorum {
            let etcd = Etcd::start(&c.rig, HEAL)?;
            c.config.agent_args = etcd.agent_args();
            Some(etcd)
        } else {
            None
        };
        // node0 preferred and preempting: its returns are the case a preferring node must get
        // right; the others ranked behind it.
        let step = if args.advbase == 0 { 2 } else { 100 };
        let ranks: Vec<Rank> = (0..n)
            .map(|i| Rank {
                advskew: (1 + step * i) as u8,
                priority: 200 - 50 * i as u8,
                preempt: i == 0,
            })
            .collect();
        Ok(Chaos {
            etcd,
            c,
            ranks,
            rng: Rng(seed),
            inject,
            excused: Vec::new(),
            agent_down: Vec::new(),
            fault_log: Vec::new(),
        })
    }

    fn nodes(&self) -> usize {
        self.c.nodes()
    }

    fn master_down(&self) -> Duration {
        (0..self.nodes())
            .map(|i| self.c.master_down(self.ranks[i]))
            .max()
            .unwrap_or_default()
    }

    fn play(&mut self, args: &ChaosArgs, report: &mut Report) -> Result<()> {
        let limit = HEAL;
        self.c.bring_up(&self.ranks, limit)?;
        let servers: Vec<&MariaDb> = (0..self.nodes()).map(|i| self.c.server(i)).collect();
        let watch = WritableWatch::start(sockets(&servers))?;
        let vips = VipWatch::start(&self.c.rig, tests::cluster::VIP)?;
        let writer = Writer::start(self.c.vip()?, 1, GAP, INSERT_LIMIT);
        // A run that fails part-way is judged on what it saw until then too: two writers or two
        // VIP holders before the failure are reported with it.
        let played = self.faults(args, report, &writer);
        let writes = writer.stop();
        let timeline = watch.stop();
        let vip_timeline = vips.stop();
        report.writes_acknowledged = writes.acked.len();
        report.writes_failed = writes.failed;
        report.read_only_samples = timeline.counts();
        self.judge(&timeline, &vip_timeline, report);
        let master = played?;
        self.check_writes_final(&writes, master, report)
    }

    /// Injects faults until the time is up, healing and checking the writes before each;
    /// returns the master of the last heal.
    fn faults(&mut self, args: &ChaosArgs, report: &mut Report, writer: &Writer) -> Result<usize> {
        let end = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
        let t0 = Instant::now();
        // Bounded by the time limit; the count only guards against a runaway loop.
        for k in 0..100_000u64 {
            check_interrupt()?;
            if Instant::now() >= end {
                break;
            }
            let mut fault = FAULTS[self.rng.below(FAULTS.len() as u64) as usize];
            if fault == Fault::JunkFlood && self.etcd.is_some() {
                // A flood at full speed takes both cores of a small machine and starves
                // etcd's own heartbeats (members' connections time out for seconds): the
                // master then loses its lease and closes, as it must. That is etcd's outage,
                // which the quorum tests cover; the floods' own checks run without a quorum.
                fault = Fault::PowerCut;
            }
            let master = self.heal(&acked_ids(writer), report)?;
            self.close_agent_down();
            self.check_writes(writer, master, report)?;
            say(format_args!(
                "chaos: {:>6.1}s fault {k}: {fault:?} (master node{master})",
                t0.elapsed().as_secs_f64()
            ));
            let master = if fault == Fault::JunkFlood {
                self.settle()?
            } else {
                master
            };
            self.fault_log.push((
                mono_ns(),
                format!("fault {k}: {fault:?} (master node{master})"),
            ));
            self.inject(fault, master, report)?;
            *report.faults.entry(fault).or_default() += 1;
            report.faults_total += 1;
        }
        let master = self.heal(&acked_ids(writer), report)?;
        self.close_agent_down();
        Ok(master)
    }

    /// The checks on the timelines of `read_only` and of the VIP's holders (I2).
    fn judge(&self, timeline: &Timeline, vip_timeline: &Timeline, report: &mut Report) {
        // Two VIP holders in a partition are CARP's; two writers are not, under a quorum.
        let writers_excused: &[(u64, u64)] = if self.etcd.is_some() {
            &[]
        } else {
            &self.excused
        };
        let (both, unsure): (Vec<TwoWriters>, Vec<TwoWriters>) = timeline
            .two_writers(writers_excused)
            .into_iter()
            .partition(|w| w.certain);
        report.two_writers_unsure = unsure.len();
        report.two_writers_unsure_examples = unsure
            .iter()
            .take(5)
            .map(|w| describe(w, "writable", &self.fault_log))
            .collect();
        report.two_writers = both.len();
        // In whole nanoseconds: a float sum of nothing is -0.0.
        report.two_writers_ms = both.iter().map(|w| w.to_ns - w.from_ns).sum::<u64>() as f64 / 1e6;
        report.two_writers_examples = both
            .iter()
            .take(5)
            .map(|w| describe(w, "writable", &self.fault_log))
            .collect();
        let (agent_down, both): (Vec<TwoWriters>, Vec<TwoWriters>) = vip_timeline
            .two_writers(&self.excused)
            .into_iter()
            .partition(|w| {
                self.agent_down.iter().any(|&(node, from, to)| {
                    w.nodes.contains(&node) && w.from_ns >= from && to.is_none_or(|t| w.to_ns <= t)
                })
            });
        report.vip_two_holders_agent_down = agent_down.len();
        report.vip_two_holders_agent_down_max_ms = agent_down
            .iter()
            .map(|w| w.to_ns - w.from_ns)
            .max()
            .unwrap_or(0) as f64
            / 1e6;
        report.vip_two_holders = both.len();
        report.vip_two_holders_ms =
            both.iter().map(|w| w.to_ns - w.from_ns).sum::<u64>() as f64 / 1e6;
        report.vip_two_holders_max_ms =
            both.iter().map(|w| w.to_ns - w.from_ns).max().unwrap_or(0) as f64 / 1e6;
        report.vip_two_holders_examples = both
            .iter()
            .take(5)
            .map(|w| describe(w, "held the VIP", &self.fault_log))
            .collect();
        report.vip_changes = vip_timeline
            .counts()
            .iter()
            .map(|c| c.saturating_sub(2))
            .sum();
        report.excused_partition_ms =
            self.excused.iter().map(|(a, b)| b - a).sum::<u64>() as f64 / 1e6;
        if report.two_writers > 0 {
            report.failures.push(if self.etcd.is_some() {
                "I2: two writable databases (quorum: partitions included)".into()
            } else {
                "I2: two writable databases outside a partition".into()
            });
        }
        if report.vip_two_holders > 0 {
            report.failures.push(
                "two nodes held the VIP outside a partition and with every agent running".into(),
            );
        }
    }

    /// Waits until one node is the sole master and every other its replica, repairing what
    /// the agents leave to an operator on the way: when histories diverged (a partition with
    /// writes on both sides: the master refuses, or a node is refused as errant), the history
    /// holding the acknowledged writes is kept and the nodes with rows it lacks are rebuilt
    /// from it. Returns the master.
    fn heal(&mut self, acked: &[i64], report: &mut Report) -> Result<usize> {
        let start = Instant::now();
        let n = self.nodes();
        // A refusal seen right after a repair may predate it: the master says so until its
        // next attempt, about a second later.
        let mut quiet_until: Option<Instant> = None;
        let mut fruitless = 0;
        // Since when each node's agent has reported its server down.
        let mut down_since: Vec<Option<Instant>> = vec![None; n];
        // Bounded by HEAL and by the repairs (at most one round per node per heal, and a few
        // that found nothing to repair).
        for _ in 0..n + 4 {
            let found = tests::wait::wait_for(HEAL, "the cluster heals", || {
                let settled = quiet_until.is_none_or(|t| Instant::now() >= t);
                let diverged = (0..n).filter(|_| settled).find(|&i| {
                    // Not while an operation is under way: the refusal is the last
                    // attempt's, and this one (a catch-up after a repair) may open.
                    self.c.status(i).ok().is_some_and(|s| {
                        s.is_master()
                            && s.database
                                .filter(|d| d.operation.is_none())
                                .and_then(|d| d.refused)
                                .is_some_and(|r| r.starts_with("diverged"))
                    })
                });
                if let Some(m) = diverged {
                    return Ok(Some(Repair::Diverged(m)));
                }
                for (i, since) in down_since.iter_mut().enumerate() {
                    let down = self
                        .c
                        .status(i)
                        .ok()
                        .and_then(|s| s.database)
                        .is_some_and(|d| d.gate.is_some_and(|g| g.starts_with("database down")));
                    if !down {
                        *since = None;
                    } else if since.get_or_insert_with(Instant::now).elapsed()
                        >= SERVER_RESTART_AFTER
                    {
                        *since = None;
                        return Ok(Some(Repair::ServerDown(i)));
                    }
                }
                let Some(m) = (0..n).find(|&m| self.c.is_sole_master(m)) else {
                    return Ok(None);
                };
                let errant: Vec<usize> = (0..n)
                    .filter(|&i| {
                        i != m
                            && self
                                .c
                                .status(i)
                                .ok()
                                .and_then(|s| s.database)
                                .is_some_and(|d| !d.errant.is_empty())
                    })
                    .collect();
                if (0..n).all(|i| i == m || self.c.is_replica_of(i, m)) {
                    return Ok(Some(Repair::Healed(m)));
                }
                Ok((!errant.is_empty()).then_some(Repair::Errant(m, errant)))
            });
            let repair = match found {
                Ok(x) => x,
                Err(e) => {
                    let states: Vec<String> = (0..n)
                        .map(|i| {
                            format!(
                                "node{i}: {:?}",
                                self.c.status(i).map(|s| (s.state, s.database))
                            )
                        })
                        .collect();
                    bail!("{e:#}; {}", states.join("; "));
                }
            };
            match repair {
                Repair::Healed(m) => {
                    report.heal_ms_max = report
                        .heal_ms_max
                        .max(start.elapsed().as_secs_f64() * 1000.0);
                    return Ok(m);
                }
                // The master stops at its next look at the errant node; an operator keeps the
                // history with the acknowledged writes either way.
                Repair::Errant(m, errant) => {
                    quiet_until = Some(Instant::now() + REFUSAL_RETRY);
                    if !self.keep_acknowledged_history(acked, m, report)? {
                        // The errant transactions hold no row: nothing acknowledged is there.
                        for i in errant {
                            say(format_args!(
                                "chaos: node{i} is refused as errant without a row of its own: rebuilding it from node{m}, as an operator would"
                            ));
                            self.rebuild(i, m, report)?;
                        }
                    }
                }
                // Every fault is undone before the heal, so a server down this long crashed
                // by itself (MariaDB has been seen to, on a KILL during its shutdown); a
                // deployment's service manager starts it again.
                Repair::ServerDown(i) => {
                    if self.c.server_mut(i).is_running() {
                        fruitless += 1;
                    } else {
                        say(format_args!(
                            "chaos: node{i}'s server crashed on its own: starting it again, as systemd would"
                        ));
                        self.c.server_mut(i).restart()?;
                        report.servers_restarted += 1;
                    }
                }
                Repair::Diverged(m) => {
                    quiet_until = Some(Instant::now() + REFUSAL_RETRY);
                    if !self.keep_acknowledged_history(acked, m, report)? {
                        fruitless += 1;
                        if fruitless > 2 {
                            bail!(
                                "the master refuses as diverged, but no node holds a row another lacks"
                            );
                        }
                    }
                }
            }
        }
        bail!("the cluster did not heal after rebuilding its errant nodes")
    }

    /// What an operator does when histories diverged: stop the cluster, keep the node holding
    /// the most acknowledged writes, re-apply there every row only another node holds (the
    /// other side may have acknowledged it too: a cut-off master's commits complete once its
    /// semi-sync timeout passes), rebuild those nodes from it, and start the cluster again.
    /// False if no node holds a row the keeper lacks.
    ///
    /// Every agent stops first, the masters last: a repair done node by node under running
    /// agents lets them elect and open a node meanwhile (in fast mode within milliseconds of
    /// each stop), whose writes then diverge from the history being kept, round after round.
    fn keep_acknowledged_history(
        &mut self,
        acked: &[i64],
        master: usize,
        report: &mut Report,
    ) -> Result<bool> {
        if self.divergence(acked, master)?.is_none() {
            return Ok(false);
        }
        let mut running: Vec<usize> = (0..self.nodes())
            .filter(|&i| self.c.daemon(i).is_some())
            .collect();
        // A node that does not answer may be a master too.
        running.sort_by_cached_key(|&i| self.c.status(i).is_ok_and(|s| !s.is_backup()));
        let mut stopped = Vec::new();
        let mut kept = Ok(false);
        for &i in &running {
            // A stop that fails has killed the agent: it is gone either way.
            let stop = self.c.stop_daemon(i, Duration::from_secs(15));
            stopped.push(i);
            if let Err(e) = stop {
                kept = Err(e);
                break;
            }
        }
        if kept.is_ok() {
            // Compared again: the masters may have written until they stopped.
            kept = match self.divergence(acked, master) {
                Ok(Some(d)) => self.keep(d, acked.len(), report).map(|()| true),
                other => other.map(|_| false),
            };
        }
        // Every agent stopped here starts again, whatever failed; the first error is reported.
        for i in stopped {
            if let Err(e) = self.c.start_daemon(i, self.ranks[i])
                && kept.is_ok()
            {
                kept = Err(e);
            }
        }
        kept
    }

    /// The node holding the most acknowledged writes (the master on a tie), the rows only
    /// other nodes hold, and the nodes to rebuild from it: those holding such rows, and the
    /// master if it lacks an acknowledged row the kept node holds (the other side of a
    /// partition acknowledged it alone; rebuilding the refused node from the master instead
    /// would throw that row away).
    fn divergence(&self, acked: &[i64], master: usize) -> Result<Option<Divergence>> {
        let n = self.nodes();
        let ids: Vec<Vec<i64>> = (0..n).map(|i| self.c.ids(i)).collect::<Result<_>>()?;
        let holds = |i: usize| {
            acked
                .iter()
                .filter(|a| ids[i].binary_search(a).is_ok())
                .count()
        };
        let keeper = (0..n).max_by_key(|&i| (holds(i), i == master)).unwrap_or(0);
        let others: Vec<usize> = (0..n)
            .filter(|&i| {
                i != keeper
                    && (ids[i]
                        .iter()
                        .any(|id| ids[keeper].binary_search(id).is_err())
                        || (i == master && holds(i) < holds(keeper)))
            })
            .collect();
        if others.is_empty() {
            return Ok(None);
        }
        let mut extra: Vec<i64> = others
            .iter()
            .flat_map(|&i| ids[i].iter().copied())
            .filter(|id| ids[keeper].binary_search(id).is_err())
            .collect();
        extra.sort_unstable();
        extra.dedup();
        Ok(Some(Divergence {
            keeper,
            held: holds(keeper),
            others,
            extra,
        }))
    }

    /// Re-applies the rows on the keeper and rebuilds the others from it, every agent stopped.
    fn keep(&mut self, d: Divergence, acked: usize, report: &mut Report) -> Result<()> {
        let Divergence {
            keeper,
            held,
            others,
            extra,
        } = d;
        say(format_args!(
            "chaos: histories diverged (a partition with writes on both sides): keeping node{keeper}'s, which holds {held} of the {acked} acknowledged writes so far, re-applying there the {} rows only other nodes hold, and rebuilding nodes {others:?} from it, as an operator would",
            extra.len()
        ));
        if !extra.is_empty() {
            let values: Vec<String> = extra.iter().map(|id| format!("({id}, 'merged')")).collect();
            let inserted = self.c.server(keeper).sql(&format!(
                "INSERT IGNORE INTO t.rows VALUES {}; SELECT ROW_COUNT();",
                values.join(", ")
            ))?;
            report.rows_reapplied += inserted
                .split_whitespace()
                .last()
                .and_then(|v| v.parse::<usize>().ok())
                .context("no count of the rows re-applied")?;
        }
        for i in others {
            self.c.rebuild_from(i, keeper)?;
            report.rebuilds += 1;
        }
        Ok(())
    }

    fn rebuild(&mut self, i: usize, from: usize, report: &mut Report) -> Result<()> {
        self.c.stop_daemon(i, Duration::from_secs(15))?;
        self.c.rebuild_from(i, from)?;
        self.c.start_daemon(i, self.ranks[i])?;
        report.rebuilds += 1;
        Ok(())
    }

    /// Waits until nothing is left to change: one master, every other node its replica, no
    /// node demoted (a demoted node that becomes current may preempt), and no node's state,
    /// demotion or transition count moving for three advert intervals (a node that could
    /// preempt has heard the master by then; one that does not is holding off after a
    /// switchover). A flood starts from such a cluster, so any change during it is the flood's.
    fn settle(&self) -> Result<usize> {
        let n = self.nodes();
        let quiet = Duration::from_secs(3 * u64::from(self.c.config.advbase.max(1)));
        // Each node's (state, demoted, transitions), and since when they have not changed.
        let mut last: Option<(Vec<Settled>, Instant)> = None;
        tests::wait::wait_for(HEAL, "the cluster settles", || {
            let Some(m) = (0..n).find(|&m| self.c.is_sole_master(m)) else {
                last = None;
                return Ok(None);
            };
            let seen: Vec<Settled> = (0..n)
                .map(|i| {
                    self.c
                        .status(i)
                        .map(|s| (s.state, s.demoted, s.counters.transitions))
                })
                .collect::<Result<_>>()?;
            let healthy =
                seen.iter().all(|s| !s.1) && (0..n).all(|i| i == m || self.c.is_replica_of(i, m));
            match &last {
                Some((before, since)) if healthy && *before == seen => {
                    Ok((since.elapsed() >= quiet).then_some(m))
                }
                _ => {
                    last = healthy.then(|| (seen, Instant::now()));
                    Ok(None)
                }
            }
        })
    }

    /// I1 so far: every acknowledged write is on the master.
    fn check_writes(&self, writer: &Writer, master: usize, report: &mut Report) -> Result<()> {
        let writes = writer.writes();
        // Writes acknowledged in the last moments may still be on their way to a replica that
        // just became master; they are checked at the next heal.
        let held = self.c.ids(master)?;
        let missing = writes.missing_from(&held);
        if !missing.is_empty() {
            report.lost = missing.len();
            report.lost_examples = missing.iter().take(10).copied().collect();
            bail!(
                "I1: {} acknowledged write(s) missing on the master node{master}, e.g. {:?}",
                missing.len(),
                report.lost_examples
            );
        }
        Ok(())
    }

    fn check_writes_final(
        &self,
        writes: &tests::watch::Writes,
        master: usize,
        report: &mut Report,
    ) -> Result<()> {
        let held = self.c.ids(master)?;
        let missing = writes.missing_from(&held);
        report.lost = missing.len();
        report.lost_examples = missing.iter().take(10).copied().collect();
        if !missing.is_empty() {
            bail!(
                "I1: {} acknowledged write(s) missing on the final master node{master}",
                missing.len()
            );
        }
        Ok(())
    }

    fn close_agent_down(&mut self) {
        let now = mono_ns();
        for w in &mut self.agent_down {
            w.2.get_or_insert(now);
        }
    }

    /// A cut of the network (`cut`, held for `hold`, then `mend`), excused from its start
    /// until both sides have heard each other and the loser has fenced itself. Open-ended
    /// until mended: a run that fails meanwhile is still judged.
    fn excused_cut(
        &mut self,
        hold: Duration,
        down: Duration,
        cut: impl FnOnce(&tests::rig::Rig) -> Result<()>,
        mend: impl FnOnce(&tests::rig::Rig) -> Result<()>,
    ) -> Result<()> {
        self.excused.push((mono_ns(), u64::MAX));
        cut(&self.c.rig)?;
        sleep(hold)?;
        mend(&self.c.rig)?;
        let settle = down * 2 + Duration::from_secs(3);
        if let Some(w) = self.excused.last_mut() {
            w.1 = mono_ns() + settle.as_nanos() as u64;
        }
        Ok(())
    }

    /// Injects `fault`, holds it for a random time, repairs it.
    fn inject(&mut self, fault: Fault, master: usize, report: &mut Report) -> Result<()> {
        let n = self.nodes();
        let any = self.rng.below(n as u64) as usize;
        let replica = (master + 1 + self.rng.below(n as u64 - 1) as usize) % n;
        let down = self.master_down();
        // Some faults shorter than the master-down time, most longer.
        let hold = self
            .rng
            .duration(down / 3, down * 3 + Duration::from_secs(2));
        match fault {
            Fault::PowerCut => {
                self.c.power_cut(any)?;
                sleep(hold)?;
                self.c.power_on(any)?;
                if let Some(etcd) = self.etcd.as_mut() {
                    etcd.restart(&self.c.rig, any)?;
                }
                self.c.start_daemon(any, self.ranks[any])?;
            }
            Fault::KillAgent => {
                self.agent_down.push((any, mono_ns(), None));
                self.c.kill_daemon(any);
                sleep(hold)?;
                self.c.start_daemon(any, self.ranks[any])?;
            }
            Fault::KillServer => {
                self.c.server_mut(any).kill();
                sleep(hold)?;
                self.c.server_mut(any).restart()?;
            }
            Fault::StopAgent => {
                self.agent_down.push((any, mono_ns(), None));
                self.c.agent_mut(any)?.freeze()?;
                sleep(hold)?;
                self.c.agent_mut(any)?.thaw()?;
            }
            Fault::StopServer => {
                self.c.server_mut(any).stall()?;
                sleep(hold)?;
                self.c.server_mut(any).resume()?;
            }
            Fault::StallReplica => {
                self.c.server_mut(replica).stall()?;
                sleep(
                    SEMI_SYNC_TIMEOUT
                        + self
                            .rng
                            .duration(Duration::from_millis(500), Duration::from_secs(4)),
                )?;
                self.c.server_mut(replica).resume()?;
            }
            Fault::Partition => {
                self.excused_cut(hold, down, |rig| rig.partition(any), |rig| rig.heal(any))?
            }
            // A node that talks without being heard (its adverts and answers lost) or hears
            // without being answered: under a quorum lease, etcd may keep a lease whose holder
            // hears nothing back. Excused like a partition.
            Fault::OneWayCut => {
                let way = if self.rng.below(2) == 0 {
                    Way::FromNode
                } else {
                    Way::ToNode
                };
                say(format_args!("chaos: one-way cut of node{any}: {way:?}"));
                self.fault_log
                    .push((mono_ns(), format!("one-way cut {way:?} node{any}")));
                self.excused_cut(
                    hold,
                    down,
                    |rig| rig.cut_one_way(any, way),
                    |rig| rig.mend_one_way(any),
                )?;
            }
            Fault::JunkFlood => self.junk_flood(master, report)?,
            Fault::GracefulStop => {
                self.c.stop_daemon(any, Duration::from_secs(15))?;
                sleep(hold)?;
                self.c.start_daemon(any, self.ranks[any])?;
            }
            // A refusal (the node is no longer MASTER: the master changed since it was picked,
            // a returning preferred node preempting, say) is an answer too. An accepted one is
            // carried out after the drain (up to 500 ms): until the master has left MASTER,
            // the next heal would find it still the sole master and then check the writes
            // its successor takes on it.
            Fault::Switchover => {
                let before = self.c.status(master)?.counters.transitions;
                if self
                    .c
                    .agent(master)?
                    .switchover(Duration::from_secs(10))?
                    .is_ok()
                {
                    tests::wait::wait_until(
                        Duration::from_secs(10),
                        "the master hands over after an accepted switchover",
                        || {
                            Ok(self
                                .c
                                .status(master)
                                .is_ok_and(|s| s.counters.transitions > before))
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// A few of the master's adverts, captured on the client's port (every node has accepted
    /// them by then): the path of the pcap file.
    fn capture_adverts(&self, master: usize) -> Result<String> {
        let capture = self
            .c
            .rig
            .capture_on_client(&format!("adverts-of-node{master}"))?;
        let want = 3;
        tests::wait::wait_until(
            Duration::from_secs(u64::from(self.c.config.advbase.max(1)) * (want + 2)),
            "the master's adverts captured",
            || Ok(capture.frames().len() as u64 >= want),
        )?;
        let path = capture.stop()?;
        Ok(path.to_string_lossy().into_owned())
    }

    /// Junk adverts from random sources, as fast as the injector goes, for a few seconds:
    /// forged ones (wrong HMAC), or the master's own adverts captured a moment earlier and sent
    /// again with the best skew or as bow-outs (authentic, but replays). No agent may change
    /// state meanwhile (I3).
    fn junk_flood(&mut self, master: usize, report: &mut Report) -> Result<()> {
        let n = self.nodes();
        let ms = self
            .rng
            .duration(Duration::from_secs(2), Duration::from_secs(6));
        let timing: &[&str] = match self.rng.below(3) {
            0 => &[],
            1 => &["--advbase", "1", "--advskew", "0"],
            _ => &["--advbase", "255", "--advskew", "255"],
        };
        let pcap = if timing.is_empty() {
            None
        } else {
            Some(self.capture_adverts(master)?)
        };
        let before: Vec<u64> = (0..n)
            .map(|i| self.c.status(i).map(|s| s.counters.transitions))
            .collect::<Result<_>>()?;
        let vhid = self.c.config.vhid.to_string();
        let limit = ms.as_millis().to_string();
        let inject = self.inject.to_string_lossy().into_owned();
        let mut argv = vec![
            inject.as_str(),
            "--vhid",
            &vhid,
            "--src",
            "random",
            "--rate",
            "0",
            "--duration-ms",
            &limit,
        ];
        match &pcap {
            None => argv.extend(["--kind", "forged"]),
            Some(p) => {
                argv.extend(["--replay", p.as_str()]);
                argv.extend_from_slice(timing);
            }
        }
        let mut flood = self.c.rig.spawn_client("junk-flood", &argv)?;
        let status = flood.wait_exit(ms + Duration::from_secs(10))?;
        if !status.success() {
            bail!("the junk injector failed: {}", flood.log_tail(2000));
        }
        let after: Vec<u64> = (0..n)
            .map(|i| self.c.status(i).map(|s| s.counters.transitions))
            .collect::<Result<_>>()?;
        let changed: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.saturating_sub(*b))
            .sum();
        report.flood_state_changes += changed;
        if changed > 0 {
            bail!("I3: {changed} state change(s) during a flood of forged adverts");
        }
        Ok(())
    }
}

fn describe(w: &TwoWriters, what: &str, faults: &[(u64, String)]) -> String {
    let during = faults
        .iter()
        .rev()
        .find(|(at, _)| *at <= w.from_ns)
        .map_or_else(
            || "before the first fault".to_string(),
            |(at, f)| format!("{:.1} s after {f} began", (w.from_ns - at) as f64 / 1e9),
        );
    format!(
        "nodes {:?} both {what} for {:.1} ms, {during}",
        w.nodes,
        (w.to_ns - w.from_ns) as f64 / 1e6
    )
}

/// Holding a fault for a while (the fault's length, not a wait for a condition), in steps
/// that notice Ctrl-C.
fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    for _ in 0..d.as_millis() / 50 + 2 {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
    Ok(())
}
