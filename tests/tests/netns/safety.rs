//! Safety under faults, end to end: real agents (fast mode) with real MariaDB servers in
//! network namespaces, a writer that commits numbered rows through the VIP and records which
//! were acknowledged, and a watch on every server's `read_only`. Every test injects its fault
//! for real (power cut, stall, graceful stop) and then checks the invariants: no acknowledged
//! write missing on the master (I1), never two writable servers (I2), and that what was
//! refused was said (I4).

use std::time::Duration;

use anyhow::{Result, ensure};
use tests::mariadb::{MariaDb, VipClient};
use tests::watch::{Timeline, WritableWatch, Writer, Writes, sockets};
use tests::{Cluster, ClusterConfig, Rank, Status, hold_for, netns_test, wait_for, wait_until};

/// First election, promotion and replication of a fresh cluster.
const START: Duration = Duration::from_secs(30);
/// A failover: detection (well under a second in fast mode), prepare, promotion, the VIP.
const FAILOVER: Duration = Duration::from_secs(20);
/// A node's return: crash recovery, its agent's start, catching up, a preemption.
const RETURN: Duration = Duration::from_secs(60);
/// How long one insert through the VIP may take before it counts as unanswered.
const INSERT_LIMIT: Duration = Duration::from_secs(2);
/// Pause between two inserts, and between two looks at a server's `read_only`.
const GAP: Duration = Duration::from_millis(5);
/// `db bootstrap`'s semi-sync timeout: a stalled replica is given up after it.
const SEMI_SYNC_TIMEOUT: Duration = Duration::from_secs(3);

const PREFERRED: Rank = Rank {
    advskew: 10,
    priority: 200,
    preempt: true,
};

/// A cluster of `n` with node0 master, the writer and the watch running.
fn running(n: usize, ranks: &[Rank], extra_sql: &str) -> Result<(Cluster, Writer, WritableWatch)> {
    let mut cfg = ClusterConfig::new(n);
    cfg.extra_sql = extra_sql.to_string();
    let mut c = Cluster::start(cfg)?;
    c.bring_up(ranks, START)?;
    let servers: Vec<&MariaDb> = (0..n).map(|i| c.server(i)).collect();
    let watch = WritableWatch::start(sockets(&servers))?;
    let writer = Writer::start(c.vip()?, 1, GAP, INSERT_LIMIT);
    Ok((c, writer, watch))
}

/// Two nodes brought up with `ranks`, node0 master, rows 1 to 5 written through the VIP.
fn two_nodes_with_rows(ranks: &[Rank; 2]) -> Result<(Cluster, VipClient)> {
    let mut c = Cluster::start(ClusterConfig::new(2))?;
    c.bring_up(ranks, START)?;
    let vip = c.vip()?;
    vip.insert_all(1..=5)?;
    Ok((c, vip))
}

/// Waits for one of two nodes to be the sole master with the other its replica; returns it.
fn master_and_replica(c: &Cluster) -> Result<usize> {
    wait_for(RETURN, "one master, the other its replica", || {
        [(0, 1), (1, 0)]
            .into_iter()
            .find(|&(m, r)| c.is_sole_master(m) && c.is_replica_of(r, m))
            .map(|p| p.0)
    })
}

fn more_acks(w: &Writer, n: usize) -> Result<()> {
    let before = w.acked();
    wait_until(FAILOVER, &format!("{n} more writes acknowledged"), || {
        w.acked() >= before + n
    })?;
    Ok(())
}

fn status(c: &Cluster, i: usize) -> Option<Status> {
    c.status(i).ok()
}

fn read_only(c: &Cluster, i: usize) -> Result<bool> {
    Ok(c.server(i).scalar("SELECT @@read_only")?.as_deref() == Some("1"))
}

