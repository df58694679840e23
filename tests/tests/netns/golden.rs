//! Golden vectors: adverts of a real `ucarp` captured in a namespace are read the same way
//! by an independent reference, by `cluster-agent inspect` and by the agent's wire library;
//! the agent's own adverts pass the same reference checks.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;
use cluster_agent::carp::wire;
use tests::agent::inspect;
use tests::oracle::{self, CARP_GROUP, CARP_MCAST_MAC};
use tests::{AgentOpts, Rig, RigConfig, Timed, UcarpOpts, netns_test, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const PASS: &str = "love";
const VHID: u8 = 42;

/// The advert from docs/carp-wire.md (captured from UCARP 1.5.2), as an Ethernet frame.
const DOC_FRAME: &str = "01005e000012 00005e00002a 0800
    45 10 0038 d459 4000 ff 70 bc75 0a630001 e0000012
    21 2a 00 07 00 01 6c79 b4cbc228 e9e06dfa f848c1378606271278a05651723f675e46c34d98";

#[test]
fn documented_vector_reads_the_same_everywhere() {
    let frame = oracle::unhex(DOC_FRAME);
    assert_eq!(frame.len(), 70);
    let a = oracle::parse_frame(&frame).expect("reference accepts the documented advert");
    assert_eq!(a.vhid, VHID);
    assert_eq!(a.src, Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(a.ttl, 255);
    assert_eq!(a.counter, 0xb4cb_c228_e9e0_6dfa);
    assert!(a.authentic(PASS.as_bytes(), VIP));
    assert!(!a.authentic(b"lovf", VIP));

    let rx = wire::decode(&frame[14..]).expect("wire::decode accepts the documented advert");
    assert_eq!(rx.src, a.src);
    assert_eq!(rx.dst, CARP_GROUP);
    assert_eq!(rx.ttl, 255);
    assert_eq!(rx.advert.vhid, a.vhid);
    assert_eq!(rx.advert.advbase, a.advbase);
    assert_eq!(rx.advert.advskew, a.advskew);
    assert_eq!(rx.advert.counter, a.counter);
    assert_eq!(rx.advert.md, a.md);
    assert!(wire::authentic(&rx.advert, PASS.as_bytes(), &[VIP]));
    assert!(!wire::authentic(&rx.advert, b"lovf", &[VIP]));
    assert!(!wire::authentic(
        &rx.advert,
        PASS.as_bytes(),
        &[Ipv4Addr::new(10, 99, 0, 101)]
    ));
    let expect = wire::Expect {
        vhid: VHID,
        peers: &[],
        group: CARP_GROUP.into(),
        vips: &[VIP.into()],
        password: PASS.as_bytes(),
    };
    assert_eq!(wire::verify(&rx, &expect), Ok(()));
    let wrong = wire::Expect {
        password: b"wrong",
        ..expect
    };
    assert!(wire::verify(&rx, &wrong).is_err_and(|e| e.is_auth_failure()));

    // A flipped bit anywhere in the CARP header is caught by its checksum.
    let mut bad = frame.clone();
    bad[14 + 20 + 9] ^= 0x01;
    assert!(oracle::parse_frame(&bad).is_err());
    assert!(wire::decode(&bad[14..]).is_err());
}

#[test]
fn ucarp_capture_is_authentic_to_inspect_and_wire() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(1))?;
        let cap = rig.capture(0, "ucarp")?;
        // deadratio 1: alone on the segment, ucarp is MASTER after about one second.
        let _u = rig.spawn_ucarp(0, &UcarpOpts::new(VHID, PASS, VIP).advskew(7).deadratio(1))?;
        wait_until(
            Duration::from_secs(10),
            "three ucarp adverts captured",
            || cap.frames().len() >= 3,
        )?;
        let path = cap.stop()?;
        let frames = tests::read_pcap(&path)?;
        assert!(frames.len() >= 3);

        let mut reference = Vec::new();
        for f in &frames {
            let a = oracle::parse_frame(f).unwrap_or_else(|e| panic!("ucarp advert rejected: {e}"));
            assert_eq!(f[..6], CARP_MCAST_MAC, "ucarp sends to the multicast MAC");
            assert_eq!((a.src, a.dst, a.ttl), (rig.addr(0), CARP_GROUP, 255));
            assert_eq!((a.vhid, a.advbase, a.advskew, a.authlen), (VHID, 1, 7, 7));
            assert!(
                a.authentic(PASS.as_bytes(), VIP),
                "reference HMAC check failed"
            );
            let rx = wire::decode(&f[14..]).expect("wire::decode accepts a ucarp advert");
            assert_eq!(
                (
                    rx.src,
                    rx.advert.vhid,
                    rx.advert.advbase,
                    rx.advert.advskew,
                    rx.advert.counter
                ),
                (a.src.into(), a.vhid, a.advbase, a.advskew, a.counter)
            );
            assert!(wire::authentic(&rx.advert, PASS.as_bytes(), &[VIP]));
            assert!(!wire::authentic(&rx.advert, b"lov", &[VIP]));
            reference.push(a);
        }

        let good = inspect(&path, PASS, VIP)?;
        assert_eq!(
            good.len(),
            reference.len(),
            "inspect saw a different number of adverts"
        );
        for (i, a) in good.iter().zip(&reference) {
            assert!(
                i.authentic,
                "inspect calls a genuine ucarp advert forged: {i:?}"
            );
            assert_eq!(i.vhid, a.vhid);
            assert_eq!(i.source, a.src.to_string());
            assert_eq!(i.advbase, a.advbase);
            assert_eq!(i.advskew, a.advskew);
            assert_eq!(i.counter, a.counter);
        }
        let wrong_pass = inspect(&path, "lovE", VIP)?;
        assert_eq!(wrong_pass.len(), reference.len());
        assert!(wrong_pass.iter().all(|i| !i.authentic), "{wrong_pass:?}");
        let wrong_vip = inspect(&path, PASS, Ipv4Addr::new(10, 99, 0, 101))?;
        assert_eq!(wrong_vip.len(), reference.len());
        assert!(wrong_vip.iter().all(|i| !i.authentic), "{wrong_vip:?}");
        Ok(())
    })
}

