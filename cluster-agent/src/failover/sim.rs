//! A seeded simulation of a whole cluster: two or three nodes, each running the real
//! [`Coordinator`] (with its election machine) against a model of its MariaDB server, a client
//! that writes through the VIP (and sometimes straight to a node) and records every write that
//! was acknowledged, and a random schedule of faults. Every seed checks:
//!
//! - **I2**: after every event, at most one server accepts writes (up and not read-only; a
//!   stalled one counts), except while a partition lasts and shortly after it heals;
//! - **I1**: after everything has healed and settled, exactly one server is writable, it is the
//!   election's master, and it holds every write that was ever acknowledged (writes
//!   acknowledged around a partition excepted).
//!
//! With a quorum lease (`[quorum]`, [`Sim::quorum`]) neither excuse holds: the lease exists so
//! that a partition cannot make two writers, so I2 holds at every instant and I1 for every
//! acknowledged write, partitions included (and when diverged histories leave no writer, one
//! of them still holds every acknowledged write). etcd is modelled with its leader key and
//! leases, on the side of every partition that is not cut off, and each agent runs the quorum
//! task of `quorum.rs` request by request, with a timeout on each.
//!
//! The model of the server follows MariaDB 10.11 with the settings `db bootstrap` writes:
//! GTID strict mode in one domain, binary log with `log_slave_updates`, semi-sync with the
//! AFTER_SYNC wait point, `wait_no_slave=OFF`, a timeout after which the master goes on alone
//! (counting each such commit in `no_tx`), replicas that acknowledge on receipt and apply in
//! order, relay logs that vanish when the receiving thread restarts, crash recovery that
//! truncates transactions never acknowledged, `read_only` at start-up, and fencing that ends
//! client sessions (a commit still waiting for its acknowledgement is then never acknowledged).
//!
//! Faults: power cut and return of any node, kill -9 and restart of an agent, kill and restart
//! of a server, stalls (SIGSTOP) of an agent or of a server for up to several seconds (longer
//! than the semi-sync timeout and the master-down time), partitions, graceful stops and
//! switchovers, lossy and slow adverts. Two faults the design cannot tell from a power cut are
//! not combined: a stalled server whose agent is also dead or stalled. With a quorum, also
//! etcd's faults (slow answers, a lost leader, a node cut off from etcd alone), and half the
//! partitions leave the clients on the cut-off side; a writable server that nothing can close
//! (its agent dead or stalled, or itself stalled) is not combined with a partition, as the
//! lease cannot tell it from a powered-off one either.
//!
//! Replay a failure with its trace:
//! `FAILOVER_SIM_SEED=<seed> cargo test -p cluster-agent failover::sim::replay -- --ignored --nocapture`
//! (with `FAILOVER_SIM_QUORUM=1` for a seed of the quorum run).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use super::*;
use crate::carp::replay::ReplayGuard;
use crate::carp::sim::Rng;
use crate::carp::wire::Counter;
use crate::quorum::QuorumError;

/// Seeds per run of [`random_clusters_keep_every_acknowledged_write`]; `FAILOVER_SIM_RUNS`
/// overrides it.
const RUNS: u64 = 10_000;
/// Seeds per run of [`quorum_clusters_never_have_two_writers_even_across_partitions`]: each
/// costs more (etcd's traffic), and the test shares the machine with the one above.
const QUORUM_RUNS: u64 = 10_000;
const MAX_STEPS: u64 = 3_000_000;
const TRACE_TAIL: usize = 200;

const CHECK_INTERVAL: Duration = Duration::from_millis(200);
const OP_TIMEOUT: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a master keeps a silently vanished replica as a semi-sync client (TCP).
const TCP_TIMEOUT: Duration = Duration::from_secs(15);
/// The quorum task's pause after a failed request, and between tries for a key it wants
/// (`quorum.rs`'s `ACQUIRE_RETRY`).
const ACQUIRE_RETRY: Duration = Duration::from_millis(100);
/// The etcd members in the agents' `--quorum-endpoint` lists.
const ETCD_MEMBERS: usize = 3;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One transaction: who wrote it (server id), its sequence number in domain 0, and the client
/// write it carries, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tx {
    server: u32,
    seq: u64,
    write: u64,
}

#[derive(Clone, Debug)]
enum Work {
    Commit {
        write: u64,
    },
    Repl {
        from: usize,
        tx: Tx,
        link: u64,
    },
    Ack {
        seq: u64,
    },
    Apply,
    /// A statement an agent sent before the server stalled: it runs when the server resumes.
    Fence,
    Disconnect {
        replica: usize,
    },
}

struct Server {
    id: u32,
    up: bool,
    stalled: bool,
    /// Writable and stalled when a partition healed: it is a leftover of the partition until
    /// it resumes and is fenced (its writes then are the partition's, not the cluster's).
    partition_leftover: bool,
    read_only: bool,
    log: Vec<Tx>,
    /// Highest sequence per origin in `log`, kept alongside for cheap GTID states.
    origins: BTreeMap<u32, u64>,
    source: Option<usize>,
    io: bool,
    sql: bool,
    relay: VecDeque<Tx>,
    received: Option<Tx>,
    connected: Option<usize>,
    link: u64,
    /// The stream is ordered: nothing arrives before what was sent earlier.
    last_arrival: Mono,
    io_error: bool,
    apply_scheduled: bool,
    semi_enabled: bool,
    semi_on: bool,
    no_tx: u64,
    pending: Vec<(Tx, Mono)>,
    /// Replicas this server streams to, and when a silently lost one is dropped.
    clients: BTreeMap<usize, Option<Mono>>,
    deferred: VecDeque<Work>,
    timeout: Duration,
    /// The timeout in the server's configuration: a restart undoes `SET GLOBAL`.
    configured_timeout: Duration,
}

impl Server {
    fn new(id: u32, timeout: Duration) -> Server {
        Server {
            id,
            up: true,
            stalled: false,
            partition_leftover: false,
            read_only: true,
            log: Vec::new(),
            origins: BTreeMap::new(),
            source: None,
            io: false,
            sql: false,
            relay: VecDeque::new(),
            received: None,
            connected: None,
            link: 0,
            last_arrival: Mono(0),
            io_error: false,
            apply_scheduled: false,
            semi_enabled: false,
            semi_on: false,
            no_tx: 0,
            pending: Vec::new(),
            clients: BTreeMap::new(),
            deferred: VecDeque::new(),
            timeout,
            configured_timeout: timeout,
        }
    }

    fn last_seq(&self) -> u64 {
        self.log.last().map_or(0, |t| t.seq)
    }

    fn append(&mut self, tx: Tx) {
        self.log.push(tx);
        let e = self.origins.entry(tx.server).or_insert(0);
        *e = (*e).max(tx.seq);
    }

    fn logged(&self) -> Gtids {
        gtids(self.origins.iter().map(|(s, q)| (*s, *q)))
    }

    fn received_gtids(&self) -> Gtids {
        match self.received {
            Some(t) => gtids([(t.server, t.seq)]),
            None => Gtids::default(),
        }
    }

    fn holds(&self, tx: Tx) -> bool {
        self.origins.get(&tx.server).is_some_and(|s| *s >= tx.seq)
    }

    fn accepts_work(&self) -> bool {
        self.up && !self.stalled
    }
}

fn gtids(it: impl IntoIterator<Item = (u32, u64)>) -> Gtids {
    Gtids::from_mariadb(it.into_iter().map(|(s, q)| (0, s, q)))
}

/// The agent process of a node.
struct AgentProc {
    coord: Coordinator,
    /// Distinguishes this run from earlier ones: late answers to a dead run are dropped.
    run: u64,
    stalled: bool,
    inbox: VecDeque<Input>,
    /// The database operation in flight and what it waits for.
    op: Option<PendingOp>,
    watch: Option<Ipv4Addr>,
    obs_scheduled: bool,
    stopping: bool,
    /// The state and skew last traced.
    seen: (State, u8),
    /// UCARP's advert counter and the guard against replays, as the runtime keeps them: both
    /// live and die with the process.
    counter: Counter,
    guard: ReplayGuard,
    /// The quorum task, with a quorum: it lives and dies with the process.
    lease: Option<LeaseTask>,
}

#[derive(Clone, Debug)]
enum PendingOp {
    /// Completes at a fixed time with an outcome computed then.
    At(DbOp),
    /// Waits until the local server has applied `target` (catch-up) or drained (promote).
    CatchUp { target: Gtids, deadline: Mono },
    Drain {
        target: Gtids,
        recheck: Vec<Ipv4Addr>,
        deadline: Mono,
    },
}

struct Node {
    addr: Ipv4Addr,
    params: Params,
    powered: bool,
    isolated: bool,
    /// Cut off from its peers and from etcd, but not from the clients: the split brain that
    /// the quorum lease and the semi-sync timeout raised to its TTL are for.
    cut: bool,
    vip: bool,
    /// The XDP program's role; `None` while no agent runs (no program attached: no fencing).
    xdp_master: Option<bool>,
    agent: Option<AgentProc>,
    server: Server,
    /// Cut off from etcd alone (its route to the etcd members), still talking to its peers.
    etcd_cut: bool,
}

/// The cluster's leader key in etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LeaderKey {
    node: usize,
    /// The agent run that took it: the key's value names the process, so a restarted agent
    /// knows a key its earlier run left.
    run: u64,
    lease: i64,
    /// The key's creation revision.
    epoch: i64,
}

/// What the quorum task asks etcd, one request at a time.
#[derive(Clone, Copy, Debug)]
enum EtcdOp {
    Get,
    Grant,
    /// The transaction that creates the key under `lease` unless it exists.
    Create {
        lease: i64,
    },
    KeepAlive {
        lease: i64,
    },
    Revoke {
        lease: i64,
    },
}

#[derive(Clone, Copy, Debug)]
enum EtcdReply {
    Key(Option<LeaderKey>),
    Granted(i64),
    /// The key's creation revision when the transaction succeeded.
    Created(Option<i64>),
    /// The lease's TTL after the renewal, in seconds: 0 when etcd no longer has it.
    Ttl(i64),
    Revoked,
}

/// etcd as one linearizable store: its members live with the nodes that are not cut off.
struct Etcd {
    key: Option<LeaderKey>,
    /// Leases still alive and when each runs out.
    leases: BTreeMap<i64, Mono>,
    next_lease: i64,
    revision: i64,
    /// Without a leader until then: every request fails at once and no lease runs out; the
    /// new leader gives every lease a whole TTL again.
    down_until: Option<Mono>,
    /// Slow (a disk that stalls fsync, elections) until then: each hop of a request takes up
    /// to this much longer, so some outlast the task's timeout.
    slow: Option<(Mono, Duration)>,
}

/// The quorum task of one agent run, as `quorum.rs` runs it: a loop of steps, each one or a
/// few requests with a timeout each, then a wait that a new wish cuts short.
struct LeaseTask {
    /// The coordinator's wish and how often it was sent: like a watch channel, every send
    /// wakes the task, and a step sees the wish at its start.
    want: bool,
    version: u64,
    seen: u64,
    /// The lease and the key's creation revision, while this run holds the key.
    held: Option<(i64, i64)>,
    /// The keep-alive stream is open; opening it is a renewal round trip of its own.
    keeper: bool,
    /// The last report, so an unchanged state is not sent again.
    last: Option<LeaseReport>,
    state: TaskState,
    next_req: u64,
    /// Bumped to cancel the pending wait.
    timer: u64,
    /// The member the session talks to: one at a time, the next after a failure.
    endpoint: usize,
    /// What reached the stopped process: taken in when it resumes.
    queued: Vec<LeaseEv>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskState {
    /// Between steps: the next begins when the timer fires or the wish changes.
    Waiting,
    /// After a failure: the next step begins when the timer fires, whatever the wish does.
    Backoff,
    Asking {
        req: u64,
        step: Step,
    },
}

/// Where a step is, and what it does with the answer it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Look,
    AcquireGet,
    /// Releasing a key this node's earlier run left.
    RevokeOld,
    Grant {
        sent: Mono,
    },
    Create {
        sent: Mono,
        lease: i64,
    },
    /// Another node was quicker: giving the unused lease back.
    RevokeLost,
    OpenKeeper {
        lease: i64,
        epoch: i64,
    },
    Renew {
        sent: Mono,
        lease: i64,
        epoch: i64,
    },
    Release,
}

