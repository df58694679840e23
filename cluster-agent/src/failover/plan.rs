//! What a node that won the election does with its database, from what it learnt of every
//! other node: open it, catch up first, or refuse.

use std::net::Ipv4Addr;

use super::current::NotCurrent;
use super::{Holdings, PeerReport};
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
}

/// Weighs what every node holds. The rules, in order:
/// - a node that is still writable after our fence makes a second writer: refuse, always;
/// - a node holding transactions we lack that are not superseded, while we hold transactions
///   it lacks: diverged, refuse (unless forced);
/// - a node we cannot reach must be accounted for: the master we followed is, if we were
///   current when it went silent; another replica is, if we were current and the master had
///   no other semi-sync replica that could have acknowledged in our place; otherwise refuse
///   (unless forced);
/// - what remains: catch up to the union of what reachable nodes hold, from the node whose
///   binary log has it (preferring the master we followed), then promote.
pub fn decide(own: &Holdings, peers: &[PeerReport], ctx: &Context) -> Decision {
    let mine = own.all();
    let mut target = mine.clone();
    let mut sources: Vec<(Ipv4Addr, &Holdings)> = Vec::new();
    for peer in peers {
        match &peer.result {
            Ok(p) if p.writable => {
                return Decision::Refuse(format!(
                    "{} is still writable and could not be fenced",
                    peer.addr
                ));
            }
            Ok(p) => match compare(&mine, &p.holdings.all()) {
                Compare::Covers => {}
                Compare::Behind { missing } => {
                    target = target.union(&missing);
                    sources.push((peer.addr, &p.holdings));
                }
                Compare::Diverged {
                    ours_only,
                    theirs_only,
                } => {
                    if !ctx.forced {
                        return Decision::Refuse(format!(
                            "diverged from {}: it holds {theirs_only} that this node lacks, this node holds {ours_only} that it lacks",
                            peer.addr
                        ));
                    }
                }
            },
            Err(why) => {
                let followed = Some(peer.addr) == ctx.followed;
                let accounted = ctx.forced
                    || (ctx.current.is_ok()
                        && if followed {
                            !ctx.zombie
                        } else {
                            ctx.clients <= 1
                        });
                if !accounted {
                    let because = match &ctx.current {
                        Err(e) => e.to_string(),
                        Ok(()) if followed => {
                            "its agent is alive, so its database may resume writable".to_string()
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
    if mine.covers(&target) {
        return Decision::Promote { target: mine };
    }
    // The best source has the whole target in its binary log; failing that, the one holding
    // the most, whose relay log will reach its binary log as it applies.
    let pick = |logged_only: bool| {
        sources
            .iter()
            .filter(|(_, h)| {
                let have = if logged_only {
                    h.logged.clone()
                } else {
                    h.all()
                };
                mine.union(&have).covers(&target)
            })
            .min_by_key(|(addr, _)| Some(*addr) != ctx.followed)
            .map(|(addr, _)| *addr)
    };
    match pick(true).or_else(|| pick(false)) {
        Some(from) => Decision::CatchUp { from, target },
        None => Decision::Refuse(format!(
            "no single node holds everything the reachable nodes hold together ({target})"
        )),
    }
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
                .map_err(str::to_string),
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
    fn superseded_leftovers_of_an_old_master_do_not_block() {
        // The old master (server 1) crashed with 101-103 in its log that nobody received; this
        // node took over and wrote on from 101.
        let d = decide(
            &h("0-1-100,0-2-180", ""),
            &[peer(M, Ok(h("0-1-103", "")))],
            &ctx(true, None, 0),
        );
        assert!(matches!(d, Decision::Promote { .. }), "{d:?}");
    }
}
