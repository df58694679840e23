//! Watching the invariants while faults happen: a writer that records every write the
//! database acknowledged through the VIP (no acknowledged write may ever be missing from the
//! master), and a watch on every server's `read_only` (never two writable at once outside a
//! partition). The fault tests and `cargo xtask chaos` both use them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::mariadb::{VipClient, client_bin};
use crate::wait::mono_ns;

/// Rows the writer inserts, at most; far more than any run needs.
const MAX_WRITES: i64 = 10_000_000;

/// What the writer saw.
#[derive(Clone, Debug, Default)]
pub struct Writes {
    /// Ids whose insert was acknowledged, with the instant (`mono_ns`) of the acknowledgement.
    pub acked: Vec<(i64, u64)>,
    /// Inserts that failed or went unanswered (not acknowledged: they may or may not exist).
    pub failed: u64,
    pub last_error: Option<String>,
}

impl Writes {
    /// Acknowledged ids that `held` (sorted) lacks.
    pub fn missing_from(&self, held: &[i64]) -> Vec<i64> {
        self.acked
            .iter()
            .map(|a| a.0)
            .filter(|id| held.binary_search(id).is_err())
            .collect()
    }
}

/// Inserts numbered rows into `t.rows` through the VIP, one after the other, and records which
/// were acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Writes>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts writing ids from `first` on, each insert bounded by `limit`, a pause of `gap`
    /// between two.
    pub fn start(vip: VipClient, first: i64, gap: Duration, limit: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Writes::default()));
        let (s, w) = (stop.clone(), writes.clone());
        let thread = std::thread::spawn(move || {
            for id in first..first + MAX_WRITES {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let r = vip.insert(id, limit);
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(()) => w.acked.push((id, mono_ns())),
                    Err(e) => {
                        w.failed += 1;
                        w.last_error = Some(format!("{e:#}"));
                    }
                }
                drop(w);
                // Pacing, not a condition: the writer is a load.
                std::thread::sleep(gap);
            }
        });
        Writer {
            stop,
            writes,
            thread: Some(thread),
        }
    }

    /// What it has seen so far.
    pub fn writes(&self) -> Writes {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn acked(&self) -> usize {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .len()
    }

    /// Stops writing (after the insert in progress) and returns what it saw.
    pub fn stop(mut self) -> Writes {
        self.halt();
        self.writes()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One look at one server: `Some(true)` writable, `Some(false)` read-only, `None` no answer.
pub type Sample = (u64, Option<bool>);

/// Pause between two looks at one server's `read_only`. A fence on one server and an
/// opening on another a few milliseconds later must not seem to overlap: a server counts as
/// writable until the look that finds it read-only, so the pause is the watch's resolution.
const LOOK_EVERY: Duration = Duration::from_millis(1);

/// Samples every server's `read_only` on its own thread (over its socket, as root), every
/// [`LOOK_EVERY`], through one long-lived client each, so a stalled server holds up only its
/// own samples.
pub struct WritableWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Changes>>>,
    threads: Vec<JoinHandle<()>>,
}

/// One server's samples, kept where the answer changes: the last sample before a change and
/// the first after it. The stretches they give are the same as with every sample kept (a
/// server counts as writable until the sample that says otherwise), the memory is not, and
/// the pair around each change says how precisely it was seen.
#[derive(Clone, Debug, Default)]
struct Changes {
    kept: Vec<Sample>,
    /// The latest sample, when it repeats the last one kept.
    repeat: Option<Sample>,
    taken: usize,
}

impl Changes {
    fn record(&mut self, s: Sample) {
        self.taken += 1;
        if self.kept.last().is_some_and(|k| k.1 == s.1) {
            self.repeat = Some(s);
        } else {
            self.kept.extend(self.repeat.take());
            self.kept.push(s);
        }
    }

    fn samples(&self) -> Vec<Sample> {
        self.kept
            .iter()
            .chain(self.repeat.iter())
            .copied()
            .collect()
    }
}

impl WritableWatch {
    pub fn start(sockets: Vec<PathBuf>) -> Result<WritableWatch> {
        let every = LOOK_EVERY;
        let client = client_bin()?;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(vec![Changes::default(); sockets.len()]));
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let (stop, samples, client) = (stop.clone(), samples.clone(), client.clone());
                std::thread::spawn(move || sample_loop(i, &client, &socket, every, &stop, &samples))
            })
            .collect();
        Ok(WritableWatch {
            stop,
            samples,
            threads,
        })
    }

    /// Everything seen so far.
    pub fn timeline(&self) -> Timeline {
        let all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        Timeline {
            samples: all.iter().map(Changes::samples).collect(),
            taken: all.iter().map(|c| c.taken).collect(),
            exact: false,
        }
    }

    pub fn stop(mut self) -> Timeline {
        self.halt();
        self.timeline()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WritableWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A client reading statements from its stdin, answering one line each.
struct Probe {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Probe {
    fn open(client: &Path, socket: &Path) -> Result<Probe> {
        let mut child = Command::new(client)
            .args([
                "--no-defaults",
                "--user=root",
                "--batch",
                "--skip-column-names",
            ])
            .arg("--unbuffered")
            .arg(format!("--socket={}", socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a mariadb client")?;
        let stdin = child.stdin.take().context("client stdin")?;
        let stdout = child.stdout.take().context("client stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Probe {
            child,
            stdin,
            lines,
        })
    }

    fn ask(&mut self) -> Result<()> {
        self.stdin.write_all(b"SELECT @@GLOBAL.read_only;\n")?;
        self.stdin.flush()?;
        Ok(())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sample_loop(
    i: usize,
    client: &Path,
    socket: &Path,
    every: Duration,
    stop: &AtomicBool,
    samples: &Mutex<Vec<Changes>>,
) {
    let record = |s: Option<bool>| {
        if let Some(c) = samples.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            c.record((mono_ns(), s));
        }
    };
    let mut probe: Option<Probe> = None;
    let mut waiting = false;
    // Bounded by the owner's stop flag; the count only guards against a runaway loop.
    for _ in 0..u64::MAX / 2 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if probe.is_none() {
            probe = Probe::open(client, socket).ok();
            waiting = false;
        }
        let Some(p) = probe.as_mut() else {
            record(None);
            std::thread::sleep(every.max(Duration::from_millis(20)));
            continue;
        };
        // One question at a time: a stalled server answers them all when it resumes, late.
        if !waiting {
            if p.ask().is_err() {
                probe = None;
                record(None);
                continue;
            }
            waiting = true;
        }
        match p.lines.recv_timeout(every.max(Duration::from_millis(20))) {
            Ok(line) => {
                waiting = false;
                record(match line.trim() {
                    "0" => Some(true),
                    "1" => Some(false),
                    _ => None,
                });
                std::thread::sleep(every);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => record(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                probe = None;
                record(None);
                std::thread::sleep(every.max(Duration::from_millis(20)));
            }
        }
    }
}

/// Who holds the VIP, node by node, from the kernels' own address events: each node's
/// namespace gets a netlink socket subscribed to IPv4 address changes, read on its own thread,
/// so every add and remove is seen with the instant it arrived, however short the stretch.
/// A powered-off node holds nothing (the rig's power cut flushes its addresses).
pub struct VipWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Vec<Sample>>>>,
    threads: Vec<JoinHandle<()>>,
}

impl VipWatch {
    pub fn start(rig: &crate::rig::Rig, vip: std::net::Ipv4Addr) -> Result<VipWatch> {
        let n = rig.node_count();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(vec![Vec::new(); n]));
        let mut threads = Vec::new();
        for i in 0..n {
            let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
            let ns = rig.ns(i).to_string();
            let (stop, samples) = (stop.clone(), samples.clone());
            threads.push(std::thread::spawn(move || {
                let socket = match address_events(&ns) {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                vip_loop(i, &socket, vip, &stop, &samples);
            }));
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .context("the VIP watch thread did not start")??;
        }
        // Subscribed first, then the state now: a change in between shows up as an event
        // after this sample, so the timeline ends right.
        for i in 0..n {
            let t = mono_ns();
            let held = rig.node_has_addr(i, vip)?;
            samples.lock().unwrap_or_else(|e| e.into_inner())[i].insert(0, (t, Some(held)));
        }
        Ok(VipWatch {
            stop,
            samples,
            threads,
        })
    }

    /// Stops watching; every node's last state lasts until now.
    pub fn stop(mut self) -> Timeline {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let now = mono_ns();
        let mut all = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for node in &mut all {
            node.sort_by_key(|s| s.0);
            if let Some(&(_, held)) = node.last() {
                node.push((now, held));
            }
        }
        Timeline {
            exact: true,
            ..Timeline::sampled(all)
        }
    }
}

impl Drop for VipWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A netlink socket in namespace `ns` subscribed to IPv4 address changes, with a receive
/// timeout so its reader notices a stop. The calling thread stays in `ns`.
fn address_events(ns: &str) -> Result<netlink_sys::Socket> {
    crate::netns::enter(ns)?;
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
        .context("netlink socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .add_membership(libc::RTNLGRP_IPV4_IFADDR)
        .context("subscribing to address changes")?;
    crate::netns::recv_timeout(&socket, std::time::Duration::from_millis(100))?;
    Ok(socket)
}

fn vip_loop(
    node: usize,
    socket: &netlink_sys::Socket,
    vip: std::net::Ipv4Addr,
    stop: &AtomicBool,
    samples: &Mutex<Vec<Vec<Sample>>>,
) {
    use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::address::AddressAttribute;
    let mut buf = vec![0u8; 64 * 1024];
    // Asked to stop, it still reads what is queued (a change made just before the stop
    // belongs in the timeline), until a read times out, and at most this many more.
    let mut left_after_stop = 64;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping {
            if left_after_stop == 0 {
                break;
            }
            left_after_stop -= 1;
        }
        let Ok(len) = socket.recv(&mut &mut buf[..], 0) else {
            if stopping {
                break;
            }
            continue;
        };
        let t = mono_ns();
        let mut off = 0;
        // Each message is at least its 16-byte header: bounded by the datagram's length.
        while off + 16 <= len {
            let Ok(header) = NetlinkBuffer::new_checked(&buf[off..len]) else {
                break;
            };
            let size = (header.length() as usize).max(16);
            if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..len]) {
                let change = match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => {
                        Some((true, a))
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
                        Some((false, a))
                    }
                    _ => None,
                };
                if let Some((held, a)) = change {
                    let is_vip = a.attributes.iter().any(|attr| {
                        matches!(attr, AddressAttribute::Local(ip) | AddressAttribute::Address(ip)
                            if *ip == std::net::IpAddr::V4(vip))
                    });
                    if is_vip {
                        samples.lock().unwrap_or_else(|e| e.into_inner())[node]
                            .push((t, Some(held)));
                    }
                }
            }
            off += (size + 3) & !3;
        }
    }
}

