//! The CARP election as a sans-IO state machine.
//!
//! Time is an input and effects are outputs: the runtime feeds verified adverts, timer expiries
//! and link changes in, executes the actions that come out, and sleeps until
//! [`Machine::poll_timeout`]. That keeps every rule deterministic under test and lets a seeded
//! simulation run thousands of clusters in a unit test.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use cluster_common::carp::BOW_OUT;
use serde::Serialize;

use super::time::Mono;
use super::wire::tie_key;

/// The skew a demoted node advertises, as UCARP-family implementations do: high enough that it
/// neither preempts nor wins against a healthy peer.
pub const DEMOTED_SKEW: u8 = 240;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Backup,
    Master,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Backup => "BACKUP",
            State::Master => "MASTER",
        })
    }
}

/// The election settings of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Our own address: the tie-break key, and how we recognise ourselves as the master.
    pub src: IpAddr,
    pub advbase: u8,
    pub advskew: u8,
    pub deadratio: u8,
    pub preempt: bool,
    /// Re-send a gratuitous ARP this often while MASTER, for switches that forget.
    pub garp_interval: Option<Duration>,
}

impl Params {
    /// Fast mode (advbase 0) is understood only by our own agents: UCARP's master-down formula
    /// does not scale the skew by deadratio, so sub-second UCARP timing flaps.
    pub fn fast_mode(&self) -> bool {
        self.advbase == 0
    }
}

/// Advertisement interval for an advbase/advskew pair: the lower, the better the master.
pub fn interval(advbase: u8, advskew: u8) -> Duration {
    Duration::from_secs(u64::from(advbase)) + Duration::from_nanos(u64::from(advskew) * 3_906_250)
}

/// Why the machine changed state, for logs and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No advert from a master within the master-down time.
    MasterDown,
    /// We advertise more often than the current master and preemption is on.
    Preempt,
    /// The master bowed out (graceful stop or switchover).
    BowOut,
    /// The master advertises too slowly to be kept alive by its own adverts.
    SlowMaster,
    /// A better master was heard.
    BetterMaster,
    LinkDown,
    Shutdown,
    Switchover,
    /// This node cannot serve (a failing service check): it stepped down.
    ServiceDown,
}

impl Reason {
    /// The name in logs, `status --json` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MasterDown => "master_down",
            Reason::Preempt => "preempt",
            Reason::BowOut => "bow_out",
            Reason::SlowMaster => "slow_master",
            Reason::BetterMaster => "better_master",
            Reason::LinkDown => "link_down",
            Reason::Shutdown => "shutdown",
            Reason::Switchover => "switchover",
            Reason::ServiceDown => "service_down",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A verified advert from another node.
    Advert {
        src: IpAddr,
        advbase: u8,
        advskew: u8,
    },
    LinkUp,
    LinkDown,
    /// Raise (or restore) the advertised skew, e.g. while the local service is unhealthy.
    SetDemoted(bool),
    /// Leave for good: bow out if MASTER.
    Shutdown,
    /// Hand mastership to a peer: bow out, and do not preempt until no master is heard.
    Switchover,
    /// Step down because this node cannot serve: bow out. No hold-off: the demotion that comes
    /// with it keeps the node from preempting while it cannot serve, and once it can it
    /// preempts again as configured.
    StepDown,
    /// Do not preempt before this instant. A mastership that was refused (its promotion could
    /// not account for the live master it took over from, say one it hears but cannot reach)
    /// ends in a step-down, and preempting again at that master's next advert would only meet
    /// the same refusal, dozens of times a second.
    HoldOffPreemption(Mono),
    /// Packets were lost before this node could read them: its socket overflowed, in a flood
    /// faster than the agent reads (without XDP, every frame reaches the agent to be
    /// authenticated). The master's adverts may be among them, so the silence counted so far
    /// proves nothing, and a BACKUP counts its master-down time again from now. Forged
    /// traffic must not move the VIP; while a flood keeps the socket overflowing, a master
    /// that really died is replaced only once the overflow stops.
    AdvertsLost,
    /// New timers, skew, preemption or GARP interval from a reloaded configuration (the
    /// address stays). No transition of its own: a MASTER advertises the new timing at once,
    /// a BACKUP's master-down time counts from the same instant with the new values.
    Reconfigure(Params),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        advbase: u8,
        advskew: u8,
    },
    SendGarp,
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
}

