//! Scripts run beside the protocol, never in its way.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;
use tests::{AgentOpts, Rig, RigConfig, Timed, UcarpOpts, hold_for, netns_test, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

/// A password the agent is given in its environment, which no script may see.
const SECRET: &str = "never-in-a-hook";

/// A hung up-script does not delay adverts (a ucarp backup stays BACKUP throughout), is killed at
/// its timeout together with what it started, gets UCARP's arguments and not the database
/// passwords of the agent's environment.
#[test]
fn hung_up_script_never_delays_adverts() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(2))?;
        let args_file = rig.dir().join("up-args");
        let env_file = rig.dir().join("up-env");
        let pid_file = rig.dir().join("up-pid");
        let child_file = rig.dir().join("up-child");
        let up = rig.write_script(
            "hang-up.sh",
            &format!(
                "echo \"$@\" > {}\nenv > {}\nsleep 600 &\necho $! > {}\necho $$ > {}\nexec sleep 600",
                args_file.display(),
                env_file.display(),
                child_file.display(),
                pid_file.display()
            ),
        )?;
        let up = up.to_str().unwrap().to_string();
        let agent = rig.start_agent(
            0,
            &AgentOpts::new(1, "pw", "10.99.0.100/24")
                .preempt(true)
                .arg("-u")
                .arg(&up)
                .arg("-x")
                .arg("extra")
                .arg("--hook-timeout")
                .arg("3")
                .env("CLUSTER_AGENT_DB_ADMIN_PASSWORD", SECRET)
                .env("MYSQL_PWD", SECRET),
        )?;
        wait_until(Duration::from_secs(10), "agent MASTER", || {
            agent.is_master()
        })?;
        let ucarp = rig.spawn_ucarp(1, &UcarpOpts::new(1, "pw", VIP).advskew(100))?;
        let sent_before = agent.status()?.counters.adverts_sent;
        // ucarp's master-down time is 3.4 s: had adverts stopped while the script hangs, it would
        // take over within this window.
        hold_for(
            Duration::from_secs(5),
            "agent stays sole MASTER while its up script hangs",
            || Ok(agent.is_master() && rig.holders(VIP, &[0, 1])? == [0]),
        )?;
        let sent_after = agent.status()?.counters.adverts_sent;
        assert!(
            sent_after >= sent_before + 4,
            "adverts stalled during the hung script: {sent_before} -> {sent_after}"
        );
        assert!(
            !ucarp.log().contains("Switching to state: MASTER"),
            "ucarp took over: {}",
            ucarp.log()
        );
        let args = std::fs::read_to_string(&args_file).expect("the up script ran");
        assert_eq!(args.trim(), "eth0 10.99.0.100 extra");
        let env = std::fs::read_to_string(&env_file).expect("the up script ran");
        assert!(
            env.contains("PATH=") && !env.contains(SECRET),
            "a script saw a password: {env}"
        );
        let gone = |file: &std::path::Path| {
            let pid = std::fs::read_to_string(file).expect("the up script wrote a pid");
            let proc_dir = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
            // A process killed but not yet reaped still has its directory: check its state.
            move || {
                Ok(std::fs::read_to_string(proc_dir.join("stat"))
                    .map_or(true, |stat| stat.contains(") Z ")))
            }
        };
        wait_until(
            Duration::from_secs(5),
            "the hung script is killed",
            gone(&pid_file),
        )?;
        wait_until(
            Duration::from_secs(5),
            "what the hung script started is killed with it",
            gone(&child_file),
        )?;
        Ok(())
    })
}
