//! Invalid settings are refused before anything touches the network: exit status 2 and
//! one error line that names the setting.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;
use tests::agent::run_agent_cmd;
use tests::{AgentOpts, Rig, RigConfig, netns_test};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

/// Base arguments that are valid in the rig, with `replace` swapping (flag, value) pairs,
/// `drop` removing flags and `add` appending arguments.
fn args(rig: &Rig, replace: &[(&str, &str)], drop: &[&str], add: &[&str]) -> Vec<String> {
    let base = rig.agent_args(0, &AgentOpts::new(1, "secret", "10.99.0.100/24").xdp("off"));
    let mut out = Vec::new();
    let mut it = base.into_iter().peekable();
    while let Some(a) = it.next() {
        let takes_value = a.starts_with('-') && a != "-P";
        if drop.contains(&a.as_str()) {
            if takes_value {
                it.next();
            }
            continue;
        }
        if let Some((_, v)) = replace.iter().find(|(f, _)| *f == a) {
            out.push(a);
            it.next();
            out.push(v.to_string());
            continue;
        }
        out.push(a);
    }
    out.extend(add.iter().map(|s| s.to_string()));
    out
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("For more information") && !l.starts_with("Usage:"))
        .collect()
}

#[test]
fn invalid_settings_exit_2_naming_the_setting() -> Result<()> {
    netns_test(|| {
        let rig = Rig::new(RigConfig::nodes(1))?;
        let unreadable = rig.dir().join("no-such-passfile");
        let long_pass = "a".repeat(20);
        let max_pass = "b".repeat(19);
        let unreadable_s = unreadable.to_string_lossy().into_owned();
        let empty = rig.dir().join("empty-passfile");
        std::fs::write(&empty, "\n")?;
        let empty_s = empty.to_string_lossy().into_owned();

        // Positive control: the base settings are valid (the agent starts and answers), and so
        // is a 19-byte password; otherwise every case below would prove nothing.
        for pass in ["secret", max_pass.as_str()] {
            let mut a =
                rig.spawn_agent(0, &AgentOpts::new(1, pass, "10.99.0.100/24").xdp("off"))?;
            a.wait_ready(Duration::from_secs(10))?;
            a.proc.terminate()?;
            let st = a.proc.wait_exit(Duration::from_secs(5))?;
            assert!(st.success(), "valid agent did not stop cleanly: {st}");
            assert!(
                !rig.node_has_addr(0, VIP)?,
                "agent left the VIP behind on exit"
            );
        }

        struct Case<'a> {
            what: &'a str,
            args: Vec<String>,
            names: &'a [&'a str],
        }
        let cases = [
            Case {
                what: "vhid 0",
                args: args(&rig, &[("-v", "0")], &[], &[]),
                names: &["vhid"],
            },
            Case {
                what: "vhid 256",
                args: args(&rig, &[("-v", "256")], &[], &[]),
                names: &["vhid"],
            },
            Case {
                what: "20-byte password",
                args: args(&rig, &[("-p", &long_pass)], &[], &[]),
                names: &["pass"],
            },
            Case {
                what: "no password",
                args: args(&rig, &[], &["-p"], &[]),
                names: &["pass"],
            },
            Case {
                what: "unreadable passfile",
                args: args(&rig, &[], &["-p"], &["-o", &unreadable_s]),
                names: &["passfile", &unreadable_s],
            },
            Case {
                what: "empty passfile",
                args: args(&rig, &[], &["-p"], &["-o", &empty_s]),
                names: &["passfile"],
            },
            Case {
                what: "hook timeout 0",
                args: args(&rig, &[], &[], &["--hook-timeout", "0"]),
                names: &["hook-timeout"],
            },
            Case {
                what: "hook timeout beyond any deadline",
                args: args(&rig, &[], &[], &["--hook-timeout", "18446744073709551615"]),
                names: &["hook-timeout"],
            },
            Case {
                what: "GARP every 10^12 s",
                args: args(&rig, &[], &[], &["--garp-interval", "1000000000000"]),
                names: &["garp-interval"],
            },
            Case {
                what: "unknown control group",
                args: args(&rig, &[], &[], &["--control-group", "no-such-group-here"]),
                names: &["control-group"],
            },
            Case {
                what: "link-local IPv6 VIP",
                args: args(&rig, &[("-a", "fe80::100")], &[], &[]),
                names: &["addr", "vip"],
            },
            Case {
                what: "IPv4 and IPv6 addresses in one vhid",
                args: args(&rig, &[("-a", "fd00::100")], &[], &["-a", "10.99.0.101"]),
                names: &["addr"],
            },
            Case {
                what: "VIP prefix 33",
                args: args(&rig, &[("-a", "10.99.0.100/33")], &[], &[]),
                names: &["addr", "vip", "prefix"],
            },
            Case {
                what: "unknown interface",
                args: args(&rig, &[("-i", "nosuch0")], &[], &[]),
                names: &["interface", "nosuch0"],
            },
            Case {
                what: "bad srcip",
                args: args(&rig, &[("-s", "10.99.0")], &[], &[]),
                names: &["srcip"],
            },
            Case {
                what: "advbase 256",
                args: args(&rig, &[("-b", "256")], &[], &[]),
                names: &["advbase"],
            },
            Case {
                what: "advskew 256",
                args: args(&rig, &[("-k", "256")], &[], &[]),
                names: &["advskew"],
            },
            Case {
                what: "advbase 0 with advskew 0",
                args: args(&rig, &[("-b", "0"), ("-k", "0")], &[], &[]),
                names: &["advbase", "advskew"],
            },
        ];
        let mut failures = Vec::new();
        for c in &cases {
            let argv: Vec<&str> = c.args.iter().map(String::as_str).collect();
            let Some(out) = run_agent_cmd(Some(rig.ns(0)), &argv, Duration::from_secs(5))? else {
                failures.push(format!("{}: accepted (still running after 5 s)", c.what));
                continue;
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines = error_lines(&stderr);
            let lower = stderr.to_lowercase();
            eprintln!("{}: exit {}: {}", c.what, out.status, stderr.trim());
            if out.status.code() != Some(2) {
                failures.push(format!(
                    "{}: exit {} (want 2), stderr {stderr:?}",
                    c.what, out.status
                ));
            } else if lines.len() != 1 {
                failures.push(format!("{}: want one error line, got {lines:?}", c.what));
            } else if !c.names.iter().any(|n| lower.contains(&n.to_lowercase())) {
                failures.push(format!(
                    "{}: error does not name {:?}: {stderr:?}",
                    c.what, c.names
                ));
            }
            if rig.node_has_addr(0, VIP)? {
                failures.push(format!(
                    "{}: VIP added despite the invalid settings",
                    c.what
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "invalid settings not refused as required:\n  {}",
            failures.join("\n  ")
        );
        Ok(())
    })
}

/// The agent says whether its build carries the XDP program (`cargo xtask build` embeds it; a
/// plain `cargo build` cannot, and warns).
#[test]
fn version_says_whether_the_xdp_program_is_embedded() -> Result<()> {
    let out =
        run_agent_cmd(None, &["--version"], Duration::from_secs(10))?.expect("--version answers");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with("cluster-agent ") && text.contains("(XDP program embedded)"),
        "{text:?}"
    );
    Ok(())
}
