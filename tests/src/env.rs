//! What the environment must provide: root, `ip`, `ucarp`, `keepalived`, `tcpdump` and the
//! agent binary.
//!
//! Missing prerequisites are errors that name what to install. The one way to skip the
//! namespace tests on purpose is `CLUSTER_SKIP_NETNS=1`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

/// Environment variable that skips every test needing root and network namespaces.
pub const SKIP_ENV: &str = "CLUSTER_SKIP_NETNS";
/// Environment variable naming the agent binary (set by `cargo xtask test`).
pub const AGENT_BIN_ENV: &str = "CLUSTER_AGENT_BIN";

/// True when namespace tests should run; false when they are skipped by request; an error
/// when they should run but cannot (not root, `ip` missing).
pub fn netns_available() -> Result<bool> {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {SKIP_ENV}=1");
        return Ok(false);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "network-namespace tests need root (euid is {euid}); run them as root or set {SKIP_ENV}=1 to skip them"
    );
    for tool in ["ip", "bridge"] {
        ensure!(
            find_in_path(tool).is_some(),
            "`{tool}` (iproute2) is not installed; it is required by the namespace tests"
        );
    }
    Ok(true)
}

/// The agent binary: `$CLUSTER_AGENT_BIN`, else `target/debug/cluster-agent` of this workspace.
pub fn agent_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(AGENT_BIN_ENV) {
        let p = PathBuf::from(p);
        ensure!(
            p.is_file(),
            "{AGENT_BIN_ENV}={} does not name a file",
            p.display()
        );
        return Ok(p);
    }
    let p = target_dir().join("debug").join("cluster-agent");
    ensure!(
        p.is_file(),
        "agent binary not found at {}; build it (`cargo xtask build`) or set {AGENT_BIN_ENV}",
        p.display()
    );
    Ok(p)
}

/// The `ucarp` binary (`$UCARP_BIN`, else found in PATH or /usr/sbin).
pub fn ucarp_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("UCARP_BIN") {
        return Ok(PathBuf::from(p));
    }
    find_in_path("ucarp").context("`ucarp` is not installed (Debian package `ucarp`)")
}

/// The `keepalived` binary.
pub fn keepalived_bin() -> Result<PathBuf> {
    find_in_path("keepalived")
        .context("`keepalived` is not installed (Debian package `keepalived`)")
}

/// The `tcpdump` binary.
pub fn tcpdump_bin() -> Result<PathBuf> {
    find_in_path("tcpdump").context("`tcpdump` is not installed; the capture tests need it")
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The workspace's target directory (`$CARGO_TARGET_DIR` if set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
