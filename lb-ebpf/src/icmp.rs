//! ICMP and ICMPv6: echo requests to a VIP are answered here; errors (destination
//! unreachable, time exceeded, and ICMPv6 packet too big) about a translated flow are
//! translated towards whichever end sent the packet they quote (the client, or the
//! backend); anything else is the kernel's. Written once for both families: ICMPv6 differs
//! in its types, its checksum's pseudo-header (the outer addresses) and the quoted header
//! (no header checksum, no options: a quote with extension headers is not ours).

use lb_common::{
    ADDR_FLAG_VIP, Addr, BACKEND_FLAG_LOCAL, CONFIG_FLAG_ICMP_ECHO, IPPROTO_TCP, IPPROTO_UDP, Ip6,
    Reason,
    checksum::{udp_fixup, update_u16, update_u32},
};
use network_types::{
    icmp::Icmpv4Hdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    Verdict, conntrack,
    ctx::Ctx,
    family::Family,
    lookup,
    maps::CONFIG,
    nat,
    packet::{self, Frame, Headers, ptr_within},
};

/// TTL (hop limit) of the echo replies we originate.
const REPLY_TTL: u8 = 64;
/// The quoted transport header: RFC 792 guarantees its first 8 bytes (ports, and the UDP
/// checksum).
const QUOTE_L4_MIN: usize = 8;
/// Offset of the checksum in a UDP header.
const UDP_CHECK: usize = 6;
/// Offset of the checksum in a TCP header, and the quote length that includes it.
const TCP_CHECK: usize = 16;
const TCP_CHECK_END: usize = TCP_CHECK + 2;
/// Fragment offset mask of the host-order `frags` word.
const IP_OFFSET_MASK: u16 = 0x1fff;

/// The quoted header of an ICMP error: what a family's parser of it found.
pub struct Quote<A: Family> {
    /// The quoted IP header.
    iip: *mut A::IpHdr,
    /// The quoted transport header's first 8 bytes, and its offset in the frame.
    il4: *mut [u8; QUOTE_L4_MIN],
    il4_off: usize,
    proto: u8,
    /// The quoted packet's addresses as the family keeps them (see `Family::Addrs`:
    /// IPv6 reads them from the frame, [`Quote::src`]) and its ports.
    addrs: A::Addrs,
    sport: u16,
    dport: u16,
}

impl<A: QuotedIp> Quote<A> {
    #[inline(always)]
    fn src(&self) -> A {
        A::quoted_src(self)
    }
    #[inline(always)]
    fn dst(&self) -> A {
        A::quoted_dst(self)
    }
}

/// How a family parses and rewrites the IP header quoted in an ICMP error.
pub trait QuotedIp: Family {
    /// The quoted header after the ICMP header at `inner_off`, or `None` when it is not
    /// the start of a TCP/UDP packet (not a fragment's later part) sent from `ours`.
    fn quote(frame: &Frame, inner_off: usize, limit: usize, ours: Self) -> Option<Quote<Self>>;
    /// Puts `new`'s addresses in the quoted IP header, folding every changed word other
    /// than the addresses themselves (the IPv4 header checksum) into `ic`.
    fn rewrite_quoted_ip(iip: *mut Self::IpHdr, new: &Tuple<Self>, ic: u16) -> u16;
    /// A checksum over the quoted addresses (as ICMP payload, or the quoted transport
    /// header's pseudo-header) after they change to `new`'s; read before they are
    /// rewritten.
    fn quoted_addrs_csum(q: &Quote<Self>, new: &Tuple<Self>, check: u16) -> u16;
    /// The quoted packet's addresses (read before they are rewritten).
    fn quoted_src(q: &Quote<Self>) -> Self;
    fn quoted_dst(q: &Quote<Self>) -> Self;
}

