//! Sends crafted protocol-112 frames out of one interface at a given rate, for a bounded time
//! and count, and prints how many it sent as one JSON line on stdout. With `--replay` it sends
//! captured adverts again instead, from the given sources and with the given timing.
//!
//! Run it inside a namespace (`ip netns exec <ns> carp-inject ...`): it writes whole Ethernet
//! frames to an AF_PACKET socket, so whatever it sends reaches that segment only.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use tests::frames::{self, GROUP, Kind, Rng, Spec};
use tests::packet::PacketSocket;

/// Longest run the injector agrees to, whatever it is asked.
const MAX_DURATION: Duration = Duration::from_secs(600);
/// Frames handed to the kernel per `sendmmsg` call.
const BATCH: usize = 64;

/// Set by SIGINT or SIGTERM: the run ends early, with its report, so a caller can stop a flood
/// once it has seen what it needed and still learn the rate reached.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Parser, Debug)]
#[command(about = "Inject crafted CARP/VRRP frames on an interface (bounded)")]
struct Args {
    /// Interface to send on.
    #[arg(long, default_value = "eth0")]
    interface: String,
    /// forged | garbage | truncated | bad-ttl | unknown-vhid | vrrp
    #[arg(long, value_parser = parse_kind, required_unless_present = "replay")]
    kind: Option<Kind>,
    /// Send the CARP adverts for --vhid in this pcap file again (cycling through them) instead
    /// of crafted frames: the source from --src, advbase and advskew changed only if given.
    #[arg(long, value_name = "PCAP", conflicts_with = "kind")]
    replay: Option<PathBuf>,
    /// The vhid (or VRRP vrid) under attack.
    #[arg(long)]
    vhid: u8,
    /// VRRP: the address the advert lists.
    #[arg(long, default_value = "10.99.0.100")]
    vip: Ipv4Addr,
    /// Destination group.
    #[arg(long, default_value_t = GROUP)]
    group: Ipv4Addr,
    /// Source address of the first frame, or "random" for a random 10.0.0.0/8 source per frame.
    #[arg(long, default_value = "10.99.0.250")]
    src: String,
    /// Number of consecutive source addresses to cycle through, starting at --src.
    #[arg(long, default_value_t = 1)]
    sources: u32,
    /// Frames per second; 0 sends as fast as the kernel takes them.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Stop after this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many milliseconds (at most 600 000).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// advbase of forged CARP adverts (also the VRRP advert interval); default 1.
    #[arg(long)]
    advbase: Option<u8>,
    /// advskew of forged CARP adverts; default 0.
    #[arg(long)]
    advskew: Option<u8>,
    /// Priority of forged VRRP adverts.
    #[arg(long, default_value_t = 150)]
    priority: u8,
    /// Seed of the random fields (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown kind {s:?} (one of {})", names.join(", "))
    })
}

enum Source {
    Cycle { first: u32, n: u32 },
    Random,
}

impl Source {
    fn pick(&self, i: u64, rng: &mut Rng) -> Ipv4Addr {
        match *self {
            Source::Cycle { first, n } => {
                Ipv4Addr::from(first.wrapping_add((i % u64::from(n)) as u32))
            }
            Source::Random => Ipv4Addr::from(0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff)),
        }
    }
}

/// The CARP adverts for `vhid` in a pcap file, as whole Ethernet frames.
fn captured_adverts(path: &std::path::Path, vhid: u8) -> Result<Vec<Vec<u8>>> {
    let adverts: Vec<Vec<u8>> = tests::read_pcap(path)
        .with_context(|| format!("reading {}", path.display()))?
        .into_iter()
        .filter(|f| {
            frames::replayed(f, Ipv4Addr::UNSPECIFIED, None, None).is_some() && f[35] == vhid
        })
        .collect();
    ensure!(
        !adverts.is_empty(),
        "{} holds no CARP advert for vhid {vhid}",
        path.display()
    );
    Ok(adverts)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.count.is_none() && args.duration_ms.is_none() {
        bail!("give --count or --duration-ms (or both): the injector never runs unbounded");
    }
    ensure!(args.sources >= 1, "--sources must be at least 1");
    ensure!(args.vhid >= 1, "--vhid must be 1-255");
    let duration = args
        .duration_ms
        .map_or(MAX_DURATION, Duration::from_millis)
        .min(MAX_DURATION);
    let count = args.count.unwrap_or(u64::MAX);
    let source = if args.src == "random" {
        Source::Random
    } else {
        let first: Ipv4Addr = args.src.parse().context("--src")?;
        Source::Cycle {
            first: u32::from(first),
            n: args.sources,
        }
    };
    let replay = match &args.replay {
        Some(path) => Some(captured_adverts(path, args.vhid)?),
        None => None,
    };
    let spec = Spec {
        kind: args.kind.unwrap_or(Kind::Forged),
        vhid: args.vhid,
        vip: args.vip,
        group: args.group,
        advbase: args.advbase.unwrap_or(1),
        advskew: args.advskew.unwrap_or(0),
        priority: args.priority,
    };
    let kind = if replay.is_some() {
        "replay"
    } else {
        spec.kind.name()
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    });
    let mut rng = Rng::new(seed);
    let socket = PacketSocket::sender(&args.interface)?;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, request_stop as *const () as libc::sighandler_t) };
    }

    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut busy: u64 = 0;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    // Every pass either sends at least one frame or waits at least 20 us, so this bounds the
    // loop well beyond any run the time limit allows.
    let max_passes = count.min(u64::MAX / 2) + duration.as_micros() as u64 / 20 + 1000;
    for _ in 0..max_passes {
        let elapsed = start.elapsed();
        if sent >= count || elapsed >= duration || STOP.load(Ordering::Relaxed) {
            break;
        }
        let due = if args.rate == 0 {
            u64::MAX
        } else {
            (u128::from(args.rate) * elapsed.as_nanos() / 1_000_000_000) as u64 + 1
        };
        let want = due.min(count).saturating_sub(sent).min(BATCH as u64) as usize;
        if want == 0 {
            // Ahead of schedule: wait for the next frame's slot (pacing, not a condition).
            let next = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
            std::thread::sleep(next.clamp(Duration::from_micros(20), Duration::from_millis(1)));
            continue;
        }
        batch.clear();
        for k in 0..want {
            let i = sent + k as u64;
            let src = source.pick(i, &mut rng);
            match &replay {
                Some(adverts) => {
                    let captured = &adverts[(i % adverts.len() as u64) as usize];
                    // Every stored advert passed this same rewrite when it was loaded.
                    if let Some(f) = frames::replayed(captured, src, args.advbase, args.advskew) {
                        batch.push(f);
                    }
                }
                None => batch.push(frames::build(&spec, src, &mut rng)),
            }
        }
        let n = socket.send_batch(&batch)?;
        if n == 0 {
            busy += 1;
            std::thread::sleep(Duration::from_micros(20));
        }
        sent += n as u64;
    }
    let elapsed = start.elapsed();
    let rate = sent as f64 / elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "carp-inject: sent {sent} {kind} frames in {:.3} s ({rate:.0}/s), kernel busy {busy} times",
        elapsed.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({
            "kind": kind,
            "sent": sent,
            "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
            "rate": rate,
            "busy": busy,
        })
    );
    Ok(())
}
