//! Tests of the XDP program itself run it in the kernel through BPF_PROG_TEST_RUN on crafted
//! frames. They need root and an embedded object. `cargo xtask test` asks for the object and
//! runs as root, so there a missing one is a failure; a plain `cargo test` without them says
//! that it skips.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use super::*;
use crate::carp::wire;
use cluster_common::{carp::BOW_OUT, xdp::ADVERT_LEN};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VHID: u8 = 42;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
const OUR_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 77);
/// The password of the golden advert.
const PASSWORD: &[u8] = b"love";

/// An advert captured from UCARP 1.5.2 (vhid 42, VIP 10.99.0.100, source 10.99.0.1).
const GOLDEN_ADVERT: &str = "01005e00001200005e00002a0800\
    45100038d4594000ff70bc750a630001e0000012\
    212a000700016c79b4cbc228e9e06dfaf848c1378606271278a05651723f675e46c34d98";
/// The gratuitous ARP UCARP sent for the same VIP from MAC 8e:f3:9a:17:cf:04.
const GOLDEN_GARP: &str = "ffffffffffff8ef39a17cf040806000108000604\
    00018ef39a17cf040a6300648ef39a17cf040a630064";
const GARP_MAC: [u8; 6] = [0x8e, 0xf3, 0x9a, 0x17, 0xcf, 0x04];

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn advert() -> Vec<u8> {
    let frame = hex(GOLDEN_ADVERT);
    assert_eq!(frame.len(), 14 + ADVERT_LEN);
    frame
}

/// An advert signed with `password` for `vip` (HMAC over `hmac_vhid`, header carrying `VHID`),
/// framed as UCARP frames it.
fn signed(password: &[u8], vip: Ipv4Addr, hmac_vhid: u8, counter: u64, src: Ipv4Addr) -> Vec<u8> {
    let mut carp = wire::encode_carp(password, &[vip], hmac_vhid, 1, 0, counter);
    carp[1] = VHID;
    refresh_carp_checksum(&mut carp);
    framed(&carp, src, counter)
}

/// A CARP header in an IPv4 packet to the group from `src`, framed as UCARP frames it.
fn framed(carp: &[u8; 36], src: Ipv4Addr, counter: u64) -> Vec<u8> {
    let packet = wire::encode_packet(src, GROUP, counter as u16, carp);
    wire::ether_frame(
        wire::multicast_mac(GROUP),
        wire::advert_ether_src(carp[1]),
        &packet,
    )
    .to_vec()
}

/// A genuine advert from a peer: right password, VIP and vhid.
fn genuine(counter: u64) -> Vec<u8> {
    signed(PASSWORD, VIP, VHID, counter, PEER_IP)
}

fn refresh_carp_checksum(carp: &mut [u8]) {
    carp[6..8].copy_from_slice(&[0, 0]);
    let sum = wire::internet_checksum(carp);
    carp[6..8].copy_from_slice(&sum.to_be_bytes());
}

/// `frame` as a replay would send it: another source and advskew, both checksums valid again.
fn rewritten(frame: &[u8], src: Ipv4Addr, advbase: u8, advskew: u8) -> Vec<u8> {
    let mut frame = frame.to_vec();
    frame[26..30].copy_from_slice(&src.octets());
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = wire::internet_checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    frame[34 + 2] = advskew;
    frame[34 + 5] = advbase;
    refresh_carp_checksum(&mut frame[34..70]);
    frame
}

/// `frame` with one bit of its HMAC flipped (the CARP checksum kept valid).
fn forged(frame: &[u8]) -> Vec<u8> {
    let mut frame = frame.to_vec();
    frame[34 + 16] ^= 0x01;
    refresh_carp_checksum(&mut frame[34..70]);
    frame
}

fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&sha);
    frame.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4]);
    frame.extend_from_slice(&op.to_be_bytes());
    frame.extend_from_slice(&sha);
    frame.extend_from_slice(&spa.octets());
    frame.extend_from_slice(&tha);
    frame.extend_from_slice(&tpa.octets());
    // Ethernet pads ARP to the 60-byte minimum; the padding must survive untouched.
    frame.extend_from_slice(&[0xa5; 18]);
    frame
}

fn arp_request_for(target: Ipv4Addr) -> Vec<u8> {
    arp(1, PEER_MAC, PEER_IP, [0; 6], target)
}

fn udp_to(destination: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 28];
    frame[..6].copy_from_slice(&OUR_MAC);
    frame[6..12].copy_from_slice(&PEER_MAC);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    frame[16..18].copy_from_slice(&28u16.to_be_bytes());
    frame[22] = 64;
    frame[23] = 17;
    frame[26..30].copy_from_slice(&PEER_IP.octets());
    frame[30..34].copy_from_slice(&destination.octets());
    frame
}

/// A TCP segment from the peer to `destination` with the given flags (header only).
fn tcp_to(destination: Ipv4Addr, flags: u8) -> Vec<u8> {
    let mut frame = udp_to(destination);
    frame.resize(14 + 20 + 20, 0);
    frame[16..18].copy_from_slice(&40u16.to_be_bytes());
    frame[23] = 6;
    frame[34..36].copy_from_slice(&40000u16.to_be_bytes());
    frame[36..38].copy_from_slice(&3306u16.to_be_bytes());
    frame[46] = 5 << 4;
    frame[47] = flags;
    frame
}

/// The interface BPF_PROG_TEST_RUN reports frames as received on: the loopback device of
/// the test's network namespace.
const IFINDEX: u32 = 1;

fn setup<'a>(password: &'a [u8], vhid: u8, vips: &'a [IpAddr], fence: bool) -> VhidSetup<'a> {
    VhidSetup {
        vhid,
        ifindex: IFINDEX,
        password,
        vips,
        group: GROUP,
        mac: OUR_MAC,
        fence,
    }
}

/// The loaded program, not attached anywhere, or None when the test cannot run here.
///
/// A build asked to embed the object (`CLUSTER_EBPF_OBJ`, which `cargo xtask build` and
/// `cargo xtask test` set) is a build whose XDP tests must run: missing root or an object that
/// did not make it into the build then fails the test instead of skipping it.
fn loaded() -> Option<XdpHandle> {
    let requested = option_env!("CLUSTER_EBPF_OBJ").is_some_and(|path| !path.is_empty());
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if EBPF_OBJ.is_some() && root {
        return Some(XdpHandle::new(load().unwrap(), "test"));
    }
    assert!(
        !requested,
        "the XDP tests need root and the embedded object (embedded: {}, root: {root})",
        EBPF_OBJ.is_some()
    );
    eprintln!("skipped: needs root and an embedded XDP object (`cargo xtask test`)");
    None
}

