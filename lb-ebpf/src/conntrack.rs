//! Connection tracking: finding or creating a flow's entry, the tuple (SNAT port) it holds
//! for replies, TCP state, sequence windows for FIN/RST, and idle expiry.
//!
//! A flow starts *unconfirmed* (`UNCONFIRMED`, `UNCONFIRMED_REV`: small LRU maps of their
//! own) and becomes *confirmed* (`CONNTRACK`, `REVERSE`) only once both ends have spoken:
//! the client completes the handshake after the backend's SYN-ACK, or, for a flow picked up
//! mid-stream, the backend answers. Spoofed SYNs and bare ACKs therefore only ever churn
//! the unconfirmed maps: they cannot evict a confirmed flow nor pin a tuple for long.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_cxchg},
    ptr::null_mut,
};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_EXIST, BPF_NOEXIST},
    helpers::{bpf_ktime_get_coarse_ns, bpf_loop},
    maps::LruHashMap,
};
use lb_common::{
    BACKEND_FLAG_LOCAL, Backend, CT_FLAG_CLIENT_DATA, CT_FLAG_SEQ_KNOWN, Config, CtEntry, FlowKey,
    IPPROTO_TCP, LAST_SEEN_GRANULARITY_NS, NEW_FLOW_BUDGET_PER_SEC, NS_PER_SEC, PROVEN_TTL_NS,
    REV_FLAG_BACKEND_DATA, REV_FLAG_BACKEND_SEEN, REV_FLAG_MIDSTREAM, REV_FLAG_SEQ_KNOWN, Reason,
    RevEntry, SEQ_SLACK, SEQ_WINDOW_ABOVE, SEQ_WINDOW_BELOW, SNAT_PROBES, TCP_CLOSING_TIMEOUT_NS,
    TCP_ESTABLISHED_TIMEOUT_NS, TCP_OPEN_TIMEOUT_NS, TCP_SYN_TIMEOUT_NS, UDP_TIMEOUT_NS,
    UNCONFIRMED_STEAL_AFTER_NS, VIP_FLAG_DNAT, VipMeta, ct_state,
};
use network_types::tcp::TcpHdr;

use crate::{
    Verdict,
    family::Family,
    lookup,
    maps::{NEW_FLOW_BUDGET, PROVEN, Scratch},
    packet::{Headers, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
};

/// `last_seen_ns` of a tuple given up by its flow: expired whatever its state.
pub const RELEASED: u64 = 0;

/// A flow ready to be translated: only what the rewrite needs (the stack is small).
pub struct Flow<A: Family> {
    pub backend: &'static Backend<A>,
    pub backend_idx: u32,
    pub snat_addr: A,
    pub snat_port: u16,
    /// The VIP's index (counters).
    pub vip_index: u32,
    pub new: bool,
}

impl<A: Family> Flow<A> {
    #[inline(always)]
    fn of(e: &CtEntry<A>, backend: &'static Backend<A>, new: bool) -> Self {
        Self {
            backend,
            backend_idx: e.backend_idx,
            snat_addr: e.snat_addr,
            snat_port: e.snat_port,
            vip_index: e.vip_index,
            new,
        }
    }
}

/// `CLOCK_MONOTONIC_COARSE`: the daemon's `CLOCK_MONOTONIC`, up to a tick behind. Every
/// timestamp and timeout of the program is coarser than a tick (`last_seen_ns` moves only
/// every `LAST_SEEN_GRANULARITY_NS`), and the coarse read takes no clocksource read (in a
/// VM, `bpf_ktime_get_ns` is a pvclock read on every packet).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The state of a confirmed flow after a packet with `flags` in state `state`. A bare SYN
/// on a closing entry is the client reusing its port: a new connection to the same backend.
/// Nothing else moves a flow forward here: `TCP_SYN` -> `TCP_OPEN` takes the proof of the
/// new handshake, `TCP_OPEN` -> `TCP_ESTABLISHED` data both ways (`handshake_step`).
#[inline(always)]
pub fn next_state(state: u8, proto: u8, flags: u8) -> u8 {
    if proto != IPPROTO_TCP {
        ct_state::UDP
    } else if flags & (TCP_FIN | TCP_RST) != 0 {
        ct_state::TCP_CLOSING
    } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN && state == ct_state::TCP_CLOSING {
        ct_state::TCP_SYN
    } else {
        state
    }
}

/// A TCP segment's acknowledgment number (host order). Read from the frame: only the
/// handshake path needs it, so `Headers` does not carry it.
#[inline(always)]
fn ack_of<A: Family>(h: &Headers<A>) -> u32 {
    // SAFETY: `l4` is the bounds-checked TCP header (its fixed 20 bytes are in the frame).
    unsafe { u32::from_be_bytes((*(h.l4 as *const TcpHdr)).ack_seq) }
}

/// Whether a TCP segment acknowledges exactly `next` (with the ACK flag): the proof that
/// its sender has seen the segment that ends at `next`.
#[inline(always)]
fn acks<A: Family>(h: &Headers<A>, next: u32) -> bool {
    h.tcp_flags & TCP_ACK != 0 && ack_of(h) == next
}

/// Whether a TCP segment carries data (its sequence space beyond SYN and FIN).
#[inline(always)]
fn has_data<A: Family>(h: &Headers<A>) -> bool {
    let syn_fin = (h.tcp_flags & TCP_SYN != 0) as u32 + (h.tcp_flags & TCP_FIN != 0) as u32;
    h.seq_end.wrapping_sub(h.seq) > syn_fin
}

#[inline(always)]
fn timeout(state: u8) -> u64 {
    match state {
        ct_state::TCP_SYN | ct_state::UNCONFIRMED => TCP_SYN_TIMEOUT_NS,
        ct_state::TCP_ESTABLISHED => TCP_ESTABLISHED_TIMEOUT_NS,
        ct_state::TCP_OPEN => TCP_OPEN_TIMEOUT_NS,
        ct_state::TCP_CLOSING => TCP_CLOSING_TIMEOUT_NS,
        _ => UDP_TIMEOUT_NS,
    }
}

/// Whether an entry last seen at `last_seen` in `state` has outlived its idle timeout (or
/// was released).
#[inline(always)]
pub fn expired(state: u8, last_seen: u64, now: u64) -> bool {
    last_seen == RELEASED || now.saturating_sub(last_seen) > timeout(state)
}

/// Whether a FIN or RST with sequence number `seq` fits a stream last recorded at `next`
/// (RFC 5961's concern: a blind attacker must not be able to tear a flow down). A stream
/// not recorded yet accepts anything.
#[inline(always)]
pub fn in_window(known: bool, next: u32, seq: u32) -> bool {
    let d = seq.wrapping_sub(next) as i32;
    !known || (d >= -(SEQ_WINDOW_BELOW as i32) && d <= SEQ_WINDOW_ABOVE as i32)
}

/// Records a stream's position `end` when it is the first, when the segment is a SYN
/// (which starts the stream anew: a retransmitted handshake may carry another initial
/// sequence number), or when it has moved more than `SEQ_SLACK` ahead, so a bulk stream
/// rewrites its entry only every few dozen packets.
#[inline(always)]
fn advance<A: Family>(next: *mut u32, flags: *mut u8, known: u8, h: &Headers<A>) {
    let end = h.seq_end;
    // SAFETY: both point into a live map value.
    unsafe {
        if *flags & known == 0
            || h.tcp_flags & TCP_SYN != 0
            || end.wrapping_sub(*next) as i32 > SEQ_SLACK as i32
        {
            *next = end;
            *flags |= known;
        }
    }
}

/// Atomically replaces `*word` by `new` if it still holds `old` (the BPF instruction
/// `cmpxchg`): of several CPUs racing for one expired tuple, exactly one wins. The
/// intrinsic, because `AtomicU64::compare_exchange` is not offered for the BPF target.
#[inline(always)]
fn compare_and_swap(word: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: `word` is an aligned u64 inside a live map value, only ever accessed through
    // raw pointers.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(word, old, new)
    }
    .1
}

