//! Packet captures with `tcpdump` inside a rig node, and a small pcap reader.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, ensure};

use crate::env::tcpdump_bin;
use crate::proc::Proc;
use crate::rig::{NODE_IF, Rig};
use crate::wait::wait_until;

/// A running capture of CARP/VRRP traffic (IP protocol 112) on a node's `eth0`.
pub struct Capture {
    proc: Proc,
    path: PathBuf,
}

impl Rig {
    /// Starts capturing `ip proto 112` on node `i` and waits until tcpdump listens.
    pub fn capture(&self, node: usize, name: &str) -> Result<Capture> {
        self.start_capture(name, |argv| {
            self.spawn(node, &format!("tcpdump-{name}"), argv)
        })
    }

    /// As [`Rig::capture`], on the client's port: it runs no agent, so no XDP program takes
    /// the adverts before tcpdump sees them.
    pub fn capture_on_client(&self, name: &str) -> Result<Capture> {
        self.start_capture(name, |argv| {
            self.spawn_client(&format!("tcpdump-{name}"), argv)
        })
    }

    fn start_capture(
        &self,
        name: &str,
        spawn: impl FnOnce(&[&str]) -> Result<Proc>,
    ) -> Result<Capture> {
        let path = self.dir().join(format!("{name}.pcap"));
        let bin = tcpdump_bin()?;
        let p = path.to_string_lossy().into_owned();
        let proc = spawn(&[
            &bin.to_string_lossy(),
            "-Z",
            "root",
            "-n",
            "-i",
            NODE_IF,
            "-w",
            &p,
            "-U",
            "--immediate-mode",
            "ip proto 112",
        ])?;
        wait_until(Duration::from_secs(5), "tcpdump listens", || {
            proc.check_alive()?;
            Ok(proc.log().contains("listening on"))
        })?;
        Ok(Capture { proc, path })
    }
}

impl Capture {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames written so far, with their capture times.
    pub fn records(&self) -> Vec<Record> {
        read_pcap_records(&self.path).unwrap_or_default()
    }

    /// Frames written so far.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        read_pcap(&self.path).unwrap_or_default()
    }

    /// Stops tcpdump (which flushes the file) and returns the file's path.
    pub fn stop(mut self) -> Result<PathBuf> {
        self.proc.signal(libc::SIGINT)?;
        let st = self.proc.wait_exit(Duration::from_secs(5))?;
        // tcpdump exits 0 on SIGINT after writing its statistics.
        ensure!(
            st.success() || st.code().is_none(),
            "tcpdump failed ({st}): {}",
            self.proc.log()
        );
        Ok(self.path.clone())
    }
}

/// Reads the frames of a classic pcap file (any byte order, micro- or nanosecond stamps).
/// A truncated trailing record (capture still being written) is ignored.
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    Ok(read_pcap_records(path)?
        .into_iter()
        .map(|r| r.frame)
        .collect())
}

/// One captured frame with its kernel capture time.
#[derive(Clone, Debug)]
pub struct Record {
    pub time: SystemTime,
    pub frame: Vec<u8>,
}

/// As [`read_pcap`], with capture times.
pub fn read_pcap_records(path: &Path) -> Result<Vec<Record>> {
    let data = std::fs::read(path)?;
    anyhow::ensure!(data.len() >= 24, "pcap file shorter than its header");
    let magic = [data[0], data[1], data[2], data[3]];
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => anyhow::bail!("not a pcap file (magic {magic:02x?})"),
    };
    let u32_at = |o: usize| {
        let b = [data[o], data[o + 1], data[o + 2], data[o + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20);
    anyhow::ensure!(linktype == 1, "pcap link type {linktype} is not Ethernet");
    let mut records = Vec::new();
    let mut off = 24;
    // Each record takes at least its 16-byte header, so this bounds the loop.
    for _ in 0..data.len() / 16 + 1 {
        if off + 16 > data.len() {
            break;
        }
        let secs = u64::from(u32_at(off));
        let frac = u64::from(u32_at(off + 4));
        let incl = u32_at(off + 8) as usize;
        let start = off + 16;
        if start + incl > data.len() {
            break;
        }
        let since_epoch = Duration::from_secs(secs)
            + if nanos {
                Duration::from_nanos(frac)
            } else {
                Duration::from_micros(frac)
            };
        records.push(Record {
            time: UNIX_EPOCH + since_epoch,
            frame: data[start..start + incl].to_vec(),
        });
        off = start + incl;
    }
    Ok(records)
}

/// The IPv4 packet inside an Ethernet frame, if it carries one.
pub fn ipv4_payload(frame: &[u8]) -> Option<&[u8]> {
    (frame.len() > 14 && frame[12] == 0x08 && frame[13] == 0x00).then(|| &frame[14..])
}
