//! Waiting for conditions: bounded in time and in the number of polls, never a bare sleep.

use std::time::{Duration, Instant};

/// Interval between two evaluations of a condition.
pub const POLL: Duration = Duration::from_millis(10);

fn max_polls(timeout: Duration) -> u128 {
    timeout.as_millis() / POLL.as_millis() + 2
}

/// Polls `cond` until it returns true; returns the time it took. Panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    wait_for(timeout, what, || cond().then_some(())).1
}

/// Polls `f` until it returns `Some`; returns the value and the time it took.
/// Panics after `timeout`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    for _ in 0..max_polls(timeout) {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        if start.elapsed() > timeout {
            break;
        }
        std::thread::sleep(POLL);
    }
    panic!(
        "timed out after {:?} (limit {timeout:?}) waiting for: {what}",
        start.elapsed()
    );
}

/// Asserts that `cond` holds at every poll for `duration` (a stability check).
pub fn hold_for(duration: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..max_polls(duration) {
        assert!(
            cond(),
            "condition stopped holding after {:?} (required for {duration:?}): {what}",
            start.elapsed()
        );
        if start.elapsed() >= duration {
            return;
        }
        std::thread::sleep(POLL);
    }
}
