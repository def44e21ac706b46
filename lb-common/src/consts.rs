//! Every size and capacity of the data path, derived sizes computed from the base ones.

/// Largest number of VIPs (address, port, protocol) served at once.
pub const MAX_VIPS: u32 = 16;
/// Largest number of backends over all VIPs; a backend index is below this.
pub const MAX_BACKENDS: u32 = 4096;
/// Interfaces one daemon attaches to (`--interface` repeated).
pub const MAX_INTERFACES: usize = 4;
/// Largest Maglev table per VIP (a prime); smaller primes may be configured per VIP.
pub const MAX_RING_SIZE: u32 = 65537;
/// Default Maglev table size (Eisenbud et al. use 65537 for up to a few hundred backends).
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Each VIP owns two table halves so a swap is a single flip of `VipMeta::active_half`.
pub const RING_HALVES: u32 = 2;
/// Entries in the flat `RINGS` array: `MAX_VIPS * RING_HALVES * MAX_RING_SIZE`.
pub const RINGS_SIZE: u32 = MAX_VIPS * RING_HALVES * MAX_RING_SIZE;
/// Slots of `VIP_SLOTS`, the direct-mapped address table in front of `VIP_ADDRS` (a power
/// of two).
pub const VIP_SLOTS: u32 = 4096;
/// Slots of `VIP_SLOTS6`, the direct-mapped table in front of `VIP_ADDRS6` (a power of two;
/// it holds at most `VIP_ADDRS6_SIZE` addresses).
pub const VIP_SLOTS6: u32 = 256;
/// `VIP_SLOTS` value flag: several addresses share the slot, ask `VIP_ADDRS`
/// (`VIP_SLOTS6`: `AddrSlot6::flags`, ask `VIP_ADDRS6`).
pub const ADDR_SLOT_OVERFLOW: u32 = 1 << 31;
/// `BACKEND_SLOTS` value bits: some IPv4 (IPv6) address that is or was a backend falls in
/// the slot (`Addr::backend_slot`). The direct-mapped table in front of the reply lookups
/// of DNAT: a reply comes from a backend, so a packet from an address whose slot has no
/// bit for its family is no reply. Bits are only ever set while the map lives (a removed
/// backend's flows still have their reply entries), so a slot can only say "maybe".
pub const BACKEND_SLOT_V4: u32 = 1 << 0;
pub const BACKEND_SLOT_V6: u32 = 1 << 1;
/// Default number of tracked flows (forward entries; the reverse map has the same size).
pub const DEFAULT_CONNTRACK_SIZE: u32 = 262_144;
/// Entries of `UNCONFIRMED` and `UNCONFIRMED_REV`: flows whose ends have not both spoken
/// (handshakes in progress, spoofed SYNs, bare ACKs). A flood churns these LRU maps and
/// never the confirmed ones; at the default size a legitimate handshake survives as long as
/// fewer than this many other new flows arrive within its round trip to the backend.
pub const UNCONFIRMED_SIZE: u32 = 65_536;
/// `xvip status` says the VIP is flooded above this many unconfirmed flows (a healthy
/// control plane has a few: each lives one round trip).
pub const UNCONFIRMED_FLOOD_THRESHOLD: u32 = UNCONFIRMED_SIZE / 16;
/// Marks a Maglev slot (or a conntrack entry) that points at no backend.
pub const NO_BACKEND: u32 = u32::MAX;
/// Default port of a VIP and of a backend: the Kubernetes API server's.
pub const DEFAULT_PORT: u16 = 6443;
/// Default first port handed out for SNAT in full-NAT mode.
pub const DEFAULT_SNAT_PORT_MIN: u16 = 20000;
/// Default last port handed out for SNAT in full-NAT mode.
pub const DEFAULT_SNAT_PORT_MAX: u16 = 59999;
/// How many ports a new flow tries before the packet is dropped as "SNAT ports exhausted".
pub const SNAT_PROBES: u32 = 16;

