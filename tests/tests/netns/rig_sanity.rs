//! Self-tests of the harness: the rig forwards multicast, partitions and power cuts cut a node
//! off, a one-way cut drops one direction, process faults hit the processes they name, and two real `ucarp` peers fail over on
//! it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use tests::rig::Way;
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
        // `ip netns exec` enters the namespace after the spawn returns; a power cut before that
        // finds nothing to stop, and the sleeper turns up afterwards.
        wait_until(Duration::from_secs(5), "the sleeper runs in node1", || {
            Ok(!tests::rig::pids_in(rig.ns(1))?.is_empty())
        })?;
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

/// Whether node `at` has heard of `addr` since its neighbour table was flushed (an ARP
/// request from that address is enough).
fn heard(rig: &Rig, at: usize, addr: Ipv4Addr) -> Result<bool> {
    let out = rig.exec(at, &["ip", "neigh", "show", &addr.to_string()])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("lladdr"))
}

fn forget_neighbours(rig: &Rig, nodes: &[usize]) -> Result<()> {
    for &i in nodes {
        ensure!(
            rig.exec(i, &["ip", "neigh", "flush", "dev", "eth0"])?
                .status
                .success(),
            "cannot flush node{i}'s neighbours"
        );
    }
    Ok(())
}

/// A one-way cut drops one direction only: the frames the node sends (it hears requests but
/// its answers are lost), or the frames sent to it (its requests arrive, the answers do not).
#[test]
fn a_one_way_cut_drops_one_direction_only() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        assert!(
            reach(&rig, 0, rig.addr(1))?,
            "node0 cannot reach node1 before the cut"
        );
        // Cutting node1 each way: which node asks and which is asked, so that the request
        // passes the cut and the answer does not.
        for (way, asker, asked) in [(Way::FromNode, 0, 1), (Way::ToNode, 1, 0)] {
            forget_neighbours(&rig, &[0, 1])?;
            rig.cut_one_way(1, way)?;
            let (to, from) = (rig.addr(asked), rig.addr(asker));
            assert!(
                !reach(&rig, asker, to)?,
                "{way:?}: the answer passed the cut"
            );
            assert!(
                heard(&rig, asked, from)?,
                "{way:?}: the request did not arrive"
            );
            rig.mend_one_way(1)?;
            wait_until(Duration::from_secs(5), "an answer after the mend", || {
                reach(&rig, asker, to)
            })?;
        }
        Ok(())
    })
}

/// The process faults: freeze, thaw and kill by command name, and a power cut that stops a
/// node's processes at the instant it reports.
#[test]
fn processes_are_frozen_thawed_and_killed_by_name() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(1))?;
        let mut sleeper = rig.spawn(0, "sleeper", &["sleep", "600"])?;
        let pid = sleeper.pid() as libc::pid_t;
        let state = || tests::proc::process_state(pid);
        wait_until(Duration::from_secs(5), "sleep runs", || {
            Ok(rig.pids_named(0, "sleep")? == [pid])
        })?;
        assert_eq!(rig.freeze(0, "sleep")?, 1);
        wait_until(Duration::from_secs(5), "sleep stopped", || {
            state() == Some('T')
        })?;
        rig.thaw(0, "sleep")?;
        wait_until(Duration::from_secs(5), "sleep runs again", || {
            state() == Some('S')
        })?;
        assert!(rig.freeze(0, "no-such-program").is_err());
        rig.kill(0, "sleep")?;
        let st = sleeper.wait_exit(Duration::from_secs(5))?;
        ensure!(!st.success(), "sleep survived SIGKILL: {st}");

        let _again = rig.spawn(0, "sleeper", &["sleep", "600"])?;
        let before = tests::wait::mono_ns();
        let t = rig.power_cut(0)?;
        let after = tests::wait::mono_ns();
        assert!((before..=after).contains(&t), "{before} <= {t} <= {after}");
        assert!(rig.pids(0)?.is_empty(), "processes survived the power cut");
        assert!(!rig.port_state(0).powered);
        assert!(rig.vip_sample(VIP)?.holders().is_empty());
        rig.power_on(0)?;
        assert!(rig.port_state(0).powered);

        // The frozen power cut: the same to the outside, its processes stopped rather than
        // gone until they are buried.
        let frozen = rig.spawn(0, "sleeper", &["sleep", "600"])?;
        let pid = frozen.pid() as libc::pid_t;
        wait_until(Duration::from_secs(5), "sleep runs", || {
            Ok(rig.pids_named(0, "sleep")? == [pid])
        })?;
        rig.power_cut_frozen(0)?;
        assert!(!rig.port_state(0).powered);
        assert!(rig.vip_sample(VIP)?.holders().is_empty());
        assert_eq!(rig.pids(0)?, [pid]);
        wait_until(
            Duration::from_secs(5),
            "sleep stopped by the power cut",
            || tests::proc::process_state(pid) == Some('T'),
        )?;
        rig.bury(0)?;
        assert!(rig.pids(0)?.is_empty(), "processes survived the burial");
        rig.power_on(0)?;
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

