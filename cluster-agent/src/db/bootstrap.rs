//! Everything a cluster needs before its databases can replicate over verified TLS: a private
//! CA, per-node server and client certificates whose subject alternative name is the node's
//! address (so a replica can verify that it talks to the node it meant), per-node MariaDB
//! settings, and the SQL that creates the replication and agent users.
//!
//! The layout of the output directory:
//!
//! ```text
//! OUT/ca.pem                      CA certificate (public; every node trusts it)
//! OUT/ca-key.pem                  CA private key (0600; keep it offline, it signs new nodes)
//! OUT/users.sql                   users and grants, password hashes only (0600)
//! OUT/secrets/replication.pass    replication password (0600)
//! OUT/secrets/admin.pass          the agent's admin password (0600)
//! OUT/secrets/app.pass            the application account's password, with `--app-user` (0600)
//! OUT/nodes/NAME/ca.pem           copy of the CA certificate
//! OUT/nodes/NAME/server-cert.pem  server certificate, SAN = the node's address and the VIPs
//! OUT/nodes/NAME/server-key.pem   (0600)
//! OUT/nodes/NAME/client-cert.pem  client certificate (the agent, and replication)
//! OUT/nodes/NAME/client-key.pem   (0600)
//! OUT/nodes/NAME/cluster-agent.cnf  MariaDB settings for the node
//! OUT/nodes/NAME/agent.toml       the agent's `[mysql]` section for the node, with every node
//!                                 listed (append it to the agent's TOML file)
//! ```
//!
//! `users.sql` holds only `mysql_native_password` hashes, so applying it never puts a
//! password in a server's history or logs; it disables the binary log for its session, so the
//! users never become GTIDs that one node holds and another lacks (which would look like
//! errant transactions). The replication and agent users require a client certificate from
//! the cluster's CA (`REQUIRE X509`): a stolen password alone opens nothing.
//!
//! Applications reach the database through the VIP, so every server certificate also names
//! each `--vip`: a client that verifies the server's name (`--ssl-verify-server-cert`) accepts
//! whichever node holds the address.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha1::{Digest, Sha1};

use super::secret::Secret;

/// Default name of the replication user.
pub const DEFAULT_REPL_USER: &str = "cluster_repl";
/// Default name of the agent's admin user.
pub const DEFAULT_ADMIN_USER: &str = "cluster_agent";
/// How long a master waits for a replica's acknowledgement before it goes on alone. A replica
/// can be promoted automatically after its master's power failure only if the master cannot
/// have gone on alone unseen: this must exceed the master's advert interval plus two sample
/// intervals of the agent (1 s + 255/256 s + 2 x 200 ms with the defaults), or replicas refuse.
pub const DEFAULT_SEMI_SYNC_TIMEOUT_MS: u32 = 3000;
/// Where `agent.toml` expects the password files on a node (with `--install-dir`).
pub const NODE_SECRETS_DIR: &str = "/etc/cluster-agent";
/// Years a generated certificate stays valid.
const VALID_YEARS: i32 = 10;

/// One node of the cluster, as `NAME=ADDR` on a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub addr: IpAddr,
}

impl FromStr for NodeSpec {
    type Err = BootstrapError;

