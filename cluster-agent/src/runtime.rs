//! The agent's event loop: feeds packets, timers, link changes and control requests into the
//! state machine and carries out what it asks for. One task owns all state; the loop sleeps
//! exactly until the machine's next deadline.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::carp::machine::{Action, Input, Machine, Params, State};
use crate::carp::replay::ReplayGuard;
use crate::carp::time::Mono;
use crate::carp::wire::{self, Counter, Expect, WireError};
use crate::config::Settings;
use crate::control::{self, Command, Counters, DbStatus, Status};
use crate::db::follow::{self as dbfollow, Command as DbCommand, Event as DbEvent, GateError};
use crate::hooks::{Hook, HookConfig, Hooks};
use crate::net::{self, AdvertReceiver, AdvertSender, PacketSocket};
use crate::vip::Vip;
use crate::xdp::{self, XdpEvent, XdpEvents, XdpHandle};

/// Everything the loop owns besides the machine.
struct Agent {
    s: Settings,
    mac: [u8; 6],
    vip: Vip,
    sender: AdvertSender,
    garp: PacketSocket,
    hooks: Hooks,
    xdp: Option<XdpHandle>,
    counter: Counter,
    ip_id: u16,
    counters: Counters,
    last_auth_log: Option<Mono>,
    last_send_error_log: Option<Mono>,
    last_conflict_log: Option<Mono>,
    last_conflict: Option<String>,
    replay: ReplayGuard,
    last_replay_log: Option<Mono>,
    /// The local database, when `[mysql]` is configured.
    db: Option<DbRole>,
}

/// The database link and what it last reported, for `status`.
struct DbRole {
    commands: tokio::sync::mpsc::UnboundedSender<DbCommand>,
    vip_first: bool,
    /// The master replication was last pointed at.
    following: Option<Ipv4Addr>,
    status: DbStatus,
}

impl DbRole {
    fn send(&mut self, command: DbCommand) {
        match command {
            DbCommand::Follow(m) => self.following = Some(m),
            DbCommand::Fence => {
                self.following = None;
                self.status.role = "fenced".into();
            }
            DbCommand::Promote => self.following = None,
        }
        // The tasks live as long as the link, which lives as long as the agent.
        let _ = self.commands.send(command);
    }
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    if s.advbase == 0 {
        tracing::warn!(
            vhid = s.vhid,
            "fast mode (advbase 0): UCARP peers cannot follow this timing; use it only between cluster-agent nodes"
        );
    }
    let mac = net::interface_mac(&s.interface)
        .with_context(|| format!("reading the MAC address of {}", s.interface))?;
    let vip = Vip::new(s.ifindex, s.vip, s.prefix).context("opening netlink")?;
    // We start as BACKUP, so a VIP left by a crashed run must go before anyone can reach it here.
    if vip.is_present().await? {
        tracing::warn!(vhid = s.vhid, vip = %s.vip, "removing a VIP left on the interface by an earlier run");
        vip.remove().await.context("removing a leftover VIP")?;
    }
    let mut xdp = xdp::attach(&s.interface, s.xdp).context("attaching the XDP program")?;
    // With XDP, adverts arrive through its ring buffer, stamped in the kernel; the raw socket
    // stays open only for its multicast group membership.
    let mut events = match xdp.as_mut() {
        Some(x) => {
            x.configure(&s.password, s.vhid, s.vip, s.group, mac, s.fence)
                .context("configuring the XDP program")?;
            x.set_role(false).context("configuring the XDP program")?;
            // A virtual interface (veth) in native mode loses XDP_TX unless its peer is set up
            // for it, which we cannot check from here; the kernel answers ARP for the VIP there.
            if x.mode() == "native" && !net::is_physical(&s.interface) {
                tracing::info!(interface = %s.interface, "virtual interface in native XDP mode: ARP for the VIP is answered by the kernel");
                x.set_arp_via_stack(true)
                    .context("configuring the XDP program")?;
            }
            Some(x.take_events().context("opening the XDP ring buffer")?)
        }
        None => None,
    };
    let receiver = AdvertReceiver::open(&s.interface, s.ifindex, s.group)
        .context("opening the advert receive socket")?;
    let sender = if s.nomcast {
        AdvertSender::Broadcast(PacketSocket::open(s.ifindex).context("opening AF_PACKET")?)
    } else {
        AdvertSender::multicast(&s.interface, s.group).context("opening the advert socket")?
    };
    let garp = PacketSocket::open(s.ifindex).context("opening AF_PACKET")?;
    let mut control = control::serve(&s.control_socket)
        .with_context(|| format!("binding {}", s.control_socket.display()))?;
    let hooks = Hooks::spawn(HookConfig {
        up: s.upscript.clone(),
        down: s.downscript.clone(),
        interface: s.interface.clone(),
        vip: s.vip.to_string(),
        xparam: s.xparam.clone(),
        timeout: s.hook_timeout,
    });
    let (link_conn, _, mut link_events) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .context("subscribing to link events")?;
    tokio::spawn(link_conn);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let mut machine = Machine::new(
        Params {
            src: s.src,
            advbase: s.advbase,
            advskew: s.advskew,
            deadratio: s.deadratio,
            preempt: s.preempt,
            garp_interval: s.garp_interval,
        },
        Mono::now(),
    );
    let mut link_up = s.ignore_ifstate || net::link_is_up(&s.interface);
    if !link_up {
        machine.handle(Mono::now(), Input::LinkDown);
    }
    if !s.neutral {
        hooks.run(Hook::Down);
    }
    tracing::info!(
        vhid = s.vhid,
        interface = %s.interface,
        vip = %s.vip,
        src = %s.src,
        advbase = s.advbase,
        advskew = s.advskew,
        preempt = s.preempt,
        xdp = xdp.as_ref().map_or("off", |x| x.mode()),
        state = %machine.state(),
        "agent started"
    );

