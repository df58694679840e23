//! `cargo xtask bench db`: how soon the application can write again after the database
//! follows the VIP to another node, and whether any write it saw acknowledged is lost.
//!
//! Each run builds a fresh two-node cluster (agents in fast mode, a MariaDB per node with TLS,
//! semi-sync on), starts an application in the client namespace that commits numbered rows
//! through the VIP one after the other, then fails the master one of three ways:
//!
//! - `power`: the master node loses power (every process frozen, its switch port down);
//! - `database`: only the master's `mariadbd` dies (its agent hands over);
//! - `switchover`: the operator asks the master's agent to hand over.
//!
//! Measured: from the new master's MASTER transition (its log line) to the first write that its
//! server acknowledged through the VIP, and the steps in between (promotion, and inside it the
//! stop of the receiving thread and the relay-log wait, from the agent's debug lines; the VIP
//! answering TCP). After the run every acknowledged row must be on the new master.
//!
//! The application reaches the VIP through a relay in the client namespace that retries its
//! TCP connection every few milliseconds, as a connection pool with a short connect timeout
//! would: the kernel's one-second SYN retransmission would otherwise hide everything the agent
//! does in a coarse step. Each write is one `mariadb` client call with a time limit; a call that
//! overruns it counts as not acknowledged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::tests::cluster::{Cluster, ClusterConfig};
use ::tests::mariadb::VipClient;
use ::tests::relay::{RETRY_EVERY, wall_ns};
use ::tests::wait::{check_interrupt, install_signal_handlers};
use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::Serialize;

use crate::cmd::say;
use crate::report::{Stats, Table, ms, utc_stamp};
use crate::scenario::{POLL, Pinned};

#[derive(clap::Args, Debug)]
pub struct BenchDbArgs {
    /// Failovers measured per failure kind (each on a fresh cluster); at least 10.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Failure kinds, comma-separated: power, database, switchover.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "power,database,switchover"
    )]
    pub failures: Vec<String>,
    /// Directory for the markdown and JSON results (relative to the current directory).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

/// Advert skews in fast mode: node0 (the first master) and node1 (its replica).
const SKEW: [u8; 2] = [40, 80];
/// The goal: median from the MASTER transition to the first write, with a caught-up replica.
const GOAL_MS: f64 = 50.0;
/// Rows acknowledged before the failure, and on the new master before a run ends.
const ROWS_BEFORE: usize = 20;
const ROWS_AFTER: usize = 10;
/// Longest one write may take before the application gives up on it.
const WRITE_LIMIT: Duration = Duration::from_millis(1500);
/// Longest a run may take from the failure to the last write it waits for.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
const START_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Failure {
    Power,
    Database,
    Switchover,
}

