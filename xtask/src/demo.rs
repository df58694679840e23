//! `cargo xtask demo`: the web cluster of the story, on one machine, to watch failover happen.
//!
//! N nodes in network namespaces, each with a MariaDB (TLS replication, set up by the
//! product's own `db bootstrap`), a `cluster-agent` managing the VIP and the database, and the
//! guestbook web service on its local database. A client sends a read every 2 ms and every
//! fourth request is a write, recording every result and the id each acknowledged write got.
//! Once a second a progress line shows who is master, where the VIP is and how the client
//! fares. The master is power-failed, the VIP and the database move, the failed node comes
//! back and rejoins as a replica. Then (agents) the web service on the master is killed while
//! its node stays up: the agent's `[[track]]` check fails and it bows out, so the VIP and the
//! database move to a node whose service answers. Every acknowledged write is looked up on the
//! surviving master. A report closes the run, also as JSON (`--json`), with a timeline
//! picture (SVG). Exit status 1 unless exactly one node holds the VIP at the end, no
//! acknowledged write was lost, the old master rejoined and (agents) the VIP left the node
//! whose service died.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use tests::cluster::{Implementation, Rank, VIP};
use tests::wait::{check_interrupt, install_signal_handlers, interrupted, mono_ns, ms_between};

use crate::cmd::say;
use crate::report::ms;
use crate::scenario::{Failover, POLL, Pinned, Scenario, Timing, WatchPort, WriteCheck, node_name};
use crate::timeline::{Marker, Point};

/// Arguments of `cargo xtask demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub nodes: u8,
    /// Advert interval in seconds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub advbase: u8,
    /// Master-down time in adverts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub deadratio: u32,
    /// Node i advertises with advskew i * step (node0 is the preferred master).
    #[arg(long, default_value_t = 50)]
    pub advskew_step: u8,
    /// XDP mode of the agents: auto, native, generic or off.
    #[arg(long, default_value = "auto")]
    pub xdp: String,
    /// Let a more preferred node take the VIP back when it returns.
    #[arg(long)]
    pub preempt: bool,
    /// Seconds of client traffic (at least as long as the script needs).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where to draw the timeline picture (SVG).
    #[arg(long, default_value = "results/demo-timeline.svg")]
    pub timeline: PathBuf,
}

/// The client's pace: one request every 2 ms, every fourth a write.
const PROBE_INTERVAL_US: u64 = 2000;
const WRITE_EVERY: u64 = 4;

/// Seconds of steady traffic before the failure and after the failover.
const STEADY: Duration = Duration::from_secs(5);

pub fn run(args: DemoArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo needs root (network namespaces, bridges, XDP); run it as root");
    }
    let imp = Implementation::parse(&format!("agent-xdp-{}", args.xdp))?;
    let built = crate::tasks::build(true)?;
    let _pinned = Pinned::new(&built.agent_bin, &[])?;
    install_signal_handlers();
    let outcome = Demo::new(args, imp).and_then(|d| d.play());
    if interrupted() {
        say("interrupted; the rig has been removed");
    }
    let report = outcome?;
    if !report.ok {
        bail!("{}", report.verdict);
    }
    Ok(())
}

/// The closing report, printed and written as JSON.
#[derive(Debug, Serialize)]
struct Report {
    date: String,
    nodes: usize,
    advbase_s: u8,
    deadratio: u32,
    advskew_step: u8,
    xdp_requested: String,
    xdp_reported: Vec<String>,
    old_master: String,
    new_master: String,
    power_failure_at_s: f64,
    /// Old master's last advert to the new master's first (the election).
    detection_ms: Option<f64>,
    theoretical_master_down_ms: f64,
    /// Failure to the VIP on the new master (polled every few milliseconds).
    vip_moved_ms: Option<f64>,
    /// Failure to the first write the new master acknowledged to the client.
    database_writable_ms: Option<f64>,
    /// Failure to the first answer from the new master.
    client_gap_ms: f64,
    /// Last answer before the failure to the first after it.
    client_outage_ms: Option<f64>,
    /// The new master's takeover, step by step.
    breakdown: Option<String>,
    failed_requests_during_failover: usize,
    requests: usize,
    failed_requests: usize,
    /// Failed requests by the client's reason (connect-timeout, http-503, ...).
    failed_by_reason: std::collections::BTreeMap<String, usize>,
    writes: WriteCheck,
    old_master_rejoined: bool,
    rejoin: String,
    /// Agents: the web service on the master killed, to the VIP on another node.
    service_failover_ms: Option<f64>,
    vip_holders_at_end: Vec<String>,
    events: Vec<String>,
    ok: bool,
    verdict: String,
}

