//! The client that probes the VIP.
//!
//! The guestbook on every node answers with the name of the node it runs on, so the client can
//! tell which node holds the VIP. The probe opens a fresh TCP connection for every request and
//! starts one request per interval, whether or not earlier ones have finished, so an outage is
//! resolved to about one interval even while requests time out. With `--write-every N` every
//! Nth request is a guestbook write (`POST /` with a unique token) and the id the server
//! acknowledged is recorded, so lost writes can be found afterwards.
//!
//! Every request becomes one line of the probe's record file:
//! `<start_ns> <end_ns> ok <node> [w <token> <id>]` or `<start_ns> <end_ns> err <why> [w <token>]`,
//! with `CLOCK_MONOTONIC` timestamps (the same clock in every namespace of the host).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use ::tests::wait::mono_ns;

/// Largest response the probe reads.
const MAX_RESPONSE: usize = 4096;

/// Arguments of the hidden `http-probe` subcommand.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// Where to connect, e.g. `10.99.0.100:80`.
    #[arg(long)]
    pub target: SocketAddr,
    /// The record file (appended to, one line per request).
    #[arg(long)]
    pub out: PathBuf,
    /// A new request starts every this many microseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_us: u64,
    /// Limit for one request, connection set-up included.
    #[arg(long, default_value_t = 50)]
    pub timeout_ms: u64,
    /// Requests in flight at most (each on its own thread).
    #[arg(long, default_value_t = 96)]
    pub workers: u32,
    /// Every this many requests one is a write (`POST /`); 0: reads only.
    #[arg(long, default_value_t = 0)]
    pub write_every: u64,
    /// The probe exits after this long whatever happens.
    #[arg(long, default_value_t = 3600)]
    pub max_seconds: u64,
}

/// Runs the probe until `max_seconds` have passed (or it is killed).
pub fn probe(args: ProbeArgs) -> Result<()> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let out = Arc::new(out);
    let interval = args.interval_us.max(100);
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let total_ticks = args.max_seconds.saturating_mul(1_000_000) / interval;
    let next_tick = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    println!(
        "probing http://{}/ every {interval} us, timeout {timeout:?}, {} workers",
        args.target, args.workers
    );
    std::io::stdout().flush()?;
    let workers: Vec<_> = (0..args.workers.max(1))
        .map(|_| {
            let out = Arc::clone(&out);
            let next_tick = Arc::clone(&next_tick);
            let plan = Plan {
                start,
                interval_us: interval,
                total_ticks,
                target: args.target,
                timeout,
                write_every: args.write_every,
            };
            std::thread::spawn(move || probe_worker(&out, &next_tick, &plan))
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// What every probe worker does.
struct Plan {
    start: Instant,
    interval_us: u64,
    total_ticks: u64,
    target: SocketAddr,
    timeout: Duration,
    write_every: u64,
}

/// Claims ticks from the shared counter; a tick that is already an interval late (all workers
/// were busy) is skipped rather than bunched up with the next ones.
fn probe_worker(out: &File, next_tick: &AtomicU64, plan: &Plan) {
    let interval = Duration::from_micros(plan.interval_us);
    // Tokens are unique across probe processes of one run: the pid and the tick.
    let pid = std::process::id();
    // Every iteration consumes a distinct tick, so total_ticks bounds the loop.
    for _ in 0..plan.total_ticks {
        let tick = next_tick.fetch_add(1, Ordering::Relaxed);
        if tick >= plan.total_ticks {
            return;
        }
        let due = plan.start + interval * u32::try_from(tick).unwrap_or(u32::MAX);
        let now = Instant::now();
        if now > due + interval {
            continue;
        }
        // Pacing to the tick, not waiting for a condition.
        if let Some(wait) = due.checked_duration_since(now) {
            std::thread::sleep(wait);
        }
        let token = (plan.write_every > 0 && tick.is_multiple_of(plan.write_every))
            .then(|| format!("p{pid}-{tick}"));
        let t0 = mono_ns();
        let result = request(plan.target, plan.timeout, token.as_deref());
        let t1 = mono_ns();
        let line = match (result, &token) {
            (Ok(a), Some(token)) => match a.id {
                Some(id) => format!("{t0} {t1} ok {} w {token} {id}\n", a.node),
                None => format!("{t0} {t1} err no-id w {token}\n"),
            },
            (Ok(a), None) => format!("{t0} {t1} ok {}\n", a.node),
            (Err(why), Some(token)) => format!("{t0} {t1} err {why} w {token}\n"),
            (Err(why), None) => format!("{t0} {t1} err {why}\n"),
        };
        // One write(2) per line on an O_APPEND file: lines of concurrent workers never mix.
        let mut writer = out;
        let _ = writer.write_all(line.as_bytes());
    }
}

/// One request on a fresh connection (a write of `token` if given); the answer on success, a
/// one-word reason otherwise.
fn request(
    target: SocketAddr,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Answer, &'static str> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "connect-timeout",
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable",
        _ => "connect-error",
    })?;
    let remaining = |deadline: Instant| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("timeout")
    };
    let _ = stream.set_nodelay(true);
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(|_| "socket-error")?;
    let req = match token {
        Some(t) => format!(
            "POST / HTTP/1.0\r\nHost: vip\r\nContent-Length: {}\r\n\r\n{t}",
            t.len()
        ),
        None => "GET / HTTP/1.0\r\nHost: vip\r\n\r\n".to_string(),
    };
    stream
        .write_all(req.as_bytes())
        .map_err(|_| "write-error")?;
    let mut response = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    for _ in 0..MAX_RESPONSE {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(|_| "socket-error")?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() >= MAX_RESPONSE {
                    return Err("too-long");
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("read-timeout");
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err("reset"),
            Err(_) => return Err("read-error"),
        }
    }
    parse_response(&response)
}