fn configured(fence: bool) -> Option<XdpHandle> {
    let mut handle = loaded()?;
    handle
        .configure(&setup(PASSWORD, VHID, &[VIP.into()], fence))
        .unwrap();
    Some(handle)
}

/// Runs the program once on `frame`; returns the action and the frame as the program left it.
fn run(handle: &XdpHandle, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 64];
    let mut options = TestRunOptions::new();
    options.data_in = Some(frame);
    options.data_out = Some(&mut out);
    let result = program_ref(&handle.ebpf)
        .unwrap()
        .test_run(options)
        .unwrap();
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

fn counter_values(handle: &XdpHandle) -> Vec<u64> {
    handle
        .counters()
        .unwrap()
        .into_iter()
        .map(|(_, value)| value)
        .collect()
}

/// The counters that moved while `action` ran, with how much, in index order.
fn moved(handle: &XdpHandle, action: impl FnOnce()) -> Vec<(&'static str, u64)> {
    let before = counter_values(handle);
    action();
    let after = counter_values(handle);
    COUNTER_NAMES
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a != b)
        .map(|(name, (b, a))| (*name, a - b))
        .collect()
}

/// Runs `frame` and checks the action and that exactly the `expected` counters moved.
fn expect(handle: &XdpHandle, frame: &[u8], action: u32, expected: &[(&str, u64)]) -> Vec<u8> {
    let mut result = None;
    let moved = moved(handle, || result = Some(run(handle, frame)));
    let (got, out) = result.unwrap();
    assert_eq!(got, action, "action for {frame:02x?}");
    assert_eq!(moved, expected, "counters for {frame:02x?}");
    out
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

async fn next_event(events: &mut XdpEvents) -> XdpEvent {
    tokio::time::timeout(Duration::from_secs(2), events.next())
        .await
        .expect("no XDP event within 2 s")
        .unwrap()
}

/// Takes one advert record from the ring buffer and checks it carries `frame`'s packet.
async fn expect_advert(events: &mut XdpEvents, frame: &[u8]) {
    let event = next_event(events).await;
    let XdpEvent::Advert { packet, .. } = event else {
        panic!("expected an advert, got {event:?}");
    };
    assert_eq!(packet[..], frame[14..]);
}

/// Runs an advert the program must accept, and takes its record from the ring buffer.
async fn expect_accepted(handle: &XdpHandle, events: &mut XdpEvents, frame: &[u8]) {
    expect(handle, frame, XDP_DROP, &[("carp_seen", 1), ("advert", 1)]);
    expect_advert(events, frame).await;
}

fn assert_no_event(events: &mut XdpEvents) {
    if let Some(event) = events.try_next() {
        panic!("unexpected XDP event {event:?}");
    }
}

#[test]
fn off_never_touches_the_kernel() {
    assert!(attach("does-not-exist0", XdpMode::Off).unwrap().is_none());
}

#[test]
fn explicit_mode_without_a_usable_program_is_an_error() {
    // Either nothing is embedded or the interface does not exist: both must be reported.
    assert!(attach("does-not-exist0", XdpMode::Generic).is_err());
}

#[test]
fn auto_falls_back_instead_of_failing() {
    assert!(attach("does-not-exist0", XdpMode::Auto).unwrap().is_none());
}

#[test]
fn vhid_zero_is_refused() {
    let Some(mut handle) = loaded() else { return };
    assert!(matches!(
        handle.configure(&setup(PASSWORD, 0, &[VIP.into()], true)),
        Err(XdpError::InvalidVhid)
    ));
}

#[test]
fn a_password_ucarp_would_refuse_is_refused() {
    let Some(mut handle) = loaded() else { return };
    assert!(matches!(
        handle.configure(&setup(&[b'x'; 20], VHID, &[VIP.into()], true)),
        Err(XdpError::PasswordTooLong)
    ));
    handle
        .configure(&setup(&[b'x'; 19], VHID, &[VIP.into()], true))
        .unwrap();
}

/// The advert captured from UCARP authenticates in the kernel, and lands in the ring buffer.
#[tokio::test]
async fn golden_advert_authenticates_and_goes_to_the_ring_buffer() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    assert!(matches!(handle.take_events(), Err(XdpError::EventsTaken)));
    let frame = advert();

    let before = monotonic_ns();
    expect(
        &handle,
        &frame,
        XDP_DROP,
        &[("carp_seen", 1), ("advert", 1)],
    );
    let after = monotonic_ns();

    let XdpEvent::Advert { ktime_ns, packet } = next_event(&mut events).await else {
        panic!("expected an advert record");
    };
    assert_eq!(packet[..], frame[14..]);
    assert!(
        (before..=after).contains(&ktime_ns),
        "kernel time {ktime_ns} outside [{before}, {after}]: not CLOCK_MONOTONIC"
    );
    assert_no_event(&mut events);
}

#[tokio::test]
async fn advert_before_configuration_passes() {
    let Some(mut handle) = loaded() else { return };
    let mut events = handle.take_events().unwrap();
    let frame = advert();
    let out = expect(
        &handle,
        &frame,
        XDP_PASS,
        &[("carp_seen", 1), ("unknown_vhid", 1)],
    );
    assert_eq!(out, frame);
    assert_no_event(&mut events);
}

#[tokio::test]
async fn genuine_adverts_reach_the_ring_buffer() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    for counter in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
        let frame = genuine(counter);
        expect_accepted(&handle, &mut events, &frame).await;
    }
    // Other sources, skews and advbases are covered by nothing in the HMAC, and change nothing.
    let frame = rewritten(&genuine(77), Ipv4Addr::new(10, 99, 0, 9), 3, 200);
    expect_accepted(&handle, &mut events, &frame).await;
    assert_no_event(&mut events);
}

