//! A real etcd cluster for the quorum lease: one member per node, in the node's namespace, so
//! a node cut off from the others is cut off from the majority of etcd too.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cmd;
use crate::mariadb::ClusterFiles;
use crate::proc::Proc;
use crate::rig::Rig;
use crate::wait::wait_until;

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// etcd's own defaults: heartbeat 100 ms, election after 1 s without one.
const HEARTBEAT_MS: u32 = 100;
const ELECTION_MS: u32 = 1000;

pub struct Etcd {
    /// Member `i` runs on node `i`.
    members: Vec<Option<Proc>>,
    addrs: Vec<Ipv4Addr>,
    namespaces: Vec<String>,
    data: PathBuf,
    token: String,
    tls: Option<Tls>,
}

/// Clients speak TLS to the members and must present a certificate of the cluster's CA: the
/// certificates `cluster-agent db bootstrap` made for the databases (a server certificate per
/// node naming its address, client certificates), as an operator may reuse them.
struct Tls {
    ca: PathBuf,
    /// Per node: its server certificate and key.
    servers: Vec<(PathBuf, PathBuf)>,
    client: (PathBuf, PathBuf),
}

#[derive(Deserialize)]
struct EndpointStatus {
    #[serde(rename = "Endpoint")]
    endpoint: String,
    #[serde(rename = "Status")]
    status: StatusBody,
}

#[derive(Deserialize)]
struct StatusBody {
    header: Header,
    leader: u64,
}

#[derive(Deserialize)]
struct Header {
    member_id: u64,
}

impl Etcd {
    /// Starts a member on every node of `rig` (plain HTTP) and waits until the cluster has a
    /// leader.
    pub fn start(rig: &Rig, limit: Duration) -> Result<Etcd> {
        Etcd::start_with(rig, None, limit)
    }

    /// As [`Etcd::start`], with clients on TLS and client certificates required, from the
    /// cluster's bootstrap `files`.
    pub fn start_tls(rig: &Rig, files: &ClusterFiles, limit: Duration) -> Result<Etcd> {
        let node = |i: usize, f: &str| files.nodes[i].dir.join(f);
        let tls = Tls {
            ca: files.ca.clone(),
            servers: (0..rig.node_count())
                .map(|i| (node(i, "server-cert.pem"), node(i, "server-key.pem")))
                .collect(),
            client: (
                files.nodes[0].client_cert.clone(),
                files.nodes[0].client_key.clone(),
            ),
        };
        Etcd::start_with(rig, Some(tls), limit)
    }

    fn start_with(rig: &Rig, tls: Option<Tls>, limit: Duration) -> Result<Etcd> {
        let n = rig.node_count();
        let mut e = Etcd {
            members: (0..n).map(|_| None).collect(),
            addrs: (0..n).map(|i| rig.addr(i)).collect(),
            namespaces: (0..n).map(|i| rig.ns(i).to_string()).collect(),
            data: rig.dir().join("etcd"),
            token: format!("quorum-{}", rig.id()),
            tls,
        };
        for i in 0..n {
            e.start_member(rig, i, "new")?;
        }
        e.wait_healthy(limit)?;
        Ok(e)
    }

