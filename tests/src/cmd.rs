//! Running short commands, in the host or inside a namespace, with failures that say what ran.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A command run inside network namespace `ns` (`ip netns exec ns program args...`).
pub fn netns_command<S: AsRef<OsStr>>(ns: &str, program: impl AsRef<OsStr>, args: &[S]) -> Command {
    let mut c = Command::new("ip");
    c.arg("netns").arg("exec").arg(ns).arg(program);
    c.args(args);
    c
}

/// Runs a command to completion, returning its output whatever the status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))
}

/// Runs a command; its stdout, or an error with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "command failed ({}): {cmd:?}\nstderr: {}\nstdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip` with the given arguments.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// Runs `ip` and reports whether it succeeded (for best-effort clean-up).
pub fn ip_ok(args: &[&str]) -> bool {
    output(Command::new("ip").args(args)).is_ok_and(|o| o.status.success())
}

/// Runs a command with a time limit, killing it if it overruns: `Ok(None)` on timeout (a
/// hang is an answer some callers expect, e.g. a daemon that accepted its settings).
pub fn output_timeout(cmd: &mut Command, timeout: Duration) -> Result<Option<Output>> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut so = child.stdout.take().context("piped stdout")?;
    let mut se = child.stderr.take().context("piped stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let poll = Duration::from_millis(5);
    let max_polls = timeout.as_millis() / poll.as_millis() + 2;
    let mut status = None;
    for _ in 0..max_polls {
        if let Some(st) = child.try_wait().context("waiting for a command")? {
            status = Some(st);
            break;
        }
        if start.elapsed() > timeout {
            break;
        }
        std::thread::sleep(poll);
    }
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
        status = child.wait().ok();
    }
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    match status {
        Some(status) if !timed_out => Ok(Some(Output {
            status,
            stdout,
            stderr,
        })),
        _ => Ok(None),
    }
}

/// As [`output_timeout`], with the timeout an error too.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let line = format!("{cmd:?}");
    output_timeout(cmd, timeout)?.with_context(|| format!("{line} did not end within {timeout:?}"))
}
