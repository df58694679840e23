//! What the environment must provide: root, `ip`, `ucarp`, `tcpdump` and the agent binary.
//!
//! Missing prerequisites fail loudly. The one way to skip the namespace tests on purpose is
//! `CLUSTER_SKIP_NETNS=1`.

use std::path::{Path, PathBuf};

/// Environment variable that skips every test needing root and network namespaces.
pub const SKIP_ENV: &str = "CLUSTER_SKIP_NETNS";
/// Environment variable naming the agent binary (set by `cargo xtask test`).
pub const AGENT_BIN_ENV: &str = "CLUSTER_AGENT_BIN";

/// True when namespace tests should run; false when they are skipped by request.
///
/// Panics with a clear message when they should run but cannot (not root, `ip` missing).
pub fn netns_available() -> bool {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {SKIP_ENV}=1");
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "network-namespace tests need root (euid is {euid}); run them as root or set {SKIP_ENV}=1 to skip them"
    );
    for tool in ["ip", "bridge"] {
        assert!(
            find_in_path(tool).is_some(),
            "`{tool}` (iproute2) is not installed; it is required by the namespace tests"
        );
    }
    true
}

/// The agent binary: `$CLUSTER_AGENT_BIN`, else `target/debug/cluster-agent` of this workspace.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(AGENT_BIN_ENV) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{AGENT_BIN_ENV}={} does not name a file",
            p.display()
        );
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("debug").join("cluster-agent");
    assert!(
        p.is_file(),
        "agent binary not found at {}; build it (`cargo build -p cluster-agent`) or set {AGENT_BIN_ENV}",
        p.display()
    );
    p
}

/// The `ucarp` binary (`$UCARP_BIN`, else found in PATH or /usr/sbin).
pub fn ucarp_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("UCARP_BIN") {
        return PathBuf::from(p);
    }
    find_in_path("ucarp")
        .or_else(|| Some(PathBuf::from("/usr/sbin/ucarp")).filter(|p| p.is_file()))
        .expect("`ucarp` is not installed (Debian package `ucarp`); the interop tests need it")
}

/// The `tcpdump` binary.
pub fn tcpdump_bin() -> PathBuf {
    find_in_path("tcpdump")
        .or_else(|| Some(PathBuf::from("/usr/bin/tcpdump")).filter(|p| p.is_file()))
        .expect("`tcpdump` is not installed; the capture tests need it")
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives inside the workspace")
        .to_path_buf()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
