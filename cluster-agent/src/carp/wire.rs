//! CARP adverts exactly as UCARP 1.5.2 encodes, decodes and authenticates them.
//!
//! Pure functions over byte slices: the runtime, the `inspect` command, the tests and the
//! simulation all share this one implementation, so an interop rule lives in one place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cluster_common::carp::{
    AUTHLEN, BOW_OUT, HEADER_LEN, IPPROTO_CARP, IPV4_HEADER_LEN, TTL, TYPE_ADVERTISEMENT, VERSION,
};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Length of an advert as an IPv4 packet (no options), which is what UCARP sends.
pub const PACKET_LEN: usize = IPV4_HEADER_LEN + HEADER_LEN;
/// UCARP refuses longer passwords (its key buffer holds 20 bytes including the NUL).
pub const MAX_PASSWORD_LEN: usize = 19;

/// The fields of a CARP advert that carry meaning for the election and authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    pub vhid: u8,
    pub advbase: u8,
    pub advskew: u8,
    /// OpenBSD's demotion byte; UCARP sends 0 and ignores it, and so do we on receive.
    pub demote: u8,
    pub counter: u64,
    pub md: [u8; 20],
}

impl Advert {
    /// A bow-out advert tells backups to take over at once rather than wait for the master-down timer.
    pub fn is_bow_out(&self) -> bool {
        self.advbase == BOW_OUT && self.advskew == BOW_OUT
    }
}

/// An advert as it arrived: the addresses matter for checks and the tie-break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    pub advert: Advert,
}

/// Why a packet is not an advert we accept. Each variant maps to a counter in the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet too short ({0} bytes)")]
    Short(usize),
    #[error("not an IPv4 packet without options")]
    NotIpv4,
    #[error("not an IPv6 packet whose next header is CARP")]
    NotIpv6,
    #[error("IP protocol {0} is not CARP")]
    NotCarp(u8),
    #[error("TTL {0} is not 255")]
    BadTtl(u8),
    #[error("CARP version {0} is not 2")]
    BadVersion(u8),
    #[error("vhid {got} is not ours ({want})")]
    OtherVhid { got: u8, want: u8 },
    #[error(
        "destination {0} is not where adverts are sent (the CARP group, or our address with unicast peers)"
    )]
    BadDestination(IpAddr),
    #[error("source {0} is not among the unicast peers")]
    UnknownPeer(IpAddr),
    #[error("IPv4 header checksum mismatch")]
    BadIpChecksum,
    #[error("CARP checksum mismatch")]
    BadCarpChecksum,
    #[error("HMAC mismatch (wrong password or VIP)")]
    BadHmac,
}

impl WireError {
    /// Authentication failures are reported separately from malformed packets: they are the
    /// signature of a misconfigured peer rather than of noise.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, WireError::BadHmac)
    }
}

/// RFC 1071 Internet checksum, as both the IPv4 and the CARP headers use it.
pub fn internet_checksum(data: &[u8]) -> u16 {
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

/// HMAC-SHA1 over version, type, vhid, the vhid's addresses and the counter, as UCARP computes
/// it for its one VIP (the version and type enter as two bytes, not as the packed header byte).
pub fn hmac(
    password: &[u8],
    vhid: u8,
    vips: &[impl Into<IpAddr> + Copy],
    counter: u64,
) -> [u8; 20] {
    keyed(password, vhid, vips, counter)
        .finalize()
        .into_bytes()
        .into()
}

/// The HMAC state over an advert's message. Several addresses enter as BSD CARP hashes them:
/// each once, IPv4 before IPv6, each family in ascending order (`IpAddr`'s own order), so the
/// order they were configured in does not matter.
fn keyed(password: &[u8], vhid: u8, vips: &[impl Into<IpAddr> + Copy], counter: u64) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(password).expect("HMAC accepts keys of any length");
    mac.update(&[VERSION, TYPE_ADVERTISEMENT, vhid]);
    let mut sorted: Vec<IpAddr> = vips.iter().map(|&v| v.into()).collect();
    sorted.sort_unstable();
    sorted.dedup();
    for vip in sorted {
        match vip {
            IpAddr::V4(v) => mac.update(&v.octets()),
            IpAddr::V6(v) => mac.update(&v.octets()),
        }
    }
    mac.update(&counter.to_be_bytes());
    mac
}

