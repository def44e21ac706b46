//! All raw packet access: a bounds-checked view of the frame and the parser that turns it
//! into offsets and the flow's fields. Nothing outside this module dereferences packet memory
//! without going through [`Frame::ptr`].

use core::mem::size_of;

use lb_common::{
    ADDR_FLAG_VIP, ADDR_KEY_DNAT_PRESENT, ADDR_SLOT_OVERFLOW, Addr, IPPROTO_ICMP, IPPROTO_TCP,
    IPPROTO_UDP, Ip6, MAX_IPV6_EXT_HEADERS, Reason, hash::addr_slot, vlan_tag,
};
use network_types::{
    eth::EthHdr,
    icmp::Icmpv4Hdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

use crate::{
    Verdict,
    ctx::Ctx,
    family::Family,
    maps::{VIP_ADDRS, VIP_ADDRS6, VIP_SLOTS, VIP_SLOTS6},
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// IPv6 extension headers the parser walks (RFC 8200 section 4).
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_DEST_OPTS: u8 = 60;
/// The fragment header's offset field (host-order word at bytes 2..4): offset in 8-byte
/// units, above the two reserved bits and the M flag.
const IP6_OFFSET_MASK: u16 = 0xfff8;
/// Offset of the checksum in a UDP header.
pub const UDP_CHECK: usize = 6;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// IPv4 "more fragments" flag and fragment offset mask, in the host-order `frags` word.
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;
/// Offset of the flags byte within the fixed TCP header.
pub const TCP_FLAGS_OFFSET: usize = 13;
/// Offset of the data-offset byte (header length in 32-bit words, high nibble).
pub const TCP_DOFF_OFFSET: usize = 12;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A bounds-checked view of the frame.
pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new<C: Ctx>(ctx: &C) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// A pointer to a `T` at byte `off`, or `None` when the frame is too short.
    #[inline(always)]
    pub fn ptr<T>(&self, off: usize) -> Option<*mut T> {
        if self.start + off + size_of::<T>() > self.end {
            return None;
        }
        Some((self.start + off) as *mut T)
    }

    /// Length of the whole frame in bytes (the tc entry makes the whole skb linear).
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }
}

/// What the parser found: pointers to the checked headers and the fields decisions are made
/// on. The pointers are kept (not offsets) because the verifier only trusts the register a
/// bounds check was made on: recomputing `data + offset` later loses that proof once the
/// compiler drops the "redundant" second check.
pub struct Headers<A: Family> {
    pub eth: *mut EthHdr,
    /// The 802.1Q/802.1ad header, or null for an untagged frame.
    pub vlan_hdr: *mut VlanHdr,
    /// The frame's tag as `lb_common::vlan_tag` encodes it (0: untagged).
    pub vlan: u32,
    pub ip: *mut A::IpHdr,
    /// The transport (or ICMP) header; at least `TcpHdr::LEN`, `UdpHdr::LEN` or
    /// `Icmpv4Hdr::LEN` bytes are in the frame, according to `proto`.
    pub l4: *mut u8,
    /// Offset of the transport header from the start of the frame.
    pub l4_off: usize,
    /// Offset of the end of the IPv4 datagram (`l3 + total length`): later bytes are
    /// Ethernet padding.
    pub l3_end: usize,
    pub proto: u8,
    /// The family's copy of the addresses, if it keeps one (see `Family::Addrs`): read
    /// them with [`Headers::src`] and [`Headers::dst`]. Ports raw, as on the wire.
    pub addrs: A::Addrs,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// TCP: the segment's sequence number and the one after it (payload, SYN and FIN
    /// counted), host order; zero otherwise.
    pub seq: u32,
    pub seq_end: u32,
    /// TTL (IPv6: hop limit).
    pub ttl: u8,
    /// `VIP_ADDRS` flags of the destination address.
    pub dst_flags: u32,
}

impl<A: Family> Headers<A> {
    /// The source address as received (raw).
    #[inline(always)]
    pub fn src(&self) -> A {
        A::src(self)
    }
    /// The destination address as received (raw). IPv6 reads it from the frame: read it
    /// before the header is rewritten.
    #[inline(always)]
    pub fn dst(&self) -> A {
        A::dst(self)
    }
}

