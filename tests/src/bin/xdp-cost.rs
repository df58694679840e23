//! Per-packet cost of the agent's XDP program, measured in the kernel with BPF_PROG_TEST_RUN
//! on the real program and maps. Run it as root inside a throwaway namespace whose interface it
//! may attach to (`cargo xtask bench xdp` does); prints one JSON document on stdout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use cluster_agent::carp::wire;
use cluster_agent::xdp::{self, VhidSetup, XdpEvents, XdpHandle, XdpMode};
use tests::frames::{self, GROUP, Rng};

const VHID: u8 = 42;
/// Never configured: the vhid of the "another vhid" case.
const OTHER_VHID: u8 = 43;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
/// The IPv6 vhid of the IPv6 cases, configured for them in place of one of the others.
const VHID6: u8 = 44;
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0x100);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const OWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
const PASSWORD: &[u8] = b"c0st";
/// Records drained at a time: well within the ring buffer (256 KiB, 80-byte records).
const RING_RECORDS: u32 = 1000;

#[derive(Parser, Debug)]
struct Args {
    /// Interface to attach the program to (in the current namespace).
    #[arg(long, default_value = "eth0")]
    interface: String,
    /// Runs of the program per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Measurements per case.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Vhids configured (1-254), each with a VIP of its own; the frames concern vhid 42, and
    /// vhid 43 stays unconfigured for the "another vhid" case.
    #[arg(long, default_value_t = 1)]
    vhids: u8,
}

#[derive(serde::Serialize)]
struct Case {
    name: &'static str,
    /// Program runs per measurement.
    repeat: u32,
    /// Average ns per run, one per round.
    rounds_ns: Vec<u64>,
    /// The counter that moved most while the case ran: proof of the path measured.
    counter: String,
}

struct Bench {
    handle: XdpHandle,
    events: XdpEvents,
    rounds: usize,
}

impl Bench {
    fn drain(&mut self) -> Result<u64> {
        let mut n = 0;
        for _ in 0..1_000_000 {
            match self.events.try_next() {
                Some(r) => {
                    r.context("reading a ring-buffer record")?;
                    n += 1;
                }
                None => return Ok(n),
            }
        }
        bail!("the ring buffer did not drain")
    }

    fn counters(&self) -> Result<Vec<(&'static str, u64)>> {
        Ok(self.handle.counters()?)
    }

    /// `calls` measurements of `repeat` runs each, per round; the round's value is the mean.
    /// Each call runs the frame `frame` returns then.
    fn case(
        &mut self,
        name: &'static str,
        mut frame: impl FnMut() -> Vec<u8>,
        repeat: u32,
        calls: u32,
    ) -> Result<Case> {
        // One unmeasured call warms the caches (and puts an authentic advert into the replay
        // guard, which is what the replay case measures).
        self.handle.test_run_ns_per_packet(&frame(), repeat)?;
        self.drain()?;
        let before = self.counters()?;
        let mut rounds_ns = Vec::with_capacity(self.rounds);
        for _ in 0..self.rounds {
            let mut total = 0u64;
            for call in 1..=calls {
                total += self.handle.test_run_ns_per_packet(&frame(), repeat)?;
                // The ring buffer wakes its reader only for the first record it holds, so
                // draining after every record would time a reader wake-up per advert: a cost
                // real adverts, a few per second, never add up to. Drain before it fills.
                if u64::from(call) * u64::from(repeat) % u64::from(RING_RECORDS) == 0 {
                    self.drain()?;
                }
            }
            self.drain()?;
            rounds_ns.push(total / u64::from(calls.max(1)));
        }
        let after = self.counters()?;
        let counter = after
            .iter()
            .zip(&before)
            .filter(|((name, _), _)| *name != "carp_seen")
            .max_by_key(|((_, a), (_, b))| a.saturating_sub(*b))
            .map(|((name, _), _)| (*name).to_string())
            .unwrap_or_default();
        Ok(Case {
            name,
            repeat,
            rounds_ns,
            counter,
        })
    }
}

/// Configures vhid 42 (the one the frames concern) and `vhids - 1` others around it, each
/// with a VIP of its own, so the maps hold what an agent with that many vhids holds.
fn configure(handle: &mut XdpHandle, vhids: u8, master: bool) -> Result<()> {
    let others = (1..=255u8)
        .filter(|&v| v != VHID && v != OTHER_VHID)
        .take(usize::from(vhids.max(1)) - 1);
    for vhid in std::iter::once(VHID).chain(others) {
        let vip = if vhid == VHID {
            VIP
        } else {
            Ipv4Addr::new(10, 100, 0, vhid)
        };
        setup(handle, vhid, vip.into(), GROUP, master)?;
    }
    Ok(())
}

/// Makes vhid 44 an IPv6 vhid (taking it from the IPv4 ones if they hold it, so the number of
/// vhids stays the same).
fn configure6(handle: &mut XdpHandle, master: bool) -> Result<()> {
    handle.unconfigure(VHID6)?;
    setup(handle, VHID6, VIP6.into(), Ipv4Addr::UNSPECIFIED, master)
}

