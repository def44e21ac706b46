//! Reconciliation: from configured backends, their health and their next-hop MACs to the
//! `BACKENDS` (`BACKENDS6`) slots and each VIP's Maglev table, swapped in atomically. Pure
//! logic over a [`MapStore`], so it is tested without a kernel.
//!
//! VIPs and backends are of either family ([`IpAddr`], [`SocketAddr`]): a VIP's table holds
//! the backends of its family only, IPv4 VIPs go to `VIPS`, IPv6 ones to `VIPS6`; the
//! backend index space is shared (an index is a v4 or a v6 backend, never both at once).
//! [`Reconciler::new`] is the one place configuration types become these.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Instant,
};

use lb_common::{
    ADDR_FLAG_SNAT, ADDR_FLAG_VIP, ADDR_KEY_DNAT_PRESENT, AddrSlot6, BACKEND_FLAG_LOCAL,
    BACKEND_FLAG_PRESENT, Backend, Backend6, Ip6, MAX_VIPS, NO_BACKEND, VIP_FLAG_DNAT,
    VIP_FLAG_FULLNAT, VipKey, VipKey6, VipMeta, VipMeta6, ip_raw, ip6_raw, port_raw,
};

use crate::{
    config::{Mode, Settings, VipSpec},
    control::maglev::{BackendId, MaglevBackend, build_table},
    dataplane::{DataplaneError, store::MapStore},
};

/// What the daemon knows about one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendState {
    /// Slot in `BACKENDS`; stable while the backend is configured.
    pub index: u32,
    pub weight: u32,
    pub healthy: bool,
    /// MAC of the next hop towards it, once resolved.
    pub mac: Option<[u8; 6]>,
    /// Interface to send to it by (0: the one the packet came in on).
    pub ifindex: u32,
}

/// The outcome of one reconciliation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Tables rewritten (one per VIP whose table changed).
    pub swaps: usize,
    /// No backend was eligible, so the table fell back to every reachable backend.
    pub fail_open: bool,
    /// No primary was eligible, so the backups hold the table (of either family).
    pub backups_serving: bool,
}

/// A VIP as the reconciler writes it: an address of either family and a port (TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vip {
    pub addr: IpAddr,
    pub port: u16,
}

impl From<&VipSpec> for Vip {
    fn from(v: &VipSpec) -> Self {
        Self {
            addr: v.addr.into(),
            port: v.port,
        }
    }
}

/// Owns the backend set and the live tables.
pub struct Reconciler {
    vips: Vec<Vip>,
    mode: Mode,
    snat_ip: Ipv4Addr,
    /// Source of full-NAT IPv6 flows (required by a full-NAT IPv6 VIP).
    snat_ip6: Option<Ipv6Addr>,
    table_size: u32,
    backends: BTreeMap<SocketAddr, BackendState>,
    /// The backends held back while a primary of their family is eligible.
    backups: std::collections::BTreeSet<SocketAddr>,
    free: Vec<u32>,
    next_index: u32,
    tables: Vec<Vec<u32>>,
    /// The `VIP_SLOTS` contents last written (`None`: never written by us).
    slots: Option<Vec<u64>>,
    /// The `VIP_SLOTS6` contents last written (`None`: never written by us).
    slots6: Option<Vec<AddrSlot6>>,
    /// The `VIP_KEYS` contents last written (index -> key; the default key: none).
    index_keys: Vec<VipKey>,
    /// The same for `VIP_KEYS6`.
    index_keys6: Vec<VipKey6>,
    /// This node's addresses: a backend on one of them is served by the local stack.
    locals: std::collections::BTreeSet<IpAddr>,
    /// When the last swap happened.
    pub last_swap: Option<Instant>,
}

impl Reconciler {
    /// Starts with every configured backend healthy (so the VIP serves from the first
    /// moment, before any check has run) and no MAC known.
    pub fn new(s: &Settings) -> Self {
        let mut r = Self {
            vips: s
                .vips
                .iter()
                .map(Vip::from)
                .chain(s.vips6.iter().map(|v| Vip {
                    addr: v.addr.into(),
                    port: v.port,
                }))
                .collect(),
            mode: s.mode,
            snat_ip: s.snat_ip,
            snat_ip6: s.snat_ip6,
            table_size: s.table_size,
            backends: BTreeMap::new(),
            backups: Default::default(),
            free: Vec::new(),
            next_index: 0,
            tables: vec![Vec::new(); s.vips.len() + s.vips6.len()],
            locals: Default::default(),
            slots: None,
            slots6: None,
            index_keys: vec![VipKey::default(); MAX_VIPS as usize],
            index_keys6: vec![VipKey6::default(); MAX_VIPS as usize],
            last_swap: None,
        };
        r.set_backends(
            s.backends
                .iter()
                .map(|b| (SocketAddr::V4(b.addr), b.weight))
                .chain(
                    s.backends6
                        .iter()
                        .map(|b| (SocketAddr::V6(b.addr), b.weight)),
                ),
        );
        r.set_backups(backups_of(s));
        r
    }

