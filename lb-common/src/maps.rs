//! Keys and values of the BPF maps. Addresses and ports are stored exactly as they appear on
//! the wire (network byte order in memory), so the data path copies them without swapping;
//! the daemon builds them with [`ip_raw`], [`ip6_raw`] and [`port_raw`].
//!
//! The types that hold an address are generic over it ([`Addr`]): `u32` for IPv4 (the
//! default, so `FlowKey` is the 16-byte IPv4 key it always was) and [`Ip6`] for IPv6. The
//! two families have separate maps (`VIPS6`, `CONNTRACK6`, ...), so IPv4 keys and entries
//! cost nothing for IPv6's sake; the VIP and backend index spaces are shared (one `RINGS`,
//! one `VIP_STATS`, one `BACKEND_STATS`): an index is a v4 VIP or backend or a v6 one.

use bytemuck::{Pod, Zeroable};

/// An IPv6 address as kept in keys: four words, each in network byte order in memory
/// (the 16 octets as on the wire). Words, not bytes: the data path compares and copies
/// them with four loads instead of sixteen.
pub type Ip6 = [u32; 4];

/// Converts an IPv6 address to the raw [`Ip6`] kept in keys.
pub const fn ip6_raw(o: [u8; 16]) -> Ip6 {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The octets of a raw [`Ip6`] (the inverse of [`ip6_raw`]).
pub const fn ip6_octets(a: Ip6) -> [u8; 16] {
    let (w0, w1, w2, w3) = (
        a[0].to_ne_bytes(),
        a[1].to_ne_bytes(),
        a[2].to_ne_bytes(),
        a[3].to_ne_bytes(),
    );
    [
        w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3], w2[0], w2[1], w2[2], w2[3], w3[0],
        w3[1], w3[2], w3[3],
    ]
}

/// A raw address of either family, as kept in keys (`u32` for IPv4, [`Ip6`] for IPv6):
/// what the hash, the checksum update and the generic data path need of it.
pub trait Addr: Copy + Default + PartialEq + Eq + Pod + 'static {
    /// The address with every bit zero (never a real source or destination; the
    /// `VIP_ADDRS` key that says "some VIP uses DNAT").
    const ZERO: Self;
    /// Folds the address into a running flow hash (see [`crate::hash::flow_hash_of`]).
    fn mix_into(self, h: u32) -> u32;
    /// Checksum field after this address changed from `self` to `new` in the covered data.
    fn csum_update(self, check: u16, new: Self) -> u16;
    /// The family's bit in a `BACKEND_SLOTS` value.
    const BACKEND_SLOT_BIT: u32;
    /// The `BACKEND_SLOTS` slot of the address (raw).
    fn backend_slot(self) -> u32;
}

impl Addr for u32 {
    const ZERO: Self = 0;
    #[inline(always)]
    fn mix_into(self, h: u32) -> u32 {
        crate::hash::mix32(h ^ self)
    }
    #[inline(always)]
    fn csum_update(self, check: u16, new: Self) -> u16 {
        crate::checksum::update_u32(check, u32::from_be(self), u32::from_be(new))
    }
    const BACKEND_SLOT_BIT: u32 = crate::BACKEND_SLOT_V4;
    #[inline(always)]
    fn backend_slot(self) -> u32 {
        crate::hash::addr_slot(self)
    }
}

impl Addr for Ip6 {
    const ZERO: Self = [0; 4];
    #[inline(always)]
    fn mix_into(self, h: u32) -> u32 {
        let mut h = crate::hash::mix32(h ^ self[0]);
        h = crate::hash::mix32(h ^ self[1]);
        h = crate::hash::mix32(h ^ self[2]);
        crate::hash::mix32(h ^ self[3])
    }
    #[inline(always)]
    fn csum_update(self, check: u16, new: Self) -> u16 {
        crate::checksum::update_ip6(check, self, new)
    }
    const BACKEND_SLOT_BIT: u32 = crate::BACKEND_SLOT_V6;
    #[inline(always)]
    fn backend_slot(self) -> u32 {
        crate::hash::addr_slot(self[0] ^ self[1] ^ self[2] ^ self[3])
    }
}

