//! Backend choice for a new flow: the VIP's live Maglev table, indexed by the flow hash.

use lb_common::{
    BACKEND_FLAG_PRESENT, Backend, FlowKey, NO_BACKEND, Reason, VipMeta, hash::flow_hash,
};

use crate::{
    Verdict,
    maps::{BACKENDS, RINGS},
};

/// The flow's hash; also seeds its SNAT port so every node picks the same one.
#[inline(always)]
pub fn hash_of(k: &FlowKey) -> u32 {
    flow_hash(k.src_addr, k.dst_addr, k.src_port, k.dst_port, k.proto)
}

/// Picks the backend of a new flow from the VIP's live table.
#[inline(always)]
pub fn pick_backend(meta: &VipMeta, hash: u32) -> Result<(u32, Backend), Verdict> {
    let size = meta.ring_size;
    if size == 0 {
        return Err(Verdict::drop(Reason::DropNoBackend));
    }
    let slot = meta.ring_base() + hash % size;
    let idx = *RINGS.get(slot).ok_or(Verdict::drop(Reason::DropInternal))?;
    if idx == NO_BACKEND {
        return Err(Verdict::drop(Reason::DropNoBackend));
    }
    let b = *BACKENDS
        .get(idx)
        .ok_or(Verdict::drop(Reason::DropInternal))?;
    if b.flags & BACKEND_FLAG_PRESENT == 0 {
        return Err(Verdict::drop(Reason::DropNoBackend));
    }
    Ok((idx, b))
}

/// The backend of an existing flow, if it is still the one the flow was created with.
#[inline(always)]
pub fn live_backend(idx: u32, addr: u32, port: u16) -> Option<Backend> {
    let b = *BACKENDS.get(idx)?;
    (b.flags & BACKEND_FLAG_PRESENT != 0 && b.addr == addr && b.port == port).then_some(b)
}
