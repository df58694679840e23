//! The replay guard: an authenticated advert whose counter was already accepted is refused.
//!
//! UCARP's HMAC covers the vhid, the VIP and the counter, but neither the source address nor
//! advbase and advskew. Anyone who captured one genuine advert could send it again, from any
//! source and with any skew (a bow-out, or a skew better than the master's), and it would
//! authenticate. Refusing counters already seen makes a captured advert worthless for as long as
//! its counter is remembered.
//!
//! Genuine UCARP peers do not repeat counters: a node sends a fresh random counter until it has
//! heard a valid advert, and from then on one more than the last it sent or heard. Only two
//! masters racing (both having heard the same advert) can send one counter twice; refusing the
//! second copy costs one advert, which CARP tolerates like any other loss.
//!
//! Only authenticated counters may enter (the caller checks the HMAC first): UCARP's counters
//! are predictable, so remembering forged ones would let a forger refuse genuine adverts in
//! advance. The counters this node sends enter too, so a copy of our own advert is refused.
//!
//! The XDP program applies the same rule in the kernel; this copy makes the raw-socket path
//! (`--xdp off`) behave the same and is a second check behind the kernel's.

use std::collections::{HashSet, VecDeque};

/// A bounded set of recently accepted counters; the oldest is forgotten first.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashSet<u64>,
    /// Insertion order, for eviction.
    order: VecDeque<u64>,
    capacity: usize,
}

impl ReplayGuard {
    /// A guard remembering up to `capacity` counters (at least one).
    pub fn new(capacity: usize) -> ReplayGuard {
        let capacity = capacity.max(1);
        ReplayGuard {
            seen: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Records the counter of an authenticated advert; false if it was already there, i.e. the
    /// advert is a replay and must not reach the election.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.seen.insert(counter) {
            return false;
        }
        self.order.push_back(counter);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }

    /// Records the counter of an advert this node sends.
    pub fn remember_sent(&mut self, counter: u64) {
        self.accept(counter);
    }

    pub fn contains(&self, counter: u64) -> bool {
        self.seen.contains(&counter)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

impl Default for ReplayGuard {
    /// As large as the kernel's guard, so both refuse a captured advert for as long.
    fn default() -> ReplayGuard {
        ReplayGuard::new(cluster_common::xdp::REPLAY_ENTRIES as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_accepted_once() {
        let mut guard = ReplayGuard::new(8);
        assert!(guard.accept(42));
        assert!(!guard.accept(42));
        assert!(!guard.accept(42));
        assert!(guard.accept(43));
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn our_own_counters_are_refused_when_they_come_back() {
        let mut guard = ReplayGuard::new(8);
        guard.remember_sent(7);
        assert!(!guard.accept(7));
        // Sending a counter we accepted earlier (a race between two masters) is harmless.
        assert!(guard.accept(8));
        guard.remember_sent(8);
        assert!(guard.contains(8));
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn the_oldest_counter_is_forgotten_first() {
        let mut guard = ReplayGuard::new(3);
        for c in [1, 2, 3] {
            assert!(guard.accept(c));
        }
        assert!(guard.accept(4));
        assert_eq!(guard.len(), 3);
        assert!(!guard.contains(1), "the oldest goes");
        assert!(guard.contains(2) && guard.contains(3) && guard.contains(4));
        // A refused replay does not refresh its counter's place: 2 is still the oldest.
        assert!(!guard.accept(2));
        assert!(guard.accept(5));
        assert!(!guard.contains(2));
        assert!(guard.accept(1), "forgotten counters are accepted again");
    }

    #[test]
    fn ucarp_counter_sequences_pass_whole() {
        // A master that has heard one advert counts up from it, wrapping at the top; a backup
        // sees every counter once.
        let mut guard = ReplayGuard::new(16);
        let mut c = u64::MAX - 5;
        for _ in 0..100 {
            assert!(guard.accept(c), "{c}");
            c = c.wrapping_add(1);
        }
        assert_eq!(guard.len(), 16);
    }

    #[test]
    fn capacity_is_at_least_one() {
        let mut guard = ReplayGuard::new(0);
        assert!(guard.is_empty());
        assert!(guard.accept(1));
        assert!(!guard.accept(1));
        assert!(guard.accept(2));
        assert!(guard.accept(1));
    }

    #[test]
    fn default_matches_the_kernel() {
        let guard = ReplayGuard::default();
        assert_eq!(guard.capacity, cluster_common::xdp::REPLAY_ENTRIES as usize);
    }

    #[test]
    fn seeded_stream_never_accepts_a_remembered_counter() {
        // Random counters with repeats: a counter is accepted exactly when it is not among the
        // last `capacity` distinct counters accepted.
        let capacity = 64;
        let mut guard = ReplayGuard::new(capacity);
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let counter = state % 200;
            let fresh = !model.contains(&counter);
            assert_eq!(guard.accept(counter), fresh, "{counter}");
            if fresh {
                model.push_back(counter);
                if model.len() > capacity {
                    model.pop_front();
                }
            }
            assert_eq!(guard.len(), model.len());
        }
    }
}
