//! Rules of the coordinator, one at a time, with hand-fed inputs.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::*;
use crate::carp::machine::DEMOTED_SKEW;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(ms_: u64) -> Mono {
    Mono(ms_ * 1_000_000)
}

struct T {
    c: Coordinator,
    now: Mono,
    effects: Vec<Effect>,
}

impl T {
    fn new(own: Ipv4Addr, skew: u8, preempt: bool, peers: &[Ipv4Addr]) -> T {
        T::with_quorum(own, skew, preempt, peers, None)
    }

    fn with_quorum(
        own: Ipv4Addr,
        skew: u8,
        preempt: bool,
        peers: &[Ipv4Addr],
        quorum: Option<Duration>,
    ) -> T {
        let cfg = Config {
            carp: Params {
                src: own.into(),
                advbase: 1,
                advskew: skew,
                deadratio: 3,
                preempt,
                garp_interval: None,
            },
            db: Some(DbPolicy {
                own,
                peers: peers.to_vec(),
                vip_first: false,
                retry: ms(1000),
                margin: ms(100),
                unreachable_after: ms(1000),
                max_lag: Duration::from_secs(5),
            }),
            quorum,
        };
        let mut t = T {
            c: Coordinator::new(cfg, at(0)),
            now: at(0),
            effects: Vec::new(),
        };
        t.drain();
        t
    }

    fn drain(&mut self) {
        while let Some(e) = self.c.poll_effect() {
            self.effects.push(e);
        }
    }

    fn take(&mut self) -> Vec<Effect> {
        self.drain();
        std::mem::take(&mut self.effects)
    }

