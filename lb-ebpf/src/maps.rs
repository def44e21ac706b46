//! The program's maps. Key -> value, byte order and writer of each; the layouts are in
//! `lb_common::maps`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    AddrSlot6, Backend, Backend6, Config, Counters, CtEntry, CtEntry6, DEFAULT_CONNTRACK_SIZE,
    FlowKey, FlowKey6, Ifaces, Ip6, MAX_BACKENDS, MAX_VIPS, PROVEN_SIZE, Passive, RINGS_SIZE,
    RevEntry, RevEntry6, UNCONFIRMED_SIZE, VIP_ADDRS6_SIZE, VipKey, VipKey6, VipMeta, VipMeta6,
    stats::REASON_COUNT,
};

/// VipKey (addr, port: network order; proto) -> VipMeta. Written by the daemon.
#[map]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(MAX_VIPS, 0);

/// VIP index -> the `VipKey` holding that index in `VIPS`, zero when none: a packet of a
/// confirmed IPv4 flow (whose entry names its VIP's index) proves its VIP still exists with
/// one inlined read instead of the `VIPS` hash lookup. Written by the daemon: set after the
/// VIP's `VIPS` entry, cleared before it goes. A key that does not match sends the packet
/// the slow way (`VIPS`), so a torn or stale read costs time, never a wrong answer.
#[map]
pub static VIP_KEYS: Array<VipKey> = Array::with_max_entries(MAX_VIPS, 0);

/// `VIP_KEYS` for IPv6: VIP index -> the `VipKey6` holding it in `VIPS6`, zero when none.
/// Read by the fast path (`fast.rs`) only; the full IPv6 path asks `VIPS6`
/// (`Family::ENTRY_FIRST`). Written by the daemon in the same order as `VIP_KEYS`.
#[map]
pub static VIP_KEYS6: Array<VipKey6> = Array::with_max_entries(MAX_VIPS, 0);

/// Slot (`addr_slot(addr)`) -> `address << 32 | ADDR_FLAG_*` for the one `VIP_ADDRS` key
/// in that slot, `ADDR_SLOT_OVERFLOW` when several share it, 0 when none: answers most
/// packets with one inlined array read instead of a hash lookup. Written by the daemon.
#[map]
pub static VIP_SLOTS: Array<u64> = Array::with_max_entries(VIP_SLOTS_LEN, 0);

const VIP_SLOTS_LEN: u32 = lb_common::VIP_SLOTS;

/// Address (network order) -> `ADDR_FLAG_*`: VIP and SNAT addresses, the cheap first test
/// that lets traffic for anything else pass after one lookup. Written by the daemon.
#[map]
pub static VIP_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(2 * MAX_VIPS, 0);

/// Slot (`ring_base(vip, half) + hash % ring_size`) -> backend index or `NO_BACKEND`.
/// Written by the daemon into the inactive half (through a shared mapping: the map is
/// mmapable so a 65537-slot table is a memory copy, not 65537 syscalls), then flipped
/// through `VIPS`.
#[map]
pub static RINGS: Array<u32> = Array::with_max_entries(RINGS_SIZE, BPF_F_MMAPABLE);

const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Backend index -> Backend (addr, port: network order; next-hop MAC). Written by the daemon.
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Slot (`Addr::backend_slot(addr)`) -> `BACKEND_SLOT_V4 | BACKEND_SLOT_V6`: whether some
/// address that is (or was, while the map lives) a backend of that family falls in the
/// slot. A packet to an address of no flags is a DNAT reply only if it comes from a
/// backend: one inlined read rejects the node's other traffic before the two reply
/// lookups. Written by the daemon (bits set before the backend is written, never cleared).
#[map]
pub static BACKEND_SLOTS: Array<u32> = Array::with_max_entries(VIP_SLOTS_LEN, 0);

