//! Loading and attaching the XDP program.
//!
//! The program is optional: the agent works without it through raw sockets, so the default mode
//! tries the kernel fast path and quietly degrades instead of refusing to start. The explicit
//! modes exist for operators (and tests) who need to know which path is in use, and fail loudly.

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{ProgramError, Xdp, XdpMode as AyaXdpMode},
};
use cluster_common::xdp::{COUNTER_NAMES, COUNTERS_LEN, COUNTERS_MAP, PROGRAM};

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
    #[error("the XDP object has no map named {COUNTERS_MAP}")]
    MissingMap,
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
}

/// A loaded and attached XDP program.
///
/// The attachment is a BPF link owned by the process: dropping the handle, or the process dying,
/// removes the program from the interface, so a crashed agent never leaves stale kernel logic
/// behind. (Kernels older than 5.9 lack XDP links; aya then attaches through netlink, which only
/// an orderly drop undoes.)
pub struct XdpHandle {
    ebpf: Ebpf,
    mode: &'static str,
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
    let attempts: &[AyaXdpMode] = match mode {
        XdpMode::Off => return Ok(None),
        XdpMode::Auto => &[AyaXdpMode::Driver, AyaXdpMode::Skb],
        XdpMode::Native => &[AyaXdpMode::Driver],
        XdpMode::Generic => &[AyaXdpMode::Skb],
    };
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
                return Ok(Some(XdpHandle { ebpf, mode }));
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
    /// "native" or "generic": which attach actually succeeded, for `status` and logs.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Counters summed over CPUs, named after `cluster_common::xdp::COUNTER_NAMES`.
    ///
    /// The map is per-CPU so the program never contends on a cache line; the sum is only
    /// consistent to within the frames in flight while it is read, which is fine for statistics.
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, XdpError> {
        let map = self.ebpf.map(COUNTERS_MAP).ok_or(XdpError::MissingMap)?;
        let counters = PerCpuArray::<_, u64>::try_from(map).map_err(XdpError::Counters)?;
        (0..COUNTERS_LEN)
            .zip(COUNTER_NAMES)
            .map(|(index, name)| {
                let per_cpu = counters.get(&index, 0).map_err(XdpError::Counters)?;
                Ok((name, per_cpu.iter().copied().fold(0u64, u64::wrapping_add)))
            })
            .collect()
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
mod tests {
    use super::*;
    use aya::programs::{TestRun, TestRunOptions};
    use cluster_common::{carp, xdp};

    const XDP_PASS: u32 = 2;

    #[test]
    fn off_never_touches_the_kernel() {
        assert!(attach("does-not-exist0", XdpMode::Off).unwrap().is_none());
    }

    #[test]
    fn explicit_mode_without_a_usable_program_is_an_error() {
        // Either nothing is embedded or the interface does not exist: both must be reported.
        assert!(attach("does-not-exist0", XdpMode::Generic).is_err());
    }

    #[test]
    fn auto_falls_back_instead_of_failing() {
        assert!(attach("does-not-exist0", XdpMode::Auto).unwrap().is_none());
    }

    fn frame(ether_type: u16, proto: u8, l3_len: usize) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + l3_len];
        frame[12..14].copy_from_slice(&ether_type.to_be_bytes());
        if l3_len >= carp::IPV4_HEADER_LEN {
            frame[14] = 0x45;
            frame[14 + 8] = carp::TTL;
            frame[14 + 9] = proto;
        }
        frame
    }

    /// Runs the real program on crafted frames through BPF_PROG_TEST_RUN. It needs root and an
    /// embedded object (`cargo xtask test` provides both) and says so when it cannot run.
    #[test]
    fn program_classifies_frames() {
        if EBPF_OBJ.is_none() || unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root and an embedded XDP object (`cargo xtask test`)");
            return;
        }
        let mut handle = XdpHandle {
            ebpf: load().unwrap(),
            mode: "test",
        };
        let full = carp::IPV4_HEADER_LEN + carp::HEADER_LEN;
        let cases = [
            (frame(0x0800, carp::IPPROTO_CARP, full), xdp::CTR_CARP_SEEN),
            (
                frame(0x0800, carp::IPPROTO_CARP, full + 8),
                xdp::CTR_CARP_SEEN,
            ),
            (
                frame(0x0800, carp::IPPROTO_CARP, full - 1),
                xdp::CTR_CARP_MALFORMED,
            ),
            (frame(0x0800, 17, full), xdp::CTR_PASSED_OTHER),
            (
                frame(0x0806, carp::IPPROTO_CARP, full),
                xdp::CTR_PASSED_OTHER,
            ),
            (frame(0x0800, carp::IPPROTO_CARP, 10), xdp::CTR_PASSED_OTHER),
        ];
        for (data, counter) in &cases {
            let before = handle.counters().unwrap()[*counter as usize].1;
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(data);
            let result = program(&mut handle.ebpf).unwrap().test_run(opts).unwrap();
            assert_eq!(result.return_value, XDP_PASS);
            let after = handle.counters().unwrap()[*counter as usize].1;
            assert_eq!(after, before + 1, "frame of {} bytes", data.len());
        }
    }
}
