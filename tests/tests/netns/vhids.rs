//! Several vhids in one agent (`[[vhid]]` tables): two nodes each master of one vhid at once,
//! a power cut that moves only the dead node's vhid, a reload that adds and removes one, and
//! a vhid of several addresses that move together.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tests::agent::{Status, run_agent_cmd};
use tests::scrape::{samples, scrape};
use tests::{Agent, AgentOpts, Rig, RigConfig, hold_for, netns_test, wait_for, wait_until};

const VIPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 99, 0, 100),
    Ipv4Addr::new(10, 99, 0, 101),
    Ipv4Addr::new(10, 99, 0, 102),
];
const VHIDS: [u8; 3] = [31, 32, 33];
const METRICS: &str = "127.0.0.1:9687";
/// Master-down at the largest skew used (3 s and 100/256 s), and slack for start-up.
const SETTLE: Duration = Duration::from_secs(10);

/// One `[[vhid]]` table: vhid `VHIDS[i]` with VIP `VIPS[i]` and this node's `skew` for it.
fn table(i: usize, skew: u8) -> String {
    format!(
        "[[vhid]]\nvhid = {}\naddr = \"{}/24\"\nadvskew = {skew}\npass = \"multi{i}\"\n",
        VHIDS[i], VIPS[i]
    )
}

/// Node `node`'s file: the common settings, then the tables.
fn write_config(rig: &Rig, node: usize, tables: &[String]) -> Result<PathBuf> {
    let file = rig.dir().join(format!("vhids-n{node}.toml"));
    let text = format!(
        "interface = \"eth0\"\nsrcip = \"{}\"\nadvbase = 1\ndeadratio = 3\npreempt = true\n\
         metrics = \"{METRICS}\"\n{}",
        rig.addr(node),
        tables.join("\n")
    );
    std::fs::write(&file, text)?;
    Ok(file)
}

fn start(rig: &Rig, node: usize, tables: &[String]) -> Result<Agent> {
    let file = write_config(rig, node, tables)?;
    rig.start_agent(node, &AgentOpts::new(0, "", "").config_file(&file))
}

/// The status of `vhid` in `agent`'s answer.
fn of(agent: &Agent, vhid: u8) -> Result<Status> {
    let status = agent.status()?;
    status
        .vhid(vhid)
        .cloned()
        .with_context(|| format!("vhid {vhid} missing from the status: {status:?}"))
}

fn state(agent: &Agent, vhid: u8) -> Result<String> {
    Ok(of(agent, vhid)?.state)
}

/// The metric samples of node `node` named `name` with label `vhid="V"`, by vhid.
fn per_vhid(rig: &Rig, node: usize, name: &str) -> Result<BTreeMap<u8, f64>> {
    let addr: SocketAddr = METRICS.parse()?;
    let text = scrape(rig.ns(node), addr)?;
    let mut out = BTreeMap::new();
    for (key, value) in samples(&text) {
        let Some(labels) = key.strip_prefix(name).and_then(|k| k.strip_prefix('{')) else {
            continue;
        };
        let vhid = labels
            .split(',')
            .find_map(|l| l.trim_end_matches('}').strip_prefix("vhid=\""))
            .and_then(|v| v.trim_end_matches('"').parse().ok());
        if let Some(vhid) = vhid {
            out.insert(vhid, value);
        }
    }
    Ok(out)
}