/// Rewrites state and `last_seen` only when they change enough to matter, so established
/// flows do not write the shared entry on every packet.
#[inline(always)]
pub fn touch(state: *mut u8, last_seen: *mut u64, proto: u8, flags: u8, now: u64) {
    // SAFETY: both point into a live map value.
    unsafe {
        let next = next_state(*state, proto, flags);
        if next != *state || now.saturating_sub(*last_seen) > LAST_SEEN_GRANULARITY_NS {
            *state = next;
            *last_seen = now;
        }
    }
}

/// Whether a packet with `flags` would change an entry's state or its coarse `last_seen`:
/// only then is the entry (and its reverse entry) written.
#[inline(always)]
pub fn stale(state: u8, last_seen: u64, proto: u8, flags: u8, now: u64) -> bool {
    next_state(state, proto, flags) != state
        || now.saturating_sub(last_seen) > LAST_SEEN_GRANULARITY_NS
}

/// A flow key. Built field by field with the protocol and the padding as one aligned word:
/// a literal's three zero padding bytes compile to a call of `memset` (a BPF function
/// call, around which every live register is spilled).
#[inline(always)]
pub fn flow_key<A: Family>(src: A, dst: A, sport: u16, dport: u16, proto: u8) -> FlowKey<A> {
    let mut k = core::mem::MaybeUninit::<FlowKey<A>>::uninit();
    let p = k.as_mut_ptr();
    // SAFETY: every byte is written: the four fields, then `proto` and `_pad` together
    // (at a 4-aligned offset of a 4-aligned struct: 12 for IPv4, 36 for IPv6).
    unsafe {
        (&raw mut (*p).src_addr).write(src);
        (&raw mut (*p).dst_addr).write(dst);
        (&raw mut (*p).src_port).write(sport);
        (&raw mut (*p).dst_port).write(dport);
        (&raw mut (*p).proto)
            .cast::<u32>()
            .write(u32::from_ne_bytes([proto, 0, 0, 0]));
        k.assume_init()
    }
}

/// The client-side key of a packet to a VIP.
#[inline(always)]
pub fn key_of<A: Family>(h: &Headers<A>) -> FlowKey<A> {
    flow_key(h.src(), h.dst(), h.sport, h.dport, h.proto)
}

/// The key under which a flow's replies arrive: the tuple the flow holds.
#[inline(always)]
pub fn reverse_key<A: Family>(e: &CtEntry<A>, proto: u8) -> FlowKey<A> {
    flow_key(
        e.backend_addr,
        e.snat_addr,
        e.backend_port,
        e.snat_port,
        proto,
    )
}

/// The client-side key of the flow a reverse entry belongs to.
#[inline(always)]
pub fn client_key<A: Family>(r: &RevEntry<A>, proto: u8) -> FlowKey<A> {
    flow_key(r.client_addr, r.vip_addr, r.client_port, r.vip_port, proto)
}

/// Whether a reverse entry belongs to the client flow `key`.
#[inline(always)]
pub fn owns<A: Family>(rev: &RevEntry<A>, key: &FlowKey<A>) -> bool {
    rev.client_addr == key.src_addr
        && rev.client_port == key.src_port
        && rev.vip_addr == key.dst_addr
        && rev.vip_port == key.dst_port
}

/// The reverse entry of a forward entry (`key` being its client side).
#[inline(always)]
fn reverse_of<A: Family>(e: &CtEntry<A>, key: &FlowKey<A>) -> RevEntry<A> {
    RevEntry {
        last_seen_ns: e.last_seen_ns,
        client_addr: key.src_addr,
        vip_addr: key.dst_addr,
        client_port: key.src_port,
        vip_port: key.dst_port,
        backend_idx: e.backend_idx,
        client_mac: e.client_mac,
        state: e.state,
        flags: 0,
        vip_index: e.vip_index,
        client_ifindex: e.client_ifindex,
        seq_next: 0,
        client_vlan: e.client_vlan,
    }
}

/// The forward entry of the flow that holds tuple `rkey` with reverse entry `r`.
#[inline(always)]
fn forward_of<A: Family>(rkey: &FlowKey<A>, r: &RevEntry<A>) -> CtEntry<A> {
    CtEntry {
        last_seen_ns: r.last_seen_ns,
        backend_idx: r.backend_idx,
        backend_addr: rkey.src_addr,
        snat_addr: rkey.dst_addr,
        backend_port: rkey.src_port,
        snat_port: rkey.dst_port,
        state: r.state,
        flags: 0,
        client_mac: r.client_mac,
        vip_index: r.vip_index,
        client_ifindex: r.client_ifindex,
        seq_next: 0,
        client_vlan: r.client_vlan,
    }
}

