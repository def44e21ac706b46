//! The two contexts the packet path runs in: XDP (`xdp_md`, before the kernel has an skb)
//! and tc ingress (`__sk_buff`, beside another XDP program). Everything between the entry
//! points and the verdict is generic over [`Ctx`]; only what differs lives here: where the
//! frame is, how long it is, how it is redirected, how the start of the frame moves and
//! how the transport checksum is stored (an skb's checksum state, e.g. `CHECKSUM_PARTIAL`
//! after GRO, needs the kernel's helper).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, __sk_buff, xdp_action, xdp_md},
    helpers::{bpf_l4_csum_replace, bpf_xdp_adjust_head},
    programs::{TcContext, XdpContext},
};
use lb_common::checksum::{fold, udp_fixup};

use crate::maps::TC_CSUM;

/// tc's verdicts as the program returns them (the bindings' types differ by target).
pub const TC_REDIRECT: u32 = aya_ebpf::bindings::TC_ACT_REDIRECT as u32;
pub const TC_SHOT: u32 = aya_ebpf::bindings::TC_ACT_SHOT as u32;
/// `TC_ACT_UNSPEC` (-1): tcx's "next", the interface's next program decides.
pub const TC_NEXT: u32 = aya_ebpf::bindings::TC_ACT_UNSPEC as i32 as u32;

/// A program context the packet path can run in.
pub trait Ctx {
    /// The kernel's context structure.
    type Raw;
    /// The frame's start and end, read volatile from the raw context (see
    /// `packet::classify6`: the verifier wants them read where they are used).
    fn bounds(raw: *mut Self::Raw) -> (usize, usize);
    /// The kernel's context structure.
    fn raw(&self) -> *mut Self::Raw;
    /// The wrapper around a raw context.
    fn from_raw(raw: *mut Self::Raw) -> Self;
    /// Start of the frame's directly readable bytes.
    fn data(&self) -> usize;
    /// End of the frame's directly readable bytes.
    fn data_end(&self) -> usize;
    /// Length of the whole packet in bytes (an skb's may go beyond its linear part).
    fn len(&self) -> usize;
    /// The interface the frame arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// What `bpf_redirect` returns when it accepted the redirect in this program type.
    const REDIRECTED: u32;
    /// Moves the start of the frame by `delta` bytes; false when it cannot (tc: never
    /// asked, tagged frames pass before parsing).
    fn adjust_head(&self, delta: i32) -> bool;
    /// Stores a TCP or UDP checksum at frame offset `off` (`check` points at it): `old` as
    /// received, `addrs` after the pseudo-header's addresses changed, `new` after the ports
    /// changed too (all RFC 1624 updates of `old`).
    fn set_l4_check(&self, check: *mut [u8; 2], off: usize, old: u16, addrs: u16, new: u16, udp: bool);
}

impl Ctx for XdpContext {
    type Raw = xdp_md;
    #[inline(always)]
    fn bounds(raw: *mut xdp_md) -> (usize, usize) {
        // SAFETY: the program's context.
        unsafe {
            (
                core::ptr::read_volatile(&raw const (*raw).data) as usize,
                core::ptr::read_volatile(&raw const (*raw).data_end) as usize,
            )
        }
    }
    #[inline(always)]
    fn raw(&self) -> *mut xdp_md {
        self.ctx
    }
    #[inline(always)]
    fn from_raw(raw: *mut xdp_md) -> Self {
        XdpContext::new(raw)
    }
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        XdpContext::data_end(self) - XdpContext::data(self)
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
    }
    const REDIRECTED: u32 = xdp_action::XDP_REDIRECT;
    #[inline(always)]
    fn adjust_head(&self, delta: i32) -> bool {
        // SAFETY: helper on our own context.
        unsafe { bpf_xdp_adjust_head(self.ctx, delta) == 0 }
    }
    #[inline(always)]
    fn set_l4_check(&self, check: *mut [u8; 2], _: usize, old: u16, _: u16, new: u16, udp: bool) {
        let c = if udp { udp_fixup(old, new) } else { new };
        // SAFETY: the caller's checked header.
        unsafe { *check = c.to_be_bytes() };
    }
}

