//! Conntrack sync, the data path's half: one `SyncEvent` in the `SYNC_EVENTS` ring buffer
//! when a flow is confirmed, when a confirmed flow starts closing, and when a confirmed
//! flow's entry is removed. Never per packet and never for an unconfirmed flow, so a SYN
//! flood cannot flood the sync channel. Only while `CONFIG_FLAG_SYNC` is set (the daemon
//! sets it with `--sync-key-file`). The daemon reads the ring every few milliseconds, so
//! no wakeup is asked for; a full ring loses the event, counted in `SYNC_COUNTS`.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use lb_common::{
    CONFIG_FLAG_SYNC, CtEntry, FlowKey, SYNC_CLOSING, SYNC_CONFIRMED, SYNC_COUNT_EMITTED,
    SYNC_COUNT_RING_FULL, SYNC_COUNTS_LEN, SYNC_REMOVED, SYNC_RING_BYTES, SyncEvent,
};

use crate::maps::CONFIG;

/// Confirmed flows created and ended, for the daemon to send to the other nodes.
#[map]
pub static SYNC_EVENTS: RingBuf = RingBuf::with_byte_size(SYNC_RING_BYTES, 0);

/// Per CPU: `SYNC_COUNT_*` -> events.
#[map]
pub static SYNC_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SYNC_COUNTS_LEN, 0);

/// `bpf_ringbuf_submit` flag: do not wake the reader (it polls).
const BPF_RB_NO_WAKEUP: u64 = 1;

#[inline(always)]
fn enabled() -> bool {
    CONFIG
        .get(0)
        .is_some_and(|c| c.flags & CONFIG_FLAG_SYNC != 0)
}

#[inline(always)]
fn count(i: u32) {
    if let Some(c) = SYNC_COUNTS.get_ptr_mut(i) {
        // SAFETY: this CPU's element.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn emit(kind: u32, key: &FlowKey, entry: Option<&CtEntry>) {
    if !enabled() {
        return;
    }
    let Some(mut slot) = SYNC_EVENTS.reserve::<SyncEvent>(0) else {
        count(SYNC_COUNT_RING_FULL);
        return;
    };
    let p = slot.as_mut_ptr();
    // SAFETY: an exclusive reservation of a whole `SyncEvent`, written field by field
    // (nothing of it is read before it is written).
    unsafe {
        (*p).kind = kind;
        (*p)._pad = 0;
        (*p).key = *key;
        (*p).entry = match entry {
            Some(e) => *e,
            None => CtEntry::default(),
        };
    }
    slot.submit(BPF_RB_NO_WAKEUP);
    count(SYNC_COUNT_EMITTED);
}

/// A flow has just been confirmed with forward entry `entry`.
#[inline(always)]
pub fn emit_confirmed(key: &FlowKey, entry: &CtEntry) {
    emit(SYNC_CONFIRMED, key, Some(entry));
}

/// A confirmed flow saw its first in-window FIN or RST.
#[inline(always)]
pub fn emit_closing(key: &FlowKey) {
    emit(SYNC_CLOSING, key, None);
}

/// A confirmed flow's entry was removed.
#[inline(always)]
pub fn emit_removed(key: &FlowKey) {
    emit(SYNC_REMOVED, key, None);
}