#[tokio::test]
async fn adverts_failing_authentication_are_dropped_and_counted() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    let cases = [
        ("one bit of the HMAC flipped", forged(&genuine(10))),
        ("another password", signed(b"hate", VIP, VHID, 11, PEER_IP)),
        (
            "another VIP",
            signed(PASSWORD, Ipv4Addr::new(10, 99, 0, 101), VHID, 12, PEER_IP),
        ),
        (
            "signed for another vhid",
            signed(PASSWORD, VIP, VHID + 1, 13, PEER_IP),
        ),
        ("the golden advert with its counter changed", {
            let mut frame = advert();
            frame[34 + 15] ^= 0x01;
            refresh_carp_checksum(&mut frame[34..70]);
            frame
        }),
    ];
    for (what, frame) in &cases {
        let mut result = None;
        let moved = moved(&handle, || result = Some(run(&handle, frame)));
        let (action, out) = result.unwrap();
        assert_eq!(action, XDP_DROP, "{what}");
        assert_eq!(&out, frame, "{what}: frame modified");
        assert_eq!(moved, [("carp_seen", 1), ("auth_failed", 1)], "{what}");
    }
    assert_no_event(&mut events);

    // With another password configured, even the golden advert is a forgery.
    handle
        .configure(&setup(b"hate", VHID, &[VIP.into()], true))
        .unwrap();
    expect(
        &handle,
        &advert(),
        XDP_DROP,
        &[("carp_seen", 1), ("auth_failed", 1)],
    );
    assert_no_event(&mut events);
}

#[tokio::test]
async fn a_replayed_advert_is_dropped_whatever_its_source_and_timing() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    let original = genuine(0xfeed);
    expect_accepted(&handle, &mut events, &original).await;

    let replays = [
        ("the same frame", original.clone()),
        (
            "from another source",
            rewritten(&original, Ipv4Addr::new(10, 99, 0, 3), 1, 0),
        ),
        (
            "with a better skew from a lower address",
            rewritten(&original, Ipv4Addr::new(10, 99, 1, 0), 0, 0),
        ),
        (
            "as a bow-out",
            rewritten(&original, PEER_IP, BOW_OUT, BOW_OUT),
        ),
        // The guard is consulted before the HMAC, so a forgery reusing an accepted counter
        // costs no HMAC either.
        ("forged, with the accepted counter", forged(&original)),
    ];
    for (what, frame) in &replays {
        let mut result = None;
        let moved = moved(&handle, || result = Some(run(&handle, frame)));
        assert_eq!(result.unwrap().0, XDP_DROP, "{what}");
        assert_eq!(moved, [("carp_seen", 1), ("replayed", 1)], "{what}");
    }
    assert_no_event(&mut events);
}

#[tokio::test]
async fn forgeries_never_enter_the_replay_guard() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    // UCARP's next counter is predictable (last heard + 1): a forger sends it first, many times.
    let next = genuine(1001);
    for _ in 0..50 {
        expect(
            &handle,
            &forged(&next),
            XDP_DROP,
            &[("carp_seen", 1), ("auth_failed", 1)],
        );
    }
    expect(&handle, &next, XDP_DROP, &[("carp_seen", 1), ("advert", 1)]);
    expect_advert(&mut events, &next).await;
    assert_no_event(&mut events);
}

#[tokio::test]
async fn our_own_counters_are_refused_when_they_come_back() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    handle.remember_sent(VHID, 0xabc).unwrap();
    // A copy of our own advert, sent back from a lower address with the best skew.
    let echo = rewritten(&genuine(0xabc), Ipv4Addr::new(10, 99, 1, 0), 0, 0);
    expect(
        &handle,
        &echo,
        XDP_DROP,
        &[("carp_seen", 1), ("replayed", 1)],
    );
    assert_no_event(&mut events);
    let fresh = genuine(0xabd);
    expect_accepted(&handle, &mut events, &fresh).await;
}

/// The bug this design replaced: a flood of forged adverts, from one source or many, crowded
/// genuine adverts out. Now every genuine advert gets through, whatever surrounds it.
#[tokio::test]
async fn a_forged_flood_never_crowds_out_genuine_adverts() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    for round in 0..20u64 {
        for i in 0..200u32 {
            let [_, _, a, b] = i.to_be_bytes();
            // Spoofed sources, our peer's address among them.
            let src = if i % 2 == 0 {
                PEER_IP
            } else {
                Ipv4Addr::new(10, 98, a, b)
            };
            let frame = rewritten(&forged(&genuine(round * 1000 + u64::from(i))), src, 1, 0);
            assert_eq!(run(&handle, &frame).0, XDP_DROP);
        }
        let frame = genuine(round * 1000 + 999);
        expect_accepted(&handle, &mut events, &frame).await;
    }
    assert_no_event(&mut events);
    let counters: Vec<(&str, u64)> = handle.counters().unwrap();
    let get = |name| counters.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(get("auth_failed"), 20 * 200);
    assert_eq!(get("advert"), 20);
}

#[tokio::test]
async fn rejected_adverts_are_counted_by_reason_and_not_reported() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    let mutate = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = advert();
        edit(&mut frame);
        frame
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("TTL 64", mutate(&|f| f[22] = 64), "bad_ttl"),
        ("TTL 254", mutate(&|f| f[22] = 254), "bad_ttl"),
        ("vhid 7", mutate(&|f| f[35] = 7), "unknown_vhid"),
        ("version 3", mutate(&|f| f[34] = 0x31), "bad_version"),
        ("other group", mutate(&|f| f[33] = 19), "wrong_group"),
        (
            "truncated",
            advert()[..14 + ADVERT_LEN - 1].to_vec(),
            "carp_malformed",
        ),
        ("IP header only", advert()[..34].to_vec(), "carp_malformed"),
        ("IP options", mutate(&|f| f[14] = 0x46), "carp_malformed"),
        ("not IPv4", mutate(&|f| f[14] = 0x65), "carp_malformed"),
        (
            "total length short",
            mutate(&|f| f[16..18].copy_from_slice(&55u16.to_be_bytes())),
            "carp_malformed",
        ),
        (
            "total length beyond the frame",
            mutate(&|f| f[16..18].copy_from_slice(&57u16.to_be_bytes())),
            "carp_malformed",
        ),
        (
            "first fragment",
            mutate(&|f| f[20] |= 0x20),
            "carp_malformed",
        ),
        ("later fragment", mutate(&|f| f[21] = 8), "carp_malformed"),
    ];
    for (what, frame, reason) in &cases {
        let mut result = None;
        let moved = moved(&handle, || result = Some(run(&handle, frame)));
        let (action, out) = result.unwrap();
        assert_eq!(action, XDP_PASS, "{what}");
        assert_eq!(&out, frame, "{what}: frame modified");
        assert_eq!(moved, [("carp_seen", 1), (*reason, 1)], "{what}");
        assert_no_event(&mut events);
    }

    // A longer frame (Ethernet padding, trailing bytes) is still a valid advert.
    let mut padded = advert();
    padded.extend_from_slice(&[0; 8]);
    expect(
        &handle,
        &padded,
        XDP_DROP,
        &[("carp_seen", 1), ("advert", 1)],
    );
    assert!(matches!(
        next_event(&mut events).await,
        XdpEvent::Advert { .. }
    ));
}

