//! Up/down scripts, run in order on their own task so a slow or hung script never delays an
//! advert. Arguments follow UCARP: `script <interface> <vip> [xparam]`.
//!
//! A script runs in its own process group, so a timeout kills what it started too (a
//! `sleep` or a stuck client left behind would otherwise outlive it), and without the
//! database passwords the agent may have been given in its environment.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Up,
    Down,
}

pub struct Hooks {
    /// Each hook is queued with the settings current when it was asked for: a reload
    /// changes the scripts of later runs only.
    cfg: Arc<HookConfig>,
    tx: Option<mpsc::UnboundedSender<(Hook, Arc<HookConfig>)>>,
    task: JoinHandle<()>,
    counts: Arc<Mutex<HookCounts>>,
}

/// What became of the runs of one script.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCount {
    pub runs: u64,
    /// Ended with a non-zero status, or could not be started.
    pub failed: u64,
    /// Killed at the timeout.
    pub timed_out: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCounts {
    pub up: HookCount,
    pub down: HookCount,
}

/// How a run ended.
enum Outcome {
    Ok,
    Failed,
    TimedOut,
}

#[derive(Clone)]
pub struct HookConfig {
    pub up: Option<PathBuf>,
    pub down: Option<PathBuf>,
    pub interface: String,
    /// The first address: UCARP's second argument.
    pub vip: String,
    /// Every address of the vhid, `ADDR/PREFIX` separated by spaces, in
    /// [`VIPS_ENV`]: the arguments stay UCARP's, so a script written for UCARP runs unchanged.
    pub vips: String,
    pub xparam: Option<String>,
    pub timeout: Duration,
}

/// The variable that gives a script every address of the vhid.
pub const VIPS_ENV: &str = "CLUSTER_AGENT_VIPS";

impl Hooks {
    pub fn spawn(cfg: HookConfig) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Hook, Arc<HookConfig>)>();
        let counts = Arc::new(Mutex::new(HookCounts::default()));
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Some((hook, cfg)) = rx.recv().await {
                let Some(outcome) = run_one(&cfg, hook).await else {
                    continue;
                };
                let mut all = shared.lock().unwrap_or_else(|e| e.into_inner());
                let c = match hook {
                    Hook::Up => &mut all.up,
                    Hook::Down => &mut all.down,
                };
                c.runs += 1;
                match outcome {
                    Outcome::Ok => {}
                    Outcome::Failed => c.failed += 1,
                    Outcome::TimedOut => c.timed_out += 1,
                }
            }
        });
        Hooks {
            cfg: Arc::new(cfg),
            tx: Some(tx),
            task,
            counts,
        }
    }

    /// New scripts, parameter or timeout for the hooks queued from now on.
    pub fn reconfigure(&mut self, cfg: HookConfig) {
        self.cfg = Arc::new(cfg);
    }

    /// Runs so far, and how they ended.
    pub fn counts(&self) -> HookCounts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a hook; returns at once.
    pub fn run(&self, hook: Hook) {
        if let Some(tx) = &self.tx {
            // The receiver lives until `finish`, so this cannot fail before then.
            let _ = tx.send((hook, self.cfg.clone()));
        }
    }

    /// Lets queued hooks finish (each is bounded by its timeout), so a down script queued at
    /// shutdown really runs before the agent exits.
    pub async fn finish(mut self) {
        self.tx.take();
        let _ = self.task.await;
    }
}

/// SIGKILL to the process group a script leads (started with `process_group(0)`, so the
/// group's id is its pid): the script and everything it started.
pub(crate) fn kill_group(pid: u32) {
    // SAFETY: a plain system call on a number; no memory is involved.
    unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
}

/// Variables that may carry a password into the agent; a script never sees them.
pub(crate) const SECRET_ENV: [&str; 3] = [
    crate::config::ADMIN_PASSWORD_ENV,
    crate::config::REPL_PASSWORD_ENV,
    "MYSQL_PWD",
];

/// Runs the script for `hook`, if one is set.
async fn run_one(cfg: &HookConfig, hook: Hook) -> Option<Outcome> {
    let script = match hook {
        Hook::Up => &cfg.up,
        Hook::Down => &cfg.down,
    };
    let script = script.as_ref()?;
    let mut cmd = Command::new(script);
    cmd.arg(&cfg.interface).arg(&cfg.vip);
    if let Some(x) = &cfg.xparam {
        cmd.arg(x);
    }
    cmd.env(VIPS_ENV, &cfg.vips);
    for var in SECRET_ENV {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .process_group(0);
    let started = std::time::Instant::now();
    let mut timed_out = false;
    let result = match cmd.spawn() {
        Ok(mut child) => match tokio::time::timeout(cfg.timeout, child.wait()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                timed_out = true;
                if let Some(pid) = child.id() {
                    kill_group(pid);
                }
                let _ = child.kill().await;
                Err(format!(
                    "killed with its process group after {:?}",
                    cfg.timeout
                ))
            }
        },
        Err(e) => Err(e.to_string()),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    Some(match result {
        Ok(status) if status.success() => {
            tracing::info!(?hook, script = %script.display(), elapsed_ms, "hook finished");
            Outcome::Ok
        }
        Ok(status) => {
            tracing::warn!(?hook, script = %script.display(), %status, elapsed_ms, "hook failed");
            Outcome::Failed
        }
        Err(error) => {
            tracing::warn!(?hook, script = %script.display(), %error, elapsed_ms, "hook did not complete");
            if timed_out {
                Outcome::TimedOut
            } else {
                Outcome::Failed
            }
        }
    })
}