    fn from_str(s: &str) -> Result<NodeSpec, BootstrapError> {
        let bad = || BootstrapError::BadNode(s.to_string());
        let (name, addr) = s.split_once('=').ok_or_else(bad)?;
        let addr = addr.trim().parse().map_err(|_| bad())?;
        let name = name.trim();
        if !valid_name(name) {
            return Err(bad());
        }
        Ok(NodeSpec {
            name: name.to_string(),
            addr,
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct BootstrapOptions {
    /// Output directory; created if missing, refused if it already holds a CA (so a second
    /// run never silently replaces the CA every node trusts).
    pub out: PathBuf,
    pub nodes: Vec<NodeSpec>,
    /// Where each node's files will live on the node, as written into its `.cnf`
    /// (`DIR/NAME` is not assumed: every node uses this same directory). `None`: the absolute
    /// path of `OUT/nodes/NAME`, for a cluster on one machine (tests, the demo).
    pub install_dir: Option<PathBuf>,
    pub repl_user: String,
    pub admin_user: String,
    /// `server_id` of the first node; the others follow in order. Every server of a GTID
    /// cluster needs its own.
    pub first_server_id: u32,
    /// How long a semi-sync master waits for a replica's acknowledgement before it falls back
    /// to asynchronous replication.
    pub semi_sync_timeout_ms: u32,
    /// Addresses clients dial instead of a node's (the VIPs): named in every server
    /// certificate.
    pub vips: Vec<IpAddr>,
    /// An application account to create with the others (`REQUIRE SSL`, no global
    /// privileges), owning the schema of the same name.
    pub app_user: Option<String>,
}

impl BootstrapOptions {
    pub fn new(out: impl Into<PathBuf>, nodes: Vec<NodeSpec>) -> BootstrapOptions {
        BootstrapOptions {
            out: out.into(),
            nodes,
            install_dir: None,
            repl_user: DEFAULT_REPL_USER.to_string(),
            admin_user: DEFAULT_ADMIN_USER.to_string(),
            first_server_id: 1,
            semi_sync_timeout_ms: DEFAULT_SEMI_SYNC_TIMEOUT_MS,
            vips: Vec::new(),
            app_user: None,
        }
    }
}

/// The files written for one node.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    pub name: String,
    pub addr: IpAddr,
    pub server_id: u32,
    pub dir: PathBuf,
    pub cnf: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The agent's `[mysql]` section for this node.
    pub agent_toml: PathBuf,
}

/// What [`bootstrap`] wrote.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub users_sql: PathBuf,
    pub repl_user: String,
    pub admin_user: String,
    pub repl_password_file: PathBuf,
    pub admin_password_file: PathBuf,
    /// With an application account: its password.
    pub app_password_file: Option<PathBuf>,
    pub nodes: Vec<NodeFiles>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("node {0:?} is not NAME=ADDR (NAME: letters, digits, '-', '_'; ADDR: an IP address)")]
    BadNode(String),
    #[error("no nodes given")]
    NoNodes,
    #[error("node {0} is given twice")]
    DuplicateName(String),
    #[error("address {0} is given to two nodes")]
    DuplicateAddr(IpAddr),
    #[error("user name {0:?} must be 1-32 letters, digits or '_'")]
    BadUser(String),
    #[error("user name {0:?} is given to two accounts")]
    DuplicateUser(String),
    #[error("VIP {0} is also a node's address (a VIP moves between nodes)")]
    VipIsNode(IpAddr),
    #[error("{0} already holds a CA; refusing to replace the CA every node trusts")]
    Exists(PathBuf),
    #[error("generating certificates")]
    Cert(#[from] rcgen::Error),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Generates the CA, the per-node certificates and settings, the passwords and `users.sql`.
pub fn bootstrap(opts: &BootstrapOptions) -> Result<Bootstrap, BootstrapError> {
    validate(opts)?;
    let out = absolute(&opts.out)?;
    let ca_path = out.join("ca.pem");
    if ca_path.exists() {
        return Err(BootstrapError::Exists(out));
    }
    mkdir(&out)?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("cluster-agent database CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);
    write_file(&ca_path, ca_pem.as_bytes(), 0o644)?;
    let ca_key_path = out.join("ca-key.pem");
    write_file(&ca_key_path, issuer.key().serialize_pem().as_bytes(), 0o600)?;

    let secrets = out.join("secrets");
    mkdir(&secrets)?;
    let repl_pw = generate_password();
    let admin_pw = generate_password();
    let repl_password_file = secrets.join("replication.pass");
    let admin_password_file = secrets.join("admin.pass");
    write_file(
        &repl_password_file,
        format!("{}\n", repl_pw.expose()).as_bytes(),
        0o600,
    )?;
    write_file(
        &admin_password_file,
        format!("{}\n", admin_pw.expose()).as_bytes(),
        0o600,
    )?;
    let app = match &opts.app_user {
        Some(user) => {
            let pw = generate_password();
            let file = secrets.join("app.pass");
            write_file(&file, format!("{}\n", pw.expose()).as_bytes(), 0o600)?;
            Some((user.as_str(), pw, file))
        }
        None => None,
    };
    let users_sql = out.join("users.sql");
    let mut sql = users_sql_text(&opts.repl_user, &repl_pw, &opts.admin_user, &admin_pw);
    if let Some((user, pw, _)) = &app {
        sql += &app_sql_text(user, pw);
    }
    sql += "SET SESSION sql_log_bin = 1;\n";
    write_file(&users_sql, sql.as_bytes(), 0o600)?;

    let mut nodes = Vec::new();
    for (i, node) in opts.nodes.iter().enumerate() {
        let dir = out.join("nodes").join(&node.name);
        mkdir(&dir)?;
        let files = NodeFiles {
            name: node.name.clone(),
            addr: node.addr,
            server_id: opts.first_server_id + i as u32,
            cnf: dir.join("cluster-agent.cnf"),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server-cert.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client-cert.pem"),
            client_key: dir.join("client-key.pem"),
            agent_toml: dir.join("agent.toml"),
            dir,
        };
        write_file(&files.ca, ca_pem.as_bytes(), 0o644)?;
        let (cert, key) = leaf(
            &issuer,
            node,
            &opts.vips,
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        )?;
        write_file(&files.server_cert, cert.as_bytes(), 0o644)?;
        write_file(&files.server_key, key.as_bytes(), 0o600)?;
        let (cert, key) = leaf(
            &issuer,
            node,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        )?;
        write_file(&files.client_cert, cert.as_bytes(), 0o644)?;
        write_file(&files.client_key, key.as_bytes(), 0o600)?;
        let installed = opts
            .install_dir
            .clone()
            .unwrap_or_else(|| files.dir.clone());
        write_file(
            &files.cnf,
            node_cnf(&files, &installed, opts.semi_sync_timeout_ms).as_bytes(),
            0o644,
        )?;
        let secrets_on_node = match &opts.install_dir {
            Some(_) => PathBuf::from(NODE_SECRETS_DIR),
            None => secrets.clone(),
        };
        write_file(
            &files.agent_toml,
            agent_toml(opts, &files, &installed, &secrets_on_node).as_bytes(),
            0o644,
        )?;
        tracing::info!(node = %node.name, addr = %node.addr, server_id = files.server_id, dir = %files.dir.display(), "node certificates and settings written");
        nodes.push(files);
    }
    Ok(Bootstrap {
        ca_cert: ca_path,
        ca_key: ca_key_path,
        users_sql,
        repl_user: opts.repl_user.clone(),
        admin_user: opts.admin_user.clone(),
        repl_password_file,
        admin_password_file,
        app_password_file: app.map(|(_, _, file)| file),
        nodes,
    })
}

fn validate(opts: &BootstrapOptions) -> Result<(), BootstrapError> {
    if opts.nodes.is_empty() {
        return Err(BootstrapError::NoNodes);
    }
    for (i, n) in opts.nodes.iter().enumerate() {
        if !valid_name(&n.name) {
            return Err(BootstrapError::BadNode(format!("{}={}", n.name, n.addr)));
        }
        for m in &opts.nodes[..i] {
            if m.name == n.name {
                return Err(BootstrapError::DuplicateName(n.name.clone()));
            }
            if m.addr == n.addr {
                return Err(BootstrapError::DuplicateAddr(n.addr));
            }
        }
    }
    let users: Vec<&String> = [&opts.repl_user, &opts.admin_user]
        .into_iter()
        .chain(&opts.app_user)
        .collect();
    for (i, user) in users.iter().enumerate() {
        // The names are spliced into SQL; a strict alphabet keeps that safe.
        let ok = !user.is_empty()
            && user.len() <= 32
            && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(BootstrapError::BadUser(user.to_string()));
        }
        if users[..i].contains(user) {
            return Err(BootstrapError::DuplicateUser(user.to_string()));
        }
    }
    if let Some(vip) = opts
        .vips
        .iter()
        .find(|v| opts.nodes.iter().any(|n| n.addr == **v))
    {
        return Err(BootstrapError::VipIsNode(*vip));
    }
    Ok(())
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "cluster-agent");
    d.push(DnType::CommonName, cn);
    d
}

/// A certificate for `node` (and the addresses in `also`) signed by the CA; returns
/// (certificate PEM, key PEM).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    node: &NodeSpec,
    also: &[IpAddr],
    usage: ExtendedKeyUsagePurpose,
    role: &str,
) -> Result<(String, String), BootstrapError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(&format!("{} {role}", node.name));
    // Verification of a connection checks the address it dialled against these: a replica
    // dials the node, an application the VIP.
    p.subject_alt_names = std::iter::once(node.addr)
        .chain(also.iter().copied())
        .map(SanType::IpAddress)
        .collect();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p);
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// From the first of January of last year (clocks of new nodes are often a little behind)
/// for [`VALID_YEARS`].
fn set_validity(p: &mut CertificateParams) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Average Gregorian year; an error of a day near New Year does not matter here.
    let year = 1970 + (secs / 31_556_952) as i32;
    p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
}