#[tokio::test]
async fn garbage_protocol_112_frames_are_rejected() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    let rejections = [
        "carp_malformed",
        "bad_ttl",
        "bad_version",
        "unknown_vhid",
        "wrong_group",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let l3_len = 20 + (random() % 80) as usize;
        let mut frame: Vec<u8> = (0..14 + l3_len).map(|_| random() as u8).collect();
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[23] = 112;
        let mut result = None;
        let moved = moved(&handle, || result = Some(run(&handle, &frame)));
        assert_eq!(result.unwrap().0, XDP_PASS, "{frame:02x?}");
        assert_eq!(moved.len(), 2, "{frame:02x?}: {moved:?}");
        assert_eq!(moved[0], ("carp_seen", 1));
        assert!(
            rejections.contains(&moved[1].0) && moved[1].1 == 1,
            "{frame:02x?}: {moved:?}"
        );
    }
    assert_no_event(&mut events);
}

#[test]
fn arp_request_for_the_vip_is_answered_while_master() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    handle.set_role(VHID, true).unwrap();
    let request = arp_request_for(VIP);
    let reply = expect(&handle, &request, XDP_TX, &[("arp_answered", 1)]);

    assert_eq!(reply.len(), request.len());
    assert_eq!(reply[0..6], PEER_MAC, "Ethernet destination: the requester");
    assert_eq!(reply[6..12], OUR_MAC, "Ethernet source: the NIC");
    assert_eq!(reply[12..14], [0x08, 0x06], "EtherType ARP");
    assert_eq!(reply[14..16], [0x00, 0x01], "hardware type Ethernet");
    assert_eq!(reply[16..18], [0x08, 0x00], "protocol type IPv4");
    assert_eq!(reply[18..20], [6, 4], "address lengths");
    assert_eq!(reply[20..22], [0x00, 0x02], "operation reply");
    assert_eq!(reply[22..28], OUR_MAC, "sender MAC");
    assert_eq!(reply[28..32], VIP.octets(), "sender IP: the VIP");
    assert_eq!(reply[32..38], PEER_MAC, "target MAC: the requester");
    assert_eq!(reply[38..42], PEER_IP.octets(), "target IP: the requester");
    assert_eq!(reply[42..], request[42..], "padding");
    // The same, as one independent construction of the whole frame.
    let mut expected = arp(2, OUR_MAC, VIP, PEER_MAC, PEER_IP);
    expected[0..6].copy_from_slice(&PEER_MAC);
    assert_eq!(reply, expected);
}

#[test]
fn arp_request_for_the_vip_is_dropped_while_backup() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let request = arp_request_for(VIP);
    handle.set_role(VHID, true).unwrap();
    expect(&handle, &request, XDP_TX, &[("arp_answered", 1)]);
    handle.set_role(VHID, false).unwrap();
    expect(&handle, &request, XDP_DROP, &[("arp_dropped", 1)]);
    // Reconfiguring keeps the role.
    handle.set_role(VHID, true).unwrap();
    handle
        .configure(&setup(PASSWORD, VHID, &[VIP.into()], false))
        .unwrap();
    expect(&handle, &request, XDP_TX, &[("arp_answered", 1)]);
}

#[test]
fn arp_for_the_vip_can_be_left_to_the_kernel_while_master() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    handle.set_arp_via_stack(VHID, true).unwrap();
    handle.set_role(VHID, true).unwrap();
    // Survives reconfiguration, like the role.
    handle
        .configure(&setup(PASSWORD, VHID, &[VIP.into()], true))
        .unwrap();
    let request = arp_request_for(VIP);
    let out = expect(&handle, &request, XDP_PASS, &[("passed_other", 1)]);
    assert_eq!(out, request);
    handle.set_role(VHID, false).unwrap();
    expect(&handle, &request, XDP_DROP, &[("arp_dropped", 1)]);
    handle.set_arp_via_stack(VHID, false).unwrap();
    handle.set_role(VHID, true).unwrap();
    expect(&handle, &request, XDP_TX, &[("arp_answered", 1)]);
}

#[test]
fn other_arp_passes_untouched() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    for master in [true, false] {
        handle.set_role(VHID, master).unwrap();
        let frames = [
            arp_request_for(Ipv4Addr::new(10, 99, 0, 1)),
            // A reply addressed to the VIP is for the kernel's neighbour table.
            arp(2, PEER_MAC, PEER_IP, OUR_MAC, VIP),
            // Our own announcement of the VIP is no conflict.
            arp(1, OUR_MAC, VIP, OUR_MAC, VIP),
        ];
        for frame in frames {
            let out = expect(&handle, &frame, XDP_PASS, &[("passed_other", 1)]);
            assert_eq!(out, frame);
        }
    }
    // Before configuration, not even ARP for the future VIP is touched.
    let fresh = loaded().unwrap();
    let request = arp_request_for(VIP);
    let out = expect(&fresh, &request, XDP_PASS, &[("passed_other", 1)]);
    assert_eq!(out, request);
}

