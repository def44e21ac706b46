//! Backend choice for a new flow: the VIP's live Maglev table, indexed by the flow hash.

use lb_common::{
    BACKEND_FLAG_PRESENT, Backend, FlowKey, NO_BACKEND, Reason, VipKey, VipMeta, hash,
};

use crate::{Verdict, family::Family, maps::RINGS, packet::Headers};

/// The meta of the VIP a packet is addressed to (`VIPS`), copied (into `local` for IPv4,
/// the scratch for IPv6): the daemon replaces the value while packets flow.
#[inline(always)]
pub fn vip_meta<'a, A: Family>(
    h: &Headers<A>,
    local: &'a mut core::mem::MaybeUninit<VipMeta<A>>,
) -> Option<&'a VipMeta<A>> {
    let key = VipKey {
        addr: h.dst(),
        port: h.dport,
        proto: h.proto,
        _pad: 0,
    };
    // SAFETY: map lookup; the value is copied before use, into `local` or this CPU's
    // scratch (which outlives `local`).
    unsafe {
        let m = A::vips().get(&key)?;
        Some(&*A::snapshot(m, local.as_mut_ptr(), |s| &raw mut (*s).meta))
    }
}

/// The flow's hash; also seeds its SNAT port so every node picks the same one.
#[inline(always)]
pub fn hash_of<A: Family>(k: &FlowKey<A>) -> u32 {
    hash::flow_hash_of(k.src_addr, k.dst_addr, k.src_port, k.dst_port, k.proto)
}

/// Picks the backend of a new flow from the VIP's live table (`RINGS` is shared by the
/// families; the index is one of the VIP's family's backends).
#[inline(always)]
pub fn pick_backend<A: Family>(
    meta: &VipMeta<A>,
    hash: u32,
) -> Result<(u32, &'static Backend<A>), Verdict> {
    let size = meta.ring_size;
    if size == 0 {
        return Err(Verdict::drop(Reason::DropNoBackend));
    }
    let slot = meta.ring_base() + hash % size;
    let idx = *RINGS.get(slot).ok_or(Verdict::drop(Reason::DropInternal))?;
    if idx == NO_BACKEND {
        return Err(Verdict::drop(Reason::DropNoBackend));
    }
    let b = A::backends()
        .get(idx)
        .ok_or(Verdict::drop(Reason::DropInternal))?;
    if b.flags & BACKEND_FLAG_PRESENT == 0 {
        return Err(Verdict::drop(Reason::DropNoBackend));
    }
    Ok((idx, b))
}

/// The backend of an existing flow, if it is still the one the flow was created with.
/// Backends are returned as references into `BACKENDS`/`BACKENDS6` (an array map's values
/// stay in place), not copies: a copy's fields would be held in spilled registers through
/// the whole path.
#[inline(always)]
pub fn live_backend<A: Family>(idx: u32, addr: A, port: u16) -> Option<&'static Backend<A>> {
    let b = A::backends().get(idx)?;
    (b.flags & BACKEND_FLAG_PRESENT != 0 && b.addr == addr && b.port == port).then_some(b)
}