    fn start_member(&mut self, rig: &Rig, i: usize, state: &str) -> Result<()> {
        let name = |i: usize| format!("m{i}");
        let peers: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .map(|(j, a)| format!("{}=http://{a}:{PEER_PORT}", name(j)))
            .collect();
        let a = self.addrs[i];
        let dir = self.data.join(name(i));
        std::fs::create_dir_all(&self.data).context("creating etcd's data directory")?;
        let client_url = self.url(i);
        let mut args = vec![
            "etcd".to_string(),
            format!("--name={}", name(i)),
            format!("--data-dir={}", dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls=http://{a}:{PEER_PORT}"),
            format!("--initial-advertise-peer-urls=http://{a}:{PEER_PORT}"),
            format!("--initial-cluster={}", peers.join(",")),
            format!("--initial-cluster-token={}", self.token),
            format!("--initial-cluster-state={state}"),
            format!("--heartbeat-interval={HEARTBEAT_MS}"),
            format!("--election-timeout={ELECTION_MS}"),
            "--log-level=warn".to_string(),
        ];
        if let Some(t) = &self.tls {
            args.extend([
                format!("--cert-file={}", t.servers[i].0.display()),
                format!("--key-file={}", t.servers[i].1.display()),
                format!("--trusted-ca-file={}", t.ca.display()),
                "--client-cert-auth".to_string(),
            ]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.members[i] = Some(rig.spawn(i, "etcd", &argv)?);
        Ok(())
    }

    /// The agents' `--quorum-*` flags.
    pub fn agent_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .endpoints()
            .into_iter()
            .map(|e| format!("--quorum-endpoint={e}"))
            .collect();
        if let Some(t) = &self.tls {
            args.push(format!("--quorum-ca={}", t.ca.display()));
            args.push(format!("--quorum-cert={}", t.client.0.display()));
            args.push(format!("--quorum-key={}", t.client.1.display()));
        }
        args
    }

    fn url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{CLIENT_PORT}", self.addrs[i])
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.addrs.len()).map(|i| self.url(i)).collect()
    }

    /// `etcdctl` on node `i` against the members that run, or all of them.
    fn etcdctl(&self, i: usize, endpoints: &[String], args: &[&str]) -> Result<String> {
        let mut argv = vec![format!("--endpoints={}", endpoints.join(","))];
        argv.push("--command-timeout=2s".into());
        if let Some(t) = &self.tls {
            argv.push(format!("--cacert={}", t.ca.display()));
            argv.push(format!("--cert={}", t.client.0.display()));
            argv.push(format!("--key={}", t.client.1.display()));
        }
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut c = cmd::netns_command(&self.namespaces[i], "etcdctl", &argv);
        c.env("ETCDCTL_API", "3");
        cmd::run(&mut c)
    }

    fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].as_ref().is_some_and(Proc::alive))
            .collect()
    }

    /// Every running member answers and the cluster has a leader.
    pub fn wait_healthy(&self, limit: Duration) -> Result<()> {
        wait_until(limit, "every running etcd member is healthy", || {
            let up = self.running();
            let Some(&from) = up.first() else {
                return false;
            };
            let eps: Vec<String> = up.iter().map(|&i| self.url(i)).collect();
            self.etcdctl(from, &eps, &["endpoint", "health"]).is_ok() && self.leader().is_ok()
        })?;
        Ok(())
    }

    /// The node whose member is etcd's leader now.
    pub fn leader(&self) -> Result<usize> {
        let up = self.running();
        let from = *up.first().context("no etcd member runs")?;
        let eps: Vec<String> = up.iter().map(|&i| self.url(i)).collect();
        let out = self.etcdctl(from, &eps, &["endpoint", "status", "-w", "json"])?;
        let status: Vec<EndpointStatus> =
            serde_json::from_str(&out).with_context(|| format!("etcdctl status: {out}"))?;
        for s in &status {
            if s.status.leader != 0 && s.status.header.member_id == s.status.leader {
                let i = self
                    .addrs
                    .iter()
                    .position(|a| s.endpoint.contains(&a.to_string()))
                    .context("an endpoint of no node")?;
                return Ok(i);
            }
        }
        bail!("no etcd member is leader: {out}")
    }

    /// Kills member `i` at once (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].take() {
            p.kill();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, rig: &Rig, i: usize) -> Result<()> {
        self.kill(i);
        self.start_member(rig, i, "existing")
    }

    /// The value of `key` (`None`: absent), read through node `via`'s member.
    pub fn get(&self, via: usize, key: &str) -> Result<Option<String>> {
        let ep = [self.url(via)];
        let out = self.etcdctl(via, &ep, &["get", "--print-value-only", key])?;
        let v = out.trim();
        Ok((!v.is_empty()).then(|| v.to_string()))
    }
}
