//! Connection tracking: finding or creating a flow's entry, its reverse entry for replies,
//! SNAT port allocation, TCP state and idle expiry.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
};
use lb_common::{
    BACKEND_FLAG_LOCAL, Backend, Config, CtEntry, FlowKey, IPPROTO_TCP, LAST_SEEN_GRANULARITY_NS,
    Reason, RevEntry, SNAT_PROBES, TCP_CLOSING_TIMEOUT_NS, TCP_ESTABLISHED_TIMEOUT_NS,
    TCP_SYN_TIMEOUT_NS, UDP_TIMEOUT_NS, VIP_FLAG_DNAT, VipMeta, ct_state,
};

use crate::{
    Verdict, lookup,
    maps::{CONNTRACK, REVERSE},
    packet::{Headers, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// A flow ready to be translated.
pub struct Flow {
    pub entry: CtEntry,
    pub backend: Backend,
    pub new: bool,
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The state after seeing a packet with `flags` in state `state`. A bare SYN on a closing
/// entry is the client reusing its port: a new connection to the same backend.
#[inline(always)]
pub fn next_state(state: u8, proto: u8, flags: u8) -> u8 {
    if proto != IPPROTO_TCP {
        ct_state::UDP
    } else if flags & (TCP_FIN | TCP_RST) != 0 {
        ct_state::TCP_CLOSING
    } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        && (state == 0 || state == ct_state::TCP_CLOSING)
    {
        ct_state::TCP_SYN
    } else if state == ct_state::TCP_CLOSING {
        ct_state::TCP_CLOSING
    } else if flags & TCP_SYN != 0 && state == ct_state::TCP_SYN {
        ct_state::TCP_SYN
    } else {
        ct_state::TCP_ESTABLISHED
    }
}

#[inline(always)]
fn timeout(state: u8) -> u64 {
    match state {
        ct_state::TCP_SYN => TCP_SYN_TIMEOUT_NS,
        ct_state::TCP_ESTABLISHED => TCP_ESTABLISHED_TIMEOUT_NS,
        ct_state::TCP_CLOSING => TCP_CLOSING_TIMEOUT_NS,
        _ => UDP_TIMEOUT_NS,
    }
}

/// Whether an entry last seen at `last_seen` in `state` has outlived its idle timeout.
#[inline(always)]
pub fn expired(state: u8, last_seen: u64, now: u64) -> bool {
    now.saturating_sub(last_seen) > timeout(state)
}

/// Rewrites state and `last_seen` only when they change enough to matter, so established
/// flows do not write the shared entry on every packet.
#[inline(always)]
fn touch(state: *mut u8, last_seen: *mut u64, proto: u8, flags: u8, now: u64) {
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
fn stale(state: u8, last_seen: u64, proto: u8, flags: u8, now: u64) -> bool {
    next_state(state, proto, flags) != state
        || now.saturating_sub(last_seen) > LAST_SEEN_GRANULARITY_NS
}

/// The key under which a flow's replies arrive.
#[inline(always)]
pub fn reverse_key(e: &CtEntry, proto: u8) -> FlowKey {
    FlowKey {
        src_addr: e.backend_addr,
        dst_addr: e.snat_addr,
        src_port: e.backend_port,
        dst_port: e.snat_port,
        proto,
        _pad: [0; 3],
    }
}

/// Whether a reverse entry belongs to the client flow `key`.
#[inline(always)]
fn owns(rev: &RevEntry, key: &FlowKey) -> bool {
    rev.client_addr == key.src_addr
        && rev.client_port == key.src_port
        && rev.vip_addr == key.dst_addr
        && rev.vip_port == key.dst_port
}

/// The reverse entry of a forward entry (`key` being its client side).
#[inline(always)]
fn reverse_of(e: &CtEntry, key: &FlowKey) -> RevEntry {
    RevEntry {
        last_seen_ns: e.last_seen_ns,
        client_addr: key.src_addr,
        vip_addr: key.dst_addr,
        client_port: key.src_port,
        vip_port: key.dst_port,
        backend_idx: e.backend_idx,
        client_mac: e.client_mac,
        state: e.state,
        _pad0: 0,
        vip_index: e.vip_index,
        client_ifindex: e.client_ifindex,
    }
}

/// Makes sure an established flow still holds its reverse entry (so its SNAT port is still
/// reserved for it) and refreshes it. An entry the LRU evicted is put back if the tuple is
/// still free; false when another flow took the tuple meanwhile.
#[inline(always)]
fn hold_reverse(e: &CtEntry, key: &FlowKey, flags: u8, now: u64) -> bool {
    let rkey = reverse_key(e, key.proto);
    match REVERSE.get_ptr_mut(&rkey) {
        Some(r) => {
            // SAFETY: `r` points into a live map value.
            if !owns(unsafe { &*r }, key) {
                return false;
            }
            // SAFETY: fields of the live value.
            unsafe {
                touch(
                    &raw mut (*r).state,
                    &raw mut (*r).last_seen_ns,
                    key.proto,
                    flags,
                    now,
                )
            };
            true
        }
        None => {
            let mut rev = reverse_of(e, key);
            rev.last_seen_ns = now;
            REVERSE.insert(&rkey, &rev, BPF_NOEXIST as u64).is_ok()
        }
    }
}

/// Deletes the reverse entry of a stale flow, unless another flow owns that tuple now.
#[inline(always)]
fn release_reverse(e: &CtEntry, key: &FlowKey) {
    let rkey = reverse_key(e, key.proto);
    // SAFETY: plain value copied out of the map.
    if let Some(r) = unsafe { REVERSE.get(&rkey) }.copied()
        && owns(&r, key)
    {
        let _ = REVERSE.remove(&rkey);
    }
}

/// Inserts a reverse entry only if its tuple is free, or held by an entry that has expired
/// (an LRU map only evicts under pressure, so expired entries linger).
#[inline(always)]
fn claim(rkey: &FlowKey, rev: &RevEntry, now: u64) -> bool {
    if REVERSE.insert(rkey, rev, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    // SAFETY: plain value copied out of the map.
    let Some(old) = (unsafe { REVERSE.get(rkey) }).copied() else {
        return REVERSE.insert(rkey, rev, BPF_NOEXIST as u64).is_ok();
    };
    if !expired(old.state, old.last_seen_ns, now) {
        return false;
    }
    let _ = REVERSE.remove(rkey);
    REVERSE.insert(rkey, rev, BPF_NOEXIST as u64).is_ok()
}

/// Finds the live entry of a client flow, or creates one: backend from Maglev, SNAT port,
/// reverse entry. An entry whose backend is gone (removed, or its slot reused by another
/// address or port), that has expired, or whose reverse tuple was lost, is replaced.
#[inline(always)]
pub fn forward_flow(
    h: &Headers,
    meta: &VipMeta,
    cfg: &Config,
    client_mac: [u8; 6],
    ingress_ifindex: u32,
) -> Result<Flow, Verdict> {
    let key = FlowKey {
        src_addr: h.src,
        dst_addr: h.dst,
        src_port: h.sport,
        dst_port: h.dport,
        proto: h.proto,
        _pad: [0; 3],
    };
    let now = now();
    if let Some(e) = CONNTRACK.get_ptr_mut(&key) {
        // SAFETY: `e` points into a live map value; copied before use.
        let old = unsafe { *e };
        if !expired(old.state, old.last_seen_ns, now)
            && let Some(backend) =
                lookup::live_backend(old.backend_idx, old.backend_addr, old.backend_port)
            // The reverse entry is checked (and refreshed) with the same coarse clock as the
            // entry itself, not on every packet: an established flow costs one lookup less.
            && (backend.flags & BACKEND_FLAG_LOCAL != 0
                || !stale(old.state, old.last_seen_ns, h.proto, h.tcp_flags, now)
                || hold_reverse(&old, &key, h.tcp_flags, now))
        {
            // SAFETY: fields of the live value.
            unsafe {
                touch(
                    &raw mut (*e).state,
                    &raw mut (*e).last_seen_ns,
                    h.proto,
                    h.tcp_flags,
                    now,
                )
            };
            return Ok(Flow {
                entry: old,
                backend,
                new: false,
            });
        }
        // Stale: free its tuple (SNAT port) before picking again.
        release_reverse(&old, &key);
    }

    let hash = lookup::hash_of(&key);
    let (backend_idx, backend) = lookup::pick_backend(meta, hash)?;
    let local = backend.flags & BACKEND_FLAG_LOCAL != 0;
    if backend.mac == [0; 6] && !local {
        return Err(Verdict::pass(Reason::PassNoNeighbour));
    }
    let state = next_state(0, h.proto, h.tcp_flags);
    let mut entry = CtEntry {
        last_seen_ns: now,
        backend_idx,
        backend_addr: backend.addr,
        snat_addr: h.src,
        backend_port: backend.port,
        snat_port: h.sport,
        state,
        _pad0: 0,
        client_mac,
        vip_index: meta.index,
        client_ifindex: ingress_ifindex,
    };
    let rev = reverse_of(&entry, &key);

    if local {
        // The local stack answers from the VIP itself: no translation, no reverse entry.
    } else if meta.flags & VIP_FLAG_DNAT != 0 {
        if !claim(&reverse_key(&entry, h.proto), &rev, now) {
            return Err(Verdict::drop(Reason::DropTupleInUse));
        }
    } else {
        entry.snat_addr = meta.snat_addr;
        entry.snat_port = allocate_snat_port(&entry, &rev, cfg, hash, h.proto, now)?;
    }
    if CONNTRACK.insert(&key, &entry, BPF_ANY as u64).is_err() {
        let _ = REVERSE.remove(&reverse_key(&entry, h.proto));
        return Err(Verdict::drop(Reason::DropConntrackFull));
    }
    Ok(Flow {
        entry,
        backend,
        new: true,
    })
}

/// Claims a SNAT port for the flow by inserting its reverse entry only if absent: the first
/// probe is derived from the flow hash (so every node picks the same port for the same
/// flow), the next ones follow it, at most once around the range. Returns the port in
/// network byte order.
#[inline(always)]
fn allocate_snat_port(
    entry: &CtEntry,
    rev: &RevEntry,
    cfg: &Config,
    hash: u32,
    proto: u8,
    now: u64,
) -> Result<u16, Verdict> {
    // Port 0 is never handed out.
    let min = (cfg.snat_port_min as u32).max(1);
    let max = cfg.snat_port_max as u32;
    if max < min {
        return Err(Verdict::drop(Reason::DropSnatExhausted));
    }
    let range = max - min + 1;
    let mut probe = *entry;
    for i in 0..SNAT_PROBES {
        if i >= range {
            break;
        }
        let port = (min + (hash.wrapping_add(i) % range)) as u16;
        probe.snat_port = port.to_be();
        if claim(&reverse_key(&probe, proto), rev, now) {
            return Ok(probe.snat_port);
        }
    }
    Err(Verdict::drop(Reason::DropSnatExhausted))
}

/// Updates a reply's reverse entry (state, last seen) and returns a copy. A FIN or RST
/// from the backend also shortens the forward entry's life.
#[inline(always)]
pub fn reply_touch(rev: *mut RevEntry, proto: u8, flags: u8, now: u64) -> RevEntry {
    // SAFETY: `rev` points into a live map value.
    let r = unsafe {
        touch(
            &raw mut (*rev).state,
            &raw mut (*rev).last_seen_ns,
            proto,
            flags,
            now,
        );
        *rev
    };
    if flags & (TCP_FIN | TCP_RST) != 0 {
        let key = FlowKey {
            src_addr: r.client_addr,
            dst_addr: r.vip_addr,
            src_port: r.client_port,
            dst_port: r.vip_port,
            proto,
            _pad: [0; 3],
        };
        if let Some(e) = CONNTRACK.get_ptr_mut(&key) {
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
    }
    r
}

/// Whether a reverse entry is still usable.
#[inline(always)]
pub fn reply_live(rev: &RevEntry, now: u64) -> bool {
    !expired(rev.state, rev.last_seen_ns, now)
}
