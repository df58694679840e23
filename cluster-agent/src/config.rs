//! One set of settings, from UCARP-compatible flags and/or a TOML file, validated before anything
//! touches the network.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use std::net::IpAddr;

use crate::carp::wire::MAX_PASSWORD_LEN;
use crate::db::{DbConfig, Secret};
use crate::xdp::XdpMode;
use cluster_common::sha1::MAX_ADDRS;
use cluster_common::xdp::VIPS_ENTRIES;

pub const DEFAULT_CONTROL_SOCKET: &str = "/run/cluster-agent/agent.sock";

/// `cluster-agent run` flags. Short flags mean what they mean in UCARP, so existing command lines
/// keep working. Every field is optional here because it may come from `--config` instead.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunArgs {
    /// TOML file with the same settings (long flag names as keys); flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Interface to bind to.
    #[arg(short = 'i', long)]
    pub interface: Option<String>,
    /// This node's real IPv4 address (source of adverts, UCARP's tie-break key).
    #[arg(short = 's', long)]
    pub srcip: Option<String>,
    /// Virtual host id, 1-255.
    #[arg(short = 'v', long)]
    pub vhid: Option<u32>,
    /// Shared password (at most 19 bytes, as UCARP).
    #[arg(short = 'p', long = "pass")]
    #[serde(rename = "pass")]
    pub pass: Option<String>,
    /// Read the password from the first line of FILE.
    #[arg(short = 'o', long)]
    pub passfile: Option<PathBuf>,
    /// Virtual IPv4 address, optionally with a prefix length (default /32), or IPv6 (default
    /// /128; agents only). Repeat it (or give `addr = [...]`) for a vhid of several addresses
    /// of one family that move together, at most 11 IPv4 or 2 IPv6; UCARP hashes exactly one
    /// IPv4 address, so several are for clusters of agents only.
    #[arg(short = 'a', long = "addr")]
    #[serde(rename = "addr", default, deserialize_with = "one_or_many")]
    pub addr: Vec<String>,
    /// Advertisement base interval in seconds (0 = fast mode, only our own agents follow it).
    #[arg(short = 'b', long)]
    pub advbase: Option<u32>,
    /// Advertisement skew, 0-255, in 1/256 s.
    #[arg(short = 'k', long)]
    pub advskew: Option<u32>,
    /// Missed adverts before the master is considered dead.
    #[arg(short = 'r', long)]
    pub deadratio: Option<u32>,
    /// Take over from a less preferred master.
    #[arg(short = 'P', long)]
    #[serde(default)]
    pub preempt: bool,
    /// Do not run the down script at start-up.
    #[arg(short = 'n', long)]
    #[serde(default)]
    pub neutral: bool,
    /// Run the down script at exit even when not master.
    #[arg(short = 'z', long)]
    #[serde(default)]
    pub shutdown: bool,
    /// Ignore interface state (link down, no carrier).
    #[arg(short = 'S', long)]
    #[serde(default)]
    pub ignoreifstate: bool,
    /// Send adverts as Ethernet broadcast instead of multicast.
    #[arg(short = 'M', long)]
    #[serde(default)]
    pub nomcast: bool,
    /// Script run on becoming master: `script <interface> <vip> [xparam]`.
    #[arg(short = 'u', long)]
    pub upscript: Option<PathBuf>,
    /// Script run on becoming backup.
    #[arg(short = 'd', long)]
    pub downscript: Option<PathBuf>,
    /// Extra parameter passed to the scripts.
    #[arg(short = 'x', long)]
    pub xparam: Option<String>,
    /// Multicast group of the adverts.
    #[arg(long, alias = "mcast", short = 'm')]
    pub mcastip: Option<String>,
    /// Send adverts to this peer's address by unicast instead of to the group (repeatable;
    /// `peers = [...]`): for segments that filter multicast. Every node lists all the others;
    /// UCARP cannot take part.
    #[arg(long = "peer", value_name = "ADDR")]
    #[serde(default)]
    pub peers: Vec<String>,
    /// Send a gratuitous ARP every SECS while master.
    #[arg(long, value_name = "SECS")]
    pub garp_interval: Option<u64>,
    /// Seconds a script may run before it is killed.
    #[arg(long, value_name = "SECS")]
    pub hook_timeout: Option<u64>,
    /// Unix socket for `status`, `switchover` and `db promote` (mode 0600: root only).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (e.g. `127.0.0.1:9687`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// A group whose members may read `status` on the control socket (mode 0660); changes
    /// (`switchover`, `db promote --force`) stay with root and the agent's own user.
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
    /// XDP data plane: auto (native, then generic, then raw sockets), native, generic or off.
    #[arg(long, value_enum)]
    pub xdp: Option<XdpMode>,
    /// Let traffic for the VIP through while BACKUP (by default XDP drops it, so a VIP left
    /// behind on a backup can never answer).
    #[arg(long)]
    #[serde(default)]
    pub no_fence: bool,
    /// The local MySQL/MariaDB follows the VIP (`[mysql]` in the TOML file).
    #[command(flatten)]
    #[serde(default)]
    pub mysql: MysqlArgs,
    /// The database opens for writes only under a quorum lease on etcd (`[quorum]`).
    #[command(flatten)]
    #[serde(default)]
    pub quorum: QuorumArgs,
    /// Service checks, `[[track]]` in the TOML file (no flags): while one fails, this node
    /// advertises the demoted skew, and with `action = "bow-out"` a MASTER hands over.
    #[arg(skip)]
    #[serde(default)]
    pub track: Vec<TrackArgs>,
}

/// One `[[track]]` table: exactly one of `http`, `tcp`, `script`, `process`.
#[derive(Debug, Default, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrackArgs {
    /// Shown in `status`, logs and metrics (default: the kind and its target).
    pub name: Option<String>,
    /// `http://` or `https://` URL to GET; passes on the `expect` status.
    pub http: Option<String>,
    /// Status an HTTP check expects (default 200).
    pub expect: Option<u16>,
    /// CA certificate (PEM) for an `https://` check (default: the public web roots).
    pub ca: Option<PathBuf>,
    /// `ADDR:PORT` that must accept a TCP connection.
    pub tcp: Option<String>,
    /// A program that must exit 0 (run without arguments, in its own process group).
    pub script: Option<PathBuf>,
    /// A process that must be running, by its name (`/proc/PID/comm`).
    pub process: Option<String>,
    /// Milliseconds between probes (default 1000, 100-3 600 000).
    pub interval: Option<u64>,
    /// Milliseconds a probe may take (default: the interval, at most the interval).
    pub timeout: Option<u64>,
    /// Failures in a row that make the check fail (default 3).
    pub fall: Option<u32>,
    /// Passes in a row that make it pass again (default 2).
    pub rise: Option<u32>,
    /// `demote` (default) or `bow-out`.
    pub action: Option<crate::failover::track::TrackAction>,
}

/// What a check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Http {
        tls: bool,
        host: String,
        port: u16,
        path: String,
        expect: u16,
        ca: Option<PathBuf>,
    },
    Tcp(std::net::SocketAddr),
    Script(PathBuf),
    Process(String),
}

/// A validated `[[track]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackSettings {
    pub name: String,
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub action: crate::failover::track::TrackAction,
}

impl TrackArgs {
    fn validate(&self) -> Result<TrackSettings, ConfigError> {
        let kinds = [
            self.http.is_some(),
            self.tcp.is_some(),
            self.script.is_some(),
            self.process.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(invalid(
                "track",
                self.name.as_deref().unwrap_or("(unnamed)"),
                "give exactly one of http, tcp, script, process",
            ));
        }
        let (check, default_name) = if let Some(url) = &self.http {
            let check = parse_http(url, self.expect.unwrap_or(200), self.ca.clone())?;
            (check, format!("http {url}"))
        } else if let Some(t) = &self.tcp {
            let addr = t
                .parse()
                .map_err(|_| invalid("track tcp", t, "must be ADDR:PORT"))?;
            (Check::Tcp(addr), format!("tcp {t}"))
        } else if let Some(p) = &self.script {
            if !p.is_absolute() {
                return Err(invalid(
                    "track script",
                    p.display(),
                    "must be an absolute path",
                ));
            }
            (Check::Script(p.clone()), format!("script {}", p.display()))
        } else {
            let name = self.process.clone().unwrap_or_default();
            // /proc/PID/comm holds at most 15 bytes.
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                return Err(invalid(
                    "track process",
                    &name,
                    "must be a process name of 1-15 bytes",
                ));
            }
            (Check::Process(name.clone()), format!("process {name}"))
        };
        if self.expect.is_some() && self.http.is_none() || self.ca.is_some() && self.http.is_none()
        {
            return Err(invalid(
                "track",
                &default_name,
                "expect and ca belong to an http check",
            ));
        }
        let interval = self.interval.unwrap_or(1000);
        if !(100..=3_600_000).contains(&interval) {
            return Err(invalid(
                "track interval",
                interval,
                "must be 100-3600000 ms",
            ));
        }
        let timeout = self.timeout.unwrap_or(interval);
        if timeout == 0 || timeout > interval {
            return Err(invalid(
                "track timeout",
                timeout,
                "must be 1 ms up to the interval",
            ));
        }
        let fall = self.fall.unwrap_or(3);
        let rise = self.rise.unwrap_or(2);
        for (setting, v) in [("track fall", fall), ("track rise", rise)] {
            if !(1..=100).contains(&v) {
                return Err(invalid(setting, v, "must be 1-100"));
            }
        }
        Ok(TrackSettings {
            name: self.name.clone().unwrap_or(default_name),
            check,
            interval: Duration::from_millis(interval),
            timeout: Duration::from_millis(timeout),
            fall,
            rise,
            action: self.action.unwrap_or_default(),
        })
    }
}

/// `http://host[:port]/path` or `https://...`; the host is an address or a name.
fn parse_http(url: &str, expect: u16, ca: Option<PathBuf>) -> Result<Check, ConfigError> {
    let bad = |why| invalid("track http", url, why);
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    if ca.is_some() && !tls {
        return Err(bad("a ca belongs to an https:// check"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let port_of = |p: Option<&str>| match p {
        None => Ok(default_port),
        Some(p) => p.parse::<u16>().map_err(|_| bad("bad port")),
    };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        // An IPv6 literal: [addr] or [addr]:port.
        let (h, after) = r.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h, port_of(after.strip_prefix(':'))?)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, port_of(Some(p))?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
        return Err(bad("must be scheme://host[:port]/path"));
    }
    if !(100..=599).contains(&expect) {
        return Err(invalid(
            "track expect",
            expect,
            "must be an HTTP status, 100-599",
        ));
    }
    Ok(Check::Http {
        tls,
        host: host.to_string(),
        port,
        path: path.to_string(),
        expect,
        ca,
    })
}

/// `[quorum]`: the master's database opens for writes only while it holds the cluster's
/// leader key in etcd under a live lease, so a master cut off from the majority stops writing
/// before anyone else starts. Without it nothing changes.
#[derive(Args, Debug, Default, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuorumArgs {
    /// An etcd member's client URL, `http://` on a trusted segment or `https://` (repeat the
    /// flag for each member); setting one enables the section.
    #[arg(id = "quorum-endpoint", long = "quorum-endpoint", value_name = "URL")]
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster (default `/cluster-agent/vhid-<vhid>`); the leader key is
    /// `<prefix>/leader`.
    #[arg(id = "quorum-prefix", long = "quorum-prefix")]
    pub prefix: Option<String>,
    /// Lease TTL in seconds, 3-300 (default: the whole seconds of this node's master-down
    /// time, at least 5: the database may stay open two thirds of it without a renewal,
    /// which must outlast an etcd leader election).
    #[arg(id = "quorum-ttl", long = "quorum-ttl", value_name = "SECS")]
    pub ttl: Option<u64>,
    /// CA that etcd's server certificates chain to (needed for `https://`).
    #[arg(id = "quorum-ca", long = "quorum-ca", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for etcd with `--client-cert-auth`.
    #[arg(id = "quorum-cert", long = "quorum-cert", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    #[arg(id = "quorum-key", long = "quorum-key", value_name = "PEM")]
    pub key: Option<PathBuf>,
}

