//! Building the XDP object for `bpfel-unknown-none`.
//!
//! Two toolchains can do it. Debian's rustc ships a prebuilt `core` for the BPF target, which
//! works where rustup cannot download `rust-src` (it needs `RUSTC_BOOTSTRAP=1` because aya-ebpf
//! uses unstable features). A rustup nightly with `rust-src` builds `core` itself. The flags are
//! the ones aya's own build helper would pass; that helper is not used because it insists on
//! `-Z build-std`, which defeats the prebuilt `core`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd::{self, say};

const TARGET: &str = "bpfel-unknown-none";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Where `libstd-rust-web-dev-bpf` puts `core` for the target.
const DEBIAN_BPF_CORE: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
/// Lets a developer force one toolchain when both are installed.
const TOOLCHAIN_VAR: &str = "CLUSTER_EBPF_TOOLCHAIN";

#[derive(Clone, Copy, Debug)]
enum Toolchain {
    Debian,
    Nightly,
}

/// Builds the object and returns its absolute path.
pub fn build() -> Result<PathBuf> {
    let toolchain = detect()?;
    let crate_dir = cmd::root().join("cluster-ebpf");
    let target_dir = crate_dir.join("target");
    say(format_args!(
        "building the XDP object for {TARGET} with the {toolchain:?} toolchain"
    ));

    let mut command = match toolchain {
        Toolchain::Debian => {
            let mut command = Command::new(DEBIAN_CARGO);
            command
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .env_remove("RUSTUP_TOOLCHAIN");
            command
        }
        Toolchain::Nightly => {
            let mut command = Command::new("rustup");
            command
                .args(["run", "nightly", "cargo"])
                .env_remove("RUSTC")
                .env_remove("RUSTC_BOOTSTRAP")
                .env_remove("RUSTUP_TOOLCHAIN");
            command
        }
    };
    command.args(["build", "--release", "--target", TARGET]);
    if let Toolchain::Nightly = toolchain {
        command.args(["-Z", "build-std=core"]);
    }
    // Settings meant for the host build must not leak into this one.
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
    command
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&crate_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags());
    // bpf-linker is the target's default linker; `cargo install` may have put it off PATH.
    cmd::prepend_path(&mut command, &[&cmd::cargo_bin_dir()])?;

    let started = Instant::now();
    cmd::run(&mut command)?;
    let object = target_dir.join(TARGET).join("release").join("cluster-ebpf");
    ensure!(
        object.is_file(),
        "the build succeeded but {} is missing",
        object.display()
    );
    say(format_args!(
        "XDP object ready in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        object.display()
    ));
    Ok(object)
}

/// `--cfg bpf_target_arch` tells aya-ebpf which architecture's kernel structures to use (the
/// host's, as the object runs on the machine it is built for); BTF lets the loader relocate.
fn rustflags() -> String {
    let arch = match std::env::consts::ARCH {
        "powerpc64" | "powerpc64le" => "powerpc64",
        other => other,
    };
    [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
    ]
    .join("\x1f")
}

fn detect() -> Result<Toolchain> {
    let debian = || Path::new(DEBIAN_CARGO).is_file() && Path::new(DEBIAN_BPF_CORE).is_dir();
    match std::env::var(TOOLCHAIN_VAR).as_deref() {
        Ok("debian") => return Ok(Toolchain::Debian),
        Ok("nightly") => return Ok(Toolchain::Nightly),
        Ok(other) => bail!("{TOOLCHAIN_VAR}={other}: expected `debian` or `nightly`"),
        Err(_) => {}
    }
    if debian() {
        return Ok(Toolchain::Debian);
    }
    if nightly_has_rust_src()? {
        return Ok(Toolchain::Nightly);
    }
    bail!(
        "no toolchain can build for {TARGET}: install the Debian packages rustc-web, cargo-web and \
         libstd-rust-web-dev-bpf (`cargo xtask setup` as root does), or \
         `rustup toolchain install nightly --component rust-src`"
    )
}

fn nightly_has_rust_src() -> Result<bool> {
    let Ok(output) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
    else {
        return Ok(false);
    };
    if !output.status.success() {
        return Ok(false);
    }
    let sysroot = String::from_utf8(output.stdout).context("nightly sysroot is not UTF-8")?;
    Ok(Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .is_dir())
}
