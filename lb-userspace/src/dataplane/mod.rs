//! The kernel side as the daemon sees it: loading and attaching the XDP program, and the
//! maps behind the [`MapStore`] interface (so the reconciliation logic runs in tests against
//! [`FakeMaps`] without a kernel).

// The node itself (VIP on `lo`, the connect4 hook) and the pins of the maps and links.
pub mod local;
pub mod pins;

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, Xdp, XdpMode,
        cgroup_sock_addr::CgroupSockAddrLink,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lb_common::{
    Addr, AddrSlot6, BACKEND_FLAG_PRESENT, Backend, Backend6, Config, Counters, CtEntry, FlowKey,
    Ip6, MAX_RING_SIZE, PROGRAM_NAME, RINGS_SIZE, VipKey, VipKey6, VipMeta, VipMeta6, map_names,
};

use crate::{config::XdpAttachMode, dataplane::pins::LINK_PIN};

/// Errors of the kernel side.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The binary was built without the XDP object.
    #[error("this xvip was built without its XDP program: build it with `cargo xtask build`")]
    NoObject,
    /// Loading the object (maps, BTF) failed.
    #[error("cannot load the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A map the program must have is missing or has another type.
    #[error("map {name}: {reason}")]
    Map { name: &'static str, reason: String },
    /// A program operation (verifier, attach) failed.
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// A map operation failed.
    #[error("map operation on {name}: {source}")]
    MapOp {
        name: &'static str,
        source: aya::maps::MapError,
    },
    /// Attaching failed in every allowed mode.
    #[error("cannot attach to {interface} in {mode} mode: {reason}")]
    Attach {
        interface: String,
        mode: &'static str,
        reason: String,
    },
    /// Mapping the table map into memory failed.
    #[error("cannot mmap {name}: {source}")]
    Mmap {
        name: &'static str,
        source: std::io::Error,
    },
    /// A pinned map from an earlier xvip does not match this one's layout.
    #[error(
        "pinned state in {dir} does not match this xvip ({reason}); `xvip detach --interface {interface}` removes it (and drops tracked connections)"
    )]
    PinnedMismatch {
        dir: String,
        interface: String,
        reason: String,
    },
    /// The bpffs directory could not be prepared.
    #[error("bpffs directory {dir}: {reason}")]
    PinDir { dir: String, reason: String },
    /// Nothing is pinned for that interface.
    #[error("nothing pinned for {interface} in {dir}")]
    NothingPinned { interface: String, dir: String },
    /// A table that does not fit its slot.
    #[error("table of {len} slots does not fit (at most {max})")]
    TableTooLarge { len: usize, max: u32 },
}

/// Map writes the reconciliation needs. Implemented by [`Dataplane`] and [`FakeMaps`].
pub trait MapStore {
    /// Replaces the single `CONFIG` entry.
    fn set_config(&mut self, cfg: &Config) -> Result<(), DataplaneError>;
    /// Writes one `VIP_SLOTS` slot (`lb_common::hash::addr_slots`).
    fn set_vip_slot(&mut self, slot: u32, value: u64) -> Result<(), DataplaneError>;
    /// Marks an address as VIP and/or SNAT address (`flags` = 0 removes it).
    fn set_vip_addr(&mut self, addr: u32, flags: u32) -> Result<(), DataplaneError>;
    /// Writes `VIP_KEYS[index]`: the key of the IPv4 VIP holding `index` in `VIPS`
    /// (`VipKey::default()`: none). Set after the VIP's `VIPS` entry, cleared before it goes.
    fn set_vip_index_key(&mut self, index: u32, key: &VipKey) -> Result<(), DataplaneError>;
    /// Adds or replaces a VIP. Replacing is atomic for packets (a new hash element).
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError>;
    /// The VIP's current value, if any.
    fn vip(&self, key: &VipKey) -> Option<VipMeta>;
    /// Every VIP in `VIPS` (an adopted map may hold VIPs no longer configured).
    fn vip_keys(&self) -> Vec<VipKey>;
    /// Removes a VIP from `VIPS` (absent is fine).
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError>;
    /// Every address in `VIP_ADDRS`.
    fn vip_addr_keys(&self) -> Vec<u32>;
    /// Writes a backend slot.
    fn set_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError>;
    /// Writes `table` into `RINGS` starting at `base`.
    fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<(), DataplaneError>;
    /// `set_vip_addr` for an IPv6 address (`VIP_ADDRS6`).
    fn set_vip_addr6(&mut self, addr: Ip6, flags: u32) -> Result<(), DataplaneError>;
    /// Writes one `VIP_SLOTS6` slot (`lb_common::hash::addr_slots6`).
    fn set_vip_slot6(&mut self, slot: u32, value: &AddrSlot6) -> Result<(), DataplaneError>;
    /// `set_vip` for an IPv6 VIP (`VIPS6`).
    fn set_vip6(&mut self, key: &VipKey6, meta: &VipMeta6) -> Result<(), DataplaneError>;
    /// `vip` for an IPv6 VIP.
    fn vip6(&self, key: &VipKey6) -> Option<VipMeta6>;
    /// Every VIP in `VIPS6`.
    fn vip6_keys(&self) -> Vec<VipKey6>;
    /// Removes an IPv6 VIP (absent is fine).
    fn remove_vip6(&mut self, key: &VipKey6) -> Result<(), DataplaneError>;
    /// Every address in `VIP_ADDRS6`.
    fn vip_addr6_keys(&self) -> Vec<Ip6>;
    /// Writes an IPv6 backend slot (`BACKENDS6`: the index space is `BACKENDS`'s).
    fn set_backend6(&mut self, index: u32, backend: &Backend6) -> Result<(), DataplaneError>;
}

/// In-memory maps for tests of the control plane.
#[derive(Debug, Default)]
pub struct FakeMaps {
    pub config: Config,
    pub vip_addrs: StdHashMap<u32, u32>,
    pub vip_slots: StdHashMap<u32, u64>,
    pub vips: StdHashMap<VipKey, VipMeta>,
    pub vip_index_keys: StdHashMap<u32, VipKey>,
    pub backends: StdHashMap<u32, Backend>,
    pub vip_addrs6: StdHashMap<Ip6, u32>,
    pub vip_slots6: StdHashMap<u32, AddrSlot6>,
    pub vips6: StdHashMap<VipKey6, VipMeta6>,
    pub backends6: StdHashMap<u32, Backend6>,
    pub rings: StdHashMap<u32, u32>,
    /// Number of `write_ring` calls (table swaps).
    pub ring_writes: usize,
}

