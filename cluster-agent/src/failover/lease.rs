//! The quorum lease as the coordinator sees it (`[quorum]`): whether this node may have its
//! database open for writes, judged from the reports of the task that talks to etcd.
//!
//! CARP cannot tell a dead master from a cut-off one; etcd's leader key, held under a lease
//! that only a majority of etcd members can renew, can. The holder stops writing before the
//! lease could have run out in etcd, and a new master opens only once the key is gone, so the
//! two writable periods never overlap, whichever side of a partition each node is on.
//!
//! The rule on time: etcd starts a lease's TTL when it receives the grant or the renewal,
//! which is after this node sent it, so `sent + ttl` is never later than etcd's expiry (clock
//! rates being alike). The database may stay open until [`WRITE_SHARE`] of the TTL after the
//! last renewal that succeeded was sent; the rest of the TTL is the fence's time to complete.
//! Renewals go out every [`RENEW_SHARE`] of it, so one lost renewal costs nothing and the
//! second is still answered in time when etcd is slow (Patroni's `loop_wait + 2*retry_timeout
//! <= ttl`, with `retry_timeout` a sixth of the TTL here).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::carp::time::Mono;

/// Part of the TTL after a renewal was sent during which the database may stay open.
pub const WRITE_SHARE: (u32, u32) = (2, 3);
/// Part of the TTL between renewals.
pub const RENEW_SHARE: (u32, u32) = (1, 3);
/// Part of the TTL one request to etcd may take.
pub const REQUEST_SHARE: (u32, u32) = (1, 6);

fn share(ttl: Duration, (num, den): (u32, u32)) -> Duration {
    ttl * num / den
}

/// How often a held lease is renewed.
pub fn renew_every(ttl: Duration) -> Duration {
    share(ttl, RENEW_SHARE)
}

/// Longest wait for one answer from etcd.
pub fn request_timeout(ttl: Duration) -> Duration {
    share(ttl, REQUEST_SHARE)
}

/// What the quorum task found out, in the order it found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseReport {
    /// This node holds the leader key: the grant or renewal that showed it was sent at `sent`.
    Held { sent: Mono, epoch: i64 },
    /// Another node holds it.
    HeldBy { holder: String, epoch: i64 },
    /// Nobody holds it (this node released it, or it expired).
    Free,
    /// No majority of etcd answered; what was held may still be, until its deadline.
    Unreachable(String),
}

/// The lease's state for `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumView {
    /// `held` (with time left to write), `lapsed` (not renewed in time), `held-by-other`,
    /// `free`, `unreachable` or `unknown` (no answer yet).
    pub state: String,
    /// Who holds the leader key, as its value names the node.
    pub holder: Option<String>,
    /// The key's revision when it was created: each holding has its own.
    pub epoch: Option<i64>,
    /// How long this node's database may still stay open on the lease (ms).
    pub write_left_ms: Option<u64>,
    pub ttl_ms: u64,
    pub error: Option<String>,
}

pub struct Lease {
    ttl: Duration,
    /// When the last renewal that succeeded was sent, while this node holds the key.
    held_sent: Option<Mono>,
    epoch: Option<i64>,
    holder: Option<String>,
    error: Option<String>,
    /// Neither held nor free nor reported yet.
    known: bool,
    /// The deadline of `held_sent` passed without a renewal (the timer fired once for it).
    lapsed: bool,
    /// When this node last let the key go: a grant or renewal sent before then says nothing
    /// of now, since etcd may have deleted the key the moment the release arrived.
    released_at: Option<Mono>,
    /// Let go, and etcd has not said since who holds the key: another node may have it.
    unsettled: bool,
}

impl Lease {
    pub fn new(ttl: Duration) -> Lease {
        Lease {
            ttl,
            held_sent: None,
            epoch: None,
            holder: None,
            error: None,
            known: false,
            lapsed: false,
            released_at: None,
            unsettled: false,
        }
    }

