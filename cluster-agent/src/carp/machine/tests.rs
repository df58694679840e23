use super::*;
use std::net::Ipv4Addr;

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2));
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));

fn params(advbase: u8, advskew: u8, preempt: bool) -> Params {
    Params {
        src: ME,
        advbase,
        advskew,
        deadratio: 3,
        preempt,
        garp_interval: None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn t(ms: u64) -> Mono {
    Mono::from_nanos(ms * 1_000_000)
}

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn advert(src: IpAddr, advbase: u8, advskew: u8) -> Input {
    Input::Advert {
        src,
        advbase,
        advskew,
    }
}

/// Wakes a BACKUP on time at its look, if one is pending, and returns its deadline.
fn look_on_time(m: &mut Machine) -> Mono {
    let due = m.deadline().unwrap();
    let next = m.poll_timeout().unwrap();
    if next < due {
        m.handle_timeout(next);
        assert!(drain(m).is_empty(), "a look on time changes nothing");
    }
    assert_eq!(m.poll_timeout(), Some(due));
    due
}

/// Drives a fresh BACKUP to MASTER through its master-down timer.
fn master_at(p: Params) -> (Machine, Mono) {
    let mut m = Machine::new(p, t(0));
    let at = look_on_time(&mut m);
    m.handle_timeout(at);
    drain(&mut m);
    assert_eq!(m.state(), State::Master);
    (m, at)
}

#[test]
fn starts_as_backup_with_master_down_timer() {
    let m = Machine::new(params(1, 100, false), t(0));
    assert_eq!(m.state(), State::Backup);
    // advbase * deadratio + advskew/256 = 3 s + 390.625 ms
    assert_eq!(m.master_down(), Duration::from_nanos(3_390_625_000));
    assert_eq!(m.deadline(), Some(t(0) + m.master_down()));
    // Its look comes twice the allowance (a quarter of its own interval) before.
    assert_eq!(
        m.poll_timeout(),
        Some(t(0) + (m.master_down() - interval(1, 100) / 2))
    );
}

#[test]
fn master_down_timeout_takes_over_with_advert_and_garp() {
    let mut m = Machine::new(params(1, 0, false), t(0));
    assert_eq!(m.poll_timeout(), Some(t(2500)), "the look");
    m.handle_timeout(t(2500));
    m.handle_timeout(t(2999));
    assert!(drain(&mut m).is_empty(), "no action before the deadline");
    m.handle_timeout(t(3000));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::Transition {
                from: State::Backup,
                to: State::Master,
                reason: Reason::MasterDown
            },
            Action::SendAdvert {
                advbase: 1,
                advskew: 0
            },
            Action::SendGarp,
        ]
    );
    assert_eq!(m.master(), Some(ME));
    assert_eq!(m.poll_timeout(), Some(t(4000)));
}

#[test]
fn master_advertises_every_interval_and_sends_delayed_garp_after_two() {
    let (mut m, at) = master_at(params(1, 128, false));
    let mut now = at;
    let mut seen = Vec::new();
    for _ in 0..3 {
        now = m.poll_timeout().unwrap();
        m.handle_timeout(now);
        seen.push(drain(&mut m));
    }
    let adv = Action::SendAdvert {
        advbase: 1,
        advskew: 128,
    };
    assert_eq!(seen[0], vec![adv]);
    assert_eq!(seen[1], vec![adv, Action::SendGarp]);
    assert_eq!(seen[2], vec![adv]);
    assert_eq!(now, at + ms(1500) * 3);
}

#[test]
fn backup_restarts_timer_on_each_advert() {
    let mut m = Machine::new(params(1, 100, false), t(0));
    m.handle(t(2000), advert(PEER, 1, 0));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.deadline(), Some(t(2000) + m.master_down()));
    assert_eq!(m.master(), Some(PEER));
    assert_eq!(m.last_advert(), Some(t(2000)));
}

