//! Conntrack sync, the data path's half: one `SyncEvent` in the `SYNC_EVENTS` ring buffer
//! when a flow is confirmed, when a confirmed flow starts closing, and when a confirmed
//! flow's entry is removed. Never per packet and never for an unconfirmed flow, so a SYN
//! flood cannot flood the sync channel. Only while `CONFIG_FLAG_SYNC` is set (the daemon
//! sets it with `--sync-key-file`). The daemon reads the ring every few milliseconds, so
//! no wakeup is asked for; a full ring loses the event, counted in `SYNC_COUNTS`.
//!
//! Both families share the ring: an IPv4 flow's record is a `SyncEvent` (72 bytes), an
//! IPv6 flow's a `SyncEvent6` (120 bytes), tagged by `family`. Each is written straight
//! into its reservation. IPv4's hooks are inlined into `process4`; IPv6's are BPF functions
//! of their own that use no stack (`emit6`, `emit6_closing_reply`: `process6` has none left).

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use lb_common::{
    Addr, CONFIG_FLAG_SYNC, CtEntry, CtEntry6, FlowKey, FlowKey6, RevEntry6, SYNC_CLOSING,
    SYNC_CONFIRMED, SYNC_COUNT_EMITTED, SYNC_COUNT_RING_FULL, SYNC_COUNTS_LEN, SYNC_FAMILY_V6,
    SYNC_REMOVED, SYNC_RING_BYTES, SyncEvent, SyncEvent6,
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
fn emit<A: Addr>(kind: u32, family: u32, key: &FlowKey<A>, entry: Option<&CtEntry<A>>) {
    if !enabled() {
        return;
    }
    let Some(mut slot) = SYNC_EVENTS.reserve::<SyncEvent<A>>(0) else {
        count(SYNC_COUNT_RING_FULL);
        return;
    };
    let p = slot.as_mut_ptr();
    // SAFETY: an exclusive reservation of a whole `SyncEvent`, written field by field
    // (nothing of it is read before it is written).
    unsafe {
        (*p).kind = kind;
        (*p).family = family;
        (*p).key = *key;
        (*p).entry = match entry {
            Some(e) => *e,
            None => CtEntry::default(),
        };
    }
    slot.submit(BPF_RB_NO_WAKEUP);
    count(SYNC_COUNT_EMITTED);
}

/// A flow has just been confirmed with forward entry `entry` (`family`: its
/// `SYNC_FAMILY_*`).
#[inline(always)]
pub fn emit_confirmed<A: Addr>(family: u32, key: &FlowKey<A>, entry: &CtEntry<A>) {
    emit(SYNC_CONFIRMED, family, key, Some(entry));
}

/// A confirmed flow saw its first in-window FIN or RST.
#[inline(always)]
pub fn emit_closing<A: Addr>(family: u32, key: &FlowKey<A>) {
    emit(SYNC_CLOSING, family, key, None);
}

/// A confirmed flow's entry was removed.
#[inline(always)]
pub fn emit_removed<A: Addr>(family: u32, key: &FlowKey<A>) {
    emit(SYNC_REMOVED, family, key, None);
}

/// Keys for the map lookups of `emit6` and `emit6_closing_reply`: in global data (a map
/// value, so a valid helper key) rather than on their stack. Both are BPF functions of their
/// own, called from `process6`, whose frame (504 of 512 bytes, rounded up to 512) leaves
/// callees none: the verifier sums the frames of a call chain.
static KEYS: [u32; 2] = [0, 1];

/// `bpf_map_lookup_elem` with `KEYS[i]` as the key (no stack).
#[inline(always)]
fn lookup_global_key<T>(map: *const T, i: usize) -> *mut u8 {
    // SAFETY: `map` is a map definition (relocated to the map by the loader); the key is
    // global data of the key size of both maps (u32).
    unsafe {
        aya_ebpf::helpers::bpf_map_lookup_elem(map.cast_mut().cast(), (&raw const KEYS[i]).cast())
            .cast()
    }
}

#[inline(always)]
fn enabled6() -> bool {
    let c = lookup_global_key(&raw const CONFIG, 0).cast::<lb_common::Config>();
    // SAFETY: null or the live `CONFIG` value.
    !c.is_null() && unsafe { (*c).flags } & CONFIG_FLAG_SYNC != 0
}

#[inline(always)]
fn count6(i: u32) {
    let c = lookup_global_key(&raw const SYNC_COUNTS, i as usize).cast::<u64>();
    if !c.is_null() {
        // SAFETY: this CPU's element.
        unsafe { *c += 1 };
    }
}

/// An IPv6 flow's event (`entry` null but for `SYNC_CONFIRMED`). A BPF function of its
/// own, not inlined: `process6`'s frame has no room for the registers writing the record
/// needs. No stack of its own either (see `KEYS`).
#[inline(never)]
pub fn emit6(kind: u32, key: &FlowKey6, entry: *const CtEntry6) {
    if !enabled6() {
        return;
    }
    let Some(mut slot) = SYNC_EVENTS.reserve::<SyncEvent6>(0) else {
        count6(SYNC_COUNT_RING_FULL);
        return;
    };
    let p = slot.as_mut_ptr();
    // SAFETY: an exclusive reservation of a whole `SyncEvent6`, written field by field;
    // `entry` null or a live entry (the caller's).
    unsafe {
        (*p).kind = kind;
        (*p).family = SYNC_FAMILY_V6;
        (*p).key = *key;
        match entry.as_ref() {
            Some(e) => (*p).entry = *e,
            None => core::ptr::write_bytes(&raw mut (*p).entry, 0, 1),
        }
    }
    slot.submit(BPF_RB_NO_WAKEUP);
    count6(SYNC_COUNT_EMITTED);
}

/// `SYNC_CLOSING` of the IPv6 flow that reverse entry `r` belongs to, its key written
/// from `r`'s fields into the reservation (a 40-byte key built on `process6`'s stack does
/// not fit it).
#[inline(never)]
pub fn emit6_closing_reply(r: &RevEntry6, proto: u8) {
    if !enabled6() {
        return;
    }
    let Some(mut slot) = SYNC_EVENTS.reserve::<SyncEvent6>(0) else {
        count6(SYNC_COUNT_RING_FULL);
        return;
    };
    let p = slot.as_mut_ptr();
    // SAFETY: an exclusive reservation of a whole `SyncEvent6`, written field by field.
    unsafe {
        (*p).kind = SYNC_CLOSING;
        (*p).family = SYNC_FAMILY_V6;
        (*p).key.src_addr = r.client_addr;
        (*p).key.dst_addr = r.vip_addr;
        (*p).key.src_port = r.client_port;
        (*p).key.dst_port = r.vip_port;
        (*p).key.proto = proto;
        (*p).key._pad = [0; 3];
        core::ptr::write_bytes(&raw mut (*p).entry, 0, 1);
    }
    slot.submit(BPF_RB_NO_WAKEUP);
    count6(SYNC_COUNT_EMITTED);
}
