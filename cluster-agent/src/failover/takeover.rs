//! Where a takeover's time went: the instant this node became MASTER and each step confirmed
//! after it (the database's preparation and each statement that opened it, the VIP, the
//! gratuitous ARP). `status --json` shows the last one, and the demo and benches break a
//! failover down with it, so the next bottleneck is visible without reading logs.

use serde::{Deserialize, Serialize};

use crate::carp::machine::Reason;
use crate::carp::time::Mono;

/// One confirmed step, at a CLOCK_MONOTONIC instant (comparable with other processes' clocks
/// on the same host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub at_ns: u64,
}

/// The last transition to MASTER and what followed it, until the node served: database open
/// (when there is one), VIP added, gratuitous ARP sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    /// Why the election made this node MASTER.
    pub reason: String,
    pub at_ns: u64,
    pub steps: Vec<Step>,
    /// Every step a takeover needs has happened.
    pub complete: bool,
}

/// Steps kept at most: a takeover that keeps retrying a refused promotion must not grow
/// without bound.
const MAX_STEPS: usize = 64;

impl Takeover {
    pub fn new(reason: Reason, now: Mono) -> Takeover {
        Takeover {
            reason: format!("{reason:?}"),
            at_ns: now.as_nanos(),
            steps: Vec::new(),
            complete: false,
        }
    }

    /// Records a step unless the takeover is complete.
    pub fn step(&mut self, name: impl Into<String>, at: Mono) {
        if self.complete || self.steps.len() >= MAX_STEPS {
            return;
        }
        self.steps.push(Step {
            name: name.into(),
            at_ns: at.as_nanos(),
        });
    }

    /// The node serves: nothing after this is part of the takeover.
    pub fn finish(&mut self) {
        self.complete = true;
    }

    /// When the step named `name` first happened, in nanoseconds after the transition.
    pub fn after(&self, name: &str) -> Option<u64> {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.at_ns.saturating_sub(self.at_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_stop_at_completion_and_are_bounded() {
        let mut t = Takeover::new(Reason::MasterDown, Mono(1_000));
        t.step("prepare", Mono(1_500));
        t.step("vip", Mono(2_000));
        t.finish();
        t.step("garp", Mono(3_000));
        assert_eq!(t.after("vip"), Some(1_000));
        assert_eq!(t.after("garp"), None);
        assert_eq!(t.steps.len(), 2);

        let mut t = Takeover::new(Reason::Preempt, Mono(0));
        for i in 0..1000 {
            t.step("prepare", Mono(i));
        }
        assert_eq!(t.steps.len(), MAX_STEPS);
    }
}
