//! xvip's XDP program. The entry point only dispatches and counts the verdict; each concern
//! lives in its own module.
#![no_std]
#![no_main]
// `atomic_cxchg`: the only compare-and-swap the BPF target offers (see conntrack.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]
// aya's `#[classifier]` wraps the kernel's context pointer with `NonNull::new_unchecked` in
// the public function it generates, which this lint cannot tell from a dereference.
#![expect(clippy::not_unsafe_ptr_arg_deref)]

mod conntrack;
mod ctx;
mod family;
mod fast;
mod icmp;
mod lookup;
mod maps;
mod nat;
mod packet;
mod sock;
mod stats;
mod sync;
mod vlan;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use lb_common::Reason;

use crate::{
    ctx::{Ctx, TC_NEXT, TC_REDIRECT, TC_SHOT},
    packet::{Frame, Parsed},
};

/// What the program returns, and why.
pub struct Verdict {
    pub action: u32,
    pub reason: Reason,
}

impl Verdict {
    #[inline(always)]
    pub const fn pass(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            reason,
        }
    }
    #[inline(always)]
    pub const fn drop(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_DROP,
            reason,
        }
    }
    #[inline(always)]
    pub const fn with(action: u32, reason: Reason) -> Self {
        Self { action, reason }
    }
    #[inline(always)]
    pub const fn tx(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_TX,
            reason,
        }
    }
}

#[xdp]
pub fn xvip(ctx: XdpContext) -> u32 {
    // Each family in a function of its own, which counts its verdict: each has its own
    // stack frame (the two monomorphised paths would not fit one 512-byte stack, and the
    // caller's frame counts against the deeper one: this one has none).
    // The established fast path first (`fast.rs`), in a call of its own; what it declines
    // takes the full path.
    let frame = Frame::new(&ctx);
    match packet::l2(&frame) {
        Ok(l2) if packet::is_ipv6(&l2) => {
            let fast = fast::established6(ctx.ctx);
            if fast != fast::DECLINED {
                return fast;
            }
            let class = packet::classify6::<XdpContext>(ctx.ctx);
            match process6::<XdpContext>(ctx.ctx, class) {
                FORWARD => forward6::<XdpContext>(ctx.ctx, class) as u32,
                v => v as u32,
            }
        }
        // Not IPv6, or too short to tell (IPv4's parser counts that).
        _ => {
            let fast = fast::established4(ctx.ctx);
            if fast != fast::DECLINED {
                return fast;
            }
            process4::<XdpContext>(ctx.ctx) as u32
        }
    }
}

/// The same path at tc ingress (`--attach tc`), beside another program that holds XDP.
/// Verdicts become tc's: pass is `TC_ACT_UNSPEC` (the next program of the interface, if
/// any, still sees the packet), drop `TC_SHOT`, `XDP_TX` a redirect to the interface's
/// own egress.
#[classifier]
pub fn xvip_tc(ctx: TcContext) -> i32 {
    // The entry's own stack frame stays empty, as XDP's (the deep IPv6 path takes the
    // rest of the 512 bytes): map lookups and helpers happen in calls of their own.
    let skb = ctx.raw();
    if !tc_prepare(skb) {
        return tc_unhandled();
    }
    let frame = Frame::new(&ctx);
    let packed = match packet::l2(&frame) {
        // A tag still in the frame (a second one, or no hardware untagging on this path):
        // `vlan::restore` would have to move the frame's start, which tc does not here.
        Ok(l2) if l2.vlan != 0 => return tc_unhandled(),
        Ok(l2) if packet::is_ipv6(&l2) => {
            let class = packet::classify6::<TcContext>(skb);
            match process6::<TcContext>(skb, class) {
                FORWARD => forward6::<TcContext>(skb, class),
                v => v,
            }
        }
        _ => process4::<TcContext>(skb),
    };
    tc_exit(skb, packed) as i32
}

/// Readies an skb for the shared path: false for a tagged one (the kernel took the tag
/// into the skb; this path does not put one back) or one that cannot be made linear. The
/// whole skb is made linear and writable (the parser checks the datagram's length against
/// the frame's, as in XDP; a GRO'd packet pays a copy here), and no checksum change is
/// pending.
#[inline(never)]
fn tc_prepare(skb: *mut aya_ebpf::bindings::__sk_buff) -> bool {
    // SAFETY: the program's context.
    if unsafe { (*skb).vlan_present } != 0 {
        return false;
    }
    // The whole length: 0 would pull only what is already linear.
    // SAFETY: the program's context, and a helper on it.
    if unsafe { aya_ebpf::helpers::bpf_skb_pull_data(skb, (*skb).len) } != 0 {
        return false;
    }
    ctx::clear_l4_check(skb);
    true
}

/// A frame the tc entry leaves to the next program and the kernel, counted.
#[inline(never)]
fn tc_unhandled() -> i32 {
    stats::count_reason(Reason::PassTcUnhandled);
    TC_NEXT as i32
}