/// Every server's samples, in time order per server.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub samples: Vec<Vec<Sample>>,
    /// Samples taken per server (a [`WritableWatch`] keeps only those around changes).
    pub taken: Vec<usize>,
    /// Whether each sample is the instant of a change (a [`VipWatch`]'s kernel events), not a
    /// look that found a state some time after it began.
    pub exact: bool,
}

/// A stretch of time in which more than one server answered that it was writable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwoWriters {
    pub from_ns: u64,
    pub to_ns: u64,
    pub nodes: Vec<usize>,
    /// Whether two servers were writable at once even counting each only up to its last
    /// sample that said so. If not, the stretch lies within the spacing of the samples: one
    /// server's fence and another's opening were seen too coarsely to be put in order.
    pub certain: bool,
}

impl Timeline {
    /// A timeline of looks, kept as they were taken.
    pub fn sampled(samples: Vec<Vec<Sample>>) -> Timeline {
        let taken = samples.iter().map(Vec::len).collect();
        Timeline {
            samples,
            taken,
            exact: false,
        }
    }

    /// The stretches in which two or more servers were writable (or, for a [`VipWatch`]'s
    /// timeline, two or more nodes held the VIP), outside `excused` ranges of
    /// `mono_ns` (partitions). A server counts as writable from a sample that says so until its
    /// next sample, whatever that says; a server that does not answer is not writable (it
    /// accepts nothing while it does not answer).
    pub fn two_writers(&self, excused: &[(u64, u64)]) -> Vec<TwoWriters> {
        // Per writable run: (first sample, last sample saying writable, next sample).
        let mut runs: Vec<(u64, u64, u64, usize)> = Vec::new();
        for (node, samples) in self.samples.iter().enumerate() {
            let mut run: Option<(u64, u64)> = None;
            for &(t, v) in samples {
                match (v == Some(true), run) {
                    (true, None) => run = Some((t, t)),
                    (true, Some((a, _))) => run = Some((a, t)),
                    (false, Some((a, l))) => {
                        runs.push((a, l, t, node));
                        run = None;
                    }
                    (false, None) => {}
                }
            }
            if let Some((a, l)) = run {
                runs.push((a, l, l, node));
            }
        }
        if self.exact {
            for r in &mut runs {
                r.1 = r.2;
            }
        }
        let n = self.samples.len();
        let possible = sweep(n, runs.iter().map(|r| (r.0, r.2, r.3)), excused);
        let certain = sweep(n, runs.iter().map(|r| (r.0, r.1, r.3)), excused);
        possible
            .into_iter()
            .map(|mut w| {
                w.certain = certain
                    .iter()
                    .any(|c| c.from_ns < w.to_ns && w.from_ns < c.to_ns);
                w
            })
            .collect()
    }

