//! A network interface by name, as the packet sockets (ARP, NDP, VRRP) and the pins need
//! it: index, MAC and first IPv4 address, read with `getifaddrs` in the current network
//! namespace; every address of the namespace ([`if_addrs`]); and the `aa:bb:cc:dd:ee:ff`
//! form of a MAC.

use std::net::{IpAddr, Ipv4Addr};

/// Why an interface cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No such interface in this network namespace.
    #[error("unknown interface '{name}'")]
    Unknown { name: String },
    /// The interface has no usable MAC address.
    #[error("interface '{name}' has no Ethernet address ({reason})")]
    NoMac { name: String, reason: String },
}

/// An interface as the packet sockets need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Its first IPv4 address, the sender address of our requests (0.0.0.0 if none).
    pub ipv4: Ipv4Addr,
}

impl Interface {
    /// Looks up `name` in the current network namespace.
    ///
    /// # Errors
    /// [`IfaceError::Unknown`] or [`IfaceError::NoMac`].
    pub fn lookup(name: &str) -> Result<Self, IfaceError> {
        let unknown = || IfaceError::Unknown { name: name.into() };
        let c = std::ffi::CString::new(name).map_err(|_| unknown())?;
        // SAFETY: valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            return Err(unknown());
        }
        // Not /sys/class/net: sysfs shows the namespace it was mounted in, which is not ours
        // when entered with `nsenter --net`.
        let (mac, ipv4) = addresses(name);
        let mac = mac
            .filter(|m| *m != [0; 6])
            .ok_or_else(|| IfaceError::NoMac {
                name: name.into(),
                reason: "no link-layer address".into(),
            })?;
        Ok(Self {
            name: name.into(),
            index,
            mac,
            ipv4: ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
        })
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The interface's MAC (from its AF_PACKET entry) and first IPv4 address.
fn addresses(name: &str) -> (Option<[u8; 6]>, Option<Ipv4Addr>) {
    let (mut mac, mut ipv4) = (None, None);
    for a in if_addrs().into_iter().filter(|a| a.interface == name) {
        match a.addr {
            IfAddr::Ip(IpAddr::V4(v4), _) if ipv4.is_none() => ipv4 = Some(v4),
            IfAddr::Mac(m) => mac = Some(m),
            _ => {}
        }
    }
    (mac, ipv4)
}

/// What one `getifaddrs` entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfAddr {
    /// An IPv4 or IPv6 address and its prefix length (from the netmask; full when none).
    Ip(IpAddr, u8),
    /// The link-layer address of an Ethernet-like interface (`AF_PACKET`, 6 bytes).
    Mac([u8; 6]),
}

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedAddr {
    pub interface: String,
    pub addr: IfAddr,
}

/// Every address of every interface of the current network namespace (`getifaddrs`; not
/// sysfs, which shows the namespace it was mounted in), in the kernel's order; other
/// families are left out. Empty when `getifaddrs` fails.
pub fn if_addrs() -> Vec<NamedAddr> {
    let mut out = Vec::new();
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return out;
    }
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: walking the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: non-null sockaddrs, each read as its family says; the netmask, when
        // present, is of the address's family.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let m = if ifa.ifa_netmask.is_null() {
                        u32::MAX
                    } else {
                        (*(ifa.ifa_netmask as *const libc::sockaddr_in))
                            .sin_addr
                            .s_addr
                    };
                    IfAddr::Ip(
                        IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                        m.count_ones() as u8,
                    )
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let m = if ifa.ifa_netmask.is_null() {
                        [0xff; 16]
                    } else {
                        (*(ifa.ifa_netmask as *const libc::sockaddr_in6))
                            .sin6_addr
                            .s6_addr
                    };
                    IfAddr::Ip(
                        IpAddr::V6(a.sin6_addr.s6_addr.into()),
                        m.iter().map(|b| b.count_ones()).sum::<u32>() as u8,
                    )
                }
                libc::AF_PACKET => {
                    let sll = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
                    if sll.sll_halen != 6 {
                        continue;
                    }
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&sll.sll_addr[..6]);
                    IfAddr::Mac(m)
                }
                _ => continue,
            }
        };
        // SAFETY: ifa_name is a C string.
        let interface = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push(NamedAddr { interface, addr });
    }
    // SAFETY: freeing what getifaddrs allocated.
    unsafe { libc::freeifaddrs(addrs) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_format() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 10]), "02:00:00:00:00:0a");
    }
}