#[tokio::test]
async fn foreign_claim_on_the_vip_while_master_is_a_conflict() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    let garp = hex(GOLDEN_GARP);

    // While BACKUP another node announcing the VIP is the master doing its job.
    let out = expect(&handle, &garp, XDP_PASS, &[("passed_other", 1)]);
    assert_eq!(out, garp);
    assert_no_event(&mut events);

    handle.set_role(VHID, true).unwrap();
    let before = monotonic_ns();
    let out = expect(&handle, &garp, XDP_PASS, &[("arp_conflict", 1)]);
    let after = monotonic_ns();
    assert_eq!(out, garp);
    let event = next_event(&mut events).await;
    let XdpEvent::Conflict {
        ktime_ns,
        mac,
        eth_src,
        ip,
        reply,
    } = event
    else {
        panic!("expected a conflict, got {event:?}");
    };
    assert!((before..=after).contains(&ktime_ns));
    assert_eq!((mac, eth_src, ip, reply), (GARP_MAC, GARP_MAC, VIP, false));

    // An ARP reply claiming the VIP, sent from one MAC on behalf of another.
    let mut claim = arp(2, PEER_MAC, VIP, OUR_MAC, PEER_IP);
    claim[6..12].copy_from_slice(&GARP_MAC);
    expect(&handle, &claim, XDP_PASS, &[("arp_conflict", 1)]);
    let event = next_event(&mut events).await;
    assert!(
        matches!(
            event,
            XdpEvent::Conflict {
                mac: PEER_MAC,
                eth_src: GARP_MAC,
                ip: VIP,
                reply: true,
                ..
            }
        ),
        "{event:?}"
    );
    assert_no_event(&mut events);
}

#[test]
fn traffic_to_the_vip_is_fenced_while_backup() {
    let Some(mut handle) = loaded() else { return };
    let to_vip = udp_to(VIP);
    let elsewhere = udp_to(Ipv4Addr::new(10, 99, 0, 1));

    // Unconfigured: nothing is fenced.
    expect(&handle, &to_vip, XDP_PASS, &[("passed_other", 1)]);

    handle
        .configure(&setup(PASSWORD, VHID, &[VIP.into()], true))
        .unwrap();
    expect(&handle, &to_vip, XDP_DROP, &[("fenced", 1)]);
    expect(&handle, &elsewhere, XDP_PASS, &[("passed_other", 1)]);

    handle.set_role(VHID, true).unwrap();
    let out = expect(&handle, &to_vip, XDP_PASS, &[("passed_other", 1)]);
    assert_eq!(out, to_vip);

    handle.set_role(VHID, false).unwrap();
    expect(&handle, &to_vip, XDP_DROP, &[("fenced", 1)]);

    handle
        .configure(&setup(PASSWORD, VHID, &[VIP.into()], false))
        .unwrap();
    expect(&handle, &to_vip, XDP_PASS, &[("passed_other", 1)]);
}

#[tokio::test]
async fn a_drain_holds_off_and_reports_new_connections_to_the_vip_only() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    let (syn, ack, syn_ack) = (0x02, 0x10, 0x12);
    handle.set_role(VHID, true).unwrap();
    handle.set_drain(VHID, true).unwrap();
    // A request with the most TCP options: 80 bytes of IPv4 packet.
    let mut request = tcp_to(VIP, syn);
    request.resize(14 + 80, 0xab);
    request[16..18].copy_from_slice(&80u16.to_be_bytes());
    request[46] = 15 << 4;
    for frame in [tcp_to(VIP, syn), request] {
        expect(&handle, &frame, XDP_DROP, &[("drained", 1)]);
        let event = next_event(&mut events).await;
        let XdpEvent::Syn { packet, len, .. } = event else {
            panic!("expected a held request, got {event:?}");
        };
        assert_eq!(
            packet[..len],
            frame[14..],
            "the IPv4 packet exactly as received"
        );
    }
    // The open connections carry on; other addresses and protocols are not concerned.
    for frame in [
        tcp_to(VIP, ack),
        tcp_to(VIP, syn_ack),
        tcp_to(Ipv4Addr::new(10, 99, 0, 1), syn),
        udp_to(VIP),
    ] {
        expect(&handle, &frame, XDP_PASS, &[("passed_other", 1)]);
    }
    assert_no_event(&mut events);
    // The drain outlasts the mastership: requests are still held while BACKUP, and the next
    // master announcing the VIP is reported.
    handle.set_role(VHID, false).unwrap();
    expect(&handle, &tcp_to(VIP, syn), XDP_DROP, &[("drained", 1)]);
    assert!(matches!(
        next_event(&mut events).await,
        XdpEvent::Syn { .. }
    ));
    expect(&handle, &udp_to(VIP), XDP_DROP, &[("fenced", 1)]);
    expect(&handle, &hex(GOLDEN_GARP), XDP_PASS, &[("arp_conflict", 1)]);
    assert!(matches!(
        next_event(&mut events).await,
        XdpEvent::Conflict { .. }
    ));
    // Ended, it fences as before; and a new mastership starts without it.
    handle.set_drain(VHID, false).unwrap();
    expect(&handle, &tcp_to(VIP, syn), XDP_DROP, &[("fenced", 1)]);
    handle.set_drain(VHID, true).unwrap();
    handle.set_role(VHID, true).unwrap();
    expect(&handle, &tcp_to(VIP, syn), XDP_PASS, &[("passed_other", 1)]);
    assert_no_event(&mut events);
}

#[tokio::test]
async fn a_full_ring_buffer_is_counted_and_the_advert_dropped() {
    const FLOOD: u64 = 4000;
    let Some(mut handle) = configured(true) else {
        return;
    };
    let mut events = handle.take_events().unwrap();
    // Distinct genuine adverts: the same one again would be a replay.
    let moved = moved(&handle, || {
        for counter in 0..FLOOD {
            assert_eq!(run(&handle, &genuine(counter)).0, XDP_DROP);
        }
    });
    let count = |name| {
        moved
            .iter()
            .find(|(moved, _)| *moved == name)
            .map_or(0, |(_, n)| *n)
    };
    let (recorded, lost) = (count("advert"), count("ringbuf_full"));
    assert_eq!(count("carp_seen"), FLOOD);
    assert_eq!(recorded + lost, FLOOD);
    assert!(
        lost > 0,
        "{FLOOD} records fit in the ring buffer: {moved:?}"
    );
    expect(
        &handle,
        &genuine(FLOOD),
        XDP_DROP,
        &[("carp_seen", 1), ("ringbuf_full", 1)],
    );

    let mut drained = 0;
    while let Some(event) = events.try_next() {
        assert!(matches!(event.unwrap(), XdpEvent::Advert { .. }));
        drained += 1;
    }
    assert_eq!(drained, recorded);
    // Room again once drained.
    expect(
        &handle,
        &genuine(FLOOD + 1),
        XDP_DROP,
        &[("carp_seen", 1), ("advert", 1)],
    );
}

