//! Per-CPU counters: one per verdict reason, traffic per VIP and per backend, and each
//! backend's handshakes for passive health.

use lb_common::Reason;

use crate::maps::{BACKEND_STATS, PASSIVE, REASONS, VIP_STATS};

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

/// One handshake event of a backend's new flow, for passive health.
#[derive(Clone, Copy)]
pub enum Handshake {
    /// The flow's first SYN forwarded to the backend.
    Syn,
    /// The backend's first answer, not a RST.
    Answered,
    /// The backend's first answer, a RST.
    Refused,
}

#[inline(always)]
pub fn count_handshake(backend_idx: u32, event: Handshake) {
    if let Some(c) = PASSIVE.get_ptr_mut(backend_idx) {
        // SAFETY: per-CPU slot.
        unsafe {
            match event {
                Handshake::Syn => (*c).syns += 1,
                Handshake::Answered => (*c).answered += 1,
                Handshake::Refused => (*c).refused += 1,
            }
        }
    }
}
