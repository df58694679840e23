//! Unauthenticated traffic never changes who is master.
//!
//! A flood of forged adverts (right vhid, wrong HMAC), from random sources, from one source or
//! from the preferred node's own address, runs while the preferred node starts: it must take
//! over from the current master as it would on a quiet segment, and the two must never both
//! hold the VIP afterwards. With the XDP rate limits this replaced, the flood used up their
//! budgets, the two nodes never heard each other and both stayed MASTER for as long as it
//! lasted.
//!
//! Captured genuine adverts sent again at a high rate, from spoofed sources and with a better
//! skew or as bow-outs, authenticate (the HMAC covers neither) but are replays: they must
//! change nothing either.
//!
//! With XDP the floods run as fast as the injector goes (at least 1000 frames/s, checked), one
//! at a time within this file so each gets what the machine can give. On the raw-socket path
//! (`CLUSTER_TEST_XDP=off`) every frame is verified by the agent itself, and a flood faster than
//! that fills the socket's queue, which drops frames without regard to who sent them, genuine
//! adverts included: no code in the agent can change that, and it is what the kernel-side check
//! exists for. A debug build of the agent, sharing two cores with the injector, keeps up with
//! about 10 000 frames/s here, so that run floods at [`OFF_RATE`].

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tests::{AgentOpts, Proc, Rig, RigConfig, Status, Timed, netns_test, wait_until};

const VHID: u8 = 31;
const PASS: &str = "junk";
const VIP24: &str = "10.99.0.100/24";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const A: usize = 0;
const B: usize = 1;
const INJECTOR: usize = 2;
/// How long a flood may last; it is stopped as soon as the scenario has seen enough.
const FLOOD_LIMIT: Duration = Duration::from_secs(30);
/// What the protocol timers do not cover: starting a process, a status round trip, netlink,
/// all on a machine the flood keeps busy.
const SLACK: Duration = Duration::from_millis(1500);
/// The lowest flood rate that counts as a flood here.
const MIN_RATE: f64 = 1000.0;
/// Frames per second of the floods on the raw-socket path.
const OFF_RATE: u32 = 2000;

/// The injector's `--rate`: as fast as it goes (0) with XDP, [`OFF_RATE`] without.
fn flood_rate() -> String {
    let off = AgentOpts::new(VHID, PASS, VIP24).xdp.as_deref() == Some("off");
    if off {
        OFF_RATE.to_string()
    } else {
        "0".into()
    }
}

/// One flood at a time from this file: each runs the injector as fast as it goes, and two at
/// once would share the CPU and each reach less.
static FLOODS: Mutex<()> = Mutex::new(());

fn injector() -> &'static str {
    env!("CARGO_BIN_EXE_carp-inject")
}

/// Advert interval: `advbase + advskew / 256` seconds.
fn interval(o: &AgentOpts) -> Duration {
    let t = &o.timing;
    Duration::from_micros(u64::from(t.advbase) * 1_000_000 + u64::from(t.advskew) * 1_000_000 / 256)
}

/// The injector flooding from node2 as fast as it can, for at most [`FLOOD_LIMIT`].
struct Flood {
    proc: Proc,
}

impl Flood {
    fn start(rig: &Rig, name: &str, args: &[&str]) -> Result<Flood> {
        let vhid = VHID.to_string();
        let limit = FLOOD_LIMIT.as_millis().to_string();
        let rate = flood_rate();
        let mut argv = vec![
            injector(),
            "--vhid",
            &vhid,
            "--rate",
            &rate,
            "--duration-ms",
            &limit,
        ];
        argv.extend_from_slice(args);
        Ok(Flood {
            proc: rig.spawn(INJECTOR, name, &argv)?,
        })
    }

    fn check_running(&mut self) -> Result<()> {
        ensure!(
            self.proc.is_running(),
            "the flood ended early: {}",
            self.proc.log()
        );
        Ok(())
    }

