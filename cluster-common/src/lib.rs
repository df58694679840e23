//! Types and constants shared by the agent (userspace) and the XDP program (kernel).
//!
//! Everything here is `no_std` so the eBPF crate can use it; anything that crosses a BPF map is
//! `#[repr(C)]` without implicit padding, and implements `aya::Pod` behind the `user` feature.
#![no_std]

pub mod sha1;

/// CARP as UCARP 1.5.2 puts it on the wire.
pub mod carp {
    /// IP protocol number of CARP (shared with VRRP).
    pub const IPPROTO_CARP: u8 = 112;
    /// Adverts must arrive with TTL 255: proof they were not routed.
    pub const TTL: u8 = 255;
    pub const VERSION: u8 = 2;
    pub const TYPE_ADVERTISEMENT: u8 = 1;
    /// Length of the CARP header that follows the IPv4 header.
    pub const HEADER_LEN: usize = 36;
    /// IPv4 header without options, as every CARP implementation sends it.
    pub const IPV4_HEADER_LEN: usize = 20;
    /// `authlen` field value UCARP sends (in 32-bit words).
    pub const AUTHLEN: u8 = 7;
    /// Default multicast group 224.0.0.18.
    pub const DEFAULT_GROUP: [u8; 4] = [224, 0, 0, 18];
    /// advbase/advskew of the "bow-out" advert a master sends when it leaves gracefully.
    pub const BOW_OUT: u8 = 255;
}

/// Layout of the maps and ring-buffer records the XDP program shares with the agent.
pub mod xdp {
    use crate::{
        carp,
        sha1::{AdvertMessage, HmacKey},
    };

    /// Name of the XDP program in the object file.
    pub const PROGRAM: &str = "cluster_xdp";
    /// Name of the per-CPU array of `u64` counters, indexed by the `CTR_*` constants.
    pub const COUNTERS_MAP: &str = "COUNTERS";
    /// Name of the array holding each vhid's [`Config`] at the vhid's index.
    pub const CONFIG_MAP: &str = "CONFIG";
    /// Entries of [`CONFIG_MAP`]: one for every possible vhid (0 is never configured).
    pub const CONFIG_ENTRIES: u32 = 256;
    /// Name of the hash from a configured VIP (its four bytes read as a native-order `u32`) to
    /// its vhid: ARP and IPv4 frames find their vhid by address.
    pub const VIPS_MAP: &str = "VIPS";
    /// Most IPv4 VIPs the program knows, over all vhids.
    pub const VIPS_ENTRIES: u32 = 255;
    /// Name of the hash from a configured IPv6 VIP (its 16 bytes) to its vhid: neighbour
    /// solicitations and IPv6 frames find their vhid by address.
    pub const VIPS6_MAP: &str = "VIPS6";
    /// Most IPv6 VIPs the program knows, over all vhids.
    pub const VIPS6_ENTRIES: u32 = 255;
    /// Name of the LRU hash whose keys ([`ReplayKey`]) are the vhids and counters of adverts
    /// that passed authentication (and of the adverts this node sent); the values carry no
    /// meaning.
    pub const REPLAY_MAP: &str = "REPLAY";
    /// Name of the ring buffer carrying [`AdvertRecord`] and [`ConflictRecord`] to the agent.
    pub const EVENTS_MAP: &str = "EVENTS";

    /// Ring-buffer size in bytes (a power of two, as the kernel requires). Only authenticated,
    /// fresh adverts and ARP conflicts reach it, a few per second; the room is for bursts the
    /// agent has not drained yet.
    pub const EVENTS_BYTES: u32 = 256 * 1024;
    /// Counters remembered by the replay guard, in the kernel and in the agent.
    ///
    /// Only key holders' adverts enter, so nobody without the password can flush it; the size
    /// sets how far back a captured advert stays refused. Legitimate traffic is one advert per
    /// interval from the master (at most 256 per second, the fastest interval CARP can
    /// express), so 65 536 entries cover 18 hours at UCARP's usual one per second and over four
    /// minutes at the extreme. The kernel charges the preallocated LRU hash 80 bytes an entry,
    /// 5 MiB in all (measured with kernel 6.18): cheap for that window, where 16 384 entries
    /// would save 4 MiB and forget a captured advert four times sooner.
    pub const REPLAY_ENTRIES: u32 = 65_536;

