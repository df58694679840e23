//! What a node that won the election does with its database, from what it learnt of every
//! other node: open it, catch up first, or refuse.

use std::net::Ipv4Addr;

use super::current::NotCurrent;
use super::{Fault, Holdings, PeerReport};
use crate::db::gtid::{Compare, Gtids, compare};

/// The outcome of weighing a prepare report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Everything any reachable node holds is here: drain, then open for writes.
    Promote { target: Gtids },
    /// `from` holds transactions we lack: replicate from it until `target` is applied.
    CatchUp { from: Ipv4Addr, target: Gtids },
    /// Opening now could lose acknowledged writes or make a second writer.
    Refuse(String),
}

/// What the decision needs beyond the report.
#[derive(Clone, Debug)]
pub struct Context {
    /// The master this node followed until it won, if any.
    pub followed: Option<Ipv4Addr>,
    /// Whether this node held every write that master acknowledged when it went silent.
    pub current: Result<(), NotCurrent>,
    /// Semi-sync replicas the master had at the last clean sample.
    pub clients: u32,
    /// The followed master's agent lives while its server does not answer (see
    /// [`super::current::Currentness::zombie`]).
    pub zombie: bool,
    /// The operator accepted the loss of whatever unreachable nodes may hold.
    pub forced: bool,
    /// Peers a catch-up failed from in this mastership: a source that claims transactions
    /// its binary log no longer has (restored from a backup, its logs purged) fails every
    /// time, and another node holding the same must be given its turn.
    pub failed_sources: Vec<Ipv4Addr>,
}