/// Takes tuple `rkey` in `map` for the flow `key`: free, already the flow's own, or held by
/// an expired entry. Reclaiming is a compare-and-swap of the old entry's `last_seen_ns`
/// (only one CPU wins, and the others then see a live entry), followed by a replace of the
/// whole value: no tuple is ever held by two live flows, and nothing deletes an entry it
/// has not checked in the same atomic step.
/// With `steal_after` below `u64::MAX`, an entry idle for longer than that counts as
/// expired too. `Err` carries when the holder was last seen (`now` when another CPU won a
/// race for the tuple), so a prober learns it without a second lookup.
#[inline(always)]
fn take_tuple<A: Family>(
    map: &LruHashMap<FlowKey<A>, RevEntry<A>>,
    rkey: &FlowKey<A>,
    rev: &RevEntry<A>,
    key: &FlowKey<A>,
    now: u64,
    steal_after: u64,
) -> Result<(), u64> {
    // Looked up first: a refused insert into an LRU map still takes (and gives back) a free
    // element, which under a flood costs an eviction each time.
    let Some(p) = map.get_ptr_mut(rkey) else {
        // Free: of several racing claimers, only one insert succeeds.
        return map.insert(rkey, rev, BPF_NOEXIST as u64).map_err(|_| now);
    };
    // SAFETY: `p` points into a live map value; fields read through the raw pointer.
    let (seen, state, mine) = unsafe { ((*p).last_seen_ns, (*p).state, owns(&*p, key)) };
    if !mine && !expired(state, seen, now) && now.saturating_sub(seen) <= steal_after {
        return Err(seen);
    }
    // SAFETY: `last_seen_ns` of the live value.
    if !mine && !compare_and_swap(unsafe { &raw mut (*p).last_seen_ns }, seen, now) {
        return Err(now);
    }
    if map.insert(rkey, rev, BPF_EXIST as u64).is_ok()
        || map.insert(rkey, rev, BPF_NOEXIST as u64).is_ok()
    {
        Ok(())
    } else {
        Err(now)
    }
}

/// Gives up tuple `rkey` if the flow `key` still holds it: its `last_seen_ns` is swapped to
/// `RELEASED` only if unchanged since the ownership check, so a tuple another CPU has
/// meanwhile reclaimed is left alone. The entry stays until reclaimed or evicted.
#[inline(always)]
fn release<A: Family>(
    map: &LruHashMap<FlowKey<A>, RevEntry<A>>,
    rkey: &FlowKey<A>,
    key: &FlowKey<A>,
) {
    if let Some(p) = map.get_ptr_mut(rkey) {
        // SAFETY: `p` points into a live map value.
        unsafe {
            let seen = (*p).last_seen_ns;
            if owns(&*p, key) {
                compare_and_swap(&raw mut (*p).last_seen_ns, seen, RELEASED);
            }
        }
    }
}

/// Makes sure a confirmed flow still holds its tuple, on every packet: a tuple whose
/// reverse entry the LRU evicted may be claimed by a new flow at once, and from then on
/// the old flow must not send with it. Refreshes the reverse entry on the coarse clock.
/// An entry the LRU evicted is put back if the tuple is still free; false when another
/// flow took the tuple meanwhile.
#[inline(always)]
fn hold_reverse<A: Family>(e: &CtEntry<A>, key: &FlowKey<A>, flags: u8, now: u64) -> bool {
    let rkey = reverse_key(e, key.proto);
    match A::reverse().get_ptr_mut(&rkey) {
        Some(r) => {
            // SAFETY: `r` points into a live map value.
            unsafe {
                if !owns(&*r, key) || (*r).last_seen_ns == RELEASED {
                    return false;
                }
                if stale((*r).state, (*r).last_seen_ns, key.proto, flags, now) {
                    touch(
                        &raw mut (*r).state,
                        &raw mut (*r).last_seen_ns,
                        key.proto,
                        flags,
                        now,
                    );
                }
            }
            true
        }
        None => {
            let mut rev = reverse_of(e, key);
            rev.last_seen_ns = now;
            take_tuple(A::reverse(), &rkey, &rev, key, now, u64::MAX).is_ok()
        }
    }
}

/// What probing a tuple for a new flow found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The tuple is the new flow's (unconfirmed).
    Taken,
    /// A live confirmed flow of this very client holds it (its forward entry was lost):
    /// its forward entry, rebuilt, is in the scratch `ct`.
    Adopted,
    /// A confirmed flow holds it.
    Busy,
    /// An unconfirmed flow holds it, last seen at this time.
    BusyUnconfirmed(u64),
}

/// Per-CPU room for the entries a new or confirming flow builds: the program's stack is
/// 512 bytes, and each entry is 48.
#[inline(always)]
fn scratch<A: Family>() -> Result<*mut Scratch<A>, Verdict> {
    A::scratch()
        .get_ptr_mut(0)
        .ok_or(Verdict::drop(Reason::DropInternal))
}

/// Claims tuple `rkey` for the new unconfirmed flow `key` (reverse entry `rev`), unless a
/// live confirmed flow holds it; an unconfirmed holder idle for longer than `steal_after`
/// loses it.
#[inline(always)]
fn claim<A: Family>(
    rkey: &FlowKey<A>,
    rev: &RevEntry<A>,
    key: &FlowKey<A>,
    now: u64,
    steal_after: u64,
    s: *mut Scratch<A>,
) -> Claim {
    if let Some(r) = A::reverse().get_ptr_mut(rkey) {
        // SAFETY: `r` points into a live map value; `s` is this CPU's scratch.
        unsafe {
            if !expired((*r).state, (*r).last_seen_ns, now) {
                if !owns(&*r, key) {
                    return Claim::Busy;
                }
                (*s).ct = forward_of(rkey, &*r);
                return Claim::Adopted;
            }
        }
    }
    match take_tuple(A::unconfirmed_rev(), rkey, rev, key, now, steal_after) {
        Ok(()) => Claim::Taken,
        Err(seen) => Claim::BusyUnconfirmed(seen),
    }
}