    /// Stops the flood (the injector ends its run on SIGINT and reports) and returns the rate
    /// it reached, which must be a flood's.
    fn stop(mut self) -> Result<f64> {
        self.check_running()?;
        self.proc.signal(libc::SIGINT)?;
        let st = self.proc.wait_exit(Duration::from_secs(5))?;
        ensure!(
            st.success(),
            "the injector failed ({st}): {}",
            self.proc.log()
        );
        let log = self.proc.log();
        let report: serde_json::Value = log
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .with_context(|| format!("no injector report in {log:?}"))?;
        let rate = report["rate"].as_f64().unwrap_or(0.0);
        eprintln!(
            "flood: {} {} frames, {rate:.0}/s",
            report["sent"], report["kind"]
        );
        ensure!(
            rate >= MIN_RATE,
            "the injector reached only {rate:.0} frames/s: {report}"
        );
        Ok(rate)
    }
}

/// Frames the node's data plane rejected as `xdp_reason` (with XDP) or the agent counted
/// under `agent` (without), as a total to compare across two statuses.
fn rejected(s: &Status, xdp_reason: &str, agent: fn(&Status) -> u64) -> u64 {
    if s.xdp == "off" {
        agent(s)
    } else {
        s.xdp_counters.get(xdp_reason).copied().unwrap_or(0)
    }
}

fn auth_failures(s: &Status) -> u64 {
    rejected(s, "auth_failed", |s| s.counters.auth_failures)
}

fn replays(s: &Status) -> u64 {
    rejected(s, "replayed", |s| s.counters.replayed)
}

/// Adverts for the vhid that reached the node's data plane, whatever became of them: proof a
/// flood arrives, before anything is asserted about how it is handled.
fn seen(s: &Status) -> u64 {
    rejected(s, "carp_seen", |s| {
        s.counters.auth_failures + s.counters.replayed + s.counters.adverts_received
    })
}

fn ip(rig: &Rig, node: usize) -> String {
    rig.addr(node).to_string()
}

/// A is MASTER (advskew 100) holding the VIP; B (advskew 0, preempt) is started while forged
/// adverts from `sources` flood the segment, and must take over within the protocol's time.
fn preferred_node_takes_over_during_a_forged_flood(
    sources: impl FnOnce(&Rig) -> Vec<String>,
) -> Result<()> {
    netns_test(|| {
        let _one_flood = FLOODS.lock().unwrap_or_else(|e| e.into_inner());
        let rig = Rig::new(RigConfig::nodes(3))?;
        let a_opts = AgentOpts::new(VHID, PASS, VIP24).advskew(100);
        let b_opts = AgentOpts::new(VHID, PASS, VIP24).advskew(0).preempt(true);
        let a = rig.start_agent(A, &a_opts)?;
        wait_until(
            a_opts.timing.master_down() + SLACK,
            "A MASTER, holding the VIP",
            || Ok(a.is_master() && rig.holders(VIP, &[A, B])? == [A]),
        )?;
        let a0 = a.status()?;

        let sources = sources(&rig);
        let mut args = vec!["--kind", "forged"];
        args.extend(sources.iter().map(String::as_str));
        let mut flood = Flood::start(&rig, "forged-flood", &args)?;
        wait_until(SLACK, "the flood reaches A", || {
            flood.check_running()?;
            Ok(seen(&a.status()?) >= seen(&a0) + 1000)
        })?;

        let b = rig.start_agent(B, &b_opts)?;
        let b_started = Instant::now();
        let b0 = b.status()?;
        // B hears A's next advert (within A's interval) and preempts; if it heard nothing it
        // would still become MASTER when its master-down timer ran out, which is why A's step
        // down, on B's first advert, is what shows the two hear each other.
        wait_until(b_opts.timing.master_down() + SLACK, "B MASTER", || {
            flood.check_running()?;
            Ok(b.is_master())
        })?;
        wait_until(interval(&b_opts) + SLACK, "A BACKUP behind B", || {
            flood.check_running()?;
            let (sa, sb) = (a.status()?, b.status()?);
            Ok(sa.is_backup()
                && sa.master.as_deref() == Some(ip(&rig, B).as_str())
                && sb.is_master())
        })?;
        let took = b_started.elapsed();
        wait_until(SLACK, "the VIP on B only", || {
            Ok(rig.holders(VIP, &[A, B])? == [B])
        })?;

        // From the completed takeover on, for a while longer than A's master-down time (so A
        // would have taken over again had it stopped hearing B), the flood changes nothing.
        let watch = a_opts.timing.master_down() + interval(&b_opts);
        assert_roles_hold(&rig, &mut flood, watch, || {
            let (sa, sb) = (a.status()?, b.status()?);
            check_roles(&rig, &sa, &sb, B)
        })?;
        let (a1, b1) = (a.status()?, b.status()?);
        let rate = flood.stop()?;
        eprintln!(
            "takeover completed {took:?} after B answered; A rejected {} forged adverts",
            auth_failures(&a1) - auth_failures(&a0)
        );
        ensure!(
            a1.counters.transitions == a0.counters.transitions + 1,
            "A changed state more than once: {a1:?}"
        );
        ensure!(
            b1.counters.transitions == b0.counters.transitions + 1,
            "B changed state more than once: {b1:?}"
        );
        let forged = (auth_failures(&a1) - auth_failures(&a0)) as f64;
        ensure!(
            forged >= 1000.0,
            "A saw only {forged} forged adverts (flood at {rate:.0}/s)"
        );
        Ok(())
    })
}

