//! The control socket is the agent's way in: only root (and a group given for reading) may open
//! it, only root or the agent's own user may change state through it, and idle or excess
//! clients cannot shut it for long.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::Result;
use tests::{AgentOpts, Rig, RigConfig, Timed, agent_bin, cmd, netns_test, wait_until};

/// `nobody` / `nogroup` on Debian: a user that is neither root nor the agent's.
const NOBODY: u32 = 65534;
/// How many clients the agent serves at once (`control::MAX_CONNECTIONS`).
const MAX_CONNECTIONS: usize = 16;

/// One read, made again when a signal interrupted it: the kernel does not restart a read on a
/// socket with a read timeout, so a signal the test process gets ends it with EINTR (seen once
/// in a full run), which says nothing of the agent. Bounded.
fn read_once(s: &mut UnixStream, buf: &mut [u8]) -> std::io::Result<usize> {
    for _ in 0..10 {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
    s.read(buf)
}

/// Runs `cluster-agent <command> --control-socket <socket>` as `nobody`, without groups but
/// `nogroup`.
fn as_nobody(command: &str, socket: &std::path::Path) -> Result<Output> {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ])
    .arg(agent_bin()?)
    .arg(command)
    .arg("--control-socket")
    .arg(socket);
    cmd::output_within(&mut c, Duration::from_secs(10))
}

#[test]
fn only_root_changes_state_a_given_group_reads_status_and_idle_clients_are_cut_off() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(1))?;
        let socket = rig.agent_socket(0);
        let opts = AgentOpts::new(1, "secret", "10.99.0.100/24").preempt(true);

        // Without a group: root's alone.
        let mut agent = rig.start_agent(0, &opts)?;
        let meta = std::fs::metadata(&socket)?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{meta:?}");
        let out = as_nobody("status", &socket)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("ermission denied"),
            "nobody read the status of a 0600 socket: {out:?}"
        );
        agent.stop(Duration::from_secs(10))?;

        // With `--control-group`: the group reads status, and still cannot change anything.
        let agent = rig.start_agent(
            0,
            &opts.clone().arg("--control-group").arg(&NOBODY.to_string()),
        )?;
        let meta = std::fs::metadata(&socket)?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o660, "{meta:?}");
        assert_eq!(meta.gid(), NOBODY);
        wait_until(Duration::from_secs(10), "the agent is MASTER", || {
            Ok(agent.is_master())
        })?;
        let transitions = agent.status()?.counters.transitions;
        let out = as_nobody("status", &socket)?;
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("MASTER"),
            "the control group cannot read status: {out:?}"
        );
        let out = as_nobody("switchover", &socket)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("refused"),
            "nobody's switchover was not refused: {out:?}"
        );
        let st = agent.status()?;
        assert!(
            st.is_master() && st.counters.transitions == transitions,
            "a refused switchover changed state: {st:?}"
        );

        // Clients that connect and send nothing hold every slot; one more is closed at once,
        // and the idle ones are cut off at the read deadline, after which status answers.
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| UnixStream::connect(&socket))
            .collect::<std::io::Result<_>>()?;
        let mut extra = UnixStream::connect(&socket)?;
        extra.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut buf = [0u8; 64];
        let started = Instant::now();
        let n = read_once(&mut extra, &mut buf);
        assert!(
            matches!(n, Ok(0)),
            "a connection beyond the cap was not closed at once: {n:?} after {:?}",
            started.elapsed()
        );
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let n = read_once(&mut s, &mut buf);
            assert!(matches!(n, Ok(0)), "an idle client was not cut off: {n:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "idle clients held the socket for {:?}",
            started.elapsed()
        );
        let st = agent.status()?;
        assert!(st.is_master(), "{st:?}");
        agent.proc.check_alive()?;
        Ok(())
    })
}
