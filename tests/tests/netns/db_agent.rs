//! The database follows the VIP, end to end: real agents electing with CARP (fast mode) in
//! network namespaces, each node with its own MariaDB (TLS required, set up by
//! `cluster-agent db bootstrap`), and an application in a client namespace that reaches the
//! database only through the VIP.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tests::mariadb::{self, APP_PASSWORD, APP_USER};
use tests::{Cluster, ClusterConfig, Rank, hold_for, netns_test, wait_timed, wait_until};

/// First election, promotion and replication set-up of a fresh cluster.
const START: Duration = Duration::from_secs(30);
/// A failover: detection (under a second in fast mode), promotion, the VIP.
const FAILOVER: Duration = Duration::from_secs(20);
/// Replication delivers within milliseconds; this only bounds a broken run.
const REPLICATE: Duration = Duration::from_secs(20);
/// Advert skews: node0 is preferred, then node1, then node2 (intervals 156, 312, 469 ms).
const SKEW: [u8; 3] = [40, 80, 120];

/// Sets the flag when dropped, so a helper thread ends however its scope is left.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn range(a: i64, b: i64) -> Vec<i64> {
    (a..=b).collect()
}

/// node0 master, the other `n - 1` nodes replicating from it (semi-sync), no preemption.
fn cluster(n: usize) -> Result<Cluster> {
    let mut c = Cluster::start(ClusterConfig::new(n))?;
    let t0 = Instant::now();
    let ranks: Vec<Rank> = SKEW[..n].iter().map(|&s| Rank::from(s)).collect();
    c.bring_up(&ranks, START)?;
    let served_by = c
        .vip()?
        .sql("SELECT @@server_id", Duration::from_secs(10))
        .context("the application cannot reach the database through the VIP")?;
    assert_eq!(
        served_by.trim(),
        "1",
        "the VIP does not lead to node0's server"
    );
    eprintln!("cluster of {n} agents settled in {:?}", t0.elapsed());
    Ok(c)
}

fn wait_ids(c: &Cluster, i: usize, want: &[i64]) -> Result<Duration> {
    wait_until(REPLICATE, &format!("node{i} holds ids {want:?}"), || {
        Ok(c.ids(i)? == want)
    })
}

/// Test 2. A client commits numbered rows through the VIP; the master loses power mid-stream;
/// the backup's agent becomes MASTER with its database promoted, holds every row the client
/// saw acknowledged, and writes through the VIP resume.
#[test]
fn failover_under_write_load_keeps_every_acknowledged_row() -> Result<()> {
    netns_test(|| {
        let mut c = cluster(2)?;
        let vip = c.vip()?;
        let acked = Mutex::new(Vec::<(i64, Instant)>::new());
        let attempted = AtomicI64::new(0);
        let stop = AtomicBool::new(false);
        let last_error = Mutex::new(String::new());
        let (t_fail, t_master) = std::thread::scope(|s| {
            // The writer stops when the scenario ends, also when a wait below fails.
            let _stop = StopOnDrop(&stop);
            let writer = s.spawn(|| {
                // Bounded: the scenario ends long before this many rows.
                for id in 1..=100_000i64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    attempted.store(id, Ordering::SeqCst);
                    // A write whose answer does not come within the limit is not acknowledged.
                    match vip.insert(id, Duration::from_secs(2)) {
                        Ok(()) => acked.lock().unwrap().push((id, Instant::now())),
                        Err(e) => *last_error.lock().unwrap() = format!("{e:#}"),
                    }
                }
            });
            let acks = || acked.lock().unwrap().len();
            wait_until(REPLICATE, "40 rows acknowledged through the VIP", || {
                let e = last_error.lock().unwrap();
                assert!(e.is_empty(), "a write failed before the power failure: {e}");
                acks() >= 40
            })?;
            let t_fail = Instant::now();
            c.power_cut(0)?;
            let took = c.wait_sole_master(1, FAILOVER)?;
            let t_master = Instant::now();
            eprintln!("node1 is the sole master {took:?} after the power failure");
            let before = acks();
            wait_until(FAILOVER, "20 more rows acknowledged", || {
                acks() >= before + 20 || writer.is_finished()
            })?;
            Ok::<_, anyhow::Error>((t_fail, t_master))
        })?;
        let acked = acked.into_inner().unwrap();
        let attempted = attempted.into_inner();
        let last_before = acked.iter().rfind(|(_, t)| *t < t_fail).map(|a| a.0);
        let first_after = acked.iter().find(|(_, t)| *t > t_fail);
        eprintln!(
            "{} rows acknowledged of {attempted} attempted; last before the failure {last_before:?}, \
         first after: {:?} at +{:?} ({:?} after node1 was seen as master)",
            acked.len(),
            first_after.map(|a| a.0),
            first_after.map(|a| a.1 - t_fail),
            first_after.map(|a| a.1.saturating_duration_since(t_master)),
        );
        assert!(
            acked.iter().any(|(_, t)| *t > t_master),
            "no write acknowledged through the VIP after the failover"
        );

        let st = c.status(1)?;
        assert!(st.is_master() && st.db_role() == "master", "{st:?}");
        assert_eq!(
            c.server(1).scalar("SELECT @@read_only")?.as_deref(),
            Some("0")
        );
        assert!(
            c.server(1).slave_status()?.is_empty(),
            "the promoted server still has a replication configuration"
        );
        let on_new = c.ids(1)?;
        let missing: Vec<i64> = acked
            .iter()
            .map(|a| a.0)
            .filter(|id| on_new.binary_search(id).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged rows lost in the failover: {missing:?}"
        );
        assert!(
            on_new.iter().all(|id| (1..=attempted).contains(id)),
            "rows nobody wrote: {on_new:?}"
        );
        Ok(())
    })
}