#[derive(Clone, Debug)]
enum LeaseEv {
    Reply {
        req: u64,
        reply: Result<EtcdReply, String>,
    },
    Timeout {
        req: u64,
    },
    Timer {
        gen_: u64,
    },
}

#[derive(Clone, Debug)]
enum Ev {
    Advert {
        to: usize,
        src: Ipv4Addr,
        advbase: u8,
        advskew: u8,
        counter: u64,
        /// False for junk: a wrong HMAC, which authentication drops before anything else.
        authentic: bool,
    },
    Work {
        node: usize,
        work: Work,
    },
    OpDone {
        node: usize,
        run: u64,
    },
    VipDone {
        node: usize,
        run: u64,
        add: bool,
    },
    /// Another node's gratuitous ARP for the VIP reaches `to`.
    Claimed {
        to: usize,
    },
    /// The connections on the VIP have ended (or never do, when this comes after the drain
    /// limit and the coordinator has moved on).
    Drained {
        node: usize,
        run: u64,
    },
    Observe {
        node: usize,
        run: u64,
    },
    Observed {
        node: usize,
        run: u64,
        obs: Observation,
    },
    PeersSeen {
        node: usize,
        run: u64,
        at: Mono,
        peers: Vec<PeerSeen>,
        own: Option<Gtids>,
    },
    ClientWrite,
    ClientAck {
        node: usize,
        write: u64,
        /// A server left writable by a partition sent it (a fence may land before it arrives).
        leftover: bool,
    },
    SemiTimeout {
        node: usize,
    },
    /// A quorum task's request reaches etcd.
    EtcdRequest {
        node: usize,
        run: u64,
        req: u64,
        op: EtcdOp,
    },
    /// Something for a quorum task: etcd's answer, a timeout, its timer.
    Lease {
        node: usize,
        run: u64,
        ev: LeaseEv,
    },
    Chaos,
    Later(Fault_),
}

/// A fault's second half, scheduled when the first happens.
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
enum Fault_ {
    PowerOn(usize),
    StartAgent(usize),
    StartServer(usize),
    ResumeServer(usize),
    ResumeAgent(usize),
    Heal(usize),
    EtcdBack,
    EtcdReach(usize),
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: Mono,
    nodes: Vec<Node>,
    events: BinaryHeap<Reverse<(Mono, u64, usize)>>,
    store: Vec<Option<Ev>>,
    /// Slots of `store` whose event has run, for reuse.
    free: Vec<usize>,
    seq: u64,
    loss: u64,
    delay: (Duration, Duration),
    chaos_until: Option<Mono>,
    next_run: u64,
    next_write: u64,
    /// The node the client's ARP entry for the VIP points at.
    client_arp: Option<usize>,
    /// Acknowledged writes: id -> (node that acknowledged, time, exempt).
    acked: BTreeMap<u64, (usize, Mono, bool)>,
    writes_sent: u64,
    /// Until when two writers are excused (a partition and its aftermath).
    excused_until: Option<Mono>,
    partitions: u64,
    /// The last adverts on the wire, for the adversary to replay.
    captured: VecDeque<(Ipv4Addr, u8, u8, u64)>,
    replays_sent: u64,
    replays_dropped: u64,
    junk_sent: u64,
    steps: u64,
    trace: Option<Vec<String>>,
    /// Trace every advert too (`FAILOVER_SIM_ADVERTS=1` with a replay).
    trace_adverts: bool,
    unit: Duration,
    /// The quorum lease's TTL, when the cluster runs with `[quorum]`.
    quorum: Option<Duration>,
    etcd: Etcd,
}

/// The `[quorum]` TTL `config` gives these params by default: the whole seconds of the node's
/// own master-down time, at least 5 s.
fn default_ttl(p: &Params) -> Duration {
    crate::config::default_ttl(crate::config::master_down(
        p.advbase.into(),
        p.advskew.into(),
        p.deadratio.into(),
    ))
}

/// The shortest TTL `config` accepts: its margins, in time, are the thinnest.
const MIN_TTL: Duration = Duration::from_secs(3);

impl Sim {
    fn new(seed: u64, trace: bool, quorum: bool) -> Sim {
        let mut rng = Rng::new(seed ^ 0xfa11_0000_5eed_0001);
        let n = rng.range(2, 3) as usize;
        let fast = rng.chance(3, 10);
        let timeout = ms(rng.range(1000, 4000));
        let preempt_all = rng.chance(1, 2);
        let mut nodes = Vec::new();
        for i in 0..n {
            let addr = Ipv4Addr::new(10, 0, 0, 1 + i as u8);
            let (advbase, advskew, deadratio) = if fast {
                (0, 1 + 2 * i as u8, 3)
            } else {
                (1, (i as u8) * 100, 3)
            };
            let params = Params {
                src: addr.into(),
                advbase,
                advskew,
                deadratio,
                preempt: preempt_all || (i == 0 && rng.chance(1, 2)),
                garp_interval: None,
            };
            nodes.push(Node {
                addr,
                params,
                powered: true,
                isolated: false,
                cut: false,
                vip: false,
                xdp_master: None,
                agent: None,
                server: Server::new(i as u32 + 1, timeout),
                etcd_cut: false,
            });
        }
        let unit = {
            let mut m = Machine::new(nodes[n - 1].params, Mono(0));
            m.handle(Mono(0), machine::Input::SetDemoted(true));
            m.master_down()
        };
        // One setting for the whole cluster, as an operator would write it: the default, or
        // the shortest allowed.
        let quorum = quorum
            .then(|| match rng.chance(1, 2) {
                true => nodes.iter().map(|n| default_ttl(&n.params)).max(),
                false => Some(MIN_TTL),
            })
            .flatten();
        Sim {
            seed,
            captured: VecDeque::new(),
            replays_sent: 0,
            replays_dropped: 0,
            junk_sent: 0,
            rng,
            now: Mono(0),
            nodes,
            events: BinaryHeap::new(),
            store: Vec::new(),
            free: Vec::new(),
            seq: 0,
            loss: 0,
            delay: (ms(0), ms(1)),
            chaos_until: None,
            next_run: 0,
            next_write: 0,
            client_arp: None,
            acked: BTreeMap::new(),
            writes_sent: 0,
            excused_until: None,
            partitions: 0,
            steps: 0,
            trace_adverts: trace && std::env::var_os("FAILOVER_SIM_ADVERTS").is_some(),
            trace: trace.then(Vec::new),
            unit,
            quorum,
            etcd: Etcd {
                key: None,
                leases: BTreeMap::new(),
                next_lease: 1,
                revision: 1,
                down_until: None,
                slow: None,
            },
        }
    }

