//! The daemon's one loop: it owns the reconciler and the maps (through [`Shared`]) and
//! turns each event (signal, health result, ARP packet, timer, VRRP state, discovered
//! backends) into a call of one named handler below.

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    DaemonError,
    backends::{can_serve, can_serve6, handle_health, on_passive_tick},
    state::{Daemon, Sources},
};
use crate::config::Announce;

impl Daemon {
    /// The first next-hop round, and a gratuitous ARP when this node announces without VRRP.
    pub fn announce_at_start(&self) {
        self.resolve_next_hops();
        if self.settings.vrrp.is_none() && self.settings.announce == Announce::Arp {
            self.gratuitous_arp();
            self.unsolicited_na();
        }
    }

    /// Runs until SIGTERM or SIGINT, or until a task it depends on ends unexpectedly
    /// (supervision): then it returns that task's name, and the caller stops announcing,
    /// shuts down and exits non-zero so that systemd or the kubelet restarts xvip (a node
    /// whose election died must not keep answering for the VIP).
    pub async fn event_loop(
        &mut self,
        mut src: Sources,
        endpoint: &mut JoinHandle<()>,
    ) -> Option<&'static str> {
        loop {
            if let Some(spec) = &self.route_spec {
                super::routed::sync_route(&self.shared, spec, false, false);
            }
            if src.vrrp.is_some() {
                let ok = can_serve(&self.shared);
                self.serve_tx
                    .send_if_modified(|v| std::mem::replace(v, ok) != ok);
            }
            if src.vrrp6.is_some() {
                let ok = can_serve6(&self.shared, &self.settings.backends6);
                self.serve6_tx
                    .send_if_modified(|v| std::mem::replace(v, ok) != ok);
            }
            let arp = self.arp.clone();
            tokio::select! {
                _ = src.sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
                _ = src.sigint.recv() => { log::info!("SIGINT: stopping"); break; }
                _ = src.sighup.recv() => self.on_sighup(),
                Some(ev) = src.health.recv() => handle_health(&self.shared, ev, self.health.rise),
                _ = src.passive.tick() => on_passive_tick(&self.shared),
                Some(found) = recv_opt(&mut src.discovery) => self.on_discovered(&found),
                Some(addrs) = changed_opt(&mut src.services) => self.on_services(&addrs),
                pkt = arp.recv() => match pkt {
                    Ok(a) => self.on_arp(&arp, self.iface.mac, &a),
                    Err(e) => log::warn!("ARP socket: {e}"),
                },
                Some((n, ns)) = src.ndp_rx.recv() => self.on_ns(n, &ns),
                Some((n, a)) = src.other_arp.recv() => {
                    let (mac, sock) = (self.others[n].0.mac, self.others[n].1.clone());
                    self.on_arp(&sock, mac, &a);
                }
                _ = src.claims.tick() => self.on_claims_tick(),
                _ = src.garp.tick() => {
                    if self.announcing() {
                        self.gratuitous_arp();
                    }
                    if self.announcing6() {
                        self.unsolicited_na();
                    }
                }
                _ = src.resolve.tick() => self.on_tick(),
                state = recv_unbounded_opt(&mut src.vrrp) => match state {
                    Some(c) => {
                        self.notify(c.state, false);
                        self.on_vrrp(c.state, false, c.from_silence);
                    }
                    None => return Some("VRRP"),
                },
                state = recv_unbounded_opt(&mut src.vrrp6) => match state {
                    Some(c) => {
                        self.notify(c.state, true);
                        self.on_vrrp(c.state, true, c.from_silence);
                    }
                    None => return Some("IPv6 VRRP"),
                },
                _ = &mut *endpoint => return Some("status endpoint"),
                _ = tokio::time::sleep_until(self.garp_burst_at), if self.garp_burst > 0 => {
                    self.on_garp_burst();
                }
                _ = tokio::time::sleep_until(self.takeover_at.unwrap_or_else(tokio::time::Instant::now)),
                    if self.takeover_at.is_some() => {
                    self.on_takeover_probed();
                }
            }
        }
        None
    }

    /// Every backend's next hop from the kernel's route and neighbour tables (the kernel
    /// resolves missing and stale neighbours itself), on the next-hop thread, soon; the
    /// table is rewritten there when one moved.
    pub(super) fn resolve_next_hops(&self) {
        self.resolver.now();
    }

    /// Stops announcing first, so neighbours stop sending here, then lets a backup or the
    /// routers take over, then detaches.
    pub async fn shut_down(
        self,
        vrrp: [Option<crate::announce::vrrp::Handle>; 2],
        discovery: Option<JoinHandle<()>>,
        services: Option<JoinHandle<()>>,
        endpoint: JoinHandle<()>,
    ) -> Result<(), DaemonError> {
        {
            let mut s = self.shared.lock().expect("poisoned");
            s.announcing = false;
            s.announcing6 = false;
        }
        if let Some(spec) = &self.route_spec {
            super::routed::sync_route(&self.shared, spec, true, true);
            if !self.settings.keep_attached {
                // Keep forwarding while the BGP daemons withdraw the route and the router
                // moves this node's flows elsewhere.
                tokio::time::sleep(crate::announce::route::WITHDRAW_GRACE).await;
            }
        }
        let mut was_master = false;
        let mut families = Vec::new();
        for (i, v) in vrrp.into_iter().enumerate() {
            if let Some(v) = v {
                was_master |= v.stop().await;
                families.push(i == 1);
            }
        }
        for v6 in families {
            self.notify(crate::announce::vrrp::State::Initialize, v6);
        }
        if was_master {
            let grace = self
                .settings
                .vrrp
                .as_ref()
                .map(|s| s.handover_grace())
                .unwrap_or_default();
            // Priority 0 sent: keep forwarding while a backup takes over and announces.
            tokio::time::sleep(grace).await;
        }
        for t in [discovery, services].into_iter().flatten() {
            t.abort();
        }
        for (_, h) in self.checkers {
            h.abort();
        }
        for (_, h) in self.checkers6 {
            h.abort();
        }
        endpoint.abort();
        for i in &self.all {
            crate::api::server::forget_addr(&i.name);
        }
        let mut s = self.shared.lock().expect("poisoned");
        if self.settings.keep_attached {
            s.dataplane.keep_attached();
            log::info!("left attached to {} (--keep-attached)", self.iface.name);
        } else {
            s.dataplane.detach(&self.iface.name)?;
            log::info!("detached from {}", self.settings.interfaces.join(", "));
        }
        Ok(())
    }
}

/// Waits on an optional channel; never ready when there is none.
async fn recv_unbounded_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next value of an optional watch channel; never ready when there is none (or its
/// sender is gone).
async fn changed_opt<T: Clone>(rx: &mut Option<watch::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(r.borrow_and_update().clone()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Waits on an optional channel; never ready when there is none.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