/// A test that fails by returning an error: its namespaces go at once, its directory (with
/// the logs of what it ran) stays for a look.
#[test]
fn rig_is_removed_when_the_test_returns_an_error() -> Result<()> {
    netns_test(|| {
        let mut names = Vec::new();
        let mut dir = None;
        let r = netns_test(|| {
            let rig = Rig::new(RigConfig::nodes(1))?;
            names = vec![rig.switch_ns().to_string(), rig.ns(0).to_string()];
            dir = Some(rig.dir().to_path_buf());
            let _p = rig.spawn(0, "sleeper", &["sleep", "600"])?;
            anyhow::bail!("deliberate failure inside a rig")
        });
        assert!(r.is_err());
        let list = tests::cmd::ip(&["netns", "list"])?;
        for n in &names {
            assert!(!list.contains(n.as_str()), "namespace {n} left behind");
        }
        let dir = dir.expect("the rig was built");
        assert!(
            dir.join("sleeper-n0.log").is_file(),
            "the failed test's files were not kept"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    })
}

/// The VIP watch sees every add and remove of the VIP on every node, a stretch of two holders
/// however short, and a power cut as the end of holding.
#[test]
fn vip_watch_sees_holders_and_power_cuts() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let cidr = format!("{VIP}/32");
        let watch = tests::watch::VipWatch::start(&rig, VIP)?;
        let add = |i: usize| rig.exec(i, &["ip", "addr", "add", &cidr, "dev", "eth0"]);
        let del = |i: usize| rig.exec(i, &["ip", "addr", "del", &cidr, "dev", "eth0"]);
        ensure!(add(0)?.status.success(), "adding the VIP on node0");
        ensure!(add(1)?.status.success(), "adding the VIP on node1");
        ensure!(del(1)?.status.success(), "removing the VIP on node1");
        rig.power_cut(0)?;
        ensure!(
            !rig.node_has_addr(0, VIP)?,
            "a powered-off node still holds the VIP"
        );
        let timeline = watch.stop();
        let held: Vec<Vec<Option<bool>>> = timeline
            .samples
            .iter()
            .map(|node| node.iter().map(|s| s.1).collect())
            .collect();
        // Per node: the state at the start, each change, the state at the end.
        ensure!(
            held[0] == [Some(false), Some(true), Some(false), Some(false)],
            "node0: {:?}",
            held[0]
        );
        ensure!(
            held[1] == [Some(false), Some(true), Some(false), Some(false)],
            "node1: {:?}",
            held[1]
        );
        let both = timeline.two_writers(&[]);
        ensure!(
            both.len() == 1 && both[0].nodes == [0, 1] && both[0].to_ns > both[0].from_ns,
            "one stretch with both holding expected: {both:?}"
        );
        Ok(())
    })
}
