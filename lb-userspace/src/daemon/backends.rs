//! The backend set and its checks: checkers started and stopped as the set changes
//! (configuration, SIGHUP, discovery), each check result counted, and the tables
//! reconciled when a backend comes or goes.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::sync::mpsc;

use super::{Shared, state::Daemon};
use crate::control::health::{self, HealthEvent, HealthSettings};

impl Daemon {
    /// One checker task per configured backend.
    pub(super) fn start_checkers(&mut self) {
        for b in &self.settings.backends {
            self.checkers.insert(
                b.addr,
                health::spawn_checker(b.addr, self.health.clone(), true, self.health_tx.clone()),
            );
        }
        self.replace_backends6();
    }

    /// Checkers for the configured IPv6 backends: new ones get one, removed ones lose
    /// theirs and their statistics, kept ones keep both.
    pub(super) fn replace_backends6(&mut self) {
        let wanted: BTreeSet<SocketAddrV6> =
            self.settings.backends6.iter().map(|b| b.addr).collect();
        self.checkers6.retain(|a, h| {
            let keep = wanted.contains(a);
            if !keep {
                h.abort();
            }
            keep
        });
        for a in &wanted {
            self.checkers6.entry(*a).or_insert_with(|| {
                health::spawn_checker(*a, self.health.clone(), true, self.health_tx.clone())
            });
        }
        let mut s = self.shared.lock().expect("poisoned");
        s.checks6.retain(|a, _| wanted.contains(a));
        for a in &wanted {
            s.checks6.entry(*a).or_insert((Default::default(), true));
        }
        // The reconciler's set: the IPv4 backends as they are, these IPv6 ones.
        let st = &mut *s;
        let all: Vec<(SocketAddr, u32)> = st
            .reconciler
            .backends_v4()
            .map(|(a, b)| (SocketAddr::V4(a), b.weight))
            .chain(
                self.settings
                    .backends6
                    .iter()
                    .map(|b| (SocketAddr::V6(b.addr), b.weight)),
            )
            .collect();
        let removed = st.reconciler.set_backends(all);
        super::startup::mark_local_backends(&mut st.reconciler, self.iface.mac);
        if let Err(e) = st.reconciler.apply(&mut st.dataplane, &removed) {
            log::error!("IPv6 backends: table update failed, the previous table stays live: {e}");
        }
        drop(s);
        self.resolve_next_hops();
    }

    /// A new IPv6 backend set (`why`: SIGHUP, discovery): when it differs from the one in
    /// use, the checkers and tables follow it.
    fn set_backends6(&mut self, wanted6: Vec<crate::config::BackendSpec6>, why: &str) {
        if self.settings.backends6 != wanted6 {
            self.settings.backends6 = wanted6;
            self.replace_backends6();
            log::info!("{why}: {} IPv6 backends", self.settings.backends6.len());
        }
    }

    /// SIGHUP: the configuration read again; its backends (or, with discovery, the
    /// discovered set with the reloaded weights) replace the current ones.
    pub(super) fn on_sighup(&mut self) {
        match self.args.resolve() {
            Ok(new) => {
                super::startup::log_unapplied(&self.settings, &new);
                // elect (#23): a new VRRP priority applies live, as keepalived's reload.
                if let (Some(old), Some(v)) = (&mut self.settings.vrrp, &new.vrrp) {
                    old.priority = v.priority;
                    for p in &self.vrrp_priority {
                        p.set(v.priority);
                    }
                }
                // Roles first: the tables written below already hold the reloaded ones.
                let backups: Vec<SocketAddr> =
                    crate::control::reconcile::backups_of(&new).collect();
                self.settings.backends = new.backends;
                self.static6 = new.backends6;
                self.shared
                    .lock()
                    .expect("poisoned")
                    .reconciler
                    .set_backups(backups);
                let wanted6 = match &self.discovered6 {
                    Some(found) => self.weighted6(found),
                    None => self.static6.clone(),
                };
                self.set_backends6(wanted6, "SIGHUP");
                let wanted = match &self.discovered {
                    Some(found) => self.weighted(found),
                    None => self
                        .settings
                        .backends
                        .iter()
                        .map(|b| (b.addr, b.weight))
                        .collect(),
                };
                self.replace_backends(&wanted, "SIGHUP");
            }
            Err(e) => {
                log::error!("SIGHUP: configuration rejected, keeping the current one: {e}")
            }
        }
    }

