//! `cargo xtask`: the one entry point for building, testing and demonstrating the project.
//!
//! The XDP object needs a different target and toolchain than the rest of the workspace, and
//! the integration tests need root, system packages and the object embedded in the agent; this
//! tool keeps those steps in one place so a fresh machine needs nothing but `cargo xtask test`.

mod adverts;
mod bench;
mod bench_db;
mod bench_xdp;
mod chaos;
mod cmd;
mod deb;
mod demo;
mod ebpf;
mod guestbook;
mod http;
mod report;
mod scenario;
mod setup;
mod stalls;
mod tasks;
mod timeline;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test and demonstrate the cluster agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install missing Debian packages and bpf-linker (as root; quick when nothing is missing).
    Setup,
    /// Build the XDP object and the agent with the object embedded.
    Build {
        /// Build the agent with the release profile (the XDP object is always optimised).
        #[arg(long)]
        release: bool,
    },
    /// Build everything, then run `cargo test --workspace` against the agent with XDP.
    Test {
        /// Build and test with the release profile.
        #[arg(long)]
        release: bool,
        /// Passed to `cargo test` unchanged, e.g. `-p tests -- --test-threads=2`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the XDP object and attach it to an interface on its own, pinned under
    /// /sys/fs/bpf/cluster-agent/IF/ (`cluster-agent xdp load`; flags passed on, e.g.
    /// `-i eth0 --mode native --vhid 10 --vip 192.0.2.100`).
    Load {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Detach a program `load` pinned and remove its pins (`-i IF`).
    Unload {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// The per-reason counters of a program `load` pinned (`-i IF [--json]`).
    XdpStats {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Build the Debian package (agent with the XDP object, systemd unit, example
    /// configuration, man page, completions) into target/debian/, and check it installed
    /// into a scratch root.
    Deb,
    /// Run the demonstration cluster.
    Demo(demo::DemoArgs),
    /// Run a benchmark.
    Bench(bench::BenchArgs),
    /// Inject random faults into a real cluster under write load and check that no
    /// acknowledged write is lost and no two databases are writable at once.
    Chaos(chaos::ChaosArgs),
    /// The demo's guestbook service, run inside a node namespace by `demo` and `bench`.
    #[command(hide = true)]
    GuestbookServe(guestbook::ServeArgs),
    /// The client probing the VIP, run inside the client namespace by `demo` and `bench`.
    #[command(hide = true)]
    HttpProbe(http::ProbeArgs),
    /// Records the CARP/VRRP adverts crossing a switch port, run inside the switch namespace.
    #[command(hide = true)]
    AdvertWatch(adverts::WatchArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::ensure(),
        Command::Build { release } => {
            setup::ensure()?;
            tasks::build(release).map(drop)
        }
        Command::Test { release, args } => {
            setup::ensure()?;
            tasks::test(release, &args)
        }
        Command::Deb => {
            setup::ensure()?;
            deb::run().map(drop)
        }
        Command::Load { args } => tasks::agent_xdp("load", &args),
        Command::Unload { args } => tasks::agent_xdp("unload", &args),
        Command::XdpStats { args } => tasks::agent_xdp("stats", &args),
        Command::Demo(args) => {
            setup::ensure()?;
            demo::run(args)
        }
        Command::Bench(args) => {
            setup::ensure()?;
            bench::run(args)
        }
        Command::Chaos(args) => {
            setup::ensure()?;
            chaos::run(args)
        }
        Command::GuestbookServe(args) => guestbook::serve(args),
        Command::HttpProbe(args) => http::probe(args),
        Command::AdvertWatch(args) => adverts::watch(args),
    }
}
