//! Several agents on one segment: exactly one master before, during and after a power cut, and
//! through a stall of the whole machine.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;
use tests::{AgentOpts, Rig, RigConfig, Timed, hold_for, masters, netns_test, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const VIP24: &str = "10.99.0.100/24";

/// Three agents (skews 0, 50, 100, preempt): the master loses power, exactly one of the
/// others takes over (the next preferred); the master returns and takes the VIP back.
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

/// The same stall, ending somewhere around the backup's master-down deadline, both agents
/// resuming together, the backup first. Where the stall ends within the allowance past the
/// deadline, the backup's timer alone looks on time, and it raced the master's first advert
/// after the stall (once in a 600 s soak under load); the backup's look ahead of its deadline
/// sees the stall. The stall's end falls at a different phase of node0's interval each round:
/// about one round in four lands in that window, so without the look this fails in nearly
/// every run.
#[test]
fn a_stall_ending_near_the_backups_deadline_moves_nothing() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        // node0 advertises every 46.9 ms; node1's master-down time is 152.3 ms, its allowance
        // a quarter of node0's interval (11.7 ms).
        let opts = |skew| AgentOpts::new(7, "stall", VIP24).advbase(0).advskew(skew);
        let mut a0 = rig.start_agent(0, &opts(12))?;
        let mut a1 = rig.start_agent(1, &opts(13))?;
        let settled = |a0: &tests::Agent, a1: &tests::Agent| -> Result<bool> {
            Ok(masters(&[a0, a1]) == [0] && rig.holders(VIP, &[0, 1])? == [0])
        };
        wait_until(Duration::from_secs(5), "node0 sole master", || {
            settled(&a0, &a1)
        })?;
        let before = [a0.status()?.counters, a1.status()?.counters];
        let interval = Duration::from_secs(12) / 256;
        for round in 0..16u32 {
            a0.freeze()?;
            a1.freeze()?;
            // node0 last advertised up to an interval before the freeze, so a stall this much
            // shorter than the master-down time ends up to an interval past node1's deadline.
            std::thread::sleep(opts(13).master_down() - interval * (round % 4 + 1) / 5);
            a1.thaw()?;
            a0.thaw()?;
            hold_for(
                Duration::from_millis(500),
                &format!("round {round}: node0 stays sole master after the stall"),
                || settled(&a0, &a1),
            )?;
        }
        for (i, (a, was)) in [&a0, &a1].into_iter().zip(&before).enumerate() {
            let now = a.status()?.counters;
            assert_eq!(now.transitions, was.transitions, "node{i}: {now:?}");
        }
        Ok(())
    })
}

/// The whole machine stands still (both agents stopped, for twice the master-down time) and
/// resumes, the backup 5 ms before the master, as threads resume in any order after a
/// hypervisor's pause or a CPU quota that ran out. The backup's master-down timer is overdue
/// then, but the silence it measured was its own stall too, and the master advertises as soon as
/// it runs: nothing moves, in any of three rounds. A master that stalls alone is still
/// replaced.
#[test]
fn a_stall_of_the_whole_machine_moves_nothing() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        // Fast mode: node0 advertises every 46.9 ms, node1's master-down time is 152.3 ms; the
        // grace is node0's interval, so node0 has over 40 ms after its resume to advertise.
        let opts = |skew| AgentOpts::new(7, "stall", VIP24).advbase(0).advskew(skew);
        let mut a0 = rig.start_agent(0, &opts(12))?;
        let mut a1 = rig.start_agent(1, &opts(13))?;
        let settled = |a0: &tests::Agent, a1: &tests::Agent| -> Result<bool> {
            Ok(masters(&[a0, a1]) == [0] && rig.holders(VIP, &[0, 1])? == [0])
        };
        wait_until(Duration::from_secs(5), "node0 sole master", || {
            settled(&a0, &a1)
        })?;
        let before = [a0.status()?.counters, a1.status()?.counters];
        for round in 0..3 {
            a0.freeze()?;
            a1.freeze()?;
            // The stall and the order of resuming are the fault itself, not a wait for
            // something to happen.
            std::thread::sleep(opts(13).master_down() * 2);
            a1.thaw()?;
            std::thread::sleep(Duration::from_millis(5));
            a0.thaw()?;
            hold_for(
                Duration::from_millis(500),
                &format!("round {round}: node0 stays sole master after the stall"),
                || settled(&a0, &a1),
            )?;
        }
        for (i, (a, was)) in [&a0, &a1].into_iter().zip(&before).enumerate() {
            let now = a.status()?.counters;
            assert_eq!(now.transitions, was.transitions, "node{i}: {now:?}");
        }

        a0.freeze()?;
        let took = wait_until(
            opts(13).master_down() + Duration::from_secs(1),
            "node1 takes over from node0 stalled alone",
            || Ok(a1.is_master() && rig.holders(VIP, &[1])? == [1]),
        )?;
        eprintln!("node1 took over {took:?} after node0 stalled alone");
        a0.thaw()?;
        wait_until(Duration::from_secs(5), "node0 sole master again", || {
            settled(&a0, &a1)
        })?;
        Ok(())
    })
}