    /// Discovered addresses with their weights: a static backend's, else 1; and the
    /// configured backups discovery does not list (a standby outside the cluster's
    /// EndpointSlice stays one).
    pub(super) fn weighted(&self, found: &BTreeSet<SocketAddrV4>) -> Vec<(SocketAddrV4, u32)> {
        let backups = self
            .settings
            .backends
            .iter()
            .filter(|b| b.backup && !found.contains(&b.addr))
            .map(|b| (b.addr, b.weight));
        found
            .iter()
            .map(|a| {
                let weight = self.settings.backends.iter().find(|b| b.addr == *a);
                (*a, weight.map_or(1, |b| b.weight))
            })
            .chain(backups)
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect()
    }

    /// Discovered IPv6 addresses with their weights: a configured backend's, else 1.
    pub(super) fn weighted6(
        &self,
        found: &BTreeSet<SocketAddrV6>,
    ) -> Vec<crate::config::BackendSpec6> {
        let backups = self
            .static6
            .iter()
            .filter(|b| b.backup && !found.contains(&b.addr))
            .copied();
        found
            .iter()
            .map(|a| {
                let known = self.static6.iter().find(|b| b.addr == *a);
                crate::config::BackendSpec6 {
                    addr: *a,
                    weight: known.map_or(1, |b| b.weight),
                    backup: known.is_some_and(|b| b.backup),
                }
            })
            .chain(backups)
            .collect()
    }

    /// A backend set from discovery, split by family: each family with VIPs takes the
    /// masters of its family (a family with none found keeps its backends).
    pub(super) fn on_discovered(&mut self, found: &BTreeSet<SocketAddr>) {
        let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
        for a in found {
            match a {
                SocketAddr::V4(a) => v4.insert(*a),
                SocketAddr::V6(a) => v6.insert(*a),
            };
        }
        if !self.settings.vips6.is_empty() && !v6.is_empty() {
            let wanted6 = self.weighted6(&v6);
            self.discovered6 = Some(v6);
            self.set_backends6(wanted6, "discovery");
        }
        if !self.settings.vips.is_empty() && !v4.is_empty() {
            self.on_discovered4(&v4);
        }
    }

    /// An IPv4 backend set from discovery: the same steps as a SIGHUP reload; a static
    /// backend keeps its weight.
    pub(super) fn on_discovered4(&mut self, found: &BTreeSet<SocketAddrV4>) {
        self.discovered = Some(found.clone());
        let wanted = self.weighted(found);
        let current: Vec<(SocketAddrV4, u32)> = self
            .shared
            .lock()
            .expect("poisoned")
            .reconciler
            .backends_v4()
            .map(|(a, b)| (a, b.weight))
            .collect();
        if current != wanted {
            self.replace_backends(&wanted, "discovery");
        }
    }

    pub(super) fn replace_backends(&mut self, wanted: &[(SocketAddrV4, u32)], why: &str) {
        replace_backends(
            &self.shared,
            &mut self.checkers,
            wanted,
            &self.health,
            &self.health_tx,
            self.iface.mac,
            why,
        );
        self.resolve_next_hops();
    }
}

