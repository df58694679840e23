//! XDP program of the cluster agent.
//!
//! It does the per-packet work of the CARP agent before the network stack sees the frame:
//! - CARP adverts for a configured vhid are authenticated here (HMAC-SHA1 with states the
//!   agent derives from the password) and checked against a replay guard; only fresh adverts
//!   from key holders go to the agent through a ring buffer, stamped with the kernel receive
//!   time. Every advert for the vhid is then dropped: the agent reads adverts from the ring
//!   buffer only while XDP is on, so passing them would make the stack deliver each one a
//!   second time to a socket nobody reads. Nothing here decides the election; the agent checks
//!   each advert again and runs the state machine. There is no rate limit: a limit keyed on
//!   anything a forger controls (source address, arrival rate) lets the forger choose whose
//!   genuine adverts it crowds out, while authentication lets nothing of theirs through at all.
//! - ARP requests for the VIP are answered here while MASTER and dropped while BACKUP, so the
//!   answer follows the agent's role at once, whatever the kernel's address list says during a
//!   transition. ARP frames claiming the VIP from another MAC while MASTER are reported.
//! - IPv4 traffic to the VIP is dropped while BACKUP (fencing), so a VIP that lingers on the
//!   interface during a transition cannot accept writes meant for the master.
//!
//! One program and one set of maps serve every vhid of the agent, on every interface it is
//! attached to: adverts find their vhid's configuration by the vhid byte (an array index),
//! ARP and IPv4 frames by the address they concern (a hash lookup). Everything it does not
//! recognise passes untouched, including protocol-112 frames that are not adverts for one of
//! our vhids on the interface they came in on: another VRRP or CARP instance on this host may
//! want them. Until the agent writes a configuration the program only counts. There is no per-packet logging: the
//! per-CPU counters are the observability.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use cluster_common::{
    carp,
    sha1,
    xdp::{
        self as layout, ADVERT_LEN, ADVERT6_LEN, AdvertRecord, AdvertRecord6, Config, ConflictRecord, FLAG_ARP_VIA_STACK,
        FLAG_DRAIN, FLAG_ENABLED, FLAG_FENCE, FLAG_MASTER, RecordHeader, ReplayKey, SynRecord,
    },
};

/// Index order and names are `cluster_common::xdp::CTR_*` / `COUNTER_NAMES`.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(layout::COUNTERS_LEN, 0);

/// `cluster_common::xdp::CONFIG_MAP`: each vhid's configuration and role at its index.
#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(layout::CONFIG_ENTRIES, 0);

/// `cluster_common::xdp::VIPS_MAP`: the vhid of each configured VIP.
#[map(name = "VIPS")]
static VIPS: HashMap<u32, u32> = HashMap::with_max_entries(layout::VIPS_ENTRIES, 0);

/// `cluster_common::xdp::VIPS6_MAP`: the vhid of each configured IPv6 VIP.
#[map(name = "VIPS6")]
static VIPS6: HashMap<[u8; 16], u32> = HashMap::with_max_entries(layout::VIPS6_ENTRIES, 0);

/// `cluster_common::xdp::REPLAY_MAP`: counters of authenticated adverts (and of our own, which
/// the agent adds). LRU, so the oldest counters make room; only key holders can add any.
#[map(name = "REPLAY")]
static REPLAY: LruHashMap<ReplayKey, u8> = LruHashMap::with_max_entries(layout::REPLAY_ENTRIES, 0);

/// `cluster_common::xdp::EVENTS_MAP`: adverts and conflicts for the agent.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(layout::EVENTS_BYTES, 0);

const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_ICMPV6: u8 = 58;
const ND_SOLICITATION: u8 = 135;
const ND_ADVERTISEMENT: u8 = 136;
/// Neighbour discovery options: the sender's and the target's link-layer address.
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;
/// The solicited and override flags of a neighbour advertisement (RFC 4861 4.4).
const NA_SOLICITED_OVERRIDE: u8 = 0x60;
/// The ICMPv6 part of a solicitation with one link-layer option, and of the answer built from it.
const ND_LEN: u16 = 32;
/// IPv4 version 4 with a 20-byte header: CARP is never sent with IP options.
const IPV4_VIHL: u8 = 0x45;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// More-fragments flag and fragment offset; the reserved and don't-fragment bits are ignored.
const IPV4_FRAGMENT_MASK: u16 = 0x3fff;
const ARP_HTYPE_ETHERNET: u16 = 1;
/// What a map insert with `BPF_NOEXIST` returns when the key is already there.
const EEXIST: i32 = 17;

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    vihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

