//! Prometheus / OpenMetrics on `--metrics ADDR:PORT` (`GET /metrics`).
//!
//! A scrape asks the main loop for the same snapshot `status` shows, and [`render`] turns it
//! into metrics: one source of truth, so the numbers an alert fires on are the ones an
//! operator then reads with `cluster-agent status`. Rendering is pure and tested apart from
//! the HTTP side.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{mpsc, oneshot};

use crate::control::{Command, Request, Status};
use crate::hooks::HookCount;

/// The media type of OpenMetrics text, which Prometheus asks for first.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A scrape that the main loop has not answered by then gets a 503.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

type Labels = Vec<(&'static str, String)>;

/// Binds `addr` and serves `/metrics` from snapshots of the main loop (through `requests`).
pub async fn serve(addr: SocketAddr, requests: mpsc::Sender<Request>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || scrape(requests.clone())),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    tracing::info!(%addr, "serving metrics on /metrics");
    Ok(())
}

async fn scrape(requests: mpsc::Sender<Request>) -> Response {
    let (reply, rx) = oneshot::channel();
    let request = Request {
        command: Command::Metrics,
        reply,
    };
    if requests.send(request).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n").into_response();
    }
    match tokio::time::timeout(SCRAPE_TIMEOUT, rx).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "no snapshot in time\n").into_response(),
    }
}

fn counter(reg: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    reg.register(name, help, g);
}

fn seconds(reg: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(value);
    reg.register_with_unit(name, help, Unit::Seconds, g);
}

/// A gauge that is 1 for `current` and 0 for the other `values` of label `key`.
fn one_of(
    reg: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: &[&str],
    current: &str,
) {
    let f = Family::<Labels, Gauge>::default();
    for v in values {
        f.get_or_create(&vec![(key, v.to_string())])
            .set(i64::from(*v == current));
    }
    reg.register(name, help, f);
}

/// The metrics of a snapshot and of its `other_vhids`, as OpenMetrics text: one family per
/// metric, with a sample for each vhid.
pub fn render(st: &Status) -> String {
    let texts: Vec<String> = std::iter::once(st)
        .chain(&st.other_vhids)
        .map(render_one)
        .collect();
    merge(&texts)
}

/// Joins OpenMetrics texts whose families carry the same names: each family once, with its
/// header from the first text and the samples of all of them, and one `# EOF`.
fn merge(texts: &[String]) -> String {
    let mut families: Vec<(String, String, String)> = Vec::new();
    for text in texts {
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if line == "# EOF" {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                let index = match families.iter().position(|(n, _, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        families.push((name, String::new(), String::new()));
                        families.len() - 1
                    }
                };
                current = Some(index);
            }
            let Some(index) = current else { continue };
            let (_, header, samples) = &mut families[index];
            if line.starts_with("# ") {
                // Every text gives the family the same header: keep it once.
                if !header.lines().any(|l| l == line) {
                    header.push_str(line);
                    header.push('\n');
                }
            } else {
                samples.push_str(line);
                samples.push('\n');
            }
        }
    }
    let mut out = String::new();
    for (_, header, samples) in families {
        out.push_str(&header);
        out.push_str(&samples);
    }
    out.push_str("# EOF\n");
    out
}