/// Replaces the backend set (SIGHUP, discovery): flows to backends that stay are kept,
/// removed backends lose their checker, new ones get one, and the tables are rewritten.
pub(super) fn replace_backends(
    shared: &Mutex<Shared>,
    checkers: &mut BTreeMap<SocketAddrV4, tokio::task::JoinHandle<()>>,
    wanted: &[(SocketAddrV4, u32)],
    hs: &Arc<HealthSettings>,
    htx: &mpsc::Sender<HealthEvent>,
    mac: [u8; 6],
    why: &str,
) {
    let mut s = shared.lock().expect("poisoned");
    // The IPv6 backends stay as they are (`replace_backends6` changes them).
    let keep6: Vec<(SocketAddr, u32)> = s
        .reconciler
        .backends()
        .iter()
        .filter(|(a, _)| a.is_ipv6())
        .map(|(a, b)| (*a, b.weight))
        .collect();
    let removed = s.reconciler.set_backends(
        wanted
            .iter()
            .map(|(a, w)| (SocketAddr::V4(*a), *w))
            .chain(keep6),
    );
    super::startup::mark_local_backends(&mut s.reconciler, mac);
    for (addr, _) in &removed {
        if let std::net::SocketAddr::V4(a) = addr
            && let Some(h) = checkers.remove(a)
        {
            h.abort();
        }
    }
    for (addr, _) in wanted {
        checkers
            .entry(*addr)
            .or_insert_with(|| health::spawn_checker(*addr, hs.clone(), true, htx.clone()));
    }
    let st = &mut *s;
    match st.reconciler.apply(&mut st.dataplane, &removed) {
        Ok(a) => {
            st.swaps += a.swaps as u64;
            log::info!(
                "{why}: {} backends ({} removed)",
                wanted.len(),
                removed.len()
            );
        }
        Err(e) => log::error!("{why}: table update failed, the previous table stays live: {e}"),
    }
}

/// A check result: counted, and a transition reconciles (its family's VIPs' tables). An
/// IPv4 backend's statistics start at its first result; an IPv6 backend's exist while it is
/// configured (`replace_backends6`), so a result of a checker a reload stopped is dropped.
pub(super) fn handle_health(shared: &Mutex<Shared>, ev: HealthEvent, rise: u32) {
    let mut s = shared.lock().expect("poisoned");
    if passive_check_result(&mut s, ev.backend, ev.result.is_ok(), rise) {
        reconcile(&mut s, Some(ev.at), None);
    }
    let (st, healthy) = match ev.backend {
        SocketAddr::V4(a) => (s.checks.entry(a).or_default(), None),
        SocketAddr::V6(a) => match s.checks6.get_mut(&a) {
            Some((st, healthy)) => (st, Some(healthy)),
            None => return,
        },
    };
    match &ev.result {
        Ok(lat) => {
            st.ok += 1;
            st.last_latency = Some(*lat);
        }
        Err(f) => {
            st.failed += 1;
            st.last_error = Some(f.to_string());
        }
    }
    if let Some(t) = ev.transition {
        st.transitions += 1;
        if let Some(healthy) = healthy {
            *healthy = t.healthy;
        }
        if t.healthy {
            tracing::info!(backend = %ev.backend, reason = %t.reason, "backend {} is up: {}", ev.backend, t.reason);
        } else {
            tracing::warn!(backend = %ev.backend, reason = %t.reason, "backend {} is down: {}", ev.backend, t.reason);
        }
        if passive_keeps_out(&mut s, ev.backend, t.healthy) {
            return;
        }
        if s.reconciler.set_health(ev.backend, t.healthy) {
            reconcile(&mut s, Some(ev.at), t.first_failure_at);
        }
    }
}

pub(super) fn reconcile(
    s: &mut Shared,
    transition_at: Option<Instant>,
    first_failure: Option<Instant>,
) {
    let st = &mut *s;
    match st.reconciler.apply(&mut st.dataplane, &[]) {
        Ok(a) => {
            if a.fail_open && !st.fail_open {
                log::error!("no healthy backend: the table fails open to every reachable backend");
            }
            st.fail_open = a.fail_open;
            if a.backups_serving != st.backups_serving {
                if a.backups_serving {
                    log::warn!("no healthy primary: the backups hold the table");
                } else {
                    log::info!("a primary is healthy again: new flows go to the primaries");
                }
            }
            st.backups_serving = a.backups_serving;
            if a.swaps > 0 {
                st.swaps += a.swaps as u64;
                if let Some(t) = transition_at {
                    st.last_reconcile = Some(t.elapsed());
                }
                if let Some(f) = first_failure {
                    st.last_detection = Some(f.elapsed());
                    let ms = f.elapsed().as_secs_f64() * 1e3;
                    tracing::info!(
                        detection_ms = ms,
                        "table swapped {ms:.0} ms after the first failed check"
                    );
                }
            }
        }
        Err(e) => log::error!("table update failed, the previous table stays live: {e}"),
    }
}

