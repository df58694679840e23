//! `cargo xtask bench`: the demo's failover, side by side with the tools it replaces.
//!
//! Every run builds the demo's web cluster afresh (three nodes, MariaDB with TLS replication
//! from `cluster-agent db bootstrap`, the guestbook on each node, a client reading and writing
//! through the VIP), power-fails the master at a random phase and measures what the client
//! saw. The configurations, interleaved run by run so slow drifts of the machine hit all alike:
//!
//! - compatible mode, advert interval 1 s, deadratio 3: this agent with XDP, this agent
//!   without XDP, UCARP with up/down scripts (address, `arping`, database promotion with the
//!   mysql client; replication set up by hand as such clusters are), keepalived VRRPv2 with
//!   notify scripts doing the same promotion;
//! - fast mode: this agent with advbase 0 and small skews, against keepalived VRRPv3 with the
//!   smallest advert interval that did not flap under the same load (searched first).
//!
//! Then both fast configurations run under load for `--soak-seconds` (concurrently, so both
//! see the same machine) and every change of master is counted as a flap. Results go to a
//! markdown table, a JSON file and an SVG picture in `--out`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use tests::cluster::{Implementation, Rank};
use tests::etcd::Etcd;
use tests::wait::{check_interrupt, install_signal_handlers, mono_ns, ms_between};

use crate::cmd::say;
use crate::report::{Stats, Table, ms, signed_ms, utc_stamp};
use crate::scenario::{self, POLL, Pinned, Scenario, Timing, WatchPort, node_name};
use crate::stalls::{StallProbe, Stalls};
use crate::timeline::GapSeries;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: Option<Bench>,
    #[command(flatten)]
    pub compare: CompareArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// XDP program cost per packet, and forged-advert floods against every implementation.
    Xdp(crate::bench_xdp::BenchXdpArgs),
    /// Database failover in detail: MASTER transition to the first write, by failure kind.
    Db(crate::bench_db::BenchDbArgs),
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Failovers measured per configuration (each on a fresh cluster).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Seconds each fast-mode configuration runs under load while flaps are counted.
    #[arg(long, default_value_t = 600)]
    pub soak_seconds: u64,
    /// Seconds each candidate keepalived VRRPv3 interval runs under load in the search.
    #[arg(long, default_value_t = 60)]
    pub search_seconds: u64,
    /// Directory for the markdown, JSON and SVG results (relative to the current directory).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

/// Nodes per cluster, as in the demo.
const NODES: usize = 3;
/// Compatible mode: advbase 1 s, deadratio 3 for every implementation.
const COMPAT: Timing = Timing {
    advbase: 1,
    deadratio: 3,
};
/// Fast mode of the agent: advbase 0, the interval is advskew/256 s.
const FAST: Timing = Timing {
    advbase: 0,
    deadratio: 3,
};
/// CARP advskews and VRRP priorities of node0 (the first master), node1, node2.
const COMPAT_SKEW: [u8; NODES] = [0, 100, 200];
const FAST_SKEW: [u8; NODES] = [1, 1, 2];
const PRIORITY: [u8; NODES] = [200, 100, 50];
/// Candidate VRRPv3 advert intervals for keepalived, smallest first (keepalived counts in
/// centiseconds).
const V3_CANDIDATES_MS: [u32; 5] = [10, 20, 30, 50, 100];
/// The client: a request every 2 ms, every fourth a write.
const PROBE_INTERVAL_US: u64 = 2000;
const WRITE_EVERY: u64 = 4;
/// Goals, compatible mode: excess over theory at the median and at the max, and how soon
/// after the VIP moved the database was open for writes.
const EXCESS_GOAL_MS: f64 = 10.0;
const EXCESS_MAX_GOAL_MS: f64 = 30.0;
const WRITABLE_AFTER_GOAL_MS: f64 = 5.0;
/// Goals, fast mode: gap at the median and the 99th percentile, and the ratio of the median gap
/// to keepalived VRRPv3's at its best non-flapping interval.
const FAST_GOAL_MS: f64 = 25.0;
const FAST_P99_GOAL_MS: f64 = 40.0;
const KEEPALIVED_RATIO_GOAL: f64 = 0.6;

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        Some(Bench::Xdp(a)) => crate::bench_xdp::run(a),
        Some(Bench::Db(a)) => crate::bench_db::run(a),
        None => compare(args.compare),
    }
}