pub enum Parsed<A: Family> {
    /// TCP or UDP.
    Flow(Headers<A>),
    /// ICMP or ICMPv6 (ports zero).
    Icmp(Headers<A>),
}

/// The Ethernet header and the optional tag in front of the IP header at `l3`.
pub struct L2 {
    pub eth: *mut EthHdr,
    pub vlan_hdr: *mut VlanHdr,
    pub vlan: u32,
    pub l3: usize,
    /// The EtherType after the tag (host order).
    pub ether_type: u16,
}

/// Whether the frame's EtherType (after a tag) is IPv6's.
#[inline(always)]
pub fn is_ipv6(l2: &L2) -> bool {
    l2.ether_type == ETH_P_IPV6
}

/// Ethernet and at most one 802.1Q/802.1ad tag.
#[inline(always)]
pub fn l2(frame: &Frame) -> Result<L2, Verdict> {
    let eth: *mut EthHdr = frame.ptr(0).ok_or(Verdict::pass(Reason::PassMalformed))?;
    // SAFETY: `eth` is within the frame.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3 = EthHdr::LEN;
    let (mut vlan_hdr, mut vlan) = (core::ptr::null_mut(), 0);
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let v: *mut VlanHdr = frame.ptr(l3).ok_or(Verdict::pass(Reason::PassMalformed))?;
        // SAFETY: checked above.
        let tci = unsafe {
            ether_type = u16::from_be((*v).ether_type);
            u16::from_be_bytes((*v).tci)
        };
        vlan = vlan_tag(u16::from_be(unsafe { (*eth).ether_type }), tci);
        vlan_hdr = v;
        l3 += VlanHdr::LEN;
    }
    Ok(L2 {
        eth,
        vlan_hdr,
        vlan,
        l3,
        ether_type,
    })
}

/// The verdict for a broken frame to `dst_flags`: only a VIP's broken frames are dropped
/// (a SNAT address may be the node's own, and the node's fragments, tunnels and other
/// protocols must reach it).
#[inline(always)]
fn fail(dst_flags: u32, reason_ours: Reason) -> Verdict {
    if dst_flags & ADDR_FLAG_VIP != 0 {
        Verdict::drop(reason_ours)
    } else {
        Verdict::pass(Reason::PassNotForVip)
    }
}

/// Parses Ethernet (one VLAN tag), IPv4 (options honoured) and the TCP/UDP/ICMP header.
/// Frames that are not ours are passed untouched; frames for a VIP that are broken are
/// dropped. Traffic for any address that is neither a VIP nor a SNAT address costs one
/// lookup, unless a DNAT VIP exists (its replies go to client addresses).
#[inline(always)]
pub fn parse(frame: &Frame) -> Result<Parsed<u32>, Verdict> {
    let L2 {
        eth,
        vlan_hdr,
        vlan,
        l3,
        ether_type,
    } = l2(frame)?;
    if ether_type != ETH_P_IP {
        return Err(Verdict::pass(Reason::PassNotIpv4));
    }
    let ip: *mut Ipv4Hdr = frame.ptr(l3).ok_or(Verdict::pass(Reason::PassMalformed))?;
    // SAFETY: the fixed 20 bytes are within the frame.
    let (vihl, dst, src, proto, ttl, frags, tot_len) = unsafe {
        (
            (*ip).vihl,
            u32::from_ne_bytes((*ip).dst_addr),
            u32::from_ne_bytes((*ip).src_addr),
            (*ip).proto,
            (*ip).ttl,
            u16::from_be_bytes((*ip).frags),
            u16::from_be_bytes((*ip).tot_len) as usize,
        )
    };

    let dst_flags = addr_flags(dst);
    let ours = dst_flags != 0 || (dnat_present() && maybe_reply(src, proto));
    if !ours {
        return Err(Verdict::pass(Reason::PassNotForVip));
    }
    let fail = |reason_ours: Reason| fail(dst_flags, reason_ours);

    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || tot_len < ihl {
        return Err(fail(Reason::DropBadHeader));
    }
    // The options and the datagram must be in the frame; bytes after `l3_end` are
    // Ethernet padding and never read as headers.
    let l3_end = l3 + tot_len;
    if l3_end > frame.len() {
        return Err(fail(Reason::DropTruncated));
    }
    if frags & (IP_MF | IP_OFFSET_MASK) != 0 {
        return Err(fail(Reason::DropFragment));
    }
    let l4 = l3 + ihl;
    let h = Headers {
        eth,
        vlan_hdr,
        vlan,
        ip,
        l4: core::ptr::null_mut(),
        l4_off: l4,
        l3_end,
        proto,
        addrs: [src, dst],
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        seq: 0,
        seq_end: 0,
        ttl,
        dst_flags,
    };
    let h = parse_l4(frame, h, IPPROTO_ICMP)?;
    Ok(if h.proto == IPPROTO_ICMP {
        Parsed::Icmp(h)
    } else {
        Parsed::Flow(h)
    })
}

