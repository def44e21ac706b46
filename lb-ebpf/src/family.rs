//! The address family a packet's path is written for: conntrack, lookup and translation are
//! generic over it and monomorphised once per family, so their rules are written once and
//! IPv4 keeps its 16-byte keys. A family is its raw address type (`u32`, `Ip6`): it names
//! its maps and rewrites its own IP header.

use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
use lb_common::{Addr, Backend, CtEntry, FlowKey, Ip6, RevEntry, VipKey, VipMeta};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::{
    maps::{
        BACKENDS, BACKENDS6, CONNTRACK, CONNTRACK6, REVERSE, REVERSE6, SCRATCH, SCRATCH6, Scratch,
        UNCONFIRMED, UNCONFIRMED_REV, UNCONFIRMED_REV6, UNCONFIRMED6, VIP_KEYS, VIP_KEYS6, VIPS,
        VIPS6,
    },
    packet::{self, Headers},
};

/// An address family's maps and IP header.
pub trait Family: Addr {
    /// The fixed IP header.
    type IpHdr;
    /// What `Headers` keeps of the addresses: IPv4 both (8 bytes), IPv6 nothing, reading
    /// them from the frame when needed (32 bytes of scalars held across the path do not
    /// fit its stack).
    type Addrs: Copy;
    fn src(h: &Headers<Self>) -> Self;
    fn dst(h: &Headers<Self>) -> Self;
    /// Whether a packet to a VIP address looks up its flow before its VIP (`nat::handle_flow`).
    /// IPv6 does not: the reordered path does not fit its stack (LLVM spills more of the
    /// SNAT probe's registers), so its packets keep the `VIPS6` lookup.
    const ENTRY_FIRST: bool;
    /// Whether a packet for a VIP continues in a call of its own (`nat::VERDICT_FORWARD`,
    /// `forward6` in main.rs) instead of under the rest of the path: IPv6's reply and ICMP
    /// paths take ~500 of the 512 bytes of stack, and the SNAT probes' `bpf_loop` callback
    /// must fit under the forward path's frame (the chain's frames add up).
    const FORWARD_APART: bool;
    fn snat_probes(n: u32);
    /// A UDP checksum of zero is invalid (IPv6), not "none" (IPv4).
    const UDP_CHECKSUM_REQUIRED: bool;
    /// The family's ICMP echo request and reply types.
    const ECHO_REQUEST: u8;
    const ECHO_REPLY: u8;
    /// The ICMP checksum covers a pseudo-header with the outer addresses (ICMPv6).
    const ICMP_PSEUDO_HEADER: bool;
    /// Whether an ICMP type is an error about a packet (quoting it) that is translated.
    fn icmp_error(ty: u8) -> bool;
    fn vips() -> &'static HashMap<VipKey<Self>, VipMeta<Self>>;
    /// Whether the VIP holding index `index` is the one the packet is addressed to: then a
    /// flow entry naming that index belongs to a VIP that still exists (`VIP_KEYS`,
    /// `VIP_KEYS6`). Called by the full path with `ENTRY_FIRST`, and by the fast path.
    fn vip_holds(index: u32, h: &Headers<Self>) -> bool;
    fn backends() -> &'static Array<Backend<Self>>;
    fn conntrack() -> &'static LruHashMap<FlowKey<Self>, CtEntry<Self>>;
    fn reverse() -> &'static LruHashMap<FlowKey<Self>, RevEntry<Self>>;
    fn unconfirmed() -> &'static LruHashMap<FlowKey<Self>, CtEntry<Self>>;
    fn unconfirmed_rev() -> &'static LruHashMap<FlowKey<Self>, RevEntry<Self>>;
    fn scratch() -> &'static PerCpuArray<Scratch<Self>>;
    /// The `PROVEN` key of a client address: the IPv4 address, the IPv6 /64 prefix (a
    /// host owns a whole /64: counting its addresses one by one would let it fill the map).
    fn source_key(a: &Self) -> u64;
    /// A copy of a map value to decide on (another CPU or the daemon may rewrite the
    /// original): in `local` on the stack (IPv4), or in this CPU's scratch at `slot`
    /// (IPv6: its stack is full; map memory is read where used instead of held in
    /// spilled registers).
    fn snapshot<T: Copy>(
        e: *const T,
        local: *mut T,
        slot: fn(*mut Scratch<Self>) -> *mut T,
    ) -> *const T;
    /// A transport checksum after the header's addresses (pseudo-header) change to
    /// `new[0]`, `new[1]` (read before the header is rewritten).
    fn addrs_csum(h: &Headers<Self>, new: *const [Self; 2], check: u16) -> u16;
    /// Conntrack sync of the family's confirmed flows (`sync.rs`): written to
    /// `SYNC_EVENTS` as `SyncEvent` (IPv4) or `SyncEvent6` (IPv6).
    fn sync_confirmed(key: &FlowKey<Self>, entry: &CtEntry<Self>);
    fn sync_closing(key: &FlowKey<Self>);
    fn sync_removed(key: &FlowKey<Self>);
    /// `sync_closing` of the flow whose reply (reverse entry `r`) carried the FIN or RST.
    fn sync_closing_reply(r: &RevEntry<Self>, proto: u8);
    /// Puts `src` and `dst` into the IP header and decrements the TTL (hop limit), keeping
    /// the header checksum (IPv4) right.
    fn rewrite_ip(h: &Headers<Self>, src: Self, dst: Self);
    /// Swaps the IP header's addresses and sets its TTL (hop limit) to `ttl` (an echo reply).
    fn reflect_ip(h: &Headers<Self>, ttl: u8);
}