    fn input(&mut self, i: Input) {
        self.c.handle(self.now, i);
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            match self.c.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = t.max(self.now);
                    self.c.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn db_done(&mut self, o: DbOutcome) {
        self.input(Input::DbDone(o));
    }

    fn advert(&mut self, src: Ipv4Addr, skew: u8) {
        self.input(Input::Advert {
            src: src.into(),
            advbase: 1,
            advskew: skew,
        });
    }

    /// The prepare step's report: this node logged and received `held`; `B` timed out. With
    /// `readied`, the step also drained this node meanwhile.
    fn prepared_holding_all_but_b(&mut self, held: &str, readied: bool) {
        let ready = if readied {
            vec![("applier stopped", self.now)]
        } else {
            Vec::new()
        };
        self.db_done(DbOutcome::Prepared {
            own: Ok(Holdings {
                logged: g(held),
                received: g(held),
            }),
            peers: vec![PeerReport {
                addr: B,
                result: Err(Fault::Other("timed out".into())),
            }],
            ready,
        });
    }

    fn pending_op(&self) -> Option<DbOp> {
        self.c.db.as_ref().and_then(|d| d.op.clone())
    }

    fn sample(&mut self, master: Ipv4Addr, m: MasterDb, local: LocalDb) {
        let o = Observation {
            at: self.now,
            asked: self.now,
            local: Ok(local),
            master: Some((master, Ok(m))),
        };
        self.input(Input::Observed(o));
    }
}

fn g(s: &str) -> Gtids {
    Gtids::mariadb(s)
}

fn semi(on: bool, no_tx: u64) -> SemiSync {
    SemiSync {
        on,
        no_tx,
        clients: 1,
        timeout: ms(3000),
    }
}

fn master_db(logged: &str, semi_sync: SemiSync) -> MasterDb {
    MasterDb {
        read_only: false,
        logged: g(logged),
        semi_sync,
    }
}

fn replica_of(m: Ipv4Addr, received: &str) -> LocalDb {
    LocalDb {
        read_only: true,
        logged: g(received),
        semi_sync: SemiSync::default(),
        replica: Some(Replica {
            master: Some(m),
            io_running: true,
            sql_running: true,
            received: g(received),
            verified_tls: true,
            sql_error: None,
            lag_secs: Some(0),
        }),
    }
}

/// Starts `t` as a BACKUP following `m`, replicating and fenced.
fn following(t: &mut T, m: Ipv4Addr, m_skew: u8) {
    assert_eq!(t.take(), vec![Effect::Db(DbOp::Fence)]);
    t.db_done(DbOutcome::Fenced(Ok(())));
    t.advert(m, m_skew);
    assert!(t.take().contains(&Effect::Watch(Some(m))));
    assert_eq!(t.pending_op(), Some(DbOp::Follow { master: m }));
    t.db_done(DbOutcome::Followed(Ok(())));
}

/// `A` (skew 100) replicating from master `B` (skew 0), one clean sample at `0-2-10`, 200 ms
/// ago.
fn replica_of_b() -> T {
    let mut t = T::new(A, 100, false, &[B]);
    following(&mut t, B, 0);
    t.sample(
        B,
        master_db("0-2-10", semi(true, 0)),
        replica_of(B, "0-2-10"),
    );
    t.advance(ms(200));
    t
}

#[test]
fn fences_before_it_elects() {
    let mut t = T::new(A, 0, false, &[B]);
    assert_eq!(t.take(), vec![Effect::Db(DbOp::Fence)]);
    // No election while the fence is pending: no timer, and adverts change nothing.
    assert_eq!(t.c.poll_timeout(), None);
    t.advert(B, 100);
    assert_eq!(t.c.machine().master(), None);
    t.db_done(DbOutcome::Fenced(Ok(())));
    assert!(t.c.poll_timeout().is_some(), "the election starts");
}

#[test]
fn a_returning_preferred_node_does_not_preempt_before_it_is_current() {
    let mut t = T::new(A, 0, true, &[B]);
    following(&mut t, B, 100);
    assert_eq!(t.c.state(), State::Backup);
    assert!(t.c.machine().demoted(), "not yet compared with the master");
    // Adverts from the less preferred master keep coming: no preemption while demoted.
    for _ in 0..5 {
        t.advance(ms(1000));
        t.advert(B, 100);
        assert_eq!(t.c.state(), State::Backup);
    }
    // Two samples: the second finds everything the first saw the master log.
    t.sample(
        B,
        master_db("0-2-500", semi(true, 7)),
        replica_of(B, "0-2-480"),
    );
    assert!(t.c.machine().demoted());
    t.advance(ms(200));
    t.sample(
        B,
        master_db("0-2-520", semi(true, 7)),
        replica_of(B, "0-2-510"),
    );
    assert!(!t.c.machine().demoted(), "{:?}", t.c.not_current());
    t.take();
    // Now the next advert from the worse master is preempted.
    t.advert(B, 100);
    assert_eq!(t.c.state(), State::Master);
    // And the database opens only after a prepare step that reaches the old master.
    assert_eq!(
        t.pending_op(),
        Some(DbOp::Prepare {
            peers: vec![Probe {
                addr: B,
                skip: false,
                checked_since: None
            }],
            // Preempted, not silent: no settle time.
            fence: true,
            // Nor anything made ready ahead: the old master may still take writes.
            ready_once_silent: None
        })
    );
    assert!(
        !t.take().contains(&Effect::Vip(true)),
        "no VIP before the database"
    );
}

/// Two samples of master `B`, 200 ms apart, the second finding everything the first saw `B`
/// log: `A`, following `B`, is current.
fn compared_twice_with_b(t: &mut T) {
    t.sample(
        B,
        master_db("0-2-500", semi(true, 7)),
        replica_of(B, "0-2-480"),
    );
    t.advance(ms(200));
    t.sample(
        B,
        master_db("0-2-520", semi(true, 7)),
        replica_of(B, "0-2-510"),
    );
}

/// `A` (skew 0, preempting), a current replica of the less preferred master `B`, preempts it
/// and its prepare step cannot reach `B` (a link that fails one way: `A` hears `B`'s adverts,
/// nothing of `A` reaches `B`). The promotion is refused, `A` demotes itself and yields to `B`,
/// which never stopped advertising. Still current, it would preempt again at `B`'s next advert
/// and meet the same refusal, over and over (the chaos suite saw 93 state changes in 1.6 s);
/// it preempts again only at the pace of a refused promotion's retries.
#[test]
fn a_refused_preemption_is_not_repeated_at_every_advert_of_the_live_master() {
    let mut t = T::new(A, 0, true, &[B]);
    following(&mut t, B, 100);
    compared_twice_with_b(&mut t);
    t.advert(B, 100);
    assert_eq!(t.c.state(), State::Master);
    t.prepared_holding_all_but_b("0-2-520", false);
    assert!(t.c.machine().demoted(), "a refused master demotes itself");
    t.advert(B, 100);
    assert_eq!(t.c.state(), State::Backup, "it yields to the live master");
    assert!(!t.c.machine().demoted(), "{:?}", t.c.not_current());
    let stepped_down = t.now;
    for _ in 0..4 {
        t.advance(ms(200));
        t.advert(B, 100);
        assert_eq!(
            t.c.state(),
            State::Backup,
            "preempted again {:?} after the refusal",
            t.now - stepped_down
        );
    }
    // Still current (within the semi-sync timeout of the last clean sample): once the retry
    // interval is over, it tries again.
    t.advance(ms(200));
    t.advert(B, 100);
    assert_eq!(t.c.state(), State::Master);
}

#[test]
fn a_fallback_makes_the_replica_not_current_and_its_promotion_refused() {
    let mut t = replica_of_b();
    t.sample(
        B,
        master_db("0-2-20", semi(true, 0)),
        replica_of(B, "0-2-20"),
    );
    assert!(!t.c.machine().demoted());
    // The replica stalls; the master goes on alone.
    t.advance(ms(200));
    t.sample(
        B,
        master_db("0-2-60", semi(false, 30)),
        replica_of(B, "0-2-20"),
    );
    assert!(t.c.machine().demoted());
    assert!(matches!(t.c.not_current(), Some(NotCurrent::SemiSyncOff)));
    // The master dies; this node wins the election and must refuse to open.
    t.advance(Duration::from_secs(5));
    assert_eq!(t.c.state(), State::Master);
    // A replica taking over from its silent master is made ready to open while it prepares.
    let Some(DbOp::Prepare {
        peers,
        ready_once_silent: Some(B),
        ..
    }) = t.pending_op()
    else {
        panic!("no prepare step making ready: {:?}", t.pending_op())
    };
    assert_eq!(peers.len(), 1);
    t.prepared_holding_all_but_b("0-2-20", true);
    // Refused: what the step made ready is undone at once, so the replica receives again.
    assert_eq!(t.pending_op(), Some(DbOp::Resume));
    t.db_done(DbOutcome::Resumed(Ok(())));
    assert_eq!(t.pending_op(), None);
    let v = t.c.db_view().unwrap();
    assert!(v.refused.is_some(), "{v:?}");
    assert_ne!(v.role, "master");
    assert!(
        t.c.machine().demoted(),
        "a refused master advertises the demoted skew"
    );
    assert_eq!(t.c.machine().effective_skew(), DEMOTED_SKEW);
    // Reads go on through the VIP; the database stays read-only.
    assert!(t.take().contains(&Effect::Vip(true)));
    // The operator forces it.
    t.c.force_promote(t.now).unwrap();
    t.drain();
    assert!(matches!(t.pending_op(), Some(DbOp::Prepare { .. })));
    t.prepared_holding_all_but_b("0-2-20", false);
    assert!(matches!(t.pending_op(), Some(DbOp::Promote { .. })));
}

/// `B` loses power: no adverts, samples time out (the local server has `received`), until
/// `A`, following it, takes over.
fn power_failure_of_b(t: &mut T, received: &str) {
    for _ in 0..10 {
        t.advance(ms(200));
        t.input(Input::Observed(Observation {
            at: t.now,
            asked: t.now,
            local: Ok(replica_of(B, received)),
            master: Some((B, Err(Fault::Other("timed out".into())))),
        }));
    }
    t.advance(Duration::from_secs(3));
    assert_eq!(t.c.state(), State::Master);
}

#[test]
fn a_current_replica_promotes_after_the_master_dies() {
    let mut t = replica_of_b();
    t.advert(B, 0);
    t.sample(
        B,
        master_db("0-2-20", semi(true, 0)),
        replica_of(B, "0-2-25"),
    );
    power_failure_of_b(&mut t, "0-2-25");
    let Some(DbOp::Prepare {
        peers,
        ready_once_silent: Some(B),
        ..
    }) = t.pending_op()
    else {
        panic!("no prepare step making ready: {:?}", t.pending_op())
    };
    assert!(peers[0].skip, "a master silent for 2 s is not waited for");
    t.db_done(DbOutcome::Prepared {
        own: Ok(Holdings {
            logged: g("0-2-22"),
            received: g("0-2-25"),
        }),
        peers: vec![PeerReport {
            addr: B,
            result: Err(Fault::Other("skipped".into())),
        }],
        ready: vec![("applier stopped", t.now)],
    });
    assert_eq!(
        t.pending_op(),
        Some(DbOp::Promote {
            target: g("0-2-25"),
            recheck: vec![]
        })
    );
    let open_at = t.now;
    t.db_done(DbOutcome::Promoted(Ok(vec![("read_only off", open_at)])));
    assert!(t.c.writable());
    assert!(t.take().contains(&Effect::Vip(true)));
    t.advance(ms(2));
    t.input(Input::VipDone {
        add: true,
        result: Ok(()),
    });
    // The takeover, step by step, for status and the benches.
    let took = t.c.takeover().expect("a takeover is recorded").clone();
    assert_eq!(took.reason, "MasterDown");
    let names: Vec<&str> = took.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "prepare: applier stopped",
            "prepared",
            "open: read_only off",
            "open",
            "vip",
            "garp"
        ]
    );
    assert!(took.complete);
    assert_eq!(
        took.after("vip"),
        Some(took.after("open").unwrap() + 2_000_000)
    );
}

