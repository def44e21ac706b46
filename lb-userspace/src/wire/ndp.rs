//! IPv6 neighbour discovery as bytes (RFC 4861): neighbour solicitations and
//! advertisements in Ethernet frames, their options, and the checks of sections 7.1.1 and
//! 7.1.2. Pure, on `lb_common::checksum` (the ICMPv6 checksum over the pseudo-header of RFC
//! 8200 section 8.1); the socket is `announce::ndp`.
//!
//! Hand-written in smoltcp's style rather than smoltcp's own `NdiscRepr`: the two messages
//! and two options are ~100 lines, like `wire::arp` next to it, and a whole TCP/IP stack as
//! a dependency for them would be most of its weight unused; the checks (which failure
//! counts as which drop reason) are this crate's counters, not the library's.

use std::net::Ipv6Addr;

use lb_common::checksum::{accumulate, fold};

/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// The only hop limit NDP messages are sent and accepted with (RFC 4861 section 7.1.1).
pub const HOP_LIMIT: u8 = 255;
/// All-nodes multicast, the destination of unsolicited advertisements.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// ICMPv6 type of a neighbour solicitation.
pub const ICMPV6_NS: u8 = 135;
/// ICMPv6 type of a neighbour advertisement.
pub const ICMPV6_NA: u8 = 136;
const IPPROTO_ICMPV6: u8 = 58;
/// Where the IPv6 header starts in the frame, and the ICMPv6 message.
const IP: usize = 14;
const ICMP: usize = IP + 40;
/// NS and NA: the 8-byte ICMPv6 header (type, code, checksum, flags or reserved), then the
/// 16-byte target.
const NDP_MIN_LEN: usize = 24;
const TARGET: std::ops::Range<usize> = 8..24;
/// Option types (RFC 4861 section 4.6.1).
pub const OPT_SOURCE_LLADDR: u8 = 1;
pub const OPT_TARGET_LLADDR: u8 = 2;
/// The option xvip's mark travels in: RFC 4727's first experimental option type (253,
/// "RFC3692-style Experiment 1"), which no standard option will ever use, and which every
/// host skips: RFC 4861 section 4.6 has receivers ignore options they do not know. Its
/// body starts with the mark's magic, so another experiment's 253 is not taken for one.
pub const OPT_MARK: u8 = 253;
/// The mark option's length in units of 8 bytes: type, length and the 24-byte IPv6 mark,
/// padded to 32 bytes.
const OPT_MARK_UNITS: u8 = 4;

/// An xvip node's mark (`wire::mark`) as its neighbour advertisements carry it: the primary
/// address is the link-local address its IPv6 election advertises from.
pub type Mark = crate::wire::mark::Mark<Ipv6Addr>;
/// Advertisement flags (RFC 4861 section 4.4), in the first byte after the checksum.
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

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

/// The ICMPv6 checksum of `msg` (its checksum field as it is) between `src` and `dst`:
/// 0 when the field holds the right value, else the value to store in it.
fn icmp_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum = accumulate(0, &src.octets());
    sum = accumulate(sum, &dst.octets());
    sum = accumulate(sum, &(msg.len() as u32).to_be_bytes());
    sum = accumulate(sum, &[0, 0, 0, IPPROTO_ICMPV6]);
    !fold(accumulate(sum, msg))
}

/// An NDP message as taken apart from its frame, before the type's own checks.
struct Icmp<'a> {
    eth_src: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    /// Type and length checked; the whole ICMPv6 message (the IPv6 payload length of it).
    msg: &'a [u8],
    target: Ipv6Addr,
}

fn addr(b: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))
}

