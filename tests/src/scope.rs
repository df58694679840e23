//! What a failed test leaves to look at: the output of every process it started and its rig
//! directories (scripts, logs, captures, data).
//!
//! A test that fails by panicking is easy: everything it owns is dropped while unwinding, and
//! each owner prints and keeps its files then. A test that fails by returning an error drops
//! its rigs and processes before anyone knows it failed. [`netns_test`] closes that gap: while
//! it runs, dropped processes and rigs hand their logs and directories to it, and it prints
//! and keeps them if the test returns an error, or removes them if it passes. Outside
//! [`netns_test`] (the demo, the benches) owners clean up at once unless the thread panics.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::Result;

/// How much of a log to print for a failed test.
const LOG_TAIL: u64 = 32 * 1024;
/// Keeps every rig directory and data directory, whatever the outcome.
pub const KEEP_ENV: &str = "CLUSTER_KEEP_RIG";
/// Prints every process's output, not only a failed test's.
pub const LOGS_ENV: &str = "CLUSTER_TEST_LOGS";

#[derive(Default)]
struct Pending {
    /// (heading, log file) of every process dropped so far.
    logs: Vec<(String, PathBuf)>,
    /// (state of the rig when it was dropped, its directory).
    rigs: Vec<(String, PathBuf)>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Runs one namespace test: skipped (`Ok`) when `CLUSTER_SKIP_NETNS=1`; if it fails, by error
/// or by panic, the output of every process it started is printed and its rig directories are
/// kept, and the test fails with the error.
pub fn netns_test(f: impl FnOnce() -> Result<()>) -> Result<()> {
    if !crate::env::netns_available()? {
        return Ok(());
    }
    let (r, pending) = watched(f);
    match &r {
        Ok(()) => remove_rigs(&pending),
        Err(e) => {
            report(&pending);
            eprintln!("test failed: {e:#}");
        }
    }
    r
}

/// Runs `f` (a long run such as the chaos suite); if it returns an error, the rig directories
/// of everything it dropped (every process's log, scripts, captures, data) are moved under
/// `keep` (the next rig would remove them from the temporary directory once their owner has
/// exited) and their place printed, without printing the logs themselves.
pub fn keep_on_error<T>(keep: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let (r, pending) = watched(f);
    if r.is_ok() {
        remove_rigs(&pending);
    } else {
        for (state, dir) in &pending.rigs {
            let kept = dir
                .file_name()
                .map(|n| keep.join(n))
                .filter(|to| {
                    std::fs::create_dir_all(keep).is_ok()
                        && crate::cmd::output(std::process::Command::new("mv").arg(dir).arg(to))
                            .is_ok_and(|o| o.status.success())
                })
                .unwrap_or_else(|| dir.clone());
            eprintln!("{state}----- files kept in {} -----", kept.display());
        }
    }
    r
}

/// Runs `f` with what it drops collected, and returns that with its result.
fn watched<T>(f: impl FnOnce() -> Result<T>) -> (Result<T>, Pending) {
    let outer = PENDING.with(|p| p.borrow_mut().replace(Pending::default()));
    let mut guard = Guard {
        outer: Some(outer),
        done: false,
    };
    let r = f();
    (r, guard.finish())
}

/// Removes the rig directories of a run that passed, unless asked to keep them.
fn remove_rigs(pending: &Pending) {
    if std::env::var_os(KEEP_ENV).is_none() {
        for (_, dir) in &pending.rigs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Restores the enclosing state however the test ends; on a panic, reports what the test
/// dropped before it panicked (what it still owned reports itself while unwinding).
struct Guard {
    outer: Option<Option<Pending>>,
    done: bool,
}

impl Guard {
    fn finish(&mut self) -> Pending {
        self.done = true;
        let outer = self.outer.take().unwrap_or_default();
        PENDING.with(|p| std::mem::replace(&mut *p.borrow_mut(), outer).unwrap_or_default())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            let pending = self.finish();
            report(&pending);
        }
    }
}

fn report(p: &Pending) {
    for (heading, log) in &p.logs {
        print_log_tail(heading, log);
    }
    for (state, dir) in &p.rigs {
        eprintln!("{state}----- files kept in {} -----", dir.display());
    }
}

/// True while files must stay where they are for now: the thread panics, the user asked to
/// keep them, or a [`netns_test`] decides later.
pub(crate) fn keep_files() -> bool {
    std::thread::panicking()
        || std::env::var_os(KEEP_ENV).is_some()
        || PENDING.with(|p| p.borrow().is_some())
}

/// A process is gone: its output is printed now (panic, `CLUSTER_TEST_LOGS`) or handed to the
/// running [`netns_test`].
pub(crate) fn process_dropped(heading: String, log: &Path) {
    if std::thread::panicking() || std::env::var_os(LOGS_ENV).is_some() {
        print_log_tail(&heading, log);
        return;
    }
    PENDING.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            p.logs.push((heading, log.to_path_buf()));
        }
    });
}

/// A rig is gone (its namespaces removed): whether its directory may be removed now. `state`
/// is asked for only when someone may want to see it.
pub(crate) fn rig_dropped(dir: &Path, state: impl FnOnce() -> String) -> bool {
    if std::thread::panicking() {
        eprintln!("{}----- files kept in {} -----", state(), dir.display());
        return false;
    }
    let deferred = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let Some(p) = p.as_mut() else { return false };
        p.rigs.push((state(), dir.to_path_buf()));
        true
    });
    !deferred && std::env::var_os(KEEP_ENV).is_none()
}

/// The last [`LOG_TAIL`] bytes of `log`, between two marker lines.
fn print_log_tail(heading: &str, log: &Path) {
    let text = crate::proc::file_tail(log, LOG_TAIL);
    eprintln!(
        "----- {heading} output -----\n{}\n----- end of {heading} -----",
        text.trim_end()
    );
}