/// One configuration of the comparison.
#[derive(Clone, Debug)]
struct Config {
    name: String,
    imp: Implementation,
    timing: Timing,
    fast: bool,
    /// The database opens only under a quorum lease on etcd (a member on every node).
    quorum: bool,
}

impl Config {
    fn rank(&self, i: usize) -> Rank {
        Rank {
            advskew: if self.fast {
                FAST_SKEW[i]
            } else {
                COMPAT_SKEW[i]
            },
            priority: PRIORITY[i],
            preempt: false,
        }
    }

    /// Theoretical master-down time of node1, the node that takes over.
    fn theory_ms(&self) -> f64 {
        self.timing
            .master_down(&self.imp, self.rank(1))
            .as_secs_f64()
            * 1e3
    }

    fn describe(&self) -> String {
        match &self.imp {
            Implementation::Agent { xdp } if self.fast => format!(
                "cluster-agent --xdp {}, advbase 0, advskew {:?}, deadratio {}",
                xdp.as_deref().unwrap_or("auto"),
                FAST_SKEW,
                self.timing.deadratio
            ),
            Implementation::Agent { xdp } => format!(
                "cluster-agent --xdp {}, advbase 1, advskew {COMPAT_SKEW:?}, deadratio 3{}",
                xdp.as_deref().unwrap_or("auto"),
                if self.quorum {
                    ", quorum lease on a three-member etcd (one per node), default TTL 5 s"
                } else {
                    ""
                }
            ),
            Implementation::Ucarp => format!(
                "ucarp -b 1 -r 3 -k {COMPAT_SKEW:?}, up/down scripts: ip addr, arping -U, mysql client promotion"
            ),
            Implementation::Keepalived => format!(
                "keepalived VRRPv2 advert_int 1, priority {PRIORITY:?}, notify scripts: mysql client promotion"
            ),
            Implementation::KeepalivedV3 { interval_ms } => format!(
                "keepalived VRRPv3 advert_int {:.2}, priority {PRIORITY:?}, notify scripts: mysql client promotion",
                f64::from(*interval_ms) / 1000.0
            ),
        }
    }
}

fn agent(xdp: &str, fast: bool) -> Config {
    Config {
        name: format!(
            "agent{} {}",
            if fast { " fast" } else { "" },
            if xdp == "off" { "no-XDP" } else { "XDP" }
        ),
        imp: Implementation::Agent {
            xdp: Some(xdp.into()),
        },
        timing: if fast { FAST } else { COMPAT },
        fast,
        quorum: false,
    }
}

fn keepalived_v3(interval_ms: u32) -> Config {
    Config {
        name: format!("keepalived v3 {interval_ms} ms"),
        imp: Implementation::KeepalivedV3 { interval_ms },
        timing: FAST,
        fast: true,
        quorum: false,
    }
}

/// One measured failover; times in milliseconds from the power failure unless named otherwise.
#[derive(Clone, Debug, Serialize)]
struct RunResult {
    run: usize,
    /// First answer (read or write) from the new master.
    gap_ms: f64,
    /// The old master's last advert on node1's port to the first answer from the new master,
    /// minus the theoretical master-down time.
    excess_ms: Option<f64>,
    /// First write the new master acknowledged.
    writable_ms: Option<f64>,
    /// The new master's database open to its VIP's arrival, by its own record (agents only).
    #[serde(skip_serializing_if = "Option::is_none")]
    open_after_vip_ms: Option<f64>,
    failed_requests: usize,
    acknowledged_writes: usize,
    lost_writes: Vec<String>,
    new_master: String,
    /// Where the time went, from the new master's takeover record (agents only).
    breakdown: Option<String>,
    /// With a quorum: whether the failed node's etcd member was etcd's leader (its loss costs
    /// an etcd election, after which the new leader renews every lease for a full TTL).
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_leader_failed: Option<bool>,
}

#[derive(Debug, Serialize)]
struct ConfigResult {
    name: String,
    settings: String,
    theory_ms: f64,
    runs: Vec<RunResult>,
    errors: Vec<String>,
    gap: Option<Stats>,
    excess: Option<Stats>,
    writable: Option<Stats>,
    failed_requests: Option<Stats>,
    lost_writes: Option<Stats>,
    /// Fast mode only: changes of master while running under load, and for how long.
    soak: Option<Soak>,
}

