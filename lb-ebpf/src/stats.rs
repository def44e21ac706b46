//! Per-CPU counters: one per verdict reason, and traffic per VIP and per backend.

use lb_common::Reason;

use crate::maps::{BACKEND_STATS, REASONS, VIP_STATS};

#[inline(always)]
pub fn count_reason(reason: Reason) {
    count_reason_index(reason as u32);
}

/// [`count_reason`] for a reason carried as its index (`Reason as u32`).
#[inline(always)]
pub fn count_reason_index(index: u32) {
    if let Some(c) = REASONS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// Counts one forwarded packet of `bytes` for a VIP and a backend; `new_flow` when it opened one.
#[inline(always)]
pub fn count_traffic(vip_index: u32, backend_idx: u32, bytes: u64, new_flow: bool) {
    let n = new_flow as u64;
    if let Some(c) = VIP_STATS.get_ptr_mut(vip_index) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += n;
        }
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend_idx) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += n;
        }
    }
}