impl QuotedIp for u32 {
    #[inline(always)]
    fn quote(frame: &Frame, inner_off: usize, limit: usize, ours: u32) -> Option<Quote<u32>> {
        let iip = ptr_within::<Ipv4Hdr>(frame, inner_off, limit)?;
        // SAFETY: the quoted fixed header is within the frame (checked above).
        let (ivihl, proto, src, dst, ifrags) = unsafe {
            (
                (*iip).vihl,
                (*iip).proto,
                u32::from_ne_bytes((*iip).src_addr),
                u32::from_ne_bytes((*iip).dst_addr),
                u16::from_be_bytes((*iip).frags),
            )
        };
        let iihl = ((ivihl & 0x0f) as usize) * 4;
        if ivihl >> 4 != 4
            || iihl < Ipv4Hdr::LEN
            || ifrags & IP_OFFSET_MASK != 0
            || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
            || src != ours
        {
            return None;
        }
        quote_l4(frame, iip, inner_off + iihl, limit, proto, [src, dst])
    }

    #[inline(always)]
    fn quoted_addrs_csum(q: &Quote<u32>, new: &Tuple<u32>, check: u16) -> u16 {
        let c = q.src().csum_update(check, new.src);
        q.dst().csum_update(c, new.dst)
    }
    #[inline(always)]
    fn quoted_src(q: &Quote<u32>) -> u32 {
        q.addrs[0]
    }
    #[inline(always)]
    fn quoted_dst(q: &Quote<u32>) -> u32 {
        q.addrs[1]
    }

    #[inline(always)]
    fn rewrite_quoted_ip(iip: *mut Ipv4Hdr, new: &Tuple<u32>, mut ic: u16) -> u16 {
        // SAFETY: `iip` checked by `quote`.
        unsafe {
            let o_src = u32::from_ne_bytes((*iip).src_addr);
            let o_dst = u32::from_ne_bytes((*iip).dst_addr);
            let old_ipc = u16::from_be_bytes((*iip).check);
            let mut ipc = update_u32(old_ipc, u32::from_be(o_src), u32::from_be(new.src));
            ipc = update_u32(ipc, u32::from_be(o_dst), u32::from_be(new.dst));
            (*iip).check = ipc.to_be_bytes();
            (*iip).src_addr = new.src.to_ne_bytes();
            (*iip).dst_addr = new.dst.to_ne_bytes();
            ic = update_u16(ic, old_ipc, ipc);
        }
        ic
    }
}

impl QuotedIp for Ip6 {
    #[inline(always)]
    fn quote(frame: &Frame, inner_off: usize, limit: usize, ours: Ip6) -> Option<Quote<Ip6>> {
        let iip = ptr_within::<Ipv6Hdr>(frame, inner_off, limit)?;
        // SAFETY: the quoted fixed header is within the frame (checked above).
        let (v, proto, src) = unsafe {
            (
                (*iip).vcf[0] >> 4,
                (*iip).next_hdr,
                packet::load_ip6(&raw const (*iip).src_addr),
            )
        };
        // What we send carries no extension headers: a quote with some is not ours.
        if v != 6 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || src != ours {
            return None;
        }
        quote_l4(frame, iip, inner_off + Ipv6Hdr::LEN, limit, proto, ())
    }
    #[inline(always)]
    fn quoted_src(q: &Quote<Ip6>) -> Ip6 {
        // SAFETY: checked by `quote`.
        packet::load_ip6(unsafe { &raw const (*q.iip).src_addr })
    }
    #[inline(always)]
    fn quoted_dst(q: &Quote<Ip6>) -> Ip6 {
        // SAFETY: checked by `quote`.
        packet::load_ip6(unsafe { &raw const (*q.iip).dst_addr })
    }

    /// `bpf_csum_diff` over the quoted header's 32 bytes of addresses and `new`'s (see
    /// `Family::addrs_csum`).
    #[inline(always)]
    fn quoted_addrs_csum(q: &Quote<Ip6>, new: &Tuple<Ip6>, check: u16) -> u16 {
        // SAFETY: 32 contiguous bytes of the checked quoted header; `new.src` and
        // `new.dst` adjacent (repr(C)).
        let d = unsafe {
            aya_ebpf::helpers::bpf_csum_diff(
                (&raw const (*q.iip).src_addr).cast::<u32>().cast_mut(),
                32,
                (&raw const new.src).cast::<u32>().cast_mut(),
                32,
                u32::from((!check).to_be()),
            )
        };
        // The helper sums words as they lie in memory (network order): so are its seed
        // and its result.
        !u16::from_be(lb_common::checksum::fold(d as u32))
    }