/// Weighs what every node holds. The rules, in order:
/// - a node that is still writable after our fence makes a second writer: refuse, always;
/// - a node we cannot reach must be accounted for: the master we followed is, if we were
///   current when it went silent (and its agent is not alive to bring its server back); another
///   replica is, if we were current and the master had no other semi-sync replica that could
///   have acknowledged in our place; otherwise refuse (unless forced);
/// - among the nodes that answered (this one included) one must hold everything any other
///   holds; if none does, histories diverged: refuse (unless forced);
/// - if that is this node, open; if it is another, catch up from it (of several that hold
///   the same, one a catch-up has not failed from yet).
pub fn decide(own: &Holdings, peers: &[PeerReport], ctx: &Context) -> Decision {
    let mut reached: Vec<(Option<Ipv4Addr>, Gtids)> = vec![(None, own.all())];
    for peer in peers {
        match &peer.result {
            Ok(p) if p.writable => {
                return Decision::Refuse(format!(
                    "{} is still writable and could not be fenced",
                    peer.addr
                ));
            }
            Ok(p) => reached.push((Some(peer.addr), p.holdings.all())),
            Err(why) => {
                let followed = Some(peer.addr) == ctx.followed;
                // Nothing listening: the server is down and cannot come back writable on its own.
                let dead = matches!(why, Fault::Refused(_));
                let stalled = matches!(why, Fault::Stalled(_));
                let accounted = ctx.forced
                    || (ctx.current.is_ok()
                        && if followed {
                            !stalled && (!ctx.zombie || dead)
                        } else {
                            ctx.clients <= 1
                        });
                if !accounted {
                    let because = match &ctx.current {
                        Err(e) => e.to_string(),
                        Ok(()) if followed => {
                            "it is alive, so its database may resume writable".to_string()
                        }
                        Ok(()) => format!(
                            "the master had {} semi-sync replicas, so it may have acknowledged writes only that node received",
                            ctx.clients
                        ),
                    };
                    return Decision::Refuse(format!(
                        "cannot reach {} ({why}), which may hold acknowledged writes: {because}",
                        peer.addr
                    ));
                }
            }
        }
    }
    let mine = own.all();
    // This node first, then sources no catch-up failed from, the master we followed first.
    reached.sort_by_key(|(a, _)| {
        (
            a.is_some(),
            a.is_some_and(|a| ctx.failed_sources.contains(&a)),
            *a != ctx.followed,
        )
    });
    let newest = reached.iter().find(|(_, h)| {
        reached
            .iter()
            .all(|(_, other)| compare(h, other) == Compare::Covers)
    });
    let (from, target) = match newest {
        Some((None, _)) => return Decision::Promote { target: mine },
        Some((Some(a), h)) => (*a, h.clone()),
        None if ctx.forced => return Decision::Promote { target: mine },
        None => {
            // Name one pair that neither covers the other, for the operator.
            let mut why = String::from("no node holds the newest history of every other");
            'pairs: for (a, ha) in &reached {
                for (b, hb) in &reached {
                    if let Compare::Diverged {
                        ours_only,
                        theirs_only,
                    } = compare(ha, hb)
                    {
                        let name = |x: &Option<Ipv4Addr>| {
                            x.map_or("this node".to_string(), |a| a.to_string())
                        };
                        why = format!(
                            "diverged: {} holds {ours_only} that {} lacks, and {} holds {theirs_only} that {} lacks",
                            name(a),
                            name(b),
                            name(b),
                            name(a)
                        );
                        break 'pairs;
                    }
                }
            }
            return Decision::Refuse(why);
        }
    };
    if mine.covers(&target) {
        return Decision::Promote { target: mine };
    }
    Decision::CatchUp { from, target }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::PeerState;

    fn h(logged: &str, received: &str) -> Holdings {
        Holdings {
            logged: Gtids::mariadb(logged),
            received: Gtids::mariadb(received),
        }
    }

    fn peer(addr: [u8; 4], r: Result<Holdings, &str>) -> PeerReport {
        PeerReport {
            addr: Ipv4Addr::from(addr),
            result: r
                .map(|holdings| PeerState {
                    holdings,
                    writable: false,
                })
                .map_err(|e| Fault::Other(e.to_string())),
        }
    }

    fn ctx(current: bool, followed: Option<[u8; 4]>, clients: u32) -> Context {
        Context {
            followed: followed.map(Ipv4Addr::from),
            current: if current {
                Ok(())
            } else {
                Err(NotCurrent::SemiSyncOff)
            },
            clients,
            zombie: false,
            forced: false,
            failed_sources: Vec::new(),
        }
    }

    const M: [u8; 4] = [10, 0, 0, 1];
    const R2: [u8; 4] = [10, 0, 0, 3];

    #[test]
    fn current_replica_promotes_when_the_master_is_gone() {
        let d = decide(
            &h("0-1-90", "0-1-100"),
            &[peer(M, Err("timed out"))],
            &ctx(true, Some(M), 1),
        );
        assert_eq!(
            d,
            Decision::Promote {
                target: Gtids::mariadb("0-1-100")
            }
        );
    }

    #[test]
    fn stale_replica_refuses_when_the_master_is_gone() {
        let d = decide(
            &h("0-1-90", "0-1-100"),
            &[peer(M, Err("timed out"))],
            &ctx(false, Some(M), 1),
        );
        assert!(
            matches!(d, Decision::Refuse(ref why) if why.contains("semi-sync")),
            "{d:?}"
        );
    }

    #[test]
    fn a_reachable_master_is_caught_up_with_whatever_the_currentness() {
        let d = decide(
            &h("0-1-90", "0-1-100"),
            &[peer(M, Ok(h("0-1-120", "")))],
            &ctx(false, Some(M), 1),
        );
        assert_eq!(
            d,
            Decision::CatchUp {
                from: Ipv4Addr::from(M),
                target: Gtids::mariadb("0-1-120")
            }
        );
    }

    /// Two peers hold the same newest history and the catch-up from the first failed (its
    /// binary log lacks what its GTID state claims): the next prepare takes the other, and
    /// once both failed, the first again.
    #[test]
    fn a_source_a_catch_up_failed_from_gives_way_to_another_holding_the_same() {
        const R3: [u8; 4] = [10, 0, 0, 4];
        let peers = [
            peer(M, Ok(h("0-1-120", ""))),
            peer(R3, Ok(h("0-1-120", "0-1-120"))),
        ];
        let own = h("0-1-90", "0-1-100");
        let from = |failed: &[[u8; 4]]| {
            let c = Context {
                failed_sources: failed.iter().map(|&a| Ipv4Addr::from(a)).collect(),
                ..ctx(true, Some(M), 1)
            };
            match decide(&own, &peers, &c) {
                Decision::CatchUp { from, target } => {
                    assert_eq!(target, Gtids::mariadb("0-1-120"));
                    from
                }
                d => panic!("{d:?}"),
            }
        };
        assert_eq!(from(&[]), Ipv4Addr::from(M));
        assert_eq!(from(&[M]), Ipv4Addr::from(R3));
        assert_eq!(from(&[M, R3]), Ipv4Addr::from(M));
    }

    #[test]
    fn another_replica_ahead_is_caught_up_with() {
        let d = decide(
            &h("0-1-90", "0-1-100"),
            &[peer(M, Err("down")), peer(R2, Ok(h("0-1-95", "0-1-104")))],
            &ctx(true, Some(M), 2),
        );
        assert_eq!(
            d,
            Decision::CatchUp {
                from: Ipv4Addr::from(R2),
                target: Gtids::mariadb("0-1-104")
            }
        );
    }

    #[test]
    fn an_unreachable_second_replica_blocks_only_when_it_could_have_acknowledged() {
        let ps = [peer(M, Err("down")), peer(R2, Err("down"))];
        let own = h("0-1-90", "0-1-100");
        assert!(matches!(
            decide(&own, &ps, &ctx(true, Some(M), 2)),
            Decision::Refuse(_)
        ));
        assert!(matches!(
            decide(&own, &ps, &ctx(true, Some(M), 1)),
            Decision::Promote { .. }
        ));
    }

    #[test]
    fn no_master_known_needs_every_node() {
        let c = Context {
            followed: None,
            current: Err(NotCurrent::NoMaster),
            clients: 0,
            zombie: false,
            forced: false,
            failed_sources: Vec::new(),
        };
        let own = h("0-1-100", "");
        assert!(matches!(
            decide(&own, &[peer(R2, Err("down"))], &c),
            Decision::Refuse(_)
        ));
        assert!(matches!(
            decide(&own, &[peer(R2, Ok(h("0-1-100", "")))], &c),
            Decision::Promote { .. }
        ));
        let forced = Context { forced: true, ..c };
        assert!(matches!(
            decide(&own, &[peer(R2, Err("down"))], &forced),
            Decision::Promote { .. }
        ));
    }

    #[test]
    fn diverged_and_unfenceable_peers_refuse() {
        let d = decide(
            &h("0-1-100,0-2-101", ""),
            &[peer(R2, Ok(h("0-1-100,0-3-101", "")))],
            &ctx(true, None, 0),
        );
        assert!(
            matches!(d, Decision::Refuse(ref w) if w.contains("diverged")),
            "{d:?}"
        );
        let mut p = peer(R2, Ok(h("", "")));
        if let Ok(s) = p.result.as_mut() {
            s.writable = true;
        }
        let forced = Context {
            forced: true,
            ..ctx(true, None, 0)
        };
        assert!(matches!(
            decide(&h("", ""), &[p], &forced),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn the_node_that_holds_everything_is_caught_up_with() {
        let d = decide(
            &h("0-1-188,0-2-122", ""),
            &[
                peer(M, Ok(h("0-1-188,0-2-300", ""))),
                peer(R2, Ok(h("0-1-188,0-2-290", "0-2-384"))),
            ],
            &ctx(false, Some(M), 2),
        );
        assert_eq!(
            d,
            Decision::CatchUp {
                from: Ipv4Addr::from(R2),
                target: Gtids::mariadb("0-1-188,0-2-384")
            }
        );
    }

    #[test]
    fn leftovers_of_an_old_master_are_a_divergence_for_an_operator() {
        // The old master (server 1) holds 101-103 that nobody received, this node went on:
        // nothing tells unacknowledged leftovers from acknowledged writes.
        let d = decide(
            &h("0-1-100,0-2-180", ""),
            &[peer(M, Ok(h("0-1-103", "")))],
            &ctx(true, None, 0),
        );
        assert!(
            matches!(d, Decision::Refuse(ref w) if w.contains("diverged")),
            "{d:?}"
        );
    }
}