/// The transport header of either family: TCP (data offset honoured) and UDP within the
/// datagram, or the family's ICMP (`icmp`); anything else is an unknown protocol.
#[inline(always)]
fn parse_l4<A: Family>(frame: &Frame, mut h: Headers<A>, icmp: u8) -> Result<Headers<A>, Verdict> {
    let (l4, l3_end, dst_flags) = (h.l4_off, h.l3_end, h.dst_flags);
    let fail = |reason_ours: Reason| fail(dst_flags, reason_ours);
    match h.proto {
        IPPROTO_TCP => {
            let tcp: *mut TcpHdr = frame.ptr(l4).ok_or(fail(Reason::DropTruncated))?;
            within(l4 + TcpHdr::LEN, l3_end).ok_or(fail(Reason::DropTruncated))?;
            h.l4 = tcp.cast();
            // SAFETY: the whole fixed header (which holds the flags byte) is checked above.
            let doff = unsafe {
                h.sport = u16::from_ne_bytes((*tcp).source);
                h.dport = u16::from_ne_bytes((*tcp).dest);
                h.tcp_flags = *(tcp as *const u8).add(TCP_FLAGS_OFFSET);
                h.seq = u32::from_be_bytes((*tcp).seq);
                ((*(tcp as *const u8).add(TCP_DOFF_OFFSET) >> 4) as usize) * 4
            };
            if doff < TcpHdr::LEN || l4 + doff > l3_end {
                return Err(fail(Reason::DropBadHeader));
            }
            let payload = (l3_end - l4 - doff) as u32;
            let syn_fin = (h.tcp_flags & TCP_SYN != 0) as u32 + (h.tcp_flags & TCP_FIN != 0) as u32;
            h.seq_end = h.seq.wrapping_add(payload).wrapping_add(syn_fin);
            Ok(h)
        }
        IPPROTO_UDP => {
            let udp: *mut UdpHdr = frame.ptr(l4).ok_or(fail(Reason::DropTruncated))?;
            within(l4 + UdpHdr::LEN, l3_end).ok_or(fail(Reason::DropTruncated))?;
            h.l4 = udp.cast();
            // SAFETY: checked above.
            unsafe {
                h.sport = u16::from_ne_bytes((*udp).src);
                h.dport = u16::from_ne_bytes((*udp).dst);
                // IPv6 has no "no checksum" (RFC 8200 section 8.1): a zero one is invalid.
                if A::UDP_CHECKSUM_REQUIRED
                    && *(udp as *const u8).add(UDP_CHECK) == 0
                    && *(udp as *const u8).add(UDP_CHECK + 1) == 0
                {
                    return Err(fail(Reason::DropBadHeader));
                }
            }
            Ok(h)
        }
        p if p == icmp => {
            let ih: *mut Icmpv4Hdr = frame.ptr(l4).ok_or(fail(Reason::DropTruncated))?;
            within(l4 + Icmpv4Hdr::LEN, l3_end).ok_or(fail(Reason::DropTruncated))?;
            h.l4 = ih.cast();
            Ok(h)
        }
        _ => Err(fail(Reason::DropUnknownProto)),
    }
}

