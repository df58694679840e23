//! `cargo xtask demo`: a live cluster to watch failover happen.
//!
//! N agents in network namespaces share a VIP; every node serves HTTP with its own name, and a
//! client requests `http://VIP/` every millisecond. Once a second a progress line shows who is
//! master, where the VIP is and how the client fares. The master is power-failed, the VIP moves,
//! the failed node comes back, and a report closes the run. Exit status 1 unless exactly one
//! node holds the VIP at the end.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::cmd::say;
use crate::report::ms;
use crate::scenario::{
    self, Failover, Implementation, Rank, Scenario, Timing, WatchPort, check_interrupt, mono_ns,
    ms_between, node_name, wait_for,
};

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
}

/// Seconds of steady traffic before the failure and after the failover.
const STEADY: Duration = Duration::from_secs(5);

pub fn run(args: DemoArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo needs root (network namespaces, bridges, XDP); run it as root");
    }
    let imp = Implementation::parse(&format!("agent-xdp-{}", args.xdp))?;
    let built = crate::tasks::build(true)?;
    let _pinned = scenario::PinnedAgent::new(&built.agent_bin)?;
    scenario::install_signal_handlers();
    let outcome = Demo::new(args, imp)?.play();
    if scenario::interrupted() {
        say("interrupted; the rig has been removed");
    }
    let ok = outcome?;
    if !ok {
        bail!("the VIP was not held by exactly one node at the end");
    }
    Ok(())
}

struct Demo {
    args: DemoArgs,
    timing: Timing,
    s: Scenario,
    /// Demo time zero (the probe's start), in `mono_ns`.
    t0: u64,
    next_progress: u64,
    events: Vec<String>,
}