/// 192 random bits, hex: safe inside SQL string literals and config files without quoting.
fn generate_password() -> Secret {
    let bytes: [u8; 24] = rand::random();
    Secret::new(hex(&bytes, false))
}

fn hex(bytes: &[u8], upper: bool) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        if upper {
            let _ = write!(s, "{b:02X}");
        } else {
            let _ = write!(s, "{b:02x}");
        }
    }
    s
}

/// The `mysql_native_password` hash: `*` and the uppercase hex of SHA1(SHA1(password)).
pub fn native_password_hash(password: &Secret) -> String {
    let stage1 = Sha1::digest(password.expose().as_bytes());
    let stage2 = Sha1::digest(stage1);
    format!("*{}", hex(&stage2, true))
}

fn users_sql_text(
    repl_user: &str,
    repl_pw: &Secret,
    admin_user: &str,
    admin_pw: &Secret,
) -> String {
    let repl_hash = native_password_hash(repl_pw);
    let admin_hash = native_password_hash(admin_pw);
    format!(
        "-- Users for cluster-agent. Apply on every node (as root, before replication starts):\n\
         --   mariadb < users.sql\n\
         -- The binary log is off for this session, so these statements never become GTIDs.\n\
         SET SESSION sql_log_bin = 0;\n\
         -- Replication and the agent present a client certificate from the cluster's CA.\n\
         CREATE OR REPLACE USER '{repl_user}'@'%' IDENTIFIED BY PASSWORD '{repl_hash}' REQUIRE X509;\n\
         GRANT REPLICATION SLAVE ON *.* TO '{repl_user}'@'%';\n\
         CREATE OR REPLACE USER '{admin_user}'@'%' IDENTIFIED BY PASSWORD '{admin_hash}' REQUIRE X509;\n\
         GRANT PROCESS, RELOAD, SUPER, CONNECTION ADMIN, READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, \
         REPLICATION MASTER ADMIN, BINLOG ADMIN, BINLOG MONITOR, SLAVE MONITOR ON *.* TO '{admin_user}'@'%';\n\
         -- To name the accounts that can write through read_only (fencing cannot stop them).\n\
         GRANT SELECT ON mysql.global_priv TO '{admin_user}'@'%';\n\
         GRANT SELECT ON mysql.roles_mapping TO '{admin_user}'@'%';\n"
    )
}

