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

/// Gives the calling thread (and what it starts) a mount namespace of its own in which `/sys`
/// describes its network namespace, as `ip netns exec` does for one command; for commands that
/// must share mounts (pins in a BPF file system mounted there), and leave the machine's alone.
/// Call it after [`enter`].
pub fn private_mounts() -> Result<()> {
    // SAFETY: unshare(2) affects only the calling thread (CLONE_FS makes that possible for a
    // mount namespace in a multi-threaded process).
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
    }
    let root = std::ffi::CString::new("/").expect("no NUL");
    let sys = std::ffi::CString::new("/sys").expect("no NUL");
    let sysfs = std::ffi::CString::new("sysfs").expect("no NUL");
    // SAFETY: mount(2) and umount2(2) with NUL-terminated strings we own.
    unsafe {
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("making mounts private");
        }
        libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
        if libc::mount(
            sysfs.as_ptr(),
            sys.as_ptr(),
            sysfs.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("mounting sysfs");
        }
    }
    Ok(())
}