    /// IPv4 + CARP bytes of an advert: exactly what the agent needs to verify it.
    pub const ADVERT_LEN: usize = carp::IPV4_HEADER_LEN + carp::HEADER_LEN;
    /// IPv6 + CARP bytes of an advert over IPv6.
    pub const ADVERT6_LEN: usize = 40 + carp::HEADER_LEN;

    /// Every IPv4 frame with protocol 112; the reason counters below split it by outcome.
    pub const CTR_CARP_SEEN: u32 = 0;
    /// Frames that were none of the cases below and passed untouched.
    pub const CTR_PASSED_OTHER: u32 = 1;
    /// Protocol-112 frames too short, with IP options, fragmented, or with an inconsistent
    /// length: no CARP implementation sends those.
    pub const CTR_CARP_MALFORMED: u32 = 2;
    /// Adverts that passed every check and reached the agent through the ring buffer.
    pub const CTR_ADVERT: u32 = 3;
    /// Protocol-112 frames with a TTL other than 255: routed, so not from this segment.
    pub const CTR_BAD_TTL: u32 = 4;
    /// Protocol-112 frames whose CARP version is not 2 (VRRPv3, for instance).
    pub const CTR_BAD_VERSION: u32 = 5;
    /// Adverts for a vhid this node does not serve on the interface they arrived on.
    pub const CTR_UNKNOWN_VHID: u32 = 6;
    /// Adverts for our vhid sent to an address other than the configured group.
    pub const CTR_WRONG_GROUP: u32 = 7;
    /// Adverts for our vhid whose counter was already accepted (or sent by this node): a
    /// captured advert sent again, perhaps from another source or with another skew.
    pub const CTR_REPLAYED: u32 = 8;
    /// Adverts for our vhid whose HMAC does not match: forged, or a peer with another password
    /// or VIP.
    pub const CTR_AUTH_FAILED: u32 = 9;
    /// Records lost because the agent had not drained the ring buffer.
    pub const CTR_RINGBUF_FULL: u32 = 10;
    /// ARP requests for the VIP answered from XDP while MASTER.
    pub const CTR_ARP_ANSWERED: u32 = 11;
    /// ARP requests for the VIP dropped while BACKUP.
    pub const CTR_ARP_DROPPED: u32 = 12;
    /// ARP frames claiming the VIP from another MAC while MASTER.
    pub const CTR_ARP_CONFLICT: u32 = 13;
    /// IPv4 or IPv6 frames to a VIP dropped while BACKUP with fencing on.
    pub const CTR_FENCED: u32 = 14;
    /// TCP connection requests (SYN without ACK) to the VIP dropped while MASTER and draining.
    pub const CTR_DRAINED: u32 = 15;
    /// Neighbour solicitations for an IPv6 VIP answered from XDP while MASTER.
    pub const CTR_ND_ANSWERED: u32 = 16;
    /// Neighbour solicitations for an IPv6 VIP dropped while BACKUP.
    pub const CTR_ND_DROPPED: u32 = 17;
    /// Number of counters in the map.
    pub const COUNTERS_LEN: u32 = 18;

    /// Human names of the counters, in index order, for `status`.
    pub const COUNTER_NAMES: [&str; COUNTERS_LEN as usize] = [
        "carp_seen",
        "passed_other",
        "carp_malformed",
        "advert",
        "bad_ttl",
        "bad_version",
        "unknown_vhid",
        "wrong_group",
        "replayed",
        "auth_failed",
        "ringbuf_full",
        "arp_answered",
        "arp_dropped",
        "arp_conflict",
        "fenced",
        "drained",
        "nd_answered",
        "nd_dropped",
    ];