    fn log(&mut self, what: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{:>10.4}s {}", self.now.0 as f64 / 1e9, what()));
        }
    }

    fn at(&mut self, t: Mono, ev: Ev) {
        self.seq += 1;
        let idx = match self.free.pop() {
            Some(i) => {
                self.store[i] = Some(ev);
                i
            }
            None => {
                self.store.push(Some(ev));
                self.store.len() - 1
            }
        };
        self.events.push(Reverse((t, self.seq, idx)));
    }

    fn after(&mut self, d: Duration, ev: Ev) {
        let t = self.now + d;
        self.at(t, ev);
    }

    fn net_delay(&mut self) -> Duration {
        self.rng.duration(self.delay.0, self.delay.1)
    }

    /// Whether two nodes can talk.
    fn linked(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.nodes[a], &self.nodes[b]);
        x.powered && y.powered && !x.isolated && !y.isolated && !x.cut && !y.cut
    }

    fn client_reaches(&self, n: usize) -> bool {
        self.nodes[n].powered && !self.nodes[n].isolated
    }

    fn index_of(&self, addr: Ipv4Addr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    // ----- agents -------------------------------------------------------------------------

    fn start_agent(&mut self, i: usize) {
        if !self.nodes[i].powered || self.nodes[i].agent.is_some() {
            return;
        }
        self.next_run += 1;
        let run = self.next_run;
        let peers: Vec<Ipv4Addr> = self.nodes.iter().map(|n| n.addr).collect();
        let cfg = Config {
            carp: self.nodes[i].params,
            db: Some(DbPolicy {
                own: self.nodes[i].addr,
                peers,
                vip_first: false,
                retry: ms(1000),
                margin: ms(100),
                unreachable_after: ms(1000),
                max_lag: Duration::from_secs(5),
            }),
            quorum: self.quorum,
        };
        // Start-up removes a VIP left by an earlier run; XDP attaches as BACKUP.
        self.nodes[i].vip = false;
        self.nodes[i].xdp_master = Some(false);
        self.nodes[i].agent = Some(AgentProc {
            coord: Coordinator::new(cfg, self.now),
            run,
            stalled: false,
            inbox: VecDeque::new(),
            op: None,
            watch: None,
            obs_scheduled: false,
            stopping: false,
            seen: (State::Backup, 0),
            counter: Counter::default(),
            // The agent's guard is bigger; nothing in a run comes near either size.
            guard: ReplayGuard::new(4096),
            lease: self.quorum.map(|_| LeaseTask {
                want: false,
                version: 0,
                seen: 0,
                held: None,
                keeper: false,
                last: None,
                state: TaskState::Waiting,
                next_req: 0,
                timer: 0,
                endpoint: 0,
                queued: Vec::new(),
            }),
        });
        self.log(|| format!("n{i} agent starts (run {run})"));
        self.after(CHECK_INTERVAL, Ev::Observe { node: i, run });
        if let Some(a) = self.nodes[i].agent.as_mut() {
            a.obs_scheduled = true;
        }
        // The quorum task starts with the process and looks at the key at once.
        self.lease_step(i);
        self.effects(i);
    }

    fn kill_agent(&mut self, i: usize) {
        if self.nodes[i].agent.take().is_some() {
            // The XDP link goes with the process; the VIP stays on the interface.
            self.nodes[i].xdp_master = None;
            self.log(|| format!("n{i} agent dies"));
        }
    }

    /// Delivers an input to node `i`'s agent (queued while it is stalled).
    fn input(&mut self, i: usize, input: Input) {
        let now = self.now;
        let Some(a) = self.nodes[i].agent.as_mut() else {
            return;
        };
        if a.stalled {
            a.inbox.push_back(input);
            return;
        }
        a.coord.handle(now, input);
        self.effects(i);
    }

    fn effects(&mut self, i: usize) {
        if let Some(a) = self.nodes[i].agent.as_mut() {
            let now = (a.coord.state(), a.coord.machine().effective_skew());
            if now != a.seen {
                a.seen = now;
                self.log(|| format!("n{i} is {} (skew {})", now.0, now.1));
            }
        }
        loop {
            let Some(a) = self.nodes[i].agent.as_mut() else {
                return;
            };
            let Some(e) = a.coord.poll_effect() else {
                break;
            };
            let run = a.run;
            match e {
                Effect::Advert { advbase, advskew } => {
                    let random = self.rng.next();
                    let counter = self.nodes[i].agent.as_mut().map_or(0, |a| {
                        let c = a.counter.next(random);
                        a.guard.remember_sent(c);
                        c
                    });
                    if self.trace_adverts {
                        self.log(|| format!("n{i} advert {advbase}/{advskew}"));
                    }
                    let src = self.nodes[i].addr;
                    // What an adversary on the segment may capture and send again.
                    self.captured.push_back((src, advbase, advskew, counter));
                    if self.captured.len() > 64 {
                        self.captured.pop_front();
                    }
                    for to in 0..self.nodes.len() {
                        if to != i && self.linked(i, to) && !self.rng.chance(self.loss, 1000) {
                            let d = self.net_delay();
                            self.after(
                                d,
                                Ev::Advert {
                                    to,
                                    src,
                                    advbase,
                                    advskew,
                                    counter,
                                    authentic: true,
                                },
                            );
                        }
                    }
                }
                Effect::Garp => {
                    if self.client_reaches(i) && self.nodes[i].vip {
                        self.client_arp = Some(i);
                    }
                    // Peers that hold connection requests see the announcement too.
                    for to in 0..self.nodes.len() {
                        if to != i && self.linked(i, to) {
                            let d = self.net_delay();
                            self.after(d, Ev::Claimed { to });
                        }
                    }
                }
                Effect::Vip(add) => {
                    let d = self.rng.duration(ms(0), ms(2));
                    self.after(d, Ev::VipDone { node: i, run, add });
                }
                Effect::XdpRole(m) => self.nodes[i].xdp_master = Some(m),
                Effect::Hook(_) => {}
                Effect::Db(op) => {
                    self.log(|| format!("n{i} op {op:?}"));
                    self.start_op(i, op);
                }
                Effect::Watch(m) => {
                    if let Some(a) = self.nodes[i].agent.as_mut() {
                        a.watch = m;
                    }
                }
                // Its result is taken at the prepare step (see `start_op`).
                Effect::CheckHost { .. } => {}
                Effect::Drain => {
                    // Now and then later than the limit: both ends of the drain are exercised.
                    let d = self.rng.duration(ms(0), super::DRAIN_MAX + ms(100));
                    self.after(d, Ev::Drained { node: i, run });
                }
                Effect::Lease(want) => self.lease_want(i, want),
                // Held connection requests are the clients' business, not the cluster's.
                Effect::HandOffHeld | Effect::EndHold => {}
            }
        }
        let stopping_done = self.nodes[i]
            .agent
            .as_ref()
            .is_some_and(|a| a.stopping && a.coord.finished());
        if stopping_done {
            self.log(|| format!("n{i} agent exits after a graceful stop"));
            self.kill_agent(i);
        }
    }

    fn agent_timer(&self) -> Option<(Mono, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let a = n.agent.as_ref().filter(|a| !a.stalled)?;
                Some((a.coord.poll_timeout()?, i))
            })
            .min()
    }

    // ----- database operations ------------------------------------------------------------

    fn start_op(&mut self, i: usize, mut op: DbOp) {
        let run = self.nodes[i].agent.as_ref().map_or(0, |a| a.run);
        let mut latency = self.rng.duration(ms(1), ms(4));
        // A host check begun before the prepare step (while the master's advert was overdue)
        // that finds the host cut off or powered off now stands for the whole step: the peer
        // is reported unreachable even if it comes back before the step ends.
        if let DbOp::Prepare { peers, .. } = &mut op {
            for p in peers.iter_mut().filter(|p| p.checked_since.is_some()) {
                if self.index_of(p.addr).is_none_or(|j| !self.linked(i, j)) {
                    p.skip = true;
                }
            }
        }
        match &op {
            DbOp::Prepare {
                peers,
                ready_once_silent,
                ..
            } => {
                let unanswered = |sim: &Sim, addr: Ipv4Addr| {
                    sim.index_of(addr)
                        .is_none_or(|j| !(sim.linked(i, j) && sim.nodes[j].server.accepts_work()))
                };
                let slow = peers.iter().any(|p| !p.skip && unanswered(self, p.addr));
                // Receiving stops early in a step that waits for a peer, unless the master
                // answers, as the agent's drain does then.
                let silent = ready_once_silent.is_some_and(|m| {
                    slow && (unanswered(self, m) || peers.iter().any(|p| p.addr == m && p.skip))
                });
                if silent && self.nodes[i].server.accepts_work() {
                    self.log(|| format!("n{i} drains while it prepares"));
                    self.stop_io(i);
                }
                if slow {
                    latency += PROBE_TIMEOUT;
                }
            }
            _ => {
                if self.nodes[i].server.up && self.nodes[i].server.stalled {
                    latency = OP_TIMEOUT;
                }
            }
        }
        if let Some(a) = self.nodes[i].agent.as_mut() {
            a.op = Some(PendingOp::At(op));
        }
        self.after(latency, Ev::OpDone { node: i, run });
    }

    fn finish_op(&mut self, i: usize, run: u64) {
        let Some(a) = self.nodes[i].agent.as_mut().filter(|a| a.run == run) else {
            return;
        };
        let Some(PendingOp::At(op)) = a.op.clone() else {
            return;
        };
        let outcome = self.execute(i, op);
        if let Some(outcome) = outcome {
            if let Some(a) = self.nodes[i].agent.as_mut() {
                a.op = None;
            }
            if let Some(db) = self.nodes[i]
                .agent
                .as_ref()
                .and_then(|a| a.coord.db.as_ref())
            {
                let (z, l, c, m) = (
                    db.current.zombie(),
                    db.took_over_live,
                    db.current.verdict(),
                    db.current.master(),
                );
                let dbg = format!("{:?}", db.current);
                self.log(|| {
                    format!("n{i} ctx zombie {z} live {l} current {c:?} followed {m:?} {dbg}")
                });
            }
            self.log(|| format!("n{i} outcome {outcome:?}"));
            self.input(i, Input::DbDone(outcome));
        }
    }

    /// Carries out `op` now; `None` when it keeps waiting (catch-up, drain).
    fn execute(&mut self, i: usize, op: DbOp) -> Option<DbOutcome> {
        let s = &self.nodes[i].server;
        let local_err = if !s.up {
            Some("connection refused".to_string())
        } else if s.stalled {
            Some("timed out".to_string())
        } else {
            None
        };
        match op {
            DbOp::Fence => Some(DbOutcome::Fenced(match local_err {
                Some(e) => {
                    if self.nodes[i].server.up {
                        // Sent: it runs when the server resumes.
                        self.nodes[i].server.deferred.push_back(Work::Fence);
                    }
                    Err(e)
                }
                None => {
                    self.fence(i);
                    Ok(())
                }
            })),
            DbOp::Follow { master } => {
                let r = match (local_err, self.index_of(master)) {
                    (Some(e), _) => Err(FollowError::Failed(e)),
                    (None, Some(m))
                        if self.nodes[m].server.read_only
                            && self.linked(i, m)
                            && self.nodes[m].server.accepts_work() =>
                    {
                        Err(FollowError::Failed(
                            "the master is not open for writes yet".into(),
                        ))
                    }
                    (None, Some(m)) => self.follow(i, m),
                    (None, None) => Err(FollowError::Failed("unknown master".into())),
                };
                Some(DbOutcome::Followed(r))
            }
            DbOp::Prepare { peers, fence, .. } => {
                let own = match local_err {
                    Some(e) => Err(e),
                    None => Ok(self.holdings(i)),
                };
                let mut reports = Vec::new();
                for p in peers {
                    let result = match self.index_of(p.addr) {
                        Some(j)
                            if !p.skip
                                && self.linked(i, j)
                                && self.nodes[j].server.accepts_work() =>
                        {
                            let writable = !self.nodes[j].server.read_only;
                            if writable && fence {
                                self.log(|| format!("n{i} fences peer n{j}"));
                                self.fence(j);
                            }
                            Ok(PeerState {
                                holdings: self.holdings(j),
                                writable: writable && !fence,
                            })
                        }
                        Some(j) if !p.skip && self.linked(i, j) && !self.nodes[j].server.up => {
                            Err(Fault::Refused("refused".into()))
                        }
                        Some(j) if !p.skip && self.linked(i, j) => {
                            Err(Fault::Stalled("host answers, server does not".into()))
                        }
                        _ => Err(Fault::Other("unreachable".into())),
                    };
                    reports.push(PeerReport {
                        addr: p.addr,
                        result,
                    });
                }
                Some(DbOutcome::Prepared {
                    own,
                    peers: reports,
                    ready: Vec::new(),
                })
            }
            DbOp::Resume => Some(DbOutcome::Resumed(match local_err {
                Some(e) => Err(e),
                None => {
                    let s = &mut self.nodes[i].server;
                    if s.source.is_some() && !s.io {
                        s.io = true;
                        s.sql = true;
                        self.reconcile();
                    }
                    Ok(())
                }
            })),
            DbOp::FencePeers { peers } => {
                let mut results = Vec::new();
                for addr in peers {
                    let r = match self.index_of(addr) {
                        Some(j) if self.linked(i, j) && self.nodes[j].server.accepts_work() => {
                            self.fence(j);
                            Ok(())
                        }
                        _ => Err("unreachable".to_string()),
                    };
                    results.push((addr, r));
                }
                Some(DbOutcome::PeersFenced(results))
            }
            DbOp::CatchUp { from, target } => {
                if let Some(e) = local_err {
                    return Some(DbOutcome::CaughtUp(Err(e)));
                }
                let Some(j) = self.index_of(from) else {
                    return Some(DbOutcome::CaughtUp(Err("unknown".into())));
                };
                if let Err(e) = self.follow(i, j) {
                    return Some(DbOutcome::CaughtUp(Err(format!("{e:?}"))));
                }
                let deadline = self.now + PROMOTE_TIMEOUT;
                if let Some(a) = self.nodes[i].agent.as_mut() {
                    a.op = Some(PendingOp::CatchUp { target, deadline });
                }
                self.after(
                    PROMOTE_TIMEOUT,
                    Ev::OpDone {
                        node: i,
                        run: self.nodes[i].agent.as_ref().map_or(0, |a| a.run),
                    },
                );
                self.poll_waiting(i)
            }
            DbOp::Promote { target, recheck } => {
                if let Some(e) = local_err {
                    return Some(DbOutcome::Promoted(Err(e)));
                }
                // Receiving stops at once; the relay log is applied before anything else.
                self.stop_io(i);
                let deadline = self.now + PROMOTE_TIMEOUT;
                if let Some(a) = self.nodes[i].agent.as_mut() {
                    a.op = Some(PendingOp::Drain {
                        target,
                        recheck,
                        deadline,
                    });
                }
                self.after(
                    PROMOTE_TIMEOUT,
                    Ev::OpDone {
                        node: i,
                        run: self.nodes[i].agent.as_ref().map_or(0, |a| a.run),
                    },
                );
                self.poll_waiting(i)
            }
        }
    }

    /// Completes a waiting catch-up or drain if its condition holds or its time is up.
    fn poll_waiting(&mut self, i: usize) -> Option<DbOutcome> {
        let op = self.nodes[i].agent.as_ref()?.op.clone()?;
        let s = &self.nodes[i].server;
        match op {
            PendingOp::At(_) => None,
            PendingOp::CatchUp {
                target, deadline, ..
            } => {
                if !s.accepts_work() {
                    return (self.now >= deadline)
                        .then(|| DbOutcome::CaughtUp(Err("server unreachable".into())));
                }
                if s.logged().covers(&target) {
                    Some(DbOutcome::CaughtUp(Ok(Vec::new())))
                } else if self.now >= deadline {
                    Some(DbOutcome::CaughtUp(Err("timed out".into())))
                } else {
                    None
                }
            }
            PendingOp::Drain {
                target,
                recheck,
                deadline,
            } => {
                if !s.accepts_work() {
                    return (self.now >= deadline)
                        .then(|| DbOutcome::Promoted(Err("server unreachable".into())));
                }
                if !s.relay.is_empty() {
                    return (self.now >= deadline)
                        .then(|| DbOutcome::Promoted(Err("relay log not applied in time".into())));
                }
                let missing = s.logged().missing(&target);
                if !missing.is_empty() {
                    return Some(DbOutcome::Promoted(Err(format!("still lacks {missing}"))));
                }
                let held = s.logged();
                for addr in recheck {
                    let Some(j) = self.index_of(addr) else {
                        continue;
                    };
                    if !self.linked(i, j) || !self.nodes[j].server.accepts_work() {
                        continue;
                    }
                    if !self.nodes[j].server.read_only {
                        return Some(DbOutcome::Promoted(Err(format!("{addr} became writable"))));
                    }
                    let more = held.missing(&self.holdings(j).all());
                    if !more.is_empty() {
                        return Some(DbOutcome::Promoted(Err(format!("{addr} gained {more}"))));
                    }
                }
                self.open(i);
                Some(DbOutcome::Promoted(Ok(Vec::new())))
            }
        }
    }

    fn check_waiting(&mut self, i: usize) {
        let waiting = self.nodes[i].agent.as_ref().is_some_and(|a| {
            matches!(
                a.op,
                Some(PendingOp::CatchUp { .. } | PendingOp::Drain { .. })
            ) && !a.stalled
        });
        if !waiting {
            return;
        }
        if let Some(outcome) = self.poll_waiting(i) {
            if let Some(a) = self.nodes[i].agent.as_mut() {
                a.op = None;
            }
            self.log(|| format!("n{i} outcome {outcome:?}"));
            self.input(i, Input::DbDone(outcome));
        }
    }

    fn holdings(&self, i: usize) -> Holdings {
        let s = &self.nodes[i].server;
        Holdings {
            logged: s.logged(),
            received: s.received_gtids(),
        }
    }

    /// `read_only` on; client sessions end, so commits still waiting are never acknowledged
    /// (they stay committed and count in `no_tx`).
    fn fence(&mut self, i: usize) {
        let s = &mut self.nodes[i].server;
        s.read_only = true;
        s.partition_leftover = false;
        s.no_tx += s.pending.len() as u64;
        s.pending.clear();
    }

    fn open(&mut self, i: usize) {
        let s = &mut self.nodes[i].server;
        s.source = None;
        s.io = false;
        s.sql = false;
        s.relay.clear();
        s.received = None;
        s.semi_enabled = true;
        s.semi_on = true;
        if let Some(ttl) = self.quorum {
            // `DbConfig::semi_sync_min`: cut off from everyone, the master must not
            // acknowledge a commit alone before the lease makes it fence itself, nor before
            // a replica has seen its key gone.
            s.timeout = s.timeout.max(ttl * 2);
        }
        s.read_only = false;
        self.log(|| format!("n{i} server open for writes"));
    }

    fn follow(&mut self, i: usize, m: usize) -> Result<(), FollowError> {
        if !(self.linked(i, m) && self.nodes[m].server.accepts_work()) {
            return Err(FollowError::Failed("master unreachable".into()));
        }
        let (mine, theirs) = (&self.nodes[i].server, &self.nodes[m].server);
        let errant: Vec<String> = mine
            .origins
            .iter()
            .filter(|(o, q)| theirs.origins.get(o).is_none_or(|t| t < q))
            .map(|(o, q)| format!("0-{o}-{q}"))
            .collect();
        if !errant.is_empty() {
            self.nodes[i].server.read_only = true;
            return Err(FollowError::Errant(errant));
        }
        let s = &mut self.nodes[i].server;
        s.read_only = true;
        s.pending.clear();
        s.semi_enabled = false;
        s.semi_on = false;
        // As the agent does: unchanged only if it already receives from this master.
        if s.source != Some(m) || !s.io || s.connected != Some(m) {
            // A new receiving thread purges relay logs and starts from what is applied.
            s.relay.clear();
            s.received = None;
            s.source = Some(m);
            s.io = true;
            s.sql = true;
            s.io_error = false;
            self.disconnect(i);
        }
        self.reconcile();
        Ok(())
    }

    fn stop_io(&mut self, i: usize) {
        self.nodes[i].server.io = false;
        self.disconnect(i);
    }

    /// Drops replica `i`'s stream (its master notices when it next works).
    fn disconnect(&mut self, i: usize) {
        if let Some(m) = self.nodes[i].server.connected.take() {
            self.nodes[i].server.link += 1;
            if self.linked(i, m) {
                let d = self.net_delay();
                self.after(
                    d,
                    Ev::Work {
                        node: m,
                        work: Work::Disconnect { replica: i },
                    },
                );
            } else if let Some(c) = self.nodes[m].server.clients.get_mut(&i) {
                *c = Some(self.now + TCP_TIMEOUT);
            }
        }
    }

    /// Connects or disconnects replication streams to match who can reach whom.
    fn reconcile(&mut self) {
        for i in 0..self.nodes.len() {
            let s = &self.nodes[i].server;
            let want = s.source.filter(|&m| {
                s.up && s.io && !s.io_error && self.linked(i, m) && self.nodes[m].server.up
            });
            if s.connected == want {
                continue;
            }
            if s.connected.is_some() {
                self.disconnect(i);
            }
            if let Some(m) = want {
                self.connect(i, m);
            }
        }
        // Silently lost replicas time out on their masters.
        let now = self.now;
        for n in &mut self.nodes {
            n.server
                .clients
                .retain(|_, until| until.is_none_or(|t| t > now));
        }
    }

    fn connect(&mut self, i: usize, m: usize) {
        // The replica asks for everything after its last transaction; the master must have it.
        let (r, s) = (&self.nodes[i].server, &self.nodes[m].server);
        let pos = r.received.or_else(|| r.log.last().copied());
        let start = match pos {
            None => 0,
            Some(p) => match s
                .log
                .iter()
                .position(|t| t.server == p.server && t.seq == p.seq)
            {
                Some(k) => k + 1,
                None => {
                    self.nodes[i].server.io_error = true;
                    self.log(|| {
                        format!("n{i} cannot replicate from n{m}: position not in its log")
                    });
                    return;
                }
            },
        };
        let txs: Vec<Tx> = s.log[start..].to_vec();
        let r = &mut self.nodes[i].server;
        r.connected = Some(m);
        r.link += 1;
        let link = r.link;
        self.nodes[m].server.clients.insert(i, None);
        let mut t = self.now;
        for tx in txs {
            t = t + self.rng.duration(ms(0), ms(1));
            self.nodes[i].server.last_arrival = t;
            self.at(
                t,
                Ev::Work {
                    node: i,
                    work: Work::Repl { from: m, tx, link },
                },
            );
        }
    }

    /// Streams a transaction just logged on `m` to its connected replicas.
    fn stream(&mut self, m: usize, tx: Tx) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].server.connected == Some(m) {
                let (link, last) = (self.nodes[i].server.link, self.nodes[i].server.last_arrival);
                let d = self.net_delay() + ms(1);
                let t = (self.now + d).max(last);
                self.nodes[i].server.last_arrival = t;
                self.at(
                    t,
                    Ev::Work {
                        node: i,
                        work: Work::Repl { from: m, tx, link },
                    },
                );
            }
        }
    }

    fn work(&mut self, i: usize, work: Work) {
        // A commit to a server that is down is refused: the client sees an error.
        if !self.nodes[i].powered || !self.nodes[i].server.up {
            return;
        }
        if self.nodes[i].server.stalled {
            self.nodes[i].server.deferred.push_back(work);
            return;
        }
        match work {
            Work::Commit { write } => self.commit(i, write),
            Work::Repl { from, tx, link } => {
                let r = &mut self.nodes[i].server;
                if r.link != link || r.connected != Some(from) {
                    return;
                }
                r.relay.push_back(tx);
                r.received = Some(tx);
                if !r.apply_scheduled {
                    r.apply_scheduled = true;
                    let d = self.rng.duration(ms(0), ms(2));
                    self.after(
                        d,
                        Ev::Work {
                            node: i,
                            work: Work::Apply,
                        },
                    );
                }
                // The semi-sync acknowledgement, on receipt.
                if self.linked(i, from) {
                    let d = self.net_delay();
                    self.after(
                        d,
                        Ev::Work {
                            node: from,
                            work: Work::Ack { seq: tx.seq },
                        },
                    );
                }
            }
            Work::Ack { seq } => self.ack(i, seq),
            Work::Apply => {
                let r = &mut self.nodes[i].server;
                r.apply_scheduled = false;
                if !r.sql {
                    return;
                }
                if let Some(tx) = r.relay.pop_front() {
                    if !r.holds(tx) {
                        r.append(tx);
                        self.stream(i, tx);
                    }
                    let r = &mut self.nodes[i].server;
                    if !r.relay.is_empty() {
                        r.apply_scheduled = true;
                        let d = self.rng.duration(ms(0), ms(2));
                        self.after(
                            d,
                            Ev::Work {
                                node: i,
                                work: Work::Apply,
                            },
                        );
                    }
                }
                self.check_waiting(i);
            }
            Work::Fence => self.fence(i),
            Work::Disconnect { replica } => {
                self.nodes[i].server.clients.remove(&replica);
            }
        }
    }

    fn commit(&mut self, i: usize, write: u64) {
        let s = &mut self.nodes[i].server;
        if s.read_only {
            return;
        }
        let tx = Tx {
            server: s.id,
            seq: s.last_seq() + 1,
            write,
        };
        s.append(tx);
        let ack_now = if !s.semi_enabled {
            true
        } else if !s.semi_on {
            s.no_tx += 1;
            true
        } else if s.clients.is_empty() {
            // wait_no_slave=OFF: nobody to wait for, so no wait; the status stays on, the
            // commit counts as unacknowledged.
            s.no_tx += 1;
            true
        } else {
            s.pending.push((tx, self.now + s.timeout));
            false
        };
        let timeout = s.timeout;
        self.stream(i, tx);
        if ack_now {
            self.client_ack(i, write);
        } else {
            self.after(timeout, Ev::SemiTimeout { node: i });
        }
    }

    fn ack(&mut self, i: usize, seq: u64) {
        let s = &mut self.nodes[i].server;
        let mut done = Vec::new();
        s.pending.retain(|(tx, _)| {
            if tx.seq <= seq {
                done.push(tx.write);
                false
            } else {
                true
            }
        });
        if s.semi_enabled && !s.semi_on && seq >= s.last_seq() {
            s.semi_on = true;
        }
        for w in done {
            self.client_ack(i, w);
        }
    }

    fn semi_timeout(&mut self, i: usize) {
        let now = self.now;
        let s = &mut self.nodes[i].server;
        if !s.accepts_work() {
            return;
        }
        if s.pending.iter().any(|(_, d)| *d <= now) {
            // One commit waited too long: the master goes on alone, releasing everyone.
            s.semi_on = false;
            let done: Vec<u64> = s.pending.drain(..).map(|(tx, _)| tx.write).collect();
            s.no_tx += done.len() as u64;
            let n = done.len();
            self.log(|| format!("n{i} semi-sync times out: {n} commit(s) acknowledged alone"));
            for w in done {
                self.client_ack(i, w);
            }
        }
    }

    fn client_ack(&mut self, node: usize, write: u64) {
        let d = self.net_delay();
        let leftover = self.nodes[node].server.partition_leftover;
        self.after(
            d,
            Ev::ClientAck {
                node,
                write,
                leftover,
            },
        );
    }

    fn crash_server(&mut self, i: usize) {
        let s = &mut self.nodes[i].server;
        if !s.up {
            return;
        }
        s.up = false;
        s.stalled = false;
        s.partition_leftover = false;
        s.deferred.clear();
        // Crash recovery as a replica truncates what no replica acknowledged.
        {
            let unacked: Vec<Tx> = s.pending.iter().map(|p| p.0).collect();
            s.log.retain(|t| !unacked.contains(t));
            s.origins.clear();
            for t in s.log.clone() {
                let e = s.origins.entry(t.server).or_insert(0);
                *e = (*e).max(t.seq);
            }
        }
        s.pending.clear();
        s.clients.clear();
        self.disconnect(i);
        // Its replicas see the connection reset.
        for r in 0..self.nodes.len() {
            if self.nodes[r].server.connected == Some(i) {
                self.nodes[r].server.connected = None;
                self.nodes[r].server.link += 1;
            }
        }
        self.log(|| format!("n{i} server down"));
    }

    fn start_server(&mut self, i: usize) {
        if !self.nodes[i].powered || self.nodes[i].server.up {
            return;
        }
        let s = &mut self.nodes[i].server;
        s.up = true;
        s.read_only = true;
        s.io = false;
        s.sql = false;
        s.apply_scheduled = false;
        s.relay.clear();
        s.received = None;
        s.io_error = false;
        s.semi_enabled = false;
        s.semi_on = false;
        s.timeout = s.configured_timeout;
        self.log(|| format!("n{i} server up (crash recovery, read-only)"));
        self.reconcile();
    }

    fn resume_server(&mut self, i: usize) {
        let s = &mut self.nodes[i].server;
        if !s.stalled {
            return;
        }
        s.stalled = false;
        self.log(|| format!("n{i} server resumes"));
        let work: Vec<Work> = self.nodes[i].server.deferred.drain(..).collect();
        for w in work {
            self.work(i, w);
        }
        self.semi_timeout(i);
        self.check_waiting(i);
    }

    fn resume_agent(&mut self, i: usize) {
        let Some(a) = self.nodes[i].agent.as_mut() else {
            return;
        };
        if !a.stalled {
            return;
        }
        a.stalled = false;
        self.log(|| format!("n{i} agent resumes"));
        // As the runtime does with a timer that fires late: what queued up during the stall
        // (adverts, answers) is taken in first, then the timers that are still due.
        let queued: Vec<Input> = self.nodes[i]
            .agent
            .as_mut()
            .map(|a| a.inbox.drain(..).collect())
            .unwrap_or_default();
        for input in queued {
            self.input(i, input);
        }
        let now = self.now;
        if let Some(a) = self.nodes[i].agent.as_mut()
            && a.coord.poll_timeout().is_some_and(|t| t <= now)
        {
            a.coord.handle_timeout(now);
        }
        self.effects(i);
        self.check_waiting(i);
        // The quorum task's answers were waiting in its socket; a timeout due meanwhile is
        // looked at after them, as `tokio::time::timeout` polls the request first.
        let mut queued = self.nodes[i]
            .agent
            .as_mut()
            .and_then(|a| a.lease.as_mut())
            .map(|t| std::mem::take(&mut t.queued))
            .unwrap_or_default();
        queued.sort_by_key(|e| !matches!(e, LeaseEv::Reply { .. }));
        let run = self.nodes[i].agent.as_ref().map_or(0, |a| a.run);
        for ev in queued {
            self.lease_event(i, run, ev);
        }
    }

    fn observe(&mut self, i: usize, run: u64) {
        let Some(a) = self.nodes[i].agent.as_ref().filter(|a| a.run == run) else {
            return;
        };
        let watch = a.watch;
        if std::env::var_os("SIM_ADVERTS").is_some() {
            let (pt, mt, st) = (
                a.coord.poll_timeout(),
                a.coord.machine().poll_timeout(),
                a.coord.started,
            );
            self.log(|| format!("n{i} timers {pt:?} machine {mt:?} started {st}"));
        }
        let local = {
            let s = &self.nodes[i].server;
            if !s.up {
                Err(Fault::Refused("refused".into()))
            } else if s.stalled {
                Err(Fault::Other("timed out".into()))
            } else {
                Ok(LocalDb {
                    read_only: s.read_only,
                    logged: s.logged(),
                    semi_sync: SemiSync {
                        on: s.semi_on,
                        no_tx: s.no_tx,
                        clients: s.clients.len() as u32,
                        timeout: s.timeout,
                    },
                    replica: s.source.map(|m| Replica {
                        master: Some(self.nodes[m].addr),
                        io_running: s.connected.is_some(),
                        sql_running: s.sql,
                        received: s.received_gtids(),
                        verified_tls: true,
                        sql_error: None,
                        lag_secs: Some(0),
                    }),
                })
            }
        };
        let mut slow = local.is_err();
        let master = watch.map(|addr| {
            let r = match self.index_of(addr) {
                Some(j) if self.linked(i, j) => {
                    let m = &self.nodes[j].server;
                    if !m.up {
                        Err(Fault::Refused("refused".into()))
                    } else if m.stalled {
                        Err(Fault::Stalled("host answers, server does not".into()))
                    } else {
                        Ok(MasterDb {
                            read_only: m.read_only,
                            logged: m.logged(),
                            semi_sync: SemiSync {
                                on: m.semi_on,
                                no_tx: m.no_tx,
                                clients: m.clients.len() as u32,
                                timeout: m.timeout,
                            },
                        })
                    }
                }
                _ => Err(Fault::Other("timed out".into())),
            };
            slow |= matches!(r, Err(Fault::Other(_) | Fault::Stalled(_)));
            (addr, r)
        });
        // The master also looks at every peer: a second writer, a history it lacks.
        let seen: Vec<PeerSeen> = (0..self.nodes.len())
            .filter(|&j| j != i && self.linked(i, j) && self.nodes[j].server.accepts_work())
            .map(|j| PeerSeen {
                addr: self.nodes[j].addr,
                holdings: self.holdings(j),
                writable: !self.nodes[j].server.read_only,
            })
            .collect();
        let own = self.nodes[i]
            .server
            .accepts_work()
            .then(|| self.nodes[i].server.logged());
        let at = self.now;
        let d = self.rng.duration(ms(0), ms(2));
        self.after(
            d,
            Ev::PeersSeen {
                node: i,
                run,
                at,
                peers: seen,
                own,
            },
        );
        // A sample that timed out reports a second later; the next one follows its report.
        let delay = if slow { OP_TIMEOUT } else { ms(1) };
        let obs = Observation {
            at,
            asked: at,
            local,
            master,
        };
        self.after(delay, Ev::Observed { node: i, run, obs });
        self.after(delay + CHECK_INTERVAL, Ev::Observe { node: i, run });
    }

    // ----- the quorum lease ---------------------------------------------------------------

    /// Whether node `i` reaches a majority of etcd's members: they live with the nodes that
    /// are not cut off, so a node alone behind a partition reaches none.
    fn etcd_reaches(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.powered && !n.isolated && !n.cut && !n.etcd_cut
    }

    fn ttl(&self) -> Duration {
        self.quorum.expect("only with a quorum")
    }

    fn lease_task(&mut self, i: usize) -> Option<&mut LeaseTask> {
        self.nodes[i].agent.as_mut()?.lease.as_mut()
    }

    /// The coordinator's wish reaches the task: a task waiting between steps begins the next
    /// at once; one in a request or a pause sees it when that ends.
    fn lease_want(&mut self, i: usize, want: bool) {
        self.log(|| format!("n{i} lease wanted: {want}"));
        let Some(t) = self.lease_task(i) else { return };
        t.want = want;
        t.version += 1;
        if t.state == TaskState::Waiting {
            t.timer += 1;
            self.lease_step(i);
        }
    }

    /// One pass of the task's session loop.
    fn lease_step(&mut self, i: usize) {
        let now = self.now;
        let Some(t) = self.lease_task(i) else { return };
        t.seen = t.version;
        let (step, op) = match (t.want, t.held) {
            (true, Some((lease, epoch))) if t.keeper => (
                Step::Renew {
                    sent: now,
                    lease,
                    epoch,
                },
                EtcdOp::KeepAlive { lease },
            ),
            (true, Some((lease, epoch))) => (
                Step::OpenKeeper { lease, epoch },
                EtcdOp::KeepAlive { lease },
            ),
            (true, None) => (Step::AcquireGet, EtcdOp::Get),
            (false, Some((lease, _))) => (Step::Release, EtcdOp::Revoke { lease }),
            (false, None) => (Step::Look, EtcdOp::Get),
        };
        self.lease_ask(i, step, op);
    }

    /// Sends one request, which is lost if the node is cut off from etcd now or before it
    /// arrives; the task gives up on it after its timeout.
    fn lease_ask(&mut self, i: usize, step: Step, op: EtcdOp) {
        let Some(run) = self.nodes[i].agent.as_ref().map(|a| a.run) else {
            return;
        };
        let timeout = lease::request_timeout(self.ttl());
        let Some(t) = self.lease_task(i) else { return };
        t.next_req += 1;
        let req = t.next_req;
        t.state = TaskState::Asking { req, step };
        self.after(
            timeout,
            Ev::Lease {
                node: i,
                run,
                ev: LeaseEv::Timeout { req },
            },
        );
        if self.etcd_reaches(i) {
            let d = self.etcd_hop();
            self.after(
                d,
                Ev::EtcdRequest {
                    node: i,
                    run,
                    req,
                    op,
                },
            );
        }
    }

    /// One way between a node and etcd, with whatever etcd's slowness adds.
    fn etcd_hop(&mut self) -> Duration {
        let d = self.net_delay();
        match self.etcd.slow {
            Some((until, max)) if self.now < until => d + self.rng.duration(ms(0), max),
            _ => d,
        }
    }

    /// etcd's leader revokes the leases that ran out, with their keys. Done when a request
    /// arrives, the only time anyone can tell.
    fn etcd_expire(&mut self) {
        if self.etcd.down_until.is_some() {
            return;
        }
        let now = self.now;
        let gone: Vec<(i64, Mono)> = self
            .etcd
            .leases
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(l, t)| (*l, *t))
            .collect();
        for (l, at) in gone {
            self.etcd.leases.remove(&l);
            if let Some(k) = self.etcd.key.filter(|k| k.lease == l) {
                self.etcd.key = None;
                self.etcd.revision += 1;
                self.log(|| {
                    format!(
                        "etcd: lease {l} ran out at {:.4}s: the key of n{} is gone",
                        at.0 as f64 / 1e9,
                        k.node
                    )
                });
            }
        }
    }

    fn etcd_request(&mut self, i: usize, run: u64, req: u64, op: EtcdOp) {
        if !self.etcd_reaches(i) {
            return;
        }
        self.etcd_expire();
        let ttl = self.ttl();
        let not_found = || Err("etcd: etcdserver: requested lease not found".to_string());
        let reply = if self.etcd.down_until.is_some() {
            Err("etcd: etcdserver: no leader".to_string())
        } else {
            match op {
                EtcdOp::Get => Ok(EtcdReply::Key(self.etcd.key)),
                EtcdOp::Grant => {
                    let l = self.etcd.next_lease;
                    self.etcd.next_lease += 1;
                    self.etcd.leases.insert(l, self.now + ttl);
                    Ok(EtcdReply::Granted(l))
                }
                EtcdOp::Create { .. } if self.etcd.key.is_some() => Ok(EtcdReply::Created(None)),
                EtcdOp::Create { lease } if self.etcd.leases.contains_key(&lease) => {
                    self.etcd.revision += 1;
                    let epoch = self.etcd.revision;
                    self.etcd.key = Some(LeaderKey {
                        node: i,
                        run,
                        lease,
                        epoch,
                    });
                    self.log(|| format!("etcd: n{i} takes the key (lease {lease}, epoch {epoch})"));
                    Ok(EtcdReply::Created(Some(epoch)))
                }
                EtcdOp::Create { .. } => not_found(),
                EtcdOp::KeepAlive { lease } => match self.etcd.leases.get_mut(&lease) {
                    Some(t) => {
                        *t = self.now + ttl;
                        Ok(EtcdReply::Ttl(ttl.as_secs() as i64))
                    }
                    None => Ok(EtcdReply::Ttl(0)),
                },
                EtcdOp::Revoke { lease } => {
                    if self.etcd.leases.remove(&lease).is_some() {
                        if self.etcd.key.is_some_and(|k| k.lease == lease) {
                            self.etcd.key = None;
                            self.etcd.revision += 1;
                            self.log(|| format!("etcd: n{i} releases the key (lease {lease})"));
                        }
                        Ok(EtcdReply::Revoked)
                    } else {
                        not_found()
                    }
                }
            }
        };
        let d = self.etcd_hop();
        self.after(
            d,
            Ev::Lease {
                node: i,
                run,
                ev: LeaseEv::Reply { req, reply },
            },
        );
    }

    /// Something for the task of run `run` on node `i`: nothing if that run is over; kept
    /// for later while the process is stopped.
    fn lease_event(&mut self, i: usize, run: u64, ev: LeaseEv) {
        let Some(a) = self.nodes[i].agent.as_mut().filter(|a| a.run == run) else {
            return;
        };
        let stalled = a.stalled;
        let Some(t) = a.lease.as_mut() else { return };
        if stalled {
            t.queued.push(ev);
            return;
        }
        match ev {
            LeaseEv::Timer { gen_ } => {
                if gen_ == t.timer && matches!(t.state, TaskState::Waiting | TaskState::Backoff) {
                    self.lease_step(i);
                }
            }
            LeaseEv::Timeout { req } => {
                if matches!(t.state, TaskState::Asking { req: r, .. } if r == req) {
                    let limit = lease::request_timeout(self.ttl());
                    self.lease_failed(i, QuorumError::Timeout(limit).to_string());
                }
            }
            LeaseEv::Reply { req, reply } => {
                if let TaskState::Asking { req: r, step } = t.state
                    && r == req
                {
                    self.lease_reply(i, run, step, reply);
                }
            }
        }
    }

    fn lease_reply(&mut self, i: usize, run: u64, step: Step, reply: Result<EtcdReply, String>) {
        let renew = lease::renew_every(self.ttl());
        let addr = |k: LeaderKey| self.nodes[k.node].addr.to_string();
        let reply = match reply {
            Ok(r) => r,
            // As the agent's task does: a lease that ran out already is released too.
            Err(e) if step == Step::Release && e.contains("lease not found") => {
                self.log(|| format!("n{i} quorum: the lease had run out already"));
                if let Some(t) = self.lease_task(i) {
                    t.held = None;
                    t.keeper = false;
                }
                return self.lease_done(i, renew, Some(LeaseReport::Free));
            }
            Err(e) => return self.lease_failed(i, e),
        };
        match (step, reply) {
            (Step::Look, EtcdReply::Key(k)) => {
                let r = match k {
                    Some(k) => LeaseReport::HeldBy {
                        holder: addr(k),
                        epoch: k.epoch,
                    },
                    None => LeaseReport::Free,
                };
                self.lease_done(i, renew, Some(r));
            }
            (Step::AcquireGet, EtcdReply::Key(Some(k))) if k.node == i && k.run != run => {
                self.log(|| format!("n{i} releases the key its run {} left", k.run));
                self.lease_ask(i, Step::RevokeOld, EtcdOp::Revoke { lease: k.lease });
            }
            (Step::AcquireGet, EtcdReply::Key(Some(k))) => {
                let r = LeaseReport::HeldBy {
                    holder: addr(k),
                    epoch: k.epoch,
                };
                self.lease_done(i, ACQUIRE_RETRY, Some(r));
            }
            (Step::AcquireGet, EtcdReply::Key(None)) => {
                let sent = self.now;
                self.lease_ask(i, Step::Grant { sent }, EtcdOp::Grant);
            }
            (Step::RevokeOld | Step::RevokeLost, EtcdReply::Revoked) => {
                self.lease_done(i, ACQUIRE_RETRY, None);
            }
            (Step::Grant { sent }, EtcdReply::Granted(lease)) => {
                self.lease_ask(i, Step::Create { sent, lease }, EtcdOp::Create { lease });
            }
            (Step::Create { sent, lease }, EtcdReply::Created(Some(epoch))) => {
                if let Some(t) = self.lease_task(i) {
                    t.held = Some((lease, epoch));
                }
                self.lease_done(i, renew, Some(LeaseReport::Held { sent, epoch }));
            }
            (Step::Create { lease, .. }, EtcdReply::Created(None)) => {
                self.lease_ask(i, Step::RevokeLost, EtcdOp::Revoke { lease });
            }
            (Step::OpenKeeper { lease, epoch }, EtcdReply::Ttl(ttl)) => {
                if ttl <= 0 {
                    // etcd-client's `lease_keep_alive` fails on this first answer, which the
                    // task takes for the lease having run out while it could not renew it.
                    self.log(|| format!("n{i} quorum: the lease ran out in etcd"));
                    if let Some(t) = self.lease_task(i) {
                        t.held = None;
                    }
                    return self.lease_done(i, renew, Some(LeaseReport::Free));
                }
                if let Some(t) = self.lease_task(i) {
                    t.keeper = true;
                }
                let sent = self.now;
                self.lease_ask(
                    i,
                    Step::Renew { sent, lease, epoch },
                    EtcdOp::KeepAlive { lease },
                );
            }
            (Step::Renew { sent, epoch, .. }, EtcdReply::Ttl(ttl)) => {
                let r = if ttl <= 0 {
                    self.log(|| format!("n{i} quorum: the lease ran out in etcd"));
                    if let Some(t) = self.lease_task(i) {
                        t.held = None;
                        t.keeper = false;
                    }
                    LeaseReport::Free
                } else {
                    LeaseReport::Held { sent, epoch }
                };
                self.lease_done(i, renew, Some(r));
            }
            (Step::Release, EtcdReply::Revoked) => {
                if let Some(t) = self.lease_task(i) {
                    t.held = None;
                    t.keeper = false;
                }
                self.lease_done(i, renew, Some(LeaseReport::Free));
            }
            (step, reply) => unreachable!("{step:?} answered with {reply:?}"),
        }
    }

    /// The step is over: the task waits `wait`, or not at all if the wish changed meanwhile;
    /// then the coordinator hears what it found (its answer may change the wish again).
    fn lease_done(&mut self, i: usize, wait: Duration, report: Option<LeaseReport>) {
        let Some(run) = self.nodes[i].agent.as_ref().map(|a| a.run) else {
            return;
        };
        let Some(t) = self.lease_task(i) else { return };
        t.state = TaskState::Waiting;
        if t.version != t.seen {
            self.lease_step(i);
        } else {
            t.timer += 1;
            let gen_ = t.timer;
            self.lease_timer(i, run, gen_, wait);
        }
        if let Some(r) = report {
            self.lease_report(i, r);
        }
    }

    /// Wakes node `i`'s lease task (of agent run `run`) after `wait`, unless timer `gen_` is
    /// superseded by then.
    fn lease_timer(&mut self, i: usize, run: u64, gen_: u64, wait: Duration) {
        self.after(
            wait,
            Ev::Lease {
                node: i,
                run,
                ev: LeaseEv::Timer { gen_ },
            },
        );
    }

    /// A request failed: the session ends, the keep-alive stream with it, and a new one goes
    /// to the next member at once, or after a pause once every member failed in turn. In the
    /// model the members stand or fall together, so only the timing and the errors' text
    /// depend on which one is asked.
    fn lease_failed(&mut self, i: usize, error: String) {
        let Some(run) = self.nodes[i].agent.as_ref().map(|a| a.run) else {
            return;
        };
        let pause = ACQUIRE_RETRY.max(lease::request_timeout(self.ttl()) / 5);
        let Some(t) = self.lease_task(i) else { return };
        let member = t.endpoint;
        t.endpoint = (t.endpoint + 1) % ETCD_MEMBERS;
        t.keeper = false;
        if t.endpoint == 0 {
            t.state = TaskState::Backoff;
            t.timer += 1;
            let gen_ = t.timer;
            self.lease_timer(i, run, gen_, pause);
        } else {
            self.lease_step(i);
        }
        let error = format!("http://etcd{}:2379: {error}", member + 1);
        self.lease_report(i, LeaseReport::Unreachable(error));
    }

    fn lease_report(&mut self, i: usize, r: LeaseReport) {
        let Some(t) = self.lease_task(i) else { return };
        // Renewals always go: each one moves the write deadline.
        if t.last.as_ref() == Some(&r) && !matches!(r, LeaseReport::Held { .. }) {
            return;
        }
        t.last = Some(r.clone());
        self.log(|| format!("n{i} lease report {r:?}"));
        self.input(i, Input::Lease(r));
    }

    /// etcd has a leader again, which gives every lease a whole TTL from now.
    fn etcd_back(&mut self) {
        if self.etcd.down_until.take().is_none() {
            return;
        }
        let until = self.now + self.ttl();
        for t in self.etcd.leases.values_mut() {
            *t = until;
        }
        self.log(|| "etcd has a leader again".to_string());
    }

    // ----- the event loop -----------------------------------------------------------------

    fn run_until(&mut self, end: Mono) -> Result<(), String> {
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(format!("no quiescence after {MAX_STEPS} events"));
            }
            let next_ev = self.events.peek().map(|Reverse((t, _, _))| *t);
            // A deadline that an input put in the past (a late answer to an old renewal)
            // fires at once, as the runtime's sleep does.
            let timer = self.agent_timer().map(|(t, i)| (t.max(self.now), i));
            let next = [next_ev, timer.map(|t| t.0)]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= end);
            let Some(next) = next else {
                self.now = end;
                return Ok(());
            };
            if next < self.now {
                return Err(format!("event in the past at {next:?}"));
            }
            self.now = next;
            match timer.filter(|t| t.0 == next && next_ev != Some(next)) {
                Some((_, i)) => {
                    let now = self.now;
                    if let Some(a) = self.nodes[i].agent.as_mut() {
                        a.coord.handle_timeout(now);
                    }
                    self.effects(i);
                    if let Some(t) = self.nodes[i]
                        .agent
                        .as_ref()
                        .and_then(|a| a.coord.poll_timeout())
                        && t <= now
                    {
                        return Err(format!("n{i} timer did not advance past {now:?}"));
                    }
                }
                None => {
                    let Reverse((_, _, idx)) = self.events.pop().expect("peeked");
                    let ev = self.store[idx].take().expect("each event runs once");
                    self.free.push(idx);
                    self.dispatch(ev);
                }
            }
            self.reconcile();
            self.check_one_writer()?;
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Advert {
                to,
                src,
                advbase,
                advskew,
                counter,
                authentic,
            } => {
                if !authentic {
                    return;
                }
                let from = self.index_of(src);
                let reaches = match from {
                    Some(f) => self.linked(to, f),
                    // An adversary's frame: it reaches whoever is on the segment.
                    None => self.nodes[to].powered && !self.nodes[to].isolated,
                };
                let accepted = reaches
                    && self.nodes[to].agent.as_mut().is_some_and(|a| {
                        let fresh = a.guard.accept(counter);
                        if fresh {
                            a.counter.on_receive(counter);
                        }
                        fresh
                    });
                if accepted {
                    self.input(
                        to,
                        Input::Advert {
                            src: src.into(),
                            advbase,
                            advskew,
                        },
                    );
                } else if reaches {
                    self.replays_dropped += 1;
                }
            }
            Ev::Work { node, work } => self.work(node, work),
            Ev::OpDone { node, run } => {
                let waiting = self.nodes[node].agent.as_ref().is_some_and(|a| {
                    a.run == run
                        && matches!(
                            a.op,
                            Some(PendingOp::CatchUp { .. } | PendingOp::Drain { .. })
                        )
                });
                if waiting {
                    self.check_waiting(node);
                } else if self.nodes[node]
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.run == run && a.stalled)
                {
                    // The answer waits in the socket until the agent runs again.
                    let outcome_later = ms(50);
                    self.after(outcome_later, Ev::OpDone { node, run });
                } else {
                    self.finish_op(node, run);
                }
            }
            Ev::VipDone { node, run, add } => {
                if self.nodes[node]
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.run == run)
                {
                    self.nodes[node].vip = add;
                    self.input(
                        node,
                        Input::VipDone {
                            add,
                            result: Ok(()),
                        },
                    );
                }
            }
            Ev::Claimed { to } => {
                if self.nodes[to].agent.is_some() {
                    self.input(to, Input::VipClaimed);
                }
            }
            Ev::Drained { node, run } => {
                if self.nodes[node]
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.run == run)
                {
                    self.input(node, Input::Drained);
                }
            }
            Ev::Observe { node, run } => self.observe(node, run),
            Ev::Observed { node, run, obs } => {
                if self.nodes[node]
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.run == run)
                {
                    self.input(node, Input::Observed(obs));
                }
            }
            Ev::PeersSeen {
                node,
                run,
                at,
                peers,
                own,
            } => {
                if self.nodes[node]
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.run == run)
                {
                    self.input(node, Input::PeersSeen { at, peers, own });
                }
            }
            Ev::ClientWrite => self.client_write(),
            Ev::ClientAck {
                node,
                write,
                leftover,
            } => {
                if self.client_reaches(node) {
                    // With a quorum a partition excuses nothing.
                    let exempt = self.quorum.is_none()
                        && (self.excused_until.is_some_and(|t| t >= self.now)
                            || self.nodes.iter().any(|n| n.isolated)
                            || leftover
                            || self.nodes[node].server.partition_leftover);
                    self.acked.insert(write, (node, self.now, exempt));
                }
            }
            Ev::SemiTimeout { node } => self.semi_timeout(node),
            Ev::EtcdRequest { node, run, req, op } => self.etcd_request(node, run, req, op),
            Ev::Lease { node, run, ev } => {
                // An answer that finds its node cut off is lost.
                if !matches!(ev, LeaseEv::Reply { .. }) || self.etcd_reaches(node) {
                    self.lease_event(node, run, ev);
                }
            }
            Ev::Chaos => self.chaos(),
            Ev::Later(f) => self.later(f),
        }
    }

    fn client_write(&mut self) {
        let gap = self.rng.duration(ms(15), ms(100));
        self.after(gap, Ev::ClientWrite);
        self.next_write += 1;
        let write = self.next_write;
        // Mostly through the VIP; sometimes straight to a node, as some applications do.
        let target = if self.rng.chance(1, 10) {
            Some(self.rng.below(self.nodes.len() as u64) as usize)
        } else {
            self.vip_target()
        };
        let Some(t) = target else { return };
        if !self.client_reaches(t) {
            return;
        }
        self.writes_sent += 1;
        let d = self.net_delay();
        self.after(
            d,
            Ev::Work {
                node: t,
                work: Work::Commit { write },
            },
        );
    }

    /// Where a packet to the VIP goes: the node the client's ARP entry names, if it still
    /// accepts the VIP there; otherwise whoever answers a fresh ARP request.
    fn vip_target(&mut self) -> Option<usize> {
        let accepts = |n: &Node| n.powered && !n.isolated && n.vip && n.xdp_master != Some(false);
        if let Some(i) = self.client_arp
            && accepts(&self.nodes[i])
        {
            return Some(i);
        }
        let answering: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| accepts(&self.nodes[i]))
            .collect();
        let pick = (!answering.is_empty())
            .then(|| answering[self.rng.below(answering.len() as u64) as usize]);
        self.client_arp = pick;
        pick
    }

    fn check_one_writer(&self) -> Result<(), String> {
        let strict = self.quorum.is_some();
        let writers: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                n.powered
                    && n.server.up
                    && !n.server.read_only
                    && (strict || !n.server.partition_leftover)
            })
            .collect();
        if writers.len() > 1
            && (strict
                || (!self.nodes.iter().any(|n| n.isolated)
                    && self.excused_until.is_none_or(|t| t < self.now)))
        {
            return Err(format!("I2: servers {writers:?} accept writes at once"));
        }
        Ok(())
    }

    // ----- faults -------------------------------------------------------------------------

    fn chaos(&mut self) {
        let Some(until) = self.chaos_until else {
            return;
        };
        if self.now >= until {
            return;
        }
        let n = self.nodes.len();
        let i = self.rng.below(n as u64) as usize;
        let back = self.rng.duration(ms(300), ms(8000));
        let agent_ok = self.nodes[i].agent.as_ref().is_some_and(|a| !a.stalled);
        match self.rng.below(15) {
            0 if self.nodes[i].powered => {
                self.log(|| format!("CHAOS n{i} power cut"));
                self.power_cut(i);
                self.after(back, Ev::Later(Fault_::PowerOn(i)));
            }
            1 if self.nodes[i].agent.is_some()
                && !self.nodes[i].server.stalled
                && !self.cut_off_writer(i) =>
            {
                self.log(|| format!("CHAOS n{i} agent kill -9"));
                self.kill_agent(i);
                self.after(back, Ev::Later(Fault_::StartAgent(i)));
            }
            2 if self.nodes[i].server.up => {
                self.log(|| format!("CHAOS n{i} server killed"));
                self.crash_server(i);
                self.after(back, Ev::Later(Fault_::StartServer(i)));
            }
            3 if self.nodes[i].server.up
                && !self.nodes[i].server.stalled
                && agent_ok
                && !self.cut_off_writer(i) =>
            {
                self.log(|| format!("CHAOS n{i} server stalled"));
                self.nodes[i].server.stalled = true;
                self.after(back, Ev::Later(Fault_::ResumeServer(i)));
            }
            4 if agent_ok && !self.nodes[i].server.stalled && !self.cut_off_writer(i) => {
                self.log(|| format!("CHAOS n{i} agent stalled"));
                if let Some(a) = self.nodes[i].agent.as_mut() {
                    a.stalled = true;
                }
                self.after(back, Ev::Later(Fault_::ResumeAgent(i)));
            }
            5 if !self.nodes[i].isolated
                && !self.nodes[i].cut
                && self.nodes[i].powered
                && !self.unguarded_writer() =>
            {
                // With a quorum, half the partitions leave the clients on the cut-off side.
                if self.quorum.is_some() && self.rng.chance(1, 2) {
                    self.log(|| {
                        format!("CHAOS n{i} cut off from its peers and etcd, not from the clients")
                    });
                    self.nodes[i].cut = true;
                } else {
                    self.log(|| format!("CHAOS n{i} partitioned"));
                    self.nodes[i].isolated = true;
                }
                self.partitions += 1;
                self.after(back, Ev::Later(Fault_::Heal(i)));
            }
            6 if agent_ok => {
                self.log(|| format!("CHAOS n{i} graceful stop"));
                if let Some(a) = self.nodes[i].agent.as_mut() {
                    a.stopping = true;
                }
                self.input(i, Input::Shutdown);
                self.after(back, Ev::Later(Fault_::StartAgent(i)));
            }
            7 if agent_ok => {
                self.log(|| format!("CHAOS n{i} switchover"));
                self.input(i, Input::Switchover);
            }
            9..=10 if !self.captured.is_empty() => {
                // Replays a captured advert to everyone, from a spoofed source (a node's or a
                // stranger's) with a skew of the adversary's choosing, a few times over.
                let k = self.rng.below(self.captured.len() as u64) as usize;
                let (_, advbase, _, counter) = self.captured[k];
                let src = if self.rng.chance(1, 3) {
                    Ipv4Addr::new(10, 0, 0, 200)
                } else {
                    self.nodes[self.rng.below(n as u64) as usize].addr
                };
                let (advbase, advskew) = match self.rng.below(3) {
                    0 => (255, 255),
                    1 => (advbase, 0),
                    _ => (advbase, self.rng.below(256) as u8),
                };
                self.log(|| {
                    format!("CHAOS replay of counter {counter:#x} as {src} {advbase}/{advskew}")
                });
                for _ in 0..self.rng.range(1, 5) {
                    for to in 0..n {
                        self.replays_sent += 1;
                        let d = self.net_delay();
                        self.after(
                            d,
                            Ev::Advert {
                                to,
                                src,
                                advbase,
                                advskew,
                                counter,
                                authentic: true,
                            },
                        );
                    }
                }
            }
            11 => {
                // Junk: forged adverts with the counters genuine ones will carry next, from any
                // source, with the best skew. Authentication drops them first, so they can
                // neither win nor poison the replay guard.
                let next = self.captured.back().map_or(0, |c| c.3);
                for k in 1..=self.rng.range(1, 50) {
                    let src = self.nodes[self.rng.below(n as u64) as usize].addr;
                    for to in 0..n {
                        self.junk_sent += 1;
                        let d = self.net_delay();
                        self.after(
                            d,
                            Ev::Advert {
                                to,
                                src,
                                advbase: 0,
                                advskew: 1,
                                counter: next.wrapping_add(k),
                                authentic: false,
                            },
                        );
                    }
                }
            }
            8 => {
                self.loss = self.rng.range(0, 100);
                let hi = self.rng.duration(ms(0), ms(3));
                self.delay = (ms(0), hi);
            }
            // etcd's own faults, with a quorum only (the other runs keep their schedules).
            12 if self.quorum.is_some() => {
                let max = self.rng.duration(ms(1), lease::request_timeout(self.ttl()));
                self.log(|| format!("CHAOS etcd slow (up to {max:?} a hop)"));
                self.etcd.slow = Some((self.now + back, max));
            }
            13 if self.quorum.is_some() && self.etcd.down_until.is_none() => {
                self.log(|| "CHAOS etcd loses its leader".to_string());
                self.etcd_expire();
                self.etcd.down_until = Some(self.now + back);
                self.after(back, Ev::Later(Fault_::EtcdBack));
            }
            14 if self.quorum.is_some() && !self.nodes[i].etcd_cut && self.nodes[i].powered => {
                self.log(|| format!("CHAOS n{i} cut off from etcd alone"));
                self.nodes[i].etcd_cut = true;
                self.after(back, Ev::Later(Fault_::EtcdReach(i)));
            }
            _ => {}
        }
        let next = self.rng.duration(ms(500), self.unit * 2);
        self.after(next, Ev::Chaos);
    }

    /// With a quorum, a writable server on the other side of a partition from the next master
    /// is closed by its own agent when the lease runs out, and by nothing else. An agent that
    /// is dead or stopped cannot do it, nor can an agent fence a stopped server, and the next
    /// master cannot tell such a server from a powered-off one (the lease running out is its
    /// proof that the server closed). Like the pair of faults noted at the top, these are not
    /// combined: while such a writer exists nothing is cut off...
    fn unguarded_writer(&self) -> bool {
        self.quorum.is_some()
            && self.nodes.iter().any(|n| {
                n.server.up
                    && !n.server.read_only
                    && (n.server.stalled || n.agent.as_ref().is_none_or(|a| a.stalled))
            })
    }

    /// ...and a writable server cut off from the others keeps its agent and its server
    /// running.
    fn cut_off_writer(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        self.quorum.is_some() && (n.isolated || n.cut) && n.server.up && !n.server.read_only
    }

    fn power_cut(&mut self, i: usize) {
        self.kill_agent(i);
        self.crash_server(i);
        let n = &mut self.nodes[i];
        n.powered = false;
        n.vip = false;
        n.isolated = false;
        n.cut = false;
        if self.client_arp == Some(i) {
            // The client's entry stays until it fails; vip_target re-resolves.
        }
    }

    fn later(&mut self, f: Fault_) {
        match f {
            Fault_::PowerOn(i) => {
                if !self.nodes[i].powered {
                    self.log(|| format!("n{i} power on"));
                    self.nodes[i].powered = true;
                    self.start_server(i);
                    self.start_agent(i);
                }
            }
            Fault_::StartAgent(i) => self.start_agent(i),
            Fault_::StartServer(i) => self.start_server(i),
            Fault_::ResumeServer(i) => self.resume_server(i),
            Fault_::ResumeAgent(i) => self.resume_agent(i),
            Fault_::Heal(i) => {
                if i < self.nodes.len() && (self.nodes[i].isolated || self.nodes[i].cut) {
                    self.log(|| format!("n{i} partition heals"));
                    self.nodes[i].isolated = false;
                    self.nodes[i].cut = false;
                    self.excuse_after_partition();
                }
            }
            Fault_::EtcdBack => {
                if self.etcd.down_until.is_some_and(|t| t <= self.now) {
                    self.etcd_back();
                }
            }
            Fault_::EtcdReach(i) => {
                if self.nodes[i].etcd_cut {
                    self.log(|| format!("n{i} reaches etcd again"));
                    self.nodes[i].etcd_cut = false;
                }
            }
        }
    }

    /// Two writers are excused until the election has settled after a partition and the loser
    /// has fenced itself.
    fn excuse_after_partition(&mut self) {
        if self.quorum.is_some() {
            return;
        }
        let until = self.now + self.unit * 2 + ms(500);
        self.excused_until = Some(self.excused_until.map_or(until, |t| t.max(until)));
        for n in &mut self.nodes {
            if n.server.up && n.server.stalled && !n.server.read_only {
                n.server.partition_leftover = true;
            }
        }
    }

    /// Ends every fault and lets the cluster settle.
    fn heal(&mut self) {
        self.chaos_until = None;
        self.loss = 0;
        self.delay = (ms(0), ms(1));
        self.log(|| "HEAL".to_string());
        if self.quorum.is_some() {
            self.etcd.slow = None;
            self.etcd_back();
            for n in &mut self.nodes {
                n.etcd_cut = false;
            }
        }
        let had_partition = self.nodes.iter().any(|n| n.isolated || n.cut);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].powered {
                self.nodes[i].powered = true;
                self.start_server(i);
            }
            self.nodes[i].isolated = false;
            self.nodes[i].cut = false;
            self.start_server(i);
            self.resume_server(i);
            self.resume_agent(i);
            if self.nodes[i].agent.as_ref().is_some_and(|a| a.stopping) {
                self.kill_agent(i);
            }
            self.start_agent(i);
        }
        if had_partition {
            self.excuse_after_partition();
        }
    }

    /// After healing and settling: one writable server, the election's master, holding every
    /// acknowledged write.
    fn check_settled(&self) -> Result<(), String> {
        let writers: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].server.up && !self.nodes[i].server.read_only)
            .collect();
        let masters: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.coord.state() == State::Master)
            })
            .collect();
        let [w] = writers[..] else {
            // Diverged histories after a partition need an operator; anything else must heal.
            if self.partitions > 0 && writers.is_empty() {
                // With a quorum two writers never overlapped, so one of the histories the
                // operator chooses from still holds every acknowledged write.
                if self.quorum.is_some()
                    && let Some(e) = (0..self.nodes.len())
                        .map(|i| self.check_acked_on(i))
                        .min_by_key(|r| r.as_ref().err().map_or(0, |e| e.0))
                        .and_then(Result::err)
                {
                    return Err(format!(
                        "no writer and no server holds every acknowledged write: {}",
                        e.1
                    ));
                }
                return Ok(());
            }
            return Err(format!(
                "liveness: writable servers {writers:?}, election masters {masters:?}"
            ));
        };
        if masters != [w] {
            return Err(format!(
                "the writable server n{w} is not the only election master ({masters:?})"
            ));
        }
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].vip)
            .collect();
        if holders != [w] {
            return Err(format!("VIP on {holders:?}, writer n{w}"));
        }
        self.check_acked_on(w).map_err(|e| e.1)
    }

    /// Every acknowledged write (bar the exempt ones) is on node `w`; else how many are not,
    /// and which.
    fn check_acked_on(&self, w: usize) -> Result<(), (usize, String)> {
        let have: std::collections::BTreeSet<u64> =
            self.nodes[w].server.log.iter().map(|t| t.write).collect();
        let lost: Vec<(u64, usize, Mono)> = self
            .acked
            .iter()
            .filter(|(id, (_, _, exempt))| !exempt && !have.contains(id))
            .map(|(id, (n, t, _))| (*id, *n, *t))
            .collect();
        if !lost.is_empty() {
            let first = lost[0];
            let where_: Vec<String> = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    n.server
                        .log
                        .iter()
                        .find(|t| t.write == first.0)
                        .map(|t| format!("n{i} has it as 0-{}-{}", t.server, t.seq))
                })
                .collect();
            return Err((
                lost.len(),
                format!(
                    "I1: {} acknowledged write(s) missing on n{w}; first: write {} acknowledged by n{} at {:.4}s ({})",
                    lost.len(),
                    first.0,
                    first.1,
                    first.2.0 as f64 / 1e9,
                    where_.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "seed {}: {} nodes, semi-sync timeout {:?}, writes sent {}, acknowledged {}, replays sent {} (dropped {}), junk sent {}",
            self.seed,
            self.nodes.len(),
            self.nodes[0].server.timeout,
            self.writes_sent,
            self.acked.len(),
            self.replays_sent,
            self.replays_dropped,
            self.junk_sent
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let sv = &n.server;
            s += &format!(
                "\n  n{i} {} skew {} preempt {} powered {} agent {} server up {} ro {} log {} (last {:?}) source {:?} semi {}/{} no_tx {} vip {} view {:?}",
                n.addr,
                n.params.advskew,
                n.params.preempt,
                n.powered,
                n.agent
                    .as_ref()
                    .map_or("-".to_string(), |a| a.coord.state().to_string()),
                sv.up,
                sv.read_only,
                sv.log.len(),
                sv.log.last(),
                sv.source,
                sv.semi_enabled,
                sv.semi_on,
                sv.no_tx,
                n.vip,
                n.agent.as_ref().and_then(|a| a.coord.db_view()),
            );
            if let Some(q) = n.agent.as_ref().and_then(|a| a.coord.quorum_view(self.now)) {
                s += &format!("\n    quorum {q:?}");
            }
        }
        if let Some(ttl) = self.quorum {
            s += &format!(
                "\n  etcd (TTL {ttl:?}): key {:?} leases {:?} down until {:?}",
                self.etcd.key, self.etcd.leases, self.etcd.down_until
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

fn run_seed(seed: u64, trace: bool, quorum: bool) -> Result<Sim, String> {
    let mut sim = Sim::new(seed, trace, quorum);
    let result = (|| -> Result<(), String> {
        for i in 0..sim.nodes.len() {
            sim.start_agent(i);
        }
        // The cluster forms and takes writes before the faults begin.
        let formed = sim.now + sim.unit * 3;
        sim.after(sim.unit * 2, Ev::ClientWrite);
        sim.run_until(formed)?;
        let chaos_len = Duration::from_secs(sim.rng.range(15, 45));
        sim.chaos_until = Some(sim.now + chaos_len);
        sim.after(ms(100), Ev::Chaos);
        let end = sim.now + chaos_len;
        sim.run_until(end)?;
        sim.heal();
        let settled = sim.now + sim.unit * 6 + Duration::from_secs(15);
        sim.run_until(settled)?;
        sim.check_settled()
    })();
    match result {
        Ok(()) => Ok(sim),
        Err(e) => Err(format!("{e}\n{}", sim.describe())),
    }
}

/// Runs `runs` seeds (from `FAILOVER_SIM_FIRST`, which moves the window for long searches) on
/// every core and fails with the trace of the lowest failing seed.
fn run_seeds(runs: u64, quorum: bool) {
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
    let runs = env("FAILOVER_SIM_RUNS").unwrap_or(runs);
    let first = env("FAILOVER_SIM_FIRST").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    /// Per worker: its first failing seed, if any, and the writes acknowledged and sent.
    type Worker = (Option<(u64, String)>, u64, u64);
    let results: Vec<Worker> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    let (mut acked, mut writes) = (0, 0);
                    for seed in (first + w..first + runs).step_by(threads as usize) {
                        match run_seed(seed, false, quorum) {
                            Ok(sim) => {
                                acked += sim.acked.len() as u64;
                                writes += sim.writes_sent;
                            }
                            Err(e) => return (Some((seed, e)), acked, writes),
                        }
                    }
                    (None, acked, writes)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    let acked: u64 = results.iter().map(|r| r.1).sum();
    let failures: Vec<&(u64, String)> = results.iter().filter_map(|r| r.0.as_ref()).collect();
    if let Some((seed, _)) = failures.iter().min_by_key(|f| f.0) {
        let detail = run_seed(*seed, true, quorum).err().unwrap_or_default();
        let env = if quorum { "FAILOVER_SIM_QUORUM=1 " } else { "" };
        panic!(
            "{} worker(s) found a failing seed ({:?}); replay with {env}FAILOVER_SIM_SEED={seed}:\n{detail}",
            failures.len(),
            failures.iter().map(|f| f.0).collect::<Vec<_>>()
        );
    }
    assert!(
        acked > runs * 50,
        "the client hardly wrote: {acked} acknowledged writes in {runs} runs"
    );
}

#[test]
fn random_clusters_keep_every_acknowledged_write() {
    run_seeds(RUNS, false);
}

/// The same clusters and faults under a quorum lease, with etcd's own faults besides: at most
/// one writable server at every instant and no acknowledged write lost, partitions included.
#[test]
fn quorum_clusters_never_have_two_writers_even_across_partitions() {
    run_seeds(QUORUM_RUNS, true);
}

/// Replays one seed with its trace.
#[test]
#[ignore = "set FAILOVER_SIM_SEED"]
fn replay() {
    let seed: u64 = std::env::var("FAILOVER_SIM_SEED")
        .expect("FAILOVER_SIM_SEED")
        .parse()
        .expect("a number");
    let quorum = std::env::var_os("FAILOVER_SIM_QUORUM").is_some();
    match run_seed(seed, true, quorum) {
        Ok(sim) => println!("{}\n{} events", sim.describe(), sim.steps),
        Err(e) => panic!("{e}"),
    }
}
