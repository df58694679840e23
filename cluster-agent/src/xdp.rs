//! Loading, attaching and steering the XDP program.
//!
//! The program is optional: the agent works without it through raw sockets, so the default mode
//! tries the kernel fast path and quietly degrades instead of refusing to start. The explicit
//! modes exist for operators (and tests) who need to know which path is in use, and fail loudly.
//!
//! One program serves every vhid of the agent: it is loaded once and attached to each
//! interface a vhid lives on. It only counts until [`XdpHandle::configure`] tells it a vhid,
//! its VIP and its HMAC key. From then on it authenticates adverts for that vhid, refuses
//! replayed ones, hands the rest to the agent through [`XdpEvents`] (and drops them all, so the
//! raw socket stays silent), answers or drops ARP for the VIP according to the role set with
//! [`XdpHandle::set_role`], and fences the VIP while BACKUP.

mod events;
pub mod pin;
mod router;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use aya::{
    Ebpf,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode as AyaXdpMode},
};
use cluster_common::{
    sha1::{AdvertMessage, HmacKey, MAX_ADDRS, MAX_ADDRS6},
    xdp::{
        CONFIG_MAP, COUNTER_NAMES, COUNTERS_LEN, COUNTERS_MAP, Config, EVENTS_MAP,
        FLAG_ARP_VIA_STACK, FLAG_DRAIN, FLAG_ENABLED, FLAG_FENCE, FLAG_MASTER, PROGRAM, REPLAY_MAP,
        ReplayKey, VIPS_MAP, VIPS6_MAP,
    },
};

use crate::carp::wire::MAX_PASSWORD_LEN;

pub use events::{XdpEvent, XdpEvents};
pub use router::{Pump, Router};

include!(concat!(env!("OUT_DIR"), "/ebpf_obj.rs"));

