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
        assert_eq!(rig.arp_answers(2, VIP)?, vec![rig.mac(0)?]);
        assert!(xdp_counter(&master, "arp_answered")? > answered);

        // The address gone from the interface: XDP still answers for the MASTER.
        rig.exec(0, &["ip", "addr", "del", "10.99.0.100/24", "dev", "eth0"])?;
        assert!(!rig.node_has_addr(0, VIP)?);
        assert_eq!(rig.arp_answers(2, VIP)?, vec![rig.mac(0)?]);

        // A BACKUP with the VIP forced onto its interface answers nothing for it.
        rig.exec(1, &["ip", "addr", "add", "10.99.0.100/24", "dev", "eth0"])?;
        let dropped = xdp_counter(&backup, "arp_dropped")?;
        assert_eq!(
            rig.arp_answers(2, VIP)?,
            vec![rig.mac(0)?],
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
                &rig.mac(1)?,
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

/// `cluster-agent xdp load|stats|unload`: the program attached on its own and pinned, in a
/// mount namespace of the test's own (a private BPF file system, so nothing is left on the
/// machine), counts a CARP advert sent to it and is gone after `unload`.
#[test]
fn a_pinned_program_counts_an_advert_until_unloaded() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(1))?;
        let ns = rig.ns(0).to_string();
        // A veth pair of the test's own: one end carries the program, frames go in at the other.
        let suffix = std::process::id() % 100_000;
        let (xa, xb) = (format!("pxa{suffix}"), format!("pxb{suffix}"));
        std::thread::spawn(move || -> Result<()> {
            tests::netns::enter(&ns)?;
            tests::netns::private_mounts()?;
            let ip = |args: &[&str]| -> Result<()> {
                let o = tests::cmd::output_within(
                    std::process::Command::new("ip").args(args),
                    Duration::from_secs(10),
                )?;
                anyhow::ensure!(o.status.success(), "ip {args:?}: {o:?}");
                Ok(())
            };
            ip(&["link", "add", &xa, "type", "veth", "peer", "name", &xb])?;
            ip(&["link", "set", &xa, "up"])?;
            ip(&["link", "set", &xb, "up"])?;
            let agent = |args: &[&str]| -> Result<String> {
                let o = tests::cmd::output_within(
                    std::process::Command::new(tests::agent_bin()?)
                        .arg("xdp")
                        .args(args),
                    Duration::from_secs(30),
                )?;
                anyhow::ensure!(
                    o.status.success(),
                    "cluster-agent xdp {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                Ok(String::from_utf8_lossy(&o.stdout).into_owned())
            };
            let pins = std::path::PathBuf::from("/sys/fs/bpf/cluster-agent").join(&xa);
            let loaded = agent(&[
                "load",
                "-i",
                &xa,
                "--mode",
                "generic",
                "--vhid",
                "7",
                "--vip",
                "10.99.0.100",
            ])?;
            let unload = || agent(&["unload", "-i", &xa]);
            let checked = (|| -> Result<()> {
                assert!(
                    loaded.contains("generic mode") && loaded.contains("program id "),
                    "{loaded}"
                );
                for pin in ["program", "link", "COUNTERS"] {
                    assert!(pins.join(pin).exists(), "no {pin} pinned: {loaded}");
                }
                // A second load on the same interface is refused, not stacked.
                assert!(agent(&["load", "-i", &xa]).is_err());
                let stats = |name: &str| -> Result<u64> {
                    let text = agent(&["stats", "-i", &xa, "--json"])?;
                    let v: serde_json::Value = serde_json::from_str(&text)?;
                    Ok(v[name].as_u64().unwrap_or(0))
                };
                let before = stats("carp_seen")?;
                // An advert for vhid 7 from an address no CARP node has, wrong HMAC: seen and
                // refused.
                let src = Ipv4Addr::new(10, 99, 0, 77);
                let carp = tests::frames::carp_header(7, 1, 0, 1, [0; 20]);
                let frame =
                    tests::frames::carp_frame(src, Ipv4Addr::new(224, 0, 0, 18), 255, 1, &carp);
                let sender = tests::packet::PacketSocket::sender(&xb)?;
                wait_until(
                    Duration::from_secs(10),
                    "the pinned program counts the advert",
                    || {
                        sender.send_batch(std::slice::from_ref(&frame))?;
                        Ok(stats("carp_seen")? > before && stats("auth_failed")? > 0)
                    },
                )?;
                Ok(())
            })();
            let gone = unload();
            checked?;
            gone?;
            assert!(!pins.exists(), "pins left after unload");
            let o = tests::cmd::output_within(
                std::process::Command::new("ip").args(["link", "show", "dev", &xa]),
                Duration::from_secs(10),
            )?;
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(!text.contains("xdp"), "still attached after unload: {text}");
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the test thread panicked"))?
    })
}