/// node0 prefers vhid 31 and node1 vhid 32: each is MASTER of one at once, each VIP on its
/// own node, and status and metrics report both vhids. node0's power cut moves vhid 31 to
/// node1; vhid 32, whose master lives, sees no transition.
#[test]
fn two_vhids_are_active_active_and_a_failure_moves_only_the_dead_master_s() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let a0 = start(&rig, 0, &[table(0, 0), table(1, 100)])?;
        let a1 = start(&rig, 1, &[table(0, 100), table(1, 0)])?;
        let split = || -> Result<bool> {
            Ok(state(&a0, 31)? == "MASTER"
                && state(&a0, 32)? == "BACKUP"
                && state(&a1, 31)? == "BACKUP"
                && state(&a1, 32)? == "MASTER"
                && rig.holders(VIPS[0], &[0, 1])? == [0]
                && rig.holders(VIPS[1], &[0, 1])? == [1])
        };
        wait_until(SETTLE, "each node MASTER of its own vhid", split)?;
        hold_for(Duration::from_secs(2), "the split holds", split)?;

        let s0 = of(&a0, 32)?;
        ensure!(
            s0.master.as_deref() == Some("10.99.0.2") && s0.counters.adverts_received > 0,
            "node0 does not follow node1 as master of vhid 32: {s0:?}"
        );
        for node in [0, 1] {
            let masters = per_vhid(&rig, node, "cluster_agent_state")?;
            ensure!(
                masters.keys().copied().collect::<Vec<_>>() == [31, 32],
                "node{node}'s metrics do not cover both vhids: {masters:?}"
            );
            let sent = per_vhid(&rig, node, "cluster_agent_adverts_sent_total")?;
            // Only a master advertises: node0 sends for vhid 31 and node1 for 32.
            let (own, other) = if node == 0 { (31, 32) } else { (32, 31) };
            ensure!(
                sent.get(&own).is_some_and(|&n| n > 0.0) && sent.get(&other) < sent.get(&own),
                "node{node}'s adverts by vhid do not follow its roles: {sent:?}"
            );
        }
        // A switchover of a vhid the agent does not serve is refused, and changes nothing.
        let socket = rig.agent_socket(1).display().to_string();
        let out = run_agent_cmd(
            None,
            &["switchover", "--vhid", "99", "--control-socket", &socket],
            Duration::from_secs(10),
        )?
        .context("`cluster-agent switchover` did not finish")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains("serves no vhid 99"),
            "a switchover of an unknown vhid was not refused: {stderr}"
        );
        hold_for(
            Duration::from_secs(1),
            "the split holds after the refusal",
            split,
        )?;
        let before = of(&a1, 32)?.counters.transitions;

        rig.power_cut(0)?;
        drop(a0);
        wait_until(SETTLE, "node1 takes vhid 31 over", || {
            Ok(state(&a1, 31)? == "MASTER" && rig.holders(VIPS[0], &[1])? == [1])
        })?;
        let kept = of(&a1, 32)?;
        ensure!(
            kept.state == "MASTER"
                && kept.counters.transitions == before
                && rig.holders(VIPS[1], &[1])? == [1],
            "vhid 32 moved although its master lives: {kept:?} (transitions before: {before})"
        );
        Ok(())
    })
}

/// A reload that drops vhid 32 and adds vhid 33: 32 bows out (node1 takes it at once), 33
/// starts as BACKUP and becomes MASTER on its own, and vhid 31 sees no transition.
#[test]
fn a_reload_removes_one_vhid_and_adds_another() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let a0 = start(&rig, 0, &[table(0, 0), table(1, 0)])?;
        let a1 = start(&rig, 1, &[table(1, 100)])?;
        wait_until(SETTLE, "node0 MASTER of vhids 31 and 32", || {
            Ok(state(&a0, 31)? == "MASTER"
                && state(&a0, 32)? == "MASTER"
                && state(&a1, 32)? == "BACKUP")
        })?;
        let before = of(&a0, 31)?.counters.transitions;

        write_config(&rig, 0, &[table(0, 0), table(2, 0)])?;
        ensure!(
            rig.signal_named(0, "cluster-agent", libc::SIGHUP)? == 1,
            "no agent on node0 to signal"
        );
        // A bow-out hands over at once, well before a master-down interval (3 s).
        wait_until(
            Duration::from_secs(2),
            "node1 takes vhid 32 at node0's bow-out",
            || Ok(state(&a1, 32)? == "MASTER" && rig.holders(VIPS[1], &[0, 1])? == [1]),
        )?;
        let added = wait_for(SETTLE, "vhid 33 starts on node0", || {
            Ok(a0.status()?.vhid(33).cloned())
        })?;
        ensure!(
            added.counters.transitions <= 1,
            "vhid 33 did not start as BACKUP: {added:?}"
        );
        wait_until(SETTLE, "vhid 33 becomes MASTER on node0", || {
            Ok(state(&a0, 33)? == "MASTER" && rig.holders(VIPS[2], &[0, 1])? == [0])
        })?;
        let status = a0.status()?;
        ensure!(
            status.vhid(32).is_none(),
            "vhid 32 still reported after its removal: {status:?}"
        );
        let kept = of(&a0, 31)?;
        ensure!(
            kept.state == "MASTER" && kept.counters.transitions == before,
            "vhid 31 changed state during the reload: {kept:?}"
        );
        Ok(())
    })
}