/// The checks every NDP message gets, in counter order: an IPv6 frame carrying ICMPv6 of
/// type `kind`, at least an NS/NA long within the payload length (else `NotNs`); hop limit
/// 255; code 0; the checksum; a unicast target.
fn icmp(frame: &[u8], kind: u8) -> Result<Icmp<'_>, Invalid> {
    let (Some(eth), Some(ip)) = (frame.get(..IP), frame.get(IP..ICMP)) else {
        return Err(Invalid::NotNs);
    };
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if eth[12..14] != ETH_P_IPV6.to_be_bytes() || ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 {
        return Err(Invalid::NotNs);
    }
    let Some(msg) = frame.get(ICMP..ICMP + plen) else {
        return Err(Invalid::NotNs);
    };
    if msg.len() < NDP_MIN_LEN || msg[0] != kind {
        return Err(Invalid::NotNs);
    }
    if ip[7] != HOP_LIMIT {
        return Err(Invalid::HopLimit);
    }
    if msg[1] != 0 {
        return Err(Invalid::Code);
    }
    let (src, dst) = (addr(&ip[8..24]), addr(&ip[24..40]));
    if icmp_checksum(src, dst, msg) != 0 {
        return Err(Invalid::Checksum);
    }
    let target = addr(&msg[TARGET]);
    if target.is_multicast() {
        return Err(Invalid::Target);
    }
    Ok(Icmp {
        eth_src: eth[6..12].try_into().expect("6 bytes"),
        src,
        dst,
        msg,
        target,
    })
}

/// The body (after type and length) of the last option of type `kind` among `opts`, if
/// present; every option must have a non-zero length within the message (section 4.6).
fn option(mut opts: &[u8], kind: u8) -> Result<Option<&[u8]>, Invalid> {
    let mut found = None;
    while !opts.is_empty() {
        let [k, len8, ..] = *opts else {
            return Err(Invalid::Options);
        };
        let len = usize::from(len8) * 8;
        if len == 0 || len > opts.len() {
            return Err(Invalid::Options);
        }
        if k == kind {
            found = Some(&opts[2..len]);
        }
        opts = &opts[len..];
    }
    Ok(found)
}

/// The link-layer address option of type `kind` among `opts`, if present (the last one
/// wins; one of another length than 8 bytes is not an Ethernet address and is skipped).
fn lladdr(opts: &[u8], kind: u8) -> Result<Option<[u8; 6]>, Invalid> {
    Ok(option(opts, kind)?.and_then(|b| b.try_into().ok()))
}

/// An Ethernet frame carrying ICMPv6 `kind` from `src` to `dst` (hop limit 255): the
/// 4 bytes after the checksum are `word`, then `body`; the checksum is computed here.
fn encode(
    eth: ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: u8,
    word: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let (eth_src, eth_dst) = eth;
    let len = 8 + body.len();
    let mut f = Vec::with_capacity(ICMP + len);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(len as u16).to_be_bytes());
    f.extend_from_slice(&[IPPROTO_ICMPV6, HOP_LIMIT]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[kind, 0, 0, 0]);
    f.extend_from_slice(&word);
    f.extend_from_slice(body);
    let sum = icmp_checksum(src, dst, &f[ICMP..]);
    f[ICMP + 2..ICMP + 4].copy_from_slice(&sum.to_be_bytes());
    f
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
        let m = icmp(frame, ICMPV6_NS)?;
        let source_lladdr = lladdr(&m.msg[TARGET.end..], OPT_SOURCE_LLADDR)?;
        if m.src.is_unspecified() && (m.dst != solicited_node(m.target) || source_lladdr.is_some())
        {
            return Err(Invalid::Dad);
        }
        Ok(Self {
            eth_src: m.eth_src,
            src: m.src,
            dst: m.dst,
            target: m.target,
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
        self.to_frame_marked(None)
    }

    /// [`Advertisement::to_frame`] with `mark` (when given) in an [`OPT_MARK`] option after
    /// the link-layer address, inside the checksum.
    pub fn to_frame_marked(&self, mark: Option<Mark>) -> Vec<u8> {
        let mut body = vec![0u8; 24];
        body[..16].copy_from_slice(&self.target.octets());
        body[16] = OPT_TARGET_LLADDR;
        body[17] = 1; // 8 bytes
        body[18..24].copy_from_slice(&self.eth_src);
        if let Some(m) = mark {
            let at = body.len();
            body.resize(at + usize::from(OPT_MARK_UNITS) * 8, 0);
            body[at] = OPT_MARK;
            body[at + 1] = OPT_MARK_UNITS;
            body[at + 2..at + 2 + Mark::LEN].copy_from_slice(&m.encode());
        }
        let flags = FLAG_OVERRIDE | if self.solicited { FLAG_SOLICITED } else { 0 };
        encode(
            (self.eth_src, self.eth_dst),
            self.target,
            self.dst,
            ICMPV6_NA,
            [flags, 0, 0, 0],
            &body,
        )
    }
}

