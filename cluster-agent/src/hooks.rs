//! Up/down scripts, run in order on their own task so a slow or hung script never delays an
//! advert. Arguments follow UCARP: `script <interface> <vip> [xparam]`.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Up,
    Down,
}

pub struct Hooks {
    tx: Option<mpsc::UnboundedSender<Hook>>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
pub struct HookConfig {
    pub up: Option<PathBuf>,
    pub down: Option<PathBuf>,
    pub interface: String,
    pub vip: String,
    pub xparam: Option<String>,
    pub timeout: Duration,
}

impl Hooks {
    pub fn spawn(cfg: HookConfig) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Hook>();
        let task = tokio::spawn(async move {
            while let Some(hook) = rx.recv().await {
                run_one(&cfg, hook).await;
            }
        });
        Hooks { tx: Some(tx), task }
    }

    /// Queues a hook; returns at once.
    pub fn run(&self, hook: Hook) {
        if let Some(tx) = &self.tx {
            // The receiver lives until `finish`, so this cannot fail before then.
            let _ = tx.send(hook);
        }
    }

    /// Lets queued hooks finish (each is bounded by its timeout), so a down script queued at
    /// shutdown really runs before the agent exits.
    pub async fn finish(mut self) {
        self.tx.take();
        let _ = self.task.await;
    }
}

async fn run_one(cfg: &HookConfig, hook: Hook) {
    let script = match hook {
        Hook::Up => &cfg.up,
        Hook::Down => &cfg.down,
    };
    let Some(script) = script else { return };
    let mut cmd = Command::new(script);
    cmd.arg(&cfg.interface).arg(&cfg.vip);
    if let Some(x) = &cfg.xparam {
        cmd.arg(x);
    }
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let started = std::time::Instant::now();
    let result = match cmd.spawn() {
        Ok(mut child) => match tokio::time::timeout(cfg.timeout, child.wait()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!("killed after {:?}", cfg.timeout))
            }
        },
        Err(e) => Err(e.to_string()),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(status) if status.success() => {
            tracing::info!(?hook, script = %script.display(), elapsed_ms, "hook finished")
        }
        Ok(status) => {
            tracing::warn!(?hook, script = %script.display(), %status, elapsed_ms, "hook failed")
        }
        Err(error) => {
            tracing::warn!(?hook, script = %script.display(), %error, elapsed_ms, "hook did not complete")
        }
    }
}