/// The service check every agent of the demo runs on its own guestbook: a GET every 250 ms,
/// failing after three in a row fail, and then a MASTER bows out.
const TRACK_INTERVAL_MS: u64 = 250;
const TRACK_FALL: u64 = 3;

struct Demo {
    args: DemoArgs,
    timing: Timing,
    s: Scenario,
    /// Demo time zero (the client's start), in `mono_ns`.
    t0: u64,
    next_progress: u64,
    events: Vec<String>,
    markers: Vec<Marker>,
}

impl Demo {
    fn new(args: DemoArgs, imp: Implementation) -> Result<Demo> {
        let timing = Timing {
            advbase: args.advbase,
            deadratio: args.deadratio,
        };
        let n = usize::from(args.nodes);
        say(format_args!(
            "building a {n}-node web cluster: MariaDB + cluster-agent + guestbook per node; advbase {} s, deadratio {}, advskew step {}, xdp {}",
            args.advbase, args.deadratio, args.advskew_step, args.xdp
        ));
        let mut s = Scenario::new(n, imp, timing, WatchPort::Client)?;
        if s.c.config.imp.is_agent() {
            // The web service follows the VIP too: each agent checks its own guestbook.
            let conf = s.c.rig.dir().join("track.toml");
            std::fs::write(
                &conf,
                format!(
                    "[[track]]\nname = \"guestbook\"\nhttp = \"http://127.0.0.1:80/\"\n\
                     interval = {TRACK_INTERVAL_MS}\nfall = {TRACK_FALL}\nrise = 2\naction = \"bow-out\"\n"
                ),
            )
            .with_context(|| format!("writing {}", conf.display()))?;
            s.c.config.agent_args.push("--config".into());
            s.c.config
                .agent_args
                .push(conf.to_string_lossy().into_owned());
        }
        Ok(Demo {
            args,
            timing,
            s,
            t0: mono_ns(),
            next_progress: 0,
            events: Vec::new(),
            markers: Vec::new(),
        })
    }

    fn rank(&self, i: usize) -> Rank {
        let skew = (i as u32 * u32::from(self.args.advskew_step)).min(255) as u8;
        Rank {
            advskew: skew,
            priority: 0,
            preempt: self.args.preempt,
        }
    }

    fn master_down(&self, i: usize) -> Duration {
        self.timing.master_down(&self.s.c.config.imp, self.rank(i))
    }

    fn secs(&self, t: u64) -> f64 {
        ms_between(self.t0, t) / 1e3
    }

    fn event(&mut self, text: String) {
        let line = format!("[{:5.1}s] {text}", self.secs(mono_ns()));
        println!("{line}");
        self.events.push(line);
    }

    fn mark(&mut self, t: u64, label: &str) {
        self.markers.push(Marker {
            t_s: self.secs(t),
            label: label.to_string(),
        });
    }

    /// Prints a progress line once per second of demo time.
    fn tick(&mut self) -> Result<()> {
        self.s.refresh()?;
        let now = mono_ns();
        if now < self.next_progress {
            return Ok(());
        }
        self.next_progress = now + 1_000_000_000;
        let since = now.saturating_sub(1_000_000_000);
        let (mut reads, mut writes, mut errors) = (0, 0, 0);
        for s in self.s.probe_log.ended_since(since) {
            match (&s.outcome, &s.write) {
                (Ok(_), Some(_)) => writes += 1,
                (Ok(_), None) => reads += 1,
                (Err(_), _) => errors += 1,
            }
        }
        let states: Vec<String> = (0..self.s.nodes())
            .map(|i| {
                let st = self.s.c.status(i).ok().map_or_else(
                    || "down".to_string(),
                    |st| {
                        let db = st.database.map(|d| d.role).unwrap_or_default();
                        format!("{}/{db}", st.state)
                    },
                );
                format!("{}={st}", node_name(i))
            })
            .collect();
        let holders = self.s.c.holders()?;
        let vip = if holders.is_empty() {
            "nobody".to_string()
        } else {
            names(&holders)
        };
        println!(
            "[{:5.1}s] {} | VIP on {vip} | {reads} reads/s {writes} writes/s acknowledged | {errors} errors/s",
            self.secs(now),
            states.join(" "),
        );
        Ok(())
    }

