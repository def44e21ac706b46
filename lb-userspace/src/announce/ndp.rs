//! IPv6 neighbour discovery for the VIPs (RFC 4861), the IPv6 counterpart of `arp`: a
//! packet socket that sees only neighbour solicitations, answers those for the v6 VIPs (and
//! a v6 SNAT address that is not the node's own) while announcing, defends them against
//! duplicate address detection, and sends unsolicited neighbour advertisements on start and
//! takeover (the gratuitous-ARP equivalent). Backends' link-layer addresses are not
//! resolved here: they come from the kernel's neighbour table.
//!
//! Packet layouts through etherparse (parsing, the ICMPv6 checksum, building); what is
//! checked is RFC 4861 section 7.1.1.

use std::{
    collections::BTreeMap,
    io,
    net::Ipv6Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

use etherparse::{
    Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    icmpv6::NeighborAdvertisementHeader,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use crate::net::sys::setsockopt;

/// The NDP socket's counters (IPv6 VIPs announced with `--announce arp`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NdpStatus {
    /// Neighbour solicitations that passed the RFC 4861 checks (for any target).
    pub solicitations: u64,
    /// Those answered (a target of ours, while announcing).
    pub answered: u64,
    /// Frames dropped by the checks, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Unicast advertisements telling a known client the new owner after a takeover
    /// (`announce::clients`).
    #[serde(default)]
    pub takeover_notices: u64,
}

const ETH_P_IPV6: u16 = 0x86dd;
/// The only hop limit NDP messages are sent and accepted with (RFC 4861 section 7.1.1).
pub const HOP_LIMIT: u8 = 255;
/// All-nodes multicast, the destination of unsolicited advertisements.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;
/// Neighbor solicitation: the 8-byte ICMPv6 header, then the 16-byte target.
const NS_MIN_LEN: usize = 24;
const TARGET: std::ops::Range<usize> = 0..16;
/// Option types (RFC 4861 section 4.6.1).
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;

/// The solicited-node multicast address of `a` (RFC 4291 section 2.7.1): ff02::1:ff00:0/104
/// and the low 24 bits of `a`.
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address a multicast IPv6 address is sent to (RFC 2464 section 7):
/// 33:33 and its low 32 bits.
pub fn multicast_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Why a received frame was not a neighbor solicitation we may act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invalid {
    /// Not an unfragmented IPv6 ICMPv6 neighbor solicitation, or shorter than one.
    NotNs,
    /// Hop limit other than 255: it was routed, so it is not from this link.
    HopLimit,
    /// ICMPv6 code other than 0.
    Code,
    /// Wrong ICMPv6 checksum.
    Checksum,
    /// A multicast target.
    Target,
    /// An option of length 0, or one that runs past the end.
    Options,
    /// A DAD probe (unspecified source) not sent to the solicited-node group of its
    /// target, or carrying a source link-layer address.
    Dad,
}

impl Invalid {
    /// Every reason, in counter order.
    pub const ALL: [Invalid; 7] = [
        Self::NotNs,
        Self::HopLimit,
        Self::Code,
        Self::Checksum,
        Self::Target,
        Self::Options,
        Self::Dad,
    ];

    /// Name in logs and the status document.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotNs => "not_ns",
            Self::HopLimit => "hop_limit",
            Self::Code => "code",
            Self::Checksum => "checksum",
            Self::Target => "target",
            Self::Options => "options",
            Self::Dad => "dad",
        }
    }
}

/// A checked neighbor solicitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solicitation {
    /// The frame's Ethernet source.
    pub eth_src: [u8; 6],
    /// IPv6 source; unspecified for duplicate address detection.
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The address whose link-layer address is asked for.
    pub target: Ipv6Addr,
    /// The source link-layer address option, if present.
    pub source_lladdr: Option<[u8; 6]>,
}