/// Builds the signed 36-byte CARP header.
pub fn encode_carp(
    password: &[u8],
    vips: &[impl Into<IpAddr> + Copy],
    vhid: u8,
    advbase: u8,
    advskew: u8,
    counter: u64,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = (VERSION << 4) | TYPE_ADVERTISEMENT;
    h[1] = vhid;
    h[2] = advskew;
    h[3] = AUTHLEN;
    h[4] = 0;
    h[5] = advbase;
    h[8..16].copy_from_slice(&counter.to_be_bytes());
    h[16..36].copy_from_slice(&hmac(password, vhid, vips, counter));
    let sum = internet_checksum(&h);
    h[6..8].copy_from_slice(&sum.to_be_bytes());
    h
}

/// Builds the full 56-byte IPv4 packet (TOS 0x10, DF, TTL 255) around a CARP header.
pub fn encode_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ip_id: u16,
    carp: &[u8; HEADER_LEN],
) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = 0x45;
    p[1] = 0x10;
    p[2..4].copy_from_slice(&(PACKET_LEN as u16).to_be_bytes());
    p[4..6].copy_from_slice(&ip_id.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = TTL;
    p[9] = IPPROTO_CARP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&p[..IPV4_HEADER_LEN]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[IPV4_HEADER_LEN..].copy_from_slice(carp);
    p
}

/// Parses an IPv4 packet holding a CARP header, checking only its structure and both
/// checksums. Policy (TTL, vhid, group, HMAC) is applied by [`verify`], so `inspect` can show
/// adverts that fail it.
pub fn decode(packet: &[u8]) -> Result<Received, WireError> {
    if packet.len() < IPV4_HEADER_LEN {
        return Err(WireError::Short(packet.len()));
    }
    if packet[0] >> 4 != 4 {
        return Err(WireError::NotIpv4);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN || packet.len() < ihl {
        return Err(WireError::NotIpv4);
    }
    if packet[9] != IPPROTO_CARP {
        return Err(WireError::NotCarp(packet[9]));
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if packet.len() < ihl + HEADER_LEN || total < ihl + HEADER_LEN {
        return Err(WireError::Short(packet.len()));
    }
    if internet_checksum(&packet[..ihl]) != 0 {
        return Err(WireError::BadIpChecksum);
    }
    Ok(Received {
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]).into(),
        dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]).into(),
        ttl: packet[8],
        advert: decode_carp(&packet[ihl..ihl + HEADER_LEN])?,
    })
}

/// Length of the fixed IPv6 header; CARP over IPv6 follows it directly (no extension headers).
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of an advert as an IPv6 packet.
pub const PACKET6_LEN: usize = IPV6_HEADER_LEN + HEADER_LEN;

/// Parses an IPv6 packet whose next header is CARP, as BSD CARP sends it over IPv6, checking
/// only its structure and the CARP checksum (which, as over IPv4, covers the CARP header alone).
pub fn decode6(packet: &[u8]) -> Result<Received, WireError> {
    if packet.len() < IPV6_HEADER_LEN {
        return Err(WireError::Short(packet.len()));
    }
    if packet[0] >> 4 != 6 || packet[6] != IPPROTO_CARP {
        return Err(WireError::NotIpv6);
    }
    let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if payload < HEADER_LEN || packet.len() < PACKET6_LEN {
        return Err(WireError::Short(packet.len()));
    }
    let addr = |at: usize| {
        let bytes: [u8; 16] = packet[at..at + 16].try_into().expect("16 bytes");
        IpAddr::from(bytes)
    };
    Ok(Received {
        src: addr(8),
        dst: addr(24),
        ttl: packet[7],
        advert: decode_carp(&packet[IPV6_HEADER_LEN..PACKET6_LEN])?,
    })
}

/// The CARP header's version, checksum and fields.
fn decode_carp(c: &[u8]) -> Result<Advert, WireError> {
    if c[0] >> 4 != VERSION {
        return Err(WireError::BadVersion(c[0] >> 4));
    }
    if internet_checksum(c) != 0 {
        return Err(WireError::BadCarpChecksum);
    }
    let mut md = [0u8; 20];
    md.copy_from_slice(&c[16..36]);
    Ok(Advert {
        vhid: c[1],
        advskew: c[2],
        demote: c[4],
        advbase: c[5],
        counter: u64::from_be_bytes(c[8..16].try_into().expect("8 bytes")),
        md,
    })
}