/// A checked neighbour advertisement someone sent (RFC 4861 section 7.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertised {
    pub eth_src: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    pub solicited: bool,
    pub override_: bool,
    /// The target link-layer address option, if present.
    pub target_lladdr: Option<[u8; 6]>,
    /// An xvip sender's mark ([`OPT_MARK`]), if present and well-formed.
    pub mark: Option<Mark>,
}

impl Advertised {
    /// Takes apart and checks a whole Ethernet frame: hop limit 255, code 0, checksum, a
    /// unicast target, well-formed options, and Solicited clear when sent to a multicast
    /// address.
    ///
    /// # Errors
    /// The first check that fails (`NotNs` standing for "not an advertisement").
    pub fn parse(frame: &[u8]) -> Result<Self, Invalid> {
        let m = icmp(frame, ICMPV6_NA)?;
        let flags = m.msg[4];
        let opts = &m.msg[TARGET.end..];
        let target_lladdr = lladdr(opts, OPT_TARGET_LLADDR)?;
        let mark = option(opts, OPT_MARK)?.and_then(Mark::decode);
        let solicited = flags & FLAG_SOLICITED != 0;
        if solicited && m.dst.is_multicast() {
            return Err(Invalid::Target);
        }
        Ok(Self {
            eth_src: m.eth_src,
            src: m.src,
            dst: m.dst,
            target: m.target,
            solicited,
            override_: flags & FLAG_OVERRIDE != 0,
            target_lladdr,
            mark,
        })
    }

    /// The link-layer address it claims the target is at: the option, else the frame's
    /// source.
    pub fn claimed_mac(&self) -> [u8; 6] {
        self.target_lladdr.unwrap_or(self.eth_src)
    }
}

/// A duplicate address detection probe for `target` from `our_mac` (RFC 4862 section
/// 5.4.2): a solicitation from the unspecified address to the target's solicited-node
/// group, without a source link-layer option, so no host learns anything from it. Returns
/// the frame and its Ethernet destination.
pub fn dad_probe(our_mac: [u8; 6], target: Ipv6Addr) -> (Vec<u8>, [u8; 6]) {
    let group = solicited_node(target);
    let eth_dst = multicast_mac(group);
    let f = encode(
        (our_mac, eth_dst),
        Ipv6Addr::UNSPECIFIED,
        group,
        ICMPV6_NS,
        [0; 4],
        &target.octets(),
    );
    (f, eth_dst)
}

