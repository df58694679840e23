//! What the XDP program reports through its ring buffer, and reading it from tokio.

use std::net::Ipv4Addr;

use aya::maps::{MapData, RingBuf};
use cluster_common::xdp::{
    ADVERT_LEN, ADVERT6_LEN, ARP_OP_REPLY, AdvertRecord, AdvertRecord6, ConflictRecord,
    RECORD_ADVERT, RECORD_ADVERT6, RECORD_CONFLICT, RECORD_SYN, RecordHeader, SYN_MAX, SynRecord,
};
use tokio::io::{Interest, unix::AsyncFd};

use super::XdpError;

/// One record from the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpEvent {
    /// An advert for our vhid that passed the checks which need no key. Its HMAC is unverified.
    Advert {
        /// `CLOCK_MONOTONIC` nanoseconds at which the frame reached XDP.
        ktime_ns: u64,
        /// The IPv4 and CARP headers exactly as received.
        packet: [u8; ADVERT_LEN],
    },
    /// An advert over IPv6 that passed the same checks.
    Advert6 {
        /// `CLOCK_MONOTONIC` nanoseconds at which the frame reached XDP.
        ktime_ns: u64,
        /// The IPv6 and CARP headers exactly as received.
        packet: [u8; ADVERT6_LEN],
    },
    /// A connection request to the VIP held off by a drain (see `FLAG_DRAIN`).
    Syn {
        /// `CLOCK_MONOTONIC` nanoseconds at which the frame reached XDP.
        ktime_ns: u64,
        /// The IPv4 packet as received: the first `len` bytes.
        packet: [u8; SYN_MAX],
        len: usize,
    },
    /// An ARP frame claiming the VIP from a MAC other than ours while we were MASTER, or
    /// while draining.
    Conflict {
        /// `CLOCK_MONOTONIC` nanoseconds at which the frame reached XDP.
        ktime_ns: u64,
        /// The MAC that claims the VIP (ARP sender hardware address).
        mac: [u8; 6],
        /// Ethernet source of the frame; differs from `mac` only for proxies or forgeries.
        eth_src: [u8; 6],
        /// The address claimed, the VIP at the time of the frame.
        ip: Ipv4Addr,
        /// A reply rather than a gratuitous request.
        reply: bool,
    },
}

impl XdpEvent {
    /// Decodes one ring-buffer record.
    ///
    /// The bytes come from the kernel, but from a program that may be of another build than this
    /// agent, so the kind and the exact size are checked before any field is read.
    pub fn decode(record: &[u8]) -> Result<Self, XdpError> {
        let header: RecordHeader =
            read(record, size_of::<RecordHeader>()).ok_or(XdpError::BadRecord {
                kind: None,
                len: record.len(),
            })?;
        let bad = || XdpError::BadRecord {
            kind: Some(header.kind),
            len: record.len(),
        };
        match header.kind {
            RECORD_ADVERT => {
                let advert: AdvertRecord = read_exact(record).ok_or_else(bad)?;
                Ok(Self::Advert {
                    ktime_ns: advert.header.ktime_ns,
                    packet: advert.packet,
                })
            }
            RECORD_ADVERT6 => {
                let advert: AdvertRecord6 = read_exact(record).ok_or_else(bad)?;
                Ok(Self::Advert6 {
                    ktime_ns: advert.header.ktime_ns,
                    packet: advert.packet,
                })
            }
            RECORD_CONFLICT => {
                let conflict: ConflictRecord = read_exact(record).ok_or_else(bad)?;
                Ok(Self::Conflict {
                    ktime_ns: conflict.header.ktime_ns,
                    mac: conflict.sender_mac,
                    eth_src: conflict.eth_src,
                    ip: Ipv4Addr::from(conflict.sender_ip),
                    reply: u16::from_be_bytes(conflict.op) == ARP_OP_REPLY,
                })
            }
            RECORD_SYN => {
                let syn: SynRecord = read_exact(record).ok_or_else(bad)?;
                let len = syn.len as usize;
                if !(40..=SYN_MAX).contains(&len) {
                    return Err(bad());
                }
                Ok(Self::Syn {
                    ktime_ns: syn.header.ktime_ns,
                    packet: syn.packet,
                    len,
                })
            }
            _ => Err(bad()),
        }
    }
}

/// Reads a `T` from the start of `bytes` if at least `min_len` bytes are there.
fn read<T: aya::Pod>(bytes: &[u8], min_len: usize) -> Option<T> {
    debug_assert!(min_len >= size_of::<T>());
    if bytes.len() < min_len {
        return None;
    }
    // SAFETY: `T: Pod` accepts any bit pattern, the length was checked, and the read is
    // unaligned because ring-buffer memory is only guaranteed 8-byte aligned.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Reads a `T` if `bytes` is exactly its size: a longer record is another layout, not ours.
fn read_exact<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() == size_of::<T>())
        .then(|| read(bytes, size_of::<T>()))
        .flatten()
}

/// The agent's end of the XDP ring buffer, readable from tokio.
pub struct XdpEvents {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl std::fmt::Debug for XdpEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpEvents").finish_non_exhaustive()
    }
}

