//! Waiting for conditions: bounded in time and in the number of polls, never a bare sleep, and
//! cut short by SIGINT/SIGTERM once [`install_signal_handlers`] ran (so a Ctrl-C unwinds through
//! the normal error path and every rig removes itself).
//!
//! A condition is a closure returning `bool`, `Option<T>`, or an `anyhow::Result` of either
//! (see [`Condition`]): an `Err` ends the wait at once with that error, so a condition can say
//! "this will never happen" (a daemon died) instead of running into the timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Interval between two evaluations of a condition, unless a [`Poller`] says otherwise.
pub const POLL: Duration = Duration::from_millis(10);

/// What a polled closure returns: `true`/`Some` ends the wait with a value, `false`/`None`
/// polls again, an error ends the wait with that error.
pub trait Condition {
    type Value;
    fn check(self) -> Result<Option<Self::Value>>;
}

impl Condition for bool {
    type Value = ();
    fn check(self) -> Result<Option<()>> {
        Ok(self.then_some(()))
    }
}

impl<T> Condition for Option<T> {
    type Value = T;
    fn check(self) -> Result<Option<T>> {
        Ok(self)
    }
}

impl Condition for Result<bool> {
    type Value = ();
    fn check(self) -> Result<Option<()>> {
        Ok(self?.then_some(()))
    }
}

impl<T> Condition for Result<Option<T>> {
    type Value = T;
    fn check(self) -> Result<Option<T>> {
        self
    }
}

/// Waits with a chosen poll interval: the benches poll faster than the tests, whose conditions
/// mostly start processes (`ip`, `status`) and would load a small machine.
#[derive(Clone, Copy, Debug)]
pub struct Poller {
    pub every: Duration,
}

impl Default for Poller {
    fn default() -> Poller {
        Poller::every(POLL)
    }
}

impl Poller {
    pub const fn every(every: Duration) -> Poller {
        Poller { every }
    }

    fn max_polls(self, limit: Duration) -> u128 {
        limit.as_millis() / self.every.as_millis().max(1) + 2
    }

    /// Polls `f` until it yields a value; the value and how long that took.
    pub fn wait_timed<C: Condition>(
        self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut() -> C,
    ) -> Result<(C::Value, Duration)> {
        let start = Instant::now();
        for _ in 0..self.max_polls(timeout) {
            check_interrupt()?;
            if let Some(v) = f().check()? {
                return Ok((v, start.elapsed()));
            }
            if start.elapsed() > timeout {
                break;
            }
            std::thread::sleep(self.every);
        }
        bail!(
            "timed out after {:?} (limit {timeout:?}) waiting for: {what}",
            start.elapsed()
        )
    }

    /// Polls `f` until it yields a value.
    pub fn wait_for<C: Condition>(
        self,
        timeout: Duration,
        what: &str,
        f: impl FnMut() -> C,
    ) -> Result<C::Value> {
        Ok(self.wait_timed(timeout, what, f)?.0)
    }

    /// Polls `f` until it holds; how long that took.
    pub fn wait_until<C: Condition>(
        self,
        timeout: Duration,
        what: &str,
        f: impl FnMut() -> C,
    ) -> Result<Duration> {
        Ok(self.wait_timed(timeout, what, f)?.1)
    }

    /// Checks that `f` holds at every poll for `duration` (a stability check).
    pub fn hold_for<C: Condition>(
        self,
        duration: Duration,
        what: &str,
        mut f: impl FnMut() -> C,
    ) -> Result<()> {
        let start = Instant::now();
        for _ in 0..self.max_polls(duration) {
            check_interrupt()?;
            if f().check()?.is_none() {
                bail!(
                    "condition stopped holding after {:?} (required for {duration:?}): {what}",
                    start.elapsed()
                );
            }
            if start.elapsed() >= duration {
                return Ok(());
            }
            std::thread::sleep(self.every);
        }
        Ok(())
    }
}

/// [`Poller::wait_for`] at the default interval.
pub fn wait_for<C: Condition>(
    timeout: Duration,
    what: &str,
    f: impl FnMut() -> C,
) -> Result<C::Value> {
    Poller::default().wait_for(timeout, what, f)
}

/// [`Poller::wait_until`] at the default interval.
pub fn wait_until<C: Condition>(
    timeout: Duration,
    what: &str,
    f: impl FnMut() -> C,
) -> Result<Duration> {
    Poller::default().wait_until(timeout, what, f)
}

/// [`Poller::wait_timed`] at the default interval.
pub fn wait_timed<C: Condition>(
    timeout: Duration,
    what: &str,
    f: impl FnMut() -> C,
) -> Result<(C::Value, Duration)> {
    Poller::default().wait_timed(timeout, what, f)
}

/// [`Poller::hold_for`] at the default interval.
pub fn hold_for<C: Condition>(duration: Duration, what: &str, f: impl FnMut() -> C) -> Result<()> {
    Poller::default().hold_for(duration, what, f)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every network namespace of the host,
/// so instants taken by processes in different namespaces compare directly.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds between two [`mono_ns`] instants (negative when `to` is earlier).
pub fn ms_between(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e6
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM set a flag that every wait checks, instead of ending the
/// process with its namespaces left behind. Children get the default handlers back on exec.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// True once SIGINT or SIGTERM arrived (after [`install_signal_handlers`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error once SIGINT or SIGTERM arrived.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_of_every_shape() {
        let t = Duration::from_millis(200);
        wait_for(t, "bool", || true).unwrap();
        assert_eq!(wait_for(t, "option", || Some(3)).unwrap(), 3);
        let mut n = 0;
        let (v, _) = wait_timed(t, "counts", || {
            n += 1;
            Ok((n >= 3).then_some(n))
        })
        .unwrap();
        assert_eq!(v, 3);
        let e = wait_for(t, "fails", || -> Result<bool> { bail!("broken") }).unwrap_err();
        assert_eq!(e.to_string(), "broken");
        let e = wait_until(Duration::from_millis(30), "never", || false).unwrap_err();
        assert!(e.to_string().contains("waiting for: never"), "{e}");
        hold_for(Duration::from_millis(30), "always", || true).unwrap();
        let mut left = 2;
        let e = hold_for(t, "twice", || {
            left -= 1;
            left > 0
        })
        .unwrap_err();
        assert!(e.to_string().contains("stopped holding"), "{e}");
    }
}