/// The CARP header (UCARP's `struct carp_header`).
#[repr(C)]
struct CarpHdr {
    version_type: u8,
    vhid: u8,
    advskew: u8,
    authlen: u8,
    demote: u8,
    advbase: u8,
    checksum: [u8; 2],
    counter: [u8; 8],
    md: [u8; sha1::DIGEST_LEN],
}

/// IPv4 + CARP as one struct, so a single bounds check covers every byte that is copied out.
#[repr(C)]
struct Advert {
    ip: Ipv4Hdr,
    carp: CarpHdr,
}

/// IPv6 + CARP, likewise.
#[repr(C)]
struct Advert6 {
    ip: Ipv6Hdr,
    carp: CarpHdr,
}

/// The start of a TCP header, up to its flags: all a drain needs to tell a connection request.
#[repr(C)]
struct TcpHead {
    ports: [u8; 4],
    seq: [u8; 4],
    ack: [u8; 4],
    offset: u8,
    flags: u8,
}

/// An Ethernet frame carrying IPv4-over-Ethernet ARP, the only kind that can concern the VIP.
#[repr(C)]
struct ArpFrame {
    eth: EthHdr,
    htype: [u8; 2],
    ptype: [u8; 2],
    hlen: u8,
    plen: u8,
    op: [u8; 2],
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// An Ethernet frame with a neighbour solicitation, up to its target address.
#[repr(C)]
struct NsHead {
    eth: EthHdr,
    ip: Ipv6Hdr,
    icmp_type: u8,
    code: u8,
    checksum: [u8; 2],
    reserved: [u8; 4],
    target: [u8; 16],
}

/// A solicitation that carries the sender's link-layer address: the advertisement answering it
/// has exactly its size, so it is built in place.
#[repr(C)]
struct NsFrame {
    head: NsHead,
    opt_type: u8,
    opt_len: u8,
    opt_mac: [u8; 6],
}

const _: () = assert!(size_of::<EthHdr>() == ETH_LEN);
const _: () = assert!(size_of::<Ipv6Hdr>() == 40);
const _: () = assert!(size_of::<Advert6>() == ADVERT6_LEN);
const _: () = assert!(size_of::<NsFrame>() == ETH_LEN + 40 + ND_LEN as usize);
const _: () = assert!(size_of::<Ipv4Hdr>() == carp::IPV4_HEADER_LEN);
const _: () = assert!(size_of::<CarpHdr>() == carp::HEADER_LEN);
const _: () = assert!(size_of::<Advert>() == ADVERT_LEN);
const _: () = assert!(size_of::<ArpFrame>() == ETH_LEN + 28);

/// Entry point; the function name is the program name the agent looks up
/// (`cluster_common::xdp::PROGRAM`).
#[xdp]
pub fn cluster_xdp(ctx: XdpContext) -> u32 {
    let (action, counter) = classify(&ctx);
    bump(counter);
    action
}

/// Returns the verdict and the one counter that explains it.
#[inline(always)]
fn classify(ctx: &XdpContext) -> (u32, u32) {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return pass();
    };
    // SAFETY: `ptr_at` proved the header lies inside the frame.
    let ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    if ether_type == ETHERTYPE_IPV4 {
        ipv4(ctx)
    } else if ether_type == ETHERTYPE_ARP {
        arp(ctx)
    } else if ether_type == ETHERTYPE_IPV6 {
        match ptr_at::<Ipv6Hdr>(ctx, ETH_LEN) {
            // SAFETY: `ptr_at` proved the header lies inside the frame.
            Some(ip) if unsafe { (*ip).next_header } == carp::IPPROTO_CARP => {
                bump(layout::CTR_CARP_SEEN);
                advert6(ctx)
            }
            _ => ipv6(ctx),
        }
    } else {
        pass()
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext) -> (u32, u32) {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN) else {
        return pass();
    };
    // SAFETY: `ptr_at` proved the header lies inside the frame.
    let ip = unsafe { &*ip };
    if ip.proto == carp::IPPROTO_CARP {
        bump(layout::CTR_CARP_SEEN);
        return advert(ctx);
    }
    let Some(config) = vip_config(ctx, addr(&ip.dst)) else {
        return pass();
    };
    if config.flags & (FLAG_ENABLED | FLAG_DRAIN) == FLAG_ENABLED | FLAG_DRAIN
        && ip.proto == IPPROTO_TCP
        && ip.vihl == IPV4_VIHL
        && let Some(tcp) = ptr_at::<TcpHead>(ctx, ETH_LEN + carp::IPV4_HEADER_LEN)
    {
        // SAFETY: `ptr_at` proved the header lies inside the frame.
        let flags = unsafe { (*tcp).flags };
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            hold_syn(ctx, usize::from(u16::from_be_bytes(ip.tot_len)));
            return (xdp_action::XDP_DROP, layout::CTR_DRAINED);
        }
    }
    if config.flags & (FLAG_ENABLED | FLAG_MASTER | FLAG_FENCE) == FLAG_ENABLED | FLAG_FENCE {
        return (xdp_action::XDP_DROP, layout::CTR_FENCED);
    }
    pass()
}