/// Moves a flow into the confirmed maps (both ends have spoken): its tuple into `REVERSE`
/// first, so the tuple is held throughout, then its forward entry; the unconfirmed
/// entries go. `ct` and `rev` may point into the unconfirmed maps: read nothing through
/// them afterwards.
#[inline(always)]
fn confirm<A: Family>(
    key: &FlowKey<A>,
    rkey: &FlowKey<A>,
    ct: *mut CtEntry<A>,
    rev: *mut RevEntry<A>,
    local: bool,
    now: u64,
) -> Result<(), Verdict> {
    let state = if key.proto == IPPROTO_TCP {
        ct_state::TCP_OPEN
    } else {
        ct_state::UDP
    };
    // SAFETY: both point into live map values (or this CPU's scratch).
    let (ct, rev) = unsafe {
        (*ct).state = state;
        (*ct).last_seen_ns = now;
        (*rev).state = state;
        (*rev).last_seen_ns = now;
        (*rev).flags &= REV_FLAG_SEQ_KNOWN;
        (&*ct, &*rev)
    };
    if !local && take_tuple(A::reverse(), rkey, rev, key, now, u64::MAX).is_err() {
        return Err(Verdict::drop(Reason::DropTupleInUse));
    }
    if A::conntrack().insert(key, ct, BPF_ANY as u64).is_err() {
        release(A::reverse(), rkey, key);
        return Err(Verdict::drop(Reason::DropConntrackFull));
    }
    A::sync_confirmed(key, ct);
    if !local {
        let _ = A::unconfirmed_rev().remove(rkey);
    }
    let _ = A::unconfirmed().remove(key);
    Ok(())
}

/// Finds the live entry of a client flow, or creates one: backend from Maglev, SNAT port,
/// reverse entry. An entry whose backend is gone (removed, or its slot reused by another
/// address or port), that has expired, or whose reverse tuple was lost, is replaced.
///
/// `key` is the packet's client-side key and `entry` its `CONNTRACK` entry, when the caller
/// looked them up (`Family::ENTRY_FIRST`; else both are found here); `meta` the VIP's, if
/// the caller looked it up (only a new flow needs it).
#[inline(always)]
pub fn forward_flow<A: Family>(
    h: &Headers<A>,
    key: Option<&FlowKey<A>>,
    entry: Option<*mut CtEntry<A>>,
    meta: Option<&VipMeta<A>>,
    cfg: &Config,
    client_mac: [u8; 6],
    ingress_ifindex: u32,
) -> Result<Flow<A>, Verdict> {
    let now = now();
    let tcp = h.proto == IPPROTO_TCP;
    let local_key;
    let (key, entry) = match key {
        Some(k) => (k, entry),
        None => {
            local_key = key_of(h);
            (&local_key, A::conntrack().get_ptr_mut(&local_key))
        }
    };
    if let Some(e) = entry {
        // SAFETY: `e` points into a live map value; copied before use.
        let mut local = core::mem::MaybeUninit::<CtEntry<A>>::uninit();
        let old = unsafe { &*A::snapshot(e, local.as_mut_ptr(), |s| &raw mut (*s).old) };
        if !expired(old.state, old.last_seen_ns, now)
            && let Some(backend) =
                lookup::live_backend(old.backend_idx, old.backend_addr, old.backend_port)
        {
            let local = backend.flags & BACKEND_FLAG_LOCAL != 0;
            let fits = !tcp || in_window(old.flags & CT_FLAG_SEQ_KNOWN != 0, old.seq_next, h.seq);
            if h.tcp_flags & (TCP_FIN | TCP_RST) != 0 && !fits {
                return Err(Verdict::drop(Reason::DropOutOfWindow));
            }
            if local || hold_reverse(old, key, h.tcp_flags, now) {
                if h.tcp_flags & (TCP_FIN | TCP_RST) != 0 && old.state != ct_state::TCP_CLOSING {
                    A::sync_closing(key);
                }
                // Established flows skip this: one compare of a byte already read.
                if tcp && old.state != ct_state::TCP_ESTABLISHED {
                    handshake_step(e, old, key, h, local, now);
                }
                // SAFETY: fields of the live value.
                unsafe {
                    touch(
                        &raw mut (*e).state,
                        &raw mut (*e).last_seen_ns,
                        h.proto,
                        h.tcp_flags,
                        now,
                    );
                    // Only a segment that fits moves the window: a blind one must not.
                    // A bare SYN on a closing entry is the client reusing its port (the
                    // state goes back to SYN above): its stream starts anew, at a sequence
                    // number unrelated to the old one, so it is recorded whatever the old
                    // window said (else the new connection's FIN and RST would be dropped
                    // as out of window).
                    let restart = h.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
                        && old.state == ct_state::TCP_CLOSING;
                    if tcp && (fits || restart) {
                        advance(
                            &raw mut (*e).seq_next,
                            &raw mut (*e).flags,
                            CT_FLAG_SEQ_KNOWN,
                            h,
                        );
                    }
                }
                if (client_mac != old.client_mac
                    || ingress_ifindex != old.client_ifindex
                    || h.vlan != old.client_vlan)
                    && fits
                    && !local
                {
                    follow_client(e, old, key, client_mac, ingress_ifindex, h.vlan);
                }
                return Ok(Flow::of(old, backend, false));
            }
        }
        // Stale: free its tuple (SNAT port) and its entry before looking further.
        release(A::reverse(), &reverse_key(old, h.proto), key);
        let _ = A::conntrack().remove(key);
        A::sync_removed(key);
    }
    if let Some(flow) = unconfirmed_flow(h, key, client_mac, ingress_ifindex, now)? {
        return Ok(flow);
    }
    let mut local = core::mem::MaybeUninit::uninit();
    let meta = match meta {
        Some(m) => m,
        // The entry's VIP held its index, so the VIP was there a moment ago: gone now, its
        // packets are not ours.
        None if A::ENTRY_FIRST => {
            lookup::vip_meta(h, &mut local).ok_or(Verdict::pass(Reason::PassNotForVip))?
        }
        // Not reached: without `ENTRY_FIRST` the caller always has the meta.
        None => return Err(Verdict::drop(Reason::DropInternal)),
    };
    new_flow(h, key, meta, cfg, client_mac, ingress_ifindex, now)
}

