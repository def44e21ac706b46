//! XDP programs for the namespace lab and the benchmarks, never loaded by the daemon.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuArray, programs::XdpContext,
};

/// Per CPU: 0 -> packets seen, 1 -> bytes seen, by `lab_count`.
#[map]
static LAB_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Passes everything to the kernel. On a veth, having any XDP program gives the device the
/// NAPI context that frames sent to it with `XDP_TX` or a redirect need.
#[xdp]
pub fn lab_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Counts and drops: the sink of the benchmarks.
#[xdp]
pub fn lab_count(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(p) = LAB_COUNTS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
    if let Some(p) = LAB_COUNTS.get_ptr_mut(1) {
        // SAFETY: per-CPU slot.
        unsafe { *p += len };
    }
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
