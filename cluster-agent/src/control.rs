//! The local control socket: one request line in, one JSON line out.
//!
//! Connections are served on their own tasks; each request is handed to the main loop, which owns
//! all state, so the answer is a consistent snapshot and no lock is shared with the advert path.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::failover::DbView;
use crate::failover::lease::QuorumView;
use crate::failover::takeover::Takeover;

/// What `cluster-agent status` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub state: String,
    pub vhid: u8,
    pub vip: String,
    pub interface: String,
    pub master: Option<String>,
    pub since_last_advert_ms: Option<u64>,
    pub advbase: u8,
    pub advskew: u8,
    pub demoted: bool,
    pub xdp: String,
    pub counters: Counters,
    /// The local database, when the agent manages one.
    pub database: Option<DbView>,
    /// Accounts that can write through `read_only` (fencing cannot stop them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only_bypass: Vec<String>,
    /// Durability settings of the local server that can lose acknowledged writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsafe_settings: Vec<String>,
    /// Why the last change of the VIP failed, while it stays failed.
    pub vip_error: Option<String>,
    /// Why the last write of the XDP role failed.
    pub xdp_error: Option<String>,
    /// MAC of the last host that claimed the VIP while we were MASTER (split-brain signal).
    pub last_conflict_mac: Option<String>,
    pub xdp_counters: BTreeMap<String, u64>,
    /// The last transition to MASTER and each step after it, with CLOCK_MONOTONIC instants.
    #[serde(default)]
    pub last_takeover: Option<Takeover>,
    /// The quorum lease, with `[quorum]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumView>,
    /// Why the request (e.g. a forced promotion) was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub auth_failures: u64,
    /// Authentic adverts refused because their counter was already seen (see `carp::replay`).
    #[serde(default)]
    pub replayed: u64,
    pub bad_packets: u64,
    pub transitions: u64,
    pub arp_conflicts: u64,
    /// Connection requests held during a switchover and handed to the next master.
    #[serde(default)]
    pub held_forwarded: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    Switchover,
    /// Open the database although the safety checks refused it (`db promote --force`).
    ForcePromote,
}

pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<String>,
}

/// Binds the socket (replacing a stale one from a crashed run) and serves it until dropped.
pub fn serve(path: &Path) -> std::io::Result<mpsc::Receiver<Request>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, tx).await {
                    tracing::debug!(%error, "control connection failed");
                }
            });
        }
    });
    Ok(rx)
}

async fn answer(stream: UnixStream, tx: mpsc::Sender<Request>) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    // A bounded read: a client cannot make us buffer without limit.
    let mut rd = BufReader::new(rd.take_bounded());
    rd.read_line(&mut line).await?;
    let command = match line.trim() {
        "status" | "" => Command::Status,
        "switchover" => Command::Switchover,
        "promote-force" => Command::ForcePromote,
        other => {
            let msg = serde_json::json!({ "error": format!("unknown command {other:?}") });
            wr.write_all(format!("{msg}\n").as_bytes()).await?;
            return Ok(());
        }
    };
    let (reply, rx) = oneshot::channel();
    if tx.send(Request { command, reply }).await.is_err() {
        return Ok(());
    }
    if let Ok(text) = rx.await {
        wr.write_all(text.as_bytes()).await?;
        wr.write_all(b"\n").await?;
    }
    Ok(())
}

trait TakeBounded: Sized {
    fn take_bounded(self) -> tokio::io::Take<Self>;
}

impl<R: tokio::io::AsyncRead + Unpin> TakeBounded for R {
    fn take_bounded(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, 256)
    }
}

/// Client side: sends one command and returns the reply line.
pub async fn request(path: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(path).await?;
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut out = String::new();
    BufReader::new(stream).read_line(&mut out).await?;
    Ok(out)
}