    /// Samples taken, per server.
    pub fn counts(&self) -> Vec<usize> {
        self.taken.clone()
    }
}

/// The stretches in which two or more of `spans` (`[from, to)`, node) overlap, outside
/// `excused`: a sweep over the spans' ends (and the excused ranges' ends, so that an interval
/// is either wholly excused or not), linear after the sort, for hours of samples.
fn sweep(
    nodes: usize,
    spans: impl Iterator<Item = (u64, u64, usize)>,
    excused: &[(u64, u64)],
) -> Vec<TwoWriters> {
    let mut events: Vec<(u64, i32, usize)> = spans
        .filter(|s| s.0 < s.1)
        .flat_map(|s| [(s.0, 1, s.2), (s.1, -1, s.2)])
        .chain(excused.iter().flat_map(|&(x, y)| [(x, 0, 0), (y, 0, 0)]))
        .collect();
    // At one instant, ends before starts: [a, b) and [b, c) do not overlap.
    events.sort_unstable();
    let mut active = vec![0i32; nodes];
    let mut out: Vec<TwoWriters> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let a = events[i].0;
        while i < events.len() && events[i].0 == a {
            if let Some(n) = active.get_mut(events[i].2) {
                *n += events[i].1;
            }
            i += 1;
        }
        let Some(&(b, _, _)) = events.get(i) else {
            break;
        };
        let nodes: Vec<usize> = (0..active.len()).filter(|&n| active[n] > 0).collect();
        if nodes.len() < 2 || excused.iter().any(|&(x, y)| a >= x && b <= y) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.to_ns == a && last.nodes == nodes => last.to_ns = b,
            _ => out.push(TwoWriters {
                from_ns: a,
                to_ns: b,
                nodes,
                certain: false,
            }),
        }
    }
    out
}

