//! A seeded discrete-event simulation of a CARP segment.
//!
//! Two to five [`Machine`]s share a simulated L2 segment that loses and delays each delivery at
//! random. A chaos phase powers nodes off and on (a reboot is a fresh [`Machine::new`]), stops them
//! gracefully, hands mastership over, isolates them from the segment while they keep running,
//! toggles demotion and changes loss and delay. Then everything is healed, the cluster settles for
//! several master-down times, and the election is checked: exactly one MASTER, everyone agrees on
//! it, nothing moved during the settled tail, and with preemption on everywhere the master
//! advertises the lowest interval. Equal intervals are not ordered further: preemption needs a
//! strictly lower interval, so the source-address tie-break only settles two concurrent masters.
//!
//! Every run is driven by one seed; a failure names it. Replay one with its trace:
//! `CARP_SIM_SEED=<seed> cargo test -p cluster-agent sim::replay -- --ignored --nocapture`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::machine::{Action, DEMOTED_SKEW, Input, Machine, Params, State, interval};
use super::time::Mono;
use super::wire::tie_key;

/// Random runs in [`random_clusters_converge`]; `CARP_SIM_RUNS` overrides it.
const RUNS: u64 = 10_000;
/// A run that needs more events than this is reported as a livelock.
const MAX_STEPS: u64 = 1_000_000;
/// Trace lines shown with a failure.
const TRACE_TAIL: usize = 120;

