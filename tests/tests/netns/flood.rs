//! Hostile input from a third node on the segment: malformed, misrouted, foreign and forged
//! protocol-112 frames are each counted under their reason and change nothing in the election;
//! a flood of forged adverts neither makes a backup lose track of the real master nor costs it
//! much CPU.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tests::{Agent, AgentOpts, Rig, RigConfig, Status, Timed, netns_test, wait_until};

const VHID: u8 = 23;
const PASS: &str = "fl00d";
const VIP24: &str = "10.99.0.100/24";
/// Sources of forged adverts: on the segment's subnet, used by no node.
const FORGED_SRC: &str = "10.99.0.77";
const MANY_SRC: &str = "10.99.10.0";
const INJECTOR: usize = 2;

/// The injector binary of this package.
fn injector() -> &'static str {
    env!("CARGO_BIN_EXE_carp-inject")
}

/// Runs the injector in node `node` to completion; returns how many frames it sent.
fn inject(rig: &Rig, node: usize, kind: &str, extra: &[&str]) -> Result<u64> {
    let vhid = VHID.to_string();
    let mut argv = vec!["--kind", kind, "--vhid", &vhid];
    argv.extend_from_slice(extra);
    let mut c = tests::cmd::netns_command(rig.ns(node), injector(), &argv);
    let out = tests::cmd::output_within(&mut c, Duration::from_secs(60))?;
    ensure!(
        out.status.success(),
        "injector {argv:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    sent_of(&String::from_utf8_lossy(&out.stdout))
}

/// The `sent` field of the injector's JSON report.
fn sent_of(stdout: &str) -> Result<u64> {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["sent"].as_u64())
        .with_context(|| format!("no injector report in {stdout:?}"))
}

fn xc(s: &Status, name: &str) -> u64 {
    s.xdp_counters.get(name).copied().unwrap_or(0)
}

/// Counter deltas between two statuses: XDP counters by name, agent counters as `agent.*`.
fn deltas(a: &Status, b: &Status) -> BTreeMap<String, u64> {
    let mut d: BTreeMap<String, u64> = b
        .xdp_counters
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(xc(a, k))))
        .collect();
    let (ca, cb) = (&a.counters, &b.counters);
    for (k, x, y) in [
        ("agent.auth_failures", ca.auth_failures, cb.auth_failures),
        ("agent.bad_packets", ca.bad_packets, cb.bad_packets),
        (
            "agent.adverts_received",
            ca.adverts_received,
            cb.adverts_received,
        ),
        ("agent.transitions", ca.transitions, cb.transitions),
    ] {
        d.insert(k.to_string(), y.saturating_sub(x));
    }
    d
}