/// Client-side flow (client -> VIP) -> CtEntry. Written here; read by the daemon for status.
/// Shared by all CPUs so a flow's entry is found whichever CPU its packets arrive on.
#[map]
pub static CONNTRACK: LruHashMap<FlowKey, CtEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONNTRACK_SIZE, 0);

/// Backend-side flow as the reply carries it (backend -> SNAT address or client) -> RevEntry.
/// Written here, shared by all CPUs.
#[map]
pub static REVERSE: LruHashMap<FlowKey, RevEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONNTRACK_SIZE, 0);

/// Client-side flow -> CtEntry of flows not confirmed yet (see `conntrack`). Written here.
/// Its own LRU: a flood of spoofed SYNs or bare ACKs evicts only its own kind. Under a
/// flood every packet inserts here, so each CPU keeps its own LRU list (no shared lock);
/// entries are still found from any CPU.
#[map]
pub static UNCONFIRMED: LruHashMap<FlowKey, CtEntry> =
    LruHashMap::with_max_entries(UNCONFIRMED_SIZE, BPF_F_NO_COMMON_LRU);

/// Backend-side tuple -> RevEntry of flows not confirmed yet: the tuples they hold.
/// Written here; per-CPU LRU lists as `UNCONFIRMED`.
#[map]
pub static UNCONFIRMED_REV: LruHashMap<FlowKey, RevEntry> =
    LruHashMap::with_max_entries(UNCONFIRMED_SIZE, BPF_F_NO_COMMON_LRU);

const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// 0 -> room for the entries a new or confirming flow builds (per CPU, used within one
/// packet): the program's 512-byte stack cannot hold them as well.
#[map]
pub static SCRATCH: PerCpuArray<Scratch<u32>> = PerCpuArray::with_max_entries(1, 0);

/// `SCRATCH` (`SCRATCH6`) value.
pub struct Scratch<A> {
    pub ct: CtEntry<A>,
    pub rev: RevEntry<A>,
    /// `Family::snapshot` (IPv6 only): a confirmed entry, a VIP's meta.
    pub old: CtEntry<A>,
    pub meta: VipMeta<A>,
    /// `packet::launder` (IPv6 only).
    pub l4_off: u32,
    /// `conntrack::claim_snat_port`'s state across its `bpf_loop` (no room on the stack).
    pub probe: SnatProbe<A>,
}

/// The SNAT probe's state, shared by the `bpf_loop` callback's calls.
pub struct SnatProbe<A> {
    /// The new flow's client-side key.
    pub key: FlowKey<A>,
    /// The tuple being probed (in the scratch: IPv6's 40-byte key would not fit the
    /// callback's frame beside the path's).
    pub rkey: FlowKey<A>,
    pub now: u64,
    /// The unconfirmed holder idle the longest so far (`u64::MAX`: none).
    pub oldest_seen: u64,
    /// First port (host order), size of the range, the flow's hash.
    pub min: u32,
    pub range: u32,
    pub hash: u32,
    /// Ports to probe: `SNAT_PROBES`, or the whole range when smaller.
    pub probes: u32,
    /// The port of `oldest_seen` (network order).
    pub oldest_port: u16,
    /// `conntrack::PROBE_*`.
    pub outcome: u8,
}

/// The IPv6 VIPs: VipKey6 -> VipMeta6, indices shared with `VIPS` (one `RINGS`, one
/// `VIP_STATS`). Written by the daemon.
#[map]
pub static VIPS6: HashMap<VipKey6, VipMeta6> = HashMap::with_max_entries(MAX_VIPS, 0);

/// Slot (`addr_slot6(addr)`) -> the one `VIP_ADDRS6` address in that slot and its flags,
/// `ADDR_SLOT_OVERFLOW` when several share it, zero when none: `VIP_SLOTS` for IPv6, an
/// inlined read and a 16-byte compare instead of a hash lookup on every IPv6 packet.
/// Written by the daemon (after `VIP_ADDRS6`).
#[map]
pub static VIP_SLOTS6: Array<AddrSlot6> = Array::with_max_entries(lb_common::VIP_SLOTS6, 0);

