//! Recording the adverts (IP protocol 112: CARP and VRRP alike) that cross one switch port.
//!
//! The watcher runs in the switch namespace on a node's bridge port, so it sees each advert at
//! the instant the switch hands it to that node, whatever the node runs (a pcap-based UCARP,
//! keepalived's raw socket, or the agent with or without XDP). Each advert becomes one line
//! `<mono_ns> <source-ip> <vhid> <skew-or-priority>` of the record file.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use ::tests::packet::PacketSocket;
use ::tests::wait::mono_ns;

/// Arguments of the hidden `advert-watch` subcommand.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// The interface to watch (a bridge port, in the switch namespace).
    #[arg(long)]
    pub interface: String,
    /// The record file (appended to).
    #[arg(long)]
    pub out: PathBuf,
    /// The watcher exits after this long whatever happens.
    #[arg(long, default_value_t = 3600)]
    pub max_seconds: u64,
}

/// Frames received at most per second of the watcher's lifetime (bounds its loop).
const MAX_FRAMES_PER_SECOND: u64 = 1_000_000;

/// Runs the watcher until `max_seconds` have passed (or it is killed).
pub fn watch(args: WatchArgs) -> Result<()> {
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    // A receive timeout lets the loop look at its deadline while the port is quiet.
    let socket = PacketSocket::receiver(&args.interface, Duration::from_millis(200))?;
    println!("ready: watching {}", args.interface);
    std::io::stdout().flush()?;
    let limit = Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut buf = vec![0u8; 2048];
    for _ in 0..args.max_seconds.saturating_mul(MAX_FRAMES_PER_SECOND) {
        if started.elapsed() > limit {
            break;
        }
        let Some(n) = socket.recv(&mut buf)? else {
            continue;
        };
        let t = mono_ns();
        if let Some(advert) = parse_frame(&buf[..n]) {
            writeln!(
                out,
                "{t} {} {} {}",
                advert.src, advert.vhid, advert.skew_or_prio
            )?;
        }
    }
    Ok(())
}

/// The fields of an advert that timing analysis needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub t_ns: u64,
    pub src: Ipv4Addr,
    pub vhid: u8,
    /// CARP advskew, or VRRP priority.
    pub skew_or_prio: u8,
}

/// An Ethernet frame carrying IPv4 protocol 112 with a version-2 (CARP, VRRPv2) or version-3
/// (VRRPv3) advertisement.
fn parse_frame(frame: &[u8]) -> Option<Advert> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 112 || ip.len() < ihl + 8 {
        return None;
    }
    let body = &ip[ihl..];
    matches!(body[0], 0x21 | 0x31).then(|| Advert {
        t_ns: 0,
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        vhid: body[1],
        skew_or_prio: body[2],
    })
}

/// Reads an advert record file as it grows.
pub struct AdvertLog {
    path: PathBuf,
    offset: u64,
    partial: String,
    pub adverts: Vec<Advert>,
}

impl AdvertLog {
    pub fn new(path: &Path) -> AdvertLog {
        AdvertLog {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
            adverts: Vec::new(),
        }
    }

    /// Reads what was appended since the last call.
    pub fn refresh(&mut self) -> Result<()> {
        let Some(text) = crate::scenario::read_from(&self.path, &mut self.offset)? else {
            return Ok(());
        };
        self.partial.push_str(&text);
        let Some(i) = self.partial.rfind('\n') else {
            return Ok(());
        };
        let rest = self.partial.split_off(i + 1);
        let lines = std::mem::replace(&mut self.partial, rest);
        self.adverts.extend(lines.lines().filter_map(parse_line));
        Ok(())
    }

    /// Adverts from `src` that crossed the port at or after `t_ns`.
    pub fn sent_by_since(&self, src: Ipv4Addr, t_ns: u64) -> impl Iterator<Item = &Advert> {
        self.adverts
            .iter()
            .filter(move |a| a.src == src && a.t_ns >= t_ns)
    }

    /// The last advert from `src` that crossed the port before `t_ns`.
    pub fn last_from_before(&self, src: Ipv4Addr, t_ns: u64) -> Option<&Advert> {
        self.adverts
            .iter()
            .filter(|a| a.src == src && a.t_ns < t_ns)
            .max_by_key(|a| a.t_ns)
    }
}

fn parse_line(line: &str) -> Option<Advert> {
    let mut w = line.split_whitespace();
    Some(Advert {
        t_ns: w.next()?.parse().ok()?,
        src: w.next()?.parse().ok()?,
        vhid: w.next()?.parse().ok()?,
        skew_or_prio: w.next()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_an_advert_frame() {
        // The CARP advert of the wire contract's golden vector (vhid 42, advskew 0).
        let hex = "01005e00001200005e00002a080045100038d4594000ff70bc750a630001e0000012\
                   212a00070001 6c79b4cbc228e9e06dfaf848c1378606271278a05651723f675e46c34d98";
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .collect::<String>()
            .as_bytes()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        let a = parse_frame(&bytes).expect("an advert");
        assert_eq!(a.src, Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!((a.vhid, a.skew_or_prio), (42, 0));
        let mut arp = bytes.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_frame(&arp), None);
    }

    #[test]
    fn parses_record_lines() {
        let a = parse_line("123 10.99.0.1 42 100").unwrap();
        assert_eq!(a.t_ns, 123);
        assert_eq!(a.skew_or_prio, 100);
        assert_eq!(parse_line("123 nonsense"), None);
    }
}
