//! keepalived (VRRP) peers inside rig nodes, the other tool the agent is compared with. It
//! manages the VIP itself; notify scripts do whatever else must follow it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::env::keepalived_bin;
use crate::proc::Proc;
use crate::rig::{NODE_IF, Rig};

/// Settings of one keepalived VRRP instance. Defaults: VRRPv2, advert interval 1 s, no
/// authentication, no notify scripts.
#[derive(Clone, Debug)]
pub struct KeepalivedOpts {
    pub vrid: u8,
    pub vip: Ipv4Addr,
    /// 200 or more starts the instance as MASTER, as an operator marks the preferred node.
    pub priority: u8,
    /// 2 or 3.
    pub version: u8,
    /// VRRPv2 counts whole seconds; VRRPv3 centiseconds.
    pub advert_int_ms: u32,
    /// VRRPv2 simple-password authentication.
    pub auth_pass: Option<String>,
    pub notify_master: Option<PathBuf>,
    /// Also run on FAULT.
    pub notify_backup: Option<PathBuf>,
    pub log_detail: bool,
}

impl KeepalivedOpts {
    pub fn new(vrid: u8, vip: Ipv4Addr, priority: u8) -> KeepalivedOpts {
        KeepalivedOpts {
            vrid,
            vip,
            priority,
            version: 2,
            advert_int_ms: 1000,
            auth_pass: None,
            notify_master: None,
            notify_backup: None,
            log_detail: false,
        }
    }

    /// VRRPv3 with an advert interval of `ms` (a multiple of 10).
    pub fn v3(mut self, ms: u32) -> Self {
        self.version = 3;
        self.advert_int_ms = ms;
        self
    }

    /// VRRPv2 with an advert interval of `secs`.
    pub fn advert_int(mut self, secs: u8) -> Self {
        self.advert_int_ms = u32::from(secs) * 1000;
        self
    }

    pub fn auth(mut self, pass: &str) -> Self {
        self.auth_pass = Some(pass.to_string());
        self
    }

    pub fn notify(mut self, master: PathBuf, backup: PathBuf) -> Self {
        self.notify_master = Some(master);
        self.notify_backup = Some(backup);
        self
    }

    pub fn log_detail(mut self) -> Self {
        self.log_detail = true;
        self
    }

    /// Master-down time of a backup: VRRPv2 (RFC 3768) `3 * advert_int + (256 - priority)/256`
    /// s, the skew not scaled by the interval; VRRPv3 (RFC 5798) the skew scaled by it.
    pub fn master_down(&self) -> Duration {
        let i = u64::from(self.advert_int_ms) * 1000;
        let skew_unit = if self.version == 3 { i } else { 1_000_000 };
        Duration::from_micros(3 * i + (256 - u64::from(self.priority)) * skew_unit / 256)
    }

    fn advert_int_text(&self) -> String {
        if self.advert_int_ms.is_multiple_of(1000) {
            (self.advert_int_ms / 1000).to_string()
        } else {
            format!("{}", f64::from(self.advert_int_ms) / 1000.0)
        }
    }
}

impl Rig {
    /// Starts keepalived (VRRP only, in the foreground, logging to its log file) on node `i`.
    pub fn spawn_keepalived(&self, node: usize, o: &KeepalivedOpts) -> Result<Proc> {
        let dir = self.dir();
        let conf = dir.join(format!("keepalived-n{node}.conf"));
        let state = if o.priority >= 200 {
            "MASTER"
        } else {
            "BACKUP"
        };
        let mut notify = String::new();
        if let Some(up) = &o.notify_master {
            notify.push_str(&format!("    notify_master \"{}\"\n", up.display()));
        }
        if let Some(down) = &o.notify_backup {
            notify.push_str(&format!(
                "    notify_backup \"{0}\"\n    notify_fault \"{0}\"\n",
                down.display()
            ));
        }
        let auth = o.auth_pass.as_ref().map_or(String::new(), |p| {
            format!(
                "    authentication {{\n        auth_type PASS\n        auth_pass {p}\n    }}\n"
            )
        });
        let text = format!(
            "global_defs {{\n    router_id node{node}\n    vrrp_version {version}\n    script_user root\n}}\n\
             vrrp_instance VI_{vrid} {{\n    state {state}\n    interface {NODE_IF}\n\
             \x20   virtual_router_id {vrid}\n    priority {prio}\n    advert_int {advert_int}\n\
             {auth}{notify}\
             \x20   virtual_ipaddress {{\n        {vip}/{prefix} dev {NODE_IF}\n    }}\n}}\n",
            version = o.version,
            vrid = o.vrid,
            prio = o.priority,
            advert_int = o.advert_int_text(),
            vip = o.vip,
            prefix = self.prefix(),
        );
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        let pid = |what: &str| {
            dir.join(format!("keepalived-{what}-n{node}.pid"))
                .to_string_lossy()
                .into_owned()
        };
        let (main_pid, vrrp_pid) = (pid("main"), pid("vrrp"));
        let bin = keepalived_bin()?.to_string_lossy().into_owned();
        let conf = conf.to_string_lossy().into_owned();
        let mut argv = vec![&*bin, "--dont-fork", "--log-console"];
        if o.log_detail {
            argv.push("--log-detail");
        }
        argv.extend([
            "--no-syslog",
            "--vrrp",
            "--use-file",
            &conf,
            "--pid",
            &main_pid,
            "--vrrp_pid",
            &vrrp_pid,
        ]);
        self.spawn(node, "keepalived", &argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_down_times() {
        let v2 = KeepalivedOpts::new(1, Ipv4Addr::LOCALHOST, 100);
        assert_eq!(v2.master_down(), Duration::from_micros(3_609_375));
        let v3 = KeepalivedOpts::new(1, Ipv4Addr::LOCALHOST, 100).v3(10);
        assert_eq!(v3.master_down(), Duration::from_micros(30_000 + 6_093));
        assert_eq!(v3.advert_int_text(), "0.01");
        assert_eq!(v2.advert_int_text(), "1");
    }
}