/// Converts an IPv4 address to the raw `u32` kept in keys (network byte order in memory).
pub const fn ip_raw(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// Converts a port to the raw `u16` kept in keys (network byte order in memory).
pub const fn port_raw(port: u16) -> u16 {
    port.to_be()
}

/// `VIPS` (`VIPS6`) key: one served (address, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Zeroable)]
pub struct VipKey<A = u32> {
    /// VIP address, network byte order.
    pub addr: A,
    /// VIP port, network byte order.
    pub port: u16,
    /// IP protocol number ([`crate::IPPROTO_TCP`] or [`crate::IPPROTO_UDP`]).
    pub proto: u8,
    pub _pad: u8,
}

/// Full NAT: source rewritten to `snat_addr` and a port from the SNAT range.
pub const VIP_FLAG_FULLNAT: u32 = 0;
/// Destination NAT only: the backend sees the client's address; replies must cross the LB.
pub const VIP_FLAG_DNAT: u32 = 1 << 0;

/// `VIP_ADDRS` value bit: the address is a VIP.
pub const ADDR_FLAG_VIP: u32 = 1 << 0;
/// `VIP_ADDRS` value bit: the address is a SNAT source address (replies come back to it).
pub const ADDR_FLAG_SNAT: u32 = 1 << 1;
/// `VIP_ADDRS` key present when some VIP uses DNAT (its replies go to client addresses, so
/// the reverse map must be consulted for any destination). No real address is 0.0.0.0.
/// `VIP_ADDRS6` has the same key for its DNAT VIPs: `::` ([`Addr::ZERO`]).
pub const ADDR_KEY_DNAT_PRESENT: u32 = 0;

/// `VIPS` (`VIPS6`) value: where the VIP's Maglev table lives and how it is translated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Zeroable)]
pub struct VipMeta<A = u32> {
    /// Index of the VIP, below [`crate::MAX_VIPS`]; selects its table and counters.
    pub index: u32,
    /// Maglev table size for this VIP (prime, at most [`crate::MAX_RING_SIZE`]).
    pub ring_size: u32,
    /// Which half of the VIP's table is live (0 or 1). The daemon fills the other half,
    /// then replaces this whole value: a packet sees one complete table.
    pub active_half: u32,
    /// `VIP_FLAG_*` bits.
    pub flags: u32,
    /// Source address put on forwarded packets in full-NAT mode, network byte order.
    pub snat_addr: A,
    pub _pad: u32,
}

impl<A> VipMeta<A> {
    /// First `RINGS` index of the live half of this VIP's table.
    pub const fn ring_base(&self) -> u32 {
        ring_base(self.index, self.active_half)
    }
}

/// First `RINGS` index of half `half` of VIP `index`'s table.
pub const fn ring_base(index: u32, half: u32) -> u32 {
    (index * crate::RING_HALVES + (half & 1)) * crate::MAX_RING_SIZE
}

/// The backend exists (a removed backend keeps its slot with this bit clear).
pub const BACKEND_FLAG_PRESENT: u32 = 1 << 0;
/// The backend is this node: its packets go up the local stack unchanged (the VIP is on
/// `lo`), and it answers from the VIP itself.
pub const BACKEND_FLAG_LOCAL: u32 = 1 << 1;

/// `BACKENDS` (`BACKENDS6`) value: one real server. An index is used in one of the two
/// arrays only; the other holds a zeroed (absent) entry there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Zeroable)]
pub struct Backend<A = u32> {
    /// Backend address, network byte order.
    pub addr: A,
    /// `BACKEND_FLAG_*` bits.
    pub flags: u32,
    /// Interface to send to it by; the ingress interface means `XDP_TX`.
    pub ifindex: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// MAC address of the next hop towards the backend (the backend itself on-link).
    pub mac: [u8; 6],
    pub _pad: [u8; 4],
}

/// `CONFIG` value (single entry, key 0): settings of the whole data path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    /// First SNAT port, host byte order.
    pub snat_port_min: u16,
    /// Last SNAT port (inclusive), host byte order.
    pub snat_port_max: u16,
    /// `CONFIG_FLAG_*` bits.
    pub flags: u32,
    /// MAC address of the interface the program is attached to (source of sent frames).
    pub if_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Answer ICMP echo requests sent to a VIP address.
pub const CONFIG_FLAG_ICMP_ECHO: u32 = 1 << 0;
/// The program is attached to several interfaces: each one's MAC is in `IFACES` (with one
/// interface, `Config::if_mac` is all there is and `IFACES` is never read).
pub const CONFIG_FLAG_IFACES: u32 = 1 << 1;

/// One attached interface: its index and MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IfaceMac {
    /// Interface index (0: unused entry).
    pub ifindex: u32,
    /// The interface's MAC: the source of frames sent out of it, and the destination a
    /// frame arriving on it must carry to be ours.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// `VIP_SLOTS6` value: the one `VIP_ADDRS6` address in the slot and its flags, or
/// `ADDR_SLOT_OVERFLOW` in `flags` when several share it; all zero when none (an address
/// of no flags is not ours, `::` included).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AddrSlot6 {
    pub addr: Ip6,
    pub flags: u32,
}