    /// Waits for `cond` while printing progress.
    fn wait<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&mut Demo) -> Result<Option<T>>,
    ) -> Result<T> {
        POLL.wait_for(timeout, what, || {
            self.tick()?;
            cond(self)
        })
    }

    /// Keeps printing progress until demo time `t` (in `mono_ns`).
    fn run_until(&mut self, t: u64) -> Result<()> {
        let span = Duration::from_nanos(t.saturating_sub(mono_ns())) + Duration::from_secs(1);
        self.wait(span, "demo time to pass", |_| {
            Ok((mono_ns() >= t).then_some(()))
        })
    }

    fn play(mut self) -> Result<Report> {
        let n = self.s.nodes();
        // node0 starts alone so that it is certainly the first master.
        let ranks: Vec<Rank> = (0..n).map(|i| self.rank(i)).collect();
        let limit = (self.master_down(0) + Duration::from_secs(15)).max(Duration::from_secs(20));
        let up = self.s.c.bring_up(&ranks, limit)?;
        say(format_args!(
            "node0 became MASTER, its database writable, after {:.2} s (an agent starts as BACKUP and waits one master-down time); every other node replicates from it",
            up.master_after.as_secs_f64()
        ));
        if let Ok(st) = self.s.c.status(0) {
            say(format_args!("XDP mode reported by node0: {}", st.xdp));
        }
        self.s.start_probe(PROBE_INTERVAL_US, WRITE_EVERY)?;
        self.t0 = mono_ns();
        self.event(format!(
            "client: a request to http://{}/ every {} ms (fresh TCP connection each), every {WRITE_EVERY}th a guestbook write",
            VIP,
            PROBE_INTERVAL_US / 1000
        ));
        self.wait(
            Duration::from_secs(10),
            "the client's first acknowledged write",
            |d| {
                Ok(d.s
                    .probe_log
                    .samples
                    .iter()
                    .any(|s| s.write.as_ref().is_some_and(|w| w.1.is_some()))
                    .then_some(()))
            },
        )?;
        self.run_until(mono_ns() + STEADY.as_nanos() as u64)?;

        // Power failure of whoever is master now.
        let holders = self.s.c.holders()?;
        let [old] = holders[..] else {
            bail!("before the failure the VIP is on {holders:?}, not on exactly one node");
        };
        let t_fail = self.s.power_cut(old)?;
        self.mark(t_fail, "power failure");
        self.event(format!(
            "POWER FAILURE of {} (every process frozen, switch port down, processes killed)",
            node_name(old)
        ));
        let old_name = node_name(old);
        let worst = (0..n)
            .map(|i| self.master_down(i))
            .max()
            .unwrap_or_default();
        let mut vip_moved: Option<u64> = None;
        let new = self.wait(
            worst + Duration::from_secs(15),
            "a new master acknowledges a write",
            |d| {
                if vip_moved.is_none() {
                    let h = d.s.c.holders()?;
                    if h.len() == 1 && h[0] != old {
                        vip_moved = Some(mono_ns());
                    }
                }
                Ok(d.s
                    .probe_log
                    .ended_since(t_fail)
                    .find(|s| {
                        s.write.as_ref().is_some_and(|w| w.1.is_some()) && !s.ok_from(&old_name)
                    })
                    .map(|s| (s.outcome.clone().unwrap_or_default(), s.end_ns)))
            },
        )?;
        let f = self
            .s
            .measure_failover(old, t_fail, Duration::from_secs(5))?;
        let (new_name, first_write) = new;
        if let Some(t) = vip_moved {
            self.mark(t, "VIP moved");
        }
        self.mark(first_write, "database writable");
        self.event(format!(
            "VIP moved to {} after {} ms; client answered again after {} ms; {new_name} acknowledged a write after {} ms",
            node_name(f.new),
            ms(vip_moved.map(|t| ms_between(t_fail, t))),
            ms(Some(f.gap_from_fail_ms())),
            ms(Some(ms_between(t_fail, first_write)))
        ));
        self.run_until(mono_ns() + STEADY.as_nanos() as u64)?;

        // The failed node comes back.
        self.s.power_on(old)?;
        self.s.c.start_daemon(old, self.rank(old))?;
        let t_on = mono_ns();
        self.mark(t_on, "old master back");
        self.event(format!(
            "{} powered on again: database crash-recovered, agent restarted",
            node_name(old)
        ));
        let expect_back = self.args.preempt && old < f.new;
        let rejoin_limit = self.master_down(old) * 2 + Duration::from_secs(20);
        let rejoined = self.wait(rejoin_limit, "the restarted node rejoins", |d| {
            d.s.c.check_daemon(old)?;
            let done = if expect_back {
                d.s.c.is_sole_master(old)
            } else {
                d.s.c.is_replica_of(old, f.new)
            };
            Ok(done.then_some(()))
        });
        let rejoin = match &rejoined {
            Ok(()) => {
                let st = self.s.c.status(old).ok();
                let state = st.map(|s| s.state).unwrap_or_default();
                self.event(format!(
                    "{} rejoined as {state} after {:.2} s",
                    node_name(old),
                    ms_between(t_on, mono_ns()) / 1e3
                ));
                format!("{state} after {:.2} s", ms_between(t_on, mono_ns()) / 1e3)
            }
            Err(e) => {
                check_interrupt()?;
                let db = self
                    .s
                    .c
                    .status(old)
                    .ok()
                    .and_then(|s| s.database)
                    .map(|d| format!("{d:?}"))
                    .unwrap_or_default();
                self.event(format!("{} did not rejoin: {e:#} {db}", node_name(old)));
                format!("no: {e:#} {db}")
            }
        };
        self.run_until(mono_ns() + STEADY.as_nanos() as u64)?;
        let service = self.service_failure()?;
        let end = (self.t0 + self.args.duration * 1_000_000_000).max(mono_ns() + 3_000_000_000);
        self.run_until(end)?;
        self.report(
            &f,
            vip_moved,
            first_write,
            rejoined.is_ok(),
            rejoin,
            service,
        )
    }

    /// The second failure (agents only): the web service on the master dies while its node
    /// stays up. Its `[[track]]` check fails and it bows out; a node whose service answers
    /// takes the VIP and its database. `Some(ms)`: failure to the VIP on another node.
    fn service_failure(&mut self) -> Result<Option<f64>> {
        if !self.s.c.config.imp.is_agent() {
            return Ok(None);
        }
        let holders = self.s.c.holders()?;
        let [m] = holders[..] else {
            self.event(format!(
                "no service failure: the VIP is on {holders:?}, not on exactly one node"
            ));
            return Ok(None);
        };
        let t_kill = mono_ns();
        self.s.kill_service(m);
        self.mark(t_kill, "web service killed");
        self.event(format!(
            "the web service on {} (MASTER) is killed; the node, its agent and its database stay up",
            node_name(m)
        ));
        let worst = (0..self.s.nodes())
            .map(|i| self.master_down(i))
            .max()
            .unwrap_or_default();
        let limit = Duration::from_millis(TRACK_INTERVAL_MS * (TRACK_FALL + 1))
            + worst
            + Duration::from_secs(10);
        let moved = self.wait(
            limit,
            "the VIP leaves the node whose web service died",
            |d| {
                let h = d.s.c.holders()?;
                Ok((h.len() == 1 && h[0] != m).then(|| (h[0], mono_ns())))
            },
        );
        let result = match moved {
            Ok((to, t)) => {
                self.mark(t, "VIP moved (service)");
                let took = ms_between(t_kill, t);
                self.event(format!(
                    "its check failed ({TRACK_FALL} probes {TRACK_INTERVAL_MS} ms apart) and it bowed out: the VIP moved to {} {} ms after the kill",
                    node_name(to),
                    ms(Some(took))
                ));
                Some(took)
            }
            Err(e) => {
                check_interrupt()?;
                self.event(format!("the VIP did not leave {}: {e:#}", node_name(m)));
                None
            }
        };
        // The service comes back; the node can serve (and win again) once its check passes.
        self.s.start_service(m)?;
        self.event(format!("the web service on {} is back", node_name(m)));
        Ok(result)
    }

    /// Builds, prints and writes the closing report and the timeline picture.
    fn report(
        &mut self,
        f: &Failover,
        vip_moved: Option<u64>,
        first_write: u64,
        rejoined: bool,
        rejoin: String,
        service: Option<f64>,
    ) -> Result<Report> {
        self.s.refresh()?;
        let holders = self.s.c.holders()?;
        let masters: Vec<usize> = (0..self.s.nodes())
            .filter(|&i| self.s.c.status(i).is_ok_and(|st| st.is_master()))
            .collect();
        let survivor = match holders[..] {
            [m] => m,
            _ => f.new,
        };
        let writes = self.s.check_writes(survivor)?;
        let samples = &self.s.probe_log.samples;
        let exactly_one = holders.len() == 1 && masters == holders;
        let service_ok = !self.s.c.config.imp.is_agent() || service.is_some();
        let ok = exactly_one && writes.lost.is_empty() && rejoined && service_ok;
        let verdict = if ok {
            format!(
                "OK: exactly one node holds the VIP, no acknowledged write lost, the old master rejoined{}",
                if service.is_some() {
                    ", the VIP left the node whose web service died"
                } else {
                    ""
                }
            )
        } else {
            let mut why = Vec::new();
            if !exactly_one {
                why.push(format!(
                    "the VIP is held by [{}] and MASTER is [{}]",
                    names(&holders),
                    names(&masters)
                ));
            }
            if !writes.lost.is_empty() {
                why.push(format!("{} acknowledged write(s) lost", writes.lost.len()));
            }
            if !rejoined {
                why.push("the old master did not rejoin".to_string());
            }
            if !service_ok {
                why.push("the VIP did not leave the node whose web service died".to_string());
            }
            format!("FAILED: {}", why.join("; "))
        };
        let report = Report {
            date: crate::report::utc_stamp(),
            nodes: self.s.nodes(),
            advbase_s: self.args.advbase,
            deadratio: self.args.deadratio,
            advskew_step: self.args.advskew_step,
            xdp_requested: self.args.xdp.clone(),
            xdp_reported: (0..self.s.nodes())
                .map(|i| {
                    self.s
                        .c
                        .status(i)
                        .map_or("?".into(), |st| format!("{}={}", node_name(i), st.xdp))
                })
                .collect(),
            old_master: node_name(f.old),
            new_master: node_name(f.new),
            power_failure_at_s: self.secs(f.t_fail),
            detection_ms: f.detection_ms(),
            theoretical_master_down_ms: self.master_down(f.new).as_secs_f64() * 1e3,
            vip_moved_ms: vip_moved.map(|t| ms_between(f.t_fail, t)),
            database_writable_ms: Some(ms_between(f.t_fail, first_write)),
            client_gap_ms: f.gap_from_fail_ms(),
            client_outage_ms: f.outage_ms(),
            breakdown: f.breakdown(),
            failed_requests_during_failover: f.failed,
            requests: samples.len(),
            failed_requests: samples.iter().filter(|s| !s.is_ok()).count(),
            failed_by_reason: samples
                .iter()
                .filter_map(|s| s.outcome.as_ref().err())
                .fold(Default::default(), |mut m, why| {
                    *m.entry(why.clone()).or_default() += 1;
                    m
                }),
            writes,
            old_master_rejoined: rejoined,
            rejoin,
            service_failover_ms: service,
            vip_holders_at_end: holders.iter().map(|&i| node_name(i)).collect(),
            events: self.events.clone(),
            ok,
            verdict,
        };
        println!("{}", render(&report));
        if let Some(path) = &self.args.json {
            write_file(path, &serde_json::to_string_pretty(&report)?)?;
            say(format_args!("report written to {}", path.display()));
        }
        let points: Vec<Point> = samples
            .iter()
            .map(|s| Point {
                t_s: self.secs(s.end_ns),
                latency_ms: ms_between(s.start_ns, s.end_ns),
                ok: s.is_ok(),
                write: s.write.is_some(),
            })
            .collect();
        let title = format!(
            "cluster-agent demo: {} nodes, power failure of {} -> {} (gap {} ms, {} acknowledged writes, {} lost)",
            report.nodes,
            report.old_master,
            report.new_master,
            ms(Some(report.client_gap_ms)),
            report.writes.acknowledged,
            report.writes.lost.len()
        );
        if let Some(dir) = self
            .args
            .timeline
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::timeline::draw_timeline(&self.args.timeline, &title, &points, &self.markers)?;
        say(format_args!(
            "timeline picture written to {}",
            self.args.timeline.display()
        ));
        Ok(report)
    }
}

