//! Is this replica known to hold every write its master acknowledged?
//!
//! Semi-sync replication acknowledges a commit to its client only after a replica received it,
//! until the master gives up waiting (`rpl_semi_sync_master_timeout`) and goes on alone. From
//! then on its acknowledged commits exist on the master only. A replica cannot see that from
//! its own data, so it samples the master it follows: semi-sync status, the count of commits
//! that went unacknowledged by any replica (`no_tx`) and the master's binary-log state.
//!
//! A sample is *clean* when the master answered with semi-sync on, `no_tx` has not moved since
//! the previous answer, and what this replica holds (logged or received) covers what the master
//! had logged at the previous answer. Then every commit logged up to the previous answer is here,
//! and every commit since was acknowledged by some replica (`no_tx` would have moved otherwise).
//!
//! After the last clean sample the master can only have gone on alone by first waiting a full
//! semi-sync timeout for a commit logged after the previous sample (the coverage point): a commit
//! logged before it is here already, so its acknowledgement was sent. So the replica is current
//! as long as the master cannot have been alive at `coverage point + timeout`. The master's life
//! is bounded by its last sign of life: its last answer, or its last advert plus one advert
//! interval (it would have sent another), or sooner, the moment its server refused a connection
//! (nothing listening, so nothing committing). A margin covers sampling and delivery latency.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Fault, Observation};
use crate::carp::time::Mono;
use crate::db::gtid::Gtids;

/// How long a live server takes at most to answer a sample; adverts from its node later than
/// this after an unanswered sample began show the node itself lives on.
const ANSWER_SLACK: Duration = Duration::from_millis(50);

/// Why a replica is not known to hold every acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotCurrent {
    /// No master is known to compare with.
    NoMaster,
    /// Not replicating from the master yet (or any more).
    NotReplicating,
    /// The node followed is not the writer (its database is read-only): holding what it has
    /// says nothing about what the writer acknowledged.
    MasterNotWritable,
    /// Fewer than two answers from the master since it was followed.
    NotYetCompared,
    /// The local server did not answer.
    LocalDown(String),
    /// The master answered with semi-sync off: it acknowledges commits on its own.
    SemiSyncOff,
    /// The master acknowledged commits that no replica had received.
    Fallback { unacknowledged: u64 },
    /// This replica had not received what the master had logged a sample earlier.
    Behind { missing: String },
    /// The master lived on longer than the semi-sync timeout after the last clean sample
    /// without a clean sample since: it may have gone on alone.
    Expired { silent_for: Duration },
}

impl std::fmt::Display for NotCurrent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotCurrent::NoMaster => f.write_str("no master to compare with"),
            NotCurrent::NotReplicating => f.write_str("not replicating from the master"),
            NotCurrent::MasterNotWritable => {
                f.write_str("the master's database is not open for writes")
            }
            NotCurrent::NotYetCompared => f.write_str("not yet compared with the master"),
            NotCurrent::LocalDown(e) => write!(f, "local database down: {e}"),
            NotCurrent::SemiSyncOff => {
                f.write_str("the master's semi-sync replication is off (asynchronous fallback)")
            }
            NotCurrent::Fallback { unacknowledged } => write!(
                f,
                "the master acknowledged {unacknowledged} commit(s) no replica had received"
            ),
            NotCurrent::Behind { missing } => {
                write!(f, "behind the master: not yet received {missing}")
            }
            NotCurrent::Expired { silent_for } => write!(
                f,
                "no clean comparison with the live master for {} ms",
                silent_for.as_millis()
            ),
        }
    }
}

/// A master sample that counts as the base for the next one.
#[derive(Clone, Debug)]
struct Base {
    at: Mono,
    no_tx: u64,
    logged: Gtids,
}

#[derive(Clone, Copy, Debug)]
struct Clean {
    /// Everything the master logged up to here is on this node.
    coverage_at: Mono,
    timeout: Duration,
    /// Semi-sync replicas connected to the master at the clean sample.
    clients: u32,
}

#[derive(Clone, Debug)]
pub struct Currentness {
    margin: Duration,
    master: Option<Ipv4Addr>,
    verdict: Result<(), NotCurrent>,
    base: Option<Base>,
    clean: Option<Clean>,
    last_answer: Option<Mono>,
    /// The master's server refused a connection after its last answer.
    refused_at: Option<Mono>,
    /// First unanswered sample after the last answer: when it began.
    unanswered_since: Option<Mono>,
    last_advert: Option<Mono>,
    master_interval: Duration,
    /// The master's agent bowed out: it is alive, whatever its server does.
    bowed_out: bool,
    /// Its host answered while its server did not: stalled, not dead.
    stalled: bool,
    /// When this node won the election from the followed master.
    won_at: Option<Mono>,
    /// Under a quorum lease a master cut off from us is not dead: it writes on until its
    /// lease runs out, so its life is bounded by the moment we learnt the key was no longer
    /// its, not by its silence.
    quorum: bool,
    /// When this node first learnt that the followed master no longer held the key.
    key_gone_at: Option<Mono>,
}

