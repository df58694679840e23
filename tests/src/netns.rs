//! Moving a thread into a rig's network namespace, for code that must open its sockets there
//! (a relay in the client namespace, the agent's database client in a node).

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};

/// Moves the calling thread (only it) into network namespace `ns`; threads it starts later
/// inherit the namespace.
pub fn enter(ns: &str) -> Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening namespace {ns}"))?;
    // SAFETY: setns(2) on a namespace file we just opened; it moves only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns into {ns}"));
    }
    Ok(())
}