    /// Declares which backends are backups (the rest are primaries); an address not
    /// configured is remembered for when it is. Returns whether anything changed.
    pub fn set_backups(&mut self, backups: impl IntoIterator<Item = SocketAddr>) -> bool {
        let backups = backups.into_iter().collect();
        let changed = self.backups != backups;
        self.backups = backups;
        changed
    }

    /// Whether `addr` is a backup.
    pub fn is_backup(&self, addr: &SocketAddr) -> bool {
        self.backups.contains(addr)
    }

    /// Adds IPv6 VIPs (and their backends come through [`Reconciler::set_backends`] like
    /// IPv4's), with the SNAT source of their full-NAT flows.
    pub fn add_vips6(&mut self, vips: impl IntoIterator<Item = Vip>, snat_ip6: Option<Ipv6Addr>) {
        for v in vips {
            self.vips.push(v);
            self.tables.push(Vec::new());
        }
        self.snat_ip6 = snat_ip6;
    }

    /// The VIPs, in index order.
    pub fn vips(&self) -> &[Vip] {
        &self.vips
    }

    /// Replaces the configured backend set (SIGHUP): new ones get a free index and start
    /// healthy; kept ones keep index, health and MAC; removed ones free their index.
    pub fn set_backends<A: Into<SocketAddr>>(
        &mut self,
        wanted: impl IntoIterator<Item = (A, u32)>,
    ) -> Vec<(SocketAddr, u32)> {
        let wanted: BTreeMap<SocketAddr, u32> =
            wanted.into_iter().map(|(a, w)| (a.into(), w)).collect();
        let mut removed = Vec::new();
        self.backends.retain(|addr, st| {
            if wanted.contains_key(addr) {
                true
            } else {
                removed.push((*addr, st.index));
                false
            }
        });
        for (_, idx) in &removed {
            self.free.push(*idx);
        }
        for (addr, weight) in wanted {
            if let Some(st) = self.backends.get_mut(&addr) {
                st.weight = weight;
            } else {
                let index = self.free.pop().unwrap_or_else(|| {
                    self.next_index += 1;
                    self.next_index - 1
                });
                self.backends.insert(
                    addr,
                    BackendState {
                        index,
                        weight,
                        healthy: true,
                        mac: None,
                        ifindex: 0,
                    },
                );
            }
        }
        removed
    }

    /// Takes over the backend indices and MACs an earlier xvip left in the pinned maps, for
    /// backends that are still configured, so tracked flows keep pointing at the right slot
    /// and the first table written equals the live one.
    pub fn adopt(&mut self, present: &[(u32, SocketAddr, [u8; 6])]) {
        let wanted: BTreeMap<SocketAddr, u32> = self
            .backends
            .iter()
            .map(|(a, st)| (*a, st.weight))
            .collect();
        let mut taken: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
        let mut states = BTreeMap::new();
        for (index, addr, mac) in present {
            if let Some(weight) = wanted.get(addr) {
                let mac = (*mac != [0; 6]).then_some(*mac);
                states.insert(
                    *addr,
                    BackendState {
                        index: *index,
                        weight: *weight,
                        healthy: true,
                        mac,
                        ifindex: 0,
                    },
                );
                taken.insert(*index);
            }
        }
        let mut next = 0u32;
        for (addr, weight) in wanted {
            if states.contains_key(&addr) {
                continue;
            }
            while taken.contains(&next) {
                next += 1;
            }
            states.insert(
                addr,
                BackendState {
                    index: next,
                    weight,
                    healthy: true,
                    mac: None,
                    ifindex: 0,
                },
            );
            taken.insert(next);
        }
        self.next_index = taken.iter().next_back().map_or(0, |m| m + 1);
        self.free = (0..self.next_index)
            .filter(|i| !taken.contains(i))
            .collect();
        self.backends = states;
    }

    /// Declares this node's addresses; backends on them get `BACKEND_FLAG_LOCAL`.
    pub fn set_local_addresses<A: Into<IpAddr>>(&mut self, addrs: impl IntoIterator<Item = A>) {
        self.locals = addrs.into_iter().map(Into::into).collect();
    }

    /// Whether `addr` is one of this node's addresses.
    pub fn is_local<A: Copy + Into<SocketAddr>>(&self, addr: &A) -> bool {
        self.locals.contains(&(*addr).into().ip())
    }

    /// Records a health transition; returns whether anything changed.
    pub fn set_health(&mut self, addr: impl Into<SocketAddr>, healthy: bool) -> bool {
        match self.backends.get_mut(&addr.into()) {
            Some(st) if st.healthy != healthy => {
                st.healthy = healthy;
                true
            }
            _ => false,
        }
    }

    /// Records a resolved next-hop MAC; returns whether anything changed.
    pub fn set_mac(&mut self, addr: impl Into<SocketAddr>, mac: [u8; 6]) -> bool {
        match self.backends.get_mut(&addr.into()) {
            Some(st) if st.mac != Some(mac) => {
                st.mac = Some(mac);
                true
            }
            _ => false,
        }
    }

