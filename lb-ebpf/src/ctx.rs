//! The two contexts the packet path runs in: XDP (`xdp_md`, before the kernel has an skb)
//! and tc ingress (`__sk_buff`, beside another XDP program). Everything between the entry
//! points and the verdict is generic over [`Ctx`]; only what differs lives here: where the
//! frame is, how long it is, how it is redirected, how the start of the frame moves and
//! how the transport checksum is stored (an skb's checksum state, e.g. `CHECKSUM_PARTIAL`
//! after GRO, needs the kernel's helper).

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, xdp_action, xdp_md},
    helpers::{bpf_l4_csum_replace, bpf_xdp_adjust_head},
    programs::{TcContext, XdpContext},
};
use lb_common::checksum::fold;

/// tc's verdicts as the program returns them (the bindings' types differ by target).
pub const TC_REDIRECT: u32 = aya_ebpf::bindings::TC_ACT_REDIRECT as u32;
pub const TC_SHOT: u32 = aya_ebpf::bindings::TC_ACT_SHOT as u32;
/// `TC_ACT_UNSPEC` (-1): tcx's "next", the interface's next program decides.
pub const TC_NEXT: u32 = aya_ebpf::bindings::TC_ACT_UNSPEC as u32;

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
    /// The interface the frame arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// What `bpf_redirect` returns when it accepted the redirect in this program type.
    const REDIRECTED: u32;
    /// Moves the start of the frame by `delta` bytes; false when it cannot (tc: never
    /// asked, tagged frames pass before parsing).
    fn adjust_head(&self, delta: i32) -> bool;
    /// Learns of the TCP or UDP checksum at frame offset `off` just rewritten in place:
    /// `old` as received, `addrs` after the pseudo-header's addresses changed, `new` after
    /// the ports changed too (RFC 1624 updates of `old`, right for a complete checksum).
    /// XDP: nothing to do. tc: the skb's checksum may be partial, so the field is put back
    /// and updated by the kernel's helper at the end (`apply_l4_check`).
    fn note_l4_check(&self, off: usize, old: u16, addrs: u16, new: u16, udp: bool);
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
    fn note_l4_check(&self, _: usize, _: u16, _: u16, _: u16, _: bool) {}
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
    #[expect(
        clippy::misnamed_getters,
        reason = "at tc ingress the skb's device is the one it arrived on; `ingress_ifindex` (skb_iif) is 0 in a test run, where XDP's is the loopback's, as `ifindex` is"
    )]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the program's context.
        unsafe { (*self.raw()).ifindex }
    }
    const REDIRECTED: u32 = TC_REDIRECT;
    #[inline(always)]
    fn adjust_head(&self, _: i32) -> bool {
        false
    }
    #[inline(always)]
    fn note_l4_check(&self, off: usize, old: u16, addrs: u16, new: u16, udp: bool) {
        // Kept in the skb's control buffer (no stack, no map: the deep IPv6 path has no
        // room left) for `apply_l4_check`, after the last packet access (the helper
        // invalidates every packet pointer the parser checked): the checksum as received
        // and the differences of the covered sums (`~check`), one for the pseudo-header
        // and one for the ports.
        let skb = self.raw();
        // SAFETY: the program's context; tc programs own `cb`.
        unsafe {
            (*skb).cb[CB_OFF] = (off as u32) << 1 | udp as u32;
            (*skb).cb[CB_OLD] = old as u32;
            // The kernel sums the field as it lies in memory: network order.
            (*skb).cb[CB_ADDRS] = fold(!addrs as u32 + old as u32).to_be() as u32;
            (*skb).cb[CB_PORTS] = fold(!new as u32 + addrs as u32).to_be() as u32;
        }
    }
}

/// `__sk_buff.cb` words of a pending checksum change: the checksum's frame offset << 1 |
/// UDP (0: nothing pending), the checksum as received, the two differences.
const CB_OFF: usize = 0;
const CB_OLD: usize = 1;
const CB_ADDRS: usize = 2;
const CB_PORTS: usize = 3;

/// Where a transport checksum can be, at most (bytes from the frame's start).
const MAX_CHECK_OFFSET: u32 = 1024;

/// Clears the pending checksum change (the tc entry, before the packet path).
#[inline(always)]
pub fn clear_l4_check(skb: *mut __sk_buff) {
    // SAFETY: the program's context.
    unsafe { (*skb).cb[CB_OFF] = 0 };
}

/// Stores the pending checksum change through `bpf_l4_csum_replace`, which knows the skb's
/// checksum state: a complete checksum takes both differences, a `CHECKSUM_PARTIAL` one
/// (the hardware or the GSO path finishes it) only the pseudo-header's. False when the
/// helper refused (the frame must not leave with a wrong checksum).
#[inline(always)]
pub fn apply_l4_check(skb: *mut __sk_buff) -> bool {
    // SAFETY: the program's context.
    let (off_udp, old, addrs, ports) = unsafe {
        let cb = &(*skb).cb;
        (cb[CB_OFF], cb[CB_OLD], cb[CB_ADDRS], cb[CB_PORTS])
    };
    if off_udp == 0 {
        return true;
    }
    let (off, udp) = (off_udp >> 1, off_udp & 1);
    // The field back as received, written directly (a helper would want the bytes on
    // the stack, which this path has no room for).
    let (start, end) = TcContext::bounds(skb);
    // A bound the verifier can see (a transport header is within `MAX_L4_OFFSET`).
    if off > MAX_CHECK_OFFSET {
        return false;
    }
    let field = start + off as usize;
    if field + 2 > end {
        return false;
    }
    // SAFETY: within the frame (checked above).
    unsafe { *(field as *mut [u8; 2]) = (old as u16).to_be_bytes() };
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
