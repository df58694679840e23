//! The agent's event loops and effect executor. They decide nothing: packets, timers, link
//! changes, database observations, operation outcomes and control requests go into a
//! [`Coordinator`]; the effects it asks for are carried out here and their outcomes fed back.
//!
//! Each vhid has a loop of its own (a task on the agent's one thread) with its own coordinator,
//! sockets, hooks and, for the vhid with `[mysql]`, database tasks; it sleeps exactly until its
//! coordinator's next deadline. The agent's loop above them owns what they share: signals, the
//! control socket and metrics, the XDP program and its ring buffer, and reloads, which may
//! start and stop vhids.
//!
//! Start-up order of a vhid: the leftover VIP goes, the database is fenced (the coordinator
//! asks for that before anything else), then the election begins.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::carp::machine::State;
use crate::carp::replay::ReplayGuard;
use crate::carp::time::Mono;
use crate::carp::wire::{self, Counter, Expect, WireError};
use crate::config::{ConfigError, DbSettings, Delivery, Settings};
use crate::control::{self, Command, Counters, Status, TransitionCount};
use crate::db::Db;
use crate::drain;
use crate::failover::track::Track;
use crate::failover::{
    Config, Coordinator, DRAIN_MAX, DbOp, DbOutcome, DbPolicy, Effect, FollowError, HOLD_MAX,
    Input, Observation,
};
use crate::handoff;
use crate::quorum;
use crate::reload::{self, ReloadError};
use crate::timer::Timer;

use crate::hooks::{Hook, HookConfig, Hooks};
use crate::net::{self, AdvertReceiver, AdvertSender, PacketSocket};
use crate::vip::Vip;
use crate::xdp::{self, Port, Pump, SharedXdp, VhidSetup, XdpEvent};

/// How soon a failed operation is retried.
const RETRY: Duration = Duration::from_secs(1);
/// Slack in the currentness rule for sampling and delivery latency.
const MARGIN: Duration = Duration::from_millis(100);
/// How long a peer may take to answer before a promotion treats it as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// Most queued packets taken in before a timer is acted on.
const QUEUED_MAX: usize = 4096;
/// How often the accounts that can write through `read_only` and the durability settings are
/// read again.
const AUDIT_EVERY: Duration = Duration::from_secs(60);
/// How often sessions to the peers are checked and reopened (see `Db::warm_peers`).
const WARM_EVERY: Duration = Duration::from_secs(1);
/// Longest wait at shutdown for the fence, the bow-out and the VIP removal.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// Everything the loop owns besides the coordinator.
struct Agent {
    s: Settings,
    /// Our advert source and tie-break key: `srcip`, or an IPv6 vhid's link-local address.
    own: IpAddr,
    /// Every address of the vhid, as adverts authenticate them: kept once rather than built
    /// per advert sent and received (a reload that would change them is refused).
    addrs: Vec<IpAddr>,
    mac: [u8; 6],
    vip: Vip,
    sender: AdvertSender,
    garp: PacketSocket,
    hooks: Hooks,
    xdp: Option<Port>,
    counter: Counter,
    ip_id: u16,
    counters: Counters,
    last_auth_log: Option<Mono>,
    last_send_error_log: Option<Mono>,
    last_conflict_log: Option<Mono>,
    last_conflict: Option<String>,
    xdp_error: Option<String>,
    /// Counters of accepted and sent adverts: a replayed one is dropped (XDP does the same
    /// before the ring buffer; this covers `--xdp off`).
    replay: ReplayGuard,
    last_replay_log: Option<Mono>,
    /// The advert socket's drop counter when last read (see [`Agent::take_drops`]).
    drops_seen: Option<u32>,
    last_drop_log: Option<Mono>,
    db: Option<DbLink>,
    /// Where [`drain::watch`] says that no connection is left on the VIP.
    drained: mpsc::UnboundedSender<()>,
    held: Held,
    /// Whether the quorum task should hold the leader key.
    lease_want: Option<watch::Sender<bool>>,
}

/// Most connection requests held at once during a switchover; more are dropped (counted),
/// and their clients send them again by themselves.
const HELD_MAX: usize = 4096;

/// Connection requests to the VIP held off by a switchover's drain (see [`Effect::Drain`]).
#[derive(Default)]
struct Held {
    /// CLOCK_MONOTONIC stamp and IPv4 packet of each.
    requests: Vec<(u64, Vec<u8>)>,
    /// The next master announced the VIP: send each request on at once.
    handing_off: bool,
    dropped: u64,
    socket: Option<net::ForwardSocket>,
}

/// The database tasks: one runs operations in order, one observes. Their answers come back
/// on the receivers [`spawn_db`] returns beside this.
struct DbLink {
    ops: mpsc::UnboundedSender<DbOp>,
    checks: mpsc::UnboundedSender<(Ipv4Addr, Mono)>,
    watch: watch::Sender<Option<Ipv4Addr>>,
    /// What the server's accounts and settings leave unprotected, as last read.
    audit: watch::Receiver<Audit>,
}

/// What fencing and durability cannot cover on this server, read at start and every
/// [`AUDIT_EVERY`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Audit {
    /// Accounts that can write through `read_only`.
    bypass: Vec<String>,
    /// Durability settings that differ from what acknowledged writes need.
    unsafe_settings: Vec<String>,
}

type DbAnswers = (
    mpsc::UnboundedReceiver<DbOutcome>,
    mpsc::UnboundedReceiver<Input>,
);

/// Reads and validates the configuration again, from the same flags and file as at start.
pub type Reloader = Box<dyn Fn() -> Result<Vec<Settings>, ConfigError> + Send>;

