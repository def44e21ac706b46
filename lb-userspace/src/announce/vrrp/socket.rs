//! The raw IPv4 socket for protocol 112 on one interface: joined to 224.0.0.18, TTL 255 on
//! everything it sends, our own multicast not looped back, the source address pinned to the
//! interface's primary address with `IP_PKTINFO`.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use super::packet::{MULTICAST, PROTO, TTL};

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
    src: Ipv4Addr,
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from(a).to_be(),
    }
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr = in_addr(a);
    sin
}

impl VrrpSocket {
    /// Opens the socket on interface `name` (index `ifindex`), sending from `src`
    /// (needs CAP_NET_RAW).
    ///
    /// # Errors
    /// [`SocketError`] naming the call that failed.
    pub fn open(name: &str, ifindex: u32, src: Ipv4Addr) -> Result<Self, SocketError> {
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
        let ifname = std::ffi::CString::new(name)
            .map_err(|_| err("interface name", io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: the option value is the NUL-terminated name and its length.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                ifname.as_ptr().cast(),
                ifname.as_bytes_with_nul().len() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(err("SO_BINDTODEVICE", io::Error::last_os_error()));
        }
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
        Ok(Self { fd, ifindex, src })
    }

    /// Receives one packet, IPv4 header included, into `buf`; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        crate::sys::recv(&self.fd, buf).await
    }

    /// Sends one VRRP message (the kernel adds the IPv4 header) to `dst` out of the
    /// interface, from the primary address.
    pub fn send(&self, msg: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let mut to = sockaddr(dst);
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // Room for one cmsghdr carrying an in_pktinfo, 8-byte aligned.
        let mut cbuf = [0u64; 8];
        let info = libc::in_pktinfo {
            ipi_ifindex: self.ifindex as i32,
            ipi_spec_dst: in_addr(self.src),
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
}