fn names(v: &[usize]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.iter()
            .map(|&i| node_name(i))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn render(r: &Report) -> String {
    let mut t = String::from("\n===== demo report =====\n");
    let mut line = |s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line(format!(
        "cluster: {} nodes (MariaDB + cluster-agent + guestbook each), advbase {} s, deadratio {}, advskew step {}, xdp requested {} (reported: {})",
        r.nodes,
        r.advbase_s,
        r.deadratio,
        r.advskew_step,
        r.xdp_requested,
        r.xdp_reported.join(" ")
    ));
    line(format!(
        "power failure of {} at {:.1} s; new master {}",
        r.old_master, r.power_failure_at_s, r.new_master
    ));
    line(format!(
        "  detection (last advert of {} -> first of {}):  {} ms (theory {} ms)",
        r.old_master,
        r.new_master,
        ms(r.detection_ms),
        ms(Some(r.theoretical_master_down_ms))
    ));
    line(format!(
        "  VIP moved (failure -> VIP on {}):             {} ms",
        r.new_master,
        ms(r.vip_moved_ms)
    ));
    line(format!(
        "  database writable (failure -> first write acknowledged by {}): {} ms",
        r.new_master,
        ms(r.database_writable_ms)
    ));
    line(format!(
        "  client-visible gap (failure -> first answer from {}): {} ms (last answer before -> first after: {} ms)",
        r.new_master,
        ms(Some(r.client_gap_ms)),
        ms(r.client_outage_ms)
    ));
    if let Some(b) = &r.breakdown {
        line(format!("  where the time went: {b}"));
    }
    line(format!(
        "  failed requests during the failover: {}",
        r.failed_requests_during_failover
    ));
    let reasons: Vec<String> = r
        .failed_by_reason
        .iter()
        .map(|(why, n)| format!("{why} {n}"))
        .collect();
    line(format!(
        "requests over the whole demo: {}, failed {} ({})",
        r.requests,
        r.failed_requests,
        if reasons.is_empty() {
            "none".to_string()
        } else {
            reasons.join(", ")
        }
    ));
    line(format!(
        "writes: {} sent, {} acknowledged, {} acknowledged writes lost (checked on {}, {} rows there){}",
        r.writes.attempted,
        r.writes.acknowledged,
        r.writes.lost.len(),
        r.vip_holders_at_end.first().unwrap_or(&r.new_master),
        r.writes.rows_on_survivor,
        if r.writes.lost.is_empty() {
            String::new()
        } else {
            // A count and a few examples; every id is in the JSON report.
            let shown: Vec<&str> = r.writes.lost.iter().take(10).map(String::as_str).collect();
            format!(
                ", e.g. {}{}",
                shown.join(" "),
                if r.writes.lost.len() > shown.len() {
                    " ..."
                } else {
                    ""
                }
            )
        }
    ));
    line(format!("old master rejoined: {}", r.rejoin));
    if let Some(t) = r.service_failover_ms {
        line(format!(
            "web service killed on the master: the VIP moved to a node whose service answers after {} ms",
            ms(Some(t))
        ));
    }
    line(format!(
        "VIP held at the end by: {}",
        r.vip_holders_at_end.join(", ")
    ));
    line(format!("result: {}", r.verdict));
    t
}