    #[inline(always)]
    fn rewrite_quoted_ip(iip: *mut Ipv6Hdr, new: &Tuple<Ip6>, ic: u16) -> u16 {
        // SAFETY: `iip` checked by `quote`.
        unsafe {
            packet::store_ip6(&raw mut (*iip).src_addr, new.src);
            packet::store_ip6(&raw mut (*iip).dst_addr, new.dst);
        }
        ic
    }
}

/// The quoted transport header's first 8 bytes (ports) at `il4_off`.
#[inline(always)]
fn quote_l4<A: Family>(
    frame: &Frame,
    iip: *mut A::IpHdr,
    il4_off: usize,
    limit: usize,
    proto: u8,
    addrs: A::Addrs,
) -> Option<Quote<A>> {
    let il4 = ptr_within::<[u8; QUOTE_L4_MIN]>(frame, il4_off, limit)?;
    // SAFETY: checked above.
    let (sport, dport) = unsafe {
        (
            u16::from_ne_bytes([(*il4)[0], (*il4)[1]]),
            u16::from_ne_bytes([(*il4)[2], (*il4)[3]]),
        )
    };
    Some(Quote {
        iip,
        il4,
        il4_off,
        proto,
        addrs,
        sport,
        dport,
    })
}

#[inline(always)]
pub fn handle<C: Ctx, A: QuotedIp>(ctx: &C, frame: &Frame, h: &Headers<A>) -> Verdict {
    let icmp = h.l4 as *mut Icmpv4Hdr;
    // SAFETY: checked by the parser (ICMP and ICMPv6 headers have the same 8 bytes).
    let (ty, code) = unsafe { ((*icmp).type_, (*icmp).code) };
    if A::icmp_error(ty) {
        return translate_error(ctx, frame, h, icmp);
    }
    if h.dst_flags & ADDR_FLAG_VIP == 0 {
        return Verdict::pass(Reason::PassNotForVip);
    }
    let echo = CONFIG
        .get(0)
        .is_some_and(|c| c.flags & CONFIG_FLAG_ICMP_ECHO != 0);
    if !echo || ty != A::ECHO_REQUEST || code != 0 {
        return Verdict::pass(Reason::PassIcmp);
    }
    let eth = h.eth;
    // SAFETY: both checked by the parser.
    unsafe {
        core::mem::swap(&mut (*eth).dst_addr, &mut (*eth).src_addr);
        // The swap leaves an ICMPv6 pseudo-header's sum unchanged; only the type changes.
        A::reflect_ip(h, REPLY_TTL);

        let old = u16::from_be_bytes([(*icmp).type_, (*icmp).code]);
        (*icmp).type_ = A::ECHO_REPLY;
        let new = u16::from_be_bytes([(*icmp).type_, (*icmp).code]);
        // Eqn. 3 gives 0x0000 when the new data sums to zero, which for an all-zero reply
        // (id 0, sequence 0, no data) is wrong: only 0xffff is. For any other data both
        // are right, so 0xffff is always safe.
        let c = match update_u16(u16::from_be_bytes((*icmp).check), old, new) {
            0 => 0xffff,
            c => c,
        };
        (*icmp).check = c.to_be_bytes();
    }
    Verdict::tx(Reason::IcmpEchoReply)
}

/// The verdict for an ICMP error that is not about a flow we translate.
#[inline(always)]
fn not_ours<A: Family>(h: &Headers<A>) -> Verdict {
    if h.dst_flags & ADDR_FLAG_VIP != 0 {
        Verdict::pass(Reason::PassIcmp)
    } else {
        Verdict::pass(Reason::PassNotForVip)
    }
}

