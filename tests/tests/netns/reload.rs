//! Configuration reload (SIGHUP, `cluster-agent reload`): what changes applies without a
//! transition, and what cannot apply is refused with the running configuration kept.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tests::agent::run_agent_cmd;
use tests::wait::wait_for;
use tests::{Agent, AgentOpts, Rig, RigConfig, hold_for, netns_test, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const SETTLE: Duration = Duration::from_secs(10);

/// Writes node `node`'s settings file: the election settings, then `more` TOML lines.
fn write_config(rig: &Rig, node: usize, advskew: u8, more: &str) -> Result<PathBuf> {
    let file = rig.dir().join(format!("reload-n{node}.toml"));
    let text = format!(
        "interface = \"eth0\"\nsrcip = \"{}\"\nvhid = 23\npass = \"reload\"\n\
         addr = \"{VIP}/24\"\nadvbase = 1\ndeadratio = 3\nadvskew = {advskew}\n{more}\n",
        rig.addr(node)
    );
    std::fs::write(&file, text)?;
    Ok(file)
}

fn start(rig: &Rig, node: usize, file: &Path) -> Result<Agent> {
    rig.start_agent(node, &AgentOpts::new(23, "reload", "").config_file(file))
}

/// `cluster-agent reload` against node `node`'s agent.
fn reload(rig: &Rig, node: usize) -> Result<Output> {
    let socket = rig.agent_socket(node).display().to_string();
    run_agent_cmd(
        None,
        &["reload", "--control-socket", &socket],
        Duration::from_secs(10),
    )?
    .context("`cluster-agent reload` did not finish")
}

fn transitions(a: &Agent) -> Result<u64> {
    Ok(a.status()?.counters.transitions)
}

/// A backup reloaded (SIGHUP) with a better skew, preemption and an up script stays BACKUP;
/// the master reloaded (`cluster-agent reload`) with a worse skew advertises it at once, and
/// the backup preempts and runs the script it did not have at start. Neither reload causes a
/// transition of its own.
#[test]
fn a_reload_applies_skew_preemption_and_scripts_without_a_transition() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let f0 = write_config(&rig, 0, 0, "")?;
        let f1 = write_config(&rig, 1, 100, "")?;
        let a0 = start(&rig, 0, &f0)?;
        let a1 = start(&rig, 1, &f1)?;
        let sole = |m: &Agent, b: &Agent, node: usize| -> Result<bool> {
            Ok(m.is_master() && b.is_backup() && rig.holders(VIP, &[0, 1])? == [node])
        };
        wait_until(SETTLE, "node0 sole master", || sole(&a0, &a1, 0))?;
        let (t0, t1) = (transitions(&a0)?, transitions(&a1)?);

        let marker = rig.dir().join("up-ran");
        let up = rig.write_script(
            "up.sh",
            &format!("#!/bin/sh\necho \"$1 $2\" > {}\n", marker.display()),
        )?;
        write_config(
            &rig,
            1,
            50,
            &format!("preempt = true\nupscript = \"{}\"", up.display()),
        )?;
        ensure!(
            rig.signal_named(1, "cluster-agent", libc::SIGHUP)? == 1,
            "no agent on node1 to signal"
        );
        wait_until(SETTLE, "node1 advertises skew 50", || {
            Ok(a1.status()?.advskew == 50)
        })?;
        hold_for(Duration::from_secs(2), "node0 stays sole master", || {
            sole(&a0, &a1, 0)
        })?;
        ensure!(
            (transitions(&a0)?, transitions(&a1)?) == (t0, t1),
            "the backup's reload caused a transition"
        );

        write_config(&rig, 0, 200, "")?;
        let out = reload(&rig, 0)?;
        ensure!(
            out.status.success(),
            "reload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until(SETTLE, "node1 preempts the worse master", || {
            sole(&a1, &a0, 1)
        })?;
        ensure!(
            (transitions(&a0)?, transitions(&a1)?) == (t0 + 1, t1 + 1),
            "more than one transition each"
        );
        let ran = wait_for(SETTLE, "the new up script ran", || {
            Ok(std::fs::read_to_string(&marker).ok())
        })?;
        ensure!(ran.trim() == format!("eth0 {VIP}"), "up script got {ran:?}");
        ensure!(a0.status()?.advskew == 200);
        Ok(())
    })
}

/// An unreadable file, an invalid value and a change that needs a restart are each refused,
/// by `cluster-agent reload` with the reason and by SIGHUP in the log; the agent keeps its
/// configuration and its mastership. A valid change then applies.
#[test]
fn a_reload_that_cannot_apply_is_refused_and_the_running_configuration_stays() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(1))?;
        let file = write_config(&rig, 0, 10, "")?;
        let a = start(&rig, 0, &file)?;
        wait_until(SETTLE, "node0 master", || Ok(a.is_master()))?;
        let before = transitions(&a)?;
        let unchanged = |a: &Agent| -> Result<bool> {
            let s = a.status()?;
            Ok(s.is_master() && s.advskew == 10 && s.counters.transitions == before)
        };

        let cases = [
            ("advskew = \"ten\"", "invalid config"),
            ("advskew = 300", "advskew"),
        ];
        for (bad, why) in cases {
            let good = std::fs::read_to_string(&file)?;
            std::fs::write(&file, good.replace("advskew = 10", bad))?;
            let out = reload(&rig, 0)?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success() && stderr.contains(why),
                "{bad:?} not refused with {why:?}: {stderr}"
            );
            ensure!(
                unchanged(&a)?,
                "{bad:?} changed the agent: {:?}",
                a.status()?
            );
            write_config(&rig, 0, 10, "")?;
        }
        std::fs::write(
            &file,
            std::fs::read_to_string(&file)?.replace("vhid = 23", "vhid = 24"),
        )?;
        let out = reload(&rig, 0)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains("vhid cannot change"),
            "a new vhid was not refused: {stderr}"
        );
        let refusals = || a.proc.log().matches("configuration reload refused").count();
        let logged = refusals();
        ensure!(
            rig.signal_named(0, "cluster-agent", libc::SIGHUP)? == 1,
            "no agent to signal"
        );
        wait_until(SETTLE, "the refused SIGHUP reload is logged", || {
            refusals() > logged
        })?;
        ensure!(unchanged(&a)?, "a refused reload changed the agent");

        write_config(&rig, 0, 20, "")?;
        let out = reload(&rig, 0)?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = a.status()?;
        ensure!(
            s.is_master() && s.advskew == 20 && s.counters.transitions == before,
            "the valid reload did not apply alone: {s:?}"
        );
        Ok(())
    })
}