/// The application account and its schema. Made on every node outside the binary log like
/// the other users, so no node holds a GTID the others lack; the application's tables are
/// then made through the VIP, on the master, and replicate. No global privilege: nothing here
/// can write through `read_only`.
fn app_sql_text(user: &str, pw: &Secret) -> String {
    let hash = native_password_hash(pw);
    format!(
        "-- The application's account: TLS required, rights on its own schema only.\n\
         CREATE DATABASE IF NOT EXISTS `{user}`;\n\
         CREATE OR REPLACE USER '{user}'@'%' IDENTIFIED BY PASSWORD '{hash}' REQUIRE SSL;\n\
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, REFERENCES, \
         CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, \
         ALTER ROUTINE, TRIGGER ON `{user}`.* TO '{user}'@'%';\n"
    )
}

/// The agent's `[mysql]` section for one node: paths as they will be on the node, and every
/// node of the cluster, which a node needs to show that nobody holds more before it opens.
fn agent_toml(
    opts: &BootstrapOptions,
    files: &NodeFiles,
    installed: &Path,
    secrets: &Path,
) -> String {
    let p = |f: &Path| {
        installed
            .join(f.file_name().expect("file name"))
            .display()
            .to_string()
    };
    let nodes: Vec<String> = opts
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.addr))
        .collect();
    format!(
        "# The agent's database settings for node {name} ({addr}), written by\n\
         # `cluster-agent db bootstrap`: append to the agent's TOML file. The password files are\n\
         # copies of secrets/admin.pass and secrets/replication.pass (mode 0600).\n\
         [mysql]\n\
         ca = \"{ca}\"\n\
         client-cert = \"{cert}\"\n\
         client-key = \"{key}\"\n\
         admin-user = \"{admin}\"\n\
         admin-password-file = \"{secrets}/admin.pass\"\n\
         repl-user = \"{repl}\"\n\
         repl-password-file = \"{secrets}/replication.pass\"\n\
         # Every database node of the cluster, this one included.\n\
         nodes = [{nodes}]\n",
        name = files.name,
        addr = files.addr,
        ca = p(&files.ca),
        cert = p(&files.client_cert),
        key = p(&files.client_key),
        admin = opts.admin_user,
        repl = opts.repl_user,
        secrets = secrets.display(),
        nodes = nodes.join(", "),
    )
}