/// Test 3. After a failover the old master returns (server restarted on its data, agent
/// started): it is fenced, replicates from the new master over verified TLS, catches up and
/// holds exactly the same rows; it does not take the VIP back.
#[test]
fn returning_master_is_fenced_and_rejoins_as_a_replica() -> Result<()> {
    netns_test(|| {
        let mut c = cluster(2)?;
        let vip = c.vip()?;
        vip.insert_all(1..=10)?;
        wait_ids(&c, 1, &range(1, 10))?;
        c.power_cut(0)?;
        c.wait_sole_master(1, FAILOVER)?;
        vip.insert_all(11..=20)?;

        c.power_on(0)?;
        // Fenced before the agent runs: bootstrap's settings start the server read-only.
        assert_eq!(
            c.server(0).scalar("SELECT @@read_only")?.as_deref(),
            Some("1")
        );
        let t0 = Instant::now();
        let o = c.agent_opts(0, SKEW[0]);
        c.start_agent(0, &o)?;
        let took = c.wait_replica_of(0, 1, START)?;
        eprintln!("the old master replicates from the new one {took:?} after its agent started");
        let t = wait_ids(&c, 0, &range(1, 20))?;
        eprintln!(
            "caught up {:?} after its agent started",
            t0.elapsed().max(t)
        );
        vip.insert_all(21..=30)?;
        wait_ids(&c, 0, &range(1, 30))?;
        assert_eq!(c.ids(0)?, c.ids(1)?);
        let gtid = |i: usize| c.server(i).scalar("SELECT @@gtid_current_pos");
        wait_until(REPLICATE, "both servers at the same GTID position", || {
            Ok(gtid(0)? == gtid(1)?)
        })?;

        let st = c.status(0)?;
        assert!(!st.is_master(), "{st:?}");
        let db = st.database.expect("database status");
        assert_eq!(db.role, "replica");
        assert!(db.errant.is_empty() && db.gate.is_none(), "{db:?}");
        // The application cannot write on the replica.
        let mut local = c.server(0).client(Some(APP_USER))?;
        local.env("MYSQL_PWD", APP_PASSWORD);
        let err = mariadb::run_client(local, "INSERT INTO t.rows VALUES (1000, 'x')")
            .expect_err("a write on the fenced old master succeeded")
            .to_string();
        assert!(err.contains("read-only"), "unexpected error: {err}");
        hold_for(
            Duration::from_secs(2),
            "node1 stays the sole master after node0's return",
            || c.is_sole_master(1),
        )?;
        Ok(())
    })
}

