//! `[[track]]` service checks: the VIP follows the service, not only the node. Each check kind
//! against a real service in the node's namespace, both actions, hysteresis, and a hung check.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tests::{Agent, AgentOpts, Rig, RigConfig, Timed, hold_for, netns_test, wait_for, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const WEB_PORT: u16 = 8080;
/// Checks every 100 ms: a state change takes fall (or rise) x 100 ms.
const SETTLE: Duration = Duration::from_secs(10);

/// A web service on 127.0.0.1:`WEB_PORT` in a node's namespace, answering every request with
/// `200`; dropping it is the service dying.
struct Web {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Web {
    fn start(ns: &str) -> Result<Web> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns = ns.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let bound = tests::netns::enter(&ns).and_then(|()| {
                let l = TcpListener::bind((Ipv4Addr::LOCALHOST, WEB_PORT))?;
                l.set_nonblocking(true)?;
                Ok(l)
            });
            let listener = match bound {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // Bounded: the test ends it, or it gives up after ten minutes.
            for _ in 0..600_000 {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                    // Pacing of a non-blocking accept loop, not a wait for a condition.
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the web service did not start")??;
        Ok(Web {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An agent on `node` with advskew `skew`, preempting, and `tracks` (TOML `[[track]]` tables)
/// in its configuration file.
fn agent(rig: &Rig, node: usize, skew: u8, tracks: &str) -> Result<Agent> {
    let conf = rig.dir().join(format!("track-n{node}.toml"));
    std::fs::write(&conf, tracks)?;
    let o = AgentOpts::new(7, "track", "10.99.0.100/24")
        .advbase(1)
        .advskew(skew)
        .preempt(true)
        .arg("--config")
        .arg(conf.to_str().context("path")?);
    rig.start_agent(node, &o)
}

fn track_passing(a: &Agent) -> Result<Vec<bool>> {
    Ok(a.status()?.tracks.iter().map(|t| t.passing).collect())
}

/// HTTP on the preferred master, `bow-out`: its web service dies while the node stays up, and
/// the VIP moves at once to the peer whose own service (a TCP check) is up; the service comes
/// back and the preferred node takes the VIP back.
#[test]
fn http_check_failing_on_the_master_bows_out_and_passing_again_takes_back() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let web0 = Web::start(rig.ns(0))?;
        let _web1 = Web::start(rig.ns(1))?;
        let a0 = agent(
            &rig,
            0,
            0,
            "[[track]]\nname = \"web\"\nhttp = \"http://127.0.0.1:8080/\"\ninterval = 100\nfall = 2\nrise = 2\naction = \"bow-out\"\n",
        )?;
        let a1 = agent(
            &rig,
            1,
            100,
            "[[track]]\nname = \"web\"\ntcp = \"127.0.0.1:8080\"\ninterval = 100\nfall = 2\nrise = 2\n",
        )?;
        wait_until(SETTLE, "node0 sole master with its check passing", || {
            Ok(a0.is_master() && a1.is_backup() && track_passing(&a0)? == [true])
        })?;
        let before = a1.status()?.counters.transitions;
        drop(web0);
        // Two failed probes (200 ms) and a bow-out: far less than node1's master-down time
        // (3.4 s), which is what a demotion without bow-out would wait for.
        let took = tests::wait_timed(Duration::from_secs(3), "node1 takes over", || {
            Ok(a1.is_master() && !a0.is_master() && rig.holders(VIP, &[0, 1])? == [1])
        })?;
        eprintln!("the VIP moved {took:?} after the web service died");
        assert_eq!(track_passing(&a0)?, [false]);
        let st = a0.status()?;
        assert!(
            st.demoted,
            "a failing check must advertise the demoted skew: {st:?}"
        );
        assert_eq!(a1.status()?.counters.transitions, before + 1);

        let _web0 = Web::start(rig.ns(0))?;
        wait_until(SETTLE, "node0 passes again and takes the VIP back", || {
            Ok(a0.is_master() && a1.is_backup() && rig.holders(VIP, &[0, 1])? == [0])
        })?;
        Ok(())
    })
}

/// A process check with the default action (demote): the process dies, the node advertises
/// the demoted skew and the preempting peer takes over; the node never bows out on its own.
#[test]
fn process_check_demotes_and_a_preempting_peer_takes_over() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        // A process of a name nothing else on the machine has: a link to sleep.
        let name = format!("trk{}", std::process::id() % 1_000_000);
        let bin = rig.dir().join(&name);
        std::os::unix::fs::symlink("/bin/sleep", &bin)?;
        let mut service = rig.spawn(0, "service", &[bin.to_str().context("path")?, "600"])?;
        let track =
            format!("[[track]]\nprocess = \"{name}\"\ninterval = 100\nfall = 2\nrise = 1\n");
        let a0 = agent(&rig, 0, 0, &track)?;
        let a1 = agent(&rig, 1, 100, "")?;
        wait_until(SETTLE, "node0 sole master with its check passing", || {
            Ok(a0.is_master() && a1.is_backup() && track_passing(&a0)? == [true])
        })?;
        service.kill();
        wait_until(SETTLE, "node1 preempts the demoted master", || {
            Ok(a1.is_master() && a0.is_backup() && rig.holders(VIP, &[0, 1])? == [1])
        })?;
        let st = a0.status()?;
        assert!(st.demoted && track_passing(&a0)? == [false], "{st:?}");
        Ok(())
    })
}