#[tokio::test]
async fn ordinary_traffic_passes_untouched() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    handle.set_role(VHID, true).unwrap();
    let mut events = handle.take_events().unwrap();
    let mut ipv6 = vec![0u8; 14 + 40];
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    ipv6[14] = 0x60;
    let mut vlan = udp_to(VIP);
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let mut short_ipv4 = vec![0u8; 14 + 19];
    short_ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut tcp = udp_to(Ipv4Addr::new(192, 0, 2, 1));
    tcp[23] = 6;
    let frames = [
        udp_to(Ipv4Addr::new(10, 99, 0, 1)),
        tcp,
        ipv6,
        vlan,
        short_ipv4,
        vec![0u8; 14],
    ];
    for frame in frames {
        let out = expect(&handle, &frame, XDP_PASS, &[("passed_other", 1)]);
        assert_eq!(out, frame);
    }
    assert_no_event(&mut events);
}

#[test]
fn test_run_times_the_program() {
    let Some(handle) = configured(true) else {
        return;
    };
    let frame = udp_to(Ipv4Addr::new(10, 99, 0, 1));
    let mut ns = 0;
    let moved = moved(&handle, || {
        ns = handle.test_run_ns_per_packet(&frame, 1000).unwrap();
    });
    assert_eq!(moved, [("passed_other", 1000)]);
    assert!(ns < 100_000, "{ns} ns per packet");
}

#[test]
fn events_need_a_runtime() {
    let Some(mut handle) = loaded() else { return };
    assert!(matches!(handle.take_events(), Err(XdpError::NoRuntime)));
    // The failed attempt left the reader in place.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { assert!(handle.take_events().is_ok()) });
}

const VHID2: u8 = 7;
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 200);
const PASSWORD2: &[u8] = b"other";

/// An advert from the peer for `vhid`, signed with `password` over `vip`.
fn advert_for(password: &[u8], vip: Ipv4Addr, vhid: u8, counter: u64) -> Vec<u8> {
    advert_over(password, &[vip], vhid, counter)
}

/// An advert from the peer for `vhid`, signed with `password` over all of `vips`.
fn advert_over(
    password: &[u8],
    vips: &[impl Into<IpAddr> + Copy],
    vhid: u8,
    counter: u64,
) -> Vec<u8> {
    framed(
        &wire::encode_carp(password, vips, vhid, 1, 0, counter),
        PEER_IP,
        counter,
    )
}

#[tokio::test]
async fn each_vhid_has_its_own_key_replay_guard_role_and_fence() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    handle
        .configure(&setup(PASSWORD2, VHID2, &[VIP2.into()], true))
        .unwrap();
    let mut events = handle.take_events().unwrap();
    // The same counter is fresh for each vhid.
    for (password, vip, vhid) in [(PASSWORD, VIP, VHID), (PASSWORD2, VIP2, VHID2)] {
        let frame = advert_for(password, vip, vhid, 5);
        expect_accepted(&handle, &mut events, &frame).await;
    }
    // One vhid's key signs nothing for the other.
    let crossed = advert_for(PASSWORD, VIP, VHID2, 6);
    expect(
        &handle,
        &crossed,
        XDP_DROP,
        &[("carp_seen", 1), ("auth_failed", 1)],
    );
    assert_no_event(&mut events);

    handle.set_role(VHID, true).unwrap();
    expect(
        &handle,
        &arp_request_for(VIP),
        XDP_TX,
        &[("arp_answered", 1)],
    );
    expect(
        &handle,
        &arp_request_for(VIP2),
        XDP_DROP,
        &[("arp_dropped", 1)],
    );
    expect(&handle, &udp_to(VIP2), XDP_DROP, &[("fenced", 1)]);
    expect(&handle, &udp_to(VIP), XDP_PASS, &[("passed_other", 1)]);
    // A claim on the other vhid's VIP is its master at work, not a conflict of ours.
    expect(
        &handle,
        &arp(1, PEER_MAC, VIP2, PEER_MAC, VIP2),
        XDP_PASS,
        &[("passed_other", 1)],
    );
    expect(
        &handle,
        &arp(1, PEER_MAC, VIP, PEER_MAC, VIP),
        XDP_PASS,
        &[("arp_conflict", 1)],
    );

    // Forgetting a vhid lets its frames pass and leaves the other as it was.
    handle.unconfigure(VHID2).unwrap();
    expect(
        &handle,
        &advert_for(PASSWORD2, VIP2, VHID2, 9),
        XDP_PASS,
        &[("carp_seen", 1), ("unknown_vhid", 1)],
    );
    expect(
        &handle,
        &arp_request_for(VIP2),
        XDP_PASS,
        &[("passed_other", 1)],
    );
    expect(&handle, &udp_to(VIP2), XDP_PASS, &[("passed_other", 1)]);
    expect(
        &handle,
        &arp_request_for(VIP),
        XDP_TX,
        &[("arp_answered", 1)],
    );
    assert!(matches!(
        handle.set_role(VHID2, true),
        Err(XdpError::NotConfigured(VHID2))
    ));
}

#[test]
fn a_vhid_on_another_interface_is_another_cluster_s() {
    let Some(mut handle) = loaded() else { return };
    handle
        .configure(&VhidSetup {
            ifindex: IFINDEX + 1000,
            ..setup(PASSWORD, VHID, &[VIP.into()], true)
        })
        .unwrap();
    handle.set_role(VHID, true).unwrap();
    expect(
        &handle,
        &genuine(3),
        XDP_PASS,
        &[("carp_seen", 1), ("unknown_vhid", 1)],
    );
    expect(
        &handle,
        &arp_request_for(VIP),
        XDP_PASS,
        &[("passed_other", 1)],
    );
}