fn node_cnf(files: &NodeFiles, installed: &Path, semi_sync_timeout_ms: u32) -> String {
    let p = |f: &Path| {
        installed
            .join(f.file_name().expect("file name"))
            .display()
            .to_string()
    };
    format!(
        "# MariaDB settings for node {name} ({addr}), written by `cluster-agent db bootstrap`.\n\
         # Include it from the server's configuration (e.g. /etc/mysql/mariadb.conf.d/).\n\
         [mariadbd]\n\
         server_id = {server_id}\n\
         # Every address: applications reach the master on the VIP, which comes and goes;\n\
         # require_secure_transport keeps every connection on TLS.\n\
         bind_address = 0.0.0.0\n\
         # The agents of the other nodes check that this host is up with a bare TCP connection\n\
         # when this server is slow to answer them; the server counts each as a failed\n\
         # connection from their host and by default blocks a host after 100 in a row.\n\
         max_connect_errors = 1000000\n\
         # GTID replication; every node logs what it applies, so any replica can become master.\n\
         log_bin = mariadb-bin\n\
         log_slave_updates = ON\n\
         binlog_format = ROW\n\
         gtid_strict_mode = ON\n\
         relay_log = relay-bin\n\
         # The agent decides whom to replicate from and when to accept writes.\n\
         skip_slave_start = ON\n\
         read_only = ON\n\
         # TLS on every TCP connection; replicas verify this server's certificate.\n\
         ssl_ca = {ca}\n\
         ssl_cert = {cert}\n\
         ssl_key = {key}\n\
         require_secure_transport = ON\n\
         tls_version = TLSv1.2,TLSv1.3\n\
         # Semi-sync with the lossless wait point: a commit is acknowledged to its client only\n\
         # after a replica has it, until a replica fails to answer within the timeout; then the\n\
         # master goes on alone (the agent sees it and will not promote a replica automatically\n\
         # until one has caught up). The agent switches the master side on when it promotes.\n\
         rpl_semi_sync_master_enabled = OFF\n\
         rpl_semi_sync_slave_enabled = ON\n\
         rpl_semi_sync_master_wait_point = AFTER_SYNC\n\
         rpl_semi_sync_master_timeout = {semi_sync_timeout_ms}\n\
         rpl_semi_sync_master_wait_no_slave = OFF\n\
         # STOP SLAVE on a replica of a dead master waits this long (s) trying to reach it.\n\
         rpl_semi_sync_slave_kill_conn_timeout = 1\n\
         # Durable before acknowledged: the binary log and the relay log reach the disk before a\n\
         # commit or an acknowledgement is reported, and so does InnoDB's commit record (3, not\n\
         # 1: with 1, InnoDB leaves a commit to be redone from the binary log after a crash, but\n\
         # crash recovery as a replica (below) removes instead every transaction InnoDB has only\n\
         # prepared, and after a semi-sync fall-back that can be a write its client was told had\n\
         # committed and no replica has).\n\
         sync_binlog = 1\n\
         innodb_flush_log_at_trx_commit = 3\n\
         sync_relay_log = 1\n\
         # Every node starts as a replica: crash recovery removes from the binary log what a\n\
         # master had logged but no replica acknowledged (no client was told it committed), so\n\
         # a crashed master comes back without transactions nobody else has.\n\
         init_rpl_role = SLAVE\n",
        name = files.name,
        addr = files.addr,
        server_id = files.server_id,
        ca = p(&files.ca),
        cert = p(&files.server_cert),
        key = p(&files.server_key),
    )
}