#[test]
fn backup_with_preempt_and_lower_interval_takes_over_at_once() {
    let mut m = Machine::new(params(1, 10, true), t(0));
    m.handle(t(500), advert(PEER, 1, 100));
    let a = drain(&mut m);
    assert!(matches!(
        a[0],
        Action::Transition {
            to: State::Master,
            reason: Reason::Preempt,
            ..
        }
    ));
}

#[test]
fn backup_without_preempt_stays_backup_behind_a_worse_master() {
    let mut m = Machine::new(params(1, 10, false), t(0));
    m.handle(t(500), advert(PEER, 1, 100));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn preempt_needs_a_strictly_lower_interval() {
    let mut m = Machine::new(params(1, 100, true), t(0));
    m.handle(t(500), advert(PEER, 1, 100));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn bow_out_advert_makes_backup_take_over_now() {
    let mut m = Machine::new(params(1, 100, false), t(0));
    m.handle(t(1000), advert(PEER, 1, 0));
    m.handle(t(1500), advert(PEER, 255, 255));
    let a = drain(&mut m);
    assert!(matches!(
        a[0],
        Action::Transition {
            to: State::Master,
            reason: Reason::BowOut,
            ..
        }
    ));
}

#[test]
fn slow_master_is_treated_as_down() {
    // A master advertising every 10 s can never keep a 3 s master-down timer alive.
    let mut m = Machine::new(params(1, 0, false), t(0));
    m.handle(t(100), advert(PEER, 10, 0));
    assert!(matches!(
        drain(&mut m)[0],
        Action::Transition {
            reason: Reason::SlowMaster,
            ..
        }
    ));
}

#[test]
fn in_fast_mode_a_slowly_advertising_master_is_followed_and_a_bow_out_taken_at_once() {
    // A master that demoted itself (skew 240: 937.5 ms) after following one at 3.9 ms: the
    // master-down time follows it (3 of its intervals), nothing is taken over.
    let mut m = Machine::new(params(0, 2, false), t(0));
    m.handle(t(1), advert(PEER, 0, 1));
    m.handle(t(2), advert(PEER, 0, DEMOTED_SKEW));
    assert!(drain(&mut m).is_empty(), "no takeover from a live master");
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.deadline(), Some(t(2) + interval(0, DEMOTED_SKEW) * 3));
    // The node that just handed over hears its successor's first advert, demoted while it
    // waits for the quorum's key: it stays BACKUP.
    let (mut m, at) = master_at(params(0, 1, true));
    m.handle(at, Input::Switchover);
    drain(&mut m);
    m.handle(at + ms(1), advert(PEER, 0, DEMOTED_SKEW));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.state(), State::Backup);
    // A bow-out is taken over at once, whatever its interval.
    m.handle(at + ms(2), advert(PEER, BOW_OUT, BOW_OUT));
    assert!(drain(&mut m).contains(&Action::Transition {
        from: State::Backup,
        to: State::Master,
        reason: Reason::BowOut
    }));
}

#[test]
fn master_yields_to_lower_interval_with_one_last_advert() {
    let (mut m, at) = master_at(params(1, 100, false));
    m.handle(at + ms(10), advert(PEER, 1, 50));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::SendAdvert {
                advbase: 1,
                advskew: 100
            },
            Action::Transition {
                from: State::Master,
                to: State::Backup,
                reason: Reason::BetterMaster
            },
        ]
    );
    assert_eq!(m.master(), Some(PEER));
    assert_eq!(m.deadline(), Some(at + ms(10) + m.master_down()));
}

#[test]
fn master_reannounces_when_a_worse_master_is_heard() {
    let (mut m, at) = master_at(params(1, 10, false));
    m.handle(at + ms(10), advert(PEER, 1, 50));
    // An advert at once, so the worse master stands down now rather than an interval later.
    assert_eq!(
        drain(&mut m),
        vec![
            Action::SendAdvert {
                advbase: 1,
                advskew: 10
            },
            Action::SendGarp
        ]
    );
    assert_eq!(m.state(), State::Master);
    // and a second GARP after two more adverts
    let mut garps = 0;
    for _ in 0..2 {
        let now = m.poll_timeout().unwrap();
        m.handle_timeout(now);
        garps += drain(&mut m)
            .iter()
            .filter(|a| **a == Action::SendGarp)
            .count();
    }
    assert_eq!(garps, 1);
}