/// A script check that fails now and then, never `fall` times in a row, moves nothing; a
/// script that hangs is cut off at its timeout (with what it started), counts as failing, and
/// never delays an advert: a lone agent stays MASTER throughout.
#[test]
fn a_flapping_check_moves_nothing_and_a_hung_one_is_killed_without_delaying_adverts() -> Result<()>
{
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let counter = rig.dir().join("flap-count");
        let flap = rig.write_script(
            "flap.sh",
            &format!(
                "n=$(cat {c} 2>/dev/null || echo 0)\necho $((n + 1)) > {c}\n[ $((n % 4)) -lt 2 ]",
                c = counter.display()
            ),
        )?;
        let a0 = agent(
            &rig,
            0,
            0,
            &format!(
                "[[track]]\nname = \"flap\"\nscript = \"{}\"\ninterval = 100\nfall = 3\nrise = 2\n",
                flap.display()
            ),
        )?;
        let a1 = agent(&rig, 1, 100, "")?;
        wait_until(
            SETTLE,
            "node0 master with the flapping check passing",
            || Ok(a0.is_master() && track_passing(&a0)? == [true]),
        )?;
        let transitions = a0.status()?.counters.transitions;
        hold_for(
            Duration::from_secs(3),
            "two failures in a row never fail a check with fall 3",
            || Ok(a0.is_master() && a1.is_backup() && track_passing(&a0)? == [true]),
        )?;
        assert_eq!(a0.status()?.counters.transitions, transitions);
        drop(a1);
        drop(a0);

        let pid_file = rig.dir().join("hung-child");
        let hung = rig.write_script(
            "hung.sh",
            &format!(
                "sleep 600 &\necho $! > {}\nexec sleep 600",
                pid_file.display()
            ),
        )?;
        let a0 = agent(
            &rig,
            0,
            0,
            &format!(
                "[[track]]\nname = \"hung\"\nscript = \"{}\"\ninterval = 300\ntimeout = 200\n",
                hung.display()
            ),
        )?;
        wait_until(SETTLE, "the lone agent is MASTER", || Ok(a0.is_master()))?;
        let sent = a0.status()?.counters.adverts_sent;
        // Demoted (the check fails), it advertises every 1 + 240/256 s: at least two in 5 s.
        hold_for(
            Duration::from_secs(5),
            "the lone agent stays MASTER while its check hangs",
            || Ok(a0.is_master() && track_passing(&a0)? == [false]),
        )?;
        assert!(
            a0.status()?.counters.adverts_sent >= sent + 2,
            "adverts stalled while the check hung"
        );
        let st = a0.status()?;
        let err = st.tracks[0].last_error.clone().unwrap_or_default();
        assert!(err.contains("no answer within 200 ms"), "{st:?}");
        // Every run of the check rewrites the file: read until it holds a whole pid, since an
        // empty or partial read (truncated, not yet written) would name `/proc//stat`, which is
        // `/proc/stat` and always there.
        let pid: u32 = wait_for(
            Duration::from_secs(5),
            "a pid in the hung check's file",
            || {
                std::fs::read_to_string(&pid_file)
                    .ok()
                    .filter(|p| p.ends_with('\n'))
                    .and_then(|p| p.trim().parse().ok())
            },
        )?;
        let stat = std::path::PathBuf::from(format!("/proc/{pid}/stat"));
        wait_until(
            Duration::from_secs(5),
            "what the hung check started is killed",
            || Ok(std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z "))),
        )?;
        Ok(())
    })
}
