//! Checks of the VIPs: not an address of this node, not held by kube-proxy's `kube-ipvs0`,
//! and not answered by any host on the segment (an RFC 5227 ARP probe; for IPv6 VIPs a
//! duplicate address detection probe, RFC 4862).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use super::Finding;
use crate::config::Settings;
use crate::{
    announce::arp::ArpSocket,
    net::iface::{Interface, format_mac},
    wire::arp::Arp,
};

/// kube-proxy's IPVS dummy device, which holds every service address.
pub const KUBE_IPVS: &str = "kube-ipvs0";
/// How long the ARP probe waits for answers (RFC 5227's ANNOUNCE_WAIT is 2 s; one is
/// plenty on a LAN and keeps the doctor quick).
pub const PROBE_WAIT: Duration = Duration::from_secs(1);

/// One address of this namespace: its interface, the address and its prefix length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAddr {
    pub interface: String,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Every check of the VIPs, in order.
pub async fn checks(s: &Settings) -> Vec<Finding> {
    let locals = local_addrs();
    let vips = super::vips(s);
    let mut out: Vec<Finding> = vips.iter().map(|v| vip_local(*v, &locals)).collect();
    let arp_ignore = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/arp_ignore")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    out.push(kube_ipvs(&vips, &locals, arp_ignore));
    let (four, six) = tokio::join!(probes(s), probes6(s));
    out.extend(four);
    out.extend(six);
    out
}

/// This namespace's addresses (`getifaddrs`).
pub fn local_addrs() -> Vec<LocalAddr> {
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
        // SAFETY: ifa_name is a C string.
        let interface = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: non-null sockaddrs of the family read; the mask is of the same family.
        let (addr, prefix) = unsafe {
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
                    (
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
                    (
                        IpAddr::V6(a.sin6_addr.s6_addr.into()),
                        m.iter().map(|b| b.count_ones()).sum::<u32>() as u8,
                    )
                }
                _ => continue,
            }
        };
        out.push(LocalAddr {
            interface,
            addr,
            prefix,
        });
    }
    // SAFETY: freeing what getifaddrs allocated.
    unsafe { libc::freeifaddrs(addrs) };
    out
}

