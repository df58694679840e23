//! The XDP data plane attached in a namespace next to a real `ucarp`: the kernel shows the
//! program in the requested mode, the agent reports it, and its counters see ucarp's adverts.

use std::net::Ipv4Addr;
use std::time::Duration;

use tests::{AgentOpts, Rig, RigConfig, UcarpOpts, netns_available, wait_for, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

/// The XDP attachment `ip link` shows on node `i`'s eth0: "xdp", "xdpgeneric" or none.
fn kernel_xdp_mode(rig: &Rig, node: usize) -> Option<&'static str> {
    let out = rig.exec(node, &["ip", "link", "show", "dev", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("");
    let words: Vec<&str> = first.split_whitespace().collect();
    if words.contains(&"xdpgeneric") {
        Some("xdpgeneric")
    } else if words.contains(&"xdp") {
        Some("xdp")
    } else {
        None
    }
}

fn xdp_smoke(mode: &str, kernel_word: &str) {
    if !netns_available() {
        return;
    }
    let rig = Rig::new(RigConfig::nodes(2));
    // ucarp alone becomes MASTER after ~1 s (deadratio 1) and sends adverts every second.
    let _u = rig.spawn_ucarp(
        1,
        &UcarpOpts::new(11, "xdp", VIP)
            .advskew(0)
            .deadratio(1)
            .preempt(true),
    );
    let mut agent = rig.spawn_agent(
        0,
        &AgentOpts::new(11, "xdp", "10.99.0.100/24")
            .advskew(100)
            .xdp(mode),
    );
    let s = agent.wait_ready(Duration::from_secs(10));
    assert_eq!(s.xdp, mode, "agent reports XDP mode {:?}: {s:?}", s.xdp);
    assert_eq!(
        kernel_xdp_mode(&rig, 0),
        Some(kernel_word),
        "kernel does not show an XDP program in {mode} mode on eth0"
    );
    let (seen, _) = wait_for(Duration::from_secs(10), "xdp carp_seen >= 2", || {
        let s = agent.status().ok()?;
        let n = *s.xdp_counters.get("carp_seen")?;
        (n >= 2).then_some(n)
    });
    wait_until(Duration::from_secs(3), "carp_seen keeps growing", || {
        agent
            .status()
            .is_ok_and(|s| s.xdp_counters.get("carp_seen").is_some_and(|&n| n > seen))
    });
    let ucarp_addr = rig.addr(1).to_string();
    wait_until(Duration::from_secs(5), "agent BACKUP of ucarp", || {
        agent
            .status()
            .is_ok_and(|s| s.is_backup() && s.master.as_deref() == Some(&ucarp_addr))
    });
    let s = agent.status_now();
    assert!(s.counters.adverts_received >= 2, "{s:?}");
    assert!(!rig.node_has_addr(0, VIP), "BACKUP holds the VIP");

    agent.proc.terminate();
    let st = agent.proc.wait_exit(Duration::from_secs(5));
    assert!(st.success(), "agent exit on SIGTERM: {st}");
    assert_eq!(
        kernel_xdp_mode(&rig, 0),
        None,
        "XDP program left attached after exit"
    );
}

#[test]
fn xdp_native_sees_ucarp_adverts() {
    xdp_smoke("native", "xdp");
}

#[test]
fn xdp_generic_sees_ucarp_adverts() {
    xdp_smoke("generic", "xdpgeneric");
}