/// The addresses and ports of a quoted header, raw (network order); `src` and `dst`
/// adjacent (`quoted_addrs_csum` reads them as a pair).
#[repr(C)]
pub struct Tuple<A> {
    src: A,
    dst: A,
    sport: u16,
    dport: u16,
}

/// An ICMP error about a translated flow, in either direction:
/// - quoting a packet we sent to a backend (SNAT address or client -> backend): sent on
///   to the client as if it were about the packet the client sent to the VIP (the quoted
///   header gets the client and VIP back; the outer header goes to the client, from the
///   VIP when the backend itself reported it);
/// - quoting a packet we sent to a client (VIP -> client), reported by a router on the
///   client's path (fragmentation needed, packet too big: path MTU discovery): sent on to
///   the flow's backend as if it were about the packet the backend sent.
#[inline(always)]
fn translate_error<C: Ctx, A: QuotedIp>(
    ctx: &C,
    frame: &Frame,
    h: &Headers<A>,
    icmp: *mut Icmpv4Hdr,
) -> Verdict {
    let limit = h.l3_end;
    let inner_off = h.l4_off + Icmpv4Hdr::LEN;
    let Some(q) = A::quote(frame, inner_off, limit, h.dst()) else {
        return not_ours(h);
    };
    // The reply to the quoted packet would carry the reversed tuple: that is the key.
    let key = conntrack::flow_key(q.dst(), q.src(), q.dport, q.sport, q.proto);
    let now = conntrack::now();
    let Some(cfg) = CONFIG.get(0) else {
        return Verdict::drop(Reason::DropInternal);
    };
    let ingress = ctx.ingress_ifindex();
    // About a packet to a backend: the tuple is one a flow holds, confirmed or not.
    // SAFETY: plain values copied out of the maps.
    let rev = unsafe { A::reverse().get(&key) }
        .copied()
        .filter(|r| conntrack::reply_live(r, now))
        .or_else(|| {
            // SAFETY: as above.
            unsafe { A::unconfirmed_rev().get(&key) }
                .copied()
                .filter(|r| conntrack::reply_live(r, now))
        });
    if let Some(rev) = rev {
        if h.ttl <= 1 {
            return Verdict::pass(Reason::PassTtlExpired);
        }
        // Outer header: to the client, from the VIP when the backend itself reported it.
        let outer_src = if h.src() == key.src_addr {
            rev.vip_addr
        } else {
            h.src()
        };
        let src_mac = nat::source_mac(cfg, h, nat::out_ifindex(rev.client_ifindex, ingress));
        let new = Tuple {
            src: rev.client_addr,
            dst: rev.vip_addr,
            sport: rev.client_port,
            dport: rev.vip_port,
        };
        // The quote first: it reads the outer addresses (ICMPv6's pseudo-header).
        rewrite_quote(frame, h, icmp, &q, limit, &new, outer_src, rev.client_addr);
        nat::rewrite_ip(h, outer_src, rev.client_addr, src_mac, rev.client_mac);
        if let Err(v) = crate::vlan::restore(ctx, h, rev.client_vlan) {
            return v;
        }
        return nat::egress::<C>(
            rev.client_ifindex,
            ingress,
            Reason::IcmpErrorTranslated,
            Reason::IcmpErrorTranslated,
        );
    }
    // About a packet to a client (VIP -> client): the flow is the client's, keyed as the
    // client sends.
    if h.dst_flags & ADDR_FLAG_VIP == 0 {
        return not_ours(h);
    }
    // SAFETY: plain value copied out of the map.
    let Some(e) = (unsafe { A::conntrack().get(&key) }).copied() else {
        return not_ours(h);
    };
    if conntrack::expired(e.state, e.last_seen_ns, now) {
        return not_ours(h);
    }
    let Some(backend) = lookup::live_backend(e.backend_idx, e.backend_addr, e.backend_port) else {
        return not_ours(h);
    };
    if backend.flags & BACKEND_FLAG_LOCAL != 0 {
        // The VIP is on `lo`: the local stack takes the error itself.
        return Verdict::pass(Reason::PassIcmp);
    }
    if h.ttl <= 1 {
        return Verdict::pass(Reason::PassTtlExpired);
    }
    // Full NAT: from our SNAT address, which the backend knows; DNAT: as reported.
    let fullnat = e.snat_addr != key.src_addr;
    let outer_src = if fullnat { e.snat_addr } else { h.src() };
    let src_mac = nat::source_mac(cfg, h, nat::out_ifindex(backend.ifindex, ingress));
    let new = Tuple {
        src: backend.addr,
        dst: e.snat_addr,
        sport: backend.port,
        dport: e.snat_port,
    };
    rewrite_quote(frame, h, icmp, &q, limit, &new, outer_src, backend.addr);
    nat::rewrite_ip(h, outer_src, backend.addr, src_mac, backend.mac);
    nat::egress::<C>(
        backend.ifindex,
        ingress,
        Reason::IcmpErrorToBackend,
        Reason::IcmpErrorToBackend,
    )
}

