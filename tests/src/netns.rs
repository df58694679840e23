//! Moving a thread into a rig's network namespace, for code that must open its sockets there
//! (a relay in the client namespace, the agent's database client in a node), and sockets made
//! in one namespace and used from another thread.

use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// Moves the calling thread (only it) into network namespace `ns`; threads it starts later
/// inherit the namespace.
pub fn enter(ns: &str) -> Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening namespace {ns}"))?;
    // SAFETY: setns(2) on a namespace file we just opened; it moves only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns into {ns}"));
    }
    Ok(())
}

/// Gives the calling thread (and what it starts) a mount namespace of its own in which `/sys`
/// describes its network namespace, as `ip netns exec` does for one command; for commands that
/// must share mounts (pins in a BPF file system mounted there), and leave the machine's alone.
/// Call it after [`enter`].
pub fn private_mounts() -> Result<()> {
    // SAFETY: unshare(2) affects only the calling thread (CLONE_FS makes that possible for a
    // mount namespace in a multi-threaded process).
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
    }
    let root = std::ffi::CString::new("/").expect("no NUL");
    let sys = std::ffi::CString::new("/sys").expect("no NUL");
    let sysfs = std::ffi::CString::new("sysfs").expect("no NUL");
    // SAFETY: mount(2) and umount2(2) with NUL-terminated strings we own.
    unsafe {
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("making mounts private");
        }
        libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
        if libc::mount(
            sysfs.as_ptr(),
            sys.as_ptr(),
            sysfs.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("mounting sysfs");
        }
    }
    Ok(())
}

/// Sets a receive timeout on `fd`, so that a reader never waits for good.
pub fn recv_timeout(fd: &impl AsRawFd, timeout: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt on a socket the caller owns, with a timeval of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
    }
    Ok(())
}

/// A link of one namespace that can be taken down with a single netlink message: the socket
/// belongs to the namespace it was made in, whichever thread later uses it.
pub struct LinkSwitch {
    socket: netlink_sys::Socket,
    index: u32,
    name: String,
}

impl LinkSwitch {
    /// The link `name` of namespace `ns`; made on a short-lived thread that enters `ns`.
    pub fn new(ns: &str, name: &str) -> Result<Self> {
        let (ns, name) = (ns.to_string(), name.to_string());
        std::thread::spawn(move || -> Result<Self> {
            enter(&ns)?;
            let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
                .context("netlink socket")?;
            socket.bind_auto().context("binding the netlink socket")?;
            socket
                .connect(&netlink_sys::SocketAddr::new(0, 0))
                .context("connecting the netlink socket")?;
            recv_timeout(&socket, Duration::from_secs(2))?;
            let c = std::ffi::CString::new(name.clone()).context("link name")?;
            // SAFETY: if_nametoindex(3) with a NUL-terminated name we own; it looks the name
            // up in this thread's namespace.
            let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
            ensure!(index != 0, "no link {name} in {ns}");
            Ok(LinkSwitch {
                socket,
                index,
                name,
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread opening a netlink socket panicked"))?
    }

    /// Takes the link down (administratively, as `ip link set down`) and waits for the
    /// kernel's answer.
    pub fn down(&self) -> Result<()> {
        use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
        use netlink_packet_route::RouteNetlinkMessage;
        use netlink_packet_route::link::{LinkFlags, LinkMessage};
        let mut link = LinkMessage::default();
        link.header.index = self.index;
        link.header.change_mask = LinkFlags::Up;
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::SetLink(link));
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .with_context(|| format!("taking {} down", self.name))?;
        let mut reply = vec![0u8; 4096];
        let n = self
            .socket
            .recv(&mut &mut reply[..], 0)
            .with_context(|| format!("the kernel's answer to taking {} down", self.name))?;
        let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
            .with_context(|| format!("the kernel's answer to taking {} down", self.name))?;
        match answer.payload {
            NetlinkPayload::Error(e) if e.code.is_none() => Ok(()),
            NetlinkPayload::Error(e) => bail!("taking {} down: {e}", self.name),
            other => bail!("taking {} down: unexpected answer {other:?}", self.name),
        }
    }
}