/// The VIP must not be an address of this node (kube-ipvs0 aside: its own check): the kernel
/// would answer ARP for it whatever xvip decides, and VRRP could not move it away.
pub fn vip_local(vip: IpAddr, locals: &[LocalAddr]) -> Finding {
    const CHECK: &str = "vip-local";
    let on: Vec<&LocalAddr> = locals
        .iter()
        .filter(|l| l.addr == vip && l.interface != KUBE_IPVS)
        .collect();
    let del = |l: &LocalAddr| format!("ip addr del {}/{} dev {}", l.addr, l.prefix, l.interface);
    match on.as_slice() {
        [] => Finding::ok(CHECK, format!("{vip} is not an address of this node")),
        [l] if l.interface == "lo" => Finding::warn(
            CHECK,
            format!("{vip} is on lo"),
            format!(
                "fine while xvip runs here with this node as a backend (it puts the VIP there, with arp_ignore=1); otherwise `{}`",
                del(l)
            ),
        ),
        _ => Finding::fail(
            CHECK,
            format!(
                "{vip} is assigned to {}: the kernel answers for it, not xvip",
                on.iter()
                    .map(|l| l.interface.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "remove it (`{}`); xvip announces the VIP itself",
                on.iter().map(|l| del(l)).collect::<Vec<_>>().join("; ")
            ),
        ),
    }
}

/// kube-proxy in IPVS mode puts every service address on `kube-ipvs0` and, without
/// `strictARP` (which sets `all.arp_ignore=1`), answers ARP for them on every interface.
pub fn kube_ipvs(vips: &[IpAddr], locals: &[LocalAddr], arp_ignore_all: Option<u32>) -> Finding {
    const CHECK: &str = "kube-ipvs0";
    let present = locals.iter().any(|l| l.interface == KUBE_IPVS);
    let held: Vec<String> = vips
        .iter()
        .filter(|v| {
            locals
                .iter()
                .any(|l| l.interface == KUBE_IPVS && l.addr == **v)
        })
        .map(ToString::to_string)
        .collect();
    if !held.is_empty() {
        return Finding::fail(
            CHECK,
            format!(
                "{KUBE_IPVS} holds {}: kube-proxy (IPVS mode) answers for it",
                held.join(", ")
            ),
            "keep the VIP out of every Service's externalIPs/loadBalancerIP, add it to kube-proxy's ipvs.excludeCIDRs, and set ipvs.strictARP: true",
        );
    }
    match (present, arp_ignore_all) {
        (false, _) => Finding::ok(
            CHECK,
            format!("no {KUBE_IPVS} device (kube-proxy not in IPVS mode here)"),
        ),
        (true, Some(n)) if n >= 1 => Finding::ok(
            CHECK,
            format!("{KUBE_IPVS} does not hold the VIP; all.arp_ignore={n} (strictARP)"),
        ),
        (true, n) => Finding::warn(
            CHECK,
            format!(
                "{KUBE_IPVS} does not hold the VIP, but all.arp_ignore={}: kube-proxy answers ARP for its services on every interface",
                n.map_or("?".into(), |n| n.to_string())
            ),
            "set ipvs.strictARP: true in kube-proxy's configuration, and the VIP in ipvs.excludeCIDRs",
        ),
    }
}

/// Who answered the probe for `vip`: the senders' MACs, ours left out.
pub fn vip_arp(vip: Ipv4Addr, iface: &str, answers: &[[u8; 6]], vrrp: bool) -> Finding {
    const CHECK: &str = "vip-arp";
    if answers.is_empty() {
        return Finding::ok(CHECK, format!("no host on {iface} answers ARP for {vip}"));
    }
    let macs = answers
        .iter()
        .map(format_mac)
        .collect::<Vec<_>>()
        .join(", ");
    let seen = format!("{vip} is answered on {iface} by {macs}");
    if vrrp {
        return Finding::warn(
            CHECK,
            seen,
            "expected while another node of this VRRP group is master; otherwise find the host with that MAC (`ip neigh`, the switch's MAC table) and remove the VIP from it",
        );
    }
    Finding::fail(
        CHECK,
        format!("{seen}: another host holds the VIP"),
        "find the host with that MAC (`ip neigh`, the switch's MAC table) and remove the VIP from it, or choose a free VIP",
    )
}

/// The duplicate address detection probe's verdict on an IPv6 VIP: the MACs that
/// advertised it.
pub fn vip_ndp(vip: Ipv6Addr, iface: &str, answers: &[[u8; 6]], vrrp: bool) -> Finding {
    const CHECK: &str = "vip-ndp";
    if answers.is_empty() {
        return Finding::ok(
            CHECK,
            format!("no host on {iface} answers a DAD probe for {vip}"),
        );
    }
    let macs = answers
        .iter()
        .map(format_mac)
        .collect::<Vec<_>>()
        .join(", ");
    let seen = format!("{vip} is advertised on {iface} by {macs}");
    if vrrp {
        return Finding::warn(
            CHECK,
            seen,
            "expected while another node of this VRRP group is master; otherwise find the host with that MAC (`ip -6 neigh`, the switch's MAC table) and remove the VIP from it",
        );
    }
    Finding::fail(
        CHECK,
        format!("{seen}: another host holds the VIP"),
        "find the host with that MAC (`ip -6 neigh`, the switch's MAC table) and remove the VIP from it, or choose a free VIP",
    )
}

/// Probes each IPv6 VIP on the first interface (duplicate address detection) and collects
/// the advertisements.
async fn probes6(s: &Settings) -> Vec<Finding> {
    if s.vips6.is_empty() {
        return Vec::new();
    }
    let Ok(iface) = Interface::lookup(&s.interface) else {
        return Vec::new();
    };
    let sock = match crate::announce::ndp::NdpSocket::open_probe(&iface.name, iface.index) {
        Ok(sock) => sock,
        Err(e) => {
            return vec![Finding::warn(
                "vip-ndp",
                format!("cannot probe: {e}"),
                "run as root (CAP_NET_RAW)",
            )];
        }
    };
    let mut answers: Vec<(Ipv6Addr, Vec<[u8; 6]>)> =
        s.vips6.iter().map(|v| (v.addr, Vec::new())).collect();
    for (vip, _) in &answers {
        let (frame, dst) = crate::wire::ndp::dad_probe(iface.mac, *vip);
        let _ = sock.send_frame(&frame, dst);
    }
    let end = Instant::now() + PROBE_WAIT;
    let mut buf = [0u8; 1600];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Ok(n)) = tokio::time::timeout(left, sock.recv_frame(&mut buf)).await else {
            break;
        };
        let Some((target, mac)) = crate::wire::ndp::advertised(&buf[..n]) else {
            continue;
        };
        if mac == iface.mac {
            continue;
        }
        if let Some((_, macs)) = answers.iter_mut().find(|(v, _)| *v == target)
            && !macs.contains(&mac)
        {
            macs.push(mac);
        }
    }
    answers
        .iter()
        .map(|(vip, macs)| vip_ndp(*vip, &iface.name, macs, s.vrrp.is_some()))
        .collect()
}