#[test]
fn equal_interval_tie_break_uses_little_endian_source() {
    // Under UCARP's rule 10.99.1.1 beats 10.99.0.2.
    let lower_le = IpAddr::V4(Ipv4Addr::new(10, 99, 1, 1));
    let higher_le = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2));

    let mut p = params(1, 0, false);
    p.src = higher_le;
    let (mut m, at) = master_at(p);
    m.handle(at, advert(lower_le, 1, 0));
    assert_eq!(m.state(), State::Backup, "higher key yields");

    let mut p = params(1, 0, false);
    p.src = lower_le;
    let (mut m, at) = master_at(p);
    m.handle(at, advert(higher_le, 1, 0));
    assert_eq!(m.state(), State::Master, "lower key keeps mastership");
}

#[test]
fn link_down_demotes_to_backup_and_stops_timers() {
    let (mut m, at) = master_at(params(1, 0, false));
    m.handle(at, Input::LinkDown);
    assert!(matches!(
        drain(&mut m)[..],
        [Action::Transition {
            to: State::Backup,
            reason: Reason::LinkDown,
            ..
        }]
    ));
    assert_eq!(m.poll_timeout(), None);
    m.handle(at + ms(1), advert(PEER, 255, 255));
    assert_eq!(
        m.state(),
        State::Backup,
        "adverts are ignored while the link is down"
    );
    m.handle(at + ms(100), Input::LinkUp);
    assert_eq!(m.deadline(), Some(at + ms(100) + m.master_down()));
}

#[test]
fn shutdown_as_master_bows_out_and_stops() {
    let (mut m, at) = master_at(params(1, 0, false));
    m.handle(at, Input::Shutdown);
    assert_eq!(
        drain(&mut m),
        vec![
            Action::SendAdvert {
                advbase: 255,
                advskew: 255
            },
            Action::Transition {
                from: State::Master,
                to: State::Backup,
                reason: Reason::Shutdown
            },
        ]
    );
    assert_eq!(m.poll_timeout(), None);
    m.handle_timeout(at + Duration::from_secs(100));
    assert!(drain(&mut m).is_empty());
}

