//! The kernel side as the daemon sees it: loading and attaching the XDP program, and the
//! maps behind the [`MapStore`] interface (so the reconciliation logic runs in tests against
//! [`FakeMaps`] without a kernel).

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{
    Backend, Config, Counters, CtEntry, FlowKey, MAX_RING_SIZE, PROGRAM_NAME, RINGS_SIZE, RevEntry,
    VipKey, VipMeta, map_names,
};

use crate::config::XdpAttachMode;

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
    /// A table that does not fit its slot.
    #[error("table of {len} slots does not fit (at most {max})")]
    TableTooLarge { len: usize, max: u32 },
}

/// Map writes the reconciliation needs. Implemented by [`Dataplane`] and [`FakeMaps`].
pub trait MapStore {
    /// Replaces the single `CONFIG` entry.
    fn set_config(&mut self, cfg: &Config) -> Result<(), DataplaneError>;
    /// Marks an address as VIP and/or SNAT address (`flags` = 0 removes it).
    fn set_vip_addr(&mut self, addr: u32, flags: u32) -> Result<(), DataplaneError>;
    /// Adds or replaces a VIP. Replacing is atomic for packets (a new hash element).
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError>;
    /// The VIP's current value, if any.
    fn vip(&self, key: &VipKey) -> Option<VipMeta>;
    /// Writes a backend slot.
    fn set_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError>;
    /// Writes `table` into `RINGS` starting at `base`.
    fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<(), DataplaneError>;
}

/// In-memory maps for tests of the control plane.
#[derive(Debug, Default)]
pub struct FakeMaps {
    pub config: Config,
    pub vip_addrs: StdHashMap<u32, u32>,
    pub vips: StdHashMap<VipKey, VipMeta>,
    pub backends: StdHashMap<u32, Backend>,
    pub rings: StdHashMap<u32, u32>,
    /// Number of `write_ring` calls (table swaps).
    pub ring_writes: usize,
}

impl FakeMaps {
    /// The live table of a VIP, read as the data path would.
    pub fn live_table(&self, key: &VipKey) -> Option<Vec<u32>> {
        let meta = self.vips.get(key)?;
        let base = meta.ring_base();
        Some(
            (0..meta.ring_size)
                .map(|i| self.rings.get(&(base + i)).copied().unwrap_or(0))
                .collect(),
        )
    }
}

impl MapStore for FakeMaps {
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
    fn vip(&self, key: &VipKey) -> Option<VipMeta> {
        self.vips.get(key).copied()
    }
    fn set_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        self.backends.insert(index, *backend);
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
    backends: Array<MapData, Backend>,
    rings: RingMmap,
    conntrack: HashMap<MapData, FlowKey, CtEntry>,
    reverse: HashMap<MapData, FlowKey, RevEntry>,
    reasons: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    link: Option<XdpLinkId>,
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
    /// Loads the object (program not yet verified nor attached), with `conntrack_size` flows.
    ///
    /// # Errors
    /// [`DataplaneError`] when the object cannot be loaded or lacks a map.
    pub fn load(object: &[u8], conntrack_size: u32) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_names::CONNTRACK, conntrack_size)
            .map_max_entries(map_names::REVERSE, conntrack_size)
            .load(object)?;
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
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::Map {
                name: "program",
                reason: format!("{PROGRAM_NAME} not in the object"),
            })?
            .try_into()?;
        program.load()?;
        Ok(Self {
            config: take(&mut ebpf, map_names::CONFIG)?,
            vips: take(&mut ebpf, map_names::VIPS)?,
            vip_addrs: take(&mut ebpf, map_names::VIP_ADDRS)?,
            backends: take(&mut ebpf, map_names::BACKENDS)?,
            conntrack: take(&mut ebpf, map_names::CONNTRACK)?,
            reverse: take(&mut ebpf, map_names::REVERSE)?,
            reasons: take(&mut ebpf, map_names::REASONS)?,
            vip_stats: take(&mut ebpf, map_names::VIP_STATS)?,
            backend_stats: take(&mut ebpf, map_names::BACKEND_STATS)?,
            rings,
            ebpf,
            link: None,
        })
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("program checked at load")
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
                    self.link = Some(link);
                    return Ok(name);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(DataplaneError::Attach {
            interface: interface.into(),
            mode: tries[tries.len() - 1].1,
            reason: last,
        })
    }

    /// Detaches the program if attached.
    pub fn detach(&mut self) -> Result<(), DataplaneError> {
        if let Some(link) = self.link.take() {
            self.program_mut().detach(link)?;
        }
        Ok(())
    }

    /// Leaves the program attached after this process exits: takes the link out of aya's
    /// ownership (used with `--keep-attached`).
    pub fn leak_link(&mut self) {
        if let Some(link) = self.link.take()
            && let Ok(owned) = self.program_mut().take_link(link) {
                std::mem::forget(owned);
            }
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

    /// Number of tracked flows (walks the map: for status and metrics, not the hot path).
    pub fn conntrack_entries(&self) -> usize {
        self.conntrack.keys().filter(|k| k.is_ok()).count()
    }

    /// Number of reverse entries.
    pub fn reverse_entries(&self) -> usize {
        self.reverse.keys().filter(|k| k.is_ok()).count()
    }
}

fn sum_counters<'a>(it: impl Iterator<Item = &'a Counters>) -> Counters {
    it.fold(Counters::default(), |a, c| Counters {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
        new_flows: a.new_flows + c.new_flows,
    })
}

impl MapStore for Dataplane {
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
    fn vip(&self, key: &VipKey) -> Option<VipMeta> {
        self.vips.get(key, 0).ok()
    }
    fn set_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        op(map_names::BACKENDS, self.backends.set(index, backend, 0))
    }
    fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<(), DataplaneError> {
        check_table(table)?;
        self.rings.write(base, table);
        Ok(())
    }
}