#[test]
fn a_zombie_master_is_waited_for() {
    // The master's agent lives (its adverts go on) while its database does not answer: it may
    // come back writable, so the replica does not open until it can fence it.
    let mut t = replica_of_b();
    t.sample(
        B,
        master_db("0-2-20", semi(true, 0)),
        replica_of(B, "0-2-20"),
    );
    t.advance(ms(200));
    t.input(Input::Observed(Observation {
        at: t.now,
        asked: t.now,
        local: Ok(replica_of(B, "0-2-20")),
        master: Some((B, Err(Fault::Other("timed out".into())))),
    }));
    t.advance(ms(300));
    // Its bow-out: the agent is alive.
    t.input(Input::Advert {
        src: B.into(),
        advbase: 255,
        advskew: 255,
    });
    assert_eq!(t.c.state(), State::Master);
    let Some(DbOp::Prepare { peers, .. }) = t.pending_op() else {
        panic!("no prepare step")
    };
    assert!(!peers[0].skip);
    t.prepared_holding_all_but_b("0-2-20", false);
    let v = t.c.db_view().unwrap();
    assert!(
        v.refused.as_deref().is_some_and(|r| r.contains("alive")),
        "{v:?}"
    );
}

#[test]
fn adverts_received_while_this_agent_stalled_in_a_look_are_no_sign_of_a_zombie() {
    // This agent stalls in the middle of a look at the master (one question answered, the next
    // sent only after the stall) while the master's adverts go on; the master loses power
    // meanwhile. Its adverts stamped during the stall came while its server still answered:
    // the silence dates from the last question, not from the look's start, and the replica
    // opens. Dated from the look's start, the same adverts make a zombie, and it waits.
    for (asked_after_the_stall, opens) in [(true, true), (false, false)] {
        let mut t = replica_of_b();
        t.advert(B, 0);
        t.sample(
            B,
            master_db("0-2-20", semi(true, 0)),
            replica_of(B, "0-2-20"),
        );
        t.advance(ms(200));
        let look = t.now;
        for _ in 0..4 {
            t.advance(ms(100));
            t.advert(B, 0);
        }
        t.advance(ms(100));
        let asked = if asked_after_the_stall { t.now } else { look };
        t.advance(ms(1000));
        t.input(Input::Observed(Observation {
            at: look,
            asked,
            local: Ok(replica_of(B, "0-2-20")),
            master: Some((B, Err(Fault::Other("timed out".into())))),
        }));
        t.advance(Duration::from_secs(4));
        assert_eq!(t.c.state(), State::Master);
        assert!(matches!(t.pending_op(), Some(DbOp::Prepare { .. })));
        t.prepared_holding_all_but_b("0-2-20", false);
        let refused = t.c.db_view().unwrap().refused;
        assert_eq!(
            matches!(t.pending_op(), Some(DbOp::Promote { .. })),
            opens,
            "asked after the stall: {asked_after_the_stall}, refused: {refused:?}"
        );
        if !opens {
            assert!(refused.is_some_and(|r| r.contains("alive")));
        }
    }
}

#[test]
fn graceful_stop_fences_then_releases_the_vip_then_bows_out() {
    let mut t = master_with_vip();
    t.take();
    t.input(Input::Shutdown);
    let e = t.take();
    assert_eq!(
        e,
        vec![Effect::Db(DbOp::Fence)],
        "fence first, nothing else"
    );
    assert_eq!(t.c.state(), State::Master);
    t.db_done(DbOutcome::Fenced(Ok(())));
    let e = t.take();
    assert!(e.contains(&Effect::Vip(false)), "{e:?}");
    assert!(
        !bows_out(&e),
        "no bow-out while the VIP is still here: {e:?}"
    );
    bows_out_once_the_vip_is_released(&mut t);
    assert!(t.c.finished());
}

/// Whether `effects` send the bow-out advert.
fn bows_out(effects: &[Effect]) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::Advert { advbase: 255, .. }))
}

/// The VIP's release is confirmed: the bow-out advert goes out.
fn bows_out_once_the_vip_is_released(t: &mut T) {
    t.input(Input::VipDone {
        add: false,
        result: Ok(()),
    });
    let e = t.take();
    assert!(bows_out(&e), "bow-out once the VIP is gone: {e:?}");
}

/// The bow-out makes a peer take the VIP at once: a switchover releases it first, so two
/// nodes never hold it together; a failed release does not keep the bow-out back.
#[test]
fn a_switchover_releases_the_vip_before_the_bow_out() {
    let mut t = master_with_vip();
    t.take();
    t.input(Input::Switchover);
    assert_eq!(t.take(), vec![Effect::Drain]);
    t.input(Input::Drained);
    let e = t.take();
    assert_eq!(
        e,
        vec![
            Effect::Db(DbOp::Fence),
            Effect::XdpRole(false),
            Effect::Vip(false)
        ]
    );
    t.db_done(DbOutcome::Fenced(Ok(())));
    assert_eq!(t.c.state(), State::Master);
    t.input(Input::VipDone {
        add: false,
        result: Err("netlink: busy".into()),
    });
    let e = t.take();
    assert!(bows_out(&e), "{e:?}");
    assert_eq!(t.c.state(), State::Backup);
}

/// A switchover fences the database before the bow-out lets a peer open its own: the next
/// master finds it read-only in one look instead of fencing it while it fences itself. A
/// fence that fails is not retried first: the bow-out goes out, and the retry follows.
#[test]
fn a_switchover_fences_the_database_before_the_bow_out() {
    for fence_works in [true, false] {
        let mut t = master_with_vip();
        t.input(Input::Switchover);
        t.input(Input::Drained);
        assert!(t.take().contains(&Effect::Db(DbOp::Fence)));
        t.input(Input::VipDone {
            add: false,
            result: Ok(()),
        });
        let e = t.take();
        assert!(!bows_out(&e), "bow-out before the fence: {e:?}");
        assert_eq!(t.c.state(), State::Master);
        let result = if fence_works {
            Ok(())
        } else {
            Err("server gone".into())
        };
        t.db_done(DbOutcome::Fenced(result));
        let e = t.take();
        assert!(bows_out(&e), "fence_works={fence_works}: {e:?}");
        assert_eq!(t.c.state(), State::Backup);
        assert_eq!(t.c.writable(), !fence_works);
    }
}

