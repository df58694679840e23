//! Hostile and ordinary Ethernet frames for the flood tests and benchmarks: CARP adverts that
//! fail one receive check each, random protocol-112 payloads, VRRPv2 adverts, ARP requests
//! and plain UDP.
//!
//! Built here rather than with the agent's encoder so the injector binary needs nothing but this
//! crate; a unit test checks that a well-formed advert matches the agent's encoding byte for byte.

use std::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol number shared by CARP and VRRP.
pub const IPPROTO_CARP: u8 = 112;
/// The default CARP/VRRP group 224.0.0.18.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Length of a CARP header.
pub const CARP_LEN: usize = 36;
/// Ethernet + IPv4 + CARP.
pub const ADVERT_FRAME_LEN: usize = 14 + 20 + CARP_LEN;
/// Source MAC of injected frames: locally administered, so it never collides with a veth's.
pub const INJECT_MAC: [u8; 6] = [0x02, 0x1e, 0xc7, 0x00, 0x00, 0x01];

/// What the injector sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A structurally perfect advert for the vhid, with a random (wrong) HMAC.
    Forged,
    /// Protocol 112 with a random payload of 36-100 bytes whose version nibble is not 2.
    Garbage,
    /// A forged advert cut to 0-35 bytes of CARP header, the IPv4 length matching the cut.
    Truncated,
    /// A forged advert with a TTL other than 255 (as if routed).
    BadTtl,
    /// A forged advert for a vhid other than the configured one.
    UnknownVhid,
    /// A VRRPv2 advert for the vrid with simple-password authentication and a wrong password.
    Vrrp,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Forged,
        Kind::Garbage,
        Kind::Truncated,
        Kind::BadTtl,
        Kind::UnknownVhid,
        Kind::Vrrp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Forged => "forged",
            Kind::Garbage => "garbage",
            Kind::Truncated => "truncated",
            Kind::BadTtl => "bad-ttl",
            Kind::UnknownVhid => "unknown-vhid",
            Kind::Vrrp => "vrrp",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A small xorshift generator: fast, seedable, and good enough for garbage.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-enough in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Parameters of the frames one injector run sends.
#[derive(Clone, Debug)]
pub struct Spec {
    pub kind: Kind,
    /// The vhid (CARP) or vrid (VRRP) under attack.
    pub vhid: u8,
    /// VRRP: the address listed in the advert.
    pub vip: Ipv4Addr,
    pub group: Ipv4Addr,
    /// Forged adverts: advbase and advskew (CARP), priority (VRRP).
    pub advbase: u8,
    pub advskew: u8,
    pub priority: u8,
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet multicast MAC of an IPv4 group (broadcast for 255.255.255.255).
pub fn multicast_mac(group: Ipv4Addr) -> [u8; 6] {
    if group.is_broadcast() {
        return [0xff; 6];
    }
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// The IPv4 header fields a frame varies.
#[derive(Clone, Copy, Debug)]
struct Ip {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    proto: u8,
    id: u16,
}

/// Appends an Ethernet header and an IPv4 header (no options, DF, TOS 0x10) for `payload_len`
/// bytes of payload, with a correct header checksum.
fn push_eth_ipv4(out: &mut Vec<u8>, dst_mac: [u8; 6], ip: Ip, payload_len: usize) {
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&INJECT_MAC);
    out.extend_from_slice(&0x0800u16.to_be_bytes());
    let start = out.len();
    let total = u16::try_from(20 + payload_len).expect("payload fits an IPv4 packet");
    out.extend_from_slice(&[0x45, 0x10]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&ip.id.to_be_bytes());
    out.extend_from_slice(&[0x40, 0x00, ip.ttl, ip.proto, 0, 0]);
    out.extend_from_slice(&ip.src.octets());
    out.extend_from_slice(&ip.dst.octets());
    let sum = checksum(&out[start..start + 20]);
    out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
}

/// A CARP header with the given fields and a correct checksum over all 36 bytes.
pub fn carp_header(vhid: u8, advbase: u8, advskew: u8, counter: u64, md: [u8; 20]) -> [u8; 36] {
    let mut h = [0u8; CARP_LEN];
    h[0] = 0x21;
    h[1] = vhid;
    h[2] = advskew;
    h[3] = 7;
    h[5] = advbase;
    h[8..16].copy_from_slice(&counter.to_be_bytes());
    h[16..36].copy_from_slice(&md);
    let sum = checksum(&h);
    h[6..8].copy_from_slice(&sum.to_be_bytes());
    h
}

/// A complete CARP advert frame.
pub fn carp_frame(src: Ipv4Addr, group: Ipv4Addr, ttl: u8, id: u16, carp: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 20 + carp.len());
    let ip = Ip {
        src,
        dst: group,
        ttl,
        proto: IPPROTO_CARP,
        id,
    };
    push_eth_ipv4(&mut f, multicast_mac(group), ip, carp.len());
    f.extend_from_slice(carp);
    f
}