/// A solicitation for `target` from `src` (our link-local address) and `our_mac`, to the
/// target's solicited-node group, with our source link-layer address: whoever answers for
/// `target` answers us (the claims' probe, `announce::claims`). Returns the frame and its
/// Ethernet destination.
pub fn solicitation(our_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> (Vec<u8>, [u8; 6]) {
    let group = solicited_node(target);
    let eth_dst = multicast_mac(group);
    let mut body = [0u8; 24];
    body[..16].copy_from_slice(&target.octets());
    body[16] = OPT_SOURCE_LLADDR;
    body[17] = 1;
    body[18..24].copy_from_slice(&our_mac);
    let f = encode((our_mac, eth_dst), src, group, ICMPV6_NS, [0; 4], &body);
    (f, eth_dst)
}

/// The target and the Ethernet source of a valid neighbour advertisement, else `None`.
pub fn advertised(frame: &[u8]) -> Option<(Ipv6Addr, [u8; 6])> {
    Advertised::parse(frame).ok().map(|a| (a.target, a.eth_src))
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
        // etherparse's own reading agrees (an independent implementation).
        let p = etherparse::SlicedPacket::from_ethernet(&na).unwrap();
        let Some(etherparse::TransportSlice::Icmpv6(icmp)) = p.transport else {
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

    /// What another node's advertisement says, read back; the flags and options checked.
    #[test]
    fn advertisements_are_read_with_their_flags_and_target_address() {
        let f = Solicitation::parse(&NS)
            .unwrap()
            .answer(&[VIP], OUR_MAC)
            .unwrap()
            .to_frame();
        let a = Advertised::parse(&f).unwrap();
        assert_eq!(
            a,
            Advertised {
                eth_src: OUR_MAC,
                src: VIP,
                dst: CLIENT,
                target: VIP,
                solicited: true,
                override_: true,
                target_lladdr: Some(OUR_MAC),
                mark: None,
            }
        );
        assert_eq!(a.claimed_mac(), OUR_MAC);
        // Solicited to a multicast destination: invalid (RFC 4861 section 7.1.2).
        let mut m = Advertisement::unsolicited(VIP, OUR_MAC);
        m.solicited = true;
        assert_eq!(Advertised::parse(&m.to_frame()), Err(Invalid::Target));
        // A solicitation is not an advertisement, and the reverse.
        assert_eq!(Advertised::parse(&NS), Err(Invalid::NotNs));
        assert_eq!(Solicitation::parse(&f), Err(Invalid::NotNs));
        for n in 0..f.len() {
            assert!(Advertised::parse(&f[..n]).is_err(), "{n} bytes");
        }
    }

    /// Our mark rides in option 253 inside the checksum; etherparse (an independent reader)
    /// still takes the frame as a valid NA, and a host's parser skipping unknown options
    /// finds the same link-layer address.
    #[test]
    fn the_mark_option_is_read_back_and_ignored_by_others() {
        let mark = Mark {
            priority: 150,
            primary: "fe80::2".parse().unwrap(),
            vrid: 51,
        };
        let f = Advertisement::unsolicited(VIP, OUR_MAC).to_frame_marked(Some(mark));
        assert_eq!(f.len(), 86 + 32);
        assert_eq!(&f[86..88], &[OPT_MARK, 4]);
        let a = Advertised::parse(&f).unwrap();
        assert_eq!(a.mark, Some(mark));
        assert_eq!(a.target_lladdr, Some(OUR_MAC));
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("not ICMPv6")
        };
        assert!(icmp.is_checksum_valid(VIP.octets(), ALL_NODES.octets()));
        // Unmarked, or another experiment's option 253: no mark.
        let plain = Advertisement::unsolicited(VIP, OUR_MAC).to_frame();
        assert_eq!(Advertised::parse(&plain).unwrap().mark, None);
        let mut other = f.clone();
        other[88] = b'Y';
        let sum = icmp_checksum(VIP, ALL_NODES, &{
            let mut m = other[ICMP..].to_vec();
            m[2] = 0;
            m[3] = 0;
            m
        });
        other[ICMP + 2..ICMP + 4].copy_from_slice(&sum.to_be_bytes());
        let a = Advertised::parse(&other).unwrap();
        assert_eq!((a.mark, a.target_lladdr), (None, Some(OUR_MAC)));
        for n in 0..f.len() {
            assert!(Advertised::parse(&f[..n]).is_err(), "{n} bytes");
        }
    }

    #[test]
    fn the_claims_probe_is_a_solicitation_from_our_link_local() {
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        let (f, to) = solicitation(OUR_MAC, ll, VIP);
        assert_eq!(to, multicast_mac(solicited_node(VIP)));
        let s = Solicitation::parse(&f).unwrap();
        assert_eq!(
            (s.src, s.dst, s.target, s.source_lladdr),
            (ll, solicited_node(VIP), VIP, Some(OUR_MAC))
        );
        // Answered as any solicitation: to us, solicited.
        let na = s.answer(&[VIP], CLIENT_MAC).unwrap();
        assert_eq!((na.eth_dst, na.dst, na.solicited), (OUR_MAC, ll, true));
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
}

/// Bounded fuzzing of the parsers: whatever arrives on the packet socket.
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
            let _ = Advertised::parse(&frame);
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
        let b = etherparse::PacketBuilder::ethernet2(s.eth_src, multicast_mac(s.dst))
            .ipv6(s.src.octets(), s.dst.octets(), HOP_LIMIT)
            .icmpv6(etherparse::Icmpv6Type::NeighborSolicitation);
        let mut out = Vec::new();
        b.write(&mut out, &body).unwrap();
        out
    }
}