/// IPv6: the fixed header, then at most `MAX_IPV6_EXT_HEADERS` extension headers
/// (hop-by-hop, routing, destination options, fragment), then the transport header. A
/// routing header with segments left means the VIP is not the final destination; a
/// fragment with a non-zero offset has no ports; a first fragment is translated when its
/// transport header is TCP or UDP and whole in it (the checksum update is the same for a
/// fragmented datagram). The rules for whose broken frames drop are IPv4's.
#[inline(always)]
pub fn parse6(frame: &Frame, class: u32) -> Result<Parsed<Ip6>, Verdict> {
    let L2 {
        eth,
        vlan_hdr,
        vlan,
        l3,
        ..
    } = l2(frame)?;
    let ip: *mut Ipv6Hdr = frame.ptr(l3).ok_or(Verdict::pass(Reason::PassMalformed))?;
    // SAFETY: the fixed 40 bytes are within the frame.
    let (vcf0, mut nh, ttl, payload_len) = unsafe {
        (
            (*ip).vcf[0],
            (*ip).next_hdr,
            (*ip).hop_limit,
            u16::from_be_bytes((*ip).payload_len) as usize,
        )
    };
    // From `classify6`, before this function's frame.
    let dst_flags = class & !V6_MAYBE_DNAT_REPLY;
    if class == 0 {
        return Err(Verdict::pass(Reason::PassNotForVip));
    }
    let fail = |reason_ours: Reason| fail(dst_flags, reason_ours);
    if vcf0 >> 4 != 6 {
        return Err(fail(Reason::DropBadHeader));
    }
    let l3_end = l3 + Ipv6Hdr::LEN + payload_len;
    if l3_end > frame.len() {
        return Err(fail(Reason::DropTruncated));
    }
    let mut off = l3 + Ipv6Hdr::LEN;
    let mut fragment = false;
    for i in 0..MAX_IPV6_EXT_HEADERS {
        if nh != NH_HOP_BY_HOP && nh != NH_ROUTING && nh != NH_DEST_OPTS && nh != NH_FRAGMENT {
            break;
        }
        // Every extension header is at least 8 bytes: next header, length, ...
        let e: *mut [u8; 8] = ptr_within(frame, off, l3_end).ok_or(fail(Reason::DropTruncated))?;
        // SAFETY: checked above.
        let (next, len8, b2, b3) = unsafe { ((*e)[0], (*e)[1], (*e)[2], (*e)[3]) };
        if nh == NH_HOP_BY_HOP && i != 0 {
            // Hop-by-hop options only ever come first (RFC 8200 section 4.1).
            return Err(fail(Reason::DropBadHeader));
        }
        if nh == NH_FRAGMENT {
            if u16::from_be_bytes([b2, b3]) & IP6_OFFSET_MASK != 0 {
                return Err(fail(Reason::DropFragment));
            }
            fragment = true;
            off += 8;
        } else {
            if nh == NH_ROUTING && b3 != 0 {
                return Err(fail(Reason::DropExtHeader));
            }
            off += (len8 as usize + 1) * 8;
        }
        nh = next;
    }
    if nh == NH_HOP_BY_HOP || nh == NH_ROUTING || nh == NH_DEST_OPTS || nh == NH_FRAGMENT {
        return Err(fail(Reason::DropExtHeader));
    }
    if off > l3_end {
        return Err(fail(Reason::DropTruncated));
    }
    // Every way through the extension headers ends with its own exactly known offset, and
    // the verifier would check the whole rest of the program once for each. Passed through
    // memory it loses what the verifier knows of it, and one bound makes all ways one.
    let off = launder(off);
    if off > MAX_L4_OFFSET {
        return Err(fail(Reason::DropExtHeader));
    }
    if fragment && nh != IPPROTO_TCP && nh != IPPROTO_UDP {
        return Err(fail(Reason::DropFragment));
    }
    let h = Headers {
        eth,
        vlan_hdr,
        vlan,
        ip,
        l4: core::ptr::null_mut(),
        l4_off: off,
        l3_end,
        proto: nh,
        addrs: (),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        seq: 0,
        seq_end: 0,
        ttl,
        dst_flags,
    };
    let h = match parse_l4(frame, h, lb_common::IPPROTO_ICMPV6) {
        Ok(h) => h,
        // A first fragment too short for its transport header: one of a fragment's kind.
        Err(v) if fragment && v.action != aya_ebpf::bindings::xdp_action::XDP_PASS => {
            return Err(fail(Reason::DropFragment));
        }
        Err(v) => return Err(v),
    };
    Ok(if h.proto == lb_common::IPPROTO_ICMPV6 {
        Parsed::Icmp(h)
    } else {
        Parsed::Flow(h)
    })
}

