//! How long the whole machine stops now and then: a thread at real-time priority sleeps
//! 1 ms at a time and records every wake-up that comes much later. Nothing on the guest
//! outranks it, so a late wake-up means no CPU ran it: the hypervisor took the virtual CPUs
//! (or the kernel held them). Election timers of a few milliseconds cannot outlast such a
//! stop, so the fast-mode soak reports them beside its flaps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::tests::wait::mono_ns;
use serde::Serialize;

/// A wake-up this much later than asked counts as a stall.
const LATE: Duration = Duration::from_millis(5);
const TICK: Duration = Duration::from_millis(1);
/// Period of the CPU bandwidth control of the usual hypervisors and container hosts: stalls
/// that end on its grid are a quota running out.
const PERIOD_NS: u64 = 100_000_000;

/// One stall: when it ended (`mono_ns`) and how long the thread waited.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stall {
    pub end_ns: u64,
    pub ms: f64,
}

pub struct StallProbe {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(bool, Vec<Stall>)>>,
}

impl StallProbe {
    /// Starts the probe; it runs until [`StallProbe::stop`], at most `limit`.
    pub fn start(limit: Duration) -> StallProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 10 };
            // SAFETY: sched_setscheduler(2) on the calling thread with a valid parameter.
            let realtime = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
            let mut stalls = Vec::new();
            let mut last = mono_ns();
            let rounds = limit.as_millis() as u64 / TICK.as_millis() as u64 + 1;
            for _ in 0..rounds {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(TICK);
                let now = mono_ns();
                if now - last > LATE.as_nanos() as u64 {
                    stalls.push(Stall {
                        end_ns: now,
                        ms: (now - last) as f64 / 1e6,
                    });
                }
                last = now;
            }
            (realtime, stalls)
        });
        StallProbe {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        let (realtime, stalls) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        Stalls { realtime, stalls }
    }
}

impl Drop for StallProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stalls {
    /// The probe ran at real-time priority (else guest load counts too).
    pub realtime: bool,
    pub stalls: Vec<Stall>,
}

impl Stalls {
    /// One sentence on the stalls, for the log and the report.
    pub fn summary(&self) -> String {
        format!(
            "the machine stood still {} times for 10 ms or more (longest {:.1} ms; {:.0}% of \
             the {} stalls of 5 ms or more ended on one phase of a 100 ms period, the mark of \
             a CPU quota of the host running out){}",
            self.at_least(10.0),
            self.longest_ms(),
            self.on_grid_percent(),
            self.stalls.len(),
            if self.realtime {
                ""
            } else {
                " (the probe did not get real-time priority: guest load counts too)"
            }
        )
    }

    /// Stalls of at least `ms`.
    pub fn at_least(&self, ms: f64) -> usize {
        self.stalls.iter().filter(|s| s.ms >= ms).count()
    }

    pub fn longest_ms(&self) -> f64 {
        self.stalls.iter().map(|s| s.ms).fold(0.0, f64::max)
    }

    /// The share of stalls that end within 3 ms of one phase of [`PERIOD_NS`] (the most
    /// common one), in percent.
    pub fn on_grid_percent(&self) -> f64 {
        if self.stalls.is_empty() {
            return 0.0;
        }
        let phase = |s: &Stall| s.end_ns % PERIOD_NS;
        let near = |a: u64, b: u64| {
            let d = a.abs_diff(b);
            d.min(PERIOD_NS - d) <= 3_000_000
        };
        let best = self
            .stalls
            .iter()
            .map(|c| {
                self.stalls
                    .iter()
                    .filter(|s| near(phase(s), phase(c)))
                    .count()
            })
            .max()
            .unwrap_or(0);
        100.0 * best as f64 / self.stalls.len() as f64
    }

    /// How many of `events` (`mono_ns`) came within `after` of the end of a stall.
    pub fn explain(&self, events: &[u64], after: Duration) -> usize {
        let after = after.as_nanos() as u64;
        events
            .iter()
            .filter(|&&e| {
                self.stalls
                    .iter()
                    .any(|s| e + 1_000_000 >= s.end_ns && e <= s.end_ns + after)
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stalls(list: &[(u64, f64)]) -> Stalls {
        Stalls {
            realtime: true,
            stalls: list
                .iter()
                .map(|&(end_ns, ms)| Stall { end_ns, ms })
                .collect(),
        }
    }

    #[test]
    fn stalls_on_one_phase_of_the_period_are_found() {
        let ms = 1_000_000;
        let s = stalls(&[
            (72 * ms, 6.0),
            (372 * ms, 15.0),
            (1_071 * ms, 8.0),
            (1_540 * ms, 12.0),
        ]);
        assert_eq!(s.on_grid_percent(), 75.0);
        assert_eq!(s.at_least(10.0), 2);
        assert_eq!(s.longest_ms(), 15.0);
        // A flap 10 ms after the end of a stall is explained by it; one 200 ms later is not.
        assert_eq!(
            s.explain(&[382 * ms, 572 * ms], Duration::from_millis(40)),
            1
        );
        assert_eq!(stalls(&[]).on_grid_percent(), 0.0);
    }
}
