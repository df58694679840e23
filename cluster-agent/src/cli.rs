//! Command-line surface. `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, RunArgs};

#[derive(Parser, Debug)]
#[command(
    name = "cluster-agent",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CLUSTER_AGENT_BUILD_XDP"), ")"),
    about = "CARP agent (UCARP-compatible) that moves a virtual IP to a surviving node"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the agent for one vhid on one interface.
    Run(Box<RunArgs>),
    /// Show the state of a running agent.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
    },
    /// Ask a running MASTER to hand over to a peer: drain the VIP (new connections held off
    /// while the open ones finish, at most 500 ms), then fence, release the VIP and bow out.
    Switchover {
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
        /// Only this vhid (with several `[[vhid]]`); without it, every vhid this node is
        /// MASTER of hands over.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=255))]
        vhid: Option<u8>,
    },
    /// Make a running agent read its configuration again (as SIGHUP does): timers, skew,
    /// preemption, scripts and unicast peers apply without a transition; a change that needs
    /// a restart, or an invalid file, is refused and the running configuration stays.
    Reload {
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
    },
    /// Database set-up for a cluster (TLS certificates, server settings, users).
    #[command(subcommand)]
    Db(DbCmd),
    /// Write the man page (section 8) and shell completions (bash, zsh, fish) into DIR, for
    /// packaging.
    #[command(hide = true)]
    GenerateDocs {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The XDP program on its own, pinned under /sys/fs/bpf/cluster-agent/IF/ (to try the
    /// data plane on a NIC, or inspect it with bpftool); not while an agent runs there.
    #[command(subcommand)]
    Xdp(XdpCmd),
    /// Decode the CARP adverts in a pcap capture and check them against a password and VIP.
    Inspect {
        #[arg(long)]
        json: bool,
        #[arg(
            short = 'p',
            long = "pass",
            conflicts_with = "passfile",
            required_unless_present = "passfile"
        )]
        pass: Option<String>,
        #[arg(short = 'o', long)]
        passfile: Option<PathBuf>,
        /// The VIP the cluster uses (it is part of the HMAC); repeat it for every address of
        /// a vhid of several.
        #[arg(short = 'a', long = "addr", required = true)]
        addr: Vec<String>,
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCmd {
    /// Generate a CA, per-node server and client certificates, each node's MariaDB settings
    /// (TLS required, GTID strict mode, semi-sync) and the SQL creating the replication and
    /// agent users (`REQUIRE X509`), with random passwords in 0600 files.
    Bootstrap {
        /// Output directory (refused if it already holds a CA).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A node as NAME=ADDR; repeat for every node.
        #[arg(long = "node", value_name = "NAME=ADDR", required = true)]
        nodes: Vec<crate::db::NodeSpec>,
        /// Where each node will keep its files (written into its settings); default: the
        /// output directory itself, for a cluster on this machine.
        #[arg(long, value_name = "DIR")]
        install_dir: Option<PathBuf>,
        /// An address clients reach the database at (the VIP); repeat for each. Every server
        /// certificate names it, so clients can verify the server through it.
        #[arg(long = "vip", value_name = "ADDR")]
        vips: Vec<std::net::IpAddr>,
        /// Also create an application account NAME (TLS required, all rights on the schema
        /// NAME and none beyond it); its password goes to `secrets/app.pass`.
        #[arg(long, value_name = "NAME")]
        app_user: Option<String>,
    },
    /// Open this MASTER's database for writes although the agent refused to (`status` says
    /// why). Acknowledged writes that only unreachable or diverged nodes hold are given up:
    /// use it when you know this node's data is the data to keep.
    Promote {
        /// Required: this overrides the checks that keep acknowledged writes.
        #[arg(long, required = true)]
        force: bool,
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum XdpCmd {
    /// Attach the program to an interface and pin it (program, link, maps); prints their ids.
    Load {
        #[arg(short = 'i', long)]
        interface: String,
        #[arg(long, value_enum, default_value_t = crate::xdp::XdpMode::Auto)]
        mode: crate::xdp::XdpMode,
        /// Recognise this vhid's adverts (and answer ARP for the VIP when told MASTER);
        /// without it the program only counts.
        #[arg(short = 'v', long, requires = "vip")]
        vhid: Option<u8>,
        #[arg(short = 'a', long, requires = "vhid")]
        vip: Option<std::net::Ipv4Addr>,
        /// The cluster's password file (first line), to authenticate adverts.
        #[arg(short = 'o', long, requires = "vhid")]
        passfile: Option<PathBuf>,
    },
    /// Detach the pinned program and remove its pins.
    Unload {
        #[arg(short = 'i', long)]
        interface: String,
    },
    /// The pinned program's counters, summed over CPUs.
    Stats {
        #[arg(short = 'i', long)]
        interface: String,
        #[arg(long)]
        json: bool,
    },
}

/// Exit status for settings that cannot work, as distinct from runtime failures (1).
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // etcd's gRPC stack logs every frame at debug; the quorum task says what matters.
    for quiet in [
        "h2=info",
        "tower=info",
        "tonic=info",
        "hyper=info",
        "hyper_util=info",
    ] {
        filter = filter.add_directive(quiet.parse().expect("a valid directive"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Cmd::Run(args) => {
            let pass_on_command_line = args.pass.is_some();
            let again = (*args).clone();
            let reload: crate::runtime::Reloader =
                Box::new(move || again.clone().validate_all(crate::net::ifindex));
            let settings = match args.validate_all(crate::net::ifindex) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cluster-agent: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if pass_on_command_line {
                tracing::warn!(
                    "the advert password was given with -p: every user can read it in the process list; use -o FILE or `pass` in the TOML file"
                );
            }
            report(block_on(crate::runtime::run(settings, reload)))
        }
        Cmd::Status {
            json,
            control_socket,
        } => report(block_on(async move {
            let text = ask(&control_socket, "status").await?;
            if json {
                print!("{text}");
            } else {
                let status: crate::control::Status = serde_json::from_str(&text)?;
                print!("{}", status.render());
            }
            Ok(())
        })),
        Cmd::Switchover {
            control_socket,
            vhid,
        } => report(block_on(async move {
            let command = match vhid {
                Some(v) => format!("switchover {v}"),
                None => "switchover".to_string(),
            };
            let text = ask(&control_socket, &command).await?;
            let status: crate::control::Status = serde_json::from_str(&text)?;
            if let Some(e) = &status.error {
                anyhow::bail!("no switchover: {e}");
            }
            for s in std::iter::once(&status).chain(&status.other_vhids) {
                if vhid.is_none_or(|v| v == s.vhid) {
                    println!("vhid {}: state now {}", s.vhid, s.state);
                }
            }
            Ok(())
        })),
        Cmd::Reload { control_socket } => report(block_on(async move {
            let text = ask(&control_socket, "reload").await?;
            let status: crate::control::Status = serde_json::from_str(&text)?;
            if let Some(e) = status.error {
                anyhow::bail!("not reloaded: {e}");
            }
            println!("configuration reloaded (state {})", status.state);
            Ok(())
        })),
        Cmd::Db(DbCmd::Promote {
            force: _,
            control_socket,
        }) => report(block_on(async move {
            let text = ask(&control_socket, "promote-force").await?;
            let status: crate::control::Status = serde_json::from_str(&text)?;
            if let Some(e) = status.error {
                anyhow::bail!("not forced: {e}");
            }
            println!("promotion forced; `cluster-agent status` shows when the database is open");
            Ok(())
        })),
        Cmd::Db(DbCmd::Bootstrap {
            out,
            nodes,
            install_dir,
            vips,
            app_user,
        }) => {
            let mut opts = crate::db::BootstrapOptions::new(out, nodes);
            opts.install_dir = install_dir;
            opts.vips = vips;
            opts.app_user = app_user;
            report((|| {
                let b = crate::db::bootstrap(&opts)?;
                println!("CA:        {}", b.ca_cert.display());
                println!("users SQL: {} (run on every node)", b.users_sql.display());
                if let Some(f) = &b.app_password_file {
                    println!("app user:  password in {}", f.display());
                }
                for n in &b.nodes {
                    println!(
                        "node {} ({}, server_id {}): {} (agent settings: {})",
                        n.name,
                        n.addr,
                        n.server_id,
                        n.dir.display(),
                        n.agent_toml.display()
                    );
                }
                Ok(())
            })())
        }
        Cmd::Xdp(cmd) => report(xdp_cmd(cmd)),
        Cmd::GenerateDocs { out } => report(generate_docs(&out)),
        Cmd::Inspect {
            json,
            pass,
            passfile,
            addr,
            file,
        } => {
            let password = match (pass, passfile) {
                (Some(p), _) => p.into_bytes(),
                (None, Some(f)) => match std::fs::read(&f) {
                    Ok(b) => {
                        let line = b.split(|c| *c == b'\n').next().unwrap_or_default();
                        line.strip_suffix(b"\r").unwrap_or(line).to_vec()
                    }
                    Err(e) => {
                        eprintln!(
                            "cluster-agent: invalid passfile: cannot read {}: {e}",
                            f.display()
                        );
                        return ExitCode::from(EXIT_CONFIG);
                    }
                },
                (None, None) => unreachable!("clap requires one of them"),
            };
            let vips = match addr
                .iter()
                .map(|a| config::parse_vip(a).map(|(vip, _)| vip))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(vips) => vips,
                Err(e) => {
                    eprintln!("cluster-agent: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            report((|| {
                let f = std::fs::File::open(&file)
                    .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
                let found = crate::inspect::inspect(std::io::BufReader::new(f), &password, &vips)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&found)?);
                } else {
                    print!("{}", crate::inspect::render(&found));
                }
                Ok(())
            })())
        }
    }
}

