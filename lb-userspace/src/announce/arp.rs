//! ARP for the VIPs from a packet socket: answering requests for the VIPs (the VIPs are not
//! interface addresses), and gratuitous ARP when serving starts and at a refresh interval.
//! The backends' next hops are not resolved here: the kernel does it (`control::nexthop`).

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

/// The ARP sockets' answers (all attached interfaces together).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ArpStatus {
    /// Requests for our addresses answered.
    pub answered: u64,
    /// Requests for our addresses not answered: over the requester's or the segment's
    /// budget.
    pub rate_limited: u64,
    /// Unicast replies telling a known client the new owner after a takeover
    /// (`announce::clients`).
    #[serde(default)]
    pub takeover_notices: u64,
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_HLEN: usize = 14;
const ARP_LEN: usize = 28;
/// Ethernet + ARP for IPv4 over Ethernet.
pub const FRAME_LEN: usize = ETH_HLEN + ARP_LEN;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const BROADCAST: [u8; 6] = [0xff; 6];

/// Errors about the interface or the socket.
#[derive(Debug, thiserror::Error)]
pub enum ArpError {
    /// No such interface in this network namespace.
    #[error("unknown interface '{name}'")]
    UnknownInterface { name: String },
    /// The interface has no usable MAC address.
    #[error("interface '{name}' has no Ethernet address ({reason})")]
    NoMac { name: String, reason: String },
    /// A socket call failed.
    #[error("ARP socket on {name}: {source}")]
    Socket { name: String, source: io::Error },
}

/// An interface as ARP needs it.
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
    /// [`ArpError::UnknownInterface`] or [`ArpError::NoMac`].
    pub fn lookup(name: &str) -> Result<Self, ArpError> {
        let unknown = || ArpError::UnknownInterface { name: name.into() };
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
            .ok_or_else(|| ArpError::NoMac {
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
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return (None, None);
    }
    let (mut mac, mut ipv4) = (None, None);
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: walking the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a C string.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if ifname == name && !ifa.ifa_addr.is_null() {
            // SAFETY: non-null sockaddr; the family decides the cast below.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET && ipv4.is_none() {
                // SAFETY: AF_INET means sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                ipv4 = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            } else if family == libc::AF_PACKET {
                // SAFETY: AF_PACKET means sockaddr_ll.
                let sll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
                if sll.sll_halen == 6 {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&sll.sll_addr[..6]);
                    mac = Some(m);
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: freeing what getifaddrs allocated.
    unsafe { libc::freeifaddrs(addrs) };
    (mac, ipv4)
}

/// What an xvip node says about itself after the ARP packet in its frames (the padding
/// up to the shortest Ethernet frame; hosts ignore it): read by `announce::claims`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    /// Compared first: the higher priority keeps the VIP ...
    pub priority: u8,
    /// ... then the higher primary address (RFC 5798's tie-break).
    pub primary: Ipv4Addr,
    pub vrid: u8,
}

/// The mark's bytes: "XVIP", version 1, VRID, priority, 0, primary address.
pub const MARK_LEN: usize = 12;
const MAGIC: [u8; 4] = *b"XVIP";

impl Mark {
    pub fn encode(&self) -> [u8; MARK_LEN] {
        let mut b = [0u8; MARK_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = 1;
        b[5] = self.vrid;
        b[6] = self.priority;
        b[8..12].copy_from_slice(&self.primary.octets());
        b
    }

    /// The mark at the start of `trailer` (the frame's bytes after the ARP packet), if any.
    pub fn decode(trailer: &[u8]) -> Option<Self> {
        let b = trailer.get(..MARK_LEN)?;
        (b[..4] == MAGIC && b[4] == 1).then(|| Self {
            vrid: b[5],
            priority: b[6],
            primary: Ipv4Addr::new(b[8], b[9], b[10], b[11]),
        })
    }
}

/// One parsed ARP packet (IPv4 over Ethernet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
    /// An xvip sender's mark after the packet (`announce::claims`); never sent from here
    /// (the socket adds its own).
    pub mark: Option<Mark>,
}

impl Arp {
    /// Parses a whole Ethernet frame; `None` when it is not IPv4-over-Ethernet ARP.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        if frame.len() < FRAME_LEN || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_ARP {
            return None;
        }
        let a = &frame[ETH_HLEN..FRAME_LEN];
        // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4
        if a[0..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let ip = |o: usize| Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]);
        let mac = |o: usize| <[u8; 6]>::try_from(&a[o..o + 6]).expect("6 bytes");
        Some(Self {
            op: u16::from_be_bytes([a[6], a[7]]),
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
            mark: Mark::decode(&frame[FRAME_LEN..]),
        })
    }

    /// Builds the Ethernet frame carrying this ARP packet to `eth_dst`.
    pub fn to_frame(&self, eth_dst: [u8; 6]) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&eth_dst);
        f[6..12].copy_from_slice(&self.sender_mac);
        f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        let a = &mut f[ETH_HLEN..];
        a[0..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        a[6..8].copy_from_slice(&self.op.to_be_bytes());
        a[8..14].copy_from_slice(&self.sender_mac);
        a[14..18].copy_from_slice(&self.sender_ip.octets());
        a[18..24].copy_from_slice(&self.target_mac);
        a[24..28].copy_from_slice(&self.target_ip.octets());
        f
    }

    /// Our answer to a request for `vip`, or `None` if this is not one. An RFC 5227 probe
    /// (sender address 0.0.0.0: a host about to take the address) is answered too, as the
    /// address's owner defends it: the prober then knows the VIP is in use.
    pub fn answer_for(&self, vip: Ipv4Addr, our_mac: [u8; 6]) -> Option<(Arp, [u8; 6])> {
        (self.op == ARP_REQUEST && self.target_ip == vip && self.sender_mac != our_mac).then_some({
            (
                Arp {
                    op: ARP_REPLY,
                    sender_mac: our_mac,
                    sender_ip: vip,
                    target_mac: self.sender_mac,
                    target_ip: self.sender_ip,
                    mark: None,
                },
                self.sender_mac,
            )
        })
    }

    /// A request for `target` from us.
    pub fn request(our_mac: [u8; 6], our_ip: Ipv4Addr, target: Ipv4Addr) -> Self {
        Self {
            op: ARP_REQUEST,
            sender_mac: our_mac,
            sender_ip: our_ip,
            target_mac: [0; 6],
            target_ip: target,
            mark: None,
        }
    }

    /// Gratuitous ARP for `vip`: a request and a reply, both broadcast (RFC 5227 section 3;
    /// some hosts only update their cache from one of the two).
    pub fn gratuitous(our_mac: [u8; 6], vip: Ipv4Addr) -> [Self; 2] {
        [
            Self {
                op: ARP_REQUEST,
                sender_mac: our_mac,
                sender_ip: vip,
                target_mac: [0; 6],
                target_ip: vip,
                mark: None,
            },
            Self {
                op: ARP_REPLY,
                sender_mac: our_mac,
                sender_ip: vip,
                target_mac: BROADCAST,
                target_ip: vip,
                mark: None,
            },
        ]
    }
}