/// What a receiver needs to know to accept an advert.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    pub vhid: u8,
    /// The destination adverts carry: the group (IPv4 or IPv6), or this node's address with
    /// unicast peers.
    pub group: IpAddr,
    /// With unicast peers, the only sources accepted; empty accepts any.
    pub peers: &'a [Ipv4Addr],
    /// Every address of the vhid: the HMAC covers them all.
    pub vips: &'a [IpAddr],
    pub password: &'a [u8],
}

/// Applies UCARP's receive checks, in UCARP's order, to a decoded advert.
pub fn verify(rx: &Received, expect: &Expect<'_>) -> Result<(), WireError> {
    if rx.ttl != TTL {
        return Err(WireError::BadTtl(rx.ttl));
    }
    if rx.advert.vhid != expect.vhid {
        return Err(WireError::OtherVhid {
            got: rx.advert.vhid,
            want: expect.vhid,
        });
    }
    // UCARP accepts its multicast group, and with --nomcast the same group address in a
    // broadcast frame; a unicast advert to us is also accepted by the kernel path.
    let broadcast = matches!(rx.dst, IpAddr::V4(d) if d.is_broadcast());
    if rx.dst != expect.group && !broadcast {
        return Err(WireError::BadDestination(rx.dst));
    }
    // The HMAC does not cover the source, so this is no defence against a forger; it keeps
    // a node that was left out of the peer lists from taking part half-way.
    if !expect.peers.is_empty() && !expect.peers.iter().any(|&p| IpAddr::V4(p) == rx.src) {
        return Err(WireError::UnknownPeer(rx.src));
    }
    if !authentic(&rx.advert, expect.password, expect.vips) {
        return Err(WireError::BadHmac);
    }
    Ok(())
}

/// Whether the advert's HMAC matches this password and these addresses (constant-time compare).
pub fn authentic(advert: &Advert, password: &[u8], vips: &[impl Into<IpAddr> + Copy]) -> bool {
    keyed(password, advert.vhid, vips, advert.counter)
        .verify_slice(&advert.md)
        .is_ok()
}

/// The advert counter. UCARP's rule is random until a valid advert has been heard, then one
/// more than the last counter sent or heard (`carp_prepare_ad`: `sc_counter++`, after
/// `packethandler` set it to the received one). It is not a replay counter and receivers never
/// require it to grow, so we step by a random amount of at least two instead of one: the replay
/// guard remembers our own counters (a reflected advert of ours must not count), and a peer that
/// adopted our counter sends exactly one more, which must never be one we sent ourselves, or two
/// masters would drop each other's adverts for good. Genuine adverts never repeat a counter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter {
    last: Option<u64>,
}

impl Counter {
    pub fn on_receive(&mut self, counter: u64) {
        self.last = Some(counter);
    }

    /// The counter for the next advert, which becomes the last one sent; `random` is drawn by
    /// the caller so this stays pure.
    pub fn next(&mut self, random: u64) -> u64 {
        match self.last {
            Some(c) => {
                let next = c.wrapping_add(2 + (random & 0xffff_ffff));
                self.last = Some(next);
                next
            }
            None => random,
        }
    }
}

/// The 42-byte gratuitous ARP request UCARP sends: sender and target are both the VIP at our MAC.
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&mac);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// Ethernet source UCARP uses for adverts: the VRRP-style virtual MAC of the vhid.
pub fn advert_ether_src(vhid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x00, vhid]
}

/// Ethernet multicast MAC of an IPv4 group (low 23 bits of the address).
pub fn multicast_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// Wraps an advert packet in an Ethernet frame, for the broadcast (`--nomcast`) send path.
pub fn ether_frame(dst: [u8; 6], src: [u8; 6], packet: &[u8; PACKET_LEN]) -> [u8; 14 + PACKET_LEN] {
    let mut f = [0u8; 14 + PACKET_LEN];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14..].copy_from_slice(packet);
    f
}