/// Idle lifetime of an unconfirmed flow, and of a closing flow reused by a bare SYN, in
/// nanoseconds. Short: such a flow holds a SNAT tuple. A client's retransmitted SYN after
/// expiry hashes to the same backend and, tuple free, the same SNAT port.
pub const TCP_SYN_TIMEOUT_NS: u64 = 5 * NS_PER_SEC;
/// When every SNAT port a new flow probes is held, one held by an unconfirmed flow idle
/// for longer than this (nanoseconds) is taken over: a real handshake completes within a
/// round trip, so a flow silent this long is almost always a spoofed SYN.
pub const UNCONFIRMED_STEAL_AFTER_NS: u64 = 200 * NS_PER_SEC / 1000;
/// Idle lifetime of an established TCP flow, in nanoseconds (watches idle for minutes).
pub const TCP_ESTABLISHED_TIMEOUT_NS: u64 = 2 * 3600 * NS_PER_SEC;
/// Entries of `PROVEN`: client sources (IPv4 addresses, IPv6 /64 prefixes) that have
/// recently completed a proven handshake, admitted ahead of the new-flow budget.
pub const PROVEN_SIZE: u32 = 16_384;
/// How long a source stays proven after its last proven handshake, in nanoseconds.
pub const PROVEN_TTL_NS: u64 = 3600 * NS_PER_SEC;
/// New flows per second and per CPU from sources not proven (and their burst): beyond it
/// their packets are dropped (`drop_new_flow_budget`), so a flood of spoofed sources
/// cannot churn the unconfirmed maps, the SNAT tuples and the backends' SYN queues faster
/// than this, while proven sources keep connecting. A control plane's legitimate new
/// connections are far fewer (hundreds per second for thousands of nodes).
pub const NEW_FLOW_BUDGET_PER_SEC: u64 = 10_000;
/// Idle lifetime of a confirmed TCP flow until data has flowed both ways (`TCP_OPEN`), in
/// nanoseconds: a handshake proven from a real address, but nothing more yet, does not get
/// the 2 h of an established flow (nor its SNAT port for that long).
pub const TCP_OPEN_TIMEOUT_NS: u64 = 30 * NS_PER_SEC;
/// Idle lifetime of a TCP flow after a FIN or RST, in nanoseconds.
pub const TCP_CLOSING_TIMEOUT_NS: u64 = 10 * NS_PER_SEC;
/// Idle lifetime of a UDP flow, in nanoseconds.
pub const UDP_TIMEOUT_NS: u64 = 30 * NS_PER_SEC;
/// A flow's `last_seen` is only rewritten when older than this, to keep the shared entry
/// out of every CPU's cache on every packet.
pub const LAST_SEEN_GRANULARITY_NS: u64 = NS_PER_SEC;
/// A FIN or RST is honoured (and forwarded) only when its sequence number lies within
/// this many bytes below the sender's recorded stream position (a sender that rewinds
/// after a timeout sends from below its highest sequence)...
pub const SEQ_WINDOW_BELOW: u32 = 1 << 20;
/// ...or within this many above it (the recorded position lags by up to `SEQ_SLACK`). A
/// blind attacker must guess within about 1.1 MiB of 4 GiB: some 3,800 tries per flow.
pub const SEQ_WINDOW_ABOVE: u32 = 2 * SEQ_SLACK;
/// A stream position is rewritten only when it has moved this many bytes, so a bulk
/// stream writes its entry every few dozen packets, not on each.
pub const SEQ_SLACK: u32 = 1 << 16;
/// Bytes of the `SYNC_EVENTS` ring buffer (a power of two, page multiple): 14,000 events
/// of 80 bytes (with the ring's header), some 1.4 s of 10,000 new flows per second should
/// the daemon stall.
pub const SYNC_RING_BYTES: u32 = 1 << 20;
/// Nanoseconds in one second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// IP protocol numbers used in keys.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP's IP protocol number.
pub const IPPROTO_TCP: u8 = 6;
/// UDP's IP protocol number.
pub const IPPROTO_UDP: u8 = 17;
/// ICMPv6's IP protocol number (next header).
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers the parser walks before the transport header, at most.
pub const MAX_IPV6_EXT_HEADERS: u32 = 4;
/// Entries of `VIP_ADDRS6`: every v6 VIP and SNAT address, and the DNAT key `::`.
pub const VIP_ADDRS6_SIZE: u32 = 2 * MAX_VIPS + 1;

