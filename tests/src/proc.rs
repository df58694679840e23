//! A child process owned by a test: output captured to a file, killed and reaped on drop, its
//! output printed when the test fails.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::wait::POLL;

/// How much of a log to print when a test fails.
const LOG_TAIL: u64 = 32 * 1024;

pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout+stderr written to `log`.
    pub fn spawn(name: impl Into<String>, mut cmd: Command, log: &Path) -> Proc {
        let name = name.into();
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}"));
        Proc {
            name,
            child,
            log: log.to_path_buf(),
            status: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `sig` unless the process has already been reaped (its pid may be reused then).
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.try_status().is_none() {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Asks the process to stop (SIGTERM).
    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit; panics (with its log) if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        let max_polls = timeout.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(st) = self.try_status() {
                return st;
            }
            if start.elapsed() > timeout {
                break;
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "{} (pid {}) did not exit within {timeout:?}",
            self.name,
            self.pid()
        );
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    fn print_log_tail(&self) {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > LOG_TAIL {
                let _ = f.seek(SeekFrom::Start(len - LOG_TAIL));
                text.push_str("[...]\n");
            }
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            text.push_str(&String::from_utf8_lossy(&buf));
        }
        eprintln!(
            "----- {} (pid {}, {:?}) output -----\n{}\n----- end of {} -----",
            self.name,
            self.child.id(),
            self.status,
            text.trim_end(),
            self.name
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || std::env::var_os("CLUSTER_TEST_LOGS").is_some() {
            self.print_log_tail();
        }
    }
}
