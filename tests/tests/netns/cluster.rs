//! Several agents on one segment: exactly one master before, during and after a power cut.

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