/// An Ethernet frame holding an IPv6 packet (no extension header) with `payload` after the
/// header: to a multicast destination at its multicast MAC, else to `dst_mac`.
fn ipv6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let o = dst.octets();
    let dst_mac = if dst.is_multicast() {
        [0x33, 0x33, o[12], o[13], o[14], o[15]]
    } else {
        dst_mac
    };
    let mut f = Vec::with_capacity(14 + 40 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next_header, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    f
}

/// A CARP advert over IPv6 from `src` (a link-local address) to `dst` (`ff02::12` for the
/// group), as BSD CARP sends it.
pub fn carp6_frame(
    src_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    carp: &[u8],
) -> Vec<u8> {
    ipv6_frame(src_mac, [0; 6], src, dst, IPPROTO_CARP, hop_limit, carp)
}

/// A neighbour solicitation from `src` at `src_mac` for `target`, to its solicited-node group,
/// with the source link-layer address option (checksum left zero: nothing on the path under
/// test checks it).
pub fn solicitation(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src_mac);
    ipv6_frame(src_mac, [0; 6], src, group, 58, 255, &icmp)
}

/// A captured CARP advert sent again: the source and, if given, advbase and advskew replaced,
/// both checksums made valid again. The HMAC covers none of these, so for a receiver without a
/// replay guard the result is as authentic as the original. `None` when `captured` is not an
/// Ethernet frame holding IPv4 (no options) and a whole CARP header.
pub fn replayed(
    captured: &[u8],
    src: Ipv4Addr,
    advbase: Option<u8>,
    advskew: Option<u8>,
) -> Option<Vec<u8>> {
    if captured.len() < ADVERT_FRAME_LEN
        || captured[12..14] != 0x0800u16.to_be_bytes()
        || captured[14] != 0x45
        || captured[23] != IPPROTO_CARP
    {
        return None;
    }
    let mut f = captured[..ADVERT_FRAME_LEN].to_vec();
    f[26..30].copy_from_slice(&src.octets());
    f[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    let carp = &mut f[34..];
    if let Some(skew) = advskew {
        carp[2] = skew;
    }
    if let Some(base) = advbase {
        carp[5] = base;
    }
    carp[6..8].copy_from_slice(&[0, 0]);
    let sum = checksum(carp);
    carp[6..8].copy_from_slice(&sum.to_be_bytes());
    Some(f)
}

/// A VRRPv2 advert (RFC 3768) with one address and simple-password authentication.
pub fn vrrp_v2(vrid: u8, priority: u8, adver_int: u8, addr: Ipv4Addr, pass: [u8; 8]) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[0] = 0x21;
    v[1] = vrid;
    v[2] = priority;
    v[3] = 1; // count of addresses
    v[4] = 1; // authentication type: simple text password
    v[5] = adver_int;
    v[8..12].copy_from_slice(&addr.octets());
    v[12..20].copy_from_slice(&pass);
    let sum = checksum(&v);
    v[6..8].copy_from_slice(&sum.to_be_bytes());
    v
}