/// Reports a held connection request (see `FLAG_DRAIN`). TCP headers grow in 4-byte steps,
/// so the packet is one of eleven lengths, each copied with a size the verifier can see; a
/// request of any other length (one carrying data) is dropped unreported, and its client
/// sends it again by itself.
#[inline(always)]
fn hold_syn(ctx: &XdpContext, tot_len: usize) {
    match tot_len {
        40 => copy_syn::<40>(ctx),
        44 => copy_syn::<44>(ctx),
        48 => copy_syn::<48>(ctx),
        52 => copy_syn::<52>(ctx),
        56 => copy_syn::<56>(ctx),
        60 => copy_syn::<60>(ctx),
        64 => copy_syn::<64>(ctx),
        68 => copy_syn::<68>(ctx),
        72 => copy_syn::<72>(ctx),
        76 => copy_syn::<76>(ctx),
        80 => copy_syn::<80>(ctx),
        _ => {}
    }
}

#[inline(always)]
fn copy_syn<const N: usize>(ctx: &XdpContext) {
    let Some(packet) = ptr_at::<[u8; N]>(ctx, ETH_LEN) else {
        return;
    };
    // Connection requests are anyone's to send, and the ring also carries every vhid's
    // adverts: they may fill half of it, never the half the adverts need.
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) > u64::from(layout::EVENTS_BYTES / 2) {
        bump(layout::CTR_RINGBUF_FULL);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<SynRecord>(0) else {
        bump(layout::CTR_RINGBUF_FULL);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at reserved, 8-byte aligned ring-buffer memory of the record's
    // size, which we own until submit; zeroed word by word first (volatile, so that no
    // `memset` call appears), then filled from the bounds-checked packet.
    unsafe {
        let words = record.cast::<u64>();
        for word in 0..size_of::<SynRecord>() / 8 {
            words.add(word).write_volatile(0);
        }
        (*record).header.kind = layout::RECORD_SYN;
        (*record).header.ktime_ns = bpf_ktime_get_ns();
        (*record).len = N as u32;
        core::ptr::copy_nonoverlapping(
            packet.cast::<u8>(),
            (&raw mut (*record).packet).cast::<u8>(),
            N,
        );
    }
    entry.submit(0);
}

/// UCARP's receive checks in its order (HMAC included; the checksums are left to the agent),
/// with the replay guard around the HMAC.
#[inline(always)]
fn advert(ctx: &XdpContext) -> (u32, u32) {
    let Some(packet) = ptr_at::<Advert>(ctx, ETH_LEN) else {
        return (xdp_action::XDP_PASS, layout::CTR_CARP_MALFORMED);
    };
    // SAFETY: `ptr_at` proved all ADVERT_LEN bytes lie inside the frame.
    let advert = unsafe { &*packet };
    let ip = &advert.ip;
    let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
    // A pointer compared with `data_end` rather than a length computed from two packet pointers,
    // which the verifier only allows to privileged loaders.
    if ip.vihl != IPV4_VIHL
        || tot_len < ADVERT_LEN
        || ctx.data() + ETH_LEN + tot_len > ctx.data_end()
        || u16::from_be_bytes(ip.frag) & IPV4_FRAGMENT_MASK != 0
    {
        return (xdp_action::XDP_PASS, layout::CTR_CARP_MALFORMED);
    }
    if ip.ttl != carp::TTL {
        return (xdp_action::XDP_PASS, layout::CTR_BAD_TTL);
    }
    let config = match advert_config(ctx, &advert.carp) {
        Ok(config) => config,
        Err(verdict) => return verdict,
    };
    // An IPv6 vhid's adverts travel over IPv6 only.
    if config.message.v6 != 0 || addr(&ip.dst) != addr(&config.group) {
        return (xdp_action::XDP_PASS, layout::CTR_WRONG_GROUP);
    }
    if let Err(verdict) = authenticate(config, &advert.carp) {
        return verdict;
    }
    let Some(mut entry) = EVENTS.reserve::<AdvertRecord>(0) else {
        // Only a stalled agent lets the ring fill with authenticated adverts; the raw socket is
        // not read while XDP runs, so passing the frame on would not help.
        return (xdp_action::XDP_DROP, layout::CTR_RINGBUF_FULL);
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at reserved ring-buffer memory of the record's size, which we own
    // until submit; the source is the bounds-checked packet. Field-wise writes initialise all of
    // it, padding-free by construction.
    unsafe {
        (*record).header = advert_header(layout::RECORD_ADVERT);
        core::ptr::copy_nonoverlapping(
            packet.cast::<u8>(),
            (&raw mut (*record).packet).cast::<u8>(),
            ADVERT_LEN,
        );
    }
    entry.submit(0);
    (xdp_action::XDP_DROP, layout::CTR_ADVERT)
}

/// The same checks for an advert over IPv6, as BSD CARP sends it: to ff02::12, hop limit 255,
/// no extension header. Only an IPv6 vhid's adverts count.
///
/// A function of its own, as [`ipv6`] is, with the HMAC call below it: the stack of the three
/// would exceed 512 bytes if they were one chain.
#[inline(never)]
fn advert6(ctx: &XdpContext) -> (u32, u32) {
    let Some(packet) = ptr_at::<Advert6>(ctx, ETH_LEN) else {
        return (xdp_action::XDP_PASS, layout::CTR_CARP_MALFORMED);
    };
    // SAFETY: `ptr_at` proved all ADVERT6_LEN bytes lie inside the frame.
    let advert = unsafe { &*packet };
    let ip = &advert.ip;
    let payload = usize::from(u16::from_be_bytes(ip.payload_len));
    if ip.version_class_flow[0] >> 4 != 6
        || payload < carp::HEADER_LEN
        || ctx.data() + ETH_LEN + size_of::<Ipv6Hdr>() + payload > ctx.data_end()
    {
        return (xdp_action::XDP_PASS, layout::CTR_CARP_MALFORMED);
    }
    if ip.hop_limit != carp::TTL {
        return (xdp_action::XDP_PASS, layout::CTR_BAD_TTL);
    }
    let config = match advert_config(ctx, &advert.carp) {
        Ok(config) => config,
        Err(verdict) => return verdict,
    };
    let group = Addr6::read(&ip.dst);
    if config.message.v6 == 0 || group.0 != GROUP6.0 {
        return (xdp_action::XDP_PASS, layout::CTR_WRONG_GROUP);
    }
    if let Err(verdict) = authenticate(config, &advert.carp) {
        return verdict;
    }
    let Some(mut entry) = EVENTS.reserve::<AdvertRecord6>(0) else {
        return (xdp_action::XDP_DROP, layout::CTR_RINGBUF_FULL);
    };
    let record = entry.as_mut_ptr();
    // SAFETY: as in `advert`; the padding word is written too.
    unsafe {
        (*record).header = advert_header(layout::RECORD_ADVERT6);
        (*record).reserved = [0; 4];
        core::ptr::copy_nonoverlapping(
            packet.cast::<u8>(),
            (&raw mut (*record).packet).cast::<u8>(),
            ADVERT6_LEN,
        );
    }
    entry.submit(0);
    (xdp_action::XDP_DROP, layout::CTR_ADVERT)
}

/// `ff02::12` as [`Addr6`] reads it.
const GROUP6: Addr6 = Addr6([
    u32::from_ne_bytes([0xff, 0x02, 0, 0]),
    0,
    0,
    u32::from_ne_bytes([0, 0, 0, 0x12]),
]);

/// The configuration of the advert's vhid on the interface it arrived on.
#[inline(always)]
fn advert_config(ctx: &XdpContext, carp_hdr: &CarpHdr) -> Result<&'static Config, (u32, u32)> {
    if carp_hdr.version_type >> 4 != carp::VERSION {
        return Err((xdp_action::XDP_PASS, layout::CTR_BAD_VERSION));
    }
    let Some(config) = CONFIG.get(u32::from(carp_hdr.vhid)) else {
        return Err((xdp_action::XDP_PASS, layout::CTR_UNKNOWN_VHID));
    };
    if config.flags & FLAG_ENABLED == 0
        || carp_hdr.vhid != config.vhid
        || config.ifindex != ingress_ifindex(ctx)
    {
        return Err((xdp_action::XDP_PASS, layout::CTR_UNKNOWN_VHID));
    }
    Ok(config)
}

/// The replay guard around the HMAC check: `Ok` for a fresh, authentic advert, whose counter
/// the guard then remembers.
#[inline(always)]
fn authenticate(config: &Config, carp_hdr: &CarpHdr) -> Result<(), (u32, u32)> {
    // A counter already accepted is refused before the HMAC is even computed: replays of a
    // captured advert are the cheap case, and the HMAC covers neither the source address nor
    // the timing fields, so a replay could otherwise claim any of them.
    let counter = u64::from_be_bytes(carp_hdr.counter);
    let key = ReplayKey {
        counter,
        vhid: u64::from(carp_hdr.vhid),
    };
    // SAFETY: the value is only tested for presence, never read.
    if unsafe { REPLAY.get(&key) }.is_some() {
        return Err((xdp_action::XDP_DROP, layout::CTR_REPLAYED));
    }
    let expected = expected_md(config, counter);
    if !sha1::digests_equal(&expected, &sha1::digest_words(&carp_hdr.md)) {
        return Err((xdp_action::XDP_DROP, layout::CTR_AUTH_FAILED));
    }
    // Only now may the counter enter the guard: UCARP's counters are predictable (the last one
    // heard plus one), so remembering unauthenticated ones would let a forger refuse genuine
    // adverts in advance. NOEXIST settles two copies racing on two CPUs: one of them loses.
    // Any other failure lets the advert through; the agent's own guard still stands behind.
    if let Err(error) = REPLAY.insert(key, 0, u64::from(BPF_NOEXIST))
        && error == -EEXIST
    {
        return Err((xdp_action::XDP_DROP, layout::CTR_REPLAYED));
    }
    Ok(())
}

#[inline(always)]
fn advert_header(kind: u32) -> RecordHeader {
    RecordHeader {
        kind,
        reserved: 0,
        // SAFETY: a helper without arguments or side effects.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// The HMAC an advert for `config`'s vhid with `counter` must carry, as five big-endian words.
///
/// A function of its own in the object (a BPF-to-BPF call), so that its thousands of SHA-1
/// instructions and their stack slots stay out of the path every other frame takes. Everything
/// crosses the call by value or as a map pointer: the verifier refuses the arithmetic LLVM
/// emits on a packet pointer passed to another function.
#[inline(never)]
fn expected_md(config: &Config, counter: u64) -> [u32; 5] {
    config.key.advert_md(&config.message, &counter.to_be_bytes())
}

#[inline(always)]
fn arp(ctx: &XdpContext) -> (u32, u32) {
    let Some(frame) = ptr_at::<ArpFrame>(ctx, 0) else {
        return pass();
    };
    // SAFETY: `ptr_at` proved the whole ARP frame lies inside the packet, and nothing else
    // references it while this program runs.
    let frame = unsafe { &mut *frame };
    if u16::from_be_bytes(frame.htype) != ARP_HTYPE_ETHERNET
        || u16::from_be_bytes(frame.ptype) != ETHERTYPE_IPV4
        || frame.hlen != 6
        || frame.plen != 4
    {
        return pass();
    }
    let op = u16::from_be_bytes(frame.op);
    if let Some(config) = vip_config(ctx, addr(&frame.spa)) {
        // Someone announces the VIP. While BACKUP that is the master doing its job; while MASTER
        // from a MAC other than ours it is a split brain or a misconfigured host; while draining
        // it is the next master, whom held connection requests wait for. The frame still
        // passes: the agent decides what to do, and other listeners may want to see it.
        if (config.flags & FLAG_MASTER != 0 || config.flags & FLAG_DRAIN != 0)
            && (op == layout::ARP_OP_REQUEST || op == layout::ARP_OP_REPLY)
            && !same_mac(&frame.sha, &config.mac)
        {
            report_conflict(frame);
            return (xdp_action::XDP_PASS, layout::CTR_ARP_CONFLICT);
        }
        return pass();
    }
    if op != layout::ARP_OP_REQUEST {
        return pass();
    }
    let vip = addr(&frame.tpa);
    let Some(config) = vip_config(ctx, vip) else {
        return pass();
    };
    if config.flags & FLAG_MASTER == 0 {
        return (xdp_action::XDP_DROP, layout::CTR_ARP_DROPPED);
    }
    if config.flags & FLAG_ARP_VIA_STACK != 0 {
        return pass();
    }

    // Turn the request into the reply the kernel would send, in place, and bounce it out of the
    // interface it came in on. Like the kernel, answer to the requester's ARP sender address.
    // Addresses travel through registers: array copies between packet fields may be lowered to
    // `memmove` calls, which the verifier would have to follow as separate functions.
    let requester_mac = Mac::read(&frame.sha);
    let requester_ip = addr(&frame.spa);
    let own_mac = Mac::read(&config.mac);
    requester_mac.write(&mut frame.eth.dst);
    own_mac.write(&mut frame.eth.src);
    frame.op = layout::ARP_OP_REPLY.to_be_bytes();
    own_mac.write(&mut frame.sha);
    frame.spa = vip.to_ne_bytes();
    requester_mac.write(&mut frame.tha);
    frame.tpa = requester_ip.to_ne_bytes();
    (xdp_action::XDP_TX, layout::CTR_ARP_ANSWERED)
}

/// IPv6 to an IPv6 VIP: solicitations for it answered or dropped as ARP is, other frames
/// fenced while BACKUP. (Adverts over IPv6 go to [`advert6`].)
///
/// A function of its own in the object (a BPF-to-BPF call): its stack slots stay out of the
/// frame the advert path's HMAC call adds to, and the pair stays within the 512-byte stack.
#[inline(never)]
fn ipv6(ctx: &XdpContext) -> (u32, u32) {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN) else {
        return pass();
    };
    // SAFETY: `ptr_at` proved the header lies inside the frame.
    let ip = unsafe { &*ip };
    if ip.next_header == IPPROTO_ICMPV6
        && let Some(verdict) = solicitation(ctx)
    {
        return verdict;
    }
    let Some(config) = vip6_config(ctx, &ip.dst) else {
        return pass();
    };
    if config.flags & (FLAG_ENABLED | FLAG_MASTER | FLAG_FENCE) == FLAG_ENABLED | FLAG_FENCE {
        return (xdp_action::XDP_DROP, layout::CTR_FENCED);
    }
    pass()
}

/// A neighbour solicitation for an IPv6 VIP: dropped while BACKUP, answered while MASTER with
/// the advertisement the kernel would send (solicited and override set, our MAC as the target's
/// link-layer address), sent back out of the interface it came in on. `None` for anything
/// else, which goes on to the ordinary IPv6 checks.
#[inline(always)]
fn solicitation(ctx: &XdpContext) -> Option<(u32, u32)> {
    let head = ptr_at::<NsHead>(ctx, 0)?;
    // SAFETY: `ptr_at` proved the solicitation lies inside the frame.
    let head = unsafe { &*head };
    if head.icmp_type != ND_SOLICITATION || head.code != 0 || head.ip.hop_limit != 255 {
        return None;
    }
    let config = vip6_config(ctx, &head.target)?;
    // From `::` it is duplicate address detection probing the VIP: the kernel's business.
    if Addr6::read(&head.ip.src).is_unspecified() {
        return Some(pass());
    }
    if config.flags & FLAG_MASTER == 0 {
        return Some((xdp_action::XDP_DROP, layout::CTR_ND_DROPPED));
    }
    if config.flags & FLAG_ARP_VIA_STACK != 0 {
        return Some(pass());
    }
    let Some(frame) = ptr_at::<NsFrame>(ctx, 0) else {
        return Some(pass());
    };
    // SAFETY: `ptr_at` proved the whole frame lies inside the packet, and nothing else
    // references it while this program runs.
    let frame = unsafe { &mut *frame };
    if u16::from_be_bytes(frame.head.ip.payload_len) != ND_LEN
        || frame.opt_type != ND_OPT_SOURCE_LL
        || frame.opt_len != 1
    {
        // No link-layer address to answer to in place: the kernel answers.
        return Some(pass());
    }
    let requester_mac = Mac::read(&frame.opt_mac);
    let requester_ip = Addr6::read(&frame.head.ip.src);
    let vip = Addr6::read(&frame.head.target);
    let own_mac = Mac::read(&config.mac);
    requester_mac.write(&mut frame.head.eth.dst);
    own_mac.write(&mut frame.head.eth.src);
    frame.head.ip.version_class_flow = [0x60, 0, 0, 0];
    vip.write(&mut frame.head.ip.src);
    requester_ip.write(&mut frame.head.ip.dst);
    frame.head.icmp_type = ND_ADVERTISEMENT;
    frame.head.reserved = [NA_SOLICITED_OVERRIDE, 0, 0, 0];
    frame.opt_type = ND_OPT_TARGET_LL;
    own_mac.write(&mut frame.opt_mac);
    // The checksum over the pseudo-header (addresses, length, next header) and the message,
    // its own field taken as zero, from the values just written.
    let mut sum = vip.sum() * 2 + requester_ip.sum();
    sum += u32::from(ND_LEN) + u32::from(IPPROTO_ICMPV6);
    sum += u32::from(ND_ADVERTISEMENT) << 8;
    sum += u32::from(NA_SOLICITED_OVERRIDE) << 8;
    sum += (u32::from(ND_OPT_TARGET_LL) << 8) | 1;
    sum += own_mac.sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame.head.checksum = (!(sum as u16)).to_be_bytes();
    Some((xdp_action::XDP_TX, layout::CTR_ND_ANSWERED))
}

/// The configuration of the vhid whose IPv6 VIP is `vip`, if that vhid is configured on the
/// interface the frame came in on.
#[inline(always)]
fn vip6_config(ctx: &XdpContext, vip: &[u8; 16]) -> Option<&'static Config> {
    // The key goes to the helper from the stack, not from the packet.
    let mut key = [0u8; 16];
    Addr6::read(vip).write(&mut key);
    // SAFETY: the value is copied out at once; the agent only ever replaces whole entries.
    let vhid = *unsafe { VIPS6.get(&key) }?;
    let config = CONFIG.get(vhid)?;
    (config.flags & FLAG_ENABLED != 0 && config.ifindex == ingress_ifindex(ctx)).then_some(config)
}

/// The configuration of the vhid whose VIP is `vip`, if that vhid is configured on the
/// interface the frame came in on.
#[inline(always)]
fn vip_config(ctx: &XdpContext, vip: u32) -> Option<&'static Config> {
    // SAFETY: the value is copied out at once; the agent only ever replaces whole entries.
    let vhid = *unsafe { VIPS.get(&vip) }?;
    let config = CONFIG.get(vhid)?;
    (config.flags & FLAG_ENABLED != 0 && config.ifindex == ingress_ifindex(ctx)).then_some(config)
}

