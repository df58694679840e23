//! CLOCK_MONOTONIC time in nanoseconds, the clock `bpf_ktime_get_ns` uses too, so kernel receive
//! stamps and agent deadlines compare directly.

use std::ops::{Add, Sub};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mono(pub u64);

impl Mono {
    pub fn from_nanos(n: u64) -> Self {
        Mono(n)
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Reads CLOCK_MONOTONIC.
    pub fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Mono(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    pub fn saturating_since(self, earlier: Mono) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Mono {
    type Output = Mono;
    fn add(self, d: Duration) -> Mono {
        Mono(self.0.saturating_add(d.as_nanos() as u64))
    }
}

impl Sub<Mono> for Mono {
    type Output = Duration;
    fn sub(self, rhs: Mono) -> Duration {
        self.saturating_since(rhs)
    }
}
