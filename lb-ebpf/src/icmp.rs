//! ICMP: echo requests to a VIP are answered here; errors (destination unreachable, time
//! exceeded) about a translated flow are translated towards whichever end sent the packet
//! they quote (the client, or the backend); anything else is the kernel's.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    ADDR_FLAG_VIP, BACKEND_FLAG_LOCAL, CONFIG_FLAG_ICMP_ECHO, FlowKey, IPPROTO_TCP, IPPROTO_UDP,
    Reason,
    checksum::{udp_fixup, update_u16, update_u32},
};
use network_types::{icmp::Icmpv4Hdr, ip::Ipv4Hdr};

use crate::{
    Verdict, conntrack, lookup,
    maps::{CONFIG, CONNTRACK, REVERSE, UNCONFIRMED_REV},
    nat,
    packet::{Frame, Headers, ptr_within},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// TTL of the echo replies we originate.
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

#[inline(always)]
pub fn handle(ctx: &XdpContext, frame: &Frame, h: &Headers) -> Verdict {
    let icmp = h.l4 as *mut Icmpv4Hdr;
    // SAFETY: checked by the parser.
    let (ty, code) = unsafe { ((*icmp).type_, (*icmp).code) };
    if ty == ICMP_DEST_UNREACH || ty == ICMP_TIME_EXCEEDED {
        return translate_error(ctx, frame, h, icmp);
    }
    if h.dst_flags & ADDR_FLAG_VIP == 0 {
        return Verdict::pass(Reason::PassNotForVip);
    }
    let echo = CONFIG
        .get(0)
        .is_some_and(|c| c.flags & CONFIG_FLAG_ICMP_ECHO != 0);
    if !echo || ty != ICMP_ECHO_REQUEST || code != 0 {
        return Verdict::pass(Reason::PassIcmp);
    }
    let (eth, ip) = (h.eth, h.ip);
    // SAFETY: all three checked by the parser.
    unsafe {
        core::mem::swap(&mut (*eth).dst_addr, &mut (*eth).src_addr);

        // Swapping the addresses leaves the header checksum unchanged; the TTL does not.
        let (src, dst) = ((*ip).src_addr, (*ip).dst_addr);
        (*ip).src_addr = dst;
        (*ip).dst_addr = src;
        let old = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        (*ip).ttl = REPLY_TTL;
        let new = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        (*ip).check = update_u16(u16::from_be_bytes((*ip).check), old, new).to_be_bytes();

        let old = u16::from_be_bytes([(*icmp).type_, (*icmp).code]);
        (*icmp).type_ = ICMP_ECHO_REPLY;
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
fn not_ours(h: &Headers) -> Verdict {
    if h.dst_flags & ADDR_FLAG_VIP != 0 {
        Verdict::pass(Reason::PassIcmp)
    } else {
        Verdict::pass(Reason::PassNotForVip)
    }
}

/// The addresses and ports of a quoted header, raw (network order).
struct Tuple {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
}

/// An ICMP error about a translated flow, in either direction:
/// - quoting a packet we sent to a backend (SNAT address or client -> backend): sent on
///   to the client as if it were about the packet the client sent to the VIP (the quoted
///   header gets the client and VIP back; the outer header goes to the client, from the
///   VIP when the backend itself reported it);
/// - quoting a packet we sent to a client (VIP -> client), reported by a router on the
///   client's path (fragmentation needed above all: path MTU discovery): sent on to the
///   flow's backend as if it were about the packet the backend sent.
#[inline(always)]
fn translate_error(ctx: &XdpContext, frame: &Frame, h: &Headers, icmp: *mut Icmpv4Hdr) -> Verdict {
    let limit = h.l3_end;
    let inner_off = h.l4_off + Icmpv4Hdr::LEN;
    let Some(iip) = ptr_within::<Ipv4Hdr>(frame, inner_off, limit) else {
        return not_ours(h);
    };
    // SAFETY: the quoted fixed header is within the frame (checked above).
    let (ivihl, iproto, isrc, idst, ifrags) = unsafe {
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
        || (iproto != IPPROTO_TCP && iproto != IPPROTO_UDP)
        || isrc != h.dst
    {
        return not_ours(h);
    }
    let il4_off = inner_off + iihl;
    let Some(il4) = ptr_within::<[u8; QUOTE_L4_MIN]>(frame, il4_off, limit) else {
        return not_ours(h);
    };
    // SAFETY: checked above.
    let (isport, idport) = unsafe {
        (
            u16::from_ne_bytes([(*il4)[0], (*il4)[1]]),
            u16::from_ne_bytes([(*il4)[2], (*il4)[3]]),
        )
    };
    let old = Tuple {
        src: isrc,
        dst: idst,
        sport: isport,
        dport: idport,
    };
    // The reply to the quoted packet would carry the reversed tuple: that is the key.
    let key = FlowKey {
        src_addr: idst,
        dst_addr: isrc,
        src_port: idport,
        dst_port: isport,
        proto: iproto,
        _pad: [0; 3],
    };
    let now = conntrack::now();
    let Some(cfg) = CONFIG.get(0).copied() else {
        return Verdict::drop(Reason::DropInternal);
    };
    let ingress = ctx.ingress_ifindex() as u32;
    // About a packet to a backend: the tuple is one a flow holds, confirmed or not.
    // SAFETY: plain values copied out of the maps.
    let rev = unsafe { REVERSE.get(&key) }
        .copied()
        .filter(|r| conntrack::reply_live(r, now))
        .or_else(|| {
            // SAFETY: as above.
            unsafe { UNCONFIRMED_REV.get(&key) }
                .copied()
                .filter(|r| conntrack::reply_live(r, now))
        });
    if let Some(rev) = rev {
        if h.ttl <= 1 {
            return Verdict::pass(Reason::PassTtlExpired);
        }
        // Outer header: to the client, from the VIP when the backend itself reported it.
        let outer_src = if h.src == idst { rev.vip_addr } else { h.src };
        let src_mac = nat::source_mac(&cfg, h, nat::out_ifindex(rev.client_ifindex, ingress));
        nat::rewrite_ip(h, outer_src, rev.client_addr, src_mac, rev.client_mac);
        let new = Tuple {
            src: rev.client_addr,
            dst: rev.vip_addr,
            sport: rev.client_port,
            dport: rev.vip_port,
        };
        rewrite_quote(frame, icmp, iip, il4, il4_off, limit, iproto, &old, &new);
        if let Err(v) = crate::vlan::restore(ctx, h, rev.client_vlan) {
            return v;
        }
        return nat::egress(
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
    let Some(e) = (unsafe { CONNTRACK.get(&key) }).copied() else {
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
    let outer_src = if fullnat { e.snat_addr } else { h.src };
    let src_mac = nat::source_mac(&cfg, h, nat::out_ifindex(backend.ifindex, ingress));
    nat::rewrite_ip(h, outer_src, backend.addr, src_mac, backend.mac);
    let new = Tuple {
        src: backend.addr,
        dst: e.snat_addr,
        sport: backend.port,
        dport: e.snat_port,
    };
    rewrite_quote(frame, icmp, iip, il4, il4_off, limit, iproto, &old, &new);
    nat::egress(
        backend.ifindex,
        ingress,
        Reason::IcmpErrorToBackend,
        Reason::IcmpErrorToBackend,
    )
}

/// Rewrites the quoted header's addresses and ports from `old` to `new`, with the quoted
/// IPv4 and transport checksums (the TCP one only when the quote holds it, often just 8
/// bytes), folding every changed 16-bit word into the ICMP checksum (all sit at even
/// offsets from the ICMP header).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite_quote(
    frame: &Frame,
    icmp: *mut Icmpv4Hdr,
    iip: *mut Ipv4Hdr,
    il4: *mut [u8; QUOTE_L4_MIN],
    il4_off: usize,
    limit: usize,
    iproto: u8,
    old: &Tuple,
    new: &Tuple,
) {
    let (o_src, o_dst, n_src, n_dst) = (
        u32::from_be(old.src),
        u32::from_be(old.dst),
        u32::from_be(new.src),
        u32::from_be(new.dst),
    );
    let (o_sport, o_dport, n_sport, n_dport) = (
        u16::from_be(old.sport),
        u16::from_be(old.dport),
        u16::from_be(new.sport),
        u16::from_be(new.dport),
    );
    // SAFETY: `icmp` checked by the parser, `iip` and `il4` by the caller.
    unsafe {
        let mut ic = u16::from_be_bytes((*icmp).check);
        ic = update_u32(ic, o_src, n_src);
        ic = update_u32(ic, o_dst, n_dst);
        ic = update_u16(ic, o_sport, n_sport);
        ic = update_u16(ic, o_dport, n_dport);

        let old_ipc = u16::from_be_bytes((*iip).check);
        let mut ipc = update_u32(old_ipc, o_src, n_src);
        ipc = update_u32(ipc, o_dst, n_dst);
        (*iip).check = ipc.to_be_bytes();
        (*iip).src_addr = new.src.to_ne_bytes();
        (*iip).dst_addr = new.dst.to_ne_bytes();
        ic = update_u16(ic, old_ipc, ipc);

        let l4_update = |c: u16| {
            let mut c = update_u32(c, o_src, n_src);
            c = update_u32(c, o_dst, n_dst);
            c = update_u16(c, o_sport, n_sport);
            update_u16(c, o_dport, n_dport)
        };
        if iproto == IPPROTO_UDP {
            let old = u16::from_be_bytes([(*il4)[UDP_CHECK], (*il4)[UDP_CHECK + 1]]);
            let new = udp_fixup(old, l4_update(old));
            [(*il4)[UDP_CHECK], (*il4)[UDP_CHECK + 1]] = new.to_be_bytes();
            ic = update_u16(ic, old, new);
        } else if let Some(tcp) = ptr_within::<[u8; TCP_CHECK_END]>(frame, il4_off, limit) {
            let old = u16::from_be_bytes([(*tcp)[TCP_CHECK], (*tcp)[TCP_CHECK + 1]]);
            let new = l4_update(old);
            [(*tcp)[TCP_CHECK], (*tcp)[TCP_CHECK + 1]] = new.to_be_bytes();
            ic = update_u16(ic, old, new);
        }
        [(*il4)[0], (*il4)[1]] = new.sport.to_ne_bytes();
        [(*il4)[2], (*il4)[3]] = new.dport.to_ne_bytes();
        (*icmp).check = ic.to_be_bytes();
    }
}
