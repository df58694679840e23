//! Connection requests held off by a switchover's drain, handed to the next master.
//!
//! XDP reports each request (a TCP SYN to the VIP) as received. On a virtual interface the
//! sender's kernel leaves the TCP checksum to the hardware that a veth does not have: the
//! field then holds only the pseudo-header sum, and the receiver, told to trust it, never
//! checks. Sent again from here it would be a packet like any other, and dropped for its
//! checksum; so the checksum is computed afresh before a request goes on.

/// Sets the TCP checksum of an IPv4 packet (header with or without options, then a TCP
/// segment that fills the rest of `total length`). `None` if `packet` is not that.
pub fn with_tcp_checksum(packet: &[u8]) -> Option<Vec<u8>> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    if *packet.first()? >> 4 != 4 || ihl < 20 || packet.get(9) != Some(&6) {
        return None;
    }
    if total > packet.len() || total < ihl + 20 {
        return None;
    }
    let mut out = packet[..total].to_vec();
    out[ihl + 16] = 0;
    out[ihl + 17] = 0;
    let segment = &out[ihl..];
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
        }
    };
    // The pseudo-header: source, destination, zero, protocol, TCP length.
    add(&out[12..20]);
    add(&[0, 6]);
    add(&((total - ihl) as u16).to_be_bytes());
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !(sum as u16);
    out[ihl + 16..ihl + 18].copy_from_slice(&checksum.to_be_bytes());
    Some(out)
}

/// The destination address of an IPv4 packet: which of the vhid's addresses a held request
/// was for.
pub fn destination(packet: &[u8]) -> Option<std::net::Ipv4Addr> {
    let bytes: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    Some(bytes.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN from 10.99.0.200:52686 to 10.99.0.100:3306 with Linux's options, its checksum as
    /// a real NIC would have set it (0xfa21, as tcpdump computed it).
    fn syn(checksum: [u8; 2]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x3c, 0xe1, 0x90, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 99, 0, 200,
            10, 99, 0, 100, // IPv4
            0xcd, 0xce, 0x0c, 0xea, 0x82, 0x97, 0xfa, 0xc6, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0,
            0, 0, 0, // TCP
            0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xa7, 0x1e, 0x3d, 0xc3, 0, 0, 0, 0,
            0x01, 0x03, 0x03, 0x0a, // options
        ];
        p[36..38].copy_from_slice(&checksum);
        p
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let partial = syn([0x16, 0x20]);
        assert_eq!(with_tcp_checksum(&partial).unwrap(), syn([0xfa, 0x21]));
        // A right one stays right.
        assert_eq!(
            with_tcp_checksum(&syn([0xfa, 0x21])).unwrap(),
            syn([0xfa, 0x21])
        );
    }

    #[test]
    fn what_is_not_a_tcp_packet_is_refused() {
        let p = syn([0, 0]);
        assert!(with_tcp_checksum(&p[..30]).is_none(), "truncated");
        let mut udp = p.clone();
        udp[9] = 17;
        assert!(with_tcp_checksum(&udp).is_none());
        assert!(with_tcp_checksum(&[]).is_none());
        let mut v6 = p;
        v6[0] = 0x65;
        assert!(with_tcp_checksum(&v6).is_none());
    }
}