#[derive(Debug)]
pub struct Machine {
    params: Params,
    state: State,
    demoted: bool,
    link_up: bool,
    stopped: bool,
    /// After a switchover we stay out of the way even with preemption on.
    hold_off: bool,
    /// No preemption before this instant (see [`Input::HoldOffPreemption`]).
    preempt_after: Option<Mono>,
    /// BACKUP: master-down deadline. MASTER: next advert.
    timer: Option<Mono>,
    garp_timer: Option<Mono>,
    /// Adverts left until the delayed gratuitous ARP that follows a takeover or re-announce.
    adverts_until_garp: Option<u8>,
    master: Option<IpAddr>,
    /// Advert interval of the master we follow, for the fast-mode master-down time.
    master_interval: Option<Duration>,
    /// BACKUP: when the master-down countdown began (the last advert, or becoming BACKUP).
    down_from: Mono,
    /// BACKUP: this countdown ran out late once and was given one more interval, until then.
    stall_grace: Option<Mono>,
    /// BACKUP: a look at the countdown [`Machine::look_ahead`] before its deadline, once (see
    /// [`Machine::arm`]).
    look: Option<Mono>,
    last_advert: Option<Mono>,
    actions: VecDeque<Action>,
}

impl Machine {
    /// Every node starts as BACKUP and waits one master-down time: there is no INIT -> MASTER path.
    pub fn new(params: Params, now: Mono) -> Self {
        let mut m = Machine {
            params,
            state: State::Backup,
            demoted: false,
            link_up: true,
            stopped: false,
            hold_off: false,
            preempt_after: None,
            timer: None,
            garp_timer: None,
            adverts_until_garp: None,
            master: None,
            master_interval: None,
            down_from: now,
            stall_grace: None,
            look: None,
            last_advert: None,
            actions: VecDeque::new(),
        };
        m.arm(now, now + m.master_down());
        m
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The node we believe is master (ourselves when MASTER).
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// BACKUP: the master-down deadline; MASTER: the next advert.
    #[cfg(test)]
    pub fn deadline(&self) -> Option<Mono> {
        self.timer
    }

    pub fn last_advert(&self) -> Option<Mono> {
        self.last_advert
    }

    pub fn demoted(&self) -> bool {
        self.demoted
    }

    /// The skew we advertise now.
    pub fn effective_skew(&self) -> u8 {
        if self.demoted {
            self.params.advskew.max(DEMOTED_SKEW)
        } else {
            self.params.advskew
        }
    }

    pub fn own_interval(&self) -> Duration {
        interval(self.params.advbase, self.effective_skew())
    }

    /// How long a BACKUP waits for a master's advert before taking over.
    ///
    /// In fast mode this is deadratio intervals of the slower of us and the master we follow
    /// (as VRRPv3 scales by the master's interval): sub-second intervals leave no room for a
    /// backup whose own interval is barely longer than the master's to tolerate a late advert.
    pub fn master_down(&self) -> Duration {
        self.master_down_following(self.master_interval)
    }

    /// The master-down time while following a master that advertises every `master_interval`
    /// (or none heard yet).
    fn master_down_following(&self, master_interval: Option<Duration>) -> Duration {
        let skew = self.effective_skew();
        let ratio = u32::from(self.params.deadratio);
        if self.params.fast_mode() {
            let own = interval(0, skew);
            own.max(master_interval.unwrap_or(own)) * ratio
        } else {
            Duration::from_secs(u64::from(self.params.advbase) * u64::from(ratio))
                + interval(0, skew)
        }
    }

    /// The advert interval a BACKUP waits on: the master's, or its own before it heard one.
    fn followed_interval(&self) -> Duration {
        self.master_interval.unwrap_or_else(|| self.own_interval())
    }

    /// How late a master-down timer may run out before the silence it measured is in doubt.
    ///
    /// A node woken this late was itself standing still (stopped, starved, or the whole host or
    /// hypervisor paused), and a master on the same host, or paused by the same hypervisor,
    /// could not advertise meanwhile either: when both resume, the backup's overdue timer and
    /// the master's overdue advert race, and a backup that acts first takes over from a live
    /// master. A quarter of the followed interval is far above a timer's own lateness (under
    /// 0.1 ms with the agent's timerfd) and far below a real master's silence.
    fn stall_allowance(&self) -> Duration {
        (self.followed_interval() / 4).max(Duration::from_millis(1))
    }

    /// How long before the master-down deadline a countdown is looked at: twice the allowance,
    /// so that a node that stood still across the look wakes later than the allowance, however
    /// close to the deadline its stall ended.
    fn look_ahead(&self) -> Duration {
        self.stall_allowance() * 2
    }

    /// BACKUP: counts down to `deadline`, looking at the countdown once on the way.
    ///
    /// A stall of the whole machine that ends just past the deadline wakes the timer almost on
    /// time: against the deadline alone it is not told from a master's real silence, and the
    /// master's first advert after the same stall comes a moment too late (the race that
    /// moved the VIP in a soak, once in 600 s, on a host that stopped the VM for 13 ms). Against
    /// the look, any stall that covered it is late by more than the allowance. A master that
    /// advertises resets the countdown before its look, so this costs one wake-up per real
    /// silence and nothing while adverts come.
    fn arm(&mut self, now: Mono, deadline: Mono) {
        self.timer = Some(deadline);
        let look = Mono::from_nanos(
            deadline
                .as_nanos()
                .saturating_sub(self.look_ahead().as_nanos() as u64),
        );
        self.look = (self.stall_grace.is_none() && look > now).then_some(look);
    }

    /// BACKUP: one more followed interval to hear the master, which would have advertised at
    /// once when it resumed. Once per countdown, so that a node stalled again and again still
    /// takes over from a master that is really gone, an interval later than it would have.
    fn give_grace(&mut self, now: Mono) {
        self.stall_grace = Some(now + self.followed_interval());
        self.timer = Some(self.backup_deadline());
        self.look = None;
    }

    /// BACKUP: the master-down deadline of this countdown, or the end of its stall's grace if
    /// that is later (a new skew or reload keeps a grace already given).
    fn backup_deadline(&self) -> Mono {
        let due = self.down_from + self.master_down();
        self.stall_grace.map_or(due, |g| g.max(due))
    }

    pub fn poll_timeout(&self) -> Option<Mono> {
        match (self.look.or(self.timer), self.garp_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn handle_timeout(&mut self, now: Mono) {
        if self.stopped {
            return;
        }
        if self.garp_timer.is_some_and(|t| t <= now) {
            self.actions.push_back(Action::SendGarp);
            self.garp_timer = self.params.garp_interval.map(|i| now + i);
        }
        if let Some(look) = self.look.filter(|l| *l <= now) {
            self.look = None;
            if now - look > self.stall_allowance() {
                self.give_grace(now);
                return;
            }
        }
        let Some(due) = self.timer.filter(|t| *t <= now) else {
            return;
        };
        match self.state {
            // Late by a stall that began after the look, or in a countdown armed too close to
            // its deadline for one.
            State::Backup if self.stall_grace.is_none() && now - due > self.stall_allowance() => {
                self.give_grace(now);
            }
            State::Backup => self.become_master(now, Reason::MasterDown),
            State::Master => {
                self.advertise();
                if let Some(n) = self.adverts_until_garp.as_mut() {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.adverts_until_garp = None;
                        self.actions.push_back(Action::SendGarp);
                    }
                }
                self.timer = Some(now + self.own_interval());
            }
        }
    }

    pub fn handle(&mut self, now: Mono, input: Input) {
        if self.stopped {
            return;
        }
        match input {
            Input::Advert {
                src,
                advbase,
                advskew,
            } => self.on_advert(now, src, advbase, advskew),
            Input::LinkDown => {
                self.link_up = false;
                self.become_backup(now, Reason::LinkDown);
                self.timer = None;
                self.look = None;
            }
            Input::LinkUp => {
                if !self.link_up {
                    self.link_up = true;
                    if self.state == State::Backup {
                        self.down_from = now;
                        self.stall_grace = None;
                        self.arm(now, now + self.master_down());
                    }
                }
            }
            Input::SetDemoted(d) => {
                if d == self.demoted {
                    return;
                }
                self.demoted = d;
                match self.state {
                    // Peers learn the new skew now, not an old interval later: a master that
                    // became preferable must not leave a worse one in charge meanwhile.
                    State::Master => {
                        self.advertise();
                        self.timer = Some(now + self.own_interval());
                    }
                    // The master-down time counts from the same instant, with the new skew.
                    State::Backup if self.link_up && self.timer.is_some() => {
                        self.arm(now, self.backup_deadline().max(now));
                    }
                    State::Backup => {}
                }
            }
            Input::Shutdown => {
                if self.state == State::Master {
                    self.bow_out();
                    self.become_backup(now, Reason::Shutdown);
                }
                self.stopped = true;
                self.timer = None;
                self.look = None;
                self.garp_timer = None;
            }
            Input::Switchover => {
                if self.state == State::Master {
                    self.bow_out();
                    self.become_backup(now, Reason::Switchover);
                    self.hold_off = true;
                }
            }
            Input::StepDown => {
                if self.state == State::Master {
                    self.bow_out();
                    self.become_backup(now, Reason::ServiceDown);
                }
            }
            Input::HoldOffPreemption(until) => self.preempt_after = Some(until),
            Input::AdvertsLost => {
                if self.state == State::Backup && self.link_up && self.timer.is_some() {
                    self.down_from = now;
                    self.stall_grace = None;
                    self.arm(now, now + self.master_down());
                }
            }
            Input::Reconfigure(params) => self.reconfigure(now, params),
        }
    }

    fn reconfigure(&mut self, now: Mono, params: Params) {
        let before = self.params;
        self.params = Params {
            src: before.src,
            ..params
        };
        match self.state {
            State::Master => {
                if (before.advbase, before.advskew) != (params.advbase, params.advskew) {
                    self.advertise();
                    self.timer = Some(now + self.own_interval());
                }
                if before.garp_interval != params.garp_interval {
                    self.garp_timer = params.garp_interval.map(|i| now + i);
                }
            }
            State::Backup if self.link_up && self.timer.is_some() => {
                self.arm(now, self.backup_deadline().max(now));
            }
            State::Backup => {}
        }
    }

    fn on_advert(&mut self, now: Mono, src: IpAddr, advbase: u8, advskew: u8) {
        if !self.link_up {
            return;
        }
        let theirs = interval(advbase, advskew);
        let ours = self.own_interval();
        match self.state {
            State::Backup => {
                self.master = Some(src);
                self.last_advert = Some(now);
                // A demoted node is one that should not lead now (its service or data is not
                // ready): it never takes over from a live master, even with preemption on.
                if self.params.preempt
                    && !self.hold_off
                    && !self.demoted
                    && self.preempt_after.is_none_or(|t| now >= t)
                    && ours < theirs
                {
                    self.become_master(now, Reason::Preempt);
                } else if advbase == BOW_OUT && advskew == BOW_OUT {
                    self.become_master(now, Reason::BowOut);
                } else if self.master_down_following(Some(theirs)) < theirs {
                    // Judged by the master-down time this node would keep while following
                    // that master: in fast mode that scales with its interval, so a master
                    // that advertises slowly (a demoted one, say a new master still waiting
                    // for the quorum's key) is followed, not taken over from at once. Judged
                    // by the faster master heard before, the node that had just handed over
                    // took the lead back from its successor's first advert and gave it up
                    // again a moment later, both holding the VIP meanwhile.
                    self.become_master(now, Reason::SlowMaster);
                } else {
                    self.master_interval = Some(theirs);
                    self.down_from = now;
                    self.stall_grace = None;
                    self.arm(now, now + self.master_down());
                }
            }
            State::Master => {
                let they_win =
                    ours > theirs || (ours == theirs && tie_key(src) < tie_key(self.params.src));
                if they_win {
                    // One last advert so peers see the hand-over at once, then stand by.
                    self.advertise();
                    self.master_interval = Some(theirs);
                    self.become_backup(now, Reason::BetterMaster);
                    self.master = Some(src);
                    self.last_advert = Some(now);
                } else {
                    // A less preferred master: re-announce our claim on the VIP, and advertise
                    // now rather than at our next interval, so that it stands down at once
                    // (UCARP waits for the regular advert, which leaves two masters for up
                    // to an interval).
                    self.advertise();
                    self.timer = Some(now + self.own_interval());
                    self.actions.push_back(Action::SendGarp);
                    self.adverts_until_garp = Some(2);
                }
            }
        }
    }

    fn advertise(&mut self) {
        self.actions.push_back(Action::SendAdvert {
            advbase: self.params.advbase,
            advskew: self.effective_skew(),
        });
    }

    fn bow_out(&mut self) {
        self.actions.push_back(Action::SendAdvert {
            advbase: BOW_OUT,
            advskew: BOW_OUT,
        });
    }

    fn become_master(&mut self, now: Mono, reason: Reason) {
        self.hold_off = false;
        self.master_interval = None;
        self.transition(State::Master, reason);
        self.master = Some(self.params.src);
        self.advertise();
        self.actions.push_back(Action::SendGarp);
        self.adverts_until_garp = Some(2);
        self.timer = Some(now + self.own_interval());
        self.look = None;
        self.garp_timer = self.params.garp_interval.map(|i| now + i);
    }

    fn become_backup(&mut self, now: Mono, reason: Reason) {
        if self.state == State::Master {
            self.transition(State::Backup, reason);
            self.master = None;
        }
        self.adverts_until_garp = None;
        self.garp_timer = None;
        self.down_from = now;
        self.stall_grace = None;
        self.arm(now, now + self.master_down());
    }

    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        self.state = to;
        self.actions
            .push_back(Action::Transition { from, to, reason });
    }
}

#[cfg(test)]
mod tests;
