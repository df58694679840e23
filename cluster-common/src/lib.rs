//! Types and constants shared by the agent (userspace) and the XDP program (kernel).
//!
//! Everything here is `no_std` so the eBPF crate can use it; anything that crosses a BPF map is
//! `#[repr(C)]` without implicit padding, and implements `aya::Pod` behind the `user` feature.
#![no_std]

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

/// Layout of the maps the XDP program shares with the agent.
pub mod xdp {
    /// Name of the per-CPU array of `u64` counters, indexed by the constants below.
    pub const COUNTERS_MAP: &str = "COUNTERS";
    /// Name of the XDP program in the object file.
    pub const PROGRAM: &str = "cluster_xdp";

    /// IPv4 frames carrying protocol 112 with a full CARP header (adverts, seen before any auth).
    pub const CTR_CARP_SEEN: u32 = 0;
    /// Frames that were not CARP and passed untouched.
    pub const CTR_PASSED_OTHER: u32 = 1;
    /// Protocol-112 frames too short to hold an IPv4 + CARP header.
    pub const CTR_CARP_MALFORMED: u32 = 2;
    /// Number of counters in the map.
    pub const COUNTERS_LEN: u32 = 3;

    /// Human names of the counters, in index order, for `status`.
    pub const COUNTER_NAMES: [&str; COUNTERS_LEN as usize] =
        ["carp_seen", "passed_other", "carp_malformed"];
}