impl Solicitation {
    /// Takes apart and checks a whole Ethernet frame (RFC 4861 section 7.1.1).
    ///
    /// # Errors
    /// The first check that fails.
    pub fn parse(frame: &[u8]) -> Result<Self, Invalid> {
        let p = SlicedPacket::from_ethernet(frame).map_err(|_| Invalid::NotNs)?;
        let eth_src = match &p.link {
            Some(etherparse::LinkSlice::Ethernet2(e)) => e.source(),
            _ => return Err(Invalid::NotNs),
        };
        let (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(icmp))) = (&p.net, &p.transport)
        else {
            return Err(Invalid::NotNs);
        };
        if icmp.type_u8() != ICMPV6_NS || icmp.slice().len() < NS_MIN_LEN {
            return Err(Invalid::NotNs);
        }
        let h = ip.header();
        let (src, dst) = (h.source_addr(), h.destination_addr());
        if h.hop_limit() != HOP_LIMIT {
            return Err(Invalid::HopLimit);
        }
        if icmp.code_u8() != 0 {
            return Err(Invalid::Code);
        }
        if !icmp.is_checksum_valid(src.octets(), dst.octets()) {
            return Err(Invalid::Checksum);
        }
        let body = icmp.payload();
        let target = Ipv6Addr::from(<[u8; 16]>::try_from(&body[TARGET]).expect("16 bytes"));
        if target.is_multicast() {
            return Err(Invalid::Target);
        }
        let mut source_lladdr = None;
        let mut opts = &body[TARGET.end..];
        while !opts.is_empty() {
            let [kind, len8, ..] = *opts else {
                return Err(Invalid::Options);
            };
            let len = usize::from(len8) * 8;
            if len == 0 || len > opts.len() {
                return Err(Invalid::Options);
            }
            if kind == OPT_SOURCE_LLADDR && len == 8 {
                source_lladdr = Some(<[u8; 6]>::try_from(&opts[2..8]).expect("6 bytes"));
            }
            opts = &opts[len..];
        }
        if src.is_unspecified() && (dst != solicited_node(target) || source_lladdr.is_some()) {
            return Err(Invalid::Dad);
        }
        Ok(Self {
            eth_src,
            src,
            dst,
            target,
            source_lladdr,
        })
    }

    /// Whether this is a duplicate address detection probe (unspecified source).
    pub fn is_dad(&self) -> bool {
        self.src.is_unspecified()
    }

    /// Our advertisement in answer, when the target is one of `ours`: to the sender with
    /// Solicited and Override set; for a DAD probe of one of ours, to all nodes (section
    /// 7.2.4) so the prober sees the address is taken. Nothing for any other target, DAD
    /// probes included.
    pub fn answer(&self, ours: &[Ipv6Addr], our_mac: [u8; 6]) -> Option<Advertisement> {
        if !ours.contains(&self.target) {
            return None;
        }
        Some(if self.is_dad() {
            Advertisement::unsolicited(self.target, our_mac)
        } else {
            Advertisement {
                eth_dst: self.source_lladdr.unwrap_or(self.eth_src),
                eth_src: our_mac,
                dst: self.src,
                target: self.target,
                solicited: true,
            }
        })
    }
}

/// A neighbor advertisement from us for `target` (sent from `target`, Override set, with
/// our MAC as the target link-layer address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    pub solicited: bool,
}

impl Advertisement {
    /// The unsolicited advertisement for `vip` to all nodes (RFC 4861 section 7.2.6).
    pub fn unsolicited(vip: Ipv6Addr, our_mac: [u8; 6]) -> Self {
        Self {
            eth_dst: multicast_mac(ALL_NODES),
            eth_src: our_mac,
            dst: ALL_NODES,
            target: vip,
            solicited: false,
        }
    }

    /// The Ethernet frame: IPv6 (hop limit 255) from the target address, ICMPv6 type 136
    /// with its checksum, the target and its link-layer address option.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut body = [0u8; 24];
        body[TARGET].copy_from_slice(&self.target.octets());
        body[16] = OPT_TARGET_LLADDR;
        body[17] = 1; // 8 bytes
        body[18..24].copy_from_slice(&self.eth_src);
        let b = PacketBuilder::ethernet2(self.eth_src, self.eth_dst)
            .ipv6(self.target.octets(), self.dst.octets(), HOP_LIMIT)
            .icmpv6(Icmpv6Type::NeighborAdvertisement(
                NeighborAdvertisementHeader {
                    router: false,
                    solicited: self.solicited,
                    r#override: true,
                },
            ));
        let mut out = Vec::with_capacity(b.size(body.len()));
        b.write(&mut out, &body)
            .expect("a 24-byte payload fits and a Vec does not fail");
        out
    }
}

