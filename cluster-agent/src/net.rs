//! The sockets the agent talks CARP and ARP on.
//!
//! Adverts leave on a raw IPv4 socket with a header we build ourselves (TOS, DF and TTL exactly
//! as UCARP), to the group or to each unicast peer, or as Ethernet broadcast frames on an
//! AF_PACKET socket with `--nomcast`.
//! Gratuitous ARP always leaves on AF_PACKET, from the NIC's own MAC.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use cluster_common::carp::IPPROTO_CARP;

/// Receives every protocol-112 packet arriving on one interface, IPv4 header included: those
/// to a joined group and those to this node's own address alike.
pub struct AdvertReceiver {
    fd: AsyncFd<Socket>,
}

impl AdvertReceiver {
    pub fn open(interface: &str, ifindex: u32, group: Option<Ipv4Addr>) -> io::Result<Self> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_CARP))),
        )?;
        s.bind_device(Some(interface.as_bytes()))?;
        if let Some(group) = group {
            s.join_multicast_v4_n(&group, &socket2::InterfaceIndexOrAddress::Index(ifindex))?;
        }
        s.set_nonblocking(true)?;
        // SAFETY: the AsyncFd takes ownership of the socket, so the descriptor stays open for as
        // long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(AdvertReceiver { fd })
    }

    /// Waits for the next packet and copies it into `buf`, returning its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            // SAFETY: MaybeUninit<u8> has the layout of u8; recv only writes initialised bytes
            // into the prefix it reports.
            let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
            match guard.try_io(|s| s.get_ref().recv(uninit)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

impl AdvertReceiver {
    /// The next packet if one is already waiting, without blocking.
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        // SAFETY: as in `recv`.
        let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        match self.fd.get_ref().recv(uninit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }
}

/// Sends adverts: one prebuilt IPv4 packet per call, to the destination in its header.
pub enum AdvertSender {
    /// To the multicast group or a unicast peer, routed by the kernel.
    Raw(Socket),
    Broadcast(PacketSocket),
}

impl AdvertSender {
    pub fn raw(interface: &str) -> io::Result<Self> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_CARP))),
        )?;
        s.set_header_included_v4(true)?;
        s.bind_device(Some(interface.as_bytes()))?;
        s.set_multicast_loop_v4(false)?;
        s.set_nonblocking(true)?;
        Ok(AdvertSender::Raw(s))
    }

    pub fn send(&self, packet: &[u8; crate::carp::wire::PACKET_LEN], vhid: u8) -> io::Result<()> {
        match self {
            AdvertSender::Raw(socket) => {
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                let to = SockAddr::from(SocketAddrV4::new(dst, 0));
                socket.send_to(packet, &to).map(drop)
            }
            AdvertSender::Broadcast(p) => {
                let frame = crate::carp::wire::ether_frame(
                    [0xff; 6],
                    crate::carp::wire::advert_ether_src(vhid),
                    packet,
                );
                p.send(&frame, [0xff; 6])
            }
        }
    }
}

/// A raw IPv4 socket for packets sent exactly as they were received (header included):
/// connection requests held during a switchover, handed to the next master. The kernel
/// routes each to its destination like any packet of this node, resolving the VIP with ARP,
/// so it reaches whoever answers for the address now.
pub struct ForwardSocket(Socket);

impl ForwardSocket {
    pub fn open(interface: &str) -> io::Result<Self> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        s.set_header_included_v4(true)?;
        s.bind_device(Some(interface.as_bytes()))?;
        s.set_nonblocking(true)?;
        Ok(ForwardSocket(s))
    }

    pub fn send(&self, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
        let to = SockAddr::from(SocketAddrV4::new(to, 0));
        self.0.send_to(packet, &to).map(drop)
    }
}

/// An AF_PACKET socket bound to one interface, for frames we build whole.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PacketSocket { fd, ifindex })
    }

    pub fn send(&self, frame: &[u8], dst: [u8; 6]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst);
        // SAFETY: frame and addr are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The interface's hardware address, which UCARP also uses for the VIP.
pub fn interface_mac(interface: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad MAC address"))?;
    }
    Ok(mac)
}

/// Whether the interface is administratively up and has carrier.
pub fn link_is_up(interface: &str) -> bool {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{interface}/{f}"));
    let carrier = read("carrier").is_ok_and(|c| c.trim() == "1");
    let oper = read("operstate").unwrap_or_default();
    carrier && matches!(oper.trim(), "up" | "unknown")
}

pub fn ifindex(interface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: name is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Whether the interface is backed by a device (a NIC), as opposed to a virtual one such as veth.
pub fn is_physical(interface: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{interface}/device")).exists()
}
