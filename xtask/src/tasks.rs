//! The build and test pipelines.

use std::path::PathBuf;

use anyhow::{Result, ensure};

use crate::{
    cmd::{self, say},
    ebpf,
};

/// The agent's build script embeds the file named here (see `cluster-agent/build.rs`).
pub const EBPF_OBJ_VAR: &str = "CLUSTER_EBPF_OBJ";
/// Integration tests run the agent binary named here.
pub const AGENT_BIN_VAR: &str = "CLUSTER_AGENT_BIN";

/// What a build produced, as absolute paths.
pub struct Built {
    pub ebpf_obj: PathBuf,
    pub agent_bin: PathBuf,
}

/// Builds the XDP object, then the agent with it embedded.
/// `cluster-agent xdp <what> <args>` from a fresh build (setup first: the XDP object needs
/// its toolchain).
pub fn agent_xdp(what: &str, args: &[String]) -> Result<()> {
    crate::setup::ensure()?;
    let built = build(false)?;
    let mut c = std::process::Command::new(&built.agent_bin);
    c.arg("xdp").arg(what).args(args);
    cmd::run(&mut c)
}

pub fn build(release: bool) -> Result<Built> {
    let ebpf_obj = ebpf::build()?;
    say("building cluster-agent with the XDP object embedded");
    let mut command = cmd::cargo();
    command
        .args([
            "build",
            "--package",
            "cluster-agent",
            "--bin",
            "cluster-agent",
        ])
        .current_dir(cmd::root())
        .env(EBPF_OBJ_VAR, &ebpf_obj);
    if release {
        command.arg("--release");
    }
    cmd::run(&mut command)?;

    let agent_bin = target_dir()
        .join(if release { "release" } else { "debug" })
        .join("cluster-agent");
    ensure!(
        agent_bin.is_file(),
        "the build succeeded but {} is missing",
        agent_bin.display()
    );
    say(format_args!("agent ready: {}", agent_bin.display()));
    Ok(Built {
        ebpf_obj,
        agent_bin,
    })
}

/// Builds one of the `tests` package's helper binaries (debug) and returns its path.
pub fn tests_bin(name: &str) -> Result<PathBuf> {
    let mut command = cmd::cargo();
    command
        .args(["build", "--package", "tests", "--bin", name])
        .current_dir(cmd::root());
    cmd::run(&mut command)?;
    let bin = target_dir().join("debug").join(name);
    ensure!(
        bin.is_file(),
        "the build succeeded but {} is missing",
        bin.display()
    );
    Ok(bin)
}

/// Builds, then runs the whole workspace's tests against the agent with XDP.
pub fn test(release: bool, args: &[String]) -> Result<()> {
    let built = build(release)?;
    say("running the workspace tests");
    let mut command = cmd::cargo();
    command.arg("test");
    if !selects_packages(args) {
        command.arg("--workspace");
    }
    command
        .current_dir(cmd::root())
        // Same value as in `build`, so the agent is not rebuilt, and the unit tests get the object.
        .env(EBPF_OBJ_VAR, &built.ebpf_obj)
        .env(AGENT_BIN_VAR, &built.agent_bin);
    if release {
        command.arg("--release");
    }
    command.args(args);
    // The netns tests mostly wait on protocol timers, so more threads than cores shorten the run
    // without starving the timing checks.
    let default_run = args.is_empty();
    if !args.iter().any(|a| a == "--") {
        command.args(["--", "--test-threads=4"]);
    }
    cmd::run(&mut command)?;
    if default_run {
        // The first run used the default data plane (XDP, native on veth); every network test
        // must also pass on the raw-socket path a node without XDP uses.
        say("running the network tests again with --xdp off");
        let mut command = cmd::cargo();
        command
            .args(["test", "-p", "tests", "--test", "netns"])
            .current_dir(cmd::root())
            .env(EBPF_OBJ_VAR, &built.ebpf_obj)
            .env(AGENT_BIN_VAR, &built.agent_bin)
            .env("CLUSTER_TEST_XDP", "off");
        if release {
            command.arg("--release");
        }
        command.args(["--", "--test-threads=4", "--skip", "xdp::"]);
        cmd::run(&mut command)?;
        // The package a user installs: built, installed into a scratch root, checked.
        say("building and checking the Debian package");
        crate::deb::run()?;
        // Faults at random instants under write load, with the invariants checked after each:
        // fixed seeds so a failure here replays with `cargo xtask chaos --seed`.
        for (seed, nodes, quorum) in CHAOS_RUNS {
            say(format_args!(
                "running the chaos suite: seed {seed}, {nodes} nodes{}, {CHAOS_MINUTES} minutes",
                if quorum { ", quorum lease" } else { "" }
            ));
            crate::chaos::run(crate::chaos::ChaosArgs {
                seed: Some(seed),
                minutes: CHAOS_MINUTES,
                nodes,
                advbase: 1,
                xdp: "auto".into(),
                json: None,
                quorum,
            })?;
        }
    }
    Ok(())
}

/// The chaos runs of `cargo xtask test`: (seed, nodes, quorum lease).
const CHAOS_RUNS: [(u64, u8, bool); 3] = [(1, 3, false), (2, 2, false), (3, 3, true)];
const CHAOS_MINUTES: f64 = 3.0;

/// `--workspace` would override a `-p` the caller passed to narrow the run.
fn selects_packages(args: &[String]) -> bool {
    args.iter().take_while(|arg| *arg != "--").any(|arg| {
        arg == "--workspace"
            || arg.starts_with("--package")
            || arg.starts_with("-p")
            || arg.starts_with("--manifest-path")
    })
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .or_else(|| std::env::var_os("CARGO_BUILD_TARGET_DIR"))
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                cmd::root().join(dir)
            }
        })
        .unwrap_or_else(|| cmd::root().join("target"))
}