/// Rewrites the quoted header's addresses and ports to `new`, with the quoted IPv4 and
/// transport checksums (the TCP one only when the quote holds it, often just 8 bytes),
/// folding every changed 16-bit word into the ICMP checksum (all sit at even offsets from
/// the ICMP header), and, for ICMPv6, the outer addresses' change (now `outer_src`,
/// `outer_dst`) of its pseudo-header.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite_quote<A: QuotedIp>(
    frame: &Frame,
    h: &Headers<A>,
    icmp: *mut Icmpv4Hdr,
    q: &Quote<A>,
    limit: usize,
    new: &Tuple<A>,
    outer_src: A,
    outer_dst: A,
) {
    let (o_sport, o_dport, n_sport, n_dport) = (
        u16::from_be(q.sport),
        u16::from_be(q.dport),
        u16::from_be(new.sport),
        u16::from_be(new.dport),
    );
    let il4 = q.il4;
    // SAFETY: `icmp` checked by the parser, the quote's pointers by `quote`.
    unsafe {
        let mut ic = u16::from_be_bytes((*icmp).check);
        if A::ICMP_PSEUDO_HEADER {
            // Before the outer header is rewritten: the frame holds the old addresses.
            let pair = [outer_src, outer_dst];
            ic = A::addrs_csum(h, &raw const pair, ic);
        }
        ic = A::quoted_addrs_csum(q, new, ic);
        ic = update_u16(ic, o_sport, n_sport);
        ic = update_u16(ic, o_dport, n_dport);

        // The quoted transport checksum, before the quoted addresses change.
        let l4_update = |c: u16| {
            let c = A::quoted_addrs_csum(q, new, c);
            let c = update_u16(c, o_sport, n_sport);
            update_u16(c, o_dport, n_dport)
        };
        if q.proto == IPPROTO_UDP {
            let old = u16::from_be_bytes([(*il4)[UDP_CHECK], (*il4)[UDP_CHECK + 1]]);
            let new = udp_fixup(old, l4_update(old));
            [(*il4)[UDP_CHECK], (*il4)[UDP_CHECK + 1]] = new.to_be_bytes();
            ic = update_u16(ic, old, new);
        } else if let Some(tcp) = ptr_within::<[u8; TCP_CHECK_END]>(frame, q.il4_off, limit) {
            let old = u16::from_be_bytes([(*tcp)[TCP_CHECK], (*tcp)[TCP_CHECK + 1]]);
            let new = l4_update(old);
            [(*tcp)[TCP_CHECK], (*tcp)[TCP_CHECK + 1]] = new.to_be_bytes();
            ic = update_u16(ic, old, new);
        }
        ic = A::rewrite_quoted_ip(q.iip, new, ic);
        [(*il4)[0], (*il4)[1]] = new.sport.to_ne_bytes();
        [(*il4)[2], (*il4)[3]] = new.dport.to_ne_bytes();
        (*icmp).check = ic.to_be_bytes();
    }
}