/// Both roles as they should be, and the VIP on `master` only; `Err` says what is wrong.
fn check_roles(rig: &Rig, a: &Status, b: &Status, master: usize) -> Result<()> {
    let (m, s) = if master == A { (a, b) } else { (b, a) };
    let backup = if master == A { B } else { A };
    ensure!(m.is_master(), "node{master} left MASTER: {m:?}");
    ensure!(
        s.is_backup() && s.master.as_deref() == Some(ip(rig, master).as_str()),
        "node{backup} is not a BACKUP of node{master}: {s:?}"
    );
    let holders = rig.holders(VIP, &[A, B])?;
    ensure!(
        holders == [master],
        "the VIP is on {holders:?}, not on node{master} alone"
    );
    Ok(())
}

/// Samples `check` until `watch` has passed, the flood running throughout; fails at the first
/// sample that is wrong.
fn assert_roles_hold(
    rig: &Rig,
    flood: &mut Flood,
    watch: Duration,
    mut check: impl FnMut() -> Result<()>,
) -> Result<()> {
    let start = Instant::now();
    let mut samples = 0u32;
    // A sample takes at least a few milliseconds (two status calls, two `ip` calls): bounded.
    for _ in 0..watch.as_millis() / 5 + 2 {
        flood.check_running()?;
        if let Err(what) = check() {
            bail!(
                "{:?} into the watch ({samples} good samples before): {what:#} (rig {})",
                start.elapsed(),
                rig.dir().display()
            );
        }
        samples += 1;
        if start.elapsed() >= watch {
            break;
        }
    }
    ensure!(samples >= 10, "only {samples} samples in {watch:?}");
    Ok(())
}

#[test]
fn forged_flood_from_random_sources_does_not_stop_a_takeover() -> Result<()> {
    preferred_node_takes_over_during_a_forged_flood(|_| vec!["--src".into(), "random".into()])
}

#[test]
fn forged_flood_from_one_source_does_not_stop_a_takeover() -> Result<()> {
    preferred_node_takes_over_during_a_forged_flood(|_| vec!["--src".into(), "10.99.0.77".into()])
}

#[test]
fn forged_flood_from_the_preferred_nodes_address_does_not_stop_a_takeover() -> Result<()> {
    preferred_node_takes_over_during_a_forged_flood(|rig| vec!["--src".into(), ip(rig, B)])
}