/// Test 6. The master's database dies (its server killed, the agent alive): the agent hands
/// over, the replica's agent takes the VIP with its database promoted and every row present;
/// when the server is back the old master rejoins as a replica.
#[test]
fn database_down_on_the_master_hands_over() -> Result<()> {
    netns_test(|| {
        let mut c = cluster(2)?;
        let vip = c.vip()?;
        vip.insert_all(1..=10)?;
        wait_ids(&c, 1, &range(1, 10))?;

        let t0 = Instant::now();
        c.server_mut(0).kill();
        let took = c.wait_sole_master(1, FAILOVER)?;
        eprintln!("node1 is the sole master {took:?} after node0's database died");
        assert!(t0.elapsed() < FAILOVER);
        let st = c.status(0)?;
        assert!(!st.is_master() && st.demoted, "{st:?}");
        let db = st.database.clone().expect("database status");
        assert!(db.gate.is_some(), "no reason for the demotion: {st:?}");
        assert_eq!(c.ids(1)?, range(1, 10));
        vip.insert_all(11..=15)?;
        assert!(
            c.agent_log(0)?.contains("database down on the MASTER"),
            "the agent did not say why it handed over"
        );

        // Its server back, node0 rejoins as a replica and stays one.
        c.server_mut(0).restart()?;
        c.wait_replica_of(0, 1, START)?;
        wait_ids(&c, 0, &range(1, 15))?;
        wait_until(REPLICATE, "node0's gate opens again", || {
            c.status(0).is_ok_and(|s| !s.demoted)
        })?;
        assert!(c.is_sole_master(1));
        Ok(())
    })
}

/// A switchover while the master's own server is stalled (SIGSTOP: every statement hangs, as
/// on a server stuck on its disk): the old master waits for its fence no longer than the
/// hand-over's bound (250 ms, far under the fence's own 5 s) and bows out, so the replica
/// takes the VIP at once; it does not open while the stalled server may resume writable.
/// Once that server resumes, the fence still pending lands, the new master opens with every
/// row, and the old one rejoins as its replica.
#[test]
fn a_switchover_with_a_stalled_server_does_not_wait_for_its_fence() -> Result<()> {
    netns_test(|| {
        let mut c = cluster(2)?;
        let vip = c.vip()?;
        vip.insert_all(1..=10)?;
        wait_ids(&c, 1, &range(1, 10))?;
        c.wait_replica_of(1, 0, START)?;

        c.server_mut(0).stall()?;
        let t0 = Instant::now();
        c.agent(0)?
            .switchover(Duration::from_secs(10))?
            .map_err(|why| anyhow::anyhow!(why))?;
        // Between the hand-over's bound on the fence and the fence's own (5 s), which the
        // agent's look at its own server shares: only the first lets node1 in this soon.
        wait_until(Duration::from_secs(3), "node1 holds the VIP", || {
            Ok(c.holders()? == vec![1] && c.status(1)?.is_master())
        })?;
        eprintln!("node1 holds the VIP {:?} after the request", t0.elapsed());
        assert!(
            c.agent_log(0)?
                .contains("has not confirmed its fence in time"),
            "node0 did not say why it bowed out unfenced"
        );
        assert_eq!(
            c.server(1).scalar("SELECT @@read_only")?.as_deref(),
            Some("1"),
            "node1 opened while node0's server, unfenced, may resume writable"
        );

        c.server_mut(0).resume()?;
        wait_until(
            FAILOVER,
            "node1 the sole master",
            || Ok(c.is_sole_master(1)),
        )?;
        assert_eq!(
            c.server(0).scalar("SELECT @@read_only")?.as_deref(),
            Some("1"),
            "node0 writable beside the new master"
        );
        assert_eq!(c.ids(1)?, range(1, 10));
        vip.insert_all(11..=15)?;
        c.wait_replica_of(0, 1, START)?;
        wait_ids(&c, 0, &range(1, 15))?;
        Ok(())
    })
}