/// Whether this node has a backend to send new flows to (else VRRP lowers its priority).
/// Whether an IPv6 backend (of weight > 0) is healthy: the IPv6 VRRP instance's priority.
pub(super) fn can_serve6(
    shared: &Mutex<Shared>,
    backends6: &[crate::config::BackendSpec6],
) -> bool {
    let s = shared.lock().expect("poisoned");
    backends6
        .iter()
        .any(|b| b.weight > 0 && s.checks6.get(&b.addr).is_some_and(|(_, healthy)| *healthy))
}

pub(super) fn can_serve(shared: &Mutex<Shared>) -> bool {
    let s = shared.lock().expect("poisoned");
    s.reconciler
        .backends()
        .values()
        .any(|b| b.healthy && b.weight > 0)
}

/// Passive health's tick: the handshake counters of the backends the data path forwards
/// to (a local backend's answers never pass it) fed to the tracker; a backend whose failed
/// handshakes in a row reach the limit leaves the table now.
pub(super) fn on_passive_tick(shared: &Mutex<Shared>) {
    let mut s = shared.lock().expect("poisoned");
    if !s.passive.enabled() {
        return;
    }
    let st = &mut *s;
    let followed: Vec<(SocketAddr, u32)> = st
        .reconciler
        .backends()
        .iter()
        .filter(|(a, _)| !st.reconciler.is_local(*a))
        .map(|(a, b)| (*a, b.index))
        .collect();
    let counts = match st.dataplane.passive(followed.iter().map(|(_, i)| *i)) {
        Ok(c) => c,
        Err(e) => {
            log::error!("passive health: reading the handshake counters failed: {e}");
            return;
        }
    };
    let totals: BTreeMap<SocketAddr, lb_common::Passive> = followed
        .iter()
        .filter_map(|(a, i)| counts.get(i).map(|c| (*a, *c)))
        .collect();
    // A flood churns the data path's handshake entries: answers may find none.
    let flood = st
        .unconfirmed_entries
        .load(std::sync::atomic::Ordering::Relaxed)
        >= lb_common::UNCONFIRMED_FLOOD_THRESHOLD as usize;
    let out = st.passive.tick(&totals, !flood);
    st.passive_down
        .retain(|a, _| st.reconciler.backends().contains_key(a));
    let mut changed = false;
    for addr in out {
        if !st
            .reconciler
            .backends()
            .get(&addr)
            .is_some_and(|b| b.healthy)
        {
            continue;
        }
        // Clients' packets are the evidence: they may thin the table, never empty it.
        if !st
            .reconciler
            .backends()
            .iter()
            .any(|(a, b)| *a != addr && b.healthy)
        {
            tracing::debug!(backend = %addr, "passive health keeps {addr}: no other backend is healthy");
            continue;
        }
        let h = st.passive.stats(&addr);
        tracing::warn!(backend = %addr, "backend {addr} is down: new flows' handshakes failed in a row (passive; {} refused, {} unanswered so far), back after its check's rise", h.refused, h.unanswered);
        st.passive_down.insert(addr, 0);
        *st.passive_ejections.entry(addr).or_default() += 1;
        changed |= st.reconciler.set_health(addr, false);
    }
    if changed {
        reconcile(st, None, None);
    }
}

/// A check result for passive health: a backend it took out comes back after `rise`
/// successful checks in a row; a check that fails starts the count again. Returns
/// whether the backend came back.
pub(super) fn passive_check_result(s: &mut Shared, addr: SocketAddr, ok: bool, rise: u32) -> bool {
    let Some(n) = s.passive_down.get_mut(&addr) else {
        return false;
    };
    *n = if ok { *n + 1 } else { 0 };
    if *n < rise {
        return false;
    }
    s.passive_down.remove(&addr);
    tracing::info!(backend = %addr, "backend {addr} is up: {rise} checks passed since failed handshakes took it out");
    s.reconciler.set_health(addr, true)
}

/// A check transition of a backend passive health took out: up waits for passive health's
/// own count of successes (returns true: keep it out); down hands it back to the check.
pub(super) fn passive_keeps_out(s: &mut Shared, addr: SocketAddr, healthy: bool) -> bool {
    if healthy {
        s.passive_down.contains_key(&addr)
    } else {
        s.passive_down.remove(&addr);
        false
    }
}
