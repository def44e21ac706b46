//! The established fast path: the common packet of a confirmed, live flow that needs no
//! write to its entries, client -> VIP (forward) and backend -> client (reply), IPv4 and
//! IPv6. The XDP entry calls it first, in a stack frame of its own; whatever it is not
//! sure of it declines ([`DECLINED`]) and the full path (`nat`, `conntrack`) handles the
//! packet as if this file did not exist.
//!
//! A packet is taken only when the full path would do exactly this with it and write no
//! map but the counters and, once a `LAST_SEEN_GRANULARITY_NS`, the entries' `last_seen`
//! (the same stores as the full path's): an untagged IPv4 (no options, no fragment) or IPv6 (no extension
//! header) frame to this host's MAC, TTL above 1, TCP without SYN, FIN or RST or UDP with
//! a valid checksum; its entry in `TCP_ESTABLISHED` (TCP) or `UDP` state and live, the
//! sequence position known
//! and the segment within the window and within `SEQ_SLACK` of it (no advance due); and
//! for a forward packet the VIP still holding the entry's index (`VIP_KEYS`,
//! `VIP_KEYS6`), the backend still the entry's, the client's MAC, interface and VLAN
//! unchanged, and the flow's tuple still its own in `REVERSE`. The same reason and traffic counters are counted as by the full path. The
//! packet fixtures run with and without this path (`CONFIG_FLAG_NO_FAST_PATH`) and must
//! agree byte for byte.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    programs::XdpContext,
};
use lb_common::{
    ADDR_FLAG_SNAT, ADDR_FLAG_VIP, BACKEND_FLAG_LOCAL, CONFIG_FLAG_FAST_PATH_ONLY,
    CONFIG_FLAG_NO_FAST_PATH, CT_FLAG_SEQ_KNOWN, Config, IPPROTO_TCP, IPPROTO_UDP, Ip6,
    REV_FLAG_SEQ_KNOWN, Reason, SEQ_SLACK, ct_state,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::{
    Verdict,
    conntrack::{self, RELEASED},
    ctx::Ctx,
    family::Family,
    lookup,
    maps::CONFIG,
    nat::{self, Rewrite},
    packet::{self, Frame, Headers, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
};

/// What [`established4`] and [`established6`] return for a packet left to the full path
/// (not an XDP action).
pub const DECLINED: u32 = u32::MAX;

/// The fast path for an IPv4 frame: its XDP action (the reason counted), or [`DECLINED`].
#[inline(never)]
pub fn established4(raw: *mut xdp_md) -> u32 {
    run(raw, |ctx, frame, cfg| {
        let mut h = headers4(frame)?;
        h.dst_flags = packet::addr_flags(h.dst());
        // `packet::parse`'s test of whether the frame is ours.
        let ours = |h: &Headers<u32>| {
            h.dst_flags != 0 || (packet::dnat_present() && packet::maybe_reply(h.src(), h.proto))
        };
        take(ctx, frame, &h, cfg, ours)
    })
}

/// The fast path for an IPv6 frame: its XDP action (the reason counted), or [`DECLINED`].
#[inline(never)]
pub fn established6(raw: *mut xdp_md) -> u32 {
    run(raw, |ctx, frame, cfg| {
        let mut h = headers6(frame)?;
        h.dst_flags = packet::addr_flags6(h.dst());
        // `packet::classify6`'s test for TCP and UDP.
        let ours = |h: &Headers<Ip6>| {
            h.dst_flags != 0 || (packet::maybe_backend(h.src()) && packet::dnat_present6())
        };
        take(ctx, frame, &h, cfg, ours)
    })
}

/// The frame, the configuration and the test hooks around a family's path; counts the
/// verdict's reason when the packet is taken.
#[inline(always)]
fn run(
    raw: *mut xdp_md,
    path: impl FnOnce(&XdpContext, &Frame, &Config) -> Option<Verdict>,
) -> u32 {
    let Some(cfg) = CONFIG.get(0) else {
        return DECLINED;
    };
    if cfg.flags & CONFIG_FLAG_NO_FAST_PATH != 0 {
        return DECLINED;
    }
    let ctx = XdpContext::new(raw);
    let frame = Frame::new(&ctx);
    match path(&ctx, &frame, cfg) {
        Some(v) => {
            stats::count_reason(v.reason);
            v.action
        }
        None if cfg.flags & CONFIG_FLAG_FAST_PATH_ONLY != 0 => xdp_action::XDP_ABORTED,
        None => DECLINED,
    }
}

/// A parsed frame to a VIP (forward) or, when `ours` holds of another (the destination
/// is ours without being a VIP, or it may be a DNAT reply), a reply; both only when sent
/// to this host's MAC.
#[inline(always)]
fn take<A: Family>(
    ctx: &XdpContext,
    frame: &Frame,
    h: &Headers<A>,
    cfg: &Config,
    ours: impl FnOnce(&Headers<A>) -> bool,
) -> Option<Verdict> {
    // A frame for another host's MAC is passed by the full path (`dispatch`).
    let mac = nat::iface_mac(cfg, Ctx::ingress_ifindex(ctx));
    // SAFETY: the Ethernet header was checked by the parser.
    if mac != [0; 6] && unsafe { (*h.eth).dst_addr } != mac {
        return None;
    }
    if h.dst_flags & ADDR_FLAG_SNAT != 0 && in_snat_range(cfg, h.dport) {
        // A reply to a SNAT port, also when the SNAT address is a VIP's (the default: the
        // first VIP): the configuration refuses a VIP port within the SNAT range on the
        // SNAT address (`config::resolve`), so the full path, after finding neither a flow
        // nor a VIP there, takes it as a reply too.
        backend_reply(ctx, frame, h, cfg)
    } else if h.dst_flags & ADDR_FLAG_VIP != 0 {
        forward(ctx, frame, h, cfg)
    } else if ours(h) {
        backend_reply(ctx, frame, h, cfg)
    } else {
        None
    }
}

/// A raw port within the configured SNAT range (port 0 never is one).
#[inline(always)]
fn in_snat_range(cfg: &Config, port: u16) -> bool {
    let p = u16::from_be(port);
    p != 0 && p >= cfg.snat_port_min && p <= cfg.snat_port_max
}

/// Whether an entry in `state`, last seen at `seen`, is a settled flow whose state this
/// packet leaves as it is: established TCP or UDP, live. (Its `last_seen` may be due a
/// refresh: [`refresh`].)
#[inline(always)]
fn settled<A: Family>(state: u8, seen: u64, h: &Headers<A>, now: u64) -> bool {
    let want = if h.proto == IPPROTO_TCP {
        ct_state::TCP_ESTABLISHED
    } else {
        ct_state::UDP
    };
    state == want && seen != RELEASED && !conntrack::expired(state, seen, now)
}

/// The full path's `conntrack::touch` of an entry, when due: for a packet without FIN, RST
/// or SYN the state stays, and only `last_seen` moves, once per `LAST_SEEN_GRANULARITY_NS`
/// (without this, a flow whose packets come less often than that would never take the
/// fast path, and pay its failed attempt on top of the full path).
#[inline(always)]
fn refresh<A: Family>(state: *mut u8, seen: *mut u64, h: &Headers<A>, now: u64) {
    // SAFETY: both point into a live map value.
    if unsafe { conntrack::stale(*state, *seen, h.proto, h.tcp_flags, now) } {
        conntrack::touch(state, seen, h.proto, h.tcp_flags, now);
    }
}

/// Whether a TCP segment fits the stream recorded at `next` (`known`) and moves no
/// recorded position: in the window, and at most `SEQ_SLACK` past it.
#[inline(always)]
fn steady<A: Family>(known: bool, next: u32, h: &Headers<A>) -> bool {
    h.proto != IPPROTO_TCP
        || (known
            && conntrack::in_window(true, next, h.seq)
            && h.seq_end.wrapping_sub(next) as i32 <= SEQ_SLACK as i32)
}

/// A client's packet of a settled flow (`conntrack::forward_flow`'s hit, writing nothing).
#[inline(always)]
fn forward<A: Family>(
    ctx: &XdpContext,
    frame: &Frame,
    h: &Headers<A>,
    cfg: &Config,
) -> Option<Verdict> {
    let key = conntrack::key_of(h);
    let e = A::conntrack().get_ptr_mut(&key)?;
    let now = conntrack::now();
    let ingress = Ctx::ingress_ifindex(ctx);
    // SAFETY: `e` points into a live map value; each field is read once.
    let (vip_index, backend_idx) = unsafe {
        if !settled((*e).state, (*e).last_seen_ns, h, now)
            || !steady((*e).flags & CT_FLAG_SEQ_KNOWN != 0, (*e).seq_next, h)
            || (*e).client_ifindex != ingress
            || (*e).client_vlan != 0
            || (*e).client_mac != (*h.eth).src_addr
        {
            return None;
        }
        ((*e).vip_index, (*e).backend_idx)
    };
    if !A::vip_holds(vip_index, h) {
        return None;
    }
    // SAFETY: as above.
    let backend =
        unsafe { lookup::live_backend(backend_idx, (*e).backend_addr, (*e).backend_port)? };
    if backend.flags & BACKEND_FLAG_LOCAL != 0 {
        return None;
    }
    // The tuple must still be the flow's own (see docs/ARCHITECTURE.md, "The fast path").
    // SAFETY: as above.
    let rkey = conntrack::reverse_key(unsafe { &*e }, h.proto);
    let r = A::reverse().get_ptr_mut(&rkey)?;
    // SAFETY: `r` points into a live map value.
    unsafe {
        if !conntrack::owns(&*r, &key) || (*r).last_seen_ns == RELEASED {
            return None;
        }
        // The writes the full path makes for such a packet (`hold_reverse`, then its own
        // entry's `touch`), nothing else.
        refresh(&raw mut (*r).state, &raw mut (*r).last_seen_ns, h, now);
        refresh(&raw mut (*e).state, &raw mut (*e).last_seen_ns, h, now);
    }
    let rw = Rewrite {
        // SAFETY: as above.
        src: unsafe { (*e).snat_addr },
        // SAFETY: as above.
        sport: unsafe { (*e).snat_port },
        dst: backend.addr,
        dport: backend.port,
        dst_mac: backend.mac,
        src_mac: nat::source_mac(cfg, h, nat::out_ifindex(backend.ifindex, ingress)),
    };
    nat::rewrite(ctx, h, &rw);
    stats::count_traffic(vip_index, backend_idx, frame.len() as u64, false);
    Some(nat::egress::<XdpContext>(
        backend.ifindex,
        ingress,
        Reason::TxForward,
        Reason::RedirectForward,
    ))
}

/// A backend's reply of a settled flow (`nat::reply` with a `REVERSE` hit, writing
/// nothing).
#[inline(always)]
fn backend_reply<A: Family>(
    ctx: &XdpContext,
    frame: &Frame,
    h: &Headers<A>,
    cfg: &Config,
) -> Option<Verdict> {
    let key = conntrack::key_of(h);
    let r = A::reverse().get_ptr_mut(&key)?;
    let now = conntrack::now();
    // SAFETY: `r` points into a live map value; each field is read once.
    unsafe {
        if !settled((*r).state, (*r).last_seen_ns, h, now)
            || !steady((*r).flags & REV_FLAG_SEQ_KNOWN != 0, (*r).seq_next, h)
            || (*r).client_vlan != 0
        {
            return None;
        }
    }
    // `reply_touch`'s only write for such a packet.
    // SAFETY: as above.
    unsafe { refresh(&raw mut (*r).state, &raw mut (*r).last_seen_ns, h, now) };
    let ingress = Ctx::ingress_ifindex(ctx);
    // SAFETY: as above.
    let (out, vip_index, backend_idx) =
        unsafe { ((*r).client_ifindex, (*r).vip_index, (*r).backend_idx) };
    // SAFETY: as above.
    let rw = unsafe {
        Rewrite {
            src: (*r).vip_addr,
            sport: (*r).vip_port,
            dst: (*r).client_addr,
            dport: (*r).client_port,
            dst_mac: (*r).client_mac,
            src_mac: nat::source_mac(cfg, h, nat::out_ifindex(out, ingress)),
        }
    };
    nat::rewrite(ctx, h, &rw);
    stats::count_traffic(vip_index, backend_idx, frame.len() as u64, false);
    Some(nat::egress::<XdpContext>(
        out,
        ingress,
        Reason::TxReply,
        Reason::RedirectReply,
    ))
}

/// An untagged IPv4 frame without options or fragmentation, TTL above 1; its TCP or UDP
/// header as [`transport`] takes it.
#[inline(always)]
fn headers4(frame: &Frame) -> Option<Headers<u32>> {
    let eth: *mut EthHdr = frame.ptr(0)?;
    // SAFETY: within the frame (checked above).
    if unsafe { (*eth).ether_type } != packet::ETH_P_IP.to_be() {
        return None;
    }
    let l3 = EthHdr::LEN;
    let ip: *mut Ipv4Hdr = frame.ptr(l3)?;
    // SAFETY: the fixed 20 bytes are within the frame.
    let (vihl, proto, ttl, frags, tot_len, src, dst) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            (*ip).ttl,
            u16::from_be_bytes((*ip).frags),
            u16::from_be_bytes((*ip).tot_len) as usize,
            u32::from_ne_bytes((*ip).src_addr),
            u32::from_ne_bytes((*ip).dst_addr),
        )
    };
    if vihl != 0x45
        || frags & (packet::IP_MF | packet::IP_OFFSET_MASK) != 0
        || ttl <= 1
        || tot_len < Ipv4Hdr::LEN
    {
        return None;
    }
    transport(
        frame,
        Headers {
            eth,
            vlan_hdr: core::ptr::null_mut(),
            vlan: 0,
            ip,
            l4: core::ptr::null_mut(),
            l4_off: l3 + Ipv4Hdr::LEN,
            l3_end: l3 + tot_len,
            proto,
            addrs: [src, dst],
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            seq: 0,
            seq_end: 0,
            ttl,
            dst_flags: 0,
        },
    )
}

