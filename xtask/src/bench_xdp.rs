//! `cargo xtask bench xdp`: what hostile adverts cost, and whether they break an election.
//!
//! Two parts:
//! - the per-packet cost of the XDP program for a CARP advert, an ARP request for the VIP and
//!   ordinary traffic, measured in the kernel (BPF_PROG_TEST_RUN) on the real program and maps,
//!   attached to a veth in a throwaway namespace;
//! - a flood of forged adverts for the vhid (VRRP vrid for keepalived) from a third node, at
//!   several rates, against a master/backup pair of this agent with XDP, this agent without
//!   XDP, UCARP and keepalived: false takeovers by the backup while the real master is alive,
//!   and the CPU the backup's processes use.
//!
//! Results go to `<out>/xdp-<date>.md` and `.json`, and the markdown to stdout.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use tests::{AgentOpts, KeepalivedOpts, Poller, Proc, Rig, RigConfig, Timed, Timing, UcarpOpts};

use crate::cmd::{self, say};
use crate::scenario::Pinned;

const VHID: u8 = 42;
const PASS: &str = "fl00d";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const VIP24: &str = "10.99.0.100/24";
/// First source address of the forged adverts (no node uses it).
const FORGED_SRC: &str = "10.99.0.77";
/// The goal for the agent with XDP: CPU of one core under flood.
const CPU_GOAL_PCT: f64 = 5.0;
/// Hard limit on one cost measurement (the helper runs a few million programs).
const COST_TIMEOUT: Duration = Duration::from_secs(600);

/// Arguments of `cargo xtask bench xdp`.
#[derive(clap::Args, Debug)]
pub struct BenchXdpArgs {
    /// Program runs per cost measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub repeat: u32,
    /// Cost measurements per case (median and spread are reported).
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// Vhids configured in the program for the cost measurement, comma-separated (1-254):
    /// each count is measured in full, so the growth with the number of vhids is a curve.
    #[arg(long, value_delimiter = ',', default_value = "1,16,254")]
    pub vhids: Vec<u8>,
    /// Flood rates in frames per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000,100000")]
    pub rates: Vec<u64>,
    /// Length of each flood, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Forged source addresses the flood cycles through.
    #[arg(long, default_value_t = 1)]
    pub sources: u32,
    /// Implementations, comma-separated: agent-xdp, agent-xdp-off, ucarp, keepalived.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "agent-xdp,agent-xdp-off,ucarp,keepalived"
    )]
    pub impls: Vec<String>,
    /// Directory for the markdown and JSON results.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Skip the per-packet cost measurement.
    #[arg(long)]
    pub skip_cost: bool,
    /// Skip the flood scenarios.
    #[arg(long)]
    pub skip_flood: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Imp {
    AgentXdp,
    AgentXdpOff,
    Ucarp,
    Keepalived,
}

impl Imp {
    fn parse(s: &str) -> Result<Imp> {
        Ok(match s {
            "agent-xdp" => Imp::AgentXdp,
            "agent-xdp-off" => Imp::AgentXdpOff,
            "ucarp" => Imp::Ucarp,
            "keepalived" => Imp::Keepalived,
            _ => bail!("unknown implementation {s:?} (agent-xdp|agent-xdp-off|ucarp|keepalived)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Imp::AgentXdp => "agent-xdp",
            Imp::AgentXdpOff => "agent-xdp-off",
            Imp::Ucarp => "ucarp",
            Imp::Keepalived => "keepalived",
        }
    }

    fn is_agent(self) -> bool {
        matches!(self, Imp::AgentXdp | Imp::AgentXdpOff)
    }

    /// What the flood forges for this implementation.
    fn flood_kind(self) -> &'static str {
        if self == Imp::Keepalived {
            "vrrp"
        } else {
            "forged"
        }
    }

    /// Backup's master-down time: CARP advbase 1, deadratio 3, advskew 100; VRRPv2 advert_int 1,
    /// priority 100.
    fn master_down(self) -> Duration {
        match self {
            Imp::Keepalived => keepalived(100).master_down(),
            _ => Timing {
                advskew: 100,
                ..Timing::default()
            }
            .master_down(),
        }
    }

    /// A line the backup logs each time it becomes MASTER (ucarp, keepalived).
    fn master_marker(self) -> &'static str {
        match self {
            Imp::Ucarp => "Switching to state: MASTER",
            _ => "Entering MASTER STATE",
        }
    }
}

