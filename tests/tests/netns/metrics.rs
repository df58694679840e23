//! Prometheus metrics during a failover: scraped from each agent's `--metrics` endpoint in its
//! node's namespace, they follow what happened (state, transitions by reason, adverts, the
//! database's role and semi-sync).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use tests::scrape::{samples, scrape};
use tests::{Cluster, ClusterConfig, Rank, netns_test, wait_for};

const METRICS: &str = "127.0.0.1:9687";
const START: Duration = Duration::from_secs(30);
const FAILOVER: Duration = Duration::from_secs(20);
/// node0 preferred (156 ms adverts), node1 behind it.
const SKEW: [u8; 2] = [40, 80];

fn metrics(c: &Cluster, i: usize) -> Result<std::collections::BTreeMap<String, f64>> {
    let addr: SocketAddr = METRICS.parse()?;
    Ok(samples(&scrape(c.rig.ns(i), addr)?))
}

fn value(m: &std::collections::BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(f64::NAN)
}

#[test]
fn metrics_follow_a_failover() -> Result<()> {
    netns_test(|| {
        let mut config = ClusterConfig::new(2);
        config.agent_args = vec!["--metrics".into(), METRICS.into()];
        let vhid = config.vhid;
        let mut c = Cluster::start(config)?;
        c.bring_up(&[Rank::from(SKEW[0]), Rank::from(SKEW[1])], START)?;
        let l = |s: &str| format!("{{vhid=\"{vhid}\"{s}}}");
        let name = |n: &str, s: &str| format!("cluster_agent_{n}{}", l(s));

        // node1 is a replica of node0, and says so. Replication starts after the election:
        // wait for it.
        let before = wait_for(START, "node1's metrics show a semi-sync replica", || {
            let m = metrics(&c, 1)?;
            Ok((value(&m, &name("database_role", ",role=\"replica\"")) == 1.0).then_some(m))
        })?;
        assert_eq!(value(&before, &name("state", ",state=\"BACKUP\"")), 1.0);
        assert_eq!(value(&before, &name("state", ",state=\"MASTER\"")), 0.0);
        assert!(value(&before, &name("adverts_received_total", "")) > 0.0);
        assert_eq!(value(&before, &name("database_up", "")), 1.0);
        let master = metrics(&c, 0)?;
        assert_eq!(value(&master, &name("state", ",state=\"MASTER\"")), 1.0);
        assert_eq!(
            value(&master, &name("database_role", ",role=\"master\"")),
            1.0
        );
        assert_eq!(value(&master, &name("semi_sync_on", "")), 1.0, "{master:?}");
        assert_eq!(value(&master, &name("semi_sync_replicas", "")), 1.0);

        c.power_cut(0)?;
        let after = wait_for(
            FAILOVER,
            "node1's metrics show it MASTER and writable",
            || {
                let m = metrics(&c, 1)?;
                Ok((value(&m, &name("state", ",state=\"MASTER\"")) == 1.0
                    && value(&m, &name("database_role", ",role=\"master\"")) == 1.0)
                    .then_some(m))
            },
        )?;
        let took_over = name("transitions_total", ",to=\"MASTER\",reason=\"master_down\"");
        assert_eq!(value(&after, &took_over), 1.0, "{after:?}");
        assert!(
            value(&after, &name("adverts_sent_total", ""))
                > value(&before, &name("adverts_sent_total", "")),
            "no advert counted as sent after the takeover"
        );
        assert_eq!(value(&after, &name("database_refused", "")), 0.0);
        // Alone, its semi-sync has no replica (sampled a moment after it opened).
        wait_for(
            FAILOVER,
            "node1's metrics show its semi-sync without a replica",
            || {
                let m = metrics(&c, 1)?;
                Ok((value(&m, &name("semi_sync_replicas", "")) == 0.0).then_some(()))
            },
        )?;
        Ok(())
    })
}
