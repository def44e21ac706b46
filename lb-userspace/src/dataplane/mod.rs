//! The kernel side as the daemon sees it: loading and attaching the XDP program, and the
//! maps behind the [`MapStore`] interface (so the reconciliation logic runs in tests against
//! [`FakeMaps`] without a kernel).

// The node itself (VIP on `lo`, the connect4 hook) and the pins of the maps and links.
mod adopt;
mod attach;
pub mod family;
pub mod flows;
pub mod local;
pub mod pins;
mod ring;
mod running;
pub mod store;

use std::collections::HashMap as StdHashMap;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
        cgroup_sock_addr::CgroupSockAddrLink,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, SchedClassifierLinkId},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lb_common::{
    Addr, BACKEND_FLAG_PRESENT, Config, Counters, CtEntry, FlowKey, Ip6, MAX_RING_SIZE,
    PROGRAM_NAME, VipKey, VipKey6, map_names,
};

use crate::{
    config::XdpAttachMode,
    dataplane::pins::{LINK_PIN, Placement, TC_LINK_PIN},
};

/// The tc entry of the same object (`lb-ebpf`'s `xvip_tc`): same maps, same path.
const TC_PROGRAM_NAME: &str = "xvip_tc";

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
    /// `VIPS`, `VIP_KEYS`, `VIP_ADDRS`, `VIP_SLOTS`, `BACKENDS`, and their IPv6 twins.
    v4: family::FamilyMaps<u32>,
    v6: family::FamilyMaps<Ip6>,
    /// `BACKEND_SLOTS`, and the bits this process knows are set in it (read from the map
    /// the first time a slot is touched: an adopted map keeps its bits).
    backend_slots: Array<MapData, u32>,
    backend_slot_bits: StdHashMap<u32, u32>,
    rings: ring::RingMmap,
    conntrack: HashMap<MapData, FlowKey, CtEntry>,
    reasons: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    passive: PerCpuArray<MapData, lb_common::Passive>,
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
    /// Where the program runs (the first `attach` decides, for every interface).
    placement: Placement,
    /// The object's hash, as named in the program marker (`running.rs`).
    object_hash: String,
    /// The earlier xvip's program, adopted instead of loading this object's.
    running: Option<running::Running>,
}

/// How the program came to be ready to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramStart {
    /// Loaded through the verifier (instructions processed, when the kernel reports them).
    Verified(Option<u32>),
    /// The earlier xvip's program (this kernel id), still attached, adopted.
    Adopted(u32),
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
    /// The same three for a tc attachment (`--attach tc`).
    tc_link: Option<SchedClassifierLinkId>,
    tc_owned: Option<SchedClassifierLink>,
}

impl IfLink {
    fn new(interface: &str) -> Self {
        Self {
            interface: interface.into(),
            link: None,
            pinned: None,
            owned: None,
            tc_link: None,
            tc_owned: None,
        }
    }
}