fn generate_docs(out: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    std::fs::create_dir_all(out)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .section("8")
        .render(&mut page)?;
    std::fs::write(out.join("cluster-agent.8"), page)?;
    for (shell, file) in [
        (Shell::Bash, "cluster-agent.bash"),
        (Shell::Zsh, "_cluster-agent"),
        (Shell::Fish, "cluster-agent.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "cluster-agent", &mut text);
        std::fs::write(out.join(file), text)?;
    }
    Ok(())
}

fn xdp_cmd(cmd: XdpCmd) -> anyhow::Result<()> {
    use crate::xdp::pin;
    match cmd {
        XdpCmd::Load {
            interface,
            mode,
            vhid,
            vip,
            passfile,
        } => {
            if mode == crate::xdp::XdpMode::Off {
                anyhow::bail!("--mode off loads nothing");
            }
            let config = match (vhid, vip) {
                (Some(vhid), Some(vip)) => {
                    anyhow::ensure!(vhid != 0, "vhid 0 is not a CARP vhid (1-255)");
                    let password = match &passfile {
                        Some(p) => config::read_passfile(p)?,
                        None => Vec::new(),
                    };
                    Some(pin::PinConfig {
                        vhid,
                        vip,
                        password,
                        mac: crate::net::interface_mac(&interface)?,
                    })
                }
                _ => None,
            };
            let loaded = pin::load(&interface, mode, config)?;
            println!(
                "attached to {interface} in {} mode, pinned under {}",
                loaded.mode,
                loaded.dir.display()
            );
            println!("program id {}", loaded.program_id);
            for (name, id) in &loaded.maps {
                println!("map {name} id {id}");
            }
            Ok(())
        }
        XdpCmd::Unload { interface } => {
            pin::unload(&interface)?;
            println!("detached from {interface}, pins removed");
            Ok(())
        }
        XdpCmd::Stats { interface, json } => {
            let counters = pin::counters(&interface)?;
            if json {
                let map: std::collections::BTreeMap<_, _> = counters.into_iter().collect();
                println!("{}", serde_json::to_string(&map)?);
            } else {
                for (name, n) in counters {
                    println!("{name}: {n}");
                }
            }
            Ok(())
        }
    }
}

/// Sends `command`; an answer that is only `{"error": ...}` (refused) becomes the error.
async fn ask(socket: &std::path::Path, command: &str) -> anyhow::Result<String> {
    let text = crate::control::request(socket, command)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the agent at {}: {e}", socket.display()))?;
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text)
        && !map.contains_key("state")
        && let Some(why) = map.get("error").and_then(|e| e.as_str())
    {
        anyhow::bail!("the agent refused {command:?}: {why}");
    }
    Ok(text)
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn ucarp_command_line_parses() {
        let cli = Cli::try_parse_from([
            "cluster-agent",
            "run",
            "-i",
            "eth0",
            "-s",
            "10.0.0.1",
            "-v",
            "7",
            "-p",
            "pw",
            "-a",
            "10.0.0.100/24",
            "-b",
            "1",
            "-k",
            "100",
            "-r",
            "3",
            "-P",
            "-n",
            "-z",
            "-S",
            "-M",
            "-u",
            "/up",
            "-d",
            "/down",
            "-x",
            "extra",
            "--mcastip",
            "224.0.0.18",
            "--xdp",
            "off",
            "--mysql-addr",
            "10.0.0.1",
        ])
        .unwrap();
        let Cmd::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.addr, ["10.0.0.100/24"]);
        assert_eq!(args.mysql.addr.as_deref(), Some("10.0.0.1"));
        assert!(
            args.preempt && args.neutral && args.shutdown && args.ignoreifstate && args.nomcast
        );
    }
}