fn render_one(st: &Status) -> String {
    let mut reg = Registry::with_prefix_and_labels(
        "cluster_agent",
        std::iter::once(("vhid".into(), st.vhid.to_string().into())),
    );
    let r = &mut reg;
    one_of(
        r,
        "state",
        "CARP state of this node (1 for the current one)",
        "state",
        &["MASTER", "BACKUP"],
        &st.state,
    );
    let c = &st.counters;
    counter(r, "adverts_sent", "Adverts sent", c.adverts_sent);
    counter(
        r,
        "adverts_received",
        "Authentic adverts received from peers",
        c.adverts_received,
    );
    counter(
        r,
        "auth_failures",
        "Adverts refused by the agent for a wrong HMAC (with XDP see xdp_packets{reason=\"auth_failed\"})",
        c.auth_failures,
    );
    counter(
        r,
        "replayed_adverts",
        "Authentic adverts refused as replays",
        c.replayed,
    );
    counter(
        r,
        "malformed_packets",
        "Malformed CARP packets",
        c.bad_packets,
    );
    counter(
        r,
        "advert_socket_drops",
        "Packets the advert socket dropped before the agent read them (a flood without XDP); meanwhile a backup does not count silence towards the master-down time",
        c.socket_drops,
    );
    counter(
        r,
        "arp_conflicts",
        "ARP claims on the VIP by another host while MASTER (split brain)",
        c.arp_conflicts,
    );
    counter(
        r,
        "held_connections_forwarded",
        "Connection requests held by a switchover and handed to the next master",
        c.held_forwarded,
    );
    let transitions = Family::<Labels, Counter>::default();
    for t in &st.transitions_by_reason {
        transitions
            .get_or_create(&vec![("to", t.to.clone()), ("reason", t.reason.clone())])
            .inc_by(t.count);
    }
    r.register(
        "transitions",
        "CARP state changes by state entered and reason",
        transitions,
    );
    let xdp = Family::<Labels, Counter>::default();
    for (reason, n) in &st.xdp_counters {
        xdp.get_or_create(&vec![("reason", reason.clone())])
            .inc_by(*n);
    }
    r.register(
        "xdp_packets",
        "Packets the XDP program handled, by verdict",
        xdp,
    );
    if let Some(ms) = st.since_last_advert_ms {
        seconds(
            r,
            "last_advert_age",
            "Time since the last authentic advert from the master",
            ms as f64 / 1000.0,
        );
    }
    let hooks = [("up", st.hooks.up), ("down", st.hooks.down)];
    let family = |f: fn(&HookCount) -> u64| {
        let fam = Family::<Labels, Counter>::default();
        for (name, h) in &hooks {
            fam.get_or_create(&vec![("hook", name.to_string())])
                .inc_by(f(h));
        }
        fam
    };
    r.register("hook_runs", "Up and down script runs", family(|h| h.runs));
    r.register(
        "hook_failures",
        "Script runs that failed or could not start",
        family(|h| h.failed),
    );
    r.register(
        "hook_timeouts",
        "Script runs killed at the timeout",
        family(|h| h.timed_out),
    );
    if !st.tracks.is_empty() {
        let passing = Family::<Labels, Gauge>::default();
        let failures = Family::<Labels, Counter>::default();
        for t in &st.tracks {
            let l = vec![("track", t.name.clone())];
            passing.get_or_create(&l).set(i64::from(t.passing));
            failures.get_or_create(&l).inc_by(t.failures);
        }
        r.register(
            "track_passing",
            "Whether a [[track]] service check passes",
            passing,
        );
        r.register(
            "track_probe_failures",
            "Failed probes of a [[track]] check",
            failures,
        );
    }
    if let Some(db) = &st.database {
        one_of(
            r,
            "database_role",
            "Role of the local database (1 for the current one)",
            "role",
            &["master", "replica", "fenced", "unknown"],
            &db.role,
        );
        gauge(
            r,
            "database_up",
            "Whether the local database answers",
            i64::from(db.local_down.is_none()),
        );
        gauge(
            r,
            "database_refused",
            "Whether this MASTER keeps its database closed (status says why)",
            i64::from(db.refused.is_some()),
        );
        gauge(
            r,
            "database_current",
            "Whether this node is known to hold every acknowledged write",
            i64::from(db.current),
        );
        counter(
            r,
            "promotions_refused",
            "Promotions refused (each new reason once)",
            db.refusals,
        );
        counter(
            r,
            "rejoins_refused",
            "Rejoins refused for errant transactions",
            db.rejoins_refused,
        );
        gauge(
            r,
            "errant_transactions",
            "Errant GTIDs blocking a rejoin",
            db.errant.len() as i64,
        );
        if let Some(lag) = db.lag_secs {
            seconds(
                r,
                "replication_lag",
                "How far the local replica applies behind",
                lag as f64,
            );
        }
        counter(
            r,
            "semi_sync_fallbacks",
            "Times the master's semi-sync fell back to asynchronous replication",
            db.semi_sync_fallbacks,
        );
        if let Some(semi) = &db.semi_sync {
            gauge(
                r,
                "semi_sync_on",
                "Whether the master waits for a replica's acknowledgement",
                i64::from(semi.on),
            );
            gauge(
                r,
                "semi_sync_replicas",
                "Semi-sync replicas connected to the master",
                i64::from(semi.clients),
            );
            counter(
                r,
                "semi_sync_unacknowledged_commits",
                "Commits the server acknowledged without a replica (since it started)",
                semi.no_tx,
            );
        }
    }
    if let Some(q) = &st.quorum {
        one_of(
            r,
            "quorum_lease",
            "The quorum lease as this node sees it (1 for the current state)",
            "state",
            &[
                "held",
                "lapsed",
                "held-by-other",
                "free",
                "unreachable",
                "unknown",
            ],
            &q.state,
        );
        if let Some(ms) = q.write_left_ms {
            seconds(
                r,
                "quorum_write_left",
                "How long the database may stay open without a renewal",
                ms as f64 / 1000.0,
            );
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Counters, TransitionCount};
    use crate::hooks::HookCounts;

    fn status() -> Status {
        serde_json::from_value(serde_json::json!({
            "state": "MASTER", "vhid": 10, "vip": "192.0.2.100/24", "interface": "eth0",
            "master": "192.0.2.11", "since_last_advert_ms": 1500, "advbase": 1, "advskew": 0,
            "demoted": false, "xdp": "native",
            "counters": Counters { adverts_sent: 7, auth_failures: 3, ..Counters::default() },
            "database": null, "vip_error": null, "xdp_error": null, "last_conflict_mac": null,
            "xdp_counters": { "auth_failed": 41, "passed": 9 },
        }))
        .unwrap()
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start} in\n{text}"))
    }

    #[test]
    fn a_snapshot_becomes_prefixed_counters_and_one_hot_gauges_per_vhid() {
        let mut st = status();
        st.transitions_by_reason = vec![TransitionCount {
            to: "MASTER".into(),
            reason: "master_down".into(),
            count: 2,
        }];
        st.hooks = HookCounts {
            up: HookCount {
                runs: 2,
                failed: 1,
                timed_out: 1,
            },
            ..HookCounts::default()
        };
        let text = render(&st);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            line(&text, "cluster_agent_adverts_sent_total"),
            "cluster_agent_adverts_sent_total{vhid=\"10\"} 7"
        );
        assert_eq!(
            line(&text, "cluster_agent_auth_failures_total"),
            "cluster_agent_auth_failures_total{vhid=\"10\"} 3"
        );
        assert_eq!(
            line(&text, "cluster_agent_state{vhid=\"10\",state=\"MASTER\"}"),
            "cluster_agent_state{vhid=\"10\",state=\"MASTER\"} 1"
        );
        assert!(text.contains("cluster_agent_state{vhid=\"10\",state=\"BACKUP\"} 0"));
        assert!(text.contains(
            "cluster_agent_transitions_total{vhid=\"10\",to=\"MASTER\",reason=\"master_down\"} 2"
        ));
        assert!(
            text.contains("cluster_agent_xdp_packets_total{vhid=\"10\",reason=\"auth_failed\"} 41")
        );
        assert!(text.contains("cluster_agent_last_advert_age_seconds{vhid=\"10\"} 1.5"));
        assert!(text.contains("cluster_agent_hook_timeouts_total{vhid=\"10\",hook=\"up\"} 1"));
        assert!(text.contains("# TYPE cluster_agent_adverts_sent counter"));
        assert!(text.contains("# UNIT cluster_agent_last_advert_age_seconds seconds"));
        // No database, no quorum: none of their metrics.
        assert!(!text.contains("database_role") && !text.contains("quorum"));
    }

    #[test]
    fn several_vhids_share_each_family_once() {
        let mut st = status();
        let mut other = status();
        other.vhid = 11;
        other.state = "BACKUP".into();
        st.other_vhids = vec![other];
        let text = render(&st);
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            text.matches("# TYPE cluster_agent_adverts_sent counter")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains("cluster_agent_state{vhid=\"10\",state=\"MASTER\"} 1"));
        assert!(text.contains("cluster_agent_state{vhid=\"11\",state=\"MASTER\"} 0"));
        assert!(text.contains("cluster_agent_state{vhid=\"11\",state=\"BACKUP\"} 1"));
        // Every sample follows its own family's header.
        let family = |sample: &str| {
            let header = text[..text.find(sample).unwrap()].rfind("# HELP ").unwrap();
            text[header + 7..].split(' ').next().unwrap().to_string()
        };
        assert_eq!(
            family("cluster_agent_adverts_sent_total{vhid=\"11\"}"),
            "cluster_agent_adverts_sent"
        );
        assert_eq!(
            family("cluster_agent_state{vhid=\"11\",state=\"BACKUP\"}"),
            "cluster_agent_state"
        );
    }
}
