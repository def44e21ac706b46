//! Address translation of TCP/UDP: client -> VIP becomes (SNAT ->) backend, and the
//! backend's reply becomes VIP -> client. Headers are rewritten in place with incremental
//! checksum updates (RFC 1624).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect};
use lb_common::{
    ADDR_FLAG_VIP, BACKEND_FLAG_LOCAL, CtEntry, FlowKey, IPPROTO_TCP, IPPROTO_UDP, Reason, VipMeta,
    checksum::{udp_fixup, update_u16},
};
use network_types::{tcp::TcpHdr, udp::UdpHdr};

use crate::{
    Verdict, conntrack,
    ctx::Ctx,
    family::Family,
    lookup,
    maps::CONFIG,
    packet::{Frame, Headers, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
};

/// The new addresses and ports of a translated packet (raw, network order). `src` and
/// `dst` adjacent: `Family::addrs_csum` reads them as one pair.
#[repr(C)]
pub struct Rewrite<A> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// Offsets of the checksum in the UDP and TCP headers.
const UDP_CHECK_OFFSET: usize = 6;
const TCP_CHECK_OFFSET: usize = 16;

/// TCP or UDP: a packet for a VIP, a reply to a translated flow, or neither.
///
/// IPv4: a packet to a VIP address is first looked up as a confirmed flow: when the VIP
/// named by the entry's index still holds that index (`VIP_KEYS`, an inlined read), the
/// VIP's meta is not needed (it only matters to a new flow) and the `VIPS` lookup is
/// skipped. Any other packet to a VIP address asks `VIPS`, as does a new flow. IPv6 asks
/// `VIPS6` first (`Family::ENTRY_FIRST`).
#[inline(always)]
pub fn handle_flow<C: Ctx, A: Family>(ctx: &C, frame: &Frame, h: &Headers<A>) -> Verdict {
    if h.dst_flags & ADDR_FLAG_VIP != 0 {
        let mut local = core::mem::MaybeUninit::uninit();
        if A::ENTRY_FIRST {
            let key = conntrack::key_of(h);
            let entry = A::conntrack().get_ptr_mut(&key);
            // SAFETY: `e` points into a live map value.
            let known = entry.is_some_and(|e| A::vip_holds(unsafe { (*e).vip_index }, h));
            let meta = if known {
                None
            } else {
                lookup::vip_meta(h, &mut local)
            };
            // One call of `forward` (each would be a copy of the whole path).
            if known || meta.is_some() {
                return forward(ctx, frame, h, Some(&key), entry, meta);
            }
        } else if let Some(meta) = lookup::vip_meta(h, &mut local) {
            if A::FORWARD_APART {
                // `forward_apart`, in a call of its own (main.rs: `forward6`).
                return VERDICT_FORWARD;
            }
            return forward(ctx, frame, h, None, None, Some(meta));
        }
    }
    reply(ctx, frame, h)
}

/// Not a verdict: `handle_flow`'s answer, with `Family::FORWARD_APART`, for a packet to a
/// VIP, which the entry then gives to `forward_apart` in a call of its own (never counted,
/// never returned to the kernel).
pub const VERDICT_FORWARD: Verdict = Verdict::with(u32::MAX, Reason::DropInternal);

/// The rest of `handle_flow` for a packet `VERDICT_FORWARD` named: `forward` with the
/// VIP's meta `vip_meta` copied into this CPU's scratch for this very packet a moment
/// before (a family with `FORWARD_APART` keeps its copies there: `Family::snapshot`).
/// Its caller has checked the frame's destination MAC, as `dispatch` does.
#[inline(always)]
pub fn forward_apart<C: Ctx, A: Family>(ctx: &C, frame: &Frame, h: &Headers<A>) -> Verdict {
    let Some(s) = A::scratch().get_ptr(0) else {
        return Verdict::drop(Reason::DropInternal);
    };
    if !A::FORWARD_APART {
        return Verdict::drop(Reason::DropInternal);
    }
    // SAFETY: this CPU's scratch, whose meta `handle_flow` has just written.
    let meta = unsafe { &*(&raw const (*s).meta) };
    forward(ctx, frame, h, None, None, Some(meta))
}

/// A packet for a VIP: `key` its client-side key and `entry` the flow's `CONNTRACK` entry,
/// `meta` the VIP's, each when already looked up (see `conntrack::forward_flow`).
#[inline(always)]
fn forward<C: Ctx, A: Family>(
    ctx: &C,
    frame: &Frame,
    h: &Headers<A>,
    key: Option<&FlowKey<A>>,
    entry: Option<*mut CtEntry<A>>,
    meta: Option<&VipMeta<A>>,
) -> Verdict {
    if h.ttl <= 1 {
        return Verdict::pass(Reason::PassTtlExpired);
    }
    let Some(cfg) = CONFIG.get(0) else {
        return Verdict::drop(Reason::DropInternal);
    };
    // SAFETY: checked by the parser.
    let client_mac = unsafe { (*h.eth).src_addr };
    let ingress = ctx.ingress_ifindex();
    let flow = match conntrack::forward_flow(h, key, entry, meta, cfg, client_mac, ingress) {
        Ok(f) => f,
        Err(v) => return v,
    };
    if flow.backend.flags & BACKEND_FLAG_LOCAL != 0 {
        stats::count_traffic(
            flow.vip_index,
            flow.backend_idx,
            frame.len() as u64,
            flow.new,
        );
        return Verdict::pass(Reason::PassLocalBackend);
    }
    let rw = Rewrite {
        src: flow.snat_addr,
        sport: flow.snat_port,
        dst: flow.backend.addr,
        dport: flow.backend.port,
        dst_mac: flow.backend.mac,
        src_mac: source_mac(cfg, h, out_ifindex(flow.backend.ifindex, ingress)),
    };
    rewrite(ctx, h, &rw);
    stats::count_traffic(
        flow.vip_index,
        flow.backend_idx,
        frame.len() as u64,
        flow.new,
    );
    // A SYN a listener answers (with SYN+ACK or, on a closed port, RST+ACK): Linux drops
    // SYN+FIN and SYN+RST unanswered, which must not count against the backend.
    if flow.new
        && h.proto == IPPROTO_TCP
        && h.tcp_flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST) == TCP_SYN
    {
        stats::count_handshake(flow.backend_idx, stats::Handshake::Syn);
    }
    egress::<C>(
        flow.backend.ifindex,
        ingress,
        Reason::TxForward,
        Reason::RedirectForward,
    )
}