/// A duplicate address detection probe for `target` from `our_mac` (RFC 4862 section
/// 5.4.2): a solicitation from the unspecified address to the target's solicited-node
/// group, without a source link-layer option, so no host learns anything from it. Returns
/// the frame and its Ethernet destination.
pub fn dad_probe(our_mac: [u8; 6], target: Ipv6Addr) -> (Vec<u8>, [u8; 6]) {
    let group = solicited_node(target);
    let eth_dst = multicast_mac(group);
    let b = PacketBuilder::ethernet2(our_mac, eth_dst)
        .ipv6(Ipv6Addr::UNSPECIFIED.octets(), group.octets(), HOP_LIMIT)
        .icmpv6(Icmpv6Type::NeighborSolicitation);
    let body = target.octets();
    let mut out = Vec::with_capacity(b.size(body.len()));
    b.write(&mut out, &body)
        .expect("a 16-byte payload fits and a Vec does not fail");
    (out, eth_dst)
}

/// The target and the Ethernet source of a valid neighbour advertisement (hop limit 255,
/// code 0, checksum, a unicast target: RFC 4861 section 7.1.2), else `None`.
pub fn advertised(frame: &[u8]) -> Option<(Ipv6Addr, [u8; 6])> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::LinkSlice::Ethernet2(e)) = &p.link else {
        return None;
    };
    let (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(icmp))) = (&p.net, &p.transport)
    else {
        return None;
    };
    let h = ip.header();
    if icmp.type_u8() != ICMPV6_NA
        || icmp.code_u8() != 0
        || h.hop_limit() != HOP_LIMIT
        || icmp.payload().len() < TARGET.end
        || !icmp.is_checksum_valid(h.source_addr().octets(), h.destination_addr().octets())
    {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp.payload()[TARGET]).ok()?);
    (!target.is_multicast()).then_some((target, e.source()))
}

/// Errors of the NDP socket.
#[derive(Debug, thiserror::Error)]
#[error("NDP socket on {name}: {what}: {source}")]
pub struct NdpError {
    pub name: String,
    pub what: &'static str,
    pub source: io::Error,
}

/// Counters of what the socket received.
#[derive(Debug, Default)]
pub struct Counts {
    /// Solicitations that passed the checks.
    pub solicitations: AtomicU64,
    /// Advertisements sent in answer (the caller counts them with [`NdpSocket::answered`]).
    pub answered: AtomicU64,
    /// Frames dropped, by [`Invalid`] reason.
    pub invalid: [AtomicU64; Invalid::ALL.len()],
    /// Solicitations of ours not answered: over the requester's or the segment's budget.
    pub rate_limited: AtomicU64,
    /// Advertisements in answer that could not be sent.
    pub send_errors: AtomicU64,
    /// Unicast advertisements to known clients after a takeover.
    pub takeover_notices: AtomicU64,
}

/// The solicited-node groups a socket holds: those of the addresses it was opened for
/// (kept) and all joined now (those and the extra addresses').
#[derive(Debug, Default)]
struct Groups {
    base: Vec<Ipv6Addr>,
    joined: Vec<Ipv6Addr>,
}

/// A packet socket on one interface that receives only ICMPv6 neighbor solicitations.
pub struct NdpSocket {
    fd: AsyncFd<OwnedFd>,
    /// A datagram socket holding the solicited-node groups at the IP layer, so the kernel
    /// reports them (MLD) and a snooping switch forwards their solicitations here.
    _groups: OwnedFd,
    /// The solicited-node groups held (`NdpSocket::set_extra`).
    groups: std::sync::Mutex<Groups>,
    ifindex: u32,
    name: String,
    counts: Counts,
    /// Bounds the advertisements solicitations can cause (`announce::limit`).
    limit: std::sync::Mutex<crate::announce::limit::ReplyLimiter>,
}

/// The classic BPF filter of the socket: IPv6 (ether type at 12), next header ICMPv6 (at
/// 14 + 6) and ICMPv6 type `kind` (at 14 + 40: 135 solicitations, 136 advertisements for
/// the doctor's probe), everything else never reaches user space. NDP behind extension
/// headers is not expected (RFC 4861 sends none).
fn icmp_filter(kind: u8) -> [libc::sock_filter; 8] {
    const LDH: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LDB: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    let i = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        i(LDH, 0, 0, 12),
        i(JEQ, 0, 5, u32::from(ETH_P_IPV6)),
        i(LDB, 0, 0, 20),
        i(JEQ, 0, 3, 58),
        i(LDB, 0, 0, 54),
        i(JEQ, 0, 1, u32::from(kind)),
        i(RET, 0, 0, 0xffff),
        i(RET, 0, 0, 0),
    ]
}