/// Test 4. The master is cut off (its switch port detached) while an application on the
/// same node keeps writing to it; the backup takes over and takes writes through the VIP. On
/// return each side holds acknowledged writes the other lacks: each stops taking writes when
/// it sees the other's history, and the one the election keeps as MASTER refuses as
/// diverged, naming both sides. Nobody writes until an operator keeps one history (here
/// node1's: node0 is rebuilt from it, as the README tells), then node1 opens again.
#[test]
fn diverged_histories_after_a_partition_stop_every_writer() -> Result<()> {
    netns_test(|| {
        // node1 is the preferred node but starts second, without preemption: node0 is master
        // first, and on return it defers to node1.
        let mut c = Cluster::start(ClusterConfig::new(2))?;
        c.bring_up(&[SKEW[1].into(), SKEW[0].into()], START)?;
        let vip = c.vip()?;
        vip.insert_all(1..=5)?;
        wait_ids(&c, 1, &range(1, 5))?;
        let gtid_before = c.server(0).scalar("SELECT @@gtid_binlog_pos")?;

        c.rig.partition(0)?;
        wait_until(FAILOVER, "node1 takes over during the partition", || {
            c.status(1)
                .is_ok_and(|s| s.is_master() && s.db_role() == "master")
        })?;
        // Both sides are master now; node0 alone does not know.
        assert!(c.status(0)?.is_master());
        // An application on node0 writes there (the first commit waits out the semi-sync timeout).
        for id in [100, 101] {
            let mut local = c.server(0).client(Some(APP_USER))?;
            local.env("MYSQL_PWD", APP_PASSWORD);
            mariadb::run_client(
                local,
                &format!("INSERT INTO t.rows VALUES ({id}, 'cut off')"),
            )
            .with_context(|| format!("local write {id} on the cut-off master"))?;
        }
        let gtid_errant = c.server(0).scalar("SELECT @@gtid_binlog_pos")?;
        eprintln!("node0 binlog moved from {gtid_before:?} to {gtid_errant:?} while cut off");
        vip.insert_all(6..=10)?;

        c.rig.heal(0)?;
        // Both sides refuse and advertise the demoted skew, so which one stays MASTER is
        // the election's tie-break; either way it refuses as diverged.
        let ((m, st), took) = wait_timed(FAILOVER, "the master refuses as diverged", || {
            (0..2).find_map(|i| {
                c.status(i)
                    .ok()
                    .filter(|s| {
                        s.is_master()
                            && s.database
                                .as_ref()
                                .and_then(|d| d.refused.as_deref())
                                .is_some_and(|r| r.starts_with("diverged"))
                    })
                    .map(|s| (i, s))
            })
        })?;
        eprintln!("node{m} refused {took:?} after the heal: {st:?}");
        // node0 is server 1; as master it logged rows 1-5 as 0-1-1..5, then the two cut-off
        // writes as 0-1-6 and 0-1-7.
        let refused = st
            .database
            .as_ref()
            .and_then(|d| d.refused.clone())
            .unwrap();
        assert!(
            refused.contains("0-1-6..7") && refused.contains("0-2-"),
            "the refusal does not name both sides: {refused}"
        );
        let log = c.agent_log(m)?;
        assert!(
            log.lines()
                .any(|l| l.contains("diverged") && l.contains("0-1-6..7")),
            "the agent's log does not name the diverged GTIDs"
        );
        // It stays that way: nobody writable, both histories untouched.
        hold_for(
            Duration::from_secs(3),
            "both databases stay read-only, the backup fenced",
            || {
                c.status(1 - m)
                    .is_ok_and(|s| !s.is_master() && s.db_role() == "fenced")
                    && (0..2).all(|i| {
                        c.server(i)
                            .scalar("SELECT @@read_only")
                            .is_ok_and(|v| v.as_deref() == Some("1"))
                    })
            },
        )?;
        let mut want0 = range(1, 5);
        want0.extend([100, 101]);
        assert_eq!(c.ids(0)?, want0);
        assert_eq!(c.ids(1)?, range(1, 10));

        // The operator keeps node1's history: node0 is rebuilt from it.
        c.stop_daemon(0, Duration::from_secs(15))?;
        c.rebuild_from(0, 1)?;
        c.start_daemon(0, SKEW[1])?;
        c.wait_sole_master(1, FAILOVER)?;
        c.wait_replica_of(0, 1, REPLICATE)?;
        vip.insert_all(11..=12)?;
        wait_ids(&c, 0, &range(1, 12))?;
        // The rebuilt node's log names everything it holds, so it can be promoted later.
        let state = |i: usize| c.server(i).scalar("SELECT @@gtid_binlog_state");
        wait_until(REPLICATE, "node0's binary log state is node1's", || {
            Ok(state(0)? == state(1)?)
        })?;
        Ok(())
    })
}

