//! The two address families as the daemon's map writes see them, in the style of lb-ebpf's
//! `Family`: one trait on the address type (`u32` for IPv4, `Ip6`) that names the family's
//! maps and their types, so each map operation is written once for both.

use std::{collections::HashMap as StdHashMap, hash::Hash, net::IpAddr};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use lb_common::{
    Addr, AddrSlot6, Backend, Backend6, Ip6, VipKey, VipKey6, VipMeta, VipMeta6, map_names,
};

use lb_common::Config;

use super::{Dataplane, DataplaneError, take};

/// An address family: its address type is `Self`, its `VIPS`, `VIP_ADDRS`, `VIP_SLOTS` and
/// `BACKENDS` maps are named here (the IPv6 ones with the `6` suffix).
pub trait Family: Addr + aya::Pod + Hash {
    /// `VIPS`' key (`VipKey<Self>`).
    type VipKey: aya::Pod + Copy + Eq + Hash;
    /// `VIPS`' value (`VipMeta<Self>`).
    type VipMeta: aya::Pod + Copy;
    /// A `BACKENDS` slot (`Backend<Self>`).
    type Backend: aya::Pod + Copy;
    /// A `VIP_SLOTS` slot: IPv4's packed `u64`, IPv6's `AddrSlot6`.
    type Slot: aya::Pod + Copy;
    /// The map names, as `lb_common::map_names` spells them.
    const VIPS: &'static str;
    const VIP_KEYS: &'static str;
    const VIP_ADDRS: &'static str;
    const VIP_SLOTS: &'static str;
    const BACKENDS: &'static str;
    /// The backend's fields (`Self::Backend` is `Backend<Self>`).
    fn backend(b: &Self::Backend) -> &Backend<Self>;
    /// The address as the standard library spells it.
    fn ip(self) -> IpAddr;
    /// The family's maps in the loaded data path.
    fn maps(dp: &Dataplane) -> &FamilyMaps<Self>;
    fn maps_mut(dp: &mut Dataplane) -> &mut FamilyMaps<Self>;
    /// The family's maps in [`FakeMaps`].
    fn fake(m: &FakeMaps) -> FakeFamily<'_, Self>;
    fn fake_mut(m: &mut FakeMaps) -> FakeFamilyMut<'_, Self>;
}

/// One family's maps in the loaded data path.
pub struct FamilyMaps<A: Family> {
    pub(super) vips: HashMap<MapData, A::VipKey, A::VipMeta>,
    /// `VIP_KEYS` (`VIP_KEYS6`): VIP index -> the key holding it in `vips`.
    pub(super) vip_keys: Array<MapData, A::VipKey>,
    pub(super) vip_addrs: HashMap<MapData, A, u32>,
    pub(super) vip_slots: Array<MapData, A::Slot>,
    pub(super) backends: Array<MapData, A::Backend>,
}

impl<A: Family> FamilyMaps<A> {
    /// The family's maps out of the loaded object.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            vips: take(ebpf, A::VIPS)?,
            vip_keys: take(ebpf, A::VIP_KEYS)?,
            vip_addrs: take(ebpf, A::VIP_ADDRS)?,
            vip_slots: take(ebpf, A::VIP_SLOTS)?,
            backends: take(ebpf, A::BACKENDS)?,
        })
    }
}

/// In-memory maps for tests of the control plane (their `MapStore` is in `store`), here
/// beside the per-family views the trait hands out.
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
    pub vip_index_keys6: StdHashMap<u32, VipKey6>,
    pub backends6: StdHashMap<u32, Backend6>,
    pub rings: StdHashMap<u32, u32>,
    /// Number of `write_ring` calls (table swaps).
    pub ring_writes: usize,
}

/// One family's maps in [`FakeMaps`], to read.
pub struct FakeFamily<'a, A: Family> {
    pub vips: &'a StdHashMap<A::VipKey, A::VipMeta>,
    pub vip_addrs: &'a StdHashMap<A, u32>,
}

/// One family's maps in [`FakeMaps`], to write.
pub struct FakeFamilyMut<'a, A: Family> {
    pub vips: &'a mut StdHashMap<A::VipKey, A::VipMeta>,
    pub vip_index_keys: &'a mut StdHashMap<u32, A::VipKey>,
    pub vip_addrs: &'a mut StdHashMap<A, u32>,
    pub vip_slots: &'a mut StdHashMap<u32, A::Slot>,
    pub backends: &'a mut StdHashMap<u32, A::Backend>,
}

impl Family for u32 {
    type VipKey = VipKey;
    type VipMeta = VipMeta;
    type Backend = Backend;
    type Slot = u64;
    const VIPS: &'static str = map_names::VIPS;
    const VIP_KEYS: &'static str = map_names::VIP_KEYS;
    const VIP_ADDRS: &'static str = map_names::VIP_ADDRS;
    const VIP_SLOTS: &'static str = map_names::VIP_SLOTS;
    const BACKENDS: &'static str = map_names::BACKENDS;
    fn backend(b: &Backend) -> &Backend {
        b
    }
    fn ip(self) -> IpAddr {
        std::net::Ipv4Addr::from(self.to_ne_bytes()).into()
    }
    fn maps(dp: &Dataplane) -> &FamilyMaps<Self> {
        &dp.v4
    }
    fn maps_mut(dp: &mut Dataplane) -> &mut FamilyMaps<Self> {
        &mut dp.v4
    }
    fn fake(m: &FakeMaps) -> FakeFamily<'_, Self> {
        FakeFamily {
            vips: &m.vips,
            vip_addrs: &m.vip_addrs,
        }
    }
    fn fake_mut(m: &mut FakeMaps) -> FakeFamilyMut<'_, Self> {
        FakeFamilyMut {
            vips: &mut m.vips,
            vip_index_keys: &mut m.vip_index_keys,
            vip_addrs: &mut m.vip_addrs,
            vip_slots: &mut m.vip_slots,
            backends: &mut m.backends,
        }
    }
}

impl Family for Ip6 {
    type VipKey = VipKey6;
    type VipMeta = VipMeta6;
    type Backend = Backend6;
    type Slot = AddrSlot6;
    const VIPS: &'static str = map_names::VIPS6;
    const VIP_KEYS: &'static str = map_names::VIP_KEYS6;
    const VIP_ADDRS: &'static str = map_names::VIP_ADDRS6;
    const VIP_SLOTS: &'static str = map_names::VIP_SLOTS6;
    const BACKENDS: &'static str = map_names::BACKENDS6;
    fn backend(b: &Backend6) -> &Backend6 {
        b
    }
    fn ip(self) -> IpAddr {
        std::net::Ipv6Addr::from(lb_common::ip6_octets(self)).into()
    }
    fn maps(dp: &Dataplane) -> &FamilyMaps<Self> {
        &dp.v6
    }
    fn maps_mut(dp: &mut Dataplane) -> &mut FamilyMaps<Self> {
        &mut dp.v6
    }
    fn fake(m: &FakeMaps) -> FakeFamily<'_, Self> {
        FakeFamily {
            vips: &m.vips6,
            vip_addrs: &m.vip_addrs6,
        }
    }
    fn fake_mut(m: &mut FakeMaps) -> FakeFamilyMut<'_, Self> {
        FakeFamilyMut {
            vips: &mut m.vips6,
            vip_index_keys: &mut m.vip_index_keys6,
            vip_addrs: &mut m.vip_addrs6,
            vip_slots: &mut m.vip_slots6,
            backends: &mut m.backends6,
        }
    }
}
