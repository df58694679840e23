//! The sockets the agent talks CARP and ARP on.
//!
//! Adverts leave on a raw IPv4 socket with a header we build ourselves (TOS, DF and TTL exactly
//! as UCARP), to the group or to each unicast peer, or as Ethernet broadcast frames on an
//! AF_PACKET socket with `--nomcast`.
//! Gratuitous ARP always leaves on AF_PACKET, from the NIC's own MAC.
//! An IPv6 vhid's adverts leave on a raw IPv6 socket to ff02::12 (the kernel builds the
//! header, hop limit 255, from the link-local address) and arrive on a packet socket, so that
//! they arrive with their IPv6 header; its neighbour advertisements leave on an ICMPv6 socket.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
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
    /// How many packets the kernel has dropped for this socket since it was opened, most of
    /// them because its receive queue was full (`SO_MEMINFO`). Wraps around at `u32::MAX`.
    pub fn drops(&self) -> io::Result<u32> {
        // The counters up to the drop counter, which is the last of them.
        let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `info`, which is that long, and
        // stores the length it wrote in `len`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let at = libc::SK_MEMINFO_DROPS as usize;
        if (len as usize) < (at + 1) * std::mem::size_of::<u32>() {
            return Err(io::Error::other("SO_MEMINFO without a drop counter"));
        }
        Ok(info[at])
    }

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

impl AdvertReceiver {
    /// Every IPv6 packet whose next header is CARP arriving on interface `ifindex`, IPv6
    /// header included. A raw IPv6 socket would hand over the CARP header alone, with the hop
    /// limit and destination in ancillary data; a packet socket gives the packet as it
    /// arrived, and its filter keeps the rest of the interface's IPv6 traffic (and our own
    /// adverts going out) in the kernel.
    pub fn open6(ifindex: u32) -> io::Result<Self> {
        const ETH_P_IPV6: u16 = libc::ETH_P_IPV6 as u16;
        // Protocol 0 receives nothing until the bind below, which comes after the filter:
        // no other interface's packet can slip into the queue in between.
        let s = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(0)))?;
        // Classic BPF: drop what this host sends, accept next header 112, drop the rest.
        let pkttype = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
        let ld_w = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        let ld_b = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
        let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        s.attach_filter(&[
            socket2::SockFilter::new(ld_w, 0, 0, pkttype),
            socket2::SockFilter::new(jeq, 3, 0, u32::from(libc::PACKET_OUTGOING)),
            socket2::SockFilter::new(ld_b, 0, 0, 6),
            socket2::SockFilter::new(jeq, 0, 1, u32::from(IPPROTO_CARP)),
            socket2::SockFilter::new(ret, 0, 0, 0x0004_0000),
            socket2::SockFilter::new(ret, 0, 0, 0),
        ])?;
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_IPV6.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                s.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        s.set_nonblocking(true)?;
        // SAFETY: as in `open`.
        let fd = unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(AdvertReceiver { fd })
    }
}

/// `ICMP6_FILTER` of `<netinet/icmp6.h>` (level `IPPROTO_ICMPV6`).
const ICMP6_FILTER: libc::c_int = 1;

/// An IPv6 vhid's sockets: adverts to ff02::12 and unsolicited neighbour advertisements to
/// ff02::1, both with hop limit 255 (receivers refuse anything that could have been routed)
/// and from the link-local address the kernel picks for link-scope groups.
pub struct Ipv6Sockets {
    adverts: Socket,
    neighbours: Socket,
    ifindex: u32,
}

impl Ipv6Sockets {
    /// Both send from `own`, the link-local address that is also this node's tie-break key:
    /// left to the kernel, the source could be another of the interface's addresses, and
    /// peers would then rank this node by one address while it ranks itself by another.
    /// Also joins ff02::12, so that a NIC filtering multicast lets the peers' adverts in.
    /// Neither socket is read (adverts arrive on [`AdvertReceiver::open6`]), so each keeps
    /// the smallest receive queue and the ICMPv6 one filters every message out.
    pub fn open(interface: &str, ifindex: u32, own: Ipv6Addr) -> io::Result<Self> {
        let link_scope = |protocol: i32| -> io::Result<Socket> {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(protocol)))?;
            s.bind_device(Some(interface.as_bytes()))?;
            // Duplicate address detection may not have cleared `own` yet at boot.
            s.set_freebind_v6(true)?;
            s.bind(&SockAddr::from(SocketAddrV6::new(own, 0, 0, ifindex)))?;
            s.set_multicast_if_v6(ifindex)?;
            s.set_multicast_hops_v6(255)?;
            s.set_multicast_loop_v6(false)?;
            s.set_recv_buffer_size(0)?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        let adverts = link_scope(i32::from(IPPROTO_CARP))?;
        adverts.join_multicast_v6(&crate::carp::wire::GROUP6, ifindex)?;
        let neighbours = link_scope(libc::IPPROTO_ICMPV6)?;
        // ICMP6_FILTER with every type blocked (RFC 3542's ICMP6_FILTER_SETBLOCKALL).
        let block_all = [u32::MAX; 8];
        // SAFETY: the option value is the 32-byte `struct icmp6_filter`, passed with its size.
        let r = unsafe {
            libc::setsockopt(
                neighbours.as_raw_fd(),
                libc::IPPROTO_ICMPV6,
                ICMP6_FILTER,
                block_all.as_ptr().cast(),
                size_of_val(&block_all) as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Ipv6Sockets {
            adverts,
            neighbours,
            ifindex,
        })
    }

