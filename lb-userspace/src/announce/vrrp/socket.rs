//! The raw socket for protocol 112 on one interface. IPv4: joined to 224.0.0.18, TTL 255 on
//! everything it sends, our own multicast not looped back, the source address pinned to the
//! interface's primary address with `IP_PKTINFO`. IPv6 (RFC 5798 section 5.1.2): bound to
//! the interface's link-local address, joined to ff02::12, hop limit 255 on multicast and
//! unicast, the received hop limit and destination reported by the kernel
//! (`IPV6_RECVHOPLIMIT`, `IPV6_RECVPKTINFO`) and put back in front of the message as an
//! IPv6 header, so both families are checked by the same parser.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use crate::{
    net::sys::{bind_to_device, in_addr, setsockopt, sockaddr, sockaddr6},
    wire::vrrp::{MULTICAST, MULTICAST6, PROTO, TTL, ipv6_header},
};

/// Type of service of advertisements: Internet network control (as keepalived).
const TOS_NETWORK_CONTROL: libc::c_int = 0xc0;

/// A socket call failed.
#[derive(Debug, thiserror::Error)]
#[error("VRRP socket on {name}: {what}: {source}")]
pub struct SocketError {
    pub name: String,
    pub what: &'static str,
    pub source: io::Error,
}

/// The VRRP socket.
pub struct VrrpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
    src: IpAddr,
}

impl VrrpSocket {
    /// Opens the socket on interface `name` (index `ifindex`), sending from `src`: the
    /// primary IPv4 address, or the link-local IPv6 address (needs CAP_NET_RAW).
    ///
    /// # Errors
    /// [`SocketError`] naming the call that failed.
    pub fn open(name: &str, ifindex: u32, src: IpAddr) -> Result<Self, SocketError> {
        match src {
            IpAddr::V4(a) => Self::open_v4(name, ifindex, a),
            IpAddr::V6(a) => Self::open_v6(name, ifindex, a),
        }
    }

