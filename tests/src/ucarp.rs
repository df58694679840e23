//! Real `ucarp` peers inside rig nodes, with up/down scripts that add and remove the VIP (and
//! whatever else a cluster's scripts do, e.g. promote a database).

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::env::ucarp_bin;
use crate::proc::Proc;
use crate::rig::{NODE_IF, Rig};
use crate::timing::{Timed, Timing};

/// Settings of one `ucarp` instance: [`Timing`] defaults, scripts that only move the VIP.
#[derive(Clone, Debug)]
pub struct UcarpOpts {
    pub vhid: u8,
    pub pass: String,
    pub vip: Ipv4Addr,
    pub timing: Timing,
    /// Source address; the node's own address when `None`.
    pub src: Option<Ipv4Addr>,
    /// Shell lines the up script runs after adding the VIP.
    pub up: Vec<String>,
    /// Shell lines the down script runs after removing the VIP.
    pub down: Vec<String>,
    pub extra: Vec<String>,
}

impl Timed for UcarpOpts {
    fn timing(&self) -> &Timing {
        &self.timing
    }

    fn timing_mut(&mut self) -> &mut Timing {
        &mut self.timing
    }
}

impl UcarpOpts {
    pub fn new(vhid: u8, pass: &str, vip: Ipv4Addr) -> UcarpOpts {
        UcarpOpts {
            vhid,
            pass: pass.to_string(),
            vip,
            timing: Timing::default(),
            src: None,
            up: Vec::new(),
            down: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn on_up(mut self, line: &str) -> Self {
        self.up.push(line.to_string());
        self
    }

    pub fn on_down(mut self, line: &str) -> Self {
        self.down.push(line.to_string());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }
}

impl Rig {
    /// Starts `ucarp` on node `i`. Its scripts log each call to the ucarp log and add/remove
    /// the VIP with the rig's prefix length before their own lines.
    pub fn spawn_ucarp(&self, node: usize, o: &UcarpOpts) -> Result<Proc> {
        let tag = format!("n{node}-v{}", o.vhid);
        let p = self.prefix();
        let up = self.write_script(
            &format!("ucarp-up-{tag}.sh"),
            &format!(
                "echo \"hook: up $*\"\nip addr add \"$2/{p}\" dev \"$1\"\n{}\nexit 0",
                o.up.join("\n")
            ),
        )?;
        let down = self.write_script(
            &format!("ucarp-down-{tag}.sh"),
            &format!(
                "echo \"hook: down $*\"\nip addr del \"$2/{p}\" dev \"$1\" 2>/dev/null\n{}\nexit 0",
                o.down.join("\n")
            ),
        )?;
        let src = o.src.unwrap_or_else(|| self.addr(node)).to_string();
        let t = &o.timing;
        let mut argv: Vec<String> = vec![
            // Line-buffered stdout so the log is current when a test reads it.
            "stdbuf".into(),
            "-oL".into(),
            ucarp_bin()?.to_string_lossy().into_owned(),
            "-i".into(),
            NODE_IF.into(),
            "-s".into(),
            src,
            "-v".into(),
            o.vhid.to_string(),
            "-p".into(),
            o.pass.clone(),
            "-a".into(),
            o.vip.to_string(),
            "-b".into(),
            t.advbase.to_string(),
            "-k".into(),
            t.advskew.to_string(),
            "-r".into(),
            t.deadratio.to_string(),
            "-u".into(),
            up.to_string_lossy().into_owned(),
            "-d".into(),
            down.to_string_lossy().into_owned(),
            "-z".into(),
        ];
        if t.preempt {
            argv.push("-P".into());
        }
        argv.extend(o.extra.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.spawn(node, "ucarp", &argv)
    }
}