/// How a context's path ends: XDP counts the verdict's reason (the program's one exit) and
/// returns its action; tc hands the verdict, packed, to its entry, which finishes it
/// (checksum, redirect) in a call of its own and counts it there (the deep IPv6 path's
/// frame has no room for those calls under it).
trait Exit: Ctx {
    fn exit(v: Verdict) -> u64;
}

impl Exit for XdpContext {
    #[inline(always)]
    fn exit(v: Verdict) -> u64 {
        stats::count_reason(v.reason);
        v.action as u64
    }
}

impl Exit for TcContext {
    #[inline(always)]
    fn exit(v: Verdict) -> u64 {
        (v.reason as u64) << 32 | v.action as u64
    }
}

/// The tc entry's one exit: the packed verdict of the path in tc's terms, the checksum
/// stored and `XDP_TX` redirected to the interface it came in on, its reason counted
/// (the finishing step's own when it fails).
#[inline(never)]
fn tc_exit(skb: *mut aya_ebpf::bindings::__sk_buff, packed: u64) -> u32 {
    let (action, reason) = (packed as u32, (packed >> 32) as u32);
    let (tc, reason) = match action {
        xdp_action::XDP_PASS => (TC_NEXT, reason),
        xdp_action::XDP_TX | xdp_action::XDP_REDIRECT => {
            if !ctx::apply_l4_check(skb) {
                (TC_SHOT, Reason::DropInternal as u32)
            } else if action == xdp_action::XDP_TX
                // SAFETY: the program's context; a helper call with plain arguments.
                && unsafe { bpf_redirect((*skb).ifindex, 0) } as u32 != TC_REDIRECT
            {
                (TC_SHOT, Reason::DropRedirectFailed as u32)
            } else {
                (TC_REDIRECT, reason)
            }
        }
        _ => (TC_SHOT, reason),
    };
    stats::count_reason_index(reason);
    tc
}

#[inline(never)]
fn process4<C: Exit>(raw: *mut C::Raw) -> u64 {
    let ctx = C::from_raw(raw);
    let frame = Frame::new(&ctx);
    C::exit(match packet::parse(&frame) {
        Ok(p) => dispatch(&ctx, &frame, &p),
        Err(v) => v,
    })
}

/// `process6`'s answer for a packet to a VIP, which `forward6` then takes (not an action
/// of either context, nothing counted yet).
const FORWARD: u64 = u64::MAX;

/// IPv6 but a packet to a VIP: that one returns [`FORWARD`], and the entry calls
/// `forward6` for it, so the forward path (with the SNAT probes' `bpf_loop` callback under
/// it) and the reply and ICMP paths each have a frame of their own
/// (`Family::FORWARD_APART`).
#[inline(never)]
fn process6<C: Exit>(raw: *mut C::Raw, class: u32) -> u64 {
    let ctx = C::from_raw(raw);
    let frame = Frame::new(&ctx);
    let v = match packet::parse6(&frame, class) {
        Ok(p) => dispatch(&ctx, &frame, &p),
        Err(v) => v,
    };
    if v.action == nat::VERDICT_FORWARD.action {
        return FORWARD;
    }
    C::exit(v)
}

/// An IPv6 packet `process6` found to be for a VIP (its frame's MAC checked there, the
/// VIP's meta copied into the scratch): parsed again (a packet pointer cannot be kept
/// between calls) and forwarded.
#[inline(never)]
fn forward6<C: Exit>(raw: *mut C::Raw, class: u32) -> u64 {
    let ctx = C::from_raw(raw);
    let frame = Frame::new(&ctx);
    C::exit(match packet::parse6(&frame, class) {
        Ok(Parsed::Flow(h)) => nat::forward_apart(&ctx, &frame, &h),
        // `process6` parsed the same bytes as a flow.
        Ok(Parsed::Icmp(_)) => Verdict::drop(Reason::DropInternal),
        Err(v) => v,
    })
}

#[inline(always)]
fn dispatch<C: Ctx, A: icmp::QuotedIp>(ctx: &C, frame: &Frame, parsed: &Parsed<A>) -> Verdict {
    let eth = match parsed {
        Parsed::Flow(h) | Parsed::Icmp(h) => h.eth,
    };
    // A frame for another host's MAC (flooded by a switch that lost track of it, seen by a
    // VRRP backup or a second routed node) is that host's to translate, not ours.
    // With several interfaces, "ours" is the MAC of the interface the frame arrived on.
    if let Some(cfg) = maps::CONFIG.get(0)
        && let mac = nat::iface_mac(cfg, ctx.ingress_ifindex())
        && mac != [0; 6]
        // SAFETY: the Ethernet header was checked by the parser.
        && unsafe { (*eth).dst_addr } != mac
    {
        return Verdict::pass(Reason::PassOtherHost);
    }
    match parsed {
        Parsed::Flow(h) => nat::handle_flow(ctx, frame, h),
        Parsed::Icmp(h) => icmp::handle(ctx, frame, h),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