#[inline(always)]
fn reply<C: Ctx, A: Family>(ctx: &C, frame: &Frame, h: &Headers<A>) -> Verdict {
    // A reply is keyed by its own tuple, as received.
    let key = conntrack::key_of(h);
    // One clock read for the expiry check and the refresh.
    let now = conntrack::now();
    let rev = match A::reverse().get_ptr_mut(&key) {
        // SAFETY: `rev` points into a live map value.
        Some(rev) if conntrack::reply_live(unsafe { &*rev }, now) => {
            if h.ttl <= 1 {
                return Verdict::pass(Reason::PassTtlExpired);
            }
            match conntrack::reply_touch(rev, h, now) {
                Ok(r) => r,
                Err(v) => return v,
            }
        }
        // Not confirmed (or the confirmed entry on this tuple is dead): the backend's
        // answer to a flow that has just started.
        _ => match A::unconfirmed_rev().get_ptr_mut(&key) {
            // SAFETY: `rev` points into a live map value.
            Some(rev) if conntrack::reply_live(unsafe { &*rev }, now) => {
                if h.ttl <= 1 {
                    return Verdict::pass(Reason::PassTtlExpired);
                }
                match conntrack::unconfirmed_reply(rev, &key, h, now) {
                    Ok(r) => r,
                    Err(v) => return v,
                }
            }
            _ => return Verdict::pass(Reason::PassNotForVip),
        },
    };
    let Some(cfg) = CONFIG.get(0) else {
        return Verdict::drop(Reason::DropInternal);
    };
    let rw = Rewrite {
        src: rev.vip_addr,
        sport: rev.vip_port,
        dst: rev.client_addr,
        dport: rev.client_port,
        dst_mac: rev.client_mac,
        src_mac: source_mac(
            cfg,
            h,
            out_ifindex(rev.client_ifindex, ctx.ingress_ifindex()),
        ),
    };
    rewrite(ctx, h, &rw);
    stats::count_traffic(rev.vip_index, rev.backend_idx, frame.len() as u64, false);
    if let Err(v) = crate::vlan::restore(ctx, h, rev.client_vlan) {
        return v;
    }
    egress::<C>(
        rev.client_ifindex,
        ctx.ingress_ifindex(),
        Reason::TxReply,
        Reason::RedirectReply,
    )
}

/// The interface a frame leaves by: `out`, or the one it came in on when `out` is 0.
#[inline(always)]
pub fn out_ifindex(out: u32, ingress: u32) -> u32 {
    if out == 0 { ingress } else { out }
}