fn absolute(p: &Path) -> Result<PathBuf, BootstrapError> {
    std::path::absolute(p).map_err(|source| BootstrapError::Write {
        path: p.to_path_buf(),
        source,
    })
}

fn mkdir(p: &Path) -> Result<(), BootstrapError> {
    std::fs::create_dir_all(p).map_err(|source| BootstrapError::Write {
        path: p.to_path_buf(),
        source,
    })
}

/// Creates `path` with `mode` from the start, so a private key is never readable by others,
/// not even for a moment.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    // An existing file keeps its old mode through open(); set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("db-bootstrap-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn node_spec_parses_name_and_address() {
        let n: NodeSpec = "db-1=10.0.0.1".parse().unwrap();
        assert_eq!(n.name, "db-1");
        assert_eq!(n.addr, "10.0.0.1".parse::<IpAddr>().unwrap());
        for bad in [
            "db1",
            "=10.0.0.1",
            "db 1=10.0.0.1",
            "db1=host",
            "a/b=10.0.0.1",
        ] {
            assert!(bad.parse::<NodeSpec>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn native_hash_matches_the_server_formula() {
        // The hash MariaDB's PASSWORD('password') returns.
        assert_eq!(
            native_password_hash(&Secret::new("password")),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }

    #[test]
    fn writes_ca_node_files_private_keys_and_no_cleartext_password() {
        let out = tmp("files");
        let nodes = vec!["a=10.1.0.1".parse().unwrap(), "b=10.1.0.2".parse().unwrap()];
        let b = bootstrap(&BootstrapOptions::new(&out, nodes)).unwrap();
        assert_eq!(b.nodes.len(), 2);
        assert_eq!(b.nodes[1].server_id, 2);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&b.ca_key), 0o600);
        assert_eq!(mode(&b.nodes[0].server_key), 0o600);
        assert_eq!(mode(&b.nodes[0].client_key), 0o600);
        assert_eq!(mode(&b.repl_password_file), 0o600);
        let cnf = std::fs::read_to_string(&b.nodes[1].cnf).unwrap();
        for want in [
            "server_id = 2",
            "bind_address = 0.0.0.0",
            "require_secure_transport = ON",
            "gtid_strict_mode = ON",
            "read_only = ON",
            "log_slave_updates = ON",
            "binlog_format = ROW",
            "rpl_semi_sync_slave_enabled = ON",
            "init_rpl_role = SLAVE",
            "sync_binlog = 1",
            "innodb_flush_log_at_trx_commit = 3",
            "sync_relay_log = 1",
            "rpl_semi_sync_master_wait_point = AFTER_SYNC",
        ] {
            assert!(cnf.contains(want), "cnf lacks {want:?}:\n{cnf}");
        }
        assert!(cnf.contains(&format!("ssl_key = {}", b.nodes[1].server_key.display())));
        // The agent's section names every node and parses as the agent's own settings.
        let toml_text = std::fs::read_to_string(&b.nodes[1].agent_toml).unwrap();
        assert!(
            toml_text.contains("nodes = [\"10.1.0.1\", \"10.1.0.2\"]"),
            "{toml_text}"
        );
        let parsed: crate::config::RunArgs = toml::from_str(&toml_text).unwrap();
        assert_eq!(parsed.mysql.nodes.len(), 2);
        let sql = std::fs::read_to_string(&b.users_sql).unwrap();
        let pw = Secret::from_file(&b.repl_password_file).unwrap();
        assert!(
            !sql.contains(pw.expose()),
            "users.sql holds a cleartext password"
        );
        assert!(sql.contains(&native_password_hash(&pw)));
        assert!(sql.contains("IDENTIFIED BY PASSWORD '*") && sql.contains("REQUIRE X509"));
        assert!(
            !sql.contains("REQUIRE SSL"),
            "an application account unasked for"
        );
        assert!(sql.starts_with("--") && sql.contains("sql_log_bin = 0"));
        assert!(sql.trim_end().ends_with("sql_log_bin = 1;"));
        assert!(b.app_password_file.is_none());
        // A second run must not replace the CA.
        let again = bootstrap(&BootstrapOptions::new(
            &out,
            vec!["a=10.1.0.1".parse().unwrap()],
        ));
        assert!(matches!(again, Err(BootstrapError::Exists(_))));
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn an_application_account_with_its_own_schema_and_no_global_rights() {
        let out = tmp("app");
        let mut o = BootstrapOptions::new(&out, vec!["a=10.1.0.1".parse().unwrap()]);
        o.app_user = Some("shop".into());
        o.vips = vec!["10.1.0.100".parse().unwrap()];
        let b = bootstrap(&o).unwrap();
        let file = b.app_password_file.as_ref().expect("app password file");
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let pw = Secret::from_file(file).unwrap();
        let sql = std::fs::read_to_string(&b.users_sql).unwrap();
        assert!(!sql.contains(pw.expose()));
        let app: Vec<&str> = sql.lines().filter(|l| l.contains("'shop'")).collect();
        assert_eq!(app.len(), 2, "{sql}");
        assert!(app[0].contains(&native_password_hash(&pw)) && app[0].ends_with("REQUIRE SSL;"));
        assert!(app[1].starts_with("GRANT ") && app[1].contains(" ON `shop`.* TO "));
        for global in ["ALL", "SUPER", "READ_ONLY ADMIN", "*.*"] {
            assert!(!app[1].contains(global), "{global} granted: {}", app[1]);
        }
        // Before the binary log is switched back on.
        let on = sql.find("sql_log_bin = 1").unwrap();
        assert!(sql.find("'shop'").unwrap() < on);
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn rejects_duplicates_and_bad_users() {
        let out = tmp("dup");
        let n: NodeSpec = "a=10.1.0.1".parse().unwrap();
        let mut o = BootstrapOptions::new(&out, vec![n.clone(), n.clone()]);
        assert!(matches!(
            bootstrap(&o),
            Err(BootstrapError::DuplicateName(_))
        ));
        o.nodes = vec![n, "b=10.1.0.1".parse().unwrap()];
        assert!(matches!(
            bootstrap(&o),
            Err(BootstrapError::DuplicateAddr(_))
        ));
        o.nodes.truncate(1);
        o.vips = vec!["10.1.0.1".parse().unwrap()];
        assert!(matches!(bootstrap(&o), Err(BootstrapError::VipIsNode(_))));
        o.vips.clear();
        o.app_user = Some(DEFAULT_ADMIN_USER.into());
        assert!(matches!(
            bootstrap(&o),
            Err(BootstrapError::DuplicateUser(_))
        ));
        o.app_user = Some("app`x".into());
        assert!(matches!(bootstrap(&o), Err(BootstrapError::BadUser(_))));
        o.app_user = None;
        o.repl_user = "x'; DROP".into();
        assert!(matches!(bootstrap(&o), Err(BootstrapError::BadUser(_))));
        assert!(!out.exists());
    }
}