    fn open_v6(name: &str, ifindex: u32, src: Ipv6Addr) -> Result<Self, SocketError> {
        let err = |what, source| SocketError {
            name: name.into(),
            what,
            source,
        };
        // SAFETY: plain socket call.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(PROTO),
            )
        };
        if raw < 0 {
            return Err(err("socket", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        bind_to_device(&fd, name).map_err(|e| err("SO_BINDTODEVICE", e))?;
        let on: libc::c_int = 1;
        let off: libc::c_int = 0;
        let hops = libc::c_int::from(TTL);
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: MULTICAST6.octets(),
            },
            ipv6mr_interface: ifindex,
        };
        let ifindex_c = ifindex as libc::c_int;
        let v6 = libc::IPPROTO_IPV6;
        for (what, res) in [
            // A link-local address still in duplicate address detection cannot be bound yet.
            (
                "IPV6_FREEBIND",
                setsockopt(&fd, v6, libc::IPV6_FREEBIND, &on),
            ),
            (
                "IPV6_MULTICAST_IF",
                setsockopt(&fd, v6, libc::IPV6_MULTICAST_IF, &ifindex_c),
            ),
            (
                "IPV6_ADD_MEMBERSHIP",
                setsockopt(&fd, v6, libc::IPV6_ADD_MEMBERSHIP, &mreq),
            ),
            (
                "IPV6_MULTICAST_HOPS",
                setsockopt(&fd, v6, libc::IPV6_MULTICAST_HOPS, &hops),
            ),
            (
                "IPV6_UNICAST_HOPS",
                setsockopt(&fd, v6, libc::IPV6_UNICAST_HOPS, &hops),
            ),
            (
                "IPV6_MULTICAST_LOOP",
                setsockopt(&fd, v6, libc::IPV6_MULTICAST_LOOP, &off),
            ),
            (
                "IPV6_RECVHOPLIMIT",
                setsockopt(&fd, v6, libc::IPV6_RECVHOPLIMIT, &on),
            ),
            (
                "IPV6_RECVPKTINFO",
                setsockopt(&fd, v6, libc::IPV6_RECVPKTINFO, &on),
            ),
            (
                "IPV6_TCLASS",
                setsockopt(&fd, v6, libc::IPV6_TCLASS, &TOS_NETWORK_CONTROL),
            ),
        ] {
            res.map_err(|e| err(what, e))?;
        }
        let sa = sockaddr6(src, ifindex);
        // SAFETY: binding with a correctly sized sockaddr_in6.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        if rc < 0 {
            return Err(err("bind", io::Error::last_os_error()));
        }
        // SAFETY: we own `fd` and hand it over; it is deregistered when `AsyncFd` drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| err("register", e.into()))?;
        Ok(Self {
            fd,
            ifindex,
            src: IpAddr::V6(src),
        })
    }

    fn open_v4(name: &str, ifindex: u32, src: Ipv4Addr) -> Result<Self, SocketError> {
        let err = |what, source| SocketError {
            name: name.into(),
            what,
            source,
        };
        // SAFETY: plain socket call.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(PROTO),
            )
        };
        if raw < 0 {
            return Err(err("socket", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        crate::net::sys::bind_to_device(&fd, name).map_err(|e| err("SO_BINDTODEVICE", e))?;
        let mreqn = libc::ip_mreqn {
            imr_multiaddr: in_addr(MULTICAST),
            imr_address: in_addr(Ipv4Addr::UNSPECIFIED),
            imr_ifindex: ifindex as i32,
        };
        let ttl = libc::c_int::from(TTL);
        let off: libc::c_int = 0;
        for (what, res) in [
            (
                "IP_MULTICAST_IF",
                setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn),
            ),
            (
                "IP_ADD_MEMBERSHIP",
                setsockopt(&fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreqn),
            ),
            (
                "IP_MULTICAST_TTL",
                setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &ttl),
            ),
            (
                "IP_TTL",
                setsockopt(&fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl),
            ),
            (
                "IP_MULTICAST_LOOP",
                setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &off),
            ),
            (
                "IP_TOS",
                setsockopt(&fd, libc::IPPROTO_IP, libc::IP_TOS, &TOS_NETWORK_CONTROL),
            ),
        ] {
            res.map_err(|e| err(what, e))?;
        }
        // SAFETY: we own `fd` and hand it over; it is deregistered when `AsyncFd` drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| err("register", e.into()))?;
        Ok(Self {
            fd,
            ifindex,
            src: IpAddr::V4(src),
        })
    }

    /// Receives one packet into `buf`, IP header included (IPv6: the header rebuilt from
    /// the source, destination and hop limit the kernel reports, no extension headers);
    /// returns its length.
    ///
    /// # Errors
    /// The receive error.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.src {
            IpAddr::V4(_) => crate::net::sys::recv(&self.fd, buf).await,
            IpAddr::V6(_) => loop {
                let mut guard = self.fd.readable().await?;
                match recv6(&self.fd, buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                    r => return r,
                }
            },
        }
    }

    /// Receives one packet if one is queued now, without waiting (`WouldBlock` otherwise).
    ///
    /// # Errors
    /// `WouldBlock` when nothing is queued, or the receive error.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.src {
            IpAddr::V4(_) => {
                // SAFETY: reading into the caller's buffer of the given size.
                let n = unsafe {
                    libc::recv(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
            IpAddr::V6(_) => recv6(&self.fd, buf),
        }
    }

    /// Sends one VRRP message (the kernel adds the IP header) to `dst` out of the
    /// interface, from the primary (IPv4) or link-local (IPv6) address.
    ///
    /// # Errors
    /// The send error.
    pub fn send(&self, msg: &[u8], dst: IpAddr) -> io::Result<()> {
        let dst = match dst {
            IpAddr::V4(d) => d,
            IpAddr::V6(d) => return self.send6(msg, d),
        };
        let mut to = sockaddr(dst);
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // Room for one cmsghdr carrying an in_pktinfo, 8-byte aligned.
        let mut cbuf = [0u64; 8];
        let IpAddr::V4(src) = self.src else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let info = libc::in_pktinfo {
            ipi_ifindex: self.ifindex as i32,
            ipi_spec_dst: in_addr(src),
            ipi_addr: in_addr(Ipv4Addr::UNSPECIFIED),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
        debug_assert!(space <= size_of_val(&cbuf));
        // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
        let mut msg_hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        msg_hdr.msg_name = (&mut to as *mut libc::sockaddr_in).cast();
        msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        msg_hdr.msg_iov = &mut iov;
        msg_hdr.msg_iovlen = 1;
        msg_hdr.msg_control = cbuf.as_mut_ptr().cast();
        msg_hdr.msg_controllen = space as _;
        // SAFETY: the control buffer holds one header of CMSG_SPACE bytes, so
        // CMSG_FIRSTHDR is non-null and its data area fits an in_pktinfo.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg_hdr);
            (*c).cmsg_level = libc::IPPROTO_IP;
            (*c).cmsg_type = libc::IP_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
        }
        // SAFETY: a fully initialised msghdr whose buffers are alive.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg_hdr, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn send6(&self, msg: &[u8], dst: Ipv6Addr) -> io::Result<()> {
        if self.src.is_ipv4() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // Link-local and multicast destinations need the interface as their scope.
        let to = sockaddr6(dst, self.ifindex);
        // SAFETY: sending a local buffer to a correctly sized address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// One `recvmsg` on the IPv6 socket: the message after a rebuilt IPv6 header in `buf`.
/// A message without the hop limit or destination (never from Linux) reads as hop limit 0
/// and destination `::`, which the parser rejects.
fn recv6(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    const HDR: usize = 40;
    if buf.len() < HDR {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: all-zero is a valid sockaddr_in6 and msghdr.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf[HDR..].as_mut_ptr().cast(),
        iov_len: buf.len() - HDR,
    };
    // Room for an int (hop limit) and an in6_pktinfo, each behind a cmsghdr.
    let mut cbuf = [0u64; 16];
    // SAFETY: as above.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    m.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf.as_mut_ptr().cast();
    m.msg_controllen = size_of_val(&cbuf) as _;
    // SAFETY: a fully initialised msghdr whose buffers are alive.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut m, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let (mut hop_limit, mut dst) = (0u8, Ipv6Addr::UNSPECIFIED);
    // SAFETY: walking the control messages the kernel wrote, within msg_controllen; each
    // data area is read unaligned with the size its type says.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 {
                if (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    hop_limit = u8::try_from(v).unwrap_or(0);
                } else if (*c).cmsg_type == libc::IPV6_PKTINFO {
                    let info =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>());
                    dst = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                }
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
    let len = u16::try_from(n).unwrap_or(u16::MAX);
    buf[..HDR].copy_from_slice(&ipv6_header(src, dst, hop_limit, len));
    Ok(HDR + n)
}
