//! A timer to the microsecond on CLOCK_MONOTONIC (a `timerfd` in the runtime's poll).
//!
//! Tokio's timer counts whole milliseconds and fires at the first tick after the deadline:
//! up to a millisecond late, about half of one on average. In fast mode a backup takes over
//! 11.7 ms after a master's last advert and its adverts are 3.9 ms apart, so that rounding
//! alone was a tenth of the detection time; the early host check and its bound paid it
//! again. Deadlines are [`Mono`] instants, the clock the core and the kernel's receive
//! stamps use, so the timer is armed with the deadline itself.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::carp::time::Mono;

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One timer, armed again for each wait; created inside the runtime that polls it.
pub struct Timer {
    fd: Option<AsyncFd<Fd>>,
}

impl Timer {
    /// A timer that cannot be made (no file descriptor left) falls back to tokio's: late by
    /// up to a millisecond, never wrong.
    pub fn new() -> Self {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)
        // SAFETY: the timer's descriptor is owned by the `Fd` the registration holds, and is
        // neither replaced nor closed while registered.
        .and_then(|t| {
            unsafe { AsyncFd::register_with_interest(Fd(t), Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
        });
        match fd {
            Ok(fd) => Timer { fd: Some(fd) },
            Err(error) => {
                tracing::warn!(%error, "no timerfd: timers fire up to a millisecond late");
                Timer { fd: None }
            }
        }
    }

    /// Resolves at `at`, at once if it has passed.
    pub async fn until(&mut self, at: Mono) {
        if let Some(fd) = &self.fd {
            // Zero would disarm the timer; an instant that early has passed anyway.
            let at = TimeSpec::from_duration(Duration::from_nanos(at.as_nanos().max(1)));
            // Arming anew also forgets an expiry of an earlier deadline not read yet.
            let armed = fd.get_ref().0.set(
                Expiration::OneShot(at),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            );
            if armed.is_ok() && wait(fd).await.is_ok() {
                return;
            }
        }
        let left = at.saturating_since(Mono::now());
        tokio::time::sleep(left).await;
    }
}

impl Default for Timer {
    fn default() -> Self {
        Self::new()
    }
}

async fn wait(fd: &AsyncFd<Fd>) -> std::io::Result<()> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|fd| match fd.get_ref().0.wait() {
            Err(Errno::EAGAIN) => Err(std::io::ErrorKind::WouldBlock.into()),
            r => r.map_err(std::io::Error::from),
        }) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// Sleeps for `d` to the microsecond.
pub async fn sleep(d: Duration) {
    Timer::new().until(Mono::now() + d).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_never_ends_before_its_deadline_nor_on_an_earlier_expiry() {
        let mut t = Timer::new();
        assert!(t.fd.is_some(), "timerfd is available");
        for i in 0..20u64 {
            let at = Mono::now() + Duration::from_micros(300 + 37 * i);
            t.until(at).await;
            let now = Mono::now();
            assert!(
                now >= at,
                "woke {} ns early",
                at.as_nanos() - now.as_nanos()
            );
        }
        // A deadline that passed while nobody waited: its expiry is pending when the timer
        // is armed for a later one, which must not end at once.
        let first = Mono::now() + Duration::from_micros(100);
        if let Some(fd) = &t.fd {
            let at = TimeSpec::from_duration(Duration::from_nanos(first.as_nanos()));
            let armed = fd.get_ref().0.set(
                Expiration::OneShot(at),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            );
            assert!(armed.is_ok());
        }
        std::thread::sleep(Duration::from_millis(2));
        let later = Mono::now() + Duration::from_millis(20);
        t.until(later).await;
        assert!(Mono::now() >= later);
        // Passed deadlines, even the clock's zero, end at once.
        t.until(Mono::from_nanos(Mono::now().as_nanos() / 2)).await;
        t.until(Mono::from_nanos(0)).await;
    }
}
