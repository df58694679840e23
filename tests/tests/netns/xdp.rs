//! The XDP data plane attached in a namespace next to a real `ucarp`: the kernel shows the
//! program in the requested mode, the agent reports it, and its counters see ucarp's adverts.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;
use tests::{AgentOpts, Rig, RigConfig, Timed, UcarpOpts, netns_test, wait_timed, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

/// The XDP attachment `ip link` shows on node `i`'s eth0: "xdp", "xdpgeneric" or none.
fn kernel_xdp_mode(rig: &Rig, node: usize) -> Result<Option<&'static str>> {
    let out = rig.exec(node, &["ip", "link", "show", "dev", "eth0"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("");
    let words: Vec<&str> = first.split_whitespace().collect();
    Ok(if words.contains(&"xdpgeneric") {
        Some("xdpgeneric")
    } else if words.contains(&"xdp") {
        Some("xdp")
    } else {
        None
    })
}

fn xdp_smoke(mode: &str, kernel_word: &str) -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        // ucarp alone becomes MASTER after ~1 s (deadratio 1) and sends adverts every second.
        let _u = rig.spawn_ucarp(
            1,
            &UcarpOpts::new(11, "xdp", VIP)
                .advskew(0)
                .deadratio(1)
                .preempt(true),
        )?;
        let mut agent = rig.spawn_agent(
            0,
            &AgentOpts::new(11, "xdp", "10.99.0.100/24")
                .advskew(100)
                .xdp(mode),
        )?;
        let s = agent.wait_ready(Duration::from_secs(10))?;
        assert_eq!(s.xdp, mode, "agent reports XDP mode {:?}: {s:?}", s.xdp);
        assert_eq!(
            kernel_xdp_mode(&rig, 0)?,
            Some(kernel_word),
            "kernel does not show an XDP program in {mode} mode on eth0"
        );
        let (seen, _) = wait_timed(Duration::from_secs(10), "xdp carp_seen >= 2", || {
            let s = agent.status().ok()?;
            let n = *s.xdp_counters.get("carp_seen")?;
            (n >= 2).then_some(n)
        })?;
        wait_until(Duration::from_secs(3), "carp_seen keeps growing", || {
            agent
                .status()
                .is_ok_and(|s| s.xdp_counters.get("carp_seen").is_some_and(|&n| n > seen))
        })?;
        let ucarp_addr = rig.addr(1).to_string();
        wait_until(Duration::from_secs(5), "agent BACKUP of ucarp", || {
            agent
                .status()
                .is_ok_and(|s| s.is_backup() && s.master.as_deref() == Some(&ucarp_addr))
        })?;
        let s = agent.status()?;
        assert!(s.counters.adverts_received >= 2, "{s:?}");
        assert!(!rig.node_has_addr(0, VIP)?, "BACKUP holds the VIP");

        agent.proc.terminate()?;
        let st = agent.proc.wait_exit(Duration::from_secs(5))?;
        assert!(st.success(), "agent exit on SIGTERM: {st}");
        assert_eq!(
            kernel_xdp_mode(&rig, 0)?,
            None,
            "XDP program left attached after exit"
        );
        Ok(())
    })
}

#[test]
fn xdp_native_sees_ucarp_adverts() -> Result<()> {
    xdp_smoke("native", "xdp")
}

#[test]
fn xdp_generic_sees_ucarp_adverts() -> Result<()> {
    xdp_smoke("generic", "xdpgeneric")
}

fn xdp_counter(agent: &tests::Agent, name: &str) -> Result<u64> {
    Ok(agent.status()?.xdp_counters.get(name).copied().unwrap_or(0))
}