    /// Sends a signed CARP header; the checksum in it covers the header alone, as over IPv4,
    /// so the kernel adds nothing.
    pub fn send_advert(&self, carp: &[u8; cluster_common::carp::HEADER_LEN]) -> io::Result<()> {
        self.send(&self.adverts, carp, crate::carp::wire::GROUP6)
    }

    /// Announces `target` at `mac` to every node on the link.
    pub fn send_na(&self, target: Ipv6Addr, mac: [u8; 6]) -> io::Result<()> {
        let na = crate::carp::wire::unsolicited_na(target, mac);
        self.send(&self.neighbours, &na, crate::carp::wire::ALL_NODES)
    }

    fn send(&self, socket: &Socket, payload: &[u8], to: Ipv6Addr) -> io::Result<()> {
        let to = SockAddr::from(SocketAddrV6::new(to, 0, 0, self.ifindex));
        socket.send_to(payload, &to).map(drop)
    }
}

/// The interface's IPv6 link-local address: the source of an IPv6 vhid's adverts, hence its
/// tie-break key. One that duplicate address detection has not yet cleared is returned too
/// (it is the one the kernel will use within a second or two), one it failed never; `None`
/// without IPv6.
pub fn link_local(ifindex: u32) -> io::Result<Option<Ipv6Addr>> {
    let table = std::fs::read_to_string("/proc/net/if_inet6")?;
    Ok(link_local_in(&table, ifindex))
}

/// [`link_local`] on the text of `/proc/net/if_inet6`: address, ifindex, prefix length,
/// scope and flags in hex, then the name.
fn link_local_in(table: &str, ifindex: u32) -> Option<Ipv6Addr> {
    const SCOPE_LINK: u32 = 0x20;
    const TENTATIVE: u32 = 0x40;
    const DADFAILED: u32 = 0x08;
    let mut found = Vec::new();
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
        let (Some(addr), Some(index), Some(scope), Some(flags)) =
            (f.first(), hex(1), hex(3), hex(4))
        else {
            continue;
        };
        let Ok(bits) = u128::from_str_radix(addr, 16) else {
            continue;
        };
        if index == ifindex && scope == SCOPE_LINK && flags & DADFAILED == 0 && addr.len() == 32 {
            found.push((flags & TENTATIVE != 0, Ipv6Addr::from(bits)));
        }
    }
    found.sort();
    found.first().map(|&(_, a)| a)
}

/// Sends adverts: one prebuilt IPv4 packet per call, to the destination in its header.
pub enum AdvertSender {
    /// To the multicast group or a unicast peer, routed by the kernel.
    Raw(Socket),
    Broadcast(PacketSocket),
    /// An IPv6 vhid's: adverts go through [`Ipv6Sockets::send_advert`], not [`Self::send`].
    Ipv6(Ipv6Sockets),
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
            AdvertSender::Ipv6(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an IPv6 vhid sends no IPv4 packet",
            )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_local_address_of_the_interface_is_found_cleared_first() {
        let table = "\
20010db8000000000000000000000001 02 40 00 80     eth0
fe800000000000000000000000000002 02 40 20 c0     eth0
fe800000000000000000000000000001 02 40 20 80     eth0
fe800000000000000000000000000000 02 40 20 88     eth0
fe800000000000000000000000000009 03 40 20 80     eth1
00000000000000000000000000000001 01 80 10 80       lo
";
        assert_eq!(
            link_local_in(table, 2),
            Some("fe80::1".parse().unwrap()),
            "the cleared one before the tentative one"
        );
        assert_eq!(link_local_in(table, 3), Some("fe80::9".parse().unwrap()));
        assert_eq!(link_local_in(table, 1), None);
        assert_eq!(link_local_in("garbage\n\n", 2), None);
    }
}