/// Test 5. Three nodes; the preferred replica stops applying (its SQL thread stopped) while
/// the master goes on writing. Its agent advertises the demoted skew, so when the master
/// loses power the healthy, less preferred replica takes the VIP.
#[test]
fn a_replica_that_stopped_applying_does_not_take_the_vip() -> Result<()> {
    netns_test(|| {
        let mut c = cluster(3)?;
        let vip = c.vip()?;
        vip.insert_all(1..=5)?;
        wait_ids(&c, 1, &range(1, 5))?;
        wait_ids(&c, 2, &range(1, 5))?;

        c.server(1).sql("STOP SLAVE SQL_THREAD")?;
        vip.insert_all(6..=10)?;
        wait_ids(&c, 2, &range(1, 10))?;
        let (st, took) = wait_timed(REPLICATE, "node1 advertises the demoted skew", || {
            c.status(1).ok().filter(|s| s.demoted && s.advskew == 240)
        })?;
        eprintln!("node1 demoted {took:?} after its SQL thread stopped: {st:?}");
        assert!(
            st.database.as_ref().is_some_and(|d| d.gate.is_some()),
            "{st:?}"
        );
        assert_eq!(c.ids(1)?, range(1, 5), "the stopped replica applied rows");
        assert!(c.status(2).is_ok_and(|s| !s.demoted));

        c.power_cut(0)?;
        let took = c.wait_sole_master(2, FAILOVER)?;
        eprintln!("node2 (healthy) is the sole master {took:?} after the power failure");
        assert!(!c.status(1)?.is_master());
        assert_eq!(c.ids(2)?, range(1, 10));
        vip.insert_all(11..=12)?;
        // node1 follows the new master (which restarts its replication) and catches up; without
        // preemption it stays a replica.
        c.wait_replica_of(1, 2, START)?;
        wait_ids(&c, 1, &range(1, 12))?;
        assert!(c.is_sole_master(2));
        Ok(())
    })
}

/// What needs the XDP data plane: without it a switchover cannot hold connection requests
/// off and hand them on (the `--xdp off` pass skips these).
mod xdp {
    use super::*;

    /// One write of the application in [`planned_switchovers_under_write_load_fail_no_request`].
    struct Attempt {
        id: i64,
        start: Instant,
        end: Instant,
        /// `server_id` of the server that acknowledged it, or why it failed.
        result: Result<u32, String>,
    }

    /// Pauses between the planned switchovers, back and forth: some shorter than the client's
    /// neighbour lock time (1 s: a second gratuitous ARP within it is ignored), some longer.
    const SWITCHOVER_PAUSES: [Duration; 4] = [
        Duration::from_millis(1500),
        Duration::from_millis(200),
        Duration::from_millis(600),
        Duration::from_millis(100),
    ];