/// What the agent's loop asks of one vhid's loop.
enum Order {
    /// A control request; the answer is the vhid's status after it was carried out.
    Ask(Command, oneshot::Sender<Status>),
    /// Apply a reloaded configuration that [`reload::plan`] accepted.
    Reload(Box<Settings>, Vec<&'static str>),
    /// Bow out and end.
    Stop,
}

/// A vhid's loop as the agent's loop sees it.
struct Running {
    /// Its task: the same vhid may be leaving under one task and back under another later.
    task: tokio::task::Id,
    s: Settings,
    orders: mpsc::UnboundedSender<Order>,
    /// Reload removed it: it is on its way out.
    leaving: bool,
    /// Reload added it: if it cannot start, the vhids already running carry on.
    added: bool,
}

/// What every vhid's loop shares.
#[derive(Clone)]
struct Shared {
    xdp: Option<(SharedXdp, Pump)>,
}

pub async fn run(all: Vec<Settings>, reload: Reloader) -> anyhow::Result<()> {
    let first = all.first().context("no vhid configured")?.clone();
    let mut interfaces: Vec<&str> = Vec::new();
    for s in &all {
        if !interfaces.contains(&s.interface.as_str()) {
            interfaces.push(&s.interface);
        }
    }
    let xdp = xdp::attach_all(&interfaces, first.xdp).context("attaching the XDP program")?;
    let shared = match xdp {
        Some(mut handle) => {
            let events = handle
                .take_events()
                .context("opening the XDP ring buffer")?;
            let (router, pump) = xdp::Router::new(events).context("opening the XDP ring buffer")?;
            tokio::spawn(router.run());
            Shared {
                xdp: Some((Arc::new(std::sync::Mutex::new(handle)), pump)),
            }
        }
        None => Shared { xdp: None },
    };
    let (requests, mut control) = mpsc::channel(16);
    control::serve(&first.control_socket, first.control_group, requests.clone())
        .with_context(|| format!("binding {}", first.control_socket.display()))?;
    if let Some(addr) = first.metrics {
        crate::metrics::serve(addr, requests.clone())
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
    }
    drop(requests);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    if all.iter().any(|s| s.advbase == 0) {
        realtime_advert_thread();
    }

    let mut running: Vec<Running> = Vec::new();
    let mut tasks = JoinSet::new();
    for s in all {
        running.push(start_vhid(s, &shared, &mut tasks, false));
    }
    let mut stopping = false;
    let mut stop_sent = false;
    let mut failure = None;
    loop {
        tokio::select! {
            _ = sigterm.recv(), if !stopping => stopping = true,
            _ = sigint.recv(), if !stopping => stopping = true,
            _ = sighup.recv(), if !stopping => {
                let _ = reload_all(&reload, &mut running, &shared, &mut tasks);
            }
            done = tasks.join_next_with_id() => {
                let Some(done) = done else { break };
                let (task, result) = match done {
                    Ok(r) => r,
                    Err(error) => (error.id(), Err(anyhow::anyhow!("the loop failed: {error}"))),
                };
                let Some(index) = running.iter().position(|r| r.task == task) else {
                    continue;
                };
                let Running { s: ended, leaving, added, .. } = running.remove(index);
                let vhid = ended.vhid;
                if let Some((x, pump)) = &shared.xdp {
                    pump.remove(vhid);
                    if (leaving || added) && let Err(error) = xdp::lock(x).unconfigure(vhid) {
                        tracing::error!(vhid, %error, "cannot remove the vhid from the XDP program");
                    }
                }
                match result {
                    Ok(()) if stopping || leaving => {}
                    Err(error) if added && !stopping => {
                        tracing::error!(vhid, error = format!("{error:#}"), "the vhid added by reload could not start; the others carry on");
                    }
                    Ok(()) => {
                        failure.get_or_insert(anyhow::anyhow!("vhid {vhid} stopped by itself"));
                        stopping = true;
                    }
                    Err(error) => {
                        tracing::error!(vhid, error = format!("{error:#}"), "vhid failed; stopping the agent");
                        failure.get_or_insert(error.context(format!("vhid {vhid}")));
                        stopping = true;
                    }
                }
                if running.is_empty() && !stopping {
                    failure.get_or_insert(anyhow::anyhow!("no vhid is left running"));
                    tracing::error!("no vhid is left running; stopping the agent");
                    break;
                }
            }
            Some(req) = control.recv() => {
                let text = answer(req.command, &reload, &mut running, &shared, &mut tasks, stopping).await;
                let _ = req.reply.send(text);
            }
        }
        if stopping && !stop_sent {
            stop_sent = true;
            for r in &running {
                let _ = r.orders.send(Order::Stop);
            }
        }
    }
    let _ = std::fs::remove_file(&first.control_socket);
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn start_vhid(
    s: Settings,
    shared: &Shared,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    added: bool,
) -> Running {
    let (orders, rx) = mpsc::unbounded_channel();
    let task = tasks.spawn(run_vhid(s.clone(), shared.clone(), rx)).id();
    Running {
        task,
        s,
        orders,
        leaving: false,
        added,
    }
}

/// Carries out a control request and renders the answer: the status of every vhid, the first
/// at the top (the one the flags describe, as UCARP's one vhid), the others in `other_vhids`.
async fn answer(
    command: Command,
    reload: &Reloader,
    running: &mut Vec<Running>,
    shared: &Shared,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    stopping: bool,
) -> String {
    let mut error = match command {
        Command::Reload if stopping => Some("the agent is stopping".to_string()),
        Command::Reload => reload_all(reload, running, shared, tasks)
            .err()
            .map(|e| e.to_string()),
        Command::Switchover(Some(vhid))
            if !running.iter().any(|r| r.s.vhid == vhid && !r.leaving) =>
        {
            Some(format!("this agent serves no vhid {vhid}"))
        }
        _ => None,
    };
    // A forced promotion concerns the database, which at most one vhid carries.
    let staying = || running.iter().filter(|r| !r.leaving);
    let with_db = staying().position(|r| r.s.db.is_some()).unwrap_or(0);
    let mut replies = Vec::new();
    for (i, r) in staying().enumerate() {
        let ask = match command {
            Command::ForcePromote if i != with_db => Command::Status,
            Command::Switchover(Some(vhid)) if vhid != r.s.vhid => Command::Status,
            Command::Reload => Command::Status,
            other => other,
        };
        let (tx, rx) = oneshot::channel();
        if r.orders.send(Order::Ask(ask, tx)).is_ok() {
            replies.push(rx);
        }
    }
    let mut statuses = Vec::new();
    for rx in replies {
        if let Ok(status) = rx.await {
            statuses.push(status);
        }
    }
    if statuses.is_empty() {
        return serde_json::to_string(&serde_json::json!({"error": "the agent is stopping"}))
            .unwrap_or_default();
    }
    let mut top = statuses.remove(0);
    // Ring-buffer records that were unreadable or concerned no vhid of ours.
    if let Some((_, pump)) = &shared.xdp {
        top.counters.bad_packets += pump.dropped();
    }
    // The program's counters are the program's, not a vhid's: they appear once, with the
    // first vhid, so that summing over vhids counts each frame once.
    for other in &mut statuses {
        other.xdp_counters.clear();
    }
    if command == Command::Switchover(None)
        && std::iter::once(&top)
            .chain(&statuses)
            .any(|s| s.error.is_none())
    {
        // Every vhid this node is MASTER of hands over: refused only if it is MASTER of none.
        top.error = None;
        statuses.iter_mut().for_each(|s| s.error = None);
    }
    if top.error.is_none() {
        top.error = error
            .take()
            .or_else(|| statuses.iter().find_map(|s| s.error.clone()));
    }
    top.other_vhids = statuses;
    match command {
        Command::Metrics => crate::metrics::render(&top),
        _ => serde_json::to_string(&top).unwrap_or_default(),
    }
}

/// Reads the configuration again and hands each vhid what changed for it; a removed vhid
/// bows out and an added one starts as BACKUP. A reload that cannot apply whole is refused
/// whole (see [`reload::plan`]), and the log says why.
fn reload_all(
    read: &Reloader,
    running: &mut Vec<Running>,
    shared: &Shared,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> Result<(), ReloadError> {
    let current: Vec<Settings> = running
        .iter()
        .filter(|r| !r.leaving)
        .map(|r| r.s.clone())
        .collect();
    let leaving: Vec<Settings> = running
        .iter()
        .filter(|r| r.leaving)
        .map(|r| r.s.clone())
        .collect();
    let plan = match read()
        .map_err(ReloadError::from)
        .and_then(|new| reload::plan(&current, &leaving, new))
    {
        Ok(plan) => plan,
        Err(error) => {
            tracing::error!(%error, "configuration reload refused; the running configuration stays");
            return Err(error);
        }
    };
    for (new, changed) in plan.keep {
        if let Some(r) = running
            .iter_mut()
            .find(|r| r.s.vhid == new.vhid && !r.leaving)
        {
            if new.advbase == 0 && r.s.advbase != 0 {
                warn_fast_mode(new.vhid);
                realtime_advert_thread();
            }
            r.s = new.clone();
            let _ = r.orders.send(Order::Reload(Box::new(new), changed));
        }
    }
    for vhid in plan.remove {
        if let Some(r) = running.iter_mut().find(|r| r.s.vhid == vhid && !r.leaving) {
            tracing::info!(vhid, "vhid removed by reload: bowing out");
            r.leaving = true;
            let _ = r.orders.send(Order::Stop);
        }
    }
    for s in plan.add {
        tracing::info!(vhid = s.vhid, vips = ?s.addrs(), "vhid added by reload: starting as BACKUP");
        if s.advbase == 0 {
            realtime_advert_thread();
        }
        running.push(start_vhid(s, shared, tasks, true));
    }
    Ok(())
}

/// One vhid's loop, from its start-up to its bow-out.
async fn run_vhid(
    s: Settings,
    shared: Shared,
    mut orders: mpsc::UnboundedReceiver<Order>,
) -> anyhow::Result<()> {
    if s.advbase == 0 {
        warn_fast_mode(s.vhid);
    }
    if let Some(peers) = s.delivery.peers() {
        tracing::warn!(
            vhid = s.vhid,
            ?peers,
            "unicast adverts to the listed peers: UCARP nodes cannot take part; every node must list all the others"
        );
    }
    let mac = net::interface_mac(&s.interface)
        .with_context(|| format!("reading the MAC address of {}", s.interface))?;
    if s.vips.len() > 1 {
        tracing::warn!(
            vhid = s.vhid,
            addrs = s.vips.len(),
            "several addresses in one vhid: UCARP hashes exactly one, so UCARP nodes cannot take part in this vhid"
        );
    }
    let vip = Vip::new(s.ifindex, s.vips.clone()).context("opening netlink")?;
    // We start as BACKUP, so a VIP left by a crashed run must go before anyone can reach it here.
    if vip.is_present().await? {
        tracing::warn!(vhid = s.vhid, vip = %s.vip(), "removing a VIP left on the interface by an earlier run");
        vip.remove().await.context("removing a leftover VIP")?;
    }
    // With XDP, adverts arrive through its ring buffer, stamped in the kernel; the raw socket
    // stays open only for its multicast group membership.
    // An IPv6 vhid's adverts come from the link-local address, which is also its tie-break
    // key; it is not the XDP program's to classify.
    let link_local = if s.is_ipv6() {
        let found = net::link_local(s.ifindex).with_context(|| {
            format!(
                "reading /proc/net/if_inet6 (is IPv6 enabled on {}?)",
                s.interface
            )
        })?;
        Some(found.with_context(|| {
            format!(
                "no IPv6 link-local address on {}: IPv6 is off there",
                s.interface
            )
        })?)
    } else {
        None
    };
    let own = link_local.map_or(IpAddr::V4(s.src), IpAddr::V6);
    let (xdp, mut events) = match &shared.xdp {
        Some((x, pump)) => {
            let mut handle = xdp::lock(x);
            handle
                .configure(&VhidSetup {
                    vhid: s.vhid,
                    ifindex: s.ifindex,
                    password: &s.password,
                    vips: &s.addrs(),
                    // No IPv4 advert is this vhid's.
                    group: if s.is_ipv6() {
                        Ipv4Addr::UNSPECIFIED
                    } else {
                        s.delivery.accepted_on(s.src)
                    },
                    mac,
                    fence: s.fence,
                })
                .context("configuring the XDP program")?;
            handle
                .set_role(s.vhid, false)
                .context("configuring the XDP program")?;
            // A virtual interface (veth) in native mode loses XDP_TX unless its peer is set up
            // for it, which we cannot check from here; the kernel answers ARP for the VIP there.
            if handle.mode_on(&s.interface) == "native" && !net::is_physical(&s.interface) {
                tracing::info!(interface = %s.interface, "virtual interface in native XDP mode: ARP for the VIP is answered by the kernel");
                handle
                    .set_arp_via_stack(s.vhid, true)
                    .context("configuring the XDP program")?;
            }
            drop(handle);
            (
                Some(Port::new(x.clone(), s.vhid, &s.interface)),
                Some((pump.clone(), pump.add(s.vhid, &s.addrs_v4()))),
            )
        }
        None => (None, None),
    };
    let group = match &s.delivery {
        Delivery::Multicast(g) | Delivery::Broadcast(g) => Some(*g),
        Delivery::Unicast(_) => None,
    };
    let receiver = if s.is_ipv6() {
        AdvertReceiver::open6(s.ifindex)
    } else {
        AdvertReceiver::open(&s.interface, s.ifindex, group)
    }
    .context("opening the advert receive socket")?;
    let sender = match (&s.delivery, link_local) {
        (_, Some(own)) => AdvertSender::Ipv6(
            net::Ipv6Sockets::open(&s.interface, s.ifindex, own)
                .context("opening the IPv6 advert sockets")?,
        ),
        (Delivery::Broadcast(_), None) => {
            AdvertSender::Broadcast(PacketSocket::open(s.ifindex).context("opening AF_PACKET")?)
        }
        (Delivery::Multicast(_) | Delivery::Unicast(_), None) => {
            AdvertSender::raw(&s.interface).context("opening the advert socket")?
        }
    };
    let garp = PacketSocket::open(s.ifindex).context("opening AF_PACKET")?;
    let hooks = Hooks::spawn(hook_config(&s));
    let (link_conn, _, mut link_events) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .context("subscribing to link events")?;
    tokio::spawn(link_conn);

    let params = crate::carp::machine::Params {
        src: own,
        ..s.carp_params()
    };
    let policy = s.db.as_ref().map(|d| DbPolicy {
        own: d.addr,
        peers: d.nodes.clone(),
        vip_first: d.vip_first,
        retry: RETRY,
        margin: MARGIN,
        unreachable_after: (d.check_interval * 3).max(Duration::from_secs(1)),
        max_lag: d.max_lag,
    });
    let mut coord = Coordinator::new(
        Config {
            carp: params,
            db: policy,
            quorum: s.quorum.as_ref().map(|q| q.ttl),
        },
        Mono::now(),
    )
    .with_tracks(
        s.tracks
            .iter()
            .map(|t| Track::new(t.name.clone(), t.action, t.fall, t.rise))
            .collect(),
    );
    let mut probes = (!s.tracks.is_empty()).then(|| crate::probe::spawn(&s.tracks));
    let mut link_up = s.ignore_ifstate || net::link_is_up(&s.interface);
    if !link_up {
        coord.handle(Mono::now(), Input::LinkDown);
    }
    if !s.neutral {
        hooks.run(Hook::Down);
    }
    tracing::info!(
        vhid = s.vhid,
        interface = %s.interface,
        vips = ?s.addrs(),
        src = %s.src,
        advbase = s.advbase,
        advskew = s.advskew,
        preempt = s.preempt,
        xdp = xdp.as_ref().map_or("off", |x| x.mode()),
        database = s.db.is_some(),
        "agent started"
    );

    let (db, mut outcomes, mut observations) = match s.db.clone().map(spawn_db).transpose()? {
        Some((link, (o, obs))) => (Some(link), Some(o), Some(obs)),
        None => (None, None, None),
    };
    // etcd's gRPC answers are parsed on a thread of their own too.
    let (lease_want, lease_gtid, mut lease_reports) = match s.quorum.clone() {
        Some(q) => {
            tracing::info!(endpoints = %q.endpoints.join(","), key = %q.key, ttl_s = q.ttl.as_secs(), "the database opens only under the quorum lease");
            let (gtid_tx, gtid_rx) = watch::channel(String::new());
            let (want, reports) =
                quorum::spawn(q, s.src.to_string(), gtid_rx, &side_runtime("quorum")?);
            (Some(want), Some(gtid_tx), Some(reports))
        }
        None => (None, None, None),
    };
    let (drained_tx, mut drained_rx) = mpsc::unbounded_channel();
    let mut agent = Agent {
        addrs: s.addrs(),
        s,
        own,
        mac,
        vip,
        sender,
        garp,
        hooks,
        xdp,
        counter: Counter::default(),
        ip_id: rand::random(),
        counters: Counters::default(),
        last_auth_log: None,
        last_send_error_log: None,
        last_conflict_log: None,
        last_conflict: None,
        xdp_error: None,
        replay: ReplayGuard::default(),
        last_replay_log: None,
        drops_seen: None,
        last_drop_log: None,
        db,
        drained: drained_tx,
        held: Held::default(),
        lease_want,
    };
    let mut buf = vec![0u8; 2048];
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut timer = Timer::new();
    // Leaving MASTER runs the down hook anyway; -z asks for it at exit in any state.
    let mut down_at_exit = agent.s.shutdown_hook;
    loop {
        agent.execute(&mut coord).await;
        if stop_deadline.is_some() && coord.finished() {
            break;
        }
        // The clock, not the timer's readiness: tokio learns that the timer fired only when
        // it looks for events, and while the advert socket is never empty (a flood without
        // XDP) this task seldom gives it the chance, so a MASTER's advert or a BACKUP's
        // look came late by tens of milliseconds. Once per turn, and the `select` follows
        // as always: the orders are still served first, whatever the deadlines do.
        if coord.poll_timeout().is_some_and(|t| t <= Mono::now()) {
            agent.on_deadline(&mut coord, &receiver, &mut events, &mut buf);
            agent.execute(&mut coord).await;
        }
        // To the microsecond: nodes with equal skews then take over at the same instant, and
        // the core settles such a tie (`Coordinator::settle_skew`, and the tie-break key).
        let sleep = coord.poll_timeout();
        tokio::select! {
            biased;
            // The agent's orders come first, as signals did when one loop served one vhid: a
            // stop must never wait behind a stream of events.
            Some(order) = orders.recv() => match order {
                Order::Ask(command, reply) => {
                    let refused = match command {
                        Command::Switchover(_) => coord.request_switchover(Mono::now()),
                        Command::ForcePromote => coord.force_promote(Mono::now()),
                        Command::Status | Command::Metrics | Command::Reload => Ok(()),
                    };
                    agent.execute(&mut coord).await;
                    let _ = reply.send(agent.status(&coord, refused.err()));
                }
                Order::Reload(new, changed) => {
                    agent.reload(&mut coord, *new, changed, &mut down_at_exit);
                }
                Order::Stop => {
                    if stop_deadline.is_none() {
                        stop_deadline = Some(tokio::time::Instant::now() + STOP_BOUND);
                        down_at_exit &= coord.state() != State::Master;
                        coord.handle(Mono::now(), Input::Shutdown);
                    }
                }
            },
            _ = async { tokio::time::sleep_until(stop_deadline.expect("guarded")).await }, if stop_deadline.is_some() => {
                tracing::error!("shutdown did not complete in time; exiting anyway");
                break;
            }
            () = async { timer.until(sleep.expect("guarded")).await }, if sleep.is_some() => {
                agent.on_deadline(&mut coord, &receiver, &mut events, &mut buf);
            }
            Some(ev) = next_event(&mut events) => agent.on_event(&mut coord, ev),
            Some(_) = link_events.next(), if !agent.s.ignore_ifstate => {
                let up = net::link_is_up(&agent.s.interface);
                if up != link_up {
                    link_up = up;
                    tracing::info!(vhid = agent.s.vhid, interface = %agent.s.interface, up, "link state changed");
                    coord.handle(Mono::now(), if up { Input::LinkUp } else { Input::LinkDown });
                }
            }
            Some(outcome) = next(&mut outcomes) => coord.handle(Mono::now(), Input::DbDone(outcome)),
            Some(input) = next(&mut observations) => {
                if let (Input::Observed(obs), Some(tx)) = (&input, &lease_gtid)
                    && let Ok(local) = &obs.local
                {
                    tx.send_replace(local.logged.to_string());
                }
                coord.handle(Mono::now(), input)
            }
            Some(()) = drained_rx.recv() => coord.handle(Mono::now(), Input::Drained),
            Some(report) = next(&mut lease_reports) => coord.handle(Mono::now(), Input::Lease(report)),
            Some((index, result)) = next(&mut probes) => coord.handle(Mono::now(), Input::Probe { index, result }),
            // Last: without XDP a flood keeps this socket ready at every turn, and what comes
            // before it must still be taken (this loop prefers in order). Taken earlier, with a
            // MASTER reading its queue before each advert and before the clock check above, a
            // MASTER without XDP sent no advert for a whole flood.
            r = receiver.recv(&mut buf), if events.is_none() => match r {
                Ok(n) => agent.on_socket_packet(&mut coord, &receiver, &buf[..n]),
                Err(error) => tracing::warn!(%error, "advert receive failed"),
            },
        }
    }

    tracing::info!(vhid = agent.s.vhid, state = %coord.state(), "stopped");
    if down_at_exit {
        agent.hooks.run(Hook::Down);
    }
    let bound = agent.s.hook_timeout + Duration::from_secs(1);
    if tokio::time::timeout(bound, agent.hooks.finish())
        .await
        .is_err()
    {
        tracing::warn!("hooks still running at exit");
    }
    Ok(())
}

fn warn_fast_mode(vhid: u8) {
    tracing::warn!(
        vhid,
        "fast mode (advbase 0): UCARP peers cannot follow this timing; use it only between cluster-agent nodes"
    );
}

fn hook_config(s: &Settings) -> HookConfig {
    HookConfig {
        up: s.upscript.clone(),
        down: s.downscript.clone(),
        interface: s.interface.clone(),
        vip: s.vip().to_string(),
        vips: s
            .vips
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        xparam: s.xparam.clone(),
        timeout: s.hook_timeout,
    }
}

/// A runtime of its own for the database's tasks, on its own thread: TLS handshakes, large
/// answers and their parsing must never delay an advert or the reading of a peer's (3.9 ms
/// apart in fast mode), as they did when every task shared this loop's thread. The thread
/// lives as long as the process.
/// Real-time priority of the advert thread in fast mode: low, like keepalived's
/// `vrrp_rt_priority`, above every ordinary thread and below the kernel's own.
const RT_PRIORITY: i32 = 10;

/// In fast mode a master's adverts are a few milliseconds apart and its peers take over
/// after three are missing: on a loaded machine an ordinary thread can wait longer than that
/// for a CPU, and a peer takes over from a master that is alive. The thread that sends and
/// reads adverts then runs under the real-time FIFO policy. What it starts later (the
/// runtime's blocking threads, hook processes) does not inherit it, and the database's
/// thread is already running. A machine whose host takes all its CPUs away now and then
/// (see the bench's stall probe) can still stop it.
fn realtime_advert_thread() {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: sched_setscheduler(2) on the calling thread (0) with a valid parameter.
    let r = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if r == 0 {
        tracing::info!(
            priority = RT_PRIORITY,
            "fast mode: adverts sent and read at real-time priority"
        );
    } else {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "fast mode: cannot raise the advert thread to real-time priority; on a loaded machine a peer may take over from a live master"
        );
    }
}

fn side_runtime(name: &str) -> std::io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// Starts the operation and observation tasks of the local database.
fn spawn_db(settings: DbSettings) -> std::io::Result<(DbLink, DbAnswers)> {
    let rt = side_runtime("database")?;
    let db = Arc::new(Db::new(settings.db.clone()));
    let (ops, mut op_rx) = mpsc::unbounded_channel::<DbOp>();
    let (out_tx, outcomes) = mpsc::unbounded_channel();
    let exec_db = db.clone();
    let promote_timeout = settings.promote_timeout;
    rt.spawn(async move {
        while let Some(op) = op_rx.recv().await {
            let outcome = run_op(&exec_db, op, promote_timeout).await;
            let promoted = matches!(outcome, DbOutcome::Promoted(Ok(_)));
            let reported = out_tx.send(outcome).is_ok();
            // Open first, tidy up after: the next operation waits for this, the clients not.
            // The opening lock goes even when nobody listens any more (the agent is stopping).
            exec_db.release_opening_locks().await;
            if !reported {
                return;
            }
            if promoted {
                let _ = exec_db.forget_replication().await;
            }
        }
    });
    // Host checks run beside the operations: a prepare step may wait on one.
    let (checks, mut check_rx) = mpsc::unbounded_channel::<(Ipv4Addr, Mono)>();
    let check_db = db.clone();
    rt.spawn(async move {
        while let Some((addr, since)) = check_rx.recv().await {
            let db = check_db.clone();
            tokio::spawn(async move { db.check_host_early(addr, since).await });
        }
    });
    let (watch, mut watch_rx) = watch::channel::<Option<Ipv4Addr>>(None);
    let (obs_tx, observations) = mpsc::unbounded_channel();
    let (db_for_guard, obs_tx_guard) = (db.clone(), obs_tx.clone());
    let audit_db = db.clone();
    let warm_db = db.clone();
    let interval = settings.check_interval;
    rt.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let master = *watch_rx.borrow_and_update();
            let at = Mono::now();
            // The master first: the local position read after it is no older than its log.
            let (master, asked) = match master {
                Some(m) => {
                    let (seen, asked) = db.observe_master(m).await;
                    (Some((m, seen)), asked)
                }
                None => (None, at),
            };
            let local = db.observe_local().await;
            if obs_tx
                .send(Input::Observed(Observation {
                    at,
                    asked,
                    local,
                    master,
                }))
                .is_err()
            {
                return;
            }
        }
    });
    // The peers are looked at on their own task (a second writer, a history this node lacks):
    // a dead peer's timeouts must not hold up the samples above.
    let (guard_db, guard_tx, peers) = (db_for_guard, obs_tx_guard, settings.nodes.clone());
    rt.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let at = Mono::now();
            let (seen, own) = guard_db
                .look_at_peers(&peers, interval.max(PROBE_TIMEOUT))
                .await;
            if guard_tx
                .send(Input::PeersSeen {
                    at,
                    peers: seen,
                    own,
                })
                .is_err()
            {
                return;
            }
        }
    });
    // Sessions to every peer ready before they are needed: any node may have to promote.
    let warm_peers = settings.nodes.clone();
    rt.spawn(async move {
        let mut tick = tokio::time::interval(WARM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            warm_db.warm_peers(&warm_peers, PROBE_TIMEOUT).await;
        }
    });
    // Accounts that fencing cannot stop and unsafe settings are named, once at start and
    // whenever they change.
    let (audit_tx, audit) = watch::channel(Audit::default());
    rt.spawn(async move {
        let mut failed_before = false;
        loop {
            let read = async {
                Ok::<_, crate::db::DbError>(Audit {
                    bypass: audit_db.read_only_bypass_accounts().await?,
                    unsafe_settings: audit_db.unsafe_settings().await?,
                })
            };
            let wait = match read.await {
                Ok(found) => {
                    failed_before = false;
                    if *audit_tx.borrow() != found {
                        if !found.bypass.is_empty() {
                            tracing::warn!(accounts = %found.bypass.join(","), "these accounts can write through read_only, so fencing cannot stop them: revoke READ_ONLY ADMIN (and SUPER granted before 10.11, ALL ON *.*) from application and operator accounts");
                        }
                        for setting in &found.unsafe_settings {
                            tracing::error!(%setting, "the server's settings can lose acknowledged writes: use the ones `db bootstrap` writes");
                        }
                        if audit_tx.send(found).is_err() {
                            return;
                        }
                    }
                    AUDIT_EVERY
                }
                Err(error) => {
                    if !failed_before {
                        tracing::warn!(%error, "cannot read the accounts that can write through read_only or the durability settings (the agent's account needs SELECT on mysql.global_priv and mysql.roles_mapping)");
                    }
                    failed_before = true;
                    RETRY * 5
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
    Ok((
        DbLink {
            ops,
            checks,
            watch,
            audit,
        },
        (outcomes, observations),
    ))
}

async fn run_op(db: &Db, op: DbOp, promote_timeout: Duration) -> DbOutcome {
    // Only a promotion uses what a prepare step made ready; any other operation finds
    // replication running and no opening lock held.
    if !matches!(op, DbOp::Promote { .. } | DbOp::Resume)
        && let Err(e) = db.unready().await
    {
        tracing::warn!(error = %e, op = op.name(), "undoing a prepare step before the next operation");
    }
    match op {
        DbOp::Fence => DbOutcome::Fenced(db.fence().await.map(drop).map_err(|e| e.to_string())),
        DbOp::Follow { master } => DbOutcome::Followed(match db.follow(master.into()).await {
            Ok(_) => Ok(()),
            Err(crate::db::DbError::Errant { gtids, .. }) => Err(FollowError::Errant(gtids)),
            Err(e) => Err(FollowError::Failed(e.to_string())),
        }),
        DbOp::Prepare {
            peers,
            fence,
            ready_once_silent,
        } => {
            let ready = ready_once_silent.map(|m| (m, promote_timeout));
            let (own, peers, ready) = db.prepare(&peers, PROBE_TIMEOUT, fence, ready).await;
            DbOutcome::Prepared { own, peers, ready }
        }
        DbOp::Resume => DbOutcome::Resumed(db.unready().await.map_err(|e| e.to_string())),
        DbOp::FencePeers { peers } => DbOutcome::PeersFenced(db.fence_peers(&peers).await),
        DbOp::CatchUp { from, target } => DbOutcome::CaughtUp(
            db.catch_up(from, &target, promote_timeout)
                .await
                .map_err(|e| e.to_string()),
        ),
        DbOp::Promote { target, recheck } => DbOutcome::Promoted(
            db.promote_covering(&target, &recheck, PROBE_TIMEOUT, promote_timeout)
                .await
                .map(|p| p.steps)
                .map_err(|e| e.to_string()),
        ),
    }
}

impl Agent {
    /// Carries out every effect the coordinator has queued, feeding outcomes of those that
    /// complete at once straight back.
    async fn execute(&mut self, coord: &mut Coordinator) {
        while let Some(effect) = coord.poll_effect() {
            match effect {
                Effect::Advert { advbase, advskew } => self.send_advert(advbase, advskew),
                Effect::Garp => self.send_garp(),
                Effect::XdpRole(master) => self.set_xdp_role(master),
                Effect::Hook(h) => self.hooks.run(h),
                Effect::Vip(add) => {
                    let r = if add {
                        self.vip.add().await
                    } else {
                        self.vip.remove().await
                    };
                    coord.handle(
                        Mono::now(),
                        Input::VipDone {
                            add,
                            result: r.map_err(|e| e.to_string()),
                        },
                    );
                }
                Effect::Db(op) => match &self.db {
                    Some(db) => {
                        // The task lives as long as the link, which lives as long as the agent.
                        let _ = db.ops.send(op);
                    }
                    None => tracing::error!(?op, "database operation without a database"),
                },
                Effect::Watch(master) => {
                    if let Some(db) = &self.db {
                        db.watch.send_replace(master);
                    }
                }
                Effect::CheckHost { addr, since } => {
                    if let Some(db) = &self.db {
                        let _ = db.checks.send((addr, since));
                    }
                }
                Effect::Drain => self.drain(coord),
                Effect::HandOffHeld => self.hand_off_held(),
                Effect::EndHold => self.end_hold(),
                Effect::Lease(want) => {
                    if let Some(tx) = &self.lease_want {
                        tx.send_replace(want);
                    }
                }
            }
        }
    }

    /// Announces every address at our MAC: gratuitous ARP, or for IPv6 an unsolicited
    /// neighbour advertisement.
    fn send_garp(&self) {
        for vip in &self.s.vips {
            let sent = match (vip.addr, &self.sender) {
                (IpAddr::V4(a), _) => self.garp.send(&wire::garp_frame(self.mac, a), [0xff; 6]),
                (IpAddr::V6(a), AdvertSender::Ipv6(v6)) => v6.send_na(a, self.mac),
                (IpAddr::V6(_), _) => Ok(()),
            };
            if let Err(error) = sent {
                tracing::warn!(vhid = self.s.vhid, vip = %vip.addr, %error, "announcing the VIP failed");
            }
        }
    }

    fn send_advert(&mut self, advbase: u8, advskew: u8) {
        let counter = self.counter.next(rand::random());
        // Our own counter coming back from elsewhere is a replay too.
        self.replay.remember_sent(counter);
        if let Some(Err(error)) = self.xdp.as_ref().map(|x| x.remember_sent(counter))
            && once_per_second(&mut self.last_send_error_log)
        {
            tracing::error!(vhid = self.s.vhid, %error, "cannot update the XDP replay guard");
        }
        let carp = wire::encode_carp(
            &self.s.password,
            &self.addrs,
            self.s.vhid,
            advbase,
            advskew,
            counter,
        );
        if let AdvertSender::Ipv6(v6) = &self.sender {
            match v6.send_advert(&carp) {
                Ok(()) => self.counters.adverts_sent += 1,
                Err(error) => {
                    if once_per_second(&mut self.last_send_error_log) {
                        tracing::warn!(vhid = self.s.vhid, %error, "advert send failed");
                    }
                }
            }
            return;
        }
        for &dst in self.s.delivery.destinations() {
            self.ip_id = self.ip_id.wrapping_add(1);
            let packet = wire::encode_packet(self.s.src, dst, self.ip_id, &carp);
            match self.sender.send(&packet, self.s.vhid) {
                Ok(()) => self.counters.adverts_sent += 1,
                Err(error) => {
                    if once_per_second(&mut self.last_send_error_log) {
                        tracing::warn!(vhid = self.s.vhid, peer = %dst, %error, "advert send failed");
                    }
                }
            }
        }
    }

    /// Applies a reloaded configuration that [`reload::plan`] found this vhid can take.
    fn reload(
        &mut self,
        coord: &mut Coordinator,
        mut new: Settings,
        changed: Vec<&'static str>,
        down_at_exit: &mut bool,
    ) {
        // The database tasks keep the settings they were started with (see `reload::changes`).
        new.db = self.s.db.clone();
        coord.handle(Mono::now(), Input::Reconfigure(new.carp_params()));
        self.hooks.reconfigure(hook_config(&new));
        *down_at_exit = new.shutdown_hook;
        tracing::info!(vhid = new.vhid, state = %coord.state(), changed = ?changed, advbase = new.advbase, advskew = new.advskew, "configuration reloaded");
        self.s = new;
    }

    /// Feeds whatever adverts already wait in the ring buffer or the socket.
    fn take_in_queued(
        &mut self,
        coord: &mut Coordinator,
        receiver: &AdvertReceiver,
        events: &mut Option<XdpEvents>,
        buf: &mut [u8],
    ) {
        if let Some((pump, _)) = events {
            pump.pump();
        }
        for _ in 0..QUEUED_MAX {
            match events.as_mut() {
                Some((_, rx)) => match rx.try_recv() {
                    Ok(ev) => self.on_event(coord, ev),
                    Err(_) => return,
                },
                None => match receiver.try_recv(buf) {
                    Some(Ok(n)) => self.on_socket_packet(coord, receiver, &buf[..n]),
                    Some(Err(_)) | None => return,
                },
            }
        }
    }

    fn on_event(&mut self, coord: &mut Coordinator, ev: XdpEvent) {
        match ev {
            XdpEvent::Advert { ktime_ns, packet } => {
                self.on_packet(coord, &packet, Mono::from_nanos(ktime_ns))
            }
            XdpEvent::Advert6 { ktime_ns, packet } => {
                self.on_packet(coord, &packet, Mono::from_nanos(ktime_ns))
            }
            XdpEvent::Syn {
                ktime_ns,
                packet,
                len,
            } => self.on_held(ktime_ns, &packet[..len]),
            XdpEvent::Conflict { mac, ip, reply, .. } => {
                if coord.state() == State::Master {
                    self.on_conflict(mac, ip, reply)
                } else {
                    // Reported while BACKUP only during a drain: the next master's announcement.
                    coord.handle(Mono::now(), Input::VipClaimed)
                }
            }
        }
    }

    /// A connection request held off by a drain: kept for the next master, or sent to it at
    /// once when it has announced itself already.
    fn on_held(&mut self, ktime_ns: u64, packet: &[u8]) {
        if self.held.handing_off {
            self.forward_held(packet);
        } else if self.held.requests.len() < HELD_MAX {
            self.held.requests.push((ktime_ns, packet.to_vec()));
        } else {
            self.held.dropped += 1;
        }
    }

    fn hand_off_held(&mut self) {
        if self.held.handing_off {
            return;
        }
        self.held.handing_off = true;
        let now = Mono::now().as_nanos();
        let requests = std::mem::take(&mut self.held.requests);
        let fresh = requests
            .iter()
            .filter(|(t, _)| now.saturating_sub(*t) < HOLD_MAX.as_nanos() as u64);
        let mut sent = 0;
        for (_, packet) in fresh {
            sent += usize::from(self.forward_held(packet));
        }
        tracing::info!(
            vhid = self.s.vhid,
            held = requests.len(),
            sent,
            dropped = self.held.dropped,
            "held connection requests handed to the next master"
        );
    }

    /// Sends one held request to the address it was for, as it was received; the kernel
    /// resolves that address to the node that answers for it now.
    fn forward_held(&mut self, packet: &[u8]) -> bool {
        let Some(packet) = handoff::with_tcp_checksum(packet) else {
            self.counters.bad_packets += 1;
            return false;
        };
        let Some(to) = handoff::destination(&packet).filter(|&to| self.s.owns(to.into())) else {
            self.counters.bad_packets += 1;
            return false;
        };
        if self.held.socket.is_none() {
            match net::ForwardSocket::open(&self.s.interface) {
                Ok(socket) => self.held.socket = Some(socket),
                Err(error) => {
                    tracing::error!(vhid = self.s.vhid, %error, "cannot open a socket to hand held connection requests on");
                    return false;
                }
            }
        }
        let sent = self
            .held
            .socket
            .as_ref()
            .map(|socket| socket.send(&packet, to));
        match sent {
            Some(Ok(())) => {
                self.counters.held_forwarded += 1;
                true
            }
            Some(Err(error)) => {
                if once_per_second(&mut self.last_send_error_log) {
                    tracing::warn!(vhid = self.s.vhid, %error, "cannot hand a held connection request on");
                }
                false
            }
            None => false,
        }
    }

    fn end_hold(&mut self) {
        let left = self.held.requests.len();
        self.held = Held::default();
        if let Some(Err(error)) = self.xdp.as_ref().map(|x| x.set_drain(false)) {
            tracing::error!(vhid = self.s.vhid, %error, "cannot end holding connection requests to the VIP");
        }
        if left > 0 {
            tracing::info!(
                vhid = self.s.vhid,
                left,
                "held connection requests forgotten: their clients send them again"
            );
        }
    }

    /// A deadline of the core has come.
    fn on_deadline(
        &mut self,
        coord: &mut Coordinator,
        receiver: &AdvertReceiver,
        events: &mut Option<XdpEvents>,
        buf: &mut [u8],
    ) {
        // A BACKUP first takes in what arrived before its deadline (the master's adverts, above
        // all): this loop prefers deadlines, and a process woken a little late, or stopped or
        // starved for longer, would otherwise take over from a master that never went away.
        // In fast mode a few milliseconds of lateness are enough. A MASTER advertises first:
        // nothing queued changes that, and under a flood without XDP the queue is long.
        if coord.state() != State::Master {
            self.take_in_queued(coord, receiver, events, buf);
        }
        if events.is_none() && self.take_drops(receiver) > 0 {
            coord.handle(Mono::now(), Input::AdvertsLost);
        }
        coord.handle_timeout(Mono::now());
    }

    /// A packet read from the advert socket (without XDP).
    fn on_socket_packet(
        &mut self,
        coord: &mut Coordinator,
        receiver: &AdvertReceiver,
        packet: &[u8],
    ) {
        let before = self.counters.adverts_received;
        self.on_packet(coord, packet, Mono::now());
        if self.counters.adverts_received != before {
            // What the socket dropped before an authentic advert says nothing of the master
            // now: only drops since the last one make a silence doubtful.
            self.take_drops(receiver);
        }
    }

    /// Counts the packets the advert socket dropped since the last look (its queue was full:
    /// a flood faster than the agent reads, without XDP), and returns how many. Without XDP
    /// only: with it, forged adverts end in the kernel and adverts come by the ring buffer.
    fn take_drops(&mut self, receiver: &AdvertReceiver) -> u32 {
        let total = match receiver.drops() {
            Ok(n) => n,
            Err(error) => {
                // Then lost adverts count as silence, as before the rule: said, not hidden.
                if once_per_second(&mut self.last_drop_log) {
                    tracing::warn!(vhid = self.s.vhid, %error, "cannot read the advert socket's drop counter: an overflow under a flood goes unseen");
                }
                return 0;
            }
        };
        let new = self
            .drops_seen
            .map_or(total, |seen| total.wrapping_sub(seen));
        self.drops_seen = Some(total);
        self.counters.socket_drops += u64::from(new);
        if new > 0 && once_per_second(&mut self.last_drop_log) {
            tracing::warn!(
                vhid = self.s.vhid,
                dropped = self.counters.socket_drops,
                "the advert socket overflowed (a flood faster than the agent reads; XDP would drop forged adverts in the kernel): a master's silence does not count towards its master-down time meanwhile"
            );
        }
        new
    }

    /// `now` is when the packet arrived: the kernel's stamp when XDP delivered it.
    fn on_packet(&mut self, coord: &mut Coordinator, packet: &[u8], now: Mono) {
        let decoded = if self.own.is_ipv6() {
            wire::decode6(packet)
        } else {
            wire::decode(packet)
        };
        let rx = match decoded {
            Ok(rx) => rx,
            Err(WireError::NotCarp(_)) => return,
            Err(error) => {
                self.counters.bad_packets += 1;
                tracing::debug!(vhid = self.s.vhid, %error, "malformed advert dropped");
                return;
            }
        };
        if rx.src == self.own {
            return;
        }
        let expect = Expect {
            vhid: self.s.vhid,
            group: if self.own.is_ipv6() {
                wire::GROUP6.into()
            } else {
                self.s.delivery.accepted_on(self.s.src).into()
            },
            peers: self.s.delivery.peers().unwrap_or_default(),
            vips: &self.addrs,
            password: &self.s.password,
        };
        match wire::verify(&rx, &expect) {
            Ok(()) if !self.replay.accept(rx.advert.counter) => {
                self.counters.replayed += 1;
                if once_per_second(&mut self.last_replay_log) {
                    tracing::warn!(vhid = self.s.vhid, peer = %rx.src, replayed = self.counters.replayed, "replayed advert dropped");
                }
            }
            Ok(()) => {
                self.counters.adverts_received += 1;
                self.counter.on_receive(rx.advert.counter);
                coord.handle(
                    now,
                    Input::Advert {
                        src: rx.src,
                        advbase: rx.advert.advbase,
                        advskew: rx.advert.advskew,
                    },
                );
            }
            // Another cluster (or VRRP) sharing the segment: not ours, not an error.
            Err(WireError::OtherVhid { .. }) => {}
            Err(error) if error.is_auth_failure() => {
                self.counters.auth_failures += 1;
                if once_per_second(&mut self.last_auth_log) {
                    tracing::warn!(
                        vhid = self.s.vhid,
                        peer = %rx.src,
                        failures = self.counters.auth_failures,
                        "advert failed authentication: wrong password or VIP on the peer"
                    );
                }
            }
            Err(error @ WireError::UnknownPeer(_)) => {
                self.counters.bad_packets += 1;
                if once_per_second(&mut self.last_auth_log) {
                    tracing::warn!(vhid = self.s.vhid, peer = %rx.src, %error, "advert from a node missing from the peers dropped");
                }
            }
            Err(error) => {
                self.counters.bad_packets += 1;
                tracing::debug!(vhid = self.s.vhid, peer = %rx.src, %error, "advert rejected");
            }
        }
    }

    /// Holds off new connections to the VIP in XDP and watches the open ones end. Without
    /// XDP nothing can hold them off, so there is nothing to wait for.
    fn drain(&mut self, coord: &mut Coordinator) {
        let held = match self.xdp.as_ref().map(|x| x.set_drain(true)) {
            Some(Ok(())) => true,
            Some(Err(error)) => {
                tracing::error!(vhid = self.s.vhid, %error, "cannot hold off new connections to the VIP");
                false
            }
            None => false,
        };
        if held {
            drain::watch(self.s.addrs_v4(), DRAIN_MAX, self.drained.clone());
        } else {
            coord.handle(Mono::now(), Input::Drained);
        }
    }

    fn set_xdp_role(&mut self, master: bool) {
        if let Some(x) = self.xdp.as_ref() {
            match x.set_role(master) {
                Ok(()) => self.xdp_error = None,
                Err(error) => {
                    tracing::error!(vhid = self.s.vhid, %error, "cannot update the XDP role");
                    self.xdp_error = Some(error.to_string());
                }
            }
        }
    }

    /// Another MAC claims our VIP while we are MASTER: a split-brain signal, never silent.
    fn on_conflict(&mut self, mac: [u8; 6], ip: Ipv4Addr, reply: bool) {
        self.counters.arp_conflicts += 1;
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        self.last_conflict = Some(mac.clone());
        if once_per_second(&mut self.last_conflict_log) {
            tracing::error!(
                vhid = self.s.vhid,
                vip = %ip,
                peer_mac = %mac,
                reply,
                conflicts = self.counters.arp_conflicts,
                "another host claims the VIP while we are MASTER"
            );
        }
    }

    fn status(&self, coord: &Coordinator, error: Option<String>) -> Status {
        let now = Mono::now();
        let machine = coord.machine();
        let xdp_counters = self
            .xdp
            .as_ref()
            .and_then(|x| x.counters().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Status {
            state: machine.state().to_string(),
            vhid: self.s.vhid,
            vip: self.s.vips[0].to_string(),
            more_vips: self.s.vips[1..].iter().map(|v| v.to_string()).collect(),
            interface: self.s.interface.clone(),
            master: machine.master().map(|a| a.to_string()),
            since_last_advert_ms: machine
                .last_advert()
                .map(|t| now.saturating_since(t).as_millis() as u64),
            advbase: self.s.advbase,
            advskew: machine.effective_skew(),
            demoted: machine.demoted(),
            xdp: self.xdp.as_ref().map_or("off", |x| x.mode()).to_string(),
            counters: Counters {
                transitions: coord.transitions(),
                ..self.counters
            },
            database: coord.db_view(),
            read_only_bypass: self
                .db
                .as_ref()
                .map(|d| d.audit.borrow().bypass.clone())
                .unwrap_or_default(),
            unsafe_settings: self
                .db
                .as_ref()
                .map(|d| d.audit.borrow().unsafe_settings.clone())
                .unwrap_or_default(),
            vip_error: coord.vip_error().map(str::to_string),
            xdp_error: self.xdp_error.clone(),
            last_conflict_mac: self.last_conflict.clone(),
            xdp_counters,
            last_takeover: coord.takeover().cloned(),
            quorum: coord.quorum_view(now),
            transitions_by_reason: coord
                .transitions_by()
                .iter()
                .map(|(to, reason, count)| TransitionCount {
                    to: to.to_string(),
                    reason: reason.as_str().to_string(),
                    count: *count,
                })
                .collect(),
            hooks: self.hooks.counts(),
            tracks: coord.track_views(),
            error,
            other_vhids: Vec::new(),
        }
    }
}

/// Rate limit for log lines a peer can trigger at packet rate.
fn once_per_second(last: &mut Option<Mono>) -> bool {
    let now = Mono::now();
    if last.is_some_and(|t| now.saturating_since(t) < Duration::from_secs(1)) {
        return false;
    }
    *last = Some(now);
    true
}

/// A vhid's records from the ring buffer, and the pump that routes them.
type XdpEvents = (Pump, mpsc::UnboundedReceiver<XdpEvent>);

/// The next ring-buffer record for this vhid; only polled with XDP.
async fn next_event(events: &mut Option<XdpEvents>) -> Option<XdpEvent> {
    match events {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next message on a channel that may not exist (no database): then never.
async fn next<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
