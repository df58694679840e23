//! The quorum lease, end to end: three nodes, each with an agent (fast mode), a MariaDB server
//! and an etcd member in its namespace, so a node cut off from the others is cut off from
//! the majority of etcd too. A writer commits numbered rows through the VIP and a watch looks
//! at every server's `read_only`; the invariants are checked after each fault, partitions
//! included: never two writable servers, no acknowledged write lost.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tests::etcd::Etcd;
use tests::mariadb::MariaDb;
use tests::watch::{WritableWatch, Writer, sockets, wait_more_acks};

use crate::safety::check_invariants;
use tests::{Cluster, ClusterConfig, Rank, hold_for, netns_test, wait_timed, wait_until};

/// etcd up and its first leader elected.
const ETCD_START: Duration = Duration::from_secs(30);
/// First election, lease, promotion and replication of a fresh cluster.
const START: Duration = Duration::from_secs(45);
/// The agents' lease TTL (the default in fast mode).
const TTL: Duration = Duration::from_secs(5);
/// How long the database may stay open without a renewal: two thirds of the TTL.
const WRITE_WINDOW: Duration = Duration::from_millis(3334);
/// Renewals are a third of the TTL apart.
const RENEW_EVERY: Duration = Duration::from_millis(1667);
/// An etcd leader cut off from the other members steps down after an election timeout
/// (1 s), and answers renewals until then.
const ETCD_STEP_DOWN: Duration = Duration::from_millis(1100);
/// A failover under the quorum: the old holder's lease runs out (the TTL, and after an etcd
/// leader change up to one election timeout more), then the prepare and the promotion.
const FAILOVER: Duration = Duration::from_secs(40);
const RETURN: Duration = Duration::from_secs(60);
const INSERT_LIMIT: Duration = Duration::from_secs(2);
const GAP: Duration = Duration::from_millis(5);
const SKEW: [u8; 3] = [40, 80, 120];
const KEY: &str = "/cluster-agent/vhid-31/leader";

struct Quorum {
    // Dropped first: the writer and the watch, then etcd, then the cluster's daemons,
    // servers and namespaces.
    writer: Writer,
    watch: WritableWatch,
    etcd: Etcd,
    c: Cluster,
}

/// Three nodes with etcd (clients on TLS with client certificates, from the databases'
/// bootstrap), node0 master under the lease (`more` agent flags), the writer and the watch
/// running.
fn running(more: &[&str]) -> Result<Quorum> {
    let mut c = Cluster::start(ClusterConfig::new(3))?;
    let etcd = Etcd::start_tls(&c.rig, &c.files, ETCD_START)?;
    c.config.agent_args = etcd.agent_args();
    c.config
        .agent_args
        .extend(more.iter().map(|a| a.to_string()));
    let ranks: Vec<Rank> = SKEW.iter().map(|&s| Rank::from(s)).collect();
    c.bring_up(&ranks, START)?;
    let st = c.status(0)?;
    let q = st.quorum.context("status shows no quorum")?;
    ensure!(q.state == "held", "node0 serves without the lease: {q:?}");
    let holder = etcd.get(1, KEY)?.context("no leader key in etcd")?;
    ensure!(
        holder.contains(&c.rig.addr(0).to_string()),
        "the leader key names another node: {holder}"
    );
    let servers: Vec<&MariaDb> = (0..3).map(|i| c.server(i)).collect();
    let watch = WritableWatch::start(sockets(&servers))?;
    let writer = Writer::start(c.vip()?, 1, GAP, INSERT_LIMIT);
    wait_more_acks(&writer, 0, 30, START)?;
    Ok(Quorum {
        writer,
        watch,
        etcd,
        c,
    })
}

fn read_only(c: &Cluster, i: usize) -> bool {
    c.server(i)
        .scalar("SELECT @@read_only")
        .is_ok_and(|v| v.as_deref() == Some("1"))
}

