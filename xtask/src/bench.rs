//! `cargo xtask bench <what>`: measurements.
//!
//! `bench failover` measures the client-visible failover of this agent, UCARP and keepalived
//! under the same election timing, on a fresh two-node rig per run (see [`crate::scenario`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cmd::say;
use crate::report::{Stats, Table, ms, signed_ms, utc_stamp};
use crate::scenario::{
    self, Failover, Implementation, Rank, Scenario, Timing, WatchPort, check_interrupt, mono_ns,
    ms_between, node_name, wait_for,
};

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: Bench,
}

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Client-visible failover after a power failure of the master, against UCARP and keepalived.
    Failover(FailoverArgs),
    /// XDP program cost per packet, and forged-advert floods against every implementation.
    Xdp(crate::bench_xdp::BenchXdpArgs),
    /// Database failover: MASTER transition to the first write through the VIP, lost writes.
    Db(crate::bench_db::BenchDbArgs),
}

#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// Failovers measured per implementation (each on a fresh rig).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Directory for the markdown and JSON results (relative to the current directory).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Implementations to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "agent-xdp-off,agent-xdp-native,ucarp,keepalived"
    )]
    pub impls: Vec<String>,
}

/// Election timing of every implementation: advbase 1 s, deadratio 3.
const TIMING: Timing = Timing {
    advbase: 1,
    deadratio: 3,
};
/// Node A (node0): CARP advskew 0, VRRP priority 200.
const MASTER: Rank = Rank {
    advskew: 0,
    priority: 200,
    preempt: false,
};
/// Node B (node1): CARP advskew 100, VRRP priority 100.
const BACKUP: Rank = Rank {
    advskew: 100,
    priority: 100,
    preempt: false,
};
/// The goal for the agent: median excess over its theoretical master-down time.
const AGENT_EXCESS_GOAL_MS: f64 = 20.0;

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        Bench::Failover(a) => failover(a),
        Bench::Xdp(a) => crate::bench_xdp::run(a),
        Bench::Db(a) => crate::bench_db::run(a),
    }
}

/// One measured failover.
#[derive(Clone, Debug, Serialize)]
struct RunResult {
    run: usize,
    /// Power failure relative to the last advert of A that B received (the phase).
    fail_after_last_advert_ms: Option<f64>,
    gap_from_fail_ms: f64,
    gap_from_last_advert_ms: Option<f64>,
    excess_ms: Option<f64>,
    detection_ms: Option<f64>,
    detection_excess_ms: Option<f64>,
    outage_ms: Option<f64>,
    failed_requests: usize,
    /// The XDP mode the backup agent reported (agents only).
    xdp_reported: Option<String>,
    raw: Failover,
}

#[derive(Debug, Serialize)]
struct ImplResult {
    name: String,
    theory_ms: f64,
    runs: Vec<RunResult>,
    failures: Vec<String>,
    gap_from_fail: Option<Stats>,
    gap_from_last_advert: Option<Stats>,
    excess: Option<Stats>,
    detection_excess: Option<Stats>,
    failed_requests: Option<Stats>,
}