#[derive(Clone, Debug, Serialize)]
struct Soak {
    seconds: f64,
    flaps: usize,
    requests: usize,
    failed_requests: usize,
    /// When each flap was first seen (`mono_ns`): the first foreign advert, else the check.
    #[serde(skip)]
    flap_starts: Vec<u64>,
    /// Flaps that began within [`STALL_EXPLAINS`] of the end of a machine stall.
    after_stall: usize,
}

/// A flap this soon after the machine stood still is put down to the stall: the master's
/// adverts could not be sent, or not read, for that long.
const STALL_EXPLAINS: Duration = Duration::from_millis(40);

fn compare(args: CompareArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark needs root (network namespaces, XDP); run it as root"
    );
    ensure!(
        (1..=1000).contains(&args.runs),
        "--runs must be between 1 and 1000"
    );
    ensure!(
        (10..=86_400).contains(&args.soak_seconds),
        "--soak-seconds must be between 10 and 86400"
    );
    ensure!(
        (5..=3600).contains(&args.search_seconds),
        "--search-seconds must be between 5 and 3600"
    );
    let built = crate::tasks::build(true)?;
    let _pinned = Pinned::new(&built.agent_bin, &[])?;
    install_signal_handlers();
    let started = mono_ns();

    // The smallest keepalived VRRPv3 interval that holds still under the client's load.
    let mut search = Vec::new();
    let mut v3 = None;
    for ms in V3_CANDIDATES_MS {
        check_interrupt()?;
        say(format_args!(
            "keepalived VRRPv3 interval search: {ms} ms under load for {} s",
            args.search_seconds
        ));
        let cfg = keepalived_v3(ms);
        let soak = soak(&cfg, args.search_seconds);
        let line = match &soak {
            Ok(s) => format!("{ms} ms: {} flaps in {:.0} s", s.flaps, s.seconds),
            Err(e) => format!("{ms} ms: failed: {e:#}"),
        };
        say(format_args!("  {line}"));
        search.push(line);
        if soak.is_ok_and(|s| s.flaps == 0) {
            v3 = Some(ms);
            break;
        }
    }
    let v3 = v3.unwrap_or(*V3_CANDIDATES_MS.last().expect("candidates"));

    let configs = [
        agent("auto", false),
        Config {
            name: "agent quorum".into(),
            quorum: true,
            ..agent("auto", false)
        },
        agent("off", false),
        Config {
            name: "ucarp".into(),
            imp: Implementation::Ucarp,
            timing: COMPAT,
            fast: false,
            quorum: false,
        },
        Config {
            name: "keepalived".into(),
            imp: Implementation::Keepalived,
            timing: COMPAT,
            fast: false,
            quorum: false,
        },
        agent("auto", true),
        keepalived_v3(v3),
    ];
    let mut results: Vec<ConfigResult> = configs
        .iter()
        .map(|c| ConfigResult {
            name: c.name.clone(),
            settings: c.describe(),
            theory_ms: c.theory_ms(),
            runs: Vec::new(),
            errors: Vec::new(),
            gap: None,
            excess: None,
            writable: None,
            failed_requests: None,
            lost_writes: None,
            soak: None,
        })
        .collect();
    for run in 1..=args.runs {
        for (cfg, res) in configs.iter().zip(results.iter_mut()) {
            check_interrupt()?;
            say(format_args!(
                "failover run {run}/{} of {}",
                args.runs, cfg.name
            ));
            match one_run(cfg, run) {
                Ok(r) => {
                    say(format_args!(
                        "  {}: gap {} ms (excess over theory {} ms), writable after {} ms, {} failed requests, {} of {} acknowledged writes lost",
                        cfg.name,
                        ms(Some(r.gap_ms)),
                        signed_ms(r.excess_ms),
                        ms(r.writable_ms),
                        r.failed_requests,
                        r.lost_writes.len(),
                        r.acknowledged_writes
                    ));
                    if let Some(b) = &r.breakdown {
                        say(format_args!("    {b}"));
                    }
                    res.runs.push(r);
                }
                Err(e) => {
                    check_interrupt()?;
                    say(format_args!("  {}: run {run} failed: {e:#}", cfg.name));
                    res.errors.push(format!("run {run}: {e:#}"));
                }
            }
        }
    }

    say(format_args!(
        "soak: both fast-mode configurations under load for {} s, concurrently",
        args.soak_seconds
    ));
    let fast: Vec<usize> = (0..configs.len()).filter(|&i| configs[i].fast).collect();
    let probe = StallProbe::start(Duration::from_secs(args.soak_seconds + 120));
    let soaks: Vec<Result<Soak>> = std::thread::scope(|scope| {
        let handles: Vec<_> = fast
            .iter()
            .map(|&i| {
                let cfg = &configs[i];
                scope.spawn(move || soak(cfg, args.soak_seconds))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("soak thread panicked")))
            .collect()
    });
    let stalls = probe.stop();
    say(format_args!("  {}", stalls.summary()));
    for (&i, s) in fast.iter().zip(soaks) {
        match s {
            Ok(mut s) => {
                s.after_stall = stalls.explain(&s.flap_starts, STALL_EXPLAINS);
                say(format_args!(
                    "  {}: {} flaps in {:.0} s, {} of them within {} ms of a machine stall",
                    configs[i].name,
                    s.flaps,
                    s.seconds,
                    s.after_stall,
                    STALL_EXPLAINS.as_millis()
                ));
                results[i].soak = Some(s);
            }
            Err(e) => {
                check_interrupt()?;
                say(format_args!("  {}: soak failed: {e:#}", configs[i].name));
                results[i].errors.push(format!("soak: {e:#}"));
            }
        }
    }

    for res in &mut results {
        let col = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<f64> {
            res.runs.iter().filter_map(f).collect()
        };
        res.gap = Stats::of(&col(&|r| Some(r.gap_ms)));
        res.excess = Stats::of(&col(&|r| r.excess_ms));
        res.writable = Stats::of(&col(&|r| r.writable_ms));
        res.failed_requests = Stats::of(&col(&|r| Some(r.failed_requests as f64)));
        res.lost_writes = Stats::of(&col(&|r| Some(r.lost_writes.len() as f64)));
    }
    let stamp = utc_stamp();
    let elapsed_min = ms_between(started, mono_ns()) / 60_000.0;
    let markdown = render(&results, &stamp, &args, &search, &stalls, elapsed_min);
    println!("{markdown}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let md_path = args.out.join(format!("bench-{stamp}.md"));
    let json_path = args.out.join(format!("bench-{stamp}.json"));
    let svg_path = args.out.join(format!("bench-{stamp}.svg"));
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("writing {}", md_path.display()))?;
    let json = serde_json::json!({
        "date": stamp,
        "machine": machine(),
        "nodes": NODES,
        "runs_per_configuration": args.runs,
        "soak_seconds": args.soak_seconds,
        "soak_machine_stalls": stalls,
        "keepalived_v3_search": search,
        "configurations": results,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let series: Vec<GapSeries> = results
        .iter()
        .map(|r| GapSeries {
            name: r.name.clone(),
            gaps_ms: r.runs.iter().map(|x| x.gap_ms).collect(),
        })
        .collect();
    crate::timeline::draw_gaps(
        &svg_path,
        &format!("Client-visible gap after a power failure of the master ({stamp}); bars: median"),
        &series,
    )?;
    say(format_args!(
        "results written to {}, {} and {}",
        md_path.display(),
        json_path.display(),
        svg_path.display()
    ));
    let lost: usize = results
        .iter()
        .filter(|r| r.name.starts_with("agent"))
        .flat_map(|r| &r.runs)
        .map(|r| r.lost_writes.len())
        .sum();
    ensure!(lost == 0, "the agent lost {lost} acknowledged write(s)");
    Ok(())
}

/// The cluster of `cfg` up: node0 master (its database writable), the others replicating
/// from it, backups that have heard node0 at least twice, and node0 answering the client
/// (`writes`: acknowledging its writes). Recorder on node1's port.
fn start_cluster(cfg: &Config, writes: bool) -> Result<Scenario> {
    let mut s = Scenario::new(NODES, cfg.imp.clone(), cfg.timing, WatchPort::Node(1))?;
    if cfg.quorum {
        let etcd = Etcd::start(&s.c.rig, Duration::from_secs(30))?;
        s.c.config.agent_args = etcd.agent_args();
        s.etcd = Some(etcd);
    }
    let ranks: Vec<Rank> = (0..NODES).map(|i| cfg.rank(i)).collect();
    let up = s.c.bring_up(&ranks, Duration::from_secs(20))?;
    let a_addr = s.c.rig.addr(0);
    POLL.wait_until(
        Duration::from_secs(20),
        "the backups settle behind node0",
        || {
            s.refresh()?;
            s.c.check_daemons()?;
            let heard = s.adverts.sent_by_since(a_addr, up.backups_started).count() >= 2;
            Ok(heard && s.c.holders()? == [0])
        },
    )?;
    s.start_probe(PROBE_INTERVAL_US, WRITE_EVERY)?;
    let since = mono_ns();
    // Generous: with both fast-mode clusters under load on a small machine most requests
    // run out of time at first.
    POLL.wait_until(
        Duration::from_secs(60),
        if writes {
            "writes acknowledged by node0"
        } else {
            "answers from node0"
        },
        || {
            s.refresh()?;
            let acked = s
                .probe_log
                .ended_since(since)
                .filter(|x| {
                    x.ok_from("node0")
                        && (!writes || x.write.as_ref().is_some_and(|w| w.1.is_some()))
                })
                .count();
            Ok(acked >= 50)
        },
    )?;
    Ok(s)
}

/// One failover on a fresh cluster: power failure of node0 at a random phase.
fn one_run(cfg: &Config, run: usize) -> Result<RunResult> {
    let mut s = start_cluster(cfg, true)?;
    // A random phase against the advert timer: otherwise every failure would come just after
    // an advert (the settle condition ends on one).
    let interval_ms = if cfg.fast { 50 } else { 1000 };
    let etcd_leader_failed = match &s.etcd {
        Some(e) => Some(e.leader()? == 0),
        None => None,
    };
    let fail_at = mono_ns() + scenario::jitter(interval_ms) * 1_000_000;
    POLL.wait_until(Duration::from_secs(2), "the chosen failure instant", || {
        s.c.check_daemon(0)?;
        Ok(mono_ns() >= fail_at)
    })?;
    let t_fail = s.power_cut(0)?;
    let timeout = Duration::from_secs_f64(cfg.theory_ms() / 1e3) + Duration::from_secs(10);
    let f = s.measure_failover(0, t_fail, timeout)?;
    // A resignation (VRRP priority 0, CARP bow-out advskew 255) is a graceful stop.
    let resigned = if cfg.imp.is_agent() || cfg.imp == Implementation::Ucarp {
        255
    } else {
        0
    };
    if f.last_advert_old_skew == Some(resigned) {
        bail!("node0's last advert was a resignation, so this was no silent power failure");
    }
    let new_name = node_name(f.new);
    let writable = POLL
        .wait_for(
            Duration::from_secs(10),
            &format!("a write acknowledged by {new_name}"),
            || {
                s.refresh()?;
                Ok(s.probe_log
                    .ended_since(t_fail)
                    .find(|x| {
                        x.ok_from(&new_name) && x.write.as_ref().is_some_and(|w| w.1.is_some())
                    })
                    .map(|x| x.end_ns))
            },
        )
        .ok();
    let check = s.check_writes(f.new)?;
    if !check.lost.is_empty() {
        say(format_args!(
            "  run {run}: {} acknowledged write(s) missing on {new_name}, e.g. {:?}",
            check.lost.len(),
            &check.lost[..check.lost.len().min(10)]
        ));
    }
    Ok(RunResult {
        run,
        gap_ms: f.gap_from_fail_ms(),
        excess_ms: f
            .gap_from_last_advert_ms()
            .map(|g| g - cfg.theory_ms())
            .filter(|_| !cfg.fast),
        writable_ms: writable.map(|t| ms_between(t_fail, t)),
        open_after_vip_ms: f.open_after_vip_ms(),
        failed_requests: f.failed,
        acknowledged_writes: check.acknowledged,
        lost_writes: check.lost,
        new_master: new_name,
        breakdown: f.breakdown(),
        etcd_leader_failed,
    })
}

/// Runs `cfg`'s cluster under the client's load for `seconds` and counts flaps: adverts from
/// a node other than node0 on node1's port (a backup that took over), or the VIP anywhere
/// else, counted once per episode.
///
/// Under the soak's load (both fast-mode clusters at once) most requests take longer than
/// the client's 50 ms, writes through semi-sync replication above all, so only answers are
/// waited for.
fn soak(cfg: &Config, seconds: u64) -> Result<Soak> {
    let mut s = start_cluster(cfg, false)?;
    let t0 = mono_ns();
    let end = t0 + seconds * 1_000_000_000;
    let master = s.c.rig.addr(0);
    let mut flap_starts = Vec::new();
    let mut in_flap = false;
    let mut seen = 0;
    POLL.wait_until(Duration::from_secs(seconds + 5), "the soak to end", || {
        s.refresh()?;
        s.c.check_daemon(0)?;
        let foreign = s.adverts.adverts[seen..]
            .iter()
            .find(|a| a.src != master && a.t_ns >= t0)
            .map(|a| a.t_ns);
        seen = s.adverts.adverts.len();
        let wrong = foreign.is_some() || s.c.holders()? != [0];
        if wrong && !in_flap {
            flap_starts.push(foreign.unwrap_or_else(mono_ns));
        }
        in_flap = wrong;
        // Paced by the advert record, not a timer: the next check comes after the poll.
        Ok(mono_ns() >= end)
    })?;
    let samples = &s.probe_log.samples;
    Ok(Soak {
        seconds: ms_between(t0, mono_ns()) / 1e3,
        flaps: flap_starts.len(),
        requests: samples.len(),
        failed_requests: samples.iter().filter(|x| !x.is_ok()).count(),
        flap_starts,
        after_stall: 0,
    })
}

/// The machine the figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} x {cpu}, Linux {}", kernel.trim())
}