/// The shortest default lease TTL (s): two thirds of it, the time the database stays open
/// without a renewal, outlasts an etcd leader election on an idle machine (one to two
/// election timeouts, 1 s by default, and a round of votes). A loaded machine can take
/// longer (over 3 s was seen): raise the TTL there.
const DEFAULT_MIN_TTL_SECS: u64 = 5;

/// The lease TTL when none is given: the master-down time in whole seconds, at least
/// [`DEFAULT_MIN_TTL_SECS`].
pub fn default_ttl(master_down: Duration) -> Duration {
    Duration::from_secs(master_down.as_secs().max(DEFAULT_MIN_TTL_SECS))
}

/// Validated `[quorum]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumSettings {
    pub endpoints: Vec<String>,
    /// The leader key.
    pub key: String,
    pub ttl: Duration,
    pub ca: Option<PathBuf>,
    /// Certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl QuorumArgs {
    fn merge(self, file: QuorumArgs) -> QuorumArgs {
        QuorumArgs {
            endpoints: if self.endpoints.is_empty() {
                file.endpoints
            } else {
                self.endpoints
            },
            prefix: self.prefix.or(file.prefix),
            ttl: self.ttl.or(file.ttl),
            ca: self.ca.or(file.ca),
            cert: self.cert.or(file.cert),
            key: self.key.or(file.key),
        }
    }

    /// `master_down`: this node's own, from which the default TTL comes.
    fn validate(
        self,
        vhid: u32,
        master_down: Duration,
        db: bool,
    ) -> Result<Option<QuorumSettings>, ConfigError> {
        if self == QuorumArgs::default() {
            return Ok(None);
        }
        if self.endpoints.is_empty() {
            return Err(ConfigError::Missing(
                "quorum endpoints (--quorum-endpoint, once per etcd member)",
            ));
        }
        if !db {
            return Err(invalid(
                "quorum-endpoint",
                self.endpoints.join(","),
                "the quorum lease guards a database: it needs the [mysql] section",
            ));
        }
        let mut tls = false;
        for e in &self.endpoints {
            match e.split_once("://") {
                Some(("https", rest)) if !rest.is_empty() => tls = true,
                Some(("http", rest)) if !rest.is_empty() => {}
                _ => {
                    return Err(invalid(
                        "quorum-endpoint",
                        e,
                        "must be http://HOST:PORT or https://HOST:PORT",
                    ));
                }
            }
        }
        if tls && self.ca.is_none() {
            return Err(ConfigError::Missing(
                "quorum ca (--quorum-ca): https endpoints are verified against it",
            ));
        }
        let identity = match (self.cert, self.key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "quorum-cert",
                    "one of --quorum-cert and --quorum-key",
                    "give both or neither",
                ));
            }
        };
        if identity.is_some() && !tls {
            return Err(invalid(
                "quorum-cert",
                self.endpoints.join(","),
                "a client certificate needs https:// endpoints",
            ));
        }
        let ttl = self
            .ttl
            .unwrap_or_else(|| default_ttl(master_down).as_secs());
        if !(3..=300).contains(&ttl) {
            return Err(invalid(
                "quorum-ttl",
                ttl,
                "must be 3-300 s (with less, an etcd leader election closes the database)",
            ));
        }
        let prefix = self
            .prefix
            .unwrap_or_else(|| format!("/cluster-agent/vhid-{vhid}"));
        if !prefix.starts_with('/') || prefix.ends_with('/') {
            return Err(invalid(
                "quorum-prefix",
                prefix,
                "must start with / and not end with one",
            ));
        }
        Ok(Some(QuorumSettings {
            endpoints: self.endpoints,
            key: format!("{prefix}/leader"),
            ttl: Duration::from_secs(ttl),
            ca: self.ca,
            identity,
        }))
    }
}

/// `[mysql]`: without it the agent is a pure VIP manager. Passwords come from files or the
/// environment (`CLUSTER_AGENT_DB_ADMIN_PASSWORD`, `CLUSTER_AGENT_DB_REPL_PASSWORD`), never
/// from the command line.
#[derive(Args, Debug, Default, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MysqlArgs {
    /// CA certificate every server's certificate must chain to; setting it enables the section.
    #[arg(id = "mysql-ca", long = "mysql-ca", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Address of the local server (default: --srcip, which its certificate names).
    #[arg(id = "mysql-addr", long = "mysql-addr")]
    pub addr: Option<String>,
    /// Port of every server in the cluster (default 3306).
    #[arg(id = "mysql-port", long = "mysql-port")]
    pub port: Option<u16>,
    /// Client certificate and key the agent presents.
    #[arg(
        id = "mysql-client-cert",
        long = "mysql-client-cert",
        value_name = "PEM"
    )]
    pub client_cert: Option<PathBuf>,
    #[arg(id = "mysql-client-key", long = "mysql-client-key", value_name = "PEM")]
    pub client_key: Option<PathBuf>,
    /// CA, certificate and key for replication, as paths the database server itself can read.
    #[arg(
        id = "mysql-repl-ssl-ca",
        long = "mysql-repl-ssl-ca",
        value_name = "PEM"
    )]
    pub repl_ssl_ca: Option<PathBuf>,
    #[arg(
        id = "mysql-repl-ssl-cert",
        long = "mysql-repl-ssl-cert",
        value_name = "PEM"
    )]
    pub repl_ssl_cert: Option<PathBuf>,
    #[arg(
        id = "mysql-repl-ssl-key",
        long = "mysql-repl-ssl-key",
        value_name = "PEM"
    )]
    pub repl_ssl_key: Option<PathBuf>,
    #[arg(id = "mysql-admin-user", long = "mysql-admin-user")]
    pub admin_user: Option<String>,
    #[arg(
        id = "mysql-admin-password-file",
        long = "mysql-admin-password-file",
        value_name = "FILE"
    )]
    pub admin_password_file: Option<PathBuf>,
    #[arg(id = "mysql-repl-user", long = "mysql-repl-user")]
    pub repl_user: Option<String>,
    #[arg(
        id = "mysql-repl-password-file",
        long = "mysql-repl-password-file",
        value_name = "FILE"
    )]
    pub repl_password_file: Option<PathBuf>,
    /// Longest wait for the relay log to be applied before a promotion gives up (seconds).
    #[arg(
        id = "mysql-promote-timeout",
        long = "mysql-promote-timeout",
        value_name = "SECS"
    )]
    pub promote_timeout: Option<u64>,
    /// Replication lag above which this node advertises a demoted skew (seconds).
    #[arg(id = "mysql-max-lag", long = "mysql-max-lag", value_name = "SECS")]
    pub max_lag: Option<u64>,
    /// How often a replica samples the master's server (milliseconds).
    #[arg(
        id = "mysql-check-interval",
        long = "mysql-check-interval",
        value_name = "MS"
    )]
    pub check_interval: Option<u64>,
    /// Add the VIP before promoting the database rather than after (faster, less safe).
    #[arg(id = "mysql-vip-first", long = "mysql-vip-first")]
    #[serde(default)]
    pub vip_first: bool,
    /// Every database node's address (repeat the flag; the same list on every node, this
    /// node's own address may be in it). A node that wins without a live master to compare
    /// with opens its database only when it can show that none of these holds more.
    #[arg(id = "mysql-node", long = "mysql-node", value_name = "ADDR")]
    #[serde(default)]
    pub nodes: Vec<String>,
}

impl MysqlArgs {
    fn merge(self, file: MysqlArgs) -> MysqlArgs {
        MysqlArgs {
            ca: self.ca.or(file.ca),
            addr: self.addr.or(file.addr),
            port: self.port.or(file.port),
            client_cert: self.client_cert.or(file.client_cert),
            client_key: self.client_key.or(file.client_key),
            repl_ssl_ca: self.repl_ssl_ca.or(file.repl_ssl_ca),
            repl_ssl_cert: self.repl_ssl_cert.or(file.repl_ssl_cert),
            repl_ssl_key: self.repl_ssl_key.or(file.repl_ssl_key),
            admin_user: self.admin_user.or(file.admin_user),
            admin_password_file: self.admin_password_file.or(file.admin_password_file),
            repl_user: self.repl_user.or(file.repl_user),
            repl_password_file: self.repl_password_file.or(file.repl_password_file),
            promote_timeout: self.promote_timeout.or(file.promote_timeout),
            max_lag: self.max_lag.or(file.max_lag),
            check_interval: self.check_interval.or(file.check_interval),
            vip_first: self.vip_first || file.vip_first,
            nodes: if self.nodes.is_empty() {
                file.nodes
            } else {
                self.nodes
            },
        }
    }

    fn is_empty(&self) -> bool {
        *self == MysqlArgs::default()
    }

    /// The database settings, or `None` when the section is absent.
    fn validate(self, src: Ipv4Addr) -> Result<Option<DbSettings>, ConfigError> {
        if self.is_empty() {
            return Ok(None);
        }
        let ca = self
            .ca
            .ok_or(ConfigError::Missing("mysql ca (--mysql-ca)"))?;
        let addr: Ipv4Addr = match &self.addr {
            None => src,
            Some(a) => a
                .parse()
                .map_err(|_| invalid("mysql-addr", a, "must be an IPv4 address"))?,
        };
        let secret = |file: &Option<PathBuf>, env: &str, setting: &'static str| {
            match file {
                Some(f) => Secret::from_file(f),
                None => Secret::from_env(env),
            }
            .map_err(|e| ConfigError::Secret {
                setting,
                why: e.to_string(),
            })
        };
        let admin_password = secret(
            &self.admin_password_file,
            ADMIN_PASSWORD_ENV,
            "mysql-admin-password-file",
        )?;
        let repl_password = secret(
            &self.repl_password_file,
            REPL_PASSWORD_ENV,
            "mysql-repl-password-file",
        )?;
        let mut db = DbConfig::new(
            IpAddr::V4(addr),
            self.port.unwrap_or(3306),
            ca,
            admin_password,
            repl_password,
        );
        if let Some(u) = self.admin_user {
            db.admin_user = u;
        }
        if let Some(u) = self.repl_user {
            db.repl_user = u;
        }
        db.client_cert = self.client_cert;
        db.client_key = self.client_key;
        db.repl_ssl_ca = self.repl_ssl_ca;
        db.repl_ssl_cert = self.repl_ssl_cert;
        db.repl_ssl_key = self.repl_ssl_key;
        let check_interval = self.check_interval.unwrap_or(200);
        if !(10..=60_000).contains(&check_interval) {
            return Err(invalid(
                "mysql-check-interval",
                check_interval,
                "must be 10-60000 ms",
            ));
        }
        let mut nodes = Vec::new();
        for n in &self.nodes {
            let a: Ipv4Addr = n
                .parse()
                .map_err(|_| invalid("mysql-node", n, "must be an IPv4 address"))?;
            if a != addr && !nodes.contains(&a) {
                nodes.push(a);
            }
        }
        if nodes.is_empty() {
            return Err(ConfigError::Missing(
                "mysql nodes (--mysql-node, once per database node of the cluster)",
            ));
        }
        let promote_timeout = self.promote_timeout.unwrap_or(10);
        if !(1..=3600).contains(&promote_timeout) {
            return Err(invalid(
                "mysql-promote-timeout",
                promote_timeout,
                "must be 1-3600 s",
            ));
        }
        let max_lag = self.max_lag.unwrap_or(5);
        if max_lag > 86_400 {
            return Err(invalid("mysql-max-lag", max_lag, "must be at most 86400 s"));
        }
        Ok(Some(DbSettings {
            db,
            addr,
            nodes,
            promote_timeout: Duration::from_secs(promote_timeout),
            max_lag: Duration::from_secs(max_lag),
            check_interval: Duration::from_millis(check_interval),
            vip_first: self.vip_first,
        }))
    }
}