#[test]
fn one_vip_belongs_to_one_vhid() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    assert!(matches!(
        handle.configure(&setup(PASSWORD2, VHID2, &[VIP.into()], true)),
        Err(XdpError::VipTaken { other: VHID, .. })
    ));
    // A vhid that moves to another VIP frees its old one.
    handle
        .configure(&setup(PASSWORD, VHID, &[VIP2.into()], true))
        .unwrap();
    handle.set_role(VHID, true).unwrap();
    expect(
        &handle,
        &arp_request_for(VIP),
        XDP_PASS,
        &[("passed_other", 1)],
    );
    handle
        .configure(&setup(PASSWORD2, VHID2, &[VIP.into()], true))
        .unwrap();
}

/// A vhid of several addresses: adverts authenticate all of them whatever the order they
/// are listed in, and every address is answered, fenced and forgotten as the vhid's.
#[tokio::test]
async fn a_vhid_s_addresses_are_all_authenticated_answered_and_fenced() {
    let Some(mut handle) = loaded() else { return };
    let more = [VIP2, VIP, Ipv4Addr::new(10, 99, 0, 150)];
    handle
        .configure(&setup(PASSWORD, VHID, &more.map(IpAddr::V4), true))
        .unwrap();
    let mut events = handle.take_events().unwrap();
    let mut sorted = more;
    sorted.sort();
    for (counter, vips) in [(3, &more), (4, &sorted)] {
        let frame = advert_over(PASSWORD, vips, VHID, counter);
        expect_accepted(&handle, &mut events, &frame).await;
    }
    // One address fewer, or one more, is another message: what a UCARP peer with only the
    // first address sends fails too.
    for (counter, vips) in [
        (5, &more[..1]),
        (6, &more[..2]),
        (
            7,
            &[
                VIP2,
                VIP,
                Ipv4Addr::new(10, 99, 0, 150),
                Ipv4Addr::new(10, 99, 0, 151),
            ][..],
        ),
    ] {
        expect(
            &handle,
            &advert_over(PASSWORD, vips, VHID, counter),
            XDP_DROP,
            &[("carp_seen", 1), ("auth_failed", 1)],
        );
    }
    assert_no_event(&mut events);
    for vip in more {
        expect(&handle, &udp_to(vip), XDP_DROP, &[("fenced", 1)]);
    }
    handle.set_role(VHID, true).unwrap();
    for vip in more {
        let reply = expect(
            &handle,
            &arp_request_for(vip),
            XDP_TX,
            &[("arp_answered", 1)],
        );
        assert_eq!(
            reply[28..32],
            vip.octets(),
            "the reply claims the address asked for"
        );
        expect(&handle, &udp_to(vip), XDP_PASS, &[("passed_other", 1)]);
    }
    // Another vhid can take none of them.
    assert!(matches!(
        handle.configure(&setup(
            PASSWORD2,
            VHID2,
            &[Ipv4Addr::new(10, 99, 0, 150).into()],
            true
        )),
        Err(XdpError::VipTaken { other: VHID, .. })
    ));
    // Dropping one address frees it and keeps the others.
    handle
        .configure(&setup(PASSWORD, VHID, &more.map(IpAddr::V4)[..2], true))
        .unwrap();
    expect(
        &handle,
        &arp_request_for(more[2]),
        XDP_PASS,
        &[("passed_other", 1)],
    );
    expect(
        &handle,
        &arp_request_for(VIP),
        XDP_TX,
        &[("arp_answered", 1)],
    );
    let frame = advert_over(PASSWORD, &more[..2], VHID, 8);
    expect_accepted(&handle, &mut events, &frame).await;
    // Twelve addresses do not fit the one block the program hashes.
    let twelve: Vec<IpAddr> = (1..=12)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 98, 0, i)))
        .collect();
    assert!(matches!(
        handle.configure(&setup(PASSWORD2, VHID2, &twelve, true)),
        Err(XdpError::BadAddrs(_))
    ));
    // Eleven do: the counter then sits in the block's last free words.
    handle
        .configure(&setup(PASSWORD2, VHID2, &twelve[..11], true))
        .unwrap();
    let frame = advert_over(PASSWORD2, &twelve[..11], VHID2, 9);
    expect_accepted(&handle, &mut events, &frame).await;
    handle.unconfigure(VHID).unwrap();
    for vip in &more[..2] {
        expect(
            &handle,
            &arp_request_for(*vip),
            XDP_PASS,
            &[("passed_other", 1)],
        );
    }
}

/// Connection requests held by a drain are anyone's to send; they stop at half the ring
/// buffer, and the adverts of every vhid still find room.
#[tokio::test]
async fn held_connection_requests_leave_half_the_ring_buffer_to_adverts() {
    let Some(mut handle) = configured(true) else {
        return;
    };
    // The reader exists but drains nothing, as in an agent busy elsewhere.
    let _events = handle.take_events().unwrap();
    handle.set_role(VHID, true).unwrap();
    handle.set_drain(VHID, true).unwrap();
    let syn = tcp_to(VIP, 0x02);
    // A record is 104 bytes plus the ring's 8-byte header: half of 256 KiB holds 1170.
    let mut held = 0;
    for _ in 0..5000 {
        let moved = moved(&handle, || {
            assert_eq!(run(&handle, &syn).0, XDP_DROP);
        });
        if moved.contains(&("ringbuf_full", 1)) {
            break;
        }
        held += 1;
    }
    assert!(
        (1100..=1200).contains(&held),
        "{held} connection requests held before the budget stopped them"
    );
    for counter in 0..200 {
        expect(
            &handle,
            &genuine(10_000 + counter),
            XDP_DROP,
            &[("carp_seen", 1), ("advert", 1)],
        );
    }
}

const VIP6: &str = "2001:db8:99::100";
const PEER_IP6: &str = "fe80::77";

/// A neighbour solicitation from the peer for `target`, with its link-layer address option,
/// as Linux sends it (to the solicited-node group, hop limit 255), checksum set.
fn solicitation_for(target: Ipv6Addr) -> Vec<u8> {
    let src: Ipv6Addr = PEER_IP6.parse().unwrap();
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15]];
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&group.octets());
    f.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&t);
    f.extend_from_slice(&[1, 1]);
    f.extend_from_slice(&PEER_MAC);
    let sum = icmpv6_checksum(&f);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum of the message in an Ethernet + IPv6 frame, its own field as it is:
/// 0 for a frame whose checksum is right, when computed over it.
fn icmpv6_checksum(frame: &[u8]) -> u16 {
    let ip = &frame[14..54];
    let msg = &frame[54..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[8..40]);
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(msg);
    wire::internet_checksum(&pseudo)
}