fn render(
    results: &[ConfigResult],
    stamp: &str,
    args: &CompareArgs,
    search: &[String],
    stalls: &Stalls,
    elapsed_min: f64,
) -> String {
    let mut md = format!(
        "# Failover side by side ({stamp})\n\n\
         Machine: {}. {} runs per configuration, each on a fresh three-node cluster, \
         configurations interleaved; {elapsed_min:.0} min in all.\n\n\
         Each node: MariaDB 10.11 with TLS replication (bootstrap by `cluster-agent db \
         bootstrap`), the guestbook web service on its local database, and the election daemon. \
         The client opens a fresh TCP connection to the VIP every 2 ms (50 ms limit), every \
         fourth request a write, and records the id of every acknowledged write. Power failure \
         of the master (every process frozen at once and its switch port down; they are killed \
         when the node is powered on again) at a random phase. \
         *gap*: failure to the first answer from the new master; *excess*: node0's last advert \
         to that answer, minus the protocol's master-down time; *writable*: failure to the first \
         write the new master acknowledged; *lost*: acknowledged writes missing on the new \
         master.\n\n",
        machine(),
        args.runs
    );
    let mut t = Table::new(&[
        "configuration",
        "runs ok",
        "theory (ms)",
        "gap median (ms)",
        "p90",
        "max",
        "gap / agent",
        "excess median (ms)",
        "writable median (ms)",
        "writable / agent",
        "failed requests median",
        "max",
        "lost writes median",
        "max",
    ]);
    let median = |s: Option<Stats>| s.map(|s| s.median);
    let reference = |fast: bool| {
        results
            .iter()
            .find(|r| r.name == if fast { "agent fast XDP" } else { "agent XDP" })
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    };
    for r in results {
        let fast = r.name.contains("fast") || r.name.contains("v3");
        let base = reference(fast);
        let gap_ratio = ratio(median(r.gap), base.and_then(|b| median(b.gap)));
        let writable_ratio = ratio(median(r.writable), base.and_then(|b| median(b.writable)));
        let count = |s: Option<Stats>, pick: fn(Stats) -> f64| {
            s.map_or("–".into(), |s| format!("{}", pick(s)))
        };
        t.row(vec![
            r.name.clone(),
            format!(
                "{}/{}",
                r.runs.len(),
                r.runs.len() + r.errors.iter().filter(|e| e.starts_with("run")).count()
            ),
            ms(Some(r.theory_ms)),
            ms(r.gap.map(|s| s.median)),
            ms(r.gap.map(|s| s.p90)),
            ms(r.gap.map(|s| s.max)),
            gap_ratio,
            signed_ms(r.excess.map(|s| s.median)),
            ms(r.writable.map(|s| s.median)),
            writable_ratio,
            count(r.failed_requests, |s| s.median),
            count(r.failed_requests, |s| s.max),
            count(r.lost_writes, |s| s.median),
            count(r.lost_writes, |s| s.max),
        ]);
    }
    md.push_str(&t.render());
    md.push_str("\nRatios are against the agent with XDP in the same mode (compatible or fast).\n\n## Settings\n\n");
    for r in results {
        md.push_str(&format!("- {}: {}\n", r.name, r.settings));
    }
    md.push_str(&format!(
        "\nkeepalived VRRPv3 interval search ({} s each under load): {}.\n",
        args.search_seconds,
        search.join("; ")
    ));
    md.push_str("\n## Fast mode under load\n\n");
    md.push_str(&format!(
        "Both clusters at once. Meanwhile a thread at real-time priority, which nothing on \
         the machine outranks, watched it: {}. A flap that began within {} ms of the end of \
         such a stall is counted as after a stall.\n\n",
        stalls.summary(),
        STALL_EXPLAINS.as_millis()
    ));
    let mut t = Table::new(&[
        "configuration",
        "seconds",
        "flaps",
        "after a stall",
        "requests",
        "failed",
    ]);
    for r in results.iter().filter(|r| r.soak.is_some()) {
        let s = r.soak.as_ref().expect("filtered");
        t.row(vec![
            r.name.clone(),
            format!("{:.0}", s.seconds),
            s.flaps.to_string(),
            s.after_stall.to_string(),
            s.requests.to_string(),
            s.failed_requests.to_string(),
        ]);
    }
    md.push_str(&t.render());

    md.push_str("\n## Goals\n\n");
    let find = |n: &str| results.iter().find(|r| r.name == n);
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    for name in ["agent XDP", "agent no-XDP"] {
        if let Some(a) = find(name) {
            let excess = a.excess;
            let after: Vec<f64> = a
                .runs
                .iter()
                .filter_map(|r| Some(r.writable_ms? - r.gap_ms))
                .collect();
            let after = Stats::of(&after).map(|s| s.median);
            // Every run counts: one without the record leaves the goal unmet.
            let open: Option<Vec<f64>> = a.runs.iter().map(|r| r.open_after_vip_ms).collect();
            let open = open.and_then(|o| Stats::of(&o)).map(|s| s.max);
            let ucarp = find("ucarp")
                .and_then(|u| median(a.gap).zip(median(u.gap)))
                .map(|(a, u)| a / u);
            md.push_str(&format!(
                "- {name}: excess over theory {} ms at the median (goal <= {EXCESS_GOAL_MS}: {}) and {} ms at the max (goal <= {EXCESS_MAX_GOAL_MS}: {}); database open for writes {} ms from the VIP's move in the worst run, by the new master's record (negative: before it; goal <= {WRITABLE_AFTER_GOAL_MS}: {}); the client, one write every {} ms, had its first write acknowledged {} ms after its first answer at the median; gap {:.2}x UCARP's\n",
                signed_ms(excess.map(|s| s.median)),
                verdict(excess.is_some_and(|e| e.median <= EXCESS_GOAL_MS)),
                signed_ms(excess.map(|s| s.max)),
                verdict(excess.is_some_and(|e| e.max <= EXCESS_MAX_GOAL_MS)),
                signed_ms(open),
                verdict(open.is_some_and(|w| w <= WRITABLE_AFTER_GOAL_MS)),
                PROBE_INTERVAL_US * WRITE_EVERY / 1000,
                ms(after),
                ucarp.unwrap_or(f64::NAN),
            ));
        }
    }
    if let Some(a) = find("agent fast XDP") {
        let gap = median(a.gap);
        let p99 = a.gap.map(|s| s.p99);
        let keepalived = results
            .iter()
            .find(|r| r.name.starts_with("keepalived v3"))
            .and_then(|k| gap.zip(median(k.gap)))
            .map(|(a, k)| a / k);
        let flaps = a.soak.as_ref().map(|s| s.flaps);
        md.push_str(&format!(
            "- agent fast XDP: gap {} ms at the median (goal <= {FAST_GOAL_MS}: {}) and {} ms at p99 (goal <= {FAST_P99_GOAL_MS}: {}); {:.2}x keepalived VRRPv3's median (goal <= {KEEPALIVED_RATIO_GOAL}: {}); {} flaps in {} s under load (goal 0 in 600 s: {})\n",
            ms(gap),
            verdict(gap.is_some_and(|g| g <= FAST_GOAL_MS)),
            ms(p99),
            verdict(p99.is_some_and(|g| g <= FAST_P99_GOAL_MS)),
            keepalived.unwrap_or(f64::NAN),
            verdict(keepalived.is_some_and(|r| r <= KEEPALIVED_RATIO_GOAL)),
            flaps.map_or("–".into(), |f| f.to_string()),
            a.soak.as_ref().map_or("–".into(), |s| format!("{:.0}", s.seconds)),
            verdict(flaps == Some(0) && a.soak.as_ref().is_some_and(|s| s.seconds >= 600.0)),
        ));
    }
    if let (Some(q), Some(a)) = (find("agent quorum"), find("agent XDP")) {
        md.push_str(&format!(
            "- agent quorum, the cost of the lease: writable {} ms after the failure at the median against {} ms without it; gap (first answer, reads included) {} against {} ms\n",
            ms(median(q.writable)),
            ms(median(a.writable)),
            ms(median(q.gap)),
            ms(median(a.gap)),
        ));
        let split = |led: bool| {
            let v: Vec<f64> = q
                .runs
                .iter()
                .filter(|r| r.etcd_leader_failed == Some(led))
                .filter_map(|r| r.writable_ms)
                .collect();
            (v.len(), Stats::of(&v))
        };
        let ((n_led, led), (n_other, other)) = (split(true), split(false));
        md.push_str(&format!(
            "- agent quorum by etcd's leader at the failure: the failed node led etcd in {n_led} runs (writable median {} ms, max {} ms), another node did in {n_other} (median {} ms, max {} ms)\n",
            ms(led.as_ref().map(|s| s.median)),
            ms(led.as_ref().map(|s| s.max)),
            ms(other.as_ref().map(|s| s.median)),
            ms(other.as_ref().map(|s| s.max)),
        ));
    }
    let agent_lost: usize = results
        .iter()
        .filter(|r| r.name.starts_with("agent"))
        .flat_map(|r| &r.runs)
        .map(|r| r.lost_writes.len())
        .sum();
    md.push_str(&format!(
        "- acknowledged writes lost by the agent over all its runs: {agent_lost} (goal 0: {})\n",
        verdict(agent_lost == 0)
    ));

    md.push_str("\n## Every run\n\n");
    let mut t = Table::new(&[
        "configuration",
        "run",
        "new master",
        "gap (ms)",
        "excess (ms)",
        "writable (ms)",
        "failed requests",
        "acknowledged writes",
        "lost",
        "failed node led etcd",
    ]);
    for r in results {
        for x in &r.runs {
            t.row(vec![
                r.name.clone(),
                x.run.to_string(),
                x.new_master.clone(),
                ms(Some(x.gap_ms)),
                signed_ms(x.excess_ms),
                ms(x.writable_ms),
                x.failed_requests.to_string(),
                x.acknowledged_writes.to_string(),
                x.lost_writes.len().to_string(),
                x.etcd_leader_failed
                    .map_or("–".into(), |l| if l { "yes" } else { "no" }.to_string()),
            ]);
        }
    }
    md.push_str(&t.render());
    md.push_str(
        "\n## Where the time went\n\nFor every run of the agent, from the new master's own \
         record of its takeover: its transition to MASTER after node0's last advert, then each \
         step after the transition (the database's preparation and each statement of its \
         opening, the VIP, the gratuitous ARP), then the start and the end of the first request \
         it answered.\n\n",
    );
    for r in results {
        for x in &r.runs {
            if let Some(b) = &x.breakdown {
                md.push_str(&format!("- {} run {}: {b}\n", r.name, x.run));
            }
        }
    }
    let errors: Vec<String> = results
        .iter()
        .flat_map(|r| r.errors.iter().map(move |e| format!("- {}: {e}", r.name)))
        .collect();
    if !errors.is_empty() {
        md.push_str("\n## Failed runs\n\n");
        md.push_str(&errors.join("\n"));
        md.push('\n');
    }
    md
}