pub const ADMIN_PASSWORD_ENV: &str = "CLUSTER_AGENT_DB_ADMIN_PASSWORD";
pub const REPL_PASSWORD_ENV: &str = "CLUSTER_AGENT_DB_REPL_PASSWORD";

/// Validated `[mysql]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DbSettings {
    pub db: DbConfig,
    /// This node's database address.
    pub addr: Ipv4Addr,
    /// Every other database node.
    pub nodes: Vec<Ipv4Addr>,
    pub promote_timeout: Duration,
    pub max_lag: Duration,
    pub check_interval: Duration,
    pub vip_first: bool,
}

/// How adverts travel between the nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// To the multicast group, as UCARP does by default.
    Multicast(Ipv4Addr),
    /// To the group address inside Ethernet broadcast frames (UCARP's `--nomcast`).
    Broadcast(Ipv4Addr),
    /// To each peer's own address: agent-only clusters where multicast is filtered.
    Unicast(Vec<Ipv4Addr>),
}

impl Delivery {
    /// Where this node's adverts go, one packet each.
    pub fn destinations(&self) -> &[Ipv4Addr] {
        match self {
            Delivery::Multicast(g) | Delivery::Broadcast(g) => std::slice::from_ref(g),
            Delivery::Unicast(peers) => peers,
        }
    }

    /// The destination address of the adverts this node accepts: the group, or with unicast
    /// peers this node's own address `src`.
    pub fn accepted_on(&self, src: Ipv4Addr) -> Ipv4Addr {
        match self {
            Delivery::Multicast(g) | Delivery::Broadcast(g) => *g,
            Delivery::Unicast(_) => src,
        }
    }

    /// The peers adverts may come from, if they are listed.
    pub fn peers(&self) -> Option<&[Ipv4Addr]> {
        match self {
            Delivery::Unicast(peers) => Some(peers),
            _ => None,
        }
    }
}

/// Validated settings: everything the runtime needs, in the types it needs.
#[derive(Clone)]
pub struct Settings {
    pub interface: String,
    pub ifindex: u32,
    pub src: Ipv4Addr,
    pub vhid: u8,
    pub password: Vec<u8>,
    /// The vhid's addresses in the order given, never empty: they are added, announced and
    /// removed together, and adverts authenticate all of them.
    pub vips: Vec<VipAddr>,
    pub advbase: u8,
    pub advskew: u8,
    pub deadratio: u8,
    pub preempt: bool,
    pub neutral: bool,
    pub shutdown_hook: bool,
    pub ignore_ifstate: bool,
    pub delivery: Delivery,
    pub upscript: Option<PathBuf>,
    pub downscript: Option<PathBuf>,
    pub xparam: Option<String>,
    pub garp_interval: Option<Duration>,
    pub hook_timeout: Duration,
    pub control_socket: PathBuf,
    /// The group allowed to read `status` (its gid).
    pub control_group: Option<u32>,
    pub metrics: Option<std::net::SocketAddr>,
    pub tracks: Vec<TrackSettings>,
    pub xdp: XdpMode,
    pub fence: bool,
    pub db: Option<DbSettings>,
    pub quorum: Option<QuorumSettings>,
}

/// One virtual address and the prefix length it is added with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for VipAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Settings {
    /// The first address: the one the scripts are given, as UCARP gives its only one.
    pub fn vip(&self) -> IpAddr {
        self.vips[0].addr
    }

    /// Every address of the vhid, as adverts authenticate them.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.vips.iter().map(|v| v.addr).collect()
    }

    /// The IPv4 addresses: all of them, or none for an IPv6 vhid.
    pub fn addrs_v4(&self) -> Vec<Ipv4Addr> {
        self.vips
            .iter()
            .filter_map(|v| match v.addr {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// An IPv6 vhid: adverts over IPv6 to ff02::12 from the interface's link-local address,
    /// neighbour advertisements instead of gratuitous ARP, no XDP. `src` and `delivery`
    /// still name the node's IPv4 side, which such a vhid does not use.
    pub fn is_ipv6(&self) -> bool {
        self.vips[0].addr.is_ipv6()
    }

    /// Whether `addr` is one of this vhid's.
    pub fn owns(&self, addr: IpAddr) -> bool {
        self.vips.iter().any(|v| v.addr == addr)
    }

    /// What the election runs on.
    pub fn carp_params(&self) -> crate::carp::machine::Params {
        crate::carp::machine::Params {
            src: self.src.into(),
            advbase: self.advbase,
            advskew: self.advskew,
            deadratio: self.deadratio,
            preempt: self.preempt,
            garp_interval: self.garp_interval,
        }
    }
}

impl std::fmt::Debug for Settings {
    // Hand-written so the password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("interface", &self.interface)
            .field("src", &self.src)
            .field("vhid", &self.vhid)
            .field("vips", &self.vips)
            .field("advbase", &self.advbase)
            .field("advskew", &self.advskew)
            .field("deadratio", &self.deadratio)
            .field("preempt", &self.preempt)
            .field("delivery", &self.delivery)
            .field("xdp", &self.xdp)
            .finish_non_exhaustive()
    }
}

/// A setting that cannot work. The message names the setting, so one line tells the operator
/// what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing setting: {0}")]
    Missing(&'static str),
    #[error("invalid {setting}: {value:?} ({why})")]
    Invalid {
        setting: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("invalid passfile: cannot read {path}: {source}")]
    Passfile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: cannot read {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {path}: {source}")]
    ConfigSyntax {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid {setting}: {why}")]
    Secret { setting: &'static str, why: String },
    #[error("invalid interface: {0:?} does not exist")]
    UnknownInterface(String),
    /// A setting in the wrong place of a file with `[[vhid]]` tables.
    #[error("invalid {setting}: {why}")]
    Misplaced {
        setting: &'static str,
        why: &'static str,
    },
    /// What is wrong with one `[[vhid]]` table (numbered from 1 in file order).
    #[error("[[vhid]] table {table}{}: {source}", vhid_of(.vhid))]
    InTable {
        table: usize,
        vhid: Option<u32>,
        source: Box<ConfigError>,
    },
    /// Two `[[vhid]]` tables claim what an agent holds once.
    #[error("invalid {setting}: {value} in [[vhid]] tables {first} and {second} ({why})")]
    Duplicate {
        setting: &'static str,
        value: String,
        first: usize,
        second: usize,
        why: &'static str,
    },
    /// The config file describes several vhids where the caller runs exactly one.
    #[error(
        "invalid vhid: the config file has {0} [[vhid]] tables where exactly one vhid is expected"
    )]
    NotOneVhid(usize),
}

fn vhid_of(vhid: &Option<u32>) -> String {
    vhid.map(|v| format!(" (vhid {v})")).unwrap_or_default()
}

fn invalid(setting: &'static str, value: impl ToString, why: &'static str) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        why,
    }
}

/// One `[[vhid]]` table of the config file, as read.
struct VhidTable {
    args: RunArgs,
    /// The on/off keys the table sets to `false` in so many words (see [`RunArgs::switches`]).
    off: Vec<&'static str>,
}

/// The `--config` file: its top level and, when `vhid` is an array, its `[[vhid]]` tables.
struct ConfigFile {
    top: RunArgs,
    tables: Option<Vec<VhidTable>>,
}