/// A stalled server does not keep the VIP from every node: a fence that has not answered
/// within [`HAND_OVER_FENCE_MAX`] lets the bow-out go, and its late answer is taken as BACKUP.
#[test]
fn a_switchover_waits_for_a_stalled_fence_no_longer_than_its_bound() {
    let mut t = master_with_vip();
    t.input(Input::Switchover);
    t.input(Input::Drained);
    t.input(Input::VipDone {
        add: false,
        result: Ok(()),
    });
    t.advance(HAND_OVER_FENCE_MAX - ms(1));
    let e = t.take();
    assert!(!bows_out(&e), "{e:?}");
    assert_eq!(t.c.state(), State::Master);
    t.advance(ms(1));
    let e = t.take();
    assert!(bows_out(&e), "bow-out at the bound: {e:?}");
    assert_eq!(t.c.state(), State::Backup);
    assert_eq!(t.pending_op(), Some(DbOp::Fence), "the fence goes on");
    t.db_done(DbOutcome::Fenced(Ok(())));
    assert!(!t.c.writable());
}

/// A `bow-out` service check that starts failing on the MASTER hands over as a switchover
/// does (drain, VIP released, bow-out), and demotes; a single failed probe of a passing check
/// with fall 2 does nothing.
#[test]
fn a_failing_bow_out_check_hands_over_like_a_switchover_and_demotes() {
    let t = master_with_vip();
    let mut t = T {
        c: t.c.with_tracks(vec![crate::failover::track::Track::new(
            "web",
            crate::failover::track::TrackAction::BowOut,
            2,
            1,
        )]),
        ..t
    };
    let probe = |ok: bool| Input::Probe {
        index: 0,
        result: if ok { Ok(()) } else { Err("refused".into()) },
    };
    t.input(probe(true));
    t.advance(ms(10));
    t.take();
    assert!(!t.c.machine().demoted());
    t.input(probe(false));
    assert!(
        !t.take().contains(&Effect::Drain),
        "one failure under fall 2"
    );
    t.input(probe(false));
    assert_eq!(
        t.take(),
        vec![
            Effect::Drain,
            Effect::Advert {
                advbase: 1,
                advskew: 240
            }
        ],
        "fails: drain, and the demoted skew announced at once"
    );
    assert!(t.c.machine().demoted());
    t.input(Input::Drained);
    let e = t.take();
    assert!(e.contains(&Effect::Vip(false)), "{e:?}");
    t.db_done(DbOutcome::Fenced(Ok(())));
    bows_out_once_the_vip_is_released(&mut t);
    assert_eq!(t.c.state(), State::Backup);
}

/// A planned switchover holds the VIP, with new connections held off, until the open ones
/// finish or the drain limit passes; a second request meanwhile changes nothing.
#[test]
fn a_switchover_drains_the_vip_for_at_most_the_limit() {
    let mut t = master_with_vip();
    t.take();
    t.input(Input::Switchover);
    t.input(Input::Switchover);
    assert_eq!(t.take(), vec![Effect::Drain], "one drain");
    t.advance(DRAIN_MAX - ms(1));
    let e = t.take();
    assert!(
        !e.contains(&Effect::Vip(false)),
        "VIP released early: {e:?}"
    );
    assert_eq!(t.c.state(), State::Master);
    t.advance(ms(1));
    let e = t.take();
    assert!(e.contains(&Effect::Vip(false)), "{e:?}");
    // The watcher's late answer finds nothing left to do.
    t.input(Input::Drained);
    assert!(!t.take().contains(&Effect::Vip(false)));
}

/// Connection requests held since the drain go to the next master only once an
/// authenticated advert named it and it announced the VIP (its database open by then); they
/// are given up at the hold limit.
#[test]
fn held_connection_requests_go_to_the_next_master_once_it_announces_the_vip() {
    let mut t = master_with_vip();
    t.input(Input::Switchover);
    t.input(Input::Drained);
    t.db_done(DbOutcome::Fenced(Ok(())));
    t.input(Input::VipDone {
        add: false,
        result: Ok(()),
    });
    assert_eq!(t.c.state(), State::Backup);
    t.take();
    // A claim before any advert names the next master is not believed.
    t.input(Input::VipClaimed);
    assert!(!t.take().contains(&Effect::HandOffHeld));
    t.advert(B, 10);
    t.input(Input::VipClaimed);
    assert!(t.take().contains(&Effect::HandOffHeld));
    t.advance(HOLD_MAX);
    assert!(t.take().contains(&Effect::EndHold));
    // Nothing is held any more: a later claim hands nothing on.
    t.input(Input::VipClaimed);
    assert!(!t.take().contains(&Effect::HandOffHeld));
}

/// The VIP is announced again after the neighbour lock time, for hosts that ignored the
/// first announcement because their entry had just changed.
#[test]
fn the_vip_is_announced_again_after_the_neighbour_lock_time() {
    let mut t = master_with_vip();
    assert!(t.take().contains(&Effect::Garp));
    t.advance(GARP_AGAIN_AFTER - ms(1));
    assert!(!t.take().contains(&Effect::Garp));
    t.advance(ms(1));
    assert!(t.take().contains(&Effect::Garp));
}

/// A BACKUP asked to switch over refuses, and nothing happens; the MASTER accepts.
#[test]
fn only_the_master_accepts_a_switchover() {
    let mut t = replica_of_b();
    t.take();
    let refused = t.c.request_switchover(t.now);
    assert!(refused.is_err_and(|e| e.contains("not MASTER")));
    assert_eq!(t.take(), vec![]);
    assert_eq!(t.c.state(), State::Backup);
    let mut t = master_with_vip();
    t.take();
    assert_eq!(t.c.request_switchover(t.now), Ok(()));
    assert_eq!(t.take(), vec![Effect::Drain]);
}

/// Without the VIP (here its addition still in flight) there is nothing to drain: the
/// hand-over begins at once and takes the address back as soon as it is there.
#[test]
fn a_switchover_without_the_vip_does_not_drain() {
    let mut t = writable_master(0, &[B]);
    t.take();
    t.input(Input::Switchover);
    assert!(!t.take().contains(&Effect::Drain));
    t.input(Input::VipDone {
        add: true,
        result: Ok(()),
    });
    let e = t.take();
    assert!(!e.contains(&Effect::Drain), "{e:?}");
    assert!(e.contains(&Effect::Vip(false)), "{e:?}");
}

#[test]
fn a_failed_fence_is_retried_before_anything_else() {
    let mut t = T::new(A, 100, false, &[B]);
    t.take();
    t.db_done(DbOutcome::Fenced(Err("server gone".into())));
    // The election runs anyway (an unreachable server takes no writes), but the next
    // operation is the fence again, not a follow.
    t.advert(B, 0);
    assert_eq!(t.pending_op(), None, "waits for the retry time");
    t.advance(ms(1000));
    assert_eq!(t.pending_op(), Some(DbOp::Fence));
    t.db_done(DbOutcome::Fenced(Ok(())));
    assert_eq!(t.pending_op(), Some(DbOp::Follow { master: B }));
}