/// `IFACES` value (single entry, key 0): every attached interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Ifaces {
    pub entries: [IfaceMac; crate::MAX_INTERFACES],
}

impl Ifaces {
    /// The MAC of interface `ifindex`, if it is one of the entries.
    #[inline(always)]
    pub fn mac_of(&self, ifindex: u32) -> Option<[u8; 6]> {
        let mut i = 0;
        while i < crate::MAX_INTERFACES {
            let e = &self.entries[i];
            if e.ifindex != 0 && e.ifindex == ifindex {
                return Some(e.mac);
            }
            i += 1;
        }
        None
    }
}

/// Conntrack sync is on: confirmed flows and their ends are written to `SYNC_EVENTS`.
pub const CONFIG_FLAG_SYNC: u32 = 1 << 2;

/// Test hook (the daemon never sets it): every packet takes the full path, as if the
/// established fast path (`lb-ebpf/src/fast.rs`) did not exist. The packet fixtures run
/// with it and without it and must see the same bytes, verdicts and counters.
pub const CONFIG_FLAG_NO_FAST_PATH: u32 = 1 << 3;
/// Test hook (the daemon never sets it): the XDP entry runs only the fast path; a packet
/// it declines returns `XDP_ABORTED` untouched and uncounted (the full path never returns
/// `XDP_ABORTED`), so a fixture can tell which packets the fast path takes.
pub const CONFIG_FLAG_FAST_PATH_ONLY: u32 = 1 << 4;

/// `SyncEvent::kind`: a flow was confirmed (entered `CONNTRACK`/`REVERSE`).
pub const SYNC_CONFIRMED: u32 = 1;
/// `SyncEvent::kind`: a confirmed flow saw an in-window FIN or RST (now closing).
pub const SYNC_CLOSING: u32 = 2;
/// `SyncEvent::kind`: a confirmed flow's entry was removed (stale: expired, backend gone,
/// tuple lost).
pub const SYNC_REMOVED: u32 = 3;

/// `SYNC_COUNTS` index: events written to the ring buffer.
pub const SYNC_COUNT_EMITTED: u32 = 0;
/// `SYNC_COUNTS` index: events lost because the ring buffer was full.
pub const SYNC_COUNT_RING_FULL: u32 = 1;
/// Entries of `SYNC_COUNTS`.
pub const SYNC_COUNTS_LEN: u32 = 2;

/// `SyncEvent::family`: an IPv4 flow (`SyncEvent<u32>`, 72 bytes).
pub const SYNC_FAMILY_V4: u32 = 4;
/// `SyncEvent::family`: an IPv6 flow (`SyncEvent<Ip6>`, 120 bytes).
pub const SYNC_FAMILY_V6: u32 = 6;

/// One `SYNC_EVENTS` ring-buffer record: a confirmed flow's creation or end, as the data
/// path saw it (the daemon sends it to the other nodes of the VRRP group). Both families
/// share the ring; the first 8 bytes (`kind`, `family`) say which record follows, so the
/// IPv4 one stays the 72 bytes it was.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Zeroable)]
pub struct SyncEvent<A = u32> {
    /// `SYNC_CONFIRMED`, `SYNC_CLOSING` or `SYNC_REMOVED`.
    pub kind: u32,
    /// `SYNC_FAMILY_V4` or `SYNC_FAMILY_V6`.
    pub family: u32,
    /// The flow's client-side key.
    pub key: FlowKey<A>,
    /// Its forward entry (`SYNC_CONFIRMED`; zero otherwise).
    pub entry: CtEntry<A>,
}