fn ipv6_udp_to(dst: Ipv6Addr) -> Vec<u8> {
    let mut f = OUR_MAC.to_vec();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 8, 17, 64]);
    f.extend_from_slice(&PEER_IP6.parse::<Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0]);
    f
}

/// An IPv6 VIP: solicitations for it are dropped while BACKUP and answered in place while
/// MASTER with a valid advertisement (solicited and override set, our MAC as the target's
/// link-layer address); other frames to it are fenced while BACKUP; DAD probes and
/// solicitations for other addresses pass.
#[test]
fn neighbour_solicitations_for_an_ipv6_vip_are_answered_or_dropped_like_arp() {
    let Some(mut handle) = loaded() else { return };
    let vip: Ipv6Addr = VIP6.parse().unwrap();
    handle
        .configure(&setup(PASSWORD, VHID, &[vip.into()], true))
        .unwrap();
    let ns = solicitation_for(vip);
    assert_eq!(
        icmpv6_checksum(&ns),
        0,
        "the test's own solicitation is valid"
    );
    expect(&handle, &ns, XDP_DROP, &[("nd_dropped", 1)]);
    expect(&handle, &ipv6_udp_to(vip), XDP_DROP, &[("fenced", 1)]);
    let other: Ipv6Addr = "2001:db8:99::101".parse().unwrap();
    expect(
        &handle,
        &solicitation_for(other),
        XDP_PASS,
        &[("passed_other", 1)],
    );

    handle.set_role(VHID, true).unwrap();
    let na = expect(&handle, &ns, XDP_TX, &[("nd_answered", 1)]);
    assert_eq!(na.len(), ns.len());
    assert_eq!(na[..6], PEER_MAC, "to the requester's MAC");
    assert_eq!(na[6..12], OUR_MAC);
    assert_eq!(na[22..38], vip.octets(), "from the VIP");
    assert_eq!(na[38..54], ns[22..38], "to the requester's address");
    assert_eq!(na[21], 255, "hop limit");
    assert_eq!(
        (na[54], na[55], na[58]),
        (136, 0, 0x60),
        "advertisement, solicited + override"
    );
    assert_eq!(na[62..78], vip.octets(), "target");
    assert_eq!(na[78..80], [2, 1], "target link-layer address option");
    assert_eq!(na[80..86], OUR_MAC);
    assert_eq!(icmpv6_checksum(&na), 0, "checksum of the advertisement");
    expect(&handle, &ipv6_udp_to(vip), XDP_PASS, &[("passed_other", 1)]);
    // Duplicate address detection (from `::`) is the kernel's to see.
    let mut dad = ns.clone();
    dad[22..38].fill(0);
    expect(&handle, &dad, XDP_PASS, &[("passed_other", 1)]);
    // On a veth in native mode the kernel answers.
    handle.set_arp_via_stack(VHID, true).unwrap();
    expect(&handle, &ns, XDP_PASS, &[("passed_other", 1)]);

    handle.unconfigure(VHID).unwrap();
    handle.set_arp_via_stack(VHID, false).ok();
    expect(&handle, &ns, XDP_PASS, &[("passed_other", 1)]);
    expect(&handle, &ipv6_udp_to(vip), XDP_PASS, &[("passed_other", 1)]);
}

/// An advert over IPv6 from the peer's link-local address for `vhid`, signed over `vips`.
fn advert6_for(password: &[u8], vips: &[IpAddr], vhid: u8, counter: u64, dst: Ipv6Addr) -> Vec<u8> {
    let carp = wire::encode_carp(password, vips, vhid, 1, 0, counter);
    let mut f = vec![0x33, 0x33, 0, 0, 0, 0x12];
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 36, 112, 255]);
    f.extend_from_slice(&PEER_IP6.parse::<Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&carp);
    f
}

/// An IPv6 vhid's adverts are checked as IPv4 ones are (hop limit, group, replay guard, HMAC
/// over the IPv6 addresses) and reach the agent as IPv6 records; IPv4 adverts carrying its
/// vhid are not its own.
#[tokio::test]
async fn adverts_over_ipv6_are_checked_in_the_kernel() {
    let Some(mut handle) = loaded() else { return };
    let vip: IpAddr = VIP6.parse::<Ipv6Addr>().unwrap().into();
    handle
        .configure(&setup(PASSWORD, VHID, &[vip], true))
        .unwrap();
    let mut events = handle.take_events().unwrap();
    let group = wire::GROUP6;
    let good = advert6_for(PASSWORD, &[vip], VHID, 5, group);
    expect(&handle, &good, XDP_DROP, &[("carp_seen", 1), ("advert", 1)]);
    let event = next_event(&mut events).await;
    let XdpEvent::Advert6 { packet, .. } = event else {
        panic!("expected an IPv6 advert, got {event:?}");
    };
    assert_eq!(packet[..], good[14..]);
    let rx = wire::decode6(&packet).unwrap();
    assert_eq!(rx.advert.counter, 5);
    expect(
        &handle,
        &good,
        XDP_DROP,
        &[("carp_seen", 1), ("replayed", 1)],
    );
    expect(
        &handle,
        &advert6_for(b"wrong", &[vip], VHID, 6, group),
        XDP_DROP,
        &[("carp_seen", 1), ("auth_failed", 1)],
    );
    let mut routed = advert6_for(PASSWORD, &[vip], VHID, 7, group);
    routed[21] = 254;
    expect(
        &handle,
        &routed,
        XDP_PASS,
        &[("carp_seen", 1), ("bad_ttl", 1)],
    );
    expect(
        &handle,
        &advert6_for(PASSWORD, &[vip], VHID, 8, wire::ALL_NODES),
        XDP_PASS,
        &[("carp_seen", 1), ("wrong_group", 1)],
    );
    // The IPv4 advert with this vhid belongs to some other cluster.
    expect(
        &handle,
        &advert_for(PASSWORD, VIP, VHID, 9),
        XDP_PASS,
        &[("carp_seen", 1), ("wrong_group", 1)],
    );
    assert_no_event(&mut events);
    let mut short = good.clone();
    short.truncate(good.len() - 1);
    expect(
        &handle,
        &short,
        XDP_PASS,
        &[("carp_seen", 1), ("carp_malformed", 1)],
    );
}
