//! Making a fresh Debian 12 machine able to build and test the project.
//!
//! CI machines start with nothing but rustup's stable cargo, so every build and test begins
//! here; the checks are cheap (one dpkg query, one `--version`), which keeps repeated runs fast.

use std::{os::unix::fs::MetadataExt, path::Path, process::Command, time::Instant};

use anyhow::{Context, Result};

use crate::cmd::{self, say};

/// What the XDP build needs: Debian's rustc with a prebuilt `core` for the BPF target, and the
/// LLVM that bpf-linker links against.
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    // etcd-client compiles etcd's protocol definitions.
    "protobuf-compiler",
    // cargo-deb finds the package's library dependencies with dpkg-shlibdeps.
    "dpkg-dev",
];

/// What the integration tests drive: databases, real UCARP/keepalived peers, network tooling.
const TEST_PACKAGES: &[&str] = &[
    "mariadb-server",
    "mariadb-client",
    "ucarp",
    "keepalived",
    "iproute2",
    "iputils-arping",
    "iputils-ping",
    "tcpdump",
    "ethtool",
    "procps",
    "iptables",
    // One-way cuts at the test switch (`Rig::cut_one_way`).
    "nftables",
    // The quorum tests run a three-member etcd cluster.
    "etcd-server",
    "etcd-client",
    // The package check renders the man page.
    "man-db",
];

/// The bpf-linker release checked against Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Installs whatever is missing; idempotent.
pub fn ensure() -> Result<()> {
    let started = Instant::now();
    packages()?;
    bpf_linker()?;
    cargo_deb()?;
    say(format_args!(
        "setup: done in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn packages() -> Result<()> {
    let wanted: Vec<&str> = BUILD_PACKAGES
        .iter()
        .chain(TEST_PACKAGES)
        .copied()
        .collect();
    let Some(missing) = missing_packages(&wanted)? else {
        say("setup: no dpkg here; install the Debian packages' equivalents yourself");
        return Ok(());
    };
    if missing.is_empty() {
        say(format_args!(
            "setup: all {} Debian packages present",
            wanted.len()
        ));
        return Ok(());
    }
    if !is_root() {
        // A developer machine may build with rustup nightly instead, so this is not fatal here;
        // whatever truly needs a package fails later with its own message.
        say(format_args!(
            "setup: WARNING: missing Debian packages (run as root to install them): {}",
            missing.join(" ")
        ));
        return Ok(());
    }
    say(format_args!(
        "setup: installing missing Debian packages: {}",
        missing.join(" ")
    ));
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        command
    };
    cmd::run(&mut apt(&["update", "-q"]))?;
    cmd::run(apt(&["install", "-y", "-q"]).args(&missing))?;
    Ok(())
}

/// `None` when dpkg is not available (not a Debian system).
fn missing_packages(wanted: &[&str]) -> Result<Option<Vec<String>>> {
    // Unknown packages make dpkg-query exit non-zero; the output still lists the known ones.
    let output = match Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\\n"])
        .args(wanted)
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).context("running dpkg-query"),
    };
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.strip_suffix(" installed"))
        .collect();
    Ok(Some(
        wanted
            .iter()
            .filter(|name| !installed.contains(name))
            .map(|name| name.to_string())
            .collect(),
    ))
}

fn bpf_linker() -> Result<()> {
    let bin_dir = cmd::cargo_bin_dir();
    let mut probe = Command::new("bpf-linker");
    probe.arg("--version");
    cmd::prepend_path(&mut probe, &[&bin_dir])?;
    if cmd::succeeds(&mut probe) {
        say("setup: bpf-linker present");
        return Ok(());
    }
    if nightly_only_machine() {
        say("setup: WARNING: bpf-linker missing; install it (e.g. `cargo install bpf-linker`)");
        return Ok(());
    }
    say(format_args!(
        "setup: installing bpf-linker {BPF_LINKER_VERSION} against {LLVM_PREFIX} \
         (a few minutes, once)"
    ));
    let llvm_bin = Path::new(LLVM_PREFIX).join("bin");
    let mut install = cmd::cargo();
    install
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX);
    // llvm-sys finds the LLVM to link against through the llvm-config on PATH.
    cmd::prepend_path(&mut install, &[&llvm_bin])?;
    cmd::run(&mut install)
}

/// The cargo-deb release `cargo xtask deb` was checked with.
const CARGO_DEB_VERSION: &str = "3.8.0";

fn cargo_deb() -> Result<()> {
    let mut probe = cmd::cargo();
    probe.args(["deb", "--version"]);
    cmd::prepend_path(&mut probe, &[&cmd::cargo_bin_dir()])?;
    if cmd::succeeds(&mut probe) {
        say("setup: cargo-deb present");
        return Ok(());
    }
    say(format_args!(
        "setup: installing cargo-deb {CARGO_DEB_VERSION} (a minute or two, once)"
    ));
    let mut install = cmd::cargo();
    install.args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]);
    cmd::run(&mut install)
}

/// Without Debian's LLVM 22 the pinned bpf-linker build cannot work; leave the choice of linker
/// to the developer instead of failing setup for commands that may not need it.
fn nightly_only_machine() -> bool {
    !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists()
}

fn is_root() -> bool {
    // /proc/self is owned by the effective user; no libc needed for one question.
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}
