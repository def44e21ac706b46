//! xvip's XDP program. The entry point only dispatches and counts the verdict; each concern
//! lives in its own module.
#![no_std]
#![no_main]
// `atomic_cxchg`: the only compare-and-swap the BPF target offers (see conntrack.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod conntrack;
mod ctx;
mod family;
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
    let frame = Frame::new(&ctx);
    match packet::l2(&frame) {
        Ok(l2) if packet::is_ipv6(&l2) => {
            process6::<XdpContext>(ctx.ctx, packet::classify6::<XdpContext>(ctx.ctx))
        }
        // Not IPv6, or too short to tell (IPv4's parser counts that).
        _ => process4::<XdpContext>(ctx.ctx),
    }
}

/// Bytes of an skb made directly readable (and writable) before parsing: the deepest
/// header the path reads (an IPv6 transport header starts within `MAX_L4_OFFSET`; an
/// ICMP error's quote follows its 8 bytes) fits.
const TC_PULL_LEN: u32 = 640;

/// The same path at tc ingress (`--attach tc`), beside another program that holds XDP.
/// Verdicts become tc's: pass is `TC_ACT_UNSPEC` (the next program of the interface, if
/// any, still sees the packet), drop `TC_SHOT`, `XDP_TX` a redirect to the interface's
/// own egress.
#[classifier]
pub fn xvip_tc(ctx: TcContext) -> i32 {
    let skb = ctx.raw();
    // SAFETY: the program's context.
    let (vlan_present, len) = unsafe { ((*skb).vlan_present, (*skb).len) };
    let pull = if len < TC_PULL_LEN { len } else { TC_PULL_LEN };
    if vlan_present != 0 || ctx.skb.pull_data(pull).is_err() {
        stats::count_reason(Reason::PassTcUnhandled);
        return TC_NEXT as i32;
    }
    ctx::clear_l4_check();
    let frame = Frame::new(&ctx);
    (match packet::l2(&frame) {
        // A tag still in the frame (a second one, or no hardware untagging on this path):
        // `vlan::restore` would have to move the frame's start, which tc does not here.
        Ok(l2) if l2.vlan != 0 => {
            stats::count_reason(Reason::PassTcUnhandled);
            return TC_NEXT as i32;
        }
        Ok(l2) if packet::is_ipv6(&l2) => {
            process6::<TcContext>(skb, packet::classify6::<TcContext>(skb))
        }
        _ => process4::<TcContext>(skb),
    }) as i32
}

/// XDP's verdict in context `C`'s terms: in tc, the transport checksum stored (after the
/// last packet access) and `XDP_TX` turned into a redirect to the interface it came in on.
trait Finish: Ctx {
    fn finish(&self, v: Verdict) -> Verdict;
}

impl Finish for XdpContext {
    #[inline(always)]
    fn finish(&self, v: Verdict) -> Verdict {
        v
    }
}

impl Finish for TcContext {
    #[inline(always)]
    fn finish(&self, v: Verdict) -> Verdict {
        let action = match v.action {
            xdp_action::XDP_PASS => return Verdict::with(TC_NEXT, v.reason),
            xdp_action::XDP_TX | xdp_action::XDP_REDIRECT => TC_REDIRECT,
            _ => return Verdict::with(TC_SHOT, v.reason),
        };
        if !ctx::apply_l4_check(self.raw()) {
            return Verdict::with(TC_SHOT, Reason::DropInternal);
        }
        // SAFETY: helper call with plain arguments.
        if v.action == xdp_action::XDP_TX
            && unsafe { bpf_redirect(self.ingress_ifindex(), 0) } as u32 != TC_REDIRECT
        {
            return Verdict::with(TC_SHOT, Reason::DropRedirectFailed);
        }
        Verdict::with(action, v.reason)
    }
}

/// Counts the verdict's reason (the program's one exit) and returns its action.
#[inline(always)]
fn counted(v: Verdict) -> u32 {
    stats::count_reason(v.reason);
    v.action
}

#[inline(never)]
fn process4<C: Finish>(raw: *mut C::Raw) -> u32 {
    let ctx = C::from_raw(raw);
    let frame = Frame::new(&ctx);
    let v = match packet::parse(&frame) {
        Ok(p) => dispatch(&ctx, &frame, &p),
        Err(v) => v,
    };
    counted(ctx.finish(v))
}

#[inline(never)]
fn process6<C: Finish>(raw: *mut C::Raw, class: u32) -> u32 {
    let ctx = C::from_raw(raw);
    let frame = Frame::new(&ctx);
    let v = match packet::parse6(&frame, class) {
        Ok(p) => dispatch(&ctx, &frame, &p),
        Err(v) => v,
    };
    counted(ctx.finish(v))
}

#[inline(always)]
fn dispatch<C: Ctx, A: icmp::QuotedIp>(
    ctx: &C, frame: &Frame, parsed: &Parsed<A>) -> Verdict {
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