/// A vhid of several addresses between two agents: the master holds all of them and answers
/// ARP for each, the backup none; status names them all; a power cut moves them together.
#[test]
fn a_vhid_s_addresses_move_together() -> Result<()> {
    const ADDRS: [&str; 3] = ["10.99.0.110/24", "10.99.0.111/24", "10.99.0.112/32"];
    let vips: Vec<Ipv4Addr> = ADDRS
        .iter()
        .map(|a| a.split('/').next().unwrap_or_default().parse())
        .collect::<Result<_, _>>()?;
    netns_test(|| {
        // node2 runs no agent: it is the client asking who has each address.
        let rig = Rig::new(RigConfig::nodes(3))?;
        let addrs = ADDRS.map(|a| format!("\"{a}\"")).join(", ");
        // The up script gets UCARP's arguments (the first address) and every address in
        // CLUSTER_AGENT_VIPS.
        let seen = rig.dir().join("up-args");
        let up = rig.write_script(
            "up-several",
            &format!("echo \"$2 $CLUSTER_AGENT_VIPS\" >> {}", seen.display()),
        )?;
        let table = |skew: u8| {
            format!(
                "[[vhid]]\nvhid = 40\naddr = [{addrs}]\nadvskew = {skew}\npass = \"several\"\nupscript = \"{}\"\n",
                up.display()
            )
        };
        let a0 = start(&rig, 0, &[table(0)])?;
        let a1 = start(&rig, 1, &[table(100)])?;
        // A powered-off node keeps its addresses, as a dead server would: `among` leaves it out.
        let held_by = |node: usize, among: &[usize]| -> Result<bool> {
            for &vip in &vips {
                if rig.holders(vip, among)? != [node] {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        wait_until(SETTLE, "node0 MASTER with every address", || {
            Ok(state(&a0, 40)? == "MASTER" && state(&a1, 40)? == "BACKUP" && held_by(0, &[0, 1])?)
        })?;
        let status = of(&a0, 40)?;
        ensure!(
            status.vip == ADDRS[0] && status.more_vips == ADDRS[1..],
            "status does not name every address: {status:?}"
        );
        ensure!(
            of(&a1, 40)?.counters.adverts_received > 0,
            "node1 authenticates none of node0's adverts"
        );
        let want = format!("{} {}", vips[0], ADDRS.join(" "));
        wait_until(Duration::from_secs(5), "the up script ran on node0", || {
            Ok(std::fs::read_to_string(&seen)
                .unwrap_or_default()
                .lines()
                .next()
                == Some(&want))
        })?;
        let mac0 = rig.mac(0)?;
        for &vip in &vips {
            ensure!(
                rig.arp_answers(2, vip)? == [mac0.clone()],
                "{vip} is not answered by node0 alone"
            );
        }

        rig.power_cut(0)?;
        drop(a0);
        wait_until(SETTLE, "node1 takes every address over", || {
            Ok(state(&a1, 40)? == "MASTER" && held_by(1, &[1])?)
        })?;
        let mac1 = rig.mac(1)?;
        for &vip in &vips {
            ensure!(
                rig.arp_answers(2, vip)? == [mac1.clone()],
                "{vip} is not answered by node1 after the takeover"
            );
        }
        Ok(())
    })
}

/// An IPv6 vhid between two agents: adverts over IPv6 to ff02::12, the VIP added without
/// duplicate address detection on the master only (with XDP, the backup drops solicitations
/// for it), and on takeover an unsolicited neighbour advertisement that moves a client's
/// neighbour entry to the new master without the client sending anything.
#[test]
fn an_ipv6_vip_moves_and_the_client_s_neighbour_entry_follows() -> Result<()> {
    let vip: std::net::Ipv6Addr = "2001:db8:99::100".parse()?;
    netns_test(|| {
        // node2 runs no agent: it is the client.
        let rig = Rig::new(RigConfig::nodes(3))?;
        rig.exec(
            2,
            &[
                "ip",
                "addr",
                "add",
                "2001:db8:99::3/64",
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        let table = |skew: u8| {
            format!("[[vhid]]\nvhid = 60\naddr = \"{vip}/64\"\nadvskew = {skew}\npass = \"six\"\n")
        };
        let a0 = start(&rig, 0, &[table(0)])?;
        let a1 = start(&rig, 1, &[table(100)])?;
        wait_until(SETTLE, "node0 MASTER holding the IPv6 VIP", || {
            Ok(state(&a0, 60)? == "MASTER"
                && state(&a1, 60)? == "BACKUP"
                && rig.holders(vip, &[0, 1])? == [0])
        })?;
        let backup = of(&a1, 60)?;
        ensure!(
            backup.counters.adverts_received > 0
                && backup
                    .master
                    .as_deref()
                    .is_some_and(|m| m.starts_with("fe80::")),
            "node1 does not follow node0's IPv6 adverts from its link-local address: {backup:?}"
        );
        let mac0 = rig.mac(0)?;
        // The client's first packet resolves the VIP by solicitation, answered by node0.
        wait_until(Duration::from_secs(5), "the client reaches the VIP", || {
            let out = rig.exec(2, &["ping", "-6", "-c", "1", "-W", "1", &vip.to_string()])?;
            Ok(out.status.success())
        })?;
        ensure!(
            rig.neighbour(2, vip)? == Some(mac0.clone()),
            "the client's neighbour entry for the VIP is not node0's MAC {mac0}"
        );
        // With XDP the backup's program checked node0's IPv6 adverts and dropped the client's
        // solicitation for the VIP.
        let status1 = a1.status()?;
        if status1.xdp != "off" {
            let counter = |name: &str| status1.xdp_counters.get(name).copied().unwrap_or(0);
            ensure!(
                counter("advert") > 0 && counter("nd_dropped") > 0,
                "node1's XDP program took no IPv6 advert or dropped no solicitation: {:?}",
                status1.xdp_counters
            );
        }

        rig.power_cut(0)?;
        drop(a0);
        let mac1 = rig.mac(1)?;
        wait_until(SETTLE, "node1 takes the IPv6 VIP over", || {
            Ok(state(&a1, 60)? == "MASTER" && rig.holders(vip, &[1])? == [1])
        })?;
        // No traffic from the client: only node1's advertisement can have moved the entry.
        wait_until(
            Duration::from_secs(2),
            "the client's neighbour entry names node1",
            || Ok(rig.neighbour(2, vip)? == Some(mac1.clone())),
        )?;
        let out = rig.exec(2, &["ping", "-6", "-c", "1", "-W", "2", &vip.to_string()])?;
        ensure!(
            out.status.success(),
            "the client cannot reach the VIP at node1"
        );
        Ok(())
    })
}