impl NdpSocket {
    /// Opens the socket on interface `name` (index `ifindex`) and joins the solicited-node
    /// groups of `addrs` at the link layer (a NIC that filters multicast delivers their
    /// solicitations) and at the IP layer (MLD reports them to snooping switches); needs
    /// CAP_NET_RAW.
    ///
    /// # Errors
    /// [`NdpError`] naming the call that failed.
    pub fn open(name: &str, ifindex: u32, addrs: &[Ipv6Addr]) -> Result<Self, NdpError> {
        Self::open_for(name, ifindex, addrs, ICMPV6_NS)
    }

    /// A socket that sees only neighbour advertisements, for duplicate address detection
    /// probes ([`dad_probe`], [`advertised`]: `xvip doctor`); answers to a probe go to all
    /// nodes, which every interface receives. Needs CAP_NET_RAW.
    ///
    /// # Errors
    /// [`NdpError`] naming the call that failed.
    pub fn open_probe(name: &str, ifindex: u32) -> Result<Self, NdpError> {
        Self::open_for(name, ifindex, &[], ICMPV6_NA)
    }

    fn open_for(name: &str, ifindex: u32, addrs: &[Ipv6Addr], kind: u8) -> Result<Self, NdpError> {
        let err = |what, source| NdpError {
            name: name.into(),
            what,
            source,
        };
        // Protocol 0 receives nothing until the bind below, after the filter is on.
        // SAFETY: plain socket call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(err("socket", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut filter = icmp_filter(kind);
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
            .map_err(|e| err("SO_ATTACH_FILTER", e))?;
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_IPV6.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binding with a correctly sized sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(err("bind", io::Error::last_os_error()));
        }
        for a in addrs {
            let mac = multicast_mac(solicited_node(*a));
            let mut mr = libc::packet_mreq {
                mr_ifindex: ifindex as i32,
                mr_type: libc::PACKET_MR_MULTICAST as u16,
                mr_alen: 6,
                mr_address: [0; 8],
            };
            mr.mr_address[..6].copy_from_slice(&mac);
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr)
                .map_err(|e| err("PACKET_ADD_MEMBERSHIP", e))?;
        }
        // SAFETY: plain socket call.
        let raw = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(err("socket(AF_INET6)", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let groups = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut joined = Vec::new();
        for a in addrs {
            let g = solicited_node(*a);
            if joined.contains(&g) {
                continue;
            }
            joined.push(g);
            let mreq = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: g.octets(),
                },
                ipv6mr_interface: ifindex,
            };
            setsockopt(
                &groups,
                libc::IPPROTO_IPV6,
                libc::IPV6_ADD_MEMBERSHIP,
                &mreq,
            )
            .map_err(|e| err("IPV6_ADD_MEMBERSHIP", e))?;
        }
        // SAFETY: we own `fd` and hand it over; it is deregistered when `AsyncFd` drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| err("register", e.into()))?;
        Ok(Self {
            fd,
            _groups: groups,
            groups: std::sync::Mutex::new(Groups {
                base: joined.clone(),
                joined,
            }),
            ifindex,
            name: name.into(),
            counts: Counts::default(),
            limit: std::sync::Mutex::default(),
        })
    }

    /// Makes the joined solicited-node groups those of the addresses given at open plus
    /// `extra` (the Service addresses, `--services`, which come and go while running):
    /// groups no longer needed are left, new ones joined, at the link and the IP layer as
    /// [`NdpSocket::open`] does, so the groups held never outnumber the addresses served.
    /// Returns how many groups were joined.
    ///
    /// # Errors
    /// [`NdpError`] naming the call that failed (the changes before it stay).
    pub fn set_extra(&self, extra: &[Ipv6Addr]) -> Result<usize, NdpError> {
        let err = |what, source| NdpError {
            name: self.name.clone(),
            what,
            source,
        };
        let mut g = self
            .groups
            .lock()
            .map_err(|_| err("groups", io::Error::other("lock poisoned")))?;
        let mut wanted = g.base.clone();
        for a in extra {
            let s = solicited_node(*a);
            if !wanted.contains(&s) {
                wanted.push(s);
            }
        }
        let gone: Vec<Ipv6Addr> = g
            .joined
            .iter()
            .filter(|j| !wanted.contains(j))
            .copied()
            .collect();
        for grp in gone {
            self.membership(grp, false).map_err(|(w, e)| err(w, e))?;
            g.joined.retain(|j| *j != grp);
        }
        let mut n = 0;
        for grp in wanted {
            if g.joined.contains(&grp) {
                continue;
            }
            self.membership(grp, true).map_err(|(w, e)| err(w, e))?;
            g.joined.push(grp);
            n += 1;
        }
        Ok(n)
    }

    /// Joins (`add`) or leaves solicited-node group `grp` at the link and the IP layer.
    fn membership(&self, grp: Ipv6Addr, add: bool) -> Result<(), (&'static str, io::Error)> {
        let mut mr = libc::packet_mreq {
            mr_ifindex: self.ifindex as i32,
            mr_type: libc::PACKET_MR_MULTICAST as u16,
            mr_alen: 6,
            mr_address: [0; 8],
        };
        mr.mr_address[..6].copy_from_slice(&multicast_mac(grp));
        let (opt, what) = if add {
            (libc::PACKET_ADD_MEMBERSHIP, "PACKET_ADD_MEMBERSHIP")
        } else {
            (libc::PACKET_DROP_MEMBERSHIP, "PACKET_DROP_MEMBERSHIP")
        };
        setsockopt(self.fd.get_ref(), libc::SOL_PACKET, opt, &mr).map_err(|e| (what, e))?;
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: grp.octets(),
            },
            ipv6mr_interface: self.ifindex,
        };
        let (opt, what) = if add {
            (libc::IPV6_ADD_MEMBERSHIP, "IPV6_ADD_MEMBERSHIP")
        } else {
            (libc::IPV6_DROP_MEMBERSHIP, "IPV6_DROP_MEMBERSHIP")
        };
        setsockopt(&self._groups, libc::IPPROTO_IPV6, opt, &mreq).map_err(|e| (what, e))
    }

    /// What was received so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Counts one solicitation answered.
    pub fn answered(&self) {
        self.counts.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends `na` in answer to `ns` unless its sender or the segment has spent its budget
    /// (`announce::limit`; DAD probes share one requester); counts it either way and
    /// returns whether it went out. Failed sends are counted and logged at the 1st, 2nd,
    /// 4th, 8th ... failure.
    pub fn answer(&self, ns: &Solicitation, na: &Advertisement) -> bool {
        let ok = self
            .limit
            .lock()
            .map(|mut l| l.allow(std::time::Instant::now(), ns.src.into()))
            .unwrap_or(false);
        if !ok {
            self.counts.rate_limited.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.send(na) {
            Ok(()) => {
                self.answered();
                true
            }
            Err(e) => {
                let n = self.counts.send_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    log::warn!("neighbour advertisement: {e} ({n} failed so far)");
                }
                false
            }
        }
    }

    /// The counters as the status document shows them.
    pub fn status(&self) -> NdpStatus {
        let c = &self.counts;
        NdpStatus {
            solicitations: c.solicitations.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            dropped: Invalid::ALL
                .iter()
                .zip(&c.invalid)
                .map(|(r, n)| (r.name().to_string(), n.load(Ordering::Relaxed)))
                .chain([(
                    "rate_limited".to_string(),
                    c.rate_limited.load(Ordering::Relaxed),
                )])
                .collect(),
            takeover_notices: c.takeover_notices.load(Ordering::Relaxed),
        }
    }

    /// Tells a client (`mac`, `addr`) that `vip` is at `our_mac` now: an advertisement
    /// sent to it alone, Override set (RFC 4861 section 7.2.5: a REACHABLE entry takes the
    /// new address). Counted; returns whether it went out.
    pub fn tell(&self, our_mac: [u8; 6], vip: Ipv6Addr, mac: [u8; 6], addr: Ipv6Addr) -> bool {
        let na = Advertisement {
            eth_dst: mac,
            eth_src: our_mac,
            dst: addr,
            target: vip,
            solicited: false,
        };
        let ok = self.send(&na).is_ok();
        if ok {
            self.counts.takeover_notices.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Receives the next valid neighbor solicitation (invalid frames are counted).
    ///
    /// # Errors
    /// The socket's receive error.
    pub async fn recv(&self) -> io::Result<Solicitation> {
        let mut buf = [0u8; 1600];
        loop {
            let n = crate::net::sys::recv(&self.fd, &mut buf).await?;
            match Solicitation::parse(&buf[..n]) {
                Ok(s) => {
                    self.counts.solicitations.fetch_add(1, Ordering::Relaxed);
                    return Ok(s);
                }
                Err(r) => {
                    let i = Invalid::ALL.iter().position(|x| *x == r).unwrap_or(0);
                    self.counts.invalid[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sends one advertisement.
    ///
    /// # Errors
    /// The `sendto(2)` error.
    pub fn send(&self, na: &Advertisement) -> io::Result<()> {
        self.send_frame(&na.to_frame(), na.eth_dst)
    }

    /// The next frame the filter lets through, whole (the probe socket's advertisements).
    ///
    /// # Errors
    /// The socket's receive error.
    pub async fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        crate::net::sys::recv(&self.fd, buf).await
    }

    /// Sends one whole Ethernet frame to `eth_dst`.
    ///
    /// # Errors
    /// The `sendto(2)` error.
    pub fn send_frame(&self, frame: &[u8], eth_dst: [u8; 6]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_IPV6.to_be();
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&eth_dst);
        // SAFETY: sending a local buffer to a correctly sized address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends an unsolicited advertisement for each of `vips`.
    ///
    /// # Errors
    /// The first send error.
    pub fn announce(&self, our_mac: [u8; 6], vips: &[Ipv6Addr]) -> io::Result<()> {
        for v in vips {
            self.send(&Advertisement::unsolicited(*v, our_mac))?;
        }
        Ok(())
    }

    /// The interface's name.
    pub fn interface(&self) -> &str {
        &self.name
    }
}

/// The IPv6 addresses of interface `name` in this network namespace.
pub fn interface_addresses(name: &str) -> Vec<Ipv6Addr> {
    addresses(Some(name))
}

/// Every IPv6 address of this network namespace (to tell whether a SNAT address is the
/// node's own).
pub fn all_addresses() -> Vec<Ipv6Addr> {
    addresses(None)
}

/// The IPv6 addresses of interface `only`, or of every interface, from `getifaddrs`.
fn addresses(only: Option<&str>) -> Vec<Ipv6Addr> {
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
        // SAFETY: ifa_name is a C string.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        // SAFETY: non-null sockaddr; the family is read before the cast below.
        if only.is_none_or(|n| n == ifname)
            && !ifa.ifa_addr.is_null()
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET6
        {
            // SAFETY: AF_INET6 means sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            out.push(Ipv6Addr::from(sin6.sin6_addr.s6_addr));
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: freeing what getifaddrs allocated.
    unsafe { libc::freeifaddrs(addrs) };
    out
}

/// The first link-local address (fe80::/10) among `addrs`: what VRRP over IPv6 sends from.
pub fn link_local(addrs: &[Ipv6Addr]) -> Option<Ipv6Addr> {
    addrs.iter().copied().find(|a| a.is_unicast_link_local())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x0a);
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    /// A solicitation for 2001:db8::100 from 2001:db8::a (MAC 02:00:00:00:00:0a) to its
    /// solicited-node group ff02::1:ff00:100: hop limit 255, the source link-layer address
    /// option. Captured from Linux (`ping -6` of the address in a namespace, read from a
    /// packet socket on the peer), these exact bytes; the ICMPv6 checksum 0x1a19 was also
    /// computed independently (Python, RFC 1071 over the pseudo-header and the message).
    const NS: [u8; 86] = [
        0x33, 0x33, 0xff, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x86, 0xdd, //
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, // version, length 32, ICMPv6, 255
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, //
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x01, 0x00, //
        0x87, 0x00, 0x1a, 0x19, 0, 0, 0, 0, // type 135, code 0, checksum, reserved
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, // target
        0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // source link-layer address
    ];

    fn with(i: usize, v: u8) -> Vec<u8> {
        let mut f = NS.to_vec();
        f[i] = v;
        f
    }

    /// The NS with its ICMPv6 checksum recomputed after an edit.
    fn resum(mut f: Vec<u8>) -> Vec<u8> {
        f[56] = 0;
        f[57] = 0;
        let src: [u8; 16] = f[22..38].try_into().unwrap();
        let dst: [u8; 16] = f[38..54].try_into().unwrap();
        let len = f.len() - 54;
        let mut acc: u32 = 0;
        for w in [
            &src[..],
            &dst[..],
            &(len as u32).to_be_bytes(),
            &[0, 0, 0, 58],
            &f[54..],
        ] {
            for c in w.chunks(2) {
                acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        f[56..58].copy_from_slice(&(!(acc as u16)).to_be_bytes());
        f
    }

    #[test]
    fn solicited_node_group_and_its_mac() {
        assert_eq!(
            solicited_node(VIP),
            "ff02::1:ff00:100".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(VIP)),
            [0x33, 0x33, 0xff, 0, 1, 0]
        );
        assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
    }

    #[test]
    fn parses_the_known_solicitation() {
        let s = Solicitation::parse(&NS).unwrap();
        assert_eq!(s.eth_src, CLIENT_MAC);
        assert_eq!(s.src, CLIENT);
        assert_eq!(s.dst, solicited_node(VIP));
        assert_eq!(s.target, VIP);
        assert_eq!(s.source_lladdr, Some(CLIENT_MAC));
        assert!(!s.is_dad());
        assert_eq!(resum(NS.to_vec()), NS, "the test's checksum agrees");
    }

    #[test]
    fn answers_only_for_our_addresses_to_the_sender_solicited_and_override() {
        let s = Solicitation::parse(&NS).unwrap();
        let other = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
        assert_eq!(s.answer(&[other], OUR_MAC), None);
        let na = s.answer(&[other, VIP], OUR_MAC).unwrap();
        assert_eq!(
            na,
            Advertisement {
                eth_dst: CLIENT_MAC,
                eth_src: OUR_MAC,
                dst: CLIENT,
                target: VIP,
                solicited: true,
            }
        );
    }

    /// The answer checked by etherparse's own reading of it and against the bytes RFC 4861
    /// section 4.4 lays out (checksum 0x886c computed independently, in Python).
    #[test]
    fn the_advertisement_is_exact_bytes() {
        let na = Solicitation::parse(&NS)
            .unwrap()
            .answer(&[VIP], OUR_MAC)
            .unwrap()
            .to_frame();
        let want: [u8; 86] = [
            0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x86, 0xdd,
            0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, //
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, //
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, //
            0x88, 0x00, 0x88, 0x6c, 0x60, 0, 0, 0, // type 136, S and O set
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, //
            0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // target link-layer address
        ];
        assert_eq!(na, want);
        let p = SlicedPacket::from_ethernet(&na).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("not ICMPv6")
        };
        assert!(icmp.is_checksum_valid(VIP.octets(), CLIENT.octets()));
    }

    #[test]
    fn unsolicited_advertisement_goes_to_all_nodes_without_solicited() {
        let f = Advertisement::unsolicited(VIP, OUR_MAC).to_frame();
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        assert_eq!(f[58], 0x20, "override only");
        assert_eq!(f[21], HOP_LIMIT);
    }

    /// A DAD probe: from ::, to the target's solicited-node group, no source option.
    fn dad_probe(target: Ipv6Addr) -> Vec<u8> {
        let mut f = NS[..78].to_vec();
        f[19] = 24; // payload length without the option
        f[22..38].fill(0);
        f[38..54].copy_from_slice(&solicited_node(target).octets());
        f[62..78].copy_from_slice(&target.octets());
        resum(f)
    }

    #[test]
    fn dad_probes_are_answered_to_all_nodes_for_ours_and_never_for_others() {
        let mine = Solicitation::parse(&dad_probe(VIP)).unwrap();
        assert!(mine.is_dad());
        let na = mine.answer(&[VIP], OUR_MAC).unwrap();
        assert_eq!((na.dst, na.solicited), (ALL_NODES, false));
        let theirs = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x55);
        let probe = Solicitation::parse(&dad_probe(theirs)).unwrap();
        assert_eq!(probe.answer(&[VIP], OUR_MAC), None);
        // A probe carrying a source link-layer address, or not sent to the group, is invalid.
        let mut f = NS.to_vec();
        f[22..38].fill(0);
        assert_eq!(Solicitation::parse(&resum(f)), Err(Invalid::Dad));
        let mut f = dad_probe(VIP);
        f[38..54].copy_from_slice(&VIP.octets());
        assert_eq!(Solicitation::parse(&resum(f)), Err(Invalid::Dad));
    }

    #[test]
    fn the_doctors_probe_is_a_dad_probe_and_advertisements_are_read_back() {
        let (frame, eth_dst) = super::dad_probe(OUR_MAC, VIP);
        assert_eq!(eth_dst, multicast_mac(solicited_node(VIP)));
        let ns = Solicitation::parse(&frame).unwrap();
        assert!(ns.is_dad());
        assert_eq!((ns.target, ns.source_lladdr), (VIP, None));
        let na = Advertisement::unsolicited(VIP, OUR_MAC).to_frame();
        assert_eq!(advertised(&na), Some((VIP, OUR_MAC)));
        let mut bad = na.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(advertised(&bad), None, "bad checksum");
        assert_eq!(advertised(&frame), None, "a solicitation");
        for n in 0..na.len() {
            assert_eq!(advertised(&na[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn every_malformation_has_its_reason() {
        assert_eq!(Solicitation::parse(&with(21, 64)), Err(Invalid::HopLimit));
        assert_eq!(Solicitation::parse(&with(57, 0)), Err(Invalid::Checksum));
        assert_eq!(Solicitation::parse(&resum(with(55, 1))), Err(Invalid::Code));
        assert_eq!(
            Solicitation::parse(&resum(with(62, 0xff))),
            Err(Invalid::Target)
        );
        assert_eq!(
            Solicitation::parse(&resum(with(79, 0))),
            Err(Invalid::Options)
        );
        assert_eq!(
            Solicitation::parse(&resum(with(79, 2))),
            Err(Invalid::Options)
        );
        assert_eq!(
            Solicitation::parse(&resum(with(54, 136))),
            Err(Invalid::NotNs)
        );
        assert_eq!(Solicitation::parse(&with(12, 0x08)), Err(Invalid::NotNs));
    }

    #[test]
    fn impossible_lengths_never_panic() {
        for n in 0..NS.len() {
            assert!(Solicitation::parse(&NS[..n]).is_err(), "{n} bytes");
        }
    }

    #[test]
    fn the_socket_filter_ends_in_its_two_returns() {
        let f = icmp_filter(ICMPV6_NS);
        for (i, insn) in f.iter().enumerate() {
            if insn.code == 0x15 {
                let jf = i + 1 + usize::from(insn.jf);
                assert_eq!(f[jf].code, 0x06, "insn {i} falls to a return");
                assert_eq!(f[jf].k, 0, "insn {i} fails to drop");
            }
        }
        assert_eq!(f[6].k, 0xffff);
    }

    #[test]
    fn link_local_is_picked_out() {
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        assert_eq!(link_local(&[VIP, ll]), Some(ll));
        assert_eq!(link_local(&[VIP]), None);
    }
}

/// Bounded fuzzing of the solicitation parser: whatever arrives on the packet socket.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use crate::fuzz::Rng;

    #[test]
    fn random_mutated_and_truncated_frames_never_panic() {
        let valid = tests_ns();
        let mut rng = Rng::new(0x6d6);
        for case in 0..20_000 {
            let frame = match case % 3 {
                0 => rng.bytes(120),
                _ => rng.mutate(&valid, &[&[0x86, 0xdd], &[0x87, 0], &[0xff]]),
            };
            if let Ok(s) = Solicitation::parse(&frame) {
                // Whatever was accepted can be answered.
                let _ = s.answer(&[s.target], [2; 6]).map(|a| a.to_frame());
            }
        }
        assert!(
            Solicitation::parse(&valid).is_ok(),
            "the base frame is accepted"
        );
    }

    fn tests_ns() -> Vec<u8> {
        let s = Solicitation {
            eth_src: [2, 0, 0, 0, 0, 0x0a],
            src: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x0a),
            dst: solicited_node(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)),
            target: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100),
            source_lladdr: None,
        };
        // An NS built with etherparse from the same fields.
        let mut body = [0u8; 16];
        body.copy_from_slice(&s.target.octets());
        let b = PacketBuilder::ethernet2(s.eth_src, multicast_mac(s.dst))
            .ipv6(s.src.octets(), s.dst.octets(), HOP_LIMIT)
            .icmpv6(Icmpv6Type::NeighborSolicitation);
        let mut out = Vec::new();
        b.write(&mut out, &body).unwrap();
        out
    }
}