/// An ARP request (broadcast) from `sender` asking for `target`.
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&sender_mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes());
    f[22..28].copy_from_slice(&sender_mac);
    f[28..32].copy_from_slice(&sender.octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// A 64-byte-payload UDP datagram between two unicast addresses: ordinary traffic.
pub fn udp_frame(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let payload = [0x5au8; 64];
    let mut f = Vec::with_capacity(14 + 20 + 8 + payload.len());
    let ip = Ip {
        src,
        dst,
        ttl: 64,
        proto: 17,
        id: 1,
    };
    push_eth_ipv4(&mut f, dst_mac, ip, 8 + payload.len());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&5353u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.extend_from_slice(&payload);
    f
}

/// One frame of `spec.kind` from `src`, fresh random fields drawn from `rng`.
pub fn build(spec: &Spec, src: Ipv4Addr, rng: &mut Rng) -> Vec<u8> {
    let id = rng.next_u64() as u16;
    let forged = |rng: &mut Rng, vhid: u8| {
        let mut md = [0u8; 20];
        rng.fill(&mut md);
        carp_header(vhid, spec.advbase, spec.advskew, rng.next_u64(), md)
    };
    match spec.kind {
        Kind::Forged => carp_frame(src, spec.group, 255, id, &forged(rng, spec.vhid)),
        Kind::BadTtl => {
            let ttl = rng.range(1, 254) as u8;
            carp_frame(src, spec.group, ttl, id, &forged(rng, spec.vhid))
        }
        Kind::UnknownVhid => {
            // Any vhid but ours (1..=255 without spec.vhid).
            let mut vhid = rng.range(1, 254) as u8;
            if vhid >= spec.vhid {
                vhid += 1;
            }
            carp_frame(src, spec.group, 255, id, &forged(rng, vhid))
        }
        Kind::Truncated => {
            let carp = forged(rng, spec.vhid);
            let cut = rng.range(0, CARP_LEN as u64 - 1) as usize;
            carp_frame(src, spec.group, 255, id, &carp[..cut])
        }
        Kind::Garbage => {
            let len = rng.range(CARP_LEN as u64, 100) as usize;
            let mut payload = vec![0u8; len];
            rng.fill(&mut payload);
            if payload[0] >> 4 == 2 {
                payload[0] ^= 0x80;
            }
            carp_frame(src, spec.group, 255, id, &payload)
        }
        Kind::Vrrp => {
            let mut pass = [0u8; 8];
            rng.fill(&mut pass);
            let v = vrrp_v2(spec.vhid, spec.priority, spec.advbase, spec.vip, pass);
            carp_frame(src, spec.group, 255, id, &v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_agent::carp::wire;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
    const SRC: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 7);

    fn spec(kind: Kind) -> Spec {
        Spec {
            kind,
            vhid: 42,
            vip: VIP,
            group: GROUP,
            advbase: 1,
            advskew: 0,
            priority: 150,
        }
    }

    #[test]
    fn advert_matches_the_agents_encoding() {
        let carp = wire::encode_carp(b"love", &[VIP], 42, 1, 7, 0x1234_5678_9abc_def0);
        let mut md = [0u8; 20];
        md.copy_from_slice(&carp[16..]);
        let ours = carp_header(42, 1, 7, 0x1234_5678_9abc_def0, md);
        assert_eq!(ours, carp);
        let packet = wire::encode_packet(SRC, GROUP, 0x4242, &carp);
        let frame = carp_frame(SRC, GROUP, 255, 0x4242, &ours);
        assert_eq!(&frame[14..], packet.as_slice());
        assert_eq!(&frame[..6], wire::multicast_mac(GROUP).as_slice());
    }

    #[test]
    fn each_kind_fails_exactly_its_check() {
        let mut rng = Rng::new(7);
        let expect = wire::Expect {
            vhid: 42,
            peers: &[],
            group: GROUP.into(),
            vips: &[VIP.into()],
            password: b"love",
        };
        for _ in 0..500 {
            let f = build(&spec(Kind::Forged), SRC, &mut rng);
            let rx = wire::decode(&f[14..]).unwrap();
            assert_eq!(wire::verify(&rx, &expect), Err(wire::WireError::BadHmac));

            let f = build(&spec(Kind::BadTtl), SRC, &mut rng);
            let rx = wire::decode(&f[14..]).unwrap();
            assert!(matches!(
                wire::verify(&rx, &expect),
                Err(wire::WireError::BadTtl(_))
            ));

            let f = build(&spec(Kind::UnknownVhid), SRC, &mut rng);
            let rx = wire::decode(&f[14..]).unwrap();
            assert!(matches!(
                wire::verify(&rx, &expect),
                Err(wire::WireError::OtherVhid { .. })
            ));

            let f = build(&spec(Kind::Truncated), SRC, &mut rng);
            assert!(f.len() < ADVERT_FRAME_LEN);
            assert_eq!(
                usize::from(u16::from_be_bytes([f[16], f[17]])),
                f.len() - 14
            );
            assert!(matches!(
                wire::decode(&f[14..]),
                Err(wire::WireError::Short(_))
            ));

            let f = build(&spec(Kind::Garbage), SRC, &mut rng);
            assert!(f.len() >= ADVERT_FRAME_LEN);
            assert!(matches!(
                wire::decode(&f[14..]),
                Err(wire::WireError::BadVersion(_))
            ));
        }
    }

    #[test]
    fn a_replay_still_authenticates_from_anywhere_with_any_timing() {
        let carp = wire::encode_carp(b"love", &[VIP], 42, 1, 100, 0xfeed);
        let packet = wire::encode_packet(SRC, GROUP, 7, &carp);
        let mut captured =
            wire::ether_frame(wire::multicast_mac(GROUP), [2, 0, 0, 0, 0, 9], &packet).to_vec();
        // Ethernet padding on the capture is not sent again.
        captured.extend_from_slice(&[0; 4]);
        let expect = wire::Expect {
            vhid: 42,
            peers: &[],
            group: GROUP.into(),
            vips: &[VIP.into()],
            password: b"love",
        };
        let other = Ipv4Addr::new(10, 99, 1, 0);
        for (base, skew, want) in [(None, None, (1, 100)), (Some(255), Some(255), (255, 255))] {
            let f = replayed(&captured, other, base, skew).unwrap();
            assert_eq!(f.len(), ADVERT_FRAME_LEN);
            let rx = wire::decode(&f[14..]).unwrap();
            assert_eq!(rx.src, other);
            assert_eq!((rx.advert.advbase, rx.advert.advskew), want);
            assert_eq!(rx.advert.counter, 0xfeed);
            wire::verify(&rx, &expect).unwrap();
        }
        assert!(replayed(&captured[..ADVERT_FRAME_LEN - 1], other, None, None).is_none());
        let mut arp = captured.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(replayed(&arp, other, None, None).is_none());
    }

    #[test]
    fn vrrp_checksum_verifies() {
        let v = vrrp_v2(9, 150, 1, VIP, *b"wrongpw!");
        assert_eq!(checksum(&v), 0);
        assert_eq!(v[0], 0x21);
    }
}