/// Reads the file. The document is parsed once with its spans, so that an error inside a
/// `[[vhid]]` table is reported with its line as one at the top level is.
fn read_config(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ConfigFile {
        path: path.to_owned(),
        source,
    })?;
    let syntax = |mut source: toml::de::Error| {
        source.set_input(Some(&text));
        ConfigError::ConfigSyntax {
            path: path.to_owned(),
            source: Box::new(source),
        }
    };
    let root = toml::de::DeTable::parse(&text).map_err(syntax)?;
    let span = root.span();
    let mut top = root.into_inner();
    // `vhid = 9` stays a key of the top level (the single-vhid form); an array is the tables.
    let tables = match top.get("vhid").map(|v| v.get_ref().as_array()) {
        Some(Some(_)) => {
            let Some(toml::de::DeValue::Array(items)) = top.remove("vhid").map(|v| v.into_inner())
            else {
                unreachable!("checked above")
            };
            let mut tables = Vec::with_capacity(items.len());
            for item in items.iter() {
                let off = match item.get_ref().as_table() {
                    Some(t) => RunArgs::default()
                        .switches()
                        .into_iter()
                        .map(|(key, _)| key)
                        .filter(|key| {
                            t.get(*key).and_then(|v| v.get_ref().as_bool()) == Some(false)
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let args = RunArgs::deserialize(toml::de::ValueDeserializer::from(item.clone()))
                    .map_err(syntax)?;
                tables.push(VhidTable { args, off });
            }
            Some(tables)
        }
        _ => None,
    };
    let top = RunArgs::deserialize(toml::de::Deserializer::from(toml::Spanned::new(span, top)))
        .map_err(syntax)?;
    Ok(ConfigFile { top, tables })
}

impl RunArgs {
    /// Fills unset flags from the top level of the `--config` file, if any: the settings of
    /// the one vhid, or with `[[vhid]]` tables the common settings every table inherits
    /// (without the tables: [`RunArgs::validate_all`] applies them).
    pub fn merge_file(self) -> Result<RunArgs, ConfigError> {
        Ok(self.layers()?.0)
    }

    /// The flags over the file's top level, and the file's `[[vhid]]` tables if it has them.
    fn layers(self) -> Result<(RunArgs, Option<Vec<VhidTable>>), ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok((self, None));
        };
        let file = read_config(&path)?;
        Ok((self.or(file.top), file.tables))
    }

    /// `self` over `fallback`, setting by setting: the one merge, used for flags over the
    /// file's top level and for a `[[vhid]]` table over those common settings. A value or a
    /// non-empty list in `self` wins; on/off settings are ORed (`preempt = false` cannot be
    /// told from a missing key, so a layer can switch one on, never off); `[mysql]` and
    /// `[quorum]` merge key by key.
    fn or(self, fallback: RunArgs) -> RunArgs {
        fn list<T>(mine: Vec<T>, fallback: Vec<T>) -> Vec<T> {
            if mine.is_empty() { fallback } else { mine }
        }
        // The password is one setting given two ways: a layer that gives either replaces both.
        let (pass, passfile) = if self.pass.is_some() || self.passfile.is_some() {
            (self.pass, self.passfile)
        } else {
            (fallback.pass, fallback.passfile)
        };
        RunArgs {
            config: self.config.or(fallback.config),
            interface: self.interface.or(fallback.interface),
            srcip: self.srcip.or(fallback.srcip),
            vhid: self.vhid.or(fallback.vhid),
            pass,
            passfile,
            addr: list(self.addr, fallback.addr),
            advbase: self.advbase.or(fallback.advbase),
            advskew: self.advskew.or(fallback.advskew),
            deadratio: self.deadratio.or(fallback.deadratio),
            preempt: self.preempt || fallback.preempt,
            neutral: self.neutral || fallback.neutral,
            shutdown: self.shutdown || fallback.shutdown,
            ignoreifstate: self.ignoreifstate || fallback.ignoreifstate,
            nomcast: self.nomcast || fallback.nomcast,
            upscript: self.upscript.or(fallback.upscript),
            downscript: self.downscript.or(fallback.downscript),
            xparam: self.xparam.or(fallback.xparam),
            mcastip: self.mcastip.or(fallback.mcastip),
            peers: list(self.peers, fallback.peers),
            garp_interval: self.garp_interval.or(fallback.garp_interval),
            hook_timeout: self.hook_timeout.or(fallback.hook_timeout),
            control_socket: self.control_socket.or(fallback.control_socket),
            control_group: self.control_group.or(fallback.control_group),
            metrics: self.metrics.or(fallback.metrics),
            track: list(self.track, fallback.track),
            xdp: self.xdp.or(fallback.xdp),
            no_fence: self.no_fence || fallback.no_fence,
            mysql: self.mysql.merge(fallback.mysql),
            quorum: self.quorum.merge(fallback.quorum),
        }
    }

    /// The on/off settings by key, which [`RunArgs::or`] ORs.
    fn switches(&self) -> [(&'static str, bool); 6] {
        [
            ("preempt", self.preempt),
            ("neutral", self.neutral),
            ("shutdown", self.shutdown),
            ("ignoreifstate", self.ignoreifstate),
            ("nomcast", self.nomcast),
            ("no-fence", self.no_fence),
        ]
    }

    /// Checks every setting of an agent that runs exactly one vhid; `ifindex` resolves the
    /// interface name (a lookup, not a change). A config file with several `[[vhid]]` tables
    /// is refused ([`ConfigError::NotOneVhid`]); [`RunArgs::validate_all`] takes it.
    pub fn validate(self, ifindex: impl Fn(&str) -> Option<u32>) -> Result<Settings, ConfigError> {
        let mut all = self.validate_all(ifindex)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(ConfigError::NotOneVhid(n)),
        }
    }

    /// Checks every setting of every vhid the agent runs, one [`Settings`] each, in file order;
    /// `ifindex` resolves interface names.
    ///
    /// In the TOML file `vhid` is either an integer, the single-vhid form (flags over the file,
    /// one `Settings`), or an array of tables `[[vhid]]`, each one vhid with the same keys as
    /// the top level (`vhid = N` in it is the id; `[[vhid.track]]`, `[vhid.mysql]`,
    /// `[vhid.quorum]` nest). With tables:
    ///
    /// - The common settings are the flags over the top-level keys; each table's own keys
    ///   override them (on/off keys are ORed: see [`RunArgs::or`], and a table that says
    ///   `false` to one the common settings switched on is refused rather than ignored).
    ///   Top-level `[[track]]` applies to every table without `[[vhid.track]]` of its own.
    /// - `vhid` and `addr` belong in each table: the `-v`/`-a` flags and a top-level `addr`
    ///   are refused, since they would name the same vhid or VIP twice.
    /// - `[mysql]` and `[quorum]` (and their flags) belong in the one table whose VIP the
    ///   database follows, so they are refused at the top level: one local database server
    ///   follows one VIP, hence at most one table with `[vhid.mysql]`; `[vhid.quorum]` guards
    ///   that database, so it is refused in a table without it.
    /// - `control-socket`, `control-group`, `metrics` and `xdp` are agent-wide (one control
    ///   socket, one metrics endpoint, one XDP program): refused inside a table.
    /// - vhids are unique within the agent (the one XDP program keys its maps by vhid), and
    ///   so are VIPs (two vhids cannot both own one address); `vhid = []` is refused.
    pub fn validate_all(
        self,
        ifindex: impl Fn(&str) -> Option<u32>,
    ) -> Result<Vec<Settings>, ConfigError> {
        let (common, tables) = self.layers()?;
        let Some(tables) = tables else {
            return Ok(vec![common.settings(&ifindex)?]);
        };
        if tables.is_empty() {
            return Err(invalid("vhid", "[]", "give at least one [[vhid]] table"));
        }
        let misplaced = |setting, why| Err(ConfigError::Misplaced { setting, why });
        let per_table = "with [[vhid]] tables, vhid and addr belong in each [[vhid]] table";
        if common.vhid.is_some() {
            return misplaced("vhid", per_table);
        }
        if !common.addr.is_empty() {
            return misplaced("addr", per_table);
        }
        if !common.mysql.is_empty() {
            return misplaced(
                "mysql",
                "with [[vhid]] tables, [mysql] and its flags go inside the one table whose VIP the database follows",
            );
        }
        if common.quorum != QuorumArgs::default() {
            return misplaced(
                "quorum",
                "with [[vhid]] tables, [quorum] and its flags go inside the table with [vhid.mysql]",
            );
        }
        let mut all: Vec<Settings> = Vec::with_capacity(tables.len());
        for (i, table) in tables.into_iter().enumerate() {
            let vhid = table.args.vhid;
            let in_table = |source| ConfigError::InTable {
                table: i + 1,
                vhid,
                source: Box::new(source),
            };
            let t = &table.args;
            for (setting, set) in [
                ("control-socket", t.control_socket.is_some()),
                ("control-group", t.control_group.is_some()),
                ("metrics", t.metrics.is_some()),
                ("xdp", t.xdp.is_some()),
            ] {
                if set {
                    return Err(in_table(ConfigError::Misplaced {
                        setting,
                        why: "one per agent (one control socket, one metrics endpoint, one XDP program): set it at the top level",
                    }));
                }
            }
            for (setting, on) in common.switches() {
                if on && table.off.contains(&setting) {
                    return Err(in_table(ConfigError::Misplaced {
                        setting,
                        why: "a flag or the top level switched it on for every table; a table cannot switch it off (set it per table instead)",
                    }));
                }
            }
            let s = table
                .args
                .or(common.clone())
                .settings(&ifindex)
                .map_err(in_table)?;
            let duplicate = |setting, value: String, why, first: usize| ConfigError::Duplicate {
                setting,
                value,
                first: first + 1,
                second: i + 1,
                why,
            };
            if let Some(j) = all.iter().position(|o| o.vhid == s.vhid) {
                return Err(duplicate(
                    "vhid",
                    s.vhid.to_string(),
                    "one XDP program keys its maps by vhid: each vhid once per agent",
                    j,
                ));
            }
            for vip in &s.vips {
                if let Some(j) = all.iter().position(|o| o.owns(vip.addr)) {
                    return Err(duplicate(
                        "addr",
                        vip.addr.to_string(),
                        "two vhids cannot both own one VIP",
                        j,
                    ));
                }
            }
            if s.db.is_some()
                && let Some(j) = all.iter().position(|o| o.db.is_some())
            {
                return Err(duplicate(
                    "mysql",
                    "[vhid.mysql]".to_string(),
                    "one local database server follows one VIP",
                    j,
                ));
            }
            all.push(s);
        }
        let v4: usize = all.iter().map(|s| s.addrs_v4().len()).sum();
        if all[0].xdp != XdpMode::Off && v4 > VIPS_ENTRIES as usize {
            return Err(invalid(
                "addr",
                format!("{v4} IPv4 addresses"),
                "the XDP program knows at most 255 IPv4 addresses in all; spread them over fewer, or run with xdp = \"off\"",
            ));
        }
        Ok(all)
    }

    /// Checks every setting of one vhid, its layers already merged.
    fn settings(self, ifindex: &impl Fn(&str) -> Option<u32>) -> Result<Settings, ConfigError> {
        let args = self;
        let vhid = args.vhid.ok_or(ConfigError::Missing("vhid (-v)"))?;
        if !(1..=255).contains(&vhid) {
            return Err(invalid("vhid", vhid, "must be 1-255"));
        }
        let password = match (&args.pass, &args.passfile) {
            (Some(_), Some(_)) => {
                return Err(invalid("pass", "-p and -o", "give one of them, not both"));
            }
            (Some(p), None) => p.as_bytes().to_vec(),
            (None, Some(path)) => read_passfile(path)?,
            (None, None) => return Err(ConfigError::Missing("pass (-p) or passfile (-o)")),
        };
        if password.len() > MAX_PASSWORD_LEN {
            return Err(invalid(
                "pass",
                format!("{} bytes", password.len()),
                "at most 19 bytes, as UCARP",
            ));
        }
        if args.addr.is_empty() {
            return Err(ConfigError::Missing("addr (-a)"));
        }
        let vips = parse_vips(&args.addr)?;
        if vips[0].addr.is_ipv6() {
            // BSD CARP's IPv6 adverts go to ff02::12 from the link-local address; the rest
            // is the agent's IPv4 machinery.
            let refused = [
                ("peer", !args.peers.is_empty()),
                ("nomcast", args.nomcast),
                ("mcastip", args.mcastip.is_some()),
                ("mysql", !args.mysql.is_empty()),
            ];
            if let Some((setting, _)) = refused.into_iter().find(|(_, given)| *given) {
                return Err(invalid(
                    setting,
                    &args.addr[0],
                    "an IPv6 vhid advertises to ff02::12 from the link-local address, without unicast peers, broadcast or a database; use an IPv4 vhid for those",
                ));
            }
        }
        let srcip = args.srcip.ok_or(ConfigError::Missing("srcip (-s)"))?;
        let src: Ipv4Addr = srcip
            .parse()
            .map_err(|_| invalid("srcip", &srcip, "must be an IPv4 address"))?;
        let advbase = args.advbase.unwrap_or(1);
        if advbase > 255 {
            return Err(invalid("advbase", advbase, "must be 0-255"));
        }
        let advskew = args.advskew.unwrap_or(0);
        if advskew > 255 {
            return Err(invalid("advskew", advskew, "must be 0-255"));
        }
        if advbase == 0 && advskew == 0 {
            return Err(invalid(
                "advskew",
                advskew,
                "fast mode (advbase 0) needs advskew 1-255",
            ));
        }
        let deadratio = args.deadratio.unwrap_or(3);
        if !(1..=255).contains(&deadratio) {
            return Err(invalid("deadratio", deadratio, "must be 1-255"));
        }
        if advbase == 0 && deadratio < 2 {
            return Err(invalid(
                "deadratio",
                deadratio,
                "fast mode (advbase 0) needs deadratio 2-255, or one late advert causes a takeover",
            ));
        }
        let group = match &args.mcastip {
            None => Ipv4Addr::from(cluster_common::carp::DEFAULT_GROUP),
            Some(s) => match s.parse::<Ipv4Addr>() {
                Ok(a) if a.is_multicast() => a,
                _ => return Err(invalid("mcastip", s, "must be an IPv4 multicast address")),
            },
        };
        let delivery = delivery(
            &args.peers,
            args.nomcast,
            args.mcastip.as_deref(),
            src,
            group,
        )?;
        let mut db = args.mysql.validate(src)?;
        if let Some(d) = &mut db {
            d.db.host_check = host_check(advbase, advskew, deadratio);
        }
        let quorum =
            args.quorum
                .validate(vhid, master_down(advbase, advskew, deadratio), db.is_some())?;
        if let (Some(d), Some(q)) = (&mut db, &quorum) {
            // A replica promotes only if the old master's semi-sync timeout outlasts the
            // moment the replica saw the key gone (up to a TTL after the master's last
            // renewal, and a look later): twice the TTL.
            d.db.semi_sync_min = Some(q.ttl * 2);
        }
        let hook_timeout = args.hook_timeout.unwrap_or(30);
        if !(1..=MAX_TIMEOUT_SECS).contains(&hook_timeout) {
            return Err(invalid("hook-timeout", hook_timeout, "must be 1-3600 s"));
        }
        let garp_interval = args.garp_interval.unwrap_or(0);
        if garp_interval > MAX_TIMEOUT_SECS {
            return Err(invalid(
                "garp-interval",
                garp_interval,
                "must be 0 (off) to 3600 s",
            ));
        }
        let tracks = args
            .track
            .iter()
            .map(TrackArgs::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let control_group = match &args.control_group {
            None => None,
            Some(g) => Some(
                group_id(g)
                    .ok_or_else(|| invalid("control-group", g, "no such group on this host"))?,
            ),
        };
        let interface = args
            .interface
            .ok_or(ConfigError::Missing("interface (-i)"))?;
        let ifindex =
            ifindex(&interface).ok_or_else(|| ConfigError::UnknownInterface(interface.clone()))?;
        Ok(Settings {
            interface,
            ifindex,
            src,
            vhid: vhid as u8,
            password,
            vips,
            advbase: advbase as u8,
            advskew: advskew as u8,
            deadratio: deadratio as u8,
            preempt: args.preempt,
            neutral: args.neutral,
            shutdown_hook: args.shutdown,
            ignore_ifstate: args.ignoreifstate,
            delivery,
            upscript: args.upscript,
            downscript: args.downscript,
            xparam: args.xparam,
            garp_interval: (garp_interval > 0).then(|| Duration::from_secs(garp_interval)),
            hook_timeout: Duration::from_secs(hook_timeout),
            control_socket: args
                .control_socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET)),
            control_group,
            metrics: args.metrics,
            tracks,
            xdp: args.xdp.unwrap_or_default(),
            fence: !args.no_fence,
            db,
            quorum,
        })
    }
}