#[test]
fn shutdown_as_backup_sends_nothing() {
    let mut m = Machine::new(params(1, 0, false), t(0));
    m.handle(t(1), Input::Shutdown);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn switchover_bows_out_and_holds_off_preemption() {
    let (mut m, at) = master_at(params(1, 0, true));
    m.handle(at, Input::Switchover);
    let a = drain(&mut m);
    assert_eq!(
        a[0],
        Action::SendAdvert {
            advbase: 255,
            advskew: 255
        }
    );
    assert_eq!(m.state(), State::Backup);
    m.handle(at + ms(50), advert(PEER, 1, 100));
    assert_eq!(
        m.state(),
        State::Backup,
        "no preemption right after switchover"
    );
    // Once the new master disappears we take over again, and preemption is back.
    let down = look_on_time(&mut m);
    m.handle_timeout(down);
    assert_eq!(m.state(), State::Master);
}

#[test]
fn a_step_down_bows_out_without_holding_off_preemption() {
    let (mut m, at) = master_at(params(1, 0, true));
    m.handle(at, Input::SetDemoted(true));
    m.handle(at, Input::StepDown);
    let a = drain(&mut m);
    assert!(a.contains(&Action::SendAdvert {
        advbase: 255,
        advskew: 255
    }));
    assert_eq!(m.state(), State::Backup);
    // Demoted (the service is down): no preemption.
    m.handle(at + ms(50), advert(PEER, 1, 100));
    assert_eq!(m.state(), State::Backup);
    // The service is back: the next advert of a worse master is preempted at once.
    m.handle(at + ms(60), Input::SetDemoted(false));
    m.handle(at + ms(1050), advert(PEER, 1, 100));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn demotion_raises_advertised_skew_and_lets_a_preempting_peer_win() {
    let (mut m, at) = master_at(params(1, 10, false));
    m.handle(at, Input::SetDemoted(true));
    // The new skew is announced at once, and on every advert after.
    assert_eq!(
        drain(&mut m),
        vec![Action::SendAdvert {
            advbase: 1,
            advskew: DEMOTED_SKEW
        }]
    );
    let next = m.poll_timeout().unwrap();
    assert_eq!(next, at + interval(1, DEMOTED_SKEW));
    m.handle_timeout(next);
    assert_eq!(
        drain(&mut m),
        vec![Action::SendAdvert {
            advbase: 1,
            advskew: DEMOTED_SKEW
        }]
    );
    // a peer with skew 100 is now better
    m.handle(next + ms(1), advert(PEER, 1, 100));
    assert_eq!(m.state(), State::Backup);
    m.handle(next + ms(2), Input::SetDemoted(false));
    assert_eq!(m.effective_skew(), 10);
}

#[test]
fn fast_mode_scales_master_down_by_deadratio() {
    let m = Machine::new(params(0, 8, false), t(0));
    assert_eq!(m.own_interval(), Duration::from_nanos(31_250_000));
    assert_eq!(m.master_down(), Duration::from_nanos(93_750_000));
    // UCARP's formula would give 0 * 3 + 8/256 = one interval, and flap.
    assert!(m.master_down() > m.own_interval() * 2);
}

#[test]
fn periodic_garp_while_master_when_configured() {
    let mut p = params(1, 0, false);
    p.garp_interval = Some(Duration::from_secs(5));
    let (mut m, at) = master_at(p);
    let mut garps = 0;
    let mut now = at;
    while now < at + Duration::from_secs(21) {
        now = m.poll_timeout().unwrap();
        m.handle_timeout(now);
        garps += drain(&mut m)
            .iter()
            .filter(|a| **a == Action::SendGarp)
            .count();
    }
    // one delayed GARP after two adverts + one every 5 s (at 5, 10, 15, 20)
    assert_eq!(garps, 5);
}

#[test]
fn fast_mode_master_down_follows_a_slower_master() {
    let mut m = Machine::new(params(0, 67, false), t(0));
    m.handle(t(10), advert(PEER, 0, 200));
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.master_down(), interval(0, 200) * 3);
    assert_eq!(m.deadline(), Some(t(10) + interval(0, 200) * 3));
}

#[test]
fn a_reconfigured_master_advertises_the_new_timing_at_once_without_a_transition() {
    let (mut m, at) = master_at(params(1, 10, false));
    let mut p = params(2, 50, true);
    p.src = PEER; // the address never changes on a reload
    p.garp_interval = Some(Duration::from_secs(4));
    m.handle(at + ms(5), Input::Reconfigure(p));
    assert_eq!(
        drain(&mut m),
        vec![Action::SendAdvert {
            advbase: 2,
            advskew: 50
        }]
    );
    assert_eq!(m.state(), State::Master);
    assert_eq!(m.params().src, ME);
    assert_eq!(m.master(), Some(ME));
    assert_eq!(m.poll_timeout(), Some(at + ms(5) + interval(2, 50)));
    // The periodic GARP now runs, 4 s from the reload.
    m.handle_timeout(at + ms(5) + Duration::from_secs(4));
    assert!(drain(&mut m).contains(&Action::SendGarp));
    // The same settings again change nothing.
    m.handle(at + ms(6), Input::Reconfigure(*m.params()));
    assert!(drain(&mut m).is_empty());
}

#[test]
fn a_reconfigured_backup_counts_master_down_from_the_same_instant() {
    let mut m = Machine::new(params(1, 100, false), t(0));
    m.handle(t(1000), advert(PEER, 1, 0));
    assert_eq!(m.deadline(), Some(t(1000) + m.master_down()));
    m.handle(t(1500), Input::Reconfigure(params(2, 0, false)));
    assert!(drain(&mut m).is_empty(), "no advert, no transition");
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.master_down(), Duration::from_secs(6));
    assert_eq!(m.deadline(), Some(t(7000)));
    // A master-down time already over takes effect at once, not in the past.
    m.handle(t(7000), Input::Reconfigure(params(1, 0, false)));
    assert_eq!(m.poll_timeout(), Some(t(7000)));
}