#[test]
fn a_master_that_cannot_add_the_vip_hands_over() {
    let mut t = T::new(A, 0, false, &[]);
    t.take();
    t.db_done(DbOutcome::Fenced(Ok(())));
    t.advance(Duration::from_secs(4));
    t.db_done(DbOutcome::Prepared {
        own: Ok(Holdings::default()),
        peers: vec![],
        ready: Vec::new(),
    });
    t.db_done(DbOutcome::Promoted(Ok(Vec::new())));
    for _ in 0..3 {
        assert!(t.take().contains(&Effect::Vip(true)));
        t.input(Input::VipDone {
            add: true,
            result: Err("netlink: permission denied".into()),
        });
        assert!(t.c.vip_error().is_some());
        t.advance(ms(1000));
    }
    // The fence, asked for first, has not answered within its bound: handed over anyway.
    assert_eq!(t.c.state(), State::Backup, "handed over");
    assert_eq!(t.pending_op(), Some(DbOp::Fence));
}

#[test]
fn an_external_fence_of_the_master_makes_it_prepare_again() {
    let mut t = writable_master(0, &[B, C]);
    let mut local = LocalDb {
        read_only: true,
        ..LocalDb::default()
    };
    local.semi_sync = semi(true, 0);
    t.input(Input::Observed(Observation {
        at: t.now,
        asked: t.now,
        local: Ok(local),
        master: None,
    }));
    assert!(!t.c.writable());
    assert!(matches!(t.pending_op(), Some(DbOp::Prepare { .. })));
}

/// Node A, elected with `skew` and open for writes after a clean prepare with `peers`.
/// [`writable_master`] with skew 0 and peer B, holding the VIP.
fn master_with_vip() -> T {
    let mut t = writable_master(0, &[B]);
    t.input(Input::VipDone {
        add: true,
        result: Ok(()),
    });
    t
}

fn writable_master(skew: u8, peers: &[Ipv4Addr]) -> T {
    let mut t = T::new(A, skew, false, peers);
    t.take();
    t.db_done(DbOutcome::Fenced(Ok(())));
    t.advance(Duration::from_secs(4));
    t.db_done(DbOutcome::Prepared {
        own: Ok(Holdings::default()),
        peers: peers
            .iter()
            .map(|&addr| PeerReport {
                addr,
                result: Ok(PeerState {
                    holdings: Holdings::default(),
                    writable: false,
                }),
            })
            .collect(),
        ready: Vec::new(),
    });
    t.db_done(DbOutcome::Promoted(Ok(Vec::new())));
    assert!(t.c.writable());
    t.advance(ms(10));
    t
}

/// The master's look at its peers: (address, writable, logged) each, then its own log.
fn peers_seen(at: Mono, peers: &[(Ipv4Addr, bool, &str)], own: &str) -> Input {
    Input::PeersSeen {
        at,
        peers: peers
            .iter()
            .map(|&(addr, writable, logged)| PeerSeen {
                addr,
                holdings: Holdings {
                    logged: g(logged),
                    received: Gtids::default(),
                },
                writable,
            })
            .collect(),
        own: Some(g(own)),
    }
}

/// A writer that finds a peer holding transactions it lacks (a cut-off master that went on
/// alone, seen after the partition healed) stops taking writes and prepares again: it
/// refuses as diverged when each side holds what the other lacks, and never fences the peer
/// on the way.
#[test]
fn a_writer_that_finds_a_history_it_lacks_stops_and_compares() {
    let mut t = writable_master(0, &[B]);
    // A replica that holds a part of what we logged changes nothing.
    t.input(peers_seen(t.now, &[(B, false, "0-1-5")], "0-1-9"));
    assert!(t.c.writable());
    assert_eq!(t.pending_op(), None);
    // B holds 0-2-1..3, which we lack.
    t.advance(ms(100));
    t.input(peers_seen(t.now, &[(B, true, "0-1-5,0-2-3")], "0-1-9"));
    assert!(!t.c.writable());
    assert_eq!(t.pending_op(), Some(DbOp::Fence));
    t.db_done(DbOutcome::Fenced(Ok(())));
    assert!(matches!(t.pending_op(), Some(DbOp::Prepare { .. })));
    t.db_done(DbOutcome::Prepared {
        own: Ok(Holdings {
            logged: g("0-1-9"),
            received: Gtids::default(),
        }),
        peers: vec![PeerReport {
            addr: B,
            result: Ok(PeerState {
                holdings: Holdings {
                    logged: g("0-1-5,0-2-3"),
                    received: Gtids::default(),
                },
                writable: false,
            }),
        }],
        ready: Vec::new(),
    });
    assert!(!t.c.writable());
    let view = t.c.db_view().unwrap();
    assert!(
        view.refused
            .as_deref()
            .is_some_and(|r| r.starts_with("diverged")),
        "{view:?}"
    );
}

/// A healed partition leaves two masters until their adverts meet: the writer does not fence
/// a writable peer at first sight (the peer may be the rightful master), only when the
/// election has had a master-down interval and the peer is still writable.
#[test]
fn a_writable_peer_is_fenced_only_once_the_election_had_time_to_settle() {
    let mut t = writable_master(0, &[B]);
    t.input(peers_seen(t.now, &[(B, true, "")], ""));
    assert_eq!(t.pending_op(), None, "fenced the peer at first sight");
    // The peer goes on writable, no better master heard: after the master-down interval the
    // peer is fenced.
    for _ in 0..3 {
        t.advance(ms(1000));
        t.input(peers_seen(t.now, &[(B, true, "")], ""));
    }
    assert_eq!(t.pending_op(), Some(DbOp::FencePeers { peers: vec![B] }));
    // A peer that fenced itself in between starts the wait again.
    t.db_done(DbOutcome::PeersFenced(vec![(B, Ok(()))]));
    t.advance(ms(10));
    t.input(peers_seen(t.now, &[(B, false, "")], ""));
    t.advance(ms(10));
    t.input(peers_seen(t.now, &[(B, true, "")], ""));
    assert_eq!(t.pending_op(), None);
}

/// The other side of the same heal: the cut-off master hears the rightful master's better
/// advert before its grace runs out and steps down, fencing itself rather than the peer.
#[test]
fn a_cut_off_master_steps_down_instead_of_fencing_the_rightful_one() {
    let mut t = writable_master(100, &[B]);
    t.input(peers_seen(t.now, &[(B, true, "")], ""));
    t.advance(ms(40));
    t.advert(B, 0);
    assert_eq!(t.c.state(), State::Backup);
    assert_eq!(t.pending_op(), Some(DbOp::Fence));
}