    /// Test 7. Planned switchovers under write load, back and forth: the application opens a
    /// fresh connection for every row with a 1 s connect timeout and no retry of its own, and
    /// no write fails: none reaches a read-only server or is cut off by the hand-over, and no
    /// connection request waits for the kernel's retransmission (a second, here the connect
    /// timeout): those held during the hand-over go to the next master as soon as it announces
    /// the VIP. Every acknowledged row is on the last master.
    #[test]
    fn planned_switchovers_under_write_load_fail_no_request() -> Result<()> {
        netns_test(|| {
            let c = cluster(2)?;
            let vip = c.vip()?;
            let attempts = Mutex::new(Vec::<Attempt>::new());
            let stop = AtomicBool::new(false);
            let acked_by = |server: u32, since: Instant| {
                attempts
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.end > since && a.result.as_ref().is_ok_and(|s| *s == server))
                    .count()
            };
            let mut switched = Vec::new();
            std::thread::scope(|s| {
                let _stop = StopOnDrop(&stop);
                s.spawn(|| {
                    // Bounded: the scenario ends long before this many rows.
                    for id in 1..=100_000i64 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let start = Instant::now();
                        let result = vip
                            .insert_where(id, Duration::from_secs(3))
                            .map_err(|e| format!("{e:#}"));
                        attempts.lock().unwrap().push(Attempt {
                            id,
                            start,
                            end: Instant::now(),
                            result,
                        });
                    }
                });
                let t0 = Instant::now();
                wait_until(REPLICATE, "20 rows acknowledged by node0", || {
                    acked_by(1, t0) >= 20
                })?;
                for (k, pause) in SWITCHOVER_PAUSES.iter().enumerate() {
                    let (from, to) = (k % 2, 1 - k % 2);
                    // The successor must be a current replica, trusted to hold every write.
                    c.wait_replica_of(to, from, START)?;
                    wait_until(REPLICATE, &format!("node{to} not demoted"), || {
                        c.status(to).is_ok_and(|s| !s.demoted)
                    })?;
                    let t = Instant::now();
                    c.agent(from)?
                        .switchover(Duration::from_secs(10))?
                        .map_err(|why| anyhow::anyhow!(why))?;
                    c.wait_sole_master(to, FAILOVER)?;
                    wait_until(
                        FAILOVER,
                        &format!("5 rows acknowledged by node{to}"),
                        || acked_by(to as u32 + 1, t) >= 5,
                    )?;
                    switched.push((from, to, t));
                    eprintln!("switchover {k}: node{from} -> node{to}");
                    hold_for(*pause, &format!("node{to} stays the sole master"), || {
                        c.is_sole_master(to)
                    })?;
                }
                Ok::<_, anyhow::Error>(())
            })?;
            let attempts = attempts.into_inner().unwrap();
            for (from, to, t) in &switched {
                let by = |a: &Attempt, node: usize| {
                    a.result.as_ref().is_ok_and(|s| *s == node as u32 + 1)
                };
                let first_new = attempts
                    .iter()
                    .find(|a| a.end > *t && by(a, *to))
                    .map(|a| a.end);
                let last_old = attempts
                    .iter()
                    .filter(|a| first_new.is_some_and(|f| a.end < f) && by(a, *from))
                    .map(|a| a.end)
                    .max();
                eprintln!(
                    "node{from} -> node{to}: from the last write acknowledged by node{from} to the \
                     first by node{to}: {:?}",
                    last_old.zip(first_new).map(|(a, b)| b - a),
                );
            }
            let slowest = attempts
                .iter()
                .map(|a| (a.end - a.start, a.id))
                .max()
                .context("no write attempted")?;
            eprintln!(
                "{} writes; the slowest took {:?} (id {})",
                attempts.len(),
                slowest.0,
                slowest.1
            );
            let failed: Vec<(i64, &String)> = attempts
                .iter()
                .filter_map(|a| a.result.as_ref().err().map(|e| (a.id, e)))
                .collect();
            assert!(
                failed.is_empty(),
                "{} of {} writes failed across the switchovers, e.g. {:?}",
                failed.len(),
                attempts.len(),
                &failed[..failed.len().min(5)]
            );
            let last = switched.last().map_or(0, |s| s.1);
            let on_last = c.ids(last)?;
            let lost: Vec<i64> = attempts
                .iter()
                .filter(|a| a.result.is_ok() && on_last.binary_search(&a.id).is_err())
                .map(|a| a.id)
                .collect();
            assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
            // A request that had to wait for its client's own retransmission took a second.
            assert!(
                slowest.0 < Duration::from_millis(900),
                "write {} took {:?}: its connection request was not handed on",
                slowest.1,
                slowest.0
            );
            Ok(())
        })
    }
}