/// A packet socket for ARP on one interface.
pub struct ArpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
    /// Bounds the replies requests can cause (`announce::limit`).
    limit: Mutex<crate::announce::limit::ReplyLimiter>,
    answered: AtomicU64,
    rate_limited: AtomicU64,
    send_errors: AtomicU64,
    takeover_notices: AtomicU64,
    /// The mark sent after every packet (`announce::claims`).
    mark: Mutex<Option<Mark>>,
}

/// The shortest Ethernet frame (without its FCS): a marked frame is padded to it.
const MIN_FRAME: usize = 60;

impl ArpSocket {
    /// Opens and binds the socket (needs CAP_NET_RAW).
    ///
    /// # Errors
    /// [`ArpError::Socket`].
    pub fn open(iface: &Interface) -> Result<Self, ArpError> {
        let err = |source| ArpError::Socket {
            name: iface.name.clone(),
            source,
        };
        // SAFETY: plain socket call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                (ETH_P_ARP.to_be()) as i32,
            )
        };
        if raw < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
        sll.sll_ifindex = iface.index as i32;
        // SAFETY: binding with a correctly sized sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: we own `fd` and hand it over; it is deregistered when `AsyncFd` drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| err(e.into()))?;
        Ok(Self {
            fd,
            ifindex: iface.index,
            limit: Mutex::default(),
            answered: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            takeover_notices: AtomicU64::new(0),
            mark: Mutex::new(None),
        })
    }

    /// The mark this node's frames carry from now on (`None`: none; without VRRP).
    pub fn set_mark(&self, mark: Option<Mark>) {
        if let Ok(mut m) = self.mark.lock() {
            *m = mark;
        }
    }

    /// Sends `reply` (an answer to a request from `requester`) unless the requester or the
    /// segment has spent its budget (`announce::limit`); returns whether it went out.
    /// Refused replies are counted, never logged; failed sends are counted and logged at
    /// the 1st, 2nd, 4th, 8th ... failure.
    pub fn answer(&self, reply: &Arp, eth_dst: [u8; 6], requester: Ipv4Addr) -> bool {
        let ok = self
            .limit
            .lock()
            .map(|mut l| l.allow(Instant::now(), requester.into()))
            .unwrap_or(false);
        if !ok {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.send(reply, eth_dst) {
            Ok(()) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                let n = self.send_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    log::warn!("ARP reply: {e} ({n} failed so far)");
                }
                false
            }
        }
    }

    /// Requests answered, and answers refused by the rate limit.
    pub fn status(&self) -> ArpStatus {
        ArpStatus {
            answered: self.answered.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            takeover_notices: self.takeover_notices.load(Ordering::Relaxed),
        }
    }

    /// Receives the next ARP packet (other frames are skipped).
    pub async fn recv(&self) -> io::Result<Arp> {
        let mut buf = [0u8; 256];
        loop {
            let n = crate::sys::recv(&self.fd, &mut buf).await?;
            if let Some(a) = Arp::parse(&buf[..n]) {
                return Ok(a);
            }
        }
    }

    /// Sends one ARP packet to `eth_dst`.
    pub fn send(&self, arp: &Arp, eth_dst: [u8; 6]) -> io::Result<()> {
        let mut frame = [0u8; MIN_FRAME];
        frame[..FRAME_LEN].copy_from_slice(&arp.to_frame(eth_dst));
        let mark = self.mark.lock().ok().and_then(|m| *m);
        let frame = match mark {
            Some(m) => {
                frame[FRAME_LEN..FRAME_LEN + MARK_LEN].copy_from_slice(&m.encode());
                &frame[..]
            }
            None => &frame[..FRAME_LEN],
        };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
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

    /// Tells `client` (its MAC and address) that `vip` is at `our_mac` now: a unicast
    /// reply, as if it had asked (`announce::clients`). Counted; returns whether it went out.
    pub fn tell(&self, our_mac: [u8; 6], vip: Ipv4Addr, mac: [u8; 6], addr: Ipv4Addr) -> bool {
        let reply = Arp {
            op: ARP_REPLY,
            sender_mac: our_mac,
            sender_ip: vip,
            target_mac: mac,
            target_ip: addr,
            mark: None,
        };
        let ok = self.send(&reply, mac).is_ok();
        if ok {
            self.takeover_notices.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Sends gratuitous ARP (request and reply) for each VIP.
    pub fn announce(&self, our_mac: [u8; 6], vips: &[Ipv4Addr]) -> io::Result<()> {
        for vip in vips {
            for a in Arp::gratuitous(our_mac, *vip) {
                self.send(&a, BROADCAST)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A request "who has 192.0.2.100? tell 192.0.2.10" from 02:00:00:00:00:0a, as captured.
    const REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 192, 0, 2, 10, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 100,
    ];

    #[test]
    fn parses_a_request_and_rebuilds_the_same_bytes() {
        let a = Arp::parse(&REQUEST).unwrap();
        assert_eq!(a.op, ARP_REQUEST);
        assert_eq!(a.sender_ip, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(a.target_ip, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(a.to_frame(BROADCAST), REQUEST);
    }

    #[test]
    fn answers_only_requests_for_the_vip() {
        let a = Arp::parse(&REQUEST).unwrap();
        let mac = [2, 0, 0, 0, 0, 2];
        let (r, to) = a.answer_for(Ipv4Addr::new(192, 0, 2, 100), mac).unwrap();
        assert_eq!(to, [2, 0, 0, 0, 0, 0x0a]);
        assert_eq!(r.op, ARP_REPLY);
        assert_eq!(r.sender_mac, mac);
        assert_eq!(r.sender_ip, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(r.target_ip, Ipv4Addr::new(192, 0, 2, 10));
        assert!(a.answer_for(Ipv4Addr::new(192, 0, 2, 101), mac).is_none());
        let reply = Arp { op: ARP_REPLY, ..a };
        assert!(
            reply
                .answer_for(Ipv4Addr::new(192, 0, 2, 100), mac)
                .is_none()
        );
    }

    #[test]
    fn an_rfc_5227_probe_for_the_vip_is_answered_and_our_own_frames_are_not() {
        let probe = Arp {
            sender_ip: Ipv4Addr::UNSPECIFIED,
            ..Arp::parse(&REQUEST).unwrap()
        };
        let mac = [2, 0, 0, 0, 0, 2];
        let (r, to) = probe
            .answer_for(Ipv4Addr::new(192, 0, 2, 100), mac)
            .unwrap();
        assert_eq!(to, probe.sender_mac);
        assert_eq!(r.target_ip, Ipv4Addr::UNSPECIFIED);
        let ours = Arp {
            sender_mac: mac,
            ..probe
        };
        assert!(
            ours.answer_for(Ipv4Addr::new(192, 0, 2, 100), mac)
                .is_none()
        );
    }

    #[test]
    fn a_marked_frame_carries_its_mark_and_a_plain_or_padded_one_none() {
        let m = Mark {
            priority: 150,
            primary: Ipv4Addr::new(192, 0, 2, 2),
            vrid: 51,
        };
        let mut marked = REQUEST.to_vec();
        marked.extend_from_slice(&m.encode());
        marked.resize(60, 0);
        assert_eq!(Arp::parse(&marked).unwrap().mark, Some(m));
        assert_eq!(Arp::parse(&REQUEST).unwrap().mark, None);
        let mut padded = REQUEST.to_vec();
        padded.resize(60, 0);
        assert_eq!(Arp::parse(&padded).unwrap().mark, None);
    }

    #[test]
    fn the_mark_survives_the_wire_and_nothing_else_decodes_as_one() {
        let m = Mark {
            priority: 150,
            primary: Ipv4Addr::new(192, 0, 2, 2),
            vrid: 51,
        };
        assert_eq!(Mark::decode(&m.encode()), Some(m));
        assert_eq!(Mark::decode(&[0; 18]), None, "ordinary padding");
        assert_eq!(Mark::decode(&m.encode()[..11]), None, "cut short");
        let mut v2 = m.encode();
        v2[4] = 2;
        assert_eq!(Mark::decode(&v2), None, "another version");
    }

    #[test]
    fn truncated_or_foreign_frames_are_not_arp() {
        assert!(Arp::parse(&REQUEST[..41]).is_none());
        let mut ipv6 = REQUEST;
        ipv6[16] = 0x86;
        assert!(Arp::parse(&ipv6).is_none());
    }

    #[test]
    fn gratuitous_arp_names_the_vip_as_sender_and_target() {
        for g in Arp::gratuitous([2; 6], Ipv4Addr::new(192, 0, 2, 100)) {
            assert_eq!(g.sender_ip, g.target_ip);
            assert_eq!(g.sender_mac, [2; 6]);
        }
    }

    #[test]
    fn macs_parse_and_format() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 10]), "02:00:00:00:00:0a");
    }
}

/// Bounded fuzzing of the ARP parser: whatever arrives on the packet socket.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use crate::fuzz::Rng;

    #[test]
    fn random_mutated_and_truncated_frames_never_panic_and_parsed_ones_round_trip() {
        let valid = Arp::request(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(192, 0, 2, 100),
        )
        .to_frame(BROADCAST);
        for cut in 0..FRAME_LEN {
            assert_eq!(Arp::parse(&valid[..cut]), None, "{cut} bytes");
        }
        let mut rng = Rng::new(0xa2b);
        let mut parsed = 0;
        for case in 0..20_000 {
            let frame = match case % 3 {
                0 => rng.bytes(2 * FRAME_LEN),
                _ => rng.mutate(&valid, &[&[8, 6], &[0, 1, 8, 0, 6, 4], &[0xff; 6]]),
            };
            if let Some(a) = Arp::parse(&frame) {
                parsed += 1;
                // Whatever was accepted is exactly what the frame said.
                assert_eq!(Arp::parse(&a.to_frame(BROADCAST)), Some(a), "case {case}");
                let _ = a.answer_for(Ipv4Addr::new(192, 0, 2, 100), [2; 6]);
            }
        }
        assert!(
            parsed > 100,
            "the mutations reach the accepting path: {parsed}"
        );
    }
}
