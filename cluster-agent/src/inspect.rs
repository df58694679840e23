//! `cluster-agent inspect`: decode every CARP advert in a pcap capture and say whether it is
//! authentic for a given password and VIP (or a vhid's several addresses), the question behind "node A does not see node B".

use std::io::Read;
use std::net::IpAddr;

use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use serde::Serialize;

use crate::carp::wire;

/// One advert found in the capture.
#[derive(Debug, Serialize, PartialEq)]
pub struct Finding {
    /// Seconds since the epoch, as captured.
    pub time: f64,
    pub vhid: u8,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub ttl: u8,
    pub advbase: u8,
    pub advskew: u8,
    pub counter: u64,
    pub bow_out: bool,
    pub authentic: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read capture: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    #[error("unsupported link type {0:?} (Ethernet, Linux cooked and raw IP captures are read)")]
    LinkType(DataLink),
}

/// Decodes every well-formed CARP advert; other packets are skipped.
pub fn inspect(
    capture: impl Read,
    password: &[u8],
    vips: &[IpAddr],
) -> Result<Vec<Finding>, InspectError> {
    let mut reader = PcapReader::new(capture)?;
    let link = reader.header().datalink;
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt?;
        let Some(ip) = ip_payload(link, &pkt.data)? else {
            continue;
        };
        // Other traffic, and protocol-112 packets that are not CARP (VRRP shares the number).
        let decoded = match ip.first().map(|b| b >> 4) {
            Some(6) => wire::decode6(ip),
            _ => wire::decode(ip),
        };
        let Ok(rx) = decoded else { continue };
        out.push(Finding {
            time: pkt.timestamp.as_secs_f64(),
            vhid: rx.advert.vhid,
            source: rx.src,
            destination: rx.dst,
            ttl: rx.ttl,
            advbase: rx.advert.advbase,
            advskew: rx.advert.advskew,
            counter: rx.advert.counter,
            bow_out: rx.advert.is_bow_out(),
            authentic: wire::authentic(&rx.advert, password, vips),
        });
    }
    Ok(out)
}

/// The IPv4 or IPv6 packet inside a captured frame, if it carries one.
fn ip_payload(link: DataLink, frame: &[u8]) -> Result<Option<&[u8]>, InspectError> {
    let (ethertype_at, payload_at) = match link {
        DataLink::ETHERNET => (12, 14),
        DataLink::LINUX_SLL => (14, 16),
        DataLink::LINUX_SLL2 => (0, 20),
        DataLink::RAW | DataLink::IPV4 => return Ok(Some(frame)),
        other => return Err(InspectError::LinkType(other)),
    };
    let Some(et) = frame.get(ethertype_at..ethertype_at + 2) else {
        return Ok(None);
    };
    if et != [0x08, 0x00] && et != [0x86, 0xdd] {
        return Ok(None);
    }
    Ok(frame.get(payload_at..))
}

/// Text form: one line per advert.
pub fn render(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        s += &format!(
            "{:.6} vhid {} from {} advbase {} advskew {} counter {:#018x}{} {}\n",
            f.time,
            f.vhid,
            f.source,
            f.advbase,
            f.advskew,
            f.counter,
            if f.bow_out { " (bow-out)" } else { "" },
            if f.authentic {
                "authentic"
            } else {
                "NOT authentic for this password and VIP"
            }
        );
    }
    if findings.is_empty() {
        s += "no CARP adverts in the capture\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn capture(frames: &[Vec<u8>]) -> Vec<u8> {
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write_packet(&PcapPacket::new(
                Duration::from_secs(i as u64),
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
        w.into_writer()
    }

    #[test]
    fn finds_adverts_and_checks_authenticity() {
        let vip = Ipv4Addr::new(10, 99, 0, 100);
        let src = Ipv4Addr::new(10, 99, 0, 1);
        let group = Ipv4Addr::new(224, 0, 0, 18);
        let good = wire::encode_packet(
            src,
            group,
            1,
            &wire::encode_carp(b"love", &[vip], 42, 1, 0, 5),
        );
        let bow = wire::encode_packet(
            src,
            group,
            2,
            &wire::encode_carp(b"love", &[vip], 42, 255, 255, 6),
        );
        let frames = vec![
            wire::ether_frame(wire::multicast_mac(group), [2; 6], &good).to_vec(),
            wire::garp_frame([2; 6], vip).to_vec(),
            wire::ether_frame(wire::multicast_mac(group), [2; 6], &bow).to_vec(),
        ];
        let cap = capture(&frames);
        let found = inspect(cap.as_slice(), b"love", &[vip.into()]).unwrap();
        assert_eq!(found.len(), 2);
        assert!(
            found
                .iter()
                .all(|f| f.authentic && f.vhid == 42 && f.source == src)
        );
        assert!(found[1].bow_out);
        let wrong = inspect(cap.as_slice(), b"hate", &[vip.into()]).unwrap();
        assert!(wrong.iter().all(|f| !f.authentic));
        let wrong_vip = inspect(
            cap.as_slice(),
            b"love",
            &[Ipv4Addr::new(10, 99, 0, 101).into()],
        )
        .unwrap();
        assert!(wrong_vip.iter().all(|f| !f.authentic));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(
            inspect(
                &b"not a pcap file at all"[..],
                b"x",
                &[Ipv4Addr::LOCALHOST.into()]
            )
            .is_err()
        );
    }
}