fn writable_master(c: &Cluster, i: usize) -> bool {
    c.status(i)
        .is_ok_and(|s| s.is_master() && s.db_role() == "master")
}

/// Every server holds the same transactions (none errant on either side).
fn same_history(c: &Cluster) -> Result<()> {
    let state = |i: usize| c.server(i).scalar("SELECT @@gtid_binlog_state");
    wait_until(
        RETURN,
        "every server's binary log holds the same transactions",
        || Ok::<_, anyhow::Error>(state(0)? == state(1)? && state(1)? == state(2)?),
    )?;
    Ok(())
}

/// The master is cut off from the other nodes and from etcd's majority. It closes its
/// database within the lease's write window; the other side opens only after the key has
/// gone, so the two are never writable together; after the heal the old master rejoins as a
/// replica and no acknowledged write is missing.
#[test]
fn a_cut_off_master_stops_writing_before_the_other_side_opens() -> Result<()> {
    netns_test(|| {
        let Quorum {
            writer,
            watch,
            etcd,
            c,
        } = running(&[])?;
        let cut = Instant::now();
        c.rig.partition(0)?;
        let (_, closed) = wait_timed(FAILOVER, "node0's server read-only while cut off", || {
            read_only(&c, 0)
        })?;
        eprintln!("node0 closed its database {closed:?} after the cut");
        // The write window counts from the last renewal, and a member that was etcd's leader
        // at the cut still renews until it notices it lost the others (an election timeout).
        ensure!(
            closed <= WRITE_WINDOW + RENEW_EVERY + ETCD_STEP_DOWN,
            "node0 stayed writable {closed:?} after the cut (write window {WRITE_WINDOW:?})"
        );
        let (_, opened) = wait_timed(FAILOVER, "node1 writable master", || writable_master(&c, 1))?;
        eprintln!("node1 opened {:?} after the cut", closed + opened);
        let st0 = c.status(0)?;
        eprintln!("node0 while cut off: {} {:?}", st0.state, st0.quorum);
        let before = writer.acked();
        wait_more_acks(&writer, before, 20, FAILOVER)?;
        let holder = etcd.get(1, KEY)?.context("no leader key")?;
        ensure!(
            holder.contains(&c.rig.addr(1).to_string()),
            "the key is not node1's: {holder}"
        );

        c.rig.heal(0)?;
        wait_until(RETURN, "node0 rejoins as node1's replica", || {
            c.is_sole_master(1) && c.is_replica_of(0, 1)
        })?;
        let before = writer.acked();
        wait_more_acks(&writer, before, 20, FAILOVER)?;
        let writes = writer.stop();
        let timeline = watch.stop();
        // On a loaded machine etcd's own election after the heal can outlast the write window
        // and move the master once more (safely): judge the writer there is at the end.
        let (m, _) = wait_timed(RETURN, "one writable master", || {
            (0..3).find(|&i| writable_master(&c, i) && c.is_sole_master(i))
        })?;
        check_invariants(&c, m, &writes, &timeline)?;
        same_history(&c)?;
        ensure!(cut.elapsed() < Duration::from_secs(600), "bounded scenario");
        Ok(())
    })
}