/// Polls the status (bounded) until `done` holds for the deltas since `before`, and returns the
/// last deltas either way; the caller's assertions then say what is missing.
fn settle(
    agent: &Agent,
    before: &Status,
    done: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> Result<BTreeMap<String, u64>> {
    let start = Instant::now();
    let mut last = BTreeMap::new();
    for _ in 0..60 {
        last = deltas(before, &agent.status()?);
        if done(&last) || start.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(last)
}

fn get(d: &BTreeMap<String, u64>, k: &str) -> u64 {
    d.get(k).copied().unwrap_or(0)
}

/// `got` is `sent` up to the frames a busy veth may drop (1 %), and never more.
fn assert_about(what: &str, got: u64, sent: u64, d: &BTreeMap<String, u64>) {
    assert!(
        got <= sent && got * 100 >= sent * 99,
        "{what}: counted {got} of {sent} injected; all deltas: {d:?}"
    );
}

/// The rig, node0's MASTER agent, node1's BACKUP agent following it, and both agents' statuses
/// before the test (node2 is free for the injector).
type Cluster = (Rig, Agent, Agent, Status, Status);

/// A MASTER agent on node0 and a BACKUP agent with `backup_xdp` on node1 (see [`Cluster`]).
fn cluster(backup_xdp: &str) -> Result<Cluster> {
    cluster_with(
        AgentOpts::new(VHID, PASS, VIP24),
        AgentOpts::new(VHID, PASS, VIP24)
            .advskew(100)
            .xdp(backup_xdp),
    )
}

/// As [`cluster`], with node0's agent started from `master` (made preempting) and node1's from
/// `backup`. Each agent asked to run without XDP is checked to, and the backup asked for XDP
/// to run with it.
fn cluster_with(master: AgentOpts, backup: AgentOpts) -> Result<Cluster> {
    let rig = Rig::new(RigConfig::nodes(3))?;
    let master_off = master.xdp.as_deref() == Some("off");
    let master = rig.start_agent(0, &master.preempt(true))?;
    wait_until(Duration::from_secs(10), "node0 MASTER", || {
        master.is_master()
    })?;
    let backup_off = backup.xdp.as_deref() == Some("off");
    let backup = rig.start_agent(1, &backup)?;
    let node0 = rig.addr(0).to_string();
    wait_until(Duration::from_secs(5), "node1 BACKUP of node0", || {
        backup.status().is_ok_and(|s| {
            s.is_backup()
                && s.master.as_deref() == Some(node0.as_str())
                && s.counters.adverts_received >= 1
        })
    })?;
    let (m0, b0) = (master.status()?, backup.status()?);
    if master_off {
        ensure!(m0.xdp == "off", "node0 runs with XDP: {m0:?}");
    }
    ensure!(
        (b0.xdp == "off") == backup_off,
        "node1 runs with XDP {:?}, asked for off: {backup_off}: {b0:?}",
        b0.xdp
    );
    Ok((rig, master, backup, m0, b0))
}

/// After the injections: both agents alive, in their roles, the backup still hearing node0, and
/// no transition counted by either since `m0`/`b0`.
fn assert_undisturbed(
    rig: &Rig,
    master: &mut Agent,
    backup: &mut Agent,
    m0: &Status,
    b0: &Status,
) -> Result<()> {
    assert!(master.proc.is_running(), "the MASTER agent died");
    assert!(backup.proc.is_running(), "the BACKUP agent died");
    let m = master.status()?;
    let b = backup.status()?;
    assert!(m.is_master(), "node0 left MASTER: {m:?}");
    assert_eq!(
        m.counters.transitions, m0.counters.transitions,
        "node0 changed state during the injection: {m:?}"
    );
    assert!(b.is_backup(), "node1 left BACKUP: {b:?}");
    assert_eq!(
        b.counters.transitions, b0.counters.transitions,
        "node1 changed state during the injection: {b:?}"
    );
    assert_eq!(b.master.as_deref(), Some(rig.addr(0).to_string().as_str()));
    let down = backup.opts.master_down();
    assert!(
        b.since_last_advert_ms
            .is_some_and(|ms| u128::from(ms) < down.as_millis()),
        "node1 has not heard node0 recently: {b:?}"
    );
    assert!(
        b.counters.adverts_received > b0.counters.adverts_received,
        "node1 stopped receiving node0's adverts: {b:?}"
    );
    assert!(!rig.node_has_addr(1, "10.99.0.100".parse::<std::net::Ipv4Addr>()?)?);
    Ok(())
}

/// The reasons XDP counts for a rejected advert (a frame that fails one check bumps exactly one
/// of them).
const REASONS: [&str; 8] = [
    "carp_malformed",
    "bad_ttl",
    "bad_version",
    "unknown_vhid",
    "wrong_group",
    "replayed",
    "auth_failed",
    "ringbuf_full",
];

/// With XDP, each kind of bad frame is counted in the kernel under its own reason and never
/// reaches the agent, forged adverts included: they fail authentication in XDP.
#[test]
fn bad_input_is_counted_by_reason_in_xdp() -> Result<()> {
    netns_test(|| {
        let (rig, mut master, mut backup, m0, b0) = cluster("auto")?;
        let paced = ["--count", "2000", "--rate", "5000", "--src", FORGED_SRC];

        for (kind, reason) in [
            ("truncated", "carp_malformed"),
            ("garbage", "bad_version"),
            ("bad-ttl", "bad_ttl"),
            ("unknown-vhid", "unknown_vhid"),
        ] {
            let before = backup.status()?;
            let sent = inject(&rig, INJECTOR, kind, &paced)?;
            assert_eq!(sent, 2000, "{kind}: injector sent {sent}");
            let d = settle(&backup, &before, |d| get(d, reason) >= sent)?;
            assert_about(&format!("{kind} under {reason}"), get(&d, reason), sent, &d);
            for other in REASONS.iter().filter(|r| **r != reason) {
                assert_eq!(
                    get(&d, other),
                    0,
                    "{kind} also counted under {other}: {d:?}"
                );
            }
            assert_eq!(get(&d, "agent.auth_failures"), 0, "{kind}: {d:?}");
            assert_eq!(get(&d, "agent.bad_packets"), 0, "{kind}: {d:?}");
        }

        // Forged adverts, from one source or from 100, all fail authentication in XDP; only the
        // master's genuine adverts reach the agent.
        for (what, src, sources) in [
            ("one source", FORGED_SRC, "1"),
            ("100 sources", MANY_SRC, "100"),
        ] {
            let before = backup.status()?;
            let args = [
                "--count",
                "2000",
                "--rate",
                "5000",
                "--src",
                src,
                "--sources",
                sources,
            ];
            let sent = inject(&rig, INJECTOR, "forged", &args)?;
            assert_eq!(sent, 2000, "{what}: injector sent {sent}");
            let d = settle(&backup, &before, |d| {
                get(d, "auth_failed") >= sent
                    && get(d, "advert") == get(d, "agent.adverts_received")
            })?;
            assert_about(
                &format!("forged adverts from {what} under auth_failed"),
                get(&d, "auth_failed"),
                sent,
                &d,
            );
            for other in REASONS.iter().filter(|r| **r != "auth_failed") {
                assert_eq!(get(&d, other), 0, "{what}: counted under {other}: {d:?}");
            }
            assert_eq!(
                get(&d, "advert"),
                get(&d, "agent.adverts_received"),
                "{what}: every advert XDP passed is a genuine one the agent accepted: {d:?}"
            );
            assert_eq!(get(&d, "agent.auth_failures"), 0, "{what}: {d:?}");
            assert_eq!(get(&d, "agent.bad_packets"), 0, "{what}: {d:?}");
        }

        assert_undisturbed(&rig, &mut master, &mut backup, &m0, &b0)
    })
}

/// Without XDP the agent sees every frame on its raw socket: malformed, misrouted and
/// wrong-version frames count as bad packets, other vhids are ignored, forged adverts count as
/// authentication failures, every one of them.
#[test]
fn bad_input_is_counted_by_the_agent_without_xdp() -> Result<()> {
    netns_test(|| {
        let (rig, mut master, mut backup, m0, b0) = cluster("off")?;
        assert!(b0.xdp_counters.is_empty(), "{b0:?}");
        let paced = ["--count", "1000", "--rate", "2000", "--src", FORGED_SRC];

        for (kind, counter) in [
            ("truncated", Some("agent.bad_packets")),
            ("garbage", Some("agent.bad_packets")),
            ("bad-ttl", Some("agent.bad_packets")),
            ("unknown-vhid", None),
            ("forged", Some("agent.auth_failures")),
        ] {
            let before = backup.status()?;
            let sent = inject(&rig, INJECTOR, kind, &paced)?;
            assert_eq!(sent, 1000, "{kind}: injector sent {sent}");
            let d = settle(&backup, &before, |d| {
                counter.is_some_and(|c| get(d, c) >= sent)
            })?;
            for c in ["agent.bad_packets", "agent.auth_failures"] {
                if Some(c) == counter {
                    assert_about(&format!("{kind} under {c}"), get(&d, c), sent, &d);
                } else {
                    assert_eq!(get(&d, c), 0, "{kind} counted under {c}: {d:?}");
                }
            }
        }
        assert_undisturbed(&rig, &mut master, &mut backup, &m0, &b0)
    })
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').context("stat has a command name")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100)
}

/// Starts a flood of forged adverts from node2: `rate` a second (0: as fast as it can send) for
/// `ms`, from `sources` (injector arguments).
fn spawn_flood(rig: &Rig, rate: u64, ms: u64, sources: &[&str]) -> Result<tests::Proc> {
    let vhid = VHID.to_string();
    let (rate_s, ms_s) = (rate.to_string(), ms.to_string());
    let mut argv = vec![
        injector(),
        "--kind",
        "forged",
        "--vhid",
        &vhid,
        "--rate",
        &rate_s,
        "--duration-ms",
        &ms_s,
    ];
    argv.extend_from_slice(sources);
    rig.spawn(INJECTOR, "inject", &argv)
}

/// One flood from node2 while node1 is watched: returns (frames sent, CPU % of a core used by
/// node1's agent over the flood, longest silence from node0 seen).
fn flood(
    rig: &Rig,
    backup: &Agent,
    rate: u64,
    ms: u64,
    sources: &[&str],
) -> Result<(u64, f64, u64)> {
    let node0 = rig.addr(0).to_string();
    let down = backup.opts.master_down();
    let pid = backup.proc.pid();
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid)?;
    let mut inj = spawn_flood(rig, rate, ms, sources)?;
    let mut worst = 0;
    let limit = Duration::from_millis(ms) + Duration::from_secs(10);
    // Watch the backup while the injector runs (a status every ~100 ms, bounded).
    for _ in 0..limit.as_millis() / 100 + 2 {
        if !inj.is_running() || t0.elapsed() > limit {
            break;
        }
        let s = backup.status()?;
        assert!(
            s.is_backup() && s.master.as_deref() == Some(node0.as_str()),
            "node1 lost track of node0 {:?} into the flood: {s:?}",
            t0.elapsed()
        );
        let silent = s.since_last_advert_ms.unwrap_or(u64::MAX);
        worst = worst.max(silent);
        assert!(
            u128::from(silent) < down.as_millis(),
            "node1 has not heard node0 for {silent} ms (master-down {down:?}): {s:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = inj.wait_exit(Duration::from_secs(5))?;
    let (c1, wall) = (cpu_ticks(pid)?, t0.elapsed());
    assert!(st.success(), "injector failed: {}", inj.log());
    let sent = sent_of(&inj.log())?;
    let cpu = (c1 - c0) as f64 / ticks_per_second() as f64 / wall.as_secs_f64() * 100.0;
    Ok((sent, cpu, worst))
}

/// Flood rate and length of the flood tests.
const FLOOD_RATE: u64 = 20_000;
const FLOOD_MS: u64 = 5_000;

/// A forged-advert flood from one source (20 000 frames/s for 5 s) fails authentication in XDP:
/// the backup keeps following the real master and its agent stays nearly idle.
#[test]
fn forged_flood_from_one_source_is_cheap_and_harmless() -> Result<()> {
    netns_test(|| {
        let (rig, mut master, mut backup, m0, b0) = cluster("auto")?;
        let (sent, cpu, worst) =
            flood(&rig, &backup, FLOOD_RATE, FLOOD_MS, &["--src", FORGED_SRC])?;
        let d = deltas(&b0, &backup.status()?);
        eprintln!(
            "one source: sent {sent}, agent CPU {cpu:.1} %, longest silence {worst} ms, {d:?}"
        );
        assert!(
            sent >= FLOOD_RATE * FLOOD_MS / 1000 / 2,
            "the injector sent only {sent} frames"
        );
        assert!(
            cpu < 20.0,
            "the agent used {cpu:.1} % of a core during the flood"
        );
        assert!(get(&d, "auth_failed") * 10 >= sent * 9, "{d:?}");
        assert_eq!(get(&d, "agent.auth_failures"), 0, "{d:?}");
        assert_undisturbed(&rig, &mut master, &mut backup, &m0, &b0)
    })
}

/// The same flood from 5000 spoofed sources: authentication does not care where a forgery comes
/// from, so the backup still follows the real master and its agent stays nearly idle.
#[test]
fn forged_flood_from_many_sources_keeps_the_backup_following_the_master() -> Result<()> {
    netns_test(|| {
        let (rig, mut master, mut backup, m0, b0) = cluster("auto")?;
        let (sent, cpu, worst) = flood(
            &rig,
            &backup,
            FLOOD_RATE,
            FLOOD_MS,
            &["--src", "10.99.64.0", "--sources", "5000"],
        )?;
        let d = deltas(&b0, &backup.status()?);
        eprintln!(
            "5000 sources: sent {sent}, agent CPU {cpu:.1} %, longest silence {worst} ms, {d:?}"
        );
        assert!(
            sent >= FLOOD_RATE * FLOOD_MS / 1000 / 2,
            "the injector sent only {sent} frames"
        );
        assert!(get(&d, "auth_failed") * 10 >= sent * 9, "{d:?}");
        assert_eq!(get(&d, "agent.auth_failures"), 0, "{d:?}");
        assert_undisturbed(&rig, &mut master, &mut backup, &m0, &b0)?;
        assert!(
            cpu < 20.0,
            "the agent used {cpu:.1} % of a core during the flood"
        );
        Ok(())
    })
}

/// Without XDP every frame reaches the agent's socket, and a flood the agent does not keep up
/// with overflows it: the kernel drops the master's adverts with the junk. Here the backup is
/// stopped three times, each for longer than its master-down time, while a forged flood at full
/// speed fills its socket, and runs for a moment in between. A silence measured across such
/// drops is not the master's: the backup counts the drops and takes nothing over (without the
/// rule, its second late wake found its one grace spent and took over from a live master).
#[test]
fn a_backup_whose_socket_overflows_in_a_flood_does_not_take_over() -> Result<()> {
    netns_test(|| {
        let (rig, mut master, mut backup, m0, b0) = cluster("off")?;
        let down = backup.opts.master_down();
        let stop = down + Duration::from_secs(1);
        let length = (stop + Duration::from_millis(100)) * 3 + Duration::from_secs(2);
        let length = u64::try_from(length.as_millis())?;
        let mut inj = spawn_flood(&rig, 0, length, &["--src", FORGED_SRC])?;
        wait_until(
            Duration::from_secs(5),
            "the flood reaches node1's agent",
            || {
                backup
                    .status()
                    .is_ok_and(|s| s.counters.auth_failures > b0.counters.auth_failures + 1000)
            },
        )?;
        for _ in 0..3 {
            backup.freeze()?;
            std::thread::sleep(stop);
            backup.thaw()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        let st = inj.wait_exit(Duration::from_secs(30))?;
        assert!(st.success(), "injector failed: {}", inj.log());
        let node0 = rig.addr(0).to_string();
        let heard = backup.status()?.counters.adverts_received;
        wait_until(down, "node1 hears node0 again after the flood", || {
            backup.status().is_ok_and(|s| {
                s.master.as_deref() == Some(node0.as_str()) && s.counters.adverts_received > heard
            })
        })?;
        let b = backup.status()?;
        eprintln!(
            "socket drops {}, auth failures {}",
            b.counters.socket_drops,
            b.counters.auth_failures - b0.counters.auth_failures
        );
        assert!(
            b.counters.socket_drops > 0,
            "the flood never overflowed node1's socket, so this tested nothing: {b:?}"
        );
        assert_undisturbed(&rig, &mut master, &mut backup, &m0, &b0)
    })
}

/// A MASTER without XDP reads every forged frame of a flood it cannot keep up with, so its
/// socket is never empty: its advert timer must still fire (it was starved once: the loop
/// always found the socket ready first, the master stopped advertising, and its backup, with
/// XDP, took over from a live master). The backup follows node0 throughout.
#[test]
fn a_master_without_xdp_keeps_advertising_through_a_flood() -> Result<()> {
    netns_test(|| {
        let (rig, mut master, mut backup, m0, b0) = cluster_with(
            AgentOpts::new(VHID, PASS, VIP24).xdp("off"),
            AgentOpts::new(VHID, PASS, VIP24).advskew(100).xdp("auto"),
        )?;
        let (sent, _, worst) = flood(&rig, &backup, 0, FLOOD_MS, &["--src", FORGED_SRC])?;
        let m = master.status()?;
        eprintln!(
            "sent {sent}, master's socket drops {}, longest silence at the backup {worst} ms",
            m.counters.socket_drops
        );
        assert!(
            m.counters.socket_drops > 0,
            "the flood never overflowed node0's socket, so this tested nothing: {m:?}"
        );
        assert_undisturbed(&rig, &mut master, &mut backup, &m0, &b0)
    })
}

/// Fast mode, neither node with XDP: both agents read every frame of a full-speed flood from
/// random sources; node0 advertises every 3.9 ms and node1 takes over after 23 ms of silence.
/// Each agent must still act on its deadlines on time: the MASTER advertise, the BACKUP look at
/// its queue and count what its socket dropped. Tokio learned that the timer fired only when
/// it looked for events, which a task whose socket is never empty seldom lets it do: a
/// deadline came tens of milliseconds late, and a cluster in a long run swapped masters during
/// such a flood.
#[test]
fn fast_mode_without_xdp_keeps_its_master_through_a_flood() -> Result<()> {
    netns_test(|| {
        let fast = |skew| {
            AgentOpts::new(VHID, PASS, VIP24)
                .advbase(0)
                .advskew(skew)
                .xdp("off")
        };
        let (rig, mut master, mut backup, m0, b0) = cluster_with(fast(1), fast(2))?;
        let mut inj = spawn_flood(&rig, 0, FLOOD_MS, &["--src", "random"])?;
        let st = inj.wait_exit(Duration::from_millis(FLOOD_MS) + Duration::from_secs(30))?;
        assert!(st.success(), "injector failed: {}", inj.log());
        let (m, b) = (master.status()?, backup.status()?);
        eprintln!(
            "socket drops: node0 {}, node1 {}; forged adverts read: node0 {}, node1 {}",
            m.counters.socket_drops,
            b.counters.socket_drops,
            m.counters.auth_failures - m0.counters.auth_failures,
            b.counters.auth_failures - b0.counters.auth_failures,
        );
        assert!(
            b.counters.auth_failures > b0.counters.auth_failures + 1000,
            "the flood hardly reached node1's agent, so this tested nothing: {b:?}"
        );
        assert_undisturbed(&rig, &mut master, &mut backup, &m0, &b0)
    })
}
