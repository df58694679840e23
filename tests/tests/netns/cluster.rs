//! Several agents on one segment: exactly one master before, during and after a power cut, and
//! through a stall of the whole machine.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;
use tests::{Agent, AgentOpts, Rig, RigConfig, Timed, hold_for, masters, netns_test, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const VIP24: &str = "10.99.0.100/24";

/// Three agents (skews 0, 50, 100, preempt): a BACKUP refuses a switchover; the master loses
/// power, exactly one of the others takes over (the next preferred); the master returns and
/// takes the VIP back.
#[test]
fn three_agents_single_master_through_power_failure() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(3))?;
        let opts = |skew| {
            AgentOpts::new(6, "three", VIP24)
                .advskew(skew)
                .preempt(true)
        };
        let a0 = rig.start_agent(0, &opts(0))?;
        let a1 = rig.start_agent(1, &opts(50))?;
        let a2 = rig.start_agent(2, &opts(100))?;
        let all = [0, 1, 2];

        let single = |agents: &[&tests::Agent], nodes: &[usize], want: usize| -> Result<bool> {
            let m = masters(agents);
            Ok(m.len() == 1 && nodes[m[0]] == want && rig.holders(VIP, nodes)? == [want])
        };

        wait_until(Duration::from_secs(10), "node0 sole master", || {
            single(&[&a0, &a1, &a2], &all, 0)
        })?;
        // A switchover asked of a BACKUP is refused, and moves nothing (the hold below).
        let refused = a2.switchover(Duration::from_secs(10))?;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("not MASTER")),
            "a BACKUP took a switchover: {refused:?}"
        );
        hold_for(
            Duration::from_millis(2000),
            "node0 stays sole master",
            || single(&[&a0, &a1, &a2], &all, 0),
        )?;

        rig.power_cut(0)?;
        drop(a0);
        let survivors = [1, 2];
        let took = wait_until(
            opts(50).master_down() + Duration::from_secs(2),
            "node1 (next preferred) sole master among survivors",
            || single(&[&a1, &a2], &survivors, 1),
        )?;
        eprintln!("node1 took over after {took:?}");
        hold_for(
            Duration::from_millis(2500),
            "node1 stays sole master",
            || single(&[&a1, &a2], &survivors, 1),
        )?;
        let s2 = a2.status()?;
        assert!(s2.is_backup(), "{s2:?}");
        assert_eq!(s2.master.as_deref(), Some("10.99.0.2"), "{s2:?}");

        rig.power_on(0)?;
        let a0 = rig.start_agent(0, &opts(0))?;
        wait_until(Duration::from_secs(6), "node0 preempts back", || {
            single(&[&a0, &a1, &a2], &all, 0)
        })?;
        hold_for(
            Duration::from_millis(2500),
            "exactly one master, node0",
            || single(&[&a0, &a1, &a2], &all, 0),
        )?;
        for a in [&a1, &a2] {
            let s = a.status()?;
            assert_eq!(s.master.as_deref(), Some("10.99.0.1"), "{s:?}");
            assert_eq!(s.counters.auth_failures, 0, "{s:?}");
        }
        Ok(())
    })
}

/// Fast mode, node0 the master (skew 12: an advert every 46.9 ms) and node1 its backup (skew
/// 13: a master-down time of 152.3 ms, an allowance of a quarter of node0's interval, 11.7 ms).
fn stall_opts(skew: u8) -> AgentOpts {
    AgentOpts::new(7, "stall", VIP24).advbase(0).advskew(skew)
}

fn sole_master_node0(rig: &Rig, a0: &Agent, a1: &Agent) -> Result<bool> {
    Ok(masters(&[a0, a1]) == [0] && rig.holders(VIP, &[0, 1])? == [0])
}

/// The whole machine stands still `rounds` times: both agents stopped for `stall(round)`,
/// then node1 resumed and node0 `gap` later, as threads resume in any order after a
/// hypervisor's pause or a CPU quota that ran out. node0 must stay the sole master throughout,
/// with no state change on either node. The stall and the order of resuming are the fault
/// itself, not a wait for something to happen.
fn whole_machine_stalls(
    rig: &Rig,
    rounds: u32,
    stall: impl Fn(u32) -> Duration,
    gap: Duration,
) -> Result<(Agent, Agent)> {
    let mut a0 = rig.start_agent(0, &stall_opts(12))?;
    let mut a1 = rig.start_agent(1, &stall_opts(13))?;
    wait_until(Duration::from_secs(5), "node0 sole master", || {
        sole_master_node0(rig, &a0, &a1)
    })?;
    let before = [a0.status()?.counters, a1.status()?.counters];
    for round in 0..rounds {
        a0.freeze()?;
        a1.freeze()?;
        std::thread::sleep(stall(round));
        a1.thaw()?;
        std::thread::sleep(gap);
        a0.thaw()?;
        hold_for(
            Duration::from_millis(500),
            &format!("round {round}: node0 stays sole master after the stall"),
            || sole_master_node0(rig, &a0, &a1),
        )?;
    }
    for (i, (a, was)) in [&a0, &a1].into_iter().zip(&before).enumerate() {
        let now = a.status()?.counters;
        assert_eq!(now.transitions, was.transitions, "node{i}: {now:?}");
    }
    Ok((a0, a1))
}

/// Stalls ending somewhere around the backup's master-down deadline, both agents resuming
/// together. Where a stall ends within the allowance past the deadline, the backup's timer
/// alone looks on time, and it raced the master's first advert after the stall (once in a
/// 600 s soak under load); the backup's look ahead of its deadline sees the stall. The stall's
/// end falls at a different phase of node0's interval each round: about one round in four
/// lands in that window, so without the look this fails in nearly every run.
#[test]
fn a_stall_ending_near_the_backups_deadline_moves_nothing() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let interval = Duration::from_secs(12) / 256;
        // node0 last advertised up to an interval before the freeze, so a stall this much
        // shorter than the master-down time ends up to an interval past node1's deadline.
        let stall = |round: u32| stall_opts(13).master_down() - interval * (round % 4 + 1) / 5;
        whole_machine_stalls(&rig, 16, stall, Duration::ZERO)?;
        Ok(())
    })
}

/// Stalls of twice the master-down time, the backup resuming 5 ms before the master. The
/// backup's master-down timer is overdue then, but the silence it measured was its own stall
/// too, and the master advertises as soon as it runs: nothing moves, in any of three rounds
/// (the grace is node0's interval, so node0 has over 40 ms after its resume to advertise). A
/// master that stalls alone is still replaced.
#[test]
fn a_stall_of_the_whole_machine_moves_nothing() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let stall = |_| stall_opts(13).master_down() * 2;
        let (mut a0, a1) = whole_machine_stalls(&rig, 3, stall, Duration::from_millis(5))?;
        a0.freeze()?;
        let took = wait_until(
            stall_opts(13).master_down() + Duration::from_secs(1),
            "node1 takes over from node0 stalled alone",
            || Ok(a1.is_master() && rig.holders(VIP, &[1])? == [1]),
        )?;
        eprintln!("node1 took over {took:?} after node0 stalled alone");
        a0.thaw()?;
        wait_until(Duration::from_secs(5), "node0 sole master again", || {
            sole_master_node0(&rig, &a0, &a1)
        })?;
        Ok(())
    })
}