impl FakeMaps {
    /// The live table of a VIP, read as the data path would.
    pub fn live_table(&self, key: &VipKey) -> Option<Vec<u32>> {
        self.table_at(
            self.vips.get(key)?.ring_base(),
            self.vips.get(key)?.ring_size,
        )
    }

    /// The live table of an IPv6 VIP.
    pub fn live_table6(&self, key: &VipKey6) -> Option<Vec<u32>> {
        self.table_at(
            self.vips6.get(key)?.ring_base(),
            self.vips6.get(key)?.ring_size,
        )
    }

    fn table_at(&self, base: u32, ring_size: u32) -> Option<Vec<u32>> {
        Some(
            (0..ring_size)
                .map(|i| self.rings.get(&(base + i)).copied().unwrap_or(0))
                .collect(),
        )
    }
}

impl MapStore for FakeMaps {
    fn set_vip_slot(&mut self, slot: u32, value: u64) -> Result<(), DataplaneError> {
        self.vip_slots.insert(slot, value);
        Ok(())
    }
    fn set_config(&mut self, cfg: &Config) -> Result<(), DataplaneError> {
        self.config = *cfg;
        Ok(())
    }
    fn set_vip_addr(&mut self, addr: u32, flags: u32) -> Result<(), DataplaneError> {
        if flags == 0 {
            self.vip_addrs.remove(&addr);
        } else {
            self.vip_addrs.insert(addr, flags);
        }
        Ok(())
    }
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError> {
        self.vips.insert(*key, *meta);
        Ok(())
    }
    fn set_vip_index_key(&mut self, index: u32, key: &VipKey) -> Result<(), DataplaneError> {
        self.vip_index_keys.insert(index, *key);
        Ok(())
    }
    fn set_vip_slot6(&mut self, slot: u32, value: &AddrSlot6) -> Result<(), DataplaneError> {
        self.vip_slots6.insert(slot, *value);
        Ok(())
    }
    fn vip(&self, key: &VipKey) -> Option<VipMeta> {
        self.vips.get(key).copied()
    }
    fn vip_keys(&self) -> Vec<VipKey> {
        self.vips.keys().copied().collect()
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        self.vips.remove(key);
        Ok(())
    }
    fn vip_addr_keys(&self) -> Vec<u32> {
        self.vip_addrs.keys().copied().collect()
    }
    fn set_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        self.backends.insert(index, *backend);
        Ok(())
    }
    fn set_vip_addr6(&mut self, addr: Ip6, flags: u32) -> Result<(), DataplaneError> {
        if flags == 0 {
            self.vip_addrs6.remove(&addr);
        } else {
            self.vip_addrs6.insert(addr, flags);
        }
        Ok(())
    }
    fn set_vip6(&mut self, key: &VipKey6, meta: &VipMeta6) -> Result<(), DataplaneError> {
        self.vips6.insert(*key, *meta);
        Ok(())
    }
    fn vip6(&self, key: &VipKey6) -> Option<VipMeta6> {
        self.vips6.get(key).copied()
    }
    fn vip6_keys(&self) -> Vec<VipKey6> {
        self.vips6.keys().copied().collect()
    }
    fn remove_vip6(&mut self, key: &VipKey6) -> Result<(), DataplaneError> {
        self.vips6.remove(key);
        Ok(())
    }
    fn vip_addr6_keys(&self) -> Vec<Ip6> {
        self.vip_addrs6.keys().copied().collect()
    }
    fn set_backend6(&mut self, index: u32, backend: &Backend6) -> Result<(), DataplaneError> {
        self.backends6.insert(index, *backend);
        Ok(())
    }
    fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<(), DataplaneError> {
        check_table(table)?;
        for (i, v) in table.iter().enumerate() {
            self.rings.insert(base + i as u32, *v);
        }
        self.ring_writes += 1;
        Ok(())
    }
}

fn check_table(table: &[u32]) -> Result<(), DataplaneError> {
    if table.len() > MAX_RING_SIZE as usize {
        return Err(DataplaneError::TableTooLarge {
            len: table.len(),
            max: MAX_RING_SIZE,
        });
    }
    Ok(())
}

/// The `RINGS` array mapped into our memory. The kernel stores array values with an 8-byte
/// stride (`round_up(value_size, 8)`), so slot `i`'s `u32` is the low half of the `i`th u64.
struct RingMmap {
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
    ptr: NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value.
unsafe impl Send for RingMmap {}
unsafe impl Sync for RingMmap {}

impl RingMmap {
    fn new(map: MapData) -> Result<Self, DataplaneError> {
        let len = RINGS_SIZE as usize;
        let bytes = (len * size_of::<u64>()).next_multiple_of(4096);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF_F_MMAPABLE array map of exactly this size, shared.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap {
                name: map_names::RINGS,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            _map: map,
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        })
    }