/// A backup following a fast-mode master (skew 1: 3.9 ms) that looked at its countdown on
/// time and whose master-down timer then ran out at `late` past its deadline, the master silent
/// since `t(0)`.
fn backup_woken_late(late: Duration) -> (Machine, Mono) {
    let mut m = Machine::new(params(0, 2, false), t(0));
    m.handle(t(0), advert(PEER, 0, 1));
    let due = look_on_time(&mut m);
    assert_eq!(due, t(0) + interval(0, 2) * 3);
    m.handle_timeout(due + late);
    (m, due + late)
}

/// The same backup, standing still from before its look until `woke`.
fn backup_stalled_across_the_look(woke: Mono) -> Machine {
    let mut m = Machine::new(params(0, 2, false), t(0));
    m.handle(t(0), advert(PEER, 0, 1));
    let look = m.poll_timeout().unwrap();
    // Twice the allowance (1 ms: a quarter of 3.9 ms is less) before the deadline.
    assert_eq!(look, t(0) + (interval(0, 2) * 3 - ms(2)));
    m.handle_timeout(woke);
    m
}

#[test]
fn a_stall_across_the_look_that_ends_just_past_the_deadline_moves_nothing() {
    // The soak's case: the whole machine stood still and resumed within the allowance of the
    // deadline, where the timer alone looks on time; the master's overdue advert comes next.
    let due = t(0) + interval(0, 2) * 3;
    let woke = due + Duration::from_micros(500);
    let mut m = backup_stalled_across_the_look(woke);
    assert!(
        drain(&mut m).is_empty(),
        "no takeover on the stall's silence"
    );
    assert_eq!(m.poll_timeout(), Some(woke + interval(0, 1)));
    m.handle(woke + Duration::from_micros(100), advert(PEER, 0, 1));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn a_stall_across_the_look_that_ends_before_the_deadline_gives_the_grace_then() {
    let woke = t(0) + (interval(0, 2) * 3 - Duration::from_micros(500));
    let mut m = backup_stalled_across_the_look(woke);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), Some(woke + interval(0, 1)));
    // A master really gone: taken over once the grace is over, with no second one.
    m.handle_timeout(woke + interval(0, 1) + ms(5));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn a_backup_woken_late_by_a_stall_waits_one_interval_for_the_master_that_stalled_with_it() {
    let (mut m, woke) = backup_woken_late(ms(5));
    assert!(
        drain(&mut m).is_empty(),
        "no takeover on a silence the stall made"
    );
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.poll_timeout(), Some(woke + interval(0, 1)));
    // The master resumes and advertises: it stays master, and the countdown starts afresh.
    m.handle(woke + ms(1), advert(PEER, 0, 1));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.deadline(), Some(woke + ms(1) + interval(0, 2) * 3));
    assert!(m.poll_timeout() < m.deadline(), "with a look again");
}

#[test]
fn a_backup_woken_late_takes_over_one_interval_later_from_a_master_really_gone() {
    let (mut m, woke) = backup_woken_late(ms(5));
    drain(&mut m);
    // Stalled again: the grace is given once per countdown, so it takes over now.
    m.handle_timeout(woke + interval(0, 1) + ms(5));
    assert_eq!(
        drain(&mut m)[0],
        Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterDown
        }
    );
}

