//! The demo's web application: a guestbook on every node, backed by that node's own MariaDB.
//!
//! `GET /` lists the latest entries, `POST /` adds one (the body is the entry's token) and
//! answers with the id the database gave it. The first line of every `200` body is the node's
//! name, so the client can tell which node answered. The service talks to the local server
//! over its Unix socket; on a node whose database is read-only (a replica) a write fails with
//! `503`, as it would for a real application that is not behind the VIP's master.
//!
//! Speaking HTTP/1.0 with `Connection: close` keeps the client's view simple: one fresh TCP
//! connection per request, so every request tests where the VIP is at that moment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The schema every node's server gets (outside the binary log, before replication starts).
pub const SCHEMA: &str = "CREATE DATABASE guestbook;\n\
     CREATE TABLE guestbook.entries (\n\
       id BIGINT AUTO_INCREMENT PRIMARY KEY,\n\
       token VARCHAR(64) NOT NULL UNIQUE,\n\
       node VARCHAR(16) NOT NULL,\n\
       created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)\n\
     ) ENGINE=InnoDB;\n";
/// The application's account (local connections only).
pub const DB_USER: &str = "guestbook";

const MAX_HEAD: usize = 4096;
const MAX_BODY: usize = 256;
/// Longest one database call may take before the request fails.
const DB_LIMIT: Duration = Duration::from_secs(2);
/// Connections to the local server kept open and tested, and how often they are tested.
const WARM: usize = 2;
const WARM_EVERY: Duration = Duration::from_secs(1);
/// Longest a client may take to send its request.
const READ_LIMIT: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The node name at the top of every response.
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "0.0.0.0:80")]
    pub listen: SocketAddr,
    /// The local database server's Unix socket.
    #[arg(long)]
    pub db_socket: PathBuf,
    /// File holding the database password (never on a command line).
    #[arg(long)]
    pub db_password_file: PathBuf,
    /// The service exits after this long whatever happens.
    #[arg(long, default_value_t = 3600)]
    pub max_seconds: u64,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let password = std::fs::read_to_string(&args.db_password_file)
        .with_context(|| format!("reading {}", args.db_password_file.display()))?
        .trim_end()
        .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let limit = Duration::from_secs(args.max_seconds);
        match tokio::time::timeout(limit, run(args, password)).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    })
}

async fn run(args: ServeArgs, password: String) -> Result<()> {
    let opts = mysql_async::OptsBuilder::default()
        .socket(Some(args.db_socket.to_string_lossy().into_owned()))
        .user(Some(DB_USER))
        .pass(Some(password))
        .db_name(Some("guestbook"))
        .pool_opts(
            mysql_async::PoolOpts::default()
                .with_constraints(mysql_async::PoolConstraints::new(WARM, 32).expect("WARM <= 32")),
        );
    let pool = mysql_async::Pool::new(opts);
    tokio::spawn(keep_warm(pool.clone(), args.max_seconds));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening on {} as {}", args.listen, args.name);
    let name: std::sync::Arc<str> = args.name.into();
    // The outer timeout ends this loop; each pass accepts one connection.
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (pool, name) = (pool.clone(), name.clone());
        tokio::spawn(async move {
            let _ = handle(stream, &pool, &name).await;
        });
    }
}

/// Keeps [`WARM`] tested connections to the local server idle in the pool, as an application's
/// pool with a minimum of idle connections does: the first requests on a node that just got
/// the VIP would otherwise each pay a new connection's set-up (4-7 ms here), whatever moved
/// the address. The pool itself opens connections only on demand and keeps at most its lower
/// bound idle, so each pass draws that many (opening what is missing) and pings them; one a
/// restarted server broke is replaced. The service's own time limit ends the loop; the count,
/// one pass a second for as long, only bounds it.
async fn keep_warm(pool: mysql_async::Pool, max_seconds: u64) {
    for _ in 0..=max_seconds {
        let mut held = Vec::with_capacity(WARM);
        for _ in 0..WARM {
            match tokio::time::timeout(DB_LIMIT, pool.get_conn()).await {
                Ok(Ok(c)) => held.push(c),
                _ => break,
            }
        }
        for c in &mut held {
            // A broken connection is dropped by the pool when it comes back.
            let _ = tokio::time::timeout(DB_LIMIT, c.ping()).await;
        }
        drop(held);
        tokio::time::sleep(WARM_EVERY).await;
    }
}

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    List,
    Add { token: String },
}