    fn write(&mut self, base: u32, table: &[u32]) {
        let base = base as usize;
        assert!(base + table.len() <= self.len, "ring write out of bounds");
        for (i, v) in table.iter().enumerate() {
            // SAFETY: in bounds (asserted); only this process writes the inactive half, and
            // a u64 store never tears a slot.
            unsafe {
                self.ptr
                    .as_ptr()
                    .add(base + i)
                    .write_volatile(u64::from(*v))
            };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for RingMmap {
    fn drop(&mut self) {
        let bytes = (self.len * size_of::<u64>()).next_multiple_of(4096);
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
    }
}

/// Counters summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Packets per verdict reason, indexed by `Reason as usize`.
    pub reasons: Vec<u64>,
    /// Counters per VIP index.
    pub vips: Vec<Counters>,
    /// Counters per backend index (only indices asked for).
    pub backends: StdHashMap<u32, Counters>,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    config: Array<MapData, Config>,
    vips: HashMap<MapData, VipKey, VipMeta>,
    vip_addrs: HashMap<MapData, u32, u32>,
    vip_slots: Array<MapData, u64>,
    vip_keys: Array<MapData, VipKey>,
    backends: Array<MapData, Backend>,
    /// `BACKEND_SLOTS`, and the bits this process knows are set in it (read from the map
    /// the first time a slot is touched: an adopted map keeps its bits).
    backend_slots: Array<MapData, u32>,
    backend_slot_bits: StdHashMap<u32, u32>,
    vips6: HashMap<MapData, VipKey6, VipMeta6>,
    vip_addrs6: HashMap<MapData, Ip6, u32>,
    vip_slots6: Array<MapData, AddrSlot6>,
    backends6: Array<MapData, Backend6>,
    rings: RingMmap,
    conntrack: HashMap<MapData, FlowKey, CtEntry>,
    reasons: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    /// One entry per interface attached to, in attach order.
    links: Vec<IfLink>,
    /// The bpffs directory holding the pins (the first interface's), when pinning.
    pins: Option<PathBuf>,
    /// The interface the pin directory is keyed by: its link is pinned as `link`, any other
    /// interface's as `link@IFNAME` beside it.
    pin_interface: Option<String>,
    /// The cgroup `connect4` link: pinned, or owned when pinning is off.
    connect4: Option<PinnedLink>,
    connect4_owned: Option<CgroupSockAddrLink>,
    /// The same for `connect6`.
    connect6: Option<PinnedLink>,
    connect6_owned: Option<CgroupSockAddrLink>,
    /// The maps were adopted from a previous xvip rather than created.
    adopted: bool,
}

/// The program's attachment to one interface.
struct IfLink {
    interface: String,
    /// The link while we own it unpinned.
    link: Option<XdpLinkId>,
    /// The pinned link (keeps the program attached when this process is gone).
    pinned: Option<PinnedLink>,
    /// Our reference to an adopted link after the in-place program update.
    owned: Option<XdpLink>,
}

impl IfLink {
    fn new(interface: &str) -> Self {
        Self {
            interface: interface.into(),
            link: None,
            pinned: None,
            owned: None,
        }
    }
}

/// Every map of the object, all pinned under the interface's directory.
const PINNED_MAPS: &[&str] = &[
    map_names::VIPS,
    map_names::VIP_ADDRS,
    map_names::VIP_SLOTS,
    map_names::VIP_KEYS,
    map_names::RINGS,
    map_names::BACKENDS,
    map_names::BACKEND_SLOTS,
    map_names::CONNTRACK,
    map_names::REVERSE,
    map_names::UNCONFIRMED,
    map_names::UNCONFIRMED_REV,
    map_names::VIPS6,
    map_names::VIP_ADDRS6,
    map_names::VIP_SLOTS6,
    map_names::BACKENDS6,
    map_names::CONNTRACK6,
    map_names::REVERSE6,
    map_names::UNCONFIRMED6,
    map_names::UNCONFIRMED_REV6,
    map_names::CONFIG,
    map_names::IFACES,
    map_names::REASONS,
    map_names::VIP_STATS,
    map_names::BACKEND_STATS,
    SOCK_CONFIG,
    SOCK_COUNTS,
];
/// Pin of the cgroup `connect4` link.
const CONNECT4_PIN: &str = "connect4";
/// The `connect4` program and its maps (in `lb-ebpf/src/sock.rs`).
const CONNECT4_PROGRAM: &str = "xvip_connect4";
/// The `connect6` program (same maps) and its link's pin.
const CONNECT6_PROGRAM: &str = "xvip_connect6";
const CONNECT6_PIN: &str = "connect6";
const SOCK_CONFIG: &str = "SOCK_CONFIG";
const SOCK_COUNTS: &str = "SOCK_COUNTS";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> bool {
    crate::sys::fs_magic(path) == Some(BPF_FS_MAGIC)
}

/// Entries of each IPv6 flow map while no IPv6 VIP is configured.
pub const IDLE_V6_FLOWS: u32 = 1024;

/// The IPv6 flow maps and their sizes: as IPv4's with IPv6 VIPs, else [`IDLE_V6_FLOWS`].
fn v6_flow_sizes(conntrack_size: u32, ipv6: bool) -> [(&'static str, u32); 4] {
    let (confirmed, unconfirmed) = if ipv6 {
        (conntrack_size, lb_common::UNCONFIRMED_SIZE)
    } else {
        (IDLE_V6_FLOWS, IDLE_V6_FLOWS)
    };
    [
        (map_names::CONNTRACK6, confirmed),
        (map_names::REVERSE6, confirmed),
        (map_names::UNCONFIRMED6, unconfirmed),
        (map_names::UNCONFIRMED_REV6, unconfirmed),
    ]
}

/// Unpins an IPv6 flow map pinned at another size when one of the two sizes is the idle
/// one (the first IPv6 VIP added, or the last removed): the pinned map holds no flow of a
/// configured IPv6 VIP, and adopting it would fail on its size. Any other size difference
/// is left to the loader, which refuses it like IPv4's.
fn resize_idle_v6_pins(dir: &Path, sizes: &[(&'static str, u32)]) {
    for (name, want) in sizes {
        let path = dir.join(name);
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        let have = info.max_entries();
        if have != *want && (have == IDLE_V6_FLOWS || *want == IDLE_V6_FLOWS) {
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!(
                    "{name}: {have} -> {want} entries (IPv6 VIPs {}); the pinned map is replaced",
                    if *want == IDLE_V6_FLOWS {
                        "removed"
                    } else {
                        "added"
                    }
                ),
                Err(e) => log::warn!("{name}: cannot unpin {}: {e}", path.display()),
            }
        }
    }
}

/// Makes `dir` exist on a bpffs, mounting bpffs on `/sys/fs/bpf` first if it is missing
/// (it is not mounted at boot on some systems).
///
/// # Errors
/// [`DataplaneError::PinDir`].
pub fn prepare_pin_dir(dir: &Path) -> Result<(), DataplaneError> {
    let err = |reason: String| DataplaneError::PinDir {
        dir: dir.display().to_string(),
        reason,
    };
    let mount_point = Path::new("/sys/fs/bpf");
    if dir.starts_with(mount_point) && !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point).map_err(|e| err(e.to_string()))?;
        crate::sys::mount("bpf", "/sys/fs/bpf")
            .map_err(|e| err(format!("cannot mount bpffs on /sys/fs/bpf: {e}")))?;
        log::info!("mounted bpffs on /sys/fs/bpf");
    }
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    if !is_bpffs(dir) {
        return Err(err("not on a bpffs".into()));
    }
    Ok(())
}

/// Removes everything pinned in `dir` (an interface's pin directory): the link (which
/// detaches the program) and the maps (which drops tracked connections). Returns how many
/// pins went.
///
/// # Errors
/// [`DataplaneError::NothingPinned`] when there is nothing to remove.
pub fn remove_pins(dir: &Path, interface: &str) -> Result<usize, DataplaneError> {
    if !dir.is_dir() {
        return Err(DataplaneError::NothingPinned {
            interface: interface.into(),
            dir: dir.display().to_string(),
        });
    }
    crate::dataplane::pins::remove_dir(dir).map_err(|e| DataplaneError::PinDir {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DataplaneError::Map {
        name,
        reason: "not in the object".into(),
    })?;
    T::try_from(map).map_err(|e| DataplaneError::Map {
        name,
        reason: e.to_string(),
    })
}

fn op<T>(name: &'static str, r: Result<T, aya::maps::MapError>) -> Result<T, DataplaneError> {
    r.map_err(|source| DataplaneError::MapOp { name, source })
}

impl Dataplane {
    /// Sets the family's bit in `addr`'s `BACKEND_SLOTS` slot, before the backend itself is
    /// written: a flow on the backend can only start once it is in `BACKENDS`, so every
    /// reply entry's source has its bit. Bits are never cleared while the map lives (a
    /// removed backend's flows keep their reply entries until they expire; a stale bit only
    /// sends the node's other traffic from that slot through the reply lookups).
    fn mark_backend_slot<A: Addr>(&mut self, addr: A) -> Result<(), DataplaneError> {
        let slot = addr.backend_slot();
        let known = match self.backend_slot_bits.get(&slot) {
            Some(v) => *v,
            None => self.backend_slots.get(&slot, 0).unwrap_or(0),
        };
        let want = known | A::BACKEND_SLOT_BIT;
        if want != known {
            op(
                map_names::BACKEND_SLOTS,
                self.backend_slots.set(slot, &want, 0),
            )?;
        }
        self.backend_slot_bits.insert(slot, want);
        Ok(())
    }

    /// Loads the object (program not yet verified nor attached), with `conntrack_size` flows.
    ///
    /// # Errors
    /// [`DataplaneError`] when the object cannot be loaded or lacks a map.
    pub fn load(object: &[u8], conntrack_size: u32) -> Result<Self, DataplaneError> {
        Self::load_pinned(object, conntrack_size, true, None)
    }

    /// Like [`Dataplane::load`], with every map pinned in `pins` (a per-interface bpffs
    /// directory). Maps already pinned there by an earlier xvip are adopted, so tracked
    /// connections survive a restart; ones whose layout differs are refused.
    ///
    /// # Errors
    /// [`DataplaneError::PinnedMismatch`] for an incompatible pinned map, or a load error.
    ///
    /// `ipv6`: whether IPv6 VIPs are configured. Without them the IPv6 flow maps get only
    /// [`IDLE_V6_FLOWS`] entries each (LRU maps are preallocated: at the default
    /// `--conntrack-size` the full IPv6 maps cost ~100 MB that a v4-only node would never
    /// use). A pinned IPv6 flow map of the other size is replaced: it holds no flow of a
    /// configured IPv6 VIP (either there were none, or there are none now).
    pub fn load_pinned(
        object: &[u8],
        conntrack_size: u32,
        ipv6: bool,
        pins: Option<(&Path, &str)>,
    ) -> Result<Self, DataplaneError> {
        let mut dp = Self::load_maps(object, conntrack_size, ipv6, pins)?;
        dp.verify()?;
        Ok(dp)
    }

    /// [`Dataplane::load_pinned`] without the program's load: the maps are created (or
    /// adopted) and writable, the program is not yet verified, so nothing can be attached
    /// until [`Dataplane::verify`] has run. The verifier is most of the start-up's time
    /// (see docs/benchmarks.md, "Start-up"), so the daemon runs it beside the next-hop
    /// resolution.
    ///
    /// # Errors
    /// As [`Dataplane::load_pinned`].
    pub fn load_maps(
        object: &[u8],
        conntrack_size: u32,
        ipv6: bool,
        pins: Option<(&Path, &str)>,
    ) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        // With IPv6 VIPs, IPv6's confirmed flows get the same room as IPv4's.
        let v6_sizes = v6_flow_sizes(conntrack_size, ipv6);
        loader
            .map_max_entries(map_names::CONNTRACK, conntrack_size)
            .map_max_entries(map_names::REVERSE, conntrack_size);
        for (name, size) in v6_sizes {
            loader.map_max_entries(name, size);
        }
        let mut adopted = false;
        let paths: Vec<(&str, PathBuf)> = match pins {
            Some((dir, _)) => {
                prepare_pin_dir(dir)?;
                resize_idle_v6_pins(dir, &v6_sizes);
                PINNED_MAPS.iter().map(|n| (*n, dir.join(n))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &paths {
            adopted |= path.exists();
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object).map_err(|e| match (pins, &e) {
            (Some((dir, interface)), aya::EbpfError::MapError(_)) => {
                DataplaneError::PinnedMismatch {
                    dir: dir.display().to_string(),
                    interface: interface.into(),
                    reason: e.to_string(),
                }
            }
            _ => DataplaneError::Load(e),
        })?;
        if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf) {
            log::debug!("no aya-log channel in the XDP program ({e}): it logs nothing");
        }
        let rings = match ebpf.take_map(map_names::RINGS) {
            Some(Map::Array(data)) => RingMmap::new(data)?,
            _ => {
                return Err(DataplaneError::Map {
                    name: map_names::RINGS,
                    reason: "missing or not an array".into(),
                });
            }
        };
        Ok(Self {
            config: take(&mut ebpf, map_names::CONFIG)?,
            vips: take(&mut ebpf, map_names::VIPS)?,
            vip_addrs: take(&mut ebpf, map_names::VIP_ADDRS)?,
            vip_slots: take(&mut ebpf, map_names::VIP_SLOTS)?,
            vip_keys: take(&mut ebpf, map_names::VIP_KEYS)?,
            backends: take(&mut ebpf, map_names::BACKENDS)?,
            backend_slots: take(&mut ebpf, map_names::BACKEND_SLOTS)?,
            backend_slot_bits: StdHashMap::new(),
            vips6: take(&mut ebpf, map_names::VIPS6)?,
            vip_addrs6: take(&mut ebpf, map_names::VIP_ADDRS6)?,
            vip_slots6: take(&mut ebpf, map_names::VIP_SLOTS6)?,
            backends6: take(&mut ebpf, map_names::BACKENDS6)?,
            conntrack: take(&mut ebpf, map_names::CONNTRACK)?,
            reasons: take(&mut ebpf, map_names::REASONS)?,
            vip_stats: take(&mut ebpf, map_names::VIP_STATS)?,
            backend_stats: take(&mut ebpf, map_names::BACKEND_STATS)?,
            rings,
            ebpf,
            links: Vec::new(),
            pins: pins.map(|(d, _)| d.to_path_buf()),
            pin_interface: pins.map(|(_, i)| i.to_string()),
            connect4: None,
            connect4_owned: None,
            connect6: None,
            connect6_owned: None,
            adopted,
        })
    }

    /// Loads the XDP program into the kernel (the verifier's walk): the step between
    /// [`Dataplane::load_maps`] and attaching. Returns the instructions the verifier
    /// processed, when the kernel reports them.
    ///
    /// # Errors
    /// The program is not in the object or the kernel refused it.
    pub fn verify(&mut self) -> Result<Option<u32>, DataplaneError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::Map {
                name: "program",
                reason: format!("{PROGRAM_NAME} not in the object"),
            })?
            .try_into()?;
        program.load()?;
        Ok(program
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count()))
    }

    /// Writes every attached interface's index and MAC (`IFACES`), read by the program when
    /// `CONFIG_FLAG_IFACES` is set.
    ///
    /// # Errors
    /// The map is missing or the write failed.
    pub fn set_ifaces(&mut self, ifaces: &lb_common::Ifaces) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(map_names::IFACES)
            .ok_or(DataplaneError::Map {
                name: map_names::IFACES,
                reason: "not in the object".into(),
            })?;
        let mut m: Array<&mut MapData, lb_common::Ifaces> =
            Array::try_from(map).map_err(|e| DataplaneError::Map {
                name: map_names::IFACES,
                reason: e.to_string(),
            })?;
        op(map_names::IFACES, m.set(0, ifaces, 0))
    }

