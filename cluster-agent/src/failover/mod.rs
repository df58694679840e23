//! The failover coordinator: what this node does with its VIP and its database, decided in one
//! pure state machine around the CARP election.
//!
//! The runtime feeds it verified adverts, timer expiries, link changes, operator requests,
//! periodic observations of the local database and of the master it follows, and the outcome
//! of every effect it asked for. It answers with effects (adverts, gratuitous ARP, VIP changes,
//! XDP role, hooks, one database operation at a time, which master to observe) and sleeps until
//! [`Coordinator::poll_timeout`]. Time is an input, so the seeded simulation in `sim` drives
//! real coordinators against a model of the databases and checks the invariants on every seed:
//!
//! - no acknowledged write is lost by anything done automatically: a node opens its database
//!   only once it holds everything any reachable node holds and every unreachable node is
//!   accounted for ([`current`], [`plan`]); otherwise it refuses and says why until the data
//!   appears or an operator forces it;
//! - at most one writable database outside partitions: every node starts fenced, fences before
//!   it listens or elects, fences before it lets go of the VIP, and a node about to open fences
//!   every reachable peer first; with a quorum lease ([`lease`]) partitions included;
//! - every failure is visible: refused promotions and rejoins, failed fences, VIP errors and
//!   semi-sync fallbacks are in [`Coordinator::status`] and the log.
//!
//! The database role changes only when an operation's outcome confirms it; an observation that
//! contradicts the confirmed role (someone else fenced or opened the server) resets it.

pub mod current;
pub mod lease;
pub mod plan;
#[cfg(test)]
mod sim;
pub mod takeover;
#[cfg(test)]
mod tests;
pub mod track;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::carp::machine::{self, Action, Machine, Params, Reason, State};
use crate::carp::time::Mono;
use crate::db::gtid::Gtids;
use crate::hooks::Hook;
use current::{Currentness, NotCurrent};
use lease::{Lease, LeaseReport, QuorumView};
use plan::Decision;
use takeover::Takeover;

/// Why the database could not be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing listens on its port: the server is not running, so it cannot commit.
    Refused(String),
    /// Its host accepts connections but the server does not answer: stalled (stopped, hung),
    /// alive, and able to go on committing when it resumes.
    Stalled(String),
    /// Anything else: no answer from the host at all (powered off, cut off), resets, TLS or SQL
    /// errors.
    Other(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Refused(e) | Fault::Stalled(e) | Fault::Other(e) => f.write_str(e),
        }
    }
}

/// The master side of semi-sync replication on one server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemiSync {
    /// Waiting for replicas right now (off after a fallback to asynchronous replication).
    pub on: bool,
    /// Commits acknowledged to their client without any replica's acknowledgement.
    pub no_tx: u64,
    /// Semi-sync replicas connected.
    pub clients: u32,
    /// How long a commit waits for a replica before the server goes on alone.
    #[serde(skip)]
    pub timeout: Duration,
}

/// The local server as the observation task saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalDb {
    pub read_only: bool,
    /// Everything it logged (`@@gtid_binlog_state`).
    pub logged: Gtids,
    pub semi_sync: SemiSync,
    pub replica: Option<Replica>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replica {
    /// The master it is configured to replicate from.
    pub master: Option<Ipv4Addr>,
    pub io_running: bool,
    pub sql_running: bool,
    /// Received from the master (`Gtid_IO_Pos`).
    pub received: Gtids,
    /// TLS required and the master's certificate verified.
    pub verified_tls: bool,
    pub sql_error: Option<String>,
    /// `Seconds_Behind_Master`, while both threads run.
    pub lag_secs: Option<u64>,
}

/// The followed master's server as the observation task saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterDb {
    pub read_only: bool,
    pub logged: Gtids,
    pub semi_sync: SemiSync,
}

/// One periodic look at the local server and at the master being followed.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When the look began (the master's answer is no older than this).
    pub at: Mono,
    /// When the master was last asked (see [`crate::db::Db::observe_master`]): a master that
    /// did not answer had answered everything before this, so its silence began no sooner.
    pub asked: Mono,
    pub local: Result<LocalDb, Fault>,
    pub master: Option<(Ipv4Addr, Result<MasterDb, Fault>)>,
}

/// What one node holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    pub logged: Gtids,
    /// Received by its replication thread, applied or not.
    pub received: Gtids,
}

impl Holdings {
    pub fn all(&self) -> Gtids {
        self.logged.union(&self.received)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerState {
    pub holdings: Holdings,
    /// Still writable after we tried to fence it.
    pub writable: bool,
}

/// A peer as the master's periodic look found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSeen {
    pub addr: Ipv4Addr,
    pub holdings: Holdings,
    pub writable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReport {
    pub addr: Ipv4Addr,
    pub result: Result<PeerState, Fault>,
}

/// Least time between two host checks of one master ahead of a takeover (see
/// [`Effect::CheckHost`]).
pub const EARLY_CHECK_SPACING: Duration = Duration::from_secs(1);

/// A peer to ask in a prepare step, and whether it is worth waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub addr: Ipv4Addr,
    /// Its server has not answered our samples for a while: report it unreachable at once
    /// rather than wait for a connection that will not come.
    pub skip: bool,
    /// A bare handshake with its host began at this instant (see [`Effect::CheckHost`]),
    /// after its last advert: if that one goes unanswered, the host is gone, and the prepare
    /// step need not begin a check of its own.
    pub checked_since: Option<Mono>,
}

/// The one database operation in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbOp {
    /// End client sessions, `read_only` on.
    Fence,
    /// Fence, check for errant transactions, replicate from `master` over verified TLS.
    Follow { master: Ipv4Addr },
    /// Report what every node holds; with `fence`, fence every reachable peer that is
    /// writable first (without, such a peer is reported writable).
    ///
    /// With `ready_once_silent` (the silent master this replica followed), meanwhile make the
    /// local replica ready to open as [`DbOp::Promote`] would (stop receiving, apply what was
    /// received, take the opening locks) but leave `read_only` on, if the step is still waiting
    /// for a peer after a moment: it then mostly waits for a host check, and the opening needs
    /// only its last checks. A master whose server answers is not drained from (its writes go
    /// on being acknowledged), and a step that ends sooner has no wait to fill.
    /// What is made ready is kept for the next operation if it is a promotion, and undone by
    /// any other ([`DbOp::Resume`] when nothing else follows).
    Prepare {
        peers: Vec<Probe>,
        fence: bool,
        ready_once_silent: Option<Ipv4Addr>,
    },
    /// Replicate from `from` until `target` is applied.
    CatchUp { from: Ipv4Addr, target: Gtids },
    /// Fence these peers' databases: found writable while this node is the writer.
    FencePeers { peers: Vec<Ipv4Addr> },
    /// Apply everything received, stop replicating, semi-sync master on, `read_only` off;
    /// refused unless what is applied covers `target`, and refused if one of `recheck` (the
    /// peers that answered the prepare step) has become writable meanwhile.
    Promote {
        target: Gtids,
        recheck: Vec<Ipv4Addr>,
    },
    /// Undo what a prepare step made ready, if anything: release the opening locks, receive
    /// and apply again. Asked for when that step did not lead to an opening or a catch-up.
    Resume,
}