    let mut agent = Agent {
        s,
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
        replay: ReplayGuard::default(),
        last_replay_log: None,
        db: None,
    };
    let mut db_events = None;
    if let Some(settings) = agent.s.db.clone() {
        let link = dbfollow::spawn(settings.clone());
        let mut role = DbRole {
            commands: link.commands,
            vip_first: settings.vip_first,
            following: None,
            status: DbStatus {
                role: "fenced".into(),
                ..DbStatus::default()
            },
        };
        // We start as BACKUP: no writes here until we are master.
        role.send(DbCommand::Fence);
        agent.db = Some(role);
        db_events = Some(link.events);
    }
    let mut buf = vec![0u8; 2048];
    loop {
        agent.execute(&mut machine).await;
        agent.sync_followed_master(&machine);
        let sleep = machine
            .poll_timeout()
            .map(|d| tokio::time::Instant::now() + d.saturating_since(Mono::now()));
        tokio::select! {
            biased;
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = async { tokio::time::sleep_until(sleep.expect("guarded")).await }, if sleep.is_some() => {
                machine.handle_timeout(Mono::now());
            }
            r = receiver.recv(&mut buf), if events.is_none() => match r {
                Ok(n) => agent.on_packet(&mut machine, &buf[..n], Mono::now()),
                Err(error) => tracing::warn!(%error, "advert receive failed"),
            },
            ev = next_event(&mut events), if events.is_some() => match ev {
                Ok(XdpEvent::Advert { ktime_ns, packet }) => {
                    agent.on_packet(&mut machine, &packet, Mono::from_nanos(ktime_ns));
                }
                Ok(XdpEvent::Conflict { mac, ip, reply, .. }) => agent.on_conflict(mac, ip, reply),
                Err(error) => {
                    agent.counters.bad_packets += 1;
                    tracing::warn!(%error, "unreadable XDP record");
                }
            },
            Some(_) = link_events.next(), if !agent.s.ignore_ifstate => {
                let up = net::link_is_up(&agent.s.interface);
                if up != link_up {
                    link_up = up;
                    tracing::info!(vhid = agent.s.vhid, interface = %agent.s.interface, up, "link state changed");
                    machine.handle(Mono::now(), if up { Input::LinkUp } else { Input::LinkDown });
                }
            }
            Some(ev) = next_db_event(&mut db_events) => agent.on_db_event(&mut machine, ev).await,
            Some(req) = control.recv() => {
                if req.command == Command::Switchover {
                    machine.handle(Mono::now(), Input::Switchover);
                    agent.execute(&mut machine).await;
                }
                let status = agent.status(&machine);
                let _ = req.reply.send(serde_json::to_string(&status).unwrap_or_default());
            }
        }
    }