/// I1 on `master` and I2 over the whole run (nothing excused: partitions included).
pub(crate) fn check_invariants(
    c: &Cluster,
    master: usize,
    writes: &Writes,
    timeline: &Timeline,
) -> Result<()> {
    let held = c.ids(master)?;
    let missing = writes.missing_from(&held);
    eprintln!(
        "{} writes acknowledged, {} failed; {} rows on node{master}; read_only samples {:?}",
        writes.acked.len(),
        writes.failed,
        held.len(),
        timeline.counts()
    );
    ensure!(
        missing.is_empty(),
        "I1: {} acknowledged write(s) missing on node{master}, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let (both, unsure): (Vec<_>, Vec<_>) = timeline
        .two_writers(&[])
        .into_iter()
        .partition(|w| w.certain);
    if !unsure.is_empty() {
        eprintln!(
            "{} stretch(es) within the spacing of the looks at read_only (not two writers): {unsure:?}",
            unsure.len()
        );
    }
    ensure!(
        both.is_empty(),
        "I2: two writable servers {} time(s), first {:?}",
        both.len(),
        both.first()
    );
    ensure!(
        timeline.counts().iter().all(|n| *n > 20),
        "too few samples of read_only: {:?}",
        timeline.counts()
    );
    Ok(())
}

/// Item 1. The preferred node (skew 10, preempt) loses power; node1 takes over and takes
/// writes; the preferred node comes back (crash recovery, agent restarted). It must not open
/// until it holds everything node1 acknowledged: it follows node1, catches up, and only then
/// preempts, and node1 is fenced before it opens.
#[test]
fn a_returning_preferred_master_waits_for_the_data() -> Result<()> {
    netns_test(|| {
        let ranks = [PREFERRED, Rank::from(100)];
        let (mut c, writer, watch) = running(2, &ranks, "")?;
        more_acks(&writer, 30)?;
        c.power_cut(0)?;
        c.wait_sole_master(1, FAILOVER)?;
        more_acks(&writer, 30)?;

        c.power_on(0)?;
        c.start_daemon(0, ranks[0])?;
        let (_, took) = tests::wait_timed(RETURN, "node0 the sole master again", || {
            c.is_sole_master(0)
        })?;
        eprintln!("node0 is the sole master again {took:?} after its return");
        // It became current as node1's replica before it preempted, and it opened only after
        // fencing node1 and catching up (its log says so in this order).
        let log = c.agent_log(0)?;
        let pos = |what: &str| log.rfind(what);
        let (replicating, preempted, opened) = (
            pos("database replicating from the master over verified TLS master=10.99.0.2"),
            pos("state=MASTER reason=Preempt"),
            pos("database open for writes"),
        );
        ensure!(
            replicating.is_some()
                && preempted.is_some()
                && opened.is_some()
                && replicating < preempted
                && preempted < opened,
            "node0 did not replicate, preempt and open in that order:\n{log}"
        );
        more_acks(&writer, 20)?;
        c.wait_replica_of(1, 0, FAILOVER)?;
        let (writes, timeline) = (writer.stop(), watch.stop());
        check_invariants(&c, 0, &writes, &timeline)
    })
}

/// Item 3. The replica's server stalls past the semi-sync timeout while writes go on: the
/// master goes on alone and says so. Then the master loses power and the replica resumes: it
/// wins the election but must refuse to open (it lacks writes the master acknowledged alone),
/// and say why. When the old master returns, the cluster opens again with every write.
#[test]
fn a_stale_replica_is_not_promoted_after_a_semi_sync_fallback() -> Result<()> {
    netns_test(|| {
        let ranks = [Rank::from(10), Rank::from(100)];
        let (mut c, writer, watch) = running(2, &ranks, "")?;
        more_acks(&writer, 30)?;
        c.server_mut(1).stall()?;
        let st = wait_for(
            SEMI_SYNC_TIMEOUT * 4,
            "node0 reports the fall-back to asynchronous replication",
            || {
                status(&c, 0).filter(|s| {
                    s.database
                        .as_ref()
                        .is_some_and(|d| d.semi_sync_fallbacks >= 1)
                })
            },
        )?;
        eprintln!("master after the fall-back: {:?}", st.database);
        more_acks(&writer, 20)?;
        c.power_cut(0)?;
        c.server_mut(1).resume()?;

        let st = wait_for(FAILOVER, "node1 MASTER but refusing to open", || {
            status(&c, 1).filter(|s| {
                s.is_master() && s.database.as_ref().is_some_and(|d| d.refused.is_some())
            })
        })?;
        eprintln!(
            "node1 refuses: {:?}",
            st.database.as_ref().and_then(|d| d.refused.clone())
        );
        hold_for(Duration::from_secs(3), "node1 stays read-only", || {
            read_only(&c, 1)
        })?;

        c.power_on(0)?;
        c.start_daemon(0, ranks[0])?;
        let master = wait_for(RETURN, "a sole master with every write", || {
            (0..2).find(|&i| c.is_sole_master(i))
        })?;
        more_acks(&writer, 10)?;
        let (writes, timeline) = (writer.stop(), watch.stop());
        check_invariants(&c, master, &writes, &timeline)
    })
}

/// Item 4. Three nodes, both replicas semi-sync: the master and one replica lose power
/// together. The remaining replica wins but cannot know whether the other acknowledged
/// writes it lacks: it refuses, naming that node. It drained while it prepared (its master
/// silent), so it must replicate again at once, acknowledgements on. When that node returns,
/// it catches up from it if needed and opens with every acknowledged write.
#[test]
fn with_three_nodes_a_replica_waits_for_the_one_that_may_hold_more() -> Result<()> {
    netns_test(|| {
        let ranks = [Rank::from(10), Rank::from(100), Rank::from(200)];
        let (mut c, writer, watch) = running(3, &ranks, "")?;
        c.wait_semi_sync_clients(0, 2, START)?;
        more_acks(&writer, 40)?;
        c.power_cut(0)?;
        c.power_cut(2)?;
        let node2 = c.rig.addr(2).to_string();
        let st = wait_for(FAILOVER, "node1 MASTER but refusing to open", || {
            status(&c, 1).filter(|s| {
                s.is_master()
                    && s.database
                        .as_ref()
                        .and_then(|d| d.refused.as_deref())
                        .is_some_and(|r| r.contains(&node2))
            })
        })?;
        eprintln!(
            "node1 refuses: {:?}",
            st.database.as_ref().and_then(|d| d.refused.clone())
        );
        // Its master silent, node1 drained while it prepared, ready to open at once; refused,
        // it must not stay drained: it applies again and tries to receive again (its master
        // is off), with acknowledgements on, as the replica it still is.
        let took = st.last_takeover;
        ensure!(
            took.as_ref()
                .is_some_and(|t| t.steps.iter().any(|s| s.name == "prepare: applier stopped")),
            "node1 was not made ready while it prepared: {took:?}"
        );
        wait_until(FAILOVER, "node1 replicating again", || {
            let st = c.server(1).slave_status()?;
            let ack = c.server(1).scalar("SELECT @@rpl_semi_sync_slave_enabled")?;
            Ok(
                st.get("Slave_SQL_Running").map(String::as_str) == Some("Yes")
                    && st.get("Slave_IO_Running").map(String::as_str) != Some("No")
                    && ack.as_deref() == Some("1"),
            )
        })?;
        ensure!(
            c.agent_log(1)?
                .contains("the prepare step did not lead to an opening: replicating again"),
            "node1 did not say that it replicates again"
        );
        // The receiver ended by the drain goes on trying to reach the powered-off master for
        // `rpl_semi_sync_slave_kill_conn_timeout` (1 s) before it exits: the new one must
        // outlive it, not be taken for it.
        hold_for(
            Duration::from_secs(2),
            "node1 stays read-only, its receiver running",
            || {
                let io = c.server(1).slave_status()?.get("Slave_IO_Running").cloned();
                Ok(read_only(&c, 1)? && io.as_deref() != Some("No"))
            },
        )?;

        c.power_on(2)?;
        c.start_daemon(2, ranks[2])?;
        c.wait_sole_master(1, RETURN)?;
        more_acks(&writer, 10)?;
        c.wait_replica_of(2, 1, RETURN)?;
        let (writes, timeline) = (writer.stop(), watch.stop());
        check_invariants(&c, 1, &writes, &timeline)
    })
}

/// Item 5. SIGTERM to the master's agent: its database is read-only before the agent exits,
/// and stays so; the peer takes over; nothing is lost and there are never two writers.
#[test]
fn a_graceful_stop_fences_the_old_master() -> Result<()> {
    netns_test(|| {
        let ranks = [Rank::from(10), Rank::from(100)];
        let (mut c, writer, watch) = running(2, &ranks, "")?;
        more_acks(&writer, 30)?;
        let st = c.stop_daemon(0, Duration::from_secs(15))?;
        ensure!(st.success(), "the agent exited with {st}");
        ensure!(
            read_only(&c, 0)?,
            "node0's database is still writable after its agent stopped"
        );
        c.wait_sole_master(1, FAILOVER)?;
        more_acks(&writer, 20)?;
        hold_for(Duration::from_secs(2), "node0 stays read-only", || {
            read_only(&c, 0)
        })?;
        let (writes, timeline) = (writer.stop(), watch.stop());
        check_invariants(&c, 1, &writes, &timeline)
    })
}

/// Item 5. The master crashes while a commit waits for the replica's acknowledgement (the
/// replication stream to the replica is cut, so the replica never gets it): the transaction is
/// in the master's binary log and no client was told it committed. Crash recovery as a replica
/// removes it, so the old master rejoins instead of being refused as errant.
#[test]
fn a_master_that_crashed_mid_commit_rejoins() -> Result<()> {
    netns_test(|| {
        let ranks = [Rank::from(10), Rank::from(100)];
        let (mut c, vip) = two_nodes_with_rows(&ranks)?;
        // Nothing from node0's server reaches node1 any more (adverts still do).
        let block = [
            "iptables", "-I", "INPUT", "-p", "tcp", "--sport", "3306", "-j", "DROP",
        ];
        let out = c.rig.exec(1, &block)?;
        ensure!(
            out.status.success(),
            "iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pending = std::thread::spawn(move || vip.insert(1000, Duration::from_secs(10)));
        wait_until(
            SEMI_SYNC_TIMEOUT,
            "the commit waits for the replica",
            || {
                let out = c
                    .server(0)
                    .sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_wait_sessions'")?;
                Ok(out.split_whitespace().nth(1).is_some_and(|n| n != "0"))
            },
        )?;
        c.power_cut(0)?;
        ensure!(
            pending.join().ok().is_none_or(|r| r.is_err()),
            "the commit was acknowledged although no replica had it"
        );
        let unblock = [
            "iptables", "-D", "INPUT", "-p", "tcp", "--sport", "3306", "-j", "DROP",
        ];
        c.rig.exec(1, &unblock)?;
        c.power_on(0)?;
        c.start_daemon(0, ranks[0])?;
        let master = master_and_replica(&c)?;
        for i in 0..2 {
            let st = c.status(i)?;
            let errant = st
                .database
                .as_ref()
                .map(|d| d.errant.clone())
                .unwrap_or_default();
            ensure!(errant.is_empty(), "node{i} reports errant {errant:?}");
        }
        let want: Vec<i64> = (1..=5).collect();
        ensure!(
            c.ids(master)? == want,
            "the master holds {:?}",
            c.ids(master)?
        );
        wait_until(RETURN, "the replica holds the same rows", || {
            Ok(c.ids(1 - master)? == want)
        })?;
        Ok(())
    })
}

/// Item 3, I1. After a semi-sync fall-back the master acknowledges writes that no replica has,
/// and its server crashes right after the last of them. Crash recovery as a replica removes
/// every transaction InnoDB had only prepared, so each acknowledged one must have been committed
/// in InnoDB, not left to be redone from the binary log (`innodb_flush_log_at_trx_commit = 3`):
/// the returning server holds them all, and the cluster opens again with them.
#[test]
fn writes_acknowledged_alone_survive_a_crash_of_the_master() -> Result<()> {
    netns_test(|| {
        let ranks = [Rank::from(10), Rank::from(100)];
        let (mut c, vip) = two_nodes_with_rows(&ranks)?;
        c.server_mut(1).stall()?;
        // The first waits out the semi-sync timeout; the rest are acknowledged at once.
        vip.insert(100, SEMI_SYNC_TIMEOUT * 3)?;
        vip.insert_all(101..=110)?;
        c.server_mut(0).kill();
        let want: Vec<i64> = (1..=5).chain(100..=110).collect();

        c.server_mut(0).restart()?;
        let held = c.ids(0)?;
        ensure!(
            held == want,
            "after crash recovery node0 holds {held:?}, acknowledged were {want:?}"
        );
        c.server_mut(1).resume()?;
        let master = master_and_replica(&c)?;
        let held = c.ids(master)?;
        ensure!(
            want.iter().all(|id| held.contains(id)),
            "I1: the master node{master} holds {held:?}, acknowledged were {want:?}"
        );
        Ok(())
    })
}

/// Item 5. Accounts that write through `read_only` are named, since fencing cannot stop them;
/// so are durability settings that can lose acknowledged writes (here one left as MariaDB's
/// default), and none of those `db bootstrap` writes.
#[test]
fn accounts_and_settings_that_leave_writes_unprotected_are_named() -> Result<()> {
    netns_test(|| {
        let sql = "CREATE USER 'ops'@'%' IDENTIFIED BY 'ops-pass' REQUIRE SSL;\n\
                   GRANT ALL PRIVILEGES ON *.* TO 'ops'@'%';\n\
                   SET GLOBAL innodb_flush_log_at_trx_commit = 1;\n";
        let mut cfg = ClusterConfig::new(2);
        cfg.extra_sql = sql.to_string();
        let mut c = Cluster::start(cfg)?;
        c.bring_up(&[Rank::from(10), Rank::from(100)], START)?;
        for i in 0..2 {
            let st = wait_for(FAILOVER, &format!("node{i} names the account"), || {
                status(&c, i).filter(|s| s.read_only_bypass.iter().any(|a| a == "ops@%"))
            })?;
            ensure!(
                !st.read_only_bypass.iter().any(|a| a.starts_with("app@")),
                "the application account is named too: {:?}",
                st.read_only_bypass
            );
            ensure!(
                st.unsafe_settings.len() == 1
                    && st.unsafe_settings[0].starts_with("innodb_flush_log_at_trx_commit = 1"),
                "node{i} names these unsafe settings: {:?}",
                st.unsafe_settings
            );
        }
        let log = c.agent_log(0)?;
        ensure!(
            log.contains("can write through read_only") && log.contains("ops@%"),
            "the agent's log does not name the account"
        );
        ensure!(
            log.contains("can lose acknowledged writes")
                && log.contains("innodb_flush_log_at_trx_commit"),
            "the agent's log does not name the setting"
        );
        Ok(())
    })
}

/// The promotion does not wait for a receiving thread that is reconnecting to a dead master.
/// node0's agent is frozen (so it cannot hand over) and its server killed: node1's receiver
/// starts reconnecting, refused at once each time. Then node0 loses power, so the next
/// attempt hangs on a host that no longer answers. Stopping such a receiver waits for the
/// semi-sync kill connection's timeout or STOP's 2 s re-signal; node1 must open without it,
/// and remove the replication configuration afterwards.
#[test]
fn a_receiver_reconnecting_to_a_dead_master_does_not_hold_up_the_promotion() -> Result<()> {
    netns_test(|| {
        let ranks = [Rank::from(10), Rank::from(100)];
        let (mut c, writer, watch) = running(2, &ranks, "")?;
        more_acks(&writer, 30)?;
        c.agent_mut(0)?.freeze()?;
        c.server_mut(0).kill();
        wait_until(FAILOVER, "node1's receiver reconnecting", || {
            Ok(c.server(1)
                .slave_status()?
                .get("Slave_IO_Running")
                .map(String::as_str)
                == Some("Connecting"))
        })?;
        c.power_cut(0)?;
        c.wait_sole_master(1, FAILOVER)?;
        let took = wait_for(FAILOVER, "node1's complete takeover record", || {
            status(&c, 1)
                .and_then(|s| s.last_takeover)
                .filter(|t| t.complete)
        })?;
        eprintln!("node1's takeover: {took:?}");
        let open = took
            .after_ms("open")
            .ok_or_else(|| anyhow::anyhow!("no open step in {took:?}"))?;
        // Without the receiver in the way the whole promotion takes a few tens of
        // milliseconds; stopping it would take a second or more.
        ensure!(
            open < 500.0,
            "node1 opened {open:.1} ms after its transition: {took:?}"
        );
        wait_until(
            FAILOVER,
            "node1's replication configuration removed",
            || Ok(c.server(1).slave_status()?.is_empty()),
        )?;
        more_acks(&writer, 20)?;
        let (writes, timeline) = (writer.stop(), watch.stop());
        check_invariants(&c, 1, &writes, &timeline)
    })
}

/// A new master that lacks acknowledged writes another replica holds catches up from it
/// before it opens. node1's receiving connection from node0 is cut (only that socket: its
/// agent must still see node0's server, or node0 counts as alive), two more writes are
/// acknowledged by node2 alone, then node0 loses power. node1 wins the election, finds the
/// two writes on node2, replicates them from node2 and only then opens, with every write.
/// The catch-up does not wait for the receiver from the dead master to end: stopping that
/// one waits for its semi-sync kill connection to the dead host, a second at least.
/// Adds (`-I`) or removes (`-D`) a rule on node1 that drops what node0's server sends it
/// (`extra`: more match arguments, such as one connection's port).
fn from_node0_to_node1(c: &Cluster, op: &str, extra: &[&str]) -> Result<()> {
    let master = c.rig.addr(0).to_string();
    let mut args = vec![
        "iptables", op, "INPUT", "-s", &master, "-p", "tcp", "--sport", "3306",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-j", "DROP"]);
    let out = c.rig.exec(1, &args)?;
    ensure!(
        out.status.success(),
        "iptables {op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// node1 misses the last two acknowledged writes, which node2 holds, and then node0 loses
/// power. node1's receiver is cut off from node0 by `extra` (iptables match arguments) and its
/// agent is frozen meanwhile: it compares with the master every check interval (200 ms), and
/// two writes on a loaded machine can take longer, so it would see itself behind and demote
/// itself, and node2 would rightly be elected instead. `before_the_cut` runs once node2 holds
/// the two writes.
fn node1_behind_node2_at_the_cut(
    c: &mut Cluster,
    writer: &Writer,
    extra: &[&str],
    before_the_cut: impl FnOnce(&Cluster) -> Result<()>,
) -> Result<()> {
    c.agent_mut(1)?.freeze()?;
    from_node0_to_node1(c, "-I", extra)?;
    // The second write began after the rule: node1 cannot have received it.
    more_acks(writer, 2)?;
    before_the_cut(c)?;
    c.power_cut(0)?;
    c.agent_mut(1)?.thaw()?;
    from_node0_to_node1(c, "-D", extra)
}

/// The replica that holds more claims, in its GTID state, transactions its binary log no
/// longer has (restored from a backup, its logs reset): a catch-up from it gets error 1236
/// and can bring nothing. The new master must say so at once, not after the whole
/// `promote-timeout` (10 s), and must not open without those writes.
#[test]
fn a_catch_up_from_a_source_whose_log_lacks_them_fails_at_once_and_visibly() -> Result<()> {
    netns_test(|| {
        let ranks = [Rank::from(10), Rank::from(100), Rank::from(200)];
        let (mut c, writer, watch) = running(3, &ranks, "")?;
        c.wait_semi_sync_clients(0, 2, START)?;
        more_acks(&writer, 20)?;
        // node2's binary log then restarts at its current state: it still claims every
        // transaction, but can no longer send those before the reset. Its applier pauses
        // meanwhile, so that nothing is logged between the reset and the state's restore
        // (its receiver goes on acknowledging).
        node1_behind_node2_at_the_cut(&mut c, &writer, &[], |c| {
            let node2 = c.server(2);
            node2.sql("STOP SLAVE SQL_THREAD")?;
            let state = node2.sql("SELECT @@GLOBAL.gtid_binlog_state")?;
            node2.sql(&format!(
                "RESET MASTER; SET GLOBAL gtid_binlog_state = '{}'; START SLAVE SQL_THREAD",
                state.trim()
            ))?;
            Ok(())
        })?;
        wait_until(FAILOVER, "node1 MASTER", || {
            status(&c, 1).is_some_and(|s| s.is_master())
        })?;
        let refused = wait_for(
            Duration::from_secs(4),
            "node1 refuses, naming the source's error",
            || {
                status(&c, 1)
                    .and_then(|s| s.database)
                    .and_then(|d| d.refused)
                    .filter(|r| r.contains("catching up from") && r.contains("1236"))
            },
        )?;
        eprintln!("node1 refuses: {refused}");
        ensure!(read_only(&c, 1)?, "node1 opened without node2's writes");
        let (writes, timeline) = (writer.stop(), watch.stop());
        let two = timeline.two_writers(&[]);
        ensure!(two.is_empty(), "two writable servers: {two:?}");
        // Every acknowledged write is still where it was acknowledged, waiting for node1.
        let missing = writes.missing_from(&c.ids(2)?);
        ensure!(
            missing.is_empty(),
            "node2 lacks acknowledged writes {missing:?}"
        );
        Ok(())
    })
}

#[test]
fn a_new_master_catches_up_from_the_replica_that_holds_more() -> Result<()> {
    netns_test(|| {
        let ranks = [Rank::from(10), Rank::from(100), Rank::from(200)];
        let (mut c, writer, watch) = running(3, &ranks, "")?;
        c.wait_semi_sync_clients(0, 2, START)?;
        more_acks(&writer, 20)?;
        let master = c.rig.addr(0).to_string();
        let ss = c.rig.exec(
            1,
            &[
                "ss",
                "-tnpH",
                "state",
                "established",
                "dst",
                &format!("{master}:3306"),
            ],
        )?;
        let ss = String::from_utf8_lossy(&ss.stdout).to_string();
        let port = ss
            .lines()
            .find(|l| l.contains("mariadbd"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|a| a.rsplit(':').next())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no receiving connection on node1 in {ss:?}"))?;
        // node1 is to be current at the failure and yet lack the last commits, as a replica
        // is whose receiver fell behind within one comparison with the master.
        node1_behind_node2_at_the_cut(&mut c, &writer, &["--dport", &port], |_| Ok(()))?;
        c.wait_sole_master(1, FAILOVER)?;
        let took = wait_for(FAILOVER, "node1's complete takeover record", || {
            status(&c, 1)
                .and_then(|s| s.last_takeover)
                .filter(|t| t.complete)
        })?;
        eprintln!("node1's takeover: {took:?}");
        let (caught_up, open) = (took.after_ms("caught up"), took.after_ms("open"));
        ensure!(
            caught_up.is_some() && open.is_some() && caught_up < open,
            "node1 did not catch up before opening: {took:?}"
        );
        // Each step of the catch-up is in the record, so that its time can be told apart.
        let applied = took.after_ms("catch-up: applied");
        ensure!(
            applied.is_some() && applied <= caught_up,
            "the takeover record lacks the catch-up's steps: {took:?}"
        );
        let catching =
            caught_up.unwrap_or_default() - took.after_ms("prepared").unwrap_or_default();
        ensure!(
            catching < 700.0,
            "the catch-up took {catching:.1} ms: it waited for the old receiver to end"
        );
        // The catch-up's own connection is gone, and node2 follows the new master.
        c.wait_replica_of(2, 1, FAILOVER)?;
        let left = c.server(1).replication_connections()?;
        ensure!(
            left.iter().all(|name| name != "catch_up"),
            "the catch-up's connection outlived it: {left:?}"
        );
        more_acks(&writer, 10)?;
        let (writes, timeline) = (writer.stop(), watch.stop());
        check_invariants(&c, 1, &writes, &timeline)
    })
}
