//! IPv6 neighbour discovery for the VIPs (RFC 4861), the IPv6 counterpart of `arp`: a
//! packet socket that sees only neighbour solicitations (and a second one, only the
//! advertisements whose target is one of the addresses it was opened for, so a flood of
//! those never crowds out a solicitation), answers solicitations for the v6 VIPs (and a
//! v6 SNAT address that is not the node's own) while announcing, defends them against
//! duplicate address detection, and sends unsolicited neighbour advertisements on start and
//! takeover (the gratuitous-ARP equivalent). Every advertisement it sends carries the
//! node's mark (`wire::ndp::OPT_MARK`); the advertisements it receives are claims of the
//! VIPs (`announce::claims`). Backends' link-layer addresses are not resolved here: they
//! come from the kernel's neighbour table.
//!
//! The messages as bytes (parsing, the checks of RFC 4861 section 7.1, building) are
//! `wire::ndp`.

use std::{
    collections::BTreeMap,
    io,
    net::Ipv6Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
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
    /// Neighbour advertisements for our addresses that passed the RFC 4861 checks (claims;
    /// ours come back only from another interface). Those that failed are counted in
    /// `dropped` as `na_<reason>`.
    #[serde(default)]
    pub advertisements: u64,
}

use crate::wire::ndp::{
    Advertised, Advertisement, ETH_P_IPV6, ICMPV6_NA, ICMPV6_NS, Invalid, Mark, Solicitation,
    multicast_mac, solicited_node,
};

/// What the sockets received: a solicitation, or an advertisement for one of their
/// addresses (the daemon's queue carries both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    Ns(Solicitation),
    Na(Advertised),
}

/// Addresses whose advertisements the socket filter picks out one by one; past that many,
/// it passes every advertisement and user space drops the others (counted `na_not_ours`).
pub const MAX_FILTER_TARGETS: usize = 64;

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
    /// Advertisements for our addresses that passed the checks.
    pub advertisements: AtomicU64,
    /// Advertisements dropped, by [`Invalid`] reason.
    pub na_invalid: [AtomicU64; Invalid::ALL.len()],
    /// Advertisements for an address not ours (past [`MAX_FILTER_TARGETS`]).
    pub na_not_ours: AtomicU64,
    /// Advertisements received while the daemon's queue was full: dropped unread.
    pub na_busy: AtomicU64,
}