/// The IPv6 all-nodes group, where unsolicited neighbour advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The IPv6 group of CARP adverts (BSD's `ff02::12`).
pub const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// The ICMPv6 body of an unsolicited neighbour advertisement for `target` at `mac`: IPv6's
/// gratuitous ARP (RFC 4861 7.2.6). The override flag makes every neighbour replace the MAC
/// it holds for `target`; the solicited flag stays clear, so none counts it as proof of
/// reachability. The kernel fills in the checksum of an ICMPv6 raw socket.
pub fn unsolicited_na(target: Ipv6Addr, mac: [u8; 6]) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136; // neighbour advertisement
    m[4] = 0x20; // override
    m[8..24].copy_from_slice(&target.octets());
    m[24] = 2; // option: target link-layer address
    m[25] = 1; // in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

/// The UCARP tie-break: the source address compared as the host-endian u32 UCARP reads on x86.
/// An IPv6 vhid's sources (link-local addresses) compare as big-endian numbers: only agents
/// take part there, and every one of them computes the same order.
pub fn tie_key(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from_le_bytes(a.octets())),
        IpAddr::V6(a) => u128::from_be_bytes(a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const GOLDEN: &str = "01005e000012 00005e00002a 0800
        45 10 0038 d459 4000 ff 70 bc75 0a630001 e0000012
        21 2a 00 07 00 01 6c79 b4cbc228 e9e06dfa f848c1378606271278a05651723f675e46c34d98";
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
    const SRC: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

    fn expect(password: &[u8]) -> Expect<'_> {
        Expect {
            vhid: 42,
            group: GROUP.into(),
            peers: &[],
            vips: &[IpAddr::V4(VIP)],
            password,
        }
    }

    #[test]
    fn golden_vector_decodes_and_verifies() {
        let frame = hex(GOLDEN);
        let rx = decode(&frame[14..]).unwrap();
        assert_eq!(rx.src, SRC);
        assert_eq!(rx.advert.vhid, 42);
        assert_eq!(rx.advert.advbase, 1);
        assert_eq!(rx.advert.advskew, 0);
        assert_eq!(rx.advert.counter, 0xb4cbc228_e9e06dfa);
        verify(&rx, &expect(b"love")).unwrap();
        assert_eq!(verify(&rx, &expect(b"hate")), Err(WireError::BadHmac));
    }

    #[test]
    fn golden_vector_encodes_byte_for_byte() {
        let frame = hex(GOLDEN);
        let carp = encode_carp(b"love", &[VIP], 42, 1, 0, 0xb4cbc228_e9e06dfa);
        let packet = encode_packet(SRC, GROUP, 0xd459, &carp);
        let eth = ether_frame(multicast_mac(GROUP), advert_ether_src(42), &packet);
        assert_eq!(eth.as_slice(), frame.as_slice());
    }

    #[test]
    fn golden_hmac() {
        assert_eq!(
            hmac(b"love", 42, &[VIP], 0xb4cbc228_e9e06dfa).as_slice(),
            hex("f848c1378606271278a05651723f675e46c34d98").as_slice()
        );
    }

    #[test]
    fn golden_garp() {
        let mac = [0x8e, 0xf3, 0x9a, 0x17, 0xcf, 0x04];
        let want = hex(
            "ffffffffffff 8ef39a17cf04 0806 0001 0800 06 04 0001 8ef39a17cf04 0a630064 8ef39a17cf04 0a630064",
        );
        assert_eq!(garp_frame(mac, VIP).as_slice(), want.as_slice());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let frame = hex(GOLDEN);
        for n in 0..PACKET_LEN {
            assert!(decode(&frame[14..14 + n]).is_err(), "length {n}");
        }
    }

    #[test]
    fn corrupted_fields_are_rejected_with_their_reason() {
        let frame = hex(GOLDEN);
        let good = &frame[14..];
        let mut p = good.to_vec();
        p[9] = 17;
        assert_eq!(decode(&p), Err(WireError::NotCarp(17)));
        let mut p = good.to_vec();
        p[25] ^= 1; // advbase without fixing the checksum
        assert_eq!(decode(&p), Err(WireError::BadCarpChecksum));
        let mut p = good.to_vec();
        p[15] ^= 1; // source without fixing the IP checksum
        assert_eq!(decode(&p), Err(WireError::BadIpChecksum));

        let carp = encode_carp(b"love", &[VIP], 42, 1, 0, 7);
        let mut packet = encode_packet(SRC, GROUP, 1, &carp);
        packet[8] = 64;
        packet[10..12].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
        let rx = decode(&packet).unwrap();
        assert_eq!(verify(&rx, &expect(b"love")), Err(WireError::BadTtl(64)));

        let carp = encode_carp(b"love", &[VIP], 43, 1, 0, 7);
        let rx = decode(&encode_packet(SRC, GROUP, 1, &carp)).unwrap();
        assert_eq!(
            verify(&rx, &expect(b"love")),
            Err(WireError::OtherVhid { got: 43, want: 42 })
        );

        let carp = encode_carp(b"love", &[VIP], 42, 1, 0, 7);
        let rx = decode(&encode_packet(SRC, Ipv4Addr::new(224, 0, 0, 19), 1, &carp)).unwrap();
        assert!(matches!(
            verify(&rx, &expect(b"love")),
            Err(WireError::BadDestination(_))
        ));

        // With unicast peers: addressed to us, from a listed peer only.
        let me = Ipv4Addr::new(10, 99, 0, 2);
        let unicast = |peers| Expect {
            group: me.into(),
            peers,
            ..expect(b"love")
        };
        let rx = decode(&encode_packet(SRC, me, 1, &carp)).unwrap();
        assert_eq!(verify(&rx, &unicast(&[SRC])), Ok(()));
        let other = [Ipv4Addr::new(10, 99, 0, 3)];
        assert_eq!(
            verify(&rx, &unicast(&other)),
            Err(WireError::UnknownPeer(SRC.into()))
        );
        let rx = decode(&encode_packet(SRC, GROUP, 1, &carp)).unwrap();
        assert_eq!(
            verify(&rx, &unicast(&[SRC])),
            Err(WireError::BadDestination(GROUP.into()))
        );

        let mut carp = encode_carp(b"love", &[VIP], 42, 1, 0, 7);
        carp[0] = 0x31;
        carp[6..8].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&carp);
        carp[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            decode(&encode_packet(SRC, GROUP, 1, &carp)),
            Err(WireError::BadVersion(3))
        );
    }

    #[test]
    fn wrong_vip_fails_authentication() {
        let carp = encode_carp(b"love", &[Ipv4Addr::new(10, 99, 0, 101)], 42, 1, 0, 9);
        let rx = decode(&encode_packet(SRC, GROUP, 1, &carp)).unwrap();
        assert_eq!(verify(&rx, &expect(b"love")), Err(WireError::BadHmac));
    }

    #[test]
    fn several_addresses_hash_in_ascending_order_and_all_of_them_count() {
        let a = Ipv4Addr::new(10, 99, 0, 100);
        let b = Ipv4Addr::new(10, 99, 0, 7);
        let c = Ipv4Addr::new(192, 0, 2, 1);
        // BSD CARP's message: 02 01 vhid, the addresses lowest first, the counter.
        let mut mac = Hmac::<Sha1>::new_from_slice(b"love").unwrap();
        mac.update(&[2, 1, 42]);
        for addr in [b, a, c] {
            mac.update(&addr.octets());
        }
        mac.update(&9u64.to_be_bytes());
        let want: [u8; 20] = mac.finalize().into_bytes().into();
        assert_eq!(hmac(b"love", 42, &[c, a, b], 9), want);
        assert_eq!(hmac(b"love", 42, &[a, b, c], 9), want);

        let carp = encode_carp(b"love", &[c, a, b], 42, 1, 0, 9);
        let rx = decode(&encode_packet(SRC, GROUP, 1, &carp)).unwrap();
        let all = Expect {
            vips: &[a.into(), b.into(), c.into()],
            ..expect(b"love")
        };
        assert_eq!(verify(&rx, &all), Ok(()));
        for fewer in [
            &[a, b][..],
            &[a][..],
            &[a, b, c, Ipv4Addr::new(10, 99, 0, 8)][..],
        ] {
            let fewer: Vec<IpAddr> = fewer.iter().map(|&v| v.into()).collect();
            let other = Expect {
                vips: &fewer,
                ..expect(b"love")
            };
            assert_eq!(verify(&rx, &other), Err(WireError::BadHmac), "{fewer:?}");
        }
    }

    #[test]
    fn ipv6_adverts_decode_and_verify_over_ipv6_addresses() {
        let vip: IpAddr = "2001:db8::100".parse().unwrap();
        let second: IpAddr = "2001:db8::7".parse().unwrap();
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let carp = encode_carp(b"love", &[vip, second], 42, 1, 0, 11);
        let mut p = vec![0x60, 0, 0, 0, 0, HEADER_LEN as u8, IPPROTO_CARP, 255];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&GROUP6.octets());
        p.extend_from_slice(&carp);
        let rx = decode6(&p).unwrap();
        assert_eq!(
            (rx.src, rx.dst, rx.ttl),
            (IpAddr::V6(src), IpAddr::V6(GROUP6), 255)
        );
        // BSD's message: the IPv6 addresses, lowest first, 16 bytes each.
        let mut mac = Hmac::<Sha1>::new_from_slice(b"love").unwrap();
        mac.update(&[2, 1, 42]);
        for addr in ["2001:db8::7", "2001:db8::100"] {
            mac.update(&addr.parse::<Ipv6Addr>().unwrap().octets());
        }
        mac.update(&11u64.to_be_bytes());
        assert_eq!(rx.advert.md, <[u8; 20]>::from(mac.finalize().into_bytes()));
        let expect6 = Expect {
            group: GROUP6.into(),
            vips: &[second, vip],
            ..expect(b"love")
        };
        assert_eq!(verify(&rx, &expect6), Ok(()));
        assert_eq!(
            verify(
                &rx,
                &Expect {
                    vips: &[vip],
                    ..expect6
                }
            ),
            Err(WireError::BadHmac)
        );
        let mut routed = p.clone();
        routed[7] = 254;
        assert_eq!(
            verify(&decode6(&routed).unwrap(), &expect6),
            Err(WireError::BadTtl(254))
        );
        let mut other = p.clone();
        other[6] = 17;
        assert_eq!(decode6(&other), Err(WireError::NotIpv6));
        assert_eq!(decode6(&p[..50]), Err(WireError::Short(50)));
        assert_eq!(decode(&p), Err(WireError::NotIpv4));
    }

    #[test]
    fn an_unsolicited_neighbour_advertisement_overrides_and_names_our_mac() {
        let na = unsolicited_na("2001:db8::100".parse().unwrap(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(na[0], 136);
        assert_eq!(na[4], 0x20, "override set, solicited and router clear");
        assert_eq!(
            na[8..24],
            "2001:db8::100".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(na[24..], [2, 1, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn counter_is_random_until_heard_then_follows() {
        let mut c = Counter::default();
        assert_eq!(c.next(77), 77);
        assert_eq!(c.next(78), 78, "still random: nothing heard yet");
        c.on_receive(u64::MAX);
        assert_eq!(c.next(0), 1, "wraps");
        c.on_receive(5);
        assert_eq!(c.next(3), 10);
    }

    #[test]
    fn counter_never_repeats_and_never_takes_the_one_a_peer_adopting_ours_sends() {
        // A master that heard one advert and then nothing more (its backups are silent) must
        // still send a new counter every time, or the backups' replay guards would refuse every
        // advert after the first; and never exactly one more than its last, which is what a
        // UCARP peer that adopted that counter sends next.
        let mut c = Counter::default();
        c.on_receive(41);
        let mut last = 41;
        for r in [0, 1, 0xffff_ffff, u64::MAX, 7] {
            let n = c.next(r);
            assert!(n >= last + 2, "{n} after {last}");
            last = n;
        }
        c.on_receive(100);
        assert_eq!(c.next(0), 102);
    }

    #[test]
    fn tie_key_is_little_endian() {
        // 10.99.1.1 beats 10.99.0.2 under UCARP's comparison, although it is larger in network order.
        assert!(
            tie_key(Ipv4Addr::new(10, 99, 1, 1).into())
                < tie_key(Ipv4Addr::new(10, 99, 0, 2).into())
        );
    }
}
