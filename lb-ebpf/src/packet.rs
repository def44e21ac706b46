//! All raw packet access: a bounds-checked view of the frame and the parser that turns it
//! into offsets and the flow's fields. Nothing outside this module dereferences packet memory
//! without going through [`Frame::ptr`].

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    ADDR_FLAG_VIP, ADDR_KEY_DNAT_PRESENT, ADDR_SLOT_OVERFLOW, IPPROTO_ICMP, IPPROTO_TCP,
    IPPROTO_UDP, Reason, hash::addr_slot, vlan_tag,
};
use network_types::{
    eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr,
};

use crate::{
    Verdict,
    family::Family,
    maps::{VIP_ADDRS, VIP_SLOTS},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// IPv4 "more fragments" flag and fragment offset mask, in the host-order `frags` word.
const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;
/// Offset of the flags byte within the fixed TCP header.
const TCP_FLAGS_OFFSET: usize = 13;
/// Offset of the data-offset byte (header length in 32-bit words, high nibble).
const TCP_DOFF_OFFSET: usize = 12;
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
    pub fn new(ctx: &XdpContext) -> Self {
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

    /// Length of the whole frame in bytes.
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
    /// Addresses and ports raw, as on the wire.
    pub src: A,
    pub dst: A,
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

pub enum Parsed {
    /// TCP or UDP.
    Flow(Headers<u32>),
    /// ICMP (ports zero).
    Icmp(Headers<u32>),
}

/// Parses Ethernet (one VLAN tag), IPv4 (options honoured) and the TCP/UDP/ICMP header.
/// Frames that are not ours are passed untouched; frames for a VIP that are broken are
/// dropped. Traffic for any address that is neither a VIP nor a SNAT address costs one
/// lookup, unless a DNAT VIP exists (its replies go to client addresses).
#[inline(always)]
pub fn parse(frame: &Frame) -> Result<Parsed, Verdict> {
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
    let ours = dst_flags != 0 || dnat_present();
    if !ours {
        return Err(Verdict::pass(Reason::PassNotForVip));
    }
    // Only a VIP's broken frames are dropped: a SNAT address may be the node's own, and the
    // node's fragments, tunnels and other protocols must reach it.
    let fail = |reason_ours: Reason| {
        if dst_flags & ADDR_FLAG_VIP != 0 {
            Verdict::drop(reason_ours)
        } else {
            Verdict::pass(Reason::PassNotForVip)
        }
    };

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
    let mut h = Headers {
        eth,
        vlan_hdr,
        vlan,
        ip,
        l4: core::ptr::null_mut(),
        l4_off: l4,
        l3_end,
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        seq: 0,
        seq_end: 0,
        ttl,
        dst_flags,
    };
    match proto {
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
            Ok(Parsed::Flow(h))
        }
        IPPROTO_UDP => {
            let udp: *mut UdpHdr = frame.ptr(l4).ok_or(fail(Reason::DropTruncated))?;
            within(l4 + UdpHdr::LEN, l3_end).ok_or(fail(Reason::DropTruncated))?;
            h.l4 = udp.cast();
            // SAFETY: checked above.
            unsafe {
                h.sport = u16::from_ne_bytes((*udp).src);
                h.dport = u16::from_ne_bytes((*udp).dst);
            }
            Ok(Parsed::Flow(h))
        }
        IPPROTO_ICMP => {
            let icmp: *mut Icmpv4Hdr = frame.ptr(l4).ok_or(fail(Reason::DropTruncated))?;
            within(l4 + Icmpv4Hdr::LEN, l3_end).ok_or(fail(Reason::DropTruncated))?;
            h.l4 = icmp.cast();
            Ok(Parsed::Icmp(h))
        }
        _ => Err(fail(Reason::DropUnknownProto)),
    }
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
fn addr_flags(addr: u32) -> u32 {
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

/// True when some VIP uses DNAT (kept as a `VIP_ADDRS` entry under address 0).
#[inline(always)]
fn dnat_present() -> bool {
    addr_flags(ADDR_KEY_DNAT_PRESENT) != 0
}