impl Demo {
    fn new(args: DemoArgs, imp: Implementation) -> Result<Demo> {
        let timing = Timing {
            advbase: args.advbase,
            deadratio: args.deadratio,
        };
        let n = usize::from(args.nodes);
        say(format_args!(
            "building a {n}-node rig: advbase {} s, deadratio {}, advskew step {}, xdp {}",
            args.advbase, args.deadratio, args.advskew_step, args.xdp
        ));
        let s = Scenario::new(n, imp, timing, WatchPort::Client)?;
        Ok(Demo {
            args,
            timing,
            s,
            t0: mono_ns(),
            next_progress: 0,
            events: Vec::new(),
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
        self.timing.master_down(&self.s.imp, self.rank(i))
    }

    fn secs(&self, t: u64) -> f64 {
        ms_between(self.t0, t) / 1e3
    }

    fn event(&mut self, text: String) {
        let line = format!("[{:5.1}s] {text}", self.secs(mono_ns()));
        println!("{line}");
        self.events.push(line);
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
        let mut answered: std::collections::BTreeMap<String, usize> = Default::default();
        let mut errors = 0;
        for s in self.s.probe_log.ended_since(since) {
            match &s.outcome {
                Ok(node) => *answered.entry(node.clone()).or_default() += 1,
                Err(_) => errors += 1,
            }
        }
        let states: Vec<String> = (0..self.s.nodes())
            .map(|i| {
                let st = self
                    .s
                    .agent_status(i)
                    .map_or_else(|| "down".to_string(), |st| st.state);
                format!("{}={st}", node_name(i))
            })
            .collect();
        let holders = self.s.holders()?;
        let vip = if holders.is_empty() {
            "nobody".to_string()
        } else {
            holders
                .iter()
                .map(|&i| node_name(i))
                .collect::<Vec<_>>()
                .join("+")
        };
        let ok: usize = answered.values().sum();
        let by = if answered.is_empty() {
            "-".to_string()
        } else {
            answered
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "[{:5.1}s] {} | VIP on {vip} | {ok} ok/s ({by}) | {errors} errors/s",
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
        // `wait_for` cannot lend `self` to the condition, so the loop is spelled out here.
        let start = mono_ns();
        let limit = timeout.as_nanos() as u64;
        let polls = timeout.as_millis() / 5 + 2;
        for _ in 0..polls {
            check_interrupt()?;
            self.tick()?;
            if let Some(v) = cond(self)? {
                return Ok(v);
            }
            if mono_ns() - start > limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("timed out after {timeout:?} waiting for: {what}")
    }

    /// Keeps printing progress until demo time `t` (in `mono_ns`).
    fn run_until(&mut self, t: u64) -> Result<()> {
        let span = Duration::from_nanos(t.saturating_sub(mono_ns())) + Duration::from_secs(1);
        self.wait(span, "demo time to pass", |_| {
            Ok((mono_ns() >= t).then_some(()))
        })
    }

    fn play(mut self) -> Result<bool> {
        let n = self.s.nodes();
        // node0 starts alone so that it is certainly the first master.
        self.s.start_daemon(0, self.rank(0))?;
        let limit = self.master_down(0) + Duration::from_secs(10);
        let took = self.s.wait_sole_master(0, limit)?;
        say(format_args!(
            "node0 is MASTER after {:.2} s (an agent starts as BACKUP and waits one master-down time)",
            took.as_secs_f64()
        ));
        for i in 1..n {
            self.s.start_daemon(i, self.rank(i))?;
        }
        wait_for(
            Duration::from_secs(10),
            "every other node is BACKUP",
            || {
                for i in 1..n {
                    self.s.check_daemon(i)?;
                    if !self.s.agent_status(i).is_some_and(|st| st.is_backup()) {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )?;
        if let Some(st) = self.s.agent_status(0) {
            say(format_args!("XDP mode reported by node0: {}", st.xdp));
        }
        self.s.start_probe()?;
        self.t0 = mono_ns();
        self.event(format!(
            "client probing http://{}/ every 1 ms (fresh TCP connection each)",
            scenario::VIP
        ));
        self.wait(Duration::from_secs(5), "the client's first answers", |d| {
            Ok(d.s
                .probe_log
                .samples
                .iter()
                .any(|s| s.is_ok())
                .then_some(()))
        })?;
        self.run_until(mono_ns() + STEADY.as_nanos() as u64)?;

        // Power failure of whoever is master now.
        let holders = self.s.holders()?;
        let [old] = holders[..] else {
            bail!("before the failure the VIP is on {holders:?}, not on exactly one node");
        };
        let t_fail = self.s.power_fail(old)?;
        self.event(format!(
            "POWER FAILURE of {} (processes killed, switch port down)",
            node_name(old)
        ));
        let old_name = node_name(old);
        let worst = (0..n)
            .map(|i| self.master_down(i))
            .max()
            .unwrap_or_default();
        self.wait(
            worst + Duration::from_secs(10),
            "a new master answers",
            |d| {
                Ok(d.s
                    .probe_log
                    .ended_since(t_fail)
                    .any(|s| s.is_ok() && !s.ok_from(&old_name))
                    .then_some(()))
            },
        )?;
        let f = self
            .s
            .measure_failover(old, t_fail, Duration::from_secs(5))?;
        self.event(format!(
            "VIP moved to {}: client answered again {} ms after the failure",
            node_name(f.new),
            ms(Some(f.gap_from_fail_ms()))
        ));
        self.run_until(mono_ns() + STEADY.as_nanos() as u64)?;

        // The failed node comes back.
        self.s.power_on(old)?;
        self.s.start_daemon(old, self.rank(old))?;
        let t_on = mono_ns();
        self.event(format!(
            "{} powered on again, agent restarted",
            node_name(old)
        ));
        let expect_back = self.args.preempt && old < f.new;
        let rejoin_limit = self.master_down(old) * 2 + Duration::from_secs(10);
        let state = self.wait(rejoin_limit, "the restarted node rejoins", |d| {
            d.s.check_daemon(old)?;
            let st = d.s.agent_status(old);
            let settled = st.as_ref().is_some_and(|st| {
                if expect_back {
                    st.is_master()
                } else {
                    st.is_backup() && st.master.is_some()
                }
            });
            Ok(settled.then(|| st.map(|s| s.state).unwrap_or_default()))
        })?;
        self.event(format!(
            "{} rejoined as {state} after {:.2} s",
            node_name(old),
            ms_between(t_on, mono_ns()) / 1e3
        ));
        let end = (self.t0 + self.args.duration * 1_000_000_000).max(mono_ns() + 3_000_000_000);
        self.run_until(end)?;

        self.report(&f)
    }

    /// Prints the closing report; true if exactly one node holds the VIP and is MASTER.
    fn report(&mut self, f: &Failover) -> Result<bool> {
        self.s.refresh()?;
        let holders = self.s.holders()?;
        let masters: Vec<usize> = (0..self.s.nodes())
            .filter(|&i| self.s.agent_status(i).is_some_and(|st| st.is_master()))
            .collect();
        let samples = &self.s.probe_log.samples;
        let total = samples.len();
        let failed = samples.iter().filter(|s| !s.is_ok()).count();
        let theory = self.master_down(f.new).as_secs_f64() * 1e3;
        let xdp: Vec<String> = (0..self.s.nodes())
            .map(|i| {
                self.s
                    .agent_status(i)
                    .map_or("?".into(), |st| format!("{}={}", node_name(i), st.xdp))
            })
            .collect();
        let mut r = String::from("\n===== demo report =====\n");
        r.push_str(&format!(
            "cluster: {} nodes, advbase {} s, deadratio {}, advskew step {}, xdp requested {} (reported: {})\n",
            self.s.nodes(),
            self.args.advbase,
            self.args.deadratio,
            self.args.advskew_step,
            self.args.xdp,
            xdp.join(" ")
        ));
        r.push_str(&format!(
            "power failure of {} at {:.1} s; new master {}\n",
            node_name(f.old),
            self.secs(f.t_fail),
            node_name(f.new)
        ));
        r.push_str(&format!(
            "  detection ({}'s last advert -> {}'s first advert): {} ms (theoretical master-down {} ms, excess {} ms)\n",
            node_name(f.old),
            node_name(f.new),
            ms(f.detection_ms()),
            ms(Some(theory)),
            crate::report::signed_ms(f.detection_ms().map(|d| d - theory)),
        ));
        r.push_str(&format!(
            "  client-visible gap (failure -> first answer from {}): {} ms\n",
            node_name(f.new),
            ms(Some(f.gap_from_fail_ms()))
        ));
        r.push_str(&format!(
            "  client outage (last answer before -> first answer after): {} ms\n",
            ms(f.outage_ms())
        ));
        r.push_str(&format!(
            "  failed requests during the failover: {}\n",
            f.failed
        ));
        r.push_str(&format!(
            "requests over the whole demo: {total}, failed {failed}\n"
        ));
        let names = |v: &[usize]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|&i| node_name(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        r.push_str(&format!(
            "at the end: MASTER {}; VIP held by {}\n",
            names(&masters),
            names(&holders)
        ));
        let ok = holders.len() == 1 && masters == holders;
        r.push_str(if ok {
            "result: OK, exactly one node holds the VIP\n"
        } else {
            "result: FAILED, the VIP is not held by exactly one MASTER\n"
        });
        println!("{r}");
        Ok(ok)
    }
}