#[inline(always)]
fn ingress_ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: the context the kernel passed to this program, valid for its whole run.
    unsafe { (*ctx.ctx).ingress_ifindex }
}

#[inline(always)]
fn report_conflict(frame: &ArpFrame) {
    let Some(mut entry) = EVENTS.reserve::<ConflictRecord>(0) else {
        bump(layout::CTR_RINGBUF_FULL);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at reserved, 8-byte aligned ring-buffer memory of the record's size,
    // which we own until submit. Zeroing it word by word first initialises the reserved bytes;
    // volatile stores, because LLVM would merge plain ones into a `memset` call, a separate
    // function for the verifier. The fields are then written one by one.
    unsafe {
        let words = record.cast::<u64>();
        for word in 0..size_of::<ConflictRecord>() / 8 {
            words.add(word).write_volatile(0);
        }
        (*record).header.kind = layout::RECORD_CONFLICT;
        (*record).header.ktime_ns = bpf_ktime_get_ns();
        Mac::read(&frame.sha).write(&mut (*record).sender_mac);
        Mac::read(&frame.eth.src).write(&mut (*record).eth_src);
        (*record).sender_ip = frame.spa;
        (*record).op = frame.op;
    }
    entry.submit(0);
}

/// A MAC address held in two registers.
#[derive(Clone, Copy)]
struct Mac(u32, u16);

impl Mac {
    #[inline(always)]
    fn read(bytes: &[u8; 6]) -> Self {
        Mac(
            u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            u16::from_ne_bytes([bytes[4], bytes[5]]),
        )
    }

    #[inline(always)]
    fn write(self, bytes: &mut [u8; 6]) {
        let [a, b, c, d] = self.0.to_ne_bytes();
        let [e, f] = self.1.to_ne_bytes();
        *bytes = [a, b, c, d, e, f];
    }
}

impl Mac {
    /// Its three 16-bit words, summed for a checksum.
    #[inline(always)]
    fn sum(&self) -> u32 {
        let [a, b, c, d] = self.0.to_ne_bytes();
        let [e, f] = self.1.to_ne_bytes();
        word(a, b) + word(c, d) + word(e, f)
    }
}

/// An IPv6 address moved through registers, as [`Mac`] is.
struct Addr6([u32; 4]);

impl Addr6 {
    #[inline(always)]
    fn read(bytes: &[u8; 16]) -> Self {
        let w = |i: usize| {
            u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]])
        };
        Addr6([w(0), w(4), w(8), w(12)])
    }

    #[inline(always)]
    fn write(&self, bytes: &mut [u8; 16]) {
        let [a, b, c, d] = self.0[0].to_ne_bytes();
        let [e, f, g, h] = self.0[1].to_ne_bytes();
        let [i, j, k, l] = self.0[2].to_ne_bytes();
        let [m, n, o, p] = self.0[3].to_ne_bytes();
        *bytes = [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p];
    }

    #[inline(always)]
    fn is_unspecified(&self) -> bool {
        self.0[0] | self.0[1] | self.0[2] | self.0[3] == 0
    }

    /// Its eight 16-bit words, summed for a checksum.
    #[inline(always)]
    fn sum(&self) -> u32 {
        let mut sum = 0;
        for part in self.0 {
            let [a, b, c, d] = part.to_ne_bytes();
            sum += word(a, b) + word(c, d);
        }
        sum
    }
}

/// Two bytes as the big-endian word a checksum adds.
#[inline(always)]
fn word(high: u8, low: u8) -> u32 {
    (u32::from(high) << 8) | u32::from(low)
}

#[inline(always)]
fn pass() -> (u32, u32) {
    (xdp_action::XDP_PASS, layout::CTR_PASSED_OTHER)
}

/// Returns a pointer to a `T` at `offset` if the whole `T` lies inside the frame.
///
/// The comparison is written as `start + offset + size <= end`, the form the verifier tracks
/// for packet pointers.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Addresses compared as one integer: array equality may become a `memcmp` call, which BPF
/// does not have.
#[inline(always)]
fn addr(bytes: &[u8; 4]) -> u32 {
    u32::from_ne_bytes(*bytes)
}

#[inline(always)]
fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    let (a, b) = (Mac::read(a), Mac::read(b));
    a.0 == b.0 && a.1 == b.1
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the slot belongs to this CPU and XDP programs do not preempt each other on it,
        // so a plain read-modify-write cannot race.
        unsafe { *counter += 1 };
    }
}

/// Declared GPL-compatible because the ring-buffer helpers are GPL-only; the kernel refuses
/// them to programs with other license strings.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; the verifier rejects any path that could get here.
    loop {}
}
