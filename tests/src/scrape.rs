//! Reading an agent's Prometheus metrics from inside its node's namespace (`--metrics` bound to
//! the node's loopback), with a plain HTTP/1.0 GET: no client program needed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};

/// Bound on connecting, sending and reading one scrape.
const LIMIT: Duration = Duration::from_secs(5);

/// `GET /metrics` on `addr` in namespace `ns`; the body, if the answer was `200`.
pub fn scrape(ns: &str, addr: SocketAddr) -> Result<String> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> Result<String> {
        crate::netns::enter(&ns)?;
        let mut s = TcpStream::connect_timeout(&addr, LIMIT)
            .with_context(|| format!("connecting to {addr} in {ns}"))?;
        s.set_read_timeout(Some(LIMIT))?;
        s.set_write_timeout(Some(LIMIT))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut raw = Vec::new();
        // HTTP/1.0: the server closes the connection after the answer.
        s.take(16 << 20).read_to_end(&mut raw)?;
        let text = String::from_utf8(raw).context("metrics are not UTF-8")?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP header in {text:?}"))?;
        ensure!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "metrics answer: {head}"
        );
        ensure!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "not OpenMetrics: {head}"
        );
        Ok(body.to_string())
    })
    .join()
    .map_err(|_| anyhow!("the scrape thread panicked"))?
}

/// The samples of a text exposition: `name{labels}` (as written) to value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}