#[test]
fn a_backup_woken_on_time_takes_over_at_once() {
    // A timer's usual lateness is well under the allowance (a quarter interval, at least 1 ms).
    let (mut m, _) = backup_woken_late(Duration::from_micros(900));
    assert_eq!(m.state(), State::Master);
    assert!(drain(&mut m).contains(&Action::Transition {
        from: State::Backup,
        to: State::Master,
        reason: Reason::MasterDown
    }));
}

#[test]
fn a_reload_or_new_skew_during_the_grace_keeps_it() {
    let (mut m, woke) = backup_woken_late(ms(5));
    let p = *m.params();
    m.handle(woke + ms(1), Input::Reconfigure(p));
    m.handle(woke + ms(1), Input::SetDemoted(true));
    m.handle(woke + ms(1), Input::SetDemoted(false));
    assert_eq!(m.poll_timeout(), Some(woke + interval(0, 1)));
    m.handle_timeout(woke + ms(1));
    assert_eq!(m.state(), State::Backup, "{:?}", drain(&mut m));
}

#[test]
fn before_any_master_was_heard_the_grace_is_the_nodes_own_interval() {
    let mut m = Machine::new(params(0, 2, false), t(0));
    let due = m.deadline().unwrap();
    m.handle_timeout(due + ms(5));
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.poll_timeout(), Some(due + ms(5) + interval(0, 2)));
}

#[test]
fn with_one_second_adverts_the_allowance_is_a_quarter_of_the_masters_interval() {
    let follow = |late: Duration| {
        let mut m = Machine::new(params(1, 100, false), t(0));
        m.handle(t(0), advert(PEER, 1, 0));
        let due = look_on_time(&mut m);
        m.handle_timeout(due + late);
        m.state()
    };
    assert_eq!(follow(ms(200)), State::Master, "late, but not by a stall");
    assert_eq!(follow(ms(300)), State::Backup, "a stall: one more second");
}

#[test]
fn a_silence_while_the_socket_drops_packets_does_not_count_towards_master_down() {
    // Fast mode, following a master: the socket overflows before the look.
    let mut m = Machine::new(params(0, 2, false), t(0));
    m.handle(t(10), advert(PEER, 0, 1));
    let first = m.deadline().unwrap();
    let lost_at = t(10) + ms(5);
    m.handle(lost_at, Input::AdvertsLost);
    assert!(drain(&mut m).is_empty(), "no action of its own");
    assert_eq!(m.deadline(), Some(lost_at + m.master_down()));
    assert!(m.deadline().unwrap() > first);
    // The old deadline passes without a takeover.
    m.handle_timeout(first);
    assert_eq!(m.state(), State::Backup);
    // The master keeps its place: its identity and interval are unchanged.
    assert_eq!(m.master(), Some(PEER));
    assert_eq!(m.last_advert(), Some(t(10)));
    // Once the socket stops dropping, a silence of a whole master-down time still takes over.
    let due = look_on_time(&mut m);
    m.handle_timeout(due);
    assert_eq!(m.state(), State::Master);
    assert!(drain(&mut m).iter().any(|a| matches!(
        a,
        Action::Transition {
            reason: Reason::MasterDown,
            ..
        }
    )));
}

#[test]
fn lost_packets_change_nothing_for_a_master_or_a_node_whose_link_is_down() {
    let (mut m, at) = master_at(params(1, 0, false));
    let next = m.poll_timeout();
    m.handle(at + ms(1), Input::AdvertsLost);
    assert!(drain(&mut m).is_empty());
    assert_eq!((m.state(), m.poll_timeout()), (State::Master, next));
    m.handle(at + ms(2), Input::LinkDown);
    drain(&mut m);
    m.handle(at + ms(3), Input::AdvertsLost);
    assert_eq!(m.poll_timeout(), None, "no countdown is started");
}