impl XdpEvents {
    /// Must be called within a tokio runtime with I/O enabled.
    pub(super) fn new(ring: RingBuf<MapData>) -> Result<Self, XdpError> {
        // SAFETY: the ring buffer owns its map file descriptor, and the `AsyncFd` owns the ring
        // buffer, so the descriptor stays open and unchanged for the whole registration.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| XdpError::Register(err.into_parts().1))?;
        Ok(Self { ring })
    }

    /// Waits for the next record.
    ///
    /// Cancel-safe: the only await is for readiness, and a record is taken from the ring only
    /// when it is returned, so it can sit in a `select!` next to the election timer.
    pub async fn next(&mut self) -> Result<XdpEvent, XdpError> {
        loop {
            let mut guard = self.ring.readable_mut().await.map_err(XdpError::Poll)?;
            if let Some(record) = guard.get_inner_mut().next() {
                return XdpEvent::decode(&record);
            }
            // Clears readiness only if no wake-up arrived since `readable_mut` returned, so a
            // record committed after the empty read above is not missed.
            guard.clear_ready();
        }
    }

    /// The next record if one is waiting, without blocking: for draining after a wake-up.
    /// A second descriptor of the ring buffer, for waiting on it apart from this reader.
    pub(super) fn dup_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.ring.get_ref().as_fd().try_clone_to_owned()
    }

    pub fn try_next(&mut self) -> Option<Result<XdpEvent, XdpError>> {
        self.ring
            .get_mut()
            .next()
            .map(|record| XdpEvent::decode(&record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_common::xdp::ARP_OP_REQUEST;

    fn advert_bytes() -> Vec<u8> {
        let mut packet = [0u8; ADVERT_LEN];
        for (i, byte) in packet.iter_mut().enumerate() {
            *byte = i as u8;
        }
        let record = AdvertRecord {
            header: RecordHeader {
                kind: RECORD_ADVERT,
                reserved: 0,
                ktime_ns: 123_456_789,
            },
            packet,
        };
        // SAFETY: `AdvertRecord` is plain data without padding.
        unsafe {
            std::slice::from_raw_parts((&raw const record).cast::<u8>(), size_of::<AdvertRecord>())
        }
        .to_vec()
    }

    fn conflict_bytes(op: u16) -> Vec<u8> {
        let record = ConflictRecord {
            header: RecordHeader {
                kind: RECORD_CONFLICT,
                reserved: 0,
                ktime_ns: 42,
            },
            sender_mac: [2, 0, 0, 0, 0, 9],
            eth_src: [2, 0, 0, 0, 0, 8],
            sender_ip: [10, 99, 0, 100],
            op: op.to_be_bytes(),
            reserved: [0; 6],
        };
        // SAFETY: `ConflictRecord` is plain data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (&raw const record).cast::<u8>(),
                size_of::<ConflictRecord>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_an_advert_record() {
        let event = XdpEvent::decode(&advert_bytes()).unwrap();
        let XdpEvent::Advert { ktime_ns, packet } = event else {
            panic!("expected an advert, got {event:?}");
        };
        assert_eq!(ktime_ns, 123_456_789);
        assert_eq!(packet[0], 0);
        assert_eq!(packet[ADVERT_LEN - 1], (ADVERT_LEN - 1) as u8);
    }

    #[test]
    fn decodes_a_conflict_record() {
        assert_eq!(
            XdpEvent::decode(&conflict_bytes(ARP_OP_REPLY)).unwrap(),
            XdpEvent::Conflict {
                ktime_ns: 42,
                mac: [2, 0, 0, 0, 0, 9],
                eth_src: [2, 0, 0, 0, 0, 8],
                ip: Ipv4Addr::new(10, 99, 0, 100),
                reply: true,
            }
        );
        let request = XdpEvent::decode(&conflict_bytes(ARP_OP_REQUEST)).unwrap();
        assert!(matches!(request, XdpEvent::Conflict { reply: false, .. }));
    }

    #[test]
    fn records_of_the_wrong_size_are_errors() {
        let advert = advert_bytes();
        for len in [0, 7, 15, 16, advert.len() - 1] {
            assert!(
                matches!(
                    XdpEvent::decode(&advert[..len]),
                    Err(XdpError::BadRecord { .. })
                ),
                "{len} bytes"
            );
        }
        let mut longer = advert.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(matches!(
            XdpEvent::decode(&longer),
            Err(XdpError::BadRecord {
                kind: Some(RECORD_ADVERT),
                ..
            })
        ));
        // A conflict record is shorter than an advert: the kind decides the size, not the length.
        let mut conflict_as_advert = conflict_bytes(ARP_OP_REPLY);
        conflict_as_advert[..4].copy_from_slice(&RECORD_ADVERT.to_ne_bytes());
        assert!(XdpEvent::decode(&conflict_as_advert).is_err());
    }

    #[test]
    fn unknown_kinds_are_errors() {
        let mut record = advert_bytes();
        record[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert!(matches!(
            XdpEvent::decode(&record),
            Err(XdpError::BadRecord { kind: Some(99), .. })
        ));
    }
}