impl Family for u32 {
    #[inline(always)]
    fn source_key(a: &u32) -> u64 {
        u64::from(*a)
    }
    type IpHdr = Ipv4Hdr;
    type Addrs = [u32; 2];
    const ENTRY_FIRST: bool = true;
    const FORWARD_APART: bool = false;
    #[inline(always)]
    fn snat_probes(n: u32) {
        crate::conntrack::xvip_snat_probes4(n);
    }
    #[inline(always)]
    fn sync_confirmed(key: &FlowKey<u32>, entry: &CtEntry<u32>) {
        crate::sync::emit_confirmed(lb_common::SYNC_FAMILY_V4, key, entry);
    }
    #[inline(always)]
    fn sync_closing(key: &FlowKey<u32>) {
        crate::sync::emit_closing(lb_common::SYNC_FAMILY_V4, key);
    }
    #[inline(always)]
    fn sync_removed(key: &FlowKey<u32>) {
        crate::sync::emit_removed(lb_common::SYNC_FAMILY_V4, key);
    }
    #[inline(always)]
    fn sync_closing_reply(r: &RevEntry<u32>, proto: u8) {
        Self::sync_closing(&crate::conntrack::client_key(r, proto));
    }
    #[inline(always)]
    fn addrs_csum(h: &Headers<Self>, new: *const [u32; 2], check: u16) -> u16 {
        // SAFETY: `new` points to two addresses on the caller's stack.
        let [src, dst] = unsafe { *new };
        let c = h.src().csum_update(check, src);
        h.dst().csum_update(c, dst)
    }
    #[inline(always)]
    fn snapshot<T: Copy>(
        e: *const T,
        local: *mut T,
        _slot: fn(*mut Scratch<u32>) -> *mut T,
    ) -> *const T {
        // SAFETY: `e` points into a live map value, `local` to the caller's stack.
        unsafe { *local = *e };
        local
    }
    #[inline(always)]
    fn src(h: &Headers<Self>) -> u32 {
        h.addrs[0]
    }
    #[inline(always)]
    fn dst(h: &Headers<Self>) -> u32 {
        h.addrs[1]
    }
    const UDP_CHECKSUM_REQUIRED: bool = false;
    const ECHO_REQUEST: u8 = 8;
    const ECHO_REPLY: u8 = 0;
    const ICMP_PSEUDO_HEADER: bool = false;
    #[inline(always)]
    fn icmp_error(ty: u8) -> bool {
        // Destination unreachable (fragmentation needed included), time exceeded.
        ty == 3 || ty == 11
    }
    #[inline(always)]
    fn vips() -> &'static HashMap<VipKey<Self>, VipMeta<Self>> {
        &VIPS
    }
    /// `VIP_KEYS`: one inlined read and an 8-byte compare.
    #[inline(always)]
    fn vip_holds(index: u32, h: &Headers<Self>) -> bool {
        match VIP_KEYS.get(index) {
            Some(k) => k.port == h.dport && k.proto == h.proto && k.addr == Self::dst(h),
            None => false,
        }
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
            c = update_u32(c, u32::from_be(h.src()), u32::from_be(src));
            c = update_u32(c, u32::from_be(h.dst()), u32::from_be(dst));
            c = update_u16(c, ttl_word_old, ttl_word_new);
            (*ip).check = c.to_be_bytes();
            (*ip).src_addr = src.to_ne_bytes();
            (*ip).dst_addr = dst.to_ne_bytes();
        }
    }
    #[inline(always)]
    fn reflect_ip(h: &Headers<Self>, ttl: u8) {
        use lb_common::checksum::update_u16;
        let ip = h.ip;
        // SAFETY: `ip` checked by the parser.
        unsafe {
            // Swapping the addresses leaves the header checksum unchanged; the TTL does not.
            let (src, dst) = ((*ip).src_addr, (*ip).dst_addr);
            (*ip).src_addr = dst;
            (*ip).dst_addr = src;
            let old = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
            (*ip).ttl = ttl;
            let new = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
            (*ip).check = update_u16(u16::from_be_bytes((*ip).check), old, new).to_be_bytes();
        }
    }
}

