//! Serving the node itself: the cgroup `connect4` hook's setup (network-namespace cookie,
//! cgroup v2 root), and the VIP on `lo` for a backend that is this node (the usual kubeadm
//! layout: xvip on every control-plane node), with the ARP sysctls that keep the kernel
//! from answering for it.

use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

/// Errors of the local-serving setup.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys { what: String, source: io::Error },
}

fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Sys { what, source }
}

const SO_NETNS_COOKIE: libc::c_int = 71;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cookie of this process's network namespace, as `bpf_get_netns_cookie` sees it.
///
/// # Errors
/// When the socket option is not supported (Linux < 5.14).
pub fn netns_cookie() -> Result<u64, LocalError> {
    // SAFETY: plain socket call; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(sys("socket")(io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 of the given length.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(sys("getsockopt(SO_NETNS_COOKIE)")(
            io::Error::last_os_error(),
        ));
    }
    Ok(cookie)
}

use crate::net::sys::fs_magic;

/// The root of the cgroup v2 hierarchy: `/sys/fs/cgroup`, or a private mount of cgroup2
/// under `/run/xvip` when `/sys` is not the host's (as under `ip netns exec`).
///
/// # Errors
/// When no cgroup2 hierarchy can be found or mounted.
pub fn cgroup_root() -> Result<File, LocalError> {
    let std_path = Path::new("/sys/fs/cgroup");
    let path: PathBuf = if fs_magic(std_path) == Some(CGROUP2_SUPER_MAGIC) {
        std_path.into()
    } else {
        let p = PathBuf::from("/run/xvip/cgroup2");
        if fs_magic(&p) != Some(CGROUP2_SUPER_MAGIC) {
            std::fs::create_dir_all(&p).map_err(sys(format!("creating {}", p.display())))?;
            crate::net::sys::mount("cgroup2", "/run/xvip/cgroup2")
                .map_err(sys("mounting cgroup2 on /run/xvip/cgroup2"))?;
        }
        p
    };
    File::open(&path).map_err(sys(format!("opening {}", path.display())))
}

/// Every IPv4 address of this network namespace.
pub fn local_addresses() -> Vec<Ipv4Addr> {
    crate::net::iface::if_addrs()
        .into_iter()
        .filter_map(|a| match a.addr {
            crate::net::iface::IfAddr::Ip(IpAddr::V4(v4), _) => Some(v4),
            _ => None,
        })
        .collect()
}