    /// This node lets the key go at `now` (its database is read-only): from now on it holds
    /// nothing, whatever answers to earlier requests still arrive, because etcd deletes the
    /// key as soon as the release reaches it, long before the TTL.
    pub fn release(&mut self, now: Mono) {
        self.unsettled = self.held_sent.is_some() || self.unsettled;
        self.held_sent = None;
        self.lapsed = false;
        self.released_at = Some(self.released_at.map_or(now, |r| r.max(now)));
    }

    pub fn report(&mut self, r: LeaseReport) {
        self.known = true;
        match r {
            LeaseReport::Held { sent, .. } if self.released_at.is_some_and(|r| sent <= r) => {}
            LeaseReport::Held { sent, epoch } => {
                self.unsettled = false;
                // A late answer to an older renewal must not move the deadline back.
                self.held_sent = Some(self.held_sent.map_or(sent, |s| s.max(sent)));
                self.lapsed = false;
                self.epoch = Some(epoch);
                self.holder = None;
                self.error = None;
            }
            LeaseReport::HeldBy { holder, epoch } => {
                self.unsettled = false;
                self.held_sent = None;
                self.epoch = Some(epoch);
                self.holder = Some(holder);
                self.error = None;
            }
            LeaseReport::Free => {
                self.unsettled = false;
                self.held_sent = None;
                self.epoch = None;
                self.holder = None;
                self.error = None;
            }
            LeaseReport::Unreachable(e) => self.error = Some(e),
        }
    }

    /// Until when the database may stay open, while this node holds the key.
    pub fn write_until(&self) -> Option<Mono> {
        self.held_sent.map(|s| s + share(self.ttl, WRITE_SHARE))
    }

    /// True while the key is this node's as far as it knows: even after the write deadline,
    /// until etcd says otherwise or the key is released.
    pub fn held(&self) -> bool {
        self.held_sent.is_some()
    }

    /// Ok while this node may have its database open for writes; else why not.
    pub fn gate(&self, now: Mono) -> Result<(), String> {
        match self.write_until() {
            Some(t) if now < t => Ok(()),
            // The error itself changes from try to try; `status` shows the last one.
            Some(_) => Err(format!(
                "the quorum lease was not renewed in time{}",
                if self.error.is_some() {
                    " (etcd unreachable)"
                } else {
                    ""
                }
            )),
            None => Err(match (&self.holder, &self.error) {
                (_, Some(_)) => "waiting for the quorum lease: etcd unreachable".to_string(),
                (Some(h), None) => {
                    format!("waiting for the quorum lease: {h} holds the leader key")
                }
                (None, None) if self.known => "waiting for the quorum lease".to_string(),
                (None, None) => "waiting for the quorum lease: etcd not asked yet".to_string(),
            }),
        }
    }

    /// Another node holds the key, as far as this node knows, or this node's own holding ran
    /// out unrenewed or was let go and etcd has not answered since (cut off: someone else may
    /// hold it now).
    pub fn someone_else_may_hold(&self) -> bool {
        (self.held_sent.is_none() && (self.holder.is_some() || self.unsettled))
            || (self.held() && self.lapsed)
    }

