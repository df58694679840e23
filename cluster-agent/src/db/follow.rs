//! The database side of the agent's role changes, on its own tasks so that a slow database never
//! delays an advert: the main loop sends commands in transition order and receives what came of
//! them, and a health task feeds the catch-up gate.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Db, DbError};
use crate::config::DbSettings;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stop writes now (becoming BACKUP, or starting up).
    Fence,
    /// Replicate from the master whose adverts we follow (after fencing).
    Follow(Ipv4Addr),
    /// Make the local server the writable master.
    Promote,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Promoted(Result<(), String>),
    Following(Ipv4Addr),
    /// The local server holds transactions the master lacks: it stays fenced.
    Errant {
        master: Ipv4Addr,
        gtids: Vec<String>,
    },
    FollowFailed {
        master: Ipv4Addr,
        error: String,
    },
    /// The catch-up gate, after every check: `Err` says why this node should not be master.
    Gate(Result<(), GateError>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateError {
    /// The server is down or unreachable: a MASTER in this state hands over.
    Down(String),
    /// Lagging or not applying: advertise a demoted skew, but a MASTER keeps serving.
    NotReady(String),
}

impl std::fmt::Display for GateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateError::Down(why) | GateError::NotReady(why) => f.write_str(why),
        }
    }
}

pub struct Link {
    pub commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// Starts the command and health tasks; they end when the link is dropped.
pub fn spawn(settings: DbSettings) -> Link {
    let db = Arc::new(Db::new(settings.db.clone()));
    let (commands, rx) = mpsc::unbounded_channel();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(run_commands(db.clone(), settings.clone(), rx, tx.clone()));
    tokio::spawn(run_health(db, settings, tx));
    Link { commands, events }
}

async fn run_commands(
    db: Arc<Db>,
    settings: DbSettings,
    mut rx: mpsc::UnboundedReceiver<Command>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut next = rx.recv().await;
    while let Some(command) = next.take() {
        let retry = match command {
            Command::Fence => db.fence().await.is_err(),
            Command::Promote => {
                let r = db.promote(settings.promote_timeout).await;
                let _ = tx.send(Event::Promoted(r.map(drop).map_err(|e| e.to_string())));
                false
            }
            Command::Follow(master) => match db.replicate_from(IpAddr::V4(master)).await {
                Ok(_) => {
                    let _ = tx.send(Event::Following(master));
                    false
                }
                // Retrying cannot help: an operator must decide which transactions to keep.
                Err(DbError::Errant { gtids, .. }) => {
                    let _ = tx.send(Event::Errant { master, gtids });
                    false
                }
                Err(e) => {
                    let _ = tx.send(Event::FollowFailed {
                        master,
                        error: e.to_string(),
                    });
                    true
                }
            },
        };
        // A failed fence or follow is retried until it works or a newer command replaces it:
        // the new master's database may still be promoting, or ours restarting.
        next = if retry {
            match tokio::time::timeout(settings.check_interval, rx.recv()).await {
                Ok(newer) => newer,
                Err(_) => Some(command),
            }
        } else {
            rx.recv().await
        };
    }
}

async fn run_health(db: Arc<Db>, settings: DbSettings, tx: mpsc::UnboundedSender<Event>) {
    let mut tick = tokio::time::interval(settings.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let health =
            tokio::time::timeout(settings.db.op_timeout + Duration::from_secs(1), db.health())
                .await;
        let gate = match health {
            Err(_) => Err(GateError::Down("health check timed out".into())),
            Ok(h) if !h.up => Err(GateError::Down(
                h.error.unwrap_or_else(|| "unreachable".into()),
            )),
            Ok(h) => h
                .gate(settings.max_lag)
                .map_err(|e| GateError::NotReady(e.to_string())),
        };
        if tx.send(Event::Gate(gate)).is_err() {
            return;
        }
    }
}