impl Family for Ip6 {
    #[inline(always)]
    fn source_key(a: &Ip6) -> u64 {
        (u64::from(a[0]) << 32) | u64::from(a[1])
    }
    type IpHdr = Ipv6Hdr;
    type Addrs = ();
    const ENTRY_FIRST: bool = false;
    const FORWARD_APART: bool = true;
    #[inline(always)]
    fn snat_probes(n: u32) {
        crate::conntrack::xvip_snat_probes6(n);
    }
    #[inline(always)]
    fn sync_confirmed(key: &FlowKey<Ip6>, entry: &CtEntry<Ip6>) {
        crate::sync::emit6(lb_common::SYNC_CONFIRMED, key, entry);
    }
    #[inline(always)]
    fn sync_closing(key: &FlowKey<Ip6>) {
        crate::sync::emit6(lb_common::SYNC_CLOSING, key, core::ptr::null());
    }
    #[inline(always)]
    fn sync_removed(key: &FlowKey<Ip6>) {
        crate::sync::emit6(lb_common::SYNC_REMOVED, key, core::ptr::null());
    }
    /// The key is written from `r` straight into the record: a 40-byte key built on
    /// `process6`'s stack does not fit it.
    #[inline(always)]
    fn sync_closing_reply(r: &RevEntry<Ip6>, proto: u8) {
        crate::sync::emit6_closing_reply(r, proto);
    }
    /// The kernel's `bpf_csum_diff` over the 32 bytes of addresses in the frame and the 32
    /// new ones in memory: no address word is held in a register.
    #[inline(always)]
    fn addrs_csum(h: &Headers<Self>, new: *const [Ip6; 2], check: u16) -> u16 {
        // SAFETY: source and destination are 32 contiguous bytes of the checked header;
        // `new` points to 32 bytes of memory.
        let d = unsafe {
            aya_ebpf::helpers::bpf_csum_diff(
                (&raw const (*h.ip).src_addr).cast::<u32>().cast_mut(),
                32,
                new.cast::<u32>().cast_mut(),
                32,
                u32::from((!check).to_be()),
            )
        };
        // The helper sums words as they lie in memory (network order): so are its seed
        // and its result.
        !u16::from_be(lb_common::checksum::fold(d as u32))
    }
    #[inline(always)]
    fn snapshot<T: Copy>(
        e: *const T,
        _local: *mut T,
        slot: fn(*mut Scratch<Ip6>) -> *mut T,
    ) -> *const T {
        match SCRATCH6.get_ptr_mut(0) {
            // SAFETY: this CPU's scratch; `e` a live map value.
            Some(s) => unsafe {
                let p = slot(s);
                copy_words(p, e);
                p
            },
            // Cannot happen (index 0 of a one-entry array): read the entry itself.
            None => e,
        }
    }
    #[inline(always)]
    fn src(h: &Headers<Self>) -> Ip6 {
        // SAFETY: the fixed header was checked by the parser.
        packet::load_ip6(unsafe { &raw const (*h.ip).src_addr })
    }
    #[inline(always)]
    fn dst(h: &Headers<Self>) -> Ip6 {
        // SAFETY: as above.
        packet::load_ip6(unsafe { &raw const (*h.ip).dst_addr })
    }
    const UDP_CHECKSUM_REQUIRED: bool = true;
    const ECHO_REQUEST: u8 = 128;
    const ECHO_REPLY: u8 = 129;
    const ICMP_PSEUDO_HEADER: bool = true;
    #[inline(always)]
    fn icmp_error(ty: u8) -> bool {
        // Destination unreachable, packet too big (path MTU discovery), time exceeded.
        ty == 1 || ty == 2 || ty == 3
    }
    #[inline(always)]
    fn vips() -> &'static HashMap<VipKey<Self>, VipMeta<Self>> {
        &VIPS6
    }
    /// `VIP_KEYS6`: one inlined read and a 20-byte compare (the fast path's; the full
    /// path, without `ENTRY_FIRST`, asks `VIPS6`).
    #[inline(always)]
    fn vip_holds(index: u32, h: &Headers<Self>) -> bool {
        match VIP_KEYS6.get(index) {
            Some(k) => k.port == h.dport && k.proto == h.proto && k.addr == Self::dst(h),
            None => false,
        }
    }
    #[inline(always)]
    fn backends() -> &'static Array<Backend<Self>> {
        &BACKENDS6
    }
    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<FlowKey<Self>, CtEntry<Self>> {
        &CONNTRACK6
    }
    #[inline(always)]
    fn reverse() -> &'static LruHashMap<FlowKey<Self>, RevEntry<Self>> {
        &REVERSE6
    }
    #[inline(always)]
    fn unconfirmed() -> &'static LruHashMap<FlowKey<Self>, CtEntry<Self>> {
        &UNCONFIRMED6
    }
    #[inline(always)]
    fn unconfirmed_rev() -> &'static LruHashMap<FlowKey<Self>, RevEntry<Self>> {
        &UNCONFIRMED_REV6
    }
    #[inline(always)]
    fn scratch() -> &'static PerCpuArray<Scratch<Self>> {
        &SCRATCH6
    }
    /// No header checksum in IPv6: addresses and hop limit only.
    #[inline(always)]
    fn rewrite_ip(h: &Headers<Self>, src: Ip6, dst: Ip6) {
        let ip = h.ip;
        // SAFETY: `ip` checked by the parser.
        unsafe {
            (*ip).hop_limit -= 1;
            packet::store_ip6(&raw mut (*ip).src_addr, src);
            packet::store_ip6(&raw mut (*ip).dst_addr, dst);
        }
    }
    #[inline(always)]
    fn reflect_ip(h: &Headers<Self>, ttl: u8) {
        let ip = h.ip;
        let (src, dst) = (h.src(), h.dst());
        // SAFETY: `ip` checked by the parser.
        unsafe {
            (*ip).hop_limit = ttl;
            packet::store_ip6(&raw mut (*ip).src_addr, dst);
            packet::store_ip6(&raw mut (*ip).dst_addr, src);
        }
    }
}

/// Copies a map value word by word: a plain assignment of a 36- or 72-byte value compiles
/// to a call of `memmove` (a BPF function copying byte by byte).
///
/// # Safety
/// Both point to valid `T`s (map values or this CPU's scratch).
#[inline(always)]
unsafe fn copy_words<T: Copy>(dst: *mut T, src: *const T) {
    const {
        assert!(core::mem::size_of::<T>().is_multiple_of(4) && core::mem::align_of::<T>() >= 4);
    }
    let (d, s) = (dst.cast::<u32>(), src.cast::<u32>());
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 4 {
        // SAFETY: within both values (the caller's promise), 4-aligned (checked above);
        // volatile so that the loop is not turned back into a `memmove` call.
        unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
        i += 1;
    }
}
