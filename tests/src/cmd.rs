//! Running short commands, in the host or inside a namespace, with their failures made loud.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

/// A command run inside network namespace `ns` (`ip netns exec ns program args...`).
pub fn netns_command<S: AsRef<OsStr>>(ns: &str, program: impl AsRef<OsStr>, args: &[S]) -> Command {
    let mut c = Command::new("ip");
    c.arg("netns").arg("exec").arg(ns).arg(program);
    c.args(args);
    c
}

/// Runs a command to completion, returning its output whatever the status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its stderr if it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "command failed ({}): {cmd:?}\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip` with the given arguments, panicking on failure.
pub fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// Runs `ip` and reports whether it succeeded (for best-effort clean-up).
pub fn ip_ok(args: &[&str]) -> bool {
    output(Command::new("ip").args(args)).status.success()
}

/// Runs a command with a time limit, killing it if it overruns. Returns `None` on timeout.
pub fn output_timeout(cmd: &mut Command, timeout: std::time::Duration) -> Option<Output> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
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
    let start = std::time::Instant::now();
    let poll = std::time::Duration::from_millis(5);
    let max_polls = timeout.as_millis() / poll.as_millis() + 2;
    let mut status = None;
    for _ in 0..max_polls {
        if let Some(st) = child.try_wait().expect("try_wait") {
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
    if timed_out {
        return None;
    }
    Some(Output {
        status: status.expect("exit status"),
        stdout,
        stderr,
    })
}