    /// Records a backend's next hop from the kernel: output interface and MAC (`None`: no
    /// usable route, the backend leaves the table); returns whether anything changed.
    pub fn set_next_hop(
        &mut self,
        addr: impl Into<SocketAddr>,
        ifindex: u32,
        mac: Option<[u8; 6]>,
    ) -> bool {
        match self.backends.get_mut(&addr.into()) {
            Some(st) if st.mac != mac || st.ifindex != ifindex => {
                st.mac = mac;
                st.ifindex = ifindex;
                true
            }
            _ => false,
        }
    }

    /// The backends and their state.
    pub fn backends(&self) -> &BTreeMap<SocketAddr, BackendState> {
        &self.backends
    }

    /// The IPv4 backends (for what only IPv4 serves yet: ARP, health checks, next hops).
    pub fn backends_v4(&self) -> impl Iterator<Item = (std::net::SocketAddrV4, &BackendState)> {
        self.backends.iter().filter_map(|(a, st)| match a {
            SocketAddr::V4(a) => Some((*a, st)),
            SocketAddr::V6(_) => None,
        })
    }

    /// The live table of VIP `i`.
    pub fn table(&self, i: usize) -> &[u32] {
        &self.tables[i]
    }

    /// Writes the data path's view: config-level maps, backends, then each VIP's table when
    /// it changed (into the inactive half, then the VIP entry flips to it).
    ///
    /// # Errors
    /// A failed map write; the live table stays the previous one.
    pub fn apply(
        &mut self,
        store: &mut impl MapStore,
        removed: &[(SocketAddr, u32)],
    ) -> Result<Applied, DataplaneError> {
        let mut applied = Applied::default();
        let snat = ip_raw(self.snat_ip.octets());
        let snat6 = self.snat_ip6.map_or([0; 4], |a| ip6_raw(a.octets()));
        let any6 = self.vips.iter().any(|v| v.addr.is_ipv6());
        let mut addr_flags: BTreeMap<u32, u32> = BTreeMap::new();
        let mut addr_flags6: BTreeMap<Ip6, u32> = BTreeMap::new();
        for v in &self.vips {
            match v.addr {
                IpAddr::V4(a) => {
                    *addr_flags.entry(ip_raw(a.octets())).or_default() |= ADDR_FLAG_VIP
                }
                IpAddr::V6(a) => {
                    *addr_flags6.entry(ip6_raw(a.octets())).or_default() |= ADDR_FLAG_VIP;
                }
            }
        }
        match self.mode {
            Mode::Fullnat => {
                *addr_flags.entry(snat).or_default() |= ADDR_FLAG_SNAT;
                if any6 && self.snat_ip6.is_some() {
                    *addr_flags6.entry(snat6).or_default() |= ADDR_FLAG_SNAT;
                }
            }
            Mode::Dnat => {
                addr_flags.insert(ADDR_KEY_DNAT_PRESENT, 1);
                if any6 {
                    addr_flags6.insert([0; 4], 1);
                }
            }
        }
        // The first time, adopted maps may hold VIPs of an earlier configuration: out of
        // `VIPS`/`VIPS6` first, so neither XDP nor the connect hooks balance them any more.
        let first = self.slots.is_none();
        if first {
            // `VIP_KEYS` and `VIP_KEYS6` first: an adopted index may name a VIP that goes
            // or moves, and no packet may take the fast path of a VIP once its `VIPS`
            // entry is gone. Each index is written again below, after its VIP's entry.
            for i in 0..MAX_VIPS {
                store.set_vip_index_key::<u32>(i, &VipKey::default())?;
                store.set_vip_index_key::<Ip6>(i, &VipKey6::default())?;
            }
            let wanted: Vec<VipKey> = self.vips.iter().filter_map(vip_key).collect();
            for key in store.vip_keys::<u32>() {
                if !wanted.contains(&key) {
                    store.remove_vip::<u32>(&key)?;
                }
            }
            let wanted6: Vec<VipKey6> = self.vips.iter().filter_map(vip_key6).collect();
            for key in store.vip_keys::<Ip6>() {
                if !wanted6.contains(&key) {
                    store.remove_vip::<Ip6>(&key)?;
                }
            }
        }
        for (a, f) in &addr_flags {
            store.set_vip_addr(*a, *f)?;
        }
        for (a, f) in &addr_flags6 {
            store.set_vip_addr(*a, *f)?;
        }
        // Then the slots in front of them (a shared slot sends packets to `VIP_ADDRS`, which
        // is complete by now). Only changed slots are written; all of them the first time,
        // which also clears what an adopted map held.
        let slots = lb_common::hash::addr_slots(addr_flags.iter().map(|(a, f)| (*a, *f)));
        for (i, v) in slots.iter().enumerate() {
            if self.slots.as_ref().is_none_or(|old| old[i] != *v) {
                store.set_vip_slot::<u32>(i as u32, v)?;
            }
        }
        self.slots = Some(slots.to_vec());
        let slots6 = lb_common::hash::addr_slots6(addr_flags6.iter().map(|(a, f)| (*a, *f)));
        for (i, v) in slots6.iter().enumerate() {
            if self.slots6.as_ref().is_none_or(|old| old[i] != *v) {
                store.set_vip_slot::<Ip6>(i as u32, v)?;
            }
        }
        self.slots6 = Some(slots6.to_vec());
        // Stale addresses go only now that no slot points at them.
        if first {
            for a in store.vip_addr_keys::<u32>() {
                if !addr_flags.contains_key(&a) {
                    store.set_vip_addr(a, 0)?;
                }
            }
            for a in store.vip_addr_keys::<Ip6>() {
                if !addr_flags6.contains_key(&a) {
                    store.set_vip_addr(a, 0)?;
                }
            }
        }
        // A removed backend's slot is cleared in its family's array (a later backend of the
        // other family may take the index).
        for (addr, idx) in removed {
            match addr {
                SocketAddr::V4(_) => store.set_backend::<u32>(*idx, &Backend::default())?,
                SocketAddr::V6(_) => store.set_backend::<Ip6>(*idx, &Backend6::default())?,
            }
        }
        for (addr, st) in &self.backends {
            let flags = BACKEND_FLAG_PRESENT
                | if self.locals.contains(&addr.ip()) {
                    BACKEND_FLAG_LOCAL
                } else {
                    0
                };
            let (port, mac) = (port_raw(addr.port()), st.mac.unwrap_or([0; 6]));
            match addr.ip() {
                IpAddr::V4(a) => {
                    let b = Backend {
                        addr: ip_raw(a.octets()),
                        flags,
                        ifindex: st.ifindex,
                        port,
                        mac,
                        _pad: [0; 4],
                    };
                    store.set_backend::<u32>(st.index, &b)?;
                }
                IpAddr::V6(a) => {
                    let b = Backend6 {
                        addr: ip6_raw(a.octets()),
                        flags,
                        ifindex: st.ifindex,
                        port,
                        mac,
                        _pad: [0; 4],
                    };
                    store.set_backend::<Ip6>(st.index, &b)?;
                }
            }
        }

        let (table4, open4, backup4) = self.compute_table(false);
        let (table6, open6, backup6) = if any6 {
            self.compute_table(true)
        } else {
            (Vec::new(), false, false)
        };
        applied.fail_open = open4 || open6;
        applied.backups_serving = backup4 || backup6;
        let flags = if self.mode == Mode::Dnat {
            VIP_FLAG_DNAT
        } else {
            VIP_FLAG_FULLNAT
        };
        for (i, v) in self.vips.clone().iter().enumerate() {
            let table = if v.addr.is_ipv6() { &table6 } else { &table4 };
            if self.tables[i] == *table {
                continue;
            }
            let (index, ring_size) = (i as u32, self.table_size);
            if let Some(key) = vip_key(v) {
                let half = store.vip::<u32>(&key).map_or(0, |m| m.active_half ^ 1);
                let meta = VipMeta {
                    index,
                    ring_size,
                    active_half: half,
                    flags,
                    snat_addr: snat,
                    _pad: 0,
                };
                store.write_ring(meta.ring_base(), table)?;
                store.set_vip::<u32>(&key, &meta)?;
                // Only now that `VIPS` has it: a flow of this VIP skips the lookup.
                if self.index_keys[i] != key {
                    store.set_vip_index_key::<u32>(index, &key)?;
                    self.index_keys[i] = key;
                }
            } else if let Some(key) = vip_key6(v) {
                if self.mode == Mode::Fullnat && self.snat_ip6.is_none() {
                    // Full NAT from `::` would be no NAT at all: such a VIP is not served
                    // (the configuration refuses it; this is the last line).
                    log::error!(
                        "{}: full NAT over IPv6 without an IPv6 SNAT address: not served",
                        v.addr
                    );
                    continue;
                }
                let half = store.vip::<Ip6>(&key).map_or(0, |m| m.active_half ^ 1);
                let meta = VipMeta6 {
                    index,
                    ring_size,
                    active_half: half,
                    flags,
                    snat_addr: snat6,
                    _pad: 0,
                };
                store.write_ring(meta.ring_base(), table)?;
                store.set_vip::<Ip6>(&key, &meta)?;
                if self.index_keys6[i] != key {
                    store.set_vip_index_key::<Ip6>(index, &key)?;
                    self.index_keys6[i] = key;
                }
            }
            self.tables[i] = table.clone();
            applied.swaps += 1;
        }
        if applied.swaps > 0 {
            self.last_swap = Some(Instant::now());
        }
        Ok(applied)
    }

