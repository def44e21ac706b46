//! The map writes the reconciler needs, behind one interface: [`MapStore`], implemented by
//! the loaded [`Dataplane`] and by [`FakeMaps`] (in memory, for the reconciler's tests and
//! the bench's control-plane figures).

use super::*;

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