/// An untagged IPv6 frame whose transport header follows the fixed one, hop limit above
/// 1; its TCP or UDP header as [`transport`] takes it.
#[inline(always)]
fn headers6(frame: &Frame) -> Option<Headers<Ip6>> {
    let eth: *mut EthHdr = frame.ptr(0)?;
    // SAFETY: within the frame (checked above).
    if unsafe { (*eth).ether_type } != packet::ETH_P_IPV6.to_be() {
        return None;
    }
    let l3 = EthHdr::LEN;
    let ip: *mut Ipv6Hdr = frame.ptr(l3)?;
    // SAFETY: the fixed 40 bytes are within the frame.
    let (vcf0, proto, ttl, payload_len) = unsafe {
        (
            (*ip).vcf[0],
            (*ip).next_hdr,
            (*ip).hop_limit,
            u16::from_be_bytes((*ip).payload_len) as usize,
        )
    };
    if vcf0 >> 4 != 6 || ttl <= 1 {
        return None;
    }
    transport(
        frame,
        Headers {
            eth,
            vlan_hdr: core::ptr::null_mut(),
            vlan: 0,
            ip,
            l4: core::ptr::null_mut(),
            l4_off: l3 + Ipv6Hdr::LEN,
            l3_end: l3 + Ipv6Hdr::LEN + payload_len,
            proto,
            addrs: (),
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            seq: 0,
            seq_end: 0,
            ttl,
            dst_flags: 0,
        },
    )
}

