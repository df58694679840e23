//! Self-tests of the harness: the rig forwards multicast, partitions and power cuts cut a node
//! off, and two real `ucarp` peers fail over on it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;
use tests::{Rig, RigConfig, Timed, UcarpOpts, hold_for, netns_test, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

#[test]
fn two_ucarps_fail_over() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        // The default deadratio 3: with 1, ucarp's own libpcap delivery lag (up to 1 s) can
        // exceed a backup's master-down time and both become MASTER.
        let o = UcarpOpts::new(7, "secret", VIP);
        let _a = rig.spawn_ucarp(0, &o.clone().advskew(0).preempt(true))?;
        let _b = rig.spawn_ucarp(1, &o.clone().advskew(100))?;
        let t = wait_until(Duration::from_secs(10), "node0 holds the VIP", || {
            rig.node_has_addr(0, VIP)
        })?;
        eprintln!("node0 master after {t:?}");
        hold_for(
            Duration::from_millis(2500),
            "only node0 holds the VIP",
            || Ok(rig.holders(VIP, &[0, 1])? == [0]),
        )?;
        let t0 = Instant::now();
        rig.power_cut(0)?;
        wait_until(Duration::from_secs(8), "node1 takes the VIP", || {
            rig.node_has_addr(1, VIP)
        })?;
        eprintln!("ucarp failover took {:?}", t0.elapsed());
        assert!(
            t0.elapsed() >= Duration::from_millis(2300),
            "backup took over before its master-down time: {:?}",
            t0.elapsed()
        );
        Ok(())
    })
}

/// Reachability at layer 2: one ARP request, answered within a second.
fn reach(rig: &Rig, from: usize, to: Ipv4Addr) -> Result<bool> {
    Ok(rig
        .exec(
            from,
            &[
                "arping",
                "-q",
                "-c",
                "1",
                "-w",
                "1",
                "-I",
                "eth0",
                &to.to_string(),
            ],
        )?
        .status
        .success())
}

#[test]
fn partition_and_power_cut_cut_a_node_off() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2).client(Ipv4Addr::new(10, 99, 0, 250)))?;
        let b = rig.addr(1);
        assert!(
            reach(&rig, 0, b)?,
            "node0 cannot reach node1 through the bridge"
        );
        rig.partition(1)?;
        assert!(
            !reach(&rig, 0, b)?,
            "node1 still reachable while partitioned"
        );
        rig.heal(1)?;
        wait_until(Duration::from_secs(5), "node1 reachable after heal", || {
            reach(&rig, 0, b)
        })?;
        let sleeper = rig.spawn(1, "sleeper", &["sleep", "600"])?;
        rig.power_cut(1)?;
        assert!(
            !reach(&rig, 0, b)?,
            "node1 still reachable while powered off"
        );
        assert!(rig.pids(1)?.is_empty(), "processes survived the power cut");
        drop(sleeper);
        rig.power_on(1)?;
        wait_until(
            Duration::from_secs(5),
            "node1 reachable after power-on",
            || reach(&rig, 0, b),
        )?;
        let client = rig.client_ns().expect("client namespace").to_string();
        let out = tests::cmd::output(&mut tests::cmd::netns_command(
            &client,
            "arping",
            &["-q", "-c", "1", "-w", "1", "-I", "eth0", "10.99.0.1"],
        ))?;
        assert!(out.status.success(), "client cannot reach node0");
        Ok(())
    })
}

#[test]
fn rig_is_removed_even_when_the_test_panics() -> Result<()> {
    netns_test(|| {
        let mut names = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let rig = Rig::new(RigConfig::nodes(2)).unwrap();
            names = vec![
                rig.switch_ns().to_string(),
                rig.ns(0).to_string(),
                rig.ns(1).to_string(),
            ];
            let _p = rig.spawn(0, "sleeper", &["sleep", "600"]).unwrap();
            panic!("deliberate failure inside a rig");
        }));
        assert!(r.is_err());
        let list = tests::cmd::ip(&["netns", "list"])?;
        for n in &names {
            assert!(!list.contains(n.as_str()), "namespace {n} left behind");
        }
        Ok(())
    })
}