#[test]
fn agent_adverts_and_bow_out_pass_the_reference() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(1))?;
        let cap = rig.capture(0, "agent")?;
        let mut agent = rig.start_agent(
            0,
            &AgentOpts::new(VHID, PASS, "10.99.0.100/24")
                .advskew(9)
                .deadratio(1),
        )?;
        wait_until(
            Duration::from_secs(10),
            "three agent adverts captured",
            || cap.frames().len() >= 3,
        )?;
        agent.proc.terminate()?;
        let st = agent.proc.wait_exit(Duration::from_secs(5))?;
        assert!(st.success(), "agent exit on SIGTERM: {st}");
        // The capture runs until it has the bow-out, or fails after a bounded wait.
        wait_until(Duration::from_secs(2), "bow-out advert captured", || {
            cap.frames()
                .last()
                .and_then(|f| oracle::parse_frame(f).ok())
                .is_some_and(|a| a.is_bow_out())
        })?;
        let path = cap.stop()?;
        let frames = tests::read_pcap(&path)?;
        let (last, regular) = frames.split_last().expect("frames");
        for f in regular {
            let a =
                oracle::parse_frame(f).unwrap_or_else(|e| panic!("agent advert malformed: {e}"));
            assert_eq!(
                f[..6],
                CARP_MCAST_MAC,
                "advert not sent to the multicast MAC"
            );
            assert_eq!((a.src, a.dst, a.ttl), (rig.addr(0), CARP_GROUP, 255));
            assert_eq!((a.vhid, a.advbase, a.advskew, a.authlen), (VHID, 1, 9, 7));
            assert!(a.authentic(PASS.as_bytes(), VIP), "agent's HMAC is wrong");
        }
        let bow = oracle::parse_frame(last).expect("bow-out well-formed");
        assert!(bow.is_bow_out());
        assert!(bow.authentic(PASS.as_bytes(), VIP), "bow-out HMAC is wrong");
        let seen = inspect(&path, PASS, VIP)?;
        assert_eq!(seen.len(), frames.len());
        assert!(seen.iter().all(|i| i.authentic), "{seen:?}");
        Ok(())
    })
}
