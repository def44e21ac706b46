//! The address family a packet's path is written for: conntrack, lookup and translation are
//! generic over it and monomorphised once per family, so their rules are written once and
//! IPv4 keeps its 16-byte keys. A family is its raw address type (`u32`, `Ip6`): it names
//! its maps and rewrites its own IP header.

use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
use lb_common::{Addr, Backend, CtEntry, FlowKey, RevEntry, VipKey, VipMeta};
use network_types::ip::Ipv4Hdr;

use crate::{
    maps::{BACKENDS, CONNTRACK, REVERSE, SCRATCH, Scratch, UNCONFIRMED, UNCONFIRMED_REV, VIPS},
    packet::Headers,
};

/// An address family's maps and IP header.
pub trait Family: Addr {
    /// The fixed IP header.
    type IpHdr;
    fn vips() -> &'static HashMap<VipKey<Self>, VipMeta<Self>>;
    fn backends() -> &'static Array<Backend<Self>>;
    fn conntrack() -> &'static LruHashMap<FlowKey<Self>, CtEntry<Self>>;
    fn reverse() -> &'static LruHashMap<FlowKey<Self>, RevEntry<Self>>;
    fn unconfirmed() -> &'static LruHashMap<FlowKey<Self>, CtEntry<Self>>;
    fn unconfirmed_rev() -> &'static LruHashMap<FlowKey<Self>, RevEntry<Self>>;
    fn scratch() -> &'static PerCpuArray<Scratch<Self>>;
    /// Puts `src` and `dst` into the IP header and decrements the TTL (hop limit), keeping
    /// the header checksum (IPv4) right.
    fn rewrite_ip(h: &Headers<Self>, src: Self, dst: Self);
}

impl Family for u32 {
    type IpHdr = Ipv4Hdr;
    #[inline(always)]
    fn vips() -> &'static HashMap<VipKey<Self>, VipMeta<Self>> {
        &VIPS
    }
    #[inline(always)]
    fn backends() -> &'static Array<Backend<Self>> {
        &BACKENDS
    }
    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<FlowKey<Self>, CtEntry<Self>> {
        &CONNTRACK
    }
    #[inline(always)]
    fn reverse() -> &'static LruHashMap<FlowKey<Self>, RevEntry<Self>> {
        &REVERSE
    }
    #[inline(always)]
    fn unconfirmed() -> &'static LruHashMap<FlowKey<Self>, CtEntry<Self>> {
        &UNCONFIRMED
    }
    #[inline(always)]
    fn unconfirmed_rev() -> &'static LruHashMap<FlowKey<Self>, RevEntry<Self>> {
        &UNCONFIRMED_REV
    }
    #[inline(always)]
    fn scratch() -> &'static PerCpuArray<Scratch<Self>> {
        &SCRATCH
    }
    #[inline(always)]
    fn rewrite_ip(h: &Headers<Self>, src: u32, dst: u32) {
        use lb_common::checksum::{update_u16, update_u32};
        let ip = h.ip;
        // SAFETY: `ip` checked by the parser.
        unsafe {
            let ttl_word_old = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
            (*ip).ttl -= 1;
            let ttl_word_new = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
            let mut c = u16::from_be_bytes((*ip).check);
            c = update_u32(c, u32::from_be(h.src), u32::from_be(src));
            c = update_u32(c, u32::from_be(h.dst), u32::from_be(dst));
            c = update_u16(c, ttl_word_old, ttl_word_new);
            (*ip).check = c.to_be_bytes();
            (*ip).src_addr = src.to_ne_bytes();
            (*ip).dst_addr = dst.to_ne_bytes();
        }
    }
}
