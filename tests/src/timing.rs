//! Election timing of a CARP node, shared by the agent's and ucarp's options: the agent takes
//! UCARP's flags, so one struct describes both, and one trait gives both option types the same
//! builder methods.

use std::time::Duration;

/// `-b`, `-k`, `-r`, `-P`. Defaults: advbase 1, advskew 0, deadratio 3, no preemption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub advbase: u8,
    pub advskew: u8,
    pub deadratio: u32,
    pub preempt: bool,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            advbase: 1,
            advskew: 0,
            deadratio: 3,
            preempt: false,
        }
    }
}

impl Timing {
    /// Master-down time of a BACKUP: `advbase * deadratio + advskew / 256` seconds, as UCARP
    /// computes it; in the agent's fast mode (advbase 0) `deadratio` advert intervals of
    /// `advskew / 256` s (the slower of its own and its master's, assumed to be its own).
    pub fn master_down(&self) -> Duration {
        let (skew, dead) = (u64::from(self.advskew), u64::from(self.deadratio));
        if self.advbase == 0 {
            Duration::from_micros(dead * skew * 1_000_000 / 256)
        } else {
            Duration::from_micros(
                u64::from(self.advbase) * dead * 1_000_000 + skew * 1_000_000 / 256,
            )
        }
    }
}

/// Builder methods for every option type that carries a [`Timing`].
pub trait Timed: Sized {
    fn timing(&self) -> &Timing;
    fn timing_mut(&mut self) -> &mut Timing;

    /// See [`Timing::master_down`].
    fn master_down(&self) -> Duration {
        self.timing().master_down()
    }

    fn with_timing(mut self, t: Timing) -> Self {
        *self.timing_mut() = t;
        self
    }

    fn advbase(mut self, v: u8) -> Self {
        self.timing_mut().advbase = v;
        self
    }

    fn advskew(mut self, v: u8) -> Self {
        self.timing_mut().advskew = v;
        self
    }

    fn deadratio(mut self, v: u32) -> Self {
        self.timing_mut().deadratio = v;
        self
    }

    fn preempt(mut self, v: bool) -> Self {
        self.timing_mut().preempt = v;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_down_times() {
        let t = Timing {
            advskew: 100,
            ..Timing::default()
        };
        assert_eq!(t.master_down(), Duration::from_micros(3_390_625));
        let fast = Timing {
            advbase: 0,
            advskew: 2,
            ..Timing::default()
        };
        assert_eq!(fast.master_down(), Duration::from_micros(23_437));
    }
}