/// How the XDP program is attached.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
    Default,
)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native if the driver supports it, else generic, else the raw-socket path.
    #[default]
    Auto,
    /// In the driver, before any socket buffer exists: the cheapest place to look at a frame.
    Native,
    /// In the network stack: works on every interface, at the cost of an allocated skb.
    Generic,
    /// No XDP at all; adverts are received on a raw socket.
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("this build has no XDP program embedded (build the agent with `cargo xtask build`)")]
    NotEmbedded,
    #[error("loading the XDP object into the kernel")]
    Load(#[source] aya::EbpfError),
    #[error("the XDP object has no program named {PROGRAM}")]
    MissingProgram,
    #[error("the XDP object has no map named {0}")]
    MissingMap(&'static str),
    #[error("loading XDP program {PROGRAM}")]
    Program(#[source] ProgramError),
    #[error("attaching XDP in {mode} mode to {interface}")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("reading XDP counters")]
    Counters(#[source] aya::maps::MapError),
    #[error("vhid 0 is not a CARP vhid (1-255)")]
    InvalidVhid,
    #[error("vhid {0} is not configured in the XDP program")]
    NotConfigured(u8),
    #[error("VIP {vip} is configured for vhid {other} already")]
    VipTaken { vip: IpAddr, other: u8 },
    #[error("the password is longer than {MAX_PASSWORD_LEN} bytes")]
    PasswordTooLong,
    #[error(
        "a vhid needs 1 to {MAX_ADDRS} distinct IPv4 addresses or 1 to {MAX_ADDRS6} IPv6 ones, not {0:?}"
    )]
    BadAddrs(Vec<IpAddr>),
    #[error("writing the XDP configuration")]
    Config(#[source] aya::maps::MapError),
    #[error("adding a sent counter to the XDP replay guard")]
    Replay(#[source] aya::maps::MapError),
    #[error("the XDP event reader was already taken")]
    EventsTaken,
    #[error("opening the XDP event ring buffer")]
    Events(#[source] aya::maps::MapError),
    #[error("the XDP event reader needs a tokio runtime")]
    NoRuntime,
    #[error("registering the XDP event ring buffer with tokio")]
    Register(#[source] std::io::Error),
    #[error("waiting for XDP events")]
    Poll(#[source] std::io::Error),
    #[error("malformed XDP event record (kind {kind:?}, {len} bytes)")]
    BadRecord { kind: Option<u32>, len: usize },
    #[error("running the XDP program on a test frame")]
    TestRun(#[source] ProgramError),
}

/// A loaded and attached XDP program.
///
/// The attachment is a BPF link owned by the process: dropping the handle, or the process dying,
/// removes the program from the interface, so a crashed agent never leaves stale kernel logic
/// behind. (Kernels older than 5.9 lack XDP links; aya then attaches through netlink, which only
/// an orderly drop undoes.)
pub struct XdpHandle {
    ebpf: Ebpf,
    /// The mode of the first attachment.
    mode: &'static str,
    /// The mode of each interface attached after the first (`auto` may mix them).
    more: Vec<(String, &'static str)>,
    /// What the kernel's config map holds for each configured vhid, so a role change rewrites
    /// it without reading it back.
    configs: BTreeMap<u8, Config>,
}

/// What the program needs to know about one vhid.
#[derive(Clone, Copy, Debug)]
pub struct VhidSetup<'a> {
    pub vhid: u8,
    /// The interface the vhid lives on; frames from other interfaces pass untouched.
    pub ifindex: u32,
    pub password: &'a [u8],
    /// Every address of the vhid: adverts authenticate them all, and the program answers ARP
    /// (or neighbour solicitations) and fences for each.
    pub vips: &'a [IpAddr],
    /// Where adverts to us are sent (see `Config::group`).
    pub group: Ipv4Addr,
    pub mac: [u8; 6],
    pub fence: bool,
}

/// The addresses a configuration's message authenticates (none for an unused entry): the one
/// record of which addresses the program maps to the vhid.
fn addrs(c: &Config) -> Vec<IpAddr> {
    let m = &c.message;
    let v4 = (0..usize::from(m.v4)).filter_map(|i| m.addr(i).map(IpAddr::from));
    let v6 = (0..usize::from(m.v6)).filter_map(|i| m.addr6(i).map(IpAddr::from));
    v4.chain(v6).collect()
}

/// The handle shared by the agent's vhids, each steering its own entry through a [`Port`].
pub type SharedXdp = Arc<Mutex<XdpHandle>>;

/// One vhid's part of the shared program.
#[derive(Clone)]
pub struct Port {
    xdp: SharedXdp,
    vhid: u8,
    mode: &'static str,
}

impl Port {
    pub fn new(xdp: SharedXdp, vhid: u8, interface: &str) -> Self {
        let mode = lock(&xdp).mode_on(interface);
        Self { xdp, vhid, mode }
    }

    pub fn mode(&self) -> &'static str {
        self.mode
    }

    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, XdpError> {
        lock(&self.xdp).counters()
    }

    pub fn remember_sent(&self, counter: u64) -> Result<(), XdpError> {
        lock(&self.xdp).remember_sent(self.vhid, counter)
    }

    pub fn set_role(&self, master: bool) -> Result<(), XdpError> {
        lock(&self.xdp).set_role(self.vhid, master)
    }

    pub fn set_drain(&self, on: bool) -> Result<(), XdpError> {
        lock(&self.xdp).set_drain(self.vhid, on)
    }
}

/// The handle is only ever held for a map write, which cannot leave it half-changed: a
/// poisoned lock is as good as any.
pub fn lock(xdp: &SharedXdp) -> std::sync::MutexGuard<'_, XdpHandle> {
    xdp.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for XdpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpHandle")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Attaches the embedded XDP program to `interface`.
///
/// Ok(None) when mode is Off, or Auto and neither native nor generic attach worked / no object
/// is embedded; the caller then receives adverts on a raw socket.
pub fn attach(interface: &str, mode: XdpMode) -> Result<Option<XdpHandle>, XdpError> {
    attach_all(&[interface], mode)
}

/// Attaches one loaded program to every interface in `interfaces`. With `auto`, an interface
/// where neither mode attaches makes every vhid use the raw sockets (the handle is dropped,
/// which detaches the rest): one data plane for all of them, never a mix.
pub fn attach_all(interfaces: &[&str], mode: XdpMode) -> Result<Option<XdpHandle>, XdpError> {
    let Some((&first, others)) = interfaces.split_first() else {
        return Ok(None);
    };
    let Some(mut handle) = attach_first(first, mode)? else {
        return Ok(None);
    };
    for &interface in others {
        let mut failures = Vec::new();
        let mut attached = false;
        for &attempt in attach_modes(mode) {
            match attach_loaded(&mut handle.ebpf, interface, attempt) {
                Ok(()) => {
                    tracing::info!(interface, mode = mode_name(attempt), "XDP program attached");
                    handle
                        .more
                        .push((interface.to_string(), mode_name(attempt)));
                    attached = true;
                    break;
                }
                Err(err) if mode == XdpMode::Auto => failures.push(error_chain(&err)),
                Err(err) => return Err(err),
            }
        }
        if !attached {
            tracing::warn!(
                interface,
                errors = failures.join("; "),
                "XDP could attach neither natively nor generically; every vhid uses the raw-socket path"
            );
            return Ok(None);
        }
    }
    Ok(Some(handle))
}

fn attach_first(interface: &str, mode: XdpMode) -> Result<Option<XdpHandle>, XdpError> {
    if mode == XdpMode::Off {
        return Ok(None);
    }
    let attempts = attach_modes(mode);
    let auto = mode == XdpMode::Auto;

    let mut ebpf = match load() {
        Ok(ebpf) => ebpf,
        Err(err) if auto => {
            tracing::warn!(
                interface,
                error = %error_chain(&err),
                "XDP unavailable; using the raw-socket path"
            );
            return Ok(None);
        }
        Err(err) => return Err(err),
    };

    let mut failures = Vec::new();
    for &attempt in attempts {
        match attach_loaded(&mut ebpf, interface, attempt) {
            Ok(()) => {
                let mode = mode_name(attempt);
                tracing::info!(interface, mode, "XDP program attached");
                return Ok(Some(XdpHandle::new(ebpf, mode)));
            }
            Err(err) if auto => failures.push(error_chain(&err)),
            Err(err) => return Err(err),
        }
    }
    tracing::warn!(
        interface,
        errors = failures.join("; "),
        "XDP could attach neither natively nor generically; using the raw-socket path"
    );
    Ok(None)
}

impl XdpHandle {
    fn new(ebpf: Ebpf, mode: &'static str) -> Self {
        Self {
            ebpf,
            mode,
            configs: BTreeMap::new(),
            more: Vec::new(),
        }
    }

    /// The mode the program runs in on `interface` (the first one's, for any it was not
    /// attached to after the first).
    pub fn mode_on(&self, interface: &str) -> &'static str {
        self.more
            .iter()
            .find(|(name, _)| name == interface)
            .map_or(self.mode, |(_, mode)| mode)
    }

    /// "native" or "generic": which attach actually succeeded, for `status` and logs.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Counters summed over CPUs, named after `cluster_common::xdp::COUNTER_NAMES`.
    ///
    /// The map is per-CPU so the program never contends on a cache line; the sum is only
    /// consistent to within the frames in flight while it is read, which is fine for statistics.
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, XdpError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(XdpError::MissingMap(COUNTERS_MAP))?;
        let counters = PerCpuArray::<_, u64>::try_from(map).map_err(XdpError::Counters)?;
        (0..COUNTERS_LEN)
            .zip(COUNTER_NAMES)
            .map(|(index, name)| {
                let per_cpu = counters.get(&index, 0).map_err(XdpError::Counters)?;
                Ok((name, per_cpu.iter().copied().fold(0u64, u64::wrapping_add)))
            })
            .collect()
    }

    /// Tells the program which adverts are ours, how to authenticate them, and which address it
    /// answers and fences for.
    ///
    /// The program receives the HMAC-SHA1 states derived from `password`, not the password
    /// itself; they are as secret (see [`HmacKey`]). `group` is the destination adverts
    /// to us carry (the multicast group, or this node's own address with unicast peers);
    /// adverts to anything else are left to the stack. `mac` is the interface's own MAC: the sender of ARP replies, and how
    /// our own announcements are told apart from a conflicting claim. The role set by
    /// [`Self::set_role`] is kept, and so is the choice made with [`Self::set_arp_via_stack`].
    pub fn configure(&mut self, setup: &VhidSetup<'_>) -> Result<(), XdpError> {
        let vhid = setup.vhid;
        if vhid == 0 {
            return Err(XdpError::InvalidVhid);
        }
        if setup.password.len() > MAX_PASSWORD_LEN {
            return Err(XdpError::PasswordTooLong);
        }
        let mut v4: Vec<[u8; 4]> = Vec::new();
        let mut v6: Vec<[u8; 16]> = Vec::new();
        for vip in setup.vips {
            match vip {
                IpAddr::V4(a) => v4.push(a.octets()),
                IpAddr::V6(a) => v6.push(a.octets()),
            }
        }
        let message = AdvertMessage::new(vhid, &v4, &v6)
            .ok_or_else(|| XdpError::BadAddrs(setup.vips.to_vec()))?;
        for (&other, c) in self.configs.iter().filter(|(other, _)| **other != vhid) {
            if let Some(&vip) = setup.vips.iter().find(|v| addrs(c).contains(v)) {
                return Err(XdpError::VipTaken { vip, other });
            }
        }
        let key = HmacKey::new(setup.password).ok_or(XdpError::PasswordTooLong)?;
        let old = self.configs.get(&vhid).copied().unwrap_or_default();
        let mut flags = FLAG_ENABLED | (old.flags & (FLAG_MASTER | FLAG_ARP_VIA_STACK));
        if setup.fence {
            flags |= FLAG_FENCE;
        }
        let before = addrs(&old);
        for gone in before.iter().filter(|a| !setup.vips.contains(a)) {
            self.forget_vip(*gone)?;
        }
        // The addresses first: a full map refuses the vhid before any entry of it is enabled,
        // and the ones this call added go again.
        for (i, &vip) in setup.vips.iter().enumerate() {
            if let Err(error) = self.map_vip(vip, vhid) {
                for added in setup.vips[..i].iter().filter(|a| !before.contains(a)) {
                    let _ = self.forget_vip(*added);
                }
                return Err(error);
            }
        }
        self.write_config(Config {
            group: setup.group.octets(),
            mac: setup.mac,
            vhid,
            flags,
            ifindex: setup.ifindex,
            key,
            message,
        })
    }

    /// Forgets `vhid`: its adverts and its addresses' frames pass untouched again.
    pub fn unconfigure(&mut self, vhid: u8) -> Result<(), XdpError> {
        let Some(old) = self.configs.get(&vhid).copied() else {
            return Ok(());
        };
        for vip in addrs(&old) {
            self.forget_vip(vip)?;
        }
        self.set_entry(vhid, Config::default())?;
        self.configs.remove(&vhid);
        Ok(())
    }

    /// Points `vip` at `vhid` in the address map of its family.
    fn map_vip(&mut self, vip: IpAddr, vhid: u8) -> Result<(), XdpError> {
        let vhid = u32::from(vhid);
        match vip {
            IpAddr::V4(a) => self.vips()?.insert(u32::from_ne_bytes(a.octets()), vhid, 0),
            IpAddr::V6(a) => self.vips6()?.insert(a.octets(), vhid, 0),
        }
        .map_err(XdpError::Config)
    }

    /// Removes `vip` from the address map of its family; absent is success.
    fn forget_vip(&mut self, vip: IpAddr) -> Result<(), XdpError> {
        let removed = match vip {
            IpAddr::V4(a) => self.vips()?.remove(&u32::from_ne_bytes(a.octets())),
            IpAddr::V6(a) => self.vips6()?.remove(&a.octets()),
        };
        match removed {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(error) => Err(XdpError::Config(error)),
        }
    }

    fn vips(&mut self) -> Result<HashMap<&mut aya::maps::MapData, u32, u32>, XdpError> {
        let map = self
            .ebpf
            .map_mut(VIPS_MAP)
            .ok_or(XdpError::MissingMap(VIPS_MAP))?;
        HashMap::try_from(map).map_err(XdpError::Config)
    }

    fn vips6(&mut self) -> Result<HashMap<&mut aya::maps::MapData, [u8; 16], u32>, XdpError> {
        let map = self
            .ebpf
            .map_mut(VIPS6_MAP)
            .ok_or(XdpError::MissingMap(VIPS6_MAP))?;
        HashMap::try_from(map).map_err(XdpError::Config)
    }

    /// Adds the counter of an advert this node sends to the program's replay guard.
    ///
    /// The program never sees our own adverts, yet a copy of one, sent back to us from another
    /// source and with a better skew, would authenticate and could push this node out of
    /// MASTER: remembering what we sent refuses it like any other replay.
    pub fn remember_sent(&mut self, vhid: u8, counter: u64) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(REPLAY_MAP)
            .ok_or(XdpError::MissingMap(REPLAY_MAP))?;
        let mut replay = HashMap::<_, ReplayKey, u8>::try_from(map).map_err(XdpError::Replay)?;
        let key = ReplayKey {
            counter,
            vhid: u64::from(vhid),
        };
        replay.insert(key, 0, 0).map_err(XdpError::Replay)
    }

    /// Switches ARP answering and fencing to the new role.
    ///
    /// Call it on every transition: before adding the VIP when becoming MASTER, so ARP is answered
    /// and traffic accepted the moment the address exists, and before removing the VIP when
    /// becoming BACKUP, so the address is fenced while it is still on the interface.
    pub fn set_role(&mut self, vhid: u8, master: bool) -> Result<(), XdpError> {
        // A drain outlasts the mastership it began in (the requests it holds wait for the
        // next master), but a new mastership starts without one.
        let mut config = self.config(vhid)?;
        if master {
            config.flags = (config.flags | FLAG_MASTER) & !FLAG_DRAIN;
        } else {
            config.flags &= !FLAG_MASTER;
        }
        self.write_config(config)
    }

    /// Hold off new TCP connections to the VIP and report them (see `FLAG_DRAIN`); cleared
    /// by this or by the next mastership ([`XdpHandle::set_role`]).
    pub fn set_drain(&mut self, vhid: u8, on: bool) -> Result<(), XdpError> {
        self.set_flag(vhid, FLAG_DRAIN, on)
    }

    /// While MASTER, let the kernel answer ARP for the VIP instead of XDP (off by default).
    ///
    /// XDP_TX is silently lost on some interfaces: a veth in native mode delivers it only when
    /// its peer runs an XDP program or has GRO enabled. Requests for the VIP are still dropped
    /// while BACKUP either way.
    pub fn set_arp_via_stack(&mut self, vhid: u8, via_stack: bool) -> Result<(), XdpError> {
        self.set_flag(vhid, FLAG_ARP_VIA_STACK, via_stack)
    }

    fn config(&self, vhid: u8) -> Result<Config, XdpError> {
        self.configs
            .get(&vhid)
            .copied()
            .ok_or(XdpError::NotConfigured(vhid))
    }

    fn set_flag(&mut self, vhid: u8, flag: u8, on: bool) -> Result<(), XdpError> {
        let mut config = self.config(vhid)?;
        config.flags = if on {
            config.flags | flag
        } else {
            config.flags & !flag
        };
        self.write_config(config)
    }

    /// Writes `vhid`'s entry of the config map.
    fn set_entry(&mut self, vhid: u8, config: Config) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(CONFIG_MAP)
            .ok_or(XdpError::MissingMap(CONFIG_MAP))?;
        Array::<_, Config>::try_from(map)
            .map_err(XdpError::Config)?
            .set(u32::from(vhid), config, 0)
            .map_err(XdpError::Config)
    }

    fn write_config(&mut self, config: Config) -> Result<(), XdpError> {
        self.set_entry(config.vhid, config)?;
        // Only what the kernel accepted becomes the base of the next change.
        self.configs.insert(config.vhid, config);
        Ok(())
    }

    /// Takes the reader of the program's ring buffer; there is one per handle, as a ring buffer
    /// has a single consumer position. Must be called within a tokio runtime.
    pub fn take_events(&mut self) -> Result<XdpEvents, XdpError> {
        // Checked before the map is taken out of the object, so a failure leaves it available.
        tokio::runtime::Handle::try_current().map_err(|_| XdpError::NoRuntime)?;
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .ok_or(XdpError::EventsTaken)?;
        XdpEvents::new(RingBuf::try_from(map).map_err(XdpError::Events)?)
    }

    /// Average nanoseconds the program spends on `frame`, over `repeat` runs in the kernel
    /// (BPF_PROG_TEST_RUN; root only), for benchmarks.
    ///
    /// It runs the real program against the real maps: counters advance, and an authentic advert
    /// enters the replay guard on the first run (so later runs measure the replay path) and is
    /// recorded (until the ring buffer is full).
    pub fn test_run_ns_per_packet(&self, frame: &[u8], repeat: u32) -> Result<u64, XdpError> {
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.repeat = repeat.max(1);
        let result = program_ref(&self.ebpf)?
            .test_run(options)
            .map_err(XdpError::TestRun)?;
        Ok(u64::try_from(result.duration.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The kernel attach modes to try, in order (none for `Off`).
fn attach_modes(mode: XdpMode) -> &'static [AyaXdpMode] {
    match mode {
        XdpMode::Off => &[],
        XdpMode::Auto => &[AyaXdpMode::Driver, AyaXdpMode::Skb],
        XdpMode::Native => &[AyaXdpMode::Driver],
        XdpMode::Generic => &[AyaXdpMode::Skb],
    }
}

fn load() -> Result<Ebpf, XdpError> {
    let object = EBPF_OBJ.ok_or(XdpError::NotEmbedded)?;
    let mut ebpf = Ebpf::load(object).map_err(XdpError::Load)?;
    program(&mut ebpf)?.load().map_err(XdpError::Program)?;
    Ok(ebpf)
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    ebpf.program_mut(PROGRAM)
        .ok_or(XdpError::MissingProgram)?
        .try_into()
        .map_err(XdpError::Program)
}

fn program_ref(ebpf: &Ebpf) -> Result<&Xdp, XdpError> {
    ebpf.program(PROGRAM)
        .ok_or(XdpError::MissingProgram)?
        .try_into()
        .map_err(XdpError::Program)
}

fn attach_loaded(ebpf: &mut Ebpf, interface: &str, mode: AyaXdpMode) -> Result<(), XdpError> {
    program(ebpf)?
        .attach(interface, mode)
        .map(drop)
        .map_err(|source| XdpError::Attach {
            interface: interface.to_owned(),
            mode: mode_name(mode),
            source,
        })
}

fn mode_name(mode: AyaXdpMode) -> &'static str {
    match mode {
        AyaXdpMode::Driver => "native",
        AyaXdpMode::Skb => "generic",
        AyaXdpMode::Hardware => "offload",
        AyaXdpMode::Default => "default",
    }
}

/// The warnings are the only trace of why the fast path was skipped, so they carry every cause.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