/// A client packet of a confirmed TCP flow that is not established: the handshake path
/// (established packets never come here).
/// - A bare SYN on a closing entry (the client reusing its port; `next_state` takes it
///   back to `TCP_SYN`, 5 s) forgets what the old connection proved: the backend's
///   SYN-ACK and data must be seen anew.
/// - In `TCP_SYN`, only an ACK of the backend's new initial sequence number + 1 (recorded
///   by its SYN-ACK, `reply_touch`) moves the flow on, to `TCP_OPEN`: a blind SYN and a
///   guessed ACK keep it at 5 s.
/// - In `TCP_OPEN` (30 s), client data is noted; once the backend has sent data too, the
///   flow is established (2 h).
///
/// A local backend's answers never pass here: the client's next packet is all the proof
/// there is, and its data alone establishes the flow (no tuple is held).
#[inline(always)]
fn handshake_step<A: Family>(
    e: *mut CtEntry<A>,
    old: &CtEntry<A>,
    key: &FlowKey<A>,
    h: &Headers<A>,
    local: bool,
    now: u64,
) {
    let flags = h.tcp_flags;
    if flags & (TCP_FIN | TCP_RST) != 0 {
        return;
    }
    // `hold_reverse` has just checked (or put back) the flow's own reverse entry.
    let r = if local {
        None
    } else {
        A::reverse().get_ptr_mut(&reverse_key(old, key.proto))
    };
    let next = match old.state {
        ct_state::TCP_CLOSING => {
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                // SAFETY: `e` and `r` point into live map values.
                unsafe {
                    (*e).flags &= !CT_FLAG_CLIENT_DATA;
                    if let Some(r) = r {
                        (*r).flags &= !(REV_FLAG_BACKEND_SEEN | REV_FLAG_BACKEND_DATA);
                    }
                }
            }
            return;
        }
        ct_state::TCP_SYN if flags & TCP_SYN == 0 => {
            let proven = match r {
                // SAFETY: `r` points into a live map value.
                Some(r) => unsafe {
                    (*r).flags & REV_FLAG_BACKEND_SEEN != 0 && acks(h, (*r).seq_next)
                },
                None => local,
            };
            if !proven {
                return;
            }
            if r.is_some() {
                prove(&key.src_addr, now);
            }
            ct_state::TCP_OPEN
        }
        ct_state::TCP_OPEN => {
            let data = has_data(h);
            // SAFETY: `e` and `r` point into live map values.
            unsafe {
                if data && (*e).flags & CT_FLAG_CLIENT_DATA == 0 {
                    (*e).flags |= CT_FLAG_CLIENT_DATA;
                }
                let backend_data = match r {
                    Some(r) => (*r).flags & REV_FLAG_BACKEND_DATA != 0,
                    None => local,
                };
                if !backend_data || (*e).flags & CT_FLAG_CLIENT_DATA == 0 {
                    return;
                }
            }
            ct_state::TCP_ESTABLISHED
        }
        _ => return,
    };
    // SAFETY: `e` and `r` point into live map values.
    unsafe {
        (*e).state = next;
        (*e).last_seen_ns = now;
        if let Some(r) = r {
            (*r).state = next;
            (*r).last_seen_ns = now;
        }
    }
}

/// A confirmed flow's client now sends from another MAC, interface or VLAN (a router
/// failover, a moved VM), in window: replies follow it.
#[inline(always)]
fn follow_client<A: Family>(
    e: *mut CtEntry<A>,
    old: &CtEntry<A>,
    key: &FlowKey<A>,
    mac: [u8; 6],
    ifindex: u32,
    vlan: u32,
) {
    // SAFETY: fields of the live value.
    unsafe {
        (*e).client_mac = mac;
        (*e).client_ifindex = ifindex;
        (*e).client_vlan = vlan;
    }
    if let Some(r) = A::reverse().get_ptr_mut(&reverse_key(old, key.proto)) {
        // SAFETY: `r` points into a live map value.
        unsafe {
            if owns(&*r, key) {
                (*r).client_mac = mac;
                (*r).client_ifindex = ifindex;
                (*r).client_vlan = vlan;
            }
        }
    }
}

/// The packet of a flow not confirmed yet: refreshes it (replies go to whoever sends, as
/// nothing is confirmed), and confirms it when this is the client's proven answer to the
/// backend's: an ACK of exactly the backend's position (its SYN-ACK's initial sequence
/// number + 1), which only whoever received the SYN-ACK knows. A guessed ACK is forwarded
/// (the backend rejects it with a RST, which ends the attempt) but confirms nothing.
/// `None` when there is no usable unconfirmed entry.
#[inline(always)]
fn unconfirmed_flow<A: Family>(
    h: &Headers<A>,
    key: &FlowKey<A>,
    client_mac: [u8; 6],
    ingress_ifindex: u32,
    now: u64,
) -> Result<Option<Flow<A>>, Verdict> {
    let Some(u) = A::unconfirmed().get_ptr_mut(key) else {
        return Ok(None);
    };
    // SAFETY: `u` points into a live map value.
    let (backend, rkey) = unsafe {
        match lookup::live_backend((*u).backend_idx, (*u).backend_addr, (*u).backend_port) {
            Some(b) if !expired((*u).state, (*u).last_seen_ns, now) => {
                (b, reverse_key(&*u, h.proto))
            }
            _ => {
                let _ = A::unconfirmed().remove(key);
                return Ok(None);
            }
        }
    };
    let local = backend.flags & BACKEND_FLAG_LOCAL != 0;
    let rev: *mut RevEntry<A> = if local {
        // No tuple: the scratch holds the reverse entry `confirm` wants.
        let s = scratch()?;
        // SAFETY: this CPU's scratch, `u` a live map value.
        unsafe {
            (*s).rev = reverse_of(&*u, key);
            &raw mut (*s).rev
        }
    } else {
        match A::unconfirmed_rev().get_ptr_mut(&rkey) {
            // SAFETY: `r` points into a live map value.
            Some(r)
                if unsafe { owns(&*r, key) && !expired((*r).state, (*r).last_seen_ns, now) } =>
            {
                r
            }
            _ => {
                let _ = A::unconfirmed().remove(key);
                return Ok(None);
            }
        }
    };
    // SAFETY: fields of live values.
    let proven = unsafe {
        (*rev).client_mac = client_mac;
        (*rev).client_ifindex = ingress_ifindex;
        (*rev).client_vlan = h.vlan;
        (*rev).last_seen_ns = now;
        (*u).client_mac = client_mac;
        (*u).client_ifindex = ingress_ifindex;
        (*u).client_vlan = h.vlan;
        (*u).last_seen_ns = now;
        if h.proto == IPPROTO_TCP {
            advance(
                &raw mut (*u).seq_next,
                &raw mut (*u).flags,
                CT_FLAG_SEQ_KNOWN,
                h,
            );
        }
        (*rev).flags & (REV_FLAG_BACKEND_SEEN | REV_FLAG_SEQ_KNOWN)
            == REV_FLAG_BACKEND_SEEN | REV_FLAG_SEQ_KNOWN
            && acks(h, (*rev).seq_next)
    };
    // SAFETY: `u` is live.
    let flow = Flow::of(unsafe { &*u }, backend, false);
    // A local backend's answers never pass here: the client's next packet after its SYN
    // is all the proof there is (and no tuple is at stake).
    let confirming = h.proto == IPPROTO_TCP && h.tcp_flags & (TCP_SYN | TCP_RST) == 0;
    if (proven || local) && confirming {
        confirm(key, &rkey, u, rev, local, now)?;
        if proven {
            prove(&key.src_addr, now);
        }
    }
    Ok(Some(flow))
}

