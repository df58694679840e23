//! Service checks (`[[track]]`): whether this node can serve what the VIP leads to.
//!
//! The VIP is only worth something if the service behind it answers. A check's probes run
//! elsewhere (the runtime); here each result moves a hysteresis, so one lost probe does not
//! move the VIP and one lucky probe does not bring it back: `fall` failures in a row make the
//! check failing, `rise` passes in a row make it pass again. A failing check makes the node a
//! poor candidate (it advertises the demoted skew, never preempts) and, with `bow-out`, makes a
//! MASTER hand over at once.
//!
//! A check starts failing until it first passed `rise` times: a node whose service never came
//! up must not win an election on the strength of an unknown. Only a change from passing to
//! failing bows out, so a node that becomes MASTER while failing (nobody better was left) keeps
//! the VIP rather than bouncing it between nodes that all fail.

use serde::{Deserialize, Serialize};

/// What a failing check does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackAction {
    /// Advertise the demoted skew (240) and never preempt: a healthy peer with preemption
    /// takes over; without one this node stays MASTER.
    #[default]
    Demote,
    /// Demote, and a MASTER hands over at once (as `cluster-agent switchover`).
    BowOut,
}

/// One check's hysteresis.
#[derive(Clone, Debug)]
pub struct Track {
    pub name: String,
    pub action: TrackAction,
    fall: u32,
    rise: u32,
    passing: bool,
    /// Consecutive results against the current state.
    streak: u32,
    probes: u64,
    failures: u64,
    last_error: Option<String>,
}

/// A check in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackView {
    pub name: String,
    pub passing: bool,
    pub action: TrackAction,
    pub probes: u64,
    /// Probes that failed, over the agent's life.
    pub failures: u64,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

impl Track {
    pub fn new(name: impl Into<String>, action: TrackAction, fall: u32, rise: u32) -> Track {
        Track {
            name: name.into(),
            action,
            fall: fall.max(1),
            rise: rise.max(1),
            passing: false,
            streak: 0,
            probes: 0,
            failures: 0,
            last_error: Some("no probe yet".into()),
        }
    }

    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Takes one probe's result; `Some(passing)` when the check changes state.
    pub fn observe(&mut self, result: Result<(), String>) -> Option<bool> {
        self.probes += 1;
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                self.failures += 1;
                self.last_error = Some(e);
                false
            }
        };
        if ok == self.passing {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.rise } else { self.fall };
        if self.streak < needed {
            return None;
        }
        self.passing = ok;
        self.streak = 0;
        Some(ok)
    }

    pub fn view(&self) -> TrackView {
        TrackView {
            name: self.name.clone(),
            passing: self.passing,
            action: self.action,
            probes: self.probes,
            failures: self.failures,
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<(), String> {
        Err("down".into())
    }

    #[test]
    fn passes_after_rise_fails_after_fall_and_single_results_change_nothing() {
        let mut t = Track::new("web", TrackAction::Demote, 3, 2);
        assert!(!t.passing(), "unknown counts as failing");
        assert_eq!(t.observe(Ok(())), None);
        assert_eq!(t.observe(Ok(())), Some(true));
        // Flapping below the fall count never fails the check.
        for _ in 0..10 {
            assert_eq!(t.observe(fail()), None);
            assert_eq!(t.observe(fail()), None);
            assert_eq!(t.observe(Ok(())), None);
        }
        assert!(t.passing());
        assert_eq!(t.observe(fail()), None);
        assert_eq!(t.observe(fail()), None);
        assert_eq!(t.observe(fail()), Some(false));
        // One pass in a failing streak does not bring it back.
        assert_eq!(t.observe(Ok(())), None);
        assert_eq!(t.observe(fail()), None);
        assert_eq!(t.observe(Ok(())), None);
        assert_eq!(t.observe(Ok(())), Some(true));
        let v = t.view();
        assert_eq!(v.failures, 24);
        assert_eq!(v.probes, 39);
        assert_eq!(v.last_error.as_deref(), Some("down"));
    }
}