impl Currentness {
    pub fn new(margin: Duration) -> Currentness {
        Currentness {
            margin,
            master: None,
            verdict: Err(NotCurrent::NoMaster),
            base: None,
            clean: None,
            last_answer: None,
            refused_at: None,
            unanswered_since: None,
            last_advert: None,
            master_interval: Duration::ZERO,
            bowed_out: false,
            stalled: false,
            won_at: None,
            quorum: false,
            key_gone_at: None,
        }
    }

    /// Judges under a quorum lease (see [`Currentness::key_gone`]).
    pub fn with_quorum(mut self) -> Currentness {
        self.quorum = true;
        self
    }

    /// The leader key is the followed master's (again).
    pub fn key_held(&mut self) {
        self.key_gone_at = None;
    }

    /// The leader key is not the followed master's: it wrote nothing after this instant.
    pub fn key_gone(&mut self, at: Mono) {
        if self.key_gone_at.is_none() {
            self.key_gone_at = Some(at);
        }
    }

    pub fn master(&self) -> Option<Ipv4Addr> {
        self.master
    }

    /// Starts judging against `master`; everything learnt about another one is void.
    pub fn follow(&mut self, master: Option<Ipv4Addr>) {
        if master == self.master {
            return;
        }
        *self = Currentness {
            master,
            verdict: Err(if master.is_some() {
                NotCurrent::NotYetCompared
            } else {
                NotCurrent::NoMaster
            }),
            quorum: self.quorum,
            ..Currentness::new(self.margin)
        };
    }

    /// A verified advert from the followed master: a sign of life. `interval` is `None` for
    /// a bow-out.
    pub fn advert(&mut self, at: Mono, interval: Option<Duration>) {
        self.last_advert = Some(self.last_advert.map_or(at, |t| t.max(at)));
        match interval {
            Some(i) => self.master_interval = i,
            None => self.bowed_out = true,
        }
    }

    pub fn last_advert(&self) -> Option<Mono> {
        self.last_advert
    }

    /// When the followed master's next advert is overdue: half an interval after it was due.
    /// None after a bow-out (its agent is alive) or before an advert with an interval.
    pub fn overdue_at(&self) -> Option<Mono> {
        if self.bowed_out || self.master_interval.is_zero() {
            return None;
        }
        Some(self.last_advert? + self.master_interval * 3 / 2)
    }

    /// Semi-sync replicas the master had at the last clean sample (0 when unknown).
    pub fn clients(&self) -> u32 {
        self.clean.map_or(0, |c| c.clients)
    }

    /// How long the master's server has not answered, if it has stopped answering.
    pub fn unanswered_for(&self, now: Mono) -> Option<Duration> {
        if self.refused_at.is_some() {
            return Some(Duration::MAX);
        }
        self.unanswered_since.map(|t| now.saturating_since(t))
    }