/// Whether a new flow from `src` may start: a source proven within `PROVEN_TTL_NS` always
/// may (one LRU lookup); any other takes a token of this CPU's bucket, refilled at
/// `NEW_FLOW_BUDGET_PER_SEC` up to as many. Only new flows pay this (a packet with no
/// entry); established and handshake packets never do.
#[inline(always)]
fn admitted<A: Family>(src: &A, now: u64) -> bool {
    // SAFETY: plain value copied out of the map.
    if let Some(seen) = unsafe { PROVEN.get(&A::source_key(src)) }
        && now.saturating_sub(*seen) < PROVEN_TTL_NS
    {
        return true;
    }
    let Some(b) = NEW_FLOW_BUDGET.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's value, used by this packet only.
    unsafe {
        // At most a second's worth: the product cannot overflow, and the bucket is full.
        let elapsed = now.saturating_sub((*b).refilled_ns).min(NS_PER_SEC);
        let add = elapsed * NEW_FLOW_BUDGET_PER_SEC / NS_PER_SEC;
        if add > 0 {
            (*b).tokens = ((*b).tokens + add).min(NEW_FLOW_BUDGET_PER_SEC);
            (*b).refilled_ns = now;
        }
        if (*b).tokens == 0 {
            return false;
        }
        (*b).tokens -= 1;
    }
    true
}

/// Records that `src` has just completed a proven handshake (see `admitted`).
#[inline(always)]
fn prove<A: Family>(src: &A, now: u64) {
    let _ = PROVEN.insert(&A::source_key(src), &now, BPF_ANY as u64);
}

/// A new flow: a backend from the live Maglev table, a tuple (SNAT port in full NAT), an
/// unconfirmed entry.
#[inline(always)]
fn new_flow<A: Family>(
    h: &Headers<A>,
    key: &FlowKey<A>,
    meta: &VipMeta<A>,
    cfg: &Config,
    client_mac: [u8; 6],
    ingress_ifindex: u32,
    now: u64,
) -> Result<Flow<A>, Verdict> {
    if !admitted(&key.src_addr, now) {
        return Err(Verdict::drop(Reason::DropNewFlowBudget));
    }
    let hash = lookup::hash_of(key);
    let (backend_idx, backend) = lookup::pick_backend(meta, hash)?;
    let local = backend.flags & BACKEND_FLAG_LOCAL != 0;
    if backend.mac == [0; 6] && !local {
        return Err(Verdict::pass(Reason::PassNoNeighbour));
    }
    let tcp = h.proto == IPPROTO_TCP;
    let s = scratch()?;
    // SAFETY: this CPU's scratch, used by this packet only.
    let (entry, rev) = unsafe {
        let entry = &raw mut (*s).ct;
        let rev = &raw mut (*s).rev;
        *entry = CtEntry {
            last_seen_ns: now,
            backend_idx,
            backend_addr: backend.addr,
            snat_addr: if meta.flags & VIP_FLAG_DNAT != 0 || local {
                key.src_addr
            } else {
                meta.snat_addr
            },
            backend_port: backend.port,
            snat_port: h.sport,
            state: ct_state::UNCONFIRMED,
            flags: if tcp { CT_FLAG_SEQ_KNOWN } else { 0 },
            client_mac,
            vip_index: meta.index,
            client_ifindex: ingress_ifindex,
            seq_next: h.seq_end,
            client_vlan: h.vlan,
        };
        *rev = reverse_of(&*entry, key);
        if !tcp || h.tcp_flags & TCP_SYN == 0 {
            (*rev).flags = REV_FLAG_MIDSTREAM;
        }
        (entry, rev)
    };

    let claimed = if local {
        // The local stack answers from the VIP itself: no translation, no tuple.
        Claim::Taken
    } else if meta.flags & VIP_FLAG_DNAT != 0 {
        // SAFETY: scratch values.
        unsafe { claim(&reverse_key(&*entry, h.proto), &*rev, key, now, u64::MAX, s) }
    } else {
        claim_snat_port(key, cfg, hash, now, s)
    };
    match claimed {
        Claim::Taken => {}
        Claim::Busy | Claim::BusyUnconfirmed(_) if meta.flags & VIP_FLAG_DNAT != 0 => {
            return Err(Verdict::drop(Reason::DropTupleInUse));
        }
        Claim::Busy | Claim::BusyUnconfirmed(_) => {
            return Err(Verdict::drop(Reason::DropSnatExhausted));
        }
        Claim::Adopted => {
            // SAFETY: `claim` rebuilt the forward entry in the scratch.
            let ct = unsafe { &*entry };
            if A::conntrack().insert(key, ct, BPF_ANY as u64).is_err() {
                return Err(Verdict::drop(Reason::DropConntrackFull));
            }
            return Ok(Flow::of(ct, backend, false));
        }
    }
    // SAFETY: scratch value.
    let entry = unsafe { &*entry };
    if A::unconfirmed().insert(key, entry, BPF_ANY as u64).is_err() {
        if !local {
            release(A::unconfirmed_rev(), &reverse_key(entry, h.proto), key);
        }
        return Err(Verdict::drop(Reason::DropConntrackFull));
    }
    Ok(Flow::of(entry, backend, true))
}