/// Every map of the object, all pinned under the interface's directory.
const PINNED_MAPS: &[&str] = &[
    map_names::VIPS,
    map_names::VIP_ADDRS,
    map_names::VIP_SLOTS,
    map_names::VIP_KEYS,
    map_names::VIP_KEYS6,
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
    map_names::PASSIVE,
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
/// Entries of each IPv6 flow map while no IPv6 VIP is configured.
pub const IDLE_V6_FLOWS: u32 = 1024;

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
    if dir.starts_with(mount_point) && !crate::net::sys::is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point).map_err(|e| err(e.to_string()))?;
        crate::net::sys::mount("bpf", "/sys/fs/bpf")
            .map_err(|e| err(format!("cannot mount bpffs on /sys/fs/bpf: {e}")))?;
        log::info!("mounted bpffs on /sys/fs/bpf");
    }
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    if !crate::net::sys::is_bpffs(dir) {
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

pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
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
        Self::load_for(object, conntrack_size, ipv6, pins, Placement::Xdp)
    }

    /// [`Dataplane::load_pinned`] for a program that goes to `placement`: the maps, then
    /// only that entry verified (the other, if ever needed, at its attach).
    ///
    /// # Errors
    /// As [`Dataplane::load_pinned`].
    pub fn load_for(
        object: &[u8],
        conntrack_size: u32,
        ipv6: bool,
        pins: Option<(&Path, &str)>,
        placement: Placement,
    ) -> Result<Self, DataplaneError> {
        let mut dp = Self::load_maps(object, conntrack_size, ipv6, pins, placement)?;
        dp.verify()?;
        Ok(dp)
    }

    /// [`Dataplane::load_for`] without the program's load: the maps are created (or
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
        placement: Placement,
    ) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        // With IPv6 VIPs, IPv6's confirmed flows get the same room as IPv4's.
        let v6_sizes = adopt::v6_flow_sizes(conntrack_size, ipv6);
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
                adopt::resize_idle_v6_pins(dir, &v6_sizes);
                adopt::replace_changed_counter_pins(dir);
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
            Some(Map::Array(data)) => ring::RingMmap::new(data)?,
            _ => {
                return Err(DataplaneError::Map {
                    name: map_names::RINGS,
                    reason: "missing or not an array".into(),
                });
            }
        };
        Ok(Self {
            config: take(&mut ebpf, map_names::CONFIG)?,
            v4: family::FamilyMaps::take(&mut ebpf)?,
            v6: family::FamilyMaps::take(&mut ebpf)?,
            backend_slots: take(&mut ebpf, map_names::BACKEND_SLOTS)?,
            backend_slot_bits: StdHashMap::new(),
            conntrack: take(&mut ebpf, map_names::CONNTRACK)?,
            reasons: take(&mut ebpf, map_names::REASONS)?,
            vip_stats: take(&mut ebpf, map_names::VIP_STATS)?,
            backend_stats: take(&mut ebpf, map_names::BACKEND_STATS)?,
            passive: take(&mut ebpf, map_names::PASSIVE)?,
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
            placement,
            object_hash: running::object_hash(object),
            running: None,
        })
    }

    /// Loads the program of the placement into the kernel (the verifier's walk): the XDP
    /// entry, or the tc entry for `--attach tc`; the step between [`Dataplane::load_maps`]
    /// and attaching. Returns the instructions the verifier processed, when the kernel
    /// reports them.
    ///
    /// # Errors
    /// The program is not in the object or the kernel refused it.
    pub fn verify(&mut self) -> Result<Option<u32>, DataplaneError> {
        if self.placement == Placement::Tc {
            let p = self.tc_program_mut()?;
            return Ok(p.info().ok().and_then(|i| i.verified_instruction_count()));
        }
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

    /// [`Dataplane::verify`], unless the program an earlier xvip left in the pinned links of
    /// `interfaces` (all of them, XDP only) is this very object with these very maps: then
    /// that program is adopted and nothing is loaded (`running.rs` says how that is proven).
    /// Any doubt takes the verifier's path, logged in one line.
    ///
    /// # Errors
    /// As [`Dataplane::verify`].
    pub fn verify_or_adopt(
        &mut self,
        interfaces: &[String],
    ) -> Result<ProgramStart, DataplaneError> {
        if self.placement == Placement::Xdp
            && let Some(dir) = self.pins.clone()
        {
            let links: Vec<(String, PathBuf)> = interfaces
                .iter()
                .filter_map(|i| Some((i.clone(), self.link_pin(i)?)))
                .collect();
            let fresh = |name: &str| {
                self.ebpf.map(name).and_then(|m| match m {
                    Map::RingBuf(d) | Map::PerCpuArray(d) | Map::LruHashMap(d) | Map::Array(d) => {
                        d.info().ok()
                    }
                    _ => None,
                })
            };
            match running::adopt(&dir, &self.object_hash, &links, PINNED_MAPS, fresh) {
                Ok(r) => {
                    let id = r.prog_id;
                    log::info!(
                        "adopted the running program {id} (this object, its maps the pinned ones): no verifier"
                    );
                    self.running = Some(r);
                    return Ok(ProgramStart::Adopted(id));
                }
                Err(why) => log::info!("not adopting the running program: {why}; loading afresh"),
            }
            // No marker while another program may be swapped in.
            running::clear_markers(&dir);
        }
        self.verify().map(ProgramStart::Verified)
    }

    /// Whether the attached program is an earlier xvip's, adopted.
    pub fn program_adopted(&self) -> bool {
        self.running.is_some()
    }

    /// Records in the pin directory which program is attached (its object, tag and id, with
    /// the program and its maps that are not among the daemon's pins pinned inside), so the
    /// next start of this binary can adopt it: once every interface is attached through a
    /// pinned XDP link to this object's program. An adopted program's marker stays.
    pub fn mark_program(&mut self) {
        let Some(dir) = self.pins.clone() else {
            return;
        };
        if self.running.is_some() {
            return;
        }
        if self.placement != Placement::Xdp
            || self.links.is_empty()
            || self.links.iter().any(|l| l.pinned.is_none())
        {
            running::clear_markers(&dir);
            return;
        }
        let Some((tag, id)) = self.program().info().ok().map(|i| (i.tag(), i.id())) else {
            return;
        };
        let name = running::marker_name(&self.object_hash, tag, id);
        let written = running::begin_marker(&dir, &name)
            .map_err(|e| e.to_string())
            .and_then(|path| {
                self.program_mut()
                    .pin(path.join(running::PROGRAM_PIN))
                    .map_err(|e| format!("the program: {e}"))?;
                for (map, m) in self.ebpf.maps() {
                    if !PINNED_MAPS.contains(&map) {
                        m.pin(path.join(running::own_pin_name(map)))
                            .map_err(|e| format!("{map}: {e}"))?;
                    }
                }
                Ok(())
            });
        if let Err(e) = written {
            running::clear_markers(&dir);
            log::warn!(
                "cannot write the program marker {name} in {}: {e} (the next start verifies afresh)",
                dir.display()
            );
        }
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
        let mut out = self.present_backends_of::<u32>();
        out.extend(self.present_backends_of::<Ip6>());
        out
    }

    fn present_backends_of<A: family::Family>(&self) -> Vec<(u32, std::net::SocketAddr, [u8; 6])> {
        A::maps(self)
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.ok().map(|b| (i as u32, *A::backend(&b))))
            .filter(|(_, b)| b.flags & lb_common::BACKEND_FLAG_PRESENT != 0)
            .map(|(i, b)| (i, (b.addr.ip(), u16::from_be(b.port)).into(), b.mac))
            .collect()
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

    /// The handshake counters (`PASSIVE`) of the backend indices given, summed over CPUs.
    ///
    /// # Errors
    /// A failed map read.
    pub fn passive(
        &self,
        backend_indices: impl IntoIterator<Item = u32>,
    ) -> Result<StdHashMap<u32, lb_common::Passive>, DataplaneError> {
        let mut out = StdHashMap::new();
        for i in backend_indices {
            let v = op(map_names::PASSIVE, self.passive.get(&i, 0))?;
            let sum = v
                .iter()
                .fold(lb_common::Passive::default(), |a, c| lb_common::Passive {
                    syns: a.syns + c.syns,
                    answered: a.answered + c.answered,
                    refused: a.refused + c.refused,
                });
            out.insert(i, sum);
        }
        Ok(out)
    }

    /// Number of tracked flows. Walks the whole map (one syscall per entry): call it from
    /// [`flows::count_conntrack`]'s background task, never while holding the daemon's state.
    pub fn conntrack_entries(&self) -> usize {
        self.conntrack.keys().filter(|k| k.is_ok()).count()
    }

    /// A second handle on the pinned `CONNTRACK` map, for counting it off the main loop.
    pub fn conntrack_handle(&self) -> Option<HashMap<MapData, FlowKey, CtEntry>> {
        self.flow_map_handle(map_names::CONNTRACK)
    }

    /// Second handles on the pinned `CONNTRACK` and `CONNTRACK6` maps: the clients told of
    /// a takeover are read from them off the main loop. `None` without pins.
    pub fn client_maps(&self) -> Option<flows::ClientMaps> {
        let v4 = self.flow_map_handle(map_names::CONNTRACK)?;
        let v6 = MapData::from_pin(self.pins.as_ref()?.join(map_names::CONNTRACK6))
            .ok()
            .and_then(|d| HashMap::try_from(Map::LruHashMap(d)).ok());
        Some(flows::ClientMaps { v4, v6 })
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
        // An adopted program's ring and counters are its own, not the loader's.
        let (events, counts) = match self.running.as_mut() {
            Some(r) => (
                Map::from_map_data(r.sync_events.take()?).ok()?,
                Map::from_map_data(r.sync_counts.take()?).ok()?,
            ),
            None => (
                self.ebpf.take_map(map_names::SYNC_EVENTS)?,
                self.ebpf.take_map(map_names::SYNC_COUNTS)?,
            ),
        };
        let events = aya::maps::RingBuf::try_from(events).ok()?;
        let counts = PerCpuArray::try_from(counts).ok()?;
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