#[test]
fn semi_sync_fallback_on_the_master_is_counted() {
    let mut t = T::new(A, 0, false, &[]);
    t.take();
    t.db_done(DbOutcome::Fenced(Ok(())));
    t.advance(Duration::from_secs(4));
    t.db_done(DbOutcome::Prepared {
        own: Ok(Holdings::default()),
        peers: vec![],
        ready: Vec::new(),
    });
    t.db_done(DbOutcome::Promoted(Ok(Vec::new())));
    let local = |on| LocalDb {
        semi_sync: semi(on, 0),
        ..LocalDb::default()
    };
    for on in [true, false, false, true, false] {
        t.advance(ms(200));
        t.input(Input::Observed(Observation {
            at: t.now,
            asked: t.now,
            local: Ok(local(on)),
            master: None,
        }));
    }
    let v = t.c.db_view().unwrap();
    assert_eq!(v.semi_sync_fallbacks, 2);
    assert!(!v.semi_sync.unwrap().on);
}

/// Up to the prepare step of a node that took over from `B` after a master-down interval
/// of silence, `B`'s database found still writable (its agent starved, or frozen).
fn took_over_from_a_silent_writable_master() -> T {
    let mut t = replica_of_b();
    t.advert(B, 0);
    // To the instant of the takeover, where the prepare step starts.
    for _ in 0..4000 {
        if t.c.state() == State::Master {
            break;
        }
        t.advance(ms(1));
    }
    assert_eq!(t.c.state(), State::Master);
    let Some(DbOp::Prepare { fence: false, .. }) = t.pending_op() else {
        panic!("the first prepare must not fence: {:?}", t.pending_op())
    };
    t.db_done(DbOutcome::Prepared {
        own: Ok(Holdings {
            logged: g("0-2-10"),
            received: g("0-2-10"),
        }),
        peers: vec![PeerReport {
            addr: B,
            result: Ok(PeerState {
                holdings: Holdings {
                    logged: g("0-2-10"),
                    received: Gtids::default(),
                },
                writable: true,
            }),
        }],
        ready: Vec::new(),
    });
    // It answered: nothing was made ready, so nothing is undone.
    assert_eq!(
        t.pending_op(),
        None,
        "nothing decided while the peer may be alive"
    );
    t
}

#[test]
fn a_master_whose_adverts_were_only_late_is_not_fenced() {
    let mut t = took_over_from_a_silent_writable_master();
    // Its next advert ends this mastership before the settle time is up.
    t.advance(ms(5));
    t.advert(B, 0);
    assert_eq!(t.c.state(), State::Backup);
    t.advance(ms(200));
    t.drain();
    let fenced = t.effects.iter().any(|e| {
        matches!(
            e,
            Effect::Db(DbOp::FencePeers { .. } | DbOp::Prepare { fence: true, .. })
        )
    });
    assert!(!fenced, "{:?}", t.effects);
}

#[test]
fn a_writable_master_that_stays_silent_is_fenced_after_the_settle_time() {
    let mut t = took_over_from_a_silent_writable_master();
    t.advance(FENCE_SETTLE_MAX);
    assert!(
        matches!(t.pending_op(), Some(DbOp::Prepare { fence: true, .. })),
        "{:?}",
        t.pending_op()
    );
}

const TTL: Duration = Duration::from_secs(3);

/// Node A under a 3 s quorum lease, MASTER after a start with no peer's adverts, with the
/// database still closed.
fn quorum_master() -> T {
    let mut t = T::with_quorum(A, 0, false, &[B], Some(TTL));
    t.take();
    t.db_done(DbOutcome::Fenced(Ok(())));
    assert!(
        !t.take().contains(&Effect::Lease(true)),
        "a BACKUP does not ask for the key"
    );
    t.advance(Duration::from_secs(4));
    assert_eq!(t.c.state(), State::Master);
    t
}

fn prepared_clean(t: &mut T) {
    t.db_done(DbOutcome::Prepared {
        own: Ok(Holdings::default()),
        peers: vec![PeerReport {
            addr: B,
            result: Ok(PeerState {
                holdings: Holdings::default(),
                writable: false,
            }),
        }],
        ready: Vec::new(),
    });
}

#[test]
fn with_a_quorum_a_new_master_opens_only_under_the_lease() {
    let mut t = quorum_master();
    let effects = t.take();
    assert!(effects.contains(&Effect::Lease(true)), "{effects:?}");
    assert_eq!(t.pending_op(), None, "no prepare before the key is held");
    let v = t.c.db_view().unwrap();
    assert!(v.quorum_wait.is_some() && v.refused.is_none(), "{v:?}");
    assert!(
        !effects.contains(&Effect::Vip(true)),
        "another new master may be about to get the key: no VIP yet"
    );
    // etcd cannot be reached: nobody can write, reads go on through the VIP.
    t.input(Input::Lease(LeaseReport::Unreachable("no leader".into())));
    assert!(t.take().contains(&Effect::Vip(true)));
    t.input(Input::VipDone {
        add: true,
        result: Ok(()),
    });
    // Another node holds the key: still closed, and it is named.
    t.input(Input::Lease(LeaseReport::HeldBy {
        holder: B.to_string(),
        epoch: 5,
    }));
    assert_eq!(t.pending_op(), None);
    let wait = t.c.db_view().unwrap().quorum_wait.unwrap();
    assert!(wait.contains("10.0.0.2"), "{wait}");
    // The key is ours: prepare, open.
    t.input(Input::Lease(LeaseReport::Held {
        sent: t.now,
        epoch: 9,
    }));
    assert!(matches!(t.pending_op(), Some(DbOp::Prepare { .. })));
    prepared_clean(&mut t);
    assert!(matches!(t.pending_op(), Some(DbOp::Promote { .. })));
    t.db_done(DbOutcome::Promoted(Ok(Vec::new())));
    assert!(t.c.writable());
    assert_eq!(t.c.db_view().unwrap().quorum_wait, None);
    let steps: Vec<String> =
        t.c.takeover()
            .unwrap()
            .steps
            .iter()
            .map(|s| s.name.clone())
            .collect();
    assert!(steps.contains(&"lease".to_string()), "{steps:?}");
}

#[test]
fn a_lease_that_lapses_during_the_prepare_stops_the_promotion() {
    let mut t = quorum_master();
    t.input(Input::Lease(LeaseReport::Held {
        sent: t.now,
        epoch: 9,
    }));
    assert!(matches!(t.pending_op(), Some(DbOp::Prepare { .. })));
    t.advance(Duration::from_secs(2));
    prepared_clean(&mut t);
    assert_eq!(t.pending_op(), None, "no promotion without time left");
    assert!(!t.c.writable());
}