/// One vhid with one address, in the role given, answering ARP and solicitations itself.
fn setup(
    handle: &mut XdpHandle,
    vhid: u8,
    vip: IpAddr,
    group: Ipv4Addr,
    master: bool,
) -> Result<()> {
    // BPF_PROG_TEST_RUN hands the program its frames as received on the loopback device.
    let ifindex = cluster_agent::net::ifindex("lo").context("no loopback device")?;
    handle.configure(&VhidSetup {
        vhid,
        ifindex,
        password: PASSWORD,
        vips: &[vip],
        group,
        mac: OWN_MAC,
        fence: true,
    })?;
    handle.set_role(vhid, master)?;
    handle.set_arp_via_stack(vhid, false)?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.rounds >= 1 && args.repeat >= 1 && (1..=254).contains(&args.vhids),
        "rounds and repeat must be positive, vhids 1-254"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let _guard = runtime.enter();
    let mut handle = xdp::attach(&args.interface, XdpMode::Auto)
        .context("attaching the XDP program")?
        .context("no XDP program: build with `cargo xtask build` so the object is embedded")?;
    let mode = handle.mode();
    let events = handle.take_events()?;
    let mut bench = Bench {
        handle,
        events,
        rounds: args.rounds,
    };

    let mut rng = Rng::new(0x5eed);
    let mut md = [0u8; 20];
    rng.fill(&mut md);
    let authentic = |counter: u64| {
        let carp = wire::encode_carp(PASSWORD, &[VIP], VHID, 1, 0, counter);
        frames::carp_frame(PEER, GROUP, 255, 1, &carp)
    };
    // Counters no other case uses: a forged advert with an accepted counter is a replay.
    let forged_counter = rng.next_u64() | 1 << 63;
    let forged = frames::carp_frame(
        PEER,
        GROUP,
        255,
        1,
        &frames::carp_header(VHID, 1, 0, forged_counter, md),
    );
    let other_vhid = frames::carp_frame(
        PEER,
        GROUP,
        255,
        1,
        &frames::carp_header(OTHER_VHID, 1, 0, 7, md),
    );
    let arp = frames::arp_request(PEER_MAC, PEER, VIP);
    let udp = frames::udp_frame(OWN_MAC, PEER, Ipv4Addr::new(10, 99, 0, 2));
    let repeat = args.repeat;

    let mut cases = Vec::new();
    configure(&mut bench.handle, args.vhids, false)?;
    // An authentic advert is new only once (then it is a replay), so each call runs one fresh
    // advert once; the ordinary frame measured the same way below shows what that way of
    // measuring adds.
    let single = (repeat / 500).clamp(100, 5000);
    let mut counter = 1u64 << 40;
    cases.push(bench.case(
        "CARP advert, authentic, to the ring buffer (one run per call)",
        || {
            counter += 1;
            authentic(counter)
        },
        1,
        single,
    )?);
    cases.push(bench.case(
        "CARP advert, forged (wrong HMAC), dropped",
        || forged.clone(),
        repeat,
        1,
    )?);
    let replayed = authentic(u64::MAX);
    cases.push(bench.case(
        "CARP advert, replayed (counter already accepted), dropped",
        || replayed.clone(),
        repeat,
        1,
    )?);
    cases.push(bench.case(
        "CARP advert for another vhid (passed)",
        || other_vhid.clone(),
        repeat,
        1,
    )?);
    cases.push(bench.case(
        "ARP request for the VIP, BACKUP (dropped)",
        || arp.to_vec(),
        repeat,
        1,
    )?);
    cases.push(bench.case("ordinary IPv4/UDP (passed)", || udp.clone(), repeat, 1)?);
    // XDP_TX rewrites the frame in place and the test run does not restore it between
    // repetitions, so the reply is measured one run per call too.
    configure(&mut bench.handle, args.vhids, true)?;
    cases.push(bench.case(
        "ARP request for the VIP, MASTER (answered, XDP_TX)",
        || arp.to_vec(),
        1,
        single,
    )?);
    cases.push(bench.case(
        "ordinary IPv4/UDP, one run per call (reference)",
        || udp.clone(),
        1,
        single,
    )?);

    // The IPv6 paths: adverts over IPv6 and neighbour solicitations for an IPv6 VIP.
    configure6(&mut bench.handle, false)?;
    let authentic6 = |counter: u64| {
        let carp = wire::encode_carp(PASSWORD, &[VIP6], VHID6, 1, 0, counter);
        frames::carp6_frame(PEER_MAC, PEER6, wire::GROUP6, 255, &carp)
    };
    let forged6 = frames::carp6_frame(
        PEER_MAC,
        PEER6,
        wire::GROUP6,
        255,
        &frames::carp_header(VHID6, 1, 0, forged_counter, md),
    );
    let ns = frames::solicitation(PEER_MAC, PEER6, VIP6);
    cases.push(bench.case(
        "CARP advert over IPv6, authentic, to the ring buffer (one run per call)",
        || {
            counter += 1;
            authentic6(counter)
        },
        1,
        single,
    )?);
    cases.push(bench.case(
        "CARP advert over IPv6, forged (wrong HMAC), dropped",
        || forged6.clone(),
        repeat,
        1,
    )?);
    cases.push(bench.case(
        "neighbour solicitation for the IPv6 VIP, BACKUP (dropped)",
        || ns.clone(),
        repeat,
        1,
    )?);
    configure6(&mut bench.handle, true)?;
    cases.push(bench.case(
        "neighbour solicitation for the IPv6 VIP, MASTER (answered, XDP_TX)",
        || ns.clone(),
        1,
        single,
    )?);

    println!(
        "{}",
        serde_json::json!({ "attach_mode": mode, "repeat": repeat, "vhids": args.vhids, "cases": cases })
    );
    Ok(())
}