/// The MAC of attached interface `ifindex` as the daemon configured it: from `IFACES` when
/// several interfaces are attached, else (and for an interface not in it) `Config::if_mac`;
/// zero when unconfigured.
#[inline(always)]
pub fn iface_mac(cfg: &lb_common::Config, ifindex: u32) -> [u8; 6] {
    if cfg.flags & lb_common::CONFIG_FLAG_IFACES != 0
        && let Some(t) = crate::maps::IFACES.get(0)
        && let Some(mac) = t.mac_of(ifindex)
    {
        return mac;
    }
    cfg.if_mac
}

/// The source MAC of frames we send out of `out`: that interface's, as the daemon
/// configured it, or else the address the frame was sent to (ours, on the interface it
/// arrived on).
#[inline(always)]
pub fn source_mac<A: Family>(cfg: &lb_common::Config, h: &Headers<A>, out: u32) -> [u8; 6] {
    let mac = iface_mac(cfg, out);
    if mac != [0; 6] {
        return mac;
    }
    // SAFETY: checked by the parser.
    unsafe { (*h.eth).dst_addr }
}

/// `XDP_TX` when the packet leaves by the interface it came in on, a redirect otherwise
/// (`XDP_REDIRECT` in either context: the tc entry turns the verdicts into its own).
#[inline(always)]
pub fn egress<C: Ctx>(out: u32, ingress: u32, tx: Reason, redirect: Reason) -> Verdict {
    if out == 0 || out == ingress {
        return Verdict::tx(tx);
    }
    // SAFETY: helper call with plain arguments.
    if unsafe { bpf_redirect(out, 0) } as u32 == C::REDIRECTED {
        Verdict {
            action: xdp_action::XDP_REDIRECT,
            reason: redirect,
        }
    } else {
        Verdict::drop(Reason::DropRedirectFailed)
    }
}

/// Rewrites the MACs, the IP addresses and the TTL (hop limit, decremented), updating the
/// IPv4 header checksum.
#[inline(always)]
pub fn rewrite_ip<A: Family>(h: &Headers<A>, src: A, dst: A, src_mac: [u8; 6], dst_mac: [u8; 6]) {
    let eth = h.eth;
    // SAFETY: `eth` checked by the parser.
    unsafe {
        (*eth).dst_addr = dst_mac;
        (*eth).src_addr = src_mac;
    }
    A::rewrite_ip(h, src, dst);
}

/// Rewrites MACs, addresses, ports and TTL, updating the IPv4 and L4 checksums (the
/// pseudo-header's addresses of either family, RFC 1624).
#[inline(always)]
pub fn rewrite<C: Ctx, A: Family>(ctx: &C, h: &Headers<A>, rw: &Rewrite<A>) {
    let (old_sport, old_dport, new_sport, new_dport) = (
        u16::from_be(h.sport),
        u16::from_be(h.dport),
        u16::from_be(rw.sport),
        u16::from_be(rw.dport),
    );
    // The context learns the pseudo-header's part and the ports' part apart (an skb's
    // partial checksum takes only the first: see `Ctx::note_l4_check`).
    let l4_update = |c: u16, off: usize, udp: bool| {
        let addrs = A::addrs_csum(h, (&raw const rw.src).cast(), c);
        let new = update_u16(
            update_u16(addrs, old_sport, new_sport),
            old_dport,
            new_dport,
        );
        ctx.note_l4_check(off, c, addrs, new, udp);
        new
    };
    if h.proto == IPPROTO_UDP {
        let udp = h.l4 as *mut UdpHdr;
        // SAFETY: the parser checked a whole UDP header.
        unsafe {
            let orig = u16::from_be_bytes((*udp).check);
            let new = l4_update(orig, h.l4_off + UDP_CHECK_OFFSET, true);
            (*udp).check = udp_fixup(orig, new).to_be_bytes();
            (*udp).src = rw.sport.to_ne_bytes();
            (*udp).dst = rw.dport.to_ne_bytes();
        }
    } else {
        let tcp = h.l4 as *mut TcpHdr;
        // SAFETY: the parser checked a whole TCP header.
        unsafe {
            let orig = u16::from_be_bytes((*tcp).check);
            (*tcp).check = l4_update(orig, h.l4_off + TCP_CHECK_OFFSET, false).to_be_bytes();
            (*tcp).source = rw.sport.to_ne_bytes();
            (*tcp).dest = rw.dport.to_ne_bytes();
        }
    }
    // After the transport checksum, which reads the old addresses from the header.
    rewrite_ip(h, rw.src, rw.dst, rw.src_mac, rw.dst_mac);
}
