//! `cargo xtask deb`: the Debian package, and the check `cargo xtask test` runs on it.
//!
//! The agent is built with the XDP object embedded (which cargo-deb cannot do on its own),
//! the man page and shell completions are generated from the agent's own clap definition, and
//! `cargo deb --no-build` packs them with the systemd unit and an example configuration
//! (`[package.metadata.deb]` in `cluster-agent/Cargo.toml`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::cmd::{self, say};

/// Builds the package and checks it ([`check`]); returns the `.deb`'s path.
pub fn run() -> Result<PathBuf> {
    let deb = build()?;
    check(&deb)?;
    Ok(deb)
}

fn build() -> Result<PathBuf> {
    let built = crate::tasks::build(true)?;
    let docs = built
        .agent_bin
        .parent()
        .context("the agent binary has a directory")?
        .join("docs");
    let _ = std::fs::remove_dir_all(&docs);
    cmd::run(
        Command::new(&built.agent_bin)
            .arg("generate-docs")
            .arg("--out")
            .arg(&docs),
    )?;
    cmd::run(
        Command::new("gzip")
            .args(["-9nf"])
            .arg(docs.join("cluster-agent.8")),
    )?;
    let out = crate::tasks::target_dir().join("debian");
    let _ = std::fs::remove_dir_all(&out);
    let mut c = cmd::cargo();
    c.args([
        "deb",
        "--package",
        "cluster-agent",
        "--no-build",
        "--output",
    ])
    .arg(&out)
    .current_dir(cmd::root());
    cmd::prepend_path(&mut c, &[&cmd::cargo_bin_dir()])?;
    cmd::run(&mut c)?;
    let deb = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("cargo deb wrote no .deb into {}", out.display()))?;
    say(format_args!("package: {}", deb.display()));
    Ok(deb)
}

/// Installs `deb` with `dpkg -i` into a scratch root (its own dpkg database; the machine's
/// packages are not touched) and checks what a user gets: the unit passes `systemd-analyze
/// verify` (with the database's drop-in), `cluster-agent --version` runs and says the XDP program is embedded, the man page
/// renders, the completions and the example are where the package says.
fn check(deb: &Path) -> Result<()> {
    let root = std::env::temp_dir().join(format!("cluster-agent-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = check_in(deb, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn output(c: &mut Command) -> Result<String> {
    let line = format!("{c:?}");
    let o = tests::cmd::output_within(c, Duration::from_secs(60))?;
    ensure!(
        o.status.success(),
        "{line} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn check_in(deb: &Path, root: &Path) -> Result<()> {
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(d))?;
    }
    std::fs::write(admin.join("status"), "")?;
    // The targets the unit orders itself against (sysinit, network-online, multi-user), for
    // `systemd-analyze verify` below: the machine's own units, before the package's own.
    let units = root.join("lib/systemd/system");
    std::fs::create_dir_all(&units)?;
    output(
        Command::new("cp")
            .args(["-a", "/lib/systemd/system/."])
            .arg(&units),
    )?;
    // Dependencies (libc, iproute2) are the machine's, not the scratch root's.
    output(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-depends", "--force-script-chrootless", "-i"])
            .arg(deb),
    )?;
    let listed = output(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["-L", "cluster-agent"]),
    )?;
    for want in [
        "/usr/sbin/cluster-agent",
        "/lib/systemd/system/cluster-agent@.service",
        "/usr/share/man/man8/cluster-agent.8.gz",
        "/usr/share/bash-completion/completions/cluster-agent",
        "/usr/share/zsh/vendor-completions/_cluster-agent",
        "/usr/share/fish/vendor_completions.d/cluster-agent.fish",
        "/usr/share/doc/cluster-agent/examples/web.toml.example",
        "/usr/share/doc/cluster-agent/examples/mysql.conf",
    ] {
        ensure!(
            listed.lines().any(|l| l == want) && root.join(&want[1..]).exists(),
            "the package does not install {want}:\n{listed}"
        );
    }
    let version = output(Command::new(root.join("usr/sbin/cluster-agent")).arg("--version"))?;
    ensure!(
        version.starts_with("cluster-agent ") && version.contains("XDP program embedded"),
        "--version says {version:?}"
    );
    let page = output(
        Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(root.join("usr/share/man/man8/cluster-agent.8.gz"))
            .env("MANWIDTH", "80"),
    )?;
    ensure!(
        page.contains("cluster-agent") && page.contains("switchover"),
        "the man page does not render:\n{page}"
    );
    // An instance of the template, as `systemctl enable cluster-agent@web` makes it; verify
    // resolves ExecStart's binary inside the root.
    let unit = root.join("lib/systemd/system/cluster-agent@.service");
    let instance = root.join("etc/systemd/system/cluster-agent@web.service");
    std::fs::create_dir_all(instance.parent().context("a directory")?)?;
    std::os::unix::fs::symlink(&unit, &instance)?;
    // With the database's drop-in, as the README installs it: verified together.
    let drop_in = root.join("etc/systemd/system/cluster-agent@web.service.d");
    std::fs::create_dir_all(&drop_in)?;
    std::fs::copy(
        root.join("usr/share/doc/cluster-agent/examples/mysql.conf"),
        drop_in.join("mysql.conf"),
    )?;
    let o = tests::cmd::output_within(
        Command::new("systemd-analyze")
            .arg(format!("--root={}", root.display()))
            .args(["verify", "cluster-agent@web.service"]),
        Duration::from_secs(60),
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() || text.contains("cluster-agent@") {
        bail!(
            "systemd-analyze verify of the unit failed ({}):\n{text}",
            o.status
        );
    }
    say(format_args!(
        "package check: installed into a scratch root, unit verified, {}",
        version.trim()
    ));
    Ok(())
}