/// How long a bare TCP handshake with a peer's database port may take before the peer's host
/// counts as gone: as long as a master's adverts may stay away (`deadratio` intervals), within
/// 10-50 ms. Peers share a segment, where a handshake takes well under a millisecond and the
/// kernel completes it even while the server itself is stalled; a host that cannot is as gone
/// as one whose adverts stopped, and a promotion should not wait longer on it.
fn host_check(advbase: u32, advskew: u32, deadratio: u32) -> Duration {
    let interval =
        Duration::from_secs(u64::from(advbase)) + Duration::from_secs(u64::from(advskew)) / 256;
    (interval * deadratio).clamp(Duration::from_millis(10), Duration::from_millis(50))
}

/// How long this node waits for a silent master before it takes over (as UCARP: `deadratio`
/// base intervals and its own skew; fast mode's few milliseconds round to none).
pub fn master_down(advbase: u32, advskew: u32, deadratio: u32) -> Duration {
    Duration::from_secs(u64::from(advbase) * u64::from(deadratio))
        + Duration::from_secs(u64::from(advskew)) / 256
}

/// `addr` as a string or a list of strings, as `-a` may be given once or repeated.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an address or a list of addresses")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_owned()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element()? {
                all.push(one);
            }
            Ok(all)
        }
    }
    d.deserialize_any(OneOrMany)
}

/// Most IPv6 addresses one vhid may carry: what one SHA-1 block of the HMAC holds
/// (11 + 16 * 2 + 1 + 8 = 52 bytes of 64).
pub const MAX_ADDRS6: usize = 2;

/// Every `addr` of a vhid: each once, all of one family, and no more than one SHA-1 block can
/// authenticate.
fn parse_vips(args: &[String]) -> Result<Vec<VipAddr>, ConfigError> {
    let mut vips: Vec<VipAddr> = Vec::with_capacity(args.len());
    for a in args {
        let (addr, prefix) = parse_vip(a)?;
        if vips.iter().any(|v| v.addr == addr) {
            return Err(invalid("addr", a, "is listed twice"));
        }
        if vips
            .first()
            .is_some_and(|v| v.addr.is_ipv6() != addr.is_ipv6())
        {
            return Err(invalid(
                "addr",
                a,
                "a vhid's addresses are all IPv4 or all IPv6; use another vhid for the other family",
            ));
        }
        vips.push(VipAddr { addr, prefix });
    }
    let (most, why) = if vips.first().is_some_and(|v| v.addr.is_ipv6()) {
        (
            MAX_ADDRS6,
            "at most 2 IPv6 addresses per vhid (what one SHA-1 block of an advert's HMAC holds); use another vhid for more",
        )
    } else {
        (
            MAX_ADDRS,
            "at most 11 addresses per vhid (what one SHA-1 block of an advert's HMAC holds); use another vhid for more",
        )
    };
    if vips.len() > most {
        return Err(invalid("addr", args.join(","), why));
    }
    Ok(vips)
}

/// `ADDR` or `ADDR/PREFIX`, IPv4 (default /32) or IPv6 (default /128).
pub fn parse_vip(s: &str) -> Result<(IpAddr, u8), ConfigError> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let vip: IpAddr = addr
        .parse()
        .map_err(|_| invalid("addr", s, "the VIP must be an IPv4 or IPv6 address"))?;
    let unicast = match vip {
        IpAddr::V4(v) => !(v.is_unspecified() || v.is_multicast() || v.is_broadcast()),
        // A link-local VIP would collide with the advert source and has no use off the link.
        IpAddr::V6(v) => {
            !(v.is_unspecified()
                || v.is_multicast()
                || v.is_loopback()
                || v.is_unicast_link_local()
                || v.to_ipv4_mapped().is_some())
        }
    };
    if !unicast {
        return Err(invalid(
            "addr",
            s,
            "the VIP must be a unicast address (and not link-local for IPv6)",
        ));
    }
    let most = if vip.is_ipv6() { 128 } else { 32 };
    let prefix = match prefix {
        None => most,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if (1..=most).contains(&p) => p,
            _ if most == 128 => {
                return Err(invalid("addr", s, "prefix length must be 1-128"));
            }
            _ => return Err(invalid("addr", s, "prefix length must be 1-32")),
        },
    };
    Ok((vip, prefix))
}

/// UCARP reads the first line of the file; so do we, without its line ending.
/// Longest hook timeout and GARP interval: an hour, far beyond any sensible value, and small
/// enough that no deadline computed from it overflows.
const MAX_TIMEOUT_SECS: u64 = 3600;

/// Multicast, broadcast (`--nomcast`) or unicast to `--peer`s. Unicast is the agent's own
/// extension: UCARP sends and accepts only the group, so mixing the two is refused here
/// rather than left to split the cluster.
fn delivery(
    peer_args: &[String],
    nomcast: bool,
    mcastip: Option<&str>,
    src: Ipv4Addr,
    group: Ipv4Addr,
) -> Result<Delivery, ConfigError> {
    if peer_args.is_empty() {
        return Ok(if nomcast {
            Delivery::Broadcast(group)
        } else {
            Delivery::Multicast(group)
        });
    }
    if nomcast {
        return Err(invalid(
            "peer",
            peer_args.join(","),
            "unicast peers replace multicast; --nomcast (UCARP's broadcast mode) cannot be combined with them",
        ));
    }
    if let Some(m) = mcastip {
        return Err(invalid(
            "mcastip",
            m,
            "unicast peers replace the multicast group; give one or the other",
        ));
    }
    let mut peers = Vec::with_capacity(peer_args.len());
    for p in peer_args {
        let a: Ipv4Addr = p
            .parse()
            .map_err(|_| invalid("peer", p, "must be an IPv4 address"))?;
        if a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback() {
            return Err(invalid(
                "peer",
                p,
                "must be a unicast address on the segment",
            ));
        }
        if a == src {
            return Err(invalid("peer", p, "is this node's own srcip"));
        }
        if peers.contains(&a) {
            return Err(invalid("peer", p, "is listed twice"));
        }
        peers.push(a);
    }
    Ok(Delivery::Unicast(peers))
}

/// The gid of group `name` (or a number), from the host's group database.
fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let cname = std::ffi::CString::new(name).ok()?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the stated size; `out` is set to `&grp`
    // or null by the call.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some(grp.gr_gid)
}