    /// Whether the maps (and so the tracked connections) came from an earlier xvip.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Backends present in the (adopted) `BACKENDS` map: index, address and MAC.
    pub fn present_backends(&self) -> Vec<(u32, std::net::SocketAddr, [u8; 6])> {
        let v4 = self
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.ok().map(|b| (i as u32, b)))
            .filter(|(_, b)| b.flags & lb_common::BACKEND_FLAG_PRESENT != 0)
            .map(|(i, b)| {
                let addr = std::net::Ipv4Addr::from(b.addr.to_ne_bytes());
                (i, (addr, u16::from_be(b.port)).into(), b.mac)
            });
        let v6 = self
            .backends6
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.ok().map(|b| (i as u32, b)))
            .filter(|(_, b)| b.flags & lb_common::BACKEND_FLAG_PRESENT != 0)
            .map(|(i, b)| {
                let addr = std::net::Ipv6Addr::from(lb_common::ip6_octets(b.addr));
                (i, (addr, u16::from_be(b.port)).into(), b.mac)
            });
        v4.chain(v6).collect()
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("program checked at load")
    }

    /// The kernel's id of the loaded XDP program (what `ip link` shows on an interface it
    /// is attached to); `None` if the kernel cannot say.
    pub fn program_id(&self) -> Option<u32> {
        self.program().info().ok().map(|i| i.id())
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("program checked at load")
    }

    /// Attaches to `interface`. `Auto` tries native mode, then generic with a warning.
    /// Returns the mode used.
    ///
    /// # Errors
    /// [`DataplaneError::Attach`] when no allowed mode works.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpAttachMode,
    ) -> Result<&'static str, DataplaneError> {
        let ifname = std::ffi::CString::new(interface).map_err(|_| DataplaneError::Attach {
            interface: interface.into(),
            mode: "any",
            reason: "interface name contains NUL".into(),
        })?;
        if self.links.iter().any(|l| l.interface == interface) {
            return Err(DataplaneError::Attach {
                interface: interface.into(),
                mode: "any",
                reason: "already attached by this xvip".into(),
            });
        }
        if let Some(path) = self.link_pin(interface)
            && path.exists()
        {
            return self.replace_pinned(&path, interface);
        }
        let tries: &[(XdpMode, &'static str)] = match mode {
            XdpAttachMode::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
            XdpAttachMode::Native => &[(XdpMode::Driver, "native")],
            XdpAttachMode::Generic => &[(XdpMode::Skb, "generic")],
        };
        let mut last = String::new();
        for (i, (m, name)) in tries.iter().enumerate() {
            match self.program_mut().attach(ifname.as_c_str(), *m) {
                Ok(link) => {
                    if i > 0 {
                        log::warn!(
                            "{interface}: native XDP failed ({last}); attached in generic mode, which is slower"
                        );
                    }
                    let mut l = IfLink::new(interface);
                    l.link = Some(link);
                    self.links.push(l);
                    if let Err(reason) = self.pin_link(interface) {
                        // The link is gone with the failed pin: nothing stays attached.
                        self.links.retain(|l| l.interface != interface);
                        return Err(DataplaneError::Attach {
                            interface: interface.into(),
                            mode: name,
                            reason,
                        });
                    }
                    return Ok(name);
                }
                Err(e) => last = error_chain(&e),
            }
        }
        Err(DataplaneError::Attach {
            interface: interface.into(),
            mode: tries[tries.len() - 1].1,
            reason: last,
        })
    }

    /// Where `interface`'s link is pinned: `link` for the interface the pins are keyed by,
    /// `link@IFNAME` beside it for the others.
    fn link_pin(&self, interface: &str) -> Option<PathBuf> {
        let dir = self.pins.as_ref()?;
        Some(match self.pin_interface.as_deref() {
            Some(first) if first != interface => dir.join(pins::extra_link_pin(interface)),
            _ => dir.join(LINK_PIN),
        })
    }

    fn if_link(&mut self, interface: &str) -> Option<&mut IfLink> {
        self.links.iter_mut().find(|l| l.interface == interface)
    }

    /// The interfaces attached to, in order.
    pub fn attached_interfaces(&self) -> Vec<String> {
        self.links.iter().map(|l| l.interface.clone()).collect()
    }

    /// Pins the fresh link so the program stays attached if this process dies. A link that
    /// cannot be pinned is closed by the failed attempt (aya consumes it), which detaches
    /// the program: that is an attach failure, not a warning.
    fn pin_link(&mut self, interface: &str) -> Result<(), String> {
        let Some(path) = self.link_pin(interface) else {
            return Ok(());
        };
        let Some(id) = self.if_link(interface).and_then(|l| l.link.take()) else {
            return Ok(());
        };
        let link = self
            .program_mut()
            .take_link(id)
            .map_err(|e| format!("cannot take the XDP link to pin it: {e}"))?;
        let fd = FdLink::try_from(link).map_err(|e| {
            format!("XDP attached through netlink ({e}), which cannot be pinned and adopted")
        })?;
        let pinned = fd
            .pin(&path)
            .map_err(|e| format!("cannot pin the XDP link at {}: {e}", path.display()))?;
        if let Some(l) = self.if_link(interface) {
            l.pinned = Some(pinned);
        }
        Ok(())
    }

    /// Swaps this program into the pinned link of an earlier xvip: one atomic update, no
    /// moment without a program.
    fn replace_pinned(
        &mut self,
        path: &Path,
        interface: &str,
    ) -> Result<&'static str, DataplaneError> {
        let fail = |reason: String| DataplaneError::Attach {
            interface: interface.into(),
            mode: "pinned",
            reason,
        };
        let pinned =
            PinnedLink::from_pin(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let fd: FdLink = pinned.into();
        let xdp = XdpLink::try_from(fd).map_err(|e| fail(e.to_string()))?;
        let id = self.program_mut().attach_to_link(xdp)?;
        // The program now owns the link and the pin stays valid: keep our own references to
        // both, for unpinning and closing at shutdown.
        let mut l = IfLink::new(interface);
        l.owned = self.program_mut().take_link(id).ok();
        l.pinned = Some(PinnedLink::from_pin(path).map_err(|e| fail(e.to_string()))?);
        self.links.push(l);
        log::info!("{interface}: replaced the pinned program in place");
        Ok("pinned")
    }

    /// Detaches the program from every interface and removes the pins (`interface`, the
    /// one they are keyed by, names them in errors).
    ///
    /// # Errors
    /// A failed detach.
    pub fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let mut first_err = None;
        for mut l in std::mem::take(&mut self.links) {
            if let Some(link) = l.link.take()
                && let Err(e) = self.program_mut().detach(link)
            {
                first_err.get_or_insert(e);
            }
            if let Some(p) = l.pinned.take() {
                drop(p.unpin());
            }
            // With the pin gone, closing the last reference detaches the program.
            drop(l.owned.take());
        }
        for p in [self.connect4.take(), self.connect6.take()]
            .into_iter()
            .flatten()
        {
            drop(p.unpin());
        }
        drop(self.connect4_owned.take());
        drop(self.connect6_owned.take());
        if let Some(dir) = self.pins.as_ref() {
            let _ = remove_pins(dir, interface);
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Leaves the program attached after this process exits (`--keep-attached`): the link
    /// and the maps stay pinned, and the next `xvip run` adopts them.
    pub fn keep_attached(&mut self) {
        for mut l in std::mem::take(&mut self.links) {
            if l.pinned.is_none()
                && let Some(link) = l.link.take()
                && let Ok(owned) = self.program_mut().take_link(link)
            {
                log::warn!(
                    "{}: the XDP link is not pinned: it stays attached only while this process lives",
                    l.interface
                );
                std::mem::forget(owned);
            }
        }
        self.connect4 = None;
        self.connect6 = None;
        for l in [self.connect4_owned.take(), self.connect6_owned.take()]
            .into_iter()
            .flatten()
        {
            std::mem::forget(l);
        }
    }

    /// Balances `connect()`s to the VIPs from processes in this network namespace
    /// (`netns_cookie`): cgroup `connect4` and `connect6` programs on the cgroup v2 root
    /// `cgroup`, which they share with every other program there. Adopts (and updates in
    /// place) the pinned links of an earlier xvip.
    ///
    /// # Errors
    /// Loading or attaching the program failed.
    pub fn attach_connect4(
        &mut self,
        cgroup: &std::fs::File,
        netns_cookie: u64,
    ) -> Result<(), DataplaneError> {
        let cfg = self.ebpf.map_mut(SOCK_CONFIG).ok_or(DataplaneError::Map {
            name: "SOCK_CONFIG",
            reason: "not in the object".into(),
        })?;
        let mut cfg: Array<&mut MapData, u64> =
            Array::try_from(cfg).map_err(|e| DataplaneError::Map {
                name: "SOCK_CONFIG",
                reason: e.to_string(),
            })?;
        op("SOCK_CONFIG", cfg.set(0, &netns_cookie, 0))?;
        (self.connect4, self.connect4_owned) =
            self.attach_sock_addr(cgroup, CONNECT4_PROGRAM, CONNECT4_PIN, "connect4")?;
        // IPv6 VIPs' connects: the same table, maps and namespace filter.
        (self.connect6, self.connect6_owned) =
            self.attach_sock_addr(cgroup, CONNECT6_PROGRAM, CONNECT6_PIN, "connect6")?;
        Ok(())
    }

    /// Loads and attaches one cgroup sock-addr program (`connect4`, `connect6`) to the cgroup
    /// v2 root, adopting (and updating in place) the pinned link `pin_name` of an earlier
    /// xvip; returns its link, pinned when pinning, else owned.
    fn attach_sock_addr(
        &mut self,
        cgroup: &std::fs::File,
        name: &str,
        pin_name: &str,
        mode: &'static str,
    ) -> Result<(Option<PinnedLink>, Option<CgroupSockAddrLink>), DataplaneError> {
        let pin = self.pins.as_ref().map(|d| d.join(pin_name));
        let program: &mut CgroupSockAddr = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Map {
                name: "program",
                reason: format!("{name} not in the object"),
            })?
            .try_into()?;
        program.load()?;
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let fail = |reason: String| DataplaneError::Attach {
                interface: "cgroup".into(),
                mode: "pinned",
                reason,
            };
            let fd: FdLink = PinnedLink::from_pin(path)
                .map_err(|e| fail(e.to_string()))?
                .into();
            let link = CgroupSockAddrLink::try_from(fd).map_err(|e| fail(e.to_string()))?;
            let id = program.attach_to_link(link)?;
            let owned = program.take_link(id).ok();
            let pinned = PinnedLink::from_pin(path).map_err(|e| fail(e.to_string()))?;
            return Ok((Some(pinned), owned));
        }
        // Links on a cgroup always coexist with other links; the kernel refuses mode flags here.
        let id = program
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(|e| DataplaneError::Attach {
                interface: "the cgroup v2 root".into(),
                mode,
                reason: error_chain(&e),
            })?;
        let link = program.take_link(id)?;
        Ok(match (pin, FdLink::try_from(link)) {
            (Some(path), Ok(fd)) => match fd.pin(&path) {
                Ok(p) => (Some(p), None),
                Err(e) => {
                    log::warn!("cannot pin the {mode} link at {}: {e}", path.display());
                    (None, None)
                }
            },
            (_, Ok(fd)) => (None, CgroupSockAddrLink::try_from(fd).ok()),
            (_, Err(e)) => {
                log::warn!("{mode} attached without a link ({e}): it cannot be pinned");
                (None, None)
            }
        })
    }

    /// Connects balanced by the `connect4` hook, and connects to a VIP left alone because
    /// no backend was available.
    pub fn connect4_counts(&self) -> (u64, u64) {
        let Some(m) = self.ebpf.map(SOCK_COUNTS) else {
            return (0, 0);
        };
        let Ok(a) = PerCpuArray::<&MapData, u64>::try_from(m) else {
            return (0, 0);
        };
        let sum = |i: u32| a.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        (sum(0), sum(1))
    }

    /// Counters summed over CPUs, for the backend indices given.
    ///
    /// # Errors
    /// A failed map read.
    pub fn snapshot(&self, backend_indices: &[u32]) -> Result<Snapshot, DataplaneError> {
        let mut s = Snapshot::default();
        for r in lb_common::Reason::ALL {
            let v = op(map_names::REASONS, self.reasons.get(&(*r as u32), 0))?;
            s.reasons.push(v.iter().sum());
        }
        for i in 0..lb_common::MAX_VIPS {
            let v = op(map_names::VIP_STATS, self.vip_stats.get(&i, 0))?;
            s.vips.push(sum_counters(v.iter()));
        }
        for &i in backend_indices {
            let v = op(map_names::BACKEND_STATS, self.backend_stats.get(&i, 0))?;
            s.backends.insert(i, sum_counters(v.iter()));
        }
        Ok(s)
    }

    /// Number of tracked flows. Walks the whole map (one syscall per entry): call it from
    /// [`count_conntrack`]'s background task, never while holding the daemon's state.
    pub fn conntrack_entries(&self) -> usize {
        self.conntrack.keys().filter(|k| k.is_ok()).count()
    }

    /// A second handle on the pinned `CONNTRACK` map, for counting it off the main loop.
    pub fn conntrack_handle(&self) -> Option<HashMap<MapData, FlowKey, CtEntry>> {
        self.flow_map_handle(map_names::CONNTRACK)
    }

    /// The same for `UNCONFIRMED` (flows not confirmed yet: a flood shows there).
    pub fn unconfirmed_handle(&self) -> Option<HashMap<MapData, FlowKey, CtEntry>> {
        self.flow_map_handle(map_names::UNCONFIRMED)
    }

    /// The maps conntrack sync uses, as handles of its own (its threads must not hold the
    /// daemon's state): the ring buffer and its counters (taken: once only), and second
    /// handles on the pinned flow, VIP and backend maps. `None` without pins or when taken.
    pub fn sync_maps(&mut self) -> Option<crate::sync::SyncMaps> {
        let pinned = |name: &str| MapData::from_pin(self.pins.as_ref()?.join(name)).ok();
        let vips = HashMap::try_from(Map::HashMap(pinned(map_names::VIPS)?)).ok()?;
        let backends = Array::try_from(Map::Array(pinned(map_names::BACKENDS)?)).ok()?;
        let reverse = HashMap::try_from(Map::LruHashMap(pinned(map_names::REVERSE)?)).ok()?;
        let conntrack = self.flow_map_handle(map_names::CONNTRACK)?;
        let conntrack_dump = self.flow_map_handle(map_names::CONNTRACK)?;
        let lru = |name: &str| Some(Map::LruHashMap(pinned(name)?));
        let v6 = crate::sync::FamilyMaps {
            conntrack: HashMap::try_from(lru(map_names::CONNTRACK6)?).ok()?,
            reverse: HashMap::try_from(lru(map_names::REVERSE6)?).ok()?,
            vips: HashMap::try_from(Map::HashMap(pinned(map_names::VIPS6)?)).ok()?,
            backends: Array::try_from(Map::Array(pinned(map_names::BACKENDS6)?)).ok()?,
        };
        let conntrack6_dump = HashMap::try_from(lru(map_names::CONNTRACK6)?).ok()?;
        let events =
            aya::maps::RingBuf::try_from(self.ebpf.take_map(map_names::SYNC_EVENTS)?).ok()?;
        let counts = PerCpuArray::try_from(self.ebpf.take_map(map_names::SYNC_COUNTS)?).ok()?;
        Some(crate::sync::SyncMaps {
            events,
            counts,
            conntrack_dump,
            conntrack6_dump,
            v4: crate::sync::FamilyMaps {
                conntrack,
                reverse,
                vips,
                backends,
            },
            v6,
        })
    }

    fn flow_map_handle(&self, name: &str) -> Option<HashMap<MapData, FlowKey, CtEntry>> {
        let path = self.pins.as_ref()?.join(name);
        let data = MapData::from_pin(&path).ok()?;
        HashMap::try_from(Map::LruHashMap(data)).ok()
    }
}

