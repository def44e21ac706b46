//! xvip's XDP program. The entry point only dispatches and counts the verdict; each concern
//! lives in its own module.
#![no_std]
#![no_main]
// `atomic_cxchg`: the only compare-and-swap the BPF target offers (see conntrack.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod conntrack;
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
    bindings::{xdp_action, xdp_md},
    macros::xdp,
    programs::XdpContext,
};
use lb_common::Reason;

use crate::packet::{Frame, Parsed};

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
        Ok(l2) if packet::is_ipv6(&l2) => process6(ctx.ctx, packet::classify6(ctx.ctx)),
        // Not IPv6, or too short to tell (IPv4's parser counts that).
        _ => process4(ctx.ctx),
    }
}

/// Counts the verdict's reason (the program's one exit) and returns its action.
#[inline(always)]
fn counted(v: Verdict) -> u32 {
    stats::count_reason(v.reason);
    v.action
}

#[inline(never)]
fn process4(ctx: *mut xdp_md) -> u32 {
    let ctx = XdpContext::new(ctx);
    let frame = Frame::new(&ctx);
    counted(match packet::parse(&frame) {
        Ok(p) => dispatch(&ctx, &frame, &p),
        Err(v) => v,
    })
}

#[inline(never)]
fn process6(ctx: *mut xdp_md, class: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    let frame = Frame::new(&ctx);
    counted(match packet::parse6(&frame, class) {
        Ok(p) => dispatch(&ctx, &frame, &p),
        Err(v) => v,
    })
}

#[inline(always)]
fn dispatch<A: icmp::QuotedIp>(ctx: &XdpContext, frame: &Frame, parsed: &Parsed<A>) -> Verdict {
    let eth = match parsed {
        Parsed::Flow(h) | Parsed::Icmp(h) => h.eth,
    };
    // A frame for another host's MAC (flooded by a switch that lost track of it, seen by a
    // VRRP backup or a second routed node) is that host's to translate, not ours.
    // With several interfaces, "ours" is the MAC of the interface the frame arrived on.
    if let Some(cfg) = maps::CONFIG.get(0)
        && let mac = nat::iface_mac(cfg, ctx.ingress_ifindex() as u32)
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