/// `SYNC_EVENTS` record of an IPv6 flow.
pub type SyncEvent6 = SyncEvent<Ip6>;

/// A flow as seen in one direction: the conntrack and reverse maps' key (16 bytes for
/// IPv4, 40 for IPv6).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Zeroable)]
pub struct FlowKey<A = u32> {
    /// Source address, network byte order.
    pub src_addr: A,
    /// Destination address, network byte order.
    pub dst_addr: A,
    /// Source port, network byte order.
    pub src_port: u16,
    /// Destination port, network byte order.
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Connection state kept per flow; decides the idle timeout.
pub mod ct_state {
    /// TCP: a bare SYN on a closing confirmed flow (the client reusing its port).
    pub const TCP_SYN: u8 = 1;
    /// TCP: a confirmed flow (both ends have spoken).
    pub const TCP_ESTABLISHED: u8 = 2;
    /// TCP: an in-window FIN or RST seen in either direction.
    pub const TCP_CLOSING: u8 = 3;
    /// UDP: any packet.
    pub const UDP: u8 = 4;
    /// Not confirmed yet (`UNCONFIRMED` maps only): the client has sent, but not both ends
    /// have spoken; short-lived, and never in `CONNTRACK`/`REVERSE`.
    pub const UNCONFIRMED: u8 = 5;
    /// TCP: confirmed by a proven handshake (the client acknowledged the backend's initial
    /// sequence number) or a fitting mid-stream answer, but data has not flowed both ways
    /// yet: short-lived (`TCP_OPEN_TIMEOUT_NS`) until it has.
    pub const TCP_OPEN: u8 = 6;
}

/// `CtEntry::flags`: `seq_next` holds the client's stream position.
pub const CT_FLAG_SEQ_KNOWN: u8 = 1 << 0;
/// `CtEntry::flags` (`TCP_OPEN` entries): the client has sent data.
pub const CT_FLAG_CLIENT_DATA: u8 = 1 << 1;

/// `CONNTRACK` and `UNCONFIRMED` (`CONNTRACK6`, `UNCONFIRMED6`) value: where a client
/// flow goes (48 bytes for IPv4, 72 for IPv6).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Zeroable)]
pub struct CtEntry<A = u32> {
    /// `bpf_ktime_get_coarse_ns` of the last packet (moved only every
    /// `LAST_SEEN_GRANULARITY_NS`).
    pub last_seen_ns: u64,
    /// Index into `BACKENDS`.
    pub backend_idx: u32,
    /// The backend's address when the flow was created (detects a reused index).
    pub backend_addr: A,
    /// Source address after translation, network byte order.
    pub snat_addr: A,
    /// The backend's port, network byte order.
    pub backend_port: u16,
    /// Source port after translation, network byte order.
    pub snat_port: u16,
    /// One of [`ct_state`].
    pub state: u8,
    /// `CT_FLAG_*` bits.
    pub flags: u8,
    /// Source MAC of the client's frames: replies go back to it.
    pub client_mac: [u8; 6],
    /// Index of the VIP the flow belongs to.
    pub vip_index: u32,
    /// Interface the client's packets arrive on (restores an evicted reverse entry).
    pub client_ifindex: u32,
    /// TCP: the client's next sequence number as last recorded (host order; lags the
    /// stream by at most `SEQ_SLACK`): a FIN or RST from the client must fit it.
    pub seq_next: u32,
    /// The 802.1Q/802.1ad tag of the client's frames ([`vlan_tag`]; 0: untagged).
    pub client_vlan: u32,
}

/// A frame's VLAN tag as kept in `client_vlan`: 0 for an untagged frame, else
/// `VLAN_TAGGED | tci`, with `VLAN_8021AD` when the tag protocol is 802.1ad (0x88a8).
pub const fn vlan_tag(tpid: u16, tci: u16) -> u32 {
    VLAN_TAGGED | if tpid == 0x88a8 { VLAN_8021AD } else { 0 } | tci as u32
}
/// `client_vlan`: the frame was tagged.
pub const VLAN_TAGGED: u32 = 1 << 16;
/// `client_vlan`: the tag protocol is 802.1ad.
pub const VLAN_8021AD: u32 = 1 << 17;

/// `RevEntry::flags`: `seq_next` holds the backend's stream position.
pub const REV_FLAG_SEQ_KNOWN: u8 = 1 << 0;
/// `RevEntry::flags` (unconfirmed entries): the backend has answered. Confirmed entries in
/// `TCP_SYN` (a client reusing its port): the backend's SYN-ACK to the new SYN was seen,
/// and `seq_next` is its initial sequence number + 1.
pub const REV_FLAG_BACKEND_SEEN: u8 = 1 << 1;
/// `RevEntry::flags` (unconfirmed entries): the client's first packet was not a SYN (a
/// flow picked up mid-stream): the backend's first answer confirms it.
pub const REV_FLAG_MIDSTREAM: u8 = 1 << 2;
/// `RevEntry::flags` (`TCP_OPEN` entries): the backend has sent data.
pub const REV_FLAG_BACKEND_DATA: u8 = 1 << 3;

/// `REVERSE` and `UNCONFIRMED_REV` (`REVERSE6`, `UNCONFIRMED_REV6`) value: how to turn a
/// backend's reply back into what the client expects. Its key (backend -> SNAT address and
/// port) is the tuple the flow holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Zeroable)]
pub struct RevEntry<A = u32> {
    /// `bpf_ktime_get_coarse_ns` of the last reply (coarse); also the word a tuple is reclaimed
    /// by (compare-and-swap), so two CPUs never both take over one expired tuple.
    pub last_seen_ns: u64,
    /// The client's address, network byte order.
    pub client_addr: A,
    /// The VIP address, network byte order.
    pub vip_addr: A,
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The VIP port, network byte order.
    pub vip_port: u16,
    /// Index into `BACKENDS` (for counters).
    pub backend_idx: u32,
    /// MAC address to send the reply to.
    pub client_mac: [u8; 6],
    /// One of [`ct_state`].
    pub state: u8,
    /// `REV_FLAG_*` bits.
    pub flags: u8,
    /// Index of the VIP (for counters).
    pub vip_index: u32,
    /// Interface the client's packets arrived on: replies leave by it.
    pub client_ifindex: u32,
    /// TCP: the backend's next sequence number as last recorded (host order, lagging by at
    /// most `SEQ_SLACK`): a FIN or RST from the backend must fit it.
    pub seq_next: u32,
    /// The tag replies leave with: the client's ([`vlan_tag`]; 0: untagged).
    pub client_vlan: u32,
}

/// `VIP_STATS` and `BACKEND_STATS` value (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counters {
    /// Packets forwarded (both directions).
    pub packets: u64,
    /// Bytes forwarded (both directions), whole frames.
    pub bytes: u64,
    /// Flows created.
    pub new_flows: u64,
}