/// splitmix64: small, fast, and good enough to drive a simulation.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut r = Rng(seed);
        // Decorrelate neighbouring seeds before the first real draw.
        r.next();
        r
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num/den`.
    pub(crate) fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_nanos() as u64, hi.as_nanos() as u64);
        Duration::from_nanos(self.range(lo, hi.max(lo)))
    }
}

/// An advert on the wire: (arrival, sequence, receiver, sender, advbase, advskew).
type Delivery = (Mono, u64, usize, usize, u8, u8);

struct Node {
    params: Params,
    /// `None` while powered off.
    machine: Option<Machine>,
    /// Cut off from every other node; the machine keeps running.
    isolated: bool,
    /// The machine was told `LinkDown` and has not been told `LinkUp` since.
    link_down: bool,
    /// Handed mastership away by a switchover and not MASTER since: it must not preempt.
    holding_off: bool,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: Mono,
    nodes: Vec<Node>,
    wire: BinaryHeap<Reverse<Delivery>>,
    seq: u64,
    /// Per-delivery loss probability, in permille.
    loss: u64,
    delay: (Duration, Duration),
    /// Next chaos event and the end of the chaos phase.
    chaos: Option<(Mono, Mono)>,
    /// The longest master-down time any node can have (demoted): the simulation's time unit.
    unit: Duration,
    /// The shortest advert interval any node can have.
    min_interval: Duration,
    steps: u64,
    transitions: u64,
    last_transition: Option<Mono>,
    adverts: u64,
    trace: Option<Vec<String>>,
}

impl Sim {
    fn new(seed: u64, params: Vec<Params>, trace: bool) -> Self {
        let unit = params
            .iter()
            .map(|p| {
                let mut m = Machine::new(*p, Mono(0));
                m.handle(Mono(0), Input::SetDemoted(true));
                m.master_down()
            })
            .max()
            .expect("at least one node");
        let min_interval = params
            .iter()
            .map(|p| interval(p.advbase, p.advskew))
            .min()
            .expect("at least one node");
        Sim {
            seed,
            rng: Rng::new(seed ^ 0x5eed_0000_c0de_0001),
            now: Mono(0),
            nodes: params
                .into_iter()
                .map(|params| Node {
                    params,
                    machine: None,
                    isolated: false,
                    link_down: false,
                    holding_off: false,
                })
                .collect(),
            wire: BinaryHeap::new(),
            seq: 0,
            loss: 0,
            delay: (Duration::ZERO, Duration::ZERO),
            chaos: None,
            unit,
            min_interval,
            steps: 0,
            transitions: 0,
            last_transition: None,
            adverts: 0,
            trace: trace.then(Vec::new),
        }
    }

    fn log(&mut self, what: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{:>12.6}s {}", self.now.0 as f64 / 1e9, what()));
        }
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].machine.is_some()
    }

    fn machine(&mut self, i: usize) -> &mut Machine {
        self.nodes[i].machine.as_mut().expect("node is powered on")
    }

    fn power_on(&mut self, i: usize) {
        let p = self.nodes[i].params;
        self.nodes[i].machine = Some(Machine::new(p, self.now));
        self.nodes[i].link_down = false;
        self.nodes[i].holding_off = false;
        self.log(|| format!("n{i} power on"));
    }

    fn power_off(&mut self, i: usize) {
        self.nodes[i].machine = None;
        self.nodes[i].link_down = false;
        self.log(|| format!("n{i} power off"));
    }

    /// A graceful stop: the machine bows out if MASTER, then the node goes away.
    fn shutdown(&mut self, i: usize) {
        self.log(|| format!("n{i} shutdown"));
        self.input(i, Input::Shutdown);
        self.power_off(i);
    }

    /// Hands mastership to a peer, if this node has it.
    fn switchover(&mut self, i: usize) {
        self.log(|| format!("n{i} switchover"));
        if self.machine(i).state() == State::Master {
            self.nodes[i].holding_off = true;
        }
        self.input(i, Input::Switchover);
    }

    fn isolate(&mut self, i: usize, tell: bool) {
        self.nodes[i].isolated = true;
        self.log(|| format!("n{i} isolated{}", if tell { " + LinkDown" } else { "" }));
        if tell && self.alive(i) {
            self.nodes[i].link_down = true;
            self.input(i, Input::LinkDown);
        }
    }

    fn reconnect(&mut self, i: usize) {
        self.nodes[i].isolated = false;
        self.log(|| format!("n{i} reconnected"));
        if self.nodes[i].link_down && self.alive(i) {
            self.nodes[i].link_down = false;
            self.input(i, Input::LinkUp);
        }
    }

    /// A configuration reload: a new skew (no lower than any node's so far, no higher than the
    /// demoted one, so the run's time scale holds) and, now and then, preemption toggled. It
    /// applies to the running machine and to every later power-on.
    fn reload(&mut self, i: usize) {
        let floor = self.nodes.iter().map(|n| n.params.advskew).min();
        let top = u64::from(DEMOTED_SKEW);
        let floor = u64::from(floor.unwrap_or(0)).min(top);
        let mut p = self.nodes[i].params;
        p.advskew = self.rng.range(floor, top) as u8;
        if self.rng.chance(1, 4) {
            p.preempt = !p.preempt;
        }
        self.nodes[i].params = p;
        self.log(|| format!("n{i} reload advskew={} preempt={}", p.advskew, p.preempt));
        self.input(i, Input::Reconfigure(p));
    }

    fn set_demoted(&mut self, i: usize, d: bool) {
        self.log(|| format!("n{i} demoted={d}"));
        self.input(i, Input::SetDemoted(d));
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = self.now;
        self.machine(i).handle(now, input);
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        while let Some(a) = self.machine(i).poll_action() {
            match a {
                Action::SendAdvert { advbase, advskew } => {
                    self.log(|| format!("n{i} advert {advbase}/{advskew}"));
                    self.broadcast(i, advbase, advskew);
                }
                Action::SendGarp => {}
                Action::Transition { from, to, reason } => {
                    self.log(|| format!("n{i} {from} -> {to} ({reason:?})"));
                    self.transitions += 1;
                    self.last_transition = Some(self.now);
                    if to == State::Master {
                        self.nodes[i].holding_off = false;
                    }
                }
            }
        }
    }

    fn broadcast(&mut self, from: usize, advbase: u8, advskew: u8) {
        self.adverts += 1;
        if self.nodes[from].isolated {
            return;
        }
        for to in 0..self.nodes.len() {
            if to == from || !self.alive(to) || self.nodes[to].isolated {
                continue;
            }
            if self.rng.chance(self.loss, 1000) {
                continue;
            }
            let at = self.now + self.rng.duration(self.delay.0, self.delay.1);
            self.seq += 1;
            self.wire
                .push(Reverse((at, self.seq, to, from, advbase, advskew)));
        }
    }

    fn next_timer(&self) -> Option<(Mono, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((n.machine.as_ref()?.poll_timeout()?, i)))
            .min()
    }

    /// Runs every event up to and including `end`.
    fn run_until(&mut self, end: Mono) -> Result<(), String> {
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(format!("no quiescence after {MAX_STEPS} events"));
            }
            let wire = self.wire.peek().map(|Reverse(d)| d.0);
            let timer = self.next_timer();
            let chaos = self.chaos.map(|(at, _)| at);
            let Some(next) = [wire, timer.map(|t| t.0), chaos]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= end)
            else {
                self.now = end;
                return Ok(());
            };
            if next < self.now {
                return Err(format!("event scheduled in the past at {next:?}"));
            }
            self.now = next;
            // Simultaneous deliveries and timers run in a random order.
            let wire_due = wire == Some(next);
            let timer_due = timer.filter(|t| t.0 == next).map(|t| t.1);
            match (wire_due, timer_due) {
                (true, Some(i)) if self.rng.chance(1, 2) => self.fire_timer(i)?,
                (true, _) => self.deliver(),
                (false, Some(i)) => self.fire_timer(i)?,
                (false, None) => self.chaos_step(),
            }
        }
    }

    fn deliver(&mut self) {
        let Some(Reverse((_, _, to, from, advbase, advskew))) = self.wire.pop() else {
            return;
        };
        if !self.alive(to) || self.nodes[to].isolated {
            return;
        }
        let src = self.nodes[from].params.src;
        self.input(
            to,
            Input::Advert {
                src,
                advbase,
                advskew,
            },
        );
    }

    fn fire_timer(&mut self, i: usize) -> Result<(), String> {
        let now = self.now;
        self.machine(i).handle_timeout(now);
        self.drain(i);
        match self.machine(i).poll_timeout() {
            Some(t) if t <= now => Err(format!("n{i} timer did not advance past {now:?}")),
            _ => Ok(()),
        }
    }

    fn start_chaos(&mut self, until: Mono) {
        let first = self.now + self.rng.duration(Duration::ZERO, self.unit);
        self.chaos = Some((first, until));
    }

    fn chaos_step(&mut self) {
        let Some((_, until)) = self.chaos else {
            return;
        };
        let n = self.nodes.len();
        let i = self.rng.below(n as u64) as usize;
        match self.rng.below(14) {
            0 if self.alive(i) => self.power_off(i),
            1 if self.alive(i) => self.shutdown(i),
            2..=3 if !self.alive(i) => {
                self.power_on(i);
                if self.rng.chance(1, 5) {
                    self.set_demoted(i, true);
                }
                if self.nodes[i].isolated && self.rng.chance(1, 2) {
                    self.nodes[i].link_down = true;
                    self.input(i, Input::LinkDown);
                }
            }
            4 if !self.nodes[i].isolated => {
                let tell = self.rng.chance(1, 2);
                self.isolate(i, tell);
            }
            5..=6 if self.nodes[i].isolated => self.reconnect(i),
            7..=8 if self.alive(i) => {
                let d = !self.machine(i).demoted();
                self.set_demoted(i, d);
            }
            9 if self.alive(i) => self.switchover(i),
            11 if self.alive(i) => self.reload(i),
            10 => {
                self.loss = self.rng.range(0, 300);
                let hi = self.rng.duration(Duration::ZERO, self.min_interval / 2);
                let lo = self.rng.duration(Duration::ZERO, hi);
                self.delay = (lo, hi);
                let (loss, delay) = (self.loss, self.delay);
                self.log(|| format!("net loss={loss}‰ delay={delay:?}"));
            }
            _ => {}
        }
        let next = self.now + self.rng.duration(Duration::from_nanos(1), self.unit / 2);
        self.chaos = (next <= until).then_some((next, until));
    }

    /// Power everything on, reconnect it, and make the segment clean and fast.
    fn heal(&mut self, clear_demotions: bool) {
        self.chaos = None;
        self.loss = 0;
        self.delay = (Duration::ZERO, self.min_interval / 50);
        self.log(|| "heal".to_string());
        for i in 0..self.nodes.len() {
            if !self.alive(i) {
                self.power_on(i);
            }
            if self.nodes[i].isolated {
                self.reconnect(i);
            }
            if clear_demotions && self.machine(i).demoted() {
                self.set_demoted(i, false);
            }
        }
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .machine
                    .as_ref()
                    .is_some_and(|m| m.state() == State::Master)
            })
            .collect()
    }

    /// The election invariants of a healed cluster that has settled for at least `tail`.
    fn check_settled(&self, tail: Duration) -> Result<usize, String> {
        let stable_since = Mono(self.now.0.saturating_sub(tail.as_nanos() as u64));
        let masters = self.masters();
        let [m] = masters[..] else {
            return Err(format!("expected one MASTER, found {masters:?}"));
        };
        if let Some(t) = self.last_transition.filter(|t| *t >= stable_since) {
            return Err(format!(
                "a transition at {:.6}s, inside the settled tail from {:.6}s",
                t.0 as f64 / 1e9,
                stable_since.0 as f64 / 1e9
            ));
        }
        let msrc = self.nodes[m].params.src;
        for (i, n) in self.nodes.iter().enumerate() {
            let believed = n.machine.as_ref().and_then(Machine::master);
            if believed != Some(msrc) {
                return Err(format!(
                    "n{i} believes the master is {believed:?}, not n{m}"
                ));
            }
        }
        if self.nodes.iter().all(|n| n.params.preempt) {
            // A node that switched over stays out of the way until it is MASTER again, and a
            // demoted node never preempts.
            let own = |i: usize| self.nodes[i].machine.as_ref().unwrap().own_interval();
            let best = (0..self.nodes.len())
                .filter(|&i| {
                    !self.nodes[i].holding_off && !self.nodes[i].machine.as_ref().unwrap().demoted()
                })
                .map(own)
                .min()
                .unwrap_or(Duration::MAX);
            if own(m) > best {
                return Err(format!(
                    "with preemption everywhere n{m} (interval {:?}) is master, but {best:?} is available",
                    own(m)
                ));
            }
        }
        Ok(m)
    }

    fn describe(&self) -> String {
        let mut s = format!("seed {}:", self.seed);
        for (i, n) in self.nodes.iter().enumerate() {
            let p = &n.params;
            let state = n.machine.as_ref().map(|m| {
                format!(
                    "{} demoted={} master={:?}",
                    m.state(),
                    m.demoted(),
                    m.master()
                )
            });
            s += &format!(
                "\n  n{i} {} (key {:#010x}) advbase={} advskew={} deadratio={} preempt={} garp={:?} -> {}",
                p.src,
                tie_key(p.src),
                p.advbase,
                p.advskew,
                p.deadratio,
                p.preempt,
                p.garp_interval,
                state.unwrap_or_else(|| "off".into()),
            );
        }
        if let Some(t) = &self.trace {
            s += "\n  trace tail:";
            for line in &t[t.len().saturating_sub(TRACE_TAIL)..] {
                s += "\n    ";
                s += line;
            }
        }
        s
    }
}

/// Draws a cluster: one advbase for all, UCARP, fast or slow timing, skews that are distinct,
/// equal or colliding, distinct addresses, and preemption everywhere, nowhere or mixed.
fn random_params(rng: &mut Rng) -> Vec<Params> {
    let n = rng.range(2, 5) as usize;
    let (advbase, deadratio, min_skew) = match rng.below(10) {
        0..=4 => (1, 3, 0),
        5..=7 => (0, rng.range(3, 4) as u8, 8),
        _ => (rng.range(2, 3) as u8, 3, 0),
    };
    let skew_policy = rng.below(3);
    let shared_skew = rng.range(min_skew, 255) as u8;
    let preempt_policy = rng.below(5);
    let mut skews: Vec<u8> = Vec::new();
    let mut srcs: Vec<Ipv4Addr> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let advskew = loop {
            let s = match skew_policy {
                // all different
                0 => rng.range(min_skew, 255) as u8,
                // all equal: the tie-break decides
                1 => shared_skew,
                // from a handful of values: some equal, some not
                _ => (min_skew + 10 * rng.below(3)) as u8,
            };
            if skew_policy != 0 || !skews.contains(&s) {
                break s;
            }
        };
        skews.push(advskew);
        let src = loop {
            let a = Ipv4Addr::new(
                10,
                rng.below(3) as u8,
                rng.below(3) as u8,
                rng.range(1, 254) as u8,
            );
            if !srcs.contains(&a) {
                break a;
            }
        };
        srcs.push(src);
        let preempt = match preempt_policy {
            0..=1 => true,
            2..=3 => rng.chance(1, 2),
            _ => false,
        };
        let garp_interval = rng
            .chance(1, 4)
            .then(|| Duration::from_millis(rng.range(500, 10_000)));
        out.push(Params {
            src: src.into(),
            advbase,
            advskew,
            deadratio,
            preempt,
            garp_interval,
        });
    }
    out
}

/// One random run: chaos, heal, settle, check. On failure the error carries the description.
fn run_seed(seed: u64, trace: bool) -> Result<Sim, String> {
    let mut rng = Rng::new(seed);
    let params = random_params(&mut rng);
    let mut sim = Sim::new(seed, params, trace);
    let result = (|| -> Result<(), String> {
        // Some nodes start with the segment, the rest boot during the chaos phase or at heal.
        for i in 0..sim.nodes.len() {
            if sim.rng.chance(3, 4) {
                sim.power_on(i);
            }
        }
        sim.loss = sim.rng.range(0, 300);
        sim.delay = (
            Duration::ZERO,
            sim.rng.duration(Duration::ZERO, sim.min_interval / 2),
        );
        let chaos_end = sim.now + sim.unit * sim.rng.range(1, 12) as u32;
        sim.start_chaos(chaos_end);
        sim.run_until(chaos_end)?;

        let clear = sim.rng.chance(1, 2);
        sim.heal(clear);
        let settled = sim.now + sim.unit * 10;
        sim.run_until(settled)?;
        sim.check_settled(sim.unit * 5)?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(sim),
        Err(e) => Err(format!("{e}\n{}", sim.describe())),
    }
}

#[test]
fn random_clusters_converge() {
    let runs = std::env::var("CARP_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(RUNS);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let failures: Vec<(u64, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    (w..runs)
                        .step_by(threads as usize)
                        .find_map(|seed| run_seed(seed, false).err().map(|e| (seed, e)))
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    if let Some((seed, _)) = failures.iter().min_by_key(|f| f.0) {
        let detail = run_seed(*seed, true).err().unwrap_or_default();
        panic!(
            "{} of {runs} runs failed (first failure per worker: {:?}); replay with \
             CARP_SIM_SEED={seed}:\n{detail}",
            failures.len(),
            failures.iter().map(|f| f.0).collect::<Vec<_>>()
        );
    }
}

/// Replays one seed with its trace, e.g. after a failure of [`random_clusters_converge`].
#[test]
#[ignore = "set CARP_SIM_SEED"]
fn replay() {
    let seed: u64 = std::env::var("CARP_SIM_SEED")
        .expect("CARP_SIM_SEED")
        .parse()
        .expect("a number");
    match run_seed(seed, true) {
        Ok(sim) => println!(
            "{}\n{} events, {} adverts, {} transitions",
            sim.describe(),
            sim.steps,
            sim.adverts,
            sim.transitions
        ),
        Err(e) => panic!("{e}"),
    }
}

fn node(src: Ipv4Addr, advskew: u8, preempt: bool) -> Params {
    Params {
        src: src.into(),
        advbase: 1,
        advskew,
        deadratio: 3,
        preempt,
        garp_interval: None,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn two_masters_after_partition_heal_converge_to_the_better() {
    for preempt in [false, true] {
        let a = Ipv4Addr::new(10, 99, 0, 1);
        let b = Ipv4Addr::new(10, 99, 0, 2);
        let c = Ipv4Addr::new(10, 99, 0, 3);
        let mut sim = Sim::new(
            1,
            vec![
                node(a, 0, preempt),
                node(b, 50, preempt),
                node(c, 100, preempt),
            ],
            true,
        );
        sim.delay = (Duration::from_millis(1), Duration::from_millis(2));
        (0..3).for_each(|i| sim.power_on(i));
        sim.run_until(Mono(0) + secs(10)).unwrap();
        assert_eq!(sim.masters(), vec![0], "{}", sim.describe());

        // The master is cut off but keeps running; n1 has the shorter master-down and takes over.
        sim.isolate(0, false);
        sim.run_until(sim.now + secs(10)).unwrap();
        assert_eq!(sim.masters(), vec![0, 1], "{}", sim.describe());

        sim.reconnect(0);
        let settled = sim.now + secs(10);
        sim.run_until(settled).unwrap();
        let m = sim.check_settled(secs(5)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m, 0, "{}", sim.describe());
    }
}

#[test]
fn equal_intervals_are_resolved_by_the_little_endian_source() {
    // 10.99.1.1 beats 10.99.0.2 under UCARP's comparison, whichever node index it has.
    let low = Ipv4Addr::new(10, 99, 1, 1);
    let high = Ipv4Addr::new(10, 99, 0, 2);
    for (order, winner) in [([low, high], 0), ([high, low], 1)] {
        for preempt in [false, true] {
            let mut sim = Sim::new(
                2,
                order.iter().map(|s| node(*s, 20, preempt)).collect(),
                true,
            );
            // Both boot in their own partitions and become MASTER.
            (0..2).for_each(|i| {
                sim.power_on(i);
                sim.isolate(i, false);
            });
            sim.run_until(Mono(0) + secs(5)).unwrap();
            assert_eq!(sim.masters(), vec![0, 1], "{}", sim.describe());

            sim.delay = (Duration::from_millis(1), Duration::from_millis(3));
            sim.heal(false);
            let settled = sim.now + secs(10);
            sim.run_until(settled).unwrap();
            let m = sim.check_settled(secs(5)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m, winner, "{}", sim.describe());
        }
    }
}

#[test]
fn equal_interval_backup_does_not_preempt_an_established_master() {
    // Preemption needs a strictly lower interval: a lower source address alone does not take
    // over from a running master, as in UCARP. The tie-break only settles two masters.
    let low = Ipv4Addr::new(10, 99, 1, 1);
    let high = Ipv4Addr::new(10, 99, 0, 2);
    let mut sim = Sim::new(3, vec![node(high, 20, true), node(low, 20, true)], true);
    sim.power_on(0);
    sim.run_until(Mono(0) + secs(5)).unwrap();
    sim.power_on(1);
    let settled = sim.now + secs(20);
    sim.run_until(settled).unwrap();
    let m = sim
        .check_settled(secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m, 0, "{}", sim.describe());
}

#[test]
fn demoted_master_loses_to_a_preempting_peer_and_wins_back() {
    let a = Ipv4Addr::new(10, 99, 0, 1);
    let b = Ipv4Addr::new(10, 99, 0, 2);
    let mut sim = Sim::new(4, vec![node(a, 0, true), node(b, 100, true)], true);
    sim.delay = (Duration::from_millis(1), Duration::from_millis(1));
    (0..2).for_each(|i| sim.power_on(i));
    sim.run_until(Mono(0) + secs(10)).unwrap();
    assert_eq!(sim.masters(), vec![0]);

    sim.set_demoted(0, true);
    let settled = sim.now + secs(10);
    sim.run_until(settled).unwrap();
    assert_eq!(sim.check_settled(secs(5)), Ok(1), "{}", sim.describe());

    sim.set_demoted(0, false);
    let settled = sim.now + secs(10);
    sim.run_until(settled).unwrap();
    assert_eq!(sim.check_settled(secs(5)), Ok(0), "{}", sim.describe());
}

/// A better backup without preemption whose own fast-mode interval is barely shorter than a third
/// of the master's (3 x 67/256 s = 785.2 ms against 200/256 s = 781.3 ms) must still tolerate
/// ordinary delivery jitter: its master-down time scales with the master's interval too.
#[test]
fn fast_mode_backup_just_slower_than_master_down_stays_backup() {
    let fast = |src, advskew| Params {
        src,
        advbase: 0,
        advskew,
        deadratio: 3,
        preempt: false,
        garp_interval: None,
    };
    let a = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));
    let b = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2));
    let mut sim = Sim::new(5, vec![fast(a, 200), fast(b, 67)], true);
    sim.delay = (Duration::ZERO, Duration::from_millis(5));
    sim.power_on(0);
    sim.run_until(Mono(0) + secs(3)).unwrap();
    assert_eq!(sim.masters(), vec![0]);
    sim.power_on(1);
    sim.run_until(sim.now + secs(60)).unwrap();
    assert_eq!(sim.masters(), vec![0], "{}", sim.describe());
    assert_eq!(sim.transitions, 1, "{}", sim.describe());
}

#[test]
fn rng_is_reproducible() {
    let draw = |seed| {
        let mut r = Rng::new(seed);
        (0..8).map(|_| r.next()).collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    let mut r = Rng::new(1);
    assert!((0..1000).all(|_| r.range(2, 5) >= 2 && r.range(2, 5) <= 5));
}
