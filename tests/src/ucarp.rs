//! Real `ucarp` peers inside rig nodes, with up/down scripts that add and remove the VIP.

use std::net::Ipv4Addr;

use crate::env::ucarp_bin;
use crate::proc::Proc;
use crate::rig::Rig;

/// Settings of one `ucarp` instance. Defaults: advbase 1, advskew 0, deadratio 3, no preempt.
#[derive(Clone, Debug)]
pub struct UcarpOpts {
    pub vhid: u8,
    pub pass: String,
    pub vip: Ipv4Addr,
    pub advbase: u8,
    pub advskew: u8,
    pub deadratio: u32,
    pub preempt: bool,
    /// Source address; the node's own address when `None`.
    pub src: Option<Ipv4Addr>,
    pub extra: Vec<String>,
}

impl UcarpOpts {
    pub fn new(vhid: u8, pass: &str, vip: Ipv4Addr) -> UcarpOpts {
        UcarpOpts {
            vhid,
            pass: pass.to_string(),
            vip,
            advbase: 1,
            advskew: 0,
            deadratio: 3,
            preempt: false,
            src: None,
            extra: Vec::new(),
        }
    }

    pub fn advbase(mut self, v: u8) -> Self {
        self.advbase = v;
        self
    }

    pub fn advskew(mut self, v: u8) -> Self {
        self.advskew = v;
        self
    }

    pub fn deadratio(mut self, v: u32) -> Self {
        self.deadratio = v;
        self
    }

    pub fn preempt(mut self, v: bool) -> Self {
        self.preempt = v;
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    /// Master-down time in BACKUP: `advbase * deadratio + advskew / 256` seconds.
    pub fn master_down(&self) -> std::time::Duration {
        master_down(self.advbase, self.advskew, self.deadratio)
    }
}

/// `advbase * deadratio + advskew / 256` seconds, as UCARP computes it.
pub fn master_down(advbase: u8, advskew: u8, deadratio: u32) -> std::time::Duration {
    std::time::Duration::from_micros(
        u64::from(advbase) * u64::from(deadratio) * 1_000_000
            + u64::from(advskew) * 1_000_000 / 256,
    )
}

impl Rig {
    /// Starts `ucarp` on node `i`. Its hooks add/remove the VIP with the rig's prefix length
    /// and log each call to the ucarp log.
    pub fn spawn_ucarp(&self, node: usize, o: &UcarpOpts) -> Proc {
        let tag = format!("n{node}-v{}", o.vhid);
        let up = self.write_script(
            &format!("ucarp-up-{tag}.sh"),
            &format!(
                "echo \"hook: up $*\"\nexec ip addr add \"$2/{p}\" dev \"$1\"",
                p = self.prefix()
            ),
        );
        let down = self.write_script(
            &format!("ucarp-down-{tag}.sh"),
            &format!(
                "echo \"hook: down $*\"\nip addr del \"$2/{p}\" dev \"$1\" 2>/dev/null\nexit 0",
                p = self.prefix()
            ),
        );
        let src = o.src.unwrap_or_else(|| self.addr(node)).to_string();
        let bin = ucarp_bin();
        let mut argv: Vec<String> = vec![
            // Line-buffered stdout so the log is current when a test prints it.
            "stdbuf".into(),
            "-oL".into(),
            bin.to_string_lossy().into_owned(),
            "-i".into(),
            crate::rig::NODE_IF.into(),
            "-s".into(),
            src,
            "-v".into(),
            o.vhid.to_string(),
            "-p".into(),
            o.pass.clone(),
            "-a".into(),
            o.vip.to_string(),
            "-b".into(),
            o.advbase.to_string(),
            "-k".into(),
            o.advskew.to_string(),
            "-r".into(),
            o.deadratio.to_string(),
            "-u".into(),
            up.to_string_lossy().into_owned(),
            "-d".into(),
            down.to_string_lossy().into_owned(),
            "-z".into(),
        ];
        if o.preempt {
            argv.push("-P".into());
        }
        argv.extend(o.extra.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.spawn(node, "ucarp", &argv)
    }
}