    tracing::info!(vhid = agent.s.vhid, state = %machine.state(), "stopping");
    let was_master = machine.state() == State::Master;
    machine.handle(Mono::now(), Input::Shutdown);
    // Leaving MASTER already queued the down hook; -z asks for it at exit in any state.
    agent.execute(&mut machine).await;
    if agent.s.shutdown_hook && !was_master {
        agent.hooks.run(Hook::Down);
    }
    let _ = std::fs::remove_file(&agent.s.control_socket);
    let bound = agent.s.hook_timeout + Duration::from_secs(1);
    if tokio::time::timeout(bound, agent.hooks.finish())
        .await
        .is_err()
    {
        tracing::warn!("hooks still running at exit");
    }
    Ok(())
}

impl Agent {
    async fn execute(&mut self, machine: &mut Machine) {
        while let Some(action) = machine.poll_action() {
            match action {
                Action::SendAdvert { advbase, advskew } => self.send_advert(advbase, advskew),
                Action::SendGarp => self.send_garp(),
                Action::Transition { from, to, reason } => {
                    self.counters.transitions += 1;
                    tracing::info!(vhid = self.s.vhid, %from, state = %to, ?reason, "state change");
                    match to {
                        State::Master => match &mut self.db {
                            // Diverged data must never become the writable copy, even on the
                            // last node alive: hand mastership back at once.
                            Some(db) if !db.status.errant.is_empty() => {
                                tracing::error!(vhid = self.s.vhid, gtids = %db.status.errant.join(","), "won the election with errant transactions: refusing to promote");
                                machine.handle(Mono::now(), Input::Switchover);
                            }
                            // The safe order: the database is writable before clients can reach
                            // the VIP; the VIP follows when the promotion reports success.
                            Some(db) if !db.vip_first => {
                                db.send(DbCommand::Promote);
                            }
                            Some(db) => {
                                db.send(DbCommand::Promote);
                                self.take_vip().await;
                            }
                            None => self.take_vip().await,
                        },
                        State::Backup => {
                            // Fence before the address goes, so it never answers as a backup.
                            self.set_xdp_role(false);
                            if let Err(error) = self.vip.remove().await {
                                tracing::error!(vhid = self.s.vhid, vip = %self.s.vip, %error, "cannot remove the VIP");
                            }
                            self.hooks.run(Hook::Down);
                            if let Some(db) = &mut self.db {
                                db.send(DbCommand::Fence);
                            }
                        }
                    }
                }
            }
        }
    }

    fn send_garp(&self) {
        if let Err(error) = self
            .garp
            .send(&wire::garp_frame(self.mac, self.s.vip), [0xff; 6])
        {
            tracing::warn!(vhid = self.s.vhid, %error, "gratuitous ARP failed");
        }
    }

    async fn take_vip(&mut self) {
        // XDP first: ARP is answered and traffic accepted the moment the address exists.
        self.set_xdp_role(true);
        if let Err(error) = self.vip.add().await {
            tracing::error!(vhid = self.s.vhid, vip = %self.s.vip, %error, "cannot add the VIP");
        }
        self.hooks.run(Hook::Up);
    }

