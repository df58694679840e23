//! The local control socket: one request line in, one JSON line out.
//!
//! Connections are served on their own tasks; each request is handed to the main loop, which owns
//! all state, so the answer is a consistent snapshot and no lock is shared with the advert path.
//!
//! The socket is the agent's only way in, so it is guarded like one: created 0600 (0660 with a
//! group allowed to read `status`), a change of state accepted only from root or the agent's own
//! user (the kernel's `SO_PEERCRED`, not anything the client says), a request line that must
//! arrive within a deadline, and a cap on connections served at once.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::failover::DbView;
use crate::failover::lease::QuorumView;
use crate::failover::takeover::Takeover;
use crate::failover::track::TrackView;
use crate::hooks::HookCounts;

/// What `cluster-agent status` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub state: String,
    pub vhid: u8,
    /// The first address, `ADDR/PREFIX`.
    pub vip: String,
    /// The vhid's other addresses, which move with the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_vips: Vec<String>,
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
    /// State changes by the state entered and why.
    #[serde(default)]
    pub transitions_by_reason: Vec<TransitionCount>,
    /// Up and down script runs, and how they ended.
    #[serde(default)]
    pub hooks: HookCounts,
    /// The `[[track]]` service checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<TrackView>,
    /// Why the request (e.g. a forced promotion) was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The agent's other vhids, each in this form, when it serves more than one; the fields
    /// above are those of the first (the only one with flags alone, as in UCARP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_vhids: Vec<Status>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionCount {
    /// `MASTER` or `BACKUP`.
    pub to: String,
    /// Why, e.g. `master_down`, `preempt`, `better_master` (see `carp::machine::Reason`).
    pub reason: String,
    pub count: u64,
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
    /// Packets the advert socket dropped before the agent read them (without XDP).
    #[serde(default)]
    pub socket_drops: u64,
    pub transitions: u64,
    pub arp_conflicts: u64,
    /// Connection requests held during a switchover and handed to the next master.
    #[serde(default)]
    pub held_forwarded: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    /// Hand over this vhid, or (`None`) every vhid this node is MASTER of.
    Switchover(Option<u8>),
    /// Open the database although the safety checks refused it (`db promote --force`).
    ForcePromote,
    /// The status as Prometheus metrics (from the metrics server, not the socket).
    Metrics,
    /// Read the configuration again (as SIGHUP does).
    Reload,
}

impl Command {
    fn parse(line: &str) -> Option<Command> {
        match line.trim() {
            "status" | "" => Some(Command::Status),
            "switchover" => Some(Command::Switchover(None)),
            "promote-force" => Some(Command::ForcePromote),
            "reload" => Some(Command::Reload),
            other => match other.strip_prefix("switchover ")?.trim().parse::<u8>() {
                Ok(vhid) if vhid > 0 => Some(Command::Switchover(Some(vhid))),
                _ => None,
            },
        }
    }

    /// Whether a client running as `uid` may send this to an agent running as `own_uid`:
    /// anyone who can open the socket reads `status`; changes take root or the agent's user.
    pub fn allowed(self, uid: u32, own_uid: u32) -> bool {
        match self {
            Command::Status | Command::Metrics => true,
            Command::Switchover(_) | Command::ForcePromote | Command::Reload => {
                uid == 0 || uid == own_uid
            }
        }
    }
}

pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<String>,
}

/// Connections served at once; more are closed at once (a local client that opens hundreds
/// cannot exhaust the agent's file descriptors or memory).
const MAX_CONNECTIONS: usize = 16;
/// How long a client has to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds the socket (replacing a stale one from a crashed run) with its mode set before anyone
/// can connect, and serves it, handing requests to `tx`. `group`: the gid allowed to read
/// `status`.
pub fn serve(path: &Path, group: Option<u32>, tx: mpsc::Sender<Request>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Bound under a temporary name, restricted, then renamed into place: there is no moment
    // at which the socket exists under its name with the umask's mode.
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.new", std::process::id()));
    let staging = std::path::PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    let placed = std::os::unix::fs::chown(&staging, None, group)
        .and_then(|()| std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control socket: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    max = MAX_CONNECTIONS,
                    "control socket: too many connections, one closed"
                );
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, tx, own_uid).await {
                    tracing::debug!(%error, "control connection failed");
                }
                drop(slot);
            });
        }
    });
    Ok(())
}

async fn answer(
    stream: UnixStream,
    tx: mpsc::Sender<Request>,
    own_uid: u32,
) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    // A bounded read: a client cannot make us buffer without limit, nor hold a slot forever.
    let mut rd = BufReader::new(rd.take_bounded());
    tokio::time::timeout(READ_TIMEOUT, rd.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request line"))??;
    let refuse = |why: String| serde_json::json!({ "error": why }).to_string() + "\n";
    let command = match Command::parse(&line) {
        Some(c) if c.allowed(uid, own_uid) => c,
        Some(c) => {
            tracing::warn!(uid, command = ?c, "control socket: change refused to an unprivileged user");
            let msg = refuse(format!(
                "{c:?} needs root or the agent's user (uid {own_uid})"
            ));
            return wr.write_all(msg.as_bytes()).await;
        }
        None => {
            let msg = refuse(format!("unknown command {:?}", line.trim()));
            return wr.write_all(msg.as_bytes()).await;
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
        let vips: Vec<&str> = std::iter::once(self.vip.as_str())
            .chain(self.more_vips.iter().map(String::as_str))
            .collect();
        s += &format!("vip:          {} on {}\n", vips.join(", "), self.interface);
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
        if c.socket_drops > 0 {
            s += &format!(
                "overflowed:   {} packets dropped by the advert socket (a flood: see the logs)\n",
                c.socket_drops
            );
        }
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
        for t in &self.tracks {
            s += &format!(
                "track:        {} {}{}\n",
                t.name,
                if t.passing { "passing" } else { "FAILING" },
                match (&t.last_error, t.passing) {
                    (Some(e), false) => format!(" ({e}; {:?} while failing)", t.action),
                    _ => String::new(),
                }
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
        for other in &self.other_vhids {
            s += "\n";
            s += &other.render();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anyone_reads_status_only_root_or_the_agent_s_user_changes_state() {
        assert_eq!(Command::parse("status\n"), Some(Command::Status));
        assert_eq!(Command::parse(""), Some(Command::Status));
        assert_eq!(
            Command::parse("switchover"),
            Some(Command::Switchover(None))
        );
        assert_eq!(
            Command::parse("switchover 12\n"),
            Some(Command::Switchover(Some(12)))
        );
        for bad in [
            "switchover 0",
            "switchover 256",
            "switchover x",
            "switchovers",
        ] {
            assert_eq!(Command::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Command::parse("promote-force\n"),
            Some(Command::ForcePromote)
        );
        assert_eq!(Command::parse("promote"), None);
        for (uid, own, changes) in [
            (0, 0, true),
            (1000, 0, false),
            (1000, 1000, true),
            (0, 1000, true),
            (1001, 1000, false),
        ] {
            assert!(Command::Status.allowed(uid, own));
            assert_eq!(
                Command::Switchover(None).allowed(uid, own),
                changes,
                "uid {uid} agent {own}"
            );
            assert_eq!(
                Command::ForcePromote.allowed(uid, own),
                changes,
                "uid {uid} agent {own}"
            );
        }
    }
}
