//! An independent reading of CARP adverts, written from the wire contract alone, so that
//! captures of `ucarp` and of the agent can be checked without trusting the agent's own code.

use std::net::Ipv4Addr;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Multicast MAC of 224.0.0.18.
pub const CARP_MCAST_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
pub const CARP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

/// The fields of one advert frame, after every structural check passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub vhid: u8,
    pub advskew: u8,
    pub authlen: u8,
    pub demote: u8,
    pub advbase: u8,
    pub counter: u64,
    pub counter_bytes: [u8; 8],
    pub md: [u8; 20],
}

/// Sum of 16-bit big-endian words, folded; 0xffff over data that includes its checksum.
fn ones_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Parses an Ethernet frame carrying a CARP advert and checks everything that does not depend
/// on the password: Ethernet type, IPv4 header and its checksum, protocol 112, CARP version,
/// type and checksum. Returns a description of the first problem.
pub fn parse_frame(frame: &[u8]) -> Result<Advert, String> {
    if frame.len() < 14 + 56 {
        return Err(format!("frame of {} bytes is too short", frame.len()));
    }
    if frame[12..14] != [0x08, 0x00] {
        return Err(format!("ethertype {:02x?} is not IPv4", &frame[12..14]));
    }
    parse_packet(&frame[14..])
}

/// As [`parse_frame`], for the IPv4 packet alone.
pub fn parse_packet(ip: &[u8]) -> Result<Advert, String> {
    if ip.len() < 56 {
        return Err(format!("packet of {} bytes is too short", ip.len()));
    }
    if ip[0] != 0x45 {
        return Err(format!("IPv4 version/IHL byte {:#04x}, want 0x45", ip[0]));
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]);
    if total != 56 {
        return Err(format!("IPv4 total length {total}, want 56"));
    }
    if ones_sum(&ip[..20]) != 0xffff {
        return Err("IPv4 header checksum is wrong".into());
    }
    if ip[9] != 112 {
        return Err(format!("IP protocol {}, want 112", ip[9]));
    }
    let carp = &ip[20..56];
    if carp[0] != 0x21 {
        return Err(format!(
            "CARP version/type byte {:#04x}, want 0x21",
            carp[0]
        ));
    }
    if ones_sum(carp) != 0xffff {
        return Err("CARP checksum is wrong".into());
    }
    let mut counter_bytes = [0u8; 8];
    counter_bytes.copy_from_slice(&carp[8..16]);
    let mut md = [0u8; 20];
    md.copy_from_slice(&carp[16..36]);
    Ok(Advert {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        ttl: ip[8],
        vhid: carp[1],
        advskew: carp[2],
        authlen: carp[3],
        demote: carp[4],
        advbase: carp[5],
        counter: u64::from_be_bytes(counter_bytes),
        counter_bytes,
        md,
    })
}

/// HMAC-SHA1 as UCARP computes it: key = password, message = 2, 1, vhid, VIP, counter.
pub fn expected_md(password: &[u8], vhid: u8, vip: Ipv4Addr, counter_bytes: &[u8; 8]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(password).expect("any key length");
    mac.update(&[2, 1, vhid]);
    mac.update(&vip.octets());
    mac.update(counter_bytes);
    mac.finalize().into_bytes().into()
}

impl Advert {
    /// Whether the HMAC matches this password and VIP.
    pub fn authentic(&self, password: &[u8], vip: Ipv4Addr) -> bool {
        expected_md(password, self.vhid, vip, &self.counter_bytes) == self.md
    }

    /// UCARP's bow-out advert (advbase 255, advskew 255).
    pub fn is_bow_out(&self) -> bool {
        self.advbase == 255 && self.advskew == 255
    }
}

/// Hex string to bytes, ignoring whitespace.
pub fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| (b as char).to_digit(16).expect("hex digit") as u8)
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}