/// The index of drop reason `r` in the counters.
fn reason(r: Invalid) -> usize {
    Invalid::ALL.iter().position(|x| *x == r).unwrap_or(0)
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
    /// The addresses whose advertisements are received (those given at open) ...
    targets: Vec<Ipv6Addr>,
    /// ... on this socket of their own ([`NdpSocket::recv_claim`]); none without them.
    claims: Option<AsyncFd<OwnedFd>>,
    /// The mark every advertisement sent carries (`announce::claims`).
    mark: std::sync::Mutex<Option<Mark>>,
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

/// The classic BPF filter of the announcing sockets: IPv6 ICMPv6 (as [`icmp_filter`]), then
/// every neighbour solicitation if `solicitations`, and the advertisements whose target
/// (the 16 bytes at 14 + 40 + 8) is one of `targets`, compared a 32-bit word at a time;
/// with more than [`MAX_FILTER_TARGETS`] targets, every advertisement. Each target's block
/// ends in its own accept, so no jump is longer than a block.
fn ndp_filter(solicitations: bool, targets: &[Ipv6Addr]) -> Vec<libc::sock_filter> {
    const LDH: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LDB: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const LDW: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    const TARGET: u32 = 14 + 40 + 8;
    let i = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let every_na = targets.len() > MAX_FILTER_TARGETS;
    let mut f = vec![
        i(LDH, 0, 0, 12),
        i(JEQ, 0, 6, u32::from(ETH_P_IPV6)),
        i(LDB, 0, 0, 20),
        i(JEQ, 0, 4, 58),
        i(LDB, 0, 0, 54),
        // A solicitation: accepted, or dropped.
        i(
            JEQ,
            if solicitations { 1 } else { 2 },
            0,
            u32::from(ICMPV6_NS),
        ),
        // An advertisement: to the targets' blocks (or accepted), else dropped.
        i(JEQ, if every_na { 0 } else { 2 }, 1, u32::from(ICMPV6_NA)),
        i(RET, 0, 0, 0xffff),
        i(RET, 0, 0, 0),
    ];
    if !every_na {
        for t in targets {
            let o = t.octets();
            for w in 0..4u8 {
                let at = usize::from(w) * 4;
                let word = u32::from_be_bytes(o[at..at + 4].try_into().expect("4 bytes"));
                f.push(i(LDW, 0, 0, TARGET + u32::from(w) * 4));
                // A mismatch skips the rest of the block and its accept.
                f.push(i(JEQ, 0, 7 - 2 * w, word));
            }
            f.push(i(RET, 0, 0, 0xffff));
        }
        f.push(i(RET, 0, 0, 0));
    }
    f
}

/// An IPv6 packet socket bound to interface `ifindex`, non-blocking, receiving only what
/// `filter` passes (attached before the bind, so nothing else is ever queued).
fn packet_socket(
    name: &str,
    ifindex: u32,
    filter: &mut [libc::sock_filter],
) -> Result<OwnedFd, NdpError> {
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
    Ok(fd)
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
        let mut filter = if kind == ICMPV6_NS {
            ndp_filter(true, &[])
        } else {
            icmp_filter(kind).to_vec()
        };
        let fd = packet_socket(name, ifindex, &mut filter)?;
        // The advertisements for our addresses (claims) on a socket of their own: a flood
        // of them fills its queue, never the solicitations'.
        let claims = if kind == ICMPV6_NS && !addrs.is_empty() {
            let fd = packet_socket(name, ifindex, &mut ndp_filter(false, addrs))?;
            // SAFETY: we own `fd` and hand it over; deregistered when `AsyncFd` drops it.
            Some(unsafe { AsyncFd::register(fd) }.map_err(|e| err("register", e.into()))?)
        } else {
            None
        };
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
            targets: addrs.to_vec(),
            claims,
            mark: std::sync::Mutex::new(None),
        })
    }

    /// The mark this node's advertisements carry from now on (`None`: none; without VRRP).
    pub fn set_mark(&self, mark: Option<Mark>) {
        if let Ok(mut m) = self.mark.lock() {
            *m = mark;
        }
    }

    /// Asks who has `target` (`announce::claims`' probe): a solicitation from `our_mac` and
    /// a fresh random link-local address (fe80::/64, 64 random bits), which the answers go
    /// to, so an answer naming it answers this question and no other. Returns the address.
    /// An owner that is a kernel keeps a neighbour entry for it until it goes stale; xvip
    /// keeps none.
    ///
    /// # Errors
    /// The `sendto(2)` error, or no random bytes from the system.
    pub fn probe(&self, our_mac: [u8; 6], target: Ipv6Addr) -> io::Result<Ipv6Addr> {
        use ring::rand::SecureRandom;
        let mut o = [0u8; 16];
        o[..2].copy_from_slice(&[0xfe, 0x80]);
        ring::rand::SystemRandom::new()
            .fill(&mut o[8..])
            .map_err(|_| io::Error::other("no random bytes"))?;
        let src = Ipv6Addr::from(o);
        let (frame, to) = crate::wire::ndp::solicitation(our_mac, src, target);
        self.send_frame(&frame, to)?;
        Ok(src)
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
            .map(|mut l| l.allow(std::time::Instant::now(), ns.src))
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
                .chain(
                    Invalid::ALL
                        .iter()
                        .zip(&c.na_invalid)
                        .map(|(r, n)| (format!("na_{}", r.name()), n.load(Ordering::Relaxed))),
                )
                .chain([
                    (
                        "na_not_ours".to_string(),
                        c.na_not_ours.load(Ordering::Relaxed),
                    ),
                    ("na_busy".to_string(), c.na_busy.load(Ordering::Relaxed)),
                ])
                .collect(),
            takeover_notices: c.takeover_notices.load(Ordering::Relaxed),
            advertisements: c.advertisements.load(Ordering::Relaxed),
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

    /// Receives the next valid neighbour solicitation (invalid frames are counted by
    /// reason).
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
                    self.counts.invalid[reason(r)].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Receives the next valid advertisement for one of the socket's addresses (a claim,
    /// `announce::claims`; invalid ones counted by reason as `na_*`); never returns on a
    /// socket opened without addresses.
    ///
    /// # Errors
    /// The socket's receive error.
    pub async fn recv_claim(&self) -> io::Result<Advertised> {
        let Some(fd) = &self.claims else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 1600];
        loop {
            let n = crate::net::sys::recv(fd, &mut buf).await?;
            match Advertised::parse(&buf[..n]) {
                Ok(a) if self.targets.contains(&a.target) => {
                    self.counts.advertisements.fetch_add(1, Ordering::Relaxed);
                    return Ok(a);
                }
                Ok(_) => {
                    self.counts.na_not_ours.fetch_add(1, Ordering::Relaxed);
                }
                Err(r) => {
                    self.counts.na_invalid[reason(r)].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counts an advertisement dropped because the daemon's queue was full.
    pub fn busy(&self) {
        self.counts.na_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends one advertisement.
    ///
    /// # Errors
    /// The `sendto(2)` error.
    pub fn send(&self, na: &Advertisement) -> io::Result<()> {
        let mark = self.mark.lock().ok().and_then(|m| *m);
        self.send_frame(&na.to_frame_marked(mark), na.eth_dst)
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
    crate::net::iface::if_addrs()
        .into_iter()
        .filter(|n| only.is_none_or(|o| o == n.interface))
        .filter_map(|n| match n.addr {
            crate::net::iface::IfAddr::Ip(std::net::IpAddr::V6(a), _) => Some(a),
            _ => None,
        })
        .collect()
}

/// The first link-local address (fe80::/10) among `addrs`: what VRRP over IPv6 sends from.
pub fn link_local(addrs: &[Ipv6Addr]) -> Option<Ipv6Addr> {
    addrs.iter().copied().find(|a| a.is_unicast_link_local())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Runs a classic BPF program over `pkt` (the subset the filters use), as the kernel
    /// would: the bytes it keeps, 0 to drop.
    fn run(f: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let insn = f[pc];
            let k = insn.k as usize;
            match insn.code {
                0x28 => {
                    let Some(b) = pkt.get(k..k + 2) else { return 0 };
                    a = u32::from(u16::from_be_bytes([b[0], b[1]]));
                }
                0x30 => {
                    let Some(b) = pkt.get(k) else { return 0 };
                    a = u32::from(*b);
                }
                0x20 => {
                    let Some(b) = pkt.get(k..k + 4) else { return 0 };
                    a = u32::from_be_bytes(b.try_into().unwrap());
                }
                0x15 => {
                    pc += usize::from(if a == insn.k { insn.jt } else { insn.jf });
                }
                0x06 => return insn.k,
                c => panic!("opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn the_announcing_filter_passes_solicitations_and_advertisements_for_our_targets_only() {
        let vip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
        let snat = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);
        let mac = [2, 0, 0, 0, 0, 9];
        let na = |t| Advertisement::unsolicited(t, mac).to_frame();
        let (ns, _) = crate::wire::ndp::solicitation(mac, "fe80::9".parse().unwrap(), vip);
        let f = ndp_filter(true, &[vip, snat]);
        assert_eq!(run(&f, &ns), 0xffff);
        // The claims socket's: the same advertisements, no solicitation.
        let claims = ndp_filter(false, &[vip, snat]);
        assert_eq!(run(&claims, &ns), 0);
        assert_eq!(run(&claims, &na(vip)), 0xffff);
        assert_eq!(run(&claims, &na(Ipv6Addr::LOCALHOST)), 0);
        assert_eq!(run(&f, &na(vip)), 0xffff);
        assert_eq!(run(&f, &na(snat)), 0xffff);
        // Differing in each word of the target in turn: dropped.
        for w in 0..4 {
            let mut o = vip.octets();
            o[w * 4 + 3] ^= 1;
            assert_eq!(run(&f, &na(Ipv6Addr::from(o))), 0, "word {w}");
        }
        let mut other = ns.clone();
        other[54] = 128; // an echo request
        assert_eq!(run(&f, &other), 0);
        let mut v4 = ns.clone();
        v4[12] = 0x08;
        assert_eq!(run(&f, &v4), 0);
        // No targets: solicitations only; too many: every advertisement.
        assert_eq!(run(&ndp_filter(true, &[]), &na(vip)), 0);
        assert_eq!(run(&ndp_filter(true, &[]), &ns), 0xffff);
        let many = vec![snat; MAX_FILTER_TARGETS + 1];
        assert_eq!(run(&ndp_filter(false, &many), &na(vip)), 0xffff);
        // Frames cut before the target's end are dropped, never read past their end.
        for n in 0..14 + 40 + 8 + 16 {
            assert_eq!(run(&f, &na(vip)[..n]), 0, "{n} bytes");
        }
    }

    #[test]
    fn link_local_is_picked_out() {
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        let vip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
        assert_eq!(link_local(&[vip, ll]), Some(ll));
        assert_eq!(link_local(&[vip]), None);
    }
}