impl Status {
    /// Human-readable form for `cluster-agent status` without `--json`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let since = self
            .since_last_advert_ms
            .map_or("never".to_string(), |ms| format!("{ms} ms ago"));
        s += &format!(
            "state:        {}{}\n",
            self.state,
            if self.demoted { " (demoted)" } else { "" }
        );
        s += &format!("vhid:         {}\n", self.vhid);
        s += &format!("vip:          {} on {}\n", self.vip, self.interface);
        s += &format!(
            "master:       {}\n",
            self.master.as_deref().unwrap_or("unknown")
        );
        s += &format!("last advert:  {since}\n");
        s += &format!(
            "timing:       advbase {} advskew {}\n",
            self.advbase, self.advskew
        );
        s += &format!("xdp:          {}\n", self.xdp);
        let c = &self.counters;
        s += &format!(
            "adverts:      sent {} received {}\nrejected:     auth {} replayed {} malformed {}\ntransitions:  {}\n",
            c.adverts_sent,
            c.adverts_received,
            c.auth_failures,
            c.replayed,
            c.bad_packets,
            c.transitions
        );
        if c.held_forwarded > 0 {
            s += &format!(
                "handed on:    {} connection requests held by a switchover\n",
                c.held_forwarded
            );
        }
        if c.arp_conflicts > 0 {
            s += &format!(
                "CONFLICTS:    {} ARP claims on the VIP from another host, last from {}\n",
                c.arp_conflicts,
                self.last_conflict_mac.as_deref().unwrap_or("?")
            );
        }
        if let Some(db) = &self.database {
            s += &format!(
                "database:     {}{}{}\n",
                db.role,
                db.replicating_from
                    .map_or(String::new(), |m| format!(" of {m}")),
                if db.current { ", current" } else { "" }
            );
            if let Some(g) = &db.gate {
                s += &format!("not ready:    {g}\n");
            }
            if let Some(op) = &db.operation {
                s += &format!("in progress:  {op}\n");
            }
            if let Some(w) = &db.quorum_wait {
                s += &format!(
                    "WAITING:      {w} (writes fail on read_only meanwhile)
"
                );
            }
            if let Some(r) = &db.refused {
                s += &format!(
                    "REFUSED:      {r}\n              (`cluster-agent db promote --force` opens it anyway; see README)\n"
                );
            }
            if !db.errant.is_empty() {
                s += &format!(
                    "ERRANT:       {} (refusing to rejoin)\n",
                    db.errant.join(",")
                );
            }
            if let Some(semi) = &db.semi_sync {
                s += &format!(
                    "semi-sync:    {} ({} replicas, {} commits acknowledged without one, {} fallbacks)\n",
                    if semi.on { "on" } else { "OFF" },
                    semi.clients,
                    semi.no_tx,
                    db.semi_sync_fallbacks
                );
            }
            if let Some(e) = &db.fence_error {
                s += &format!("FENCE FAILED: {e}\n");
            }
            if let Some(e) = &db.last_error {
                s += &format!("db error:     {e}\n");
            }
        }
        if let Some(q) = &self.quorum {
            s += &format!(
                "quorum:       {}{}{}{}
",
                q.state,
                q.holder
                    .as_ref()
                    .map_or(String::new(), |h| format!(" by {h}")),
                q.epoch.map_or(String::new(), |e| format!(", epoch {e}")),
                q.write_left_ms.map_or(String::new(), |ms| format!(
                    ", writable for {ms} ms more without a renewal (ttl {} ms)",
                    q.ttl_ms
                ))
            );
            if let Some(e) = &q.error {
                s += &format!("QUORUM ERROR: {e}\n");
            }
        }
        if !self.read_only_bypass.is_empty() {
            s += &format!(
                "UNFENCEABLE:  {} can write through read_only\n",
                self.read_only_bypass.join(", ")
            );
        }
        for setting in &self.unsafe_settings {
            s += &format!("UNSAFE:       {setting}\n");
        }
        if let Some(e) = &self.vip_error {
            s += &format!("VIP ERROR:    {e}\n");
        }
        if let Some(e) = &self.xdp_error {
            s += &format!("XDP ERROR:    {e}\n");
        }
        for (k, v) in &self.xdp_counters {
            s += &format!("xdp {k}: {v}\n");
        }
        if let Some(t) = &self.last_takeover {
            let steps: Vec<String> = t
                .steps
                .iter()
                .map(|st| {
                    format!(
                        "{} +{:.1} ms",
                        st.name,
                        st.at_ns.saturating_sub(t.at_ns) as f64 / 1e6
                    )
                })
                .collect();
            s += &format!(
                "last takeover: {}{}: {}\n",
                t.reason,
                if t.complete { "" } else { " (in progress)" },
                steps.join(", ")
            );
        }
        s
    }
}