pub fn read_passfile(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Passfile {
        path: path.to_owned(),
        source,
    })?;
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        // An empty password would authenticate adverts with a key anyone can guess.
        return Err(invalid(
            "passfile",
            path.display(),
            "its first line is empty; put the password there",
        ));
    }
    Ok(line.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_host_gets_as_long_as_a_master_s_adverts_within_bounds() {
        // Fast mode, advskew 1: three intervals of 3.9 ms.
        assert_eq!(host_check(0, 1, 3), Duration::from_secs(3) / 256);
        // Two intervals of 3.9 ms: the floor.
        assert_eq!(host_check(0, 1, 2), Duration::from_millis(10));
        assert_eq!(host_check(0, 4, 3), Duration::from_secs(12) / 256);
        assert_eq!(host_check(0, 80, 3), Duration::from_millis(50));
        assert_eq!(host_check(1, 0, 3), Duration::from_millis(50));
    }

    fn base() -> RunArgs {
        RunArgs {
            interface: Some("eth0".into()),
            srcip: Some("10.0.0.1".into()),
            vhid: Some(1),
            pass: Some("secret".into()),
            addr: vec!["10.0.0.100/24".into()],
            ..RunArgs::default()
        }
    }

    fn known(name: &str) -> Option<u32> {
        (name == "eth0").then_some(7)
    }

    fn err(args: RunArgs) -> String {
        args.validate(known).unwrap_err().to_string()
    }

    #[test]
    fn defaults_match_ucarp() {
        let s = base().validate(known).unwrap();
        assert_eq!((s.advbase, s.advskew, s.deadratio), (1, 0, 3));
        assert_eq!(s.vip(), Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(s.vips[0].prefix, 24);
        assert_eq!(s.ifindex, 7);
        assert_eq!(
            s.delivery,
            Delivery::Multicast(Ipv4Addr::new(224, 0, 0, 18))
        );
        assert_eq!(s.xdp, XdpMode::Auto);
    }

    #[test]
    fn unicast_peers_replace_the_group_and_mixing_is_refused() {
        let peers = |p: &[&str]| RunArgs {
            peers: p.iter().map(|s| s.to_string()).collect(),
            ..base()
        };
        let s = peers(&["10.0.0.2", "10.0.0.3"]).validate(known).unwrap();
        let want = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
        assert_eq!(s.delivery.destinations(), want);
        assert_eq!(s.delivery.accepted_on(s.src), s.src);
        assert_eq!(s.delivery.peers(), Some(&want[..]));
        for bad in [
            "10.0.0.1",
            "224.0.0.18",
            "255.255.255.255",
            "0.0.0.0",
            "peer",
        ] {
            assert!(err(peers(&[bad])).contains("peer"), "{bad}");
        }
        assert!(err(peers(&["10.0.0.2", "10.0.0.2"])).contains("twice"));
        let e = err(RunArgs {
            nomcast: true,
            ..peers(&["10.0.0.2"])
        });
        assert!(e.contains("nomcast"), "{e}");
        let e = err(RunArgs {
            mcastip: Some("224.0.0.19".into()),
            ..peers(&["10.0.0.2"])
        });
        assert!(e.contains("mcastip"), "{e}");
        let b = RunArgs {
            nomcast: true,
            ..base()
        }
        .validate(known)
        .unwrap();
        assert_eq!(
            b.delivery,
            Delivery::Broadcast(Ipv4Addr::new(224, 0, 0, 18))
        );
        assert_eq!(b.delivery.peers(), None);
    }

    #[test]
    fn vip_without_prefix_is_a_host_address() {
        assert_eq!(
            parse_vip("10.1.2.3").unwrap(),
            (Ipv4Addr::new(10, 1, 2, 3).into(), 32)
        );
        assert_eq!(
            parse_vip("2001:db8::1").unwrap(),
            ("2001:db8::1".parse().unwrap(), 128)
        );
    }

    #[test]
    fn each_bad_setting_is_named() {
        assert!(
            err(RunArgs {
                vhid: Some(0),
                ..base()
            })
            .contains("vhid")
        );
        assert!(
            err(RunArgs {
                vhid: Some(256),
                ..base()
            })
            .contains("vhid")
        );
        let long = RunArgs {
            pass: Some("x".repeat(20)),
            ..base()
        };
        assert!(err(long).contains("pass"));
        assert!(
            RunArgs {
                pass: Some("x".repeat(19)),
                ..base()
            }
            .validate(known)
            .is_ok()
        );
        for bad in ["fe80::1", "10.0.0.300", "10.0.0.1/33", "224.0.0.1", "vip"] {
            let e = err(RunArgs {
                addr: vec![bad.into()],
                ..base()
            });
            assert!(e.contains("addr"), "{bad}: {e}");
        }
        assert!(
            err(RunArgs {
                interface: Some("nope0".into()),
                ..base()
            })
            .contains("interface")
        );
        assert!(
            err(RunArgs {
                pass: None,
                passfile: Some("/nonexistent/pass".into()),
                ..base()
            })
            .contains("passfile")
        );
        assert!(
            err(RunArgs {
                advbase: Some(256),
                ..base()
            })
            .contains("advbase")
        );
        assert!(
            err(RunArgs {
                advskew: Some(256),
                ..base()
            })
            .contains("advskew")
        );
        assert!(
            err(RunArgs {
                advbase: Some(0),
                advskew: Some(0),
                ..base()
            })
            .contains("advskew")
        );
        assert!(
            err(RunArgs {
                deadratio: Some(0),
                ..base()
            })
            .contains("deadratio")
        );
        assert!(
            err(RunArgs {
                srcip: None,
                ..base()
            })
            .contains("srcip")
        );
    }

    #[test]
    fn nonsensical_timeouts_an_empty_passfile_and_an_unknown_group_are_refused() {
        for (args, setting) in [
            (
                RunArgs {
                    hook_timeout: Some(0),
                    ..base()
                },
                "hook-timeout",
            ),
            (
                RunArgs {
                    hook_timeout: Some(u64::MAX),
                    ..base()
                },
                "hook-timeout",
            ),
            (
                RunArgs {
                    garp_interval: Some(u64::MAX / 2),
                    ..base()
                },
                "garp-interval",
            ),
            (
                RunArgs {
                    control_group: Some("no-such-group-here".into()),
                    ..base()
                },
                "control-group",
            ),
        ] {
            let e = err(args);
            assert!(e.starts_with(&format!("invalid {setting}")), "{e}");
        }
        let s = RunArgs {
            garp_interval: Some(0),
            control_group: Some("root".into()),
            ..base()
        }
        .validate(known)
        .unwrap();
        assert_eq!(s.garp_interval, None, "0 turns periodic GARP off");
        assert_eq!(s.control_group, Some(0));
        assert_eq!(s.hook_timeout, Duration::from_secs(30));

        let dir = std::env::temp_dir().join(format!("carp-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pass");
        std::fs::write(&f, "\nsecond line\n").unwrap();
        let e = err(RunArgs {
            pass: None,
            passfile: Some(f),
            ..base()
        });
        assert!(
            e.starts_with("invalid passfile") && e.contains("empty"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn track_tables_from_toml_with_defaults_and_each_bad_setting_named() {
        let parse = |text: &str| -> Result<Vec<TrackSettings>, String> {
            let args: RunArgs = toml::from_str(text).map_err(|e| e.to_string())?;
            args.track
                .iter()
                .map(TrackArgs::validate)
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())
        };
        let t = parse(
            "[[track]]\nhttp = \"https://[::1]:8443/health\"\nexpect = 204\naction = \"bow-out\"\n\
             [[track]]\ntcp = \"127.0.0.1:80\"\ninterval = 500\ntimeout = 200\nfall = 1\nrise = 5\n\
             [[track]]\nname = \"nginx\"\nprocess = \"nginx\"\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0].check,
            Check::Http {
                tls: true,
                host: "::1".into(),
                port: 8443,
                path: "/health".into(),
                expect: 204,
                ca: None,
            }
        );
        assert_eq!(t[0].action, crate::failover::track::TrackAction::BowOut);
        assert_eq!(
            (t[0].interval, t[0].timeout, t[0].fall, t[0].rise),
            (Duration::from_secs(1), Duration::from_secs(1), 3, 2)
        );
        assert_eq!(t[1].check, Check::Tcp("127.0.0.1:80".parse().unwrap()));
        assert_eq!(t[1].timeout, Duration::from_millis(200));
        assert_eq!((t[1].fall, t[1].rise), (1, 5));
        assert_eq!(t[2].name, "nginx");
        assert_eq!(t[2].action, crate::failover::track::TrackAction::Demote);
        let h = parse("[[track]]\nhttp = \"http://web.local/\"\n").unwrap();
        assert!(
            matches!(&h[0].check, Check::Http { port: 80, tls: false, path, .. } if path == "/")
        );
        for (text, names) in [
            ("[[track]]\n", "exactly one"),
            (
                "[[track]]\ntcp = \"127.0.0.1:80\"\nprocess = \"x\"\n",
                "exactly one",
            ),
            ("[[track]]\nhttp = \"ftp://x/\"\n", "track http"),
            ("[[track]]\nhttp = \"http://x:99999/\"\n", "track http"),
            (
                "[[track]]\nhttp = \"http://x/\"\nca = \"/c.pem\"\n",
                "track http",
            ),
            ("[[track]]\ntcp = \"localhost\"\n", "track tcp"),
            ("[[track]]\nscript = \"check.sh\"\n", "track script"),
            (
                "[[track]]\nprocess = \"a-name-that-is-too-long\"\n",
                "track process",
            ),
            (
                "[[track]]\ntcp = \"127.0.0.1:80\"\ninterval = 10\n",
                "track interval",
            ),
            (
                "[[track]]\ntcp = \"127.0.0.1:80\"\ntimeout = 2000\n",
                "track timeout",
            ),
            (
                "[[track]]\ntcp = \"127.0.0.1:80\"\nfall = 0\n",
                "track fall",
            ),
            (
                "[[track]]\ntcp = \"127.0.0.1:80\"\nexpect = 200\n",
                "expect",
            ),
            (
                "[[track]]\ntcp = \"127.0.0.1:80\"\naction = \"panic\"\n",
                "action",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(names), "{text:?}: {e}");
        }
    }

    #[test]
    fn passfile_first_line_is_the_password() {
        let dir = std::env::temp_dir().join(format!("carp-pass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pass");
        std::fs::write(&f, "hunter2\r\nsecond line\n").unwrap();
        let s = RunArgs {
            pass: None,
            passfile: Some(f),
            ..base()
        }
        .validate(known)
        .unwrap();
        assert_eq!(s.password, b"hunter2");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn config_file_fills_and_flags_override() {
        let dir = std::env::temp_dir().join(format!("carp-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("agent.toml");
        std::fs::write(
            &f,
            "interface = \"eth0\"\nsrcip = \"10.0.0.2\"\nvhid = 9\npass = \"pw\"\naddr = \"10.0.0.50\"\nadvskew = 100\npreempt = true\nxdp = \"off\"\n",
        )
        .unwrap();
        let s = RunArgs {
            config: Some(f.clone()),
            advskew: Some(5),
            ..RunArgs::default()
        }
        .validate(known)
        .unwrap();
        assert_eq!((s.vhid, s.advskew, s.preempt), (9, 5, true));
        assert_eq!(s.xdp, XdpMode::Off);
        std::fs::write(&f, "vhid = 9\nbogus = 1\n").unwrap();
        let e = RunArgs {
            config: Some(f),
            ..RunArgs::default()
        }
        .validate(known)
        .unwrap_err()
        .to_string();
        assert!(e.contains("bogus"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn quorum_section_from_toml_with_its_defaults_and_each_bad_setting_named() {
        let dir = std::env::temp_dir().join(format!("carp-quorum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("admin.pass"), "adm1n\n").unwrap();
        std::fs::write(dir.join("repl.pass"), "r3pl\n").unwrap();
        let f = dir.join("agent.toml");
        let write = |quorum: &str| {
            std::fs::write(
                &f,
                format!(
                    "[mysql]\nca = \"/etc/ca.pem\"\nadmin-password-file = \"{0}/admin.pass\"\nrepl-password-file = \"{0}/repl.pass\"\nnodes = [\"10.0.0.1\", \"10.0.0.2\"]\n[quorum]\n{quorum}",
                    dir.display()
                ),
            )
            .unwrap();
            RunArgs {
                config: Some(f.clone()),
                ..base()
            }
            .validate(known)
        };
        let q = write("endpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n")
            .unwrap()
            .quorum
            .expect("[quorum] enables the lease");
        assert_eq!(q.key, "/cluster-agent/vhid-1/leader");
        assert_eq!(
            q.ttl,
            Duration::from_secs(5),
            "the floor above 3 s of master-down"
        );
        let s = write("endpoints = [\"http://10.0.0.1:2379\"]\n").unwrap();
        assert_eq!(
            s.db.unwrap().db.semi_sync_min,
            Some(Duration::from_secs(10)),
            "semi-sync outlasts the lease"
        );
        for (section, named) in [
            ("ttl = 10\n", "quorum endpoints"),
            ("endpoints = [\"10.0.0.1:2379\"]\n", "quorum-endpoint"),
            ("endpoints = [\"https://10.0.0.1:2379\"]\n", "quorum ca"),
            ("endpoints = [\"http://a:1\"]\nttl = 2\n", "quorum-ttl"),
            ("endpoints = [\"http://a:1\"]\nttl = 301\n", "quorum-ttl"),
            (
                "endpoints = [\"http://a:1\"]\nprefix = \"x/\"\n",
                "quorum-prefix",
            ),
            (
                "endpoints = [\"https://a:1\"]\nca = \"/ca\"\ncert = \"/c\"\n",
                "quorum-cert",
            ),
        ] {
            let e = write(section).unwrap_err().to_string();
            assert!(e.contains(named), "{section:?}: {e}");
        }
        // A quorum guards a database; without one it is a mistake, not a no-op.
        let e = err(RunArgs {
            quorum: QuorumArgs {
                endpoints: vec!["http://10.0.0.1:2379".into()],
                ..QuorumArgs::default()
            },
            ..base()
        });
        assert!(e.contains("[mysql]"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn mysql_section_from_toml_with_secrets_from_files() {
        let dir = std::env::temp_dir().join(format!("carp-mysql-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("admin.pass"), "adm1n\n").unwrap();
        std::fs::write(dir.join("repl.pass"), "r3pl\n").unwrap();
        let f = dir.join("agent.toml");
        std::fs::write(
            &f,
            format!(
                "[mysql]\nca = \"/etc/ca.pem\"\nadmin-password-file = \"{0}/admin.pass\"\nrepl-password-file = \"{0}/repl.pass\"\nmax-lag = 7\nnodes = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\"]\n",
                dir.display()
            ),
        )
        .unwrap();
        let s = RunArgs {
            config: Some(f.clone()),
            ..base()
        }
        .validate(known)
        .unwrap();
        let db = s.db.expect("the [mysql] section enables the database");
        assert_eq!(db.max_lag, Duration::from_secs(7));
        assert_eq!(
            db.nodes,
            vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)],
            "the peers, without this node"
        );
        assert_eq!(db.db.port, 3306);
        assert_eq!(
            db.db.addr,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            "defaults to srcip"
        );
        assert_eq!(db.db.admin_password.expose(), "adm1n");
        assert!(
            !format!("{db:?}").contains("adm1n"),
            "secret in debug output"
        );

        std::fs::write(&f, "[mysql]\nmax-lag = 7\n").unwrap();
        let e = RunArgs {
            config: Some(f),
            ..base()
        }
        .validate(known)
        .unwrap_err()
        .to_string();
        assert!(e.contains("mysql ca"), "{e}");
        assert!(base().validate(known).unwrap().db.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn password_never_in_debug_output() {
        let s = base().validate(known).unwrap();
        assert!(!format!("{s:?}").contains("secret"));
    }

    /// A directory of its own for a test's config file, removed when dropped.
    struct ConfDir(PathBuf);

    impl ConfDir {
        fn new(test: &str) -> ConfDir {
            let dir = std::env::temp_dir().join(format!("carp-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("admin.pass"), "adm1n\n").unwrap();
            std::fs::write(dir.join("repl.pass"), "r3pl\n").unwrap();
            ConfDir(dir)
        }

        /// Every vhid of the file `text`, with `flags` over it.
        fn all(&self, text: &str, flags: RunArgs) -> Result<Vec<Settings>, ConfigError> {
            self.args(text, flags).validate_all(known)
        }

        fn args(&self, text: &str, flags: RunArgs) -> RunArgs {
            let f = self.0.join("agent.toml");
            std::fs::write(&f, text).unwrap();
            RunArgs {
                config: Some(f),
                ..flags
            }
        }

        /// A `[vhid.mysql]` section (`[mysql]` with `header = "mysql"`).
        fn mysql(&self, header: &str) -> String {
            format!(
                "[{header}]\nca = \"/etc/ca.pem\"\nadmin-password-file = \"{0}/admin.pass\"\nrepl-password-file = \"{0}/repl.pass\"\nnodes = [\"10.0.0.1\", \"10.0.0.2\"]\n",
                self.0.display()
            )
        }
    }

    impl Drop for ConfDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Top-level keys every `[[vhid]]` table below inherits.
    const COMMON: &str = "interface = \"eth0\"\nsrcip = \"10.0.0.1\"\npass = \"pw\"\nadvbase = 2\nxdp = \"off\"\nmetrics = \"127.0.0.1:9687\"\n";

    fn table(vhid: u32, addr: &str, extra: &str) -> String {
        format!("[[vhid]]\nvhid = {vhid}\naddr = \"{addr}\"\n{extra}")
    }

    #[test]
    fn a_table_s_password_replaces_the_inherited_one_whichever_way_each_is_given() {
        let dir = ConfDir::new("vhid-pass");
        let own = dir.0.join("own.pass");
        std::fs::write(&own, "s3cret\n").unwrap();
        let text = format!(
            "{COMMON}{}{}",
            table(
                10,
                "10.0.0.100/24",
                &format!("passfile = \"{}\"\n", own.display())
            ),
            table(20, "10.0.0.200/24", ""),
        );
        let s = dir.all(&text, RunArgs::default()).unwrap();
        assert_eq!(
            (s[0].password.as_slice(), s[1].password.as_slice()),
            (&b"s3cret"[..], &b"pw"[..])
        );
        // The same between a flag and the file.
        let single = format!("{COMMON}vhid = 5\naddr = \"10.0.0.100/24\"\n");
        let flags = RunArgs {
            passfile: Some(own),
            ..RunArgs::default()
        };
        assert_eq!(dir.all(&single, flags).unwrap()[0].password, b"s3cret");
    }

    #[test]
    fn vhid_tables_inherit_the_top_level_and_override_it() {
        let dir = ConfDir::new("vhid-tables");
        let text = format!(
            "{COMMON}{}{}{}[[track]]\nprocess = \"nginx\"\n",
            table(10, "10.0.0.100/24", "advskew = 50\n"),
            table(
                20,
                "10.0.0.200/24",
                "advskew = 100\npreempt = true\n[[vhid.track]]\nprocess = \"haproxy\"\n"
            ),
            table(30, "10.0.1.1", ""),
        );
        let s = dir.all(&text, RunArgs::default()).unwrap();
        assert_eq!(
            s.iter().map(|s| s.vhid).collect::<Vec<_>>(),
            [10, 20, 30],
            "file order"
        );
        for s in &s {
            assert_eq!(s.password, b"pw");
            assert_eq!((s.interface.as_str(), s.ifindex), ("eth0", 7));
            assert_eq!(s.src, Ipv4Addr::new(10, 0, 0, 1));
            assert_eq!(s.advbase, 2);
            assert_eq!(s.xdp, XdpMode::Off);
            assert_eq!(s.metrics, Some("127.0.0.1:9687".parse().unwrap()));
        }
        assert_eq!(
            (
                s[0].vip(),
                s[0].vips[0].prefix,
                s[2].vip(),
                s[2].vips[0].prefix
            ),
            (
                Ipv4Addr::new(10, 0, 0, 100).into(),
                24,
                Ipv4Addr::new(10, 0, 1, 1).into(),
                32
            )
        );
        assert_eq!(
            s.iter().map(|s| (s.advskew, s.preempt)).collect::<Vec<_>>(),
            [(50, false), (100, true), (0, false)]
        );
        let tracks = |s: &Settings| s.tracks.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            tracks(&s[0]),
            ["process nginx"],
            "the top level's [[track]]"
        );
        assert_eq!(tracks(&s[1]), ["process haproxy"], "its own replace them");
        assert_eq!(tracks(&s[2]), ["process nginx"]);
    }

    #[test]
    fn a_flag_over_a_top_level_key_is_inherited_by_every_table() {
        let dir = ConfDir::new("vhid-flags");
        let text = format!(
            "{COMMON}{}{}",
            table(10, "10.0.0.100", "advskew = 50\n"),
            table(20, "10.0.0.200", "advbase = 4\n"),
        );
        let s = dir
            .all(
                &text,
                RunArgs {
                    advbase: Some(3),
                    pass: Some("flagpw".into()),
                    preempt: true,
                    ..RunArgs::default()
                },
            )
            .unwrap();
        assert_eq!(
            (s[0].advbase, s[0].advskew),
            (3, 50),
            "the flag wins over the top level"
        );
        assert_eq!(s[1].advbase, 4, "and a table's own key over both");
        assert!(s.iter().all(|s| s.password == b"flagpw" && s.preempt));
    }

    #[test]
    fn misplaced_settings_with_vhid_tables_are_refused_by_name() {
        let dir = ConfDir::new("vhid-misplaced");
        let two = format!(
            "{}{}",
            table(10, "10.0.0.100", ""),
            table(20, "10.0.0.200", "")
        );
        let mut cases: Vec<(String, RunArgs, &str)> = vec![
            (
                format!("{COMMON}{two}"),
                RunArgs {
                    vhid: Some(3),
                    ..RunArgs::default()
                },
                "invalid vhid: with [[vhid]] tables",
            ),
            (
                format!("{COMMON}{two}"),
                RunArgs {
                    addr: vec!["10.0.0.50".into()],
                    ..RunArgs::default()
                },
                "invalid addr: with [[vhid]] tables",
            ),
            (
                format!("{COMMON}addr = \"10.0.0.50\"\n{two}"),
                RunArgs::default(),
                "invalid addr: with [[vhid]] tables",
            ),
            (
                format!("{COMMON}vhid = []\n"),
                RunArgs::default(),
                "invalid vhid: \"[]\" (give at least one [[vhid]] table",
            ),
            (
                format!("{COMMON}{two}{}", dir.mysql("mysql")),
                RunArgs::default(),
                "invalid mysql: with [[vhid]] tables",
            ),
            (
                format!("{COMMON}{two}"),
                RunArgs {
                    mysql: MysqlArgs {
                        ca: Some("/etc/ca.pem".into()),
                        ..MysqlArgs::default()
                    },
                    ..RunArgs::default()
                },
                "invalid mysql: with [[vhid]] tables",
            ),
            (
                format!("{COMMON}{two}[quorum]\nendpoints = [\"http://10.0.0.1:2379\"]\n"),
                RunArgs::default(),
                "invalid quorum: with [[vhid]] tables",
            ),
            (
                format!("{COMMON}{two}"),
                RunArgs {
                    quorum: QuorumArgs {
                        endpoints: vec!["http://10.0.0.1:2379".into()],
                        ..QuorumArgs::default()
                    },
                    ..RunArgs::default()
                },
                "invalid quorum: with [[vhid]] tables",
            ),
            (
                format!("preempt = true\n{COMMON}{two}preempt = false\n"),
                RunArgs::default(),
                "[[vhid]] table 2 (vhid 20): invalid preempt",
            ),
            (
                format!("{COMMON}{two}no-fence = false\n"),
                RunArgs {
                    no_fence: true,
                    ..RunArgs::default()
                },
                "[[vhid]] table 2 (vhid 20): invalid no-fence",
            ),
            (
                format!("{COMMON}{two}[vhid.quorum]\nendpoints = [\"http://10.0.0.1:2379\"]\n"),
                RunArgs::default(),
                "[[vhid]] table 2 (vhid 20): invalid quorum-endpoint",
            ),
            (
                format!("{COMMON}{}", table(10, "10.0.0.100", "advskew = 300\n")),
                RunArgs::default(),
                "[[vhid]] table 1 (vhid 10): invalid advskew",
            ),
            (
                format!("{COMMON}[[vhid]]\naddr = \"10.0.0.100\"\n"),
                RunArgs::default(),
                "[[vhid]] table 1: missing setting: vhid",
            ),
        ];
        for (key, value) in [
            ("control-socket", "\"/run/x.sock\""),
            ("control-group", "\"root\""),
            ("metrics", "\"127.0.0.1:9000\""),
            ("xdp", "\"off\""),
        ] {
            cases.push((
                format!("{COMMON}{two}{key} = {value}\n"),
                RunArgs::default(),
                match key {
                    "control-socket" => {
                        "[[vhid]] table 2 (vhid 20): invalid control-socket: one per agent"
                    }
                    "control-group" => {
                        "[[vhid]] table 2 (vhid 20): invalid control-group: one per agent"
                    }
                    "metrics" => "[[vhid]] table 2 (vhid 20): invalid metrics: one per agent",
                    _ => "[[vhid]] table 2 (vhid 20): invalid xdp: one per agent",
                },
            ));
        }
        for (text, flags, named) in cases {
            let e = dir.all(&text, flags).unwrap_err().to_string();
            assert!(e.starts_with(named), "{text:?}: {e}");
        }
        // Switching on in a table what the top level left off is fine.
        let s = dir
            .all(
                &format!("{COMMON}{two}preempt = true\n"),
                RunArgs::default(),
            )
            .unwrap();
        assert_eq!((s[0].preempt, s[1].preempt), (false, true));
    }

    #[test]
    fn a_vhid_may_carry_several_addresses_given_as_a_list_or_as_repeated_flags() {
        let dir = ConfDir::new("vhid-addrs");
        let text = format!(
            "{COMMON}[[vhid]]\nvhid = 10\naddr = [\"10.0.0.100/24\", \"10.0.0.101\", \"192.0.2.7/28\"]\n{}",
            table(20, "10.0.0.200/24", ""),
        );
        let s = dir.all(&text, RunArgs::default()).unwrap();
        let want = |a: [u8; 4], prefix| VipAddr {
            addr: Ipv4Addr::from(a).into(),
            prefix,
        };
        assert_eq!(
            s[0].vips,
            [
                want([10, 0, 0, 100], 24),
                want([10, 0, 0, 101], 32),
                want([192, 0, 2, 7], 28)
            ]
        );
        assert_eq!(s[0].vip(), Ipv4Addr::new(10, 0, 0, 100), "the first given");
        assert!(
            s[0].owns(Ipv4Addr::new(192, 0, 2, 7).into())
                && !s[1].owns(Ipv4Addr::new(10, 0, 0, 101).into())
        );
        assert_eq!(s[1].vips, [want([10, 0, 0, 200], 24)]);

        // `-a` repeated is the same list, and replaces the file's.
        let single = format!("{COMMON}vhid = 5\naddr = \"10.0.0.9\"\n");
        let flags = RunArgs {
            addr: vec!["10.0.0.100/24".into(), "10.0.0.101/24".into()],
            ..RunArgs::default()
        };
        let one = dir.all(&single, flags).unwrap();
        assert_eq!(
            one[0].addrs(),
            [Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 101)]
        );

        let refused = |addrs: &str| {
            dir.all(
                &format!("{COMMON}vhid = 5\naddr = {addrs}\n"),
                RunArgs::default(),
            )
            .unwrap_err()
            .to_string()
        };
        let twelve: Vec<String> = (1..=12).map(|i| format!("\"10.0.0.{i}\"")).collect();
        let e = refused(&format!("[{}]", twelve.join(", ")));
        assert!(
            e.contains("invalid addr") && e.contains("at most 11"),
            "{e}"
        );
        let eleven = format!("[{}]", twelve[..11].join(", "));
        assert!(
            dir.all(
                &format!("{COMMON}vhid = 5\naddr = {eleven}\n"),
                RunArgs::default()
            )
            .is_ok()
        );
        let e = refused("[\"10.0.0.1/24\", \"10.0.0.1/32\"]");
        assert!(e.contains("10.0.0.1/32") && e.contains("twice"), "{e}");
        let e = refused("[\"10.0.0.1\", \"224.0.0.1\"]");
        assert!(e.contains("unicast"), "{e}");
        let e = refused("[]");
        assert!(e.contains("addr"), "{e}");
        let e = refused("5");
        assert!(e.contains("an address or a list of addresses"), "{e}");

        // The XDP program's map holds 255 IPv4 addresses in all.
        let many: String = (1..=24u32)
            .map(|v| {
                let addrs: Vec<String> = (0..11).map(|i| format!("\"10.1.{v}.{i}\"")).collect();
                format!("[[vhid]]\nvhid = {v}\naddr = [{}]\n", addrs.join(", "))
            })
            .collect();
        let xdp_on = COMMON.replace("xdp = \"off\"\n", "xdp = \"auto\"\n");
        let e = dir
            .all(&format!("{xdp_on}{many}"), RunArgs::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("264 IPv4 addresses") && e.contains("at most 255"),
            "{e}"
        );
        assert_eq!(
            dir.all(&format!("{COMMON}{many}"), RunArgs::default())
                .unwrap()
                .len(),
            24,
            "without XDP there is no such limit"
        );

        // Another vhid may not take any of them.
        let clash = format!(
            "{COMMON}[[vhid]]\nvhid = 10\naddr = [\"10.0.0.100\", \"10.0.0.101\"]\n[[vhid]]\nvhid = 20\naddr = [\"10.0.0.200\", \"10.0.0.101\"]\n",
        );
        let e = dir.all(&clash, RunArgs::default()).unwrap_err().to_string();
        assert!(
            e.contains("invalid addr: 10.0.0.101 in [[vhid]] tables 1 and 2"),
            "{e}"
        );
    }

    #[test]
    fn an_ipv6_vhid_takes_up_to_two_addresses_of_its_family_and_no_ipv4_only_setting() {
        let dir = ConfDir::new("vhid-ipv6");
        let file = |addr: &str, extra: &str| format!("{COMMON}vhid = 6\naddr = {addr}\n{extra}");
        let s = dir
            .all(
                &file("[\"2001:db8::100/64\", \"2001:db8::101\"]", ""),
                RunArgs::default(),
            )
            .unwrap();
        assert!(s[0].is_ipv6());
        assert_eq!(
            s[0].vips.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            ["2001:db8::100/64", "2001:db8::101/128"]
        );
        assert!(s[0].addrs_v4().is_empty());
        let refused = |addr: &str, extra: &str| {
            dir.all(&file(addr, extra), RunArgs::default())
                .unwrap_err()
                .to_string()
        };
        for (addr, extra, named) in [
            (
                "[\"2001:db8::1\", \"2001:db8::2\", \"2001:db8::3\"]",
                "",
                "at most 2 IPv6 addresses",
            ),
            (
                "[\"2001:db8::1\", \"10.0.0.1\"]",
                "",
                "all IPv4 or all IPv6",
            ),
            ("\"fe80::1\"", "", "not link-local"),
            ("\"ff02::12\"", "", "unicast"),
            ("\"2001:db8::1/129\"", "", "1-128"),
            (
                "\"2001:db8::1\"",
                "peers = [\"10.0.0.2\"]\n",
                "invalid peer",
            ),
            ("\"2001:db8::1\"", "nomcast = true\n", "invalid nomcast"),
            (
                "\"2001:db8::1\"",
                "mcastip = \"239.0.0.1\"\n",
                "invalid mcastip",
            ),
            ("\"2001:db8::1\"", "[mysql]\nca = \"/x\"\n", "invalid mysql"),
        ] {
            let e = refused(addr, extra);
            assert!(e.contains(named), "{addr} {extra}: {e}");
        }
    }

    #[test]
    fn duplicate_vhids_vips_and_databases_are_refused() {
        let dir = ConfDir::new("vhid-duplicates");
        for (tables, named) in [
            (
                format!(
                    "{}{}{}",
                    table(10, "10.0.0.100", ""),
                    table(20, "10.0.0.200", ""),
                    table(10, "10.0.0.30", "")
                ),
                "invalid vhid: 10 in [[vhid]] tables 1 and 3 (one XDP program",
            ),
            (
                format!(
                    "{}{}",
                    table(10, "10.0.0.100/24", ""),
                    table(20, "10.0.0.100/32", "")
                ),
                "invalid addr: 10.0.0.100 in [[vhid]] tables 1 and 2",
            ),
            (
                format!(
                    "{}{}{}{}",
                    table(10, "10.0.0.100", ""),
                    dir.mysql("vhid.mysql"),
                    table(20, "10.0.0.200", ""),
                    dir.mysql("vhid.mysql")
                ),
                "invalid mysql: [vhid.mysql] in [[vhid]] tables 1 and 2 (one local database",
            ),
        ] {
            let e = dir
                .all(&format!("{COMMON}{tables}"), RunArgs::default())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(named), "{tables:?}: {e}");
        }
    }

    #[test]
    fn mysql_in_one_vhid_table_belongs_to_that_vhid_only() {
        let dir = ConfDir::new("vhid-mysql");
        let text = format!(
            "{COMMON}{}{}{}[vhid.quorum]\nendpoints = [\"http://10.0.0.1:2379\"]\n{}",
            table(10, "10.0.0.100", ""),
            table(20, "10.0.0.200", "advskew = 10\n"),
            dir.mysql("vhid.mysql"),
            table(30, "10.0.0.250", ""),
        );
        let s = dir.all(&text, RunArgs::default()).unwrap();
        assert!(s[0].db.is_none() && s[2].db.is_none());
        assert!(s[0].quorum.is_none() && s[2].quorum.is_none());
        let db = s[1].db.as_ref().expect("[vhid.mysql] enables the database");
        assert_eq!(db.nodes, [Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(
            s[1].quorum.as_ref().unwrap().key,
            "/cluster-agent/vhid-20/leader",
            "the quorum of that table's vhid"
        );
    }

    #[test]
    fn the_single_vhid_form_still_gives_one_settings() {
        let dir = ConfDir::new("vhid-single");
        let single = format!("{COMMON}vhid = 9\naddr = \"10.0.0.50\"\n");
        let s = dir.all(&single, RunArgs::default()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].vhid, s[0].advbase), (9, 2));
        let one = format!("{COMMON}{}", table(9, "10.0.0.50", "advskew = 7\n"));
        let s = dir.args(&one, RunArgs::default()).validate(known).unwrap();
        assert_eq!(
            (s.vhid, s.advskew),
            (9, 7),
            "validate takes one [[vhid]] table too"
        );
        let two = format!(
            "{COMMON}{}{}",
            table(9, "10.0.0.50", ""),
            table(10, "10.0.0.51", "")
        );
        let e = dir
            .args(&two, RunArgs::default())
            .validate(known)
            .unwrap_err();
        assert!(matches!(e, ConfigError::NotOneVhid(2)), "{e}");
        // merge_file gives the common settings; the tables are validate_all's.
        let common = dir.args(&two, RunArgs::default()).merge_file().unwrap();
        assert_eq!((common.vhid, common.advbase), (None, Some(2)));
    }

    #[test]
    fn errors_inside_vhid_tables_are_syntax_errors_with_their_line() {
        let dir = ConfDir::new("vhid-syntax");
        for (text, named) in [
            (
                format!(
                    "{COMMON}{}{}",
                    table(9, "10.0.0.50", ""),
                    table(10, "10.0.0.51", "bogus = 1\n")
                ),
                "bogus",
            ),
            (format!("{COMMON}vhid = [1, 2]\n"), "invalid type"),
            (format!("{COMMON}vhid = \"9\"\n"), "invalid type"),
            (format!("{COMMON}[[vhid]\n"), "vhid"),
        ] {
            let e = dir.all(&text, RunArgs::default()).unwrap_err();
            assert!(
                matches!(e, ConfigError::ConfigSyntax { .. }),
                "{text:?}: {e}"
            );
            let e = e.to_string();
            assert!(e.contains(named) && e.contains("line"), "{text:?}: {e}");
        }
    }
}