/// Counts `map`'s entries every `every`, storing the result in `out`, until `out` is the
/// only reference left. Runs on a blocking thread: a walk of a million entries takes a
/// second or so and must not delay health transitions.
pub fn count_conntrack(
    map: HashMap<MapData, FlowKey, CtEntry>,
    out: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    every: std::time::Duration,
) {
    std::thread::spawn(move || {
        while std::sync::Arc::strong_count(&out) > 1 {
            let n = map.keys().filter(|k| k.is_ok()).count();
            out.store(n, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(every);
        }
    });
}

/// Like [`count_conntrack`], counting only entries seen within `lifetime` (an LRU map keeps
/// expired entries until it needs the room): for the small `UNCONFIRMED` map, whose live
/// count is what tells a flood.
pub fn count_live(
    map: HashMap<MapData, FlowKey, CtEntry>,
    lifetime: std::time::Duration,
    out: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    every: std::time::Duration,
) {
    std::thread::spawn(move || {
        while std::sync::Arc::strong_count(&out) > 1 {
            let now = monotonic_ns();
            let n = map
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, e)| now.saturating_sub(e.last_seen_ns) <= lifetime.as_nanos() as u64)
                .count();
            out.store(n, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(every);
        }
    });
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the data path's `bpf_ktime_get_coarse_ns`
/// (which trails it by up to a tick).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An error and its sources on one line (aya's syscall errors keep the errno in a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn sum_counters<'a>(it: impl Iterator<Item = &'a Counters>) -> Counters {
    it.fold(Counters::default(), |a, c| Counters {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
        new_flows: a.new_flows + c.new_flows,
    })
}