/// `PASSIVE` value (per CPU): the handshakes of one backend as the data path saw them, for
/// passive health (`observe layer4`). Each new flow counts once: its first SYN forwarded,
/// then the backend's first answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Passive {
    /// New TCP flows whose SYN was forwarded to the backend.
    pub syns: u64,
    /// Of those, answered with a SYN-ACK (or any first answer other than a RST).
    pub answered: u64,
    /// Of those, answered with a RST (refused).
    pub refused: u64,
}

/// `Pod` for both instantiations of the generic map types. bytemuck cannot derive it for
/// a generic struct, so each instantiation states the size it has without padding (the
/// sum of its fields), checked at compile time: a field added with a hole fails the build.
macro_rules! pod_by_size {
    ($($ty:ty = $size:expr;)*) => {
        $(
            const _: () = assert!(core::mem::size_of::<$ty>() == $size, "padding in a map type");
            // SAFETY: repr(C), every field Pod, no padding (size checked above).
            unsafe impl Pod for $ty {}
            #[cfg(feature = "user")]
            // SAFETY: as above.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

pod_by_size! {
    VipKey<u32> = 4 + 2 + 1 + 1;
    VipKey<Ip6> = 16 + 2 + 1 + 1;
    VipMeta<u32> = 4 * 4 + 4 + 4;
    VipMeta<Ip6> = 4 * 4 + 16 + 4;
    Backend<u32> = 4 + 4 + 4 + 2 + 6 + 4;
    Backend<Ip6> = 16 + 4 + 4 + 2 + 6 + 4;
    FlowKey<u32> = 2 * 4 + 2 + 2 + 1 + 3;
    FlowKey<Ip6> = 2 * 16 + 2 + 2 + 1 + 3;
    CtEntry<u32> = 8 + 4 + 2 * 4 + 2 + 2 + 1 + 1 + 6 + 4 * 4;
    CtEntry<Ip6> = 8 + 4 + 2 * 16 + 2 + 2 + 1 + 1 + 6 + 4 * 4;
    RevEntry<u32> = 8 + 2 * 4 + 2 + 2 + 4 + 6 + 1 + 1 + 4 * 4;
    RevEntry<Ip6> = 8 + 2 * 16 + 2 + 2 + 4 + 6 + 1 + 1 + 4 * 4;
    SyncEvent<u32> = 4 + 4 + 16 + 48;
    SyncEvent<Ip6> = 4 + 4 + 40 + 72;
}

/// The IPv6 instantiations, by the names the maps use.
pub type VipKey6 = VipKey<Ip6>;
/// `VIPS6` value.
pub type VipMeta6 = VipMeta<Ip6>;
/// `BACKENDS6` value.
pub type Backend6 = Backend<Ip6>;
/// `CONNTRACK6`, `REVERSE6`, `UNCONFIRMED6`, `UNCONFIRMED_REV6` key.
pub type FlowKey6 = FlowKey<Ip6>;
/// `CONNTRACK6`, `UNCONFIRMED6` value.
pub type CtEntry6 = CtEntry<Ip6>;
/// `REVERSE6`, `UNCONFIRMED_REV6` value.
pub type RevEntry6 = RevEntry<Ip6>;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C) with explicit padding (checked by bytemuck's Pod derive).
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Ifaces {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for Passive {}
    unsafe impl aya::Pod for AddrSlot6 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn map_types_have_the_sizes_the_kernel_side_expects() {
        assert_eq!(size_of::<VipKey>(), 8);
        assert_eq!(size_of::<VipMeta>(), 24);
        assert_eq!(size_of::<Backend>(), 24);
        assert_eq!(size_of::<Config>(), 16);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<CtEntry>(), 48);
        assert_eq!(size_of::<RevEntry>(), 48);
        // IPv6: separate maps, so the IPv4 sizes above are untouched.
        assert_eq!(size_of::<VipKey6>(), 20);
        assert_eq!(size_of::<VipMeta6>(), 36);
        assert_eq!(size_of::<Backend6>(), 36);
        assert_eq!(size_of::<FlowKey6>(), 40);
        assert_eq!(size_of::<CtEntry6>(), 72);
        assert_eq!(size_of::<RevEntry6>(), 72);
        assert_eq!(core::mem::align_of::<FlowKey6>(), 4);
    }

    #[test]
    fn ip6_raw_keeps_wire_order_and_round_trips() {
        let o = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
        ];
        let a = ip6_raw(o);
        assert_eq!(a[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(ip6_octets(a), o);
        assert_eq!(<Ip6 as Addr>::ZERO, ip6_raw([0; 16]));
    }

    #[test]
    fn the_sync_event_has_the_size_the_daemon_reads() {
        assert_eq!(size_of::<SyncEvent>(), 72);
        assert_eq!(size_of::<SyncEvent6>(), 120);
        assert_eq!(core::mem::offset_of!(SyncEvent6, family), 4);
    }

    #[test]
    fn ring_halves_do_not_overlap_between_vips() {
        assert_eq!(ring_base(0, 1), crate::MAX_RING_SIZE);
        assert_eq!(ring_base(1, 0), 2 * crate::MAX_RING_SIZE);
        assert!(ring_base(crate::MAX_VIPS - 1, 1) + crate::MAX_RING_SIZE <= crate::RINGS_SIZE);
    }

    #[test]
    fn raw_forms_keep_wire_order() {
        assert_eq!(ip_raw([192, 0, 2, 1]).to_ne_bytes(), [192, 0, 2, 1]);
        assert_eq!(port_raw(6443).to_ne_bytes(), [0x19, 0x2b]);
    }
}