    /// [`Config::flags`]: the agent has written a configuration. Until then the program only
    /// counts, so attaching it before the configuration is known changes no traffic.
    pub const FLAG_ENABLED: u8 = 1 << 0;
    /// [`Config::flags`]: this node is MASTER for the vhid.
    pub const FLAG_MASTER: u8 = 1 << 1;
    /// [`Config::flags`]: drop IPv4 traffic to the VIP while BACKUP.
    pub const FLAG_FENCE: u8 = 1 << 2;
    /// [`Config::flags`]: while MASTER, leave ARP requests for the VIP to the kernel instead of
    /// answering them with XDP_TX. For interfaces where XDP_TX is lost, such as a veth in native
    /// mode whose peer has neither an XDP program nor GRO.
    pub const FLAG_ARP_VIA_STACK: u8 = 1 << 3;
    /// [`Config::flags`]: hold off new TCP connections to the VIP (SYN without ACK): drop
    /// each, and report it as a [`SynRecord`], MASTER or BACKUP. A planned switchover sets it
    /// so that the open connections can finish before the VIP moves, and the agent hands the
    /// held requests to the next master. While it is set, ARP claiming the VIP from another
    /// MAC is reported while BACKUP too: the next master announcing itself.
    pub const FLAG_DRAIN: u8 = 1 << 4;