    /// The node that holds the key, as its value names it, while another one does.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|_| self.held_sent.is_none())
    }

    /// The last request to etcd failed: no node can take the key now.
    pub fn unreachable(&self) -> bool {
        self.error.is_some()
    }

    /// The next instant the gate closes by itself, once.
    pub fn poll_timeout(&self) -> Option<Mono> {
        self.write_until().filter(|_| !self.lapsed)
    }

    pub fn handle_timeout(&mut self, now: Mono) {
        if self.write_until().is_some_and(|t| t <= now) {
            self.lapsed = true;
        }
    }

    pub fn view(&self, now: Mono) -> QuorumView {
        let open = self.write_until().is_some_and(|t| now < t);
        let state = if open {
            "held"
        } else if self.error.is_some() {
            "unreachable"
        } else if self.held_sent.is_some() {
            "lapsed"
        } else if self.holder.is_some() {
            "held-by-other"
        } else if self.known {
            "free"
        } else {
            "unknown"
        };
        QuorumView {
            state: state.into(),
            holder: self.holder.clone(),
            epoch: self.epoch,
            write_left_ms: self
                .write_until()
                .map(|t| t.saturating_since(now).as_millis() as u64),
            ttl_ms: self.ttl.as_millis() as u64,
            error: self.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    fn at(ms: u64) -> Mono {
        Mono::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn the_database_closes_a_third_of_the_ttl_before_etcd_could_expire_the_key() {
        let mut l = Lease::new(TTL);
        assert!(l.gate(at(0)).is_err(), "nothing held yet");
        l.report(LeaseReport::Held {
            sent: at(1000),
            epoch: 7,
        });
        assert!(l.gate(at(2999)).is_ok());
        assert!(
            l.gate(at(3000)).is_err(),
            "2/3 of 3 s after the renewal was sent"
        );
        assert_eq!(l.poll_timeout(), Some(at(3000)));
        l.handle_timeout(at(3000));
        assert_eq!(l.poll_timeout(), None, "the deadline fires once");
        assert!(l.held(), "the key stays ours until etcd says otherwise");
    }

    #[test]
    fn an_unanswered_renewal_keeps_the_old_deadline_and_a_late_answer_cannot_move_it_back() {
        let mut l = Lease::new(TTL);
        l.report(LeaseReport::Held {
            sent: at(1000),
            epoch: 7,
        });
        l.report(LeaseReport::Unreachable("timed out".into()));
        assert_eq!(l.write_until(), Some(at(3000)));
        assert!(l.gate(at(3500)).unwrap_err().contains("unreachable"));
        assert_eq!(l.view(at(3500)).error.as_deref(), Some("timed out"));
        l.report(LeaseReport::Held {
            sent: at(2000),
            epoch: 7,
        });
        l.report(LeaseReport::Held {
            sent: at(1500),
            epoch: 7,
        });
        assert_eq!(l.write_until(), Some(at(4000)));
    }

    /// Quorum simulation seed 6049595: a renewal answered late, after the node had let the
    /// key go, left it "held" for the rest of the write window; cut off moments later, it won
    /// the election again and opened while the other node held the key and wrote.
    #[test]
    fn a_released_key_stays_released_whatever_earlier_requests_answer() {
        let mut l = Lease::new(TTL);
        l.report(LeaseReport::Held {
            sent: at(1000),
            epoch: 7,
        });
        l.release(at(1500));
        assert!(!l.held());
        assert!(l.gate(at(1600)).is_err());
        assert!(
            l.someone_else_may_hold(),
            "let go, and etcd has not answered since"
        );
        // The answer to a renewal sent before the release.
        l.report(LeaseReport::Held {
            sent: at(1400),
            epoch: 7,
        });
        assert!(!l.held(), "a renewal sent before the release");
        assert!(l.gate(at(1700)).is_err());
        assert_eq!(l.poll_timeout(), None);
        // Asked for again: a grant sent after the release counts.
        l.report(LeaseReport::Held {
            sent: at(1800),
            epoch: 9,
        });
        assert!(l.gate(at(1900)).is_ok());
        assert_eq!(l.write_until(), Some(at(3800)));
        assert!(!l.someone_else_may_hold());
        l.release(at(2000));
        l.report(LeaseReport::Free);
        assert!(!l.someone_else_may_hold(), "etcd says nobody holds it");
    }

    #[test]
    fn another_holder_closes_the_gate_at_once_and_is_named() {
        let mut l = Lease::new(TTL);
        l.report(LeaseReport::Held {
            sent: at(1000),
            epoch: 7,
        });
        l.report(LeaseReport::HeldBy {
            holder: "10.0.0.2".into(),
            epoch: 9,
        });
        let why = l.gate(at(1001)).unwrap_err();
        assert!(why.contains("10.0.0.2"), "{why}");
        assert!(!l.held());
        assert_eq!(l.view(at(1001)).state, "held-by-other");
    }

    #[test]
    fn the_shares_keep_two_renewals_and_their_answers_inside_the_write_window() {
        // loop_wait + 2 * retry_timeout <= the time the database may stay open.
        assert!(renew_every(TTL) + 2 * request_timeout(TTL) <= share(TTL, WRITE_SHARE));
    }
}