/// The RFC 5227 probe of `vip` from `mac`: sender IP 0.0.0.0, so no host learns anything.
pub fn probe(mac: [u8; 6], vip: Ipv4Addr) -> Arp {
    Arp::request(mac, Ipv4Addr::UNSPECIFIED, vip)
}

/// Probes each IPv4 VIP on the first interface and collects the answers.
async fn probes(s: &Settings) -> Vec<Finding> {
    if s.vips.is_empty() {
        return Vec::new();
    }
    let iface = match Interface::lookup(&s.interface) {
        Ok(i) => i,
        Err(_) => return Vec::new(), // the node checks have said so
    };
    let sock = match ArpSocket::open(&iface) {
        Ok(sock) => sock,
        Err(e) => {
            return vec![Finding::warn(
                "vip-arp",
                format!("cannot probe: {e}"),
                "run as root (CAP_NET_RAW)",
            )];
        }
    };
    let mut answers: Vec<(Ipv4Addr, Vec<[u8; 6]>)> =
        s.vips.iter().map(|v| (v.addr, Vec::new())).collect();
    for (vip, _) in &answers {
        let _ = sock.send(&probe(iface.mac, *vip), [0xff; 6]);
    }
    let end = Instant::now() + PROBE_WAIT;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Ok(a)) = tokio::time::timeout(left, sock.recv()).await else {
            break;
        };
        // A reply for the VIP, or anyone claiming it (a gratuitous ARP or its own probe).
        if a.sender_mac == iface.mac {
            continue;
        }
        if let Some((_, macs)) = answers.iter_mut().find(|(v, _)| *v == a.sender_ip)
            && !macs.contains(&a.sender_mac)
        {
            macs.push(a.sender_mac);
        }
    }
    answers
        .iter()
        .map(|(vip, macs)| vip_arp(*vip, &iface.name, macs, s.vrrp.is_some()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    fn addr(interface: &str, a: &str, prefix: u8) -> LocalAddr {
        LocalAddr {
            interface: interface.into(),
            addr: a.parse().unwrap(),
            prefix,
        }
    }

    #[test]
    fn a_vip_assigned_to_an_interface_fails_with_the_command_that_removes_it() {
        let vip: IpAddr = "192.0.2.100".parse().unwrap();
        let locals = [
            addr("eth0", "192.0.2.2", 24),
            addr("eth0", "192.0.2.100", 24),
        ];
        assert_eq!(
            vip_local(vip, &locals).line(),
            "fail vip-local: 192.0.2.100 is assigned to eth0: the kernel answers for it, not xvip; fix: remove it (`ip addr del 192.0.2.100/24 dev eth0`); xvip announces the VIP itself"
        );
        assert_eq!(vip_local(vip, &locals[..1]).level, Level::Ok);
        assert_eq!(
            vip_local(vip, &[addr("lo", "192.0.2.100", 32)]).level,
            Level::Warn
        );
        assert_eq!(
            vip_local(vip, &[addr(KUBE_IPVS, "192.0.2.100", 32)]).level,
            Level::Ok
        );
    }

    #[test]
    fn kube_ipvs0_holding_the_vip_fails_and_without_strict_arp_warns() {
        let vips = ["192.0.2.100".parse().unwrap()];
        let held = [addr(KUBE_IPVS, "192.0.2.100", 32)];
        let f = kube_ipvs(&vips, &held, Some(1));
        assert_eq!(f.level, Level::Fail);
        assert!(f.line().starts_with(
            "fail kube-ipvs0: kube-ipvs0 holds 192.0.2.100: kube-proxy (IPVS mode) answers for it; fix: "
        ), "{}", f.line());
        assert!(f.fix.contains("excludeCIDRs") && f.fix.contains("strictARP"));
        let other = [addr(KUBE_IPVS, "10.96.0.1", 32)];
        assert_eq!(kube_ipvs(&vips, &other, Some(0)).level, Level::Warn);
        assert_eq!(kube_ipvs(&vips, &other, Some(1)).level, Level::Ok);
        assert_eq!(kube_ipvs(&vips, &[], None).level, Level::Ok);
    }

    #[test]
    fn an_answered_probe_fails_naming_the_mac_unless_vrrp_explains_it() {
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let mac = [2, 0, 0, 0, 0, 0x0b];
        assert_eq!(
            vip_arp(vip, "eth0", &[mac], false).line(),
            "fail vip-arp: 192.0.2.100 is answered on eth0 by 02:00:00:00:00:0b: another host holds the VIP; fix: find the host with that MAC (`ip neigh`, the switch's MAC table) and remove the VIP from it, or choose a free VIP"
        );
        assert_eq!(vip_arp(vip, "eth0", &[mac], true).level, Level::Warn);
        assert_eq!(
            vip_arp(vip, "eth0", &[], false).line(),
            "ok   vip-arp: no host on eth0 answers ARP for 192.0.2.100"
        );
    }

    #[test]
    fn an_advertised_ipv6_vip_fails_naming_the_mac_unless_vrrp_explains_it() {
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        assert_eq!(
            vip_ndp(vip, "eth0", &[], false).line(),
            "ok   vip-ndp: no host on eth0 answers a DAD probe for 2001:db8::100"
        );
        let f = vip_ndp(vip, "eth0", &[[2, 0, 0, 0, 3, 0x0b]], false);
        assert_eq!(f.level, Level::Fail);
        assert_eq!(
            f.seen,
            "2001:db8::100 is advertised on eth0 by 02:00:00:00:03:0b: another host holds the VIP"
        );
        assert_eq!(vip_ndp(vip, "eth0", &[[2; 6]], true).level, Level::Warn);
    }

    #[test]
    fn the_probe_is_an_rfc_5227_probe() {
        let mac = [2, 0, 0, 0, 0, 2];
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let frame = probe(mac, vip).to_frame([0xff; 6]);
        let back = Arp::parse(&frame).unwrap();
        assert_eq!(back.op, 1);
        assert_eq!(back.sender_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(back.sender_mac, mac);
        assert_eq!(back.target_ip, vip);
        assert_eq!(back.target_mac, [0; 6]);
    }
}