    /// What the agent tells the program about one vhid, at the vhid's index of [`CONFIG_MAP`].
    ///
    /// An array indexed by the advert's own vhid byte costs an advert one array lookup however
    /// many vhids the agent serves; frames for a VIP pay one hash lookup in [`VIPS_MAP`] first.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        /// The destination adverts to us carry, network order: the multicast group (also
        /// inside broadcast frames), or with unicast peers this node's own address.
        pub group: [u8; 4],
        /// The NIC's MAC, used as the sender of ARP replies and to tell our own claims apart.
        pub mac: [u8; 6],
        pub vhid: u8,
        /// `FLAG_*` bits.
        pub flags: u8,
        /// The interface the vhid lives on: the same vhid on another segment is another
        /// cluster's, and its frames pass untouched.
        pub ifindex: u32,
        /// HMAC-SHA1 states derived from the password, so the program authenticates adverts
        /// itself: a secret, redacted from `Debug`.
        pub key: HmacKey,
        /// The vhid's addresses as adverts authenticate them, the inner block but for the
        /// counter.
        pub message: AdvertMessage,
    }

    /// Key of [`REPLAY_MAP`]: counters are per vhid, so one vhid's cannot shadow another's.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct ReplayKey {
        pub counter: u64,
        pub vhid: u64,
    }

    /// [`RecordHeader::kind`] of an [`AdvertRecord`].
    pub const RECORD_ADVERT: u32 = 1;
    /// [`RecordHeader::kind`] of a [`ConflictRecord`].
    pub const RECORD_CONFLICT: u32 = 2;
    /// [`RecordHeader::kind`] of a [`SynRecord`].
    pub const RECORD_SYN: u32 = 3;
    /// [`RecordHeader::kind`] of an [`AdvertRecord6`].
    pub const RECORD_ADVERT6: u32 = 4;
    /// Longest IPv4 packet a [`SynRecord`] keeps: a 20-byte IPv4 header (no options) and a TCP
    /// header with the most options (60 bytes).
    pub const SYN_MAX: usize = 80;

    /// Leads every ring-buffer record, so the reader can tell the kind before trusting the size.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RecordHeader {
        /// `RECORD_*`.
        pub kind: u32,
        pub reserved: u32,
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the frame was seen.
        pub ktime_ns: u64,
    }

    /// An advert that passed the kernel's checks, authentication and replay guard included;
    /// the agent checks it once more, as it does adverts from its raw socket.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct AdvertRecord {
        pub header: RecordHeader,
        /// The IPv4 header and CARP header exactly as received.
        pub packet: [u8; ADVERT_LEN],
    }

    /// An advert over IPv6 that passed the same checks as an [`AdvertRecord`].
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct AdvertRecord6 {
        pub header: RecordHeader,
        /// The IPv6 header and CARP header exactly as received.
        pub packet: [u8; ADVERT6_LEN],
        /// Keeps the record a multiple of 8 bytes.
        pub reserved: [u8; 4],
    }

    /// An ARP frame claiming the VIP from a MAC that is not ours while we are MASTER.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ConflictRecord {
        pub header: RecordHeader,
        /// ARP sender hardware address: the MAC that claims the VIP.
        pub sender_mac: [u8; 6],
        /// Ethernet source of the frame, which may differ from the ARP sender.
        pub eth_src: [u8; 6],
        /// ARP sender protocol address (the VIP), network order.
        pub sender_ip: [u8; 4],
        /// ARP operation, network order: 1 request (gratuitous), 2 reply.
        pub op: [u8; 2],
        pub reserved: [u8; 6],
    }

    /// A connection request to the VIP (TCP SYN without ACK) that a drain held off: the agent
    /// hands it to the next master once that one is open, so the client need not wait for its
    /// own retransmission (a second, for Linux).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SynRecord {
        pub header: RecordHeader,
        /// Bytes of `packet` that hold the IPv4 packet (its total length).
        pub len: u32,
        pub reserved: u32,
        /// The IPv4 packet exactly as received, checksums included.
        pub packet: [u8; SYN_MAX],
    }

    /// ARP operation codes as they appear in [`ConflictRecord::op`].
    pub const ARP_OP_REQUEST: u16 = 1;
    pub const ARP_OP_REPLY: u16 = 2;

    // The sizes equal the sum of the fields: proof there is no implicit padding for either side
    // to disagree on. Records are 8-byte multiples because the ring buffer aligns to 8.
    const _: () = assert!(size_of::<HmacKey>() == 2 * 5 * 4);
    const _: () = assert!(size_of::<AdvertMessage>() == 16 * 4 + 2 + 2);
    const _: () = assert!(
        size_of::<Config>()
            == 4 + 6 + 1 + 1 + 4 + size_of::<HmacKey>() + size_of::<AdvertMessage>()
    );
    const _: () = assert!(size_of::<ReplayKey>() == 16);
    const _: () = assert!(size_of::<SynRecord>() == size_of::<RecordHeader>() + 4 + 4 + SYN_MAX);
    const _: () = assert!(size_of::<RecordHeader>() == 16);
    const _: () = assert!(size_of::<AdvertRecord>() == 16 + ADVERT_LEN);
    const _: () = assert!(size_of::<AdvertRecord>().is_multiple_of(8));
    const _: () = assert!(size_of::<AdvertRecord6>() == 16 + ADVERT6_LEN + 4);
    const _: () = assert!(size_of::<AdvertRecord6>().is_multiple_of(8));
    const _: () = assert!(size_of::<ConflictRecord>() == 16 + 6 + 6 + 4 + 2 + 6);
    const _: () = assert!(size_of::<ConflictRecord>().is_multiple_of(8));

    #[cfg(feature = "user")]
    mod pod {
        // SAFETY: all of these are `#[repr(C)]`, contain only integers and byte arrays, and have
        // no padding (asserted above), so every bit pattern is a valid value.
        unsafe impl aya::Pod for super::Config {}
        unsafe impl aya::Pod for super::ReplayKey {}
        unsafe impl aya::Pod for super::RecordHeader {}
        unsafe impl aya::Pod for super::AdvertRecord {}
        unsafe impl aya::Pod for super::AdvertRecord6 {}
        unsafe impl aya::Pod for super::ConflictRecord {}
        unsafe impl aya::Pod for super::SynRecord {}
    }
}