#[derive(Debug, Serialize)]
struct CostCase {
    /// Vhids configured while the case ran.
    vhids: u8,
    name: String,
    repeat: u32,
    rounds_ns: Vec<u64>,
    counter: String,
    median_ns: u64,
    min_ns: u64,
    max_ns: u64,
}

#[derive(Debug, Serialize)]
struct FloodRow {
    implementation: Imp,
    sources: u32,
    target_rate: u64,
    sent: u64,
    achieved_rate: f64,
    seconds: f64,
    /// Times the backup became MASTER while the real master was alive.
    false_takeovers: u64,
    /// CPU of the backup node's processes, % of one core, over the flood.
    backup_cpu_pct: f64,
    /// Softirq time of the whole machine, % of one core (XDP and the stack run there).
    softirq_pct: f64,
    /// Agents: the longest the backup went without a valid advert from the master.
    longest_silence_ms: Option<u64>,
    auth_failures: Option<u64>,
    /// Agent with XDP: forged adverts the XDP program dropped (they never reach the agent).
    xdp_auth_failed: Option<u64>,
    ringbuf_full: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    kernel: String,
    cpus: usize,
    attach_mode: Option<String>,
    cost: Vec<CostCase>,
    flood: Vec<FloodRow>,
    summary: Vec<String>,
}