/// A pointer to a `T` at frame offset `off` when it also ends before `limit`, a bound
/// tighter than the frame (the end of the IPv4 datagram). Used for the headers quoted in
/// ICMP errors, whose offsets depend on two IHLs.
#[inline(always)]
pub fn ptr_within<T>(frame: &Frame, off: usize, limit: usize) -> Option<*mut T> {
    // The frame check first: were the tighter one first, the compiler could prove the
    // frame check redundant (`limit` is within the frame) and drop the only check the
    // verifier understands.
    let p = frame.ptr(off)?;
    within(off + size_of::<T>(), limit)?;
    Some(p)
}

/// `Some` when `end <= limit` (offsets, not pointers: see [`ptr_within`] for the order).
#[inline(always)]
fn within(end: usize, limit: usize) -> Option<()> {
    (end <= limit).then_some(())
}

/// `VIP_ADDRS` flags of `addr` (0: not ours), from its `VIP_SLOTS` slot when the slot is
/// its alone, from `VIP_ADDRS` when the slot is shared.
#[inline(always)]
pub fn addr_flags(addr: u32) -> u32 {
    let v = VIP_SLOTS.get(addr_slot(addr)).copied().unwrap_or(0);
    if v == 0 {
        return 0;
    }
    let flags = v as u32;
    if flags & ADDR_SLOT_OVERFLOW != 0 {
        // SAFETY: map lookup of a plain value.
        return unsafe { VIP_ADDRS.get(&addr) }.copied().unwrap_or(0);
    }
    if (v >> 32) as u32 == addr { flags } else { 0 }
}