/// A watch on a cluster's servers: their sockets.
pub fn sockets(servers: &[&crate::mariadb::MariaDb]) -> Vec<PathBuf> {
    servers.iter().map(|s| s.socket().to_path_buf()).collect()
}

/// How long ago (`mono_ns`) an instant was.
pub fn since(t_ns: u64) -> Duration {
    Duration::from_nanos(mono_ns().saturating_sub(t_ns))
}

/// Waits for the writer to have `n` more acknowledged writes than `before`, for at most
/// `limit`.
pub fn wait_more_acks(w: &Writer, before: usize, n: usize, limit: Duration) -> Result<usize> {
    crate::wait::wait_until(limit, &format!("{n} more writes acknowledged"), || {
        w.acked() >= before + n
    })?;
    Ok(w.acked())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_writable_stretches_are_found_and_excused() {
        let t = Timeline::sampled(vec![
            vec![(0, Some(true)), (10, Some(true)), (20, Some(false))],
            vec![(5, Some(false)), (15, Some(true)), (25, Some(false))],
        ]);
        assert_eq!(
            t.two_writers(&[]),
            vec![TwoWriters {
                from_ns: 15,
                to_ns: 20,
                nodes: vec![0, 1],
                // Node 0 said writable last at 10, node 1 first at 15.
                certain: false,
            }]
        );
        assert!(t.two_writers(&[(14, 21)]).is_empty());
        // No answer is not writable.
        let t = Timeline::sampled(vec![
            vec![(0, Some(true)), (30, Some(false))],
            vec![(5, None), (10, None), (40, None)],
        ]);
        assert!(t.two_writers(&[]).is_empty());
    }

    #[test]
    fn a_stretch_both_servers_confirmed_is_certain() {
        let t = Timeline::sampled(vec![
            vec![(0, Some(true)), (18, Some(true)), (20, Some(false))],
            vec![
                (5, Some(false)),
                (15, Some(true)),
                (17, Some(true)),
                (25, Some(false)),
            ],
        ]);
        let both = t.two_writers(&[]);
        assert_eq!(both.len(), 1);
        assert!(both[0].certain, "{both:?}");
    }

    #[test]
    fn keeping_only_changes_finds_the_same_stretches() {
        let all = vec![
            (0, Some(false)),
            (5, Some(true)),
            (10, Some(true)),
            (15, Some(true)),
            (20, None),
            (25, Some(false)),
            (30, Some(false)),
        ];
        let mut c = Changes::default();
        for &s in &all {
            c.record(s);
        }
        assert_eq!(c.taken, all.len());
        assert_eq!(
            c.samples(),
            vec![
                (0, Some(false)),
                (5, Some(true)),
                (15, Some(true)),
                (20, None),
                (25, Some(false)),
                (30, Some(false))
            ]
        );
        let other = vec![(0, Some(true)), (17, Some(false))];
        let kept = Timeline::sampled(vec![c.samples(), other.clone()]);
        let full = Timeline::sampled(vec![all, other]);
        assert_eq!(kept.two_writers(&[]), full.two_writers(&[]));
    }
}