#[test]
fn a_master_that_cannot_renew_fences_before_the_lease_can_run_out_then_bows_out() {
    let mut t = quorum_master();
    let start = t.now;
    t.input(Input::Lease(LeaseReport::Held {
        sent: start,
        epoch: 9,
    }));
    prepared_clean(&mut t);
    t.db_done(DbOutcome::Promoted(Ok(Vec::new())));
    t.input(Input::VipDone {
        add: true,
        result: Ok(()),
    });
    // One renewal succeeds, then etcd stops answering.
    t.advance(ms(1000));
    t.input(Input::Lease(LeaseReport::Held {
        sent: t.now,
        epoch: 9,
    }));
    t.input(Input::Lease(LeaseReport::Unreachable("timed out".into())));
    t.take();
    t.advance(ms(1999));
    assert!(
        t.c.writable(),
        "open until 2/3 of the TTL after the last renewal"
    );
    assert_eq!(t.pending_op(), None);
    t.advance(ms(1));
    assert_eq!(t.pending_op(), Some(DbOp::Fence), "at the deadline exactly");
    let effects = t.take();
    assert!(
        !effects.contains(&Effect::Lease(false)),
        "the key is kept until the fence is confirmed: {effects:?}"
    );
    t.db_done(DbOutcome::Fenced(Ok(())));
    let effects = t.take();
    assert!(effects.contains(&Effect::Lease(false)), "{effects:?}");
    assert!(effects.contains(&Effect::Vip(false)), "{effects:?}");
    assert_eq!(
        t.c.state(),
        State::Master,
        "the VIP goes before the bow-out"
    );
    t.input(Input::VipDone {
        add: false,
        result: Ok(()),
    });
    assert_eq!(t.c.state(), State::Backup);
    let bow_out = Effect::Advert {
        advbase: cluster_common::carp::BOW_OUT,
        advskew: cluster_common::carp::BOW_OUT,
    };
    assert!(t.take().contains(&bow_out));
}

#[test]
fn another_node_taking_the_key_closes_the_database_at_once() {
    let mut t = quorum_master();
    t.input(Input::Lease(LeaseReport::Held {
        sent: t.now,
        epoch: 9,
    }));
    prepared_clean(&mut t);
    t.db_done(DbOutcome::Promoted(Ok(Vec::new())));
    t.advance(ms(100));
    t.input(Input::Lease(LeaseReport::HeldBy {
        holder: B.to_string(),
        epoch: 12,
    }));
    assert_eq!(t.pending_op(), Some(DbOp::Fence));
}

fn host_checks(effects: &[Effect]) -> Vec<(Ipv4Addr, Mono)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CheckHost { addr, since } => Some((*addr, *since)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_overdue_master_s_host_is_checked_once_and_the_prepare_step_waits_on_that_check() {
    let mut t = replica_of_b();
    t.advert(B, 0);
    t.take();
    let last = t.now;
    // Due half an interval after the next advert was: not before.
    t.advance(ms(1490));
    assert_eq!(host_checks(&t.take()), vec![]);
    t.advance(ms(20));
    assert_eq!(host_checks(&t.take()), vec![(B, last + ms(1500))]);
    // An advert ends that silence; the next one gets its own check, not sooner than the
    // spacing allows.
    t.advance(ms(100));
    t.advert(B, 0);
    let last = t.now;
    t.advance(ms(3000));
    assert_eq!(host_checks(&t.take()), vec![(B, last + ms(1500))]);
    t.advance(ms(1000));
    assert_eq!(t.c.state(), State::Master);
    assert!(host_checks(&t.take()).is_empty(), "once per silence");
    let Some(DbOp::Prepare { peers, .. }) = t.pending_op() else {
        panic!("no prepare step")
    };
    assert_eq!(
        peers,
        vec![Probe {
            addr: B,
            skip: false,
            checked_since: Some(last + ms(1500)),
        }]
    );
}

#[test]
fn host_checks_are_spaced_and_stand_only_for_the_silence_they_began_in() {
    let mut t = replica_of_b();
    // A master in fast mode (a 101.6 ms interval) whose adverts come 160 ms apart, ten
    // times: each is overdue, and one check a second is all that follows.
    let fast = |t: &mut T| {
        t.input(Input::Advert {
            src: B.into(),
            advbase: 0,
            advskew: 26,
        })
    };
    fast(&mut t);
    let mut checks = Vec::new();
    for _ in 0..10 {
        t.advance(ms(160));
        fast(&mut t);
        checks.extend(host_checks(&t.take()));
    }
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(checks[1].1.saturating_since(checks[0].1) >= EARLY_CHECK_SPACING);
    // A master that bowed out is alive: no check, and none stands for the prepare step.
    t.input(Input::Advert {
        src: B.into(),
        advbase: 255,
        advskew: 255,
    });
    t.advance(ms(3000));
    assert!(host_checks(&t.take()).is_empty());
    assert_eq!(t.c.state(), State::Master);
    let Some(DbOp::Prepare { peers, .. }) = t.pending_op() else {
        panic!("no prepare step")
    };
    assert_eq!(peers[0].checked_since, None);
}

/// Two nodes with equal (demoted) skews take over at the same instant and each hears the
/// other's adverts only after its own transition: the worst case for a tie. Whatever they
/// advertise first has to be what they go on advertising, or each yields to the other's first
/// advert and the pair goes round again at the next master-down time, with nobody holding
/// the VIP.
/// Returns the master they settle on.
fn lockstep_pair_settles(quorum: Option<Duration>, prepare: impl Fn(&mut T)) -> Ipv4Addr {
    let mut nodes = [
        T::with_quorum(A, 100, false, &[A, B], quorum),
        T::with_quorum(B, 200, false, &[A, B], quorum),
    ];
    let addrs = [A, B];
    for t in nodes.iter_mut() {
        t.take();
        t.db_done(DbOutcome::Fenced(Ok(())));
        prepare(t);
        t.take();
    }
    let adverts = |t: &mut T| -> Vec<u8> {
        t.take()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Advert { advskew, .. } => Some(advskew),
                _ => None,
            })
            .collect()
    };
    let end = at(30_000);
    for _ in 0..1_000 {
        let Some(next) = nodes.iter().filter_map(|t| t.c.poll_timeout()).min() else {
            break;
        };
        if next > end {
            break;
        }
        for t in nodes.iter_mut() {
            t.now = next;
            if t.c.poll_timeout().is_some_and(|d| d <= next) {
                t.c.handle_timeout(next);
            }
        }
        // Deliver what each sent, and what that made the other send, at the same instant.
        let mut outbox: Vec<Vec<u8>> = nodes.iter_mut().map(&adverts).collect();
        for _ in 0..10 {
            if outbox.iter().all(Vec::is_empty) {
                break;
            }
            let sent = std::mem::take(&mut outbox);
            outbox = vec![Vec::new(), Vec::new()];
            for (from, skews) in sent.into_iter().enumerate() {
                let to = 1 - from;
                for skew in skews {
                    nodes[to].advert(addrs[from], skew);
                    outbox[to].extend(adverts(&mut nodes[to]));
                }
            }
        }
        let yielded: u64 = nodes
            .iter()
            .flat_map(|t| t.c.transitions_by())
            .filter(|(s, r, _)| (*s, *r) == (State::Backup, Reason::BetterMaster))
            .map(|(_, _, n)| n)
            .sum();
        assert!(
            yielded <= 1,
            "both yielded to the other's advert: {yielded} step-downs by {next:?}"
        );
    }
    let masters: Vec<Ipv4Addr> = (0..2)
        .filter(|&i| nodes[i].c.state() == State::Master)
        .map(|i| addrs[i])
        .collect();
    let [master] = masters[..] else {
        panic!("not exactly one master once the tie is settled: {masters:?}")
    };
    master
}