/// Adds or removes `addr/32` (IPv6: `/128`) on interface `ifindex` over rtnetlink.
/// Returns `false` when there was nothing to do (already there, already gone).
fn netlink_addr(add: bool, ifindex: u32, addr: IpAddr) -> Result<bool, LocalError> {
    let (family, prefix, octets): (i32, u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6, 128, a.octets().to_vec()),
    };
    let attr_len = 4 + octets.len() as u16;
    const RTM_NEWADDR: u16 = 20;
    const RTM_DELADDR: u16 = 21;
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    // SAFETY: plain socket call.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(sys("netlink socket")(io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut msg: Vec<u8> = Vec::with_capacity(40);
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16
        | if add {
            (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16
        } else {
            0
        };
    // nlmsg_len: 16 (header) + 8 (ifaddrmsg) + 2 attributes
    msg.extend_from_slice(&(24 + 2 * u32::from(attr_len)).to_ne_bytes());
    msg.extend_from_slice(&(if add { RTM_NEWADDR } else { RTM_DELADDR }).to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
    // ifaddrmsg: family, prefixlen, flags, scope (universe), index
    msg.extend_from_slice(&[family as u8, prefix, 0, 0]);
    msg.extend_from_slice(&ifindex.to_ne_bytes());
    for ty in [IFA_LOCAL, IFA_ADDRESS] {
        msg.extend_from_slice(&attr_len.to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&octets);
    }
    // SAFETY: sending a local buffer on our socket (to the kernel: zeroed sockaddr_nl).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: as above.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        return Err(sys("netlink send")(io::Error::last_os_error()));
    }
    let mut buf = [0u8; 256];
    // SAFETY: receiving into a local buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(sys("netlink ack")(io::Error::last_os_error()));
    }
    // nlmsgerr: the error code follows the 16-byte header.
    let errno = -i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    match errno {
        0 => Ok(true),
        libc::EEXIST if add => Ok(false),
        libc::EADDRNOTAVAIL if !add => Ok(false),
        e => Err(sys(format!(
            "{} {addr}/{prefix}",
            if add { "adding" } else { "removing" }
        ))(io::Error::from_raw_os_error(e))),
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<String, LocalError> {
    let old = std::fs::read_to_string(path).map_err(sys(format!("reading {path}")))?;
    std::fs::write(path, value).map_err(sys(format!("writing {path}")))?;
    Ok(old.trim().to_string())
}

/// The VIPs on `lo` while a backend is this node: the local API server then accepts
/// packets for VIP:6443 that the XDP program passes up unchanged, and answers from the VIP.
/// `arp_ignore=1` keeps the kernel from answering ARP for addresses on `lo` (xvip answers
/// for the VIP, and only while it announces), `arp_announce=2` keeps it from using the VIP
/// as an ARP source. IPv6 VIPs go on `lo` as /128: the kernel answers neighbour
/// solicitations only for addresses of the interface they arrive on, so xvip alone answers
/// for them on the wire (no sysctl needed). Undone on drop.
pub struct VipOnLo {
    added: Vec<IpAddr>,
    restore: Vec<(String, String)>,
}

impl VipOnLo {
    /// Adds the VIPs to `lo` and sets the ARP sysctls for `interface`.
    ///
    /// # Errors
    /// A failed netlink request or sysctl write (what was done is undone).
    pub fn install(vips: &[Ipv4Addr], interface: &str) -> Result<Self, LocalError> {
        let mut me = Self {
            added: Vec::new(),
            restore: Vec::new(),
        };
        for (path, value) in [
            ("/proc/sys/net/ipv4/conf/all/arp_ignore".to_string(), "1"),
            (
                format!("/proc/sys/net/ipv4/conf/{interface}/arp_ignore"),
                "1",
            ),
            ("/proc/sys/net/ipv4/conf/all/arp_announce".to_string(), "2"),
            (
                format!("/proc/sys/net/ipv4/conf/{interface}/arp_announce"),
                "2",
            ),
        ] {
            let old = write_sysctl(&path, value)?;
            me.restore.push((path, old));
        }
        let lo = 1; // the loopback device is always ifindex 1 in a network namespace
        for vip in vips {
            // Already there means an earlier xvip on this node died without cleaning up (the
            // README tells operators never to assign a VIP themselves): ours to remove too.
            netlink_addr(true, lo, IpAddr::V4(*vip))?;
            me.added.push(IpAddr::V4(*vip));
        }
        Ok(me)
    }

    /// Adds the IPv6 VIPs to `lo` too (a backend of theirs is this node).
    ///
    /// # Errors
    /// A failed netlink request (what was added stays recorded and is undone on drop).
    pub fn add_v6(&mut self, vips: &[Ipv6Addr]) -> Result<(), LocalError> {
        for vip in vips {
            netlink_addr(true, 1, IpAddr::V6(*vip))?;
            self.added.push(IpAddr::V6(*vip));
        }
        Ok(())
    }
}

impl Drop for VipOnLo {
    fn drop(&mut self) {
        for vip in &self.added {
            if let Err(e) = netlink_addr(false, 1, *vip) {
                log::warn!("removing {vip} from lo: {e}");
            }
        }
        for (path, old) in self.restore.iter().rev() {
            let _ = std::fs::write(path, old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_namespace_has_a_cookie() {
        assert_ne!(netns_cookie().unwrap(), 0);
    }

    #[test]
    fn loopback_is_among_the_local_addresses() {
        assert!(local_addresses().contains(&Ipv4Addr::LOCALHOST));
    }
}
