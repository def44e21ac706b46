//! The map writes the reconciler needs, behind one interface: [`MapStore`], implemented by
//! the loaded [`Dataplane`] and by [`FakeMaps`] (in memory, for the reconciler's tests and
//! the bench's control-plane figures).

use super::*;
pub use crate::dataplane::family::FakeMaps;
use crate::dataplane::family::Family;

/// Map writes the reconciliation needs. Implemented by [`Dataplane`] and [`FakeMaps`].
/// The per-family methods are generic over the address type ([`Family`]: `u32` for the
/// IPv4 maps, `Ip6` for the `*6` ones).
pub trait MapStore {
    /// Replaces the single `CONFIG` entry.
    fn set_config(&mut self, cfg: &Config) -> Result<(), DataplaneError>;
    /// Writes one `VIP_SLOTS` slot (`lb_common::hash::addr_slots`; IPv6:
    /// `VIP_SLOTS6`, `lb_common::hash::addr_slots6`).
    fn set_vip_slot<A: Family>(&mut self, slot: u32, value: &A::Slot)
    -> Result<(), DataplaneError>;
    /// Marks an address as VIP and/or SNAT address (`flags` = 0 removes it).
    fn set_vip_addr<A: Family>(&mut self, addr: A, flags: u32) -> Result<(), DataplaneError>;
    /// Writes `VIP_KEYS[index]` (IPv6: `VIP_KEYS6`): the key of the VIP holding `index` in
    /// `VIPS` (`VIPS6`); the default key: none. Set after the VIP's `VIPS` entry, cleared
    /// before it goes.
    fn set_vip_index_key<A: Family>(
        &mut self,
        index: u32,
        key: &A::VipKey,
    ) -> Result<(), DataplaneError>;
    /// Adds or replaces a VIP. Replacing is atomic for packets (a new hash element).
    fn set_vip<A: Family>(
        &mut self,
        key: &A::VipKey,
        meta: &A::VipMeta,
    ) -> Result<(), DataplaneError>;
    /// The VIP's current value, if any.
    fn vip<A: Family>(&self, key: &A::VipKey) -> Option<A::VipMeta>;
    /// Every VIP in `VIPS` (an adopted map may hold VIPs no longer configured).
    fn vip_keys<A: Family>(&self) -> Vec<A::VipKey>;
    /// Removes a VIP from `VIPS` (absent is fine).
    fn remove_vip<A: Family>(&mut self, key: &A::VipKey) -> Result<(), DataplaneError>;
    /// Every address in `VIP_ADDRS`.
    fn vip_addr_keys<A: Family>(&self) -> Vec<A>;
    /// Writes a backend slot (`BACKENDS6`'s index space is `BACKENDS`').
    fn set_backend<A: Family>(
        &mut self,
        index: u32,
        backend: &A::Backend,
    ) -> Result<(), DataplaneError>;
    /// Writes `table` into `RINGS` starting at `base`.
    fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<(), DataplaneError>;
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
    fn set_vip_slot<A: Family>(
        &mut self,
        slot: u32,
        value: &A::Slot,
    ) -> Result<(), DataplaneError> {
        A::fake_mut(self).vip_slots.insert(slot, *value);
        Ok(())
    }
    fn set_config(&mut self, cfg: &Config) -> Result<(), DataplaneError> {
        self.config = *cfg;
        Ok(())
    }
    fn set_vip_addr<A: Family>(&mut self, addr: A, flags: u32) -> Result<(), DataplaneError> {
        let m = A::fake_mut(self);
        if flags == 0 {
            m.vip_addrs.remove(&addr);
        } else {
            m.vip_addrs.insert(addr, flags);
        }
        Ok(())
    }
    fn set_vip<A: Family>(
        &mut self,
        key: &A::VipKey,
        meta: &A::VipMeta,
    ) -> Result<(), DataplaneError> {
        A::fake_mut(self).vips.insert(*key, *meta);
        Ok(())
    }
    fn set_vip_index_key<A: Family>(
        &mut self,
        index: u32,
        key: &A::VipKey,
    ) -> Result<(), DataplaneError> {
        A::fake_mut(self).vip_index_keys.insert(index, *key);
        Ok(())
    }
    fn vip<A: Family>(&self, key: &A::VipKey) -> Option<A::VipMeta> {
        A::fake(self).vips.get(key).copied()
    }
    fn vip_keys<A: Family>(&self) -> Vec<A::VipKey> {
        A::fake(self).vips.keys().copied().collect()
    }
    fn remove_vip<A: Family>(&mut self, key: &A::VipKey) -> Result<(), DataplaneError> {
        A::fake_mut(self).vips.remove(key);
        Ok(())
    }
    fn vip_addr_keys<A: Family>(&self) -> Vec<A> {
        A::fake(self).vip_addrs.keys().copied().collect()
    }
    fn set_backend<A: Family>(
        &mut self,
        index: u32,
        backend: &A::Backend,
    ) -> Result<(), DataplaneError> {
        A::fake_mut(self).backends.insert(index, *backend);
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
    fn set_vip_slot<A: Family>(
        &mut self,
        slot: u32,
        value: &A::Slot,
    ) -> Result<(), DataplaneError> {
        op(
            A::VIP_SLOTS,
            A::maps_mut(self).vip_slots.set(slot, value, 0),
        )
    }
    fn set_config(&mut self, cfg: &Config) -> Result<(), DataplaneError> {
        op(map_names::CONFIG, self.config.set(0, cfg, 0))
    }
    fn set_vip_addr<A: Family>(&mut self, addr: A, flags: u32) -> Result<(), DataplaneError> {
        let m = &mut A::maps_mut(self).vip_addrs;
        if flags == 0 {
            match m.remove(&addr) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => op(A::VIP_ADDRS, Err(e)),
            }
        } else {
            op(A::VIP_ADDRS, m.insert(&addr, &flags, 0))
        }
    }
    fn set_vip<A: Family>(
        &mut self,
        key: &A::VipKey,
        meta: &A::VipMeta,
    ) -> Result<(), DataplaneError> {
        op(A::VIPS, A::maps_mut(self).vips.insert(key, meta, 0))
    }
    fn set_vip_index_key<A: Family>(
        &mut self,
        index: u32,
        key: &A::VipKey,
    ) -> Result<(), DataplaneError> {
        op(A::VIP_KEYS, A::maps_mut(self).vip_keys.set(index, key, 0))
    }
    fn vip<A: Family>(&self, key: &A::VipKey) -> Option<A::VipMeta> {
        A::maps(self).vips.get(key, 0).ok()
    }
    fn vip_keys<A: Family>(&self) -> Vec<A::VipKey> {
        A::maps(self).vips.keys().filter_map(Result::ok).collect()
    }
    fn remove_vip<A: Family>(&mut self, key: &A::VipKey) -> Result<(), DataplaneError> {
        match A::maps_mut(self).vips.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => op(A::VIPS, Err(e)),
        }
    }
    fn vip_addr_keys<A: Family>(&self) -> Vec<A> {
        A::maps(self)
            .vip_addrs
            .keys()
            .filter_map(Result::ok)
            .collect()
    }
    fn set_backend<A: Family>(
        &mut self,
        index: u32,
        backend: &A::Backend,
    ) -> Result<(), DataplaneError> {
        let b = A::backend(backend);
        if b.flags & BACKEND_FLAG_PRESENT != 0 {
            self.mark_backend_slot(b.addr)?;
        }
        op(
            A::BACKENDS,
            A::maps_mut(self).backends.set(index, backend, 0),
        )
    }
    fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<(), DataplaneError> {
        check_table(table)?;
        self.rings.write(base, table);
        Ok(())
    }
}