#[test]
fn equal_skew_takeovers_in_lockstep_settle_on_one_master_while_etcd_is_unreachable() {
    // Either may win the tie (UCARP's tie-break key decides).
    lockstep_pair_settles(Some(TTL), |t| {
        t.input(Input::Lease(LeaseReport::HeldBy {
            holder: C.to_string(),
            epoch: 3,
        }));
        t.input(Input::Lease(LeaseReport::Unreachable("no leader".into())));
    });
}

/// Without a quorum both are demoted as BACKUPs (neither replicates from a master) and not
/// as new masters: their first adverts carry their own skews, and the worse one yields. (This
/// one held before the first advert was settled too; it guards against demoting a new master
/// that has nothing to wait for.)
#[test]
fn equal_skew_takeovers_in_lockstep_settle_on_the_better_skew() {
    assert_eq!(lockstep_pair_settles(None, |_| {}), A);
}

/// `A`, a current replica of `B` under a quorum, wins after `B`'s power failure and waits for
/// the key; meanwhile its own server fails one sample with `outage`, if any. Then the key
/// comes, `B` cannot be asked, and `A` holds what `B` had logged.
fn quorum_takeover_after_waiting(outage: Option<Fault>) -> T {
    let mut t = T::with_quorum(A, 100, false, &[B], Some(TTL));
    // As the agent sets it under a quorum: longer than the key can outlive the master.
    let long_wait = SemiSync {
        timeout: Duration::from_secs(10),
        ..semi(true, 0)
    };
    following(&mut t, B, 0);
    t.input(Input::Lease(LeaseReport::HeldBy {
        holder: B.to_string(),
        epoch: 3,
    }));
    t.sample(B, master_db("0-2-20", long_wait), replica_of(B, "0-2-20"));
    t.advance(ms(200));
    t.advert(B, 0);
    t.sample(B, master_db("0-2-20", long_wait), replica_of(B, "0-2-20"));
    power_failure_of_b(&mut t, "0-2-20");
    assert_eq!(t.pending_op(), None, "waiting for the key");
    // A MASTER samples only its own server.
    let own_only = |t: &mut T, local: Result<LocalDb, Fault>| {
        t.input(Input::Observed(Observation {
            at: t.now,
            asked: t.now,
            local,
            master: None,
        }))
    };
    if let Some(fault) = outage {
        let stopped = matches!(fault, Fault::Refused(_));
        own_only(&mut t, Err(fault));
        t.advance(ms(500));
        own_only(&mut t, Ok(replica_of(B, "0-2-20")));
        if stopped {
            assert_eq!(t.pending_op(), Some(DbOp::Fence), "fenced again on return");
            t.db_done(DbOutcome::Fenced(Ok(())));
        }
    }
    t.input(Input::Lease(LeaseReport::Held {
        sent: t.now,
        epoch: 5,
    }));
    assert!(matches!(t.pending_op(), Some(DbOp::Prepare { .. })));
    t.db_done(DbOutcome::Prepared {
        own: Ok(Holdings {
            logged: g("0-2-20"),
            received: Gtids::default(),
        }),
        peers: vec![PeerReport {
            addr: B,
            result: Err(Fault::Other("timed out".into())),
        }],
        ready: Vec::new(),
    });
    t
}

/// A server that stopped running while its node waited for the key came back without the relay
/// log it acknowledged from: the node cannot know it holds what the old master acknowledged.
/// One that was only slow to answer kept it.
#[test]
fn a_new_master_whose_own_server_stopped_while_it_waited_for_the_key_is_not_current() {
    for outage in [None, Some(Fault::Stalled("timed out".into()))] {
        let t = quorum_takeover_after_waiting(outage.clone());
        assert!(
            matches!(t.pending_op(), Some(DbOp::Promote { .. })),
            "{outage:?}: current, and it holds what the master had: {:?}",
            t.c.db_view()
        );
    }
    let t = quorum_takeover_after_waiting(Some(Fault::Refused("connection refused".into())));
    assert_eq!(t.pending_op(), None);
    assert!(!t.c.writable());
    let refused = t.c.db_view().unwrap().refused.unwrap_or_default();
    assert!(refused.contains("local database down"), "{refused}");
}

/// `A`, current and with preemption, preempts `B` (skew 100) while `holder` holds the key:
/// returns the skews of the adverts its transition sent.
fn preempt_under_quorum(holder: Ipv4Addr) -> (T, Vec<u8>) {
    let mut t = T::with_quorum(A, 0, true, &[B, C], Some(TTL));
    following(&mut t, B, 100);
    t.input(Input::Lease(LeaseReport::HeldBy {
        holder: holder.to_string(),
        epoch: 3,
    }));
    compared_twice_with_b(&mut t);
    t.take();
    t.advert(B, 100);
    assert_eq!(t.c.state(), State::Master);
    let adverts = t
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Advert { advskew, .. } => Some(advskew),
            _ => None,
        })
        .collect();
    assert!(t.c.db_view().unwrap().quorum_wait.is_some());
    (t, adverts)
}

/// The master it preempted holds the key and lets it go only once it stepped down, so the new
/// master waits for the key at its own skew. Demoted, it would yield to that master's next
/// advert and preempt it again, over and over.
#[test]
fn a_preempting_node_waits_for_the_key_at_its_own_skew() {
    let (mut t, adverts) = preempt_under_quorum(B);
    assert_eq!(adverts, [0], "one advert, at its own skew");
    // The old master's next advert, before it has seen ours: it is the one to yield.
    t.advert(B, 100);
    assert_eq!(t.c.state(), State::Master);
    assert!(!t.c.machine().demoted());
}

/// Another node holds the key (across a partition that healed, say): that one should win, so
/// the new master waits demoted, whatever made it take over.
#[test]
fn a_new_master_waits_demoted_while_a_node_it_did_not_replace_holds_the_key() {
    let (t, adverts) = preempt_under_quorum(C);
    assert_eq!(adverts, [DEMOTED_SKEW]);
    assert!(t.c.machine().demoted());
}