    /// The table the VIPs of one family share (`v6`): that family's healthy primaries with
    /// a known MAC; if none, its healthy backups; if none, every one with a known MAC (fail
    /// open: see docs/health-checks.md). Returns the table, whether it failed open and
    /// whether the backups hold it.
    fn compute_table(&self, v6: bool) -> (Vec<u32>, bool, bool) {
        // `backup`: `Some(b)` takes only backups (`b`) or only primaries, `None` both.
        let pick = |require_healthy: bool, backup: Option<bool>| -> Vec<MaglevBackend> {
            self.backends
                .iter()
                .filter(|(addr, st)| {
                    addr.is_ipv6() == v6
                        && st.mac.is_some()
                        && (st.healthy || !require_healthy)
                        && backup.is_none_or(|b| self.backups.contains(addr) == b)
                })
                .map(|(addr, st)| MaglevBackend {
                    id: BackendId {
                        addr: addr.ip(),
                        port: addr.port(),
                    },
                    index: st.index,
                    weight: st.weight,
                })
                .collect()
        };
        let serves = |set: &[MaglevBackend]| set.iter().any(|b| b.weight > 0);
        let primaries = pick(true, Some(false));
        let (set, fail_open, backups) = if serves(&primaries) {
            (primaries, false, false)
        } else {
            let backups = pick(true, Some(true));
            if serves(&backups) {
                (backups, false, true)
            } else {
                let all = pick(false, None);
                let open = serves(&all);
                (all, open, false)
            }
        };
        let table = build_table(&set, self.table_size)
            .unwrap_or_else(|_| vec![NO_BACKEND; self.table_size as usize]);
        (table, fail_open, backups)
    }
}