/// `arping` from `node`: the MACs that answered for `addr` (iputils prints `[aa:bb:...]`).
fn arp_answers(rig: &Rig, node: usize, addr: Ipv4Addr) -> Result<Vec<String>> {
    let out = rig.exec(
        node,
        &[
            "arping",
            "-c",
            "2",
            "-w",
            "2",
            "-I",
            "eth0",
            &addr.to_string(),
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut macs: Vec<String> = text
        .split(['[', ']'])
        .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
        .map(str::to_lowercase)
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

fn mac_of(rig: &Rig, node: usize) -> Result<String> {
    let out = rig.exec(node, &["cat", "/sys/class/net/eth0/address"])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_lowercase())
}

/// The XDP data plane on a live segment: ARP for the VIP is answered by the MASTER's XDP program
/// (also once the address is gone from its interface; generic mode, since a veth in native mode
/// drops XDP_TX and the agent leaves ARP to the kernel there), a BACKUP holding the VIP by mistake
/// answers neither ARP nor traffic, and a foreign claim on the VIP is reported as a conflict.
#[test]
fn xdp_answers_arp_fences_backup_and_reports_conflicts() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(3))?;
        let master = rig.start_agent(
            0,
            &AgentOpts::new(12, "xdp", "10.99.0.100/24")
                .preempt(true)
                .xdp("generic"),
        )?;
        wait_until(Duration::from_secs(10), "node0 MASTER", || {
            master.is_master()
        })?;
        let backup = rig.start_agent(
            1,
            &AgentOpts::new(12, "xdp", "10.99.0.100/24")
                .advskew(100)
                .xdp("native"),
        )?;
        wait_until(Duration::from_secs(5), "node1 BACKUP of node0", || {
            backup
                .status()
                .is_ok_and(|s| s.is_backup() && s.counters.adverts_received >= 1)
        })?;
        let s = backup.status()?;
        assert!(
            s.xdp_counters.get("advert").is_some_and(|&n| n >= 1),
            "adverts did not come through the ring buffer: {s:?}"
        );

        // MASTER: answered, by node0's MAC only.
        let answered = xdp_counter(&master, "arp_answered")?;
        assert_eq!(arp_answers(&rig, 2, VIP)?, vec![mac_of(&rig, 0)?]);
        assert!(xdp_counter(&master, "arp_answered")? > answered);

        // The address gone from the interface: XDP still answers for the MASTER.
        rig.exec(0, &["ip", "addr", "del", "10.99.0.100/24", "dev", "eth0"])?;
        assert!(!rig.node_has_addr(0, VIP)?);
        assert_eq!(arp_answers(&rig, 2, VIP)?, vec![mac_of(&rig, 0)?]);

        // A BACKUP with the VIP forced onto its interface answers nothing for it.
        rig.exec(1, &["ip", "addr", "add", "10.99.0.100/24", "dev", "eth0"])?;
        let dropped = xdp_counter(&backup, "arp_dropped")?;
        assert_eq!(
            arp_answers(&rig, 2, VIP)?,
            vec![mac_of(&rig, 0)?],
            "the fenced backup answered ARP"
        );
        assert!(xdp_counter(&backup, "arp_dropped")? > dropped);
        let fenced = xdp_counter(&backup, "fenced")?;
        let node1 = rig.addr(1);
        rig.exec(
            2,
            &[
                "ip",
                "neigh",
                "replace",
                "10.99.0.100",
                "lladdr",
                &mac_of(&rig, 1)?,
                "dev",
                "eth0",
            ],
        )?;
        // A TCP connect to a port nothing listens on: refused at once if the backup's stack sees
        // it, a timeout if XDP fences it.
        let connect = rig.exec(
            2,
            &[
                "timeout",
                "1",
                "bash",
                "-c",
                "echo > /dev/tcp/10.99.0.100/9",
            ],
        )?;
        assert_eq!(
            connect.status.code(),
            Some(124),
            "the fenced backup ({node1}) answered traffic for the VIP"
        );
        assert!(xdp_counter(&backup, "fenced")? > fenced);
        rig.exec(1, &["ip", "addr", "del", "10.99.0.100/24", "dev", "eth0"])?;

        // Another host announces the VIP: a conflict on the MASTER.
        let conflicts = master.status()?.counters.arp_conflicts;
        rig.exec(2, &["ip", "addr", "add", "10.99.0.100/24", "dev", "eth0"])?;
        rig.exec(2, &["arping", "-U", "-c", "1", "-I", "eth0", "10.99.0.100"])?;
        wait_until(
            Duration::from_secs(3),
            "conflict reported by the MASTER",
            || {
                master
                    .status()
                    .is_ok_and(|s| s.counters.arp_conflicts > conflicts)
            },
        )?;
        assert!(xdp_counter(&master, "arp_conflict")? >= 1);
        Ok(())
    })
}
