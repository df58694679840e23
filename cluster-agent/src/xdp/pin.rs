//! The XDP program on its own, pinned in bpffs: `cluster-agent xdp load|unload|stats`.
//!
//! The agent's own attachment dies with the agent (see [`super::XdpHandle`]). To try the data
//! plane on a real NIC before running the agent (native mode, where `XDP_TX` works), or to
//! look at it with `bpftool`, an operator wants it to stay: here the program, its link and its
//! maps are pinned under `/sys/fs/bpf/cluster-agent/IF/`, and stay attached until `unload`
//! removes the pins.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use aya::maps::{Map, MapData, PerCpuArray};
use aya::programs::links::FdLink;

use cluster_common::carp::DEFAULT_GROUP;
use cluster_common::xdp::{COUNTER_NAMES, COUNTERS_LEN, COUNTERS_MAP};

use super::{VhidSetup, XdpError, XdpHandle, XdpMode, attach_modes, mode_name, program};

/// Where the pins of interface `IF` live: `PIN_ROOT/IF/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/cluster-agent";
/// The BPF file system's usual mount point, and its `statfs` magic.
const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The pinned program and link, next to the maps (pinned under their own names).
const PROGRAM_PIN: &str = "program";
const LINK_PIN: &str = "link";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("{0} is not an interface name")]
    BadInterface(String),
    #[error("the program is already pinned for {0}; `cluster-agent xdp unload -i {0}` first")]
    Loaded(String),
    #[error("nothing is pinned for {0} (under {PIN_ROOT}/{0})")]
    NotLoaded(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {what} at {path}")]
    Pin {
        what: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("the kernel attached XDP to {0} without a BPF link, which cannot be pinned")]
    NoLink(String),
    #[error("reading {0}")]
    Map(PathBuf, #[source] aya::maps::MapError),
    #[error("mounting the BPF file system on {BPFFS}")]
    Mount(#[source] std::io::Error),
}

/// Mounts bpffs on /sys/fs/bpf unless it is there already (as bpftool does before pinning;
/// systemd usually has).
fn ensure_bpffs() -> Result<(), PinError> {
    let path = std::ffi::CString::new(BPFFS).expect("no NUL in a constant");
    // SAFETY: statfs fills the struct we own from a NUL-terminated path we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fs = std::ffi::CString::new("bpf").expect("no NUL in a constant");
    let opts = std::ffi::CString::new("mode=0700").expect("no NUL in a constant");
    // SAFETY: mount(2) with NUL-terminated strings we own.
    let rc = unsafe {
        libc::mount(
            fs.as_ptr(),
            path.as_ptr(),
            fs.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(PinError::Mount(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// What an operator sets to see the program authenticate adverts and answer ARP.
#[derive(Clone, Debug)]
pub struct PinConfig {
    pub vhid: u8,
    pub vip: Ipv4Addr,
    pub password: Vec<u8>,
    pub mac: [u8; 6],
}

/// What `load` pinned, with the kernel's ids for `bpftool prog show id N` / `map show id N`.
#[derive(Debug)]
pub struct Loaded {
    pub dir: PathBuf,
    pub mode: &'static str,
    pub program_id: u32,
    pub maps: Vec<(String, u32)>,
}

fn dir(interface: &str) -> Result<PathBuf, PinError> {
    // The name becomes a path: nothing that could climb out of PIN_ROOT.
    let ok = !interface.is_empty()
        && interface.len() < 16
        && interface != "."
        && interface != ".."
        && !interface.contains('/');
    if !ok {
        return Err(PinError::BadInterface(interface.to_string()));
    }
    Ok(PathBuf::from(PIN_ROOT).join(interface))
}

/// Loads the embedded program, attaches it to `interface` and pins it there.
pub fn load(interface: &str, mode: XdpMode, config: Option<PinConfig>) -> Result<Loaded, PinError> {
    let dir = dir(interface)?;
    ensure_bpffs()?;
    if dir.exists() {
        return Err(PinError::Loaded(interface.to_string()));
    }
    let mut ebpf = super::load()?;
    let mut last = None;
    let mut attached = None;
    for &attempt in attach_modes(mode) {
        match program(&mut ebpf)?.attach(interface, attempt) {
            Ok(id) => {
                attached = Some((id, mode_name(attempt)));
                break;
            }
            Err(source) => {
                last = Some(XdpError::Attach {
                    interface: interface.to_string(),
                    mode: mode_name(attempt),
                    source,
                })
            }
        }
    }
    let Some((link_id, mode)) = attached else {
        return Err(last.unwrap_or(XdpError::NotEmbedded).into());
    };
    let link = program(&mut ebpf)?
        .take_link(link_id)
        .map_err(XdpError::Program)?;
    let link = FdLink::try_from(link).map_err(|_| PinError::NoLink(interface.to_string()))?;
    let mut handle = XdpHandle::new(ebpf, mode);
    if let Some(c) = config {
        // Fencing stays off: a program loaded by hand must not drop the VIP's traffic.
        let ifindex = crate::net::ifindex(interface)
            .ok_or_else(|| PinError::BadInterface(interface.to_string()))?;
        handle.configure(&VhidSetup {
            vhid: c.vhid,
            ifindex,
            password: &c.password,
            vips: &[c.vip.into()],
            group: Ipv4Addr::from(DEFAULT_GROUP),
            mac: c.mac,
            fence: false,
        })?;
    }
    std::fs::create_dir_all(&dir).map_err(|source| PinError::Io {
        what: "creating",
        path: dir.clone(),
        source,
    })?;
    let pinned = pin_all(&mut handle, link, &dir);
    if pinned.is_err() {
        // Half a set of pins is worse than none: the next load would refuse.
        let _ = remove(&dir);
    }
    pinned
}

fn pin_all(
    handle: &mut XdpHandle,
    link: FdLink,
    dir: &std::path::Path,
) -> Result<Loaded, PinError> {
    let pin_err = |what: &str, path: PathBuf| {
        let what = what.to_string();
        move |source: aya::pin::PinError| PinError::Pin { what, path, source }
    };
    let mut maps = Vec::new();
    for (name, map) in handle.ebpf.maps() {
        let path = dir.join(name);
        map.pin(&path).map_err(pin_err(name, path.clone()))?;
        let id = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map(|i| i.id())
            .map_err(|e| PinError::Map(path.clone(), e))?;
        maps.push((name.to_string(), id));
    }
    let program = program(&mut handle.ebpf)?;
    let path = dir.join(PROGRAM_PIN);
    program
        .pin(&path)
        .map_err(pin_err("the program", path.clone()))?;
    let program_id = program.info().map_err(XdpError::Program)?.id();
    let path = dir.join(LINK_PIN);
    // Pinned, the link outlives this process: the program stays attached.
    link.pin(&path).map_err(pin_err("the link", path.clone()))?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        mode: handle.mode,
        program_id,
        maps,
    })
}

/// Removes the pins of `interface`: the link's last reference goes, so the program detaches.
pub fn unload(interface: &str) -> Result<(), PinError> {
    let dir = dir(interface)?;
    if !dir.exists() {
        return Err(PinError::NotLoaded(interface.to_string()));
    }
    remove(&dir)
}

fn remove(dir: &std::path::Path) -> Result<(), PinError> {
    let io = |what: &'static str, path: PathBuf| {
        move |source: std::io::Error| PinError::Io { what, path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(io("reading", dir.to_path_buf()))?;
    // The link first: the program detaches before its maps go.
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort_by_key(|p| p.file_name() != Some(LINK_PIN.as_ref()));
    for p in paths {
        std::fs::remove_file(&p).map_err(io("removing", p.clone()))?;
    }
    std::fs::remove_dir(dir).map_err(io("removing", dir.to_path_buf()))
}

/// The pinned program's counters, summed over CPUs.
pub fn counters(interface: &str) -> Result<Vec<(&'static str, u64)>, PinError> {
    let dir = dir(interface)?;
    if !dir.exists() {
        return Err(PinError::NotLoaded(interface.to_string()));
    }
    let path = dir.join(COUNTERS_MAP);
    let map = MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|e| PinError::Map(path.clone(), e))?;
    let counters =
        PerCpuArray::<_, u64>::try_from(map).map_err(|e| PinError::Map(path.clone(), e))?;
    (0..COUNTERS_LEN)
        .zip(COUNTER_NAMES)
        .map(|(index, name)| {
            let per_cpu = counters
                .get(&index, 0)
                .map_err(|e| PinError::Map(path.clone(), e))?;
            Ok((name, per_cpu.iter().copied().fold(0u64, u64::wrapping_add)))
        })
        .collect()
}