impl DbOp {
    pub fn name(&self) -> &'static str {
        match self {
            DbOp::Fence => "fence",
            DbOp::Follow { .. } => "follow",
            DbOp::Prepare { .. } => "prepare",
            DbOp::CatchUp { .. } => "catch-up",
            DbOp::FencePeers { .. } => "fence-peers",
            DbOp::Promote { .. } => "promote",
            DbOp::Resume => "resume",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowError {
    /// The local server holds transactions the master lacks.
    Errant(Vec<String>),
    Failed(String),
}

/// What came of a [`DbOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbOutcome {
    Fenced(Result<(), String>),
    Followed(Result<(), FollowError>),
    Prepared {
        own: Result<Holdings, String>,
        peers: Vec<PeerReport>,
        /// The instant each step of making ready returned (empty if nothing was made ready:
        /// not asked, the master answered, or it failed, which is logged).
        ready: Vec<(&'static str, Mono)>,
    },
    /// Holds what the source held, with the instant each step of the catch-up returned.
    CaughtUp(Result<Vec<(&'static str, Mono)>, String>),
    PeersFenced(Vec<(Ipv4Addr, Result<(), String>)>),
    /// Open for writes, with the instant each statement of the opening returned.
    Promoted(Result<Vec<(&'static str, Mono)>, String>),
    Resumed(Result<(), String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Advert {
        advbase: u8,
        advskew: u8,
    },
    Garp,
    /// Add (true) or remove (false) the VIP; answer with [`Input::VipDone`].
    Vip(bool),
    /// Tell the XDP program whether we are MASTER (answer ARP, let VIP traffic in).
    XdpRole(bool),
    Hook(Hook),
    /// Answer with [`Input::DbDone`].
    Db(DbOp),
    /// Which master the observation task samples besides the local server.
    Watch(Option<Ipv4Addr>),
    /// Begin a bare TCP handshake with the database port at `addr`, to be found again by
    /// `since` (see [`Probe::checked_since`]). Asked for when the followed master's advert is
    /// overdue: a takeover may follow within a few intervals, and its prepare step then knows
    /// sooner whether the old master's host is gone than by beginning a check only then.
    CheckHost {
        addr: Ipv4Addr,
        since: Mono,
    },
    /// Hold off new connections to the VIP (XDP drops each request and reports it) and answer
    /// with [`Input::Drained`] once no connection on it is left open.
    Drain,
    /// The next master announced the VIP: send it the connection requests held so far, and
    /// any held from now on, until [`Effect::EndHold`].
    HandOffHeld,
    /// Stop holding connection requests and forget those still held: their clients send
    /// them again by themselves.
    EndHold,
    /// Hold the quorum's leader key (true) or release it (false); answer with
    /// [`Input::Lease`] reports. Asked for by a MASTER, released only once its database is
    /// confirmed read-only.
    Lease(bool),
}

#[derive(Clone, Debug)]
pub enum Input {
    /// A verified advert from another node.
    Advert {
        src: IpAddr,
        advbase: u8,
        advskew: u8,
    },
    LinkUp,
    LinkDown,
    Switchover,
    /// No connection on the VIP is left open (see [`Effect::Drain`]).
    Drained,
    /// Another MAC announced the VIP while connection requests are held: the next master's
    /// gratuitous ARP, once its database is open. Unauthenticated, so it only counts once an
    /// authenticated advert has named that master.
    VipClaimed,
    Shutdown,
    Observed(Observation),
    /// The master's look at its peers, begun at `at`: what each that answered holds and
    /// whether it is writable, then what this node has logged (read after the peers, so a
    /// replica can never seem to hold more than its master).
    PeersSeen {
        at: Mono,
        peers: Vec<PeerSeen>,
        own: Option<Gtids>,
    },
    DbDone(DbOutcome),
    VipDone {
        add: bool,
        result: Result<(), String>,
    },
    /// What the quorum task learnt of the leader key.
    Lease(LeaseReport),
    /// One probe of service check `index` (see [`Coordinator::with_tracks`]).
    Probe {
        index: usize,
        result: Result<(), String>,
    },
    /// Election settings from a reloaded configuration (see [`machine::Input::Reconfigure`]).
    Reconfigure(Params),
    /// The advert socket dropped packets since the last authentic advert (see
    /// [`machine::Input::AdvertsLost`]). Not a sign of the master's life for the database
    /// side: only the election's countdown starts again.
    AdvertsLost,
}

/// The database part of the settings.
#[derive(Clone, Debug)]
pub struct DbPolicy {
    /// This node's database address.
    pub own: Ipv4Addr,
    /// Every other database node of the cluster.
    pub peers: Vec<Ipv4Addr>,
    /// Take the VIP before the database is open (reads sooner, writes fail until promoted).
    pub vip_first: bool,
    /// How soon a failed operation is tried again.
    pub retry: Duration,
    /// Slack for sampling and delivery latency in the currentness rule.
    pub margin: Duration,
    /// A master whose server has not answered for this long is not waited for when preparing.
    pub unreachable_after: Duration,
    /// A replica applying further behind than this advertises the demoted skew: it would take
    /// long to drain at promotion.
    pub max_lag: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub carp: Params,
    pub db: Option<DbPolicy>,
    /// The quorum lease's TTL, with `[quorum]`: the database opens only under the leader key.
    pub quorum: Option<Duration>,
}

/// The local database's confirmed role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Not known to be read-only (start-up, a failed fence, a server that went away).
    Unknown,
    Fenced,
    Replica(Ipv4Addr),
    Writable,
}

/// How many failed VIP changes a MASTER tolerates before it hands over.
const VIP_FAILURES_BEFORE_HANDOVER: u32 = 3;
/// Local samples a MASTER may miss (timeouts, not refusals) before it hands over.
const LOCAL_MISSES_BEFORE_HANDOVER: u32 = 3;
/// Errant transactions do not go away by themselves: look again this much more slowly.
const ERRANT_RETRY_FACTOR: u32 = 10;
/// Longest wait after becoming MASTER before a peer found writable is fenced (see
/// `DbSide::fence_from`); otherwise one master-down interval, as long as a live master's
/// next advert can take (fast mode's few milliseconds; compatible mode's second is not
/// waited for, as a master silent for three seconds is not merely late).
const FENCE_SETTLE_MAX: Duration = Duration::from_millis(50);
/// Longest a planned switchover waits for the connections open on the VIP to finish before it
/// moves the address anyway (cutting them): new connections are held off meanwhile, so this
/// bounds the clients' wait. Requests on a connection of its own end within milliseconds;
/// an idle pooled connection would never end by itself.
pub const DRAIN_MAX: Duration = Duration::from_millis(500);
/// Longest connection requests are held from the start of a drain: by then their clients
/// have sent them again (a second after the first attempt, for Linux), and holding them
/// longer would only hand the next master duplicates.
pub const HOLD_MAX: Duration = Duration::from_millis(1500);
/// Longest a hand-over waits for the fence of this node's database before it bows out
/// anyway: a stalled server must not keep the VIP from every node for the fence's whole
/// bound. As long as the next master's probe of a peer that does not answer, and well inside
/// [`HOLD_MAX`] after a drain, so held connection requests still reach the next master.
pub const HAND_OVER_FENCE_MAX: Duration = Duration::from_millis(250);

struct DbSide {
    policy: DbPolicy,
    role: Role,
    op: Option<DbOp>,
    /// Observations that began before this reflect a state an operation has since changed.
    op_done_at: Mono,
    retry_at: Option<Mono>,
    current: Currentness,
    watching: Option<Ipv4Addr>,
    refused: Option<String>,
    errant: Option<(Ipv4Addr, Vec<String>)>,
    forced: bool,
    local_down: Option<String>,
    local_misses: u32,
    /// Why the local replica is a poor candidate (applying far behind, or stopped on an error).
    lagging: Option<String>,
    /// How far the local replica applies behind its master, as last sampled.
    lag_secs: Option<u64>,
    /// Promotions refused (each new reason counts once), and rejoins refused for errant
    /// transactions: for metrics and alerts.
    refusals: u64,
    rejoins_refused: u64,
    /// The local server's semi-sync state while writable.
    semi: Option<SemiSync>,
    fallbacks: u64,
    last_error: Option<String>,
    fence_error: Option<String>,
    /// The fence before this node leaves the mastership (a stop or a hand-over) was tried
    /// and failed: leave anyway. The next master's prepare step fences this server itself,
    /// or finds it unreachable.
    leave_fence_tried: bool,
    /// This mastership began while the old master's agent was alive (it was preempted, bowed
    /// out or advertised too slowly): its server must be fenced before ours opens, not
    /// presumed dead when it does not answer.
    took_over_live: bool,
    /// The peers that answered the last prepare step.
    reached: Vec<Ipv4Addr>,
    /// Peers a catch-up failed from in this mastership (see [`plan::Context::failed_sources`]).
    failed_sources: Vec<Ipv4Addr>,
    /// From when this mastership may fence a peer found writable: a master whose adverts
    /// were only late (its process starved for a few milliseconds, in fast mode) answers our
    /// first advert within its interval and the election ends this mastership; fencing it
    /// meanwhile would stop its writes for nothing.
    fence_from: Option<Mono>,
    /// The election's master, when it is not a database node (warned about once).
    stranger: Option<Ipv4Addr>,
    /// Since when a peer has been seen writable while this node is the writer.
    second_writer_since: Option<Mono>,
    /// `refused` says why the quorum lease keeps the database closed (not a check's refusal:
    /// it goes as soon as the lease is held).
    lease_wait: bool,
    /// The last host check asked for: whose, and when.
    host_check: Option<(Ipv4Addr, Mono)>,
}

struct VipSide {
    want_seen: bool,
    have: bool,
    in_flight: Option<bool>,
    failures: u32,
    retry_at: Option<Mono>,
    error: Option<String>,
    /// The up hook ran for this mastership.
    up_ran: bool,
    /// When to announce the VIP once more (see [`GARP_AGAIN_AFTER`]).
    garp_again: Option<Mono>,
}

/// A host whose neighbour entry for the VIP changed less than its lock time ago (Linux: one
/// second) ignores a gratuitous ARP: after two switchovers in quick succession its packets
/// would still go to the old master. The new master announces the VIP once more after that.
const GARP_AGAIN_AFTER: Duration = Duration::from_millis(1100);

/// Why a MASTER bows out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandOver {
    /// Asked to (`switchover`), or it cannot serve (its database down, no VIP).
    Switchover,
    /// The agent stops.
    Shutdown,
    /// A service check fails: bow out, preempt again once it passes.
    StepDown,
}

/// See the module documentation.
pub struct Coordinator {
    params: Params,
    machine: Machine,
    /// Election state changes so far.
    transitions: u64,
    /// Transitions by the state entered and why, for metrics.
    transitions_by: Vec<(State, Reason, u64)>,
    /// A new mastership's first advert, held until this `drive` has settled the skew to
    /// advertise (see [`Coordinator::settle_skew`]): `Some(None)` while holding, with the
    /// newest advert once one is queued.
    first_advert: Option<Option<(u8, u8)>>,
    /// Service checks: while one fails this node is a poor candidate.
    tracks: Vec<track::Track>,
    started: bool,
    link_up: bool,
    stopping: bool,
    stopped: bool,
    /// A MASTER about to bow out (a switchover, a hand-over, a stop) releases the VIP first:
    /// the bow-out makes a peer take the address at once, and the two must never hold it
    /// together.
    handing_over: Option<HandOver>,
    /// Until when that hand-over waits for the fence (see [`HAND_OVER_FENCE_MAX`]); `None`
    /// once that time has passed, or for a hand-over that does not wait.
    hand_over_fence_until: Option<Mono>,
    /// A planned switchover (or a step-down) waiting, until this deadline, for the
    /// connections on the VIP to finish before the hand-over begins (see [`Effect::Drain`]);
    /// then the hand-over of that kind.
    draining: Option<Mono>,
    drain_then: HandOver,
    /// Connection requests to the VIP are held (from a drain on) until this deadline, and
    /// handed to the next master when it announces the VIP ([`Effect::HandOffHeld`]).
    holding: Option<Mono>,
    db: Option<DbSide>,
    /// The quorum lease, with `[quorum]` and a database.
    lease: Option<Lease>,
    /// The last [`Effect::Lease`] asked for.
    lease_wanted: bool,
    /// This mastership had its database open and lost the lease: it bows out once fenced.
    lease_lost: bool,
    vip: VipSide,
    /// The last takeover, step by step.
    takeover: Option<Takeover>,
    effects: VecDeque<Effect>,
}

/// What `status` shows of the database side.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DbView {
    /// `master` (writable), `replica`, `fenced` or `unknown` (not confirmed read-only).
    pub role: String,
    pub replicating_from: Option<Ipv4Addr>,
    /// Known to hold every write the master acknowledged.
    pub current: bool,
    /// Why this node advertises the demoted skew: not known to hold every acknowledged
    /// write, its database is down, or it holds errant transactions.
    pub gate: Option<String>,
    /// The operation in flight.
    pub operation: Option<String>,
    /// Why this MASTER keeps its database closed.
    pub refused: Option<String>,
    /// Why this MASTER waits for the quorum lease before it opens.
    #[serde(default)]
    pub quorum_wait: Option<String>,
    pub errant: Vec<String>,
    pub forced: bool,
    /// Semi-sync on this server while it is the master.
    pub semi_sync: Option<SemiSync>,
    pub semi_sync_fallbacks: u64,
    /// How far this replica applies behind its master (seconds), as last sampled.
    #[serde(default)]
    pub lag_secs: Option<u64>,
    /// Promotions refused so far (each new reason once) and rejoins refused for errant
    /// transactions.
    #[serde(default)]
    pub refusals: u64,
    #[serde(default)]
    pub rejoins_refused: u64,
    pub local_down: Option<String>,
    pub fence_error: Option<String>,
    pub last_error: Option<String>,
}

impl Coordinator {
    /// A node starts as BACKUP. With a database it fences first and elects only when the fence
    /// is confirmed (or the server is known unreachable): nothing can reach a writable copy
    /// here before this node knows it is not one.
    pub fn new(cfg: Config, now: Mono) -> Coordinator {
        let mut c = Coordinator {
            params: cfg.carp,
            machine: Machine::new(cfg.carp, now),
            transitions: 0,
            transitions_by: Vec::new(),
            first_advert: None,
            tracks: Vec::new(),
            started: cfg.db.is_none(),
            link_up: true,
            stopping: false,
            stopped: false,
            handing_over: None,
            draining: None,
            drain_then: HandOver::Switchover,
            holding: None,
            hand_over_fence_until: None,
            lease: cfg.quorum.filter(|_| cfg.db.is_some()).map(Lease::new),
            lease_wanted: false,
            lease_lost: false,
            db: cfg.db.map(|policy| DbSide {
                current: if cfg.quorum.is_some() {
                    Currentness::new(policy.margin).with_quorum()
                } else {
                    Currentness::new(policy.margin)
                },
                policy,
                role: Role::Unknown,
                op: None,
                op_done_at: now,
                retry_at: None,
                watching: None,
                refused: None,
                errant: None,
                forced: false,
                local_down: None,
                local_misses: 0,
                lagging: None,
                lag_secs: None,
                refusals: 0,
                rejoins_refused: 0,
                semi: None,
                fallbacks: 0,
                last_error: None,
                fence_error: None,
                leave_fence_tried: false,
                took_over_live: false,
                fence_from: None,
                reached: Vec::new(),
                failed_sources: Vec::new(),
                stranger: None,
                host_check: None,
                second_writer_since: None,
                lease_wait: false,
            }),
            vip: VipSide {
                want_seen: false,
                have: false,
                in_flight: None,
                failures: 0,
                retry_at: None,
                error: None,
                up_ran: false,
                garp_again: None,
            },
            takeover: None,
            effects: VecDeque::new(),
        };
        c.drive(now);
        c
    }

    /// The last takeover, step by step (see [`takeover`]).
    pub fn takeover(&self) -> Option<&Takeover> {
        self.takeover.as_ref()
    }

    /// Records a takeover step; the takeover is complete once the node serves: VIP added and
    /// announced, and the database (if any) open.
    fn takeover_step(&mut self, name: &str, now: Mono) {
        let open = self.db.as_ref().is_none_or(|d| d.role == Role::Writable);
        let Some(t) = self.takeover.as_mut() else {
            return;
        };
        t.step(name, now);
        if open && t.after("vip").is_some() && t.after("garp").is_some() {
            t.finish();
        }
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    pub fn state(&self) -> State {
        self.machine.state()
    }

    /// True once a shutdown has run its course: fenced, bowed out, VIP gone.
    pub fn finished(&self) -> bool {
        self.stopped
            && self.vip.in_flight.is_none()
            && !self.vip.have
            && self.db.as_ref().is_none_or(|d| d.op.is_none())
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Mono> {
        let machine = self.started.then(|| self.machine.poll_timeout()).flatten();
        let db = self
            .db
            .as_ref()
            .filter(|d| d.op.is_none())
            .and_then(|d| d.retry_at);
        let vip = self.vip.retry_at.filter(|_| self.vip.in_flight.is_none());
        let lease = self.lease.as_ref().and_then(Lease::poll_timeout);
        let check = self.host_check_due();
        [
            machine,
            db,
            check,
            vip,
            lease,
            self.draining,
            self.holding,
            self.hand_over_fence_until,
            self.vip.garp_again,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Mono) {
        if let Some(l) = self.lease.as_mut() {
            l.handle_timeout(now);
        }
        if self.draining.is_some_and(|t| t <= now) {
            self.end_drain(now, false);
        }
        if self.holding.is_some_and(|t| t <= now) {
            self.end_hold();
        }
        if self.hand_over_fence_until.is_some_and(|t| t <= now) {
            self.hand_over_fence_until = None;
            if self
                .db
                .as_ref()
                .is_some_and(|db| db.role == Role::Writable && !db.leave_fence_tried)
            {
                tracing::warn!(
                    limit_ms = HAND_OVER_FENCE_MAX.as_millis() as u64,
                    "the database has not confirmed its fence in time: bowing out anyway (the next master fences it, or passes it over while it does not answer)"
                );
            }
        }
        if self.host_check_due().is_some_and(|t| t <= now)
            && let Some(db) = self.db.as_mut()
            && let Some(addr) = db.current.master()
        {
            db.host_check = Some((addr, now));
            self.effects
                .push_back(Effect::CheckHost { addr, since: now });
        }
        if self.vip.garp_again.is_some_and(|t| t <= now) {
            self.vip.garp_again = None;
            if self.vip.have && self.machine.state() == State::Master {
                self.effects.push_back(Effect::Garp);
            }
        }
        if self.started {
            self.machine.handle_timeout(now);
            self.pump(now);
        }
        self.drive(now);
    }

    pub fn handle(&mut self, now: Mono, input: Input) {
        match input {
            Input::Advert {
                src,
                advbase,
                advskew,
            } => {
                if !self.started {
                    return;
                }
                // Adverts of the master we followed count as signs of life also after we won:
                // one arriving while we prepare shows its agent outlived our takeover.
                if let Some(db) = self.db.as_mut()
                    && db.current.master().map(IpAddr::V4) == Some(src)
                {
                    let bow_out = advbase == cluster_common::carp::BOW_OUT
                        && advskew == cluster_common::carp::BOW_OUT;
                    db.current
                        .advert(now, (!bow_out).then(|| machine::interval(advbase, advskew)));
                }
                self.machine.handle(
                    now,
                    machine::Input::Advert {
                        src,
                        advbase,
                        advskew,
                    },
                );
            }
            Input::LinkUp | Input::LinkDown => {
                self.link_up = matches!(input, Input::LinkUp);
                if self.started {
                    self.machine.handle(
                        now,
                        if self.link_up {
                            machine::Input::LinkUp
                        } else {
                            machine::Input::LinkDown
                        },
                    );
                }
            }
            Input::Switchover => self.switchover(now),
            Input::Drained => self.end_drain(now, true),
            Input::VipClaimed => {
                let own = self.params.src;
                if self.holding.is_some()
                    && self.machine.state() == State::Backup
                    && self.machine.master().is_some_and(|m| m != own)
                {
                    tracing::info!(master = ?self.machine.master(), "switchover: the next master announced the VIP; handing it the held connection requests");
                    self.effects.push_back(Effect::HandOffHeld);
                }
            }
            Input::Shutdown => {
                tracing::info!(state = %self.machine.state(), "stopping");
                self.stopping = true;
            }
            Input::Observed(obs) => self.on_observation(now, obs),
            Input::PeersSeen { at, peers, own } => self.on_peers_seen(at, peers, own),
            Input::DbDone(outcome) => self.on_db_done(now, outcome),
            Input::VipDone { add, result } => self.on_vip_done(now, add, result),
            Input::Probe { index, result } => self.on_probe(now, index, result),
            Input::AdvertsLost => {
                if self.started {
                    self.machine.handle(now, machine::Input::AdvertsLost);
                }
            }
            Input::Reconfigure(params) => {
                self.params = Params {
                    src: self.params.src,
                    ..params
                };
                // Before the start the machine is built from these later.
                if self.started {
                    self.machine
                        .handle(now, machine::Input::Reconfigure(params));
                }
            }
            Input::Lease(report) => {
                if let Some(db) = self.db.as_mut() {
                    let master = db.current.master().map(|m| m.to_string());
                    match &report {
                        LeaseReport::HeldBy { holder, .. } if Some(holder) == master.as_ref() => {
                            db.current.key_held()
                        }
                        LeaseReport::Unreachable(_) => {}
                        _ => db.current.key_gone(now),
                    }
                }
                if let Some(l) = self.lease.as_mut() {
                    let before = l.held();
                    l.report(report);
                    let first = !before && l.held();
                    if first && self.machine.state() == State::Master && !self.writable() {
                        self.takeover_step("lease", now);
                    }
                }
            }
        }
        self.pump(now);
        self.drive(now);
    }

    /// An operator's `switchover`. Only a MASTER has anything to hand over: a node that is
    /// not says so, rather than answering as if it had, so that whoever asked (an operator
    /// or a script that picked the master a moment before it changed) is not left waiting
    /// for a hand-over that cannot come.
    pub fn request_switchover(&mut self, now: Mono) -> Result<(), String> {
        let state = self.machine.state();
        if state != State::Master {
            return Err(format!(
                "not MASTER ({state}): nothing to hand over; run this on the node `status` shows as MASTER"
            ));
        }
        self.handle(now, Input::Switchover);
        Ok(())
    }

    /// Opens the database although the checks refused it: for an operator who knows which
    /// node's data is the one to keep, after reading why it was refused.
    pub fn force_promote(&mut self, now: Mono) -> Result<(), String> {
        let state = self.machine.state();
        let Some(db) = self.db.as_mut() else {
            return Err("this agent manages no database".into());
        };
        if state != State::Master {
            return Err(
                "only the MASTER can be forced open; run this on the node `status` shows as MASTER"
                    .into(),
            );
        }
        if db.role == Role::Writable {
            return Err("the database is already open for writes".into());
        }
        tracing::warn!(refused = ?db.refused, "promotion forced by the operator: acknowledged writes on unreachable or diverged nodes may be lost");
        db.forced = true;
        db.refused = None;
        db.retry_at = None;
        self.drive(now);
        Ok(())
    }

    /// Turns the election's actions into effects and reacts to its transitions.
    fn pump(&mut self, now: Mono) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::SendAdvert { advbase, advskew } => match self.first_advert.as_mut() {
                    Some(held) => *held = Some((advbase, advskew)),
                    None => self.effects.push_back(Effect::Advert { advbase, advskew }),
                },
                // The first one follows the VIP once it is confirmed.
                Action::SendGarp => {
                    if self.vip.have {
                        self.effects.push_back(Effect::Garp);
                    }
                }
                Action::Transition { from, to, reason } => {
                    if to == State::Master {
                        self.first_advert.get_or_insert(None);
                    }
                    self.on_transition(now, from, to, reason)
                }
            }
        }
        // The database follows an IPv4 VIP only (configuration refuses `[mysql]` on an IPv6
        // vhid), so the master is an IPv4 address here.
        let watch = match (self.machine.state(), self.machine.master()) {
            (State::Backup, Some(IpAddr::V4(master))) => Some(master),
            _ => None,
        };
        if let Some(db) = self.db.as_mut() {
            // A master that is not one of the cluster's database nodes (a misconfigured list,
            // or a replayed advert under a stranger's address) has no database to follow.
            let watch = watch.filter(|m| {
                let known = db.policy.peers.contains(m);
                if !known && db.stranger != Some(*m) {
                    tracing::warn!(master = %m, "the election's master is not in the database nodes (`[mysql] nodes`): not following it");
                }
                db.stranger = (!known).then_some(*m);
                known
            });
            if db.watching == watch {
                return;
            }
            db.watching = watch;
            // Winning keeps what was learnt of the old master: the promotion is judged by it.
            if watch.is_some() {
                db.current.follow(watch);
            }
            self.effects.push_back(Effect::Watch(watch));
        }
    }

    fn on_transition(&mut self, now: Mono, from: State, to: State, reason: Reason) {
        tracing::info!(%from, state = %to, ?reason, "state change");
        self.transitions += 1;
        match self
            .transitions_by
            .iter_mut()
            .find(|(s, r, _)| (*s, *r) == (to, reason))
        {
            Some((_, _, n)) => *n += 1,
            None => self.transitions_by.push((to, reason, 1)),
        }
        let settle = self.machine.master_down().min(FENCE_SETTLE_MAX);
        match to {
            State::Master => {
                self.takeover = Some(Takeover::new(reason, now));
                self.vip.up_ran = false;
                self.lease_lost = false;
                if let Some(db) = self.db.as_mut() {
                    db.refused = None;
                    db.retry_at = None;
                    db.failed_sources.clear();
                    db.took_over_live = reason != Reason::MasterDown;
                    // Only a master that went silent may be merely late; one that bowed out
                    // or was preempted steps down and fences itself.
                    db.fence_from = (reason == Reason::MasterDown).then(|| now + settle);
                    db.current.won(now);
                }
            }
            State::Backup => {
                // VIP traffic is dropped from now on, before the address goes.
                self.effects.push_back(Effect::XdpRole(false));
                self.effects.push_back(Effect::Hook(Hook::Down));
                self.vip.failures = 0;
                self.vip.retry_at = None;
                self.lease_lost = false;
                if let Some(db) = self.db.as_mut() {
                    if db.refused.is_some() {
                        // Preempt again at the pace of a refused promotion's retries, not at
                        // every advert of the master it yielded to.
                        self.machine.handle(
                            now,
                            machine::Input::HoldOffPreemption(now + db.policy.retry),
                        );
                    }
                    db.refused = None;
                    db.lease_wait = false;
                    db.forced = false;
                    db.retry_at = None;
                }
            }
        }
    }

    fn on_observation(&mut self, now: Mono, obs: Observation) {
        let state = self.machine.state();
        let Some(db) = self.db.as_mut() else { return };
        let replicating = matches!(db.role, Role::Replica(m) if Some(m) == db.watching)
            && obs
                .local
                .as_ref()
                .ok()
                .and_then(|l| l.replica.as_ref())
                .is_some_and(|r| r.master == db.watching && r.verified_tls);
        db.current.observe(&obs, replicating, now);
        let local = match obs.local {
            Ok(l) => l,
            Err(fault) => {
                db.local_misses += 1;
                let gone = matches!(fault, Fault::Refused(_))
                    || db.local_misses >= LOCAL_MISSES_BEFORE_HANDOVER;
                if db.local_down.is_none() {
                    tracing::warn!(error = %fault, "local database not answering");
                }
                db.local_down = Some(fault.to_string());
                if gone && db.op.is_none() && db.role != Role::Unknown {
                    // Whatever it was, it must be fenced again when it returns.
                    if db.role == Role::Writable && state == State::Master {
                        tracing::error!(error = %fault, "database down on the MASTER: handing over");
                        self.handing_over.get_or_insert(HandOver::Switchover);
                    }
                    db.role = Role::Unknown;
                }
                return;
            }
        };
        db.local_misses = 0;
        if db.local_down.take().is_some() {
            tracing::info!("local database answering again");
        }
        db.lag_secs = local.replica.as_ref().and_then(|r| r.lag_secs);
        let lagging = local.replica.as_ref().and_then(|r| {
            if let Some(e) = &r.sql_error {
                Some(format!("replication stopped applying: {e}"))
            } else {
                r.lag_secs
                    .filter(|l| *l > db.policy.max_lag.as_secs())
                    .map(|l| {
                        format!(
                            "applying {l} s behind (limit {} s)",
                            db.policy.max_lag.as_secs()
                        )
                    })
            }
        });
        if lagging != db.lagging {
            if let Some(why) = &lagging {
                tracing::warn!(reason = %why, "replica is a poor candidate: advertising the demoted skew");
            }
            db.lagging = lagging;
        }
        // Semi-sync on our own master side: a fallback is never silent.
        if db.role == Role::Writable {
            let now_semi = local.semi_sync;
            match db.semi {
                Some(prev) if prev.on && !now_semi.on => {
                    db.fallbacks += 1;
                    tracing::error!(
                        unacknowledged = now_semi.no_tx,
                        replicas = now_semi.clients,
                        "semi-sync replication fell back to asynchronous: commits are acknowledged without any replica; replicas cannot be promoted automatically until one has caught up"
                    );
                }
                Some(prev) if !prev.on && now_semi.on => {
                    tracing::info!(
                        replicas = now_semi.clients,
                        "semi-sync replication is on again"
                    );
                }
                None if !now_semi.on => {
                    db.fallbacks += 1;
                    tracing::error!(
                        replicas = now_semi.clients,
                        "semi-sync replication is off on the master: commits are acknowledged without any replica"
                    );
                }
                _ => {}
            }
            db.semi = Some(now_semi);
        } else {
            db.semi = None;
        }
        // An observation that began before the last operation finished shows an old state.
        if db.op.is_some() || obs.at < db.op_done_at {
            return;
        }
        match db.role {
            Role::Writable if local.read_only => {
                tracing::warn!(
                    "the database was made read-only by someone else: no longer the writer"
                );
                db.role = Role::Fenced;
            }
            Role::Fenced | Role::Replica(_) if !local.read_only => {
                tracing::error!(
                    "the database was opened for writes by someone else: fencing it again"
                );
                db.role = Role::Unknown;
            }
            Role::Replica(m) if local.replica.as_ref().is_none_or(|r| r.master != Some(m)) => {
                tracing::warn!(master = %m, "replication was re-pointed or removed by someone else");
                db.role = Role::Fenced;
            }
            _ => {}
        }
    }

    /// The master's look at its peers.
    ///
    /// A peer holding transactions this node lacks (a master cut off by a partition that
    /// went on alone, a node written to by hand) may have acknowledged them: this node stops
    /// taking writes at once and prepares again, as a new master would, so it opens again
    /// only if it covers every reachable history (after catching up from a peer that is
    /// simply ahead) and otherwise refuses, naming the diverged transactions for an operator.
    ///
    /// A writable peer (an agent that died while its node was cut off, an operator's hand) is
    /// fenced, but not at first sight: when a partition heals both sides are MASTER until
    /// their adverts meet, and the side that loses the election fences itself; fencing the
    /// peer at once would let a cut-off master fence the rightful one.
    fn on_peers_seen(&mut self, at: Mono, seen: Vec<PeerSeen>, own: Option<Gtids>) {
        let settle = self.machine.master_down();
        let Some(db) = self.db.as_mut() else { return };
        if db.role != Role::Writable {
            db.second_writer_since = None;
            return;
        }
        if db.op.is_some() || at < db.op_done_at {
            return;
        }
        if let Some(own) = &own {
            for p in &seen {
                let theirs = own.missing(&p.holdings.all());
                if !theirs.is_empty() {
                    tracing::error!(
                        peer = %p.addr,
                        gtids = %theirs,
                        "a peer holds transactions this node lacks, which may have been acknowledged: no more writes here until every history is compared"
                    );
                    db.last_error = Some(format!(
                        "{} holds {theirs} that this node lacks: writes stopped to compare histories",
                        p.addr
                    ));
                    db.role = Role::Unknown;
                    db.second_writer_since = None;
                    return;
                }
            }
        }
        let peers: Vec<Ipv4Addr> = seen.iter().filter(|p| p.writable).map(|p| p.addr).collect();
        if peers.is_empty() {
            db.second_writer_since = None;
            return;
        }
        let since = *db.second_writer_since.get_or_insert(at);
        if at.saturating_since(since) < settle {
            tracing::warn!(peers = ?peers, "another database is writable while this node is the master: fencing it unless the election settles it first");
            return;
        }
        db.second_writer_since = None;
        tracing::error!(peers = ?peers, "another database is writable while this node is the master: fencing it");
        let op = DbOp::FencePeers { peers };
        db.op = Some(op.clone());
        self.effects.push_back(Effect::Db(op));
    }

    fn on_db_done(&mut self, now: Mono, outcome: DbOutcome) {
        let state = self.machine.state();
        let Some(db) = self.db.as_mut() else { return };
        let Some(op) = db.op.take() else {
            tracing::error!(?outcome, "database outcome without an operation in flight");
            return;
        };
        db.op_done_at = now;
        let retry = db.policy.retry;
        let was_fence = op == DbOp::Fence;
        let step = match &outcome {
            DbOutcome::Fenced(_) => "fenced",
            DbOutcome::Followed(_) => "followed",
            DbOutcome::Prepared { .. } => "prepared",
            DbOutcome::CaughtUp(Ok(_)) => "caught up",
            DbOutcome::CaughtUp(Err(_)) => "catch-up failed",
            DbOutcome::PeersFenced(_) => "peers fenced",
            DbOutcome::Promoted(Ok(_)) => "open",
            DbOutcome::Promoted(Err(_)) => "open failed",
            DbOutcome::Resumed(_) => "resumed",
        };
        let readied = matches!(&outcome, DbOutcome::Prepared { ready, .. } if !ready.is_empty());
        match outcome {
            DbOutcome::Fenced(Ok(())) => {
                if db.role == Role::Writable {
                    tracing::info!("database fenced: read-only, client sessions ended");
                }
                db.role = Role::Fenced;
                db.fence_error = None;
            }
            DbOutcome::Fenced(Err(e)) => {
                tracing::error!(error = %e, "fencing the database failed; retrying");
                db.fence_error = Some(e);
                db.retry_at = Some(now + retry);
                if self.stopping || self.handing_over.is_some() {
                    db.leave_fence_tried = true;
                }
            }
            DbOutcome::Followed(Ok(())) => {
                let DbOp::Follow { master } = op else {
                    unreachable!("outcome matches its operation")
                };
                tracing::info!(%master, "database replicating from the master over verified TLS");
                db.role = Role::Replica(master);
                db.errant = None;
                db.last_error = None;
            }
            DbOutcome::Followed(Err(FollowError::Errant(gtids))) => {
                let DbOp::Follow { master } = op else {
                    unreachable!("outcome matches its operation")
                };
                tracing::error!(%master, gtids = %gtids.join(","), "database holds transactions the master lacks: refusing to rejoin, staying fenced; an operator must rebuild this node or decide which transactions to keep");
                if db.errant.as_ref() != Some(&(master, gtids.clone())) {
                    db.rejoins_refused += 1;
                }
                db.role = Role::Fenced;
                db.errant = Some((master, gtids));
                db.retry_at = Some(now + retry * ERRANT_RETRY_FACTOR);
            }
            DbOutcome::Followed(Err(FollowError::Failed(e))) => {
                if db.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "cannot replicate from the master yet; retrying");
                }
                if matches!(db.role, Role::Replica(_)) {
                    db.role = Role::Fenced;
                }
                db.last_error = Some(e);
                db.retry_at = Some(now + retry);
            }
            DbOutcome::Prepared { own, peers, ready } => {
                if let Some(t) = self.takeover.as_mut() {
                    for &(name, at) in &ready {
                        t.step(format!("prepare: {name}"), at);
                    }
                }
                let go_on = 'prepared: {
                    if state != State::Master || self.stopping {
                        break 'prepared false;
                    }
                    let unfenced = matches!(op, DbOp::Prepare { fence: false, .. });
                    let writable = peers
                        .iter()
                        .any(|p| p.result.as_ref().is_ok_and(|p| p.writable));
                    if unfenced && writable {
                        let at = db.fence_from.unwrap_or(now).max(now);
                        tracing::warn!(
                            wait_ms = at.saturating_since(now).as_millis() as u64,
                            "a peer's database is still writable: fencing it unless its master's adverts end this mastership first"
                        );
                        db.retry_at = Some(at);
                        break 'prepared false;
                    }
                    let decision = match own {
                        Err(e) => {
                            db.current.local_lost(&e);
                            Decision::Refuse(format!("local database: {e}"))
                        }
                        Ok(own) => plan::decide(
                            &own,
                            &peers,
                            &plan::Context {
                                followed: db.current.master(),
                                current: db.current.verdict(),
                                clients: db.current.clients(),
                                zombie: db.current.zombie() || db.took_over_live,
                                forced: db.forced,
                                failed_sources: db.failed_sources.clone(),
                            },
                        ),
                    };
                    let recheck: Vec<Ipv4Addr> = peers
                        .iter()
                        .filter(|p| p.result.is_ok())
                        .map(|p| p.addr)
                        .collect();
                    db.reached = recheck.clone();
                    match decision {
                        Decision::Promote { target } => {
                            if let Err(why) = lease_gate(&self.lease, now) {
                                wait_for_lease(db, why);
                                break 'prepared false;
                            }
                            db.op = Some(DbOp::Promote { target, recheck });
                        }
                        Decision::CatchUp { from, target } => {
                            tracing::info!(%from, target = %target, "catching up before opening the database");
                            db.op = Some(DbOp::CatchUp { from, target });
                        }
                        Decision::Refuse(why) => {
                            if db.refused.as_deref() != Some(why.as_str()) {
                                tracing::error!(reason = %why, "MASTER, but not opening the database for writes; waiting for the data or for `cluster-agent db promote --force`");
                                db.refusals += 1;
                            }
                            db.refused = Some(why);
                            db.retry_at = Some(now + retry);
                        }
                    }
                    if let Some(op) = db.op.clone() {
                        self.effects.push_back(Effect::Db(op));
                    }
                    true
                };
                // Made ready for an opening that is not coming next: undone at once, so that
                // a replica that did not open receives and acknowledges again.
                if readied && db.op.is_none() {
                    db.op = Some(DbOp::Resume);
                    self.effects.push_back(Effect::Db(DbOp::Resume));
                }
                if !go_on {
                    return;
                }
            }
            DbOutcome::CaughtUp(r) => {
                let DbOp::CatchUp { from, target } = op else {
                    unreachable!("outcome matches its operation")
                };
                // Whichever way it went, replication is not known to point at a master now
                // (the catch-up may have used a connection of its own and left the one to the
                // old master stopped): a node that goes on as BACKUP follows anew.
                db.role = Role::Fenced;
                if let (Ok(steps), Some(t)) = (&r, self.takeover.as_mut()) {
                    for &(name, at) in steps {
                        t.step(format!("catch-up: {name}"), at);
                    }
                }
                match r {
                    Ok(_) if state == State::Master && !self.stopping => {
                        if let Err(why) = lease_gate(&self.lease, now) {
                            wait_for_lease(db, why);
                            return;
                        }
                        db.op = Some(DbOp::Promote {
                            target,
                            recheck: db.reached.clone(),
                        });
                        self.effects
                            .push_back(Effect::Db(db.op.clone().expect("just set")));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let why = format!("catching up from {from} failed: {e}");
                        tracing::error!(reason = %why, "not opening the database");
                        if !db.failed_sources.contains(&from) {
                            db.failed_sources.push(from);
                        }
                        db.refusals += 1;
                        db.refused = Some(why);
                        db.retry_at = Some(now + retry);
                    }
                }
            }
            DbOutcome::PeersFenced(results) => {
                for (peer, r) in results {
                    match r {
                        Ok(()) => tracing::warn!(%peer, "peer database fenced"),
                        Err(e) => {
                            tracing::error!(%peer, error = %e, "cannot fence a writable peer");
                            db.last_error = Some(format!("cannot fence {peer}: {e}"));
                        }
                    }
                }
            }
            DbOutcome::Promoted(Ok(statements)) => {
                tracing::info!("database open for writes, semi-sync master on");
                db.role = Role::Writable;
                db.second_writer_since = None;
                if let Some(t) = self.takeover.as_mut() {
                    for (name, at) in statements {
                        t.step(format!("open: {name}"), at);
                    }
                }
                // Whatever we knew of the old master has served its purpose.
                db.current.follow(None);
                db.refused = None;
                db.forced = false;
                db.last_error = None;
            }
            DbOutcome::Resumed(r) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "resuming replication after a prepare that did not open failed; following the master anew");
                    db.last_error = Some(e);
                }
                // Started again, but not confirmed to replicate (a receiver that was ended
                // may still be on its way out): a BACKUP follows anew, which finds it
                // replicating or sets it right.
                if matches!(db.role, Role::Replica(_)) {
                    db.role = Role::Fenced;
                }
            }
            DbOutcome::Promoted(Err(e)) => {
                tracing::error!(error = %e, "database not promoted; retrying");
                // The last step opens it, so a failure leaves it read-only.
                db.role = Role::Fenced;
                db.refusals += 1;
                db.refused = Some(format!("promotion failed: {e}"));
                db.retry_at = Some(now + retry);
            }
        }
        if state == State::Master {
            self.takeover_step(step, now);
        }
        if !self.started && was_fence {
            self.start(now);
        }
    }

    /// The election begins: after the first fence at start-up.
    fn start(&mut self, now: Mono) {
        self.started = true;
        self.machine = Machine::new(self.params, now);
        if !self.link_up {
            self.machine.handle(now, machine::Input::LinkDown);
        }
    }

    fn on_vip_done(&mut self, now: Mono, add: bool, result: Result<(), String>) {
        self.vip.in_flight = None;
        match result {
            Ok(()) => {
                self.vip.have = add;
                self.vip.failures = 0;
                self.vip.error = None;
                if add && self.machine.state() == State::Master {
                    self.takeover_step("vip", now);
                    // The takeover announcement went out before the address existed.
                    self.effects.push_back(Effect::Garp);
                    self.takeover_step("garp", now);
                    self.vip.garp_again = Some(now + GARP_AGAIN_AFTER);
                    if !self.vip.up_ran {
                        self.vip.up_ran = true;
                        self.effects.push_back(Effect::Hook(Hook::Up));
                    }
                }
            }
            Err(e) => {
                self.vip.failures += 1;
                tracing::error!(add, error = %e, failures = self.vip.failures, "cannot change the VIP");
                self.vip.error = Some(e);
                self.vip.retry_at = Some(
                    now + self
                        .db
                        .as_ref()
                        .map_or(Duration::from_secs(1), |d| d.policy.retry),
                );
                if add
                    && self.vip.failures >= VIP_FAILURES_BEFORE_HANDOVER
                    && self.machine.state() == State::Master
                {
                    tracing::error!("MASTER without the VIP serves nobody: handing over");
                    self.hand_over(now, HandOver::Switchover);
                }
            }
        }
    }

    /// When to check the followed master's host: as a BACKUP, once per silence, when its
    /// advert is overdue.
    fn host_check_due(&self) -> Option<Mono> {
        if !self.started || self.machine.state() != State::Backup {
            return None;
        }
        let db = self.db.as_ref()?;
        let addr = db.current.master()?;
        let due = db.current.overdue_at()?;
        match db.host_check {
            Some((a, since)) if a == addr && since >= due => None,
            // Each check costs the peer's server a connection it logs as aborted; adverts
            // late by a stall of the machine must not turn into a stream of them.
            Some((a, since)) if a == addr => Some(due.max(since + EARLY_CHECK_SPACING)),
            _ => Some(due),
        }
    }

    fn want_vip(&self) -> bool {
        if self.machine.state() != State::Master || self.stopped || self.handing_over.is_some() {
            return false;
        }
        match &self.db {
            None => true,
            // Refused: reads go on through the VIP, writes fail visibly on `read_only`. Not
            // while waiting for the quorum's key, unless etcd cannot be reached at all: right
            // after a bow-out two backups may both be MASTER for an advert or two, and only
            // one will get the key.
            Some(db) => {
                let etcd_down = self.lease.as_ref().is_some_and(Lease::unreachable);
                db.policy.vip_first
                    || db.role == Role::Writable
                    || (db.refused.is_some() && (!db.lease_wait || etcd_down))
            }
        }
    }

    fn want_demoted(&self) -> bool {
        if self.tracks.iter().any(|t| !t.passing()) {
            return true;
        }
        let Some(db) = &self.db else { return false };
        if db.forced {
            return false;
        }
        if db.local_down.is_some() || db.errant.is_some() {
            return true;
        }
        if db.lagging.is_some() && self.machine.state() == State::Backup {
            return true;
        }
        match self.machine.state() {
            // Waiting for the key: only while another node may hold it (that one should win
            // the election, e.g. after a partition heals). Right after a bow-out several
            // nodes may be MASTER at once with nobody holding it, and demoting each at once
            // made them all step down again and again (found by the simulation). Not while
            // the holder is the live master this node took over from (preempted, bowing
            // out): it steps down on our advert and lets the key go once fenced; demoted, we
            // would yield to it and preempt it again, over and over.
            State::Master => {
                let replaced_holder = db.took_over_live
                    && self
                        .lease
                        .as_ref()
                        .and_then(Lease::holder)
                        .zip(db.current.master())
                        .is_some_and(|(h, m)| h == m.to_string());
                db.refused.is_some()
                    && (!db.lease_wait
                        || (!replaced_holder
                            && self
                                .lease
                                .as_ref()
                                .is_some_and(Lease::someone_else_may_hold)))
            }
            // Only a node known to hold every acknowledged write may preempt or win early.
            State::Backup => {
                !(matches!(db.role, Role::Replica(m) if Some(m) == db.watching)
                    && db.current.verdict().is_ok())
            }
        }
    }

    fn drive(&mut self, now: Mono) {
        if self.draining.is_some() && self.machine.state() != State::Master {
            // The mastership ended on its own (preempted, link down): nothing left to hand over.
            self.draining = None;
        }
        if self.holding.is_some()
            && self.draining.is_none()
            && self.handing_over.is_none()
            && self.machine.state() == State::Master
        {
            // Master again (no peer took over): new connections are ours to answer.
            self.end_hold();
        }
        self.drive_stop(now);
        self.pump(now);
        self.drive_db(now);
        self.drive_lease(now);
        self.settle_skew(now);
        self.drive_vip(now);
        self.finish_hand_over(now);
        self.pump(now);
        debug_assert!(
            self.first_advert.is_none(),
            "a new mastership's first advert outlived its drive"
        );
    }

    /// Advertises the skew this node's state calls for, once the database and the lease have
    /// had their say (a new master learns only in `drive_db` that it must wait for the key),
    /// then lets a new mastership's first advert go, with that skew.
    ///
    /// Two nodes that take over at the same instant (equal skews, or one bow-out heard by
    /// both) each hear the other's first advert just after their own transition. Had that
    /// advert carried another skew than the one that follows it, each would compare it with
    /// its own settled skew and yield, and both would go round again at the next master-down
    /// time, with nobody holding the VIP.
    fn settle_skew(&mut self, now: Mono) {
        if self.started {
            let demote = self.want_demoted();
            if demote != self.machine.demoted() {
                tracing::info!(demoted = demote, reason = ?self.db.as_ref().and_then(|d| d.current.verdict().err().map(|e| e.to_string())), "advertised skew changes");
                self.machine.handle(now, machine::Input::SetDemoted(demote));
            }
        }
        self.pump(now);
        if let Some((advbase, advskew)) = self.first_advert.take().flatten() {
            self.effects.push_back(Effect::Advert { advbase, advskew });
        }
    }

    /// Asks for the leader key while MASTER, and lets it go only once the database is
    /// confirmed read-only (a key released earlier would let a peer open beside it). A master
    /// that lost the lease with its database open bows out once the fence was tried.
    fn drive_lease(&mut self, now: Mono) {
        let (Some(lease), Some(db)) = (self.lease.as_ref(), self.db.as_ref()) else {
            return;
        };
        let master = self.machine.state() == State::Master;
        let read_only = matches!(db.role, Role::Fenced | Role::Replica(_));
        let opening = matches!(db.op, Some(DbOp::Promote { .. }));
        let want = (master
            && self.started
            && !self.stopping
            && self.handing_over.is_none()
            && !self.lease_lost)
            || opening
            || (lease.held() && !read_only);
        if want != self.lease_wanted {
            self.lease_wanted = want;
            self.effects.push_back(Effect::Lease(want));
            if !want && let Some(lease) = self.lease.as_mut() {
                lease.release(now);
            }
        }
        let fence_tried = read_only || db.fence_error.is_some();
        if self.lease_lost
            && master
            && db.op.is_none()
            && fence_tried
            && self.handing_over.is_none()
        {
            tracing::warn!("quorum lease lost: bowing out");
            self.hand_over(now, HandOver::Switchover);
        }
    }

    /// Shutdown: fence first, so nothing is written here after the bow-out lets a peer open.
    fn drive_stop(&mut self, now: Mono) {
        if !self.stopping || self.stopped {
            return;
        }
        if let Some(db) = &self.db {
            let fenced = matches!(db.role, Role::Fenced | Role::Replica(_));
            if db.op.is_some() || !(fenced || db.leave_fence_tried) {
                return;
            }
            if !fenced {
                tracing::error!(error = ?db.fence_error, "stopping without a confirmed fence");
            }
        }
        if self.handing_over.is_none() {
            self.hand_over(now, HandOver::Shutdown);
        }
    }

    /// A planned switchover: a MASTER holding the VIP first drains it (new connections held
    /// off, open ones left to finish, at most [`DRAIN_MAX`]), then hands over; otherwise the
    /// hand-over begins at once.
    /// Service checks, in the order their probes are numbered.
    pub fn with_tracks(mut self, tracks: Vec<track::Track>) -> Coordinator {
        self.tracks = tracks;
        self
    }

    /// The service checks, for `status`.
    pub fn track_views(&self) -> Vec<track::TrackView> {
        self.tracks.iter().map(track::Track::view).collect()
    }

    fn on_probe(&mut self, now: Mono, index: usize, result: Result<(), String>) {
        let Some(t) = self.tracks.get_mut(index) else {
            return;
        };
        let error = result.as_ref().err().cloned();
        let Some(passing) = t.observe(result) else {
            return;
        };
        let (name, action) = (t.name.clone(), t.action);
        if passing {
            tracing::info!(track = %name, "service check passes again");
            return;
        }
        tracing::warn!(track = %name, ?action, error = error.as_deref().unwrap_or(""), state = %self.machine.state(), "service check failing: this node advertises the demoted skew");
        if action == track::TrackAction::BowOut
            && self.machine.state() == State::Master
            && !self.stopping
        {
            tracing::warn!(track = %name, "service check failing on the MASTER: handing over");
            // As a switchover does: new connection requests are held and handed to the next
            // master, so clients do not wait on a fenced address for their own retry.
            self.drain_then_hand_over(now, HandOver::StepDown);
        }
    }

    fn switchover(&mut self, now: Mono) {
        self.drain_then_hand_over(now, HandOver::Switchover);
    }

    fn drain_then_hand_over(&mut self, now: Mono, how: HandOver) {
        if self.draining.is_some() || self.handing_over.is_some() {
            return;
        }
        if self.machine.state() == State::Master && self.vip.have && !self.stopping {
            tracing::info!(
                limit_ms = DRAIN_MAX.as_millis() as u64,
                ?how,
                "switchover: holding off new connections to the VIP until the open ones finish"
            );
            self.draining = Some(now + DRAIN_MAX);
            self.drain_then = how;
            self.holding = Some(now + HOLD_MAX);
            self.effects.push_back(Effect::Drain);
        } else {
            self.hand_over(now, how);
        }
    }

    fn end_hold(&mut self) {
        if self.holding.take().is_some() {
            self.effects.push_back(Effect::EndHold);
        }
    }

    fn end_drain(&mut self, now: Mono, drained: bool) {
        if self.draining.take().is_none() {
            return;
        }
        if drained {
            tracing::info!("switchover: no connection left on the VIP, handing over");
        } else {
            tracing::warn!(
                limit_ms = DRAIN_MAX.as_millis() as u64,
                "switchover: connections still open on the VIP at the drain limit are cut"
            );
        }
        let how = std::mem::replace(&mut self.drain_then, HandOver::Switchover);
        if self.machine.state() == State::Master {
            self.hand_over(now, how);
        }
    }

    /// Bows out once the VIP is gone (see [`Coordinator::handing_over`]): at once if this
    /// node is not MASTER or holds no address, else after [`Coordinator::drive_vip`] removed
    /// it, or failed to (a bow-out cannot wait on a broken netlink for ever).
    ///
    /// The database is fenced first, while the VIP is released: the next master's prepare
    /// step then finds it read-only in one round trip instead of fencing a server that is
    /// fencing itself, and no write can land here once the bow-out lets a peer open. A fence
    /// that fails does not hold the bow-out back (the next master fences or passes over
    /// this server); one that failed just before (a lost lease) is not tried again first.
    fn hand_over(&mut self, now: Mono, how: HandOver) {
        if self.handing_over.is_none() {
            self.handing_over = Some(how);
            self.hand_over_fence_until = Some(now + HAND_OVER_FENCE_MAX);
            if let Some(db) = self.db.as_mut() {
                db.leave_fence_tried = db.fence_error.is_some();
            }
        }
        self.finish_hand_over(now);
    }

    fn finish_hand_over(&mut self, now: Mono) {
        let Some(how) = self.handing_over else { return };
        let released = !self.vip.have || self.vip.error.is_some();
        let fencing = self.hand_over_fence_until.is_some()
            && self
                .db
                .as_ref()
                .is_some_and(|db| db.role == Role::Writable && !db.leave_fence_tried);
        if self.machine.state() == State::Master
            && (self.vip.in_flight.is_some() || !released || fencing)
        {
            return;
        }
        self.handing_over = None;
        self.hand_over_fence_until = None;
        match how {
            HandOver::Switchover => self.machine.handle(now, machine::Input::Switchover),
            HandOver::StepDown => self.machine.handle(now, machine::Input::StepDown),
            HandOver::Shutdown => {
                self.machine.handle(now, machine::Input::Shutdown);
                self.stopped = true;
            }
        }
    }

    fn drive_db(&mut self, now: Mono) {
        let state = self.machine.state();
        let started = self.started;
        let stopping = self.stopping && !self.stopped;
        let leaving = stopping || (self.handing_over.is_some() && state == State::Master);
        let Some(db) = self.db.as_mut() else { return };
        if db.op.is_none()
            && state == State::Master
            && db.role == Role::Writable
            && let Err(why) = lease_gate(&self.lease, now)
        {
            // Not delayed by a retry: etcd gives the key away a third of the TTL from now.
            tracing::error!(reason = %why, "closing the database before the quorum lease can run out: fencing, then bowing out");
            self.lease_lost = true;
            db.retry_at = None;
        }
        if db.op.is_some() || db.retry_at.is_some_and(|t| t > now) {
            return;
        }
        db.retry_at = None;
        let gate = lease_gate(&self.lease, now);
        let op = if !started || leaving {
            (!matches!(db.role, Role::Fenced | Role::Replica(_)) && !db.leave_fence_tried)
                .then_some(DbOp::Fence)
        } else {
            match (state, db.role) {
                (_, Role::Unknown) | (State::Backup, Role::Writable) => Some(DbOp::Fence),
                (State::Backup, Role::Fenced | Role::Replica(_)) => match db.watching {
                    Some(m) if m != db.policy.own && db.role != Role::Replica(m) => {
                        Some(DbOp::Follow { master: m })
                    }
                    _ => None,
                },
                (State::Master, Role::Writable) if self.lease_lost => Some(DbOp::Fence),
                (State::Master, Role::Writable) => None,
                (State::Master, Role::Fenced | Role::Replica(_)) if self.lease_lost => None,
                (State::Master, Role::Fenced | Role::Replica(_)) if gate.is_err() => {
                    wait_for_lease(db, gate.clone().err().unwrap_or_default());
                    None
                }
                (State::Master, Role::Fenced | Role::Replica(_)) => {
                    if db.lease_wait {
                        tracing::info!("quorum lease held: preparing to open the database");
                        db.lease_wait = false;
                        db.refused = None;
                    }
                    let followed = db.current.master();
                    // A silent master may be passed over, or its early host check stand for
                    // the step's own, on the first attempt only: a retry asks everyone again.
                    // Under a quorum the wait for the key has cost more than the probe would:
                    // ask a silent master too (it may be writable with a dead agent, after a
                    // partition this node was on the far side of).
                    let plain = self.lease.is_none()
                        && db.refused.is_none()
                        && !db.current.zombie()
                        && !db.took_over_live;
                    let silent = plain
                        && db
                            .current
                            .unanswered_for(now)
                            .is_some_and(|d| d >= db.policy.unreachable_after);
                    // A check begun after the master's last advert: one of this silence.
                    let checked = db.host_check.filter(|&(a, since)| {
                        plain
                            && Some(a) == followed
                            && db.current.last_advert().is_none_or(|adv| adv < since)
                    });
                    let mut peers: Vec<Probe> = db
                        .policy
                        .peers
                        .iter()
                        .filter(|a| **a != db.policy.own)
                        .map(|&addr| Probe {
                            addr,
                            skip: silent && Some(addr) == followed,
                            checked_since: checked
                                .filter(|&(a, _)| a == addr)
                                .map(|(_, since)| since),
                        })
                        .collect();
                    peers.sort_by_key(|p| p.addr);
                    peers.dedup_by_key(|p| p.addr);
                    let fence = db.fence_from.is_none_or(|t| now >= t);
                    // Only a replica has anything to drain, and only a plain takeover of a
                    // silent master is likely to open right after the step.
                    let ready_once_silent = match db.role {
                        Role::Replica(m) if plain => Some(m),
                        _ => None,
                    };
                    Some(DbOp::Prepare {
                        peers,
                        fence,
                        ready_once_silent,
                    })
                }
            }
        };
        if let Some(op) = op {
            tracing::debug!(op = op.name(), "database operation");
            db.op = Some(op.clone());
            self.effects.push_back(Effect::Db(op));
        }
    }

    fn drive_vip(&mut self, now: Mono) {
        let want = self.want_vip();
        if want != self.vip.want_seen {
            self.vip.want_seen = want;
            self.vip.retry_at = None;
            self.vip.failures = 0;
        }
        if self.vip.in_flight.is_some()
            || want == self.vip.have
            || self.vip.retry_at.is_some_and(|t| t > now)
        {
            return;
        }
        self.vip.retry_at = None;
        // XDP first: ARP is answered and traffic let in the moment the address exists; and
        // on the way out VIP traffic is dropped before the address goes.
        self.effects.push_back(Effect::XdpRole(want));
        self.effects.push_back(Effect::Vip(want));
        self.vip.in_flight = Some(want);
    }

    /// What `status` shows of the database side.
    pub fn db_view(&self) -> Option<DbView> {
        let db = self.db.as_ref()?;
        let verdict = db.current.verdict();
        let gate = if let Some(e) = &db.local_down {
            Some(format!("database down: {e}"))
        } else if let Some((m, g)) = &db.errant {
            Some(format!(
                "errant transactions {} that {m} lacks",
                g.join(",")
            ))
        } else if let Some(l) = db.lagging.as_ref().filter(|_| self.machine.demoted()) {
            Some(l.clone())
        } else if self.machine.demoted() {
            Some(
                verdict
                    .as_ref()
                    .err()
                    .map_or_else(|| "refused".to_string(), ToString::to_string),
            )
        } else {
            None
        };
        Some(DbView {
            role: match db.role {
                Role::Unknown => "unknown",
                Role::Fenced => "fenced",
                Role::Replica(_) => "replica",
                Role::Writable => "master",
            }
            .to_string(),
            replicating_from: match db.role {
                Role::Replica(m) => Some(m),
                _ => None,
            },
            current: verdict.is_ok(),
            gate,
            operation: db.op.as_ref().map(|o| o.name().to_string()),
            refused: db.refused.clone().filter(|_| !db.lease_wait),
            quorum_wait: db.refused.clone().filter(|_| db.lease_wait),
            errant: db.errant.as_ref().map(|e| e.1.clone()).unwrap_or_default(),
            forced: db.forced,
            semi_sync: db.semi,
            semi_sync_fallbacks: db.fallbacks,
            lag_secs: db.lag_secs.filter(|_| matches!(db.role, Role::Replica(_))),
            refusals: db.refusals,
            rejoins_refused: db.rejoins_refused,
            local_down: db.local_down.clone(),
            fence_error: db.fence_error.clone(),
            last_error: db.last_error.clone(),
        })
    }

    /// Election state changes so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Election state changes so far by the state entered and the reason.
    pub fn transitions_by(&self) -> &[(State, Reason, u64)] {
        &self.transitions_by
    }

    /// The VIP error, if the last change failed.
    pub fn vip_error(&self) -> Option<&str> {
        self.vip.error.as_deref()
    }

    /// True while the database is confirmed open for writes (the simulation's view).
    pub fn writable(&self) -> bool {
        self.db.as_ref().is_some_and(|d| d.role == Role::Writable)
    }

    /// The quorum lease for `status`, with `[quorum]`.
    pub fn quorum_view(&self, now: Mono) -> Option<QuorumView> {
        self.lease.as_ref().map(|l| l.view(now))
    }

    /// Why the current advert skew is demoted, for logs.
    pub fn not_current(&self) -> Option<NotCurrent> {
        self.db.as_ref().and_then(|d| d.current.verdict().err())
    }
}

/// Ok when no quorum is configured or this node holds the lease with time to write left.
fn lease_gate(lease: &Option<Lease>, now: Mono) -> Result<(), String> {
    lease.as_ref().map_or(Ok(()), |l| l.gate(now))
}

/// A MASTER keeps its database closed until the quorum lease is held: reads go on through
/// the VIP (as for a refusal), writes fail on `read_only`.
fn wait_for_lease(db: &mut DbSide, why: String) {
    if db.refused.as_deref() != Some(why.as_str()) {
        tracing::warn!(reason = %why, "MASTER, but the database stays read-only until this node holds the quorum lease");
    }
    db.refused = Some(why);
    db.lease_wait = true;
}