    async fn on_db_event(&mut self, machine: &mut Machine, event: DbEvent) {
        let vhid = self.s.vhid;
        let Some(db) = self.db.as_mut() else { return };
        match event {
            DbEvent::Promoted(Ok(())) => {
                db.status.role = "master".into();
                db.status.last_error = None;
                if machine.state() == State::Master && !db.vip_first {
                    self.take_vip().await;
                    // The takeover announcement went out before the address existed.
                    self.send_garp();
                }
            }
            DbEvent::Promoted(Err(error)) => {
                tracing::error!(vhid, %error, "database not promoted: handing mastership back");
                db.status.last_error = Some(error);
                machine.handle(Mono::now(), Input::SetDemoted(true));
                machine.handle(Mono::now(), Input::Switchover);
            }
            DbEvent::Following(master) => {
                tracing::info!(vhid, %master, "database replicating from the master over TLS");
                db.status.role = "replica".into();
                db.status.errant.clear();
                db.status.last_error = None;
            }
            DbEvent::Errant { master, gtids } => {
                tracing::error!(
                    vhid,
                    %master,
                    gtids = %gtids.join(","),
                    "database holds transactions the master lacks: refusing to rejoin, staying fenced"
                );
                db.status.role = "fenced".into();
                db.status.errant = gtids;
            }
            DbEvent::FollowFailed { master, error } => {
                if db.status.last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(vhid, %master, %error, "cannot replicate from the master yet; retrying");
                }
                db.status.last_error = Some(error);
            }
            DbEvent::Gate(gate) => {
                // Errant transactions keep a node demoted whatever its health says.
                let demote = gate.is_err() || !db.status.errant.is_empty();
                if demote != machine.demoted() {
                    tracing::warn!(vhid, demoted = demote, reason = %gate.as_ref().err().map_or("healthy".to_string(), |e| e.to_string()), "catch-up gate changed");
                }
                let down = matches!(gate, Err(GateError::Down(_)));
                db.status.gate = gate.err().map(|e| e.to_string());
                machine.handle(Mono::now(), Input::SetDemoted(demote));
                // A master whose database is gone serves nothing: hand over now rather than
                // wait for a peer to preempt.
                if down && machine.state() == State::Master {
                    tracing::error!(vhid, "database down on the MASTER: handing over");
                    machine.handle(Mono::now(), Input::Switchover);
                }
            }
        }
    }

    fn send_advert(&mut self, advbase: u8, advskew: u8) {
        let counter = self.counter.next(rand::random());
        self.replay.remember_sent(counter);
        if let Some(Err(error)) = self.xdp.as_mut().map(|x| x.remember_sent(counter))
            && once_per_second(&mut self.last_send_error_log)
        {
            tracing::error!(vhid = self.s.vhid, %error, "cannot update the XDP replay guard");
        }
        let carp = wire::encode_carp(
            &self.s.password,
            self.s.vip,
            self.s.vhid,
            advbase,
            advskew,
            counter,
        );
        self.ip_id = self.ip_id.wrapping_add(1);
        let packet = wire::encode_packet(self.s.src, self.s.group, self.ip_id, &carp);
        match self.sender.send(&packet, self.s.vhid) {
            Ok(()) => self.counters.adverts_sent += 1,
            Err(error) => {
                if once_per_second(&mut self.last_send_error_log) {
                    tracing::warn!(vhid = self.s.vhid, %error, "advert send failed");
                }
            }
        }
    }

    /// `now` is when the packet arrived: the kernel's stamp when XDP delivered it.
    fn on_packet(&mut self, machine: &mut Machine, packet: &[u8], now: Mono) {
        let rx = match wire::decode(packet) {
            Ok(rx) => rx,
            Err(WireError::NotCarp(_)) => return,
            Err(error) => {
                self.counters.bad_packets += 1;
                tracing::debug!(vhid = self.s.vhid, %error, "malformed advert dropped");
                return;
            }
        };
        if rx.src == self.s.src {
            return;
        }
        let expect = Expect {
            vhid: self.s.vhid,
            group: self.s.group,
            vip: self.s.vip,
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
                machine.handle(
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
            Err(error) => {
                self.counters.bad_packets += 1;
                tracing::debug!(vhid = self.s.vhid, peer = %rx.src, %error, "advert rejected");
            }
        }
    }

    /// Points the database at the master this BACKUP follows.
    fn sync_followed_master(&mut self, machine: &Machine) {
        let followed = match machine.state() {
            State::Backup => machine.master(),
            State::Master => None,
        };
        if let (Some(db), Some(master)) = (self.db.as_mut(), followed)
            && db.following != Some(master)
        {
            db.send(DbCommand::Follow(master));
        }
    }

    fn set_xdp_role(&mut self, master: bool) {
        if let Some(x) = self.xdp.as_mut()
            && let Err(error) = x.set_role(master)
        {
            tracing::error!(vhid = self.s.vhid, %error, "cannot update the XDP role");
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

    fn status(&self, machine: &Machine) -> Status {
        let now = Mono::now();
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
            vip: format!("{}/{}", self.s.vip, self.s.prefix),
            interface: self.s.interface.clone(),
            master: machine.master().map(|a: Ipv4Addr| a.to_string()),
            since_last_advert_ms: machine
                .last_advert()
                .map(|t| now.saturating_since(t).as_millis() as u64),
            advbase: self.s.advbase,
            advskew: machine.effective_skew(),
            demoted: machine.demoted(),
            xdp: self.xdp.as_ref().map_or("off", |x| x.mode()).to_string(),
            counters: self.counters,
            database: self.db.as_ref().map(|d| d.status.clone()),
            last_conflict_mac: self.last_conflict.clone(),
            xdp_counters,
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

/// The next ring-buffer record; only polled while `events` is `Some`.
async fn next_event(events: &mut Option<XdpEvents>) -> Result<XdpEvent, xdp::XdpError> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

/// The next database event; only polled while the database link exists.
async fn next_db_event(
    events: &mut Option<tokio::sync::mpsc::UnboundedReceiver<DbEvent>>,
) -> Option<DbEvent> {
    match events {
        Some(e) => e.recv().await,
        None => std::future::pending().await,
    }
}