/// IPv6 address -> `ADDR_FLAG_*` of the v6 VIP and SNAT addresses; `::` present when a v6
/// VIP uses DNAT. Written by the daemon.
#[map]
pub static VIP_ADDRS6: HashMap<Ip6, u32> = HashMap::with_max_entries(VIP_ADDRS6_SIZE, 0);

/// Backend index -> Backend6: the same index space as `BACKENDS` (an index is used in one
/// of the two). Written by the daemon.
#[map]
pub static BACKENDS6: Array<Backend6> = Array::with_max_entries(MAX_BACKENDS, 0);

/// The IPv6 flows, as `CONNTRACK`, `REVERSE`, `UNCONFIRMED` and `UNCONFIRMED_REV` are the
/// IPv4 ones. The confirmed ones are sized by the daemon (`--conntrack-size` when a v6 VIP
/// is configured); the default here is small, so that a loader which does not care (the
/// fixtures) does not preallocate a quarter million 112-byte flows. Written here.
#[map]
pub static CONNTRACK6: LruHashMap<FlowKey6, CtEntry6> =
    LruHashMap::with_max_entries(UNCONFIRMED_SIZE, 0);
#[map]
pub static REVERSE6: LruHashMap<FlowKey6, RevEntry6> =
    LruHashMap::with_max_entries(UNCONFIRMED_SIZE, 0);
#[map]
pub static UNCONFIRMED6: LruHashMap<FlowKey6, CtEntry6> =
    LruHashMap::with_max_entries(UNCONFIRMED_SIZE, BPF_F_NO_COMMON_LRU);
#[map]
pub static UNCONFIRMED_REV6: LruHashMap<FlowKey6, RevEntry6> =
    LruHashMap::with_max_entries(UNCONFIRMED_SIZE, BPF_F_NO_COMMON_LRU);

/// Client source (`Family::source_key`: an IPv4 address, an IPv6 /64) -> when it last
/// completed a proven handshake (a client ACK of the backend's initial sequence number +
/// 1, which a spoofed source never sees). Such sources are admitted ahead of
/// `NEW_FLOW_BUDGET`. An LRU of its own, both families: only proven handshakes write it,
/// so spoofed sources cannot churn it; not pinned (a restart forgets it, and the budget
/// only bites under a flood).
#[map]
pub static PROVEN: LruHashMap<u64, u64> = LruHashMap::with_max_entries(PROVEN_SIZE, 0);

/// Per CPU, 0 -> the token bucket of new flows from sources not proven.
#[map]
pub static NEW_FLOW_BUDGET: PerCpuArray<Budget> = PerCpuArray::with_max_entries(1, 0);

/// `NEW_FLOW_BUDGET` value.
pub struct Budget {
    /// New flows that may still start (at most `NEW_FLOW_BUDGET_PER_SEC`).
    pub tokens: u64,
    /// When tokens were last added.
    pub refilled_ns: u64,
}

/// `SCRATCH` for IPv6 flows (72-byte entries).
#[map]
pub static SCRATCH6: PerCpuArray<Scratch<Ip6>> = PerCpuArray::with_max_entries(1, 0);

/// 0 -> Config. Written by the daemon before the program is attached.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// 0 -> Ifaces: index and MAC of every attached interface, read only when
/// `CONFIG_FLAG_IFACES` is set (several interfaces). Written by the daemon before attaching.
#[map]
pub static IFACES: Array<Ifaces> = Array::with_max_entries(1, 0);

/// Per CPU: Reason -> packets. Written here, summed by the daemon.
#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

/// Per CPU: VIP index -> Counters. Written here.
#[map]
pub static VIP_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// Per CPU: backend index -> Counters. Written here.
#[map]
pub static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Per CPU: backend index -> Passive (new flows' SYNs forwarded, first answers: SYN-ACK or
/// RST). Written here, read by the daemon every passive-health tick.
#[map]
pub static PASSIVE: PerCpuArray<Passive> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