/// TCP without SYN, FIN or RST (data offset honoured) or UDP (IPv6: a non-zero
/// checksum), whole within the datagram, the datagram within the frame; anything else is
/// declined. The datagram's end is compared with the frame's last: compared first, it
/// lets LLVM drop the bounds check of the header read as implied, which the verifier
/// needs to see.
#[inline(always)]
fn transport<A: Family>(frame: &Frame, mut h: Headers<A>) -> Option<Headers<A>> {
    let (l4, l3_end) = (h.l4_off, h.l3_end);
    let h = if h.proto == IPPROTO_TCP {
        let tcp: *mut TcpHdr = frame.ptr(l4)?;
        if l4 + TcpHdr::LEN > l3_end {
            return None;
        }
        let p = tcp.cast::<u8>();
        // SAFETY: the fixed header is within the frame (checked above).
        let doff = unsafe {
            h.tcp_flags = *p.add(packet::TCP_FLAGS_OFFSET);
            h.sport = u16::from_ne_bytes((*tcp).source);
            h.dport = u16::from_ne_bytes((*tcp).dest);
            h.seq = u32::from_be_bytes((*tcp).seq);
            ((*p.add(packet::TCP_DOFF_OFFSET) >> 4) as usize) * 4
        };
        if h.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0
            || doff < TcpHdr::LEN
            || l4 + doff > l3_end
        {
            return None;
        }
        h.seq_end = h.seq.wrapping_add((l3_end - l4 - doff) as u32);
        h.l4 = p;
        h
    } else if h.proto == IPPROTO_UDP {
        let udp: *mut UdpHdr = frame.ptr(l4)?;
        if l4 + UdpHdr::LEN > l3_end {
            return None;
        }
        // SAFETY: the header is within the frame (checked above).
        unsafe {
            if A::UDP_CHECKSUM_REQUIRED && (*udp).check == [0, 0] {
                return None;
            }
            h.sport = u16::from_ne_bytes((*udp).src);
            h.dport = u16::from_ne_bytes((*udp).dst);
        }
        h.l4 = udp.cast();
        h
    } else {
        return None;
    };
    (l3_end <= frame.len()).then_some(h)
}
