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
    use crate::carp;

    /// Name of the XDP program in the object file.
    pub const PROGRAM: &str = "cluster_xdp";
    /// Name of the per-CPU array of `u64` counters, indexed by the `CTR_*` constants.
    pub const COUNTERS_MAP: &str = "COUNTERS";
    /// Name of the one-entry array holding [`Config`] at index 0.
    pub const CONFIG_MAP: &str = "CONFIG";
    /// Name of the LRU hash of [`RateState`] keyed by an advert's IPv4 source address.
    pub const RATE_MAP: &str = "RATE";
    /// Name of the one-entry array holding the window shared by all sources but the master: a
    /// flood spread over more sources than [`RATE_ENTRIES`] would otherwise evict its own
    /// windows and pass unlimited.
    pub const RATE_ALL_MAP: &str = "RATE_ALL";
    /// Name of the ring buffer carrying [`AdvertRecord`] and [`ConflictRecord`] to the agent.
    pub const EVENTS_MAP: &str = "EVENTS";

    /// Ring-buffer size in bytes (a power of two, as the kernel requires). Legitimate adverts
    /// arrive a few per second; the room is for bursts the agent has not drained yet, such as
    /// a flood from many spoofed sources, each of which stays under the per-source limit.
    pub const EVENTS_BYTES: u32 = 256 * 1024;
    /// Sources tracked by the rate limiter. The map is LRU, so a flood of spoofed sources evicts
    /// old entries instead of failing; real peers re-enter with a fresh window.
    pub const RATE_ENTRIES: u32 = 1024;
    /// Adverts per second one source may send before XDP drops the rest of that second. The
    /// shortest interval CARP can express (advbase 0, advskew 1) is 1/256 s, so 300 never limits
    /// a real peer, yet caps the HMAC work one flooding source can cause.
    pub const DEFAULT_RATE_LIMIT_PER_SEC: u32 = 300;
    /// Length of the window the rate limit counts in.
    pub const RATE_WINDOW_NS: u64 = 1_000_000_000;

    /// IPv4 + CARP bytes of an advert: exactly what the agent needs to verify it.
    pub const ADVERT_LEN: usize = carp::IPV4_HEADER_LEN + carp::HEADER_LEN;

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
    /// Adverts for a vhid other than the configured one, or seen before the agent configured one.
    pub const CTR_UNKNOWN_VHID: u32 = 6;
    /// Adverts for our vhid sent to an address other than the configured group.
    pub const CTR_WRONG_GROUP: u32 = 7;
    /// Adverts dropped because their source exceeded the per-source rate limit.
    pub const CTR_RATE_LIMITED: u32 = 8;
    /// Records lost because the agent had not drained the ring buffer.
    pub const CTR_RINGBUF_FULL: u32 = 9;
    /// ARP requests for the VIP answered from XDP while MASTER.
    pub const CTR_ARP_ANSWERED: u32 = 10;
    /// ARP requests for the VIP dropped while BACKUP.
    pub const CTR_ARP_DROPPED: u32 = 11;
    /// ARP frames claiming the VIP from another MAC while MASTER.
    pub const CTR_ARP_CONFLICT: u32 = 12;
    /// IPv4 frames to the VIP dropped while BACKUP with fencing on.
    pub const CTR_FENCED: u32 = 13;
    /// Number of counters in the map.
    pub const COUNTERS_LEN: u32 = 14;

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
        "rate_limited",
        "ringbuf_full",
        "arp_answered",
        "arp_dropped",
        "arp_conflict",
        "fenced",
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

    /// What the agent tells the program, at index 0 of [`CONFIG_MAP`].
    ///
    /// One agent serves one vhid on one interface, as UCARP does, so a single entry is enough
    /// and every frame pays for one array lookup rather than a hash lookup.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        /// The virtual IP, network order.
        pub vip: [u8; 4],
        /// The multicast (or broadcast) address adverts are sent to, network order.
        pub group: [u8; 4],
        /// The NIC's MAC, used as the sender of ARP replies and to tell our own claims apart.
        pub mac: [u8; 6],
        pub vhid: u8,
        /// `FLAG_*` bits.
        pub flags: u8,
        /// Adverts per second and source before dropping, and also the budget per second for
        /// all sources together other than `master`; 0 disables both.
        pub rate_limit_per_sec: u32,
        /// The master this BACKUP follows (network order; zero when none): exempt from the
        /// limits, so a flood from spoofed sources can never crowd its adverts out.
        pub master: [u8; 4],
    }

    /// Per-source state of the rate limiter: a fixed one-second window.
    ///
    /// Updated without atomics from whichever CPU receives the advert, so concurrent adverts
    /// from one source may lose an increment; the limit is a flood guard, not an exact quota.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RateState {
        /// `bpf_ktime_get_ns` of the first advert of the current window.
        pub window_start_ns: u64,
        /// Adverts seen in the current window.
        pub count: u32,
        pub reserved: u32,
    }

    /// [`RecordHeader::kind`] of an [`AdvertRecord`].
    pub const RECORD_ADVERT: u32 = 1;
    /// [`RecordHeader::kind`] of a [`ConflictRecord`].
    pub const RECORD_CONFLICT: u32 = 2;

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

    /// An advert that passed the kernel's checks; the agent still verifies its HMAC.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct AdvertRecord {
        pub header: RecordHeader,
        /// The IPv4 header and CARP header exactly as received.
        pub packet: [u8; ADVERT_LEN],
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

    /// ARP operation codes as they appear in [`ConflictRecord::op`].
    pub const ARP_OP_REQUEST: u16 = 1;
    pub const ARP_OP_REPLY: u16 = 2;

    // The sizes equal the sum of the fields: proof there is no implicit padding for either side
    // to disagree on. Records are 8-byte multiples because the ring buffer aligns to 8.
    const _: () = assert!(size_of::<Config>() == 4 + 4 + 6 + 1 + 1 + 4 + 4);
    const _: () = assert!(size_of::<RateState>() == 16);
    const _: () = assert!(size_of::<RecordHeader>() == 16);
    const _: () = assert!(size_of::<AdvertRecord>() == 16 + ADVERT_LEN);
    const _: () = assert!(size_of::<AdvertRecord>().is_multiple_of(8));
    const _: () = assert!(size_of::<ConflictRecord>() == 16 + 6 + 6 + 4 + 2 + 6);
    const _: () = assert!(size_of::<ConflictRecord>().is_multiple_of(8));

    #[cfg(feature = "user")]
    mod pod {
        // SAFETY: all of these are `#[repr(C)]`, contain only integers and byte arrays, and have
        // no padding (asserted above), so every bit pattern is a valid value.
        unsafe impl aya::Pod for super::Config {}
        unsafe impl aya::Pod for super::RateState {}
        unsafe impl aya::Pod for super::RecordHeader {}
        unsafe impl aya::Pod for super::AdvertRecord {}
        unsafe impl aya::Pod for super::ConflictRecord {}
    }
}