impl Failure {
    fn parse(s: &str) -> Result<Failure> {
        Ok(match s.trim() {
            "power" => Failure::Power,
            "database" => Failure::Database,
            "switchover" => Failure::Switchover,
            other => bail!("unknown failure kind {other:?} (power, database, switchover)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Failure::Power => "power",
            Failure::Database => "database",
            Failure::Switchover => "switchover",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Failure::Power => "power failure of the master node",
            Failure::Database => "the master's mariadbd killed, its agent alive",
            Failure::Switchover => "switchover requested on the master's agent",
        }
    }
}

/// One measured failover; times in milliseconds.
#[derive(Clone, Debug, Serialize)]
struct RunResult {
    run: usize,
    /// From the failure to the new master's MASTER transition.
    detection_ms: f64,
    /// From the MASTER transition to the first write acknowledged by the new master.
    transition_to_write_ms: f64,
    /// From the MASTER transition to the agent's "database promoted" line.
    transition_to_promoted_ms: Option<f64>,
    /// Inside the promotion, from the new master's takeover record: the prepare step (the
    /// peers asked, the old master accounted for), then the opening (every statement).
    prepare_ms: Option<f64>,
    opening_ms: Option<f64>,
    /// That record's every step after the transition.
    steps: Option<String>,
    /// From the promotion to the VIP answering TCP (the relay's first connection after it).
    promoted_to_tcp_ms: Option<f64>,
    /// From the VIP answering TCP to the first acknowledged write.
    tcp_to_write_ms: Option<f64>,
    /// From the failure to the first write acknowledged by the new master.
    outage_ms: f64,
    /// How much longer than the usual write (the median before the failure) the slowest
    /// write under way between the failure and the new master's first one took: the pause
    /// a request of the application saw. The outage above also counts the writes the old
    /// master still acknowledged after the request (a switchover drains them).
    pause_ms: Option<f64>,
    /// A switchover on the old master: from the request to the end of the drain, and from
    /// there to its bow-out (its database fenced, the VIP released).
    drain_ms: Option<f64>,
    hand_over_ms: Option<f64>,
    acknowledged: usize,
    failed_writes: usize,
    lost_acknowledged: Vec<i64>,
    /// Why the new master first refused to open, when it did (it retries a second later).
    refused: Option<String>,
}

#[derive(Debug, Serialize)]
struct KindResult {
    failure: Failure,
    runs: Vec<RunResult>,
    errors: Vec<String>,
    transition_to_write: Option<Stats>,
    transition_to_promoted: Option<Stats>,
    prepare: Option<Stats>,
    opening: Option<Stats>,
    promoted_to_tcp: Option<Stats>,
    tcp_to_write: Option<Stats>,
    detection: Option<Stats>,
    outage: Option<Stats>,
    pause: Option<Stats>,
    lost_acknowledged: usize,
}

pub fn run(args: BenchDbArgs) -> Result<()> {
    ensure!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "bench db needs root (network namespaces)"
    );
    ensure!(
        (10..=1000).contains(&args.runs),
        "--runs must be between 10 and 1000"
    );
    let kinds = args
        .failures
        .iter()
        .map(|s| Failure::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let built = crate::tasks::build(true)?;
    let _pinned = Pinned::new(&built.agent_bin, &[])?;
    install_signal_handlers();

    let mut results: Vec<KindResult> = kinds
        .iter()
        .map(|&failure| KindResult {
            failure,
            runs: Vec::new(),
            errors: Vec::new(),
            transition_to_write: None,
            transition_to_promoted: None,
            prepare: None,
            opening: None,
            promoted_to_tcp: None,
            tcp_to_write: None,
            detection: None,
            outage: None,
            pause: None,
            lost_acknowledged: 0,
        })
        .collect();
    // Round-robin over the kinds, so slow drifts of the machine hit all alike.
    for run in 1..=args.runs {
        for res in results.iter_mut() {
            check_interrupt()?;
            let kind = res.failure;
            say(format_args!(
                "db failover run {run}/{} ({})",
                args.runs,
                kind.describe()
            ));
            match one_run(kind, run) {
                Ok(r) => {
                    say(format_args!(
                        "  transition -> first write {} ms (promoted {} ms, prepared {} ms, TCP {} ms); outage {} ms, longest pause {} ms; {} acknowledged, {} lost",
                        ms(Some(r.transition_to_write_ms)),
                        ms(r.transition_to_promoted_ms),
                        ms(r.prepare_ms),
                        ms(r.promoted_to_tcp_ms),
                        ms(Some(r.outage_ms)),
                        ms(r.pause_ms),
                        r.acknowledged,
                        r.lost_acknowledged.len()
                    ));
                    if let Some(why) = &r.refused {
                        say(format_args!(
                            "  the new master first refused to open: {why}"
                        ));
                    }
                    res.runs.push(r);
                }
                Err(e) => {
                    check_interrupt()?;
                    say(format_args!("  run {run} failed: {e:#}"));
                    res.errors.push(format!("run {run}: {e:#}"));
                }
            }
        }
    }
    for res in &mut results {
        let col = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<f64> {
            res.runs.iter().filter_map(f).collect()
        };
        res.transition_to_write = Stats::of(&col(&|r| Some(r.transition_to_write_ms)));
        res.transition_to_promoted = Stats::of(&col(&|r| r.transition_to_promoted_ms));
        res.prepare = Stats::of(&col(&|r| r.prepare_ms));
        res.opening = Stats::of(&col(&|r| r.opening_ms));
        res.promoted_to_tcp = Stats::of(&col(&|r| r.promoted_to_tcp_ms));
        res.tcp_to_write = Stats::of(&col(&|r| r.tcp_to_write_ms));
        res.detection = Stats::of(&col(&|r| Some(r.detection_ms)));
        res.outage = Stats::of(&col(&|r| Some(r.outage_ms)));
        res.pause = Stats::of(&col(&|r| r.pause_ms));
        res.lost_acknowledged = res.runs.iter().map(|r| r.lost_acknowledged.len()).sum();
    }

    let stamp = utc_stamp();
    let markdown = render(&results, &stamp, args.runs);
    println!("{markdown}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let md_path = args.out.join(format!("db-{stamp}.md"));
    let json_path = args.out.join(format!("db-{stamp}.json"));
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("writing {}", md_path.display()))?;
    let json = serde_json::json!({
        "date": stamp,
        "advbase": 0,
        "advskew": SKEW,
        "deadratio": 3,
        "goal_ms": GOAL_MS,
        "runs_per_failure": args.runs,
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "results": results,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    say(format_args!(
        "results written to {} and {}",
        md_path.display(),
        json_path.display()
    ));
    let lost: usize = results.iter().map(|r| r.lost_acknowledged).sum();
    ensure!(lost == 0, "{lost} acknowledged write(s) lost");
    Ok(())
}

fn ms_between(from: i64, to: i64) -> f64 {
    (to - from) as f64 / 1e6
}

/// How much longer than the median acknowledged write before `t_fail` the slowest write
/// under way between `t_fail` and `until` took (acknowledged or not).
fn longest_pause(writes: &[Write], t_fail: i64, until: i64) -> Option<f64> {
    let before: Vec<f64> = writes
        .iter()
        .filter(|w| w.server.is_some() && w.end_ns < t_fail)
        .map(|w| ms_between(w.start_ns, w.end_ns))
        .collect();
    let usual = Stats::of(&before)?.median;
    writes
        .iter()
        .filter(|w| w.end_ns >= t_fail && w.start_ns < until)
        .map(|w| ms_between(w.start_ns, w.end_ns) - usual)
        .reduce(f64::max)
}

/// One write of the application.
#[derive(Clone, Debug)]
struct Write {
    id: i64,
    start_ns: i64,
    end_ns: i64,
    /// `server_id` of the server that acknowledged it; `None`: not acknowledged.
    server: Option<u32>,
}

fn one_run(kind: Failure, run: usize) -> Result<RunResult> {
    let mut c = Cluster::start(ClusterConfig::new(2))?;
    // node0 master, node1 its semi-sync replica.
    c.bring_up(&[SKEW[0].into(), SKEW[1].into()], START_LIMIT)?;

    let (app, relay) = c.vip_relayed(WRITE_LIMIT)?;
    let writer = Writer::start(app);
    let new_server = 2; // node1's server_id, as bootstrap numbers them
    POLL.wait_until(FAILOVER_LIMIT, "writes acknowledged by node0", || {
        writer.acknowledged_by(1) >= ROWS_BEFORE
    })?;

    let t_fail = wall_ns();
    match kind {
        Failure::Power => {
            c.power_cut(0)?;
        }
        Failure::Database => c.server_mut(0).kill(),
        Failure::Switchover => c
            .agent(0)?
            .switchover(Duration::from_secs(5))?
            .map_err(|why| anyhow!(why))?,
    }
    POLL.wait_until(FAILOVER_LIMIT, "writes acknowledged by node1", || {
        writer.acknowledged_by(new_server) >= ROWS_AFTER
    })?;
    let writes = writer.stop();
    let tcp_connects = relay.stop();

    let log = c.agent_log(1)?;
    let transition = first_log_time(&log, t_fail, |l| {
        l.contains("state change") && l.contains("state=MASTER")
    })
    .ok_or_else(|| anyhow!("node1's agent logged no MASTER transition after the failure"))?;
    let promoted = first_log_time(&log, transition, |l| l.contains("database promoted"));
    // The new master's own record, on its clock (not the log's wall clock).
    let takeover = c.status(1)?.last_takeover;
    let prepared = takeover.as_ref().and_then(|t| t.after_ms("prepared"));
    let open = takeover.as_ref().and_then(|t| t.after_ms("open"));
    let first = writes
        .iter()
        .find(|w| w.server == Some(new_server) && w.end_ns >= t_fail)
        .ok_or_else(|| anyhow!("no write acknowledged by node1"))?;
    let tcp = promoted.and_then(|p| tcp_connects.iter().copied().find(|t| *t >= p));
    let pause = longest_pause(&writes, t_fail, first.end_ns);
    // The old master's side of a switchover, from its own log.
    let (drain_ms, hand_over_ms) = if kind == Failure::Switchover {
        let old = c.agent_log(0)?;
        let drained = first_log_time(&old, t_fail, |l| {
            l.contains("no connection left on the VIP") || l.contains("are cut")
        });
        let bowed_out = first_log_time(&old, t_fail, |l| {
            l.contains("state change") && l.contains("reason=Switchover")
        });
        (
            drained.map(|d| ms_between(t_fail, d)),
            drained.zip(bowed_out).map(|(d, b)| ms_between(d, b)),
        )
    } else {
        (None, None)
    };
    let refused = log_text(&log, transition, "not opening the database", "reason=");

    let on_new: std::collections::BTreeSet<i64> = c.ids(1)?.into_iter().collect();
    let lost: Vec<i64> = writes
        .iter()
        .filter(|w| w.server.is_some() && !on_new.contains(&w.id))
        .map(|w| w.id)
        .collect();
    if !lost.is_empty() {
        say(format_args!(
            "  run {run}: {} acknowledged write(s) missing on the new master, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    Ok(RunResult {
        run,
        detection_ms: ms_between(t_fail, transition),
        transition_to_write_ms: ms_between(transition, first.end_ns),
        transition_to_promoted_ms: promoted.map(|p| ms_between(transition, p)),
        prepare_ms: prepared,
        opening_ms: prepared.zip(open).map(|(p, o)| o - p),
        steps: takeover.map(|t| t.steps_line()),
        promoted_to_tcp_ms: promoted.zip(tcp).map(|(p, t)| ms_between(p, t)),
        tcp_to_write_ms: tcp.map(|t| ms_between(t, first.end_ns)),
        outage_ms: ms_between(t_fail, first.end_ns),
        pause_ms: pause,
        drain_ms,
        hand_over_ms,
        acknowledged: writes.iter().filter(|w| w.server.is_some()).count(),
        failed_writes: writes.iter().filter(|w| w.server.is_none()).count(),
        lost_acknowledged: lost,
        refused,
    })
}

/// The application: numbered rows, one at a time, each through a fresh `mariadb` call.
struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Write>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(app: VipClient) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let next = AtomicI64::new(1);
        let thread = {
            let (stop, writes) = (stop.clone(), writes.clone());
            std::thread::spawn(move || {
                // Bounded: a run ends long before this many rows.
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    let start_ns = wall_ns();
                    let server = app.insert_where(id, WRITE_LIMIT).ok();
                    writes.lock().unwrap().push(Write {
                        id,
                        start_ns,
                        end_ns: wall_ns(),
                        server,
                    });
                }
            })
        };
        Writer {
            stop,
            writes,
            thread: Some(thread),
        }
    }

    fn acknowledged_by(&self, server: u32) -> usize {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.server == Some(server))
            .count()
    }

    fn stop(mut self) -> Vec<Write> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wall-clock nanoseconds of the first log line at or after `since` that matches.
fn first_log_time(log: &str, since: i64, pick: impl Fn(&str) -> bool) -> Option<i64> {
    log.lines()
        .filter(|l| pick(l))
        .filter_map(|l| parse_log_time(l.split_whitespace().next()?))
        .find(|t| *t >= since)
}

/// The log lines at or after `since` that contain `what`.
fn lines_since<'a>(log: &'a str, since: i64, what: &'a str) -> impl Iterator<Item = &'a str> {
    log.lines().filter(move |l| {
        l.contains(what)
            && l.split_whitespace()
                .next()
                .and_then(parse_log_time)
                .is_some_and(|t| t >= since)
    })
}

/// The rest of the first line at or after `since` that contains `what`, from `marker` on.
fn log_text(log: &str, since: i64, what: &str, marker: &str) -> Option<String> {
    lines_since(log, since, what)
        .find_map(|l| l.find(marker).map(|i| l[i + marker.len()..].to_string()))
}

/// `2026-11-25T14:39:26.847618Z` (the agent's log timestamps) as nanoseconds since the epoch.
fn parse_log_time(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().take(9).collect();
    let nanos = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
    let days = days_from_civil(y, m, day);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000_000) + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (March-based years, 400-year eras).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn render(results: &[KindResult], stamp: &str, runs: usize) -> String {
    let mut md = format!(
        "# Database failover: from the MASTER transition to the first write\n\n\
         Date: {stamp}. {runs} runs per failure kind, each on a fresh two-node cluster \
         (agents in fast mode: advbase 0, advskew {} and {}, deadratio 3; MariaDB with TLS and \
         semi-sync, the replica caught up). The application commits numbered rows through the \
         VIP, one `mariadb` call per row; a relay in the client namespace retries its TCP \
         connection every {} ms. Times in milliseconds. Goal: median from the transition to \
         the first write at most {GOAL_MS} ms.\n\n",
        SKEW[0],
        SKEW[1],
        RETRY_EVERY.as_millis()
    );
    let mut t = Table::new(&[
        "failure",
        "runs",
        "transition → write median",
        "p90",
        "min",
        "max",
        "goal",
        "lost acknowledged writes",
    ]);
    for r in results {
        let s = r.transition_to_write;
        t.row(vec![
            r.failure.describe().to_string(),
            format!("{}", r.runs.len()),
            ms(s.map(|s| s.median)),
            ms(s.map(|s| s.p90)),
            ms(s.map(|s| s.min)),
            ms(s.map(|s| s.max)),
            match s {
                Some(s) if s.median <= GOAL_MS => "met".to_string(),
                Some(_) => "missed".to_string(),
                None => "–".to_string(),
            },
            format!("{}", r.lost_acknowledged),
        ]);
    }
    md.push_str(&t.render());
    md.push_str(
        "\n## Where the time goes (medians; p90 in parentheses)\n\n\
         Detection: from the failure to the new master's MASTER transition. Promotion: from the \
         transition to the agent's `database promoted` line; inside it, from the new master's \
         takeover record, the prepare step (every node asked, the old master accounted for) \
         and the opening (replication drained and stopped, the opening lock, the peers \
         rechecked, semi-sync master on, `read_only` off). Then the VIP answering TCP (the VIP \
         is added after the promotion), and the write itself (TLS handshake, authentication, \
         commit). The outage runs from the failure to the new master's first write; the longest \
         pause is how much longer than the usual write (the median before the failure) the \
         slowest write under way meanwhile took, which is what one request of the application \
         saw (in a switchover the writes the old master finishes while it drains are served, \
         not paused). Each run's record follows the table, with the old master's drain and \
         hand-over in a switchover.\n\n",
    );
    let mut t = Table::new(&[
        "failure",
        "detection",
        "promotion",
        "prepare step",
        "opening",
        "promoted → VIP answers TCP",
        "TCP → write acknowledged",
        "outage seen by the application",
        "longest pause of a write",
    ]);
    let cell = |s: Option<Stats>| {
        s.map_or("–".to_string(), |s| {
            format!("{} ({})", ms(Some(s.median)), ms(Some(s.p90)))
        })
    };
    for r in results {
        t.row(vec![
            r.failure.name().to_string(),
            cell(r.detection),
            cell(r.transition_to_promoted),
            cell(r.prepare),
            cell(r.opening),
            cell(r.promoted_to_tcp),
            cell(r.tcp_to_write),
            cell(r.outage),
            cell(r.pause),
        ]);
    }
    md.push_str(&t.render());
    md.push_str("\n## Every run: the new master's takeover record (ms after its transition)\n\n");
    for r in results {
        for run in &r.runs {
            let old_side = match (run.drain_ms, run.hand_over_ms) {
                (Some(d), Some(h)) => format!(
                    "drained {d:.1} ms after the request, then fenced and bowed out in {h:.1} ms; "
                ),
                _ => String::new(),
            };
            md.push_str(&format!(
                "- {} run {}: {old_side}{}, first write +{:.1} ms, longest pause of a write {} ms\n",
                r.failure.name(),
                run.run,
                run.steps.as_deref().unwrap_or("no record"),
                run.transition_to_write_ms,
                ms(run.pause_ms)
            ));
        }
    }
    let errors: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(|e| format!("- {}: {e}", r.failure.name()))
        })
        .collect();
    if !errors.is_empty() {
        md.push_str("\n## Failed runs\n\n");
        md.push_str(&errors.join("\n"));
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pause is the slowest write around the failure over the usual one; writes that
    /// began after the new master's first one, or ended before the failure, do not count.
    #[test]
    fn longest_pause_is_over_the_usual_write() {
        let w = |start_ms: i64, end_ms: i64, server: Option<u32>| Write {
            id: 0,
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
            server,
        };
        let writes = [
            w(0, 10, Some(1)),
            w(10, 22, Some(1)),
            w(22, 36, Some(1)),
            w(36, 100, Some(1)),
            w(100, 130, None),
            w(130, 142, Some(2)),
            w(142, 500, Some(2)),
        ];
        let pause = longest_pause(&writes, 40 * 1_000_000, 142 * 1_000_000).unwrap();
        assert!((pause - (64.0 - 12.0)).abs() < 1e-9, "{pause}");
        assert_eq!(longest_pause(&writes[4..], 0, 1), None, "no usual write");
    }

    #[test]
    fn log_timestamps() {
        assert_eq!(
            parse_log_time("1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        assert_eq!(
            parse_log_time("2024-02-29T00:00:00.000001Z"),
            Some(19_782 * 86_400 * 1_000_000_000 + 1_000)
        );
        assert_eq!(parse_log_time("not a time"), None);
    }

    #[test]
    fn log_texts() {
        let log = "2026-01-01T00:00:01.000000Z WARN x: not opening the database reason=lagging\n";
        let since = parse_log_time("2026-01-01T00:00:00.000000Z").unwrap();
        assert_eq!(
            log_text(log, since, "not opening", "reason="),
            Some("lagging".to_string())
        );
        assert_eq!(
            log_text(log, since + 2_000_000_000, "not opening", "reason="),
            None
        );
    }
}