impl MapStore for Dataplane {
    fn set_vip_slot(&mut self, slot: u32, value: u64) -> Result<(), DataplaneError> {
        op(map_names::VIP_SLOTS, self.vip_slots.set(slot, &value, 0))
    }
    fn set_config(&mut self, cfg: &Config) -> Result<(), DataplaneError> {
        op(map_names::CONFIG, self.config.set(0, cfg, 0))
    }
    fn set_vip_addr(&mut self, addr: u32, flags: u32) -> Result<(), DataplaneError> {
        if flags == 0 {
            match self.vip_addrs.remove(&addr) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => op(map_names::VIP_ADDRS, Err(e)),
            }
        } else {
            op(
                map_names::VIP_ADDRS,
                self.vip_addrs.insert(&addr, &flags, 0),
            )
        }
    }
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError> {
        op(map_names::VIPS, self.vips.insert(key, meta, 0))
    }
    fn set_vip_index_key(&mut self, index: u32, key: &VipKey) -> Result<(), DataplaneError> {
        op(map_names::VIP_KEYS, self.vip_keys.set(index, key, 0))
    }
    fn set_vip_slot6(&mut self, slot: u32, value: &AddrSlot6) -> Result<(), DataplaneError> {
        op(map_names::VIP_SLOTS6, self.vip_slots6.set(slot, value, 0))
    }
    fn vip(&self, key: &VipKey) -> Option<VipMeta> {
        self.vips.get(key, 0).ok()
    }
    fn vip_keys(&self) -> Vec<VipKey> {
        self.vips.keys().filter_map(Result::ok).collect()
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        match self.vips.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => op(map_names::VIPS, Err(e)),
        }
    }
    fn vip_addr_keys(&self) -> Vec<u32> {
        self.vip_addrs.keys().filter_map(Result::ok).collect()
    }
    fn set_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        if backend.flags & BACKEND_FLAG_PRESENT != 0 {
            self.mark_backend_slot(backend.addr)?;
        }
        op(map_names::BACKENDS, self.backends.set(index, backend, 0))
    }
    fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<(), DataplaneError> {
        check_table(table)?;
        self.rings.write(base, table);
        Ok(())
    }
    fn set_vip_addr6(&mut self, addr: Ip6, flags: u32) -> Result<(), DataplaneError> {
        if flags == 0 {
            match self.vip_addrs6.remove(&addr) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => op(map_names::VIP_ADDRS6, Err(e)),
            }
        } else {
            op(
                map_names::VIP_ADDRS6,
                self.vip_addrs6.insert(&addr, &flags, 0),
            )
        }
    }
    fn set_vip6(&mut self, key: &VipKey6, meta: &VipMeta6) -> Result<(), DataplaneError> {
        op(map_names::VIPS6, self.vips6.insert(key, meta, 0))
    }
    fn vip6(&self, key: &VipKey6) -> Option<VipMeta6> {
        self.vips6.get(key, 0).ok()
    }
    fn vip6_keys(&self) -> Vec<VipKey6> {
        self.vips6.keys().filter_map(Result::ok).collect()
    }
    fn remove_vip6(&mut self, key: &VipKey6) -> Result<(), DataplaneError> {
        match self.vips6.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => op(map_names::VIPS6, Err(e)),
        }
    }
    fn vip_addr6_keys(&self) -> Vec<Ip6> {
        self.vip_addrs6.keys().filter_map(Result::ok).collect()
    }
    fn set_backend6(&mut self, index: u32, backend: &Backend6) -> Result<(), DataplaneError> {
        if backend.flags & BACKEND_FLAG_PRESENT != 0 {
            self.mark_backend_slot(backend.addr)?;
        }
        op(map_names::BACKENDS6, self.backends6.set(index, backend, 0))
    }
}