/// The configured backups of both families.
pub fn backups_of(s: &Settings) -> impl Iterator<Item = SocketAddr> + '_ {
    s.backends
        .iter()
        .filter(|b| b.backup)
        .map(|b| SocketAddr::V4(b.addr))
        .chain(
            s.backends6
                .iter()
                .filter(|b| b.backup)
                .map(|b| SocketAddr::V6(b.addr)),
        )
}

/// The `VIPS` key of an IPv4 VIP (TCP); `None` for an IPv6 one.
pub fn vip_key(v: &Vip) -> Option<VipKey> {
    match v.addr {
        IpAddr::V4(a) => Some(VipKey {
            addr: ip_raw(a.octets()),
            port: port_raw(v.port),
            proto: lb_common::IPPROTO_TCP,
            _pad: 0,
        }),
        IpAddr::V6(_) => None,
    }
}

/// The `VIPS6` key of an IPv6 VIP (TCP); `None` for an IPv4 one.
pub fn vip_key6(v: &Vip) -> Option<VipKey6> {
    match v.addr {
        IpAddr::V6(a) => Some(VipKey6 {
            addr: ip6_raw(a.octets()),
            port: port_raw(v.port),
            proto: lb_common::IPPROTO_TCP,
            _pad: 0,
        }),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{config::args::RunArgs, dataplane::store::FakeMaps};

    fn settings(backends: &[&str]) -> Settings {
        RunArgs {
            interface: vec!["eth0".into()],
            vips: vec!["192.0.2.100".into()],
            backends: backends.iter().map(|s| s.to_string()).collect(),
            table_size: Some(13),
            ..Default::default()
        }
        .resolve()
        .unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        format!("{s}:6443").parse().unwrap()
    }

    fn owners(maps: &FakeMaps, s: &Settings) -> std::collections::BTreeSet<u32> {
        maps.live_table(&vip_key(&Vip::from(&s.vips[0])).unwrap())
            .unwrap()
            .into_iter()
            .collect()
    }

    #[test]
    fn a_dual_stack_pair_writes_each_family_its_own_maps_and_backends() {
        let s = settings(&["192.0.2.11", "192.0.2.12"]);
        let mut r = Reconciler::new(&s);
        let vip6 = Vip {
            addr: "2001:db8::100".parse().unwrap(),
            port: 6443,
        };
        let snat6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        r.add_vips6([vip6], Some(snat6));
        let v6: Vec<SocketAddr> = ["[2001:db8::11]:6443", "[2001:db8::12]:6443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let mut wanted: Vec<(SocketAddr, u32)> =
            vec![(addr("192.0.2.11"), 1), (addr("192.0.2.12"), 1)];
        wanted.extend(v6.iter().map(|a| (*a, 1)));
        r.set_backends(wanted.iter().copied());
        for (i, (a, _)) in wanted.iter().enumerate() {
            r.set_mac(*a, [2, 0, 0, 0, 0, i as u8]);
        }
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        let index = |a: &SocketAddr| r.backends()[a].index;
        let v4_indices: std::collections::BTreeSet<u32> =
            [index(&addr("192.0.2.11")), index(&addr("192.0.2.12"))].into();
        let v6_indices: std::collections::BTreeSet<u32> = v6.iter().map(index).collect();
        assert!(v4_indices.is_disjoint(&v6_indices), "one index space");
        // Each VIP's table holds its own family's backends only.
        assert_eq!(owners(&m, &s), v4_indices);
        let key6 = vip_key6(&vip6).unwrap();
        let live6: std::collections::BTreeSet<u32> =
            m.live_table6(&key6).unwrap().into_iter().collect();
        assert_eq!(live6, v6_indices);
        let meta6 = m.vips6[&key6];
        assert_eq!(meta6.snat_addr, ip6_raw(snat6.octets()));
        let key4 = vip_key(&r.vips()[0]).unwrap();
        assert_ne!(meta6.index, m.vips[&key4].index);
        // `VIP_KEYS` names the IPv4 VIP at its index, `VIP_KEYS6` the IPv6 one, and
        // neither names the other family's.
        assert_eq!(m.vip_index_keys[&m.vips[&key4].index], key4);
        assert_eq!(m.vip_index_keys[&meta6.index], VipKey::default());
        assert_eq!(m.vip_index_keys6[&meta6.index], key6);
        assert_eq!(m.vip_index_keys6[&m.vips[&key4].index], VipKey6::default());
        assert_eq!(
            m.vip_index_keys.len(),
            MAX_VIPS as usize,
            "all cleared first"
        );
        assert_eq!(
            m.vip_index_keys6.len(),
            MAX_VIPS as usize,
            "all cleared first"
        );
        assert_eq!(
            m.vip_addrs6[&ip6_raw(vip6.addr.to_string().parse::<Ipv6Addr>().unwrap().octets())],
            ADDR_FLAG_VIP
        );
        assert_eq!(m.vip_addrs6[&ip6_raw(snat6.octets())], ADDR_FLAG_SNAT);
        for a in &v6 {
            let b = m.backends6[&index(a)];
            assert_eq!(b.flags & BACKEND_FLAG_PRESENT, BACKEND_FLAG_PRESENT);
            assert_eq!(u16::from_be(b.port), 6443);
            assert!(!m.backends.contains_key(&index(a)), "not in BACKENDS too");
        }
        // A removed IPv6 backend is cleared in BACKENDS6 and leaves the v6 table only.
        let gone = index(&v6[1]);
        let removed = r.set_backends(wanted.iter().copied().filter(|(a, _)| *a != v6[1]));
        r.apply(&mut m, &removed).unwrap();
        assert_eq!(m.backends6[&gone].flags, 0);
        assert!(!m.live_table6(&key6).unwrap().contains(&gone));
        assert_eq!(owners(&m, &s), v4_indices);
    }

    #[test]
    fn a_fullnat_ipv6_vip_without_an_ipv6_snat_address_is_not_served() {
        let s = settings(&["192.0.2.11"]);
        let mut r = Reconciler::new(&s);
        let vip6 = Vip {
            addr: "2001:db8::100".parse().unwrap(),
            port: 6443,
        };
        r.add_vips6([vip6], None);
        let b6: SocketAddr = "[2001:db8::11]:6443".parse().unwrap();
        r.set_backends([(addr("192.0.2.11"), 1), (b6, 1)]);
        r.set_mac(addr("192.0.2.11"), [2; 6]);
        r.set_mac(b6, [3; 6]);
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        assert!(m.vips6.is_empty(), "never translated from ::");
        assert_eq!(m.vips.len(), 1, "the IPv4 VIP is served");
    }

    #[test]
    fn backends_without_a_mac_are_not_in_the_table() {
        let s = settings(&["192.0.2.11", "192.0.2.12"]);
        let mut r = Reconciler::new(&s);
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        assert_eq!(owners(&m, &s), [NO_BACKEND].into());
        r.set_mac(addr("192.0.2.11"), [2, 0, 0, 0, 0, 11]);
        r.apply(&mut m, &[]).unwrap();
        let idx = r.backends()[&addr("192.0.2.11")].index;
        assert_eq!(owners(&m, &s), [idx].into());
    }

    #[test]
    fn an_unhealthy_backend_leaves_the_table_and_comes_back() {
        let s = settings(&["192.0.2.11", "192.0.2.12", "192.0.2.13"]);
        let mut r = Reconciler::new(&s);
        for (i, b) in ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
            .iter()
            .enumerate()
        {
            r.set_mac(addr(b), [2, 0, 0, 0, 0, i as u8]);
        }
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        let down = r.backends()[&addr("192.0.2.12")].index;
        assert!(owners(&m, &s).contains(&down));
        assert!(r.set_health(addr("192.0.2.12"), false));
        let a = r.apply(&mut m, &[]).unwrap();
        assert_eq!(a.swaps, 1);
        assert!(!owners(&m, &s).contains(&down));
        assert!(
            !r.set_health(addr("192.0.2.12"), false),
            "no change, no work"
        );
        r.set_health(addr("192.0.2.12"), true);
        r.apply(&mut m, &[]).unwrap();
        assert!(owners(&m, &s).contains(&down));
    }

    #[test]
    fn a_swap_writes_the_inactive_half_then_flips() {
        let s = settings(&["192.0.2.11", "192.0.2.12"]);
        let mut r = Reconciler::new(&s);
        r.set_mac(addr("192.0.2.11"), [2; 6]);
        r.set_mac(addr("192.0.2.12"), [3; 6]);
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        let key = vip_key(&Vip::from(&s.vips[0])).unwrap();
        let first = m.vips[&key];
        let old_table = m.live_table(&key).unwrap();
        r.set_health(addr("192.0.2.12"), false);
        r.apply(&mut m, &[]).unwrap();
        let second = m.vips[&key];
        assert_ne!(first.active_half, second.active_half);
        // The previous half is untouched: a packet that read the old VIP value still sees a
        // complete old table.
        let base = first.ring_base();
        let still: Vec<u32> = (0..13).map(|i| m.rings[&(base + i)]).collect();
        assert_eq!(still, old_table);
    }

    #[test]
    fn with_no_healthy_backend_the_table_fails_open_to_all_reachable_ones() {
        let s = settings(&["192.0.2.11", "192.0.2.12"]);
        let mut r = Reconciler::new(&s);
        r.set_mac(addr("192.0.2.11"), [2; 6]);
        r.set_mac(addr("192.0.2.12"), [3; 6]);
        r.set_health(addr("192.0.2.11"), false);
        r.set_health(addr("192.0.2.12"), false);
        let mut m = FakeMaps::default();
        let a = r.apply(&mut m, &[]).unwrap();
        assert!(a.fail_open);
        assert_eq!(owners(&m, &s).len(), 2);
    }

    #[test]
    fn backups_take_the_table_only_while_no_primary_is_healthy() {
        let s = settings(&["192.0.2.11", "192.0.2.12", "192.0.2.13,backup"]);
        let mut r = Reconciler::new(&s);
        for (i, a) in ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
            .iter()
            .enumerate()
        {
            r.set_mac(addr(a), [2, 0, 0, 0, 0, i as u8]);
        }
        let index = |r: &Reconciler, a: &str| r.backends()[&addr(a)].index;
        let (p1, p2, b) = (
            index(&r, "192.0.2.11"),
            index(&r, "192.0.2.12"),
            index(&r, "192.0.2.13"),
        );
        assert!(r.is_backup(&addr("192.0.2.13")) && !r.is_backup(&addr("192.0.2.11")));
        let mut m = FakeMaps::default();
        let a = r.apply(&mut m, &[]).unwrap();
        assert!(!a.backups_serving && !a.fail_open);
        assert_eq!(owners(&m, &s), [p1, p2].into());
        // One primary left: it holds the whole table, the backup still waits.
        r.set_health(addr("192.0.2.11"), false);
        let a = r.apply(&mut m, &[]).unwrap();
        assert!(!a.backups_serving);
        assert_eq!(owners(&m, &s), [p2].into());
        // Every primary down: the backup takes the table, no fail-open.
        r.set_health(addr("192.0.2.12"), false);
        let a = r.apply(&mut m, &[]).unwrap();
        assert!(a.backups_serving && !a.fail_open);
        assert_eq!(owners(&m, &s), [b].into());
        // A drained primary (weight 0) is not a primary that serves.
        r.set_health(addr("192.0.2.12"), true);
        r.set_backends([
            (addr("192.0.2.11"), 1),
            (addr("192.0.2.12"), 0),
            (addr("192.0.2.13"), 1),
        ]);
        assert!(r.apply(&mut m, &[]).unwrap().backups_serving);
        // A primary back: the table is the primaries' again.
        r.set_health(addr("192.0.2.11"), true);
        let a = r.apply(&mut m, &[]).unwrap();
        assert!(!a.backups_serving);
        assert_eq!(owners(&m, &s), [p1].into());
        // Everything down: fail open over every reachable backend, backups included.
        for a in ["192.0.2.11", "192.0.2.12", "192.0.2.13"] {
            r.set_health(addr(a), false);
        }
        let a = r.apply(&mut m, &[]).unwrap();
        assert!(a.fail_open && !a.backups_serving);
        assert_eq!(owners(&m, &s), [p1, b].into());
        // Roles change on reload: no backups, the table ignores the old role.
        assert!(r.set_backups([]));
        assert!(!r.is_backup(&addr("192.0.2.13")));
    }

    #[test]
    fn a_removed_backend_is_cleared_and_its_index_reused() {
        let s = settings(&["192.0.2.11", "192.0.2.12"]);
        let mut r = Reconciler::new(&s);
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        let gone = r.backends()[&addr("192.0.2.12")].index;
        let removed = r.set_backends([(addr("192.0.2.11"), 1)]);
        assert_eq!(removed, vec![(addr("192.0.2.12"), gone)]);
        r.apply(&mut m, &removed).unwrap();
        assert_eq!(m.backends[&gone].flags & BACKEND_FLAG_PRESENT, 0);
        r.set_backends([(addr("192.0.2.11"), 1), (addr("192.0.2.14"), 1)]);
        assert_eq!(r.backends()[&addr("192.0.2.14")].index, gone);
    }

    #[test]
    fn adopting_keeps_indices_and_macs_of_configured_backends() {
        let s = settings(&["192.0.2.11", "192.0.2.12", "192.0.2.13"]);
        let mut r = Reconciler::new(&s);
        // An earlier run had .13 at index 0, .11 at index 5, and a backend no longer configured.
        r.adopt(&[
            (0, addr("192.0.2.13"), [3; 6]),
            (5, addr("192.0.2.11"), [1; 6]),
            (2, addr("192.0.2.99"), [9; 6]),
        ]);
        let b = r.backends();
        assert_eq!(b[&addr("192.0.2.13")].index, 0);
        assert_eq!(b[&addr("192.0.2.11")].index, 5);
        assert_eq!(b[&addr("192.0.2.11")].mac, Some([1; 6]));
        let new = b[&addr("192.0.2.12")].index;
        assert!(![0, 5].contains(&new));
        assert_eq!(b[&addr("192.0.2.12")].mac, None);
        assert!(!b.contains_key(&addr("192.0.2.99")));
    }

    #[test]
    fn every_vip_and_snat_address_is_found_through_its_slot() {
        let s = settings(&["192.0.2.11"]);
        let mut r = Reconciler::new(&s);
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        assert!(!m.vip_addrs.is_empty());
        for (a, f) in &m.vip_addrs {
            let v = m.vip_slots[&lb_common::hash::addr_slot(*a)];
            assert!(
                v == (u64::from(*a) << 32 | u64::from(*f))
                    || v == u64::from(lb_common::ADDR_SLOT_OVERFLOW)
            );
        }
        assert_eq!(
            m.vip_slots.len(),
            lb_common::VIP_SLOTS as usize,
            "first apply writes every slot"
        );
        // Unchanged addresses: nothing rewritten.
        m.vip_slots.clear();
        r.apply(&mut m, &[]).unwrap();
        assert!(m.vip_slots.is_empty());
    }

    #[test]
    fn vips_removed_from_the_configuration_leave_adopted_maps() {
        let s = settings(&["192.0.2.11"]);
        let mut m = FakeMaps::default();
        // What an earlier run with VIPs .100 and .101 in DNAT mode left pinned.
        let mut earlier = s.clone();
        earlier.vips.push(VipSpec {
            addr: Ipv4Addr::new(192, 0, 2, 101),
            port: 6443,
        });
        earlier.mode = Mode::Dnat;
        Reconciler::new(&earlier).apply(&mut m, &[]).unwrap();
        let gone = vip_key(&Vip::from(&earlier.vips[1])).unwrap();
        assert!(m.vips.contains_key(&gone));
        assert_eq!(m.vip_index_keys[&1], gone);
        assert!(m.vip_addrs.contains_key(&ADDR_KEY_DNAT_PRESENT));

        // Restart (same maps) with only .100, full NAT.
        Reconciler::new(&s).apply(&mut m, &[]).unwrap();
        assert_eq!(
            m.vips.keys().copied().collect::<Vec<_>>(),
            [vip_key(&Vip::from(&s.vips[0])).unwrap()]
        );
        let vip = ip_raw(s.vips[0].addr.octets());
        assert_eq!(
            m.vip_addrs
                .keys()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [vip].into(),
            "only the VIP (which is also the SNAT address) is left"
        );
        let gone_addr = ip_raw([192, 0, 2, 101]);
        let slot = m.vip_slots[&lb_common::hash::addr_slot(gone_addr)];
        assert_ne!(
            slot >> 32,
            u64::from(gone_addr),
            "its slot no longer names it"
        );
        assert_eq!(
            m.vip_index_keys[&1],
            VipKey::default(),
            "its index no longer names it: its flows ask VIPS, which has it no more"
        );
    }

    #[test]
    fn a_backend_on_a_local_address_is_flagged_local() {
        let s = settings(&["192.0.2.2", "192.0.2.12"]);
        let mut r = Reconciler::new(&s);
        r.set_local_addresses([Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::LOCALHOST]);
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        let local = r.backends()[&addr("192.0.2.2")].index;
        let remote = r.backends()[&addr("192.0.2.12")].index;
        assert_ne!(m.backends[&local].flags & BACKEND_FLAG_LOCAL, 0);
        assert_eq!(m.backends[&remote].flags & BACKEND_FLAG_LOCAL, 0);
    }

    #[test]
    fn draining_keeps_the_backend_present_but_out_of_the_table() {
        let s = settings(&["192.0.2.11", "192.0.2.12@0"]);
        let mut r = Reconciler::new(&s);
        r.set_mac(addr("192.0.2.11"), [2; 6]);
        r.set_mac(addr("192.0.2.12"), [3; 6]);
        let mut m = FakeMaps::default();
        r.apply(&mut m, &[]).unwrap();
        let drained = r.backends()[&addr("192.0.2.12")].index;
        assert!(!owners(&m, &s).contains(&drained));
        assert_ne!(m.backends[&drained].flags & BACKEND_FLAG_PRESENT, 0);
    }
}