pub fn run(args: BenchXdpArgs) -> Result<()> {
    ensure!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "bench xdp needs root (namespaces, XDP)"
    );
    let impls = args
        .impls
        .iter()
        .map(|s| Imp::parse(s))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        args.seconds >= 1 && args.seconds <= 60,
        "--seconds must be 1-60"
    );
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(
        !args.vhids.is_empty() && args.vhids.iter().all(|v| (1..=254).contains(v)),
        "--vhids must list counts of 1-254"
    );
    let bins = build()?;

    let mut report = Report {
        date: utc_date(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        attach_mode: None,
        cost: Vec::new(),
        flood: Vec::new(),
        summary: Vec::new(),
    };
    if !args.skip_cost {
        for &vhids in &args.vhids {
            say(format_args!(
                "measuring the per-packet cost of the XDP program with {vhids} vhid(s) configured"
            ));
            let (mode, cases) = cost(&bins, &args, vhids)?;
            report.attach_mode = Some(mode);
            report.cost.extend(cases);
        }
    }
    if !args.skip_flood {
        for &imp in &impls {
            for &rate in &args.rates {
                say(format_args!(
                    "flood: {} at {rate} frames/s from {} source(s) for {} s",
                    imp.name(),
                    args.sources,
                    args.seconds
                ));
                let row = flood(&bins, imp, rate, &args).unwrap_or_else(|e| FloodRow {
                    error: Some(format!("{e:#}")),
                    ..empty_row(imp, rate, args.sources)
                });
                say(format_args!(
                    "  sent {} ({:.0}/s), false takeovers {}, backup CPU {:.1} %{}",
                    row.sent,
                    row.achieved_rate,
                    row.false_takeovers,
                    row.backup_cpu_pct,
                    row.error
                        .as_deref()
                        .map(|e| format!(", error: {e}"))
                        .unwrap_or_default()
                ));
                report.flood.push(row);
            }
        }
        report.summary = summarize(&report.flood);
    }

    let md = markdown(&report, &args);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let stem = args.out.join(format!("xdp-{}", report.date));
    std::fs::write(stem.with_extension("md"), &md)?;
    std::fs::write(
        stem.with_extension("json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{md}");
    say(format_args!(
        "results written to {}.md and .json",
        stem.display()
    ));
    Ok(())
}

/// Builds the release agent with the XDP object, and the injector and cost helper; pins
/// copies of all three.
fn build() -> Result<Pinned> {
    let built = crate::tasks::build(true)?;
    say("building the frame injector and the XDP cost helper");
    cmd::run(
        cmd::cargo()
            .args([
                "build",
                "--release",
                "--package",
                "tests",
                "--features",
                "xdp-cost",
                "--bin",
                "carp-inject",
                "--bin",
                "xdp-cost",
            ])
            .current_dir(cmd::root())
            .env(crate::tasks::EBPF_OBJ_VAR, &built.ebpf_obj),
    )?;
    let release = built
        .agent_bin
        .parent()
        .context("agent binary has no directory")?
        .to_path_buf();
    Pinned::new(
        &built.agent_bin,
        &[
            (&release.join("carp-inject"), "carp-inject"),
            (&release.join("xdp-cost"), "xdp-cost"),
        ],
    )
}

fn cost(bins: &Pinned, args: &BenchXdpArgs, vhids: u8) -> Result<(String, Vec<CostCase>)> {
    #[derive(serde::Deserialize)]
    struct Out {
        attach_mode: String,
        cases: Vec<Raw>,
    }
    #[derive(serde::Deserialize)]
    struct Raw {
        name: String,
        repeat: u32,
        rounds_ns: Vec<u64>,
        counter: String,
    }
    let rig = Rig::new(RigConfig::nodes(1))?;
    let repeat = args.repeat.to_string();
    let rounds = args.rounds.to_string();
    let count = vhids.to_string();
    let mut c = tests::cmd::netns_command(
        rig.ns(0),
        bins.path("xdp-cost"),
        &["--repeat", &repeat, "--rounds", &rounds, "--vhids", &count],
    );
    let out = tests::cmd::output_timeout(&mut c, COST_TIMEOUT)?
        .context("the XDP cost helper overran its time limit")?;
    ensure!(
        out.status.success(),
        "the XDP cost helper failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Out =
        serde_json::from_slice(&out.stdout).context("parsing the XDP cost helper's output")?;
    let cases = parsed
        .cases
        .into_iter()
        .map(|r| {
            let mut sorted = r.rounds_ns.clone();
            sorted.sort_unstable();
            CostCase {
                vhids,
                median_ns: sorted[sorted.len() / 2],
                min_ns: sorted[0],
                max_ns: sorted[sorted.len() - 1],
                name: r.name,
                repeat: r.repeat,
                rounds_ns: r.rounds_ns,
                counter: r.counter,
            }
        })
        .collect();
    Ok((parsed.attach_mode, cases))
}

fn empty_row(imp: Imp, rate: u64, sources: u32) -> FloodRow {
    FloodRow {
        implementation: imp,
        sources,
        target_rate: rate,
        sent: 0,
        achieved_rate: 0.0,
        seconds: 0.0,
        false_takeovers: 0,
        backup_cpu_pct: 0.0,
        softirq_pct: 0.0,
        longest_silence_ms: None,
        auth_failures: None,
        xdp_auth_failed: None,
        ringbuf_full: None,
        error: None,
    }
}

/// The master (node0) and backup (node1) daemons of one scenario.
struct Pair {
    master: Proc,
    backup: Proc,
}

fn start_pair(rig: &Rig, imp: Imp) -> Result<Pair> {
    // Polled every 50 ms: a quicker poll would only add load to the machine being measured.
    let master_up = || {
        Poller::every(Duration::from_millis(50)).wait_until(
            Duration::from_secs(10),
            "node0 holds the VIP",
            || rig.node_has_addr(0, VIP),
        )
    };
    let pair = match imp {
        Imp::AgentXdp | Imp::AgentXdpOff => {
            let mode = if imp == Imp::AgentXdp { "auto" } else { "off" };
            let base = AgentOpts::new(VHID, PASS, VIP24).xdp(mode);
            let master = rig.spawn_agent(0, &base.clone().preempt(true))?.proc;
            master_up()?;
            let backup = rig.spawn_agent(1, &base.advskew(100))?.proc;
            Pair { master, backup }
        }
        Imp::Ucarp => {
            let o = UcarpOpts::new(VHID, PASS, VIP);
            let master = rig.spawn_ucarp(0, &o.clone().preempt(true))?;
            master_up()?;
            let backup = rig.spawn_ucarp(1, &o.advskew(100))?;
            Pair { master, backup }
        }
        Imp::Keepalived => {
            let master = rig.spawn_keepalived(0, &keepalived(200))?;
            master_up()?;
            let backup = rig.spawn_keepalived(1, &keepalived(100))?;
            Pair { master, backup }
        }
    };
    Ok(pair)
}

/// keepalived, VRRPv2, advert_int 1, simple-password authentication (so that forged adverts
/// have something to fail, as forged CARP adverts fail the HMAC).
fn keepalived(priority: u8) -> KeepalivedOpts {
    KeepalivedOpts::new(VHID, VIP, priority).auth(PASS)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of `pid` in clock ticks (0 once it is gone).
fn pid_ticks(pid: libc::pid_t) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command name: state is field 0, utime 11, stime 12.
    field(11) + field(12)
}

/// Softirq ticks of the whole machine (`/proc/stat`, first line, seventh value).
fn softirq_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()?
                .split_whitespace()
                .nth(7)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
}

/// The backup agent's status with its `auth_failed` and `ringbuf_full` XDP counters.
fn agent_numbers(rig: &Rig) -> Option<(tests::Status, u64, u64)> {
    let s = tests::agent::query_status(&rig.agent_socket(1)).ok()?;
    let rl = s.xdp_counters.get("auth_failed").copied().unwrap_or(0);
    let rf = s.xdp_counters.get("ringbuf_full").copied().unwrap_or(0);
    Some((s, rl, rf))
}

fn count_markers(p: &Proc, marker: &str) -> u64 {
    p.log().matches(marker).count() as u64
}

fn flood(bins: &Pinned, imp: Imp, rate: u64, args: &BenchXdpArgs) -> Result<FloodRow> {
    let rig = Rig::new(RigConfig::nodes(3))?;
    let mut pair = start_pair(&rig, imp)?;
    // Steady state: the backup has been up for a full master-down time and the VIP is still
    // only on node0.
    Poller::every(Duration::from_millis(100)).hold_for(
        imp.master_down() + Duration::from_secs(1),
        "the VIP is on node0 only before the flood",
        || Ok(rig.holders(VIP, &[0, 1])? == [0]),
    )?;
    let base = if imp.is_agent() {
        let numbers = agent_numbers(&rig).context("the backup agent does not answer")?;
        let s = &numbers.0;
        ensure!(
            s.is_backup() && s.master.as_deref() == Some(rig.addr(0).to_string().as_str()),
            "the backup agent is not following node0 before the flood: {s:?}"
        );
        Some(numbers)
    } else {
        None
    };
    let markers0 = if imp.is_agent() {
        0
    } else {
        count_markers(&pair.backup, imp.master_marker())
    };
    let pids = rig.pids(1)?;
    let cpu0: u64 = pids.iter().map(|&p| pid_ticks(p)).sum();
    let soft0 = softirq_ticks();
    let t0 = Instant::now();

    let vhid = VHID.to_string();
    let (rate_s, ms_s, sources) = (
        rate.to_string(),
        (args.seconds * 1000).to_string(),
        args.sources.to_string(),
    );
    let inject = bins.path("carp-inject").to_string_lossy().into_owned();
    let mut injector = rig.spawn(
        2,
        "inject",
        &[
            &inject,
            "--kind",
            imp.flood_kind(),
            "--vhid",
            &vhid,
            "--vip",
            "10.99.0.100",
            "--rate",
            &rate_s,
            "--duration-ms",
            &ms_s,
            "--src",
            FORGED_SRC,
            "--sources",
            &sources,
        ],
    )?;
    let limit = Duration::from_secs(args.seconds + 10);
    let mut vip_seen_on_backup = false;
    let mut longest_silence: Option<u64> = None;
    for _ in 0..limit.as_millis() / 100 + 2 {
        if !injector.is_running() || t0.elapsed() > limit {
            break;
        }
        vip_seen_on_backup |= rig.node_has_addr(1, VIP)?;
        if imp.is_agent()
            && let Some((s, _, _)) = agent_numbers(&rig)
        {
            let silent = s.since_last_advert_ms.unwrap_or(u64::MAX);
            longest_silence = Some(longest_silence.map_or(silent, |w| w.max(silent)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = injector.wait_exit(Duration::from_secs(5))?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1: u64 = pids.iter().map(|&p| pid_ticks(p)).sum();
    let soft1 = softirq_ticks();
    ensure!(st.success(), "the injector failed: {}", injector.log());
    let report: serde_json::Value = injector
        .log()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("no report from the injector")?;
    ensure!(
        pair.master.is_running(),
        "the master daemon died: {}",
        pair.master.log()
    );
    ensure!(
        pair.backup.is_running(),
        "the backup daemon died during the flood"
    );

    let mut row = empty_row(imp, rate, args.sources);
    row.sent = report["sent"].as_u64().unwrap_or(0);
    row.achieved_rate = report["rate"].as_f64().unwrap_or(0.0);
    row.seconds = wall;
    row.backup_cpu_pct = cpu1.saturating_sub(cpu0) as f64 / ticks_per_second() / wall * 100.0;
    row.softirq_pct = soft1.saturating_sub(soft0) as f64 / ticks_per_second() / wall * 100.0;
    let takeovers = if let Some((b, rl0, rf0)) = base {
        let (s, rl, rf) = agent_numbers(&rig).context("the backup agent stopped answering")?;
        row.longest_silence_ms = longest_silence;
        row.auth_failures = Some(s.counters.auth_failures - b.counters.auth_failures);
        if imp == Imp::AgentXdp {
            row.xdp_auth_failed = Some(rl - rl0);
            row.ringbuf_full = Some(rf - rf0);
        }
        // Transitions come in pairs when the backup takes over and is pushed back.
        (s.counters.transitions - b.counters.transitions).div_ceil(2)
    } else {
        count_markers(&pair.backup, imp.master_marker()) - markers0
    };
    row.false_takeovers = takeovers.max(u64::from(vip_seen_on_backup));
    Ok(row)
}

fn summarize(rows: &[FloodRow]) -> Vec<String> {
    let mut out = Vec::new();
    let misbehaves = |r: &FloodRow| r.error.is_none() && r.false_takeovers > 0;
    for imp in [Imp::Ucarp, Imp::Keepalived, Imp::AgentXdpOff, Imp::AgentXdp] {
        let mine: Vec<&FloodRow> = rows.iter().filter(|r| r.implementation == imp).collect();
        if mine.is_empty() {
            continue;
        }
        match mine
            .iter()
            .filter(|r| misbehaves(r))
            .map(|r| r.target_rate)
            .min()
        {
            Some(rate) => out.push(format!(
                "{}: first false takeover at {rate} frames/s",
                imp.name()
            )),
            None => out.push(format!(
                "{}: no false takeover at any rate measured",
                imp.name()
            )),
        }
    }
    let first_bad_other = rows
        .iter()
        .filter(|r| matches!(r.implementation, Imp::Ucarp | Imp::Keepalived) && misbehaves(r))
        .map(|r| r.target_rate)
        .min();
    let agent: Vec<&FloodRow> = rows
        .iter()
        .filter(|r| r.implementation == Imp::AgentXdp && r.error.is_none())
        .collect();
    if let Some(rate) = first_bad_other {
        let at: Vec<&&FloodRow> = agent.iter().filter(|r| r.target_rate >= rate).collect();
        let met = !at.is_empty()
            && at
                .iter()
                .all(|r| r.false_takeovers == 0 && r.backup_cpu_pct < CPU_GOAL_PCT);
        out.push(format!(
            "goal (agent with XDP: no false takeover and < {CPU_GOAL_PCT} % of a core from {rate} frames/s up, where ucarp or keepalived already take over falsely): {}",
            if met { "met" } else { "NOT met" }
        ));
    } else if !agent.is_empty() {
        let met = agent
            .iter()
            .all(|r| r.false_takeovers == 0 && r.backup_cpu_pct < CPU_GOAL_PCT);
        out.push(format!(
            "neither ucarp nor keepalived took over falsely at the rates measured; agent with XDP: no false takeover and < {CPU_GOAL_PCT} % of a core at every rate: {}",
            if met { "yes" } else { "no" }
        ));
    }
    out
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), |v| v.to_string())
}

/// Median ns of each case by number of vhids, and the largest over the smallest count.
fn growth(cost: &[CostCase], counts: &[u8]) -> String {
    if counts.len() < 2 {
        return String::new();
    }
    let mut s = String::from("\n### Growth with the number of vhids (median ns)\n\n| case |");
    for c in counts {
        s.push_str(&format!(" {c} |"));
    }
    s.push_str(" last / first |\n|---|");
    s.push_str(&"---:|".repeat(counts.len() + 1));
    s.push('\n');
    let mut names: Vec<&str> = Vec::new();
    for c in cost {
        if !names.contains(&c.name.as_str()) {
            names.push(&c.name);
        }
    }
    for name in names {
        let medians: Vec<Option<u64>> = counts
            .iter()
            .map(|&v| {
                cost.iter()
                    .find(|c| c.name == name && c.vhids == v)
                    .map(|c| c.median_ns)
            })
            .collect();
        s.push_str(&format!("| {name} |"));
        for m in &medians {
            s.push_str(&format!(" {} |", opt(m)));
        }
        let ratio = match (medians.first(), medians.last()) {
            (Some(Some(a)), Some(Some(b))) if *a > 0 => format!("{:.2}x", *b as f64 / *a as f64),
            _ => "-".into(),
        };
        s.push_str(&format!(" {ratio} |\n"));
    }
    s
}

fn markdown(r: &Report, args: &BenchXdpArgs) -> String {
    let mut s = format!(
        "# XDP data plane under hostile adverts ({})\n\nKernel {}, {} CPUs.\n",
        r.date, r.kernel, r.cpus
    );
    if !r.cost.is_empty() {
        s.push_str(&format!(
            "\n## Per-packet cost of the XDP program\n\nBPF_PROG_TEST_RUN on the real program and \
             maps (attached in {} mode; the test run does not depend on the mode), {} rounds per \
             case, with the given number of vhids configured (each with a VIP of its own; the \
             frames concern one of them). `counter` is the reason counter that moved, i.e. the \
             path measured.\n\n\
             | vhids | case | runs per measurement | median ns | min ns | max ns | counter |\n\
             |---:|---|---:|---:|---:|---:|---|\n",
            opt(&r.attach_mode),
            args.rounds
        ));
        for c in &r.cost {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                c.vhids, c.name, c.repeat, c.median_ns, c.min_ns, c.max_ns, c.counter
            ));
        }
        s.push_str(&growth(&r.cost, &args.vhids));
    }
    if !r.flood.is_empty() {
        s.push_str(&format!(
            "\n## Flood of forged adverts\n\nA master (node0) and a backup (node1) on a bridge; \
             node2 sends forged adverts for the vhid (CARP, wrong HMAC) or vrid (keepalived: \
             VRRPv2 with a wrong simple password) from {} source(s), {} s per run. CARP advbase 1, \
             backup advskew 100, deadratio 3; keepalived advert_int 1, priorities 200/100. \
             `backup CPU` is user+system time of every process in the backup's namespace, % of one \
             core; `softirq` is the whole machine's softirq time (where XDP and the network stack \
             run, shared by all nodes and the injector), % of one core.\n\n\
             | implementation | target/s | achieved/s | false takeovers | backup CPU % | softirq % | longest silence ms | auth failures | XDP auth failed | ringbuf full | error |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
            args.sources, args.seconds
        ));
        for f in &r.flood {
            s.push_str(&format!(
                "| {} | {} | {:.0} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} |\n",
                f.implementation.name(),
                f.target_rate,
                f.achieved_rate,
                f.false_takeovers,
                f.backup_cpu_pct,
                f.softirq_pct,
                opt(&f.longest_silence_ms),
                opt(&f.auth_failures),
                opt(&f.xdp_auth_failed),
                opt(&f.ringbuf_full),
                f.error.as_deref().unwrap_or("")
            ));
        }
        s.push_str("\n## Summary\n\n");
        for line in &r.summary {
            s.push_str(&format!("- {line}\n"));
        }
    }
    s
}

/// Today's date (UTC) as YYYY-MM-DD.
fn utc_date() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests_ {
    #[test]
    fn date_is_iso() {
        let d = super::utc_date();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