/// Claims a SNAT port for the flow (`(*s).ct`, in the scratch, gets it; `(*s).rev` is its
/// reverse entry): the first probe is derived from the flow hash (so every node picks the
/// same port for the same flow), the next ones follow it, at most once around the range.
/// When every probe is held, the one held by the unconfirmed flow idle the longest is taken
/// over if it has been idle for `UNCONFIRMED_STEAL_AFTER_NS`: a flood of spoofed SYNs then
/// slows new handshakes down instead of stopping them, and never touches a confirmed flow.
///
/// The probes run as a `bpf_loop` callback (`snat_probe`): the verifier walks its body
/// once per state reaching the loop instead of once per unrolled probe (16 probes unrolled
/// were 61 % of the instructions it processed, most of the start-up's time).
#[inline(always)]
fn claim_snat_port<A: Family>(
    key: &FlowKey<A>,
    cfg: &Config,
    hash: u32,
    now: u64,
    s: *mut Scratch<A>,
) -> Claim {
    // Port 0 is never handed out.
    let min = (cfg.snat_port_min as u32).max(1);
    let max = cfg.snat_port_max as u32;
    if max < min {
        return Claim::Busy;
    }
    let range = max - min + 1;
    let probes = SNAT_PROBES.min(range);
    // SAFETY: this CPU's scratch, used by this packet only.
    unsafe {
        // Field by field: a literal would be built on the stack first.
        let p = &raw mut (*s).probe;
        (*p).key = *key;
        (*p).rkey = reverse_key(&(*s).ct, key.proto);
        (*p).now = now;
        (*p).oldest_seen = u64::MAX;
        (*p).min = min;
        (*p).range = range;
        (*p).hash = hash;
        (*p).probes = probes;
        (*p).oldest_port = 0;
        (*p).outcome = PROBE_BUSY;
        // The callback finds its state in the scratch: the stack has no room for it, and
        // the global function that runs the loop takes no pointer.
        A::snat_probes(probes + 1);
        match (*p).outcome {
            PROBE_TAKEN => Claim::Taken,
            PROBE_ADOPTED => Claim::Adopted,
            _ => Claim::Busy,
        }
    }
}

/// The `n` calls of `snat_probe` for IPv4 (`Family::snat_probes`), their state and outcome
/// in the scratch. A global function (exported, `no_mangle`; the object's BTF gives it
/// global linkage): the verifier checks it once, on its own, with nothing known of its
/// caller, where a static function or inlined code is walked again for every state that
/// reaches it (the new-flow path is reached from many). That is why its only argument is
/// a number: a global function may not be handed map values or packet pointers.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xvip_snat_probes4(n: u32) -> u64 {
    // SAFETY: a helper call; the callback reads its state from this CPU's scratch.
    unsafe { bpf_loop(n, snat_probe::<u32> as *mut c_void, null_mut(), 0) as u64 }
}

/// [`xvip_snat_probes4`] for IPv6.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xvip_snat_probes6(n: u32) -> u64 {
    // SAFETY: as `xvip_snat_probes4`.
    unsafe {
        bpf_loop(
            n,
            snat_probe::<lb_common::Ip6> as *mut c_void,
            null_mut(),
            0,
        ) as u64
    }
}

/// `SnatProbe::outcome`: every probe so far busy, a port taken (written into `(*s).ct`),
/// or a live flow of this client adopted (its forward entry rebuilt in `(*s).ct`).
const PROBE_BUSY: u8 = 0;
const PROBE_TAKEN: u8 = 1;
const PROBE_ADOPTED: u8 = 2;

/// Probe `i` of `claim_snat_port` (the `bpf_loop` callback; 1 stops the loop): port
/// `min + (hash + i) % range`, or, at `i == probes`, the steal pass. Its state is in this
/// CPU's scratch (`Scratch::probe`).
#[inline(never)]
extern "C" fn snat_probe<A: Family>(i: u64, _ctx: *mut c_void) -> i64 {
    let Ok(s) = scratch::<A>() else {
        return 1;
    };
    // SAFETY: this CPU's scratch, filled by `claim_snat_port` for this packet.
    unsafe {
        let p = &raw mut (*s).probe;
        let (key, now, range) = (&raw const (*p).key, (*p).now, (*p).range);
        // Never 0 (`claim_snat_port` checked), but the callback cannot know it: without
        // this, `%` would branch to a panic the verifier refuses.
        if range == 0 {
            return 1;
        }
        let i = i as u32;
        let rkey = &raw mut (*p).rkey;
        let steal = i >= (*p).probes;
        let (port, steal_after) = if steal {
            if (*p).oldest_seen == u64::MAX
                || now.saturating_sub((*p).oldest_seen) <= UNCONFIRMED_STEAL_AFTER_NS
            {
                return 1;
            }
            ((*p).oldest_port, UNCONFIRMED_STEAL_AFTER_NS)
        } else {
            let port = (((*p).min + ((*p).hash.wrapping_add(i) % range)) as u16).to_be();
            (port, u64::MAX)
        };
        (*rkey).dst_port = port;
        let rev = &raw const (*s).rev;
        match claim(&*rkey, &*rev, &*key, now, steal_after, s) {
            Claim::Taken => {
                (*s).ct.snat_port = port;
                (*p).outcome = PROBE_TAKEN;
                1
            }
            Claim::Adopted => {
                (*p).outcome = PROBE_ADOPTED;
                1
            }
            Claim::BusyUnconfirmed(seen) if !steal && seen < (*p).oldest_seen => {
                (*p).oldest_port = port;
                (*p).oldest_seen = seen;
                0
            }
            _ => i64::from(steal),
        }
    }
}

