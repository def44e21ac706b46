//! Small system-call helpers shared by the modules that talk to the kernel directly:
//! mounts, `statfs`, a non-blocking `recv`, and the socket options and addresses the packet
//! sockets (ARP, NDP, VRRP) set up.

use std::{
    ffi::CString,
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use tokio::io::unix::AsyncFd;

/// Kernel BTF: needed by BPF tooling (bpftool's typed map dumps), not by xvip's programs.
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// bpffs' filesystem type (`BPF_FS_MAGIC`, include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The filesystem type (`statfs.f_type`) of `path`, if it can be read.
pub fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs into a zeroed struct with a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

/// Whether `path` is on bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    fs_magic(path) == Some(BPF_FS_MAGIC)
}

/// Mounts a filesystem of type `fstype` (also used as the source name) on `target`.
///
/// # Errors
/// The `mount(2)` error.
pub fn mount(fstype: &str, target: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (src, target, fstype) = (c(fstype)?, c(target)?, c(fstype)?);
    // SAFETY: mount(2) with valid C strings and no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one datagram into `buf` from a non-blocking socket; returns its length.
///
/// # Errors
/// The `recv(2)` error, other than "would block".
pub async fn recv(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        // SAFETY: reading into the caller's buffer of the given size.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
        guard.clear_ready();
    }
}

/// `setsockopt(2)` with the value `v` (an int, a struct) at `level`/`opt`.
///
/// # Errors
/// The call's error.
pub fn setsockopt<T>(fd: &OwnedFd, level: i32, opt: i32, v: &T) -> io::Result<()> {
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

/// `a` as the kernel's `in_addr` (network byte order).
pub fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from(a).to_be(),
    }
}

/// `a` as a `sockaddr_in` with port 0.
pub fn sockaddr(a: Ipv4Addr) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr = in_addr(a);
    sin
}

/// `a` as a `sockaddr_in6` with port 0 and the given scope (interface index).
pub fn sockaddr6(a: Ipv6Addr, scope: u32) -> libc::sockaddr_in6 {
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_addr.s6_addr = a.octets();
    sin6.sin6_scope_id = scope;
    sin6
}

/// `SO_BINDTODEVICE`: the socket only sees and sends on interface `name`.
///
/// # Errors
/// A name with a NUL byte, or the call's error.
pub fn bind_to_device(fd: &OwnedFd, name: &str) -> io::Result<()> {
    let ifname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
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
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether interface `name` is up and running (`IFF_UP` and `IFF_RUNNING`: administratively
/// up with its carrier), read with `SIOCGIFFLAGS` through `sock` (any datagram socket);
/// `false` when there is no such interface.
pub fn interface_running(sock: &OwnedFd, name: &str) -> bool {
    // SAFETY: a zeroed ifreq is valid; the name is copied in below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() {
        return false;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return false;
    }
    // SAFETY: SIOCGIFFLAGS sets the flags member of the union.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
}

/// A datagram socket for interface ioctls ([`interface_running`]).
///
/// # Errors
/// The `socket(2)` error.
pub fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket call; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the data path's `bpf_ktime_get_coarse_ns`
/// (which trails it by up to a tick).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