/// Whether a packet to an address of no flags (while a DNAT VIP exists) may be ours: only
/// a DNAT reply (TCP or UDP from a backend) or an ICMP error about a flow is. One inlined
/// `BACKEND_SLOTS` read rejects the node's other TCP and UDP traffic before the reply
/// lookups and the clock read.
#[inline(always)]
pub fn maybe_reply(src: u32, proto: u8) -> bool {
    (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || maybe_backend(src)
}

/// `classify6` bit: the destination has no flags, but the packet may be a DNAT reply (a
/// v6 DNAT VIP exists and `maybe_reply` holds). Above every `ADDR_FLAG_*`.
pub const V6_MAYBE_DNAT_REPLY: u32 = 1 << 30;
const _: () = assert!(
    V6_MAYBE_DNAT_REPLY & (ADDR_FLAG_VIP | lb_common::ADDR_FLAG_SNAT | ADDR_SLOT_OVERFLOW) == 0
);

/// What `parse6` needs to know of an IPv6 destination before parsing: its `ADDR_FLAG_*`
/// (`addr_flags6`), or for an address of none `V6_MAYBE_DNAT_REPLY` when it may be a DNAT
/// reply. `maybe_reply` for IPv6 sees the transport before the extension headers only when
/// there are none: TCP and UDP right after the fixed header are tested, anything else may
/// be ours. Its own function (not inlined), called before `process6`: the IPv6 path's stack
/// has no room for the slot reads, and `parse6` receives the answer. A frame too short to
/// tell gets `V6_MAYBE_DNAT_REPLY` (the parser refuses it).
#[inline(never)]
pub fn classify6<C: Ctx>(ctx: *mut C::Raw) -> u32 {
    // The context read here, volatile: read in the caller (as the compiler would move
    // them), the frame's end would arrive as a plain number the verifier refuses.
    let (start, end) = C::bounds(ctx);
    let frame = Frame { start, end };
    let Ok(l2) = l2(&frame) else {
        return V6_MAYBE_DNAT_REPLY;
    };
    let Some(ip) = frame.ptr::<Ipv6Hdr>(l2.l3) else {
        return V6_MAYBE_DNAT_REPLY;
    };
    // SAFETY: the fixed header is within the frame.
    let flags = addr_flags6(load_ip6(unsafe { &raw const (*ip).dst_addr }));
    if flags != 0 {
        return flags;
    }
    // SAFETY: as above.
    let nh = unsafe { (*ip).next_hdr };
    let maybe = (nh != IPPROTO_TCP && nh != IPPROTO_UDP)
        // SAFETY: as above.
        || maybe_backend(load_ip6(unsafe { &raw const (*ip).src_addr }));
    if maybe && dnat_present6() {
        V6_MAYBE_DNAT_REPLY
    } else {
        0
    }
}

/// Whether `addr` may be a backend of its family: its `BACKEND_SLOTS` slot has the
/// family's bit (a slot shared with a backend says yes; the reply lookups then decide).
#[inline(always)]
pub fn maybe_backend<A: Addr>(addr: A) -> bool {
    crate::maps::BACKEND_SLOTS
        .get(addr.backend_slot())
        .is_some_and(|v| v & A::BACKEND_SLOT_BIT != 0)
}

/// True when some VIP uses DNAT (kept as a `VIP_ADDRS` entry under address 0).
#[inline(always)]
pub fn dnat_present() -> bool {
    addr_flags(ADDR_KEY_DNAT_PRESENT) != 0
}

/// The transport header of an IPv6 packet to a VIP must start within this many bytes of
/// the frame (room for a tag, the fixed header and some 400 bytes of extension headers).
const MAX_L4_OFFSET: usize = 512;

/// `v`, as the verifier sees a value read from a map: any number (see `parse6`).
#[inline(always)]
fn launder(v: usize) -> usize {
    match crate::maps::SCRATCH6.get_ptr_mut(0) {
        // SAFETY: this CPU's scratch, used within this packet only.
        Some(s) => unsafe {
            let p = &raw mut (*s).l4_off;
            core::ptr::write_volatile(p, v as u32);
            core::ptr::read_volatile(p) as usize
        },
        None => v,
    }
}

/// Reads an IPv6 address out of the frame with four 32-bit loads. The address sits at an
/// even, not always 4-aligned, frame offset (Ethernet 14 bytes): the BPF target would
/// compile an unaligned read to sixteen byte loads and spill each byte into a stack slot
/// of its own (the IPv6 path's stack is tight), and the verifier accepts misaligned
/// packet loads on the architectures xvip runs on (no strict alignment: x86-64, arm64).
#[inline(always)]
pub fn load_ip6(p: *const [u8; 16]) -> Ip6 {
    let w = p.cast::<u32>();
    // SAFETY: within the 16 bytes the caller checked (alignment: see above).
    unsafe {
        [
            core::ptr::read_volatile(w),
            core::ptr::read_volatile(w.add(1)),
            core::ptr::read_volatile(w.add(2)),
            core::ptr::read_volatile(w.add(3)),
        ]
    }
}

/// Writes an IPv6 address into the frame with four 32-bit stores (see [`load_ip6`]).
#[inline(always)]
pub fn store_ip6(p: *mut [u8; 16], a: Ip6) {
    let w = p.cast::<u32>();
    // SAFETY: as in `load_ip6`.
    unsafe {
        core::ptr::write_volatile(w, a[0]);
        core::ptr::write_volatile(w.add(1), a[1]);
        core::ptr::write_volatile(w.add(2), a[2]);
        core::ptr::write_volatile(w.add(3), a[3]);
    }
}

/// `VIP_ADDRS6` flags of an IPv6 address (0: not ours), from its `VIP_SLOTS6` slot when the
/// slot is its alone, from `VIP_ADDRS6` when the slot is shared.
#[inline(always)]
pub fn addr_flags6(addr: Ip6) -> u32 {
    let Some(s) = VIP_SLOTS6.get(lb_common::hash::addr_slot6(addr)) else {
        return 0;
    };
    if s.flags & ADDR_SLOT_OVERFLOW != 0 {
        // SAFETY: map lookup of a plain value.
        return unsafe { VIP_ADDRS6.get(&addr) }.copied().unwrap_or(0);
    }
    if s.addr == addr { s.flags } else { 0 }
}

/// True when some IPv6 VIP uses DNAT (a `VIP_ADDRS6` entry under `::`).
#[inline(always)]
pub fn dnat_present6() -> bool {
    addr_flags6(Ip6::ZERO) != 0
}
