//! XDP program of the cluster agent.
//!
//! It only observes: every frame is passed on, so attaching it can never cut a node off the
//! network. Classification is reduced to length and protocol checks the verifier accepts without
//! loops, and the only state is a per-CPU counter array, which needs no atomics.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use cluster_common::{carp, xdp as layout};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

/// The name must match `cluster_common::xdp::COUNTERS_MAP`, which the agent looks up.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(layout::COUNTERS_LEN, 0);

/// Bytes after the Ethernet header a CARP advert occupies; shorter protocol-112 frames cannot be
/// adverts, and counting them apart shows truncation or foreign VRRP traffic on the segment.
const CARP_MIN_L3_LEN: usize = carp::IPV4_HEADER_LEN + carp::HEADER_LEN;

/// Entry point; the function name is the program name the agent looks up
/// (`cluster_common::xdp::PROGRAM`).
#[xdp]
pub fn cluster_xdp(ctx: XdpContext) -> u32 {
    bump(classify(&ctx));
    xdp_action::XDP_PASS
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();

    // Each read is preceded by a bounds check against `data_end` written in the form the verifier
    // tracks (pointer + constant <= data_end).
    if start + EthHdr::LEN + Ipv4Hdr::LEN > end {
        return layout::CTR_PASSED_OTHER;
    }
    // SAFETY: the check above proves both headers lie inside the frame.
    let eth = unsafe { &*(start as *const EthHdr) };
    if eth.ether_type != EtherType::Ipv4 as u16 {
        return layout::CTR_PASSED_OTHER;
    }
    // SAFETY: as above.
    let ip = unsafe { &*((start + EthHdr::LEN) as *const Ipv4Hdr) };
    if ip.proto != carp::IPPROTO_CARP {
        return layout::CTR_PASSED_OTHER;
    }
    if start + EthHdr::LEN + CARP_MIN_L3_LEN > end {
        return layout::CTR_CARP_MALFORMED;
    }
    layout::CTR_CARP_SEEN
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the slot belongs to this CPU and XDP programs do not preempt each other on it,
        // so a plain read-modify-write cannot race.
        unsafe { *counter += 1 };
    }
}

/// Declared GPL-compatible so the program may later call GPL-only helpers (ring-buffer and
/// perf-event output); the kernel refuses those to programs with other license strings.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; the verifier rejects any path that could get here.
    loop {}
}