/// A reply of a confirmed flow: a FIN or RST must fit the backend's stream; updates the
/// reverse entry (state, last seen, stream position) and returns a copy. An in-window FIN
/// or RST from the backend also shortens the forward entry's life.
#[inline(always)]
pub fn reply_touch<A: Family>(
    rev: *mut RevEntry<A>,
    h: &Headers<A>,
    now: u64,
) -> Result<RevEntry<A>, Verdict> {
    let (proto, flags) = (h.proto, h.tcp_flags);
    // SAFETY: `rev` points into a live map value.
    let r = unsafe {
        if proto == IPPROTO_TCP {
            // The backend's SYN-ACK of a connection that reuses a closed one's tuple (the
            // entry went back to SYN with the client's new SYN) starts its stream anew, and
            // is what the client's ACK must acknowledge (`handshake_step`). A RST while the
            // new handshake is unproven is honoured whatever its sequence number, as an
            // unconfirmed flow's is: the backend refusing the connection, or a guessed ACK
            // (its RST carries the guessed number).
            let syn_state = (*rev).state == ct_state::TCP_SYN;
            let restart = syn_state && flags & (TCP_SYN | TCP_RST) != 0;
            if syn_state && flags & TCP_SYN != 0 {
                (*rev).flags |= REV_FLAG_BACKEND_SEEN;
            }
            if !restart
                && !in_window(
                    (*rev).flags & REV_FLAG_SEQ_KNOWN != 0,
                    (*rev).seq_next,
                    h.seq,
                )
            {
                if flags & (TCP_FIN | TCP_RST) != 0 {
                    return Err(Verdict::drop(Reason::DropOutOfWindow));
                }
            } else {
                advance(
                    &raw mut (*rev).seq_next,
                    &raw mut (*rev).flags,
                    REV_FLAG_SEQ_KNOWN,
                    h,
                );
                // In window: the backend's data counts towards establishing the flow.
                if (*rev).state == ct_state::TCP_OPEN
                    && (*rev).flags & REV_FLAG_BACKEND_DATA == 0
                    && has_data(h)
                {
                    (*rev).flags |= REV_FLAG_BACKEND_DATA;
                }
            }
        }
        touch(
            &raw mut (*rev).state,
            &raw mut (*rev).last_seen_ns,
            proto,
            flags,
            now,
        );
        *rev
    };
    if flags & (TCP_FIN | TCP_RST) != 0
        && let Some(e) = A::conntrack().get_ptr_mut(&client_key(&r, proto))
    {
        // SAFETY: fields of the live value.
        if unsafe { (*e).state } != ct_state::TCP_CLOSING {
            A::sync_closing_reply(&r, proto);
        }
        // SAFETY: fields of the live value.
        unsafe {
            touch(
                &raw mut (*e).state,
                &raw mut (*e).last_seen_ns,
                proto,
                flags,
                now,
            )
        };
    }
    Ok(r)
}

/// A reply of a flow not confirmed yet (`rkey` its tuple): marks that the backend has
/// answered and confirms a flow picked up mid-stream (or UDP); a RST from the backend ends
/// the attempt. Returns the entry to translate the reply with.
#[inline(always)]
pub fn unconfirmed_reply<A: Family>(
    rev: *mut RevEntry<A>,
    rkey: &FlowKey<A>,
    h: &Headers<A>,
    now: u64,
) -> Result<RevEntry<A>, Verdict> {
    let tcp = h.proto == IPPROTO_TCP;
    // SAFETY: `rev` points into a live map value.
    let r = unsafe {
        // The backend's first answer to a handshake counts for passive health: refused
        // only by a RST that answers the SYN itself (RST+ACK, as a closed port answers;
        // a RST without ACK answers a segment that carried one, a client's doing).
        if tcp && (*rev).flags & (REV_FLAG_BACKEND_SEEN | REV_FLAG_MIDSTREAM) == 0 {
            match h.tcp_flags & (TCP_RST | TCP_ACK) {
                f if f == TCP_RST | TCP_ACK => {
                    stats::count_handshake((*rev).backend_idx, stats::Handshake::Refused)
                }
                TCP_RST => {}
                _ => stats::count_handshake((*rev).backend_idx, stats::Handshake::Answered),
            }
        }
        (*rev).flags |= REV_FLAG_BACKEND_SEEN;
        (*rev).last_seen_ns = now;
        // A handshake's backend position is its SYN-ACK's (what the client must
        // acknowledge): nothing else of the backend's moves it.
        if tcp && ((*rev).flags & REV_FLAG_MIDSTREAM != 0 || h.tcp_flags & TCP_SYN != 0) {
            advance(
                &raw mut (*rev).seq_next,
                &raw mut (*rev).flags,
                REV_FLAG_SEQ_KNOWN,
                h,
            );
        }
        *rev
    };
    let key = client_key(&r, h.proto);
    if tcp && h.tcp_flags & TCP_RST != 0 {
        release(A::unconfirmed_rev(), rkey, &key);
        let _ = A::unconfirmed().remove(&key);
    } else if r.flags & REV_FLAG_MIDSTREAM != 0 && h.tcp_flags & TCP_SYN == 0 {
        let ct = match A::unconfirmed().get_ptr_mut(&key) {
            // TCP: the backend's answer must acknowledge the client's stream as recorded
            // (a live connection's ACK does; a backend that knows no such connection
            // answers with a RST, which ends the attempt above).
            // SAFETY: `ct` points into a live map value.
            Some(ct)
                if tcp
                    && !unsafe {
                        (*ct).flags & CT_FLAG_SEQ_KNOWN != 0
                            && h.tcp_flags & TCP_ACK != 0
                            && in_window(true, (*ct).seq_next, ack_of(h))
                    } =>
            {
                return Ok(r);
            }
            Some(ct) => ct,
            // TCP without the client's stream: nothing to check the answer against.
            None if tcp => return Ok(r),
            None => {
                // Its forward entry was evicted: the reverse entry has all of it but the
                // client's stream position.
                let s = scratch()?;
                // SAFETY: this CPU's scratch.
                unsafe {
                    (*s).ct = forward_of(rkey, &r);
                    &raw mut (*s).ct
                }
            }
        };
        confirm(&key, rkey, ct, rev, false, now)?;
    }
    Ok(r)
}

/// Whether a reverse entry is still usable.
#[inline(always)]
pub fn reply_live<A: Family>(rev: &RevEntry<A>, now: u64) -> bool {
    !expired(rev.state, rev.last_seen_ns, now)
}
