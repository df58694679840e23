//! A TCP relay in a client namespace that retries its connection to the VIP every few
//! milliseconds, as a connection pool with a short connect timeout does. Without it the
//! kernel's one-second SYN retransmission turns every SYN lost while the VIP moves into a
//! one-second stall (or, with a one-second connect timeout, a failed request), which hides
//! what the agent does in a coarse step.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};

/// How often the relay retries its connection to the target.
pub const RETRY_EVERY: Duration = Duration::from_millis(5);

/// Wall-clock nanoseconds since the epoch: the clock the agent's log lines carry.
pub fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A TCP relay in the client namespace: each accepted connection is joined to a new
/// connection to `target`, retried every [`RETRY_EVERY`] until it succeeds.
pub struct Relay {
    /// The relay's port on the namespace's loopback.
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// When each upstream connection succeeded (wall clock).
    connected: Arc<Mutex<Vec<i64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay in namespace `ns` to `target`; a connection that cannot reach it
    /// within `limit` is closed.
    pub fn start(ns: &str, target: SocketAddr, limit: Duration) -> Result<Relay> {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (ns, stop, connected) = (ns.to_string(), stop.clone(), connected.clone());
            std::thread::spawn(move || {
                // Threads started from here share the namespace: every socket lives there.
                let listener = crate::netns::enter(&ns).and_then(|()| {
                    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the relay")
                });
                let listener = match listener {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                let _ = tx.send(Ok(port));
                accept_loop(listener, target, limit, &stop, &connected);
            })
        };
        let port = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("the relay did not start"))??;
        Ok(Relay {
            port,
            stop,
            connected,
            thread: Some(thread),
        })
    }

    /// Stops the relay; when each upstream connection succeeded (wall clock).
    pub fn stop(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.connected.lock().unwrap())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    limit: Duration,
    stop: &Arc<AtomicBool>,
    connected: &Arc<Mutex<Vec<i64>>>,
) {
    let mut handlers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // Wait for a connection, looking at the stop flag every 100 ms.
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid descriptor we own.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n <= 0 {
            continue;
        }
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        let (stop, connected) = (stop.clone(), connected.clone());
        handlers.push(std::thread::spawn(move || {
            relay_one(client, target, limit, &stop, &connected)
        }));
        handlers.retain(|h| !h.is_finished());
    }
    for h in handlers {
        let _ = h.join();
    }
}

fn relay_one(
    client: TcpStream,
    target: SocketAddr,
    limit: Duration,
    stop: &AtomicBool,
    connected: &Mutex<Vec<i64>>,
) {
    let deadline = Instant::now() + limit;
    let upstream = loop {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return;
        }
        let attempt = Instant::now();
        match TcpStream::connect_timeout(&target, RETRY_EVERY) {
            Ok(s) => break s,
            // Refused or unreachable comes back at once: keep to the retry pace.
            Err(_) => std::thread::sleep(RETRY_EVERY.saturating_sub(attempt.elapsed())),
        }
    };
    connected.lock().unwrap().push(wall_ns());
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    // Both directions until either side closes; the write limit bounds a dead peer.
    for s in [&upstream, &client] {
        let _ = s.set_read_timeout(Some(limit));
    }
    let (Ok(mut up_r), Ok(mut cl_r)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    let (mut up_w, mut cl_w) = (upstream, client);
    let back = std::thread::spawn(move || {
        pump(&mut up_r, &mut cl_w);
        let _ = cl_w.shutdown(std::net::Shutdown::Both);
    });
    pump(&mut cl_r, &mut up_w);
    let _ = up_w.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
}

/// Copies until end of stream, an error or a read timeout.
fn pump(from: &mut TcpStream, to: &mut TcpStream) {
    use std::io::Write as _;
    let mut buf = [0u8; 16 * 1024];
    // Bounded: a write's conversation is a few kilobytes.
    for _ in 0..100_000 {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