    /// Takes one observation, delivered at `now`. `replicating` says whether the local server
    /// replicates from the followed master over verified TLS (the caller knows the confirmed
    /// role).
    pub fn observe(&mut self, obs: &Observation, replicating: bool, now: Mono) {
        let Some(master) = self.master else { return };
        let sample = obs
            .master
            .as_ref()
            .filter(|(addr, _)| *addr == master)
            .map(|(_, s)| s);
        let local = match &obs.local {
            Ok(l) => l,
            Err(e) => {
                match sample {
                    // The next clean comparison with the master judges anew.
                    Some(s) => {
                        self.verdict = Err(NotCurrent::LocalDown(e.to_string()));
                        // The master's answer still says it lives.
                        if s.is_ok() {
                            self.answered(now);
                        }
                    }
                    // A new MASTER waiting for the key samples only its own server, and no
                    // comparison will follow. A server that stopped running comes back
                    // without the relay log it acknowledged from; one that is merely slow to
                    // answer keeps what it had.
                    None if matches!(e, Fault::Refused(_)) => self.local_lost(&e.to_string()),
                    None => {}
                }
                return;
            }
        };
        let Some(sample) = sample else { return };
        let m = match sample {
            Ok(m) => m,
            Err(fault) => {
                if matches!(fault, Fault::Refused(_)) && self.refused_at.is_none() {
                    self.refused_at = Some(obs.at);
                }
                if matches!(fault, Fault::Stalled(_)) {
                    self.stalled = true;
                }
                if self.unanswered_since.is_none() {
                    self.unanswered_since = Some(obs.asked.max(obs.at));
                }
                return;
            }
        };
        self.answered(now);
        let base = self.base.replace(Base {
            at: obs.at,
            no_tx: m.semi_sync.no_tx,
            logged: m.logged.clone(),
        });
        let held = match &local.replica {
            Some(r) => local.logged.union(&r.received),
            None => local.logged.clone(),
        };
        // A master that answers while our receiving thread is down may already go on alone:
        // with no semi-sync replica connected it waits for nobody.
        let receiving = local.replica.as_ref().is_some_and(|r| r.io_running);
        self.verdict = if !replicating || !receiving {
            Err(NotCurrent::NotReplicating)
        } else if m.read_only {
            Err(NotCurrent::MasterNotWritable)
        } else if !m.semi_sync.on {
            Err(NotCurrent::SemiSyncOff)
        } else if let Some(b) = base {
            let missing = held.missing(&b.logged);
            if m.semi_sync.no_tx != b.no_tx {
                Err(NotCurrent::Fallback {
                    unacknowledged: m.semi_sync.no_tx.saturating_sub(b.no_tx),
                })
            } else if !missing.is_empty() {
                Err(NotCurrent::Behind {
                    missing: missing.to_string(),
                })
            } else {
                self.clean = Some(Clean {
                    coverage_at: b.at,
                    timeout: m.semi_sync.timeout,
                    clients: m.semi_sync.clients,
                });
                Ok(())
            }
        } else {
            Err(NotCurrent::NotYetCompared)
        };
        if self.verdict.is_err() {
            self.clean = None;
        }
    }

    /// The local server was found down or restarted (by an operation, or by a sample with no
    /// master to compare with): whatever it held may not have reached the master as
    /// acknowledgements since, and the master may have gone on alone the moment our
    /// connection dropped.
    pub fn local_lost(&mut self, why: &str) {
        if self.master.is_some() {
            self.verdict = Err(NotCurrent::LocalDown(why.to_string()));
            self.clean = None;
        }
    }

    fn answered(&mut self, at: Mono) {
        self.last_answer = Some(self.last_answer.map_or(at, |t| t.max(at)));
        self.bowed_out = false;
        self.stalled = false;
        self.refused_at = None;
        self.unanswered_since = None;
    }

    /// This node won the election at `at`: the followed master had gone silent.
    pub fn won(&mut self, at: Mono) {
        self.won_at = Some(at);
    }

    /// The master's agent is alive (it bowed out, advertised after its server had stopped
    /// answering, or advertised after we took over, which a dead node cannot) and its server
    /// has not refused a connection: the server is stalled or cut off from us rather than dead,
    /// and may come back writable.
    pub fn zombie(&self) -> bool {
        let after =
            |t: Option<Mono>| matches!((t, self.last_advert), (Some(t), Some(adv)) if adv > t);
        // A node that lost power stops advertising at once; one whose server merely stopped
        // answering goes on. The slack covers a sample that began just before a power cut.
        let after_silence = self.unanswered_since.map(|t| t + ANSWER_SLACK);
        self.refused_at.is_none()
            && (self.bowed_out || self.stalled || after(after_silence) || after(self.won_at))
    }

    /// The latest instant the master may have been alive, as far as we can tell.
    fn alive_until(&self) -> Option<Mono> {
        let signs = if let Some(r) = self.refused_at {
            Some(r)
        } else {
            let advert = self.last_advert.map(|t| t + self.master_interval);
            match (advert, self.last_answer) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        };
        match (signs, self.key_gone_at.filter(|_| self.quorum)) {
            (Some(s), Some(k)) => Some(s.max(k)),
            (s, k) => s.or(k),
        }
    }

    /// Whether every write the followed master acknowledged is on this node, now or (when the
    /// master has gone silent) at its end.
    pub fn verdict(&self) -> Result<(), NotCurrent> {
        self.verdict.clone()?;
        let clean = self.clean.ok_or(NotCurrent::NotYetCompared)?;
        let deadline = clean.coverage_at + clean.timeout.saturating_sub(self.margin);
        match self.alive_until() {
            Some(alive) if alive >= deadline => Err(NotCurrent::Expired {
                silent_for: alive.saturating_since(clean.coverage_at),
            }),
            _ => Ok(()),
        }
    }
}
