//! Unicast peers on a segment that drops multicast: the election and a failover still work.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Result, ensure};
use tests::cmd::{netns_command, run};
use tests::{AgentOpts, Rig, RigConfig, Timed, hold_for, masters, netns_test, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const VIP24: &str = "10.99.0.100/24";

/// Drops every IPv4 packet to the CARP group on the rig's bridge, counting them.
fn drop_carp_multicast(rig: &Rig) -> Result<()> {
    let rules = "table bridge nomcast {\n\
                 chain forward {\n\
                 type filter hook forward priority 0; policy accept;\n\
                 ip daddr 224.0.0.18 counter drop\n\
                 }\n}\n";
    let file = rig.dir().join("nomcast.nft");
    std::fs::write(&file, rules)?;
    run(&mut netns_command(
        rig.switch_ns(),
        "nft",
        &["-f", &file.display().to_string()],
    ))?;
    Ok(())
}

/// Packets the bridge rule has dropped so far.
fn multicast_dropped(rig: &Rig) -> Result<u64> {
    let out = run(&mut netns_command(
        rig.switch_ns(),
        "nft",
        &["list", "chain", "bridge", "nomcast", "forward"],
    ))?;
    let packets = out
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok());
    packets.ok_or_else(|| anyhow::anyhow!("no counter in the bridge rule:\n{out}"))
}

/// Two agents on a bridge that drops multicast. Without peers each hears nothing and both
/// become MASTER (the proof that multicast is cut); with `--peer` they elect one master, the
/// backup hears it by unicast (through XDP when it runs), and when the master loses power the
/// backup takes the VIP.
#[test]
fn unicast_peers_elect_and_fail_over_where_multicast_is_dropped() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        drop_carp_multicast(&rig)?;
        let opts = |skew| AgentOpts::new(21, "uni", VIP24).advskew(skew);
        let down = opts(100).master_down() + Duration::from_secs(2);

        let a0 = rig.start_agent(0, &opts(0))?;
        let a1 = rig.start_agent(1, &opts(100))?;
        wait_until(down, "both MASTER while multicast is dropped", || {
            Ok(masters(&[&a0, &a1]).len() == 2)
        })?;
        ensure!(
            multicast_dropped(&rig)? > 0,
            "the bridge dropped no multicast"
        );
        drop((a0, a1));

        let peer = |skew, other: usize| opts(skew).arg("--peer").arg(&rig.addr(other).to_string());
        let a0 = rig.start_agent(0, &peer(0, 1))?;
        let a1 = rig.start_agent(1, &peer(100, 0))?;
        let sole = |a: &tests::Agent, b: &tests::Agent, node: usize| -> Result<bool> {
            Ok(a.is_master() && b.is_backup() && rig.holders(VIP, &[0, 1])? == [node])
        };
        wait_until(down, "node0 sole master over unicast", || sole(&a0, &a1, 0))?;
        hold_for(Duration::from_secs(2), "node0 stays sole master", || {
            sole(&a0, &a1, 0)
        })?;
        let s1 = a1.status()?;
        ensure!(
            s1.master.as_deref() == Some("10.99.0.1") && s1.counters.adverts_received > 0,
            "node1 does not hear node0 by unicast: {s1:?}"
        );
        if s1.xdp != "off" {
            ensure!(
                s1.xdp_counters.get("advert").is_some_and(|&n| n > 0),
                "XDP did not classify the unicast adverts: {:?}",
                s1.xdp_counters
            );
        }

        rig.power_cut(0)?;
        drop(a0);
        let took = wait_until(down, "node1 takes over by unicast", || {
            Ok(a1.is_master() && rig.holders(VIP, &[1])? == [1])
        })?;
        eprintln!("node1 took over {took:?} after the power cut");
        Ok(())
    })
}
