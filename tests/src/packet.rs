//! `AF_PACKET` sockets on one interface: whole Ethernet frames in (every frame, both
//! directions, as a switch port sees them) or out (crafted frames that reach that segment only).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

pub struct PacketSocket {
    fd: OwnedFd,
    /// Where [`PacketSocket::send_batch`] sends: the interface, no protocol.
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    /// A socket that receives every frame of `interface`, returning from a receive after
    /// `timeout` without one so the caller can look at its deadline.
    pub fn receiver(interface: &str, timeout: Duration) -> Result<PacketSocket> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let s = PacketSocket::open(interface, proto)?;
        let mut addr = s.addr;
        addr.sll_protocol = proto;
        // SAFETY: bind(2) with a correctly sized sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                s.fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
        }
        crate::netns::recv_timeout(&s.fd, timeout)?;
        Ok(s)
    }

    /// A send-only socket on `interface`: protocol 0, so the kernel never queues received
    /// frames on it.
    pub fn sender(interface: &str) -> Result<PacketSocket> {
        PacketSocket::open(interface, 0)
    }

    fn open(interface: &str, proto: u16) -> Result<PacketSocket> {
        let name = std::ffi::CString::new(interface).context("interface name")?;
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        ensure!(ifindex != 0, "no interface {interface} in this namespace");
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(PacketSocket { fd, addr })
    }

    /// One frame into `buf`, or `None` when the receive timeout passed first.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        // SAFETY: recv(2) into a buffer we own, at most its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(None),
            _ => Err(e).context("recv(AF_PACKET)"),
        }
    }

    /// Sends as many of `frames` as the kernel takes in one call; `Ok(0)` when it is busy.
    pub fn send_batch(&self, frames: &[Vec<u8>]) -> Result<usize> {
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut addr = self.addr;
        let addr_ptr = (&raw mut addr).cast::<libc::c_void>();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: msghdr is plain data; all-zero is a valid value.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = addr_ptr;
                hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: every header points at a live iovec, frame and address for the whole call.
        let n = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(err).context("sendmmsg"),
            };
        }
        Ok(n as usize)
    }
}