fn failover(args: FailoverArgs) -> Result<()> {
    require_root()?;
    let imps = args
        .impls
        .iter()
        .map(|s| Implementation::parse(s))
        .collect::<Result<Vec<_>>>()?;
    if !(1..=1000).contains(&args.runs) {
        bail!("--runs must be between 1 and 1000");
    }
    let built = crate::tasks::build(true)?;
    let _pinned = scenario::PinnedAgent::new(&built.agent_bin)?;
    scenario::install_signal_handlers();

    let mut results: Vec<ImplResult> = imps
        .iter()
        .map(|imp| ImplResult {
            name: imp.name(),
            theory_ms: TIMING.master_down(imp, BACKUP).as_secs_f64() * 1e3,
            runs: Vec::new(),
            failures: Vec::new(),
            gap_from_fail: None,
            gap_from_last_advert: None,
            excess: None,
            detection_excess: None,
            failed_requests: None,
        })
        .collect();
    // Round-robin over the implementations, so slow drifts of the machine hit all alike.
    for run in 1..=args.runs {
        for (imp, res) in imps.iter().zip(results.iter_mut()) {
            check_interrupt()?;
            say(format_args!(
                "failover run {run}/{} of {}",
                args.runs,
                imp.name()
            ));
            match one_run(imp, run, res.theory_ms) {
                Ok(r) => {
                    say(format_args!(
                        "  {}: gap from power-fail {} ms, from last advert {} ms (excess {} ms), {} failed requests",
                        imp.name(),
                        ms(Some(r.gap_from_fail_ms)),
                        ms(r.gap_from_last_advert_ms),
                        signed_ms(r.excess_ms),
                        r.failed_requests
                    ));
                    res.runs.push(r);
                }
                Err(e) => {
                    check_interrupt()?;
                    say(format_args!("  {}: run {run} failed: {e:#}", imp.name()));
                    res.failures.push(format!("run {run}: {e:#}"));
                }
            }
        }
    }
    for res in &mut results {
        let col = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<f64> {
            res.runs.iter().filter_map(f).collect()
        };
        res.gap_from_fail = Stats::of(&col(&|r| Some(r.gap_from_fail_ms)));
        res.gap_from_last_advert = Stats::of(&col(&|r| r.gap_from_last_advert_ms));
        res.excess = Stats::of(&col(&|r| r.excess_ms));
        res.detection_excess = Stats::of(&col(&|r| r.detection_excess_ms));
        res.failed_requests = Stats::of(&col(&|r| Some(r.failed_requests as f64)));
    }
    let stamp = utc_stamp();
    let markdown = render(&results, &stamp, args.runs);
    println!("{markdown}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let md_path = args.out.join(format!("failover-{stamp}.md"));
    let json_path = args.out.join(format!("failover-{stamp}.json"));
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("writing {}", md_path.display()))?;
    let json = serde_json::json!({
        "date": stamp,
        "advbase_s": TIMING.advbase,
        "deadratio": TIMING.deadratio,
        "master": { "advskew": MASTER.advskew, "priority": MASTER.priority },
        "backup": { "advskew": BACKUP.advskew, "priority": BACKUP.priority },
        "runs_per_implementation": args.runs,
        "implementations": results,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    say(format_args!(
        "results written to {} and {}",
        md_path.display(),
        json_path.display()
    ));
    if results.iter().all(|r| r.runs.is_empty()) {
        bail!("no run succeeded");
    }
    Ok(())
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this needs root (network namespaces, bridges, raw sockets); run it as root");
    }
    Ok(())
}

/// One failover on a fresh rig: A (node0) master, B (node1) backup, power failure of A.
fn one_run(imp: &Implementation, run: usize, theory_ms: f64) -> Result<RunResult> {
    let mut s = Scenario::new(2, imp.clone(), TIMING, WatchPort::Node(1), false)?;
    s.start_daemon(0, MASTER)?;
    s.wait_sole_master(0, Duration::from_secs(15))?;
    s.start_probe(1000, 0)?;
    s.wait_answers(0, mono_ns(), 50, Duration::from_secs(5))?;

    // B has settled as a backup once two adverts of A reached its port after it started:
    // the first may have come while it was still opening its sockets, the second cannot.
    let b_started = mono_ns();
    s.start_daemon(1, BACKUP)?;
    let a_addr = s.rig.addr(0);
    wait_for(
        Duration::from_secs(10),
        "B settles as backup behind A",
        || {
            s.refresh()?;
            s.check_daemon(1)?;
            let heard = s.adverts.sent_by_since(a_addr, b_started).count() >= 2;
            let agent_ok = !s.imp.is_agent() || s.agent_status(1).is_some_and(|st| st.is_backup());
            Ok((heard && agent_ok && s.holders()? == [0]).then_some(()))
        },
    )?;
    let xdp_reported = s.agent_status(1).map(|st| st.xdp);
    // Without a random phase every failure would come just after an advert (the settle
    // condition ends on one), and the gap from the failure would be biased high.
    let fail_at = mono_ns() + scenario::jitter(1000) * 1_000_000;
    wait_for(Duration::from_secs(2), "the chosen failure instant", || {
        s.check_daemon(0)?;
        Ok((mono_ns() >= fail_at).then_some(()))
    })?;
    let t_fail = s.power_fail(0)?;
    let timeout = Duration::from_secs_f64(theory_ms / 1e3) + Duration::from_secs(10);
    let f = s.measure_failover(0, t_fail, timeout)?;
    if f.new != 1 {
        bail!("after the failure {} answered, not B", node_name(f.new));
    }
    // A resignation (VRRP priority 0, CARP bow-out advskew 255) is a graceful stop, not a
    // power failure: such a run would measure something else.
    let resigned = match imp {
        Implementation::Keepalived => 0,
        _ => 255,
    };
    if f.last_advert_old_skew == Some(resigned) {
        bail!("A's last advert was a resignation, so this was no silent power failure");
    }
    s.wait_sole_master(1, Duration::from_secs(5))?;
    say(format_args!(
        "  run {run}: rig {} torn down after the measurement",
        s.rig.id()
    ));
    let gap_from_last_advert_ms = f.gap_from_last_advert_ms();
    Ok(RunResult {
        run,
        fail_after_last_advert_ms: f.last_advert_old.map(|t| ms_between(t, t_fail)),
        gap_from_fail_ms: f.gap_from_fail_ms(),
        gap_from_last_advert_ms,
        excess_ms: gap_from_last_advert_ms.map(|g| g - theory_ms),
        detection_ms: f.detection_ms(),
        detection_excess_ms: f.detection_ms().map(|d| d - theory_ms),
        outage_ms: f.outage_ms(),
        failed_requests: f.failed,
        xdp_reported,
        raw: f,
    })
}

fn render(results: &[ImplResult], stamp: &str, runs: usize) -> String {
    let carp = TIMING
        .master_down(&Implementation::Ucarp, BACKUP)
        .as_secs_f64()
        * 1e3;
    let vrrp = TIMING
        .master_down(&Implementation::Keepalived, BACKUP)
        .as_secs_f64()
        * 1e3;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mut md = format!(
        "# Failover after a power failure of the master ({stamp})\n\n\
         Two nodes on a Linux bridge in network namespaces, plus a client. Every node runs a small \
         HTTP service that answers with its name; the client opens a fresh TCP connection to \
         `http://VIP/` every 1 ms (50 ms limit per request, requests overlap, so an outage is \
         resolved to about 1 ms). Same election timing for every implementation: advbase {adv} s, \
         deadratio {dr}; node A advskew {ma} / VRRP priority {mp}, node B advskew {ba} / priority \
         {bp} (keepalived: VRRPv2, advert_int {adv}, it manages the VIP; UCARP: up/down scripts \
         add/remove the VIP, the up script also sends `arping -U`). {runs} runs per \
         implementation, each on a fresh rig, implementations interleaved. Load average at the \
         end: {load}.\n\n\
         **Power failure** of A: SIGKILL to every process in A's namespace, then A's switch port \
         goes down. The failure instant is chosen at a random phase (0-1 s) after B has settled.\n\n\
         **Method.** A recorder on B's switch port (AF_PACKET in the switch namespace, \
         `CLOCK_MONOTONIC`, the same clock as the probe) stamps every advert as the switch hands \
         it to B. B's master-down timer restarts on A's last advert, which comes up to one \
         interval before the failure, so the gap measured from the failure understates the \
         detection by that phase. The columns therefore give both:\n\n\
         - *gap from power-fail*: failure instant to the first answer from B (what a client sees \
           after a real failure, phase included);\n\
         - *gap from last advert*: A's last advert on B's port to the first answer from B;\n\
         - *excess over theory*: gap from last advert minus the theoretical master-down time \
           of B (CARP `advbase*deadratio + advskew/256` = {carp:.1} ms; VRRPv2 \
           `3*advert_int + (256-priority)/256` = {vrrp:.1} ms), i.e. what the \
           implementation adds on top of the protocol's timer: timer slack, taking the VIP, the \
           gratuitous ARP, the first answer;\n\
         - *detection excess*: A's last advert to B's first advert, minus theory.\n\n",
        adv = TIMING.advbase,
        dr = TIMING.deadratio,
        ma = MASTER.advskew,
        mp = MASTER.priority,
        ba = BACKUP.advskew,
        bp = BACKUP.priority,
    );
    let mut t = Table::new(&[
        "implementation",
        "runs ok",
        "theory (ms)",
        "gap from power-fail median (ms)",
        "p90",
        "min",
        "max",
        "gap from last advert median (ms)",
        "excess over theory median (ms)",
        "excess p90",
        "detection excess median (ms)",
        "failed requests median",
    ]);
    for r in results {
        let g = r.gap_from_fail;
        t.row(vec![
            r.name.clone(),
            format!("{}/{}", r.runs.len(), r.runs.len() + r.failures.len()),
            ms(Some(r.theory_ms)),
            ms(g.map(|s| s.median)),
            ms(g.map(|s| s.p90)),
            ms(g.map(|s| s.min)),
            ms(g.map(|s| s.max)),
            ms(r.gap_from_last_advert.map(|s| s.median)),
            signed_ms(r.excess.map(|s| s.median)),
            signed_ms(r.excess.map(|s| s.p90)),
            signed_ms(r.detection_excess.map(|s| s.median)),
            ms(r.failed_requests.map(|s| s.median)).replace(".0", ""),
        ]);
    }
    md.push_str(&t.render());

    let agents: Vec<&ImplResult> = results
        .iter()
        .filter(|r| r.name.starts_with("agent"))
        .collect();
    let others: Vec<&ImplResult> = results
        .iter()
        .filter(|r| !r.name.starts_with("agent"))
        .collect();
    if !agents.is_empty() && !others.is_empty() {
        md.push_str("\nRatios of medians (agent / other; lower is better):\n\n");
        let mut t = Table::new(&[
            "ratio",
            "gap from power-fail",
            "gap from last advert",
            "excess over theory",
        ]);
        let median = |s: Option<Stats>| s.map(|s| s.median);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b.abs() > 1e-9 => format!("{:.3}", a / b),
            _ => "–".into(),
        };
        for a in &agents {
            for o in &others {
                t.row(vec![
                    format!("{} / {}", a.name, o.name),
                    ratio(median(a.gap_from_fail), median(o.gap_from_fail)),
                    ratio(
                        median(a.gap_from_last_advert),
                        median(o.gap_from_last_advert),
                    ),
                    ratio(median(a.excess), median(o.excess)),
                ]);
            }
        }
        md.push_str(&t.render());
    }
    for a in &agents {
        if let Some(e) = a.excess {
            let verdict = if e.median <= AGENT_EXCESS_GOAL_MS {
                "meets"
            } else {
                "misses"
            };
            md.push_str(&format!(
                "\n{}: median excess {:+.1} ms {verdict} the goal of at most {AGENT_EXCESS_GOAL_MS} ms.\n",
                a.name, e.median
            ));
        }
    }

    md.push_str("\n## Every run\n\n");
    let mut t = Table::new(&[
        "implementation",
        "run",
        "failure after A's last advert (ms)",
        "gap from power-fail (ms)",
        "gap from last advert (ms)",
        "excess (ms)",
        "detection (ms)",
        "client outage (ms)",
        "failed requests",
        "xdp",
    ]);
    for r in results {
        for x in &r.runs {
            t.row(vec![
                r.name.clone(),
                x.run.to_string(),
                ms(x.fail_after_last_advert_ms),
                ms(Some(x.gap_from_fail_ms)),
                ms(x.gap_from_last_advert_ms),
                signed_ms(x.excess_ms),
                ms(x.detection_ms),
                ms(x.outage_ms),
                x.failed_requests.to_string(),
                x.xdp_reported.clone().unwrap_or_else(|| "–".into()),
            ]);
        }
    }
    md.push_str(&t.render());
    md.push_str(
        "\n*client outage*: the last answer before the failure to the first answer from B.\n",
    );
    let failures: Vec<String> = results
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| format!("- {}: {f}", r.name)))
        .collect();
    if !failures.is_empty() {
        md.push_str("\n## Failed runs\n\n");
        md.push_str(&failures.join("\n"));
        md.push('\n');
    }
    md
}