/// Map names, as the daemon looks them up in the object file and pins them.
pub mod map_names {
    /// `VipKey -> VipMeta`.
    pub const VIPS: &str = "VIPS";
    /// `u32 VIP index -> VipKey` of the VIP holding the index in `VIPS` (zero: none).
    pub const VIP_KEYS: &str = "VIP_KEYS";
    /// `u32 VIP index -> VipKey6` of the IPv6 VIP holding the index in `VIPS6` (zero: none).
    pub const VIP_KEYS6: &str = "VIP_KEYS6";
    /// `u32 slot -> u64 (address << 32 | ADDR_FLAG_* or ADDR_SLOT_OVERFLOW)`.
    pub const VIP_SLOTS: &str = "VIP_SLOTS";
    /// `u32 slot (hash::addr_slot6) -> AddrSlot6`.
    pub const VIP_SLOTS6: &str = "VIP_SLOTS6";
    /// `u32 address -> u32 ADDR_FLAG_*`.
    pub const VIP_ADDRS: &str = "VIP_ADDRS";
    /// `u32 slot -> u32 backend index`, flat over VIPs and halves.
    pub const RINGS: &str = "RINGS";
    /// `u32 backend index -> Backend`.
    pub const BACKENDS: &str = "BACKENDS";
    /// `u32 slot (Addr::backend_slot) -> u32 BACKEND_SLOT_V4 | BACKEND_SLOT_V6`.
    pub const BACKEND_SLOTS: &str = "BACKEND_SLOTS";
    /// `FlowKey (client side) -> CtEntry`.
    pub const CONNTRACK: &str = "CONNTRACK";
    /// `FlowKey (backend side, as the reply carries it) -> RevEntry`.
    pub const REVERSE: &str = "REVERSE";
    /// `FlowKey (client side) -> CtEntry` of flows not confirmed yet.
    pub const UNCONFIRMED: &str = "UNCONFIRMED";
    /// `FlowKey (backend side) -> RevEntry` of flows not confirmed yet.
    pub const UNCONFIRMED_REV: &str = "UNCONFIRMED_REV";
    /// `u32 0 -> Config`.
    pub const CONFIG: &str = "CONFIG";
    /// `0 -> Ifaces`: every attached interface's index and MAC.
    pub const IFACES: &str = "IFACES";
    /// Per CPU: `u32 Reason -> u64 packets`.
    pub const REASONS: &str = "REASONS";
    /// Per CPU: `u32 VIP index -> Counters`.
    pub const VIP_STATS: &str = "VIP_STATS";
    /// Per CPU: `u32 backend index -> Counters`.
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    /// Per CPU: `u32 backend index -> Passive` (handshakes forwarded, answered, refused).
    pub const PASSIVE: &str = "PASSIVE";
    /// `VipKey6 -> VipMeta6`: the IPv6 VIPs (their indices shared with `VIPS`: one
    /// `RINGS`, one `VIP_STATS`).
    pub const VIPS6: &str = "VIPS6";
    /// `Ip6 address -> u32 ADDR_FLAG_*` (key `::` present when a v6 VIP uses DNAT).
    pub const VIP_ADDRS6: &str = "VIP_ADDRS6";
    /// `u32 backend index -> Backend6`: indices shared with `BACKENDS` (an index is used
    /// in one of the two arrays).
    pub const BACKENDS6: &str = "BACKENDS6";
    /// `FlowKey6 (client side) -> CtEntry6`.
    pub const CONNTRACK6: &str = "CONNTRACK6";
    /// `FlowKey6 (backend side) -> RevEntry6`.
    pub const REVERSE6: &str = "REVERSE6";
    /// `FlowKey6 (client side) -> CtEntry6` of flows not confirmed yet.
    pub const UNCONFIRMED6: &str = "UNCONFIRMED6";
    /// `FlowKey6 (backend side) -> RevEntry6` of flows not confirmed yet.
    pub const UNCONFIRMED_REV6: &str = "UNCONFIRMED_REV6";
    /// Ring buffer of `SyncEvent`s (confirmed flows created and ended).
    pub const SYNC_EVENTS: &str = "SYNC_EVENTS";
    /// Per CPU: `u32 SYNC_COUNT_* -> u64`.
    pub const SYNC_COUNTS: &str = "SYNC_COUNTS";
}

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "xvip";