/// A `200` response: the answering node, and for a write the id it was given.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    node: String,
    id: Option<u64>,
}

/// The node name (first body line) and the id (second line, writes only) of a `200` response.
fn parse_response(response: &[u8]) -> Result<Answer, &'static str> {
    let text = std::str::from_utf8(response).map_err(|_| "bad-response")?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("bad-response")?;
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    if !words.next().is_some_and(|w| w.starts_with("HTTP/1.")) {
        return Err("bad-response");
    }
    match words.next() {
        Some("200") => {}
        Some("503") => return Err("http-503"),
        _ => return Err("http-error"),
    }
    let mut lines = body.lines();
    let node = lines.next().unwrap_or("").trim();
    if node.is_empty() || node.contains(char::is_whitespace) {
        return Err("bad-response");
    }
    Ok(Answer {
        node: node.to_string(),
        id: lines.next().and_then(|l| l.trim().parse().ok()),
    })
}

/// One request as the probe recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub start_ns: u64,
    pub end_ns: u64,
    /// The answering node, or `Err(reason)`.
    pub outcome: Result<String, String>,
    /// For a write: its token, and the id the server acknowledged (`None` if it failed).
    pub write: Option<(String, Option<u64>)>,
}

impl Sample {
    pub fn ok_from(&self, node: &str) -> bool {
        self.outcome.as_deref() == Ok(node)
    }

    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// Reads a probe record file as it grows.
pub struct ProbeLog {
    path: PathBuf,
    offset: u64,
    partial: String,
    pub samples: Vec<Sample>,
}

impl ProbeLog {
    pub fn new(path: &Path) -> ProbeLog {
        ProbeLog {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
            samples: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call; returns how many samples were added.
    pub fn refresh(&mut self) -> Result<usize> {
        let before = self.samples.len();
        let Some(text) = crate::scenario::read_from(&self.path, &mut self.offset)? else {
            return Ok(0);
        };
        self.partial.push_str(&text);
        let complete = match self.partial.rfind('\n') {
            Some(i) => i + 1,
            None => return Ok(0),
        };
        let rest = self.partial.split_off(complete);
        let lines = std::mem::replace(&mut self.partial, rest);
        self.samples.extend(lines.lines().filter_map(parse_sample));
        Ok(self.samples.len() - before)
    }

    /// Samples that ended at or after `t_ns`, in order of their end.
    pub fn ended_since(&self, t_ns: u64) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.end_ns >= t_ns)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let mut words = line.split_whitespace();
    let start_ns = words.next()?.parse().ok()?;
    let end_ns = words.next()?.parse().ok()?;
    let kind = words.next()?;
    let what = words.next().unwrap_or("").to_string();
    let write = match words.next() {
        Some("w") => {
            let token = words.next()?.to_string();
            let id = words.next().and_then(|w| w.parse().ok());
            Some((token, id.filter(|_| kind == "ok")))
        }
        _ => None,
    };
    let outcome = match kind {
        "ok" => Ok(what),
        _ => Err(what),
    };
    Some(Sample {
        start_ns,
        end_ns,
        outcome,
        write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_service_response() {
        let r = b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nnodeA\n";
        assert_eq!(
            parse_response(r),
            Ok(Answer {
                node: "nodeA".into(),
                id: None
            })
        );
        let w = b"HTTP/1.0 200 OK\r\n\r\nnode2\n41\n";
        assert_eq!(parse_response(w).map(|a| a.id), Ok(Some(41)));
        assert_eq!(
            parse_response(b"HTTP/1.0 500 Oops\r\n\r\nnodeA\n"),
            Err("http-error"),
            "only 200 counts"
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\nnodeA\nread-only\n"),
            Err("http-503")
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n"),
            Err("bad-response"),
            "no body"
        );
    }

    #[test]
    fn parses_probe_lines() {
        assert_eq!(
            parse_sample("10 20 ok node1"),
            Some(Sample {
                start_ns: 10,
                end_ns: 20,
                outcome: Ok("node1".into()),
                write: None,
            })
        );
        assert_eq!(
            parse_sample("10 20 ok node1 w p7-3 12").and_then(|s| s.write),
            Some(("p7-3".into(), Some(12)))
        );
        assert_eq!(
            parse_sample("10 20 err timeout w p7-4").and_then(|s| s.write),
            Some(("p7-4".into(), None))
        );
        assert_eq!(
            parse_sample("10 70 err connect-timeout").map(|s| s.outcome),
            Some(Err("connect-timeout".into()))
        );
        assert_eq!(parse_sample("garbage"), None);
    }
}