/// A is MASTER (advskew 100), B BACKUP (advskew 200, no preempt). A's adverts, captured on the
/// segment, are sent again as fast as possible from spoofed sources: first with advskew 0 (any
/// master that believed them would step down for a better one), then as bow-outs (any backup
/// that believed them would take over at once). Neither node may change state.
#[test]
fn replayed_adverts_change_nothing() -> Result<()> {
    netns_test(|| {
        let _one_flood = FLOODS.lock().unwrap_or_else(|e| e.into_inner());
        let rig = Rig::new(RigConfig::nodes(3))?;
        let a_opts = AgentOpts::new(VHID, PASS, VIP24).advskew(100);
        let b_opts = AgentOpts::new(VHID, PASS, VIP24).advskew(200);
        let a = rig.start_agent(A, &a_opts)?;
        wait_until(a_opts.timing.master_down() + SLACK, "A MASTER", || {
            a.is_master()
        })?;
        let b = rig.start_agent(B, &b_opts)?;
        wait_until(interval(&a_opts) + SLACK, "B BACKUP of A", || {
            b.status().is_ok_and(|s| {
                s.is_backup()
                    && s.master.as_deref() == Some(ip(&rig, A).as_str())
                    && s.counters.adverts_received >= 1
            })
        })?;

        // Capture a few of A's adverts on the injector's node, and make sure B accepted them
        // all: they are replays for B (and for A, which sent them) from then on.
        const CAPTURED: u64 = 3;
        let capture = rig.capture(INJECTOR, "genuine")?;
        let received0 = b.status()?.counters.adverts_received;
        wait_until(
            interval(&a_opts) * (CAPTURED as u32 + 1) + SLACK,
            "A's adverts captured",
            || capture.frames().len() as u64 >= CAPTURED,
        )?;
        let pcap = capture.stop()?;
        let captured = tests::read_pcap(&pcap)?;
        ensure!(
            captured
                .iter()
                .all(|f| f.len() >= 34 && f[26..30] == rig.addr(A).octets()),
            "something other than A advertised"
        );
        wait_until(
            interval(&a_opts) * 2 + SLACK,
            "B accepted every captured advert",
            || Ok(b.status()?.counters.adverts_received >= received0 + captured.len() as u64),
        )?;
        let (a0, b0) = (a.status()?, b.status()?);
        check_roles(&rig, &a0, &b0, A)?;

        let pcap = pcap.to_string_lossy().into_owned();
        let phases: [(&str, &[&str]); 2] = [
            // From B's address and 249 more (A's is not among them), with the best skew.
            (
                "better skew",
                &[
                    "--src",
                    "10.99.0.2",
                    "--sources",
                    "250",
                    "--advbase",
                    "1",
                    "--advskew",
                    "0",
                ],
            ),
            (
                "bow-out",
                &["--src", "random", "--advbase", "255", "--advskew", "255"],
            ),
        ];
        for (what, timing) in phases {
            let (sa, sb) = (a.status()?, b.status()?);
            let mut args = vec!["--replay", pcap.as_str()];
            args.extend_from_slice(timing);
            let mut flood =
                Flood::start(&rig, &format!("replay-{}", what.replace(' ', "-")), &args)?;
            wait_until(SLACK, "the replays reach both nodes", || {
                flood.check_running()?;
                Ok(
                    seen(&a.status()?) >= seen(&sa) + 1000
                        && seen(&b.status()?) >= seen(&sb) + 1000,
                )
            })?;
            // Longer than B's master-down time: B must keep hearing A, and nothing else.
            assert_roles_hold(
                &rig,
                &mut flood,
                b_opts.timing.master_down() + SLACK,
                || {
                    let (sa, sb) = (a.status()?, b.status()?);
                    check_roles(&rig, &sa, &sb, A)?;
                    let silent = sb.since_last_advert_ms.unwrap_or(u64::MAX);
                    ensure!(
                        u128::from(silent) < b_opts.timing.master_down().as_millis(),
                        "B has not heard A for {silent} ms: {sb:?}"
                    );
                    Ok(())
                },
            )?;
            flood.stop()?;
            let (a1, b1) = (a.status()?, b.status()?);
            eprintln!(
                "{what} replays: A refused {}, B refused {}",
                replays(&a1) - replays(&sa),
                replays(&b1) - replays(&sb)
            );
            for (name, before, after) in [("A", &sa, &a1), ("B", &sb, &b1)] {
                ensure!(
                    after.counters.transitions == before.counters.transitions,
                    "{what}: {name} changed state: {after:?}"
                );
                ensure!(
                    replays(after) >= replays(before) + 1000,
                    "{what}: {name} refused too few replays: {after:?}"
                );
                ensure!(
                    auth_failures(after) == auth_failures(before),
                    "{what}: a replay failed authentication at {name}, so it was not a true replay"
                );
            }
        }
        check_roles(&rig, &a.status()?, &b.status()?, A)
    })
}