async fn handle(mut stream: TcpStream, pool: &mysql_async::Pool, name: &str) -> Result<()> {
    stream.set_nodelay(true)?;
    let raw = tokio::time::timeout(READ_LIMIT, read_request(&mut stream)).await??;
    let (status, body) = match parse_request(&raw) {
        Err(why) => ("400 Bad Request", format!("{why}\n")),
        Ok(req) => match tokio::time::timeout(DB_LIMIT, answer(pool, name, req)).await {
            Ok(Ok(body)) => ("200 OK", body),
            Ok(Err(e)) => ("503 Service Unavailable", format!("{name}\n{e}\n")),
            Err(_) => (
                "503 Service Unavailable",
                format!("{name}\ndatabase timeout\n"),
            ),
        },
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

async fn answer(pool: &mysql_async::Pool, name: &str, req: Request) -> Result<String> {
    let mut conn = pool.get_conn().await?;
    match req {
        Request::List => {
            let rows: Vec<(u64, String, String)> = conn
                .query("SELECT id, token, node FROM entries ORDER BY id DESC LIMIT 5")
                .await?;
            let mut body = format!("{name}\n");
            for (id, token, node) in rows {
                body.push_str(&format!("{id} {token} {node}\n"));
            }
            Ok(body)
        }
        Request::Add { token } => {
            conn.exec_drop(
                "INSERT INTO entries (token, node) VALUES (?, ?)",
                (&token, name),
            )
            .await?;
            let id = conn.last_insert_id().context("no insert id")?;
            Ok(format!("{name}\n{id}\n"))
        }
    }
}

/// Reads the head and, for a POST, the body (up to `Content-Length`).
async fn read_request(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    // Every pass adds at least one byte or returns, so the size limits bound the loop.
    for _ in 0..MAX_HEAD + MAX_BODY {
        if let Some(end) = find_head_end(&raw) {
            let want = content_length(&raw[..end]).min(MAX_BODY);
            if raw.len() >= end + want {
                raw.truncate(end + want);
                return Ok(raw);
            }
        } else if raw.len() >= MAX_HEAD {
            anyhow::bail!("request head too long");
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
    anyhow::bail!("request too long")
}

fn find_head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `GET /` lists; `POST /` with a token of 1-64 characters from `[A-Za-z0-9_-]` adds.
fn parse_request(raw: &[u8]) -> Result<Request, &'static str> {
    let end = find_head_end(raw).ok_or("incomplete request")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "request head is not UTF-8")?;
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next(), words.next());
    if path != Some("/") {
        return Err("unknown path");
    }
    match method {
        Some("GET") => Ok(Request::List),
        Some("POST") => {
            let body = std::str::from_utf8(&raw[end..]).map_err(|_| "body is not UTF-8")?;
            let token = body.trim();
            let valid = (1..=64).contains(&token.len())
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err("the token must be 1-64 characters of [A-Za-z0-9_-]");
            }
            Ok(Request::Add {
                token: token.to_string(),
            })
        }
        _ => Err("unknown method"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(parse_request(b"GET / HTTP/1.0\r\n\r\n"), Ok(Request::List));
        assert_eq!(
            parse_request(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nw17"),
            Ok(Request::Add {
                token: "w17".into()
            })
        );
        assert!(
            parse_request(b"POST / HTTP/1.0\r\n\r\n").is_err(),
            "empty token"
        );
        assert!(
            parse_request(b"POST / HTTP/1.0\r\n\r\nx'; DROP TABLE entries").is_err(),
            "only plain tokens"
        );
        assert!(parse_request(b"GET /etc HTTP/1.0\r\n\r\n").is_err());
        assert!(parse_request(b"DELETE / HTTP/1.0\r\n\r\n").is_err());
        assert!(
            parse_request(b"GET / HTTP/1.0\r\n").is_err(),
            "no end of head"
        );
    }

    #[test]
    fn reads_the_content_length() {
        assert_eq!(
            content_length(b"POST / HTTP/1.0\r\ncontent-length: 12\r\n\r\n"),
            12
        );
        assert_eq!(content_length(b"GET / HTTP/1.0\r\n\r\n"), 0);
    }
}