/// `TcContext` with the raw pointer the verifier needs at hand.
impl Ctx for TcContext {
    type Raw = __sk_buff;
    #[inline(always)]
    fn bounds(raw: *mut __sk_buff) -> (usize, usize) {
        // SAFETY: the program's context.
        unsafe {
            (
                core::ptr::read_volatile(&raw const (*raw).data) as usize,
                core::ptr::read_volatile(&raw const (*raw).data_end) as usize,
            )
        }
    }
    #[inline(always)]
    fn raw(&self) -> *mut __sk_buff {
        aya_ebpf::EbpfContext::as_ptr(self).cast()
    }
    #[inline(always)]
    fn from_raw(raw: *mut __sk_buff) -> Self {
        // SAFETY: the kernel's context pointer is never null.
        TcContext::new(unsafe { core::ptr::NonNull::new_unchecked(raw) })
    }
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // At tc ingress the skb's device is the one it arrived on.
        // SAFETY: the program's context.
        unsafe { (*self.raw()).ifindex }
    }
    const REDIRECTED: u32 = TC_REDIRECT;
    #[inline(always)]
    fn adjust_head(&self, _: i32) -> bool {
        false
    }
    #[inline(always)]
    fn set_l4_check(&self, _: *mut [u8; 2], off: usize, old: u16, addrs: u16, new: u16, udp: bool) {
        // Kept for `apply_l4_check` after the last packet access: the helper invalidates
        // every packet pointer the parser checked. The differences of the covered sums
        // (`~check`), one for the pseudo-header and one for the ports.
        if let Some(p) = TC_CSUM.get_ptr_mut(0) {
            // SAFETY: this CPU's slot, used within this packet only.
            unsafe {
                (*p).off = off as u32;
                (*p).udp = udp as u32;
                (*p).addrs = fold(!addrs as u32 + old as u32) as u32;
                (*p).ports = fold(!new as u32 + addrs as u32) as u32;
            }
        }
    }
}

/// `TC_CSUM`'s value: a transport checksum change waiting for [`apply_l4_check`].
#[repr(C)]
pub struct PendingCsum {
    /// Frame offset of the checksum; 0 when nothing is pending.
    pub off: u32,
    /// UDP (a zero checksum means none).
    pub udp: u32,
    /// Difference of the pseudo-header's sum.
    pub addrs: u32,
    /// Difference of the ports' sum.
    pub ports: u32,
}

/// Clears this CPU's pending checksum change (the tc entry, before the packet path).
#[inline(always)]
pub fn clear_l4_check() {
    if let Some(p) = TC_CSUM.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { (*p).off = 0 };
    }
}

/// Stores the pending checksum change through `bpf_l4_csum_replace`, which knows the skb's
/// checksum state: a complete checksum takes both differences, a `CHECKSUM_PARTIAL` one
/// (the hardware or the GSO path finishes it) only the pseudo-header's. False when the
/// helper refused (the frame must not leave with a wrong checksum).
#[inline(always)]
pub fn apply_l4_check(skb: *mut __sk_buff) -> bool {
    let Some(p) = TC_CSUM.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot.
    let (off, udp, addrs, ports) = unsafe { ((*p).off, (*p).udp, (*p).addrs, (*p).ports) };
    if off == 0 {
        return true;
    }
    let zero = if udp != 0 {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    // Size 0 in the flags: `to` is a checksum difference.
    // SAFETY: helper on our own context with plain arguments.
    unsafe {
        bpf_l4_csum_replace(skb, off, 0, addrs as u64, BPF_F_PSEUDO_HDR as u64 | zero) == 0
            && bpf_l4_csum_replace(skb, off, 0, ports as u64, zero) == 0
    }
}
