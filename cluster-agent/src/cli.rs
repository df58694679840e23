//! Command-line surface. `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, RunArgs};

#[derive(Parser, Debug)]
#[command(
    name = "cluster-agent",
    version,
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
    },
    /// Database set-up for a cluster (TLS certificates, server settings, users).
    #[command(subcommand)]
    Db(DbCmd),
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
        /// The VIP the cluster uses (it is part of the HMAC).
        #[arg(short = 'a', long = "addr")]
        addr: String,
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCmd {
    /// Generate a CA, per-node server and client certificates, each node's MariaDB settings
    /// (TLS required, GTID strict mode, semi-sync) and the SQL creating the replication
    /// (`REQUIRE SSL`) and agent users, with random passwords in 0600 files.
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
            let settings = match args.validate(crate::net::ifindex) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cluster-agent: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            report(block_on(crate::runtime::run(settings)))
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
        Cmd::Switchover { control_socket } => report(block_on(async move {
            let text = ask(&control_socket, "switchover").await?;
            let status: crate::control::Status = serde_json::from_str(&text)?;
            println!("state now {}", status.state);
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
        }) => {
            let mut opts = crate::db::BootstrapOptions::new(out, nodes);
            opts.install_dir = install_dir;
            report((|| {
                let b = crate::db::bootstrap(&opts)?;
                println!("CA:        {}", b.ca_cert.display());
                println!("users SQL: {} (run on every node)", b.users_sql.display());
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
            let vip = match config::parse_vip(&addr) {
                Ok((vip, _)) => vip,
                Err(e) => {
                    eprintln!("cluster-agent: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            report((|| {
                let f = std::fs::File::open(&file)
                    .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
                let found = crate::inspect::inspect(std::io::BufReader::new(f), &password, vip)?;
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

async fn ask(socket: &std::path::Path, command: &str) -> anyhow::Result<String> {
    crate::control::request(socket, command)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the agent at {}: {e}", socket.display()))
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
        assert_eq!(args.addr.as_deref(), Some("10.0.0.100/24"));
        assert_eq!(args.mysql.addr.as_deref(), Some("10.0.0.1"));
        assert!(
            args.preempt && args.neutral && args.shutdown && args.ignoreifstate && args.nomcast
        );
    }
}
