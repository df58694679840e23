//! A child process owned by the harness: output captured to a file, killed and reaped on drop,
//! its output shown when a test fails; and the signals a fault injection sends to processes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::wait::wait_for;

/// How much of a log an error message quotes.
const ERROR_TAIL: u64 = 4096;

pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout+stderr written to `log`.
    pub fn spawn(name: impl Into<String>, mut cmd: Command, log: &Path) -> Result<Proc> {
        let name = name.into();
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("cloning a log file handle")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot spawn {name} ({cmd:?})"))?;
        Ok(Proc {
            name,
            child,
            log: log.to_path_buf(),
            status: None,
        })
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

    /// The last `max` bytes the process has written.
    pub fn log_tail(&self, max: u64) -> String {
        file_tail(&self.log, max)
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.status)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Whether the process still runs, without reaping it (so it works through `&self`): an
    /// exited child stays a zombie until reaped, state `Z` in `/proc/PID/stat`.
    pub fn alive(&self) -> bool {
        self.status.is_none()
            && !matches!(
                process_state(self.child.id() as libc::pid_t),
                None | Some('Z' | 'X')
            )
    }

    /// An error naming the process and quoting its output if it is no longer running.
    pub fn check_alive(&self) -> Result<()> {
        if !self.alive() {
            bail!(
                "{} (pid {}) exited:\n{}",
                self.name,
                self.pid(),
                self.log_tail(ERROR_TAIL)
            );
        }
        Ok(())
    }

    /// Sends `sig`; an error if the process has already been reaped (its pid may be reused).
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        if self.try_status()?.is_some() {
            bail!("{} has already exited; no signal {sig} sent", self.name);
        }
        signal_pid(self.child.id() as libc::pid_t, sig)
    }

    /// SIGSTOP: the process stops where it is, its sockets and locks held, as a hung process.
    pub fn freeze(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`Proc::freeze`].
    pub fn thaw(&mut self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// Asks the process to stop (SIGTERM), without waiting.
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// A graceful stop: SIGTERM, then waits up to `timeout` for the exit; a process that
    /// overruns it is killed and the stop is an error. One that has already exited is stopped.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.try_status()? {
            return Ok(st);
        }
        self.terminate()?;
        match self.wait_exit(timeout) {
            Ok(st) => Ok(st),
            Err(e) => {
                self.kill();
                Err(e)
            }
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let what = format!("{} (pid {}) to exit", self.name, self.pid());
        wait_for(timeout, &what, || self.try_status())
    }

    /// Kills the process (SIGKILL, also when frozen) and reaps it: a crash, nothing flushed
    /// beyond what it already wrote.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        crate::scope::process_dropped(
            format!("{} (pid {}, {:?})", self.name, self.child.id(), self.status),
            &self.log,
        );
    }
}

/// The last `max` bytes of the file at `path` (empty if there is none), marked when cut.
pub fn file_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut text = String::new();
    if len > max {
        let _ = f.seek(SeekFrom::Start(len - max));
        text.push_str("[...]\n");
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    text.push_str(&String::from_utf8_lossy(&buf));
    text
}

/// Sends `sig` to a process that is not necessarily our child (one found in a node's
/// namespace); [`Proc::signal`] is the safer way for our own children.
pub fn signal_pid(pid: libc::pid_t, sig: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; callers pass pids of processes they
    // started or found in a namespace they created.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sending signal {sig} to pid {pid}"));
    }
    Ok(())
}

/// The state letter of `pid` in `/proc/PID/stat` (`R`, `S`, `T`, `Z`, ...), `None` if gone.
pub fn process_state(pid: libc::pid_t) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The command name of `pid` (`/proc/PID/comm`, at most 15 bytes), `None` if gone.
pub fn comm(pid: libc::pid_t) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}