/// etcd's leader member is killed during normal running: a new etcd leader is elected within
/// the lease's write window, so the database stays open on the same master and writes go on.
/// With a 10 s TTL (a 6.7 s window): on this loaded machine, with other rigs running beside,
/// an election took over 3.3 s, the default 5 s TTL's window.
#[test]
fn killing_etcds_leader_fails_nothing_over() -> Result<()> {
    netns_test(|| {
        let Quorum {
            writer,
            watch,
            mut etcd,
            c,
        } = running(&["--quorum-ttl=10"])?;
        let transitions = c.status(0)?.counters.transitions;
        let leader = etcd.leader()?;
        eprintln!("killing etcd's leader, the member on node{leader}");
        let killed = tests::wait::mono_ns();
        etcd.kill(leader);
        etcd.wait_healthy(ETCD_START)?;
        eprintln!(
            "etcd has a new leader: the member on node{}",
            etcd.leader()?
        );
        let before = writer.acked();
        wait_more_acks(&writer, before, 20, FAILOVER)?;
        // Writes went on through the election: the longest pause between two acknowledged
        // writes after the kill is one election, not a failover.
        let writes = writer.writes();
        let after: Vec<u64> = writes
            .acked
            .iter()
            .map(|a| a.1)
            .filter(|t| *t >= killed)
            .collect();
        let longest = after
            .windows(2)
            .map(|w| Duration::from_nanos(w[1] - w[0]))
            .max()
            .unwrap_or_default();
        eprintln!("longest pause between acknowledged writes after the kill: {longest:?}");
        let st = c.status(0)?;
        ensure!(
            st.is_master() && st.db_role() == "master",
            "node0 is no longer the writer: {st:?}"
        );
        ensure!(
            st.counters.transitions == transitions,
            "an election happened: {} transitions, {transitions} before",
            st.counters.transitions
        );
        ensure!(
            longest < Duration::from_secs(2),
            "writes paused {longest:?}: longer than an etcd election"
        );
        let writes = writer.stop();
        let timeline = watch.stop();
        check_invariants(&c, 0, &writes, &timeline)?;
        Ok(())
    })
}

/// All of etcd is lost: the master closes its database within the write window and nobody
/// opens one (reads through the VIP go on); etcd back, writes resume on the CARP master.
#[test]
fn without_etcd_no_node_is_writable_and_writes_resume_when_it_returns() -> Result<()> {
    netns_test(|| {
        let Quorum {
            writer,
            watch,
            mut etcd,
            c,
        } = running(&[])?;
        for i in 0..3 {
            etcd.kill(i);
        }
        let (_, closed) = wait_timed(FAILOVER, "node0's server read-only without etcd", || {
            read_only(&c, 0)
        })?;
        eprintln!("node0 closed its database {closed:?} after etcd was lost");
        ensure!(
            closed <= WRITE_WINDOW + Duration::from_millis(500),
            "node0 stayed writable {closed:?} without etcd"
        );
        hold_for(TTL, "no server writable while etcd is down", || {
            (0..3).all(|i| read_only(&c, i))
        })?;
        // The master bowed out when its lease ran out: the VIP may be moving still.
        let vip = c.vip()?;
        let (rows, took) = wait_timed(FAILOVER, "a read through the VIP without etcd", || {
            vip.sql("SELECT COUNT(*) FROM t.rows", INSERT_LIMIT).ok()
        })?;
        eprintln!(
            "read through the VIP without etcd ({took:?} after the check began): {} rows",
            rows.trim()
        );
        let master = (0..3)
            .find(|&i| c.status(i).is_ok_and(|s| s.is_master()))
            .context("no CARP master without etcd")?;
        let st = c.status(master)?;
        let q = st.quorum.clone().context("no quorum in status")?;
        ensure!(
            q.state == "unreachable"
                && st
                    .database
                    .as_ref()
                    .is_some_and(|d| d.quorum_wait.is_some()),
            "status does not say why node{master} waits: {st:?}"
        );
        for i in 0..3 {
            etcd.restart(&c.rig, i)?;
        }
        etcd.wait_healthy(ETCD_START)?;
        let (m, took) = wait_timed(FAILOVER, "a writable master again", || {
            (0..3).find(|&i| writable_master(&c, i))
        })?;
        eprintln!("node{m} writable {took:?} after etcd returned");
        let before = writer.acked();
        wait_more_acks(&writer, before, 20, FAILOVER)?;
        let writes = writer.stop();
        let timeline = watch.stop();
        check_invariants(&c, m, &writes, &timeline)?;
        Ok(())
    })
}
